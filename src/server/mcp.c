/* The MCP methods and tools, for both transports (mcp_stdio.c, api_mcp.c). A tool is the REST
 * API's code with another envelope: the same sandbox table (so the same owners, limits and
 * lifetimes), the same exec answer, the same listing. A tool that fails answers a result with
 * isError and the reason, which the model reads; only a request the protocol cannot take (an
 * unknown method or tool, params of the wrong shape) is a JSON-RPC error. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_internal.h"
#include "json.h"
#include "mcp.h"
#include "util.h"

/* The tools as tools/list gives them: JSON Schema for what each takes and answers. Each answer
 * is in structuredContent, and also as JSON text in content for clients that read only that. */
/* What run_command and run_code answer (the REST exec's answer). */
#define EXEC_SCHEMA                                                                                              \
	"{\"type\":\"object\",\"required\":[\"exit_code\",\"timed_out\",\"stdout\",\"stderr\"],\"properties\":{"         \
	"\"exit_code\":{\"type\":\"integer\",\"description\":\"128+N when killed by signal N; 127: not found\"},"      \
	"\"timed_out\":{\"type\":\"boolean\"},\"stdout\":{\"type\":\"string\"},"                                      \
	"\"stdout_encoding\":{\"type\":\"string\",\"enum\":[\"utf-8\",\"base64\"]},\"stdout_truncated\":{\"type\":\"boolean\"}," \
	"\"stderr\":{\"type\":\"string\"},\"stderr_encoding\":{\"type\":\"string\",\"enum\":[\"utf-8\",\"base64\"]},"      \
	"\"stderr_truncated\":{\"type\":\"boolean\"}}}"

/* What pause_sandbox and resume_sandbox answer. */
#define PAUSE_SCHEMA                                                                                             \
	"{\"type\":\"object\",\"required\":[\"sandbox_id\",\"paused\"],\"properties\":{"                           \
	"\"sandbox_id\":{\"type\":\"string\"},\"paused\":{\"type\":\"boolean\"}}}"

static const char tools_list_result[] =
	"{\"tools\":["
	"{\"name\":\"create_sandbox\",\"title\":\"Create a sandbox\","
	"\"description\":\"Start a new isolated sandbox and return its sandbox_id, which the other tools take. Without "
	"arguments it runs the host's own programs (image 'host': the host's /usr read-only, a fresh /etc), no network, "
	"with the server's default memory limit and lifetime. It is removed at the end of its timeout, by "
	"destroy_sandbox, or when this MCP server stops.\","
	"\"inputSchema\":{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{"
	"\"image\":{\"type\":\"string\",\"description\":\"An OCI image reference (pulled when missing, e.g. "
	"'python:3.12-slim'), a saved sandbox, or 'host' (the default).\"},"
	"\"isolation\":{\"type\":\"string\",\"enum\":[\"container\",\"vm\"],\"description\":\"'container' (the default) "
	"or 'vm' (a KVM virtual machine with its own kernel).\"},"
	"\"memory\":{\"type\":[\"string\",\"integer\"],\"description\":\"The memory limit: '512M', '2G', or bytes.\"},"
	"\"cpus\":{\"type\":[\"string\",\"number\"],\"description\":\"CPUs it may use, e.g. 1.5.\"},"
	"\"network\":{\"type\":\"string\",\"enum\":[\"none\",\"mounts-only\",\"full\"],\"description\":\"'none' (the "
	"default) or 'full' (outbound access, where the server allows it).\"},"
	"\"env\":{\"type\":\"object\",\"additionalProperties\":{\"type\":\"string\"},\"description\":\"Environment "
	"variables of every command.\"},"
	"\"labels\":{\"type\":\"object\",\"additionalProperties\":{\"type\":\"string\"}},"
	"\"timeout\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":86400,\"description\":\"Seconds of life; the "
	"sandbox is removed after.\"},"
	"\"pool\":{\"type\":\"string\",\"description\":\"Take a ready sandbox from this warm pool of the server's "
	"(capsule serve --pool; GET /v1/pools lists them): it starts at once, with the pool's image, isolation, memory "
	"and network, so none of those may be given with it.\"},"
	"\"save\":{\"type\":\"string\",\"description\":\"Start from this named save of your token's (POST "
	"/v1/sandboxes/{id}/save made it); not with image or pool.\"}}},"
	"\"outputSchema\":{\"type\":\"object\",\"required\":[\"sandbox_id\"],\"properties\":{"
	"\"sandbox_id\":{\"type\":\"string\"},\"image\":{\"type\":\"string\"},\"isolation\":{\"type\":\"string\"},"
	"\"memory\":{\"type\":\"integer\"},\"network\":{\"type\":\"string\"},\"timeout\":{\"type\":\"integer\"}}}},"

	"{\"name\":\"run_command\",\"title\":\"Run a shell command\","
	"\"description\":\"Run a command line with sh -c in a sandbox and wait for it: its exit code, stdout and stderr "
	"(text, or base64 when not UTF-8, as the *_encoding fields say; each cut at the server's output limit). A "
	"command still running at its timeout is killed with its process group and the result is an error.\","
	"\"inputSchema\":{\"type\":\"object\",\"additionalProperties\":false,\"required\":[\"sandbox_id\",\"command\"],"
	"\"properties\":{\"sandbox_id\":{\"type\":\"string\"},"
	"\"command\":{\"type\":\"string\",\"description\":\"A shell command line, e.g. 'ls -l /tmp && cat /etc/os-release'.\"},"
	"\"cwd\":{\"type\":\"string\",\"description\":\"An absolute folder to run it in.\"},"
	"\"timeout\":{\"type\":\"number\",\"exclusiveMinimum\":0,\"maximum\":86400,\"default\":30,\"description\":"
	"\"Seconds before it is killed (default 30).\"}}},"
	"\"outputSchema\":" EXEC_SCHEMA "},"

	"{\"name\":\"write_file\",\"title\":\"Write a file\","
	"\"description\":\"Write a whole file in a sandbox, making missing folders. Give 'content' for text or "
	"'content_base64' for binary data. The file appears whole or not at all.\","
	"\"inputSchema\":{\"type\":\"object\",\"additionalProperties\":false,\"required\":[\"sandbox_id\",\"path\"],"
	"\"properties\":{\"sandbox_id\":{\"type\":\"string\"},"
	"\"path\":{\"type\":\"string\",\"description\":\"An absolute path inside the sandbox.\"},"
	"\"content\":{\"type\":\"string\"},\"content_base64\":{\"type\":\"string\",\"contentEncoding\":\"base64\"}}},"
	"\"outputSchema\":{\"type\":\"object\",\"required\":[\"path\",\"size\"],\"properties\":{"
	"\"path\":{\"type\":\"string\"},\"size\":{\"type\":\"integer\"}}}},"

	"{\"name\":\"read_file\",\"title\":\"Read a file\","
	"\"description\":\"Read a whole file from a sandbox: 'content' when it is UTF-8 text, else 'content_base64'. "
	"Files larger than the server's output limit (1 MiB by default) are refused.\","
	"\"inputSchema\":{\"type\":\"object\",\"additionalProperties\":false,\"required\":[\"sandbox_id\",\"path\"],"
	"\"properties\":{\"sandbox_id\":{\"type\":\"string\"},\"path\":{\"type\":\"string\"}}},"
	"\"outputSchema\":{\"type\":\"object\",\"required\":[\"path\",\"size\"],\"properties\":{"
	"\"path\":{\"type\":\"string\"},\"size\":{\"type\":\"integer\"},\"content\":{\"type\":\"string\"},"
	"\"content_base64\":{\"type\":\"string\"}}},"
	"\"annotations\":{\"readOnlyHint\":true}},"

	"{\"name\":\"list_files\",\"title\":\"List a folder\","
	"\"description\":\"The entries of a folder in a sandbox (default '/'), sorted by name, at most 1000.\","
	"\"inputSchema\":{\"type\":\"object\",\"additionalProperties\":false,\"required\":[\"sandbox_id\"],"
	"\"properties\":{\"sandbox_id\":{\"type\":\"string\"},\"path\":{\"type\":\"string\",\"default\":\"/\"}}},"
	"\"outputSchema\":{\"type\":\"object\",\"required\":[\"path\",\"truncated\",\"entries\"],\"properties\":{"
	"\"path\":{\"type\":\"string\"},\"truncated\":{\"type\":\"boolean\"},"
	"\"entries\":{\"type\":\"array\",\"items\":{\"type\":\"object\",\"required\":[\"name\",\"type\",\"size\"],"
	"\"properties\":{\"name\":{\"type\":\"string\"},\"type\":{\"type\":\"string\",\"enum\":[\"file\",\"dir\","
	"\"symlink\",\"other\"]},\"size\":{\"type\":\"integer\"},\"mode\":{\"type\":\"integer\"},"
	"\"mtime\":{\"type\":\"string\",\"format\":\"date-time\"},\"uid\":{\"type\":\"integer\"},\"gid\":{\"type\":\"integer\"},"
	"\"link_target\":{\"type\":\"string\"}}}}}},"
	"\"annotations\":{\"readOnlyHint\":true}},"

	"{\"name\":\"destroy_sandbox\",\"title\":\"Remove a sandbox\","
	"\"description\":\"Kill everything running in a sandbox and remove it with its files.\","
	"\"inputSchema\":{\"type\":\"object\",\"additionalProperties\":false,\"required\":[\"sandbox_id\"],"
	"\"properties\":{\"sandbox_id\":{\"type\":\"string\"}}},"
	"\"outputSchema\":{\"type\":\"object\",\"required\":[\"sandbox_id\",\"destroyed\"],\"properties\":{"
	"\"sandbox_id\":{\"type\":\"string\"},\"destroyed\":{\"type\":\"boolean\"}}},"
	"\"annotations\":{\"destructiveHint\":true,\"idempotentHint\":true}},"

	"{\"name\":\"run_code\",\"title\":\"Run code\","
	"\"description\":\"Run a program given as source: python (python3), bash or node, where the sandbox's image has "
	"that interpreter. The code is given to the interpreter on its standard input. With sandbox_id it runs there; "
	"without, in a new sandbox (of 'image', default 'host') that is removed afterwards.\","
	"\"inputSchema\":{\"type\":\"object\",\"additionalProperties\":false,\"required\":[\"language\",\"code\"],"
	"\"properties\":{\"language\":{\"type\":\"string\",\"enum\":[\"python\",\"bash\",\"node\"]},"
	"\"code\":{\"type\":\"string\"},\"sandbox_id\":{\"type\":\"string\"},"
	"\"image\":{\"type\":\"string\",\"description\":\"For a new sandbox only.\"},"
	"\"timeout\":{\"type\":\"number\",\"exclusiveMinimum\":0,\"maximum\":86400,\"default\":30}}},"
	"\"outputSchema\":" EXEC_SCHEMA "},"

	"{\"name\":\"diff_sandbox\",\"title\":\"What changed in a sandbox's files\","
	"\"description\":\"The files and folders added, modified and deleted in a sandbox's filesystem since it was "
	"created (or since one of its checkpoints or of your saves), in the order of a walk of the tree: each with path, kind, type and, "
	"except for a deletion, size, mode and mtime; at most 1000 (total says how many in all). Container sandboxes "
	"only.\","
	"\"inputSchema\":{\"type\":\"object\",\"additionalProperties\":false,\"required\":[\"sandbox_id\"],"
	"\"properties\":{\"sandbox_id\":{\"type\":\"string\"},\"since\":{\"type\":\"string\",\"description\":"
	"\"A checkpoint of the sandbox (POST /v1/sandboxes/{id}/checkpoint) or, with none of that name, one of your "
	"saves (POST /v1/sandboxes/{id}/save) taken from it or a sandbox of its image or save, or the one it started "
	"from; 'checkpoint:NAME' or 'save:NAME' says which: only what changed after it.\"}}},"
	"\"outputSchema\":{\"type\":\"object\",\"required\":[\"sandbox_id\",\"changes\",\"truncated\",\"total\"],"
	"\"properties\":{\"sandbox_id\":{\"type\":\"string\"},\"truncated\":{\"type\":\"boolean\"},\"total\":{"
	"\"type\":\"integer\",\"description\":\"changes in all; at most 1000 are answered\"},\"changes\":{\"type\":\"array\",\"items\":{\"type\":\"object\","
	"\"required\":[\"path\",\"kind\",\"type\"],\"properties\":{\"path\":{\"type\":\"string\"},\"kind\":{"
	"\"type\":\"string\",\"enum\":[\"added\",\"modified\",\"deleted\"]},\"type\":{\"type\":\"string\",\"enum\":"
	"[\"file\",\"dir\",\"symlink\",\"other\"]},\"size\":{\"type\":\"integer\"},\"mode\":{\"type\":\"string\"},"
	"\"mtime\":{\"type\":\"string\",\"format\":\"date-time\"},\"link_target\":{\"type\":\"string\"}}}}}},"
	"\"annotations\":{\"readOnlyHint\":true}},"

	"{\"name\":\"pause_sandbox\",\"title\":\"Pause a sandbox\","
	"\"description\":\"Hold every process of a sandbox still, in memory, until resume_sandbox. Meanwhile commands and "
	"file tools on it fail (it is paused); its files and memory are kept. Pausing a paused sandbox is fine.\","
	"\"inputSchema\":{\"type\":\"object\",\"additionalProperties\":false,\"required\":[\"sandbox_id\"],"
	"\"properties\":{\"sandbox_id\":{\"type\":\"string\"}}},"
	"\"outputSchema\":" PAUSE_SCHEMA ","
	"\"annotations\":{\"idempotentHint\":true}},"

	"{\"name\":\"resume_sandbox\",\"title\":\"Resume a sandbox\","
	"\"description\":\"Let a paused sandbox run again; a running one is left as it is.\","
	"\"inputSchema\":{\"type\":\"object\",\"additionalProperties\":false,\"required\":[\"sandbox_id\"],"
	"\"properties\":{\"sandbox_id\":{\"type\":\"string\"}}},"
	"\"outputSchema\":" PAUSE_SCHEMA ","
	"\"annotations\":{\"idempotentHint\":true}}"
	"]}";

static void write_id(struct json_writer *w, const struct mcp_message *m)
{
	json_key(w, "id");
	if (!m || !m->has_id)
		json_null(w);
	else if (m->id_is_string)
		json_string(w, m->id_str);
	else
		json_int(w, m->id_num);
}

/* RESULT is one JSON value. */
static char *reply_result(const struct mcp_message *m, const char *result)
{
	struct json_writer w;
	json_init(&w, false);
	json_object_begin(&w);
	json_kv_string(&w, "jsonrpc", "2.0");
	write_id(&w, m);
	json_key(&w, "result");
	json_raw(&w, result);
	json_object_end(&w);
	return json_steal(&w, NULL);
}

char *mcp_error_reply(const struct mcp_message *m, int code, const char *message)
{
	struct json_writer w;
	json_init(&w, false);
	json_object_begin(&w);
	json_kv_string(&w, "jsonrpc", "2.0");
	write_id(&w, m);
	json_key(&w, "error");
	json_object_begin(&w);
	json_kv_int(&w, "code", code);
	json_kv_string(&w, "message", message);
	json_object_end(&w);
	json_object_end(&w);
	return json_steal(&w, NULL);
}

/* ---- tool results ------------------------------------------------------------------------ */

/* A tool's answer: TEXT for the model; STRUCTURED, when given, the same as JSON. */
static char *tool_result(struct mcp_session *s, const struct mcp_message *m, const char *text, const char *structured, bool is_error)
{
	struct json_writer w;
	json_init(&w, false);
	json_object_begin(&w);
	json_key(&w, "content");
	json_array_begin(&w);
	json_object_begin(&w);
	json_kv_string(&w, "type", "text");
	json_kv_string(&w, "text", text);
	json_object_end(&w);
	json_array_end(&w);
	if (structured) {
		json_key(&w, "structuredContent");
		json_raw(&w, structured);
	}
	json_kv_bool(&w, "isError", is_error);
	json_object_end(&w);
	s->call.error = is_error;
	_cleanup_free_ char *result = json_steal(&w, NULL);
	return result ? reply_result(m, result) : NULL;
}

static char *tool_error(struct mcp_session *s, const struct mcp_message *m, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static char *tool_error(struct mcp_session *s, const struct mcp_message *m, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return tool_result(s, m, msg, NULL, true);
}

/* W holds the structured answer (an object); it is sent as both forms. */
static char *tool_ok(struct mcp_session *s, const struct mcp_message *m, struct json_writer *w)
{
	_cleanup_free_ char *sc = json_steal(w, NULL);
	return sc ? tool_result(s, m, sc, sc, false) : NULL;
}

/* ---- the tools --------------------------------------------------------------------------- */

static struct sandbox_entry *sandbox_of(struct mcp_session *s, const char *id)
{
	return entry_get(id, s->owner);
}

#define NO_SANDBOX "no sandbox '%s' (create_sandbox makes one; a sandbox is removed at its timeout)"

static char *tool_create(struct mcp_session *s, const struct mcp_message *m, struct mcp_call *c)
{
	struct sandbox_entry *e;
	unsigned status;
	const char *code;
	capsule_error err = { 0 };
	if (serve_sandbox_create(s->owner, s->owner_name, &c->create, &e, &status, &code, &err) < 0)
		return tool_error(s, m, "create_sandbox: %s", err.message);
	struct json_writer w;
	json_init(&w, false);
	json_object_begin(&w);
	json_kv_string(&w, "sandbox_id", e->id);
	json_kv_string(&w, "image", e->image ? e->image : "host");
	json_kv_string(&w, "isolation", e->isolation == CAPSULE_ISOLATION_VM ? "vm" : "container");
	json_kv_uint(&w, "memory", e->memory_bytes);
	json_kv_string(&w, "network", e->network ? e->network : "none");
	json_kv_uint(&w, "timeout", e->timeout_s);
	json_object_end(&w);
	snprintf(s->call.sandbox, sizeof(s->call.sandbox), "%s", e->id);
	entry_unref(e);
	return tool_ok(s, m, &w);
}

static const char *const interpreters[][3] = {
	[MCP_LANG_PYTHON] = { "python3", "-", NULL },
	[MCP_LANG_BASH] = { "bash", "-s", NULL },
	[MCP_LANG_NODE] = { "node", "-", NULL },
};

/* run_command and run_code: an exec whose answer is the REST exec's; past its timeout, or when
 * the interpreter is missing, it is an error that still carries what the command wrote. */
static char *tool_exec(struct mcp_session *s, const struct mcp_message *m, struct sandbox_entry *e, struct mcp_call *c)
{
	capsule_exec_options o = CAPSULE_EXEC_OPTIONS_INIT;
	uint32_t timeout_ms = c->timeout_ms ? c->timeout_ms : MCP_EXEC_TIMEOUT_DEFAULT_MS;
	o.timeout_ms = timeout_ms;
	const char *stdin_data = NULL;
	size_t stdin_len = 0;
	if (c->tool == MCP_TOOL_RUN_CODE) {
		o.argv = interpreters[c->language];
		stdin_data = c->code;
		stdin_len = strlen(c->code);
	} else {
		o.shell = c->command;
		o.cwd = c->cwd;
	}
	struct json_writer w;
	json_init(&w, false);
	json_object_begin(&w);
	struct serve_exec_outcome out;
	capsule_error err = { 0 };
	if (serve_exec_write(&w, e->sb, &o, stdin_data, stdin_len, &out, &err) < 0) {
		json_free(&w);
		return tool_error(s, m, "%s: %s", mcp_tool_names[c->tool], err.message);
	}
	json_object_end(&w);
	if (c->tool == MCP_TOOL_RUN_CODE && out.missing) {
		json_free(&w);
		return tool_error(s, m, "run_code: this sandbox has no '%s' to run %s code (%s); choose an image that has it",
				  o.argv[0], c->language == MCP_LANG_PYTHON ? "python" : o.argv[0], err.message);
	}
	if (!out.timed_out)
		return tool_ok(s, m, &w);
	_cleanup_free_ char *sc = json_steal(&w, NULL);
	if (!sc)
		return NULL;
	char head[200];
	snprintf(head, sizeof(head), "%s: still running after its timeout of %.3g s, so it was killed; what it wrote: ",
		 mcp_tool_names[c->tool], timeout_ms / 1000.0);
	_cleanup_free_ char *text = NULL;
	if (asprintf(&text, "%s%s", head, sc) < 0)
		return NULL;
	return tool_result(s, m, text, sc, true);
}

static char *tool_run_code(struct mcp_session *s, const struct mcp_message *m, struct mcp_call *c)
{
	if (c->sandbox_id) {
		struct sandbox_entry *e = sandbox_of(s, c->sandbox_id);
		if (!e)
			return tool_error(s, m, "run_code: " NO_SANDBOX, c->sandbox_id);
		char *reply = tool_exec(s, m, e, c);
		entry_unref(e);
		return reply;
	}
	/* A sandbox for this run only: made under the same limits as any, removed after. */
	struct serve_create_req req = { .isolation = -1, .image = steal_ptr(c->image) };
	struct sandbox_entry *e;
	unsigned status;
	const char *code;
	capsule_error err = { 0 };
	int r = serve_sandbox_create(s->owner, s->owner_name, &req, &e, &status, &code, &err);
	serve_create_req_free(&req);
	if (r < 0)
		return tool_error(s, m, "run_code: making a sandbox: %s", err.message);
	char *reply = tool_exec(s, m, e, c);
	serve_sandbox_delete(e);
	entry_unref(e);
	return reply;
}

static char *tool_write(struct mcp_session *s, const struct mcp_message *m, struct sandbox_entry *e, struct mcp_call *c)
{
	capsule_error err = { 0 };
	if (capsule_fs_write(e->sb, c->path, c->content, c->content_len, 0, CAPSULE_FS_PARENTS, &err) < 0)
		return tool_error(s, m, "write_file: %s", err.message);
	struct json_writer w;
	json_init(&w, false);
	json_object_begin(&w);
	json_kv_string(&w, "path", c->path);
	json_kv_uint(&w, "size", c->content_len);
	json_object_end(&w);
	return tool_ok(s, m, &w);
}

static char *tool_read(struct mcp_session *s, const struct mcp_message *m, struct sandbox_entry *e, struct mcp_call *c)
{
	void *data;
	size_t len;
	size_t max = serve_state.opts.exec_output_max;
	capsule_error err = { 0 };
	int r = capsule_fs_read(e->sb, c->path, &data, &len, max, &err);
	if (r == -EFBIG)
		return tool_error(s, m, "read_file: '%s' is larger than the %zu bytes read_file answers; read a part with "
				     "run_command (head, tail, grep)", c->path, max);
	if (r < 0)
		return tool_error(s, m, "read_file: %s", err.message);
	struct json_writer w;
	json_init(&w, false);
	json_object_begin(&w);
	json_kv_string(&w, "path", c->path);
	json_kv_uint(&w, "size", len);
	if (serve_utf8_valid(data, len)) {
		json_kv_string(&w, "content", data);
	} else {
		_cleanup_free_ char *b = serve_base64(data, len);
		json_kv_string(&w, "content_base64", b);
		if (!b)
			w.err = -ENOMEM;
	}
	json_object_end(&w);
	free(data);
	return tool_ok(s, m, &w);
}

static char *tool_list(struct mcp_session *s, const struct mcp_message *m, struct sandbox_entry *e, struct mcp_call *c)
{
	const char *path = c->path ? c->path : "/";
	capsule_fs_entry *v;
	size_t n;
	capsule_error err = { 0 };
	if (capsule_fs_list(e->sb, path, &v, &n, &err) < 0)
		return tool_error(s, m, "list_files: %s", err.message);
	struct json_writer w;
	json_init(&w, false);
	serve_write_listing(&w, path, v, n, MCP_LIST_MAX, true);
	capsule_fs_entries_free(v, n);
	return tool_ok(s, m, &w);
}

static char *tool_destroy(struct mcp_session *s, const struct mcp_message *m, struct sandbox_entry *e, struct mcp_call *c)
{
	if (!serve_sandbox_delete(e))
		return tool_error(s, m, "destroy_sandbox: " NO_SANDBOX, c->sandbox_id);
	struct json_writer w;
	json_init(&w, false);
	json_object_begin(&w);
	json_kv_string(&w, "sandbox_id", c->sandbox_id);
	json_kv_bool(&w, "destroyed", true);
	json_object_end(&w);
	return tool_ok(s, m, &w);
}

/* A change of the library's diff as it is, but for its time, which goes as text ("mtime", as
 * list_files gives it): a model's client may read numbers as doubles. */
static int diff_member(const char *name, const char *value, size_t len, void *payload)
{
	struct json_writer *w = payload;
	_cleanup_free_ char *raw = strndup(value, len);
	if (!raw)
		return -ENOMEM;
	if (!strcmp(name, "mtime_ns")) {
		serve_write_time_ns(w, "mtime", strtoll(raw, NULL, 10));
		return 0;
	}
	json_key(w, name);
	json_raw(w, raw);
	return 0;
}

struct diff_walk {
	struct json_writer *w;
	size_t n;
};

static int diff_change(const char *name, const char *value, size_t len, void *payload)
{
	(void)name;
	struct diff_walk *d = payload;
	if (d->n++ >= MCP_LIST_MAX)
		return 0; /* counted, not answered */
	json_object_begin(d->w);
	int r = json_object_each(value, len, 16, diff_member, d->w);
	json_object_end(d->w);
	return r;
}

static char *tool_diff(struct mcp_session *s, const struct mcp_message *m, struct sandbox_entry *e, struct mcp_call *c)
{
	_cleanup_free_ char *list = NULL;
	capsule_error err = { 0 };
	int r = c->since ? serve_diff_since(s->owner, e->sb, c->since, &list, &err)
			 : capsule_sandbox_diff_json(e->sb, &list, &err);
	if (r < 0)
		return tool_error(s, m, "diff_sandbox: %s", err.message);
	struct json_writer w;
	json_init(&w, false);
	json_object_begin(&w);
	json_kv_string(&w, "sandbox_id", e->id);
	json_key(&w, "changes");
	json_array_begin(&w);
	struct diff_walk d = { .w = &w };
	if (json_array_each(list, strlen(list), 2000000, diff_change, &d) < 0) {
		json_free(&w);
		return tool_error(s, m, "diff_sandbox: malformed answer from the library");
	}
	json_array_end(&w);
	/* As list_files: a model reads the answer, so it holds at most MCP_LIST_MAX changes. */
	json_kv_bool(&w, "truncated", d.n > MCP_LIST_MAX);
	json_kv_uint(&w, "total", d.n);
	json_object_end(&w);
	return tool_ok(s, m, &w);
}

static char *tool_pause(struct mcp_session *s, const struct mcp_message *m, struct sandbox_entry *e, struct mcp_call *c)
{
	bool resume = c->tool == MCP_TOOL_RESUME_SANDBOX;
	capsule_error err = { 0 };
	if ((resume ? capsule_sandbox_resume(e->sb, &err) : capsule_sandbox_pause(e->sb, &err)) < 0)
		return tool_error(s, m, "%s: %s", mcp_tool_names[c->tool], err.message);
	struct json_writer w;
	json_init(&w, false);
	json_object_begin(&w);
	json_kv_string(&w, "sandbox_id", e->id);
	json_kv_bool(&w, "paused", sandbox_paused(e->sb));
	json_object_end(&w);
	return tool_ok(s, m, &w);
}

static char *tools_call(struct mcp_session *s, const struct mcp_message *m)
{
	struct mcp_call c;
	int rpc_code;
	capsule_error err = { 0 };
	if (mcp_decode_call(m->params, m->params_len, &c, &rpc_code, &err) < 0) {
		if (rpc_code)
			return mcp_error_reply(m, rpc_code, err.message);
		s->call.tool = mcp_tool_names[c.tool];
		return tool_error(s, m, "%s: %s", mcp_tool_names[c.tool], err.message);
	}
	s->call.tool = mcp_tool_names[c.tool];
	if (c.sandbox_id)
		snprintf(s->call.sandbox, sizeof(s->call.sandbox), "%s", c.sandbox_id);
	char *reply;
	if (c.tool == MCP_TOOL_CREATE_SANDBOX) {
		reply = tool_create(s, m, &c);
	} else if (c.tool == MCP_TOOL_RUN_CODE) {
		reply = tool_run_code(s, m, &c);
	} else {
		struct sandbox_entry *e = sandbox_of(s, c.sandbox_id);
		if (!e)
			reply = tool_error(s, m, "%s: " NO_SANDBOX, mcp_tool_names[c.tool], c.sandbox_id);
		else if (c.tool == MCP_TOOL_RUN_COMMAND)
			reply = tool_exec(s, m, e, &c);
		else if (c.tool == MCP_TOOL_WRITE_FILE)
			reply = tool_write(s, m, e, &c);
		else if (c.tool == MCP_TOOL_READ_FILE)
			reply = tool_read(s, m, e, &c);
		else if (c.tool == MCP_TOOL_LIST_FILES)
			reply = tool_list(s, m, e, &c);
		else if (c.tool == MCP_TOOL_DIFF_SANDBOX)
			reply = tool_diff(s, m, e, &c);
		else if (c.tool == MCP_TOOL_PAUSE_SANDBOX || c.tool == MCP_TOOL_RESUME_SANDBOX)
			reply = tool_pause(s, m, e, &c);
		else
			reply = tool_destroy(s, m, e, &c);
		entry_unref(e);
	}
	mcp_call_free(&c);
	return reply;
}

/* ---- the methods ------------------------------------------------------------------------- */

static char *initialize(struct mcp_session *s, const struct mcp_message *m)
{
	if (s->initialized)
		return mcp_error_reply(m, JSONRPC_INVALID_REQUEST, "this session is initialized already");
	_cleanup_free_ char *requested = NULL;
	if (!m->params || json_get_string(m->params, m->params_len, "protocolVersion", &requested) < 0)
		return mcp_error_reply(m, JSONRPC_INVALID_PARAMS, "initialize needs 'protocolVersion', a string");
	const char *version = mcp_negotiate_version(requested);
	struct json_writer w;
	json_init(&w, false);
	json_object_begin(&w);
	json_kv_string(&w, "protocolVersion", version);
	json_key(&w, "capabilities");
	json_object_begin(&w);
	json_key(&w, "tools");
	json_object_begin(&w);
	json_kv_bool(&w, "listChanged", false);
	json_object_end(&w);
	json_object_end(&w);
	json_key(&w, "serverInfo");
	json_object_begin(&w);
	json_kv_string(&w, "name", "capsule");
	json_kv_string(&w, "title", "capsule sandboxes");
	json_kv_string(&w, "version", CAPSULE_VERSION_STRING);
	json_object_end(&w);
	json_kv_string(&w, "instructions",
		       "Isolated sandboxes to run commands and code in. Call create_sandbox, then run_command, "
		       "write_file, read_file and list_files with its sandbox_id, and destroy_sandbox when done; "
		       "run_code runs a snippet, in a new sandbox when no sandbox_id is given.");
	json_object_end(&w);
	_cleanup_free_ char *result = json_steal(&w, NULL);
	if (!result)
		return NULL;
	snprintf(s->protocol, sizeof(s->protocol), "%s", version);
	s->initialized = true;
	return reply_result(m, result);
}

char *mcp_answer(struct mcp_session *s, const struct mcp_message *m)
{
	/* This server sends no requests, so a response answers nothing; and a notification
	 * (initialized, cancelled, roots changed) needs no answer from a server without state
	 * for it. Requests are answered in order, so one being cancelled has its answer. */
	memset(&s->call, 0, sizeof(s->call));
	if (m->kind != MCP_REQUEST)
		return NULL;
	if (!strcmp(m->method, "initialize"))
		return initialize(s, m);
	if (!strcmp(m->method, "ping"))
		return reply_result(m, "{}");
	if (strcmp(m->method, "tools/list") && strcmp(m->method, "tools/call")) {
		char msg[160];
		snprintf(msg, sizeof(msg), "method '%.64s' not found (this server has initialize, ping, tools/list and "
					   "tools/call)", m->method);
		mcp_printable(msg);
		return mcp_error_reply(m, JSONRPC_METHOD_NOT_FOUND, msg);
	}
	if (!s->initialized)
		return mcp_error_reply(m, JSONRPC_INVALID_REQUEST, "send 'initialize' first");
	if (!strcmp(m->method, "tools/list"))
		return reply_result(m, tools_list_result);
	return tools_call(s, m);
}
