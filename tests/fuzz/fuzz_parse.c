/* libFuzzer target: the command-line value parsers (parse.h) and the JSON reader (json.h).
 *
 * Byte 0 picks the function (byte % N_TARGETS); the rest is its input. The parsers take a C
 * string, so the rest is cut at its first NUL and copied into a buffer of exactly that size;
 * the JSON reader takes (text, len), so it gets the rest unterminated, again of exactly its
 * size. Besides "no crash, no overread, no leak", each call's documented promises are checked:
 * a failure fills ERR with one printable line and returns -ERR.code; a success yields outputs
 * that satisfy what parse.h says about them (normalized targets, ports in range, canonical
 * IPs, ...). normalize_abs_path is compared with a separate reference implementation, and the
 * JSON reader must read back exactly what the JSON writer wrote.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#include "fuzz_check.h"

enum target {
	T_SIZE,
	T_CPUS,
	T_DURATION,
	T_UINT,
	T_NAME,
	T_MOUNT,
	T_TMPFS,
	T_USER,
	T_PORT,
	T_NORMALIZE,
	T_ENV,
	T_JSON_GET,
	T_JSON_ROUND_TRIP,
	T_JSON_WALK,
	N_TARGETS
};

/* The error contract: negative return, ERR.code its errno, one printable non-empty line. */
static void check_error(int r, const capsule_error *err)
{
	CHECK(r < 0);
	CHECK(err->code == -r);
	size_t n = strnlen(err->message, sizeof(err->message));
	CHECK(n > 0 && n < sizeof(err->message));
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)err->message[i];
		CHECK(c >= 0x20 && c != 0x7f);
	}
}

static bool is_name_char(char c, bool first)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
		return true;
	return !first && (c == '_' || c == '.' || c == '-');
}

/* [a-zA-Z0-9][a-zA-Z0-9_.-]{0,62} */
static bool valid_name(const char *s)
{
	size_t n = strlen(s);
	if (n < 1 || n > 63)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!is_name_char(s[i], i == 0))
			return false;
	return true;
}

/* The reference normalizer: split into components, drop "" and ".", pop on "..". */
static void reference_normalize(const char *in, char *out)
{
	size_t o = 0;
	size_t stack[CAP_PATH_MAX / 2 + 2]; /* where each kept component starts in OUT */
	size_t depth = 0;
	const char *p = in;
	while (*p) {
		while (*p == '/')
			p++;
		const char *start = p;
		while (*p && *p != '/')
			p++;
		size_t len = (size_t)(p - start);
		if (len == 0 || (len == 1 && start[0] == '.'))
			continue;
		if (len == 2 && start[0] == '.' && start[1] == '.') {
			if (depth)
				o = stack[--depth];
			continue;
		}
		stack[depth++] = o;
		out[o++] = '/';
		memcpy(out + o, start, len);
		o += len;
	}
	if (o == 0)
		out[o++] = '/';
	out[o] = '\0';
}

/* What a normalized absolute path looks like: "/" or "/a/b" with no empty, "." or ".."
 * component. */
static void check_normalized(const char *p)
{
	CHECK(p[0] == '/');
	if (p[1] == '\0')
		return;
	const char *c = p;
	while (*c) {
		CHECK(*c == '/');
		c++;
		const char *start = c;
		while (*c && *c != '/')
			c++;
		size_t len = (size_t)(c - start);
		CHECK(len > 0);
		CHECK(!(len == 1 && start[0] == '.'));
		CHECK(!(len == 2 && start[0] == '.' && start[1] == '.'));
	}
}

/* A -v / --tmpfs target: normalized, not "/", and a fixed point of normalize_abs_path. */
static void check_target(const char *t)
{
	CHECK(t != NULL);
	check_normalized(t);
	CHECK(strcmp(t, "/") != 0);
	size_t n = strlen(t);
	char *again = malloc(n + 1);
	CHECK(again != NULL);
	CHECK(normalize_abs_path(t, again, n + 1, NULL) == 0);
	CHECK(strcmp(again, t) == 0);
	free(again);
}

/* Strict UTF-8: no overlongs, no surrogates, nothing above U+10FFFF. */
static bool valid_utf8(const unsigned char *s, size_t n)
{
	size_t i = 0;
	while (i < n) {
		unsigned char c = s[i];
		size_t len;
		uint32_t cp;
		if (c < 0x80) {
			i++;
			continue;
		} else if (c >= 0xc2 && c <= 0xdf) {
			len = 2;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			len = 3;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			len = 4;
			cp = c & 0x07;
		} else {
			return false;
		}
		if (n - i < len)
			return false;
		for (size_t k = 1; k < len; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += len;
	}
	return true;
}

static void fuzz_user(const char *s)
{
	capsule_error err = { 0 };
	char *user = (char *)1, *group = (char *)1;
	int r = parse_user_spec(s, &user, &group, &err);
	if (r < 0) {
		check_error(r, &err);
		CHECK(user == NULL && group == NULL);
		return;
	}
	CHECK(user != NULL && user[0] != '\0' && user[0] != '-');
	CHECK(!strchr(user, ':') && !strchr(user, '/') && !strchr(user, ' '));
	if (group) {
		CHECK(group[0] != '\0' && group[0] != '-');
		CHECK(!strchr(group, ':') && !strchr(group, '/') && !strchr(group, ' '));
	}
	for (const char *c = user; *c; c++)
		CHECK((unsigned char)*c >= 0x20 && *c != 0x7f);
	for (const char *c = group; c && *c; c++)
		CHECK((unsigned char)*c >= 0x20 && *c != 0x7f);
	free(user);
	free(group);
}

static void fuzz_port(const char *s)
{
	capsule_error err = { 0 };
	struct port_spec p;
	int r = parse_port_spec(s, &p, &err);
	if (r < 0) {
		check_error(r, &err);
		return;
	}
	CHECK(p.host_port >= 1 && p.guest_port >= 1);
	CHECK(strnlen(p.host_ip, sizeof(p.host_ip)) < sizeof(p.host_ip));
	/* A real address, in its canonical text form. */
	unsigned char addr[sizeof(struct in6_addr)];
	int af = strchr(p.host_ip, ':') ? AF_INET6 : AF_INET;
	CHECK(inet_pton(af, p.host_ip, addr) == 1);
	char canon[INET6_ADDRSTRLEN];
	CHECK(inet_ntop(af, addr, canon, sizeof(canon)) != NULL);
	CHECK(strcmp(canon, p.host_ip) == 0);
}

static void fuzz_normalize(const char *s)
{
	size_t n = strlen(s);
	char *out = malloc(n + 1);
	CHECK(out != NULL);
	capsule_error err = { 0 };
	int r = normalize_abs_path(s, out, n + 1, &err);
	if (r < 0) {
		check_error(r, &err);
		CHECK(r == -EINVAL);
		CHECK(s[0] != '/' || n > CAP_PATH_MAX);
		free(out);
		return;
	}
	CHECK(s[0] == '/' && n <= CAP_PATH_MAX);
	CHECK(strlen(out) <= n);
	check_normalized(out);
	char *ref = malloc(n + 2);
	CHECK(ref != NULL);
	reference_normalize(s, ref);
	if (strcmp(ref, out) != 0) {
		fprintf(stderr, "normalize_abs_path('%s') = '%s', reference says '%s'\n", s, out, ref);
		abort();
	}
	/* In place gives the same answer. */
	char *inplace = strdup(s);
	CHECK(inplace != NULL);
	CHECK(normalize_abs_path(inplace, inplace, n + 1, NULL) == 0);
	CHECK(strcmp(inplace, out) == 0);
	/* One byte too small a buffer is refused, not overrun. */
	if (n > 0) {
		char *small = malloc(n);
		CHECK(small != NULL);
		CHECK(normalize_abs_path(s, small, n, NULL) == -ERANGE);
		free(small);
	}
	free(inplace);
	free(ref);
	free(out);
}

static void fuzz_env(const char *s)
{
	capsule_error err = { 0 };
	int r = parse_env(s, &err);
	const char *eq = strchr(s, '=');
	if (r < 0) {
		check_error(r, &err);
	} else {
		CHECK(eq != NULL && eq != s);
		CHECK((s[0] >= 'A' && s[0] <= 'Z') || (s[0] >= 'a' && s[0] <= 'z') || s[0] == '_');
		for (const char *c = s; c < eq; c++)
			CHECK(is_name_char(*c, false) && *c != '.' && *c != '-');
	}
	/* The value is often a secret: an error message never shows it. */
	static const char secret[] = "S3CR3T-v4lue";
	size_t klen = eq ? (size_t)(eq - s) : strlen(s);
	if (klen > 200 || memmem(s, klen, "S3CR3T", 6))
		return;
	char kv[256];
	snprintf(kv, sizeof(kv), "%.*s=%s", (int)klen, s, secret);
	capsule_error err2 = { 0 };
	if (parse_env(kv, &err2) < 0) {
		if (strstr(err2.message, "S3CR3T")) {
			fprintf(stderr, "parse_env error shows the value: %s\n", err2.message);
			abort();
		}
	}
}

static void fuzz_json_get(const uint8_t *data, size_t size)
{
	static const char *const keys[] = { "name", "pid", "a", "", "state", "k\"\\", "\xc3\xa9", "created_ms" };
	if (size < 1)
		return;
	const char *key = keys[data[0] % (sizeof(keys) / sizeof(keys[0]))];
	size_t len = size - 1;
	char *text = malloc(len ? len : 1);
	CHECK(text != NULL);
	memcpy(text, data + 1, len);

	char *s = NULL;
	int64_t i = 0;
	bool b = false;
	int rs = json_get_string(text, len, key, &s);
	int ri = json_get_int(text, len, key, &i);
	int rb = json_get_bool(text, len, key, &b);
	CHECK(rs == 0 || rs == -ENOENT || rs == -EBADMSG || rs == -ENOMEM);
	CHECK(ri == 0 || ri == -ENOENT || ri == -EBADMSG || ri == -ERANGE || ri == -ENOMEM);
	CHECK(rb == 0 || rb == -ENOENT || rb == -EBADMSG || rb == -ENOMEM);
	if (rs == 0) {
		CHECK(s != NULL);
		/* The text was valid UTF-8, and escapes decode to valid UTF-8. */
		CHECK(valid_utf8((const unsigned char *)s, strlen(s)));
		CHECK(ri == -EBADMSG && rb == -EBADMSG); /* a string is not a number or a bool */
		free(s);
	}
	if (ri == 0 || ri == -ERANGE)
		CHECK(rs == -EBADMSG && rb == -EBADMSG);
	if (rb == 0)
		CHECK(rs == -EBADMSG && ri == -EBADMSG);
	/* Absent (or null) is absent whatever type is asked for. */
	CHECK((rs == -ENOENT) == (ri == -ENOENT) && (ri == -ENOENT) == (rb == -ENOENT));
	free(text);
}

/* Whatever the writer writes, the reader reads back. */
static void fuzz_json_round_trip(const uint8_t *data, size_t size)
{
	if (size < 10)
		return;
	int64_t num;
	memcpy(&num, data, sizeof(num));
	bool pretty = data[8] & 1;
	/* The rest: key NUL value (either may be missing). */
	size_t rest = size - 9;
	char *buf = malloc(rest + 2);
	CHECK(buf != NULL);
	memcpy(buf, data + 9, rest);
	buf[rest] = '\0';
	buf[rest + 1] = '\0';
	const char *key = buf;
	const char *val = buf + strlen(buf) + 1;
	if ((size_t)(val - buf) > rest)
		val = buf + rest + 1; /* "" */
	bool num_key = strcmp(key, "n") == 0;

	struct json_writer w;
	json_init(&w, pretty);
	json_object_begin(&w);
	json_kv_string(&w, key, val);
	if (!num_key)
		json_kv_int(&w, "n", num);
	json_key(&w, "nested");
	json_array_begin(&w);
	json_string(&w, val);
	json_object_begin(&w);
	json_kv_bool(&w, key, true);
	json_object_end(&w);
	json_null(&w);
	json_array_end(&w);
	json_object_end(&w);
	int werr = 0;
	char *text = json_steal(&w, &werr);
	CHECK(text != NULL);
	size_t tlen = strlen(text);

	if (strcmp(key, "nested") != 0 && valid_utf8((const unsigned char *)key, strlen(key))) {
		char *got = NULL;
		int r = json_get_string(text, tlen, key, &got);
		if (r != 0) {
			fprintf(stderr, "json_get_string(%s) = %d\n", text, r);
			abort();
		}
		CHECK(valid_utf8((const unsigned char *)got, strlen(got)));
		if (valid_utf8((const unsigned char *)val, strlen(val)) && strcmp(got, val) != 0) {
			fprintf(stderr, "wrote '%s', read back '%s' from %s\n", val, got, text);
			abort();
		}
		free(got);
	}
	if (!num_key && strcmp(key, "nested") != 0) {
		int64_t back = 0;
		CHECK(json_get_int(text, tlen, "n", &back) == 0);
		CHECK(back == num);
	}
	free(text);
	json_free(&w);
	free(buf);
}

/* The member and element walks: every value they hand out lies inside the text and is itself
 * valid JSON (walking a container value again fails as malformed only for a \u0000 name), and
 * FN is never called for a document that is malformed for any other reason. */
struct walk_state {
	const char *text;
	size_t len;
	size_t calls;
};

static int walk_check(const char *name, const char *value, size_t len, void *payload)
{
	struct walk_state *w = payload;
	CHECK(value >= w->text && len > 0 && (size_t)(value - w->text) + len <= w->len);
	if (name)
		CHECK(strlen(name) <= w->len);
	w->calls++;
	struct walk_state inner = { value, len, 0 };
	if (value[0] == '{') {
		CHECK(json_object_each(value, len, 8, walk_check, &inner) != -EBADMSG || memmem(value, len, "\\u0000", 6));
		char *s = NULL;
		int r = json_get_string(value, len, "bind", &s);
		CHECK(r == 0 || r == -ENOENT || r == -EBADMSG || r == -ENOMEM);
		free(s);
	} else if (value[0] == '[') {
		CHECK(json_array_each(value, len, 8, walk_check, &inner) != -EBADMSG || memmem(value, len, "\\u0000", 6));
	}
	return 0;
}

static void fuzz_json_walk(const uint8_t *data, size_t size)
{
	char *text = malloc(size ? size : 1);
	CHECK(text != NULL);
	memcpy(text, data, size);
	struct walk_state w = { text, size, 0 };
	int r = json_object_each(text, size, 64, walk_check, &w);
	CHECK(r == 0 || r == -EBADMSG || r == -E2BIG || r == -ENOMEM);
	if (r == -EBADMSG)
		CHECK(w.calls == 0 || memmem(text, size, "\\u0000", 6) != NULL);
	w.calls = 0;
	r = json_array_each(text, size, 64, walk_check, &w);
	CHECK(r == 0 || r == -EBADMSG || r == -E2BIG || r == -ENOMEM);
	free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	const unsigned target = data[0] % N_TARGETS;
	data++;
	size--;

	if (target == T_JSON_GET) {
		fuzz_json_get(data, size);
		return 0;
	}
	if (target == T_JSON_WALK) {
		fuzz_json_walk(data, size);
		return 0;
	}
	if (target == T_JSON_ROUND_TRIP) {
		fuzz_json_round_trip(data, size);
		return 0;
	}

	/* A C string of exactly its size. */
	size_t n = strnlen((const char *)data, size);
	char *s = malloc(n + 1);
	CHECK(s != NULL);
	memcpy(s, data, n);
	s[n] = '\0';

	capsule_error err = { 0 };
	int r;
	switch (target) {
	case T_SIZE: {
		uint64_t v;
		r = parse_size(s, &v, &err);
		if (r == 0)
			CHECK(v <= (1ull << 62));
		break;
	}
	case T_CPUS: {
		uint32_t milli;
		r = parse_cpus(s, &milli, &err);
		if (r == 0)
			CHECK(milli >= 1 && milli <= 1024 * 1000);
		break;
	}
	case T_DURATION: {
		uint32_t ms;
		r = parse_duration_ms(s, &ms, &err);
		break;
	}
	case T_UINT: {
		uint64_t v;
		r = parse_uint(s, "fuzz value", 3, 100000, &v, &err);
		if (r == 0) {
			CHECK(v >= 3 && v <= 100000);
			for (const char *c = s; *c; c++)
				CHECK(*c >= '0' && *c <= '9');
		}
		break;
	}
	case T_NAME:
		r = parse_name(s, "sandbox name", &err);
		CHECK((r == 0) == valid_name(s));
		break;
	case T_MOUNT: {
		struct mount_spec m;
		r = parse_mount_spec(s, &m, &err);
		if (r == 0) {
			CHECK(m.source != NULL);
			check_target(m.target);
			if (m.source_is_volume)
				CHECK(valid_name(m.source));
			else
				CHECK(m.source[0] == '/');
			/* The source is kept verbatim: it is the text before the first ':'. */
			const char *colon = strchr(s, ':');
			CHECK(colon != NULL);
			CHECK(strlen(m.source) == (size_t)(colon - s) && memcmp(m.source, s, strlen(m.source)) == 0);
		} else {
			CHECK(m.source == NULL && m.target == NULL);
		}
		mount_spec_free(&m);
		break;
	}
	case T_TMPFS: {
		struct tmpfs_spec t;
		r = parse_tmpfs_spec(s, &t, &err);
		if (r == 0) {
			check_target(t.target);
			CHECK(t.size_bytes > 0);
			CHECK(t.mode <= 07777);
		} else {
			CHECK(t.target == NULL);
		}
		tmpfs_spec_free(&t);
		break;
	}
	case T_USER:
		fuzz_user(s);
		r = 0;
		break;
	case T_PORT:
		fuzz_port(s);
		r = 0;
		break;
	case T_NORMALIZE:
		fuzz_normalize(s);
		r = 0;
		break;
	case T_ENV:
		fuzz_env(s);
		r = 0;
		break;
	default:
		r = 0;
		break;
	}
	if (r < 0)
		check_error(r, &err);
	free(s);
	return 0;
}
