/* Hot mounts into a running container: a detached mount the shim prepared is attached inside
 * the sandbox's mount namespace, and taken away again, by a short-lived child of the shim that
 * enters the sandbox's user and mount namespaces. Every path below the sandbox's root is
 * resolved there from the root's fd, never by string on the host. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "container.h"
#include "syscalls.h"
#include "util.h"

/* What the child tells the shim: 0 or an errno with a message, and the mount's id. */
struct hot_result {
	int errnum;
	uint64_t mnt_id;
	char message[400];
};

static int result_fd = -1;

static _Noreturn void hot_die(int errnum, bool with_strerror, const char *fmt, ...) _printf_(3, 4);
static _Noreturn void hot_die(int errnum, bool with_strerror, const char *fmt, ...)
{
	struct hot_result res = { .errnum = errnum };
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(res.message, sizeof(res.message), fmt, ap);
	va_end(ap);
	if (with_strerror && n >= 0 && (size_t)n < sizeof(res.message))
		snprintf(res.message + n, sizeof(res.message) - (size_t)n, ": %s", strerror(errnum));
	(void)!write(result_fd, &res, sizeof(res));
	_exit(1);
}

/* The resolution every sandbox path gets here: below the root, and no symlink at all on the
 * way (nor a magic link). The sandbox controls its tree and can swap any component for a
 * symlink at any time; refusing them means a mount lands exactly at the path the caller
 * named, or nowhere. */
static int open_beneath(int rootfd, const char *rel, int flags)
{
	int fd;
	do
		fd = sys_openat2(rootfd, rel[0] ? rel : ".", (uint64_t)(flags | O_CLOEXEC),
				 RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS);
	while (fd < 0 && errno == EAGAIN);
	return fd;
}

static _Noreturn void die_path(int errnum, const char *what, const char *path)
{
	if (errnum == ELOOP)
		hot_die(ELOOP, false, "%s '/%s' passes through a symlink inside the sandbox (hot mounts refuse symlinks)",
			what, path);
	if (errnum == ENOTDIR)
		hot_die(ENOTDIR, false, "%s '/%s': a part of it is not a folder inside the sandbox", what, path);
	hot_die(errnum, true, "%s '/%s'", what, path);
}

/* mkdir -p of REL (relative to the root, normalized) inside the sandbox, one component at a
 * time, each opened from the root with open_beneath. */
static void mkdirs_beneath(int rootfd, char *rel)
{
	if (!rel[0])
		return;
	for (char *p = rel;; p++) {
		bool last = *p == '\0';
		if (*p != '/' && !last)
			continue;
		*p = '\0';
		int fd = open_beneath(rootfd, rel, O_PATH | O_DIRECTORY);
		if (fd < 0 && errno == ENOENT) {
			char *slash = strrchr(rel, '/');
			int parent;
			if (slash) {
				*slash = '\0';
				parent = open_beneath(rootfd, rel, O_PATH | O_DIRECTORY);
				*slash = '/';
			} else {
				parent = dup(rootfd);
			}
			if (parent < 0)
				die_path(errno, "mount target", rel);
			if (mkdirat(parent, slash ? slash + 1 : rel, 0755) < 0 && errno != EEXIST)
				die_path(errno, "mkdir", rel);
			close(parent);
			fd = open_beneath(rootfd, rel, O_PATH | O_DIRECTORY);
		}
		if (fd < 0)
			die_path(errno, "mount target", rel);
		close(fd);
		if (last)
			return;
		*p = '/';
	}
}

/* In the child: become the sandbox's root in its user and mount namespaces. The pidfd names
 * the sandbox's init for sure (a pid number could be reused), and one setns enters both. */
static int enter_sandbox(const struct container *ct, bool rootless, bool in_userns)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	if (setns(ct->pidfd, in_userns ? CLONE_NEWNS : CLONE_NEWUSER | CLONE_NEWNS) < 0)
		hot_die(errno, true, "entering the sandbox's namespaces");
	if (!rootless && setgroups(0, NULL) < 0)
		hot_die(errno, true, "setgroups in the sandbox");
	if (setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0)
		hot_die(errno, true, "becoming the sandbox's root");
	/* Changing credentials made us dumpable again; nothing inside may attach to us. */
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	/* setns made the namespace's root our "/": the sandbox's root after its pivot_root. */
	int rootfd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0)
		hot_die(errno, true, "opening the sandbox's root");
	return rootfd;
}

static int get_mnt_id(int dirfd, const char *path, int flags, uint64_t *id, struct kstatx *st)
{
	memset(st, 0, sizeof(*st));
	if (sys_statx(dirfd, path, flags | AT_SYMLINK_NOFOLLOW, STATX_TYPE | STATX_MNT_ID_UNIQUE | STATX_MNT_ID,
		      st) < 0)
		return -errno;
	if (!(st->stx_mask & (STATX_MNT_ID | STATX_MNT_ID_UNIQUE)))
		return -EOPNOTSUPP;
	*id = st->stx_mnt_id;
	return 0;
}

/* A rootless shim may not clone the host's mounts, so SRC is an O_PATH descriptor: as the
 * sandbox's root, in a mount namespace of our own (a copy of the host's, which that root may
 * clone from), the same path is cloned, if it still leads to SRC's file, with ATTRS. */
static int clone_as_sandbox_root(const struct container *ct, int src, uint64_t attrs)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	if (setns(ct->pidfd, CLONE_NEWUSER) < 0)
		hot_die(errno, true, "entering the sandbox's user namespace");
	if (setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0)
		hot_die(errno, true, "becoming the sandbox's root");
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	if (unshare(CLONE_NEWNS) < 0)
		hot_die(errno, true, "a mount namespace for the mount's clone");
	char path[4096];
	capsule_error e = { 0 };
	if (fd_path(src, path, sizeof(path), &e) < 0)
		hot_die(e.code, false, "%s", e.message);
	int tree = sys_open_tree(AT_FDCWD, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE | AT_SYMLINK_NOFOLLOW);
	if (tree < 0)
		hot_die(errno, true, "open_tree '%s'", path);
	struct stat a, b;
	if (fstat(src, &a) < 0 || fstat(tree, &b) < 0 || a.st_dev != b.st_dev || a.st_ino != b.st_ino)
		hot_die(ESTALE, false, "mount source '%s' was replaced while it was being mounted", path);
	/* Private, as shim_host_tree makes a root shim's clone: this copy of the host's mounts is
	 * a slave of the host's peer groups, and a mount the host made later below the path
	 * would appear in the sandbox. */
	struct mount_attr ma = { .attr_set = attrs, .propagation = MS_PRIVATE };
	if (sys_mount_setattr(tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &ma) < 0)
		hot_die(errno, true, "preparing the mount of '%s'", path);
	return tree;
}

static _Noreturn void attach_child(const struct container *ct, bool rootless, int tree, uint64_t attrs,
				   const char *target, bool is_dir)
{
	if (rootless)
		tree = clone_as_sandbox_root(ct, tree, attrs);
	int rootfd = enter_sandbox(ct, rootless, rootless);
	char rel[4096];
	if (snprintf(rel, sizeof(rel), "%s", target + 1) >= (int)sizeof(rel))
		hot_die(ENAMETOOLONG, true, "mount target '%s'", target);
	char *slash = strrchr(rel, '/');
	if (is_dir) {
		mkdirs_beneath(rootfd, rel);
	} else {
		/* A file is mounted onto a file: make its folder, then an empty file if none. */
		int parent;
		const char *base = rel;
		if (slash) {
			*slash = '\0';
			mkdirs_beneath(rootfd, rel);
			parent = open_beneath(rootfd, rel, O_PATH | O_DIRECTORY);
			if (parent < 0)
				die_path(errno, "mount target", rel);
			*slash = '/';
			base = slash + 1;
		} else {
			parent = dup(rootfd);
		}
		int fd = openat(parent, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
		if (fd < 0 && errno != EEXIST)
			die_path(errno, "creating the mount point", rel);
		if (fd >= 0)
			close(fd);
		close(parent);
	}
	/* Without O_NOFOLLOW: a symlink at the last name fails (RESOLVE_NO_SYMLINKS) instead of
	 * being opened itself. */
	int tfd = open_beneath(rootfd, rel, O_PATH);
	if (tfd < 0)
		die_path(errno, "mount target", rel);
	struct stat st;
	if (fstat(tfd, &st) < 0)
		die_path(errno, "mount target", rel);
	if (is_dir && !S_ISDIR(st.st_mode))
		hot_die(ENOTDIR, false, "mount target '%s' is not a folder inside the sandbox, and the source is one",
			target);
	if (!is_dir && S_ISDIR(st.st_mode))
		hot_die(EISDIR, false, "mount target '%s' is a folder inside the sandbox, and the source is a file",
			target);
	if (sys_move_mount(tree, "", tfd, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
		hot_die(errno, true, "attaching the mount at '%s'", target);
	struct hot_result res = { 0 };
	struct kstatx sx;
	int r = get_mnt_id(tree, "", AT_EMPTY_PATH, &res.mnt_id, &sx);
	if (r < 0) {
		/* Not knowing the id would make the mount impossible to remove safely. */
		umount2(rel, MNT_DETACH | UMOUNT_NOFOLLOW);
		hot_die(-r, true, "reading the id of the mount at '%s'", target);
	}
	(void)!write(result_fd, &res, sizeof(res));
	_exit(0);
}

static _Noreturn void detach_child(const struct container *ct, bool rootless, const char *target, uint64_t mnt_id)
{
	int rootfd = enter_sandbox(ct, rootless, false);
	char rel[4096];
	if (snprintf(rel, sizeof(rel), "%s", target + 1) >= (int)sizeof(rel))
		hot_die(ENAMETOOLONG, true, "mount target '%s'", target);
	char *slash = strrchr(rel, '/');
	const char *base = rel;
	int parent;
	if (slash) {
		*slash = '\0';
		parent = open_beneath(rootfd, rel, O_PATH | O_DIRECTORY);
		if (parent < 0 && (errno == ENOENT || errno == ELOOP || errno == ENOTDIR))
			hot_die(errno, false,
				"'%s' is no longer where the hot mount was made: the sandbox moved or replaced '/%s'; "
				"the mount stays",
				target, rel);
		if (parent < 0)
			die_path(errno, "mount target", rel);
		base = slash + 1;
	} else {
		parent = dup(rootfd);
	}
	uint64_t id;
	struct kstatx sx;
	int r = get_mnt_id(parent, base, 0, &id, &sx);
	if (r < 0)
		hot_die(-r, true, "'%s'", target);
	if (S_ISLNK(sx.stx_mode) || id != mnt_id ||
	    ((sx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) && !(sx.stx_attributes & STATX_ATTR_MOUNT_ROOT)))
		hot_die(ESTALE, false, "'%s' is no longer the hot mount made there (the sandbox replaced it); the mount stays",
			target);
	/* From inside the parent, by its last name only, never following a symlink: what is
	 * unmounted is what was checked just now, and only a mount of this namespace can be. */
	if (fchdir(parent) < 0)
		hot_die(errno, true, "'%s'", target);
	if (umount2(base, MNT_DETACH | UMOUNT_NOFOLLOW) < 0)
		hot_die(errno, true, "unmounting '%s'", target);
	struct hot_result res = { 0 };
	(void)!write(result_fd, &res, sizeof(res));
	_exit(0);
}

/* The child keeps only the fds it needs (KEEP, -1 for none): it is about to enter the sandbox,
 * and the shim's sockets and files have no business there even for a moment. */
static int close_all_but(int keep[3])
{
	for (int i = 0; i < 3; i++)
		for (int j = i + 1; j < 3; j++)
			if (keep[j] < keep[i]) {
				int t = keep[i];
				keep[i] = keep[j];
				keep[j] = t;
			}
	unsigned from = 3;
	for (int i = 0; i < 3; i++) {
		if (keep[i] < (int)from)
			continue;
		if ((unsigned)keep[i] > from && fds_close_range(from, (unsigned)keep[i] - 1) < 0)
			return -errno;
		from = (unsigned)keep[i] + 1;
	}
	return fds_close_range(from, ~0U);
}

/* Fork a child that runs FN; collect its result. The shim is single threaded, so fork is
 * safe, and the child touches only its own copy. */
static int run_child(int which, const struct container *ct, bool rootless, int tree, uint64_t attrs,
		     const char *target, bool is_dir, uint64_t *mnt_id, capsule_error *err)
{
	int pipefd[2];
	if (pipe2(pipefd, O_CLOEXEC) < 0)
		return cap_err(err, errno, "pipe");
	pid_t pid = fork();
	if (pid < 0) {
		int e = errno;
		close(pipefd[0]);
		close(pipefd[1]);
		return cap_err(err, e, "fork");
	}
	if (pid == 0) {
		close(pipefd[0]);
		result_fd = pipefd[1];
		int keep[3] = { ct->pidfd, tree, result_fd };
		int cr = close_all_but(keep);
		if (cr < 0)
			hot_die(-cr, true, "closing the shim's fds in the hot mount's child");
		if (which == 0)
			attach_child(ct, rootless, tree, attrs, target, is_dir);
		detach_child(ct, rootless, target, *mnt_id);
	}
	close(pipefd[1]);
	struct hot_result res;
	ssize_t n;
	do
		n = read(pipefd[0], &res, sizeof(res));
	while (n < 0 && errno == EINTR);
	close(pipefd[0]);
	int st = 0;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	if (n != (ssize_t)sizeof(res))
		return cap_err_plain(err, EIO, "the helper that %s died (status 0x%x)",
				     which == 0 ? "attaches the mount" : "removes the mount", (unsigned)st);
	res.message[sizeof(res.message) - 1] = '\0';
	if (res.errnum)
		return cap_err_plain(err, res.errnum > 0 ? res.errnum : EIO, "%s", res.message);
	if (mnt_id)
		*mnt_id = res.mnt_id;
	return 0;
}

int container_hot_attach(const struct container *ct, bool rootless, int tree, uint64_t attrs, const char *target,
			 bool is_dir, uint64_t *mnt_id, capsule_error *err)
{
	return run_child(0, ct, rootless, tree, attrs, target, is_dir, mnt_id, err);
}

int container_hot_detach(const struct container *ct, bool rootless, const char *target, uint64_t mnt_id,
			 capsule_error *err)
{
	return run_child(1, ct, rootless, -1, 0, target, false, &mnt_id, err);
}

int container_idmap_tree(const struct container *ct, int tree, uid_t owner_uid, gid_t owner_gid, capsule_error *err)
{
	int userns = -1;
	int r = container_host_folder_userns(owner_uid, owner_gid, ct->uid_base, ct->gid_base, ct->id_count, &userns, err);
	if (r == 0)
		r = container_idmap_host_folder(userns, tree, "a hot mount", err);
	if (userns >= 0)
		close(userns);
	return r;
}
