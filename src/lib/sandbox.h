/* What the rest of the library asks of a sandbox handle (sandbox.c). */
#ifndef CAPSULE_SANDBOX_H
#define CAPSULE_SANDBOX_H

#include "capsule.h"
#include "sandbox_config.h"

#define CAPSULE_DEFAULT_STOP_TIMEOUT_MS 10000

/* The configuration a handle was made from. */
const struct capsule_config *sandbox_config(const capsule_sandbox *sb);

/* Clean up after a shim that died without doing so (SIGKILL): cgroups, sockets, and for an
 * ephemeral sandbox the whole folder. Returns 1 if it cleaned something, 0 if the sandbox is
 * alive or was already clean. */
int sweep_stale(const char *name);

/* capsule_sandbox_create, with PREPARE called once the sandbox's folder, lock, id slot and
 * config exist and before its shim starts (a fork fills its layer there). */
typedef int (*sandbox_prepare_fn)(int run_dir_fd, const struct capsule_config *cfg, void *payload, capsule_error *err);
int sandbox_create_prepared(capsule_sandbox **out, const struct capsule_config *cfg, sandbox_prepare_fn prepare,
			    void *payload, capsule_error *err);

#endif
