/* The shim's process: spawned as the caller's child (an ephemeral sandbox) or detached by a
 * double fork, waited for until it answers the start, reaped, and run as `capsule-shim
 * --cleanup` for what a killed one left behind. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "conn.h"
#include "home.h"
#include "proto.h"
#include "sandbox.h"
#include "sandbox_config.h"
#include "util.h"

/* The shim gets the socketpair end as fd 3 and the held lock as fd 4, nothing else of ours,
 * and a session of its own (a Ctrl-C at the caller's terminal is for the command, passed on
 * by the CLI, not for the shim). --unpin: started pinned to our CPU (cpu_pin_here), it takes
 * every CPU back first. */
static void shim_argv(const char *name, bool restore, bool unpin, char **argv)
{
	argv[0] = (char *)"capsule-shim";
	argv[1] = (char *)"--name";
	argv[2] = (char *)name;
	argv[3] = restore ? (char *)"--restore" : unpin ? (char *)"--unpin" : NULL;
	argv[4] = NULL;
}

/* An ephemeral sandbox's shim: one posix_spawn (a vfork underneath, the cheapest way to
 * start a process), and our child, reaped when the handle ends. */
static int spawn_shim_child(const char *shim_path, const char *name, int sock, int lockfd, pid_t *pid,
			    capsule_error *err)
{
	char *argv[5];
	extern char **environ;
	/* Through fresh numbers first, so that neither dup2 clobbers the other's source. */
	_cleanup_close_ int s2 = fcntl(sock, F_DUPFD_CLOEXEC, 10), l2 = fcntl(lockfd, F_DUPFD_CLOEXEC, 10);
	if (s2 < 0 || l2 < 0)
		return cap_err(err, errno, "dup");
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	posix_spawn_file_actions_init(&fa);
	posix_spawnattr_init(&attr);
	sigset_t none, all;
	sigemptyset(&none);
	sigfillset(&all);
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setsigdefault(&attr, &all);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
	posix_spawn_file_actions_adddup2(&fa, s2, 3);
	posix_spawn_file_actions_adddup2(&fa, l2, 4);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDWR, 0);
	posix_spawn_file_actions_adddup2(&fa, 0, 1);
	posix_spawn_file_actions_adddup2(&fa, 0, 2);
#ifdef __GLIBC__
	posix_spawn_file_actions_addclosefrom_np(&fa, 5);
#else
	/* musl has no closefrom action. The musl build that launches shims is the CLI
	 * (tools/musl-static-cc), a single thread whose own descriptors are all close-on-exec
	 * already: marking the rest (any it inherited) close-on-exec here closes them in the shim
	 * just the same. */
	int c = fds_cloexec_from(5);
	if (c < 0) {
		posix_spawn_file_actions_destroy(&fa);
		posix_spawnattr_destroy(&attr);
		return cap_err(err, -c, "marking descriptors close-on-exec");
	}
#endif
	/* posix_spawn waits for the shim's exec, on our CPU, which the shim then has at once:
	 * placed by fork balancing, it often waited behind whatever ran on the other. */
	bool pinned = cpu_pin_here(0);
	shim_argv(name, false, pinned, argv);
	int r = posix_spawn(pid, shim_path, &fa, &attr, argv, environ);
	if (pinned)
		cpu_unpin(0);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	if (r != 0)
		return cap_err(err, r, "starting '%s'", shim_path);
	return 0;
}

/* A detached sandbox's shim (and a pool's keeper, and a pool's sandboxes, whose shims the
 * keeper must never wait for) must outlive us without ever being our zombie: a double fork
 * hands it to init. Only async-signal-safe calls between fork and exec: the caller may be
 * multi-threaded (the Python SDK is). */
int spawn_helper_detached(const char *path, char *const argv[], int sock, int lockfd, capsule_error *err)
{
	extern char **environ;
	pid_t pid = fork();
	if (pid < 0)
		return cap_err(err, errno, "fork");
	if (pid == 0) {
		setsid();
		pid_t pid2 = fork();
		if (pid2 != 0)
			_exit(pid2 < 0 ? 1 : 0);
		/* Through fresh numbers first: dup2 onto the same number would keep O_CLOEXEC,
		 * and either fd may already sit on 3 or 4. */
		int s2 = fcntl(sock, F_DUPFD, 10), l2 = fcntl(lockfd, F_DUPFD, 10);
		if (s2 < 0 || l2 < 0 || dup2(s2, 3) < 0 || dup2(l2, 4) < 0)
			_exit(127);
		int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
		if (devnull >= 0) {
			dup2(devnull, 0);
			dup2(devnull, 1);
			dup2(devnull, 2);
		}
		/* Nothing else of the caller's may reach the shim (and through it the sandbox), even
		 * where a caller's seccomp filter refuses close_range. */
		if (fds_cloexec_from(5) < 0)
			_exit(127);
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		execve(path, argv, environ);
		_exit(127);
	}
	int st;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		return cap_err_plain(err, ECHILD, "starting '%s' failed", path);
	return 0;
}

static int spawn_shim_detached(const char *shim_path, const char *name, bool restore, int sock, int lockfd,
			       capsule_error *err)
{
	char *argv[5];
	shim_argv(name, restore, false, argv);
	return spawn_helper_detached(shim_path, argv, sock, lockfd, err);
}

void shim_reap(pid_t *child)
{
	if (*child <= 0)
		return;
	/* The shim exits promptly once its creator's socket is closed: it kills the sandbox and
	 * removes its cgroups, so when this returns the processes and cgroups are gone and the
	 * name is free; the folder, renamed run/.gone-NAME.PID, is deleted by PID a moment later
	 * (finish_ephemeral in the shim). ECHILD (the caller ignores SIGCHLD, or reaped it) is
	 * fine too. */
	while (waitpid(*child, NULL, 0) < 0 && errno == EINTR)
		;
	*child = 0;
}

/* Wait for the shim's verdict on the creator socket: HELLO, then OK or ERROR. */
static int await_ready(struct conn *c, const struct capsule_config *cfg, capsule_error *err)
{
	int timeout = (int)(cfg->boot_timeout_ms ? cfg->boot_timeout_ms : CAPSULE_DEFAULT_BOOT_TIMEOUT_MS) + 5000;
	bool got_hello = false;
	for (;;) {
		struct cp_header h;
		const uint8_t *payload;
		int r = conn_recv(c, &h, &payload, timeout, err);
		if (r < 0) {
			if (r == -ESHUTDOWN)
				return cap_err_plain(err, ECHILD, "capsule-shim exited during start (see its log)");
			return r;
		}
		if (h.type == CP_HELLO && !got_hello) {
			got_hello = true;
		} else if (h.type == CP_OK) {
			conn_consume(c, &h);
			return 0;
		} else if (h.type == CP_ERROR) {
			return conn_error_from_frame(payload, h.len, err);
		} else {
			return cap_err_plain(err, EPROTO, "unexpected %s from capsule-shim during start", cp_type_name(h.type));
		}
		conn_consume(c, &h);
	}
}

int shim_launch(const struct capsule_config *cfg, int lockfd, bool restore, struct conn *owner, pid_t *child,
		capsule_error *err)
{
	_cleanup_free_ char *shim = NULL;
	int r = find_helper("capsule-shim", &shim, err);
	if (r < 0)
		return r;
	int sp[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0)
		return cap_err(err, errno, "socketpair");
	/* A pool's sandbox is owned by the keeper's connection, but its shim outlives the keeper's
	 * interest in it once taken: the keeper must never wait for it. */
	if (cfg->detached || cfg->pool[0] || restore)
		r = spawn_shim_detached(shim, cfg->name, restore, sp[1], lockfd, err);
	else
		r = spawn_shim_child(shim, cfg->name, sp[1], lockfd, child, err);
	close(sp[1]);
	if (r < 0) {
		close(sp[0]);
		return r;
	}
	conn_adopt(owner, sp[0]);
	r = await_ready(owner, cfg, err);
	if (r < 0) {
		conn_close(owner);
		bool was_child = *child > 0;
		shim_reap(child);
		/* A shim killed during the start could not remove the cgroups it had made, and the
		 * folder that names them goes with this failure: they go now, while it is still there.
		 * (One that failed on its own removed them already: nothing to do then.) */
		if (was_child)
			shim_cleanup_run(config_cgroup_base(cfg));
		return r;
	}
	return 0;
}

void shim_cleanup_run(const char *name)
{
	_cleanup_free_ char *shim = NULL;
	if (find_helper("capsule-shim", &shim, NULL) < 0)
		return;
	char *const argv[] = { (char *)"capsule-shim", (char *)"--cleanup", (char *)"--name", (char *)name, NULL };
	extern char **environ;
	pid_t pid = fork();
	if (pid == 0) {
		execve(shim, argv, environ);
		_exit(127);
	}
	if (pid > 0)
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
}
