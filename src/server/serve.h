/* capsule serve: an HTTP API over libcapsule (docs/serve.md). The server is a client of the
 * public API (capsule.h) like the CLI; these are its own parts:
 *   request.c  the JSON bodies of requests, decoded and checked with no I/O (fuzzed)
 *   tokens.c   the token store ($CAPSULE_HOME/serve/tokens) and `capsule token`
 *   api.c      the routes, the sandboxes the server owns, their lifetimes
 *   main.c     `capsule serve`: options, listeners, signals, shutdown
 */
#ifndef CAPSULE_SERVE_H
#define CAPSULE_SERVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "capsule.h"

/* ---- request bodies (request.c) ------------------------------------------------------- */

#define SERVE_JSON_BODY_MAX (1u << 20)   /* a JSON request body; larger is 413 */
#define SERVE_ENV_MAX 256                /* env entries of a create or an exec */
#define SERVE_LABELS_MAX CAPSULE_LABELS_MAX
#define SERVE_ARGV_MAX 4096
#define SERVE_TIMEOUT_MAX_S 86400        /* a sandbox's `timeout` (its lifetime), and an exec's */

struct serve_label {
	char *key, *value;
};

/* POST /v1/sandboxes. Unset fields keep the server's defaults. */
struct serve_create_req {
	char *image;
	int isolation;            /* -1: unset, else capsule_isolation */
	bool memory_set;
	uint64_t memory_bytes;
	char *cpus;               /* as capsule_config_set_cpus takes it ("1.5") */
	char *network;            /* "none", "mounts-only", "full" */
	char **env;               /* NULL-terminated "K=V" */
	size_t n_env;
	struct serve_label labels[SERVE_LABELS_MAX];
	size_t n_labels;
	bool timeout_set;
	uint32_t timeout_s;
	uint32_t idle_timeout_s;  /* 0: none */
	char *pool;               /* take a ready sandbox from this pool of the server's */
	char *save;               /* start from this save of the caller's token (its short name) */
};

/* POST /v1/sandboxes/{id}/exec. */
struct serve_exec_req {
	char **argv;              /* NULL-terminated, or NULL with shell */
	size_t argc;
	char *shell;
	char **env;               /* NULL-terminated "K=V", or NULL */
	size_t n_env;
	char *cwd;
	char *user;
	uint32_t timeout_ms;      /* 0: the server's exec limit */
	char *stdin_data;
	size_t stdin_len;
	bool diff;                /* answer what the command changed in the filesystem too */
};

/* Decode BODY[0..LEN) (not NUL-terminated). On failure ERR says, in one line, which field was
 * wrong and why (EINVAL), and OUT holds nothing to free. Unknown and repeated fields are
 * refused: a typo must not silently become a default. */
int serve_decode_create(const char *body, size_t len, struct serve_create_req *out, capsule_error *err);
void serve_create_req_free(struct serve_create_req *r);
int serve_decode_exec(const char *body, size_t len, struct serve_exec_req *out, capsule_error *err);
void serve_exec_req_free(struct serve_exec_req *r);
/* One member's raw JSON value (as json_object_each gives it) as a string, or as seconds (fractions
 * allowed, 0.001 to SERVE_TIMEOUT_MAX_S) in milliseconds; FIELD names it in the message. */
int serve_field_string(const char *field, const char *text, size_t len, char **out, capsule_error *err);
int serve_field_seconds(const char *field, const char *text, size_t len, uint32_t *ms_out, capsule_error *err);
/* POST .../signal: {"signal": "TERM"} or a number, into *SIGNO (1 to 64). */
int serve_decode_signal(const char *body, size_t len, int *signo, capsule_error *err);

/* The bodies of the routes that take a few scalars (stop, checkpoint, fork, ports, pull): a
 * JSON object (or nothing, as {}) whose members are FIELDS, each at most once, no other.
 * STRING: at most MAX bytes (malloc'd into string); UINT: whole, MIN to MAX; BOOL. */
#define SERVE_FIELDS_MAX 8
enum serve_field_kind { SERVE_FIELD_STRING, SERVE_FIELD_UINT, SERVE_FIELD_BOOL };
struct serve_field {
	const char *name;
	enum serve_field_kind kind;
	bool required;
	uint64_t min, max;
	bool set;                 /* out: given (and not null) */
	char *string;
	uint64_t uint;
	bool boolean;
};
int serve_decode_fields(const char *body, size_t len, struct serve_field *fields, size_t n, capsule_error *err);
void serve_fields_free(struct serve_field *fields, size_t n);
/* "k=v" of ?label=: the key and value as a label has them (EINVAL otherwise). */
int serve_parse_label_filter(const char *text, struct serve_label *out, capsule_error *err);
/* Whether S[0..LEN) is valid UTF-8 with no NUL (exec output goes out as text then). */
bool serve_utf8_valid(const char *s, size_t len);

/* ---- tokens (tokens.c) ---------------------------------------------------------------- */

#define SERVE_TOKENS_MAX 1024
#define SERVE_TOKEN_NAME_MAX 63

struct serve_token {
	char name[SERVE_TOKEN_NAME_MAX + 1];
	int64_t created_unix;
	uint8_t hash[32];         /* SHA-256 of the token's text */
	bool admin;               /* sees every token's sandboxes in /metrics */
	/* The token's own limits, instead of the server's --max-sandboxes and --max-memory
	 * (0: no limit); unset, the server's apply. */
	bool has_max_sandboxes, has_max_memory;
	unsigned max_sandboxes;
	uint64_t max_memory;
};

/* The token store: $CAPSULE_HOME/serve/tokens, mode 0600 in a 0700 folder, replaced whole
 * (a temporary file renamed over it) under an flock, so a reader sees the old or the new. */
int serve_tokens_load(struct serve_token **out, size_t *count, capsule_error *err);
/* A new token NAME with the role and limits of PROTO (its name, time and hash are not
 * used): *TOKEN_OUT (malloc'd) is its text, shown once; only its hash is kept. */
int serve_token_create(const char *name, const struct serve_token *proto, char **token_out, capsule_error *err);
int serve_token_remove(const char *name, capsule_error *err);
void serve_token_hash(const char *token, size_t len, uint8_t out[32]);
/* The path of the store, for the server's reload check. */
const char *serve_tokens_path(void);

/* `capsule token ...` */
int serve_token_cli(int argc, char **argv);

/* ---- the server (api.c, main.c) ------------------------------------------------------- */

/* A warm pool of the server's (--pool NAME:SIZE[:IMAGE]): made at start, removed at shutdown. */
#define SERVE_POOLS_MAX 16
struct serve_pool {
	char name[64];
	uint32_t size;
	const char *image;        /* NULL: the library's default root */
	uint64_t memory_bytes;    /* the server's --default-memory */
	bool made;                /* made by this server, so removed by it */
};

struct serve_options {
	unsigned max_sandboxes;   /* per token */
	uint64_t max_memory;      /* per token, bytes: the sum of its sandboxes' memory limits */
	uint64_t default_memory;  /* a sandbox created without `memory` */
	uint32_t default_timeout_s;
	size_t exec_output_max;   /* per stream */
	unsigned max_execs;       /* streaming commands per token (0: no limit) */
	unsigned max_watches;     /* watch streams open per token (0: no limit) */
	unsigned max_saves;       /* named saves per token (0: none) */
	uint32_t exec_grace_s;    /* a streaming command with no reader is killed after this */
	bool keep;                /* leave sandboxes running at shutdown (they are detached then) */
	/* A client may ask for network 'full': its sandbox then reaches the host's loopback
	 * (10.0.2.2), where other tokens' port forwards and the host's services listen. */
	bool network_full;
	const char *mount_root;   /* resolved; host folders below it may be mounted read-only, or NULL */
	int audit_fd;             /* -1: no audit log */
	bool single_owner;        /* capsule mcp over stdio: one client, no token store */
	struct serve_pool pools[SERVE_POOLS_MAX];
	size_t n_pools;
};

/* Every route the server answers, one "METHOD PATTERN" a line, from the table it dispatches
 * with: for `capsule serve --routes` and the test that holds docs/openapi.json to it. */
void serve_api_print_routes(FILE *out);

int serve_api_init(const struct serve_options *opts, capsule_error *err);
/* The MHD access handler and completion callback (void * to keep microhttpd.h out of here). */
void *serve_api_handler(void);
void *serve_api_completed(void);
/* Requests begun and not yet answered and completed. */
unsigned serve_api_in_flight(void);
/* Stop the lifetime reaper, then remove every sandbox the server made (unless keep), which
 * ends the requests still using them; creates are refused from then on (503). */
void serve_api_shutdown(void);
/* End every watch stream (each gets a last 'error' event, shutting_down) and refuse new ones:
 * called as shutdown begins, since a watch has no end of its own to wait for. */
void serve_watches_shutdown(void);
/* What is left once no request can come any more (the daemons are stopped). */
void serve_api_free(void);

/* Parse --pool's NAME:SIZE[:IMAGE] into *OUT (IMAGE points into TEXT). */
int serve_pool_parse(const char *text, struct serve_pool *out, capsule_error *err);
/* Make the server's pools (serve_state's copy of the options); on failure the ones made are
 * removed again and ERR says which failed. */
int serve_pools_start(capsule_error *err);
/* Remove the pools the server made (their ready sandboxes go; taken ones are the table's). */
void serve_pools_stop(void);

extern const char serve_openapi_json[];
extern const size_t serve_openapi_json_len;

#endif
