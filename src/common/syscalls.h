/* Raw wrappers for the kernel interfaces that glibc 2.36 does not wrap, with fallback
 * constants, in one place. */
#ifndef CAPSULE_SYSCALLS_H
#define CAPSULE_SYSCALLS_H

#include <fcntl.h>
#include <stdint.h>
#include <linux/mount.h>
#include <linux/openat2.h>
#include <linux/sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif
#ifndef CLONE_NEWCGROUP
#define CLONE_NEWCGROUP 0x02000000
#endif
#ifndef MFD_EXEC
#define MFD_EXEC 0x0010U
#endif

static inline long sys_clone3(struct clone_args *args)
{
	return syscall(SYS_clone3, args, sizeof(*args));
}

#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

/* The agent's libc has no renameat2. */
static inline int sys_renameat2(int olddir, const char *old, int newdir, const char *new_name, unsigned flags)
{
	return (int)syscall(SYS_renameat2, olddir, old, newdir, new_name, flags);
}

static inline int sys_pidfd_open(pid_t pid, unsigned flags)
{
	return (int)syscall(SYS_pidfd_open, pid, flags);
}

static inline int sys_pidfd_send_signal(int pidfd, int sig)
{
	return (int)syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0);
}

/* A scoped lookup (RESOLVE_IN_ROOT, RESOLVE_BENEATH) that crosses ".." while any rename or
 * mount happens on the system fails with EAGAIN: the kernel asks for a retry. Retries are
 * bounded, because a sandbox renaming in a loop could otherwise keep us here for ever. */
#define OPENAT2_RETRIES 1000

static inline int sys_openat2(int dirfd, const char *path, uint64_t flags, uint64_t resolve)
{
	struct open_how how = { .flags = flags, .mode = 0, .resolve = resolve };
	int fd, tries = 0;
	do
		fd = (int)syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
	while (fd < 0 && errno == EAGAIN && ++tries < OPENAT2_RETRIES);
	return fd;
}

static inline int sys_open_tree(int dirfd, const char *path, unsigned flags)
{
	return (int)syscall(SYS_open_tree, dirfd, path, flags);
}

static inline int sys_move_mount(int from_dirfd, const char *from_path, int to_dirfd, const char *to_path, unsigned flags)
{
	return (int)syscall(SYS_move_mount, from_dirfd, from_path, to_dirfd, to_path, flags);
}

static inline int sys_mount_setattr(int dirfd, const char *path, unsigned flags, struct mount_attr *attr)
{
	return (int)syscall(SYS_mount_setattr, dirfd, path, flags, attr, sizeof(*attr));
}

static inline int sys_fsopen(const char *fsname, unsigned flags)
{
	return (int)syscall(SYS_fsopen, fsname, flags);
}

static inline int sys_fsconfig(int fd, unsigned cmd, const char *key, const void *value, int aux)
{
	return (int)syscall(SYS_fsconfig, fd, cmd, key, value, aux);
}

static inline int sys_fsmount(int fd, unsigned flags, unsigned attr_flags)
{
	return (int)syscall(SYS_fsmount, fd, flags, attr_flags);
}

static inline int sys_pivot_root(const char *new_root, const char *put_old)
{
	return (int)syscall(SYS_pivot_root, new_root, put_old);
}

static inline int sys_close_range(unsigned first, unsigned last, unsigned flags)
{
	return (int)syscall(SYS_close_range, first, last, flags);
}

/* statx with the kernel's own layout: glibc 2.36's struct statx has no stx_mnt_id yet. Only
 * what capsule reads is named; the rest is padding up to the kernel's 256 bytes. */
#ifndef STATX_MNT_ID
#define STATX_MNT_ID 0x1000U
#endif
#ifndef STATX_MNT_ID_UNIQUE
#define STATX_MNT_ID_UNIQUE 0x4000U
#endif
#ifndef STATX_ATTR_MOUNT_ROOT
#define STATX_ATTR_MOUNT_ROOT 0x00002000
#endif
struct kstatx {
	uint32_t stx_mask;
	uint32_t stx_blksize;
	uint64_t stx_attributes;
	uint32_t stx_nlink;
	uint32_t stx_uid;
	uint32_t stx_gid;
	uint16_t stx_mode;
	uint16_t spare0;
	uint64_t stx_ino;
	uint64_t stx_size;
	uint64_t stx_blocks;
	uint64_t stx_attributes_mask;
	uint8_t times[4 * 16];
	uint32_t stx_rdev_major, stx_rdev_minor, stx_dev_major, stx_dev_minor;
	uint64_t stx_mnt_id;
	uint8_t spare[256 - 152];
};
_Static_assert(sizeof(struct kstatx) == 256, "struct statx is 256 bytes");

static inline int sys_statx(int dirfd, const char *path, int flags, unsigned mask, struct kstatx *st)
{
	return (int)syscall(SYS_statx, dirfd, path, flags, mask, st);
}

static inline int sys_faccessat2(int dirfd, const char *path, int mode, int flags)
{
	return (int)syscall(SYS_faccessat2, dirfd, path, mode, flags);
}

#endif
