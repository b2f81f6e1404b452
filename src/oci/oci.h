/* capsule-oci: the OCI runtime command line (runc's) over libcapsule. main.c parses the
 * command line and runs the verbs; state.c keeps each container's folder under --root;
 * run.c is the monitor, the process whose pid --pid-file names (docs/oci.md). */
#ifndef CAPSULE_OCI_H
#define CAPSULE_OCI_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "capsule.h"

#define OCI_VERSION "1.1.0"

/* Print "capsule-oci: MESSAGE" to stderr and to --log; returns 1 (the exit code). */
int oci_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int oci_fail_err(const capsule_error *err);
/* The same as a warning ("capsule-oci: warning: ..."); the caller goes on. */
void oci_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- state.c: ROOT/ID/ --------------------------------------------------------------- */

struct oci_state {
	char id[256];
	char status[16]; /* creating, created, running, stopped */
	pid_t pid;       /* the monitor */
	uint64_t pid_start; /* its start time (/proc/PID/stat), against pid reuse */
	char bundle[4096];
	char sandbox[64];
	char created[40]; /* RFC 3339 */
	char *annotations; /* JSON object text, or NULL */
};

extern const char *oci_root;

/* Container ids as runc takes them, and short enough to be a sandbox's name. */
int oci_check_id(const char *id);
/* ROOT/ID: made (EEXIST when the container exists), or opened. */
int oci_state_dir_make(const char *id, int *dirfd);
int oci_state_dir_open(const char *id, int *dirfd);
int oci_state_dir_remove(const char *id);
int oci_state_write(int dirfd, const struct oci_state *st);
/* Read ROOT/ID/state.json; a created or running container whose monitor is gone reads as
 * stopped. */
int oci_state_read(int dirfd, struct oci_state *st);
void oci_state_clear(struct oci_state *st);
/* FN on each container under --root whose state reads (cleared after), until FN returns
 * nonzero; that value, or 0. */
int oci_state_each(int (*fn)(const struct oci_state *st, void *payload), void *payload);
void oci_state_json(const struct oci_state *st, bool pretty, char **out);
uint64_t oci_proc_start_time(pid_t pid);
/* Send SIG to PID only while it is the process that started at START (a pidfd taken first,
 * then the start time read: a pid the monitor left and another process took is not
 * signalled). 0, -ESRCH when it is gone or someone else's, or -errno. */
int oci_signal_pid(pid_t pid, uint64_t start, int sig);
/* The sandbox name a container id gets. */
void oci_sandbox_name(const char *id, char out[64]);

/* ---- run.c: the monitor -------------------------------------------------------------- */

struct oci_run {
	const char *id;
	const char *bundle;
	const char *pid_file;
	const char *console_socket;
	bool detach;   /* run -d */
	bool no_start; /* create: wait for start */
	int preserve_fds; /* --preserve-fds: our fds 3..3+N-1 go to the process as the same */
};

int oci_create_or_run(const struct oci_run *o);
int oci_start(const char *id);
/* delete: the poststop hooks of the config.json kept in DIRFD (ROOT/ID). */
int oci_poststop(int dirfd, const struct oci_state *st);

struct oci_exec {
	const char *id;
	const char *process; /* --process FILE, or NULL */
	char **args;
	const char **env;
	size_t nenv;
	const char *cwd, *user;
	bool tty, detach;
	const char *pid_file;
	const char *console_socket;
	const char **caps;
	size_t ncaps;
	int preserve_fds;
};

int oci_exec(const struct oci_exec *o);

/* ---- events.c ------------------------------------------------------------------------- */

/* events: one stats event (ONCE), or stats every INTERVAL_MS and oom events until it stops. */
int oci_events(const struct oci_state *st, bool once, uint64_t interval_ms);

/* ---- update.c ------------------------------------------------------------------------- */

struct oci_update {
	const char *id;
	const char *resources; /* --resources FILE, "-" for stdin, or NULL */
	const char *memory, *memory_swap, *cpu_quota, *cpu_period, *cpu_share, *pids_limit;
	const char *reservation, *cpuset_cpus, *cpuset_mems, *rt_period, *rt_runtime;
	struct {
		const char *flag, *value, *why;
	} refused[12]; /* runc's flags capsule cannot honour: refused when given a value */
	size_t nrefused;
};

int oci_update(const struct oci_update *o);

/* In a child of the monitor (a hook's): back into the host's network, IPC and UTS namespaces
 * and the cgroups the monitor left for its container's; _exit(127) when it cannot. */
void oci_host_enter(void);

/* ---- hooks.c: the spec's hooks, run on the host with ST's state JSON on stdin ----------- */

/* 0; or, given FAILED (prestart, createRuntime: a failure fails the create), -1 at the first
 * failure with FAILED saying which and why; without it, failures are printed as warnings. */
int oci_run_hooks(const capsule_oci_spec *spec, capsule_oci_hook_kind kind, const struct oci_state *st, char *failed,
		  size_t size);

#endif
