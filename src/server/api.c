/* The routes of capsule serve, and the sandboxes it owns: the table of sandboxes and their
 * lifetimes, the token check, the responses, the route table and each request's life. The
 * handlers are in api_sandboxes.c, api_exec.c and api_files.c; what they share is in
 * api_internal.h.
 *
 * libmicrohttpd runs one thread per connection (bounded by --max-connections), so a handler
 * may block in the library (an exec, a file stream under flow control) without holding up
 * other clients. A sandbox the server made is an entry in one table under one mutex; every
 * request that uses it holds a reference, so that DELETE or the lifetime reaper can take it
 * out of the table at any time and the handle is freed only when the last request is done. */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>
#include <openssl/crypto.h>

#include "api_internal.h"
#include "json.h"
#include "serve.h"
#include "util.h"

#define REAPER_TICK_MS 200
/* How often the sandboxes with an idle_timeout are asked how long they have been idle: each
 * ask is a request to the sandbox's shim. */
#define IDLE_CHECK_MS 1000

struct serve_state serve_state = { .lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER };

/* ---- sandbox entries ------------------------------------------------------------------- */

void entry_free(struct sandbox_entry *e)
{
	if (!e)
		return;
	capsule_sandbox_free(e->sb);
	free(e->image);
	free(e->network);
	free(e->cpus);
	for (size_t i = 0; i < e->n_labels; i++) {
		free(e->labels[i].key);
		free(e->labels[i].value);
	}
	free(e);
}

void entry_unref(struct sandbox_entry *e)
{
	if (!e)
		return;
	pthread_mutex_lock(&serve_state.lock);
	bool last = --e->refs == 0;
	pthread_mutex_unlock(&serve_state.lock);
	if (last)
		entry_free(e);
}

/* Under the lock. */
void table_unlink(struct sandbox_entry *e)
{
	for (struct sandbox_entry **p = &serve_state.entries; *p; p = &(*p)->next)
		if (*p == e) {
			*p = e->next;
			e->next = NULL;
			e->in_table = false;
			return;
		}
}

/* The caller's sandbox ID with a reference, or NULL: another token's sandbox is not there
 * for this caller, exactly as one that never existed (no existence oracle). */
struct sandbox_entry *entry_get(const char *id, const uint8_t owner[32])
{
	struct sandbox_entry *found = NULL;
	pthread_mutex_lock(&serve_state.lock);
	for (struct sandbox_entry *e = serve_state.entries; e; e = e->next)
		if (e->sb && !strcmp(e->id, id) && !CRYPTO_memcmp(e->owner, owner, 32)) {
			e->refs++;
			found = e;
			break;
		}
	pthread_mutex_unlock(&serve_state.lock);
	return found;
}

/* Stop and remove the sandbox of an entry already out of the table, and drop the table's
 * reference. An ephemeral sandbox is removed by its stop; a detached one (--keep) needs rm. */
void entry_destroy(struct sandbox_entry *e)
{
	if (e->sb) {
		if (serve_state.opts.keep || e->detached)
			capsule_sandbox_remove(e->id, true, NULL);
		else
			capsule_sandbox_stop(e->sb, 0, NULL);
	}
	entry_unref(e);
}

/* ---- lifetimes -------------------------------------------------------------------------- */

static void tokens_refresh(void);

/* Sandboxes whose token was removed: reachable by no one, so they go at once rather than at
 * their timeout (revoking a token revokes what it made). Marked by pushing their deadline to
 * now. Under the lock; the store is read again only when the file changed. */
static void expire_orphans(void)
{
	if (serve_state.opts.single_owner)
		return; /* capsule mcp over stdio: no token store */
	/* A request may have reloaded the store first: compare generations, not this call's. */
	tokens_refresh();
	if (serve_state.tokens_gen == serve_state.tokens_gen_reaped)
		return;
	serve_state.tokens_gen_reaped = serve_state.tokens_gen;
	uint64_t now = now_ms();
	for (struct sandbox_entry *e = serve_state.entries; e; e = e->next)
		if (e->sb && !owner_has_token(e->owner))
			e->expires_ms = now;
}

/* idle_timeout: idle as the library defines it (capsule_sandbox_stats: no exec, no file
 * operation, no attached session), asked of each sandbox that has one at most once every
 * IDLE_CHECK_MS; one idle that long is marked, like an orphan, by its deadline. Called and
 * returns under the lock, which it lets go while it asks the shims. */
static void expire_idle(void)
{
	static uint64_t next_ms;
	uint64_t now = now_ms();
	if (now < next_ms)
		return;
	next_ms = now + IDLE_CHECK_MS;
	size_t n = 0;
	for (struct sandbox_entry *e = serve_state.entries; e; e = e->next)
		n += e->sb && e->idle_timeout_s;
	if (n == 0)
		return;
	struct sandbox_entry **v = calloc(n, sizeof(*v));
	bool *idle = calloc(n, sizeof(*idle));
	if (!v || !idle) {
		free(v);
		free(idle);
		return;
	}
	size_t k = 0;
	for (struct sandbox_entry *e = serve_state.entries; e && k < n; e = e->next)
		if (e->sb && e->idle_timeout_s) {
			e->refs++;
			v[k++] = e;
		}
	pthread_mutex_unlock(&serve_state.lock);
	for (size_t i = 0; i < k; i++) {
		capsule_stats st;
		idle[i] = capsule_sandbox_stats(v[i]->sb, &st, NULL) == 0 && st.active == 0 &&
			  st.idle_ms >= (uint64_t)v[i]->idle_timeout_s * 1000;
	}
	pthread_mutex_lock(&serve_state.lock);
	for (size_t i = 0; i < k; i++)
		if (idle[i])
			v[i]->expires_ms = now_ms();
	pthread_mutex_unlock(&serve_state.lock);
	for (size_t i = 0; i < k; i++)
		entry_unref(v[i]);
	pthread_mutex_lock(&serve_state.lock);
	free(v);
	free(idle);
}

static void *reaper_main(void *arg)
{
	pthread_mutex_lock(&serve_state.lock);
	while (!serve_state.stopping) {
		expire_orphans();
		expire_idle();
		uint64_t now = now_ms();
		struct sandbox_entry *expired = NULL;
		for (struct sandbox_entry *e = serve_state.entries; e; e = e->next)
			if (e->sb && e->expires_ms <= now) {
				expired = e;
				break;
			}
		if (expired) {
			table_unlink(expired);
			pthread_mutex_unlock(&serve_state.lock);
			entry_destroy(expired);
			pthread_mutex_lock(&serve_state.lock);
			continue;
		}
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_nsec += REAPER_TICK_MS * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&serve_state.wake, &serve_state.lock, &ts);
	}
	pthread_mutex_unlock(&serve_state.lock);
	return NULL;
}

int serve_api_init(const struct serve_options *opts, capsule_error *err)
{
	serve_state.opts = *opts;
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&serve_state.wake, &ca);
	pthread_condattr_destroy(&ca);
	int r = pthread_create(&serve_state.reaper, NULL, reaper_main, NULL);
	if (r != 0)
		return cap_err(err, r, "starting the lifetime thread");
	serve_state.reaper_started = true;
	return 0;
}

unsigned serve_api_in_flight(void)
{
	pthread_mutex_lock(&serve_state.lock);
	unsigned n = serve_state.in_flight;
	pthread_mutex_unlock(&serve_state.lock);
	return n;
}

void serve_api_shutdown(void)
{
	pthread_mutex_lock(&serve_state.lock);
	serve_state.stopping = true;
	pthread_cond_broadcast(&serve_state.wake);
	pthread_mutex_unlock(&serve_state.lock);
	if (serve_state.reaper_started)
		pthread_join(serve_state.reaper, NULL);
	serve_watches_shutdown();
	serve_execs_shutdown();
	for (;;) {
		pthread_mutex_lock(&serve_state.lock);
		struct sandbox_entry *e = serve_state.entries;
		if (e)
			table_unlink(e);
		pthread_mutex_unlock(&serve_state.lock);
		if (!e)
			break;
		if (serve_state.opts.keep)
			entry_unref(e); /* detached: it runs on, `capsule ps` shows it */
		else
			entry_destroy(e);
	}
}

void serve_api_free(void)
{
	pthread_mutex_lock(&serve_state.lock);
	free(serve_state.tokens);
	serve_state.tokens = NULL;
	serve_state.n_tokens = 0;
	pthread_mutex_unlock(&serve_state.lock);
}

/* ---- tokens ----------------------------------------------------------------------------- */

/* The store is read again whenever the file changed, so `capsule token rm` takes effect at
 * the next request without a restart. Under the lock. */
static void tokens_refresh(void)
{
	struct stat st;
	if (stat(serve_tokens_path(), &st) < 0)
		memset(&st, 0, sizeof(st));
	if (serve_state.tokens_loaded && st.st_ino == serve_state.tokens_st.st_ino &&
	    st.st_dev == serve_state.tokens_st.st_dev && st.st_size == serve_state.tokens_st.st_size &&
	    st.st_mtim.tv_sec == serve_state.tokens_st.st_mtim.tv_sec &&
	    st.st_mtim.tv_nsec == serve_state.tokens_st.st_mtim.tv_nsec)
		return;
	struct serve_token *v;
	size_t n;
	capsule_error err = { 0 };
	if (serve_tokens_load(&v, &n, &err) < 0) {
		/* A store that cannot be read lets no one in, rather than the last one read. */
		fprintf(stderr, "capsule serve: %s\n", err.message);
		v = NULL;
		n = 0;
	}
	free(serve_state.tokens);
	serve_state.tokens = v;
	serve_state.n_tokens = n;
	serve_state.tokens_st = st;
	serve_state.tokens_loaded = true;
	serve_state.tokens_gen++;
}

/* Under the lock. */
bool owner_has_token(const uint8_t owner[32])
{
	if (serve_state.opts.single_owner)
		return true;
	for (size_t i = 0; i < serve_state.n_tokens; i++)
		if (!CRYPTO_memcmp(serve_state.tokens[i].hash, owner, 32))
			return true;
	return false;
}

/* Every stored hash is compared, in constant time, whatever matches first. */
static bool token_check(const char *token, char name_out[SERVE_TOKEN_NAME_MAX + 1], uint8_t hash_out[32],
			bool *admin_out)
{
	uint8_t h[32];
	serve_token_hash(token, strlen(token), h);
	bool ok = false;
	pthread_mutex_lock(&serve_state.lock);
	tokens_refresh();
	for (size_t i = 0; i < serve_state.n_tokens; i++)
		if (!CRYPTO_memcmp(serve_state.tokens[i].hash, h, 32) && !ok) {
			ok = true;
			memcpy(name_out, serve_state.tokens[i].name, SERVE_TOKEN_NAME_MAX + 1);
			memcpy(hash_out, h, 32);
			*admin_out = serve_state.tokens[i].admin;
		}
	pthread_mutex_unlock(&serve_state.lock);
	return ok;
}

/* ---- responses ------------------------------------------------------------------------- */

enum MHD_Result queue(struct MHD_Connection *c, struct request *rq, unsigned status, struct MHD_Response *resp,
		      const char *content_type)
{
	if (!resp)
		return MHD_NO;
	if (content_type)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
	rq->status = status;
	rq->responded = true;
	/* Counted as it is answered, so that a client that has its answer finds it counted. */
	metrics_count_request(rq);
	if (rq->first_call && !rq->has_body) {
		rq->deferred = resp;
		return MHD_YES;
	}
	enum MHD_Result r = MHD_queue_response(c, status, resp);
	MHD_destroy_response(resp);
	return r;
}

/* A response of the JSON text TEXT (taken: freed), or NULL when memory ran out. */
static struct MHD_Response *json_response(char *text)
{
	if (!text)
		return NULL;
	size_t len = strlen(text);
	/* A trailing newline, so that `curl` output ends its line. */
	char *t = realloc(text, len + 2);
	if (t) {
		text = t;
		text[len++] = '\n';
		text[len] = '\0';
	}
	struct MHD_Response *resp = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
	if (!resp)
		free(text);
	return resp;
}

/* TEXT is taken (freed); NULL stands for "out of memory". */
enum MHD_Result respond_json(struct MHD_Connection *c, struct request *rq, unsigned status, char *text)
{
	struct MHD_Response *resp = json_response(text);
	if (!resp) {
		static const char oom[] = "{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}\n";
		return queue(c, rq, 500,
			     MHD_create_response_from_buffer(sizeof(oom) - 1, (void *)oom, MHD_RESPMEM_PERSISTENT),
			     "application/json");
	}
	return queue(c, rq, status, resp, "application/json");
}

char *serve_error_json(const char *code, const char *message)
{
	struct json_writer w;
	json_init(&w, false);
	json_object_begin(&w);
	json_key(&w, "error");
	json_object_begin(&w);
	json_kv_string(&w, "code", code);
	json_kv_string(&w, "message", message);
	json_object_end(&w);
	json_object_end(&w);
	return json_steal(&w, NULL);
}

const char *serve_stream_error_code(int e)
{
	return e == ESHUTDOWN || e == ECONNRESET || e == EPIPE || e == ENOTCONN ? "sandbox_not_running" : "internal";
}

enum MHD_Result respond_error(struct MHD_Connection *c, struct request *rq, unsigned status, const char *code,
			      const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	/* One line, always: library messages quote paths that a client chose. */
	for (char *p = msg; *p; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	return respond_json(c, rq, status, serve_error_json(code, msg));
}

bool sandbox_paused(capsule_sandbox *sb)
{
	capsule_sandbox_info info;
	return sb && capsule_sandbox_inspect(sb, &info, NULL) == 0 && !strcmp(info.state, "paused");
}

/* The library's errno, as HTTP says it. */
enum MHD_Result respond_capsule_error(struct MHD_Connection *c, struct request *rq, const capsule_error *err)
{
	int e = err->code;
	unsigned status = 500;
	const char *code = "internal";
	switch (e) {
	case ENOENT:
		status = 404, code = "not_found";
		break;
	case EINVAL:
	case ENAMETOOLONG:
	case EISDIR:
	case ENOTDIR:
	case ENOTEMPTY:
	case ELOOP:
	case EOPNOTSUPP:
	case EPROTONOSUPPORT:
	case EBADMSG:
		status = 400, code = "invalid_argument";
		break;
	case EEXIST:
		status = 409, code = "already_exists";
		break;
	case EACCES:
	case EPERM:
	case EROFS:
		status = 403, code = "permission_denied";
		break;
	case EFBIG:
		status = 413, code = "too_large";
		break;
	case ENOSPC:
	case EDQUOT:
		status = 507, code = "no_space";
		break;
	case ETIMEDOUT:
		status = 504, code = "timed_out";
		break;
	case EHOSTUNREACH:
		status = 502, code = "registry_unreachable";
		break;
	case ESHUTDOWN:
	case ENOTCONN:
	case ECONNRESET:
	case EPIPE:
		status = 409, code = "sandbox_not_running";
		break;
	case EAGAIN:
	case EBUSY:
		status = 409, code = "busy";
		/* The library refuses most requests to a paused sandbox with EBUSY: a client tells
		 * that from a busy one by its code, not by parsing the message. */
		if (e == EBUSY && rq->e && sandbox_paused(rq->e->sb))
			code = "sandbox_paused";
		break;
	}
	return respond_error(c, rq, status, code, "%s", err->message[0] ? err->message : strerror(e ? e : EIO));
}

/* ---- health and the document ----------------------------------------------------------- */

static void handle_health(struct MHD_Connection *c, struct request *rq)
{
	respond_json(c, rq, 200, strdup("{\"status\":\"ok\",\"version\":\"" CAPSULE_VERSION_STRING "\"}"));
}

static void handle_openapi(struct MHD_Connection *c, struct request *rq)
{
	queue(c, rq, 200,
	      MHD_create_response_from_buffer(serve_openapi_json_len, (void *)serve_openapi_json, MHD_RESPMEM_PERSISTENT),
	      "application/json");
}

/* ---- routing --------------------------------------------------------------------------- */

static const struct route routes[] = {
	{ "GET", "/v1/health", handle_health, BODY_NONE, true },
	{ "GET", "/openapi.json", handle_openapi, BODY_NONE, true },
	{ "GET", "/v1/sandboxes", handle_sandbox_list, BODY_NONE, false },
	{ "POST", "/v1/sandboxes", handle_sandbox_create, BODY_JSON, false },
	{ "GET", "/v1/sandboxes/{id}", handle_sandbox_get, BODY_NONE, false },
	{ "DELETE", "/v1/sandboxes/{id}", handle_sandbox_delete, BODY_NONE, false },
	{ "POST", "/v1/sandboxes/{id}/exec", handle_exec, BODY_JSON, false },
	{ "GET", "/v1/sandboxes/{id}/files", handle_files_get, BODY_NONE, false },
	{ "PUT", "/v1/sandboxes/{id}/files", handle_files_put, BODY_STREAM, false, begin_upload, upload_chunk },
	{ "DELETE", "/v1/sandboxes/{id}/files", handle_files_delete, BODY_NONE, false },
	{ "POST", "/mcp", handle_mcp_post, BODY_JSON, false },
	{ "DELETE", "/mcp", handle_mcp_delete, BODY_NONE, false },
	{ "POST", "/v1/sandboxes/{id}/execs", handle_execs_start, BODY_JSON, false },
	{ "GET", "/v1/sandboxes/{id}/execs/{eid}", handle_execs_get, BODY_NONE, false },
	{ "GET", "/v1/sandboxes/{id}/execs/{eid}/events", handle_execs_events, BODY_NONE, false },
	{ "POST", "/v1/sandboxes/{id}/execs/{eid}/stdin", handle_execs_stdin, BODY_STREAM, false, begin_stdin, stdin_chunk },
	{ "POST", "/v1/sandboxes/{id}/execs/{eid}/signal", handle_execs_signal, BODY_JSON, false },
	{ "GET", "/metrics", handle_metrics, BODY_NONE, false },
	{ "POST", "/v1/sandboxes/{id}/stop", handle_sandbox_stop, BODY_JSON, false },
	{ "POST", "/v1/sandboxes/{id}/start", handle_sandbox_start, BODY_JSON, false },
	{ "POST", "/v1/sandboxes/{id}/checkpoint", handle_checkpoint, BODY_JSON, false },
	{ "POST", "/v1/sandboxes/{id}/revert", handle_revert, BODY_JSON, false },
	{ "POST", "/v1/sandboxes/{id}/fork", handle_fork, BODY_JSON, false },
	{ "POST", "/v1/sandboxes/{id}/save", handle_sandbox_save, BODY_JSON, false },
	{ "GET", "/v1/saves", handle_saves_list, BODY_NONE, false },
	{ "DELETE", "/v1/saves/{name}", handle_save_delete, BODY_NONE, false },
	{ "POST", "/v1/sandboxes/{id}/pause", handle_sandbox_pause, BODY_JSON, false },
	{ "POST", "/v1/sandboxes/{id}/resume", handle_sandbox_resume, BODY_JSON, false },
	{ "GET", "/v1/sandboxes/{id}/diff", handle_diff, BODY_NONE, false },
	{ "GET", "/v1/sandboxes/{id}/watch", handle_watch, BODY_NONE, false },
	{ "GET", "/v1/sandboxes/{id}/ports", handle_ports_list, BODY_NONE, false },
	{ "POST", "/v1/sandboxes/{id}/ports", handle_ports_add, BODY_JSON, false },
	{ "DELETE", "/v1/sandboxes/{id}/ports", handle_ports_remove, BODY_NONE, false },
	{ "GET", "/v1/sandboxes/{id}/mounts", handle_mounts_list, BODY_NONE, false },
	{ "POST", "/v1/sandboxes/{id}/mounts", handle_mounts_add, BODY_JSON, false },
	{ "DELETE", "/v1/sandboxes/{id}/mounts", handle_mounts_remove, BODY_NONE, false },
	{ "GET", "/v1/pools", handle_pools_list, BODY_NONE, false },
	{ "GET", "/v1/images", handle_images_list, BODY_NONE, false },
	{ "POST", "/v1/images/pull", handle_images_pull, BODY_JSON, false },
};
#define N_ROUTES (sizeof(routes) / sizeof(routes[0]))

void serve_api_print_routes(FILE *out)
{
	for (size_t i = 0; i < N_ROUTES; i++)
		fprintf(out, "%s %s\n", routes[i].method, routes[i].pattern);
}

/* PATH against PATTERN; "{id}" and "{eid}" take one non-empty segment each into ID, EID
 * ("{name}", a save's, is taken into EID too: no route has both). */
static bool path_match(const char *pattern, const char *path, char id[64], char eid[64])
{
	while (*pattern) {
		bool is_id = !strncmp(pattern, "{id}", 4), is_eid = !strncmp(pattern, "{eid}", 5);
		bool is_name = !strncmp(pattern, "{name}", 6);
		if (is_id || is_eid || is_name) {
			size_t n = strcspn(path, "/");
			if (n == 0 || n >= 64)
				return false;
			memcpy(is_id ? id : eid, path, n);
			(is_id ? id : eid)[n] = '\0';
			path += n;
			pattern += is_id ? 4 : is_eid ? 5 : 6;
			continue;
		}
		if (*pattern++ != *path++)
			return false;
	}
	return *path == '\0';
}

static enum MHD_Result route_request(struct MHD_Connection *c, struct request *rq, const char *url)
{
	char allow[64] = "";
	for (size_t i = 0; i < N_ROUTES; i++) {
		if (!path_match(routes[i].pattern, url, rq->id, rq->eid))
			continue;
		if (!strcmp(routes[i].method, rq->method)) {
			rq->route = &routes[i];
			return MHD_YES;
		}
		if (strlen(allow) + strlen(routes[i].method) + 3 < sizeof(allow))
			snprintf(allow + strlen(allow), sizeof(allow) - strlen(allow), "%s%s", allow[0] ? ", " : "",
				 routes[i].method);
	}
	if (!allow[0])
		return respond_error(c, rq, 404, "not_found", "no route for '%s %.200s' (see /openapi.json)", rq->method,
				     url);
	struct json_writer w;
	json_init(&w, false);
	json_object_begin(&w);
	json_key(&w, "error");
	json_object_begin(&w);
	json_kv_string(&w, "code", "method_not_allowed");
	char msg[300];
	snprintf(msg, sizeof(msg), "%s is not allowed on '%.200s' (allowed: %s)", rq->method, url, allow);
	json_kv_string(&w, "message", msg);
	json_object_end(&w);
	json_object_end(&w);
	struct MHD_Response *resp = json_response(json_steal(&w, NULL));
	if (resp)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
	return queue(c, rq, 405, resp, "application/json");
}

static bool authenticate(struct MHD_Connection *c, struct request *rq)
{
	const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
	const char *reason = "missing 'Authorization: Bearer TOKEN' header";
	if (h && !strncasecmp(h, "Bearer ", 7)) {
		if (token_check(h + 7, rq->token_name, rq->owner, &rq->admin)) {
			rq->authed = true;
			return true;
		}
		reason = "the token is not valid (unknown or removed)";
	}
	struct json_writer w;
	json_init(&w, false);
	json_object_begin(&w);
	json_key(&w, "error");
	json_object_begin(&w);
	json_kv_string(&w, "code", "unauthorized");
	json_kv_string(&w, "message", reason);
	json_object_end(&w);
	json_object_end(&w);
	struct MHD_Response *resp = json_response(json_steal(&w, NULL));
	if (resp)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
	queue(c, rq, 401, resp, "application/json");
	return false;
}

/* The first call for a request (its headers are in): route, authenticate, find the sandbox,
 * check the declared body size, open an upload. Answers at once when one of them fails. */
static enum MHD_Result begin(struct MHD_Connection *c, struct request *rq, const char *url)
{
	enum MHD_Result r = route_request(c, rq, url);
	if (rq->responded || r != MHD_YES)
		return r;
	const struct route *rt = rq->route;
	if (!rt->public && !authenticate(c, rq))
		return MHD_YES;
	if (strstr(rt->pattern, "{id}")) {
		rq->e = entry_get(rq->id, rq->owner);
		if (!rq->e)
			return respond_error(c, rq, 404, "not_found", "no sandbox '%s'", rq->id);
	}
	if (rt->body == BODY_JSON) {
		const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
		if (cl && strtoull(cl, NULL, 10) > SERVE_JSON_BODY_MAX)
			return respond_error(c, rq, 413, "payload_too_large", "a JSON request body is at most %u bytes",
					     SERVE_JSON_BODY_MAX);
	}
	if (rt->body == BODY_STREAM && !rt->begin_body(c, rq))
		return MHD_YES;
	if (rt->body == BODY_NONE)
		rt->fn(c, rq);
	return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
				  const char *version, const char *upload_data, size_t *upload_size, void **con_cls)
{
	struct request *rq = *con_cls;
	if (!rq) {
		rq = calloc(1, sizeof(*rq));
		if (!rq)
			return MHD_NO;
		*con_cls = rq;
		rq->start_ms = now_ms();
		snprintf(rq->method, sizeof(rq->method), "%s", method);
		rq->path = strdup(url);
		pthread_mutex_lock(&serve_state.lock);
		serve_state.in_flight++;
		pthread_mutex_unlock(&serve_state.lock);
		const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
		rq->has_body = (cl && strtoull(cl, NULL, 10) > 0) ||
			       MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
		rq->first_call = true;
		enum MHD_Result r = begin(c, rq, url);
		rq->first_call = false;
		return r;
	}
	if (rq->deferred) {
		struct MHD_Response *resp = steal_ptr(rq->deferred);
		enum MHD_Result r = MHD_queue_response(c, rq->status, resp);
		MHD_destroy_response(resp);
		*upload_size = 0;
		return r;
	}
	if (rq->responded) {
		*upload_size = 0;
		return MHD_YES;
	}
	if (*upload_size) {
		if (rq->route->body == BODY_STREAM) {
			rq->route->body_chunk(rq, upload_data, *upload_size);
		} else if (!rq->too_large) {
			/* Chunked bodies have no Content-Length: the bound is checked as they come. */
			if (rq->body_len + *upload_size > SERVE_JSON_BODY_MAX) {
				rq->too_large = true;
				free(rq->body);
				rq->body = NULL;
				rq->body_len = 0;
			} else {
				char *b = realloc(rq->body, rq->body_len + *upload_size + 1);
				if (!b)
					return MHD_NO;
				memcpy(b + rq->body_len, upload_data, *upload_size);
				rq->body = b;
				rq->body_len += *upload_size;
				rq->body[rq->body_len] = '\0';
			}
		}
		*upload_size = 0;
		return MHD_YES;
	}
	if (rq->too_large)
		return respond_error(c, rq, 413, "payload_too_large", "a JSON request body is at most %u bytes",
				     SERVE_JSON_BODY_MAX);
	rq->route->fn(c, rq);
	return rq->responded ? MHD_YES : MHD_NO;
}

static void audit(struct request *rq, enum MHD_RequestTerminationCode toe)
{
	if (serve_state.opts.audit_fd < 0)
		return;
	struct json_writer w;
	json_init(&w, false);
	json_object_begin(&w);
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	char when[48];
	struct tm tm;
	size_t n = strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", gmtime_r(&ts.tv_sec, &tm));
	snprintf(when + n, sizeof(when) - n, ".%03ldZ", ts.tv_nsec / 1000000);
	json_kv_string(&w, "time", when);
	json_kv_string(&w, "token", rq->authed ? rq->token_name : NULL);
	json_kv_string(&w, "method", rq->method);
	json_kv_string(&w, "path", rq->path);
	json_kv_string(&w, "sandbox", rq->e ? rq->e->id : rq->mcp_sandbox[0] ? rq->mcp_sandbox : NULL);
	if (rq->mcp_tool) {
		json_kv_string(&w, "tool", rq->mcp_tool);
		json_kv_bool(&w, "tool_error", rq->mcp_tool_error);
	}
	json_kv_uint(&w, "status", rq->status);
	json_kv_bool(&w, "completed", toe == MHD_REQUEST_TERMINATED_COMPLETED_OK);
	json_kv_uint(&w, "ms", now_ms() - rq->start_ms);
	json_object_end(&w);
	char *line = json_steal(&w, NULL);
	if (!line)
		return;
	size_t len = strlen(line);
	char *l = realloc(line, len + 2);
	if (l) {
		line = l;
		line[len++] = '\n';
		/* One write() of O_APPEND: lines from concurrent requests never interleave. */
		if (write(serve_state.opts.audit_fd, line, len) < 0)
			fprintf(stderr, "capsule serve: writing the audit log: %s\n", strerror(errno));
	}
	free(line);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe)
{
	struct request *rq = *con_cls;
	if (!rq)
		return;
	*con_cls = NULL;
	audit(rq, toe);
	if (rq->deferred)
		MHD_destroy_response(rq->deferred); /* the client went before its answer */
	capsule_fs_stream_free(rq->upload); /* unclosed: the old file stays as it was */
	if (rq->ctx_free)
		rq->ctx_free(rq->ctx);
	entry_unref(rq->e);
	free(rq->body);
	free(rq->path);
	free(rq);
	pthread_mutex_lock(&serve_state.lock);
	serve_state.in_flight--;
	pthread_cond_broadcast(&serve_state.wake);
	pthread_mutex_unlock(&serve_state.lock);
}

void *serve_api_handler(void)
{
	return (void *)on_request;
}

void *serve_api_completed(void)
{
	return (void *)on_completed;
}
