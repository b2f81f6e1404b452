/* Named volumes: $CAPSULE_HOME/volumes/<name>/ holds
 *
 *   meta       key=value lines (kind, quota, created), written atomically and durably
 *   lock       flock: shared while a sandbox or a host-side access uses the volume,
 *              exclusive while it is removed
 *   data/      the content of a volume without a quota
 *   disk.img   the ext4 image of a volume with a quota; its content is in data/ inside it,
 *              so that lost+found is never shown
 *
 * A volume is made under a temp name and renamed into place, and removed by renaming it away
 * first: a crash never leaves a half volume under a real name. Temp folders hold their own
 * lock while they are worked on, so the next create or list sweeps those a crash left. Their
 * files read and written from the host: volume_io.c. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>

#include "ext4_image.h"
#include "home.h"
#include "json.h"
#include "parse.h"
#include "rootless.h"
#include "sandbox_config.h"
#include "syscalls.h"
#include "util.h"
#include "volume.h"

#define VOLUME_KIND_FOLDER "folder"
#define VOLUME_KIND_EXT4 "ext4"

struct volume_meta {
	char kind[16];
	uint64_t quota_bytes;
	int64_t created_unix;
};

static int volume_name_check(const char *name, capsule_error *err)
{
	return parse_name(name, "volume name", err);
}

/* volumes/ is root's alone: sandboxes reach a volume only through the mount the shim makes
 * from a file descriptor, never by path. */
static int volumes_dir_open(int *fd, capsule_error *err)
{
	int r = home_subdir_open("volumes", fd, err);
	if (r < 0)
		return r;
	if (fchmod(*fd, 0700) < 0 && errno != EPERM) {
		r = cap_err(err, errno, "chmod '%s/volumes'", capsule_home());
		close(*fd);
		*fd = -1;
	}
	return r;
}

static int meta_parse(const char *text, struct volume_meta *m)
{
	memset(m, 0, sizeof(*m));
	bool have_kind = false;
	for (const char *line = text; line && *line;) {
		const char *nl = strchr(line, '\n');
		size_t n = nl ? (size_t)(nl - line) : strlen(line);
		char buf[128];
		if (n < sizeof(buf)) {
			memcpy(buf, line, n);
			buf[n] = '\0';
			char *eq = strchr(buf, '=');
			if (eq) {
				*eq = '\0';
				const char *v = eq + 1;
				if (!strcmp(buf, "kind") && (!strcmp(v, VOLUME_KIND_FOLDER) || !strcmp(v, VOLUME_KIND_EXT4))) {
					snprintf(m->kind, sizeof(m->kind), "%s", v);
					have_kind = true;
				} else if (!strcmp(buf, "quota_bytes")) {
					m->quota_bytes = strtoull(v, NULL, 10);
				} else if (!strcmp(buf, "created")) {
					m->created_unix = strtoll(v, NULL, 10);
				}
			}
		}
		line = nl ? nl + 1 : NULL;
	}
	if (!have_kind || (!strcmp(m->kind, VOLUME_KIND_EXT4) && m->quota_bytes < CAPSULE_VOLUME_QUOTA_MIN))
		return -EBADMSG;
	return 0;
}

static int meta_load(int dirfd, const char *name, struct volume_meta *m, capsule_error *err)
{
	_cleanup_free_ char *text = NULL;
	size_t len;
	int r = read_file_at(dirfd, "meta", 4096, &text, &len);
	if (r < 0)
		return cap_err(err, -r, "reading the metadata of volume '%s'", name);
	if (meta_parse(text, m) < 0)
		return cap_err_plain(err, EBADMSG, "volume '%s' has invalid metadata", name);
	return 0;
}

static bool is_ext4(const struct volume_meta *m)
{
	return !strcmp(m->kind, VOLUME_KIND_EXT4);
}

/* ---- temp folders --------------------------------------------------------------------- */

/* A ".new-*" or ".rm-*" folder whose lock nobody holds was left by a crash: remove it. */
static void sweep_temp_dirs(int vols)
{
	/* A fresh open file description: a dup would share (and move) VOLS's offset. */
	int dup_fd = openat(vols, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
	if (!d) {
		if (dup_fd >= 0)
			close(dup_fd);
		return;
	}
	struct dirent *de;
	while ((de = readdir(d))) {
		if (strncmp(de->d_name, ".new-", 5) && strncmp(de->d_name, ".rm-", 4))
			continue;
		_cleanup_close_ int dir = openat(vols, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (dir < 0)
			continue;
		_cleanup_close_ int lock = openat(dir, "lock", O_RDWR | O_NOFOLLOW | O_CLOEXEC);
		if (lock >= 0 && flock(lock, LOCK_EX | LOCK_NB) < 0)
			continue; /* someone is still working on it */
		/* No lock file: one just made (not locked yet) or one being emptied (already gone);
		 * only a folder nobody touched for a minute is a crash's. */
		struct stat st;
		if (lock < 0 && (fstat(dir, &st) < 0 || time(NULL) - st.st_mtime < 60))
			continue;
		rm_rf_at(vols, de->d_name);
	}
	closedir(d);
}

static int count_volumes(int vols, size_t *n)
{
	/* A fresh open file description: a dup would share (and move) VOLS's offset. */
	int dup_fd = openat(vols, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
	if (!d) {
		int e = errno;
		if (dup_fd >= 0)
			close(dup_fd);
		return -e;
	}
	*n = 0;
	struct dirent *de;
	while ((de = readdir(d)))
		if (de->d_name[0] != '.')
			(*n)++;
	closedir(d);
	return 0;
}

/* ---- create --------------------------------------------------------------------------- */

static int check_quota(const char *name, uint64_t quota, capsule_error *err)
{
	if (quota == 0)
		return 0;
	if (quota < CAPSULE_VOLUME_QUOTA_MIN)
		return cap_err_plain(err, EINVAL, "volume '%s': quota %" PRIu64 " bytes is too small (minimum 8M)", name,
				     quota);
	if (quota > CAPSULE_VOLUME_QUOTA_MAX)
		return cap_err_plain(err, EINVAL, "volume '%s': quota %" PRIu64 " bytes is too large (maximum 16T)",
				     name, quota);
	return 0;
}

/* Fill the temp folder TMP (below volumes/, open as DIR) with a ready volume. */
static int populate(int dir, const char *tmp, const char *name, uint64_t quota, capsule_error *err)
{
	const char *kind = quota ? VOLUME_KIND_EXT4 : VOLUME_KIND_FOLDER;
	if (!quota) {
		if (mkdirat(dir, "data", 0755) < 0 || fchmodat(dir, "data", 0755, 0) < 0)
			return cap_err(err, errno, "volume '%s': mkdir 'data'", name);
	} else {
		_cleanup_close_ int img = openat(dir, "disk.img", O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (img < 0)
			return cap_err(err, errno, "volume '%s': creating its image", name);
		/* Reserved now: the quota is a promise, and a host disk without room for it fails
		 * here, clearly, instead of some later write inside a sandbox. */
		int r = posix_fallocate(img, 0, (off_t)quota);
		if (r != 0)
			return cap_err(err, r, "volume '%s': reserving %" PRIu64 " bytes on the host disk for its quota",
				       name, quota);
		if (mkdirat(dir, "skel", 0700) < 0 || mkdirat(dir, "skel/data", 0755) < 0 ||
		    fchmodat(dir, "skel/data", 0755, 0) < 0)
			return cap_err(err, errno, "volume '%s': preparing its image", name);
		char base[4200], image[4300], skel[4300];
		snprintf(base, sizeof(base), "%s/volumes/%s", capsule_home(), tmp);
		snprintf(image, sizeof(image), "%s/disk.img", base);
		snprintf(skel, sizeof(skel), "%s/skel", base);
		/* SKEL's tree (an empty data/) is its content, so the image never needs a mount
		 * to be made ready. nodiscard: on a file, mkfs's discard punches holes, which
		 * would give back the space reserved for the quota. */
		const char *const opts[] = { "-q", "-F", "-m", "0", "-E", "root_owner=0:0,nodiscard", "-d", skel, NULL };
		char what[CAPSULE_NAME_MAX + 16];
		snprintf(what, sizeof(what), "volume '%s'", name);
		if ((r = ext4_image_mkfs(image, opts, what, err)) < 0)
			return r;
		rm_rf_at(dir, "skel");
		if (fsync(img) < 0)
			return cap_err(err, errno, "volume '%s': fsync of its image", name);
	}
	char meta[256];
	int n = snprintf(meta, sizeof(meta), "version=1\nname=%s\nkind=%s\nquota_bytes=%" PRIu64 "\ncreated=%lld\n",
			 name, kind, quota, (long long)time(NULL));
	int r = write_file_atomic_at(dir, "meta", meta, (size_t)n, 0600, true);
	if (r < 0)
		return cap_err(err, -r, "volume '%s': writing its metadata", name);
	if (fsync(dir) < 0)
		return cap_err(err, errno, "volume '%s': fsync", name);
	return 0;
}

int capsule_volume_create(const char *name, uint64_t quota_bytes, capsule_error *err)
{
	int r = volume_name_check(name, err);
	if (r < 0 || (r = check_quota(name, quota_bytes, err)) < 0)
		return r;
	/* A folder volume is a folder of the user's; a quota is an ext4 image mounted through a
	 * loop device, which needs root (fuse2fs would give a user one, slowly: not built). */
	if (quota_bytes && geteuid() != 0)
		return cap_err_plain(err, EPERM, "volume '%s': a volume with a quota needs root (its ext4 image is mounted "
				     "through a loop device); without --quota it works for a user", name);
	_cleanup_close_ int vols = -1;
	if ((r = volumes_dir_open(&vols, err)) < 0)
		return r;
	sweep_temp_dirs(vols);
	struct stat st;
	if (fstatat(vols, name, &st, AT_SYMLINK_NOFOLLOW) == 0)
		return cap_err_plain(err, EEXIST, "a volume named '%s' already exists", name);
	size_t n = 0;
	if ((r = count_volumes(vols, &n)) < 0)
		return cap_err(err, -r, "listing '%s/volumes'", capsule_home());
	if (n >= CAPSULE_VOLUME_MAX_COUNT)
		return cap_err_plain(err, ENOSPC, "volume '%s': too many volumes (at most %d)", name,
				     CAPSULE_VOLUME_MAX_COUNT);

	char tmp[128];
	snprintf(tmp, sizeof(tmp), ".new-%s.%d.%lx", name, (int)getpid(), (unsigned long)now_ns());
	if (mkdirat(vols, tmp, 0700) < 0)
		return cap_err(err, errno, "volume '%s': mkdir", name);
	_cleanup_close_ int dir = openat(vols, tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	_cleanup_close_ int lock = dir >= 0 ? openat(dir, "lock", O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600) : -1;
	/* Held while the folder is a temp one: a sweep by someone else leaves it alone. */
	if (dir < 0 || lock < 0 || flock(lock, LOCK_EX) < 0) {
		r = cap_err(err, errno, "volume '%s': preparing its folder", name);
		goto fail;
	}
	if ((r = populate(dir, tmp, name, quota_bytes, err)) < 0)
		goto fail;
	if (renameat2(vols, tmp, vols, name, RENAME_NOREPLACE) < 0) {
		if (errno == EEXIST)
			r = cap_err_plain(err, EEXIST, "a volume named '%s' already exists", name);
		else
			r = cap_err(err, errno, "volume '%s': rename into place", name);
		goto fail;
	}
	fsync(vols);
	return 0;
fail:
	rm_rf_at(vols, tmp);
	return r;
}

int volume_ensure(const char *name, bool *created, capsule_error *err)
{
	*created = false;
	_cleanup_close_ int vols = -1;
	int r = volume_name_check(name, err);
	if (r < 0 || (r = volumes_dir_open(&vols, err)) < 0)
		return r;
	struct stat st;
	if (fstatat(vols, name, &st, AT_SYMLINK_NOFOLLOW) == 0)
		return 0;
	r = capsule_volume_create(name, 0, err);
	*created = r == 0;
	return r == -EEXIST ? 0 : r;
}

/* ---- open: the loop device and the mount ---------------------------------------------- */

/* A detached mount of the volume's image, in no mount namespace: it goes when its last fd
 * (or the last sandbox that has it) goes, and the loop device with it. */
static int mount_image(int dir, const char *name, int *mnt, capsule_error *err)
{
	/* One attacher at a time per volume: two that each found no device would each attach
	 * one. The folder's own flock, apart from "lock" (held shared by users for long). */
	if (flock(dir, LOCK_EX) < 0)
		return cap_err(err, errno, "volume '%s': locking", name);
	char what[CAPSULE_NAME_MAX + 16], label[CAPSULE_NAME_MAX + 24];
	snprintf(what, sizeof(what), "volume '%s'", name);
	snprintf(label, sizeof(label), "capsule-volume:%s", name);
	_cleanup_close_ int img = openat(dir, "disk.img", O_RDWR | O_NOFOLLOW | O_CLOEXEC);
	int r = img < 0 ? cap_err(err, errno, "volume '%s': open its image", name)
			: ext4_image_mount(img, label, NULL, what, mnt, err);
	flock(dir, LOCK_UN);
	return r;
}

static int volume_dir_open(int vols, const char *name, int *dir, capsule_error *err)
{
	int fd = openat(vols, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return cap_err_plain(err, ENOENT, "no volume named '%s'", name);
		return cap_err(err, errno, "open volume '%s'", name);
	}
	*dir = fd;
	return 0;
}

void volume_close(struct volume_handle *vh)
{
	if (vh->data_fd >= 0)
		close(vh->data_fd);
	if (vh->mount_fd >= 0)
		close(vh->mount_fd);
	if (vh->lock_fd >= 0)
		close(vh->lock_fd);
	vh->data_fd = vh->mount_fd = vh->lock_fd = -1;
}

int volume_release_keep_lock(struct volume_handle *vh)
{
	int lock = take_fd(vh->lock_fd);
	volume_close(vh);
	return lock;
}

int volume_open(const char *name, struct volume_handle *vh, capsule_error *err)
{
	vh->lock_fd = vh->mount_fd = vh->data_fd = -1;
	_cleanup_close_ int vols = -1, dir = -1;
	int r = volume_name_check(name, err);
	if (r < 0 || (r = volumes_dir_open(&vols, err)) < 0 || (r = volume_dir_open(vols, name, &dir, err)) < 0)
		return r;
	vh->lock_fd = openat(dir, "lock", O_RDWR | O_NOFOLLOW | O_CLOEXEC);
	if (vh->lock_fd < 0 || flock(vh->lock_fd, LOCK_SH) < 0) {
		r = cap_err(err, errno, "volume '%s': taking its lock", name);
		goto fail;
	}
	/* A remove may have renamed the folder away while we waited for the lock. */
	struct stat have, want;
	if (fstat(dir, &have) < 0 || fstatat(vols, name, &want, AT_SYMLINK_NOFOLLOW) < 0 ||
	    have.st_dev != want.st_dev || have.st_ino != want.st_ino) {
		r = cap_err_plain(err, ENOENT, "no volume named '%s' (it was just removed)", name);
		goto fail;
	}
	struct volume_meta m;
	if ((r = meta_load(dir, name, &m, err)) < 0)
		goto fail;
	int base = dir;
	if (is_ext4(&m)) {
		if ((r = mount_image(dir, name, &vh->mount_fd, err)) < 0)
			goto fail;
		base = vh->mount_fd;
	}
	vh->data_fd = openat(base, "data", O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (vh->data_fd < 0) {
		r = cap_err(err, errno, "volume '%s': open its content", name);
		goto fail;
	}
	return 0;
fail:
	volume_close(vh);
	return r;
}

/* ---- inspect, list, remove ------------------------------------------------------------ */

static int info_load(int vols, const char *name, capsule_volume_info *info, capsule_error *err)
{
	_cleanup_close_ int dir = -1;
	int r = volume_dir_open(vols, name, &dir, err);
	if (r < 0)
		return r;
	struct volume_meta m;
	if ((r = meta_load(dir, name, &m, err)) < 0)
		return r;
	memset(info, 0, sizeof(*info));
	snprintf(info->name, sizeof(info->name), "%s", name);
	snprintf(info->kind, sizeof(info->kind), "%s", m.kind);
	info->quota_bytes = is_ext4(&m) ? m.quota_bytes : 0;
	info->created_unix = m.created_unix;
	snprintf(info->path, sizeof(info->path), "%s/volumes/%s", capsule_home(), name);
	/* Taken and given back at once: a user that starts in this instant waits, it does not
	 * fail (users take the shared lock blocking). */
	_cleanup_close_ int lock = openat(dir, "lock", O_RDWR | O_NOFOLLOW | O_CLOEXEC);
	if (lock >= 0) {
		if (flock(lock, LOCK_EX | LOCK_NB) < 0)
			info->in_use = errno == EWOULDBLOCK;
	}
	return 0;
}

int capsule_volume_inspect(capsule_volume_info *out, const char *name, capsule_error *err)
{
	_cleanup_close_ int vols = -1;
	int r = volume_name_check(name, err);
	if (r < 0 || (r = volumes_dir_open(&vols, err)) < 0)
		return r;
	return info_load(vols, name, out, err);
}

static void info_json(struct json_writer *j, const capsule_volume_info *v)
{
	json_object_begin(j);
	json_kv_string(j, "name", v->name);
	json_kv_string(j, "kind", v->kind);
	json_kv_uint(j, "quota_bytes", v->quota_bytes);
	json_kv_int(j, "created", v->created_unix);
	json_kv_bool(j, "in_use", v->in_use);
	json_kv_string(j, "path", v->path);
	json_object_end(j);
}

int capsule_volume_inspect_json(char **out_json, const char *name, capsule_error *err)
{
	capsule_volume_info info;
	int r = capsule_volume_inspect(&info, name, err);
	if (r < 0)
		return r;
	struct json_writer j;
	json_init(&j, true);
	info_json(&j, &info);
	int e = 0;
	char *text = json_steal(&j, &e);
	if (!text)
		return cap_err(err, e ? -e : ENOMEM, "formatting volume inspect output");
	*out_json = text;
	return 0;
}

static int info_cmp(const void *a, const void *b)
{
	return strcmp(((const capsule_volume_info *)a)->name, ((const capsule_volume_info *)b)->name);
}

int capsule_volume_list(capsule_volume_info **out, size_t *count, capsule_error *err)
{
	_cleanup_close_ int vols = -1;
	int r = volumes_dir_open(&vols, err);
	if (r < 0)
		return r;
	if (geteuid() == 0)
		sweep_temp_dirs(vols);
	/* A fresh open file description: a dup would share (and move) VOLS's offset. */
	int dup_fd = openat(vols, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
	if (!d) {
		if (dup_fd >= 0)
			close(dup_fd);
		return cap_err(err, errno, "listing '%s/volumes'", capsule_home());
	}
	capsule_volume_info *v = NULL;
	size_t n = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.' || volume_name_check(de->d_name, NULL) < 0)
			continue;
		capsule_volume_info info;
		if (info_load(vols, de->d_name, &info, NULL) < 0)
			continue;
		capsule_volume_info *nv = realloc(v, (n + 1) * sizeof(*v));
		if (!nv) {
			free(v);
			closedir(d);
			return cap_err(err, ENOMEM, "listing volumes");
		}
		v = nv;
		v[n++] = info;
	}
	closedir(d);
	if (n)
		qsort(v, n, sizeof(*v), info_cmp);
	*out = v;
	*count = n;
	return 0;
}

int capsule_volume_list_json(char **out_json, capsule_error *err)
{
	capsule_volume_info *v;
	size_t n;
	int r = capsule_volume_list(&v, &n, err);
	if (r < 0)
		return r;
	struct json_writer j;
	json_init(&j, true);
	json_array_begin(&j);
	for (size_t i = 0; i < n; i++)
		info_json(&j, &v[i]);
	json_array_end(&j);
	free(v);
	int e = 0;
	char *text = json_steal(&j, &e);
	if (!text)
		return cap_err(err, e ? -e : ENOMEM, "formatting the volume list");
	*out_json = text;
	return 0;
}

int capsule_volume_remove(const char *name, capsule_error *err)
{
	_cleanup_close_ int vols = -1, dir = -1, lock = -1;
	int r = volume_name_check(name, err);
	if (r < 0 || (r = volumes_dir_open(&vols, err)) < 0 || (r = volume_dir_open(vols, name, &dir, err)) < 0)
		return r;
	lock = openat(dir, "lock", O_RDWR | O_NOFOLLOW | O_CLOEXEC);
	if (lock < 0)
		return cap_err(err, errno, "volume '%s': open its lock", name);
	/* Users hold the lock shared for as long as they use the volume, and locks die with
	 * their processes: a volume is in use exactly while someone holds it. */
	if (flock(lock, LOCK_EX | LOCK_NB) < 0) {
		if (errno == EWOULDBLOCK)
			return cap_err_plain(err, EBUSY, "volume '%s' is in use by a sandbox", name);
		return cap_err(err, errno, "volume '%s': taking its lock", name);
	}
	/* Renamed away first, under the lock: from here on nobody can open it by name, and a
	 * crash leaves a ".rm-" folder that the next create or list sweeps. */
	char tmp[128];
	snprintf(tmp, sizeof(tmp), ".rm-%s.%d.%lx", name, (int)getpid(), (unsigned long)now_ns());
	if (renameat(vols, name, vols, tmp) < 0)
		return cap_err(err, errno, "volume '%s': rename away", name);
	fsync(vols);
	if ((r = rootless_rm_rf_at(vols, tmp)) < 0)
		return cap_err(err, -r, "volume '%s': removing '%s/volumes/%s'", name, capsule_home(), tmp);
	return 0;
}
