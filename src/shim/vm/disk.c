/* The vm level's root disk: the sandbox's layer stack (the image's layers, saves' layers on
 * top; for the host image its skeleton below them) flattened into one ext4 file system,
 * built once per stack and shared read-only, plus a qcow2 overlay of the sandbox's own in
 * run/<name>/ that takes every write the guest makes.
 *
 *   $CAPSULE_HOME/vm/rootfs-<key>.ext4    raw ext4, never written after its rename
 *   run/<name>/disk.qcow2                 backing file: the base above (raw)
 *
 * The store's names, locks and what keeps an entry from collection are src/lib/vm_store.h's.
 *
 * Flattening is the kernel's own overlayfs: a short-lived child makes a private mount
 * namespace, mounts the layers as a read-only overlay (userxattr: the layers are in the
 * format sandboxes mount, opaque folders marked with user.overlay.opaque, whiteouts 0:0
 * character devices) and execs mkfs.ext4 -d on the merged view, so whiteouts and opaque
 * folders mean exactly what they mean in a container. The host never mounts the ext4 it
 * made, nor any disk a guest wrote: only QEMU and the guest's kernel read those.
 *
 * For a user (docs/rootless.md) the build runs as root of a user namespace that maps the
 * user's ids as a sandbox's are (rootless_run_mapped): the mount namespace is that
 * namespace's, the layers' files of subordinate ids are readable there, and mkfs.ext4 -d
 * records their owners as the sandbox sees them (0 for the user's own files). A user without
 * ranges gets a namespace of the single id, made by the child itself. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "child.h"
#include "rootless.h"
#include "util.h"
#include "vm.h"
#include "vm_store.h"

#define TOOL_OUTPUT_MAX 512

static const char *const mkfs_candidates[] = { "/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4", "/usr/bin/mkfs.ext4" };

/* Wait for PID, with its stdout and stderr (the read end OUT) kept as the message: the last
 * TOOL_OUTPUT_MAX bytes, on one line. 0 when it exited 0. */
static int wait_tool(pid_t pid, int out, const char *what, capsule_error *err)
{
	char text[TOOL_OUTPUT_MAX + 1];
	size_t have = 0;
	for (;;) {
		char buf[4096];
		ssize_t n = read(out, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		for (ssize_t i = 0; i < n; i++) {
			if (have == TOOL_OUTPUT_MAX) {
				memmove(text, text + 1, --have);
			}
			text[have++] = buf[i] == '\n' || buf[i] == '\r' ? ' ' : buf[i];
		}
	}
	close(out);
	while (have && text[have - 1] == ' ')
		have--;
	text[have] = '\0';
	int st;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return cap_err(err, errno, "waiting for %s", what);
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
		return 0;
	return cap_err_plain(err, EIO, "%s failed (status %d)%s%s", what,
			     WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), have ? ": " : "", text);
}

/* fork, with the child's stdout and stderr on a pipe whose read end is *OUT. */
static pid_t fork_tool(int *out, capsule_error *err)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0) {
		cap_err(err, errno, "pipe");
		return -1;
	}
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid < 0) {
		cap_err(err, errno, "fork");
		close(p[0]);
		close(p[1]);
		return -1;
	}
	if (pid == 0) {
		shim_child_prepare(parent);
		int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
		if (null < 0 || dup2(null, 0) < 0 || dup2(p[1], 1) < 0 || dup2(p[1], 2) < 0)
			_exit(127);
		return 0;
	}
	close(p[1]);
	*out = p[0];
	return pid;
}

/* What the merged tree holds, for the file system's size. */
static uint64_t walk_bytes, walk_entries;

static int walk_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)path, (void)flag, (void)ftw;
	walk_bytes += (uint64_t)st->st_blocks * 512;
	walk_entries++;
	return 0;
}

/* The file system holds the tree with room to spare (a quarter, and 48 MiB for the journal
 * and metadata), and inodes for 1.25 times its entries at mkfs's usual 16 KiB a inode (an
 * online resize keeps the inodes-per-group ratio, so a grown disk has inodes in proportion). */
static uint64_t rootfs_size(void)
{
	uint64_t size = walk_bytes + walk_bytes / 4 + (48ull << 20);
	uint64_t for_inodes = walk_entries * 16384 * 5 / 4;
	if (size < for_inodes)
		size = for_inodes;
	if (size < VM_DISK_MIN_BYTES)
		size = VM_DISK_MIN_BYTES;
	return (size + (1ull << 20) - 1) & ~((1ull << 20) - 1);
}

/* Root of a new user namespace that maps the caller's own ids only. -1 with errno. */
static int single_id_userns(void)
{
	uid_t uid = geteuid();
	gid_t gid = getegid();
	char map[64];
	if (prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) < 0 || unshare(CLONE_NEWUSER) < 0)
		return -1;
	pid_t self = getpid();
	int r = proc_pid_write(self, "setgroups", "deny", NULL);
	if (r == 0) {
		snprintf(map, sizeof(map), "0 %u 1", (unsigned)uid);
		r = proc_pid_write(self, "uid_map", map, NULL);
	}
	if (r == 0) {
		snprintf(map, sizeof(map), "0 %u 1", (unsigned)gid);
		r = proc_pid_write(self, "gid_map", map, NULL);
	}
	if (r < 0) {
		errno = -r;
		return -1;
	}
	return 0;
}

/* The child: a private mount namespace, the overlay, the size, then mkfs.ext4 -d. Its
 * messages go to stderr, which the shim reads back. Layers are named by /proc/self/fd/N so
 * that 128 of them fit in one page of mount options. */
static _Noreturn void build_child(int vm_dir, char *const *layers, size_t n, const char *mnt, const char *empty,
				  const char *image, const char *mkfs)
{
	/* A user without ranges is still a user here: the namespace of the single id is made now
	 * (dumpable, or /proc/self's map files would be root's). */
	if (geteuid() != 0 && single_id_userns() < 0) {
		dprintf(2, "user namespace: %s\n", strerror(errno));
		_exit(1);
	}
	/* The working folder moves into the new namespace with us; an fd opened before would
	 * still name the old one's mount, which overlayfs refuses as a layer. */
	if (fchdir(vm_dir) < 0 || unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
		dprintf(2, "private mount namespace: %s\n", strerror(errno));
		_exit(1);
	}
	char opts[4096];
	size_t len = (size_t)snprintf(opts, sizeof(opts), "userxattr,lowerdir=");
	/* overlayfs lists the top layer first; the empty folder at the bottom makes two lower
	 * layers where the stack has one (overlay needs two without an upper). */
	for (size_t i = n; i-- > 0;) {
		int fd = open(layers[i], O_PATH | O_DIRECTORY | O_NOFOLLOW);
		if (fd < 0) {
			dprintf(2, "image layer '%s': %s\n", layers[i], strerror(errno));
			_exit(1);
		}
		len += (size_t)snprintf(opts + len, sizeof(opts) - len, "/proc/self/fd/%d:", fd);
	}
	int empty_fd = open(empty, O_PATH | O_DIRECTORY | O_NOFOLLOW);
	if (empty_fd < 0) {
		dprintf(2, "'%s': %s\n", empty, strerror(errno));
		_exit(1);
	}
	len += (size_t)snprintf(opts + len, sizeof(opts) - len, "/proc/self/fd/%d", empty_fd);
	if (len >= sizeof(opts)) {
		dprintf(2, "too many layers for one overlay\n");
		_exit(1);
	}
	if (mount("overlay", mnt, "overlay", MS_RDONLY | MS_NOSUID | MS_NODEV, opts) < 0) {
		dprintf(2, "mounting the layers as an overlay: %s\n", strerror(errno));
		_exit(1);
	}
	if (nftw(mnt, walk_one, 32, FTW_PHYS | FTW_MOUNT) < 0) {
		dprintf(2, "walking the layers: %s\n", strerror(errno));
		_exit(1);
	}
	int fd = open(image, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0 || ftruncate(fd, (off_t)rootfs_size()) < 0) {
		dprintf(2, "creating '%s': %s\n", image, strerror(errno));
		_exit(1);
	}
	close(fd);
	/* -m 0: the guest's root is root, a reserve is no one's. nodiscard: discarding a file
	 * only punches holes it does not have. lazy_itable_init: the file is sparse, its
	 * untouched inode tables already read as zeros. */
	execl(mkfs, mkfs, "-q", "-F", "-m", "0", "-b", "4096", "-i", "16384", "-I", "256", "-L", "capsule-root", "-E",
	      "nodiscard,lazy_itable_init=1", "-d", mnt, image, (char *)NULL);
	dprintf(2, "exec '%s': %s\n", mkfs, strerror(errno));
	_exit(127);
}

/* A builder killed mid-way left .rootfs-<key>.* behind; we hold the key's lock, so no one
 * else is using them. */
static void sweep_leftovers(int vm_dir, const char *key)
{
	char prefix[64];
	snprintf(prefix, sizeof(prefix), ".rootfs-%s.", key);
	int fd = openat(vm_dir, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	if (!d) {
		if (fd >= 0)
			close(fd);
		return;
	}
	struct dirent *de;
	while ((de = readdir(d)))
		if (!strncmp(de->d_name, prefix, strlen(prefix)) && unlinkat(vm_dir, de->d_name, 0) < 0)
			unlinkat(vm_dir, de->d_name, AT_REMOVEDIR);
	closedir(d);
}

static int build_rootfs(int vm_dir, char *const *layers, size_t n, const char *key, const char *name,
			capsule_error *err)
{
	const char *mkfs = NULL;
	for (size_t i = 0; i < ARRAY_SIZE(mkfs_candidates) && !mkfs; i++)
		if (access(mkfs_candidates[i], X_OK) == 0)
			mkfs = mkfs_candidates[i];
	if (!mkfs)
		return cap_err_plain(err, ENOENT, "vm root disk: mkfs.ext4 not found (install e2fsprogs)");
	sweep_leftovers(vm_dir, key);
	char tmp[96], mnt[96], empty[96];
	snprintf(tmp, sizeof(tmp), ".rootfs-%s.%d.tmp", key, (int)getpid());
	snprintf(mnt, sizeof(mnt), ".rootfs-%s.%d.mnt", key, (int)getpid());
	snprintf(empty, sizeof(empty), ".rootfs-%s.%d.empty", key, (int)getpid());
	if (mkdirat(vm_dir, mnt, 0700) < 0 || mkdirat(vm_dir, empty, 0755) < 0) {
		int r = cap_err(err, errno, "mkdir '%s/vm/%s'", capsule_home(), mnt);
		sweep_leftovers(vm_dir, key);
		return r;
	}
	int out;
	pid_t pid = fork_tool(&out, err);
	if (pid == 0)
		build_child(vm_dir, layers, n, mnt, empty, tmp, mkfs);
	int r = pid < 0 ? -EIO : wait_tool(pid, out, "building the vm root disk (mkfs.ext4)", err);
	if (r == 0) {
		int fd = openat(vm_dir, tmp, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		if (fd < 0 || fsync(fd) < 0)
			r = cap_err(err, errno, "vm root disk '%s/vm/%s'", capsule_home(), tmp);
		if (fd >= 0)
			close(fd);
	}
	if (r == 0)
		r = vm_store_record_layers(vm_dir, key, layers, n, err);
	if (r == 0 && renameat(vm_dir, tmp, vm_dir, name) < 0)
		r = cap_err(err, errno, "renaming the vm root disk into '%s/vm/%s'", capsule_home(), name);
	unlinkat(vm_dir, mnt, AT_REMOVEDIR);
	unlinkat(vm_dir, empty, AT_REMOVEDIR);
	if (r < 0)
		unlinkat(vm_dir, tmp, 0);
	return r;
}

struct build_args {
	int vm_dir;
	char *const *layers;
	size_t n;
	const char *key, *name;
};

static int build_mapped(void *arg, capsule_error *err)
{
	struct build_args *a = arg;
	return build_rootfs(a->vm_dir, a->layers, a->n, a->key, a->name, err);
}

int vm_rootfs(char *const *layers, size_t n, char **path, capsule_error *err)
{
	char key[VM_STORE_KEY_LEN + 1];
	int r = vm_store_rootfs_key(layers, n, key, err);
	if (r < 0)
		return r;
	_cleanup_close_ int dir = -1;
	if ((r = home_subdir_open(VM_STORE_DIR, &dir, err)) < 0)
		return r;
	char name[64], lock[64];
	snprintf(name, sizeof(name), "rootfs-%s.ext4", key);
	snprintf(lock, sizeof(lock), "rootfs-%s.lock", key);
	if (asprintf(path, "%s/" VM_STORE_DIR "/%s", capsule_home(), name) < 0) {
		*path = NULL;
		return cap_err(err, ENOMEM, "vm root disk path");
	}
	/* Pinned until the vm stops for good: QEMU reads it all along, and the qcow2 that will name it
	 * does not exist yet. */
	if (vm_store_pin(dir, name) == 0)
		return 0;
	/* Two sandboxes of one image starting at once build it once: the second waits here and
	 * then finds it in place. */
	_cleanup_close_ int lock_fd = vm_store_build_lock(dir, lock, err);
	if (lock_fd < 0) {
		r = lock_fd;
	} else if ((r = vm_store_pin(dir, name)) == -ENOENT) {
		struct build_args a = { dir, layers, n, key, name };
		if ((r = rootless_run_mapped(build_mapped, &a, NULL, 0, err)) == 0 && (r = vm_store_pin(dir, name)) < 0)
			cap_err(err, -r, "vm root disk '%s'", *path);
	} else if (r < 0) {
		cap_err(err, -r, "vm root disk '%s'", *path);
	}
	if (r < 0) {
		free(*path);
		*path = NULL;
	}
	return r;
}

static const char *qemu_img(void)
{
	const char *q = getenv("CAPSULE_QEMU_IMG");
	return q && *q ? q : "qemu-img";
}

static void format_size(uint64_t bytes, char *buf, size_t size)
{
	if (bytes % (1ull << 30) == 0)
		snprintf(buf, size, "%lluG", (unsigned long long)(bytes >> 30));
	else if (bytes % (1ull << 20) == 0)
		snprintf(buf, size, "%lluM", (unsigned long long)(bytes >> 20));
	else
		snprintf(buf, size, "%llu bytes", (unsigned long long)bytes);
}

/* A qcow2's virtual size, from its header (big-endian, at byte 24). */
static int qcow2_size(const char *path, uint64_t *size, capsule_error *err)
{
	unsigned char h[32];
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0 || pread(fd, h, sizeof(h), 0) != (ssize_t)sizeof(h))
		return cap_err(err, fd < 0 ? errno : EINVAL, "reading the vm disk '%s'", path);
	if (memcmp(h, "QFI\xfb", 4) != 0)
		return cap_err_plain(err, EINVAL, "'%s' is not a qcow2 disk", path);
	*size = 0;
	for (int i = 24; i < 32; i++)
		*size = *size << 8 | h[i];
	return 0;
}

int vm_disk_overlay(int run_fd, const char *run_path, const char *base, uint64_t want_bytes, const char *image,
		    char **path, capsule_error *err)
{
	if (asprintf(path, "%s/" VM_DISK_FILE, run_path) < 0) {
		*path = NULL;
		return cap_err(err, ENOMEM, "vm disk path");
	}
	/* A stopped sandbox that starts again keeps its disk, as a container keeps its upper. */
	if (faccessat(run_fd, VM_DISK_FILE, R_OK | W_OK, AT_SYMLINK_NOFOLLOW) == 0)
		return 0;
	struct stat st;
	int r = 0;
	/* A save's disk (qcow2) or the layers' ext4 (raw): the new disk is at least as large. */
	size_t blen = strlen(base);
	bool qcow2 = blen > 6 && !strcmp(base + blen - 6, ".qcow2");
	uint64_t vsize = 0;
	if (stat(base, &st) < 0) {
		r = cap_err(err, errno, "vm root disk '%s'", base);
	} else if (qcow2 && (r = qcow2_size(base, &vsize, err)) == 0) {
		st.st_size = (off_t)vsize;
	}
	if (r < 0) {
	} else if (want_bytes && want_bytes < (uint64_t)st.st_size) {
		char want[32], need[32];
		format_size(want_bytes, want, sizeof(want));
		format_size((uint64_t)st.st_size, need, sizeof(need));
		r = cap_err_plain(err, EINVAL, "disk size %s is too small for image '%s' (its root needs %s)", want,
				  image, need);
	}
	if (r < 0) {
		free(*path);
		*path = NULL;
		return r;
	}
	uint64_t bytes = want_bytes ? want_bytes : VM_DISK_DEFAULT_BYTES;
	if (bytes < (uint64_t)st.st_size)
		bytes = (uint64_t)st.st_size;
	char tmp[PATH_MAX], opt[PATH_MAX + 64], size[32];
	snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", run_path, VM_DISK_FILE);
	/* QEMU's option syntax doubles a comma in a value. */
	size_t o = (size_t)snprintf(opt, sizeof(opt), "backing_fmt=%s,backing_file=", qcow2 ? "qcow2" : "raw");
	for (const char *p = base; *p && o + 2 < sizeof(opt); p++) {
		opt[o++] = *p;
		if (*p == ',')
			opt[o++] = ',';
	}
	opt[o] = '\0';
	snprintf(size, sizeof(size), "%llu", (unsigned long long)bytes);
	unlinkat(run_fd, "." VM_DISK_FILE ".tmp", 0);
	int out = -1;
	pid_t pid = fork_tool(&out, err);
	if (pid == 0) {
		execlp(qemu_img(), qemu_img(), "create", "-q", "-f", "qcow2", "-o", opt, tmp, size, (char *)NULL);
		dprintf(2, "exec '%s': %s\n", qemu_img(), strerror(errno));
		_exit(127);
	}
	r = pid < 0 ? -EIO : wait_tool(pid, out, "creating the vm disk (qemu-img)", err);
	/* What the sandbox writes is its own business: not for other host users to read. */
	if (r == 0 && fchmodat(run_fd, "." VM_DISK_FILE ".tmp", 0600, 0) < 0)
		r = cap_err(err, errno, "chmod '%s'", tmp);
	if (r == 0 && renameat(run_fd, "." VM_DISK_FILE ".tmp", run_fd, VM_DISK_FILE) < 0)
		r = cap_err(err, errno, "renaming '%s' into place", tmp);
	if (r < 0) {
		unlinkat(run_fd, "." VM_DISK_FILE ".tmp", 0);
		free(*path);
		*path = NULL;
	}
	return r;
}
