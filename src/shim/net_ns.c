/* The network's children in the sandbox's network namespace (docs/architecture.md, "Network"):
 * slirp4netns for the full mode, nft changing the egress rules (egress.c), and the socket
 * factory that makes the forwards' sockets and the DNS proxy's socket in there. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "net.h"
#include "parse.h"
#include "syscalls.h"
#include "util.h"

/* ---- children in the sandbox's network namespace -------------------------------------- */

/* In a child of the shim: enter the sandbox's network namespace (and, without root on the
 * host, its user namespace first, as its root: only it has CAP_NET_ADMIN there). */
static int enter_netns(const struct net *n)
{
	if (n->joined)
		return setns(n->joined_fd, CLONE_NEWNET) < 0 ? -errno : 0;
	if (n->rootless) {
		if (setns(n->ct->pidfd, CLONE_NEWUSER | CLONE_NEWNET) < 0 || setresgid(0, 0, 0) < 0 ||
		    setresuid(0, 0, 0) < 0)
			return -errno;
		return 0;
	}
	return setns(n->ct->pidfd, CLONE_NEWNET) < 0 ? -errno : 0;
}

/* Fork a child for FN: dies with the shim, signals unblocked for what it execs, every fd
 * but KEEP (moved to 3, 4, ...) closed. */
typedef int (*child_fn)(struct net *n, const int *fds, void *arg);

static pid_t spawn_child(struct net *n, int *keep, size_t nkeep, int stdin_fd, int stdout_fd, child_fn fn, void *arg)
{
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid != 0)
		return pid;
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	if (getppid() != parent)
		_exit(1);
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	signal(SIGPIPE, SIG_DFL);
	int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	int logfd = n->log ? fileno(n->log) : devnull;
	/* Out of the way of 0-2 and of the slots they move to. */
	int moved[8];
	for (size_t i = 0; i < nkeep; i++)
		moved[i] = fcntl(keep[i], F_DUPFD_CLOEXEC, 64);
	int in = stdin_fd >= 0 ? fcntl(stdin_fd, F_DUPFD_CLOEXEC, 64) : devnull;
	int outfd = stdout_fd >= 0 ? fcntl(stdout_fd, F_DUPFD_CLOEXEC, 64) : devnull;
	int errfd = fcntl(logfd, F_DUPFD_CLOEXEC, 64);
	dup2(in, 0);
	dup2(outfd, 1);
	dup2(errfd, 2);
	for (size_t i = 0; i < nkeep; i++) {
		dup2(moved[i], 3 + (int)i);
		keep[i] = 3 + (int)i;
	}
	int r = fn(n, keep, arg);
	_exit(r < 0 ? 1 : r);
}

/* The socket factory: a request byte N in, N new TCP sockets (made here, so they belong to
 * the sandbox's network namespace) back in one SCM_RIGHTS message, or an errno. */
static int factory_main(struct net *n, const int *fds, void *arg)
{
	(void)arg;
	int sock = fds[0];
	if (enter_netns(n) < 0 || fds_close_range(4, ~0U) < 0)
		return 1;
	for (;;) {
		unsigned char want;
		ssize_t k = recv(sock, &want, 1, 0);
		if (k <= 0)
			return 0;
		int made[NET_SOCKET_BATCH];
		size_t nmade = 0;
		int e = 0;
		if (want == 0) {
			/* The DNS proxy's socket (egress.c): a port below 1024 only this namespace's root
			 * may bind, so no command of the sandbox can take it first or share it. */
			struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(53) };
			inet_pton(AF_INET, NET_DNS_PROXY_ADDR, &a.sin_addr);
			int s = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
			if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof(a)) < 0)
				e = errno;
			else
				made[nmade++] = s;
		}
		while (nmade < want && nmade < NET_SOCKET_BATCH) {
			int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
			if (s < 0) {
				e = errno;
				break;
			}
			made[nmade++] = s;
		}
		char cbuf[CMSG_SPACE(sizeof(made))] = { 0 };
		struct iovec iov = { &e, sizeof(e) };
		struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
		if (nmade) {
			msg.msg_control = cbuf;
			msg.msg_controllen = CMSG_SPACE(nmade * sizeof(int));
			struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
			cm->cmsg_level = SOL_SOCKET;
			cm->cmsg_type = SCM_RIGHTS;
			cm->cmsg_len = CMSG_LEN(nmade * sizeof(int));
			memcpy(CMSG_DATA(cm), made, nmade * sizeof(int));
		}
		k = sendmsg(sock, &msg, MSG_NOSIGNAL);
		for (size_t i = 0; i < nmade; i++)
			close(made[i]);
		if (k < 0)
			return 1;
	}
}

static int factory_start(struct net *n, capsule_error *err)
{
	int sp[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) < 0)
		return cap_err(err, errno, "socketpair");
	int keep[1] = { sp[1] };
	pid_t pid = spawn_child(n, keep, 1, -1, -1, factory_main, NULL);
	int e = errno;
	close(sp[1]);
	if (pid < 0) {
		close(sp[0]);
		return cap_err(err, e, "fork");
	}
	n->factory_pid = pid;
	n->factory_fd = sp[0];
	return 0;
}

/* A new TCP socket in the sandbox's network namespace. They come from the factory in
 * batches, so that a connection does not wait for a round trip to another process. */
static int factory_ask(struct net *n, unsigned char want, int *fds, size_t *got, capsule_error *err)
{
	int r;
	if (n->factory_fd < 0 && (r = factory_start(n, err)) < 0)
		return r;
	if (send(n->factory_fd, &want, 1, MSG_NOSIGNAL) != 1)
		return cap_err(err, errno, "asking for a socket in the sandbox");
	struct pollfd p = { .fd = n->factory_fd, .events = POLLIN };
	if (poll(&p, 1, 5000) != 1)
		return cap_err_plain(err, ETIMEDOUT, "no socket from the sandbox's network namespace");
	int e = 0;
	char cbuf[CMSG_SPACE(NET_SOCKET_BATCH * sizeof(int))];
	struct iovec iov = { &e, sizeof(e) };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
	ssize_t k = recvmsg(n->factory_fd, &msg, MSG_CMSG_CLOEXEC);
	if (k != sizeof(e))
		return cap_err_plain(err, EPROTO, "the socket factory of the sandbox went away");
	struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
	if (!cm || cm->cmsg_type != SCM_RIGHTS)
		return cap_err(err, e ? e : EPROTO, "making a socket in the sandbox");
	*got = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
	if (*got > NET_SOCKET_BATCH)
		*got = NET_SOCKET_BATCH;
	memcpy(fds, CMSG_DATA(cm), *got * sizeof(int));
	return *got ? 0 : cap_err_plain(err, EPROTO, "the socket factory of the sandbox sent nothing");
}

int net_sandbox_socket(struct net *n, int *out, capsule_error *err)
{
	if (n->npool > 0) {
		*out = n->pool[--n->npool];
		return 0;
	}
	size_t got = 0;
	int r = factory_ask(n, NET_SOCKET_BATCH, n->pool, &got, err);
	if (r < 0)
		return r;
	n->npool = got - 1;
	*out = n->pool[got - 1];
	return 0;
}

int net_sandbox_dns_socket(struct net *n, int *out, capsule_error *err)
{
	int fds[NET_SOCKET_BATCH];
	size_t got = 0;
	int r = factory_ask(n, 0, fds, &got, err);
	if (r < 0)
		return r;
	for (size_t i = 1; i < got; i++)
		close(fds[i]);
	*out = fds[0];
	return 0;
}

/* slirp4netns from Debian, found on a fixed list of places: never a PATH the caller set. */
static const char *find_tool(const char *const *paths, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (access(paths[i], X_OK) == 0)
			return paths[i];
	return NULL;
}

/* fds: the ready pipe, the exit pipe; ARG: the path of slirp4netns. */
static int slirp_main(struct net *n, const int *fds, void *arg)
{
	char ready[32], exitfd[32], pid[32], userns[64];
	snprintf(ready, sizeof(ready), "--ready-fd=%d", fds[0]);
	snprintf(exitfd, sizeof(exitfd), "--exit-fd=%d", fds[1]);
	snprintf(pid, sizeof(pid), "%d", (int)n->ct->pid);
	snprintf(userns, sizeof(userns), "--userns-path=/proc/%d/ns/user", (int)n->ct->pid);
	char *argv[16];
	size_t i = 0;
	argv[i++] = (char *)"slirp4netns";
	argv[i++] = (char *)"--configure";
	argv[i++] = (char *)"--mtu=65520";
	argv[i++] = (char *)"--enable-sandbox";
	argv[i++] = (char *)"--enable-seccomp";
	argv[i++] = ready;
	argv[i++] = exitfd;
	if (n->rootless)
		argv[i++] = userns;
	argv[i++] = pid;
	argv[i++] = (char *)"tap0";
	argv[i] = NULL;
	for (int fd = 3; fd <= 4; fd++)
		fcntl(fd, F_SETFD, 0);
	if (fds_cloexec_from(5) < 0)
		return 127;
	char *envp[] = { (char *)"PATH=/usr/sbin:/usr/bin:/sbin:/bin", NULL };
	execve((const char *)arg, argv, envp);
	return 127;
}

static int slirp_start(struct net *n, uint64_t deadline_ms, capsule_error *err)
{
	static const char *const paths[] = { "/usr/bin/slirp4netns", "/usr/local/bin/slirp4netns", "/bin/slirp4netns" };
	const char *path = find_tool(paths, ARRAY_SIZE(paths));
	if (!path)
		return cap_err_plain(err, ENOENT, "--network full needs slirp4netns, which is not installed");
	int ready[2], ex[2];
	if (pipe2(ready, O_CLOEXEC) < 0)
		return cap_err(err, errno, "pipe");
	if (pipe2(ex, O_CLOEXEC) < 0) {
		int e = errno;
		close(ready[0]);
		close(ready[1]);
		return cap_err(err, e, "pipe");
	}
	int keep[2] = { ready[1], ex[0] };
	pid_t pid = spawn_child(n, keep, 2, -1, -1, slirp_main, (void *)path);
	int e = errno;
	close(ready[1]);
	close(ex[0]);
	if (pid < 0) {
		close(ready[0]);
		close(ex[1]);
		return cap_err(err, e, "fork");
	}
	n->slirp_pid = pid;
	n->slirp_exit_fd = ex[1];
	/* slirp4netns writes "1" once tap0 is up with its address and routes. */
	_cleanup_close_ int rfd = ready[0];
	uint64_t now = now_ms();
	struct pollfd p = { .fd = rfd, .events = POLLIN };
	int k = poll(&p, 1, deadline_ms > now ? (int)(deadline_ms - now) : 0);
	char c = 0;
	if (k != 1 || read(rfd, &c, 1) != 1 || c != '1')
		return cap_err_plain(err, EIO, "slirp4netns did not set up the sandbox's network%s (see shim.log)",
				     k == 0 ? " in time" : "");
	return 0;
}

/* ---- nft in the sandbox's namespace ------------------------------------------------------ */

struct nft_args {
	const char *path;
	bool json; /* `nft -j list ...` of the text's words, rather than `nft -f -` */
	const char *text;
};

static int nft_main(struct net *n, const int *fds, void *arg)
{
	(void)fds;
	const struct nft_args *a = arg;
	if (enter_netns(n) < 0)
		return 1;
	char words[256];
	char *argv[16] = { (char *)"nft", (char *)"-f", (char *)"-", NULL };
	if (a->json) {
		snprintf(words, sizeof(words), "%s", a->text);
		size_t i = 0;
		argv[i++] = (char *)"nft";
		argv[i++] = (char *)"-j";
		for (char *save = NULL, *w = strtok_r(words, " ", &save); w && i < 15; w = strtok_r(NULL, " ", &save))
			argv[i++] = w;
		argv[i] = NULL;
	}
	char *envp[] = { (char *)"PATH=/usr/sbin:/usr/bin:/sbin:/bin", NULL };
	execve(a->path, argv, envp);
	return 127;
}

int net_nft(struct net *n, const char *text, size_t len, char **out, capsule_error *err)
{
	static const char *const paths[] = { "/usr/sbin/nft", "/sbin/nft", "/usr/local/sbin/nft" };
	const char *path = find_tool(paths, ARRAY_SIZE(paths));
	if (!path)
		return cap_err_plain(err, ENOENT, "the sandbox's nftables rules (an egress allowlist, a vm's joined "
						  "network namespace) need nft, which is not installed");
	int p[2], o[2] = { -1, -1 };
	if (pipe2(p, O_CLOEXEC) < 0)
		return cap_err(err, errno, "pipe");
	if (out && pipe2(o, O_CLOEXEC) < 0) {
		int e = errno;
		close(p[0]);
		close(p[1]);
		return cap_err(err, e, "pipe");
	}
	struct nft_args args = { .path = path, .json = out != NULL, .text = text };
	pid_t pid = spawn_child(n, NULL, 0, p[0], o[1], nft_main, &args);
	int e = errno;
	close(p[0]);
	if (o[1] >= 0)
		close(o[1]);
	/* Our texts are far below a pipe's 64 KiB: the write cannot block. */
	write_all(p[1], text, len);
	close(p[1]);
	if (pid < 0) {
		if (o[0] >= 0)
			close(o[0]);
		return cap_err(err, e, "fork");
	}
	if (out) {
		/* What nft prints (a quota's JSON) is small; more than this is not from nft. */
		size_t cap = 16384, used = 0;
		char *buf = malloc(cap);
		ssize_t k = 0;
		while (buf && used + 1 < cap && ((k = read(o[0], buf + used, cap - 1 - used)) > 0 || (k < 0 && errno == EINTR)))
			used += k > 0 ? (size_t)k : 0;
		if (buf)
			buf[used] = '\0';
		*out = buf;
		close(o[0]);
	}
	int st;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		if (out) {
			free(*out);
			*out = NULL;
		}
		return cap_err_plain(err, EIO, "nft refused the sandbox's rules (see shim.log)");
	}
	return 0;
}

int net_start(struct net *n, const struct container *ct, bool rootless, uint64_t deadline_ms, capsule_error *err)
{
	n->ct = ct;
	n->rootless = rootless;
	int r;
	if (n->cfg->network == CAPSULE_NETWORK_FULL) {
		uint64_t t0 = now_ns();
		if ((r = slirp_start(n, deadline_ms, err)) < 0)
			return r;
		net_log(n, "slirp4netns pid %d up (%.1f ms)", (int)n->slirp_pid, (double)(now_ns() - t0) / 1e6);
		if ((r = egress_start(n, err)) < 0)
			return r;
	}
	net_arm_forwards(n);
	return 0;
}

