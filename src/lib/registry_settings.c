/* The registry client's settings, registries.json (docs/cli.md, Registry configuration):
 * credentials, mirrors and insecure hosts for one registry, and the limits of every pull.
 * Also read from ~/.docker/config.json for credentials alone. */
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "home.h"
#include "image.h"
#include "json.h"
#include "util.h"

void registry_settings_free(struct registry_settings *s)
{
	free(s->username);
	free(s->password);
	image_strv_free(s->mirrors);
	memset(s, 0, sizeof(*s));
}

static int settings_path(char *out, size_t size, bool *docker_only)
{
	const char *env = getenv("CAPSULE_REGISTRY_CONFIG");
	*docker_only = false;
	if (env && *env) {
		snprintf(out, size, "%s", env);
		return 0;
	}
	if (user_config_path("registries.json", out, size) < 0)
		return -ENOENT;
	if (access(out, R_OK) == 0)
		return 0;
	/* What docker login wrote is what users already have. */
	const char *home = getenv("HOME");
	if (!home || home[0] != '/')
		return -ENOENT;
	snprintf(out, size, "%s/.docker/config.json", home);
	*docker_only = true;
	return 0;
}

static bool auth_key_matches(const char *key, const char *registry)
{
	if (!strcmp(key, registry))
		return true;
	const char *k = key;
	if (!strncmp(k, "https://", 8))
		k += 8;
	else if (!strncmp(k, "http://", 7))
		k += 7;
	size_t n = strlen(registry);
	if (!strncmp(k, registry, n) && (k[n] == '\0' || k[n] == '/'))
		return true;
	return !strcmp(registry, "docker.io") && strstr(key, "index.docker.io");
}

struct settings_walk {
	const char *registry;
	struct registry_settings *s;
	bool docker_only;      /* docker's config.json: only its auths are ours to read */
	const char *bad_limit; /* the "limits" member that is not a positive whole number */
};

static int auth_member(const char *name, const char *value, size_t len, void *payload)
{
	struct settings_walk *w = payload;
	if (!w->registry || w->s->username || !auth_key_matches(name, w->registry) || !len || value[0] != '{')
		return 0;
	_cleanup_free_ char *auth = NULL;
	if (json_get_string(value, len, "auth", &auth) == 0) {
		size_t n = strlen(auth);
		_cleanup_free_ unsigned char *dec = malloc(n + 4);
		if (!dec)
			return -ENOMEM;
		int dl = EVP_DecodeBlock(dec, (const unsigned char *)auth, (int)n);
		if (dl < 0)
			return -EBADMSG;
		while (dl > 0 && n > 0 && auth[n - 1] == '=') {
			dl--;
			n--;
		}
		dec[dl] = '\0';
		char *colon = strchr((char *)dec, ':');
		if (!colon)
			return -EBADMSG;
		*colon = '\0';
		w->s->username = strdup((char *)dec);
		w->s->password = strdup(colon + 1);
	} else {
		char *u = NULL, *p = NULL;
		if (json_get_string(value, len, "username", &u) < 0 || json_get_string(value, len, "password", &p) < 0) {
			free(u);
			free(p);
			return 0;
		}
		w->s->username = u;
		w->s->password = p;
	}
	return w->s->username && w->s->password ? 0 : -ENOMEM;
}

static int mirror_member(const char *name, const char *value, size_t len, void *payload)
{
	struct settings_walk *w = payload;
	if (!w->registry || strcmp(name, w->registry) || w->s->mirrors)
		return 0;
	return image_json_strv(value, len, &w->s->mirrors);
}

static int insecure_element(const char *name, const char *value, size_t len, void *payload)
{
	struct settings_walk *w = payload;
	if (!w->registry)
		return 0;
	size_t n = strlen(w->registry);
	if (len == n + 2 && value[0] == '"' && !memcmp(value + 1, w->registry, n))
		w->s->insecure = true;
	return 0;
}

static int limits_member(const char *name, const char *value, size_t len, void *payload)
{
	static const struct {
		const char *name;
		size_t offset;
	} fields[] = {
		{ "pull_seconds", offsetof(struct image_limits, pull_seconds) },
		{ "transfer_seconds", offsetof(struct image_limits, transfer_seconds) },
		{ "stall_seconds", offsetof(struct image_limits, stall_seconds) },
		{ "layer_bytes", offsetof(struct image_limits, layer_bytes) },
		{ "layer_entries", offsetof(struct image_limits, layer_entries) },
		{ "store_bytes", offsetof(struct image_limits, store_bytes) },
	};
	struct settings_walk *w = payload;
	for (size_t i = 0; i < ARRAY_SIZE(fields); i++) {
		if (strcmp(name, fields[i].name))
			continue;
		char digits[24];
		unsigned long long v = 0;
		if (len < sizeof(digits) && strspn(value, "0123456789") >= len) {
			memcpy(digits, value, len);
			digits[len] = '\0';
			errno = 0;
			v = strtoull(digits, NULL, 10);
		}
		if (!v || errno) {
			w->bad_limit = fields[i].name;
			return -EINVAL;
		}
		*(uint64_t *)((char *)&w->s->limits + fields[i].offset) = v;
	}
	return 0;
}

static int settings_member(const char *name, const char *value, size_t len, void *payload)
{
	struct settings_walk *w = payload;
	if (!strcmp(name, "limits") && !w->docker_only && len && value[0] == '{')
		return json_object_each(value, len, 64, limits_member, w);
	if (!strcmp(name, "auths") && len && value[0] == '{')
		return json_object_each(value, len, 1024, auth_member, w);
	if (!strcmp(name, "mirrors") && len && value[0] == '{')
		return json_object_each(value, len, 1024, mirror_member, w);
	if (!strcmp(name, "insecure") && len && value[0] == '[')
		return json_array_each(value, len, 1024, insecure_element, w);
	return 0;
}

int registry_settings_load(const char *registry, struct registry_settings *out, capsule_error *err)
{
	memset(out, 0, sizeof(*out));
	out->limits = (struct image_limits)IMAGE_LIMITS_DEFAULT;
	char path[4096];
	bool docker_only;
	if (settings_path(path, sizeof(path), &docker_only) < 0)
		return 0;
	_cleanup_free_ char *text = NULL;
	size_t len;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : cap_err(err, errno, "registry configuration '%s'", path);
	int r = read_fd_all(fd, 1u << 20, &text, &len);
	close(fd);
	if (r < 0)
		return cap_err(err, -r, "registry configuration '%s'", path);
	struct settings_walk w = { registry, out, docker_only, NULL };
	r = json_object_each(text, len, 1024, settings_member, &w);
	if (docker_only) {
		image_strv_free(out->mirrors);
		out->mirrors = NULL;
		out->insecure = false;
	}
	if (r < 0) {
		registry_settings_free(out);
		if (w.bad_limit)
			return cap_err_plain(err, EINVAL, "registry configuration '%s': limits '%s' must be a positive whole "
					     "number", path, w.bad_limit);
		return cap_err_plain(err, EINVAL, "registry configuration '%s' is malformed (see docs/cli.md)", path);
	}
	return 0;
}

int image_limits_load(struct image_limits *out, capsule_error *err)
{
	struct registry_settings s;
	int r = registry_settings_load(NULL, &s, err);
	if (r == 0)
		*out = s.limits;
	registry_settings_free(&s);
	return r;
}
