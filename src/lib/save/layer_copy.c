/* Copy a layer folder (a sandbox's overlayfs upper, or a save's layer) to a new folder,
 * shifting owners from one id range to another. The source is written by a sandbox, so it
 * is treated as hostile: it is walked from directory fds with O_NOFOLLOW and *at() calls,
 * symlinks are copied as links and never followed, fifos are never opened, only regular
 * files are read (and only after fstat of the opened fd says so), and the only device nodes
 * copied are overlayfs whiteouts (character 0:0), the one kind a sandbox can make itself. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fs.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "internal.h"
#include "layer_copy.h"
#include "syscalls.h"
#include "util.h"

/* Each level holds a descriptor and a stack frame; a sandbox decides how deep its folders
 * go, so the depth is bounded and deeper trees are refused, not followed. */
#define LAYER_COPY_MAX_DEPTH 256
#define XATTR_LIST_MAX_BYTES 65536
/* The first names of linked files are held in memory until the copy ends; the sandbox decides
 * how many there are and how long, so their total, each counted with its share of the table,
 * is bounded (half a million links of ordinary paths) and a layer past it is refused. */
#define LAYER_COPY_LINK_NAMES_MAX_BYTES (64u << 20)
#define LINK_ENTRY_OVERHEAD 64

struct hardlink {
	dev_t dev;
	ino_t ino;
	char *path; /* relative to the destination root; NULL in an empty slot */
};

/* Files with more than one name seen so far, by (st_dev, st_ino): open addressing with linear
 * probing, at most half full, so that a layer of 40,000 linked files costs 40,000 lookups of
 * a step or two each, not a scan of every earlier one. The keys are inode numbers, which the
 * host's filesystem gives out, not the sandbox. */
struct link_table {
	struct hardlink *slots;
	size_t cap, used; /* cap: 0 or a power of two */
	size_t name_bytes;
};

struct copier {
	const struct id_shift *shift;
	int dst_root;
	dev_t src_dev;
	struct link_table links;
	struct layer_copy_stats *stats;
	capsule_error *err;
	long pause_after; /* test hook: entries copied before test_pause("copy") */
};

static uint32_t shift_id(uint32_t id, uint32_t from, uint32_t to, uint32_t count)
{
	if (id >= from && id - from < count)
		return id - from + to;
	/* Only ids the sandbox maps can own its files; anything else reads as nobody. */
	return to + (count > 65534 ? 65534 : 0);
}

static int copy_owner(struct copier *cp, int dfd, const char *name, const struct stat *st)
{
	const struct id_shift *s = cp->shift;
	if (!s->chown)
		return 0;
	uid_t uid = shift_id(st->st_uid, s->src_uid, s->dst_uid, s->count);
	gid_t gid = shift_id(st->st_gid, s->src_gid, s->dst_gid, s->count);
	if (fchownat(dfd, name, uid, gid, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	return 0;
}

/* user.* carries overlayfs's own marks (user.overlay.opaque, .redirect, .origin: sandboxes
 * mount overlay with userxattr) and whatever the sandbox's programs set. Other namespaces
 * are not the sandbox's to give: security.capability is written for its user namespace
 * (v3, with a root id) and would mean something else on another range. */
static int copy_xattrs(int src_fd, int dst_fd, const char *what, capsule_error *err)
{
	char list[XATTR_LIST_MAX_BYTES];
	ssize_t n = flistxattr(src_fd, list, sizeof(list));
	if (n < 0)
		return errno == ENOTSUP || errno == EOPNOTSUPP ? 0 : cap_err(err, errno, "listing xattrs of '%s'", what);
	char value[XATTR_SIZE_MAX];
	for (ssize_t off = 0; off < n; off += (ssize_t)strlen(list + off) + 1) {
		const char *key = list + off;
		if (strncmp(key, "user.", 5) != 0)
			continue;
		ssize_t vn = fgetxattr(src_fd, key, value, sizeof(value));
		if (vn < 0)
			continue; /* removed meanwhile */
		if (fsetxattr(dst_fd, key, value, (size_t)vn, 0) < 0)
			return cap_err(err, errno, "setting xattr '%s' on '%s'", key, what);
	}
	return 0;
}

/* Bytes [*OFF, END) of IN to the same offsets of OUT by read and write, for filesystems that
 * copy_file_range cannot serve. *OFF ends where the copy stopped (short of END when IN shrank
 * under us). */
static int copy_range_rw(int in, int out, uint64_t *off, uint64_t end)
{
	/* On the heap, not in thread-local storage: a 64 KiB __thread buffer made every thread of
	 * every program linked with the library, and every start of the static CLI, map and set
	 * up 64 KiB of TLS for a copy few of them ever make. */
	enum { BUF = 1 << 16 };
	_cleanup_free_ char *buf = malloc(BUF);
	if (!buf)
		return -ENOMEM;
	while (*off < end) {
		size_t want = end - *off < BUF ? (size_t)(end - *off) : BUF;
		ssize_t n = pread(in, buf, want, (off_t)*off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return 0;
		for (ssize_t done = 0; done < n;) {
			ssize_t w = pwrite(out, buf + done, (size_t)(n - done), (off_t)(*off + (uint64_t)done));
			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0)
				return -errno;
			done += w;
		}
		*off += (uint64_t)n;
	}
	return 0;
}

/* The same through copy_file_range: in the kernel, server-side or reflinked where it can be. */
static int copy_range(int in, int out, uint64_t *off, uint64_t end)
{
	while (*off < end) {
		loff_t in_off = (loff_t)*off, out_off = (loff_t)*off;
		uint64_t want = end - *off > (1u << 30) ? (1u << 30) : end - *off;
		ssize_t n = copy_file_range(in, &in_off, out, &out_off, (size_t)want, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EXDEV || errno == ENOSYS || errno == EOPNOTSUPP || errno == EINVAL))
			return copy_range_rw(in, out, off, end);
		if (n < 0)
			return -errno;
		if (n == 0)
			return 0;
		*off += (uint64_t)n;
	}
	return 0;
}

/* The next extent of IN at or after OFF that holds data, [*START, *END) clipped to SIZE: 1, or 0
 * when only a hole is left, or -errno. A filesystem without SEEK_DATA has its whole rest as
 * data. */
static int next_data(int in, uint64_t off, uint64_t size, uint64_t *start, uint64_t *end)
{
	off_t data = lseek(in, (off_t)off, SEEK_DATA);
	if (data < 0 && errno == ENXIO)
		return 0;
	if (data < 0 && errno != EINVAL)
		return -errno;
	if (data < 0) {
		*start = off;
		*end = size;
		return 1;
	}
	off_t hole = lseek(in, data, SEEK_HOLE);
	if (hole < 0)
		return -errno;
	*start = (uint64_t)data;
	*end = (uint64_t)hole < size ? (uint64_t)hole : size;
	return *start < *end;
}

/* The data of a regular file: a reflink where the filesystem shares extents, else the extents
 * that hold data, one by one, and the size set last. A sandbox's sparse file (1 GiB of which
 * 16 KiB is written) thus costs the host what it stored: copy_file_range's in-kernel fallback
 * and read/write would both write its holes out as zeros. */
static int copy_data(int in, int out, uint64_t size)
{
	if (size == 0)
		return 0;
	if (ioctl(out, FICLONE, in) == 0)
		return 0;
	uint64_t off = 0, start = 0, end = 0;
	int more = 0;
	while (off < size && (more = next_data(in, off, size, &start, &end)) > 0) {
		uint64_t reached = start;
		int r = copy_range(in, out, &reached, end);
		if (r < 0)
			return r;
		if (reached < end) {
			size = reached; /* the file shrank under us: what is there is copied */
			break;
		}
		off = end;
	}
	if (off < size && more < 0)
		return more;
	return ftruncate(out, (off_t)size) < 0 ? -errno : 0;
}

int layer_copy_data(int in, int out, uint64_t size)
{
	return copy_data(in, out, size);
}

static size_t link_slot(const struct link_table *t, dev_t dev, ino_t ino)
{
	uint64_t h = ((uint64_t)ino ^ ((uint64_t)dev << 32 | (uint64_t)dev >> 32)) * 0x9e3779b97f4a7c15ull;
	size_t i = (size_t)(h >> 32) & (t->cap - 1);
	while (t->slots[i].path && (t->slots[i].dev != dev || t->slots[i].ino != ino))
		i = (i + 1) & (t->cap - 1);
	return i;
}

static int link_table_grow(struct link_table *t)
{
	size_t cap = t->cap ? t->cap * 2 : 256;
	struct hardlink *slots = calloc(cap, sizeof(*slots));
	if (!slots)
		return -ENOMEM;
	struct link_table bigger = { slots, cap, t->used, t->name_bytes };
	for (size_t i = 0; i < t->cap; i++)
		if (t->slots[i].path)
			slots[link_slot(&bigger, t->slots[i].dev, t->slots[i].ino)] = t->slots[i];
	free(t->slots);
	*t = bigger;
	return 0;
}

static void link_table_free(struct link_table *t)
{
	for (size_t i = 0; i < t->cap; i++)
		free(t->slots[i].path);
	free(t->slots);
	*t = (struct link_table){ 0 };
}

static int remember_link(struct copier *cp, const struct stat *st, const char *rel)
{
	struct link_table *t = &cp->links;
	size_t len = strlen(rel) + 1;
	if (t->name_bytes + len + LINK_ENTRY_OVERHEAD > LAYER_COPY_LINK_NAMES_MAX_BYTES)
		return cap_err_plain(cp->err, E2BIG, "too many hard-linked files (over %u MiB of their names) at '%s'",
				     LAYER_COPY_LINK_NAMES_MAX_BYTES >> 20, rel);
	if (2 * (t->used + 1) > t->cap && link_table_grow(t) < 0)
		return cap_err(cp->err, ENOMEM, "copying '%s'", rel);
	struct hardlink *slot = &t->slots[link_slot(t, st->st_dev, st->st_ino)];
	if (slot->path)
		return 0; /* only the first name is linked to */
	char *p = strdup(rel);
	if (!p)
		return cap_err(cp->err, ENOMEM, "copying '%s'", rel);
	*slot = (struct hardlink){ st->st_dev, st->st_ino, p };
	t->used++;
	t->name_bytes += len + LINK_ENTRY_OVERHEAD;
	return 0;
}

static const char *known_link(const struct copier *cp, const struct stat *st)
{
	const struct link_table *t = &cp->links;
	return t->cap ? t->slots[link_slot(t, st->st_dev, st->st_ino)].path : NULL;
}

static void set_times(int dfd, const char *name, const struct stat *st)
{
	struct timespec ts[2] = { st->st_atim, st->st_mtim };
	utimensat(dfd, name, ts, AT_SYMLINK_NOFOLLOW);
}

static int copy_dir(struct copier *cp, int src, int dst, char *rel, size_t rel_len, int depth);

DIR *dir_walk_open(int dirfd)
{
	int dup_fd = fcntl(dirfd, F_DUPFD_CLOEXEC, 3);
	DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
	if (!d) {
		if (dup_fd >= 0)
			close(dup_fd);
		return NULL;
	}
	/* The duplicate shares DIRFD's position, which an earlier walk may have left at the end. */
	rewinddir(d);
	return d;
}

static int copy_entry(struct copier *cp, int src, int dst, const char *name, char *rel, size_t rel_len, int depth)
{
	capsule_error *err = cp->err;
	struct stat st;
	if (fstatat(src, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : cap_err(err, errno, "stat '%s'", rel);
	if (cp->pause_after > 0 && cp->stats->entries + 1 == (uint64_t)cp->pause_after)
		layer_test_pause("copy");
	cp->stats->entries++;
	int r = 0;
	if (S_ISDIR(st.st_mode)) {
		if (st.st_dev != cp->src_dev)
			return 0; /* a mount point inside: not part of the layer */
		if (depth >= LAYER_COPY_MAX_DEPTH)
			return cap_err_plain(err, ELOOP, "folders nested deeper than %d levels at '%s'", LAYER_COPY_MAX_DEPTH, rel);
		_cleanup_close_ int sfd = openat(src, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (sfd < 0)
			return cap_err(err, errno, "open '%s'", rel);
		if (mkdirat(dst, name, 0700) < 0)
			return cap_err(err, errno, "mkdir '%s'", rel);
		_cleanup_close_ int dfd = openat(dst, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (dfd < 0)
			return cap_err(err, errno, "open copy of '%s'", rel);
		if ((r = copy_dir(cp, sfd, dfd, rel, rel_len, depth + 1)) < 0)
			return r;
		if ((r = copy_xattrs(sfd, dfd, rel, err)) < 0)
			return r;
		if ((r = copy_owner(cp, dst, name, &st)) < 0 || fchmod(dfd, st.st_mode & 07777) < 0)
			return cap_err(err, r < 0 ? -r : errno, "setting owner and mode of '%s'", rel);
		set_times(dst, name, &st);
		return 0;
	}
	if (!S_ISLNK(st.st_mode) && st.st_nlink > 1) {
		const char *first = known_link(cp, &st);
		if (first) {
			/* The first name was made by us, below folders we made; resolved again without
			 * links all the same, so that no later change could make it lead elsewhere. */
			_cleanup_close_ int target = sys_openat2(cp->dst_root, first, O_PATH | O_NOFOLLOW | O_CLOEXEC,
								 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV);
			char proc[64];
			snprintf(proc, sizeof(proc), "/proc/self/fd/%d", target);
			if (target < 0 || linkat(AT_FDCWD, proc, dst, name, AT_SYMLINK_FOLLOW) < 0)
				return cap_err(err, errno, "hard link '%s' to '%s'", rel, first);
			return 0;
		}
	}
	if (S_ISREG(st.st_mode)) {
		/* O_NONBLOCK: should the name have become a fifo since the stat, opening it does not
		 * wait; the fstat below then refuses it. */
		_cleanup_close_ int in = openat(src, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
		if (in < 0)
			return errno == ENOENT ? 0 : cap_err(err, errno, "open '%s'", rel);
		struct stat fst;
		if (fstat(in, &fst) < 0 || !S_ISREG(fst.st_mode) || fst.st_ino != st.st_ino)
			return cap_err_plain(err, EAGAIN, "'%s' changed while it was being saved", rel);
		_cleanup_close_ int out = openat(dst, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (out < 0)
			return cap_err(err, errno, "create '%s'", rel);
		if ((r = copy_data(in, out, (uint64_t)fst.st_size)) < 0)
			return cap_err(err, -r, "copying '%s'", rel);
		if ((r = copy_xattrs(in, out, rel, err)) < 0)
			return r;
		/* chown clears set-id bits: the mode goes on after it. */
		if ((r = copy_owner(cp, dst, name, &st)) < 0 || fchmod(out, st.st_mode & 07777) < 0)
			return cap_err(err, r < 0 ? -r : errno, "setting owner and mode of '%s'", rel);
		cp->stats->bytes += (uint64_t)fst.st_size;
	} else if (S_ISLNK(st.st_mode)) {
		char target[PATH_MAX];
		ssize_t n = readlinkat(src, name, target, sizeof(target) - 1);
		if (n < 0)
			return cap_err(err, errno, "readlink '%s'", rel);
		target[n] = '\0';
		if (symlinkat(target, dst, name) < 0)
			return cap_err(err, errno, "symlink '%s'", rel);
		if ((r = copy_owner(cp, dst, name, &st)) < 0)
			return cap_err(err, -r, "setting owner of '%s'", rel);
	} else if (S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0)) {
		/* An overlayfs whiteout: the file below is deleted. */
		if (mknodat(dst, name, S_IFCHR | 0000, makedev(0, 0)) < 0)
			return cap_err(err, errno, "whiteout '%s'", rel);
		if ((r = copy_owner(cp, dst, name, &st)) < 0)
			return cap_err(err, -r, "setting owner of '%s'", rel);
	} else if (S_ISFIFO(st.st_mode)) {
		if (mknodat(dst, name, S_IFIFO | 0600, 0) < 0)
			return cap_err(err, errno, "fifo '%s'", rel);
		if ((r = copy_owner(cp, dst, name, &st)) < 0 || fchmodat(dst, name, st.st_mode & 0777, 0) < 0)
			return cap_err(err, r < 0 ? -r : errno, "setting owner and mode of '%s'", rel);
	} else {
		/* Sockets and real devices: a socket means nothing once its server is gone, and a
		 * sandbox cannot make a device, so one found here was not made by it. */
		cp->stats->skipped++;
		return 0;
	}
	if (!S_ISLNK(st.st_mode) && st.st_nlink > 1 && (r = remember_link(cp, &st, rel)) < 0)
		return r;
	set_times(dst, name, &st);
	return 0;
}

static int copy_dir(struct copier *cp, int src, int dst, char *rel, size_t rel_len, int depth)
{
	DIR *d = dir_walk_open(src);
	if (!d) {
		return cap_err(cp->err, errno, "listing '%s'", rel_len ? rel : ".");
	}
	int r = 0;
	struct dirent *de;
	while (r == 0 && (de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		size_t n = strlen(de->d_name);
		if (rel_len + 1 + n >= PATH_MAX) {
			r = cap_err_plain(cp->err, ENAMETOOLONG, "path longer than %d bytes below '%s'", PATH_MAX, rel);
			break;
		}
		size_t l = rel_len;
		if (l)
			rel[l++] = '/';
		memcpy(rel + l, de->d_name, n + 1);
		r = copy_entry(cp, src, dst, de->d_name, rel, l + n, depth);
		rel[rel_len] = '\0';
	}
	closedir(d);
	return r;
}

/* Trees that a save or a revert replaced, to be removed once the caller has its answer (the
 * shim: removing 100 MiB took longer than copying it on our test machine). */
#define DEFERRED_MAX 8
static bool defer_removals;
static struct {
	int dirfd;
	char name[64];
} deferred[DEFERRED_MAX];
static size_t ndeferred;

void layer_defer_removals(bool on)
{
	defer_removals = on;
}

void layer_remove_replaced(int dirfd, const char *name)
{
	if (defer_removals && ndeferred < DEFERRED_MAX && strlen(name) < sizeof(deferred[0].name)) {
		int fd = fcntl(dirfd, F_DUPFD_CLOEXEC, 3);
		if (fd >= 0) {
			deferred[ndeferred].dirfd = fd;
			snprintf(deferred[ndeferred].name, sizeof(deferred[0].name), "%s", name);
			ndeferred++;
			return;
		}
	}
	rootless_rm_rf_at(dirfd, name);
}

static int by_fd(const void *a, const void *b)
{
	return *(const int *)a - *(const int *)b;
}

/* In a grandchild of ours, so that the (single threaded) shim goes on serving at once and
 * never has it to reap; it keeps nothing of ours but the folders it empties (not the
 * sandbox's lock, not a socket). */
void layer_run_deferred_removals(void)
{
	if (!ndeferred)
		return;
	pid_t pid = fork();
	if (pid == 0) {
		if (fork() != 0)
			_exit(0);
		int keep[DEFERRED_MAX];
		for (size_t i = 0; i < ndeferred; i++)
			keep[i] = deferred[i].dirfd;
		qsort(keep, ndeferred, sizeof(int), by_fd);
		unsigned lo = 3;
		for (size_t i = 0; i < ndeferred; i++) {
			if ((unsigned)keep[i] > lo)
				syscall(SYS_close_range, lo, (unsigned)keep[i] - 1, 0);
			lo = (unsigned)keep[i] + 1;
		}
		syscall(SYS_close_range, lo, ~0U, 0);
		if (nice(10) < 0) {
			/* a lower priority is a courtesy, not a need */
		}
		for (size_t i = 0; i < ndeferred; i++)
			rootless_rm_rf_at(deferred[i].dirfd, deferred[i].name);
		_exit(0);
	}
	if (pid > 0)
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
	for (size_t i = 0; i < ndeferred; i++) {
		/* No child: remove them here. */
		if (pid < 0)
			rootless_rm_rf_at(deferred[i].dirfd, deferred[i].name);
		close(deferred[i].dirfd);
	}
	ndeferred = 0;
}

void layer_test_pause(const char *stage)
{
	/* tests/e2e/test_saves.py: CAPSULE_TEST_SAVE_PAUSE=STAGE, announced in saves/.test-paused. */
	home_test_pause("CAPSULE_TEST_SAVE_PAUSE", stage, "saves", ".test-paused");
}

int layer_copy(int src, int dst, const struct id_shift *shift, struct layer_copy_stats *stats, capsule_error *err)
{
	struct stat st;
	if (fstat(src, &st) < 0)
		return cap_err(err, errno, "stat layer");
	memset(stats, 0, sizeof(*stats));
	struct copier cp = { .shift = shift, .dst_root = dst, .src_dev = st.st_dev, .stats = stats, .err = err };
	const char *pause = getenv("CAPSULE_TEST_SAVE_PAUSE");
	if (pause && !strncmp(pause, "copy:", 5))
		cp.pause_after = strtol(pause + 5, NULL, 10);
	char rel[PATH_MAX] = "";
	int r = copy_dir(&cp, src, dst, rel, 0, 0);
	if (r == 0)
		r = copy_xattrs(src, dst, ".", err);
	link_table_free(&cp.links);
	return r;
}

uint64_t layer_disk_usage(int dirfd, int depth)
{
	DIR *d = dir_walk_open(dirfd);
	if (!d) {
		return 0;
	}
	uint64_t total = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		struct stat st;
		if (fstatat(dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		total += (uint64_t)st.st_blocks * 512;
		if (S_ISDIR(st.st_mode) && depth < LAYER_COPY_MAX_DEPTH) {
			_cleanup_close_ int sub = openat(dirfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (sub >= 0)
				total += layer_disk_usage(sub, depth + 1);
		}
	}
	closedir(d);
	return total;
}
