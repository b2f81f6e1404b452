/* The vm level's store, $CAPSULE_HOME/vm: what the shim builds once and boots from.
 *
 *   rootfs-<key>.ext4     a layer stack flattened into ext4 (the base of vm disks), never
 *                         written after its rename
 *   rootfs-<key>.layers   the layer folders it was built from, one a line
 *   rootfs-<key>.lock     flock: held exclusively by its builder and by collection
 *   initramfs-*.cpio      the guest's initramfs (src/shim/vm/initramfs.c)
 *   vmlinux-*             a kernel's payload unpacked for its PVH entry (src/shim/vm/kernel.c)
 *   .rootfs-<key>.<pid>.*, .tmp-<name>-<pid>   builds in progress, or left by a killed builder
 *
 * Liveness is decided from what is on disk and from locks, so a crash leaves nothing that
 * keeps an entry forever nor anything that lets one be removed under a user:
 *  - a process that boots from an entry holds a shared flock on the entry's own file until
 *    its vm stops for good (vm_store_pin, vm_store_unpin_all); collection takes an exclusive one without waiting, so an entry in
 *    use is never removed, and a pin taken just after a removal sees the file unlinked;
 *  - a root disk is kept while any qcow2 in run/ (a sandbox's disk, its checkpoints') or in
 *    saves/ names it as its backing file: a qcow2 names its base by path, and a base rebuilt
 *    from the same layers would not be the same bytes;
 *  - and while every layer folder it was built from is still the same folder (an image, a
 *    save or a sandbox's configuration keeps those; they go with `image rm`, `saves rm`).
 * This library owns the rules; the shim (src/shim/vm/) builds the files under them. */
#ifndef CAPSULE_VM_STORE_H
#define CAPSULE_VM_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "capsule.h"

#define VM_STORE_DIR "vm"
#define VM_STORE_KEY_LEN 32

/* The key of a layer stack (layer folders, bottom first): their paths and identities, which
 * never change while a folder is in place. */
int vm_store_rootfs_key(char *const *layers, size_t n, char key[VM_STORE_KEY_LEN + 1], capsule_error *err);

/* Keep entry NAME of the store (DIR_FD) from collection for the rest of this process's life.
 * -ENOENT when it is not there, or was removed just before the pin held: build it again. */
int vm_store_pin(int dir_fd, const char *name);

/* Let go of every pin of this process: its vm has stopped for good. */
void vm_store_unpin_all(void);

/* The exclusive lock of LOCK_NAME, for building an entry: an fd, or a negative errno with ERR
 * filled. Collection removes lock files it holds, so the lock is only had on the file the name
 * still names. */
int vm_store_build_lock(int dir_fd, const char *lock_name, capsule_error *err);

/* Write rootfs-<KEY>.layers: the folders the root disk KEY is made of. Before the disk's
 * rename, so a disk in place always says what it was made from. */
int vm_store_record_layers(int dir_fd, const char *key, char *const *layers, size_t n, capsule_error *err);

enum vm_store_scope {
	VM_STORE_ROOTS, /* root disks nothing uses, and what killed builds left */
	VM_STORE_ALL,   /* that, and kernels and initramfs files but the latest used of each */
};

struct vm_store_tally {
	uint64_t entries, bytes;
};

/* Remove what nothing uses in SCOPE; *FREED (may be NULL) gets what went. A store that does
 * not exist is empty. */
int vm_store_collect(enum vm_store_scope scope, struct vm_store_tally *freed, capsule_error *err);

struct json_writer;
/* The store as a member of the open object W: "vm": {files: [{name, kind (rootfs, initramfs,
 * kernel), bytes, kept: why it stays (running, building, disk, layers, latest) or null}],
 * entries, bytes, kept_bytes, reclaimable}: what vm_store_collect(VM_STORE_ALL) would free. */
int vm_store_usage_json(struct json_writer *w, capsule_error *err);

#endif
