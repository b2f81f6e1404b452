/* capsule: a sandbox runtime. This is the one public header of libcapsule.
 *
 * Conventions (docs/errors.md):
 *  - Every call that can fail returns 0 (or a non-negative count) on success and a negative
 *    errno-style code on failure, and fills the optional `capsule_error *err` (pass NULL when
 *    you do not want the message) with a one-line human message naming what went wrong.
 *  - Handles are opaque. Every `_free` accepts NULL.
 *  - Output parameters come first after the handle; `err` is always last.
 *  - The library never prints and never exits; it does not install signal handlers.
 *  - Every file descriptor it opens is O_CLOEXEC.
 */
#ifndef CAPSULE_H
#define CAPSULE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define CAPSULE_API __attribute__((visibility("default")))
#else
#define CAPSULE_API
#endif

#define CAPSULE_VERSION_STRING "0.1.0"

/* ---- errors --------------------------------------------------------------------------- */

typedef struct capsule_error {
	int code;          /* positive errno value, 0 when no error */
	char message[512]; /* one line, no trailing newline */
} capsule_error;

/* Clear an error object. */
CAPSULE_API void capsule_error_clear(capsule_error *err);

/* ---- configuration -------------------------------------------------------------------- */

typedef enum capsule_isolation {
	CAPSULE_ISOLATION_CONTAINER = 0, /* namespaces + seccomp + cgroups (default) */
	CAPSULE_ISOLATION_VM = 1,        /* a QEMU microVM */
} capsule_isolation;

/* A sandbox configuration: a builder. Setters validate their input at once and return an
 * error that names the bad value, so nothing is started from a bad configuration. */
typedef struct capsule_config capsule_config;

CAPSULE_API int capsule_config_new(capsule_config **out, capsule_error *err);
CAPSULE_API void capsule_config_free(capsule_config *cfg);
/* Name: [a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}. Without a name the sandbox gets a generated one. */
CAPSULE_API int capsule_config_set_name(capsule_config *cfg, const char *name, capsule_error *err);
/* Image reference; "host" (the default) is the host's /usr read-only with a fresh /etc. */
CAPSULE_API int capsule_config_set_image(capsule_config *cfg, const char *image, capsule_error *err);
CAPSULE_API int capsule_config_set_isolation(capsule_config *cfg, capsule_isolation iso, capsule_error *err);
/* The level a sandbox of CFG gets (what a client must know before it asks for what one level
 * lacks: descriptors passed to a vm's command). */
CAPSULE_API capsule_isolation capsule_config_get_isolation(const capsule_config *cfg);
/* Limits; 0 means no limit. Memory and cpus are unlimited by default; pids default to 4096,
 * so that no sandbox can spend all of the host's pids unless asked to (0). */
CAPSULE_API int capsule_config_set_memory_bytes(capsule_config *cfg, uint64_t bytes, capsule_error *err);
CAPSULE_API int capsule_config_set_cpus_milli(capsule_config *cfg, uint32_t millicpus, capsule_error *err);
CAPSULE_API int capsule_config_set_pids_limit(capsule_config *cfg, uint32_t pids, capsule_error *err);
/* Parsing helpers for the same limits, accepting what docker accepts: "512M", "1.5G", "1.5". */
CAPSULE_API int capsule_config_set_memory(capsule_config *cfg, const char *size, capsule_error *err);
CAPSULE_API int capsule_config_set_cpus(capsule_config *cfg, const char *cpus, capsule_error *err);
/* docker's finer limits of a container (a vm refuses them at create: its cgroup is QEMU's).
 * The cpuset: a list such as "0-3,6" of cpus (memory nodes) this host has online; a sandbox
 * made with one can change it (capsule_sandbox_update_limits), one made without has no
 * cpuset cgroup. Swap: memory + swap as docker's --memory-swap ("1G", "-1": unlimited swap),
 * with a memory limit and not below it; equal to it, or not set, is no swap. The reservation:
 * the soft limit (v1 memory.soft_limit_in_bytes, v2 memory.low), at most the memory limit.
 * Every error names the flag (--cpuset-cpus, --cpuset-mems, --memory-swap,
 * --memory-reservation); the pairs are checked at create, when both are known. */
CAPSULE_API int capsule_config_set_cpuset_cpus(capsule_config *cfg, const char *list, capsule_error *err);
CAPSULE_API int capsule_config_set_cpuset_mems(capsule_config *cfg, const char *list, capsule_error *err);
CAPSULE_API int capsule_config_set_memory_swap(capsule_config *cfg, const char *size, capsule_error *err);
CAPSULE_API int capsule_config_set_memory_reservation(capsule_config *cfg, const char *size, capsule_error *err);
/* Hostname inside the sandbox (default: the sandbox's name). */
CAPSULE_API int capsule_config_set_hostname(capsule_config *cfg, const char *hostname, capsule_error *err);
/* Environment given to every command ("KEY=VALUE"); per-exec env is added on top. */
CAPSULE_API int capsule_config_add_env(capsule_config *cfg, const char *key_value, capsule_error *err);
/* A tmpfs of SIZE_BYTES (0: 64 MiB) at TARGET inside the sandbox, with MODE (0: 01777):
 * scratch space in memory (charged to the sandbox's memory limit) that writes past its size
 * fail with ENOSPC and that is gone when the sandbox stops. TARGET is absolute, not "/", not
 * below /proc or /sys; it is created if missing. At most 16. */
CAPSULE_API int capsule_config_add_tmpfs(capsule_config *cfg, const char *target, uint64_t size_bytes, uint32_t mode,
					 capsule_error *err);
/* Bind the host folder (or file) HOST_PATH at GUEST_PATH inside the sandbox; changes show
 * both ways at once. HOST_PATH must be absolute and exist; it is opened with the rights of
 * the process that creates the sandbox. READONLY is read-only for everyone inside, root
 * included (EROFS). Files the sandbox's root writes belong on the host to the user who made
 * the sandbox, and that user's files look like root's inside (an idmapped mount; where the
 * filesystem cannot be idmapped, host files look owned by nobody). Sensitive host paths
 * (docs/security.md: /, /etc, /root, /proc, /sys, /dev, /boot, runtime sockets, any .ssh,
 * .gnupg or .aws, $CAPSULE_HOME, and folders that contain those) are refused unless
 * ALLOW_SENSITIVE. At most 32. */
CAPSULE_API int capsule_config_add_bind(capsule_config *cfg, const char *host_path, const char *guest_path,
					bool readonly, bool allow_sensitive, capsule_error *err);
/* Transform hooks (docs/transforms.md): the bind mount at GUEST_PATH (added before) is served
 * through FUSE by capsule-fuse, which passes every write through the plugin's encode and every
 * read through its decode, e.g. to keep files encrypted at rest on the host. PLUGIN_PATH is an
 * absolute path to a shared object exporting `capsule_transform_v1` (capsule_transform.h);
 * PLUGIN_CONFIG (NULL or a string of at most 4096 bytes, no newline) is given to its open()
 * and kept in the sandbox's configuration (mode 0600). The mount's source must be a folder.
 * Needs a root caller (FUSE mounts). */
CAPSULE_API int capsule_config_set_bind_transform(capsule_config *cfg, const char *guest_path, const char *plugin_path,
						  const char *plugin_config, capsule_error *err);
/* capsule_config_add_bind (sensitive paths refused) and capsule_config_set_bind_transform in
 * one call; on failure the configuration is left as it was. */
CAPSULE_API int capsule_config_add_bind_transform(capsule_config *cfg, const char *host_path, const char *guest_path,
						  bool readonly, const char *plugin_path, const char *plugin_config,
						  capsule_error *err);
/* A detached sandbox outlives the process that created it and lives until stopped; an
 * ephemeral one (the default) dies when its creator closes it or exits, even on SIGKILL. */
CAPSULE_API int capsule_config_set_detached(capsule_config *cfg, bool detached, capsule_error *err);
/* A label KEY=VALUE kept with the sandbox (in its configuration, so it lasts a stop and a
 * start), shown by inspect ("labels") and matched by capsule_sandbox_list_labeled and `capsule
 * ps --filter label=...`; capsule serve's labels are these. KEY is 1 to CAPSULE_LABEL_KEY_MAX
 * letters, digits, '_', '.', '-' or '/'; VALUE at most CAPSULE_LABEL_VALUE_MAX bytes with no
 * control character; at most CAPSULE_LABELS_MAX labels, each key once (-EEXIST). */
#define CAPSULE_LABELS_MAX 32
#define CAPSULE_LABEL_KEY_MAX 63
#define CAPSULE_LABEL_VALUE_MAX 255
CAPSULE_API int capsule_config_add_label(capsule_config *cfg, const char *key_value, capsule_error *err);
/* How long start may take before it fails (default 10 s for containers). */
CAPSULE_API int capsule_config_set_boot_timeout_ms(capsule_config *cfg, uint32_t ms, capsule_error *err);
/* Pause the running sandbox (as capsule_sandbox_pause) once it has been idle for MS: no
 * command, session, file operation or watch open through its shim. Unlike a client's pause,
 * this one is transparent: the next command, file operation, watch, mount or forwarded
 * connection resumes it first. inspect's paused_by says "idle". 0 (the default): never. */
CAPSULE_API int capsule_config_set_idle_pause_ms(capsule_config *cfg, uint32_t ms, capsule_error *err);

/* Progress of a start: stage is a short static string ("prepare", "namespaces", "rootfs",
 * "agent", "ready"); current/total count stages. Called on the caller's thread. */
typedef void (*capsule_progress_fn)(const char *stage, uint64_t current, uint64_t total, void *payload);
CAPSULE_API int capsule_config_set_progress(capsule_config *cfg, capsule_progress_fn fn, void *payload,
					    capsule_error *err);

/* The settings that `capsule run` and `capsule create` take as flags, from the library's one
 * table of settings, so that a client (the CLI, an SDK) offers each new one without knowing
 * it. Each is set from its flag's text through the same checks as its setter above. */
typedef struct capsule_config_option {
	const char *flag;       /* "memory": --memory, and the name capsule_config_set_option takes */
	char short_flag;        /* 'm' (-m), or 0 */
	const char *value_name; /* "SIZE"; NULL for a switch (--display), which takes no value */
	const char *help;       /* one or more lines, apart with '\n' */
} capsule_config_option;
/* The INDEX'th option (from 0, in the order help lists them), or NULL past the last; static
 * storage. */
CAPSULE_API const capsule_config_option *capsule_config_option_at(size_t index);
/* Set the option FLAG ("memory") from VALUE as the flag takes it ("512M"; NULL for a switch,
 * which it turns on); an option that adds (--volume, --env) adds one more. -EINVAL for an
 * unknown FLAG. */
CAPSULE_API int capsule_config_set_option(capsule_config *cfg, const char *flag, const char *value,
					  capsule_error *err);

/* ---- sandboxes ------------------------------------------------------------------------ */

typedef struct capsule_sandbox capsule_sandbox;

/* Create and start a sandbox. On failure nothing is left behind. */
CAPSULE_API int capsule_sandbox_create(capsule_sandbox **out, const capsule_config *cfg, capsule_error *err);
/* Attach to an existing sandbox by name (running or stopped). */
CAPSULE_API int capsule_sandbox_open(capsule_sandbox **out, const char *name, capsule_error *err);
/* Start a stopped named sandbox again, with its configuration and filesystem. -EALREADY when
 * it is running (or starting) already: nothing was done. */
CAPSULE_API int capsule_sandbox_start(capsule_sandbox *sb, capsule_error *err);
/* Graceful stop: SIGTERM to every process in the sandbox, SIGKILL after timeout_ms; 0 kills
 * at once (docker stop -t 0). Returns when the sandbox is down: its processes are gone. An
 * ephemeral sandbox is removed by its stop: its name is free when this returns (a create of
 * it may follow at once), and its cgroups and folder (renamed run/.gone-NAME.PID) are deleted
 * a moment later by that PID (or, should it be killed, by the next create or list). A named one
 * stays, stopped, until removed. Stopping a stopped sandbox succeeds. */
#define CAPSULE_STOP_TIMEOUT_DEFAULT_MS 10000
CAPSULE_API int capsule_sandbox_stop(capsule_sandbox *sb, uint32_t timeout_ms, capsule_error *err);
/* capsule_sandbox_stop that keeps an ephemeral sandbox, stopped, with its filesystem, as a
 * detached one is kept: capsule_sandbox_start on this handle runs it again, ephemeral as
 * before (it dies with this handle). Freeing the handle while it is stopped removes it; only
 * a creator killed while it is stopped leaves it behind (no process, no memory: its folder,
 * until capsule_sandbox_remove). For a detached sandbox it is capsule_sandbox_stop. One taken
 * from a pool is refused (-EOPNOTSUPP): its end is made fast by removing it. */
CAPSULE_API int capsule_sandbox_stop_keep(capsule_sandbox *sb, uint32_t timeout_ms, capsule_error *err);
/* Pause every process of the running sandbox, in memory (the cgroup freezer for a container,
 * QMP stop for a vm, whose guest syncs its disks first), until capsule_sandbox_resume or a
 * stop. Meanwhile inspect says "paused"; commands, file operations, signals, mounts and a
 * revert are refused (EBUSY, "sandbox 'x' is paused: resume it first"); saves, ports, stop
 * and remove work. Pausing a paused sandbox, or resuming a running one, succeeds; a stopped
 * one is ENOTCONN. Refused (EBUSY) while a save of the sandbox is being copied. */
CAPSULE_API int capsule_sandbox_pause(capsule_sandbox *sb, capsule_error *err);
/* Resume a paused sandbox; one paused to disk gets a new shim that loads its memory state (a
 * vm runs on from where it stopped, without a boot) and the state file goes. A resume from
 * disk that fails keeps the state file (try again), and says why. */
CAPSULE_API int capsule_sandbox_resume(capsule_sandbox *sb, capsule_error *err);
/* Pause a detached vm sandbox to disk: its guest syncs and stops, QEMU writes its memory and
 * devices to memory.state in the sandbox's folder ($CAPSULE_HOME/run/NAME/, 0600, at most
 * the guest's RAM plus 64 MiB: zero pages take nothing) and QEMU and the shim exit, freeing
 * their memory; it survives a host restart. inspect then says "paused" with paused_to "disk";
 * capsule_sandbox_resume runs it again; exec, file operations and start say "sandbox 'x' is
 * paused to disk: resume it first" (EBUSY); stop discards the memory state (stopped);
 * remove removes it all. Refused with one line: a container (EOPNOTSUPP: CRIU does not run on
 * this kernel), an ephemeral or pool sandbox, a vm from the "host" image, a vm with a bind,
 * hot mount or allowlist /etc/hosts (a 9p share in use blocks QEMU's migration; EBUSY, naming
 * the mount's path), one with commands or file operations open (EBUSY), too little free space
 * (ENOSPC). A save that fails leaves the sandbox as it was (running, or paused in memory). A
 * paused-to-disk sandbox's pause succeeds. */
CAPSULE_API int capsule_sandbox_pause_to_disk(capsule_sandbox *sb, capsule_error *err);
/* What changed in the sandbox's root filesystem since it was made, running or stopped, as a
 * JSON array (malloc'd, caller frees) of objects in the order of a walk of the tree (a folder
 * before what it holds, each folder's names sorted bytewise): path
 * (absolute in the sandbox), kind ("added", "modified", "deleted"), type ("file", "dir",
 * "symlink", "other"), and except for a deletion size (bytes; 0 for a folder), mode ("0644"),
 * mtime_ns and, for a symlink, link_target. Read from the sandbox's own layer, so it costs what changed:
 * a file present in it that the image has is modified (even if rewritten with the same bytes),
 * a folder that the image has is listed only through what changed in it, a deleted folder is
 * one entry. Mounts (binds, volumes, tmpfs) are not part of it. A path that is not UTF-8 has
 * its bad bytes as U+FFFD. Container level only: a vm is EOPNOTSUPP (its root is one ext4
 * disk). More than a million changes is EFBIG. */
CAPSULE_API int capsule_sandbox_diff_json(capsule_sandbox *sb, char **out_json, capsule_error *err);
/* What changed since SINCE in SB, in the same form: a path changed after it is "modified" (or
 * "added" where SINCE had it deleted, or "deleted"), one changed only before it is not listed,
 * and a change taken back (a file added before, removed after) is "deleted". SINCE is
 * "checkpoint:NAME" (capsule_checkpoint), "save:NAME" (capsule_save), or a bare NAME: the
 * sandbox's checkpoint of that name if it has one, else the save (ENOENT, "no checkpoint or
 * save named 'x'", for neither). A checkpoint, or a save over the same layers as SB (saved
 * from SB, or from a sandbox of the same image or save), is compared as a copy of the layer
 * with the layer now: it costs what changed since the sandbox was made. A save among SB's
 * layers (the one it started from, or one below that) is the filesystem of the layers up to
 * it: the answer is the layers above it merged, SB's own on top (for the save it started
 * from, capsule_sandbox_diff_json's). Any other save (of another image, a vm's) is refused,
 * EINVAL or EOPNOTSUPP, naming why.
 * Container level only (EOPNOTSUPP). */
CAPSULE_API int capsule_sandbox_diff_since_json(capsule_sandbox *sb, const char *since, char **out_json,
						capsule_error *err);
/* The same between two diffs of one sandbox taken by capsule_sandbox_diff_json, BEFORE and
 * AFTER (what a command changed: capsule exec --diff), into *OUT_JSON (malloc'd). EINVAL for
 * text that is not such a diff. */
CAPSULE_API int capsule_diff_json_since(const char *before_json, const char *after_json, char **out_json,
					capsule_error *err);

/* Watch PATH (absolute in the running sandbox; a folder, or a file for its own changes), its
 * whole tree with RECURSIVE (at most 8192 folders, 64 watches a sandbox), from inside the
 * sandbox (inotify in its agent). Returns once the agent watches: changes after that are
 * seen. At the vm level, changes the host makes in a bound folder (a 9p share) are not seen:
 * the guest's kernel does not hear of them. */
typedef struct capsule_watch capsule_watch;
CAPSULE_API int capsule_watch_start(capsule_sandbox *sb, const char *path, bool recursive, capsule_watch **out,
				    capsule_error *err);
/* The next event, as one line of JSON (malloc'd) in *OUT_JSON: kind ("create", "modify",
 * "delete", "move", "overflow"), path (absolute; none for an overflow), from (a move's old
 * path), time (RFC 3339, UTC, the sandbox's clock), time_ns, dir (whether it is a folder).
 * "overflow" says events were lost (the kernel's queue, or this reader too slow): what it
 * watches must be looked at again. Returns 1 with an event, 0 once the watched path is gone
 * (or its sandbox stops: then -ESHUTDOWN), -EAGAIN when none came within TIMEOUT_MS (0: do
 * not wait; -1: wait for ever), or another -errno. */
CAPSULE_API int capsule_watch_next(capsule_watch *w, char **out_json, int timeout_ms, capsule_error *err);
/* The descriptor to poll for readability before capsule_watch_next(w, ..., 0, ...), which is
 * then called until -EAGAIN (for event loops). */
CAPSULE_API int capsule_watch_fd(const capsule_watch *w);
/* Stop watching and free W. */
CAPSULE_API void capsule_watch_free(capsule_watch *w);
/* Remove a sandbox and everything it owns. A running one is refused unless force (then it is
 * killed first, and its folder goes as an ended ephemeral sandbox's does: the name is free
 * when this returns, the folder is deleted a moment later; see capsule_sandbox_stop). */
CAPSULE_API int capsule_sandbox_remove(const char *name, bool force, capsule_error *err);
/* Release the handle. For an ephemeral sandbox created through this handle, this ends it, as
 * capsule_sandbox_stop does. */
CAPSULE_API void capsule_sandbox_free(capsule_sandbox *sb);

CAPSULE_API const char *capsule_sandbox_name(const capsule_sandbox *sb);
CAPSULE_API bool capsule_sandbox_is_running(const capsule_sandbox *sb);
CAPSULE_API capsule_isolation capsule_sandbox_isolation(const capsule_sandbox *sb);

/* A snapshot of what a sandbox is; strings are owned by the info. */
typedef struct capsule_sandbox_info {
	char name[64];
	char state[16]; /* "running", "paused", "stopped" (or "starting") */
	char image[256];
	capsule_isolation isolation;
	bool detached;
	pid_t shim_pid;  /* 0 when not running */
	pid_t init_pid;  /* the agent's pid on the host, 0 when not running */
	uint64_t memory_bytes;
	uint32_t cpus_milli;
	uint32_t pids_limit;
	int64_t created_unix;
	int64_t started_unix;
	char hostname[64];
} capsule_sandbox_info;

CAPSULE_API int capsule_sandbox_inspect(capsule_sandbox *sb, capsule_sandbox_info *out, capsule_error *err);
/* inspect as a JSON document (malloc'd, caller frees). */
CAPSULE_API int capsule_sandbox_inspect_json(capsule_sandbox *sb, char **out_json, capsule_error *err);
/* Every sandbox under $CAPSULE_HOME. *out is malloc'd, caller frees. Stale entries left by a
 * killed shim are cleaned up by this call. */
CAPSULE_API int capsule_sandbox_list(capsule_sandbox_info **out, size_t *count, capsule_error *err);
/* capsule_sandbox_list of the sandboxes that have every label of LABELS (NULL-terminated):
 * "KEY=VALUE" matches that value, "KEY" any value of KEY. A malformed entry is -EINVAL. */
CAPSULE_API int capsule_sandbox_list_labeled(capsule_sandbox_info **out, size_t *count, const char *const *labels,
					     capsule_error *err);

/* What a running sandbox is doing and using, from its shim. This is the one definition of
 * idle, for every client that acts on it (capsule serve's idle_timeout, pause-on-idle): a
 * sandbox is active while a command runs in it through its shim (an exec, an attached or
 * interactive session, which is an exec too) or a file operation or transfer is in progress
 * (the filesystem API, a copy); otherwise idle, since the last of them ended or, when none
 * has run, since the start. A detached command (exec's detach) and port-forward traffic do
 * not count: nothing is waiting on them. The figures are the sandbox's as a whole: a
 * container's cgroups where they keep them, else the sum over its processes in /proc; a vm's
 * are what QEMU uses (it runs in the sandbox's cgroups), and a vm has no interfaces here
 * (its network is the guest kernel's). -ENOTCONN when the sandbox is not running. */
#define CAPSULE_STATS_NET_MAX 8
typedef struct capsule_stats {
	uint32_t active;       /* commands and file operations in progress */
	uint64_t idle_ms;      /* 0 while active; else since the last ended (or the start) */
	bool has_cpu, has_memory, has_pids, has_disk; /* which of the figures below were had */
	uint64_t cpu_usec;     /* cpu time used, user and system, since the start */
	uint64_t memory_bytes; /* memory charged now (the cgroup's usage; else resident sets) */
	uint64_t pids;         /* processes (cgroup: tasks) now */
	uint64_t disk_read_bytes, disk_write_bytes; /* block I/O since the start */
	size_t n_net;          /* a container's interfaces, lo included */
	struct {
		char name[16];
		uint64_t rx_bytes, tx_bytes, rx_packets, tx_packets;
	} net[CAPSULE_STATS_NET_MAX];
	/* The cgroup's limits now (0: none, or no cgroup to read) and the memory controller's OOM
	 * kill count (has_oom: there was one to read; a vm's is QEMU's, the guest kernel's own
	 * OOM kills are not seen here). */
	uint64_t memory_limit_bytes, pids_limit;
	bool has_oom;
	uint64_t oom_kills;
} capsule_stats;
CAPSULE_API int capsule_sandbox_stats(capsule_sandbox *sb, capsule_stats *out, capsule_error *err);

/* Change a running sandbox's limits, as `docker update` and `runc update` do: the shim
 * writes its cgroup's files. SET says which fields are given; a negative memory, quota or pids
 * value (or pids 0) is "no limit". Memory is the sandbox's memory with swap (capsule's memory
 * limit is never extended by swap); cpu quota and period are the CFS bandwidth (v2 cpu.max),
 * shares v1's cpu.shares (v2: the weight runc maps them to). Every value is checked before
 * any is written, and a write the kernel refuses (a memory limit below what is in use and
 * cannot be reclaimed) puts back the ones before it: the sandbox keeps its old limits and the
 * error names the file. A vm's cpu and pids limits are its QEMU's cgroup's; its memory is the
 * guest's RAM, fixed at boot: a memory change of a vm is refused (EOPNOTSUPP). -ENOTCONN when
 * the sandbox is not running. With CAPSULE_LIMIT_MEMORY_SWAP the memory limit is that
 * figure without swap and swap extends it to memory_swap_bytes (v1 memory.memsw, v2
 * memory.swap.max as the difference); a vm refuses every setting but cpu quota, period,
 * shares and pids. */
#define CAPSULE_LIMIT_MEMORY 0x1u
#define CAPSULE_LIMIT_CPU_QUOTA 0x2u
#define CAPSULE_LIMIT_CPU_PERIOD 0x4u
#define CAPSULE_LIMIT_CPU_SHARES 0x8u
#define CAPSULE_LIMIT_PIDS 0x10u
/* An OCI spec's finer settings (docs/oci.md), read only with their bit: a caller built against
 * an older capsule.h, whose struct ends at pids_max, never sets them. */
#define CAPSULE_LIMIT_MEMORY_SWAP 0x20u        /* with CAPSULE_LIMIT_MEMORY */
#define CAPSULE_LIMIT_MEMORY_RESERVATION 0x40u
#define CAPSULE_LIMIT_CPUSET_CPUS 0x80u        /* a sandbox whose cgroup has a cpuset (made with */
#define CAPSULE_LIMIT_CPUSET_MEMS 0x100u       /* cpus or mems): EOPNOTSUPP otherwise */
#define CAPSULE_LIMIT_CPU_RT_PERIOD 0x200u     /* cgroup v1 only */
#define CAPSULE_LIMIT_CPU_RT_RUNTIME 0x400u
typedef struct capsule_limits {
	uint32_t set;          /* CAPSULE_LIMIT_* */
	int64_t memory_bytes;  /* at least 4 MiB, or negative: none */
	int64_t cpu_quota_us;  /* 1000 us up to 1000 s per period, or negative: none */
	uint64_t cpu_period_us; /* 1000 us .. 1 s */
	uint64_t cpu_shares;   /* 2 .. 262144 */
	int64_t pids_max;      /* 1 .. 4194304, or 0 or negative: none */
	int64_t memory_swap_bytes;        /* memory + swap, at least memory_bytes; negative: swap unlimited */
	int64_t memory_reservation_bytes; /* the soft limit (v2: memory.low); negative: none */
	const char *cpuset_cpus;          /* "0-3,6": digits, ',' and '-', at most 255 bytes */
	const char *cpuset_mems;
	uint64_t cpu_rt_period_us;        /* 1 .. 1000000 */
	int64_t cpu_rt_runtime_us;        /* at most the period; negative: no limit (-1) */
} capsule_limits;
CAPSULE_API int capsule_sandbox_update_limits(capsule_sandbox *sb, const capsule_limits *lim, capsule_error *err);

/* ---- commands ------------------------------------------------------------------------- */

typedef struct capsule_process capsule_process;

#define CAPSULE_EXEC_OPTIONS_VERSION 5
/* A resource limit (RLIMIT_*) set on a command before it starts. */
typedef struct capsule_rlimit {
	int resource;
	uint64_t soft, hard;
} capsule_rlimit;
typedef struct capsule_exec_options {
	unsigned version;          /* CAPSULE_EXEC_OPTIONS_VERSION */
	const char *const *argv;   /* NULL-terminated; or NULL with `shell` set */
	const char *shell;         /* run as `sh -c SHELL` when argv is NULL */
	const char *const *env;    /* NULL-terminated "K=V" list added to the sandbox env */
	const char *cwd;           /* working directory inside the sandbox (default "/" or /root) */
	const char *user;          /* "name", "uid" or "uid:gid" inside the sandbox; default root */
	bool tty;                  /* a pseudo-terminal for stdin/stdout (stderr joins stdout) */
	uint16_t rows, cols;       /* initial window size with tty */
	bool stdin_open;           /* else stdin is /dev/null */
	uint32_t timeout_ms;       /* 0: none; on expiry the whole process group is killed */
	bool detach;               /* background: no streams, outlives the calling connection */
	/* Version 2: what an OCI process asks (docs/oci.md). A version 1 caller's options end
	 * above and it gets the defaults. */
	bool groups_set;           /* the supplementary groups are GROUPS, not the user's */
	const uint32_t *groups;    /* at most 64 */
	size_t ngroups;
	bool caps_set;             /* the command keeps CAPS (bit n: capability n), whatever its user, */
	uint64_t caps;             /* instead of root's default set; inside the user namespace. All */
	uint64_t caps_inheritable; /* three within the sandbox's own set (EPERM naming the first */
	uint64_t caps_ambient;     /* outside it); with caps_set, the last two subsets of CAPS */
	bool umask_set;            /* the command's umask (else 022) */
	uint32_t umask;
	bool oom_score_adj_set;    /* the command's oom_score_adj, 0 to 1000 (else 0) */
	uint32_t oom_score_adj;
	const capsule_rlimit *rlimits; /* at most 16 */
	size_t nrlimits;
	const void *seccomp_bpf;   /* struct sock_filter[]: a filter installed above capsule's own, */
	size_t seccomp_len;        /* which it can narrow, never widen; bytes, at most 64 KiB */
	/* Version 3: the command runs without no_new_privs (an OCI process's noNewPrivileges
	 * false). It gains nothing on exec that the sandbox does not hold already: every mount
	 * is nosuid, the bounding set and the filters stay (docs/oci.md). */
	bool new_privs;
	/* Version 4: descriptors of the caller's that the command gets as 3, 4, ... (fds[i] as
	 * 3+i, without O_CLOEXEC; every other descriptor above 2 is closed in it), as an OCI
	 * runtime's --preserve-fds and systemd's LISTEN_FDS pass them. At most
	 * CAPSULE_EXEC_MAX_FDS, each open (EBADF naming the first that is not). The command gets
	 * copies: the caller keeps its own. Container level only (EOPNOTSUPP at the vm level:
	 * its agent is reached over virtio-serial, which carries bytes only). A descriptor
	 * passed gives the command whatever it reaches, a host folder's included: pass only
	 * what the sandbox may have. */
	const int *fds;
	size_t nfds;
	/* Version 5: the handle makes no other call while this command runs or after it (a CLI's
	 * one exec). A connection the command opens is then its alone, and the shim closes it
	 * once the command has ended, which spares the shim a wakeup at the caller's close; a
	 * later call on the handle opens a new one. */
	bool last;
} capsule_exec_options;
#define CAPSULE_EXEC_MAX_FDS 64
#define CAPSULE_EXEC_OPTIONS_INIT { .version = CAPSULE_EXEC_OPTIONS_VERSION }

typedef struct capsule_exit_status {
	int exit_code;  /* the command's exit code, or 128+signal when killed */
	int signal;     /* the signal that ended it, 0 if it exited */
	bool timed_out; /* killed because timeout_ms expired */
} capsule_exit_status;

/* Start a command. A command that cannot be found fails here with -ENOENT, one that cannot be
 * executed with -EACCES (the CLI maps them to 127 and 126, as docker does). */
CAPSULE_API int capsule_exec_start(capsule_process **out, capsule_sandbox *sb, const capsule_exec_options *opts,
				   capsule_error *err);

/* capsule_exec_start without waiting for the sandbox's answer, for event loops: the request
 * is sent on the sandbox handle's idle connection and the handle returned at once, in
 * non-blocking mode. The pid (capsule_process_pid, 0 until then) and a failure to start
 * (-ENOENT, -EACCES, ...) come through capsule_process_read. Returns -EAGAIN, having done
 * nothing, when that connection is busy (lent to another command or file operation) or not
 * open: opening one waits for the shim, so use capsule_exec_start (in a thread) then. Not for
 * detached commands. */
CAPSULE_API int capsule_exec_start_nowait(capsule_process **out, capsule_sandbox *sb, const capsule_exec_options *opts,
					  capsule_error *err);

enum capsule_stream { CAPSULE_STDIN = 0, CAPSULE_STDOUT = 1, CAPSULE_STDERR = 2 };

/* Read the next chunk of output. Returns the number of bytes (> 0) and sets *stream, 0 when
 * every output stream has ended, or a negative error. Blocks unless the process fd (below)
 * was polled readable. */
CAPSULE_API ssize_t capsule_process_read(capsule_process *p, int *stream, void *buf, size_t cap, capsule_error *err);
/* Write to stdin; blocks under flow control until the sandbox has room for all of it.
 * Returns the number of bytes taken (all of them when blocking). */
CAPSULE_API ssize_t capsule_process_write(capsule_process *p, const void *buf, size_t len, capsule_error *err);
CAPSULE_API int capsule_process_close_stdin(capsule_process *p, capsule_error *err);
CAPSULE_API int capsule_process_signal(capsule_process *p, int signo, capsule_error *err);
CAPSULE_API int capsule_process_resize(capsule_process *p, uint16_t rows, uint16_t cols, capsule_error *err);
/* Wait for the exit status; output not yet read is discarded. */
CAPSULE_API int capsule_process_wait(capsule_process *p, capsule_exit_status *status, capsule_error *err);
/* The process's pid inside the sandbox. */
CAPSULE_API pid_t capsule_process_pid(const capsule_process *p);
/* A file descriptor that polls readable when capsule_process_read has something to return. */
CAPSULE_API int capsule_process_fd(const capsule_process *p);
/* In non-blocking mode, capsule_process_read returns -EAGAIN instead of waiting, and
 * capsule_process_write may accept fewer bytes (returning how many) instead of waiting for
 * flow-control credit. Poll capsule_process_fd, then read until -EAGAIN. */
CAPSULE_API int capsule_process_set_nonblocking(capsule_process *p, bool nonblocking);
CAPSULE_API void capsule_process_free(capsule_process *p);

/* Convenience: run a command to completion and collect its output (each stream capped at
 * max_output bytes; the rest is read and dropped). Buffers are malloc'd, caller frees. */
typedef struct capsule_exec_result {
	capsule_exit_status status;
	char *stdout_buf;
	size_t stdout_len;
	char *stderr_buf;
	size_t stderr_len;
} capsule_exec_result;
CAPSULE_API int capsule_exec(capsule_exec_result *out, capsule_sandbox *sb, const capsule_exec_options *opts,
			     const void *stdin_data, size_t stdin_len, size_t max_output, capsule_error *err);
CAPSULE_API void capsule_exec_result_free(capsule_exec_result *r);

/* Kill a background process (started with detach) by its pid in the sandbox. */
CAPSULE_API int capsule_sandbox_kill(capsule_sandbox *sb, pid_t pid, int signo, capsule_error *err);

/* ---- filesystem API ------------------------------------------------------------------- */

/* Files inside a running sandbox, over the same channel as exec: no mount, no network. Paths
 * are absolute paths inside the sandbox and are resolved by the sandbox's agent inside the
 * sandbox's root (symlinks included), so a path can never reach a host file. Operations act
 * as the sandbox's root, as `docker cp` does. Paths longer than CAPSULE_FS_PATH_MAX bytes
 * are refused with -ENAMETOOLONG before anything is sent. */
#define CAPSULE_FS_PATH_MAX 4096

typedef enum capsule_fs_kind {
	CAPSULE_FS_FILE = 1,
	CAPSULE_FS_DIR = 2,
	CAPSULE_FS_SYMLINK = 3,
	CAPSULE_FS_OTHER = 4, /* device, fifo, socket */
} capsule_fs_kind;

typedef struct capsule_fs_entry {
	char *name;        /* the last component (for stat: of the path given) */
	capsule_fs_kind kind;
	uint64_t size;
	uint32_t mode;     /* permission bits and setuid/setgid/sticky (07777) */
	int64_t mtime_ns;  /* nanoseconds since the epoch */
	uint32_t uid, gid; /* as the sandbox sees them */
	char *link_target; /* symlinks only, else NULL */
} capsule_fs_entry;

/* Stat PATH itself (a symlink is reported as a symlink, not followed). */
CAPSULE_API int capsule_fs_stat(capsule_sandbox *sb, const char *path, capsule_fs_entry *out, capsule_error *err);
/* The entries of folder PATH (without . and ..), sorted by name. */
CAPSULE_API int capsule_fs_list(capsule_sandbox *sb, const char *path, capsule_fs_entry **out, size_t *count,
				capsule_error *err);
CAPSULE_API void capsule_fs_entry_clear(capsule_fs_entry *e);
CAPSULE_API void capsule_fs_entries_free(capsule_fs_entry *entries, size_t count);

#define CAPSULE_FS_PARENTS 0x1u   /* mkdir, write: create missing parent folders (mkdir -p) */
#define CAPSULE_FS_RECURSIVE 0x2u /* remove: a folder and everything in it (rm -r) */
#define CAPSULE_FS_FORCE 0x4u     /* remove: a missing path is not an error (rm -f) */
#define CAPSULE_FS_NOREPLACE 0x8u /* write, rename: fail with -EEXIST instead of replacing */

/* Make folder PATH with MODE (0: 0755). */
CAPSULE_API int capsule_fs_mkdir(capsule_sandbox *sb, const char *path, uint32_t mode, unsigned flags,
				 capsule_error *err);
CAPSULE_API int capsule_fs_remove(capsule_sandbox *sb, const char *path, unsigned flags, capsule_error *err);
CAPSULE_API int capsule_fs_rename(capsule_sandbox *sb, const char *from, const char *to, unsigned flags,
				  capsule_error *err);
/* Make a symlink at PATH pointing at TARGET (stored as given, resolved later inside). */
CAPSULE_API int capsule_fs_symlink(capsule_sandbox *sb, const char *target, const char *path, capsule_error *err);

/* Write a whole file. The new content appears at once and whole: it is written to a
 * temporary file beside PATH and renamed over it, so a failure (ENOSPC, a lost connection)
 * leaves the old file as it was. A file that exists keeps its mode and owner; a new one gets
 * MODE (0: 0644). */
CAPSULE_API int capsule_fs_write(capsule_sandbox *sb, const char *path, const void *data, size_t len, uint32_t mode,
				 unsigned flags, capsule_error *err);
/* Read a whole file into a malloc'd buffer (NUL-terminated for convenience, *len excludes
 * it); files larger than MAX_BYTES fail with -EFBIG (0: 1 GiB). */
CAPSULE_API int capsule_fs_read(capsule_sandbox *sb, const char *path, void **data, size_t *len, size_t max_bytes,
				capsule_error *err);

/* Streams: constant memory whatever the file's size. capsule_fs_open_read sends the
 * request and returns at once: a path that cannot be read (missing, a folder) fails at the
 * first capsule_fs_stream_read. capsule_fs_open_write waits until the sandbox has the
 * temporary file open, so a bad path fails there, before any data. */
typedef struct capsule_fs_stream capsule_fs_stream;
CAPSULE_API int capsule_fs_open_read(capsule_fs_stream **out, capsule_sandbox *sb, const char *path, capsule_error *err);
/* Bytes read (> 0), 0 at the end of the file, or a negative error. */
CAPSULE_API ssize_t capsule_fs_stream_read(capsule_fs_stream *s, void *buf, size_t cap, capsule_error *err);
CAPSULE_API int capsule_fs_open_write(capsule_fs_stream **out, capsule_sandbox *sb, const char *path, uint32_t mode,
				      unsigned flags, capsule_error *err);
CAPSULE_API int capsule_fs_stream_write(capsule_fs_stream *s, const void *buf, size_t len, capsule_error *err);
/* For a write stream: put the file in place (the rename above) and report any error; for a
 * read stream: end it. A write stream freed without close leaves the old file untouched. */
CAPSULE_API int capsule_fs_stream_close(capsule_fs_stream *s, capsule_error *err);
CAPSULE_API void capsule_fs_stream_free(capsule_fs_stream *s);

/* Whole files between a host fd and the sandbox, streaming. */
CAPSULE_API int capsule_fs_read_to_fd(capsule_sandbox *sb, const char *path, int fd, capsule_error *err);
CAPSULE_API int capsule_fs_write_from_fd(capsule_sandbox *sb, const char *path, int fd, uint32_t mode, unsigned flags,
					 capsule_error *err);

/* Copy files and folders, like `docker cp`: a folder is copied with everything in it;
 * symlinks are copied as symlinks, never followed (so a loop is just a link); devices,
 * fifos and sockets are skipped. When DST is an existing folder, SRC is copied into it under
 * its own name. Host paths are opened with the caller's rights and followed through no
 * symlink, not even in the path given (-ELOOP): an earlier copy out may have made any link
 * on it. Every host file is created beneath DST without following any symlink, so names
 * chosen inside the sandbox cannot make the copy write elsewhere on the host; a copy out
 * gives what it makes at most mode 0755. */
CAPSULE_API int capsule_copy_to(capsule_sandbox *sb, const char *host_src, const char *guest_dst, capsule_error *err);
CAPSULE_API int capsule_copy_from(capsule_sandbox *sb, const char *guest_src, const char *host_dst, capsule_error *err);
/* ---- volumes --------------------------------------------------------------------------- */

/* A named volume lives apart from any sandbox, in $CAPSULE_HOME/volumes/NAME, until removed;
 * any number of sandboxes can mount it at once (some read-only), and the host can read and
 * write it with no sandbox running. Without a quota it is a plain folder; with one it is an
 * ext4 image of that size (reserved on the host disk when created), loop-mounted, and writes
 * past it fail with ENOSPC. ext4's own metadata (journal, inode tables) takes a little of the
 * quota, so the usable space is somewhat below it. Names follow the sandbox-name rules:
 * [a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}. Volumes need root (loop devices and mounts). */
#define CAPSULE_VOLUME_QUOTA_MIN (8ull << 20)
#define CAPSULE_VOLUME_QUOTA_MAX (16ull << 40)
/* At most this many volumes under one $CAPSULE_HOME. */
#define CAPSULE_VOLUME_MAX_COUNT 1024

typedef struct capsule_volume_info {
	char name[64];
	char kind[16];        /* "folder" (no quota) or "ext4" (a quota) */
	uint64_t quota_bytes; /* 0: no quota */
	int64_t created_unix;
	bool in_use;          /* a running sandbox (or a host-side read or write) holds it now */
	char path[4096];      /* where it is stored on the host */
} capsule_volume_info;

/* QUOTA_BYTES 0: no quota; otherwise between CAPSULE_VOLUME_QUOTA_MIN and _MAX. A host disk
 * without room for the quota fails here (ENOSPC), not at a later write. -EEXIST when a
 * volume of that name exists. Nothing is left behind on failure. */
CAPSULE_API int capsule_volume_create(const char *name, uint64_t quota_bytes, capsule_error *err);
/* -ENOENT when there is no such volume. */
CAPSULE_API int capsule_volume_inspect(capsule_volume_info *out, const char *name, capsule_error *err);
CAPSULE_API int capsule_volume_inspect_json(char **out_json, const char *name, capsule_error *err);
/* Every volume, sorted by name. *out is malloc'd, caller frees. */
CAPSULE_API int capsule_volume_list(capsule_volume_info **out, size_t *count, capsule_error *err);
CAPSULE_API int capsule_volume_list_json(char **out_json, capsule_error *err);
/* Refused with -EBUSY ("volume 'x' is in use by a sandbox") while a running sandbox has it
 * mounted; -ENOENT when there is no such volume. */
CAPSULE_API int capsule_volume_remove(const char *name, capsule_error *err);

/* Host-side access, no sandbox needed. PATH is inside the volume ("/a/b.txt" or "a/b.txt");
 * symlinks in the volume are followed as if the volume were "/" (one pointing at /etc/shadow
 * names the volume's own etc/shadow), and ".." never leaves it. A write creates missing
 * parent folders and replaces the file atomically (a temp file renamed over it): a failed
 * write leaves the old file or none. Reads take regular files only. The _fd forms stream in
 * chunks in constant memory; the buffer read fails with -EFBIG past MAX_BYTES. */
CAPSULE_API int capsule_volume_write(const char *name, const char *path, const void *data, size_t len,
				     capsule_error *err);
CAPSULE_API int capsule_volume_write_from_fd(const char *name, const char *path, int fd, capsule_error *err);
CAPSULE_API int capsule_volume_read(void **out, size_t *out_len, const char *name, const char *path, size_t max_bytes,
				    capsule_error *err);
CAPSULE_API int capsule_volume_read_to_fd(const char *name, const char *path, int fd, capsule_error *err);

/* Mount volume NAME at GUEST_PATH in the sandbox (read-only for everyone inside with
 * READONLY). A volume that does not exist when the sandbox is created is created then,
 * without a quota, as docker does for `-v name:/path`. Counts toward the 32 mounts of
 * capsule_config_add_bind. Ownership maps as for bind mounts: the sandbox's root owns what
 * it writes, on the host too. */
CAPSULE_API int capsule_config_add_volume(capsule_config *cfg, const char *name, const char *guest_path,
					  bool readonly, capsule_error *err);
/* ---- hot mounts ------------------------------------------------------------------------ */

#define CAPSULE_MOUNT_RO 0x1u              /* read-only for everyone inside, root included (EROFS) */
#define CAPSULE_MOUNT_ALLOW_SENSITIVE 0x2u /* allow a sensitive host path (docs/security.md) */

/* Bind the host folder (or file) HOST_PATH at GUEST_PATH inside the running sandbox SB, no
 * restart: the same rules as capsule_config_add_bind (absolute, existing, not sensitive
 * unless allowed, nosuid and nodev, ids mapped both ways). HOST_PATH is opened with the
 * rights of the calling process, not those of the sandbox's shim. Missing folders of
 * GUEST_PATH are made inside the sandbox; it must not pass through a symlink. On success
 * *HANDLE_OUT (if not NULL) is a malloc'd handle ("m1") for capsule_unmount. At most 64 hot
 * mounts per sandbox. */
CAPSULE_API int capsule_mount(capsule_sandbox *sb, const char *host_path, const char *guest_path, unsigned flags,
			      char **handle_out, capsule_error *err);
/* Remove a hot mount by its guest path or its handle. Processes inside keep running; what
 * they still hold open of the mount stays usable until they close it (a lazy unmount).
 * Boot-time mounts cannot be removed. */
CAPSULE_API int capsule_unmount(capsule_sandbox *sb, const char *guest_path_or_handle, capsule_error *err);
/* Every mount the sandbox has, boot-time and hot, as a JSON array (malloc'd, caller frees)
 * of objects: kind ("bind", "tmpfs", "volume"), host_path (null for tmpfs), guest_path,
 * readonly, handle (null for boot-time mounts), hot. */
CAPSULE_API int capsule_mounts_json(capsule_sandbox *sb, char **json_out, capsule_error *err);

/* docker's volumes dict, as docker-py takes it: {"/host": {"bind": "/guest", "mode": "ro"}}
 * (mode ro or rw, default rw). Each entry is added as by capsule_config_add_bind, with
 * sensitive host paths refused; all of it or nothing is added. A key that is not an absolute
 * path is a named volume. */
CAPSULE_API int capsule_config_add_volumes_json(capsule_config *cfg, const char *json, capsule_error *err);
/* docker's -v form "SRC:DST[:ro|rw]" (see capsule_config_add_volumes_json for the rules). */
CAPSULE_API int capsule_config_add_mount_spec(capsule_config *cfg, const char *spec, capsule_error *err);

/* ---- host ----------------------------------------------------------------------------- */

/* Where state lives: $CAPSULE_HOME, else /var/lib/capsule for root, else
 * ~/.local/share/capsule. */
CAPSULE_API const char *capsule_home(void);

/* What this host supports, as JSON (malloc'd): user namespaces, cgroups, seccomp, overlay... */
CAPSULE_API int capsule_doctor_json(char **out_json, capsule_error *err);

/* The size parser every setter uses ("512M", "1.5g", "100MiB", a plain number of bytes), for
 * bindings that take sizes the C API takes in bytes (tmpfs, volume quotas), so that they
 * accept and refuse exactly what the CLI does, with the same message. */
CAPSULE_API int capsule_parse_size(const char *text, uint64_t *bytes_out, capsule_error *err);

/* ---- vm isolation ---------------------------------------------------------------------- */

/* How a vm sandbox's QEMU runs: "auto" (KVM where /dev/kvm opens, else TCG emulation), "kvm"
 * (fail where KVM cannot be had) or "tcg". Ignored by the container level. */
CAPSULE_API int capsule_config_set_accel(capsule_config *cfg, const char *accel, capsule_error *err);
/* One more argument for QEMU's command line, after capsule's own (quicksand's
 * extra_qemu_args); call once per argument, in order. At most 64. */
CAPSULE_API int capsule_config_add_qemu_arg(capsule_config *cfg, const char *arg, capsule_error *err);
/* The size of a sandbox's disk: "4G", "512M", ... from 64M to 16T. A vm's root disk
 * (quicksand's disk_size), whose file system is grown to it at boot; default 2G (or the
 * image's root, where that is larger). A container's own layer (what it writes over its
 * image), an ext4 disk of this size with one inode per 16 KiB; needs root; default none (the
 * host's file system, unbounded). Either way `df /` shows it and a write past it fails with
 * ENOSPC. Unset, the default is capsule.json's (docs/config.md). */
CAPSULE_API int capsule_config_set_disk_size(capsule_config *cfg, const char *size, capsule_error *err);
CAPSULE_API int capsule_config_set_disk_size_bytes(capsule_config *cfg, uint64_t bytes, capsule_error *err);
/* A display for a vm (quicksand's enable_display): a virtio GPU, keyboard and tablet, and a
 * VNC server on a unix socket only the owner can connect to, its path in
 * capsule_sandbox_inspect_json's "display" ("vnc_socket"). A
 * container with a display is refused at create (EOPNOTSUPP). */
CAPSULE_API int capsule_config_set_display(capsule_config *cfg, bool enabled, capsule_error *err);
/* The screen of a running vm with a display as PNG: *PNG_OUT (malloc'd, caller frees) and
 * *LEN_OUT. ENODEV for a vm without a display, EOPNOTSUPP for a container. */
CAPSULE_API int capsule_screenshot(capsule_sandbox *sb, uint8_t **png_out, size_t *len_out, capsule_error *err);
/* The same, written to PATH under a temporary name and renamed over it. */
CAPSULE_API int capsule_screenshot_file(capsule_sandbox *sb, const char *path, capsule_error *err);
/* Type TEXT on the virtio keyboard as a US layout types it (printable ASCII, newline, tab;
 * anything else is refused, EINVAL, before a key is sent). */
CAPSULE_API int capsule_input_type(capsule_sandbox *sb, const char *text, capsule_error *err);
/* Press and release a key or a combination: "ctrl-c", "ctrl+alt+delete", "shift-tab", "f5",
 * "enter", "a" (every key but the last is held). An unknown key name is EINVAL, naming it. */
CAPSULE_API int capsule_input_key(capsule_sandbox *sb, const char *spec, capsule_error *err);
/* Move the pointer (the virtio tablet) to pixel X, Y of the screen; a point off the screen is
 * EINVAL. */
CAPSULE_API int capsule_input_mouse_move(capsule_sandbox *sb, uint32_t x, uint32_t y, capsule_error *err);
/* Click BUTTON ("left", "right", "middle"; NULL: left) where the pointer is. */
CAPSULE_API int capsule_input_mouse_click(capsule_sandbox *sb, const char *button, capsule_error *err);
/* ---- images (docs/architecture.md, Images) ------------------------------------------- */

/* An image reference is docker's: "alpine:3.20" (docker.io/library/alpine:3.20),
 * "localhost:5000/team/tool:1.2", "name@sha256:..."; for capsule_config_set_image also
 * "dir:/path/to/rootfs" (a host folder used as the one read-only layer of the root, not
 * copied) and "host". An image that is not in the store is pulled when a sandbox is created
 * from it. Its config's Env, WorkingDir and User are every command's defaults. */

/* Progress of a pull or import: STAGE "download" (DONE and TOTAL bytes of blob DIGEST),
 * "verify", "unpack". Called on the caller's thread. */
typedef void (*capsule_image_progress_fn)(const char *stage, const char *digest, uint64_t done, uint64_t total,
					  void *payload);

#define CAPSULE_PULL_OPTIONS_VERSION 1
typedef struct capsule_pull_options {
	unsigned version;                   /* CAPSULE_PULL_OPTIONS_VERSION */
	bool insecure;                      /* plain HTTP allowed (loopback registries always are) */
	const char *platform;               /* "os/arch[/variant]"; NULL: linux/amd64 */
	capsule_image_progress_fn progress; /* or NULL */
	void *payload;
} capsule_pull_options;
#define CAPSULE_PULL_OPTIONS_INIT { .version = CAPSULE_PULL_OPTIONS_VERSION }

/* Pull REF from its registry into the store (only what is not there yet is downloaded) and
 * name it. *NAME_OUT (may be NULL) gets its canonical name, malloc'd. */
CAPSULE_API int capsule_image_pull(const char *ref, const capsule_pull_options *opts, char **name_out,
				   capsule_error *err);
/* Import an oci-archive or docker-archive tarball (`docker save`) as NAME. An OCI archive
 * with several images takes the one annotated with NAME's tag, else its first. */
CAPSULE_API int capsule_image_import(const char *archive_path, const char *name, capsule_image_progress_fn progress,
				     void *payload, char **name_out, capsule_error *err);
/* The store's images as a JSON array (malloc'd) of {name, digest, config, layers, size,
 * created}. */
CAPSULE_API int capsule_image_list_json(char **json_out, capsule_error *err);
/* Forget REF; layers and blobs no other image, sandbox or save uses are deleted, and so are
 * the vm root disks flattened from them that no sandbox's, checkpoint's or save's disk stands
 * on. A sandbox made from it (running or stopped) keeps its layers. */
CAPSULE_API int capsule_image_remove(const char *ref, capsule_error *err);

/* The command an image runs: its Entrypoint followed by ARGS, or by its Cmd when ARGS is NULL
 * or empty (as `docker run IMAGE [ARGS]`). *ARGV_OUT is NULL-terminated and malloc'd (free it
 * with capsule_strv_free). -ENOENT when neither gives a command. */
CAPSULE_API int capsule_sandbox_image_command(capsule_sandbox *sb, const char *const *args, char ***argv_out,
					      capsule_error *err);
CAPSULE_API void capsule_strv_free(char **v);
/* ---- network --------------------------------------------------------------------------- */

typedef enum capsule_network {
	CAPSULE_NETWORK_NONE = 0,        /* loopback only (default) */
	CAPSULE_NETWORK_MOUNTS_ONLY = 1, /* the same as none: file sharing never uses the network */
	CAPSULE_NETWORK_FULL = 2,        /* outbound TCP/UDP and DNS through user-mode NAT */
} capsule_network;

/* With FULL the sandbox gets an interface behind slirp4netns (docs/architecture.md): it is
 * 10.0.2.100, its gateway 10.0.2.2 is also the host's 127.0.0.1 (services on the host's
 * loopback are reachable there), and its DNS server is 10.0.2.3 (/etc/resolv.conf points at
 * it). Nothing changes in the host's own network. */
#define CAPSULE_NETWORK_GATEWAY "10.0.2.2"
#define CAPSULE_NETWORK_DNS "10.0.2.3"
CAPSULE_API int capsule_config_set_network(capsule_config *cfg, capsule_network mode, capsule_error *err);
/* The same by name: "none", "mounts-only" or "full". */
CAPSULE_API int capsule_config_set_network_name(capsule_config *cfg, const char *mode, capsule_error *err);
/* A port forward, docker's -p "[HOSTIP:]HOSTPORT:PORT[/tcp]", in every network mode: the
 * sandbox's shim listens on HOSTIP:HOSTPORT (default 127.0.0.1, never all addresses unless
 * asked: a forward on 0.0.0.0 is open to the whole network) and carries each connection to
 * 127.0.0.1:PORT inside the sandbox. A host port that is taken fails the create with
 * -EADDRINUSE. TCP only (/udp is refused with -EOPNOTSUPP). At most 32. */
CAPSULE_API int capsule_config_add_port_forward(capsule_config *cfg, const char *spec, capsule_error *err);
/* An egress allowlist on top of FULL: once an entry is given, the sandbox may reach only the
 * listed destinations (and its own loopback); everything else is dropped inside the
 * sandbox's own network namespace, where its processes cannot change the rules.
 * "NAME[:PORT]" (any port when none is given): at the container level NAME is answered, for
 * as long as the sandbox lives, by a DNS proxy the sandbox's resolv.conf names; it asks the
 * upstream resolver and opens exactly the IPv4 addresses it hands out, for their TTL (clamped
 * to 2 s - 1 h); other names get NXDOMAIN. A vm resolves its names once, at create, on the
 * host. A single label (localhost, the host's own name) is resolved now, on the host; its
 * loopback means the gateway 10.0.2.2. "CIDR[:PORT]" is an IPv4 address or network, any port
 * when none is given. At most 64 names and 64 addresses. */
CAPSULE_API int capsule_config_add_allow_host(capsule_config *cfg, const char *name_port, capsule_error *err);
CAPSULE_API int capsule_config_add_allow_cidr(capsule_config *cfg, const char *cidr_port, capsule_error *err);
/* The resolver the DNS proxy asks, "IPV4[:PORT]" (default: the host's first IPv4 nameserver
 * in /etc/resolv.conf). Containers only. */
CAPSULE_API int capsule_config_set_dns_server(capsule_config *cfg, const char *addr_port, capsule_error *err);
/* A byte quota on what the sandbox sends out ("10M"): once used, new and open connections
 * are refused. Containers with FULL only; inspect's network.egress_quota shows the use. */
CAPSULE_API int capsule_config_set_egress_quota(capsule_config *cfg, const char *size, capsule_error *err);

/* The egress rules of a running container: allow "NAME[:PORT]" or "CIDR[:PORT]" (a CIDR has a
 * '/' or is an IPv4 address), deny one allowed earlier (at create or here; addresses the
 * proxy opened for a name are closed with it), and list them as a JSON object (malloc'd):
 * {"names": [{name, port, addresses: [{address, expires_in_ms}]}], "cidrs": [{rule}],
 * "quota": {bytes, used} or null}. Changes last as long as the sandbox runs. A vm refuses
 * them with -EOPNOTSUPP (its guest's table is fixed at boot). */
CAPSULE_API int capsule_net_allow(capsule_sandbox *sb, const char *rule, capsule_error *err);
CAPSULE_API int capsule_net_deny(capsule_sandbox *sb, const char *rule, capsule_error *err);
CAPSULE_API int capsule_net_json(capsule_sandbox *sb, char **json_out, capsule_error *err);

/* Port forwards of a running sandbox: add one ("[HOSTIP:]HOSTPORT:PORT"), remove one by its
 * host side ("[HOSTIP:]HOSTPORT"; open connections are closed), and list them all as a JSON
 * array (malloc'd) of {host_ip, host_port, guest_port, protocol, connections}. Forwards
 * added to a running sandbox last as long as it runs (they are not saved in its config). */
CAPSULE_API int capsule_port_add(capsule_sandbox *sb, const char *spec, capsule_error *err);
CAPSULE_API int capsule_port_remove(capsule_sandbox *sb, const char *host_side, capsule_error *err);
CAPSULE_API int capsule_ports_json(capsule_sandbox *sb, char **json_out, capsule_error *err);

/* ---- saves ---------------------------------------------------------------------------- */

/* Save the sandbox's filesystem as save NAME when it stops (also when an ephemeral sandbox
 * ends because its creator went away). NULL or "" = ephemeral (the default): nothing
 * survives the stop. A save is started from with capsule_config_set_image(cfg, NAME). */
CAPSULE_API int capsule_config_set_save(capsule_config *cfg, const char *name, capsule_error *err);
/* Save the sandbox's filesystem now as save NAME (replacing a save of that name unless
 * another save or a sandbox depends on it). A running sandbox's processes are frozen for the
 * copy, then go on. */
CAPSULE_API int capsule_save(capsule_sandbox *sb, const char *name, capsule_error *err);
/* Keep the sandbox's filesystem as checkpoint NAME, for as long as the sandbox exists. */
CAPSULE_API int capsule_checkpoint(capsule_sandbox *sb, const char *name, capsule_error *err);
/* Put the sandbox's filesystem back to checkpoint NAME. A running sandbox restarts: every
 * process in it is killed (commands in flight end with 137), hot mounts and port forwards
 * added while it ran are dropped, and it comes back from its boot-time configuration; its
 * name and handles stay valid. */
CAPSULE_API int capsule_revert(capsule_sandbox *sb, const char *name, capsule_error *err);
/* A new named sandbox NEW_NAME (detached: it runs until stopped) from SB's configuration and
 * current filesystem, without SB's save target and port forwards; SB goes on. *OUT (if not
 * NULL) gets its handle. */
CAPSULE_API int capsule_fork(capsule_sandbox *sb, const char *new_name, capsule_sandbox **out, capsule_error *err);
/* Every save as a JSON array (malloc'd) of objects: name, parent, parent_kind ("host", "save",
 * "image"), created, size (bytes of its own layer), files, chain (from the image up to this
 * save), chain_size. */
CAPSULE_API int capsule_saves_json(char **out_json, capsule_error *err);
/* Remove save NAME; refused (EBUSY) while another save is on top of it or a sandbox uses it.
 * The vm root disks that only its disk stood on go with it. */
CAPSULE_API int capsule_save_remove(const char *name, capsule_error *err);

/* ---- warm pools (docs/architecture.md, "Warm pools") ------------------------------------ */

/* A pool keeps SIZE sandboxes of one configuration started and ready, so that a create that
 * names it (capsule_config_set_pool) takes one instead of starting one: a container's start
 * or a vm's boot is paid before it is asked for. A ready sandbox is never used before it is
 * taken, and a taken one never goes back: each take gets a fresh sandbox. A keeper process
 * per pool (capsule-pool-keeper, started here, not the caller's child) starts them and
 * starts another each time one is taken or dies; it ends with capsule_pool_remove, and
 * when the pool's folder goes. */
#define CAPSULE_POOL_SIZE_MAX 64
#define CAPSULE_POOLS_MAX 64
/* Make pool NAME ([a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}) of SIZE (1 to CAPSULE_POOL_SIZE_MAX)
 * sandboxes made from CFG (its name, detached and pool are not used: a taker gives those).
 * Returns once the keeper runs and the first sandbox is ready, so that a configuration that
 * cannot start fails here with the start's own error, leaving nothing; the keeper fills the
 * rest in the background. -EEXIST when the pool exists. */
CAPSULE_API int capsule_pool_create(const char *name, const capsule_config *cfg, uint32_t size, capsule_error *err);
/* Remove pool NAME: its keeper stops its ready sandboxes and exits, and its folder goes; when
 * this returns nothing of the pool is left. Sandboxes taken from it are not touched. */
CAPSULE_API int capsule_pool_remove(const char *name, capsule_error *err);
/* Every pool as a JSON array (malloc'd) of {name, size, ready (how many wait to be taken),
 * keeper (whether its keeper runs; false after a crash: remove the pool, or prune),
 * keeper_pid (0 when it does not run),
 * options (the sandboxes' settings, as the lines of their configuration: {key: value, or
 * a list of values for a repeated key}), created}. */
CAPSULE_API int capsule_pool_list_json(char **json_out, capsule_error *err);
/* Take the next sandbox from POOL at capsule_sandbox_create: the created sandbox is one of
 * the pool's ready ones, renamed to the configuration's name (or keeping a generated one),
 * ephemeral or detached as the configuration says. Give nothing else: the pool's options
 * apply, and a configuration with other settings is refused (EINVAL). With no ready
 * sandbox (a burst took them all), one is started cold from the pool's options. NULL or ""
 * takes from no pool. */
CAPSULE_API int capsule_config_set_pool(capsule_config *cfg, const char *pool, capsule_error *err);

/* ---- the stores taken together ---------------------------------------------------------- */

/* What $CAPSULE_HOME's stores hold, as a JSON object (malloc'd): images {count, bytes}, saves
 * {count, bytes}, vm {files: [{name, kind ("rootfs", "initramfs", "kernel"), bytes, kept}],
 * entries, bytes, kept_bytes, reclaimable}. A vm file's kept says why it stays: "running" (a
 * vm boots from it), "building", "disk" (a sandbox's, a checkpoint's or a save's disk stands
 * on it), "layers" (the layers it was made from are all still stored), "latest" (the kernel or
 * initramfs used last); null when capsule_system_prune would remove it. */
CAPSULE_API int capsule_system_df_json(char **json_out, capsule_error *err);
/* Remove what nothing uses: image blobs and layers that no image, sandbox or save names, then
 * every vm store file whose kept would be null, and what killed builds left. Files in use are
 * never removed. *FREED_BYTES (may be NULL) gets the bytes freed. */
CAPSULE_API int capsule_system_prune(uint64_t *freed_bytes, capsule_error *err);

/* ---- OCI bundles (docs/oci.md) ------------------------------------------------------------ */

/* An OCI runtime-spec 1.x config.json, read into a sandbox configuration and the options of its
 * process: what capsule-oci runs. Every field capsule knows is honoured or refused with one
 * line naming it (EOPNOTSUPP for what capsule cannot do, EINVAL for what is malformed);
 * fields the spec does not define are skipped, as the spec asks. */
typedef struct capsule_oci_spec capsule_oci_spec;
/* JSON is a process object alone (`exec --process`), not a whole config.json. */
#define CAPSULE_OCI_PROCESS_ONLY 0x1u
/* BUNDLE: the bundle's absolute path, which relative paths (root.path, bind sources) are
 * taken from; unused with CAPSULE_OCI_PROCESS_ONLY. */
CAPSULE_API int capsule_oci_spec_parse(capsule_oci_spec **out, const char *json, size_t len, const char *bundle,
				       unsigned flags, capsule_error *err);
/* The sandbox's configuration (owned by SPEC; NULL for a process alone): set a name and
 * create the sandbox from it. */
CAPSULE_API capsule_config *capsule_oci_spec_config(capsule_oci_spec *spec);
/* The process's options, pointing into SPEC (valid while it lives); argv is NULL when the
 * config has no process (a container that can be created, not started). */
CAPSULE_API void capsule_oci_spec_exec_options(const capsule_oci_spec *spec, capsule_exec_options *out);
/* The annotations object's JSON text, or NULL. */
CAPSULE_API const char *capsule_oci_spec_annotations(const capsule_oci_spec *spec);
/* The spec's hooks of one kind, in order: run by the runtime on the host with the
 * container's state on stdin (capsule-oci). createContainer and startContainer hooks, which
 * run inside the container's namespaces, are refused at parse. */
typedef enum capsule_oci_hook_kind {
	CAPSULE_OCI_HOOK_PRESTART = 0,
	CAPSULE_OCI_HOOK_CREATE_RUNTIME = 1,
	CAPSULE_OCI_HOOK_POSTSTART = 2,
	CAPSULE_OCI_HOOK_POSTSTOP = 3,
} capsule_oci_hook_kind;
typedef struct capsule_oci_hook {
	const char *path;         /* absolute, on the host */
	const char *const *args;  /* NULL-terminated; NULL: argv is the path alone */
	const char *const *env;   /* NULL-terminated; NULL: an empty environment */
	uint32_t timeout_s;       /* 0: none */
} capsule_oci_hook;
/* Sets *OUT to the hooks of KIND (pointing into SPEC) and returns how many. */
CAPSULE_API size_t capsule_oci_spec_hooks(const capsule_oci_spec *spec, capsule_oci_hook_kind kind,
					  const capsule_oci_hook **out);
/* The pid namespace path the spec names to join (a pod's shareProcessNamespace: containerd's
 * CRI names its pause container's /proc/PID/ns/pid), or NULL. The sandbox is created only
 * when it is a running sandbox's of the same capsule home; capsule-oci, whose PID is a monitor
 * outside its sandbox's pid namespace, sets the sandbox's own path in its place. */
CAPSULE_API const char *capsule_oci_spec_pid_ns(const capsule_oci_spec *spec);
CAPSULE_API int capsule_oci_spec_set_pid_ns(capsule_oci_spec *spec, const char *path, capsule_error *err);
/* What the spec asks that is taken and not done, as runc does not do it either (e.g.
 * linux.resources.memory.kernel), one warning a line; NULL when there is none. The caller
 * shows them: the library never prints. */
CAPSULE_API const char *capsule_oci_spec_warnings(const capsule_oci_spec *spec);
CAPSULE_API void capsule_oci_spec_free(capsule_oci_spec *spec);

#ifdef __cplusplus
}
#endif
#endif
