/* The container child's filesystem: everything between its id maps and its cgroups that
 * makes the tree it pivots into (container_rootfs.h). Every target is resolved below the
 * new root's descriptor, never through a path the sandbox could redirect. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "container_rootfs.h"
#include "home.h"
#include "proc_masks.h"
#include "sandbox_config.h"
#include "syscalls.h"

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
		container_child_die(errno, "mount target '%s'", path);
	if (sys_move_mount(tree, "", target, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
		container_child_die(errno, "move_mount onto '%s'", path);
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
		container_child_die(e.code, "%s", e.message);
	int tree = sys_open_tree(AT_FDCWD, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE | AT_SYMLINK_NOFOLLOW);
	if (tree < 0)
		container_child_die(errno, "open_tree '%s' (%s)", path, what);
	struct stat a, b;
	if (fstat(fd, &a) < 0 || fstat(tree, &b) < 0 || a.st_dev != b.st_dev || a.st_ino != b.st_ino)
		container_child_die(ESTALE, "'%s' (%s) was replaced while the sandbox started", path, what);
	struct mount_attr ma = { .attr_set = attrs, .attr_clr = attrs & (MOUNT_ATTR__ATIME | MOUNT_ATTR_NODIRATIME)
									? MOUNT_ATTR__ATIME : 0 };
	if (attrs && sys_mount_setattr(tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &ma) < 0)
		container_child_die(errno, "mount_setattr '%s' (%s)", path, what);
	close(fd);
	return tree;
}

static void bind_host(const char *host_path, int rootfd, const char *path, uint64_t attrs)
{
	int tree = sys_open_tree(AT_FDCWD, host_path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
	if (tree < 0)
		container_child_die(errno, "open_tree '%s'", host_path);
	if (attrs) {
		struct mount_attr a = { .attr_set = attrs };
		if (sys_mount_setattr(tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &a) < 0)
			container_child_die(errno, "mount_setattr '%s'", host_path);
	}
	attach_at(tree, rootfd, path);
}

/* A fresh filesystem instance, mounted with ATTRS at PATH below ROOTFD. OPTS is a
 * NULL-terminated list of key, value pairs (value NULL: a flag). */
static void mount_fs(const char *fstype, const char *const *opts, uint64_t attrs, int rootfd, const char *path)
{
	int fs = sys_fsopen(fstype, FSOPEN_CLOEXEC);
	if (fs < 0)
		container_child_die(errno, "fsopen %s", fstype);
	/* The source mountinfo shows: what runc's callers write in a spec's mounts (and check:
	 * the OCI conformance suite), "shm" for /dev/shm, else the type, not "none". */
	if (sys_fsconfig(fs, FSCONFIG_SET_STRING, "source", strcmp(path, "dev/shm") ? fstype : "shm", 0) < 0)
		container_child_die(errno, "%s source", fstype);
	for (size_t i = 0; opts && opts[i]; i += 2) {
		int r = opts[i + 1] ? sys_fsconfig(fs, FSCONFIG_SET_STRING, opts[i], opts[i + 1], 0)
				    : sys_fsconfig(fs, FSCONFIG_SET_FLAG, opts[i], NULL, 0);
		if (r < 0)
			container_child_die(errno, "%s option '%s'", fstype, opts[i]);
	}
	if (sys_fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
		container_child_die(errno, "creating %s for '%s'", fstype, path);
	int tree = sys_fsmount(fs, FSMOUNT_CLOEXEC, (unsigned)attrs);
	if (tree < 0)
		container_child_die(errno, "fsmount %s", fstype);
	close(fs);
	attach_at(tree, rootfd, path);
}

/* Make a mount point (file or folder) for a bind below ROOTFD; it may already exist. */
static void make_mountpoint(int dirfd, const char *name, bool dir)
{
	if (dir) {
		if (mkdirat(dirfd, name, 0755) < 0 && errno != EEXIST)
			container_child_die(errno, "mkdir '%s'", name);
		return;
	}
	int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0)
		container_child_die(errno, "creating mount point '%s'", name);
	close(fd);
}

static void setup_dev(int rootfd)
{
	static const char *const dev_opts[] = { "mode", "0755", "size", "65536", NULL };
	mount_fs("tmpfs", dev_opts, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC, rootfd, "dev");
	int devfd = open_in_root(rootfd, "dev", O_PATH | O_DIRECTORY);
	if (devfd < 0)
		container_child_die(errno, "open '/dev'");
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
			container_child_die(ENODEV, "'%s' is not the character device %u:%u", host, node->major, node->minor);
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
	if (container_joined_mqueue_tree >= 0)
		attach_at(container_joined_mqueue_tree, rootfd, "dev/mqueue");
	else
		mount_fs("mqueue", NULL, MQUEUE_ATTRS, rootfd, "dev/mqueue");
	for (size_t i = 0; i < sandbox_dev_links_count; i++)
		if (symlinkat(sandbox_dev_links[i][0], devfd, sandbox_dev_links[i][1]) < 0 && errno != EEXIST)
			container_child_die(errno, "symlink '/dev/%s'", sandbox_dev_links[i][1]);
	close(devfd);
}

/* The sandbox's own namespaced kernel settings (an OCI spec's linux.sysctl: the library let
 * through only net.*, IPC and mqueue ones), written while /proc/sys is still writable: its
 * root owns the namespaces they belong to. "name=value,name=value", names with dots. Those of
 * LIST whose name starts with "net." (NET) or the others (!NET) go to proc/sys below ROOTFD;
 * -errno with *FAILED the entry. */
int container_write_sysctls(const char *list, bool net, int rootfd, char *failed, size_t size)
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
		r = container_write_sysctls(spec->sysctls, true, rootfd, failed, sizeof(failed));
	if (r == 0)
		r = container_write_sysctls(spec->sysctls, false, rootfd, failed, sizeof(failed));
	if (r < 0)
		container_child_die(-r, "sysctl %s", failed);
}

/* Paths of /proc and /sys that leak host information or give host-wide knobs (proc_masks.c, the
 * table a vm's agent applies too): masked (files by /dev/null, folders by an empty read-only
 * tmpfs) or made read-only, as docker does. */

/* The /dev/null we bind over masked files: opened once, checked to be char 1:3. */
static int open_devnull(int rootfd)
{
	struct stat st;
	int devnull = open_in_root(rootfd, "dev/null", O_PATH | O_NOFOLLOW);
	if (devnull < 0 || fstat(devnull, &st) < 0 || !S_ISCHR(st.st_mode) || major(st.st_rdev) != 1 ||
	    minor(st.st_rdev) != 3)
		container_child_die(ENODEV, "'/dev/null' in the sandbox is not the null device");
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
		container_child_die(errno, "stat '/%s'", masked);
	close(fd);
	if (S_ISDIR(st.st_mode)) {
		static const char *const ro_tmpfs[] = { "size", "0", NULL };
		mount_fs("tmpfs", ro_tmpfs, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC, rootfd,
			 masked);
	} else {
		int tree = sys_open_tree(devnull, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH);
		if (tree < 0)
			container_child_die(errno, "open_tree '/dev/null'");
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
		container_child_die(errno, "open_tree '/%s'", readonly);
	close(src);
	struct mount_attr a = { .attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC };
	if (sys_mount_setattr(tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &a) < 0)
		container_child_die(errno, "read-only '/%s'", readonly);
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
				container_child_die(EINVAL, "masked or read-only path '%.*s'", (int)n, p);
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
		container_child_die(ENAMETOOLONG, "mount target '%s'", path);
	for (char *p = buf;; p++) {
		bool last = *p == '\0';
		if (*p != '/' && !last)
			continue;
		*p = '\0';
		int fd = open_in_root(rootfd, buf, O_PATH | O_DIRECTORY);
		if (fd < 0) {
			if (errno != ENOENT)
				container_child_die(errno, "mount target '/%s'", buf);
			char *slash = strrchr(buf, '/');
			int parent = slash ? (*slash = '\0', open_in_root(rootfd, buf, O_PATH | O_DIRECTORY)) : dup(rootfd);
			if (parent < 0)
				container_child_die(errno, "mount target '/%s'", buf);
			if (slash)
				*slash = '/';
			if (mkdirat(parent, slash ? slash + 1 : buf, 0755) < 0 && errno != EEXIST)
				container_child_die(errno, "mkdir '/%s'", buf);
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
		container_child_die(errno, "the propagation of '%s'", target);
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
		container_child_die(errno, "cloning the mount at '%s'", path);
	char self[64];
	snprintf(self, sizeof(self), "/proc/self/fd/%d", old);
	if (umount2(self, MNT_DETACH) < 0)
		container_child_die(errno, "replacing the mount at '%s'", path);
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
			container_child_die(errno, "mount target '%s'", b->target);
		int fd = openat(dfd, slash + 1, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
		if (fd < 0 && errno != EISDIR)
			container_child_die(errno, "mount target '%s'", b->target);
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

/* The option last, so that a kernel which refuses it gets the same options less its tail.
 * tests/e2e/test_volatile_layer.py stands in for a kernel before 5.10 with one more option that
 * no overlayfs knows (CAPSULE_TEST_REFUSE_VOLATILE). */
static const char *volatile_option(void)
{
	return getenv("CAPSULE_TEST_REFUSE_VOLATILE") ? ",volatile,x-capsule-test" : ",volatile";
}

/* The overlay's lowerdir option: the layers, top first, then the host image's root, HOST_FD (-1:
 * none), named by its descriptor: the sandbox's root we are by then could not walk its path.
 * Layer 0 is attached at rootfs/ itself, where the overlay then goes on top of it, and each
 * other at l/<i> below FSDIR (attach_layers): named relative to it, because a mount's options
 * fit in one page and 128 absolute paths do not. */
static void overlay_options(const struct container_spec *spec, int host_fd, char *opts, size_t size)
{
	size_t off = 0;
	int n = snprintf(opts, size, "lowerdir=");
	for (size_t i = spec->nlayers; n >= 0 && (size_t)n < size - off && i-- > 0;) {
		off += (size_t)n;
		const char *sep = i > 0 || host_fd >= 0 ? ":" : "";
		n = i ? snprintf(opts + off, size - off, "l/%zu%s", i, sep) : snprintf(opts + off, size - off, "rootfs%s", sep);
	}
	if (n >= 0 && (size_t)n < size - off && host_fd >= 0) {
		off += (size_t)n;
		n = snprintf(opts + off, size - off, "/proc/self/fd/%d", host_fd);
	}
	if (n >= 0 && (size_t)n < size - off) {
		off += (size_t)n;
		const char *at = spec->disk_tree >= 0 ? "disk/" : "";
		n = snprintf(opts + off, size - off, ",upperdir=%supper,workdir=%swork,userxattr%s", at, at,
			     spec->volatile_upper ? volatile_option() : "");
	}
	if (n < 0 || (size_t)n >= size - off)
		container_child_die(ENAMETOOLONG, "overlay options");
}

/* Layer 0's clone goes onto rootfs/, under the overlay mounted there next (the overlay's lower
 * layer is a path looked up before its own mount is placed on top), each other layer's onto its
 * own empty folder l/<i> below FSDIR (made by the shim), and the sandbox's disk onto disk/;
 * with the old root these mounts leave the sandbox at pivot_root. Layer 0 on rootfs/ spares a
 * folder or two per sandbox (fs/l and fs/l/0 for the host image): inodes that an ext4 without
 * a journal makes slowly once many were recently deleted (docs/performance.md). */
static void attach_layers(const struct container_spec *spec, int fsfd)
{
	for (size_t i = 0; i < spec->nlayers; i++) {
		char at[32];
		snprintf(at, sizeof(at), i ? "l/%zu" : "rootfs", i);
		int tree = child_tree(spec, spec->layer_trees[i], LAYER_ATTRS, "image layer");
		if (sys_move_mount(tree, "", fsfd, at, MOVE_MOUNT_F_EMPTY_PATH) < 0)
			container_child_die(errno, "attaching image layer %zu", i);
	}
	if (spec->disk_tree >= 0 && sys_move_mount(spec->disk_tree, "", fsfd, "disk", MOVE_MOUNT_F_EMPTY_PATH) < 0)
		container_child_die(errno, "attaching the sandbox's disk");
}

/* From FSDIR (FSFD, our working folder from here on) by relative names only: the sandbox's
 * root we now are could not walk the path to it. */
void container_setup_rootfs(const struct container_spec *spec, int fsfd, int host_fd)
{
	char rootfs[4096], opts[8192];
	snprintf(rootfs, sizeof(rootfs), "%s/rootfs", spec->fsdir);
	overlay_options(spec, host_fd, opts, sizeof(opts));

	/* Nothing we mount may propagate back to the host. */
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		container_child_die(errno, "making mounts private");
	if (fchdir(fsfd) < 0)
		container_child_die(errno, "chdir '%s'", spec->fsdir);
	if (spec->root_is_tree) {
		int tree = child_tree(spec, spec->layer_trees[0], MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, "root folder");
		if (sys_move_mount(tree, "", fsfd, "rootfs", MOVE_MOUNT_F_EMPTY_PATH) < 0)
			container_child_die(errno, "attaching the root folder");
		close(fsfd);
	} else {
		attach_layers(spec, fsfd);
		close(fsfd);
		int r = mount("overlay", "rootfs", "overlay", MS_NOSUID | MS_NODEV, opts);
		/* A kernel before 5.10 knows no `volatile`: the overlay is then mounted as a
		 * named sandbox's is, once more without it (the option is the last one). */
		if (r < 0 && errno == EINVAL && spec->volatile_upper) {
			opts[strlen(opts) - strlen(volatile_option())] = '\0';
			r = mount("overlay", "rootfs", "overlay", MS_NOSUID | MS_NODEV, opts);
		}
		if (r < 0)
			container_child_die(errno, "mounting the overlay root on '%s'", rootfs);
	}
	if (host_fd >= 0)
		close(host_fd);
	int rootfd = open("rootfs", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0)
		container_child_die(errno, "open '%s'", rootfs);

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

	if (container_joined_proc_tree >= 0)
		attach_at(container_joined_proc_tree, rootfd, "proc");
	else
		mount_fs("proc", NULL, PROC_ATTRS, rootfd, "proc");
	setup_dev(rootfd);
	if (container_joined_sys_tree >= 0)
		attach_at(container_joined_sys_tree, rootfd, "sys");
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
			container_child_die(errno, "making the root read-only");
	}
	close(rootfd);

	if (chdir("rootfs") < 0)
		container_child_die(errno, "chdir '%s'", rootfs);
	/* pivot_root(".", ".") stacks the old root under the new one; detaching it leaves the
	 * sandbox with no path back to the host's tree. */
	if (sys_pivot_root(".", ".") < 0)
		container_child_die(errno, "pivot_root into '%s'", rootfs);
	if (umount2(".", MNT_DETACH) < 0)
		container_child_die(errno, "detaching the old root");
	if (chdir("/") < 0)
		container_child_die(errno, "chdir '/'");
}
