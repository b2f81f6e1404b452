/* A container sandbox's own layer, on the host's disk or on a disk of its own (layer_disk.c). */
#ifndef CAPSULE_LAYER_DISK_H
#define CAPSULE_LAYER_DISK_H

#include <stdbool.h>

#include "capsule.h"
#include "sandbox_config.h"

/* A container sandbox's own layer (layer_disk.c): ROOT_FD holds upper/ and work/. It is the
 * sandbox's fs/ folder, or, when the sandbox has a disk size, the root of a detached mount
 * of its ext4 image run/<name>/layer.img. */
struct sandbox_layer {
	int root_fd;
};
bool layer_has_disk(const struct capsule_config *cfg);
/* -EPERM with a message where CFG's disk cannot be had (loop devices need root). */
int layer_disk_check(const struct capsule_config *cfg, capsule_error *err);
/* Open the layer of the sandbox whose folder is RUN_FD; MAKE makes what is missing (its
 * disk image, fs/) but never upper/ or work/, whose owner is the caller's to choose. */
int sandbox_layer_open(int run_fd, const struct capsule_config *cfg, bool make, struct sandbox_layer *l,
		       capsule_error *err);
void sandbox_layer_close(struct sandbox_layer *l);
/* The layer's upper/ as a folder fd, wherever it lives (for saves, checkpoints, forks). */
int sandbox_upper_open(int run_fd, const struct capsule_config *cfg, int *upper, capsule_error *err);
/* A sandbox with a disk gets a fresh one that FILL fills (ROOT_FD: its root), put in place
 * of the old only when FILL succeeded (a revert: the old layer and the new never share one
 * disk's room). */
typedef int (*layer_fill_fn)(int root_fd, void *payload, capsule_error *err);
int layer_disk_replace(int run_fd, const struct capsule_config *cfg, layer_fill_fn fill, void *payload,
		       capsule_error *err);

#endif
