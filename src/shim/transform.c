/* Transform mounts: the shim (root) makes the FUSE mount itself, with the new mount API, so
 * that capsule-fuse needs no mount rights and no setuid fusermount; the server gets the
 * connection and the host folder as fds and serves exactly that tree. */
#include <errno.h>
#include <stdint.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "child.h"
#include "syscalls.h"
#include "transform.h"
#include "util.h"

#ifndef FSOPEN_CLOEXEC
#define FSOPEN_CLOEXEC 0x00000001
#endif
#ifndef FSMOUNT_CLOEXEC
#define FSMOUNT_CLOEXEC 0x00000001
#endif

static int fuse_fs_config(int fsfd, int fusefd, const char *target, capsule_error *err)
{
	char fdstr[16];
	snprintf(fdstr, sizeof(fdstr), "%d", fusefd);
	/* allow_other: the sandbox's users are not the mount's owner; default_permissions: the
	 * kernel checks modes and owners as the server reports them, so the server need not. */
	static const char *const flags[] = { "allow_other", "default_permissions" };
	const char *const strings[][2] = {
		{ "source", "capsule-transform" }, { "subtype", "capsule" }, { "fd", fdstr },
		{ "rootmode", "40000" }, { "user_id", "0" }, { "group_id", "0" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(strings); i++)
		if (sys_fsconfig(fsfd, FSCONFIG_SET_STRING, strings[i][0], strings[i][1], 0) < 0)
			return cap_err(err, errno, "transform mount at '%s': fsconfig %s", target, strings[i][0]);
	for (size_t i = 0; i < ARRAY_SIZE(flags); i++)
		if (sys_fsconfig(fsfd, FSCONFIG_SET_FLAG, flags[i], NULL, 0) < 0)
			return cap_err(err, errno, "transform mount at '%s': fsconfig %s", target, flags[i]);
	if (sys_fsconfig(fsfd, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
		return cap_err(err, errno, "transform mount at '%s': creating the FUSE filesystem", target);
	return 0;
}

/* Move FD to exactly TO in a freshly forked child (clearing close-on-exec). */
static void child_fd(int fd, int to)
{
	if (fd == to) {
		fcntl(fd, F_SETFD, 0);
		return;
	}
	if (dup2(fd, to) < 0)
		_exit(127);
}

static int spawn_server(const char *helper, const struct bind_mount *b, const struct transform_ids *ids, int fusefd,
			int rootfd, int ctlfd, int log_fd, pid_t *pid_out)
{
	char ub[24], gb[24], hub[24], hgb[24], cnt[24];
	snprintf(ub, sizeof(ub), "%u", (unsigned)ids->uid_base);
	snprintf(gb, sizeof(gb), "%u", (unsigned)ids->gid_base);
	snprintf(hub, sizeof(hub), "%u", (unsigned)ids->host_uid_base);
	snprintf(hgb, sizeof(hgb), "%u", (unsigned)ids->host_gid_base);
	snprintf(cnt, sizeof(cnt), "%u", ids->count);
	char *argv[] = { "capsule-fuse", "--plugin", b->transform, "--target", b->target, "--uid-base", ub,
			 "--gid-base", gb, "--host-uid-base", hub, "--host-gid-base", hgb, "--id-count", cnt,
			 b->readonly ? "--readonly" : NULL, NULL };
	/* A clean environment; a sanitized build's report settings pass, so that the server's
	 * reports land where the test harness looks. */
	char *envp[8] = { "PATH=/usr/sbin:/usr/bin:/sbin:/bin" };
	size_t nenv = 1;
	static const char *const keep[] = { "ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS" };
	for (size_t i = 0; i < ARRAY_SIZE(keep); i++) {
		const char *v = getenv(keep[i]);
		if (v)
			envp[nenv++] = (char *)(v - strlen(keep[i]) - 1);
	}
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		shim_child_prepare(parent);
		/* Park the three above any number they are to take, then place them. */
		int f = fcntl(fusefd, F_DUPFD, 10), r = fcntl(rootfd, F_DUPFD, 10), c = fcntl(ctlfd, F_DUPFD, 10);
		int l = log_fd >= 0 ? fcntl(log_fd, F_DUPFD, 10) : open("/dev/null", O_WRONLY);
		int nul = open("/dev/null", O_RDWR);
		if (f < 0 || r < 0 || c < 0 || l < 0 || nul < 0)
			_exit(127);
		child_fd(nul, 0);
		child_fd(nul, 1);
		child_fd(l, 2);
		child_fd(f, 3);
		child_fd(r, 4);
		child_fd(c, 5);
		int cr = fds_cloexec_from(6);
		if (cr < 0) {
			dprintf(5, "ERR %d closing fds: %s\n", -cr, strerror(-cr));
			_exit(127);
		}
		execve(helper, argv, envp);
		dprintf(5, "ERR %d exec '%s': %s\n", errno, helper, strerror(errno));
		_exit(127);
	}
	*pid_out = pid;
	return 0;
}

/* "OK\n" or "ERR <errno> <message>\n" from the server, within the deadline. */
static int server_answer(int ctl, const char *target, uint64_t deadline, capsule_error *err)
{
	char line[700];
	size_t len = 0;
	while (len < sizeof(line) - 1 && !memchr(line, '\n', len)) {
		uint64_t now = now_ms();
		if (now >= deadline)
			return cap_err_plain(err, ETIMEDOUT, "transform mount at '%s': capsule-fuse did not start in time", target);
		struct pollfd p = { .fd = ctl, .events = POLLIN };
		int n = poll(&p, 1, (int)(deadline - now));
		if (n < 0 && errno != EINTR)
			return cap_err(err, errno, "poll");
		if (n <= 0)
			continue;
		ssize_t k = read(ctl, line + len, sizeof(line) - 1 - len);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			break;
		len += (size_t)k;
	}
	line[len] = '\0';
	char *nl = strchr(line, '\n');
	if (nl)
		*nl = '\0';
	if (!strcmp(line, "OK"))
		return 0;
	int e = 0, off = 0;
	if (sscanf(line, "ERR %d %n", &e, &off) == 1 && off > 0 && e > 0)
		return cap_err_plain(err, e, "%s", line + off);
	return cap_err_plain(err, EIO, "transform mount at '%s': capsule-fuse exited before serving", target);
}

int transform_mount_open(const struct bind_mount *b, int source_fd, const struct transform_ids *ids,
			 uint32_t timeout_ms, int log_fd, int *tree, struct transform_server *srv, capsule_error *err)
{
	memset(srv, 0, sizeof(*srv));
	srv->pidfd = -1;
	snprintf(srv->target, sizeof(srv->target), "%s", b->target);
	if (geteuid() != 0)
		return cap_err_plain(err, EPERM, "transform mount at '%s': FUSE transform mounts need a root caller",
				     b->target);
	_cleanup_free_ char *helper = NULL;
	int r = find_helper("capsule-fuse", &helper, err);
	if (r < 0)
		return r;
	/* The folder is opened here, with the rights of whoever made the sandbox; the server
	 * gets this fd and never a path. */
	_cleanup_close_ int rootfd = source_fd >= 0 ? fcntl(source_fd, F_DUPFD_CLOEXEC, 3)
						    : open(b->source, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0)
		return cap_err(err, errno, "mount source '%s'", b->source);
	_cleanup_close_ int fusefd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
	if (fusefd < 0)
		return cap_err(err, errno, "transform mount at '%s': open '/dev/fuse'", b->target);
	_cleanup_close_ int fsfd = sys_fsopen("fuse", FSOPEN_CLOEXEC);
	if (fsfd < 0)
		return cap_err(err, errno, "transform mount at '%s': fsopen fuse", b->target);
	if ((r = fuse_fs_config(fsfd, fusefd, b->target, err)) < 0)
		return r;
	_cleanup_close_ int mnt = sys_fsmount(fsfd, FSMOUNT_CLOEXEC, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV |
								    (b->readonly ? MOUNT_ATTR_RDONLY : 0));
	if (mnt < 0)
		return cap_err(err, errno, "transform mount at '%s': fsmount", b->target);

	int sp[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0)
		return cap_err(err, errno, "socketpair");
	pid_t pid = 0;
	r = spawn_server(helper, b, ids, fusefd, rootfd, sp[1], log_fd, &pid);
	close(sp[1]);
	if (r < 0) {
		close(sp[0]);
		return cap_err(err, -r, "transform mount at '%s': starting capsule-fuse", b->target);
	}
	srv->pid = pid;
	srv->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	/* Only the server may hold the connection: if it dies, the kernel must see the
	 * connection end and fail the sandbox's I/O, not leave it waiting on our copy. */
	close(take_fd(fusefd));

	/* The config may be a key: it goes over the socket, never on a command line. */
	const char *cfg = b->transform_config ? b->transform_config : "";
	r = write_all(sp[0], cfg, strlen(cfg));
	shutdown(sp[0], SHUT_WR);
	if (r < 0)
		r = cap_err_plain(err, EIO, "transform mount at '%s': capsule-fuse exited before serving", b->target);
	else
		r = server_answer(sp[0], b->target, now_ms() + timeout_ms, err);
	close(sp[0]);
	if (r < 0) {
		transform_server_reap(srv, true, NULL);
		return r;
	}
	*tree = take_fd(mnt);
	return 0;
}

bool transform_server_reap(struct transform_server *srv, bool force, int *status)
{
	if (srv->pid <= 0)
		return true;
	if (force) {
		if (srv->pidfd >= 0)
			sys_pidfd_send_signal(srv->pidfd, SIGKILL);
		else
			kill(srv->pid, SIGKILL);
	}
	int st = 0;
	pid_t p;
	do
		p = waitpid(srv->pid, &st, force ? 0 : WNOHANG);
	while (p < 0 && errno == EINTR);
	if (p == 0)
		return false;
	if (status)
		*status = st;
	srv->pid = 0;
	if (srv->pidfd >= 0)
		close(srv->pidfd);
	srv->pidfd = -1;
	return true;
}
