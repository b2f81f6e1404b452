/* libFuzzer target: the image parsers (src/lib/image_parse.c), which read what a registry or
 * an image archive sends: manifests and indexes, image configs, WWW-Authenticate challenges,
 * and image references.
 *
 * Byte 0 picks the parser (byte % 4); the rest is its input, of exactly its size (the JSON
 * decoders take (text, len) unterminated; the challenge and reference parsers take a C
 * string, cut at the first NUL). Besides "no crash, no overread, no leak", each success is
 * checked against what image.h promises: valid digests, bounded counts, absolute WorkingDir,
 * Env entries with '=', references that format and parse back to themselves, and loopback
 * registries (plain HTTP) only in their exact forms. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#include "fuzz_check.h"

static void check_error(int r, const capsule_error *e)
{
	CHECK(r < 0);
	CHECK(e->code == -r);
	CHECK(e->message[0]);
	for (const char *p = e->message; *p; p++)
		CHECK(*p != '\n');
}

static void fuzz_manifest(const char *text, size_t len)
{
	static const char *const types[] = { NULL, "application/vnd.oci.image.index.v1+json",
					     "application/vnd.docker.distribution.manifest.v2+json" };
	for (size_t t = 0; t < 3; t++) {
		struct image_manifest m;
		capsule_error e = { 0 };
		int r = image_manifest_parse(text, len, types[t], &m, &e);
		if (r < 0) {
			check_error(r, &e);
			continue;
		}
		CHECK(m.nentries <= (m.is_index ? IMAGE_MAX_INDEX_ENTRIES : IMAGE_MAX_LAYERS));
		if (!m.is_index)
			CHECK(image_digest_valid(m.config.digest) && m.config.size >= 0);
		for (size_t i = 0; i < m.nentries; i++)
			CHECK(image_digest_valid(m.entries[i].digest) && m.entries[i].size >= 0);
		if (m.is_index) {
			const struct image_descriptor *d = image_index_select(&m, NULL);
			CHECK(!d || (!strcmp(d->os, "linux") && !strcmp(d->architecture, "amd64")));
			image_index_select(&m, "linux/arm64/v8");
			image_index_select(&m, "nonsense");
		}
		image_manifest_free(&m);
	}
}

static void fuzz_config(const char *text, size_t len)
{
	struct image_config c;
	capsule_error e = { 0 };
	int r = image_config_parse(text, len, &c, &e);
	if (r < 0) {
		check_error(r, &e);
		return;
	}
	for (size_t i = 0; c.env && c.env[i]; i++)
		CHECK(strchr(c.env[i], '=') && c.env[i][0] != '=' && !strchr(c.env[i], '\n'));
	CHECK(!c.workdir || !c.workdir[0] || c.workdir[0] == '/');
	image_config_free(&c);
}

static void fuzz_challenge(const char *s)
{
	struct image_challenge c;
	int r = image_challenge_parse(s, &c);
	if (r < 0) {
		CHECK(r == -EBADMSG || r == -EPROTONOSUPPORT || r == -ENOMEM);
		CHECK(!c.realm && !c.service && !c.scope);
		return;
	}
	CHECK(!c.bearer || (c.realm && c.realm[0]));
	image_challenge_free(&c);
}

/* Loopback means plain HTTP: whatever the input, only the exact forms may qualify. */
static void check_loopback(const char *registry)
{
	if (!image_registry_is_loopback(registry))
		return;
	size_t host = registry[0] == '[' ? strcspn(registry, "]") + 1 : strcspn(registry, ":");
	CHECK(!strncmp(registry, "localhost", host) || !strncmp(registry, "127.", 4) || registry[0] == '[');
	CHECK(host == strlen(registry) || (registry[host] == ':' && strspn(registry + host + 1, "0123456789") ==
								     strlen(registry + host + 1)));
	CHECK(strspn(registry, "localhost0123456789.:[]abcdef") == strlen(registry));
}

static void fuzz_ref(const char *s)
{
	check_loopback(s);
	struct image_ref r;
	capsule_error e = { 0 };
	int rc = image_ref_parse(s, &r, &e);
	if (rc < 0) {
		check_error(rc, &e);
		return;
	}
	CHECK(r.registry[0] && r.repository[0] && (r.tag[0] || image_digest_valid(r.digest)));
	check_loopback(r.registry);
	char canon[600];
	image_ref_format(&r, canon, sizeof(canon));
	struct image_ref again;
	CHECK(image_ref_parse(canon, &again, NULL) == 0);
	CHECK(!strcmp(again.registry, r.registry) && !strcmp(again.repository, r.repository));
	CHECK(!strcmp(again.tag, r.tag));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	unsigned which = data[0] % 4;
	size_t n = size - 1;
	char *buf = malloc(n + 1);
	if (!buf)
		return 0;
	memcpy(buf, data + 1, n);
	buf[n] = '\0';
	switch (which) {
	case 0:
		fuzz_manifest(buf, n);
		break;
	case 1:
		fuzz_config(buf, n);
		break;
	case 2:
		fuzz_challenge(buf);
		break;
	default:
		fuzz_ref(buf);
		break;
	}
	free(buf);
	return 0;
}
