/* Making a sandbox's cgroup folders (a leftover of the same name swept first) and writing its
 * limits. See cgroup.h. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cgroup_internal.h"

#define CG_CPU_PERIOD_US 100000ULL
#define CG_CPU_MIN_QUOTA_US 1000ULL

/* Open (creating when missing) BASE/capsule into D->parent_fd / D->parent. */
/* Open (making what is missing) REL below BASE as D's parent, one folder at a time. */
static int open_parent(struct cg_dir *d, const char *base, const char *rel, capsule_error *err)
{
	int fd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return cap_err(err, errno, "open '%s'", base);
	path_join(d->parent, sizeof(d->parent), base, rel);
	if (!rel[0])
		snprintf(d->parent, sizeof(d->parent), "%s", base);
	for (const char *p = rel; *p;) {
		const char *slash = strchr(p, '/');
		char part[NAME_MAX + 1];
		snprintf(part, sizeof(part), "%.*s", (int)(slash ? (size_t)(slash - p) : strlen(p)), p);
		p = slash ? slash + 1 : p + strlen(p);
		int next = -1;
		for (int attempt = 0; next < 0; attempt++) {
			if (mkdirat(fd, part, 0755) < 0 && errno != EEXIST)
				break;
			next = open_dir_at(fd, part);
			/* Removed by someone in between: try again a few times. */
			if (next < 0 && (errno != ENOENT || attempt >= 3))
				break;
		}
		int e = errno;
		close(fd);
		if (next < 0)
			return cap_err(err, e, "open '%s'", d->parent);
		fd = next;
	}
	d->parent_fd = fd;
	return 0;
}

/* Create D->parent/NAME, removing an empty leftover of the same name first; open it. */
static int make_sandbox_dir(struct cg_dir *d, const char *name, capsule_error *err)
{
	path_join(d->path, sizeof(d->path), d->parent, name);
	for (int attempt = 0;; attempt++) {
		if (mkdirat(d->parent_fd, name, 0755) == 0)
			break;
		if (errno != EEXIST || attempt >= 3)
			return cap_err(err, errno, "mkdir '%s'", d->path);
		/* A leftover from a shim that was killed. */
		int fd = open_dir_at(d->parent_fd, name);
		if (fd < 0) {
			if (errno == ENOENT)
				continue;
			return cap_err(err, errno, "open '%s'", d->path);
		}
		struct pidvec pv = { 0 };
		int r = cg_collect_pids(fd, &pv, 0);
		size_t np = pv.n;
		free(pv.v);
		close(fd);
		if (r < 0)
			return cap_err(err, -r, "read '%s/cgroup.procs'", d->path);
		if (np > 0)
			return cap_err_plain(err, EBUSY,
					     "cgroup '%s' already exists with %zu process%s in it (is a sandbox "
					     "with this name still running?)",
					     d->path, np, np == 1 ? "" : "es");
		r = cg_remove_tree(d->parent_fd, d->parent, name, 0, err);
		if (r < 0)
			return r;
	}
	d->fd = open_dir_at(d->parent_fd, name);
	if (d->fd < 0) {
		int r = cap_err(err, errno, "open '%s'", d->path);
		unlinkat(d->parent_fd, name, AT_REMOVEDIR);
		return r;
	}
	return 0;
}

static const char *limit_label(int c)
{
	return c == CG_MEMORY ? "memory" : c == CG_PIDS ? "pids" : "cpu";
}

/* "memory limit needs the cgroup memory controller, which is not available: WHY". */
static int unavailable(capsule_error *err, int c, int errnum, const char *why)
{
	return cap_err_plain(err, errnum, "%s limit needs the cgroup %s controller, which is not available: %s",
			     limit_label(c), cg_ctrl_name[c], why);
}

static unsigned needed_ctrls(const struct cgroup_limits *lim)
{
	unsigned m = 0;
	if (lim && lim->memory_bytes)
		m |= CG_BIT(CG_MEMORY);
	if (lim && lim->pids_max)
		m |= CG_BIT(CG_PIDS);
	if (lim && (lim->cpus_milli || lim->cpu_shares))
		m |= CG_BIT(CG_CPU);
	return m;
}

static unsigned long long cpu_quota_us(uint32_t milli)
{
	unsigned long long q = (unsigned long long)milli * (CG_CPU_PERIOD_US / 1000ULL);
	return q < CG_CPU_MIN_QUOTA_US ? CG_CPU_MIN_QUOTA_US : q;
}

static int apply_limits(struct cgroup_handle *h, const struct cgroup_limits *lim, capsule_error *err)
{
	char val[64];
	for (size_t i = 0; i < h->n; i++) {
		struct cg_dir *d = &h->dir[i];
		int r;
		if ((d->ctrls & CG_BIT(CG_MEMORY)) && lim->memory_bytes) {
			fmt_into(val, sizeof(val), "%llu", (unsigned long long)lim->memory_bytes);
			if (h->v2) {
				if ((r = cg_write_at(d->fd, d->path, "memory.max", val, err)) < 0)
					return r;
				if (exists_at(d->fd, "memory.swap.max") &&
				    (r = cg_write_at(d->fd, d->path, "memory.swap.max", "0", err)) < 0)
					return r;
			} else {
				if ((r = cg_write_at(d->fd, d->path, "memory.limit_in_bytes", val, err)) < 0)
					return r;
				if (exists_at(d->fd, "memory.memsw.limit_in_bytes") &&
				    (r = cg_write_at(d->fd, d->path, "memory.memsw.limit_in_bytes", val, err)) < 0)
					return r;
			}
		}
		if ((d->ctrls & CG_BIT(CG_PIDS)) && lim->pids_max) {
			fmt_into(val, sizeof(val), "%u", lim->pids_max);
			if ((r = cg_write_at(d->fd, d->path, "pids.max", val, err)) < 0)
				return r;
		}
		if ((d->ctrls & CG_BIT(CG_CPU)) && lim->cpus_milli) {
			unsigned long long q = cpu_quota_us(lim->cpus_milli);
			if (h->v2) {
				fmt_into(val, sizeof(val), "%llu %llu", q, CG_CPU_PERIOD_US);
				if ((r = cg_write_at(d->fd, d->path, "cpu.max", val, err)) < 0)
					return r;
			} else {
				fmt_into(val, sizeof(val), "%llu", CG_CPU_PERIOD_US);
				if ((r = cg_write_at(d->fd, d->path, "cpu.cfs_period_us", val, err)) < 0)
					return r;
				fmt_into(val, sizeof(val), "%llu", q);
				if ((r = cg_write_at(d->fd, d->path, "cpu.cfs_quota_us", val, err)) < 0)
					return r;
			}
		}
		if ((d->ctrls & CG_BIT(CG_CPU)) && lim->cpu_shares) {
			/* runc's mapping of shares (2..262144) onto v2's weight (1..10000). */
			fmt_into(val, sizeof(val), "%u",
				 h->v2 ? 1u + (unsigned)(((uint64_t)lim->cpu_shares - 2) * 9999 / 262142) : lim->cpu_shares);
			if ((r = cg_write_at(d->fd, d->path, h->v2 ? "cpu.weight" : "cpu.shares", val, err)) < 0)
				return r;
		}
	}
	return 0;
}

/* Undo a half-made handle: remove the folders we made (nothing is in them yet). */
static void rollback(struct cgroup_handle *h)
{
	for (size_t i = 0; i < h->n; i++) {
		struct cg_dir *d = &h->dir[i];
		if (d->parent_fd >= 0 && d->fd >= 0)
			cg_remove_tree(d->parent_fd, d->parent, h->name, 0, NULL);
		cg_dir_close(d);
	}
	h->n = 0;
}

static bool is_permission_error(int r)
{
	return r == -EACCES || r == -EPERM || r == -EROFS;
}

static int create_v1(struct cgroup_handle *h, const struct cg_use *l, unsigned needed, capsule_error *err)
{
	for (int c = 0; c < CG_N_CTRL; c++) {
		bool need = needed & CG_BIT(c);
		char why[256];
		if (!cg_v1_usable(l, c, why, sizeof(why))) {
			if (need)
				return unavailable(err, c, EOPNOTSUPP, why);
			continue;
		}
		/* Co-mounted with one we already have (e.g. cpu,cpuacct)? */
		char parent[PATH_MAX];
		path_join(parent, sizeof(parent), l->v1[c], h->parent_rel);
		if (!h->parent_rel[0])
			snprintf(parent, sizeof(parent), "%s", l->v1[c]);
		bool shared = false;
		for (size_t i = 0; i < h->n && !shared; i++) {
			if (strcmp(h->dir[i].parent, parent) == 0) {
				h->dir[i].ctrls |= CG_BIT(c);
				shared = true;
			}
		}
		if (shared)
			continue;
		struct cg_dir *d = &h->dir[h->n];
		d->fd = d->parent_fd = -1;
		capsule_error e = { 0 };
		int r = open_parent(d, l->v1[c], h->parent_rel, &e);
		if (r >= 0)
			r = make_sandbox_dir(d, h->name, &e);
		if (r < 0) {
			cg_dir_close(d);
			if (r == -EBUSY || (need && !is_permission_error(r)))
				return cap_err_plain(err, -r, "%s", e.message);
			if (need)
				return unavailable(err, c, -r, e.message);
			continue; /* best effort for a controller no limit needs */
		}
		d->ctrls = CG_BIT(c);
		h->n++;
	}
	return 0;
}

/* Enable MASK in DFD's cgroup.subtree_control (those not on yet), one controller at a time.
 * Controllers in NEEDED must succeed; others are dropped from *MASK when they fail. */
static int v2_enable(int dfd, const char *path, unsigned *mask, unsigned needed, capsule_error *err)
{
	unsigned on = cg_read_ctrls_at(dfd, "cgroup.subtree_control");
	for (int c = 0; c < CG_N_CTRL; c++) {
		if (!(*mask & CG_BIT(c)) || (on & CG_BIT(c)))
			continue;
		char val[32];
		fmt_into(val, sizeof(val), "+%s", cg_ctrl_name[c]);
		capsule_error e = { 0 };
		int r = cg_write_at(dfd, path, "cgroup.subtree_control", val, &e);
		if (r < 0) {
			if (needed & CG_BIT(c))
				return unavailable(err, c, -r, e.message);
			*mask &= ~CG_BIT(c);
		}
	}
	return 0;
}

static int create_v2(struct cgroup_handle *h, const struct cg_use *l, unsigned needed, capsule_error *err)
{
	struct v2_cand *cands = NULL;
	int n = cg_v2_candidates(l, &cands);
	if (n < 0)
		return cap_err(err, -n, "cgroup v2");
	int r = 0;
	const struct v2_cand *base = cg_v2_pick(cands, n, needed);
	if (!base) {
		/* Only reached with needed != 0 or nothing writable. */
		if (!needed)
			goto out; /* the do-nothing handle */
		const struct v2_cand *best = cg_v2_best(cands, n);
		int c = 0;
		unsigned missing = needed & ~(best ? best->usable : 0);
		while (c < CG_N_CTRL && !(missing & CG_BIT(c)))
			c++;
		char why[512];
		cg_v2_why(l, best, c, why, sizeof(why));
		r = unavailable(err, c, best ? EOPNOTSUPP : EACCES, why);
		goto out;
	}

	unsigned mask = base->usable; /* ⊇ needed */
	int bfd = open(base->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (bfd < 0) {
		r = cap_err(err, errno, "open '%s'", base->path);
		goto out;
	}
	r = v2_enable(bfd, base->path, &mask, needed, err);
	close(bfd);
	if (r < 0)
		goto out;

	struct cg_dir *d = &h->dir[0];
	d->fd = d->parent_fd = -1;
	capsule_error e = { 0 };
	r = open_parent(d, base->path, h->parent_rel, &e);
	if (r >= 0)
		r = v2_enable(d->parent_fd, d->parent, &mask, needed, &e);
	if (r >= 0)
		r = make_sandbox_dir(d, h->name, &e);
	if (r < 0) {
		cg_dir_close(d);
		/* Limit-free and not permitted here: fall back to the do-nothing handle. */
		if (!needed && is_permission_error(r))
			r = 0;
		else
			r = cap_err_plain(err, -r, "%s", e.message);
		goto out;
	}
	d->ctrls = mask;
	h->n = 1;
out:
	free(cands);
	return r;
}

static int create_in(struct cgroup_handle **out, const char *parent_rel, const char *name,
		     const struct cgroup_limits *lim, capsule_error *err);

int cgroup_create(struct cgroup_handle **out, const char *name, const struct cgroup_limits *lim,
		  capsule_error *err)
{
	if (!out)
		return cap_err_plain(err, EINVAL, "cgroup_create: no output handle");
	*out = NULL;
	if (!name_valid(name))
		return cap_err_plain(err, EINVAL, "invalid cgroup name '%s': must be one path component",
				     name ? name : "(null)");
	return create_in(out, CG_PARENT, name, lim, err);
}

int cgroup_create_at(struct cgroup_handle **out, const char *path, const struct cgroup_limits *lim,
		     capsule_error *err)
{
	if (!out)
		return cap_err_plain(err, EINVAL, "cgroup_create_at: no output handle");
	*out = NULL;
	char rel[PATH_MAX];
	if (!path || path[0] != '/' || snprintf(rel, sizeof(rel), "%s", path + 1) >= (int)sizeof(rel))
		return cap_err_plain(err, EINVAL, "cgroup path '%s' is not absolute", path ? path : "(null)");
	for (char *p = rel; *p;) {
		char *slash = strchr(p, '/');
		if (slash)
			*slash = 0;
		bool ok = name_valid(p);
		if (slash)
			*slash = '/';
		if (!ok)
			return cap_err_plain(err, EINVAL, "cgroup path '%s': empty, '.' or '..' component", path);
		p = slash ? slash + 1 : p + strlen(p);
	}
	char *last = strrchr(rel, '/');
	const char *name = last ? last + 1 : rel;
	if (last)
		*last = 0;
	return create_in(out, last ? rel : "", name, lim, err);
}

static int create_in(struct cgroup_handle **out, const char *parent_rel, const char *name,
		     const struct cgroup_limits *lim, capsule_error *err)
{
	static const struct cgroup_limits none = { 0 };
	if (!lim)
		lim = &none;
	unsigned needed = needed_ctrls(lim);

	struct cgroup_handle *h = calloc(1, sizeof(*h));
	if (!h)
		return cap_err(err, ENOMEM, "cgroup '%s'", name);
	copy_str(h->name, sizeof(h->name), name);
	copy_str(h->parent_rel, sizeof(h->parent_rel), parent_rel);
	for (int c = 0; c < CG_N_CTRL; c++)
		h->dir[c].fd = h->dir[c].parent_fd = -1;
	struct cg_use *l;
	int r = cg_use_detect(&l, err);
	if (r < 0) {
		free(h);
		return r;
	}
	h->v2 = l->v2;
	r = h->v2 ? create_v2(h, l, needed, err) : create_v1(h, l, needed, err);
	free(l);
	if (r >= 0)
		r = apply_limits(h, lim, err);
	if (r < 0) {
		rollback(h);
		free(h);
		return r;
	}
	*out = h;
	return 0;
}

int cgroup_add_pid(struct cgroup_handle *cg, pid_t pid, capsule_error *err)
{
	if (!cg)
		return cap_err_plain(err, EINVAL, "cgroup_add_pid: no cgroup");
	if (pid <= 0)
		return cap_err_plain(err, EINVAL, "cgroup_add_pid: invalid pid %d", (int)pid);
	if (cg->destroyed)
		return cap_err_plain(err, ENOENT, "cgroup for '%s' was destroyed", cg->name);
	char val[32];
	fmt_into(val, sizeof(val), "%d", (int)pid);
	for (size_t i = 0; i < cg->n; i++) {
		int r = cg_write_at(cg->dir[i].fd, cg->dir[i].path, "cgroup.procs", val, err);
		if (r < 0)
			return r;
	}
	return 0;
}

int cgroup_open_self_join(const struct cgroup_handle *cg, int fds[CGROUP_MAX_DIRS], capsule_error *err)
{
	_Static_assert(CGROUP_MAX_DIRS == CG_N_CTRL, "a v1 handle has a folder per controller at most");
	if (!cg || cg->v2 || cg->destroyed)
		return 0;
	for (size_t i = 0; i < cg->n; i++) {
		fds[i] = openat(cg->dir[i].fd, "tasks", O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
		if (fds[i] < 0) {
			int r = cap_err(err, errno, "open '%s/tasks'", cg->dir[i].path);
			while (i > 0)
				close(fds[--i]);
			return r;
		}
	}
	return (int)cg->n;
}
