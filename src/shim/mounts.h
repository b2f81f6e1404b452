/* The shim's side of hot mounts: checking a request, opening the host path with the rights of
 * the client that asked, the table of hot mounts, and the list of every mount as JSON. The
 * namespace work is the level's hot_attach / hot_detach (level.h). */
#ifndef CAPSULE_SHIM_MOUNTS_H
#define CAPSULE_SHIM_MOUNTS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "capsule.h"
#include "internal.h"
#include "level.h"

/* Each hot mount is a mount in the sandbox's namespace and a row here: bounded. */
#define HOT_MOUNTS_MAX 64

struct hot_mount {
	char handle[16];  /* "m<N>": N counts up for the shim's life, never reused */
	char *source;     /* the host path as the client gave it */
	char *target;     /* normalized guest path */
	bool readonly;
	uint64_t mnt_id;  /* the mount's id in the sandbox, checked again before unmounting */
};

struct hot_mounts {
	struct hot_mount m[HOT_MOUNTS_MAX];
	size_t n;
	uint32_t next_handle;
};

/* Who asked, from the socket (SO_PEERCRED, SO_PEERGROUPS). */
struct mount_peer {
	uid_t uid;
	gid_t gid;
	gid_t *groups; /* malloc'd */
	int ngroups;
};
int mount_peer_get(int sockfd, struct mount_peer *p, capsule_error *err);
void mount_peer_free(struct mount_peer *p);

/* The sandbox a request is about. */
struct mount_sandbox {
	const char *name;
	const struct capsule_config *cfg; /* its boot-time binds and tmpfs */
	bool rootless;
	/* Its level idmaps, attaches and detaches the trees (level.h): a container in its mount
	 * namespace, a vm through the share and the agent. */
	struct shim *shim;
	const struct level_ops *level;
};

/* Mount HOST_PATH at GUEST_PATH (flags CP_MOUNT_*); *HANDLE points into the table. */
int hot_mount_add(struct hot_mounts *t, const struct mount_sandbox *sb, const struct mount_peer *peer,
		  const char *host_path, const char *guest_path, uint32_t flags, const char **handle, capsule_error *err);
/* Remove the hot mount named by WHAT: a guest path (starting with '/') or a handle. */
int hot_mount_remove(struct hot_mounts *t, const struct mount_sandbox *sb, const char *what, capsule_error *err);
/* Every mount, boot-time first, as a JSON array (malloc'd). */
int mounts_list_json(const struct hot_mounts *t, const struct mount_sandbox *sb, char **out, capsule_error *err);

/* A detached clone of PATH below DIRFD (open_tree FLAGS) with the mount ATTRS set; or, for a
 * shim that is not root, which may not clone the host's mounts, an O_PATH descriptor of it that
 * the sandbox's first process (container.c), or a hot mount's helper (hotmount.c), clones as
 * the sandbox's root in a mount namespace of its own and gives ATTRS there. -1 with errno on
 * failure. */
int shim_host_tree(int dirfd, const char *path, unsigned flags, uint64_t attrs);

#endif
