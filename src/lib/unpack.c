/* Unpacking a layer tar into a folder of the store, in overlayfs's own format, so that the
 * folder can be a lower layer as it is: a whiteout (.wh.NAME) becomes a 0:0 character device,
 * an opaque marker (.wh..wh..opq) the user.overlay.opaque xattr (sandboxes mount overlayfs
 * with userxattr).
 *
 * A layer is hostile input (docs/security.md): every entry is created with *at() calls from
 * the layer's own folder fd, its parent opened with RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS,
 * the entry itself with O_NOFOLLOW / AT_SYMLINK_NOFOLLOW, so that no name and no symlink of
 * the layer (or planted by an earlier entry) can make a write land outside it. */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "image.h"
#include "rootless.h"
#include "syscalls.h"
#include "util.h"

#define WHITEOUT_PREFIX ".wh."
#define OPAQUE_MARKER ".wh..wh..opq"

struct unpacker {
	int dir_fd;
	enum unpack_mode mode;
	bool chown; /* root callers keep the image's owners; rootless ones own every file */
	const char *what;
	const struct unpack_limits *limits;
	uint64_t entries;
	capsule_error *err;
};

/* NAME made relative and checked: no empty result, no ".." component, not absolute ("./"
 * prefixes and repeated slashes are dropped, as tar writers add them). */
static int clean_entry_path(const char *name, char *out, size_t size)
{
	if (!name || name[0] == '/')
		return -EINVAL;
	size_t o = 0;
	for (const char *p = name; *p;) {
		while (*p == '/')
			p++;
		if (!*p)
			break;
		size_t n = strcspn(p, "/");
		if (n == 2 && p[0] == '.' && p[1] == '.')
			return -EINVAL;
		if (!(n == 1 && p[0] == '.')) {
			if (o + n + 2 > size)
				return -ENAMETOOLONG;
			if (o)
				out[o++] = '/';
			memcpy(out + o, p, n);
			o += n;
		}
		p += n;
	}
	out[o] = '\0';
	return o ? 0 : -ENOENT;
}

/* Open (making missing folders, mode 0755, ours) the parent folder of PATH inside the layer.
 * Returns an O_RDONLY|O_DIRECTORY fd, or -errno; *BASE points into PATH at the last name. */
static int open_parent(struct unpacker *u, char *path, bool create, const char **base)
{
	char *slash = strrchr(path, '/');
	if (!slash) {
		*base = path;
		int fd = fcntl(u->dir_fd, F_DUPFD_CLOEXEC, 3);
		return fd < 0 ? -errno : fd;
	}
	*slash = '\0';
	*base = slash + 1;
	int fd = sys_openat2(u->dir_fd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC,
			     RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV);
	if (fd >= 0 || errno != ENOENT || !create) {
		int e = errno;
		*slash = '/';
		return fd >= 0 ? fd : -e;
	}
	/* Some parent is missing (tars need not list folders first): walk and make them. */
	int cur = fcntl(u->dir_fd, F_DUPFD_CLOEXEC, 3);
	if (cur < 0) {
		*slash = '/';
		return -errno;
	}
	for (char *c = path; c;) {
		char *e = strchr(c, '/');
		if (e)
			*e = '\0';
		if (mkdirat(cur, c, 0755) < 0 && errno != EEXIST) {
			int er = errno;
			if (e)
				*e = '/';
			close(cur);
			*slash = '/';
			return -er;
		}
		int next = openat(cur, c, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		int er = errno;
		if (e)
			*e = '/';
		close(cur);
		if (next < 0) {
			*slash = '/';
			return -er;
		}
		cur = next;
		c = e ? e + 1 : NULL;
	}
	*slash = '/';
	return cur;
}

/* Make room for a new entry NAME in PARENT: a later entry replaces an earlier one, but an
 * existing folder stays when the new entry is a folder too (its content merges). */
static int clear_slot(int parent, const char *name, bool keep_dir)
{
	struct stat st;
	if (fstatat(parent, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (S_ISDIR(st.st_mode)) {
		if (keep_dir)
			return 1;
		return rm_rf_at(parent, name);
	}
	return unlinkat(parent, name, 0) < 0 ? -errno : 0;
}

static bool xattr_allowed(const char *name, bool root)
{
	/* Overlay's own xattrs would let a layer forge whiteouts or redirects that its tar does not
	 * say; security.capability is the one non-user xattr images need (ping, ...). */
	if (!strncmp(name, "user.overlay.", 13))
		return false;
	if (!strncmp(name, "user.", 5))
		return true;
	return root && !strcmp(name, "security.capability");
}

/* Owners, mode, xattrs and times of the entry just made, through an fd that is that entry. */
static int apply_meta(struct unpacker *u, int fd, struct archive_entry *e)
{
	if (u->mode == UNPACK_LAYER) {
		if (u->chown && fchown(fd, (uid_t)archive_entry_uid(e), (gid_t)archive_entry_gid(e)) < 0)
			return -errno;
		const char *name;
		const void *value;
		size_t size;
		archive_entry_xattr_reset(e);
		while (archive_entry_xattr_next(e, &name, &value, &size) == ARCHIVE_OK)
			if (name && xattr_allowed(name, u->chown) && fsetxattr(fd, name, value, size, 0) < 0 &&
			    errno != ENOTSUP && errno != EPERM)
				return -errno;
	}
	/* After chown, which clears setuid and setgid. */
	mode_t mode = archive_entry_perm(e) & (u->mode == UNPACK_LAYER ? 07777 : 0755);
	if (fchmod(fd, mode) < 0)
		return -errno;
	struct timespec ts[2] = { { archive_entry_mtime(e), archive_entry_mtime_nsec(e) },
				  { archive_entry_mtime(e), archive_entry_mtime_nsec(e) } };
	futimens(fd, ts);
	return 0;
}

/* Decompressed bytes are counted as libarchive reads them, not as we write them: data it
 * skips (a device node's, a refused entry's) costs time all the same. */
static bool over_byte_limit(struct unpacker *u, struct archive *a)
{
	return (uint64_t)archive_filter_bytes(a, 0) > u->limits->bytes;
}

static int write_regular(struct unpacker *u, struct archive *a, int parent, const char *name, struct archive_entry *e)
{
	/* The size a file claims is what ftruncate gives it, however little data it carries. */
	if (archive_entry_size(e) < 0 || (uint64_t)archive_entry_size(e) > u->limits->bytes)
		return -EFBIG;
	int r = clear_slot(parent, name, false);
	if (r < 0)
		return r;
	_cleanup_close_ int fd = openat(parent, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	for (;;) {
		const void *buf;
		size_t len;
		la_int64_t off;
		int ar = archive_read_data_block(a, &buf, &len, &off);
		if (ar == ARCHIVE_EOF)
			break;
		if (ar < ARCHIVE_WARN)
			return -EIO;
		if (over_byte_limit(u, a))
			return -EFBIG;
		if (pwrite(fd, buf, len, off) != (ssize_t)len)
			return errno ? -errno : -EIO;
	}
	/* Sparse tails: the size is the entry's, whatever the last block was. */
	if (ftruncate(fd, archive_entry_size(e)) < 0)
		return -errno;
	return apply_meta(u, fd, e);
}

static int make_dir(struct unpacker *u, int parent, const char *name, struct archive_entry *e)
{
	int r = clear_slot(parent, name, true);
	if (r < 0)
		return r;
	if (r == 0 && mkdirat(parent, name, 0700) < 0)
		return -errno;
	_cleanup_close_ int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	return apply_meta(u, fd, e);
}

static int make_symlink(struct unpacker *u, int parent, const char *name, struct archive_entry *e)
{
	const char *target = archive_entry_symlink(e);
	if (!target || !*target)
		return -EINVAL;
	int r = clear_slot(parent, name, false);
	if (r < 0)
		return r;
	/* The target is only text here; overlayfs resolves it inside the sandbox's root. */
	if (symlinkat(target, parent, name) < 0)
		return -errno;
	if (u->chown && fchownat(parent, name, (uid_t)archive_entry_uid(e), (gid_t)archive_entry_gid(e),
				 AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	return 0;
}

static int make_hardlink(struct unpacker *u, int parent, const char *name, const char *target_name)
{
	char target[4096];
	int r = clean_entry_path(target_name, target, sizeof(target));
	if (r < 0)
		return r == -ENAMETOOLONG ? r : -EXDEV;
	const char *tbase;
	_cleanup_close_ int tparent = open_parent(u, target, false, &tbase);
	if (tparent < 0)
		return tparent == -ENOENT || tparent == -ELOOP || tparent == -ENOTDIR ? -EXDEV : tparent;
	struct stat st;
	/* Only files of this layer: a link to a folder or to nothing is refused. */
	if (fstatat(tparent, tbase, &st, AT_SYMLINK_NOFOLLOW) < 0 || S_ISDIR(st.st_mode))
		return -EXDEV;
	if ((r = clear_slot(parent, name, false)) < 0)
		return r;
	return linkat(tparent, tbase, parent, name, 0) < 0 ? -errno : 0;
}

static int whiteout(struct unpacker *u, int parent, const char *name)
{
	if (!strcmp(name, OPAQUE_MARKER)) {
		static const char y = 'y';
		return fsetxattr(parent, "user.overlay.opaque", &y, 1, 0) < 0 ? -errno : 0;
	}
	const char *target = name + strlen(WHITEOUT_PREFIX);
	if (!*target || !strcmp(target, ".") || !strcmp(target, ".."))
		return -EINVAL;
	int r = clear_slot(parent, target, false);
	if (r < 0)
		return r;
	/* A 0:0 character device is overlayfs's whiteout; the kernel lets any user make one. */
	if (mknodat(parent, target, S_IFCHR | 0600, makedev(0, 0)) < 0)
		return -errno;
	if (u->chown && fchownat(parent, target, 0, 0, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	return 0;
}

static int too_large(struct unpacker *u)
{
	return cap_err_plain(u->err, EFBIG, "%s is larger than %llu bytes decompressed (%s in the registry "
			     "configuration's \"limits\"): refused, not stored", u->what,
			     (unsigned long long)u->limits->bytes, u->limits->bytes_limit);
}

/* What the entry's handler left unread (all of a skipped entry's data), read here where it is
 * counted, rather than by libarchive's skip at the next header where it is not. */
static int drain_entry(struct unpacker *u, struct archive *a)
{
	for (;;) {
		const void *buf;
		size_t len;
		la_int64_t off;
		int ar = archive_read_data_block(a, &buf, &len, &off);
		if (ar == ARCHIVE_EOF)
			return 0;
		if (ar < ARCHIVE_WARN)
			return cap_err_plain(u->err, EBADMSG, "%s: %s", u->what, archive_error_string(a));
		if (over_byte_limit(u, a))
			return too_large(u);
	}
}

static int unpack_entry(struct unpacker *u, struct archive *a, struct archive_entry *e)
{
	const char *raw = archive_entry_pathname(e);
	char path[4096];
	int r = clean_entry_path(raw, path, sizeof(path));
	if (r == -ENOENT)
		return 0; /* "./": the layer's root itself */
	if (r < 0)
		return cap_err_plain(u->err, EPERM, "%s: entry '%s' would land outside its folder", u->what, raw ? raw : "");
	const char *base;
	_cleanup_close_ int parent = open_parent(u, path, true, &base);
	if (parent == -ELOOP || parent == -ENOTDIR)
		return cap_err_plain(u->err, EPERM, "%s: entry '%s' is below a symlink or a file (never followed while "
				     "unpacking)", u->what, raw);
	if (parent < 0)
		return cap_err(u->err, -parent, "%s: entry '%s': its folder", u->what, raw);
	const char *hardlink = archive_entry_hardlink(e);
	mode_t type = archive_entry_filetype(e);
	if (u->mode == UNPACK_LAYER && !strncmp(base, WHITEOUT_PREFIX, strlen(WHITEOUT_PREFIX)))
		r = whiteout(u, parent, base);
	else if (hardlink)
		r = u->mode == UNPACK_ARCHIVE ? -EPERM : make_hardlink(u, parent, base, hardlink);
	else if (type == AE_IFREG)
		r = write_regular(u, a, parent, base, e);
	else if (type == AE_IFDIR)
		r = make_dir(u, parent, base, e);
	else if (u->mode == UNPACK_ARCHIVE)
		r = 0; /* an image archive holds files and folders; anything else is not ours */
	else if (type == AE_IFLNK)
		r = make_symlink(u, parent, base, e);
	else if (type == AE_IFIFO)
		r = mknodat(parent, base, S_IFIFO | (archive_entry_perm(e) & 0777), 0) < 0 && errno != EEXIST ? -errno : 0;
	else
		r = 0; /* device nodes and sockets: a sandbox gets its devices from us, never from an image */
	if (r == -EXDEV)
		return cap_err_plain(u->err, EPERM, "%s: hard link '%s' -> '%s' leaves the layer", u->what, raw, hardlink);
	if (r == -EFBIG)
		return too_large(u);
	if (r == -EINVAL && rootless_mapped_ids() &&
	    (archive_entry_uid(e) >= rootless_mapped_ids() || archive_entry_gid(e) >= rootless_mapped_ids()))
		return cap_err_plain(u->err, EOVERFLOW, "%s: entry '%s' is owned by %lld:%lld, beyond the %u ids a user's "
				     "sandbox maps (0 and the user's subordinate ranges)", u->what, raw,
				     (long long)archive_entry_uid(e), (long long)archive_entry_gid(e), rootless_mapped_ids());
	if (r < 0)
		return cap_err(u->err, -r, "%s: entry '%s'", u->what, raw);
	return 0;
}

int unpack_tar(int fd, int dir_fd, enum unpack_mode mode, const struct unpack_limits *limits, const char *what,
	       uint64_t *decompressed_out, capsule_error *err)
{
	struct archive *a = archive_read_new();
	if (!a)
		return cap_err(err, ENOMEM, "%s", what);
	archive_read_support_filter_all(a);
	archive_read_support_format_tar(a);
	archive_read_support_format_gnutar(a);
	struct unpacker u = {
		.dir_fd = dir_fd, .mode = mode, .chown = geteuid() == 0, .what = what, .limits = limits, .err = err
	};
	int r = 0;
	if (archive_read_open_fd(a, fd, 1 << 16) != ARCHIVE_OK) {
		r = cap_err_plain(err, EBADMSG, "%s: not a tar archive: %s", what, archive_error_string(a));
		goto out;
	}
	for (;;) {
		struct archive_entry *e;
		int ar = archive_read_next_header(a, &e);
		if (ar == ARCHIVE_EOF)
			break;
		if (ar < ARCHIVE_WARN) {
			r = cap_err_plain(err, EBADMSG, "%s: %s", what, archive_error_string(a));
			break;
		}
		if (++u.entries > limits->entries) {
			r = cap_err_plain(err, EFBIG, "%s has more than %llu entries (\"layer_entries\" in the registry "
					  "configuration's \"limits\"): refused, not stored", what,
					  (unsigned long long)limits->entries);
			break;
		}
		if (over_byte_limit(&u, a)) {
			r = too_large(&u);
			break;
		}
		if ((r = unpack_entry(&u, a, e)) < 0 || (r = drain_entry(&u, a)) < 0)
			break;
	}
	if (r == 0 && decompressed_out)
		*decompressed_out = (uint64_t)archive_filter_bytes(a, 0);
out:
	archive_read_free(a);
	return r;
}
