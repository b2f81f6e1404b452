/* What the files of capsule serve's API share (api.c, api_sandboxes.c, api_exec.c,
 * api_files.c): the sandbox table's entries, the server's state, a request and its route, and
 * the helpers the handlers answer with. */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include <microhttpd.h>

#include "serve.h"

#define METRICS_EXEC_BUCKETS 12

struct sandbox_entry {
	struct sandbox_entry *next;
	char id[32];
	uint8_t owner[32];           /* the hash of the token that made it */
	capsule_sandbox *sb;         /* NULL while it is being created */
	capsule_isolation isolation;
	char *image, *network, *cpus;
	char pool[64];               /* the server's pool it was taken from, or "" */
	uint64_t memory_bytes;
	struct serve_label labels[SERVE_LABELS_MAX];
	size_t n_labels;
	int64_t created_unix;
	uint32_t timeout_s;
	uint64_t expires_ms;         /* monotonic */
	uint32_t idle_timeout_s;     /* 0: none; else removed after this long idle (capsule_sandbox_stats) */
	bool detached;               /* a fork (the library's forks are): removed, not only stopped */
	unsigned refs;               /* the table's, and one per request using it */
	bool in_table;
	/* Execs over the API, for /metrics (api_metrics.c, under its own lock). */
	uint64_t exec_buckets[METRICS_EXEC_BUCKETS], exec_count, exec_ms_sum;
	uint64_t exec_exited, exec_timed_out, exec_failed;
};

struct serve_state {
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
};

extern struct serve_state serve_state;

enum body_kind { BODY_NONE, BODY_JSON, BODY_STREAM };

struct request;
typedef void (*handler_fn)(struct MHD_Connection *c, struct request *rq);

struct route {
	const char *method;
	const char *pattern;
	handler_fn fn;
	enum body_kind body;
	bool public;
	/* BODY_STREAM: the first call's (false when it answered), then each piece of the body. */
	bool (*begin_body)(struct MHD_Connection *c, struct request *rq);
	void (*body_chunk)(struct request *rq, const char *data, size_t len);
};

struct request {
	const struct route *route;
	char method[16];
	char *path;
	char id[64];
	char eid[64];                /* {eid} of the route */
	struct sandbox_entry *e;
	bool authed;
	bool admin;                  /* an admin token (it sees every token's sandboxes in /metrics) */
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
	/* /mcp: the tool a tools/call used, its sandbox and whether it failed, for the audit. */
	const char *mcp_tool;
	char mcp_sandbox[64];
	bool mcp_tool_error;
	/* A handler's own state, freed with the request. */
	void *ctx;
	void (*ctx_free)(void *ctx);
};

/* ---- the sandbox table (api.c) ---- */

void entry_free(struct sandbox_entry *e);
/* OWNER's sandbox ID with a reference (entry_unref), or NULL: another owner's sandbox is not
 * there for this caller, exactly as one that never existed. */
struct sandbox_entry *entry_get(const char *id, const uint8_t owner[32]);
void entry_unref(struct sandbox_entry *e);
/* Under the lock. */
void table_unlink(struct sandbox_entry *e);
void entry_destroy(struct sandbox_entry *e);
/* Under the lock. */
bool owner_has_token(const uint8_t owner[32]);

/* ---- what the REST handlers and the MCP tools (mcp.c) share ---- */

/* Create a sandbox for OWNER (WHO in messages: "token 'alice'") from REQ, whose strings and labels are
 * taken (REQ is still freed by the caller), under the per-owner limits. 0 and *OUT with a
 * reference for the caller; or a negative errno with ERR and the HTTP *STATUS and *CODE of a
 * refusal (429, 503), or *STATUS 0 when the library failed (its errno says the status). */
int serve_sandbox_create(const uint8_t owner[32], const char *who, struct serve_create_req *req,
			 struct sandbox_entry **out, unsigned *status, const char **code, capsule_error *err);
/* Take E out of the table and remove its sandbox; false when the reaper or another delete
 * took it first. The caller's reference stays the caller's. */
bool serve_sandbox_delete(struct sandbox_entry *e);

struct serve_exec_outcome {
	int exit_code;
	bool timed_out;
	int missing; /* ENOENT or EACCES: the command could not be run (exit_code 127 or 126) */
};
/* Run O in SB and write the exec answer's members (exit_code, timed_out, stdout, stderr and
 * their encodings and truncation) into the object W is in. A negative errno with ERR when the
 * sandbox, not the command, failed. */
struct json_writer;
int serve_exec_write(struct json_writer *w, capsule_sandbox *sb, const capsule_exec_options *o, const char *stdin_data,
		     size_t stdin_len, struct serve_exec_outcome *outcome, capsule_error *err);
/* A listing's answer object: {path, truncated, entries: [...]}, at most MAX entries; with
 * MTIME_TEXT each entry's time is "mtime", RFC 3339 text, instead of the number "mtime_ns". */
void serve_write_listing(struct json_writer *w, const char *path, const capsule_fs_entry *v, size_t n, size_t max,
			 bool mtime_text);
/* KEY: NS (nanoseconds since 1970) as RFC 3339 text with nanoseconds, for clients whose
 * numbers are doubles: past 2^53 a JavaScript number stops being exact. */
void serve_write_time_ns(struct json_writer *w, const char *key, int64_t ns);
/* DATA[0..LEN) in base64, malloc'd. */
char *serve_base64(const char *data, size_t len);

/* ---- sandboxes (api_sandboxes.c), for the routes that make one (create, fork) ---- */

void write_sandbox(struct json_writer *w, struct sandbox_entry *e);
int new_id(char out[32]);
/* Count the new sandbox E against OWNER's limits and enter it in the table (invisible, sb
 * NULL, while it starts) in one step, so that concurrent creates cannot all pass the check;
 * a refusal is a negative errno with ERR and the HTTP *STATUS and *CODE (429, 503). */
int table_enter(const uint8_t owner[32], const char *who, struct sandbox_entry *e, unsigned *status,
		const char **code, capsule_error *err);
/* E, entered by table_enter, started as SB (R 0), or failed (R < 0: out of the table then).
 * On success the caller holds one more reference. */
void table_started(struct sandbox_entry *e, capsule_sandbox *sb, int r);

/* ---- responses (api.c) ---- */

enum MHD_Result queue(struct MHD_Connection *c, struct request *rq, unsigned status, struct MHD_Response *resp,
		      const char *content_type);
enum MHD_Result respond_json(struct MHD_Connection *c, struct request *rq, unsigned status, char *text);
/* {"error": {"code": CODE, "message": MESSAGE}}, malloc'd (NULL when memory ran out): the
 * errors' one shape, in answers and in a stream's last event. */
char *serve_error_json(const char *code, const char *message);
/* The code of a stream's last 'error' event for the library's errno E: sandbox_not_running
 * when the sandbox went away under it, else internal. */
const char *serve_stream_error_code(int e);
enum MHD_Result respond_error(struct MHD_Connection *c, struct request *rq, unsigned status, const char *code,
			      const char *fmt, ...) __attribute__((format(printf, 5, 6)));
enum MHD_Result respond_capsule_error(struct MHD_Connection *c, struct request *rq, const capsule_error *err);

/* ---- handlers ---- */

void handle_sandbox_get(struct MHD_Connection *c, struct request *rq);
void handle_sandbox_list(struct MHD_Connection *c, struct request *rq);
void handle_sandbox_create(struct MHD_Connection *c, struct request *rq);
void handle_sandbox_delete(struct MHD_Connection *c, struct request *rq);
void handle_exec(struct MHD_Connection *c, struct request *rq);
void handle_files_get(struct MHD_Connection *c, struct request *rq);
void handle_files_put(struct MHD_Connection *c, struct request *rq);
void handle_files_delete(struct MHD_Connection *c, struct request *rq);
void handle_mcp_post(struct MHD_Connection *c, struct request *rq);
void handle_mcp_delete(struct MHD_Connection *c, struct request *rq);

void handle_metrics(struct MHD_Connection *c, struct request *rq);
/* api_pools.c */
void handle_pools_list(struct MHD_Connection *c, struct request *rq);
/* The server's pool NAME, or NULL. */
const struct serve_pool *serve_pool_find(const char *name);
/* api_ops.c */
void handle_sandbox_stop(struct MHD_Connection *c, struct request *rq);
void handle_sandbox_start(struct MHD_Connection *c, struct request *rq);
void handle_checkpoint(struct MHD_Connection *c, struct request *rq);
void handle_revert(struct MHD_Connection *c, struct request *rq);
void handle_fork(struct MHD_Connection *c, struct request *rq);
void handle_sandbox_pause(struct MHD_Connection *c, struct request *rq);
void handle_sandbox_resume(struct MHD_Connection *c, struct request *rq);
void handle_diff(struct MHD_Connection *c, struct request *rq);
/* Whether SB is paused now (inspect says so). */
bool sandbox_paused(capsule_sandbox *sb);
/* A folder's changes as server-sent events (api_watch.c). */
void handle_watch(struct MHD_Connection *c, struct request *rq);

/* Token-owned named saves (api_saves.c). */
void handle_sandbox_save(struct MHD_Connection *c, struct request *rq);
void handle_saves_list(struct MHD_Connection *c, struct request *rq);
void handle_save_delete(struct MHD_Connection *c, struct request *rq);
/* The host save name of OWNER's save NAME, into OUT; -EINVAL with a one-line message for a
 * NAME the API does not take. */
/* KEY: UNIX_S as an RFC 3339 UTC time. */
void write_time(struct json_writer *w, const char *key, int64_t unix_s);
#define SERVE_SAVE_PREFIX "serve-"
/* A create's 'image' may not name a token's save; its 'save' (the caller's own, which must
 * exist) becomes its image. <0 with *STATUS, *CODE and a one-line message when refused. */
int serve_create_save_check(const uint8_t owner[32], struct serve_create_req *req, unsigned *status, const char **code,
			    capsule_error *err);
int serve_save_host_name(const uint8_t owner[32], const char *name, char *out, size_t size, capsule_error *err);
/* capsule_sandbox_diff_since_json for OWNER: SINCE is "checkpoint:NAME", "save:NAME" or a bare
 * NAME (the sandbox's checkpoint first, then OWNER's save), and a save is only ever OWNER's
 * own (its host name): no other token's, nor an operator's. *LIST as the library gives it. */
int serve_diff_since(const uint8_t owner[32], capsule_sandbox *sb, const char *since, char **list, capsule_error *err);
void handle_ports_list(struct MHD_Connection *c, struct request *rq);
void handle_ports_add(struct MHD_Connection *c, struct request *rq);
void handle_ports_remove(struct MHD_Connection *c, struct request *rq);
void handle_mounts_list(struct MHD_Connection *c, struct request *rq);
void handle_mounts_add(struct MHD_Connection *c, struct request *rq);
void handle_mounts_remove(struct MHD_Connection *c, struct request *rq);
void handle_images_list(struct MHD_Connection *c, struct request *rq);
void handle_images_pull(struct MHD_Connection *c, struct request *rq);
/* /metrics's own counts: a request once it is answered, an exec of E that took MS (OUTCOME
 * "exited", "timed_out" or "error"). */
void metrics_count_request(const struct request *rq);
void metrics_count_exec(struct sandbox_entry *e, uint64_t ms, const char *outcome);
/* PUT's first call: opens the stream, or answers. */
bool begin_upload(struct MHD_Connection *c, struct request *rq);
void upload_chunk(struct request *rq, const char *data, size_t len);
/* Streaming exec (api_execs.c). */
void handle_execs_start(struct MHD_Connection *c, struct request *rq);
void handle_execs_get(struct MHD_Connection *c, struct request *rq);
void handle_execs_events(struct MHD_Connection *c, struct request *rq);
void handle_execs_stdin(struct MHD_Connection *c, struct request *rq);
void handle_execs_signal(struct MHD_Connection *c, struct request *rq);
bool begin_stdin(struct MHD_Connection *c, struct request *rq);
void stdin_chunk(struct request *rq, const char *data, size_t len);
/* End every streaming command (their processes are killed) and wait for their threads. */
void serve_execs_shutdown(void);

/* The library's options for an exec request (pointing into REQ). */
void serve_exec_options(const struct serve_exec_req *req, capsule_exec_options *o);
