/* Transform mounts (docs/transforms.md): a bind mount served through FUSE by capsule-fuse,
 * which runs each read and write through a plugin. */
#ifndef CAPSULE_SHIM_TRANSFORM_H
#define CAPSULE_SHIM_TRANSFORM_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "internal.h"

struct transform_server {
	pid_t pid; /* 0 once reaped */
	int pidfd;
	char target[256];
};

/* The sandbox's ids as its kernel sees them and as they lie on the host's disks: kernel id
 * UID_BASE is the owner's files, kernel id UID_BASE + N (0 < N < COUNT) is host id
 * HOST_UID_BASE + N; no other id is mapped. A container's two bases are equal (its kernel ids
 * are host ids); a vm's kernel base is 0 (QEMU passes the guest's ids as they are). */
struct transform_ids {
	uid_t uid_base, host_uid_base;
	gid_t gid_base, host_gid_base;
	uint32_t count;
};

/* Make a detached FUSE mount for bind B and start capsule-fuse serving B's source folder
 * (SOURCE_FD when >= 0, e.g. a volume's content, else B's source path opened here)
 * through B's plugin on it, with IDS; returns once the server serves, or with its own error.
 * *TREE is the mount, ready to be attached like any bind tree. LOG_FD (or -1) gets the
 * server's stderr. */
int transform_mount_open(const struct bind_mount *b, int source_fd, const struct transform_ids *ids,
			 uint32_t timeout_ms, int log_fd, int *tree, struct transform_server *srv, capsule_error *err);

/* Reap the server if it has exited (FORCE: SIGKILL it first, then wait for it). Returns true
 * when it is gone, with its wait status in *STATUS when that is not NULL. */
bool transform_server_reap(struct transform_server *srv, bool force, int *status);

#endif
