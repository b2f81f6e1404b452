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

/* The shim's own bound on QEMU's migration (src/shim/vm/migrate.c) is 10 minutes: a guest of
 * many GiB writes for that long. */
#define TO_DISK_TIMEOUT_MS (11 * 60 * 1000)

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
		r = op == CP_PAUSE_OP_TO_DISK ? shim_request_wait(&c, NULL, TO_DISK_TIMEOUT_MS, err) : shim_request(&c, NULL, err);
	/* The shim answers a pause to disk just before it exits: once it has hung up, none of the
	 * sandbox's processes is left and no connection to it (a handle's kept one) still looks
	 * alive. */
	for (int n = 0; r == 0 && op == CP_PAUSE_OP_TO_DISK && n < 1000; n++) {
		struct cp_header h;
		const uint8_t *payload;
		if (conn_recv(&c, &h, &payload, 10000, NULL) < 0)
			break;
		conn_consume(&c, &h);
	}
	conn_close(&c);
	if (r == 0 && op == CP_PAUSE_OP_TO_DISK)
		sandbox_drop_kept_conn(sb);
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
