/* The table of a sandbox's settings, and what it drives: the "key=value" lines of
 * run/<name>/config (written by the library, read back by the shim and by `capsule start`),
 * config_copy and config_clear, inspect's "limits", and the flags of run and create
 * (capsule_config_option_at, capsule_config_set_option). The rows' order is the file's and
 * the help's. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sandbox_config.h"
#include "config_keys.h"
#include "inspect.h"
#include "json.h"
#include "util.h"

#define FIELD(f) .offset = offsetof(struct capsule_config, f), .size = sizeof(((struct capsule_config *)0)->f)
#define LIST(key) .load = config_##key##_load, .save = config_##key##_save, .forget = config_##key##_forget, \
			   .copy = config_##key##_copy, .clear = config_##key##_clear
#define FLAG(f, s, v, h) .option = { .flag = f, .short_flag = s, .value_name = v, .help = h }

const struct config_key config_keys[] = {
	{ .name = "name", .type = CONFIG_KEY_TEXT, FIELD(name), .set = capsule_config_set_name,
	  FLAG("name", 0, "NAME", "name the sandbox (default: generated)") },
	{ .name = "image", .type = CONFIG_KEY_TEXT, FIELD(image), .set = capsule_config_set_image,
	  FLAG("image", 0, "IMAGE", "image to start from (default: host)") },
	{ .name = "memory", .type = CONFIG_KEY_U64, FIELD(memory_bytes), .max = UINT64_MAX,
	  .inspect_limit = "memory_bytes", .set = capsule_config_set_memory,
	  FLAG("memory", 'm', "SIZE", "memory limit, e.g. 512M") },
	{ .name = "cpus_milli", .type = CONFIG_KEY_U32, FIELD(cpus_milli), .max = UINT32_MAX,
	  .inspect_limit = "cpus_milli", .set = capsule_config_set_cpus, FLAG("cpus", 0, "N", "cpu limit, e.g. 1.5") },
	{ .name = "cpu_shares", .type = CONFIG_KEY_U32, FIELD(cpu_shares), .max = 262144, .flags = CONFIG_KEY_OMIT_UNSET },
	{ .name = "pids", .type = CONFIG_KEY_U32, FIELD(pids_limit), .max = UINT32_MAX, .inspect_limit = "pids",
	  .set = config_pids_set, FLAG("pids-limit", 0, "N", "most processes at once") },
	/* docker's finer limits, an OCI spec's linux.resources too (config_resources.c). */
	{ .name = "cpuset_cpus", .type = CONFIG_KEY_STRING, FIELD(cg.cpuset_cpus), .inspect_limit = "cpuset_cpus",
	  .set = capsule_config_set_cpuset_cpus, FLAG("cpuset-cpus", 0, "LIST", "the cpus it may run on, e.g. 0-1,3") },
	{ .name = "cpuset_mems", .type = CONFIG_KEY_STRING, FIELD(cg.cpuset_mems), .inspect_limit = "cpuset_mems",
	  .set = capsule_config_set_cpuset_mems, FLAG("cpuset-mems", 0, "LIST", "the memory nodes it may use, e.g. 0") },
	{ .name = "memory_swap", .type = CONFIG_KEY_U64, FIELD(cg.memory_swap), .max = UINT64_MAX,
	  .flags = CONFIG_KEY_OMIT_UNSET | CONFIG_KEY_INSPECT_SET,
	  .inspect_limit = "memory_swap_bytes", .set = capsule_config_set_memory_swap,
	  FLAG("memory-swap", 0, "SIZE", "memory + swap, with --memory (-1: unlimited swap;\ndefault: no swap)") },
	{ .name = "memory_reservation", .type = CONFIG_KEY_U64, FIELD(cg.memory_reservation), .max = UINT64_MAX,
	  .flags = CONFIG_KEY_OMIT_UNSET | CONFIG_KEY_INSPECT_SET, .inspect_limit = "memory_reservation_bytes",
	  .set = capsule_config_set_memory_reservation, FLAG("memory-reservation", 0, "SIZE", "the soft limit, at most --memory") },
	{ .name = "hostname", .type = CONFIG_KEY_TEXT, FIELD(hostname), .set = capsule_config_set_hostname,
	  FLAG("hostname", 0, "NAME", "hostname inside (default: the sandbox's name)") },
	{ .name = "isolation", .type = CONFIG_KEY_CUSTOM, FIELD(isolation), .load = config_isolation_load,
	  .save = config_isolation_save, .set = config_isolation_set, FLAG("isolation", 0, "KIND", "container (default) or vm") },
	{ .name = "boot_timeout_ms", .type = CONFIG_KEY_U32, FIELD(boot_timeout_ms), .max = UINT32_MAX,
	  .set = config_boot_timeout_set,
	  FLAG("boot-timeout", 0, "DUR", "how long start may take (default 10s; 60s with vm)") },
	{ .name = "idle_pause_ms", .type = CONFIG_KEY_U32, FIELD(idle_pause_ms), .max = UINT32_MAX,
	  .flags = CONFIG_KEY_OMIT_UNSET, .set = config_idle_pause_set,
	  FLAG("idle-pause", 0, "DUR",
	       "pause the sandbox after DUR with no command, session or\nfile operation (seconds, or 30s, 5m); the next one resumes it") },
	{ .name = "accel", .type = CONFIG_KEY_TEXT, FIELD(accel), .flags = CONFIG_KEY_OMIT_UNSET, .load = config_accel_load,
	  .set = capsule_config_set_accel,
	  FLAG("accel", 0, "KIND", "vm: auto (default: kvm if /dev/kvm opens, else tcg), kvm or tcg") },
	{ .name = "qemu_arg", .type = CONFIG_KEY_CUSTOM, FIELD(qemu_args), LIST(qemu_arg),
	  .set = capsule_config_add_qemu_arg, FLAG("qemu-arg", 0, "ARG", "vm: one more argument for QEMU (repeat for more)") },
	{ .name = "disk_size", .type = CONFIG_KEY_U64, FIELD(disk_bytes), .max = UINT64_MAX,
	  .flags = CONFIG_KEY_OMIT_UNSET, .load = config_disk_size_load, .inspect_limit = "disk_bytes",
	  .set = capsule_config_set_disk_size,
	  FLAG("disk-size", 0, "SIZE",
	       "the sandbox's disk, e.g. 4G: a container's own layer\n(default: unbounded), a vm's root disk (default 2G)") },
	{ .name = "display", .type = CONFIG_KEY_BOOL, FIELD(display), .flags = CONFIG_KEY_OMIT_UNSET,
	  .set = config_display_switch, FLAG("display", 0, NULL, "vm: a virtio GPU, keyboard and tablet, VNC on a socket") },
	{ .name = "tmpfs", .type = CONFIG_KEY_CUSTOM, FIELD(tmpfs), LIST(tmpfs), .set = config_tmpfs_set,
	  FLAG("tmpfs", 0, "DST[:OPTS]", "a tmpfs at DST; OPTS: size=64M, mode=1777") },
	/* Binds and volumes are one list: their order is the order they are mounted in. */
	{ .name = "bind", .also = { "volume" }, .type = CONFIG_KEY_CUSTOM, FIELD(binds), LIST(bind),
	  .set = capsule_config_add_mount_spec,
	  FLAG("volume", 'v', "SRC:DST[:ro|rw]",
	       "bind the host path SRC at DST; SRC not starting\nwith / is a named volume (created if missing)") },
	/* After the binds: a transform line names the bind it belongs to. Its memory is the bind's. */
	{ .name = "transform", .type = CONFIG_KEY_CUSTOM, FIELD(binds), .load = config_transform_load,
	  .save = config_transform_save, .set = config_transform_set,
	  FLAG("transform", 0, "DST=PLUGIN[:CONFIG]", "serve the -v folder at DST through a transform plugin") },
	{ .name = "network", .also = { "port", "allow", "allow_name" }, .type = CONFIG_KEY_CUSTOM, FIELD(network),
	  .load = config_net_parse_line, .save = config_net_serialize, .set = capsule_config_set_network_name,
	  FLAG("network", 0, "MODE",
	       "none (default: loopback only), mounts-only (the same) or full\n"
	       "(outbound through user-mode NAT; the host's 127.0.0.1 is 10.0.2.2)") },
	{ .set = capsule_config_add_port_forward,
	  FLAG("publish", 'p', "[HOSTIP:]HOSTPORT:PORT[/tcp]",
	       "forward a host port (default address\n127.0.0.1) to PORT on the sandbox's loopback") },
	{ .set = capsule_config_add_allow_host,
	  FLAG("allow-host", 0, "NAME[:PORT]",
	       "with --network full, allow only listed destinations: NAME is\nanswered by the sandbox's DNS proxy, which opens the\naddresses it gives for their TTL (a vm: resolved at create)") },
	{ .set = capsule_config_add_allow_cidr,
	  FLAG("allow-cidr", 0, "CIDR[:PORT]", "the same for an IPv4 address or network") },
	{ .name = "dns_server", .type = CONFIG_KEY_TEXT, FIELD(dns_server), .flags = CONFIG_KEY_OMIT_UNSET,
	  .set = capsule_config_set_dns_server,
	  FLAG("dns-server", 0, "IPV4[:PORT]", "the resolver the DNS proxy asks (default: the host's\nfirst nameserver)") },
	{ .name = "dns_private", .type = CONFIG_KEY_BOOL, FIELD(dns_private), .flags = CONFIG_KEY_OMIT_UNSET,
	  .set = config_dns_private_switch,
	  FLAG("dns-private", 0, NULL, "let --allow-host names resolve to private, loopback\n(10.0.2.2) and link-local addresses") },
	{ .name = "egress_quota", .type = CONFIG_KEY_U64, FIELD(egress_quota_bytes), .max = UINT64_MAX,
	  .flags = CONFIG_KEY_OMIT_UNSET, .set = capsule_config_set_egress_quota,
	  FLAG("egress-quota", 0, "SIZE", "with --network full: bytes the sandbox may send out;\nthen connections are refused") },
	{ .name = "save", .type = CONFIG_KEY_TEXT, FIELD(save), .flags = CONFIG_KEY_OMIT_UNSET, .load = config_save_load,
	  .set = capsule_config_set_save,
	  FLAG("save", 0, "NAME", "save the filesystem as NAME when the sandbox stops\n(start from it with --image NAME)") },
	{ .name = "pool", .type = CONFIG_KEY_TEXT, FIELD(pool), .flags = CONFIG_KEY_OMIT_UNSET, .set = capsule_config_set_pool,
	  FLAG("pool", 0, "POOL", "take a ready sandbox from warm pool POOL (its options\napply: give no other sandbox option)") },
	{ .name = "label", .type = CONFIG_KEY_CUSTOM, FIELD(labels), LIST(label), .set = capsule_config_add_label,
	  FLAG("label", 'l', "KEY=VALUE", "a label (repeat for more): inspect shows it,\nps --filter label=KEY=VALUE finds it") },
	/* Set by the library or through calls of their own, not by a flag. */
	{ .name = "origin", .type = CONFIG_KEY_TEXT, FIELD(origin), .flags = CONFIG_KEY_OMIT_UNSET },
	{ .name = "cgroup_base", .type = CONFIG_KEY_TEXT, FIELD(cgroup_base), .flags = CONFIG_KEY_OMIT_UNSET },
	{ .name = "detached", .type = CONFIG_KEY_BOOL, FIELD(detached) },
	{ .name = "created", .type = CONFIG_KEY_I64, FIELD(created_unix), .max = INT64_MAX },
	{ .name = "id_slot", .type = CONFIG_KEY_U32, FIELD(id_slot), .max = 65535 },
	{ .name = "env", .type = CONFIG_KEY_CUSTOM, FIELD(env), LIST(env) },
	{ .name = "boot_timeout_set", .type = CONFIG_KEY_BOOL, FIELD(boot_timeout_set) },
	{ .name = "disk_from", .type = CONFIG_KEY_STRING, FIELD(disk_from) },
	{ .name = "base", .type = CONFIG_KEY_CUSTOM, FIELD(base_none), .load = config_base_load, .save = config_base_save },
	{ .name = "layer", .type = CONFIG_KEY_CUSTOM, FIELD(layers), LIST(layer) },
	{ .name = "rootfs", .type = CONFIG_KEY_STRING, FIELD(rootfs) },
	{ .name = "sysctls", .type = CONFIG_KEY_STRING, FIELD(sysctls) },
	{ .name = "cgroup_path", .type = CONFIG_KEY_STRING, FIELD(cgroup_path) },
	{ .name = "cpu_quota_us", .type = CONFIG_KEY_U64, FIELD(cg.cpu_quota_us), .max = UINT64_MAX, .flags = CONFIG_KEY_OMIT_UNSET },
	{ .name = "cpu_period_us", .type = CONFIG_KEY_U64, FIELD(cg.cpu_period_us), .max = UINT64_MAX, .flags = CONFIG_KEY_OMIT_UNSET },
	{ .name = "cpu_burst_us", .type = CONFIG_KEY_U64, FIELD(cg.cpu_burst_us), .max = UINT64_MAX, .flags = CONFIG_KEY_OMIT_UNSET },
	{ .name = "cpu_rt_runtime_us", .type = CONFIG_KEY_U64, FIELD(cg.cpu_rt_runtime_us), .max = UINT64_MAX,
	  .flags = CONFIG_KEY_OMIT_UNSET },
	{ .name = "cpu_rt_period_us", .type = CONFIG_KEY_U64, FIELD(cg.cpu_rt_period_us), .max = UINT64_MAX,
	  .flags = CONFIG_KEY_OMIT_UNSET },
	{ .name = "cpu_idle", .type = CONFIG_KEY_BOOL, FIELD(cg.cpu_idle), .flags = CONFIG_KEY_OMIT_UNSET },
	{ .name = "memory_swappiness_set", .type = CONFIG_KEY_BOOL, FIELD(cg.memory_swappiness_set), .flags = CONFIG_KEY_OMIT_UNSET },
	{ .name = "memory_swappiness", .type = CONFIG_KEY_U32, FIELD(cg.memory_swappiness), .max = 100,
	  .flags = CONFIG_KEY_OMIT_UNSET },
	{ .name = "oom_kill_disable", .type = CONFIG_KEY_BOOL, FIELD(cg.oom_kill_disable), .flags = CONFIG_KEY_OMIT_UNSET },
	{ .name = "memory_kernel_tcp", .type = CONFIG_KEY_U64, FIELD(cg.memory_kernel_tcp), .max = UINT64_MAX,
	  .flags = CONFIG_KEY_OMIT_UNSET },
	{ .name = "net_ns", .type = CONFIG_KEY_STRING, FIELD(net_ns) },
	{ .name = "ipc_ns", .type = CONFIG_KEY_STRING, FIELD(ipc_ns) },
	{ .name = "uts_ns", .type = CONFIG_KEY_STRING, FIELD(uts_ns) },
	{ .name = "pid_ns", .type = CONFIG_KEY_STRING, FIELD(pid_ns) },
	{ .name = "masked_paths", .type = CONFIG_KEY_STRING, FIELD(masked_paths) },
	{ .name = "readonly_paths", .type = CONFIG_KEY_STRING, FIELD(readonly_paths) },
	{ .name = "mount_attrs", .type = CONFIG_KEY_STRING, FIELD(mount_attrs) },
	{ .name = "mount_order", .type = CONFIG_KEY_STRING, FIELD(mount_order) },
	{ .name = "uid_map", .type = CONFIG_KEY_STRING, FIELD(uid_map) },
	{ .name = "gid_map", .type = CONFIG_KEY_STRING, FIELD(gid_map) },
	{ .name = "devices", .type = CONFIG_KEY_STRING, FIELD(devices) },
	{ .name = "rootfs_readonly", .type = CONFIG_KEY_BOOL, FIELD(rootfs_readonly), .flags = CONFIG_KEY_OMIT_UNSET },
	{ .name = "caps_set", .type = CONFIG_KEY_BOOL, FIELD(caps_set), .flags = CONFIG_KEY_OMIT_UNSET },
	{ .name = "caps", .type = CONFIG_KEY_U64, FIELD(caps), .max = UINT64_MAX, .flags = CONFIG_KEY_OMIT_UNSET },
	{ .name = "workdir", .type = CONFIG_KEY_STRING, FIELD(workdir) },
	{ .name = "user", .type = CONFIG_KEY_STRING, FIELD(user) },
	/* "entrypoint_set" tells an empty list from none. */
	{ .name = "entrypoint", .also = { "entrypoint_set" }, .type = CONFIG_KEY_CUSTOM, FIELD(entrypoint),
	  LIST(entrypoint) },
	{ .name = "cmd", .also = { "cmd_set" }, .type = CONFIG_KEY_CUSTOM, FIELD(cmd), LIST(cmd) },
};

const size_t config_key_count = ARRAY_SIZE(config_keys);

static void *field(struct capsule_config *cfg, const struct config_key *k)
{
	return (char *)cfg + k->offset;
}

static const void *field_const(const struct capsule_config *cfg, const struct config_key *k)
{
	return (const char *)cfg + k->offset;
}

/* An integer row's value, widened; false for the other types. */
static bool field_uint(const struct capsule_config *cfg, const struct config_key *k, uint64_t *v)
{
	const void *p = field_const(cfg, k);
	switch (k->type) {
	case CONFIG_KEY_U32:
		*v = *(const uint32_t *)p;
		return true;
	case CONFIG_KEY_U64:
		*v = *(const uint64_t *)p;
		return true;
	case CONFIG_KEY_I64:
		*v = (uint64_t)*(const int64_t *)p;
		return true;
	case CONFIG_KEY_BOOL:
		*v = *(const bool *)p;
		return true;
	default:
		return false;
	}
}

/* ---- the file ---- */

static void key_save(const struct capsule_config *cfg, const struct config_key *k, FILE *f)
{
	if (k->save) {
		k->save(cfg, f);
		return;
	}
	const void *p = field_const(cfg, k);
	uint64_t v;
	if (k->type == CONFIG_KEY_TEXT) {
		if (((const char *)p)[0] || !(k->flags & CONFIG_KEY_OMIT_UNSET))
			fprintf(f, "%s=%s\n", k->name, (const char *)p);
	} else if (k->type == CONFIG_KEY_STRING) {
		if (*(char *const *)p)
			fprintf(f, "%s=%s\n", k->name, *(char *const *)p);
	} else if (k->type == CONFIG_KEY_I64) {
		fprintf(f, "%s=%lld\n", k->name, (long long)*(const int64_t *)p);
	} else if (field_uint(cfg, k, &v) && (v || !(k->flags & CONFIG_KEY_OMIT_UNSET))) {
		fprintf(f, "%s=%llu\n", k->name, (unsigned long long)v);
	}
}

int config_serialize(const struct capsule_config *cfg, char **out, size_t *len)
{
	char *buf = NULL;
	size_t size = 0;
	FILE *f = open_memstream(&buf, &size);
	if (!f)
		return -ENOMEM;
	fputs("version=1\n", f);
	for (size_t i = 0; i < config_key_count; i++)
		if (config_keys[i].name)
			key_save(cfg, &config_keys[i], f);
	if (fclose(f) != 0) {
		free(buf);
		return -ENOMEM;
	}
	*out = buf;
	*len = size;
	return 0;
}

int config_parse_uint(const char *key, const char *v, uint64_t max, uint64_t *out, capsule_error *err)
{
	char *end;
	errno = 0;
	unsigned long long x = strtoull(v, &end, 10);
	if (errno || *end || !*v || x > max)
		return cap_err_plain(err, EINVAL, "sandbox configuration: invalid %s '%s'", key, v);
	*out = x;
	return 0;
}

static int key_load(struct capsule_config *cfg, const struct config_key *k, const char *key, const char *v,
		    capsule_error *err)
{
	if (k->load) {
		int r = k->load(cfg, key, v, err);
		return r > 0 ? 0 : r;
	}
	void *p = field(cfg, k);
	uint64_t x;
	int r;
	switch (k->type) {
	case CONFIG_KEY_TEXT:
		snprintf(p, k->size, "%s", v);
		return 0;
	case CONFIG_KEY_STRING:
		free(*(char **)p);
		if (!(*(char **)p = strdup(v)))
			return cap_err(err, ENOMEM, "parsing configuration");
		return 0;
	case CONFIG_KEY_BOOL:
		*(bool *)p = strcmp(v, "1") == 0;
		return 0;
	case CONFIG_KEY_U32:
	case CONFIG_KEY_U64:
	case CONFIG_KEY_I64:
		if ((r = config_parse_uint(key, v, k->max, &x, err)) < 0)
			return r;
		if (k->type == CONFIG_KEY_U32)
			*(uint32_t *)p = (uint32_t)x;
		else if (k->type == CONFIG_KEY_U64)
			*(uint64_t *)p = x;
		else
			*(int64_t *)p = (int64_t)x;
		return 0;
	case CONFIG_KEY_CUSTOM:
		break;
	}
	return 0;
}

static const struct config_key *key_find(const char *key)
{
	for (size_t i = 0; i < config_key_count; i++) {
		const struct config_key *k = &config_keys[i];
		if (!k->name)
			continue;
		if (!strcmp(k->name, key))
			return k;
		for (size_t a = 0; a < ARRAY_SIZE(k->also) && k->also[a]; a++)
			if (!strcmp(k->also[a], key))
				return k;
	}
	return NULL;
}

int config_parse(const char *text, size_t len, struct capsule_config *cfg, capsule_error *err)
{
	memset(cfg, 0, sizeof(*cfg));
	return config_parse_zeroed(text, len, cfg, err);
}

int config_parse_zeroed(const char *text, size_t len, struct capsule_config *cfg, capsule_error *err)
{
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
		/* A key this build does not know ("version", one a newer build wrote) is passed over. */
		const struct config_key *k = key_find(line);
		if (k)
			r = key_load(cfg, k, line, eq + 1, err);
	}
	if (r == 0 && !cfg->name[0])
		r = cap_err_plain(err, EINVAL, "sandbox configuration has no name");
	if (r == 0 && cfg->base_none && !cfg->nlayers && !cfg->rootfs)
		r = cap_err_plain(err, EINVAL, "sandbox configuration: base=none and no layer or rootfs");
	if (r < 0)
		config_clear(cfg);
	return r;
}

/* ---- memory ---- */

void config_clear(struct capsule_config *cfg)
{
	for (size_t i = 0; i < config_key_count; i++) {
		const struct config_key *k = &config_keys[i];
		if (k->clear) {
			k->clear(cfg);
		} else if (k->name && k->type == CONFIG_KEY_STRING) {
			char **p = field(cfg, k);
			free(*p);
			*p = NULL;
		}
	}
}

int config_copy(struct capsule_config *dst, const struct capsule_config *src)
{
	*dst = *src;
	/* DST shares SRC's memory now: forget all of it before copying any, so that a copy that
	 * fails half-way leaves config_clear nothing of SRC's to free. */
	for (size_t i = 0; i < config_key_count; i++) {
		const struct config_key *k = &config_keys[i];
		if (k->forget)
			k->forget(dst);
		else if (k->name && k->type == CONFIG_KEY_STRING)
			*(char **)field(dst, k) = NULL;
	}
	for (size_t i = 0; i < config_key_count; i++) {
		const struct config_key *k = &config_keys[i];
		int r = 0;
		if (k->copy) {
			r = k->copy(dst, src);
		} else if (k->name && k->type == CONFIG_KEY_STRING) {
			const char *s = *(char *const *)field_const(src, k);
			if (s && !(*(char **)field(dst, k) = strdup(s)))
				r = -ENOMEM;
		}
		if (r < 0) {
			config_clear(dst);
			return r;
		}
	}
	return 0;
}

/* ---- inspect ---- */

void config_limits_inspect_json(const struct capsule_config *cfg, struct json_writer *j)
{
	for (size_t i = 0; i < config_key_count; i++) {
		const struct config_key *k = &config_keys[i];
		uint64_t v;
		if (!k->inspect_limit)
			continue;
		/* A list only when given; swap's UINT64_MAX is docker's -1, unlimited swap. */
		if (k->type == CONFIG_KEY_STRING) {
			const char *s = *(char *const *)field_const(cfg, k);
			if (s)
				json_kv_string(j, k->inspect_limit, s);
		} else if (field_uint(cfg, k, &v) && (v || !(k->flags & CONFIG_KEY_INSPECT_SET))) {
			if (v == UINT64_MAX && k->max == UINT64_MAX)
				json_kv_int(j, k->inspect_limit, -1);
			else
				json_kv_uint(j, k->inspect_limit, v);
		}
	}
}

/* ---- flags ---- */

const capsule_config_option *capsule_config_option_at(size_t index)
{
	for (size_t i = 0; i < config_key_count; i++)
		if (config_keys[i].option.flag && index-- == 0)
			return &config_keys[i].option;
	return NULL;
}

int capsule_config_set_option(capsule_config *cfg, const char *flag, const char *value, capsule_error *err)
{
	if (!cfg || !flag)
		return cap_err_plain(err, EINVAL, "set option: no configuration or option given");
	for (size_t i = 0; i < config_key_count; i++) {
		const struct config_key *k = &config_keys[i];
		if (!k->option.flag || strcmp(k->option.flag, flag))
			continue;
		if (k->option.value_name && !value)
			return cap_err_plain(err, EINVAL, "option '--%s' needs a value", flag);
		return k->set(cfg, value, err);
	}
	return cap_err_plain(err, EINVAL, "unknown option '--%s'", flag);
}
