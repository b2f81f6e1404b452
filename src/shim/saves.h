/* The shim's side of saves, checkpoints, reverts and forks (src/shim/saves.c). */
#ifndef CAPSULE_SHIM_SAVES_H
#define CAPSULE_SHIM_SAVES_H

#include <stdbool.h>
#include <stdint.h>

#include "internal.h"

struct cgroup_handle;

struct save_sandbox {
	const struct capsule_config *cfg;
	int run_fd;
	struct cgroup_handle *cg;
	const char *cgname;
	/* vm isolation: sync and pause the guest (ON), or let it run again; in place of the
	 * cgroup freezer, which a VM has none of. */
	int (*pause)(bool on, capsule_error *err);
};

/* SAVE op CP_SAVE_OP_SAVE, _CHECKPOINT or _FORK on the running sandbox SB, its processes frozen
 * while its layer is copied. */
int shim_save_request(const struct save_sandbox *sb, uint32_t op, const char *name, capsule_error *err);
#endif
