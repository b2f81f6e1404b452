/* libFuzzer target: the request bodies of capsule serve (src/server/request.c), which any
 * client holding a token can send. HTTP itself is libmicrohttpd's (OSS-Fuzz fuzzes upstream's
 * new MHD2 code as libmicrohttpd2, not the 0.9 line Debian ships: docs/serve.md); what is
 * ours is what a body becomes.
 *
 * Byte 0 picks the decoder (create, exec, a ?label= filter, a signal, the small bodies); the
 * rest is its input, given unterminated and of exactly its size. Beyond "no crash, no overread,
 * no leak", each result keeps the decoder's promises: a failure fills ERR with one printable
 * line and leaves nothing to free; a success holds only what the limits in serve.h allow.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "serve.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#include "fuzz_serve_check.h"

static void check_env(char **env, size_t n)
{
	CHECK(n <= SERVE_ENV_MAX);
	for (size_t i = 0; i < n; i++) {
		const char *eq = strchr(env[i], '=');
		CHECK(eq && eq != env[i]);
	}
	CHECK(!env || env[n] == NULL);
}

static void check_label(const struct serve_label *l)
{
	size_t kl = strlen(l->key);
	CHECK(kl > 0 && kl <= CAPSULE_LABEL_KEY_MAX);
	CHECK(strlen(l->value) <= CAPSULE_LABEL_VALUE_MAX);
	for (const char *p = l->value; *p; p++)
		CHECK((unsigned char)*p >= 0x20 && *p != 0x7f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	const char *text = (const char *)data + 1;
	size_t len = size - 1;
	capsule_error err = { 0 };
	int r;
	switch (data[0] % 5) {
	case 0: {
		struct serve_create_req req;
		r = serve_decode_create(text, len, &req, &err);
		if (r < 0) {
			check_error(r, &err);
			CHECK(!req.image && !req.env && !req.n_labels && !req.cpus && !req.network);
			break;
		}
		CHECK(req.isolation == -1 || req.isolation == CAPSULE_ISOLATION_CONTAINER ||
		      req.isolation == CAPSULE_ISOLATION_VM);
		CHECK(!req.memory_set || req.memory_bytes > 0);
		CHECK(!req.timeout_set || (req.timeout_s >= 1 && req.timeout_s <= SERVE_TIMEOUT_MAX_S));
		CHECK(!req.network || !strcmp(req.network, "none") || !strcmp(req.network, "full") ||
		      !strcmp(req.network, "mounts-only"));
		check_env(req.env, req.n_env);
		CHECK(req.n_labels <= SERVE_LABELS_MAX);
		for (size_t i = 0; i < req.n_labels; i++) {
			check_label(&req.labels[i]);
			for (size_t j = 0; j < i; j++)
				CHECK(strcmp(req.labels[i].key, req.labels[j].key) != 0);
		}
		serve_create_req_free(&req);
		break;
	}
	case 1: {
		struct serve_exec_req req;
		r = serve_decode_exec(text, len, &req, &err);
		if (r < 0) {
			check_error(r, &err);
			CHECK(!req.argv && !req.shell && !req.env && !req.cwd && !req.user && !req.stdin_data);
			break;
		}
		CHECK(!req.argv != !req.shell);
		if (req.argv) {
			CHECK(req.argc >= 1 && req.argc <= SERVE_ARGV_MAX && req.argv[req.argc] == NULL);
			CHECK(req.argv[0][0] != '\0');
		} else {
			CHECK(req.shell[0] != '\0');
		}
		check_env(req.env, req.n_env);
		CHECK(!req.cwd || req.cwd[0] == '/');
		CHECK(req.timeout_ms <= SERVE_TIMEOUT_MAX_S * 1000u);
		CHECK(!req.stdin_data || strlen(req.stdin_data) == req.stdin_len);
		serve_exec_req_free(&req);
		break;
	}
	case 2: {
		/* The filter takes a C string, as the query string gives it. */
		char *s = malloc(len + 1);
		if (!s)
			return 0;
		memcpy(s, text, len);
		s[len] = '\0';
		struct serve_label l = { 0 };
		r = serve_parse_label_filter(s, &l, &err);
		if (r < 0) {
			check_error(r, &err);
			CHECK(!l.key && !l.value);
		} else {
			check_label(&l);
			free(l.key);
			free(l.value);
		}
		free(s);
		break;
	}
	case 3: {
		int signo = -1;
		r = serve_decode_signal(text, len, &signo, &err);
		if (r < 0) {
			check_error(r, &err);
			CHECK(signo == -1);
		} else {
			CHECK(signo >= 1 && signo <= 64);
		}
		break;
	}
	case 4: {
		/* The small bodies (stop, checkpoint, fork, ports, pull): one of each kind. */
		struct serve_field f[] = {
			{ .name = "name", .kind = SERVE_FIELD_STRING, .max = 63 },
			{ .name = "timeout", .kind = SERVE_FIELD_UINT, .min = 1, .max = 86400 },
			{ .name = "readonly", .kind = SERVE_FIELD_BOOL },
			{ .name = "port", .kind = SERVE_FIELD_UINT, .required = true, .min = 1, .max = 65535 },
		};
		r = serve_decode_fields(text, len, f, 4, &err);
		if (r < 0) {
			check_error(r, &err);
			CHECK(!f[0].string);
			break;
		}
		CHECK(f[3].set && f[3].uint >= 1 && f[3].uint <= 65535);
		CHECK(!f[1].set || (f[1].uint >= 1 && f[1].uint <= 86400));
		CHECK(!f[0].set || (f[0].string && strlen(f[0].string) <= 63));
		serve_fields_free(f, 4);
		break;
	}
	}
	/* The text test the exec answers use, on the raw bytes: never reads past them, and its
	 * eight-bytes-at-a-time ASCII path agrees with a plain walk over the sequences. */
	bool plain = true;
	for (size_t i = 0; i < size && plain;) {
		size_t n = data[i] ? utf8_seq_len(data + i, size - i) : 0;
		plain = n > 0;
		i += n;
	}
	CHECK(serve_utf8_valid((const char *)data, size) == plain);
	return 0;
}
