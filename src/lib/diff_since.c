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
	 * deleted, added. */
	for (size_t i = 0, k = 0; i < a.n || k < b.n;) {
		int cmp = i >= a.n ? 1 : k >= b.n ? -1 : path_cmp(a.v[i].path, b.v[k].path);
		if (cmp < 0) {
			emit(&j, &a.v[i], a.v[i].kind);
			i++;
		} else if (cmp > 0) {
			emit(&j, &b.v[k], strcmp(b.v[k].kind, "deleted") ? "deleted" : "added");
			k++;
		} else {
			const struct change *x = &a.v[i], *y = &b.v[k];
			if (x->len != y->len || memcmp(x->text, y->text, x->len)) {
				const char *kind = !strcmp(x->kind, "deleted") ? "deleted" :
						   !strcmp(y->kind, "deleted") ? "added" : "modified";
				emit(&j, x, kind);
			}
			i++;
			k++;
		}
	}
	json_array_end(&j);
	changes_free(&b);
	changes_free(&a);
	int e = 0;
	*out_json = json_steal(&j, &e);
	return *out_json ? 0 : cap_err(err, e ? -e : ENOMEM, "formatting the diff");
}

int capsule_sandbox_diff_since_json(capsule_sandbox *sb, const char *checkpoint, char **out_json,
				    capsule_error *err)
{
	if (!sb || !out_json)
		return cap_err_plain(err, EINVAL, "diff: no sandbox given");
	*out_json = NULL;
	const struct capsule_config *cfg = sandbox_config(sb);
	if (cfg->isolation == CAPSULE_ISOLATION_VM)
		return sandbox_layer_diff_json(cfg, -1, out_json, err);
	_cleanup_close_ int run = -1, layer = -1;
	int r = run_dir_open(cfg->name, &run, err);
	if (r < 0 || (r = checkpoint_exists(run, checkpoint, err)) < 0)
		return r;
	char path[128];
	snprintf(path, sizeof(path), "checkpoints/%s/layer", checkpoint);
	layer = openat(run, path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (layer < 0)
		return cap_err(err, errno, "open checkpoint '%s'", checkpoint);
	_cleanup_free_ char *before = NULL, *after = NULL;
	if ((r = sandbox_layer_diff_json(cfg, layer, &before, err)) < 0 ||
	    (r = sandbox_layer_diff_json(cfg, -1, &after, err)) < 0)
		return r;
	return capsule_diff_json_since(before, after, out_json, err);
}
