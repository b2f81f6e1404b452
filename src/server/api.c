/* The routes of capsule serve, and the sandboxes it owns.
 *
 * libmicrohttpd runs one thread per connection (bounded by --max-connections), so a handler
 * may block in the library (an exec, a file stream under flow control) without holding up
 * other clients. A sandbox the server made is an entry in one table under one mutex; every
 * request that uses it holds a reference, so that DELETE or the lifetime reaper can take it
 * out of the table at any time and the handle is freed only when the last request is done. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>
#include <openssl/crypto.h>

#include "json.h"
#include "serve.h"
#include "util.h"

#define STREAM_BLOCK (64 * 1024)
#define REAPER_TICK_MS 200
/* A listing's answer is about 150 bytes an entry: the library's own bound (a million
 * entries) would let one request make the server hold 150 MB. */
#define LIST_ANSWER_MAX 65536

struct sandbox_entry {
	struct sandbox_entry *next;
	char id[32];
	uint8_t owner[32];           /* the hash of the token that made it */
	capsule_sandbox *sb;         /* NULL while it is being created */
	capsule_isolation isolation;
	char *image, *network, *cpus;
	uint64_t memory_bytes;
	struct serve_label labels[SERVE_LABELS_MAX];
	size_t n_labels;
	int64_t created_unix;
	uint32_t timeout_s;
	uint64_t expires_ms;         /* monotonic */
	unsigned refs;               /* the table's, and one per request using it */
	bool in_table;
};

static struct {
	pthread_mutex_t lock;
	pthread_cond_t wake;
	struct serve_options opts;
	struct sandbox_entry *entries;
	unsigned in_flight;
	bool stopping;
	pthread_t reaper;
	bool reaper_started;
	/* The token store as last read, and what the file looked like then. */
	struct serve_token *tokens;
	size_t n_tokens;
	struct stat tokens_st;
	bool tokens_loaded;
	unsigned tokens_gen;        /* one more at each reload */
	unsigned tokens_gen_reaped; /* the reload expire_orphans last looked at */
} S = { .lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER };

/* ---- sandbox entries ------------------------------------------------------------------- */

static void entry_free(struct sandbox_entry *e)
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

static void entry_unref(struct sandbox_entry *e)
{
	if (!e)
		return;
	pthread_mutex_lock(&S.lock);
	bool last = --e->refs == 0;
	pthread_mutex_unlock(&S.lock);
	if (last)
		entry_free(e);
}

/* Under the lock. */
static void table_unlink(struct sandbox_entry *e)
{
	for (struct sandbox_entry **p = &S.entries; *p; p = &(*p)->next)
		if (*p == e) {
			*p = e->next;
			e->next = NULL;
			e->in_table = false;
			return;
		}
}

/* The caller's sandbox ID with a reference, or NULL: another token's sandbox is not there
 * for this caller, exactly as one that never existed (no existence oracle). */
static struct sandbox_entry *entry_get(const char *id, const uint8_t owner[32])
{
	struct sandbox_entry *found = NULL;
	pthread_mutex_lock(&S.lock);
	for (struct sandbox_entry *e = S.entries; e; e = e->next)
		if (e->sb && !strcmp(e->id, id) && !CRYPTO_memcmp(e->owner, owner, 32)) {
			e->refs++;
			found = e;
			break;
		}
	pthread_mutex_unlock(&S.lock);
	return found;
}

/* Stop and remove the sandbox of an entry already out of the table, and drop the table's
 * reference. An ephemeral sandbox is removed by its stop; a detached one (--keep) needs rm. */
static void entry_destroy(struct sandbox_entry *e)
{
	if (e->sb) {
		if (S.opts.keep)
			capsule_sandbox_remove(e->id, true, NULL);
		else
			capsule_sandbox_stop(e->sb, 0, NULL);
	}
	entry_unref(e);
}

/* ---- lifetimes -------------------------------------------------------------------------- */

static void tokens_refresh(void);
static bool owner_has_token(const uint8_t owner[32]);

/* Sandboxes whose token was removed: reachable by no one, so they go at once rather than at
 * their timeout (revoking a token revokes what it made). Marked by pushing their deadline to
 * now. Under the lock; the store is read again only when the file changed. */
static void expire_orphans(void)
{
	/* A request may have reloaded the store first: compare generations, not this call's. */
	tokens_refresh();
	if (S.tokens_gen == S.tokens_gen_reaped)
		return;
	S.tokens_gen_reaped = S.tokens_gen;
	uint64_t now = now_ms();
	for (struct sandbox_entry *e = S.entries; e; e = e->next)
		if (e->sb && !owner_has_token(e->owner))
			e->expires_ms = now;
}

static void *reaper_main(void *arg)
{
	pthread_mutex_lock(&S.lock);
	while (!S.stopping) {
		expire_orphans();
		uint64_t now = now_ms();
		struct sandbox_entry *expired = NULL;
		for (struct sandbox_entry *e = S.entries; e; e = e->next)
			if (e->sb && e->expires_ms <= now) {
				expired = e;
				break;
			}
		if (expired) {
			table_unlink(expired);
			pthread_mutex_unlock(&S.lock);
			entry_destroy(expired);
			pthread_mutex_lock(&S.lock);
			continue;
		}
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_nsec += REAPER_TICK_MS * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&S.wake, &S.lock, &ts);
	}
	pthread_mutex_unlock(&S.lock);
	return NULL;
}

int serve_api_init(const struct serve_options *opts, capsule_error *err)
{
	S.opts = *opts;
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&S.wake, &ca);
	pthread_condattr_destroy(&ca);
	int r = pthread_create(&S.reaper, NULL, reaper_main, NULL);
	if (r != 0)
		return cap_err(err, r, "starting the lifetime thread");
	S.reaper_started = true;
	return 0;
}

unsigned serve_api_in_flight(void)
{
	pthread_mutex_lock(&S.lock);
	unsigned n = S.in_flight;
	pthread_mutex_unlock(&S.lock);
	return n;
}

void serve_api_shutdown(void)
{
	pthread_mutex_lock(&S.lock);
	S.stopping = true;
	pthread_cond_broadcast(&S.wake);
	pthread_mutex_unlock(&S.lock);
	if (S.reaper_started)
		pthread_join(S.reaper, NULL);
	for (;;) {
		pthread_mutex_lock(&S.lock);
		struct sandbox_entry *e = S.entries;
		if (e)
			table_unlink(e);
		pthread_mutex_unlock(&S.lock);
		if (!e)
			break;
		if (S.opts.keep)
			entry_unref(e); /* detached: it runs on, `capsule ps` shows it */
		else
			entry_destroy(e);
	}
}

void serve_api_free(void)
{
	pthread_mutex_lock(&S.lock);
	free(S.tokens);
	S.tokens = NULL;
	S.n_tokens = 0;
	pthread_mutex_unlock(&S.lock);
}

/* ---- tokens ----------------------------------------------------------------------------- */

/* The store is read again whenever the file changed, so `capsule token rm` takes effect at
 * the next request without a restart. Under the lock. */
static void tokens_refresh(void)
{
	struct stat st;
	if (stat(serve_tokens_path(), &st) < 0)
		memset(&st, 0, sizeof(st));
	if (S.tokens_loaded && st.st_ino == S.tokens_st.st_ino && st.st_dev == S.tokens_st.st_dev &&
	    st.st_size == S.tokens_st.st_size && st.st_mtim.tv_sec == S.tokens_st.st_mtim.tv_sec &&
	    st.st_mtim.tv_nsec == S.tokens_st.st_mtim.tv_nsec)
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
	free(S.tokens);
	S.tokens = v;
	S.n_tokens = n;
	S.tokens_st = st;
	S.tokens_loaded = true;
	S.tokens_gen++;
}

/* Under the lock. */
static bool owner_has_token(const uint8_t owner[32])
{
	for (size_t i = 0; i < S.n_tokens; i++)
		if (!CRYPTO_memcmp(S.tokens[i].hash, owner, 32))
			return true;
	return false;
}

/* Every stored hash is compared, in constant time, whatever matches first. */
static bool token_check(const char *token, char name_out[SERVE_TOKEN_NAME_MAX + 1], uint8_t hash_out[32])
{
	uint8_t h[32];
	serve_token_hash(token, strlen(token), h);
	bool ok = false;
	pthread_mutex_lock(&S.lock);
	tokens_refresh();
	for (size_t i = 0; i < S.n_tokens; i++)
		if (!CRYPTO_memcmp(S.tokens[i].hash, h, 32) && !ok) {
			ok = true;
			memcpy(name_out, S.tokens[i].name, SERVE_TOKEN_NAME_MAX + 1);
			memcpy(hash_out, h, 32);
		}
	pthread_mutex_unlock(&S.lock);
	return ok;
}

/* ---- requests --------------------------------------------------------------------------- */

enum body_kind { BODY_NONE, BODY_JSON, BODY_STREAM };

struct request;
typedef void (*handler_fn)(struct MHD_Connection *c, struct request *rq);

struct route {
	const char *method;
	const char *pattern;
	handler_fn fn;
	enum body_kind body;
	bool public;
};

struct request {
	const struct route *route;
	char method[16];
	char *path;
	char id[64];
	struct sandbox_entry *e;
	bool authed;
	char token_name[SERVE_TOKEN_NAME_MAX + 1];
	uint8_t owner[32];
	char *body;
	size_t body_len;
	bool too_large;
	capsule_fs_stream *upload;
	uint64_t upload_bytes;
	int upload_error;
	capsule_error upload_err;
	unsigned status;
	uint64_t start_ms;
	bool responded;
	/* libmicrohttpd closes the connection after a response queued at the first call (the
	 * headers' call), in case a body follows: right for a refused upload, but it would end
	 * keep-alive for every GET. A request with no body keeps its answer here until the
	 * next call. */
	bool first_call, has_body;
	struct MHD_Response *deferred;
};

static enum MHD_Result queue(struct MHD_Connection *c, struct request *rq, unsigned status, struct MHD_Response *resp,
			     const char *content_type)
{
	if (!resp)
		return MHD_NO;
	if (content_type)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
	rq->status = status;
	rq->responded = true;
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
static enum MHD_Result respond_json(struct MHD_Connection *c, struct request *rq, unsigned status, char *text)
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

static enum MHD_Result respond_error(struct MHD_Connection *c, struct request *rq, unsigned status, const char *code,
				     const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static enum MHD_Result respond_error(struct MHD_Connection *c, struct request *rq, unsigned status, const char *code,
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
	struct json_writer w;
	json_init(&w, false);
	json_object_begin(&w);
	json_key(&w, "error");
	json_object_begin(&w);
	json_kv_string(&w, "code", code);
	json_kv_string(&w, "message", msg);
	json_object_end(&w);
	json_object_end(&w);
	return respond_json(c, rq, status, json_steal(&w, NULL));
}

/* The library's errno, as HTTP says it. */
static enum MHD_Result respond_capsule_error(struct MHD_Connection *c, struct request *rq, const capsule_error *err)
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
		break;
	}
	return respond_error(c, rq, status, code, "%s", err->message[0] ? err->message : strerror(e ? e : EIO));
}

/* ---- sandboxes ------------------------------------------------------------------------- */

static void write_time(struct json_writer *w, const char *key, int64_t unix_s)
{
	char buf[32];
	time_t t = (time_t)unix_s;
	struct tm tm;
	strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
	json_kv_string(w, key, buf);
}

static void write_sandbox(struct json_writer *w, struct sandbox_entry *e)
{
	capsule_sandbox_info info;
	bool running = capsule_sandbox_inspect(e->sb, &info, NULL) == 0 && !strcmp(info.state, "running");
	json_object_begin(w);
	json_kv_string(w, "id", e->id);
	json_kv_string(w, "state", running ? "running" : "stopped");
	json_kv_string(w, "image", e->image ? e->image : "host");
	json_kv_string(w, "isolation", e->isolation == CAPSULE_ISOLATION_VM ? "vm" : "container");
	json_kv_uint(w, "memory", e->memory_bytes);
	if (e->cpus)
		json_kv_string(w, "cpus", e->cpus);
	else {
		json_key(w, "cpus");
		json_null(w);
	}
	json_kv_string(w, "network", e->network ? e->network : "none");
	json_key(w, "labels");
	json_object_begin(w);
	for (size_t i = 0; i < e->n_labels; i++)
		json_kv_string(w, e->labels[i].key, e->labels[i].value);
	json_object_end(w);
	write_time(w, "created_at", e->created_unix);
	json_kv_uint(w, "timeout", e->timeout_s);
	write_time(w, "expires_at", e->created_unix + e->timeout_s);
	json_object_end(w);
}

static void handle_sandbox_get(struct MHD_Connection *c, struct request *rq)
{
	struct json_writer w;
	json_init(&w, false);
	write_sandbox(&w, rq->e);
	respond_json(c, rq, 200, json_steal(&w, NULL));
}

struct label_filters {
	struct serve_label v[SERVE_LABELS_MAX];
	size_t n;
	bool bad;
	capsule_error err;
};

static enum MHD_Result collect_label(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	struct label_filters *f = cls;
	if (strcmp(key, "label") || f->bad)
		return MHD_YES;
	if (f->n == SERVE_LABELS_MAX) {
		f->bad = true;
		cap_err_plain(&f->err, EINVAL, "at most %d label filters", SERVE_LABELS_MAX);
		return MHD_NO;
	}
	if (serve_parse_label_filter(value ? value : "", &f->v[f->n], &f->err) < 0) {
		f->bad = true;
		return MHD_NO;
	}
	f->n++;
	return MHD_YES;
}

static bool labels_match(const struct sandbox_entry *e, const struct label_filters *f)
{
	for (size_t i = 0; i < f->n; i++) {
		bool hit = false;
		for (size_t j = 0; j < e->n_labels && !hit; j++)
			hit = !strcmp(e->labels[j].key, f->v[i].key) && !strcmp(e->labels[j].value, f->v[i].value);
		if (!hit)
			return false;
	}
	return true;
}

static void handle_sandbox_list(struct MHD_Connection *c, struct request *rq)
{
	struct label_filters f = { 0 };
	MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, collect_label, &f);
	if (f.bad) {
		respond_error(c, rq, 400, "invalid_argument", "%s", f.err.message);
		goto out;
	}
	/* References first, then inspect outside the lock: inspect talks to each shim. */
	struct sandbox_entry **mine = NULL;
	size_t n = 0;
	pthread_mutex_lock(&S.lock);
	size_t total = 0;
	for (struct sandbox_entry *e = S.entries; e; e = e->next)
		total++;
	mine = calloc(total ? total : 1, sizeof(*mine));
	if (mine)
		for (struct sandbox_entry *e = S.entries; e; e = e->next)
			if (e->sb && !CRYPTO_memcmp(e->owner, rq->owner, 32) && labels_match(e, &f)) {
				e->refs++;
				mine[n++] = e;
			}
	pthread_mutex_unlock(&S.lock);
	if (!mine) {
		respond_json(c, rq, 500, NULL);
		goto out;
	}
	struct json_writer w;
	json_init(&w, false);
	json_object_begin(&w);
	json_key(&w, "sandboxes");
	json_array_begin(&w);
	for (size_t i = 0; i < n; i++) {
		write_sandbox(&w, mine[i]);
		entry_unref(mine[i]);
	}
	json_array_end(&w);
	json_object_end(&w);
	free(mine);
	respond_json(c, rq, 200, json_steal(&w, NULL));
out:
	for (size_t i = 0; i < f.n; i++) {
		free(f.v[i].key);
		free(f.v[i].value);
	}
}

/* Counts and sums of the caller's sandboxes, creating ones included. Under the lock. */
static void owner_usage(const uint8_t owner[32], unsigned *count, uint64_t *memory)
{
	*count = 0;
	*memory = 0;
	for (struct sandbox_entry *e = S.entries; e; e = e->next)
		if (!CRYPTO_memcmp(e->owner, owner, 32)) {
			(*count)++;
			*memory += e->memory_bytes;
		}
}

static int new_id(char out[32])
{
	uint8_t r[8];
	if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r))
		return -EIO;
	char *p = stpcpy(out, "sbx-");
	for (size_t i = 0; i < sizeof(r); i++)
		p += sprintf(p, "%02x", r[i]);
	return 0;
}

static int build_config(capsule_config **out, const struct serve_create_req *req, const struct sandbox_entry *e,
			capsule_error *err)
{
	capsule_config *cfg;
	int r = capsule_config_new(&cfg, err);
	if (r < 0)
		return r;
	if ((r = capsule_config_set_name(cfg, e->id, err)) < 0 ||
	    (req->image && (r = capsule_config_set_image(cfg, req->image, err)) < 0) ||
	    (r = capsule_config_set_isolation(cfg, e->isolation, err)) < 0 ||
	    (r = capsule_config_set_memory_bytes(cfg, e->memory_bytes, err)) < 0 ||
	    (req->cpus && (r = capsule_config_set_cpus(cfg, req->cpus, err)) < 0) ||
	    (req->network && (r = capsule_config_set_network_name(cfg, req->network, err)) < 0) ||
	    (r = capsule_config_set_detached(cfg, S.opts.keep, err)) < 0)
		goto fail;
	for (size_t i = 0; i < req->n_env; i++)
		if ((r = capsule_config_add_env(cfg, req->env[i], err)) < 0)
			goto fail;
	*out = cfg;
	return 0;
fail:
	capsule_config_free(cfg);
	return r;
}

static void handle_sandbox_create(struct MHD_Connection *c, struct request *rq)
{
	struct serve_create_req req;
	capsule_error err = { 0 };
	if (serve_decode_create(rq->body ? rq->body : "", rq->body_len, &req, &err) < 0) {
		respond_error(c, rq, 400, "invalid_request", "%s", err.message);
		return;
	}
	struct sandbox_entry *e = calloc(1, sizeof(*e));
	if (!e || new_id(e->id) < 0) {
		free(e);
		serve_create_req_free(&req);
		respond_json(c, rq, 500, NULL);
		return;
	}
	memcpy(e->owner, rq->owner, 32);
	e->isolation = req.isolation < 0 ? CAPSULE_ISOLATION_CONTAINER : (capsule_isolation)req.isolation;
	e->memory_bytes = req.memory_set ? req.memory_bytes : S.opts.default_memory;
	e->timeout_s = req.timeout_set ? req.timeout_s : S.opts.default_timeout_s;
	e->image = steal_ptr(req.image);
	e->network = steal_ptr(req.network);
	e->cpus = steal_ptr(req.cpus);
	memcpy(e->labels, req.labels, sizeof(req.labels));
	e->n_labels = req.n_labels;
	req.n_labels = 0;
	e->created_unix = (int64_t)time(NULL);
	e->refs = 1;

	/* The limits are checked and the new sandbox counted in one step, so that concurrent
	 * creates cannot all pass the check; it is in the table (invisible, sb NULL) while it
	 * starts. */
	pthread_mutex_lock(&S.lock);
	unsigned count;
	uint64_t memory;
	owner_usage(rq->owner, &count, &memory);
	const char *over = NULL;
	/* A kept-alive connection may still ask after the sandboxes were removed at shutdown. */
	if (S.stopping)
		over = "stopping";
	else if (S.opts.max_sandboxes && count + 1 > S.opts.max_sandboxes)
		over = "sandboxes";
	else if (S.opts.max_memory && memory + e->memory_bytes > S.opts.max_memory)
		over = "memory";
	if (!over) {
		e->next = S.entries;
		S.entries = e;
		e->in_table = true;
	}
	pthread_mutex_unlock(&S.lock);
	if (over) {
		if (!strcmp(over, "stopping"))
			respond_error(c, rq, 503, "shutting_down", "the server is shutting down");
		else if (!strcmp(over, "sandboxes"))
			respond_error(c, rq, 429, "limit_exceeded",
				      "token '%s' has %u sandboxes, the most this server allows (--max-sandboxes %u)",
				      rq->token_name, count, S.opts.max_sandboxes);
		else
			respond_error(c, rq, 429, "limit_exceeded",
				      "token '%s' would have %llu MiB of sandbox memory, over this server's --max-memory of %llu MiB",
				      rq->token_name, (unsigned long long)((memory + e->memory_bytes) >> 20),
				      (unsigned long long)(S.opts.max_memory >> 20));
		entry_free(e);
		serve_create_req_free(&req);
		return;
	}

	capsule_config *cfg = NULL;
	capsule_sandbox *sb = NULL;
	int r = build_config(&cfg, &req, e, &err);
	if (r == 0)
		r = capsule_sandbox_create(&sb, cfg, &err);
	capsule_config_free(cfg);
	serve_create_req_free(&req);
	pthread_mutex_lock(&S.lock);
	if (r < 0) {
		table_unlink(e);
	} else {
		e->sb = sb;
		e->expires_ms = now_ms() + (uint64_t)e->timeout_s * 1000;
		/* The token was removed while this started: the reaper's pass has gone by. */
		if (!owner_has_token(e->owner))
			e->expires_ms = now_ms();
		e->refs++; /* this request's, for the answer below */
	}
	pthread_mutex_unlock(&S.lock);
	if (r < 0) {
		entry_free(e);
		respond_capsule_error(c, rq, &err);
		return;
	}
	struct json_writer w;
	json_init(&w, false);
	write_sandbox(&w, e);
	entry_unref(e);
	respond_json(c, rq, 201, json_steal(&w, NULL));
}

static void handle_sandbox_delete(struct MHD_Connection *c, struct request *rq)
{
	struct sandbox_entry *e = rq->e;
	pthread_mutex_lock(&S.lock);
	bool mine = e->in_table;
	if (mine)
		table_unlink(e);
	pthread_mutex_unlock(&S.lock);
	if (!mine) {
		/* The reaper or another DELETE took it between the lookup and here. */
		respond_error(c, rq, 404, "not_found", "no sandbox '%s'", rq->id);
		return;
	}
	entry_destroy(e);
	respond_json(c, rq, 200, strdup("{\"deleted\":true}"));
}

/* ---- exec ------------------------------------------------------------------------------ */

static char *base64(const char *data, size_t len)
{
	static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	char *out = malloc((len + 2) / 3 * 4 + 1), *p = out;
	if (!out)
		return NULL;
	const unsigned char *s = (const unsigned char *)data;
	size_t i = 0;
	for (; i + 2 < len; i += 3) {
		*p++ = tbl[s[i] >> 2];
		*p++ = tbl[((s[i] & 3) << 4) | (s[i + 1] >> 4)];
		*p++ = tbl[((s[i + 1] & 15) << 2) | (s[i + 2] >> 6)];
		*p++ = tbl[s[i + 2] & 63];
	}
	if (i < len) {
		*p++ = tbl[s[i] >> 2];
		if (i + 1 < len) {
			*p++ = tbl[((s[i] & 3) << 4) | (s[i + 1] >> 4)];
			*p++ = tbl[(s[i + 1] & 15) << 2];
		} else {
			*p++ = tbl[(s[i] & 3) << 4];
			*p++ = '=';
		}
		*p++ = '=';
	}
	*p = '\0';
	return out;
}

/* Output as text when it is UTF-8 (the usual case, and what an agent reads), else base64. */
static void write_output(struct json_writer *w, const char *name, const char *buf, size_t len)
{
	bool truncated = len > S.opts.exec_output_max;
	if (truncated)
		len = S.opts.exec_output_max;
	char key[32];
	snprintf(key, sizeof(key), "%s_encoding", name);
	/* A cut may split a character: the text test looks at what is sent. */
	if (serve_utf8_valid(buf ? buf : "", len)) {
		_cleanup_free_ char *text = strndup(buf ? buf : "", len);
		json_kv_string(w, name, text ? text : "");
		json_kv_string(w, key, "utf-8");
	} else {
		_cleanup_free_ char *b = base64(buf, len);
		json_kv_string(w, name, b ? b : "");
		json_kv_string(w, key, "base64");
	}
	snprintf(key, sizeof(key), "%s_truncated", name);
	json_kv_bool(w, key, truncated);
}

static void handle_exec(struct MHD_Connection *c, struct request *rq)
{
	struct serve_exec_req req;
	capsule_error err = { 0 };
	if (serve_decode_exec(rq->body ? rq->body : "", rq->body_len, &req, &err) < 0) {
		respond_error(c, rq, 400, "invalid_request", "%s", err.message);
		return;
	}
	capsule_exec_options o = CAPSULE_EXEC_OPTIONS_INIT;
	o.argv = (const char *const *)req.argv;
	o.shell = req.shell;
	o.env = (const char *const *)req.env;
	o.cwd = req.cwd;
	o.user = req.user;
	o.timeout_ms = req.timeout_ms;
	capsule_exec_result res;
	int r = capsule_exec(&res, rq->e->sb, &o, req.stdin_data, req.stdin_len, S.opts.exec_output_max + 1, &err);
	serve_exec_req_free(&req);
	struct json_writer w;
	json_init(&w, false);
	json_object_begin(&w);
	if (r == -ENOENT || r == -EACCES) {
		/* The command, not the sandbox, is missing: answered as a shell would (docker too). */
		json_kv_int(&w, "exit_code", r == -ENOENT ? 127 : 126);
		json_kv_bool(&w, "timed_out", false);
		json_kv_string(&w, "stdout", "");
		json_kv_string(&w, "stdout_encoding", "utf-8");
		json_kv_bool(&w, "stdout_truncated", false);
		char line[600];
		snprintf(line, sizeof(line), "%s\n", err.message);
		write_output(&w, "stderr", line, strlen(line));
	} else if (r < 0) {
		json_free(&w);
		respond_capsule_error(c, rq, &err);
		return;
	} else {
		json_kv_int(&w, "exit_code", res.status.exit_code);
		json_kv_bool(&w, "timed_out", res.status.timed_out);
		write_output(&w, "stdout", res.stdout_buf, res.stdout_len);
		write_output(&w, "stderr", res.stderr_buf, res.stderr_len);
		capsule_exec_result_free(&res);
	}
	json_object_end(&w);
	respond_json(c, rq, 200, json_steal(&w, NULL));
}

/* ---- files ----------------------------------------------------------------------------- */

static const char *query(struct MHD_Connection *c, const char *key)
{
	return MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, key);
}

static bool query_flag(struct MHD_Connection *c, const char *key)
{
	const char *v = query(c, key);
	return v && (!strcmp(v, "1") || !strcmp(v, "true"));
}

static const char *file_path(struct MHD_Connection *c, struct request *rq)
{
	const char *p = query(c, "path");
	if (!p || !*p) {
		respond_error(c, rq, 400, "invalid_argument", "the query parameter 'path' is required");
		return NULL;
	}
	return p;
}

static const char *kind_name(capsule_fs_kind k)
{
	switch (k) {
	case CAPSULE_FS_FILE:
		return "file";
	case CAPSULE_FS_DIR:
		return "dir";
	case CAPSULE_FS_SYMLINK:
		return "symlink";
	default:
		return "other";
	}
}

static void handle_files_list(struct MHD_Connection *c, struct request *rq, const char *path)
{
	capsule_fs_entry *v;
	size_t n;
	capsule_error err = { 0 };
	if (capsule_fs_list(rq->e->sb, path, &v, &n, &err) < 0) {
		respond_capsule_error(c, rq, &err);
		return;
	}
	struct json_writer w;
	json_init(&w, false);
	json_object_begin(&w);
	json_kv_string(&w, "path", path);
	json_kv_bool(&w, "truncated", n > LIST_ANSWER_MAX);
	json_key(&w, "entries");
	json_array_begin(&w);
	for (size_t i = 0; i < n && i < LIST_ANSWER_MAX; i++) {
		json_object_begin(&w);
		json_kv_string(&w, "name", v[i].name);
		json_kv_string(&w, "type", kind_name(v[i].kind));
		json_kv_uint(&w, "size", v[i].size);
		json_kv_uint(&w, "mode", v[i].mode);
		json_kv_int(&w, "mtime_ns", v[i].mtime_ns);
		json_kv_uint(&w, "uid", v[i].uid);
		json_kv_uint(&w, "gid", v[i].gid);
		if (v[i].link_target)
			json_kv_string(&w, "link_target", v[i].link_target);
		json_object_end(&w);
	}
	json_array_end(&w);
	json_object_end(&w);
	capsule_fs_entries_free(v, n);
	respond_json(c, rq, 200, json_steal(&w, NULL));
}

/* A download: the response pulls from the sandbox's stream as the client reads, so memory
 * stays one block whatever the file's size. */
struct download {
	struct sandbox_entry *e;
	capsule_fs_stream *s;
	char *first;
	size_t first_len, first_off;
};

static ssize_t download_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct download *d = cls;
	if (d->first_off < d->first_len) {
		size_t n = d->first_len - d->first_off;
		if (n > max)
			n = max;
		memcpy(buf, d->first + d->first_off, n);
		d->first_off += n;
		return (ssize_t)n;
	}
	ssize_t n = capsule_fs_stream_read(d->s, buf, max, NULL);
	if (n == 0)
		return MHD_CONTENT_READER_END_OF_STREAM;
	if (n < 0)
		return MHD_CONTENT_READER_END_WITH_ERROR;
	return n;
}

static void download_free(void *cls)
{
	struct download *d = cls;
	capsule_fs_stream_free(d->s);
	free(d->first);
	entry_unref(d->e);
	free(d);
}

static void handle_files_get(struct MHD_Connection *c, struct request *rq)
{
	const char *path = file_path(c, rq);
	if (!path)
		return;
	if (query_flag(c, "list")) {
		handle_files_list(c, rq, path);
		return;
	}
	capsule_error err = { 0 };
	struct download *d = calloc(1, sizeof(*d));
	if (!d || !(d->first = malloc(STREAM_BLOCK))) {
		if (d)
			free(d);
		respond_json(c, rq, 500, NULL);
		return;
	}
	/* A path that cannot be read fails at the first read: read it before the status line. */
	ssize_t n = -1;
	if (capsule_fs_open_read(&d->s, rq->e->sb, path, &err) == 0)
		n = capsule_fs_stream_read(d->s, d->first, STREAM_BLOCK, &err);
	if (n < 0) {
		capsule_fs_stream_free(d->s);
		free(d->first);
		free(d);
		respond_capsule_error(c, rq, &err);
		return;
	}
	d->first_len = (size_t)n;
	pthread_mutex_lock(&S.lock);
	rq->e->refs++;
	pthread_mutex_unlock(&S.lock);
	d->e = rq->e;
	struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, STREAM_BLOCK, download_read, d,
								      download_free);
	if (!resp) {
		download_free(d);
		respond_json(c, rq, 500, NULL);
		return;
	}
	queue(c, rq, 200, resp, "application/octet-stream");
}

static void handle_files_delete(struct MHD_Connection *c, struct request *rq)
{
	const char *path = file_path(c, rq);
	if (!path)
		return;
	capsule_error err = { 0 };
	unsigned flags = query_flag(c, "recursive") ? CAPSULE_FS_RECURSIVE : 0;
	if (capsule_fs_remove(rq->e->sb, path, flags, &err) < 0) {
		respond_capsule_error(c, rq, &err);
		return;
	}
	respond_json(c, rq, 200, strdup("{\"deleted\":true}"));
}

/* PUT: the stream was opened when the headers came (begin_upload) and took every chunk. */
static void handle_files_put(struct MHD_Connection *c, struct request *rq)
{
	capsule_error err = { 0 };
	if (rq->upload_error) {
		respond_capsule_error(c, rq, &rq->upload_err);
		return;
	}
	capsule_fs_stream *s = steal_ptr(rq->upload);
	int r = capsule_fs_stream_close(s, &err);
	capsule_fs_stream_free(s);
	if (r < 0) {
		respond_capsule_error(c, rq, &err);
		return;
	}
	struct json_writer w;
	json_init(&w, false);
	json_object_begin(&w);
	json_kv_string(&w, "path", query(c, "path"));
	json_kv_uint(&w, "size", rq->upload_bytes);
	json_object_end(&w);
	respond_json(c, rq, 201, json_steal(&w, NULL));
}

static bool begin_upload(struct MHD_Connection *c, struct request *rq)
{
	const char *path = file_path(c, rq);
	if (!path)
		return false;
	capsule_error err = { 0 };
	if (capsule_fs_open_write(&rq->upload, rq->e->sb, path, 0, CAPSULE_FS_PARENTS, &err) < 0) {
		respond_capsule_error(c, rq, &err);
		return false;
	}
	return true;
}

static void upload_chunk(struct request *rq, const char *data, size_t len)
{
	if (rq->upload_error || !rq->upload)
		return;
	int r = capsule_fs_stream_write(rq->upload, data, len, &rq->upload_err);
	if (r < 0)
		rq->upload_error = r; /* the rest is read and dropped; the old file stays */
	else
		rq->upload_bytes += len;
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
	{ "PUT", "/v1/sandboxes/{id}/files", handle_files_put, BODY_STREAM, false },
	{ "DELETE", "/v1/sandboxes/{id}/files", handle_files_delete, BODY_NONE, false },
};
#define N_ROUTES (sizeof(routes) / sizeof(routes[0]))

void serve_api_print_routes(FILE *out)
{
	for (size_t i = 0; i < N_ROUTES; i++)
		fprintf(out, "%s %s\n", routes[i].method, routes[i].pattern);
}

/* PATH against PATTERN; "{id}" takes one non-empty segment into ID. */
static bool path_match(const char *pattern, const char *path, char id[64])
{
	while (*pattern) {
		if (!strncmp(pattern, "{id}", 4)) {
			size_t n = strcspn(path, "/");
			if (n == 0 || n >= 64)
				return false;
			memcpy(id, path, n);
			id[n] = '\0';
			path += n;
			pattern += 4;
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
		if (!path_match(routes[i].pattern, url, rq->id))
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
		if (token_check(h + 7, rq->token_name, rq->owner)) {
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
	if (rt->body == BODY_STREAM && !begin_upload(c, rq))
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
		pthread_mutex_lock(&S.lock);
		S.in_flight++;
		pthread_mutex_unlock(&S.lock);
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
			upload_chunk(rq, upload_data, *upload_size);
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
	if (S.opts.audit_fd < 0)
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
	json_kv_string(&w, "sandbox", rq->e ? rq->e->id : NULL);
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
		if (write(S.opts.audit_fd, line, len) < 0)
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
	entry_unref(rq->e);
	free(rq->body);
	free(rq->path);
	free(rq);
	pthread_mutex_lock(&S.lock);
	S.in_flight--;
	pthread_cond_broadcast(&S.wake);
	pthread_mutex_unlock(&S.lock);
}

void *serve_api_handler(void)
{
	return (void *)on_request;
}

void *serve_api_completed(void)
{
	return (void *)on_completed;
}
