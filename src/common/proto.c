#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proto.h"

static void put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t get_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static uint64_t get_le64(const uint8_t *p)
{
	return (uint64_t)get_le32(p) | ((uint64_t)get_le32(p + 4) << 32);
}

void cp_header_encode(uint8_t out[CP_HEADER_SIZE], const struct cp_header *hdr)
{
	put_le32(out, hdr->len);
	put_le16(out + 4, hdr->type);
	put_le16(out + 6, hdr->flags);
	put_le32(out + 8, hdr->chan);
}

bool cp_type_known(uint16_t type)
{
	switch (type) {
	case CP_HELLO: case CP_ERROR: case CP_OK:
	case CP_EXEC: case CP_STARTED: case CP_DATA: case CP_CREDIT: case CP_EXIT: case CP_SIGNAL: case CP_RESIZE:
	case CP_STOP: case CP_INIT: case CP_SHUTDOWN: case CP_FS:
	case CP_VM_MOUNT: case CP_VM_UNMOUNT: case CP_VM_MOUNTED:
	case CP_MOUNT: case CP_UNMOUNT: case CP_MOUNTS:
	case CP_PORT_ADD: case CP_PORT_REMOVE: case CP_PORTS:
	case CP_SAVE:
	case CP_FWD_CONNECT: case CP_FWD_CLOSE:
	case CP_SCREENSHOT: case CP_INPUT:
		return true;
	}
	return false;
}

const char *cp_type_name(uint16_t type)
{
	switch (type) {
	case CP_HELLO: return "HELLO";
	case CP_ERROR: return "ERROR";
	case CP_OK: return "OK";
	case CP_EXEC: return "EXEC";
	case CP_STARTED: return "STARTED";
	case CP_DATA: return "DATA";
	case CP_CREDIT: return "CREDIT";
	case CP_EXIT: return "EXIT";
	case CP_SIGNAL: return "SIGNAL";
	case CP_RESIZE: return "RESIZE";
	case CP_STOP: return "STOP";
	case CP_INIT: return "INIT";
	case CP_SHUTDOWN: return "SHUTDOWN";
	case CP_VM_MOUNT: return "VM_MOUNT";
	case CP_VM_UNMOUNT: return "VM_UNMOUNT";
	case CP_VM_MOUNTED: return "VM_MOUNTED";
	case CP_FS: return "FS";
	case CP_MOUNT: return "MOUNT";
	case CP_UNMOUNT: return "UNMOUNT";
	case CP_MOUNTS: return "MOUNTS";
	case CP_PORT_ADD: return "PORT_ADD";
	case CP_PORT_REMOVE: return "PORT_REMOVE";
	case CP_PORTS: return "PORTS";
	case CP_SAVE: return "SAVE";
	case CP_FWD_CONNECT: return "FWD_CONNECT";
	case CP_FWD_CLOSE: return "FWD_CLOSE";
	case CP_SCREENSHOT: return "SCREENSHOT";
	case CP_INPUT: return "INPUT";
	}
	return "UNKNOWN";
}

int cp_header_decode(const uint8_t *buf, size_t n, struct cp_header *hdr)
{
	if (n < CP_HEADER_SIZE)
		return -EBADMSG;
	hdr->len = get_le32(buf);
	hdr->type = get_le16(buf + 4);
	hdr->flags = get_le16(buf + 6);
	hdr->chan = get_le32(buf + 8);
	if (hdr->len > CP_MAX_PAYLOAD || !cp_type_known(hdr->type))
		return -EBADMSG;
	return 0;
}

/* ---- writer ---- */

void cp_writer_init(struct cp_writer *w)
{
	memset(w, 0, sizeof(*w));
}

void cp_writer_free(struct cp_writer *w)
{
	free(w->buf);
	memset(w, 0, sizeof(*w));
}

static uint8_t *writer_reserve(struct cp_writer *w, size_t n)
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

void cp_put_bytes(struct cp_writer *w, uint16_t tag, const void *p, size_t n)
{
	if (n > UINT32_MAX) {
		w->err = w->err ? w->err : -EMSGSIZE;
		return;
	}
	uint8_t *d = writer_reserve(w, 6 + n);
	if (!d)
		return;
	put_le16(d, tag);
	put_le32(d + 2, (uint32_t)n);
	if (n)
		memcpy(d + 6, p, n);
}

void cp_put_u32(struct cp_writer *w, uint16_t tag, uint32_t v)
{
	uint8_t b[4];
	put_le32(b, v);
	cp_put_bytes(w, tag, b, 4);
}

void cp_put_u64(struct cp_writer *w, uint16_t tag, uint64_t v)
{
	uint8_t b[8];
	put_le64(b, v);
	cp_put_bytes(w, tag, b, 8);
}

void cp_put_str(struct cp_writer *w, uint16_t tag, const char *s)
{
	if (s)
		cp_put_bytes(w, tag, s, strlen(s));
}

void cp_frame_begin(struct cp_writer *w, uint16_t type, uint16_t flags, uint32_t chan)
{
	w->len = 0;
	w->err = 0;
	uint8_t *h = writer_reserve(w, CP_HEADER_SIZE);
	if (!h)
		return;
	struct cp_header hdr = { .len = 0, .type = type, .flags = flags, .chan = chan };
	cp_header_encode(h, &hdr);
}

int cp_frame_finish(struct cp_writer *w)
{
	if (w->err)
		return w->err;
	if (w->len < CP_HEADER_SIZE)
		return -EINVAL;
	size_t payload = w->len - CP_HEADER_SIZE;
	if (payload > CP_MAX_PAYLOAD)
		return -EMSGSIZE;
	put_le32(w->buf, (uint32_t)payload);
	return 0;
}

/* ---- reader ---- */

int cp_next_field(struct cp_reader *r, struct cp_field *f)
{
	if (r->rem == 0)
		return 0;
	if (r->rem < 6)
		return -EBADMSG;
	uint16_t tag = get_le16(r->p);
	uint32_t len = get_le32(r->p + 2);
	if (len > r->rem - 6)
		return -EBADMSG;
	f->tag = tag;
	f->len = len;
	f->val = r->p + 6;
	r->p += 6 + (size_t)len;
	r->rem -= 6 + (size_t)len;
	return 1;
}

int cp_field_u32(const struct cp_field *f, uint32_t *v)
{
	if (f->len != 4)
		return -EBADMSG;
	*v = get_le32(f->val);
	return 0;
}

int cp_field_u64(const struct cp_field *f, uint64_t *v)
{
	if (f->len != 8)
		return -EBADMSG;
	*v = get_le64(f->val);
	return 0;
}

int cp_field_strdup(const struct cp_field *f, char **out)
{
	if (f->len > CP_MAX_STRING || memchr(f->val, '\0', f->len))
		return -EBADMSG;
	char *s = malloc((size_t)f->len + 1);
	if (!s)
		return -ENOMEM;
	memcpy(s, f->val, f->len);
	s[f->len] = '\0';
	*out = s;
	return 0;
}

/* Replace *slot with a fresh copy of the field; a repeated field keeps the last value. */
static int field_set_str(const struct cp_field *f, char **slot)
{
	char *s;
	int r = cp_field_strdup(f, &s);
	if (r < 0)
		return r;
	free(*slot);
	*slot = s;
	return 0;
}

int cp_field_set_str(const struct cp_field *f, char **slot)
{
	return field_set_str(f, slot);
}

static void strv_free(char **v, size_t n)
{
	if (!v)
		return;
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

/* Append a string field to a NULL-terminated vector, bounded by MAX entries. */
static int strv_push(char ***v, size_t *n, size_t max, const struct cp_field *f)
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
static int strv_terminate(char ***v)
{
	if (*v)
		return 0;
	*v = calloc(1, sizeof(char *));
	return *v ? 0 : -ENOMEM;
}

/* ---- messages ---- */

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

int cp_hello_encode(struct cp_writer *w, uint32_t chan, const struct cp_hello *m)
{
	cp_frame_begin(w, CP_HELLO, 0, chan);
	cp_put_u32(w, CP_T_HELLO_VERSION, m->version);
	cp_put_str(w, CP_T_HELLO_ROLE, m->role);
	return cp_frame_finish(w);
}

int cp_hello_decode(const uint8_t *p, size_t n, struct cp_hello *m)
{
	int ret = 0;
	memset(m, 0, sizeof(*m));
	bool have_version = false;
	DECODE_LOOP(p, n, {
		if (f.tag == CP_T_HELLO_VERSION) {
			r = cp_field_u32(&f, &m->version);
			have_version = true;
		} else if (f.tag == CP_T_HELLO_ROLE) {
			r = field_set_str(&f, &m->role);
		}
	});
	if (!have_version) {
		ret = -EBADMSG;
		goto fail;
	}
	return 0;
fail:
	cp_hello_free(m);
	return ret;
}

void cp_hello_free(struct cp_hello *m)
{
	free(m->role);
	m->role = NULL;
}

int cp_error_encode(struct cp_writer *w, uint32_t chan, const struct cp_error_msg *m)
{
	cp_frame_begin(w, CP_ERROR, 0, chan);
	cp_put_u32(w, CP_T_ERROR_ERRNO, m->errnum);
	cp_put_str(w, CP_T_ERROR_MESSAGE, m->message);
	return cp_frame_finish(w);
}

/* An error message is shown to people, and it may come from inside the sandbox: control
 * bytes become \xNN so it stays one line and carries no terminal escapes. */
static int sanitize_line(char **s)
{
	size_t n = 0;
	for (const char *c = *s; *c; c++)
		n += ((unsigned char)*c < 0x20 || *c == 0x7f) ? 4 : 1;
	if (n == strlen(*s))
		return 0;
	char *out = malloc(n + 1), *o = out;
	if (!out)
		return -ENOMEM;
	for (const char *c = *s; *c; c++) {
		unsigned char u = (unsigned char)*c;
		if (u < 0x20 || u == 0x7f) {
			static const char hex[] = "0123456789abcdef";
			*o++ = '\\';
			*o++ = 'x';
			*o++ = hex[u >> 4];
			*o++ = hex[u & 15];
		} else {
			*o++ = (char)u;
		}
	}
	*o = '\0';
	free(*s);
	*s = out;
	return 0;
}

int cp_error_decode(const uint8_t *p, size_t n, struct cp_error_msg *m)
{
	int ret = 0;
	memset(m, 0, sizeof(*m));
	DECODE_LOOP(p, n, {
		if (f.tag == CP_T_ERROR_ERRNO)
			r = cp_field_u32(&f, &m->errnum);
		else if (f.tag == CP_T_ERROR_MESSAGE)
			r = field_set_str(&f, &m->message);
	});
	/* An errno outside the usual range would be meaningless to strerror and to callers. */
	if (m->errnum == 0 || m->errnum > 4095)
		m->errnum = EIO;
	if (m->message && (ret = sanitize_line(&m->message)) < 0)
		goto fail;
	return 0;
fail:
	cp_error_free(m);
	return ret;
}

void cp_error_free(struct cp_error_msg *m)
{
	free(m->message);
	m->message = NULL;
}

/* What the decoder would refuse is refused here already, with a reason the caller can show. */
static int strv_check(char *const *v, size_t max)
{
	size_t n = 0;
	for (; v && v[n]; n++)
		if (strlen(v[n]) > CP_MAX_STRING)
			return -E2BIG;
	return n > max ? -E2BIG : 0;
}

int cp_exec_encode(struct cp_writer *w, uint32_t chan, const struct cp_exec *m)
{
	int r;
	if ((r = strv_check(m->argv, CP_MAX_ARGS)) < 0 || (r = strv_check(m->env, CP_MAX_ENV)) < 0)
		return r;
	if (!m->argv || !m->argv[0] || m->rows > 0xffff || m->cols > 0xffff ||
	    (m->cwd && strlen(m->cwd) > CP_MAX_STRING) || (m->user && strlen(m->user) > CP_MAX_STRING))
		return -EINVAL;
	cp_frame_begin(w, CP_EXEC, 0, chan);
	for (size_t i = 0; m->argv && m->argv[i]; i++)
		cp_put_str(w, CP_T_EXEC_ARG, m->argv[i]);
	for (size_t i = 0; m->env && m->env[i]; i++)
		cp_put_str(w, CP_T_EXEC_ENV, m->env[i]);
	cp_put_str(w, CP_T_EXEC_CWD, m->cwd);
	cp_put_str(w, CP_T_EXEC_USER, m->user);
	cp_put_u32(w, CP_T_EXEC_FLAGS, m->flags);
	if (m->rows)
		cp_put_u32(w, CP_T_EXEC_ROWS, m->rows);
	if (m->cols)
		cp_put_u32(w, CP_T_EXEC_COLS, m->cols);
	if (m->timeout_ms)
		cp_put_u32(w, CP_T_EXEC_TIMEOUT_MS, m->timeout_ms);
	return cp_frame_finish(w);
}

int cp_exec_decode(const uint8_t *p, size_t n, struct cp_exec *m)
{
	int ret = 0;
	memset(m, 0, sizeof(*m));
	DECODE_LOOP(p, n, {
		switch (f.tag) {
		case CP_T_EXEC_ARG: r = strv_push(&m->argv, &m->argc, CP_MAX_ARGS, &f); break;
		case CP_T_EXEC_ENV: r = strv_push(&m->env, &m->envc, CP_MAX_ENV, &f); break;
		case CP_T_EXEC_CWD: r = field_set_str(&f, &m->cwd); break;
		case CP_T_EXEC_USER: r = field_set_str(&f, &m->user); break;
		case CP_T_EXEC_FLAGS: r = cp_field_u32(&f, &m->flags); break;
		case CP_T_EXEC_ROWS: r = cp_field_u32(&f, &m->rows); break;
		case CP_T_EXEC_COLS: r = cp_field_u32(&f, &m->cols); break;
		case CP_T_EXEC_TIMEOUT_MS: r = cp_field_u32(&f, &m->timeout_ms); break;
		}
	});
	if (m->argc == 0 || m->rows > 0xffff || m->cols > 0xffff) {
		ret = -EBADMSG;
		goto fail;
	}
	if ((ret = strv_terminate(&m->env)) < 0)
		goto fail;
	return 0;
fail:
	cp_exec_free(m);
	return ret;
}

void cp_exec_free(struct cp_exec *m)
{
	strv_free(m->argv, m->argc);
	strv_free(m->env, m->envc);
	free(m->cwd);
	free(m->user);
	memset(m, 0, sizeof(*m));
}

/* Messages made only of u32 fields share one encoder and decoder, driven by a table of
 * (tag, offset) pairs. */
struct u32_field_desc {
	uint16_t tag;
	size_t offset;
	bool required;
};

static int u32_msg_encode(struct cp_writer *w, uint16_t type, uint32_t chan, const void *m,
			  const struct u32_field_desc *d, size_t nd)
{
	cp_frame_begin(w, type, 0, chan);
	for (size_t i = 0; i < nd; i++)
		cp_put_u32(w, d[i].tag, *(const uint32_t *)((const uint8_t *)m + d[i].offset));
	return cp_frame_finish(w);
}

static int u32_msg_decode(const uint8_t *p, size_t n, void *m, size_t msize, const struct u32_field_desc *d,
			  size_t nd)
{
	int ret = 0;
	uint32_t seen = 0;
	memset(m, 0, msize);
	DECODE_LOOP(p, n, {
		for (size_t i = 0; i < nd; i++) {
			if (f.tag == d[i].tag) {
				r = cp_field_u32(&f, (uint32_t *)((uint8_t *)m + d[i].offset));
				seen |= 1u << i;
			}
		}
	});
	for (size_t i = 0; i < nd; i++) {
		if (d[i].required && !(seen & (1u << i))) {
			ret = -EBADMSG;
			goto fail;
		}
	}
	return 0;
fail:
	memset(m, 0, msize);
	return ret;
}

#define U32_MSG(name, TYPE, ...)                                                                     \
	static const struct u32_field_desc name##_fields[] = { __VA_ARGS__ };                        \
	int cp_##name##_encode(struct cp_writer *w, uint32_t chan, const struct cp_##name *m)        \
	{                                                                                            \
		return u32_msg_encode(w, TYPE, chan, m, name##_fields, ARRAY_LEN(name##_fields));    \
	}                                                                                            \
	int cp_##name##_decode(const uint8_t *p, size_t n, struct cp_##name *m)                      \
	{                                                                                            \
		return u32_msg_decode(p, n, m, sizeof(*m), name##_fields, ARRAY_LEN(name##_fields)); \
	}

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define F(msg, tag, member, req) { tag, offsetof(struct cp_##msg, member), req }

U32_MSG(started, CP_STARTED, F(started, CP_T_STARTED_PID, pid, true))
U32_MSG(credit, CP_CREDIT, F(credit, CP_T_CREDIT_STREAM, stream, true), F(credit, CP_T_CREDIT_BYTES, bytes, true))
U32_MSG(exit, CP_EXIT, F(exit, CP_T_EXIT_CODE, exit_code, true), F(exit, CP_T_EXIT_SIGNAL, signal, false),
	F(exit, CP_T_EXIT_TIMED_OUT, timed_out, false))
U32_MSG(signal, CP_SIGNAL, F(signal, CP_T_SIGNAL_SIGNO, signo, true), F(signal, CP_T_SIGNAL_PID, pid, false))
U32_MSG(resize, CP_RESIZE, F(resize, CP_T_RESIZE_ROWS, rows, true), F(resize, CP_T_RESIZE_COLS, cols, true))
U32_MSG(stop, CP_STOP, F(stop, CP_T_STOP_TIMEOUT_MS, timeout_ms, false))

int cp_init_encode(struct cp_writer *w, uint32_t chan, const struct cp_init *m)
{
	cp_frame_begin(w, CP_INIT, 0, chan);
	if (m->seccomp_len)
		cp_put_bytes(w, CP_T_INIT_SECCOMP, m->seccomp_bpf, m->seccomp_len);
	for (size_t i = 0; m->env && m->env[i]; i++)
		cp_put_str(w, CP_T_INIT_ENV, m->env[i]);
	cp_put_u64(w, CP_T_INIT_CAP_KEEP, m->cap_keep);
	cp_put_u32(w, CP_T_INIT_FLAGS, m->flags);
	return cp_frame_finish(w);
}

int cp_init_decode(const uint8_t *p, size_t n, struct cp_init *m)
{
	int ret = 0;
	memset(m, 0, sizeof(*m));
	DECODE_LOOP(p, n, {
		switch (f.tag) {
		case CP_T_INIT_SECCOMP:
			if (f.len == 0 || f.len % 8 || f.len > CP_MAX_SECCOMP_BYTES || m->seccomp_bpf) {
				r = -EBADMSG;
				break;
			}
			m->seccomp_bpf = malloc(f.len);
			if (!m->seccomp_bpf) {
				r = -ENOMEM;
				break;
			}
			memcpy(m->seccomp_bpf, f.val, f.len);
			m->seccomp_len = f.len;
			break;
		case CP_T_INIT_ENV: r = strv_push(&m->env, &m->envc, CP_MAX_ENV, &f); break;
		case CP_T_INIT_CAP_KEEP: r = cp_field_u64(&f, &m->cap_keep); break;
		case CP_T_INIT_FLAGS: r = cp_field_u32(&f, &m->flags); break;
		}
	});
	if ((ret = strv_terminate(&m->env)) < 0)
		goto fail;
	return 0;
fail:
	cp_init_free(m);
	return ret;
}

void cp_init_free(struct cp_init *m)
{
	free(m->seccomp_bpf);
	strv_free(m->env, m->envc);
	memset(m, 0, sizeof(*m));
}

/* ---- hot mounts ---- */

static bool str_fits(const char *s, size_t max)
{
	return !s || strlen(s) <= max;
}

int cp_mount_encode(struct cp_writer *w, uint32_t chan, const struct cp_mount *m)
{
	if (!m->host_path || !m->guest_path || !str_fits(m->host_path, CP_MAX_STRING) ||
	    !str_fits(m->guest_path, CP_MAX_STRING) || (m->flags & ~CP_MOUNT_FLAGS_KNOWN))
		return -EINVAL;
	cp_frame_begin(w, CP_MOUNT, 0, chan);
	cp_put_str(w, CP_T_MOUNT_HOST_PATH, m->host_path);
	cp_put_str(w, CP_T_MOUNT_GUEST_PATH, m->guest_path);
	cp_put_u32(w, CP_T_MOUNT_FLAGS, m->flags);
	return cp_frame_finish(w);
}

int cp_mount_decode(const uint8_t *p, size_t n, struct cp_mount *m)
{
	int ret = 0;
	memset(m, 0, sizeof(*m));
	DECODE_LOOP(p, n, {
		switch (f.tag) {
		case CP_T_MOUNT_HOST_PATH: r = field_set_str(&f, &m->host_path); break;
		case CP_T_MOUNT_GUEST_PATH: r = field_set_str(&f, &m->guest_path); break;
		case CP_T_MOUNT_FLAGS: r = cp_field_u32(&f, &m->flags); break;
		}
	});
	/* A flag this side does not know could be a restriction the client counts on. */
	if (!m->host_path || !m->guest_path || (m->flags & ~CP_MOUNT_FLAGS_KNOWN)) {
		ret = -EBADMSG;
		goto fail;
	}
	return 0;
fail:
	cp_mount_free(m);
	return ret;
}

void cp_mount_free(struct cp_mount *m)
{
	free(m->host_path);
	free(m->guest_path);
	memset(m, 0, sizeof(*m));
}

int cp_unmount_encode(struct cp_writer *w, uint32_t chan, const struct cp_unmount *m)
{
	if (!m->target || !str_fits(m->target, CP_MAX_STRING))
		return -EINVAL;
	cp_frame_begin(w, CP_UNMOUNT, 0, chan);
	cp_put_str(w, CP_T_UNMOUNT_TARGET, m->target);
	return cp_frame_finish(w);
}

int cp_unmount_decode(const uint8_t *p, size_t n, struct cp_unmount *m)
{
	int ret = 0;
	memset(m, 0, sizeof(*m));
	DECODE_LOOP(p, n, {
		if (f.tag == CP_T_UNMOUNT_TARGET)
			r = field_set_str(&f, &m->target);
	});
	if (!m->target) {
		ret = -EBADMSG;
		goto fail;
	}
	return 0;
fail:
	cp_unmount_free(m);
	return ret;
}

void cp_unmount_free(struct cp_unmount *m)
{
	free(m->target);
	m->target = NULL;
}

int cp_save_encode(struct cp_writer *w, uint32_t chan, const struct cp_save *m)
{
	if (!m->name || !str_fits(m->name, CP_MAX_SAVE_NAME) || m->op < CP_SAVE_OP_SAVE || m->op > CP_SAVE_OP_FORK)
		return -EINVAL;
	cp_frame_begin(w, CP_SAVE, 0, chan);
	cp_put_u32(w, CP_T_SAVE_OP, m->op);
	cp_put_str(w, CP_T_SAVE_NAME, m->name);
	return cp_frame_finish(w);
}

int cp_save_decode(const uint8_t *p, size_t n, struct cp_save *m)
{
	int ret = 0;
	memset(m, 0, sizeof(*m));
	DECODE_LOOP(p, n, {
		if (f.tag == CP_T_SAVE_OP)
			r = cp_field_u32(&f, &m->op);
		else if (f.tag == CP_T_SAVE_NAME)
			r = field_set_str(&f, &m->name);
	});
	if (!m->name || strlen(m->name) > CP_MAX_SAVE_NAME || m->op < CP_SAVE_OP_SAVE || m->op > CP_SAVE_OP_FORK) {
		ret = -EBADMSG;
		goto fail;
	}
	return 0;
fail:
	cp_save_free(m);
	return ret;
}

void cp_save_free(struct cp_save *m)
{
	free(m->name);
	m->name = NULL;
}

int cp_mount_ok_encode(struct cp_writer *w, uint32_t chan, const struct cp_mount_ok *m)
{
	if (!str_fits(m->handle, CP_MAX_MOUNT_HANDLE) || !str_fits(m->mounts_json, CP_MAX_MOUNTS_JSON))
		return -EINVAL;
	cp_frame_begin(w, CP_OK, 0, chan);
	cp_put_str(w, CP_T_MOUNT_OK_HANDLE, m->handle);
	cp_put_str(w, CP_T_MOUNT_OK_MOUNTS_JSON, m->mounts_json);
	return cp_frame_finish(w);
}

/* The list is one string of up to CP_MAX_MOUNTS_JSON bytes: longer than a path may be, so it
 * has a bound of its own instead of CP_MAX_STRING. */
static int field_set_long_str(const struct cp_field *f, size_t max, char **slot)
{
	if (f->len > max || memchr(f->val, '\0', f->len))
		return -EBADMSG;
	char *s = malloc((size_t)f->len + 1);
	if (!s)
		return -ENOMEM;
	memcpy(s, f->val, f->len);
	s[f->len] = '\0';
	free(*slot);
	*slot = s;
	return 0;
}

int cp_mount_ok_decode(const uint8_t *p, size_t n, struct cp_mount_ok *m)
{
	int ret = 0;
	memset(m, 0, sizeof(*m));
	DECODE_LOOP(p, n, {
		if (f.tag == CP_T_MOUNT_OK_HANDLE)
			r = field_set_long_str(&f, CP_MAX_MOUNT_HANDLE, &m->handle);
		else if (f.tag == CP_T_MOUNT_OK_MOUNTS_JSON)
			r = field_set_long_str(&f, CP_MAX_MOUNTS_JSON, &m->mounts_json);
	});
	return 0;
fail:
	cp_mount_ok_free(m);
	return ret;
}

void cp_mount_ok_free(struct cp_mount_ok *m)
{
	free(m->handle);
	free(m->mounts_json);
	memset(m, 0, sizeof(*m));
}

/* ---- port forwards ---- */

static bool port_msg_valid(uint16_t type, const struct cp_port *m)
{
	bool add = type == CP_PORT_ADD;
	return m->host_ip && m->host_ip[0] && strlen(m->host_ip) <= CP_MAX_PORT_HOST_IP && m->host_port >= 1 &&
	       m->host_port <= 65535 && (add ? m->guest_port >= 1 && m->guest_port <= 65535 : m->guest_port == 0) &&
	       !(m->flags & ~CP_PORT_FLAGS_KNOWN);
}

int cp_port_encode(struct cp_writer *w, uint16_t type, uint32_t chan, const struct cp_port *m)
{
	if ((type != CP_PORT_ADD && type != CP_PORT_REMOVE) || !port_msg_valid(type, m))
		return -EINVAL;
	cp_frame_begin(w, type, 0, chan);
	cp_put_str(w, CP_T_PORT_HOST_IP, m->host_ip);
	cp_put_u32(w, CP_T_PORT_HOST_PORT, m->host_port);
	if (type == CP_PORT_ADD)
		cp_put_u32(w, CP_T_PORT_GUEST_PORT, m->guest_port);
	cp_put_u32(w, CP_T_PORT_FLAGS, m->flags);
	return cp_frame_finish(w);
}

int cp_port_decode(uint16_t type, const uint8_t *p, size_t n, struct cp_port *m)
{
	int ret = 0;
	memset(m, 0, sizeof(*m));
	DECODE_LOOP(p, n, {
		switch (f.tag) {
		case CP_T_PORT_HOST_IP: r = field_set_long_str(&f, CP_MAX_PORT_HOST_IP, &m->host_ip); break;
		case CP_T_PORT_HOST_PORT: r = cp_field_u32(&f, &m->host_port); break;
		case CP_T_PORT_GUEST_PORT: r = cp_field_u32(&f, &m->guest_port); break;
		case CP_T_PORT_FLAGS: r = cp_field_u32(&f, &m->flags); break;
		}
	});
	if ((type != CP_PORT_ADD && type != CP_PORT_REMOVE) || !port_msg_valid(type, m)) {
		ret = -EBADMSG;
		goto fail;
	}
	return 0;
fail:
	cp_port_free(m);
	return ret;
}

void cp_port_free(struct cp_port *m)
{
	free(m->host_ip);
	memset(m, 0, sizeof(*m));
}

/* ---- forwarded connections of a vm ---- */

int cp_fwd_connect_encode(struct cp_writer *w, uint32_t chan, const struct cp_fwd_connect *m)
{
	if (m->port < 1 || m->port > 65535)
		return -EINVAL;
	cp_frame_begin(w, CP_FWD_CONNECT, 0, chan);
	cp_put_u32(w, CP_T_FWD_CONNECT_PORT, m->port);
	return cp_frame_finish(w);
}

int cp_fwd_connect_decode(const uint8_t *p, size_t n, struct cp_fwd_connect *m)
{
	int ret = 0;
	memset(m, 0, sizeof(*m));
	DECODE_LOOP(p, n, {
		if (f.tag == CP_T_FWD_CONNECT_PORT)
			r = cp_field_u32(&f, &m->port);
	});
	if (m->port < 1 || m->port > 65535) {
		ret = -EBADMSG;
		goto fail;
	}
	return 0;
fail:
	memset(m, 0, sizeof(*m));
	return ret;
}

int cp_empty_encode(struct cp_writer *w, uint16_t type, uint32_t chan)
{
	cp_frame_begin(w, type, 0, chan);
	return cp_frame_finish(w);
}

int cp_data_encode(struct cp_writer *w, uint32_t chan, uint16_t stream, bool eof, const void *p, size_t n)
{
	if (n > CP_MAX_PAYLOAD) {
		w->len = 0;
		return w->err = -EMSGSIZE;
	}
	cp_frame_begin(w, CP_DATA, (uint16_t)((stream & CP_FLAG_STREAM_MASK) | (eof ? CP_FLAG_EOF : 0)), chan);
	uint8_t *d = writer_reserve(w, n);
	if (d && n)
		memcpy(d, p, n);
	return cp_frame_finish(w);
}

/* ---- rx buffer ---- */

void cp_rxbuf_init(struct cp_rxbuf *rx)
{
	memset(rx, 0, sizeof(*rx));
}

void cp_rxbuf_free(struct cp_rxbuf *rx)
{
	free(rx->buf);
	memset(rx, 0, sizeof(*rx));
}

long cp_rxbuf_fill(struct cp_rxbuf *rx, int fd)
{
	const size_t max = CP_HEADER_SIZE + CP_MAX_PAYLOAD;
	/* Compact lazily: consumed bytes are dropped only when room is needed. */
	if (rx->start > 0 && (rx->start == rx->len || rx->cap - rx->len < 16 * 1024)) {
		memmove(rx->buf, rx->buf + rx->start, rx->len - rx->start);
		rx->len -= rx->start;
		rx->start = 0;
	}
	size_t want = 64 * 1024;
	/* Grow to fit the frame at the front, never past one maximal frame. */
	if (rx->len - rx->start >= CP_HEADER_SIZE) {
		struct cp_header h;
		if (cp_header_decode(rx->buf + rx->start, rx->len - rx->start, &h) == 0 &&
		    CP_HEADER_SIZE + (size_t)h.len > want)
			want = CP_HEADER_SIZE + (size_t)h.len;
	}
	if (want > max)
		want = max;
	if (rx->cap < want) {
		uint8_t *nb = realloc(rx->buf, want);
		if (!nb)
			return -ENOMEM;
		rx->buf = nb;
		rx->cap = want;
	}
	if (rx->len == rx->cap)
		return -ENOBUFS;
	for (;;) {
		ssize_t n = read(fd, rx->buf + rx->len, rx->cap - rx->len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno == EWOULDBLOCK ? -EAGAIN : -errno;
		}
		rx->len += (size_t)n;
		return (long)n;
	}
}

int cp_rxbuf_peek(struct cp_rxbuf *rx, struct cp_header *hdr, const uint8_t **payload)
{
	size_t avail = rx->len - rx->start;
	if (avail < CP_HEADER_SIZE)
		return 0;
	int r = cp_header_decode(rx->buf + rx->start, avail, hdr);
	if (r < 0)
		return r;
	if (avail < CP_HEADER_SIZE + (size_t)hdr->len)
		return 0;
	*payload = rx->buf + rx->start + CP_HEADER_SIZE;
	return 1;
}

void cp_rxbuf_consume(struct cp_rxbuf *rx, const struct cp_header *hdr)
{
	size_t n = CP_HEADER_SIZE + (size_t)hdr->len;
	if (n >= rx->len - rx->start) {
		rx->start = rx->len = 0;
		return;
	}
	rx->start += n;
}

/* ---- filesystem ---- */

int cp_fs_encode(struct cp_writer *w, uint32_t chan, const struct cp_fs *m)
{
	if (!m->path || strlen(m->path) > CP_FS_PATH_MAX || (m->path2 && strlen(m->path2) > CP_FS_PATH_MAX))
		return -EINVAL;
	cp_frame_begin(w, CP_FS, 0, chan);
	cp_put_u32(w, CP_T_FS_OP, m->op);
	cp_put_str(w, CP_T_FS_PATH, m->path);
	cp_put_str(w, CP_T_FS_PATH2, m->path2);
	if (m->flags)
		cp_put_u32(w, CP_T_FS_FLAGS, m->flags);
	if (m->mode)
		cp_put_u32(w, CP_T_FS_MODE, m->mode);
	return cp_frame_finish(w);
}

int cp_fs_decode(const uint8_t *p, size_t n, struct cp_fs *m)
{
	int ret = 0;
	memset(m, 0, sizeof(*m));
	DECODE_LOOP(p, n, {
		switch (f.tag) {
		case CP_T_FS_OP: r = cp_field_u32(&f, &m->op); break;
		case CP_T_FS_PATH: r = field_set_str(&f, &m->path); break;
		case CP_T_FS_PATH2: r = field_set_str(&f, &m->path2); break;
		case CP_T_FS_FLAGS: r = cp_field_u32(&f, &m->flags); break;
		case CP_T_FS_MODE: r = cp_field_u32(&f, &m->mode); break;
		}
	});
	if (m->op < CP_FS_STAT || m->op > CP_FS_SYMLINK || !m->path || strlen(m->path) > CP_FS_PATH_MAX ||
	    (m->path2 && strlen(m->path2) > CP_FS_PATH_MAX) ||
	    ((m->op == CP_FS_RENAME || m->op == CP_FS_SYMLINK) && !m->path2) || m->mode > 07777) {
		ret = -EBADMSG;
		goto fail;
	}
	return 0;
fail:
	cp_fs_free(m);
	return ret;
}

void cp_fs_free(struct cp_fs *m)
{
	free(m->path);
	free(m->path2);
	memset(m, 0, sizeof(*m));
}

static void fs_entry_put(struct cp_writer *w, const struct cp_fs_entry *m)
{
	cp_put_str(w, CP_T_ENT_NAME, m->name);
	cp_put_u32(w, CP_T_ENT_KIND, m->kind);
	cp_put_u64(w, CP_T_ENT_SIZE, m->size);
	cp_put_u32(w, CP_T_ENT_MODE, m->mode);
	cp_put_u64(w, CP_T_ENT_MTIME_NS, (uint64_t)m->mtime_ns);
	cp_put_u32(w, CP_T_ENT_UID, m->uid);
	cp_put_u32(w, CP_T_ENT_GID, m->gid);
	cp_put_str(w, CP_T_ENT_LINK, m->link);
}

int cp_fs_entry_encode_ok(struct cp_writer *w, uint32_t chan, const struct cp_fs_entry *m)
{
	cp_frame_begin(w, CP_OK, 0, chan);
	fs_entry_put(w, m);
	return cp_frame_finish(w);
}

static bool fs_name_ok(const char *s)
{
	return s[0] && strlen(s) <= CP_FS_NAME_MAX && !strchr(s, '/') && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

static int fs_entry_decode(const uint8_t *p, size_t n, struct cp_fs_entry *m, bool root_ok);

int cp_fs_entry_decode(const uint8_t *p, size_t n, struct cp_fs_entry *m)
{
	/* STAT of "/" names the root folder "/"; a LIST record never may. */
	return fs_entry_decode(p, n, m, true);
}

static int fs_entry_decode(const uint8_t *p, size_t n, struct cp_fs_entry *m, bool root_ok)
{
	int ret = 0;
	uint64_t mtime = 0;
	memset(m, 0, sizeof(*m));
	DECODE_LOOP(p, n, {
		switch (f.tag) {
		case CP_T_ENT_NAME: r = field_set_str(&f, &m->name); break;
		case CP_T_ENT_KIND: r = cp_field_u32(&f, &m->kind); break;
		case CP_T_ENT_SIZE: r = cp_field_u64(&f, &m->size); break;
		case CP_T_ENT_MODE: r = cp_field_u32(&f, &m->mode); break;
		case CP_T_ENT_MTIME_NS: r = cp_field_u64(&f, &mtime); break;
		case CP_T_ENT_UID: r = cp_field_u32(&f, &m->uid); break;
		case CP_T_ENT_GID: r = cp_field_u32(&f, &m->gid); break;
		case CP_T_ENT_LINK: r = field_set_str(&f, &m->link); break;
		}
	});
	m->mtime_ns = (int64_t)mtime;
	if (!m->name || !(fs_name_ok(m->name) || (root_ok && strcmp(m->name, "/") == 0)) || m->kind < CP_FS_KIND_FILE || m->kind > CP_FS_KIND_OTHER ||
	    m->mode > 07777 || (m->link && (m->kind != CP_FS_KIND_SYMLINK || strlen(m->link) > CP_FS_PATH_MAX))) {
		ret = -EBADMSG;
		goto fail;
	}
	return 0;
fail:
	cp_fs_entry_free(m);
	return ret;
}

void cp_fs_entry_free(struct cp_fs_entry *m)
{
	free(m->name);
	free(m->link);
	memset(m, 0, sizeof(*m));
}

int cp_fs_record_append(struct cp_writer *w, const struct cp_fs_entry *m)
{
	size_t at = w->len;
	uint8_t *lenp = writer_reserve(w, 4);
	if (!lenp)
		return w->err;
	fs_entry_put(w, m);
	if (w->err)
		return w->err;
	put_le32(w->buf + at, (uint32_t)(w->len - at - 4));
	return 0;
}

int cp_fs_record_next(struct cp_reader *r, struct cp_fs_entry *m)
{
	/* Zeroed on every path, as the decoders leave it, so freeing it after any result is safe. */
	memset(m, 0, sizeof(*m));
	if (r->rem == 0)
		return 0;
	if (r->rem < 4)
		return -EBADMSG;
	uint32_t len = get_le32(r->p);
	if (len > r->rem - 4)
		return -EBADMSG;
	int k = fs_entry_decode(r->p + 4, len, m, false);
	if (k < 0)
		return k;
	r->p += 4 + (size_t)len;
	r->rem -= 4 + (size_t)len;
	return 1;
}

/* ---- vm mounts (shim <-> agent) ---- */

/* The agent opens NAME below the share's root: one component, never "." or "..". */
static bool vm_mount_name_ok(const char *s)
{
	size_t n = s ? strlen(s) : 0;
	return n > 0 && n <= CP_VM_MOUNT_NAME_MAX && !strchr(s, '/') && strcmp(s, ".") && strcmp(s, "..");
}

static bool vm_mount_valid(const struct cp_vm_mount *m)
{
	if (!m->target || m->target[0] != '/' || strlen(m->target) > CP_MAX_STRING || (m->flags & ~CP_VM_MOUNT_FLAGS_KNOWN))
		return false;
	if (m->kind == CP_VM_MOUNT_SHARE)
		return vm_mount_name_ok(m->name) && !m->size && !m->mode;
	if (m->kind == CP_VM_MOUNT_TMPFS)
		return !m->name && m->size > 0 && m->mode <= 07777 && !(m->flags & CP_VM_MOUNT_FILE);
	return false;
}

int cp_vm_mount_encode(struct cp_writer *w, uint32_t chan, const struct cp_vm_mount *m)
{
	if (!vm_mount_valid(m))
		return -EINVAL;
	cp_frame_begin(w, CP_VM_MOUNT, 0, chan);
	cp_put_u32(w, CP_T_VM_MOUNT_KIND, m->kind);
	if (m->name)
		cp_put_str(w, CP_T_VM_MOUNT_NAME, m->name);
	cp_put_str(w, CP_T_VM_MOUNT_TARGET, m->target);
	cp_put_u32(w, CP_T_VM_MOUNT_FLAGS, m->flags);
	if (m->kind == CP_VM_MOUNT_TMPFS) {
		cp_put_u64(w, CP_T_VM_MOUNT_SIZE, m->size);
		cp_put_u32(w, CP_T_VM_MOUNT_MODE, m->mode);
	}
	return cp_frame_finish(w);
}

int cp_vm_mount_decode(const uint8_t *p, size_t n, struct cp_vm_mount *m)
{
	int ret = 0;
	memset(m, 0, sizeof(*m));
	DECODE_LOOP(p, n, {
		switch (f.tag) {
		case CP_T_VM_MOUNT_KIND: r = cp_field_u32(&f, &m->kind); break;
		case CP_T_VM_MOUNT_NAME: r = field_set_str(&f, &m->name); break;
		case CP_T_VM_MOUNT_TARGET: r = field_set_str(&f, &m->target); break;
		case CP_T_VM_MOUNT_FLAGS: r = cp_field_u32(&f, &m->flags); break;
		case CP_T_VM_MOUNT_SIZE: r = cp_field_u64(&f, &m->size); break;
		case CP_T_VM_MOUNT_MODE: r = cp_field_u32(&f, &m->mode); break;
		}
	});
	if (!vm_mount_valid(m)) {
		ret = -EBADMSG;
		goto fail;
	}
	return 0;
fail:
	cp_vm_mount_free(m);
	return ret;
}

void cp_vm_mount_free(struct cp_vm_mount *m)
{
	free(m->name);
	free(m->target);
	memset(m, 0, sizeof(*m));
}

int cp_vm_unmount_encode(struct cp_writer *w, uint32_t chan, const struct cp_vm_unmount *m)
{
	if (!m->target || m->target[0] != '/' || !str_fits(m->target, CP_MAX_STRING) || !m->mnt_id)
		return -EINVAL;
	cp_frame_begin(w, CP_VM_UNMOUNT, 0, chan);
	cp_put_str(w, CP_T_VM_UNMOUNT_TARGET, m->target);
	cp_put_u64(w, CP_T_VM_UNMOUNT_MNT_ID, m->mnt_id);
	return cp_frame_finish(w);
}

int cp_vm_unmount_decode(const uint8_t *p, size_t n, struct cp_vm_unmount *m)
{
	int ret = 0;
	memset(m, 0, sizeof(*m));
	DECODE_LOOP(p, n, {
		if (f.tag == CP_T_VM_UNMOUNT_TARGET)
			r = field_set_str(&f, &m->target);
		else if (f.tag == CP_T_VM_UNMOUNT_MNT_ID)
			r = cp_field_u64(&f, &m->mnt_id);
	});
	if (!m->target || m->target[0] != '/' || !m->mnt_id) {
		ret = -EBADMSG;
		goto fail;
	}
	return 0;
fail:
	cp_vm_unmount_free(m);
	return ret;
}

void cp_vm_unmount_free(struct cp_vm_unmount *m)
{
	free(m->target);
	memset(m, 0, sizeof(*m));
}

int cp_vm_mounted_encode(struct cp_writer *w, uint32_t chan, const struct cp_vm_mounted *m)
{
	if (!m->mnt_id)
		return -EINVAL;
	cp_frame_begin(w, CP_VM_MOUNTED, 0, chan);
	cp_put_u64(w, CP_T_VM_MOUNTED_MNT_ID, m->mnt_id);
	return cp_frame_finish(w);
}

int cp_vm_mounted_decode(const uint8_t *p, size_t n, struct cp_vm_mounted *m)
{
	int ret = 0;
	memset(m, 0, sizeof(*m));
	DECODE_LOOP(p, n, {
		if (f.tag == CP_T_VM_MOUNTED_MNT_ID)
			r = cp_field_u64(&f, &m->mnt_id);
	});
	if (!m->mnt_id)
		return -EBADMSG;
	return 0;
fail:
	return ret;
}

/* ---- what an agent may answer ---- */

int cp_agent_reply_check(const struct cp_header *h, const uint8_t *payload)
{
	unsigned stream = h->flags & CP_FLAG_STREAM_MASK;
	bool numbers_only = h->type == CP_STARTED || h->type == CP_CREDIT || h->type == CP_EXIT;
	if (numbers_only && h->len > CP_MAX_AGENT_NUMBERS_PAYLOAD)
		return -EPROTO;
	switch (h->type) {
	case CP_DATA:
		return stream == CP_STREAM_STDOUT || stream == CP_STREAM_STDERR ? 0 : -EPROTO;
	case CP_STARTED: {
		struct cp_started m;
		return cp_started_decode(payload, h->len, &m) == 0 ? 0 : -EPROTO;
	}
	case CP_CREDIT: {
		struct cp_credit m;
		return cp_credit_decode(payload, h->len, &m) == 0 && m.stream == CP_STREAM_STDIN ? 0 : -EPROTO;
	}
	case CP_EXIT: {
		struct cp_exit m;
		return cp_exit_decode(payload, h->len, &m) == 0 ? 0 : -EPROTO;
	}
	case CP_ERROR: {
		struct cp_error_msg m;
		if (cp_error_decode(payload, h->len, &m) < 0)
			return -EPROTO;
		cp_error_free(&m);
		return 0;
	}
	case CP_OK: {
		/* Bare, or an FS answer's entry. */
		if (h->len == 0)
			return 0;
		struct cp_fs_entry m;
		if (cp_fs_entry_decode(payload, h->len, &m) < 0)
			return -EPROTO;
		cp_fs_entry_free(&m);
		return 0;
	}
	default:
		return -EPROTO;
	}
}
