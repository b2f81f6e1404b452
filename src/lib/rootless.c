/* capsule for a user who is not root (docs/rootless.md): a sandbox's id maps (the user's
 * subordinate ranges through the setuid newuidmap/newgidmap of the uidmap package, as rootless
 * podman and crun do; a single id where the user has no ranges), the pids limit it gets without
 * cgroups, work done as root of a namespace of the user's ids (removals, saves, image layers),
 * where its shim's socket goes, and what is refused. */
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rootless.h"
#include "home.h"
#include "sandbox_config.h"
#include "util.h"

/* The user's first range in FILE (/etc/subuid or /etc/subgid), named by login or by number as
 * shadow's own lookup allows; count 0 when there is none. */
static void subid_lookup(const char *file, const char *login, unsigned long id, struct rootless_subid *out)
{
	out->start = out->count = 0;
	_cleanup_close_ int fd = open(file, O_RDONLY | O_CLOEXEC);
	_cleanup_free_ char *text = NULL;
	size_t len;
	if (fd < 0 || read_fd_all(fd, 1 << 20, &text, &len) < 0)
		return;
	char num[24];
	snprintf(num, sizeof(num), "%lu", id);
	for (char *save = NULL, *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
		if (!c2)
			continue;
		*c1 = '\0';
		if (strcmp(line, num) != 0 && (!login || strcmp(line, login) != 0))
			continue;
		char *end1, *end2;
		unsigned long start = strtoul(c1 + 1, &end1, 10), count = strtoul(c2 + 1, &end2, 10);
		if (end1 != c2 || *end2 != '\0' || count == 0 || start > UINT32_MAX || count > UINT32_MAX - start)
			continue;
		out->start = (uint32_t)start;
		out->count = (uint32_t)count;
		return;
	}
}

/* NAME's path into PATH (64 bytes), if it is there as the setuid-root program it is meant to
 * be: of no use otherwise. */
static bool find_tool(const char *name, char path[64])
{
	static const char *const dirs[] = { "/usr/bin", "/bin", "/usr/sbin", "/sbin" };
	for (size_t i = 0; i < ARRAY_SIZE(dirs); i++) {
		snprintf(path, 64, "%s/%s", dirs[i], name);
		struct stat st;
		if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & S_ISUID) && st.st_uid == 0)
			return true;
	}
	return false;
}

void rootless_ids(struct rootless_ids *out)
{
	memset(out, 0, sizeof(*out));
	out->uid = geteuid();
	out->gid = getegid();
	struct passwd pw, *res = NULL;
	char buf[4096];
	const char *login = getpwuid_r(out->uid, &pw, buf, sizeof(buf), &res) == 0 && res ? pw.pw_name : NULL;
	subid_lookup("/etc/subuid", login, out->uid, &out->sub_uid);
	subid_lookup("/etc/subgid", login, out->uid, &out->sub_gid); /* by the user, as newgidmap checks */
	/* The sandbox's ids 1..65535 are the first 65535 of each range. */
	if (out->sub_uid.count > ROOTLESS_SUB_IDS)
		out->sub_uid.count = ROOTLESS_SUB_IDS;
	if (out->sub_gid.count > ROOTLESS_SUB_IDS)
		out->sub_gid.count = ROOTLESS_SUB_IDS;
	char path[64];
	out->newuidmap = find_tool("newuidmap", path) && find_tool("newgidmap", path);
	if (!out->newuidmap)
		snprintf(out->note, sizeof(out->note), "no setuid newuidmap/newgidmap (the uidmap package)");
	else if (!out->sub_uid.count || !out->sub_gid.count)
		snprintf(out->note, sizeof(out->note), "no range for this user in /etc/%s", out->sub_uid.count ? "subgid" : "subuid");
	out->ranges = out->newuidmap && out->sub_uid.count && out->sub_gid.count;
	if (out->ranges)
		out->note[0] = '\0';
}

/* newuidmap PID 0 ID 1 1 START COUNT: the tool checks the ranges against /etc/sub[ug]id. */
static int run_map_tool(const char *tool, pid_t pid, unsigned id, const struct rootless_subid *sub, capsule_error *err)
{
	char path[64];
	if (!find_tool(tool, path))
		return cap_err_plain(err, ENOENT, "%s not found", tool);
	char spid[16], sid[16], sstart[16], scount[16];
	snprintf(spid, sizeof(spid), "%d", (int)pid);
	snprintf(sid, sizeof(sid), "%u", id);
	snprintf(sstart, sizeof(sstart), "%u", (unsigned)sub->start);
	snprintf(scount, sizeof(scount), "%u", (unsigned)sub->count);
	char *const argv[] = { (char *)tool, spid, "0", sid, "1", "1", sstart, scount, NULL };
	char out[256];
	int st;
	int r = run_collect(path, argv, out, sizeof(out), &st);
	if (r < 0)
		return cap_err(err, -r, "running '%s'", path);
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
		return 0;
	return cap_err_plain(err, EPERM, "%s %s 0 %s 1 1 %s %s failed%s%s", tool, spid, sid, sstart, scount,
			     out[0] ? ": " : "", out);
}

int proc_pid_write(pid_t pid, const char *file, const char *text, capsule_error *err)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, file);
	_cleanup_close_ int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return cap_err(err, errno, "open '%s'", path);
	int r = write_all(fd, text, strlen(text));
	if (r < 0)
		return cap_err(err, -r, "write '%s' (\"%s\")", path, text);
	return 0;
}

int rootless_map_ids(pid_t pid, const struct rootless_ids *ids, capsule_error *err)
{
	if (ids->ranges) {
		int r = run_map_tool("newuidmap", pid, (unsigned)ids->uid, &ids->sub_uid, err);
		return r < 0 ? r : run_map_tool("newgidmap", pid, (unsigned)ids->gid, &ids->sub_gid, err);
	}
	/* An unprivileged writer may map only its own id, and its gid only once setgroups is
	 * denied (or the namespace could drop a group that denies it access). */
	char map[32];
	int r = proc_pid_write(pid, "setgroups", "deny", err);
	snprintf(map, sizeof(map), "0 %u 1\n", (unsigned)ids->uid);
	if (r == 0)
		r = proc_pid_write(pid, "uid_map", map, err);
	snprintf(map, sizeof(map), "0 %u 1\n", (unsigned)ids->gid);
	return r < 0 ? r : proc_pid_write(pid, "gid_map", map, err);
}

int rootless_limit_pids(uint32_t pids)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NPROC, &rl) < 0)
		return -errno;
	if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur <= pids)
		return 0;
	rl.rlim_cur = pids;
	if (rl.rlim_max == RLIM_INFINITY || rl.rlim_max > pids)
		rl.rlim_max = pids;
	return setrlimit(RLIMIT_NPROC, &rl) < 0 ? -errno : 0;
}

/* In a child of rootless_run_mapped: the ids it maps (0 and 1..count-1, the sandbox's). */
static uint32_t mapped_child_ids;

uint32_t rootless_mapped_ids(void)
{
	return mapped_child_ids;
}

struct mapped_result {
	int ret;
	capsule_error err;
};

static _Noreturn void mapped_child(int (*fn)(void *, capsule_error *), void *arg, const void *out, size_t out_size,
				   uint32_t ids, int ready, int go, int result)
{
	/* A shim is not dumpable; newuidmap needs our /proc files to be ours. */
	prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	char c = unshare(CLONE_NEWUSER) == 0 ? 'y' : 'n';
	if (write(ready, &c, 1) != 1 || c != 'y' || read(go, &c, 1) != 1 || c != 'g')
		_exit(2);
	struct mapped_result res = { 0 };
	if (setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0) {
		res.ret = cap_err(&res.err, errno, "becoming root in a user namespace of the user's ids");
	} else {
		prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
		mapped_child_ids = ids;
		res.ret = fn(arg, &res.err);
	}
	if (write(result, &res, sizeof(res)) == (ssize_t)sizeof(res) && out_size)
		(void)!write_all(result, out, out_size);
	_exit(0);
}

int rootless_run_mapped(int (*fn)(void *arg, capsule_error *err), void *arg, void *out, size_t out_size,
			capsule_error *err)
{
	struct rootless_ids ids;
	if (geteuid() == 0)
		return fn(arg, err);
	rootless_ids(&ids);
	if (!ids.ranges)
		return fn(arg, err);
	/* Found now, as the user: the child, root in its namespace, would take root's home. */
	(void)capsule_home();
	uint32_t n = 1 + (ids.sub_uid.count < ids.sub_gid.count ? ids.sub_uid.count : ids.sub_gid.count);
	int ready[2] = { -1, -1 }, go[2] = { -1, -1 }, result[2] = { -1, -1 };
	if (pipe2(ready, O_CLOEXEC) < 0 || pipe2(go, O_CLOEXEC) < 0 || pipe2(result, O_CLOEXEC) < 0) {
		int e = errno;
		for (int *p = &ready[0]; p <= &result[1]; p++)
			if (*p >= 0)
				close(*p);
		return cap_err(err, e, "pipe");
	}
	pid_t pid = fork();
	if (pid == 0) {
		close(ready[0]);
		close(go[1]);
		close(result[0]);
		mapped_child(fn, arg, out, out_size, n, ready[1], go[0], result[1]);
	}
	close(ready[1]);
	close(go[0]);
	close(result[1]);
	int r = 0;
	char c = 'n';
	if (pid < 0)
		r = cap_err(err, errno, "fork");
	else if (read(ready[0], &c, 1) != 1 || c != 'y')
		r = cap_err_plain(err, EPERM, "creating a user namespace of the user's ids");
	else if ((r = rootless_map_ids(pid, &ids, err)) == 0 && write(go[1], "g", 1) != 1)
		r = cap_err(err, errno, "starting the work in a user namespace of the user's ids");
	close(ready[0]);
	close(go[1]);
	struct mapped_result res;
	ssize_t got = 0;
	if (r == 0) {
		do
			got = read(result[0], &res, sizeof(res));
		while (got < 0 && errno == EINTR);
		if (got == (ssize_t)sizeof(res) && out_size && read_all(result[0], out, out_size) < 0)
			got = 0;
	}
	close(result[0]);
	if (pid > 0) {
		if (r < 0)
			kill(pid, SIGKILL);
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
	}
	if (r < 0)
		return r;
	if (got != (ssize_t)sizeof(res))
		return cap_err_plain(err, EIO, "the work in a user namespace of the user's ids died");
	if (res.ret < 0 && err)
		*err = res.err;
	return res.ret;
}

struct rm_args {
	int dirfd;
	const char *name;
};

static int rm_mapped(void *arg, capsule_error *err)
{
	(void)err;
	struct rm_args *a = arg;
	return rm_rf_at(a->dirfd, a->name);
}

int rootless_rm_rf_at(int dirfd, const char *name)
{
	int r = rm_rf_at(dirfd, name);
	if ((r != -EACCES && r != -EPERM) || geteuid() == 0)
		return r;
	struct rm_args a = { dirfd, name };
	return rootless_run_mapped(rm_mapped, &a, NULL, 0, NULL) == 0 ? 0 : r;
}

/* $XDG_RUNTIME_DIR/capsule, made 0700 if missing, into OUT: when both are folders of ours that no
 * one else may enter, never a folder someone else made or can write to. */
static int runtime_dir(char *out, size_t size)
{
	const char *rt = getenv("XDG_RUNTIME_DIR");
	struct stat st;
	if (!rt || rt[0] != '/' || lstat(rt, &st) < 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid() ||
	    (st.st_mode & 077))
		return -ENOENT;
	if ((size_t)snprintf(out, size, "%s/capsule", rt) >= size)
		return -ENAMETOOLONG;
	if (mkdir(out, 0700) < 0 && errno != EEXIST)
		return -errno;
	if (lstat(out, &st) < 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 077))
		return -EPERM;
	return 0;
}

int rootless_socket_path(const char *name, char *out, size_t size)
{
	if (geteuid() == 0)
		return -ENOENT;
	char dir[256], id[CAPSULE_NAME_MAX + 16];
	int r = runtime_dir(dir, sizeof(dir));
	if (r < 0)
		return r;
	/* The home's digest too: one user's homes ($CAPSULE_HOME) may each have a sandbox NAME. */
	sandbox_cgroup_name(name, id, sizeof(id));
	return (size_t)snprintf(out, size, "%s/%s.sock", dir, id) >= size ? -ENAMETOOLONG : 0;
}

void control_socket_remove(int run_fd)
{
	char target[256], dir[256];
	ssize_t n = readlinkat(run_fd, "control.sock", target, sizeof(target) - 1);
	/* Only a socket of ours: the link lies in a folder of ours, but what it names is checked
	 * to be in the runtime folder before it is removed. */
	if (n > 0 && (target[n] = '\0', runtime_dir(dir, sizeof(dir)) == 0) &&
	    !strncmp(target, dir, strlen(dir)) && target[strlen(dir)] == '/' && !strchr(target + strlen(dir) + 1, '/'))
		unlink(target);
	unlinkat(run_fd, "control.sock", 0);
}
