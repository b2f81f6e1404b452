/* The file routes of capsule serve: list, download (streamed), delete and upload (streamed,
 * chunk by chunk as libmicrohttpd hands the body over). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>

#include <microhttpd.h>

#include "api_internal.h"
#include "json.h"
#include "serve.h"
#include "util.h"

#define STREAM_BLOCK (64 * 1024)
/* A listing's answer is about 150 bytes an entry: the library's own bound (a million
 * entries) would let one request make the server hold 150 MB. */
#define LIST_ANSWER_MAX 65536

static const char *query(struct MHD_Connection *c, const char *key)
{
	return MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, key);
}

static bool query_flag(struct MHD_Connection *c, const char *key)
{
	const char *v = query(c, key);
	return v && (!strcmp(v, "1") || !strcmp(v, "true"));
}

static const char *file_path(struct MHD_Connection *c, struct request *rq)
{
	const char *p = query(c, "path");
	if (!p || !*p) {
		respond_error(c, rq, 400, "invalid_argument", "the query parameter 'path' is required");
		return NULL;
	}
	return p;
}

static const char *kind_name(capsule_fs_kind k)
{
	switch (k) {
	case CAPSULE_FS_FILE:
		return "file";
	case CAPSULE_FS_DIR:
		return "dir";
	case CAPSULE_FS_SYMLINK:
		return "symlink";
	default:
		return "other";
	}
}

void serve_write_time_ns(struct json_writer *w, const char *key, int64_t ns)
{
	char when[64];
	struct tm tm;
	time_t sec = (time_t)(ns / 1000000000);
	size_t len = strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", gmtime_r(&sec, &tm));
	snprintf(when + len, sizeof(when) - len, ".%09lldZ", (long long)(ns % 1000000000));
	json_kv_string(w, key, when);
}

void serve_write_listing(struct json_writer *w, const char *path, const capsule_fs_entry *v, size_t n, size_t max,
			 bool mtime_text)
{
	json_object_begin(w);
	json_kv_string(w, "path", path);
	json_kv_bool(w, "truncated", n > max);
	json_key(w, "entries");
	json_array_begin(w);
	for (size_t i = 0; i < n && i < max; i++) {
		json_object_begin(w);
		json_kv_string(w, "name", v[i].name);
		json_kv_string(w, "type", kind_name(v[i].kind));
		json_kv_uint(w, "size", v[i].size);
		json_kv_uint(w, "mode", v[i].mode);
		if (mtime_text) {
			serve_write_time_ns(w, "mtime", v[i].mtime_ns);
		} else {
			json_kv_int(w, "mtime_ns", v[i].mtime_ns);
		}
		json_kv_uint(w, "uid", v[i].uid);
		json_kv_uint(w, "gid", v[i].gid);
		if (v[i].link_target)
			json_kv_string(w, "link_target", v[i].link_target);
		json_object_end(w);
	}
	json_array_end(w);
	json_object_end(w);
}

static void handle_files_list(struct MHD_Connection *c, struct request *rq, const char *path)
{
	capsule_fs_entry *v;
	size_t n;
	capsule_error err = { 0 };
	if (capsule_fs_list(rq->e->sb, path, &v, &n, &err) < 0) {
		respond_capsule_error(c, rq, &err);
		return;
	}
	struct json_writer w;
	json_init(&w, false);
	serve_write_listing(&w, path, v, n, LIST_ANSWER_MAX, false);
	capsule_fs_entries_free(v, n);
	respond_json(c, rq, 200, json_steal(&w, NULL));
}

/* A download: the response pulls from the sandbox's stream as the client reads, so memory
 * stays one block whatever the file's size. */
struct download {
	struct sandbox_entry *e;
	capsule_fs_stream *s;
	char *first;
	size_t first_len, first_off;
};

static ssize_t download_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct download *d = cls;
	if (d->first_off < d->first_len) {
		size_t n = d->first_len - d->first_off;
		if (n > max)
			n = max;
		memcpy(buf, d->first + d->first_off, n);
		d->first_off += n;
		return (ssize_t)n;
	}
	ssize_t n = capsule_fs_stream_read(d->s, buf, max, NULL);
	if (n == 0)
		return MHD_CONTENT_READER_END_OF_STREAM;
	if (n < 0)
		return MHD_CONTENT_READER_END_WITH_ERROR;
	return n;
}

static void download_free(void *cls)
{
	struct download *d = cls;
	capsule_fs_stream_free(d->s);
	free(d->first);
	entry_unref(d->e);
	free(d);
}

void handle_files_get(struct MHD_Connection *c, struct request *rq)
{
	const char *path = file_path(c, rq);
	if (!path)
		return;
	if (query_flag(c, "list")) {
		handle_files_list(c, rq, path);
		return;
	}
	capsule_error err = { 0 };
	struct download *d = calloc(1, sizeof(*d));
	if (!d || !(d->first = malloc(STREAM_BLOCK))) {
		if (d)
			free(d);
		respond_json(c, rq, 500, NULL);
		return;
	}
	/* A path that cannot be read fails at the first read: read it before the status line. */
	ssize_t n = -1;
	if (capsule_fs_open_read(&d->s, rq->e->sb, path, &err) == 0)
		n = capsule_fs_stream_read(d->s, d->first, STREAM_BLOCK, &err);
	if (n < 0) {
		capsule_fs_stream_free(d->s);
		free(d->first);
		free(d);
		respond_capsule_error(c, rq, &err);
		return;
	}
	d->first_len = (size_t)n;
	pthread_mutex_lock(&serve_state.lock);
	rq->e->refs++;
	pthread_mutex_unlock(&serve_state.lock);
	d->e = rq->e;
	struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, STREAM_BLOCK, download_read, d,
								      download_free);
	if (!resp) {
		download_free(d);
		respond_json(c, rq, 500, NULL);
		return;
	}
	queue(c, rq, 200, resp, "application/octet-stream");
}

void handle_files_delete(struct MHD_Connection *c, struct request *rq)
{
	const char *path = file_path(c, rq);
	if (!path)
		return;
	capsule_error err = { 0 };
	unsigned flags = query_flag(c, "recursive") ? CAPSULE_FS_RECURSIVE : 0;
	if (capsule_fs_remove(rq->e->sb, path, flags, &err) < 0) {
		respond_capsule_error(c, rq, &err);
		return;
	}
	respond_json(c, rq, 200, strdup("{\"deleted\":true}"));
}

/* PUT: the stream was opened when the headers came (begin_upload) and took every chunk. */
void handle_files_put(struct MHD_Connection *c, struct request *rq)
{
	capsule_error err = { 0 };
	if (rq->upload_error) {
		respond_capsule_error(c, rq, &rq->upload_err);
		return;
	}
	capsule_fs_stream *s = steal_ptr(rq->upload);
	int r = capsule_fs_stream_close(s, &err);
	capsule_fs_stream_free(s);
	if (r < 0) {
		respond_capsule_error(c, rq, &err);
		return;
	}
	struct json_writer w;
	json_init(&w, false);
	json_object_begin(&w);
	json_kv_string(&w, "path", query(c, "path"));
	json_kv_uint(&w, "size", rq->upload_bytes);
	json_object_end(&w);
	respond_json(c, rq, 201, json_steal(&w, NULL));
}

bool begin_upload(struct MHD_Connection *c, struct request *rq)
{
	const char *path = file_path(c, rq);
	if (!path)
		return false;
	capsule_error err = { 0 };
	if (capsule_fs_open_write(&rq->upload, rq->e->sb, path, 0, CAPSULE_FS_PARENTS, &err) < 0) {
		respond_capsule_error(c, rq, &err);
		return false;
	}
	return true;
}

void upload_chunk(struct request *rq, const char *data, size_t len)
{
	if (rq->upload_error || !rq->upload)
		return;
	int r = capsule_fs_stream_write(rq->upload, data, len, &rq->upload_err);
	if (r < 0)
		rq->upload_error = r; /* the rest is read and dropped; the old file stays */
	else
		rq->upload_bytes += len;
}
