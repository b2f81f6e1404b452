/* Sandbox cgroups on cgroup v1 (plain or hybrid layout) and cgroup v2. See cgroup.h. */
#include "cgroup.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif
#ifndef CGROUP_SUPER_MAGIC
#define CGROUP_SUPER_MAGIC 0x27e0eb
#endif
#ifndef __NR_pidfd_open
#define __NR_pidfd_open 434
#endif
#ifndef __NR_pidfd_send_signal
#define __NR_pidfd_send_signal 424
#endif

/* Where the cgroup hierarchies are mounted. Overridable at build time (tests point it at a
 * cgroup2 mount to exercise the v2 code on a v1 host). */
#ifndef CG_SYS_ROOT
#define CG_SYS_ROOT "/sys/fs/cgroup"
#endif

#define CG_PARENT "capsule"
#define CG_CPU_PERIOD_US 100000ULL
#define CG_CPU_MIN_QUOTA_US 1000ULL
#define CG_WAIT_MS 1000       /* how long to wait for a cgroup to empty, and for rmdir */
#define CG_MAX_DEPTH 16       /* sub-cgroups we follow below the sandbox's folder */
#define CG_MAX_CANDIDATES 64  /* v2 bases: the mount root and the caller's cgroup chain */
#define CG_KILL_BATCH 4096    /* pidfds open at once while killing */

enum { C_MEMORY, C_PIDS, C_CPU, C_N };
#define CBIT(c) (1u << (c))
static const char *const ctrl_name[C_N] = { "memory", "pids", "cpu" };

struct cg_dir {
	char path[PATH_MAX];   /* the sandbox's folder */
	char parent[PATH_MAX]; /* ".../capsule" */
	int parent_fd;
	int fd;
	unsigned ctrls; /* controllers this folder serves (v2: those enabled for it) */
};

struct cgroup_handle {
	char name[NAME_MAX + 1];
	bool v2;
	bool destroyed;
	bool oom_seen; /* cgroup_oom_killed's answer, saved by cgroup_destroy */
	size_t n;      /* 0: the do-nothing handle */
	struct cg_dir dir[C_N];
};

struct layout {
	bool v2;
	char v2_mount[PATH_MAX]; /* the cgroup2 mount used for v2 */
	char v2_root[PATH_MAX];  /* that mount's root inside the hierarchy (mountinfo field 4) */
	char v1[C_N][PATH_MAX];  /* v1 mount point of each controller, "" when not mounted */
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

/* ---- small helpers ------------------------------------------------------------------- */

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* snprintf that may truncate on purpose (paths are bounded by PATH_MAX, messages by their
 * buffers). */
static _printf_(3, 4) void fmt_into(char *buf, size_t n, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = vsnprintf(buf, n, fmt, ap);
	va_end(ap);
	(void)r;
}

static void path_join(char *buf, size_t n, const char *a, const char *b)
{
	size_t la = strlen(a);
	if (la > 0 && a[la - 1] == '/')
		fmt_into(buf, n, "%s%s", a, b);
	else
		fmt_into(buf, n, "%s/%s", a, b);
}

static void copy_str(char *dst, size_t n, const char *src)
{
	fmt_into(dst, n, "%s", src);
}

static int open_dir_at(int dfd, const char *name)
{
	return openat(dfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
}

static bool exists_at(int dfd, const char *file)
{
	return faccessat(dfd, file, F_OK, 0) == 0;
}

/* Read a whole (small, virtual) file below DFD into a NUL-terminated malloc'd buffer. */
static int read_at(int dfd, const char *file, char **out)
{
	*out = NULL;
	int fd = openat(dfd, file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	size_t cap = 4096, len = 0;
	char *buf = malloc(cap);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	for (;;) {
		if (cap - len < 2) {
			if (cap >= (16u << 20)) {
				free(buf);
				close(fd);
				return -EFBIG;
			}
			char *nb = realloc(buf, cap * 2);
			if (!nb) {
				free(buf);
				close(fd);
				return -ENOMEM;
			}
			buf = nb;
			cap *= 2;
		}
		ssize_t r = read(fd, buf + len, cap - len - 1);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			int e = errno;
			free(buf);
			close(fd);
			return -e;
		}
		if (r == 0)
			break;
		len += (size_t)r;
	}
	close(fd);
	buf[len] = '\0';
	*out = buf;
	return 0;
}

/* Write VAL to DFD/FILE in one write(2), as cgroup files want. DPATH names DFD in messages. */
static int write_at(int dfd, const char *dpath, const char *file, const char *val, capsule_error *err)
{
	int fd = openat(dfd, file, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return cap_err(err, errno, "open '%s/%s'", dpath, file);
	size_t len = strlen(val);
	ssize_t r;
	do
		r = write(fd, val, len);
	while (r < 0 && errno == EINTR);
	int e = r < 0 ? errno : (size_t)r != len ? EIO : 0;
	close(fd);
	if (e)
		return cap_err(err, e, "write '%s/%s'", dpath, file);
	return 0;
}

/* Parse a controller list ("cpu io memory pids"): our controllers in it. */
static unsigned parse_ctrls(const char *s)
{
	unsigned mask = 0;
	while (*s) {
		while (*s == ' ' || *s == '\t' || *s == '\n' || *s == ',')
			s++;
		const char *start = s;
		while (*s && *s != ' ' && *s != '\t' && *s != '\n' && *s != ',')
			s++;
		size_t len = (size_t)(s - start);
		for (int c = 0; c < C_N; c++)
			if (len == strlen(ctrl_name[c]) && memcmp(start, ctrl_name[c], len) == 0)
				mask |= CBIT(c);
	}
	return mask;
}

static unsigned read_ctrls_at(int dfd, const char *file)
{
	char *s;
	if (read_at(dfd, file, &s) < 0)
		return 0;
	unsigned m = parse_ctrls(s);
	free(s);
	return m;
}

static unsigned read_ctrls_path(const char *dir, const char *file)
{
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return 0;
	unsigned m = read_ctrls_at(dfd, file);
	close(dfd);
	return m;
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

static bool name_valid(const char *name)
{
	return name && name[0] && strcmp(name, ".") != 0 && strcmp(name, "..") != 0 &&
	       !strchr(name, '/') && strlen(name) <= NAME_MAX;
}

/* ---- layout detection ------------------------------------------------------------------ */

/* Undo mountinfo's octal escapes (\040 for a space, ...). */
static void unescape_octal(char *s)
{
	char *w = s;
	for (const char *r = s; *r;) {
		if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' && r[3] >= '0' &&
		    r[3] <= '7') {
			*w++ = (char)(((r[1] - '0') << 6) | ((r[2] - '0') << 3) | (r[3] - '0'));
			r += 4;
		} else {
			*w++ = *r++;
		}
	}
	*w = '\0';
}

static bool under_sys_root(const char *mp)
{
	size_t n = strlen(CG_SYS_ROOT);
	return strncmp(mp, CG_SYS_ROOT, n) == 0 && (mp[n] == '/' || mp[n] == '\0');
}

/* Fill L->v1[] and the best cgroup2 mount (with its root) from /proc/self/mountinfo. */
static bool parse_mountinfo(struct layout *l, char *v2_mp, char *v2_root)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return false;
	char *line = NULL;
	size_t cap = 0;
	int v2_rank = 0; /* 3: CG_SYS_ROOT itself, 2: below it, 1: elsewhere */
	while (getline(&line, &cap, f) > 0) {
		char *sep = strstr(line, " - ");
		if (!sep)
			continue;
		*sep = '\0';
		char *save = NULL, *fields[5];
		int i = 0;
		for (char *t = strtok_r(line, " ", &save); t && i < 5; t = strtok_r(NULL, " ", &save))
			fields[i++] = t;
		if (i < 5)
			continue;
		char *save2 = NULL;
		char *fstype = strtok_r(sep + 3, " \n", &save2);
		char *source = fstype ? strtok_r(NULL, " \n", &save2) : NULL;
		char *super = source ? strtok_r(NULL, " \n", &save2) : NULL;
		if (!super)
			continue;
		char *root = fields[3], *mp = fields[4];
		unescape_octal(root);
		unescape_octal(mp);
		if (strcmp(fstype, "cgroup2") == 0) {
			int rank = strcmp(mp, CG_SYS_ROOT) == 0 ? 3 : under_sys_root(mp) ? 2 : 1;
			/* Equal rank: a later mount on the same point hides the earlier one. */
			if (rank > v2_rank || (rank == v2_rank && strcmp(mp, v2_mp) == 0)) {
				v2_rank = rank;
				copy_str(v2_mp, PATH_MAX, mp);
				copy_str(v2_root, PATH_MAX, root);
			}
		} else if (strcmp(fstype, "cgroup") == 0) {
			unsigned m = parse_ctrls(super);
			for (int c = 0; c < C_N; c++) {
				if (!(m & CBIT(c)))
					continue;
				/* Prefer the mount below CG_SYS_ROOT; otherwise the first one. */
				if (!l->v1[c][0] || (under_sys_root(mp) && !under_sys_root(l->v1[c])))
					copy_str(l->v1[c], PATH_MAX, mp);
			}
		}
	}
	free(line);
	fclose(f);
	return true;
}

static struct layout *layout_detect(void)
{
	struct layout *l = calloc(1, sizeof(*l));
	if (!l)
		return NULL;
	char *v2_mp = calloc(2, PATH_MAX);
	if (!v2_mp) {
		free(l);
		return NULL;
	}
	char *v2_root = v2_mp + PATH_MAX;
	bool have_mi = parse_mountinfo(l, v2_mp, v2_root);

	struct statfs sf;
	if (statfs(CG_SYS_ROOT, &sf) == 0 && (unsigned long)sf.f_type == CGROUP2_SUPER_MAGIC) {
		/* Pure v2. */
		l->v2 = true;
		copy_str(l->v2_mount, sizeof(l->v2_mount), CG_SYS_ROOT);
		bool same = have_mi && strcmp(v2_mp, CG_SYS_ROOT) == 0;
		copy_str(l->v2_root, sizeof(l->v2_root), same && v2_root[0] ? v2_root : "/");
		for (int c = 0; c < C_N; c++)
			l->v1[c][0] = '\0';
	} else {
		if (!have_mi) {
			/* No /proc: look at the usual places. */
			for (int c = 0; c < C_N; c++) {
				char p[PATH_MAX];
				path_join(p, sizeof(p), CG_SYS_ROOT, ctrl_name[c]);
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
		for (int c = 0; c < C_N; c++)
			any_v1 |= l->v1[c][0] != '\0';
		/* Hybrid with the controllers on the unified side: use v2 there. */
		if (!any_v1 && v2_mp[0] && read_ctrls_path(v2_mp, "cgroup.controllers") != 0) {
			l->v2 = true;
			copy_str(l->v2_mount, sizeof(l->v2_mount), v2_mp);
			copy_str(l->v2_root, sizeof(l->v2_root), v2_root[0] ? v2_root : "/");
		}
	}
	free(v2_mp);
	return l;
}

/* ---- cgroup v1: availability --------------------------------------------------------- */

/* Can this user use controller C on v1? If not, say why in WHY. */
static bool v1_usable(const struct layout *l, int c, char *why, size_t n)
{
	const char *mp = l->v1[c];
	if (!mp[0]) {
		fmt_into(why, n, "no cgroup v1 hierarchy with the %s controller is mounted", ctrl_name[c]);
		return false;
	}
	int dfd = open(mp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0) {
		fmt_into(why, n, "open '%s': %s", mp, strerror(errno));
		return false;
	}
	const char *needed_file = c == C_MEMORY ? "memory.limit_in_bytes" : c == C_CPU ? "cpu.cfs_quota_us" : NULL;
	if (needed_file && !exists_at(dfd, needed_file)) {
		fmt_into(why, n, "'%s/%s' is missing (kernel built without %s)", mp, needed_file,
			 c == C_CPU ? "CONFIG_CFS_BANDWIDTH" : "memory limits");
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
	c->avail = read_ctrls_at(dfd, "cgroup.controllers");
	c->enabled = read_ctrls_at(dfd, "cgroup.subtree_control") & c->avail;
	/* The real root has no cgroup.type and may have processes and controllers at once. */
	bool real_root = !exists_at(dfd, "cgroup.type");
	char *procs = NULL;
	if (read_at(dfd, "cgroup.procs", &procs) == 0)
		c->has_procs = procs[strspn(procs, " \n")] != '\0';
	free(procs);
	c->usable = c->enabled;
	if (c->writable && (real_root || !c->has_procs))
		c->usable |= c->avail;
	close(dfd);
}

/* The caller's v2 cgroup, relative to the v2 mount; false when unknown or outside the mount. */
static bool own_v2_cgroup(const struct layout *l, char *out, size_t n)
{
	FILE *f = fopen("/proc/self/cgroup", "re");
	if (!f)
		return false;
	char *line = NULL;
	size_t cap = 0;
	bool found = false;
	while (!found && getline(&line, &cap, f) > 0) {
		if (strncmp(line, "0::", 3) != 0)
			continue;
		line[strcspn(line, "\n")] = '\0';
		const char *p = line + 3;
		const char *root = l->v2_root;
		if (strcmp(root, "/") != 0) {
			size_t rl = strlen(root);
			if (strncmp(p, root, rl) != 0 || (p[rl] != '/' && p[rl] != '\0'))
				break;
			p += rl;
		}
		copy_str(out, n, p[0] ? p : "/");
		found = true;
	}
	free(line);
	fclose(f);
	return found;
}

/* The places a v2 sandbox cgroup may go, in order of preference: the mount's root, then the
 * caller's own cgroup and its ancestors, closest first. Returns how many (>= 1), or -ENOMEM. */
static int v2_candidates(const struct layout *l, struct v2_cand **out)
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
static const struct v2_cand *v2_pick(const struct v2_cand *v, int n, unsigned needed)
{
	for (int i = 0; i < n; i++)
		if (v[i].writable && (v[i].usable & needed) == needed)
			return &v[i];
	return NULL;
}

/* Writable candidate with the most usable controllers (first on ties); NULL if none writable. */
static const struct v2_cand *v2_best(const struct v2_cand *v, int n)
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
static void v2_why(const struct layout *l, const struct v2_cand *best, int c, char *why, size_t n)
{
	if (!best)
		fmt_into(why, n,
			 "no write access to '%s' nor to this process's own cgroup (cgroup v2 needs root or a "
			 "delegated cgroup, e.g. systemd-run --user -p Delegate=yes)",
			 l->v2_mount);
	else if (!(best->avail & CBIT(c)))
		fmt_into(why, n, "'%s/cgroup.controllers' does not list %s (the parent cgroup does not delegate it)",
			 best->path, ctrl_name[c]);
	else
		fmt_into(why, n,
			 "%s is not enabled in '%s/cgroup.subtree_control' and cannot be, because processes live "
			 "in that cgroup itself",
			 ctrl_name[c], best->path);
}

/* ---- killing and removing ------------------------------------------------------------------ */

struct pidvec {
	pid_t *v;
	size_t n, cap;
};

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

static int collect_pids(int dfd, struct pidvec *pv, int depth);

static int collect_sub(int dfd, const char *name, void *ud)
{
	struct collect_ctx *cc = ud;
	int fd = open_dir_at(dfd, name);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	int r = collect_pids(fd, cc->pv, cc->depth + 1);
	close(fd);
	return r;
}

/* The processes in DFD's cgroup and its sub-cgroups (a vanished folder counts as empty). */
static int collect_pids(int dfd, struct pidvec *pv, int depth)
{
	char *s;
	int r = read_at(dfd, "cgroup.procs", &s);
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
	int r = collect_pids(dfd, &l1, 0);
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
		fds[i] = no_pidfd ? -2 : (int)syscall(__NR_pidfd_open, l1.v[i], 0);
		if (fds[i] == -1 && errno != ESRCH) {
			no_pidfd |= errno == ENOSYS;
			fds[i] = -2;
		}
	}
	r = collect_pids(dfd, &l2, 0);
	if (r >= 0) {
		qsort(l2.v, l2.n, sizeof(*l2.v), cmp_pid);
		for (size_t i = 0; i < nb; i++) {
			if (!bsearch(&l1.v[i], l2.v, l2.n, sizeof(*l2.v), cmp_pid))
				continue;
			if (fds[i] >= 0)
				syscall(__NR_pidfd_send_signal, fds[i], SIGKILL, NULL, 0);
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
	uint64_t start = mono_ms();
	for (unsigned round = 0;; round++) {
		int r = kill_round(dfd);
		if (r < 0)
			return cap_err(err, -r, "read '%s/cgroup.procs'", path);
		if (r == 0)
			return 0;
		if (mono_ms() - start > CG_WAIT_MS)
			return cap_err_plain(err, EBUSY, "processes are still in '%s' after %u rounds of SIGKILL",
					     path, round + 1);
		sleep_ms(round < 10 ? 2 : 10);
	}
}

/* Wait until cgroup.events says "populated 0"; true when it did within CG_WAIT_MS. */
static bool v2_wait_unpopulated(int dfd)
{
	uint64_t start = mono_ms();
	for (unsigned round = 0;; round++) {
		char *s;
		int r = read_at(dfd, "cgroup.events", &s);
		if (r == -ENOENT || r == -ENODEV)
			return true;
		if (r < 0)
			return false;
		long long pop = keyed_value(s, "populated");
		free(s);
		if (pop == 0)
			return true;
		if (mono_ms() - start > CG_WAIT_MS)
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
		if (collect_pids(dfd, &pv, 0) == 0)
			for (size_t i = 0; i < pv.n; i++)
				self_inside |= pv.v[i] == getpid();
		free(pv.v);
		if (!self_inside && write_at(dfd, path, "cgroup.kill", "1", NULL) == 0 && v2_wait_unpopulated(dfd))
			return 0;
	}
	return kill_by_procs(dfd, path, err);
}

static int remove_tree(int parent_fd, const char *parent_path, const char *name, int depth, capsule_error *err);

struct remove_ctx {
	const char *path;
	int depth;
	capsule_error *err;
};

static int remove_sub(int dfd, const char *name, void *ud)
{
	struct remove_ctx *rc = ud;
	return remove_tree(dfd, rc->path, name, rc->depth + 1, rc->err);
}

/* rmdir PARENT_FD/NAME and the sub-cgroups below it, retrying EBUSY for about CG_WAIT_MS.
 * A folder that is already gone is fine. */
static int remove_tree(int parent_fd, const char *parent_path, const char *name, int depth, capsule_error *err)
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
	uint64_t start = mono_ms();
	for (;;) {
		if (unlinkat(parent_fd, name, AT_REMOVEDIR) == 0 || errno == ENOENT)
			return 0;
		if ((errno != EBUSY && errno != ENOTEMPTY) || mono_ms() - start > CG_WAIT_MS)
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
	r = remove_tree(parent_fd, parent_path, name, 0, err);
	return r < 0 ? r : 1;
}

/* ---- creating ------------------------------------------------------------------------------ */

static void dir_close(struct cg_dir *d)
{
	if (d->fd >= 0)
		close(d->fd);
	if (d->parent_fd >= 0)
		close(d->parent_fd);
	d->fd = d->parent_fd = -1;
}

/* Open (creating when missing) BASE/capsule into D->parent_fd / D->parent. */
static int open_parent(struct cg_dir *d, const char *base, capsule_error *err)
{
	int bfd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (bfd < 0)
		return cap_err(err, errno, "open '%s'", base);
	path_join(d->parent, sizeof(d->parent), base, CG_PARENT);
	int r = 0;
	for (int attempt = 0;; attempt++) {
		if (mkdirat(bfd, CG_PARENT, 0755) < 0 && errno != EEXIST) {
			r = cap_err(err, errno, "mkdir '%s'", d->parent);
			break;
		}
		d->parent_fd = open_dir_at(bfd, CG_PARENT);
		if (d->parent_fd >= 0)
			break;
		/* Removed by someone in between: try again a few times. */
		if (errno != ENOENT || attempt >= 3) {
			r = cap_err(err, errno, "open '%s'", d->parent);
			break;
		}
	}
	close(bfd);
	return r;
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
		int r = collect_pids(fd, &pv, 0);
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
		r = remove_tree(d->parent_fd, d->parent, name, 0, err);
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
	return c == C_MEMORY ? "memory" : c == C_PIDS ? "pids" : "cpu";
}

/* "memory limit needs the cgroup memory controller, which is not available: WHY". */
static int unavailable(capsule_error *err, int c, int errnum, const char *why)
{
	return cap_err_plain(err, errnum, "%s limit needs the cgroup %s controller, which is not available: %s",
			     limit_label(c), ctrl_name[c], why);
}

static unsigned needed_ctrls(const struct cgroup_limits *lim)
{
	unsigned m = 0;
	if (lim && lim->memory_bytes)
		m |= CBIT(C_MEMORY);
	if (lim && lim->pids_max)
		m |= CBIT(C_PIDS);
	if (lim && lim->cpus_milli)
		m |= CBIT(C_CPU);
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
		if ((d->ctrls & CBIT(C_MEMORY)) && lim->memory_bytes) {
			fmt_into(val, sizeof(val), "%llu", (unsigned long long)lim->memory_bytes);
			if (h->v2) {
				if ((r = write_at(d->fd, d->path, "memory.max", val, err)) < 0)
					return r;
				if (exists_at(d->fd, "memory.swap.max") &&
				    (r = write_at(d->fd, d->path, "memory.swap.max", "0", err)) < 0)
					return r;
			} else {
				if ((r = write_at(d->fd, d->path, "memory.limit_in_bytes", val, err)) < 0)
					return r;
				if (exists_at(d->fd, "memory.memsw.limit_in_bytes") &&
				    (r = write_at(d->fd, d->path, "memory.memsw.limit_in_bytes", val, err)) < 0)
					return r;
			}
		}
		if ((d->ctrls & CBIT(C_PIDS)) && lim->pids_max) {
			fmt_into(val, sizeof(val), "%u", lim->pids_max);
			if ((r = write_at(d->fd, d->path, "pids.max", val, err)) < 0)
				return r;
		}
		if ((d->ctrls & CBIT(C_CPU)) && lim->cpus_milli) {
			unsigned long long q = cpu_quota_us(lim->cpus_milli);
			if (h->v2) {
				fmt_into(val, sizeof(val), "%llu %llu", q, CG_CPU_PERIOD_US);
				if ((r = write_at(d->fd, d->path, "cpu.max", val, err)) < 0)
					return r;
			} else {
				fmt_into(val, sizeof(val), "%llu", CG_CPU_PERIOD_US);
				if ((r = write_at(d->fd, d->path, "cpu.cfs_period_us", val, err)) < 0)
					return r;
				fmt_into(val, sizeof(val), "%llu", q);
				if ((r = write_at(d->fd, d->path, "cpu.cfs_quota_us", val, err)) < 0)
					return r;
			}
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
			remove_tree(d->parent_fd, d->parent, h->name, 0, NULL);
		dir_close(d);
	}
	h->n = 0;
}

static bool is_permission_error(int r)
{
	return r == -EACCES || r == -EPERM || r == -EROFS;
}

static int create_v1(struct cgroup_handle *h, const struct layout *l, unsigned needed, capsule_error *err)
{
	for (int c = 0; c < C_N; c++) {
		bool need = needed & CBIT(c);
		char why[256];
		if (!v1_usable(l, c, why, sizeof(why))) {
			if (need)
				return unavailable(err, c, EOPNOTSUPP, why);
			continue;
		}
		/* Co-mounted with one we already have (e.g. cpu,cpuacct)? */
		char parent[PATH_MAX];
		path_join(parent, sizeof(parent), l->v1[c], CG_PARENT);
		bool shared = false;
		for (size_t i = 0; i < h->n && !shared; i++) {
			if (strcmp(h->dir[i].parent, parent) == 0) {
				h->dir[i].ctrls |= CBIT(c);
				shared = true;
			}
		}
		if (shared)
			continue;
		struct cg_dir *d = &h->dir[h->n];
		d->fd = d->parent_fd = -1;
		capsule_error e = { 0 };
		int r = open_parent(d, l->v1[c], &e);
		if (r >= 0)
			r = make_sandbox_dir(d, h->name, &e);
		if (r < 0) {
			dir_close(d);
			if (r == -EBUSY || (need && !is_permission_error(r)))
				return cap_err_plain(err, -r, "%s", e.message);
			if (need)
				return unavailable(err, c, -r, e.message);
			continue; /* best effort for a controller no limit needs */
		}
		d->ctrls = CBIT(c);
		h->n++;
	}
	return 0;
}

/* Enable MASK in DFD's cgroup.subtree_control (those not on yet), one controller at a time.
 * Controllers in NEEDED must succeed; others are dropped from *MASK when they fail. */
static int v2_enable(int dfd, const char *path, unsigned *mask, unsigned needed, capsule_error *err)
{
	unsigned on = read_ctrls_at(dfd, "cgroup.subtree_control");
	for (int c = 0; c < C_N; c++) {
		if (!(*mask & CBIT(c)) || (on & CBIT(c)))
			continue;
		char val[32];
		fmt_into(val, sizeof(val), "+%s", ctrl_name[c]);
		capsule_error e = { 0 };
		int r = write_at(dfd, path, "cgroup.subtree_control", val, &e);
		if (r < 0) {
			if (needed & CBIT(c))
				return unavailable(err, c, -r, e.message);
			*mask &= ~CBIT(c);
		}
	}
	return 0;
}

static int create_v2(struct cgroup_handle *h, const struct layout *l, unsigned needed, capsule_error *err)
{
	struct v2_cand *cands = NULL;
	int n = v2_candidates(l, &cands);
	if (n < 0)
		return cap_err(err, -n, "cgroup v2");
	int r = 0;
	const struct v2_cand *base = v2_pick(cands, n, needed);
	if (!base) {
		/* Only reached with needed != 0 or nothing writable. */
		if (!needed)
			goto out; /* the do-nothing handle */
		const struct v2_cand *best = v2_best(cands, n);
		int c = 0;
		unsigned missing = needed & ~(best ? best->usable : 0);
		while (c < C_N && !(missing & CBIT(c)))
			c++;
		char why[512];
		v2_why(l, best, c, why, sizeof(why));
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
	r = open_parent(d, base->path, &e);
	if (r >= 0)
		r = v2_enable(d->parent_fd, d->parent, &mask, needed, &e);
	if (r >= 0)
		r = make_sandbox_dir(d, h->name, &e);
	if (r < 0) {
		dir_close(d);
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

/* ---- public API ---------------------------------------------------------------------------- */

void cgroup_probe(struct cgroup_support *out)
{
	if (!out)
		return;
	memset(out, 0, sizeof(*out));
	struct layout *l = layout_detect();
	if (!l) {
		copy_str(out->reason, sizeof(out->reason), "cgroup probe: out of memory");
		return;
	}
	bool ok[C_N] = { false };
	char why[C_N][256] = { { 0 } };
	if (l->v2) {
		out->v2 = true;
		struct v2_cand *cands = NULL;
		int n = v2_candidates(l, &cands);
		if (n < 0) {
			copy_str(out->reason, sizeof(out->reason), "cgroup probe: out of memory");
			free(l);
			return;
		}
		const struct v2_cand *best = v2_best(cands, n);
		for (int c = 0; c < C_N; c++) {
			ok[c] = best && (best->usable & CBIT(c));
			if (!ok[c])
				v2_why(l, best, c, why[c], sizeof(why[c]));
		}
		free(cands);
	} else {
		for (int c = 0; c < C_N; c++)
			ok[c] = v1_usable(l, c, why[c], sizeof(why[c]));
	}
	out->memory = ok[C_MEMORY];
	out->pids = ok[C_PIDS];
	out->cpu = ok[C_CPU];
	for (int c = 0; c < C_N; c++) {
		if (!ok[c]) {
			fmt_into(out->reason, sizeof(out->reason), "%s: %s", ctrl_name[c], why[c]);
			break;
		}
	}
	free(l);
}

int cgroup_create(struct cgroup_handle **out, const char *name, const struct cgroup_limits *lim,
		  capsule_error *err)
{
	if (!out)
		return cap_err_plain(err, EINVAL, "cgroup_create: no output handle");
	*out = NULL;
	if (!name_valid(name))
		return cap_err_plain(err, EINVAL, "invalid cgroup name '%s': must be one path component",
				     name ? name : "(null)");
	static const struct cgroup_limits none = { 0 };
	if (!lim)
		lim = &none;
	unsigned needed = needed_ctrls(lim);

	struct cgroup_handle *h = calloc(1, sizeof(*h));
	if (!h)
		return cap_err(err, ENOMEM, "cgroup '%s'", name);
	copy_str(h->name, sizeof(h->name), name);
	for (int c = 0; c < C_N; c++)
		h->dir[c].fd = h->dir[c].parent_fd = -1;
	struct layout *l = layout_detect();
	if (!l) {
		free(h);
		return cap_err(err, ENOMEM, "cgroup '%s'", name);
	}
	h->v2 = l->v2;
	int r = h->v2 ? create_v2(h, l, needed, err) : create_v1(h, l, needed, err);
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
		int r = write_at(cg->dir[i].fd, cg->dir[i].path, "cgroup.procs", val, err);
		if (r < 0)
			return r;
	}
	return 0;
}

static bool oom_now(const struct cgroup_handle *cg)
{
	for (size_t i = 0; i < cg->n; i++) {
		const struct cg_dir *d = &cg->dir[i];
		if (!(d->ctrls & CBIT(C_MEMORY)) || d->fd < 0)
			continue;
		char *s;
		if (cg->v2) {
			if (read_at(d->fd, "memory.events", &s) < 0)
				return false;
			long long v = keyed_value(s, "oom_kill");
			free(s);
			return v > 0;
		}
		if (read_at(d->fd, "memory.oom_control", &s) == 0) {
			long long v = keyed_value(s, "oom_kill");
			free(s);
			if (v >= 0)
				return v > 0;
		}
		/* Kernels before 4.13 have no oom_kill count: the limit was hit at least once. */
		if (read_at(d->fd, "memory.failcnt", &s) < 0)
			return false;
		long long v = strtoll(s, NULL, 10);
		free(s);
		return v > 0;
	}
	return false;
}

bool cgroup_oom_killed(struct cgroup_handle *cg)
{
	if (!cg)
		return false;
	if (cg->destroyed)
		return cg->oom_seen;
	return oom_now(cg);
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
				r = remove_tree(d->parent_fd, d->parent, cg->name, 0, &e);
		}
		if (r < 0 && ret == 0)
			ret = cap_err_plain(err, -r, "%s", e.message);
	}
	if (ret == 0)
		cg->destroyed = true;
	return ret;
}

void cgroup_free(struct cgroup_handle *cg)
{
	if (!cg)
		return;
	for (size_t i = 0; i < cg->n; i++)
		dir_close(&cg->dir[i]);
	free(cg);
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
	struct layout *l = layout_detect();
	if (!l)
		return cap_err(err, ENOMEM, "cgroup '%s'", name);
	int found = 0, ret = 0;
	if (l->v2) {
		struct v2_cand *cands = NULL;
		int n = v2_candidates(l, &cands);
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
			int r = remove_under(cands[i].path, name, true, &e);
			if (r > 0)
				found = 1;
			else if (r < 0 && ret == 0)
				ret = cap_err_plain(err, -r, "%s", e.message);
		}
		free(cands);
	} else {
		for (int c = 0; c < C_N; c++) {
			if (!l->v1[c][0])
				continue;
			bool dup = false;
			for (int j = 0; j < c; j++)
				dup |= strcmp(l->v1[c], l->v1[j]) == 0;
			if (dup)
				continue;
			capsule_error e = { 0 };
			int r = remove_under(l->v1[c], name, false, &e);
			if (r > 0)
				found = 1;
			else if (r < 0 && ret == 0)
				ret = cap_err_plain(err, -r, "%s", e.message);
		}
	}
	free(l);
	return ret < 0 ? ret : found;
}

const char *cgroup_controller_path(const struct cgroup_handle *cg, const char *controller)
{
	if (!cg || !controller)
		return NULL;
	for (int c = 0; c < C_N; c++) {
		if (strcmp(controller, ctrl_name[c]) != 0)
			continue;
		for (size_t i = 0; i < cg->n; i++)
			if (cg->dir[i].ctrls & CBIT(c))
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
