/* Sandbox lifecycle: create (spawn a shim), open, start, stop, remove (inspect and list:
 * sandbox_inspect.c). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>

#include "conn.h"
#include "home.h"
#include "id_slot.h"
#include "json.h"
#include "layer_disk.h"
#include "proto.h"
#include "rootless.h"
#include "sandbox.h"
#include "sandbox_config.h"
#include "save.h"
#include "util.h"
#include "volume.h"

struct capsule_sandbox {
	struct capsule_config cfg;
	struct conn owner; /* the creator's socket to an ephemeral sandbox's shim; fd -1 if none */
	bool owner_lent;   /* a command is using owner (taken and given back atomically) */
	bool owner_kept;   /* owner is a plain connection we opened to reuse, not the creator's */
	uint32_t owner_next_chan;
	pid_t shim_pid;    /* an ephemeral sandbox's shim is our child, reaped when it ends; else 0 */
	bool taken;        /* an ephemeral sandbox taken from a pool: its shim is not our child */
	bool kept_stopped; /* an ephemeral sandbox stopped by capsule_sandbox_stop_keep: ours to remove */
	int run_dir;       /* run/NAME as the open found it running, lent once to a connection; else -1 */
};

static void progress(const struct capsule_config *cfg, const char *stage, uint64_t cur, uint64_t total)
{
	if (cfg->progress)
		cfg->progress(stage, cur, total, cfg->progress_payload);
}

static void random_hex8(char out[9])
{
	uint8_t b[4];
	if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b)) {
		uint64_t t = now_ns();
		memcpy(b, &t, sizeof(b));
	}
	snprintf(out, 9, "%02x%02x%02x%02x", b[0], b[1], b[2], b[3]);
}

static void generate_name(char *out, size_t n)
{
	char hex[9];
	random_hex8(hex);
	snprintf(out, n, "capsule-%s", hex);
}

/* Start the shim for the sandbox whose folder RUN_FD is, holding its lock LOCKFD. RESTORE: the
 * shim resumes the sandbox from its memory state on disk (only a detached sandbox is ever
 * paused to disk). */
static int launch(capsule_sandbox *sb, int lockfd, bool restore, capsule_error *err)
{
	progress(&sb->cfg, "starting", 1, 3);
	struct conn c;
	int r = shim_launch(&sb->cfg, lockfd, restore, &c, &sb->shim_pid, err);
	if (r < 0)
		return r;
	progress(&sb->cfg, "ready", 3, 3);
	if (sb->cfg.detached)
		conn_close(&c);
	else
		sb->owner = c;
	return 0;
}

/* A connection whose shim has gone (the sandbox was stopped and maybe started again). */
static bool conn_dead(const struct conn *c)
{
	char b;
	ssize_t n = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
	return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

static int sandbox_take_run_dir(capsule_sandbox *sb)
{
	int fd = sb->run_dir;
	sb->run_dir = -1;
	return fd;
}

static struct conn *borrow_conn(capsule_sandbox *sb, uint32_t *chan, bool may_open, bool last)
{
	if (__atomic_exchange_n(&sb->owner_lent, true, __ATOMIC_ACQUIRE))
		return NULL;
	if (!may_open && (sb->owner.fd < 0 || (sb->owner_kept && conn_dead(&sb->owner)))) {
		__atomic_store_n(&sb->owner_lent, false, __ATOMIC_RELEASE);
		return NULL;
	}
	/* A handle that did not create its sandbox keeps one connection of its own for the
	 * calls that need one, so that each exec or file operation does not pay a connect
	 * and a HELLO round trip. It is an ordinary client: closing it stops nothing. */
	if (sb->owner.fd >= 0 && sb->owner_kept && conn_dead(&sb->owner)) {
		conn_close(&sb->owner);
		sb->owner_kept = false;
	}
	if (sb->owner.fd < 0) {
		/* The folder the open found running, if not used yet. Should that sandbox have
		 * ended since, the connect fails and the caller opens its own, walking to the
		 * folder again: a new sandbox of the name is then found. */
		int dir = sandbox_take_run_dir(sb);
		if ((last ? conn_open_one_command(&sb->owner, sb->cfg.name, dir, NULL)
			  : conn_open_pipelined(&sb->owner, sb->cfg.name, dir, NULL)) < 0) {
			sb->owner.fd = -1;
			__atomic_store_n(&sb->owner_lent, false, __ATOMIC_RELEASE);
			return NULL;
		}
		sb->owner_kept = true;
		sb->owner_next_chan = 2;
	}
	/* Channel 1 is the stop request's; commands count up from 2. */
	if (sb->owner_next_chan < 2)
		sb->owner_next_chan = 2;
	*chan = sb->owner_next_chan++;
	return &sb->owner;
}

int sandbox_gone(const capsule_sandbox *sb, capsule_error *err)
{
	_cleanup_close_ int dir = -1;
	if (run_dir_open(sb->cfg.name, &dir, NULL) == 0 && !run_dir_locked(dir) && run_dir_paused_to_disk(dir))
		return cap_err_plain(err, EBUSY, "sandbox '%s' is paused to disk: resume it first", sb->cfg.name);
	return cap_err_plain(err, ESHUTDOWN, "sandbox '%s' stopped", sb->cfg.name);
}

void sandbox_drop_kept_conn(capsule_sandbox *sb)
{
	if (__atomic_exchange_n(&sb->owner_lent, true, __ATOMIC_ACQUIRE))
		return;
	if (sb->owner.fd >= 0 && sb->owner_kept) {
		conn_close(&sb->owner);
		sb->owner.fd = -1;
		sb->owner_kept = false;
	}
	__atomic_store_n(&sb->owner_lent, false, __ATOMIC_RELEASE);
}

struct conn *sandbox_borrow_conn(capsule_sandbox *sb, uint32_t *chan)
{
	return borrow_conn(sb, chan, true, false);
}

struct conn *sandbox_borrow_conn_last(capsule_sandbox *sb, uint32_t *chan)
{
	return borrow_conn(sb, chan, true, true);
}

struct conn *sandbox_borrow_idle_conn(capsule_sandbox *sb, uint32_t *chan)
{
	return borrow_conn(sb, chan, false, false);
}

void sandbox_return_conn(capsule_sandbox *sb)
{
	/* The shim has closed, or is closing, one opened for a single command. */
	if (sb->owner.fd >= 0 && sb->owner.one_command) {
		conn_close(&sb->owner);
		sb->owner.fd = -1;
		sb->owner_kept = false;
	}
	__atomic_store_n(&sb->owner_lent, false, __ATOMIC_RELEASE);
}

static capsule_sandbox *sandbox_alloc(void)
{
	capsule_sandbox *sb = calloc(1, sizeof(*sb));
	if (sb) {
		sb->owner.fd = -1;
		sb->run_dir = -1;
	}
	return sb;
}

/* Turn CFG's image reference into the layers its root is made of (cfg->layers, base_none).
 * The shim takes them as they are: an unknown name must fail here, before anything exists. */
static int resolve_image(struct capsule_config *cfg, capsule_error *err)
{
	if (cfg->nlayers || !strcmp(cfg->image, "host"))
		return 0;
	/* A save of that name first (src/lib/save/save_store.c), then a local image, then a pull. */
	int r = save_apply_to_config(cfg, err);
	if (r != 0)
		return r < 0 ? r : 0;
	if (image_resolve)
		return image_resolve(cfg, err);
	return cap_err_plain(err, ENOENT, "image '%s' not found (only 'host' is available)", cfg->image);
}

int capsule_sandbox_create(capsule_sandbox **out, const capsule_config *cfg_in, capsule_error *err)
{
	return sandbox_create_prepared(out, cfg_in, NULL, NULL, err);
}

int sandbox_config_prepare(struct capsule_config *cfg, capsule_error *err)
{
	int r;
	if ((r = host_config_apply(cfg, err)) < 0 || (r = layer_disk_check(cfg, err)) < 0 ||
	    (r = config_display_check(cfg, err)) < 0 || (r = config_level_check(cfg, err)) < 0 ||
	    (r = config_resources_check(cfg, err)) < 0 ||
	    (r = resolve_image(cfg, err)) < 0 || (r = config_net_check(cfg, err)) < 0 ||
	    (cfg->save[0] && (r = save_check_target(cfg, cfg->save, err)) < 0))
		return r;
	return 0;
}

#define NEW_RUN_FOLDER_PREFIX ".new-"
#define GONE_RUN_FOLDER_PREFIX ".gone-"

/* Make run/NAME with its lock held, into *DIR and *LOCKFD. It is built under a private name and
 * renamed into place locked: any open of a sandbox sweeps a folder of that name that has no
 * lock, or whose lock nobody holds, as a create that died; a folder that showed up before its
 * lock was taken was removed under its creator. The private name carries our pid, which
 * sweep_abandoned_creates goes by. */
static int run_folder_make_locked(int run, const char *name, int *dir_out, int *lock_out, capsule_error *err)
{
	char tmp[CAPSULE_NAME_MAX + 32];
	snprintf(tmp, sizeof(tmp), NEW_RUN_FOLDER_PREFIX "%s.%d", name, (int)getpid());
	rm_rf_at(run, tmp); /* an earlier process of our pid that died here */
	folders_spread(run);
	/* 0700: the sandbox's child opens its fs/ below while it still has the shim's file ids. */
	if (mkdirat(run, tmp, 0700) < 0)
		return cap_err(err, errno, "creating the folder of sandbox '%s'", name);
	_cleanup_close_ int dir = openat(run, tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	_cleanup_close_ int lockfd = -1;
	int r = 0;
	if (dir < 0 || fchmod(dir, 0700) < 0)
		r = cap_err(err, errno, "open sandbox folder '%s'", name);
	else if ((lockfd = openat(dir, "lock", O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600)) < 0 ||
		 flock(lockfd, LOCK_EX | LOCK_NB) < 0)
		r = cap_err(err, errno, "locking sandbox '%s'", name);
	else if (renameat2(run, tmp, run, name, RENAME_NOREPLACE) < 0)
		r = errno == EEXIST ? cap_err_plain(err, EEXIST, "a sandbox named '%s' already exists", name)
				    : cap_err(err, errno, "creating the folder of sandbox '%s'", name);
	if (r < 0) {
		rm_rf_at(run, tmp);
		return r;
	}
	*dir_out = take_fd(dir);
	*lock_out = take_fd(lockfd);
	return 0;
}

/* run/.gone-NAME.PID of a dead PID: a remove's, or that of a shim's child removing an ended
 * sandbox's cgroups and folder after the stop's answer (finish_ephemeral), killed before the
 * end. Its processes are gone. Its cgroups, if the config names a cgroup_base, go first (a
 * name no other sandbox has); never by the sandbox's name, which may be a new sandbox's by now
 * (one made before cgroup_base existed removed its cgroups before the rename). */
static void sweep_gone(int run, const char *entry)
{
	_cleanup_close_ int dir = openat(run, entry, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	struct capsule_config cfg;
	if (dir >= 0 && config_load_at(dir, &cfg, NULL) == 0) {
		if (cfg.cgroup_base[0] && cgroup_base_valid(cfg.cgroup_base))
			shim_cleanup_run(cfg.cgroup_base);
		config_clear(&cfg);
	}
	rootless_rm_rf_at(run, entry);
}

/* Folders of creates that died before their rename, and of removes that died before the end:
 * the pid in their name is gone. (A pid reused since leaves one behind until that process
 * ends; it is never a sandbox of anyone's.) */
void sweep_abandoned_creates(int run)
{
	_cleanup_close_ int fd = fcntl(run, F_DUPFD_CLOEXEC, 0);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	if (!d)
		return;
	fd = -1;
	/* A dup shares RUN's offset, which another walk may have left at the end. */
	rewinddir(d);
	struct dirent *de;
	while ((de = readdir(d))) {
		bool created = !strncmp(de->d_name, NEW_RUN_FOLDER_PREFIX, strlen(NEW_RUN_FOLDER_PREFIX));
		if (!created && strncmp(de->d_name, GONE_RUN_FOLDER_PREFIX, strlen(GONE_RUN_FOLDER_PREFIX)) != 0)
			continue;
		const char *dot = strrchr(de->d_name, '.');
		char *end;
		long pid = dot ? strtol(dot + 1, &end, 10) : 0;
		if (pid <= 0 || *end != '\0' || kill((pid_t)pid, 0) == 0 || errno != ESRCH)
			continue;
		if (created)
			rm_rf_at(run, de->d_name);
		else
			sweep_gone(run, de->d_name);
	}
	closedir(d);
}

/* The running sandbox of this home whose pid, IPC or UTS namespace CFG joins (a pod's pause
 * container's), named in OF: 1 when that is its pid namespace, 2 when not, or 0 when it joins
 * none of theirs. A pod's containers share
 * its host id range (id_slot_share), so that SysV IPC objects and files of mode 0600 made by
 * one are the others' too, and their roots may signal one another's processes, as under runc. */
static int joined_sandbox(int run, const struct capsule_config *cfg, char of[CAPSULE_NAME_MAX + 1])
{
	const struct {
		const char *path, *type;
	} joined[3] = { { cfg->pid_ns, "pid" }, { cfg->ipc_ns, "ipc" }, { cfg->uts_ns, "uts" } };
	for (size_t i = 0; i < ARRAY_SIZE(joined); i++) {
		struct stat want;
		if (!joined[i].path || stat(joined[i].path, &want) < 0)
			continue;
		int fd = openat(run, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		DIR *d = fd < 0 ? NULL : fdopendir(fd);
		if (!d) {
			if (fd >= 0)
				close(fd);
			continue;
		}
		struct dirent *e;
		int found = 0;
		while (!found && (e = readdir(d))) {
			if (e->d_name[0] == '.' || !strcmp(e->d_name, cfg->name) || strlen(e->d_name) > CAPSULE_NAME_MAX)
				continue;
			_cleanup_close_ int dir = openat(run, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			_cleanup_free_ char *state = NULL;
			size_t len = 0;
			int64_t pid = 0;
			if (dir < 0 || !run_dir_locked(dir) || read_file_at(dir, "state.json", 1u << 16, &state, &len) < 0 ||
			    json_get_int(state, len, "init_pid", &pid) < 0 || pid <= 0)
				continue;
			char path[64];
			struct stat st;
			snprintf(path, sizeof(path), "/proc/%lld/ns/%s", (long long)pid, joined[i].type);
			if (stat(path, &st) == 0 && st.st_dev == want.st_dev && st.st_ino == want.st_ino) {
				snprintf(of, CAPSULE_NAME_MAX + 1, "%s", e->d_name);
				found = 1;
			}
		}
		closedir(d);
		if (found)
			return i == 0 && cfg->pid_ns ? 1 : 2;
	}
	return 0;
}

int sandbox_create_prepared(capsule_sandbox **out, const struct capsule_config *cfg_in, sandbox_prepare_fn prepare,
			    void *payload, capsule_error *err)
{
	if (cfg_in->pool[0] && !prepare)
		return pool_take(out, cfg_in, err);
	if (cfg_in->pool[0])
		return cap_err_plain(err, EINVAL, "a sandbox taken from pool '%s' cannot be made this way", cfg_in->pool);
	return sandbox_create_unpooled(out, cfg_in, prepare, payload, err);
}

int sandbox_create_unpooled(capsule_sandbox **out, const struct capsule_config *cfg_in, sandbox_prepare_fn prepare,
			    void *payload, capsule_error *err)
{
	capsule_sandbox *sb = sandbox_alloc();
	if (!sb)
		return cap_err(err, ENOMEM, "allocating a sandbox");
	int r = config_copy(&sb->cfg, cfg_in);
	if (r < 0) {
		free(sb);
		return cap_err(err, -r, "copying the configuration");
	}
	struct capsule_config *cfg = &sb->cfg;
	if (!cfg->name[0])
		generate_name(cfg->name, sizeof(cfg->name));
	/* A pool's sandbox: its hostname keeps this name when a take renames it. */
	if (cfg->pool[0])
		snprintf(cfg->origin, sizeof(cfg->origin), "%s", cfg->name);
	/* Cgroups of their own name, never another sandbox's, not even a later one's of the same
	 * name: an ended sandbox's go after its name is free (the shim's finish_ephemeral). A
	 * cgroup given by path (OCI) is the caller's. */
	cfg->cgroup_base[0] = '\0';
	if (!cfg->cgroup_path) {
		char hex[9];
		random_hex8(hex);
		snprintf(cfg->cgroup_base, sizeof(cfg->cgroup_base), "%s~%s", cfg->name, hex);
	}
	cfg->created_unix = (int64_t)time(NULL);
	progress(cfg, "prepare", 0, 3);

	_cleanup_close_ int run = -1, dir = -1, lockfd = -1;
	_cleanup_free_ char *text = NULL;
	size_t len;
	bool made_volumes[CAPSULE_MAX_BINDS] = { false };
	if ((r = sandbox_config_prepare(cfg, err)) < 0 || (r = home_subdir_open("run", &run, err)) < 0)
		goto fail_free;
	/* As docker does for `-v name:/path`: a volume named but not there yet is made now,
	 * without a quota (and stays, like any volume, until removed), unless the create fails:
	 * then what this call made goes with it. */
	for (size_t i = 0; i < cfg->nbinds; i++)
		if (cfg->binds[i].volume && (r = volume_ensure(cfg->binds[i].source, &made_volumes[i], err)) < 0)
			goto fail_free;
	sweep_stale(cfg->name);
	sweep_abandoned_creates(run);
	if ((r = run_folder_make_locked(run, cfg->name, &dir, &lockfd, err)) < 0)
		goto fail_free;
	/* From here on a failure removes the folder: nothing is left half-made. */
	char of[CAPSULE_NAME_MAX + 1];
	int pod = joined_sandbox(run, cfg, of);
	/* Only a sandbox's own pid namespace may be another's: the host's (or any other) would let
	 * the sandbox see and signal what is not its own. */
	if (cfg->pid_ns && pod != 1) {
		r = cap_err_plain(err, EPERM, "the pid namespace '%.128s' is no running sandbox's of this capsule home: "
					      "capsule joins only those (a pod's pause container must be capsule's too), "
					      "never the host's", cfg->pid_ns);
		goto fail_rm;
	}
	if ((r = pod ? id_slot_share(cfg->name, of, &cfg->id_slot, err) : id_slot_take(cfg->name, &cfg->id_slot, err)) < 0)
		goto fail_rm;
	if ((r = config_serialize(cfg, &text, &len)) < 0 || (r = write_file_atomic_at(dir, "config", text, len, 0600, false)) < 0) {
		r = cap_err(err, -r, "writing the configuration of sandbox '%s'", cfg->name);
		goto fail_rm;
	}
	if (prepare && (r = prepare(dir, cfg, payload, err)) < 0)
		goto fail_rm;
	if ((r = launch(sb, lockfd, false, err)) < 0) {
		cap_err_wrap(err, r, "starting sandbox '%s'", cfg->name);
		goto fail_rm;
	}
	*out = sb;
	return 0;
fail_rm:
	rm_rf_at(run, cfg->name);
	id_slot_release(cfg->name, cfg->id_slot);
fail_free:
	for (size_t i = 0; i < cfg->nbinds; i++)
		if (made_volumes[i])
			capsule_volume_remove(cfg->binds[i].source, NULL);
	config_clear(&sb->cfg);
	free(sb);
	return r;
}

int capsule_sandbox_open(capsule_sandbox **out, const char *name, capsule_error *err)
{
	int r = validate_name(name, "sandbox name", err);
	if (r < 0)
		return r;
	/* A running sandbox (its lock held) is not stale: only a folder found unlocked is swept
	 * and opened again, so an exec's open costs one walk to the folder, not two. */
	_cleanup_close_ int dir = -1;
	r = run_dir_open(name, &dir, NULL);
	bool running = r == 0 && run_dir_locked(dir);
	if (!running) {
		if (dir >= 0)
			close(dir);
		dir = -1;
		sweep_stale(name);
		if ((r = run_dir_open(name, &dir, err)) < 0)
			return r;
	}
	capsule_sandbox *sb = sandbox_alloc();
	if (!sb)
		return cap_err(err, ENOMEM, "allocating a sandbox");
	if ((r = config_load_zeroed_at(dir, &sb->cfg, err)) < 0) {
		free(sb);
		/* Locked, with no configuration yet: a create between its folder and its config. */
		if (r == -ENOENT)
			return cap_err_plain(err, EAGAIN, "sandbox '%s' is starting: try again", name);
		return r;
	}
	if (running)
		sb->run_dir = take_fd(dir);
	*out = sb;
	return 0;
}



/* The sandbox's folder and its lock, taken: -EALREADY when it runs. */
static int lock_stopped(const capsule_sandbox *sb, int *dir, int *lockfd, capsule_error *err)
{
	int r = run_dir_open(sb->cfg.name, dir, err);
	if (r < 0)
		return r;
	*lockfd = openat(*dir, "lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (*lockfd < 0)
		return cap_err(err, errno, "open lock of sandbox '%s'", sb->cfg.name);
	if (flock(*lockfd, LOCK_EX | LOCK_NB) < 0)
		return cap_err_plain(err, EALREADY, "sandbox '%s' is already running", sb->cfg.name);
	return 0;
}

int sandbox_resume_from_disk(capsule_sandbox *sb, capsule_error *err)
{
	_cleanup_close_ int dir = -1, lockfd = -1;
	int r = lock_stopped(sb, &dir, &lockfd, err);
	/* Resumed meanwhile by someone else: it runs, as asked. */
	if (r == -EALREADY) {
		capsule_error_clear(err);
		return 0;
	}
	if (r < 0)
		return r;
	if (!run_dir_paused_to_disk(dir))
		return cap_err_plain(err, ENOTCONN, "sandbox '%s' is not running", sb->cfg.name);
	if ((r = launch(sb, lockfd, true, err)) < 0)
		return cap_err_wrap(err, r, "resuming sandbox '%s' from disk (its memory state is kept)", sb->cfg.name);
	return 0;
}

int sandbox_stop_paused_to_disk(const char *name, capsule_error *err)
{
	_cleanup_close_ int dir = -1, lockfd = -1;
	int r = run_dir_open(name, &dir, err);
	/* Gone (removed meanwhile, as an ended sandbox's folder is): nothing paused to stop. */
	if (r == -ENOENT)
		capsule_error_clear(err);
	if (r < 0)
		return r == -ENOENT ? 0 : r;
	lockfd = openat(dir, "lock", O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	if (lockfd < 0 || flock(lockfd, LOCK_EX | LOCK_NB) < 0 || !run_dir_paused_to_disk(dir))
		return 0;
	static const char stopped[] = "{\"state\": \"stopped\"}\n";
	if ((r = write_file_atomic_at(dir, "state.json", stopped, sizeof(stopped) - 1, 0600, false)) < 0)
		return cap_err(err, -r, "stopping sandbox '%s'", name);
	unlinkat(dir, "memory.state", 0);
	return 0;
}

int capsule_sandbox_start(capsule_sandbox *sb, capsule_error *err)
{
	_cleanup_close_ int dir = -1, lockfd = -1;
	int r = lock_stopped(sb, &dir, &lockfd, err);
	if (r < 0)
		return r;
	if (run_dir_paused_to_disk(dir))
		return cap_err_plain(err, EBUSY, "sandbox '%s' is paused to disk: resume it first", sb->cfg.name);
	if (!sb->cfg.detached && sb->owner.fd >= 0) {
		/* The last run's connection (its shim is gone): the new shim's creator socket
		 * replaces it. */
		conn_close(&sb->owner);
		shim_reap(&sb->shim_pid);
	}
	r = launch(sb, lockfd, false, err);
	if (r < 0)
		return cap_err_wrap(err, r, "starting sandbox '%s'", sb->cfg.name);
	if (!sb->cfg.detached) {
		sb->owner_kept = false;
		sb->kept_stopped = false;
		__atomic_store_n(&sb->owner_lent, false, __ATOMIC_RELEASE);
	}
	return 0;
}

bool capsule_sandbox_is_running(const capsule_sandbox *sb)
{
	_cleanup_close_ int dir = -1;
	if (run_dir_open(sb->cfg.name, &dir, NULL) < 0)
		return false;
	return run_dir_locked(dir);
}

const char *capsule_sandbox_name(const capsule_sandbox *sb)
{
	return sb->cfg.name;
}

capsule_isolation capsule_sandbox_isolation(const capsule_sandbox *sb)
{
	return sb->cfg.isolation;
}

/* How a stop ends the sandbox: as its kind's end does, kept stopped (stop_keep), or removed
 * (a forced remove: the shim frees the name before it answers and removes the rest after). */
enum stop_how { STOP_PLAIN, STOP_KEEP, STOP_REMOVE };

/* Ask the shim to stop and wait until it says the sandbox is down (or hangs up). */
static int stop_via(struct conn *c, uint32_t timeout_ms, enum stop_how how, capsule_error *err)
{
	struct cp_stop m = { .timeout_ms = timeout_ms, .keep = how == STOP_KEEP, .remove = how == STOP_REMOVE };
	int r = cp_stop_encode(&c->w, 1, &m);
	if (r < 0)
		return cap_err(err, -r, "encoding STOP");
	if ((r = conn_send(c, NULL)) < 0)
		return 0; /* already gone */
	for (;;) {
		struct cp_header h;
		const uint8_t *payload;
		r = conn_recv(c, &h, &payload, -1, NULL);
		if (r < 0)
			return 0; /* the shim hung up: it is down */
		if (h.chan == 1 && h.type == CP_OK)
			return 0;
		if (h.chan == 1 && h.type == CP_ERROR)
			return conn_error_from_frame(payload, h.len, err);
		conn_consume(c, &h);
	}
}

static int stop_sandbox(capsule_sandbox *sb, uint32_t timeout_ms, enum stop_how how, capsule_error *err)
{
	int r;
	/* Paused to disk: no process to stop; its memory state goes. Not a sandbox whose
	 * creator's socket we hold: an ephemeral one cannot be paused to disk, and the walk to
	 * its lock was a dozen system calls of every `capsule run`'s end. */
	bool owned = sb->owner.fd >= 0 && !sb->cfg.detached;
	if (!owned && !capsule_sandbox_is_running(sb) && (r = sandbox_stop_paused_to_disk(sb->cfg.name, err)) < 0)
		return r;
	if (sb->owner.fd >= 0 && !__atomic_exchange_n(&sb->owner_lent, true, __ATOMIC_ACQUIRE)) {
		r = stop_via(&sb->owner, timeout_ms, how, err);
		conn_close(&sb->owner);
		shim_reap(&sb->shim_pid);
		return r;
	}
	/* The creator's socket is lent to a running command (or there is none): a connection
	 * of our own asks the shim; the command sees the sandbox go. */
	struct conn c;
	r = conn_open(&c, sb->cfg.name, err);
	/* Not there, or hung up on during the hello (a shim that is going away, as another stop
	 * or a remove of the same sandbox makes it): stopped. */
	if (r == -ENOTCONN || r == -ENOENT) {
		capsule_error_clear(err);
		sweep_stale(sb->cfg.name);
		return 0; /* stopping a stopped sandbox succeeds, as in docker */
	}
	if (r < 0)
		return r;
	r = stop_via(&c, timeout_ms, how, err);
	conn_close(&c);
	return r;
}

int capsule_sandbox_stop(capsule_sandbox *sb, uint32_t timeout_ms, capsule_error *err)
{
	int r = stop_sandbox(sb, timeout_ms, STOP_PLAIN, err);
	/* Kept by an earlier stop_keep: an ephemeral sandbox's own stop removes it. */
	if (r == 0 && sb->kept_stopped) {
		sb->kept_stopped = false;
		r = capsule_sandbox_remove(sb->cfg.name, false, err);
	}
	return r;
}

int capsule_sandbox_stop_keep(capsule_sandbox *sb, uint32_t timeout_ms, capsule_error *err)
{
	/* Its shim hands the name back at once and removes the rest after the answer (a take's
	 * point is a fast end): there is no folder to keep. */
	if (sb->taken)
		return cap_err_plain(err, EOPNOTSUPP, "sandbox '%s' was taken from a pool: it cannot be kept when stopped",
				     sb->cfg.name);
	int r = stop_sandbox(sb, timeout_ms, STOP_KEEP, err);
	if (r == 0 && !sb->cfg.detached)
		sb->kept_stopped = true;
	return r;
}

void capsule_sandbox_free(capsule_sandbox *sb)
{
	if (!sb)
		return;
	/* A taken sandbox's shim is not our child to wait for: it is stopped as a stop would, so
	 * that here too the sandbox is gone when the call returns. */
	if (sb->taken && sb->owner.fd >= 0)
		capsule_sandbox_stop(sb, 0, NULL);
	/* Closing the creator's socket ends an ephemeral sandbox: the shim takes it down. */
	if (sb->owner.fd >= 0)
		conn_close(&sb->owner);
	shim_reap(&sb->shim_pid);
	/* One stopped and kept by stop_keep has no shim to take it down. */
	if (sb->kept_stopped && !capsule_sandbox_is_running(sb))
		capsule_sandbox_remove(sb->cfg.name, false, NULL);
	if (sb->run_dir >= 0)
		close(sb->run_dir);
	config_clear(&sb->cfg);
	free(sb);
}

/* Rename run/NAME to GONE if it is still the folder DIR: -ENOENT as "no such sandbox" when
 * another remove took it first (or it was replaced by a new create, which is then put back). */
static int run_folder_take(int run, const char *name, int dir, const char *gone, capsule_error *err)
{
	struct stat ours, taken;
	if (fstat(dir, &ours) < 0)
		return cap_err(err, errno, "removing the folder of sandbox '%s'", name);
	if (renameat2(run, name, run, gone, RENAME_NOREPLACE) < 0)
		return errno == ENOENT ? cap_err_plain(err, ENOENT, "no such sandbox: '%s'", name)
				       : cap_err(err, errno, "removing the folder of sandbox '%s'", name);
	if (fstatat(run, gone, &taken, AT_SYMLINK_NOFOLLOW) == 0 && taken.st_ino == ours.st_ino &&
	    taken.st_dev == ours.st_dev)
		return 0;
	renameat2(run, gone, run, name, RENAME_NOREPLACE);
	return cap_err_plain(err, ENOENT, "no such sandbox: '%s'", name);
}

/* Whether run/NAME is still the folder DIR (not renamed away by its shim, nor replaced since). */
static bool run_folder_is(int run, const char *name, int dir)
{
	struct stat ours, there;
	return fstat(dir, &ours) == 0 && fstatat(run, name, &there, AT_SYMLINK_NOFOLLOW) == 0 &&
	       ours.st_dev == there.st_dev && ours.st_ino == there.st_ino;
}

int capsule_sandbox_remove(const char *name, bool force, capsule_error *err)
{
	int r = validate_name(name, "sandbox name", err);
	if (r < 0)
		return r;
	sweep_stale(name);
	_cleanup_close_ int run = -1, dir = -1;
	if ((r = home_subdir_open("run", &run, err)) < 0 || (r = run_dir_open(name, &dir, err)) < 0)
		return r;
	if (run_dir_locked(dir)) {
		if (!force)
			return cap_err_plain(err, EBUSY, "sandbox '%s' is running: stop it first, or remove it with force",
					     name);
		/* Its shim removes it: the name is free when the stop is answered (its id slot given
		 * back, its folder renamed), and the folder goes after the answer. */
		capsule_sandbox *sb;
		if ((r = capsule_sandbox_open(&sb, name, err)) < 0)
			return r;
		r = stop_sandbox(sb, 0, STOP_REMOVE, err);
		capsule_sandbox_free(sb);
		if (r < 0)
			return r;
		/* Done, unless the shim died before it took the folder: then as for a stopped one. */
		if (!run_folder_is(run, name, dir))
			return 0;
	}
	/* Hold the lock while removing, so no start can race us. */
	_cleanup_close_ int lockfd = openat(dir, "lock", O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	if (lockfd >= 0 && flock(lockfd, LOCK_EX | LOCK_NB) < 0)
		return cap_err_plain(err, EBUSY, "sandbox '%s' was started again while being removed", name);
	struct capsule_config cfg;
	bool have_cfg = config_load_at(dir, &cfg, NULL) == 0;
	/* Out of the way under a private name first, so that of two removes one wins and a create
	 * of the same name meanwhile is not touched; then the rest at leisure. */
	char gone[CAPSULE_NAME_MAX + 32];
	snprintf(gone, sizeof(gone), GONE_RUN_FOLDER_PREFIX "%s.%d", name, (int)getpid());
	rootless_rm_rf_at(run, gone);
	r = run_folder_take(run, name, dir, gone, err);
	if (r == 0 && (r = rootless_rm_rf_at(run, gone)) < 0)
		r = cap_err(err, -r, "removing the folder of sandbox '%s'", name);
	if (r < 0) {
		if (have_cfg)
			config_clear(&cfg);
		return r;
	}
	if (have_cfg) {
		id_slot_release(name, cfg.id_slot);
		config_clear(&cfg);
	}
	return 0;
}

/* ---- stale sandboxes ---- */

int sweep_stale(const char *name)
{
	_cleanup_close_ int run = -1, dir = -1;
	if (home_subdir_open("run", &run, NULL) < 0)
		return 0;
	dir = openat(run, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dir < 0)
		return 0;
	_cleanup_close_ int lockfd = openat(dir, "lock", O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	if (lockfd < 0) {
		/* A folder without a lock is a create that died before it took one. */
		struct stat st;
		if (fstatat(dir, "config", &st, 0) < 0) {
			rootless_rm_rf_at(run, name);
			return 1;
		}
		return 0;
	}
	if (flock(lockfd, LOCK_EX | LOCK_NB) < 0)
		return 0; /* alive */
	_cleanup_free_ char *state = NULL;
	size_t len = 0;
	_cleanup_free_ char *st_val = NULL;
	if (read_file_at(dir, "state.json", 1u << 16, &state, &len) == 0)
		json_get_string(state, len, "state", &st_val);
	/* A shim that paused its sandbox to disk ended on purpose, having cleaned up. */
	if (st_val && (strcmp(st_val, "stopped") == 0 || run_dir_paused_to_disk(dir)))
		return 0;
	/* The shim died without cleaning up (SIGKILL): its cgroups may remain. */
	shim_cleanup_run(name);
	struct capsule_config cfg;
	bool detached = false;
	uint32_t slot = 0;
	if (config_load_at(dir, &cfg, NULL) == 0) {
		detached = cfg.detached;
		slot = cfg.id_slot;
		config_clear(&cfg);
	}
	control_socket_remove(dir);
	if (!detached) {
		rootless_rm_rf_at(run, name);
		id_slot_release(name, slot);
		return 1;
	}
	rootless_rm_rf_at(dir, "fs/work");
	static const char stopped[] = "{\"state\": \"stopped\"}\n";
	write_file_atomic_at(dir, "state.json", stopped, sizeof(stopped) - 1, 0600, false);
	return 1;
}

int sandbox_from_take(capsule_sandbox **out, const char *name, struct conn *c, capsule_error *err)
{
	capsule_sandbox *sb;
	int r = capsule_sandbox_open(&sb, name, err);
	if (r < 0)
		return r;
	/* The taker's connection owns an ephemeral sandbox now: it is this handle's creator
	 * socket, past HELLO, with the TAKE's channel 1 done. */
	if (!sb->cfg.detached) {
		sb->owner = *c;
		sb->owner_next_chan = 2;
		sb->taken = true;
	} else {
		conn_close(c);
	}
	*out = sb;
	return 0;
}

int sandbox_owner_fd(const capsule_sandbox *sb)
{
	return sb->owner.fd;
}

const struct capsule_config *sandbox_config(const capsule_sandbox *sb)
{
	return &sb->cfg;
}

struct capsule_config *sandbox_config_mut(capsule_sandbox *sb)
{
	return &sb->cfg;
}

void capsule_strv_free(char **v)
{
	for (size_t i = 0; v && v[i]; i++)
		free(v[i]);
	free(v);
}

int capsule_sandbox_image_command(capsule_sandbox *sb, const char *const *args, char ***argv_out, capsule_error *err)
{
	const struct capsule_config *cfg = &sb->cfg;
	const char *const *tail = args && args[0] ? args : (const char *const *)cfg->cmd;
	size_t ne = 0, nt = 0;
	while (cfg->entrypoint && cfg->entrypoint[ne])
		ne++;
	while (tail && tail[nt])
		nt++;
	if (ne + nt == 0)
		return cap_err_plain(err, ENOENT, "no command given, and image '%s' names none", cfg->image);
	char **v = calloc(ne + nt + 1, sizeof(char *));
	if (!v)
		return cap_err(err, ENOMEM, "image command");
	for (size_t i = 0; i < ne + nt; i++)
		if (!(v[i] = strdup(i < ne ? cfg->entrypoint[i] : tail[i - ne]))) {
			capsule_strv_free(v);
			return cap_err(err, ENOMEM, "image command");
		}
	*argv_out = v;
	return 0;
}
