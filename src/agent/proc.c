#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <limits.h>
#include <pthread.h>
#include <linux/capability.h>
#include <linux/close_range.h>
#include <linux/futex.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "util.h"

/* ---- spawning --------------------------------------------------------------------------- */

/* A sandbox of a user without subordinate ids maps one id and denies setgroups (the kernel's
 * rule for an unprivileged map): commands then keep the groups they have, which are nobody's
 * inside. */
static bool setgroups_denied(void)
{
	char buf[8] = "";
	int fd = open("/proc/self/setgroups", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	return n >= 4 && !strncmp(buf, "deny", 4);
}

/* Why a command did not reach its exec. The child shares the agent's memory and its parent
 * sleeps until it has exec'd or exited (CLONE_VM|CLONE_VFORK), so it writes this in the
 * parent's memory, which the parent reads when clone returns: no status pipe to make, close
 * and read for every command. Nothing written means the exec was made. */
struct spawn_failure {
	bool failed;
	int errnum;
	char message[480];
};

static _Noreturn void child_fail(struct spawn_failure *f, int errnum, const char *fmt, ...) _printf_(3, 4);
static _Noreturn void child_fail(struct spawn_failure *f, int errnum, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(f->message, sizeof(f->message), fmt, ap);
	va_end(ap);
	f->errnum = errnum;
	f->failed = true;
	_exit(127);
}

static const char *env_lookup(char **envp, const char *key)
{
	size_t kl = strlen(key);
	for (size_t i = 0; envp && envp[i]; i++)
		if (strncmp(envp[i], key, kl) == 0 && envp[i][kl] == '=')
			return envp[i] + kl + 1;
	return NULL;
}

/* execvpe() searches the PATH of the calling process, and the agent has no environment of
 * its own; the command's PATH is the one that counts. */
static int exec_search(char *const *argv, char **envp)
{
	const char *file = argv[0];
	if (strchr(file, '/')) {
		execve(file, argv, envp);
		return -errno;
	}
	const char *path = env_lookup(envp, "PATH");
	if (!path)
		path = "/usr/local/bin:/usr/bin:/bin";
	int saved = -ENOENT;
	char buf[PATH_MAX];
	const char *p = path;
	for (;;) {
		const char *colon = strchr(p, ':');
		size_t dl = colon ? (size_t)(colon - p) : strlen(p);
		int n = snprintf(buf, sizeof(buf), "%.*s%s%s", (int)dl, p, dl ? "/" : "", file);
		if (n > 0 && (size_t)n < sizeof(buf)) {
			execve(buf, argv, envp);
			if (errno == EACCES || errno == ENOEXEC || errno == EPERM)
				saved = -errno;
			else if (errno != ENOENT && errno != ENOTDIR && saved == -ENOENT)
				saved = -errno;
		}
		if (!colon)
			break;
		p = colon + 1;
	}
	return saved;
}

/* The highest capability this kernel knows, read once (before any fork). */
static int cap_last_cap(void)
{
	static int last = -1;
	if (last < 0) {
		char *text = NULL;
		if (read_file_at(AT_FDCWD, "/proc/sys/kernel/cap_last_cap", 64, &text, NULL) == 0)
			last = atoi(text);
		free(text);
		if (last <= 0 || last > 63)
			last = 63;
	}
	return last;
}

/* Cut the bounding set to KEEP, dropping only the capabilities in HAVE (what it holds now):
 * each drop is a credentials change of its own, about a microsecond apiece here. */
static int drop_capabilities(uint64_t keep, uint64_t have, int last)
{
	/* The bounding set first: dropping from it needs CAP_SETPCAP, which we still have. */
	for (int cap = 0; cap <= last; cap++) {
		if ((keep & (1ull << cap)) || !(have & (1ull << cap)))
			continue;
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
			return -errno;
	}
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
		return -errno;
	return 0;
}

static int set_capabilities(uint64_t caps, uint64_t inheritable, uint64_t ambient, int last)
{
	struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
	struct __user_cap_data_struct data[2];
	memset(data, 0, sizeof(data));
	data[0].effective = data[0].permitted = (uint32_t)caps;
	data[1].effective = data[1].permitted = (uint32_t)(caps >> 32);
	data[0].inheritable = (uint32_t)inheritable;
	data[1].inheritable = (uint32_t)(inheritable >> 32);
	if (syscall(SYS_capset, &hdr, data) < 0)
		return -errno;
	/* An ambient capability must be permitted and inheritable already. */
	for (int cap = 0; cap <= last; cap++)
		if ((ambient & (1ull << cap)) && prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0) < 0)
			return -errno;
	return 0;
}

static int open_pty(int *master_out, char *slave_name, size_t slave_len)
{
	int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (master < 0)
		return -errno;
	if (grantpt(master) < 0 || unlockpt(master) < 0 || ptsname_r(master, slave_name, slave_len) != 0) {
		int e = errno;
		close(master);
		return -e;
	}
	*master_out = master;
	return 0;
}

struct spawn_ctx {
	const struct spawn_request *req;
	const char *slave_name;
	int in_rd, out_wr, err_wr;
	struct spawn_failure *failure;
	int last_cap;
	/* The agent's oom_score_adj was the one asked for just before the clone, which the
	 * command inherits: no write of its own then. */
	bool oom_inherited;
	/* Cloned from the spawner thread: no_new_privs, the seccomp filter and a bounding set
	 * of req->cap_keep are inherited, not set up again. */
	bool confined;
	/* Cloned while its parent was pinned to its CPU (clone_here): the child unpins first. */
	bool unpin;
};


/* capsule's own filter first, then the process's: the kernel runs every filter and takes the
 * strictest answer, so the second can narrow the first, never widen it. */
static void install_filters(const struct spawn_ctx *ctx, struct spawn_failure *ep)
{
	const struct {
		const uint8_t *bpf;
		size_t len;
	} filters[] = { { ctx->req->seccomp_bpf, ctx->req->seccomp_len }, { ctx->req->seccomp2_bpf, ctx->req->seccomp2_len } };
	/* From the spawner, capsule's own filter is already there (inherited): only the
	 * process's own is added. */
	for (size_t i = ctx->confined ? 1 : 0; i < 2; i++) {
		if (!filters[i].len)
			continue;
		struct sock_fprog prog = {
			.len = (unsigned short)(filters[i].len / sizeof(struct sock_filter)),
			.filter = (struct sock_filter *)filters[i].bpf,
		};
		if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0)
			child_fail(ep, errno, "installing the %s seccomp filter: %s", i ? "process's" : "sandbox's",
				   strerror(errno));
	}
}

/* The command's side, between clone and exec. It runs on its own stack in the agent's
 * memory (CLONE_VM|CLONE_VFORK: no page tables to copy, which a fork of even a small
 * process pays on every command), so it touches nothing of the agent's but through
 * syscalls, and leaves only by execve or _exit. */
static int spawn_child(void *arg)
{
	const struct spawn_ctx *ctx = arg;
	struct spawn_failure *ep = ctx->failure;
	/* First, before any filter of the process's own could refuse it; capsule's allows it. */
	if (ctx->unpin && cpu_unpin(0) < 0)
		child_fail(ep, errno, "sched_setaffinity: %s", strerror(errno));
	/* The agent ignores SIGPIPE and blocks what its signalfd reads; it has no handlers.
	 * An ignored signal stays ignored across exec, so that one is reset by hand. */
	sigset_t none;
	sigemptyset(&none);
	signal(SIGPIPE, SIG_DFL);
	sigprocmask(SIG_SETMASK, &none, NULL);
	if (setsid() < 0)
		child_fail(ep, errno, "setsid: %s", strerror(errno));

	int fd0, fd1, fd2;
	if (ctx->req->detach) {
		fd0 = fd1 = fd2 = openat(AT_FDCWD, "/dev/null", O_RDWR | O_CLOEXEC);
		if (fd0 < 0)
			child_fail(ep, errno, "open '/dev/null': %s", strerror(errno));
	} else if (ctx->req->tty || ctx->req->console) {
		/* Opened without O_NOCTTY by a fresh session leader: it becomes our controlling tty,
		 * so job control and ctrl-c work on a console as on a pty. */
		const char *name = ctx->req->console ? ctx->req->console : ctx->slave_name;
		int slave = openat(AT_FDCWD, name, O_RDWR | O_CLOEXEC);
		if (slave < 0)
			child_fail(ep, errno, "open '%s': %s", name, strerror(errno));
		if (ioctl(slave, TIOCSCTTY, 0) < 0)
			child_fail(ep, errno, "TIOCSCTTY: %s", strerror(errno));
		fd0 = fd1 = fd2 = slave;
	} else {
		fd0 = ctx->req->stdin_open ? ctx->in_rd : openat(AT_FDCWD, "/dev/null", O_RDONLY | O_CLOEXEC);
		if (fd0 < 0)
			child_fail(ep, errno, "open '/dev/null': %s", strerror(errno));
		fd1 = ctx->out_wr;
		fd2 = ctx->err_wr;
	}
	/* dup2 clears O_CLOEXEC on the copies. */
	int top = 3 + (int)ctx->req->nfds;
	/* The passed descriptors to 3, 4, ...: each first to a copy above TOP, so that placing one
	 * (or stdio) never closes another not placed yet (the agent's numbers for them may be
	 * anywhere, 3..TOP-1 included). The copies are close-on-exec; the placed ones are not. */
	int above[CP_EXEC_MAX_FDS];
	for (size_t i = 0; i < ctx->req->nfds; i++)
		if ((above[i] = fcntl(ctx->req->fds[i], F_DUPFD_CLOEXEC, top)) < 0)
			child_fail(ep, errno, "passing descriptor %zu: %s", i + 3, strerror(errno));
	if (dup2(fd0, 0) < 0 || dup2(fd1, 1) < 0 || dup2(fd2, 2) < 0)
		child_fail(ep, errno, "dup2: %s", strerror(errno));
	for (size_t i = 0; i < ctx->req->nfds; i++)
		if (dup2(above[i], 3 + (int)i) < 0)
			child_fail(ep, errno, "passing descriptor %zu: %s", i + 3, strerror(errno));
	/* Nothing else of the agent's may reach the command: no fd, and so no path back out.
	 * Before the process's own seccomp filter (which may refuse close_range or fcntl) and
	 * while still root (after a change of uid, /proc/self/fd is no longer ours to read). */
	int cr = fds_cloexec_from((unsigned)top);
	if (cr < 0)
		child_fail(ep, -cr, "closing the agent's file descriptors: %s", strerror(-cr));

	/* The command's oom_score_adj is the one asked for, whatever the agent's is now: the
	 * sandbox's root may have raised the agent's (its /proc files are that root's). */
	int oom = ctx->oom_inherited ? -1 : openat(AT_FDCWD, "/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
	if (oom >= 0) {
		char adj[8];
		int an = snprintf(adj, sizeof(adj), "%d", ctx->req->oom_score_adj);
		if (write(oom, adj, (size_t)an) < 0 && ctx->req->oom_score_adj)
			child_fail(ep, errno, "oom_score_adj %d: %s", ctx->req->oom_score_adj, strerror(errno));
		close(oom);
	}
	if (ctx->req->umask >= 0)
		umask((mode_t)ctx->req->umask);
	const char *cwd = ctx->req->cwd ? ctx->req->cwd : "/";
	if (chdir(cwd) < 0)
		child_fail(ep, errno, "working directory '%s': %s", cwd, strerror(errno));

	/* Without no_new_privs a filter needs CAP_SYS_ADMIN (the user namespace's, which the agent
	 * holds): so they go on now, as runc installs them, and what follows runs under them
	 * (capsule's allows every call below; a process's own filter that denies them fails
	 * here, as under runc). */
	if (ctx->req->new_privs)
		install_filters(ctx, ep);
	/* A user other than root keeps none, unless its request names its set (an OCI process):
	 * then it keeps that set across the change of uid, as runc's processes do. */
	bool keep = ctx->req->uid == 0 || ctx->req->caps_explicit;
	uint64_t have = ctx->confined ? ctx->req->cap_keep : ~0ull;
	cr = drop_capabilities(keep ? ctx->req->cap_keep : 0, have, ctx->last_cap);
	if (cr < 0)
		child_fail(ep, -cr, "dropping capabilities: %s", strerror(-cr));
	if (ctx->req->uid != 0 && keep && prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0)
		child_fail(ep, errno, "keepcaps: %s", strerror(errno));
	/* Raw system calls: libc's set*id() signal every thread of the process to change them
	 * all, and this child shares the agent's memory and thread list, so libc would take the
	 * agent's threads for its own. The kernel's calls change this task alone. */
	if (syscall(SYS_setgroups, ctx->req->ngroups, ctx->req->groups) < 0 && !(errno == EPERM && setgroups_denied()))
		child_fail(ep, errno, "setgroups: %s", strerror(errno));
	if (syscall(SYS_setresgid, ctx->req->gid, ctx->req->gid, ctx->req->gid) < 0)
		child_fail(ep, errno, "setgid %u: %s", (unsigned)ctx->req->gid, strerror(errno));
	if (syscall(SYS_setresuid, ctx->req->uid, ctx->req->uid, ctx->req->uid) < 0)
		child_fail(ep, errno, "setuid %u: %s", (unsigned)ctx->req->uid, strerror(errno));
	if (keep &&
	    (cr = set_capabilities(ctx->req->cap_keep, ctx->req->cap_inheritable, ctx->req->cap_ambient, ctx->last_cap)) < 0)
		child_fail(ep, -cr, "capset: %s", strerror(-cr));
	if (!ctx->confined && !ctx->req->new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		child_fail(ep, errno, "no_new_privs: %s", strerror(errno));
	for (size_t i = 0; i < ctx->req->nrlimits; i++) {
		const struct cp_rlimit *l = &ctx->req->rlimits[i];
		struct rlimit rl = { .rlim_cur = l->soft, .rlim_max = l->hard };
		if (syscall(SYS_prlimit64, 0, l->resource, &rl, NULL) < 0)
			child_fail(ep, errno, "setting rlimit %u to %llu/%llu: %s", l->resource,
				   (unsigned long long)l->soft, (unsigned long long)l->hard, strerror(errno));
	}
	if (!ctx->req->new_privs)
		install_filters(ctx, ep);
	int er = exec_search(ctx->req->argv, ctx->req->envp);
	if (er == -ENOENT)
		child_fail(ep, ENOENT, "exec '%s': executable file not found in $PATH", ctx->req->argv[0]);
	child_fail(ep, -er, "exec '%s': %s", ctx->req->argv[0], strerror(-er));
}

/* ---- the spawner thread --------------------------------------------------------------- */

/* Installing the seccomp filter (about 1000 instructions, checked and compiled by the kernel
 * at each install) and cutting the bounding set cost about a third of a bare spawn per
 * command. Both are inherited by clone: so one thread of the agent takes them on once, with
 * no_new_privs, and every command is cloned from it. The agent's main thread keeps neither
 * (it mounts, and runs what commands may not). The command still gets the same filter, the
 * same bounding set, no_new_privs, and drops the rest itself as before. */
static struct {
	int state;                /* 0: not started, 1: serving, -1: failed (commands set up alone) */
	const uint8_t *bpf;       /* the filter and capabilities it carries: INIT's */
	size_t bpf_len;
	uint64_t keep;
	int last_cap;
	int ready;                /* futex words: set by the thread at setup end */
	int posted;               /* set by the main thread with a request in ctx */
	int done;                 /* set by the thread with the answer in pid */
	struct spawn_ctx *ctx;
	long pid;                 /* the clone's result: a pid or -errno */
	bool unpin;               /* made on the main thread's CPU: spawner_main unpins */
	uint8_t *stack;
} SP;

static uint8_t child_stack[256 * 1024] __attribute__((aligned(16)));

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

/* Under ASan, a child's frames poison their redzones in the shadow memory it shares with us,
 * and a child that execs never unpoisons them: the next child, on the same stack with other
 * frames (a command cloned from here rather than from the spawner), would trip over them. */
static uint8_t *child_stack_top(void)
{
#if defined(__SANITIZE_ADDRESS__)
	ASAN_UNPOISON_MEMORY_REGION(child_stack, sizeof(child_stack));
#endif
	return child_stack + sizeof(child_stack);
}

static int spawn_child(void *arg);

static void futex_wait(int *w)
{
	while (__atomic_load_n(w, __ATOMIC_ACQUIRE) == 0)
		syscall(SYS_futex, w, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
}

static void futex_post(int *w)
{
	__atomic_store_n(w, 1, __ATOMIC_RELEASE);
	syscall(SYS_futex, w, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

/* clone(CLONE_VM|CLONE_VFORK) on this thread's CPU. The kernel places a new task by fork
 * balancing, which on a small machine often picks the other CPU, busy with the shim, the
 * caller or anything else, while this one idles: the parent is suspended until the child
 * execs. A first command then waited 0.4 to 4 ms to run (docs/performance.md, coldwait28).
 * So the thread pins itself to its CPU for the clone, where its child then runs at once, and
 * both take every CPU back (the child in spawn_child), which the cpuset narrows as before.
 * (The main thread pinning the spawner to its own CPU with each request, so that it ran there
 * while the main thread waited, was measured too: no better.) */
static long clone_here(struct spawn_ctx *ctx)
{
	ctx->unpin = cpu_pin_here(0);
	long pid = clone(spawn_child, child_stack_top(), CLONE_VM | CLONE_VFORK | SIGCHLD, ctx);
	int e = errno;
	if (ctx->unpin)
		cpu_unpin(0);
	return pid < 0 ? -e : pid;
}

static void *spawner_main(void *arg)
{
	(void)arg;
	if (SP.unpin)
		cpu_unpin(0);
	int ok = drop_capabilities(SP.keep, ~0ull, SP.last_cap) == 0 && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0;
	if (ok && SP.bpf_len) {
		struct sock_fprog prog = { .len = (unsigned short)(SP.bpf_len / sizeof(struct sock_filter)),
					   .filter = (struct sock_filter *)SP.bpf };
		ok = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) == 0;
	}
	SP.state = ok ? 1 : -1;
	futex_post(&SP.ready);
	if (!ok)
		return NULL;
	for (;;) {
		futex_wait(&SP.posted);
		__atomic_store_n(&SP.posted, 0, __ATOMIC_RELAXED);
		SP.pid = clone_here(SP.ctx);
		futex_post(&SP.done);
	}
}

/* Start the spawner for a filter and capabilities, once. Its signals stay blocked: they are
 * the main thread's to read from its signalfd. */
static void spawner_start(const uint8_t *bpf, size_t bpf_len, uint64_t keep, int last_cap)
{
	SP.state = -1;
	SP.bpf = bpf;
	SP.bpf_len = bpf_len;
	SP.keep = keep;
	SP.last_cap = last_cap;
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pthread_attr_t attr;
	pthread_t t;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 64 * 1024);
	/* We only wait for it: it starts on our CPU, as a command does (clone_here says why). */
	SP.unpin = cpu_pin_here(0);
	int made = pthread_create(&t, &attr, spawner_main, NULL);
	if (SP.unpin)
		cpu_unpin(0);
	if (made == 0)
		futex_wait(&SP.ready);
	pthread_attr_destroy(&attr);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

static int agent_oom_fd = -2;

/* Opened with the spawner at INIT, so that the agent's descriptors are the same before and
 * after its first command (tests/security count them); at the first spawn failing that. */
static void agent_oom_open(void)
{
	if (agent_oom_fd == -2)
		agent_oom_fd = openat(AT_FDCWD, "/proc/self/oom_score_adj", O_RDONLY | O_CLOEXEC);
}

void agent_spawner_prepare(const uint8_t *bpf, size_t bpf_len, uint64_t keep)
{
	agent_oom_open();
	if (SP.state == 0)
		spawner_start(bpf, bpf_len, keep, cap_last_cap());
}

/* Clone the command from the spawner when it carries REQ's confinement, else from here. */
static long spawn_clone(struct spawn_ctx *ctx)
{
	const struct spawn_request *req = ctx->req;
	if (SP.state == 0)
		spawner_start(req->seccomp_bpf, req->seccomp_len, req->cap_keep, ctx->last_cap);
	/* The spawner has no_new_privs, which its clones cannot shed. */
	ctx->confined = SP.state == 1 && req->seccomp_bpf == SP.bpf && req->seccomp_len == SP.bpf_len &&
			req->cap_keep == SP.keep && !req->new_privs;
	if (!ctx->confined)
		return clone_here(ctx);
	SP.ctx = ctx;
	__atomic_store_n(&SP.done, 0, __ATOMIC_RELAXED);
	futex_post(&SP.posted);
	futex_wait(&SP.done);
	return SP.pid;
}

/* Whether the agent's oom_score_adj is WANT now. A command inherits the agent's at its clone,
 * and it is nearly always the value asked for (0, the floor the shim set), so the command's
 * own open of /proc/self/oom_score_adj, a path walk through /proc for a new process, its
 * write and its close (about 10 us) are saved by a read through a descriptor the agent keeps.
 * Should the sandbox's root change the agent's between this read and the clone, the command
 * starts with that value: one that root could give the command itself a moment later. */
static bool agent_oom_is(int want)
{
	agent_oom_open();
	char buf[16];
	ssize_t n = agent_oom_fd >= 0 ? pread(agent_oom_fd, buf, sizeof(buf) - 1, 0) : -1;
	if (n <= 0)
		return false;
	buf[n] = '\0';
	char *end;
	long v = strtol(buf, &end, 10);
	return end != buf && (*end == '\n' || *end == '\0') && v == want;
}

int agent_spawn(const struct spawn_request *req, struct spawn_result *res, char *errbuf, size_t errlen)
{
	int in_pipe[2] = { -1, -1 }, out_pipe[2] = { -1, -1 }, err_pipe[2] = { -1, -1 };
	int master = -1;
	char slave_name[128] = "";
	int r = 0;

	res->pid = -1;
	res->stdin_fd = res->stdout_fd = res->stderr_fd = -1;
	int last_cap = cap_last_cap();

	if (req->detach || req->console) {
		/* no streams at all: a console's child opens its terminal itself */
	} else if (req->tty) {
		if ((r = open_pty(&master, slave_name, sizeof(slave_name))) < 0) {
			snprintf(errbuf, errlen, "allocating a pseudo-terminal: %s", strerror(-r));
			goto fail;
		}
		struct winsize ws = { .ws_row = req->rows ? req->rows : 24, .ws_col = req->cols ? req->cols : 80 };
		ioctl(master, TIOCSWINSZ, &ws);
	} else {
		if ((req->stdin_open && pipe2(in_pipe, O_CLOEXEC) < 0) || pipe2(out_pipe, O_CLOEXEC) < 0 ||
		    pipe2(err_pipe, O_CLOEXEC) < 0) {
			r = -errno;
			snprintf(errbuf, errlen, "creating pipes: %s", strerror(errno));
			goto fail;
		}
	}

	struct spawn_failure failure = { .failed = false };
	/* One stack for every command's short life before exec: one command is started at a
	 * time, and CLONE_VFORK keeps its parent suspended until it has exec'd or exited. */
	struct spawn_ctx ctx = {
		.req = req,
		.slave_name = slave_name,
		.in_rd = in_pipe[0],
		.out_wr = out_pipe[1],
		.err_wr = err_pipe[1],
		.failure = &failure,
		.last_cap = last_cap,
		.oom_inherited = agent_oom_is(req->oom_score_adj),
	};
	long cl = spawn_clone(&ctx);
	if (cl < 0) {
		r = (int)cl;
		snprintf(errbuf, errlen, "clone: %s", strerror(-r));
		goto fail;
	}
	pid_t pid = (pid_t)cl;

	/* The clone has returned: the child has exec'd, or written why not and exited. */
	const struct spawn_failure *f = ctx.failure;
	if (__atomic_load_n(&f->failed, __ATOMIC_ACQUIRE)) {
		int st;
		while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
			;
		snprintf(errbuf, errlen, "%.*s", (int)sizeof(f->message), f->message);
		r = f->errnum > 0 ? -f->errnum : -EIO;
		goto fail;
	}

	res->pid = pid;
	if (req->tty) {
		res->stdout_fd = master;
		res->stdin_fd = req->stdin_open ? fcntl(master, F_DUPFD_CLOEXEC, 3) : -1;
		master = -1;
	} else if (!req->detach && !req->console) {
		if (req->stdin_open) {
			close(in_pipe[0]);
			res->stdin_fd = in_pipe[1];
		}
		close(out_pipe[1]);
		close(err_pipe[1]);
		res->stdout_fd = out_pipe[0];
		res->stderr_fd = err_pipe[0];
	}
	return 0;

fail:
	for (int i = 0; i < 2; i++) {
		if (in_pipe[i] >= 0)
			close(in_pipe[i]);
		if (out_pipe[i] >= 0)
			close(out_pipe[i]);
		if (err_pipe[i] >= 0)
			close(err_pipe[i]);
	}
	if (master >= 0)
		close(master);
	return r;
}

/* SIG to every process of the sandbox. As PID 1 of its own pid namespace, those are all the
 * agent may signal (kill(-1)). In a pod's shared pid namespace (docs/oci.md) the agent is not
 * PID 1, and the other containers' processes run on the same host ids: there the sandbox's are
 * the agent's descendants, which a subreaper's orphans stay. The shim's cgroup kill catches
 * a process forked while the walk reads /proc. */
void agent_signal_all(int sig)
{
	if (getpid() == 1) {
		kill(-1, sig);
		return;
	}
	DIR *d = opendir("/proc");
	if (!d)
		return;
	size_t n = 0, cap = 0;
	pid_t(*pp)[2] = NULL; /* pid, parent */
	struct dirent *e;
	while ((e = readdir(d))) {
		char path[64], buf[512];
		int pid = atoi(e->d_name);
		if (pid <= 0)
			continue;
		snprintf(path, sizeof(path), "/proc/%d/stat", pid);
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		ssize_t l = fd < 0 ? -1 : read(fd, buf, sizeof(buf) - 1);
		if (fd >= 0)
			close(fd);
		if (l <= 0)
			continue;
		buf[l] = '\0';
		const char *close_paren = strrchr(buf, ')');
		int ppid;
		if (!close_paren || sscanf(close_paren + 1, " %*c %d", &ppid) != 1)
			continue;
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 256;
			void *p = realloc(pp, ncap * sizeof(*pp));
			if (!p)
				break;
			pp = p;
			cap = ncap;
		}
		pp[n][0] = pid;
		pp[n][1] = ppid;
		n++;
	}
	closedir(d);
	/* The descendants: whoever's parent is the agent or one of them, until no more are found. */
	bool *mine = calloc(n ? n : 1, sizeof(bool));
	if (!mine) {
		free(pp);
		return;
	}
	pid_t self = getpid();
	for (bool more = true; more;) {
		more = false;
		for (size_t i = 0; i < n; i++) {
			if (mine[i])
				continue;
			bool under = pp[i][1] == self;
			for (size_t j = 0; !under && j < n; j++)
				under = mine[j] && pp[j][0] == pp[i][1];
			if (under)
				mine[i] = more = true;
		}
	}
	for (size_t i = 0; i < n; i++)
		if (mine[i])
			kill(pp[i][0], sig);
	free(mine);
	free(pp);
}
