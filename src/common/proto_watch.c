/* WATCH (proto.h): a folder's changes streamed from inside the sandbox, and the event records
 * of its DATA payloads. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "proto_internal.h"

static bool path_ok(const char *p)
{
	return p && p[0] == '/' && strlen(p) <= CP_FS_PATH_MAX;
}

int cp_watch_encode(struct cp_writer *w, uint32_t chan, const struct cp_watch *m)
{
	if (!path_ok(m->path) || (m->flags & ~CP_WATCH_RECURSIVE))
		return -EINVAL;
	cp_frame_begin(w, CP_WATCH, 0, chan);
	cp_put_str(w, CP_T_WATCH_PATH, m->path);
	if (m->flags)
		cp_put_u32(w, CP_T_WATCH_FLAGS, m->flags);
	return cp_frame_finish(w);
}

int cp_watch_decode(const uint8_t *p, size_t n, struct cp_watch *m)
{
	int ret = 0;
	memset(m, 0, sizeof(*m));
	DECODE_LOOP(p, n, {
		if (f.tag == CP_T_WATCH_PATH)
			r = field_set_str(&f, &m->path);
		else if (f.tag == CP_T_WATCH_FLAGS)
			r = cp_field_u32(&f, &m->flags);
	});
	if (!path_ok(m->path) || (m->flags & ~CP_WATCH_RECURSIVE)) {
		ret = -EBADMSG;
		goto fail;
	}
	return 0;
fail:
	cp_watch_free(m);
	return ret;
}

void cp_watch_free(struct cp_watch *m)
{
	free(m->path);
	m->path = NULL;
}

static bool event_ok(const struct cp_watch_event *m)
{
	if (m->kind < CP_WATCH_CREATE || m->kind > CP_WATCH_OVERFLOW || m->is_dir > 1)
		return false;
	if (m->kind == CP_WATCH_OVERFLOW)
		return !m->path && !m->from;
	return path_ok(m->path) && (m->kind == CP_WATCH_MOVE ? path_ok(m->from) : !m->from);
}

int cp_watch_event_append(struct cp_writer *w, const struct cp_watch_event *m)
{
	if (!event_ok(m))
		return -EINVAL;
	size_t at;
	int r = record_begin(w, &at);
	if (r < 0)
		return r;
	cp_put_u32(w, CP_T_WEV_KIND, m->kind);
	if (m->path)
		cp_put_str(w, CP_T_WEV_PATH, m->path);
	if (m->from)
		cp_put_str(w, CP_T_WEV_FROM, m->from);
	cp_put_u64(w, CP_T_WEV_TIME, m->time_ns);
	if (m->is_dir)
		cp_put_u32(w, CP_T_WEV_DIR, m->is_dir);
	return record_end(w, at);
}

static int event_decode(const uint8_t *p, size_t n, struct cp_watch_event *m)
{
	int ret = 0;
	DECODE_LOOP(p, n, {
		if (f.tag == CP_T_WEV_KIND)
			r = cp_field_u32(&f, &m->kind);
		else if (f.tag == CP_T_WEV_PATH)
			r = field_set_str(&f, &m->path);
		else if (f.tag == CP_T_WEV_FROM)
			r = field_set_str(&f, &m->from);
		else if (f.tag == CP_T_WEV_TIME)
			r = cp_field_u64(&f, &m->time_ns);
		else if (f.tag == CP_T_WEV_DIR)
			r = cp_field_u32(&f, &m->is_dir);
	});
	if (!event_ok(m)) {
		ret = -EBADMSG;
		goto fail;
	}
	return 0;
fail:
	cp_watch_event_free(m);
	return ret;
}

int cp_watch_event_next(struct cp_reader *r, struct cp_watch_event *m)
{
	memset(m, 0, sizeof(*m));
	const uint8_t *body;
	size_t len;
	int k = record_peek(r, &body, &len);
	if (k <= 0)
		return k;
	if ((k = event_decode(body, len, m)) < 0)
		return k;
	record_skip(r, len);
	return 1;
}

void cp_watch_event_free(struct cp_watch_event *m)
{
	free(m->path);
	free(m->from);
	m->path = m->from = NULL;
}
