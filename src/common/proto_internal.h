/* What the files of the protocol codec share (proto.c and proto_*.c; see proto.h): the
 * little-endian accessors, the writer's reserve, the string-vector and field helpers every
 * decoder uses, and DECODE_LOOP. Not for other parts: they see proto.h alone. */
#ifndef CAPSULE_PROTO_INTERNAL_H
#define CAPSULE_PROTO_INTERNAL_H

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

static inline void put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static inline void put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline void put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint16_t get_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static inline uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static inline uint64_t get_le64(const uint8_t *p)
{
	return (uint64_t)get_le32(p) | ((uint64_t)get_le32(p + 4) << 32);
}

static inline uint8_t *writer_reserve(struct cp_writer *w, size_t n)
{
	if (w->err)
		return NULL;
	if (n > CP_HEADER_SIZE + CP_MAX_PAYLOAD || w->len + n > CP_HEADER_SIZE + CP_MAX_PAYLOAD) {
		w->err = -EMSGSIZE;
		return NULL;
	}
	if (w->len + n > w->cap) {
		size_t cap = w->cap ? w->cap : 256;
		while (cap < w->len + n)
			cap *= 2;
		uint8_t *nb = realloc(w->buf, cap);
		if (!nb) {
			w->err = -ENOMEM;
			return NULL;
		}
		w->buf = nb;
		w->cap = cap;
	}
	uint8_t *p = w->buf + w->len;
	w->len += n;
	return p;
}

/* Replace *slot with a fresh copy of the field; a repeated field keeps the last value. */
static inline int field_set_str(const struct cp_field *f, char **slot)
{
	char *s;
	int r = cp_field_strdup(f, &s);
	if (r < 0)
		return r;
	free(*slot);
	*slot = s;
	return 0;
}

static inline void strv_free(char **v, size_t n)
{
	if (!v)
		return;
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

/* Append a string field to a NULL-terminated vector, bounded by MAX entries. */
static inline int strv_push(char ***v, size_t *n, size_t max, const struct cp_field *f)
{
	if (*n >= max)
		return -EBADMSG;
	char *s;
	int r = cp_field_strdup(f, &s);
	if (r < 0)
		return r;
	char **nv = realloc(*v, (*n + 2) * sizeof(char *));
	if (!nv) {
		free(s);
		return -ENOMEM;
	}
	nv[(*n)++] = s;
	nv[*n] = NULL;
	*v = nv;
	return 0;
}

/* An empty vector is returned as a one-slot NULL-terminated array so callers can always
 * iterate; NULL only on allocation failure. */
static inline int strv_terminate(char ***v)
{
	if (*v)
		return 0;
	*v = calloc(1, sizeof(char *));
	return *v ? 0 : -ENOMEM;
}

#define DECODE_LOOP(p, n, body)                                           \
	do {                                                              \
		struct cp_reader _r = { .p = (p), .rem = (n) };           \
		struct cp_field f;                                        \
		int _k;                                                   \
		while ((_k = cp_next_field(&_r, &f)) > 0) {               \
			int r = 0;                                        \
			body;                                             \
			if (r < 0) {                                      \
				ret = r;                                  \
				goto fail;                                \
			}                                                 \
		}                                                         \
		if (_k < 0) {                                             \
			ret = _k;                                         \
			goto fail;                                        \
		}                                                         \
	} while (0)

/* Records (LIST's entries, WATCH's events): a u32 length, then that many bytes of fields.
 * record_begin reserves the length and returns where it is; record_end fills it in. */
static inline int record_begin(struct cp_writer *w, size_t *at)
{
	*at = w->len;
	return writer_reserve(w, 4) ? 0 : w->err;
}

static inline int record_end(struct cp_writer *w, size_t at)
{
	if (w->err)
		return w->err;
	put_le32(w->buf + at, (uint32_t)(w->len - at - 4));
	return 0;
}

/* The next record's fields in *BODY and *LEN, without taking it (record_skip does): 1, 0 at
 * the end, -EBADMSG when what is left is too short for a length or the record runs past it. */
static inline int record_peek(const struct cp_reader *r, const uint8_t **body, size_t *len)
{
	if (r->rem == 0)
		return 0;
	if (r->rem < 4)
		return -EBADMSG;
	uint32_t n = get_le32(r->p);
	if (n > r->rem - 4)
		return -EBADMSG;
	*body = r->p + 4;
	*len = n;
	return 1;
}

static inline void record_skip(struct cp_reader *r, size_t len)
{
	r->p += 4 + len;
	r->rem -= 4 + len;
}

static inline bool str_fits(const char *s, size_t max)
{
	return !s || strlen(s) <= max;
}

/* The list is one string of up to CP_MAX_LIST_JSON bytes: longer than a path may be, so it
 * has a bound of its own instead of CP_MAX_STRING. */
static inline int field_set_long_str(const struct cp_field *f, size_t max, char **slot)
{
	char *s;
	int r = cp_field_strndup(f, max, &s);
	if (r < 0)
		return r;
	free(*slot);
	*slot = s;
	return 0;
}

#endif
