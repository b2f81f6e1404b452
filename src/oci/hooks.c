/* The spec's hooks (runtime-spec "POSIX-platform Hooks"): host programs run by the runtime
 * with the container's state JSON on stdin. prestart and createRuntime at create, once the
 * sandbox exists and before create returns; poststart after the process has started and
 * before start returns; poststop at delete, once the sandbox is gone. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "oci.h"
#include "syscalls.h"
#include "util.h"

static const char *const kind_names[] = { "prestart", "createRuntime", "poststart", "poststop" };

/* One hook: 0, or -1 with WHY filled. */
static int run_hook(const capsule_oci_hook *h, const char *state, char *why, size_t size)
{
	int in[2];
	if (pipe2(in, O_CLOEXEC) < 0) {
		snprintf(why, size, "pipe: %s", strerror(errno));
		return -1;
	}
	pid_t pid = fork();
	if (pid < 0) {
		snprintf(why, size, "fork: %s", strerror(errno));
		close(in[0]);
		close(in[1]);
		return -1;
	}
	if (pid == 0) {
		/* stdout and stderr stay the runtime's, as runc leaves them. */
		/* A group of its own: a timeout kills what the hook started too. */
		if (dup2(in[0], STDIN_FILENO) < 0 || setpgid(0, 0) < 0)
			_exit(127);
		/* Hooks run in the runtime's namespaces, the host's, as runc runs them. */
		oci_host_enter();
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		const char *argv0[] = { h->path, NULL };
		static const char *const no_env[] = { NULL };
		execve(h->path, (char *const *)(h->args && h->args[0] ? h->args : argv0),
		       (char *const *)(h->env ? h->env : no_env));
		_exit(127);
	}
	setpgid(pid, pid); /* the child does too: whichever comes first */
	close(in[0]);
	/* The state is small: the pipe holds it, and a hook that never reads is not waited for. */
	int fl = fcntl(in[1], F_GETFL);
	fcntl(in[1], F_SETFL, fl | O_NONBLOCK);
	if (write_all(in[1], state, strlen(state)) < 0 && errno != EPIPE && errno != EAGAIN) {
		/* the hook may exit without reading: that is its business */
	}
	close(in[1]);
	int pidfd = (int)sys_pidfd_open(pid, 0);
	int timeout_ms = h->timeout_s ? (int)h->timeout_s * 1000 : -1;
	bool timed_out = false;
	if (pidfd >= 0) {
		struct pollfd p = { .fd = pidfd, .events = POLLIN };
		int r;
		while ((r = poll(&p, 1, timeout_ms)) < 0 && errno == EINTR)
			;
		if (r == 0) {
			timed_out = true;
			kill(-pid, SIGKILL);
		}
		close(pidfd);
	}
	int status = 0;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (timed_out) {
		snprintf(why, size, "'%s' timed out after %u s", h->path, h->timeout_s);
		return -1;
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (WIFEXITED(status))
		snprintf(why, size, "'%s' exited with %d", h->path, WEXITSTATUS(status));
	else
		snprintf(why, size, "'%s' was killed by signal %d", h->path, WTERMSIG(status));
	return -1;
}

int oci_run_hooks(const capsule_oci_spec *spec, capsule_oci_hook_kind kind, const struct oci_state *st, char *failed,
		  size_t size)
{
	const capsule_oci_hook *hooks;
	size_t n = capsule_oci_spec_hooks(spec, kind, &hooks);
	if (!n)
		return 0;
	char *state = NULL;
	oci_state_json(st, false, &state);
	if (!state) {
		if (failed)
			snprintf(failed, size, "hooks.%s: out of memory", kind_names[kind]);
		return -1;
	}
	int rc = 0;
	for (size_t i = 0; i < n; i++) {
		char why[600];
		if (run_hook(&hooks[i], state, why, sizeof(why)) == 0)
			continue;
		/* prestart and createRuntime failures fail the create; poststart and poststop ones
		 * are warnings, as the spec asks. */
		if (failed) {
			snprintf(failed, size, "hooks.%s[%zu]: %s", kind_names[kind], i, why);
			rc = -1;
			break;
		}
		oci_warn("hooks.%s[%zu]: %s", kind_names[kind], i, why);
	}
	free(state);
	return rc;
}
