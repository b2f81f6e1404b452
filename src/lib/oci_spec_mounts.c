/* config.json's root and mounts: the image's root folder and the binds, tmpfs and mount
 * options a container asks for, checked as paths here rather than trusted later. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "internal.h"
#include "json.h"
#include "oci_spec.h"
#include "oci_spec_parse.h"
#include "proc_masks.h"
#include "util.h"

static int bundle_path(const char *bundle, const char *path, char *out, size_t size, const char *where,
		       capsule_error *err)
{
	int n = path[0] == '/' ? snprintf(out, size, "%s", path) : snprintf(out, size, "%s/%s", bundle, path);
	if (n < 0 || (size_t)n >= size)
		return oci_bad(err, where, "path too long");
	return 0;
}

int oci_parse_root(struct capsule_oci_spec *spec, const char *v, size_t n, const char *bundle, capsule_error *err)
{
	if (n == 0 || v[0] != '{')
		return oci_bad(err, "root", "not an object");
	_cleanup_free_ char *path = NULL;
	if (json_get_string(v, n, "path", &path) < 0 || !path[0])
		return oci_bad(err, "root.path", "missing");
	bool ro = false;
	int r = json_get_bool(v, n, "readonly", &ro);
	if (r < 0 && r != -ENOENT)
		return oci_bad(err, "root.readonly", "not a boolean");
	char full[PATH_MAX];
	if ((r = bundle_path(bundle, path, full, sizeof(full), "root.path", err)) < 0)
		return r;
	_cleanup_free_ char *real = realpath(full, NULL);
	if (!real)
		return cap_err(err, errno, "config.json: root.path '%s'", full);
	struct capsule_config *cfg = spec->cfg;
	cfg->base_none = true;
	/* A read-only layer for now: at the container level it becomes the root itself (the
	 * document's end, where the isolation is known). */
	cfg->rootfs_readonly = ro;
	return config_add_layer(cfg, real, err);
}

/* The mounts every container has, which capsule makes itself with its own options (docs/oci.md):
 * a spec may list them (runtime-tools, podman and containerd all do), with the type capsule
 * gives them. */
static const struct {
	const char *destination, *type;
} own_mounts[] = {
	{ "/proc", "proc" },	     { "/dev", "tmpfs" },	   { "/dev/pts", "devpts" },
	{ "/dev/shm", "tmpfs" },     { "/dev/mqueue", "mqueue" }, { "/sys", "sysfs" },
	{ "/sys/fs/cgroup", "cgroup" }, { "/sys/fs/cgroup", "cgroup2" },
};

struct mount_walk {
	struct capsule_oci_spec *spec;
	capsule_error *err;
	const char *bundle;
	size_t n;
	/* One mount's options. */
	bool bind, ro;
	uint64_t size;
	uint32_t mode;
	char attrs[96]; /* "noexec+strictatime+rshared" */
	struct joined attr_targets;
	char order[CAPSULE_MAX_BINDS + CAPSULE_MAX_TMPFS + 1]; /* config's mount_order */
	size_t norder;
	const char *type;
	char where[48];
};

static int mount_option(const char *name, const char *v, size_t n, void *payload)
{
	struct mount_walk *w = payload;
	_cleanup_free_ char *o = NULL;
	int r = oci_value_string(v, n, w->where, &o, w->err);
	if (r < 0)
		return r;
	bool tmpfs = !strcmp(w->type, "tmpfs");
	if (!strcmp(o, "ro") || !strcmp(o, "rro")) {
		w->ro = true;
	} else if (!strcmp(o, "rw") || !strcmp(o, "rrw")) {
		w->ro = false;
	} else if (!strcmp(o, "bind") || !strcmp(o, "rbind")) {
		w->bind = true;
	} else if (!strcmp(o, "noexec") || !strcmp(o, "strictatime") || !strcmp(o, "noatime") ||
		   !strcmp(o, "nodiratime") || !strcmp(o, "shared") || !strcmp(o, "rshared") ||
		   !strcmp(o, "unbindable") || !strcmp(o, "runbindable")) {
		/* Propagation within the sandbox's own mount namespace: its mounts are made private
		 * first, so a shared one is a peer group of the sandbox's alone. */
		size_t l = strlen(w->attrs);
		if (!strstr(w->attrs, o) && l + strlen(o) + 2 < sizeof(w->attrs))
			snprintf(w->attrs + l, sizeof(w->attrs) - l, "%s%s", l ? "+" : "", o);
	} else if (!strcmp(o, "exec") || !strcmp(o, "relatime")) {
		/* what capsule's mounts are anyway */
	} else if (!strcmp(o, "nosuid") || !strcmp(o, "nodev") || !strcmp(o, "private") || !strcmp(o, "rprivate") ||
		   !strcmp(o, "slave") || !strcmp(o, "rslave")) {
		/* Every mount capsule makes is nosuid, nodev and private. */
	} else if (!tmpfs && (!strncmp(o, "size=", 5) || !strncmp(o, "mode=", 5))) {
		/* A file system's data options on a bind: mount(2) ignores them for a bind, and
		 * runc passes them to it (docs/oci.md says so). */
	} else if (tmpfs && !strncmp(o, "size=", 5)) {
		if (capsule_parse_size(o + 5, &w->size, w->err) < 0)
			return cap_err_plain(w->err, EINVAL, "config.json: %s: bad size '%.32s'", w->where, o + 5);
	} else if (tmpfs && !strncmp(o, "mode=", 5)) {
		char *end;
		unsigned long m = strtoul(o + 5, &end, 8);
		if (*end || end == o + 5 || m > 07777)
			return cap_err_plain(w->err, EINVAL, "config.json: %s: bad mode '%.32s'", w->where, o + 5);
		w->mode = (uint32_t)m;
	} else {
		return cap_err_plain(w->err, EOPNOTSUPP, "config.json: %s: mount option '%.64s' is not supported by capsule",
				     w->where, o);
	}
	return 0;
}

static int mount_element(const char *name, const char *v, size_t n, void *payload)
{
	struct mount_walk *w = payload;
	capsule_error *err = w->err;
	snprintf(w->where, sizeof(w->where), "mounts[%zu]", w->n++);
	if (n == 0 || v[0] != '{')
		return oci_bad(err, w->where, "not an object");
	_cleanup_free_ char *dest = NULL, *type = NULL, *source = NULL;
	if (json_get_string(v, n, "destination", &dest) < 0 || dest[0] != '/')
		return oci_bad(err, w->where, "destination is not an absolute path");
	int r = json_get_string(v, n, "type", &type);
	if (r < 0 && r != -ENOENT)
		return oci_bad(err, w->where, "type is not a string");
	r = json_get_string(v, n, "source", &source);
	if (r < 0 && r != -ENOENT)
		return oci_bad(err, w->where, "source is not a string");
	w->type = type ? type : "";
	w->bind = !strcmp(w->type, "bind");
	/* capsule's own mounts come with capsule's options, whatever the spec's say. */
	for (size_t i = 0; i < ARRAY_SIZE(own_mounts) && !w->bind; i++)
		if (!strcmp(dest, own_mounts[i].destination) && !strcmp(w->type, own_mounts[i].type))
			return 0;
	w->ro = false;
	w->attrs[0] = 0;
	w->size = 0;
	w->mode = 0;
	const char *ov;
	size_t on;
	if (json_get_member(v, n, "options", &ov, &on) == 0 && !oci_is_null(ov, on)) {
		if ((r = oci_walk_json(true, ov, on, 64, mount_option, w, w->where, err)) < 0)
			return r;
	}
	const char *mv;
	size_t mn;
	if ((json_get_member(v, n, "uidMappings", &mv, &mn) == 0 && !oci_is_empty(mv, mn)) ||
	    (json_get_member(v, n, "gidMappings", &mv, &mn) == 0 && !oci_is_empty(mv, mn)))
		return oci_unsupported(err, w->where, "idmapped mounts are capsule's own (the sandbox's root owns them)");
	capsule_config *cfg = w->spec->cfg;
	if (w->bind) {
		if (!source || !source[0])
			return oci_bad(err, w->where, "a bind mount without a source");
		char full[PATH_MAX];
		if ((r = bundle_path(w->bundle, source, full, sizeof(full), w->where, err)) < 0)
			return r;
		/* The bundle's author chooses host paths, as with runc: nothing is sensitive to it. */
		if ((r = capsule_config_add_bind(cfg, full, dest, w->ro, true, err)) < 0)
			return r;
	} else if (!strcmp(w->type, "tmpfs")) {
		if (w->ro)
			return oci_unsupported(err, w->where, "a read-only tmpfs");
		if ((r = capsule_config_add_tmpfs(cfg, dest, w->size, w->mode, err)) < 0)
			return r;
	} else {
		return cap_err_plain(err, EOPNOTSUPP,
				     "config.json: %s: a mount of type '%.32s' at '%.128s' is not supported by capsule "
				     "(bind and tmpfs are)", w->where, w->type, dest);
	}
	if (w->norder + 1 < sizeof(w->order))
		w->order[w->norder++] = w->bind ? 'b' : 't';
	/* The target as the configuration normalized it (the last mount added). */
	const char *target = w->bind ? cfg->binds[cfg->nbinds - 1].target : cfg->tmpfs[cfg->ntmpfs - 1].target;
	if (!w->attrs[0])
		return 0;
	if (strpbrk(target, ",="))
		return oci_unsupported(err, w->where, "mount options on a path that holds ',' or '='");
	char value[sizeof(w->attrs) + 1];
	snprintf(value, sizeof(value), "=%s", w->attrs);
	return oci_join(&w->attr_targets, target, value, w->where, err);
}

int oci_parse_mounts(struct capsule_oci_spec *spec, const char *v, size_t n, const char *bundle,
			capsule_error *err)
{
	if (oci_is_null(v, n))
		return 0;
	struct mount_walk w = { .spec = spec, .err = err, .bundle = bundle };
	int r = oci_walk_json(true, v, n, CAPSULE_MAX_BINDS + CAPSULE_MAX_TMPFS + ARRAY_SIZE(own_mounts), mount_element, &w,
			  "mounts", err);
	if (r < 0) {
		free(w.attr_targets.out);
		return r;
	}
	free(spec->cfg->mount_attrs);
	spec->cfg->mount_attrs = w.attr_targets.out;
	/* Said whenever there is a bind: the container level then also lists them in this order
	 * (container.c, reclone_in_place). */
	free(spec->cfg->mount_order);
	spec->cfg->mount_order = NULL;
	if (strchr(w.order, 'b') && !(spec->cfg->mount_order = strdup(w.order)))
		return cap_err(err, ENOMEM, "config.json: mounts");
	return 0;
}
