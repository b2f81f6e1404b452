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

static int v2_enable(int dfd, const char *path, unsigned *mask, unsigned needed, capsule_error *err);

/* Open (making what is missing) REL below BASE as D's parent, one folder at a time. With MASK
 * (cgroup v2), each level's subtree_control is given MASK on the way down, base included, so
 * that the sandbox's folder can have them (NEEDED must succeed: v2_enable). */
static int open_parent(struct cg_dir *d, const char *base, const char *rel, unsigned *mask, unsigned needed,
		       capsule_error *err)
{
	int fd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return cap_err(err, errno, "open '%s'", base);
	copy_str(d->parent, sizeof(d->parent), base);
	for (const char *p = rel;; ) {
		int r = mask ? v2_enable(fd, d->parent, mask, needed, err) : 0;
		if (r < 0) {
			close(fd);
			return r;
		}
		if (!*p)
			break;
		const char *slash = strchr(p, '/');
		char part[NAME_MAX + 1];
		snprintf(part, sizeof(part), "%.*s", (int)(slash ? (size_t)(slash - p) : strlen(p)), p);
		p = slash ? slash + 1 : p + strlen(p);
		char next_path[PATH_MAX];
		path_join(next_path, sizeof(next_path), d->parent, part);
		copy_str(d->parent, sizeof(d->parent), next_path);
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
	return c == CG_MEMORY ? "memory" : c == CG_PIDS ? "pids" : c == CG_CPUSET ? "cpuset" : "cpu";
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
	const struct cgroup_extra *x = lim ? lim->x : NULL;
	if (lim && lim->memory_bytes)
		m |= CG_BIT(CG_MEMORY);
	if (lim && lim->pids_max)
		m |= CG_BIT(CG_PIDS);
	if (lim && (lim->cpus_milli || lim->cpu_shares))
		m |= CG_BIT(CG_CPU);
	if (x && (x->memory_swap || x->memory_reservation || x->memory_swappiness_set || x->oom_kill_disable ||
		  x->memory_kernel_tcp))
		m |= CG_BIT(CG_MEMORY);
	if (x && (x->cpu_quota_us || x->cpu_period_us || x->cpu_burst_us || x->cpu_rt_runtime_us ||
		  x->cpu_rt_period_us || x->cpu_idle))
		m |= CG_BIT(CG_CPU);
	if (x && (x->cpuset_cpus || x->cpuset_mems))
		m |= CG_BIT(CG_CPUSET);
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
				if (!(lim->x && lim->x->memory_swap) && exists_at(d->fd, "memory.swap.max") &&
				    (r = cg_write_at(d->fd, d->path, "memory.swap.max", "0", err)) < 0)
					return r;
			} else {
				if ((r = cg_write_at(d->fd, d->path, "memory.limit_in_bytes", val, err)) < 0)
					return r;
				if (!(lim->x && lim->x->memory_swap) && exists_at(d->fd, "memory.memsw.limit_in_bytes") &&
				    (r = cg_write_at(d->fd, d->path, "memory.memsw.limit_in_bytes", val, err)) < 0)
					return r;
			}
		}
		if ((d->ctrls & CG_BIT(CG_PIDS)) && lim->pids_max) {
			fmt_into(val, sizeof(val), "%u", lim->pids_max);
			if ((r = cg_write_at(d->fd, d->path, "pids.max", val, err)) < 0)
				return r;
		}
		if ((d->ctrls & CG_BIT(CG_CPU)) && lim->cpus_milli && !(lim->x && lim->x->cpu_quota_us)) {
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

/* FILE of D given VAL for the spec's FIELD: the kernel's refusal names the field. */
static int write_field(const struct cg_dir *d, const char *file, const char *val, const char *field, capsule_error *err)
{
	capsule_error e = { 0 };
	int r = cg_write_at(d->fd, d->path, file, val, &e);
	return r < 0 ? cap_err_plain(err, -r, "%s %s: %s", field, val, e.message) : 0;
}

static int no_file(const struct cg_dir *d, bool v2, const char *file, const char *field, capsule_error *err)
{
	if (v2)
		return cap_err_plain(err, EOPNOTSUPP, "%s is not supported on cgroup v2, which has no %s", field, file);
	return cap_err_plain(err, EOPNOTSUPP, "%s is not supported by this kernel: '%s/%s' is missing", field, d->path, file);
}

/* FILE of D, whose absence means the kernel cannot take FIELD. */
static int write_known(const struct cg_dir *d, bool v2, const char *file, const char *val, const char *field,
		       capsule_error *err)
{
	return exists_at(d->fd, file) ? write_field(d, file, val, field, err) : no_file(d, v2, file, field, err);
}

static void u64_text(char *val, size_t n, uint64_t v)
{
	if (v == UINT64_MAX)
		fmt_into(val, n, "-1");
	else
		fmt_into(val, n, "%llu", (unsigned long long)v);
}

static int apply_memory_extra(const struct cg_dir *d, bool v2, const struct cgroup_limits *lim, capsule_error *err)
{
	const struct cgroup_extra *x = lim->x;
	char val[64];
	int r = 0;
	if (x->memory_swap) {
		if (v2) {
			/* memory.swap.max is the swap alone: what the spec's memory + swap leaves. */
			if (x->memory_swap == UINT64_MAX)
				fmt_into(val, sizeof(val), "max");
			else
				fmt_into(val, sizeof(val), "%llu", (unsigned long long)(x->memory_swap - lim->memory_bytes));
			r = write_known(d, v2, "memory.swap.max", val, "linux.resources.memory.swap", err);
		} else {
			u64_text(val, sizeof(val), x->memory_swap);
			r = write_known(d, v2, "memory.memsw.limit_in_bytes", val, "linux.resources.memory.swap", err);
		}
		if (r < 0)
			return r;
	}
	if (x->memory_reservation) {
		u64_text(val, sizeof(val), x->memory_reservation);
		if ((r = write_known(d, v2, v2 ? "memory.low" : "memory.soft_limit_in_bytes", val,
				     "linux.resources.memory.reservation", err)) < 0)
			return r;
	}
	if (x->memory_swappiness_set) {
		fmt_into(val, sizeof(val), "%u", x->memory_swappiness);
		if (v2)
			return no_file(d, v2, "memory.swappiness", "linux.resources.memory.swappiness", err);
		if ((r = write_known(d, v2, "memory.swappiness", val, "linux.resources.memory.swappiness", err)) < 0)
			return r;
	}
	if (x->oom_kill_disable) {
		if (v2)
			return no_file(d, v2, "memory.oom_control", "linux.resources.memory.disableOOMKiller", err);
		if ((r = write_known(d, v2, "memory.oom_control", "1", "linux.resources.memory.disableOOMKiller", err)) < 0)
			return r;
	}
	if (x->memory_kernel_tcp) {
		u64_text(val, sizeof(val), x->memory_kernel_tcp);
		if (v2)
			return no_file(d, v2, "memory.kmem.tcp.limit_in_bytes", "linux.resources.memory.kernelTCP", err);
		r = write_known(d, v2, "memory.kmem.tcp.limit_in_bytes", val, "linux.resources.memory.kernelTCP", err);
	}
	return r;
}

static int apply_cpu_extra(const struct cg_dir *d, bool v2, const struct cgroup_extra *x, capsule_error *err)
{
	char val[64];
	int r = 0;
	if (x->cpu_quota_us || x->cpu_period_us) {
		unsigned long long period = x->cpu_period_us ? x->cpu_period_us : CG_CPU_PERIOD_US;
		if (v2) {
			if (x->cpu_quota_us)
				fmt_into(val, sizeof(val), "%llu %llu", (unsigned long long)x->cpu_quota_us, period);
			else
				fmt_into(val, sizeof(val), "max %llu", period);
			r = write_field(d, "cpu.max", val, "linux.resources.cpu.quota/period", err);
		} else {
			fmt_into(val, sizeof(val), "%llu", period);
			r = write_field(d, "cpu.cfs_period_us", val, "linux.resources.cpu.period", err);
			if (r == 0 && x->cpu_quota_us) {
				fmt_into(val, sizeof(val), "%llu", (unsigned long long)x->cpu_quota_us);
				r = write_field(d, "cpu.cfs_quota_us", val, "linux.resources.cpu.quota", err);
			}
		}
		if (r < 0)
			return r;
	}
	if (x->cpu_burst_us) {
		fmt_into(val, sizeof(val), "%llu", (unsigned long long)x->cpu_burst_us);
		if ((r = write_known(d, v2, v2 ? "cpu.max.burst" : "cpu.cfs_burst_us", val, "linux.resources.cpu.burst",
				     err)) < 0)
			return r;
	}
	/* runc's order: the period, then the runtime within it. */
	if (x->cpu_rt_period_us) {
		fmt_into(val, sizeof(val), "%llu", (unsigned long long)x->cpu_rt_period_us);
		if ((r = write_known(d, v2, "cpu.rt_period_us", val, "linux.resources.cpu.realtimePeriod", err)) < 0)
			return r;
	}
	if (x->cpu_rt_runtime_us) {
		u64_text(val, sizeof(val), x->cpu_rt_runtime_us);
		if ((r = write_known(d, v2, "cpu.rt_runtime_us", val, "linux.resources.cpu.realtimeRuntime", err)) < 0)
			return r;
	}
	if (x->cpu_idle)
		r = write_known(d, v2, "cpu.idle", "1", "linux.resources.cpu.idle", err);
	return r;
}

/* cgroup v1 makes a cpuset cgroup with no cpus and no mems, and no task can join it so: each
 * folder from the hierarchy's root down to D's that has none gets its parent's. */
static int cpuset_fill(const char *mount, const char *rel, capsule_error *err)
{
	_cleanup_close_ int fd = open(mount, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return cap_err(err, errno, "open '%s'", mount);
	char path[PATH_MAX];
	copy_str(path, sizeof(path), mount);
	for (const char *p = rel; *p;) {
		size_t l = strcspn(p, "/");
		char part[NAME_MAX + 1];
		snprintf(part, sizeof(part), "%.*s", (int)l, p);
		p += l + (p[l] == '/');
		int child = open_dir_at(fd, part);
		if (child < 0)
			return cap_err(err, errno, "open '%s/%s'", path, part);
		char child_path[PATH_MAX];
		path_join(child_path, sizeof(child_path), path, part);
		static const char *const files[] = { "cpuset.cpus", "cpuset.mems" };
		for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
			_cleanup_free_ char *mine = NULL, *theirs = NULL;
			if (read_file_at(child, files[i], CG_READ_MAX, &mine, NULL) < 0) {
				int r = cap_err(err, errno, "read '%s/%s'", child_path, files[i]);
				close(child);
				return r;
			}
			if (mine[strspn(mine, " \n")])
				continue;
			int r = read_file_at(fd, files[i], CG_READ_MAX, &theirs, NULL) < 0
					? cap_err(err, errno, "read '%s/%s'", path, files[i])
					: cg_write_at(child, child_path, files[i], theirs, err);
			if (r < 0) {
				close(child);
				return r;
			}
		}
		close(fd);
		fd = child;
		copy_str(path, sizeof(path), child_path);
	}
	return 0;
}

static int apply_cpuset(const struct cgroup_handle *h, const struct cg_dir *d, const struct cgroup_extra *x,
			capsule_error *err)
{
	int r;
	if (!h->v2) {
		/* D's path is the hierarchy's mount point, then the folders down to D's. */
		struct cg_use *l;
		if ((r = cg_use_detect(&l, err)) < 0)
			return r;
		const char *mount = l->v1[CG_CPUSET];
		size_t ml = strlen(mount);
		r = strncmp(d->path, mount, ml) || d->path[ml] != '/'
			    ? cap_err_plain(err, EINVAL, "'%s' is not below the cpuset hierarchy '%s'", d->path, mount)
			    : cpuset_fill(mount, d->path + ml + 1, err);
		free(l);
		if (r < 0)
			return r;
	}
	/* mems before cpus would do as well: each is checked against the parent's alone. */
	if (x->cpuset_cpus && (r = write_field(d, "cpuset.cpus", x->cpuset_cpus, "linux.resources.cpu.cpus", err)) < 0)
		return r;
	if (x->cpuset_mems && (r = write_field(d, "cpuset.mems", x->cpuset_mems, "linux.resources.cpu.mems", err)) < 0)
		return r;
	return 0;
}

static int apply_extra(const struct cgroup_handle *h, const struct cgroup_limits *lim, capsule_error *err)
{
	if (!lim->x)
		return 0;
	for (size_t i = 0; i < h->n; i++) {
		const struct cg_dir *d = &h->dir[i];
		int r = 0;
		if (d->ctrls & CG_BIT(CG_MEMORY))
			r = apply_memory_extra(d, h->v2, lim, err);
		if (r == 0 && (d->ctrls & CG_BIT(CG_CPU)))
			r = apply_cpu_extra(d, h->v2, lim->x, err);
		if (r == 0 && (d->ctrls & CG_BIT(CG_CPUSET)) && (lim->x->cpuset_cpus || lim->x->cpuset_mems))
			r = apply_cpuset(h, d, lim->x, err);
		if (r < 0)
			return r;
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

/* Open (making it) the sandbox's folder in controller C's v1 hierarchy as H's next, or add C
 * to a folder H has already when C is co-mounted with its controller (e.g. cpu,cpuacct).
 * NEED: a limit needs C, so its absence is an error rather than skipped. */
static int open_v1_dir(struct cgroup_handle *h, const struct cg_use *l, int c, bool need, capsule_error *err)
{
	char why[256];
	if (!cg_v1_usable(l, c, why, sizeof(why)))
		return need ? unavailable(err, c, EOPNOTSUPP, why) : 0;
	char rel[PATH_MAX], own[PATH_MAX], parent[PATH_MAX];
	copy_str(rel, sizeof(rel), h->parent_rel);
	if (h->relative) {
		if (!cg_own_v1(c, own, sizeof(own)))
			return cap_err_plain(err, ENOENT, "a relative cgroup path: this process's %s cgroup is not in "
							  "/proc/self/cgroup", cg_ctrl_name[c]);
		if (own[0] && h->parent_rel[0])
			fmt_into(rel, sizeof(rel), "%s/%s", own, h->parent_rel);
		else if (own[0])
			copy_str(rel, sizeof(rel), own);
	}
	path_join(parent, sizeof(parent), l->v1[c], rel);
	if (!rel[0])
		snprintf(parent, sizeof(parent), "%s", l->v1[c]);
	for (size_t i = 0; i < h->n; i++) {
		if (strcmp(h->dir[i].parent, parent) == 0) {
			h->dir[i].ctrls |= CG_BIT(c);
			return 0;
		}
	}
	struct cg_dir *d = &h->dir[h->n];
	d->fd = d->parent_fd = -1;
	capsule_error e = { 0 };
	int r = open_parent(d, l->v1[c], rel, NULL, 0, &e);
	if (r >= 0)
		r = make_sandbox_dir(d, h->name, &e);
	if (r < 0) {
		cg_dir_close(d);
		if (r == -EBUSY || (need && !is_permission_error(r)))
			return cap_err_plain(err, -r, "%s", e.message);
		return need ? unavailable(err, c, -r, e.message) : 0; /* best effort for one no limit needs */
	}
	d->ctrls = CG_BIT(c);
	h->n++;
	return 0;
}

static int create_v1(struct cgroup_handle *h, const struct cg_use *l, unsigned needed, capsule_error *err)
{
	for (int c = 0; c < CG_N_CTRL; c++) {
		/* cpuset only for a sandbox that asks (or an update that does: cgroup_add_cpuset): its
		 * folders need filling. */
		if (c == CG_CPUSET && !(needed & CG_BIT(c)))
			continue;
		int r = open_v1_dir(h, l, c, needed & CG_BIT(c), err);
		if (r < 0)
			return r;
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
	if (!base && !h->relative) {
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

	/* A relative path is below the parent of our own cgroup (candidate 2, or the root when our
	 * own is the root's child), whatever it can give: enabling says what it cannot. */
	if (h->relative)
		base = n > 2 ? &cands[2] : &cands[0];
	/* cpuset only for a sandbox that asks for it, as on v1. */
	unsigned mask = (base->usable & ~CG_BIT(CG_CPUSET)) | needed;

	struct cg_dir *d = &h->dir[0];
	d->fd = d->parent_fd = -1;
	capsule_error e = { 0 };
	r = open_parent(d, base->path, h->parent_rel, &mask, needed, &e);
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

static int create_in(struct cgroup_handle **out, const char *parent_rel, bool relative, const char *name,
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
	return create_in(out, CG_PARENT, false, name, lim, err);
}

int cgroup_create_at(struct cgroup_handle **out, const char *path, const struct cgroup_limits *lim,
		     capsule_error *err)
{
	if (!out)
		return cap_err_plain(err, EINVAL, "cgroup_create_at: no output handle");
	*out = NULL;
	char rel[PATH_MAX];
	if (!path || !path[0] || snprintf(rel, sizeof(rel), "%s", path + (path[0] == '/')) >= (int)sizeof(rel))
		return cap_err_plain(err, EINVAL, "cgroup path '%s' is empty or too long", path ? path : "(null)");
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
	return create_in(out, last ? rel : "", path[0] != '/', name, lim, err);
}

static int create_in(struct cgroup_handle **out, const char *parent_rel, bool relative, const char *name,
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
	h->relative = relative;
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
	if (r >= 0)
		r = apply_extra(h, lim, err);
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

/* cgroup v1: move every process of the sandbox (those in FROM's tree) into its new cpuset folder
 * TO. A process forked while its parent was being moved stays in the cpuset the sandbox
 * started in, so pass again until a pass finds none left behind; a sandbox that forks faster
 * than it is moved (bounded by its pids limit) fails after CPUSET_MOVE_PASSES. FROM is the
 * first folder (memory's when there is one), where capsule-oci's monitor is as well: it joins
 * its container's cpuset as it does when the container is made with one (src/oci/run.c), so
 * that the cpus read through its pid are the container's. */
#define CPUSET_MOVE_PASSES 64
static int move_into_cpuset(const struct cg_dir *from, const struct cg_dir *to, capsule_error *err)
{
	_cleanup_close_ int procs = openat(to->fd, "cgroup.procs", O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
	if (procs < 0)
		return cap_err(err, errno, "open '%s/cgroup.procs'", to->path);
	for (int pass = 0; pass < CPUSET_MOVE_PASSES; pass++) {
		struct pidvec all = { 0 }, there = { 0 };
		int r = cg_collect_pids(from->fd, &all, 0);
		if (r >= 0)
			r = cg_collect_pids(to->fd, &there, 0);
		if (r < 0) {
			free(all.v);
			free(there.v);
			return cap_err(err, -r, "read the processes of '%s'", from->path);
		}
		cg_pids_sort(&there);
		size_t moved = 0;
		for (size_t i = 0; i < all.n && r == 0; i++) {
			if (cg_pids_has(&there, all.v[i]))
				continue;
			char val[32];
			fmt_into(val, sizeof(val), "%d", (int)all.v[i]);
			/* One pid a write, as the kernel takes them; one that exited since is fine. */
			if (write(procs, val, strlen(val)) < 0 && errno != ESRCH)
				r = cap_err(err, errno, "move process %d into '%s'", (int)all.v[i], to->path);
			moved++;
		}
		free(all.v);
		free(there.v);
		if (r < 0 || moved == 0)
			return r;
	}
	return cap_err_plain(err, EAGAIN, "the sandbox's processes kept forking while they were moved into its new "
					  "cpuset cgroup '%s'", to->path);
}

/* cgroup v2: the sandbox's folder gets the cpuset controller once every folder from the
 * mount's root down to its parent enables it for its children (open_parent does that, as at
 * create); its processes stay where they are. */
static int add_cpuset_v2(struct cgroup_handle *h, const struct cg_use *l, capsule_error *err)
{
	struct cg_dir *d = &h->dir[0];
	size_t ml = strlen(l->v2_mount);
	if (strncmp(d->parent, l->v2_mount, ml) != 0 || (d->parent[ml] && d->parent[ml] != '/'))
		return cap_err_plain(err, EINVAL, "cgroup '%s' is not below the cgroup2 mount '%s'", d->parent,
				     l->v2_mount);
	struct cg_dir chain = { .fd = -1, .parent_fd = -1 };
	unsigned mask = CG_BIT(CG_CPUSET);
	int r = open_parent(&chain, l->v2_mount, d->parent + ml + (d->parent[ml] == '/'), &mask, mask, err);
	cg_dir_close(&chain);
	if (r < 0)
		return r;
	d->ctrls |= CG_BIT(CG_CPUSET);
	return 0;
}

int cgroup_add_cpuset(struct cgroup_handle *cg, capsule_error *err)
{
	if (!cg || cg->destroyed || cg->n == 0)
		return cap_err_plain(err, EOPNOTSUPP, "the sandbox has no cgroup (cgroups are not usable here)");
	for (size_t i = 0; i < cg->n; i++)
		if (cg->dir[i].ctrls & CG_BIT(CG_CPUSET))
			return 0;
	struct cg_use *l;
	int r = cg_use_detect(&l, err);
	if (r < 0)
		return r;
	if (cg->v2) {
		r = add_cpuset_v2(cg, l, err);
		free(l);
		return r;
	}
	size_t before = cg->n;
	/* Every process is in the first folder's tree: each joined all the sandbox's folders. */
	const struct cg_dir *from = &cg->dir[0];
	r = open_v1_dir(cg, l, CG_CPUSET, true, err);
	free(l);
	if (r < 0)
		return r;
	if (cg->n == before)
		return 0; /* co-mounted with a controller the sandbox had: already its folder */
	struct cg_dir *d = &cg->dir[cg->n - 1];
	/* The folder starts with the sets of its parent, so that moving the processes in changes
	 * nothing yet; the caller then writes the new sets. Kept in the handle even when the move
	 * fails: it is the sandbox's, constrains nothing, and goes with its other folders. */
	static const struct cgroup_extra none = { 0 };
	if ((r = apply_cpuset(cg, d, &none, err)) < 0)
		return r;
	return move_into_cpuset(from, d, err);
}
