/* The C API of pause and resume: a running sandbox's shim holds every process still in
 * memory (the container's cgroup freezer, a vm's vCPUs over QMP) until it is resumed or
 * stopped; or, for a vm, writes its memory to disk and exits (pause to disk), and a resume
 * starts a new shim that loads it. src/shim/requests.c says what a paused sandbox refuses
 * meanwhile. */
#include <errno.h>
#include <unistd.h>

#include "home.h"
#include "internal.h"
#include "util.h"

static int pause_request(capsule_sandbox *sb, uint32_t op, capsule_error *err)
{
	const char *what = op == CP_PAUSE_OP_PAUSE ? "pause" : op == CP_PAUSE_OP_RESUME ? "resume" : "pause to disk";
	if (!sb)
		return cap_err_plain(err, EINVAL, "%s: no sandbox given", what);
	if (op == CP_PAUSE_OP_TO_DISK && capsule_sandbox_isolation(sb) != CAPSULE_ISOLATION_VM)
		return cap_err_plain(err, EOPNOTSUPP, CAPSULE_PAUSE_TO_DISK_CONTAINER);
	/* Paused to disk, it has no shim: a pause of it holds already; a resume starts one. */
	_cleanup_close_ int dir = -1;
	if (run_dir_open(capsule_sandbox_name(sb), &dir, NULL) == 0 && !run_dir_locked(dir) &&
	    run_dir_paused_to_disk(dir))
		return op == CP_PAUSE_OP_RESUME ? sandbox_resume_from_disk(sb, err) : 0;
	struct conn c;
	int r = conn_open(&c, capsule_sandbox_name(sb), err);
	if (r < 0)
		return r;
	struct cp_pause m = { .op = op };
	if ((r = cp_pause_encode(&c.w, 1, &m)) < 0)
		r = cap_err(err, -r, "encoding a %s request", what);
	else
		r = shim_request(&c, NULL, err);
	conn_close(&c);
	return r;
}

int capsule_sandbox_pause(capsule_sandbox *sb, capsule_error *err)
{
	return pause_request(sb, CP_PAUSE_OP_PAUSE, err);
}

int capsule_sandbox_pause_to_disk(capsule_sandbox *sb, capsule_error *err)
{
	return pause_request(sb, CP_PAUSE_OP_TO_DISK, err);
}

int capsule_sandbox_resume(capsule_sandbox *sb, capsule_error *err)
{
	return pause_request(sb, CP_PAUSE_OP_RESUME, err);
}
