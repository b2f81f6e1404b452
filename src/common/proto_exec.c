/* Running commands (proto.h): EXEC, its streams' numbers (STARTED, CREDIT, EXIT, SIGNAL,
 * RESIZE), STOP, the agent's INIT, and what an agent may answer on a client's channel. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "proto_internal.h"

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
	if (m->ngroups > CP_EXEC_MAX_GROUPS || m->nrlimits > CP_EXEC_MAX_RLIMITS ||
	    (m->seccomp_len && (m->seccomp_len % 8 || m->seccomp_len > CP_MAX_SECCOMP_BYTES)))
		return -E2BIG;
	for (size_t i = 0; i < m->ngroups; i++)
		cp_put_u32(w, CP_T_EXEC_GROUP, m->groups[i]);
	if (m->caps_set) {
		cp_put_u64(w, CP_T_EXEC_CAPS, m->caps);
		cp_put_u64(w, CP_T_EXEC_CAPS_INHERITABLE, m->caps_inheritable);
		cp_put_u64(w, CP_T_EXEC_CAPS_AMBIENT, m->caps_ambient);
	}
	if (m->umask_set)
		cp_put_u32(w, CP_T_EXEC_UMASK, m->umask);
	if (m->oom_score_adj_set)
		cp_put_u32(w, CP_T_EXEC_OOM_SCORE_ADJ, m->oom_score_adj);
	for (size_t i = 0; i < m->nrlimits; i++) {
		uint8_t b[20];
		put_le32(b, m->rlimits[i].resource);
		put_le64(b + 4, m->rlimits[i].soft);
		put_le64(b + 12, m->rlimits[i].hard);
		cp_put_bytes(w, CP_T_EXEC_RLIMIT, b, sizeof(b));
	}
	if (m->seccomp_len)
		cp_put_bytes(w, CP_T_EXEC_SECCOMP, m->seccomp_bpf, m->seccomp_len);
	if (m->nfds > CP_EXEC_MAX_FDS)
		return -E2BIG;
	if (m->nfds)
		cp_put_u32(w, CP_T_EXEC_FDS, m->nfds);
	return cp_frame_finish(w);
}

static int exec_extra_field(struct cp_exec *m, const struct cp_field *f)
{
	switch (f->tag) {
	case CP_T_EXEC_GROUP:
		if (m->ngroups == CP_EXEC_MAX_GROUPS)
			return -EBADMSG;
		return cp_field_u32(f, &m->groups[m->ngroups++]);
	case CP_T_EXEC_CAPS:
		m->caps_set = true;
		return cp_field_u64(f, &m->caps);
	case CP_T_EXEC_CAPS_INHERITABLE:
		return cp_field_u64(f, &m->caps_inheritable);
	case CP_T_EXEC_CAPS_AMBIENT:
		return cp_field_u64(f, &m->caps_ambient);
	case CP_T_EXEC_UMASK:
		m->umask_set = true;
		return cp_field_u32(f, &m->umask) < 0 || m->umask > 0777 ? -EBADMSG : 0;
	case CP_T_EXEC_OOM_SCORE_ADJ:
		m->oom_score_adj_set = true;
		return cp_field_u32(f, &m->oom_score_adj) < 0 || m->oom_score_adj > 1000 ? -EBADMSG : 0;
	case CP_T_EXEC_RLIMIT:
		if (f->len != 20 || m->nrlimits == CP_EXEC_MAX_RLIMITS)
			return -EBADMSG;
		m->rlimits[m->nrlimits].resource = get_le32(f->val);
		m->rlimits[m->nrlimits].soft = get_le64(f->val + 4);
		m->rlimits[m->nrlimits].hard = get_le64(f->val + 12);
		m->nrlimits++;
		return 0;
	case CP_T_EXEC_FDS:
		return cp_field_u32(f, &m->nfds) < 0 || m->nfds == 0 || m->nfds > CP_EXEC_MAX_FDS ? -EBADMSG : 0;
	case CP_T_EXEC_SECCOMP:
		if (f->len == 0 || f->len % 8 || f->len > CP_MAX_SECCOMP_BYTES || m->seccomp_bpf)
			return -EBADMSG;
		if (!(m->seccomp_bpf = malloc(f->len)))
			return -ENOMEM;
		memcpy(m->seccomp_bpf, f->val, f->len);
		m->seccomp_len = f->len;
		return 0;
	}
	return 0;
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
		default: r = exec_extra_field(m, &f); break;
		}
	});
	if (m->argc == 0 || m->rows > 0xffff || m->cols > 0xffff ||
	    ((m->caps_inheritable | m->caps_ambient) & ~m->caps)) {
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
	free(m->seccomp_bpf);
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
U32_MSG(stop, CP_STOP, F(stop, CP_T_STOP_TIMEOUT_MS, timeout_ms, false), F(stop, CP_T_STOP_KEEP, keep, false),
	F(stop, CP_T_STOP_REMOVE, remove, false))

int cp_shutdown_encode(struct cp_writer *w, uint32_t chan, const struct cp_stop *m)
{
	return u32_msg_encode(w, CP_SHUTDOWN, chan, m, stop_fields, ARRAY_LEN(stop_fields));
}

int cp_take_encode(struct cp_writer *w, uint32_t chan, const struct cp_take *m)
{
	if (!m->name || !m->pool || !str_fits(m->name, CP_MAX_TAKE_NAME) || !str_fits(m->pool, CP_MAX_TAKE_NAME))
		return -EINVAL;
	cp_frame_begin(w, CP_TAKE, 0, chan);
	cp_put_str(w, CP_T_TAKE_NAME, m->name);
	cp_put_str(w, CP_T_TAKE_POOL, m->pool);
	cp_put_u32(w, CP_T_TAKE_DETACHED, m->detached);
	return cp_frame_finish(w);
}

int cp_take_decode(const uint8_t *p, size_t n, struct cp_take *m)
{
	int ret = 0;
	memset(m, 0, sizeof(*m));
	DECODE_LOOP(p, n, {
		switch (f.tag) {
		case CP_T_TAKE_NAME: r = f.len > CP_MAX_TAKE_NAME ? -EBADMSG : field_set_str(&f, &m->name); break;
		case CP_T_TAKE_POOL: r = f.len > CP_MAX_TAKE_NAME ? -EBADMSG : field_set_str(&f, &m->pool); break;
		case CP_T_TAKE_DETACHED: r = cp_field_u32(&f, &m->detached); break;
		}
	});
	if (!m->name || !m->pool) {
		ret = -EBADMSG;
		goto fail;
	}
	return 0;
fail:
	cp_take_free(m);
	return ret;
}

void cp_take_free(struct cp_take *m)
{
	free(m->name);
	free(m->pool);
	memset(m, 0, sizeof(*m));
}

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
