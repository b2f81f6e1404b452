/* The monitor: the process --pid-file names (docs/oci.md, "The pid"). conmon and containerd's
 * shim are subreapers that wait for that pid and take its exit status as the container's, and
 * send it signals with kill(2). capsule's container is a sandbox behind a shim, its process a
 * command of the agent's; so the pid is a process of ours that owns both: it creates the
 * sandbox (ephemeral: it ends when the monitor does, SIGKILL included), runs the process at
 * `start`, passes on every signal it gets, relays the process's streams to its own stdio (or
 * to the console socket's terminal), and exits as the process exited. `exec` runs the same
 * supervisor for an extra process. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "oci.h"
#include "util.h"

/* ---- the console socket ------------------------------------------------------------------ */

/* A terminal of our own whose master goes to the console socket (conmon's, containerd's) as
 * runc sends it; its slave becomes our controlling terminal, so a resize of the master reaches
 * us as SIGWINCH, and our stdio. The process's own terminal is the agent's, inside the
 * sandbox: ours is raw, a wire between the two. */
static int console_open(const char *socket_path, int *slave_out)
{
	int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
	char name[128];
	if (master < 0 || grantpt(master) < 0 || unlockpt(master) < 0 || ptsname_r(master, name, sizeof(name)) != 0)
		return oci_fail("allocating a terminal: %s", strerror(errno));
	if (setsid() < 0 && errno != EPERM)
		return oci_fail("setsid: %s", strerror(errno));
	int slave = open(name, O_RDWR | O_CLOEXEC);
	if (slave < 0)
		return oci_fail("opening '%s': %s", name, strerror(errno));
	ioctl(slave, TIOCSCTTY, 0);
	struct termios t;
	if (tcgetattr(slave, &t) == 0) {
		cfmakeraw(&t);
		tcsetattr(slave, TCSANOW, &t);
	}
	int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	if (strlen(socket_path) >= sizeof(addr.sun_path))
		return oci_fail("--console-socket '%s': path too long", socket_path);
	strcpy(addr.sun_path, socket_path);
	if (sock < 0 || connect(sock, (struct sockaddr *)&addr, sizeof(addr)) < 0)
		return oci_fail("--console-socket '%s': %s", socket_path, strerror(errno));
	char cbuf[CMSG_SPACE(sizeof(int))];
	memset(cbuf, 0, sizeof(cbuf));
	struct iovec iov = { .iov_base = name, .iov_len = strlen(name) };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &master, sizeof(int));
	if (sendmsg(sock, &msg, MSG_NOSIGNAL) < 0)
		return oci_fail("--console-socket '%s': sending the terminal: %s", socket_path, strerror(errno));
	close(sock);
	close(master);
	*slave_out = slave;
	return 0;
}

/* ---- supervising a process ----------------------------------------------------------------- */

/* Every signal a process can be sent, but those the kernel keeps (KILL, STOP) and our own
 * children's (CHLD: the shim). */
static void forwarded_signals(sigset_t *set)
{
	sigemptyset(set);
	for (int s = 1; s < SIGRTMIN; s++)
		if (s != SIGKILL && s != SIGSTOP)
			sigaddset(set, s);
}

/* Relay the process's streams between it and IN/OUT/ERR and pass on each signal, until it
 * exits; SFD is the signalfd of the forwarded set. */
static int relay(capsule_process *p, int in, int out, int errfd, bool tty, int sfd, capsule_exit_status *st)
{
	capsule_error err = { 0 };
	capsule_process_set_nonblocking(p, true);
	bool in_open = in >= 0;
	static char buf[128 * 1024];
	for (;;) {
		int stream;
		ssize_t n = capsule_process_read(p, &stream, buf, sizeof(buf), &err);
		if (n > 0) {
			write_all(stream == CAPSULE_STDERR ? errfd : out, buf, (size_t)n);
			continue;
		}
		if (n == 0)
			break;
		if (n != -EAGAIN)
			return oci_fail_err(&err);
		struct pollfd pfd[3] = {
			{ .fd = capsule_process_fd(p), .events = POLLIN },
			{ .fd = in_open ? in : -1, .events = POLLIN },
			{ .fd = sfd, .events = POLLIN },
		};
		if (poll(pfd, 3, -1) < 0 && errno != EINTR)
			return oci_fail("poll: %s", strerror(errno));
		if (pfd[2].revents) {
			struct signalfd_siginfo si;
			while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
				if (si.ssi_signo == SIGCHLD || si.ssi_signo == SIGPIPE)
					continue;
				if (si.ssi_signo == SIGWINCH) {
					struct winsize ws;
					if (tty && ioctl(in, TIOCGWINSZ, &ws) == 0)
						capsule_process_resize(p, ws.ws_row, ws.ws_col, NULL);
					continue;
				}
				capsule_process_signal(p, (int)si.ssi_signo, NULL);
			}
		}
		if (pfd[1].revents) {
			char data[64 * 1024];
			ssize_t m = read(in, data, sizeof(data));
			if (m <= 0) {
				in_open = false;
				capsule_process_close_stdin(p, NULL);
			} else {
				capsule_process_set_nonblocking(p, false);
				if (capsule_process_write(p, data, (size_t)m, &err) < 0)
					in_open = false;
				capsule_process_set_nonblocking(p, true);
			}
		}
	}
	if (capsule_process_wait(p, st, &err) < 0)
		return oci_fail_err(&err);
	return 0;
}

/* End as the process ended: its exit code, or its signal, raised on ourselves. */
/* Whether SIG's default action ends a process. No process ends by a stop signal or one the
 * kernel ignores: an exit status that says so is an agent's lie (a vm's guest is not ours),
 * and raising it would stop or keep the monitor that podman and containerd wait on. */
static bool ends_a_process(int sig)
{
	switch (sig) {
	case SIGSTOP: case SIGTSTP: case SIGTTIN: case SIGTTOU: case SIGCONT: case SIGCHLD: case SIGURG: case SIGWINCH:
		return false;
	default:
		return sig > 0 && sig < SIGRTMIN;
	}
}

static _Noreturn void exit_like(const capsule_exit_status *st)
{
	if (ends_a_process(st->signal)) {
		struct rlimit none = { 0, 0 };
		setrlimit(RLIMIT_CORE, &none);
		signal(st->signal, SIG_DFL);
		sigset_t set;
		sigemptyset(&set);
		sigaddset(&set, st->signal);
		sigprocmask(SIG_UNBLOCK, &set, NULL);
		raise(st->signal);
	}
	_exit(st->exit_code & 0xff);
}

static int exit_code_for_start(const capsule_error *err)
{
	if (strstr(err->message, "exec '")) {
		if (err->code == ENOENT)
			return 127;
		if (err->code == EACCES || err->code == ENOEXEC || err->code == EPERM || err->code == EISDIR)
			return 126;
	}
	return 1;
}

/* Tell whoever waits (create, start, run -d, exec -d) how it went: "ok", or the error. */
static void notify(int fd, const char *msg)
{
	if (fd < 0) {
		/* run in the foreground: no one waits for a word, the error is ours to print. */
		if (strcmp(msg, "ok"))
			oci_fail("%s", msg);
		return;
	}
	write_all(fd, msg, strlen(msg));
	close(fd);
}

static void pid_file_write(const char *path, pid_t pid)
{
	if (!path)
		return;
	char text[32];
	int n = snprintf(text, sizeof(text), "%d", (int)pid);
	_cleanup_free_ char *tmp = NULL;
	if (asprintf(&tmp, "%s.tmp.%d", path, (int)getpid()) < 0)
		return;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return;
	write_all(fd, text, (size_t)n);
	close(fd);
	rename(tmp, path);
}

/* Wait on the read end of a notification pipe for the child's word; 0 on "ok". */
static int await_word(int fd, pid_t child)
{
	char msg[1024];
	size_t len = 0;
	ssize_t n;
	while (len + 1 < sizeof(msg) && (n = read(fd, msg + len, sizeof(msg) - 1 - len)) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			break;
		len += (size_t)n;
	}
	msg[len] = 0;
	close(fd);
	if (!strcmp(msg, "ok"))
		return 0;
	if (child > 0)
		waitpid(child, NULL, 0);
	return oci_fail("%s", len ? msg : "the container's monitor died");
}

/* ---- --preserve-fds ------------------------------------------------------------------------ */

#define PRESERVE_FDS_VM "--preserve-fds: descriptors cannot reach a container run with capsule.isolation=vm (its " \
	"agent is reached over virtio-serial, which carries bytes only)"

/* Our descriptors 3..3+N-1, for the process as the same numbers (EO's fds, in FDS). */
static void preserve_fds_set(capsule_exec_options *eo, int fds[CAPSULE_EXEC_MAX_FDS], int n)
{
	for (int i = 0; i < n; i++)
		fds[i] = 3 + i;
	eo->fds = n ? fds : NULL;
	eo->nfds = (size_t)n;
}

/* Once the process has them (or failed to start), ours go: a pipe's write end kept here would
 * hold its reader's end of file until the process exits. */
static void preserve_fds_close(int n)
{
	for (int i = 0; i < n; i++)
		close(3 + i);
}

/* ---- create, start, run ---------------------------------------------------------------- */

static int read_spec(const char *bundle, capsule_oci_spec **spec, char **text_out, size_t *len_out)
{
	char path[4200];
	snprintf(path, sizeof(path), "%s/config.json", bundle);
	char *text = NULL;
	size_t len = 0;
	int r = read_file_at(AT_FDCWD, path, 16 << 20, &text, &len);
	if (r < 0)
		return oci_fail("reading '%s': %s", path, strerror(-r));
	capsule_error err = { 0 };
	if (capsule_oci_spec_parse(spec, text, len, bundle, 0, &err) < 0) {
		free(text);
		return oci_fail_err(&err);
	}
	const char *warnings = capsule_oci_spec_warnings(*spec);
	for (const char *w = warnings; w && *w; w += strcspn(w, "\n") + 1)
		oci_warn("%.*s", (int)strcspn(w, "\n"), w);
	if (text_out) {
		*text_out = text;
		*len_out = len;
	} else {
		free(text);
	}
	return 0;
}

static void now_rfc3339(char *out, size_t size)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);
	char base[32];
	strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out, size, "%s.%09ldZ", base, ts.tv_nsec);
}

/* ---- the monitor's cgroups ------------------------------------------------------------------ */

/* containerd's shim reads a container's cpu and memory figures (the CRI's ContainerStats) from
 * the cgroups of the pid it holds. So the monitor joins its sandbox's in the cgroup v1
 * hierarchies of those figures and its cpuset's (a container's cpus and mems are read there, a
 * relative cgroupsPath found, through that pid), and only those: in the freezer's it would be frozen with a
 * paused container, in the pids one it would count against the container's limit. On cgroup v2
 * one hierarchy holds all of them, and the monitor stays out (docs/kubernetes.md). It leaves
 * before it ends the sandbox, whose cgroups the shim then removes; its hooks run in its own. */
static const char *const stat_ctrls[] = { "memory", "cpu", "cpuacct", "cpuset" };
static char *host_cgroup[ARRAY_SIZE(stat_ctrls)];

/* PID's cgroup of the v1 hierarchy that holds CTRL, from /proc/PID/cgroup; NULL if none. */
static char *cgroup_of(pid_t pid, const char *ctrl)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/cgroup", (int)pid);
	_cleanup_free_ char *text = NULL;
	size_t len;
	if (read_file_at(AT_FDCWD, path, 1 << 16, &text, &len) < 0)
		return NULL;
	for (char *save = NULL, *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *ctrls = strchr(line, ':'), *cg = ctrls ? strchr(ctrls + 1, ':') : NULL;
		if (!cg)
			continue;
		*cg++ = 0;
		for (char *s2 = NULL, *c = strtok_r(ctrls + 1, ",", &s2); c; c = strtok_r(NULL, ",", &s2))
			if (!strcmp(c, ctrl))
				return strdup(cg);
	}
	return NULL;
}

static int cgroup_move(const char *ctrl, const char *cg, pid_t pid)
{
	char path[4200], text[32];
	snprintf(path, sizeof(path), "/sys/fs/cgroup/%s%s/cgroup.procs", ctrl, cg);
	int n = snprintf(text, sizeof(text), "%d", (int)pid);
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	int r = fd < 0 || write(fd, text, (size_t)n) != n ? -errno : 0;
	if (fd >= 0)
		close(fd);
	return r;
}

static void monitor_enter_cgroups(pid_t agent)
{
	for (size_t i = 0; i < ARRAY_SIZE(stat_ctrls); i++) {
		_cleanup_free_ char *cg = cgroup_of(agent, stat_ctrls[i]);
		char *own = cg ? cgroup_of(getpid(), stat_ctrls[i]) : NULL;
		if (!own)
			continue;
		int r = strcmp(own, cg) ? cgroup_move(stat_ctrls[i], cg, getpid()) : 0;
		if (r < 0) {
			oci_warn("the monitor joining its container's %s cgroup '%s': %s (the container's figures "
				 "read through its pid are its caller's)", stat_ctrls[i], cg, strerror(-r));
			free(own);
			continue;
		}
		host_cgroup[i] = own;
	}
}

/* Back to the cgroups the monitor came from: PID 0 is the caller itself. */
static void monitor_leave_cgroups(void)
{
	for (size_t i = 0; i < ARRAY_SIZE(stat_ctrls); i++)
		if (host_cgroup[i])
			cgroup_move(stat_ctrls[i], host_cgroup[i], getpid());
}

/* ---- the monitor's namespaces ------------------------------------------------------------- */

/* The monitor's own network, IPC and UTS namespaces (the host's), kept while it lives in its
 * sandbox's: its hooks run back in them. -1: not left. */
static int host_ns[3] = { -1, -1, -1 };
static const struct {
	const char *name;
	int type;
} monitor_ns[3] = { { "net", CLONE_NEWNET }, { "ipc", CLONE_NEWIPC }, { "uts", CLONE_NEWUTS } };

/* The monitor into the container's network, IPC and UTS namespaces (the agent's), so that
 * /proc/PID/ns of the pid the caller holds names them: containerd's CRI gives a pod's other
 * containers the IPC and UTS namespaces of its pause container as /proc/PID/ns paths of that
 * container's pid (docs/architecture.md, "A pod's namespaces"). The monitor keeps what must be
 * the host's: its mount namespace (the bundle, --root, the sandbox's sockets), its user and
 * pid namespaces (its rights, its parent's wait) and its cgroup. */
static int monitor_enter_sandbox_ns(capsule_sandbox *sb, char *why, size_t size)
{
	capsule_error err = { 0 };
	capsule_sandbox_info info;
	if (capsule_sandbox_inspect(sb, &info, &err) < 0) {
		snprintf(why, size, "%s", err.message);
		return -1;
	}
	if (info.isolation != CAPSULE_ISOLATION_CONTAINER || info.init_pid <= 0)
		return 0; /* a vm's namespaces are its guest kernel's */
	/* Entering needs CAP_SYS_ADMIN in our own user namespace too: a monitor of another user
	 * stays in the host's, and a path through it is refused as the host's. */
	if (geteuid() != 0)
		return 0;
	monitor_enter_cgroups(info.init_pid);
	for (size_t i = 0; i < ARRAY_SIZE(monitor_ns); i++) {
		char path[64];
		snprintf(path, sizeof(path), "/proc/%d/ns/%s", (int)info.init_pid, monitor_ns[i].name);
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		snprintf(path, sizeof(path), "/proc/self/ns/%s", monitor_ns[i].name);
		host_ns[i] = fd < 0 ? -1 : open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || host_ns[i] < 0 || setns(fd, monitor_ns[i].type) < 0) {
			snprintf(why, size, "the monitor joining the container's %s namespace: %s", monitor_ns[i].name,
				 strerror(errno));
			if (fd >= 0)
				close(fd);
			return -1;
		}
		close(fd);
	}
	return 0;
}

void oci_host_enter(void)
{
	for (size_t i = 0; i < ARRAY_SIZE(monitor_ns); i++)
		if (host_ns[i] >= 0 && setns(host_ns[i], monitor_ns[i].type) < 0)
			_exit(127);
	monitor_leave_cgroups();
}

/* A pod's shareProcessNamespace: containerd's CRI names the pause container's pid namespace as
 * /proc/PID/ns/pid of its task's pid, our monitor, which stays in the host's pid namespace.
 * A PID that is the monitor of a container under this --root stands for that container's
 * sandbox: its pid namespace is named by its first process instead. Any other path is left
 * for the library, which refuses what is no sandbox's. */
struct pod_walk {
	capsule_oci_spec *spec;
	pid_t pid;
	char *why;
	size_t size;
};

/* 1 once the container of the monitor W->pid is found and its sandbox's path set, -1 when that
 * fails (W->why says why), 0 for another container. */
static int pod_pid_ns_of(const struct oci_state *st, void *payload)
{
	struct pod_walk *w = payload;
	if (st->pid != w->pid || !strcmp(st->status, "stopped") || oci_proc_start_time(w->pid) != st->pid_start)
		return 0;
	capsule_sandbox *sb = NULL;
	capsule_sandbox_info info;
	capsule_error err = { 0 };
	int r = 1;
	if (capsule_sandbox_open(&sb, st->sandbox, &err) < 0 || capsule_sandbox_inspect(sb, &info, &err) < 0) {
		snprintf(w->why, w->size, "the pid namespace of container '%s': %s", st->id, err.message);
		r = -1;
	} else if (info.isolation != CAPSULE_ISOLATION_CONTAINER || info.init_pid <= 0) {
		snprintf(w->why, w->size, "config.json: linux.namespaces: the pid namespace of container '%s' cannot be "
					  "joined: it is a vm's", st->id);
		r = -1;
	} else {
		char own[64];
		snprintf(own, sizeof(own), "/proc/%d/ns/pid", (int)info.init_pid);
		if (capsule_oci_spec_set_pid_ns(w->spec, own, &err) < 0) {
			snprintf(w->why, w->size, "%s", err.message);
			r = -1;
		}
	}
	if (sb)
		capsule_sandbox_free(sb);
	return r;
}

/* A pod's shareProcessNamespace: containerd's CRI names the pause container's pid namespace as
 * /proc/PID/ns/pid of its task's pid, our monitor, which stays in the host's pid namespace.
 * A PID that is the monitor of a container under this --root stands for that container's
 * sandbox: its pid namespace is named by its first process instead. Any other path is left
 * for the library, which refuses what is no sandbox's. */
static int pod_pid_ns(capsule_oci_spec *spec, char *why, size_t size)
{
	const char *path = capsule_oci_spec_pid_ns(spec);
	int pid, n = 0;
	if (!path || sscanf(path, "/proc/%d/ns/pid%n", &pid, &n) != 1 || path[n] || pid <= 0)
		return 0;
	struct pod_walk w = { spec, pid, why, size };
	return oci_state_each(pod_pid_ns_of, &w) < 0 ? -1 : 0;
}

struct monitor {
	const struct oci_run *o;
	capsule_oci_spec *spec;
	int dirfd;
	struct oci_state st;
};

static void state_set(struct monitor *m, const char *status)
{
	snprintf(m->st.status, sizeof(m->st.status), "%s", status);
	oci_state_write(m->dirfd, &m->st);
}

/* The monitor's life from the sandbox's create to the process's exit. NOTIFY gets the
 * creator's word ("ok" once created, or once started with run -d). */
static _Noreturn void monitor_main(struct monitor *m, int notify_fd)
{
	const struct oci_run *o = m->o;
	int in = STDIN_FILENO, out = STDOUT_FILENO, errfd = STDERR_FILENO;
	capsule_exec_options eo;
	capsule_oci_spec_exec_options(m->spec, &eo);
	char msg[600];
	if (eo.tty && !o->console_socket) {
		/* run in a terminal of its own (a person's): the process's terminal is relayed to it. */
		if (o->no_start || o->detach || !isatty(STDIN_FILENO)) {
			notify(notify_fd, "process.terminal needs --console-socket (or run in the foreground on a terminal)");
			_exit(1);
		}
	} else if (eo.tty) {
		int slave;
		if (console_open(o->console_socket, &slave)) {
			notify(notify_fd, "the console socket failed");
			_exit(1);
		}
		in = out = errfd = slave;
	}
	capsule_error err = { 0 };
	capsule_config *cfg = capsule_oci_spec_config(m->spec);
	capsule_sandbox *sb = NULL;
	if (pod_pid_ns(m->spec, msg, sizeof(msg)) < 0) {
		notify(notify_fd, msg);
		if (notify_fd < 0)
			oci_state_dir_remove(o->id);
		_exit(1);
	}
	if (capsule_config_set_name(cfg, m->st.sandbox, &err) < 0 || capsule_sandbox_create(&sb, cfg, &err) < 0) {
		snprintf(msg, sizeof(msg), "%s", err.message);
		notify(notify_fd, msg);
		/* In the background, create removes the state on our word; run in the foreground
		 * leaves nothing behind, as runc's does. */
		if (notify_fd < 0)
			oci_state_dir_remove(o->id);
		_exit(1);
	}
	m->st.pid = getpid();
	m->st.pid_start = oci_proc_start_time(m->st.pid);
	/* The runtime environment exists, the process does not: prestart (and createRuntime)
	 * hooks, whose failure fails the create and ends the sandbox with us. */
	if (oci_run_hooks(m->spec, CAPSULE_OCI_HOOK_PRESTART, &m->st, msg, sizeof(msg)) < 0 ||
	    oci_run_hooks(m->spec, CAPSULE_OCI_HOOK_CREATE_RUNTIME, &m->st, msg, sizeof(msg)) < 0 ||
	    monitor_enter_sandbox_ns(sb, msg, sizeof(msg)) < 0) {
		notify(notify_fd, msg);
		capsule_sandbox_free(sb);
		if (notify_fd < 0)
			oci_state_dir_remove(o->id);
		_exit(1);
	}
	int word_fd = notify_fd;
	if (o->no_start) {
		if (mkfifoat(m->dirfd, "start.fifo", 0600) < 0) {
			snprintf(msg, sizeof(msg), "making start.fifo: %s", strerror(errno));
			notify(notify_fd, msg);
			_exit(1);
		}
		state_set(m, "created");
		notify(notify_fd, "ok");
		/* Until `start` opens the other end. A signal now ends us with its default action,
		 * and the sandbox with us: what a container that never started should do. */
		word_fd = openat(m->dirfd, "start.fifo", O_WRONLY | O_CLOEXEC);
		unlinkat(m->dirfd, "start.fifo", 0);
	}
	sigset_t fwd;
	forwarded_signals(&fwd);
	sigprocmask(SIG_BLOCK, &fwd, NULL);
	int sfd = signalfd(-1, &fwd, SFD_CLOEXEC | SFD_NONBLOCK);
	if (eo.tty) {
		struct winsize ws;
		if (ioctl(in, TIOCGWINSZ, &ws) == 0 && ws.ws_row) {
			eo.rows = ws.ws_row;
			eo.cols = ws.ws_col;
		}
	}
	eo.stdin_open = true;
	int fds[CAPSULE_EXEC_MAX_FDS];
	preserve_fds_set(&eo, fds, o->preserve_fds);
	capsule_process *p;
	if (!eo.argv)
		cap_err_plain(&err, EINVAL, "config.json has no process to start");
	int started = eo.argv ? capsule_exec_start(&p, sb, &eo, &err) : -EINVAL;
	preserve_fds_close(o->preserve_fds);
	if (started < 0) {
		state_set(m, "stopped");
		snprintf(msg, sizeof(msg), "%s", err.message);
		notify(word_fd, msg);
		monitor_leave_cgroups();
		capsule_sandbox_free(sb);
		if (notify_fd < 0)
			oci_state_dir_remove(o->id);
		_exit(exit_code_for_start(&err));
	}
	state_set(m, "running");
	oci_run_hooks(m->spec, CAPSULE_OCI_HOOK_POSTSTART, &m->st, NULL, 0);
	notify(word_fd, "ok");
	capsule_exit_status st = { .exit_code = 1 };
	relay(p, in, out, errfd, eo.tty, sfd, &st);
	capsule_process_free(p);
	state_set(m, "stopped");
	monitor_leave_cgroups();
	capsule_sandbox_free(sb);
	/* run in the foreground leaves nothing behind, as runc's does: it is its own delete. */
	if (!o->no_start && !o->detach) {
		oci_run_hooks(m->spec, CAPSULE_OCI_HOOK_POSTSTOP, &m->st, NULL, 0);
		oci_state_dir_remove(o->id);
	}
	exit_like(&st);
}

int oci_create_or_run(const struct oci_run *o)
{
	if (oci_check_id(o->id))
		return 1;
	char bundle[4096];
	if (!realpath(o->bundle ? o->bundle : ".", bundle))
		return oci_fail("bundle '%s': %s", o->bundle ? o->bundle : ".", strerror(errno));
	struct monitor m = { .o = o };
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	if (read_spec(bundle, &m.spec, &text, &len))
		return 1;
	if (o->preserve_fds && capsule_config_get_isolation(capsule_oci_spec_config(m.spec)) == CAPSULE_ISOLATION_VM) {
		capsule_oci_spec_free(m.spec);
		return oci_fail(PRESERVE_FDS_VM);
	}
	if (oci_state_dir_make(o->id, &m.dirfd)) {
		capsule_oci_spec_free(m.spec);
		return 1;
	}
	snprintf(m.st.id, sizeof(m.st.id), "%s", o->id);
	snprintf(m.st.bundle, sizeof(m.st.bundle), "%s", bundle);
	oci_sandbox_name(o->id, m.st.sandbox);
	now_rfc3339(m.st.created, sizeof(m.st.created));
	const char *ann = capsule_oci_spec_annotations(m.spec);
	m.st.annotations = ann ? strdup(ann) : NULL;
	int rc = 1, pipefd[2] = { -1, -1 };
	int r = write_file_atomic_at(m.dirfd, "config.json", text, len, 0600, false);
	if (r == 0) {
		snprintf(m.st.status, sizeof(m.st.status), "creating");
		m.st.pid = getpid();
		m.st.pid_start = oci_proc_start_time(m.st.pid);
		r = oci_state_write(m.dirfd, &m.st);
	}
	if (r < 0) {
		oci_fail("writing the state of '%s': %s", o->id, strerror(-r));
		goto out;
	}
	if (!o->no_start && !o->detach) {
		/* run in the foreground: this process is the monitor. */
		pid_file_write(o->pid_file, getpid());
		monitor_main(&m, -1);
	}
	if (pipe2(pipefd, O_CLOEXEC) < 0) {
		oci_fail("pipe: %s", strerror(errno));
		goto out;
	}
	pid_t child = fork();
	if (child < 0) {
		oci_fail("fork: %s", strerror(errno));
		close(pipefd[0]);
		close(pipefd[1]);
		goto out;
	}
	if (child == 0) {
		close(pipefd[0]);
		monitor_main(&m, pipefd[1]);
	}
	close(pipefd[1]);
	rc = await_word(pipefd[0], child);
	/* Not waited for: once we exit it is the subreaper's (conmon, containerd's shim). */
	if (rc == 0)
		pid_file_write(o->pid_file, child);
out:
	if (rc)
		oci_state_dir_remove(o->id);
	capsule_oci_spec_free(m.spec);
	free(m.st.annotations);
	close(m.dirfd);
	return rc;
}

int oci_poststop(int dirfd, const struct oci_state *st)
{
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	int r = read_file_at(dirfd, "config.json", 16 << 20, &text, &len);
	capsule_oci_spec *spec = NULL;
	capsule_error err = { 0 };
	if (r < 0 || capsule_oci_spec_parse(&spec, text, len, st->bundle, 0, &err) < 0) {
		oci_warn("poststop hooks: config.json of '%s': %s", st->id, r < 0 ? strerror(-r) : err.message);
		return 0;
	}
	oci_run_hooks(spec, CAPSULE_OCI_HOOK_POSTSTOP, st, NULL, 0);
	capsule_oci_spec_free(spec);
	return 0;
}

int oci_start(const char *id)
{
	int dirfd;
	if (oci_state_dir_open(id, &dirfd))
		return 1;
	struct oci_state st;
	if (oci_state_read(dirfd, &st) < 0)
		return oci_fail("container '%s': no readable state", id);
	oci_state_clear(&st);
	if (strcmp(st.status, "created"))
		return oci_fail("container '%s' is %s, not created", id, st.status);
	/* Not a blocking open: a monitor that died would leave it waiting for ever. */
	int fd = openat(dirfd, "start.fifo", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return oci_fail("container '%s' is being started already", id);
	char msg[1024];
	size_t len = 0;
	bool writer_seen = false;
	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		int pr = poll(&pfd, 1, 100);
		if (pr > 0) {
			ssize_t n = read(fd, msg + len, sizeof(msg) - 1 - len);
			if (n > 0) {
				len += (size_t)n;
				writer_seen = true;
				if (len + 1 < sizeof(msg))
					continue;
			}
			if (n == 0 && writer_seen)
				break;
			if (n < 0 && errno != EAGAIN && errno != EINTR)
				break;
			if (n == 0 && (pfd.revents & POLLHUP)) {
				writer_seen = true;
				break;
			}
		}
		if (oci_proc_start_time(st.pid) != st.pid_start) {
			if (!len)
				return oci_fail("container '%s' stopped before it started", id);
			break;
		}
	}
	msg[len] = 0;
	close(fd);
	if (strcmp(msg, "ok"))
		return oci_fail("starting '%s': %s", id, len ? msg : "the monitor ended");
	return 0;
}

/* ---- exec ---------------------------------------------------------------------------------- */

/* What oci_exec holds, freed on every way out but the supervisor's own end (exit_like). */
struct exec_hold {
	capsule_oci_spec *spec, *proc;
	const char **env;
	capsule_sandbox *sb;
	int dirfd;
};

static int exec_in(const struct oci_exec *o, struct exec_hold *h);

int oci_exec(const struct oci_exec *o)
{
	struct exec_hold h = { .dirfd = -1 };
	int r = exec_in(o, &h);
	capsule_sandbox_free(h.sb);
	free(h.env);
	capsule_oci_spec_free(h.proc);
	capsule_oci_spec_free(h.spec);
	if (h.dirfd >= 0)
		close(h.dirfd);
	return r;
}

static int exec_in(const struct oci_exec *o, struct exec_hold *h)
{
	int dirfd;
	if (oci_state_dir_open(o->id, &h->dirfd))
		return 1;
	dirfd = h->dirfd;
	struct oci_state st;
	if (oci_state_read(dirfd, &st) < 0)
		return oci_fail("container '%s': no readable state", o->id);
	oci_state_clear(&st);
	if (strcmp(st.status, "running") && strcmp(st.status, "created"))
		return oci_fail("container '%s' is %s: cannot exec in it", o->id, st.status);
	/* The container's own process is the default of everything exec does not say, and its
	 * seccomp profile holds for every process, as with runc. */
	_cleanup_free_ char *text = NULL;
	size_t len;
	int r = read_file_at(dirfd, "config.json", 16 << 20, &text, &len);
	if (r < 0)
		return oci_fail("container '%s': reading its config.json: %s", o->id, strerror(-r));
	capsule_error err = { 0 };
	if (capsule_oci_spec_parse(&h->spec, text, len, st.bundle, 0, &err) < 0)
		return oci_fail_err(&err);
	capsule_exec_options eo, base;
	capsule_oci_spec_exec_options(h->spec, &base);
	eo = base;
	if (o->process) {
		_cleanup_free_ char *ptext = NULL;
		size_t plen;
		if ((r = read_file_at(AT_FDCWD, o->process, 1 << 20, &ptext, &plen)) < 0)
			return oci_fail("--process '%s': %s", o->process, strerror(-r));
		if (capsule_oci_spec_parse(&h->proc, ptext, plen, NULL, CAPSULE_OCI_PROCESS_ONLY, &err) < 0)
			return oci_fail_err(&err);
		capsule_oci_spec_exec_options(h->proc, &eo);
		eo.seccomp_bpf = base.seccomp_bpf;
		eo.seccomp_len = base.seccomp_len;
		if (!eo.caps_set) {
			eo.caps_set = base.caps_set;
			eo.caps = base.caps;
			eo.caps_inheritable = base.caps_inheritable;
			eo.caps_ambient = base.caps_ambient;
		}
	} else {
		if (!o->args || !o->args[0])
			return oci_fail("exec: no command (give one, or --process)");
		eo.argv = (const char *const *)o->args;
		eo.tty = o->tty;
		if (o->cwd)
			eo.cwd = o->cwd;
		if (o->user)
			eo.user = o->user;
		if (o->nenv) {
			size_t nbase = 0;
			while (base.env && base.env[nbase])
				nbase++;
			const char **env = h->env = calloc(nbase + o->nenv + 1, sizeof(char *));
			if (!env)
				return oci_fail("out of memory");
			for (size_t i = 0; i < nbase; i++)
				env[i] = base.env[i];
			for (size_t i = 0; i < o->nenv; i++)
				env[nbase + i] = o->env[i];
			eo.env = env;
		}
	}
	if (eo.tty && !o->console_socket && !isatty(STDIN_FILENO))
		return oci_fail("exec: a terminal needs --console-socket");
	eo.stdin_open = true;
	if (capsule_sandbox_open(&h->sb, st.sandbox, &err) < 0)
		return oci_fail_err(&err);
	capsule_sandbox *sb = h->sb;
	if (o->preserve_fds && capsule_sandbox_isolation(sb) == CAPSULE_ISOLATION_VM)
		return oci_fail(PRESERVE_FDS_VM);
	int fds[CAPSULE_EXEC_MAX_FDS];
	preserve_fds_set(&eo, fds, o->preserve_fds);
	int pipefd[2] = { -1, -1 };
	if (o->detach) {
		if (pipe2(pipefd, O_CLOEXEC) < 0)
			return oci_fail("pipe: %s", strerror(errno));
		pid_t child = fork();
		if (child < 0)
			return oci_fail("fork: %s", strerror(errno));
		if (child > 0) {
			close(pipefd[1]);
			if (await_word(pipefd[0], child))
				return 1;
			pid_file_write(o->pid_file, child);
			return 0;
		}
		close(pipefd[0]);
	}
	int in = STDIN_FILENO, out = STDOUT_FILENO, errfd = STDERR_FILENO;
	if (eo.tty && o->console_socket) {
		int slave;
		if (console_open(o->console_socket, &slave)) {
			notify(pipefd[1], "the console socket failed");
			_exit(1);
		}
		in = out = errfd = slave;
	}
	if (eo.tty) {
		struct winsize ws;
		if (ioctl(in, TIOCGWINSZ, &ws) == 0 && ws.ws_row) {
			eo.rows = ws.ws_row;
			eo.cols = ws.ws_col;
		}
	}
	sigset_t fwd;
	forwarded_signals(&fwd);
	sigprocmask(SIG_BLOCK, &fwd, NULL);
	int sfd = signalfd(-1, &fwd, SFD_CLOEXEC | SFD_NONBLOCK);
	capsule_process *p;
	int started = capsule_exec_start(&p, sb, &eo, &err);
	preserve_fds_close(o->preserve_fds);
	if (started < 0) {
		if (o->detach) {
			notify(pipefd[1], err.message);
			_exit(exit_code_for_start(&err));
		}
		oci_fail_err(&err);
		return exit_code_for_start(&err);
	}
	if (!o->detach)
		pid_file_write(o->pid_file, getpid());
	notify(pipefd[1], "ok");
	capsule_exit_status xs = { .exit_code = 1 };
	relay(p, in, out, errfd, eo.tty, sfd, &xs);
	capsule_process_free(p);
	capsule_sandbox_free(sb);
	exit_like(&xs);
}
