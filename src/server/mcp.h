/* The MCP server of capsule (docs/mcp.md): the Model Context Protocol, version 2025-06-18,
 * JSON-RPC 2.0 over stdio (`capsule mcp`) and at /mcp of capsule serve (streamable HTTP). Its
 * tools are a thin layer over the same sandbox table, exec and files code as the REST API.
 *   mcp_request.c  messages and tool arguments, decoded and checked with no I/O (fuzzed)
 *   mcp.c          the methods and the tools, one implementation for both transports
 *   mcp_stdio.c    `capsule mcp`: newline-delimited messages on stdin and stdout
 *   api_mcp.c      POST and DELETE /mcp on capsule serve, with Mcp-Session-Id
 */
#ifndef CAPSULE_MCP_H
#define CAPSULE_MCP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "serve.h"

#define MCP_PROTOCOL_VERSION "2025-06-18"
/* One message, either transport: the bound on a JSON body of the REST API. */
#define MCP_MESSAGE_MAX SERVE_JSON_BODY_MAX
/* run_command and run_code without `timeout`: under the 60 s an MCP client waits by default. */
#define MCP_EXEC_TIMEOUT_DEFAULT_MS 30000
/* list_files: entries an answer holds (a model reads it; the REST listing allows 65536). */
#define MCP_LIST_MAX 1000
#define MCP_SANDBOX_ID_MAX 63

/* JSON-RPC 2.0's error codes. */
enum {
	JSONRPC_PARSE_ERROR = -32700,
	JSONRPC_INVALID_REQUEST = -32600,
	JSONRPC_METHOD_NOT_FOUND = -32601,
	JSONRPC_INVALID_PARAMS = -32602,
	JSONRPC_INTERNAL_ERROR = -32603,
};

enum mcp_kind { MCP_REQUEST, MCP_NOTIFICATION, MCP_RESPONSE };

struct mcp_message {
	enum mcp_kind kind;
	/* The id, when one could be read (also from a message refused, so its error names it). */
	bool has_id, id_is_string;
	int64_t id_num;
	char *id_str;
	char *method;
	const char *params;       /* the raw JSON object inside the text, or NULL */
	size_t params_len;
};

/* Decode the message TEXT[0..LEN) (not NUL-terminated). On failure *RPC_CODE is the JSON-RPC
 * error to answer (parse error, invalid request), ERR says why in one printable line, and OUT
 * keeps only the id, if it was read, for that answer: free it with mcp_message_free. */
int mcp_decode_message(const char *text, size_t len, struct mcp_message *out, int *rpc_code, capsule_error *err);
void mcp_message_free(struct mcp_message *m);

/* The protocol version initialize answers for REQUESTED: the same when this server speaks it,
 * else its own latest, as the lifecycle's negotiation says. */
const char *mcp_negotiate_version(const char *requested);
bool mcp_version_supported(const char *version);

enum mcp_tool {
	MCP_TOOL_CREATE_SANDBOX,
	MCP_TOOL_RUN_COMMAND,
	MCP_TOOL_WRITE_FILE,
	MCP_TOOL_READ_FILE,
	MCP_TOOL_LIST_FILES,
	MCP_TOOL_DESTROY_SANDBOX,
	MCP_TOOL_RUN_CODE,
	MCP_TOOL_DIFF_SANDBOX,
	MCP_TOOL_PAUSE_SANDBOX,
	MCP_TOOL_RESUME_SANDBOX,
	MCP_TOOLS
};
extern const char *const mcp_tool_names[MCP_TOOLS];

enum mcp_language { MCP_LANG_PYTHON, MCP_LANG_BASH, MCP_LANG_NODE };

/* The arguments of a tools/call, checked: which are given depends on the tool. */
struct mcp_call {
	enum mcp_tool tool;
	struct serve_create_req create; /* create_sandbox's arguments are the REST create's fields */
	char *sandbox_id;
	char *command, *cwd;
	char *path;
	char *content;                  /* write_file: the bytes, from content or content_base64 */
	size_t content_len;
	enum mcp_language language;
	char *code, *image;             /* run_code */
	char *since;                    /* diff_sandbox: a checkpoint of the sandbox */
	uint32_t timeout_ms;            /* 0: MCP_EXEC_TIMEOUT_DEFAULT_MS */
};

/* Decode tools/call's params PARAMS[0..LEN). A failure with *RPC_CODE set (the params' shape,
 * an unknown tool) is a JSON-RPC error; with *RPC_CODE 0 the tool is known (OUT->tool) and its
 * arguments are wrong: a tool error, which the model reads and can correct. ERR says which
 * argument and why, in one printable line. OUT holds nothing to free after a failure. */
int mcp_decode_call(const char *params, size_t len, struct mcp_call *out, int *rpc_code, capsule_error *err);
void mcp_call_free(struct mcp_call *c);

/* Messages quote names the client chose: each control character of TEXT becomes '?', so that
 * none reaches a log or a terminal as itself. */
void mcp_printable(char *text);

/* RFC 4648 base64 (padding optional, no whitespace) into a malloc'd buffer: -EINVAL for a
 * character outside the alphabet or a length no encoding has. */
int mcp_base64_decode(const char *text, size_t len, char **out, size_t *out_len);

/* ---- the methods (mcp.c) ---- */

/* One client: the stdio server's only one, or an HTTP session (sandboxes belong to the token,
 * not to the session, as in the REST API). */
struct mcp_session {
	uint8_t owner[32];
	char owner_name[SERVE_TOKEN_NAME_MAX + 16]; /* in messages: "token 'alice'" */
	char protocol[16];
	bool initialized;
	/* What the last message did, for capsule serve's audit line: the tool it called (NULL
	 * when it was no tools/call, or named no tool), its sandbox, whether it failed. */
	struct {
		const char *tool;
		char sandbox[MCP_SANDBOX_ID_MAX + 1];
		bool error;
	} call;
};

/* The answer to M, a message decoded without error: malloc'd JSON text with no newline, or
 * NULL when none is due (a notification, a response). */
char *mcp_answer(struct mcp_session *s, const struct mcp_message *m);
/* A JSON-RPC error answer with M's id (null when M is NULL or had none). */
char *mcp_error_reply(const struct mcp_message *m, int code, const char *message);

/* `capsule mcp` (mcp_stdio.c): serve stdin and stdout until stdin ends or a signal; 0, or 125
 * when it could not start. */
int mcp_stdio_serve(const struct serve_options *o);
/* The HTTP sessions (api_mcp.c), once no request can come any more. */
void mcp_http_free(void);

#endif
