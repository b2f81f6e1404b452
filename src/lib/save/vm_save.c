/* Saves, checkpoints, reverts and forks of vm sandboxes. A vm's own state is one file, its
 * root disk's qcow2 (run/<name>/disk.qcow2, over the shared ext4 of its layers or over the
 * disk of the save it started from), so each operation copies that file: the same store, the
 * same temporary-folder-and-rename atomicity and the same dependency checks as the container
 * level's layers (src/lib/save/save_store.c). The caller has the sandbox stopped, or its guest
 * synced and paused (the shim: the vm level's pause, src/shim/vm/level.c), so the file is one
 * moment's state. Owners inside the disk are the image's own: there is nothing to shift. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "layer_copy.h"
#include "save.h"
#include "util.h"

#define RUN_DISK "disk.qcow2" /* src/shim/vm/vm.h VM_DISK_FILE */

/* A copy of DISK put in place as DIRFD/RUN_DISK in one rename. */
static int disk_replace(int disk, int dirfd, const char *what, capsule_error *err)
{
	static const char tmp[] = "." RUN_DISK ".new";
	unlinkat(dirfd, tmp, 0);
	int r = vm_disk_copy(disk, dirfd, tmp, err);
	if (r == 0 && renameat(dirfd, tmp, dirfd, RUN_DISK) < 0)
		r = cap_err(err, errno, "putting %s in place", what);
	if (r < 0)
		unlinkat(dirfd, tmp, 0);
	return r;
}

static int fork_disk(int disk, const char *target, capsule_error *err)
{
	_cleanup_close_ int dir = -1;
	int r = run_dir_open(target, &dir, err);
	if (r < 0)
		return r;
	if (!run_dir_locked(dir))
		return cap_err_plain(err, EINVAL, "sandbox '%s' is not being made by a fork", target);
	struct stat st;
	if (fstatat(dir, RUN_DISK, &st, AT_SYMLINK_NOFOLLOW) == 0)
		return cap_err_plain(err, EEXIST, "sandbox '%s' has a disk already", target);
	return disk_replace(disk, dir, "the fork's disk", err);
}

static int revert_disk(int run_fd, const char *name, capsule_error *err)
{
	int r = checkpoint_exists(run_fd, name, err);
	if (r < 0)
		return r;
	char path[128];
	snprintf(path, sizeof(path), "checkpoints/%s/" VM_SAVE_DISK, name);
	_cleanup_close_ int src = openat(run_fd, path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (src < 0)
		return cap_err(err, errno, "open checkpoint '%s'", name);
	r = disk_replace(src, run_fd, "the checkpoint's disk", err);
	return r < 0 ? cap_err_wrap(err, r, "reverting to checkpoint '%s'", name) : 0;
}

int vm_disk_op(const struct capsule_config *cfg, int run_fd, enum save_op op, const char *name, capsule_error *err)
{
	if (op == SAVE_OP_REVERT)
		return revert_disk(run_fd, name, err);
	_cleanup_close_ int disk = openat(run_fd, RUN_DISK, O_RDONLY | O_NOFOLLOW | O_CLOEXEC), store = -1;
	if (disk < 0)
		return cap_err(err, errno, "open the vm's disk '%s'", RUN_DISK);
	int r;
	switch (op) {
	case SAVE_OP_SAVE:
		return save_write_disk(name, disk, cfg, err);
	case SAVE_OP_FORK:
		r = fork_disk(disk, name, err);
		return r < 0 ? cap_err_wrap(err, r, "forking into '%s'", name) : 0;
	default: /* SAVE_OP_CHECKPOINT */
		if ((r = checkpoints_open(run_fd, &store, err)) < 0)
			return r;
		r = disk_snapshot_at(store, name, disk, cfg, false, false, err);
		return r < 0 ? cap_err_wrap(err, r, "checkpoint '%s'", name) : 0;
	}
}
