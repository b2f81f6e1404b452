/* LIMITS (proto.h): change a running sandbox's cgroup limits. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "capsule.h"
#include "proto_internal.h"

#define LIMITS_ALL                                                                                             \
	(CAPSULE_LIMIT_MEMORY | CAPSULE_LIMIT_CPU_QUOTA | CAPSULE_LIMIT_CPU_PERIOD | CAPSULE_LIMIT_CPU_SHARES | \
	 CAPSULE_LIMIT_PIDS | CAPSULE_LIMIT_MEMORY_SWAP | CAPSULE_LIMIT_MEMORY_RESERVATION |                   \
	 CAPSULE_LIMIT_CPUSET_CPUS | CAPSULE_LIMIT_CPUSET_MEMS | CAPSULE_LIMIT_CPU_RT_PERIOD |                \
	 CAPSULE_LIMIT_CPU_RT_RUNTIME)

int cp_limits_encode(struct cp_writer *w, uint32_t chan, const struct cp_limits *m)
{
	if (!m->set || (m->set & ~LIMITS_ALL))
		return -EINVAL;
	cp_frame_begin(w, CP_LIMITS, 0, chan);
	cp_put_u32(w, CP_T_LIMITS_SET, m->set);
	cp_put_u64(w, CP_T_LIMITS_MEMORY, (uint64_t)m->memory_bytes);
	cp_put_u64(w, CP_T_LIMITS_CPU_QUOTA, (uint64_t)m->cpu_quota_us);
	cp_put_u64(w, CP_T_LIMITS_CPU_PERIOD, m->cpu_period_us);
	cp_put_u64(w, CP_T_LIMITS_CPU_SHARES, m->cpu_shares);
	cp_put_u64(w, CP_T_LIMITS_PIDS, (uint64_t)m->pids_max);
	cp_put_u64(w, CP_T_LIMITS_MEMORY_SWAP, (uint64_t)m->memory_swap);
	cp_put_u64(w, CP_T_LIMITS_MEMORY_RESERVATION, (uint64_t)m->memory_reservation);
	cp_put_str(w, CP_T_LIMITS_CPUSET_CPUS, m->cpuset_cpus);
	cp_put_str(w, CP_T_LIMITS_CPUSET_MEMS, m->cpuset_mems);
	cp_put_u64(w, CP_T_LIMITS_CPU_RT_PERIOD, m->cpu_rt_period_us);
	cp_put_u64(w, CP_T_LIMITS_CPU_RT_RUNTIME, (uint64_t)m->cpu_rt_runtime_us);
	return cp_frame_finish(w);
}

int cp_limits_decode(const uint8_t *p, size_t n, struct cp_limits *m)
{
	int ret = 0;
	memset(m, 0, sizeof(*m));
	uint64_t mem = 0, quota = 0, pids = 0, swap = 0, reservation = 0, rt_runtime = 0;
	DECODE_LOOP(p, n, {
		if (f.tag == CP_T_LIMITS_SET)
			r = cp_field_u32(&f, &m->set);
		else if (f.tag == CP_T_LIMITS_MEMORY)
			r = cp_field_u64(&f, &mem);
		else if (f.tag == CP_T_LIMITS_CPU_QUOTA)
			r = cp_field_u64(&f, &quota);
		else if (f.tag == CP_T_LIMITS_CPU_PERIOD)
			r = cp_field_u64(&f, &m->cpu_period_us);
		else if (f.tag == CP_T_LIMITS_CPU_SHARES)
			r = cp_field_u64(&f, &m->cpu_shares);
		else if (f.tag == CP_T_LIMITS_PIDS)
			r = cp_field_u64(&f, &pids);
		else if (f.tag == CP_T_LIMITS_MEMORY_SWAP)
			r = cp_field_u64(&f, &swap);
		else if (f.tag == CP_T_LIMITS_MEMORY_RESERVATION)
			r = cp_field_u64(&f, &reservation);
		else if (f.tag == CP_T_LIMITS_CPU_RT_PERIOD)
			r = cp_field_u64(&f, &m->cpu_rt_period_us);
		else if (f.tag == CP_T_LIMITS_CPU_RT_RUNTIME)
			r = cp_field_u64(&f, &rt_runtime);
		else if (f.tag == CP_T_LIMITS_CPUSET_CPUS || f.tag == CP_T_LIMITS_CPUSET_MEMS) {
			char *str = NULL;
			if ((r = cp_field_strndup(&f, CP_LIMITS_CPUSET_MAX, &str)) == 0) {
				snprintf(f.tag == CP_T_LIMITS_CPUSET_CPUS ? m->cpuset_cpus : m->cpuset_mems,
					 CP_LIMITS_CPUSET_MAX + 1, "%s", str);
				free(str);
			}
		}
	});
	m->memory_swap = (int64_t)swap;
	m->memory_reservation = (int64_t)reservation;
	m->cpu_rt_runtime_us = (int64_t)rt_runtime;
	m->memory_bytes = (int64_t)mem;
	m->cpu_quota_us = (int64_t)quota;
	m->pids_max = (int64_t)pids;
	if (!m->set || (m->set & ~LIMITS_ALL))
		return -EBADMSG;
	return 0;
fail:
	return ret;
}

int cp_limits_check(const struct cp_limits *m, char *why, size_t size)
{
	if (!m->set || (m->set & ~LIMITS_ALL))
		return snprintf(why, size, "no limit to change given"), -EINVAL;
	if ((m->set & CAPSULE_LIMIT_MEMORY) && m->memory_bytes >= 0 && m->memory_bytes < (4 << 20))
		return snprintf(why, size, "memory %lld bytes: at least 4 MiB, or -1 for no limit",
				(long long)m->memory_bytes), -EINVAL;
	if ((m->set & CAPSULE_LIMIT_CPU_QUOTA) && m->cpu_quota_us >= 0 &&
	    (m->cpu_quota_us < 1000 || m->cpu_quota_us > 1000000000))
		return snprintf(why, size, "cpu quota %lld us: 1000 to 1000000000, or -1 for no limit",
				(long long)m->cpu_quota_us), -EINVAL;
	if ((m->set & CAPSULE_LIMIT_CPU_PERIOD) && (m->cpu_period_us < 1000 || m->cpu_period_us > 1000000))
		return snprintf(why, size, "cpu period %llu us: 1000 to 1000000",
				(unsigned long long)m->cpu_period_us), -EINVAL;
	if ((m->set & CAPSULE_LIMIT_CPU_SHARES) && (m->cpu_shares < 2 || m->cpu_shares > 262144))
		return snprintf(why, size, "cpu shares %llu: 2 to 262144", (unsigned long long)m->cpu_shares), -EINVAL;
	if ((m->set & CAPSULE_LIMIT_PIDS) && m->pids_max > 4194304)
		return snprintf(why, size, "pids limit %lld: at most 4194304, or -1 for no limit", (long long)m->pids_max),
		       -EINVAL;
	if ((m->set & CAPSULE_LIMIT_MEMORY_SWAP) &&
	    (!(m->set & CAPSULE_LIMIT_MEMORY) || m->memory_bytes < 0 ||
	     (m->memory_swap >= 0 && m->memory_swap < m->memory_bytes)))
		return snprintf(why, size, "memory swap %lld: memory + swap, given with a memory limit and not below it, "
				"or -1 for unlimited swap", (long long)m->memory_swap), -EINVAL;
	if ((m->set & CAPSULE_LIMIT_MEMORY_RESERVATION) && m->memory_reservation == 0)
		return snprintf(why, size, "memory reservation 0: a number of bytes, or -1 for none"), -EINVAL;
	for (int i = 0; i < 2; i++) {
		const char *v = i ? m->cpuset_mems : m->cpuset_cpus;
		if ((m->set & (i ? CAPSULE_LIMIT_CPUSET_MEMS : CAPSULE_LIMIT_CPUSET_CPUS)) &&
		    (!v[0] || strspn(v, "0123456789,-") != strlen(v)))
			return snprintf(why, size, "cpuset %s '%.64s': a list such as 0-3,6", i ? "mems" : "cpus", v), -EINVAL;
	}
	if ((m->set & CAPSULE_LIMIT_CPU_RT_PERIOD) && (m->cpu_rt_period_us < 1 || m->cpu_rt_period_us > 1000000))
		return snprintf(why, size, "cpu realtime period %llu us: 1 to 1000000",
				(unsigned long long)m->cpu_rt_period_us), -EINVAL;
	if ((m->set & CAPSULE_LIMIT_CPU_RT_RUNTIME) && m->cpu_rt_runtime_us > 1000000)
		return snprintf(why, size, "cpu realtime runtime %lld us: at most 1000000, or -1 for no limit",
				(long long)m->cpu_rt_runtime_us), -EINVAL;
	return 0;
}
