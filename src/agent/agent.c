/* capsule-agent main loop: one thread, one epoll set, the shim socket on fd 3.
 *
 * Flow control: every output stream starts with CP_INITIAL_WINDOW bytes of credit from the
 * shim; when it runs out we stop reading the command's pipe, so a slow reader outside slows
 * the command down instead of making anyone buffer. Stdin works the same way the other way
 * round: we grant the shim only as much as we have written to the command. */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "agent.h"
#include "caps.h"
#include "util.h"

#define MAX_PROCS 1024
#define EXIT_OUTPUT_GRACE_MS 500
#define STDIN_QUEUE_MAX CP_INITIAL_WINDOW

enum { ROLE_CONTROL = 1, ROLE_SIGNAL, ROLE_STDIN, ROLE_STDOUT, ROLE_STDERR };

struct proc {
	bool used;
	uint32_t chan;
	pid_t pid;
	bool tty;
	int fd[3];             /* stdin (write end), stdout, stderr (read ends) */
	uint32_t credit[3];    /* [1],[2]: bytes we may still send the shim */
	bool eof_sent[3];
	uint8_t *inq;          /* stdin bytes received, not yet written */
	size_t inq_len;
	bool stdin_eof;        /* the shim closed stdin: close once the queue drains */
	bool exited;
	int wait_status;
	uint64_t exited_at_ms;
	uint64_t deadline_ms;  /* 0: no timeout */
	bool timed_out;
};

static struct agent {
	int epfd;
	int ctl;
	int sigfd;
	struct cp_rxbuf rx;
	struct cp_writer w;
	struct proc procs[MAX_PROCS];
	size_t procs_hwm; /* procs[] at or past this index were never used: scans stop here */
	struct cp_init init;
	bool have_init;
	bool shutting_down;
	uint64_t shutdown_deadline_ms;
	bool ctl_is_socket;
} A;

static void fatal_exit(void)
{
	/* We are PID 1: when we go, the kernel kills everything else in the namespace. */
	agent_exit(1);
}

/* ---- sending ----------------------------------------------------------------------------- */

/* Frames are corked for one turn of the loop and written together before it waits again:
 * the STARTED, CREDIT and OK of a small write, or a small file's DATA, its EOF and the OK,
 * then reach the shim in one write, which costs it (and the client behind it) one wakeup
 * instead of one per frame. Large frames (a file's chunks) are not copied: they go out at
 * once, behind whatever is corked, in one writev. */
#define CORK_MAX (64u * 1024)
#define CORK_FRAME_MAX (16u * 1024)
static uint8_t cork[CORK_MAX];
static size_t cork_len;

static void write_ctl(struct iovec *iov, int cnt)
{
	while (cnt > 0) {
		if (iov->iov_len == 0) {
			iov++;
			cnt--;
			continue;
		}
		/* writev, not sendmsg: in a guest fd 3 is a virtio-serial port, not a socket.
		 * SIGPIPE is ignored, so a closed socket is EPIPE here too. */
		ssize_t n = writev(A.ctl, iov, cnt);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				struct pollfd pfd = { .fd = A.ctl, .events = POLLOUT };
				poll(&pfd, 1, -1);
				continue;
			}
			fatal_exit();
		}
		while (n > 0) {
			size_t take = (size_t)n < iov->iov_len ? (size_t)n : iov->iov_len;
			iov->iov_base = (uint8_t *)iov->iov_base + take;
			iov->iov_len -= take;
			n -= (ssize_t)take;
			if (iov->iov_len == 0) {
				iov++;
				cnt--;
			}
		}
	}
}

void agent_send_raw(const void *buf, size_t len)
{
	if (len <= CORK_FRAME_MAX && cork_len + len <= CORK_MAX) {
		memcpy(cork + cork_len, buf, len);
		cork_len += len;
		return;
	}
	struct iovec iov[2] = { { cork, cork_len }, { (void *)buf, len } };
	write_ctl(iov, 2);
	cork_len = 0;
}

void agent_flush(void)
{
	struct iovec iov = { cork, cork_len };
	write_ctl(&iov, 1);
	cork_len = 0;
}

static void send_frame(void)
{
	if (A.w.err)
		fatal_exit();
	agent_send_raw(A.w.buf, A.w.len);
}

static void send_error(uint32_t chan, int errnum, const char *msg);
static void send_credit(uint32_t chan, uint32_t stream, uint32_t bytes);

struct cp_writer *agent_writer(void)
{
	return &A.w;
}

void agent_send_frame(void)
{
	send_frame();
}

void agent_send_error(uint32_t chan, int errnum, const char *msg)
{
	send_error(chan, errnum, msg);
}

void agent_send_credit(uint32_t chan, uint32_t stream, uint32_t bytes)
{
	send_credit(chan, stream, bytes);
}

static void send_error(uint32_t chan, int errnum, const char *msg)
{
	struct cp_error_msg m = { .errnum = (uint32_t)errnum, .message = (char *)msg };
	if (cp_error_encode(&A.w, chan, &m) == 0)
		send_frame();
}

static void send_credit(uint32_t chan, uint32_t stream, uint32_t bytes)
{
	struct cp_credit m = { .stream = stream, .bytes = bytes };
	if (cp_credit_encode(&A.w, chan, &m) == 0)
		send_frame();
}

/* ---- processes --------------------------------------------------------------------------- */

static struct proc *proc_by_chan(uint32_t chan)
{
	for (size_t i = 0; i < A.procs_hwm; i++)
		if (A.procs[i].used && A.procs[i].chan == chan)
			return &A.procs[i];
	return NULL;
}

static struct proc *proc_by_pid(pid_t pid)
{
	for (size_t i = 0; i < A.procs_hwm; i++)
		if (A.procs[i].used && A.procs[i].pid == pid)
			return &A.procs[i];
	return NULL;
}

static uint64_t ev_key(const struct proc *p, int role)
{
	return ((uint64_t)(p - A.procs) << 8) | (uint64_t)role;
}

static void watch(struct proc *p, int stream, uint32_t events)
{
	int role = stream == 0 ? ROLE_STDIN : stream == 1 ? ROLE_STDOUT : ROLE_STDERR;
	struct epoll_event ev = { .events = events, .data.u64 = ev_key(p, role) };
	epoll_ctl(A.epfd, EPOLL_CTL_MOD, p->fd[stream], &ev);
}

static void close_stream(struct proc *p, int stream)
{
	if (p->fd[stream] < 0)
		return;
	epoll_ctl(A.epfd, EPOLL_CTL_DEL, p->fd[stream], NULL);
	close(p->fd[stream]);
	p->fd[stream] = -1;
}

static void send_eof(struct proc *p, int stream)
{
	if (p->eof_sent[stream])
		return;
	p->eof_sent[stream] = true;
	if (cp_data_encode(&A.w, p->chan, (uint16_t)stream, true, NULL, 0) == 0)
		send_frame();
}

static void proc_release(struct proc *p)
{
	for (int s = 0; s < 3; s++)
		close_stream(p, s);
	free(p->inq);
	memset(p, 0, sizeof(*p));
}

/* The EXIT frame ends the channel. It goes once the command is gone and its output has been
 * drained; a grandchild that keeps the pipe open gets a short grace, not a hang. */
static void proc_maybe_finish(struct proc *p, bool force)
{
	if (!p->exited)
		return;
	bool drained = p->fd[1] < 0 && p->fd[2] < 0;
	if (!drained && !force)
		return;
	for (int s = 1; s <= 2; s++) {
		close_stream(p, s);
		send_eof(p, s);
	}
	struct cp_exit m = { 0 };
	if (WIFEXITED(p->wait_status)) {
		m.exit_code = WEXITSTATUS(p->wait_status);
	} else if (WIFSIGNALED(p->wait_status)) {
		m.signal = (uint32_t)WTERMSIG(p->wait_status);
		m.exit_code = 128 + (int)m.signal;
	}
	m.timed_out = p->timed_out;
	if (cp_exit_encode(&A.w, p->chan, &m) == 0)
		send_frame();
	proc_release(p);
}

static bool reap_children(void);
static void begin_shutdown(uint32_t grace_ms);

/* Take every pending signal: any but SIGCHLD begins the shutdown; children are reaped by the
 * caller. */
static void drain_signals(void)
{
	/* Several at once: a read that comes back short has emptied the queue, and the read that
	 * would say EAGAIN is not made. */
	struct signalfd_siginfo si[8];
	ssize_t n;
	do {
		n = read(A.sigfd, si, sizeof(si));
		for (ssize_t i = 0; i < n / (ssize_t)sizeof(si[0]); i++)
			if (si[i].ssi_signo != SIGCHLD)
				begin_shutdown(10000);
	} while (n == (ssize_t)sizeof(si));
}

static void read_output(struct proc *p, int stream)
{
	static uint8_t buf[CP_DATA_CHUNK];
	uint32_t want = p->credit[stream] < sizeof(buf) ? p->credit[stream] : (uint32_t)sizeof(buf);
	if (want == 0) {
		watch(p, stream, 0);
		return;
	}
	ssize_t n = read(p->fd[stream], buf, want);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		/* EOF, or EIO from a pty whose last slave fd closed. */
		close_stream(p, stream);
		send_eof(p, stream);
		/* A command's exit closes its pipes just before its SIGCHLD is sent: reaping it
		 * now, when it is done already, puts its EXIT in this turn's write beside the
		 * EOFs, which saves the shim and the client a wakeup each. Not done yet, it is
		 * reaped when the signal comes, as always. */
		int other = stream == 1 ? 2 : 1;
		if (!p->exited && p->fd[other] >= 0) {
			/* An exit closes both at once: the other's end is likely here too. */
			read_output(p, other);
			return;
		}
		if (!p->exited && p->fd[1] < 0 && p->fd[2] < 0) {
			bool left = reap_children();
			/* Reaped, its SIGCHLD is pending already: taken now, it does not wake the
			 * loop again while the shim and the client need the CPUs. A child that
			 * ended before the drain is reaped after it (with none left there is
			 * none to end); one after it signals anew. */
			if (!p->used) {
				drain_signals();
				if (left)
					reap_children();
			}
			return;
		}
		proc_maybe_finish(p, false);
		return;
	}
	p->credit[stream] -= (uint32_t)n;
	if (cp_data_encode(&A.w, p->chan, (uint16_t)stream, false, buf, (size_t)n) == 0)
		send_frame();
	if (p->credit[stream] == 0)
		watch(p, stream, 0);
}

static void flush_stdin(struct proc *p)
{
	size_t written = 0;
	while (p->fd[0] >= 0 && written < p->inq_len) {
		ssize_t n = write(p->fd[0], p->inq + written, p->inq_len - written);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				break;
			/* The command closed its stdin: drop what is queued. */
			written = p->inq_len;
			close_stream(p, 0);
			break;
		}
		written += (size_t)n;
	}
	if (written) {
		memmove(p->inq, p->inq + written, p->inq_len - written);
		p->inq_len -= written;
		send_credit(p->chan, CP_STREAM_STDIN, (uint32_t)written);
	}
	if (p->fd[0] < 0)
		return;
	if (p->inq_len == 0 && p->stdin_eof) {
		if (p->tty) {
			/* A pty has no half-close; end-of-file is the terminal's EOF character. */
			struct termios t;
			if (tcgetattr(p->fd[0], &t) == 0) {
				char c = (char)t.c_cc[VEOF];
				(void)!write(p->fd[0], &c, 1);
			}
		}
		close_stream(p, 0);
		return;
	}
	watch(p, 0, p->inq_len ? EPOLLOUT : 0);
}

static void add_env(char ***envp, size_t *n, const char *kv)
{
	/* A later KEY=... replaces an earlier one, so per-exec env overrides the defaults. */
	size_t kl = strcspn(kv, "=");
	for (size_t i = 0; i < *n; i++) {
		if (strncmp((*envp)[i], kv, kl) == 0 && (*envp)[i][kl] == '=') {
			(*envp)[i] = (char *)kv;
			return;
		}
	}
	(*envp)[(*n)++] = (char *)kv;
	(*envp)[*n] = NULL;
}

static bool env_has(char **envp, size_t n, const char *key)
{
	size_t kl = strlen(key);
	for (size_t i = 0; i < n; i++)
		if (strncmp(envp[i], key, kl) == 0 && envp[i][kl] == '=')
			return true;
	return false;
}

static void exec_request(uint32_t chan, const uint8_t *payload, size_t len, const int *fds, unsigned nfds)
{
	struct cp_exec ex;
	char errbuf[512] = "";
	int r = cp_exec_decode(payload, len, &ex);
	if (r < 0) {
		send_error(chan, EBADMSG, "malformed EXEC request");
		return;
	}
	if (chan == 0 || proc_by_chan(chan)) {
		send_error(chan, EBADMSG, "EXEC on a channel already in use");
		cp_exec_free(&ex);
		return;
	}
	/* Placed by number (3, 4, ...): one lost on the way would shift the rest. */
	if (ex.nfds && !A.ctl_is_socket) {
		send_error(chan, EOPNOTSUPP, "descriptors cannot be passed to a vm's command: its agent is reached over "
			   "virtio-serial, which carries bytes only");
		cp_exec_free(&ex);
		return;
	}
	if (ex.nfds != nfds) {
		snprintf(errbuf, sizeof(errbuf), "EXEC declares %u descriptors to pass and %u came with it", ex.nfds, nfds);
		send_error(chan, EBADF, errbuf);
		cp_exec_free(&ex);
		return;
	}
	struct proc *p = NULL;
	for (size_t i = 0; i < MAX_PROCS && !p; i++)
		if (!A.procs[i].used)
			p = &A.procs[i];
	if (!p) {
		send_error(chan, EAGAIN, "too many commands running in this sandbox (1024)");
		cp_exec_free(&ex);
		return;
	}

	/* A command's sets come from the client; the sandbox's own (INIT's, fixed at create) bound
	 * them. Anything more is refused, not masked: a caller that asked for a capability must
	 * not go on thinking the command holds it. */
	int extra = ex.caps_set ? cap_first_outside(ex.caps | ex.caps_inheritable | ex.caps_ambient, A.init.cap_keep) : -1;
	if (extra >= 0) {
		const char *cname = cap_name((unsigned)extra);
		if (cname)
			snprintf(errbuf, sizeof(errbuf), "capability CAP_%s is not in the sandbox's set: a command gets at "
				 "most the capabilities its sandbox was created with", cname);
		else
			snprintf(errbuf, sizeof(errbuf), "capability %d is not in the sandbox's set: a command gets at most "
				 "the capabilities its sandbox was created with", extra);
		send_error(chan, EPERM, errbuf);
		cp_exec_free(&ex);
		return;
	}

	uid_t uid;
	gid_t gid;
	gid_t *groups = NULL;
	size_t ngroups = 0;
	char *home = NULL;
	r = agent_resolve_user(ex.user, &uid, &gid, &groups, &ngroups, &home, errbuf, sizeof(errbuf));
	if (r < 0) {
		send_error(chan, -r, errbuf[0] ? errbuf : strerror(-r));
		cp_exec_free(&ex);
		return;
	}

	size_t cap = A.init.envc + ex.envc + 8;
	char **envp = calloc(cap, sizeof(char *));
	char home_kv[4200], term_kv[] = "TERM=xterm";
	snprintf(home_kv, sizeof(home_kv), "HOME=%s", home ? home : "/");
	size_t n = 0;
	if (!envp) {
		send_error(chan, ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < A.init.envc; i++)
		add_env(&envp, &n, A.init.env[i]);
	if (!env_has(envp, n, "HOME"))
		add_env(&envp, &n, home_kv);
	if ((ex.flags & CP_EXEC_TTY) && !env_has(envp, n, "TERM"))
		add_env(&envp, &n, term_kv);
	for (size_t i = 0; i < ex.envc; i++)
		add_env(&envp, &n, ex.env[i]);

	struct spawn_request req = {
		.argv = ex.argv,
		.envp = envp,
		.cwd = ex.cwd ? ex.cwd : NULL,
		.uid = uid,
		.gid = gid,
		.groups = groups,
		.ngroups = ngroups,
		.tty = ex.flags & CP_EXEC_TTY,
		.stdin_open = ex.flags & CP_EXEC_STDIN,
		.detach = ex.flags & CP_EXEC_DETACH,
		.new_privs = ex.flags & CP_EXEC_NEW_PRIVS,
		.rows = (uint16_t)ex.rows,
		.cols = (uint16_t)ex.cols,
		.seccomp_bpf = A.init.seccomp_bpf,
		.seccomp_len = A.init.seccomp_len,
		.cap_keep = ex.caps_set ? ex.caps : A.init.cap_keep,
		.rlimits = ex.rlimits,
		.nrlimits = ex.nrlimits,
		.seccomp2_bpf = ex.seccomp_bpf,
		.seccomp2_len = ex.seccomp_len,
		.cap_inheritable = ex.caps_set ? ex.caps_inheritable : 0,
		.cap_ambient = ex.caps_set ? ex.caps_ambient : 0,
		.caps_explicit = ex.caps_set,
		.umask = ex.umask_set ? (int)ex.umask : -1,
		.oom_score_adj = ex.oom_score_adj_set ? (int)ex.oom_score_adj : 0,
		.fds = fds,
		.nfds = nfds,
	};
	if (ex.flags & CP_EXEC_GROUPS) {
		static_assert(sizeof(gid_t) == sizeof(uint32_t), "gid_t is 32 bits");
		req.groups = (gid_t *)ex.groups;
		req.ngroups = ex.ngroups;
	}
	/* Without an explicit cwd, a user starts in their home, as a login would; root's is /root.
	 * An image may have no such folder: then "/", as docker starts there. */
	struct stat home_st;
	if (!req.cwd)
		req.cwd = (home && uid == 0 && stat(home, &home_st) == 0 && S_ISDIR(home_st.st_mode)) ? home : "/";
	struct spawn_result res;
	r = agent_spawn(&req, &res, errbuf, sizeof(errbuf));
	if (r < 0) {
		send_error(chan, -r, errbuf);
		goto out;
	}
	struct cp_started st = { .pid = (uint32_t)res.pid };
	if (cp_started_encode(&A.w, chan, &st) == 0)
		send_frame();
	if (req.detach) {
		/* Reaped as an orphan would be; OK ends the channel. */
		if (cp_empty_encode(&A.w, CP_OK, chan) == 0)
			send_frame();
		goto out;
	}

	memset(p, 0, sizeof(*p));
	p->used = true;
	if ((size_t)(p - A.procs) + 1 > A.procs_hwm)
		A.procs_hwm = (size_t)(p - A.procs) + 1;
	p->chan = chan;
	p->pid = res.pid;
	p->tty = req.tty;
	p->fd[0] = res.stdin_fd;
	p->fd[1] = res.stdout_fd;
	p->fd[2] = res.stderr_fd;
	p->credit[1] = p->credit[2] = CP_INITIAL_WINDOW;
	if (ex.timeout_ms)
		p->deadline_ms = now_ms() + ex.timeout_ms;
	for (int s = 0; s < 3; s++) {
		if (p->fd[s] < 0) {
			if (s > 0)
				p->eof_sent[s] = true; /* tty: no separate stderr */
			continue;
		}
		/* The status flags are known: a pipe's or a pty's end opened without any (F_SETFL
		 * leaves the access mode alone), so no F_GETFL first. */
		fcntl(p->fd[s], F_SETFL, O_NONBLOCK);
		int role = s == 0 ? ROLE_STDIN : s == 1 ? ROLE_STDOUT : ROLE_STDERR;
		struct epoll_event ev = { .events = s == 0 ? 0 : EPOLLIN, .data.u64 = ev_key(p, role) };
		epoll_ctl(A.epfd, EPOLL_CTL_ADD, p->fd[s], &ev);
	}
	if (req.tty && p->fd[2] < 0)
		send_eof(p, 2);
out:
	free(envp);
	free(groups);
	free(home);
	cp_exec_free(&ex);
}

static void handle_data(const struct cp_header *h, const uint8_t *payload)
{
	if (fs_data(h, payload) || fwd_data(h, payload))
		return;
	struct proc *p = proc_by_chan(h->chan);
	unsigned stream = h->flags & CP_FLAG_STREAM_MASK;
	if (!p)
		return; /* the process already ended: late stdin is dropped */
	/* Only stdin takes input. Anything else on a live channel is dropped, not answered:
	 * ERROR is final and would end the channel while its command runs on. */
	if (stream != CP_STREAM_STDIN || p->stdin_eof)
		return;
	if (h->len) {
		if (p->fd[0] < 0)
			return;
		if (p->inq_len + h->len > STDIN_QUEUE_MAX) {
			/* The peer sent past the credit we granted: it is broken or hostile. */
			send_error(h->chan, EBADMSG, "stdin sent past its flow-control credit");
			kill(-p->pid, SIGKILL);
			close_stream(p, 0);
			return;
		}
		uint8_t *nq = realloc(p->inq, p->inq_len + h->len);
		if (!nq)
			fatal_exit();
		p->inq = nq;
		memcpy(p->inq + p->inq_len, payload, h->len);
		p->inq_len += h->len;
	}
	if (h->flags & CP_FLAG_EOF)
		p->stdin_eof = true;
	flush_stdin(p);
}

static void handle_credit(const struct cp_header *h, const uint8_t *payload)
{
	struct cp_credit m;
	if (fs_credit(h, payload) || fwd_credit(h, payload) || watch_credit(h, payload))
		return;
	struct proc *p = proc_by_chan(h->chan);
	if (!p || cp_credit_decode(payload, h->len, &m) < 0 || m.stream < 1 || m.stream > 2)
		return;
	uint64_t c = (uint64_t)p->credit[m.stream] + m.bytes;
	p->credit[m.stream] = c > CP_INITIAL_WINDOW * 4ull ? CP_INITIAL_WINDOW * 4u : (uint32_t)c;
	if (p->fd[m.stream] >= 0 && p->credit[m.stream] > 0)
		watch(p, (int)m.stream, EPOLLIN);
}

static void handle_signal(const struct cp_header *h, const uint8_t *payload)
{
	struct cp_signal m;
	if (fs_cancel(h->chan) || watch_cancel(h->chan))
		return; /* a file transfer's or a watch's client went away */
	struct proc *p = proc_by_chan(h->chan);
	bool valid = cp_signal_decode(payload, h->len, &m) == 0 && m.signo > 0 && m.signo < NSIG;
	if (p) {
		/* On a command's channel: signal that command, or nothing (see handle_data). */
		if (valid && m.pid == 0 && !p->exited) {
			/* SIGKILL is what a client sends when it gives the command up (its handle
			 * freed, its connection closed, an SDK call cancelled): like a timeout, it
			 * takes the whole process group, or `sh -c 'sleep 1000'` would leave the
			 * sleep behind. Other signals go to the command alone, as a terminal's
			 * would reach its foreground process. */
			if (m.signo == SIGKILL && !p->tty)
				kill(-p->pid, SIGKILL);
			kill(p->tty ? -p->pid : p->pid, (int)m.signo);
		}
		return;
	}
	if (!valid) {
		send_error(h->chan, EINVAL, "invalid signal");
		return;
	}
	if (m.pid) {
		/* Any process of the sandbox but ourselves. */
		int r = (m.pid > 1 && m.pid < 0x40000000) ? kill((pid_t)m.pid, (int)m.signo) : (errno = ESRCH, -1);
		if (r < 0) {
			char msg[128];
			snprintf(msg, sizeof(msg), "kill %u: %s", m.pid, strerror(errno));
			send_error(h->chan, errno, msg);
		} else if (cp_empty_encode(&A.w, CP_OK, h->chan) == 0) {
			send_frame();
		}
		return;
	}
	send_error(h->chan, EINVAL, "SIGNAL without a pid needs a command's channel");
}

static void handle_resize(const struct cp_header *h, const uint8_t *payload)
{
	struct cp_resize m;
	struct proc *p = proc_by_chan(h->chan);
	if (!p || !p->tty || p->fd[1] < 0 || cp_resize_decode(payload, h->len, &m) < 0)
		return;
	struct winsize ws = { .ws_row = (unsigned short)m.rows, .ws_col = (unsigned short)m.cols };
	ioctl(p->fd[1], TIOCSWINSZ, &ws);
}

static void begin_shutdown(uint32_t grace_ms)
{
	if (A.shutting_down)
		return;
	A.shutting_down = true;
	A.shutdown_deadline_ms = now_ms() + grace_ms;
	agent_signal_all(SIGTERM);
	vm_console_stop();
}

/* EXEC with the descriptors that came with it (FDS, NFDS), which the agent never keeps: the
 * command has its own copies once it runs. */
static void handle_exec(uint32_t chan, const uint8_t *payload, size_t len, const int *fds, unsigned nfds)
{
	exec_request(chan, payload, len, fds, nfds);
	for (unsigned i = 0; i < nfds; i++)
		close(fds[i]);
}

/* FDS: the NFDS descriptors that came with the frame (a DIRECT's socket, an EXEC's). */
static void handle_frame(const struct cp_header *h, const uint8_t *payload, const int *fds, unsigned nfds)
{
	if (!A.have_init && h->type != CP_INIT && h->type != CP_HELLO)
		fatal_exit();
	switch (h->type) {
	case CP_HELLO: {
		struct cp_hello m;
		if (cp_hello_decode(payload, h->len, &m) < 0 || m.version != CP_VERSION)
			fatal_exit();
		cp_hello_free(&m);
		break;
	}
	case CP_INIT:
		if (A.have_init || cp_init_decode(payload, h->len, &A.init) < 0)
			fatal_exit();
		A.have_init = true;
		if (cp_empty_encode(&A.w, CP_OK, h->chan) == 0)
			send_frame();
		vm_console_start(&A.init);
		agent_spawner_prepare(A.init.seccomp_bpf, A.init.seccomp_len, A.init.cap_keep);
		agent_first_command_prepare_after_answer();
		break;
	case CP_EXEC: handle_exec(h->chan, payload, h->len, fds, nfds); break;
	case CP_FS: fs_request(h->chan, payload, h->len, A.ctl_is_socket); break;
	case CP_DIRECT: fs_direct(h->chan, nfds ? fds[0] : -1); break;
	case CP_WATCH: watch_request(h->chan, payload, h->len); break;
	case CP_DATA: handle_data(h, payload); break;
	case CP_CREDIT: handle_credit(h, payload); break;
	case CP_SIGNAL: handle_signal(h, payload); break;
	case CP_RESIZE: handle_resize(h, payload); break;
	case CP_FWD_CONNECT: fwd_connect(h->chan, payload, h->len); break;
	case CP_FWD_CLOSE: fwd_close(h->chan); break;
	case CP_EGRESS: vm_dns_egress(h, payload); break;
	case CP_VM_LISTENING: vm_ports_peers(payload, h->len); break;
	case CP_VM_MOUNT:
	case CP_VM_UNMOUNT: vm_mount_request(h, payload); break;
	case CP_SAVE:
		/* vm isolation: the shim saves the guest's disk next, with the guest paused; what
		 * commands wrote must be on that disk, not only in the guest's page cache. */
		sync();
		if (cp_empty_encode(&A.w, CP_OK, h->chan) == 0)
			send_frame();
		break;
	case CP_SHUTDOWN: {
		struct cp_stop m = { 0 };
		cp_stop_decode(payload, h->len, &m);
		begin_shutdown(m.timeout_ms ? m.timeout_ms : 10000);
		break;
	}
	default:
		send_error(h->chan, EOPNOTSUPP, "request not supported by the agent");
	}
}

/* Reap what has ended; false when no child is left at all (ECHILD). */
static bool reap_children(void)
{
	for (;;) {
		int st;
		pid_t pid = waitpid(-1, &st, WNOHANG);
		if (pid <= 0)
			return !(pid < 0 && errno == ECHILD);
		if (vm_console_reaped(pid))
			continue;
		struct proc *p = proc_by_pid(pid);
		if (!p)
			continue; /* an orphan or a detached command: reaping is all we owe it */
		p->exited = true;
		p->wait_status = st;
		p->exited_at_ms = now_ms();
		proc_maybe_finish(p, false);
	}
}

static void check_timers(void)
{
	uint64_t now = now_ms();
	for (size_t i = 0; i < A.procs_hwm; i++) {
		struct proc *p = &A.procs[i];
		if (!p->used)
			continue;
		if (!p->exited && p->deadline_ms && now >= p->deadline_ms) {
			/* The whole process group: a timeout must not leave grandchildren behind. */
			p->timed_out = true;
			kill(-p->pid, SIGKILL);
			kill(p->pid, SIGKILL);
			p->deadline_ms = 0;
		}
		if (p->exited && now >= p->exited_at_ms + EXIT_OUTPUT_GRACE_MS)
			proc_maybe_finish(p, true);
	}
}

static int next_timeout_ms(void)
{
	uint64_t now = now_ms(), next = UINT64_MAX;
	for (size_t i = 0; i < A.procs_hwm; i++) {
		struct proc *p = &A.procs[i];
		if (!p->used)
			continue;
		if (!p->exited && p->deadline_ms && p->deadline_ms < next)
			next = p->deadline_ms;
		if (p->exited && p->exited_at_ms + EXIT_OUTPUT_GRACE_MS < next)
			next = p->exited_at_ms + EXIT_OUTPUT_GRACE_MS;
	}
	if (A.shutting_down && A.shutdown_deadline_ms < next)
		next = A.shutdown_deadline_ms;
	int console = vm_console_timeout_ms();
	if (console >= 0 && now + (uint64_t)console < next)
		next = now + (uint64_t)console;
	if (next == UINT64_MAX)
		return -1;
	return next <= now ? 0 : (int)(next - now > 60000 ? 60000 : next - now);
}

static bool only_us_left(void)
{
	/* waitpid ECHILD: no child of ours, and as PID 1 (or a subreaper) every orphan is ours. */
	return waitpid(-1, NULL, WNOHANG | __WALL) < 0 && errno == ECHILD;
}

static void bring_up_loopback(void)
{
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return;
	struct ifreq ifr = { 0 };
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
	if (ioctl(s, SIOCGIFFLAGS, &ifr) == 0) {
		ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
		ioctl(s, SIOCSIFFLAGS, &ifr);
	}
	close(s);
}

static void handle_control_readable(void)
{
	/* In a container fd 3 is a unix socket that may bring a direct stream's socket; in a
	 * guest it is a virtio-serial port. */
	long n = A.ctl_is_socket ? cp_rxbuf_fill_fds(&A.rx, A.ctl) : cp_rxbuf_fill(&A.rx, A.ctl);
	if (n == -EAGAIN)
		return;
	if (n <= 0) {
		/* The shim is gone: so is the sandbox. */
		agent_signal_all(SIGKILL);
		agent_exit(0);
	}
	struct cp_header h;
	const uint8_t *payload;
	int k;
	while ((k = cp_rxbuf_peek(&A.rx, &h, &payload)) > 0) {
		/* Only these two frames carry descriptors; any other's are closed with its bytes. */
		int fds[CP_EXEC_MAX_FDS];
		unsigned nfds = 0;
		if (A.rx.nfds && (h.type == CP_DIRECT || h.type == CP_EXEC))
			nfds = cp_rxbuf_take_fds(&A.rx, &h, fds, h.type == CP_DIRECT ? 1 : CP_EXEC_MAX_FDS);
		handle_frame(&h, payload, fds, nfds);
		cp_rxbuf_consume(&A.rx, &h);
	}
	if (k < 0)
		fatal_exit();
}

/* Straight to the kernel: libc refuses its own internal signals (musl 32-34, glibc 32-33),
 * and those are exactly the ones a posix_spawn ancestor may have left ignored. */
static void reset_signal_dispositions(void)
{
	struct {
		void *handler;
		unsigned long flags;
		void *restorer;
		uint64_t mask;
	} dfl = { .handler = SIG_DFL };
	for (int s = 1; s <= 64; s++)
		if (s != SIGKILL && s != SIGSTOP)
			syscall(SYS_rt_sigaction, s, &dfl, NULL, sizeof(dfl.mask));
}

int main(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	/* Commands run as the sandbox's root must not be able to ptrace or read us. */
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	/* In a pod's shared pid namespace the agent is not PID 1: the sandbox's orphans must still
	 * come to it, to be reaped and to make "only us left" mean the sandbox's processes. */
	prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
	if (agent_vm_boot() < 0)
		return 1;

	A.ctl = AGENT_CONTROL_FD;
	if (fcntl(A.ctl, F_SETFD, FD_CLOEXEC) < 0)
		return 1;
	fcntl(A.ctl, F_SETFL, fcntl(A.ctl, F_GETFL) | O_NONBLOCK);
	cp_rxbuf_init(&A.rx);
	cp_writer_init(&A.w);
	struct stat cst;
	A.ctl_is_socket = fstat(A.ctl, &cst) == 0 && S_ISSOCK(cst.st_mode);
	bring_up_loopback();

	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	/* Ignored signals survive exec, and whoever started the shim may have ignored some
	 * (glibc's posix_spawn leaves its internal signals 32 and 33 ignored): commands must
	 * start from the defaults, so we do. Only SIGPIPE stays ignored here, and each command
	 * resets that one. */
	reset_signal_dispositions();
	signal(SIGPIPE, SIG_IGN);
	A.sigfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	A.epfd = epoll_create1(EPOLL_CLOEXEC);
	if (A.sigfd < 0 || A.epfd < 0)
		return 1;
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = ROLE_CONTROL };
	epoll_ctl(A.epfd, EPOLL_CTL_ADD, A.ctl, &ev);
	ev.data.u64 = ROLE_SIGNAL;
	epoll_ctl(A.epfd, EPOLL_CTL_ADD, A.sigfd, &ev);
	fwd_init(A.epfd);
	watch_init(A.epfd);
	if (fs_init(A.epfd) < 0)
		return 1;
	vm_dns_init(A.epfd);
	vm_ports_init(A.epfd);

	struct cp_hello hello = { .version = CP_VERSION, .role = "agent" };
	if (cp_hello_encode(&A.w, 0, &hello) < 0)
		return 1;
	send_frame();

	bool fs_busy = false;
	for (;;) {
		struct epoll_event evs[64];
		agent_flush();
		agent_first_command_prepare(A.epfd, fs_busy);
		fs_release();
		int n = epoll_wait(A.epfd, evs, 64, fs_busy ? 0 : next_timeout_ms());
		if (n < 0 && errno != EINTR)
			fatal_exit();
		for (int i = 0; i < n; i++) {
			uint64_t key = evs[i].data.u64;
			int role = (int)(key & 0xff);
			if (role == ROLE_CONTROL) {
				handle_control_readable();
				continue;
			}
			if (role == ROLE_SIGNAL) {
				drain_signals();
				reap_children();
				continue;
			}
			if (role == AGENT_ROLE_FWD) {
				fwd_event((size_t)(key >> 8), evs[i].events);
				continue;
			}
			if (role == AGENT_ROLE_DNS) {
				vm_dns_event();
				continue;
			}
			if (role == AGENT_ROLE_PORTS) {
				vm_ports_event((size_t)(key >> 8), evs[i].events);
				continue;
			}
			if (role == AGENT_ROLE_WATCH) {
				watch_event((size_t)(key >> 8), evs[i].events);
				continue;
			}
			if (role == AGENT_ROLE_FS) {
				fs_event((size_t)(key >> 8), evs[i].events);
				continue;
			}
			struct proc *p = &A.procs[key >> 8];
			if (!p->used)
				continue;
			if (role == ROLE_STDIN)
				flush_stdin(p);
			else if (role == ROLE_STDOUT && p->fd[1] >= 0)
				read_output(p, 1);
			else if (role == ROLE_STDERR && p->fd[2] >= 0)
				read_output(p, 2);
		}
		check_timers();
		vm_console_tick();
		fs_busy = fs_pump();
		if (A.shutting_down) {
			reap_children();
			if (only_us_left() || now_ms() >= A.shutdown_deadline_ms) {
				agent_flush();
				agent_exit(0);
			}
		}
	}
}
