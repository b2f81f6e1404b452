/* GET /v1/sandboxes/{id}/watch?path=P[&recursive=1]: a folder's changes in a sandbox as
 * server-sent events, the events of capsule_watch_next (capsule watch --json) as they come
 * (docs/serve.md, Watch).
 *
 * One request is one watch and one stream, so unlike a streaming exec there is no session and
 * no pump: the connection's own thread starts the watch and, in libmicrohttpd's content
 * callback, takes the next event only when the client can take more. What a stream holds is
 * one event and libmicrohttpd's block; a client that reads slower than the sandbox changes
 * leaves the library's window unread, the agent stops being granted credit, and what is lost
 * meanwhile comes as an overflow event, in its place in the stream (the library's flow
 * control, never a queue here). A token has at most --max-watches streams; each ends when its
 * path is gone, its sandbox stops or is removed, its client goes, or the server shuts down. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <microhttpd.h>
#include <openssl/crypto.h>

#include "api_internal.h"
#include "json.h"
#include "serve.h"
#include "util.h"

#define WATCH_BLOCK (16 * 1024)
#define WATCH_HEARTBEAT_MS 15000 /* a comment on a quiet stream, so that proxies keep it */

struct watch_stream {
	struct watch_stream *next;
	uint8_t owner[32];
	capsule_watch *w;
	int sock;
	char *pend;
	size_t pend_len, pend_off;
	bool done;
};

static pthread_mutex_t watches_lock = PTHREAD_MUTEX_INITIALIZER;
static struct watch_stream *watches;
static bool watches_stopping;
/* Written once at shutdown and never read: it stays readable, so every stream's poll sees it. */
static int watches_stop_fd = -1;

/* Into the list if the token has room, counted and added under one lock, so that concurrent
 * opens cannot both pass the limit: 0, -EDQUOT past it, -ESHUTDOWN once the server stops. */
static int stream_add(struct watch_stream *ws)
{
	pthread_mutex_lock(&watches_lock);
	unsigned n = 0;
	for (struct watch_stream *o = watches; o; o = o->next)
		n += !CRYPTO_memcmp(o->owner, ws->owner, 32);
	int r = watches_stopping ? -ESHUTDOWN : serve_state.opts.max_watches && n >= serve_state.opts.max_watches ? -EDQUOT : 0;
	if (r == 0 && watches_stop_fd < 0 && (watches_stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0)
		r = -errno;
	if (r == 0) {
		ws->next = watches;
		watches = ws;
	}
	pthread_mutex_unlock(&watches_lock);
	return r;
}

static void stream_free(void *cls)
{
	struct watch_stream *ws = cls;
	pthread_mutex_lock(&watches_lock);
	for (struct watch_stream **p = &watches; *p; p = &(*p)->next)
		if (*p == ws) {
			*p = ws->next;
			break;
		}
	pthread_mutex_unlock(&watches_lock);
	capsule_watch_free(ws->w);
	free(ws->pend);
	free(ws);
}

void serve_watches_shutdown(void)
{
	pthread_mutex_lock(&watches_lock);
	watches_stopping = true;
	if (watches_stop_fd >= 0) {
		uint64_t one = 1;
		if (write(watches_stop_fd, &one, sizeof(one)) < 0) {
			/* Only EAGAIN near 2^64: readable anyway. */
		}
	}
	pthread_mutex_unlock(&watches_lock);
}

static bool stopping(void)
{
	pthread_mutex_lock(&watches_lock);
	bool s = watches_stopping;
	pthread_mutex_unlock(&watches_lock);
	return s;
}

/* "event: NAME\ndata: JSON\n\n" as what is sent next. JSON is one line (the library's and
 * the writer's are). */
static void event_set(struct watch_stream *ws, const char *name, const char *json)
{
	free(ws->pend);
	ws->pend_off = 0;
	if (asprintf(&ws->pend, "event: %s\ndata: %s\n\n", name, json) < 0) {
		ws->pend = NULL;
		ws->pend_len = 0;
		return;
	}
	ws->pend_len = strlen(ws->pend);
}

/* The last event: 'end' when the path is gone, or 'error' ({"error": {code, message}}). */
static void event_last(struct watch_stream *ws, const char *code, const char *message)
{
	ws->done = true;
	if (!code) {
		event_set(ws, "end", "{}");
		return;
	}
	_cleanup_free_ char *text = serve_error_json(code, message);
	event_set(ws, "error", text ? text : "{}");
}

/* The event named by its kind ("create", ..., "overflow"), its data the library's line. */
static void event_change(struct watch_stream *ws, const char *json)
{
	_cleanup_free_ char *kind = NULL;
	json_get_string(json, strlen(json), "kind", &kind);
	bool word = kind && kind[0];
	for (const char *p = kind; word && *p; p++)
		word = *p >= 'a' && *p <= 'z';
	event_set(ws, word ? kind : "change", json);
}

/* libmicrohttpd's content callback: called when the client can take more, on the
 * connection's thread, the only one that touches the watch. Waits for the next event. */
static ssize_t watch_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	(void)pos;
	struct watch_stream *ws = cls;
	for (;;) {
		if (ws->pend_off < ws->pend_len) {
			size_t n = ws->pend_len - ws->pend_off;
			if (n > max)
				n = max;
			memcpy(buf, ws->pend + ws->pend_off, n);
			ws->pend_off += n;
			return (ssize_t)n;
		}
		free(ws->pend);
		ws->pend = NULL;
		ws->pend_len = ws->pend_off = 0;
		if (ws->done)
			return MHD_CONTENT_READER_END_OF_STREAM;
		if (stopping()) {
			event_last(ws, "shutting_down", "the server is shutting down");
			continue;
		}
		char *json = NULL;
		capsule_error err = { 0 };
		int r = capsule_watch_next(ws->w, &json, 0, &err);
		if (r == 1) {
			event_change(ws, json);
			free(json);
			continue;
		}
		if (r == 0) {
			event_last(ws, NULL, NULL);
			continue;
		}
		if (r != -EAGAIN) {
			event_last(ws, serve_stream_error_code(-r), err.message[0] ? err.message : strerror(-r));
			continue;
		}
		/* POLLRDHUP: the client closed its side (what it may send is not waited for). */
		struct pollfd pf[3] = { { .fd = capsule_watch_fd(ws->w), .events = POLLIN },
					{ .fd = watches_stop_fd, .events = POLLIN },
					{ .fd = ws->sock, .events = POLLRDHUP } };
		int n = poll(pf, 3, WATCH_HEARTBEAT_MS);
		if (n > 0 && (pf[2].revents & (POLLRDHUP | POLLHUP | POLLERR)))
			return MHD_CONTENT_READER_END_WITH_ERROR;
		if (n == 0 && (ws->pend = strdup(": keep-alive\n\n")))
			ws->pend_len = strlen(ws->pend);
	}
}

void handle_watch(struct MHD_Connection *c, struct request *rq)
{
	const char *path = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "path");
	const char *rec = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "recursive");
	if (!path || !path[0]) {
		respond_error(c, rq, 400, "invalid_argument", "'path' is required: an absolute path inside the sandbox");
		return;
	}
	bool recursive = rec && (!strcmp(rec, "1") || !strcmp(rec, "true"));
	if (rec && !recursive && strcmp(rec, "0") && strcmp(rec, "false")) {
		respond_error(c, rq, 400, "invalid_argument", "'recursive' must be 1 or 0 (true or false)");
		return;
	}
	struct watch_stream *ws = calloc(1, sizeof(*ws));
	if (!ws) {
		respond_error(c, rq, 500, "internal", "out of memory");
		return;
	}
	memcpy(ws->owner, rq->owner, 32);
	int r = stream_add(ws);
	if (r < 0) {
		free(ws);
		if (r == -ESHUTDOWN)
			respond_error(c, rq, 503, "shutting_down", "the server is shutting down");
		else if (r == -EDQUOT)
			respond_error(c, rq, 429, "limit_exceeded", "this token has %u watch streams open already (--max-watches)",
				      serve_state.opts.max_watches);
		else
			respond_error(c, rq, 500, "internal", "making the watches' stop event: %s", strerror(-r));
		return;
	}
	capsule_error err = { 0 };
	/* Returns once the agent watches (the tree's folders included): the answer's headers
	 * then tell the client that every change from here on is in the stream. */
	if (capsule_watch_start(rq->e->sb, path, recursive, &ws->w, &err) < 0) {
		stream_free(ws);
		respond_capsule_error(c, rq, &err);
		return;
	}
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
	ws->sock = ci ? ci->connect_fd : -1;
	struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, WATCH_BLOCK, watch_read, ws,
								       stream_free);
	if (!resp) {
		stream_free(ws);
		respond_error(c, rq, 500, "internal", "out of memory");
		return;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
	queue(c, rq, 200, resp, "text/event-stream");
}
