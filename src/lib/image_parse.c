/* Pure parsers of the image world: references, WWW-Authenticate challenges, manifests,
 * indexes and image configs. No I/O here: everything is fuzzed (tests/fuzz/fuzz_image.c). */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image.h"
#include "json.h"
#include "util.h"

bool image_digest_valid(const char *d)
{
	if (!d || strncmp(d, "sha256:", 7) != 0 || strlen(d) != IMAGE_DIGEST_LEN)
		return false;
	for (const char *p = d + 7; *p; p++)
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
			return false;
	return true;
}

static bool is_lower_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* The distribution grammar: lowercase alphanumeric runs joined by one separator: '.', '_',
 * "__", or a run of '-'. */
static bool ref_component_ok(const char *s, size_t n)
{
	if (n == 0 || !is_lower_alnum(s[0]) || !is_lower_alnum(s[n - 1]))
		return false;
	for (size_t i = 1; i < n;) {
		if (is_lower_alnum(s[i])) {
			i++;
			continue;
		}
		size_t j = i;
		while (j < n && !is_lower_alnum(s[j]))
			j++;
		size_t run = j - i;
		bool ok = (run == 1 && (s[i] == '.' || s[i] == '_' || s[i] == '-')) ||
			  (run == 2 && s[i] == '_' && s[i + 1] == '_') || strspn(s + i, "-") >= run;
		if (!ok)
			return false;
		i = j;
	}
	return true;
}

/* Printable ASCII only: what references and media types are made of, and what can be quoted
 * in a one-line message as it is. */
static bool printable_ascii(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f)
			return false;
	return true;
}

int image_ref_parse(const char *text, struct image_ref *out, capsule_error *err)
{
	memset(out, 0, sizeof(*out));
	size_t n = text ? strlen(text) : 0;
	if (n && !printable_ascii(text))
		return cap_err_plain(err, EINVAL, "invalid image reference: it has a control or non-ASCII character");
	if (n == 0 || n > 500)
		return cap_err_plain(err, EINVAL, "invalid image reference '%.64s'", text ? text : "");
	char buf[512];
	memcpy(buf, text, n + 1);
	char *at = strchr(buf, '@');
	if (at) {
		*at = '\0';
		if (!image_digest_valid(at + 1))
			return cap_err_plain(err, EINVAL, "invalid image reference '%s': bad digest", text);
		snprintf(out->digest, sizeof(out->digest), "%s", at + 1);
	}
	char *rest = buf;
	char *slash = strchr(buf, '/');
	if (slash && (memchr(buf, '.', slash - buf) || memchr(buf, ':', slash - buf) ||
		      (slash - buf == 9 && !strncmp(buf, "localhost", 9)))) {
		*slash = '\0';
		if (!*buf || strlen(buf) >= sizeof(out->registry))
			return cap_err_plain(err, EINVAL, "invalid image reference '%s': bad registry", text);
		for (const char *p = buf; *p; p++)
			if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
			      *p == '.' || *p == '-' || *p == ':' || *p == '[' || *p == ']'))
				return cap_err_plain(err, EINVAL, "invalid image reference '%s': bad registry", text);
		/* host[:port]: one colon (outside an IPv6 address's brackets), digits after it. */
		const char *after = strrchr(buf, ']') ? strrchr(buf, ']') + 1 : buf;
		const char *colon1 = strchr(after, ':');
		if (colon1 && (strchr(colon1 + 1, ':') || !colon1[1] || strspn(colon1 + 1, "0123456789") != strlen(colon1 + 1)))
			return cap_err_plain(err, EINVAL, "invalid image reference '%s': bad registry port", text);
		snprintf(out->registry, sizeof(out->registry), "%s", buf);
		rest = slash + 1;
	} else {
		snprintf(out->registry, sizeof(out->registry), "docker.io");
	}
	/* A tag is after the last ':' of the last component. */
	char *last = strrchr(rest, '/');
	char *colon = strrchr(last ? last : rest, ':');
	if (colon) {
		*colon = '\0';
		const char *tag = colon + 1;
		size_t tl = strlen(tag);
		if (tl == 0 || tl > 128)
			return cap_err_plain(err, EINVAL, "invalid image reference '%s': bad tag", text);
		for (size_t i = 0; i < tl; i++) {
			char c = tag[i];
			if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
			      (i > 0 && (c == '.' || c == '-'))))
				return cap_err_plain(err, EINVAL, "invalid image reference '%s': bad tag", text);
		}
		snprintf(out->tag, sizeof(out->tag), "%s", tag);
	}
	for (char *c = rest;;) {
		char *e = strchr(c, '/');
		size_t cl = e ? (size_t)(e - c) : strlen(c);
		if (!ref_component_ok(c, cl))
			return cap_err_plain(err, EINVAL, "invalid image reference '%s': bad repository name", text);
		if (!e)
			break;
		c = e + 1;
	}
	bool docker_hub = !strcmp(out->registry, "docker.io");
	const char *prefix = docker_hub && !strchr(rest, '/') ? "library/" : "";
	if (strlen(rest) + strlen(prefix) >= sizeof(out->repository))
		return cap_err_plain(err, EINVAL, "invalid image reference '%.64s...': name too long", text);
	snprintf(out->repository, sizeof(out->repository), "%s%s", prefix, rest);
	if (!out->tag[0] && !out->digest[0])
		snprintf(out->tag, sizeof(out->tag), "latest");
	/* The canonical name (registry and library/ added) must parse again. */
	if (strlen(out->registry) + strlen(out->repository) + strlen(out->tag[0] ? out->tag : out->digest) + 2 > 500)
		return cap_err_plain(err, EINVAL, "invalid image reference '%.64s...': name too long", text);
	return 0;
}

void image_ref_format(const struct image_ref *ref, char *out, size_t size)
{
	if (ref->tag[0])
		snprintf(out, size, "%s/%s:%s", ref->registry, ref->repository, ref->tag);
	else
		snprintf(out, size, "%s/%s@%s", ref->registry, ref->repository, ref->digest);
}

/* ---- loopback ---- */

/* The length of REGISTRY's host, when what follows it is nothing or ":PORT" with a port
 * number in range; else -1. A bracketed IPv6 host keeps its brackets. */
static int registry_host_length(const char *registry)
{
	const char *end = registry[0] == '[' ? strchr(registry, ']') : strchr(registry, ':');
	if (registry[0] == '[' && !end)
		return -1;
	if (!end)
		return (int)strlen(registry);
	if (registry[0] == '[')
		end++;
	if (!*end)
		return (int)(end - registry);
	const char *port = end + 1;
	size_t digits = strspn(port, "0123456789");
	if (*end != ':' || digits == 0 || digits > 5 || port[digits] || atoi(port) < 1 || atoi(port) > 65535)
		return -1;
	return (int)(end - registry);
}

/* Exact forms only: a registry whose name merely starts like loopback ("localhost.example.net",
 * "127.0.0.1.nip.io") resolves wherever its owner likes, and loopback gets plain HTTP. The
 * IPv4 literal must be the strict dotted quad, which every resolver reads the same way. */
bool image_registry_is_loopback(const char *registry)
{
	if (!registry)
		return false;
	int n = registry_host_length(registry);
	char host[64];
	if (n <= 0 || (size_t)n >= sizeof(host))
		return false;
	memcpy(host, registry, (size_t)n);
	host[n] = '\0';
	if (!strcmp(host, "localhost"))
		return true;
	struct in_addr v4;
	if (inet_pton(AF_INET, host, &v4) == 1)
		return (ntohl(v4.s_addr) >> 24) == 127;
	struct in6_addr v6;
	if (host[0] != '[' || host[n - 1] != ']')
		return false;
	host[n - 1] = '\0';
	return inet_pton(AF_INET6, host + 1, &v6) == 1 && IN6_IS_ADDR_LOOPBACK(&v6);
}

/* ---- WWW-Authenticate ---- */

void image_challenge_free(struct image_challenge *c)
{
	free(c->realm);
	free(c->service);
	free(c->scope);
	memset(c, 0, sizeof(*c));
}

static bool is_space(char c)
{
	return c == ' ' || c == '\t';
}

/* RFC 7235: SCHEME 1*SP auth-param *( "," auth-param ), auth-param = token "=" ( token /
 * quoted-string ). Unknown parameters are skipped; a repeated one keeps its first value. */
int image_challenge_parse(const char *h, struct image_challenge *out)
{
	memset(out, 0, sizeof(*out));
	if (!h)
		return -EINVAL;
	while (is_space(*h))
		h++;
	size_t sl = strcspn(h, " \t");
	if (sl == 6 && !strncasecmp(h, "bearer", 6))
		out->bearer = true;
	else if (!(sl == 5 && !strncasecmp(h, "basic", 5)))
		return -EPROTONOSUPPORT;
	const char *p = h + sl;
	int r = 0;
	while (*p && r == 0) {
		while (is_space(*p) || *p == ',')
			p++;
		if (!*p)
			break;
		const char *k = p;
		while (*p && *p != '=' && *p != ',' && !is_space(*p))
			p++;
		size_t kl = p - k;
		while (is_space(*p))
			p++;
		if (*p != '=') {
			r = -EBADMSG;
			break;
		}
		p++;
		while (is_space(*p))
			p++;
		char *val;
		if (*p == '"') {
			p++;
			size_t cap = strlen(p) + 1, vl = 0;
			val = malloc(cap);
			if (!val)
				return image_challenge_free(out), -ENOMEM;
			while (*p && *p != '"') {
				if (*p == '\\' && p[1])
					p++;
				val[vl++] = *p++;
			}
			val[vl] = '\0';
			if (*p != '"') {
				free(val);
				r = -EBADMSG;
				break;
			}
			p++;
		} else {
			const char *v = p;
			while (*p && *p != ',' && !is_space(*p))
				p++;
			val = strndup(v, p - v);
			if (!val)
				return image_challenge_free(out), -ENOMEM;
		}
		char **slot = NULL;
		if (kl == 5 && !strncasecmp(k, "realm", 5))
			slot = &out->realm;
		else if (kl == 7 && !strncasecmp(k, "service", 7))
			slot = &out->service;
		else if (kl == 5 && !strncasecmp(k, "scope", 5))
			slot = &out->scope;
		if (slot && !*slot)
			*slot = val;
		else
			free(val);
	}
	if (r == 0 && out->bearer && (!out->realm || !*out->realm))
		r = -EBADMSG;
	if (r < 0)
		image_challenge_free(out);
	return r;
}

/* ---- JSON documents ---- */

void image_strv_free(char **v)
{
	for (size_t i = 0; v && v[i]; i++)
		free(v[i]);
	free(v);
}

/* A JSON string's raw text ("..." with escapes) as a C string: the reader unescapes values
 * of objects only, so the value is read as one. */
int image_json_string(const char *raw, size_t len, char **out)
{
	if (len < 2 || raw[0] != '"')
		return -EBADMSG;
	size_t n = len + 8;
	_cleanup_free_ char *doc = malloc(n);
	if (!doc)
		return -ENOMEM;
	memcpy(doc, "{\"v\":", 5);
	memcpy(doc + 5, raw, len);
	doc[5 + len] = '}';
	return json_get_string(doc, len + 6, "v", out);
}

struct strv_builder {
	char **v;
	size_t n;
};

static int strv_push(const char *name, const char *value, size_t len, void *payload)
{
	struct strv_builder *b = payload;
	char *s;
	int r = image_json_string(value, len, &s);
	if (r < 0)
		return r;
	char **nv = realloc(b->v, (b->n + 2) * sizeof(char *));
	if (!nv)
		return free(s), -ENOMEM;
	b->v = nv;
	b->v[b->n++] = s;
	b->v[b->n] = NULL;
	return 0;
}

/* An array of strings (or null: *OUT stays NULL). */
int image_json_strv(const char *raw, size_t len, char ***out)
{
	if (len == 4 && !memcmp(raw, "null", 4))
		return 0;
	struct strv_builder b = { 0 };
	int r = json_array_each(raw, len, 4096, strv_push, &b);
	if (r < 0) {
		image_strv_free(b.v);
		return r;
	}
	if (!b.v) {
		b.v = calloc(1, sizeof(char *));
		if (!b.v)
			return -ENOMEM;
	}
	*out = b.v;
	return 0;
}

/* S (which may be NULL after a failed read R) into the fixed field DST, or -EBADMSG when it
 * does not fit. */
static int copy_bounded(int r, const char *s, char *dst, size_t size)
{
	if (r < 0)
		return r;
	if (strlen(s) >= size)
		return -EBADMSG;
	snprintf(dst, size, "%s", s);
	return 0;
}

static int copy_string_field(const char *obj, size_t len, const char *key, char *dst, size_t size, bool required)
{
	_cleanup_free_ char *s = NULL;
	int r = json_get_string(obj, len, key, &s);
	if (r == -ENOENT && !required)
		return 0;
	return copy_bounded(r, s, dst, size);
}

static int platform_member(const char *name, const char *value, size_t len, void *payload)
{
	struct image_descriptor *d = payload;
	char *dst = NULL;
	size_t size = 0;
	if (!strcmp(name, "os"))
		dst = d->os, size = sizeof(d->os);
	else if (!strcmp(name, "architecture"))
		dst = d->architecture, size = sizeof(d->architecture);
	else if (!strcmp(name, "variant"))
		dst = d->variant, size = sizeof(d->variant);
	if (!dst)
		return 0;
	_cleanup_free_ char *s = NULL;
	int r = image_json_string(value, len, &s);
	return copy_bounded(r, s, dst, size);
}

static int descriptor_member(const char *name, const char *value, size_t len, void *payload)
{
	struct image_descriptor *d = payload;
	if (!strcmp(name, "platform") && len && value[0] == '{')
		return json_object_each(value, len, 64, platform_member, d);
	return 0;
}

static int parse_descriptor(const char *obj, size_t len, struct image_descriptor *d)
{
	memset(d, 0, sizeof(*d));
	if (len == 0 || obj[0] != '{')
		return -EBADMSG;
	int r;
	if ((r = copy_string_field(obj, len, "mediaType", d->media_type, sizeof(d->media_type), false)) < 0 ||
	    (r = copy_string_field(obj, len, "digest", d->digest, sizeof(d->digest), true)) < 0)
		return r;
	if (!image_digest_valid(d->digest))
		return -EBADMSG;
	if ((r = json_get_int(obj, len, "size", &d->size)) < 0 || d->size < 0)
		return r < 0 ? r : -EBADMSG;
	return json_object_each(obj, len, 64, descriptor_member, d);
}

struct entries_walk {
	struct image_manifest *m;
	size_t max;
};

static int entry_element(const char *name, const char *value, size_t len, void *payload)
{
	struct entries_walk *w = payload;
	if (w->m->nentries >= w->max)
		return -E2BIG;
	struct image_descriptor *nv = realloc(w->m->entries, (w->m->nentries + 1) * sizeof(*nv));
	if (!nv)
		return -ENOMEM;
	w->m->entries = nv;
	int r = parse_descriptor(value, len, &nv[w->m->nentries]);
	if (r < 0)
		return r;
	w->m->nentries++;
	return 0;
}

struct manifest_walk {
	struct image_manifest *m;
	bool has_config, has_layers, has_manifests;
	int schema;
};

static int manifest_member(const char *name, const char *value, size_t len, void *payload)
{
	struct manifest_walk *w = payload;
	if (!strcmp(name, "config")) {
		w->has_config = true;
		return parse_descriptor(value, len, &w->m->config);
	}
	if (!strcmp(name, "layers") || !strcmp(name, "manifests")) {
		bool layers = name[0] == 'l';
		if ((layers && w->has_layers) || (!layers && w->has_manifests))
			return -EBADMSG;
		if (layers)
			w->has_layers = true;
		else
			w->has_manifests = true;
		struct entries_walk ew = { w->m, layers ? IMAGE_MAX_LAYERS : IMAGE_MAX_INDEX_ENTRIES };
		return json_array_each(value, len, ew.max + 1, entry_element, &ew);
	}
	return 0;
}

void image_manifest_free(struct image_manifest *m)
{
	free(m->entries);
	memset(m, 0, sizeof(*m));
}

static bool type_is(const char *t, const char *a, const char *b)
{
	return t && (!strcmp(t, a) || !strcmp(t, b));
}

#define MT_DOCKER_LIST "application/vnd.docker.distribution.manifest.list.v2+json"
#define MT_OCI_INDEX "application/vnd.oci.image.index.v1+json"
#define MT_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"
#define MT_OCI_MANIFEST "application/vnd.oci.image.manifest.v1+json"

int image_manifest_parse(const char *json, size_t len, const char *media_type, struct image_manifest *out,
			 capsule_error *err)
{
	memset(out, 0, sizeof(*out));
	char own_type[128] = "";
	int64_t schema = 0;
	int r = json_get_int(json, len, "schemaVersion", &schema);
	if (r < 0 && r != -ENOENT)
		return cap_err_plain(err, EBADMSG, "image manifest is not valid JSON");
	if (schema != 2)
		return cap_err_plain(err, EPROTONOSUPPORT, "image manifest schema version %lld is not supported (only 2)",
				     (long long)schema);
	if (copy_string_field(json, len, "mediaType", own_type, sizeof(own_type), false) < 0 || !printable_ascii(own_type) ||
	    (media_type && !printable_ascii(media_type)))
		return cap_err_plain(err, EBADMSG, "image manifest has a bad mediaType");
	struct manifest_walk w = { .m = out };
	r = json_object_each(json, len, 256, manifest_member, &w);
	if (r < 0) {
		image_manifest_free(out);
		return cap_err_plain(err, r == -E2BIG ? E2BIG : EBADMSG, "image manifest: %s",
				     r == -E2BIG ? "too many entries" : "malformed descriptors");
	}
	const char *t = media_type && *media_type ? media_type : own_type;
	/* Registries send a list's type for an index and the other way round; the shape decides
	 * when neither names it. */
	bool index = type_is(t, MT_DOCKER_LIST, MT_OCI_INDEX) || (!*t && w.has_manifests && !w.has_layers);
	bool manifest = type_is(t, MT_DOCKER_MANIFEST, MT_OCI_MANIFEST) || (!*t && w.has_layers);
	if (index && w.has_manifests) {
		out->is_index = true;
		return 0;
	}
	if (manifest && w.has_layers && w.has_config)
		return 0;
	image_manifest_free(out);
	if (!index && !manifest)
		return cap_err_plain(err, EPROTONOSUPPORT, "image manifest type '%s' is not supported", t);
	return cap_err_plain(err, EBADMSG, "image manifest of type '%s' lacks its %s", t,
			     index ? "manifests" : "config or layers");
}

const struct image_descriptor *image_index_select(const struct image_manifest *idx, const char *platform)
{
	char want[96];
	snprintf(want, sizeof(want), "%s", platform && *platform ? platform : "linux/amd64");
	char *arch = strchr(want, '/');
	if (!arch)
		return NULL;
	*arch++ = '\0';
	char *variant = strchr(arch, '/');
	if (variant)
		*variant++ = '\0';
	for (size_t i = 0; i < idx->nentries; i++) {
		const struct image_descriptor *d = &idx->entries[i];
		if (strcmp(d->os, want) || strcmp(d->architecture, arch))
			continue;
		if (variant && strcmp(d->variant, variant))
			continue;
		return d;
	}
	return NULL;
}

int image_platform_check(const char *platform, capsule_error *err)
{
	size_t parts = 1, run = 0;
	bool ok = platform && *platform;
	for (const char *p = platform; ok && *p; p++) {
		if (*p == '/') {
			ok = run > 0 && ++parts <= 3;
			run = 0;
		} else {
			ok = (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_' || *p == '.' || *p == '-';
			run++;
		}
	}
	if (!ok || parts < 2 || run == 0 || strlen(platform) > 64)
		return cap_err_plain(err, EINVAL, "invalid platform '%.64s': expected OS/ARCH[/VARIANT], e.g. linux/amd64",
				     platform ? platform : "");
	return 0;
}

int image_config_platform_match(const struct image_config *c, const char *platform, const char *image,
				capsule_error *err)
{
	char want[72];
	snprintf(want, sizeof(want), "%s", platform);
	char *arch = strchr(want, '/');
	*arch++ = '\0';
	char *variant = strchr(arch, '/');
	if (variant)
		*variant++ = '\0';
	bool differs = (c->os && strcmp(c->os, want)) || (c->architecture && strcmp(c->architecture, arch)) ||
		       (variant && c->variant && strcmp(c->variant, variant));
	if (differs)
		return cap_err_plain(err, ENOENT, "image '%s' is for %s/%s%s%s, not %s", image, c->os ? c->os : "?",
				     c->architecture ? c->architecture : "?", c->variant ? "/" : "", c->variant ? c->variant : "",
				     platform);
	return 0;
}

void image_config_free(struct image_config *c)
{
	image_strv_free(c->env);
	image_strv_free(c->entrypoint);
	image_strv_free(c->cmd);
	free(c->workdir);
	free(c->user);
	free(c->os);
	free(c->architecture);
	free(c->variant);
	memset(c, 0, sizeof(*c));
}

static int config_member(const char *name, const char *value, size_t len, void *payload)
{
	struct image_config *c = payload;
	char ***v = NULL;
	char **s = NULL;
	if (!strcmp(name, "Env"))
		v = &c->env;
	else if (!strcmp(name, "Entrypoint"))
		v = &c->entrypoint;
	else if (!strcmp(name, "Cmd"))
		v = &c->cmd;
	else if (!strcmp(name, "WorkingDir"))
		s = &c->workdir;
	else if (!strcmp(name, "User"))
		s = &c->user;
	if (v) {
		if (*v)
			return -EBADMSG;
		return image_json_strv(value, len, v);
	}
	if (s && !(len == 4 && !memcmp(value, "null", 4))) {
		if (*s)
			return -EBADMSG;
		return image_json_string(value, len, s);
	}
	return 0;
}

static int config_top_member(const char *name, const char *value, size_t len, void *payload)
{
	struct image_config *c = payload;
	char **s = !strcmp(name, "os") ? &c->os : !strcmp(name, "architecture") ? &c->architecture
		   : !strcmp(name, "variant") ? &c->variant : NULL;
	if (s && value[0] == '"')
		return *s ? -EBADMSG : image_json_string(value, len, s);
	if (strcmp(name, "config") || (len == 4 && !memcmp(value, "null", 4)))
		return 0;
	return json_object_each(value, len, 256, config_member, payload);
}

int image_config_parse(const char *json, size_t len, struct image_config *out, capsule_error *err)
{
	memset(out, 0, sizeof(*out));
	int r = json_object_each(json, len, 256, config_top_member, out);
	if (r == 0 && out->env) {
		for (size_t i = 0; out->env[i]; i++)
			if (!strchr(out->env[i], '=') || out->env[i][0] == '=' || strchr(out->env[i], '\n'))
				r = -EBADMSG;
	}
	if (r == 0 && out->workdir && out->workdir[0] && out->workdir[0] != '/')
		r = -EBADMSG;
	if (r < 0) {
		image_config_free(out);
		return cap_err_plain(err, r == -ENOMEM ? ENOMEM : EBADMSG, "image config is malformed");
	}
	return 0;
}
