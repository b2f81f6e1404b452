/* The guest side of mounts (vm isolation). Every host folder a vm sandbox mounts (boot-time
 * binds, volumes, hot mounts) is one entry of a single virtio-9p share, "mounts", whose host
 * folder lives in the shim's private mount namespace (docs/architecture.md, "vm isolation").
 * The agent mounts that share once, at boot, where nothing in the sandbox can see it (the
 * initramfs's /shares, covered by the sandbox's root), and for each VM_MOUNT clones the named
 * entry and attaches the clone at its target inside the root. tmpfs mounts are made here too.
 *
 * As in the container level, a target is resolved inside the sandbox's root from the root's
 * fd (openat2 RESOLVE_IN_ROOT), its missing folders made one at a time, and the mount is
 * attached with move_mount onto the target's fd: a symlink the sandbox planted leads nowhere
 * outside. Hot mounts refuse symlinks on the path altogether, as the container level's do. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"
#include "util.h"
#include "syscalls.h"

#ifndef STATX_TYPE
#define STATX_TYPE 0x1U
#endif

#define SHARES_DIR "/shares"
#define NINEP_SHARE_OPTS "trans=virtio,version=9p2000.L,msize=262144,cache=mmap"

static int share_fd = -1;
/* The initramfs's /shares under the share, where SHARES_ON attaches it again once the
 * sandbox's root covers every path to it. */
static int share_point_fd = -1;

void vm_mounts_boot(void)
{
	/* The shim adds the share only where it can serve it (a root shim, with its own mount
	 * namespace); without it, VM_MOUNT of a share entry is refused below. */
	if (mkdir(SHARES_DIR, 0700) < 0 && errno != EEXIST)
		return;
	share_point_fd = open(SHARES_DIR, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (mount(CP_VM_MOUNTS_TAG, SHARES_DIR, "9p", MS_NOSUID | MS_NODEV, NINEP_SHARE_OPTS) < 0)
		return;
	share_fd = open(SHARES_DIR, O_PATH | O_DIRECTORY | O_CLOEXEC);
}

struct mount_error {
	int errnum;
	char message[512];
};

static int fail(struct mount_error *e, int errnum, bool with_strerror, const char *fmt, ...) _printf_(4, 5);
static int fail(struct mount_error *e, int errnum, bool with_strerror, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(e->message, sizeof(e->message), fmt, ap);
	va_end(ap);
	if (with_strerror && n >= 0 && (size_t)n < sizeof(e->message))
		snprintf(e->message + n, sizeof(e->message) - (size_t)n, ": %s", strerror(errnum));
	e->errnum = errnum;
	return -errnum;
}

static int open_in_root(int rootfd, const char *rel, int flags, bool no_symlinks)
{
	uint64_t resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | (no_symlinks ? RESOLVE_NO_SYMLINKS : 0);
	return sys_openat2(rootfd, rel[0] ? rel : ".", (uint64_t)(flags | O_CLOEXEC), resolve);
}

static int path_error(struct mount_error *e, int errnum, const char *what, const char *rel)
{
	if (errnum == ELOOP)
		return fail(e, ELOOP, false,
			    "%s '/%s' passes through a symlink inside the sandbox (hot mounts refuse symlinks)", what, rel);
	if (errnum == ENOTDIR)
		return fail(e, ENOTDIR, false, "%s '/%s': a part of it is not a folder inside the sandbox", what, rel);
	return fail(e, errnum, true, "%s '/%s'", what, rel);
}

/* mkdir -p of REL (relative to the root) inside the sandbox, each component opened again
 * from the root. */
static int mkdirs_in_root(int rootfd, char *rel, bool no_symlinks, struct mount_error *e)
{
	if (!rel[0])
		return 0;
	for (char *p = rel;; p++) {
		bool last = *p == '\0';
		if (*p != '/' && !last)
			continue;
		*p = '\0';
		int fd = open_in_root(rootfd, rel, O_PATH | O_DIRECTORY, no_symlinks);
		if (fd < 0 && errno == ENOENT) {
			char *slash = strrchr(rel, '/');
			int parent;
			if (slash) {
				*slash = '\0';
				parent = open_in_root(rootfd, rel, O_PATH | O_DIRECTORY, no_symlinks);
				*slash = '/';
			} else {
				parent = fcntl(rootfd, F_DUPFD_CLOEXEC, 3);
			}
			if (parent < 0)
				return path_error(e, errno, "mount target", rel);
			int r = mkdirat(parent, slash ? slash + 1 : rel, 0755);
			int me = errno;
			close(parent);
			if (r < 0 && me != EEXIST)
				return path_error(e, me, "mkdir", rel);
			fd = open_in_root(rootfd, rel, O_PATH | O_DIRECTORY, no_symlinks);
		}
		if (fd < 0)
			return path_error(e, errno, "mount target", rel);
		close(fd);
		if (last)
			return 0;
		*p = '/';
	}
}

/* Make TARGET's mount point (a folder, or an empty file for a file) and open it O_PATH. */
static int open_mount_point(int rootfd, const char *target, bool is_dir, bool no_symlinks, struct mount_error *e)
{
	char rel[4096];
	if (snprintf(rel, sizeof(rel), "%s", target + 1) >= (int)sizeof(rel))
		return fail(e, ENAMETOOLONG, false, "mount target '%s' is too long", target);
	int r;
	if (is_dir) {
		if ((r = mkdirs_in_root(rootfd, rel, no_symlinks, e)) < 0)
			return r;
	} else {
		char *slash = strrchr(rel, '/');
		const char *base = rel;
		int parent;
		if (slash) {
			*slash = '\0';
			if ((r = mkdirs_in_root(rootfd, rel, no_symlinks, e)) < 0)
				return r;
			parent = open_in_root(rootfd, rel, O_PATH | O_DIRECTORY, no_symlinks);
			if (parent < 0)
				return path_error(e, errno, "mount target", rel);
			*slash = '/';
			base = slash + 1;
		} else {
			parent = fcntl(rootfd, F_DUPFD_CLOEXEC, 3);
		}
		/* A file that is there already is not opened for writing: it may be a read-only
		 * mount itself (the agent's /etc/resolv.conf, which an OCI spec binds its own over). */
		struct stat there;
		int fd = -1, fe = 0;
		if (fstatat(parent, base, &there, AT_SYMLINK_NOFOLLOW) < 0) {
			fd = openat(parent, base, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
			fe = fd < 0 ? errno : 0;
		}
		close(parent);
		if (fd < 0 && fe && fe != EISDIR)
			return path_error(e, fe, "creating the mount point", rel);
		if (fd >= 0)
			close(fd);
	}
	/* No O_NOFOLLOW: a symlink at the last name resolves inside the root (boot) or fails
	 * (hot, RESOLVE_NO_SYMLINKS); it is never opened itself. */
	int tfd = open_in_root(rootfd, rel, O_PATH, no_symlinks);
	if (tfd < 0)
		return path_error(e, errno, "mount target", rel);
	struct stat st;
	if (fstat(tfd, &st) < 0) {
		close(tfd);
		return path_error(e, errno, "mount target", rel);
	}
	if (is_dir != S_ISDIR(st.st_mode)) {
		close(tfd);
		return fail(e, is_dir ? ENOTDIR : EISDIR, false,
			    is_dir ? "mount target '%s' is not a folder inside the sandbox, and the source is one"
				   : "mount target '%s' is a folder inside the sandbox, and the source is a file",
			    target);
	}
	return tfd;
}

static int mount_id(int fd, const char *path, int flags, uint64_t *id, struct kstatx *st)
{
	memset(st, 0, sizeof(*st));
	if (sys_statx(fd, path, flags | AT_SYMLINK_NOFOLLOW, STATX_TYPE | STATX_MNT_ID, st) < 0)
		return -errno;
	if (!(st->stx_mask & STATX_MNT_ID) || !st->stx_mnt_id)
		return -EOPNOTSUPP;
	*id = st->stx_mnt_id;
	return 0;
}

/* The mount attributes the request's flags ask for beyond nosuid and nodev. */
static uint64_t extra_attrs(uint32_t flags)
{
	uint64_t a = 0;
	if (flags & CP_VM_MOUNT_NOEXEC)
		a |= MOUNT_ATTR_NOEXEC;
	if (flags & CP_VM_MOUNT_NOATIME)
		a |= MOUNT_ATTR_NOATIME;
	else if (flags & CP_VM_MOUNT_STRICTATIME)
		a |= MOUNT_ATTR_STRICTATIME;
	if (flags & CP_VM_MOUNT_NODIRATIME)
		a |= MOUNT_ATTR_NODIRATIME;
	return a;
}

/* The detached mount a request names: a clone of the share's entry, or a fresh tmpfs. */
static int make_tree(const struct cp_vm_mount *m, bool *is_dir, struct mount_error *e)
{
	if (m->kind == CP_VM_MOUNT_TMPFS) {
		int fs = sys_fsopen("tmpfs", FSOPEN_CLOEXEC);
		if (fs < 0)
			return fail(e, errno, true, "tmpfs for '%s'", m->target);
		char size[32], mode[16];
		snprintf(size, sizeof(size), "%llu", (unsigned long long)m->size);
		snprintf(mode, sizeof(mode), "0%o", m->mode);
		int tree = -1;
		if (sys_fsconfig(fs, FSCONFIG_SET_STRING, "size", size, 0) < 0 ||
		    sys_fsconfig(fs, FSCONFIG_SET_STRING, "mode", mode, 0) < 0 ||
		    sys_fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0 ||
		    (tree = sys_fsmount(fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | extra_attrs(m->flags))) < 0)
			fail(e, errno, true, "tmpfs for '%s'", m->target);
		close(fs);
		*is_dir = true;
		return tree >= 0 ? tree : -e->errnum;
	}
	if (share_fd < 0)
		return fail(e, ENODEV, false, "this guest has no share for host folders (vm mounts need a root shim)");
	int tree = sys_open_tree(share_fd, m->name, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE | AT_SYMLINK_NOFOLLOW);
	if (tree < 0)
		return fail(e, errno, true, "the share's entry '%s' for '%s'", m->name, m->target);
	struct stat st;
	uint64_t extra = extra_attrs(m->flags);
	/* An atime mode replaces the clone's: the kernel takes one only with the whole field. */
	struct mount_attr a = { .attr_set = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | extra |
					    ((m->flags & CP_VM_MOUNT_RO) ? MOUNT_ATTR_RDONLY : 0),
				.attr_clr = (extra & (MOUNT_ATTR_NOATIME | MOUNT_ATTR_STRICTATIME)) ? MOUNT_ATTR__ATIME : 0 };
	if (fstat(tree, &st) < 0 || sys_mount_setattr(tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &a) < 0) {
		int r = fail(e, errno, true, "preparing the mount of '%s'", m->target);
		close(tree);
		return r;
	}
	*is_dir = S_ISDIR(st.st_mode);
	return tree;
}

static int do_mount(const struct cp_vm_mount *m, uint64_t *id, struct mount_error *e)
{
	bool is_dir = true;
	int tree = make_tree(m, &is_dir, e);
	if (tree < 0)
		return tree;
	int rootfd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
	int r = rootfd < 0 ? fail(e, errno, true, "opening the sandbox's root") : 0;
	int tfd = r < 0 ? -1 : open_mount_point(rootfd, m->target, is_dir, m->flags & CP_VM_MOUNT_NO_SYMLINKS, e);
	if (r == 0 && tfd < 0)
		r = tfd;
	if (r == 0 && sys_move_mount(tree, "", tfd, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
		r = fail(e, errno, true, "attaching the mount at '%s'", m->target);
	struct kstatx sx;
	if (r == 0 && (r = mount_id(tree, "", AT_EMPTY_PATH, id, &sx)) < 0)
		fail(e, -r, true, "reading the id of the mount at '%s'", m->target);
	if (tfd >= 0)
		close(tfd);
	if (rootfd >= 0)
		close(rootfd);
	close(tree);
	return r;
}

static int do_unmount(const struct cp_vm_unmount *m, struct mount_error *e)
{
	char rel[4096];
	if (snprintf(rel, sizeof(rel), "%s", m->target + 1) >= (int)sizeof(rel) || !rel[0])
		return fail(e, EINVAL, false, "unmount target '%s'", m->target);
	int rootfd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0)
		return fail(e, errno, true, "opening the sandbox's root");
	char *slash = strrchr(rel, '/');
	const char *base = rel;
	int parent;
	if (slash) {
		*slash = '\0';
		parent = open_in_root(rootfd, rel, O_PATH | O_DIRECTORY, true);
		base = slash + 1;
	} else {
		parent = fcntl(rootfd, F_DUPFD_CLOEXEC, 3);
	}
	close(rootfd);
	if (parent < 0) {
		int pe = errno;
		if (pe == ENOENT || pe == ELOOP || pe == ENOTDIR)
			return fail(e, pe, false,
				    "'%s' is no longer where the hot mount was made: the sandbox moved or replaced '/%s'; "
				    "the mount stays",
				    m->target, rel);
		return path_error(e, pe, "mount target", rel);
	}
	uint64_t id = 0;
	struct kstatx sx;
	int r = mount_id(parent, base, 0, &id, &sx);
	if (r < 0)
		fail(e, -r, true, "'%s'", m->target);
	else if (S_ISLNK(sx.stx_mode) || id != m->mnt_id ||
		 ((sx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) && !(sx.stx_attributes & STATX_ATTR_MOUNT_ROOT)))
		r = fail(e, ESTALE, false,
			 "'%s' is no longer the hot mount made there (the sandbox replaced it); the mount stays", m->target);
	/* By its last name from inside its folder, never following a symlink: what goes is
	 * what was checked just now. The agent's own cwd is "/" again at once. */
	else if (fchdir(parent) < 0)
		r = fail(e, errno, true, "'%s'", m->target);
	else {
		if (umount2(base, MNT_DETACH | UMOUNT_NOFOLLOW) < 0)
			r = fail(e, errno, true, "unmounting '%s'", m->target);
		(void)!chdir("/");
	}
	close(parent);
	return r;
}

/* SHARES_OFF: QEMU refuses to migrate while the guest has the share mounted (it lifts its
 * blocker once the share's root fid is clunked, when the 9p superblock goes). The mount is
 * detached from inside it (its only path is under the sandbox's root) and our fd on it
 * closed; an entry still mounted somewhere (a bind) keeps the superblock, and QEMU's refusal
 * then says so. */
static int shares_off(uint64_t *id, struct mount_error *e)
{
	if (share_fd < 0)
		return fail(e, ENODEV, false, "this guest has no share for host folders mounted");
	struct kstatx sx;
	int r = mount_id(share_fd, "", AT_EMPTY_PATH, id, &sx);
	if (r < 0)
		return fail(e, -r, true, "the share's mount id");
	if (fchdir(share_fd) < 0)
		return fail(e, errno, true, "entering the share");
	r = umount2(".", MNT_DETACH) < 0 ? fail(e, errno, true, "unmounting the share") : 0;
	(void)!chdir("/");
	if (r == 0) {
		close(share_fd);
		share_fd = -1;
	}
	return r;
}

/* SHARES_ON: the share mounted again where it was, by the new mount API onto the mount
 * point's fd, so that open_tree clones its entries from a mount of this namespace. */
static int shares_on(uint64_t *id, struct mount_error *e)
{
	if (share_fd >= 0) {
		struct kstatx sx;
		int r = mount_id(share_fd, "", AT_EMPTY_PATH, id, &sx);
		return r < 0 ? fail(e, -r, true, "the share's mount id") : 0;
	}
	if (share_point_fd < 0)
		return fail(e, ENODEV, false, "this guest has no place for the share of host folders");
	int fs = sys_fsopen("9p", FSOPEN_CLOEXEC);
	if (fs < 0)
		return fail(e, errno, true, "9p for the share");
	static const char *const opts[][2] = { { "source", CP_VM_MOUNTS_TAG }, { "trans", "virtio" },
					       { "version", "9p2000.L" }, { "msize", "262144" },
					       { "cache", "mmap" } };
	int tree = -1, r = 0;
	for (size_t i = 0; i < ARRAY_SIZE(opts) && r == 0; i++)
		if (sys_fsconfig(fs, FSCONFIG_SET_STRING, opts[i][0], opts[i][1], 0) < 0)
			r = fail(e, errno, true, "9p option %s", opts[i][0]);
	if (r == 0 && (sys_fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0 ||
		       (tree = sys_fsmount(fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV)) < 0))
		r = fail(e, errno, true, "mounting the share");
	close(fs);
	if (r == 0 && sys_move_mount(tree, "", share_point_fd, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
		r = fail(e, errno, true, "attaching the share");
	struct kstatx sx;
	if (r == 0 && (r = mount_id(tree, "", AT_EMPTY_PATH, id, &sx)) < 0)
		fail(e, -r, true, "the share's mount id");
	if (r == 0)
		share_fd = tree;
	else if (tree >= 0)
		close(tree);
	return r;
}

void vm_mount_request(const struct cp_header *h, const uint8_t *payload)
{
	struct mount_error e = { 0 };
	if (!agent_in_vm()) {
		agent_send_error(h->chan, EOPNOTSUPP, "VM_MOUNT and VM_UNMOUNT are for a guest's agent");
		return;
	}
	if (h->type == CP_VM_MOUNT) {
		struct cp_vm_mount m;
		if (cp_vm_mount_decode(payload, h->len, &m) < 0) {
			agent_send_error(h->chan, EBADMSG, "malformed VM_MOUNT request");
			return;
		}
		uint64_t id = 0;
		int r = m.kind == CP_VM_MOUNT_SHARES_OFF  ? shares_off(&id, &e)
			: m.kind == CP_VM_MOUNT_SHARES_ON ? shares_on(&id, &e)
							  : do_mount(&m, &id, &e);
		cp_vm_mount_free(&m);
		if (r < 0) {
			agent_send_error(h->chan, e.errnum, e.message);
			return;
		}
		struct cp_vm_mounted ok = { .mnt_id = id };
		if (cp_vm_mounted_encode(agent_writer(), h->chan, &ok) == 0)
			agent_send_frame();
		return;
	}
	struct cp_vm_unmount m;
	if (cp_vm_unmount_decode(payload, h->len, &m) < 0) {
		agent_send_error(h->chan, EBADMSG, "malformed VM_UNMOUNT request");
		return;
	}
	int r = do_unmount(&m, &e);
	cp_vm_unmount_free(&m);
	if (r < 0) {
		agent_send_error(h->chan, e.errnum, e.message);
		return;
	}
	if (cp_empty_encode(agent_writer(), CP_OK, h->chan) == 0)
		agent_send_frame();
}
