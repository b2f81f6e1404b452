/* The C API of watches (docs/protocol.md, WATCH): a folder's changes streamed from the
 * sandbox's agent on a connection of the watch's own, one event at a time. The frame at the
 * front of the connection is handed out record by record and credit is granted back as
 * frames are used up, so memory stays at one window whatever the rate of changes; a reader
 * slower than the changes makes the agent stop reading, and the kernel's queue overflow
 * comes out as an overflow event. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "json.h"
#include "util.h"

#define WATCH_CHAN 1
#define CREDIT_BATCH (CP_INITIAL_WINDOW / 4)
/* STARTED comes once the agent watches every folder of the tree (8192 at most). */
#define WATCH_START_TIMEOUT_MS 60000

struct capsule_watch {
	struct conn c;
	bool ended;
	bool have_frame;
	struct cp_header h;
	struct cp_reader rd;
	uint32_t unacked;
};

static void grant(capsule_watch *w, bool all)
{
	if (w->unacked == 0 || (!all && w->unacked < CREDIT_BATCH))
		return;
	struct cp_credit m = { .stream = CP_STREAM_STDOUT, .bytes = w->unacked };
	if (cp_credit_encode(&w->c.w, WATCH_CHAN, &m) == 0 && conn_send(&w->c, NULL) == 0)
		w->unacked = 0;
}

int capsule_watch_start(capsule_sandbox *sb, const char *path, bool recursive, capsule_watch **out,
			capsule_error *err)
{
	if (!sb || !out)
		return cap_err_plain(err, EINVAL, "watch: no sandbox given");
	*out = NULL;
	if (!path || path[0] != '/')
		return cap_err_plain(err, EINVAL, "watch: '%s' is not an absolute path inside the sandbox", path ? path : "");
	if (strlen(path) > CAPSULE_FS_PATH_MAX)
		return cap_err_plain(err, ENAMETOOLONG, "watch: path is longer than %d bytes", CAPSULE_FS_PATH_MAX);
	capsule_watch *w = calloc(1, sizeof(*w));
	if (!w)
		return cap_err(err, ENOMEM, "watch");
	int r = conn_open(&w->c, capsule_sandbox_name(sb), err);
	if (r < 0) {
		free(w);
		return r;
	}
	struct cp_watch m = { .path = (char *)path, .flags = recursive ? CP_WATCH_RECURSIVE : 0 };
	if ((r = cp_watch_encode(&w->c.w, WATCH_CHAN, &m)) < 0)
		r = cap_err(err, -r, "encoding a watch request");
	else
		r = conn_send(&w->c, err);
	while (r == 0) {
		struct cp_header h;
		const uint8_t *payload;
		if ((r = conn_recv(&w->c, &h, &payload, WATCH_START_TIMEOUT_MS, err)) < 0)
			break;
		if (h.chan == WATCH_CHAN && h.type == CP_ERROR) {
			r = conn_error_from_frame(payload, h.len, err);
			break;
		}
		bool started = h.chan == WATCH_CHAN && h.type == CP_STARTED;
		conn_consume(&w->c, &h);
		if (started)
			break;
	}
	if (r < 0) {
		conn_close(&w->c);
		free(w);
		return r;
	}
	*out = w;
	return 0;
}

static const char *const kind_names[] = {
	[CP_WATCH_CREATE] = "create", [CP_WATCH_MODIFY] = "modify", [CP_WATCH_DELETE] = "delete",
	[CP_WATCH_MOVE] = "move",     [CP_WATCH_OVERFLOW] = "overflow",
};

static int event_json(const struct cp_watch_event *e, char **out, capsule_error *err)
{
	time_t secs = (time_t)(e->time_ns / 1000000000u);
	struct tm tm;
	char t[64], when[80];
	strftime(t, sizeof(t), "%Y-%m-%dT%H:%M:%S", gmtime_r(&secs, &tm));
	snprintf(when, sizeof(when), "%s.%06uZ", t, (unsigned)(e->time_ns % 1000000000u / 1000u));
	struct json_writer j;
	json_init(&j, false);
	json_object_begin(&j);
	json_kv_string(&j, "kind", kind_names[e->kind]);
	if (e->path)
		json_kv_string(&j, "path", e->path);
	if (e->from)
		json_kv_string(&j, "from", e->from);
	json_kv_string(&j, "time", when);
	json_kv_uint(&j, "time_ns", e->time_ns);
	if (e->kind != CP_WATCH_OVERFLOW)
		json_kv_bool(&j, "dir", e->is_dir != 0);
	json_object_end(&j);
	int je = 0;
	*out = json_steal(&j, &je);
	return *out ? 0 : cap_err(err, je ? -je : ENOMEM, "formatting a watch event");
}

int capsule_watch_next(capsule_watch *w, char **out_json, int timeout_ms, capsule_error *err)
{
	if (!w || !out_json)
		return cap_err_plain(err, EINVAL, "watch: no watch given");
	*out_json = NULL;
	for (;;) {
		if (w->have_frame) {
			struct cp_watch_event e;
			int k = cp_watch_event_next(&w->rd, &e);
			if (k > 0) {
				int r = event_json(&e, out_json, err);
				cp_watch_event_free(&e);
				return r < 0 ? r : 1;
			}
			if (k < 0)
				return cap_err_plain(err, EPROTO, "malformed watch event from the sandbox");
			w->unacked += w->h.len;
			conn_consume(&w->c, &w->h);
			w->have_frame = false;
			grant(w, false);
		}
		if (w->ended)
			return 0;
		struct cp_header h;
		const uint8_t *payload;
		int r = conn_recv(&w->c, &h, &payload, timeout_ms, err);
		if (r == -EAGAIN || r == -ETIMEDOUT) {
			capsule_error_clear(err);
			return -EAGAIN;
		}
		if (r < 0)
			return r;
		if (h.chan != WATCH_CHAN) {
			conn_consume(&w->c, &h);
			continue;
		}
		if (h.type == CP_DATA && (h.flags & CP_FLAG_STREAM_MASK) == CP_STREAM_STDOUT) {
			w->h = h;
			w->rd = (struct cp_reader){ .p = payload, .rem = h.len };
			w->have_frame = true;
			continue;
		}
		if (h.type == CP_ERROR) {
			r = conn_error_from_frame(payload, h.len, err);
			conn_consume(&w->c, &h);
			w->ended = true;
			return r;
		}
		if (h.type == CP_OK)
			w->ended = true;
		conn_consume(&w->c, &h);
	}
}

int capsule_watch_fd(const capsule_watch *w)
{
	return w ? w->c.fd : -1;
}

void capsule_watch_free(capsule_watch *w)
{
	if (!w)
		return;
	/* The connection's end cancels the watch: the shim tells the agent. */
	conn_close(&w->c);
	free(w);
}
