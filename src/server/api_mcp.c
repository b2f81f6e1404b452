/* MCP at /mcp of capsule serve: the streamable HTTP transport of protocol 2025-06-18. Each POST
 * carries one JSON-RPC message and is answered with application/json (no SSE: every tool
 * answers once, at its end); GET has no stream to offer (405 from the route table); DELETE ends
 * a session. The token is checked as on every route, and the sandboxes belong to the token,
 * as in the REST API: a session only carries the negotiated version.
 *
 * Sessions (Mcp-Session-Id, 128 random bits) are kept per token, at most
 * MCP_SESSIONS_PER_TOKEN; a new one past that ends the token's least recently used, so a
 * client can hold the server to a bounded table, and never end another token's sessions. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <microhttpd.h>
#include <openssl/crypto.h>

#include "api_internal.h"
#include "mcp.h"
#include "util.h"

#define MCP_SESSIONS_PER_TOKEN 64
#define SESSION_HEADER "Mcp-Session-Id"
#define VERSION_HEADER "MCP-Protocol-Version"

struct http_session {
	struct http_session *next;
	char id[33];
	uint8_t owner[32];
	char protocol[16];
	uint64_t used_ms;
};

static pthread_mutex_t sessions_lock = PTHREAD_MUTEX_INITIALIZER;
static struct http_session *sessions;

/* Under sessions_lock. */
static void session_unlink(struct http_session *s)
{
	for (struct http_session **p = &sessions; *p; p = &(*p)->next)
		if (*p == s) {
			*p = s->next;
			free(s);
			return;
		}
}

/* The caller's session ID, or NULL: another token's is not there for it. Under sessions_lock. */
static struct http_session *session_find(const char *id, const uint8_t owner[32])
{
	for (struct http_session *s = sessions; s; s = s->next)
		if (!strcmp(s->id, id) && !CRYPTO_memcmp(s->owner, owner, 32))
			return s;
	return NULL;
}

static int session_add(const struct mcp_session *ms, char id_out[33])
{
	struct http_session *n = calloc(1, sizeof(*n));
	uint8_t r[16];
	if (!n || getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r)) {
		free(n);
		return -ENOMEM;
	}
	for (size_t i = 0; i < sizeof(r); i++)
		snprintf(n->id + 2 * i, 3, "%02x", r[i]);
	memcpy(n->owner, ms->owner, 32);
	snprintf(n->protocol, sizeof(n->protocol), "%s", ms->protocol);
	n->used_ms = now_ms();
	pthread_mutex_lock(&sessions_lock);
	/* Sessions of removed tokens can be used by no one; the token's oldest makes room. */
	struct http_session *oldest = NULL;
	unsigned count = 0;
	for (struct http_session *s = sessions, *next; s; s = next) {
		next = s->next;
		pthread_mutex_lock(&serve_state.lock);
		bool orphan = !owner_has_token(s->owner);
		pthread_mutex_unlock(&serve_state.lock);
		if (orphan) {
			session_unlink(s);
			continue;
		}
		if (CRYPTO_memcmp(s->owner, n->owner, 32))
			continue;
		count++;
		if (!oldest || s->used_ms < oldest->used_ms)
			oldest = s;
	}
	if (count >= MCP_SESSIONS_PER_TOKEN)
		session_unlink(oldest);
	n->next = sessions;
	sessions = n;
	memcpy(id_out, n->id, 33);
	pthread_mutex_unlock(&sessions_lock);
	return 0;
}

void mcp_http_free(void)
{
	pthread_mutex_lock(&sessions_lock);
	while (sessions)
		session_unlink(sessions);
	pthread_mutex_unlock(&sessions_lock);
}

/* An error of the transport, as a JSON-RPC error (what an MCP client reads) with STATUS. */
static void respond_rpc_error(struct MHD_Connection *c, struct request *rq, unsigned status,
			      const struct mcp_message *m, int code, const char *message)
{
	respond_json(c, rq, status, mcp_error_reply(m, code, message));
}

static const char *header(struct MHD_Connection *c, const char *name)
{
	return MHD_lookup_connection_value(c, MHD_HEADER_KIND, name);
}

/* The session a request names, checked: on failure the answer is sent (400 without one, 404
 * for one that is not this token's, or ended: the client starts a new one). */
static bool session_get(struct MHD_Connection *c, struct request *rq, const struct mcp_message *m,
			struct mcp_session *out)
{
	const char *id = header(c, SESSION_HEADER);
	if (!id) {
		respond_rpc_error(c, rq, 400, m, JSONRPC_INVALID_REQUEST,
				  "missing the Mcp-Session-Id header (send initialize first to get one)");
		return false;
	}
	pthread_mutex_lock(&sessions_lock);
	struct http_session *s = session_find(id, rq->owner);
	if (s) {
		s->used_ms = now_ms();
		memcpy(out->owner, s->owner, 32);
		snprintf(out->protocol, sizeof(out->protocol), "%s", s->protocol);
		out->initialized = true;
	}
	pthread_mutex_unlock(&sessions_lock);
	if (!s) {
		respond_rpc_error(c, rq, 404, m, JSONRPC_INVALID_REQUEST, "no such MCP session (ended, or never made): "
									  "initialize a new one");
		return false;
	}
	snprintf(out->owner_name, sizeof(out->owner_name), "token '%s'", rq->token_name);
	return true;
}

void handle_mcp_post(struct MHD_Connection *c, struct request *rq)
{
	const char *accept = header(c, MHD_HTTP_HEADER_ACCEPT);
	if (accept && !strstr(accept, "application/json") && !strstr(accept, "*/*")) {
		respond_rpc_error(c, rq, 406, NULL, JSONRPC_INVALID_REQUEST,
				  "this server answers application/json: the Accept header must allow it");
		return;
	}
	const char *version = header(c, VERSION_HEADER);
	if (version && !mcp_version_supported(version)) {
		char msg[128];
		snprintf(msg, sizeof(msg), "unsupported MCP-Protocol-Version '%.32s' (this server speaks " MCP_PROTOCOL_VERSION
					   ", 2025-03-26, 2024-11-05)", version);
		mcp_printable(msg);
		respond_rpc_error(c, rq, 400, NULL, JSONRPC_INVALID_REQUEST, msg);
		return;
	}
	struct mcp_message m;
	int rpc_code;
	capsule_error err = { 0 };
	if (mcp_decode_message(rq->body ? rq->body : "", rq->body_len, &m, &rpc_code, &err) < 0) {
		respond_rpc_error(c, rq, 400, &m, rpc_code, err.message);
		mcp_message_free(&m);
		return;
	}
	struct mcp_session s = { 0 };
	char new_id[33] = "";
	if (m.kind == MCP_REQUEST && !strcmp(m.method, "initialize")) {
		/* A new session, made once initialize has succeeded. */
		memcpy(s.owner, rq->owner, 32);
		snprintf(s.owner_name, sizeof(s.owner_name), "token '%s'", rq->token_name);
	} else if (!session_get(c, rq, &m, &s)) {
		mcp_message_free(&m);
		return;
	}
	bool was_initialized = s.initialized;
	char *reply = mcp_answer(&s, &m);
	rq->mcp_tool = s.call.tool;
	rq->mcp_tool_error = s.call.error;
	snprintf(rq->mcp_sandbox, sizeof(rq->mcp_sandbox), "%s", s.call.sandbox);
	if (m.kind != MCP_REQUEST) {
		/* A notification or a response: accepted, nothing to answer. */
		free(reply);
		queue(c, rq, 202, MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT), NULL);
		mcp_message_free(&m);
		return;
	}
	if (!reply) {
		respond_rpc_error(c, rq, 500, &m, JSONRPC_INTERNAL_ERROR, "out of memory");
		mcp_message_free(&m);
		return;
	}
	mcp_message_free(&m);
	if (!was_initialized && s.initialized && session_add(&s, new_id) < 0) {
		free(reply);
		respond_rpc_error(c, rq, 500, NULL, JSONRPC_INTERNAL_ERROR, "out of memory");
		return;
	}
	size_t len = strlen(reply);
	struct MHD_Response *resp = MHD_create_response_from_buffer(len, reply, MHD_RESPMEM_MUST_FREE);
	if (!resp) {
		free(reply);
		respond_json(c, rq, 500, NULL);
		return;
	}
	if (new_id[0])
		MHD_add_response_header(resp, SESSION_HEADER, new_id);
	queue(c, rq, 200, resp, "application/json");
}

void handle_mcp_delete(struct MHD_Connection *c, struct request *rq)
{
	struct mcp_session s;
	if (!session_get(c, rq, NULL, &s))
		return;
	const char *id = header(c, SESSION_HEADER);
	pthread_mutex_lock(&sessions_lock);
	struct http_session *hs = session_find(id, rq->owner);
	if (hs)
		session_unlink(hs);
	pthread_mutex_unlock(&sessions_lock);
	queue(c, rq, 204, MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT), NULL);
}
