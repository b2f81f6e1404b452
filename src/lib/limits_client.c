/* capsule_sandbox_update_limits: a LIMITS request to the sandbox's shim, which owns its
 * cgroup (src/shim/container/cgroup_update.c writes the files). */
#include <errno.h>

#include "conn.h"
#include "internal.h"
#include "util.h"

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
	char why[160];
	if (cp_limits_check(&m, why, sizeof(why)) < 0)
		return cap_err_plain(err, EINVAL, "update of sandbox '%s': %s", capsule_sandbox_name(sb), why);
	if ((m.set & CAPSULE_LIMIT_MEMORY) && capsule_sandbox_isolation(sb) == CAPSULE_ISOLATION_VM)
		return cap_err_plain(err, EOPNOTSUPP,
				     "update of sandbox '%s': a vm's memory is its guest's, fixed when it boots",
				     capsule_sandbox_name(sb));
	struct conn c;
	int r = conn_open(&c, capsule_sandbox_name(sb), err);
	if (r < 0)
		return r;
	if ((r = cp_limits_encode(&c.w, 1, &m)) < 0)
		r = cap_err(err, -r, "encoding a LIMITS request");
	else
		r = shim_request(&c, NULL, err);
	conn_close(&c);
	return r;
}
