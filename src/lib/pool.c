/* Warm pools (docs/architecture.md, "Warm pools"): a pool's folder, its keeper's loop, and the
 * take that hands one of its ready sandboxes to a create.
 *
 * $CAPSULE_HOME/pools/<name>/
 *   config         the sandboxes' configuration, checked and its image resolved at create
 *   size           how many it keeps ready ("N\n")
 *   lock           flock held by the keeper while it runs
 *   keeper.log     what the keeper did: each start that failed, and why
 *   keeper.pid     the keeper's pid (meaningful only while the lock is held)
 *   ready/<sb>     an empty file per ready sandbox, made once it runs, removed once it is gone
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "conn.h"
#include "home.h"
#include "json.h"
#include "pool.h"
#include "sandbox.h"
#include "sandbox_config.h"
#include "syscalls.h"
#include "util.h"

#define POOL_NEW_PREFIX ".new-"
#define POOL_RM_PREFIX ".rm-"
#define POOL_LOG_MAX (1u << 20)
#define POOL_RETRY_MIN_MS 500u
#define POOL_RETRY_MAX_MS 30000u
/* How long a refill waits for the taken sandbox's shim to exit (its taker is done with it)
 * before it starts all the same: a start is several ms of CPU on what may be two shared CPUs,
 * taken from the taker's first command if it ran beside it (docs/architecture.md, "Warm pools"). */
#define POOL_REFILL_DEFER_MS 50u
/* How long a remove waits for the keeper to stop the ready sandboxes and let go of its lock. */
#define POOL_RM_WAIT_MS 120000u

static int pool_name_check(const char *name, capsule_error *err)
{
	return validate_name(name, "pool name", err);
}

static int pool_open(int pools, const char *name, int *fd, capsule_error *err)
{
	*fd = openat(pools, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (*fd < 0)
		return errno == ENOENT ? cap_err_plain(err, ENOENT, "no pool named '%s'", name)
				       : cap_err(err, errno, "opening pool '%s'", name);
	return 0;
}

/* A DIR over a dup of FD, from its start: a dup shares the offset that an earlier walk left. */
static DIR *dir_walk(int fd)
{
	int dup = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	DIR *d = dup >= 0 ? fdopendir(dup) : NULL;
	if (!d) {
		if (dup >= 0)
			close(dup);
		return NULL;
	}
	rewinddir(d);
	return d;
}

/* true while a process holds DIR's lock: a keeper runs (or a create has not handed it over). */
static bool pool_locked(int dir)
{
	_cleanup_close_ int fd = openat(dir, "lock", O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return false;
	if (flock(fd, LOCK_EX | LOCK_NB) == 0)
		return false;
	return errno == EWOULDBLOCK;
}

static int pool_read_size(int dir, uint32_t *size)
{
	_cleanup_free_ char *text = NULL;
	size_t len;
	int r = read_file_at(dir, "size", 64, &text, &len);
	if (r < 0)
		return r;
	char *end;
	unsigned long v = strtoul(text, &end, 10);
	if (end == text || v < 1 || v > CAPSULE_POOL_SIZE_MAX)
		return -EINVAL;
	*size = (uint32_t)v;
	return 0;
}

/* Folders of creates and removes whose process is gone (a kill between mkdir and rename, or
 * in the middle of a remove): nothing runs from them any more. */
static void pools_sweep_abandoned(int pools)
{
	DIR *d = dir_walk(pools);
	if (!d)
		return;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (strncmp(de->d_name, POOL_NEW_PREFIX, strlen(POOL_NEW_PREFIX)) &&
		    strncmp(de->d_name, POOL_RM_PREFIX, strlen(POOL_RM_PREFIX)))
			continue;
		const char *dot = strrchr(de->d_name, '.');
		char *end;
		long pid = dot ? strtol(dot + 1, &end, 10) : 0;
		if (pid <= 0 || *end || !(kill((pid_t)pid, 0) < 0 && errno == ESRCH))
			continue;
		_cleanup_close_ int dir = openat(pools, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (dir >= 0 && !pool_locked(dir))
			rm_rf_at(pools, de->d_name);
	}
	closedir(d);
}

/* ---- the keeper --------------------------------------------------------------------- */

static void keeper_log(int dir, const char *fmt, ...) _printf_(2, 3);
static void keeper_log(int dir, const char *fmt, ...)
{
	_cleanup_close_ int fd = openat(dir, "keeper.log", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return;
	struct stat st;
	if (fstat(fd, &st) == 0 && st.st_size > POOL_LOG_MAX)
		(void)ftruncate(fd, 0);
	char line[1024];
	int n = snprintf(line, sizeof(line), "%lld ", (long long)time(NULL));
	va_list ap;
	va_start(ap, fmt);
	n += vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	write_all(fd, line, (size_t)n);
}

struct keeper {
	const char *name;
	int dir, ready;
	struct capsule_config tmpl;
	uint32_t size;
	capsule_sandbox *sb[CAPSULE_POOL_SIZE_MAX];
	int shim[CAPSULE_POOL_SIZE_MAX]; /* a pidfd of each one's shim, or -1 */
	uint32_t n;
	/* Sandboxes taken whose refill waits for their shim to exit or for UNTIL to pass. */
	struct {
		int pidfd;
		uint64_t until;
	} leaving[CAPSULE_POOL_SIZE_MAX];
	uint32_t nleaving;
	uint32_t defer_ms;
	uint32_t retry_ms;
	uint64_t next_try_ms;
};

/* A pidfd of SB's shim, or -1: its state.json names it (the shim runs in our pid namespace).
 * Checked against our connection to it, which only the shim's exit closes while it is ready:
 * one that ended before the pidfd was opened could have left its pid to another process.
 * A wrong or missing pidfd costs only the refill's wait (keeper_forget). */
static int keeper_shim_pidfd(capsule_sandbox *sb)
{
	_cleanup_close_ int run = -1, dir = -1;
	_cleanup_free_ char *state = NULL;
	size_t len;
	int64_t pid;
	if (home_subdir_open("run", &run, NULL) < 0 ||
	    (dir = openat(run, capsule_sandbox_name(sb), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0 ||
	    read_file_at(dir, "state.json", 1u << 16, &state, &len) < 0 || json_get_int(state, len, "shim_pid", &pid) < 0 ||
	    pid <= 0 || pid > INT32_MAX)
		return -1;
	int pidfd = sys_pidfd_open((pid_t)pid, 0);
	struct pollfd p = { .fd = sandbox_owner_fd(sb), .events = POLLIN };
	if (pidfd >= 0 && poll(&p, 1, 0) != 0) {
		close(pidfd);
		return -1;
	}
	return pidfd;
}

/* Start one ready sandbox; its entry in ready/ comes only once it runs. */
static int keeper_add(struct keeper *k, capsule_error *err)
{
	capsule_sandbox *sb;
	int r = sandbox_create_unpooled(&sb, &k->tmpl, NULL, NULL, err);
	if (r < 0)
		return r;
	const char *name = capsule_sandbox_name(sb);
	_cleanup_close_ int fd = openat(k->ready, name, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		r = cap_err(err, errno, "marking sandbox '%s' ready in pool '%s'", name, k->name);
		capsule_sandbox_stop(sb, 0, NULL);
		capsule_sandbox_free(sb);
		return r;
	}
	k->shim[k->n] = keeper_shim_pidfd(sb);
	k->sb[k->n++] = sb;
	return 0;
}

/* Sandbox I's shim hung up on us: it was taken (TAKE hands it to the taker and closes the
 * keeper's connection) or it died. Either way it is no longer ours; closing our end now ends
 * nothing. DEFER: its refill waits for its shim to exit (at once for one that died), for at
 * most K->DEFER_MS. */
static void keeper_forget(struct keeper *k, uint32_t i, bool defer)
{
	unlinkat(k->ready, capsule_sandbox_name(k->sb[i]), 0);
	capsule_sandbox_free(k->sb[i]);
	if (defer && k->shim[i] >= 0)
		k->leaving[k->nleaving++] = (typeof(k->leaving[0])){ k->shim[i], now_ms() + k->defer_ms };
	else if (k->shim[i] >= 0)
		close(k->shim[i]);
	k->n--;
	k->sb[i] = k->sb[k->n];
	k->shim[i] = k->shim[k->n];
}

/* The refills whose wait is over (POLLED: poll's answers for the first NPOLLED). */
static void keeper_left(struct keeper *k, const struct pollfd *polled, uint32_t npolled)
{
	uint64_t now = now_ms();
	for (uint32_t i = k->nleaving; i-- > 0;) {
		if (!(i < npolled && polled[i].revents) && now < k->leaving[i].until)
			continue;
		close(k->leaving[i].pidfd);
		k->leaving[i] = k->leaving[--k->nleaving];
	}
}

static void keeper_fill(struct keeper *k)
{
	while (k->n + k->nleaving < k->size && now_ms() >= k->next_try_ms) {
		capsule_error e = { 0 };
		if (keeper_add(k, &e) == 0) {
			k->retry_ms = 0;
			continue;
		}
		/* A start that failed (the host's memory, a vm that did not boot) is tried again,
		 * later each time, never in a loop that spends the host. */
		k->retry_ms = k->retry_ms ? k->retry_ms * 2 : POOL_RETRY_MIN_MS;
		if (k->retry_ms > POOL_RETRY_MAX_MS)
			k->retry_ms = POOL_RETRY_MAX_MS;
		k->next_try_ms = now_ms() + k->retry_ms;
		keeper_log(k->dir, "start failed (next try in %u ms): %s", k->retry_ms, e.message);
	}
}

static void keeper_stop_all(struct keeper *k)
{
	while (k->n) {
		capsule_sandbox_stop(k->sb[k->n - 1], 0, NULL);
		keeper_forget(k, k->n - 1, false);
	}
	while (k->nleaving)
		close(k->leaving[--k->nleaving].pidfd);
}

static void keeper_report(int fd, int r, const capsule_error *err)
{
	char line[600];
	int n = snprintf(line, sizeof(line), "%d %s\n", r < 0 ? (err->code ? err->code : -r) : 0,
			 r < 0 ? err->message : "ready");
	write_all(fd, line, (size_t)(n < (int)sizeof(line) ? n : (int)sizeof(line) - 1));
}

int pool_keep(const char *name, int report_fd, int lock_fd)
{
	struct keeper k = { .name = name, .dir = -1, .ready = -1, .defer_ms = POOL_REFILL_DEFER_MS };
	/* tests/e2e/test_pools.py: a wait long enough that only the shim's exit ends it. */
	const char *defer = getenv("CAPSULE_TEST_POOL_REFILL_DEFER_MS");
	if (defer && *defer)
		k.defer_ms = (uint32_t)strtoul(defer, NULL, 10);
	capsule_error err = { 0 };
	_cleanup_close_ int pools = -1, dir = -1, ready = -1, ino = -1, sig = -1;
	int r = pool_name_check(name, &err);
	if (r == 0)
		r = home_subdir_open("pools", &pools, &err);
	if (r == 0)
		r = pool_open(pools, name, &dir, &err);
	struct stat have, want;
	if (r == 0 && (fstat(lock_fd, &have) < 0 || fstatat(dir, "lock", &want, AT_SYMLINK_NOFOLLOW) < 0 ||
		       have.st_ino != want.st_ino || have.st_dev != want.st_dev || flock(lock_fd, LOCK_EX | LOCK_NB) < 0))
		r = cap_err_plain(&err, EBADF, "capsule-pool-keeper was not given the lock of pool '%s'", name);
	if (r == 0 && (ready = openat(dir, "ready", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0)
		r = cap_err(&err, errno, "opening the ready folder of pool '%s'", name);
	if (r == 0 && (r = pool_read_size(dir, &k.size)) < 0)
		cap_err(&err, -r, "reading the size of pool '%s'", name);
	if (r == 0)
		r = config_load_at(dir, &k.tmpl, &err);
	if (r < 0) {
		keeper_report(report_fd, r, &err);
		return 1;
	}
	k.dir = dir;
	k.ready = ready;
	snprintf(k.tmpl.pool, sizeof(k.tmpl.pool), "%s", name);
	k.tmpl.detached = false;
	k.tmpl.name[0] = '\0';

	/* The pool's folder renamed away (a remove) or deleted: the keeper's cue to end. */
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", dir);
	ino = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
	if (ino < 0 || inotify_add_watch(ino, path, IN_MOVE_SELF | IN_DELETE_SELF) < 0) {
		r = cap_err(&err, errno, "watching the folder of pool '%s'", name);
		keeper_report(report_fd, r, &err);
		return 1;
	}
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	sig = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	signal(SIGPIPE, SIG_IGN);

	/* The first one is started before the creator hears back, so a configuration that cannot
	 * start fails the create with the start's own words. */
	if ((r = keeper_add(&k, &err)) < 0) {
		keeper_report(report_fd, r, &err);
		config_clear(&k.tmpl);
		return 1;
	}
	char pid[16];
	int pidlen = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
	write_file_atomic_at(dir, "keeper.pid", pid, (size_t)pidlen, 0600, false);
	keeper_report(report_fd, 0, NULL);
	close(report_fd);
	keeper_log(dir, "keeper %d started, size %u", (int)getpid(), k.size);

	for (;;) {
		keeper_fill(&k);
		/* The signals, the folder's watch, the ready sandboxes' connections, then the
		 * pidfds of the taken ones whose refill waits. */
		struct pollfd pfd[2 * CAPSULE_POOL_SIZE_MAX + 2];
		pfd[0] = (struct pollfd){ .fd = ino, .events = POLLIN };
		pfd[1] = (struct pollfd){ .fd = sig, .events = POLLIN };
		for (uint32_t i = 0; i < k.n; i++)
			pfd[2 + i] = (struct pollfd){ .fd = sandbox_owner_fd(k.sb[i]), .events = POLLIN };
		struct pollfd *lpfd = pfd + 2 + k.n;
		for (uint32_t i = 0; i < k.nleaving; i++)
			lpfd[i] = (struct pollfd){ .fd = k.leaving[i].pidfd, .events = POLLIN };
		int timeout = -1;
		uint64_t now = now_ms(), wake = UINT64_MAX;
		if (k.n + k.nleaving < k.size)
			wake = k.next_try_ms;
		for (uint32_t i = 0; i < k.nleaving; i++)
			wake = k.leaving[i].until < wake ? k.leaving[i].until : wake;
		if (wake != UINT64_MAX)
			timeout = wake > now ? (int)(wake - now) : 0;
		uint32_t polled = k.n, lpolled = k.nleaving;
		if (poll(pfd, 2 + polled + lpolled, timeout) < 0 && errno != EINTR)
			break;
		if (pfd[0].revents || pfd[1].revents)
			break;
		/* The waits first: forgetting a sandbox below adds to them. */
		keeper_left(&k, lpfd, lpolled);
		/* From the last, so that moving the last into a freed place skips nothing. */
		for (uint32_t i = polled; i-- > 0;)
			if (pfd[2 + i].revents)
				keeper_forget(&k, i, true);
	}
	keeper_stop_all(&k);
	keeper_log(dir, "keeper %d ended", (int)getpid());
	config_clear(&k.tmpl);
	return 0;
}

/* ---- create, list, remove ------------------------------------------------------------ */

static int pools_count(int pools)
{
	DIR *d = dir_walk(pools);
	if (!d)
		return 0;
	int n = 0;
	struct dirent *de;
	while ((de = readdir(d)))
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

/* Start the keeper of the pool whose folder is locked by LOCKFD and wait for its word on the
 * first sandbox. */
static int keeper_start(const char *name, int lockfd, uint32_t boot_timeout_ms, capsule_error *err)
{
	_cleanup_free_ char *keeper = NULL;
	int r = find_helper("capsule-pool-keeper", &keeper, err);
	if (r < 0)
		return r;
	int sp[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0)
		return cap_err(err, errno, "socketpair");
	char *argv[] = { (char *)"capsule-pool-keeper", (char *)"--pool", (char *)name, NULL };
	r = spawn_helper_detached(keeper, argv, sp[1], lockfd, err);
	close(sp[1]);
	_cleanup_close_ int s = sp[0];
	if (r < 0)
		return r;
	struct pollfd p = { .fd = s, .events = POLLIN };
	r = poll(&p, 1, (int)boot_timeout_ms + 10000);
	char line[600];
	ssize_t n = r > 0 ? read(s, line, sizeof(line) - 1) : 0;
	if (r == 0)
		return cap_err_plain(err, ETIMEDOUT, "the keeper of pool '%s' did not start a sandbox in time", name);
	if (n <= 0)
		return cap_err_plain(err, ECHILD, "the keeper of pool '%s' exited during its start", name);
	line[n] = '\0';
	line[strcspn(line, "\n")] = '\0';
	char *msg;
	long code = strtol(line, &msg, 10);
	if (code == 0)
		return 0;
	return cap_err_plain(err, code > 0 && code < 4096 ? (int)code : EIO, "%s", *msg ? msg + 1 : "pool start failed");
}

static int pool_make_folder(int pools, const char *name, const char *text, size_t len, uint32_t size, int *lock_out,
			    capsule_error *err)
{
	char tmp[CAPSULE_NAME_MAX + 32];
	snprintf(tmp, sizeof(tmp), POOL_NEW_PREFIX "%s.%d", name, (int)getpid());
	rm_rf_at(pools, tmp);
	if (mkdirat(pools, tmp, 0700) < 0)
		return cap_err(err, errno, "creating the folder of pool '%s'", name);
	_cleanup_close_ int dir = openat(pools, tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	_cleanup_close_ int lockfd = -1;
	char sz[16];
	int szlen = snprintf(sz, sizeof(sz), "%u\n", size);
	int r = 0;
	if (dir < 0 || (lockfd = openat(dir, "lock", O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600)) < 0 ||
	    flock(lockfd, LOCK_EX | LOCK_NB) < 0 || mkdirat(dir, "ready", 0700) < 0)
		r = cap_err(err, errno, "creating the folder of pool '%s'", name);
	else if ((r = write_file_atomic_at(dir, "config", text, len, 0600, false)) < 0 ||
		 (r = write_file_atomic_at(dir, "size", sz, (size_t)szlen, 0600, false)) < 0)
		cap_err(err, -r, "writing the configuration of pool '%s'", name);
	else if (renameat2(pools, tmp, pools, name, RENAME_NOREPLACE) < 0)
		r = errno == EEXIST ? cap_err_plain(err, EEXIST, "a pool named '%s' already exists", name)
				    : cap_err(err, errno, "creating the folder of pool '%s'", name);
	if (r < 0) {
		rm_rf_at(pools, tmp);
		return r;
	}
	*lock_out = take_fd(lockfd);
	return 0;
}

/* Move pool NAME out of the way (its keeper sees that and ends), wait for the keeper to let go
 * of the lock (it has stopped every ready sandbox by then), stop whatever a dead keeper left,
 * and delete the folder. */
static int pool_dismantle(int pools, const char *name, capsule_error *err)
{
	char gone[CAPSULE_NAME_MAX + 32];
	snprintf(gone, sizeof(gone), POOL_RM_PREFIX "%s.%d", name, (int)getpid());
	rm_rf_at(pools, gone);
	if (renameat2(pools, name, pools, gone, RENAME_NOREPLACE) < 0)
		return errno == ENOENT ? cap_err_plain(err, ENOENT, "no pool named '%s'", name)
				       : cap_err(err, errno, "removing pool '%s'", name);
	_cleanup_close_ int dir = openat(pools, gone, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	_cleanup_close_ int lockfd = dir >= 0 ? openat(dir, "lock", O_RDWR | O_CLOEXEC | O_NOFOLLOW) : -1;
	for (uint64_t deadline = now_ms() + POOL_RM_WAIT_MS; lockfd >= 0 && flock(lockfd, LOCK_EX | LOCK_NB) < 0;) {
		if (now_ms() >= deadline) {
			renameat2(pools, gone, pools, name, RENAME_NOREPLACE);
			return cap_err_plain(err, ETIMEDOUT, "the keeper of pool '%s' did not stop its sandboxes in time",
					     name);
		}
		poll(NULL, 0, 5);
	}
	/* A keeper killed with SIGKILL left entries; its sandboxes end on their own when its
	 * connections close, and one still on its way out is stopped here. */
	_cleanup_close_ int rfd = dir >= 0 ? openat(dir, "ready", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) : -1;
	DIR *d = rfd >= 0 ? fdopendir(rfd) : NULL;
	if (d) {
		rfd = -1;
		struct dirent *de;
		while ((de = readdir(d))) {
			if (de->d_name[0] == '.' || validate_name(de->d_name, "name", NULL) < 0)
				continue;
			capsule_sandbox *sb;
			if (capsule_sandbox_open(&sb, de->d_name, NULL) < 0)
				continue;
			bool ours = !strcmp(sandbox_config(sb)->pool, name);
			capsule_sandbox_free(sb);
			if (ours)
				capsule_sandbox_remove(de->d_name, true, NULL);
		}
		closedir(d);
	}
	int r = rm_rf_at(pools, gone);
	return r < 0 ? cap_err(err, -r, "removing the folder of pool '%s'", name) : 0;
}

int capsule_pool_create(const char *name, const capsule_config *cfg, uint32_t size, capsule_error *err)
{
	int r = pool_name_check(name, err);
	if (r < 0)
		return r;
	if (size < 1 || size > CAPSULE_POOL_SIZE_MAX)
		return cap_err_plain(err, EINVAL, "invalid pool size %u: must be from 1 to %u", size, CAPSULE_POOL_SIZE_MAX);
	if (cfg->pool[0])
		return cap_err_plain(err, EINVAL, "a pool's sandboxes cannot come from a pool ('%s')", cfg->pool);
	if (cfg->nports)
		return cap_err_plain(err, EINVAL,
				     "a pool's sandboxes cannot publish ports (-p): each would need the same host port");
	struct capsule_config tmpl;
	if ((r = config_copy(&tmpl, cfg)) < 0)
		return cap_err(err, -r, "copying the configuration");
	/* A configuration file names a sandbox: the pool's name stands in, each sandbox gets its own. */
	snprintf(tmpl.name, sizeof(tmpl.name), "%s", name);
	tmpl.origin[0] = '\0';
	tmpl.detached = false;
	tmpl.progress = NULL;
	tmpl.progress_payload = NULL;
	tmpl.created_unix = 0;
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	_cleanup_close_ int pools = -1, lockfd = -1;
	if ((r = sandbox_config_prepare(&tmpl, err)) < 0 || (r = home_subdir_open("pools", &pools, err)) < 0)
		goto out;
	pools_sweep_abandoned(pools);
	if (pools_count(pools) >= CAPSULE_POOLS_MAX) {
		r = cap_err_plain(err, ENOSPC, "too many pools (at most %u): remove one first", CAPSULE_POOLS_MAX);
		goto out;
	}
	if ((r = config_serialize(&tmpl, &text, &len)) < 0) {
		r = cap_err(err, -r, "writing the configuration of pool '%s'", name);
		goto out;
	}
	if ((r = pool_make_folder(pools, name, text, len, size, &lockfd, err)) < 0)
		goto out;
	/* From here on a failure takes the folder away again: nothing is left half-made. */
	if ((r = keeper_start(name, lockfd, config_boot_timeout_ms(&tmpl), err)) < 0) {
		cap_err_wrap(err, r, "starting pool '%s'", name);
		close(lockfd);
		lockfd = -1;
		pool_dismantle(pools, name, NULL);
	}
out:
	config_clear(&tmpl);
	return r;
}

int capsule_pool_remove(const char *name, capsule_error *err)
{
	int r = pool_name_check(name, err);
	_cleanup_close_ int pools = -1;
	if (r < 0 || (r = home_subdir_open("pools", &pools, err)) < 0)
		return r;
	pools_sweep_abandoned(pools);
	return pool_dismantle(pools, name, err);
}

/* How many entries of ready/ name a sandbox that is still there. */
static uint32_t pool_ready_count(int dir)
{
	_cleanup_close_ int fd = openat(dir, "ready", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	_cleanup_close_ int run = -1;
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	if (!d)
		return 0;
	fd = -1;
	uint32_t n = 0;
	struct dirent *de;
	bool have_run = home_subdir_open("run", &run, NULL) == 0;
	while ((de = readdir(d))) {
		struct stat st;
		if (de->d_name[0] != '.' && have_run && fstatat(run, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0)
			n++;
	}
	closedir(d);
	return n;
}

/* The configuration's lines as {key: value}, a repeated key's values as a list. */
static void pool_options_json(struct json_writer *j, char *text)
{
	char *lines[512];
	size_t n = 0;
	for (char *save = NULL, *l = strtok_r(text, "\n", &save); l && n < ARRAY_SIZE(lines); l = strtok_r(NULL, "\n", &save))
		if (strchr(l, '='))
			lines[n++] = l;
	static const char *const skip[] = { "version", "name", "created", "id_slot", "detached", "pool", "origin" };
	json_key(j, "options");
	json_object_begin(j);
	for (size_t i = 0; i < n; i++) {
		size_t klen = (size_t)(strchr(lines[i], '=') - lines[i]);
		bool seen = false, skipped = false;
		for (size_t s = 0; s < ARRAY_SIZE(skip); s++)
			skipped |= strlen(skip[s]) == klen && !strncmp(lines[i], skip[s], klen);
		for (size_t p = 0; p < i && !seen; p++)
			seen = !strncmp(lines[p], lines[i], klen + 1);
		if (seen || skipped)
			continue;
		size_t count = 0;
		for (size_t q = i; q < n; q++)
			count += !strncmp(lines[q], lines[i], klen + 1);
		char key[64];
		snprintf(key, sizeof(key), "%.*s", (int)klen, lines[i]);
		json_key(j, key);
		if (count > 1)
			json_array_begin(j);
		for (size_t q = i; q < n; q++)
			if (!strncmp(lines[q], lines[i], klen + 1))
				json_string(j, lines[q] + klen + 1);
		if (count > 1)
			json_array_end(j);
	}
	json_object_end(j);
}

/* The pools folder (*POOLS), swept of what dead creates and removes left, and a walk over it. */
static int pools_walk(int *pools, DIR **d, capsule_error *err)
{
	int r = home_subdir_open("pools", pools, err);
	if (r < 0)
		return r;
	pools_sweep_abandoned(*pools);
	if (!(*d = dir_walk(*pools)))
		return cap_err(err, errno, "listing '%s/pools'", capsule_home());
	return 0;
}

int capsule_pool_list_json(char **json_out, capsule_error *err)
{
	_cleanup_close_ int pools = -1;
	DIR *d;
	int r = pools_walk(&pools, &d, err);
	if (r < 0)
		return r;
	struct json_writer j;
	json_init(&j, false);
	json_array_begin(&j);
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		_cleanup_close_ int dir = openat(pools, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		uint32_t size;
		_cleanup_free_ char *text = NULL;
		size_t len;
		struct stat st;
		if (dir < 0 || pool_read_size(dir, &size) < 0 || read_file_at(dir, "config", 1u << 20, &text, &len) < 0 ||
		    fstat(dir, &st) < 0)
			continue;
		bool keeper = pool_locked(dir);
		json_object_begin(&j);
		json_kv_string(&j, "name", de->d_name);
		json_kv_uint(&j, "size", size);
		json_kv_uint(&j, "ready", keeper ? pool_ready_count(dir) : 0);
		json_kv_bool(&j, "keeper", keeper);
		/* Only while the lock says it runs: a pid read after the keeper died may be anyone's. */
		_cleanup_free_ char *pid = NULL;
		size_t pidlen;
		json_kv_int(&j, "keeper_pid", keeper && read_file_at(dir, "keeper.pid", 32, &pid, &pidlen) == 0 ? atoll(pid) : 0);
		json_kv_int(&j, "created", (int64_t)st.st_mtime);
		pool_options_json(&j, text);
		json_object_end(&j);
	}
	closedir(d);
	json_array_end(&j);
	int e = 0;
	*json_out = json_steal(&j, &e);
	if (!*json_out)
		return cap_err(err, e ? -e : ENOMEM, "listing pools");
	return 0;
}

/* Pools whose keeper is gone (killed, or the host restarted): nothing keeps them any more. */
int pool_prune(capsule_error *err)
{
	_cleanup_close_ int pools = -1;
	DIR *d;
	int r = pools_walk(&pools, &d, err);
	if (r < 0)
		return r;
	struct dirent *de;
	int removed = 0;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.' || validate_name(de->d_name, "name", NULL) < 0)
			continue;
		_cleanup_close_ int dir = openat(pools, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (dir >= 0 && !pool_locked(dir) && pool_dismantle(pools, de->d_name, NULL) == 0)
			removed++;
	}
	closedir(d);
	return removed;
}

/* ---- take ------------------------------------------------------------------------------ */

/* A take gives a name and whether the sandbox is detached; every other setting is the pool's.
 * A setting given all the same must be the default or the pool's own (POOL_TEXT, its
 * configuration's lines); the first that is neither is named. */
/* Whether LINE ("key=value") sets one of the settings a take may give beside the pool's own. */
static bool take_own_line(const char *line)
{
	static const char *const own[] = { "name=", "pool=", "origin=", "detached=", "created=" };
	for (size_t i = 0; i < ARRAY_SIZE(own); i++)
		if (!strncmp(line, own[i], strlen(own[i])))
			return true;
	return false;
}

static int pool_request_check(const struct capsule_config *req, const char *pool_text, capsule_error *err)
{
	/* REQ is serialized as it is, its own settings' lines passed over, and a default
	 * configuration only when a line is not the pool's: a copy of REQ and a fresh one, 40 KB
	 * each, were a third of a pooled `capsule run`'s page faults. */
	_cleanup_free_ char *ta = NULL, *tb = NULL, *hay = NULL;
	size_t la, lb;
	capsule_config *fresh = NULL;
	int r = config_serialize(req, &ta, &la);
	if (r < 0)
		return cap_err(err, -r, "comparing the configuration with pool '%s'", req->pool);
	/* Each line of the request must be a line of the pool's configuration or of a fresh one
	 * ("\nLINE\n" in either). */
	if (asprintf(&hay, "\n%s\n", pool_text) < 0) {
		hay = NULL;
		return cap_err(err, ENOMEM, "comparing the configuration with pool '%s'", req->pool);
	}
	for (char *save = NULL, *l = strtok_r(ta, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		if (take_own_line(l))
			continue;
		_cleanup_free_ char *needle = NULL;
		if (asprintf(&needle, "\n%s\n", l) < 0) {
			r = cap_err(err, ENOMEM, "comparing the configuration with pool '%s'", req->pool);
			goto out;
		}
		if (strstr(hay, needle))
			continue;
		if (!tb) {
			if ((r = capsule_config_new(&fresh, err)) < 0)
				goto out;
			if ((r = config_serialize(fresh, &tb, &lb)) < 0) {
				r = cap_err(err, -r, "comparing the configuration with pool '%s'", req->pool);
				goto out;
			}
			/* "\n" before the first line: tb's own first is "version=1". */
			char *t = NULL;
			if (asprintf(&t, "\n%s", tb) < 0) {
				r = cap_err(err, ENOMEM, "comparing the configuration with pool '%s'", req->pool);
				goto out;
			}
			free(tb);
			tb = t;
		}
		if (!strstr(tb, needle)) {
			r = cap_err_plain(err, EINVAL, "a sandbox from pool '%s' has the pool's options: '%.*s' differs from them",
					  req->pool, (int)strcspn(l, "="), l);
			goto out;
		}
	}
	r = 0;
out:
	capsule_config_free(fresh);
	return r;
}

static int pool_take_one(const char *pool, const char *ready, const char *name, bool detached, struct conn *c,
			 capsule_error *err)
{
	int r = conn_open_pipelined(c, ready, -1, NULL);
	if (r < 0)
		return r;
	struct cp_take m = { .name = (char *)(name[0] ? name : ready), .pool = (char *)pool, .detached = detached };
	if ((r = cp_take_encode(&c->w, 1, &m)) < 0 || (r = shim_request(c, NULL, err)) < 0) {
		conn_close(c);
		return r;
	}
	return 0;
}

/* None ready (a burst took them all, or the keeper is gone): one is started cold with the
 * pool's options, as the keeper would have. A function of its own: its 40 KB configuration
 * in pool_take's frame put every call below it on stack pages of its own, each a fault. */
static __attribute__((noinline)) int pool_take_cold(capsule_sandbox **out, int dir, const struct capsule_config *req,
						     capsule_error *err)
{
	struct capsule_config cold;
	int r = config_load_at(dir, &cold, err);
	if (r < 0)
		return r;
	snprintf(cold.name, sizeof(cold.name), "%s", req->name);
	cold.detached = req->detached;
	cold.progress = req->progress;
	cold.progress_payload = req->progress_payload;
	r = sandbox_create_unpooled(out, &cold, NULL, NULL, err);
	config_clear(&cold);
	return r;
}

int pool_take(capsule_sandbox **out, const struct capsule_config *req, capsule_error *err)
{
	_cleanup_close_ int pools = -1, dir = -1, rfd = -1;
	_cleanup_free_ char *pool_text = NULL;
	size_t pool_len;
	int r;
	if ((r = home_subdir_open("pools", &pools, err)) < 0 || (r = pool_open(pools, req->pool, &dir, err)) < 0)
		return r;
	if ((r = read_file_at(dir, "config", 1u << 20, &pool_text, &pool_len)) < 0)
		return cap_err(err, -r, "reading the configuration of pool '%s'", req->pool);
	if ((r = pool_request_check(req, pool_text, err)) < 0)
		return r;
	if (req->name[0]) {
		if ((r = validate_name(req->name, "sandbox name", err)) < 0)
			return r;
		sweep_stale(req->name);
	}
	char ready[CAPSULE_POOL_SIZE_MAX][CAPSULE_NAME_MAX + 1];
	size_t n = 0;
	rfd = openat(dir, "ready", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	DIR *d = rfd >= 0 ? fdopendir(rfd) : NULL;
	if (d) {
		rfd = -1;
		struct dirent *de;
		while ((de = readdir(d)) && n < CAPSULE_POOL_SIZE_MAX)
			if (de->d_name[0] != '.' && validate_name(de->d_name, "name", NULL) == 0)
				snprintf(ready[n++], sizeof(ready[0]), "%s", de->d_name);
		closedir(d);
	}
	/* From a random place: concurrent takers mostly ask different shims first. */
	uint32_t start = 0;
	if (n && getrandom(&start, sizeof(start), 0) != (ssize_t)sizeof(start))
		start = (uint32_t)now_ns();
	for (size_t i = 0; i < n; i++) {
		const char *cand = ready[(start + i) % n];
		struct conn c;
		capsule_error e = { 0 };
		r = pool_take_one(req->pool, cand, req->name, req->detached, &c, &e);
		if (r == -EEXIST) {
			*err = e;
			return r;
		}
		if (r == 0) {
			r = sandbox_from_take(out, req->name[0] ? req->name : cand, &c, err);
			if (r < 0)
				conn_close(&c);
			return r;
		}
	}
	return pool_take_cold(out, dir, req, err);
}
