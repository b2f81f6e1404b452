/* What changed in a container sandbox's filesystem (diff.c, diff_since.c). */
#ifndef CAPSULE_DIFF_H
#define CAPSULE_DIFF_H

#include "capsule.h"
#include "sandbox_config.h"

/* The diff (capsule_sandbox_diff_json's JSON) of LAYER, a folder in overlayfs's format over
 * CFG's image (a checkpoint's layer/), or with LAYER -1 of the sandbox's own layer. */
int sandbox_layer_diff_json(const struct capsule_config *cfg, int layer, char **out_json, capsule_error *err);
/* The same for LAYER (or the sandbox's own) and CFG's image layers above the NLOWER-th, merged as
 * overlayfs merges them, over the NLOWER layers below (and the host image): what changed since
 * the filesystem those lower layers make (a save the sandbox's save was started from). */
int sandbox_layers_diff_json(const struct capsule_config *cfg, int layer, size_t nlower, char **out_json,
			     capsule_error *err);

#endif
