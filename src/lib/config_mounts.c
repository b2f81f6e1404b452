/* A sandbox's mounts in its configuration: tmpfs mounts, bind mounts of host folders,
 * volumes, and the transforms served over binds; their setters, checks and lines of
 * run/<name>/config. */
#include <errno.h>
#include <limits.h>
#include <linux/mount.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "sandbox_config.h"
#include "config_keys.h"
#include "home.h"
#include "parse.h"
#include "util.h"

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


/* "ro:LEN:SOURCETARGET". The sensitive check was made when the sandbox was created, with
 * the creator's answer to it; a stored configuration is not asked again. A volume's line
 * has the volume's name for SOURCE. */
int config_bind_load(struct capsule_config *cfg, const char *key, const char *v, capsule_error *err)
{
	bool volume = !strcmp(key, "volume");
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
int config_transform_load(struct capsule_config *cfg, const char *key, const char *v, capsule_error *err)
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


/* ---- the table's rows (config_keys.c) ---- */

int config_tmpfs_set(struct capsule_config *cfg, const char *value, capsule_error *err)
{
	struct tmpfs_spec t;
	int r = parse_tmpfs_spec(value, &t, err);
	if (r < 0)
		return r;
	r = capsule_config_add_tmpfs(cfg, t.target, t.size_bytes, t.mode, err);
	tmpfs_spec_free(&t);
	return r;
}

int config_tmpfs_load(struct capsule_config *cfg, const char *key, const char *v, capsule_error *err)
{
	unsigned long long size;
	unsigned mode;
	int off = 0;
	if (sscanf(v, "%llu:%o:%n", &size, &mode, &off) != 2 || off == 0 ||
	    capsule_config_add_tmpfs(cfg, v + off, size, mode, err) < 0)
		return cap_err_plain(err, EINVAL, "sandbox configuration: invalid %s '%s'", key, v);
	return 0;
}

void config_tmpfs_save(const struct capsule_config *cfg, FILE *f)
{
	for (size_t i = 0; i < cfg->ntmpfs; i++)
		fprintf(f, "tmpfs=%llu:%o:%s\n", (unsigned long long)cfg->tmpfs[i].size_bytes, cfg->tmpfs[i].mode,
			cfg->tmpfs[i].target);
}

void config_tmpfs_forget(struct capsule_config *cfg)
{
	/* The sizes and modes stay: the copy below only puts its own targets in. */
	for (size_t i = 0; i < cfg->ntmpfs; i++)
		cfg->tmpfs[i].target = NULL;
}

int config_tmpfs_copy(struct capsule_config *dst, const struct capsule_config *src)
{
	for (size_t i = 0; i < src->ntmpfs; i++)
		if (!(dst->tmpfs[i].target = strdup(src->tmpfs[i].target)))
			return -ENOMEM;
	return 0;
}

void config_tmpfs_clear(struct capsule_config *cfg)
{
	for (size_t i = 0; i < cfg->ntmpfs; i++)
		free(cfg->tmpfs[i].target);
	cfg->ntmpfs = 0;
}

void config_bind_save(const struct capsule_config *cfg, FILE *f)
{
	/* Sources may hold ':' and spaces: the source's length says where it ends. */
	for (size_t i = 0; i < cfg->nbinds; i++)
		fprintf(f, "%s=%s:%zu:%s%s\n", cfg->binds[i].volume ? "volume" : "bind", cfg->binds[i].readonly ? "ro" : "rw",
			strlen(cfg->binds[i].source), cfg->binds[i].source, cfg->binds[i].target);
}

void config_bind_forget(struct capsule_config *cfg)
{
	for (size_t i = 0; i < cfg->nbinds; i++) {
		struct bind_mount *b = &cfg->binds[i];
		b->source = b->target = b->transform = b->transform_config = NULL;
	}
}

int config_bind_copy(struct capsule_config *dst, const struct capsule_config *src)
{
	for (size_t i = 0; i < src->nbinds; i++) {
		const struct bind_mount *s = &src->binds[i];
		struct bind_mount *b = &dst->binds[i];
		if (!(b->source = strdup(s->source)) || !(b->target = strdup(s->target)) ||
		    (s->transform && (!(b->transform = strdup(s->transform)) ||
				      !(b->transform_config = strdup(s->transform_config ? s->transform_config : "")))))
			return -ENOMEM;
	}
	return 0;
}

void config_bind_clear(struct capsule_config *cfg)
{
	for (size_t i = 0; i < cfg->nbinds; i++) {
		free(cfg->binds[i].source);
		free(cfg->binds[i].target);
		free(cfg->binds[i].transform);
		free(cfg->binds[i].transform_config);
	}
	cfg->nbinds = 0;
}

void config_transform_save(const struct capsule_config *cfg, FILE *f)
{
	for (size_t i = 0; i < cfg->nbinds; i++)
		if (cfg->binds[i].transform)
			fprintf(f, "transform=%zu:%s%zu:%s%s\n", strlen(cfg->binds[i].target), cfg->binds[i].target,
				strlen(cfg->binds[i].transform), cfg->binds[i].transform, cfg->binds[i].transform_config);
}

/* --transform DST=PLUGIN[:CONFIG]: the plugin path ends at the first ':', the config is the rest. */
int config_transform_set(struct capsule_config *cfg, const char *spec, capsule_error *err)
{
	const char *eq = strchr(spec, '=');
	if (!eq || eq == spec || !eq[1])
		return cap_err_plain(err, EINVAL, "invalid --transform '%s': expected DST=PLUGIN[:CONFIG]", spec);
	const char *colon = strchr(eq + 1, ':');
	_cleanup_free_ char *target = strndup(spec, (size_t)(eq - spec));
	_cleanup_free_ char *plugin = colon ? strndup(eq + 1, (size_t)(colon - eq - 1)) : strdup(eq + 1);
	if (!target || !plugin)
		return cap_err(err, ENOMEM, "--transform");
	return capsule_config_set_bind_transform(cfg, target, plugin, colon ? colon + 1 : NULL, err);
}

struct mount_word {
	const char *name;
	uint64_t bits;
};

/* The bits of TABLE's words that config's mount_attrs gives TARGET. */
static uint64_t mount_words(const struct capsule_config *cfg, const char *target, const struct mount_word *table,
			    size_t count)
{
	size_t n = strlen(target);
	for (const char *p = cfg->mount_attrs; p && *p;) {
		const char *comma = strchr(p, ',');
		size_t len = comma ? (size_t)(comma - p) : strlen(p);
		if (len > n && !strncmp(p, target, n) && p[n] == '=') {
			uint64_t bits = 0;
			for (const char *f = p + n + 1; f < p + len;) {
				const char *end = memchr(f, '+', (size_t)(p + len - f));
				size_t fl = end ? (size_t)(end - f) : (size_t)(p + len - f);
				for (size_t i = 0; i < count; i++)
					if (strlen(table[i].name) == fl && !strncmp(f, table[i].name, fl))
						bits |= table[i].bits;
				f += fl + (end ? 1 : 0);
			}
			return bits;
		}
		p = comma ? comma + 1 : p + len;
	}
	return 0;
}

char config_mount_next(const char *order, size_t nt, size_t nb, size_t t, size_t b)
{
	size_t k = t + b;
	if (order && k < strlen(order)) {
		if (order[k] == 't' && t < nt)
			return 't';
		if (order[k] == 'b' && b < nb)
			return 'b';
	}
	return t < nt ? 't' : b < nb ? 'b' : 0;
}

uint64_t config_mount_attrs(const struct capsule_config *cfg, const char *target)
{
	static const struct mount_word attrs[] = { { "noexec", MOUNT_ATTR_NOEXEC },
						   { "strictatime", MOUNT_ATTR_STRICTATIME },
						   { "noatime", MOUNT_ATTR_NOATIME },
						   { "nodiratime", MOUNT_ATTR_NODIRATIME } };
	return mount_words(cfg, target, attrs, ARRAY_SIZE(attrs));
}

uint64_t config_mount_propagation(const struct capsule_config *cfg, const char *target)
{
	static const struct mount_word props[] = { { "shared", MS_SHARED },
						   { "rshared", MS_SHARED | CONFIG_PROPAGATION_RECURSIVE },
						   { "unbindable", MS_UNBINDABLE },
						   { "runbindable", MS_UNBINDABLE | CONFIG_PROPAGATION_RECURSIVE } };
	return mount_words(cfg, target, props, ARRAY_SIZE(props));
}
