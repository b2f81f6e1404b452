/* The configuration builder, and its on-disk form: "key=value" lines in run/<name>/config,
 * read back by the shim and by `capsule start`. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "internal.h"
#include "parse.h"
#include "util.h"

int validate_name(const char *name, const char *what, capsule_error *err)
{
	return parse_name(name, what, err);
}

int capsule_config_new(capsule_config **out, capsule_error *err)
{
	capsule_config *cfg = calloc(1, sizeof(*cfg));
	if (!cfg)
		return cap_err(err, ENOMEM, "allocating a configuration");
	snprintf(cfg->image, sizeof(cfg->image), "host");
	cfg->isolation = CAPSULE_ISOLATION_CONTAINER;
	cfg->boot_timeout_ms = CAPSULE_DEFAULT_BOOT_TIMEOUT_MS;
	cfg->pids_limit = CAPSULE_DEFAULT_PIDS_LIMIT;
	*out = cfg;
	return 0;
}

void config_clear(struct capsule_config *cfg)
{
	for (size_t i = 0; i < cfg->nbinds; i++) {
		free(cfg->binds[i].source);
		free(cfg->binds[i].target);
		free(cfg->binds[i].transform);
		free(cfg->binds[i].transform_config);
	}
	cfg->nbinds = 0;
	for (size_t i = 0; i < cfg->ntmpfs; i++)
		free(cfg->tmpfs[i].target);
	cfg->ntmpfs = 0;
	for (size_t i = 0; i < cfg->envc; i++)
		free(cfg->env[i]);
	free(cfg->env);
	cfg->env = NULL;
	cfg->envc = 0;
	for (size_t i = 0; i < cfg->nqemu_args; i++)
		free(cfg->qemu_args[i]);
	free(cfg->qemu_args);
	cfg->qemu_args = NULL;
	cfg->nqemu_args = 0;
	for (size_t i = 0; i < cfg->nlayers; i++)
		free(cfg->layers[i]);
	cfg->nlayers = 0;
	free(cfg->disk_from);
	cfg->disk_from = NULL;
	config_set_image_defaults(cfg, NULL, NULL, NULL, NULL, NULL);
}

void capsule_config_free(capsule_config *cfg)
{
	if (!cfg)
		return;
	config_clear(cfg);
	free(cfg);
}

/* A copy of S at the end of the NULL-terminated list *V of *N strings, at most MAX. */
static int push_string(char ***v, size_t *n, size_t max, const char *s)
{
	if (*n >= max)
		return -E2BIG;
	char *copy = strdup(s);
	char **nv = realloc(*v, (*n + 2) * sizeof(char *));
	if (!copy || !nv) {
		free(copy);
		if (nv)
			*v = nv;
		return -ENOMEM;
	}
	*v = nv;
	nv[(*n)++] = copy;
	nv[*n] = NULL;
	return 0;
}

static int push_env(struct capsule_config *cfg, const char *kv)
{
	return push_string(&cfg->env, &cfg->envc, CP_MAX_ENV, kv);
}

static int push_qemu_arg(struct capsule_config *cfg, const char *arg)
{
	return push_string(&cfg->qemu_args, &cfg->nqemu_args, CAPSULE_MAX_QEMU_ARGS, arg);
}

uint32_t config_boot_timeout_ms(const struct capsule_config *cfg)
{
	if (cfg->boot_timeout_set && cfg->boot_timeout_ms)
		return cfg->boot_timeout_ms;
	return cfg->isolation == CAPSULE_ISOLATION_VM ? CAPSULE_DEFAULT_VM_BOOT_TIMEOUT_MS : CAPSULE_DEFAULT_BOOT_TIMEOUT_MS;
}

int capsule_config_set_accel(capsule_config *cfg, const char *accel, capsule_error *err)
{
	if (!accel || (strcmp(accel, "auto") && strcmp(accel, "kvm") && strcmp(accel, "tcg")))
		return cap_err_plain(err, EINVAL, "invalid accel '%s' (use auto, kvm or tcg)", accel ? accel : "");
	snprintf(cfg->accel, sizeof(cfg->accel), "%s", accel);
	return 0;
}

int capsule_config_add_qemu_arg(capsule_config *cfg, const char *arg, capsule_error *err)
{
	/* One line a value on disk: a newline would split it into two settings. */
	if (!arg || strpbrk(arg, "\n\r"))
		return cap_err_plain(err, EINVAL, "invalid QEMU argument '%s': no newlines", arg ? arg : "");
	int r = push_qemu_arg(cfg, arg);
	if (r == -E2BIG)
		return cap_err_plain(err, E2BIG, "too many QEMU arguments (at most %d)", CAPSULE_MAX_QEMU_ARGS);
	return r < 0 ? cap_err(err, -r, "adding a QEMU argument") : 0;
}

/* A vm's root disk or a container's own layer: at least what a small image's ext4 takes, at
 * most what ext4 grows to with 4 KiB blocks and the inode ratio mkfs sets. */
static int disk_size_check(uint64_t bytes, capsule_error *err)
{
	if (bytes && (bytes < (64ull << 20) || bytes > (16ull << 40)))
		return cap_err_plain(err, EINVAL, "invalid disk size %llu bytes (from 64M to 16T)", (unsigned long long)bytes);
	return 0;
}

int capsule_config_set_disk_size_bytes(capsule_config *cfg, uint64_t bytes, capsule_error *err)
{
	int r = disk_size_check(bytes, err);
	if (r == 0)
		cfg->disk_bytes = bytes;
	return r;
}

int config_disk_size_parse(const char *size, uint64_t *bytes, capsule_error *err)
{
	int r = parse_size(size, bytes, err);
	if (r < 0)
		return r;
	if (*bytes == 0)
		return cap_err_plain(err, EINVAL, "invalid disk size '%s' (from 64M to 16T)", size);
	return disk_size_check(*bytes, err);
}

int capsule_config_set_disk_size(capsule_config *cfg, const char *size, capsule_error *err)
{
	uint64_t v;
	int r = config_disk_size_parse(size, &v, err);
	if (r == 0)
		cfg->disk_bytes = v;
	return r;
}

int config_copy(struct capsule_config *dst, const struct capsule_config *src)
{
	*dst = *src;
	dst->env = NULL;
	dst->envc = 0;
	dst->nbinds = 0;
	dst->qemu_args = NULL;
	dst->nqemu_args = 0;
	dst->nlayers = 0;
	dst->workdir = dst->user = NULL;
	dst->entrypoint = dst->cmd = NULL;
	dst->disk_from = NULL;
	if (src->disk_from && !(dst->disk_from = strdup(src->disk_from))) {
		config_clear(dst);
		return -ENOMEM;
	}
	if (config_set_image_defaults(dst, src->workdir, src->user, (const char *const *)src->entrypoint,
				      (const char *const *)src->cmd, NULL) < 0) {
		config_clear(dst);
		return -ENOMEM;
	}
	for (size_t i = 0; i < src->nlayers; i++) {
		if (!(dst->layers[i] = strdup(src->layers[i]))) {
			config_clear(dst);
			return -ENOMEM;
		}
		dst->nlayers = i + 1;
	}
	for (size_t i = 0; i < src->nqemu_args; i++) {
		if (push_qemu_arg(dst, src->qemu_args[i]) < 0) {
			config_clear(dst);
			return -ENOMEM;
		}
	}
	for (size_t i = 0; i < src->ntmpfs; i++) {
		dst->tmpfs[i].target = strdup(src->tmpfs[i].target);
		if (!dst->tmpfs[i].target) {
			dst->ntmpfs = i;
			config_clear(dst);
			return -ENOMEM;
		}
	}
	for (size_t i = 0; i < src->nbinds; i++) {
		struct bind_mount *b = &dst->binds[i];
		b->source = strdup(src->binds[i].source);
		b->target = strdup(src->binds[i].target);
		b->readonly = src->binds[i].readonly;
		b->transform = src->binds[i].transform ? strdup(src->binds[i].transform) : NULL;
		b->transform_config = src->binds[i].transform_config ? strdup(src->binds[i].transform_config) : NULL;
		b->volume = src->binds[i].volume;
		dst->nbinds = i + 1;
		if (!b->source || !b->target || (src->binds[i].transform && (!b->transform || !b->transform_config))) {
			config_clear(dst);
			return -ENOMEM;
		}
	}
	for (size_t i = 0; i < src->envc; i++) {
		int r = push_env(dst, src->env[i]);
		if (r < 0) {
			config_clear(dst);
			return r;
		}
	}
	return 0;
}

int capsule_config_set_name(capsule_config *cfg, const char *name, capsule_error *err)
{
	int r = validate_name(name, "sandbox name", err);
	if (r < 0)
		return r;
	snprintf(cfg->name, sizeof(cfg->name), "%s", name);
	return 0;
}

int capsule_config_set_image(capsule_config *cfg, const char *image, capsule_error *err)
{
	if (!image || !*image || strlen(image) >= sizeof(cfg->image) || strpbrk(image, "\n\r"))
		return cap_err_plain(err, EINVAL, "invalid image reference '%s'", image ? image : "");
	snprintf(cfg->image, sizeof(cfg->image), "%s", image);
	return 0;
}

int capsule_config_set_save(capsule_config *cfg, const char *name, capsule_error *err)
{
	if (!name || !*name) {
		cfg->save[0] = '\0';
		return 0;
	}
	int r = validate_name(name, "save name", err);
	if (r < 0)
		return r;
	snprintf(cfg->save, sizeof(cfg->save), "%s", name);
	return 0;
}

int capsule_config_set_isolation(capsule_config *cfg, capsule_isolation iso, capsule_error *err)
{
	if (iso != CAPSULE_ISOLATION_CONTAINER && iso != CAPSULE_ISOLATION_VM)
		return cap_err_plain(err, EINVAL, "invalid isolation %d (use container or vm)", (int)iso);
	cfg->isolation = iso;
	if (!cfg->boot_timeout_set)
		cfg->boot_timeout_ms = config_boot_timeout_ms(cfg);
	return 0;
}

int capsule_config_set_memory_bytes(capsule_config *cfg, uint64_t bytes, capsule_error *err)
{
	if (bytes && bytes < (6u << 20))
		return cap_err_plain(err, EINVAL, "memory limit %llu bytes is too small (minimum 6M)",
				     (unsigned long long)bytes);
	cfg->memory_bytes = bytes;
	return 0;
}

int capsule_config_set_memory(capsule_config *cfg, const char *size, capsule_error *err)
{
	uint64_t v;
	int r = parse_size(size, &v, err);
	if (r < 0)
		return r;
	return capsule_config_set_memory_bytes(cfg, v, err);
}

int capsule_config_set_cpus_milli(capsule_config *cfg, uint32_t millicpus, capsule_error *err)
{
	if (millicpus > 1024u * 1000u)
		return cap_err_plain(err, EINVAL, "cpus limit %u.%03u is too large", millicpus / 1000, millicpus % 1000);
	cfg->cpus_milli = millicpus;
	return 0;
}

int config_level_check(const struct capsule_config *cfg, capsule_error *err)
{
	if (cfg->isolation == CAPSULE_ISOLATION_VM)
		return 0;
	/* Settings that only a vm can use, given to a container: say so rather than drop them. */
	if (cfg->nqemu_args)
		return cap_err_plain(err, EINVAL, "extra QEMU arguments (--qemu-arg) need --isolation vm (sandbox '%s' is a container)",
				     cfg->name);
	if (cfg->accel[0])
		return cap_err_plain(err, EINVAL, "an accelerator (--accel) needs --isolation vm (sandbox '%s' is a container)",
				     cfg->name);
	/* A container's cpu limit is a share of the host's CPUs: more than there are would be no
	 * limit at all (docker refuses it the same way). A vm's --cpus is its guest's CPU count. */
	long online = sysconf(_SC_NPROCESSORS_ONLN);
	if (online > 0 && cfg->cpus_milli > (uint64_t)online * 1000u)
		return cap_err_plain(err, EINVAL, "cpus limit %u.%02u is more than this host's %ld CPUs (use 0.01 to %ld)",
				     cfg->cpus_milli / 1000, cfg->cpus_milli % 1000 / 10, online, online);
	return 0;
}

int capsule_config_set_cpus(capsule_config *cfg, const char *cpus, capsule_error *err)
{
	uint32_t v;
	int r = parse_cpus(cpus, &v, err);
	if (r < 0)
		return r;
	return capsule_config_set_cpus_milli(cfg, v, err);
}

int capsule_config_set_pids_limit(capsule_config *cfg, uint32_t pids, capsule_error *err)
{
	if (pids == 1)
		return cap_err_plain(err, EINVAL, "pids limit 1 leaves no room for any command (minimum 2)");
	cfg->pids_limit = pids;
	return 0;
}

int capsule_config_set_hostname(capsule_config *cfg, const char *hostname, capsule_error *err)
{
	size_t n = hostname ? strlen(hostname) : 0;
	if (n == 0 || n >= sizeof(cfg->hostname))
		return cap_err_plain(err, EINVAL, "invalid hostname '%s': 1 to 63 characters", hostname ? hostname : "");
	for (size_t i = 0; i < n; i++) {
		char c = hostname[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.'))
			return cap_err_plain(err, EINVAL, "invalid hostname '%s': only letters, digits, '-' and '.'", hostname);
	}
	snprintf(cfg->hostname, sizeof(cfg->hostname), "%s", hostname);
	return 0;
}

int capsule_config_add_env(capsule_config *cfg, const char *key_value, capsule_error *err)
{
	int r = parse_env(key_value, err);
	if (r < 0)
		return r;
	if (strpbrk(key_value, "\n"))
		return cap_err_plain(err, EINVAL, "invalid environment variable '%s': newline in value", key_value);
	if ((r = env_size_check((const char *const *)cfg->env, cfg->envc, key_value, err)) < 0)
		return r;
	r = push_env(cfg, key_value);
	if (r < 0)
		return cap_err(err, -r, "adding environment variable");
	return 0;
}

/* PATH is TOP or below it; "/" holds everything. */
static bool path_is_below(const char *path, const char *top)
{
	size_t n = strlen(top);
	if (n == 1 && top[0] == '/')
		return true;
	return strncmp(path, top, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

int check_sensitive_source(const char *p, capsule_error *err)
{
	/* The host's own configuration, secrets, devices, kernel interfaces and binaries, and
	 * the sockets of other runtimes: these and everything below them. */
	static const char *const trees[] = {
		"/etc", "/root", "/proc", "/sys", "/dev", "/boot", "/usr", "/bin", "/sbin", "/lib", "/lib32",
		"/lib64", "/libx32", "/run/docker.sock", "/var/run/docker.sock", "/run/docker", "/var/run/docker",
		"/run/containerd", "/run/podman", "/run/crio", "/run/user",
	};
	/* Folders that hold all of the above or every user's home. */
	static const char *const exact[] = { "/", "/home", "/var", "/run", "/var/run", "/var/lib" };
	static const char *const secrets[] = { ".ssh", ".gnupg", ".aws" };
	for (size_t i = 0; i < ARRAY_SIZE(trees); i++)
		if (path_is_below(p, trees[i]))
			goto refuse;
	for (size_t i = 0; i < ARRAY_SIZE(exact); i++)
		if (!strcmp(p, exact[i]))
			goto refuse;
	for (const char *c = p; (c = strchr(c, '/')); c++) {
		for (size_t i = 0; i < ARRAY_SIZE(secrets); i++) {
			size_t n = strlen(secrets[i]);
			if (!strncmp(c + 1, secrets[i], n) && (c[1 + n] == '/' || c[1 + n] == '\0'))
				goto refuse;
		}
	}
	/* capsule's own state, and any folder that contains it. */
	const char *home = capsule_home();
	if (path_is_below(p, home) || path_is_below(home, p))
		goto refuse;
	return 0;
refuse:
	return cap_err_plain(err, EACCES,
			     "mount source '%s' is a sensitive host path (see docs/security.md); allow it explicitly "
			     "to mount it anyway",
			     p);
}

/* A mount target inside the sandbox: absolute, normalized into *OUT (malloc'd), not the
 * root, not below /proc or /sys (their masks must stay), not a second mount at one place. */
static int mount_target(const struct capsule_config *cfg, const char *what, const char *target, char **out,
			capsule_error *err)
{
	if (!target || target[0] != '/')
		return cap_err_plain(err, EINVAL, "%s target '%s' is not an absolute path", what, target ? target : "");
	if (strpbrk(target, "\n"))
		return cap_err_plain(err, EINVAL, "%s target has a newline in it", what);
	size_t cap = strlen(target) + 2;
	_cleanup_free_ char *norm = malloc(cap);
	if (!norm)
		return cap_err(err, ENOMEM, "%s target", what);
	int r = normalize_abs_path(target, norm, cap, err);
	if (r < 0)
		return r;
	if (!strcmp(norm, "/"))
		return cap_err_plain(err, EINVAL, "%s target '%s' is the sandbox's root", what, target);
	if (path_is_below(norm, "/proc") || path_is_below(norm, "/sys"))
		return cap_err_plain(err, EINVAL, "%s target '%s' is below /proc or /sys", what, target);
	for (size_t i = 0; i < cfg->ntmpfs; i++)
		if (!strcmp(cfg->tmpfs[i].target, norm))
			return cap_err_plain(err, EEXIST, "two mounts at '%s'", norm);
	for (size_t i = 0; i < cfg->nbinds; i++)
		if (!strcmp(cfg->binds[i].target, norm))
			return cap_err_plain(err, EEXIST, "two mounts at '%s'", norm);
	*out = steal_ptr(norm);
	return 0;
}

int capsule_config_add_tmpfs(capsule_config *cfg, const char *target, uint64_t size_bytes, uint32_t mode,
			     capsule_error *err)
{
	if (mode > 07777)
		return cap_err_plain(err, EINVAL, "tmpfs mode %o is not a file mode", mode);
	if (cfg->ntmpfs >= CAPSULE_MAX_TMPFS)
		return cap_err_plain(err, E2BIG, "too many tmpfs mounts (at most %d)", CAPSULE_MAX_TMPFS);
	char *norm;
	int r = mount_target(cfg, "tmpfs", target, &norm, err);
	if (r < 0)
		return r;
	struct tmpfs_mount *t = &cfg->tmpfs[cfg->ntmpfs++];
	t->target = norm;
	t->size_bytes = size_bytes ? size_bytes : CAPSULE_DEFAULT_TMPFS_BYTES;
	t->mode = mode ? mode : 01777;
	return 0;
}

int capsule_config_add_bind(capsule_config *cfg, const char *host_path, const char *guest_path, bool readonly,
			    bool allow_sensitive, capsule_error *err)
{
	if (!host_path || host_path[0] != '/')
		return cap_err_plain(err, EINVAL, "mount source '%s' is not an absolute host path",
				     host_path ? host_path : "");
	if (strpbrk(host_path, "\n"))
		return cap_err_plain(err, EINVAL, "mount source has a newline in it");
	if (cfg->nbinds >= CAPSULE_MAX_BINDS)
		return cap_err_plain(err, E2BIG, "too many bind mounts (at most %d)", CAPSULE_MAX_BINDS);
	_cleanup_free_ char *resolved = realpath(host_path, NULL);
	if (!resolved)
		return cap_err(err, errno, "mount source '%s'", host_path);
	int r;
	if (!allow_sensitive && (r = check_sensitive_source(resolved, err)) < 0)
		return r;
	char *norm;
	if ((r = mount_target(cfg, "mount", guest_path, &norm, err)) < 0)
		return r;
	struct bind_mount *b = &cfg->binds[cfg->nbinds];
	b->source = strdup(host_path);
	if (!b->source) {
		free(norm);
		return cap_err(err, ENOMEM, "mount source");
	}
	b->target = norm;
	b->readonly = readonly;
	cfg->nbinds++;
	return 0;
}

/* The plugin is checked here, where a mistake can still be named clearly; whether it is a
 * loadable plugin with the right symbol is capsule-fuse's to find out at start. */
static int check_transform(const char *plugin_path, const char *plugin_config, capsule_error *err)
{
	if (!plugin_path || plugin_path[0] != '/')
		return cap_err_plain(err, EINVAL, "transform plugin '%s' is not an absolute path",
				     plugin_path ? plugin_path : "");
	if (strpbrk(plugin_path, "\n"))
		return cap_err_plain(err, EINVAL, "transform plugin path has a newline in it");
	struct stat st;
	if (stat(plugin_path, &st) < 0)
		return cap_err(err, errno, "transform plugin '%s'", plugin_path);
	if (!S_ISREG(st.st_mode))
		return cap_err_plain(err, EINVAL, "transform plugin '%s' is not a regular file", plugin_path);
	if (plugin_config && strpbrk(plugin_config, "\n"))
		return cap_err_plain(err, EINVAL, "transform config for '%s' has a newline in it", plugin_path);
	if (plugin_config && strlen(plugin_config) > CAPSULE_TRANSFORM_CONFIG_MAX)
		return cap_err_plain(err, E2BIG, "transform config for '%s' is longer than %d bytes", plugin_path,
				     CAPSULE_TRANSFORM_CONFIG_MAX);
	return 0;
}

int capsule_config_set_bind_transform(capsule_config *cfg, const char *guest_path, const char *plugin_path,
				      const char *plugin_config, capsule_error *err)
{
	if (!guest_path || guest_path[0] != '/')
		return cap_err_plain(err, EINVAL, "transform target '%s' is not an absolute path",
				     guest_path ? guest_path : "");
	size_t cap = strlen(guest_path) + 2;
	_cleanup_free_ char *norm = malloc(cap);
	if (!norm)
		return cap_err(err, ENOMEM, "transform target");
	int r = normalize_abs_path(guest_path, norm, cap, err);
	if (r < 0)
		return r;
	struct bind_mount *b = NULL;
	for (size_t i = 0; i < cfg->nbinds && !b; i++)
		if (!strcmp(cfg->binds[i].target, norm))
			b = &cfg->binds[i];
	if (!b)
		return cap_err_plain(err, ENOENT, "transform for '%s': no bind mount at that path (add it with -v first)",
				     guest_path);
	if ((r = check_transform(plugin_path, plugin_config, err)) < 0)
		return r;
	struct stat st;
	if (!b->volume && stat(b->source, &st) < 0)
		return cap_err(err, errno, "mount source '%s'", b->source);
	if (!b->volume && !S_ISDIR(st.st_mode))
		return cap_err_plain(err, ENOTDIR, "transform for '%s': mount source '%s' is not a folder", norm, b->source);
	char *plugin = strdup(plugin_path), *config = strdup(plugin_config ? plugin_config : "");
	if (!plugin || !config) {
		free(plugin);
		free(config);
		return cap_err(err, ENOMEM, "transform");
	}
	free(b->transform);
	free(b->transform_config);
	b->transform = plugin;
	b->transform_config = config;
	return 0;
}

int capsule_config_add_bind_transform(capsule_config *cfg, const char *host_path, const char *guest_path,
				      bool readonly, const char *plugin_path, const char *plugin_config,
				      capsule_error *err)
{
	/* Checked before the bind is added, so that a bad plugin leaves the config as it was. */
	int r = check_transform(plugin_path, plugin_config, err);
	if (r < 0 || (r = capsule_config_add_bind(cfg, host_path, guest_path, readonly, false, err)) < 0)
		return r;
	if ((r = capsule_config_set_bind_transform(cfg, cfg->binds[cfg->nbinds - 1].target, plugin_path,
						   plugin_config, err)) < 0) {
		struct bind_mount *b = &cfg->binds[--cfg->nbinds];
		free(b->source);
		free(b->target);
		memset(b, 0, sizeof(*b));
	}
	return r;
}

int capsule_config_add_volume(capsule_config *cfg, const char *name, const char *guest_path, bool readonly,
			      capsule_error *err)
{
	int r = parse_name(name, "volume name", err);
	if (r < 0)
		return r;
	if (cfg->nbinds >= CAPSULE_MAX_BINDS)
		return cap_err_plain(err, E2BIG, "too many mounts (at most %d binds and volumes)", CAPSULE_MAX_BINDS);
	char *norm;
	if ((r = mount_target(cfg, "volume", guest_path, &norm, err)) < 0)
		return r;
	struct bind_mount *b = &cfg->binds[cfg->nbinds];
	b->source = strdup(name);
	if (!b->source) {
		free(norm);
		return cap_err(err, ENOMEM, "volume");
	}
	b->target = norm;
	b->readonly = readonly;
	b->volume = true;
	cfg->nbinds++;
	return 0;
}

int capsule_config_set_detached(capsule_config *cfg, bool detached, capsule_error *err)
{
	(void)err;
	cfg->detached = detached;
	return 0;
}

int capsule_config_set_boot_timeout_ms(capsule_config *cfg, uint32_t ms, capsule_error *err)
{
	if (ms < 100)
		return cap_err_plain(err, EINVAL, "boot timeout %u ms is too short (minimum 100 ms)", ms);
	cfg->boot_timeout_ms = ms;
	cfg->boot_timeout_set = true;
	return 0;
}

int capsule_config_set_progress(capsule_config *cfg, capsule_progress_fn fn, void *payload, capsule_error *err)
{
	(void)err;
	cfg->progress = fn;
	cfg->progress_payload = payload;
	return 0;
}

int config_add_layer(struct capsule_config *cfg, const char *path, capsule_error *err)
{
	if (!path || path[0] != '/' || strlen(path) >= PATH_MAX || strpbrk(path, "\n\r"))
		return cap_err_plain(err, EINVAL, "invalid layer folder '%s' (an absolute host path)", path ? path : "");
	if (cfg->nlayers >= CAPSULE_MAX_LAYERS)
		return cap_err_plain(err, E2BIG, "too many layers (at most %d)", CAPSULE_MAX_LAYERS);
	if (!(cfg->layers[cfg->nlayers] = strdup(path)))
		return cap_err(err, ENOMEM, "adding layer '%s'", path);
	cfg->nlayers++;
	return 0;
}

static void strv_free(char **v)
{
	for (size_t i = 0; v && v[i]; i++)
		free(v[i]);
	free(v);
}

static int strv_copy(const char *const *src, char ***out)
{
	*out = NULL;
	if (!src)
		return 0;
	size_t n = 0;
	while (src[n])
		n++;
	char **v = calloc(n + 1, sizeof(char *));
	if (!v)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		if (!(v[i] = strdup(src[i]))) {
			strv_free(v);
			return -ENOMEM;
		}
	*out = v;
	return 0;
}

int config_prepend_env(struct capsule_config *cfg, const char *const *env, capsule_error *err)
{
	char **own = cfg->env;
	size_t nown = cfg->envc;
	cfg->env = NULL;
	cfg->envc = 0;
	int r = 0;
	for (size_t i = 0; env && env[i] && r == 0; i++)
		r = capsule_config_add_env(cfg, env[i], err);
	for (size_t i = 0; i < nown && r == 0; i++)
		r = capsule_config_add_env(cfg, own[i], err);
	for (size_t i = 0; i < nown; i++)
		free(own[i]);
	free(own);
	return r;
}

int config_set_image_defaults(struct capsule_config *cfg, const char *workdir, const char *user,
			      const char *const *entrypoint, const char *const *cmd, capsule_error *err)
{
	char *w = NULL, *u = NULL, **ep = NULL, **c = NULL;
	if ((workdir && !(w = strdup(workdir))) || (user && !(u = strdup(user))) || strv_copy(entrypoint, &ep) < 0 ||
	    strv_copy(cmd, &c) < 0) {
		free(w);
		free(u);
		strv_free(ep);
		return cap_err(err, ENOMEM, "image defaults");
	}
	free(cfg->workdir);
	free(cfg->user);
	strv_free(cfg->entrypoint);
	strv_free(cfg->cmd);
	cfg->workdir = w;
	cfg->user = u;
	cfg->entrypoint = ep;
	cfg->cmd = c;
	return 0;
}

/* One argument of an argv line: '%', CR and LF escaped, so that each stays one line. */
static void put_arg_line(FILE *f, const char *key, const char *arg)
{
	fprintf(f, "%s=", key);
	for (const char *p = arg; *p; p++) {
		if (*p == '%' || *p == '\n' || *p == '\r')
			fprintf(f, "%%%02X", (unsigned char)*p);
		else
			fputc(*p, f);
	}
	fputc('\n', f);
}

static int push_arg_line(char ***v, const char *line)
{
	size_t n = 0;
	while (*v && (*v)[n])
		n++;
	if (n >= CP_MAX_ARGS)
		return -E2BIG;
	char *arg = malloc(strlen(line) + 1), *o = arg;
	char **nv = realloc(*v, (n + 2) * sizeof(char *));
	if (!arg || !nv) {
		free(arg);
		if (nv)
			*v = nv;
		return -ENOMEM;
	}
	*v = nv;
	for (const char *p = line; *p; p++) {
		unsigned x;
		if (*p == '%' && sscanf(p + 1, "%2X", &x) == 1 && p[1] && p[2]) {
			*o++ = (char)x;
			p += 2;
		} else {
			*o++ = *p;
		}
	}
	*o = '\0';
	(*v)[n] = arg;
	(*v)[n + 1] = NULL;
	return 0;
}

/* ---- on disk ---- */

int config_serialize(const struct capsule_config *cfg, char **out, size_t *len)
{
	char *buf = NULL;
	size_t size = 0;
	FILE *f = open_memstream(&buf, &size);
	if (!f)
		return -ENOMEM;
	fprintf(f, "version=1\nname=%s\nimage=%s\nhostname=%s\nisolation=%s\n", cfg->name, cfg->image, cfg->hostname,
		cfg->isolation == CAPSULE_ISOLATION_VM ? "vm" : "container");
	fprintf(f, "memory=%llu\ncpus_milli=%u\npids=%u\nboot_timeout_ms=%u\ndetached=%d\ncreated=%lld\nid_slot=%u\n",
		(unsigned long long)cfg->memory_bytes, cfg->cpus_milli, cfg->pids_limit, cfg->boot_timeout_ms,
		cfg->detached ? 1 : 0, (long long)cfg->created_unix, cfg->id_slot);
	for (size_t i = 0; i < cfg->envc; i++)
		fprintf(f, "env=%s\n", cfg->env[i]);
	fprintf(f, "boot_timeout_set=%d\n", cfg->boot_timeout_set ? 1 : 0);
	if (cfg->accel[0])
		fprintf(f, "accel=%s\n", cfg->accel);
	for (size_t i = 0; i < cfg->nqemu_args; i++)
		fprintf(f, "qemu_arg=%s\n", cfg->qemu_args[i]);
	if (cfg->disk_bytes)
		fprintf(f, "disk_size=%llu\n", (unsigned long long)cfg->disk_bytes);
	if (cfg->disk_from)
		fprintf(f, "disk_from=%s\n", cfg->disk_from);
	if (cfg->display)
		fprintf(f, "display=1\n");
	if (cfg->base_none)
		fprintf(f, "base=none\n");
	for (size_t i = 0; i < cfg->nlayers; i++)
		fprintf(f, "layer=%s\n", cfg->layers[i]);
	if (cfg->workdir)
		fprintf(f, "workdir=%s\n", cfg->workdir);
	if (cfg->user)
		fprintf(f, "user=%s\n", cfg->user);
	if (cfg->entrypoint)
		fprintf(f, "entrypoint_set=1\n");
	for (size_t i = 0; cfg->entrypoint && cfg->entrypoint[i]; i++)
		put_arg_line(f, "entrypoint", cfg->entrypoint[i]);
	if (cfg->cmd)
		fprintf(f, "cmd_set=1\n");
	for (size_t i = 0; cfg->cmd && cfg->cmd[i]; i++)
		put_arg_line(f, "cmd", cfg->cmd[i]);
	/* Sources may hold ':' and spaces: the source's length says where it ends. */
	for (size_t i = 0; i < cfg->nbinds; i++)
		fprintf(f, "%s=%s:%zu:%s%s\n", cfg->binds[i].volume ? "volume" : "bind", cfg->binds[i].readonly ? "ro" : "rw",
			strlen(cfg->binds[i].source), cfg->binds[i].source, cfg->binds[i].target);
	for (size_t i = 0; i < cfg->nbinds; i++)
		if (cfg->binds[i].transform)
			fprintf(f, "transform=%zu:%s%zu:%s%s\n", strlen(cfg->binds[i].target), cfg->binds[i].target,
				strlen(cfg->binds[i].transform), cfg->binds[i].transform, cfg->binds[i].transform_config);
	for (size_t i = 0; i < cfg->ntmpfs; i++)
		fprintf(f, "tmpfs=%llu:%o:%s\n", (unsigned long long)cfg->tmpfs[i].size_bytes, cfg->tmpfs[i].mode,
			cfg->tmpfs[i].target);
	config_net_serialize(cfg, f);
	if (cfg->save[0])
		fprintf(f, "save=%s\n", cfg->save);
	if (fclose(f) != 0) {
		free(buf);
		return -ENOMEM;
	}
	*out = buf;
	*len = size;
	return 0;
}

static int parse_u64_field(const char *key, const char *v, uint64_t max, uint64_t *out, capsule_error *err)
{
	char *end;
	errno = 0;
	unsigned long long x = strtoull(v, &end, 10);
	if (errno || *end || !*v || x > max)
		return cap_err_plain(err, EINVAL, "sandbox configuration: invalid %s '%s'", key, v);
	*out = x;
	return 0;
}

/* "ro:LEN:SOURCETARGET". The sensitive check was made when the sandbox was created, with
 * the creator's answer to it; a stored configuration is not asked again. A volume's line
 * has the volume's name for SOURCE. */
static int parse_bind_line(struct capsule_config *cfg, const char *v, bool volume, capsule_error *err)
{
	size_t srclen;
	int off = 0;
	char mode[3] = "";
	if (cfg->nbinds >= CAPSULE_MAX_BINDS || sscanf(v, "%2[row]:%zu:%n", mode, &srclen, &off) != 2 || off == 0 ||
	    (strcmp(mode, "ro") && strcmp(mode, "rw")) || strlen(v + off) <= srclen || (v[off] == '/') == volume ||
	    v[off + srclen] != '/')
		return cap_err_plain(err, EINVAL, "sandbox configuration: invalid %s '%s'", volume ? "volume" : "bind", v);
	struct bind_mount *b = &cfg->binds[cfg->nbinds];
	b->source = strndup(v + off, srclen);
	b->target = strdup(v + off + srclen);
	b->readonly = !strcmp(mode, "ro");
	b->volume = volume;
	cfg->nbinds++;
	if (!b->source || !b->target)
		return cap_err(err, ENOMEM, "parsing configuration");
	if (volume && parse_name(b->source, "volume name", NULL) < 0)
		return cap_err_plain(err, EINVAL, "sandbox configuration: invalid volume '%s'", v);
	return 0;
}

/* "TLEN:TARGETPLEN:PLUGINCONFIG", after the bind line of TARGET. */
static int parse_transform_line(struct capsule_config *cfg, const char *v, capsule_error *err)
{
	size_t tlen, plen;
	int off = 0, off2 = 0;
	if (sscanf(v, "%zu:%n", &tlen, &off) != 1 || off == 0 || strnlen(v + off, tlen) < tlen ||
	    sscanf(v + off + tlen, "%zu:%n", &plen, &off2) != 1 || off2 == 0 ||
	    strnlen(v + off + tlen + off2, plen) < plen)
		return cap_err_plain(err, EINVAL, "sandbox configuration: invalid transform '%s'", v);
	const char *target = v + off, *plugin = v + off + tlen + off2, *config = plugin + plen;
	for (size_t i = 0; i < cfg->nbinds; i++) {
		struct bind_mount *b = &cfg->binds[i];
		if (strlen(b->target) != tlen || strncmp(b->target, target, tlen) || b->transform)
			continue;
		b->transform = strndup(plugin, plen);
		b->transform_config = strdup(config);
		if (!b->transform || !b->transform_config)
			return cap_err(err, ENOMEM, "parsing configuration");
		return 0;
	}
	return cap_err_plain(err, EINVAL, "sandbox configuration: transform '%s' for no bind mount", v);
}

int config_parse(const char *text, size_t len, struct capsule_config *cfg, capsule_error *err)
{
	memset(cfg, 0, sizeof(*cfg));
	_cleanup_free_ char *copy = strndup(text, len);
	if (!copy)
		return cap_err(err, ENOMEM, "parsing configuration");
	char *save = NULL;
	int r = 0;
	for (char *line = strtok_r(copy, "\n", &save); line && r == 0; line = strtok_r(NULL, "\n", &save)) {
		char *eq = strchr(line, '=');
		if (!eq)
			continue;
		*eq = '\0';
		const char *k = line, *v = eq + 1;
		uint64_t x = 0;
		if (!strcmp(k, "name"))
			snprintf(cfg->name, sizeof(cfg->name), "%s", v);
		else if (!strcmp(k, "image"))
			snprintf(cfg->image, sizeof(cfg->image), "%s", v);
		else if (!strcmp(k, "hostname"))
			snprintf(cfg->hostname, sizeof(cfg->hostname), "%s", v);
		else if (!strcmp(k, "isolation"))
			cfg->isolation = strcmp(v, "vm") == 0 ? CAPSULE_ISOLATION_VM : CAPSULE_ISOLATION_CONTAINER;
		else if (!strcmp(k, "memory") && (r = parse_u64_field(k, v, UINT64_MAX, &x, err)) == 0)
			cfg->memory_bytes = x;
		else if (!strcmp(k, "cpus_milli") && (r = parse_u64_field(k, v, UINT32_MAX, &x, err)) == 0)
			cfg->cpus_milli = (uint32_t)x;
		else if (!strcmp(k, "pids") && (r = parse_u64_field(k, v, UINT32_MAX, &x, err)) == 0)
			cfg->pids_limit = (uint32_t)x;
		else if (!strcmp(k, "boot_timeout_ms") && (r = parse_u64_field(k, v, UINT32_MAX, &x, err)) == 0)
			cfg->boot_timeout_ms = (uint32_t)x;
		else if (!strcmp(k, "detached"))
			cfg->detached = strcmp(v, "1") == 0;
		else if (!strcmp(k, "created") && (r = parse_u64_field(k, v, INT64_MAX, &x, err)) == 0)
			cfg->created_unix = (int64_t)x;
		else if (!strcmp(k, "id_slot") && (r = parse_u64_field(k, v, 65535, &x, err)) == 0)
			cfg->id_slot = (uint32_t)x;
		else if (!strcmp(k, "tmpfs")) {
			unsigned long long size;
			unsigned mode;
			int off = 0;
			if (sscanf(v, "%llu:%o:%n", &size, &mode, &off) != 2 || off == 0 ||
			    capsule_config_add_tmpfs(cfg, v + off, size, mode, err) < 0)
				r = cap_err_plain(err, EINVAL, "sandbox configuration: invalid tmpfs '%s'", v);
		} else if (!strcmp(k, "bind") || !strcmp(k, "volume")) {
			r = parse_bind_line(cfg, v, !strcmp(k, "volume"), err);
		} else if (!strcmp(k, "transform")) {
			r = parse_transform_line(cfg, v, err);
		} else if (!strcmp(k, "layer")) {
			r = config_add_layer(cfg, v, err);
		} else if (!strcmp(k, "base")) {
			if (strcmp(v, "none") && strcmp(v, "host"))
				r = cap_err_plain(err, EINVAL, "sandbox configuration: invalid base '%s'", v);
			cfg->base_none = !strcmp(v, "none");
		} else if (!strcmp(k, "save")) {
			if ((r = validate_name(v, "save name", err)) == 0)
				snprintf(cfg->save, sizeof(cfg->save), "%s", v);
		} else if (!strcmp(k, "workdir") || !strcmp(k, "user")) {
			char **slot = k[0] == 'w' ? &cfg->workdir : &cfg->user;
			free(*slot);
			if (!(*slot = strdup(v)))
				r = cap_err(err, ENOMEM, "parsing configuration");
		} else if (!strcmp(k, "entrypoint_set") || !strcmp(k, "cmd_set")) {
			char ***slot = k[0] == 'e' ? &cfg->entrypoint : &cfg->cmd;
			if (!*slot && !(*slot = calloc(1, sizeof(char *))))
				r = cap_err(err, ENOMEM, "parsing configuration");
		} else if (!strcmp(k, "entrypoint") || !strcmp(k, "cmd")) {
			int e = push_arg_line(k[0] == 'e' ? &cfg->entrypoint : &cfg->cmd, v);
			if (e < 0)
				r = cap_err(err, -e, "sandbox configuration: %s", k);
		} else if (!strcmp(k, "env")) {
			if (push_env(cfg, v) < 0)
				r = cap_err(err, ENOMEM, "parsing configuration");
		} else if (!strcmp(k, "boot_timeout_set")) {
			cfg->boot_timeout_set = strcmp(v, "1") == 0;
		} else if (!strcmp(k, "accel")) {
			r = capsule_config_set_accel(cfg, v, err);
		} else if (!strcmp(k, "qemu_arg")) {
			r = capsule_config_add_qemu_arg(cfg, v, err);
		} else if (!strcmp(k, "disk_from")) {
			free(cfg->disk_from);
			if (!(cfg->disk_from = strdup(v)))
				r = cap_err(err, ENOMEM, "parsing configuration");
		} else if (!strcmp(k, "disk_size")) {
			if ((r = parse_u64_field(k, v, UINT64_MAX, &x, err)) == 0)
				r = capsule_config_set_disk_size_bytes(cfg, x, err);
		} else if (!strcmp(k, "display")) {
			cfg->display = strcmp(v, "1") == 0;
		} else if ((r = config_net_parse_line(cfg, k, v, err)) > 0) {
			r = 0;
		}
	}
	if (r == 0 && !cfg->name[0])
		r = cap_err_plain(err, EINVAL, "sandbox configuration has no name");
	if (r == 0 && cfg->base_none && !cfg->nlayers)
		r = cap_err_plain(err, EINVAL, "sandbox configuration: base=none and no layer");
	if (r < 0)
		config_clear(cfg);
	return r;
}

int config_load_at(int dirfd, struct capsule_config *cfg, capsule_error *err)
{
	_cleanup_free_ char *text = NULL;
	size_t len;
	int r = read_file_at(dirfd, "config", 1u << 20, &text, &len);
	if (r < 0)
		return cap_err(err, -r, "reading the sandbox's configuration");
	return config_parse(text, len, cfg, err);
}

int capsule_parse_size(const char *text, uint64_t *bytes_out, capsule_error *err)
{
	if (!bytes_out)
		return cap_err_plain(err, EINVAL, "parse size: no output given");
	return parse_size(text, bytes_out, err);
}
