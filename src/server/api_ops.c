/* The routes that act on a sandbox beyond exec and files: stop and start, checkpoint, revert
 * and fork, port forwards; and the image store's list and pull (with progress). Each is the
 * library's call of the same name (docs/serve.md). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "api_internal.h"
#include "json.h"
#include "serve.h"
#include "util.h"

static bool decode(struct MHD_Connection *c, struct request *rq, struct serve_field *f, size_t n)
{
	capsule_error err = { 0 };
	if (serve_decode_fields(rq->body ? rq->body : "", rq->body_len, f, n, &err) < 0) {
		respond_error(c, rq, 400, "invalid_request", "%s", err.message);
		return false;
	}
	return true;
}

static void respond_sandbox(struct MHD_Connection *c, struct request *rq, unsigned status, struct sandbox_entry *e)
{
	struct json_writer w;
	json_init(&w, false);
	write_sandbox(&w, e);
	respond_json(c, rq, status, json_steal(&w, NULL));
}

/* ---- stop and start ---------------------------------------------------------------------- */

/* The sandbox's processes end (SIGTERM, SIGKILL after `timeout` seconds, default 10), its
 * filesystem stays; its lifetime goes on counting. A server sandbox is ephemeral (it dies with
 * the server), so the library's stop_keep keeps it rather than removing it. */
void handle_sandbox_stop(struct MHD_Connection *c, struct request *rq)
{
	struct serve_field f[] = { { .name = "timeout", .kind = SERVE_FIELD_UINT, .min = 0, .max = 600 } };
	if (!decode(c, rq, f, ARRAY_SIZE(f)))
		return;
	uint32_t ms = f[0].set ? (uint32_t)f[0].uint * 1000 : CAPSULE_STOP_TIMEOUT_DEFAULT_MS;
	capsule_error err = { 0 };
	if (capsule_sandbox_stop_keep(rq->e->sb, ms, &err) < 0) {
		respond_capsule_error(c, rq, &err);
		return;
	}
	respond_sandbox(c, rq, 200, rq->e);
}

void handle_sandbox_start(struct MHD_Connection *c, struct request *rq)
{
	capsule_error err = { 0 };
	int r = capsule_sandbox_start(rq->e->sb, &err);
	if (r == -EALREADY) {
		respond_error(c, rq, 409, "already_running", "sandbox '%s' is running already", rq->e->id);
		return;
	}
	if (r < 0) {
		respond_capsule_error(c, rq, &err);
		return;
	}
	respond_sandbox(c, rq, 200, rq->e);
}

/* A removal's answer: {"deleted": true}, or the library's error R. */
static void respond_deleted(struct MHD_Connection *c, struct request *rq, int r, const capsule_error *err)
{
	if (r < 0)
		respond_capsule_error(c, rq, err);
	else
		respond_json(c, rq, 200, strdup("{\"deleted\":true}"));
}

static void respond_list(struct MHD_Connection *c, struct request *rq, unsigned status, const char *key, char *array,
			 int r, const capsule_error *err)
{
	if (r < 0) {
		respond_capsule_error(c, rq, err);
		return;
	}
	char *text = NULL;
	if (asprintf(&text, "{\"%s\":%s}", key, array) < 0)
		text = NULL;
	free(array);
	respond_json(c, rq, status, text);
}

/* ---- pause and resume ------------------------------------------------------------------ */

/* The library's pause in memory (the cgroup freezer, a vm's QMP stop): the body is an object
 * with no field yet, so that a pause to disk can come as a field ("to_disk") without a new
 * route; an unknown field is refused meanwhile, never ignored. */
static void pause_op(struct MHD_Connection *c, struct request *rq, bool resume)
{
	if (!decode(c, rq, NULL, 0))
		return;
	capsule_error err = { 0 };
	int r = resume ? capsule_sandbox_resume(rq->e->sb, &err) : capsule_sandbox_pause(rq->e->sb, &err);
	if (r < 0)
		respond_capsule_error(c, rq, &err);
	else
		respond_sandbox(c, rq, 200, rq->e);
}

void handle_sandbox_pause(struct MHD_Connection *c, struct request *rq)
{
	pause_op(c, rq, false);
}

void handle_sandbox_resume(struct MHD_Connection *c, struct request *rq)
{
	pause_op(c, rq, true);
}

/* ---- diff ------------------------------------------------------------------------------- */

/* {"changes": [...]}: the library's diff as it gives it, or since a checkpoint of the sandbox
 * (checkpoints are the sandbox's own, so any name is the caller's) or one of the caller's own
 * saves (serve_diff_since). */
void handle_diff(struct MHD_Connection *c, struct request *rq)
{
	const char *since = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "since");
	if (since && !since[0]) {
		respond_error(c, rq, 400, "invalid_argument", "'since' is empty: give a checkpoint's or a save's name");
		return;
	}
	char *list = NULL;
	capsule_error err = { 0 };
	int r = since ? serve_diff_since(rq->owner, rq->e->sb, since, &list, &err)
		      : capsule_sandbox_diff_json(rq->e->sb, &list, &err);
	respond_list(c, rq, 200, "changes", list, r, &err);
}

/* ---- checkpoint, revert, fork ------------------------------------------------------------- */

/* Checkpoints belong to their sandbox (they go with it), so a name is the caller's own. */
static void checkpoint_op(struct MHD_Connection *c, struct request *rq, bool revert)
{
	struct serve_field f[] = { { .name = "name", .kind = SERVE_FIELD_STRING, .required = true, .max = 63 } };
	if (!decode(c, rq, f, ARRAY_SIZE(f)))
		return;
	capsule_error err = { 0 };
	int r = revert ? capsule_revert(rq->e->sb, f[0].string, &err) : capsule_checkpoint(rq->e->sb, f[0].string, &err);
	if (r < 0)
		respond_capsule_error(c, rq, &err);
	else
		respond_sandbox(c, rq, revert ? 200 : 201, rq->e);
	serve_fields_free(f, ARRAY_SIZE(f));
}

void handle_checkpoint(struct MHD_Connection *c, struct request *rq)
{
	checkpoint_op(c, rq, false);
}

void handle_revert(struct MHD_Connection *c, struct request *rq)
{
	checkpoint_op(c, rq, true);
}

/* A new sandbox of the same token from this one's configuration and current filesystem,
 * counted against the token's limits as a create is. The library's fork is detached; the
 * server removes it as it removes the others (DELETE, lifetimes, shutdown). */
void handle_fork(struct MHD_Connection *c, struct request *rq)
{
	struct serve_field f[] = {
		{ .name = "timeout", .kind = SERVE_FIELD_UINT, .min = 1, .max = SERVE_TIMEOUT_MAX_S },
		{ .name = "idle_timeout", .kind = SERVE_FIELD_UINT, .min = 1, .max = SERVE_TIMEOUT_MAX_S },
	};
	if (!decode(c, rq, f, ARRAY_SIZE(f)))
		return;
	const struct sandbox_entry *src = rq->e;
	struct sandbox_entry *e = calloc(1, sizeof(*e));
	if (!e || new_id(e->id) < 0) {
		free(e);
		respond_json(c, rq, 500, NULL);
		return;
	}
	memcpy(e->owner, rq->owner, 32);
	e->isolation = src->isolation;
	e->memory_bytes = src->memory_bytes;
	e->timeout_s = f[0].set ? (uint32_t)f[0].uint : src->timeout_s;
	e->idle_timeout_s = f[1].set ? (uint32_t)f[1].uint : src->idle_timeout_s;
	e->detached = true;
	e->image = src->image ? strdup(src->image) : NULL;
	e->network = src->network ? strdup(src->network) : NULL;
	e->cpus = src->cpus ? strdup(src->cpus) : NULL;
	for (size_t i = 0; i < src->n_labels; i++) {
		e->labels[i].key = strdup(src->labels[i].key);
		e->labels[i].value = strdup(src->labels[i].value);
		e->n_labels++;
	}
	e->created_unix = (int64_t)time(NULL);
	e->refs = 1;
	capsule_error err = { 0 };
	unsigned status;
	const char *code;
	char who[SERVE_TOKEN_NAME_MAX + 16];
	snprintf(who, sizeof(who), "token '%s'", rq->token_name);
	if (table_enter(rq->owner, who, e, &status, &code, &err) < 0) {
		entry_free(e);
		respond_error(c, rq, status, code, "%s", err.message);
		return;
	}
	capsule_sandbox *sb = NULL;
	int r = capsule_fork(rq->e->sb, e->id, &sb, &err);
	table_started(e, sb, r);
	if (r < 0) {
		entry_free(e);
		respond_capsule_error(c, rq, &err);
		return;
	}
	respond_sandbox(c, rq, 201, e);
	entry_unref(e);
}

/* ---- port forwards ------------------------------------------------------------------------ */

void handle_ports_list(struct MHD_Connection *c, struct request *rq)
{
	char *list = NULL;
	capsule_error err = { 0 };
	int r = capsule_ports_json(rq->e->sb, &list, &err);
	respond_list(c, rq, 200, "ports", list, r, &err);
}

/* Forwards listen on the host: an API client gets loopback addresses only, so that no token
 * can open a port to the network the server's host is on. */
static bool loopback(const char *ip)
{
	struct in_addr a4;
	struct in6_addr a6;
	if (inet_pton(AF_INET, ip, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	return inet_pton(AF_INET6, ip, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
}

void handle_ports_add(struct MHD_Connection *c, struct request *rq)
{
	struct serve_field f[] = {
		/* The server runs as root: a token must not squat a privileged port of the host. */
		{ .name = "host_port", .kind = SERVE_FIELD_UINT, .required = true, .min = 1024, .max = 65535 },
		{ .name = "port", .kind = SERVE_FIELD_UINT, .required = true, .min = 1, .max = 65535 },
		{ .name = "host_ip", .kind = SERVE_FIELD_STRING, .max = 63 },
	};
	if (!decode(c, rq, f, ARRAY_SIZE(f)))
		return;
	const char *ip = f[2].set ? f[2].string : "127.0.0.1";
	if (!loopback(ip)) {
		respond_error(c, rq, 403, "permission_denied",
			      "field 'host_ip': '%s' is not a loopback address (the API forwards from loopback only)", ip);
		serve_fields_free(f, ARRAY_SIZE(f));
		return;
	}
	char spec[128];
	snprintf(spec, sizeof(spec), strchr(ip, ':') ? "[%s]:%llu:%llu" : "%s:%llu:%llu", ip,
		 (unsigned long long)f[0].uint, (unsigned long long)f[1].uint);
	serve_fields_free(f, ARRAY_SIZE(f));
	capsule_error err = { 0 };
	if (capsule_port_add(rq->e->sb, spec, &err) < 0) {
		if (err.code == EADDRINUSE)
			respond_error(c, rq, 409, "address_in_use", "%s", err.message);
		else
			respond_capsule_error(c, rq, &err);
		return;
	}
	char *list = NULL;
	int r = capsule_ports_json(rq->e->sb, &list, &err);
	respond_list(c, rq, 201, "ports", list, r, &err);
}

/* DELETE ?host_port=N[&host_ip=IP]. */
void handle_ports_remove(struct MHD_Connection *c, struct request *rq)
{
	const char *port = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "host_port");
	const char *ip = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "host_ip");
	char *end = NULL;
	unsigned long p = port ? strtoul(port, &end, 10) : 0;
	if (!port || !*port || *end || p < 1 || p > 65535) {
		respond_error(c, rq, 400, "invalid_argument", "query parameter 'host_port' must be a port, 1 to 65535");
		return;
	}
	char host_side[96];
	if (ip && strchr(ip, ':'))
		snprintf(host_side, sizeof(host_side), "[%.64s]:%lu", ip, p);
	else
		snprintf(host_side, sizeof(host_side), "%.64s:%lu", ip ? ip : "127.0.0.1", p);
	capsule_error err = { 0 };
	respond_deleted(c, rq, capsule_port_remove(rq->e->sb, host_side, &err), &err);
}

/* ---- mounts -------------------------------------------------------------------------------- */

void handle_mounts_list(struct MHD_Connection *c, struct request *rq)
{
	char *list = NULL;
	capsule_error err = { 0 };
	int r = capsule_mounts_json(rq->e->sb, &list, &err);
	respond_list(c, rq, 200, "mounts", list, r, &err);
}

/* A host folder, read-only, from below --mount-root only. The path is resolved here (symlinks
 * followed) and must stay below the root; the shim then opens the resolved path. Between the
 * two a writer below the root could swap a folder for a symlink, so nothing an API client can
 * reach may write there: API mounts are read-only, always (a sandbox with a writable mount
 * below the root could win that race and name any host folder). */
void handle_mounts_add(struct MHD_Connection *c, struct request *rq)
{
	struct serve_field f[] = {
		{ .name = "host_path", .kind = SERVE_FIELD_STRING, .required = true, .max = CAPSULE_FS_PATH_MAX },
		{ .name = "guest_path", .kind = SERVE_FIELD_STRING, .required = true, .max = CAPSULE_FS_PATH_MAX },
		{ .name = "readonly", .kind = SERVE_FIELD_BOOL },
	};
	if (!decode(c, rq, f, ARRAY_SIZE(f)))
		return;
	const char *root = serve_state.opts.mount_root;
	_cleanup_free_ char *resolved = NULL;
	if (!root) {
		respond_error(c, rq, 403, "permission_denied",
			      "this server mounts no host folders (it was started without --mount-root)");
	} else if (f[2].set && !f[2].boolean) {
		respond_error(c, rq, 403, "permission_denied", "mounts through the API are read-only ('readonly': true)");
	} else if (f[0].string[0] != '/') {
		respond_error(c, rq, 400, "invalid_argument", "field 'host_path': '%s' is not an absolute path", f[0].string);
	} else if (!(resolved = realpath(f[0].string, NULL))) {
		respond_error(c, rq, errno == ENOENT ? 404 : 400, errno == ENOENT ? "not_found" : "invalid_argument",
			      "field 'host_path': '%s': %s", f[0].string, strerror(errno));
	} else if (strcmp(resolved, root) && (strncmp(resolved, root, strlen(root)) || resolved[strlen(root)] != '/')) {
		respond_error(c, rq, 403, "permission_denied", "field 'host_path': '%s' is not below this server's --mount-root",
			      f[0].string);
	} else {
		capsule_error err = { 0 };
		_cleanup_free_ char *handle = NULL;
		int r = capsule_mount(rq->e->sb, resolved, f[1].string, CAPSULE_MOUNT_RO, &handle, &err);
		char *list = NULL;
		if (r == 0)
			r = capsule_mounts_json(rq->e->sb, &list, &err);
		respond_list(c, rq, 201, "mounts", list, r, &err);
	}
	serve_fields_free(f, ARRAY_SIZE(f));
}

/* DELETE ?target=GUEST_PATH or a handle ("m1"). */
void handle_mounts_remove(struct MHD_Connection *c, struct request *rq)
{
	const char *target = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "target");
	if (!target || !*target) {
		respond_error(c, rq, 400, "invalid_argument", "query parameter 'target' (a guest path or a handle) is required");
		return;
	}
	capsule_error err = { 0 };
	respond_deleted(c, rq, capsule_unmount(rq->e->sb, target, &err), &err);
}

/* ---- images ------------------------------------------------------------------------------- */

void handle_images_list(struct MHD_Connection *c, struct request *rq)
{
	char *list = NULL;
	capsule_error err = { 0 };
	int r = capsule_image_list_json(&list, &err);
	respond_list(c, rq, 200, "images", list, r, &err);
}

/* A pull streams its progress as it goes: one JSON object a line (application/x-ndjson),
 * {"stage", "digest", "done", "total"} for each step the library reports, then {"name": ...}
 * once it is in the store, or {"error": {...}} when it failed. The pull runs in a thread of
 * its own that writes the lines into a pipe; the response reads the pipe as the client takes
 * them, so a slow client holds back only the pipe's few KiB. */
struct pull {
	pthread_t thread;
	int rfd, wfd;
	char *ref, *platform;
	bool insecure;
	struct timespec last;
};

static void pull_line(struct pull *p, char *text)
{
	if (!text)
		return;
	size_t len = strlen(text);
	text[len] = '\n'; /* json_steal's NUL becomes the line's end */
	/* The client may be gone (EPIPE): the pull goes on to its end all the same. */
	for (size_t off = 0; off <= len;) {
		ssize_t n = write(p->wfd, text + off, len + 1 - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		off += (size_t)n;
	}
	free(text);
}

static void pull_progress(const char *stage, const char *digest, uint64_t done, uint64_t total, void *payload)
{
	struct pull *p = payload;
	/* At most ten lines a second of download progress; every other stage, and a blob's end,
	 * always. */
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	int64_t ms = (now.tv_sec - p->last.tv_sec) * 1000 + (now.tv_nsec - p->last.tv_nsec) / 1000000;
	if (!strcmp(stage, "download") && done != total && ms < 100)
		return;
	p->last = now;
	struct json_writer w;
	json_init(&w, false);
	json_object_begin(&w);
	json_kv_string(&w, "stage", stage);
	json_kv_string(&w, "digest", digest);
	json_kv_uint(&w, "done", done);
	json_kv_uint(&w, "total", total);
	json_object_end(&w);
	pull_line(p, json_steal(&w, NULL));
}

static void *pull_main(void *arg)
{
	struct pull *p = arg;
	capsule_pull_options o = CAPSULE_PULL_OPTIONS_INIT;
	o.insecure = p->insecure;
	o.platform = p->platform;
	o.progress = pull_progress;
	o.payload = p;
	char *name = NULL;
	capsule_error err = { 0 };
	int r = capsule_image_pull(p->ref, &o, &name, &err);
	struct json_writer w;
	json_init(&w, false);
	json_object_begin(&w);
	if (r < 0) {
		json_key(&w, "error");
		json_object_begin(&w);
		json_kv_string(&w, "code", r == -EHOSTUNREACH ? "registry_unreachable"
					   : r == -ENOENT     ? "not_found"
					   : r == -EINVAL     ? "invalid_argument"
							      : "pull_failed");
		json_kv_string(&w, "message", err.message);
		json_object_end(&w);
	} else {
		json_kv_string(&w, "name", name);
	}
	json_object_end(&w);
	free(name);
	pull_line(p, json_steal(&w, NULL));
	close(p->wfd);
	p->wfd = -1;
	return NULL;
}

static ssize_t pull_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct pull *p = cls;
	for (;;) {
		ssize_t n = read(p->rfd, buf, max);
		if (n > 0)
			return n;
		if (n < 0 && errno == EINTR)
			continue;
		return MHD_CONTENT_READER_END_OF_STREAM;
	}
}

static void pull_free(void *cls)
{
	struct pull *p = cls;
	/* A client that left early: the pull is not cut short (the store stays whole), its lines
	 * go nowhere. */
	close(p->rfd);
	pthread_join(p->thread, NULL);
	free(p->ref);
	free(p->platform);
	free(p);
}

void handle_images_pull(struct MHD_Connection *c, struct request *rq)
{
	struct serve_field f[] = {
		{ .name = "ref", .kind = SERVE_FIELD_STRING, .required = true, .max = 255 },
		{ .name = "platform", .kind = SERVE_FIELD_STRING, .max = 63 },
		{ .name = "insecure", .kind = SERVE_FIELD_BOOL },
	};
	if (!decode(c, rq, f, ARRAY_SIZE(f)))
		return;
	struct pull *p = calloc(1, sizeof(*p));
	int fds[2];
	if (!p || pipe2(fds, O_CLOEXEC) < 0) {
		free(p);
		serve_fields_free(f, ARRAY_SIZE(f));
		respond_json(c, rq, 500, NULL);
		return;
	}
	p->rfd = fds[0];
	p->wfd = fds[1];
	p->ref = steal_ptr(f[0].string);
	p->platform = steal_ptr(f[1].string);
	p->insecure = f[2].set && f[2].boolean;
	clock_gettime(CLOCK_MONOTONIC, &p->last);
	int r = pthread_create(&p->thread, NULL, pull_main, p);
	if (r != 0) {
		close(fds[0]);
		close(fds[1]);
		free(p->ref);
		free(p->platform);
		free(p);
		respond_json(c, rq, 500, NULL);
		return;
	}
	struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, pull_read, p, pull_free);
	if (!resp) {
		pull_free(p);
		respond_json(c, rq, 500, NULL);
		return;
	}
	queue(c, rq, 200, resp, "application/x-ndjson");
}
