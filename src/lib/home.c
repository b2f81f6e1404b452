/* $CAPSULE_HOME: where sandboxes, images and volumes live, and the "host" image skeleton. */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fs.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "home.h"
#include "json.h"
#include "id_slot.h"
#include "rootless.h"
#include "sandbox_config.h"
#include "util.h"

static char home_path[PATH_MAX];
/* The home lies in a folder every user may write to (/tmp, for a user with no $HOME): anyone
 * could have made it first, so it must be found exactly as capsule makes it. */
static bool home_in_shared_folder;
static pthread_once_t home_once = PTHREAD_ONCE_INIT;

static void home_init(void)
{
	const char *env = getenv("CAPSULE_HOME");
	const char *xdg = getenv("XDG_DATA_HOME");
	const char *h = getenv("HOME");
	if (env && env[0] == '/') {
		snprintf(home_path, sizeof(home_path), "%s", env);
	} else if (geteuid() == 0) {
		snprintf(home_path, sizeof(home_path), "/var/lib/capsule");
	} else if (xdg && xdg[0] == '/') {
		snprintf(home_path, sizeof(home_path), "%s/capsule", xdg);
	} else if (h && h[0] == '/') {
		snprintf(home_path, sizeof(home_path), "%s/.local/share/capsule", h);
	} else {
		/* One per uid, as tmux's sockets are: users with no $HOME must not share one. */
		snprintf(home_path, sizeof(home_path), "/tmp/capsule-%u", (unsigned)geteuid());
		home_in_shared_folder = true;
	}
	size_t n = strlen(home_path);
	while (n > 1 && home_path[n - 1] == '/')
		home_path[--n] = '\0';
}

const char *capsule_home(void)
{
	pthread_once(&home_once, home_init);
	return home_path;
}

/* mkdir -p with MODE for the components we create. */
static int mkdir_p(const char *path, mode_t mode)
{
	char buf[PATH_MAX];
	if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
		return -ENAMETOOLONG;
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, 0755) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, mode) < 0) {
		if (errno != EEXIST)
			return -errno;
		return 0;
	}
	/* mkdir applies the umask; the mode here is deliberate. */
	chmod(buf, mode);
	return 0;
}

/* What sandboxes need from below the home reaches them through descriptors, so the home can
 * be its owner's alone: no other user reaches an image's set-id files, a skeleton's /tmp or
 * a run folder, whatever the modes below. A home that another user owns, or that others may
 * write to, may already hold what they planted: refused. One that others may only enter or
 * read (an older capsule made it 0711) is ours: tightened. */
static int home_check(int fd, const char *home, capsule_error *err)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return cap_err(err, errno, "stat capsule home '%s'", home);
	if (st.st_uid != geteuid())
		return cap_err_plain(err, EPERM, "capsule home '%s' belongs to uid %u, not to uid %u: refusing to use it",
				     home, (unsigned)st.st_uid, (unsigned)geteuid());
	mode_t others = st.st_mode & 077;
	if (!others)
		return 0;
	if ((others & 022) || home_in_shared_folder)
		return cap_err_plain(err, EPERM,
				     "capsule home '%s' is open to other users (mode %04o): refusing to use it (make it 0700 if nobody else can have put anything in it)",
				     home, (unsigned)(st.st_mode & 07777));
	if (fchmod(fd, 0700) < 0)
		return cap_err(err, errno, "making capsule home '%s' private (0700)", home);
	return 0;
}

static int home_create(const char *home)
{
	/* /tmp is there: its one component is made here, so that no parent of ours is made
	 * in a folder anyone writes to. */
	if (home_in_shared_folder)
		return mkdir(home, 0700) < 0 && errno != EEXIST ? -errno : 0;
	return mkdir_p(home, 0700);
}

int home_open(int *home_fd, capsule_error *err)
{
	const char *home = capsule_home();
	/* A link in a shared folder could lead anywhere another user chose. */
	int flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC | (home_in_shared_folder ? O_NOFOLLOW : 0);
	/* Every request passes here: open first, create only the first time. openat, not open:
	 * musl's open follows an O_CLOEXEC open with an fcntl that sets it again. */
	_cleanup_close_ int fd = openat(AT_FDCWD, home, flags);
	if (fd < 0 && errno == ENOENT) {
		int r = home_create(home);
		if (r < 0)
			return cap_err(err, -r, "creating capsule home '%s'", home);
		fd = openat(AT_FDCWD, home, flags);
	}
	/* O_NOFOLLOW | O_DIRECTORY on a link says ENOTDIR, as on a file. */
	if (fd < 0 && home_in_shared_folder && (errno == ELOOP || errno == ENOTDIR))
		return cap_err_plain(err, ENOTDIR, "capsule home '%s' is a link or a file, not a folder: refusing to use it",
				     home);
	if (fd < 0)
		return cap_err(err, errno, "open capsule home '%s'", home);
	int r = home_check(fd, home, err);
	if (r < 0)
		return r;
	*home_fd = take_fd(fd);
	return 0;
}

int home_subdir_open(const char *sub, int *out, capsule_error *err)
{
	_cleanup_close_ int home = -1;
	int r = home_open(&home, err);
	if (r < 0)
		return r;
	int fd = openat(home, sub, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT) {
		/* slots/ and run/ get block groups of their own too (folders_spread). */
		folders_spread(home);
		if (mkdirat(home, sub, 0700) < 0 && errno != EEXIST)
			return cap_err(err, errno, "mkdir '%s/%s'", capsule_home(), sub);
		fd = openat(home, sub, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	}
	if (fd < 0)
		return cap_err(err, errno, "open '%s/%s'", capsule_home(), sub);
	*out = fd;
	return 0;
}

void home_id_map(uint32_t slot, uid_t *uid_base, gid_t *gid_base, uint32_t *count, bool *rootless)
{
	/* Work for a user done as root of a namespace of the user's ids (rootless.h): there the
	 * sandbox's ids are those ids themselves, every one of them a file may be given. */
	uint32_t mapped = rootless_mapped_ids();
	if (mapped) {
		*uid_base = 0;
		*gid_base = 0;
		*count = mapped;
		*rootless = false;
	} else if (geteuid() == 0) {
		uint64_t base = CAPSULE_DEFAULT_UID_BASE;
		const char *env = getenv("CAPSULE_UID_BASE");
		if (env && *env) {
			char *end;
			unsigned long v = strtoul(env, &end, 10);
			if (!*end && v >= 65536 && v < 0xffffffffUL - CAPSULE_ID_COUNT)
				base = v;
		}
		base += (uint64_t)slot * CAPSULE_ID_COUNT;
		if (base > 0xfffffffeULL - CAPSULE_ID_COUNT)
			base = CAPSULE_DEFAULT_UID_BASE; /* id_slot_take never hands out such a slot */
		*uid_base = (uid_t)base;
		*gid_base = (gid_t)base;
		*count = CAPSULE_ID_COUNT;
		*rootless = false;
	} else {
		*uid_base = geteuid();
		*gid_base = getegid();
		*count = 1;
		*rootless = true;
	}
}

int run_dir_open(const char *name, int *fd, capsule_error *err)
{
	_cleanup_close_ int run = -1;
	int r = home_subdir_open("run", &run, err);
	if (r < 0)
		return r;
	int d = openat(run, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (d < 0) {
		if (errno == ENOENT)
			return cap_err_plain(err, ENOENT, "no such sandbox: '%s'", name);
		return cap_err(err, errno, "open sandbox folder '%s'", name);
	}
	*fd = d;
	return 0;
}

int run_dir_socket_path(const char *name, char *out, size_t size)
{
	const char *home = capsule_home();
	/* A home in a folder anyone writes to is reached only through the descriptor its
	 * checks were made on; a name that is not one folder's never leaves run/. */
	if (home_in_shared_folder || !name[0] || strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, ".."))
		return -EINVAL;
	int n = snprintf(out, size, "%s/run/%s/control.sock", home, name);
	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

/* Without it every sandbox's inodes come from the block group of run/ (ext4 places a file
 * near its folder, a folder near its parent). On ext4 without a journal (the development
 * machine's root) an inode allocation walks past each inode of its group freed in the last
 * 5 s, or 300 s while that part of the inode table is not yet written back: sandboxes made
 * and removed there, and anything else churning files in that group (/var/tmp, a test
 * suite), made it a scan of thousands. 100 creates 8 at a time then spent 48% of their CPU in
 * find_inode_bit; with the flag, ext4's Orlov allocator treats each sandbox's folder as the
 * top of a tree, picking a group with free room and few folders, and that fell to 1 to 2%
 * (docs/performance.md). Set at every create, since a home made before this has run/. */
void folders_spread(int dir)
{
	int flags;
	if (ioctl(dir, FS_IOC_GETFLAGS, &flags) < 0 || (flags & FS_TOPDIR_FL))
		return;
	flags |= FS_TOPDIR_FL;
	(void)ioctl(dir, FS_IOC_SETFLAGS, &flags);
}

bool run_dir_locked(int dirfd)
{
	_cleanup_close_ int fd = openat(dirfd, "lock", O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return false;
	if (flock(fd, LOCK_EX | LOCK_NB) < 0)
		return errno == EWOULDBLOCK;
	flock(fd, LOCK_UN);
	return false;
}

bool run_dir_paused_to_disk(int dirfd)
{
	_cleanup_free_ char *text = NULL, *state = NULL, *to = NULL;
	size_t len = 0;
	if (read_file_at(dirfd, "state.json", 1u << 16, &text, &len) < 0)
		return false;
	return json_get_string(text, len, "state", &state) == 0 && !strcmp(state, "paused") &&
	       json_get_string(text, len, "paused_to", &to) == 0 && !strcmp(to, "disk");
}

void sandbox_cgroup_name(const char *name, char *out, size_t size)
{
	/* FNV-1a: not for security, only to tell homes apart in a short suffix. */
	uint32_t h = 2166136261u;
	for (const char *p = capsule_home(); *p; p++)
		h = (h ^ (uint8_t)*p) * 16777619u;
	snprintf(out, size, "%s.%08x", name, h);
}

/* ---- id slots ---- */

static uint32_t id_slot_max(void)
{
	return (uint32_t)((0xfffffffeULL - CAPSULE_DEFAULT_UID_BASE) / CAPSULE_ID_COUNT) - 1;
}

typedef bool (*id_slot_owner_test)(int run, const char *owner, uint32_t slot);

/* OWNER "OLD>NEW": a rename (id_slot_rename) was under way; the slot is stale only if GONE
 * holds for both names. */
static bool id_slot_owner_gone_renaming(int run, const char *owner, uint32_t slot, id_slot_owner_test gone)
{
	char old_name[CAPSULE_NAME_MAX + 1];
	const char *gt = strchr(owner, '>');
	if ((size_t)(gt - owner) >= sizeof(old_name))
		return false;
	snprintf(old_name, sizeof(old_name), "%.*s", (int)(gt - owner), owner);
	return gone(run, old_name, slot) && gone(run, gt + 1, slot);
}

/* A slot link whose owner has no folder any more, or whose owner's config names another
 * slot, was left by a crash or by an owner whose sharers still live. */
static bool id_slot_owner_gone(int run, const char *owner, uint32_t slot)
{
	if (strchr(owner, '>'))
		return id_slot_owner_gone_renaming(run, owner, slot, id_slot_owner_gone);
	_cleanup_close_ int dir = openat(run, owner, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dir < 0)
		return errno == ENOENT;
	struct capsule_config cfg;
	if (config_load_at(dir, &cfg, NULL) < 0)
		return false; /* being created right now */
	bool gone = cfg.id_slot != slot;
	config_clear(&cfg);
	return gone;
}

/* Whether no folder of OWNER (or, mid-rename "OLD>NEW", of either) is in run/: one fstatat,
 * where id_slot_owner_gone also reads the config (SLOT: id_slot_owner_test's, unused). */
static bool id_slot_owner_folder_gone(int run, const char *owner, uint32_t slot)
{
	if (strchr(owner, '>'))
		return id_slot_owner_gone_renaming(run, owner, slot, id_slot_owner_folder_gone);
	struct stat st;
	return fstatat(run, owner, &st, AT_SYMLINK_NOFOLLOW) < 0 && errno == ENOENT;
}

/* Sandboxes that joined another's namespaces (a pod's containers: sandbox.c) share its slot, so
 * that their files and SysV IPC objects are one another's. slots/N.shared/NAME names each
 * sharer of slot N; the link slots/N stays while its owner or any sharer lives. Changes that
 * decide that (a share, a release, a takeover) hold the slots folder's lock; a plain claim of
 * a free slot needs none, since a slot in use always has its link. */
static void id_slot_shared_name(uint32_t slot, char out[24])
{
	snprintf(out, 24, "%u.shared", slot);
}

static void slots_lock(int slots)
{
	while (flock(slots, LOCK_EX) < 0 && errno == EINTR)
		;
}

/* Whether a sharer of SLOT still lives; with FORGET, the shared folder goes once none does. */
static bool id_slot_sharer_live(int run, int slots, uint32_t slot, bool forget)
{
	char shared[24];
	id_slot_shared_name(slot, shared);
	int fd = openat(slots, shared, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return errno != ENOENT; /* unreadable: assume one lives, never hand the range out */
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return true;
	}
	bool live = false;
	struct dirent *e;
	while (!live && (e = readdir(d)))
		if (e->d_name[0] != '.')
			live = !id_slot_owner_gone(run, e->d_name, slot);
	if (!live && forget) {
		rewinddir(d);
		while ((e = readdir(d)))
			if (e->d_name[0] != '.')
				unlinkat(dirfd(d), e->d_name, 0);
		unlinkat(slots, shared, AT_REMOVEDIR);
	}
	closedir(d);
	return live;
}

/* Under the lock: SLOT's link (naming OWNER) goes when OWNER and every sharer are gone. */
static bool id_slot_drop_if_unused(int run, int slots, const char *owner, uint32_t slot)
{
	char path[16];
	snprintf(path, sizeof(path), "%u", slot);
	if ((owner && !id_slot_owner_gone(run, owner, slot)) || id_slot_sharer_live(run, slots, slot, true))
		return false;
	return unlinkat(slots, path, 0) == 0;
}

int id_slot_take(const char *name, uint32_t *slot, capsule_error *err)
{
	*slot = 0;
	if (geteuid() != 0)
		return 0; /* rootless: one id, the caller's own */
	_cleanup_close_ int run = -1, slots = -1;
	int r = home_subdir_open("run", &run, err);
	if (r < 0 || (r = home_subdir_open("slots", &slots, err)) < 0)
		return r;
	for (uint32_t n = 0; n <= id_slot_max(); n++) {
		char path[16];
		snprintf(path, sizeof(path), "%u", n);
		/* symlinkat is the atomic claim: of two racing creators, one gets EEXIST. */
		if (symlinkat(name, slots, path) == 0) {
			*slot = n;
			return 0;
		}
		if (errno != EEXIST)
			return cap_err(err, errno, "claiming id slot '%s/slots/%s'", capsule_home(), path);
		char owner[2 * CAPSULE_NAME_MAX + 3];
		ssize_t l = readlinkat(slots, path, owner, sizeof(owner) - 1);
		if (l <= 0)
			continue;
		owner[l] = '\0';
		/* A slot whose owner still has a folder is passed over without reading that folder's
		 * config: the scan meets every live sandbox's slot, and a config read for each made a
		 * create cost O(sandboxes) parses (1.9 ms of CLI time with 100 running). A stale
		 * link whose owner's folder exists under another slot (a crash between a folder's
		 * rename and its config, a pod owner's name reused) is taken over once that folder
		 * goes; the takeover itself still checks owner and sharers in full, under the lock. */
		if (strcmp(owner, name) == 0 || !id_slot_owner_folder_gone(run, owner, n))
			continue;
		slots_lock(slots);
		char again[sizeof(owner)];
		ssize_t l2 = readlinkat(slots, path, again, sizeof(again) - 1);
		bool taken = l2 == l && !memcmp(again, owner, (size_t)l) && id_slot_drop_if_unused(run, slots, owner, n) &&
			     symlinkat(name, slots, path) == 0;
		flock(slots, LOCK_UN);
		if (taken) {
			*slot = n;
			return 0;
		}
	}
	return cap_err_plain(err, ENOSPC, "no free host id range for another sandbox");
}

int id_slot_share(const char *name, const char *of, uint32_t *slot, capsule_error *err)
{
	*slot = 0;
	if (geteuid() != 0)
		return 0; /* rootless: every sandbox maps the caller's own ids */
	_cleanup_close_ int run = -1, slots = -1, dir = -1, shared = -1;
	int r = home_subdir_open("run", &run, err);
	if (r < 0 || (r = home_subdir_open("slots", &slots, err)) < 0)
		return r;
	if ((dir = openat(run, of, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0)
		return cap_err(err, errno, "sandbox '%s', whose host ids to share", of);
	struct capsule_config cfg;
	if ((r = config_load_at(dir, &cfg, err)) < 0)
		return r;
	uint32_t n = cfg.id_slot;
	config_clear(&cfg);
	char path[16], owner[2 * CAPSULE_NAME_MAX + 3], sharedname[24];
	snprintf(path, sizeof(path), "%u", n);
	id_slot_shared_name(n, sharedname);
	slots_lock(slots);
	/* OF must hold the slot now, as its owner or a sharer, for the link to stay while NAME
	 * lives: a slot OF lost (taken over after a crash) is someone else's range. */
	ssize_t l = readlinkat(slots, path, owner, sizeof(owner) - 1);
	if (l > 0)
		owner[l] = '\0';
	bool holds = l > 0 && !id_slot_owner_gone(run, of, n) &&
		     (!strcmp(owner, of) || (shared = openat(slots, sharedname, O_PATH | O_DIRECTORY | O_CLOEXEC)) >= 0);
	if (holds && shared >= 0) {
		struct stat st;
		holds = fstatat(shared, of, &st, AT_SYMLINK_NOFOLLOW) == 0;
		close(shared);
		shared = -1;
	}
	if (!holds)
		r = cap_err_plain(err, ESRCH, "sandbox '%s' holds no host id range to share", of);
	else if (mkdirat(slots, sharedname, 0700) < 0 && errno != EEXIST)
		r = cap_err(err, errno, "'%s/slots/%s'", capsule_home(), sharedname);
	else if ((shared = openat(slots, sharedname, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0)
		r = cap_err(err, errno, "'%s/slots/%s'", capsule_home(), sharedname);
	else if (unlinkat(shared, name, 0), symlinkat(name, shared, name) < 0)
		r = cap_err(err, errno, "claiming a share of id slot '%s/slots/%s'", capsule_home(), path);
	flock(slots, LOCK_UN);
	if (r == 0)
		*slot = n;
	return r;
}

void id_slot_release(const char *name, uint32_t slot)
{
	if (geteuid() != 0)
		return;
	_cleanup_close_ int run = -1, slots = -1, shared = -1;
	if (home_subdir_open("run", &run, NULL) < 0 || home_subdir_open("slots", &slots, NULL) < 0)
		return;
	char path[16], owner[2 * CAPSULE_NAME_MAX + 3], sharedname[24];
	snprintf(path, sizeof(path), "%u", slot);
	id_slot_shared_name(slot, sharedname);
	slots_lock(slots);
	ssize_t l = readlinkat(slots, path, owner, sizeof(owner) - 1);
	if (l > 0) {
		owner[l] = '\0';
		/* The owner's own claim goes unless sharers live; a sharer's goes, and with it the
		 * slot's link when it was the last user of a gone owner's range. */
		if (!strcmp(owner, name)) {
			id_slot_drop_if_unused(run, slots, NULL, slot);
		} else if ((shared = openat(slots, sharedname, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) >= 0 &&
			   unlinkat(shared, name, 0) == 0) {
			id_slot_drop_if_unused(run, slots, owner, slot);
		}
	}
	flock(slots, LOCK_UN);
}

/* Point slot SLOT's link at TARGET: a new link renamed over the old one, so that it always
 * names an owner. */
static int id_slot_point(int slots, uint32_t slot, const char *target)
{
	char path[16], tmp[32];
	snprintf(path, sizeof(path), "%u", slot);
	snprintf(tmp, sizeof(tmp), ".%u.%d", slot, (int)getpid());
	unlinkat(slots, tmp, 0);
	if (symlinkat(target, slots, tmp) < 0)
		return -errno;
	if (renameat(slots, tmp, slots, path) < 0) {
		int e = errno;
		unlinkat(slots, tmp, 0);
		return -e;
	}
	return 0;
}

int id_slot_rename(int run, const char *old_name, const char *new_name, uint32_t slot, capsule_error *err)
{
	_cleanup_close_ int slots = -1;
	char both[2 * CAPSULE_NAME_MAX + 3];
	snprintf(both, sizeof(both), "%s>%s", old_name, new_name);
	int r;
	if (geteuid() == 0) {
		if ((r = home_subdir_open("slots", &slots, err)) < 0)
			return r;
		/* A sharer's name is in its owner's shared folder, not in the link. */
		char path[16], owner[2 * CAPSULE_NAME_MAX + 3];
		snprintf(path, sizeof(path), "%u", slot);
		ssize_t l = readlinkat(slots, path, owner, sizeof(owner) - 1);
		if (l > 0 && ((size_t)l != strlen(old_name) || memcmp(owner, old_name, (size_t)l)))
			return cap_err_plain(err, EOPNOTSUPP, "sandbox '%s' shares another sandbox's host ids and cannot "
							      "be renamed", old_name);
		if ((r = id_slot_point(slots, slot, both)) < 0)
			return cap_err(err, -r, "renaming id slot %u of sandbox '%s'", slot, old_name);
	}
	if (renameat2(run, old_name, run, new_name, RENAME_NOREPLACE) < 0) {
		r = errno == EEXIST ? cap_err_plain(err, EEXIST, "a sandbox named '%s' already exists", new_name)
				    : cap_err(err, errno, "renaming sandbox '%s' to '%s'", old_name, new_name);
		if (slots >= 0)
			id_slot_point(slots, slot, old_name);
		return r;
	}
	/* Past the folder's rename the take has happened; a link left naming both is still read right. */
	if (slots >= 0)
		id_slot_point(slots, slot, new_name);
	return 0;
}

/* ---- helper binaries ---- */

static bool try_dir(const char *dir, const char *name, char **path)
{
	char buf[PATH_MAX];
	if (snprintf(buf, sizeof(buf), "%s/%s", dir, name) >= (int)sizeof(buf))
		return false;
	if (access(buf, X_OK) != 0)
		return false;
	*path = strdup(buf);
	return *path != NULL;
}

static bool try_dir_of(const char *file, const char *name, char **path)
{
	char buf[PATH_MAX];
	snprintf(buf, sizeof(buf), "%s", file);
	char *slash = strrchr(buf, '/');
	if (!slash)
		return false;
	*slash = '\0';
	return try_dir(buf, name, path);
}

int find_helper(const char *name, char **path, capsule_error *err)
{
	const char *env = getenv("CAPSULE_LIBEXEC");
	if (env && *env && try_dir(env, name, path))
		return 0;
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n > 0) {
		self[n] = '\0';
		if (try_dir_of(self, name, path))
			return 0;
	}
	Dl_info info;
	if (dladdr((void *)find_helper, &info) && info.dli_fname && try_dir_of(info.dli_fname, name, path))
		return 0;
	if (try_dir(CAPSULE_LIBEXECDIR, name, path))
		return 0;
	return cap_err_plain(err, ENOENT, "cannot find '%s' (looked in $CAPSULE_LIBEXEC, next to the program, and '%s')",
			     name, CAPSULE_LIBEXECDIR);
}

/* ---- the "host" image ---- */

struct skel {
	int dfd;
	uid_t uid;
	gid_t gid;
};

static int skel_own(struct skel *s, const char *name)
{
	return fchownat(s->dfd, name, s->uid, s->gid, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
}

static int skel_dir(struct skel *s, const char *name, mode_t mode)
{
	if (mkdirat(s->dfd, name, mode) < 0 && errno != EEXIST)
		return -errno;
	fchmodat(s->dfd, name, mode, 0);
	return skel_own(s, name);
}

static int skel_file(struct skel *s, const char *name, const char *data, size_t len, mode_t mode)
{
	int fd = openat(s->dfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
	if (fd < 0)
		return -errno;
	int r = write_all(fd, data, len);
	if (r == 0 && fchown(fd, s->uid, s->gid) < 0)
		r = -errno;
	close(fd);
	return r;
}

static int skel_link(struct skel *s, const char *target, const char *name)
{
	if (symlinkat(target, s->dfd, name) < 0 && errno != EEXIST)
		return -errno;
	return skel_own(s, name);
}

/* Copy a regular host file (or what a host symlink says) into the skeleton; a missing host
 * file is not an error: hosts differ. */
static int skel_copy(struct skel *s, const char *host, const char *name)
{
	struct stat st;
	if (lstat(host, &st) < 0)
		return 0;
	if (S_ISLNK(st.st_mode)) {
		char t[PATH_MAX];
		ssize_t n = readlink(host, t, sizeof(t) - 1);
		if (n < 0)
			return 0;
		t[n] = '\0';
		return skel_link(s, t, name);
	}
	if (!S_ISREG(st.st_mode))
		return 0;
	_cleanup_free_ char *data = NULL;
	size_t len;
	if (read_file_at(AT_FDCWD, host, 16u << 20, &data, &len) < 0)
		return 0;
	return skel_file(s, name, data, len, st.st_mode & 0644);
}

/* Mirror a host folder of symlinks and small files (e.g. /etc/alternatives). */
static int skel_copy_dir(struct skel *s, const char *host, const char *name)
{
	int r = skel_dir(s, name, 0755);
	if (r < 0)
		return r;
	DIR *d = opendir(host);
	if (!d)
		return 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		char hp[PATH_MAX], sp[PATH_MAX];
		snprintf(hp, sizeof(hp), "%s/%s", host, de->d_name);
		snprintf(sp, sizeof(sp), "%s/%s", name, de->d_name);
		if ((r = skel_copy(s, hp, sp)) < 0)
			break;
	}
	closedir(d);
	return r;
}

static int build_host_skeleton(struct skel *s)
{
	static const struct {
		const char *name;
		mode_t mode;
	} dirs[] = {
		{ "etc", 0755 }, { "root", 0700 }, { "home", 0755 }, { "tmp", 01777 }, { "var", 0755 },
		{ "var/tmp", 01777 }, { "var/lib", 0755 }, { "var/cache", 0755 }, { "var/log", 0755 },
		{ "run", 0755 }, { "proc", 0555 }, { "sys", 0555 }, { "dev", 0755 }, { "mnt", 0755 },
		{ "opt", 0755 }, { "srv", 0755 }, { "media", 0755 }, { "usr", 0755 },
	};
	int r = 0;
	for (size_t i = 0; i < ARRAY_SIZE(dirs) && r == 0; i++)
		r = skel_dir(s, dirs[i].name, dirs[i].mode);
	/* /bin, /lib, ... as the host has them: symlinks into /usr on merged-/usr hosts, mount
	 * points otherwise. */
	static const char *const top[] = { "bin", "sbin", "lib", "lib32", "lib64", "libx32" };
	for (size_t i = 0; i < ARRAY_SIZE(top) && r == 0; i++) {
		char host[16];
		snprintf(host, sizeof(host), "/%s", top[i]);
		struct stat st;
		if (lstat(host, &st) < 0)
			continue;
		if (S_ISLNK(st.st_mode))
			r = skel_copy(s, host, top[i]);
		else if (S_ISDIR(st.st_mode))
			r = skel_dir(s, top[i], 0755);
	}
	if (r < 0)
		return r;
	const char *shell = access("/bin/bash", X_OK) == 0 ? "/bin/bash" : "/bin/sh";
	char passwd[512];
	int n = snprintf(passwd, sizeof(passwd),
			 "root:x:0:0:root:/root:%s\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n", shell);
	static const char group[] = "root:x:0:\ntty:x:5:\nusers:x:100:\nnogroup:x:65534:\n";
	static const char hosts[] = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";
	static const char nsswitch[] = "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n";
	static const char profile[] =
		"export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
		"if [ \"$(id -u)\" -eq 0 ]; then PS1='\\h:\\w# '; else PS1='\\h:\\w$ '; fi\n";
	if ((r = skel_file(s, "etc/passwd", passwd, (size_t)n, 0644)) < 0 ||
	    (r = skel_file(s, "etc/group", group, sizeof(group) - 1, 0644)) < 0 ||
	    (r = skel_file(s, "etc/hosts", hosts, sizeof(hosts) - 1, 0644)) < 0 ||
	    (r = skel_file(s, "etc/nsswitch.conf", nsswitch, sizeof(nsswitch) - 1, 0644)) < 0 ||
	    (r = skel_file(s, "etc/profile", profile, sizeof(profile) - 1, 0644)) < 0 ||
	    (r = skel_file(s, "etc/resolv.conf", "", 0, 0644)) < 0 ||
	    (r = skel_file(s, "etc/hostname", "capsule\n", 8, 0644)) < 0)
		return r;
	static const char *const copies[] = { "os-release", "ld.so.cache", "ld.so.conf", "localtime", "shells",
					      "debian_version", "bash.bashrc", "inputrc", "mime.types" };
	for (size_t i = 0; i < ARRAY_SIZE(copies) && r == 0; i++) {
		char host[64], name[64];
		snprintf(host, sizeof(host), "/etc/%s", copies[i]);
		snprintf(name, sizeof(name), "etc/%s", copies[i]);
		r = skel_copy(s, host, name);
	}
	if (r == 0)
		r = skel_copy_dir(s, "/etc/alternatives", "etc/alternatives");
	if (r == 0)
		r = skel_copy_dir(s, "/etc/ld.so.conf.d", "etc/ld.so.conf.d");
	return r;
}

int image_host_lower(uid_t ub, gid_t gb, char **path, capsule_error *err)
{
	_cleanup_close_ int images = -1;
	int r = home_subdir_open("images", &images, err);
	if (r < 0)
		return r;
	char name[64];
	snprintf(name, sizeof(name), "host-v1-%u", (unsigned)ub);
	char full[PATH_MAX];
	snprintf(full, sizeof(full), "%s/images/%s", capsule_home(), name);
	struct stat st;
	if (fstatat(images, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode)) {
		*path = strdup(full);
		return *path ? 0 : cap_err(err, ENOMEM, "image path");
	}
	/* Built under a temporary name and renamed: a reader sees all of it or none. */
	char tmp[96];
	snprintf(tmp, sizeof(tmp), ".tmp-%s-%d", name, (int)getpid());
	rm_rf_at(images, tmp);
	if (mkdirat(images, tmp, 0755) < 0)
		return cap_err(err, errno, "mkdir '%s/images/%s'", capsule_home(), tmp);
	struct skel s = { .uid = ub, .gid = gb };
	s.dfd = openat(images, tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (s.dfd < 0)
		return cap_err(err, errno, "open '%s'", tmp);
	r = skel_own(&s, ".");
	if (r == 0)
		r = build_host_skeleton(&s);
	close(s.dfd);
	if (r == 0 && renameat(images, tmp, images, name) < 0 && errno != EEXIST && errno != ENOTEMPTY)
		r = -errno;
	rm_rf_at(images, tmp);
	if (r < 0)
		return cap_err(err, -r, "building the 'host' image in '%s'", full);
	*path = strdup(full);
	return *path ? 0 : cap_err(err, ENOMEM, "image path");
}

int user_config_path(const char *name, char *out, size_t size)
{
	const char *xdg = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
	if (xdg && xdg[0] == '/')
		snprintf(out, size, "%s/capsule/%s", xdg, name);
	else if (home && home[0] == '/')
		snprintf(out, size, "%s/.config/capsule/%s", home, name);
	else
		return -ENOENT;
	return 0;
}

void home_test_pause(const char *env, const char *stage, const char *sub, const char *file)
{
	const char *want = getenv(env);
	if (!want || strncmp(want, stage, strlen(stage)) != 0)
		return;
	_cleanup_close_ int dir = -1;
	if ((sub ? home_subdir_open(sub, &dir, NULL) : home_open(&dir, NULL)) < 0)
		return;
	char text[64];
	int n = snprintf(text, sizeof(text), "%s %d\n", stage, (int)getpid());
	write_file_atomic_at(dir, file, text, (size_t)n, 0600, false);
	/* "STAGE+": go on once the test removes the marker (a test that kills another process
	 * meanwhile, then needs this one to go on); otherwise held until killed (a minute). */
	bool resumable = want[strlen(stage)] == '+';
	for (int i = 0; i < 600; i++) {
		if (resumable && faccessat(dir, file, F_OK, AT_SYMLINK_NOFOLLOW) < 0)
			return;
		usleep(100000);
	}
}
