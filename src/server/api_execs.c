/* Streaming exec in capsule serve: a command started by one request (POST .../execs), its
 * output read as server-sent events by another (GET .../execs/{eid}/events), its stdin fed and
 * its signals sent by others (docs/serve.md, Streaming exec).
 *
 * A capsule_process handle is not safe for concurrent calls, so each command has one pump
 * thread that alone touches it; requests meet that thread in the session below, under its
 * mutex, and wake it through an eventfd. Everything a session holds is bounded: output waiting
 * for its reader (EXEC_OUT_MAX: past it the pump stops reading, the library stops granting
 * credit, and the command blocks on its next write, so a slow reader slows the command), stdin
 * waiting for the command (EXEC_STDIN_MAX: past it the request that brings it waits), and the
 * sessions themselves (--max-execs per token). A command with no reader attached for
 * --exec-grace seconds is killed, so that a client that vanished leaves nothing running. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <unistd.h>

#include <microhttpd.h>
#include <openssl/crypto.h>

#include "api_internal.h"
#include "json.h"
#include "serve.h"
#include "util.h"

#define EXEC_OUT_MAX (256 * 1024)  /* output waiting for the reader, per command */
#define EXEC_STDIN_MAX (64 * 1024) /* stdin waiting for the command */
#define READ_CHUNK (64 * 1024)
#define HEARTBEAT_MS 15000         /* an SSE comment on a quiet stream, so proxies and MHD keep it */
#define EVENTS_BLOCK (32 * 1024)

struct out_chunk {
	struct out_chunk *next;
	int stream;
	size_t len;
	char data[];
};

struct exec_session {
	struct exec_session *next;
	char id[32];
	struct sandbox_entry *e;   /* a reference: the handle outlives the command */
	uint8_t owner[32];
	capsule_process *p;        /* the pump thread's alone; NULL for a command that never started */
	int pump_wake, reader_wake;
	bool started;              /* in the list, but only found once its pump runs */
	pthread_mutex_t lock;
	pthread_cond_t space;      /* stdin writers wait here for room */
	/* Under lock: */
	struct out_chunk *head, *tail;
	size_t out_bytes;
	bool out_done;             /* every stream ended and the status is known, or it failed */
	capsule_exit_status status;
	bool failed;
	capsule_error fail_err;
	char *in;
	size_t in_len, in_cap;
	bool in_close;             /* close stdin once what is queued has gone in */
	bool stdin_gone;           /* closed, or the command exited: more stdin is refused */
	int signals[8];
	unsigned n_signals;
	bool attached;
	uint64_t detached_ms;
	bool exit_sent;            /* the last event went to a reader: nothing is left to keep */
	bool ending;               /* the server is shutting down */
	uint64_t started_ms;       /* /metrics: a command's time runs from its start to its end */
	unsigned refs;             /* the pump thread's, and one per request using it */
};

static pthread_mutex_t execs_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t execs_gone = PTHREAD_COND_INITIALIZER;
static struct exec_session *execs;
static unsigned execs_live;   /* sessions in the list: their pump threads run or are to */
static bool execs_stopping;

static void wake(int fd)
{
	uint64_t one = 1;
	if (write(fd, &one, sizeof(one)) < 0) {
		/* Only EAGAIN at a counter near 2^64: the fd is readable anyway. */
	}
}

static void drain(int fd)
{
	uint64_t v;
	if (read(fd, &v, sizeof(v)) < 0) {
		/* EAGAIN: nothing was pending. */
	}
}

static void session_unref(struct exec_session *s)
{
	if (!s)
		return;
	pthread_mutex_lock(&s->lock);
	bool last = --s->refs == 0;
	pthread_mutex_unlock(&s->lock);
	if (!last)
		return;
	while (s->head) {
		struct out_chunk *ch = s->head;
		s->head = ch->next;
		free(ch);
	}
	free(s->in);
	close(s->pump_wake);
	close(s->reader_wake);
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->space);
	entry_unref(s->e);
	free(s);
}

/* The caller's command EID in its sandbox E, with a reference, or NULL. */
static struct exec_session *session_get(struct request *rq)
{
	struct exec_session *found = NULL;
	pthread_mutex_lock(&execs_lock);
	for (struct exec_session *s = execs; s; s = s->next)
		if (s->started && s->e == rq->e && !strcmp(s->id, rq->eid)) {
			/* Once its exit was read a command is gone, even while its pump winds down. */
			pthread_mutex_lock(&s->lock);
			if (!s->exit_sent) {
				s->refs++;
				found = s;
			}
			pthread_mutex_unlock(&s->lock);
			break;
		}
	pthread_mutex_unlock(&execs_lock);
	return found;
}

static struct exec_session *session_or_404(struct MHD_Connection *c, struct request *rq)
{
	struct exec_session *s = session_get(rq);
	if (!s)
		respond_error(c, rq, 404, "not_found", "no command '%s' in sandbox '%s'", rq->eid, rq->id);
	return s;
}

/* Under s->lock: the end of the command's output, whatever ended it. */
static void finish(struct exec_session *s)
{
	/* Counted once, when its end is known, as the plain exec route counts at its answer. */
	if (!s->out_done)
		metrics_count_exec(s->e, now_ms() - s->started_ms,
				   s->failed ? "error" : s->status.timed_out ? "timed_out" : "exited");
	s->out_done = true;
	s->stdin_gone = true;
	s->in_len = 0;
	pthread_cond_broadcast(&s->space);
	wake(s->reader_wake);
}

/* Under s->lock. */
static void fail(struct exec_session *s, const capsule_error *err)
{
	if (s->out_done)
		return;
	s->failed = true;
	s->fail_err = *err;
	finish(s);
}

/* Under s->lock. */
static void push_output(struct exec_session *s, int stream, const char *data, size_t len)
{
	struct out_chunk *ch = malloc(sizeof(*ch) + len);
	if (!ch) {
		capsule_error err = { 0 };
		cap_err(&err, ENOMEM, "buffering output");
		fail(s, &err);
		return;
	}
	ch->next = NULL;
	ch->stream = stream;
	ch->len = len;
	memcpy(ch->data, data, len);
	if (s->tail)
		s->tail->next = ch;
	else
		s->head = ch;
	s->tail = ch;
	s->out_bytes += len;
}

/* One round of the pump: stdin, signals, output, as far as each goes without waiting.
 * Returns whether the process fd should be polled. */
static bool pump_step(struct exec_session *s, char *buf)
{
	capsule_process *p = s->p;
	capsule_error err = { 0 };
	pthread_mutex_lock(&s->lock);
	int sigs[8];
	unsigned n_sigs = s->n_signals;
	memcpy(sigs, s->signals, sizeof(sigs));
	s->n_signals = 0;
	size_t in_len = s->in_len;
	bool done = s->out_done;
	pthread_mutex_unlock(&s->lock);
	if (done || !p)
		return false;

	/* Stdin before signals: what a client wrote before it signalled is on its way first. */
	bool want_credit = false;
	if (in_len) {
		/* Writers only append past in_len, so the bytes up to it are ours to send unlocked. */
		ssize_t n = capsule_process_write(p, s->in, in_len, &err);
		pthread_mutex_lock(&s->lock);
		if (n == -EAGAIN) {
			want_credit = true;
		} else if (n < 0) {
			/* EPIPE: the command closed its stdin or exited; the rest is dropped, as a pipe
			 * would. */
			s->stdin_gone = true;
			s->in_len = 0;
		} else {
			memmove(s->in, s->in + n, s->in_len - (size_t)n);
			s->in_len -= (size_t)n;
			want_credit = s->in_len > 0;
		}
		pthread_cond_broadcast(&s->space);
		pthread_mutex_unlock(&s->lock);
	}
	pthread_mutex_lock(&s->lock);
	bool close_now = s->in_close && s->in_len == 0 && !s->stdin_gone;
	if (close_now)
		s->stdin_gone = true;
	pthread_mutex_unlock(&s->lock);
	if (close_now)
		capsule_process_close_stdin(p, NULL);
	for (unsigned i = 0; i < n_sigs; i++)
		capsule_process_signal(p, sigs[i], NULL);

	for (;;) {
		pthread_mutex_lock(&s->lock);
		bool room = s->out_bytes < EXEC_OUT_MAX;
		pthread_mutex_unlock(&s->lock);
		if (!room)
			return want_credit;
		int stream = 0;
		ssize_t n = capsule_process_read(p, &stream, buf, READ_CHUNK, &err);
		if (n == -EAGAIN)
			return true;
		pthread_mutex_lock(&s->lock);
		if (n > 0) {
			push_output(s, stream, buf, (size_t)n);
			wake(s->reader_wake);
		} else if (n == 0) {
			pthread_mutex_unlock(&s->lock);
			capsule_exit_status st;
			int r = capsule_process_wait(p, &st, &err);
			pthread_mutex_lock(&s->lock);
			if (r < 0) {
				fail(s, &err);
			} else {
				s->status = st;
				finish(s);
			}
		} else {
			fail(s, &err);
		}
		bool over = s->out_done;
		pthread_mutex_unlock(&s->lock);
		if (over)
			return false;
	}
}

static void *pump_main(void *arg)
{
	struct exec_session *s = arg;
	uint64_t grace_ms = (uint64_t)serve_state.opts.exec_grace_s * 1000;
	char *buf = malloc(READ_CHUNK);
	if (s->p)
		capsule_process_set_nonblocking(s->p, true);
	for (;;) {
		bool poll_proc = buf ? pump_step(s, buf) : false;
		pthread_mutex_lock(&s->lock);
		if (!buf) {
			capsule_error err = { 0 };
			cap_err(&err, ENOMEM, "starting the command's pump");
			fail(s, &err);
		}
		bool stop = s->ending || s->exit_sent;
		int timeout = -1;
		if (!s->attached) {
			uint64_t idle = now_ms() - s->detached_ms;
			if (idle >= grace_ms) {
				capsule_error err = { 0 };
				cap_err_plain(&err, ECONNRESET, "killed: no client read its output for %u s (--exec-grace)",
					      serve_state.opts.exec_grace_s);
				fail(s, &err);
				stop = true;
			}
			timeout = (int)(grace_ms - idle);
		}
		if (s->ending) {
			capsule_error err = { 0 };
			cap_err_plain(&err, ESHUTDOWN, "the server is shutting down");
			fail(s, &err);
		}
		pthread_mutex_unlock(&s->lock);
		if (stop)
			break;
		struct pollfd pf[2] = { { .fd = s->pump_wake, .events = POLLIN },
					{ .fd = poll_proc ? capsule_process_fd(s->p) : -1, .events = POLLIN } };
		if (poll(pf, 2, timeout) > 0 && (pf[0].revents & POLLIN))
			drain(s->pump_wake);
	}
	free(buf);
	/* Out of the list before the handle goes, so no request finds a session half-ended. */
	pthread_mutex_lock(&execs_lock);
	for (struct exec_session **pp = &execs; *pp; pp = &(*pp)->next)
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	pthread_mutex_unlock(&execs_lock);
	/* A command still running is killed with its process group here. */
	capsule_process_free(steal_ptr(s->p));
	session_unref(s);
	pthread_mutex_lock(&execs_lock);
	execs_live--;
	pthread_cond_broadcast(&execs_gone);
	pthread_mutex_unlock(&execs_lock);
	return NULL;
}

void serve_execs_shutdown(void)
{
	pthread_mutex_lock(&execs_lock);
	execs_stopping = true;
	for (struct exec_session *s = execs; s; s = s->next) {
		pthread_mutex_lock(&s->lock);
		s->ending = true;
		pthread_mutex_unlock(&s->lock);
		wake(s->pump_wake);
	}
	while (execs_live > 0)
		pthread_cond_wait(&execs_gone, &execs_lock);
	pthread_mutex_unlock(&execs_lock);
}

/* ---- POST /v1/sandboxes/{id}/execs ---- */

static struct exec_session *session_new(struct request *rq, size_t in_cap)
{
	struct exec_session *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->pump_wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	s->reader_wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	s->in_cap = in_cap;
	s->in = malloc(in_cap);
	uint8_t rnd[8];
	if (s->pump_wake < 0 || s->reader_wake < 0 || !s->in || getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd)) {
		if (s->pump_wake >= 0)
			close(s->pump_wake);
		if (s->reader_wake >= 0)
			close(s->reader_wake);
		free(s->in);
		free(s);
		return NULL;
	}
	int n = snprintf(s->id, sizeof(s->id), "exec-");
	for (size_t i = 0; i < sizeof(rnd); i++)
		n += snprintf(s->id + n, sizeof(s->id) - (size_t)n, "%02x", rnd[i]);
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->space, NULL);
	memcpy(s->owner, rq->owner, 32);
	s->refs = 1;
	s->detached_ms = now_ms();
	pthread_mutex_lock(&serve_state.lock);
	rq->e->refs++;
	pthread_mutex_unlock(&serve_state.lock);
	s->e = rq->e;
	return s;
}

/* Into the list if the token has room, counted and added under one lock so that concurrent
 * starts cannot both pass the limit: 0, -EDQUOT past it, -ESHUTDOWN once the server stops.
 * From here the session counts as live, so that shutdown waits for it. */
static int session_add(struct exec_session *s)
{
	pthread_mutex_lock(&execs_lock);
	unsigned n = 0;
	for (struct exec_session *o = execs; o; o = o->next)
		n += !CRYPTO_memcmp(o->owner, s->owner, 32);
	int r = execs_stopping ? -ESHUTDOWN : serve_state.opts.max_execs && n >= serve_state.opts.max_execs ? -EDQUOT : 0;
	if (r == 0) {
		s->next = execs;
		execs = s;
		execs_live++;
	}
	pthread_mutex_unlock(&execs_lock);
	return r;
}

/* A session whose pump never started: out of the list, and the caller's reference dropped. */
static void session_drop(struct exec_session *s)
{
	pthread_mutex_lock(&execs_lock);
	for (struct exec_session **pp = &execs; *pp; pp = &(*pp)->next)
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	execs_live--;
	pthread_cond_broadcast(&execs_gone);
	pthread_mutex_unlock(&execs_lock);
	capsule_process_free(steal_ptr(s->p));
	session_unref(s);
}

/* An answer about command S: its id and its sandbox's, the object left open. */
static void exec_json_begin(struct json_writer *w, const struct exec_session *s)
{
	json_init(w, false);
	json_object_begin(w);
	json_kv_string(w, "id", s->id);
	json_kv_string(w, "sandbox", s->e->id);
}

void handle_execs_start(struct MHD_Connection *c, struct request *rq)
{
	struct serve_exec_req req;
	capsule_error err = { 0 };
	if (serve_decode_exec(rq->body ? rq->body : "", rq->body_len, &req, &err) < 0) {
		respond_error(c, rq, 400, "invalid_request", "%s", err.message);
		return;
	}
	if (req.diff) {
		serve_exec_req_free(&req);
		respond_error(c, rq, 400, "invalid_request",
			      "field 'diff' is for POST .../exec; around a streaming command, GET .../diff?since=CHECKPOINT "
			      "after a checkpoint");
		return;
	}
	struct exec_session *s = session_new(rq, req.stdin_len > EXEC_STDIN_MAX ? req.stdin_len : EXEC_STDIN_MAX);
	if (!s) {
		serve_exec_req_free(&req);
		respond_error(c, rq, 500, "internal", "out of memory or file descriptors");
		return;
	}
	int added = session_add(s);
	if (added < 0) {
		serve_exec_req_free(&req);
		session_unref(s);
		if (added == -ESHUTDOWN)
			respond_error(c, rq, 503, "shutting_down", "the server is shutting down");
		else
			respond_error(c, rq, 429, "limit_exceeded",
				      "this token has %u commands streaming already (--max-execs)", serve_state.opts.max_execs);
		return;
	}
	capsule_exec_options o;
	serve_exec_options(&req, &o);
	o.stdin_open = true;
	s->started_ms = now_ms();
	int r = capsule_exec_start(&s->p, rq->e->sb, &o, &err);
	/* In the list already (for the limit): shutdown may look at it from here on. */
	pthread_mutex_lock(&s->lock);
	if (req.stdin_len)
		memcpy(s->in, req.stdin_data, req.stdin_len);
	s->in_len = req.stdin_len;
	/* Given stdin is all the command gets, as with the plain exec; without it, stdin stays
	 * open for POST .../stdin. */
	s->in_close = req.stdin_data != NULL;
	serve_exec_req_free(&req);
	if (r == -ENOENT || r == -EACCES) {
		/* As the plain exec route answers it: a command that is not there exits 127 (126 when
		 * it cannot be run) with the reason on stderr, as a shell would. */
		char line[600];
		int n = snprintf(line, sizeof(line), "%s\n", err.message);
		push_output(s, CAPSULE_STDERR, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
		s->status.exit_code = r == -ENOENT ? 127 : 126;
		finish(s);
	}
	pthread_mutex_unlock(&s->lock);
	if (r < 0 && r != -ENOENT && r != -EACCES) {
		metrics_count_exec(rq->e, now_ms() - s->started_ms, "error");
		session_drop(s);
		respond_capsule_error(c, rq, &err);
		return;
	}
	pid_t pid = s->p ? capsule_process_pid(s->p) : 0;
	/* The pump's own reference: this request keeps its own until it has answered, whatever
	 * the pump does meanwhile (at shutdown it may end at once). */
	pthread_mutex_lock(&s->lock);
	s->refs++;
	pthread_mutex_unlock(&s->lock);
	pthread_t t;
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	r = pthread_create(&t, &attr, pump_main, s);
	pthread_attr_destroy(&attr);
	if (r != 0) {
		pthread_mutex_lock(&s->lock);
		s->refs--;
		pthread_mutex_unlock(&s->lock);
		session_drop(s);
		respond_error(c, rq, 500, "internal", "starting the command's thread: %s", strerror(r));
		return;
	}
	struct json_writer w;
	exec_json_begin(&w, s);
	json_kv_int(&w, "pid", pid);
	json_object_end(&w);
	/* Found by other requests from here on. */
	pthread_mutex_lock(&execs_lock);
	s->started = true;
	pthread_mutex_unlock(&execs_lock);
	session_unref(s);
	respond_json(c, rq, 201, json_steal(&w, NULL));
}

/* ---- GET .../execs/{eid}: where it stands ---- */

void handle_execs_get(struct MHD_Connection *c, struct request *rq)
{
	struct exec_session *s = session_or_404(c, rq);
	if (!s)
		return;
	struct json_writer w;
	exec_json_begin(&w, s);
	pthread_mutex_lock(&s->lock);
	json_kv_bool(&w, "running", !s->out_done);
	json_kv_bool(&w, "attached", s->attached);
	json_kv_bool(&w, "stdin_open", !s->stdin_gone && !s->in_close);
	if (s->out_done && !s->failed) {
		json_kv_int(&w, "exit_code", s->status.exit_code);
		json_kv_int(&w, "signal", s->status.signal);
		json_kv_bool(&w, "timed_out", s->status.timed_out);
	}
	json_kv_uint(&w, "buffered", s->out_bytes);
	pthread_mutex_unlock(&s->lock);
	json_object_end(&w);
	session_unref(s);
	respond_json(c, rq, 200, json_steal(&w, NULL));
}

/* ---- GET .../execs/{eid}/events: server-sent events ---- */

struct events {
	struct exec_session *s;
	int sock;
	char *pend;
	size_t pend_len, pend_off;
	bool done;
	/* A UTF-8 character split between two reads waits here for the rest, so that text stays
	 * text; at most 3 bytes a stream. */
	char carry[3][4];
	size_t carry_len[3];
};

/* The length of the UTF-8 sequence a lead byte starts, 0 for a byte no sequence starts with. */
static size_t utf8_lead_len(unsigned char b)
{
	return b >= 0xc2 && b <= 0xdf ? 2 : b >= 0xe0 && b <= 0xef ? 3 : b >= 0xf0 && b <= 0xf4 ? 4 : 0;
}

/* How many bytes at the end of D[0..LEN) begin a character that is not complete yet. */
static size_t utf8_partial_tail(const char *d, size_t len)
{
	for (size_t k = 1; k <= 3 && k <= len; k++) {
		unsigned char b = (unsigned char)d[len - k];
		if ((b & 0xc0) == 0x80)
			continue;
		return utf8_lead_len(b) > k ? k : 0;
	}
	return 0;
}

static const char *stream_name(int stream)
{
	return stream == CAPSULE_STDERR ? "stderr" : "stdout";
}

static void event_data(struct json_writer *w, const char *data, size_t len)
{
	if (serve_utf8_valid(data, len)) {
		_cleanup_free_ char *text = strndup(data, len);
		json_kv_string(w, "data", text ? text : "");
		json_kv_string(w, "encoding", "utf-8");
	} else {
		_cleanup_free_ char *b = serve_base64(data, len);
		json_kv_string(w, "data", b ? b : "");
		json_kv_string(w, "encoding", "base64");
	}
}

/* Append "event: NAME\ndata: JSON\n\n" to ev->pend; JSON is taken. */
static void event_append(struct events *ev, const char *name, char *json)
{
	if (!json)
		return;
	size_t need = strlen(name) + strlen(json) + 20;
	char *p = realloc(ev->pend, ev->pend_len + need);
	if (p) {
		ev->pend = p;
		ev->pend_len += (size_t)snprintf(p + ev->pend_len, need, "event: %s\ndata: %s\n\n", name, json);
	}
	free(json);
}

static void event_output(struct events *ev, int stream, const char *data, size_t len)
{
	size_t cl = ev->carry_len[stream];
	_cleanup_free_ char *all = malloc(cl + len);
	if (!all)
		return;
	memcpy(all, ev->carry[stream], cl);
	memcpy(all + cl, data, len);
	size_t n = cl + len;
	size_t tail = utf8_partial_tail(all, n);
	if (tail && serve_utf8_valid(all, n - tail)) {
		memcpy(ev->carry[stream], all + n - tail, tail);
		ev->carry_len[stream] = tail;
		n -= tail;
	} else {
		ev->carry_len[stream] = 0;
	}
	if (!n)
		return;
	struct json_writer w;
	json_init(&w, false);
	json_object_begin(&w);
	event_data(&w, all, n);
	json_object_end(&w);
	event_append(ev, stream_name(stream), json_steal(&w, NULL));
}

/* Under s->lock: what is left of a split character, then the exit or the error. */
static void event_last(struct events *ev, struct exec_session *s)
{
	for (int st = CAPSULE_STDOUT; st <= CAPSULE_STDERR; st++)
		if (ev->carry_len[st]) {
			struct json_writer w;
			json_init(&w, false);
			json_object_begin(&w);
			event_data(&w, ev->carry[st], ev->carry_len[st]);
			json_object_end(&w);
			ev->carry_len[st] = 0;
			event_append(ev, stream_name(st), json_steal(&w, NULL));
		}
	if (s->failed) {
		int e = s->fail_err.code;
		event_append(ev, "error",
			     serve_error_json(s->ending ? "shutting_down" : serve_stream_error_code(e),
					      s->fail_err.message[0] ? s->fail_err.message : strerror(e ? e : EIO)));
	} else {
		struct json_writer w;
		json_init(&w, false);
		json_object_begin(&w);
		json_kv_int(&w, "exit_code", s->status.exit_code);
		json_kv_int(&w, "signal", s->status.signal);
		json_kv_bool(&w, "timed_out", s->status.timed_out);
		json_object_end(&w);
		event_append(ev, "exit", json_steal(&w, NULL));
	}
}

/* Called by libmicrohttpd when the client can take more. Blocks (this connection's thread)
 * until there is an event; a client gone in the meantime ends the response. */
static ssize_t events_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct events *ev = cls;
	struct exec_session *s = ev->s;
	for (;;) {
		if (ev->pend_off < ev->pend_len) {
			size_t n = ev->pend_len - ev->pend_off;
			if (n > max)
				n = max;
			memcpy(buf, ev->pend + ev->pend_off, n);
			ev->pend_off += n;
			return (ssize_t)n;
		}
		free(ev->pend);
		ev->pend = NULL;
		ev->pend_len = ev->pend_off = 0;
		if (ev->done)
			return MHD_CONTENT_READER_END_OF_STREAM;
		pthread_mutex_lock(&s->lock);
		struct out_chunk *ch = s->head;
		if (ch) {
			s->head = ch->next;
			if (!s->head)
				s->tail = NULL;
			s->out_bytes -= ch->len;
			pthread_mutex_unlock(&s->lock);
			wake(s->pump_wake); /* room again: the pump may read on */
			event_output(ev, ch->stream, ch->data, ch->len);
			free(ch);
			continue;
		}
		if (s->out_done) {
			event_last(ev, s);
			s->exit_sent = true;
			ev->done = true;
			pthread_mutex_unlock(&s->lock);
			wake(s->pump_wake);
			continue;
		}
		pthread_mutex_unlock(&s->lock);
		/* POLLRDHUP: the client closed its side; a client that sends more (a pipelined
		 * request) is not waited for, so POLLIN is not asked for. */
		struct pollfd pf[2] = { { .fd = s->reader_wake, .events = POLLIN }, { .fd = ev->sock, .events = POLLRDHUP } };
		int r = poll(pf, 2, HEARTBEAT_MS);
		if (r > 0 && (pf[1].revents & (POLLRDHUP | POLLHUP | POLLERR)))
			return MHD_CONTENT_READER_END_WITH_ERROR;
		if (r > 0 && (pf[0].revents & POLLIN))
			drain(s->reader_wake);
		if (r == 0 && (ev->pend = strdup(": keep-alive\n\n")))
			ev->pend_len = strlen(ev->pend);
	}
}

static void events_free(void *cls)
{
	struct events *ev = cls;
	struct exec_session *s = ev->s;
	pthread_mutex_lock(&s->lock);
	s->attached = false;
	s->detached_ms = now_ms();
	pthread_mutex_unlock(&s->lock);
	wake(s->pump_wake);
	session_unref(s);
	free(ev->pend);
	free(ev);
}

void handle_execs_events(struct MHD_Connection *c, struct request *rq)
{
	struct exec_session *s = session_or_404(c, rq);
	if (!s)
		return;
	pthread_mutex_lock(&s->lock);
	bool busy = s->attached;
	s->attached = true;
	pthread_mutex_unlock(&s->lock);
	if (busy) {
		session_unref(s);
		respond_error(c, rq, 409, "busy", "another client is reading the output of command '%s'", rq->eid);
		return;
	}
	struct events *ev = calloc(1, sizeof(*ev));
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
	struct MHD_Response *resp = NULL;
	if (ev) {
		ev->s = s;
		ev->sock = ci ? ci->connect_fd : -1;
		resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, EVENTS_BLOCK, events_read, ev, events_free);
	}
	if (!resp) {
		if (ev)
			events_free(ev);
		else
			session_unref(s);
		respond_error(c, rq, 500, "internal", "out of memory");
		return;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
	queue(c, rq, 200, resp, "text/event-stream");
}

/* ---- POST .../execs/{eid}/stdin: the raw body, then ?close=1 ---- */

struct stdin_req {
	struct exec_session *s;
	int sock;
	uint64_t taken, offered;
};

static void stdin_req_free(void *ctx)
{
	struct stdin_req *q = ctx;
	session_unref(q->s);
	free(q);
}

bool begin_stdin(struct MHD_Connection *c, struct request *rq)
{
	struct exec_session *s = session_or_404(c, rq);
	if (!s)
		return false;
	struct stdin_req *q = calloc(1, sizeof(*q));
	if (!q) {
		session_unref(s);
		respond_error(c, rq, 500, "internal", "out of memory");
		return false;
	}
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
	q->s = s;
	q->sock = ci ? ci->connect_fd : -1;
	rq->ctx = q;
	rq->ctx_free = stdin_req_free;
	return true;
}

/* Blocks until the command has room for all of it, it can take no more, or the client went. */
void stdin_chunk(struct request *rq, const char *data, size_t len)
{
	struct stdin_req *q = rq->ctx;
	struct exec_session *s = q->s;
	q->offered += len;
	pthread_mutex_lock(&s->lock);
	while (len && !s->stdin_gone && !s->in_close) {
		size_t room = s->in_cap - s->in_len;
		if (!room) {
			struct pollfd pf = { .fd = q->sock, .events = POLLRDHUP };
			if (poll(&pf, 1, 0) > 0)
				break; /* the client is gone: what it sent so far went in */
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec += 1;
			pthread_cond_timedwait(&s->space, &s->lock, &ts);
			continue;
		}
		size_t n = len < room ? len : room;
		memcpy(s->in + s->in_len, data, n);
		s->in_len += n;
		data += n;
		len -= n;
		q->taken += n;
		wake(s->pump_wake);
	}
	pthread_mutex_unlock(&s->lock);
}

void handle_execs_stdin(struct MHD_Connection *c, struct request *rq)
{
	struct stdin_req *q = rq->ctx;
	struct exec_session *s = q->s;
	const char *close_q = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "close");
	bool close_it = close_q && (!strcmp(close_q, "1") || !strcmp(close_q, "true"));
	pthread_mutex_lock(&s->lock);
	/* What was taken goes in unless the command exits first: then it is dropped, as a pipe's
	 * reader that exits drops what it did not read. */
	bool refused = q->taken < q->offered;
	if (close_it)
		s->in_close = true;
	pthread_mutex_unlock(&s->lock);
	wake(s->pump_wake);
	if (refused) {
		respond_error(c, rq, 409, "stdin_closed",
			      "the command's stdin is closed (closed before, or the command exited): %llu of %llu bytes went in",
			      (unsigned long long)q->taken, (unsigned long long)q->offered);
		return;
	}
	struct json_writer w;
	json_init(&w, false);
	json_object_begin(&w);
	json_kv_uint(&w, "written", q->taken);
	json_kv_bool(&w, "closed", close_it);
	json_object_end(&w);
	respond_json(c, rq, 200, json_steal(&w, NULL));
}

/* ---- POST .../execs/{eid}/signal ---- */

void handle_execs_signal(struct MHD_Connection *c, struct request *rq)
{
	int signo;
	capsule_error err = { 0 };
	if (serve_decode_signal(rq->body ? rq->body : "", rq->body_len, &signo, &err) < 0) {
		respond_error(c, rq, 400, "invalid_request", "%s", err.message);
		return;
	}
	struct exec_session *s = session_or_404(c, rq);
	if (!s)
		return;
	pthread_mutex_lock(&s->lock);
	bool over = s->out_done, full = false;
	if (!over) {
		bool queued = false;
		for (unsigned i = 0; i < s->n_signals; i++)
			queued |= s->signals[i] == signo;
		full = !queued && s->n_signals == sizeof(s->signals) / sizeof(s->signals[0]);
		if (!queued && !full)
			s->signals[s->n_signals++] = signo;
	}
	pthread_mutex_unlock(&s->lock);
	wake(s->pump_wake);
	session_unref(s);
	if (over)
		respond_error(c, rq, 409, "not_running", "command '%s' has exited", rq->eid);
	else if (full)
		respond_error(c, rq, 409, "busy", "command '%s' has 8 signals waiting to be sent", rq->eid);
	else
		respond_json(c, rq, 200, strdup("{\"sent\":true}"));
}
