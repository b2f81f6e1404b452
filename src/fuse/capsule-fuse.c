/* capsule-fuse: serves one host folder to one sandbox through FUSE, passing every read and
 * write through a transform plugin (include/capsule_transform.h, docs/transforms.md).
 *
 *   capsule-fuse --plugin PATH --target GUEST --uid-base UID --gid-base GID --id-count N [--readonly]
 *
 * Started by capsule-shim, which made the FUSE mount, with:
 *   fd 3  the mount's /dev/fuse connection
 *   fd 4  the host folder to serve, O_PATH
 *   fd 5  a socket: the plugin's config string arrives on it (until EOF; kept off the command
 *         line, where every host user could read a key), and the helper answers "OK\n" once it
 *         serves, or "ERR <errno> <message>\n"
 *
 * Every host object is reached from the folder's fd: a name from the kernel is one component,
 * opened with openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS) from its parent's fd, never as a
 * path string from "/", and never following a symlink: the sandbox's kernel resolves symlinks
 * in the sandbox's own tree.
 *
 * Ids: the sandbox's ids 0..N-1 are host ids UID-BASE.., which is what the kernel shows this
 * server as the caller's uid. The server shows a file of host uid u (< N) as UID-BASE + u and
 * creates files for a caller UID-BASE + x as host uid x: the same mapping that an idmapped
 * bind mount gives (libfuse 3.14 cannot opt in to FUSE idmapped mounts; docs/architecture.md). */
#define FUSE_USE_VERSION 34

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <getopt.h>
#include <limits.h>
#include <linux/capability.h>
#include <linux/openat2.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#include "capsule_transform.h"

#define FUSE_FD 3
#define ROOT_FD 4
#define CTL_FD 5
#define IO_CHUNK (1u << 20)
#define CONFIG_MAX (64u << 10)

#ifndef SYS_fchmodat2
#define SYS_fchmodat2 452
#endif

struct node {
	struct node *next; /* hash chain */
	int fd;            /* O_PATH | O_NOFOLLOW */
	dev_t dev;
	ino_t ino;
	uint64_t nlookup;
};

struct handle {
	int fd;
	char *path; /* below the mount, for the plugin */
};

static struct {
	const struct capsule_transform_v1 *tf;
	void *tf_ctx;
	uid_t uid_base;
	gid_t gid_base;
	uint32_t id_count;
	uid_t host_uid_base; /* where the sandbox's ids 1.. lie on the host's disks */
	gid_t host_gid_base;
	uid_t owner_uid;
	gid_t owner_gid;
	bool readonly;
	/* The served folder's filesystem reports holes (SEEK_HOLE): gaps stay holes. */
	bool holes;
	struct node root;
	char root_path[PATH_MAX];
	size_t root_path_len;
	struct node **table;
	size_t table_size, nnodes;
	uint8_t *buf; /* one request at a time: the session loop is single threaded */
	size_t buf_cap;
} G;

/* ---- ids ---------------------------------------------------------------------------- */

/* Host ids as the sandbox's kernel ids, as capsule idmaps a bind (container.c,
 * container_host_folder_userns): the owner (the user who made the sandbox, this server's own
 * uid) is the sandbox's root, the sandbox's own host range is its ids 1.., and any other host
 * id is nobody's. So what sandbox root makes is the owner's, what its other users make lands
 * on ids no host user has, and no chown gives a file another host user's id. A container's
 * kernel ids are that host range itself (the two bases are equal); a vm's are the guest's
 * own, as QEMU passes them (the kernel base is 0). */
static uid_t uid_to_guest(uid_t host)
{
	if (host == G.owner_uid)
		return G.uid_base;
	return host > G.host_uid_base && host - G.host_uid_base < G.id_count ? G.uid_base + (host - G.host_uid_base)
									       : (uid_t)-1;
}

static gid_t gid_to_guest(gid_t host)
{
	if (host == G.owner_gid)
		return G.gid_base;
	return host > G.host_gid_base && host - G.host_gid_base < G.id_count ? G.gid_base + (host - G.host_gid_base)
									       : (gid_t)-1;
}

static int uid_to_host(uid_t kuid, uid_t *out)
{
	if (kuid < G.uid_base || kuid - G.uid_base >= G.id_count)
		return -EPERM;
	*out = kuid == G.uid_base ? G.owner_uid : G.host_uid_base + (kuid - G.uid_base);
	return 0;
}

static int gid_to_host(gid_t kgid, gid_t *out)
{
	if (kgid < G.gid_base || kgid - G.gid_base >= G.id_count)
		return -EPERM;
	*out = kgid == G.gid_base ? G.owner_gid : G.host_gid_base + (kgid - G.gid_base);
	return 0;
}

static void stat_to_guest(struct stat *st)
{
	st->st_uid = uid_to_guest(st->st_uid);
	st->st_gid = gid_to_guest(st->st_gid);
}

/* ---- nodes -------------------------------------------------------------------------- */

static size_t node_hash(dev_t dev, ino_t ino)
{
	uint64_t h = (uint64_t)ino * 0x9e3779b97f4a7c15ull ^ (uint64_t)dev;
	return (size_t)(h % G.table_size);
}

static struct node *node_of(fuse_ino_t ino)
{
	return ino == FUSE_ROOT_ID ? &G.root : (struct node *)(uintptr_t)ino;
}

static int table_grow(void)
{
	size_t size = G.table_size ? G.table_size * 2 : 1024;
	struct node **t = calloc(size, sizeof(*t));
	if (!t)
		return -ENOMEM;
	struct node **old = G.table;
	size_t old_size = G.table_size;
	G.table = t;
	G.table_size = size;
	for (size_t i = 0; i < old_size; i++) {
		for (struct node *n = old[i], *next; n; n = next) {
			next = n->next;
			size_t h = node_hash(n->dev, n->ino);
			n->next = t[h];
			t[h] = n;
		}
	}
	free(old);
	return 0;
}

/* The node for the object that FD (O_PATH, ours to give) names; one lookup counted. */
static int node_get(int fd, const struct stat *st, struct node **out)
{
	if (st->st_dev == G.root.dev && st->st_ino == G.root.ino) {
		close(fd);
		G.root.nlookup++;
		*out = &G.root;
		return 0;
	}
	if (G.nnodes + 1 > G.table_size && table_grow() < 0) {
		close(fd);
		return -ENOMEM;
	}
	size_t h = node_hash(st->st_dev, st->st_ino);
	for (struct node *n = G.table[h]; n; n = n->next) {
		if (n->dev == st->st_dev && n->ino == st->st_ino) {
			close(fd);
			n->nlookup++;
			*out = n;
			return 0;
		}
	}
	struct node *n = calloc(1, sizeof(*n));
	if (!n) {
		close(fd);
		return -ENOMEM;
	}
	*n = (struct node){ .next = G.table[h], .fd = fd, .dev = st->st_dev, .ino = st->st_ino, .nlookup = 1 };
	G.table[h] = n;
	G.nnodes++;
	*out = n;
	return 0;
}

static void node_forget(struct node *n, uint64_t count)
{
	if (n == &G.root)
		return;
	n->nlookup = count >= n->nlookup ? 0 : n->nlookup - count;
	if (n->nlookup)
		return;
	size_t h = node_hash(n->dev, n->ino);
	for (struct node **p = &G.table[h]; *p; p = &(*p)->next) {
		if (*p == n) {
			*p = n->next;
			break;
		}
	}
	close(n->fd);
	free(n);
	G.nnodes--;
}

/* ---- host access -------------------------------------------------------------------- */

static int openat2_beneath(int dirfd, const char *name, int flags, mode_t mode)
{
	struct open_how how = {
		.flags = (uint64_t)(flags | O_CLOEXEC),
		.mode = (flags & O_CREAT) ? mode : 0,
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
	};
	int fd = (int)syscall(SYS_openat2, dirfd, name, &how, sizeof(how));
	return fd < 0 ? -errno : fd;
}

/* The kernel sends single names; anything else is refused rather than resolved. */
static bool name_ok(const char *name)
{
	return name[0] && !strchr(name, '/') && strcmp(name, ".") && strcmp(name, "..");
}

/* Reopen a node's O_PATH handle for I/O. The path is this process's own fd link: it names an
 * object we already hold, so nothing the sandbox or the host renames can redirect it. */
static int node_reopen(const struct node *n, int flags)
{
	char p[64];
	snprintf(p, sizeof(p), "/proc/self/fd/%d", n->fd);
	int fd = open(p, flags | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

static int node_stat(const struct node *n, struct stat *st)
{
	return fstatat(n->fd, "", st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
}

/* The object's path below the served folder, "/"-rooted, for the plugin. */
static char *fd_path(int fd)
{
	char p[64], target[PATH_MAX];
	snprintf(p, sizeof(p), "/proc/self/fd/%d", fd);
	ssize_t l = readlink(p, target, sizeof(target) - 1);
	if (l < 0)
		return strdup("/");
	target[l] = '\0';
	const char *rel = target;
	if (!strncmp(target, G.root_path, G.root_path_len) &&
	    (target[G.root_path_len] == '/' || target[G.root_path_len] == '\0'))
		rel = target + G.root_path_len;
	return strdup(rel[0] ? rel : "/");
}

static uint8_t *io_buf(size_t len)
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
static bool folder_keeps_holes(int dirfd)
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

/* Take ownership of a just-made object for the caller of REQ, as an idmapped mount would. */
static int own_for_caller(fuse_req_t req, int parent_fd, int fd)
{
	const struct fuse_ctx *c = fuse_req_ctx(req);
	uid_t uid;
	gid_t gid;
	if (uid_to_host(c->uid, &uid) < 0 || gid_to_host(c->gid, &gid) < 0)
		return -EPERM;
	struct stat pst;
	/* A set-group-id folder gives its group, as the kernel does on a local filesystem. */
	if (fstat(parent_fd, &pst) == 0 && (pst.st_mode & S_ISGID))
		gid = (gid_t)-1;
	return fchownat(fd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
}

static void reply_entry(fuse_req_t req, int fd, struct fuse_file_info *fi)
{
	struct stat st;
	if (fstatat(fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) {
		int e = errno;
		close(fd);
		fuse_reply_err(req, e);
		return;
	}
	struct node *n;
	int r = node_get(fd, &st, &n);
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	stat_to_guest(&st);
	/* Host-side changes show at once: correctness before caching. */
	struct fuse_entry_param e = { .ino = (fuse_ino_t)(uintptr_t)n, .attr = st, .attr_timeout = 0, .entry_timeout = 0 };
	if (n == &G.root)
		e.ino = FUSE_ROOT_ID;
	if (fi)
		fuse_reply_create(req, &e, fi);
	else
		fuse_reply_entry(req, &e);
}

/* ---- operations --------------------------------------------------------------------- */

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	conn->max_write = IO_CHUNK;
	conn->max_readahead = IO_CHUNK;
	/* Contents change between host and sandbox only through read/write, where the transform
	 * sits: no writeback cache, no splice, no server-side suid handling (the kernel clears
	 * suid through setattr), no ".." lookups for NFS export. */
	conn->want &= ~(unsigned)(FUSE_CAP_WRITEBACK_CACHE | FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE |
				  FUSE_CAP_SPLICE_MOVE | FUSE_CAP_HANDLE_KILLPRIV | FUSE_CAP_EXPORT_SUPPORT |
				  FUSE_CAP_POSIX_ACL);
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	if (!name_ok(name)) {
		fuse_reply_err(req, strcmp(name, ".") && strcmp(name, "..") ? EINVAL : EPERM);
		return;
	}
	int fd = openat2_beneath(node_of(parent)->fd, name, O_PATH | O_NOFOLLOW, 0);
	if (fd < 0) {
		fuse_reply_err(req, -fd);
		return;
	}
	reply_entry(req, fd, NULL);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	node_forget(node_of(ino), nlookup);
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	for (size_t i = 0; i < count; i++)
		node_forget(node_of(forgets[i].ino), forgets[i].nlookup);
	fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)fi;
	struct stat st;
	int r = node_stat(node_of(ino), &st);
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	stat_to_guest(&st);
	fuse_reply_attr(req, &st, 0);
}

static int set_size(struct node *n, struct fuse_file_info *fi, uint64_t size)
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

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set, struct fuse_file_info *fi)
{
	struct node *n = node_of(ino);
	int r = 0;
	if (G.readonly) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if (to_set & FUSE_SET_ATTR_MODE) {
		struct stat st;
		mode_t mode = attr->st_mode & 07777;
		/* No set-id programs from a sandbox onto the host. */
		if ((r = node_stat(n, &st)) == 0 && !S_ISDIR(st.st_mode))
			mode &= ~(mode_t)(S_ISUID | S_ISGID);
		if (r == 0 && syscall(SYS_fchmodat2, n->fd, "", mode, AT_EMPTY_PATH) < 0)
			r = -errno;
	}
	if (r == 0 && (to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID))) {
		uid_t uid = (uid_t)-1;
		gid_t gid = (gid_t)-1;
		if ((to_set & FUSE_SET_ATTR_UID) && uid_to_host(attr->st_uid, &uid) < 0)
			r = -EINVAL;
		if (r == 0 && (to_set & FUSE_SET_ATTR_GID) && gid_to_host(attr->st_gid, &gid) < 0)
			r = -EINVAL;
		if (r == 0 && fchownat(n->fd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0)
			r = -errno;
	}
	if (r == 0 && (to_set & FUSE_SET_ATTR_SIZE))
		r = set_size(n, fi, (uint64_t)attr->st_size);
	if (r == 0 && (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME))) {
		struct timespec ts[2] = { { .tv_nsec = UTIME_OMIT }, { .tv_nsec = UTIME_OMIT } };
		if (to_set & FUSE_SET_ATTR_ATIME)
			ts[0] = (to_set & FUSE_SET_ATTR_ATIME_NOW) ? (struct timespec){ .tv_nsec = UTIME_NOW } : attr->st_atim;
		if (to_set & FUSE_SET_ATTR_MTIME)
			ts[1] = (to_set & FUSE_SET_ATTR_MTIME_NOW) ? (struct timespec){ .tv_nsec = UTIME_NOW } : attr->st_mtim;
		if (utimensat(n->fd, "", ts, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0)
			r = -errno;
	}
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	op_getattr(req, ino, NULL);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	char buf[PATH_MAX + 1];
	ssize_t l = readlinkat(node_of(ino)->fd, "", buf, sizeof(buf) - 1);
	if (l < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	buf[l] = '\0';
	fuse_reply_readlink(req, buf);
}

/* After mkdir/mknod/symlink: open what was made, without following it, own it, answer. */
static void made(fuse_req_t req, struct node *parent, const char *name, int flags)
{
	int fd = openat2_beneath(parent->fd, name, O_PATH | O_NOFOLLOW | flags, 0);
	if (fd < 0) {
		fuse_reply_err(req, -fd);
		return;
	}
	int r = own_for_caller(req, parent->fd, fd);
	if (r < 0) {
		close(fd);
		fuse_reply_err(req, -r);
		return;
	}
	reply_entry(req, fd, NULL);
}

static bool refuse_change(fuse_req_t req, const char *name)
{
	if (G.readonly) {
		fuse_reply_err(req, EROFS);
		return true;
	}
	if (name && !name_ok(name)) {
		fuse_reply_err(req, EINVAL);
		return true;
	}
	return false;
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	if (refuse_change(req, name))
		return;
	struct node *p = node_of(parent);
	if (mkdirat(p->fd, name, mode & 07777) < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	made(req, p, name, O_DIRECTORY);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	(void)rdev;
	if (refuse_change(req, name))
		return;
	/* Device nodes never: the host would get a device the sandbox chose. */
	if (!S_ISREG(mode) && !S_ISFIFO(mode) && !S_ISSOCK(mode)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	struct node *p = node_of(parent);
	if (mknodat(p->fd, name, (mode & ~(mode_t)(S_ISUID | S_ISGID)), 0) < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	made(req, p, name, 0);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	if (refuse_change(req, name))
		return;
	struct node *p = node_of(parent);
	if (symlinkat(link, p->fd, name) < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	made(req, p, name, 0);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	if (refuse_change(req, name))
		return;
	fuse_reply_err(req, unlinkat(node_of(parent)->fd, name, 0) < 0 ? errno : 0);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	if (refuse_change(req, name))
		return;
	fuse_reply_err(req, unlinkat(node_of(parent)->fd, name, AT_REMOVEDIR) < 0 ? errno : 0);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent, const char *newname,
		      unsigned int flags)
{
	if (refuse_change(req, name) || refuse_change(req, newname))
		return;
	int r = renameat2(node_of(parent)->fd, name, node_of(newparent)->fd, newname, flags);
	fuse_reply_err(req, r < 0 ? errno : 0);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	if (refuse_change(req, newname))
		return;
	struct node *n = node_of(ino), *p = node_of(newparent);
	if (linkat(n->fd, "", p->fd, newname, AT_EMPTY_PATH) < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	int fd = openat2_beneath(p->fd, newname, O_PATH | O_NOFOLLOW, 0);
	if (fd < 0) {
		fuse_reply_err(req, -fd);
		return;
	}
	reply_entry(req, fd, NULL);
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

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
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

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, struct fuse_file_info *fi)
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

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
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

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
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

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	fuse_reply_err(req, 0);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	close(h->fd);
	free(h->path);
	free(h);
	fuse_reply_err(req, 0);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	(void)ino;
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	int r = datasync ? fdatasync(h->fd) : fsync(h->fd);
	fuse_reply_err(req, r < 0 ? errno : 0);
}

struct dir_handle {
	DIR *dp;
	off_t offset;
	struct dirent *entry;
};

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	int fd = openat2_beneath(node_of(ino)->fd, ".", O_RDONLY | O_DIRECTORY, 0);
	if (fd < 0) {
		fuse_reply_err(req, -fd);
		return;
	}
	struct dir_handle *d = calloc(1, sizeof(*d));
	if (!d || !(d->dp = fdopendir(fd))) {
		int e = d ? errno : ENOMEM;
		free(d);
		close(fd);
		fuse_reply_err(req, e);
		return;
	}
	fi->fh = (uint64_t)(uintptr_t)d;
	fuse_reply_open(req, fi);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	(void)ino;
	struct dir_handle *d = (struct dir_handle *)(uintptr_t)fi->fh;
	char *buf = calloc(1, size);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	if (off != d->offset) {
		seekdir(d->dp, off);
		d->entry = NULL;
		d->offset = off;
	}
	size_t used = 0;
	int err = 0;
	for (;;) {
		if (!d->entry) {
			errno = 0;
			d->entry = readdir(d->dp);
			if (!d->entry) {
				err = errno;
				break;
			}
		}
		struct stat st = { .st_ino = d->entry->d_ino, .st_mode = (mode_t)d->entry->d_type << 12 };
		off_t next = telldir(d->dp);
		size_t len = fuse_add_direntry(req, buf + used, size - used, d->entry->d_name, &st, next);
		if (len > size - used)
			break; /* this entry goes first in the next call */
		used += len;
		d->entry = NULL;
		d->offset = next;
	}
	if (err && !used)
		fuse_reply_err(req, err);
	else
		fuse_reply_buf(req, buf, used);
	free(buf);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	struct dir_handle *d = (struct dir_handle *)(uintptr_t)fi->fh;
	closedir(d->dp);
	free(d);
	fuse_reply_err(req, 0);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs sv;
	if (fstatvfs(node_of(ino)->fd, &sv) < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_statfs(req, &sv);
}

/* Not served on purpose: xattrs (file capabilities and ACLs stay off the host), fallocate,
 * copy_file_range and lseek's data/hole (they would move bytes past the transform); the
 * kernel answers those with EOPNOTSUPP or falls back to read and write. */
static const struct fuse_lowlevel_ops ops = {
	.init = op_init,
	.lookup = op_lookup,
	.forget = op_forget,
	.forget_multi = op_forget_multi,
	.getattr = op_getattr,
	.setattr = op_setattr,
	.readlink = op_readlink,
	.mknod = op_mknod,
	.mkdir = op_mkdir,
	.unlink = op_unlink,
	.rmdir = op_rmdir,
	.symlink = op_symlink,
	.rename = op_rename,
	.link = op_link,
	.open = op_open,
	.read = op_read,
	.write = op_write,
	.flush = op_flush,
	.release = op_release,
	.fsync = op_fsync,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.releasedir = op_releasedir,
	.statfs = op_statfs,
	.create = op_create,
};

/* ---- start -------------------------------------------------------------------------- */

static _Noreturn void fail(int errnum, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static _Noreturn void fail(int errnum, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	for (char *p = msg; *p; p++)
		if (*p == '\n')
			*p = ' ';
	dprintf(CTL_FD, "ERR %d %s\n", errnum, msg);
	_exit(1);
}

static char *read_config(void)
{
	char *cfg = malloc(CONFIG_MAX + 1);
	size_t len = 0;
	if (!cfg)
		fail(ENOMEM, "reading the transform's config");
	for (;;) {
		ssize_t n = read(CTL_FD, cfg + len, CONFIG_MAX - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			fail(errno, "reading the transform's config: %s", strerror(errno));
		if (n == 0)
			break;
		len += (size_t)n;
		if (len == CONFIG_MAX)
			fail(E2BIG, "the transform's config is longer than %u bytes", CONFIG_MAX);
	}
	cfg[len] = '\0';
	return cfg;
}

static void load_plugin(const char *path, const char *config)
{
	void *so = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!so)
		fail(ENOEXEC, "transform plugin '%s': %s", path, dlerror());
	const struct capsule_transform_v1 *tf = dlsym(so, CAPSULE_TRANSFORM_SYMBOL);
	if (!tf)
		fail(ENOEXEC, "transform plugin '%s' does not export '%s' (see docs/transforms.md)", path,
		     CAPSULE_TRANSFORM_SYMBOL);
	if (tf->abi != CAPSULE_TRANSFORM_ABI_V1 || !tf->open || !tf->encode || !tf->decode)
		fail(ENOEXEC, "transform plugin '%s': '%s' has abi %u or misses a callback (this capsule-fuse speaks abi %u)",
		     path, CAPSULE_TRANSFORM_SYMBOL, tf->abi, CAPSULE_TRANSFORM_ABI_V1);
	errno = 0;
	void *ctx = tf->open(config);
	if (!ctx) {
		int e = errno ? errno : EINVAL;
		fail(e, "transform plugin '%s' refused its config: %s", path, strerror(e));
	}
	G.tf = tf;
	G.tf_ctx = ctx;
}

/* The server needs to make and chown files beneath one folder, nothing more. */
static void drop_privileges(void)
{
	static const int keep[] = { CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER, CAP_FSETID };
	uint64_t mask = 0;
	for (size_t i = 0; i < sizeof(keep) / sizeof(keep[0]); i++)
		mask |= 1ull << keep[i];
	for (int c = 0; c <= 63; c++)
		if (!(mask & (1ull << c)) && prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0 && errno != EINVAL)
			fail(errno, "dropping capability %d: %s", c, strerror(errno));
	if (geteuid() == 0) {
		struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3 };
		struct __user_cap_data_struct data[2] = { 0 };
		data[0].effective = data[0].permitted = (uint32_t)mask;
		data[1].effective = data[1].permitted = (uint32_t)(mask >> 32);
		if (syscall(SYS_capset, &hdr, data) < 0)
			fail(errno, "setting capabilities: %s", strerror(errno));
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		fail(errno, "no_new_privs: %s", strerror(errno));
	/* It holds the plugin's key: not for ptrace or core dumps. */
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}

static unsigned long parse_ulong(const char *s, const char *what)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || *end || !*s)
		fail(EINVAL, "invalid %s '%s'", what, s);
	return v;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "plugin", required_argument, NULL, 'p' },   { "target", required_argument, NULL, 't' },
		{ "uid-base", required_argument, NULL, 'u' }, { "gid-base", required_argument, NULL, 'g' },
		{ "id-count", required_argument, NULL, 'c' }, { "readonly", no_argument, NULL, 'r' },
		{ "host-uid-base", required_argument, NULL, 'U' }, { "host-gid-base", required_argument, NULL, 'G' },
		{ 0 },
	};
	const char *plugin = NULL, *target = "?";
	G.id_count = 1;
	bool host_uid_base = false, host_gid_base = false;
	/* The shim starts us as the user who made the sandbox. */
	G.owner_uid = getuid();
	G.owner_gid = getgid();
	int o;
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case 'p': plugin = optarg; break;
		case 't': target = optarg; break;
		case 'u': G.uid_base = (uid_t)parse_ulong(optarg, "uid base"); break;
		case 'g': G.gid_base = (gid_t)parse_ulong(optarg, "gid base"); break;
		case 'c': G.id_count = (uint32_t)parse_ulong(optarg, "id count"); break;
		case 'r': G.readonly = true; break;
		case 'U': G.host_uid_base = (uid_t)parse_ulong(optarg, "host uid base"); host_uid_base = true; break;
		case 'G': G.host_gid_base = (gid_t)parse_ulong(optarg, "host gid base"); host_gid_base = true; break;
		default: fail(EINVAL, "usage: capsule-fuse --plugin PATH --target GUEST --uid-base N --gid-base N --id-count N "
				      "[--host-uid-base N --host-gid-base N] [--readonly]");
		}
	}
	if (!host_uid_base)
		G.host_uid_base = G.uid_base;
	if (!host_gid_base)
		G.host_gid_base = G.gid_base;
	if (!plugin || fcntl(FUSE_FD, F_GETFD) < 0 || fcntl(ROOT_FD, F_GETFD) < 0)
		fail(EINVAL, "capsule-fuse is started by capsule-shim (fd 3: /dev/fuse, fd 4: the folder, fd 5: control)");
	/* Die with the shim; it checks on us too, this covers a SIGKILLed shim. */
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	fcntl(FUSE_FD, F_SETFD, FD_CLOEXEC);
	fcntl(ROOT_FD, F_SETFD, FD_CLOEXEC);
	fcntl(CTL_FD, F_SETFD, FD_CLOEXEC);
	signal(SIGPIPE, SIG_IGN);

	struct stat st;
	if (fstat(ROOT_FD, &st) < 0 || !S_ISDIR(st.st_mode))
		fail(ENOTDIR, "mount source of '%s' is not a folder", target);
	G.root = (struct node){ .fd = ROOT_FD, .dev = st.st_dev, .ino = st.st_ino, .nlookup = 1 };
	char self[64];
	snprintf(self, sizeof(self), "/proc/self/fd/%d", ROOT_FD);
	ssize_t l = readlink(self, G.root_path, sizeof(G.root_path) - 1);
	G.root_path_len = l > 0 ? (size_t)l : 0;
	G.root_path[G.root_path_len] = '\0';
	if (G.root_path_len == 1) /* the host's "/" (allowed with allow_sensitive) */
		G.root_path_len = 0;
	if (table_grow() < 0 || !io_buf(IO_CHUNK))
		fail(ENOMEM, "allocating");
	G.holes = folder_keeps_holes(ROOT_FD);

	char *config = read_config();
	load_plugin(plugin, config);
	memset(config, 0, strlen(config));
	free(config);
	drop_privileges();

	char *fargv[] = { "capsule-fuse", NULL };
	struct fuse_args args = FUSE_ARGS_INIT(1, fargv);
	struct fuse_session *se = fuse_session_new(&args, &ops, sizeof(ops), NULL);
	if (!se)
		fail(EIO, "fuse_session_new failed");
	char mnt[32];
	snprintf(mnt, sizeof(mnt), "/dev/fd/%d", FUSE_FD);
	if (fuse_session_mount(se, mnt) != 0)
		fail(EIO, "serving the FUSE connection of '%s'", target);
	dprintf(CTL_FD, "OK\n");
	close(CTL_FD);

	/* Ends when the connection does: the sandbox's mount went away with it, or the shim
	 * aborted it. */
	int r = fuse_session_loop(se);
	fuse_session_destroy(se);
	if (G.tf->close)
		G.tf->close(G.tf_ctx);
	/* Handles of files that were open when the connection ended live only in the kernel's
	 * memory; there is nothing left worth an exit-time walk (or a leak checker's). */
	_exit(r < 0 ? 1 : 0);
}
