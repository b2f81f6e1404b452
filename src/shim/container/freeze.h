/* Freeze and thaw a sandbox's processes (src/shim/container/freeze.c). */
#ifndef CAPSULE_SHIM_FREEZE_H
#define CAPSULE_SHIM_FREEZE_H

#include <stdbool.h>

#include "capsule.h"

struct cgroup_handle;

/* Freeze (or thaw) every process of the sandbox whose cgroup is CG, named CGNAME. */
int sandbox_freeze(struct cgroup_handle *cg, const char *cgname, bool freeze, capsule_error *err);
/* Thaw and remove the v1 freezer cgroup of CGNAME, if a freeze made one. */
void sandbox_freezer_remove(const char *cgname);

#endif
