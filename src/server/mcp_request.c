/* MCP messages and tool arguments, decoded into plain structs with no I/O, so that all of it
 * can be fuzzed (tests/fuzz/fuzz_mcp.c): anyone who can write to `capsule mcp`'s stdin, or who
 * holds a token of capsule serve, chooses these bytes. Shapes and bounds only: what a sandbox
 * id or a path means is for mcp.c and the library. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "mcp.h"
#include "util.h"

const char *const mcp_tool_names[MCP_TOOLS] = {
	[MCP_TOOL_CREATE_SANDBOX] = "create_sandbox", [MCP_TOOL_RUN_COMMAND] = "run_command",
	[MCP_TOOL_WRITE_FILE] = "write_file",         [MCP_TOOL_READ_FILE] = "read_file",
	[MCP_TOOL_LIST_FILES] = "list_files",         [MCP_TOOL_DESTROY_SANDBOX] = "destroy_sandbox",
	[MCP_TOOL_RUN_CODE] = "run_code",             [MCP_TOOL_DIFF_SANDBOX] = "diff_sandbox",
	[MCP_TOOL_PAUSE_SANDBOX] = "pause_sandbox",   [MCP_TOOL_RESUME_SANDBOX] = "resume_sandbox",
};

/* Newest first: what initialize answers when the client asks for one we do not speak. */
static const char *const versions[] = { MCP_PROTOCOL_VERSION, "2025-03-26", "2024-11-05" };

bool mcp_version_supported(const char *version)
{
	for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++)
		if (!strcmp(version, versions[i]))
			return true;
	return false;
}

const char *mcp_negotiate_version(const char *requested)
{
	for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++)
		if (requested && !strcmp(requested, versions[i]))
			return versions[i];
	return versions[0];
}

void mcp_printable(char *text)
{
	for (char *p = text; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
}

static int printable(capsule_error *err, int r)
{
	if (err)
		mcp_printable(err->message);
	return r;
}

static bool raw_is(const char *text, size_t len, const char *literal)
{
	return len == strlen(literal) && !memcmp(text, literal, len);
}

/* ---- the JSON-RPC envelope ------------------------------------------------------------- */

struct message_walk {
	struct mcp_message *m;
	capsule_error *err;
	unsigned seen;
	bool has_result;
	int failed;              /* the first member's error, kept while the rest are read */
};

static const char *const message_fields[] = { "jsonrpc", "id", "method", "params", "result", "error" };

/* An id is a string or an integer (JSON-RPC: numbers SHOULD NOT have fractions; MCP: never
 * null), echoed back as it came. */
static int read_id(struct mcp_message *m, const char *v, size_t len, capsule_error *err)
{
	if (len > 0 && v[0] == '"') {
		if (json_string_value(v, len, &m->id_str) < 0)
			return cap_err_plain(err, EINVAL, "'id' must be a string without NUL characters, or an integer");
		m->has_id = m->id_is_string = true;
		return 0;
	}
	char buf[24];
	size_t i = len > 0 && v[0] == '-';
	if (len == i || len >= sizeof(buf) - 1 || len - i > 18)
		return cap_err_plain(err, EINVAL, "'id' must be a string or an integer of at most 18 digits");
	for (size_t j = i; j < len; j++)
		if (v[j] < '0' || v[j] > '9')
			return cap_err_plain(err, EINVAL, "'id' must be a string or an integer of at most 18 digits");
	memcpy(buf, v, len);
	buf[len] = '\0';
	m->id_num = strtoll(buf, NULL, 10);
	m->has_id = true;
	return 0;
}

static int check_member(struct message_walk *w, const char *name, const char *value, size_t len)
{
	struct mcp_message *m = w->m;
	size_t n = sizeof(message_fields) / sizeof(message_fields[0]), idx = n;
	for (size_t i = 0; i < n; i++)
		if (!strcmp(name, message_fields[i]))
			idx = i;
	if (idx == n)
		return cap_err_plain(w->err, EINVAL, "unknown member '%.64s' in a JSON-RPC message", name);
	if (w->seen & (1u << idx))
		return cap_err_plain(w->err, EINVAL, "member '%s' given twice", name);
	w->seen |= 1u << idx;
	switch (idx) {
	case 0:
		if (!raw_is(value, len, "\"2.0\""))
			return cap_err_plain(w->err, EINVAL, "'jsonrpc' must be \"2.0\"");
		return 0;
	case 1:
		return read_id(m, value, len, w->err);
	case 2:
		if (len == 0 || value[0] != '"' || json_string_value(value, len, &m->method) < 0)
			return cap_err_plain(w->err, EINVAL, "'method' must be a string");
		return 0;
	case 3:
		/* MCP's params are always an object (by-name); by-position has no meaning here. */
		if (len == 0 || value[0] != '{')
			return cap_err_plain(w->err, EINVAL, "'params' must be an object");
		m->params = value;
		m->params_len = len;
		return 0;
	default:
		w->has_result = true;
		return 0;
	}
}

/* The walk goes on past a bad member, so that the id is read wherever it is and the error
 * answer can name it; the first failure is the one reported. */
static int message_member(const char *name, const char *value, size_t len, void *payload)
{
	struct message_walk *w = payload;
	if (w->failed) {
		capsule_error *keep = w->err, scratch = { 0 };
		w->err = &scratch;
		int r = check_member(w, name, value, len);
		w->err = keep;
		return r == -ENOMEM ? r : 0;
	}
	int r = check_member(w, name, value, len);
	if (r == -ENOMEM)
		return r;
	if (r < 0)
		w->failed = r;
	return 0;
}

static int no_element(const char *name, const char *value, size_t len, void *payload)
{
	return 0;
}

/* Whether TEXT is JSON at all, when it is not an object: a parse error or an invalid request. */
static bool valid_json(const char *text, size_t len)
{
	char *wrapped = malloc(len + 2);
	if (!wrapped)
		return false;
	wrapped[0] = '[';
	memcpy(wrapped + 1, text, len);
	wrapped[len + 1] = ']';
	bool ok = json_array_each(wrapped, len + 2, 1, no_element, NULL) == 0;
	free(wrapped);
	return ok;
}

int mcp_decode_message(const char *text, size_t len, struct mcp_message *out, int *rpc_code, capsule_error *err)
{
	memset(out, 0, sizeof(*out));
	*rpc_code = JSONRPC_INVALID_REQUEST;
	size_t i = 0;
	while (i < len && (text[i] == ' ' || text[i] == '\t' || text[i] == '\r' || text[i] == '\n'))
		i++;
	if (i == len || text[i] != '{') {
		if (i < len && text[i] == '[' && json_array_each(text, len, SIZE_MAX, no_element, NULL) == 0)
			return printable(err, cap_err_plain(err, EINVAL, "JSON-RPC batches are not part of MCP " MCP_PROTOCOL_VERSION
								 ": send one message at a time"));
		if (i < len && text[i] != '[' && valid_json(text, len))
			return printable(err, cap_err_plain(err, EINVAL, "a JSON-RPC message must be a JSON object"));
		*rpc_code = JSONRPC_PARSE_ERROR;
		return printable(err, cap_err_plain(err, EINVAL, "the message is not valid JSON"));
	}
	if (err) {
		err->code = 0;
		err->message[0] = '\0';
	}
	struct message_walk w = { .m = out, .err = err };
	/* The walk's own failure outranks a member's: a member refused before the walk met text
	 * that is not JSON leaves its message in ERR, and the answer is still a parse error. */
	int r = json_object_each(text, len, 16, message_member, &w);
	if (r == -E2BIG)
		r = cap_err_plain(err, EINVAL, "a JSON-RPC message has at most 6 members");
	else if (r == -ENOMEM)
		*rpc_code = JSONRPC_INTERNAL_ERROR, r = cap_err(err, ENOMEM, "decoding a message");
	else if (r < 0)
		*rpc_code = JSONRPC_PARSE_ERROR, r = cap_err_plain(err, EINVAL, "the message is not valid JSON");
	else if (w.failed)
		r = w.failed;
	if (r == 0 && !(w.seen & 1))
		r = cap_err_plain(err, EINVAL, "'jsonrpc' must be \"2.0\"");
	if (r == 0) {
		if (out->method && !w.has_result)
			out->kind = out->has_id ? MCP_REQUEST : MCP_NOTIFICATION;
		else if (!out->method && w.has_result && (w.seen & 2) && !(w.seen & 8))
			out->kind = MCP_RESPONSE;
		else
			r = cap_err_plain(err, EINVAL, "a message is a request (method, id), a notification (method) or a "
						      "response (id, result or error)");
	}
	if (r < 0) {
		/* Keep the id: the error answer names it when it was read. */
		free(out->method);
		out->method = NULL;
		out->params = NULL;
		out->params_len = 0;
		return printable(err, r);
	}
	*rpc_code = 0;
	return 0;
}

void mcp_message_free(struct mcp_message *m)
{
	free(m->id_str);
	free(m->method);
	memset(m, 0, sizeof(*m));
}

/* ---- base64 ---------------------------------------------------------------------------- */

static int b64_value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

int mcp_base64_decode(const char *text, size_t len, char **out, size_t *out_len)
{
	/* Padding, when there is any, only completes the last group. */
	size_t pad = 0;
	while (pad < 2 && len > 0 && text[len - 1] == '=')
		len--, pad++;
	if (pad && (len + pad) % 4)
		return -EINVAL;
	if (len % 4 == 1)
		return -EINVAL;
	char *buf = malloc(len / 4 * 3 + 3);
	if (!buf)
		return -ENOMEM;
	size_t n = 0;
	uint32_t acc = 0;
	unsigned bits = 0;
	for (size_t i = 0; i < len; i++) {
		int v = b64_value(text[i]);
		if (v < 0) {
			free(buf);
			return -EINVAL;
		}
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			buf[n++] = (char)(acc >> bits);
			acc &= (1u << bits) - 1;
		}
	}
	*out = buf;
	*out_len = n;
	return 0;
}

/* ---- tools/call ------------------------------------------------------------------------ */

enum arg {
	ARG_SANDBOX_ID,
	ARG_COMMAND,
	ARG_CWD,
	ARG_TIMEOUT,
	ARG_PATH,
	ARG_CONTENT,
	ARG_CONTENT_BASE64,
	ARG_LANGUAGE,
	ARG_CODE,
	ARG_IMAGE,
	ARG_SINCE,
	ARGS
};

static const char *const arg_names[ARGS] = { "sandbox_id", "command", "cwd", "timeout", "path",
					     "content", "content_base64", "language", "code", "image", "since" };

#define A(x) (1u << (x))
/* What each tool takes, and of that what it needs. create_sandbox is the REST create's body. */
static const unsigned tool_args[MCP_TOOLS] = {
	[MCP_TOOL_RUN_COMMAND] = A(ARG_SANDBOX_ID) | A(ARG_COMMAND) | A(ARG_CWD) | A(ARG_TIMEOUT),
	[MCP_TOOL_WRITE_FILE] = A(ARG_SANDBOX_ID) | A(ARG_PATH) | A(ARG_CONTENT) | A(ARG_CONTENT_BASE64),
	[MCP_TOOL_READ_FILE] = A(ARG_SANDBOX_ID) | A(ARG_PATH),
	[MCP_TOOL_LIST_FILES] = A(ARG_SANDBOX_ID) | A(ARG_PATH),
	[MCP_TOOL_DESTROY_SANDBOX] = A(ARG_SANDBOX_ID),
	[MCP_TOOL_RUN_CODE] = A(ARG_LANGUAGE) | A(ARG_CODE) | A(ARG_SANDBOX_ID) | A(ARG_TIMEOUT) | A(ARG_IMAGE),
	[MCP_TOOL_DIFF_SANDBOX] = A(ARG_SANDBOX_ID) | A(ARG_SINCE),
	[MCP_TOOL_PAUSE_SANDBOX] = A(ARG_SANDBOX_ID),
	[MCP_TOOL_RESUME_SANDBOX] = A(ARG_SANDBOX_ID),
};
static const unsigned tool_required[MCP_TOOLS] = {
	[MCP_TOOL_RUN_COMMAND] = A(ARG_SANDBOX_ID) | A(ARG_COMMAND),
	[MCP_TOOL_WRITE_FILE] = A(ARG_SANDBOX_ID) | A(ARG_PATH),
	[MCP_TOOL_READ_FILE] = A(ARG_SANDBOX_ID) | A(ARG_PATH),
	[MCP_TOOL_LIST_FILES] = A(ARG_SANDBOX_ID),
	[MCP_TOOL_DESTROY_SANDBOX] = A(ARG_SANDBOX_ID),
	[MCP_TOOL_RUN_CODE] = A(ARG_LANGUAGE) | A(ARG_CODE),
	[MCP_TOOL_DIFF_SANDBOX] = A(ARG_SANDBOX_ID),
	[MCP_TOOL_PAUSE_SANDBOX] = A(ARG_SANDBOX_ID),
	[MCP_TOOL_RESUME_SANDBOX] = A(ARG_SANDBOX_ID),
};

struct args_walk {
	struct mcp_call *c;
	capsule_error *err;
	unsigned seen;
};

static int path_arg(const char *field, const char *value, size_t len, char **out, capsule_error *err)
{
	int r = serve_field_string(field, value, len, out, err);
	if (r < 0)
		return r;
	if ((*out)[0] != '/')
		return cap_err_plain(err, EINVAL, "argument '%s' must be an absolute path", field);
	return 0;
}

static int args_member(const char *name, const char *value, size_t len, void *payload)
{
	struct args_walk *w = payload;
	struct mcp_call *c = w->c;
	capsule_error *err = w->err;
	int idx = -1;
	for (int i = 0; i < ARGS; i++)
		if ((tool_args[c->tool] & A(i)) && !strcmp(name, arg_names[i]))
			idx = i;
	if (idx < 0)
		return cap_err_plain(err, EINVAL, "takes no argument '%.64s'", name);
	if (w->seen & A(idx))
		return cap_err_plain(err, EINVAL, "argument '%s' given twice", name);
	if (raw_is(value, len, "null"))
		return 0; /* null is "not given", as in the REST API */
	w->seen |= A(idx);
	int r;
	switch ((enum arg)idx) {
	case ARG_SANDBOX_ID:
		if ((r = serve_field_string(name, value, len, &c->sandbox_id, err)) < 0)
			return r;
		if (!c->sandbox_id[0] || strlen(c->sandbox_id) > MCP_SANDBOX_ID_MAX)
			return cap_err_plain(err, EINVAL, "argument 'sandbox_id' must be 1 to %d characters", MCP_SANDBOX_ID_MAX);
		return 0;
	case ARG_COMMAND:
		if ((r = serve_field_string(name, value, len, &c->command, err)) < 0)
			return r;
		if (!c->command[0])
			return cap_err_plain(err, EINVAL, "argument 'command' must not be empty");
		return 0;
	case ARG_CWD:
		return path_arg(name, value, len, &c->cwd, err);
	case ARG_TIMEOUT:
		return serve_field_seconds(name, value, len, &c->timeout_ms, err);
	case ARG_PATH:
		return path_arg(name, value, len, &c->path, err);
	case ARG_CONTENT:
		if ((r = serve_field_string(name, value, len, &c->content, err)) < 0)
			return cap_err_plain(err, EINVAL, "argument 'content' must be text without NUL characters "
							  "(binary data goes in 'content_base64')");
		c->content_len = strlen(c->content);
		return 0;
	case ARG_CONTENT_BASE64: {
		_cleanup_free_ char *b64 = NULL;
		if ((r = serve_field_string(name, value, len, &b64, err)) < 0)
			return r;
		r = mcp_base64_decode(b64, strlen(b64), &c->content, &c->content_len);
		if (r == -ENOMEM)
			return cap_err(err, ENOMEM, "argument 'content_base64'");
		if (r < 0)
			return cap_err_plain(err, EINVAL, "argument 'content_base64' is not base64 (RFC 4648, no line breaks)");
		return 0;
	}
	case ARG_LANGUAGE: {
		_cleanup_free_ char *lang = NULL;
		if ((r = serve_field_string(name, value, len, &lang, err)) < 0)
			return r;
		if (!strcmp(lang, "python"))
			c->language = MCP_LANG_PYTHON;
		else if (!strcmp(lang, "bash"))
			c->language = MCP_LANG_BASH;
		else if (!strcmp(lang, "node"))
			c->language = MCP_LANG_NODE;
		else
			return cap_err_plain(err, EINVAL, "argument 'language': '%.64s' is not 'python', 'bash' or 'node'", lang);
		return 0;
	}
	case ARG_CODE:
		return serve_field_string(name, value, len, &c->code, err);
	case ARG_IMAGE:
		return serve_field_string(name, value, len, &c->image, err);
	case ARG_SINCE:
		if ((r = serve_field_string(name, value, len, &c->since, err)) < 0)
			return r;
		if (!c->since[0])
			return cap_err_plain(err, EINVAL, "argument 'since' must not be empty");
		return 0;
	case ARGS:
		break;
	}
	return cap_err_plain(err, EINVAL, "takes no argument '%.64s'", name);
}

static int decode_args(const char *args, size_t len, struct mcp_call *c, capsule_error *err)
{
	if (c->tool == MCP_TOOL_CREATE_SANDBOX)
		return serve_decode_create(args, len, &c->create, err);
	struct args_walk w = { .c = c, .err = err };
	int r = json_object_each(args, len, 16, args_member, &w);
	if (r == -E2BIG)
		return cap_err_plain(err, EINVAL, "takes at most %d arguments", 16);
	if (r < 0)
		return r;
	unsigned missing = tool_required[c->tool] & ~w.seen;
	for (int i = 0; i < ARGS; i++)
		if (missing & A(i))
			return cap_err_plain(err, EINVAL, "needs the argument '%s'", arg_names[i]);
	if (c->tool == MCP_TOOL_WRITE_FILE && !(w.seen & A(ARG_CONTENT)) == !(w.seen & A(ARG_CONTENT_BASE64)))
		return cap_err_plain(err, EINVAL, "needs one of 'content' (text) or 'content_base64', not both");
	if (c->tool == MCP_TOOL_RUN_CODE && c->image && c->sandbox_id)
		return cap_err_plain(err, EINVAL, "'image' is for a new sandbox: give it or 'sandbox_id', not both");
	return 0;
}

struct call_walk {
	struct mcp_call *c;
	capsule_error *err;
	int *rpc_code;
	const char *args;
	size_t args_len;
	unsigned seen;
	bool named;
};

static int call_member(const char *name, const char *value, size_t len, void *payload)
{
	struct call_walk *w = payload;
	unsigned bit;
	if (!strcmp(name, "name"))
		bit = 1;
	else if (!strcmp(name, "arguments"))
		bit = 2;
	else if (!strcmp(name, "_meta"))
		bit = 4; /* progress tokens and such: this server sends no progress */
	else
		return cap_err_plain(w->err, EINVAL, "tools/call takes no parameter '%.64s'", name);
	if (w->seen & bit)
		return cap_err_plain(w->err, EINVAL, "parameter '%s' given twice", name);
	w->seen |= bit;
	if (bit == 1) {
		_cleanup_free_ char *tool = NULL;
		if (len == 0 || value[0] != '"' || json_string_value(value, len, &tool) < 0)
			return cap_err_plain(w->err, EINVAL, "parameter 'name' must be a string");
		for (int i = 0; i < MCP_TOOLS; i++)
			if (!strcmp(tool, mcp_tool_names[i])) {
				w->c->tool = (enum mcp_tool)i;
				w->named = true;
				return 0;
			}
		return cap_err_plain(w->err, EINVAL, "unknown tool '%.64s' (see tools/list)", tool);
	}
	if (bit == 2) {
		if (raw_is(value, len, "null"))
			return 0;
		if (len == 0 || value[0] != '{')
			return cap_err_plain(w->err, EINVAL, "parameter 'arguments' must be an object");
		w->args = value;
		w->args_len = len;
		return 0;
	}
	if (len == 0 || (value[0] != '{' && !raw_is(value, len, "null")))
		return cap_err_plain(w->err, EINVAL, "parameter '_meta' must be an object");
	return 0;
}

int mcp_decode_call(const char *params, size_t len, struct mcp_call *out, int *rpc_code, capsule_error *err)
{
	memset(out, 0, sizeof(*out));
	out->create.isolation = -1;
	*rpc_code = JSONRPC_INVALID_PARAMS;
	if (err) {
		err->code = 0;
		err->message[0] = '\0';
	}
	struct call_walk w = { .c = out, .err = err, .rpc_code = rpc_code };
	int r = params ? json_object_each(params, len, 8, call_member, &w) : 0;
	if (r == -E2BIG)
		r = cap_err_plain(err, EINVAL, "tools/call has too many parameters");
	else if (r == -ENOMEM)
		*rpc_code = JSONRPC_INTERNAL_ERROR, r = cap_err(err, ENOMEM, "decoding tools/call");
	else if (r < 0 && (!err || !err->code))
		r = cap_err_plain(err, EINVAL, "tools/call's params are not a JSON object");
	if (r == 0 && !w.named)
		r = cap_err_plain(err, EINVAL, "tools/call needs the parameter 'name'");
	if (r == 0) {
		/* From here the tool is known: what is wrong is its arguments, a tool error. */
		*rpc_code = 0;
		r = decode_args(w.args ? w.args : "{}", w.args ? w.args_len : 2, out, err);
		if (r == -ENOMEM)
			*rpc_code = JSONRPC_INTERNAL_ERROR;
	}
	if (r < 0) {
		enum mcp_tool tool = out->tool;
		mcp_call_free(out);
		out->tool = tool;
		return printable(err, r);
	}
	return 0;
}

void mcp_call_free(struct mcp_call *c)
{
	serve_create_req_free(&c->create);
	free(c->sandbox_id);
	free(c->command);
	free(c->cwd);
	free(c->path);
	free(c->content);
	free(c->code);
	free(c->image);
	free(c->since);
	memset(c, 0, sizeof(*c));
	c->create.isolation = -1;
}
