/* The JSON reader: scalars of a flat object, walks over an object's members and an array's
 * elements, bounded in depth and size for text from anywhere; see json.h. */
#include "json.h"
#include "util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct reader {
	const unsigned char *p;
	size_t len, pos;
};

/* A growable byte buffer for decoded strings; NULL means "validate only". */
struct sbuf {
	char *s;
	size_t len, cap;
};

enum jtype { JT_STRING, JT_NUMBER, JT_TRUE, JT_FALSE, JT_NULL, JT_OBJECT, JT_ARRAY };

static int sbuf_put(struct sbuf *b, const void *d, size_t n)
{
	if (!b)
		return 0;
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 64;
		while (cap < b->len + n + 1)
			cap *= 2;
		char *ns = realloc(b->s, cap);
		if (!ns)
			return -ENOMEM;
		b->s = ns;
		b->cap = cap;
	}
	memcpy(b->s + b->len, d, n);
	b->len += n;
	b->s[b->len] = '\0';
	return 0;
}

static void skip_ws(struct reader *r)
{
	while (r->pos < r->len) {
		unsigned char c = r->p[r->pos];
		if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
			break;
		r->pos++;
	}
}

static bool peek(const struct reader *r, unsigned char c)
{
	return r->pos < r->len && r->p[r->pos] == c;
}

static int hex4(struct reader *r, uint32_t *out)
{
	uint32_t v = 0;

	if (r->len - r->pos < 4)
		return -EBADMSG;
	for (int i = 0; i < 4; i++) {
		unsigned char c = r->p[r->pos++];
		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= (uint32_t)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v |= (uint32_t)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			v |= (uint32_t)(c - 'A' + 10);
		else
			return -EBADMSG;
	}
	*out = v;
	return 0;
}

static int put_utf8(struct sbuf *b, uint32_t cp)
{
	unsigned char u[4];
	size_t n;

	if (cp < 0x80) {
		u[0] = (unsigned char)cp;
		n = 1;
	} else if (cp < 0x800) {
		u[0] = (unsigned char)(0xc0 | (cp >> 6));
		u[1] = (unsigned char)(0x80 | (cp & 0x3f));
		n = 2;
	} else if (cp < 0x10000) {
		u[0] = (unsigned char)(0xe0 | (cp >> 12));
		u[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
		u[2] = (unsigned char)(0x80 | (cp & 0x3f));
		n = 3;
	} else {
		u[0] = (unsigned char)(0xf0 | (cp >> 18));
		u[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
		u[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
		u[3] = (unsigned char)(0x80 | (cp & 0x3f));
		n = 4;
	}
	return sbuf_put(b, u, n);
}

/* A string starting at the opening quote; decoded into OUT when non-NULL. */
static int read_string(struct reader *r, struct sbuf *out)
{
	int ret;

	r->pos++; /* the opening '"' */
	for (;;) {
		size_t start = r->pos;

		/* Plain bytes are copied in runs. */
		while (r->pos < r->len) {
			unsigned char c = r->p[r->pos];
			if (c == '"' || c == '\\' || c < 0x20)
				break;
			if (c < 0x80) {
				r->pos++;
				continue;
			}
			size_t l = utf8_seq_len(r->p + r->pos, r->len - r->pos);
			if (!l)
				return -EBADMSG;
			r->pos += l;
		}
		ret = sbuf_put(out, r->p + start, r->pos - start);
		if (ret < 0)
			return ret;
		if (r->pos >= r->len || r->p[r->pos] < 0x20)
			return -EBADMSG; /* unterminated, or a raw control byte */
		if (r->p[r->pos] == '"') {
			r->pos++;
			return 0;
		}

		/* A backslash escape. */
		r->pos++;
		if (r->pos >= r->len)
			return -EBADMSG;
		unsigned char e = r->p[r->pos++];
		char ch;
		uint32_t cp, lo;
		switch (e) {
		case '"': ch = '"'; break;
		case '\\': ch = '\\'; break;
		case '/': ch = '/'; break;
		case 'b': ch = '\b'; break;
		case 'f': ch = '\f'; break;
		case 'n': ch = '\n'; break;
		case 'r': ch = '\r'; break;
		case 't': ch = '\t'; break;
		case 'u':
			ret = hex4(r, &cp);
			if (ret < 0)
				return ret;
			if (cp >= 0xd800 && cp <= 0xdbff) {
				/* A high surrogate counts only with a low one right after it; otherwise
				 * it is replaced and whatever follows is read on its own. */
				size_t save = r->pos;
				if (r->len - r->pos >= 6 && r->p[r->pos] == '\\' && r->p[r->pos + 1] == 'u') {
					r->pos += 2;
					if (hex4(r, &lo) == 0 && lo >= 0xdc00 && lo <= 0xdfff)
						cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
					else {
						r->pos = save;
						cp = 0xfffd;
					}
				} else {
					cp = 0xfffd;
				}
			} else if (cp >= 0xdc00 && cp <= 0xdfff) {
				cp = 0xfffd;
			}
			ret = put_utf8(out, cp);
			if (ret < 0)
				return ret;
			continue;
		default:
			return -EBADMSG;
		}
		ret = sbuf_put(out, &ch, 1);
		if (ret < 0)
			return ret;
	}
}

static bool at_digit(const struct reader *r)
{
	return r->pos < r->len && r->p[r->pos] >= '0' && r->p[r->pos] <= '9';
}

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static int read_number(struct reader *r)
{
	if (peek(r, '-'))
		r->pos++;
	if (peek(r, '0')) {
		r->pos++;
	} else if (at_digit(r)) {
		while (at_digit(r))
			r->pos++;
	} else {
		return -EBADMSG;
	}
	if (peek(r, '.')) {
		r->pos++;
		if (!at_digit(r))
			return -EBADMSG;
		while (at_digit(r))
			r->pos++;
	}
	if (peek(r, 'e') || peek(r, 'E')) {
		r->pos++;
		if (peek(r, '+') || peek(r, '-'))
			r->pos++;
		if (!at_digit(r))
			return -EBADMSG;
		while (at_digit(r))
			r->pos++;
	}
	/* "01" or "1x" are caught by the caller, which expects ',' '}' ']' or the end next. */
	return 0;
}

static int read_literal(struct reader *r, const char *lit)
{
	size_t n = strlen(lit);

	if (r->len - r->pos < n || memcmp(r->p + r->pos, lit, n) != 0)
		return -EBADMSG;
	r->pos += n;
	return 0;
}

static int read_value(struct reader *r, int depth, enum jtype *type);

static int read_container(struct reader *r, int depth, bool object)
{
	const unsigned char close = object ? '}' : ']';
	enum jtype t;
	int ret;

	if (depth > JSON_MAX_DEPTH)
		return -EBADMSG;
	r->pos++; /* '{' or '[' */
	skip_ws(r);
	if (peek(r, close)) {
		r->pos++;
		return 0;
	}
	for (;;) {
		skip_ws(r);
		if (object) {
			if (!peek(r, '"'))
				return -EBADMSG;
			ret = read_string(r, NULL);
			if (ret < 0)
				return ret;
			skip_ws(r);
			if (!peek(r, ':'))
				return -EBADMSG;
			r->pos++;
			skip_ws(r);
		}
		ret = read_value(r, depth, &t);
		if (ret < 0)
			return ret;
		skip_ws(r);
		if (peek(r, ',')) {
			r->pos++;
			continue;
		}
		if (peek(r, close)) {
			r->pos++;
			return 0;
		}
		return -EBADMSG;
	}
}

/* One value at R's position (no leading whitespace); DEPTH counts the containers around it. */
static int read_value(struct reader *r, int depth, enum jtype *type)
{
	if (r->pos >= r->len)
		return -EBADMSG;
	switch (r->p[r->pos]) {
	case '"':
		*type = JT_STRING;
		return read_string(r, NULL);
	case '{':
		*type = JT_OBJECT;
		return read_container(r, depth + 1, true);
	case '[':
		*type = JT_ARRAY;
		return read_container(r, depth + 1, false);
	case 't':
		*type = JT_TRUE;
		return read_literal(r, "true");
	case 'f':
		*type = JT_FALSE;
		return read_literal(r, "false");
	case 'n':
		*type = JT_NULL;
		return read_literal(r, "null");
	default:
		*type = JT_NUMBER;
		return read_number(r);
	}
}

/* Validate the whole text as one object and find KEY among its top-level members: its value
 * starts at *vpos and has type *vtype. */
static int find_key(const char *text, size_t len, const char *key, size_t *vpos, enum jtype *vtype)
{
	struct reader r = { .p = (const unsigned char *)text, .len = len };
	struct sbuf name = {0};
	size_t klen;
	bool found = false;
	int ret;

	if (!text || !key || !vpos)
		return -EINVAL;
	klen = strlen(key);
	skip_ws(&r);
	if (!peek(&r, '{'))
		return -EBADMSG;
	r.pos++;
	skip_ws(&r);
	if (peek(&r, '}')) {
		r.pos++;
		goto end;
	}
	for (;;) {
		enum jtype t;
		size_t at;

		skip_ws(&r);
		if (!peek(&r, '"')) {
			ret = -EBADMSG;
			goto out;
		}
		name.len = 0;
		ret = read_string(&r, &name);
		if (ret < 0)
			goto out;
		skip_ws(&r);
		if (!peek(&r, ':')) {
			ret = -EBADMSG;
			goto out;
		}
		r.pos++;
		skip_ws(&r);
		at = r.pos;
		ret = read_value(&r, 1, &t);
		if (ret < 0)
			goto out;
		if (name.len == klen && (klen == 0 || memcmp(name.s, key, klen) == 0)) {
			/* Two values for one key: readers disagree on which wins, so neither does. */
			if (found) {
				ret = -EBADMSG;
				goto out;
			}
			found = true;
			*vpos = at;
			*vtype = t;
		}
		skip_ws(&r);
		if (peek(&r, ',')) {
			r.pos++;
			continue;
		}
		if (peek(&r, '}')) {
			r.pos++;
			break;
		}
		ret = -EBADMSG;
		goto out;
	}
end:
	skip_ws(&r);
	if (r.pos != r.len)
		ret = -EBADMSG;
	else if (!found || *vtype == JT_NULL)
		ret = -ENOENT;
	else
		ret = 0;
out:
	free(name.s);
	return ret;
}

int json_get_string(const char *text, size_t len, const char *key, char **out)
{
	struct sbuf b = {0};
	size_t pos = 0;
	enum jtype t = JT_NULL;
	int ret;

	if (!out)
		return -EINVAL;
	ret = find_key(text, len, key, &pos, &t);
	if (ret < 0)
		return ret;
	if (t != JT_STRING)
		return -EBADMSG;
	struct reader r = { .p = (const unsigned char *)text, .len = len, .pos = pos };
	ret = read_string(&r, &b);
	if (ret == 0 && !b.s)
		ret = sbuf_put(&b, "", 0); /* "" still needs a buffer for its NUL */
	if (ret == 0 && memchr(b.s, '\0', b.len))
		ret = -EBADMSG;
	if (ret < 0) {
		free(b.s);
		return ret;
	}
	*out = b.s;
	return 0;
}

int json_get_int(const char *text, size_t len, const char *key, int64_t *out)
{
	size_t pos = 0;
	enum jtype t = JT_NULL;
	uint64_t mag = 0, limit;
	bool neg = false;
	int ret;

	if (!out)
		return -EINVAL;
	ret = find_key(text, len, key, &pos, &t);
	if (ret < 0)
		return ret;
	if (t != JT_NUMBER)
		return -EBADMSG;
	/* Already validated, so only digits, '-', '.', 'e' can follow. */
	if (text[pos] == '-') {
		neg = true;
		pos++;
	}
	limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
	for (; pos < len && text[pos] >= '0' && text[pos] <= '9'; pos++) {
		unsigned d = (unsigned)(text[pos] - '0');
		if (mag > (limit - d) / 10)
			return -ERANGE;
		mag = mag * 10 + d;
	}
	if (pos < len && (text[pos] == '.' || text[pos] == 'e' || text[pos] == 'E'))
		return -ERANGE;
	*out = neg ? (mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag) : (int64_t)mag;
	return 0;
}

int json_get_bool(const char *text, size_t len, const char *key, bool *out)
{
	size_t pos = 0;
	enum jtype t = JT_NULL;
	int ret;

	if (!out)
		return -EINVAL;
	ret = find_key(text, len, key, &pos, &t);
	if (ret < 0)
		return ret;
	if (t != JT_TRUE && t != JT_FALSE)
		return -EBADMSG;
	*out = t == JT_TRUE;
	return 0;
}

/* The members of the object (or the elements of the array) whose text is TEXT[0..LEN). */
static int walk_container(const char *text, size_t len, bool object, size_t max, json_member_fn fn,
			  void *payload)
{
	struct reader r = { .p = (const unsigned char *)text, .len = len };
	const unsigned char open = object ? '{' : '[', close = object ? '}' : ']';
	struct sbuf name = {0};
	enum jtype t;
	size_t count = 0;
	int ret;

	if (!text || !fn)
		return -EINVAL;
	/* The whole text first: FN sees nothing of a document that turns out to be invalid. */
	skip_ws(&r);
	if (!peek(&r, open))
		return -EBADMSG;
	ret = read_value(&r, 0, &t);
	if (ret < 0)
		return ret;
	skip_ws(&r);
	if (r.pos != r.len)
		return -EBADMSG;

	r.pos = 0;
	skip_ws(&r);
	r.pos++; /* the opening bracket */
	skip_ws(&r);
	if (peek(&r, close))
		return 0;
	for (;;) {
		size_t at;

		skip_ws(&r);
		if (object) {
			name.len = 0;
			ret = read_string(&r, &name);
			if (ret == 0 && !name.s)
				ret = sbuf_put(&name, "", 0);
			if (ret < 0)
				goto out;
			if (memchr(name.s, '\0', name.len)) {
				ret = -EBADMSG;
				goto out;
			}
			skip_ws(&r);
			r.pos++; /* ':' */
			skip_ws(&r);
		}
		if (++count > max) {
			ret = -E2BIG;
			goto out;
		}
		at = r.pos;
		ret = read_value(&r, 1, &t);
		if (ret < 0)
			goto out;
		ret = fn(object ? name.s : NULL, text + at, r.pos - at, payload);
		if (ret < 0)
			goto out;
		skip_ws(&r);
		if (peek(&r, ',')) {
			r.pos++;
			continue;
		}
		ret = 0;
		break;
	}
out:
	free(name.s);
	return ret;
}

int json_object_each(const char *text, size_t len, size_t max_members, json_member_fn fn, void *payload)
{
	return walk_container(text, len, true, max_members, fn, payload);
}

struct member_lookup {
	const char *key;
	const char *value;
	size_t len;
};

static int member_lookup_fn(const char *name, const char *value, size_t len, void *payload)
{
	struct member_lookup *m = payload;
	if (name && !strcmp(name, m->key)) {
		m->value = value;
		m->len = len;
	}
	return 0;
}

int json_get_member(const char *text, size_t len, const char *key, const char **value, size_t *value_len)
{
	struct member_lookup m = { .key = key };
	int r = json_object_each(text, len, 64, member_lookup_fn, &m);
	if (r < 0)
		return r;
	if (!m.value)
		return -ENOENT;
	*value = m.value;
	*value_len = m.len;
	return 0;
}

int json_array_each(const char *text, size_t len, size_t max_elements, json_member_fn fn, void *payload)
{
	return walk_container(text, len, false, max_elements, fn, payload);
}

int json_string_value(const char *text, size_t len, char **out)
{
	/* The reader finds values by key: give this one a key. */
	char *wrapped = malloc(len + 8);
	if (!wrapped)
		return -ENOMEM;
	memcpy(wrapped, "{\"v\":", 5);
	memcpy(wrapped + 5, text, len);
	wrapped[len + 5] = '}';
	int r = json_get_string(wrapped, len + 6, "v", out);
	free(wrapped);
	return r;
}
