/* Commands: one connection per process, so that many can run at once from many threads
 * without a shared lock. Output that arrives while the caller is busy writing stdin is
 * queued here, and the queue is bounded by the flow-control credit we grant. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "parse.h"
#include "proto.h"
#include "sandbox.h"
#include "util.h"

/* Grant credit back in batches, not per frame. */
#define CREDIT_BATCH (CP_INITIAL_WINDOW / 4)

struct chunk {
	struct chunk *next;
	int stream;
	size_t len, off, cap;
	uint8_t data[];
};

struct capsule_process {
	struct conn own;
	struct conn *c;             /* &own, or the sandbox's creator connection, lent to us */
	capsule_sandbox *lender;    /* set when c is lent */
	uint32_t chan;
	pid_t pid;
	struct chunk *head, *tail;
	struct chunk *spare;   /* one consumed chunk kept for the next frame: no malloc per frame */
	uint32_t unacked[3];   /* bytes consumed by the caller, not yet credited back */
	uint64_t stdin_credit;
	bool stdin_closed;
	bool eof[3];
	bool exited;
	bool starting;         /* started without waiting: STARTED (the pid) not seen yet */
	capsule_exit_status status;
	bool failed;           /* the connection broke */
	capsule_error fail_err;
};

static int send_credit(capsule_process *p, int stream, capsule_error *err)
{
	struct cp_credit m = { .stream = (uint32_t)stream, .bytes = p->unacked[stream] };
	p->unacked[stream] = 0;
	int r = cp_credit_encode(&p->c->w, p->chan, &m);
	if (r < 0)
		return cap_err(err, -r, "encoding CREDIT");
	/* A shim that closed the connection after the EXIT (a one-command connection) has
	 * nothing left to credit: what is buffered here says how the command ended. */
	r = conn_send(p->c, err);
	return r == -ESHUTDOWN ? 0 : r;
}

/* Handle one frame from the shim. TIMEOUT as for conn_recv. */
static int pump(capsule_process *p, int timeout_ms, capsule_error *err)
{
	if (p->failed) {
		if (err)
			*err = p->fail_err;
		return -p->fail_err.code;
	}
	struct cp_header h;
	const uint8_t *payload;
	int r = conn_recv(p->c, &h, &payload, timeout_ms, err);
	if (r == -EAGAIN)
		return r;
	if (r < 0) {
		p->failed = true;
		cap_err_plain(&p->fail_err, -r == ESHUTDOWN ? ESHUTDOWN : -r, "%s",
			      -r == ESHUTDOWN ? "the sandbox stopped while the command was running" : err ? err->message : "connection lost");
		if (err)
			*err = p->fail_err;
		return -p->fail_err.code;
	}
	if (h.chan != p->chan) {
		conn_consume(p->c, &h);
		return 0;
	}
	switch (h.type) {
	case CP_DATA: {
		int stream = h.flags & CP_FLAG_STREAM_MASK;
		if (stream != CAPSULE_STDOUT && stream != CAPSULE_STDERR)
			break;
		if (h.len) {
			struct chunk *ch = p->spare;
			if (ch && ch->cap >= h.len) {
				p->spare = NULL;
			} else {
				size_t cap = h.len > CP_DATA_CHUNK ? h.len : CP_DATA_CHUNK;
				ch = malloc(sizeof(*ch) + cap);
				if (!ch) {
					conn_consume(p->c, &h);
					return cap_err(err, ENOMEM, "buffering output");
				}
				ch->cap = cap;
			}
			ch->next = NULL;
			ch->stream = stream;
			ch->len = h.len;
			ch->off = 0;
			memcpy(ch->data, payload, h.len);
			if (p->tail)
				p->tail->next = ch;
			else
				p->head = ch;
			p->tail = ch;
		}
		if (h.flags & CP_FLAG_EOF)
			p->eof[stream] = true;
		break;
	}
	case CP_STARTED: {
		struct cp_started st;
		if (p->starting && cp_started_decode(payload, h.len, &st) == 0)
			p->pid = (pid_t)st.pid;
		p->starting = false;
		break;
	}
	case CP_CREDIT: {
		struct cp_credit m;
		if (cp_credit_decode(payload, h.len, &m) == 0 && m.stream == CAPSULE_STDIN)
			p->stdin_credit += m.bytes;
		break;
	}
	case CP_EXIT: {
		struct cp_exit m;
		if (cp_exit_decode(payload, h.len, &m) == 0) {
			p->status.exit_code = m.exit_code;
			p->status.signal = (int)m.signal;
			p->status.timed_out = m.timed_out != 0;
		}
		p->exited = true;
		p->eof[1] = p->eof[2] = true;
		break;
	}
	case CP_ERROR:
		r = conn_error_from_frame(payload, h.len, &p->fail_err);
		p->failed = true;
		conn_consume(p->c, &h);
		if (err)
			*err = p->fail_err;
		return r;
	}
	conn_consume(p->c, &h);
	return 0;
}

/* A command still running when its handle goes is killed: by the shim when its own
 * connection closes, by us when the connection was lent and stays open. Frames still on
 * their way for its channel are skipped by the connection's next user. */
static void release_conn(capsule_process *p)
{
	if (!p->lender) {
		conn_close(p->c);
		return;
	}
	if (!p->exited && !p->failed && (p->pid > 0 || p->starting)) {
		/* A command whose STARTED is still on its way is killed too: the shim hands
		 * the agent EXEC before this SIGNAL. */
		struct cp_signal m = { .signo = SIGKILL };
		if (cp_signal_encode(&p->c->w, p->chan, &m) == 0)
			conn_send(p->c, NULL);
	}
	p->c->nonblocking = false;
	sandbox_return_conn(p->lender);
}

_Static_assert(CAPSULE_EXEC_MAX_FDS == CP_EXEC_MAX_FDS, "one bound on passed descriptors");

/* Descriptors to pass (--preserve-fds): checked here, so that a bad one fails with its number
 * before anything is sent. */
static int exec_fds_check(capsule_sandbox *sb, const int *fds, size_t nfds, capsule_error *err)
{
	if (nfds > CAPSULE_EXEC_MAX_FDS)
		return cap_err_plain(err, E2BIG, "exec options: %zu descriptors to pass, at most %d", nfds,
				     CAPSULE_EXEC_MAX_FDS);
	if (!fds)
		return cap_err_plain(err, EINVAL, "exec options: nfds without fds");
	for (size_t i = 0; i < nfds; i++)
		if (fds[i] < 0 || fcntl(fds[i], F_GETFD) < 0)
			return cap_err_plain(err, EBADF, "exec options: descriptor %d (fds[%zu]) is not open", fds[i], i);
	if (capsule_sandbox_isolation(sb) == CAPSULE_ISOLATION_VM)
		return cap_err_plain(err, EOPNOTSUPP, "sandbox '%s' is a vm: descriptors cannot be passed to its "
				     "commands (its agent is reached over virtio-serial, which carries bytes only)",
				     capsule_sandbox_name(sb));
	return 0;
}

static int exec_begin(capsule_process **out, capsule_sandbox *sb, const capsule_exec_options *o, bool nowait,
		      capsule_error *err)
{
	if (!o || o->version < 1 || o->version > CAPSULE_EXEC_OPTIONS_VERSION)
		return cap_err_plain(err, EINVAL, "exec options: unknown version (use CAPSULE_EXEC_OPTIONS_INIT)");
	bool v2 = o->version >= 2;
	int r;
	if (v2 && (o->ngroups > CP_EXEC_MAX_GROUPS || o->nrlimits > CP_EXEC_MAX_RLIMITS))
		return cap_err_plain(err, E2BIG, "exec options: at most %d groups and %d rlimits", CP_EXEC_MAX_GROUPS,
				     CP_EXEC_MAX_RLIMITS);
	if (v2 && ((o->caps_inheritable | o->caps_ambient) & ~o->caps || o->umask > 0777 || o->oom_score_adj > 1000))
		return cap_err_plain(err, EINVAL, "exec options: inheritable and ambient capabilities outside caps, a umask "
				     "beyond 0777 or an oom_score_adj beyond 1000");
	if (v2 && o->seccomp_len && (o->seccomp_len % 8 || o->seccomp_len > CP_MAX_SECCOMP_BYTES || !o->seccomp_bpf))
		return cap_err_plain(err, EINVAL, "exec options: a seccomp filter is whole sock_filter entries, at most %u bytes",
				     CP_MAX_SECCOMP_BYTES);
	size_t nfds = o->version >= 4 ? o->nfds : 0;
	if (nfds && (r = exec_fds_check(sb, o->fds, nfds, err)) < 0)
		return r;
	const char *sh_argv[] = { "/bin/sh", "-c", o->shell, NULL };
	const char *const *argv = o->argv ? o->argv : (o->shell ? sh_argv : NULL);
	if (!argv || !argv[0] || !argv[0][0])
		return cap_err_plain(err, EINVAL, "no command given");
	if (o->cwd && o->cwd[0] != '/')
		return cap_err_plain(err, EINVAL, "working directory '%s' is not an absolute path", o->cwd);
	int e = env_size_check(o->env, 0, NULL, err);
	if (e < 0)
		return e;

	capsule_process *p = calloc(1, sizeof(*p));
	if (!p)
		return cap_err(err, ENOMEM, "allocating a process");
	bool last = o->version >= 5 && o->last;
	p->c = nowait ? sandbox_borrow_idle_conn(sb, &p->chan)
		      : last ? sandbox_borrow_conn_last(sb, &p->chan) : sandbox_borrow_conn(sb, &p->chan);
	if (p->c) {
		p->lender = sb;
	} else if (nowait) {
		free(p);
		return cap_err_plain(err, EAGAIN, "no idle connection to sandbox '%s': start the command with "
				     "capsule_exec_start", capsule_sandbox_name(sb));
	} else {
		p->c = &p->own;
		p->chan = 1;
		if ((r = conn_open(p->c, capsule_sandbox_name(sb), err)) < 0) {
			free(p);
			return r;
		}
	}
	struct cp_exec m = {
		.argv = (char **)argv,
		.env = (char **)o->env,
		/* An image's WorkingDir and User are the defaults of every command, as in docker. */
		.cwd = (char *)(o->cwd ? o->cwd : sandbox_config(sb)->workdir),
		.user = (char *)(o->user ? o->user : sandbox_config(sb)->user),
		.flags = (o->tty ? CP_EXEC_TTY : 0) | (o->stdin_open ? CP_EXEC_STDIN : 0) | (o->detach ? CP_EXEC_DETACH : 0),
		.rows = o->rows,
		.cols = o->cols,
		.timeout_ms = o->timeout_ms,
	};
	if (v2) {
		if (o->groups_set) {
			m.flags |= CP_EXEC_GROUPS;
			m.ngroups = o->ngroups;
			for (size_t i = 0; i < o->ngroups; i++)
				m.groups[i] = o->groups[i];
		}
		m.caps_set = o->caps_set;
		m.caps = o->caps;
		m.caps_inheritable = o->caps_inheritable;
		m.caps_ambient = o->caps_ambient;
		m.umask_set = o->umask_set;
		m.umask = o->umask;
		m.oom_score_adj_set = o->oom_score_adj_set;
		m.oom_score_adj = o->oom_score_adj;
		m.nrlimits = o->nrlimits;
		for (size_t i = 0; i < o->nrlimits; i++)
			m.rlimits[i] = (struct cp_rlimit){ (uint32_t)o->rlimits[i].resource, o->rlimits[i].soft,
							   o->rlimits[i].hard };
		m.seccomp_bpf = (uint8_t *)o->seccomp_bpf;
		m.seccomp_len = o->seccomp_len;
		if (o->version >= 3 && o->new_privs)
			m.flags |= CP_EXEC_NEW_PRIVS;
	}
	m.nfds = (uint32_t)nfds;
	if ((r = cp_exec_encode(&p->c->w, p->chan, &m)) < 0) {
		r = cap_err(err, -r, "the command is too large to send");
		goto fail;
	}
	if ((r = conn_send_fds(p->c, o->fds, nfds, err)) < 0)
		goto fail;
	p->stdin_credit = CP_INITIAL_WINDOW;
	p->stdin_closed = !o->stdin_open;
	if (nowait) {
		p->starting = true;
		p->c->nonblocking = true;
		*out = p;
		return 0;
	}
	for (;;) {
		struct cp_header h;
		const uint8_t *payload;
		if ((r = conn_recv(p->c, &h, &payload, -1, err)) < 0) {
			if (r == -ESHUTDOWN)
				r = sandbox_gone(sb, err);
			goto fail;
		}
		if (h.chan != p->chan) {
			conn_consume(p->c, &h);
			continue;
		}
		if (h.type == CP_ERROR) {
			r = conn_error_from_frame(payload, h.len, err);
			conn_consume(p->c, &h);
			goto fail;
		}
		if (h.type == CP_STARTED) {
			struct cp_started st;
			if (cp_started_decode(payload, h.len, &st) < 0) {
				r = cap_err_plain(err, EPROTO, "malformed STARTED from the sandbox");
				goto fail;
			}
			p->pid = (pid_t)st.pid;
			conn_consume(p->c, &h);
			break;
		}
		conn_consume(p->c, &h);
	}
	if (o->detach) {
		/* The OK that ends a detached command's channel. */
		p->exited = true;
		p->eof[1] = p->eof[2] = true;
	}
	*out = p;
	return 0;
fail:
	release_conn(p);
	free(p);
	return r;
}

int capsule_exec_start(capsule_process **out, capsule_sandbox *sb, const capsule_exec_options *o, capsule_error *err)
{
	return exec_begin(out, sb, o, false, err);
}

int capsule_exec_start_nowait(capsule_process **out, capsule_sandbox *sb, const capsule_exec_options *o,
			      capsule_error *err)
{
	if (o && o->version >= 1 && o->version <= CAPSULE_EXEC_OPTIONS_VERSION && o->detach)
		return cap_err_plain(err, EINVAL, "a detached command cannot be started without waiting");
	return exec_begin(out, sb, o, true, err);
}

static bool all_output_done(const capsule_process *p)
{
	return !p->head && p->eof[1] && p->eof[2];
}

ssize_t capsule_process_read(capsule_process *p, int *stream, void *buf, size_t cap, capsule_error *err)
{
	for (;;) {
		if (p->head) {
			struct chunk *ch = p->head;
			size_t n = ch->len - ch->off;
			if (n > cap)
				n = cap;
			memcpy(buf, ch->data + ch->off, n);
			ch->off += n;
			*stream = ch->stream;
			p->unacked[ch->stream] += (uint32_t)n;
			if (ch->off == ch->len) {
				p->head = ch->next;
				if (!p->head)
					p->tail = NULL;
				free(p->spare);
				p->spare = ch;
			}
			if (p->unacked[*stream] >= CREDIT_BATCH && !p->exited) {
				int r = send_credit(p, *stream, err);
				if (r < 0)
					return r;
			}
			return (ssize_t)n;
		}
		if (all_output_done(p))
			return 0;
		/* Everything read so far is credited before we wait, or we could wait forever on
		 * a sender that is itself waiting for credit. */
		for (int s = 1; s <= 2; s++) {
			if (p->unacked[s] && !p->exited) {
				int r = send_credit(p, s, err);
				if (r < 0)
					return r;
			}
		}
		int r = pump(p, p->c->nonblocking ? 0 : -1, err);
		if (r < 0)
			return r;
	}
}

ssize_t capsule_process_write(capsule_process *p, const void *buf, size_t len, capsule_error *err)
{
	if (p->stdin_closed)
		return cap_err_plain(err, EPIPE, "stdin of the command is closed");
	const uint8_t *d = buf;
	size_t done = 0;
	while (done < len) {
		if (p->exited)
			return cap_err_plain(err, EPIPE, "the command has exited");
		if (p->stdin_credit == 0) {
			if (p->c->nonblocking && done)
				return (ssize_t)done;
			int r = pump(p, p->c->nonblocking ? 0 : -1, err);
			if (r == -EAGAIN)
				return done ? (ssize_t)done : -EAGAIN;
			if (r < 0)
				return r;
			continue;
		}
		size_t n = len - done;
		if (n > CP_DATA_CHUNK)
			n = CP_DATA_CHUNK;
		if (n > p->stdin_credit)
			n = (size_t)p->stdin_credit;
		int r = cp_data_encode(&p->c->w, p->chan, CAPSULE_STDIN, false, d + done, n);
		if (r < 0)
			return cap_err(err, -r, "encoding stdin");
		if ((r = conn_send(p->c, err)) < 0)
			return r;
		p->stdin_credit -= n;
		done += n;
	}
	return (ssize_t)done;
}

int capsule_process_close_stdin(capsule_process *p, capsule_error *err)
{
	if (p->stdin_closed)
		return 0;
	p->stdin_closed = true;
	int r = cp_data_encode(&p->c->w, p->chan, CAPSULE_STDIN, true, NULL, 0);
	if (r < 0)
		return cap_err(err, -r, "encoding EOF");
	r = conn_send(p->c, err);
	return r == -ESHUTDOWN ? 0 : r;
}

int capsule_process_signal(capsule_process *p, int signo, capsule_error *err)
{
	if (signo <= 0 || signo >= 65)
		return cap_err_plain(err, EINVAL, "invalid signal %d", signo);
	if (p->exited)
		return 0;
	struct cp_signal m = { .signo = (uint32_t)signo };
	int r = cp_signal_encode(&p->c->w, p->chan, &m);
	if (r < 0)
		return cap_err(err, -r, "encoding SIGNAL");
	return conn_send(p->c, err);
}

int capsule_process_resize(capsule_process *p, uint16_t rows, uint16_t cols, capsule_error *err)
{
	if (p->exited)
		return 0;
	struct cp_resize m = { .rows = rows, .cols = cols };
	int r = cp_resize_encode(&p->c->w, p->chan, &m);
	if (r < 0)
		return cap_err(err, -r, "encoding RESIZE");
	return conn_send(p->c, err);
}

int capsule_process_wait(capsule_process *p, capsule_exit_status *status, capsule_error *err)
{
	bool was_nb = p->c->nonblocking;
	p->c->nonblocking = false;
	int r = 0;
	while (!p->exited) {
		/* Discard output, crediting it so the command is never stalled on us. */
		while (p->head) {
			struct chunk *ch = p->head;
			p->unacked[ch->stream] += (uint32_t)(ch->len - ch->off);
			p->head = ch->next;
			free(ch);
		}
		p->tail = NULL;
		for (int s = 1; s <= 2; s++)
			if (p->unacked[s] && (r = send_credit(p, s, err)) < 0)
				goto out;
		if ((r = pump(p, -1, err)) < 0)
			goto out;
	}
	if (status)
		*status = p->status;
out:
	p->c->nonblocking = was_nb;
	return r;
}

pid_t capsule_process_pid(const capsule_process *p)
{
	return p->pid;
}

int capsule_process_fd(const capsule_process *p)
{
	return p->c->fd;
}

int capsule_process_set_nonblocking(capsule_process *p, bool nonblocking)
{
	p->c->nonblocking = nonblocking;
	return 0;
}

void capsule_process_free(capsule_process *p)
{
	if (!p)
		return;
	free(p->spare);
	while (p->head) {
		struct chunk *ch = p->head;
		p->head = ch->next;
		free(ch);
	}
	release_conn(p);
	free(p);
}

/* ---- run to completion ---- */

struct growbuf {
	char *buf;
	size_t len, cap, max;
};

static int growbuf_append(struct growbuf *g, const void *d, size_t n)
{
	if (g->len >= g->max)
		return 0;
	if (n > g->max - g->len)
		n = g->max - g->len;
	if (g->len + n + 1 > g->cap) {
		size_t cap = g->cap ? g->cap : 4096;
		while (cap < g->len + n + 1)
			cap *= 2;
		char *nb = realloc(g->buf, cap);
		if (!nb)
			return -ENOMEM;
		g->buf = nb;
		g->cap = cap;
	}
	memcpy(g->buf + g->len, d, n);
	g->len += n;
	g->buf[g->len] = '\0';
	return 0;
}

int capsule_exec(capsule_exec_result *out, capsule_sandbox *sb, const capsule_exec_options *opts,
		 const void *stdin_data, size_t stdin_len, size_t max_output, capsule_error *err)
{
	memset(out, 0, sizeof(*out));
	capsule_exec_options o = *opts;
	o.stdin_open = stdin_data != NULL;
	o.detach = false;
	capsule_process *p;
	int r = capsule_exec_start(&p, sb, &o, err);
	if (r < 0)
		return r;
	struct growbuf g[3] = { { 0 }, { .max = max_output }, { .max = max_output } };
	size_t written = 0;
	capsule_process_set_nonblocking(p, true);
	/* Per call, never static: threads run commands at the same time. */
	const size_t bufsize = 64 * 1024;
	_cleanup_free_ uint8_t *buf = malloc(bufsize);
	if (!buf) {
		r = cap_err(err, ENOMEM, "output buffer");
		goto out;
	}
	for (;;) {
		/* Interleave stdin and output, so that a command that writes before it has read
		 * all its input can never deadlock against us. */
		if (o.stdin_open && written < stdin_len) {
			ssize_t n = capsule_process_write(p, (const uint8_t *)stdin_data + written, stdin_len - written, err);
			if (n == -EAGAIN || n == -EPIPE) {
				if (n == -EPIPE)
					written = stdin_len;
			} else if (n < 0) {
				r = (int)n;
				goto out;
			} else {
				written += (size_t)n;
			}
			if (written == stdin_len)
				capsule_process_close_stdin(p, NULL);
		}
		int stream;
		ssize_t n = capsule_process_read(p, &stream, buf, bufsize, err);
		if (n == 0)
			break;
		if (n == -EAGAIN) {
			struct pollfd pfd = { .fd = capsule_process_fd(p), .events = POLLIN };
			if (o.stdin_open && written < stdin_len)
				pfd.events |= POLLOUT;
			poll(&pfd, 1, -1);
			continue;
		}
		if (n < 0) {
			r = (int)n;
			goto out;
		}
		if ((r = growbuf_append(&g[stream], buf, (size_t)n)) < 0) {
			r = cap_err(err, -r, "collecting output");
			goto out;
		}
	}
	if ((r = capsule_process_wait(p, &out->status, err)) < 0)
		goto out;
	out->stdout_buf = g[1].buf ? g[1].buf : strdup("");
	out->stdout_len = g[1].len;
	out->stderr_buf = g[2].buf ? g[2].buf : strdup("");
	out->stderr_len = g[2].len;
	capsule_process_free(p);
	return 0;
out:
	free(g[1].buf);
	free(g[2].buf);
	capsule_process_free(p);
	return r;
}

void capsule_exec_result_free(capsule_exec_result *r)
{
	if (!r)
		return;
	free(r->stdout_buf);
	free(r->stderr_buf);
	memset(r, 0, sizeof(*r));
}

int capsule_sandbox_kill(capsule_sandbox *sb, pid_t pid, int signo, capsule_error *err)
{
	if (pid <= 1)
		return cap_err_plain(err, EINVAL, "invalid pid %d (the sandbox's init cannot be signalled)", (int)pid);
	if (signo <= 0 || signo >= 65)
		return cap_err_plain(err, EINVAL, "invalid signal %d", signo);
	struct conn c;
	int r = conn_open(&c, capsule_sandbox_name(sb), err);
	if (r < 0)
		return r;
	struct cp_signal m = { .signo = (uint32_t)signo, .pid = (uint32_t)pid };
	if ((r = cp_signal_encode(&c.w, 1, &m)) < 0 || (r = conn_send(&c, err)) < 0)
		goto out;
	for (;;) {
		struct cp_header h;
		const uint8_t *payload;
		if ((r = conn_recv(&c, &h, &payload, 10000, err)) < 0)
			break;
		if (h.chan == 1 && h.type == CP_OK) {
			r = 0;
			break;
		}
		if (h.chan == 1 && h.type == CP_ERROR) {
			r = conn_error_from_frame(payload, h.len, err);
			break;
		}
		conn_consume(&c, &h);
	}
out:
	conn_close(&c);
	return r;
}
