/* libFuzzer target: the message decoders, and the encoders as their inverse.
 *
 * Byte 0 picks a decoder (byte % 10: hello, error, exec, started, credit, exit, signal, resize,
 * stop, init; bytes 0xf0 and up, byte % 3: mount, unmount, mount_ok); the rest is the payload, copied into a buffer of exactly its size so ASan sees
 * any overread. When the decode succeeds, the message is encoded again and that frame decoded
 * again: the two decoded messages must be equal, and encoding the second must give the same
 * bytes as encoding the first (one canonical encoding per message).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                        \
	do {                                                                               \
		if (!(cond)) {                                                             \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
			abort();                                                           \
		}                                                                          \
	} while (0)

static bool str_eq(const char *a, const char *b)
{
	if (!a || !b)
		return a == b;
	return strcmp(a, b) == 0;
}

static bool strv_eq(char *const *a, size_t an, char *const *b, size_t bn)
{
	if (an != bn)
		return false;
	for (size_t i = 0; i < an; i++)
		if (!str_eq(a[i], b[i]))
			return false;
	return a[an] == NULL && b[bn] == NULL;
}

static void check_strv(char *const *v, size_t n, size_t max)
{
	CHECK(v != NULL);
	CHECK(n <= max);
	for (size_t i = 0; i < n; i++) {
		CHECK(v[i] != NULL);
		CHECK(strlen(v[i]) <= CP_MAX_STRING);
	}
	CHECK(v[n] == NULL);
}

/* The frame in W must carry TYPE and decode as a header; returns its payload length. */
static size_t check_frame(const struct cp_writer *w, uint16_t type)
{
	struct cp_header h;
	CHECK(w->len >= CP_HEADER_SIZE);
	CHECK(cp_header_decode(w->buf, w->len, &h) == 0);
	CHECK(h.type == type);
	CHECK(h.chan == 7);
	CHECK((size_t)h.len == w->len - CP_HEADER_SIZE);
	return h.len;
}

/* A copy of the frame's payload of exactly its size. */
static uint8_t *payload_copy(const struct cp_writer *w, size_t n)
{
	uint8_t *p = malloc(n ? n : 1);
	CHECK(p != NULL);
	memcpy(p, w->buf + CP_HEADER_SIZE, n);
	return p;
}

/* Encode A's struct with ENCODE into W1, decode it into B, encode B into W2: W1 == W2. The
 * macro keeps each message's three calls in one place. */
#define ROUND_TRIP(T, encode, decode, free_fn, eq, a, type)                                  \
	do {                                                                                  \
		struct cp_writer w1, w2;                                                      \
		cp_writer_init(&w1);                                                          \
		cp_writer_init(&w2);                                                          \
		int er = encode(&w1, 7, &(a));                                                \
		if (er == -EMSGSIZE && n + 64 >= CP_MAX_PAYLOAD) {                            \
			/* a canonical encoding may add fields the input left out */          \
			cp_writer_free(&w1);                                                  \
			break;                                                                \
		}                                                                             \
		CHECK(er == 0);                                                               \
		size_t n1 = check_frame(&w1, type);                                           \
		uint8_t *p1 = payload_copy(&w1, n1);                                          \
		T b;                                                                          \
		CHECK(decode(p1, n1, &b) == 0);                                               \
		CHECK(eq(&(a), &b));                                                          \
		CHECK(encode(&w2, 7, &b) == 0);                                               \
		CHECK(w1.len == w2.len && memcmp(w1.buf, w2.buf, w1.len) == 0);               \
		free_fn(&b);                                                                  \
		free(p1);                                                                     \
		cp_writer_free(&w1);                                                          \
		cp_writer_free(&w2);                                                          \
	} while (0)

static bool hello_eq(const struct cp_hello *a, const struct cp_hello *b)
{
	return a->version == b->version && str_eq(a->role, b->role);
}

static bool error_eq(const struct cp_error_msg *a, const struct cp_error_msg *b)
{
	return a->errnum == b->errnum && str_eq(a->message, b->message);
}

static bool exec_eq(const struct cp_exec *a, const struct cp_exec *b)
{
	return strv_eq(a->argv, a->argc, b->argv, b->argc) && strv_eq(a->env, a->envc, b->env, b->envc) &&
	       str_eq(a->cwd, b->cwd) && str_eq(a->user, b->user) && a->flags == b->flags && a->rows == b->rows &&
	       a->cols == b->cols && a->timeout_ms == b->timeout_ms;
}

static bool init_eq(const struct cp_init *a, const struct cp_init *b)
{
	return a->seccomp_len == b->seccomp_len &&
	       (a->seccomp_len == 0 || memcmp(a->seccomp_bpf, b->seccomp_bpf, a->seccomp_len) == 0) &&
	       strv_eq(a->env, a->envc, b->env, b->envc) && a->cap_keep == b->cap_keep && a->flags == b->flags;
}

static bool started_eq(const struct cp_started *a, const struct cp_started *b) { return a->pid == b->pid; }
static bool credit_eq(const struct cp_credit *a, const struct cp_credit *b)
{
	return a->stream == b->stream && a->bytes == b->bytes;
}
static bool exit_eq(const struct cp_exit *a, const struct cp_exit *b)
{
	return a->exit_code == b->exit_code && a->signal == b->signal && a->timed_out == b->timed_out;
}
static bool signal_eq(const struct cp_signal *a, const struct cp_signal *b)
{
	return a->signo == b->signo && a->pid == b->pid;
}
static bool resize_eq(const struct cp_resize *a, const struct cp_resize *b)
{
	return a->rows == b->rows && a->cols == b->cols;
}
static bool stop_eq(const struct cp_stop *a, const struct cp_stop *b) { return a->timeout_ms == b->timeout_ms; }

/* The u32-only messages own nothing. */
#define NO_FREE(m) ((void)(m))

static bool mount_eq(const struct cp_mount *a, const struct cp_mount *b)
{
	return str_eq(a->host_path, b->host_path) && str_eq(a->guest_path, b->guest_path) && a->flags == b->flags;
}
static bool unmount_eq(const struct cp_unmount *a, const struct cp_unmount *b) { return str_eq(a->target, b->target); }
static bool mount_ok_eq(const struct cp_mount_ok *a, const struct cp_mount_ok *b)
{
	return str_eq(a->handle, b->handle) && str_eq(a->mounts_json, b->mounts_json);
}

static int fuzz_mount_messages(unsigned which, const uint8_t *p, size_t n)
{
	int r;
	if (which == 0) {
		struct cp_mount a;
		r = cp_mount_decode(p, n, &a);
		if (r == 0) {
			CHECK(a.host_path && a.guest_path && !(a.flags & ~CP_MOUNT_FLAGS_KNOWN));
			CHECK(strlen(a.host_path) <= CP_MAX_STRING && strlen(a.guest_path) <= CP_MAX_STRING);
			ROUND_TRIP(struct cp_mount, cp_mount_encode, cp_mount_decode, cp_mount_free, mount_eq, a, CP_MOUNT);
			cp_mount_free(&a);
		} else {
			CHECK(a.host_path == NULL && a.guest_path == NULL);
		}
	} else if (which == 1) {
		struct cp_unmount a;
		r = cp_unmount_decode(p, n, &a);
		if (r == 0) {
			CHECK(a.target && strlen(a.target) <= CP_MAX_STRING);
			ROUND_TRIP(struct cp_unmount, cp_unmount_encode, cp_unmount_decode, cp_unmount_free, unmount_eq, a,
				   CP_UNMOUNT);
			cp_unmount_free(&a);
		} else {
			CHECK(a.target == NULL);
		}
	} else {
		struct cp_mount_ok a;
		r = cp_mount_ok_decode(p, n, &a);
		if (r == 0) {
			CHECK(!a.handle || strlen(a.handle) <= CP_MAX_MOUNT_HANDLE);
			CHECK(!a.mounts_json || strlen(a.mounts_json) <= CP_MAX_MOUNTS_JSON);
			ROUND_TRIP(struct cp_mount_ok, cp_mount_ok_encode, cp_mount_ok_decode, cp_mount_ok_free, mount_ok_eq,
				   a, CP_OK);
			cp_mount_ok_free(&a);
		} else {
			CHECK(a.handle == NULL && a.mounts_json == NULL);
		}
	}
	return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	const unsigned selector = data[0] % 10;
	const size_t n = size - 1;
	uint8_t *p = malloc(n ? n : 1);
	CHECK(p != NULL);
	memcpy(p, data + 1, n);

	int r;
	/* Selector bytes 0xf0 and up: the hot mount messages (so that the older selectors, and
	 * the corpus built on them, keep their meaning). */
	if (data[0] >= 0xf0) {
		r = fuzz_mount_messages(data[0] % 3, p, n);
		CHECK(r == 0 || r == -EBADMSG || r == -ENOMEM);
		free(p);
		return 0;
	}
	switch (selector) {
	case 0: {
		struct cp_hello a;
		r = cp_hello_decode(p, n, &a);
		if (r == 0) {
			CHECK(!a.role || strlen(a.role) <= CP_MAX_STRING);
			ROUND_TRIP(struct cp_hello, cp_hello_encode, cp_hello_decode, cp_hello_free, hello_eq, a, CP_HELLO);
			cp_hello_free(&a);
		} else {
			CHECK(a.role == NULL);
		}
		break;
	}
	case 1: {
		struct cp_error_msg a;
		r = cp_error_decode(p, n, &a);
		if (r == 0) {
			CHECK(a.errnum > 0 && a.errnum <= 4095);
			ROUND_TRIP(struct cp_error_msg, cp_error_encode, cp_error_decode, cp_error_free, error_eq, a,
				   CP_ERROR);
			cp_error_free(&a);
		} else {
			CHECK(a.message == NULL);
		}
		break;
	}
	case 2: {
		struct cp_exec a;
		r = cp_exec_decode(p, n, &a);
		if (r == 0) {
			CHECK(a.argc >= 1);
			check_strv(a.argv, a.argc, CP_MAX_ARGS);
			check_strv(a.env, a.envc, CP_MAX_ENV);
			CHECK(a.rows <= 0xffff && a.cols <= 0xffff);
			ROUND_TRIP(struct cp_exec, cp_exec_encode, cp_exec_decode, cp_exec_free, exec_eq, a, CP_EXEC);
			cp_exec_free(&a);
		} else {
			CHECK(a.argv == NULL && a.env == NULL && a.cwd == NULL && a.user == NULL);
		}
		break;
	}
	case 3: {
		struct cp_started a;
		r = cp_started_decode(p, n, &a);
		if (r == 0)
			ROUND_TRIP(struct cp_started, cp_started_encode, cp_started_decode, NO_FREE, started_eq, a,
				   CP_STARTED);
		break;
	}
	case 4: {
		struct cp_credit a;
		r = cp_credit_decode(p, n, &a);
		if (r == 0)
			ROUND_TRIP(struct cp_credit, cp_credit_encode, cp_credit_decode, NO_FREE, credit_eq, a, CP_CREDIT);
		break;
	}
	case 5: {
		struct cp_exit a;
		r = cp_exit_decode(p, n, &a);
		if (r == 0)
			ROUND_TRIP(struct cp_exit, cp_exit_encode, cp_exit_decode, NO_FREE, exit_eq, a, CP_EXIT);
		break;
	}
	case 6: {
		struct cp_signal a;
		r = cp_signal_decode(p, n, &a);
		if (r == 0)
			ROUND_TRIP(struct cp_signal, cp_signal_encode, cp_signal_decode, NO_FREE, signal_eq, a, CP_SIGNAL);
		break;
	}
	case 7: {
		struct cp_resize a;
		r = cp_resize_decode(p, n, &a);
		if (r == 0)
			ROUND_TRIP(struct cp_resize, cp_resize_encode, cp_resize_decode, NO_FREE, resize_eq, a, CP_RESIZE);
		break;
	}
	case 8: {
		struct cp_stop a;
		r = cp_stop_decode(p, n, &a);
		if (r == 0)
			ROUND_TRIP(struct cp_stop, cp_stop_encode, cp_stop_decode, NO_FREE, stop_eq, a, CP_STOP);
		break;
	}
	default: {
		struct cp_init a;
		r = cp_init_decode(p, n, &a);
		if (r == 0) {
			check_strv(a.env, a.envc, CP_MAX_ENV);
			CHECK(a.seccomp_len % 8 == 0 && a.seccomp_len <= CP_MAX_SECCOMP_BYTES);
			CHECK((a.seccomp_len == 0) == (a.seccomp_bpf == NULL));
			ROUND_TRIP(struct cp_init, cp_init_encode, cp_init_decode, cp_init_free, init_eq, a, CP_INIT);
			cp_init_free(&a);
		} else {
			CHECK(a.seccomp_bpf == NULL && a.env == NULL);
		}
		break;
	}
	}
	/* Decoders fail only for a malformed payload (-EBADMSG) or, in theory, -ENOMEM. */
	CHECK(r == 0 || r == -EBADMSG || r == -ENOMEM);
	free(p);
	return 0;
}
