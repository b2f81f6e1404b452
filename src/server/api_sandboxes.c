/* The sandbox routes of capsule serve: list (with label filters), get, create (under the
 * per-token limits) and delete. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <microhttpd.h>
#include <openssl/crypto.h>

#include "api_internal.h"
#include "json.h"
#include "serve.h"
#include "util.h"

void write_time(struct json_writer *w, const char *key, int64_t unix_s)
{
	char buf[32];
	time_t t = (time_t)unix_s;
	struct tm tm;
	strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
	json_kv_string(w, key, buf);
}

void write_sandbox(struct json_writer *w, struct sandbox_entry *e)
{
	capsule_sandbox_info info;
	/* A sandbox paused through the CLI or the C API says so. */
	bool up = capsule_sandbox_inspect(e->sb, &info, NULL) == 0 &&
		  (!strcmp(info.state, "running") || !strcmp(info.state, "paused"));
	json_object_begin(w);
	json_kv_string(w, "id", e->id);
	json_kv_string(w, "state", up ? info.state : "stopped");
	json_kv_bool(w, "paused", up && !strcmp(info.state, "paused"));
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
	json_key(w, "pool");
	if (e->pool[0])
		json_string(w, e->pool);
	else
		json_null(w);
	json_key(w, "labels");
	json_object_begin(w);
	for (size_t i = 0; i < e->n_labels; i++)
		json_kv_string(w, e->labels[i].key, e->labels[i].value);
	json_object_end(w);
	write_time(w, "created_at", e->created_unix);
	json_kv_uint(w, "timeout", e->timeout_s);
	write_time(w, "expires_at", e->created_unix + e->timeout_s);
	json_key(w, "idle_timeout");
	if (e->idle_timeout_s)
		json_uint(w, e->idle_timeout_s);
	else
		json_null(w);
	json_object_end(w);
}

void handle_sandbox_get(struct MHD_Connection *c, struct request *rq)
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

void handle_sandbox_list(struct MHD_Connection *c, struct request *rq)
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
	pthread_mutex_lock(&serve_state.lock);
	size_t total = 0;
	for (struct sandbox_entry *e = serve_state.entries; e; e = e->next)
		total++;
	mine = calloc(total ? total : 1, sizeof(*mine));
	if (mine)
		for (struct sandbox_entry *e = serve_state.entries; e; e = e->next)
			if (e->sb && !CRYPTO_memcmp(e->owner, rq->owner, 32) && labels_match(e, &f)) {
				e->refs++;
				mine[n++] = e;
			}
	pthread_mutex_unlock(&serve_state.lock);
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
	for (struct sandbox_entry *e = serve_state.entries; e; e = e->next)
		if (!CRYPTO_memcmp(e->owner, owner, 32)) {
			(*count)++;
			*memory += e->memory_bytes;
		}
}

int new_id(char out[32])
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
	if (e->pool[0]) {
		/* The pool's sandboxes have the pool's options; a take gives only a name and
		 * whether it outlives the server. Labels stay in the server's table. */
		if ((r = capsule_config_set_name(cfg, e->id, err)) < 0 ||
		    (r = capsule_config_set_pool(cfg, e->pool, err)) < 0 ||
		    (r = capsule_config_set_detached(cfg, serve_state.opts.keep, err)) < 0)
			goto fail;
		*out = cfg;
		return 0;
	}
	if ((r = capsule_config_set_name(cfg, e->id, err)) < 0 ||
	    (e->image && (r = capsule_config_set_image(cfg, e->image, err)) < 0) ||
	    (r = capsule_config_set_isolation(cfg, e->isolation, err)) < 0 ||
	    (r = capsule_config_set_memory_bytes(cfg, e->memory_bytes, err)) < 0 ||
	    (e->cpus && (r = capsule_config_set_cpus(cfg, e->cpus, err)) < 0) ||
	    (e->network && (r = capsule_config_set_network_name(cfg, e->network, err)) < 0) ||
	    (r = capsule_config_set_detached(cfg, serve_state.opts.keep, err)) < 0)
		goto fail;
	for (size_t i = 0; i < req->n_env; i++)
		if ((r = capsule_config_add_env(cfg, req->env[i], err)) < 0)
			goto fail;
	/* The library's labels: kept with the sandbox, where inspect and `ps --filter` see them. */
	for (size_t i = 0; i < e->n_labels; i++) {
		char kv[CAPSULE_LABEL_KEY_MAX + CAPSULE_LABEL_VALUE_MAX + 2];
		snprintf(kv, sizeof(kv), "%s=%s", e->labels[i].key, e->labels[i].value);
		if ((r = capsule_config_add_label(cfg, kv, err)) < 0)
			goto fail;
	}
	*out = cfg;
	return 0;
fail:
	capsule_config_free(cfg);
	return r;
}

/* OWNER's limits: its token's own, else the server's. Under the lock. */
static void owner_limits(const uint8_t owner[32], unsigned *max_sandboxes, uint64_t *max_memory, bool *own_sb,
			 bool *own_mem)
{
	*max_sandboxes = serve_state.opts.max_sandboxes;
	*max_memory = serve_state.opts.max_memory;
	*own_sb = *own_mem = false;
	for (size_t i = 0; i < serve_state.n_tokens; i++) {
		const struct serve_token *t = &serve_state.tokens[i];
		if (CRYPTO_memcmp(t->hash, owner, 32))
			continue;
		if ((*own_sb = t->has_max_sandboxes))
			*max_sandboxes = t->max_sandboxes;
		if ((*own_mem = t->has_max_memory))
			*max_memory = t->max_memory;
	}
}

int table_enter(const uint8_t owner[32], const char *who, struct sandbox_entry *e, unsigned *status,
		const char **code, capsule_error *err)
{
	/* The limits are checked and the new sandbox counted in one step, so that concurrent
	 * creates cannot all pass the check; it is in the table (invisible, sb NULL) while it
	 * starts. */
	pthread_mutex_lock(&serve_state.lock);
	unsigned count, max_sandboxes;
	uint64_t memory, max_memory;
	bool own_sb, own_mem;
	owner_usage(owner, &count, &memory);
	owner_limits(owner, &max_sandboxes, &max_memory, &own_sb, &own_mem);
	const char *over = NULL;
	/* A kept-alive connection may still ask after the sandboxes were removed at shutdown. */
	if (serve_state.stopping)
		over = "stopping";
	else if (max_sandboxes && count + 1 > max_sandboxes)
		over = "sandboxes";
	else if (max_memory && memory + e->memory_bytes > max_memory)
		over = "memory";
	if (!over) {
		e->next = serve_state.entries;
		serve_state.entries = e;
		e->in_table = true;
	}
	pthread_mutex_unlock(&serve_state.lock);
	if (!over)
		return 0;
	if (!strcmp(over, "stopping")) {
		*status = 503, *code = "shutting_down";
		return cap_err_plain(err, ESHUTDOWN, "the server is shutting down");
	}
	*status = 429, *code = "limit_exceeded";
	if (!strcmp(over, "sandboxes"))
		return cap_err_plain(err, EAGAIN, "%s has %u sandboxes, the most %s (--max-sandboxes %u)", who, count,
				     own_sb ? "its token allows" : "this server allows", max_sandboxes);
	return cap_err_plain(err, EAGAIN, "%s would have %llu MiB of sandbox memory, over %s --max-memory of %llu MiB", who,
			     (unsigned long long)((memory + e->memory_bytes) >> 20), own_mem ? "its token's" : "this server's",
			     (unsigned long long)(max_memory >> 20));
}

void table_started(struct sandbox_entry *e, capsule_sandbox *sb, int r)
{
	pthread_mutex_lock(&serve_state.lock);
	if (r < 0) {
		table_unlink(e);
	} else {
		e->sb = sb;
		e->expires_ms = now_ms() + (uint64_t)e->timeout_s * 1000;
		/* The token was removed while this started: the reaper's pass has gone by. */
		if (!owner_has_token(e->owner))
			e->expires_ms = now_ms();
		e->refs++; /* the caller's */
	}
	pthread_mutex_unlock(&serve_state.lock);
}

/* A create naming a pool takes the pool's options: a field that would set one is refused
 * rather than ignored, so a client never believes it got what it did not. */
static const struct serve_pool *pool_for(const struct serve_create_req *req, unsigned *status, const char **code,
					 capsule_error *err)
{
	const struct serve_pool *p = serve_pool_find(req->pool);
	if (!p) {
		*status = 404, *code = "not_found";
		cap_err_plain(err, ENOENT, "no pool '%.64s' on this server (GET /v1/pools lists them)", req->pool);
		return NULL;
	}
	const char *field = req->image		 ? "image" :
			    req->isolation >= 0	 ? "isolation" :
			    req->memory_set	 ? "memory" :
			    req->cpus		 ? "cpus" :
			    req->network	 ? "network" :
			    req->n_env		 ? "env" :
						   NULL;
	if (field) {
		*status = 400, *code = "invalid_request";
		cap_err_plain(err, EINVAL, "field '%s' cannot be given with 'pool': a sandbox from pool '%s' has the pool's options",
			      field, p->name);
		return NULL;
	}
	return p;
}

int serve_sandbox_create(const uint8_t owner[32], const char *who, struct serve_create_req *req,
			 struct sandbox_entry **out, unsigned *status, const char **code, capsule_error *err)
{
	*status = 500;
	*code = "internal";
	const struct serve_pool *pool = NULL;
	if (serve_create_save_check(owner, req, status, code, err) < 0)
		return -EINVAL;
	if (req->pool && !(pool = pool_for(req, status, code, err)))
		return -EINVAL;
	/* With the full network a sandbox reaches the host's loopback (10.0.2.2): the host's own
	 * services and every other token's port forwards listen there. The operator opts in. */
	if (req->network && !strcmp(req->network, "full") && !serve_state.opts.network_full) {
		*status = 403, *code = "permission_denied";
		cap_err_plain(err, EACCES, "network 'full' is not offered by this server: such a sandbox reaches the host's "
			      "loopback, where other clients' port forwards listen (the operator allows it with "
			      "--allow-network-full)");
		return -EACCES;
	}
	struct sandbox_entry *e = calloc(1, sizeof(*e));
	if (!e || new_id(e->id) < 0) {
		free(e);
		return cap_err(err, ENOMEM, "creating a sandbox");
	}
	memcpy(e->owner, owner, 32);
	e->isolation = req->isolation < 0 ? CAPSULE_ISOLATION_CONTAINER : (capsule_isolation)req->isolation;
	e->memory_bytes = req->memory_set ? req->memory_bytes : serve_state.opts.default_memory;
	if (pool) {
		snprintf(e->pool, sizeof(e->pool), "%s", pool->name);
		e->memory_bytes = pool->memory_bytes;
		if (pool->image && !(req->image = strdup(pool->image))) {
			free(e);
			return cap_err(err, ENOMEM, "creating a sandbox");
		}
	}
	e->timeout_s = req->timeout_set ? req->timeout_s : serve_state.opts.default_timeout_s;
	e->idle_timeout_s = req->idle_timeout_s;
	e->image = steal_ptr(req->image);
	e->network = steal_ptr(req->network);
	e->cpus = steal_ptr(req->cpus);
	memcpy(e->labels, req->labels, sizeof(req->labels));
	e->n_labels = req->n_labels;
	req->n_labels = 0;
	e->created_unix = (int64_t)time(NULL);
	e->refs = 1;

	int r = table_enter(owner, who, e, status, code, err);
	if (r < 0) {
		entry_free(e);
		return r;
	}

	capsule_config *cfg = NULL;
	capsule_sandbox *sb = NULL;
	r = build_config(&cfg, req, e, err);
	if (r == 0)
		r = capsule_sandbox_create(&sb, cfg, err);
	capsule_config_free(cfg);
	table_started(e, sb, r);
	if (r < 0) {
		entry_free(e);
		*status = 0; /* the library's error: its errno says the status */
		return r;
	}
	*out = e;
	return 0;
}

void handle_sandbox_create(struct MHD_Connection *c, struct request *rq)
{
	struct serve_create_req req;
	capsule_error err = { 0 };
	if (serve_decode_create(rq->body ? rq->body : "", rq->body_len, &req, &err) < 0) {
		respond_error(c, rq, 400, "invalid_request", "%s", err.message);
		return;
	}
	struct sandbox_entry *e;
	unsigned status;
	const char *code;
	char who[SERVE_TOKEN_NAME_MAX + 16];
	snprintf(who, sizeof(who), "token '%s'", rq->token_name);
	int r = serve_sandbox_create(rq->owner, who, &req, &e, &status, &code, &err);
	serve_create_req_free(&req);
	if (r < 0) {
		if (status)
			respond_error(c, rq, status, code, "%s", err.message);
		else
			respond_capsule_error(c, rq, &err);
		return;
	}
	struct json_writer w;
	json_init(&w, false);
	write_sandbox(&w, e);
	entry_unref(e);
	respond_json(c, rq, 201, json_steal(&w, NULL));
}

bool serve_sandbox_delete(struct sandbox_entry *e)
{
	pthread_mutex_lock(&serve_state.lock);
	bool mine = e->in_table;
	if (mine)
		table_unlink(e);
	pthread_mutex_unlock(&serve_state.lock);
	if (mine)
		entry_destroy(e);
	return mine;
}

void handle_sandbox_delete(struct MHD_Connection *c, struct request *rq)
{
	if (!serve_sandbox_delete(rq->e)) {
		/* The reaper or another DELETE took it between the lookup and here. */
		respond_error(c, rq, 404, "not_found", "no sandbox '%s'", rq->id);
		return;
	}
	respond_json(c, rq, 200, strdup("{\"deleted\":true}"));
}
