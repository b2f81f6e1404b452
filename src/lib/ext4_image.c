/* ext4 images on loop devices: made with mkfs.ext4, mounted detached (in no mount namespace)
 * so that they go, with their loop device, when the last fd or sandbox that has them goes.
 * Quota volumes (volume.c) and container sandboxes' own disks (layer_disk.c) use them. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "ext4_image.h"
#include "syscalls.h"
#include "util.h"

/* Attaching races with the kernel tearing down an unused loop device (autoclear): retry. */
#define EXT4_IMAGE_ATTACH_TRIES 16
#define EXT4_IMAGE_MKFS_ARGS 16

static int find_mkfs(const char **path)
{
	static const char *const candidates[] = { "/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4", "/usr/bin/mkfs.ext4" };
	for (size_t i = 0; i < ARRAY_SIZE(candidates); i++)
		if (access(candidates[i], X_OK) == 0) {
			*path = candidates[i];
			return 0;
		}
	return -ENOENT;
}

/* Its output becomes the message when it fails. */
int ext4_image_mkfs(const char *image, const char *const *opts, const char *what, capsule_error *err)
{
	const char *mkfs;
	if (find_mkfs(&mkfs) < 0)
		return cap_err_plain(err, ENOENT, "%s: mkfs.ext4 not found (install e2fsprogs)", what);
	char *argv[EXT4_IMAGE_MKFS_ARGS + 3];
	size_t argc = 0;
	argv[argc++] = (char *)mkfs;
	for (size_t i = 0; opts[i]; i++) {
		if (i == EXT4_IMAGE_MKFS_ARGS)
			return cap_err_plain(err, E2BIG, "%s: more than %d mkfs.ext4 options", what, EXT4_IMAGE_MKFS_ARGS);
		argv[argc++] = (char *)opts[i];
	}
	argv[argc++] = (char *)image;
	argv[argc] = NULL;
	char out[512];
	int st;
	int r = run_collect(mkfs, argv, out, sizeof(out), &st);
	if (r < 0)
		return cap_err(err, -r, "%s: running '%s'", what, mkfs);
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
		return 0;
	return cap_err_plain(err, EIO, "%s: mkfs.ext4 failed (status %d): %s", what,
			     WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), out);
}

/* An open fd of a loop device that already serves the image IMG (by device and inode), or
 * -ENOENT. Holding the fd keeps the device from being torn down (autoclear waits for the
 * last opener), so the caller can mount it and share the superblock that is already there:
 * two loop devices on one image would be two ext4 superblocks writing one disk, which
 * corrupts it. */
static int find_loop_for(const struct stat *img)
{
	DIR *d = opendir("/sys/block");
	if (!d)
		return -errno;
	int found = -ENOENT;
	struct dirent *de;
	while (found < 0 && (de = readdir(d))) {
		unsigned n;
		char tail;
		if (sscanf(de->d_name, "loop%u%c", &n, &tail) != 1)
			continue;
		char path[64];
		/* sysfs shows loopN/loop/ only while a file is attached. */
		snprintf(path, sizeof(path), "/sys/block/loop%u/loop", n);
		if (access(path, F_OK) < 0)
			continue;
		snprintf(path, sizeof(path), "/dev/loop%u", n);
		int fd = open(path, O_RDWR | O_CLOEXEC);
		if (fd < 0)
			continue;
		struct loop_info64 info;
		if (ioctl(fd, LOOP_GET_STATUS64, &info) == 0 && info.lo_device == (uint64_t)img->st_dev &&
		    info.lo_inode == (uint64_t)img->st_ino) {
			found = fd;
			break;
		}
		close(fd);
	}
	closedir(d);
	return found;
}

/* A fresh loop device over IMG that goes away by itself when its last user closes it. */
static int attach_loop(int img, const char *label, const char *what, capsule_error *err)
{
	_cleanup_close_ int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
	if (ctl < 0)
		return cap_err(err, errno, "%s: open '/dev/loop-control'", what);
	for (int tries = 0; tries < EXT4_IMAGE_ATTACH_TRIES; tries++) {
		int n = ioctl(ctl, LOOP_CTL_GET_FREE);
		if (n < 0)
			return cap_err(err, errno, "%s: no free loop device", what);
		char path[64];
		snprintf(path, sizeof(path), "/dev/loop%d", n);
		int fd = open(path, O_RDWR | O_CLOEXEC);
		if (fd < 0) {
			if (errno == ENOENT || errno == ENXIO)
				continue;
			return cap_err(err, errno, "%s: open '%s'", what, path);
		}
		/* Buffered, not direct I/O: a device a crashed user left tearing down and the next
		 * one then meet in the image's page cache, never in stale blocks. */
		struct loop_config lc = { .fd = (uint32_t)img, .info = { .lo_flags = LO_FLAGS_AUTOCLEAR } };
		snprintf((char *)lc.info.lo_file_name, sizeof(lc.info.lo_file_name), "%s", label);
		if (ioctl(fd, LOOP_CONFIGURE, &lc) == 0)
			return fd;
		int e = errno;
		close(fd);
		if (e != EBUSY)
			return cap_err(err, e, "%s: attaching its image to '%s'", what, path);
		/* Someone else took that device between GET_FREE and CONFIGURE. */
	}
	return cap_err_plain(err, EBUSY, "%s: could not get a loop device", what);
}

/* The kernel's own words from a failed fsconfig, when it left any. */
static void fs_log(int fs, char *out, size_t size)
{
	out[0] = '\0';
	char buf[256];
	ssize_t n = read(fs, buf, sizeof(buf) - 1);
	if (n > 2) {
		buf[n] = '\0';
		buf[strcspn(buf, "\n")] = '\0';
		snprintf(out, size, " (%s)", buf + 2);
	}
}

static int mount_loop(int loopfd, const char *const *flags, const char *what, int *mnt, capsule_error *err)
{
	char src[64];
	snprintf(src, sizeof(src), "/proc/self/fd/%d", loopfd);
	char dev[64];
	ssize_t l = readlink(src, dev, sizeof(dev) - 1);
	if (l < 0)
		return cap_err(err, errno, "readlink '%s'", src);
	dev[l] = '\0';
	_cleanup_close_ int fs = sys_fsopen("ext4", FSOPEN_CLOEXEC);
	if (fs < 0)
		return cap_err(err, errno, "%s: fsopen ext4", what);
	char why[300];
	int bad = sys_fsconfig(fs, FSCONFIG_SET_STRING, "source", dev, 0);
	for (size_t i = 0; bad == 0 && flags && flags[i]; i++)
		bad = sys_fsconfig(fs, FSCONFIG_SET_FLAG, flags[i], NULL, 0);
	if (bad < 0 || sys_fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0) {
		int e = errno;
		fs_log(fs, why, sizeof(why));
		return cap_err(err, e, "%s: mounting its image from '%s'%s", what, dev, why);
	}
	int m = sys_fsmount(fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV);
	if (m < 0)
		return cap_err(err, errno, "%s: fsmount", what);
	*mnt = m;
	return 0;
}

int ext4_image_mount(int img, const char *label, const char *const *flags, const char *what, int *mnt,
		     capsule_error *err)
{
	struct stat st;
	if (fstat(img, &st) < 0)
		return cap_err(err, errno, "%s: open its image", what);
	if (!S_ISREG(st.st_mode))
		return cap_err_plain(err, EINVAL, "%s: its image is not a regular file", what);
	int r = -EAGAIN;
	for (int tries = 0; tries < EXT4_IMAGE_ATTACH_TRIES && r < 0; tries++) {
		capsule_error e2 = { 0 };
		int loopfd = find_loop_for(&st);
		if (loopfd < 0 && (loopfd = attach_loop(img, label, what, err)) < 0)
			return loopfd;
		r = mount_loop(loopfd, flags, what, mnt, &e2);
		close(loopfd);
		if (r < 0) {
			if (err)
				*err = e2;
			/* The device went away under us (autoclear of a user that just left): again. */
			if (r != -ENXIO && r != -ENODEV && r != -EBUSY)
				return r;
		}
	}
	return r;
}
