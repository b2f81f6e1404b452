/* The save store: $CAPSULE_HOME/saves/<name>/{manifest.json, layer/}. A save is a sandbox's
 * own layer (its overlayfs upper) with owners shifted back to the image's ids, on top of the
 * layers its sandbox started from, which the manifest lists. Linked into the static shim (it
 * saves at stop): no dependency beyond libc. See docs/architecture.md, "Saves". */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "json.h"
#include "layer_copy.h"
#include "save.h"
#include "util.h"
#include "vm_store.h"

#define MANIFEST_MAX (1u << 20)
#define SAVE_CHAIN_MAX CAPSULE_MAX_LAYERS

static int saves_open(int *fd, capsule_error *err)
{
	return home_subdir_open("saves", fd, err);
}

/* Held while a save is renamed into place or removed, so that the dependency checks and the
 * change they allow are one step. */
static int store_lock(int saves, capsule_error *err)
{
	int fd = openat(saves, ".lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return cap_err(err, errno, "open '%s/saves/.lock'", capsule_home());
	while (flock(fd, LOCK_EX) < 0) {
		if (errno != EINTR) {
			int e = errno;
			close(fd);
			return cap_err(err, e, "locking '%s/saves'", capsule_home());
		}
	}
	return fd;
}

int save_validate_name(const char *name, capsule_error *err)
{
	return validate_name(name, "save name", err);
}

void save_manifest_free(struct save_manifest *m)
{
	for (size_t i = 0; i < m->nlayers; i++)
		free(m->layers[i]);
	free(m->layers);
	free(m->parent);
	free(m->parent_kind);
	free(m->parent_id);
	free(m->sandbox);
	free(m->id);
	free(m->base);
	memset(m, 0, sizeof(*m));
}

static int collect_layer(const char *name, const char *value, size_t len, void *payload)
{
	struct save_manifest *m = payload;
	char *s = NULL;
	if (json_string_value(value, len, &s) < 0 || !s || s[0] != '/')
		goto bad;
	if (m->nlayers >= SAVE_CHAIN_MAX)
		goto bad;
	char **v = realloc(m->layers, (m->nlayers + 1) * sizeof(*v));
	if (!v)
		goto bad;
	m->layers = v;
	m->layers[m->nlayers++] = s;
	return 0;
bad:
	free(s);
	return -EINVAL;
}

struct json_member {
	const char *name; /* the member wanted */
	const char *text; /* its value, when found */
	size_t len;
};

static int find_member(const char *name, const char *value, size_t len, void *payload)
{
	struct json_member *m = payload;
	if (name && !strcmp(name, m->name)) {
		m->text = value;
		m->len = len;
	}
	return 0;
}

struct strv {
	char **v; /* NULL-terminated */
	size_t n;
};

static int collect_string(const char *name, const char *value, size_t len, void *payload)
{
	struct strv *sv = payload;
	char *s = NULL;
	char **nv = NULL;
	if (json_string_value(value, len, &s) < 0 || !s || !(nv = realloc(sv->v, (sv->n + 2) * sizeof(*nv)))) {
		free(s);
		return -EINVAL;
	}
	sv->v = nv;
	sv->v[sv->n++] = s;
	sv->v[sv->n] = NULL;
	return 0;
}

static void strv_release(struct strv *sv)
{
	for (size_t i = 0; i < sv->n; i++)
		free(sv->v[i]);
	free(sv->v);
	*sv = (struct strv){ 0 };
}

/* The string array member KEY of the object TEXT into SV (left empty when there is none). */
static int get_string_array(const char *text, size_t len, const char *key, struct strv *sv)
{
	struct json_member m = { .name = key };
	if (json_object_each(text, len, 64, find_member, &m) < 0)
		return -EINVAL;
	if (m.text && json_array_each(m.text, m.len, CP_MAX_ENV, collect_string, sv) < 0) {
		strv_release(sv);
		return -EINVAL;
	}
	return 0;
}

int save_manifest_read_at(int saves, const char *name, struct save_manifest *m, capsule_error *err)
{
	memset(m, 0, sizeof(*m));
	_cleanup_close_ int dir = openat(saves, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dir < 0) {
		if (errno == ENOENT)
			return cap_err_plain(err, ENOENT, "no save named '%s'", name);
		return cap_err(err, errno, "open save '%s'", name);
	}
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	int r = read_file_at(dir, "manifest.json", MANIFEST_MAX, &text, &len);
	if (r < 0)
		return cap_err(err, -r, "reading the manifest of save '%s'", name);
	snprintf(m->name, sizeof(m->name), "%s", name);
	int64_t v = 0;
	struct json_member lm = { .name = "layers" };
	if (json_get_string(text, len, "parent", &m->parent) < 0 || !m->parent ||
	    json_get_string(text, len, "parent_kind", &m->parent_kind) < 0 || !m->parent_kind ||
	    json_get_string(text, len, "id", &m->id) < 0 || !m->id ||
	    json_get_string(text, len, "base", &m->base) < 0 || !m->base ||
	    json_object_each(text, len, 64, find_member, &lm) < 0 || !lm.text ||
	    json_array_each(lm.text, lm.len, SAVE_CHAIN_MAX, collect_layer, m) < 0) {
		save_manifest_free(m);
		return cap_err_plain(err, EINVAL, "the manifest of save '%s' is malformed", name);
	}
	json_get_string(text, len, "parent_id", &m->parent_id);
	json_get_string(text, len, "sandbox", &m->sandbox);
	if (json_get_int(text, len, "created", &v) == 0)
		m->created = v;
	if (json_get_int(text, len, "size", &v) == 0)
		m->size = (uint64_t)v;
	if (json_get_int(text, len, "files", &v) == 0)
		m->files = (uint64_t)v;
	return 0;
}

char *save_layer_path(const char *name)
{
	char *p = NULL;
	if (asprintf(&p, "%s/saves/%s/layer", capsule_home(), name) < 0)
		return NULL;
	return p;
}

int save_resolve(const char *name, char ***layers, size_t *nlayers, bool *base_none, capsule_error *err)
{
	if (validate_name(name, "save name", NULL) < 0)
		return 0; /* not a save's name: the caller tries images */
	_cleanup_close_ int saves = -1;
	int r = saves_open(&saves, err);
	if (r < 0)
		return r;
	struct stat st;
	if (fstatat(saves, name, &st, AT_SYMLINK_NOFOLLOW) < 0 && errno == ENOENT)
		return 0;
	struct save_manifest m;
	if ((r = save_manifest_read_at(saves, name, &m, err)) < 0)
		return r;
	/* A parent save replaced or removed since would put this layer on top of a different
	 * tree than the one it was taken from. */
	if (!strcmp(m.parent_kind, "save")) {
		struct save_manifest p;
		bool same = save_manifest_read_at(saves, m.parent, &p, NULL) == 0;
		same = same && m.parent_id && !strcmp(p.id, m.parent_id);
		if (p.id)
			save_manifest_free(&p);
		if (!same) {
			r = cap_err_plain(err, ENOENT, "save '%s' depends on save '%s', which is gone or was replaced", name,
					  m.parent);
			save_manifest_free(&m);
			return r;
		}
	}
	if (m.nlayers + 1 > CAPSULE_MAX_LAYERS) {
		save_manifest_free(&m);
		return cap_err_plain(err, E2BIG, "save '%s' is a chain of more than %d layers", name, CAPSULE_MAX_LAYERS);
	}
	char **v = calloc(m.nlayers + 1, sizeof(*v));
	char *own = save_layer_path(name);
	if (!v || !own) {
		free(v);
		free(own);
		save_manifest_free(&m);
		return cap_err(err, ENOMEM, "resolving save '%s'", name);
	}
	for (size_t i = 0; i < m.nlayers; i++)
		v[i] = steal_ptr(m.layers[i]);
	v[m.nlayers] = own;
	*layers = v;
	*nlayers = m.nlayers + 1;
	*base_none = !strcmp(m.base, "none");
	save_manifest_free(&m);
	return 1;
}

int save_layer_open(const char *name, struct save_manifest *m, int *layer, capsule_error *err)
{
	*layer = -1;
	int r = save_validate_name(name, err);
	_cleanup_close_ int saves = -1, dir = -1;
	if (r < 0 || (r = saves_open(&saves, err)) < 0 || (r = save_manifest_read_at(saves, name, m, err)) < 0)
		return r;
	dir = openat(saves, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	struct stat st;
	if (dir >= 0 && fstatat(dir, VM_SAVE_DISK, &st, AT_SYMLINK_NOFOLLOW) == 0)
		r = cap_err_plain(err, EOPNOTSUPP, "save '%s' is a vm's disk, with no layer of its own changes to compare", name);
	else if (dir < 0 || (*layer = openat(dir, "layer", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0)
		r = cap_err(err, errno, "open save '%s'", name);
	if (r < 0)
		save_manifest_free(m);
	return r;
}

static void json_strv(struct json_writer *j, const char *key, char *const *v, size_t n)
{
	json_key(j, key);
	json_array_begin(j);
	for (size_t i = 0; v && (n ? i < n : v[i] != NULL); i++)
		json_string(j, v[i]);
	json_array_end(j);
}

/* The settings a sandbox keeps across a save, as docker commit keeps a container's: its
 * environment and its image's WorkingDir, User, Entrypoint and Cmd. */
static void describe_config(struct json_writer *j, const struct capsule_config *cfg)
{
	json_key(j, "config");
	json_object_begin(j);
	json_strv(j, "env", cfg->env, cfg->envc);
	if (cfg->workdir)
		json_kv_string(j, "workdir", cfg->workdir);
	if (cfg->user)
		json_kv_string(j, "user", cfg->user);
	if (cfg->entrypoint)
		json_strv(j, "entrypoint", cfg->entrypoint, 0);
	if (cfg->cmd)
		json_strv(j, "cmd", cfg->cmd, 0);
	json_object_end(j);
}

/* A member that may be absent. */
static int optional(int r)
{
	return r == -ENOENT ? 0 : r;
}

/* Give CFG, about to start from save NAME, the saved settings; its own environment (-e) is
 * put after the saved one, so that it wins. A save made before saves kept settings has none. */
static int save_config_apply(const char *name, struct capsule_config *cfg, capsule_error *err)
{
	_cleanup_close_ int saves = -1;
	int r = saves_open(&saves, err);
	if (r < 0)
		return r;
	_cleanup_close_ int dir = openat(saves, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	if (dir < 0 || (r = read_file_at(dir, "manifest.json", MANIFEST_MAX, &text, &len)) < 0)
		return cap_err(err, dir < 0 ? errno : -r, "reading the manifest of save '%s'", name);
	struct json_member c = { .name = "config" };
	if (json_object_each(text, len, 64, find_member, &c) < 0)
		return cap_err_plain(err, EINVAL, "the manifest of save '%s' is malformed", name);
	if (!c.text)
		return 0;
	_cleanup_free_ char *workdir = NULL, *user = NULL;
	struct strv env = { 0 }, entrypoint = { 0 }, cmd = { 0 };
	if (optional(json_get_string(c.text, c.len, "workdir", &workdir)) < 0 ||
	    optional(json_get_string(c.text, c.len, "user", &user)) < 0 ||
	    get_string_array(c.text, c.len, "env", &env) < 0 ||
	    get_string_array(c.text, c.len, "entrypoint", &entrypoint) < 0 ||
	    get_string_array(c.text, c.len, "cmd", &cmd) < 0) {
		r = cap_err_plain(err, EINVAL, "the settings in the manifest of save '%s' are malformed", name);
		goto out;
	}
	r = config_prepend_env(cfg, (const char *const *)env.v, err);
	if (r == 0)
		r = config_set_image_defaults(cfg, workdir, user, (const char *const *)entrypoint.v,
					      (const char *const *)cmd.v, err);
out:
	strv_release(&env);
	strv_release(&entrypoint);
	strv_release(&cmd);
	return r;
}

/* A vm save is a disk (the guest's whole root file system), which only a vm can start from;
 * a container save is a layer folder, which a vm flattens into its disk like any layer. */
static int save_disk_apply(struct capsule_config *cfg, capsule_error *err)
{
	_cleanup_free_ char *disk = NULL;
	if (asprintf(&disk, "%s/saves/%s/" VM_SAVE_DISK, capsule_home(), cfg->image) < 0)
		return cap_err(err, ENOMEM, "save path");
	struct stat st;
	if (lstat(disk, &st) < 0)
		return errno == ENOENT ? 0 : cap_err(err, errno, "save '%s'", cfg->image);
	if (cfg->isolation != CAPSULE_ISOLATION_VM)
		return cap_err_plain(err, EINVAL, "save '%s' is a vm's disk: start it with --isolation vm", cfg->image);
	free(cfg->disk_from);
	cfg->disk_from = steal_ptr(disk);
	return 0;
}

int save_apply_to_config(struct capsule_config *cfg, capsule_error *err)
{
	char **layers = NULL;
	size_t n = 0;
	bool base_none = false;
	int r = save_resolve(cfg->image, &layers, &n, &base_none, err);
	if (r <= 0)
		return r;
	for (size_t i = 0; i < n && r >= 0; i++)
		if (config_add_layer(cfg, layers[i], err) < 0)
			r = -1;
	for (size_t i = 0; i < n; i++)
		free(layers[i]);
	free(layers);
	if (r >= 0)
		r = save_config_apply(cfg->image, cfg, err);
	if (r >= 0)
		r = save_disk_apply(cfg, err);
	if (r < 0)
		return cap_err_wrap(err, err && err->code ? -err->code : -EINVAL, "starting from save '%s'", cfg->image);
	cfg->base_none = base_none;
	return 1;
}

/* ---- who depends on a save ---- */

/* The first save whose parent is NAME, or "" */
static bool save_has_child(int saves, const char *name, char *child, size_t size)
{
	DIR *d = dir_walk_open(saves);
	if (!d) {
		return false;
	}
	bool found = false;
	struct dirent *de;
	while (!found && (de = readdir(d))) {
		if (de->d_name[0] == '.' || !strcmp(de->d_name, name))
			continue;
		struct save_manifest m;
		if (save_manifest_read_at(saves, de->d_name, &m, NULL) < 0)
			continue;
		if (!strcmp(m.parent_kind, "save") && !strcmp(m.parent, name)) {
			snprintf(child, size, "%s", de->d_name);
			found = true;
		}
		save_manifest_free(&m);
	}
	closedir(d);
	return found;
}

bool save_used_by_sandbox(const char *name, const char *except, char *user, size_t size)
{
	_cleanup_free_ char *own = save_layer_path(name);
	_cleanup_close_ int run = -1;
	if (!own || home_subdir_open("run", &run, NULL) < 0)
		return false;
	DIR *d = dir_walk_open(run);
	if (!d) {
		return false;
	}
	bool found = false;
	struct dirent *de;
	while (!found && (de = readdir(d))) {
		if (de->d_name[0] == '.' || (except && !strcmp(de->d_name, except)))
			continue;
		_cleanup_close_ int dir = openat(run, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		struct capsule_config cfg;
		if (dir < 0 || config_load_at(dir, &cfg, NULL) < 0)
			continue;
		for (size_t i = 0; i < cfg.nlayers && !found; i++)
			if (!strcmp(cfg.layers[i], own)) {
				snprintf(user, size, "%s", de->d_name);
				found = true;
			}
		config_clear(&cfg);
	}
	closedir(d);
	return found;
}

/* ---- writing ---- */

/* A folder a killed save left behind: ".tmp-*" whose lock nobody holds. */
static void sweep_temporaries(int saves)
{
	DIR *d = dir_walk_open(saves);
	if (!d) {
		return;
	}
	struct dirent *de;
	while ((de = readdir(d))) {
		if (strncmp(de->d_name, ".tmp-", 5) != 0)
			continue;
		_cleanup_close_ int fd = openat(saves, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) == 0)
			rootless_rm_rf_at(saves, de->d_name);
	}
	closedir(d);
}

static int make_temporary(int store, char *tmp, size_t size, int *fd, capsule_error *err)
{
	for (int tries = 0; tries < 16; tries++) {
		uint32_t rnd = 0;
		if (getrandom(&rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
			rnd = (uint32_t)now_ns();
		snprintf(tmp, size, ".tmp-%d-%08x", (int)getpid(), rnd);
		if (mkdirat(store, tmp, 0700) == 0)
			break;
		if (errno != EEXIST)
			return cap_err(err, errno, "mkdir '%s'", tmp);
		tmp[0] = '\0';
	}
	if (!tmp[0])
		return cap_err_plain(err, EEXIST, "no free temporary name");
	int d = openat(store, tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	/* Held until this save is in place: a sweep never takes a folder still being written. */
	if (d < 0 || flock(d, LOCK_EX | LOCK_NB) < 0) {
		int e = errno;
		if (d >= 0)
			close(d);
		rootless_rm_rf_at(store, tmp);
		return cap_err(err, e, "open '%s'", tmp);
	}
	*fd = d;
	return 0;
}

static void random_id(char *out, size_t size)
{
	uint8_t b[8];
	if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b)) {
		uint64_t t = now_ns();
		memcpy(b, &t, sizeof(b));
	}
	snprintf(out, size, "%02x%02x%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]);
}

/* What a new save taken from a sandbox of configuration CFG is on top of. */
/* The save store is opened here, not taken from the caller: a checkpoint is written to its
 * sandbox's checkpoints/, and its parent save is still in saves/. */
static int describe_parent(const struct capsule_config *cfg, struct json_writer *j, capsule_error *err)
{
	const char *kind = "image";
	_cleanup_free_ char *parent_id = NULL;
	if (!strcmp(cfg->image, "host") && !cfg->nlayers) {
		kind = "host";
	} else if (cfg->nlayers) {
		_cleanup_free_ char *own = validate_name(cfg->image, "name", NULL) == 0 ? save_layer_path(cfg->image) : NULL;
		if (own && !strcmp(cfg->layers[cfg->nlayers - 1], own)) {
			struct save_manifest p;
			_cleanup_close_ int saves = -1;
			int r = saves_open(&saves, err);
			if (r == 0)
				r = save_manifest_read_at(saves, cfg->image, &p, err);
			if (r < 0)
				return cap_err_wrap(err, r, "the sandbox's save");
			kind = "save";
			parent_id = steal_ptr(p.id);
			save_manifest_free(&p);
		}
	}
	json_kv_string(j, "parent", cfg->image);
	json_kv_string(j, "parent_kind", kind);
	if (parent_id)
		json_kv_string(j, "parent_id", parent_id);
	json_kv_string(j, "base", cfg->base_none ? "none" : "host");
	json_key(j, "layers");
	json_array_begin(j);
	for (size_t i = 0; i < cfg->nlayers; i++)
		json_string(j, cfg->layers[i]);
	json_array_end(j);
	return 0;
}

/* A snapshot is the sandbox's own layer (UPPER, a folder) or, for the vm level, its disk
 * (DISK, a qcow2 file, kept beside an empty layer/ so that what depends on a save is found
 * the same way for both levels); the other is -1. */
static int snapshot_at(int store, const char *name, int upper, int disk, const struct capsule_config *cfg,
		       uint32_t slot, bool refuse_replace_in_use, bool durable, capsule_error *err);

int layer_snapshot_at(int store, const char *name, int upper, const struct capsule_config *cfg, uint32_t slot,
		      bool refuse_replace_in_use, bool durable, capsule_error *err)
{
	return snapshot_at(store, name, upper, -1, cfg, slot, refuse_replace_in_use, durable, err);
}

int disk_snapshot_at(int store, const char *name, int disk, const struct capsule_config *cfg, bool refuse_replace_in_use,
		     bool durable, capsule_error *err)
{
	return snapshot_at(store, name, -1, disk, cfg, cfg->id_slot, refuse_replace_in_use, durable, err);
}

int vm_disk_copy(int disk, int dirfd, const char *name, capsule_error *err)
{
	struct stat st;
	if (fstat(disk, &st) < 0)
		return cap_err(err, errno, "stat of the vm disk");
	_cleanup_close_ int out = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (out < 0)
		return cap_err(err, errno, "creating '%s'", name);
	int r = layer_copy_data(disk, out, (uint64_t)st.st_size);
	if (r < 0) {
		unlinkat(dirfd, name, 0);
		return cap_err(err, -r, "copying the vm disk into '%s'", name);
	}
	return 0;
}

static int snapshot_at(int store, const char *name, int upper, int disk, const struct capsule_config *cfg,
		       uint32_t slot, bool refuse_replace_in_use, bool durable, capsule_error *err)
{
	_cleanup_close_ int tmpfd = -1, layer = -1, lock = -1;
	_cleanup_free_ char *text = NULL;
	char tmp[64];
	sweep_temporaries(store);
	int r = make_temporary(store, tmp, sizeof(tmp), &tmpfd, err);
	if (r < 0)
		return r;
	uid_t ub;
	gid_t gb;
	uint32_t count;
	bool rootless;
	home_id_map(slot, &ub, &gb, &count, &rootless);
	struct id_shift shift = { ub, gb, 0, 0, count, !rootless };
	struct layer_copy_stats stats;
	if (mkdirat(tmpfd, "layer", 0755) < 0 ||
	    (layer = openat(tmpfd, "layer", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0) {
		r = cap_err(err, errno, "mkdir '%s/layer'", tmp);
		goto fail;
	}
	memset(&stats, 0, sizeof(stats));
	if (upper >= 0 && (r = layer_copy(upper, layer, &shift, &stats, err)) < 0)
		goto fail;
	struct stat dst = { 0 };
	if (disk >= 0 && ((r = vm_disk_copy(disk, tmpfd, VM_SAVE_DISK, err)) < 0 ||
			  (fstatat(tmpfd, VM_SAVE_DISK, &dst, AT_SYMLINK_NOFOLLOW) < 0 && (r = cap_err(err, errno, "stat")) < 0)))
		goto fail;
	struct json_writer j;
	json_init(&j, true);
	json_object_begin(&j);
	char id[24];
	random_id(id, sizeof(id));
	json_kv_string(&j, "name", name);
	json_kv_string(&j, "id", id);
	if (cfg->name[0])
		json_kv_string(&j, "sandbox", cfg->name);
	if ((r = describe_parent(cfg, &j, err)) < 0) {
		json_free(&j);
		goto fail;
	}
	describe_config(&j, cfg);
	if (disk >= 0) {
		json_kv_string(&j, "isolation", "vm");
		json_kv_string(&j, "disk", VM_SAVE_DISK);
	}
	json_kv_int(&j, "created", (int64_t)time(NULL));
	json_kv_uint(&j, "size", layer_disk_usage(layer, 0) + (uint64_t)dst.st_blocks * 512);
	json_kv_uint(&j, "files", stats.entries);
	json_kv_uint(&j, "skipped", stats.skipped);
	json_object_end(&j);
	int e = 0;
	text = json_steal(&j, &e);
	if (!text) {
		r = cap_err(err, e ? -e : ENOMEM, "writing the manifest");
		goto fail;
	}
	if ((r = write_file_atomic_at(tmpfd, "manifest.json", text, strlen(text), 0600, false)) < 0) {
		r = cap_err(err, -r, "writing the manifest");
		goto fail;
	}
	layer_test_pause("before-sync");
	/* One syncfs for the whole tree: an fsync per file would cost a flush per file. The
	 * rename below is then the commit point. */
	if (durable && syncfs(tmpfd) < 0) {
		r = cap_err(err, errno, "syncing the save");
		goto fail;
	}
	if ((lock = store_lock(store, err)) < 0) {
		r = lock;
		goto fail;
	}
	if (renameat2(store, tmp, store, name, RENAME_NOREPLACE) == 0) {
		if (durable)
			fsync(store);
		return 0;
	}
	if (errno != EEXIST) {
		r = cap_err(err, errno, "renaming the save into place");
		goto fail;
	}
	char user[CAPSULE_NAME_MAX + 1];
	if (refuse_replace_in_use && save_has_child(store, name, user, sizeof(user))) {
		r = cap_err_plain(err, EBUSY, "save '%s' is the parent of save '%s': save under another name", name, user);
		goto fail;
	}
	if (refuse_replace_in_use && save_used_by_sandbox(name, NULL, user, sizeof(user))) {
		r = cap_err_plain(err, EBUSY, "save '%s' is in use by sandbox '%s': save under another name", name, user);
		goto fail;
	}
	layer_test_pause("before-exchange");
	/* The old save and the new trade places in one step; the old one, now under the
	 * temporary name, goes after (or with the next sweep, should we die first). */
	if (renameat2(store, tmp, store, name, RENAME_EXCHANGE) < 0) {
		r = cap_err(err, errno, "replacing save '%s'", name);
		goto fail;
	}
	if (durable)
		fsync(store);
	layer_test_pause("after-exchange");
	layer_remove_replaced(store, tmp);
	return 0;
fail:
	rootless_rm_rf_at(store, tmp);
	return r;
}

static int save_into_store(const char *name, int upper, int disk, const struct capsule_config *cfg, capsule_error *err)
{
	int r = save_validate_name(name, err);
	if (r < 0)
		return r;
	_cleanup_close_ int saves = -1;
	if ((r = saves_open(&saves, err)) < 0)
		return r;
	r = snapshot_at(saves, name, upper, disk, cfg, cfg->id_slot, true, true, err);
	if (r < 0)
		return cap_err_wrap(err, r, "saving '%s'", name);
	return 0;
}

int save_write(const char *name, int upper, const struct capsule_config *cfg, capsule_error *err)
{
	return save_into_store(name, upper, -1, cfg, err);
}

int save_write_disk(const char *name, int disk, const struct capsule_config *cfg, capsule_error *err)
{
	return save_into_store(name, -1, disk, cfg, err);
}

int save_check_target(const struct capsule_config *cfg, const char *save, capsule_error *err)
{
	int r = save_validate_name(save, err);
	if (r < 0)
		return r;
	if (!strcmp(cfg->image, save) && cfg->nlayers)
		return cap_err_plain(err, EBUSY,
				     "cannot save as '%s': the sandbox starts from that save; save under another name", save);
	return 0;
}

/* ---- listing and removing ---- */

int capsule_save_remove(const char *name, capsule_error *err)
{
	int r = save_validate_name(name, err);
	if (r < 0)
		return r;
	_cleanup_close_ int saves = -1, lock = -1;
	if ((r = saves_open(&saves, err)) < 0)
		return r;
	sweep_temporaries(saves);
	if ((lock = store_lock(saves, err)) < 0)
		return lock;
	struct stat st;
	if (fstatat(saves, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return cap_err_plain(err, ENOENT, "no save named '%s'", name);
	char user[CAPSULE_NAME_MAX + 1];
	if (save_has_child(saves, name, user, sizeof(user)))
		return cap_err_plain(err, EBUSY, "save '%s' is the parent of save '%s': remove that first", name, user);
	if (save_used_by_sandbox(name, NULL, user, sizeof(user)))
		return cap_err_plain(err, EBUSY, "save '%s' is in use by sandbox '%s': remove the sandbox first", name, user);
	/* Out of sight in one rename, then removed: a kill in between leaves a temporary that the
	 * next sweep takes, never a half-removed save. */
	char tmp[64];
	uint32_t rnd = 0;
	if (getrandom(&rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		rnd = (uint32_t)now_ns();
	snprintf(tmp, sizeof(tmp), ".tmp-rm-%d-%08x", (int)getpid(), rnd);
	if (renameat2(saves, name, saves, tmp, RENAME_NOREPLACE) < 0)
		return cap_err(err, errno, "removing save '%s'", name);
	fsync(saves);
	rootless_rm_rf_at(saves, tmp);
	/* The layers only this save kept (its image was removed before it), then the vm root
	 * disks that only its disk or those layers kept. Its removal is done: what cannot be
	 * collected now is collected by the next removal or prune. */
	uint64_t ignored;
	if (image_store_prune)
		image_store_prune(&ignored, NULL);
	vm_store_collect(VM_STORE_ROOTS, NULL, NULL);
	return 0;
}

static int load_all(int saves, struct save_manifest **out, size_t *count, capsule_error *err)
{
	DIR *d = dir_walk_open(saves);
	if (!d) {
		return cap_err(err, errno, "listing '%s/saves'", capsule_home());
	}
	struct save_manifest *v = NULL;
	size_t n = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.' || validate_name(de->d_name, "name", NULL) < 0)
			continue;
		struct save_manifest m;
		if (save_manifest_read_at(saves, de->d_name, &m, NULL) < 0)
			continue;
		struct save_manifest *nv = realloc(v, (n + 1) * sizeof(*v));
		if (!nv) {
			save_manifest_free(&m);
			break;
		}
		v = nv;
		v[n++] = m;
	}
	closedir(d);
	*out = v;
	*count = n;
	return 0;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(((const struct save_manifest *)a)->name, ((const struct save_manifest *)b)->name);
}

static const struct save_manifest *find_save(const struct save_manifest *v, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(v[i].name, name))
			return &v[i];
	return NULL;
}

int capsule_saves_json(char **out_json, capsule_error *err)
{
	_cleanup_close_ int saves = -1;
	int r = saves_open(&saves, err);
	if (r < 0)
		return r;
	sweep_temporaries(saves);
	struct save_manifest *v = NULL;
	size_t n = 0;
	if ((r = load_all(saves, &v, &n, err)) < 0)
		return r;
	qsort(v, n, sizeof(*v), by_name);
	struct json_writer j;
	json_init(&j, true);
	json_array_begin(&j);
	for (size_t i = 0; i < n; i++) {
		json_object_begin(&j);
		json_kv_string(&j, "name", v[i].name);
		json_kv_string(&j, "parent", v[i].parent);
		json_kv_string(&j, "parent_kind", v[i].parent_kind);
		json_key(&j, "sandbox");
		if (v[i].sandbox)
			json_string(&j, v[i].sandbox);
		else
			json_null(&j);
		json_kv_int(&j, "created", v[i].created);
		json_kv_uint(&j, "size", v[i].size);
		json_kv_uint(&j, "files", v[i].files);
		/* The chain from the bottom: the image (or host), then each save up to this one. */
		const char *chain[SAVE_CHAIN_MAX + 2];
		uint64_t total = 0;
		size_t k = 0;
		const struct save_manifest *s = &v[i];
		const char *root = NULL;
		while (s && k < SAVE_CHAIN_MAX) {
			chain[k++] = s->name;
			total += s->size;
			if (strcmp(s->parent_kind, "save") != 0) {
				root = s->parent;
				break;
			}
			const struct save_manifest *p = find_save(v, n, s->parent);
			if (!p || !s->parent_id || strcmp(p->id, s->parent_id) != 0) {
				root = s->parent; /* a broken chain still names where it pointed */
				break;
			}
			s = p;
		}
		json_key(&j, "chain");
		json_array_begin(&j);
		if (root)
			json_string(&j, root);
		while (k > 0)
			json_string(&j, chain[--k]);
		json_array_end(&j);
		json_kv_uint(&j, "chain_size", total);
		json_object_end(&j);
	}
	json_array_end(&j);
	for (size_t i = 0; i < n; i++)
		save_manifest_free(&v[i]);
	free(v);
	int e = 0;
	char *text = json_steal(&j, &e);
	if (!text)
		return cap_err(err, e ? -e : ENOMEM, "formatting the list of saves");
	*out_json = text;
	return 0;
}

int save_store_usage(uint64_t *count, uint64_t *bytes, capsule_error *err)
{
	_cleanup_close_ int saves = -1;
	int r = saves_open(&saves, err);
	if (r < 0)
		return r;
	struct save_manifest *v = NULL;
	size_t n = 0;
	if ((r = load_all(saves, &v, &n, err)) < 0)
		return r;
	*count = n;
	*bytes = 0;
	for (size_t i = 0; i < n; i++) {
		*bytes += v[i].size;
		save_manifest_free(&v[i]);
	}
	free(v);
	return 0;
}
