/* capsule_sandbox_update_limits: a LIMITS request to the sandbox's shim, which owns its
 * cgroup (src/shim/container/cgroup_update.c writes the files). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "home.h"
#include "sandbox.h"
#include "sandbox_config.h"
#include "internal.h"
#include "util.h"

/* The new limits into the sandbox's config, as docker keeps an update's: a restart starts
 * it with them, and inspect shows them. cpus is the quota over the period; a period other
 * than the 100 ms capsule gives is kept as that ratio. */
static int keep_limits(capsule_sandbox *sb, const struct cp_limits *m, capsule_error *err)
{
	struct capsule_config cfg = *sandbox_config(sb);
	if (m->set & CAPSULE_LIMIT_MEMORY)
		cfg.memory_bytes = m->memory_bytes < 0 ? 0 : (uint64_t)m->memory_bytes;
	if (m->set & CAPSULE_LIMIT_CPU_QUOTA) {
		uint64_t period = (m->set & CAPSULE_LIMIT_CPU_PERIOD) ? m->cpu_period_us : 100000;
		cfg.cpus_milli = m->cpu_quota_us < 0 ? 0 : (uint32_t)((uint64_t)m->cpu_quota_us * 1000 / period);
	}
	if (m->set & CAPSULE_LIMIT_CPU_SHARES)
		cfg.cpu_shares = (uint32_t)m->cpu_shares;
	if (m->set & CAPSULE_LIMIT_PIDS)
		cfg.pids_limit = m->pids_max < 0 ? 0 : (uint32_t)m->pids_max;
	/* The exact quota and period, where create had them. */
	if ((m->set & CAPSULE_LIMIT_CPU_QUOTA) && cfg.cg.cpu_quota_us)
		cfg.cg.cpu_quota_us = m->cpu_quota_us < 0 ? 0 : (uint64_t)m->cpu_quota_us;
	if ((m->set & CAPSULE_LIMIT_CPU_PERIOD) && (cfg.cg.cpu_quota_us || cfg.cg.cpu_period_us))
		cfg.cg.cpu_period_us = m->cpu_period_us;
	/* A memory limit alone is not extended by swap, as at create. */
	if (m->set & CAPSULE_LIMIT_MEMORY)
		cfg.cg.memory_swap = !(m->set & CAPSULE_LIMIT_MEMORY_SWAP) ? 0
				     : m->memory_swap < 0 ? UINT64_MAX : (uint64_t)m->memory_swap;
	if (m->set & CAPSULE_LIMIT_MEMORY_RESERVATION)
		cfg.cg.memory_reservation = m->memory_reservation < 0 ? 0 : (uint64_t)m->memory_reservation;
	if (m->set & CAPSULE_LIMIT_CPU_RT_PERIOD)
		cfg.cg.cpu_rt_period_us = m->cpu_rt_period_us;
	if (m->set & CAPSULE_LIMIT_CPU_RT_RUNTIME)
		cfg.cg.cpu_rt_runtime_us = m->cpu_rt_runtime_us < 0 ? UINT64_MAX : (uint64_t)m->cpu_rt_runtime_us;
	/* Pointers into M while the file is written; copies once it is. */
	if (m->set & CAPSULE_LIMIT_CPUSET_CPUS)
		cfg.cg.cpuset_cpus = (char *)m->cpuset_cpus;
	if (m->set & CAPSULE_LIMIT_CPUSET_MEMS)
		cfg.cg.cpuset_mems = (char *)m->cpuset_mems;
	_cleanup_close_ int dir = -1;
	_cleanup_free_ char *text = NULL;
	size_t len;
	int r = run_dir_open(capsule_sandbox_name(sb), &dir, err);
	if (r < 0)
		return r;
	if ((r = config_serialize(&cfg, &text, &len)) < 0 || (r = write_file_atomic_at(dir, "config", text, len, 0600, false)) < 0)
		return cap_err(err, -r, "sandbox '%s': its limits changed, but its configuration could not be written",
			       capsule_sandbox_name(sb));
	struct capsule_config *kept = sandbox_config_mut(sb);
	kept->memory_bytes = cfg.memory_bytes;
	kept->cpus_milli = cfg.cpus_milli;
	kept->cpu_shares = cfg.cpu_shares;
	kept->pids_limit = cfg.pids_limit;
	/* The cpuset lists, copied before anything of KEPT changes. */
	char *lists[2] = { kept->cg.cpuset_cpus, kept->cg.cpuset_mems };
	const uint32_t bits[2] = { CAPSULE_LIMIT_CPUSET_CPUS, CAPSULE_LIMIT_CPUSET_MEMS };
	const char *given[2] = { m->cpuset_cpus, m->cpuset_mems };
	for (int i = 0; i < 2; i++)
		if ((m->set & bits[i]) && !(lists[i] = strdup(given[i]))) {
			if (i == 1 && (m->set & bits[0]))
				free(lists[0]);
			return cap_err(err, ENOMEM, "sandbox '%s': its limits changed", capsule_sandbox_name(sb));
		}
	for (int i = 0; i < 2; i++)
		if (m->set & bits[i])
			free(i ? kept->cg.cpuset_mems : kept->cg.cpuset_cpus);
	kept->cg = cfg.cg;
	kept->cg.cpuset_cpus = lists[0];
	kept->cg.cpuset_mems = lists[1];
	return 0;
}

int capsule_sandbox_update_limits(capsule_sandbox *sb, const capsule_limits *lim, capsule_error *err)
{
	if (!sb || !lim)
		return cap_err_plain(err, EINVAL, "update: no sandbox or no limits given");
	struct cp_limits m = {
		.set = lim->set,
		.memory_bytes = lim->memory_bytes,
		.cpu_quota_us = lim->cpu_quota_us,
		.cpu_period_us = lim->cpu_period_us,
		.cpu_shares = lim->cpu_shares,
		.pids_max = lim->pids_max,
	};
	uint32_t finer = CAPSULE_LIMIT_MEMORY_SWAP | CAPSULE_LIMIT_MEMORY_RESERVATION | CAPSULE_LIMIT_CPUSET_CPUS |
			 CAPSULE_LIMIT_CPUSET_MEMS | CAPSULE_LIMIT_CPU_RT_PERIOD | CAPSULE_LIMIT_CPU_RT_RUNTIME;
	if (lim->set & finer) {
		m.memory_swap = lim->memory_swap_bytes;
		m.memory_reservation = lim->memory_reservation_bytes;
		m.cpu_rt_period_us = lim->cpu_rt_period_us;
		m.cpu_rt_runtime_us = lim->cpu_rt_runtime_us;
		const char *sets[2] = { (lim->set & CAPSULE_LIMIT_CPUSET_CPUS) ? lim->cpuset_cpus : NULL,
					(lim->set & CAPSULE_LIMIT_CPUSET_MEMS) ? lim->cpuset_mems : NULL };
		char *slot[2] = { m.cpuset_cpus, m.cpuset_mems };
		for (int i = 0; i < 2; i++)
			if (sets[i] && snprintf(slot[i], CP_LIMITS_CPUSET_MAX + 1, "%s", sets[i]) > CP_LIMITS_CPUSET_MAX)
				return cap_err_plain(err, EINVAL, "update of sandbox '%s': cpuset %s: longer than %d bytes",
						     capsule_sandbox_name(sb), i ? "mems" : "cpus", CP_LIMITS_CPUSET_MAX);
	}
	char why[160];
	if (cp_limits_check(&m, why, sizeof(why)) < 0)
		return cap_err_plain(err, EINVAL, "update of sandbox '%s': %s", capsule_sandbox_name(sb), why);
	if ((m.set & finer) && capsule_sandbox_isolation(sb) == CAPSULE_ISOLATION_VM) {
		uint32_t s = m.set;
		const char *flag = (s & CAPSULE_LIMIT_CPUSET_CPUS) ? "--cpuset-cpus" : (s & CAPSULE_LIMIT_CPUSET_MEMS) ? "--cpuset-mems"
				   : (s & CAPSULE_LIMIT_MEMORY_SWAP) ? "--memory-swap"
				   : (s & CAPSULE_LIMIT_MEMORY_RESERVATION) ? "--memory-reservation" : "a realtime cpu limit";
		return cap_err_plain(err, EOPNOTSUPP,
				     "update of sandbox '%s': %s is for a container: a vm's cgroup is QEMU's, at the vm level "
				     "cpu and pids only", capsule_sandbox_name(sb), flag);
	}
	/* What the shim's bounds do not see: the cpus and nodes the host has, the reservation
	 * against the memory limit the sandbox will have. */
	capsule_error e = { 0 };
	int r = 0;
	for (int i = 0; i < 2 && r == 0; i++)
		if (m.set & (i ? CAPSULE_LIMIT_CPUSET_MEMS : CAPSULE_LIMIT_CPUSET_CPUS))
			r = config_cpuset_check(i ? m.cpuset_mems : m.cpuset_cpus, i, &e);
	uint64_t memory = !(m.set & CAPSULE_LIMIT_MEMORY) ? sandbox_config(sb)->memory_bytes
			  : m.memory_bytes < 0 ? 0 : (uint64_t)m.memory_bytes;
	if (r == 0 && (m.set & CAPSULE_LIMIT_MEMORY_RESERVATION) && m.memory_reservation > 0)
		r = config_memory_pair_check(memory, false, 0, (uint64_t)m.memory_reservation, &e);
	if (r < 0)
		return cap_err_plain(err, -r, "update of sandbox '%s': %s", capsule_sandbox_name(sb), e.message);
	struct conn c;
	r = conn_open(&c, capsule_sandbox_name(sb), err);
	if (r < 0)
		return r;
	if ((r = cp_limits_encode(&c.w, 1, &m)) < 0)
		r = cap_err(err, -r, "encoding a LIMITS request");
	else
		r = shim_request(&c, NULL, err);
	conn_close(&c);
	return r < 0 ? r : keep_limits(sb, &m, err);
}
