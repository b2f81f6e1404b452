/* Every internal header of libcapsule at once, for what stands outside it and sees all of it:
 * capsule-shim (which links the full-visibility archive), the unit tests, and the files
 * not yet moved to the headers of their concerns. A file of src/lib includes only the
 * headers it uses. */
#ifndef CAPSULE_INTERNAL_H
#define CAPSULE_INTERNAL_H

#include "capsule.h"
#include "sandbox_config.h"
#include "config_keys.h"
#include "conn.h"
#include "diff.h"
#include "ext4_image.h"
#include "home.h"
#include "id_slot.h"
#include "inspect.h"
#include "layer_disk.h"
#include "pool.h"
#include "proto.h"
#include "sandbox.h"
#include "rootless.h"
#include "volume.h"

/* The one line a pause to disk of a container gets, from the library and the shim alike. */
#define CAPSULE_PAUSE_TO_DISK_CONTAINER                                                                      \
	"pause to disk is not available for containers: CRIU (Debian 12's 3.17) fails its own kernel "      \
	"feature check on this kernel, and nothing can be dumped without it (docs/architecture.md, "       \
	"\"Pause to disk\"); vms can be"

#endif
