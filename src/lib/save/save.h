/* Saves, checkpoints, reverts and forks: the library's whole save family, in src/lib/save/.
 *
 *   save_op.c       enum save_op at the protocol boundary, and layer_op: the one dispatch of
 *                   an operation to a container's layer or a vm's disk
 *   save_store.c    named saves in $CAPSULE_HOME/saves/<name>/: write, resolve, list, remove
 *   checkpoint.c    checkpoints (run/<name>/checkpoints/) put back, a fork's copy of a layer
 *   vm_save.c       the same for a vm's qcow2 disk
 *   layer_copy.c    the copy of a layer tree with owners shifted (layer_copy.h)
 *   save_client.c   capsule_save, _checkpoint, _revert, _fork: to the shim of a running
 *                   sandbox, or layer_op here for a stopped one
 *
 * The shim's side (a SAVE request on a running sandbox, copied in a child while the sandbox is
 * frozen) is src/shim/saves.c; the container level's freezer is src/shim/container/freeze.c. */
#ifndef CAPSULE_SAVE_H
#define CAPSULE_SAVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "internal.h"

/* What a save-family request does. The protocol's CP_SAVE_OP_* numbers are turned into it where
 * a SAVE request is decoded (the shim) and back where one is encoded (save_client.c): below
 * those two places no code sees a wire number. */
enum save_op {
	SAVE_OP_SAVE,       /* save as a named save */
	SAVE_OP_CHECKPOINT, /* keep as a checkpoint of the sandbox */
	SAVE_OP_REVERT,     /* put a checkpoint back */
	SAVE_OP_FORK,       /* copy into a new sandbox */
};
/* -EINVAL with a message for a number that is no operation. */
int save_op_from_wire(uint32_t wire, enum save_op *op, capsule_error *err);
uint32_t save_op_to_wire(enum save_op op);
/* "save", "checkpoint", "revert" or "fork". */
const char *save_op_name(enum save_op op);

struct save_manifest {
	char name[CAPSULE_NAME_MAX + 1];
	char *id;          /* random, new with every save: a child names its parent's */
	char *parent;      /* "host", a save's name, or an image reference */
	char *parent_kind; /* "host", "save" or "image" */
	char *parent_id;   /* for a save parent */
	char *sandbox;     /* the sandbox it was saved from (NULL in a save from before this was kept) */
	char *base;        /* "host" or "none" (the layers alone) */
	char **layers;     /* the parent's resolved layers, bottom first (this save's own is not listed) */
	size_t nlayers;
	int64_t created;
	uint64_t size, files;
};

int save_validate_name(const char *name, capsule_error *err);
int save_manifest_read_at(int saves, const char *name, struct save_manifest *m, capsule_error *err);
void save_manifest_free(struct save_manifest *m);

/* The layers, bottom first, that a sandbox started from save NAME is made of, and whether
 * they are the whole root (base none) or lie on the host image. Returns 1 when NAME is a
 * save, 0 when there is no save of that name (the caller goes on to images), <0 on error. */
int save_resolve(const char *name, char ***layers, size_t *nlayers, bool *base_none, capsule_error *err);
/* $CAPSULE_HOME/saves/NAME/layer (malloc'd; NULL without memory): how a sandbox's layers name
 * the save's own layer. */
char *save_layer_path(const char *name);
/* Save NAME's manifest (*M, freed by the caller on success) and its own layer folder (*LAYER),
 * for reading: ENOENT without such a save, EOPNOTSUPP for a vm's (a disk, no layer). */
int save_layer_open(const char *name, struct save_manifest *m, int *layer, capsule_error *err);
/* save_resolve for cfg->image, put into CFG's layers. */
int save_apply_to_config(struct capsule_config *cfg, capsule_error *err);

/* Refuse a save target that cannot be written (bad name, or the save the sandbox runs from). */
int save_check_target(const struct capsule_config *cfg, const char *save, capsule_error *err);
/* Save the layer folder UPPER (the sandbox of CFG's overlayfs upper) as save NAME, atomically. */
int save_write(const char *name, int upper, const struct capsule_config *cfg, capsule_error *err);
/* The same into the store folder STORE (a sandbox's checkpoints/), for a sandbox of id slot
 * SLOT. REFUSE_REPLACE_IN_USE: refuse to replace a save others depend on. DURABLE: synced to
 * disk before it is renamed into place (saves; a checkpoint is as durable as the sandbox's own
 * layer, which is never synced, and still atomic). */
int layer_snapshot_at(int store, const char *name, int upper, const struct capsule_config *cfg, uint32_t slot,
		      bool refuse_replace_in_use, bool durable, capsule_error *err);
/* The vm level (a save's or checkpoint's disk is VM_SAVE_DISK beside an empty layer/): the
 * same for a vm's disk, the qcow2 file DISK; save_write of a disk; a copy of DISK into a new
 * file DIRFD/NAME (0600, reflinked where it can be). */
#define VM_SAVE_DISK "disk.qcow2"
int disk_snapshot_at(int store, const char *name, int disk, const struct capsule_config *cfg, bool refuse_replace_in_use,
		     bool durable, capsule_error *err);
int save_write_disk(const char *name, int disk, const struct capsule_config *cfg, capsule_error *err);
int vm_disk_copy(int disk, int dirfd, const char *name, capsule_error *err);
/* OP on the disk of the vm sandbox of CFG (vm_save.c), as layer_op does on a container's layer. */
int vm_disk_op(const struct capsule_config *cfg, int run_fd, enum save_op op, const char *name, capsule_error *err);
int checkpoints_open(int run_fd, int *fd, capsule_error *err);
/* Whether a sandbox other than EXCEPT has save NAME among its layers (USER names it). */
bool save_used_by_sandbox(const char *name, const char *except, char *user, size_t size);

/* How many saves there are and the bytes their own layers (or disks) take. */
int save_store_usage(uint64_t *count, uint64_t *bytes, capsule_error *err);

/* -ENOENT with a message unless checkpoint NAME of the sandbox in RUN_FD exists. */
int checkpoint_exists(int run_fd, const char *name, capsule_error *err);
/* Make checkpoint NAME the sandbox's own layer again (fs/upper); the sandbox must be down. */
int checkpoint_restore(int run_fd, const struct capsule_config *cfg, const char *name, capsule_error *err);
/* Copy UPPER, the own layer of the sandbox of CFG, into the new sandbox TARGET (its folder made
 * and locked by a fork that has not started it yet), owners moved to TARGET's id range. */
int fork_copy_layer(const struct capsule_config *cfg, int upper, const char *target, capsule_error *err);

/* Refuse a bad name for OP before anything is done. */
int layer_op_check(const struct capsule_config *cfg, enum save_op op, const char *name, capsule_error *err);
/* OP on the own layer (RUN_FD's fs/upper) of the sandbox of CFG, which must be down or frozen:
 * save as NAME, checkpoint NAME, fork into the new sandbox NAME, or revert to checkpoint NAME. */
int layer_op(const struct capsule_config *cfg, int run_fd, enum save_op op, const char *name, capsule_error *err);

#endif
