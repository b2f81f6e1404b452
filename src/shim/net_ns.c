/* The network's children in the sandbox's network namespace (docs/architecture.md, "Network"):
 * slirp4netns for the full mode, nft loading the egress allowlist, and the socket factory that
 * makes the forwards' sockets in there. */
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

static pid_t spawn_child(struct net *n, int *keep, size_t nkeep, int stdin_fd, child_fn fn, void *arg)
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
	int errfd = fcntl(logfd, F_DUPFD_CLOEXEC, 64);
	dup2(in, 0);
	dup2(devnull, 1);
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
	if (enter_netns(n) < 0)
		return 1;
	sys_close_range(4, ~0U, 0);
	for (;;) {
		unsigned char want;
		ssize_t k = recv(sock, &want, 1, 0);
		if (k <= 0)
			return 0;
		int made[NET_SOCKET_BATCH];
		size_t nmade = 0;
		int e = 0;
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
	pid_t pid = spawn_child(n, keep, 1, -1, factory_main, NULL);
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
int net_sandbox_socket(struct net *n, int *out, capsule_error *err)
{
	int r;
	if (n->npool > 0) {
		*out = n->pool[--n->npool];
		return 0;
	}
	if (n->factory_fd < 0 && (r = factory_start(n, err)) < 0)
		return r;
	unsigned char want = NET_SOCKET_BATCH;
	if (send(n->factory_fd, &want, 1, MSG_NOSIGNAL) != 1)
		return cap_err(err, errno, "asking for a socket in the sandbox");
	struct pollfd p = { .fd = n->factory_fd, .events = POLLIN };
	if (poll(&p, 1, 5000) != 1)
		return cap_err_plain(err, ETIMEDOUT, "no socket from the sandbox's network namespace");
	int e = 0;
	char cbuf[CMSG_SPACE(sizeof(n->pool))];
	struct iovec iov = { &e, sizeof(e) };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
	ssize_t k = recvmsg(n->factory_fd, &msg, MSG_CMSG_CLOEXEC);
	if (k != sizeof(e))
		return cap_err_plain(err, EPROTO, "the socket factory of the sandbox went away");
	struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
	if (!cm || cm->cmsg_type != SCM_RIGHTS)
		return cap_err(err, e ? e : EPROTO, "making a socket in the sandbox");
	size_t got = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
	memcpy(n->pool, CMSG_DATA(cm), got * sizeof(int));
	n->npool = got - 1;
	*out = n->pool[got - 1];
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
	sys_close_range(5, ~0U, 0);
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
	pid_t pid = spawn_child(n, keep, 2, -1, slirp_main, (void *)path);
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

/* ---- the egress allowlist -------------------------------------------------------------- */

static int nft_main(struct net *n, const int *fds, void *arg)
{
	(void)fds;
	const char *path = arg;
	if (enter_netns(n) < 0)
		return 1;
	char *argv[] = { (char *)"nft", (char *)"-f", (char *)"-", NULL };
	char *envp[] = { (char *)"PATH=/usr/sbin:/usr/bin:/sbin:/bin", NULL };
	execve(path, argv, envp);
	return 127;
}

static int allowlist_load(struct net *n, capsule_error *err)
{
	static const char *const paths[] = { "/usr/sbin/nft", "/sbin/nft", "/usr/local/sbin/nft" };
	const char *path = find_tool(paths, ARRAY_SIZE(paths));
	if (!path)
		return cap_err_plain(err, ENOENT, "an egress allowlist needs nft (nftables), which is not installed");
	char *rules = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&rules, &len);
	if (!f)
		return cap_err(err, ENOMEM, "allowlist rules");
	/* Only what leaves through the NAT is filtered: loopback (port forwards arrive there)
	 * and answers to allowed connections pass. Everything else is refused at once (a TCP
	 * reset, an ICMP error), so that a denied connect fails fast instead of hanging. */
	fprintf(f, "table inet capsule_egress {\n\tchain output {\n\t\ttype filter hook output priority 0; policy drop;\n"
		   "\t\toifname \"lo\" accept\n\t\tct state established,related accept\n");
	for (size_t i = 0; i < n->cfg->nallow; i++) {
		char rule[64];
		const struct egress_rule *e = &n->cfg->allow[i];
		egress_rule_format(e, rule, sizeof(rule));
		char *colon = strchr(rule, ':');
		if (colon)
			*colon = '\0';
		if (e->port)
			fprintf(f, "\t\tmeta l4proto { tcp, udp } ip daddr %s th dport %u accept\n", rule, e->port);
		else
			fprintf(f, "\t\tip daddr %s accept\n", rule);
	}
	fprintf(f, "\t\tmeta l4proto tcp reject with tcp reset\n\t\treject\n\t}\n}\n");
	fclose(f);
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0) {
		free(rules);
		return cap_err(err, errno, "pipe");
	}
	pid_t pid = spawn_child(n, NULL, 0, p[0], nft_main, (void *)path);
	close(p[0]);
	/* The rules are far below a pipe's 64 KiB: the write cannot block. */
	write_all(p[1], rules, len);
	close(p[1]);
	free(rules);
	if (pid < 0)
		return cap_err(err, errno, "fork");
	int st;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		return cap_err_plain(err, EIO, "loading the egress allowlist into the sandbox failed (nft: see shim.log)");
	net_log(n, "egress allowlist loaded (%zu entries)", n->cfg->nallow);
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
		if (n->cfg->nallow && (r = allowlist_load(n, err)) < 0)
			return r;
	}
	net_arm_forwards(n);
	return 0;
}

