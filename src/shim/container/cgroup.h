/* Resource limits and process tracking for one sandbox (cgroup.c, cgroup_layout.c,
 * cgroup_create.c, cgroup_remove.c: cgroup_internal.h says which does what), on cgroup v1
 * (including the hybrid layout, where /sys/fs/cgroup is a tmpfs holding one mount per v1
 * controller and a controller-less cgroup2 at /sys/fs/cgroup/unified) and on cgroup v2.
 *
 * Where the sandbox's cgroup lives:
 *  - cgroup v1: "<mount>/capsule/<name>" under the mount of each controller we use (memory, pids,
 *    cpu; co-mounted controllers such as "cpu,cpuacct" share one folder). Mount points come from
 *    /proc/self/mountinfo. v1 needs root (or write access to those mounts).
 *  - cgroup v2 (/sys/fs/cgroup is cgroup2, by statfs; or no v1 controller is mounted and a cgroup2
 *    mount offers controllers): "<base>/capsule/<name>", where <base> is the v2 mount's root when
 *    we may write it (root), else the caller's own cgroup from /proc/self/cgroup or the nearest
 *    writable ancestor of it (a subtree delegated to this user, e.g. by systemd's Delegate=yes)
 *    that can give the sandbox the controllers asked for. Since cgroup v2 lets a cgroup hand
 *    controllers to its children only while it has no processes of its own, a delegated cgroup
 *    that the caller itself lives in can give no controllers: then only limit-free sandboxes get
 *    a cgroup there (for tracking and cgroup.kill).
 *
 * Controllers are used even when their limit is 0 if they are available (for accounting and
 * kill tracking); a controller that is needed for a requested limit and cannot be used makes
 * cgroup_create fail. The "capsule" parent folder is created when missing and never removed.
 *
 * Every fd is O_CLOEXEC; nothing here prints or exits. Errors name the file, e.g.
 * "write '/sys/fs/cgroup/pids/capsule/x/pids.max': Invalid argument".
 *
 * The caller must not be inside the sandbox's cgroup itself when it calls cgroup_destroy or
 * cgroup_remove_by_name (on v2 cgroup.kill would kill it; on v1 it is skipped and the cgroup then
 * cannot be removed). Reap (waitpid) the sandbox's direct children before destroying where
 * possible: some kernels keep a cgroup busy while an unreaped zombie is charged to it. */
#ifndef CAPSULE_SHIM_CGROUP_H
#define CAPSULE_SHIM_CGROUP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "capsule.h"
#include "sandbox_config.h"

struct cgroup_limits {
	uint64_t memory_bytes; /* 0 = no limit; swap may not extend it (memsw / memory.swap.max=0) */
	uint32_t cpus_milli;   /* 1000 = one cpu; 0 = no limit. Quota is cpus_milli*100 us per
	                        * 100000 us period, at least 1000 us (the kernel's minimum). */
	uint32_t pids_max;     /* 0 = no limit */
	uint32_t cpu_shares;   /* cgroup v1's cpu.shares (v2: converted to cpu.weight); 0 = default */
	/* An OCI spec's finer settings (sandbox_config.h), NULL: none. Each is written where the
	 * layout has it, and refused in one line naming the spec's field where it has not:
	 *   quota/period: cpu.cfs_quota_us and cpu.cfs_period_us (v2: cpu.max), instead of
	 *     cpus_milli's; burst: cpu.cfs_burst_us (v2: cpu.max.burst); idle: cpu.idle;
	 *   realtime: cpu.rt_runtime_us and cpu.rt_period_us (v1 only: v2 has no such controller);
	 *   cpus/mems: the cpuset controller's cpuset.cpus and cpuset.mems (only then used: on v1
	 *     the new folders' empty sets are first filled from their parents', as a task cannot
	 *     join a cpuset cgroup without cpus and mems);
	 *   swap: memory.memsw.limit_in_bytes (memory + swap; v2: memory.swap.max, swap minus
	 *     the limit, as runc converts it); reservation: memory.soft_limit_in_bytes (v2:
	 *     memory.low); swappiness, the OOM killer switch (memory.oom_control) and the kernel
	 *     TCP limit (memory.kmem.tcp.limit_in_bytes): v1 only. */
	const struct cgroup_extra *x;
};

struct cgroup_support {
	bool v2;                /* unified hierarchy with controllers in use */
	bool memory, cpu, pids; /* can we limit each, as this user */
	char reason[256];       /* when something is missing: why, in one line (for `capsule doctor`);
	                         * empty when all three are available */
};

struct cgroup_handle; /* opaque */

/* Report what this host (and this user) supports. Never fails; changes nothing. On v2 it
 * reports the best single base cgroup cgroup_create could use. */
void cgroup_probe(struct cgroup_support *out);

/* Create the cgroup(s) for sandbox NAME and apply LIM (NULL = no limits). NAME must be a single
 * path component: empty, ".", ".." or a name with '/' is refused with -EINVAL.
 * If a limit is requested that cannot be enforced, fails with a clear message ("memory limit
 * needs the cgroup memory controller, which is not available: ...") and leaves nothing behind.
 * When no limit is requested and cgroups are not usable (non-root without delegation), succeeds
 * with a handle that does nothing. A leftover cgroup of the same name (from a killed shim) is
 * removed first if no process is in it; if processes are in it, fails with -EBUSY. */
int cgroup_create(struct cgroup_handle **out, const char *name, const struct cgroup_limits *lim,
		  capsule_error *err);

/* The same at PATH ("/a/b/c", absolute from each hierarchy's root or the v2 base), its missing
 * parents made (and left behind by cgroup_destroy, as runc leaves them): an OCI spec's
 * linux.cgroupsPath. cgroup_remove_by_name does not find it. */
int cgroup_create_at(struct cgroup_handle **out, const char *path, const struct cgroup_limits *lim,
		     capsule_error *err);

/* Move PID (the whole process) into the sandbox's cgroup(s) (all controllers). 0 on a no-op
 * handle. */
int cgroup_add_pid(struct cgroup_handle *cg, pid_t pid, capsule_error *err);

/* The most folders a handle has (one per controller on v1, the cpuset one included). */
#define CGROUP_MAX_DIRS 4

/* On cgroup v1: an fd of each folder's `tasks` file, opened for writing now, into FDS (close-on-
 * exec; the caller closes them), for the sandbox's first process to write "0" into, moving
 * itself. The kernel checks a v1 move against the credentials the file was opened with (ours),
 * and a thread moving itself skips the global lock whose writers wait for an RCU grace period
 * (cgroup_procs_write_start: no pid, one thread), which a move by pid (cgroup_add_pid) takes.
 * Returns how many (0 on v2 and for a no-op handle: the caller uses cgroup_add_pid), or a
 * negative errno with nothing left open. */
int cgroup_open_self_join(const struct cgroup_handle *cg, int fds[CGROUP_MAX_DIRS], capsule_error *err);

/* True if the memory controller recorded an OOM kill in this cgroup (v1: memory.oom_control
 * "oom_kill" count, or memory.failcnt on kernels without that line; v2: memory.events oom_kill).
 * After cgroup_destroy it answers what it saw just before the folders were removed. */
bool cgroup_oom_killed(struct cgroup_handle *cg);
/* The memory controller's OOM kill count now (the same files; v1 kernels before 4.13: its
 * failcnt), or -1 when there is none to read (no memory controller, destroyed). */
long long cgroup_oom_count(const struct cgroup_handle *cg);

/* Change the limits of a live cgroup (capsule_sandbox_update_limits: capsule.h says what each
 * value means; the caller has checked their bounds). -EOPNOTSUPP naming the controller when
 * one that a given limit needs is not in use (but a cpuset: cgroup_add_cpuset gives one); a
 * refused write puts back those before it. */
int cgroup_update(struct cgroup_handle *cg, const capsule_limits *u, capsule_error *err);
/* Give a live sandbox made without a cpuset one (docker update --cpuset-cpus, the kubelet's
 * cpu manager through the CRI), with its parent's sets, so that nothing changes until the
 * caller writes new ones. v1: its cpuset folder is made and every process of the sandbox
 * moved into it; v2: the controller is enabled down to its folder. 0 when it has one. */
int cgroup_add_cpuset(struct cgroup_handle *cg, capsule_error *err);

/* Kill everything left in the cgroup(s) and their sub-cgroups (v2: cgroup.kill when present;
 * v1, or when that fails: read cgroup.procs and SIGKILL each through a pidfd, repeat until empty,
 * at most ~1 s) and remove the folder(s) (rmdir retried for up to ~1 s on EBUSY). Safe to call
 * when already gone and more than once. On failure what could be removed is removed and the
 * handle can be destroyed again later. */
int cgroup_destroy(struct cgroup_handle *cg, capsule_error *err);
/* Kill everything in the cgroup(s) as cgroup_destroy does, leaving the folders. */
int cgroup_kill_all(struct cgroup_handle *cg, capsule_error *err);
/* Whether the handle has a folder its processes can be found in (not the do-nothing one). */
bool cgroup_tracks(const struct cgroup_handle *cg);

/* Close the handle; accepts NULL; does not destroy (the cgroup stays, e.g. for a later
 * cgroup_remove_by_name). */
void cgroup_free(struct cgroup_handle *cg);

/* Remove the leftover cgroup(s) of sandbox NAME, as cgroup_destroy does; used to sweep after a
 * shim was SIGKILLed. Looks wherever cgroup_create could have put it (on v2 as non-root: the
 * caller's own cgroup and its writable ancestors). Returns 0 when nothing was there, 1 when
 * something was removed, a negative errno on failure. */
int cgroup_remove_by_name(const char *name, capsule_error *err);

/* A relative PATH for cgroup_create_at ("a/b/c", an OCI spec's relative linux.cgroupsPath) is
 * taken from this process's own cgroup in each hierarchy (on v2 from that cgroup's parent, which
 * has no processes of its own), as runc takes it. */

/* The paths in use (for inspect), e.g. "/sys/fs/cgroup/memory/capsule/x"; NULL if none (no-op
 * handle, or memory controller not in use). Valid until cgroup_free. */
const char *cgroup_memory_path(const struct cgroup_handle *cg);
/* The folder for CONTROLLER ("memory", "pids" or "cpu"), or NULL when that controller is not in
 * use. */
const char *cgroup_controller_path(const struct cgroup_handle *cg, const char *controller);
/* The sandbox's main cgroup folder: on v2 the one folder (even when it has no controllers), on
 * v1 the memory folder if any, else the first one; NULL for a no-op handle. */
const char *cgroup_path(const struct cgroup_handle *cg);
/* True when the handle has at least one cgroup folder (false for the do-nothing handle). */
bool cgroup_active(const struct cgroup_handle *cg);
/* On v2, an O_DIRECTORY fd of the sandbox's cgroup (owned by the handle, do not close), usable
 * with clone3(CLONE_INTO_CGROUP); -1 on v1 or for a no-op handle. */
int cgroup_v2_fd(const struct cgroup_handle *cg);

#endif
