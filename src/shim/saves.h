/* The shim's side of saves, checkpoints, reverts and forks (src/shim/saves.c). */
#ifndef CAPSULE_SHIM_SAVES_H
#define CAPSULE_SHIM_SAVES_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "internal.h"
#include "save.h"

#include "level.h"

struct save_sandbox {
	const struct capsule_config *cfg;
	int run_fd;
	/* Its level pauses it for the copy and resumes it after (level.h). */
	struct shim *shim;
	const struct level_ops *level;
	/* Paused already by a client: the copy needs no pause of its own, and must not resume
	 * it after (a vm's pause synced its disks, and nothing has run since). */
	bool held;
};

/* A save, checkpoint or fork copying the sandbox's layer in a child of the shim, so that the
 * shim's event loop goes on answering its clients while the copy runs. */
struct save_job {
	pid_t pid;
	int pidfd;     /* readable when the child has exited; -1 while no job runs */
	int result_fd; /* the child's capsule_error, when it had one */
	enum save_op op;
	char name[CAPSULE_NAME_MAX + 1];
	uint64_t started_ns;
};

#define SAVE_JOB_NONE ((struct save_job){ .pidfd = -1, .result_fd = -1 })

static inline bool save_job_running(const struct save_job *job)
{
	return job->pidfd >= 0;
}

/* "save", "checkpoint", "fork" or "revert". */
const char *shim_save_op_name(enum save_op op);

/* Start SAVE_OP_SAVE, _CHECKPOINT or _FORK of the running sandbox SB as NAME: its
 * processes are frozen, then a child copies its layer. The caller watches JOB->pidfd and
 * calls shim_save_finish once it is readable; the sandbox stays frozen until then.
 * SAVE_OP_REVERT: the child puts checkpoint NAME back as the layer of SB, which the caller
 * has stopped (and starts again once the job is finished). */
int shim_save_start(const struct save_sandbox *sb, enum save_op op, const char *name, struct save_job *job,
		    capsule_error *err);
/* Reap JOB's child (with CANCEL, kill it first: the save is abandoned, and its temporary folder
 * left unlocked for the store's next sweep, or fs/upper.new for the next revert) and thaw the
 * sandbox. 0 when the save is in
 * place, else its error. JOB is SAVE_JOB_NONE after. */
int shim_save_finish(const struct save_sandbox *sb, struct save_job *job, bool cancel, capsule_error *err);
#endif
