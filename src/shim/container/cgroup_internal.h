/* What the cgroup files share (cgroup.h is the interface; this is inside it):
 *   cgroup_layout.c  which hierarchies are mounted, from mountinfo's text (pure)
 *   cgroup.c         where a sandbox's cgroup can go on this host, as this user; probe; the
 *                    handle's accessors
 *   cgroup_create.c  making the folders and writing the limits
 *   cgroup_remove.c  killing what is inside and removing the folders */
#ifndef CAPSULE_SHIM_CGROUP_INTERNAL_H
#define CAPSULE_SHIM_CGROUP_INTERNAL_H

#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "cgroup.h"
#include "cgroup_layout.h"
#include "util.h"

/* Where the cgroup hierarchies are mounted. Overridable at build time (tests point it at a
 * cgroup2 mount to exercise the v2 code on a v1 host). */
#ifndef CG_SYS_ROOT
#define CG_SYS_ROOT "/sys/fs/cgroup"
#endif

#define CG_PARENT "capsule"
#define CG_READ_MAX (16u << 20) /* cgroup.procs of a big tree stays far below this */

struct cg_dir {
	char path[PATH_MAX];   /* the sandbox's folder */
	char parent[PATH_MAX]; /* ".../capsule" */
	int parent_fd;
	int fd;
	unsigned ctrls; /* controllers this folder serves (v2: those enabled for it) */
};

struct cgroup_handle {
	char name[NAME_MAX + 1];
	/* The folders the sandbox's goes in, below each hierarchy's base: CG_PARENT, or a
	 * cgroup_create_at path's ("a/b" of "/a/b/name"; "" for the base itself). */
	char parent_rel[PATH_MAX];
	bool v2;
	bool relative; /* parent_rel is below the shim's own cgroup (cgroup.h) */
	bool destroyed;
	bool oom_seen; /* cgroup_oom_killed's answer, saved by cgroup_destroy */
	size_t n;      /* 0: the do-nothing handle */
	struct cg_dir dir[CG_N_CTRL];
};

/* The hierarchies cgroup.c uses: the mounted layout, and whether to use its v2 side. */
struct cg_use {
	bool v2;
	char v2_mount[PATH_MAX];      /* the cgroup2 mount used for v2 */
	char v2_root[PATH_MAX];       /* that mount's root inside the hierarchy (mountinfo field 4) */
	char v1[CG_N_CTRL][PATH_MAX]; /* v1 mount point of each controller, "" when not mounted */
	char self_v2[PATH_MAX];       /* our v2 cgroup from /proc/self/cgroup, "" when unknown */
};

/* A possible v2 base folder and what it can give its children. */
struct v2_cand {
	char path[PATH_MAX];
	bool writable;
	bool has_procs;
	unsigned avail;   /* cgroup.controllers */
	unsigned enabled; /* cgroup.subtree_control */
	unsigned usable;  /* enabled, or can be enabled by us */
};

/* snprintf that may truncate on purpose (paths are bounded by PATH_MAX, messages by their
 * buffers). */
static inline _printf_(3, 4) void fmt_into(char *buf, size_t n, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = vsnprintf(buf, n, fmt, ap);
	va_end(ap);
	(void)r;
}

static inline void path_join(char *buf, size_t n, const char *a, const char *b)
{
	size_t la = strlen(a);
	if (la > 0 && a[la - 1] == '/')
		fmt_into(buf, n, "%s%s", a, b);
	else
		fmt_into(buf, n, "%s/%s", a, b);
}

static inline void copy_str(char *dst, size_t n, const char *src)
{
	fmt_into(dst, n, "%s", src);
}

static inline int open_dir_at(int dfd, const char *name)
{
	return openat(dfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
}

static inline bool exists_at(int dfd, const char *file)
{
	return faccessat(dfd, file, F_OK, 0) == 0;
}

static inline bool name_valid(const char *name)
{
	return name && name[0] && strcmp(name, ".") != 0 && strcmp(name, "..") != 0 && !strchr(name, '/') &&
	       strlen(name) <= NAME_MAX;
}

/* Write VAL to DFD/FILE, as cgroup files want it: whole. DPATH names DFD in messages. */
int cg_write_at(int dfd, const char *dpath, const char *file, const char *val, capsule_error *err);
/* Our controllers listed in DFD/FILE (cgroup.controllers, cgroup.subtree_control); 0 when
 * it cannot be read. */
unsigned cg_read_ctrls_at(int dfd, const char *file);

/* cgroup.c: the hierarchies of this host, and where a sandbox's cgroup can go. */
int cg_use_detect(struct cg_use **out, capsule_error *err);
/* Can this user use controller C on v1? If not, say why in WHY. */
bool cg_v1_usable(const struct cg_use *l, int c, char *why, size_t n);
/* The places a v2 sandbox cgroup may go, in order of preference: the mount's root, then the
 * caller's own cgroup and its ancestors, closest first. Returns how many (>= 1), or -ENOMEM. */
int cg_v2_candidates(const struct cg_use *l, struct v2_cand **out);
/* First writable candidate that can give all of NEEDED; NULL if none. */
const struct v2_cand *cg_v2_pick(const struct v2_cand *v, int n, unsigned needed);
/* Writable candidate with the most usable controllers (first on ties); NULL if none writable. */
const struct v2_cand *cg_v2_best(const struct v2_cand *v, int n);
/* Why controller C is not available on v2, given the best candidate (NULL: none writable). */
void cg_v2_why(const struct cg_use *l, const struct v2_cand *best, int c, char *why, size_t n);
void cg_dir_close(struct cg_dir *d);
/* This process's cgroup in the v1 hierarchy of controller C, from /proc/self/cgroup, without
 * its leading '/' ("" for the root); false when it is not found. */
bool cg_own_v1(int c, char *out, size_t n);

/* cgroup_remove.c, which creation needs for a leftover of the same name. */
struct pidvec {
	pid_t *v;
	size_t n, cap;
};
/* The processes in DFD's cgroup and its sub-cgroups (a vanished folder counts as empty). */
int cg_collect_pids(int dfd, struct pidvec *pv, int depth);
void cg_pids_sort(struct pidvec *pv);
/* Whether PID is in SORTED (cg_pids_sort). */
bool cg_pids_has(const struct pidvec *sorted, pid_t pid);
/* rmdir PARENT_FD/NAME and the sub-cgroups below it, retrying EBUSY for about a second. A
 * folder that is already gone is fine. */
int cg_remove_tree(int parent_fd, const char *parent_path, const char *name, int depth, capsule_error *err);

#endif
