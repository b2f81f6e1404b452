/* cgroup_update: a running sandbox's limits changed (capsule_sandbox_update_limits). The
 * writes are planned first, each file's old value read, then made in order; when the kernel
 * refuses one (a memory limit below what cannot be reclaimed: EBUSY), the ones made before it
 * are written back, so the sandbox keeps the limits it had. */
#include <errno.h>
#include <stdlib.h>

#include "cgroup_internal.h"
#include "proto.h"

#define UPDATE_WRITES_MAX 16

struct planned {
	const struct cg_dir *d;
	const char *file;
	char val[CP_LIMITS_CPUSET_MAX + 32];
	char old[CP_LIMITS_CPUSET_MAX + 32];
};

struct plan {
	struct planned w[UPDATE_WRITES_MAX];
	size_t n;
};

static const struct cg_dir *dir_of(const struct cgroup_handle *cg, int c)
{
	for (size_t i = 0; i < cg->n; i++)
		if ((cg->dir[i].ctrls & CG_BIT(c)) && cg->dir[i].fd >= 0)
			return &cg->dir[i];
	return NULL;
}

/* FILE's value now, its first line. */
static int read_value(const struct cg_dir *d, const char *file, char *out, size_t size, capsule_error *err)
{
	_cleanup_free_ char *s = NULL;
	if (read_file_at(d->fd, file, CG_READ_MAX, &s, NULL) < 0)
		return cap_err(err, errno, "read '%s/%s'", d->path, file);
	s[strcspn(s, "\n")] = '\0';
	fmt_into(out, size, "%s", s);
	return 0;
}

static int plan_add(struct plan *p, const struct cg_dir *d, const char *file, const char *val, capsule_error *err)
{
	struct planned *w = &p->w[p->n++];
	w->d = d;
	w->file = file;
	fmt_into(w->val, sizeof(w->val), "%s", val);
	return read_value(d, file, w->old, sizeof(w->old), err);
}

/* The memory limit BYTES, and with it swap: none (memsw the limit itself, v2 swap 0) unless
 * CAPSULE_LIMIT_MEMORY_SWAP gives memory + swap. */
static int plan_memory(struct plan *p, const struct cgroup_handle *cg, const struct cg_dir *d,
		       const capsule_limits *u, capsule_error *err)
{
	char val[32], sw[32];
	int64_t bytes = u->memory_bytes;
	/* Swap equal to the limit is none, which needs no swap accounting. */
	bool swap = (u->set & CAPSULE_LIMIT_MEMORY_SWAP) && u->memory_swap_bytes != bytes;
	if (cg->v2) {
		fmt_into(val, sizeof(val), bytes < 0 ? "max" : "%lld", (long long)bytes);
		int r = plan_add(p, d, "memory.max", val, err);
		/* As at creation: swap does not extend a limit; without one it is the host's. */
		if (swap && u->memory_swap_bytes >= 0)
			fmt_into(sw, sizeof(sw), "%lld", (long long)(u->memory_swap_bytes - bytes));
		else
			fmt_into(sw, sizeof(sw), "%s", bytes < 0 || swap ? "max" : "0");
		if (r == 0 && swap && !exists_at(d->fd, "memory.swap.max"))
			return cap_err_plain(err, EOPNOTSUPP, "memory swap: '%s/memory.swap.max' is missing (no swap accounting)",
					     d->path);
		if (r == 0 && exists_at(d->fd, "memory.swap.max"))
			r = plan_add(p, d, "memory.swap.max", sw, err);
		return r;
	}
	fmt_into(val, sizeof(val), "%lld", bytes < 0 ? -1LL : (long long)bytes);
	fmt_into(sw, sizeof(sw), "%lld", !swap ? (bytes < 0 ? -1LL : (long long)bytes)
					   : u->memory_swap_bytes < 0 ? -1LL : (long long)u->memory_swap_bytes);
	if (!exists_at(d->fd, "memory.memsw.limit_in_bytes")) {
		if (swap)
			return cap_err_plain(err, EOPNOTSUPP, "memory swap: '%s/memory.memsw.limit_in_bytes' is missing (no swap "
							      "accounting)", d->path);
		return plan_add(p, d, "memory.limit_in_bytes", val, err);
	}
	/* The kernel keeps memsw >= the limit at every step: a raise moves memsw first, a cut
	 * the limit first. */
	char old[64];
	int r = read_value(d, "memory.limit_in_bytes", old, sizeof(old), err);
	if (r < 0)
		return r;
	bool raise = bytes < 0 || (uint64_t)bytes > strtoull(old, NULL, 10);
	if (raise && (r = plan_add(p, d, "memory.memsw.limit_in_bytes", sw, err)) < 0)
		return r;
	if ((r = plan_add(p, d, "memory.limit_in_bytes", val, err)) < 0)
		return r;
	return raise ? 0 : plan_add(p, d, "memory.memsw.limit_in_bytes", sw, err);
}

/* The finer settings: the soft limit, the cpuset, realtime cpu (v1). */
static int plan_finer(struct plan *p, const struct cgroup_handle *cg, const capsule_limits *u, capsule_error *err)
{
	char val[64];
	int r = 0;
	if (u->set & CAPSULE_LIMIT_MEMORY_RESERVATION) {
		fmt_into(val, sizeof(val), u->memory_reservation_bytes < 0 ? (cg->v2 ? "0" : "-1") : "%lld",
			 (long long)u->memory_reservation_bytes);
		r = plan_add(p, dir_of(cg, CG_MEMORY), cg->v2 ? "memory.low" : "memory.soft_limit_in_bytes", val, err);
	}
	if (r == 0 && (u->set & CAPSULE_LIMIT_CPUSET_CPUS))
		r = plan_add(p, dir_of(cg, CG_CPUSET), "cpuset.cpus", u->cpuset_cpus, err);
	if (r == 0 && (u->set & CAPSULE_LIMIT_CPUSET_MEMS))
		r = plan_add(p, dir_of(cg, CG_CPUSET), "cpuset.mems", u->cpuset_mems, err);
	if (r == 0 && (u->set & (CAPSULE_LIMIT_CPU_RT_PERIOD | CAPSULE_LIMIT_CPU_RT_RUNTIME)) &&
	    (cg->v2 || !exists_at(dir_of(cg, CG_CPU)->fd, "cpu.rt_runtime_us")))
		return cap_err_plain(err, EOPNOTSUPP, "realtime cpu limits are not supported %s",
				     cg->v2 ? "on cgroup v2, which has no realtime cpu controller"
					    : "by this kernel (no cpu.rt_runtime_us: CONFIG_RT_GROUP_SCHED)");
	if (r == 0 && (u->set & CAPSULE_LIMIT_CPU_RT_PERIOD)) {
		fmt_into(val, sizeof(val), "%llu", (unsigned long long)u->cpu_rt_period_us);
		r = plan_add(p, dir_of(cg, CG_CPU), "cpu.rt_period_us", val, err);
	}
	if (r == 0 && (u->set & CAPSULE_LIMIT_CPU_RT_RUNTIME)) {
		fmt_into(val, sizeof(val), "%lld", u->cpu_rt_runtime_us < 0 ? -1LL : (long long)u->cpu_rt_runtime_us);
		r = plan_add(p, dir_of(cg, CG_CPU), "cpu.rt_runtime_us", val, err);
	}
	return r;
}

static int plan_cpu(struct plan *p, const struct cgroup_handle *cg, const struct cg_dir *d,
		    const capsule_limits *u, capsule_error *err)
{
	char val[64];
	int r = 0;
	if (u->set & (CAPSULE_LIMIT_CPU_QUOTA | CAPSULE_LIMIT_CPU_PERIOD)) {
		if (cg->v2) {
			/* cpu.max holds both: the one not given is kept. */
			char old[64], quota[32];
			unsigned long long period = 0;
			if ((r = read_value(d, "cpu.max", old, sizeof(old), err)) < 0)
				return r;
			if (sscanf(old, "%31s %llu", quota, &period) != 2)
				return cap_err_plain(err, EPROTO, "'%s/cpu.max' reads '%s'", d->path, old);
			if (u->set & CAPSULE_LIMIT_CPU_QUOTA)
				fmt_into(quota, sizeof(quota), u->cpu_quota_us < 0 ? "max" : "%lld",
					 (long long)u->cpu_quota_us);
			if (u->set & CAPSULE_LIMIT_CPU_PERIOD)
				period = u->cpu_period_us;
			fmt_into(val, sizeof(val), "%s %llu", quota, period);
			r = plan_add(p, d, "cpu.max", val, err);
		} else {
			if (u->set & CAPSULE_LIMIT_CPU_PERIOD) {
				fmt_into(val, sizeof(val), "%llu", (unsigned long long)u->cpu_period_us);
				r = plan_add(p, d, "cpu.cfs_period_us", val, err);
			}
			if (r == 0 && (u->set & CAPSULE_LIMIT_CPU_QUOTA)) {
				fmt_into(val, sizeof(val), "%lld", u->cpu_quota_us < 0 ? -1LL : (long long)u->cpu_quota_us);
				r = plan_add(p, d, "cpu.cfs_quota_us", val, err);
			}
		}
	}
	if (r == 0 && (u->set & CAPSULE_LIMIT_CPU_SHARES)) {
		/* runc's mapping of shares (2..262144) onto v2's weight (1..10000), as at creation. */
		fmt_into(val, sizeof(val), "%llu",
			 cg->v2 ? 1ull + (u->cpu_shares - 2) * 9999 / 262142 : (unsigned long long)u->cpu_shares);
		r = plan_add(p, d, cg->v2 ? "cpu.weight" : "cpu.shares", val, err);
	}
	return r;
}

/* cgroup v2 takes any memory.max: below what the sandbox holds, the kernel reclaims and then
 * OOM-kills its processes until it fits (or nothing is left to kill), and the write succeeds.
 * v1 refuses such a limit (EBUSY) and keeps the old one, which is what an update promises at
 * both: so on v2 the new limit is first put in memory.high, whose write reclaims down to it
 * without killing, and a sandbox still above it gets its old memory.high back and the update
 * is refused. While memory.high holds the new limit, the sandbox is throttled rather than
 * killed should it grow before memory.max is written; *OLD_HIGH is what to put back after. */
static int v2_memory_reclaim(const struct cg_dir *d, int64_t bytes, char *old_high, size_t size, capsule_error *err)
{
	int r = read_value(d, "memory.high", old_high, size, err);
	if (r < 0)
		return r;
	char val[32], cur[32];
	fmt_into(val, sizeof(val), "%lld", (long long)bytes);
	if ((r = cg_write_at(d->fd, d->path, "memory.high", val, err)) < 0)
		return r;
	if ((r = read_value(d, "memory.current", cur, sizeof(cur), err)) < 0) {
		(void)cg_write_at(d->fd, d->path, "memory.high", old_high, NULL);
		return r;
	}
	unsigned long long held = strtoull(cur, NULL, 10);
	if (held <= (unsigned long long)bytes)
		return 0;
	(void)cg_write_at(d->fd, d->path, "memory.high", old_high, NULL);
	return cap_err_plain(err, EBUSY,
			     "write '%s/memory.max': the sandbox holds %llu bytes that cannot be reclaimed below "
			     "%lld (the limit is kept)", d->path, held, (long long)bytes);
}

int cgroup_update(struct cgroup_handle *cg, const capsule_limits *u, capsule_error *err)
{
	if (!cg || cg->destroyed || cg->n == 0)
		return cap_err_plain(err, EOPNOTSUPP, "the sandbox has no cgroup to change (cgroups are not usable here)");
	static const struct {
		uint32_t bits;
		int ctrl;
	} need[] = {
		{ CAPSULE_LIMIT_MEMORY | CAPSULE_LIMIT_MEMORY_RESERVATION, CG_MEMORY },
		{ CAPSULE_LIMIT_CPU_QUOTA | CAPSULE_LIMIT_CPU_PERIOD | CAPSULE_LIMIT_CPU_SHARES | CAPSULE_LIMIT_CPU_RT_PERIOD |
			  CAPSULE_LIMIT_CPU_RT_RUNTIME, CG_CPU },
		{ CAPSULE_LIMIT_PIDS, CG_PIDS },
	};
	for (size_t i = 0; i < ARRAY_SIZE(need); i++)
		if ((u->set & need[i].bits) && !dir_of(cg, need[i].ctrl))
			return cap_err_plain(err, EOPNOTSUPP, "the sandbox's cgroup has no %s controller",
					     cg_ctrl_name[need[i].ctrl]);
	struct plan p = { .n = 0 };
	int r = 0;
	/* Memory first: it is the write the kernel may refuse. */
	if (u->set & CAPSULE_LIMIT_MEMORY)
		r = plan_memory(&p, cg, dir_of(cg, CG_MEMORY), u, err);
	if (r == 0 && (u->set & CAPSULE_LIMIT_PIDS)) {
		char val[32];
		fmt_into(val, sizeof(val), u->pids_max <= 0 ? "max" : "%lld", (long long)u->pids_max);
		r = plan_add(&p, dir_of(cg, CG_PIDS), "pids.max", val, err);
	}
	if (r == 0)
		r = plan_cpu(&p, cg, dir_of(cg, CG_CPU), u, err);
	/* Last of the checks, as it is the one that makes something: the cpuset a sandbox made
	 * without one gets now, with its parent's sets until the plan writes the new ones. */
	if (r == 0 && (u->set & (CAPSULE_LIMIT_CPUSET_CPUS | CAPSULE_LIMIT_CPUSET_MEMS)))
		r = cgroup_add_cpuset(cg, err);
	if (r == 0)
		r = plan_finer(&p, cg, u, err);
	if (r < 0)
		return r;
	const struct cg_dir *high = NULL;
	char old_high[32];
	if (cg->v2 && (u->set & CAPSULE_LIMIT_MEMORY) && u->memory_bytes >= 0) {
		high = dir_of(cg, CG_MEMORY);
		if ((r = v2_memory_reclaim(high, u->memory_bytes, old_high, sizeof(old_high), err)) < 0)
			return r;
	}
	for (size_t i = 0; i < p.n; i++) {
		const struct planned *w = &p.w[i];
		if ((r = cg_write_at(w->d->fd, w->d->path, w->file, w->val, err)) == 0)
			continue;
		for (size_t k = i; k-- > 0;)
			(void)cg_write_at(p.w[k].d->fd, p.w[k].d->path, p.w[k].file, p.w[k].old, NULL);
		break;
	}
	if (high)
		(void)cg_write_at(high->fd, high->path, "memory.high", old_high, NULL);
	return r;
}
