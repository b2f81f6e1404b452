/* capsule-oci update: runc's update, over capsule_sandbox_update_limits.
 *
 * The limits come from --resources FILE (or - for stdin: the spec's linux.resources object,
 * as containerd's shim passes it for `ctr task update` and the CRI's UpdateContainerResources)
 * and from runc's flags, the flags over the file. capsule changes memory (swap, memory + swap,
 * goes with it; without it swap does not extend the limit), the reservation, cpu shares, quota
 * and period, realtime cpu (cgroup v1), the cpuset of a container made with one, and pids. Any
 * other field given a value that means something (kernel memory, block I/O weights, RDT) is
 * refused by name, before anything is changed. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "json.h"
#include "oci.h"
#include "parse.h"
#include "util.h"

#define RESOURCES_MAX (1u << 20)

/* A member given no meaningful value: null, 0, false, "", {}, []. */
static bool zeroish(const char *v, size_t len)
{
	while (len && isspace((unsigned char)v[len - 1]))
		len--;
	while (len && isspace((unsigned char)*v))
		v++, len--;
	static const char *const zero[] = { "null", "0", "false", "\"\"", "{}", "[]" };
	for (size_t i = 0; i < ARRAY_SIZE(zero); i++)
		if (len == strlen(zero[i]) && !memcmp(v, zero[i], len))
			return true;
	return false;
}

struct walk {
	const char *section;
	const char *const *known; /* the members read elsewhere */
	char bad[128];
};

static int refuse_unknown(const char *name, const char *value, size_t len, void *payload)
{
	struct walk *w = payload;
	for (size_t i = 0; w->known && w->known[i]; i++)
		if (!strcmp(name, w->known[i]))
			return 0;
	if (zeroish(value, len))
		return 0;
	snprintf(w->bad, sizeof(w->bad), "%s%s%s", w->section, *w->section ? "." : "", name);
	return -EOPNOTSUPP;
}

static int get_i64(const char *obj, size_t len, const char *key, int64_t *out, bool *given)
{
	int r = json_get_int(obj, len, key, out);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	*given = true;
	return 0;
}

/* A and the stored devices CREATED (NUL-terminated, or NULL) the same, whitespace aside (the
 * rules' strings hold none: types, major/minor numbers, access letters). */
static bool same_json(const char *a, size_t alen, const char *created)
{
	if (!created)
		return false;
	const char *b = created;
	for (size_t i = 0;; i++, b++) {
		while (i < alen && isspace((unsigned char)a[i]))
			i++;
		while (*b && isspace((unsigned char)*b))
			b++;
		if (i == alen || !*b)
			return i == alen && !*b;
		if (a[i] != *b)
			return false;
	}
}

/* linux.resources.devices of the config.json kept at create, in ROOT/ID (DIRFD). */
static char *created_devices(int dirfd)
{
	_cleanup_free_ char *cfg = NULL;
	size_t len;
	const char *linux_obj, *res, *dev;
	size_t ll, rl, dl;
	if (read_file_at(dirfd, "config.json", 16u << 20, &cfg, &len) < 0 ||
	    json_get_member(cfg, len, "linux", &linux_obj, &ll) < 0 ||
	    json_get_member(linux_obj, ll, "resources", &res, &rl) < 0 ||
	    json_get_member(res, rl, "devices", &dev, &dl) < 0)
		return NULL;
	return strndup(dev, dl);
}

/* The resources object TEXT into LIM; WHY names the field it refuses. */
static int from_resources(const char *text, size_t len, const char *created, capsule_limits *lim, char *cpuset[2],
			  char *why, size_t size)
{
	static const char *const top[] = { "memory", "cpu", "pids", "devices", NULL };
	static const char *const memory[] = { "limit", "swap", "reservation", NULL };
	static const char *const cpu[] = { "shares", "quota", "period", "cpus", "mems", "realtimeRuntime",
					   "realtimePeriod", NULL };
	static const char *const pids[] = { "limit", NULL };
	struct walk w = { .section = "", .known = top };
	int r = json_object_each(text, len, 64, refuse_unknown, &w);
	if (r == -EOPNOTSUPP)
		return snprintf(why, size, "%s is not supported by capsule-oci update", w.bad), r;
	if (r < 0)
		return snprintf(why, size, "the resources are not a JSON object"), r;
	/* containerd's shim sends the whole of linux.resources, device rules and all: they are
	 * what create applied, and cannot change. */
	const char *dev;
	size_t dev_len;
	if (json_get_member(text, len, "devices", &dev, &dev_len) == 0 && !zeroish(dev, dev_len) &&
	    !same_json(dev, dev_len, created))
		return snprintf(why, size, "devices: the device rules are the container's since create, and cannot change"),
		       -EOPNOTSUPP;
	const struct {
		const char *name;
		const char *const *known;
	} sections[] = { { "memory", memory }, { "cpu", cpu }, { "pids", pids } };
	int64_t swap = 0;
	bool swap_given = false;
	for (size_t i = 0; i < ARRAY_SIZE(sections); i++) {
		const char *v;
		size_t vl;
		if (json_get_member(text, len, sections[i].name, &v, &vl) < 0 || zeroish(v, vl))
			continue;
		struct walk s = { .section = sections[i].name, .known = sections[i].known };
		r = json_object_each(v, vl, 64, refuse_unknown, &s);
		if (r == -EOPNOTSUPP)
			return snprintf(why, size, "%s is not supported by capsule-oci update", s.bad), r;
		if (r < 0)
			return snprintf(why, size, "%s is not a JSON object", sections[i].name), r;
		bool g = false;
		int64_t n = 0;
		if (i == 0) {
			if ((r = get_i64(v, vl, "limit", &n, &g)) == 0 && g)
				lim->set |= CAPSULE_LIMIT_MEMORY, lim->memory_bytes = n;
			if (r == 0)
				r = get_i64(v, vl, "swap", &swap, &swap_given);
			if (r == 0 && (r = get_i64(v, vl, "reservation", &n, &(bool){ false })) == 0 && n)
				lim->set |= CAPSULE_LIMIT_MEMORY_RESERVATION, lim->memory_reservation_bytes = n;
		} else if (i == 1) {
			int64_t q = 0, p = 0, sh = 0, rp = 0, rr = 0;
			bool gq = false, gp = false, gs = false, g2 = false;
			if ((r = get_i64(v, vl, "quota", &q, &gq)) == 0 && (r = get_i64(v, vl, "period", &p, &gp)) == 0)
				r = get_i64(v, vl, "shares", &sh, &gs);
			if (r == 0 && (r = get_i64(v, vl, "realtimePeriod", &rp, &g2)) == 0 && rp)
				lim->set |= CAPSULE_LIMIT_CPU_RT_PERIOD, lim->cpu_rt_period_us = (uint64_t)rp;
			if (r == 0 && (r = get_i64(v, vl, "realtimeRuntime", &rr, &g2)) == 0 && rr)
				lim->set |= CAPSULE_LIMIT_CPU_RT_RUNTIME, lim->cpu_rt_runtime_us = rr;
			/* The lists point into TEXT, which outlives the update. */
			for (int k = 0; r == 0 && k < 2; k++) {
				char **slot = k ? &cpuset[1] : &cpuset[0];
				r = json_get_string(v, vl, k ? "mems" : "cpus", slot);
				if (r == -ENOENT)
					r = 0;
				else if (r == 0 && **slot)
					lim->set |= k ? CAPSULE_LIMIT_CPUSET_MEMS : CAPSULE_LIMIT_CPUSET_CPUS;
			}
			lim->cpuset_cpus = cpuset[0];
			lim->cpuset_mems = cpuset[1];
			/* The spec's zero is "not set" for each of these. */
			if (gq && q)
				lim->set |= CAPSULE_LIMIT_CPU_QUOTA, lim->cpu_quota_us = q;
			if (gp && p)
				lim->set |= CAPSULE_LIMIT_CPU_PERIOD, lim->cpu_period_us = (uint64_t)p;
			if (gs && sh)
				lim->set |= CAPSULE_LIMIT_CPU_SHARES, lim->cpu_shares = (uint64_t)sh;
			if (r == 0 && ((gp && p < 0) || (gs && sh < 0)))
				return snprintf(why, size, "cpu.period and cpu.shares cannot be negative"), -EINVAL;
		} else if ((r = get_i64(v, vl, "limit", &n, &g)) == 0 && g) {
			lim->set |= CAPSULE_LIMIT_PIDS, lim->pids_max = n;
		}
		if (r < 0)
			return snprintf(why, size, "%s: a value is not an integer", sections[i].name), r;
	}
	/* Swap is memory + swap, as at create: it goes with the memory limit it extends. */
	if (swap_given && swap) {
		if (!(lim->set & CAPSULE_LIMIT_MEMORY))
			return snprintf(why, size, "memory.swap %" PRId64 " needs memory.limit (swap is memory + swap)", swap),
			       -EINVAL;
		lim->set |= CAPSULE_LIMIT_MEMORY_SWAP;
		lim->memory_swap_bytes = swap;
	}
	return 0;
}

/* runc's sizes (docker's RAMInBytes, parse_size's): "512m", "1g", "1048576"; or -1. */
static int parse_bytes(const char *s, int64_t *out)
{
	uint64_t v;
	if (!strcmp(s, "-1"))
		return *out = -1, 0;
	if (parse_size(s, &v, NULL) < 0)
		return -EINVAL;
	*out = (int64_t)v;
	return 0;
}

static int parse_int(const char *s, int64_t *out)
{
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (end == s || *end || errno)
		return -EINVAL;
	*out = v;
	return 0;
}

/* The limits asked, checked against the container in ST, and set. */
static int update_with_state(const struct oci_update *o, const struct oci_state *st, const char *created)
{
	capsule_limits lim = { 0 };
	char why[256];
	_cleanup_free_ char *cpuset_cpus = NULL, *cpuset_mems = NULL;
	if (o->resources) {
		_cleanup_free_ char *text = NULL;
		size_t len = 0;
		int fd = strcmp(o->resources, "-") ? open(o->resources, O_RDONLY | O_CLOEXEC) : STDIN_FILENO;
		if (fd < 0)
			return oci_fail("update --resources %s: %s", o->resources, strerror(errno));
		int r = read_fd_all(fd, RESOURCES_MAX, &text, &len);
		if (fd != STDIN_FILENO)
			close(fd);
		if (r < 0)
			return oci_fail("update --resources %s: %s", o->resources, strerror(-r));
		char *cpuset[2] = { NULL, NULL };
		r = from_resources(text, len, created, &lim, cpuset, why, sizeof(why));
		cpuset_cpus = cpuset[0];
		cpuset_mems = cpuset[1];
		if (r < 0)
			return oci_fail("update --resources %s: %s", o->resources, why);
	}
	const struct {
		const char *flag, *value;
		uint32_t bit;
		bool bytes;
	} flags[] = {
		{ "memory", o->memory, CAPSULE_LIMIT_MEMORY, true },
		{ "cpu-quota", o->cpu_quota, CAPSULE_LIMIT_CPU_QUOTA, false },
		{ "cpu-period", o->cpu_period, CAPSULE_LIMIT_CPU_PERIOD, false },
		{ "cpu-share", o->cpu_share, CAPSULE_LIMIT_CPU_SHARES, false },
		{ "pids-limit", o->pids_limit, CAPSULE_LIMIT_PIDS, false },
		{ "memory-reservation", o->reservation, CAPSULE_LIMIT_MEMORY_RESERVATION, true },
		{ "cpu-rt-period", o->rt_period, CAPSULE_LIMIT_CPU_RT_PERIOD, false },
		{ "cpu-rt-runtime", o->rt_runtime, CAPSULE_LIMIT_CPU_RT_RUNTIME, false },
	};
	for (size_t i = 0; i < ARRAY_SIZE(flags); i++) {
		if (!flags[i].value)
			continue;
		int64_t v;
		if ((flags[i].bytes ? parse_bytes(flags[i].value, &v) : parse_int(flags[i].value, &v)) < 0 ||
		    (v < 0 && (flags[i].bit & (CAPSULE_LIMIT_CPU_PERIOD | CAPSULE_LIMIT_CPU_SHARES))))
			return oci_fail("update --%s '%s': %s", flags[i].flag, flags[i].value,
					flags[i].bytes ? "a size such as 512m or 1g, or -1" : "an integer");
		lim.set |= flags[i].bit;
		switch (flags[i].bit) {
		case CAPSULE_LIMIT_MEMORY: lim.memory_bytes = v; break;
		case CAPSULE_LIMIT_CPU_QUOTA: lim.cpu_quota_us = v; break;
		case CAPSULE_LIMIT_CPU_PERIOD: lim.cpu_period_us = (uint64_t)v; break;
		case CAPSULE_LIMIT_CPU_SHARES: lim.cpu_shares = (uint64_t)v; break;
		case CAPSULE_LIMIT_MEMORY_RESERVATION: lim.memory_reservation_bytes = v; break;
		case CAPSULE_LIMIT_CPU_RT_PERIOD: lim.cpu_rt_period_us = (uint64_t)v; break;
		case CAPSULE_LIMIT_CPU_RT_RUNTIME: lim.cpu_rt_runtime_us = v; break;
		default: lim.pids_max = v; break;
		}
	}
	if (o->cpuset_cpus)
		lim.set |= CAPSULE_LIMIT_CPUSET_CPUS, lim.cpuset_cpus = o->cpuset_cpus;
	if (o->cpuset_mems)
		lim.set |= CAPSULE_LIMIT_CPUSET_MEMS, lim.cpuset_mems = o->cpuset_mems;
	if (o->memory_swap) {
		int64_t v;
		if (parse_bytes(o->memory_swap, &v) < 0)
			return oci_fail("update --memory-swap '%s': a size such as 512m or 1g, or -1", o->memory_swap);
		if (!(lim.set & CAPSULE_LIMIT_MEMORY))
			return oci_fail("update --memory-swap %s: needs --memory (swap is memory + swap)", o->memory_swap);
		lim.set |= CAPSULE_LIMIT_MEMORY_SWAP;
		lim.memory_swap_bytes = v;
	}
	for (size_t i = 0; i < o->nrefused; i++)
		if (o->refused[i].value && *o->refused[i].value)
			return oci_fail("update --%s is not supported: %s", o->refused[i].flag, o->refused[i].why);
	if (!lim.set)
		return oci_fail("update: no limit to change given (--resources, --memory, --memory-swap, "
				"--memory-reservation, --cpu-quota, --cpu-period, --cpu-share, --cpu-rt-period, "
				"--cpu-rt-runtime, --cpuset-cpus, --cpuset-mems, --pids-limit)");

	if (!strcmp(st->status, "stopped"))
		return oci_fail("container '%s' is stopped: its limits cannot change", o->id);
	capsule_error err = { 0 };
	capsule_sandbox *sb;
	int r = capsule_sandbox_open(&sb, st->sandbox, &err);
	if (r == 0) {
		r = capsule_sandbox_update_limits(sb, &lim, &err);
		capsule_sandbox_free(sb);
	}
	return r < 0 ? oci_fail_err(&err) : 0;
}

int oci_update(const struct oci_update *o)
{
	struct oci_state st;
	int dirfd;
	if (oci_state_dir_open(o->id, &dirfd))
		return 1;
	int sr = oci_state_read(dirfd, &st);
	_cleanup_free_ char *created = sr < 0 ? NULL : created_devices(dirfd);
	close(dirfd);
	if (sr < 0)
		return oci_fail("container '%s': no readable state", o->id);
	int r = update_with_state(o, &st, created);
	oci_state_clear(&st);
	return r;
}
