/* capsule-fuse's namespace operations: lookups, attributes, making and removing names,
 * rename and link, folders; and the table the session dispatches from. */
#include <dirent.h>
#include <sys/statvfs.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuse_server.h"

/* ---- operations --------------------------------------------------------------------- */

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	conn->max_write = IO_CHUNK;
	conn->max_readahead = IO_CHUNK;
	/* Contents change between host and sandbox only through read/write, where the transform
	 * sits: no writeback cache, no splice, no server-side suid handling (the kernel clears
	 * suid through setattr), no ".." lookups for NFS export. */
	conn->want &= ~(unsigned)(FUSE_CAP_WRITEBACK_CACHE | FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE |
				  FUSE_CAP_SPLICE_MOVE | FUSE_CAP_HANDLE_KILLPRIV | FUSE_CAP_EXPORT_SUPPORT |
				  FUSE_CAP_POSIX_ACL);
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	if (!name_ok(name)) {
		fuse_reply_err(req, strcmp(name, ".") && strcmp(name, "..") ? EINVAL : EPERM);
		return;
	}
	int fd = openat2_beneath(node_of(parent)->fd, name, O_PATH | O_NOFOLLOW, 0);
	if (fd < 0) {
		fuse_reply_err(req, -fd);
		return;
	}
	reply_entry(req, fd, NULL);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	node_forget(node_of(ino), nlookup);
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	for (size_t i = 0; i < count; i++)
		node_forget(node_of(forgets[i].ino), forgets[i].nlookup);
	fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)fi;
	struct stat st;
	int r = node_stat(node_of(ino), &st);
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	stat_to_guest(&st);
	fuse_reply_attr(req, &st, 0);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set, struct fuse_file_info *fi)
{
	struct node *n = node_of(ino);
	int r = 0;
	if (G.readonly) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if (to_set & FUSE_SET_ATTR_MODE) {
		struct stat st;
		mode_t mode = attr->st_mode & 07777;
		/* No set-id programs from a sandbox onto the host. */
		if ((r = node_stat(n, &st)) == 0 && !S_ISDIR(st.st_mode))
			mode &= ~(mode_t)(S_ISUID | S_ISGID);
		if (r == 0 && syscall(SYS_fchmodat2, n->fd, "", mode, AT_EMPTY_PATH) < 0)
			r = -errno;
	}
	if (r == 0 && (to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID))) {
		uid_t uid = (uid_t)-1;
		gid_t gid = (gid_t)-1;
		if ((to_set & FUSE_SET_ATTR_UID) && uid_to_host(attr->st_uid, &uid) < 0)
			r = -EINVAL;
		if (r == 0 && (to_set & FUSE_SET_ATTR_GID) && gid_to_host(attr->st_gid, &gid) < 0)
			r = -EINVAL;
		if (r == 0 && fchownat(n->fd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0)
			r = -errno;
	}
	if (r == 0 && (to_set & FUSE_SET_ATTR_SIZE))
		r = set_size(n, fi, (uint64_t)attr->st_size);
	if (r == 0 && (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME))) {
		struct timespec ts[2] = { { .tv_nsec = UTIME_OMIT }, { .tv_nsec = UTIME_OMIT } };
		if (to_set & FUSE_SET_ATTR_ATIME)
			ts[0] = (to_set & FUSE_SET_ATTR_ATIME_NOW) ? (struct timespec){ .tv_nsec = UTIME_NOW } : attr->st_atim;
		if (to_set & FUSE_SET_ATTR_MTIME)
			ts[1] = (to_set & FUSE_SET_ATTR_MTIME_NOW) ? (struct timespec){ .tv_nsec = UTIME_NOW } : attr->st_mtim;
		if (utimensat(n->fd, "", ts, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0)
			r = -errno;
	}
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	op_getattr(req, ino, NULL);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	char buf[PATH_MAX + 1];
	ssize_t l = readlinkat(node_of(ino)->fd, "", buf, sizeof(buf) - 1);
	if (l < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	buf[l] = '\0';
	fuse_reply_readlink(req, buf);
}

/* After mkdir/mknod/symlink: open what was made, without following it, own it, answer. */
static void made(fuse_req_t req, struct node *parent, const char *name, int flags)
{
	int fd = openat2_beneath(parent->fd, name, O_PATH | O_NOFOLLOW | flags, 0);
	if (fd < 0) {
		fuse_reply_err(req, -fd);
		return;
	}
	int r = own_for_caller(req, parent->fd, fd);
	if (r < 0) {
		close(fd);
		fuse_reply_err(req, -r);
		return;
	}
	reply_entry(req, fd, NULL);
}

bool refuse_change(fuse_req_t req, const char *name)
{
	if (G.readonly) {
		fuse_reply_err(req, EROFS);
		return true;
	}
	if (name && !name_ok(name)) {
		fuse_reply_err(req, EINVAL);
		return true;
	}
	return false;
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	if (refuse_change(req, name))
		return;
	struct node *p = node_of(parent);
	if (mkdirat(p->fd, name, mode & 07777) < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	made(req, p, name, O_DIRECTORY);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	(void)rdev;
	if (refuse_change(req, name))
		return;
	/* Device nodes never: the host would get a device the sandbox chose. */
	if (!S_ISREG(mode) && !S_ISFIFO(mode) && !S_ISSOCK(mode)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	struct node *p = node_of(parent);
	if (mknodat(p->fd, name, (mode & ~(mode_t)(S_ISUID | S_ISGID)), 0) < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	made(req, p, name, 0);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	if (refuse_change(req, name))
		return;
	struct node *p = node_of(parent);
	if (symlinkat(link, p->fd, name) < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	made(req, p, name, 0);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	if (refuse_change(req, name))
		return;
	fuse_reply_err(req, unlinkat(node_of(parent)->fd, name, 0) < 0 ? errno : 0);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	if (refuse_change(req, name))
		return;
	fuse_reply_err(req, unlinkat(node_of(parent)->fd, name, AT_REMOVEDIR) < 0 ? errno : 0);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent, const char *newname,
		      unsigned int flags)
{
	if (refuse_change(req, name) || refuse_change(req, newname))
		return;
	int r = renameat2(node_of(parent)->fd, name, node_of(newparent)->fd, newname, flags);
	fuse_reply_err(req, r < 0 ? errno : 0);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	if (refuse_change(req, newname))
		return;
	struct node *n = node_of(ino), *p = node_of(newparent);
	if (linkat(n->fd, "", p->fd, newname, AT_EMPTY_PATH) < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	int fd = openat2_beneath(p->fd, newname, O_PATH | O_NOFOLLOW, 0);
	if (fd < 0) {
		fuse_reply_err(req, -fd);
		return;
	}
	reply_entry(req, fd, NULL);
}

struct dir_handle {
	DIR *dp;
	off_t offset;
	struct dirent *entry;
};

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	int fd = openat2_beneath(node_of(ino)->fd, ".", O_RDONLY | O_DIRECTORY, 0);
	if (fd < 0) {
		fuse_reply_err(req, -fd);
		return;
	}
	struct dir_handle *d = calloc(1, sizeof(*d));
	if (!d || !(d->dp = fdopendir(fd))) {
		int e = d ? errno : ENOMEM;
		free(d);
		close(fd);
		fuse_reply_err(req, e);
		return;
	}
	fi->fh = (uint64_t)(uintptr_t)d;
	fuse_reply_open(req, fi);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	(void)ino;
	struct dir_handle *d = (struct dir_handle *)(uintptr_t)fi->fh;
	char *buf = calloc(1, size);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	if (off != d->offset) {
		seekdir(d->dp, off);
		d->entry = NULL;
		d->offset = off;
	}
	size_t used = 0;
	int err = 0;
	for (;;) {
		if (!d->entry) {
			errno = 0;
			d->entry = readdir(d->dp);
			if (!d->entry) {
				err = errno;
				break;
			}
		}
		struct stat st = { .st_ino = d->entry->d_ino, .st_mode = (mode_t)d->entry->d_type << 12 };
		off_t next = telldir(d->dp);
		size_t len = fuse_add_direntry(req, buf + used, size - used, d->entry->d_name, &st, next);
		if (len > size - used)
			break; /* this entry goes first in the next call */
		used += len;
		d->entry = NULL;
		d->offset = next;
	}
	if (err && !used)
		fuse_reply_err(req, err);
	else
		fuse_reply_buf(req, buf, used);
	free(buf);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	struct dir_handle *d = (struct dir_handle *)(uintptr_t)fi->fh;
	closedir(d->dp);
	free(d);
	fuse_reply_err(req, 0);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs sv;
	if (fstatvfs(node_of(ino)->fd, &sv) < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_statfs(req, &sv);
}

/* Not served on purpose: xattrs (file capabilities and ACLs stay off the host), fallocate,
 * copy_file_range and lseek's data/hole (they would move bytes past the transform); the
 * kernel answers those with EOPNOTSUPP or falls back to read and write. */
const struct fuse_lowlevel_ops server_ops = {
	.init = op_init,
	.lookup = op_lookup,
	.forget = op_forget,
	.forget_multi = op_forget_multi,
	.getattr = op_getattr,
	.setattr = op_setattr,
	.readlink = op_readlink,
	.mknod = op_mknod,
	.mkdir = op_mkdir,
	.unlink = op_unlink,
	.rmdir = op_rmdir,
	.symlink = op_symlink,
	.rename = op_rename,
	.link = op_link,
	.open = op_open,
	.read = op_read,
	.write = op_write,
	.flush = op_flush,
	.release = op_release,
	.fsync = op_fsync,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.releasedir = op_releasedir,
	.statfs = op_statfs,
	.create = op_create,
};
