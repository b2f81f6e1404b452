/* Ending a sandbox's cgroups: kill what is inside them (cgroup.kill, else SIGKILL through
 * pidfds until they are empty), remove the folders, and sweep a killed shim's leftovers. See
 * cgroup.h. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cgroup_internal.h"
#include "syscalls.h"

#define CG_WAIT_MS 1000    /* how long to wait for a cgroup to empty, and for rmdir */
#define CG_MAX_DEPTH 16    /* sub-cgroups we follow below the sandbox's folder */
#define CG_KILL_BATCH 4096 /* pidfds open at once while killing */

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static int pidvec_push(struct pidvec *pv, pid_t pid)
{
	if (pv->n == pv->cap) {
		size_t nc = pv->cap ? pv->cap * 2 : 64;
		pid_t *nv = realloc(pv->v, nc * sizeof(*nv));
		if (!nv)
			return -ENOMEM;
		pv->v = nv;
		pv->cap = nc;
	}
	pv->v[pv->n++] = pid;
	return 0;
}

static int cmp_pid(const void *a, const void *b)
{
	pid_t x = *(const pid_t *)a, y = *(const pid_t *)b;
	return (x > y) - (x < y);
}

void cg_pids_sort(struct pidvec *pv)
{
	qsort(pv->v, pv->n, sizeof(*pv->v), cmp_pid);
}

bool cg_pids_has(const struct pidvec *sorted, pid_t pid)
{
	return bsearch(&pid, sorted->v, sorted->n, sizeof(*sorted->v), cmp_pid) != NULL;
}

/* Call FN on every sub-cgroup folder of DFD. */
static int for_each_subdir(int dfd, int (*fn)(int dfd, const char *name, void *ud), void *ud)
{
	int dup_fd = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dup_fd < 0)
		return errno == ENOENT ? 0 : -errno;
	DIR *d = fdopendir(dup_fd);
	if (!d) {
		int e = errno;
		close(dup_fd);
		return -e;
	}
	int ret = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		bool isdir = de->d_type == DT_DIR;
		if (de->d_type == DT_UNKNOWN) {
			struct stat st;
			isdir = fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
		}
		if (!isdir)
			continue;
		int r = fn(dfd, de->d_name, ud);
		if (r < 0 && ret == 0)
			ret = r;
	}
	closedir(d);
	return ret;
}

struct collect_ctx {
	struct pidvec *pv;
	int depth;
};

static int collect_sub(int dfd, const char *name, void *ud)
{
	struct collect_ctx *cc = ud;
	int fd = open_dir_at(dfd, name);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	int r = cg_collect_pids(fd, cc->pv, cc->depth + 1);
	close(fd);
	return r;
}

int cg_collect_pids(int dfd, struct pidvec *pv, int depth)
{
	char *s;
	int r = read_file_at(dfd, "cgroup.procs", CG_READ_MAX, &s, NULL);
	if (r == -ENOENT || r == -ENODEV)
		return 0;
	if (r < 0)
		return r;
	for (char *p = s; *p;) {
		char *end;
		long v = strtol(p, &end, 10);
		if (end == p) {
			p++;
			continue;
		}
		if (v > 0 && (r = pidvec_push(pv, (pid_t)v)) < 0)
			break;
		p = end;
	}
	free(s);
	if (r < 0)
		return r;
	if (depth >= CG_MAX_DEPTH)
		return 0;
	struct collect_ctx cc = { pv, depth };
	return for_each_subdir(dfd, collect_sub, &cc);
}

/* One round of SIGKILL to every process in the tree at DFD (but never to ourselves). To not hit
 * a recycled pid, each process is pinned with a pidfd and only signalled if it is still listed
 * in the cgroup after that. Returns how many processes were seen (0: empty), or -errno. */
static int kill_round(int dfd)
{
	struct pidvec l1 = { 0 }, l2 = { 0 };
	pid_t self = getpid();
	int r = cg_collect_pids(dfd, &l1, 0);
	if (r < 0)
		goto out;
	size_t w = 0;
	for (size_t i = 0; i < l1.n; i++)
		if (l1.v[i] != self)
			l1.v[w++] = l1.v[i];
	l1.n = w;
	if (l1.n == 0) {
		r = 0;
		goto out;
	}
	size_t nb = l1.n < CG_KILL_BATCH ? l1.n : CG_KILL_BATCH;
	int *fds = malloc(nb * sizeof(*fds));
	if (!fds) {
		r = -ENOMEM;
		goto out;
	}
	/* fds[i]: a pidfd; -1: the process is gone; -2: no pidfd (old kernel, out of fds): kill(2). */
	bool no_pidfd = false;
	for (size_t i = 0; i < nb; i++) {
		fds[i] = no_pidfd ? -2 : sys_pidfd_open(l1.v[i], 0);
		if (fds[i] == -1 && errno != ESRCH) {
			no_pidfd |= errno == ENOSYS;
			fds[i] = -2;
		}
	}
	r = cg_collect_pids(dfd, &l2, 0);
	if (r >= 0) {
		cg_pids_sort(&l2);
		for (size_t i = 0; i < nb; i++) {
			if (!cg_pids_has(&l2, l1.v[i]))
				continue;
			if (fds[i] >= 0)
				sys_pidfd_send_signal(fds[i], SIGKILL);
			else if (fds[i] == -2)
				kill(l1.v[i], SIGKILL);
		}
		r = (int)(l1.n > INT_MAX ? INT_MAX : l1.n);
	}
	for (size_t i = 0; i < nb; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	free(fds);
out:
	free(l1.v);
	free(l2.v);
	return r;
}

/* SIGKILL everything in the tree at DFD until it is empty, for up to about CG_WAIT_MS. */
static int kill_by_procs(int dfd, const char *path, capsule_error *err)
{
	uint64_t start = now_ms();
	for (unsigned round = 0;; round++) {
		int r = kill_round(dfd);
		if (r < 0)
			return cap_err(err, -r, "read '%s/cgroup.procs'", path);
		if (r == 0)
			return 0;
		if (now_ms() - start > CG_WAIT_MS)
			return cap_err_plain(err, EBUSY, "processes are still in '%s' after %u rounds of SIGKILL",
					     path, round + 1);
		sleep_ms(round < 10 ? 2 : 10);
	}
}

/* Value of "KEY N" in a flat keyed file such as memory.events; -1 when absent. */
static long long keyed_value(const char *text, const char *key)
{
	size_t kl = strlen(key);
	for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
		if (strncmp(p, key, kl) == 0 && p[kl] == ' ')
			return strtoll(p + kl + 1, NULL, 10);
	}
	return -1;
}

/* Wait until cgroup.events says "populated 0"; true when it did within CG_WAIT_MS. */
static bool v2_wait_unpopulated(int dfd)
{
	uint64_t start = now_ms();
	for (unsigned round = 0;; round++) {
		char *s;
		int r = read_file_at(dfd, "cgroup.events", CG_READ_MAX, &s, NULL);
		if (r == -ENOENT || r == -ENODEV)
			return true;
		if (r < 0)
			return false;
		long long pop = keyed_value(s, "populated");
		free(s);
		if (pop == 0)
			return true;
		if (now_ms() - start > CG_WAIT_MS)
			return false;
		sleep_ms(round < 10 ? 1 : 10);
	}
}

static int kill_tree(int dfd, const char *path, bool v2, capsule_error *err)
{
	if (v2 && exists_at(dfd, "cgroup.kill")) {
		/* Never kill ourselves: only use cgroup.kill when we are not inside. */
		struct pidvec pv = { 0 };
		bool self_inside = false;
		if (cg_collect_pids(dfd, &pv, 0) == 0)
			for (size_t i = 0; i < pv.n; i++)
				self_inside |= pv.v[i] == getpid();
		free(pv.v);
		if (!self_inside && cg_write_at(dfd, path, "cgroup.kill", "1", NULL) == 0 && v2_wait_unpopulated(dfd))
			return 0;
	}
	return kill_by_procs(dfd, path, err);
}

struct remove_ctx {
	const char *path;
	int depth;
	capsule_error *err;
};

static int remove_sub(int dfd, const char *name, void *ud)
{
	struct remove_ctx *rc = ud;
	return cg_remove_tree(dfd, rc->path, name, rc->depth + 1, rc->err);
}

int cg_remove_tree(int parent_fd, const char *parent_path, const char *name, int depth, capsule_error *err)
{
	char path[PATH_MAX];
	path_join(path, sizeof(path), parent_path, name);
	if (depth < CG_MAX_DEPTH) {
		int fd = open_dir_at(parent_fd, name);
		if (fd < 0) {
			if (errno == ENOENT)
				return 0;
			if (errno != ENOTDIR)
				return cap_err(err, errno, "open '%s'", path);
		} else {
			struct remove_ctx rc = { path, depth, err };
			int r = for_each_subdir(fd, remove_sub, &rc);
			close(fd);
			if (r < 0)
				return r;
		}
	}
	uint64_t start = now_ms();
	for (;;) {
		if (unlinkat(parent_fd, name, AT_REMOVEDIR) == 0 || errno == ENOENT)
			return 0;
		if ((errno != EBUSY && errno != ENOTEMPTY) || now_ms() - start > CG_WAIT_MS)
			return cap_err(err, errno, "rmdir '%s'", path);
		sleep_ms(10);
	}
}

/* Kill and remove PARENT_FD/NAME. Returns 1 when it was there, 0 when not, or -errno. */
static int kill_and_remove(int parent_fd, const char *parent_path, const char *name, bool v2, capsule_error *err)
{
	char path[PATH_MAX];
	path_join(path, sizeof(path), parent_path, name);
	int fd = open_dir_at(parent_fd, name);
	if (fd < 0) {
		if (errno == ENOENT)
			return 0;
		return cap_err(err, errno, "open '%s'", path);
	}
	int r = kill_tree(fd, path, v2, err);
	close(fd);
	if (r < 0)
		return r;
	r = cg_remove_tree(parent_fd, parent_path, name, 0, err);
	return r < 0 ? r : 1;
}

long long cgroup_oom_count(const struct cgroup_handle *cg)
{
	for (size_t i = 0; cg && !cg->destroyed && i < cg->n; i++) {
		const struct cg_dir *d = &cg->dir[i];
		if (!(d->ctrls & CG_BIT(CG_MEMORY)) || d->fd < 0)
			continue;
		char *s;
		if (cg->v2) {
			if (read_file_at(d->fd, "memory.events", CG_READ_MAX, &s, NULL) < 0)
				return -1;
			long long v = keyed_value(s, "oom_kill");
			free(s);
			return v;
		}
		if (read_file_at(d->fd, "memory.oom_control", CG_READ_MAX, &s, NULL) == 0) {
			long long v = keyed_value(s, "oom_kill");
			free(s);
			if (v >= 0)
				return v;
		}
		/* Kernels before 4.13 have no oom_kill count: the times the limit was hit stand in. */
		if (read_file_at(d->fd, "memory.failcnt", CG_READ_MAX, &s, NULL) < 0)
			return -1;
		long long v = strtoll(s, NULL, 10);
		free(s);
		return v;
	}
	return -1;
}

static bool oom_now(const struct cgroup_handle *cg)
{
	return cgroup_oom_count(cg) > 0;
}

bool cgroup_oom_killed(struct cgroup_handle *cg)
{
	if (!cg)
		return false;
	if (cg->destroyed)
		return cg->oom_seen;
	return oom_now(cg);
}

bool cgroup_tracks(const struct cgroup_handle *cg)
{
	for (size_t i = 0; cg && !cg->destroyed && i < cg->n; i++)
		if (cg->dir[i].fd >= 0)
			return true;
	return false;
}

int cgroup_kill_all(struct cgroup_handle *cg, capsule_error *err)
{
	int ret = 0;
	for (size_t i = 0; cg && !cg->destroyed && i < cg->n; i++) {
		capsule_error e = { 0 };
		if (cg->dir[i].fd >= 0 && kill_tree(cg->dir[i].fd, cg->dir[i].path, cg->v2, &e) < 0 && ret == 0)
			ret = cap_err_plain(err, e.code ? e.code : EBUSY, "%s", e.message);
	}
	return ret;
}

int cgroup_destroy(struct cgroup_handle *cg, capsule_error *err)
{
	if (!cg || cg->destroyed)
		return 0;
	cg->oom_seen |= oom_now(cg);
	int ret = 0;
	for (size_t i = 0; i < cg->n; i++) {
		struct cg_dir *d = &cg->dir[i];
		if (d->fd < 0)
			continue;
		capsule_error e = { 0 };
		int r = kill_tree(d->fd, d->path, cg->v2, &e);
		if (r >= 0) {
			/* Remove by name only if that is still our folder (not a newer one of the same name). */
			struct stat ours, there;
			if (fstat(d->fd, &ours) == 0 && fstatat(d->parent_fd, cg->name, &there, AT_SYMLINK_NOFOLLOW) == 0 &&
			    ours.st_dev == there.st_dev && ours.st_ino == there.st_ino)
				r = cg_remove_tree(d->parent_fd, d->parent, cg->name, 0, &e);
		}
		if (r < 0 && ret == 0)
			ret = cap_err_plain(err, -r, "%s", e.message);
	}
	if (ret == 0)
		cg->destroyed = true;
	return ret;
}

/* Kill and remove BASE/capsule/NAME. 1 if it was there, 0 if not, or -errno. */
static int remove_under(const char *base, const char *name, bool v2, capsule_error *err)
{
	char parent[PATH_MAX];
	path_join(parent, sizeof(parent), base, CG_PARENT);
	int pfd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (pfd < 0)
		return errno == ENOENT || errno == ENOTDIR ? 0 : cap_err(err, errno, "open '%s'", parent);
	int r = kill_and_remove(pfd, parent, name, v2, err);
	close(pfd);
	return r;
}

int cgroup_remove_by_name(const char *name, capsule_error *err)
{
	if (!name_valid(name))
		return cap_err_plain(err, EINVAL, "invalid cgroup name '%s': must be one path component",
				     name ? name : "(null)");
	struct cg_use *l;
	int r = cg_use_detect(&l, err);
	if (r < 0)
		return r;
	int found = 0, ret = 0;
	if (l->v2) {
		struct v2_cand *cands = NULL;
		int n = cg_v2_candidates(l, &cands);
		if (n < 0) {
			free(l);
			return cap_err(err, -n, "cgroup '%s'", name);
		}
		for (int i = 0; i < n; i++) {
			bool dup = false;
			for (int j = 0; j < i; j++)
				dup |= strcmp(cands[i].path, cands[j].path) == 0;
			/* A base we cannot write holds no cgroup of ours (or we cannot remove it). */
			if (dup || (i > 0 && !cands[i].writable))
				continue;
			capsule_error e = { 0 };
			r = remove_under(cands[i].path, name, true, &e);
			if (r > 0)
				found = 1;
			else if (r < 0 && ret == 0)
				ret = cap_err_plain(err, -r, "%s", e.message);
		}
		free(cands);
	} else {
		for (int c = 0; c < CG_N_CTRL; c++) {
			if (!l->v1[c][0])
				continue;
			bool dup = false;
			for (int j = 0; j < c; j++)
				dup |= strcmp(l->v1[c], l->v1[j]) == 0;
			if (dup)
				continue;
			capsule_error e = { 0 };
			r = remove_under(l->v1[c], name, false, &e);
			if (r > 0)
				found = 1;
			else if (r < 0 && ret == 0)
				ret = cap_err_plain(err, -r, "%s", e.message);
		}
	}
	free(l);
	return ret < 0 ? ret : found;
}