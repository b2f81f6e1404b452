/* What changed in a container sandbox's filesystem (capsule_sandbox_diff_json), read from its
 * own overlayfs layer: every entry of upper/ is a change, so the walk costs what changed, not
 * the whole tree. Against the read-only layers below (the image's layers top first, then the
 * host image's skeleton), an upper entry that hides a lower one is modified, one that hides
 * nothing is added, and a whiteout (a 0:0 character device, or a file marked
 * user.overlay.whiteout in a folder marked opaque "x") is a deletion. An opaque folder hides
 * all below it: what the layers had there and upper has not is deleted.
 *
 * Since a save below the sandbox's own layer (sandbox_layers_diff_json), the layers above the
 * save are compared too, a stack merged as overlayfs merges it: the top layer with a name
 * decides what it is, and a folder's merge goes down to a layer where the name is a whiteout,
 * not a folder, or an opaque folder, below which nothing shows through.
 *
 * upper/ is the sandbox's to write while we read it: nothing in it is followed. Each folder is
 * opened from its parent's descriptor by one component with openat2(RESOLVE_NO_SYMLINKS |
 * RESOLVE_BENEATH | RESOLVE_NO_XDEV), entries are looked at with fstatat(AT_SYMLINK_NOFOLLOW),
 * and the depth, the path and the number of changes are bounded. An entry that changes under
 * the walk is reported as it was first seen, or not at all if it is gone. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "diff.h"
#include "home.h"
#include "id_slot.h"
#include "internal.h"
#include "json.h"
#include "layer_disk.h"
#include "syscalls.h"
#include "util.h"

/* As a save's copy (layer_copy.c): each level holds descriptors and a frame. */
#define DIFF_MAX_DEPTH 256
/* A sandbox decides how many files it makes: past this many changes the diff is refused
 * rather than grown without end (the JSON of a million changes is ~100 MiB). */
#define DIFF_MAX_CHANGES 1000000u
/* Each change carries its whole path (up to ~64 KiB deep down), so the count alone does not
 * bound the answer: a few MiB of long nested names would make GiBs of JSON. The bytes are
 * bounded too, checked as each change is written (one change past it at most). */
#define DIFF_MAX_JSON_BYTES (64u << 20)
#define DIFF_PATH_MAX ((DIFF_MAX_DEPTH + 2) * (NAME_MAX + 1))
#define DIFF_MAX_NAMES_PER_DIR 1000000u

struct differ {
	const struct capsule_config *cfg;
	struct json_writer *j;
	size_t changes;
	capsule_error *err;
	char path[DIFF_PATH_MAX];
};

/* The lower layers' folders at the same path, top first: where a name is looked up. */
struct lowers {
	int *fd;
	size_t n;
};

static void lowers_close(struct lowers *l)
{
	for (size_t i = 0; i < l->n; i++)
		close(l->fd[i]);
	free(l->fd);
	l->fd = NULL;
	l->n = 0;
}

static int open_dir_at(int dirfd, const char *name)
{
	return sys_openat2(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC,
			   RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_BENEATH | RESOLVE_NO_XDEV);
}

static bool is_whiteout_dev(const struct stat *st)
{
	return S_ISCHR(st->st_mode) && st->st_rdev == makedev(0, 0);
}

/* The value of overlayfs's opaque mark on folder FD: 'y' (opaque), 'x' (holds xattr
 * whiteouts), or 0. Layers and the sandbox's layer use the user. namespace (userxattr); a
 * layer made by a root mount would use trusted. */
static char opaque_mark(int fd)
{
	static const char *const names[] = { "user.overlay.opaque", "trusted.overlay.opaque" };
	for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
		char v[2] = { 0 };
		if (fgetxattr(fd, names[i], v, sizeof(v)) == 1 && (v[0] == 'y' || v[0] == 'x'))
			return v[0];
	}
	return 0;
}

static bool is_xattr_whiteout(int dirfd, const char *name, const struct stat *st)
{
	if (!S_ISREG(st->st_mode) || st->st_size != 0)
		return false;
	_cleanup_close_ int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return false;
	static const char *const names[] = { "user.overlay.whiteout", "trusted.overlay.whiteout" };
	for (size_t i = 0; i < ARRAY_SIZE(names); i++)
		if (fgetxattr(fd, names[i], NULL, 0) >= 0)
			return true;
	return false;
}

/* Whether NAME exists in the lower view at L (its stat in *ST): the first layer that has it
 * decides, a whiteout there meaning it does not. */
static bool lower_lookup(const struct lowers *l, const char *name, struct stat *st)
{
	for (size_t i = 0; i < l->n; i++) {
		if (fstatat(l->fd[i], name, st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		return !is_whiteout_dev(st);
	}
	return false;
}

/* The lower folders at NAME below L (from its layer FROM): each layer's folder of that name
 * down to the first layer where the name is not a folder (it hides the layers below) or whose
 * folder is opaque. *CLOSED (if given): whether such a layer ended it, so that nothing below L
 * shows through. */
static int lowers_child(const struct lowers *l, size_t from, const char *name, struct lowers *out, bool *closed,
			capsule_error *err)
{
	out->n = 0;
	out->fd = calloc(l->n ? l->n : 1, sizeof(int));
	if (!out->fd)
		return cap_err(err, ENOMEM, "diff");
	bool end = false;
	for (size_t i = from; i < l->n && !end; i++) {
		struct stat st;
		if (fstatat(l->fd[i], name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		int fd = S_ISDIR(st.st_mode) ? open_dir_at(l->fd[i], name) : -1;
		/* Gone or replaced under the walk: as if it were not a folder. */
		if (fd < 0 && S_ISDIR(st.st_mode) && errno != ENOENT && errno != ELOOP && errno != ENOTDIR) {
			int e = errno;
			lowers_close(out);
			return cap_err(err, e, "diff: open folder '%s'", name);
		}
		end = fd < 0;
		if (fd >= 0) {
			out->fd[out->n++] = fd;
			end = opaque_mark(fd) == 'y';
		}
	}
	if (closed)
		*closed = end;
	return 0;
}

static const char *type_name(mode_t m)
{
	return S_ISREG(m) ? "file" : S_ISDIR(m) ? "dir" : S_ISLNK(m) ? "symlink" : "other";
}

static int emit(struct differ *d, const char *kind, int dirfd, const char *name, const struct stat *st)
{
	if (++d->changes > DIFF_MAX_CHANGES)
		return cap_err_plain(d->err, EFBIG, "more than %u changes in the sandbox's filesystem", DIFF_MAX_CHANGES);
	struct json_writer *j = d->j;
	json_object_begin(j);
	json_kv_string(j, "path", d->path);
	json_kv_string(j, "kind", kind);
	json_kv_string(j, "type", type_name(st->st_mode));
	if (strcmp(kind, "deleted") != 0) {
		char mode[8];
		snprintf(mode, sizeof(mode), "%04o", (unsigned)(st->st_mode & 07777));
		json_kv_uint(j, "size", S_ISDIR(st->st_mode) ? 0 : (uint64_t)st->st_size);
		json_kv_string(j, "mode", mode);
		json_kv_int(j, "mtime_ns", (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec);
		if (S_ISLNK(st->st_mode)) {
			char target[PATH_MAX];
			ssize_t n = readlinkat(dirfd, name, target, sizeof(target) - 1);
			if (n >= 0) {
				target[n] = '\0';
				json_kv_string(j, "link_target", target);
			}
		}
	}
	json_object_end(j);
	if (j->len > DIFF_MAX_JSON_BYTES)
		return cap_err_plain(d->err, EFBIG, "the changes in the sandbox's filesystem are over %u MiB of JSON",
				     DIFF_MAX_JSON_BYTES >> 20);
	return j->err ? cap_err(d->err, -j->err, "formatting the diff") : 0;
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void names_free(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

/* The names in folder FD, sorted (the output is the same for the same tree). */
static int dir_names(int fd, char ***out, size_t *count, capsule_error *err)
{
	*out = NULL;
	*count = 0;
	int dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	if (dup_fd < 0)
		return cap_err(err, errno, "diff: dup");
	DIR *dir = fdopendir(dup_fd);
	if (!dir) {
		close(dup_fd);
		return cap_err(err, errno, "diff: opendir");
	}
	char **v = NULL;
	size_t n = 0, cap = 0;
	int r = 0;
	struct dirent *de;
	while ((de = readdir(dir))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (n >= DIFF_MAX_NAMES_PER_DIR) {
			r = cap_err_plain(err, EFBIG, "a folder with more than %u entries", DIFF_MAX_NAMES_PER_DIR);
			break;
		}
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 16;
			char **nv = realloc(v, ncap * sizeof(*v));
			if (!nv) {
				r = cap_err(err, ENOMEM, "diff");
				break;
			}
			v = nv;
			cap = ncap;
		}
		if (!(v[n] = strdup(de->d_name))) {
			r = cap_err(err, ENOMEM, "diff");
			break;
		}
		n++;
	}
	closedir(dir);
	if (r < 0) {
		names_free(v, n);
		return r;
	}
	if (n)
		qsort(v, n, sizeof(*v), cmp_names);
	*out = v;
	*count = n;
	return 0;
}

static bool name_in(char **v, size_t n, const char *name)
{
	return n && bsearch(&name, v, n, sizeof(*v), cmp_names) != NULL;
}

/* Add the names V (NV of them, taken) not already in the sorted *SET of *N, sorted again. */
static int names_merge(char ***set, size_t *n, char **v, size_t nv, capsule_error *err)
{
	char **all = realloc(*set, (*n + nv + 1) * sizeof(**set));
	if (!all) {
		names_free(v, nv);
		return cap_err(err, ENOMEM, "diff");
	}
	*set = all;
	size_t sorted = *n;
	for (size_t k = 0; k < nv; k++) {
		if (name_in(all, sorted, v[k]))
			free(v[k]);
		else
			all[(*n)++] = v[k];
	}
	free(v);
	if (*n)
		qsort(all, *n, sizeof(*all), cmp_names);
	return 0;
}

/* Append /NAME to the path (which fits: DIFF_PATH_MAX holds DIFF_MAX_DEPTH + 2 names); the
 * old length is returned to put back. */
static size_t path_push(struct differ *d, const char *name)
{
	size_t len = strlen(d->path);
	snprintf(d->path + len, sizeof(d->path) - len, "%s%s", len == 1 ? "" : "/", name);
	return len;
}

/* In a folder whose lower contents are hidden (opaque, or below an opaque one): what the
 * lower view had and upper does not is deleted. One entry for a deleted folder, not its
 * contents. */
static int hidden_deletions(struct differ *d, const struct lowers *l, char **upper_names, size_t nupper)
{
	char **seen = NULL;
	size_t nseen = 0;
	int r = 0;
	for (size_t i = 0; i < l->n && r == 0; i++) {
		char **v;
		size_t n;
		if ((r = dir_names(l->fd[i], &v, &n, d->err)) < 0)
			break;
		for (size_t k = 0; k < n && r == 0; k++) {
			struct stat st;
			if (name_in(upper_names, nupper, v[k]) || name_in(seen, nseen, v[k]) || !lower_lookup(l, v[k], &st))
				continue;
			size_t back = path_push(d, v[k]);
			r = emit(d, "deleted", -1, v[k], &st);
			d->path[back] = '\0';
		}
		/* A later layer's name already reported is not reported again. */
		if (r == 0)
			r = names_merge(&seen, &nseen, v, n, d->err);
		else
			names_free(v, n);
	}
	names_free(seen, nseen);
	return r;
}

static int diff_dir(struct differ *d, const struct lowers *u, const struct lowers *l, bool hidden, int depth);

/* A mount point of the sandbox's configuration: the start made it in the layer if the image
 * lacked it, and what is below it in the layer the sandbox never sees. Mounts are not part of
 * the diff, their mount points neither. */
static bool mount_point(const struct differ *d)
{
	const struct capsule_config *cfg = d->cfg;
	const char *p = d->path;
	if (!strcmp(p, "/dev") || !strcmp(p, "/proc") || !strcmp(p, "/sys"))
		return true;
	for (size_t i = 0; i < cfg->nbinds; i++)
		if (!strcmp(p, cfg->binds[i].target))
			return true;
	for (size_t i = 0; i < cfg->ntmpfs; i++)
		if (!strcmp(p, cfg->tmpfs[i].target))
			return true;
	/* The network's own resolv.conf and hosts (src/shim/net.c, net_etc_trees). */
	return cfg->network == CAPSULE_NETWORK_FULL &&
	       (!strcmp(p, "/etc/resolv.conf") || (cfg->nallow && !strcmp(p, "/etc/hosts")));
}

/* NAME in the folders U of the layers compared (top first), over the lower folders L. The top
 * layer that has NAME decides what it is, as overlayfs does; OPAQUE is each folder's mark. */
static int diff_entry(struct differ *d, const struct lowers *u, const char *opaque, const struct lowers *l, bool hidden,
		      const char *name, int depth)
{
	struct stat st, lst;
	if (mount_point(d))
		return 0;
	size_t top = 0;
	while (top < u->n && fstatat(u->fd[top], name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno != ENOENT)
			return cap_err(d->err, errno, "diff: stat '%s'", d->path);
		top++;
	}
	if (top == u->n)
		return 0;
	int upper = u->fd[top];
	bool in_lower = lower_lookup(l, name, &lst);
	if (is_whiteout_dev(&st) || (opaque[top] == 'x' && is_xattr_whiteout(upper, name, &st)))
		return in_lower ? emit(d, "deleted", -1, name, &lst) : 0;
	if (!S_ISDIR(st.st_mode))
		return emit(d, in_lower ? "modified" : "added", upper, name, &st);
	int r = 0;
	bool lower_dir = in_lower && S_ISDIR(lst.st_mode);
	/* A folder that was there is not a change in itself, only what it holds. */
	if (!lower_dir && (r = emit(d, in_lower ? "modified" : "added", upper, name, &st)) < 0)
		return r;
	if (depth >= DIFF_MAX_DEPTH)
		return cap_err_plain(d->err, ELOOP, "folders nested deeper than %d levels at '%s'", DIFF_MAX_DEPTH, d->path);
	/* The folder in each compared layer down to one that hides the rest (and what is below). */
	struct lowers uc = { 0 }, lc = { 0 };
	bool closed = false;
	if ((r = lowers_child(u, top, name, &uc, &closed, d->err)) == 0 && lower_dir)
		r = lowers_child(l, 0, name, &lc, NULL, d->err);
	if (r == 0 && uc.n)
		r = diff_dir(d, &uc, &lc, hidden || closed, depth + 1);
	lowers_close(&uc);
	lowers_close(&lc);
	return r;
}

/* Folders U of the layers compared (top first: one for the sandbox's own layer or a copy of it),
 * at d->path, over the lower folders L; HIDDEN: nothing of L shows through (a folder above, or
 * this one, is opaque or hides a non-folder of a layer compared). */
static int diff_dir(struct differ *d, const struct lowers *u, const struct lowers *l, bool hidden, int depth)
{
	char opaque[CAPSULE_MAX_LAYERS + 2];
	char **names = NULL;
	size_t n = 0;
	int r = 0;
	for (size_t i = 0; i < u->n && i < sizeof(opaque) && r == 0; i++) {
		opaque[i] = opaque_mark(u->fd[i]);
		char **v;
		size_t nv;
		if ((r = dir_names(u->fd[i], &v, &nv, d->err)) < 0)
			break;
		/* Every layer's names once. */
		if ((r = names_merge(&names, &n, v, nv, d->err)) == 0 && n > DIFF_MAX_NAMES_PER_DIR)
			r = cap_err_plain(d->err, EFBIG, "a folder with more than %u entries", DIFF_MAX_NAMES_PER_DIR);
	}
	if (r == 0 && u->n)
		hidden = hidden || opaque[u->n - 1] == 'y';
	if (r == 0 && hidden && l->n)
		r = hidden_deletions(d, l, names, n);
	for (size_t i = 0; i < n && r == 0; i++) {
		size_t back = path_push(d, names[i]);
		r = diff_entry(d, u, opaque, l, hidden, names[i], depth);
		d->path[back] = '\0';
	}
	names_free(names, n);
	return r;
}

/* The read-only folders below the sandbox's layer, top first: its image's layers from the
 * last, then the host image's skeleton. */
static int open_lowers(const struct capsule_config *cfg, size_t nlower, struct lowers *l, capsule_error *err)
{
	l->n = 0;
	l->fd = calloc(nlower + 1, sizeof(int));
	if (!l->fd)
		return cap_err(err, ENOMEM, "diff");
	for (size_t i = nlower; i-- > 0;) {
		int fd = open(cfg->layers[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0)
			return cap_err(err, errno, "open image layer '%s'", cfg->layers[i]);
		l->fd[l->n++] = fd;
		if (opaque_mark(fd) == 'y')
			return 0;
	}
	if (cfg->base_none)
		return 0;
	uid_t ub;
	gid_t gb;
	uint32_t count;
	bool rootless;
	home_id_map(cfg->id_slot, &ub, &gb, &count, &rootless);
	_cleanup_free_ char *host = NULL;
	/* Root's sandboxes share root's skeleton, idmapped (container/level.c); a user's has its own. */
	int r = image_host_lower(rootless ? ub : 0, rootless ? gb : 0, &host, err);
	if (r < 0)
		return r;
	int fd = open(host, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return cap_err(err, errno, "open the host image '%s'", host);
	l->fd[l->n++] = fd;
	return 0;
}

/* The layers compared, top first: LAYER (or the sandbox's own), then CFG's image layers down to
 * the NLOWER-th, down to one that is opaque (*CLOSED: nothing below shows through). */
static int open_compared(const struct capsule_config *cfg, int layer, size_t nlower, struct lowers *u, bool *closed,
			 capsule_error *err)
{
	u->n = 0;
	*closed = false;
	u->fd = calloc(cfg->nlayers - nlower + 1, sizeof(int));
	if (!u->fd)
		return cap_err(err, ENOMEM, "diff");
	int top = fcntl(layer, F_DUPFD_CLOEXEC, 3);
	if (top < 0)
		return cap_err(err, errno, "diff: dup");
	u->fd[u->n++] = top;
	for (size_t i = cfg->nlayers; !(*closed = opaque_mark(u->fd[u->n - 1]) == 'y') && i-- > nlower;) {
		int fd = open(cfg->layers[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0)
			return cap_err(err, errno, "open image layer '%s'", cfg->layers[i]);
		u->fd[u->n++] = fd;
	}
	return 0;
}

int sandbox_layers_diff_json(const struct capsule_config *cfg, int layer, size_t nlower, char **out_json,
			     capsule_error *err)
{
	*out_json = NULL;
	if (cfg->isolation == CAPSULE_ISOLATION_VM)
		return cap_err_plain(err, EOPNOTSUPP,
				     "diff of sandbox '%s': not available at the vm level (its root is one ext4 disk, "
				     "with no overlay layer of its own changes to read)",
				     cfg->name);
	if (nlower > cfg->nlayers)
		return cap_err_plain(err, EINVAL, "diff: %zu layers below, the sandbox has %zu", nlower, cfg->nlayers);
	_cleanup_close_ int run = -1, upper = -1;
	int r = 0;
	if (layer < 0 && ((r = run_dir_open(cfg->name, &run, err)) < 0 || (r = sandbox_upper_open(run, cfg, &upper, err)) < 0))
		return r;
	struct lowers l = { 0 }, u = { 0 };
	bool closed = false;
	struct differ *d = NULL;
	if ((r = open_lowers(cfg, nlower, &l, err)) < 0 ||
	    (r = open_compared(cfg, layer >= 0 ? layer : upper, nlower, &u, &closed, err)) < 0 ||
	    !(d = calloc(1, sizeof(*d)))) {
		lowers_close(&l);
		lowers_close(&u);
		return r < 0 ? r : cap_err(err, ENOMEM, "diff");
	}
	struct json_writer j;
	json_init(&j, false);
	d->cfg = cfg;
	d->j = &j;
	d->err = err;
	d->path[0] = '/';
	json_array_begin(&j);
	r = diff_dir(d, &u, &l, closed, 0);
	json_array_end(&j);
	lowers_close(&l);
	lowers_close(&u);
	free(d);
	if (r < 0) {
		json_free(&j);
		return cap_err_wrap(err, r, "diff of sandbox '%s'", cfg->name);
	}
	int e = 0;
	*out_json = json_steal(&j, &e);
	return *out_json ? 0 : cap_err(err, e ? -e : ENOMEM, "formatting the diff");
}

int sandbox_layer_diff_json(const struct capsule_config *cfg, int layer, char **out_json, capsule_error *err)
{
	return sandbox_layers_diff_json(cfg, layer, cfg->nlayers, out_json, err);
}

int capsule_sandbox_diff_json(capsule_sandbox *sb, char **out_json, capsule_error *err)
{
	if (!sb || !out_json)
		return cap_err_plain(err, EINVAL, "diff: no sandbox given");
	return sandbox_layer_diff_json(sandbox_config(sb), -1, out_json, err);
}
