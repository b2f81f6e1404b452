/* The host's capsule configuration, capsule.json: defaults that whoever runs capsule (for
 * root, the host's administrator) sets for every sandbox made without its own value. Found at
 * $CAPSULE_CONFIG when that is set, else /etc/capsule/capsule.json for root and
 * $XDG_CONFIG_HOME/capsule/capsule.json (~/.config/...) for others, as registries.json is.
 * No file: capsule's own defaults. A key capsule does not know, or a bad value, fails the
 * create with the file and the key named: a typo must not silently drop a limit. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "home.h"
#include "json.h"
#include "parse.h"
#include "sandbox_config.h"
#include "util.h"

#define HOST_CONFIG_MAX_BYTES (64u << 10)

struct host_config {
	uint64_t container_disk_bytes;
	uint64_t vm_disk_bytes;
};

struct host_config_walk {
	const char *path;
	struct host_config *hc;
	capsule_error *err;
};

static int host_config_path(char *out, size_t size)
{
	const char *env = getenv("CAPSULE_CONFIG");
	if (env && *env) {
		snprintf(out, size, "%s", env);
		return 0;
	}
	if (geteuid() == 0) {
		snprintf(out, size, "/etc/capsule/capsule.json");
		return 0;
	}
	return user_config_path("capsule.json", out, size);
}

/* A disk size, as --disk-size takes it, through the same parser, so its bounds are the flag's. */
static int disk_size_member(const struct host_config_walk *w, const char *key, const char *value, size_t len,
			    uint64_t *out)
{
	_cleanup_free_ char *size = NULL;
	capsule_error why = { 0 };
	int r = json_string_value(value, len, &size);
	if (r == -ENOMEM)
		return cap_err(w->err, ENOMEM, "capsule configuration '%s'", w->path);
	if (r < 0)
		return cap_err_plain(w->err, EINVAL, "capsule configuration '%s': key '%s': not a string like \"4G\"", w->path,
				     key);
	if (config_disk_size_parse(size, out, &why) < 0)
		return cap_err_plain(w->err, EINVAL, "capsule configuration '%s': key '%s': %s", w->path, key, why.message);
	return 0;
}

static int host_config_member(const char *name, const char *value, size_t len, void *payload)
{
	struct host_config_walk *w = payload;
	if (!strcmp(name, "container_disk_size"))
		return disk_size_member(w, name, value, len, &w->hc->container_disk_bytes);
	if (!strcmp(name, "vm_disk_size"))
		return disk_size_member(w, name, value, len, &w->hc->vm_disk_bytes);
	return cap_err_plain(w->err, EINVAL, "capsule configuration '%s': unknown key '%s' (see docs/config.md)", w->path,
			     name);
}

static int host_config_load(struct host_config *hc, capsule_error *err)
{
	memset(hc, 0, sizeof(*hc));
	char path[4096];
	if (host_config_path(path, sizeof(path)) < 0)
		return 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : cap_err(err, errno, "capsule configuration '%s'", path);
	_cleanup_free_ char *text = NULL;
	size_t len;
	int r = read_fd_all(fd, HOST_CONFIG_MAX_BYTES, &text, &len);
	close(fd);
	if (r < 0)
		return cap_err(err, -r, "capsule configuration '%s'", path);
	capsule_error inner = { 0 };
	struct host_config_walk w = { path, hc, &inner };
	r = json_object_each(text, len, 64, host_config_member, &w);
	if (r < 0 && inner.code)
		return cap_err_plain(err, inner.code, "%s", inner.message);
	if (r < 0)
		return cap_err_plain(err, EINVAL, "capsule configuration '%s' is not a JSON object (see docs/config.md)", path);
	return 0;
}

int host_config_apply(struct capsule_config *cfg, capsule_error *err)
{
	struct host_config hc;
	int r = host_config_load(&hc, err);
	if (r < 0)
		return r;
	if (!cfg->disk_bytes)
		cfg->disk_bytes = cfg->isolation == CAPSULE_ISOLATION_VM ? hc.vm_disk_bytes : hc.container_disk_bytes;
	return 0;
}
