/* Hot mounts (a running sandbox's shim does the work: src/shim/mounts.c and, for a container,
 * src/shim/container/hotmount.c) and the docker-style helpers that turn volumes dicts and -v
 * specs into configured binds. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "json.h"
#include "parse.h"
#include "util.h"

int capsule_mount(capsule_sandbox *sb, const char *host_path, const char *guest_path, unsigned flags,
		  char **handle_out, capsule_error *err)
{
	if (handle_out)
		*handle_out = NULL;
	if (!sb)
		return cap_err_plain(err, EINVAL, "mount: no sandbox given");
	if (!host_path || host_path[0] != '/')
		return cap_err_plain(err, EINVAL, "mount source '%s' is not an absolute host path",
				     host_path ? host_path : "");
	if (!guest_path || guest_path[0] != '/')
		return cap_err_plain(err, EINVAL, "mount target '%s' is not an absolute path", guest_path ? guest_path : "");
	if (flags & ~(CAPSULE_MOUNT_RO | CAPSULE_MOUNT_ALLOW_SENSITIVE))
		return cap_err_plain(err, EINVAL, "mount: unknown flags 0x%x", flags);
	if (strlen(host_path) > CAP_PATH_MAX || strlen(guest_path) > CAP_PATH_MAX)
		return cap_err_plain(err, ENAMETOOLONG, "mount: path longer than %d bytes", CAP_PATH_MAX);

	struct conn c;
	int r = conn_open(&c, capsule_sandbox_name(sb), err);
	if (r < 0)
		return r;
	struct cp_mount m = {
		.host_path = (char *)host_path,
		.guest_path = (char *)guest_path,
		.flags = ((flags & CAPSULE_MOUNT_RO) ? CP_MOUNT_RO : 0) |
			 ((flags & CAPSULE_MOUNT_ALLOW_SENSITIVE) ? CP_MOUNT_ALLOW_SENSITIVE : 0),
	};
	struct cp_request_ok ok = { 0 };
	if ((r = cp_mount_encode(&c.w, 1, &m)) < 0)
		r = cap_err(err, -r, "encoding a mount request");
	else
		r = shim_request(&c, &ok, err);
	conn_close(&c);
	if (r < 0)
		return r;
	if (!ok.handle) {
		cp_request_ok_free(&ok);
		return cap_err_plain(err, EPROTO, "the sandbox's answer to a mount request has no handle");
	}
	if (handle_out)
		*handle_out = steal_ptr(ok.handle);
	cp_request_ok_free(&ok);
	return 0;
}

int capsule_unmount(capsule_sandbox *sb, const char *guest_path_or_handle, capsule_error *err)
{
	if (!sb)
		return cap_err_plain(err, EINVAL, "unmount: no sandbox given");
	if (!guest_path_or_handle || !*guest_path_or_handle)
		return cap_err_plain(err, EINVAL, "unmount: no guest path or handle given");
	if (strlen(guest_path_or_handle) > CAP_PATH_MAX)
		return cap_err_plain(err, ENAMETOOLONG, "unmount: path longer than %d bytes", CAP_PATH_MAX);
	struct conn c;
	int r = conn_open(&c, capsule_sandbox_name(sb), err);
	if (r < 0)
		return r;
	struct cp_unmount m = { .target = (char *)guest_path_or_handle };
	if ((r = cp_unmount_encode(&c.w, 1, &m)) < 0)
		r = cap_err(err, -r, "encoding an unmount request");
	else
		r = shim_request(&c, NULL, err);
	conn_close(&c);
	return r;
}

int capsule_mounts_json(capsule_sandbox *sb, char **json_out, capsule_error *err)
{
	if (!json_out)
		return cap_err_plain(err, EINVAL, "mounts: no output given");
	*json_out = NULL;
	if (!sb)
		return cap_err_plain(err, EINVAL, "mounts: no sandbox given");
	return shim_json_request(capsule_sandbox_name(sb), CP_MOUNTS, json_out, err);
}

/* ---- docker-style configuration helpers ---- */

/* One bind from a docker-style source: a host path is checked as capsule_config_add_bind
 * does; anything else is a named volume. */
static int add_docker_mount(capsule_config *cfg, const char *source, const char *target, bool readonly,
			    capsule_error *err)
{
	if (source[0] != '/') {
		int r = validate_name(source, "volume name", NULL);
		if (r < 0)
			return cap_err_plain(err, EINVAL,
					     "mount source '%s' is neither an absolute host path nor a valid volume name",
					     source);
		return capsule_config_add_volume(cfg, source, target, readonly, err);
	}
	return capsule_config_add_bind(cfg, source, target, readonly, false, err);
}

/* Drop the binds past KEEP: a helper that fails half-way leaves the configuration as it was. */
static void binds_truncate(capsule_config *cfg, size_t keep)
{
	while (cfg->nbinds > keep) {
		cfg->nbinds--;
		struct bind_mount *b = &cfg->binds[cfg->nbinds];
		free(b->source);
		free(b->target);
		free(b->transform);
		free(b->transform_config);
		memset(b, 0, sizeof(*b));
	}
}

int capsule_config_add_mount_spec(capsule_config *cfg, const char *spec, capsule_error *err)
{
	if (!cfg)
		return cap_err_plain(err, EINVAL, "mount: no configuration given");
	struct mount_spec m;
	int r = parse_mount_spec(spec, &m, err);
	if (r < 0)
		return r;
	r = add_docker_mount(cfg, m.source, m.target, m.readonly, err);
	mount_spec_free(&m);
	return r;
}

struct volumes_walk {
	capsule_config *cfg;
	capsule_error *err;
	bool entry_failed; /* the error is an entry's, already in err */
};

static int add_volume_entry_checked(struct volumes_walk *w, const char *source, const char *value, size_t len)
{
	_cleanup_free_ char *bind = NULL, *mode = NULL;
	if (!*source)
		return cap_err_plain(w->err, EINVAL, "volumes: an entry has an empty host path");
	int r = json_get_string(value, len, "bind", &bind);
	if (r == -ENOENT)
		return cap_err_plain(w->err, EINVAL, "volumes: entry '%s' has no \"bind\" (the path inside the sandbox)",
				     source);
	if (r < 0)
		return cap_err_plain(w->err, EINVAL,
				     "volumes: entry '%s' must be an object {\"bind\": \"/guest\", \"mode\": \"ro\"|\"rw\"}",
				     source);
	r = json_get_string(value, len, "mode", &mode);
	if (r < 0 && r != -ENOENT)
		return cap_err_plain(w->err, EINVAL, "volumes: entry '%s': \"mode\" must be \"ro\" or \"rw\"", source);
	if (mode && strcmp(mode, "ro") && strcmp(mode, "rw"))
		return cap_err_plain(w->err, EINVAL, "volumes: entry '%s': invalid mode '%s' (use ro or rw)", source, mode);
	r = add_docker_mount(w->cfg, source, bind, mode && !strcmp(mode, "ro"), w->err);
	return r < 0 ? cap_err_wrap(w->err, r, "volumes") : 0;
}

static int add_volume_entry(const char *source, const char *value, size_t len, void *payload)
{
	struct volumes_walk *w = payload;
	int r = add_volume_entry_checked(w, source, value, len);
	if (r < 0)
		w->entry_failed = true;
	return r;
}

int capsule_config_add_volumes_json(capsule_config *cfg, const char *json, capsule_error *err)
{
	if (!cfg || !json)
		return cap_err_plain(err, EINVAL, "volumes: no configuration or JSON given");
	size_t keep = cfg->nbinds;
	struct volumes_walk w = { cfg, err, false };
	int r = json_object_each(json, strlen(json), CAPSULE_MAX_BINDS + 1, add_volume_entry, &w);
	if (r < 0) {
		binds_truncate(cfg, keep);
		if (w.entry_failed)
			return r;
		if (r == -EBADMSG)
			return cap_err_plain(err, EINVAL,
					     "volumes: not a JSON object of the form {\"/host\": {\"bind\": \"/guest\", \"mode\": \"ro\"}}");
		if (r == -E2BIG)
			return cap_err_plain(err, E2BIG, "volumes: too many entries (at most %d bind mounts)", CAPSULE_MAX_BINDS);
		return cap_err(err, -r, "volumes");
	}
	return 0;
}
