/* capsule-fuse's file data: every byte goes through the plugin's decode and encode at its
 * offset, so gaps a write or truncate leaves must read back as decoded zeros. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuse_server.h"

uint8_t *io_buf(size_t len)
{
	if (len > G.buf_cap) {
		uint8_t *b = realloc(G.buf, len);
		if (!b)
			return NULL;
		G.buf = b;
		G.buf_cap = len;
	}
	return G.buf;
}

/* The most a write or a truncate may grow a file by through encoded zeros, where the folder's
 * filesystem keeps no holes: past it, EFBIG. One truncate would otherwise have this server
 * write gigabytes on the host. */
#define GAP_FILL_MAX (64ull << 20)

/* Write the stored form of zeros over FROM..TO, so that it reads back as zeros through decode. */
static int fill_zeros(int fd, const char *path, uint64_t from, uint64_t to)
{
	while (from < to) {
		size_t n = to - from > IO_CHUNK ? IO_CHUNK : (size_t)(to - from);
		uint8_t *b = io_buf(n);
		if (!b)
			return -ENOMEM;
		memset(b, 0, n);
		int r = G.tf->encode(G.tf_ctx, path, from, b, n);
		if (r < 0)
			return r;
		ssize_t w = pwrite(fd, b, n, (off_t)from);
		if (w <= 0)
			return w < 0 ? -errno : -EIO;
		from += (uint64_t)w;
	}
	return 0;
}

static bool in_hole(int fd, uint64_t pos)
{
	off_t data = lseek(fd, (off_t)pos, SEEK_DATA);
	return data < 0 ? errno == ENXIO : (uint64_t)data != pos;
}

/* A file grows from its SIZE to END (a write there, or a truncate). A plain hole would decode
 * to keystream, so what the gap holds must read as zeros: where the filesystem keeps holes,
 * the gap stays one, and op_read gives zeros for it without decoding; only the parts of the
 * blocks at its edges that will hold data get encoded zeros (the rest of the block a write
 * lands in, the tail of the old last block). Elsewhere the gap is filled, up to GAP_FILL_MAX.
 * A gap costs the host what the sandbox stored, never more. */
static int grow_gap(int fd, const char *path, const struct stat *st, uint64_t end, bool data_at_end)
{
	uint64_t size = (uint64_t)st->st_size;
	if (end <= size)
		return 0;
	if (!G.holes)
		return end - size > GAP_FILL_MAX ? -EFBIG : fill_zeros(fd, path, size, end);
	uint64_t block = st->st_blksize > 0 ? (uint64_t)st->st_blksize : 4096;
	uint64_t old_block_end = (size + block - 1) / block * block;
	/* The old last block may itself lie in a hole (a shrink into one): all of it that the
	 * file will hold becomes data now, so its head gets encoded zeros too. */
	uint64_t from = size % block && in_hole(fd, size / block * block) ? size / block * block : size;
	int r = fill_zeros(fd, path, from, end < old_block_end ? end : old_block_end);
	uint64_t new_block_start = end / block * block;
	if (r == 0 && data_at_end && end > old_block_end && new_block_start >= old_block_end)
		r = fill_zeros(fd, path, new_block_start, end);
	return r;
}

/* A write of LEN bytes at OFF into a hole inside the file allocates whole blocks: the rest of
 * its first and last block would then be data holding plain zeros, which decode to keystream.
 * Those parts get encoded zeros first. (Holes are whole blocks, so one lseek tells.) */
static int fill_block_edges(int fd, const char *path, const struct stat *st, uint64_t off, uint64_t len)
{
	if (!G.holes)
		return 0;
	uint64_t size = (uint64_t)st->st_size, block = st->st_blksize > 0 ? (uint64_t)st->st_blksize : 4096;
	uint64_t head = off / block * block, tail = off + len;
	uint64_t tail_end = (tail + block - 1) / block * block;
	if (tail_end > size)
		tail_end = size;
	/* Both asked before either is filled: the two edges may share one block. */
	bool head_hole = head < off && head < size && in_hole(fd, head);
	bool tail_hole = tail < tail_end && in_hole(fd, tail);
	int r = head_hole ? fill_zeros(fd, path, head, off < size ? off : size) : 0;
	if (r == 0 && tail_hole)
		r = fill_zeros(fd, path, tail, tail_end);
	return r;
}

/* Whether the filesystem under FD reports holes: a fresh 1 MiB sparse file must start with one. */
bool folder_keeps_holes(int dirfd)
{
	int fd = openat(dirfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0)
		return false;
	bool holes = ftruncate(fd, 1 << 20) == 0 && lseek(fd, 0, SEEK_HOLE) == 0;
	close(fd);
	return holes;
}

/* Decode the N bytes read at OFF into B, giving zeros for the file's holes (op_read). */
static int decode_around_holes(int fd, const char *path, uint64_t off, uint8_t *b, size_t n)
{
	uint64_t pos = off, end = off + n;
	while (pos < end) {
		off_t data = G.holes ? lseek(fd, (off_t)pos, SEEK_DATA) : (off_t)pos;
		if (data < 0 && errno != ENXIO)
			return -errno;
		uint64_t data_at = data < 0 || (uint64_t)data > end ? end : (uint64_t)data;
		memset(b + (pos - off), 0, data_at - pos);
		pos = data_at;
		if (pos >= end)
			break;
		off_t hole = G.holes ? lseek(fd, (off_t)pos, SEEK_HOLE) : (off_t)end;
		uint64_t seg_end = hole < 0 || (uint64_t)hole > end ? end : (uint64_t)hole;
		int r = G.tf->decode(G.tf_ctx, path, pos, b + (pos - off), seg_end - pos);
		if (r < 0)
			return r;
		pos = seg_end;
	}
	return 0;
}

int set_size(struct node *n, struct fuse_file_info *fi, uint64_t size)
{
	int fd = fi ? ((struct handle *)(uintptr_t)fi->fh)->fd : node_reopen(n, O_WRONLY);
	if (fd < 0)
		return fd;
	struct stat st;
	int r = fstat(fd, &st) < 0 ? -errno : 0;
	if (r == 0 && size > (uint64_t)st.st_size) {
		char *path = fd_path(fd);
		r = path ? grow_gap(fd, path, &st, size, false) : -ENOMEM;
		free(path);
	}
	if (r == 0 && ftruncate(fd, (off_t)size) < 0)
		r = -errno;
	if (!fi)
		close(fd);
	return r;
}

/* O_APPEND is the kernel's business: it passes the offset of the file's end, and that offset
 * is what the transform must see, so the host file is never opened in append mode. */
static int io_flags(int flags)
{
	return flags & ~(O_APPEND | O_CREAT | O_EXCL | O_NOCTTY | O_NOFOLLOW | O_DIRECT);
}

static int handle_new(int fd, struct fuse_file_info *fi)
{
	struct handle *h = calloc(1, sizeof(*h));
	if (h)
		h->path = fd_path(fd);
	if (!h || !h->path) {
		free(h);
		close(fd);
		return -ENOMEM;
	}
	h->fd = fd;
	fi->fh = (uint64_t)(uintptr_t)h;
	fi->keep_cache = 0;
	fi->direct_io = 0;
	return 0;
}

void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct node *n = node_of(ino);
	struct stat st;
	int r = node_stat(n, &st);
	if (r == 0 && !S_ISREG(st.st_mode))
		r = -ENXIO; /* only regular files are served by the server */
	if (r == 0 && G.readonly && (fi->flags & O_ACCMODE) != O_RDONLY)
		r = -EROFS;
	if (r == 0 && (r = node_reopen(n, io_flags(fi->flags))) >= 0)
		r = handle_new(r, fi);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_open(req, fi);
}

/* An existing NAME, for a create without O_EXCL. Only a regular file is ever opened, not even
 * for a moment anything else: a fifo swapped in at the name (through a second route to the
 * folder) would block this single-threaded server in open, or leak a handle per try with
 * O_NONBLOCK, and opening a device has effects of its own. So the name is looked at through
 * an O_PATH handle first, and only a regular file is reopened through it. */
static int open_existing_regular(int dirfd, const char *name, int flags)
{
	int path = openat2_beneath(dirfd, name, O_PATH | O_NOFOLLOW, 0);
	if (path < 0)
		return path;
	struct stat st;
	int r = fstat(path, &st) < 0 ? -errno : 0;
	if (r == 0 && !S_ISREG(st.st_mode))
		r = -ENXIO; /* only regular files are served, as op_open says */
	if (r == 0) {
		char p[64];
		snprintf(p, sizeof(p), "/proc/self/fd/%d", path);
		if ((r = open(p, flags | O_CLOEXEC)) < 0)
			r = -errno;
	}
	close(path);
	return r;
}

void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, struct fuse_file_info *fi)
{
	if (refuse_change(req, name))
		return;
	struct node *p = node_of(parent);
	mode &= 07777 & ~(mode_t)(S_ISUID | S_ISGID);
	/* Only a file made here is chowned: one the host made meanwhile keeps its owner. */
	int fd = openat2_beneath(p->fd, name, io_flags(fi->flags) | O_CREAT | O_EXCL | O_NOFOLLOW, mode);
	bool made_here = fd >= 0;
	if (fd == -EEXIST && !(fi->flags & O_EXCL))
		fd = open_existing_regular(p->fd, name, io_flags(fi->flags));
	if (fd < 0) {
		fuse_reply_err(req, -fd);
		return;
	}
	int r = made_here ? own_for_caller(req, p->fd, fd) : 0;
	int pathfd = -1;
	if (r == 0) {
		char link[64];
		snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
		pathfd = open(link, O_PATH | O_CLOEXEC);
		if (pathfd < 0)
			r = -errno;
	}
	if (r == 0)
		r = handle_new(fd, fi);
	else
		close(fd);
	if (r < 0) {
		if (pathfd >= 0)
			close(pathfd);
		fuse_reply_err(req, -r);
		return;
	}
	reply_entry(req, pathfd, fi);
}

void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	(void)ino;
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	uint8_t *b = io_buf(size);
	if (!b) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	ssize_t n = pread(h->fd, b, size, off);
	if (n < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	int r = n ? decode_around_holes(h->fd, h->path, (uint64_t)off, b, (size_t)n) : 0;
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_buf(req, (const char *)b, (size_t)n);
}

void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
	      struct fuse_file_info *fi)
{
	(void)ino;
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	if (G.readonly) {
		fuse_reply_err(req, EROFS);
		return;
	}
	struct stat st;
	int r = fstat(h->fd, &st) < 0 ? -errno : 0;
	if (r == 0 && (uint64_t)off > (uint64_t)st.st_size)
		r = grow_gap(h->fd, h->path, &st, (uint64_t)off, true);
	if (r == 0)
		r = fill_block_edges(h->fd, h->path, &st, (uint64_t)off, size);
	uint8_t *b = r == 0 ? io_buf(size) : NULL;
	if (r == 0 && !b)
		r = -ENOMEM;
	if (r == 0) {
		memcpy(b, buf, size);
		r = G.tf->encode(G.tf_ctx, h->path, (uint64_t)off, b, size);
	}
	size_t done = 0;
	while (r == 0 && done < size) {
		ssize_t w = pwrite(h->fd, b + done, size - done, off + (off_t)done);
		if (w < 0)
			r = -errno;
		else if (w == 0)
			r = -EIO;
		else
			done += (size_t)w;
	}
	if (r < 0 && done == 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_write(req, done);
}

void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	fuse_reply_err(req, 0);
}

void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	close(h->fd);
	free(h->path);
	free(h);
	fuse_reply_err(req, 0);
}

void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	(void)ino;
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	int r = datasync ? fdatasync(h->fd) : fsync(h->fd);
	fuse_reply_err(req, r < 0 ? errno : 0);
}
