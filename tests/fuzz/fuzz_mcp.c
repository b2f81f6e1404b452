/* libFuzzer target: what `capsule mcp` and /mcp of capsule serve decode before any sandbox is
 * touched (src/server/mcp_request.c): a JSON-RPC message, a tools/call's params with each
 * tool's arguments (create_sandbox's through the REST create decoder), and base64. Anyone who
 * writes to the stdio server's stdin, or holds a token, chooses these bytes.
 *
 * Byte 0 picks the decoder (message, tools/call params, base64); the rest is its input,
 * unterminated and of exactly its size. Beyond "no crash, no overread, no leak", each result
 * keeps the decoder's promises: a failure says why in one printable line and leaves only the id;
 * a success holds only what the bounds in mcp.h and serve.h allow.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mcp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#include "fuzz_serve_check.h"

static bool inside(const char *p, size_t n, const char *text, size_t len)
{
	return p >= text && n <= len && p + n <= text + len;
}

static void fuzz_message(const char *text, size_t len)
{
	struct mcp_message m;
	int code;
	capsule_error err = { 0 };
	int r = mcp_decode_message(text, len, &m, &code, &err);
	CHECK(!m.id_is_string || (m.has_id && m.id_str));
	if (r < 0) {
		check_error(r, &err);
		CHECK(code == JSONRPC_PARSE_ERROR || code == JSONRPC_INVALID_REQUEST || code == JSONRPC_INTERNAL_ERROR);
		CHECK(!m.method && !m.params);
		mcp_message_free(&m);
		return;
	}
	CHECK(code == 0);
	if (m.kind == MCP_REQUEST)
		CHECK(m.method && m.has_id);
	else if (m.kind == MCP_NOTIFICATION)
		CHECK(m.method && !m.has_id);
	else
		CHECK(m.kind == MCP_RESPONSE && !m.method && m.has_id);
	if (m.params) {
		CHECK(inside(m.params, m.params_len, text, len) && m.params[0] == '{');
		/* What a tools/call would do with them. */
		struct mcp_call c;
		int rc;
		if (mcp_decode_call(m.params, m.params_len, &c, &rc, &err) == 0)
			mcp_call_free(&c);
	}
	mcp_message_free(&m);
}

static void fuzz_call(const char *text, size_t len)
{
	struct mcp_call c;
	int code;
	capsule_error err = { 0 };
	int r = mcp_decode_call(text, len, &c, &code, &err);
	CHECK(c.tool >= 0 && c.tool < MCP_TOOLS);
	if (r < 0) {
		check_error(r, &err);
		CHECK(code == 0 || code == JSONRPC_INVALID_PARAMS || code == JSONRPC_INTERNAL_ERROR);
		CHECK(!c.sandbox_id && !c.command && !c.path && !c.content && !c.code && !c.image && !c.cwd && !c.since);
		CHECK(!c.create.image && !c.create.env && !c.create.n_labels);
		return;
	}
	CHECK(code == 0);
	CHECK(!c.sandbox_id || (c.sandbox_id[0] && strlen(c.sandbox_id) <= MCP_SANDBOX_ID_MAX));
	CHECK(!c.path || c.path[0] == '/');
	CHECK(!c.cwd || c.cwd[0] == '/');
	CHECK(!c.command || c.command[0]);
	CHECK(c.timeout_ms <= SERVE_TIMEOUT_MAX_S * 1000u);
	switch (c.tool) {
	case MCP_TOOL_RUN_COMMAND:
		CHECK(c.sandbox_id && c.command);
		break;
	case MCP_TOOL_WRITE_FILE:
		CHECK(c.sandbox_id && c.path && c.content);
		break;
	case MCP_TOOL_READ_FILE:
		CHECK(c.sandbox_id && c.path);
		break;
	case MCP_TOOL_LIST_FILES:
	case MCP_TOOL_DESTROY_SANDBOX:
	case MCP_TOOL_PAUSE_SANDBOX:
	case MCP_TOOL_RESUME_SANDBOX:
		CHECK(c.sandbox_id);
		break;
	case MCP_TOOL_DIFF_SANDBOX:
		CHECK(c.sandbox_id && (!c.since || c.since[0]));
		break;
	case MCP_TOOL_RUN_CODE:
		CHECK(c.code && !(c.image && c.sandbox_id));
		CHECK(c.language == MCP_LANG_PYTHON || c.language == MCP_LANG_BASH || c.language == MCP_LANG_NODE);
		break;
	case MCP_TOOL_CREATE_SANDBOX:
		CHECK(!c.sandbox_id);
		CHECK(c.create.n_labels <= SERVE_LABELS_MAX && c.create.n_env <= SERVE_ENV_MAX);
		break;
	case MCP_TOOLS:
		CHECK(false);
	}
	mcp_call_free(&c);
}

static void fuzz_base64(const char *text, size_t len)
{
	char *out;
	size_t n;
	int r = mcp_base64_decode(text, len, &out, &n);
	if (r < 0) {
		CHECK(r == -EINVAL || r == -ENOMEM);
		return;
	}
	/* Every 4 characters are 3 bytes; a last group of 2 or 3 is 1 or 2 bytes. */
	size_t in = len;
	while (in > 0 && text[in - 1] == '=')
		in--;
	CHECK(in % 4 != 1);
	CHECK(n == in / 4 * 3 + (in % 4 ? in % 4 - 1 : 0));
	free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	const char *text = (const char *)data + 1;
	size_t len = size - 1;
	switch (data[0] % 3) {
	case 0:
		fuzz_message(text, len);
		break;
	case 1:
		fuzz_call(text, len);
		break;
	case 2:
		fuzz_base64(text, len);
		break;
	}
	return 0;
}
