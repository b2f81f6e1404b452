/* The JSON writer: a streaming writer into a growable buffer, for --json output and state
 * files; see json.h. */
#include "json.h"
#include "util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void json_init(struct json_writer *w, bool pretty)
{
	memset(w, 0, sizeof(*w));
	w->pretty = pretty;
}

void json_free(struct json_writer *w)
{
	if (!w)
		return;
	free(w->buf);
	json_init(w, w->pretty);
}

static void put(struct json_writer *w, const char *s, size_t n)
{
	if (w->err)
		return;
	if (n > SIZE_MAX / 4 || w->len > SIZE_MAX / 4) {
		w->err = -ENOMEM;
		return;
	}
	if (w->len + n + 1 > w->cap) {
		size_t cap = w->cap ? w->cap : 256;
		while (cap < w->len + n + 1)
			cap *= 2;
		char *nb = realloc(w->buf, cap);
		if (!nb) {
			w->err = -ENOMEM;
			return;
		}
		w->buf = nb;
		w->cap = cap;
	}
	memcpy(w->buf + w->len, s, n);
	w->len += n;
	w->buf[w->len] = '\0';
}

static void puts_(struct json_writer *w, const char *s)
{
	put(w, s, strlen(s));
}

static void newline_indent(struct json_writer *w, int depth)
{
	static const char spaces[] = "                                "; /* 32 */

	put(w, "\n", 1);
	for (int i = 0; i < depth; i++)
		put(w, spaces, 2);
}

/* Whether the last thing written was a key, so a value goes right after it. Read off the
 * buffer's last byte rather than kept in a flag so that struct json_writer stays as declared:
 * a key always ends in ':' (compact) or ": " (pretty), and nothing else the writer emits ends
 * in those bytes (strings end in '"', indentation is always followed by the item). */
static bool after_key(const struct json_writer *w)
{
	return w->len > 0 && w->buf[w->len - 1] == (w->pretty ? ' ' : ':');
}

/* Separator and indentation before an item (a value or a key) at the current depth. */
static bool begin_item(struct json_writer *w, bool is_key)
{
	if (w->err)
		return false;
	if (after_key(w)) {
		if (is_key) {
			w->err = -EINVAL; /* a key with no value */
			return false;
		}
		return true;
	}
	if (w->depth == 0 && (is_key || w->need_comma[0])) {
		w->err = -EINVAL; /* a key outside an object, or a second top-level value */
		return false;
	}
	if (w->need_comma[w->depth])
		put(w, ",", 1);
	if (w->pretty && w->depth > 0)
		newline_indent(w, w->depth);
	w->need_comma[w->depth] = true;
	return !w->err;
}

static void container_begin(struct json_writer *w, char open)
{
	if (!begin_item(w, false))
		return;
	if (w->depth + 1 >= JSON_MAX_DEPTH) {
		w->err = -EINVAL;
		return;
	}
	put(w, &open, 1);
	w->depth++;
	w->need_comma[w->depth] = false;
}

void json_raw(struct json_writer *w, const char *text)
{
	if (begin_item(w, false))
		puts_(w, text);
}

static void container_end(struct json_writer *w, char close)
{
	if (w->err)
		return;
	if (w->depth == 0 || after_key(w)) {
		w->err = -EINVAL;
		return;
	}
	if (w->pretty && w->need_comma[w->depth])
		newline_indent(w, w->depth - 1);
	put(w, &close, 1);
	w->depth--;
}

void json_object_begin(struct json_writer *w)
{
	container_begin(w, '{');
}

void json_object_end(struct json_writer *w)
{
	container_end(w, '}');
}

void json_array_begin(struct json_writer *w)
{
	container_begin(w, '[');
}

void json_array_end(struct json_writer *w)
{
	container_end(w, ']');
}

static void put_quoted(struct json_writer *w, const char *str)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t n = strlen(str), i = 0, run = 0;

	put(w, "\"", 1);
	while (i < n) {
		unsigned char c = s[i];
		size_t l = 0;
		char esc[8];
		const char *rep;

		/* U+0080-U+009F, the C1 controls, are escaped as C0 ones are: a terminal that shows
		 * this JSON may take them as commands (CSI is U+009B). */
		bool c1 = c == 0xc2 && i + 1 < n && s[i + 1] >= 0x80 && s[i + 1] <= 0x9f;
		if (c >= 0x20 && c != '"' && c != '\\' && c != 0x7f && !c1 && (c < 0x80 || (l = utf8_seq_len(s + i, n - i)))) {
			/* Copied in runs: most strings need no escaping at all. */
			size_t step = c < 0x80 ? 1 : l;
			i += step;
			run += step;
			continue;
		}
		put(w, str + i - run, run);
		run = 0;
		if (c == '"') {
			rep = "\\\"";
		} else if (c == '\\') {
			rep = "\\\\";
		} else if (c < 0x20 || c == 0x7f) {
			snprintf(esc, sizeof(esc), "\\u%04x", c);
			rep = esc;
		} else if (c1) {
			snprintf(esc, sizeof(esc), "\\u%04x", s[++i]);
			rep = esc;
		} else {
			rep = "\\ufffd";
		}
		puts_(w, rep);
		i++;
	}
	put(w, str + i - run, run);
	put(w, "\"", 1);
}

void json_key(struct json_writer *w, const char *key)
{
	if (!begin_item(w, true))
		return;
	put_quoted(w, key ? key : "");
	puts_(w, w->pretty ? ": " : ":");
}

void json_string(struct json_writer *w, const char *s)
{
	if (!begin_item(w, false))
		return;
	if (s)
		put_quoted(w, s);
	else
		puts_(w, "null");
}

void json_int(struct json_writer *w, int64_t v)
{
	char b[24];

	if (!begin_item(w, false))
		return;
	snprintf(b, sizeof(b), "%" PRId64, v);
	puts_(w, b);
}

void json_uint(struct json_writer *w, uint64_t v)
{
	char b[24];

	if (!begin_item(w, false))
		return;
	snprintf(b, sizeof(b), "%" PRIu64, v);
	puts_(w, b);
}

void json_bool(struct json_writer *w, bool v)
{
	if (begin_item(w, false))
		puts_(w, v ? "true" : "false");
}

void json_null(struct json_writer *w)
{
	if (begin_item(w, false))
		puts_(w, "null");
}

void json_kv_string(struct json_writer *w, const char *k, const char *v)
{
	json_key(w, k);
	json_string(w, v);
}

void json_kv_int(struct json_writer *w, const char *k, int64_t v)
{
	json_key(w, k);
	json_int(w, v);
}

void json_kv_uint(struct json_writer *w, const char *k, uint64_t v)
{
	json_key(w, k);
	json_uint(w, v);
}

void json_kv_bool(struct json_writer *w, const char *k, bool v)
{
	json_key(w, k);
	json_bool(w, v);
}

char *json_steal(struct json_writer *w, int *err_out)
{
	int e = w->err;
	char *out = NULL;

	if (!e && (w->depth != 0 || !w->need_comma[0] || after_key(w)))
		e = -EINVAL; /* unfinished, or nothing written */
	if (!e)
		out = w->buf;
	else
		free(w->buf);
	json_init(w, w->pretty);
	if (err_out)
		*err_out = e;
	return out;
}
