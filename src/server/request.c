/* Request bodies of the HTTP API, decoded into plain structs with no I/O, so that all of it
 * can be fuzzed (tests/fuzz/fuzz_serve.c). What a field means is the library's business: this
 * file only checks shapes and bounds, and sizes go through the same parser as the CLI's. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "json.h"
#include "parse.h"
#include "serve.h"
#include "util.h"

/* Messages quote names and values the client chose: a control character in one must not
 * reach a log line or a terminal as itself. */
static int printable_error(capsule_error *err, int r)
{
	if (err)
		for (char *p = err->message; *p; p++)
			if ((unsigned char)*p < 0x20 || *p == 0x7f)
				*p = '?';
	return r;
}

/* A raw JSON value as json_object_each gives it. */
struct raw {
	const char *text;
	size_t len;
};

static bool raw_is_string(struct raw v)
{
	return v.len > 0 && v.text[0] == '"';
}

static bool raw_is_number(struct raw v)
{
	return v.len > 0 && (v.text[0] == '-' || (v.text[0] >= '0' && v.text[0] <= '9'));
}

static int field_string(const char *field, struct raw v, char **out, capsule_error *err)
{
	if (!raw_is_string(v))
		return cap_err_plain(err, EINVAL, "field '%s' must be a string", field);
	int r = json_string_value(v.text, v.len, out);
	if (r == -ENOMEM)
		return cap_err(err, ENOMEM, "field '%s'", field);
	if (r < 0)
		return cap_err_plain(err, EINVAL, "field '%s' must be a string without NUL characters", field);
	return 0;
}

/* A JSON number as a double; the reader has checked its syntax already. */
static int field_number(const char *field, struct raw v, double *out, capsule_error *err)
{
	char buf[64];
	if (!raw_is_number(v) || v.len >= sizeof(buf))
		return cap_err_plain(err, EINVAL, "field '%s' must be a number", field);
	memcpy(buf, v.text, v.len);
	buf[v.len] = '\0';
	char *end;
	double d = strtod(buf, &end);
	if (*end || !isfinite(d))
		return cap_err_plain(err, EINVAL, "field '%s' must be a number", field);
	*out = d;
	return 0;
}

/* Range-checked by the callers before any cast that could overflow. */
static bool is_whole(double d)
{
	return d >= -9.0e18 && d <= 9.0e18 && d == (double)(long long)d;
}

/* Seconds as a whole number in [1, SERVE_TIMEOUT_MAX_S]. */
static int field_seconds(const char *field, struct raw v, bool fraction_ok, uint32_t *ms_out, capsule_error *err)
{
	double d;
	int r = field_number(field, v, &d, err);
	if (r < 0)
		return r;
	if (!fraction_ok && !is_whole(d))
		return cap_err_plain(err, EINVAL, "field '%s' must be a whole number of seconds", field);
	if (!(d >= 0.001 && d <= SERVE_TIMEOUT_MAX_S))
		return cap_err_plain(err, EINVAL, "field '%s' must be between %s and %u seconds", field,
				     fraction_ok ? "0.001" : "1", SERVE_TIMEOUT_MAX_S);
	if (!fraction_ok && d < 1)
		return cap_err_plain(err, EINVAL, "field '%s' must be between 1 and %u seconds", field, SERVE_TIMEOUT_MAX_S);
	*ms_out = (uint32_t)(d * 1000.0 + 0.5);
	return 0;
}

static void strv_free_n(char **v, size_t n)
{
	if (!v)
		return;
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

/* ---- env: {"K": "V", ...} -> "K=V" ---------------------------------------------------- */

struct env_walk {
	char **v;
	size_t n;
	capsule_error *err;
};

static int env_member(const char *name, const char *value, size_t value_len, void *payload)
{
	struct env_walk *w = payload;
	struct raw v = { value, value_len };
	_cleanup_free_ char *val = NULL;
	int r = field_string("env", v, &val, w->err);
	if (r < 0)
		return cap_err_plain(w->err, EINVAL, "field 'env': the value of '%.64s' must be a string", name);
	if (!*name || strchr(name, '='))
		return cap_err_plain(w->err, EINVAL, "field 'env': invalid variable name '%.64s'", name);
	char *kv;
	if (asprintf(&kv, "%s=%s", name, val) < 0)
		return cap_err(w->err, ENOMEM, "field 'env'");
	if (parse_env(kv, w->err) < 0) {
		free(kv);
		return cap_err_wrap(w->err, -EINVAL, "field 'env'");
	}
	w->v[w->n++] = kv;
	return 0;
}

static int field_env(struct raw v, char ***out, size_t *count, capsule_error *err)
{
	if (v.len == 0 || v.text[0] != '{')
		return cap_err_plain(err, EINVAL, "field 'env' must be an object of strings");
	struct env_walk w = { .v = calloc(SERVE_ENV_MAX + 1, sizeof(char *)), .err = err };
	if (!w.v)
		return cap_err(err, ENOMEM, "field 'env'");
	int r = json_object_each(v.text, v.len, SERVE_ENV_MAX, env_member, &w);
	if (r == -E2BIG)
		r = cap_err_plain(err, EINVAL, "field 'env' has more than %d variables", SERVE_ENV_MAX);
	else if (r == -ENOMEM)
		r = cap_err(err, ENOMEM, "field 'env'");
	if (r < 0) {
		strv_free_n(w.v, w.n);
		return r;
	}
	*out = w.v;
	*count = w.n;
	return 0;
}

/* ---- labels ---------------------------------------------------------------------------- */

static int label_member(const char *name, const char *value, size_t value_len, void *payload)
{
	struct serve_create_req *req = ((void **)payload)[0];
	capsule_error *err = ((void **)payload)[1];
	struct raw v = { value, value_len };
	_cleanup_free_ char *val = NULL;
	if (field_string("labels", v, &val, err) < 0)
		return cap_err_plain(err, EINVAL, "field 'labels': the value of '%.64s' must be a string", name);
	int r = parse_label_check(name, val, err);
	if (r < 0)
		return cap_err_wrap(err, r, "field 'labels'");
	for (size_t i = 0; i < req->n_labels; i++)
		if (!strcmp(req->labels[i].key, name))
			return cap_err_plain(err, EINVAL, "field 'labels': '%s' given twice", name);
	char *k = strdup(name);
	if (!k)
		return cap_err(err, ENOMEM, "field 'labels'");
	req->labels[req->n_labels].key = k;
	req->labels[req->n_labels].value = steal_ptr(val);
	req->n_labels++;
	return 0;
}

int serve_parse_label_filter(const char *text, struct serve_label *out, capsule_error *err)
{
	int r = parse_label(text, false, &out->key, &out->value, err);
	return r < 0 ? printable_error(err, cap_err_wrap(err, r, "label filter")) : 0;
}

/* ---- POST /v1/sandboxes ---------------------------------------------------------------- */

struct create_walk {
	struct serve_create_req *req;
	capsule_error *err;
	unsigned seen;
};

static const char *const create_fields[] = { "image", "isolation", "memory", "cpus", "network",
					      "env", "labels", "timeout", "idle_timeout", "pool", "save" };

/* A repeated member would be last-wins in most parsers and first-wins in others: refuse it. */
static int seen_once(unsigned *seen, const char *const *fields, size_t n, const char *name, capsule_error *err)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(fields[i], name)) {
			if (*seen & (1u << i))
				return cap_err_plain(err, EINVAL, "field '%s' given twice", name);
			*seen |= 1u << i;
			return (int)i;
		}
	return cap_err_plain(err, EINVAL, "unknown field '%.64s'", name);
}

static int create_member(const char *name, const char *value, size_t value_len, void *payload)
{
	struct create_walk *w = payload;
	struct serve_create_req *req = w->req;
	capsule_error *err = w->err;
	struct raw v = { value, value_len };
	int idx = seen_once(&w->seen, create_fields, sizeof(create_fields) / sizeof(create_fields[0]), name, err);
	if (idx < 0)
		return idx;
	if (v.len == 4 && !memcmp(v.text, "null", 4))
		return 0; /* null is "not given", as the JSON reader's getters take it */
	int r;
	switch (idx) {
	case 0:
		return field_string("image", v, &req->image, err);
	case 1: {
		_cleanup_free_ char *iso = NULL;
		if ((r = field_string("isolation", v, &iso, err)) < 0)
			return r;
		if (!strcmp(iso, "container"))
			req->isolation = CAPSULE_ISOLATION_CONTAINER;
		else if (!strcmp(iso, "vm"))
			req->isolation = CAPSULE_ISOLATION_VM;
		else
			return cap_err_plain(err, EINVAL, "field 'isolation': '%.64s' is not 'container' or 'vm'", iso);
		return 0;
	}
	case 2:
		if (raw_is_string(v)) {
			_cleanup_free_ char *size = NULL;
			if ((r = field_string("memory", v, &size, err)) < 0)
				return r;
			if ((r = parse_size(size, &req->memory_bytes, err)) < 0)
				return cap_err_wrap(err, r, "field 'memory'");
		} else {
			double d;
			if ((r = field_number("memory", v, &d, err)) < 0)
				return cap_err_plain(err, EINVAL, "field 'memory' must be a size (\"512M\") or a number of bytes");
			if (!is_whole(d) || d < 1 || d > 9.0e18)
				return cap_err_plain(err, EINVAL, "field 'memory' must be a whole number of bytes");
			req->memory_bytes = (uint64_t)d;
		}
		if (req->memory_bytes == 0)
			return cap_err_plain(err, EINVAL, "field 'memory' must be more than 0");
		req->memory_set = true;
		return 0;
	case 3:
		if (raw_is_string(v))
			r = field_string("cpus", v, &req->cpus, err);
		else if (raw_is_number(v) && v.len < 32)
			r = (req->cpus = strndup(v.text, v.len)) ? 0 : cap_err(err, ENOMEM, "field 'cpus'");
		else
			r = cap_err_plain(err, EINVAL, "field 'cpus' must be a number (\"1.5\" or 1.5)");
		if (r < 0)
			return r;
		uint32_t milli;
		if ((r = parse_cpus(req->cpus, &milli, err)) < 0)
			return cap_err_wrap(err, r, "field 'cpus'");
		return 0;
	case 4:
		if ((r = field_string("network", v, &req->network, err)) < 0)
			return r;
		if (strcmp(req->network, "none") && strcmp(req->network, "mounts-only") && strcmp(req->network, "full"))
			return cap_err_plain(err, EINVAL, "field 'network': '%.64s' is not 'none', 'mounts-only' or 'full'",
					     req->network);
		return 0;
	case 5:
		return field_env(v, &req->env, &req->n_env, err);
	case 6: {
		if (v.len == 0 || v.text[0] != '{')
			return cap_err_plain(err, EINVAL, "field 'labels' must be an object of strings");
		void *p[2] = { req, err };
		r = json_object_each(v.text, v.len, SERVE_LABELS_MAX, label_member, p);
		if (r == -E2BIG)
			return cap_err_plain(err, EINVAL, "field 'labels' has more than %d labels", SERVE_LABELS_MAX);
		if (r == -ENOMEM)
			return cap_err(err, ENOMEM, "field 'labels'");
		return r;
	}
	case 7: {
		uint32_t ms;
		if ((r = field_seconds("timeout", v, false, &ms, err)) < 0)
			return r;
		req->timeout_s = ms / 1000;
		req->timeout_set = true;
		return 0;
	}
	case 8: {
		uint32_t ms;
		if ((r = field_seconds("idle_timeout", v, false, &ms, err)) < 0)
			return r;
		req->idle_timeout_s = ms / 1000;
		return 0;
	}
	case 9:
		return field_string("pool", v, &req->pool, err);
	case 10:
		return field_string("save", v, &req->save, err);
	}
	return cap_err_plain(err, EINVAL, "unknown field '%.64s'", name);
}

/* The body as a whole: an object (a JSON error names no field, so say what was expected). */
static int decode_object(const char *body, size_t len, json_member_fn fn, void *walk, capsule_error *err)
{
	size_t i = 0;
	while (i < len && (body[i] == ' ' || body[i] == '\t' || body[i] == '\r' || body[i] == '\n'))
		i++;
	if (i == len || body[i] != '{')
		return cap_err_plain(err, EINVAL, "the request body must be a JSON object");
	/* A failure the walk callbacks did not describe is the JSON reader's: cleared, to tell. */
	if (err) {
		err->code = 0;
		err->message[0] = '\0';
	}
	int r = json_object_each(body, len, 64, fn, walk);
	if (r == -E2BIG)
		return cap_err_plain(err, EINVAL, "the request body has too many fields");
	if (r == -ENOMEM)
		return cap_err(err, ENOMEM, "decoding the request body");
	if (r < 0 && (!err || !err->code))
		return cap_err_plain(err, EINVAL, "the request body is not valid JSON");
	return r;
}

int serve_decode_create(const char *body, size_t len, struct serve_create_req *out, capsule_error *err)
{
	memset(out, 0, sizeof(*out));
	out->isolation = -1;
	struct create_walk w = { .req = out, .err = err };
	int r = decode_object(body, len, create_member, &w, err);
	if (r < 0) {
		serve_create_req_free(out);
		return printable_error(err, r);
	}
	return 0;
}

void serve_create_req_free(struct serve_create_req *r)
{
	free(r->image);
	free(r->cpus);
	free(r->network);
	free(r->pool);
	free(r->save);
	strv_free_n(r->env, r->n_env);
	for (size_t i = 0; i < r->n_labels; i++) {
		free(r->labels[i].key);
		free(r->labels[i].value);
	}
	memset(r, 0, sizeof(*r));
	r->isolation = -1;
}

/* ---- POST /v1/sandboxes/{id}/exec ------------------------------------------------------ */

struct exec_walk {
	struct serve_exec_req *req;
	capsule_error *err;
	unsigned seen;
};

static const char *const exec_fields[] = { "cmd", "command", "env", "cwd", "user", "timeout", "stdin", "diff" };

struct argv_walk {
	char **v;
	size_t n;
	capsule_error *err;
};

static int argv_element(const char *name, const char *value, size_t value_len, void *payload)
{
	struct argv_walk *w = payload;
	struct raw v = { value, value_len };
	int r = field_string("cmd", v, &w->v[w->n], w->err);
	if (r < 0)
		return cap_err_plain(w->err, EINVAL, "field 'cmd' must be an array of strings");
	w->n++;
	return 0;
}

static int exec_member(const char *name, const char *value, size_t value_len, void *payload)
{
	struct exec_walk *w = payload;
	struct serve_exec_req *req = w->req;
	capsule_error *err = w->err;
	struct raw v = { value, value_len };
	int idx = seen_once(&w->seen, exec_fields, sizeof(exec_fields) / sizeof(exec_fields[0]), name, err);
	if (idx < 0)
		return idx;
	if (v.len == 4 && !memcmp(v.text, "null", 4))
		return 0;
	int r;
	switch (idx) {
	case 0: {
		if (v.len == 0 || v.text[0] != '[')
			return cap_err_plain(err, EINVAL, "field 'cmd' must be an array of strings");
		struct argv_walk a = { .v = calloc(SERVE_ARGV_MAX + 1, sizeof(char *)), .err = err };
		if (!a.v)
			return cap_err(err, ENOMEM, "field 'cmd'");
		r = json_array_each(v.text, v.len, SERVE_ARGV_MAX, argv_element, &a);
		if (r == -E2BIG)
			r = cap_err_plain(err, EINVAL, "field 'cmd' has more than %d arguments", SERVE_ARGV_MAX);
		else if (r == -ENOMEM)
			r = cap_err(err, ENOMEM, "field 'cmd'");
		else if (r == 0 && a.n == 0)
			r = cap_err_plain(err, EINVAL, "field 'cmd' must not be empty");
		else if (r == 0 && !a.v[0][0])
			r = cap_err_plain(err, EINVAL, "field 'cmd': the command name must not be empty");
		if (r < 0) {
			strv_free_n(a.v, a.n);
			return r;
		}
		req->argv = a.v;
		req->argc = a.n;
		return 0;
	}
	case 1:
		if ((r = field_string("command", v, &req->shell, err)) < 0)
			return r;
		if (!req->shell[0])
			return cap_err_plain(err, EINVAL, "field 'command' must not be empty");
		return 0;
	case 2:
		return field_env(v, &req->env, &req->n_env, err);
	case 3:
		if ((r = field_string("cwd", v, &req->cwd, err)) < 0)
			return r;
		if (req->cwd[0] != '/')
			return cap_err_plain(err, EINVAL, "field 'cwd' must be an absolute path");
		return 0;
	case 4: {
		if ((r = field_string("user", v, &req->user, err)) < 0)
			return r;
		_cleanup_free_ char *u = NULL, *g = NULL;
		if ((r = parse_user_spec(req->user, &u, &g, err)) < 0)
			return cap_err_wrap(err, r, "field 'user'");
		return 0;
	}
	case 5:
		return field_seconds("timeout", v, true, &req->timeout_ms, err);
	case 6:
		if ((r = field_string("stdin", v, &req->stdin_data, err)) < 0)
			return r;
		req->stdin_len = strlen(req->stdin_data);
		return 0;
	case 7:
		if (v.len == 4 && !memcmp(v.text, "true", 4))
			req->diff = true;
		else if (!(v.len == 5 && !memcmp(v.text, "false", 5)))
			return cap_err_plain(err, EINVAL, "field 'diff' must be true or false");
		return 0;
	}
	return cap_err_plain(err, EINVAL, "unknown field '%.64s'", name);
}

int serve_decode_exec(const char *body, size_t len, struct serve_exec_req *out, capsule_error *err)
{
	memset(out, 0, sizeof(*out));
	struct exec_walk w = { .req = out, .err = err };
	int r = decode_object(body, len, exec_member, &w, err);
	if (r == 0 && !out->argv == !out->shell)
		r = cap_err_plain(err, EINVAL, "give one of 'cmd' (an array) or 'command' (a shell string)");
	if (r < 0) {
		serve_exec_req_free(out);
		return printable_error(err, r);
	}
	return 0;
}

void serve_exec_req_free(struct serve_exec_req *r)
{
	strv_free_n(r->argv, r->argc);
	free(r->shell);
	strv_free_n(r->env, r->n_env);
	free(r->cwd);
	free(r->user);
	free(r->stdin_data);
	memset(r, 0, sizeof(*r));
}

bool serve_utf8_valid(const char *s, size_t len)
{
	for (size_t i = 0; i < len;) {
		/* ASCII without NUL, the bulk of most output, eight bytes at a time: a streamed
		 * command's output passes here whole. */
		if (len - i >= 8) {
			uint64_t w;
			memcpy(&w, s + i, 8);
			if (!(w & 0x8080808080808080ull) && !((w - 0x0101010101010101ull) & ~w & 0x8080808080808080ull)) {
				i += 8;
				continue;
			}
		}
		unsigned char b = (unsigned char)s[i];
		if (b - 1u < 0x7fu) {
			i++;
			continue;
		}
		if (b == 0)
			return false;
		size_t n = utf8_seq_len((const unsigned char *)s + i, len - i);
		if (n == 0)
			return false;
		i += n;
	}
	return true;
}

/* ---- for the MCP tools' arguments (mcp_request.c) ---- */

int serve_field_string(const char *field, const char *text, size_t len, char **out, capsule_error *err)
{
	struct raw v = { text, len };
	return printable_error(err, field_string(field, v, out, err));
}

int serve_field_seconds(const char *field, const char *text, size_t len, uint32_t *ms_out, capsule_error *err)
{
	struct raw v = { text, len };
	return printable_error(err, field_seconds(field, v, true, ms_out, err));
}

/* ---- POST /v1/sandboxes/{id}/execs/{eid}/signal --------------------------------------- */

static const struct {
	const char *name;
	int signo;
} signal_names[] = {
	{ "HUP", SIGHUP },   { "INT", SIGINT },   { "QUIT", SIGQUIT }, { "ABRT", SIGABRT }, { "KILL", SIGKILL },
	{ "USR1", SIGUSR1 }, { "USR2", SIGUSR2 }, { "PIPE", SIGPIPE }, { "ALRM", SIGALRM }, { "TERM", SIGTERM },
	{ "CONT", SIGCONT }, { "STOP", SIGSTOP }, { "TSTP", SIGTSTP }, { "WINCH", SIGWINCH },
};

struct signal_walk {
	int signo;
	unsigned seen;
	capsule_error *err;
};

static const char *const signal_fields[] = { "signal" };

static int signal_member(const char *name, const char *value, size_t value_len, void *payload)
{
	struct signal_walk *w = payload;
	struct raw v = { value, value_len };
	int idx = seen_once(&w->seen, signal_fields, 1, name, w->err);
	if (idx < 0)
		return idx;
	if (raw_is_number(v)) {
		double d;
		int r = field_number("signal", v, &d, w->err);
		if (r < 0)
			return r;
		if (!is_whole(d) || d < 1 || d > 64)
			return cap_err_plain(w->err, EINVAL, "field 'signal' must be a signal number from 1 to 64");
		w->signo = (int)d;
		return 0;
	}
	_cleanup_free_ char *s = NULL;
	int r = field_string("signal", v, &s, w->err);
	if (r == -ENOMEM)
		return r;
	if (r < 0)
		return cap_err_plain(w->err, EINVAL, "field 'signal' must be a name (\"TERM\", \"SIGKILL\") or a number");
	const char *n = strncasecmp(s, "SIG", 3) ? s : s + 3;
	for (size_t i = 0; i < sizeof(signal_names) / sizeof(signal_names[0]); i++)
		if (!strcasecmp(n, signal_names[i].name)) {
			w->signo = signal_names[i].signo;
			return 0;
		}
	return cap_err_plain(w->err, EINVAL, "field 'signal': unknown signal '%.32s'", s);
}

int serve_decode_signal(const char *body, size_t len, int *signo, capsule_error *err)
{
	struct signal_walk w = { .err = err };
	int r = decode_object(body, len, signal_member, &w, err);
	if (r == 0 && !w.signo)
		r = cap_err_plain(err, EINVAL, "field 'signal' is required");
	if (r < 0)
		return printable_error(err, r);
	*signo = w.signo;
	return 0;
}
/* ---- the small bodies of the other routes ------------------------------------------------ */

struct fields_walk {
	struct serve_field *fields;
	size_t n;
	capsule_error *err;
	unsigned seen;
};

static int fields_member(const char *name, const char *value, size_t value_len, void *payload)
{
	struct fields_walk *w = payload;
	const char *names[SERVE_FIELDS_MAX];
	for (size_t i = 0; i < w->n; i++)
		names[i] = w->fields[i].name;
	int idx = seen_once(&w->seen, names, w->n, name, w->err);
	if (idx < 0)
		return idx;
	struct raw v = { value, value_len };
	if (v.len == 4 && !memcmp(v.text, "null", 4))
		return 0;
	struct serve_field *f = &w->fields[idx];
	int r;
	switch (f->kind) {
	case SERVE_FIELD_STRING:
		if ((r = field_string(f->name, v, &f->string, w->err)) < 0)
			return r;
		if (strlen(f->string) > f->max)
			return cap_err_plain(w->err, EINVAL, "field '%s' is longer than %llu bytes", f->name,
					     (unsigned long long)f->max);
		break;
	case SERVE_FIELD_UINT: {
		double d;
		if ((r = field_number(f->name, v, &d, w->err)) < 0)
			return r;
		if (!is_whole(d) || d < (double)f->min || d > (double)f->max)
			return cap_err_plain(w->err, EINVAL, "field '%s' must be a whole number from %llu to %llu", f->name,
					     (unsigned long long)f->min, (unsigned long long)f->max);
		f->uint = (uint64_t)d;
		break;
	}
	case SERVE_FIELD_BOOL:
		if (v.len == 4 && !memcmp(v.text, "true", 4))
			f->boolean = true;
		else if (v.len == 5 && !memcmp(v.text, "false", 5))
			f->boolean = false;
		else
			return cap_err_plain(w->err, EINVAL, "field '%s' must be true or false", f->name);
		break;
	}
	f->set = true;
	return 0;
}

int serve_decode_fields(const char *body, size_t len, struct serve_field *fields, size_t n, capsule_error *err)
{
	for (size_t i = 0; i < n; i++) {
		fields[i].set = false;
		fields[i].string = NULL;
	}
	/* No body at all is an empty object: every field of these routes is optional or named
	 * as missing below. */
	size_t i = 0;
	while (i < len && (body[i] == ' ' || body[i] == '\t' || body[i] == '\r' || body[i] == '\n'))
		i++;
	struct fields_walk w = { .fields = fields, .n = n < SERVE_FIELDS_MAX ? n : SERVE_FIELDS_MAX, .err = err };
	int r = i == len ? 0 : decode_object(body, len, fields_member, &w, err);
	for (size_t k = 0; r == 0 && k < n; k++)
		if (fields[k].required && !fields[k].set)
			r = cap_err_plain(err, EINVAL, "field '%s' is required", fields[k].name);
	if (r < 0) {
		serve_fields_free(fields, n);
		return printable_error(err, r);
	}
	return 0;
}

void serve_fields_free(struct serve_field *fields, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(fields[i].string);
		fields[i].string = NULL;
	}
}
