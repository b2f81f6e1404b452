#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>

#include "container.h"
#include "home.h"
#include "proc_masks.h"
#include "rootless.h"
#include "sandbox_config.h"
#include "syscalls.h"
#include "util.h"

#define AGENT_FD 3

/* podman's set less FSETID and SETFCAP. Sandbox root writes to host folders (binds, volumes)
 * as the host user who made the sandbox: SETFCAP would let it put a security.capability on a
 * host file there, and FSETID would let it rewrite a set-id file there without the kernel
 * clearing the bit. Inside the sandbox neither buys anything under no_new_privs. */
uint64_t container_default_caps(void)
{
	static const int caps[] = {
		CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_KILL, CAP_NET_BIND_SERVICE,
		CAP_SETGID, CAP_SETPCAP, CAP_SETUID, CAP_SYS_CHROOT,
	};
	uint64_t m = 0;
	for (size_t i = 0; i < ARRAY_SIZE(caps); i++)
		m |= 1ull << caps[i];
	return m;
}

/* ---- the child's side ---------------------------------------------------------------- */

struct child_failure {
	int errnum;
	char message[400];
};

static int child_errfd = -1;

static _Noreturn void child_die(int errnum, const char *fmt, ...) _printf_(2, 3);
static _Noreturn void child_die(int errnum, const char *fmt, ...)
{
	struct child_failure f = { .errnum = errnum };
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(f.message, sizeof(f.message), fmt, ap);
	va_end(ap);
	if (n >= 0 && (size_t)n < sizeof(f.message))
		snprintf(f.message + n, sizeof(f.message) - (size_t)n, ": %s", strerror(errnum));
	(void)!write(child_errfd, &f, sizeof(f));
	_exit(1);
}

/* Open PATH below ROOTFD without ever leaving it: symlinks resolve as if ROOTFD were "/",
 * and magic links (/proc/self/fd/N) are refused. This is what keeps a mount target that the
 * sandbox controls from pointing anywhere outside it. */
static int open_in_root(int rootfd, const char *path, int flags)
{
	int fd;
	do
		fd = sys_openat2(rootfd, path, (uint64_t)(flags | O_CLOEXEC),
				 RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV);
	while (fd < 0 && errno == EAGAIN);
	if (fd < 0 && errno == EXDEV) {
		do
			fd = sys_openat2(rootfd, path, (uint64_t)(flags | O_CLOEXEC), RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS);
		while (fd < 0 && errno == EAGAIN);
	}
	return fd;
}

/* Attach the detached mount TREE onto PATH below ROOTFD. */
static void attach_at(int tree, int rootfd, const char *path)
{
	int target = open_in_root(rootfd, path, O_PATH);
	if (target < 0)
		child_die(errno, "mount target '%s'", path);
	if (sys_move_mount(tree, "", target, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
		child_die(errno, "move_mount onto '%s'", path);
	close(target);
	close(tree);
}

/* A rootless spec's tree is an O_PATH descriptor the shim opened with the user's rights: it may
 * not clone the host's mounts, but we may clone our copy of them. The same path, then, as long
 * as it still leads to the same file, with ATTRS set on the clone. */
static int child_tree(const struct container_spec *spec, int fd, uint64_t attrs, const char *what)
{
	if (!spec->rootless)
		return fd;
	char path[4096];
	capsule_error e = { 0 };
	if (fd_path(fd, path, sizeof(path), &e) < 0)
		child_die(e.code, "%s", e.message);
	int tree = sys_open_tree(AT_FDCWD, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE | AT_SYMLINK_NOFOLLOW);
	if (tree < 0)
		child_die(errno, "open_tree '%s' (%s)", path, what);
	struct stat a, b;
	if (fstat(fd, &a) < 0 || fstat(tree, &b) < 0 || a.st_dev != b.st_dev || a.st_ino != b.st_ino)
		child_die(ESTALE, "'%s' (%s) was replaced while the sandbox started", path, what);
	struct mount_attr ma = { .attr_set = attrs, .attr_clr = attrs & (MOUNT_ATTR__ATIME | MOUNT_ATTR_NODIRATIME)
									? MOUNT_ATTR__ATIME : 0 };
	if (attrs && sys_mount_setattr(tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &ma) < 0)
		child_die(errno, "mount_setattr '%s' (%s)", path, what);
	close(fd);
	return tree;
}

static void bind_host(const char *host_path, int rootfd, const char *path, uint64_t attrs)
{
	int tree = sys_open_tree(AT_FDCWD, host_path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
	if (tree < 0)
		child_die(errno, "open_tree '%s'", host_path);
	if (attrs) {
		struct mount_attr a = { .attr_set = attrs };
		if (sys_mount_setattr(tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &a) < 0)
			child_die(errno, "mount_setattr '%s'", host_path);
	}
	attach_at(tree, rootfd, path);
}

#define SYS_ATTRS (MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC)
#define MQUEUE_ATTRS (MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC)

/* sysfs belongs to the network namespace it is made in, and only that namespace's owner may
 * make it: for a joined one the shim makes it there (join_net_ns), the child attaches it. */
static int joined_sys_tree = -1;
/* mqueue belongs to the IPC namespace it is made in, and only that namespace's owner may make
 * it: for a joined one (a pod's) the shim makes it there, the child attaches it. */
static int joined_mqueue_tree = -1;

/* A fresh filesystem instance, mounted with ATTRS at PATH below ROOTFD. OPTS is a
 * NULL-terminated list of key, value pairs (value NULL: a flag). */
static void mount_fs(const char *fstype, const char *const *opts, uint64_t attrs, int rootfd, const char *path)
{
	int fs = sys_fsopen(fstype, FSOPEN_CLOEXEC);
	if (fs < 0)
		child_die(errno, "fsopen %s", fstype);
	/* The source mountinfo shows: what runc's callers write in a spec's mounts (and check:
	 * the OCI conformance suite), "shm" for /dev/shm, else the type, not "none". */
	if (sys_fsconfig(fs, FSCONFIG_SET_STRING, "source", strcmp(path, "dev/shm") ? fstype : "shm", 0) < 0)
		child_die(errno, "%s source", fstype);
	for (size_t i = 0; opts && opts[i]; i += 2) {
		int r = opts[i + 1] ? sys_fsconfig(fs, FSCONFIG_SET_STRING, opts[i], opts[i + 1], 0)
				    : sys_fsconfig(fs, FSCONFIG_SET_FLAG, opts[i], NULL, 0);
		if (r < 0)
			child_die(errno, "%s option '%s'", fstype, opts[i]);
	}
	if (sys_fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
		child_die(errno, "creating %s for '%s'", fstype, path);
	int tree = sys_fsmount(fs, FSMOUNT_CLOEXEC, (unsigned)attrs);
	if (tree < 0)
		child_die(errno, "fsmount %s", fstype);
	close(fs);
	attach_at(tree, rootfd, path);
}

/* Make a mount point (file or folder) for a bind below ROOTFD; it may already exist. */
static void make_mountpoint(int dirfd, const char *name, bool dir)
{
	if (dir) {
		if (mkdirat(dirfd, name, 0755) < 0 && errno != EEXIST)
			child_die(errno, "mkdir '%s'", name);
		return;
	}
	int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0)
		child_die(errno, "creating mount point '%s'", name);
	close(fd);
}

static void setup_dev(int rootfd)
{
	static const char *const dev_opts[] = { "mode", "0755", "size", "65536", NULL };
	mount_fs("tmpfs", dev_opts, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC, rootfd, "dev");
	int devfd = open_in_root(rootfd, "dev", O_PATH | O_DIRECTORY);
	if (devfd < 0)
		child_die(errno, "open '/dev'");
	for (size_t i = 0; i < sandbox_dev_nodes_count; i++) {
		const struct sandbox_dev_node *node = &sandbox_dev_nodes[i];
		char host[32];
		snprintf(host, sizeof(host), "/dev/%s", node->name);
		/* A device node we bind in must be the host's real character device of that number,
		 * never a symlink or another node that something swapped in (the runc
		 * CVE-2025-31133 class). */
		struct stat st;
		if (lstat(host, &st) < 0 || !S_ISCHR(st.st_mode) || major(st.st_rdev) != node->major ||
		    minor(st.st_rdev) != node->minor)
			child_die(ENODEV, "'%s' is not the character device %u:%u", host, node->major, node->minor);
		make_mountpoint(devfd, node->name, false);
		char inside[32];
		snprintf(inside, sizeof(inside), "dev/%s", node->name);
		bind_host(host, rootfd, inside, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC);
	}
	make_mountpoint(devfd, "pts", true);
	make_mountpoint(devfd, "shm", true);
	make_mountpoint(devfd, "mqueue", true);
	static const char *const pts_opts[] = { "newinstance", NULL, "ptmxmode", "0666", "mode", "0620", NULL };
	mount_fs("devpts", pts_opts, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC, rootfd, "dev/pts");
	static const char *const shm_opts[] = { "mode", "1777", "size", "67108864", NULL };
	mount_fs("tmpfs", shm_opts, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, rootfd, "dev/shm");
	if (joined_mqueue_tree >= 0)
		attach_at(joined_mqueue_tree, rootfd, "dev/mqueue");
	else
		mount_fs("mqueue", NULL, MQUEUE_ATTRS, rootfd, "dev/mqueue");
	for (size_t i = 0; i < sandbox_dev_links_count; i++)
		if (symlinkat(sandbox_dev_links[i][0], devfd, sandbox_dev_links[i][1]) < 0 && errno != EEXIST)
			child_die(errno, "symlink '/dev/%s'", sandbox_dev_links[i][1]);
	close(devfd);
}

/* Paths of /proc and /sys that leak host information or give host-wide knobs (proc_masks.c, the
 * table a vm's agent applies too): masked (files by /dev/null, folders by an empty read-only
 * tmpfs) or made read-only, as docker does. */
/* The sandbox's own namespaced kernel settings (an OCI spec's linux.sysctl: the library let
 * through only net.*, IPC and mqueue ones), written while /proc/sys is still writable: its
 * root owns the namespaces they belong to. "name=value,name=value", names with dots. Those of
 * LIST whose name starts with "net." (NET) or the others (!NET) go to proc/sys below ROOTFD;
 * -errno with *FAILED the entry. */
static int write_sysctls(const char *list, bool net, int rootfd, char *failed, size_t size)
{
	for (const char *p = list; p && *p;) {
		const char *comma = strchr(p, ',');
		size_t n = comma ? (size_t)(comma - p) : strlen(p);
		char item[512], path[600];
		snprintf(failed, size, "%.*s", (int)(n < 256 ? n : 256), p);
		if (n >= sizeof(item))
			return -E2BIG;
		memcpy(item, p, n);
		item[n] = 0;
		p = comma ? comma + 1 : p + n;
		char *eq = strchr(item, '=');
		if (!eq)
			return -EINVAL;
		*eq = 0;
		if (!strncmp(item, "net.", 4) != net)
			continue;
		snprintf(path, sizeof(path), "proc/sys/%s", item);
		for (char *c = path + 9; *c; c++)
			if (*c == '.')
				*c = '/';
		int fd = open_in_root(rootfd, path, O_WRONLY | O_NOFOLLOW);
		if (fd < 0 || write(fd, eq + 1, strlen(eq + 1)) < 0) {
			int e = errno;
			if (fd >= 0)
				close(fd);
			return -e;
		}
		close(fd);
	}
	return 0;
}

/* A joined network namespace is its owner's, not the sandbox root's: the shim writes its
 * net.* settings (container_start), the child the rest. */
static void setup_sysctls(const struct container_spec *spec, int rootfd)
{
	char failed[260];
	int r = 0;
	if (spec->net_ns_fd < 0)
		r = write_sysctls(spec->sysctls, true, rootfd, failed, sizeof(failed));
	if (r == 0)
		r = write_sysctls(spec->sysctls, false, rootfd, failed, sizeof(failed));
	if (r < 0)
		child_die(-r, "sysctl %s", failed);
}

/* The /dev/null we bind over masked files: opened once, checked to be char 1:3. */
static int open_devnull(int rootfd)
{
	struct stat st;
	int devnull = open_in_root(rootfd, "dev/null", O_PATH | O_NOFOLLOW);
	if (devnull < 0 || fstat(devnull, &st) < 0 || !S_ISCHR(st.st_mode) || major(st.st_rdev) != 1 ||
	    minor(st.st_rdev) != 3)
		child_die(ENODEV, "'/dev/null' in the sandbox is not the null device");
	return devnull;
}

/* A file under /dev/null, a folder under an empty read-only tmpfs; what is missing is skipped
 * (not on this kernel, not in this image). PATH is relative to the root. */
static void mask_path(int rootfd, int devnull, const char *masked)
{
	struct stat st;
	int fd = open_in_root(rootfd, masked, O_PATH | O_NOFOLLOW);
	if (fd < 0)
		return;
	if (fstat(fd, &st) < 0)
		child_die(errno, "stat '/%s'", masked);
	close(fd);
	if (S_ISDIR(st.st_mode)) {
		static const char *const ro_tmpfs[] = { "size", "0", NULL };
		mount_fs("tmpfs", ro_tmpfs, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC, rootfd,
			 masked);
	} else {
		int tree = sys_open_tree(devnull, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH);
		if (tree < 0)
			child_die(errno, "open_tree '/dev/null'");
		attach_at(tree, rootfd, masked);
	}
}

/* PATH (relative to the root) bound read-only over itself, with what is mounted below it. */
static void readonly_path(int rootfd, const char *readonly)
{
	int src = open_in_root(rootfd, readonly, O_PATH | O_NOFOLLOW);
	if (src < 0)
		return;
	int tree = sys_open_tree(src, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH | AT_RECURSIVE);
	if (tree < 0)
		child_die(errno, "open_tree '/%s'", readonly);
	close(src);
	struct mount_attr a = { .attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC };
	if (sys_mount_setattr(tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &a) < 0)
		child_die(errno, "read-only '/%s'", readonly);
	attach_at(tree, rootfd, readonly);
}

static void setup_proc_masks(int rootfd)
{
	int devnull = open_devnull(rootfd);
	for (size_t i = 0; i < sandbox_masked_paths_count; i++)
		mask_path(rootfd, devnull, sandbox_masked_paths[i]);
	close(devnull);
	for (size_t i = 0; i < sandbox_readonly_paths_count; i++)
		readonly_path(rootfd, sandbox_readonly_paths[i]);
}

/* A spec's own masked and read-only paths (config's masked_paths, readonly_paths: absolute,
 * apart with ','), after its mounts, which they may cover, as runc has them. */
static void setup_spec_masks(const struct container_spec *spec, int rootfd)
{
	int devnull = spec->masked_paths ? open_devnull(rootfd) : -1;
	for (int pass = 0; pass < 2; pass++) {
		for (const char *p = pass ? spec->readonly_paths : spec->masked_paths; p && *p;) {
			const char *comma = strchr(p, ',');
			size_t n = comma ? (size_t)(comma - p) : strlen(p);
			char path[PATH_MAX];
			if (n < 2 || n >= sizeof(path) || p[0] != '/')
				child_die(EINVAL, "masked or read-only path '%.*s'", (int)n, p);
			memcpy(path, p + 1, n - 1);
			path[n - 1] = 0;
			if (pass)
				readonly_path(rootfd, path);
			else
				mask_path(rootfd, devnull, path);
			p = comma ? comma + 1 : p + n;
		}
	}
	if (devnull >= 0)
		close(devnull);
}

/* mkdir -p PATH (absolute, normalized) below ROOTFD. Each component is opened with
 * RESOLVE_IN_ROOT from the root itself, so a symlink in the image (or planted by a sandbox
 * that was started before) can never lead the mkdir outside the sandbox. */
static void mkdir_in_root(int rootfd, const char *path)
{
	char buf[4096];
	if (snprintf(buf, sizeof(buf), "%s", path + 1) >= (int)sizeof(buf))
		child_die(ENAMETOOLONG, "mount target '%s'", path);
	for (char *p = buf;; p++) {
		bool last = *p == '\0';
		if (*p != '/' && !last)
			continue;
		*p = '\0';
		int fd = open_in_root(rootfd, buf, O_PATH | O_DIRECTORY);
		if (fd < 0) {
			if (errno != ENOENT)
				child_die(errno, "mount target '/%s'", buf);
			char *slash = strrchr(buf, '/');
			int parent = slash ? (*slash = '\0', open_in_root(rootfd, buf, O_PATH | O_DIRECTORY)) : dup(rootfd);
			if (parent < 0)
				child_die(errno, "mount target '/%s'", buf);
			if (slash)
				*slash = '/';
			if (mkdirat(parent, slash ? slash + 1 : buf, 0755) < 0 && errno != EEXIST)
				child_die(errno, "mkdir '/%s'", buf);
			close(parent);
		} else {
			close(fd);
		}
		if (last)
			return;
		*p = '/';
	}
}

/* A spec's shared or unbindable mount (config_mount_propagation), once it is attached. */
static void set_propagation(int rootfd, const char *target, uint64_t propagation)
{
	if (!propagation)
		return;
	int fd = open_in_root(rootfd, target + 1, O_PATH);
	struct mount_attr a = { .propagation = propagation & ~CONFIG_PROPAGATION_RECURSIVE };
	unsigned flags = AT_EMPTY_PATH | (propagation & CONFIG_PROPAGATION_RECURSIVE ? AT_RECURSIVE : 0);
	if (fd < 0 || sys_mount_setattr(fd, "", flags, &a) < 0)
		child_die(errno, "the propagation of '%s'", target);
	close(fd);
}

static void setup_tmpfs(const struct container_tmpfs *t, int rootfd)
{
	char size[32], mode[16];
	snprintf(size, sizeof(size), "%llu", (unsigned long long)t->size_bytes);
	snprintf(mode, sizeof(mode), "0%o", t->mode);
	const char *const opts[] = { "size", size, "mode", mode, NULL };
	mkdir_in_root(rootfd, t->target);
	mount_fs("tmpfs", opts, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | (unsigned)t->attrs, rootfd, t->target + 1);
	set_propagation(rootfd, t->target, t->propagation);
}

/* The tree at PATH (below ROOTFD) cloned again in place. A tree the shim cloned before the
 * sandbox existed has mount ids older than every mount made here, and the kernel lists a
 * namespace's mounts by id: mountinfo would put it first, whatever the order it was attached
 * in. OCI's mounts are listed in their spec's order (runtime-tools checks it). */
static void reclone_in_place(int rootfd, const char *path)
{
	int old = open_in_root(rootfd, path, O_PATH);
	int tree = old < 0 ? -1 : sys_open_tree(old, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH | AT_RECURSIVE);
	if (tree < 0)
		child_die(errno, "cloning the mount at '%s'", path);
	char self[64];
	snprintf(self, sizeof(self), "/proc/self/fd/%d", old);
	if (umount2(self, MNT_DETACH) < 0)
		child_die(errno, "replacing the mount at '%s'", path);
	close(old);
	attach_at(tree, rootfd, path);
}

static void setup_bind(const struct container_spec *spec, const struct container_bind *b, int rootfd)
{
	const char *slash = strrchr(b->target, '/');
	if (b->is_dir) {
		mkdir_in_root(rootfd, b->target);
	} else {
		/* A file: its folder as for a folder, then an empty file to mount onto. */
		char parent[4096];
		snprintf(parent, sizeof(parent), "%.*s", (int)(slash - b->target), b->target);
		if (parent[0])
			mkdir_in_root(rootfd, parent);
		int dfd = parent[0] ? open_in_root(rootfd, parent + 1, O_PATH | O_DIRECTORY) : dup(rootfd);
		if (dfd < 0)
			child_die(errno, "mount target '%s'", b->target);
		int fd = openat(dfd, slash + 1, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
		if (fd < 0 && errno != EISDIR)
			child_die(errno, "mount target '%s'", b->target);
		if (fd >= 0)
			close(fd);
		close(dfd);
	}
	attach_at(b->no_idmap ? b->tree : child_tree(spec, b->tree, b->attrs, b->target), rootfd, b->target + 1);
	if (spec->mount_order)
		reclone_in_place(rootfd, b->target + 1);
	set_propagation(rootfd, b->target, b->propagation);
}

/* tmpfs and binds in config's order: a later mount goes over an earlier one. */
static void setup_mounts(const struct container_spec *spec, int rootfd)
{
	size_t t = 0, b = 0;
	for (char next; (next = config_mount_next(spec->mount_order, spec->ntmpfs, spec->nbinds, t, b));)
		if (next == 't')
			setup_tmpfs(&spec->tmpfs[t++], rootfd);
		else
			setup_bind(spec, &spec->binds[b++], rootfd);
}

/* The overlay's lowerdir option: the layers (attached by attach_layers at l/<i> below FSDIR,
 * named relative to it because a mount's options fit in one page and 128 absolute paths do
 * not), top first, then the host image's root, HOST_FD (-1: none), named by its descriptor:
 * the sandbox's root we are by then could not walk its path. */
static void overlay_options(const struct container_spec *spec, int host_fd, char *opts, size_t size)
{
	size_t off = 0;
	int n = snprintf(opts, size, "lowerdir=");
	for (size_t i = spec->nlayers; n >= 0 && (size_t)n < size - off && i-- > 0;) {
		off += (size_t)n;
		n = snprintf(opts + off, size - off, "l/%zu%s", i, i > 0 || host_fd >= 0 ? ":" : "");
	}
	if (n >= 0 && (size_t)n < size - off && host_fd >= 0) {
		off += (size_t)n;
		n = snprintf(opts + off, size - off, "/proc/self/fd/%d", host_fd);
	}
	if (n >= 0 && (size_t)n < size - off) {
		off += (size_t)n;
		const char *at = spec->disk_tree >= 0 ? "disk/" : "";
		n = snprintf(opts + off, size - off, ",upperdir=%supper,workdir=%swork,userxattr", at, at);
	}
	if (n < 0 || (size_t)n >= size - off)
		child_die(ENAMETOOLONG, "overlay options");
}

/* Each layer's clone goes onto its own empty folder l/<i> below FSDIR (made by the shim), where
 * the overlay finds it, and the sandbox's disk onto disk/; with the old root these mounts
 * leave the sandbox at pivot_root. */
static void attach_layers(const struct container_spec *spec, int fsfd)
{
	for (size_t i = 0; i < spec->nlayers; i++) {
		char at[32];
		snprintf(at, sizeof(at), "l/%zu", i);
		int tree = child_tree(spec, spec->layer_trees[i], LAYER_ATTRS, "image layer");
		if (sys_move_mount(tree, "", fsfd, at, MOVE_MOUNT_F_EMPTY_PATH) < 0)
			child_die(errno, "attaching image layer %zu", i);
	}
	if (spec->disk_tree >= 0 && sys_move_mount(spec->disk_tree, "", fsfd, "disk", MOVE_MOUNT_F_EMPTY_PATH) < 0)
		child_die(errno, "attaching the sandbox's disk");
}

/* From FSDIR (FSFD, our working folder from here on) by relative names only: the sandbox's
 * root we now are could not walk the path to it. */
static void setup_rootfs(const struct container_spec *spec, int fsfd, int host_fd)
{
	char rootfs[4096], opts[8192];
	snprintf(rootfs, sizeof(rootfs), "%s/rootfs", spec->fsdir);
	overlay_options(spec, host_fd, opts, sizeof(opts));

	/* Nothing we mount may propagate back to the host. */
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		child_die(errno, "making mounts private");
	if (fchdir(fsfd) < 0)
		child_die(errno, "chdir '%s'", spec->fsdir);
	if (spec->root_is_tree) {
		int tree = child_tree(spec, spec->layer_trees[0], MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, "root folder");
		if (sys_move_mount(tree, "", fsfd, "rootfs", MOVE_MOUNT_F_EMPTY_PATH) < 0)
			child_die(errno, "attaching the root folder");
		close(fsfd);
	} else {
		attach_layers(spec, fsfd);
		close(fsfd);
		if (mount("overlay", "rootfs", "overlay", MS_NOSUID | MS_NODEV, opts) < 0)
			child_die(errno, "mounting the overlay root on '%s'", rootfs);
	}
	if (host_fd >= 0)
		close(host_fd);
	int rootfd = open("rootfs", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0)
		child_die(errno, "open '%s'", rootfs);

	if (spec->host_image) {
		static const char *const host_dirs[] = { "usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32" };
		for (size_t i = 0; i < ARRAY_SIZE(host_dirs); i++) {
			char host[16];
			snprintf(host, sizeof(host), "/%s", host_dirs[i]);
			struct stat st;
			/* Merged-/usr hosts have symlinks here, which the image root mirrors. */
			if (lstat(host, &st) < 0 || !S_ISDIR(st.st_mode))
				continue;
			bind_host(host, rootfd, host_dirs[i], MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV);
		}
	} else {
		/* An image's own root may lack the folders the kernel's file systems go on. Under
		 * an OCI spec's mappings the root's files are the host's, as the caller made them,
		 * which sandbox root may not add to: /tmp is then the image's to have, as with runc. */
		static const char *const points[] = { "/proc", "/dev", "/sys", "/tmp" };
		for (size_t i = 0; i < ARRAY_SIZE(points) - (spec->spec_ids ? 1 : 0); i++)
			mkdir_in_root(rootfd, points[i]);
	}

	mount_fs("proc", NULL, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC, rootfd, "proc");
	setup_dev(rootfd);
	if (joined_sys_tree >= 0)
		attach_at(joined_sys_tree, rootfd, "sys");
	else
		mount_fs("sysfs", NULL, SYS_ATTRS, rootfd, "sys");
	setup_sysctls(spec, rootfd);
	setup_proc_masks(rootfd);
	setup_mounts(spec, rootfd);
	setup_spec_masks(spec, rootfd);
	/* Last: the mount points above were made in it. The root mount alone, not those. */
	if (spec->root_readonly) {
		struct mount_attr a = { .attr_set = MOUNT_ATTR_RDONLY };
		if (sys_mount_setattr(rootfd, "", AT_EMPTY_PATH, &a) < 0)
			child_die(errno, "making the root read-only");
	}
	close(rootfd);

	if (chdir("rootfs") < 0)
		child_die(errno, "chdir '%s'", rootfs);
	/* pivot_root(".", ".") stacks the old root under the new one; detaching it leaves the
	 * sandbox with no path back to the host's tree. */
	if (sys_pivot_root(".", ".") < 0)
		child_die(errno, "pivot_root into '%s'", rootfs);
	if (umount2(".", MNT_DETACH) < 0)
		child_die(errno, "detaching the old root");
	if (chdir("/") < 0)
		child_die(errno, "chdir '/'");
}

static _Noreturn void container_child(const struct container_spec *spec, int go_fd)
{
	/* Wait until the parent has written our id maps (and idmapped the trees we attach). */
	char go;
	if (read(go_fd, &go, 1) != 1)
		_exit(1);

	/* Still with the shim's file uid (container_start): root's, for a root caller, the owner
	 * of $CAPSULE_HOME, which no other uid may pass. O_PATH needs no right on the folders
	 * themselves, which are the sandbox root's. */
	int fsfd = open(spec->fsdir, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fsfd < 0)
		child_die(errno, "open '%s'", spec->fsdir);
	int host_fd = -1;
	if (spec->lowerdir && (host_fd = open(spec->lowerdir, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0)
		child_die(errno, "open the host image '%s'", spec->lowerdir);
	/* A rootless map through newgidmap leaves setgroups allowed; a single-id map denies it,
	 * and then the user's groups stay (unmapped: nobody's, inside). */
	if (setgroups(0, NULL) < 0 && !(spec->rootless && errno == EPERM))
		child_die(errno, "setgroups");
	if (setresgid(0, 0, 0) < 0)
		child_die(errno, "setresgid to the sandbox's root");
	if (setresuid(0, 0, 0) < 0)
		child_die(errno, "setresuid to the sandbox's root");
	if (spec->pids_rlimit) {
		int e = -rootless_limit_pids(spec->pids_rlimit);
		if (e)
			child_die(e, "setting RLIMIT_NPROC to %u", spec->pids_rlimit);
	}
	/* Changing credentials cleared these: set them again for the sandbox's root. */
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);

	/* A joined UTS namespace (a pod's) has its owner's hostname, the pod's, which the
	 * sandbox's root could not change. */
	if (spec->uts_ns_fd < 0 && sethostname(spec->hostname, strlen(spec->hostname)) < 0)
		child_die(errno, "sethostname '%s'", spec->hostname);

	/* The mounts are made while the parent moves us into our cgroups: on cgroup v1 each
	 * move waits for an RCU grace period (tens of ms on a busy host), which the mounts no
	 * longer wait behind. Nothing here forks or runs anything of the sandbox's. */
	setup_rootfs(spec, fsfd, host_fd);

	/* Wait until the parent has placed us in our cgroups; EOF: it failed or died. */
	if (read(go_fd, &go, 1) != 1)
		_exit(1);
	close(go_fd);
	/* The cgroup namespace is made now, after the parent moved us, so that our own cgroup
	 * is the root of what the sandbox sees. */
	if (unshare(CLONE_NEWCGROUP) < 0)
		child_die(errno, "unshare cgroup namespace");

	if (spec->agent_sock != AGENT_FD) {
		if (dup2(spec->agent_sock, AGENT_FD) < 0)
			child_die(errno, "dup2 agent socket");
	} else if (fcntl(AGENT_FD, F_SETFD, 0) < 0) {
		child_die(errno, "agent socket flags");
	}
	int memfd = spec->agent_memfd;
	if (memfd <= AGENT_FD) {
		memfd = fcntl(memfd, F_DUPFD_CLOEXEC, AGENT_FD + 1);
		if (memfd < 0)
			child_die(errno, "dup agent memfd");
	}
	/* Only fd 3 (the agent's socket), the memfd and the error pipe survive; the latter two
	 * are close-on-exec. */
	int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (devnull < 0 || dup2(devnull, 0) < 0 || dup2(devnull, 1) < 0 || dup2(devnull, 2) < 0)
		child_die(errno, "stdio to /dev/null");
	int cr = fds_cloexec_from(AGENT_FD + 1);
	if (cr < 0)
		child_die(-cr, "closing the shim's file descriptors");
	char *const argv[] = { "capsule-agent", NULL };
	char *const envp[] = { NULL };
	fexecve(memfd, argv, envp);
	child_die(errno, "exec of capsule-agent");
}

/* ---- the parent's side ---------------------------------------------------------------- */

/* Host folders (binds, volumes, hot mounts) are idmapped through a user namespace of their own
 * rather than the sandbox's: there the host user who made the sandbox (OWNER, root for root)
 * is the sandbox's root, and the sandbox's other ids are its own host range, as in its own
 * namespace. So what sandbox root writes lands owned by that user, what its other users write
 * lands on ids no host user has, and no host id beyond those two can be given to a file: a
 * chown to a host user's id fails (EINVAL), and other users' files show as the overflow id,
 * with only their "other" permissions. (A rootless caller's single id needs none of this.) */
int userns_with_maps(const char *uid_map, const char *gid_map, int *userns, capsule_error *err)
{
	int ready[2];
	if (pipe2(ready, O_CLOEXEC) < 0)
		return cap_err(err, errno, "pipe");
	pid_t pid = fork();
	if (pid < 0) {
		int e = errno;
		close(ready[0]);
		close(ready[1]);
		return cap_err(err, e, "fork");
	}
	if (pid == 0) {
		/* Holds the namespace until the parent has its maps written and an fd on it. */
		char c = unshare(CLONE_NEWUSER) == 0 ? 'y' : 'n';
		if (write(ready[1], &c, 1) == 1)
			pause();
		_exit(0);
	}
	close(ready[1]);
	char c = 'n';
	int r = 0;
	if (read(ready[0], &c, 1) != 1 || c != 'y')
		r = cap_err_plain(err, EPERM, "creating a user namespace for idmapping host folders");
	close(ready[0]);
	if (r == 0)
		r = proc_pid_write(pid, "uid_map", uid_map, err);
	if (r == 0)
		r = proc_pid_write(pid, "gid_map", gid_map, err);
	if (r == 0) {
		char path[64];
		snprintf(path, sizeof(path), "/proc/%d/ns/user", (int)pid);
		if ((*userns = open(path, O_RDONLY | O_CLOEXEC)) < 0)
			r = cap_err(err, errno, "open '%s'", path);
	}
	/* Not reaped yet, so the pid is still ours to signal. */
	kill(pid, SIGKILL);
	while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
		;
	return r;
}

int container_host_folder_userns(uid_t owner_uid, gid_t owner_gid, uid_t ub, gid_t gb, uint32_t count, int *userns,
				 capsule_error *err)
{
	char uid_map[128], gid_map[128];
	snprintf(uid_map, sizeof(uid_map), "%u %u 1\n%u %u %u\n", (unsigned)owner_uid, (unsigned)ub, (unsigned)ub + 1,
		 (unsigned)ub + 1, count - 1);
	snprintf(gid_map, sizeof(gid_map), "%u %u 1\n%u %u %u\n", (unsigned)owner_gid, (unsigned)gb, (unsigned)gb + 1,
		 (unsigned)gb + 1, count - 1);
	return userns_with_maps(uid_map, gid_map, userns, err);
}

int container_idmap_host_folder(int userns, int tree, const char *what, capsule_error *err)
{
	struct mount_attr a = { .attr_set = MOUNT_ATTR_IDMAP, .userns_fd = (uint64_t)userns };
	/* A filesystem that cannot be idmapped keeps plain ids: the sandbox's host range, which
	 * is no host user's. */
	if (sys_mount_setattr(tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &a) < 0 && errno != EINVAL &&
	    errno != EOPNOTSUPP && errno != EPERM)
		return cap_err(err, errno, "idmapping the mount of '%s'", what);
	return 0;
}

static int idmap_binds(const struct container_spec *spec, pid_t child, capsule_error *err)
{
	/* The caller made the files for the spec's mapping: host ids on disk are what it means. */
	if (spec->spec_ids)
		return 0;
	int r = 0;
	bool any = false;
	for (size_t i = 0; i < spec->nbinds; i++)
		any |= !spec->binds[i].no_idmap;
	if (any) {
		int userns = -1;
		r = container_host_folder_userns(geteuid(), getegid(), spec->uid_base, spec->gid_base, spec->id_count,
						 &userns, err);
		for (size_t i = 0; r == 0 && i < spec->nbinds; i++)
			if (!spec->binds[i].no_idmap)
				r = container_idmap_host_folder(userns, spec->binds[i].tree, spec->binds[i].target, err);
		if (userns >= 0)
			close(userns);
		if (r < 0)
			return r;
	}
	if (!spec->nlayers)
		return 0;
	/* A layer's ids are the image's, all of them the sandbox's: it is idmapped to the
	 * sandbox's own namespace, and without the idmap every file would be the host's and
	 * nobody's inside, so a layer that cannot be idmapped fails the start. */
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/ns/user", (int)child);
	int userns = open(path, O_RDONLY | O_CLOEXEC);
	if (userns < 0)
		return cap_err(err, errno, "open '%s'", path);
	for (size_t i = 0; i < spec->nlayers; i++) {
		struct mount_attr a = { .attr_set = MOUNT_ATTR_IDMAP, .userns_fd = (uint64_t)userns };
		if (sys_mount_setattr(spec->layer_trees[i], "", AT_EMPTY_PATH, &a) < 0) {
			int e = errno;
			close(userns);
			if (spec->root_is_tree)
				return cap_err(err, e, "idmapping the root folder");
			return cap_err(err, e, "idmapping image layer %zu", i);
		}
	}
	close(userns);
	return 0;
}

bool container_can_set_oom_floor(void)
{
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct d[2];
	if (syscall(SYS_capget, &h, d) < 0)
		return false;
	return d[CAP_SYS_RESOURCE / 32].effective & (1u << (CAP_SYS_RESOURCE % 32));
}

/* No process of the sandbox may lower its oom_score_adj below 0, or a command could make itself
 * the last choice of the host's OOM killer, which would then kill host processes first. The
 * kernel lets a process go down to its oom_score_adj_min without privilege, and every child
 * inherits that floor, so the floor must be 0 from the sandbox's first process on: it is set
 * when a writer with CAP_SYS_RESOURCE writes the value. That is also why the agent gets no
 * protection of its own: a floor under it would be every command's floor. The agent is small;
 * the command that ate the memory is what the OOM killer picks. Where the shim lacks
 * CAP_SYS_RESOURCE (root in some containers and VMs), the floor stays whatever capsule was
 * started under: said in NOTE, for inspect and doctor. */
static bool oom_floor_at_zero(pid_t child, char *note, size_t size)
{
	note[0] = '\0';
	bool privileged = container_can_set_oom_floor();
	capsule_error ignored = { 0 };
	int r = proc_pid_write(child, "oom_score_adj", "0", &ignored);
	if (privileged && r == 0)
		return true;
	snprintf(note, size, "%s: commands may lower their oom_score_adj to the floor capsule was started under",
		 privileged ? ignored.message : "capsule lacks CAP_SYS_RESOURCE");
	return false;
}

/* Into the network namespace SPEC names (its net.* settings written there, as the owner's
 * root), keeping the shim's own in *OWN. */
static int join_net_ns(const struct container_spec *spec, int *own, capsule_error *err)
{
	int r = 0;
	*own = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	if (*own < 0)
		r = cap_err(err, errno, "/proc/self/ns/net");
	else if (setns(spec->net_ns_fd, CLONE_NEWNET) < 0)
		r = cap_err(err, errno, "joining the network namespace '%s'", spec->net_ns);
	if (r == 0) {
		char failed[260];
		int root = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
		int e = root < 0 ? -errno : write_sysctls(spec->sysctls, true, root, failed, sizeof(failed));
		if (root >= 0)
			close(root);
		if (e < 0)
			r = cap_err(err, -e, "sysctl %s in the network namespace '%s'", failed, spec->net_ns);
	}
	if (r == 0) {
		int fs = sys_fsopen("sysfs", FSOPEN_CLOEXEC);
		if (fs < 0 || sys_fsconfig(fs, FSCONFIG_SET_STRING, "source", "sysfs", 0) < 0 ||
		    sys_fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0 ||
		    (joined_sys_tree = sys_fsmount(fs, FSMOUNT_CLOEXEC, SYS_ATTRS)) < 0)
			r = cap_err(err, errno, "sysfs of the network namespace '%s'", spec->net_ns);
		if (fs >= 0)
			close(fs);
	}
	if (r < 0 && *own >= 0 && setns(*own, CLONE_NEWNET) < 0)
		abort();
	if (r < 0 && *own >= 0) {
		close(*own);
		*own = -1;
	}
	return r;
}

/* Into the IPC and UTS namespaces SPEC names (a pod's), keeping the shim's own in OWN[0] and
 * OWN[1]; in a joined IPC namespace the shim makes its mqueue, as only its owner may. */
static int join_pod_ns(const struct container_spec *spec, int own[2], capsule_error *err)
{
	const struct {
		int fd, type;
		const char *what, *path, *self;
	} ns[2] = { { spec->ipc_ns_fd, CLONE_NEWIPC, "ipc", spec->ipc_ns, "/proc/self/ns/ipc" },
		    { spec->uts_ns_fd, CLONE_NEWUTS, "uts", spec->uts_ns, "/proc/self/ns/uts" } };
	for (size_t i = 0; i < 2; i++) {
		if (ns[i].fd < 0)
			continue;
		if ((own[i] = open(ns[i].self, O_RDONLY | O_CLOEXEC)) < 0)
			return cap_err(err, errno, "%s", ns[i].self);
		if (setns(ns[i].fd, ns[i].type) < 0)
			return cap_err(err, errno, "joining the %s namespace '%s'", ns[i].what, ns[i].path);
	}
	if (spec->ipc_ns_fd >= 0) {
		int fs = sys_fsopen("mqueue", FSOPEN_CLOEXEC);
		if (fs < 0 || sys_fsconfig(fs, FSCONFIG_SET_STRING, "source", "mqueue", 0) < 0 ||
		    sys_fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0 ||
		    (joined_mqueue_tree = sys_fsmount(fs, FSMOUNT_CLOEXEC, MQUEUE_ATTRS)) < 0) {
			int e = errno;
			if (fs >= 0)
				close(fs);
			return cap_err(err, e, "mqueue of the ipc namespace '%s'", spec->ipc_ns);
		}
		close(fs);
	}
	return 0;
}

/* Back into the shim's own namespaces from those joined for the child's clone. */
static void leave_joined_ns(int own_net, const int own[2])
{
	/* Never go on in a sandbox's namespaces. */
	if ((own_net >= 0 && setns(own_net, CLONE_NEWNET) < 0) || (own[0] >= 0 && setns(own[0], CLONE_NEWIPC) < 0) ||
	    (own[1] >= 0 && setns(own[1], CLONE_NEWUTS) < 0))
		abort();
	if (own_net >= 0)
		close(own_net);
	for (size_t i = 0; i < 2; i++)
		if (own[i] >= 0)
			close(own[i]);
	if (joined_sys_tree >= 0)
		close(joined_sys_tree);
	if (joined_mqueue_tree >= 0)
		close(joined_mqueue_tree);
	joined_sys_tree = joined_mqueue_tree = -1;
}

/* The sandbox's host ids as effective ids, which make the new user namespace's owner, while
 * the file uid stays root's: the child opens its fs/ folder and the host image's root below
 * $CAPSULE_HOME (root's alone) with it, before it becomes the sandbox's root. */
static int become_namespace_owner(const struct container_spec *spec)
{
	if (setegid(spec->gid_base) < 0 || seteuid(spec->uid_base) < 0)
		return -errno;
	setfsuid(0); /* allowed to any process whose real uid is 0 */
	return setfsuid((uid_t)-1) == 0 ? 0 : -EPERM;
}

int container_start(struct container *out, const struct container_spec *spec, container_hook_fn join, void *payload,
		    capsule_error *err)
{
	int go[2], status[2];
	if (pipe2(go, O_CLOEXEC) < 0)
		return cap_err(err, errno, "pipe");
	if (pipe2(status, O_CLOEXEC) < 0) {
		int e = errno;
		close(go[0]);
		close(go[1]);
		return cap_err(err, e, "pipe");
	}

	int pidfd = -1;
	struct clone_args args = {
		.flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET |
			 CLONE_PIDFD,
		.pidfd = (uint64_t)(uintptr_t)&pidfd,
		.exit_signal = SIGCHLD,
	};
	/* Namespaces to join: the child is made in them (a process in its new user namespace
	 * could not enter a namespace another user namespace owns), and the shim goes back to
	 * its own. A network namespace is the caller's (podman's, a pod's); IPC and UTS ones are
	 * a pod's, its pause sandbox's. */
	int own_net = -1, own_pod[2] = { -1, -1 };
	if (spec->net_ns_fd >= 0)
		args.flags &= ~(uint64_t)CLONE_NEWNET;
	if (spec->ipc_ns_fd >= 0)
		args.flags &= ~(uint64_t)CLONE_NEWIPC;
	if (spec->uts_ns_fd >= 0)
		args.flags &= ~(uint64_t)CLONE_NEWUTS;
	int e = spec->net_ns_fd >= 0 ? join_net_ns(spec, &own_net, err) : 0;
	if (e == 0)
		e = join_pod_ns(spec, own_pod, err);
	if (e < 0) {
		leave_joined_ns(own_net, own_pod);
		close(go[0]);
		close(go[1]);
		close(status[0]);
		close(status[1]);
		return e;
	}
	/* The kernel charges per-user counts (inotify instances, message queues, ...) up the user
	 * namespace hierarchy to each namespace's owner: the euid that created it. With root as
	 * owner, every sandbox would spend root's share. So the namespace is created with the
	 * sandbox's own host ids as effective ids; the saved uid stays 0 and gives root back at
	 * once for writing the maps. */
	bool switched = false;
	if (spec->rootless) {
		/* The child must be dumpable while its maps are written, or its /proc files are
		 * root's (the shim is not: shim.c) and newuidmap refuses them. It inherits the flag
		 * and clears it itself once it is the sandbox's root. */
		prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
	} else {
		e = -become_namespace_owner(spec);
		if (e) {
			seteuid(0);
			setegid(0);
			leave_joined_ns(own_net, own_pod);
			close(go[0]);
			close(go[1]);
			close(status[0]);
			close(status[1]);
			return cap_err(err, e, "switching to the sandbox's host uid %u", (unsigned)spec->uid_base);
		}
		switched = true;
	}
	long pid = sys_clone3(&args);
	if (pid != 0 && spec->rootless)
		prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	if (pid != 0 && switched && (seteuid(0) < 0 || setegid(0) < 0))
		abort(); /* cannot happen with a saved uid of 0; never go on half-privileged */
	if (pid != 0) {
		int clone_errno = errno;
		leave_joined_ns(own_net, own_pod);
		errno = clone_errno;
	}
	if (pid < 0) {
		e = errno;
		close(go[0]);
		close(go[1]);
		close(status[0]);
		close(status[1]);
		if (e == EPERM || e == ENOSPC)
			return cap_err(err, e, "creating namespaces (is kernel.unprivileged_userns_clone or user.max_user_namespaces limiting user namespaces?)");
		return cap_err(err, e, "clone3");
	}
	if (pid == 0) {
		close(go[1]);
		close(status[0]);
		child_errfd = status[1];
		container_child(spec, go[0]);
	}
	close(go[0]);
	close(status[1]);

	int r = 0;
	if (spec->rootless) {
		r = rootless_map_ids((pid_t)pid, spec->rootless_ids, err);
	} else {
		char map[64];
		snprintf(map, sizeof(map), "0 %u %u\n", (unsigned)spec->uid_base, spec->id_count);
		r = proc_pid_write((pid_t)pid, "uid_map", map, err);
		snprintf(map, sizeof(map), "0 %u %u\n", (unsigned)spec->gid_base,
			 spec->gid_count ? spec->gid_count : spec->id_count);
		if (r == 0)
			r = proc_pid_write((pid_t)pid, "gid_map", map, err);
		if (r == 0)
			r = idmap_binds(spec, (pid_t)pid, err);
	}
	/* Two go-aheads: the first lets the child make its mounts, the second, once it is in its
	 * cgroups, lets it go on to the agent. In between the child works and we join. */
	bool mounting = false;
	if (r == 0) {
		if (write(go[1], "m", 1) != 1)
			r = cap_err(err, errno, "starting the container's init");
		else
			mounting = true;
	}
	if (r == 0)
		out->oom_floor = oom_floor_at_zero((pid_t)pid, out->oom_note, sizeof(out->oom_note));
	/* tests/e2e/test_ephemeral.py kills the shim here, while the child mounts. */
	home_test_pause("CAPSULE_TEST_SHIM_PAUSE", "cgroup-join", NULL, ".test-shim-paused");
	if (r == 0 && join)
		r = join((pid_t)pid, payload, err);
	if (r == 0 && write(go[1], "g", 1) != 1)
		r = cap_err(err, errno, "starting the container's init");
	close(go[1]);

	/* A child that failed said why before it exited; one that exec'd the agent closed the
	 * pipe (close-on-exec). A failure of ours kills it first, so that the read ends: its own
	 * error then, if it had one (a mount that failed while we joined its cgroups), comes
	 * before ours, which may only be that it had died. */
	if (r < 0)
		sys_pidfd_send_signal(pidfd, SIGKILL);
	if (r == 0 || mounting) {
		struct child_failure f;
		ssize_t n;
		do
			n = read(status[0], &f, sizeof(f));
		while (n < 0 && errno == EINTR);
		if (n == (ssize_t)sizeof(f)) {
			f.message[sizeof(f.message) - 1] = '\0';
			capsule_error_clear(err);
			r = cap_err_plain(err, f.errnum > 0 ? f.errnum : EIO, "%s", f.message);
		} else if (n != 0 && r == 0) {
			r = cap_err_plain(err, EIO, "the container's init died during setup");
		}
	}
	close(status[0]);
	if (r < 0) {
		sys_pidfd_send_signal(pidfd, SIGKILL);
		while (waitpid((pid_t)pid, NULL, 0) < 0 && errno == EINTR)
			;
		close(pidfd);
		return r;
	}
	out->pid = (pid_t)pid;
	out->pidfd = pidfd;
	out->uid_base = spec->uid_base;
	out->gid_base = spec->gid_base;
	out->id_count = spec->id_count;
	return 0;
}
