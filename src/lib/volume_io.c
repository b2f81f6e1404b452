/* A named volume's files read and written from the host (capsule volume write|read), with
 * no sandbox running: every path is resolved inside the volume's folder from its fd, and the
 * volume is held open (its shared lock) for the whole call. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "parse.h"
#include "syscalls.h"
#include "util.h"
#include "volume.h"

#define VOLUME_IO_CHUNK (256u << 10)

#define IN_VOLUME (RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)

/* PATH inside the volume, relative, lexically normalized (".." cannot climb past the top;
 * RESOLVE_IN_ROOT keeps symlinks in too). Empty for the volume's top. */
static int volume_rel_path(const char *name, const char *path, char **out, capsule_error *err)
{
	if (!path || !*path)
		return cap_err_plain(err, EINVAL, "volume '%s': empty path", name);
	size_t n = strlen(path);
	if (n > CAP_PATH_MAX)
		return cap_err_plain(err, ENAMETOOLONG, "volume '%s': path is too long (%zu bytes)", name, n);
	_cleanup_free_ char *abs = malloc(n + 3);
	if (!abs)
		return cap_err(err, ENOMEM, "volume path");
	snprintf(abs, n + 3, "%s%s", path[0] == '/' ? "" : "/", path);
	int r = normalize_abs_path(abs, abs, n + 3, err);
	if (r < 0)
		return cap_err_wrap(err, r, "volume '%s'", name);
	char *rel = strdup(abs + 1);
	if (!rel)
		return cap_err(err, ENOMEM, "volume path");
	*out = rel;
	return 0;
}

/* The folder that holds REL's last component, made (with its parents) when missing; every
 * step resolved inside the volume. *LEAF points into REL. */
static int open_parent(int data, const char *name, char *rel, bool create, int *out, const char **leaf,
		       capsule_error *err)
{
	char *slash = strrchr(rel, '/');
	*leaf = slash ? slash + 1 : rel;
	if (!slash) {
		int fd = fcntl(data, F_DUPFD_CLOEXEC, 3);
		if (fd < 0)
			return cap_err(err, errno, "dup");
		*out = fd;
		return 0;
	}
	*slash = '\0';
	int fd = sys_openat2(data, rel, O_PATH | O_DIRECTORY | O_CLOEXEC, IN_VOLUME);
	if (fd < 0 && errno == ENOENT && create) {
		/* One component at a time, each resolved from the top again. */
		for (char *p = rel;; p++) {
			if (*p != '/' && *p != '\0')
				continue;
			char saved = *p;
			*p = '\0';
			char *cut = strrchr(rel, '/');
			int parent = cut ? (*cut = '\0', sys_openat2(data, rel, O_PATH | O_DIRECTORY | O_CLOEXEC, IN_VOLUME))
					 : fcntl(data, F_DUPFD_CLOEXEC, 3);
			if (cut)
				*cut = '/';
			if (parent < 0) {
				int e = errno;
				*p = saved;
				*slash = '/';
				return cap_err(err, e, "volume '%s': open '/%s'", name, rel);
			}
			int mr = mkdirat(parent, cut ? cut + 1 : rel, 0755);
			int e = errno;
			close(parent);
			*p = saved;
			if (mr < 0 && e != EEXIST) {
				*slash = '/';
				return cap_err(err, e, "volume '%s': mkdir '/%s'", name, rel);
			}
			if (saved == '\0')
				break;
		}
		fd = sys_openat2(data, rel, O_PATH | O_DIRECTORY | O_CLOEXEC, IN_VOLUME);
	}
	int e = errno;
	*slash = '/';
	if (fd < 0)
		return cap_err(err, e, "volume '%s': open the folder of '/%s'", name, rel);
	*out = fd;
	return 0;
}

typedef ssize_t (*chunk_source)(void *payload, void *buf, size_t cap);

static int volume_write_impl(const char *name, const char *path, chunk_source src, void *payload,
			     capsule_error *err)
{
	_cleanup_free_ char *rel = NULL;
	int r = volume_rel_path(name, path, &rel, err);
	if (r < 0)
		return r;
	if (!rel[0])
		return cap_err_plain(err, EISDIR, "volume '%s': '%s' is the volume's top folder, not a file", name, path);
	struct volume_handle vh;
	if ((r = volume_open(name, &vh, err)) < 0)
		return r;
	_cleanup_close_ int parent = -1, fd = -1;
	const char *leaf;
	_cleanup_free_ void *buf = NULL;
	char tmp[64];
	bool linked = false;
	if ((r = open_parent(vh.data_fd, name, rel, true, &parent, &leaf, err)) < 0)
		goto out;
	snprintf(tmp, sizeof(tmp), ".capsule-write.%d.%lx", (int)getpid(), (unsigned long)now_ns());
	/* Unnamed until it is whole (O_TMPFILE), so a crash mid-write leaves nothing in the
	 * volume; where the filesystem cannot, a fresh name we create exclusively (no planted
	 * symlink can take the write elsewhere). The parent fd is O_PATH: *at calls take it. */
	fd = openat(parent, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0644);
	if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
		fd = openat(parent, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
		linked = fd >= 0;
	}
	if (fd < 0) {
		r = cap_err(err, errno, "volume '%s': create '%s'", name, path);
		goto out;
	}
	buf = malloc(VOLUME_IO_CHUNK);
	if (!buf) {
		r = cap_err(err, ENOMEM, "volume write buffer");
		goto out;
	}
	for (;;) {
		ssize_t n = src(payload, buf, VOLUME_IO_CHUNK);
		if (n < 0) {
			r = cap_err(err, (int)-n, "volume '%s': reading the data for '%s'", name, path);
			goto out;
		}
		if (n == 0)
			break;
		if ((r = write_all(fd, buf, (size_t)n)) < 0) {
			r = cap_err(err, -r, "volume '%s': write '%s'", name, path);
			goto out;
		}
	}
	if (!linked) {
		char self[64];
		snprintf(self, sizeof(self), "/proc/self/fd/%d", fd);
		if (linkat(fd, "", parent, tmp, AT_EMPTY_PATH) < 0 && linkat(AT_FDCWD, self, parent, tmp, AT_SYMLINK_FOLLOW) < 0) {
			r = cap_err(err, errno, "volume '%s': write '%s'", name, path);
			goto out;
		}
		linked = true;
	}
	/* Renamed over the target: a symlink there is replaced, not followed. */
	if (renameat(parent, tmp, parent, leaf) < 0) {
		r = cap_err(err, errno, "volume '%s': write '%s'", name, path);
		goto out;
	}
	linked = false;
	r = 0;
out:
	if (linked)
		unlinkat(parent, tmp, 0);
	volume_close(&vh);
	return r;
}

struct mem_source {
	const uint8_t *p;
	size_t left;
};

static ssize_t mem_chunk(void *payload, void *buf, size_t cap)
{
	struct mem_source *m = payload;
	size_t n = m->left < cap ? m->left : cap;
	memcpy(buf, m->p, n);
	m->p += n;
	m->left -= n;
	return (ssize_t)n;
}

static ssize_t fd_chunk(void *payload, void *buf, size_t cap)
{
	int fd = *(int *)payload;
	for (;;) {
		ssize_t n = read(fd, buf, cap);
		if (n >= 0)
			return n;
		if (errno != EINTR)
			return -errno;
	}
}

int capsule_volume_write(const char *name, const char *path, const void *data, size_t len, capsule_error *err)
{
	if (!data && len)
		return cap_err_plain(err, EINVAL, "volume write: no data");
	struct mem_source m = { data, len };
	return volume_write_impl(name, path, mem_chunk, &m, err);
}

int capsule_volume_write_from_fd(const char *name, const char *path, int fd, capsule_error *err)
{
	return volume_write_impl(name, path, fd_chunk, &fd, err);
}

typedef int (*chunk_sink)(void *payload, const void *buf, size_t len);

static int volume_read_impl(const char *name, const char *path, chunk_sink sink, void *payload, capsule_error *err)
{
	_cleanup_free_ char *rel = NULL;
	int r = volume_rel_path(name, path, &rel, err);
	if (r < 0)
		return r;
	struct volume_handle vh;
	if ((r = volume_open(name, &vh, err)) < 0)
		return r;
	/* Non-blocking open: a FIFO planted in the volume must not hang us; only regular files
	 * are read. */
	_cleanup_close_ int fd = sys_openat2(vh.data_fd, rel[0] ? rel : ".", O_RDONLY | O_NONBLOCK | O_CLOEXEC, IN_VOLUME);
	_cleanup_free_ void *buf = NULL;
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		r = cap_err(err, errno, "volume '%s': open '%s'", name, path);
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		r = cap_err_plain(err, S_ISDIR(st.st_mode) ? EISDIR : EINVAL, "volume '%s': '%s' is not a regular file",
				  name, path);
		goto out;
	}
	buf = malloc(VOLUME_IO_CHUNK);
	if (!buf) {
		r = cap_err(err, ENOMEM, "volume read buffer");
		goto out;
	}
	for (;;) {
		ssize_t n = read(fd, buf, VOLUME_IO_CHUNK);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = cap_err(err, errno, "volume '%s': read '%s'", name, path);
			goto out;
		}
		if (n == 0)
			break;
		if ((r = sink(payload, buf, (size_t)n)) < 0) {
			r = r == -EFBIG ? cap_err_plain(err, EFBIG, "volume '%s': '%s' is larger than the limit asked for",
							name, path)
					: cap_err(err, -r, "volume '%s': passing on '%s'", name, path);
			goto out;
		}
	}
	r = 0;
out:
	volume_close(&vh);
	return r;
}

struct mem_sink {
	uint8_t *p;
	size_t len, cap, max;
};

static int mem_put(void *payload, const void *buf, size_t len)
{
	struct mem_sink *m = payload;
	if (len > m->max - m->len)
		return -EFBIG;
	if (m->len + len + 1 > m->cap) {
		size_t cap = m->cap ? m->cap : 64 * 1024;
		while (cap < m->len + len + 1)
			cap *= 2;
		uint8_t *np = realloc(m->p, cap);
		if (!np)
			return -ENOMEM;
		m->p = np;
		m->cap = cap;
	}
	memcpy(m->p + m->len, buf, len);
	m->len += len;
	m->p[m->len] = 0;
	return 0;
}

static int fd_put(void *payload, const void *buf, size_t len)
{
	return write_all(*(int *)payload, buf, len);
}

int capsule_volume_read(void **out, size_t *out_len, const char *name, const char *path, size_t max_bytes,
			capsule_error *err)
{
	struct mem_sink m = { .max = max_bytes };
	int r = volume_read_impl(name, path, mem_put, &m, err);
	if (r < 0) {
		free(m.p);
		return r;
	}
	if (!m.p && !(m.p = calloc(1, 1)))
		return cap_err(err, ENOMEM, "volume read");
	*out = m.p;
	*out_len = m.len;
	return 0;
}

int capsule_volume_read_to_fd(const char *name, const char *path, int fd, capsule_error *err)
{
	return volume_read_impl(name, path, fd_put, &fd, err);
}
