/* The filesystem API (proto.h, docs/protocol.md): FS requests, the entries that answer them,
 * and LIST's records. Entry names from the agent are single components. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "proto_internal.h"

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
	size_t at;
	int r = record_begin(w, &at);
	if (r < 0)
		return r;
	fs_entry_put(w, m);
	return record_end(w, at);
}

int cp_fs_record_next(struct cp_reader *r, struct cp_fs_entry *m)
{
	/* Zeroed on every path, as the decoders leave it, so freeing it after any result is safe. */
	memset(m, 0, sizeof(*m));
	const uint8_t *body;
	size_t len;
	int k = record_peek(r, &body, &len);
	if (k <= 0)
		return k;
	if ((k = fs_entry_decode(body, len, m, false)) < 0)
		return k;
	record_skip(r, len);
	return 1;
}