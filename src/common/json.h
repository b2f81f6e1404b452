/* A small streaming JSON writer into a growable malloc'd buffer (for --json output and state
 * files), and a tiny reader for top-level scalars of a flat object (for reading those state
 * files back), with walks over an object's members and an array's elements for documents one level
 * deeper. */
#ifndef CAPSULE_JSON_H
#define CAPSULE_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The bound on nesting: the writer keeps one need_comma slot per level, and the reader refuses
 * text nested deeper than this. */
#define JSON_MAX_DEPTH 32

/* Containers nest at most 31 deep (need_comma[0] is the top level). Errors are sticky: after
 * the first one every call is a no-op and json_steal reports it. err is -ENOMEM when memory ran
 * out and -EINVAL when the calls do not form one JSON value (unbalanced end, a key outside an
 * object, a key without a value, nesting too deep, a second top-level value, nothing written).
 * Compact output has no whitespace; pretty output indents by two spaces and puts ": " after
 * keys; neither ends with a newline. */
struct json_writer {
	char *buf;
	size_t len, cap;
	int err; /* sticky -ENOMEM / -EINVAL */
	int depth;
	bool need_comma[JSON_MAX_DEPTH];
	bool pretty;
};

void json_init(struct json_writer *w, bool pretty);
void json_free(struct json_writer *w); /* frees an unstolen buffer; the writer can be reused after json_init */

void json_object_begin(struct json_writer *w);
void json_object_end(struct json_writer *w);
void json_array_begin(struct json_writer *w);
void json_array_end(struct json_writer *w);
void json_key(struct json_writer *w, const char *key);

/* NULL -> null; escapes ", \, control chars and DEL as \u00XX; each byte that is not part of
 * valid UTF-8 (overlongs, surrogates, > U+10FFFF, truncated sequences) -> \ufffd. */
void json_string(struct json_writer *w, const char *s);
void json_int(struct json_writer *w, int64_t v);
void json_uint(struct json_writer *w, uint64_t v);
void json_bool(struct json_writer *w, bool v);
void json_null(struct json_writer *w);

/* TEXT, one complete JSON value, as is: for a value the writer made earlier (a document
 * embedded in another, and also sent on its own). The caller vouches for its validity. */
void json_raw(struct json_writer *w, const char *text);

/* Convenience: key + value. */
void json_kv_string(struct json_writer *w, const char *k, const char *v);
void json_kv_int(struct json_writer *w, const char *k, int64_t v);
void json_kv_uint(struct json_writer *w, const char *k, uint64_t v);
void json_kv_bool(struct json_writer *w, const char *k, bool v);

/* Finish: returns the NUL-terminated text (ownership to caller) or NULL on error (then
 * *err_out, if ERR_OUT is non-NULL, is -ENOMEM or -EINVAL as above). Either way the writer is
 * left empty, as after json_init with the same pretty setting. */
char *json_steal(struct json_writer *w, int *err_out);

/* Find the value of a top-level key in the JSON object text TEXT[0..LEN) (which need not be
 * NUL-terminated). The whole text must be one valid JSON object (RFC 8259, UTF-8, nesting at
 * most 32 deep, nothing but whitespace after it); nested values are validated and skipped.
 * Returns:
 *   0        found; *out set (for strings a malloc'd, unescaped, NUL-terminated copy; lone
 *            surrogate escapes become U+FFFD)
 *   -ENOENT  the key is absent or its value is null
 *   -EBADMSG the text is not valid JSON, the key appears more than once, the value has another
 *            type, or a string value contains \u0000 (it could not be a C string)
 *   -ERANGE  (json_get_int) the number is not an integer or does not fit in int64_t
 *   -ENOMEM, -EINVAL (NULL arguments)
 * Never reads outside TEXT[0..LEN) and recurses at most 32 deep: it is fuzzed. */
int json_get_string(const char *text, size_t len, const char *key, char **out);
int json_get_int(const char *text, size_t len, const char *key, int64_t *out);
int json_get_bool(const char *text, size_t len, const char *key, bool *out);

/* Walk the members of the JSON object TEXT[0..LEN) in document order. The whole text is
 * validated first, as json_get_* do, so FN is not called for a document that is invalid.
 * FN gets the member's unescaped name (NUL-terminated) and its value's raw text, which may be
 * read again with json_get_* when it is an object. A name holding \u0000 is -EBADMSG; more
 * than MAX_MEMBERS members is -E2BIG; a negative return from FN stops the walk and is
 * returned. Names are not checked for duplicates: the caller decides what a repeat means.
 * Never reads outside TEXT[0..LEN): it is fuzzed with the rest of the reader. */
typedef int (*json_member_fn)(const char *name, const char *value, size_t value_len, void *payload);
int json_object_each(const char *text, size_t len, size_t max_members, json_member_fn fn, void *payload);
/* The raw text of member KEY of the JSON object TEXT[0..LEN) (the last, if it repeats) into
 * *VALUE and *VALUE_LEN, pointing into TEXT: an object or array to walk or read again.
 * -ENOENT when there is none, or json_object_each's errors (up to 64 members are looked at). */
int json_get_member(const char *text, size_t len, const char *key, const char **value, size_t *value_len);
/* The same for the elements of the JSON array TEXT[0..LEN); FN gets NAME NULL. */
int json_array_each(const char *text, size_t len, size_t max_elements, json_member_fn fn, void *payload);

/* The JSON string TEXT[0..LEN) (an element json_array_each gave), unescaped, malloc'd. */
int json_string_value(const char *text, size_t len, char **out);

#endif
