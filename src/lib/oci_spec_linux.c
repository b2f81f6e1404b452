/* config.json's linux section: namespaces, resources, masked and read-only paths, sysctls,
 * the cgroup path, id mappings and the seccomp profile (compiled in oci_seccomp.c). */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "internal.h"
#include "json.h"
#include "oci_spec.h"
#include "oci_spec_parse.h"
#include "proc_masks.h"
#include "util.h"

/* capsule always makes these namespaces; the spec must ask for at least the ones whose
 * absence would mean sharing the host's (capsule never shares them). */
static int ns_element(const char *name, const char *v, size_t n, void *payload)
{
	struct walk *w = payload;
	if (n == 0 || v[0] != '{')
		return oci_bad(w->err, "linux.namespaces", "an element is not an object");
	_cleanup_free_ char *type = NULL, *path = NULL;
	if (json_get_string(v, n, "type", &type) < 0)
		return oci_bad(w->err, "linux.namespaces", "an element has no type");
	int r = json_get_string(v, n, "path", &path);
	if (r < 0 && r != -ENOENT)
		return oci_bad(w->err, "linux.namespaces", "a path is not a string");
	static const char *const known[] = { "pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time" };
	size_t i = 0;
	while (i < ARRAY_SIZE(known) && strcmp(type, known[i]))
		i++;
	if (i == ARRAY_SIZE(known))
		return cap_err_plain(w->err, EINVAL, "config.json: linux.namespaces: unknown type '%.32s'", type);
	/* A network namespace made by the caller (podman's, a CNI plugin's, a Kubernetes pod's)
	 * is joined and configured by its owner; an IPC or UTS namespace is joined when it is a
	 * sandbox's (a pod's pause container's, named through its monitor's /proc/PID/ns: docs/
	 * oci.md). A pid namespace is joined when it is a running sandbox's of the same home (a
	 * pod's shareProcessNamespace: sandbox.c checks). The shim checks each is what it should
	 * be, and never one of the host's. */
	char **slot = NULL;
	if (path && path[0]) {
		if (!strcmp(type, "network"))
			slot = &w->spec->cfg->net_ns;
		else if (!strcmp(type, "ipc"))
			slot = &w->spec->cfg->ipc_ns;
		else if (!strcmp(type, "uts"))
			slot = &w->spec->cfg->uts_ns;
		else if (!strcmp(type, "pid"))
			slot = &w->spec->cfg->pid_ns;
		else
			return cap_err_plain(w->err, EOPNOTSUPP,
					     "config.json: linux.namespaces: joining the %s namespace at '%.128s' is not "
					     "supported by capsule: a sandbox makes its own (network, ipc, uts and pid ones "
					     "can be joined)", type, path);
		if (path[0] != '/' || strlen(path) > 1024 || strpbrk(path, "\n"))
			return cap_err_plain(w->err, EINVAL, "config.json: linux.namespaces: the %s namespace path "
							      "'%.128s' is not an absolute path", type, path);
		free(*slot);
		*slot = steal_ptr(path);
	}
	if (!strcmp(type, "time"))
		return oci_unsupported(w->err, "linux.namespaces: time", "a sandbox shares the host's clocks");
	w->mask |= 1ull << i;
	return 0;
}

static int parse_namespaces(struct capsule_oci_spec *spec, const char *v, size_t n, capsule_error *err)
{
	struct walk w = { .spec = spec, .err = err };
	int r = oci_walk_json(true, v, n, 16, ns_element, &w, "linux.namespaces", err);
	if (r < 0)
		return r;
	/* pid, network, mount, ipc, uts: without them runc would share the host's. */
	static const char *const needed[] = { "pid", "network", "mount", "ipc", "uts" };
	for (size_t i = 0; i < ARRAY_SIZE(needed); i++)
		if (!(w.mask & (1ull << i)))
			return cap_err_plain(err, EOPNOTSUPP,
					     "config.json: linux.namespaces: sharing the host's %s namespace is not "
					     "supported by capsule (list it: a sandbox always has its own)", needed[i]);
	return 0;
}

/* A linux.resources.devices rule, kept to decide whether a listed device may be opened. */
struct dev_rule {
	bool allow;
	char type;           /* 'a', 'c' or 'b' */
	int64_t major, minor; /* -1: any */
	bool r, w;
};

struct dev_rules {
	struct dev_rule rule[256];
	size_t n;
};

static int device_rule(const char *name, const char *v, size_t n, void *payload)
{
	struct walk *w = payload;
	if (n == 0 || v[0] != '{')
		return oci_bad(w->err, "linux.resources.devices", "an element is not an object");
	bool allow = false;
	if (json_get_bool(v, n, "allow", &allow) < 0)
		return oci_bad(w->err, "linux.resources.devices", "an element has no allow");
	_cleanup_free_ char *type = NULL, *access = NULL;
	int r = json_get_string(v, n, "type", &type);
	if (r < 0 && r != -ENOENT)
		return oci_bad(w->err, "linux.resources.devices", "type is not a string");
	r = json_get_string(v, n, "access", &access);
	if (r < 0 && r != -ENOENT)
		return oci_bad(w->err, "linux.resources.devices", "access is not a string");
	if (type && strcmp(type, "a") && strcmp(type, "c") && strcmp(type, "b"))
		return oci_bad(w->err, "linux.resources.devices", "type is not a, c or b");
	const char *mv;
	size_t mn;
	bool all = (!type || !strcmp(type, "a")) && json_get_member(v, n, "major", &mv, &mn) == -ENOENT &&
		   json_get_member(v, n, "minor", &mv, &mn) == -ENOENT;
	/* A sandbox's /dev holds capsule's own few devices and nothing in it can make more (its
	 * user namespace): it is the deny-all rule already, with those allowed. So the rules may
	 * deny everything and allow what they like; what they cannot do is widen that. */
	if (w->n++ == 0 && !(all && !allow))
		return oci_unsupported(w->err, "linux.resources.devices", "the first rule must deny every device");
	if (allow && all)
		return oci_unsupported(w->err, "linux.resources.devices", "allowing every device");
	struct dev_rules *rules = w->payload;
	if (rules && rules->n < ARRAY_SIZE(rules->rule)) {
		struct dev_rule *d = &rules->rule[rules->n++];
		d->allow = allow;
		d->type = type ? type[0] : 'a';
		d->major = d->minor = -1;
		json_get_int(v, n, "major", &d->major);
		json_get_int(v, n, "minor", &d->minor);
		d->r = !access || strchr(access, 'r');
		d->w = !access || strchr(access, 'w');
	}
	return 0;
}

/* MEMBER of the object V as an integer into *OUT; false (and *OUT untouched) when it is absent
 * or null. *R is the error. */
static bool member_int(const char *v, size_t n, const char *member, const char *where, int64_t *out, int *r,
		       capsule_error *err)
{
	const char *mv;
	size_t mn;
	if (json_get_member(v, n, member, &mv, &mn) < 0 || oci_is_null(mv, mn))
		return false;
	*r = oci_value_int(mv, mn, where, out, err);
	return *r == 0;
}

/* linux.resources.memory. Swap is memory + swap, as runc and cgroup v1's memsw have it; the
 * shim writes v2's memory.swap.max as the difference. kernel is taken and left, as runc 1.1
 * leaves it (the kernel ignores memory.kmem.limit_in_bytes, and v2 has none): with a warning. */
static int parse_memory(struct capsule_oci_spec *spec, const char *v, size_t n, capsule_error *err)
{
	capsule_config *cfg = spec->cfg;
	struct cgroup_extra *x = &cfg->cg;
	int64_t limit = 0, val = 0;
	int r = 0;
	if (v[0] != '{')
		return oci_bad(err, "linux.resources.memory", "not an object");
	if (member_int(v, n, "limit", "linux.resources.memory.limit", &limit, &r, err)) {
		if (limit < -1 || limit == 0)
			return oci_bad(err, "linux.resources.memory.limit", "not a positive number of bytes or -1");
		if (limit > 0 && (r = capsule_config_set_memory_bytes(cfg, (uint64_t)limit, err)) < 0)
			return r;
	}
	if (r < 0)
		return r;
	if (member_int(v, n, "swap", "linux.resources.memory.swap", &val, &r, err) && val != 0 &&
	    !(val == -1 && limit <= 0)) {
		if (val < -1)
			return oci_bad(err, "linux.resources.memory.swap", "not a positive number of bytes or -1");
		if (limit <= 0)
			return cap_err_plain(err, EOPNOTSUPP, "config.json: linux.resources.memory.swap needs "
							      "linux.resources.memory.limit (swap is memory + swap)");
		if (val > 0 && val < limit)
			return cap_err_plain(err, EINVAL, "config.json: linux.resources.memory.swap %lld is below the "
							  "memory limit %lld (it is memory + swap)", (long long)val, (long long)limit);
		/* Equal to the limit is no swap: capsule's own default, which needs no swap
		 * accounting (the CRI gives it so). */
		x->memory_swap = val < 0 ? UINT64_MAX : val == limit ? 0 : (uint64_t)val;
	}
	if (r < 0)
		return r;
	if (member_int(v, n, "reservation", "linux.resources.memory.reservation", &val, &r, err) && val > 0)
		x->memory_reservation = (uint64_t)val;
	if (r == 0 && member_int(v, n, "kernelTCP", "linux.resources.memory.kernelTCP", &val, &r, err) && val > 0)
		x->memory_kernel_tcp = (uint64_t)val;
	if (r == 0 && member_int(v, n, "kernel", "linux.resources.memory.kernel", &val, &r, err) &&
	    (r = oci_warn_add(spec, "linux.resources.memory.kernel is ignored, as runc ignores it: the kernel "
				    "no longer enforces a cgroup's kernel memory limit", err)) < 0)
		return r;
	/* 2^64-1 is Go's -1 of a uint64, "unset" to runc. */
	const char *mv;
	size_t mn;
	uint64_t swappiness;
	if (r == 0 && json_get_member(v, n, "swappiness", &mv, &mn) == 0 && !oci_is_null(mv, mn) &&
	    (mn != 2 || memcmp(mv, "-1", 2))) {
		if ((r = oci_value_u64(mv, mn, "linux.resources.memory.swappiness", &swappiness, err)) < 0)
			return r;
		if (swappiness != UINT64_MAX) {
			if (swappiness > 100)
				return oci_bad(err, "linux.resources.memory.swappiness", "not between 0 and 100");
			x->memory_swappiness_set = true;
			x->memory_swappiness = (uint32_t)swappiness;
		}
	}
	if (r < 0)
		return r;
	bool b = false;
	if (json_get_member(v, n, "disableOOMKiller", &mv, &mn) == 0 && !oci_is_null(mv, mn)) {
		if (json_get_bool(v, n, "disableOOMKiller", &b) < 0)
			return oci_bad(err, "linux.resources.memory.disableOOMKiller", "not a boolean");
		x->oom_kill_disable = b;
	}
	/* Every kernel since 5.x is hierarchical, and refuses to be otherwise. */
	if (json_get_member(v, n, "useHierarchy", &mv, &mn) == 0 && !oci_is_null(mv, mn) &&
	    (json_get_bool(v, n, "useHierarchy", &b) < 0 || !b))
		return oci_unsupported(err, "linux.resources.memory.useHierarchy false", "the kernel's memory cgroups are "
											  "always hierarchical");
	if (json_get_member(v, n, "checkBeforeUpdate", &mv, &mn) == 0 && !oci_is_null(mv, mn) &&
	    (json_get_bool(v, n, "checkBeforeUpdate", &b) < 0 || b))
		return oci_unsupported(err, "linux.resources.memory.checkBeforeUpdate", "a limit below the usage is "
											       "refused by the kernel when it cannot reclaim");
	return 0;
}

/* A cpuset list as the kernel reads it: "0-3,6". Whether those cpus or nodes exist is the
 * kernel's answer, given by the shim naming the field. */
static int cpuset_value(const char *v, size_t n, const char *where, char **out, capsule_error *err)
{
	_cleanup_free_ char *s = NULL;
	int r = oci_value_string(v, n, where, &s, err);
	if (r < 0)
		return r;
	if (!s[0])
		return 0;
	if (strlen(s) > 256 || strspn(s, "0123456789,-") != strlen(s))
		return cap_err_plain(err, EINVAL, "config.json: %s '%.64s' is not a list such as 0-3,6", where, s);
	free(*out);
	*out = steal_ptr(s);
	return 0;
}

/* linux.resources.cpu: quota and period as given (cpus_milli, what inspect shows, is their
 * ratio), shares, realtime, idle, burst and the cpuset. */
static int parse_cpu(capsule_config *cfg, const char *v, size_t n, capsule_error *err)
{
	struct cgroup_extra *x = &cfg->cg;
	if (v[0] != '{')
		return oci_bad(err, "linux.resources.cpu", "not an object");
	int64_t quota = 0, period = 0, val = 0;
	int r = 0;
	member_int(v, n, "quota", "linux.resources.cpu.quota", &quota, &r, err);
	if (r == 0)
		member_int(v, n, "period", "linux.resources.cpu.period", &period, &r, err);
	if (r < 0)
		return r;
	if (period < 0 || (period && (period < 1000 || period > 1000000)))
		return oci_bad(err, "linux.resources.cpu.period", "not between 1000 and 1000000 microseconds");
	if (quota > 0) {
		if (quota < 1000)
			return oci_bad(err, "linux.resources.cpu.quota", "below 1000 microseconds");
		uint64_t milli = (uint64_t)quota * 1000 / (uint64_t)(period ? period : 100000);
		if (milli == 0 || milli > UINT32_MAX)
			return oci_bad(err, "linux.resources.cpu", "quota/period out of range");
		if ((r = capsule_config_set_cpus_milli(cfg, (uint32_t)milli, err)) < 0)
			return r;
		x->cpu_quota_us = (uint64_t)quota;
	}
	x->cpu_period_us = (uint64_t)period;
	/* The kubelet sets every container's (2 for a pause container and a BestEffort pod's);
	 * 1024 is every cgroup's own weight already. */
	int64_t shares = 0;
	if (member_int(v, n, "shares", "linux.resources.cpu.shares", &shares, &r, err) &&
	    shares && (shares < 2 || shares > 262144))
		return oci_bad(err, "linux.resources.cpu.shares", "not between 2 and 262144");
	if (r < 0)
		return r;
	if (shares != 1024)
		cfg->cpu_shares = (uint32_t)shares;
	if (member_int(v, n, "realtimeRuntime", "linux.resources.cpu.realtimeRuntime", &val, &r, err) && val) {
		if (val < -1)
			return oci_bad(err, "linux.resources.cpu.realtimeRuntime", "not microseconds or -1");
		x->cpu_rt_runtime_us = val < 0 ? UINT64_MAX : (uint64_t)val;
	}
	if (r == 0 && member_int(v, n, "realtimePeriod", "linux.resources.cpu.realtimePeriod", &val, &r, err) && val) {
		if (val < 1 || val > 1000000)
			return oci_bad(err, "linux.resources.cpu.realtimePeriod", "not between 1 and 1000000 microseconds");
		x->cpu_rt_period_us = (uint64_t)val;
	}
	if (r == 0 && member_int(v, n, "idle", "linux.resources.cpu.idle", &val, &r, err)) {
		if (val != 0 && val != 1)
			return oci_bad(err, "linux.resources.cpu.idle", "not 0 or 1");
		x->cpu_idle = val == 1;
	}
	if (r == 0 && member_int(v, n, "burst", "linux.resources.cpu.burst", &val, &r, err) && val) {
		if (val < 0)
			return oci_bad(err, "linux.resources.cpu.burst", "not a number of microseconds");
		x->cpu_burst_us = (uint64_t)val;
	}
	if (r < 0)
		return r;
	const char *mv;
	size_t mn;
	if (json_get_member(v, n, "cpus", &mv, &mn) == 0 && !oci_is_null(mv, mn) &&
	    (r = cpuset_value(mv, mn, "linux.resources.cpu.cpus", &x->cpuset_cpus, err)) < 0)
		return r;
	if (json_get_member(v, n, "mems", &mv, &mn) == 0 && !oci_is_null(mv, mn) &&
	    (r = cpuset_value(mv, mn, "linux.resources.cpu.mems", &x->cpuset_mems, err)) < 0)
		return r;
	return 0;
}

static int parse_resources(struct capsule_oci_spec *spec, const char *v, size_t n, struct dev_rules *rules,
			   capsule_error *err)
{
	if (v[0] != '{')
		return oci_bad(err, "linux.resources", "not an object");
	capsule_config *cfg = spec->cfg;
	const char *fv;
	size_t fn;
	int r;
	if (json_get_member(v, n, "devices", &fv, &fn) == 0 && !oci_is_null(fv, fn)) {
		struct walk w = { .err = err, .payload = rules };
		if ((r = oci_walk_json(true, fv, fn, 256, device_rule, &w, "linux.resources.devices", err)) < 0)
			return r;
	}
	if (json_get_member(v, n, "memory", &fv, &fn) == 0 && !oci_is_null(fv, fn) &&
	    (r = parse_memory(spec, fv, fn, err)) < 0)
		return r;
	if (json_get_member(v, n, "pids", &fv, &fn) == 0 && !oci_is_null(fv, fn)) {
		int64_t limit;
		if (fv[0] != '{' || json_get_int(fv, fn, "limit", &limit) < 0)
			return oci_bad(err, "linux.resources.pids", "needs a limit");
		if (limit > UINT32_MAX)
			return oci_bad(err, "linux.resources.pids.limit", "out of range");
		/* 0 or -1: no limit, as runc has it. */
		if ((r = capsule_config_set_pids_limit(cfg, limit > 0 ? (uint32_t)limit : 0, err)) < 0)
			return r;
	}
	if (json_get_member(v, n, "cpu", &fv, &fn) == 0 && !oci_is_null(fv, fn) && (r = parse_cpu(cfg, fv, fn, err)) < 0)
		return r;
	static const char *const others[] = { "blockIO", "hugepageLimits", "network", "rdma", "unified" };
	for (size_t i = 0; i < ARRAY_SIZE(others); i++)
		if (json_get_member(v, n, others[i], &fv, &fn) == 0 && !oci_is_empty(fv, fn))
			return cap_err_plain(err, EOPNOTSUPP, "config.json: linux.resources.%s is not supported by capsule",
					     others[i]);
	return 0;
}

/* capsule masks and write-protects its own lists under /proc and /sys (proc_masks.c), and
 * all of /sys is read-only: a spec's lists may name what those cover, nothing more. */
static bool below_any(const char *path, const char *const *list, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		size_t l = strlen(list[i]);
		if (!strncmp(path + 1, list[i], l) && (path[1 + l] == 0 || path[1 + l] == '/'))
			return true;
	}
	return false;
}

static int protected_element(const char *name, const char *v, size_t n, void *payload)
{
	struct walk *w = payload;
	_cleanup_free_ char *p = NULL;
	int r = oci_value_string(v, n, w->where, &p, w->err);
	if (r < 0)
		return r;
	size_t len = strlen(p);
	if (p[0] != '/' || len < 2 || len > 1024 || strpbrk(p, ",\n") || strstr(p, "/../") || strstr(p, "//") ||
	    (len >= 3 && !strcmp(p + len - 3, "/..")) || p[len - 1] == '/')
		return cap_err_plain(w->err, EINVAL, "config.json: %s: '%.128s' is not a clean absolute path without ','",
				     w->where, p);
	/* What capsule's own lists cover already is not done twice. */
	static const char *const sys[] = { "sys" };
	if (below_any(p, sandbox_masked_paths, sandbox_masked_paths_count) ||
	    (!w->mask && (below_any(p, sandbox_readonly_paths, sandbox_readonly_paths_count) || below_any(p, sys, 1))))
		return 0;
	return oci_join(w->payload, p, "", w->where, w->err);
}

/* A walk's joined items into the configuration's *SLOT once the walk (R) succeeded. */
static int joined_into(char **slot, struct joined *j, int r)
{
	if (r < 0) {
		free(j->out);
		return r;
	}
	free(*slot);
	*slot = j->out;
	return 0;
}

static int parse_protected_paths(struct capsule_oci_spec *spec, const char *v, size_t n, bool masked,
				 capsule_error *err)
{
	const char *where = masked ? "linux.maskedPaths" : "linux.readonlyPaths";
	struct joined j = { 0 };
	struct walk w = { .err = err, .where = where, .mask = masked, .payload = &j };
	return joined_into(masked ? &spec->cfg->masked_paths : &spec->cfg->readonly_paths, &j,
			   oci_walk_json(true, v, n, MAX_ELEMENTS, protected_element, &w, where, err));
}

/* Only what the sandbox's own namespaces hold, as runc allows: the network's (net.*), IPC's and
 * POSIX message queues'. The rest is the host's kernel. */
static bool sysctl_namespaced(const char *name)
{
	static const char *const ipc[] = { "kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
					   "kernel.shmall", "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced" };
	if (!strncmp(name, "net.", 4) || !strncmp(name, "fs.mqueue.", 10))
		return true;
	for (size_t i = 0; i < ARRAY_SIZE(ipc); i++)
		if (!strcmp(name, ipc[i]))
			return true;
	return false;
}

struct sysctl_walk {
	capsule_error *err;
	struct joined j;
};

static int sysctl_member(const char *name, const char *v, size_t n, void *payload)
{
	struct sysctl_walk *w = payload;
	_cleanup_free_ char *value = NULL;
	if (n == 0 || v[0] != '"' || json_string_value(v, n, &value) < 0)
		return cap_err_plain(w->err, EINVAL, "config.json: linux.sysctl.%.64s: not a string", name);
	size_t nl = strlen(name);
	if (!nl || nl > 200 || strstr(name, "..") || name[0] == '.' || name[nl - 1] == '.')
		return cap_err_plain(w->err, EINVAL, "config.json: linux.sysctl: bad name '%.64s'", name);
	for (const char *c = name; *c; c++)
		if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_' || *c == '.' || *c == '-'))
			return cap_err_plain(w->err, EINVAL, "config.json: linux.sysctl: bad name '%.64s'", name);
	if (!sysctl_namespaced(name))
		return cap_err_plain(w->err, EOPNOTSUPP,
				     "config.json: linux.sysctl.%.64s is not supported by capsule: it is not the sandbox's "
				     "own (net.*, IPC and fs.mqueue.* are)", name);
	size_t vl = strlen(value);
	if (vl > 200 || strpbrk(value, ",\n"))
		return cap_err_plain(w->err, EOPNOTSUPP,
				     "config.json: linux.sysctl.%.64s: a value with a comma or a newline is not supported", name);
	char item[256];
	snprintf(item, sizeof(item), "%s=", name);
	return oci_join(&w->j, item, value, "linux.sysctl", w->err);
}

static int parse_sysctls(struct capsule_oci_spec *spec, const char *v, size_t n, capsule_error *err)
{
	struct sysctl_walk w = { .err = err };
	return joined_into(&spec->cfg->sysctls, &w.j,
			   oci_walk_json(false, v, n, MAX_MEMBERS, sysctl_member, &w, "linux.sysctl", err));
}

/* An absolute path below each hierarchy's root, as podman's cgroupfs manager ("/libpod_parent/
 * libpod-ID") and containerd ("/default/ID") give it; or a relative one, which the shim takes
 * from its own cgroup in each hierarchy (cgroup v2: from that cgroup's parent), as runc does. */
static int parse_cgroups_path(struct capsule_oci_spec *spec, const char *v, size_t n, capsule_error *err)
{
	char *path = NULL;
	int r = oci_value_string(v, n, "linux.cgroupsPath", &path, err);
	if (r < 0)
		return r;
	if (!path[0]) {
		free(path);
		return 0;
	}
	const char *why = NULL;
	size_t len = strlen(path);
	const char *rel = path[0] == '/' ? path + 1 : path;
	if (strchr(path, ':'))
		why = "a systemd slice:prefix:name (use the cgroupfs manager)";
	else if (len > 1024 || !rel[0] || strstr(path, "//") || path[len - 1] == '/' || strpbrk(path, ",\n"))
		why = "not a clean path";
	for (const char *p = rel; !why && *p; p += strcspn(p, "/"), p += *p == '/') {
		size_t l = strcspn(p, "/");
		if ((l == 1 && p[0] == '.') || (l == 2 && !strncmp(p, "..", 2)))
			why = "not a clean path ('.' or '..')";
	}
	if (why) {
		r = cap_err_plain(err, EOPNOTSUPP, "config.json: linux.cgroupsPath '%.128s' is not supported by capsule: %s",
				  path, why);
		free(path);
		return r;
	}
	free(spec->cfg->cgroup_path);
	spec->cfg->cgroup_path = path;
	return 0;
}

/* One mapping, container ids from 0 to a host range: the shape of the sandbox's own map, so the
 * sandbox runs on that range instead of its own (podman --userns, containerd's user
 * namespaces). Host root, and capsule's own ranges (other sandboxes'), cannot be the range. */
static int id_mapping(const char *name, const char *v, size_t n, void *payload)
{
	struct walk *w = payload;
	int64_t cid, hid, size;
	if (n == 0 || v[0] != '{' || json_get_int(v, n, "containerID", &cid) < 0 || json_get_int(v, n, "hostID", &hid) < 0 ||
	    json_get_int(v, n, "size", &size) < 0 || cid < 0 || hid < 0 || size < 1 || cid > UINT32_MAX ||
	    hid > UINT32_MAX || size > UINT32_MAX)
		return cap_err_plain(w->err, EINVAL, "config.json: linux.%s: a mapping needs containerID, hostID and size "
				     "(size at least 1)", w->where);
	if (w->n++)
		return cap_err_plain(w->err, EOPNOTSUPP, "config.json: linux.%s: more than one mapping is not supported by "
				     "capsule (one, from container id 0, is)", w->where);
	uid_t ub;
	gid_t gb;
	uint32_t count;
	bool rootless;
	home_id_map(0, &ub, &gb, &count, &rootless);
	const char *why = NULL;
	if (rootless || rootless_mapped_ids())
		why = "a rootless sandbox maps the caller's own ids";
	else if (cid != 0)
		why = "it does not start at container id 0";
	else if (hid == 0)
		why = "it maps the container's root to the host's";
	else if ((uint64_t)hid + (uint64_t)size > ub)
		why = "it reaches the host ids capsule gives its sandboxes";
	else if (size > 65536)
		why = "a sandbox has 65536 ids at most";
	if (why)
		return cap_err_plain(w->err, EOPNOTSUPP, "config.json: linux.%s {containerID %lld, hostID %lld, size %lld} is "
				     "not supported by capsule: %s", w->where, (long long)cid, (long long)hid, (long long)size, why);
	char map[32];
	snprintf(map, sizeof(map), "%lld %lld", (long long)hid, (long long)size);
	char **slot = w->payload;
	free(*slot);
	return (*slot = strdup(map)) ? 0 : cap_err(w->err, ENOMEM, "config.json");
}

static int parse_id_mappings(struct capsule_oci_spec *spec, const char *name, const char *v, size_t n,
			     capsule_error *err)
{
	struct walk w = { .err = err, .where = name,
			  .payload = !strcmp(name, "uidMappings") ? &spec->cfg->uid_map : &spec->cfg->gid_map };
	return oci_walk_json(true, v, n, 16, id_mapping, &w, name, err);
}

/* Whether the rules let a device of TYPE MAJOR:MINOR be read (*R) and written (*W): the last
 * rule that names it decides each, from none (the first rule denies every device). No rules:
 * no cgroup narrows it. */
static void device_access(const struct dev_rules *rules, char type, int64_t major, int64_t minor, bool *r, bool *w)
{
	*r = *w = rules->n == 0;
	for (size_t i = 0; i < rules->n; i++) {
		const struct dev_rule *d = &rules->rule[i];
		if ((d->type != 'a' && d->type != type) || (d->major >= 0 && d->major != major) ||
		    (d->minor >= 0 && d->minor != minor))
			continue;
		if (d->r)
			*r = d->allow;
		if (d->w)
			*w = d->allow;
	}
}

struct device_walk {
	capsule_error *err;
	const struct dev_rules *rules;
	struct joined j;
	size_t n, made;
};

/* linux.devices. A sandbox's /dev is a tmpfs of its user namespace, on which the kernel opens
 * no device node, with capsule's own few bound in from the host (null, zero, full, random,
 * urandom, tty): a spec may list those as they are. Any other is made by the shim, as host
 * root, on a tmpfs of the host's user namespace and bound in (container level), openable when
 * the spec's device rules allow reading and writing it, else bound nodev: there, not to be
 * opened, as under a device cgroup that denies it. Nothing else in the sandbox can be opened
 * as a device (its own file systems are nodev; mount and mknod are beyond it), so the rules
 * hold at either cgroup layout without a device cgroup. */
static int device_element(const char *name, const char *v, size_t n, void *payload)
{
	struct device_walk *w = payload;
	char where[32];
	snprintf(where, sizeof(where), "linux.devices[%zu]", w->n++);
	_cleanup_free_ char *path = NULL, *type = NULL;
	int64_t major = 0, minor = 0, mode = 0666, uid = 0, gid = 0;
	if (n == 0 || v[0] != '{' || json_get_string(v, n, "path", &path) < 0 || json_get_string(v, n, "type", &type) < 0)
		return oci_bad(w->err, where, "needs a path and a type");
	char t = !strcmp(type, "c") || !strcmp(type, "u") ? 'c' : !strcmp(type, "b") ? 'b' : !strcmp(type, "p") ? 'p' : 0;
	if (!t)
		return cap_err_plain(w->err, EINVAL, "config.json: %s: type '%.8s' is not c, u, b or p", where, type);
	const char *mv;
	size_t mn;
	int r;
	if (t != 'p' && (json_get_int(v, n, "major", &major) < 0 || json_get_int(v, n, "minor", &minor) < 0 ||
			 major < 0 || minor < 0 || major > 0xfff || minor > 0xfffff))
		return oci_bad(w->err, where, "needs a major (0 to 4095) and a minor (0 to 1048575)");
	if (json_get_member(v, n, "fileMode", &mv, &mn) == 0 && !oci_is_null(mv, mn) &&
	    ((r = oci_value_int(mv, mn, where, &mode, w->err)) < 0 || mode < 0 || mode > 0777))
		return r < 0 ? r : oci_bad(w->err, where, "fileMode is not permissions from 0 to 0777");
	if ((json_get_member(v, n, "uid", &mv, &mn) == 0 && !oci_is_null(mv, mn) &&
	     (r = oci_value_int(mv, mn, where, &uid, w->err)) < 0) ||
	    (json_get_member(v, n, "gid", &mv, &mn) == 0 && !oci_is_null(mv, mn) &&
	     (r = oci_value_int(mv, mn, where, &gid, w->err)) < 0))
		return r;
	if (uid < 0 || gid < 0 || uid > 65535 || gid > 65535)
		return oci_bad(w->err, where, "uid and gid must be sandbox ids, 0 to 65535");
	size_t len = strlen(path);
	if (strncmp(path, "/dev/", 5) || len < 6 || len > 100 || strpbrk(path, ",\n") || strstr(path, "/../") ||
	    strstr(path, "//") || path[len - 1] == '/' || !strcmp(path + len - 3, "/.."))
		return cap_err_plain(w->err, EINVAL, "config.json: %s: '%.128s' is not a clean path below /dev without ','",
				     where, path);
	for (size_t i = 0; i < sandbox_dev_nodes_count; i++) {
		const struct sandbox_dev_node *d = &sandbox_dev_nodes[i];
		if (strcmp(path + 5, d->name))
			continue;
		if (t == 'c' && major == d->major && minor == d->minor)
			return 0; /* capsule's own, there already */
		return cap_err_plain(w->err, EOPNOTSUPP, "config.json: %s: '%s' is capsule's own c %u:%u, not %c %lld:%lld",
				     where, path, d->major, d->minor, t, (long long)major, (long long)minor);
	}
	uid_t ub;
	gid_t gb;
	uint32_t count;
	bool rootless;
	home_id_map(0, &ub, &gb, &count, &rootless);
	if (rootless || rootless_mapped_ids())
		return cap_err_plain(w->err, EOPNOTSUPP, "config.json: %s: the device '%.128s' is not supported by capsule in a "
				     "rootless sandbox: only root may make a device node", where, path);
	bool rd = true, wr = true;
	if (t != 'p')
		device_access(w->rules, t, major, minor, &rd, &wr);
	if (rd != wr)
		return cap_err_plain(w->err, EOPNOTSUPP, "config.json: %s: '%.128s' may be %s but not %s under "
				     "linux.resources.devices, which capsule cannot enforce (a node it binds in opens or not)",
				     where, path, rd ? "read" : "written", rd ? "written" : "read");
	char item[192];
	snprintf(item, sizeof(item), "%c:%lld:%lld:%llo:%lld:%lld:%d:", t, (long long)major, (long long)minor,
		 (unsigned long long)mode, (long long)uid, (long long)gid, rd ? 1 : 0);
	if (++w->made > CAPSULE_MAX_DEVICES)
		return cap_err_plain(w->err, E2BIG, "config.json: linux.devices: more than %d devices", CAPSULE_MAX_DEVICES);
	return oci_join(&w->j, item, path, "linux.devices", w->err);
}

static int parse_devices(struct capsule_oci_spec *spec, const char *v, size_t n, const struct dev_rules *rules,
			 capsule_error *err)
{
	struct device_walk w = { .err = err, .rules = rules };
	return joined_into(&spec->cfg->devices, &w.j,
			   oci_walk_json(true, v, n, 256, device_element, &w, "linux.devices", err));
}

struct linux_walk {
	struct capsule_oci_spec *spec;
	capsule_error *err;
	bool has_namespaces;
	const char *devices; /* linux.devices, read once the rules are known */
	size_t devices_len;
	struct dev_rules rules;
};

static int linux_member(const char *name, const char *v, size_t n, void *payload)
{
	struct linux_walk *lw = payload;
	capsule_error *err = lw->err;
	if (!strcmp(name, "namespaces")) {
		lw->has_namespaces = true;
		return parse_namespaces(lw->spec, v, n, err);
	}
	if (!strcmp(name, "resources"))
		return oci_is_null(v, n) ? 0 : parse_resources(lw->spec, v, n, &lw->rules, err);
	if (!strcmp(name, "seccomp")) {
		if (oci_is_null(v, n))
			return 0;
		return oci_seccomp_compile(v, n, &lw->spec->seccomp_bpf, &lw->spec->seccomp_len, err);
	}
	if (!strcmp(name, "maskedPaths") || !strcmp(name, "readonlyPaths"))
		return oci_is_null(v, n) ? 0 : parse_protected_paths(lw->spec, v, n, !strcmp(name, "maskedPaths"), err);
	if (!strcmp(name, "uidMappings") || !strcmp(name, "gidMappings"))
		return oci_is_empty(v, n) ? 0 : parse_id_mappings(lw->spec, name, v, n, err);
	if (!strcmp(name, "cgroupsPath"))
		return oci_is_null(v, n) ? 0 : parse_cgroups_path(lw->spec, v, n, err);
	if (!strcmp(name, "rootfsPropagation")) {
		_cleanup_free_ char *p = NULL;
		int r = oci_value_string(v, n, "linux.rootfsPropagation", &p, err);
		if (r < 0)
			return r;
		if (p[0] && strcmp(p, "private") && strcmp(p, "rprivate"))
			return oci_unsupported(err, "linux.rootfsPropagation", "a sandbox's mounts are private");
		return 0;
	}
	if (!strcmp(name, "sysctl"))
		return oci_is_null(v, n) ? 0 : parse_sysctls(lw->spec, v, n, err);
	if (!strcmp(name, "devices")) {
		lw->devices = oci_is_null(v, n) ? NULL : v;
		lw->devices_len = n;
		return 0;
	}
	static const char *const refused[] = { "mountLabel", "intelRdt", "personality",
					       "timeOffsets", "memoryPolicy", "netDevices" };
	for (size_t i = 0; i < ARRAY_SIZE(refused); i++)
		if (!strcmp(name, refused[i]))
			return oci_is_empty(v, n) ? 0
					      : cap_err_plain(err, EOPNOTSUPP,
							      "config.json: linux.%s is not supported by capsule", name);
	return 0;
}

int oci_parse_linux(struct capsule_oci_spec *spec, const char *v, size_t n, capsule_error *err)
{
	_cleanup_free_ struct linux_walk *lw = calloc(1, sizeof(*lw));
	if (!lw)
		return cap_err(err, ENOMEM, "config.json");
	lw->spec = spec;
	lw->err = err;
	int r = oci_walk_json(false, v, n, MAX_MEMBERS, linux_member, lw, "linux", err);
	if (r == 0 && lw->devices)
		r = parse_devices(spec, lw->devices, lw->devices_len, &lw->rules, err);
	if (r < 0)
		return r;
	if (!lw->has_namespaces)
		return oci_unsupported(err, "a linux section without namespaces", "a sandbox always has its own");
	/* A joined IPC namespace is the pod's: its settings are its owner's, whose root the
	 * sandbox's is not. */
	const char *sc = spec->cfg->sysctls;
	for (; spec->cfg->ipc_ns && sc && *sc; sc = strchr(sc, ',') ? strchr(sc, ',') + 1 : "")
		if (strncmp(sc, "net.", 4))
			return cap_err_plain(err, EOPNOTSUPP,
					     "config.json: linux.sysctl.%.*s is not supported with a joined ipc namespace: "
					     "the pod's own settings are its pause container's", (int)strcspn(sc, "=,"), sc);
	return 0;
}
