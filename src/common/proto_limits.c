/* LIMITS (proto.h): change a running sandbox's cgroup limits. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "capsule.h"
#include "proto_internal.h"

#define LIMITS_ALL                                                                                             \
	(CAPSULE_LIMIT_MEMORY | CAPSULE_LIMIT_CPU_QUOTA | CAPSULE_LIMIT_CPU_PERIOD | CAPSULE_LIMIT_CPU_SHARES | \
	 CAPSULE_LIMIT_PIDS)

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
	return cp_frame_finish(w);
}

int cp_limits_decode(const uint8_t *p, size_t n, struct cp_limits *m)
{
	int ret = 0;
	memset(m, 0, sizeof(*m));
	uint64_t mem = 0, quota = 0, pids = 0;
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
	});
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
	return 0;
}
