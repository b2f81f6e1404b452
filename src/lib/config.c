/* The configuration builder: the C API's setters of a sandbox's scalar settings, its
 * environment, QEMU arguments, layers and image defaults, and their rows' handlers in the
 * table that writes and reads run/<name>/config (config_keys.c; mounts: config_mounts.c). */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config_keys.h"
#include "parse.h"
#include "proto.h"
#include "sandbox_config.h"
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

const char *config_hostname(const struct capsule_config *cfg)
{
	return cfg->hostname[0] ? cfg->hostname : cfg->origin[0] ? cfg->origin : cfg->name;
}

bool config_layer_volatile(const struct capsule_config *cfg)
{
	return !cfg->detached && !cfg->pool[0];
}

const char *config_cgroup_base(const struct capsule_config *cfg)
{
	return cfg->cgroup_base[0] ? cfg->cgroup_base : cfg->origin[0] ? cfg->origin : cfg->name;
}

bool cgroup_base_valid(const char *base)
{
	const char *t = strrchr(base, '~');
	if (!t || strlen(t + 1) != 8 || strspn(t + 1, "0123456789abcdef") != 8 || (size_t)(t - base) > CAPSULE_NAME_MAX)
		return false;
	char name[CAPSULE_NAME_MAX + 1];
	snprintf(name, sizeof(name), "%.*s", (int)(t - base), base);
	return validate_name(name, NULL, NULL) == 0;
}

int capsule_config_set_pool(capsule_config *cfg, const char *pool, capsule_error *err)
{
	if (!pool || !*pool) {
		cfg->pool[0] = '\0';
		return 0;
	}
	int r = validate_name(pool, "pool name", err);
	if (r < 0)
		return r;
	snprintf(cfg->pool, sizeof(cfg->pool), "%s", pool);
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

capsule_isolation capsule_config_get_isolation(const capsule_config *cfg)
{
	return cfg->isolation;
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
	 * limit at all (docker refuses it the same way). A vm's --cpus is its guest's CPU count.
	 * An OCI spec's own quota and period are written as given, as runc writes them. */
	long online = sysconf(_SC_NPROCESSORS_ONLN);
	if (online > 0 && cfg->cpus_milli > (uint64_t)online * 1000u && !cfg->cg.cpu_quota_us)
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

int capsule_config_set_idle_pause_ms(capsule_config *cfg, uint32_t ms, capsule_error *err)
{
	/* Shorter, and the pause and resume around every pair of commands would cost more than
	 * the pause saves. */
	if (ms && ms < 100)
		return cap_err_plain(err, EINVAL, "idle pause %u ms is too short (minimum 100 ms; 0 turns it off)", ms);
	cfg->idle_pause_ms = ms;
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

static int load_at(int dirfd, struct capsule_config *cfg, bool zeroed, capsule_error *err)
{
	_cleanup_free_ char *text = NULL;
	size_t len;
	int r = read_file_at(dirfd, "config", 1u << 20, &text, &len);
	if (r < 0)
		return cap_err(err, -r, "reading the sandbox's configuration");
	return zeroed ? config_parse_zeroed(text, len, cfg, err) : config_parse(text, len, cfg, err);
}

int config_load_at(int dirfd, struct capsule_config *cfg, capsule_error *err)
{
	return load_at(dirfd, cfg, false, err);
}

int config_load_zeroed_at(int dirfd, struct capsule_config *cfg, capsule_error *err)
{
	return load_at(dirfd, cfg, true, err);
}

int capsule_parse_size(const char *text, uint64_t *bytes_out, capsule_error *err)
{
	if (!bytes_out)
		return cap_err_plain(err, EINVAL, "parse size: no output given");
	return parse_size(text, bytes_out, err);
}


/* ---- the table's rows (config_keys.c) ---- */

int config_pids_set(struct capsule_config *cfg, const char *value, capsule_error *err)
{
	uint64_t v;
	int r = parse_uint(value, "pids limit", 0, 4194304, &v, err);
	return r < 0 ? r : capsule_config_set_pids_limit(cfg, (uint32_t)v, err);
}

int config_boot_timeout_set(struct capsule_config *cfg, const char *value, capsule_error *err)
{
	uint32_t ms;
	int r = parse_duration_ms(value, &ms, err);
	return r < 0 ? r : capsule_config_set_boot_timeout_ms(cfg, ms, err);
}

int config_idle_pause_set(struct capsule_config *cfg, const char *value, capsule_error *err)
{
	uint32_t ms;
	int r = parse_duration_ms(value, &ms, err);
	return r < 0 ? r : capsule_config_set_idle_pause_ms(cfg, ms, err);
}

int config_isolation_set(struct capsule_config *cfg, const char *value, capsule_error *err)
{
	if (!strcmp(value, "container"))
		return capsule_config_set_isolation(cfg, CAPSULE_ISOLATION_CONTAINER, err);
	if (!strcmp(value, "vm"))
		return capsule_config_set_isolation(cfg, CAPSULE_ISOLATION_VM, err);
	return cap_err_plain(err, EINVAL, "invalid isolation '%s' (use container or vm)", value);
}

int config_isolation_load(struct capsule_config *cfg, const char *key, const char *value, capsule_error *err)
{
	cfg->isolation = strcmp(value, "vm") == 0 ? CAPSULE_ISOLATION_VM : CAPSULE_ISOLATION_CONTAINER;
	return 0;
}

void config_isolation_save(const struct capsule_config *cfg, FILE *f)
{
	fprintf(f, "isolation=%s\n", cfg->isolation == CAPSULE_ISOLATION_VM ? "vm" : "container");
}

/* A switch: no value (the flag) turns it on; a program may say "1" or "0". */
int config_display_switch(struct capsule_config *cfg, const char *value, capsule_error *err)
{
	if (value && strcmp(value, "1") && strcmp(value, "0"))
		return cap_err_plain(err, EINVAL, "invalid display '%s' (use 1 or 0)", value);
	return capsule_config_set_display(cfg, !value || !strcmp(value, "1"), err);
}

int config_accel_load(struct capsule_config *cfg, const char *key, const char *value, capsule_error *err)
{
	return capsule_config_set_accel(cfg, value, err);
}

int config_disk_size_load(struct capsule_config *cfg, const char *key, const char *value, capsule_error *err)
{
	uint64_t x;
	int r = config_parse_uint(key, value, UINT64_MAX, &x, err);
	return r < 0 ? r : capsule_config_set_disk_size_bytes(cfg, x, err);
}

int config_save_load(struct capsule_config *cfg, const char *key, const char *value, capsule_error *err)
{
	int r = validate_name(value, "save name", err);
	if (r == 0)
		snprintf(cfg->save, sizeof(cfg->save), "%s", value);
	return r;
}

int config_base_load(struct capsule_config *cfg, const char *key, const char *value, capsule_error *err)
{
	if (strcmp(value, "none") && strcmp(value, "host"))
		return cap_err_plain(err, EINVAL, "sandbox configuration: invalid base '%s'", value);
	cfg->base_none = !strcmp(value, "none");
	return 0;
}

void config_base_save(const struct capsule_config *cfg, FILE *f)
{
	if (cfg->base_none)
		fprintf(f, "base=none\n");
}

int config_env_load(struct capsule_config *cfg, const char *key, const char *value, capsule_error *err)
{
	return push_env(cfg, value) < 0 ? cap_err(err, ENOMEM, "parsing configuration") : 0;
}

/* save, forget, copy and clear of the string list FIELD (NFIELD entries, at most MAX): one
 * "KEY=ENTRY" line each in the file. */
#define STRING_LIST_HANDLERS(key, field, nfield, max)                                            \
	void config_##key##_save(const struct capsule_config *cfg, FILE *f)                      \
	{                                                                                        \
		for (size_t i = 0; i < cfg->nfield; i++)                                         \
			fprintf(f, #key "=%s\n", cfg->field[i]);                                 \
	}                                                                                        \
	void config_##key##_forget(struct capsule_config *cfg)                                   \
	{                                                                                        \
		cfg->field = NULL;                                                               \
		cfg->nfield = 0;                                                                 \
	}                                                                                        \
	int config_##key##_copy(struct capsule_config *dst, const struct capsule_config *src)    \
	{                                                                                        \
		for (size_t i = 0; i < src->nfield; i++) {                                       \
			int r = push_string(&dst->field, &dst->nfield, max, src->field[i]);      \
			if (r < 0)                                                               \
				return r;                                                        \
		}                                                                                \
		return 0;                                                                        \
	}                                                                                        \
	void config_##key##_clear(struct capsule_config *cfg)                                    \
	{                                                                                        \
		for (size_t i = 0; i < cfg->nfield; i++)                                         \
			free(cfg->field[i]);                                                     \
		free(cfg->field);                                                                \
		config_##key##_forget(cfg);                                                      \
	}

STRING_LIST_HANDLERS(env, env, envc, CP_MAX_ENV)
STRING_LIST_HANDLERS(qemu_arg, qemu_args, nqemu_args, CAPSULE_MAX_QEMU_ARGS)
STRING_LIST_HANDLERS(label, labels, nlabels, CAPSULE_LABELS_MAX)

int config_qemu_arg_load(struct capsule_config *cfg, const char *key, const char *value, capsule_error *err)
{
	return capsule_config_add_qemu_arg(cfg, value, err);
}

int capsule_config_add_label(capsule_config *cfg, const char *key_value, capsule_error *err)
{
	if (!cfg || !key_value)
		return cap_err_plain(err, EINVAL, "label: no configuration or no label given");
	_cleanup_free_ char *key = NULL, *value = NULL;
	int r = parse_label(key_value, false, &key, &value, err);
	if (r < 0)
		return r;
	size_t kl = strlen(key);
	for (size_t i = 0; i < cfg->nlabels; i++)
		if (!strncmp(cfg->labels[i], key, kl) && cfg->labels[i][kl] == '=')
			return cap_err_plain(err, EEXIST, "label '%s' is given twice", key);
	r = push_string(&cfg->labels, &cfg->nlabels, CAPSULE_LABELS_MAX, key_value);
	if (r == -E2BIG)
		return cap_err_plain(err, E2BIG, "label '%s': at most %d labels", key, CAPSULE_LABELS_MAX);
	return r < 0 ? cap_err(err, -r, "label '%s'", key) : 0;
}

/* The file's lines are checked again: the config is the sandbox's, not the caller's word. */
int config_label_load(struct capsule_config *cfg, const char *key, const char *value, capsule_error *err)
{
	return capsule_config_add_label(cfg, value, err);
}

bool config_has_label(const struct capsule_config *cfg, const char *filter)
{
	const char *eq = strchr(filter, '=');
	size_t kl = eq ? (size_t)(eq - filter) : strlen(filter);
	for (size_t i = 0; i < cfg->nlabels; i++)
		if (!strncmp(cfg->labels[i], filter, kl) && cfg->labels[i][kl] == '=')
			return !eq || !strcmp(cfg->labels[i] + kl + 1, eq + 1);
	return false;
}

int config_layer_load(struct capsule_config *cfg, const char *key, const char *value, capsule_error *err)
{
	return config_add_layer(cfg, value, err);
}

void config_layer_save(const struct capsule_config *cfg, FILE *f)
{
	for (size_t i = 0; i < cfg->nlayers; i++)
		fprintf(f, "layer=%s\n", cfg->layers[i]);
}

void config_layer_forget(struct capsule_config *cfg)
{
	cfg->nlayers = 0;
}

int config_layer_copy(struct capsule_config *dst, const struct capsule_config *src)
{
	for (size_t i = 0; i < src->nlayers; i++) {
		if (!(dst->layers[i] = strdup(src->layers[i])))
			return -ENOMEM;
		dst->nlayers = i + 1;
	}
	return 0;
}

void config_layer_clear(struct capsule_config *cfg)
{
	for (size_t i = 0; i < cfg->nlayers; i++)
		free(cfg->layers[i]);
	cfg->nlayers = 0;
}

/* An argv of the image's (entrypoint, cmd): "KEY_set=1" when it is there, even empty, then
 * one line an argument. */
static int argv_load(char ***v, const char *key, const char *value, capsule_error *err)
{
	if (strstr(key, "_set")) {
		if (!*v && !(*v = calloc(1, sizeof(char *))))
			return cap_err(err, ENOMEM, "parsing configuration");
		return 0;
	}
	int e = push_arg_line(v, value);
	return e < 0 ? cap_err(err, -e, "sandbox configuration: %s", key) : 0;
}

static void argv_save(char *const *v, const char *key, FILE *f)
{
	if (v)
		fprintf(f, "%s_set=1\n", key);
	for (size_t i = 0; v && v[i]; i++)
		put_arg_line(f, key, v[i]);
}

int config_entrypoint_load(struct capsule_config *cfg, const char *key, const char *value, capsule_error *err)
{
	return argv_load(&cfg->entrypoint, key, value, err);
}

void config_entrypoint_save(const struct capsule_config *cfg, FILE *f)
{
	argv_save(cfg->entrypoint, "entrypoint", f);
}

void config_entrypoint_forget(struct capsule_config *cfg)
{
	cfg->entrypoint = NULL;
}

int config_entrypoint_copy(struct capsule_config *dst, const struct capsule_config *src)
{
	return strv_copy((const char *const *)src->entrypoint, &dst->entrypoint);
}

void config_entrypoint_clear(struct capsule_config *cfg)
{
	strv_free(cfg->entrypoint);
	cfg->entrypoint = NULL;
}

int config_cmd_load(struct capsule_config *cfg, const char *key, const char *value, capsule_error *err)
{
	return argv_load(&cfg->cmd, key, value, err);
}

void config_cmd_save(const struct capsule_config *cfg, FILE *f)
{
	argv_save(cfg->cmd, "cmd", f);
}

void config_cmd_forget(struct capsule_config *cfg)
{
	cfg->cmd = NULL;
}

int config_cmd_copy(struct capsule_config *dst, const struct capsule_config *src)
{
	return strv_copy((const char *const *)src->cmd, &dst->cmd);
}

void config_cmd_clear(struct capsule_config *cfg)
{
	strv_free(cfg->cmd);
	cfg->cmd = NULL;
}
