/* cgroup_layout.c: which cgroup hierarchies a host has mounted, read from the text of
 * /proc/self/mountinfo and /proc/self/cgroup. No I/O: the caller reads the files (cgroup.c), so
 * every layout (v1, hybrid, unified, nsdelegate, a malformed file) is tested from fixtures and
 * the parser is fuzzed (tests/unit/test_cgroup_layout.c, tests/fuzz/fuzz_cgroup_layout.c). */
#ifndef CAPSULE_SHIM_CGROUP_LAYOUT_H
#define CAPSULE_SHIM_CGROUP_LAYOUT_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>

#include "capsule.h"

/* The controllers capsule limits with. cpuset is used only by a sandbox that asks for one. */
enum cg_ctrl { CG_MEMORY, CG_PIDS, CG_CPU, CG_CPUSET, CG_N_CTRL };
#define CG_BIT(c) (1u << (c))
extern const char *const cg_ctrl_name[CG_N_CTRL];

/* Our controllers named in S, a list separated by spaces, tabs, newlines or commas: a
 * cgroup.controllers file ("cpu io memory pids") or a v1 mount's options ("rw,cpu,cpuacct"). */
unsigned cg_parse_ctrls(const char *s);

enum cgroup_mode {
	CGROUP_MODE_NONE,    /* no cgroup hierarchy is mounted */
	CGROUP_MODE_V1,      /* v1 hierarchies only */
	CGROUP_MODE_HYBRID,  /* v1 hierarchies, and a cgroup2 mount beside them (systemd's
	                      * /sys/fs/cgroup/unified, usually without controllers) */
	CGROUP_MODE_UNIFIED, /* a cgroup2 mount and no v1 hierarchy (at the cgroup root, or
	                      * elsewhere when the root holds none) */
};

struct cgroup_layout {
	enum cgroup_mode mode;
	/* The v1 mount point that holds each controller, "" when no v1 hierarchy has it (then it
	 * belongs to the v2 hierarchy, if the kernel has it). Of several, the one below the
	 * cgroup root, else the first. */
	char v1[CG_N_CTRL][PATH_MAX];
	/* The cgroup2 mount to use, "" when none: the one at the cgroup root, else one below it,
	 * else the first elsewhere (a later mount on the same point hides an earlier one). */
	char v2_mount[PATH_MAX];
	char v2_root[PATH_MAX]; /* that mount's root inside the hierarchy (mountinfo's 4th field) */
	bool v2_nsdelegate;     /* mounted with nsdelegate: a cgroup namespace's root is a
	                         * delegation boundary that its processes cannot write across */
	/* This process's cgroup in the v2 hierarchy, from /proc/self/cgroup's "0::" line, as that
	 * file gives it (relative to our cgroup namespace's root); "" when there is no such line. */
	char self_v2[PATH_MAX];
};

/* Parse MOUNTINFO (the text of /proc/self/mountinfo) and SELF_CGROUP (the text of
 * /proc/self/cgroup; NULL when unknown) into OUT. SYS_ROOT is where the hierarchies are
 * normally mounted ("/sys/fs/cgroup"). Empty lines are skipped; any other line that is not in
 * the kernel's format (fields missing, a number that is not one) fails with -EINVAL and a
 * message naming the file, the line and what was wrong. */
int cgroup_layout_parse(struct cgroup_layout *out, const char *sys_root, const char *mountinfo,
			const char *self_cgroup, capsule_error *err);

/* The cgroup PATH (absolute in the hierarchy) relative to a mount whose root is ROOT, as a path
 * below that mount ("/" for the mount's own root), into OUT (SIZE bytes). False when PATH is not
 * at or below ROOT (a cgroup the mount does not show) or does not fit. */
bool cgroup_below_root(const char *path, const char *root, char *out, size_t size);

#endif
