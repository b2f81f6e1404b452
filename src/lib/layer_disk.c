/* A container sandbox's own layer (overlayfs's upper/ and work/) on a disk of its own when it
 * has a disk size: run/<name>/layer.img, a sparse ext4 image whose size bounds the bytes and
 * whose inode count bounds the files the sandbox can write, mounted detached so that no mount
 * namespace of the host ever shows it. Without a disk size the layer is fs/ on the host's
 * file system, as it always was. The sandbox's folder is root's (0700); the image is never
 * below fs/, which belongs to the sandbox's root. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ext4_image.h"
#include "home.h"
#include "layer_disk.h"
#include "sandbox_config.h"
#include "util.h"

#define LAYER_DISK_FILE "layer.img"
#define LAYER_DISK_NEW "layer.img.new"
/* One inode per 16 KiB of disk: ext4's own default ratio, so a sandbox of many small files
 * runs out of inodes about when it would run out of blocks. */
#define LAYER_DISK_BYTES_PER_INODE "16384"
/* $CAPSULE_HOME/disks/ext4-v<format>-<bytes>.img: one made disk per size, copied by every
 * later one. The format changes with the mkfs options above, so no old template is reused. */
#define LAYER_DISK_FORMAT 1
#define LAYER_DISK_TEMPLATES "disks"
#define LAYER_DISK_TEMPLATES_MAX 16

bool layer_has_disk(const struct capsule_config *cfg)
{
	return cfg->isolation != CAPSULE_ISOLATION_VM && cfg->disk_bytes;
}

/* Loop devices are root's: without root, a disk size would fail at every start. */
int layer_disk_check(const struct capsule_config *cfg, capsule_error *err)
{
	if (layer_has_disk(cfg) && geteuid() != 0)
		return cap_err_plain(err, EPERM, "a disk size for a container sandbox needs root (its disk is a loop device)");
	return 0;
}

static void disk_what(const struct capsule_config *cfg, char *out, size_t size)
{
	snprintf(out, size, "the disk of sandbox '%s'", cfg->name);
}

/* mkfs.ext4 at PATH, a sparse file of its size: the host pays for what the sandbox writes, up
 * to the disk size, and not for the size up front. lazy_itable_init with the mount's
 * noinit_itable: holes read as zeros, so the kernel need not write the inode tables (up to
 * 1/64 of the size) itself. */
static int mkfs_disk(const char *path, const char *what, capsule_error *err)
{
	const char *const opts[] = { "-q", "-F", "-m", "0", "-b", "4096", "-i", LAYER_DISK_BYTES_PER_INODE,
				     "-E", "root_owner=0:0,lazy_itable_init=1,lazy_journal_init=1", NULL };
	return ext4_image_mkfs(path, opts, what, err);
}

static size_t templates_count(int dir)
{
	int fd = dup(dir);
	DIR *d = fd < 0 ? NULL : fdopendir(fd);
	if (!d) {
		if (fd >= 0)
			close(fd);
		return SIZE_MAX;
	}
	size_t n = 0;
	struct dirent *de;
	while ((de = readdir(d)))
		n += de->d_name[0] != '.';
	closedir(d);
	return n;
}

/* The template of BYTES in disks/, made now if missing: unnamed (O_TMPFILE) until it is whole
 * and durable, so a crash leaves nothing and a template torn by a host crash is never every
 * later disk's; of two starts that race, each makes a whole one and the first link wins. -1
 * where there is none and may be no more. */
static int template_open(uint64_t bytes, const char *what)
{
	_cleanup_close_ int dir = -1;
	if (home_subdir_open(LAYER_DISK_TEMPLATES, &dir, NULL) < 0)
		return -1;
	char name[64];
	snprintf(name, sizeof(name), "ext4-v%d-%" PRIu64 ".img", LAYER_DISK_FORMAT, bytes);
	int fd = openat(dir, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd >= 0 || errno != ENOENT || templates_count(dir) >= LAYER_DISK_TEMPLATES_MAX)
		return fd;
	_cleanup_close_ int t = openat(dir, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (t < 0)
		return -1;
	/* mkfs opens it by our descriptor, which it does not inherit. */
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/fd/%d", (int)getpid(), t);
	if (ftruncate(t, (off_t)bytes) < 0 || mkfs_disk(path, what, NULL) < 0 || fsync(t) < 0)
		return -1;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", t);
	if (linkat(AT_FDCWD, path, dir, name, AT_SYMLINK_FOLLOW) < 0 && errno != EEXIST)
		return -1;
	return openat(dir, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
}

/* The template's data extents into IMG (already of the size): its holes stay holes. */
static int copy_sparse(int from, int img, uint64_t bytes)
{
	off_t off = 0;
	for (;;) {
		off_t data = lseek(from, off, SEEK_DATA);
		if (data < 0)
			return errno == ENXIO ? 0 : -errno;
		off_t hole = lseek(from, data, SEEK_HOLE);
		if (hole < 0 || (uint64_t)hole > bytes)
			return hole < 0 ? -errno : -EINVAL;
		for (off_t in = data, out = data; in < hole;) {
			ssize_t n = copy_file_range(from, &in, img, &out, (size_t)(hole - in), 0);
			if (n <= 0)
				return n < 0 ? -errno : -EIO;
		}
		off = hole;
	}
}

/* A fresh disk at FILE. mkfs.ext4 once per size, into a template that later disks of that
 * size copy (a few ms of mkfs's exec and writes saved on every start; they share its
 * UUID, which ext4 does not need unique). At most LAYER_DISK_TEMPLATES_MAX sizes are kept;
 * past that, and wherever the template fails, mkfs makes the disk itself. */
static int make_disk(int run_fd, const char *file, const struct capsule_config *cfg, capsule_error *err)
{
	char what[CAPSULE_NAME_MAX + 32];
	disk_what(cfg, what, sizeof(what));
	unlinkat(run_fd, file, 0);
	_cleanup_close_ int img = openat(run_fd, file, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (img < 0)
		return cap_err(err, errno, "%s: creating '%s'", what, file);
	if (ftruncate(img, (off_t)cfg->disk_bytes) < 0)
		return cap_err(err, errno, "%s: sizing '%s'", what, file);
	_cleanup_close_ int template = template_open(cfg->disk_bytes, what);
	if (template >= 0 && copy_sparse(template, img, cfg->disk_bytes) == 0)
		return 0;
	if (ftruncate(img, 0) < 0 || ftruncate(img, (off_t)cfg->disk_bytes) < 0)
		return cap_err(err, errno, "%s: sizing '%s'", what, file);
	char path[4096];
	snprintf(path, sizeof(path), "%s/run/%s/%s", capsule_home(), cfg->name, file);
	int r = mkfs_disk(path, what, err);
	if (r < 0)
		unlinkat(run_fd, file, 0);
	return r;
}

static int mount_disk(int run_fd, const char *file, const struct capsule_config *cfg, int *mnt, capsule_error *err)
{
	char what[CAPSULE_NAME_MAX + 32], label[CAPSULE_NAME_MAX + 24];
	disk_what(cfg, what, sizeof(what));
	snprintf(label, sizeof(label), "capsule-layer:%s", cfg->name);
	/* One attacher at a time (the shim, or the library for a stopped sandbox): two that each
	 * found no loop device would each attach one, two superblocks on one image. The lock is
	 * a file description of its own: a loop device keeps the one it serves open. */
	_cleanup_close_ int lock = openat(run_fd, file, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (lock < 0 || flock(lock, LOCK_EX) < 0)
		return cap_err(err, errno, "%s: locking '%s'", what, file);
	_cleanup_close_ int img = openat(run_fd, file, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
	if (img < 0)
		return cap_err(err, errno, "%s: open '%s'", what, file);
	static const char *const flags[] = { "noinit_itable", NULL };
	return ext4_image_mount(img, label, flags, what, mnt, err);
}

int sandbox_layer_open(int run_fd, const struct capsule_config *cfg, bool make, struct sandbox_layer *l,
		       capsule_error *err)
{
	l->root_fd = -1;
	if (!layer_has_disk(cfg)) {
		if (make && mkdirat(run_fd, "fs", 0700) < 0 && errno != EEXIST)
			return cap_err(err, errno, "mkdir 'fs'");
		l->root_fd = openat(run_fd, "fs", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		return l->root_fd < 0 ? cap_err(err, errno, "open the sandbox's layer 'fs'") : 0;
	}
	struct stat st;
	int r;
	if (make && fstatat(run_fd, LAYER_DISK_FILE, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		/* Made under a temp name: a crash mid-mkfs never leaves a disk that looks ready. */
		if ((r = make_disk(run_fd, LAYER_DISK_NEW, cfg, err)) < 0)
			return r;
		if (renameat(run_fd, LAYER_DISK_NEW, run_fd, LAYER_DISK_FILE) < 0)
			return cap_err(err, errno, "putting '%s' in place", LAYER_DISK_FILE);
	}
	return mount_disk(run_fd, LAYER_DISK_FILE, cfg, &l->root_fd, err);
}

void sandbox_layer_close(struct sandbox_layer *l)
{
	if (l->root_fd >= 0)
		close(l->root_fd);
	l->root_fd = -1;
}

int sandbox_upper_open(int run_fd, const struct capsule_config *cfg, int *upper, capsule_error *err)
{
	struct sandbox_layer l;
	int r = sandbox_layer_open(run_fd, cfg, false, &l, err);
	if (r < 0)
		return r;
	/* The open folder keeps the detached mount alive after its root fd is closed. */
	*upper = openat(l.root_fd, "upper", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	r = *upper < 0 ? cap_err(err, errno, "open the sandbox's layer 'upper'") : 0;
	sandbox_layer_close(&l);
	return r;
}

int layer_disk_replace(int run_fd, const struct capsule_config *cfg, layer_fill_fn fill, void *payload,
		       capsule_error *err)
{
	int r = make_disk(run_fd, LAYER_DISK_NEW, cfg, err);
	if (r < 0)
		return r;
	_cleanup_close_ int mnt = -1;
	if ((r = mount_disk(run_fd, LAYER_DISK_NEW, cfg, &mnt, err)) == 0)
		r = fill(mnt, payload, err);
	if (mnt >= 0)
		close(mnt);
	mnt = -1;
	/* The old image goes with its last mount; the new one is whole before it has the name. */
	if (r == 0 && renameat(run_fd, LAYER_DISK_NEW, run_fd, LAYER_DISK_FILE) < 0)
		r = cap_err(err, errno, "putting '%s' in place", LAYER_DISK_FILE);
	if (r < 0)
		unlinkat(run_fd, LAYER_DISK_NEW, 0);
	return r;
}
