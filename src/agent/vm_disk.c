/* The guest side of the vm level's root disk (src/shim/vm/disk.c makes it): find the
 * virtio-blk disk whose serial is "capsule-root", mount its ext4 as the new root, and grow the
 * file system to the disk's size online, so that `df /` shows the sandbox's disk_size. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "agent.h"
#include "util.h"

#define DISK_WAIT_MS 20000
#define DISK_SERIAL "capsule-root"

#ifndef BLKGETSIZE64
#define BLKGETSIZE64 _IOR(0x12, 114, size_t)
#endif
#define EXT4_IOC_RESIZE_FS _IOW('f', 16, uint64_t)

/* /dev/vdX whose /sys/block/vdX/serial is ours. */
static int find_disk(char *dev, size_t size)
{
	return vm_sysfs_dev_wait("/sys/block", "serial", DISK_SERIAL, dev, size, DISK_WAIT_MS) ? 0 : -ENOENT;
}

/* The file system was made for its content; the disk may be larger (disk_size). Growing a
 * mounted ext4 is one ioctl; it does nothing when the sizes already match. */
static void grow(const char *dev, const char *root)
{
	int bfd = open(dev, O_RDONLY | O_CLOEXEC);
	uint64_t bytes = 0;
	struct statfs sf;
	if (bfd < 0 || ioctl(bfd, BLKGETSIZE64, &bytes) < 0 || statfs(root, &sf) < 0 || sf.f_bsize <= 0) {
		fprintf(stderr, "capsule-agent: size of '%s': %s\n", dev, strerror(errno));
		if (bfd >= 0)
			close(bfd);
		return;
	}
	close(bfd);
	uint64_t blocks = bytes / (uint64_t)sf.f_bsize;
	int dfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0 || ioctl(dfd, EXT4_IOC_RESIZE_FS, &blocks) < 0)
		fprintf(stderr, "capsule-agent: growing the root to %llu blocks: %s\n", (unsigned long long)blocks,
			strerror(errno));
	if (dfd >= 0)
		close(dfd);
}

int agent_vm_disk_root(const char *root, bool *host_shares, char *why, size_t why_size)
{
	char mode[32];
	if (!agent_cmdline_get("capsule.disk", mode, sizeof(mode)))
		return 0;
	if (strcmp(mode, "root") && strcmp(mode, "root+host")) {
		snprintf(why, why_size, "unknown capsule.disk mode '%s'", mode);
		return -EINVAL;
	}
	*host_shares = strcmp(mode, "root+host") == 0;
	char dev[64];
	if (find_disk(dev, sizeof(dev)) < 0) {
		snprintf(why, why_size, "no virtio disk with serial '%s' appeared", DISK_SERIAL);
		return -ENOENT;
	}
	mkdir(root, 0755);
	/* nosuid, nodev as the container level's root (its layers are nosuid, nodev clones).
	 * noinit_itable: new inode tables on the sparse disk already read as zeros; zeroing them
	 * again would only fill the sandbox's qcow2. */
	if (mount(dev, root, "ext4", MS_NOSUID | MS_NODEV, "noinit_itable") < 0) {
		snprintf(why, why_size, "mount ext4 '%s' on '%s': %s", dev, root, strerror(errno));
		return -errno;
	}
	grow(dev, root);
	/* mkfs's lost+found is no part of the image (a container's root has none); e2fsck, the
	 * one user of it, never runs on this disk. Kept when something is in it. */
	char lf[300];
	snprintf(lf, sizeof(lf), "%s/lost+found", root);
	rmdir(lf);
	/* An image's root may lack the API file systems' mount points (as in a container,
	 * they are made in the sandbox's own layer). */
	static const struct {
		const char *name;
		mode_t mode;
	} dirs[] = { { "proc", 0555 }, { "sys", 0555 }, { "dev", 0755 }, { "tmp", 01777 } };
	for (size_t i = 0; i < ARRAY_SIZE(dirs); i++) {
		char path[300];
		snprintf(path, sizeof(path), "%s/%s", root, dirs[i].name);
		if (mkdir(path, dirs[i].mode) == 0)
			chmod(path, dirs[i].mode);
	}
	return 1;
}
