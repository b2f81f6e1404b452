/* The container isolation level: namespaces, an overlay root, fd-based mounts, pivot_root,
 * and the agent exec'd from a sealed memfd as PID 1. */
#ifndef CAPSULE_CONTAINER_H
#define CAPSULE_CONTAINER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "capsule.h"

struct rootless_ids;

struct container_tmpfs {
	const char *target; /* absolute, normalized, inside the sandbox */
	uint64_t size_bytes;
	uint32_t mode;
	uint64_t attrs; /* MOUNT_ATTR_* beyond nosuid and nodev */
	uint64_t propagation; /* config_mount_propagation's; 0: private */
};

struct container_bind {
	int tree;           /* a detached mount (open_tree OPEN_TREE_CLONE) of the host path */
	const char *target; /* absolute, normalized, inside the sandbox */
	bool is_dir;
	bool no_idmap;      /* a FUSE transform mount: its server maps ids (src/shim/transform.c) */
	uint64_t attrs;     /* a rootless spec's: the mount attributes its clone gets */
	uint64_t propagation; /* config_mount_propagation's; 0: private */
};

#define LAYER_ATTRS (MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV)

struct container_spec {
	const char *hostname;
	/* Both below $CAPSULE_HOME, which is its owner's alone: the child opens them with the
	 * shim's file uid, before it becomes the sandbox's root (which could not pass the home). */
	const char *lowerdir;  /* the host image's root, host path; NULL when the layers are the root */
	const char *fsdir;     /* run/<name>/fs: upper/, work/, rootfs/ and the layers' l/ live here */
	bool host_image;       /* bind the host's /usr (and /bin, /lib* when not symlinks) read-only */
	int agent_memfd;       /* sealed memfd holding capsule-agent */
	int agent_sock;        /* becomes fd 3 of the agent */
	uid_t uid_base;        /* host uid of the sandbox's root */
	gid_t gid_base;
	uint32_t id_count;     /* 65536 for root callers, 1 otherwise */
	/* The gid map's size when it differs (an OCI spec's mappings); 0: id_count. */
	uint32_t gid_count;
	/* The ids are an OCI spec's mappings (config's uid_map): no idmapped root or binds. */
	bool spec_ids;
	/* The caller is not root: ROOTLESS_IDS says how its ids map, and the trees of binds and
	 * layers (not transform mounts) are O_PATH descriptors that the child clones itself. */
	bool rootless;
	const struct rootless_ids *rootless_ids;
	uint32_t pids_rlimit;  /* RLIMIT_NPROC for the sandbox's root (no pids cgroup); 0: none */
	const struct container_tmpfs *tmpfs;
	size_t ntmpfs;
	const struct container_bind *binds;
	size_t nbinds;
	const char *mount_order; /* config's: how tmpfs and binds interleave; NULL: tmpfs first */
	/* Detached, read-only clones of read-only layer folders (an image's, a save's), bottom
	 * first; their files carry unshifted ids, so root callers' layers are idmapped like binds.
	 * Below them lies LOWERDIR when it is set. */
	const int *layer_trees; /* with LAYER_ATTRS */
	size_t nlayers;
	/* A detached mount of the sandbox's own disk, holding upper/ and work/, attached at
	 * disk/ below FSDIR; -1: upper/ and work/ are FSDIR's own folders. */
	int disk_tree;
	/* LAYER_TREES[0] is the root itself, writable (config's rootfs): no overlay. */
	bool root_is_tree;
	/* The overlay is mounted `volatile` (no syncs to the upper layer's filesystem, above all
	 * none at its unmount): the sandbox's layer goes with it, so a host crash loses nothing
	 * that would have been kept (config_layer_volatile says which). */
	bool volatile_upper;
	bool root_readonly; /* the root mount read-only (an OCI spec's root.readonly) */
	const char *sysctls; /* "name=value,..." (config's sysctl), or NULL */
	const char *masked_paths, *readonly_paths; /* "/a,/b" (config's), or NULL */
	/* A network namespace to join (config's net_ns, opened and checked by the shim), or -1:
	 * the sandbox's own. */
	int net_ns_fd;
	const char *net_ns;
	/* An IPC and a UTS namespace to join (a pod's: its pause sandbox's), opened and checked
	 * by the shim to be no namespace of the host's user namespace, or -1. The child mounts
	 * the joined IPC namespace's mqueue made by the shim, and sets no hostname in a joined
	 * UTS namespace (its owner's root has). */
	int ipc_ns_fd, uts_ns_fd;
	const char *ipc_ns, *uts_ns;
	/* A pid namespace to join (a pod's shared one: its pause sandbox's), opened and checked
	 * like those, or -1. The agent is then not its PID 1; the child attaches a proc of that
	 * namespace made by the shim. */
	int pid_ns_fd;
	const char *pid_ns;
	/* The v1 cgroups' `tasks` files (cgroup_open_self_join), opened by the shim: the child
	 * writes "0" into each first thing, moving itself, and the start's JOIN is NULL. */
	const int *cgroup_tasks_fds;
	size_t ncgroup_tasks;
};

struct container {
	pid_t pid;   /* the agent, on the host */
	int pidfd;
	/* Whether no process of the sandbox can lower its oom_score_adj below 0; why not. */
	bool oom_floor;
	char oom_note[160];
	/* What enforces the pids limit: "cgroup", "rlimit_nproc" (rootless.h); empty: none. */
	char pids_by[16];
	/* /proc/PID/ns/mnt of the agent, opened once it runs, or -1: with this reference the
	 * agent's exit does not unmount the sandbox's tree (an RCU grace period, then every
	 * superblock's shutdown), whose last holder does it instead (lifecycle.c). */
	int mntns_fd;
	/* The sandbox's host ids (container_spec's), for idmapping host folders. */
	uid_t uid_base;
	gid_t gid_base;
	uint32_t id_count;
};

/* Called with the child's host pid after its id maps are written and before it goes on;
 * may be NULL. A negative return (with err filled) fails the start. */
typedef int (*container_hook_fn)(pid_t child, void *payload, capsule_error *err);

/* Start the container: clone3 into new user, mount, pid, ipc, uts, net and cgroup namespaces,
 * map ids, call JOIN (which puts the child into its cgroups) before the child goes on, set up
 * the root and exec the agent. Returns once the agent has been exec'd or setup failed (the
 * child's own message then in err). */
int container_start(struct container *out, const struct container_spec *spec, container_hook_fn join, void *payload,
		    capsule_error *err);

/* The capabilities a command run as the sandbox's root keeps (podman's default set), as a
 * bit mask for the agent. */
uint64_t container_default_caps(void);
/* Whether this process may set a sandbox's oom_score_adj floor (CAP_SYS_RESOURCE): without it,
 * commands may lower their oom_score_adj to the floor capsule was started under. */
bool container_can_set_oom_floor(void);

/* Hot mounts (container/hotmount.c). Each runs a short-lived child of the (single threaded)
 * shim that enters CT's user and mount namespaces as the sandbox's root.
 *
 * Idmap the detached mount TREE of a host folder as boot-time binds are: OWNER (the host user
 * who asked for the mount) is the sandbox's root there, the sandbox's other ids are its own
 * host range, and no other host id can be had. */
int container_idmap_tree(const struct container *ct, int tree, uid_t owner_uid, gid_t owner_gid, capsule_error *err);
/* A user namespace with UID_MAP and GID_MAP (as /proc/PID/uid_map takes them), into *USERNS,
 * for idmapping mounts: its process is gone on return. */
int userns_with_maps(const char *uid_map, const char *gid_map, int *userns, capsule_error *err);
/* The user namespace for that, for OWNER and a sandbox whose root is host UB/GB with COUNT
 * ids, into *USERNS; and TREE idmapped through it (WHAT names it in errors). */
int container_host_folder_userns(uid_t owner_uid, gid_t owner_gid, uid_t ub, gid_t gb, uint32_t count, int *userns,
				 capsule_error *err);
int container_idmap_host_folder(int userns, int tree, const char *what, capsule_error *err);
/* Attach the detached mount TREE at TARGET (absolute, normalized) inside CT, making missing
 * folders (and, for a file, an empty file) there first. No component of TARGET may be a
 * symlink. *MNT_ID is the new mount's id, for container_hot_detach. ROOTLESS: TREE is an
 * O_PATH descriptor (shim_host_tree), cloned as the sandbox's root and given ATTRS. */
int container_hot_attach(const struct container *ct, bool rootless, int tree, uint64_t attrs, const char *target,
			 bool is_dir, uint64_t *mnt_id, capsule_error *err);
/* Lazily unmount what is at TARGET inside CT, if it is still the mount MNT_ID; -ESTALE (and
 * nothing touched) when the sandbox moved or replaced it. */
int container_hot_detach(const struct container *ct, bool rootless, const char *target, uint64_t mnt_id,
			 capsule_error *err);

#endif
