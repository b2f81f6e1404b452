/* What changed between two diffs of one sandbox (capsule_diff_json_since): the lists of
 * capsule_sandbox_diff_json before and after a command (exec --diff), or of a checkpoint's
 * layer and the sandbox's own now (capsule_sandbox_diff_since_json). Both cost what changed
 * since the sandbox was made, not the tree. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "json.h"
#include "save.h"
#include "util.h"

/* capsule_sandbox_diff_json's bound, and its objects' fields. */
#define SINCE_MAX_CHANGES 1000000u

struct change {
	char *path;
	char *kind;
	const char *text;
	size_t len;
};

struct changes {
	struct change *v;
	size_t n, cap;
};

static void changes_free(struct changes *c)
{
	for (size_t i = 0; i < c->n; i++) {
		free(c->v[i].path);
		free(c->v[i].kind);
	}
	free(c->v);
	memset(c, 0, sizeof(*c));
}

static int add_change(const char *name, const char *value, size_t len, void *payload)
{
	(void)name;
	struct changes *c = payload;
	char *path = NULL, *kind = NULL;
	if (json_get_string(value, len, "path", &path) < 0 || json_get_string(value, len, "kind", &kind) < 0) {
		free(path);
		return -EBADMSG;
	}
	if (c->n == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 64;
		struct change *v = realloc(c->v, cap * sizeof(*v));
		if (!v) {
			free(path);
			free(kind);
			return -ENOMEM;
		}
		c->v = v;
		c->cap = cap;
	}
	c->v[c->n++] = (struct change){ .path = path, .kind = kind, .text = value, .len = len };
	return 0;
}

/* The walk's order: a folder before what it holds, each folder's names by strcmp ('/' ends a
 * name, so it sorts before any byte of a longer one). */
static int path_cmp(const char *a, const char *b)
{
	for (;; a++, b++) {
		unsigned char x = *a == '/' ? 1 : (unsigned char)*a, y = *b == '/' ? 1 : (unsigned char)*b;
		if (x != y || !x)
			return (int)x - (int)y;
	}
}

static int by_path(const void *a, const void *b)
{
	return path_cmp(((const struct change *)a)->path, ((const struct change *)b)->path);
}

static int changes_parse(const char *json, const char *what, struct changes *c, capsule_error *err)
{
	memset(c, 0, sizeof(*c));
	int r = json ? json_array_each(json, strlen(json), SINCE_MAX_CHANGES, add_change, c) : -EINVAL;
	if (r < 0) {
		changes_free(c);
		return cap_err_plain(err, r == -ENOMEM ? ENOMEM : EINVAL, "diff: %s is not a diff's JSON", what);
	}
	if (c->n)
		qsort(c->v, c->n, sizeof(*c->v), by_path);
	return 0;
}

/* CH's object again, as KIND, its fields in capsule_sandbox_diff_json's order. */
static void emit(struct json_writer *j, const struct change *ch, const char *kind)
{
	json_object_begin(j);
	json_kv_string(j, "path", ch->path);
	json_kv_string(j, "kind", kind);
	static const char *const fields[] = { "type", "size", "mode", "mtime_ns", "link_target" };
	for (size_t i = 0; i < ARRAY_SIZE(fields) && (i == 0 || strcmp(kind, "deleted")); i++) {
		_cleanup_free_ char *text = NULL;
		int64_t v;
		if (json_get_string(ch->text, ch->len, fields[i], &text) == 0)
			json_kv_string(j, fields[i], text);
		else if (json_get_int(ch->text, ch->len, fields[i], &v) == 0)
			json_kv_int(j, fields[i], v);
	}
	json_object_end(j);
}

int capsule_diff_json_since(const char *before_json, const char *after_json, char **out_json, capsule_error *err)
{
	if (!out_json)
		return cap_err_plain(err, EINVAL, "diff: nowhere to put the result");
	*out_json = NULL;
	struct changes b, a;
	int r = changes_parse(before_json, "the diff before", &b, err);
	if (r < 0)
		return r;
	if ((r = changes_parse(after_json, "the diff after", &a, err)) < 0) {
		changes_free(&b);
		return r;
	}
	struct json_writer j;
	json_init(&j, false);
	json_array_begin(&j);
	/* A path only after: as it is after. Only before: the change was taken back out of the
	 * layer (a file added, removed again: deleted; a deletion undone: there again, as the
	 * image had it). In both, changed again: modified, or deleted, or, where it had been
	 * deleted, added. A deleted folder is one entry, as in a diff: what it held is not listed again. */
	const char *gone = NULL;
	size_t gone_len = 0;
	for (size_t i = 0, k = 0; i < a.n || k < b.n;) {
		int cmp = i >= a.n ? 1 : k >= b.n ? -1 : path_cmp(a.v[i].path, b.v[k].path);
		const struct change *x = cmp <= 0 ? &a.v[i++] : NULL, *y = cmp >= 0 ? &b.v[k++] : NULL;
		const char *kind;
		if (!y)
			kind = x->kind;
		else if (!x)
			kind = strcmp(y->kind, "deleted") ? "deleted" : "added";
		else if (x->len != y->len || memcmp(x->text, y->text, x->len))
			kind = !strcmp(x->kind, "deleted") ? "deleted" : !strcmp(y->kind, "deleted") ? "added" : "modified";
		else
			continue;
		if (!x && gone && !strncmp(y->path, gone, gone_len) && y->path[gone_len] == '/')
			continue;
		emit(&j, x ? x : y, kind);
		if (!strcmp(kind, "deleted"))
			gone = (x ? x : y)->path, gone_len = strlen(gone);
	}
	json_array_end(&j);
	changes_free(&b);
	changes_free(&a);
	int e = 0;
	*out_json = json_steal(&j, &e);
	return *out_json ? 0 : cap_err(err, e ? -e : ENOMEM, "formatting the diff");
}

/* Between the diffs of two layers over the sandbox's own lowers: LAYER (a checkpoint's or a
 * save's copy of such a layer) and the sandbox's own now. */
static int diff_layers_since(const struct capsule_config *cfg, int layer, char **out_json, capsule_error *err)
{
	_cleanup_free_ char *before = NULL, *after = NULL;
	int r;
	if ((r = sandbox_layer_diff_json(cfg, layer, &before, err)) < 0 ||
	    (r = sandbox_layer_diff_json(cfg, -1, &after, err)) < 0)
		return r;
	return capsule_diff_json_since(before, after, out_json, err);
}

static int diff_since_checkpoint(const struct capsule_config *cfg, const char *checkpoint, char **out_json,
				 capsule_error *err)
{
	_cleanup_close_ int run = -1, layer = -1;
	int r = run_dir_open(cfg->name, &run, err);
	if (r < 0 || (r = checkpoint_exists(run, checkpoint, err)) < 0)
		return r;
	char path[128];
	snprintf(path, sizeof(path), "checkpoints/%s/layer", checkpoint);
	layer = openat(run, path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (layer < 0)
		return cap_err(err, errno, "open checkpoint '%s'", checkpoint);
	return diff_layers_since(cfg, layer, out_json, err);
}

/* A save's filesystem is the layers its manifest lists with its own layer on top. Two cases
 * cost what changed. A save over the same lowers as the sandbox (taken from it, or from a
 * sandbox of the same image or save) is compared layer with layer, as a checkpoint is. A save
 * among the sandbox's lowers (the one it started from, or one that save, or a save of its, was
 * started from) is the filesystem of the lowers up to it: what changed since is the layers
 * above it, merged, with the sandbox's own on top, over those. Any other save shares no layer
 * to compare from: a whole-tree comparison is what diff exists to avoid, so it is refused,
 * naming why. */
static int diff_since_save(const struct capsule_config *cfg, const char *save, char **out_json, capsule_error *err)
{
	struct save_manifest m;
	_cleanup_close_ int layer = -1;
	int r = save_layer_open(save, &m, &layer, err);
	if (r < 0)
		return r;
	_cleanup_free_ char *own = save_layer_path(save);
	if (!own) {
		save_manifest_free(&m);
		return cap_err(err, ENOMEM, "diff");
	}
	/* Its layers are the sandbox's first NLAYERS: as many as the sandbox's (same lowers), or
	 * with its own next (below). */
	bool prefix = (!strcmp(m.base, "none")) == cfg->base_none && m.nlayers <= cfg->nlayers;
	for (size_t i = 0; prefix && i < m.nlayers; i++)
		prefix = !strcmp(m.layers[i], cfg->layers[i]);
	size_t n = m.nlayers;
	save_manifest_free(&m);
	if (prefix && n == cfg->nlayers)
		return diff_layers_since(cfg, layer, out_json, err);
	if (prefix && !strcmp(cfg->layers[n], own))
		return sandbox_layers_diff_json(cfg, -1, n + 1, out_json, err);
	return cap_err_plain(err, EINVAL,
			     "diff of sandbox '%s' since save '%s': that save is not on the sandbox's image or save "
			     "(diff compares layers the two share, not whole trees)",
			     cfg->name, save);
}

int capsule_sandbox_diff_since_json(capsule_sandbox *sb, const char *since, char **out_json, capsule_error *err)
{
	if (!sb || !out_json)
		return cap_err_plain(err, EINVAL, "diff: no sandbox given");
	*out_json = NULL;
	const struct capsule_config *cfg = sandbox_config(sb);
	if (cfg->isolation == CAPSULE_ISOLATION_VM)
		return sandbox_layer_diff_json(cfg, -1, out_json, err);
	if (!since || !since[0])
		return cap_err_plain(err, EINVAL, "diff: 'since' is empty: give a checkpoint's or a save's name");
	if (!strncmp(since, "save:", 5))
		return diff_since_save(cfg, since + 5, out_json, err);
	if (!strncmp(since, "checkpoint:", 11))
		return diff_since_checkpoint(cfg, since + 11, out_json, err);
	/* A bare name: the sandbox's own checkpoint first (its names are the sandbox's alone),
	 * then a save. */
	_cleanup_close_ int run = -1;
	int r = run_dir_open(cfg->name, &run, err);
	if (r < 0)
		return r;
	if (checkpoint_exists(run, since, NULL) == 0)
		return diff_since_checkpoint(cfg, since, out_json, err);
	capsule_error e = { 0 };
	r = diff_since_save(cfg, since, out_json, &e);
	if (r == -ENOENT && validate_name(since, "name", NULL) == 0)
		return cap_err_plain(err, ENOENT, "no checkpoint or save named '%s'", since);
	if (r < 0 && err)
		*err = e;
	return r;
}
