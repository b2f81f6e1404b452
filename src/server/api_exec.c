/* The exec route of capsule serve: a command's status and its output, as text or base64. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <microhttpd.h>

#include "api_internal.h"
#include "json.h"
#include "serve.h"
#include "util.h"

char *serve_base64(const char *data, size_t len)
{
	static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	char *out = malloc((len + 2) / 3 * 4 + 1), *p = out;
	if (!out)
		return NULL;
	const unsigned char *s = (const unsigned char *)data;
	size_t i = 0;
	for (; i + 2 < len; i += 3) {
		*p++ = tbl[s[i] >> 2];
		*p++ = tbl[((s[i] & 3) << 4) | (s[i + 1] >> 4)];
		*p++ = tbl[((s[i + 1] & 15) << 2) | (s[i + 2] >> 6)];
		*p++ = tbl[s[i + 2] & 63];
	}
	if (i < len) {
		*p++ = tbl[s[i] >> 2];
		if (i + 1 < len) {
			*p++ = tbl[((s[i] & 3) << 4) | (s[i + 1] >> 4)];
			*p++ = tbl[(s[i + 1] & 15) << 2];
		} else {
			*p++ = tbl[(s[i] & 3) << 4];
			*p++ = '=';
		}
		*p++ = '=';
	}
	*p = '\0';
	return out;
}

/* Output as text when it is UTF-8 (the usual case, and what an agent reads), else base64. */
static void write_output(struct json_writer *w, const char *name, const char *buf, size_t len)
{
	bool truncated = len > serve_state.opts.exec_output_max;
	if (truncated)
		len = serve_state.opts.exec_output_max;
	char key[32];
	snprintf(key, sizeof(key), "%s_encoding", name);
	/* A cut may split a character: the text test looks at what is sent. */
	if (serve_utf8_valid(buf ? buf : "", len)) {
		_cleanup_free_ char *text = strndup(buf ? buf : "", len);
		json_kv_string(w, name, text ? text : "");
		json_kv_string(w, key, "utf-8");
	} else {
		_cleanup_free_ char *b = serve_base64(buf, len);
		json_kv_string(w, name, b ? b : "");
		json_kv_string(w, key, "base64");
	}
	snprintf(key, sizeof(key), "%s_truncated", name);
	json_kv_bool(w, key, truncated);
}

int serve_exec_write(struct json_writer *w, capsule_sandbox *sb, const capsule_exec_options *o, const char *stdin_data,
		     size_t stdin_len, struct serve_exec_outcome *outcome, capsule_error *err)
{
	capsule_exec_result res;
	int r = capsule_exec(&res, sb, o, stdin_data, stdin_len, serve_state.opts.exec_output_max + 1, err);
	memset(outcome, 0, sizeof(*outcome));
	if (r == -ENOENT || r == -EACCES) {
		/* The command, not the sandbox, is missing: answered as a shell would (docker too). */
		outcome->missing = -r;
		outcome->exit_code = r == -ENOENT ? 127 : 126;
		json_kv_int(w, "exit_code", outcome->exit_code);
		json_kv_bool(w, "timed_out", false);
		json_kv_string(w, "stdout", "");
		json_kv_string(w, "stdout_encoding", "utf-8");
		json_kv_bool(w, "stdout_truncated", false);
		char line[600];
		snprintf(line, sizeof(line), "%s\n", err->message);
		write_output(w, "stderr", line, strlen(line));
		return 0;
	}
	if (r < 0)
		return r;
	outcome->exit_code = res.status.exit_code;
	outcome->timed_out = res.status.timed_out;
	json_kv_int(w, "exit_code", res.status.exit_code);
	json_kv_bool(w, "timed_out", res.status.timed_out);
	write_output(w, "stdout", res.stdout_buf, res.stdout_len);
	write_output(w, "stderr", res.stderr_buf, res.stderr_len);
	capsule_exec_result_free(&res);
	return 0;
}

void serve_exec_options(const struct serve_exec_req *req, capsule_exec_options *o)
{
	*o = (capsule_exec_options)CAPSULE_EXEC_OPTIONS_INIT;
	o->argv = (const char *const *)req->argv;
	o->shell = req->shell;
	o->env = (const char *const *)req->env;
	o->cwd = req->cwd;
	o->user = req->user;
	o->timeout_ms = req->timeout_ms;
}

void handle_exec(struct MHD_Connection *c, struct request *rq)
{
	struct serve_exec_req req;
	capsule_error err = { 0 };
	if (serve_decode_exec(rq->body ? rq->body : "", rq->body_len, &req, &err) < 0) {
		respond_error(c, rq, 400, "invalid_request", "%s", err.message);
		return;
	}
	capsule_exec_options o;
	serve_exec_options(&req, &o);
	/* diff: what the command changed, as capsule exec --diff: the sandbox's diff before and
	 * after, compared. The first one also refuses, before anything runs, a sandbox that has
	 * no diff (a vm). */
	_cleanup_free_ char *before = NULL, *after = NULL, *changes = NULL;
	if (req.diff && capsule_sandbox_diff_json(rq->e->sb, &before, &err) < 0) {
		serve_exec_req_free(&req);
		respond_capsule_error(c, rq, &err);
		return;
	}
	struct json_writer w;
	json_init(&w, false);
	json_object_begin(&w);
	struct serve_exec_outcome outcome;
	uint64_t t0 = now_ms();
	int r = serve_exec_write(&w, rq->e->sb, &o, req.stdin_data, req.stdin_len, &outcome, &err);
	serve_exec_req_free(&req);
	metrics_count_exec(rq->e, now_ms() - t0, r < 0 ? "error" : outcome.timed_out ? "timed_out" : "exited");
	if (r == 0 && before && (r = capsule_sandbox_diff_json(rq->e->sb, &after, &err)) == 0)
		r = capsule_diff_json_since(before, after, &changes, &err);
	if (r < 0) {
		json_free(&w);
		respond_capsule_error(c, rq, &err);
		return;
	}
	if (changes) {
		json_key(&w, "diff");
		json_raw(&w, changes);
	}
	json_object_end(&w);
	respond_json(c, rq, 200, json_steal(&w, NULL));
}
