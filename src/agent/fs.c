/* The filesystem API, served by the agent inside the sandbox.
 *
 * Every path arrives from outside as a string and is resolved here, from a descriptor of the
 * sandbox's root, with openat2(RESOLVE_IN_ROOT): symlinks and ".." are followed as a process
 * in the sandbox would follow them, and can never leave the root. Operations on a path's
 * last component (stat, remove, rename, the file a write replaces) resolve its parent folder
 * that way and then act on the name with *at() calls that do not follow it.
 *
 * Streams: a READ or LIST sends DATA under the credit the shim grants, one chunk per turn of
 * the main loop, so a 10 GiB file neither fills memory nor stops other channels. A WRITE
 * goes to a temporary file beside its target and is renamed over it when the client's EOF
 * arrives, so a failure never leaves a half-written file where the old one was. A large
 * READ or WRITE may instead move its bytes on a socket of its own: fs_direct.c. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "agent.h"
#include "fs_internal.h"
#include "util.h"

#define LIST_CHUNK (64u * 1024)
/* A replaced file at least this large is let go only after the write's OK is sent. */
#define RELEASE_LATER_MIN (1u << 20)

struct fs_state fs_state;


static int openat2_in_root(const char *path, uint64_t flags, uint64_t mode)
{
	struct open_how how = {
		.flags = flags | O_CLOEXEC,
		.mode = mode,
		.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
	};
	/* A rename or mount raced a ".." of the lookup: the kernel asks for a retry. Bounded,
	 * since the sandbox itself can rename in a loop. */
	int fd, tries = 0;
	do
		fd = (int)syscall(SYS_openat2, fs_state.root, path, &how, sizeof(how));
	while (fd < 0 && errno == EAGAIN && ++tries < 1000);
	return fd;
}

int fs_open_in_root(const char *path, uint64_t flags)
{
	return openat2_in_root(path, flags, 0);
}

/* ---- replies ------------------------------------------------------------------------ */

void fs_reply_errno(uint32_t chan, int e, const char *what, const char *path)
{
	char msg[512];
	snprintf(msg, sizeof(msg), "%s '%.300s': %s", what, path, strerror(e));
	agent_send_error(chan, e, msg);
}

void fs_reply_ok(uint32_t chan)
{
	if (cp_empty_encode(agent_writer(), CP_OK, chan) == 0)
		agent_send_frame();
}

static uint32_t kind_of(mode_t m)
{
	if (S_ISREG(m))
		return CP_FS_KIND_FILE;
	if (S_ISDIR(m))
		return CP_FS_KIND_DIR;
	if (S_ISLNK(m))
		return CP_FS_KIND_SYMLINK;
	return CP_FS_KIND_OTHER;
}

/* Fill E from ST; NAME is borrowed. Reads the link target of a symlink (malloc'd in e->link). */
static void entry_from_stat(struct cp_fs_entry *e, const char *name, const struct stat *st, int dirfd, const char *at)
{
	memset(e, 0, sizeof(*e));
	e->name = (char *)name;
	e->kind = kind_of(st->st_mode);
	e->size = (uint64_t)st->st_size;
	e->mode = st->st_mode & 07777;
	e->mtime_ns = (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
	e->uid = st->st_uid;
	e->gid = st->st_gid;
	if (S_ISLNK(st->st_mode)) {
		char buf[CP_FS_PATH_MAX + 1];
		ssize_t n = readlinkat(dirfd, at, buf, sizeof(buf));
		if (n >= 0 && (size_t)n <= CP_FS_PATH_MAX) {
			buf[n] = 0;
			e->link = strdup(buf);
		}
	}
}

static void reply_entry(uint32_t chan, const struct cp_fs_entry *e)
{
	if (cp_fs_entry_encode_ok(agent_writer(), chan, e) == 0)
		agent_send_frame();
	else
		agent_send_error(chan, EOVERFLOW, "the entry does not fit in a reply");
}

/* ---- path resolution ---------------------------------------------------------------- */

/* Split PATH into its parent folder (opened O_PATH, resolved in the root) and its last
 * component. "/" has no last component: *NAME is NULL and *DIRFD is the root itself. With
 * CREATE, missing folders on the way are made (mkdir -p). Returns -errno. */
static int resolve_parent(const char *path, bool create, int *dirfd, char **name)
{
	*dirfd = -1;
	*name = NULL;
	if (path[0] != '/')
		return -EINVAL;
	size_t len = strlen(path);
	while (len > 1 && path[len - 1] == '/')
		len--;
	char *copy = strndup(path, len);
	if (!copy)
		return -ENOMEM;
	char *slash = strrchr(copy, '/');
	char *last = slash + 1;
	if (!*last) {
		free(copy);
		*dirfd = fcntl(fs_state.root, F_DUPFD_CLOEXEC, 3);
		return *dirfd < 0 ? -errno : 0;
	}
	if (strcmp(last, ".") == 0 || strcmp(last, "..") == 0) {
		free(copy);
		return -EINVAL;
	}
	*slash = 0;
	const char *parent = copy[0] ? copy : "/";
	int fd = openat2_in_root(parent, O_PATH | O_DIRECTORY, 0);
	if (fd < 0 && errno == ENOENT && create) {
		/* Walk down, making what is missing. Each mkdirat takes one plain component
		 * relative to the folder resolved just before, and each prefix is resolved
		 * again from the root, so a symlink planted meanwhile stays inside. */
		fd = fcntl(fs_state.root, F_DUPFD_CLOEXEC, 3);
		char *p = copy;
		while (fd >= 0 && *p) {
			while (*p == '/')
				p++;
			if (!*p)
				break;
			char *end = strchr(p, '/');
			char saved = end ? *end : 0;
			if (end)
				*end = 0;
			if (mkdirat(fd, p, 0755) < 0 && errno != EEXIST) {
				int e = errno;
				close(fd);
				fd = -1;
				errno = e;
				break;
			}
			close(fd);
			fd = openat2_in_root(copy[0] ? copy : "/", O_PATH | O_DIRECTORY, 0);
			if (end)
				*end = saved;
			p = end ? end : p + strlen(p);
		}
	}
	if (fd < 0) {
		int e = errno;
		free(copy);
		return -e;
	}
	*name = strdup(last);
	free(copy);
	if (!*name) {
		close(fd);
		return -ENOMEM;
	}
	*dirfd = fd;
	return 0;
}

/* ---- one-shot operations ------------------------------------------------------------ */

static void op_stat(uint32_t chan, const struct cp_fs *m)
{
	int dir;
	char *name;
	int r = resolve_parent(m->path, false, &dir, &name);
	if (r < 0) {
		fs_reply_errno(chan, -r, "stat", m->path);
		return;
	}
	struct stat st;
	const char *at = name ? name : "";
	if (fstatat(dir, at, &st, AT_SYMLINK_NOFOLLOW | (name ? 0 : AT_EMPTY_PATH)) < 0) {
		fs_reply_errno(chan, errno, "stat", m->path);
	} else {
		struct cp_fs_entry e;
		entry_from_stat(&e, name ? name : "/", &st, dir, at);
		reply_entry(chan, &e);
		free(e.link);
	}
	close(dir);
	free(name);
}

/* The modes a client may give what the agent makes: no set-uid or set-gid bit, as commands may
 * give none (the seccomp filter): a file made here may be a host file, in a bind or a volume,
 * owned by the host user who made the sandbox. A replaced file loses its set-id bits too, as
 * the kernel clears them on any write by someone without CAP_FSETID. */
#define FS_CLIENT_MODE_BITS (07777 & ~(S_ISUID | S_ISGID))

static void op_mkdir(uint32_t chan, const struct cp_fs *m)
{
	int dir;
	char *name;
	int r = resolve_parent(m->path, m->flags & CP_FS_PARENTS, &dir, &name);
	if (r == 0 && !name)
		r = (m->flags & CP_FS_PARENTS) ? 0 : -EEXIST;
	else if (r == 0 && mkdirat(dir, name, m->mode ? m->mode & FS_CLIENT_MODE_BITS : 0755) < 0) {
		r = -errno;
		struct stat st;
		if (r == -EEXIST && (m->flags & CP_FS_PARENTS) && fstatat(dir, name, &st, 0) == 0 && S_ISDIR(st.st_mode))
			r = 0;
	}
	if (r == 0 && name && m->mode && fchmodat(dir, name, m->mode & FS_CLIENT_MODE_BITS, 0) < 0)
		r = -errno; /* mkdirat's mode passed through the umask */
	if (r < 0)
		fs_reply_errno(chan, -r, "mkdir", m->path);
	else
		fs_reply_ok(chan);
	if (dir >= 0)
		close(dir);
	free(name);
}

static void op_remove(uint32_t chan, const struct cp_fs *m)
{
	int dir;
	char *name;
	int r = resolve_parent(m->path, false, &dir, &name);
	if (r == 0 && !name) {
		agent_send_error(chan, EBUSY, "refusing to remove the sandbox's root folder");
		close(dir);
		return;
	}
	struct stat st;
	if (r == 0 && fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		r = -errno;
	if (r == 0) {
		if (!S_ISDIR(st.st_mode))
			r = unlinkat(dir, name, 0) < 0 ? -errno : 0;
		else if (m->flags & CP_FS_RECURSIVE)
			r = rm_rf_at(dir, name);
		else
			r = unlinkat(dir, name, AT_REMOVEDIR) < 0 ? -errno : 0;
	}
	if (r == -ENOENT && (m->flags & CP_FS_FORCE))
		r = 0;
	if (r == -ENOTEMPTY || r == -EEXIST)
		agent_send_error(chan, ENOTEMPTY, "remove: folder is not empty (remove it recursively)");
	else if (r < 0)
		fs_reply_errno(chan, -r, "remove", m->path);
	else
		fs_reply_ok(chan);
	if (dir >= 0)
		close(dir);
	free(name);
}

static void op_rename(uint32_t chan, const struct cp_fs *m)
{
	int from_dir = -1, to_dir = -1;
	char *from = NULL, *to = NULL;
	int r = resolve_parent(m->path, false, &from_dir, &from);
	if (r < 0) {
		fs_reply_errno(chan, -r, "rename", m->path);
		goto out;
	}
	if ((r = resolve_parent(m->path2, m->flags & CP_FS_PARENTS, &to_dir, &to)) < 0) {
		fs_reply_errno(chan, -r, "rename to", m->path2);
		goto out;
	}
	if (!from || !to) {
		agent_send_error(chan, EBUSY, "rename: the sandbox's root folder cannot be moved or replaced");
		goto out;
	}
	if (syscall(SYS_renameat2, from_dir, from, to_dir, to, (m->flags & CP_FS_NOREPLACE) ? RENAME_NOREPLACE : 0) < 0)
		fs_reply_errno(chan, errno, "rename", m->path);
	else
		fs_reply_ok(chan);
out:
	if (from_dir >= 0)
		close(from_dir);
	if (to_dir >= 0)
		close(to_dir);
	free(from);
	free(to);
}

static void op_symlink(uint32_t chan, const struct cp_fs *m)
{
	int dir;
	char *name;
	int r = resolve_parent(m->path, m->flags & CP_FS_PARENTS, &dir, &name);
	if (r == 0 && !name)
		r = -EEXIST;
	if (r == 0 && symlinkat(m->path2, dir, name) < 0)
		r = -errno;
	if (r < 0)
		fs_reply_errno(chan, -r, "symlink", m->path);
	else
		fs_reply_ok(chan);
	if (dir >= 0)
		close(dir);
	free(name);
}

/* ---- streams ------------------------------------------------------------------------ */

static struct fsop *op_new(uint32_t chan, enum xfer kind)
{
	for (size_t i = 0; i < MAX_FS_OPS; i++) {
		struct fsop *o = &fs_state.ops[i];
		if (o->used)
			continue;
		memset(o, 0, sizeof(*o));
		o->used = true;
		o->kind = kind;
		o->chan = chan;
		o->fd = o->parent = o->sock = -1;
		o->credit = CP_INITIAL_WINDOW;
		if (i + 1 > fs_state.hwm)
			fs_state.hwm = i + 1;
		return o;
	}
	return NULL;
}

struct fsop *fs_op_by_chan(uint32_t chan)
{
	for (size_t i = 0; i < fs_state.hwm; i++)
		if (fs_state.ops[i].used && fs_state.ops[i].chan == chan)
			return &fs_state.ops[i];
	return NULL;
}

/* A file or folder an operation is done with is closed after the loop has sent its answer
 * (fs_release), not before: one system call less between a request and its answer. */
static void close_later(int fd)
{
	if (fd < 0)
		return;
	if (fs_state.nrelease < RELEASE_MAX)
		fs_state.release[fs_state.nrelease++] = fd;
	else
		close(fd);
}

void fs_op_end(struct fsop *o)
{
	if (o->sock >= 0)
		close(o->sock); /* the other end sees its end, or EPIPE */
	close_later(o->fd);
	if (o->dir)
		closedir(o->dir);
	if (o->tmp && o->parent >= 0)
		unlinkat(o->parent, o->tmp, 0);
	close_later(o->parent);
	free(o->name);
	free(o->tmp);
	free(o->path);
	memset(o, 0, sizeof(*o));
}

static void op_read(uint32_t chan, const struct cp_fs *m, bool direct)
{
	/* O_NONBLOCK: a fifo planted at the path must not stall the agent in open(). */
	int fd = openat2_in_root(m->path, O_RDONLY | O_NONBLOCK | O_NOCTTY, 0);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		fs_reply_errno(chan, errno, "read", m->path);
		if (fd >= 0)
			close(fd);
		return;
	}
	if (!S_ISREG(st.st_mode)) {
		fs_reply_errno(chan, S_ISDIR(st.st_mode) ? EISDIR : EINVAL, "read (not a regular file)", m->path);
		close(fd);
		return;
	}
	struct fsop *o = op_new(chan, XFER_READ);
	if (!o) {
		agent_send_error(chan, EAGAIN, "too many file transfers at once in this sandbox");
		close(fd);
		return;
	}
	o->fd = fd;
	o->size = st.st_size;
	if (st.st_size > (off_t)FS_CHUNK)
		posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	/* A direct stream only for a file larger than a chunk: a small one is answered whole
	 * in this turn, with no socket to set up. */
	if (direct && st.st_size > (off_t)FS_CHUNK) {
		fs_direct_ask(o);
		return;
	}
	/* The first chunk in this turn: a small file is then answered whole at once. */
	fs_read_pump(o);
}

static void op_list(uint32_t chan, const struct cp_fs *m)
{
	int fd = openat2_in_root(m->path, O_RDONLY | O_DIRECTORY, 0);
	if (fd < 0) {
		fs_reply_errno(chan, errno, "list", m->path);
		return;
	}
	struct fsop *o = op_new(chan, XFER_LIST);
	DIR *d = o ? fdopendir(fd) : NULL;
	if (!d) {
		agent_send_error(chan, o ? errno : EAGAIN, o ? "list: cannot read the folder" : "too many file transfers at once in this sandbox");
		close(fd);
		if (o)
			fs_op_end(o);
		return;
	}
	o->dir = d;
}

/* The next temporary file's name: a sequence from a random start, mixed (splitmix64), so a
 * write costs no getrandom. Names are not secret (the sandbox sees them in the folder), and
 * O_EXCL|O_NOFOLLOW makes a planted one a retry, never a redirection; a retry (RESEED) starts
 * the sequence again from new random bits, so planting the predicted next names cannot make
 * writes fail. */
static uint64_t tmp_name_next(bool reseed)
{
	static uint64_t state;
	static bool seeded;
	if (!seeded || reseed) {
		if (getentropy(&state, sizeof(state)) < 0)
			state ^= now_ns() ^ ((uint64_t)getpid() << 32);
		seeded = true;
	}
	uint64_t z = (state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void op_write(uint32_t chan, const struct cp_fs *m, bool direct)
{
	int dir;
	char *name;
	int r = resolve_parent(m->path, m->flags & CP_FS_PARENTS, &dir, &name);
	if (r == 0 && !name)
		r = -EISDIR;
	struct stat old;
	bool exists = false;
	if (r == 0) {
		if (fstatat(dir, name, &old, AT_SYMLINK_NOFOLLOW) == 0)
			exists = true;
		else if (errno != ENOENT)
			r = -errno;
	}
	if (r == 0 && exists && (m->flags & CP_FS_NOREPLACE))
		r = -EEXIST;
	if (r == 0 && exists && S_ISDIR(old.st_mode))
		r = -EISDIR;
	if (r < 0) {
		fs_reply_errno(chan, -r, "write", m->path);
		goto fail;
	}
	struct fsop *o = op_new(chan, XFER_WRITE);
	if (!o) {
		agent_send_error(chan, EAGAIN, "too many file transfers at once in this sandbox");
		goto fail;
	}
	o->parent = dir;
	o->name = name;
	o->flags = m->flags;
	mode_t mode = (exists && S_ISREG(old.st_mode) ? old.st_mode : (m->mode ? m->mode : 0644)) & FS_CLIENT_MODE_BITS;
	/* A new file has no owner to keep: its temporary file may as well have its final
	 * permissions (the commit then has nothing to change). One that replaces another stays
	 * private to us until its owner and mode are the old file's. */
	mode_t tmp_mode = exists ? 0600 : mode & 0777;
	char tmp[64];
	for (int tries = 0; tries < 16 && o->fd < 0; tries++) {
		snprintf(tmp, sizeof(tmp), ".capsule-write-%016llx", (unsigned long long)tmp_name_next(tries > 0));
		o->fd = openat(dir, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, tmp_mode);
		if (o->fd < 0 && errno != EEXIST)
			break;
	}
	if (o->fd < 0) {
		fs_reply_errno(chan, errno, "write", m->path);
		o->parent = -1; /* closed below, with name */
		memset(o, 0, sizeof(*o));
		goto fail;
	}
	o->tmp = strdup(tmp);
	o->path = strdup(m->path);
	if (!o->tmp || !o->path) {
		fs_reply_errno(chan, ENOMEM, "write", m->path);
		fs_op_end(o);
		return;
	}
	o->mode = mode;
	if (exists && S_ISREG(old.st_mode)) {
		o->chown = true;
		o->uid = old.st_uid;
		o->gid = old.st_gid;
		o->old_size = old.st_size;
	}
	if (direct) {
		fs_direct_ask(o);
		return;
	}
	struct cp_started st = { .pid = 0 };
	if (cp_started_encode(agent_writer(), chan, &st) == 0)
		agent_send_frame();
	return;
fail:
	if (dir >= 0)
		close(dir);
	free(name);
}

/* The target is a mount point (a file bound in from the host): it cannot be renamed over,
 * so its content is replaced in place instead. */
static int write_in_place(struct fsop *o)
{
	int dst = openat(o->parent, o->name, O_WRONLY | O_TRUNC | O_NOFOLLOW | O_CLOEXEC);
	if (dst < 0)
		return -errno;
	off_t off = 0;
	int r = 0;
	while ((uint64_t)off < o->written) {
		ssize_t n = copy_file_range(o->fd, &off, dst, NULL, o->written - (uint64_t)off, 0);
		if (n <= 0) {
			r = n < 0 ? -errno : -EIO;
			break;
		}
	}
	close(dst);
	return r;
}

void fs_write_commit(struct fsop *o)
{
	/* No fsync: readers see the old file or the new one whole, which is the promise;
	 * durability across a host crash is the filesystem's (ext4 and xfs flush a file
	 * renamed over another). An fsync of every write cost more than the write itself. */
	int r = 0;
	/* Owner and mode only now, with the data written: the kernel clears setuid and
	 * setgid on a chown and on every write by a caller without CAP_FSETID in the initial
	 * user namespace (the agent has it only in the sandbox's), and fchmod also undoes the
	 * umask that shaped the temporary file's mode. A replaced file keeps its owner. Each
	 * only where the file differs (most writes replace a file of ours, or make a new one
	 * with its mode already right); the same stat is the answer's entry after the rename. */
	struct stat st;
	if (fstat(o->fd, &st) < 0)
		r = -errno;
	if (r == 0 && o->chown && (st.st_uid != o->uid || st.st_gid != o->gid)) {
		if (fchown(o->fd, o->uid, o->gid) < 0)
			r = -errno;
		st.st_uid = o->uid;
		st.st_gid = o->gid;
	}
	if (r == 0 && (st.st_mode & 07777) != o->mode) {
		if (fchmod(o->fd, o->mode) < 0)
			r = -errno;
		st.st_mode = (st.st_mode & S_IFMT) | o->mode;
	}
	/* A large file replaced: hold it until the OK is out (fs_release), so that freeing its
	 * pages, which the rename's last unlink would do at once, is not part of the wait. */
	int held = -1;
	if (r == 0 && o->old_size >= (off_t)RELEASE_LATER_MIN && fs_state.nrelease < RELEASE_MAX)
		held = openat(o->parent, o->name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (held >= 0)
		fs_state.release[fs_state.nrelease++] = held;
	if (r == 0) {
		unsigned fl = (o->flags & CP_FS_NOREPLACE) ? RENAME_NOREPLACE : 0;
		if (syscall(SYS_renameat2, o->parent, o->tmp, o->parent, o->name, fl) == 0) {
			free(o->tmp);
			o->tmp = NULL;
		} else if (errno == EBUSY || errno == EXDEV) {
			/* The answer's entry is then the target's own, not the temporary file's. */
			if ((r = write_in_place(o)) == 0 && fstatat(o->parent, o->name, &st, AT_SYMLINK_NOFOLLOW) < 0)
				memset(&st, 0, sizeof(st)), st.st_mode = S_IFREG, st.st_size = (off_t)o->written;
		} else {
			r = -errno;
		}
	}
	if (r < 0) {
		fs_reply_errno(o->chan, -r, "write", o->path);
	} else {
		struct cp_fs_entry e;
		entry_from_stat(&e, o->name, &st, o->parent, o->name);
		reply_entry(o->chan, &e);
		free(e.link);
	}
	fs_op_end(o);
}

static void write_data(struct fsop *o, const struct cp_header *h, const uint8_t *payload)
{
	size_t off = 0;
	while (off < h->len) {
		ssize_t n = write(o->fd, payload + off, h->len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			/* ENOSPC, EDQUOT, EFBIG: the old file stays as it was. The ERROR ends the
			 * channel, and the shim drops whatever the client still sends on it. */
			fs_reply_errno(o->chan, n < 0 ? errno : EIO, "write", o->path);
			fs_op_end(o);
			return;
		}
		off += (size_t)n;
	}
	o->written += h->len;
	if (h->len)
		agent_send_credit(o->chan, CP_STREAM_STDIN, h->len);
	if (h->flags & CP_FLAG_EOF)
		fs_write_commit(o);
}

/* Send one chunk of a READ: read straight into the frame buffer behind its header. A short
 * chunk is most likely the file's last: then the read that finds the end is made in the same
 * turn, so that the data, its EOF and the OK leave in one write (see agent_send_raw). */
static void read_chunk(struct fsop *o);

void fs_read_pump(struct fsop *o)
{
	read_chunk(o);
	if (o->used && o->short_read && o->credit > 0)
		read_chunk(o);
}

static void read_chunk(struct fsop *o)
{
	size_t want = o->credit < FS_CHUNK ? (size_t)o->credit : FS_CHUNK;
	ssize_t n;
	do
		n = read(o->fd, fs_state.buf + CP_HEADER_SIZE, want);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		agent_send_error(o->chan, errno, "read: the file could not be read to the end");
		fs_op_end(o);
		return;
	}
	o->off += n;
	/* A short read that reaches the size the file had when it was opened is its end: no
	 * read to find that out, and the EOF rides on this chunk. (Bytes appended after this
	 * read are not waited for, as if the read had come first; a file whose size says
	 * nothing, as in /proc, is read until a read finds the end.) */
	bool end = n == 0 || ((size_t)n < want && o->off == o->size);
	struct cp_header h = { .len = (uint32_t)n, .type = CP_DATA, .flags = CP_STREAM_STDOUT, .chan = o->chan };
	if (end)
		h.flags |= CP_FLAG_EOF;
	cp_header_encode(fs_state.buf, &h);
	agent_send_raw(fs_state.buf, CP_HEADER_SIZE + (size_t)n);
	o->credit -= (uint64_t)n;
	o->short_read = (size_t)n < want;
	if (end) {
		fs_reply_ok(o->chan);
		fs_op_end(o);
	}
}

/* Send entries of a LIST until a chunk is full or the credit runs out; the last frame,
 * possibly empty, carries EOF. */
static void list_pump(struct fsop *o)
{
	struct cp_writer *w = agent_writer();
	cp_frame_begin(w, CP_DATA, CP_STREAM_STDOUT, o->chan);
	bool done = false;
	/* A record is at most a name, a link target and a few numbers: under 4.5 KiB. */
	while (w->len - CP_HEADER_SIZE < LIST_CHUNK && w->len - CP_HEADER_SIZE + 8192 <= o->credit) {
		errno = 0;
		struct dirent *de = readdir(o->dir);
		if (!de) {
			if (errno) {
				agent_send_error(o->chan, errno, "list: reading the folder failed");
				fs_op_end(o);
				return;
			}
			done = true;
			break;
		}
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		struct stat st;
		if (fstatat(dirfd(o->dir), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue; /* removed meanwhile */
		struct cp_fs_entry e;
		entry_from_stat(&e, de->d_name, &st, dirfd(o->dir), de->d_name);
		cp_fs_record_append(w, &e);
		free(e.link);
	}
	if (cp_frame_finish(w) < 0) {
		agent_send_error(o->chan, EOVERFLOW, "list: an entry does not fit in a frame");
		fs_op_end(o);
		return;
	}
	uint32_t sent = (uint32_t)(w->len - CP_HEADER_SIZE);
	if (done) {
		struct cp_header h;
		cp_header_decode(w->buf, w->len, &h);
		h.flags |= CP_FLAG_EOF;
		cp_header_encode(w->buf, &h);
	}
	if (sent || done) {
		o->credit -= sent;
		agent_send_frame();
	}
	if (done) {
		fs_reply_ok(o->chan);
		fs_op_end(o);
	}
}

/* ---- entry points from the main loop ------------------------------------------------ */

void fs_release(void)
{
	for (unsigned i = 0; i < fs_state.nrelease; i++)
		close(fs_state.release[i]);
	fs_state.nrelease = 0;
}

int fs_init(int epfd)
{
	fs_state.epfd = epfd;
	fs_state.root = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
	fs_state.buf = malloc(CP_HEADER_SIZE + FS_CHUNK);
	return fs_state.root >= 0 && fs_state.buf ? 0 : -1;
}

void fs_request(uint32_t chan, const uint8_t *payload, size_t len, bool direct_ok)
{
	struct cp_fs m;
	if (cp_fs_decode(payload, len, &m) < 0) {
		agent_send_error(chan, EBADMSG, "malformed filesystem request");
		return;
	}
	int bad = 0;
	if (m.path[0] != '/' || (m.op == CP_FS_RENAME && m.path2[0] != '/')) {
		agent_send_error(chan, EINVAL, "filesystem paths must be absolute paths inside the sandbox");
		bad = 1;
	} else if (fs_op_by_chan(chan)) {
		agent_send_error(chan, EBADMSG, "channel already in use");
		bad = 1;
	}
	bool direct = direct_ok && (m.flags & CP_FS_DIRECT);
	if (bad) {
		cp_fs_free(&m);
		return;
	}
	switch (m.op) {
	case CP_FS_STAT: op_stat(chan, &m); break;
	case CP_FS_LIST: op_list(chan, &m); break;
	case CP_FS_READ: op_read(chan, &m, direct); break;
	case CP_FS_WRITE: op_write(chan, &m, direct); break;
	case CP_FS_MKDIR: op_mkdir(chan, &m); break;
	case CP_FS_REMOVE: op_remove(chan, &m); break;
	case CP_FS_RENAME: op_rename(chan, &m); break;
	case CP_FS_SYMLINK: op_symlink(chan, &m); break;
	}
	cp_fs_free(&m);
}

bool fs_data(const struct cp_header *h, const uint8_t *payload)
{
	struct fsop *o = fs_op_by_chan(h->chan);
	if (!o)
		return false;
	if (o->kind != XFER_WRITE || (h->flags & CP_FLAG_STREAM_MASK) != CP_STREAM_STDIN)
		return true;
	if (o->sock < 0 && !o->sock_eof && !o->awaiting) {
		write_data(o, h, payload);
	} else if (h->len || o->awaiting) {
		agent_send_error(o->chan, EBADMSG, "write: data on the channel of a direct stream");
		fs_op_end(o);
	} else if (h->flags & CP_FLAG_EOF) {
		/* Commits once the socket has been read to its end too. */
		o->eof_frame = true;
		if (o->sock_eof)
			fs_write_commit(o);
	}
	return true;
}

bool fs_credit(const struct cp_header *h, const uint8_t *payload)
{
	struct fsop *o = fs_op_by_chan(h->chan);
	if (!o)
		return false;
	struct cp_credit m;
	if (o->kind != XFER_WRITE && cp_credit_decode(payload, h->len, &m) == 0 && m.stream == CP_STREAM_STDOUT) {
		uint64_t c = o->credit + m.bytes;
		o->credit = c > CP_INITIAL_WINDOW * 4ull ? CP_INITIAL_WINDOW * 4ull : c;
	}
	return true;
}

bool fs_cancel(uint32_t chan)
{
	struct fsop *o = fs_op_by_chan(chan);
	if (!o)
		return false;
	/* The client went away or gave up: an unfinished write leaves the old file untouched.
	 * The channel still needs its final frame, or the shim would hold it for ever (and a
	 * client that cancels 256 streams on one connection could open no more). */
	uint32_t c = o->chan;
	fs_op_end(o);
	agent_send_error(c, ECANCELED, "filesystem operation cancelled");
	return true;
}

bool fs_pump(void)
{
	bool more = false;
	for (size_t i = 0; i < fs_state.hwm; i++) {
		struct fsop *o = &fs_state.ops[i];
		if (!o->used || o->kind == XFER_WRITE || o->sock >= 0 || o->awaiting)
			continue; /* a direct stream goes by its socket's events */
		size_t need = o->kind == XFER_LIST ? 8192 : 1;
		if (o->credit < need)
			continue;
		if (o->kind == XFER_READ)
			fs_read_pump(o);
		else
			list_pump(o);
		if (o->used && o->credit >= need)
			more = true;
	}
	return more;
}
