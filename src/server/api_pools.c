/* Warm pools of capsule serve (docs/serve.md, "Pools"): the pools named by --pool are made at
 * start with the library's capsule_pool_create and removed at shutdown; a create that names
 * one takes a ready sandbox from it (api_sandboxes.c), and GET /v1/pools lists them. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <microhttpd.h>

#include "api_internal.h"
#include "json.h"
#include "parse.h"
#include "serve.h"
#include "util.h"

int serve_pool_parse(const char *text, struct serve_pool *out, capsule_error *err)
{
	memset(out, 0, sizeof(*out));
	const char *c1 = strchr(text, ':');
	if (!c1 || c1 == text || (size_t)(c1 - text) >= sizeof(out->name))
		return cap_err_plain(err, EINVAL, "--pool '%s' must be NAME:SIZE[:IMAGE]", text);
	memcpy(out->name, text, (size_t)(c1 - text));
	const char *c2 = strchr(c1 + 1, ':');
	char size[16];
	size_t sl = c2 ? (size_t)(c2 - c1 - 1) : strlen(c1 + 1);
	if (sl == 0 || sl >= sizeof(size))
		return cap_err_plain(err, EINVAL, "--pool '%s': SIZE must be 1 to %d", text, CAPSULE_POOL_SIZE_MAX);
	memcpy(size, c1 + 1, sl);
	size[sl] = '\0';
	uint64_t u;
	if (parse_uint(size, "SIZE", 1, CAPSULE_POOL_SIZE_MAX, &u, err) < 0)
		return cap_err_plain(err, EINVAL, "--pool '%s': SIZE must be 1 to %d", text, CAPSULE_POOL_SIZE_MAX);
	out->size = (uint32_t)u;
	if (c2 && !c2[1])
		return cap_err_plain(err, EINVAL, "--pool '%s': IMAGE is empty", text);
	out->image = c2 ? c2 + 1 : NULL;
	return 0;
}

static int pool_make(struct serve_pool *p, capsule_error *err)
{
	capsule_config *cfg;
	int r = capsule_config_new(&cfg, err);
	if (r < 0)
		return r;
	if ((p->image && (r = capsule_config_set_image(cfg, p->image, err)) < 0) ||
	    (r = capsule_config_set_memory_bytes(cfg, p->memory_bytes, err)) < 0 ||
	    (r = capsule_pool_create(p->name, cfg, p->size, err)) < 0) {
		if (r == -EEXIST)
			cap_err_plain(err, EEXIST, "pool '%s' exists already (another server's, or left over: 'capsule pool rm %s')",
				      p->name, p->name);
		else
			cap_err_wrap(err, r, "making pool '%s'", p->name);
	} else {
		p->made = true;
	}
	capsule_config_free(cfg);
	return r;
}

int serve_pools_start(capsule_error *err)
{
	for (size_t i = 0; i < serve_state.opts.n_pools; i++) {
		struct serve_pool *p = &serve_state.opts.pools[i];
		p->memory_bytes = serve_state.opts.default_memory;
		int r = pool_make(p, err);
		if (r < 0) {
			serve_pools_stop();
			return r;
		}
	}
	return 0;
}

void serve_pools_stop(void)
{
	for (size_t i = 0; i < serve_state.opts.n_pools; i++) {
		struct serve_pool *p = &serve_state.opts.pools[i];
		capsule_error err = { 0 };
		if (p->made && capsule_pool_remove(p->name, &err) < 0)
			fprintf(stderr, "capsule serve: removing pool '%s': %s\n", p->name, err.message);
		p->made = false;
	}
}

const struct serve_pool *serve_pool_find(const char *name)
{
	for (size_t i = 0; i < serve_state.opts.n_pools; i++)
		if (!strcmp(serve_state.opts.pools[i].name, name))
			return &serve_state.opts.pools[i];
	return NULL;
}

/* The library's list, for each pool's ready count. */
struct ready_walk {
	const char *name;
	int64_t ready;
};

static int ready_of(const char *name, const char *value, size_t len, void *payload)
{
	(void)name;
	struct ready_walk *w = payload;
	_cleanup_free_ char *pool = NULL;
	int64_t ready;
	if (json_get_string(value, len, "name", &pool) == 0 && pool && !strcmp(pool, w->name) &&
	    json_get_int(value, len, "ready", &ready) == 0)
		w->ready = ready;
	return 0;
}

void handle_pools_list(struct MHD_Connection *c, struct request *rq)
{
	capsule_error err = { 0 };
	_cleanup_free_ char *list = NULL;
	if (capsule_pool_list_json(&list, &err) < 0) {
		respond_capsule_error(c, rq, &err);
		return;
	}
	struct json_writer w;
	json_init(&w, false);
	json_object_begin(&w);
	json_key(&w, "pools");
	json_array_begin(&w);
	for (size_t i = 0; i < serve_state.opts.n_pools; i++) {
		const struct serve_pool *p = &serve_state.opts.pools[i];
		struct ready_walk rw = { p->name, 0 };
		json_array_each(list, strlen(list), CAPSULE_POOLS_MAX, ready_of, &rw);
		json_object_begin(&w);
		json_kv_string(&w, "name", p->name);
		json_kv_uint(&w, "size", p->size);
		json_kv_uint(&w, "ready", (uint64_t)rw.ready);
		json_kv_string(&w, "image", p->image ? p->image : "host");
		json_kv_string(&w, "isolation", "container");
		json_kv_uint(&w, "memory", p->memory_bytes);
		json_object_end(&w);
	}
	json_array_end(&w);
	json_object_end(&w);
	respond_json(c, rq, 200, json_steal(&w, NULL));
}
