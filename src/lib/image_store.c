/* The content store, $CAPSULE_HOME/images:
 *
 *   blobs/sha256/<hex>   manifests, configs and layer tars, each checked against its digest
 *   layers/<hex>         a layer blob unpacked (overlayfs format), shared by every image
 *   layer-sizes/<hex>    what that layer decompressed to, so the store's size is a sum of
 *                        small files rather than a walk of every layer
 *   index.json           references: name -> manifest digest, config digest, layer digests
 *   tmp/                 downloads and unpacks in progress
 *   lock                 flock: held exclusively while index.json or layers/ change
 *
 * Everything lands by rename from tmp/ (or from a temp name beside it), so a kill -9 at any
 * moment leaves the old state or the new one; what a killed run left in tmp/ is only ever
 * resumed (a partial download) or removed. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "home.h"
#include "image.h"
#include "rootless.h"
#include "util.h"

static void hex_digest(const unsigned char *md, char out[IMAGE_DIGEST_LEN + 1])
{
	static const char hex[] = "0123456789abcdef";
	memcpy(out, "sha256:", 7);
	for (int i = 0; i < 32; i++) {
		out[7 + 2 * i] = hex[md[i] >> 4];
		out[8 + 2 * i] = hex[md[i] & 15];
	}
	out[IMAGE_DIGEST_LEN] = '\0';
}

void image_sha256_buf(const void *data, size_t len, char out[IMAGE_DIGEST_LEN + 1])
{
	unsigned char md[32];
	unsigned int n = 0;
	EVP_Digest(data, len, md, &n, EVP_sha256(), NULL);
	hex_digest(md, out);
}

int image_sha256_fd(int fd, char out[IMAGE_DIGEST_LEN + 1])
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	if (!ctx || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) {
		EVP_MD_CTX_free(ctx);
		return -ENOMEM;
	}
	char buf[1 << 16];
	off_t off = 0;
	int r = 0;
	for (;;) {
		ssize_t n = pread(fd, buf, sizeof(buf), off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			break;
		}
		if (n == 0)
			break;
		EVP_DigestUpdate(ctx, buf, n);
		off += n;
	}
	unsigned char md[32];
	unsigned int mdlen = 0;
	EVP_DigestFinal_ex(ctx, md, &mdlen);
	EVP_MD_CTX_free(ctx);
	if (r == 0)
		hex_digest(md, out);
	return r;
}

int store_open(int *images_fd, capsule_error *err)
{
	_cleanup_close_ int fd = -1;
	int r = home_subdir_open("images", &fd, err);
	if (r < 0)
		return r;
	/* Sandboxes get their layers as mounts the shim clones, never by path: the store can be
	 * its owner's alone (a layer's own folder keeps the image's modes). */
	static const char *const dirs[] = { "blobs", "blobs/sha256", "layers", "tmp", "layer-sizes" };
	for (size_t i = 0; i < ARRAY_SIZE(dirs); i++)
		if (mkdirat(fd, dirs[i], 0700) < 0 && errno != EEXIST)
			return cap_err(err, errno, "mkdir '%s/images/%s'", capsule_home(), dirs[i]);
	*images_fd = take_fd(fd);
	return 0;
}

void store_sweep_tmp(int images_fd)
{
	_cleanup_close_ int fd = openat(images_fd, "tmp", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return;
	DIR *d = fdopendir(dup(fd));
	if (!d)
		return;
	/* layer-<hex16>-<pid> and import-<pid>-<x>: what a killed unpack or import left. A
	 * partial download (<hex>.partial) stays, to be resumed. */
	for (struct dirent *de; (de = readdir(d));) {
		int pid = 0;
		char hex[17];
		if (sscanf(de->d_name, "layer-%16[0-9a-f]-%d", hex, &pid) != 2 && sscanf(de->d_name, "import-%d-", &pid) != 1)
			continue;
		if (pid > 0 && kill(pid, 0) < 0 && errno == ESRCH)
			rootless_rm_rf_at(fd, de->d_name);
	}
	closedir(d);
}

static void blob_name(const char *digest, char *out, size_t size)
{
	snprintf(out, size, "blobs/sha256/%s", digest + 7);
}

bool store_has_blob(int images_fd, const char *digest)
{
	char name[128];
	blob_name(digest, name, sizeof(name));
	struct stat st;
	return fstatat(images_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode);
}

bool store_has_layer(int images_fd, const char *digest)
{
	char name[128];
	snprintf(name, sizeof(name), "layers/%s", digest + 7);
	struct stat st;
	return fstatat(images_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
}

char *store_layer_path(const char *digest)
{
	char *p = NULL;
	if (asprintf(&p, "%s/images/layers/%s", capsule_home(), digest + 7) < 0)
		return NULL;
	return p;
}

int store_read_blob(int images_fd, const char *digest, size_t max, char **out, size_t *len, capsule_error *err)
{
	char name[128];
	blob_name(digest, name, sizeof(name));
	int r = read_file_at(images_fd, name, max, out, len);
	if (r < 0)
		return cap_err(err, -r, "reading blob '%s' of the image store", digest);
	char got[IMAGE_DIGEST_LEN + 1];
	image_sha256_buf(*out, *len, got);
	if (strcmp(got, digest)) {
		free(*out);
		*out = NULL;
		return cap_err_plain(err, EBADMSG, "blob '%s' of the image store is corrupt (it hashes to '%s')", digest, got);
	}
	return 0;
}

int store_put_blob(int images_fd, const char *digest, const void *data, size_t len, capsule_error *err)
{
	char got[IMAGE_DIGEST_LEN + 1];
	image_sha256_buf(data, len, got);
	if (strcmp(got, digest))
		return cap_err_plain(err, EBADMSG, "content of '%s' does not match its digest (it hashes to '%s'): refused",
				     digest, got);
	_cleanup_close_ int dir = openat(images_fd, "blobs/sha256", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dir < 0)
		return cap_err(err, errno, "opening the image store's blobs");
	int r = write_file_atomic_at(dir, digest + 7, data, len, 0600, true);
	if (r < 0)
		return cap_err(err, -r, "storing blob '%s'", digest);
	return 0;
}

int store_commit_blob_file(int images_fd, const char *tmpname, const char *digest, capsule_error *err)
{
	char tmp[256], name[128];
	snprintf(tmp, sizeof(tmp), "tmp/%s", tmpname);
	blob_name(digest, name, sizeof(name));
	_cleanup_close_ int fd = openat(images_fd, tmp, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return cap_err(err, errno, "opening download '%s'", tmp);
	char got[IMAGE_DIGEST_LEN + 1];
	int r = image_sha256_fd(fd, got);
	if (r < 0) {
		unlinkat(images_fd, tmp, 0);
		return cap_err(err, -r, "hashing download of '%s'", digest);
	}
	if (strcmp(got, digest)) {
		unlinkat(images_fd, tmp, 0);
		return cap_err_plain(err, EBADMSG, "blob '%s' does not match its digest (it hashes to '%s'): refused, not stored",
				     digest, got);
	}
	if (fsync(fd) < 0 || fchmod(fd, 0600) < 0 || renameat(images_fd, tmp, images_fd, name) < 0) {
		r = cap_err(err, errno, "storing blob '%s'", digest);
		unlinkat(images_fd, tmp, 0);
		return r;
	}
	return 0;
}

static bool is_hex_name(const char *name)
{
	return strlen(name) == 64 && strspn(name, "0123456789abcdef") == 64;
}

/* What layers/<hex> cost: its record, else (unpacked before records were kept) its blob. */
static uint64_t layer_bytes_of(int images_fd, const char *hex)
{
	char path[128];
	snprintf(path, sizeof(path), "layer-sizes/%s", hex);
	_cleanup_free_ char *text = NULL;
	size_t len;
	if (read_file_at(images_fd, path, 32, &text, &len) == 0)
		return strtoull(text, NULL, 10);
	snprintf(path, sizeof(path), "blobs/sha256/%s", hex);
	struct stat st;
	return fstatat(images_fd, path, &st, AT_SYMLINK_NOFOLLOW) == 0 ? (uint64_t)st.st_size : 0;
}

static int sum_folder(int images_fd, const char *sub, bool layers, uint64_t *total)
{
	_cleanup_close_ int fd = openat(images_fd, sub, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	DIR *d = fdopendir(fd);
	if (!d)
		return -errno;
	fd = -1; /* the DIR owns it now */
	for (struct dirent *de; (de = readdir(d));) {
		struct stat st;
		if (!is_hex_name(de->d_name))
			continue;
		if (layers)
			*total += layer_bytes_of(images_fd, de->d_name);
		else if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0)
			*total += (uint64_t)st.st_size;
	}
	closedir(d);
	return 0;
}

int store_usage(int images_fd, uint64_t *bytes, capsule_error *err)
{
	*bytes = 0;
	int r = sum_folder(images_fd, "blobs/sha256", false, bytes);
	if (r == 0)
		r = sum_folder(images_fd, "layers", true, bytes);
	return r < 0 ? cap_err(err, -r, "measuring the image store '%s/images'", capsule_home()) : 0;
}

/* What store_bytes leaves: *ROOM (UINT64_MAX when it is not set) and *USED. */
static int store_room(int images_fd, const struct image_limits *limits, uint64_t *room, uint64_t *used,
		      capsule_error *err)
{
	*room = UINT64_MAX;
	*used = 0;
	if (limits->store_bytes == UINT64_MAX)
		return 0;
	int r = store_usage(images_fd, used, err);
	if (r == 0)
		*room = *used < limits->store_bytes ? limits->store_bytes - *used : 0;
	return r;
}

int store_check_room(int images_fd, const struct image_limits *limits, uint64_t n, const char *what,
		     capsule_error *err)
{
	uint64_t room, used;
	int r = store_room(images_fd, limits, &room, &used, err);
	if (r < 0)
		return r;
	if (n <= room)
		return 0;
	return cap_err_plain(err, ENOSPC, "%s (%llu bytes) would take the image store past %llu bytes (it holds %llu; "
			     "\"store_bytes\" in the registry configuration's \"limits\"): remove images with 'capsule "
			     "image rm'", what, (unsigned long long)n, (unsigned long long)limits->store_bytes,
			     (unsigned long long)used);
}

/* The cap on what this layer may decompress to: layer_bytes, or what store_bytes leaves. */
static int layer_unpack_limits(int images_fd, const struct image_limits *limits, struct unpack_limits *out,
			       capsule_error *err)
{
	*out = (struct unpack_limits){ .bytes = limits->layer_bytes, .entries = limits->layer_entries,
				       .bytes_limit = "\"layer_bytes\"" };
	uint64_t room, used;
	int r = store_room(images_fd, limits, &room, &used, err);
	if (r < 0)
		return r;
	if (room < out->bytes) {
		out->bytes = room;
		out->bytes_limit = "what is left of \"store_bytes\"";
	}
	return 0;
}

static int record_layer_size(int images_fd, const char *digest, uint64_t bytes, capsule_error *err)
{
	_cleanup_close_ int dir = openat(images_fd, "layer-sizes", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dir < 0)
		return cap_err(err, errno, "opening the image store's layer-sizes");
	char text[24];
	int n = snprintf(text, sizeof(text), "%llu", (unsigned long long)bytes);
	int r = write_file_atomic_at(dir, digest + 7, text, (size_t)n, 0600, false);
	return r < 0 ? cap_err(err, -r, "recording the size of layer '%s'", digest) : 0;
}

struct layer_unpack {
	int images_fd;
	const char *tmp;
	int src;
	const struct unpack_limits *limits;
	const char *what;
	uint64_t unpacked;
};

static int unpack_into(void *arg, capsule_error *err)
{
	struct layer_unpack *lu = arg;
	_cleanup_close_ int dir = openat(lu->images_fd, lu->tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dir < 0)
		return cap_err(err, errno, "open '%s'", lu->tmp);
	int r = unpack_tar(lu->src, dir, UNPACK_LAYER, lu->limits, lu->what, &lu->unpacked, err);
	if (r == 0 && fchmod(dir, 0755) < 0)
		r = cap_err(err, errno, "chmod '%s'", lu->tmp);
	/* The layer's root is the sandbox's "/" where no later layer says otherwise. */
	if (r == 0 && geteuid() == 0 && fchown(dir, 0, 0) < 0)
		r = cap_err(err, errno, "chown '%s'", lu->tmp);
	if (r == 0)
		syncfs(dir);
	return r;
}

int store_unpack_layer(int images_fd, const char *digest, const struct image_limits *limits, capsule_error *err)
{
	if (store_has_layer(images_fd, digest))
		return 0;
	struct unpack_limits layer_limits;
	int r = layer_unpack_limits(images_fd, limits, &layer_limits, err);
	if (r < 0)
		return r;
	char blob[128], tmp[128], final[128], what[128];
	blob_name(digest, blob, sizeof(blob));
	snprintf(tmp, sizeof(tmp), "tmp/layer-%.16s-%d", digest + 7, (int)getpid());
	snprintf(final, sizeof(final), "layers/%s", digest + 7);
	snprintf(what, sizeof(what), "layer '%.19s'", digest);
	_cleanup_close_ int src = openat(images_fd, blob, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (src < 0)
		return cap_err(err, errno, "opening blob '%s'", digest);
	rootless_rm_rf_at(images_fd, tmp);
	if (mkdirat(images_fd, tmp, 0755) < 0)
		return cap_err(err, errno, "mkdir '%s'", tmp);
	/* A user's layer keeps the image's owners as the user's subordinate ids: unpacked as root
	 * of a namespace of those ids (rootless.h). */
	struct layer_unpack lu = { images_fd, tmp, src, &layer_limits, what, 0 };
	r = rootless_run_mapped(unpack_into, &lu, &lu.unpacked, sizeof(lu.unpacked), err);
	uint64_t unpacked = lu.unpacked;
	/* Before the layer appears: a layer without its record would count as its blob only. */
	if (r == 0)
		r = record_layer_size(images_fd, digest, unpacked, err);
	if (r == 0 && renameat(images_fd, tmp, images_fd, final) < 0) {
		/* Another pull unpacked the same layer first: theirs is as good as ours. */
		if (errno != EEXIST && errno != ENOTEMPTY)
			r = cap_err(err, errno, "storing layer '%s'", digest);
	}
	rootless_rm_rf_at(images_fd, tmp);
	return r;
}
