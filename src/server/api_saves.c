/* Named saves through the API, owned by a token. The library's save names are one namespace
 * for the whole host, so the server keeps each token's saves under host names of its own
 * making: SERVE_SAVE_PREFIX, 16 hex digits of SHA-256("capsule serve save" NUL, the token's
 * hash), '-', then the client's NAME. NAME is strict (1 to 32 of a-z, 0-9, '_', '.', '-',
 * starting with a letter or digit), so it cannot reach past its token's part; and a create's
 * 'image' may not start with the prefix, so no token reaches a save but its own ('save').
 * Operators' saves (any other name) stay templates for every token through 'image'. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <microhttpd.h>
#include <openssl/sha.h>

#include "api_internal.h"
#include "json.h"
#include "serve.h"
#include "util.h"

#define SAVE_NAME_MAX 32
#define OWNER_HEX 16

static int check_name(const char *name, capsule_error *err)
{
	size_t n = strlen(name);
	if (n == 0 || n > SAVE_NAME_MAX)
		return cap_err_plain(err, EINVAL, "save name '%.40s': must be 1 to %d characters", name, SAVE_NAME_MAX);
	for (size_t i = 0; i < n; i++) {
		char ch = name[i];
		bool alnum = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9');
		if (!alnum && (i == 0 || (ch != '_' && ch != '.' && ch != '-')))
			return cap_err_plain(err, EINVAL,
					     "save name '%.40s': use a-z, 0-9, '_', '.' and '-', starting with a letter or digit",
					     name);
	}
	return 0;
}

/* SERVE_SAVE_PREFIX and the owner's hex and '-': the start of every host name of OWNER's. */
static void owner_prefix(const uint8_t owner[32], char *out, size_t size)
{
	static const char tag[] = "capsule serve save"; /* its NUL is hashed too */
	uint8_t in[sizeof(tag) + 32], md[SHA256_DIGEST_LENGTH];
	memcpy(in, tag, sizeof(tag));
	memcpy(in + sizeof(tag), owner, 32);
	SHA256(in, sizeof(in), md);
	int n = snprintf(out, size, "%s", SERVE_SAVE_PREFIX);
	for (size_t i = 0; i < OWNER_HEX / 2 && (size_t)n + 3 < size; i++)
		n += snprintf(out + n, size - (size_t)n, "%02x", md[i]);
	snprintf(out + n, size - (size_t)n, "-");
}

int serve_save_host_name(const uint8_t owner[32], const char *name, char *out, size_t size, capsule_error *err)
{
	int r = check_name(name, err);
	if (r < 0)
		return r;
	char prefix[64];
	owner_prefix(owner, prefix, sizeof(prefix));
	snprintf(out, size, "%s%s", prefix, name);
	return 0;
}

/* OWNER's saves, from the library's list of every save: each one's JSON object, by host name. */
struct own_saves {
	char prefix[64];
	struct json_writer *w; /* where the list goes, or NULL */
	const char *want;      /* a host name to look for, or NULL */
	unsigned count;
	bool found;
};

static int own_save(const char *key, const char *value, size_t len, void *payload)
{
	(void)key;
	struct own_saves *o = payload;
	_cleanup_free_ char *name = NULL, *sandbox = NULL;
	if (json_get_string(value, len, "name", &name) < 0 || !name || strncmp(name, o->prefix, strlen(o->prefix)))
		return 0;
	o->count++;
	if (o->want && !strcmp(name, o->want))
		o->found = true;
	if (!o->w)
		return 0;
	int64_t size = 0, created = 0;
	json_get_int(value, len, "size", &size);
	json_get_int(value, len, "created", &created);
	json_get_string(value, len, "sandbox", &sandbox);
	json_object_begin(o->w);
	json_kv_string(o->w, "name", name + strlen(o->prefix));
	json_kv_uint(o->w, "size", (uint64_t)size);
	write_time(o->w, "created_at", created);
	json_key(o->w, "sandbox");
	if (sandbox)
		json_string(o->w, sandbox);
	else
		json_null(o->w);
	json_object_end(o->w);
	return 0;
}

static int scan_saves(const uint8_t owner[32], struct own_saves *o, capsule_error *err)
{
	owner_prefix(owner, o->prefix, sizeof(o->prefix));
	_cleanup_free_ char *all = NULL;
	int r = capsule_saves_json(&all, err);
	if (r < 0)
		return r;
	if (json_array_each(all, strlen(all), 1u << 20, own_save, o) < 0)
		return cap_err_plain(err, EIO, "reading the list of saves");
	return 0;
}

/* A save's count and its write are one step, so that concurrent saves of a token cannot all
 * pass the bound; saves are rare enough that one at a time for the whole server is no cost. */
static pthread_mutex_t save_lock = PTHREAD_MUTEX_INITIALIZER;

void handle_sandbox_save(struct MHD_Connection *c, struct request *rq)
{
	struct serve_field f[] = { { .name = "name", .kind = SERVE_FIELD_STRING, .required = true, .max = 255 } };
	capsule_error err = { 0 };
	if (serve_decode_fields(rq->body ? rq->body : "", rq->body_len, f, ARRAY_SIZE(f), &err) < 0) {
		respond_error(c, rq, 400, "invalid_request", "%s", err.message);
		return;
	}
	char host[64];
	if (serve_save_host_name(rq->owner, f[0].string, host, sizeof(host), &err) < 0) {
		respond_error(c, rq, 400, "invalid_argument", "field 'name': %s", err.message);
		goto out;
	}
	pthread_mutex_lock(&save_lock);
	struct own_saves o = { .want = host };
	int r = scan_saves(rq->owner, &o, &err);
	unsigned max = serve_state.opts.max_saves;
	/* Replacing one of its own saves adds none. */
	if (r == 0 && !o.found && o.count >= max) {
		pthread_mutex_unlock(&save_lock);
		respond_error(c, rq, 429, "limit_exceeded", "token '%s' has %u saves, the most this server allows (--max-saves %u)",
			      rq->token_name, o.count, max);
		goto out;
	}
	if (r == 0)
		r = capsule_save(rq->e->sb, host, &err);
	pthread_mutex_unlock(&save_lock);
	if (r < 0) {
		respond_capsule_error(c, rq, &err);
		goto out;
	}
	struct json_writer w;
	json_init(&w, false);
	json_object_begin(&w);
	json_kv_string(&w, "name", f[0].string);
	json_kv_string(&w, "sandbox", rq->e->id);
	json_object_end(&w);
	respond_json(c, rq, 201, json_steal(&w, NULL));
out:
	serve_fields_free(f, ARRAY_SIZE(f));
}

void handle_saves_list(struct MHD_Connection *c, struct request *rq)
{
	struct json_writer w;
	json_init(&w, false);
	json_object_begin(&w);
	json_key(&w, "saves");
	json_array_begin(&w);
	struct own_saves o = { .w = &w };
	capsule_error err = { 0 };
	if (scan_saves(rq->owner, &o, &err) < 0) {
		json_free(&w);
		respond_capsule_error(c, rq, &err);
		return;
	}
	json_array_end(&w);
	json_object_end(&w);
	respond_json(c, rq, 200, json_steal(&w, NULL));
}

/* Whether OWNER has save NAME (a valid name): 1, 0, or <0 with ERR. */
static int own_save_exists(const uint8_t owner[32], const char *host, capsule_error *err)
{
	struct own_saves o = { .want = host };
	int r = scan_saves(owner, &o, err);
	return r < 0 ? r : o.found;
}

/* The library names a save by its host name HOST in MESSAGE: the caller knows it by its own,
 * NAME (HOST's end). */
static void own_name_in(char *message, const char *host, const char *name)
{
	size_t hl = strlen(host), nl = strlen(name);
	for (char *p; (p = strstr(message, host));) {
		memmove(p + nl, p + hl, strlen(p + hl) + 1);
		memcpy(p, name, nl);
	}
}

/* The library takes a bare name, or "save:NAME", as any save on the host: here a save is
 * looked for only under OWNER's host name, and the library is always told which it is. */
int serve_diff_since(const uint8_t owner[32], capsule_sandbox *sb, const char *since, char **list, capsule_error *err)
{
	static const char save_prefix[] = "save:", cp_prefix[] = "checkpoint:";
	*list = NULL;
	if (!strncmp(since, cp_prefix, strlen(cp_prefix)))
		return capsule_sandbox_diff_since_json(sb, since, list, err);
	bool is_save = !strncmp(since, save_prefix, strlen(save_prefix));
	const char *name = is_save ? since + strlen(save_prefix) : since;
	char target[128];
	int r;
	if (!is_save) {
		snprintf(target, sizeof(target), "%s%.100s", cp_prefix, name);
		r = strlen(name) > 100 ? -ENOENT : capsule_sandbox_diff_since_json(sb, target, list, err);
		/* No checkpoint of that name: the caller's save, if the name can be one. */
		if (r != -ENOENT || check_name(name, NULL) < 0)
			return r;
	}
	char host[64];
	capsule_error e = { 0 };
	if ((r = serve_save_host_name(owner, name, host, sizeof(host), &e)) < 0)
		return cap_err_plain(err, -r, "'since': %s", e.message);
	if ((r = own_save_exists(owner, host, err)) < 0)
		return r;
	if (r == 0)
		return is_save ? cap_err_plain(err, ENOENT, "no save '%s' (GET /v1/saves lists yours)", name)
			       : cap_err_plain(err, ENOENT, "no checkpoint or save named '%s'", name);
	snprintf(target, sizeof(target), "%s%s", save_prefix, host);
	if ((r = capsule_sandbox_diff_since_json(sb, target, list, err)) < 0 && err)
		own_name_in(err->message, host, name);
	return r;
}

void handle_save_delete(struct MHD_Connection *c, struct request *rq)
{
	const char *name = rq->eid;
	char host[64];
	capsule_error err = { 0 };
	if (serve_save_host_name(rq->owner, name, host, sizeof(host), &err) < 0) {
		respond_error(c, rq, 400, "invalid_argument", "%s", err.message);
		return;
	}
	pthread_mutex_lock(&save_lock);
	int found = own_save_exists(rq->owner, host, &err);
	int r = found > 0 ? capsule_save_remove(host, &err) : found;
	pthread_mutex_unlock(&save_lock);
	if (found == 0)
		respond_error(c, rq, 404, "not_found", "no save '%s'", name);
	else if (r < 0)
		respond_capsule_error(c, rq, &err);
	else
		respond_json(c, rq, 200, strdup("{\"deleted\":true}"));
}

int serve_create_save_check(const uint8_t owner[32], struct serve_create_req *req, unsigned *status, const char **code,
			    capsule_error *err)
{
	*status = 400, *code = "invalid_argument";
	if (req->image && !strncmp(req->image, SERVE_SAVE_PREFIX, strlen(SERVE_SAVE_PREFIX)))
		return cap_err_plain(err, EINVAL,
				     "field 'image': names starting with '%s' are the API's own saves (start from yours with 'save')",
				     SERVE_SAVE_PREFIX);
	if (!req->save)
		return 0;
	if (req->image || req->pool)
		return cap_err_plain(err, EINVAL, "field 'save' cannot be given with '%s'", req->image ? "image" : "pool");
	char host[64];
	capsule_error e = { 0 };
	if (serve_save_host_name(owner, req->save, host, sizeof(host), &e) < 0)
		return cap_err_plain(err, EINVAL, "field 'save': %s", e.message);
	int r = own_save_exists(owner, host, &e);
	if (r < 0) {
		*status = 500, *code = "internal";
		return cap_err_plain(err, -r, "%s", e.message);
	}
	if (r == 0) {
		*status = 404, *code = "not_found";
		return cap_err_plain(err, ENOENT, "no save '%s' (GET /v1/saves lists yours)", req->save);
	}
	if (!(req->image = strdup(host)))
		return cap_err(err, ENOMEM, "creating a sandbox");
	return 0;
}
