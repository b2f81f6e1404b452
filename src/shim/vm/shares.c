/* The host side of a vm sandbox's mounts (shares.h). Why one share and not one per mount:
 * microvm has eight virtio-mmio slots and the agent's port, the balloon, the skeleton and the
 * host's /usr already take four, while a sandbox may have 32 binds and 64 hot mounts. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "container.h"
#include "shares.h"
#include "syscalls.h"
#include "util.h"

#define SHARES_DIR "shares"

/* An empty run/<name>/shares (what a stopped run left is empty mount points: its mounts died
 * with its namespace), and its absolute path in S->dir. RUN_FD may name a mount of the host's
 * namespace, onto which nothing of ours can be attached: the folder is named by its path. */
static int shares_folder(struct vm_shares *s, int run_fd, capsule_error *err)
{
	rm_rf_at(run_fd, SHARES_DIR);
	if (mkdirat(run_fd, SHARES_DIR, 0700) < 0)
		return cap_err(err, errno, "mkdir '%s'", SHARES_DIR);
	char self[64], path[PATH_MAX];
	snprintf(self, sizeof(self), "/proc/self/fd/%d", run_fd);
	ssize_t l = readlink(self, path, sizeof(path) - sizeof(SHARES_DIR) - 2);
	if (l < 0)
		return cap_err(err, errno, "readlink '%s'", self);
	snprintf(path + l, sizeof(path) - (size_t)l, "/%s", SHARES_DIR);
	if (!(s->dir = strdup(path)))
		return cap_err(err, ENOMEM, "shares");
	return 0;
}

int vm_shares_prepare(struct vm_shares *s, int run_fd, capsule_error *err)
{
	memset(s, 0, sizeof(*s));
	s->dir_fd = -1;
	if (geteuid() != 0) {
		int r = shares_folder(s, run_fd, err);
		s->enabled = s->deferred = r == 0;
		return r;
	}
	/* Mounts made for the guest must never show on the host (a bind of a secret folder in
	 * everyone's view), and must not outlive the shim: a namespace of its own, which dies
	 * with the shim and QEMU. Slave, so that host mounts made later still reach us. */
	if (unshare(CLONE_NEWNS) < 0)
		return cap_err(err, errno, "a mount namespace for the vm's shares");
	if (mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0)
		return cap_err(err, errno, "making the shim's mounts private");
	int r = shares_folder(s, run_fd, err);
	if (r < 0)
		return r;
	const char *path = s->dir;
	/* The entries' mount points live on a tmpfs of this namespace only: the host sees an
	 * empty folder, and one lazy unmount takes every entry away at once. Whatever removes
	 * the run folder (the shim at the end, the library after a crash) can then never walk
	 * into a host folder that is still attached here, and delete its files. */
	if (mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0700,size=1m,nr_inodes=1024") < 0)
		return cap_err(err, errno, "mounting a tmpfs on '%s'", path);
	s->dir_fd = open(path, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (s->dir_fd < 0)
		return cap_err(err, errno, "open '%s'", path);
	s->enabled = true;
	return 0;
}

void vm_shares_release(struct vm_shares *s)
{
	/* Never prepared (a container's shim has a zeroed one): nothing to do, no fd to close. */
	if (!s->dir)
		return;
	for (size_t i = 0; i < s->npending; i++)
		close(s->pending[i].tree);
	s->npending = 0;
	/* By the tmpfs's own fd, not its path: a pooled sandbox's shim renames the run folder
	 * (run/.gone-NAME.PID) before it tears down, and a tmpfs left mounted on the old path
	 * keeps the folder's removal from finishing. The fd was opened O_NOFOLLOW on the tmpfs's
	 * root, so following its /proc link leads nowhere else. */
	if (s->enabled && !s->deferred) {
		char self[64];
		if (s->dir_fd >= 0)
			snprintf(self, sizeof(self), "/proc/self/fd/%d", s->dir_fd);
		if (s->dir_fd < 0 || umount2(self, MNT_DETACH) < 0)
			umount2(s->dir, MNT_DETACH | UMOUNT_NOFOLLOW);
	}
	if (s->dir_fd >= 0)
		close(s->dir_fd);
	s->dir_fd = -1;
	s->enabled = false;
}

int vm_shares_attach(struct vm_shares *s, int tree, const char *name, bool is_dir, uint64_t attrs,
		     capsule_error *err)
{
	if (!s->enabled)
		return cap_err_plain(err, EOPNOTSUPP, "host folders need capsule to run as root with vm isolation");
	if (s->deferred) {
		if (s->sealed)
			return cap_err_plain(err, EOPNOTSUPP, "mounting host folders into a running vm needs capsule to run "
					     "as root (a user's vm gets its binds and volumes when it starts)");
		if (s->npending == VM_SHARES_DEFERRED_MAX)
			return cap_err_plain(err, E2BIG, "too many host folders for the vm's share");
		struct vm_share_entry *e = &s->pending[s->npending];
		if ((e->tree = fcntl(tree, F_DUPFD_CLOEXEC, 3)) < 0)
			return cap_err(err, errno, "host folder '%s'", name);
		snprintf(e->name, sizeof(e->name), "%s", name);
		e->is_dir = is_dir;
		e->attrs = attrs;
		s->npending++;
		return 0;
	}
	/* The mount point is ours (run/<name>/shares, 0700): nothing of the sandbox's is on
	 * this path, so a plain name is safe here. */
	int r = is_dir ? mkdirat(s->dir_fd, name, 0700) : mknodat(s->dir_fd, name, S_IFREG | 0600, 0);
	if (r < 0 && errno != EEXIST)
		return cap_err(err, errno, "mount point '%s/%s'", s->dir, name);
	int at = openat(s->dir_fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (at < 0)
		return cap_err(err, errno, "mount point '%s/%s'", s->dir, name);
	r = sys_move_mount(tree, "", at, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH);
	int e = errno;
	close(at);
	if (r < 0)
		return cap_err(err, e, "attaching '%s' to the vm's share", name);
	return 0;
}

int vm_shares_idmap(int tree, uid_t owner_uid, gid_t owner_gid, uid_t ub, gid_t gb, uint32_t count, bool readonly,
		    const char *what, capsule_error *err)
{
	/* QEMU is root in the host's namespace, and the kernel honours its CAP_CHOWN,
	 * CAP_DAC_OVERRIDE and CAP_FOWNER on an idmapped mount only for files whose owner the
	 * mount maps: another host user's file is nobody's to it, as to a container's root. */
	char uid_map[128], gid_map[128];
	snprintf(uid_map, sizeof(uid_map), "%u 0 1\n%u 1 %u\n", (unsigned)owner_uid, (unsigned)ub + 1, count - 1);
	snprintf(gid_map, sizeof(gid_map), "%u 0 1\n%u 1 %u\n", (unsigned)owner_gid, (unsigned)gb + 1, count - 1);
	int userns;
	int r = userns_with_maps(uid_map, gid_map, &userns, err);
	if (r < 0)
		return cap_err_wrap(err, r, "idmapping '%s' for the guest", what);
	struct mount_attr a = { .attr_set = MOUNT_ATTR_IDMAP, .userns_fd = (uint64_t)userns };
	int e = sys_mount_setattr(tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &a) < 0 ? errno : 0;
	close(userns);
	if (e == 0 || readonly)
		return 0;
	return cap_err(err, e, "idmapping '%s' for the guest (a vm's writable host folder must be idmappable, or the "
			       "guest's chown would reach host users; mount it read-only)", what);
}

int vm_shares_enter(const struct vm_shares *s)
{
	if (mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0 ||
	    mount("tmpfs", s->dir, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0700,size=1m,nr_inodes=1024") < 0) {
		dprintf(2, "capsule-shim: the vm's share on '%s': %s\n", s->dir, strerror(errno));
		return -1;
	}
	_cleanup_close_ int dir = open(s->dir, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dir < 0) {
		dprintf(2, "capsule-shim: open '%s': %s\n", s->dir, strerror(errno));
		return -1;
	}
	for (size_t i = 0; i < s->npending; i++) {
		const struct vm_share_entry *e = &s->pending[i];
		/* The shim's descriptor names a mount of the host's namespace, which only root may
		 * clone; ours is a copy, cloned by the same path if it still leads to that file. */
		char path[PATH_MAX];
		capsule_error perr = { 0 };
		if (fd_path(e->tree, path, sizeof(path), &perr) < 0) {
			dprintf(2, "capsule-shim: %s\n", perr.message);
			return -1;
		}
		_cleanup_close_ int tree =
			sys_open_tree(AT_FDCWD, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE | AT_SYMLINK_NOFOLLOW);
		struct stat a, b;
		struct mount_attr ma = { .attr_set = e->attrs };
		const char *fail = NULL;
		if (tree < 0)
			fail = "open_tree";
		else if (fstat(e->tree, &a) < 0 || fstat(tree, &b) < 0 || a.st_dev != b.st_dev || a.st_ino != b.st_ino)
			fail = (errno = ESTALE, "replaced while the vm started");
		else if (e->attrs && sys_mount_setattr(tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &ma) < 0)
			fail = "mount_setattr";
		else if ((e->is_dir ? mkdirat(dir, e->name, 0700) : mknodat(dir, e->name, S_IFREG | 0600, 0)) < 0)
			fail = "mount point";
		if (!fail) {
			int at = openat(dir, e->name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
			if (at < 0 || sys_move_mount(tree, "", at, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
				fail = "attaching it to the vm's share";
			if (at >= 0) {
				int keep = errno;
				close(at);
				errno = keep;
			}
		}
		if (fail) {
			dprintf(2, "capsule-shim: host folder '%s': %s: %s\n", path, fail, strerror(errno));
			return -1;
		}
	}
	return 0;
}

void vm_shares_detach(struct vm_shares *s, const char *name)
{
	if (!s->enabled || s->deferred)
		return;
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/%s", s->dir, name);
	umount2(path, MNT_DETACH | UMOUNT_NOFOLLOW);
	if (unlinkat(s->dir_fd, name, AT_REMOVEDIR) < 0)
		unlinkat(s->dir_fd, name, 0);
}

#ifndef SYS_fchmodat2
#define SYS_fchmodat2 452
#endif

/* The mode argument of each call that can give a file its mode, by argument index. */
static const struct {
	int nr;
	unsigned mode_arg;
} mode_calls[] = {
	{ SYS_chmod, 1 }, { SYS_fchmod, 1 }, { SYS_fchmodat, 2 }, { SYS_creat, 1 },
	{ SYS_open, 2 },  { SYS_openat, 3 }, { SYS_mknod, 1 },    { SYS_mknodat, 2 },
};

#define MODE_CHECK_LEN 6

/* QEMU serves the writable share with security_model=none: it makes what the guest asks for,
 * as root. This filter (stacked under QEMU's own -sandbox) is what keeps a guest from having
 * it make a set-uid or set-gid file (EPERM on any mode with 06000), or a character or block
 * device (EPERM; CAP_MKNOD is gone too). openat2, fchmodat2 and io_uring carry modes where a
 * filter cannot see them: ENOSYS, and QEMU 7.2 uses none of them. */
static int qemu_mode_filter(void)
{
	struct sock_filter f[8 + ARRAY_SIZE(mode_calls) * (2 + MODE_CHECK_LEN) + 6];
	size_t n = 0;
#define ADD(code, k, jt, jf) (f[n++] = (struct sock_filter)BPF_JUMP(code, k, jt, jf))
	ADD(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch), 0, 0);
	ADD(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0);
	ADD(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS, 0, 0);
	ADD(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr), 0, 0);
	ADD(BPF_JMP | BPF_JGE | BPF_K, 0x40000000u, 0, 1); /* x32 */
	ADD(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM, 0, 0);
	for (size_t i = 0; i < ARRAY_SIZE(mode_calls); i++) {
		/* nr still in A here: not this call, skip its checks. */
		ADD(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)mode_calls[i].nr, 0, 1 + MODE_CHECK_LEN);
		ADD(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[mode_calls[i].mode_arg]), 0, 0);
		ADD(BPF_JMP | BPF_JSET | BPF_K, 06000, 3, 0);
		ADD(BPF_ALU | BPF_AND | BPF_K, S_IFMT, 0, 0);
		ADD(BPF_JMP | BPF_JEQ | BPF_K, S_IFCHR, 1, 0);
		ADD(BPF_JMP | BPF_JEQ | BPF_K, S_IFBLK, 0, 1);
		ADD(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM, 0, 0);
		ADD(BPF_RET | BPF_K, SECCOMP_RET_ALLOW, 0, 0);
	}
	ADD(BPF_JMP | BPF_JEQ | BPF_K, SYS_openat2, 2, 0);
	ADD(BPF_JMP | BPF_JEQ | BPF_K, SYS_fchmodat2, 1, 0);
	ADD(BPF_JMP | BPF_JEQ | BPF_K, SYS_io_uring_setup, 0, 1);
	ADD(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS, 0, 0);
	ADD(BPF_RET | BPF_K, SECCOMP_RET_ALLOW, 0, 0);
#undef ADD
	struct sock_fprog prog = { .len = (unsigned short)n, .filter = f };
	if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) < 0)
		return -errno;
	return 0;
}

int vm_qemu_limit_caps(void)
{
	if (geteuid() != 0)
		return 0;
	static const int keep[] = { CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER, CAP_NET_BIND_SERVICE };
	for (int cap = 0; cap <= 63; cap++) {
		bool kept = false;
		for (size_t i = 0; i < ARRAY_SIZE(keep); i++)
			kept |= keep[i] == cap;
		if (kept)
			continue;
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0) {
			if (errno == EINVAL)
				break; /* past the kernel's last capability */
			return -errno;
		}
	}
	/* root's caps after exec are the bounding set and the inheritable ones: the latter go. */
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct d[2];
	if (syscall(SYS_capget, &h, d) < 0)
		return -errno;
	d[0].inheritable = d[1].inheritable = 0;
	if (syscall(SYS_capset, &h, d) < 0)
		return -errno;
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return -errno;
	return qemu_mode_filter();
}
