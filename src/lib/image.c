/* Images: the public API (pull, import, list, remove), the index of names in the store, and
 * the resolution of a sandbox's image into the layer folders its root is made of. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "home.h"
#include "image.h"
#include "rootless.h"
#include "json.h"
#include "sandbox_config.h"
#include "util.h"
#include "vm_store.h"

#define INDEX_MAX_IMAGES 4096

struct index_entry {
	char name[600];
	char digest[IMAGE_DIGEST_LEN + 1];
	int64_t created;
};

struct store_index {
	struct index_entry *v;
	size_t n;
};

/* images/lock: exclusive while the index or the set of layers changes (tag, remove). */
static int store_lock(int images_fd, int op, capsule_error *err)
{
	int fd = openat(images_fd, "lock", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return cap_err(err, errno, "opening the image store's lock");
	if (flock(fd, op) < 0) {
		int e = errno;
		close(fd);
		return cap_err(err, e, "locking the image store");
	}
	return fd;
}

static int index_element(const char *name, const char *value, size_t len, void *payload)
{
	struct store_index *ix = payload;
	struct index_entry e = { 0 };
	_cleanup_free_ char *n = NULL, *d = NULL;
	if (json_get_string(value, len, "name", &n) < 0 || json_get_string(value, len, "digest", &d) < 0 ||
	    strlen(n) >= sizeof(e.name) || !image_digest_valid(d))
		return -EBADMSG;
	json_get_int(value, len, "created", &e.created);
	snprintf(e.name, sizeof(e.name), "%s", n);
	snprintf(e.digest, sizeof(e.digest), "%s", d);
	struct index_entry *nv = realloc(ix->v, (ix->n + 1) * sizeof(*nv));
	if (!nv)
		return -ENOMEM;
	ix->v = nv;
	ix->v[ix->n++] = e;
	return 0;
}

static int index_member(const char *name, const char *value, size_t len, void *payload)
{
	if (strcmp(name, "images"))
		return 0;
	return json_array_each(value, len, INDEX_MAX_IMAGES, index_element, payload);
}

static int index_load(int images_fd, struct store_index *ix, capsule_error *err)
{
	memset(ix, 0, sizeof(*ix));
	_cleanup_free_ char *text = NULL;
	size_t len;
	int r = read_file_at(images_fd, "index.json", 16u << 20, &text, &len);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return cap_err(err, -r, "reading '%s/images/index.json'", capsule_home());
	if ((r = json_object_each(text, len, 16, index_member, ix)) < 0) {
		free(ix->v);
		memset(ix, 0, sizeof(*ix));
		return cap_err_plain(err, EBADMSG, "'%s/images/index.json' is malformed", capsule_home());
	}
	return 0;
}

static int index_save(int images_fd, const struct store_index *ix, capsule_error *err)
{
	struct json_writer j;
	json_init(&j, true);
	json_object_begin(&j);
	json_key(&j, "images");
	json_array_begin(&j);
	for (size_t i = 0; i < ix->n; i++) {
		json_object_begin(&j);
		json_kv_string(&j, "name", ix->v[i].name);
		json_kv_string(&j, "digest", ix->v[i].digest);
		json_kv_int(&j, "created", ix->v[i].created);
		json_object_end(&j);
	}
	json_array_end(&j);
	json_object_end(&j);
	int e = 0;
	_cleanup_free_ char *text = json_steal(&j, &e);
	if (!text)
		return cap_err(err, e ? -e : ENOMEM, "formatting the image index");
	int r = write_file_atomic_at(images_fd, "index.json", text, strlen(text), 0600, true);
	if (r < 0)
		return cap_err(err, -r, "writing '%s/images/index.json'", capsule_home());
	return 0;
}

static struct index_entry *index_find(struct store_index *ix, const char *name)
{
	for (size_t i = 0; i < ix->n; i++)
		if (!strcmp(ix->v[i].name, name))
			return &ix->v[i];
	return NULL;
}

int store_tag(int images_fd, const char *name, const char *manifest_digest, capsule_error *err)
{
	_cleanup_close_ int lock = store_lock(images_fd, LOCK_EX, err);
	if (lock < 0)
		return lock;
	struct store_index ix;
	int r = index_load(images_fd, &ix, err);
	if (r < 0)
		return r;
	struct index_entry *e = index_find(&ix, name);
	if (!e) {
		struct index_entry *nv = realloc(ix.v, (ix.n + 1) * sizeof(*nv));
		if (!nv) {
			free(ix.v);
			return cap_err(err, ENOMEM, "image index");
		}
		ix.v = nv;
		e = &ix.v[ix.n++];
		memset(e, 0, sizeof(*e));
		snprintf(e->name, sizeof(e->name), "%s", name);
	}
	snprintf(e->digest, sizeof(e->digest), "%s", manifest_digest);
	e->created = (int64_t)time(NULL);
	r = index_save(images_fd, &ix, err);
	free(ix.v);
	return r;
}

/* The manifest stored for DIGEST, parsed. */
static int load_manifest(int images_fd, const char *digest, struct image_manifest *m, capsule_error *err)
{
	_cleanup_free_ char *body = NULL;
	size_t len;
	int r = store_read_blob(images_fd, digest, IMAGE_MAX_MANIFEST_BYTES, &body, &len, err);
	if (r < 0)
		return r;
	if ((r = image_manifest_parse(body, len, NULL, m, err)) < 0)
		return r;
	if (m->is_index) {
		image_manifest_free(m);
		return cap_err_plain(err, EBADMSG, "stored manifest '%s' is an index", digest);
	}
	return 0;
}

/* The canonical name of REF ("docker.io/library/alpine:3.20"). */
static int canonical_name(const char *ref, struct image_ref *parsed, char *out, size_t size, capsule_error *err)
{
	int r = image_ref_parse(ref, parsed, err);
	if (r < 0)
		return r;
	image_ref_format(parsed, out, size);
	return 0;
}

int capsule_image_pull(const char *ref, const capsule_pull_options *opts, char **name_out, capsule_error *err)
{
	capsule_pull_options defaults = CAPSULE_PULL_OPTIONS_INIT;
	if (!opts)
		opts = &defaults;
	if (opts->version != CAPSULE_PULL_OPTIONS_VERSION)
		return cap_err_plain(err, EINVAL, "pull options: unknown version (use CAPSULE_PULL_OPTIONS_INIT)");
	struct image_ref parsed;
	char name[600];
	int r = canonical_name(ref, &parsed, name, sizeof(name), err);
	if (r < 0)
		return r;
	if (opts->platform && (r = image_platform_check(opts->platform, err)) < 0)
		return r;
	struct registry_options o = {
		.insecure = opts->insecure, .platform = opts->platform, .progress = opts->progress, .payload = opts->payload
	};
	_cleanup_free_ char *digest = NULL;
	if ((r = registry_pull(&parsed, &o, &digest, err)) < 0)
		return cap_err_wrap(err, r, "pulling '%s'", ref);
	_cleanup_close_ int images = -1;
	if ((r = store_open(&images, err)) < 0 || (r = store_tag(images, name, digest, err)) < 0)
		return r;
	if (name_out && !(*name_out = strdup(name)))
		return cap_err(err, ENOMEM, "image name");
	return 0;
}

/* ---- import ---- */

/* Store the file IMPORT_DIR/PATH (inside tmp/) as a blob; *DIGEST gets its hash, or is
 * checked against it when it is set already. */
static int import_blob(int images_fd, const char *import_dir, const char *path, char digest[IMAGE_DIGEST_LEN + 1],
		       int64_t *size, capsule_error *err)
{
	char rel[PATH_MAX], tmprel[PATH_MAX];
	snprintf(rel, sizeof(rel), "%s/%s", import_dir, path);
	snprintf(tmprel, sizeof(tmprel), "tmp/%s", rel);
	_cleanup_close_ int fd = openat(images_fd, tmprel, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return cap_err(err, errno, "archive member '%s'", path);
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
		return cap_err_plain(err, EBADMSG, "archive member '%s' is not a file", path);
	*size = st.st_size;
	if (!digest[0]) {
		int r = image_sha256_fd(fd, digest);
		if (r < 0)
			return cap_err(err, -r, "hashing archive member '%s'", path);
	}
	if (store_has_blob(images_fd, digest))
		return 0;
	return store_commit_blob_file(images_fd, rel, digest, err);
}

static int read_import_file(int images_fd, const char *import_dir, const char *path, size_t max, char **out,
			    size_t *len, capsule_error *err)
{
	char rel[PATH_MAX];
	snprintf(rel, sizeof(rel), "tmp/%s/%s", import_dir, path);
	int r = read_file_at(images_fd, rel, max, out, len);
	if (r < 0)
		return cap_err(err, -r, "archive member '%s'", path);
	return 0;
}

struct docker_archive {
	char *config;
	char **layers;
};

static int docker_manifest_member(const char *name, const char *value, size_t len, void *payload)
{
	struct docker_archive *d = payload;
	if (!strcmp(name, "Config") && !d->config)
		return image_json_string(value, len, &d->config);
	if (!strcmp(name, "Layers") && !d->layers)
		return image_json_strv(value, len, &d->layers);
	return 0;
}

static int docker_first_image(const char *name, const char *value, size_t len, void *payload)
{
	struct docker_archive *d = payload;
	if (d->config)
		return 0;
	return json_object_each(value, len, 64, docker_manifest_member, d);
}

/* An OCI content descriptor: what a manifest says of each blob it names. */
static void json_descriptor(struct json_writer *j, const char *media_type, const char *digest, int64_t size)
{
	json_object_begin(j);
	json_kv_string(j, "mediaType", media_type);
	json_kv_string(j, "digest", digest);
	json_kv_int(j, "size", size);
	json_object_end(j);
}

/* docker save: manifest.json names the config file and the layer tars (uncompressed, so
 * their digests are their diff ids); a manifest is written for them here. */
static int import_docker(int images_fd, const char *dir, char manifest_digest[IMAGE_DIGEST_LEN + 1], capsule_error *err)
{
	_cleanup_free_ char *text = NULL;
	size_t len;
	int r = read_import_file(images_fd, dir, "manifest.json", 1u << 20, &text, &len, err);
	if (r < 0)
		return r;
	struct docker_archive d = { 0 };
	if ((r = json_array_each(text, len, 64, docker_first_image, &d)) < 0 || !d.config || !d.layers) {
		free(d.config);
		image_strv_free(d.layers);
		return cap_err_plain(err, EBADMSG, "docker archive: manifest.json is malformed");
	}
	struct json_writer j;
	json_init(&j, false);
	json_object_begin(&j);
	json_kv_int(&j, "schemaVersion", 2);
	json_kv_string(&j, "mediaType", "application/vnd.oci.image.manifest.v1+json");
	char digest[IMAGE_DIGEST_LEN + 1] = "";
	int64_t size = 0;
	if ((r = import_blob(images_fd, dir, d.config, digest, &size, err)) == 0) {
		json_key(&j, "config");
		json_descriptor(&j, "application/vnd.oci.image.config.v1+json", digest, size);
		json_key(&j, "layers");
		json_array_begin(&j);
	}
	for (size_t i = 0; r == 0 && d.layers[i]; i++) {
		digest[0] = '\0';
		if ((r = import_blob(images_fd, dir, d.layers[i], digest, &size, err)) < 0)
			break;
		json_descriptor(&j, "application/vnd.oci.image.layer.v1.tar", digest, size);
	}
	free(d.config);
	image_strv_free(d.layers);
	if (r < 0) {
		json_free(&j);
		return r;
	}
	json_array_end(&j);
	json_object_end(&j);
	int e = 0;
	_cleanup_free_ char *manifest = json_steal(&j, &e);
	if (!manifest)
		return cap_err(err, e ? -e : ENOMEM, "docker archive: writing its manifest");
	image_sha256_buf(manifest, strlen(manifest), manifest_digest);
	return store_put_blob(images_fd, manifest_digest, manifest, strlen(manifest), err);
}

static int import_oci(int images_fd, const char *dir, char manifest_digest[IMAGE_DIGEST_LEN + 1], capsule_error *err)
{
	_cleanup_free_ char *text = NULL;
	size_t len;
	int r = read_import_file(images_fd, dir, "index.json", 1u << 20, &text, &len, err);
	if (r < 0)
		return r;
	struct image_manifest m;
	if ((r = image_manifest_parse(text, len, "application/vnd.oci.image.index.v1+json", &m, err)) < 0)
		return cap_err_wrap(err, r, "OCI archive: index.json");
	char want[IMAGE_DIGEST_LEN + 1];
	/* Nested indexes (a multi-platform image in an archive): at most a few levels. */
	for (int depth = 0;; depth++) {
		const struct image_descriptor *pick = NULL;
		for (size_t i = 0; i < m.nentries && !pick; i++)
			if (!m.entries[i].os[0])
				pick = &m.entries[i];
		if (!pick)
			pick = image_index_select(&m, NULL);
		if (!pick || depth > 4) {
			image_manifest_free(&m);
			return cap_err_plain(err, ENOENT, "OCI archive: no image for linux/amd64 in it");
		}
		snprintf(want, sizeof(want), "%s", pick->digest);
		image_manifest_free(&m);
		char path[128];
		snprintf(path, sizeof(path), "blobs/sha256/%s", want + 7);
		int64_t size;
		char d[IMAGE_DIGEST_LEN + 1];
		snprintf(d, sizeof(d), "%s", want);
		if ((r = import_blob(images_fd, dir, path, d, &size, err)) < 0)
			return r;
		_cleanup_free_ char *body = NULL;
		if ((r = store_read_blob(images_fd, want, IMAGE_MAX_MANIFEST_BYTES, &body, &len, err)) < 0 ||
		    (r = image_manifest_parse(body, len, NULL, &m, err)) < 0)
			return r;
		if (!m.is_index)
			break;
	}
	struct image_descriptor *all[IMAGE_MAX_LAYERS + 1];
	size_t n = 0;
	all[n++] = &m.config;
	for (size_t i = 0; i < m.nentries; i++)
		all[n++] = &m.entries[i];
	for (size_t i = 0; i < n && r == 0; i++) {
		char path[128];
		snprintf(path, sizeof(path), "blobs/sha256/%s", all[i]->digest + 7);
		int64_t size;
		if (!store_has_blob(images_fd, all[i]->digest))
			r = import_blob(images_fd, dir, path, all[i]->digest, &size, err);
	}
	image_manifest_free(&m);
	if (r == 0)
		memcpy(manifest_digest, want, sizeof(want));
	return r;
}

static int unpack_manifest_layers(int images_fd, const char *digest, const struct image_limits *limits,
				  capsule_image_progress_fn progress, void *payload, capsule_error *err)
{
	struct image_manifest m;
	int r = load_manifest(images_fd, digest, &m, err);
	if (r < 0)
		return r;
	for (size_t i = 0; r == 0 && i < m.nentries; i++) {
		if (progress)
			progress("unpack", m.entries[i].digest, 0, (uint64_t)m.entries[i].size, payload);
		r = store_unpack_layer(images_fd, m.entries[i].digest, limits, err);
	}
	image_manifest_free(&m);
	return r;
}

int capsule_image_import(const char *archive_path, const char *name, capsule_image_progress_fn progress,
			 void *payload, char **name_out, capsule_error *err)
{
	struct image_ref parsed;
	char canon[600];
	int r = canonical_name(name ? name : "", &parsed, canon, sizeof(canon), err);
	if (r < 0)
		return r;
	struct image_limits limits;
	if ((r = image_limits_load(&limits, err)) < 0)
		return r;
	/* An archive holds at most IMAGE_MAX_LAYERS layers, each within the layer limits; a
	 * docker-archive's layers are plain tars, so that is their decompressed size too. */
	const struct unpack_limits archive_limits = {
		.bytes = limits.layer_bytes > UINT64_MAX / IMAGE_MAX_LAYERS ? UINT64_MAX : limits.layer_bytes * IMAGE_MAX_LAYERS,
		.entries = limits.layer_entries,
		.bytes_limit = "128 times \"layer_bytes\"",
	};
	_cleanup_close_ int src = open(archive_path ? archive_path : "", O_RDONLY | O_CLOEXEC);
	if (src < 0)
		return cap_err(err, errno, "image archive '%s'", archive_path ? archive_path : "");
	_cleanup_close_ int images = -1;
	if ((r = store_open(&images, err)) < 0)
		return r;
	store_sweep_tmp(images);
	char dir[64], tmpdir[80];
	snprintf(dir, sizeof(dir), "import-%d-%llx", (int)getpid(), (unsigned long long)now_ns());
	snprintf(tmpdir, sizeof(tmpdir), "tmp/%s", dir);
	if (mkdirat(images, tmpdir, 0700) < 0)
		return cap_err(err, errno, "mkdir '%s'", tmpdir);
	{
		_cleanup_close_ int dfd = openat(images, tmpdir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		char what[PATH_MAX + 32];
		snprintf(what, sizeof(what), "image archive '%s'", archive_path);
		r = dfd < 0 ? cap_err(err, errno, "open '%s'", tmpdir)
			    : unpack_tar(src, dfd, UNPACK_ARCHIVE, &archive_limits, what, NULL, err);
	}
	char digest[IMAGE_DIGEST_LEN + 1] = "";
	if (r == 0) {
		char probe[128];
		struct stat st;
		snprintf(probe, sizeof(probe), "%s/oci-layout", tmpdir);
		bool oci = fstatat(images, probe, &st, AT_SYMLINK_NOFOLLOW) == 0;
		snprintf(probe, sizeof(probe), "%s/manifest.json", tmpdir);
		bool docker = fstatat(images, probe, &st, AT_SYMLINK_NOFOLLOW) == 0;
		if (oci)
			r = import_oci(images, dir, digest, err);
		else if (docker)
			r = import_docker(images, dir, digest, err);
		else
			r = cap_err_plain(err, EBADMSG, "'%s' is neither an oci-archive (no oci-layout) nor a docker-archive "
					  "(no manifest.json)", archive_path);
	}
	rootless_rm_rf_at(images, tmpdir);
	if (r == 0)
		r = unpack_manifest_layers(images, digest, &limits, progress, payload, err);
	if (r == 0)
		r = store_tag(images, canon, digest, err);
	if (r < 0)
		return cap_err_wrap(err, r, "importing '%s'", archive_path);
	if (name_out && !(*name_out = strdup(canon)))
		return cap_err(err, ENOMEM, "image name");
	return 0;
}

/* ---- list, remove ---- */

int capsule_image_list_json(char **json_out, capsule_error *err)
{
	_cleanup_close_ int images = -1;
	int r = store_open(&images, err);
	if (r < 0)
		return r;
	struct store_index ix;
	if ((r = index_load(images, &ix, err)) < 0)
		return r;
	struct json_writer j;
	json_init(&j, true); /* shown by `capsule image ls --json` as it is */
	json_array_begin(&j);
	for (size_t i = 0; i < ix.n; i++) {
		struct image_manifest m;
		json_object_begin(&j);
		json_kv_string(&j, "name", ix.v[i].name);
		json_kv_string(&j, "digest", ix.v[i].digest);
		json_kv_int(&j, "created", ix.v[i].created);
		if (load_manifest(images, ix.v[i].digest, &m, NULL) == 0) {
			uint64_t size = (uint64_t)m.config.size;
			json_kv_string(&j, "config", m.config.digest);
			json_key(&j, "layers");
			json_array_begin(&j);
			for (size_t k = 0; k < m.nentries; k++) {
				json_string(&j, m.entries[k].digest);
				size += (uint64_t)m.entries[k].size;
			}
			json_array_end(&j);
			json_kv_uint(&j, "size", size);
			image_manifest_free(&m);
		}
		json_object_end(&j);
	}
	json_array_end(&j);
	free(ix.v);
	int e = 0;
	char *text = json_steal(&j, &e);
	if (!text)
		return cap_err(err, e ? -e : ENOMEM, "formatting the image list");
	*json_out = text;
	return 0;
}

struct keep_set {
	char (*hex)[65];
	size_t n;
};

static void keep_add(struct keep_set *k, const char *hex)
{
	for (size_t i = 0; i < k->n; i++)
		if (!strncmp(k->hex[i], hex, 64))
			return;
	char (*nv)[65] = realloc(k->hex, (k->n + 1) * sizeof(*nv));
	if (!nv)
		return;
	k->hex = nv;
	memcpy(k->hex[k->n], hex, 64);
	k->hex[k->n++][64] = '\0';
}

static bool keep_has(const struct keep_set *k, const char *hex)
{
	for (size_t i = 0; i < k->n; i++)
		if (!strcmp(k->hex[i], hex))
			return true;
	return false;
}

static bool is_hex64(const char *s)
{
	for (int i = 0; i < 64; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

/* Every 64-hex run in TEXT that follows "sha256:" or "/layers/": what sandbox configs and
 * saves' manifests point at. */
static void keep_scan_text(struct keep_set *k, const char *text)
{
	static const char *const marks[] = { "sha256:", "/images/layers/" };
	for (size_t m = 0; m < ARRAY_SIZE(marks); m++)
		for (const char *p = text; (p = strstr(p, marks[m])); p++) {
			const char *h = p + strlen(marks[m]);
			if (strnlen(h, 64) == 64 && is_hex64(h))
				keep_add(k, h);
		}
}

/* Each file FILE in every folder under HOME/SUB (run/<name>/config, saves/<name>/manifest.json). */
static void keep_scan_folders(struct keep_set *k, const char *sub, const char *file)
{
	_cleanup_close_ int fd = -1;
	if (home_subdir_open(sub, &fd, NULL) < 0)
		return;
	DIR *d = fdopendir(dup(fd));
	if (!d)
		return;
	for (struct dirent *de; (de = readdir(d));) {
		if (de->d_name[0] == '.')
			continue;
		char path[NAME_MAX + 64];
		snprintf(path, sizeof(path), "%s/%s", de->d_name, file);
		_cleanup_free_ char *text = NULL;
		size_t len;
		if (read_file_at(fd, path, 16u << 20, &text, &len) == 0)
			keep_scan_text(k, text);
	}
	closedir(d);
}

static void remove_unkept(int images_fd, const char *sub, const struct keep_set *k)
{
	_cleanup_close_ int fd = openat(images_fd, sub, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return;
	DIR *d = fdopendir(dup(fd));
	if (!d)
		return;
	for (struct dirent *de; (de = readdir(d));)
		if (strlen(de->d_name) == 64 && is_hex64(de->d_name) && !keep_has(k, de->d_name))
			rootless_rm_rf_at(fd, de->d_name);
	closedir(d);
}

static void remove_unused(int images, const struct store_index *ix, uint64_t *freed);

/* The store (*IMAGES), its lock taken as OP (*LOCK, held until the caller closes it) and its
 * index loaded into IX: what every change to the index, and a consistent look at it, starts
 * with. */
static int store_open_index(int *images, int *lock, int op, struct store_index *ix, capsule_error *err)
{
	int r = store_open(images, err);
	if (r < 0)
		return r;
	if ((*lock = store_lock(*images, op, err)) < 0)
		return *lock;
	return index_load(*images, ix, err);
}

int capsule_image_remove(const char *ref, capsule_error *err)
{
	struct image_ref parsed;
	char name[600];
	int r = canonical_name(ref, &parsed, name, sizeof(name), err);
	if (r < 0)
		return r;
	_cleanup_close_ int images = -1, lock = -1;
	struct store_index ix;
	if ((r = store_open_index(&images, &lock, LOCK_EX, &ix, err)) < 0)
		return r;
	struct index_entry *e = index_find(&ix, name);
	if (!e) {
		free(ix.v);
		return cap_err_plain(err, ENOENT, "image '%s' not found", ref);
	}
	*e = ix.v[--ix.n];
	if ((r = index_save(images, &ix, err)) < 0) {
		free(ix.v);
		return r;
	}
	remove_unused(images, &ix, NULL);
	free(ix.v);
	/* The vm root disks flattened from the layers that just went: a sandbox's disk or a
	 * save's may still stand on one, which keeps it (vm_store.h). */
	vm_store_collect(VM_STORE_ROOTS, NULL, NULL);
	return 0;
}

/* What is still used: the images of IX (the index, under the store's lock), every sandbox's
 * configuration (running or stopped: its layer= lines), every pool's (its refills start from
 * those layers), every save's manifest. The rest of
 * the blobs and layers goes; *FREED (may be NULL) gets their bytes. */
static void remove_unused(int images, const struct store_index *ix, uint64_t *freed)
{
	struct keep_set keep = { 0 };
	for (size_t i = 0; i < ix->n; i++) {
		struct image_manifest m;
		keep_add(&keep, ix->v[i].digest + 7);
		if (load_manifest(images, ix->v[i].digest, &m, NULL) < 0)
			continue;
		keep_add(&keep, m.config.digest + 7);
		for (size_t k = 0; k < m.nentries; k++)
			keep_add(&keep, m.entries[k].digest + 7);
		image_manifest_free(&m);
	}
	keep_scan_folders(&keep, "run", "config");
	keep_scan_folders(&keep, "pools", "config");
	keep_scan_folders(&keep, "saves", "manifest.json");
	uint64_t before = 0, after = 0;
	if (freed)
		store_usage(images, &before, NULL);
	remove_unkept(images, "blobs/sha256", &keep);
	remove_unkept(images, "layers", &keep);
	remove_unkept(images, "layer-sizes", &keep);
	free(keep.hex);
	if (freed && store_usage(images, &after, NULL) == 0 && after <= before)
		*freed = before - after;
}

int image_store_prune(uint64_t *freed, capsule_error *err)
{
	*freed = 0;
	_cleanup_close_ int images = -1, lock = -1;
	struct store_index ix;
	int r = store_open_index(&images, &lock, LOCK_EX, &ix, err);
	if (r < 0)
		return r;
	remove_unused(images, &ix, freed);
	free(ix.v);
	return 0;
}

int image_store_usage(uint64_t *count, uint64_t *bytes, capsule_error *err)
{
	_cleanup_close_ int images = -1, lock = -1;
	struct store_index ix;
	int r = store_open_index(&images, &lock, LOCK_SH, &ix, err);
	if (r < 0)
		return r;
	*count = ix.n;
	free(ix.v);
	return store_usage(images, bytes, err);
}

/* ---- a sandbox's image ---- */

static int resolve_dir(struct capsule_config *cfg, const char *path, capsule_error *err)
{
	if (path[0] != '/')
		return cap_err_plain(err, EINVAL, "image '%s': the folder must be an absolute path", cfg->image);
	_cleanup_free_ char *resolved = realpath(path, NULL);
	if (!resolved)
		return cap_err(err, errno, "image folder '%s'", path);
	struct stat st;
	if (stat(resolved, &st) < 0 || !S_ISDIR(st.st_mode))
		return cap_err_plain(err, ENOTDIR, "image folder '%s' is not a folder", path);
	int r = check_sensitive_source(resolved, err);
	if (r < 0)
		return cap_err_wrap(err, r, "image '%s'", cfg->image);
	cfg->base_none = true;
	return config_add_layer(cfg, resolved, err);
}

static int unpack_lost_layer(int images_fd, const char *digest, capsule_error *err)
{
	struct image_limits limits;
	int r = image_limits_load(&limits, err);
	return r < 0 ? r : store_unpack_layer(images_fd, digest, &limits, err);
}

int image_resolve(struct capsule_config *cfg, capsule_error *err)
{
	if (!strncmp(cfg->image, "dir:", 4))
		return resolve_dir(cfg, cfg->image + 4, err);
	struct image_ref parsed;
	char name[600];
	int r = canonical_name(cfg->image, &parsed, name, sizeof(name), err);
	if (r < 0)
		return r;
	_cleanup_close_ int images = -1;
	if ((r = store_open(&images, err)) < 0)
		return r;
	struct store_index ix;
	if ((r = index_load(images, &ix, err)) < 0)
		return r;
	struct index_entry *e = index_find(&ix, name);
	char digest[IMAGE_DIGEST_LEN + 1] = "";
	if (e)
		snprintf(digest, sizeof(digest), "%s", e->digest);
	free(ix.v);
	if (!digest[0]) {
		/* Not here: pull it, as docker run does. */
		_cleanup_free_ char *ignored = NULL;
		capsule_error pull_err = { 0 };
		if ((r = capsule_image_pull(cfg->image, NULL, &ignored, &pull_err)) < 0) {
			/* No registry to ask: for the caller, the image is simply not there. */
			if (r == -EHOSTUNREACH)
				return cap_err_plain(err, ENOENT, "image '%s' not found (not in the store; %s)", cfg->image,
						     pull_err.message);
			if (err)
				*err = pull_err;
			return r;
		}
		return image_resolve(cfg, err);
	}
	struct image_manifest m;
	if ((r = load_manifest(images, digest, &m, err)) < 0)
		return cap_err_wrap(err, r, "image '%s'", cfg->image);
	for (size_t i = 0; i < m.nentries && r == 0; i++) {
		/* A layer lost from the store (removed by hand) is unpacked again from its blob. */
		if (!store_has_layer(images, m.entries[i].digest) && (r = unpack_lost_layer(images, m.entries[i].digest, err)) < 0)
			break;
		_cleanup_free_ char *path = store_layer_path(m.entries[i].digest);
		r = path ? config_add_layer(cfg, path, err) : cap_err(err, ENOMEM, "layer path");
	}
	char config_digest[IMAGE_DIGEST_LEN + 1];
	snprintf(config_digest, sizeof(config_digest), "%s", m.config.digest);
	image_manifest_free(&m);
	if (r < 0)
		return cap_err_wrap(err, r, "image '%s'", cfg->image);
	cfg->base_none = true;
	_cleanup_free_ char *text = NULL;
	size_t len;
	if ((r = store_read_blob(images, config_digest, IMAGE_MAX_CONFIG_BYTES, &text, &len, err)) < 0)
		return cap_err_wrap(err, r, "image '%s'", cfg->image);
	struct image_config ic;
	if ((r = image_config_parse(text, len, &ic, err)) < 0)
		return cap_err_wrap(err, r, "image '%s'", cfg->image);
	if ((ic.workdir && strchr(ic.workdir, '\n')) || (ic.user && strchr(ic.user, '\n')))
		r = cap_err_plain(err, EBADMSG, "image '%s': its config has a newline in WorkingDir or User", cfg->image);
	if (r == 0)
		r = config_prepend_env(cfg, (const char *const *)ic.env, err);
	if (r == 0)
		r = config_set_image_defaults(cfg, ic.workdir && *ic.workdir ? ic.workdir : NULL,
					      ic.user && *ic.user ? ic.user : NULL, (const char *const *)ic.entrypoint,
					      (const char *const *)ic.cmd, err);
	image_config_free(&ic);
	return r;
}
