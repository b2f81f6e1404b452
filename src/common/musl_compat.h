/* What glibc's headers give and musl 1.2.3's (Debian 12) do not, for the code the musl-built
 * CLI and shim (tools/musl-static-cc) share with the glibc builds: force-included there
 * (-include), so no other file changes. The wrappers are the kernel's calls with libc's errno
 * convention. */
#ifndef CAPSULE_MUSL_COMPAT_H
#define CAPSULE_MUSL_COMPAT_H
#if !defined(__GLIBC__)
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/close_range.h>
#include <linux/stat.h>

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#define RENAME_EXCHANGE (1 << 1)
#endif

static inline int renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned int flags)
{
	return (int)syscall(SYS_renameat2, olddirfd, oldpath, newdirfd, newpath, flags);
}

static inline int statx(int dirfd, const char *path, int flags, unsigned int mask, struct statx *buf)
{
	return (int)syscall(SYS_statx, dirfd, path, flags, mask, buf);
}
#endif
#endif
