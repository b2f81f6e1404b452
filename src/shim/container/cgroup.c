/* Where a sandbox's cgroup can go on this host, as this user: the hierarchies in use (from
 * cgroup_layout.c's reading of mountinfo, and statfs), whether v1 controllers can be written,
 * which v2 cgroup can hand out the controllers asked for. Then the probe and the handle's
 * accessors. See cgroup.h and cgroup_internal.h. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "cgroup_internal.h"

#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif
#ifndef CGROUP_SUPER_MAGIC
#define CGROUP_SUPER_MAGIC 0x27e0eb
#endif
#define CG_MAX_CANDIDATES 64 /* v2 bases: the mount root and the caller's cgroup chain */

int cg_write_at(int dfd, const char *dpath, const char *file, const char *val, capsule_error *err)
{
	_cleanup_close_ int fd = openat(dfd, file, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return cap_err(err, errno, "open '%s/%s'", dpath, file);
	int r = write_all(fd, val, strlen(val));
	if (r < 0)
		return cap_err(err, -r, "write '%s/%s'", dpath, file);
	return 0;
}

unsigned cg_read_ctrls_at(int dfd, const char *file)
{
	_cleanup_free_ char *s = NULL;
	if (read_file_at(dfd, file, CG_READ_MAX, &s, NULL) < 0)
		return 0;
	return cg_parse_ctrls(s);
}

static unsigned read_ctrls_path(const char *dir, const char *file)
{
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return 0;
	unsigned m = cg_read_ctrls_at(dfd, file);
	close(dfd);
	return m;
}

/* Read a /proc file whole; NULL when it cannot be (no /proc). */
static char *read_proc(const char *path)
{
	char *text = NULL;
	return read_file_at(AT_FDCWD, path, CG_READ_MAX, &text, NULL) == 0 ? text : NULL;
}

bool cg_own_v1(int c, char *out, size_t n)
{
	_cleanup_free_ char *text = read_proc("/proc/self/cgroup");
	for (char *save = NULL, *line = text ? strtok_r(text, "\n", &save) : NULL; line;
	     line = strtok_r(NULL, "\n", &save)) {
		char *ctrls = strchr(line, ':'), *path = ctrls ? strchr(ctrls + 1, ':') : NULL;
		if (!path || path[1] != '/')
			continue;
		*path = 0;
		if (cg_parse_ctrls(ctrls + 1) & CG_BIT(c)) {
			copy_str(out, n, path + 2);
			return true;
		}
	}
	return false;
}

int cg_use_detect(struct cg_use **out, capsule_error *err)
{
	*out = NULL;
	_cleanup_free_ struct cg_use *l = calloc(1, sizeof(*l));
	_cleanup_free_ struct cgroup_layout *found = calloc(1, sizeof(*found));
	if (!l || !found)
		return cap_err(err, ENOMEM, "cgroup layout");
	_cleanup_free_ char *mountinfo = read_proc("/proc/self/mountinfo");
	_cleanup_free_ char *self = read_proc("/proc/self/cgroup");
	bool have_mi = mountinfo != NULL;
	if (have_mi) {
		int r = cgroup_layout_parse(found, CG_SYS_ROOT, mountinfo, self, err);
		if (r < 0)
			return r;
		for (int c = 0; c < CG_N_CTRL; c++)
			copy_str(l->v1[c], PATH_MAX, found->v1[c]);
		copy_str(l->self_v2, sizeof(l->self_v2), found->self_v2);
	}
	char *v2_mp = found->v2_mount, *v2_root = found->v2_root;

	/* statfs, not the layout's mode: it is what the path is now, with or without /proc. */
	struct statfs sf;
	if (statfs(CG_SYS_ROOT, &sf) == 0 && (unsigned long)sf.f_type == CGROUP2_SUPER_MAGIC) {
		/* Pure v2. */
		l->v2 = true;
		copy_str(l->v2_mount, sizeof(l->v2_mount), CG_SYS_ROOT);
		bool same = have_mi && strcmp(v2_mp, CG_SYS_ROOT) == 0;
		copy_str(l->v2_root, sizeof(l->v2_root), same && v2_root[0] ? v2_root : "/");
		for (int c = 0; c < CG_N_CTRL; c++)
			l->v1[c][0] = '\0';
	} else {
		if (!have_mi) {
			/* No /proc: look at the usual places. */
			for (int c = 0; c < CG_N_CTRL; c++) {
				char p[PATH_MAX];
				path_join(p, sizeof(p), CG_SYS_ROOT, cg_ctrl_name[c]);
				if (statfs(p, &sf) == 0 && (unsigned long)sf.f_type == CGROUP_SUPER_MAGIC)
					copy_str(l->v1[c], PATH_MAX, p);
			}
			char p[PATH_MAX];
			path_join(p, sizeof(p), CG_SYS_ROOT, "unified");
			if (statfs(p, &sf) == 0 && (unsigned long)sf.f_type == CGROUP2_SUPER_MAGIC) {
				copy_str(v2_mp, PATH_MAX, p);
				copy_str(v2_root, PATH_MAX, "/");
			}
		}
		bool any_v1 = false;
		for (int c = 0; c < CG_N_CTRL; c++)
			any_v1 |= l->v1[c][0] != '\0';
		/* Hybrid with the controllers on the unified side: use v2 there. */
		if (!any_v1 && v2_mp[0] && read_ctrls_path(v2_mp, "cgroup.controllers") != 0) {
			l->v2 = true;
			copy_str(l->v2_mount, sizeof(l->v2_mount), v2_mp);
			copy_str(l->v2_root, sizeof(l->v2_root), v2_root[0] ? v2_root : "/");
		}
	}
	*out = steal_ptr(l);
	return 0;
}

/* ---- cgroup v1: availability --------------------------------------------------------- */

/* Can this user use controller C on v1? If not, say why in WHY. */
bool cg_v1_usable(const struct cg_use *l, int c, char *why, size_t n)
{
	const char *mp = l->v1[c];
	if (!mp[0]) {
		fmt_into(why, n, "no cgroup v1 hierarchy with the %s controller is mounted", cg_ctrl_name[c]);
		return false;
	}
	int dfd = open(mp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0) {
		fmt_into(why, n, "open '%s': %s", mp, strerror(errno));
		return false;
	}
	const char *needed_file = c == CG_MEMORY ? "memory.limit_in_bytes" : c == CG_CPU ? "cpu.cfs_quota_us" : NULL;
	if (needed_file && !exists_at(dfd, needed_file)) {
		fmt_into(why, n, "'%s/%s' is missing (kernel built without %s)", mp, needed_file,
			 c == CG_CPU ? "CONFIG_CFS_BANDWIDTH" : "memory limits");
		close(dfd);
		return false;
	}
	const char *target = exists_at(dfd, CG_PARENT) ? CG_PARENT : ".";
	bool ok = faccessat(dfd, target, W_OK, AT_EACCESS) == 0;
	if (!ok)
		fmt_into(why, n, "no write access to '%s%s%s' (cgroup v1 limits need root): %s", mp,
			 target[0] == '.' ? "" : "/", target[0] == '.' ? "" : target, strerror(errno));
	close(dfd);
	return ok;
}

/* ---- cgroup v2: where to put the sandbox ------------------------------------------------- */

static void v2_eval(struct v2_cand *c)
{
	c->writable = false;
	c->has_procs = false;
	c->avail = c->enabled = c->usable = 0;
	int dfd = open(c->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return;
	c->writable = faccessat(dfd, ".", W_OK, AT_EACCESS) == 0 &&
		      faccessat(dfd, "cgroup.procs", W_OK, AT_EACCESS) == 0 &&
		      faccessat(dfd, "cgroup.subtree_control", W_OK, AT_EACCESS) == 0;
	c->avail = cg_read_ctrls_at(dfd, "cgroup.controllers");
	c->enabled = cg_read_ctrls_at(dfd, "cgroup.subtree_control") & c->avail;
	/* The real root has no cgroup.type and may have processes and controllers at once. */
	bool real_root = !exists_at(dfd, "cgroup.type");
	char *procs = NULL;
	if (read_file_at(dfd, "cgroup.procs", CG_READ_MAX, &procs, NULL) == 0)
		c->has_procs = procs[strspn(procs, " \n")] != '\0';
	free(procs);
	c->usable = c->enabled;
	if (c->writable && (real_root || !c->has_procs))
		c->usable |= c->avail;
	close(dfd);
}

/* The caller's v2 cgroup, relative to the v2 mount; false when unknown or outside the mount. */
static bool own_v2_cgroup(const struct cg_use *l, char *out, size_t n)
{
	return cgroup_below_root(l->self_v2, l->v2_root, out, n);
}

/* The places a v2 sandbox cgroup may go, in order of preference: the mount's root, then the
 * caller's own cgroup and its ancestors, closest first. Returns how many (>= 1), or -ENOMEM. */
int cg_v2_candidates(const struct cg_use *l, struct v2_cand **out)
{
	struct v2_cand *v = calloc(CG_MAX_CANDIDATES, sizeof(*v));
	if (!v)
		return -ENOMEM;
	int n = 0;
	copy_str(v[n++].path, PATH_MAX, l->v2_mount);
	char rel[PATH_MAX];
	if (own_v2_cgroup(l, rel, sizeof(rel))) {
		char cur[PATH_MAX];
		if (strcmp(rel, "/") == 0)
			copy_str(cur, sizeof(cur), l->v2_mount);
		else if (strcmp(l->v2_mount, "/") == 0)
			copy_str(cur, sizeof(cur), rel);
		else
			fmt_into(cur, sizeof(cur), "%s%s", l->v2_mount, rel);
		size_t mlen = strlen(l->v2_mount);
		while (strlen(cur) > mlen && n < CG_MAX_CANDIDATES) {
			copy_str(v[n++].path, PATH_MAX, cur);
			char *slash = strrchr(cur, '/');
			if (!slash || slash == cur)
				break;
			*slash = '\0';
		}
	}
	for (int i = 0; i < n; i++)
		v2_eval(&v[i]);
	*out = v;
	return n;
}

/* First writable candidate that can give all of NEEDED; NULL if none. */
const struct v2_cand *cg_v2_pick(const struct v2_cand *v, int n, unsigned needed)
{
	for (int i = 0; i < n; i++)
		if (v[i].writable && (v[i].usable & needed) == needed)
			return &v[i];
	return NULL;
}

/* Writable candidate with the most usable controllers (first on ties); NULL if none writable. */
const struct v2_cand *cg_v2_best(const struct v2_cand *v, int n)
{
	const struct v2_cand *best = NULL;
	for (int i = 0; i < n; i++) {
		if (!v[i].writable)
			continue;
		if (!best || __builtin_popcount(v[i].usable) > __builtin_popcount(best->usable))
			best = &v[i];
	}
	return best;
}

/* Why controller C is not available on v2, given the best candidate (NULL: none writable). */
void cg_v2_why(const struct cg_use *l, const struct v2_cand *best, int c, char *why, size_t n)
{
	if (!best)
		fmt_into(why, n,
			 "no write access to '%s' nor to this process's own cgroup (cgroup v2 needs root or a "
			 "delegated cgroup, e.g. systemd-run --user -p Delegate=yes)",
			 l->v2_mount);
	else if (!(best->avail & CG_BIT(c)))
		fmt_into(why, n, "'%s/cgroup.controllers' does not list %s (the parent cgroup does not delegate it)",
			 best->path, cg_ctrl_name[c]);
	else
		fmt_into(why, n,
			 "%s is not enabled in '%s/cgroup.subtree_control' and cannot be, because processes live "
			 "in that cgroup itself",
			 cg_ctrl_name[c], best->path);
}

void cgroup_probe(struct cgroup_support *out)
{
	if (!out)
		return;
	memset(out, 0, sizeof(*out));
	struct cg_use *l;
	capsule_error e = { 0 };
	if (cg_use_detect(&l, &e) < 0) {
		copy_str(out->reason, sizeof(out->reason), e.message);
		return;
	}
	bool ok[CG_N_CTRL] = { false };
	char why[CG_N_CTRL][256] = { { 0 } };
	if (l->v2) {
		out->v2 = true;
		struct v2_cand *cands = NULL;
		int n = cg_v2_candidates(l, &cands);
		if (n < 0) {
			copy_str(out->reason, sizeof(out->reason), "cgroup probe: out of memory");
			free(l);
			return;
		}
		const struct v2_cand *best = cg_v2_best(cands, n);
		for (int c = 0; c < CG_N_CTRL; c++) {
			ok[c] = best && (best->usable & CG_BIT(c));
			if (!ok[c])
				cg_v2_why(l, best, c, why[c], sizeof(why[c]));
		}
		free(cands);
	} else {
		for (int c = 0; c < CG_N_CTRL; c++)
			ok[c] = cg_v1_usable(l, c, why[c], sizeof(why[c]));
	}
	out->memory = ok[CG_MEMORY];
	out->pids = ok[CG_PIDS];
	out->cpu = ok[CG_CPU];
	/* cpuset is no limit of capsule's own: a sandbox without one never misses it. */
	for (int c = 0; c < CG_CPUSET; c++) {
		if (!ok[c]) {
			fmt_into(out->reason, sizeof(out->reason), "%s: %s", cg_ctrl_name[c], why[c]);
			break;
		}
	}
	free(l);
}

void cg_dir_close(struct cg_dir *d)
{
	if (d->fd >= 0)
		close(d->fd);
	if (d->parent_fd >= 0)
		close(d->parent_fd);
	d->fd = d->parent_fd = -1;
}

void cgroup_free(struct cgroup_handle *cg)
{
	if (!cg)
		return;
	for (size_t i = 0; i < cg->n; i++)
		cg_dir_close(&cg->dir[i]);
	free(cg);
}

const char *cgroup_controller_path(const struct cgroup_handle *cg, const char *controller)
{
	if (!cg || !controller)
		return NULL;
	for (int c = 0; c < CG_N_CTRL; c++) {
		if (strcmp(controller, cg_ctrl_name[c]) != 0)
			continue;
		for (size_t i = 0; i < cg->n; i++)
			if (cg->dir[i].ctrls & CG_BIT(c))
				return cg->dir[i].path;
	}
	return NULL;
}

const char *cgroup_memory_path(const struct cgroup_handle *cg)
{
	return cgroup_controller_path(cg, "memory");
}

const char *cgroup_path(const struct cgroup_handle *cg)
{
	if (!cg || cg->n == 0)
		return NULL;
	const char *m = cgroup_memory_path(cg);
	return m ? m : cg->dir[0].path;
}

bool cgroup_active(const struct cgroup_handle *cg)
{
	return cg && cg->n > 0;
}

int cgroup_v2_fd(const struct cgroup_handle *cg)
{
	return cg && cg->v2 && cg->n > 0 ? cg->dir[0].fd : -1;
}
