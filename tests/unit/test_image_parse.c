/* Unit tests of the image parsers (src/lib/image_parse.c): references as docker reads them,
 * WWW-Authenticate challenges, manifests, indexes and image configs; and the image defaults
 * in a sandbox's configuration (src/lib/config.c). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "image.h"
#include "internal.h"

static void check_ref(const char *in, const char *registry, const char *repo, const char *tag, const char *canon)
{
	struct image_ref r;
	capsule_error e = { 0 };
	if (image_ref_parse(in, &r, &e) != 0)
		fail_msg("'%s': %s", in, e.message);
	assert_string_equal(r.registry, registry);
	assert_string_equal(r.repository, repo);
	assert_string_equal(r.tag, tag);
	char out[600];
	image_ref_format(&r, out, sizeof(out));
	assert_string_equal(out, canon);
}

static void test_refs_resolve_as_docker_does(void **state)
{
	(void)state;
	check_ref("alpine", "docker.io", "library/alpine", "latest", "docker.io/library/alpine:latest");
	check_ref("alpine:3.20", "docker.io", "library/alpine", "3.20", "docker.io/library/alpine:3.20");
	check_ref("python:3.12-slim", "docker.io", "library/python", "3.12-slim", "docker.io/library/python:3.12-slim");
	check_ref("team/tool:1", "docker.io", "team/tool", "1", "docker.io/team/tool:1");
	check_ref("localhost/x", "localhost", "x", "latest", "localhost/x:latest");
	check_ref("localhost:5000/team/tool:1.2", "localhost:5000", "team/tool", "1.2", "localhost:5000/team/tool:1.2");
	check_ref("registry.example.com/a/b/c", "registry.example.com", "a/b/c", "latest",
		  "registry.example.com/a/b/c:latest");
	check_ref("127.0.0.1:5000/x:y", "127.0.0.1:5000", "x", "y", "127.0.0.1:5000/x:y");
	check_ref("a__b/c--d.e_f", "docker.io", "a__b/c--d.e_f", "latest", "docker.io/a__b/c--d.e_f:latest");
	check_ref("docker.io/library/alpine", "docker.io", "library/alpine", "latest", "docker.io/library/alpine:latest");
	struct image_ref r;
	const char *d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
	char in[200];
	snprintf(in, sizeof(in), "alpine@%s", d);
	assert_int_equal(image_ref_parse(in, &r, NULL), 0);
	assert_string_equal(r.digest, d);
	assert_string_equal(r.tag, "");
}

static void test_bad_refs_are_refused(void **state)
{
	(void)state;
	static const char *const bad[] = { "", "Alpine", "alpine:", "alpine:-x", "a//b", "/a", "a/", "alpine@sha256:12",
					   "x:y:z/w", ":tag", "a_:1", "reg.io/", "a b", "a..b", "a._b",
					   "a___b" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct image_ref r;
		capsule_error e = { 0 };
		if (image_ref_parse(bad[i], &r, &e) != -EINVAL)
			fail_msg("'%s' was accepted", bad[i]);
		assert_int_equal(e.code, EINVAL);
	}
}

/* Loopback registries get plain HTTP, so only names that cannot resolve elsewhere count. */
static void test_only_exact_loopback_names_are_loopback(void **state)
{
	(void)state;
	static const char *const loopback[] = { "localhost", "localhost:5000", "127.0.0.1", "127.0.0.1:5000",
						"127.1.2.3", "127.255.255.255:1", "[::1]", "[::1]:5000",
						"[0:0:0:0:0:0:0:1]:443" };
	static const char *const not_loopback[] = {
		"localhost.example.net", "localhost.example.net:5000", "127.foo", "127.0.0.1.nip.io",
		"127.0.0.1.nip.io:5000", "localhost5000", "localhost:", "localhost:abc", "localhost:70000",
		"localhost:0", "localhost:5000:1", "localhostx", "xlocalhost", "LOCALHOST.evil", "127.1",
		"127.0.0.01", "0x7f.0.0.1", "0177.0.0.1", "128.0.0.1", "126.255.255.255", "127.0.0.1x",
		"[::1", "::1", "[::1]x", "[::1]:", "[::2]", "[::ffff:127.0.0.1]", "[::1%lo]", "[::1].evil",
		"[localhost]", "", "docker.io", "10.0.2.2:5000",
	};
	for (size_t i = 0; i < sizeof(loopback) / sizeof(*loopback); i++)
		if (!image_registry_is_loopback(loopback[i]))
			fail_msg("'%s' should be loopback", loopback[i]);
	for (size_t i = 0; i < sizeof(not_loopback) / sizeof(*not_loopback); i++)
		if (image_registry_is_loopback(not_loopback[i]))
			fail_msg("'%s' should not be loopback", not_loopback[i]);
	assert_false(image_registry_is_loopback(NULL));
}

static void test_challenges(void **state)
{
	(void)state;
	struct image_challenge c;
	assert_int_equal(image_challenge_parse("Bearer realm=\"https://auth.docker.io/token\",service=\"registry.docker.io\","
					       "scope=\"repository:library/alpine:pull\"", &c), 0);
	assert_true(c.bearer);
	assert_string_equal(c.realm, "https://auth.docker.io/token");
	assert_string_equal(c.service, "registry.docker.io");
	assert_string_equal(c.scope, "repository:library/alpine:pull");
	image_challenge_free(&c);
	/* Case, spaces, unquoted values, unknown and escaped parameters, a repeat (first wins). */
	assert_int_equal(image_challenge_parse("  bearer  realm = https://r/t , error=\"insufficient_scope\", "
					       "scope=\"a\\\"b\", realm=\"second\"", &c), 0);
	assert_string_equal(c.realm, "https://r/t");
	assert_string_equal(c.scope, "a\"b");
	assert_null(c.service);
	image_challenge_free(&c);
	assert_int_equal(image_challenge_parse("Basic realm=\"capsule-test\"", &c), 0);
	assert_false(c.bearer);
	assert_string_equal(c.realm, "capsule-test");
	image_challenge_free(&c);
	assert_int_equal(image_challenge_parse("Basic", &c), 0);
	image_challenge_free(&c);
	assert_int_equal(image_challenge_parse("Negotiate abc", &c), -EPROTONOSUPPORT);
	assert_int_equal(image_challenge_parse("Bearer service=\"x\"", &c), -EBADMSG); /* no realm */
	assert_int_equal(image_challenge_parse("Bearer realm=\"unterminated", &c), -EBADMSG);
	assert_int_equal(image_challenge_parse("Bearer realm", &c), -EBADMSG);
	assert_int_equal(image_challenge_parse(NULL, &c), -EINVAL);
}

#define D1 "sha256:1111111111111111111111111111111111111111111111111111111111111111"
#define D2 "sha256:2222222222222222222222222222222222222222222222222222222222222222"
#define D3 "sha256:3333333333333333333333333333333333333333333333333333333333333333"

static void test_manifests_and_indexes(void **state)
{
	(void)state;
	const char *m = "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.docker.distribution.manifest.v2+json\","
			"\"config\":{\"mediaType\":\"x\",\"digest\":\"" D1 "\",\"size\":10},"
			"\"layers\":[{\"mediaType\":\"application/vnd.docker.image.rootfs.diff.tar.gzip\",\"digest\":\"" D2
			"\",\"size\":20},{\"digest\":\"" D3 "\",\"size\":30}]}";
	struct image_manifest man;
	capsule_error e = { 0 };
	assert_int_equal(image_manifest_parse(m, strlen(m), NULL, &man, &e), 0);
	assert_false(man.is_index);
	assert_string_equal(man.config.digest, D1);
	assert_int_equal(man.nentries, 2);
	assert_string_equal(man.entries[1].digest, D3);
	assert_int_equal(man.entries[1].size, 30);
	image_manifest_free(&man);

	const char *idx = "{\"schemaVersion\":2,\"manifests\":["
			  "{\"digest\":\"" D1 "\",\"size\":1,\"platform\":{\"os\":\"linux\",\"architecture\":\"arm64\","
			  "\"variant\":\"v8\"}},"
			  "{\"digest\":\"" D2 "\",\"size\":1,\"platform\":{\"os\":\"linux\",\"architecture\":\"amd64\"}},"
			  "{\"digest\":\"" D3 "\",\"size\":1,\"platform\":{\"os\":\"windows\",\"architecture\":\"amd64\"}}]}";
	assert_int_equal(image_manifest_parse(idx, strlen(idx), "application/vnd.oci.image.index.v1+json", &man, &e), 0);
	assert_true(man.is_index);
	assert_string_equal(image_index_select(&man, NULL)->digest, D2);
	assert_string_equal(image_index_select(&man, "linux/arm64")->digest, D1);
	assert_string_equal(image_index_select(&man, "linux/arm64/v8")->digest, D1);
	assert_null(image_index_select(&man, "linux/arm64/v7"));
	assert_null(image_index_select(&man, "linux/riscv64"));
	image_manifest_free(&man);

	/* Refused: schema 1, no layers, a bad digest, an unknown type, not JSON. */
	static const char *const bad[] = {
		"{\"schemaVersion\":1,\"layers\":[]}",
		"{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"digest\":\"" D1
		"\",\"size\":1}}",
		"{\"schemaVersion\":2,\"config\":{\"digest\":\"sha256:xyz\",\"size\":1},\"layers\":[]}",
		"{\"schemaVersion\":2,\"mediaType\":\"text/plain\",\"layers\":[]}",
		"{\"schemaVersion\":2,\"config\":{\"digest\":\"" D1 "\",\"size\":-1},\"layers\":[]}",
		"[1,2]",
		"{",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		capsule_error be = { 0 };
		if (image_manifest_parse(bad[i], strlen(bad[i]), NULL, &man, &be) == 0)
			fail_msg("accepted: %s", bad[i]);
		assert_true(be.code > 0);
	}
}

static void test_image_config(void **state)
{
	(void)state;
	const char *c = "{\"architecture\":\"amd64\",\"config\":{\"Env\":[\"PATH=/usr/bin\",\"A=b=c\"],"
			"\"Entrypoint\":[\"/bin/sh\",\"-c\"],\"Cmd\":[\"echo \\\"hi\\\"\\n\"],\"WorkingDir\":\"/srv\","
			"\"User\":\"1000:1000\",\"Labels\":{\"x\":\"y\"}},\"rootfs\":{}}";
	struct image_config ic;
	capsule_error e = { 0 };
	assert_int_equal(image_config_parse(c, strlen(c), &ic, &e), 0);
	assert_string_equal(ic.env[1], "A=b=c");
	assert_null(ic.env[2]);
	assert_string_equal(ic.entrypoint[0], "/bin/sh");
	assert_string_equal(ic.cmd[0], "echo \"hi\"\n");
	assert_string_equal(ic.workdir, "/srv");
	assert_string_equal(ic.user, "1000:1000");
	image_config_free(&ic);
	const char *none = "{\"config\":{\"Cmd\":null,\"Entrypoint\":[]}}";
	assert_int_equal(image_config_parse(none, strlen(none), &ic, &e), 0);
	assert_null(ic.cmd);
	assert_non_null(ic.entrypoint);
	assert_null(ic.entrypoint[0]);
	image_config_free(&ic);
	static const char *const bad[] = { "{\"config\":{\"Env\":[\"NOEQUALS\"]}}", "{\"config\":{\"Env\":[1]}}",
					   "{\"config\":{\"WorkingDir\":\"relative\"}}", "{\"config\":{\"Cmd\":\"sh\"}}" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (image_config_parse(bad[i], strlen(bad[i]), &ic, NULL) == 0)
			fail_msg("accepted: %s", bad[i]);
}

static void test_image_defaults_round_trip(void **state)
{
	(void)state;
	struct capsule_config cfg = { .name = "t" };
	const char *ep[] = { "/bin/sh", "-c", NULL };
	const char *cmd[] = { "echo 100% \"a\"\nnext\rline", "", NULL };
	assert_int_equal(config_set_image_defaults(&cfg, "/srv", "app", ep, cmd, NULL), 0);
	char *text = NULL;
	size_t len = 0;
	assert_int_equal(config_serialize(&cfg, &text, &len), 0);
	struct capsule_config back;
	capsule_error e = { 0 };
	if (config_parse(text, len, &back, &e) != 0)
		fail_msg("%s\n%s", e.message, text);
	free(text);
	assert_string_equal(back.workdir, "/srv");
	assert_string_equal(back.user, "app");
	assert_string_equal(back.entrypoint[1], "-c");
	assert_null(back.entrypoint[2]);
	assert_string_equal(back.cmd[0], cmd[0]);
	assert_string_equal(back.cmd[1], "");
	assert_null(back.cmd[2]);
	struct capsule_config copy;
	assert_int_equal(config_copy(&copy, &back), 0);
	assert_string_equal(copy.cmd[0], cmd[0]);
	config_clear(&copy);
	config_clear(&back);
	config_clear(&cfg);
	/* An empty Entrypoint stays empty, not absent. */
	const char *empty[] = { NULL };
	assert_int_equal(config_set_image_defaults(&cfg, NULL, NULL, empty, NULL, NULL), 0);
	assert_int_equal(config_serialize(&cfg, &text, &len), 0);
	assert_int_equal(config_parse(text, len, &back, NULL), 0);
	free(text);
	assert_non_null(back.entrypoint);
	assert_null(back.entrypoint[0]);
	assert_null(back.cmd);
	config_clear(&back);
	config_clear(&cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_refs_resolve_as_docker_does),
		cmocka_unit_test(test_bad_refs_are_refused),
		cmocka_unit_test(test_only_exact_loopback_names_are_loopback),
		cmocka_unit_test(test_challenges),
		cmocka_unit_test(test_manifests_and_indexes),
		cmocka_unit_test(test_image_config),
		cmocka_unit_test(test_image_defaults_round_trip),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
