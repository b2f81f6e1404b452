/* The value readers every section of config.json shares (oci_spec_parse.h): each names where in
 * the document a bad value is, so that an error is one line a user can act on. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "internal.h"
#include "json.h"
#include "oci_spec.h"
#include "oci_spec_parse.h"
#include "proc_masks.h"
#include "util.h"

int oci_bad(capsule_error *err, const char *where, const char *what)
{
	return cap_err_plain(err, EINVAL, "config.json: %s: %s", where, what);
}

int oci_unsupported(capsule_error *err, const char *where, const char *why)
{
	return cap_err_plain(err, EOPNOTSUPP, "config.json: %s is not supported by capsule: %s", where, why);
}

bool oci_is_null(const char *v, size_t n)
{
	return n == 4 && !memcmp(v, "null", 4);
}

/* An empty value ([], {}, "", null, false, 0) asks for nothing. */
bool oci_is_empty(const char *v, size_t n)
{
	while (n && (v[n - 1] == ' ' || v[n - 1] == '\n' || v[n - 1] == '\t' || v[n - 1] == '\r'))
		n--;
	if (oci_is_null(v, n) || (n == 5 && !memcmp(v, "false", 5)) || (n == 1 && v[0] == '0') ||
	    (n == 2 && (!memcmp(v, "[]", 2) || !memcmp(v, "{}", 2) || !memcmp(v, "\"\"", 2))))
		return true;
	if (n >= 2 && (v[0] == '[' || v[0] == '{')) {
		for (size_t i = 1; i + 1 < n; i++)
			if (v[i] != ' ' && v[i] != '\n' && v[i] != '\t' && v[i] != '\r')
				return false;
		return true;
	}
	return false;
}

/* The member's value as a scalar, by wrapping it into a one-member object for json_get_*. */
static int scalar_doc(const char *v, size_t n, char **doc)
{
	*doc = malloc(n + 8);
	if (!*doc)
		return -ENOMEM;
	memcpy(*doc, "{\"v\":", 5);
	memcpy(*doc + 5, v, n);
	memcpy(*doc + 5 + n, "}", 2);
	return 0;
}

int oci_value_string(const char *v, size_t n, const char *where, char **out, capsule_error *err)
{
	if (n == 0 || v[0] != '"' || json_string_value(v, n, out) < 0)
		return oci_bad(err, where, "not a string");
	return 0;
}

int oci_value_int(const char *v, size_t n, const char *where, int64_t *out, capsule_error *err)
{
	_cleanup_free_ char *doc = NULL;
	if (scalar_doc(v, n, &doc) < 0)
		return cap_err(err, ENOMEM, "config.json");
	if (json_get_int(doc, n + 6, "v", out) < 0)
		return oci_bad(err, where, "not an integer");
	return 0;
}

/* Unsigned 64-bit values (rlimits, memory) may exceed int64_t: read the digits. */
int oci_value_u64(const char *v, size_t n, const char *where, uint64_t *out, capsule_error *err)
{
	if (n == 0 || n > 20)
		return oci_bad(err, where, "not a non-negative integer");
	uint64_t x = 0;
	for (size_t i = 0; i < n; i++) {
		if (v[i] < '0' || v[i] > '9')
			return oci_bad(err, where, "not a non-negative integer");
		if (x > (UINT64_MAX - (uint64_t)(v[i] - '0')) / 10)
			return oci_bad(err, where, "out of range");
		x = x * 10 + (uint64_t)(v[i] - '0');
	}
	if (n > 1 && v[0] == '0')
		return oci_bad(err, where, "not a non-negative integer");
	*out = x;
	return 0;
}

int oci_value_bool(const char *v, size_t n, const char *where, bool *out, capsule_error *err)
{
	if (n == 4 && !memcmp(v, "true", 4))
		*out = true;
	else if (n == 5 && !memcmp(v, "false", 5))
		*out = false;
	else
		return oci_bad(err, where, "not a boolean");
	return 0;
}

int oci_value_uint32(const char *v, size_t n, const char *where, uint32_t *out, capsule_error *err)
{
	uint64_t x;
	int r = oci_value_u64(v, n, where, &x, err);
	if (r < 0)
		return r;
	if (x > UINT32_MAX)
		return oci_bad(err, where, "out of range");
	*out = (uint32_t)x;
	return 0;
}

/* Walk the array (or object) V at WHERE: FN's own error stands; the walk's becomes one naming
 * WHERE. */
int oci_walk_json(bool array, const char *v, size_t n, size_t max, json_member_fn fn, void *payload,
		     const char *where, capsule_error *err)
{
	if (n == 0 || v[0] != (array ? '[' : '{'))
		return oci_bad(err, where, array ? "not an array" : "not an object");
	int r = array ? json_array_each(v, n, max, fn, payload) : json_object_each(v, n, max, fn, payload);
	if (r < 0 && !err->code)
		return oci_bad(err, where, r == -E2BIG ? "too many elements" : "not valid here");
	return r < 0 ? r : 0;
}

int oci_join(struct joined *j, const char *a, const char *b, const char *where, capsule_error *err)
{
	size_t need = j->len + strlen(a) + strlen(b) + 2;
	if (need > 16384)
		return oci_bad(err, where, "too long");
	if (need > j->cap) {
		char *grown = realloc(j->out, need * 2);
		if (!grown)
			return cap_err(err, ENOMEM, "config.json");
		j->out = grown;
		j->cap = need * 2;
	}
	j->len += (size_t)sprintf(j->out + j->len, "%s%s%s", j->len ? "," : "", a, b);
	return 0;
}

/* ---- arrays of strings ---------------------------------------------------------------- */

struct strv_walk {
	char **v;
	size_t n;
	const char *where;
	capsule_error *err;
};

static int strv_element(const char *name, const char *v, size_t n, void *payload)
{
	struct strv_walk *w = payload;
	char *s;
	int r = oci_value_string(v, n, w->where, &s, w->err);
	if (r < 0)
		return r;
	w->v[w->n++] = s;
	return 0;
}

/* A JSON array of strings into a NULL-terminated malloc'd vector. */
int oci_value_strv(const char *v, size_t n, const char *where, char ***out, capsule_error *err)
{
	/* Every element is at least two bytes ("") and a separator: a bound on the count. */
	size_t max = n / 3 + 2;
	struct strv_walk w = { .v = calloc(max, sizeof(char *)), .where = where, .err = err };
	if (!w.v)
		return cap_err(err, ENOMEM, "config.json");
	int r = oci_walk_json(true, v, n, MAX_ELEMENTS, strv_element, &w, where, err);
	if (r < 0) {
		for (size_t i = 0; i < w.n; i++)
			free(w.v[i]);
		free(w.v);
		return r;
	}
	*out = w.v;
	return 0;
}

void oci_strv_free_all(char **v)
{
	for (size_t i = 0; v && v[i]; i++)
		free(v[i]);
	free(v);
}
