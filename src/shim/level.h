/* The isolation level behind the shim: a container (src/shim/container/level.c) or a vm
 * (src/shim/vm/level.c). The shim's top level (lifecycle, requests, the loop) knows neither;
 * it calls these entries, in the spirit of crun's custom_handler_s, which lets krun (a vm)
 * plug in beside plain containers. level_of picks the table, once, from the config.
 *
 * Each entry gets the shim's state and fills ERR the usual way (docs/errors.md). A start is
 * the resource walk of lifecycle.c: cgroup_limits, prepare, start, then (with the agent up)
 * ready; a stop, kill; the walk back, teardown and unprepare. */
#ifndef CAPSULE_SHIM_LEVEL_H
#define CAPSULE_SHIM_LEVEL_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "capsule.h"
#include "container.h"
#include "internal.h"

struct shim;
struct cgroup_limits;
struct json_writer;
struct cp_header;
struct cp_writer;

struct level_ops {
	const char *name;
	/* The agent's channel is a unix socket that can pass descriptors (a direct stream's
	 * socket, CP_FS_DIRECT); a vm's virtio-serial port cannot. */
	bool passes_fds;
	/* What the sandbox's cgroup limits: the config's, or QEMU's (vm.h). */
	void (*cgroup_limits)(const struct shim *s, struct cgroup_limits *lim);
	/* The host side, before the sandbox's process: its root and its binds. */
	int (*prepare)(struct shim *s, capsule_error *err);
	/* Give back what prepare made (transform servers, volume locks, the vm's share); for a
	 * prepare that failed half-way too. */
	void (*unprepare)(struct shim *s);
	/* The sandbox's process, with AGENT_SOCK as its agent's end of the channel: sets
	 * s->proc. It may bring s->boot_deadline_ms forward (0: the boot timeout from now). */
	int (*start)(struct shim *s, int agent_sock, capsule_error *err);
	/* A start that failed in start or in the agent's bring-up (ERR says why): whether to go
	 * again from start, changed (a vm's KVM that did not boot gives TCG its turn). */
	bool (*start_again)(struct shim *s, const capsule_error *err);
	/* Why the process exited while the agent was being brought up. Returns -ECHILD. */
	int (*died_during_start)(struct shim *s, capsule_error *err);
	/* With the agent up, before any client: the network, the vm's mounts. */
	int (*ready)(struct shim *s, capsule_error *err);
	/* End the sandbox now (its grace is over, or a stop was forced). */
	void (*kill)(struct shim *s);
	/* Kill (if it is not dead yet) and reap the process, close what start opened. Also for
	 * a start that failed half-way, and for a process that was reaped already. */
	void (*teardown)(struct shim *s);
	/* Hold every process of the running sandbox still (a save's copy is of one moment), and
	 * let them run again: the container's cgroup freezer, the vm's vCPUs over QMP. */
	int (*pause)(struct shim *s, capsule_error *err);
	int (*resume)(struct shim *s, capsule_error *err);
	/* Hot mounts (mounts.c): idmap the detached TREE of a host folder for the sandbox,
	 * OWNER (who asked) being its root; attach it at TARGET (NAME: its handle), setting
	 * *MNT_ID; detach it again. */
	int (*hot_idmap)(struct shim *s, int tree, uid_t owner_uid, gid_t owner_gid, bool readonly, const char *what,
			 capsule_error *err);
	int (*hot_attach)(struct shim *s, int tree, const char *name, const char *target, bool is_dir, bool readonly,
			  uint64_t *mnt_id, capsule_error *err);
	int (*hot_detach)(struct shim *s, const char *name, const char *target, uint64_t mnt_id, capsule_error *err);
	/* PAUSE to disk: the sandbox's memory into run/<name>/ and its process ended, every
	 * other resource left for the walk back; on failure it runs (or stays paused) as before.
	 * NULL: the level cannot (a container: CRIU). */
	int (*pause_to_disk)(struct shim *s, capsule_error *err);
	/* A start that resumes from disk (s->restoring): the agent's channel taken back from a
	 * guest that never booted, in place of the HELLO and INIT of a boot. */
	int (*reattach)(struct shim *s, capsule_error *err);
	/* The save a stopped sandbox is kept as (--save NAME), every process gone. */
	int (*save_at_stop)(struct shim *s, const char *name, capsule_error *err);
	/* The level's own fields of state.json while it runs. */
	void (*describe)(const struct shim *s, struct json_writer *j);
	/* SCREENSHOT and INPUT: the answer encoded in W, or ERR. */
	int (*display)(struct shim *s, const struct cp_header *h, const uint8_t *payload, struct cp_writer *w,
		       capsule_error *err);
};

extern const struct level_ops container_level;
extern const struct level_ops vm_level;

const struct level_ops *level_of(const struct capsule_config *cfg);

/* What a container's prepare opened for its start, which uses and closes it. */
struct container_boot {
	char *lower;       /* the host image's root (NULL: the layers are the root) */
	int disk;          /* the sandbox's own disk, a detached mount, or -1 */
	char fsdir[PATH_MAX];
	int memfd;         /* the sealed agent binary, or -1 */
	int layer_trees[CAPSULE_MAX_LAYERS];
	size_t nlayer_trees;
	struct container_bind binds[CAPSULE_MAX_BINDS + 2 + CAPSULE_MAX_DEVICES];
	size_t nbinds;
	char device_targets[CAPSULE_MAX_DEVICES][104]; /* the binds' targets of config's devices */
};

/* What a vm's prepare made for its start, and how the start goes. */
struct vm_boot {
	char *disk;            /* its qcow2 (malloc'd) */
	const char *disk_mode; /* VM_DISK_MODE_* */
	const char *accel;     /* NULL: the config's; "tcg" once KVM did not boot the guest */
	bool mounts_share;     /* QEMU was given the `mounts` 9p share */
	char accel_fallback[sizeof(((capsule_error *)0)->message) + 48];
};

#endif
