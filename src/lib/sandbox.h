/* What the rest of the library asks of a sandbox handle (sandbox.c; the shim's process: sandbox_launch.c). */
#ifndef CAPSULE_SANDBOX_H
#define CAPSULE_SANDBOX_H

#include "capsule.h"
#include "sandbox_config.h"

#define CAPSULE_DEFAULT_STOP_TIMEOUT_MS 10000

/* The configuration a handle was made from. */
const struct capsule_config *sandbox_config(const capsule_sandbox *sb);
/* The same, to change: capsule_sandbox_update_limits keeps the limits it set there. */
struct capsule_config *sandbox_config_mut(capsule_sandbox *sb);

/* Clean up after a shim that died without doing so (SIGKILL): cgroups, sockets, and for an
 * ephemeral sandbox the whole folder. Returns 1 if it cleaned something, 0 if the sandbox is
 * alive or was already clean. */
int sweep_stale(const char *name);
/* Remove what creates, removes and ends that died left in run/ (RUN, its fd): run/.new-NAME.PID
 * and run/.gone-NAME.PID of a PID that is gone. */
void sweep_abandoned_creates(int run);

/* capsule_sandbox_create, with PREPARE called once the sandbox's folder, lock, id slot and
 * config exist and before its shim starts (a fork fills its layer there). */
typedef int (*sandbox_prepare_fn)(int run_dir_fd, const struct capsule_config *cfg, void *payload, capsule_error *err);
int sandbox_create_prepared(capsule_sandbox **out, const struct capsule_config *cfg, sandbox_prepare_fn prepare,
			    void *payload, capsule_error *err);

/* sandbox_create_prepared without the pool step: a CFG that names a pool is made as that
 * pool's ready sandbox (the keeper's call), not taken from it. */
int sandbox_create_unpooled(capsule_sandbox **out, const struct capsule_config *cfg, sandbox_prepare_fn prepare,
			    void *payload, capsule_error *err);
/* What a create checks and resolves before anything exists (capsule.json's defaults, the
 * level, the image's layers, the network); repeating it on its own result changes nothing. */
int sandbox_config_prepare(struct capsule_config *cfg, capsule_error *err);
/* The handle of sandbox NAME just taken from a pool over C (which it keeps as its creator
 * socket when the sandbox is ephemeral, and closes otherwise). */
struct conn;
int sandbox_from_take(capsule_sandbox **out, const char *name, struct conn *c, capsule_error *err);
/* The creator socket's fd (-1 if none): readable once the shim hung up on it. */
int sandbox_owner_fd(const capsule_sandbox *sb);

/* sandbox_launch.c: the shim's process. */
/* Start PATH with ARGV by a double fork (never the caller's child, in a session of its own),
 * with SOCK as fd 3 and LOCKFD as fd 4, stdio on /dev/null, nothing else of the caller's. */
int spawn_helper_detached(const char *path, char *const argv[], int sock, int lockfd, capsule_error *err);
/* Start CFG's shim, which takes LOCKFD (the sandbox's held lock), and wait for its verdict on
 * the start. OWNER: the creator socket it answered on. CHILD: its pid when it is our child (an
 * ephemeral sandbox's, to reap), else left 0. RESTORE: it resumes the sandbox from its memory
 * state on disk. On failure nothing of it is left: the socket closed, a child reaped, and the
 * cgroups a killed one made removed. */
int shim_launch(const struct capsule_config *cfg, int lockfd, bool restore, struct conn *owner, pid_t *child,
		capsule_error *err);
/* Wait for our child shim *CHILD (if any) to end, and clear it. */
void shim_reap(pid_t *child);
/* capsule-shim --cleanup for sandbox NAME: what a shim killed with SIGKILL left (cgroups). */
void shim_cleanup_run(const char *name);

/* Pause to disk (pause_client.c): a new shim for SB that resumes it from its memory state on
 * disk (capsule-shim --restore); a sandbox that runs meanwhile is left as it is. */
int sandbox_resume_from_disk(capsule_sandbox *sb, capsule_error *err);
/* SB's shim hung up on a request: -ESHUTDOWN ("sandbox 'x' stopped"), or -EBUSY with the
 * line to resume it when it was paused to disk meanwhile. */
int sandbox_gone(const capsule_sandbox *sb, capsule_error *err);
/* Close SB's kept connection (not a creator's), whose shim has gone: one that still had bytes
 * to read would look alive to the next command. */
void sandbox_drop_kept_conn(capsule_sandbox *sb);
/* A stop of sandbox NAME paused to disk: its memory state goes, it is stopped. 0 and nothing
 * done when it is not paused to disk, or not there at all. */
int sandbox_stop_paused_to_disk(const char *name, capsule_error *err);

/* pool.c: take a ready sandbox from CFG's pool (capsule_config_set_pool). */
int pool_take(capsule_sandbox **out, const struct capsule_config *cfg, capsule_error *err);

#endif
