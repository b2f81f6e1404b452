/* capsule-shim's state, and what its parts (shim.c: main and the loop; io.c: connections and
 * channels; requests.c: what clients ask; lifecycle.c: start, stop, revert, the one teardown;
 * agent.c: the agent's bring-up and its frames) call of each other, each handed the shim.
 * The isolation level is behind s->level (level.h); only the level's own files touch its
 * fields below. */
#ifndef CAPSULE_SHIM_SHIM_H
#define CAPSULE_SHIM_SHIM_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "capsule.h"
#include "internal.h"
#include "io.h"
#include "level.h"
#include "log.h"
#include "mounts.h"
#include "net.h"
#include "proto.h"
#include "saves.h"
#include "shares.h"
#include "transform.h"
#include "vm.h"

struct shim {
	char name[CAPSULE_NAME_MAX + 1];
	int run_fd;
	int lock_fd;
	int sigfd, listen_fd;
	struct capsule_config cfg;
	const struct level_ops *level;
	struct shim_io io;
	struct cgroup_handle *cg;
	/* The level's process whose exit ends the sandbox: the container's init (the agent), or
	 * QEMU. The level sets it in start and closes it in teardown. */
	pid_t proc_pid;
	int proc_pidfd;
	size_t resources_up;       /* how far the resource walk (lifecycle.c) has gone */
	int agent_sock;            /* the process's end of the agent channel, until its start */
	uint64_t boot_deadline_ms; /* the agent answers by then, or the start fails */
	bool stopping;
	bool stop_keep;     /* a STOP asked to keep an ephemeral sandbox, stopped (its creator starts it again) */
	bool stop_remove;   /* a STOP asked to remove the sandbox (rm -f): it ends as an ephemeral one does */
	bool cgroup_later;  /* its end removes its cgroups after the answer (finish_ephemeral) */
	/* Its end unmounts its tree after the answer: the teardown leaves the container's
	 * reference to its mount namespace in ENDED_MNTNS, for finish_ephemeral's child. */
	bool unmount_later;
	int ended_mntns;
	/* finish_ephemeral's child, forked when a pool's sandbox is ready (remover_prefork), so
	 * that its fork is the refill's and not between a taken sandbox's end and the stop's
	 * answer; REMOVER_GO its end of the socket the go-ahead comes on. -1: none yet. */
	pid_t remover_pid;
	int remover_go;
	bool killed;        /* SIGKILL sent: only the pidfd is left to wait for */
	uint64_t stop_deadline_ms;
	int64_t started_unix;
	struct transform_server transforms[CAPSULE_MAX_BINDS]; /* capsule-fuse of each transform mount */
	size_t ntransforms;
	/* Shared locks on the volumes the sandbox mounts, held for its life (volume rm waits
	 * for none of them: it refuses while any is held). They die with this process. */
	int volume_locks[CAPSULE_MAX_BINDS];
	size_t nvolume_locks;
	struct hot_mounts hot;
	struct net net;
	/* The save, checkpoint, fork or revert being copied, and who asked for it (-1 once gone). */
	struct save_job save;
	int save_client;
	uint32_t save_chan;
	bool exiting; /* in finish_and_exit: a failed revert must not enter it again */
	/* Paused by a client (PAUSE), not only for a save's copy: every process held still until
	 * a RESUME or a stop (requests.c says what is refused meanwhile). */
	bool paused;
	/* The pause is the shim's own, after cfg.idle_pause_ms with nothing active (io.h's one
	 * definition of idle): what needs the processes resumes it rather than being refused. */
	bool paused_by_idle;
	/* Started with --restore: the level resumes the sandbox from its memory state on disk
	 * instead of booting it (until the start is done). */
	bool restoring;
	/* Its memory is on disk and its shim is ending (state.json says paused_to disk). */
	bool paused_to_disk;
	uint64_t state_bytes;
	/* A request that waits for the guest's answer (agent_wait_answer) runs the loop itself,
	 * so a guest that stops answering stalls only the client that asked: that client is
	 * muted until its answer (io.muted_client), the others are served, and a stop ends the
	 * wait. */
	bool loop_running;    /* the sandbox is up and its fds are in the epoll set */
	int serving_client;   /* the client whose request is being handled, or -1 */
	bool agent_waiting;   /* a wait for the guest's answer is in progress */
	bool agent_unresponsive; /* a wait timed out: the stop does not wait for the guest again */
	bool agent_distrusted;   /* it broke the protocol: nothing more it sends is forwarded */
	bool fs_answered;        /* a file operation's final answer went to its client this turn */
	bool reading_agent;      /* agent_readable walks the agent's rxbuf, which a wait would refill */
	bool stop_forced;        /* a kill came while stopping: the stop waits for the guest no more */

	/* The container level's (container/level.c). */
	struct container ct;
	struct container_boot ct_boot;
	/* The vm level's (vm/level.c): QEMU, the share of host folders, its boot. */
	struct vm vm;
	struct vm_shares shares;
	struct vm_boot vm_boot;
};

/* lifecycle.c */
/* A start-up phase, with its time since the shim began, for the log. */
void shim_progress(const char *stage);
const char *shim_progress_log(void);
void shim_progress_begin(void);
int sandbox_start(struct shim *s, capsule_error *err);
/* The walk back: every resource of the sandbox released, last made first. */
void sandbox_teardown(struct shim *s);
void write_state(struct shim *s, const char *state);
void begin_stop(struct shim *s, uint32_t grace_ms);
void kill_sandbox(struct shim *s);
_Noreturn void finish_and_exit(struct shim *s);
/* A pool's ready sandbox forks its end's remover (finish_ephemeral's child) ahead. */
void remover_prefork(struct shim *s);
/* That child's wait for the go-ahead and its work, in a fresh image (`capsule-shim --remover
 * CGROUP_BASE`, fd 3 the socket, fd 4 the run folder; CGROUPS NULL or "": none of its own). */
_Noreturn void remover_main(const char *cgroups);
/* After the level's pause_to_disk: everything released but the folder, state.json saying
 * paused to disk, the lock let go, the waiters answered, exit. */
_Noreturn void finish_paused_to_disk(struct shim *s);
/* REVERT's two halves around its copy: the sandbox walked down, and up again. */
void revert_take_down(struct shim *s);
int revert_restart(struct shim *s, capsule_error *err);
/* No resource of the sandbox is up (a revert took it down). */
bool sandbox_down(const struct shim *s);
/* A namespace to join (a config's net_ns, ipc_ns, uts_ns: PATH, NULL for none), opened with the
 * shim's (the caller's) rights and checked to be of TYPE (CLONE_NEW*, WHAT names it), into *FD;
 * -1 when PATH is NULL. An IPC or UTS namespace must also be a sandbox's (container/level.c). */
int shim_open_joined_ns(const char *path, int type, const char *what, int *fd, capsule_error *err);
/* The level's start hook that puts CHILD into the cgroups (PAYLOAD: the shim). */
int sandbox_join_cgroup(pid_t child, void *payload, capsule_error *err);
/* SIGKILL and reap the process of PIDFD, which may have been reaped already. */
void proc_kill_and_reap(int pidfd);
void transform_servers_reap(struct shim *s, bool force);
/* Transform servers and volume locks: what opening the binds (binds.c) holds for the
 * sandbox's life. */
void binds_release(struct shim *s);

/* agent.c */
int agent_bring_up(struct shim *s, const char *hostname, capsule_error *err);
void agent_readable(struct shim *s);
void agent_frame(struct shim *s, const struct cp_header *h, const uint8_t *payload);
void agent_distrust(struct shim *s, const char *fmt, ...) _printf_(2, 3);
/* The final answer on agent channel CHAN, within TIMEOUT_MS (agent.c says how). */
int agent_wait_answer(struct shim *s, uint32_t chan, uint32_t timeout_ms, const char *what, struct cp_header *h,
		      const uint8_t **payload, capsule_error *err);
/* A frame to the agent, for the vm forwarder (vm_fwd_send_fn). */
void agent_send(void *ctx, const void *p, size_t n, const void *p2, size_t n2);

/* requests.c */
void client_readable(struct shim *s, int ci);
/* STATS's answer (stats.c, docs/protocol.md): a JSON object, malloc'd. */
int shim_stats_json(struct shim *s, char **out, capsule_error *err);
/* A save's child has exited (or, with CANCEL, is killed now). */
void save_done(struct shim *s, bool cancel);
/* Let a paused sandbox run again (a RESUME, or a stop or revert that needs its processes). */
int sandbox_unpause(struct shim *s, capsule_error *err);
/* How long the loop may sleep before the idle pause is due: -1 when none is. */
int idle_pause_wait_ms(struct shim *s);
/* Pause the sandbox if it has been idle for cfg.idle_pause_ms (called as the wait ends). */
void idle_pause_check(struct shim *s);

/* shim.c */
struct epoll_event;
void dispatch_event(struct shim *s, const struct epoll_event *ev);

/* binds.c: each boot-time bind and volume as a detached mount, read-only where asked,
 * nosuid and nodev, opened with the shim's rights before the sandbox exists. A transform's
 * server maps ids itself; GUEST_IDS_FROM_ZERO: the level's kernel ids start at 0 (a vm). */
int open_bind_trees(struct shim *s, struct container_bind *binds, size_t *n, bool guest_ids_from_zero,
		    capsule_error *err);
void close_bind_trees(struct container_bind *binds, size_t n);

#endif
