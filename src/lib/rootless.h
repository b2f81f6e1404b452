/* A sandbox made by a user who is not root (rootless.c): its id maps, its pids limit, and
 * removing what its ids made. */
#ifndef CAPSULE_ROOTLESS_H
#define CAPSULE_ROOTLESS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "capsule.h"

/* The sandbox's ids 1.. map onto at most this many of the user's subordinate ids. */
#define ROOTLESS_SUB_IDS 65535u

struct rootless_subid {
	uint32_t start, count; /* count 0: none */
};

struct rootless_ids {
	uid_t uid; /* the sandbox's root, on the host: the user */
	gid_t gid;
	struct rootless_subid sub_uid, sub_gid; /* the sandbox's ids 1..count, on the host */
	bool newuidmap;                         /* setuid newuidmap and newgidmap are there */
	bool ranges;                            /* maps with the ranges; else the single id */
	char note[96];                          /* why not, when !ranges */
};

/* What this user's sandboxes map: from /etc/subuid, /etc/subgid and the uidmap tools. */
void rootless_ids(struct rootless_ids *out);

/* Write the id maps of PID's user namespace (the caller owns it): with the ranges through
 * newuidmap/newgidmap, which leave setgroups allowed, else the single id, with setgroups
 * denied. PID must be dumpable, or its /proc files are root's. */
int rootless_map_ids(pid_t pid, const struct rootless_ids *ids, capsule_error *err);

/* Write TEXT to /proc/PID/FILE (an id map, setgroups, oom_score_adj). */
int proc_pid_write(pid_t pid, const char *file, const char *text, capsule_error *err);

/* Without a pids cgroup: RLIMIT_NPROC, set by the sandbox's first process once it is the
 * sandbox's root. The kernel counts it per user id in each user namespace, so it bounds how
 * many processes each of the sandbox's users has at once, and the user's processes outside do
 * not count. Never raises a lower limit. */
int rootless_limit_pids(uint32_t pids);

/* Where a user's shim listens: $XDG_RUNTIME_DIR/capsule/<name>.<home digest>.sock (a tmpfs
 * that is the user's alone, where a unix socket works even when the home is on NFS), when
 * $XDG_RUNTIME_DIR is set and a folder only the user may enter; run/<name>/control.sock is
 * then a symlink to it. -ENOENT for root or without such a folder: the run folder itself. */
int rootless_socket_path(const char *name, char *out, size_t size);
/* Remove run/<name>/control.sock (RUN_FD), and the socket it links to in the runtime folder. */
void control_socket_remove(int run_fd);

/* FN(ARG, ERR) in a child that is root in a user namespace mapping the user's ids as a
 * sandbox's are (0 the user, 1.. the subordinate ranges): where the user's own rights do not
 * reach what the sandbox's other ids made, this root's do. Called directly for root, and for a
 * user without ranges, whom nothing more could be given. FN's ERR comes back, and the
 * OUT_SIZE bytes at OUT (a result FN leaves, in ARG say) are copied back from the child. */
int rootless_run_mapped(int (*fn)(void *arg, capsule_error *err), void *arg, void *out, size_t out_size,
			capsule_error *err);
/* In such a child, the number of ids it maps (home_id_map gives them as a root caller's
 * range starting at 0); 0 elsewhere. */
uint32_t rootless_mapped_ids(void);

/* rm_rf_at, and where the user may not remove what a sandbox's other users made (files of
 * subordinate ids), again in a user namespace that maps those ids, as root there. */
int rootless_rm_rf_at(int dirfd, const char *name);

#endif
