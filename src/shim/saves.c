/* The shim's side of saves (docs/architecture.md, "Saves"): SAVE requests on a running sandbox
 * (save, checkpoint, fork) copy its own layer with its processes frozen, so the copy is one
 * moment's state; REVERT copies a checkpoint back while the sandbox is down. The copying is the
 * library's (src/lib/save/, through layer_op); it runs in a child of the shim, so that a copy
 * of gigabytes or of 40,000 hard links does not stop the shim from answering its other
 * clients meanwhile. The freezing is the level's: src/shim/container/freeze.c, or the vm's
 * pause hook. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "child.h"
#include "internal.h"
#include "layer_copy.h"
#include "save.h"
#include "saves.h"
#include "syscalls.h"
#include "util.h"

/* The numbers the save child keeps its two descriptors at; every other one is closed. */
#define SAVE_CHILD_RUN_FD 3
#define SAVE_CHILD_RESULT_FD 4

const char *shim_save_op_name(enum save_op op)
{
	return save_op_name(op);
}

/* A revert copies into a sandbox that is down, a paused one is still already: nothing to
 * freeze. */
static int sandbox_pause(const struct save_sandbox *sb, enum save_op op, bool on, capsule_error *err)
{
	if (op == SAVE_OP_REVERT || sb->held)
		return 0;
	return on ? sb->level->pause(sb->shim, err) : sb->level->resume(sb->shim, err);
}

static void move_fd(int fd, int to)
{
	if (dup3(fd, to, O_CLOEXEC) < 0)
		_exit(127);
}

/* The child keeps the sandbox's folder and the pipe back, nothing else of the shim's: not the
 * sandbox's lock (a save outliving a killed shim would hold the sandbox), not the control
 * socket, not a client's connection. It dies with the shim. */
_Noreturn static void save_child(const struct save_sandbox *sb, enum save_op op, const char *name, int result_fd,
				 pid_t shim)
{
	shim_child_prepare(shim);
	int run = fcntl(sb->run_fd, F_DUPFD_CLOEXEC, 10), result = fcntl(result_fd, F_DUPFD_CLOEXEC, 10);
	if (run < 0 || result < 0)
		_exit(127);
	move_fd(run, SAVE_CHILD_RUN_FD);
	move_fd(result, SAVE_CHILD_RESULT_FD);
	capsule_error err = { 0 };
	int r = fds_close_range(SAVE_CHILD_RESULT_FD + 1, ~0U);
	if (r < 0)
		cap_err_plain(&err, -r, "%s '%s': closing the shim's fds", shim_save_op_name(op), name);
	else
		r = layer_op(sb->cfg, SAVE_CHILD_RUN_FD, op, name, &err);
	/* What the save replaced goes in a process of its own: the answer need not wait. */
	layer_run_deferred_removals();
	if (r < 0) {
		if (!err.code)
			cap_err_plain(&err, -r, "%s '%s' failed", shim_save_op_name(op), name);
		/* One write below PIPE_BUF into an empty pipe: whole, and never blocking. */
		if (write(SAVE_CHILD_RESULT_FD, &err, sizeof(err)) < 0)
			_exit(2);
		_exit(1);
	}
	_exit(0);
}

int shim_save_start(const struct save_sandbox *sb, enum save_op op, const char *name, struct save_job *job,
		    capsule_error *err)
{
	*job = SAVE_JOB_NONE;
	/* Checked before anything is frozen: a bad name costs the sandbox nothing. */
	int r = layer_op_check(sb->cfg, op, name, err);
	if (r < 0)
		return r;
	int pipefd[2];
	if (pipe2(pipefd, O_CLOEXEC | O_NONBLOCK) < 0)
		return cap_err(err, errno, "pipe for a %s", shim_save_op_name(op));
	if ((r = sandbox_pause(sb, op, true, err)) < 0)
		goto fail;
	pid_t shim = getpid();
	pid_t pid = fork();
	if (pid == 0)
		save_child(sb, op, name, pipefd[1], shim);
	int e = errno;
	int pidfd = pid > 0 ? sys_pidfd_open(pid, 0) : -1;
	if (pid > 0 && pidfd < 0) {
		e = errno;
		kill(pid, SIGKILL);
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
	}
	if (pidfd < 0) {
		sandbox_pause(sb, op, false, NULL);
		r = cap_err(err, e, "starting the %s of '%s'", shim_save_op_name(op), name);
		goto fail;
	}
	close(pipefd[1]);
	*job = (struct save_job){ .pid = pid, .pidfd = pidfd, .result_fd = pipefd[0], .op = op, .started_ns = now_ns() };
	snprintf(job->name, sizeof(job->name), "%s", name);
	return 0;
fail:
	close(pipefd[0]);
	close(pipefd[1]);
	return r;
}

/* The child's error, or why it has none: killed, or gone without a word. */
static int job_result(const struct save_job *job, int status, bool cancel, capsule_error *err)
{
	const char *what = shim_save_op_name(job->op);
	if (cancel)
		return cap_err_plain(err, ECANCELED, "%s '%s' cancelled: the sandbox is stopping", what, job->name);
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	capsule_error child = { 0 };
	if (read(job->result_fd, &child, sizeof(child)) == (ssize_t)sizeof(child) && child.code > 0) {
		child.message[sizeof(child.message) - 1] = '\0';
		return cap_err_plain(err, child.code, "%s", child.message);
	}
	if (WIFSIGNALED(status))
		return cap_err_plain(err, EINTR, "%s '%s': the copying process was killed by signal %d", what, job->name,
				     WTERMSIG(status));
	return cap_err_plain(err, EIO, "%s '%s': the copying process exited with status %d", what, job->name,
			     WIFEXITED(status) ? WEXITSTATUS(status) : -1);
}

int shim_save_finish(const struct save_sandbox *sb, struct save_job *job, bool cancel, capsule_error *err)
{
	if (cancel)
		sys_pidfd_send_signal(job->pidfd, SIGKILL);
	int status = 0;
	while (waitpid(job->pid, &status, 0) < 0 && errno == EINTR)
		;
	int r = job_result(job, status, cancel, err);
	close(job->pidfd);
	close(job->result_fd);
	capsule_error terr = { 0 };
	if (sandbox_pause(sb, job->op, false, &terr) < 0 && r == 0)
		r = cap_err_plain(err, terr.code, "%s", terr.message);
	*job = SAVE_JOB_NONE;
	return r;
}
