/* The vm level's store and the rules that say what in it is still used (vm_store.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "json.h"
#include "util.h"
#include "vm_store.h"

#define ROOTFS_FORMAT "capsule-vm-rootfs-v1"
#define LAYERS_FILE_MAX ((CAPSULE_MAX_LAYERS + 1) * (PATH_MAX + 1))
#define PINS_MAX 16

static uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 0x100000001b3ull;
	return h;
}

/* Layer folders are never changed once in place (a replaced save is a new folder), so a
 * folder's identity (path, device, inode, birth time) names its content: a cache key, not a
 * security check (whoever can write $CAPSULE_HOME can replace the cache anyway). */
int vm_store_rootfs_key(char *const *layers, size_t n, char key[VM_STORE_KEY_LEN + 1], capsule_error *err)
{
	uint64_t h1 = 0xcbf29ce484222325ull, h2 = 0x84222325cbf29ce4ull;
	h1 = fnv1a(h1, ROOTFS_FORMAT, sizeof(ROOTFS_FORMAT));
	h2 = fnv1a(h2, ROOTFS_FORMAT, sizeof(ROOTFS_FORMAT));
	for (size_t i = 0; i < n; i++) {
		struct statx sx;
		if (statx(AT_FDCWD, layers[i], AT_SYMLINK_NOFOLLOW, STATX_INO | STATX_BTIME | STATX_CTIME, &sx) < 0)
			return cap_err(err, errno, "image layer '%s'", layers[i]);
		struct statx_timestamp t = (sx.stx_mask & STATX_BTIME) ? sx.stx_btime : sx.stx_ctime;
		uint64_t id[5] = { sx.stx_dev_major, sx.stx_dev_minor, sx.stx_ino, (uint64_t)t.tv_sec, t.tv_nsec };
		h1 = fnv1a(fnv1a(h1, layers[i], strlen(layers[i]) + 1), id, sizeof(id));
		h2 = fnv1a(fnv1a(h2, layers[i], strlen(layers[i]) + 1), id, sizeof(id));
	}
	snprintf(key, VM_STORE_KEY_LEN + 1, "%016llx%016llx", (unsigned long long)h1, (unsigned long long)h2);
	return 0;
}

/* The pins of this process: held until its vm stops for good (QEMU reads the kernel and
 * initramfs again at every boot, the root disk all along), or it exits. */
static struct {
	int fd;
	dev_t dev;
	ino_t ino;
} pins[PINS_MAX];
static size_t npins;

int vm_store_pin(int dir_fd, const char *name)
{
	int fd = openat(dir_fd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	struct stat st;
	int r = 0;
	while (flock(fd, LOCK_SH) < 0)
		if (errno != EINTR) {
			r = -errno;
			break;
		}
	/* Collection holds its lock while it unlinks: a pin that waited for it finds the file gone. */
	if (r == 0 && fstat(fd, &st) < 0)
		r = -errno;
	else if (r == 0 && (st.st_nlink == 0 || !S_ISREG(st.st_mode)))
		r = -ENOENT;
	if (r < 0) {
		close(fd);
		return r;
	}
	/* The time of last use, which says which kernel and initramfs are the current ones: the
	 * access time, as a read would set it (the content's time stays the build's). */
	futimens(fd, (const struct timespec[2]){ { .tv_nsec = UTIME_NOW }, { .tv_nsec = UTIME_OMIT } });
	for (size_t i = 0; i < npins; i++)
		if (pins[i].dev == st.st_dev && pins[i].ino == st.st_ino) {
			close(fd);
			return 0;
		}
	if (npins == PINS_MAX) {
		close(fd);
		return -EMFILE;
	}
	pins[npins].fd = fd;
	pins[npins].dev = st.st_dev;
	pins[npins++].ino = st.st_ino;
	return 0;
}

void vm_store_unpin_all(void)
{
	for (size_t i = 0; i < npins; i++)
		close(pins[i].fd);
	npins = 0;
}

int vm_store_build_lock(int dir_fd, const char *lock_name, capsule_error *err)
{
	for (;;) {
		int fd = openat(dir_fd, lock_name, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (fd < 0)
			return cap_err(err, errno, "locking '%s/" VM_STORE_DIR "/%s'", capsule_home(), lock_name);
		struct stat held, named;
		int r = 0;
		while (flock(fd, LOCK_EX) < 0)
			if (errno != EINTR) {
				r = -errno;
				break;
			}
		if (r == 0 && fstat(fd, &held) < 0)
			r = -errno;
		if (r < 0) {
			close(fd);
			return cap_err(err, -r, "locking '%s/" VM_STORE_DIR "/%s'", capsule_home(), lock_name);
		}
		if (fstatat(dir_fd, lock_name, &named, AT_SYMLINK_NOFOLLOW) == 0 && named.st_dev == held.st_dev &&
		    named.st_ino == held.st_ino)
			return fd;
		close(fd);
	}
}

int vm_store_record_layers(int dir_fd, const char *key, char *const *layers, size_t n, capsule_error *err)
{
	size_t len = 0;
	for (size_t i = 0; i < n; i++) {
		if (strchr(layers[i], '\n'))
			return cap_err_plain(err, EINVAL, "image layer '%s': a newline in its path", layers[i]);
		len += strlen(layers[i]) + 1;
	}
	_cleanup_free_ char *text = malloc(len + 1);
	if (!text)
		return cap_err(err, ENOMEM, "vm root disk layers");
	size_t o = 0;
	for (size_t i = 0; i < n; i++)
		o += (size_t)sprintf(text + o, "%s\n", layers[i]);
	char name[64];
	snprintf(name, sizeof(name), "rootfs-%s.layers", key);
	int r = write_file_atomic_at(dir_fd, name, text, o, 0600, true);
	return r < 0 ? cap_err(err, -r, "writing '%s/" VM_STORE_DIR "/%s'", capsule_home(), name) : 0;
}

/* ---- what uses the store ---- */

struct file_ids {
	struct {
		dev_t dev;
		ino_t ino;
	} *v;
	size_t n, cap;
};

static void ids_add(struct file_ids *s, dev_t dev, ino_t ino)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 16;
		void *v = realloc(s->v, cap * sizeof(*s->v));
		if (!v)
			return;
		s->v = v;
		s->cap = cap;
	}
	s->v[s->n].dev = dev;
	s->v[s->n++].ino = ino;
}

static bool ids_has(const struct file_ids *s, dev_t dev, ino_t ino)
{
	for (size_t i = 0; i < s->n; i++)
		if (s->v[i].dev == dev && s->v[i].ino == ino)
			return true;
	return false;
}

/* The backing file a qcow2 names (its header: magic, version, then the name's offset, 8
 * bytes, and length, 4, big-endian), as the file it is now. */
static void note_backing(int dir_fd, const char *name, struct file_ids *backing)
{
	_cleanup_close_ int fd = openat(dir_fd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	struct stat st;
	unsigned char h[20];
	if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || pread(fd, h, sizeof(h), 0) != (ssize_t)sizeof(h) ||
	    memcmp(h, "QFI\xfb", 4) != 0)
		return;
	uint64_t off = 0;
	uint32_t len = 0;
	for (int i = 8; i < 16; i++)
		off = off << 8 | h[i];
	for (int i = 16; i < 20; i++)
		len = len << 8 | h[i];
	char path[PATH_MAX];
	if (!off || !len || len >= sizeof(path) || pread(fd, path, len, (off_t)off) != (ssize_t)len)
		return;
	path[len] = '\0';
	/* Only the name's file: stat reads no content and follows what QEMU would follow. */
	if (path[0] == '/' && stat(path, &st) == 0)
		ids_add(backing, st.st_dev, st.st_ino);
}

/* Every qcow2 directly in SUB/<each>/ (and, with DEEPER, SUB/<each>/DEEPER/<each>/): the
 * disks of sandboxes, of their checkpoints and of saves, those being written included. */
static void scan_disks(int home, const char *sub, const char *deeper, struct file_ids *backing)
{
	_cleanup_close_ int fd = openat(home, sub, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(dup(fd)) : NULL;
	if (!d)
		return;
	for (struct dirent *de; (de = readdir(d));) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		_cleanup_close_ int one = openat(fd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		DIR *e = one >= 0 ? fdopendir(dup(one)) : NULL;
		if (!e)
			continue;
		for (struct dirent *f; (f = readdir(e));)
			if (strstr(f->d_name, ".qcow2"))
				note_backing(one, f->d_name, backing);
		closedir(e);
		if (deeper) {
			_cleanup_close_ int inner = openat(one, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
			if (inner >= 0)
				scan_disks(inner, deeper, NULL, backing);
		}
	}
	closedir(d);
}

/* Does rootfs-<KEY>.layers name folders that are all still there, and the same ones? */
static bool layers_current(int dir_fd, const char *key)
{
	char name[64];
	snprintf(name, sizeof(name), "rootfs-%s.layers", key);
	_cleanup_free_ char *text = NULL;
	size_t len;
	if (read_file_at(dir_fd, name, LAYERS_FILE_MAX, &text, &len) < 0)
		return false;
	char *layers[CAPSULE_MAX_LAYERS + 1];
	size_t n = 0;
	for (char *save = NULL, *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (n == ARRAY_SIZE(layers))
			return false;
		layers[n++] = line;
	}
	char now[VM_STORE_KEY_LEN + 1];
	return n && vm_store_rootfs_key(layers, n, now, NULL) == 0 && !strcmp(now, key);
}

/* ---- collection ---- */

enum entry_kind { KIND_ROOTFS, KIND_INITRAMFS, KIND_KERNEL };
static const char *const kind_names[] = { "rootfs", "initramfs", "kernel" };

struct walk {
	int dir;
	enum vm_store_scope scope;
	bool remove;
	struct file_ids backing;
	struct timespec latest[3]; /* the last use of each kind of boot file */
	struct vm_store_tally all, kept, freed;
	struct json_writer *w;
};

static bool has_suffix(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);
	return a >= b && !strcmp(s + a - b, suffix);
}

static bool is_key(const char *s, size_t n)
{
	if (n != VM_STORE_KEY_LEN)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

/* The key of a root disk's file, its lock, its layer list or a build's leftover; else false. */
static bool rootfs_key_of(const char *name, char key[VM_STORE_KEY_LEN + 1])
{
	const char *p;
	if (!strncmp(name, "rootfs-", 7))
		p = name + 7;
	else if (!strncmp(name, ".rootfs-", 8))
		p = name + 8;
	else
		return false;
	if (!is_key(p, VM_STORE_KEY_LEN) || p[VM_STORE_KEY_LEN] != '.')
		return false;
	if (name[0] == 'r' && strcmp(p + VM_STORE_KEY_LEN, ".ext4") && strcmp(p + VM_STORE_KEY_LEN, ".lock") &&
	    strcmp(p + VM_STORE_KEY_LEN, ".layers"))
		return false;
	memcpy(key, p, VM_STORE_KEY_LEN);
	key[VM_STORE_KEY_LEN] = '\0';
	return true;
}

static int boot_kind(const char *name)
{
	if (!strncmp(name, "initramfs-", 10) && has_suffix(name, ".cpio"))
		return KIND_INITRAMFS;
	if (!strncmp(name, "vmlinux-", 8))
		return KIND_KERNEL;
	return -1;
}

static uint64_t disk_bytes(const struct stat *st)
{
	return (uint64_t)st->st_blocks * 512;
}

/* One entry, as found: counted, listed, and removed when nothing keeps it (KEPT: why it
 * stays, or NULL). The caller holds whatever lock makes the removal safe. */
static void settle(struct walk *wk, const char *name, int kind, const struct stat *st, const char *kept)
{
	uint64_t bytes = disk_bytes(st);
	wk->all.entries++;
	wk->all.bytes += bytes;
	if (kept) {
		wk->kept.entries++;
		wk->kept.bytes += bytes;
	}
	if (wk->w) {
		json_object_begin(wk->w);
		json_kv_string(wk->w, "name", name);
		json_kv_string(wk->w, "kind", kind_names[kind]);
		json_kv_uint(wk->w, "bytes", bytes);
		json_key(wk->w, "kept");
		if (kept)
			json_string(wk->w, kept);
		else
			json_null(wk->w);
		json_object_end(wk->w);
	}
	if (!kept && wk->remove && unlinkat(wk->dir, name, 0) == 0) {
		wk->freed.entries++;
		wk->freed.bytes += bytes;
	}
}

/* A file whose exclusive flock cannot be had now is some process's pin. */
static bool pinned(int fd)
{
	return flock(fd, LOCK_EX | LOCK_NB) < 0;
}

/* Remove what a killed build of KEY left (.rootfs-<KEY>.*): the caller holds KEY's lock. */
static void remove_leftovers(struct walk *wk, const char *key)
{
	char prefix[64];
	snprintf(prefix, sizeof(prefix), ".rootfs-%s.", key);
	int fd = openat(wk->dir, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	if (!d) {
		if (fd >= 0)
			close(fd);
		return;
	}
	for (struct dirent *de; (de = readdir(d));) {
		struct stat st;
		if (strncmp(de->d_name, prefix, strlen(prefix)) || fstatat(wk->dir, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		if (wk->remove && (unlinkat(wk->dir, de->d_name, 0) == 0 || unlinkat(wk->dir, de->d_name, AT_REMOVEDIR) == 0)) {
			wk->freed.bytes += disk_bytes(&st);
			wk->freed.entries++;
		}
	}
	closedir(d);
}

static void settle_rootfs(struct walk *wk, const char *key)
{
	char disk[64], lock[64], layers[64];
	snprintf(disk, sizeof(disk), "rootfs-%s.ext4", key);
	snprintf(lock, sizeof(lock), "rootfs-%s.lock", key);
	snprintf(layers, sizeof(layers), "rootfs-%s.layers", key);
	struct stat st, held, named;
	/* The build lock first: a builder holds it until its disk is in place and pinned, so
	 * what is there is looked at only once it is had. */
	_cleanup_close_ int lock_fd = openat(wk->dir, lock, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	bool locked = lock_fd >= 0 && flock(lock_fd, LOCK_EX | LOCK_NB) == 0 && fstat(lock_fd, &held) == 0 &&
		      fstatat(wk->dir, lock, &named, AT_SYMLINK_NOFOLLOW) == 0 && held.st_ino == named.st_ino &&
		      held.st_dev == named.st_dev;
	bool have_disk = fstatat(wk->dir, disk, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode);
	if (!locked) {
		if (have_disk)
			settle(wk, disk, KIND_ROOTFS, &st, "building");
		return;
	}
	remove_leftovers(wk, key);
	const char *kept = NULL;
	_cleanup_close_ int disk_fd = -1;
	if (have_disk) {
		disk_fd = openat(wk->dir, disk, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
		if (disk_fd < 0 || fstat(disk_fd, &st) < 0)
			return;
		if (pinned(disk_fd))
			kept = "running";
		else if (ids_has(&wk->backing, st.st_dev, st.st_ino))
			kept = "disk";
		else if (layers_current(wk->dir, key))
			kept = "layers";
		settle(wk, disk, KIND_ROOTFS, &st, kept);
	}
	/* Gone (or never made: a build that died): its list and its lock go too, the lock last,
	 * while still held, so a builder waiting on it opens the name again. */
	if (!kept && wk->remove) {
		unlinkat(wk->dir, layers, 0);
		unlinkat(wk->dir, lock, 0);
	}
}

static void settle_boot(struct walk *wk, const char *name, int kind)
{
	_cleanup_close_ int fd = openat(wk->dir, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
		return;
	const char *kept = NULL;
	if (pinned(fd))
		kept = "running";
	else if (wk->scope != VM_STORE_ALL || (st.st_atim.tv_sec == wk->latest[kind].tv_sec &&
					       st.st_atim.tv_nsec == wk->latest[kind].tv_nsec))
		kept = "latest";
	settle(wk, name, kind, &st, kept);
}

/* .tmp-<name>-<pid>: a kernel or initramfs being written by PID, or one a kill left. */
static void settle_tmp(struct walk *wk, const char *name)
{
	const char *dash = strrchr(name, '-');
	char *end;
	long pid = dash ? strtol(dash + 1, &end, 10) : 0;
	struct stat st;
	if (!dash || *end || pid <= 0 || fstatat(wk->dir, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
		return;
	/* A live pid, even one reused, keeps it: never a file still being written. */
	if (kill((pid_t)pid, 0) == 0 || errno != ESRCH)
		return;
	if (wk->remove && unlinkat(wk->dir, name, 0) == 0) {
		wk->freed.entries++;
		wk->freed.bytes += disk_bytes(&st);
	}
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int walk_store(struct walk *wk, capsule_error *err)
{
	_cleanup_close_ int home = -1;
	int r = home_open(&home, err);
	if (r < 0)
		return r;
	wk->dir = openat(home, VM_STORE_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (wk->dir < 0)
		return errno == ENOENT ? 0 : cap_err(err, errno, "open '%s/" VM_STORE_DIR "'", capsule_home());
	scan_disks(home, "run", "checkpoints", &wk->backing);
	scan_disks(home, "saves", NULL, &wk->backing);
	/* The names first: the walk removes files, and readdir need not see a changing folder
	 * whole. Sorted, so each root disk's files come together. */
	DIR *d = fdopendir(dup(wk->dir));
	if (!d) {
		r = cap_err(err, errno, "listing '%s/" VM_STORE_DIR "'", capsule_home());
		close(wk->dir);
		return r;
	}
	char **names = NULL;
	size_t n = 0, cap = 0;
	for (struct dirent *de; (de = readdir(d));) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (n == cap) {
			char **v = realloc(names, (cap = cap ? 2 * cap : 64) * sizeof(*names));
			if (!v)
				break;
			names = v;
		}
		if (!(names[n] = strdup(de->d_name)))
			break;
		int kind = boot_kind(names[n]);
		struct stat st;
		if (kind >= 0 && fstatat(wk->dir, names[n], &st, AT_SYMLINK_NOFOLLOW) == 0 &&
		    (st.st_atim.tv_sec > wk->latest[kind].tv_sec ||
		     (st.st_atim.tv_sec == wk->latest[kind].tv_sec && st.st_atim.tv_nsec > wk->latest[kind].tv_nsec)))
			wk->latest[kind] = st.st_atim;
		n++;
	}
	closedir(d);
	qsort(names, n, sizeof(*names), cmp_names);
	char last[VM_STORE_KEY_LEN + 1] = "";
	for (size_t i = 0; i < n; i++) {
		char key[VM_STORE_KEY_LEN + 1];
		int kind;
		if (rootfs_key_of(names[i], key)) {
			/* Sorted: ".rootfs-K" before "rootfs-K", so each key may come twice at most. */
			if (strcmp(key, last))
				settle_rootfs(wk, key);
			snprintf(last, sizeof(last), "%s", key);
		} else if ((kind = boot_kind(names[i])) >= 0) {
			settle_boot(wk, names[i], kind);
		} else if (!strncmp(names[i], ".tmp-", 5)) {
			settle_tmp(wk, names[i]);
		}
	}
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	close(wk->dir);
	return 0;
}

int vm_store_collect(enum vm_store_scope scope, struct vm_store_tally *freed, capsule_error *err)
{
	struct walk wk = { .scope = scope, .remove = true };
	int r = walk_store(&wk, err);
	free(wk.backing.v);
	if (freed)
		*freed = wk.freed;
	return r;
}

int vm_store_usage_json(struct json_writer *w, capsule_error *err)
{
	/* What prune would do, done without removing: the same walk, the same rules. */
	struct walk wk = { .scope = VM_STORE_ALL, .remove = false, .w = w };
	json_key(w, "vm");
	json_object_begin(w);
	json_key(w, "files");
	json_array_begin(w);
	int r = walk_store(&wk, err);
	free(wk.backing.v);
	json_array_end(w);
	json_kv_uint(w, "entries", wk.all.entries);
	json_kv_uint(w, "bytes", wk.all.bytes);
	json_kv_uint(w, "kept_bytes", wk.kept.bytes);
	json_kv_uint(w, "reclaimable", wk.all.bytes - wk.kept.bytes);
	json_object_end(w);
	return r;
}
