/* `cp` between the host and a sandbox, built on the filesystem API.
 *
 * Symlinks are copied as symlinks and never followed, on either side, so a folder holding a
 * loop copies in finite time. On the host no symlink is followed at all, not even in the path
 * the user typed: a copy out of a sandbox makes links whose targets the sandbox chose, and a
 * later copy cannot tell them from the user's own, so a link anywhere in a host path would let
 * a sandbox steer that copy (a trailing slash, or a link in the middle of the path). Every
 * file and folder is then made relative to a folder descriptor, one component at a time:
 * entry names come from the sandbox (the decoder already refuses "/", "." and ".."). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "syscalls.h"
#include "util.h"

#define COPY_MAX_DEPTH 256

/* What a copy out keeps of a mode the sandbox chose: no set-id bits, no sticky bit, and write
 * access for the owner alone, so nothing the sandbox made is writable (or runs privileged) for
 * another host user. A fixed rule rather than the umask: reading the umask races other threads
 * of the calling program. */
#define COPY_OUT_MODE_MASK 0755

static int join(char *out, size_t size, const char *dir, const char *name, capsule_error *err)
{
	int n = snprintf(out, size, "%s%s%s", dir, dir[strlen(dir) - 1] == '/' ? "" : "/", name);
	if (n < 0 || (size_t)n >= size)
		return cap_err_plain(err, ENAMETOOLONG, "path '%s/%s' is too long", dir, name);
	return 0;
}

/* The last component of PATH, ignoring trailing slashes ("" for "/"). */
static const char *last_component(const char *path, char *buf, size_t size)
{
	snprintf(buf, size, "%s", path);
	size_t n = strlen(buf);
	while (n > 1 && buf[n - 1] == '/')
		buf[--n] = 0;
	char *s = strrchr(buf, '/');
	return s ? s + 1 : buf;
}

/* NAME below DIRFD as a folder, refusing a symlink: NAME is one component we listed or made. */
static int open_folder_below(int dirfd, const char *name, int flags)
{
	return sys_openat2(dirfd, name, (uint64_t)(flags | O_DIRECTORY | O_CLOEXEC),
			   RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS);
}

/* A host path as the user typed it: the folder that holds its last component, opened without
 * following any symlink ("." and ".." are fine: they cross no link), and that component. */
struct host_path {
	int dirfd;
	char name[NAME_MAX + 1]; /* "" when the path names the folder itself: "/", ".", "a/.." */
	bool trailing_slash;
};

static int host_path_open(const char *path, struct host_path *hp, capsule_error *err)
{
	char dir[PATH_MAX];
	size_t n = strlen(path);
	if (n >= sizeof(dir))
		return cap_err_plain(err, ENAMETOOLONG, "copy: host path is longer than %d bytes", PATH_MAX - 1);
	memcpy(dir, path, n + 1);
	hp->trailing_slash = false;
	while (n > 1 && dir[n - 1] == '/') {
		dir[--n] = 0;
		hp->trailing_slash = true;
	}
	char *slash = strrchr(dir, '/');
	const char *last = slash ? slash + 1 : dir;
	hp->name[0] = 0;
	if (last[0] && strcmp(last, ".") != 0 && strcmp(last, "..") != 0) {
		if (strlen(last) > NAME_MAX)
			return cap_err(err, ENAMETOOLONG, "copy: '%s'", path);
		strcpy(hp->name, last);
		if (!slash)
			strcpy(dir, ".");
		else
			slash[slash == dir ? 1 : 0] = 0;
	}
	hp->dirfd = sys_openat2(AT_FDCWD, dir, O_PATH | O_DIRECTORY | O_CLOEXEC,
				RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS);
	if (hp->dirfd >= 0)
		return 0;
	if (errno == ELOOP)
		return cap_err_plain(err, ELOOP, "copy: host path '%s' goes through a symlink; name the folder it points to",
				     path);
	return cap_err(err, errno, "copy: folder of '%s'", path);
}

/* ---- host -> sandbox ---------------------------------------------------------------- */

static int copy_to_at(capsule_sandbox *sb, int dirfd, const char *name, const char *guest, int depth, capsule_error *err)
{
	if (depth > COPY_MAX_DEPTH)
		return cap_err_plain(err, ELOOP, "copy: folders nested deeper than %d at '%s'", COPY_MAX_DEPTH, guest);
	struct stat st;
	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return cap_err(err, errno, "copy: '%s'", name);
	if (S_ISLNK(st.st_mode)) {
		char target[CAPSULE_FS_PATH_MAX + 1];
		ssize_t n = readlinkat(dirfd, name, target, sizeof(target));
		if (n < 0 || (size_t)n > CAPSULE_FS_PATH_MAX)
			return cap_err(err, n < 0 ? errno : ENAMETOOLONG, "copy: reading link '%s'", name);
		target[n] = 0;
		int r = capsule_fs_remove(sb, guest, CAPSULE_FS_FORCE, err);
		return r < 0 ? r : capsule_fs_symlink(sb, target, guest, err);
	}
	if (S_ISREG(st.st_mode)) {
		_cleanup_close_ int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC);
		if (fd < 0)
			return cap_err(err, errno, "copy: opening '%s'", name);
		return capsule_fs_write_from_fd(sb, guest, fd, st.st_mode & 07777, 0, err);
	}
	if (!S_ISDIR(st.st_mode))
		return 0; /* devices, fifos, sockets: skipped, as documented */
	_cleanup_close_ int fd = open_folder_below(dirfd, name, O_RDONLY);
	if (fd < 0)
		return cap_err(err, errno, "copy: opening folder '%s'", name);
	capsule_fs_entry e = { 0 };
	int r = capsule_fs_stat(sb, guest, &e, NULL);
	bool exists_as_dir = r == 0 && e.kind == CAPSULE_FS_DIR;
	capsule_fs_entry_clear(&e);
	if (!exists_as_dir && (r = capsule_fs_mkdir(sb, guest, st.st_mode & 07777, 0, err)) < 0)
		return r;
	int dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
	if (!d) {
		if (dup_fd >= 0)
			close(dup_fd);
		return cap_err(err, errno, "copy: reading folder '%s'", name);
	}
	r = 0;
	struct dirent *de;
	char child[CAPSULE_FS_PATH_MAX + 1];
	while (r == 0 && (de = readdir(d))) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if ((r = join(child, sizeof(child), guest, de->d_name, err)) == 0)
			r = copy_to_at(sb, fd, de->d_name, child, depth + 1, err);
	}
	closedir(d);
	return r;
}

int capsule_copy_to(capsule_sandbox *sb, const char *host_src, const char *guest_dst, capsule_error *err)
{
	if (!host_src || !host_src[0])
		return cap_err_plain(err, EINVAL, "copy: no host path given");
	if (!guest_dst || guest_dst[0] != '/')
		return cap_err_plain(err, EINVAL, "copy: '%s' is not an absolute path inside the sandbox",
				     guest_dst ? guest_dst : "");
	if (strlen(guest_dst) > CAPSULE_FS_PATH_MAX)
		return cap_err_plain(err, ENAMETOOLONG, "copy: path is longer than %d bytes", CAPSULE_FS_PATH_MAX);
	/* A link inside the source tree is the user's and goes in as a link; a link on the way
	 * to the source may come from an earlier copy out, and following it would hand the
	 * sandbox a host file it chose. */
	struct host_path src;
	int r = host_path_open(host_src, &src, err);
	if (r < 0)
		return r;
	_cleanup_close_ int parent = src.dirfd;
	const char *base = src.name[0] ? src.name : ".";
	struct stat st;
	if (fstatat(parent, base, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return cap_err(err, errno, "copy: '%s'", host_src);
	if (src.trailing_slash && S_ISLNK(st.st_mode))
		return cap_err_plain(err, ELOOP, "copy: '%s' is a symlink; name the folder it points to", host_src);
	if (src.trailing_slash && !S_ISDIR(st.st_mode))
		return cap_err(err, ENOTDIR, "copy: '%s'", host_src);
	/* Into an existing folder: under the source's own name, as cp and docker cp do. */
	char dest[CAPSULE_FS_PATH_MAX + 1];
	snprintf(dest, sizeof(dest), "%s", guest_dst);
	capsule_fs_entry e = { 0 };
	if (capsule_fs_stat(sb, guest_dst, &e, NULL) == 0 && e.kind == CAPSULE_FS_DIR && src.name[0])
		r = join(dest, sizeof(dest), guest_dst, src.name, err);
	capsule_fs_entry_clear(&e);
	return r < 0 ? r : copy_to_at(sb, parent, base, dest, 0, err);
}

/* ---- sandbox -> host ---------------------------------------------------------------- */

static int copy_file_from(capsule_sandbox *sb, const char *guest, int dirfd, const char *name, uint32_t mode,
			  capsule_error *err)
{
	/* Into a temporary name, renamed over NAME at the end: a failed copy leaves what was
	 * there. */
	char tmp[NAME_MAX + 1];
	int fd = -1;
	for (int i = 0; i < 16 && fd < 0; i++) {
		uint64_t rnd = 0;
		if (getentropy(&rnd, sizeof(rnd)) < 0)
			rnd = now_ms() + (uint64_t)i;
		snprintf(tmp, sizeof(tmp), ".capsule-cp-%016llx", (unsigned long long)rnd);
		fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd < 0 && errno != EEXIST)
			break;
	}
	if (fd < 0)
		return cap_err(err, errno, "copy: creating '%s' on the host", name);
	int r = capsule_fs_read_to_fd(sb, guest, fd, err);
	if (r == 0 && fchmod(fd, mode & COPY_OUT_MODE_MASK) < 0)
		r = cap_err(err, errno, "copy: setting the mode of '%s'", name);
	if (close(fd) < 0 && r == 0)
		r = cap_err(err, errno, "copy: writing '%s'", name);
	if (r == 0 && renameat(dirfd, tmp, dirfd, name) < 0)
		r = cap_err(err, errno, "copy: putting '%s' in place", name);
	if (r < 0)
		unlinkat(dirfd, tmp, 0);
	return r;
}

static int copy_from_at(capsule_sandbox *sb, const char *guest, const capsule_fs_entry *e, int dirfd, const char *name,
			int depth, capsule_error *err)
{
	if (depth > COPY_MAX_DEPTH)
		return cap_err_plain(err, ELOOP, "copy: folders nested deeper than %d at '%s'", COPY_MAX_DEPTH, guest);
	switch (e->kind) {
	case CAPSULE_FS_FILE:
		return copy_file_from(sb, guest, dirfd, name, e->mode, err);
	case CAPSULE_FS_SYMLINK:
		if (!e->link_target)
			return 0;
		if (symlinkat(e->link_target, dirfd, name) < 0) {
			struct stat st;
			if (errno != EEXIST || fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || S_ISDIR(st.st_mode) ||
			    unlinkat(dirfd, name, 0) < 0 || symlinkat(e->link_target, dirfd, name) < 0)
				return cap_err(err, errno, "copy: making link '%s' on the host", name);
		}
		return 0;
	case CAPSULE_FS_DIR:
		break;
	default:
		return 0;
	}
	/* A folder that is already there (from an earlier copy, or the user's) keeps its mode:
	 * the sandbox chooses only the modes of what this copy makes. */
	bool made = mkdirat(dirfd, name, 0700) == 0;
	if (!made && errno != EEXIST)
		return cap_err(err, errno, "copy: making folder '%s' on the host", name);
	_cleanup_close_ int fd = open_folder_below(dirfd, name, O_RDONLY);
	if (fd < 0)
		return cap_err(err, errno == ELOOP ? ENOTDIR : errno, "copy: opening folder '%s' on the host", name);
	capsule_fs_entry *v;
	size_t n;
	int r = capsule_fs_list(sb, guest, &v, &n, err);
	if (r < 0)
		return r;
	char child[CAPSULE_FS_PATH_MAX + 1];
	for (size_t i = 0; i < n && r == 0; i++)
		if ((r = join(child, sizeof(child), guest, v[i].name, err)) == 0)
			r = copy_from_at(sb, child, &v[i], fd, v[i].name, depth + 1, err);
	capsule_fs_entries_free(v, n);
	if (r == 0 && made && fchmod(fd, e->mode & COPY_OUT_MODE_MASK) < 0)
		r = cap_err(err, errno, "copy: setting the mode of folder '%s'", name);
	return r;
}

/* Where a copy out lands: returns the host folder to make NAME in. An existing folder at
 * HOST_DST takes SRC_NAME inside it, as cp does. A symlink at HOST_DST is refused, with or
 * without a trailing slash: an earlier copy out of a sandbox may have made it. */
static int open_destination(const char *host_dst, const char *src_name, char name[NAME_MAX + 1], capsule_error *err)
{
	struct host_path dst;
	int r = host_path_open(host_dst, &dst, err);
	if (r < 0)
		return r;
	_cleanup_close_ int parent = dst.dirfd;
	struct stat st;
	if (!dst.name[0]) {
		snprintf(name, NAME_MAX + 1, "%s", src_name);
		return take_fd(parent);
	}
	if (fstatat(parent, dst.name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno != ENOENT || dst.trailing_slash)
			return cap_err(err, errno, "copy: destination '%s'", host_dst);
		st.st_mode = 0;
	}
	if (S_ISLNK(st.st_mode))
		return cap_err_plain(err, ELOOP, "copy: destination '%s' is a symlink; name the folder it points to",
				     host_dst);
	if (!S_ISDIR(st.st_mode)) {
		if (dst.trailing_slash)
			return cap_err(err, ENOTDIR, "copy: destination '%s'", host_dst);
		snprintf(name, NAME_MAX + 1, "%s", dst.name);
		return take_fd(parent);
	}
	int fd = open_folder_below(parent, dst.name, O_PATH);
	if (fd < 0)
		return cap_err(err, errno, "copy: destination '%s'", host_dst);
	snprintf(name, NAME_MAX + 1, "%s", src_name);
	return fd;
}

int capsule_copy_from(capsule_sandbox *sb, const char *guest_src, const char *host_dst, capsule_error *err)
{
	if (!host_dst || !host_dst[0])
		return cap_err_plain(err, EINVAL, "copy: no host path given");
	capsule_fs_entry e;
	int r = capsule_fs_stat(sb, guest_src, &e, err);
	if (r < 0)
		return r;
	char buf[CAPSULE_FS_PATH_MAX + 1], name[NAME_MAX + 1];
	const char *src_base = last_component(guest_src, buf, sizeof(buf));
	_cleanup_close_ int dirfd = open_destination(host_dst, src_base[0] ? src_base : "root", name, err);
	if (dirfd < 0)
		r = dirfd;
	else if (!name[0] || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		r = cap_err_plain(err, EINVAL, "copy: '%s' does not name a file", host_dst);
	else
		r = copy_from_at(sb, guest_src, &e, dirfd, name, 0, err);
	capsule_fs_entry_clear(&e);
	return r;
}
