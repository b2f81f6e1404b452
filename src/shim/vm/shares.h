/* The host side of a vm sandbox's mounts: one virtio-9p share ("mounts", CP_VM_MOUNTS_TAG)
 * whose folder, run/<name>/shares, holds every host tree the sandbox mounts, each attached
 * there in the shim's own private mount namespace (boot-time binds and volumes as b<i>, hot
 * mounts under their handle, m<N>). QEMU is the shim's child, so it sees those mounts; the
 * host does not. The guest side is src/agent/vm_mounts.c. */
#ifndef CAPSULE_SHIM_VM_SHARES_H
#define CAPSULE_SHIM_VM_SHARES_H

#include <stdbool.h>
#include <stdint.h>

#include "internal.h"

/* An entry of a user's share, attached by QEMU's child (vm_shares_enter). */
struct vm_share_entry {
	int tree; /* O_PATH of the host file or folder, opened with the user's rights */
	char name[16];
	bool is_dir;
	uint64_t attrs; /* MOUNT_ATTR_* its clone gets */
};

#define VM_SHARES_DEFERRED_MAX (CAPSULE_MAX_BINDS + 2)

struct vm_shares {
	bool enabled; /* the share exists: a root shim in a mount namespace of its own, or deferred */
	/* A user's shim, which may have no mount namespace of its own: the entries are kept as
	 * O_PATH descriptors and attached by QEMU's child, root of a user namespace of the user's
	 * ids (as a container's are) with a mount namespace of its own, before its exec. So only
	 * boot-time entries: sealed once QEMU first starts. */
	bool deferred, sealed;
	char *dir;    /* run/<name>/shares, absolute, for QEMU's command line (malloc'd) */
	int dir_fd;   /* O_PATH of it; -1 when not enabled */
	struct vm_share_entry pending[VM_SHARES_DEFERRED_MAX];
	size_t npending;
};

/* A root shim: a mount namespace of its own (host mounts still propagate in, ours never
 * out) and an empty run/<name>/shares. A user's: the empty folder, and the share deferred. */
int vm_shares_prepare(struct vm_shares *s, int run_fd, capsule_error *err);
/* Detach every entry at once, before anything removes the run folder. */
void vm_shares_release(struct vm_shares *s);
/* Attach the detached mount TREE (a folder, or a file) as the share's entry NAME. A deferred
 * share keeps a copy of TREE (an O_PATH descriptor, shim_host_tree) and ATTRS for QEMU's child. */
int vm_shares_attach(struct vm_shares *s, int tree, const char *name, bool is_dir, uint64_t attrs,
		     capsule_error *err);
/* In QEMU's child, root of its user namespace with a mount namespace of its own: a tmpfs on
 * the share's folder and each pending entry cloned onto it (the same path as the shim opened,
 * while it still leads to the same file). Messages to stderr (qemu.log); -1 on failure. */
int vm_shares_enter(const struct vm_shares *s);
/* Idmap the detached mount TREE of a host folder for the guest, before it is attached: QEMU
 * passes the guest's ids as they are, and through this map the guest's root is OWNER on the
 * host and guest id N is the sandbox's own host id UB + N (GB + N), as at the container
 * level; anyone else's file shows as nobody. A writable TREE whose filesystem cannot be
 * idmapped is refused (a guest's chown would reach host users); a read-only one keeps its
 * plain ids. WHAT names it in errors. */
int vm_shares_idmap(int tree, uid_t owner_uid, gid_t owner_gid, uid_t ub, gid_t gb, uint32_t count, bool readonly,
		    const char *what, capsule_error *err);
/* Take the entry NAME away again (lazily: the guest let go of it first). */
void vm_shares_detach(struct vm_shares *s, const char *name);

/* In QEMU's child before exec: keep only the capabilities a QEMU serving the share needs
 * (reading and writing any file as the creator, ownership the guest asks for) and stack a
 * seccomp filter that refuses set-uid and set-gid modes and device nodes. Without CAP_MKNOD,
 * CAP_SETFCAP, CAP_FSETID and CAP_SYS_ADMIN, and with that filter, a guest cannot have QEMU
 * make a device node, a file capability, a trusted.* xattr or a set-id file on the host. */
int vm_qemu_limit_caps(void);

#endif
