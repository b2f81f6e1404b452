/* The C API of saves: save, checkpoint, revert and fork a sandbox. A running sandbox's shim
 * does the work (it freezes the sandbox's processes for the copy, and restarts it for a
 * revert); for a stopped one the library does it here, nothing else touching its layer. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "save.h"
#include "util.h"

/* A save copies the sandbox's whole layer; a slow disk and a large layer take a while. */
#define SAVE_REPLY_TIMEOUT_MS (30 * 60 * 1000)

static int save_request(const char *sandbox, enum save_op op, const char *name, capsule_error *err)
{
	struct conn c;
	int r = conn_open(&c, sandbox, err);
	if (r < 0)
		return r;
	struct cp_save m = { .op = save_op_to_wire(op), .name = (char *)name };
	if ((r = cp_save_encode(&c.w, 1, &m)) < 0)
		r = cap_err(err, -r, "encoding a save request");
	else
		r = shim_request_wait(&c, NULL, SAVE_REPLY_TIMEOUT_MS, err);
	conn_close(&c);
	return r;
}

/* OP on SB: through its shim while it runs, here while it is stopped. */
static int sandbox_layer_op(capsule_sandbox *sb, enum save_op op, const char *name, capsule_error *err)
{
	if (!sb)
		return cap_err_plain(err, EINVAL, "no sandbox given");
	const struct capsule_config *cfg = sandbox_config(sb);
	int r = layer_op_check(cfg, op, name, err);
	if (r < 0)
		return r;
	_cleanup_close_ int dir = -1, lockfd = -1;
	if ((r = run_dir_open(cfg->name, &dir, err)) < 0)
		return r;
	lockfd = openat(dir, "lock", O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	/* The lock free means no shim runs it: we hold it while we work, so none can start. */
	if (lockfd >= 0 && flock(lockfd, LOCK_EX | LOCK_NB) == 0)
		return layer_op(cfg, dir, op, name, err);
	return save_request(cfg->name, op, name, err);
}

int capsule_save(capsule_sandbox *sb, const char *name, capsule_error *err)
{
	return sandbox_layer_op(sb, SAVE_OP_SAVE, name, err);
}

int capsule_checkpoint(capsule_sandbox *sb, const char *name, capsule_error *err)
{
	return sandbox_layer_op(sb, SAVE_OP_CHECKPOINT, name, err);
}

int capsule_revert(capsule_sandbox *sb, const char *name, capsule_error *err)
{
	return sandbox_layer_op(sb, SAVE_OP_REVERT, name, err);
}

struct fork_source {
	capsule_sandbox *sb;
};

static int fill_fork(int run_dir_fd, const struct capsule_config *cfg, void *payload, capsule_error *err)
{
	struct fork_source *src = payload;
	return sandbox_layer_op(src->sb, SAVE_OP_FORK, cfg->name, err);
}

int capsule_fork(capsule_sandbox *sb, const char *new_name, capsule_sandbox **out, capsule_error *err)
{
	if (out)
		*out = NULL;
	if (!sb)
		return cap_err_plain(err, EINVAL, "fork: no sandbox given");
	int r = validate_name(new_name, "sandbox name", err);
	if (r < 0)
		return r;
	struct capsule_config cfg;
	if ((r = config_copy(&cfg, sandbox_config(sb))) < 0)
		return cap_err(err, -r, "copying the configuration of sandbox '%s'", sandbox_config(sb)->name);
	/* The fork is a sandbox of its own: named, running until stopped, with its own id range,
	 * and neither the original's save on its stop nor its port forwards. */
	snprintf(cfg.name, sizeof(cfg.name), "%s", new_name);
	cfg.detached = true;
	cfg.save[0] = '\0';
	/* The original holds its forwards' host ports: the fork's would all be taken. */
	cfg.nports = 0;
	cfg.hostname[0] = '\0';
	cfg.progress = NULL;
	struct fork_source src = { sb };
	capsule_sandbox *fork = NULL;
	r = sandbox_create_prepared(&fork, &cfg, fill_fork, &src, err);
	config_clear(&cfg);
	if (r < 0)
		return cap_err_wrap(err, r, "fork of '%s'", sandbox_config(sb)->name);
	if (out)
		*out = fork;
	else
		capsule_sandbox_free(fork);
	return 0;
}
