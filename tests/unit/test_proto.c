/* Unit tests of the wire codec (src/common/proto*.c). The peer on the other end of a connection
 * may be hostile (docs/security.md, "A hostile or wedged guest"), so besides round trips these
 * tests feed every truncation and every over-claimed length of every message to the decoders.
 * Each prefix is copied into a buffer of exactly its size, so that under ASan (check-asan) a
 * single byte read past the end fails the test. */
#include <dirent.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "capsule.h"
#include "proto.h"
#include "util.h"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

/* ---- helpers -------------------------------------------------------------------------- */

static uint32_t le32_at(const uint8_t *p)
{
	return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static void set_le32_at(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* A heap copy of exactly N bytes, so ASan flags any read past the end. */
static uint8_t *exact_copy(const uint8_t *p, size_t n)
{
	uint8_t *c = malloc(n ? n : 1);
	assert_non_null(c);
	if (n)
		memcpy(c, p, n);
	return c;
}

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
	return true;
}

/* What every successful decode must guarantee to its caller, whatever the input. */
static void check_strv_shape(char *const *v, size_t n, size_t max)
{
	assert_non_null(v);
	assert_true(n <= max);
	for (size_t i = 0; i < n; i++) {
		assert_non_null(v[i]);
		assert_true(strlen(v[i]) <= CP_MAX_STRING);
	}
	assert_null(v[n]);
}

static void check_exec_shape(const struct cp_exec *m)
{
	assert_true(m->argc >= 1);
	check_strv_shape(m->argv, m->argc, CP_MAX_ARGS);
	check_strv_shape(m->env, m->envc, CP_MAX_ENV);
	assert_true(m->rows <= 0xffff);
	assert_true(m->cols <= 0xffff);
}

static void check_init_shape(const struct cp_init *m)
{
	check_strv_shape(m->env, m->envc, CP_MAX_ENV);
	assert_true(m->seccomp_len % 8 == 0);
	assert_true(m->seccomp_len <= CP_MAX_SECCOMP_BYTES);
	assert_true((m->seccomp_len == 0) == (m->seccomp_bpf == NULL));
}

/* What cp_fs_decode promises the agent: a known op, bounded paths, a second path where the op
 * needs one, permission bits only. */
static void check_fs_shape(const struct cp_fs *m)
{
	assert_true(m->op >= CP_FS_STAT && m->op <= CP_FS_SYMLINK);
	assert_non_null(m->path);
	assert_true(strlen(m->path) <= CP_FS_PATH_MAX);
	assert_true(!m->path2 || strlen(m->path2) <= CP_FS_PATH_MAX);
	if (m->op == CP_FS_RENAME || m->op == CP_FS_SYMLINK)
		assert_non_null(m->path2);
	assert_true(m->mode <= 07777);
}

/* What cp_fs_entry_decode promises the client about an entry from the (untrusted) agent: the
 * name is one component it can append to a local folder, the link belongs to a symlink. */
static void check_entry_shape(const struct cp_fs_entry *m)
{
	assert_non_null(m->name);
	size_t n = strlen(m->name);
	assert_true(n >= 1 && n <= CP_FS_NAME_MAX);
	/* "/" is the root's name in a STAT reply (test_fs_entry_names_root_only_in_stat_replies
	 * checks that records never carry it). */
	if (strcmp(m->name, "/") != 0)
		assert_null(strchr(m->name, '/'));
	assert_string_not_equal(m->name, ".");
	assert_string_not_equal(m->name, "..");
	assert_true(m->kind >= CP_FS_KIND_FILE && m->kind <= CP_FS_KIND_OTHER);
	assert_true(m->mode <= 07777);
	if (m->link) {
		assert_int_equal(m->kind, CP_FS_KIND_SYMLINK);
		assert_true(strlen(m->link) <= CP_FS_PATH_MAX);
	}
}

/* Walk a LIST DATA payload to its end or its first bad record, checking each entry; returns
 * 0 or the walker's error, and the number of records in *COUNT. */
static int walk_records(const uint8_t *p, size_t n, size_t *count)
{
	struct cp_reader r = { .p = p, .rem = n };
	struct cp_fs_entry e;
	int k;
	size_t c = 0;
	while ((k = cp_fs_record_next(&r, &e)) > 0) {
		check_entry_shape(&e);
		cp_fs_entry_free(&e);
		c++;
	}
	if (k < 0) {
		assert_null(e.name);
		assert_null(e.link);
	}
	if (count)
		*count = c;
	return k;
}

static bool fs_eq(const struct cp_fs *a, const struct cp_fs *b)
{
	return a->op == b->op && str_eq(a->path, b->path) && str_eq(a->path2, b->path2) && a->flags == b->flags &&
	       a->mode == b->mode;
}

static bool entry_eq(const struct cp_fs_entry *a, const struct cp_fs_entry *b)
{
	return str_eq(a->name, b->name) && a->kind == b->kind && a->size == b->size && a->mode == b->mode &&
	       a->mtime_ns == b->mtime_ns && a->uid == b->uid && a->gid == b->gid && str_eq(a->link, b->link);
}

/* Decode a payload with the decoder for TYPE, check the result's shape, free it. Types with no
 * decoder (OK, SHUTDOWN, DATA) return 0. */
static int decode_by_type(uint16_t type, const uint8_t *p, size_t n)
{
	int r = 0;
	switch (type) {
	case CP_HELLO: {
		struct cp_hello m;
		r = cp_hello_decode(p, n, &m);
		if (r == 0) {
			assert_true(!m.role || strlen(m.role) <= CP_MAX_STRING);
			cp_hello_free(&m);
		}
		break;
	}
	case CP_ERROR: {
		struct cp_error_msg m;
		r = cp_error_decode(p, n, &m);
		if (r == 0) {
			assert_true(m.errnum > 0 && m.errnum <= 4095);
			cp_error_free(&m);
		}
		break;
	}
	case CP_EXEC: {
		struct cp_exec m;
		r = cp_exec_decode(p, n, &m);
		if (r == 0) {
			check_exec_shape(&m);
			cp_exec_free(&m);
		}
		break;
	}
	case CP_STARTED: {
		struct cp_started m;
		r = cp_started_decode(p, n, &m);
		break;
	}
	case CP_CREDIT: {
		struct cp_credit m;
		r = cp_credit_decode(p, n, &m);
		break;
	}
	case CP_EXIT: {
		struct cp_exit m;
		r = cp_exit_decode(p, n, &m);
		break;
	}
	case CP_SIGNAL: {
		struct cp_signal m;
		r = cp_signal_decode(p, n, &m);
		break;
	}
	case CP_RESIZE: {
		struct cp_resize m;
		r = cp_resize_decode(p, n, &m);
		break;
	}
	case CP_STOP: {
		struct cp_stop m;
		r = cp_stop_decode(p, n, &m);
		break;
	}
	case CP_TAKE: {
		struct cp_take m;
		r = cp_take_decode(p, n, &m);
		if (r == 0) {
			assert_true(strlen(m.name) <= CP_MAX_TAKE_NAME && strlen(m.pool) <= CP_MAX_TAKE_NAME);
			cp_take_free(&m);
		}
		break;
	}
	case CP_INIT: {
		struct cp_init m;
		r = cp_init_decode(p, n, &m);
		if (r == 0) {
			check_init_shape(&m);
			cp_init_free(&m);
		}
		break;
	}
	case CP_FS: {
		struct cp_fs m;
		r = cp_fs_decode(p, n, &m);
		if (r == 0) {
			check_fs_shape(&m);
			cp_fs_free(&m);
		} else {
			assert_null(m.path);
			assert_null(m.path2);
		}
		break;
	}
	default:
		break;
	}
	return r;
}

/* ---- sample messages: one of each kind, with every field set --------------------------- */

static char *sample_argv[] = { "/bin/sh", "-c", "echo hello; exit 3", NULL };
static char *sample_env[] = { "PATH=/usr/bin:/bin", "HOME=/root", "EMPTY=", NULL };
static const uint8_t sample_bpf[16] = { 0x20, 0, 0, 0, 4, 0, 0, 0, 0x06, 0, 0, 0, 0, 0, 0xff, 0x7f };

static const struct cp_hello sample_hello = { .version = CP_VERSION, .role = "agent" };
static const struct cp_error_msg sample_error = { .errnum = ENOENT, .message = "open '/x': No such file" };
static const struct cp_exec sample_exec = {
	.argv = sample_argv,
	.argc = 3,
	.env = sample_env,
	.envc = 3,
	.cwd = "/work",
	.user = "1000:1000",
	.flags = CP_EXEC_TTY | CP_EXEC_STDIN,
	.nfds = 2,
	.rows = 24,
	.cols = 80,
	.timeout_ms = 5000,
};
static const struct cp_started sample_started = { .pid = 4242 };
static const struct cp_credit sample_credit = { .stream = CP_STREAM_STDOUT, .bytes = 65536 };
static const struct cp_exit sample_exit = { .exit_code = -1, .signal = 9, .timed_out = 1 };
static const struct cp_signal sample_signal = { .signo = 15, .pid = 77 };
static const struct cp_resize sample_resize = { .rows = 50, .cols = 132 };
static const struct cp_stop sample_stop = { .timeout_ms = 10000, .remove = 1 };
static const struct cp_init sample_init = {
	.seccomp_bpf = (uint8_t *)sample_bpf,
	.seccomp_len = sizeof(sample_bpf),
	.env = sample_env,
	.envc = 3,
	.cap_keep = 0x123456789abcdef0ull,
	.flags = 5,
};
static const struct cp_fs sample_fs = {
	.op = CP_FS_RENAME,
	.path = "/work/old name",
	.path2 = "/work/new/name",
	.flags = CP_FS_PARENTS | CP_FS_NOREPLACE,
	.mode = 0750,
};

enum { N_SAMPLES = 14 };

/* Encode sample I into W as a whole frame on channel CHAN. */
static int encode_sample(size_t i, struct cp_writer *w, uint32_t chan)
{
	static const uint8_t data[] = "some stdout bytes\n";
	switch (i) {
	case 0: return cp_hello_encode(w, chan, &sample_hello);
	case 1: return cp_error_encode(w, chan, &sample_error);
	case 2: return cp_exec_encode(w, chan, &sample_exec);
	case 3: return cp_started_encode(w, chan, &sample_started);
	case 4: return cp_credit_encode(w, chan, &sample_credit);
	case 5: return cp_exit_encode(w, chan, &sample_exit);
	case 6: return cp_signal_encode(w, chan, &sample_signal);
	case 7: return cp_resize_encode(w, chan, &sample_resize);
	case 8: return cp_stop_encode(w, chan, &sample_stop);
	case 9: return cp_init_encode(w, chan, &sample_init);
	case 10: return cp_empty_encode(w, CP_OK, chan);
	case 11: return cp_empty_encode(w, CP_SHUTDOWN, chan);
	case 12: return cp_data_encode(w, chan, CP_STREAM_STDERR, true, data, sizeof(data) - 1);
	case 13: return cp_fs_encode(w, chan, &sample_fs);
	}
	fail_msg("no sample %zu", i);
	return -EINVAL;
}

/* Encode sample I and check the frame header it produced. */
static void encode_sample_checked(size_t i, struct cp_writer *w, uint32_t chan)
{
	assert_int_equal(encode_sample(i, w, chan), 0);
	assert_true(w->len >= CP_HEADER_SIZE);
	struct cp_header h;
	assert_int_equal(cp_header_decode(w->buf, w->len, &h), 0);
	assert_int_equal(h.len, w->len - CP_HEADER_SIZE);
	assert_int_equal(h.chan, chan);
}

/* ---- frame header --------------------------------------------------------------------- */

static void test_header_round_trip(void **state)
{
	(void)state;
	const struct cp_header cases[] = {
		{ .len = 0, .type = CP_HELLO, .flags = 0, .chan = 0 },
		{ .len = 1234, .type = CP_DATA, .flags = CP_FLAG_EOF | CP_STREAM_STDERR, .chan = 7 },
		{ .len = CP_MAX_PAYLOAD, .type = CP_SHUTDOWN, .flags = 0xffff, .chan = 0xffffffffu },
	};
	for (size_t i = 0; i < N_ELEMS(cases); i++) {
		uint8_t buf[CP_HEADER_SIZE];
		struct cp_header out;
		memset(&out, 0xa5, sizeof(out));
		cp_header_encode(buf, &cases[i]);
		assert_int_equal(cp_header_decode(buf, sizeof(buf), &out), 0);
		assert_int_equal(out.len, cases[i].len);
		assert_int_equal(out.type, cases[i].type);
		assert_int_equal(out.flags, cases[i].flags);
		assert_int_equal(out.chan, cases[i].chan);
	}
}

static void test_header_is_little_endian_on_the_wire(void **state)
{
	(void)state;
	const struct cp_header h = { .len = 0x00010203, .type = CP_EXEC, .flags = 0x0102, .chan = 0x0a0b0c0d };
	const uint8_t want[CP_HEADER_SIZE] = { 0x03, 0x02, 0x01, 0x00, CP_EXEC, 0x00,
					       0x02, 0x01, 0x0d, 0x0c, 0x0b, 0x0a };
	uint8_t buf[CP_HEADER_SIZE];
	cp_header_encode(buf, &h);
	assert_memory_equal(buf, want, sizeof(want));
}

static void test_header_shorter_than_header_size_rejected(void **state)
{
	(void)state;
	uint8_t full[CP_HEADER_SIZE];
	const struct cp_header h = { .len = 0, .type = CP_OK, .flags = 0, .chan = 1 };
	cp_header_encode(full, &h);
	for (size_t n = 0; n < CP_HEADER_SIZE; n++) {
		uint8_t *c = exact_copy(full, n);
		struct cp_header out;
		assert_int_equal(cp_header_decode(c, n, &out), -EBADMSG);
		free(c);
	}
}

static void test_header_len_over_max_payload_rejected(void **state)
{
	(void)state;
	const uint32_t lens[] = { CP_MAX_PAYLOAD + 1, CP_MAX_PAYLOAD * 2, 0x80000000u, 0xffffffffu };
	for (size_t i = 0; i < N_ELEMS(lens); i++) {
		uint8_t buf[CP_HEADER_SIZE];
		const struct cp_header h = { .len = lens[i], .type = CP_DATA, .flags = 0, .chan = 1 };
		struct cp_header out;
		cp_header_encode(buf, &h);
		assert_int_equal(cp_header_decode(buf, sizeof(buf), &out), -EBADMSG);
	}
	uint8_t buf[CP_HEADER_SIZE];
	const struct cp_header max = { .len = CP_MAX_PAYLOAD, .type = CP_DATA, .flags = 0, .chan = 1 };
	struct cp_header out;
	cp_header_encode(buf, &max);
	assert_int_equal(cp_header_decode(buf, sizeof(buf), &out), 0);
	assert_int_equal(out.len, CP_MAX_PAYLOAD);
}

static void test_header_unknown_type_rejected(void **state)
{
	(void)state;
	const uint16_t known[] = { CP_HELLO, CP_ERROR, CP_OK, CP_EXEC, CP_STARTED, CP_DATA, CP_CREDIT,
				   CP_EXIT, CP_SIGNAL, CP_RESIZE, CP_STOP, CP_TAKE, CP_INIT, CP_SHUTDOWN, CP_FS,
				   CP_MOUNT, CP_UNMOUNT, CP_MOUNTS, CP_PORT_ADD, CP_PORT_REMOVE, CP_PORTS, CP_STATS, CP_LIMITS, CP_SAVE,
				   CP_PAUSE, CP_WATCH, CP_NET_ALLOW, CP_NET_DENY, CP_NET_LS,
				   CP_VM_MOUNT, CP_VM_UNMOUNT, CP_VM_MOUNTED, CP_FWD_CONNECT, CP_FWD_CLOSE, CP_DIRECT,
				   CP_DNS_QUERY, CP_EGRESS, CP_EGRESS_USED, CP_VM_LISTENING, CP_SCREENSHOT, CP_INPUT };
	/* Every one of the 65536 type values: only the listed ones decode. */
	for (uint32_t t = 0; t <= 0xffff; t++) {
		bool is_known = false;
		for (size_t i = 0; i < N_ELEMS(known); i++)
			is_known |= known[i] == t;
		uint8_t buf[CP_HEADER_SIZE];
		const struct cp_header h = { .len = 0, .type = (uint16_t)t, .flags = 0, .chan = 0 };
		struct cp_header out;
		cp_header_encode(buf, &h);
		int r = cp_header_decode(buf, sizeof(buf), &out);
		if (is_known) {
			assert_int_equal(r, 0);
			assert_true(cp_type_known((uint16_t)t));
			assert_string_not_equal(cp_type_name((uint16_t)t), "UNKNOWN");
		} else {
			if (r != -EBADMSG)
				fail_msg("type %u accepted", t);
			assert_false(cp_type_known((uint16_t)t));
			assert_string_equal(cp_type_name((uint16_t)t), "UNKNOWN");
		}
	}
}

/* ---- message round trips -------------------------------------------------------------- */

static void test_hello_round_trip(void **state)
{
	(void)state;
	struct cp_writer w;
	cp_writer_init(&w);
	assert_int_equal(cp_hello_encode(&w, 0, &sample_hello), 0);
	struct cp_header h;
	assert_int_equal(cp_header_decode(w.buf, w.len, &h), 0);
	assert_int_equal(h.type, CP_HELLO);
	struct cp_hello m;
	assert_int_equal(cp_hello_decode(w.buf + CP_HEADER_SIZE, h.len, &m), 0);
	assert_int_equal(m.version, CP_VERSION);
	assert_string_equal(m.role, "agent");
	cp_hello_free(&m);

	/* Without a role: the field is left out and decodes as NULL. */
	const struct cp_hello no_role = { .version = 99, .role = NULL };
	assert_int_equal(cp_hello_encode(&w, 0, &no_role), 0);
	assert_int_equal(cp_hello_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &m), 0);
	assert_int_equal(m.version, 99);
	assert_null(m.role);
	assert_int_equal(m.flags, 0);
	cp_hello_free(&m);

	/* A client's flags (CP_HELLO_ONE_COMMAND) come back as sent. */
	const struct cp_hello one = { .version = CP_VERSION, .role = "client", .flags = CP_HELLO_ONE_COMMAND };
	assert_int_equal(cp_hello_encode(&w, 0, &one), 0);
	assert_int_equal(cp_hello_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &m), 0);
	assert_int_equal(m.flags, CP_HELLO_ONE_COMMAND);
	cp_hello_free(&m);
	cp_writer_free(&w);
}

static void test_hello_without_version_rejected(void **state)
{
	(void)state;
	struct cp_writer w;
	cp_writer_init(&w);
	cp_frame_begin(&w, CP_HELLO, 0, 0);
	cp_put_str(&w, CP_T_HELLO_ROLE, "shim");
	assert_int_equal(cp_frame_finish(&w), 0);
	struct cp_hello m;
	assert_int_equal(cp_hello_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &m), -EBADMSG);
	assert_null(m.role);
	cp_writer_free(&w);
}

static void test_error_round_trip(void **state)
{
	(void)state;
	struct cp_writer w;
	cp_writer_init(&w);
	assert_int_equal(cp_error_encode(&w, 5, &sample_error), 0);
	struct cp_header h;
	assert_int_equal(cp_header_decode(w.buf, w.len, &h), 0);
	assert_int_equal(h.type, CP_ERROR);
	assert_int_equal(h.chan, 5);
	struct cp_error_msg m;
	assert_int_equal(cp_error_decode(w.buf + CP_HEADER_SIZE, h.len, &m), 0);
	assert_int_equal(m.errnum, ENOENT);
	assert_string_equal(m.message, sample_error.message);
	cp_error_free(&m);
	cp_writer_free(&w);
}

static void test_error_errno_out_of_range_becomes_eio(void **state)
{
	(void)state;
	const uint32_t bad[] = { 0, 4096, 0x7fffffffu, 0xffffffffu };
	struct cp_writer w;
	cp_writer_init(&w);
	for (size_t i = 0; i < N_ELEMS(bad); i++) {
		const struct cp_error_msg e = { .errnum = bad[i], .message = NULL };
		assert_int_equal(cp_error_encode(&w, 1, &e), 0);
		struct cp_error_msg m;
		assert_int_equal(cp_error_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &m), 0);
		assert_int_equal(m.errnum, EIO);
		assert_null(m.message);
		cp_error_free(&m);
	}
	cp_writer_free(&w);
}

/* docs/protocol.md: ERROR's message is "one line". It comes from the agent, which is inside
 * the boundary, and ends up printed on the user's terminal; a decoded message must not carry
 * newlines or terminal escapes (ESC [ 2 J clears the screen). Rejecting such a message and
 * cleaning it both pass. */
static void test_error_message_with_newline_or_escape_not_passed_through(void **state)
{
	(void)state;
	const char *hostile[] = { "first line\nsecond line", "\x1b[2J\x1b]0;pwned\x07", "carriage\rreturn",
				  "bell\x07 and del\x7f" };
	struct cp_writer w;
	cp_writer_init(&w);
	size_t passed_through = 0;
	for (size_t i = 0; i < N_ELEMS(hostile); i++) {
		cp_frame_begin(&w, CP_ERROR, 0, 1);
		cp_put_u32(&w, CP_T_ERROR_ERRNO, EPERM);
		cp_put_str(&w, CP_T_ERROR_MESSAGE, hostile[i]);
		assert_int_equal(cp_frame_finish(&w), 0);
		struct cp_error_msg m;
		int r = cp_error_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &m);
		if (r == -EBADMSG)
			continue;
		assert_int_equal(r, 0);
		for (const char *c = m.message; c && *c; c++) {
			if ((unsigned char)*c < 0x20 || *c == 0x7f) {
				print_error("message %zu decoded with control byte 0x%02x\n", i, (unsigned char)*c);
				passed_through++;
				break;
			}
		}
		cp_error_free(&m);
	}
	cp_writer_free(&w);
	if (passed_through)
		fail_msg("%zu of %zu ERROR messages kept newlines or escapes", passed_through, N_ELEMS(hostile));
}

static void test_exec_round_trip(void **state)
{
	(void)state;
	struct cp_writer w;
	cp_writer_init(&w);
	assert_int_equal(cp_exec_encode(&w, 3, &sample_exec), 0);
	struct cp_header h;
	assert_int_equal(cp_header_decode(w.buf, w.len, &h), 0);
	assert_int_equal(h.type, CP_EXEC);
	struct cp_exec m;
	assert_int_equal(cp_exec_decode(w.buf + CP_HEADER_SIZE, h.len, &m), 0);
	check_exec_shape(&m);
	assert_true(strv_eq(m.argv, m.argc, sample_exec.argv, sample_exec.argc));
	assert_true(strv_eq(m.env, m.envc, sample_exec.env, sample_exec.envc));
	assert_string_equal(m.cwd, sample_exec.cwd);
	assert_string_equal(m.user, sample_exec.user);
	assert_int_equal(m.flags, sample_exec.flags);
	assert_int_equal(m.rows, sample_exec.rows);
	assert_int_equal(m.cols, sample_exec.cols);
	assert_int_equal(m.timeout_ms, sample_exec.timeout_ms);
	assert_int_equal(m.nfds, sample_exec.nfds);
	cp_exec_free(&m);
	cp_writer_free(&w);
}

/* E encoded and decoded again: the encoder's error, or the decoder's result. */
static int exec_encode_decode(const struct cp_exec *e)
{
	struct cp_writer w;
	cp_writer_init(&w);
	int r = cp_exec_encode(&w, 3, e);
	struct cp_exec m;
	if (r == 0 && (r = cp_exec_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &m)) == 0)
		cp_exec_free(&m);
	cp_writer_free(&w);
	return r;
}

/* What an OCI process adds (tags 9 to 16) comes back as sent; a decoder refuses inheritable or
 * ambient capabilities outside the set, a umask past 0777 and a filter of partial instructions. */
static void test_exec_oci_process_fields_round_trip_and_bounds(void **state)
{
	(void)state;
	char *argv[] = { "true", NULL };
	uint8_t bpf[16] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16 };
	struct cp_exec e = { .argv = argv, .argc = 1, .flags = CP_EXEC_GROUPS, .ngroups = 2, .caps_set = true,
			     .caps = 0x21, .caps_inheritable = 0x1, .caps_ambient = 0x20, .umask_set = true, .umask = 027,
			     .oom_score_adj_set = true, .oom_score_adj = 500, .nrlimits = 1, .seccomp_bpf = bpf,
			     .seccomp_len = sizeof(bpf) };
	e.groups[0] = 5;
	e.groups[1] = 70000;
	e.rlimits[0] = (struct cp_rlimit){ 7, 77, UINT64_MAX };
	struct cp_writer w;
	cp_writer_init(&w);
	assert_int_equal(cp_exec_encode(&w, 3, &e), 0);
	struct cp_exec m;
	assert_int_equal(cp_exec_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &m), 0);
	assert_int_equal(m.flags, CP_EXEC_GROUPS);
	assert_int_equal(m.ngroups, 2);
	assert_int_equal(m.groups[1], 70000);
	assert_true(m.caps_set);
	assert_int_equal(m.caps, 0x21);
	assert_int_equal(m.caps_inheritable, 0x1);
	assert_int_equal(m.caps_ambient, 0x20);
	assert_true(m.umask_set && m.umask == 027);
	assert_true(m.oom_score_adj_set && m.oom_score_adj == 500);
	assert_int_equal(m.nrlimits, 1);
	assert_int_equal(m.rlimits[0].resource, 7);
	assert_int_equal(m.rlimits[0].soft, 77);
	assert_true(m.rlimits[0].hard == UINT64_MAX);
	assert_int_equal(m.seccomp_len, sizeof(bpf));
	assert_memory_equal(m.seccomp_bpf, bpf, sizeof(bpf));
	cp_exec_free(&m);

	cp_writer_free(&w);
	e.caps_ambient = 0x2; /* not in caps */
	assert_int_equal(exec_encode_decode(&e), -EBADMSG);
	e.caps_ambient = 0x20;
	e.umask = 01000;
	assert_int_equal(exec_encode_decode(&e), -EBADMSG);
	e.umask = 022;
	e.seccomp_len = 12;
	assert_int_equal(exec_encode_decode(&e), -E2BIG);
}

/* The count of descriptors an EXEC passes: 1 to CP_EXEC_MAX_FDS on the wire, absent for none. */
static void test_exec_fds_count_round_trips_within_its_bound(void **state)
{
	(void)state;
	char *argv[] = { "true", NULL };
	struct cp_exec e = { .argv = argv, .argc = 1, .nfds = CP_EXEC_MAX_FDS };
	struct cp_writer w;
	cp_writer_init(&w);
	assert_int_equal(cp_exec_encode(&w, 3, &e), 0);
	struct cp_exec m;
	assert_int_equal(cp_exec_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &m), 0);
	assert_int_equal(m.nfds, CP_EXEC_MAX_FDS);
	cp_exec_free(&m);
	cp_writer_free(&w);
	e.nfds = CP_EXEC_MAX_FDS + 1;
	assert_int_equal(exec_encode_decode(&e), -E2BIG);
	/* A hostile encoder's: 0 and one past the bound are refused. */
	for (uint32_t bad = 0; bad <= CP_EXEC_MAX_FDS + 1; bad += CP_EXEC_MAX_FDS + 1) {
		cp_writer_init(&w);
		cp_frame_begin(&w, CP_EXEC, 0, 3);
		cp_put_str(&w, CP_T_EXEC_ARG, "true");
		cp_put_u32(&w, CP_T_EXEC_FDS, bad);
		assert_int_equal(cp_frame_finish(&w), 0);
		assert_int_equal(cp_exec_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &m), -EBADMSG);
		cp_writer_free(&w);
	}
}

static void test_exec_minimal_round_trip_gives_empty_env_and_null_cwd_user(void **state)
{
	(void)state;
	char *argv[] = { "true", NULL };
	const struct cp_exec e = { .argv = argv, .argc = 1 };
	struct cp_writer w;
	cp_writer_init(&w);
	assert_int_equal(cp_exec_encode(&w, 3, &e), 0);
	struct cp_exec m;
	assert_int_equal(cp_exec_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &m), 0);
	check_exec_shape(&m);
	assert_int_equal(m.argc, 1);
	assert_string_equal(m.argv[0], "true");
	assert_int_equal(m.envc, 0);
	assert_non_null(m.env);
	assert_null(m.env[0]);
	assert_null(m.cwd);
	assert_null(m.user);
	assert_int_equal(m.rows, 0);
	assert_int_equal(m.cols, 0);
	assert_int_equal(m.timeout_ms, 0);
	cp_exec_free(&m);
	cp_writer_free(&w);
}

static void test_exec_with_zero_args_rejected(void **state)
{
	(void)state;
	char *argv[] = { NULL };
	const struct cp_exec e = { .argv = argv, .argc = 0, .env = sample_env, .envc = 3, .cwd = "/" };
	struct cp_writer w;
	cp_writer_init(&w);
	/* The encoder refuses to make it... */
	assert_int_equal(cp_exec_encode(&w, 3, &e), -EINVAL);
	/* ...and the decoder refuses it from a peer that made it anyway. */
	cp_frame_begin(&w, CP_EXEC, 0, 3);
	for (size_t i = 0; sample_env[i]; i++)
		cp_put_str(&w, CP_T_EXEC_ENV, sample_env[i]);
	cp_put_str(&w, CP_T_EXEC_CWD, "/");
	assert_int_equal(cp_frame_finish(&w), 0);
	struct cp_exec m;
	assert_int_equal(cp_exec_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &m), -EBADMSG);
	assert_null(m.argv);
	assert_null(m.env);
	assert_null(m.cwd);
	/* An empty payload is an EXEC without args as well. */
	assert_int_equal(cp_exec_decode(NULL, 0, &m), -EBADMSG);
	cp_writer_free(&w);
}

/* An EXEC payload with one arg "sh" and the given rows/cols, built field by field. */
static void exec_payload_with_size(struct cp_writer *w, uint32_t rows, uint32_t cols)
{
	cp_frame_begin(w, CP_EXEC, 0, 3);
	cp_put_str(w, CP_T_EXEC_ARG, "sh");
	cp_put_u32(w, CP_T_EXEC_ROWS, rows);
	cp_put_u32(w, CP_T_EXEC_COLS, cols);
	assert_int_equal(cp_frame_finish(w), 0);
}

static void test_exec_rows_or_cols_over_16_bits_rejected(void **state)
{
	(void)state;
	char *argv[] = { "sh", NULL };
	struct cp_exec e = { .argv = argv, .argc = 1, .rows = 0x10000, .cols = 80 };
	struct cp_writer w;
	cp_writer_init(&w);
	struct cp_exec m;
	assert_int_equal(cp_exec_encode(&w, 3, &e), -EINVAL);
	exec_payload_with_size(&w, 0x10000, 80);
	assert_int_equal(cp_exec_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &m), -EBADMSG);
	e.rows = 24;
	e.cols = 0xffffffffu;
	assert_int_equal(cp_exec_encode(&w, 3, &e), -EINVAL);
	exec_payload_with_size(&w, 24, 0xffffffffu);
	assert_int_equal(cp_exec_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &m), -EBADMSG);
	e.rows = 0xffff;
	e.cols = 0xffff;
	assert_int_equal(cp_exec_encode(&w, 3, &e), 0);
	assert_int_equal(cp_exec_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &m), 0);
	cp_exec_free(&m);
	cp_writer_free(&w);
}

static void test_started_round_trip(void **state)
{
	(void)state;
	struct cp_writer w;
	cp_writer_init(&w);
	encode_sample_checked(3, &w, 9);
	struct cp_started m;
	assert_int_equal(cp_started_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &m), 0);
	assert_int_equal(m.pid, sample_started.pid);
	cp_writer_free(&w);
}

static void test_credit_round_trip(void **state)
{
	(void)state;
	struct cp_writer w;
	cp_writer_init(&w);
	encode_sample_checked(4, &w, 9);
	struct cp_credit m;
	assert_int_equal(cp_credit_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &m), 0);
	assert_int_equal(m.stream, sample_credit.stream);
	assert_int_equal(m.bytes, sample_credit.bytes);
	cp_writer_free(&w);
}

static void test_exit_round_trip_keeps_negative_exit_code(void **state)
{
	(void)state;
	struct cp_writer w;
	cp_writer_init(&w);
	encode_sample_checked(5, &w, 9);
	struct cp_exit m;
	assert_int_equal(cp_exit_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &m), 0);
	assert_true(m.exit_code == -1);
	assert_int_equal(m.signal, 9);
	assert_int_equal(m.timed_out, 1);
	cp_writer_free(&w);
}

static void test_signal_round_trip(void **state)
{
	(void)state;
	struct cp_writer w;
	cp_writer_init(&w);
	encode_sample_checked(6, &w, 9);
	struct cp_signal m;
	assert_int_equal(cp_signal_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &m), 0);
	assert_int_equal(m.signo, 15);
	assert_int_equal(m.pid, 77);
	cp_writer_free(&w);
}

static void test_resize_round_trip(void **state)
{
	(void)state;
	struct cp_writer w;
	cp_writer_init(&w);
	encode_sample_checked(7, &w, 9);
	struct cp_resize m;
	assert_int_equal(cp_resize_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &m), 0);
	assert_int_equal(m.rows, 50);
	assert_int_equal(m.cols, 132);
	cp_writer_free(&w);
}

static void test_stop_round_trip(void **state)
{
	(void)state;
	struct cp_writer w;
	cp_writer_init(&w);
	encode_sample_checked(8, &w, 0);
	struct cp_stop m;
	assert_int_equal(cp_stop_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &m), 0);
	assert_int_equal(m.timeout_ms, 10000);
	assert_int_equal(m.keep, 0);
	assert_int_equal(m.remove, 1);
	/* Every field is optional. */
	assert_int_equal(cp_stop_decode(NULL, 0, &m), 0);
	assert_int_equal(m.timeout_ms, 0);
	assert_int_equal(m.remove, 0);
	cp_writer_free(&w);
}

static void test_init_round_trip(void **state)
{
	(void)state;
	struct cp_writer w;
	cp_writer_init(&w);
	encode_sample_checked(9, &w, 0);
	struct cp_init m;
	assert_int_equal(cp_init_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &m), 0);
	check_init_shape(&m);
	assert_int_equal(m.seccomp_len, sizeof(sample_bpf));
	assert_memory_equal(m.seccomp_bpf, sample_bpf, sizeof(sample_bpf));
	assert_true(strv_eq(m.env, m.envc, sample_env, 3));
	assert_true(m.cap_keep == sample_init.cap_keep);
	assert_int_equal(m.flags, 5);
	cp_init_free(&m);

	/* No filter, no env: NULL filter, empty (but terminated) env. */
	const struct cp_init bare = { .cap_keep = 0, .flags = 0 };
	assert_int_equal(cp_init_encode(&w, 0, &bare), 0);
	assert_int_equal(cp_init_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &m), 0);
	check_init_shape(&m);
	assert_null(m.seccomp_bpf);
	assert_int_equal(m.envc, 0);
	cp_init_free(&m);
	cp_writer_free(&w);
}

/* The agent is not trusted: an entry's name must be one component. "/" is the root's name in
 * a STAT reply, and must never come as a LIST record (cp would make the host's "/"). */
static void test_fs_entry_names_root_only_in_stat_replies(void **state)
{
	(void)state;
	static const char *const bad[] = { "", ".", "..", "a/b", "/a", "//" };
	struct cp_writer w;
	cp_writer_init(&w);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]) + 2; i++) {
		const char *name = i == 0 ? "file" : i == 1 ? "/" : bad[i - 2];
		bool root = strcmp(name, "/") == 0, good = i < 2;
		struct cp_fs_entry e = { .name = (char *)name, .kind = CP_FS_KIND_DIR, .mode = 0755 }, m;
		w.len = 0;
		assert_int_equal(cp_fs_entry_encode_ok(&w, 5, &e), 0);
		assert_int_equal(cp_fs_entry_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &m),
				 good ? 0 : -EBADMSG);
		if (good) {
			assert_string_equal(m.name, name);
			cp_fs_entry_free(&m);
		}
		w.len = 0;
		assert_int_equal(cp_fs_record_append(&w, &e), 0);
		struct cp_reader r = { .p = w.buf, .rem = w.len };
		assert_int_equal(cp_fs_record_next(&r, &m), good && !root ? 1 : -EBADMSG);
		if (good && !root)
			cp_fs_entry_free(&m);
	}
	cp_writer_free(&w);
}

static void test_empty_and_data_frames_round_trip(void **state)
{
	(void)state;
	struct cp_writer w;
	cp_writer_init(&w);
	struct cp_header h;
	assert_int_equal(cp_empty_encode(&w, CP_OK, 12), 0);
	assert_int_equal(w.len, CP_HEADER_SIZE);
	assert_int_equal(cp_header_decode(w.buf, w.len, &h), 0);
	assert_int_equal(h.type, CP_OK);
	assert_int_equal(h.len, 0);
	assert_int_equal(h.chan, 12);

	const char bytes[] = "abc\0def";
	assert_int_equal(cp_data_encode(&w, 4, CP_STREAM_STDOUT, false, bytes, sizeof(bytes)), 0);
	assert_int_equal(cp_header_decode(w.buf, w.len, &h), 0);
	assert_int_equal(h.type, CP_DATA);
	assert_int_equal(h.len, sizeof(bytes));
	assert_int_equal(h.flags, CP_STREAM_STDOUT);
	assert_memory_equal(w.buf + CP_HEADER_SIZE, bytes, sizeof(bytes));

	assert_int_equal(cp_data_encode(&w, 4, CP_STREAM_STDERR, true, NULL, 0), 0);
	assert_int_equal(cp_header_decode(w.buf, w.len, &h), 0);
	assert_int_equal(h.len, 0);
	assert_int_equal(h.flags, CP_STREAM_STDERR | CP_FLAG_EOF);
	cp_writer_free(&w);
}

static void test_unknown_field_tags_are_skipped(void **state)
{
	(void)state;
	struct cp_writer w;
	cp_writer_init(&w);
	cp_frame_begin(&w, CP_STARTED, 0, 1);
	cp_put_str(&w, 999, "from a newer peer");
	cp_put_u32(&w, CP_T_STARTED_PID, 31);
	cp_put_bytes(&w, 0xffff, NULL, 0);
	assert_int_equal(cp_frame_finish(&w), 0);
	struct cp_started m;
	assert_int_equal(cp_started_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &m), 0);
	assert_int_equal(m.pid, 31);
	cp_writer_free(&w);
}

static void test_repeated_string_field_keeps_last_value_without_leak(void **state)
{
	(void)state;
	struct cp_writer w;
	cp_writer_init(&w);
	cp_frame_begin(&w, CP_EXEC, 0, 1);
	cp_put_str(&w, CP_T_EXEC_ARG, "sh");
	cp_put_str(&w, CP_T_EXEC_CWD, "/first");
	cp_put_str(&w, CP_T_EXEC_CWD, "/second");
	cp_put_str(&w, CP_T_EXEC_USER, "a");
	cp_put_str(&w, CP_T_EXEC_USER, "b");
	assert_int_equal(cp_frame_finish(&w), 0);
	struct cp_exec m;
	assert_int_equal(cp_exec_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &m), 0);
	assert_string_equal(m.cwd, "/second");
	assert_string_equal(m.user, "b");
	cp_exec_free(&m);
	cp_writer_free(&w);
}

static void test_required_u32_fields_missing_rejected(void **state)
{
	(void)state;
	struct cp_writer w;
	cp_writer_init(&w);
	struct cp_started st;
	struct cp_credit cr;
	struct cp_exit ex;
	struct cp_signal sg;
	struct cp_resize rs;
	assert_int_equal(cp_started_decode(NULL, 0, &st), -EBADMSG);
	assert_int_equal(cp_exit_decode(NULL, 0, &ex), -EBADMSG);
	assert_int_equal(cp_signal_decode(NULL, 0, &sg), -EBADMSG);

	cp_frame_begin(&w, CP_CREDIT, 0, 1);
	cp_put_u32(&w, CP_T_CREDIT_STREAM, 1);
	assert_int_equal(cp_frame_finish(&w), 0);
	assert_int_equal(cp_credit_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &cr), -EBADMSG);

	cp_frame_begin(&w, CP_RESIZE, 0, 1);
	cp_put_u32(&w, CP_T_RESIZE_COLS, 80);
	assert_int_equal(cp_frame_finish(&w), 0);
	assert_int_equal(cp_resize_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &rs), -EBADMSG);

	/* Optional fields may be missing. */
	cp_frame_begin(&w, CP_EXIT, 0, 1);
	cp_put_u32(&w, CP_T_EXIT_CODE, 0);
	assert_int_equal(cp_frame_finish(&w), 0);
	assert_int_equal(cp_exit_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &ex), 0);
	assert_int_equal(ex.signal, 0);
	assert_int_equal(ex.timed_out, 0);
	cp_writer_free(&w);
}

static void test_integer_field_with_wrong_length_rejected(void **state)
{
	(void)state;
	const uint8_t junk[9] = { 1, 2, 3, 4, 5, 6, 7, 8, 9 };
	struct cp_writer w;
	cp_writer_init(&w);
	for (size_t len = 0; len <= sizeof(junk); len++) {
		struct cp_started st;
		struct cp_hello he;
		struct cp_exec ex;
		struct cp_init in;
		if (len != 4) {
			cp_frame_begin(&w, CP_STARTED, 0, 1);
			cp_put_bytes(&w, CP_T_STARTED_PID, junk, len);
			assert_int_equal(cp_frame_finish(&w), 0);
			assert_int_equal(cp_started_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &st),
					 -EBADMSG);

			cp_frame_begin(&w, CP_HELLO, 0, 0);
			cp_put_bytes(&w, CP_T_HELLO_VERSION, junk, len);
			assert_int_equal(cp_frame_finish(&w), 0);
			assert_int_equal(cp_hello_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &he),
					 -EBADMSG);

			cp_frame_begin(&w, CP_EXEC, 0, 1);
			cp_put_str(&w, CP_T_EXEC_ARG, "sh");
			cp_put_bytes(&w, CP_T_EXEC_FLAGS, junk, len);
			assert_int_equal(cp_frame_finish(&w), 0);
			assert_int_equal(cp_exec_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &ex),
					 -EBADMSG);
		}
		if (len != 8) {
			cp_frame_begin(&w, CP_INIT, 0, 0);
			cp_put_str(&w, CP_T_INIT_ENV, "A=1");
			cp_put_bytes(&w, CP_T_INIT_CAP_KEEP, junk, len);
			assert_int_equal(cp_frame_finish(&w), 0);
			assert_int_equal(cp_init_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &in),
					 -EBADMSG);
			assert_null(in.env);
		}
	}
	cp_writer_free(&w);
}

/* ---- hostile lengths ------------------------------------------------------------------ */

/* Field start offsets of a well-formed payload, plus its end. */
static size_t field_boundaries(const uint8_t *p, size_t n, size_t *out, size_t max)
{
	struct cp_reader r = { .p = p, .rem = n };
	struct cp_field f;
	size_t k = 0;
	out[k++] = 0;
	int ret;
	while ((ret = cp_next_field(&r, &f)) > 0) {
		assert_true(k < max);
		out[k++] = n - r.rem;
	}
	assert_int_equal(ret, 0);
	return k;
}

static bool in_list(size_t v, const size_t *list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (list[i] == v)
			return true;
	return false;
}

static void test_every_truncation_of_every_message_rejected_or_decoded_cleanly(void **state)
{
	(void)state;
	struct cp_writer w;
	cp_writer_init(&w);
	for (size_t i = 0; i < N_SAMPLES; i++) {
		encode_sample_checked(i, &w, 1);
		struct cp_header h;
		assert_int_equal(cp_header_decode(w.buf, w.len, &h), 0);
		const uint8_t *payload = w.buf + CP_HEADER_SIZE;
		if (h.type == CP_DATA)
			continue; /* raw bytes, no fields */
		size_t bounds[64];
		size_t nb = field_boundaries(payload, h.len, bounds, N_ELEMS(bounds));
		for (size_t k = 0; k <= h.len; k++) {
			uint8_t *c = exact_copy(payload, k);
			int r = decode_by_type(h.type, c, k);
			free(c);
			if (!in_list(k, bounds, nb)) {
				/* Cut inside a field: its header or value runs past the end. */
				if (r != -EBADMSG)
					fail_msg("%s cut at %zu of %u: got %d, want -EBADMSG", cp_type_name(h.type),
						 k, h.len, r);
			} else if (r != 0 && r != -EBADMSG) {
				fail_msg("%s cut at %zu of %u: got %d", cp_type_name(h.type), k, h.len, r);
			}
			if (k == h.len)
				assert_int_equal(r, 0);
		}
	}
	cp_writer_free(&w);
}

static void test_field_length_running_past_end_rejected(void **state)
{
	(void)state;
	struct cp_writer w;
	cp_writer_init(&w);
	for (size_t i = 0; i < N_SAMPLES; i++) {
		encode_sample_checked(i, &w, 1);
		struct cp_header h;
		assert_int_equal(cp_header_decode(w.buf, w.len, &h), 0);
		if (h.type == CP_DATA || h.len == 0)
			continue;
		size_t bounds[64];
		size_t nb = field_boundaries(w.buf + CP_HEADER_SIZE, h.len, bounds, N_ELEMS(bounds));
		/* Make each field in turn claim more bytes than the payload has left. */
		for (size_t b = 0; b + 1 < nb; b++) {
			size_t rest = h.len - bounds[b] - 6;
			const uint32_t claims[] = { (uint32_t)rest + 1, (uint32_t)rest + 6, CP_MAX_PAYLOAD,
						    0x7fffffffu, 0xfffffffau, 0xffffffffu };
			for (size_t c = 0; c < N_ELEMS(claims); c++) {
				uint8_t *copy = exact_copy(w.buf + CP_HEADER_SIZE, h.len);
				set_le32_at(copy + bounds[b] + 2, claims[c]);
				int r = decode_by_type(h.type, copy, h.len);
				free(copy);
				if (r != -EBADMSG)
					fail_msg("%s field %zu claiming %u bytes: got %d", cp_type_name(h.type), b,
						 claims[c], r);
			}
		}
	}
	cp_writer_free(&w);
}

static void test_next_field_rejects_partial_field_header(void **state)
{
	(void)state;
	const uint8_t full[6] = { 1, 0, 0, 0, 0, 0 };
	for (size_t n = 1; n < 6; n++) {
		uint8_t *c = exact_copy(full, n);
		struct cp_reader r = { .p = c, .rem = n };
		struct cp_field f;
		assert_int_equal(cp_next_field(&r, &f), -EBADMSG);
		free(c);
	}
	uint8_t *c = exact_copy(full, 6);
	struct cp_reader r = { .p = c, .rem = 6 };
	struct cp_field f;
	assert_int_equal(cp_next_field(&r, &f), 1);
	assert_int_equal(f.tag, 1);
	assert_int_equal(f.len, 0);
	assert_int_equal(cp_next_field(&r, &f), 0);
	free(c);
}

/* A payload with one string field TAG holding N bytes of S, preceded by PREFIX_ARG (an EXEC
 * needs one arg to get past the argc check). */
static void build_string_field(struct cp_writer *w, uint16_t type, uint16_t tag, const void *s, size_t n,
			       const char *prefix_arg)
{
	cp_frame_begin(w, type, 0, 1);
	if (type == CP_HELLO)
		cp_put_u32(w, CP_T_HELLO_VERSION, CP_VERSION);
	if (prefix_arg)
		cp_put_str(w, CP_T_EXEC_ARG, prefix_arg);
	cp_put_bytes(w, tag, s, n);
	assert_int_equal(cp_frame_finish(w), 0);
}

struct string_site {
	uint16_t type, tag;
	const char *prefix_arg;
};
static const struct string_site string_sites[] = {
	{ CP_HELLO, CP_T_HELLO_ROLE, NULL },
	{ CP_ERROR, CP_T_ERROR_MESSAGE, NULL },
	{ CP_EXEC, CP_T_EXEC_ARG, NULL },
	{ CP_EXEC, CP_T_EXEC_ENV, "sh" },
	{ CP_EXEC, CP_T_EXEC_CWD, "sh" },
	{ CP_EXEC, CP_T_EXEC_USER, "sh" },
	{ CP_INIT, CP_T_INIT_ENV, NULL },
};

static void test_strings_with_embedded_nul_rejected(void **state)
{
	(void)state;
	const char *with_nul[] = { "ab\0cd", "\0", "abc\0", "\0abc" };
	const size_t lens[] = { 5, 1, 4, 4 };
	struct cp_writer w;
	cp_writer_init(&w);
	for (size_t s = 0; s < N_ELEMS(string_sites); s++) {
		for (size_t k = 0; k < N_ELEMS(with_nul); k++) {
			build_string_field(&w, string_sites[s].type, string_sites[s].tag, with_nul[k], lens[k],
					   string_sites[s].prefix_arg);
			int r = decode_by_type(string_sites[s].type, w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE);
			if (r != -EBADMSG)
				fail_msg("%s tag %u with NUL at case %zu: got %d", cp_type_name(string_sites[s].type),
					 string_sites[s].tag, k, r);
		}
		/* The same site without the NUL decodes: the rejection is about the NUL. */
		build_string_field(&w, string_sites[s].type, string_sites[s].tag, "abcd", 4, string_sites[s].prefix_arg);
		assert_int_equal(decode_by_type(string_sites[s].type, w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE), 0);
	}
	cp_writer_free(&w);
}

static void test_strings_longer_than_max_string_rejected(void **state)
{
	(void)state;
	char *big = malloc(CP_MAX_STRING + 1);
	assert_non_null(big);
	memset(big, 'x', CP_MAX_STRING + 1);
	struct cp_writer w;
	cp_writer_init(&w);
	for (size_t s = 0; s < N_ELEMS(string_sites); s++) {
		build_string_field(&w, string_sites[s].type, string_sites[s].tag, big, CP_MAX_STRING + 1,
				   string_sites[s].prefix_arg);
		int r = decode_by_type(string_sites[s].type, w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE);
		if (r != -EBADMSG)
			fail_msg("%s tag %u with %u bytes: got %d", cp_type_name(string_sites[s].type),
				 string_sites[s].tag, CP_MAX_STRING + 1, r);
		build_string_field(&w, string_sites[s].type, string_sites[s].tag, big, CP_MAX_STRING,
				   string_sites[s].prefix_arg);
		r = decode_by_type(string_sites[s].type, w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE);
		if (r != 0)
			fail_msg("%s tag %u with exactly %u bytes: got %d", cp_type_name(string_sites[s].type),
				 string_sites[s].tag, CP_MAX_STRING, r);
	}
	cp_writer_free(&w);
	free(big);
}

/* An EXEC (or INIT) with COUNT repetitions of string field TAG. */
static void build_repeated(struct cp_writer *w, uint16_t type, uint16_t tag, size_t count)
{
	cp_frame_begin(w, type, 0, 1);
	if (type == CP_EXEC && tag != CP_T_EXEC_ARG)
		cp_put_str(w, CP_T_EXEC_ARG, "sh");
	for (size_t i = 0; i < count; i++)
		cp_put_str(w, tag, "a=b");
	assert_int_equal(cp_frame_finish(w), 0);
}

static void test_more_than_max_args_or_env_rejected(void **state)
{
	(void)state;
	struct cp_writer w;
	cp_writer_init(&w);
	struct cp_exec m;
	struct cp_init in;

	build_repeated(&w, CP_EXEC, CP_T_EXEC_ARG, CP_MAX_ARGS);
	assert_int_equal(cp_exec_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &m), 0);
	assert_int_equal(m.argc, CP_MAX_ARGS);
	check_exec_shape(&m);
	cp_exec_free(&m);
	build_repeated(&w, CP_EXEC, CP_T_EXEC_ARG, CP_MAX_ARGS + 1);
	assert_int_equal(cp_exec_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &m), -EBADMSG);
	assert_null(m.argv);

	build_repeated(&w, CP_EXEC, CP_T_EXEC_ENV, CP_MAX_ENV);
	assert_int_equal(cp_exec_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &m), 0);
	assert_int_equal(m.envc, CP_MAX_ENV);
	cp_exec_free(&m);
	build_repeated(&w, CP_EXEC, CP_T_EXEC_ENV, CP_MAX_ENV + 1);
	assert_int_equal(cp_exec_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &m), -EBADMSG);

	build_repeated(&w, CP_INIT, CP_T_INIT_ENV, CP_MAX_ENV);
	assert_int_equal(cp_init_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &in), 0);
	assert_int_equal(in.envc, CP_MAX_ENV);
	cp_init_free(&in);
	build_repeated(&w, CP_INIT, CP_T_INIT_ENV, CP_MAX_ENV + 1);
	assert_int_equal(cp_init_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &in), -EBADMSG);
	cp_writer_free(&w);
}

static void test_init_seccomp_not_multiple_of_8_or_empty_or_too_big_rejected(void **state)
{
	(void)state;
	uint8_t *bpf = calloc(1, CP_MAX_SECCOMP_BYTES + 8);
	assert_non_null(bpf);
	struct cp_writer w;
	cp_writer_init(&w);
	struct cp_init m;
	const size_t bad[] = { 0, 1, 7, 9, 12, 15, CP_MAX_SECCOMP_BYTES - 1, CP_MAX_SECCOMP_BYTES + 8 };
	for (size_t i = 0; i < N_ELEMS(bad); i++) {
		cp_frame_begin(&w, CP_INIT, 0, 0);
		cp_put_bytes(&w, CP_T_INIT_SECCOMP, bpf, bad[i]);
		cp_put_str(&w, CP_T_INIT_ENV, "A=1");
		assert_int_equal(cp_frame_finish(&w), 0);
		int r = cp_init_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &m);
		if (r != -EBADMSG)
			fail_msg("seccomp of %zu bytes: got %d", bad[i], r);
		assert_null(m.seccomp_bpf);
		assert_null(m.env);
	}
	const size_t good[] = { 8, 16, CP_MAX_SECCOMP_BYTES };
	for (size_t i = 0; i < N_ELEMS(good); i++) {
		cp_frame_begin(&w, CP_INIT, 0, 0);
		cp_put_bytes(&w, CP_T_INIT_SECCOMP, bpf, good[i]);
		assert_int_equal(cp_frame_finish(&w), 0);
		assert_int_equal(cp_init_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &m), 0);
		assert_int_equal(m.seccomp_len, good[i]);
		cp_init_free(&m);
	}
	/* A second filter is not silently dropped or concatenated. */
	cp_frame_begin(&w, CP_INIT, 0, 0);
	cp_put_bytes(&w, CP_T_INIT_SECCOMP, bpf, 8);
	cp_put_bytes(&w, CP_T_INIT_SECCOMP, bpf, 8);
	assert_int_equal(cp_frame_finish(&w), 0);
	assert_int_equal(cp_init_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &m), -EBADMSG);
	assert_null(m.seccomp_bpf);
	cp_writer_free(&w);
	free(bpf);
}

/* ---- writer limits -------------------------------------------------------------------- */

static void test_writer_refuses_to_exceed_max_payload_with_sticky_emsgsize(void **state)
{
	(void)state;
	uint8_t *big = calloc(1, CP_MAX_PAYLOAD + 1);
	assert_non_null(big);
	struct cp_writer w;
	cp_writer_init(&w);

	/* Exactly CP_MAX_PAYLOAD: one field of MAX - 6 value bytes. */
	cp_frame_begin(&w, CP_EXEC, 0, 1);
	cp_put_bytes(&w, 100, big, CP_MAX_PAYLOAD - 6);
	assert_int_equal(cp_frame_finish(&w), 0);
	assert_int_equal(w.len, CP_HEADER_SIZE + CP_MAX_PAYLOAD);
	assert_int_equal(le32_at(w.buf), CP_MAX_PAYLOAD);

	/* One byte more fails, and the error sticks: later small puts change nothing. */
	cp_frame_begin(&w, CP_EXEC, 0, 1);
	cp_put_str(&w, CP_T_EXEC_ARG, "sh");
	size_t before = w.len;
	cp_put_bytes(&w, 100, big, CP_MAX_PAYLOAD - 6 - 8 + 1);
	assert_int_equal(w.err, -EMSGSIZE);
	assert_int_equal(w.len, before);
	cp_put_u32(&w, CP_T_EXEC_FLAGS, 1);
	cp_put_str(&w, CP_T_EXEC_CWD, "/");
	assert_int_equal(w.err, -EMSGSIZE);
	assert_int_equal(w.len, before);
	assert_int_equal(cp_frame_finish(&w), -EMSGSIZE);

	/* Many small fields that add up past the limit fail the same way. */
	cp_frame_begin(&w, CP_EXEC, 0, 1);
	size_t puts = 0;
	while (w.err == 0) {
		cp_put_bytes(&w, 100, big, 4000);
		puts++;
		assert_true(puts < CP_MAX_PAYLOAD / 4000 + 2);
	}
	assert_int_equal(w.err, -EMSGSIZE);
	assert_true(w.len <= CP_HEADER_SIZE + CP_MAX_PAYLOAD);
	assert_int_equal(cp_frame_finish(&w), -EMSGSIZE);

	/* A new frame starts clean. */
	assert_int_equal(cp_started_encode(&w, 1, &sample_started), 0);
	assert_int_equal(w.err, 0);

	/* DATA: CP_MAX_PAYLOAD raw bytes fit, one more does not. */
	assert_int_equal(cp_data_encode(&w, 1, CP_STREAM_STDOUT, false, big, CP_MAX_PAYLOAD), 0);
	assert_int_equal(w.len, CP_HEADER_SIZE + CP_MAX_PAYLOAD);
	assert_int_equal(cp_data_encode(&w, 1, CP_STREAM_STDOUT, false, big, CP_MAX_PAYLOAD + 1), -EMSGSIZE);

	/* Message encoders report it too: an EXEC whose args add up past the limit. */
	char *s = malloc(CP_MAX_STRING + 1);
	assert_non_null(s);
	memset(s, 'y', CP_MAX_STRING);
	s[CP_MAX_STRING] = '\0';
	size_t n = CP_MAX_PAYLOAD / CP_MAX_STRING + 1;
	char **argv = calloc(n + 1, sizeof(char *));
	assert_non_null(argv);
	for (size_t i = 0; i < n; i++)
		argv[i] = s;
	const struct cp_exec e = { .argv = argv, .argc = n };
	assert_int_equal(cp_exec_encode(&w, 1, &e), -EMSGSIZE);
	free(argv);
	free(s);
	cp_writer_free(&w);
	free(big);
}

/* ---- rx buffer ------------------------------------------------------------------------ */

struct rx_frame {
	struct cp_header hdr;
	uint8_t *payload;
};

struct rx_result {
	struct rx_frame *frames;
	size_t n;
	int final;          /* 0: clean EOF; -EBADMSG: the rx buffer called the stream corrupt */
	size_t reads;       /* cp_rxbuf_fill calls that returned data */
	size_t max_cap;     /* the largest the rx buffer ever got */
};

static void rx_result_free(struct rx_result *res)
{
	for (size_t i = 0; i < res->n; i++)
		free(res->frames[i].payload);
	free(res->frames);
	memset(res, 0, sizeof(*res));
}

/* Drain every whole frame at the front of RX into RES; returns peek's last answer (0 or < 0). */
static int rx_drain(struct cp_rxbuf *rx, struct rx_result *res)
{
	for (;;) {
		struct cp_header h;
		const uint8_t *payload = NULL;
		int r = cp_rxbuf_peek(rx, &h, &payload);
		if (r <= 0)
			return r;
		assert_int_equal(r, 1);
		assert_true(h.len <= CP_MAX_PAYLOAD);
		struct rx_frame *nf = realloc(res->frames, (res->n + 1) * sizeof(*nf));
		assert_non_null(nf);
		res->frames = nf;
		nf[res->n].hdr = h;
		nf[res->n].payload = exact_copy(payload, h.len);
		res->n++;
		cp_rxbuf_consume(rx, &h);
	}
}

/* Write STREAM into a non-blocking pipe CHUNK bytes at a time, reading it back with
 * cp_rxbuf_fill after every write and collecting the frames, until EOF or a corrupt stream. */
static void pump_through_pipe(const uint8_t *stream, size_t len, size_t chunk, struct rx_result *res)
{
	memset(res, 0, sizeof(*res));
	int fds[2];
	assert_int_equal(pipe2(fds, O_NONBLOCK | O_CLOEXEC), 0);
	struct cp_rxbuf rx;
	cp_rxbuf_init(&rx);
	size_t off = 0;
	bool closed = false;
	for (;;) {
		int r = rx_drain(&rx, res);
		if (r < 0) {
			res->final = r;
			break;
		}
		if (off < len) {
			size_t n = len - off < chunk ? len - off : chunk;
			ssize_t wr = write(fds[1], stream + off, n);
			if (wr > 0)
				off += (size_t)wr;
			else
				assert_true(wr < 0 && errno == EAGAIN);
		}
		if (off == len && !closed) {
			close(fds[1]);
			closed = true;
		}
		long got = cp_rxbuf_fill(&rx, fds[0]);
		if (rx.cap > res->max_cap)
			res->max_cap = rx.cap;
		if (got == 0)
			break;
		if (got > 0)
			res->reads++;
		else if (got != -EAGAIN)
			fail_msg("cp_rxbuf_fill: %ld", got);
	}
	if (res->final == 0) {
		/* EOF: whatever is left must be an incomplete frame, never a whole one. */
		struct cp_header h;
		const uint8_t *payload;
		assert_true(cp_rxbuf_peek(&rx, &h, &payload) <= 0);
	}
	if (!closed)
		close(fds[1]);
	close(fds[0]);
	cp_rxbuf_free(&rx);
}

/* All samples, COPIES times over, on rising channel numbers, concatenated. */
static uint8_t *sample_stream(size_t copies, size_t *len_out)
{
	struct cp_writer w;
	cp_writer_init(&w);
	uint8_t *stream = NULL;
	size_t len = 0;
	for (size_t c = 0; c < copies; c++) {
		for (size_t i = 0; i < N_SAMPLES; i++) {
			encode_sample_checked(i, &w, (uint32_t)(c * N_SAMPLES + i));
			uint8_t *ns = realloc(stream, len + w.len);
			assert_non_null(ns);
			stream = ns;
			memcpy(stream + len, w.buf, w.len);
			len += w.len;
		}
	}
	cp_writer_free(&w);
	*len_out = len;
	return stream;
}

/* The frames in RES are exactly the samples of sample_stream(COPIES), in order. */
static void check_sample_frames(const struct rx_result *res, size_t copies)
{
	assert_int_equal(res->final, 0);
	assert_int_equal(res->n, copies * N_SAMPLES);
	struct cp_writer w;
	cp_writer_init(&w);
	for (size_t k = 0; k < res->n; k++) {
		encode_sample_checked(k % N_SAMPLES, &w, (uint32_t)k);
		struct cp_header h;
		assert_int_equal(cp_header_decode(w.buf, w.len, &h), 0);
		assert_int_equal(res->frames[k].hdr.type, h.type);
		assert_int_equal(res->frames[k].hdr.flags, h.flags);
		assert_int_equal(res->frames[k].hdr.chan, h.chan);
		assert_int_equal(res->frames[k].hdr.len, h.len);
		assert_memory_equal(res->frames[k].payload, w.buf + CP_HEADER_SIZE, h.len);
		assert_int_equal(decode_by_type(h.type, res->frames[k].payload, h.len), 0);
	}
	cp_writer_free(&w);
}

static void test_rxbuf_assembles_frames_delivered_one_byte_at_a_time(void **state)
{
	(void)state;
	size_t len;
	uint8_t *stream = sample_stream(2, &len);
	struct rx_result res;
	pump_through_pipe(stream, len, 1, &res);
	check_sample_frames(&res, 2);
	assert_int_equal(res.reads, len); /* each byte came in its own read */
	rx_result_free(&res);
	free(stream);
}

static void test_rxbuf_yields_many_frames_from_one_read(void **state)
{
	(void)state;
	size_t len;
	uint8_t *stream = sample_stream(20, &len);
	assert_true(len < 64 * 1024); /* fits the pipe and the first fill */
	struct rx_result res;
	pump_through_pipe(stream, len, len, &res);
	check_sample_frames(&res, 20);
	assert_int_equal(res.reads, 1);
	rx_result_free(&res);
	free(stream);
}

static void test_rxbuf_assembles_frames_split_at_odd_sizes(void **state)
{
	(void)state;
	size_t len;
	uint8_t *stream = sample_stream(30, &len);
	const size_t chunks[] = { 2, 3, 5, 11, 12, 13, 100, 4093 };
	for (size_t i = 0; i < N_ELEMS(chunks); i++) {
		struct rx_result res;
		pump_through_pipe(stream, len, chunks[i], &res);
		check_sample_frames(&res, 30);
		rx_result_free(&res);
	}
	free(stream);
}

static void test_rxbuf_corrupt_header_returns_ebadmsg(void **state)
{
	(void)state;
	struct cp_writer w;
	cp_writer_init(&w);
	encode_sample_checked(3, &w, 1);
	const size_t good = w.len;
	const struct cp_header bad[] = {
		{ .len = 0, .type = 0, .flags = 0, .chan = 1 },               /* unknown type */
		{ .len = 4, .type = 0x7777, .flags = 0, .chan = 1 },          /* unknown type */
		{ .len = CP_MAX_PAYLOAD + 1, .type = CP_DATA, .flags = 0, .chan = 1 }, /* too long */
		{ .len = 0xffffffffu, .type = CP_EXEC, .flags = 0, .chan = 1 },
	};
	for (size_t i = 0; i < N_ELEMS(bad); i++) {
		uint8_t stream[256];
		memcpy(stream, w.buf, good);
		cp_header_encode(stream + good, &bad[i]);
		memset(stream + good + CP_HEADER_SIZE, 0x41, 32);
		const size_t chunks[] = { 1, sizeof(stream) };
		for (size_t c = 0; c < N_ELEMS(chunks); c++) {
			struct rx_result res;
			pump_through_pipe(stream, good + CP_HEADER_SIZE + 32, chunks[c], &res);
			assert_int_equal(res.n, 1); /* the good frame before it still comes out */
			assert_int_equal(res.frames[0].hdr.type, CP_STARTED);
			assert_int_equal(res.final, -EBADMSG);
			rx_result_free(&res);
		}
	}

	/* The verdict is stable: peeking again says the same. */
	int fds[2];
	assert_int_equal(pipe2(fds, O_NONBLOCK | O_CLOEXEC), 0);
	uint8_t hdr[CP_HEADER_SIZE];
	cp_header_encode(hdr, &bad[0]);
	assert_int_equal(write(fds[1], hdr, sizeof(hdr)), (ssize_t)sizeof(hdr));
	struct cp_rxbuf rx;
	cp_rxbuf_init(&rx);
	assert_int_equal(cp_rxbuf_fill(&rx, fds[0]), CP_HEADER_SIZE);
	struct cp_header h;
	const uint8_t *payload;
	assert_int_equal(cp_rxbuf_peek(&rx, &h, &payload), -EBADMSG);
	assert_int_equal(cp_rxbuf_peek(&rx, &h, &payload), -EBADMSG);
	cp_rxbuf_free(&rx);
	close(fds[0]);
	close(fds[1]);
	cp_writer_free(&w);
}

static void test_rxbuf_reports_eagain_then_eof(void **state)
{
	(void)state;
	int fds[2];
	assert_int_equal(pipe2(fds, O_NONBLOCK | O_CLOEXEC), 0);
	struct cp_rxbuf rx;
	cp_rxbuf_init(&rx);
	struct cp_header h;
	const uint8_t *payload;
	assert_int_equal(cp_rxbuf_peek(&rx, &h, &payload), 0);
	assert_int_equal(cp_rxbuf_fill(&rx, fds[0]), -EAGAIN);
	close(fds[1]);
	assert_int_equal(cp_rxbuf_fill(&rx, fds[0]), 0);
	assert_int_equal(cp_rxbuf_peek(&rx, &h, &payload), 0);
	cp_rxbuf_free(&rx);
	close(fds[0]);
	assert_int_equal(cp_rxbuf_fill(&rx, -1), -EBADF);
	cp_rxbuf_free(&rx);
}

/* Send frame BUF (N bytes), with descriptor FD when it is >= 0, in one sendmsg. */
/* BUF (N bytes) with the NFDS descriptors FDS in one SCM_RIGHTS message. */
static void send_frame_fds(int sock, const uint8_t *buf, size_t n, const int *fds, size_t nfds)
{
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int) * CP_EXEC_MAX_FDS)];
	} ctl;
	memset(&ctl, 0, sizeof(ctl));
	struct iovec iov = { (void *)buf, n };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	if (nfds) {
		msg.msg_control = ctl.b;
		msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
	}
	assert_int_equal(sendmsg(sock, &msg, 0), (ssize_t)n);
}

static void send_frame_fd(int sock, const uint8_t *buf, size_t n, int fd)
{
	send_frame_fds(sock, buf, n, &fd, fd >= 0);
}

/* An EXEC's descriptors (--preserve-fds) come out of the frame they came with all together and
 * in the order sent, whatever came before; another frame's are left to be closed with it. */
static void test_rxbuf_an_execs_descriptors_come_out_in_order(void **state)
{
	(void)state;
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	uint8_t f[2][CP_HEADER_SIZE + 4];
	for (uint32_t i = 0; i < 2; i++) {
		const struct cp_header h = { .len = 4, .type = CP_DATA, .flags = CP_STREAM_STDOUT, .chan = i + 1 };
		cp_header_encode(f[i], &h);
		memset(f[i] + CP_HEADER_SIZE, 'a' + (int)i, 4);
	}
	int pipes[CP_EXEC_MAX_FDS][2], reads[CP_EXEC_MAX_FDS];
	for (int i = 0; i < CP_EXEC_MAX_FDS; i++) {
		assert_int_equal(pipe2(pipes[i], O_CLOEXEC), 0);
		reads[i] = pipes[i][0];
	}
	int junk[2];
	assert_int_equal(pipe2(junk, O_CLOEXEC), 0);
	send_frame_fds(sv[0], f[0], sizeof(f[0]), junk, 1);
	send_frame_fds(sv[0], f[1], sizeof(f[1]), reads, CP_EXEC_MAX_FDS);
	for (int i = 0; i < CP_EXEC_MAX_FDS; i++)
		close(pipes[i][0]);
	close(junk[0]);
	struct cp_rxbuf rx;
	cp_rxbuf_init(&rx);
	struct cp_header h;
	const uint8_t *payload;
	int got[CP_EXEC_MAX_FDS];
	for (uint32_t want = 1; want <= 2; want++) {
		while (cp_rxbuf_peek(&rx, &h, &payload) == 0)
			assert_true(cp_rxbuf_fill_fds(&rx, sv[1]) > 0);
		assert_int_equal(h.chan, want);
		if (want == 2)
			assert_int_equal(cp_rxbuf_take_fds(&rx, &h, got, CP_EXEC_MAX_FDS), CP_EXEC_MAX_FDS);
		cp_rxbuf_consume(&rx, &h); /* frame 1's is not taken: closed here */
	}
	assert_int_equal(rx.nfds, 0);
	for (int i = 0; i < CP_EXEC_MAX_FDS; i++) {
		char c = (char)i;
		assert_int_equal(write(pipes[i][1], &c, 1), 1);
		char back = -1;
		assert_int_equal(read(got[i], &back, 1), 1);
		assert_int_equal(back, c);
		close(got[i]);
		close(pipes[i][1]);
	}
	signal(SIGPIPE, SIG_IGN);
	assert_int_equal(write(junk[1], "y", 1), -1);
	assert_int_equal(errno, EPIPE);
	close(junk[1]);
	cp_rxbuf_free(&rx);
	close(sv[0]);
	close(sv[1]);
}

/* A descriptor belongs to the frame sent with it, whichever frames arrive in the same read:
 * taken from that frame only, and closed when its frame is consumed without being taken. */
static void test_rxbuf_descriptors_belong_to_the_frame_they_came_with(void **state)
{
	(void)state;
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	uint8_t f[3][CP_HEADER_SIZE + 4];
	for (uint32_t i = 0; i < 3; i++) {
		const struct cp_header h = { .len = 4, .type = CP_DATA, .flags = CP_STREAM_STDOUT, .chan = i + 1 };
		cp_header_encode(f[i], &h);
		memset(f[i] + CP_HEADER_SIZE, 'a' + (int)i, 4);
	}
	int p1[2], p2[2];
	assert_int_equal(pipe2(p1, O_CLOEXEC), 0);
	assert_int_equal(pipe2(p2, O_CLOEXEC), 0);
	send_frame_fd(sv[0], f[0], sizeof(f[0]), -1);
	send_frame_fd(sv[0], f[1], sizeof(f[1]), p1[0]);
	send_frame_fd(sv[0], f[2], sizeof(f[2]), p2[0]);
	close(p1[0]);
	close(p2[0]);
	struct cp_rxbuf rx;
	cp_rxbuf_init(&rx);
	struct cp_header h;
	const uint8_t *payload;
	int got1 = -1;
	for (uint32_t want = 1; want <= 3; want++) {
		while (cp_rxbuf_peek(&rx, &h, &payload) == 0)
			assert_true(cp_rxbuf_fill_fds(&rx, sv[1]) > 0);
		assert_int_equal(h.chan, want);
		if (want == 1)
			assert_int_equal(cp_rxbuf_take_fd(&rx, &h), -1);
		if (want == 2) {
			got1 = cp_rxbuf_take_fd(&rx, &h);
			assert_true(got1 >= 0);
			assert_int_equal(cp_rxbuf_take_fd(&rx, &h), -1);
		}
		cp_rxbuf_consume(&rx, &h); /* frame 3's descriptor is not taken: closed here */
	}
	assert_int_equal(rx.nfds, 0);
	/* The one taken is p1's read end: what is written to p1 comes out of it. */
	assert_int_equal(write(p1[1], "x", 1), 1);
	char c = 0;
	assert_int_equal(read(got1, &c, 1), 1);
	assert_int_equal(c, 'x');
	close(got1);
	/* p2's read end is closed everywhere: its write end sees no reader. */
	signal(SIGPIPE, SIG_IGN);
	assert_int_equal(write(p2[1], "y", 1), -1);
	assert_int_equal(errno, EPIPE);
	close(p1[1]);
	close(p2[1]);
	cp_rxbuf_free(&rx);
	close(sv[0]);
	close(sv[1]);
}

/* A DATA frame of LEN payload bytes with a recognisable pattern, with a raw header (so LEN may
 * be over the limit). */
static uint8_t *raw_data_frame(uint32_t len, uint32_t chan, size_t *out_len)
{
	uint8_t *f = malloc(CP_HEADER_SIZE + (size_t)len);
	assert_non_null(f);
	const struct cp_header h = { .len = len, .type = CP_DATA, .flags = CP_STREAM_STDOUT, .chan = chan };
	cp_header_encode(f, &h);
	for (size_t i = 0; i < len; i++)
		f[CP_HEADER_SIZE + i] = (uint8_t)(i * 7 + chan);
	*out_len = CP_HEADER_SIZE + (size_t)len;
	return f;
}

static void test_rxbuf_accepts_max_payload_frame_and_rejects_one_byte_more(void **state)
{
	(void)state;
	size_t n;
	uint8_t *f = raw_data_frame(CP_MAX_PAYLOAD, 3, &n);
	struct rx_result res;
	pump_through_pipe(f, n, 65536, &res);
	assert_int_equal(res.final, 0);
	assert_int_equal(res.n, 1);
	assert_int_equal(res.frames[0].hdr.len, CP_MAX_PAYLOAD);
	assert_memory_equal(res.frames[0].payload, f + CP_HEADER_SIZE, CP_MAX_PAYLOAD);
	assert_true(res.max_cap <= CP_HEADER_SIZE + CP_MAX_PAYLOAD);
	rx_result_free(&res);
	free(f);

	f = raw_data_frame(CP_MAX_PAYLOAD + 1, 3, &n);
	pump_through_pipe(f, n, 65536, &res);
	assert_int_equal(res.final, -EBADMSG);
	assert_int_equal(res.n, 0);
	assert_true(res.max_cap <= CP_HEADER_SIZE + CP_MAX_PAYLOAD);
	rx_result_free(&res);
	free(f);
}

/* Big frames that start at an offset inside the buffer force it to grow and to move
 * unconsumed bytes to the front; none of that may lose or corrupt a byte. */
static void test_rxbuf_mixed_small_and_max_frames_survive_growth_and_compaction(void **state)
{
	(void)state;
	const uint32_t lens[] = { 5, CP_MAX_PAYLOAD, 0, 70000, 3, CP_MAX_PAYLOAD, CP_MAX_PAYLOAD - 1, 17,
				  65536 - CP_HEADER_SIZE, 65536, 1 };
	uint8_t *stream = NULL;
	size_t len = 0;
	for (size_t i = 0; i < N_ELEMS(lens); i++) {
		size_t n;
		uint8_t *f = raw_data_frame(lens[i], (uint32_t)i, &n);
		uint8_t *ns = realloc(stream, len + n);
		assert_non_null(ns);
		stream = ns;
		memcpy(stream + len, f, n);
		len += n;
		free(f);
	}
	const size_t chunks[] = { 4093, 65536, 10007 };
	for (size_t c = 0; c < N_ELEMS(chunks); c++) {
		struct rx_result res;
		pump_through_pipe(stream, len, chunks[c], &res);
		assert_int_equal(res.final, 0);
		assert_int_equal(res.n, N_ELEMS(lens));
		size_t off = 0;
		for (size_t i = 0; i < N_ELEMS(lens); i++) {
			assert_int_equal(res.frames[i].hdr.len, lens[i]);
			assert_int_equal(res.frames[i].hdr.chan, i);
			assert_memory_equal(res.frames[i].payload, stream + off + CP_HEADER_SIZE, lens[i]);
			off += CP_HEADER_SIZE + lens[i];
		}
		assert_true(res.max_cap <= CP_HEADER_SIZE + CP_MAX_PAYLOAD);
		rx_result_free(&res);
	}
	free(stream);
}

/* proto.h promises that the payload pointer from cp_rxbuf_peek stays "valid until
 * cp_rxbuf_consume". A cp_rxbuf_fill in between may compact the buffer (move the unconsumed
 * bytes to the front) and read new bytes over the old place, so the pointer then shows other
 * bytes. This test holds the code to the header's words; it fails while either the code (do
 * not compact past a peeked frame) or the header ("... or the next cp_rxbuf_fill") differs. */
static void test_rxbuf_unconsumed_frame_survives_a_fill(void **state)
{
	(void)state;
	size_t na, nb, nc;
	uint8_t *a = raw_data_frame(30000, 1, &na);
	uint8_t *b = raw_data_frame(30000, 2, &nb);
	uint8_t *c = raw_data_frame(10000, 3, &nc);
	int fds[2];
	assert_int_equal(pipe2(fds, O_NONBLOCK | O_CLOEXEC), 0);
	assert_int_equal(write(fds[1], a, na), (ssize_t)na);
	assert_int_equal(write(fds[1], b, nb), (ssize_t)nb);
	struct cp_rxbuf rx;
	cp_rxbuf_init(&rx);
	assert_int_equal(cp_rxbuf_fill(&rx, fds[0]), (long)(na + nb));

	struct cp_header h;
	const uint8_t *payload;
	assert_int_equal(cp_rxbuf_peek(&rx, &h, &payload), 1);
	assert_int_equal(h.chan, 1);
	cp_rxbuf_consume(&rx, &h);
	assert_int_equal(cp_rxbuf_peek(&rx, &h, &payload), 1);
	assert_int_equal(h.chan, 2);
	assert_memory_equal(payload, b + CP_HEADER_SIZE, 30000);

	/* More bytes arrive before frame 2 is consumed. */
	assert_int_equal(write(fds[1], c, nc), (ssize_t)nc);
	long got = cp_rxbuf_fill(&rx, fds[0]);
	assert_true(got > 0);

	/* A fill may move the buffer (the old pointer is documented as stale), but the frame
	 * itself is still whole at the front. */
	const uint8_t *again;
	assert_int_equal(cp_rxbuf_peek(&rx, &h, &again), 1);
	assert_int_equal(h.chan, 2);
	assert_memory_equal(again, b + CP_HEADER_SIZE, 30000);
	cp_rxbuf_free(&rx);
	close(fds[0]);
	close(fds[1]);
	free(a);
	free(b);
	free(c);
}

/* ---- filesystem requests, entries and LIST records ------------------------------------ */

/* A string of N copies of C, NUL-terminated, to be freed. */
static char *repeat_char(char c, size_t n)
{
	char *s = malloc(n + 1);
	assert_non_null(s);
	memset(s, c, n);
	s[n] = '\0';
	return s;
}

static void fs_round_trip(const struct cp_fs *in)
{
	struct cp_writer w;
	cp_writer_init(&w);
	assert_int_equal(cp_fs_encode(&w, 11, in), 0);
	struct cp_header h;
	assert_int_equal(cp_header_decode(w.buf, w.len, &h), 0);
	assert_int_equal(h.type, CP_FS);
	assert_int_equal(h.chan, 11);
	assert_int_equal(h.len, w.len - CP_HEADER_SIZE);
	uint8_t *c = exact_copy(w.buf + CP_HEADER_SIZE, h.len);
	struct cp_fs m;
	assert_int_equal(cp_fs_decode(c, h.len, &m), 0);
	check_fs_shape(&m);
	if (!fs_eq(in, &m))
		fail_msg("op %u path '%.40s' did not round trip", in->op, in->path);
	cp_fs_free(&m);
	free(c);
	cp_writer_free(&w);
}

static void test_fs_round_trip_every_op(void **state)
{
	(void)state;
	for (uint32_t op = CP_FS_STAT; op <= CP_FS_SYMLINK; op++) {
		struct cp_fs m = { .op = op, .path = "/work/a file" };
		if (op == CP_FS_RENAME)
			m.path2 = "/work/b";
		if (op == CP_FS_SYMLINK)
			m.path2 = "../relative target";
		fs_round_trip(&m);
		/* Every flag and the largest mode. */
		m.flags = CP_FS_PARENTS | CP_FS_RECURSIVE | CP_FS_FORCE | CP_FS_NOREPLACE;
		m.mode = 07777;
		fs_round_trip(&m);
		/* A second path where the op ignores it still decodes (the agent ignores it too). */
		if (!m.path2) {
			m.path2 = "/ignored";
			fs_round_trip(&m);
		}
	}
	/* Paths of exactly CP_FS_PATH_MAX bytes. */
	char *max = repeat_char('p', CP_FS_PATH_MAX);
	max[0] = '/';
	const struct cp_fs big = { .op = CP_FS_RENAME, .path = max, .path2 = max, .mode = 0644 };
	fs_round_trip(&big);
	free(max);
}

static void test_fs_encode_refuses_missing_or_long_path(void **state)
{
	(void)state;
	char *long_path = repeat_char('p', CP_FS_PATH_MAX + 1);
	struct cp_writer w;
	cp_writer_init(&w);
	const struct cp_fs no_path = { .op = CP_FS_STAT };
	const struct cp_fs long1 = { .op = CP_FS_STAT, .path = long_path };
	const struct cp_fs long2 = { .op = CP_FS_RENAME, .path = "/a", .path2 = long_path };
	assert_int_equal(cp_fs_encode(&w, 1, &no_path), -EINVAL);
	assert_int_equal(cp_fs_encode(&w, 1, &long1), -EINVAL);
	assert_int_equal(cp_fs_encode(&w, 1, &long2), -EINVAL);
	cp_writer_free(&w);
	free(long_path);
}

/* One CP_FS payload built field by field: the encoder refuses some of what a hostile peer can
 * send. A NULL string or a false has_* leaves that field out. */
struct fs_fields {
	const char *what;
	bool has_op;
	uint32_t op;
	const char *path, *path2;
	bool has_mode;
	uint32_t mode;
};

static void build_fs(struct cp_writer *w, const struct fs_fields *f)
{
	cp_frame_begin(w, CP_FS, 0, 1);
	if (f->has_op)
		cp_put_u32(w, CP_T_FS_OP, f->op);
	if (f->path)
		cp_put_bytes(w, CP_T_FS_PATH, f->path, strlen(f->path));
	if (f->path2)
		cp_put_bytes(w, CP_T_FS_PATH2, f->path2, strlen(f->path2));
	if (f->has_mode)
		cp_put_u32(w, CP_T_FS_MODE, f->mode);
	assert_int_equal(cp_frame_finish(w), 0);
}

static void test_fs_bad_requests_rejected(void **state)
{
	(void)state;
	char *long_path = repeat_char('p', CP_FS_PATH_MAX + 1);
	char *max_path = repeat_char('p', CP_FS_PATH_MAX);
	const struct fs_fields bad[] = {
		{ "no op", false, 0, "/a", NULL, false, 0 },
		{ "op 0", true, 0, "/a", NULL, false, 0 },
		{ "op 9", true, CP_FS_SYMLINK + 1, "/a", NULL, false, 0 },
		{ "op 0xffffffff", true, 0xffffffffu, "/a", NULL, false, 0 },
		{ "no path", true, CP_FS_STAT, NULL, NULL, false, 0 },
		{ "no path, only path2", true, CP_FS_RENAME, NULL, "/b", false, 0 },
		{ "path too long", true, CP_FS_READ, long_path, NULL, false, 0 },
		{ "path2 too long", true, CP_FS_RENAME, "/a", long_path, false, 0 },
		{ "symlink target too long", true, CP_FS_SYMLINK, "/a", long_path, false, 0 },
		{ "rename without path2", true, CP_FS_RENAME, "/a", NULL, false, 0 },
		{ "symlink without path2", true, CP_FS_SYMLINK, "/a", NULL, false, 0 },
		{ "mode 010000", true, CP_FS_MKDIR, "/a", NULL, true, 010000 },
		{ "mode 0xffffffff", true, CP_FS_WRITE, "/a", NULL, true, 0xffffffffu },
	};
	/* The same shapes one step inside the limits decode: the rejections are about the limits. */
	const struct fs_fields good[] = {
		{ "op 1", true, CP_FS_STAT, "/a", NULL, false, 0 },
		{ "op 8", true, CP_FS_SYMLINK, "/a", "b", false, 0 },
		{ "path at the limit", true, CP_FS_READ, max_path, NULL, false, 0 },
		{ "path2 at the limit", true, CP_FS_RENAME, "/a", max_path, false, 0 },
		{ "mode 07777", true, CP_FS_MKDIR, "/a", NULL, true, 07777 },
	};
	struct cp_writer w;
	cp_writer_init(&w);
	for (size_t i = 0; i < N_ELEMS(bad); i++) {
		build_fs(&w, &bad[i]);
		uint8_t *c = exact_copy(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE);
		struct cp_fs m;
		memset(&m, 0xa5, sizeof(m));
		int r = cp_fs_decode(c, w.len - CP_HEADER_SIZE, &m);
		if (r != -EBADMSG)
			fail_msg("%s: got %d, want -EBADMSG", bad[i].what, r);
		/* Nothing is left allocated (ASan's leak check sees the rest). */
		assert_null(m.path);
		assert_null(m.path2);
		free(c);
	}
	for (size_t i = 0; i < N_ELEMS(good); i++) {
		build_fs(&w, &good[i]);
		struct cp_fs m;
		int r = cp_fs_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &m);
		if (r != 0)
			fail_msg("%s: got %d, want 0", good[i].what, r);
		check_fs_shape(&m);
		cp_fs_free(&m);
	}
	cp_writer_free(&w);
	free(long_path);
	free(max_path);
}

static void test_fs_strings_with_nul_rejected(void **state)
{
	(void)state;
	struct cp_writer w;
	cp_writer_init(&w);
	struct cp_fs m;
	cp_frame_begin(&w, CP_FS, 0, 1);
	cp_put_u32(&w, CP_T_FS_OP, CP_FS_STAT);
	cp_put_bytes(&w, CP_T_FS_PATH, "/a\0/etc/shadow", 14);
	assert_int_equal(cp_frame_finish(&w), 0);
	assert_int_equal(cp_fs_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &m), -EBADMSG);

	cp_frame_begin(&w, CP_FS, 0, 1);
	cp_put_u32(&w, CP_T_FS_OP, CP_FS_RENAME);
	cp_put_str(&w, CP_T_FS_PATH, "/a");
	cp_put_bytes(&w, CP_T_FS_PATH2, "/b\0c", 4);
	assert_int_equal(cp_frame_finish(&w), 0);
	assert_int_equal(cp_fs_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &m), -EBADMSG);

	struct cp_fs_entry e;
	cp_frame_begin(&w, CP_OK, 0, 1);
	cp_put_bytes(&w, CP_T_ENT_NAME, "ok\0/../x", 8);
	cp_put_u32(&w, CP_T_ENT_KIND, CP_FS_KIND_FILE);
	assert_int_equal(cp_frame_finish(&w), 0);
	assert_int_equal(cp_fs_entry_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &e), -EBADMSG);
	assert_null(e.name);

	cp_frame_begin(&w, CP_OK, 0, 1);
	cp_put_str(&w, CP_T_ENT_NAME, "l");
	cp_put_u32(&w, CP_T_ENT_KIND, CP_FS_KIND_SYMLINK);
	cp_put_bytes(&w, CP_T_ENT_LINK, "a\0b", 3);
	assert_int_equal(cp_frame_finish(&w), 0);
	assert_int_equal(cp_fs_entry_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &e), -EBADMSG);
	assert_null(e.name);
	assert_null(e.link);
	cp_writer_free(&w);
}

/* Entries as the agent sends them: every kind, extreme sizes, times before 1970. */
static const struct cp_fs_entry sample_entries[] = {
	{ .name = "file.txt", .kind = CP_FS_KIND_FILE, .size = 12345, .mode = 0644,
	  .mtime_ns = 1700000000123456789LL, .uid = 1000, .gid = 1000 },
	{ .name = "sub dir", .kind = CP_FS_KIND_DIR, .size = 4096, .mode = 02755, .mtime_ns = -1, .uid = 0, .gid = 0 },
	{ .name = "link", .kind = CP_FS_KIND_SYMLINK, .size = 11, .mode = 0777, .mtime_ns = INT64_MIN,
	  .link = "../target x" },
	{ .name = "fifo", .kind = CP_FS_KIND_OTHER, .size = 0, .mode = 0600, .mtime_ns = -1500000000LL,
	  .uid = 0xffffffffu, .gid = 65534 },
	{ .name = "...", .kind = CP_FS_KIND_FILE, .size = UINT64_MAX, .mode = 07777, .mtime_ns = INT64_MAX },
	{ .name = ".hidden", .kind = CP_FS_KIND_SYMLINK, .mode = 0777, .mtime_ns = 0, .link = "" },
};

static void entry_round_trip(const struct cp_fs_entry *in)
{
	struct cp_writer w;
	cp_writer_init(&w);
	assert_int_equal(cp_fs_entry_encode_ok(&w, 5, in), 0);
	struct cp_header h;
	assert_int_equal(cp_header_decode(w.buf, w.len, &h), 0);
	assert_int_equal(h.type, CP_OK);
	assert_int_equal(h.chan, 5);
	uint8_t *c = exact_copy(w.buf + CP_HEADER_SIZE, h.len);
	struct cp_fs_entry m;
	assert_int_equal(cp_fs_entry_decode(c, h.len, &m), 0);
	check_entry_shape(&m);
	if (!entry_eq(in, &m))
		fail_msg("entry '%.40s' did not round trip", in->name);
	cp_fs_entry_free(&m);
	free(c);
	cp_writer_free(&w);
}

static void test_fs_entry_round_trip(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMS(sample_entries); i++)
		entry_round_trip(&sample_entries[i]);
	/* A name of CP_FS_NAME_MAX bytes and a link of CP_FS_PATH_MAX. */
	char *name = repeat_char('n', CP_FS_NAME_MAX);
	char *link = repeat_char('l', CP_FS_PATH_MAX);
	const struct cp_fs_entry big = { .name = name, .kind = CP_FS_KIND_SYMLINK, .mode = 0777, .link = link };
	entry_round_trip(&big);
	free(name);
	free(link);
}

static void test_fs_entry_negative_mtime_round_trips(void **state)
{
	(void)state;
	const int64_t times[] = { -1, -999999999, -1000000000, -1500000000LL, -86400LL * 1000000000LL * 365 * 70,
				  INT64_MIN, INT64_MIN + 1 };
	for (size_t i = 0; i < N_ELEMS(times); i++) {
		struct cp_fs_entry e = { .name = "old", .kind = CP_FS_KIND_FILE, .mode = 0644, .mtime_ns = times[i] };
		struct cp_writer w;
		cp_writer_init(&w);
		assert_int_equal(cp_fs_entry_encode_ok(&w, 1, &e), 0);
		struct cp_fs_entry m;
		assert_int_equal(cp_fs_entry_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &m), 0);
		if (m.mtime_ns != times[i])
			fail_msg("mtime %lld came back as %lld", (long long)times[i], (long long)m.mtime_ns);
		cp_fs_entry_free(&m);
		/* And through a LIST record. */
		cp_writer_free(&w);
		assert_int_equal(cp_fs_record_append(&w, &e), 0);
		struct cp_reader r = { .p = w.buf, .rem = w.len };
		assert_int_equal(cp_fs_record_next(&r, &m), 1);
		assert_true(m.mtime_ns == times[i]);
		cp_fs_entry_free(&m);
		assert_int_equal(cp_fs_record_next(&r, &m), 0);
		cp_writer_free(&w);
	}
}

/* Entries the client must refuse: each would make it write outside the folder it copies into,
 * or misreport what it got. The encoder does not check, so it can send them. */
struct bad_entry {
	const char *what;
	struct cp_fs_entry e;
};

static size_t bad_entries(struct bad_entry *out, char *long_name, char *long_link)
{
	const struct bad_entry b[] = {
		{ "no name", { .name = NULL, .kind = CP_FS_KIND_FILE } },
		{ "empty name", { .name = "", .kind = CP_FS_KIND_FILE } },
		{ "name .", { .name = ".", .kind = CP_FS_KIND_DIR } },
		{ "name ..", { .name = "..", .kind = CP_FS_KIND_DIR } },
		{ "name a/b", { .name = "a/b", .kind = CP_FS_KIND_FILE } },
		{ "name /etc", { .name = "/etc", .kind = CP_FS_KIND_DIR } },
		{ "name ../x", { .name = "../x", .kind = CP_FS_KIND_FILE } },
		{ "name x/", { .name = "x/", .kind = CP_FS_KIND_DIR } },
		{ "name of 256 bytes", { .name = long_name, .kind = CP_FS_KIND_FILE } },
		{ "kind 0", { .name = "x", .kind = 0 } },
		{ "kind 5", { .name = "x", .kind = CP_FS_KIND_OTHER + 1 } },
		{ "kind 0xffffffff", { .name = "x", .kind = 0xffffffffu } },
		{ "mode 010000", { .name = "x", .kind = CP_FS_KIND_FILE, .mode = 010000 } },
		{ "mode with file type bits", { .name = "x", .kind = CP_FS_KIND_FILE, .mode = 0100644 } },
		{ "link on a file", { .name = "x", .kind = CP_FS_KIND_FILE, .link = "/etc" } },
		{ "link on a folder", { .name = "x", .kind = CP_FS_KIND_DIR, .link = "/etc" } },
		{ "link on other", { .name = "x", .kind = CP_FS_KIND_OTHER, .link = "" } },
		{ "link too long", { .name = "x", .kind = CP_FS_KIND_SYMLINK, .link = long_link } },
	};
	memcpy(out, b, sizeof(b));
	return N_ELEMS(b);
}

static void test_fs_entry_bad_rejected(void **state)
{
	(void)state;
	char *long_name = repeat_char('n', CP_FS_NAME_MAX + 1);
	char *long_link = repeat_char('l', CP_FS_PATH_MAX + 1);
	struct bad_entry bad[32];
	size_t nbad = bad_entries(bad, long_name, long_link);
	struct cp_writer w;
	cp_writer_init(&w);
	for (size_t i = 0; i < nbad; i++) {
		assert_int_equal(cp_fs_entry_encode_ok(&w, 1, &bad[i].e), 0);
		uint8_t *c = exact_copy(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE);
		struct cp_fs_entry m;
		memset(&m, 0xa5, sizeof(m));
		int r = cp_fs_entry_decode(c, w.len - CP_HEADER_SIZE, &m);
		if (r != -EBADMSG)
			fail_msg("%s: got %d, want -EBADMSG", bad[i].what, r);
		assert_null(m.name);
		assert_null(m.link);
		free(c);
	}
	cp_writer_free(&w);
	free(long_name);
	free(long_link);
}

static void test_fs_entry_every_truncation_rejected_or_decoded_cleanly(void **state)
{
	(void)state;
	struct cp_writer w;
	cp_writer_init(&w);
	for (size_t i = 0; i < N_ELEMS(sample_entries); i++) {
		assert_int_equal(cp_fs_entry_encode_ok(&w, 1, &sample_entries[i]), 0);
		const uint8_t *payload = w.buf + CP_HEADER_SIZE;
		size_t len = w.len - CP_HEADER_SIZE;
		size_t bounds[16];
		size_t nb = field_boundaries(payload, len, bounds, N_ELEMS(bounds));
		for (size_t k = 0; k <= len; k++) {
			uint8_t *c = exact_copy(payload, k);
			struct cp_fs_entry m;
			int r = cp_fs_entry_decode(c, k, &m);
			free(c);
			if (r == 0) {
				check_entry_shape(&m);
				cp_fs_entry_free(&m);
			} else {
				assert_null(m.name);
				assert_null(m.link);
			}
			if (!in_list(k, bounds, nb) && r != -EBADMSG)
				fail_msg("entry %zu cut at %zu of %zu: got %d, want -EBADMSG", i, k, len, r);
			if (r != 0 && r != -EBADMSG)
				fail_msg("entry %zu cut at %zu of %zu: got %d", i, k, len, r);
			/* Name and kind come first: a cut before the kind is refused. */
			if (k < 6 + strlen(sample_entries[i].name) + 6 + 4)
				assert_int_equal(r, -EBADMSG);
			if (k == len)
				assert_int_equal(r, 0);
		}
	}
	cp_writer_free(&w);
}

/* All sample entries as LIST records, one after another; *OFFSETS gets each record's start
 * and then the end. */
static void build_records(struct cp_writer *w, size_t offsets[N_ELEMS(sample_entries) + 1])
{
	cp_writer_init(w);
	for (size_t i = 0; i < N_ELEMS(sample_entries); i++) {
		offsets[i] = w->len;
		assert_int_equal(cp_fs_record_append(w, &sample_entries[i]), 0);
		/* The length prefix counts the entry's fields, not itself. */
		assert_int_equal(le32_at(w->buf + offsets[i]), w->len - offsets[i] - 4);
	}
	offsets[N_ELEMS(sample_entries)] = w->len;
}

static void test_fs_records_round_trip(void **state)
{
	(void)state;
	struct cp_writer w;
	size_t off[N_ELEMS(sample_entries) + 1];
	build_records(&w, off);
	uint8_t *c = exact_copy(w.buf, w.len);
	struct cp_reader r = { .p = c, .rem = w.len };
	struct cp_fs_entry m;
	for (size_t i = 0; i < N_ELEMS(sample_entries); i++) {
		assert_int_equal(cp_fs_record_next(&r, &m), 1);
		check_entry_shape(&m);
		if (!entry_eq(&sample_entries[i], &m))
			fail_msg("record %zu ('%s') did not round trip", i, sample_entries[i].name);
		cp_fs_entry_free(&m);
		assert_int_equal(r.rem, w.len - off[i + 1]);
	}
	assert_int_equal(cp_fs_record_next(&r, &m), 0);
	assert_null(m.name); /* left zeroed at the end too, so a free is safe */
	assert_int_equal(cp_fs_record_next(&r, &m), 0);
	/* An empty payload (a LIST's last DATA frame may be empty) has no records. */
	struct cp_reader empty = { .p = NULL, .rem = 0 };
	assert_int_equal(cp_fs_record_next(&empty, &m), 0);
	free(c);
	cp_writer_free(&w);
}

static void test_fs_record_length_past_payload_rejected(void **state)
{
	(void)state;
	struct cp_writer w;
	size_t off[N_ELEMS(sample_entries) + 1];
	build_records(&w, off);
	for (size_t b = 0; b < N_ELEMS(sample_entries); b++) {
		uint32_t rest = (uint32_t)(w.len - off[b] - 4);
		const uint32_t claims[] = { rest + 1, rest + 4, CP_MAX_PAYLOAD, 0x7fffffffu, 0xfffffffcu, 0xffffffffu };
		for (size_t k = 0; k < N_ELEMS(claims); k++) {
			uint8_t *c = exact_copy(w.buf, w.len);
			set_le32_at(c + off[b], claims[k]);
			size_t count;
			int r = walk_records(c, w.len, &count);
			free(c);
			if (r != -EBADMSG || count != b)
				fail_msg("record %zu claiming %u bytes: got %d after %zu records", b, claims[k], r, count);
		}
		/* A length one short of the entry: its last field would run into the next record. */
		uint8_t *c = exact_copy(w.buf, w.len);
		set_le32_at(c + off[b], (uint32_t)(off[b + 1] - off[b] - 4 - 1));
		size_t count;
		assert_int_equal(walk_records(c, w.len, &count), -EBADMSG);
		assert_int_equal(count, b);
		free(c);
	}
	cp_writer_free(&w);
}

static void test_fs_record_trailing_bytes_rejected(void **state)
{
	(void)state;
	struct cp_writer w;
	size_t off[N_ELEMS(sample_entries) + 1];
	build_records(&w, off);
	const uint8_t junk[4] = { 0, 0, 0, 0 };
	for (size_t extra = 1; extra <= 4; extra++) {
		/* After whole records. */
		uint8_t *c = malloc(w.len + extra);
		assert_non_null(c);
		memcpy(c, w.buf, w.len);
		memcpy(c + w.len, junk, extra);
		size_t count;
		assert_int_equal(walk_records(c, w.len + extra, &count), -EBADMSG);
		assert_int_equal(count, N_ELEMS(sample_entries));
		free(c);
		/* Alone: 1-3 bytes are no length; 4 zero bytes are an empty record, an entry
		 * without a name. */
		c = exact_copy(junk, extra);
		assert_int_equal(walk_records(c, extra, &count), -EBADMSG);
		assert_int_equal(count, 0);
		free(c);
	}
	cp_writer_free(&w);
}

static void test_fs_record_with_bad_entry_rejected(void **state)
{
	(void)state;
	char *long_name = repeat_char('n', CP_FS_NAME_MAX + 1);
	char *long_link = repeat_char('l', CP_FS_PATH_MAX + 1);
	struct bad_entry bad[32];
	size_t nbad = bad_entries(bad, long_name, long_link);
	for (size_t i = 0; i < nbad; i++) {
		/* good, bad, good: the walk stops at the bad one. */
		struct cp_writer w;
		cp_writer_init(&w);
		assert_int_equal(cp_fs_record_append(&w, &sample_entries[0]), 0);
		assert_int_equal(cp_fs_record_append(&w, &bad[i].e), 0);
		assert_int_equal(cp_fs_record_append(&w, &sample_entries[1]), 0);
		uint8_t *c = exact_copy(w.buf, w.len);
		size_t count;
		int r = walk_records(c, w.len, &count);
		if (r != -EBADMSG || count != 1)
			fail_msg("%s: got %d after %zu records, want -EBADMSG after 1", bad[i].what, r, count);
		free(c);
		cp_writer_free(&w);
	}
	free(long_name);
	free(long_link);
}

static void test_fs_records_every_truncation_rejected_or_read_cleanly(void **state)
{
	(void)state;
	struct cp_writer w;
	size_t off[N_ELEMS(sample_entries) + 1];
	build_records(&w, off);
	for (size_t k = 0; k <= w.len; k++) {
		uint8_t *c = exact_copy(w.buf, k);
		size_t count;
		int r = walk_records(c, k, &count);
		free(c);
		size_t whole = 0;
		while (whole < N_ELEMS(sample_entries) && off[whole + 1] <= k)
			whole++;
		bool boundary = in_list(k, off, N_ELEMS(off));
		if (r != (boundary ? 0 : -EBADMSG) || count != whole)
			fail_msg("records cut at %zu of %zu: got %d after %zu records", k, w.len, r, count);
	}
	cp_writer_free(&w);
}

/* ---- port forwards ---------------------------------------------------------------------- */

/* A vm's DNS proxy: the query the agent relays, and the shim's elements and answer. */
static void test_vm_listening_round_trip_and_bounds(void **state)
{
	(void)state;
	struct cp_writer w;
	cp_writer_init(&w);
	struct cp_vm_listening m = { .port = { 22, 8080, 9090 }, .n = 3 }, m2;
	assert_int_equal(cp_vm_listening_encode(&w, 0, &m), 0);
	assert_int_equal(cp_vm_listening_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &m2), 0);
	assert_int_equal(m2.n, 3);
	assert_memory_equal(m2.port, m.port, sizeof(m.port[0]) * 3);
	/* None is a set too (the guest stopped listening). */
	m.n = 0;
	assert_int_equal(cp_vm_listening_encode(&w, 0, &m), 0);
	assert_int_equal(cp_vm_listening_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &m2), 0);
	assert_int_equal(m2.n, 0);
	/* Out of order, repeated, 0: refused both ways. */
	const uint16_t bad[][2] = { { 9090, 8080 }, { 8080, 8080 }, { 0, 8080 } };
	for (size_t i = 0; i < N_ELEMS(bad); i++) {
		m = (struct cp_vm_listening){ .port = { bad[i][0], bad[i][1] }, .n = 2 };
		assert_int_equal(cp_vm_listening_encode(&w, 0, &m), -EINVAL);
		cp_frame_begin(&w, CP_VM_LISTENING, 0, 0);
		cp_put_u32(&w, CP_T_VM_LISTENING_PORT, bad[i][0]);
		cp_put_u32(&w, CP_T_VM_LISTENING_PORT, bad[i][1]);
		assert_int_equal(cp_frame_finish(&w), 0);
		assert_int_equal(cp_vm_listening_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &m2), -EBADMSG);
		assert_int_equal(m2.n, 0);
	}
	/* Past 65535, or more than CP_MAX_VM_LISTENING ports. */
	cp_frame_begin(&w, CP_VM_LISTENING, 0, 0);
	cp_put_u32(&w, CP_T_VM_LISTENING_PORT, 65536);
	assert_int_equal(cp_frame_finish(&w), 0);
	assert_int_equal(cp_vm_listening_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &m2), -EBADMSG);
	cp_frame_begin(&w, CP_VM_LISTENING, 0, 0);
	for (uint32_t p = 1; p <= CP_MAX_VM_LISTENING + 1; p++)
		cp_put_u32(&w, CP_T_VM_LISTENING_PORT, p);
	assert_int_equal(cp_frame_finish(&w), 0);
	assert_int_equal(cp_vm_listening_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &m2), -EBADMSG);
	cp_writer_free(&w);
}

/* A /proc/net/tcp and tcp6: listeners that 127.0.0.1 reaches count, each port once, sorted;
 * connections, and listeners on another address, do not. */
static void test_tcp_listening_ports_reads_procs_tables(void **state)
{
	(void)state;
	const char *tcp =
		"  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
		"   0: 00000000:2382 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1\n"
		"   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1\n"
		"   2: 0F02000A:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1\n"
		"   3: 0100007F:1F90 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 4 1\n";
	const char *tcp6 =
		"  sl  local_address                         remote_address                        st\n"
		"   0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 0\n"
		"   1: 00000000000000000000000001000000:0051 00000000000000000000000000000000:0000 0A 0\n"
		"   2: 0000000000000000FFFF00000100007F:2382 00000000000000000000000000000000:0000 0A 0\n";
	uint16_t ports[4];
	size_t n = tcp_listening_ports(tcp, ports, 0, N_ELEMS(ports));
	n = tcp_listening_ports(tcp6, ports, n, N_ELEMS(ports));
	assert_int_equal(n, 3);
	assert_int_equal(ports[0], 80);
	assert_int_equal(ports[1], 8080);
	assert_int_equal(ports[2], 9090);
	/* MAX bounds it. */
	assert_int_equal(tcp_listening_ports(tcp, ports, 0, 1), 1);
	assert_int_equal(tcp_listening_ports("", ports, 0, 4), 0);
}

static void test_vm_dns_messages_round_trip_and_bounds(void **state)
{
	(void)state;
	struct cp_writer w;
	cp_writer_init(&w);
	static struct cp_dns_packet q, q2;
	q = (struct cp_dns_packet){ .addr = htonl(0x7f000001), .port = 40000, .len = 3, .data = { 1, 2, 3 } };
	assert_int_equal(cp_dns_query_encode(&w, 0, &q), 0);
	assert_int_equal(cp_dns_query_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &q2), 0);
	assert_int_equal(q2.addr, q.addr);
	assert_int_equal(q2.port, 40000);
	assert_int_equal(q2.len, 3);
	assert_memory_equal(q2.data, q.data, 3);
	/* No packet, port 0, or a packet past CP_MAX_DNS_PACKET: refused. */
	q.len = 0;
	assert_int_equal(cp_dns_query_encode(&w, 0, &q), -EINVAL);
	q.len = 3;
	q.port = 0;
	assert_int_equal(cp_dns_query_encode(&w, 0, &q), -EINVAL);
	static uint8_t big[CP_MAX_DNS_PACKET + 1];
	cp_frame_begin(&w, CP_DNS_QUERY, 0, 0);
	cp_put_u32(&w, CP_T_DNS_PORT, 53);
	cp_put_bytes(&w, CP_T_DNS_PACKET, big, sizeof(big));
	assert_int_equal(cp_frame_finish(&w), 0);
	assert_int_equal(cp_dns_query_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &q2), -EBADMSG);
	assert_int_equal(q2.len, 0);

	static struct cp_egress e, e2;
	e = (struct cp_egress){ .ndel = 1, .nadd = 2 };
	e.del[0] = (struct cp_egress_elem){ .addr = htonl(0xc0000201), .port = 443 };
	e.add[0] = (struct cp_egress_elem){ .addr = htonl(0xc0000201), .port = 443, .ttl_s = 60 };
	e.add[1] = (struct cp_egress_elem){ .addr = htonl(0xc0000202), .ttl_s = CP_MAX_EGRESS_TTL_S };
	e.answer = (struct cp_dns_packet){ .addr = htonl(0x7f000001), .port = 5353, .len = 2, .data = { 9, 8 } };
	assert_int_equal(cp_egress_encode(&w, 0, &e), 0);
	assert_int_equal(cp_egress_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &e2), 0);
	assert_int_equal(e2.ndel, 1);
	assert_int_equal(e2.nadd, 2);
	assert_int_equal(e2.del[0].port, 443);
	assert_int_equal(e2.del[0].ttl_s, 0);
	assert_int_equal(e2.add[1].addr, htonl(0xc0000202));
	assert_int_equal(e2.add[1].ttl_s, CP_MAX_EGRESS_TTL_S);
	assert_int_equal(e2.answer.len, 2);
	assert_int_equal(e2.answer.port, 5353);
	/* An added element without a TTL or past a day, and more than 64 of them: refused. */
	e.add[0].ttl_s = 0;
	assert_int_equal(cp_egress_encode(&w, 0, &e), -EINVAL);
	e.add[0].ttl_s = CP_MAX_EGRESS_TTL_S + 1;
	assert_int_equal(cp_egress_encode(&w, 0, &e), -EINVAL);
	cp_frame_begin(&w, CP_EGRESS, 0, 0);
	uint8_t elem[10] = { 192, 0, 2, 1, 0, 0, 60, 0, 0, 0 };
	for (unsigned i = 0; i <= CP_MAX_EGRESS_ELEMS; i++)
		cp_put_bytes(&w, CP_T_EGRESS_ADD, elem, sizeof(elem));
	assert_int_equal(cp_frame_finish(&w), 0);
	assert_int_equal(cp_egress_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &e2), -EBADMSG);
	assert_int_equal(e2.nadd, 0);

	/* The networks: replaced (an empty list too), never with host bits past the prefix. */
	e = (struct cp_egress){ .set_cidrs = true, .ncidrs = 1 };
	e.cidrs[0] = (struct cp_egress_cidr){ .addr = htonl(0xc0000200), .prefix = 24, .port = 53 };
	assert_int_equal(cp_egress_encode(&w, 3, &e), 0);
	assert_int_equal(cp_egress_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &e2), 0);
	assert_true(e2.set_cidrs);
	assert_int_equal(e2.ncidrs, 1);
	assert_int_equal(e2.cidrs[0].prefix, 24);
	assert_int_equal(e2.cidrs[0].port, 53);
	e.ncidrs = 0;
	assert_int_equal(cp_egress_encode(&w, 3, &e), 0);
	assert_int_equal(cp_egress_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &e2), 0);
	assert_true(e2.set_cidrs && e2.ncidrs == 0);
	e.ncidrs = 1;
	e.cidrs[0].addr = htonl(0xc0000201);
	assert_int_equal(cp_egress_encode(&w, 3, &e), -EINVAL);

	struct cp_egress_used u = { .bytes = 1 << 20, .used = 12345 }, u2;
	assert_int_equal(cp_egress_used_encode(&w, 9, &u), 0);
	assert_int_equal(cp_egress_used_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &u2), 0);
	assert_int_equal(u2.bytes, 1 << 20);
	assert_int_equal(u2.used, 12345);
	cp_writer_free(&w);
}

static void test_fwd_connect_round_trip_and_bounds(void **state)
{
	(void)state;
	struct cp_writer w;
	cp_writer_init(&w);
	struct cp_fwd_connect a = { .port = 8080 }, b;
	assert_int_equal(cp_fwd_connect_encode(&w, 0x80000001u, &a), 0);
	struct cp_header h;
	assert_int_equal(cp_header_decode(w.buf, w.len, &h), 0);
	assert_int_equal(h.type, CP_FWD_CONNECT);
	assert_int_equal(h.chan, 0x80000001u);
	assert_int_equal(cp_fwd_connect_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &b), 0);
	assert_int_equal(b.port, 8080);
	/* Port 0, past 65535, absent, or a field of the wrong size: refused both ways. */
	const uint32_t bad[] = { 0, 65536, 0xffffffffu };
	for (size_t i = 0; i < N_ELEMS(bad); i++) {
		a.port = bad[i];
		assert_int_equal(cp_fwd_connect_encode(&w, 1, &a), -EINVAL);
		cp_frame_begin(&w, CP_FWD_CONNECT, 0, 1);
		cp_put_u32(&w, CP_T_FWD_CONNECT_PORT, bad[i]);
		assert_int_equal(cp_frame_finish(&w), 0);
		assert_int_equal(cp_fwd_connect_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &b), -EBADMSG);
		assert_int_equal(b.port, 0);
	}
	assert_int_equal(cp_fwd_connect_decode(NULL, 0, &b), -EBADMSG);
	cp_frame_begin(&w, CP_FWD_CONNECT, 0, 1);
	cp_put_u64(&w, CP_T_FWD_CONNECT_PORT, 80);
	assert_int_equal(cp_frame_finish(&w), 0);
	assert_int_equal(cp_fwd_connect_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &b), -EBADMSG);
	assert_string_equal(cp_type_name(CP_FWD_CONNECT), "FWD_CONNECT");
	assert_string_equal(cp_type_name(CP_FWD_CLOSE), "FWD_CLOSE");
	cp_writer_free(&w);
}

static void test_net_rule_round_trip_and_bounds(void **state)
{
	(void)state;
	struct cp_writer w;
	cp_writer_init(&w);
	struct cp_net_rule a = { .rule = "example.org:443" }, b;
	assert_int_equal(cp_net_rule_encode(&w, CP_NET_ALLOW, 3, &a), 0);
	assert_int_equal(cp_net_rule_decode(CP_NET_ALLOW, w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &b), 0);
	assert_string_equal(b.rule, "example.org:443");
	cp_net_rule_free(&b);
	assert_int_equal(cp_net_rule_decode(CP_NET_DENY, w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &b), 0);
	cp_net_rule_free(&b);
	/* Only ALLOW and DENY carry a rule; an empty or missing one, or one too long, is refused. */
	assert_int_equal(cp_net_rule_decode(CP_NET_LS, w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &b), -EBADMSG);
	assert_null(b.rule);
	char long_rule[CP_MAX_NET_RULE + 2];
	memset(long_rule, 'a', sizeof(long_rule) - 1);
	long_rule[sizeof(long_rule) - 1] = '\0';
	struct cp_net_rule bad[] = { { .rule = NULL }, { .rule = "" }, { .rule = long_rule } };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(cp_net_rule_encode(&w, CP_NET_ALLOW, 1, &bad[i]), -EINVAL);
		cp_frame_begin(&w, CP_NET_ALLOW, 0, 1);
		if (bad[i].rule)
			cp_put_str(&w, CP_T_NET_RULE, bad[i].rule);
		assert_int_equal(cp_frame_finish(&w), 0);
		assert_int_equal(cp_net_rule_decode(CP_NET_ALLOW, w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &b),
				 -EBADMSG);
		assert_null(b.rule);
	}
	cp_writer_free(&w);
}

static void test_port_add_remove_round_trip_and_bounds(void **state)
{
	(void)state;
	struct cp_writer w;
	cp_writer_init(&w);
	struct cp_port a = { .host_ip = "127.0.0.1", .host_port = 8080, .guest_port = 80 };
	assert_int_equal(cp_port_encode(&w, CP_PORT_ADD, 4, &a), 0);
	struct cp_header h;
	assert_int_equal(cp_header_decode(w.buf, w.len, &h), 0);
	assert_int_equal(h.type, CP_PORT_ADD);
	struct cp_port b;
	assert_int_equal(cp_port_decode(CP_PORT_ADD, w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &b), 0);
	assert_string_equal(b.host_ip, "127.0.0.1");
	assert_int_equal(b.host_port, 8080);
	assert_int_equal(b.guest_port, 80);
	/* The same payload is not a PORT_REMOVE: that one has no guest port. */
	struct cp_port c;
	assert_int_equal(cp_port_decode(CP_PORT_REMOVE, w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &c), -EBADMSG);
	assert_null(c.host_ip);
	b.guest_port = 0;
	assert_int_equal(cp_port_encode(&w, CP_PORT_REMOVE, 4, &b), 0);
	cp_port_free(&b);
	assert_int_equal(cp_port_decode(CP_PORT_REMOVE, w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &b), 0);
	assert_int_equal(b.host_port, 8080);
	cp_port_free(&b);
	/* Out of range ports, unknown flags, a missing address: refused both ways. */
	struct cp_port bad[] = {
		{ .host_ip = "127.0.0.1", .host_port = 0, .guest_port = 80 },
		{ .host_ip = "127.0.0.1", .host_port = 70000, .guest_port = 80 },
		{ .host_ip = "127.0.0.1", .host_port = 8080, .guest_port = 65536 },
		{ .host_ip = "127.0.0.1", .host_port = 8080, .guest_port = 80, .flags = 0x10 },
		{ .host_ip = NULL, .host_port = 8080, .guest_port = 80 },
		{ .host_ip = "", .host_port = 8080, .guest_port = 80 },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(cp_port_encode(&w, CP_PORT_ADD, 1, &bad[i]), -EINVAL);
		cp_frame_begin(&w, CP_PORT_ADD, 0, 1);
		if (bad[i].host_ip)
			cp_put_str(&w, CP_T_PORT_HOST_IP, bad[i].host_ip);
		cp_put_u32(&w, CP_T_PORT_HOST_PORT, bad[i].host_port);
		cp_put_u32(&w, CP_T_PORT_GUEST_PORT, bad[i].guest_port);
		cp_put_u32(&w, CP_T_PORT_FLAGS, bad[i].flags);
		assert_int_equal(cp_frame_finish(&w), 0);
		assert_int_equal(cp_port_decode(CP_PORT_ADD, w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &b), -EBADMSG);
		assert_null(b.host_ip);
	}
	/* Every truncation of a good message is refused or decoded, never read past. */
	assert_int_equal(cp_port_encode(&w, CP_PORT_ADD, 1, &a), 0);
	for (size_t n = 0; n < w.len - CP_HEADER_SIZE; n++) {
		uint8_t *p = malloc(n ? n : 1);
		memcpy(p, w.buf + CP_HEADER_SIZE, n);
		int r = cp_port_decode(CP_PORT_ADD, p, n, &b);
		/* Only the flags field may be missing from a good message. */
		assert_true(r == -EBADMSG || (r == 0 && b.flags == 0 && b.guest_port == 80));
		cp_port_free(&b);
		free(p);
	}
	cp_writer_free(&w);
}

/* ---- vm mounts (shim <-> agent) -------------------------------------------------------- */

/* What the agent decodes is what it mounts: a share entry must be one plain name, a tmpfs
 * must have a size, a target must be absolute, and nothing unknown may pass. */
static void test_vm_mount_round_trip_and_what_the_agent_may_be_asked(void **state)
{
	(void)state;
	struct cp_writer w;
	cp_writer_init(&w);
	struct cp_vm_mount a = { .kind = CP_VM_MOUNT_SHARE, .name = "b3", .target = "/mnt/data",
				 .flags = CP_VM_MOUNT_RO | CP_VM_MOUNT_NO_SYMLINKS };
	assert_int_equal(cp_vm_mount_encode(&w, 9, &a), 0);
	struct cp_header h;
	assert_int_equal(cp_header_decode(w.buf, w.len, &h), 0);
	assert_int_equal(h.type, CP_VM_MOUNT);
	assert_string_equal(cp_type_name(h.type), "VM_MOUNT");
	struct cp_vm_mount b;
	assert_int_equal(cp_vm_mount_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &b), 0);
	assert_string_equal(b.name, "b3");
	assert_string_equal(b.target, "/mnt/data");
	assert_int_equal(b.flags, CP_VM_MOUNT_RO | CP_VM_MOUNT_NO_SYMLINKS);
	cp_vm_mount_free(&b);
	struct cp_vm_mount t = { .kind = CP_VM_MOUNT_TMPFS, .target = "/scratch", .size = 1 << 20, .mode = 01777 };
	assert_int_equal(cp_vm_mount_encode(&w, 9, &t), 0);
	assert_int_equal(cp_vm_mount_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &b), 0);
	assert_int_equal(b.size, 1 << 20);
	assert_int_equal(b.mode, 01777);
	assert_null(b.name);
	cp_vm_mount_free(&b);
	/* The share's own root, around a pause to disk: a target and nothing else. */
	struct cp_vm_mount off = { .kind = CP_VM_MOUNT_SHARES_OFF, .target = "/" };
	assert_int_equal(cp_vm_mount_encode(&w, 9, &off), 0);
	assert_int_equal(cp_vm_mount_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &b), 0);
	assert_int_equal(b.kind, CP_VM_MOUNT_SHARES_OFF);
	assert_null(b.name);
	cp_vm_mount_free(&b);
	struct cp_vm_mount bad[] = {
		{ .kind = CP_VM_MOUNT_SHARE, .name = "..", .target = "/x" },
		{ .kind = CP_VM_MOUNT_SHARE, .name = ".", .target = "/x" },
		{ .kind = CP_VM_MOUNT_SHARE, .name = "b0/../../x", .target = "/x" },
		{ .kind = CP_VM_MOUNT_SHARE, .name = "", .target = "/x" },
		{ .kind = CP_VM_MOUNT_SHARE, .name = "a-name-longer-than-thirty-two-bytes", .target = "/x" },
		{ .kind = CP_VM_MOUNT_SHARE, .name = "b0", .target = "relative" },
		{ .kind = CP_VM_MOUNT_SHARE, .name = "b0", .target = "/x", .flags = 0x80 },
		{ .kind = CP_VM_MOUNT_SHARE, .name = "b0", .target = "/x", .size = 1 },
		{ .kind = CP_VM_MOUNT_TMPFS, .target = "/x" },
		{ .kind = CP_VM_MOUNT_TMPFS, .target = "/x", .size = 1, .mode = 010000 },
		{ .kind = CP_VM_MOUNT_TMPFS, .name = "b0", .target = "/x", .size = 1 },
		{ .kind = CP_VM_MOUNT_SHARES_OFF, .name = "b0", .target = "/x" },
		{ .kind = CP_VM_MOUNT_SHARES_ON, .target = "/", .flags = CP_VM_MOUNT_RO },
		{ .kind = CP_VM_MOUNT_SHARES_ON, .target = "/", .size = 1 },
		{ .kind = 5, .target = "/x" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(cp_vm_mount_encode(&w, 1, &bad[i]), -EINVAL);
		cp_frame_begin(&w, CP_VM_MOUNT, 0, 1);
		cp_put_u32(&w, CP_T_VM_MOUNT_KIND, bad[i].kind);
		if (bad[i].name)
			cp_put_str(&w, CP_T_VM_MOUNT_NAME, bad[i].name);
		cp_put_str(&w, CP_T_VM_MOUNT_TARGET, bad[i].target);
		cp_put_u32(&w, CP_T_VM_MOUNT_FLAGS, bad[i].flags);
		cp_put_u64(&w, CP_T_VM_MOUNT_SIZE, bad[i].size);
		cp_put_u32(&w, CP_T_VM_MOUNT_MODE, bad[i].mode);
		assert_int_equal(cp_frame_finish(&w), 0);
		assert_int_equal(cp_vm_mount_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &b), -EBADMSG);
		assert_null(b.name);
		assert_null(b.target);
	}
	/* VM_UNMOUNT needs both its fields; VM_MOUNTED a mount id. */
	struct cp_vm_unmount u = { .target = "/mnt/hot", .mnt_id = 77 }, v;
	assert_int_equal(cp_vm_unmount_encode(&w, 2, &u), 0);
	assert_int_equal(cp_vm_unmount_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &v), 0);
	assert_string_equal(v.target, "/mnt/hot");
	assert_int_equal(v.mnt_id, 77);
	cp_vm_unmount_free(&v);
	u.mnt_id = 0;
	assert_int_equal(cp_vm_unmount_encode(&w, 2, &u), -EINVAL);
	cp_frame_begin(&w, CP_VM_UNMOUNT, 0, 2);
	cp_put_str(&w, CP_T_VM_UNMOUNT_TARGET, "/mnt/hot");
	assert_int_equal(cp_frame_finish(&w), 0);
	assert_int_equal(cp_vm_unmount_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &v), -EBADMSG);
	assert_null(v.target);
	struct cp_vm_mounted m = { .mnt_id = 5 }, n;
	assert_int_equal(cp_vm_mounted_encode(&w, 3, &m), 0);
	assert_int_equal(cp_vm_mounted_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &n), 0);
	assert_int_equal(n.mnt_id, 5);
	assert_int_equal(cp_vm_mounted_decode(NULL, 0, &n), -EBADMSG);
	cp_writer_free(&w);
}

/* ---- hot mounts ------------------------------------------------------------------------ */

static void test_mount_round_trip_and_required_fields(void **state)
{
	(void)state;
	struct cp_writer w;
	cp_writer_init(&w);
	struct cp_mount a = { .host_path = "/srv/data", .guest_path = "/mnt/data", .flags = CP_MOUNT_RO };
	assert_int_equal(cp_mount_encode(&w, 5, &a), 0);
	struct cp_header h;
	assert_int_equal(cp_header_decode(w.buf, w.len, &h), 0);
	assert_int_equal(h.type, CP_MOUNT);
	assert_int_equal(h.chan, 5);
	struct cp_mount b;
	assert_int_equal(cp_mount_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &b), 0);
	assert_string_equal(b.host_path, "/srv/data");
	assert_string_equal(b.guest_path, "/mnt/data");
	assert_int_equal(b.flags, CP_MOUNT_RO);
	cp_mount_free(&b);

	/* Without a guest path, or with a flag this side does not know: refused. */
	cp_frame_begin(&w, CP_MOUNT, 0, 1);
	cp_put_str(&w, CP_T_MOUNT_HOST_PATH, "/srv");
	assert_int_equal(cp_frame_finish(&w), 0);
	assert_int_equal(cp_mount_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &b), -EBADMSG);
	assert_null(b.host_path);
	cp_frame_begin(&w, CP_MOUNT, 0, 1);
	cp_put_str(&w, CP_T_MOUNT_HOST_PATH, "/srv");
	cp_put_str(&w, CP_T_MOUNT_GUEST_PATH, "/mnt");
	cp_put_u32(&w, CP_T_MOUNT_FLAGS, 0x80);
	assert_int_equal(cp_frame_finish(&w), 0);
	assert_int_equal(cp_mount_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &b), -EBADMSG);
	assert_null(b.host_path);
	assert_null(b.guest_path);
	/* The encoder refuses what the decoder would. */
	struct cp_mount bad = { .host_path = "/srv", .guest_path = NULL };
	assert_int_equal(cp_mount_encode(&w, 1, &bad), -EINVAL);
	bad.guest_path = "/mnt";
	bad.flags = 0x100;
	assert_int_equal(cp_mount_encode(&w, 1, &bad), -EINVAL);
	cp_writer_free(&w);
}

static void test_unmount_round_trip_and_target_required(void **state)
{
	(void)state;
	struct cp_writer w;
	cp_writer_init(&w);
	struct cp_unmount a = { .target = "m12" };
	assert_int_equal(cp_unmount_encode(&w, 3, &a), 0);
	struct cp_unmount b;
	assert_int_equal(cp_unmount_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &b), 0);
	assert_string_equal(b.target, "m12");
	cp_unmount_free(&b);
	assert_int_equal(cp_unmount_decode(NULL, 0, &b), -EBADMSG);
	assert_null(b.target);
	struct cp_unmount none = { 0 };
	assert_int_equal(cp_unmount_encode(&w, 3, &none), -EINVAL);
	/* MOUNTS is a bare request. */
	assert_int_equal(cp_empty_encode(&w, CP_MOUNTS, 9), 0);
	struct cp_header h;
	assert_int_equal(cp_header_decode(w.buf, w.len, &h), 0);
	assert_int_equal(h.type, CP_MOUNTS);
	assert_int_equal(h.len, 0);
	assert_string_equal(cp_type_name(CP_MOUNT), "MOUNT");
	assert_string_equal(cp_type_name(CP_UNMOUNT), "UNMOUNT");
	assert_string_equal(cp_type_name(CP_MOUNTS), "MOUNTS");
	cp_writer_free(&w);
}

static void test_save_round_trip_and_bounds(void **state)
{
	(void)state;
	struct cp_writer w;
	cp_writer_init(&w);
	struct cp_save a = { .op = CP_SAVE_OP_FORK, .name = "dev2" };
	assert_int_equal(cp_save_encode(&w, 4, &a), 0);
	struct cp_header h;
	assert_int_equal(cp_header_decode(w.buf, w.len, &h), 0);
	assert_int_equal(h.type, CP_SAVE);
	assert_string_equal(cp_type_name(CP_SAVE), "SAVE");
	struct cp_save b;
	assert_int_equal(cp_save_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &b), 0);
	assert_int_equal(b.op, CP_SAVE_OP_FORK);
	assert_string_equal(b.name, "dev2");
	cp_save_free(&b);
	/* Every truncation is refused, never read past. */
	for (size_t n = 0; n < w.len - CP_HEADER_SIZE; n++) {
		assert_int_equal(cp_save_decode(w.buf + CP_HEADER_SIZE, n, &b), -EBADMSG);
		assert_null(b.name);
	}
	/* Op and name are required and bounded, on both sides. */
	char longname[CP_MAX_SAVE_NAME + 2];
	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	struct cp_save bad[] = { { 0, "x" }, { 5, "x" }, { CP_SAVE_OP_SAVE, NULL }, { CP_SAVE_OP_SAVE, longname } };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(cp_save_encode(&w, 1, &bad[i]), -EINVAL);
	cp_frame_begin(&w, CP_SAVE, 0, 1);
	cp_put_u32(&w, CP_T_SAVE_OP, 9);
	cp_put_str(&w, CP_T_SAVE_NAME, "x");
	assert_int_equal(cp_frame_finish(&w), 0);
	assert_int_equal(cp_save_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &b), -EBADMSG);
	cp_writer_free(&w);
}

static void test_pause_round_trip_and_bounds(void **state)
{
	(void)state;
	struct cp_writer w;
	cp_writer_init(&w);
	struct cp_pause a = { .op = CP_PAUSE_OP_RESUME };
	assert_int_equal(cp_pause_encode(&w, 4, &a), 0);
	struct cp_header h;
	assert_int_equal(cp_header_decode(w.buf, w.len, &h), 0);
	assert_int_equal(h.type, CP_PAUSE);
	assert_string_equal(cp_type_name(CP_PAUSE), "PAUSE");
	struct cp_pause b;
	assert_int_equal(cp_pause_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &b), 0);
	assert_int_equal(b.op, CP_PAUSE_OP_RESUME);
	for (size_t n = 0; n < w.len - CP_HEADER_SIZE; n++)
		assert_int_equal(cp_pause_decode(w.buf + CP_HEADER_SIZE, n, &b), -EBADMSG);
	struct cp_pause disk = { .op = CP_PAUSE_OP_TO_DISK };
	assert_int_equal(cp_pause_encode(&w, 4, &disk), 0);
	assert_int_equal(cp_pause_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &b), 0);
	assert_int_equal(b.op, CP_PAUSE_OP_TO_DISK);
	/* The op is required and one of three, on both sides. */
	struct cp_pause bad[] = { { 0 }, { 4 } };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(cp_pause_encode(&w, 1, &bad[i]), -EINVAL);
	cp_frame_begin(&w, CP_PAUSE, 0, 1);
	cp_put_u32(&w, CP_T_PAUSE_OP, 4);
	assert_int_equal(cp_frame_finish(&w), 0);
	assert_int_equal(cp_pause_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &b), -EBADMSG);
	cp_writer_free(&w);
}

static void test_limits_round_trip_and_bounds(void **state)
{
	(void)state;
	struct cp_writer w;
	cp_writer_init(&w);
	/* Negative values ("no limit") cross as two's complement. */
	struct cp_limits a = { .set = CAPSULE_LIMIT_MEMORY | CAPSULE_LIMIT_CPU_QUOTA | CAPSULE_LIMIT_PIDS,
			       .memory_bytes = -1, .cpu_quota_us = 50000, .pids_max = 77 };
	assert_int_equal(cp_limits_encode(&w, 3, &a), 0);
	struct cp_header h;
	assert_int_equal(cp_header_decode(w.buf, w.len, &h), 0);
	assert_int_equal(h.type, CP_LIMITS);
	assert_string_equal(cp_type_name(CP_LIMITS), "LIMITS");
	struct cp_limits b;
	assert_int_equal(cp_limits_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &b), 0);
	assert_int_equal(b.set, a.set);
	assert_true(b.memory_bytes == -1 && b.cpu_quota_us == 50000 && b.pids_max == 77);
	/* The finer ones: swap, the reservation, the cpuset's strings, realtime cpu. */
	struct cp_limits f = { .set = CAPSULE_LIMIT_MEMORY | CAPSULE_LIMIT_MEMORY_SWAP | CAPSULE_LIMIT_MEMORY_RESERVATION |
				      CAPSULE_LIMIT_CPUSET_CPUS | CAPSULE_LIMIT_CPUSET_MEMS | CAPSULE_LIMIT_CPU_RT_PERIOD |
				      CAPSULE_LIMIT_CPU_RT_RUNTIME,
			       .memory_bytes = 64 << 20, .memory_swap = -1, .memory_reservation = 32 << 20,
			       .cpuset_cpus = "0-3,6", .cpuset_mems = "0", .cpu_rt_period_us = 1000000,
			       .cpu_rt_runtime_us = -1 };
	assert_int_equal(cp_limits_encode(&w, 3, &f), 0);
	assert_int_equal(cp_limits_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &b), 0);
	assert_int_equal(b.set, f.set);
	assert_true(b.memory_swap == -1 && b.memory_reservation == 32 << 20 && b.cpu_rt_period_us == 1000000 &&
		    b.cpu_rt_runtime_us == -1);
	assert_string_equal(b.cpuset_cpus, "0-3,6");
	assert_string_equal(b.cpuset_mems, "0");
	/* A cpuset string beyond its bound is refused. */
	char longer[CP_LIMITS_CPUSET_MAX + 2];
	memset(longer, '1', sizeof(longer) - 1);
	longer[sizeof(longer) - 1] = 0;
	cp_frame_begin(&w, CP_LIMITS, 0, 1);
	cp_put_u32(&w, CP_T_LIMITS_SET, CAPSULE_LIMIT_CPUSET_CPUS);
	cp_put_str(&w, CP_T_LIMITS_CPUSET_CPUS, longer);
	assert_int_equal(cp_frame_finish(&w), 0);
	assert_true(cp_limits_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &b) < 0);
	/* No set, or an unknown bit, is refused on both sides. */
	struct cp_limits bad[] = { { .set = 0 }, { .set = 0x800 } };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(cp_limits_encode(&w, 1, &bad[i]), -EINVAL);
	cp_frame_begin(&w, CP_LIMITS, 0, 1);
	cp_put_u32(&w, CP_T_LIMITS_SET, 0x1000);
	assert_int_equal(cp_frame_finish(&w), 0);
	assert_int_equal(cp_limits_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &b), -EBADMSG);
	/* The bounds, each with its one line. */
	char why[160];
	assert_int_equal(cp_limits_check(&a, why, sizeof(why)), 0);
	struct {
		struct cp_limits m;
		const char *why;
	} out[] = {
		{ { .set = CAPSULE_LIMIT_MEMORY, .memory_bytes = 1 << 20 }, "memory 1048576 bytes: at least 4 MiB" },
		{ { .set = CAPSULE_LIMIT_CPU_QUOTA, .cpu_quota_us = 999 }, "cpu quota 999 us" },
		{ { .set = CAPSULE_LIMIT_CPU_PERIOD, .cpu_period_us = 2000000 }, "cpu period 2000000 us" },
		{ { .set = CAPSULE_LIMIT_CPU_SHARES, .cpu_shares = 1 }, "cpu shares 1: 2 to 262144" },
		{ { .set = CAPSULE_LIMIT_PIDS, .pids_max = 4194305 }, "pids limit 4194305" },
		{ { .set = 0 }, "no limit to change given" },
		{ { .set = CAPSULE_LIMIT_MEMORY_SWAP, .memory_swap = 1 << 30 }, "given with a memory limit" },
		{ { .set = CAPSULE_LIMIT_MEMORY | CAPSULE_LIMIT_MEMORY_SWAP, .memory_bytes = 64 << 20,
		    .memory_swap = 32 << 20 }, "memory swap 33554432: memory + swap" },
		{ { .set = CAPSULE_LIMIT_CPUSET_CPUS, .cpuset_cpus = "0;1" }, "cpuset cpus '0;1': a list such as 0-3,6" },
		{ { .set = CAPSULE_LIMIT_CPUSET_MEMS }, "cpuset mems '': a list" },
		{ { .set = CAPSULE_LIMIT_CPU_RT_PERIOD }, "cpu realtime period 0 us: 1 to 1000000" },
		{ { .set = CAPSULE_LIMIT_CPU_RT_RUNTIME, .cpu_rt_runtime_us = 2000000 }, "cpu realtime runtime 2000000 us" },
		{ { .set = CAPSULE_LIMIT_MEMORY_RESERVATION }, "memory reservation 0" },
	};
	for (size_t i = 0; i < sizeof(out) / sizeof(out[0]); i++) {
		assert_int_equal(cp_limits_check(&out[i].m, why, sizeof(why)), -EINVAL);
		assert_non_null(strstr(why, out[i].why));
	}
	cp_writer_free(&w);
}

static void test_watch_round_trip_and_refusals(void **state)
{
	(void)state;
	struct cp_writer w;
	cp_writer_init(&w);
	struct cp_watch a = { .path = "/work", .flags = CP_WATCH_RECURSIVE };
	assert_int_equal(cp_watch_encode(&w, 5, &a), 0);
	struct cp_header h;
	assert_int_equal(cp_header_decode(w.buf, w.len, &h), 0);
	assert_int_equal(h.type, CP_WATCH);
	assert_string_equal(cp_type_name(CP_WATCH), "WATCH");
	struct cp_watch b;
	assert_int_equal(cp_watch_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &b), 0);
	assert_string_equal(b.path, "/work");
	assert_int_equal(b.flags, CP_WATCH_RECURSIVE);
	cp_watch_free(&b);
	for (size_t n = 0; n < w.len - CP_HEADER_SIZE; n++) {
		int r = cp_watch_decode(w.buf + CP_HEADER_SIZE, n, &b);
		/* Cut after the path's field, the flags are absent: still a whole request. */
		if (r == 0)
			cp_watch_free(&b);
		else
			assert_null(b.path);
	}
	char long_path[CP_FS_PATH_MAX + 2];
	memset(long_path, 'a', sizeof(long_path) - 1);
	long_path[0] = '/';
	long_path[sizeof(long_path) - 1] = '\0';
	struct cp_watch bad[] = { { NULL, 0 }, { "work", 0 }, { long_path, 0 }, { "/w", 2 } };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(cp_watch_encode(&w, 1, &bad[i]), -EINVAL);
		cp_frame_begin(&w, CP_WATCH, 0, 1);
		if (bad[i].path)
			cp_put_str(&w, CP_T_WATCH_PATH, bad[i].path);
		cp_put_u32(&w, CP_T_WATCH_FLAGS, bad[i].flags);
		assert_int_equal(cp_frame_finish(&w), 0);
		assert_int_equal(cp_watch_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &b), -EBADMSG);
		assert_null(b.path);
	}
	cp_writer_free(&w);
}

static void test_watch_event_records_round_trip_and_refusals(void **state)
{
	(void)state;
	struct cp_writer w;
	cp_writer_init(&w);
	struct cp_watch_event in[] = {
		{ .kind = CP_WATCH_CREATE, .path = "/w/a\nb", .time_ns = 7, .is_dir = 1 },
		{ .kind = CP_WATCH_MOVE, .path = "/w/c", .from = "/w/a\nb", .time_ns = 8 },
		{ .kind = CP_WATCH_OVERFLOW, .time_ns = 9 },
	};
	for (size_t i = 0; i < 3; i++)
		assert_int_equal(cp_watch_event_append(&w, &in[i]), 0);
	struct cp_reader r = { .p = w.buf, .rem = w.len };
	struct cp_watch_event e;
	for (size_t i = 0; i < 3; i++) {
		assert_int_equal(cp_watch_event_next(&r, &e), 1);
		assert_int_equal(e.kind, in[i].kind);
		assert_true((!e.path && !in[i].path) || !strcmp(e.path, in[i].path));
		assert_true((!e.from && !in[i].from) || !strcmp(e.from, in[i].from));
		assert_int_equal(e.time_ns, in[i].time_ns);
		assert_int_equal(e.is_dir, in[i].is_dir);
		cp_watch_event_free(&e);
	}
	assert_int_equal(cp_watch_event_next(&r, &e), 0);
	/* A record cut anywhere is refused, never read past. */
	for (size_t n = 1; n < w.len; n++) {
		struct cp_reader t = { .p = w.buf, .rem = n };
		int k;
		while ((k = cp_watch_event_next(&t, &e)) == 1)
			cp_watch_event_free(&e);
		assert_true(k == 0 || k == -EBADMSG);
		assert_null(e.path);
	}
	/* What the agent may not send: a move without from, from on another kind, a relative
	 * path, an overflow with a path, an unknown kind, dir other than 0 or 1. */
	struct cp_watch_event bad[] = {
		{ .kind = CP_WATCH_MOVE, .path = "/a" },
		{ .kind = CP_WATCH_CREATE, .path = "/a", .from = "/b" },
		{ .kind = CP_WATCH_DELETE, .path = "a" },
		{ .kind = CP_WATCH_OVERFLOW, .path = "/a" },
		{ .kind = 6, .path = "/a" },
		{ .kind = CP_WATCH_CREATE, .path = "/a", .is_dir = 2 },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		w.len = 0;
		assert_int_equal(cp_watch_event_append(&w, &bad[i]), -EINVAL);
		/* The same fields written by hand, as a hostile agent would. */
		struct cp_writer f;
		cp_writer_init(&f);
		cp_put_u32(&f, CP_T_WEV_KIND, bad[i].kind);
		if (bad[i].path)
			cp_put_str(&f, CP_T_WEV_PATH, bad[i].path);
		if (bad[i].from)
			cp_put_str(&f, CP_T_WEV_FROM, bad[i].from);
		cp_put_u32(&f, CP_T_WEV_DIR, bad[i].is_dir);
		uint8_t rec[256];
		assert_true(f.len + 4 <= sizeof(rec));
		rec[0] = (uint8_t)f.len;
		rec[1] = (uint8_t)(f.len >> 8);
		rec[2] = rec[3] = 0;
		memcpy(rec + 4, f.buf, f.len);
		struct cp_reader t = { .p = rec, .rem = f.len + 4 };
		cp_writer_free(&f);
		assert_int_equal(cp_watch_event_next(&t, &e), -EBADMSG);
		assert_null(e.path);
		assert_null(e.from);
	}
	cp_writer_free(&w);
}

/* SHUTDOWN is its own frame type with STOP's body: the agent reads its grace time with
 * cp_stop_decode, and nothing rewrites a STOP frame's header into it. */
static void test_shutdown_frame_has_its_type_and_the_stop_body(void **state)
{
	(void)state;
	struct cp_writer w, ws;
	cp_writer_init(&w);
	cp_writer_init(&ws);
	struct cp_stop m = { .timeout_ms = 2500 };
	assert_int_equal(cp_shutdown_encode(&w, 7, &m), 0);
	assert_int_equal(cp_stop_encode(&ws, 7, &m), 0);
	struct cp_header h;
	assert_int_equal(cp_header_decode(w.buf, w.len, &h), 0);
	assert_int_equal(h.type, CP_SHUTDOWN);
	assert_int_equal(h.chan, 7);
	assert_int_equal(w.len, ws.len);
	assert_memory_equal(w.buf + CP_HEADER_SIZE, ws.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE);
	struct cp_stop back;
	assert_int_equal(cp_stop_decode(w.buf + CP_HEADER_SIZE, h.len, &back), 0);
	assert_int_equal(back.timeout_ms, 2500);
	cp_writer_free(&ws);
	cp_writer_free(&w);
}

/* PORTS is answered with the same OK as MOUNTS: its list travels in list_json, no handle. */
static void test_request_ok_carries_a_port_list(void **state)
{
	(void)state;
	struct cp_writer w;
	cp_writer_init(&w);
	const char *ports = "[{\"host_ip\":\"127.0.0.1\",\"host_port\":8080,\"port\":80,\"udp\":false}]";
	struct cp_request_ok a = { .list_json = (char *)ports };
	assert_int_equal(cp_request_ok_encode(&w, 3, &a), 0);
	struct cp_header h;
	assert_int_equal(cp_header_decode(w.buf, w.len, &h), 0);
	assert_int_equal(h.type, CP_OK);
	struct cp_request_ok b;
	assert_int_equal(cp_request_ok_decode(w.buf + CP_HEADER_SIZE, h.len, &b), 0);
	assert_null(b.handle);
	assert_string_equal(b.list_json, ports);
	cp_request_ok_free(&b);
	cp_writer_free(&w);
}

static void test_request_ok_fields_are_optional_and_bounded(void **state)
{
	(void)state;
	struct cp_writer w;
	cp_writer_init(&w);
	struct cp_request_ok a = { .handle = "m1" };
	assert_int_equal(cp_request_ok_encode(&w, 2, &a), 0);
	struct cp_header h;
	assert_int_equal(cp_header_decode(w.buf, w.len, &h), 0);
	assert_int_equal(h.type, CP_OK);
	struct cp_request_ok b;
	assert_int_equal(cp_request_ok_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &b), 0);
	assert_string_equal(b.handle, "m1");
	assert_null(b.list_json);
	cp_request_ok_free(&b);
	/* A bare OK decodes to nothing. */
	assert_int_equal(cp_request_ok_decode(NULL, 0, &b), 0);
	assert_null(b.handle);

	/* The list may be longer than a path string, up to its own bound, and no longer. */
	size_t big = CP_MAX_STRING * 4;
	char *json = malloc(big + 1);
	memset(json, 'x', big);
	json[big] = '\0';
	struct cp_request_ok l = { .list_json = json };
	assert_int_equal(cp_request_ok_encode(&w, 2, &l), 0);
	assert_int_equal(cp_request_ok_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &b), 0);
	assert_int_equal(strlen(b.list_json), big);
	cp_request_ok_free(&b);
	char handle[CP_MAX_MOUNT_HANDLE + 2];
	memset(handle, 'h', sizeof(handle) - 1);
	handle[sizeof(handle) - 1] = '\0';
	struct cp_request_ok lh = { .handle = handle };
	assert_int_equal(cp_request_ok_encode(&w, 2, &lh), -EINVAL);
	cp_frame_begin(&w, CP_OK, 0, 2);
	cp_put_str(&w, CP_T_REQUEST_OK_HANDLE, handle);
	assert_int_equal(cp_frame_finish(&w), 0);
	assert_int_equal(cp_request_ok_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &b), -EBADMSG);
	assert_null(b.handle);
	/* A NUL inside the list is refused. */
	cp_frame_begin(&w, CP_OK, 0, 2);
	cp_put_bytes(&w, CP_T_REQUEST_OK_LIST_JSON, "[]\0x", 4);
	assert_int_equal(cp_frame_finish(&w), 0);
	assert_int_equal(cp_request_ok_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &b), -EBADMSG);
	free(json);
	cp_writer_free(&w);
}

static void test_mount_messages_survive_every_truncation(void **state)
{
	(void)state;
	struct cp_writer w;
	cp_writer_init(&w);
	struct cp_mount a = { .host_path = "/srv/data", .guest_path = "/mnt/data", .flags = 3 };
	assert_int_equal(cp_mount_encode(&w, 1, &a), 0);
	size_t n = w.len - CP_HEADER_SIZE;
	for (size_t k = 0; k < n; k++) {
		uint8_t *p = malloc(k ? k : 1);
		memcpy(p, w.buf + CP_HEADER_SIZE, k);
		struct cp_mount b;
		struct cp_unmount u;
		struct cp_request_ok o;
		/* Only a cut right after both paths (flags are optional) still decodes. */
		int r = cp_mount_decode(p, k, &b);
		assert_true(r == -EBADMSG || (r == 0 && b.host_path && b.guest_path && b.flags == 0));
		if (r == 0)
			cp_mount_free(&b);
		r = cp_unmount_decode(p, k, &u);
		assert_true(r == 0 || r == -EBADMSG);
		if (r == 0)
			cp_unmount_free(&u);
		r = cp_request_ok_decode(p, k, &o);
		assert_true(r == 0 || r == -EBADMSG);
		if (r == 0)
			cp_request_ok_free(&o);
		free(p);
	}
	cp_writer_free(&w);
}

static void test_display_messages_round_trip_and_bounds(void **state)
{
	(void)state;
	struct cp_writer w;
	cp_writer_init(&w);
	/* INPUT MOVE: both coordinates required; text refused with it. */
	struct cp_input a = { .kind = CP_INPUT_MOVE, .x = 0, .y = 799 };
	assert_int_equal(cp_input_encode(&w, 3, &a), 0);
	struct cp_input b;
	assert_int_equal(cp_input_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &b), 0);
	assert_int_equal(b.kind, CP_INPUT_MOVE);
	assert_int_equal(b.x, 0);
	assert_int_equal(b.y, 799);
	cp_input_free(&b);
	for (size_t n = 0; n < w.len - CP_HEADER_SIZE; n++) {
		assert_int_equal(cp_input_decode(w.buf + CP_HEADER_SIZE, n, &b), -EBADMSG);
		assert_null(b.text);
	}
	char longtext[CP_MAX_INPUT_TEXT + 2];
	memset(longtext, 'a', sizeof(longtext) - 1);
	longtext[sizeof(longtext) - 1] = '\0';
	struct cp_input bad[] = { { 0, "x", 0, 0 }, { 5, "x", 0, 0 }, { CP_INPUT_TYPE, NULL, 0, 0 },
				  { CP_INPUT_KEY, "", 0, 0 }, { CP_INPUT_TYPE, longtext, 0, 0 },
				  { CP_INPUT_MOVE, "x", 1, 1 }, { CP_INPUT_CLICK, NULL, 1, 0 } };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(cp_input_encode(&w, 1, &bad[i]), -EINVAL);
	/* SCREENSHOT: an offset needs the shot it reads. */
	struct cp_screenshot s = { .offset = 4096 };
	assert_int_equal(cp_screenshot_encode(&w, 1, &s), -EINVAL);
	cp_frame_begin(&w, CP_SCREENSHOT, 0, 1);
	cp_put_u64(&w, CP_T_SHOT_OFFSET, 4096);
	assert_int_equal(cp_frame_finish(&w), 0);
	struct cp_screenshot s2;
	assert_int_equal(cp_screenshot_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &s2), -EBADMSG);
	/* Its OK: a chunk never runs past the size, which is bounded. */
	static const uint8_t png[8] = { 0x89, 'P', 'N', 'G' };
	struct cp_screenshot_ok ok = { .shot = 1, .size = 8, .width = 2, .height = 2, .data = png, .data_len = 8 };
	assert_int_equal(cp_screenshot_ok_encode(&w, 1, &ok), 0);
	struct cp_screenshot_ok ok2;
	assert_int_equal(cp_screenshot_ok_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &ok2), 0);
	assert_int_equal(ok2.data_len, 8);
	assert_memory_equal(ok2.data, png, 8);
	ok.size = 4;
	assert_int_equal(cp_screenshot_ok_encode(&w, 1, &ok), -EINVAL);
	ok.size = (uint64_t)CP_MAX_SCREENSHOT + 1;
	assert_int_equal(cp_screenshot_ok_encode(&w, 1, &ok), -EINVAL);
	cp_frame_begin(&w, CP_OK, 0, 1);
	cp_put_u32(&w, CP_T_SHOT_OK_ID, 1);
	cp_put_u64(&w, CP_T_SHOT_OK_SIZE, 4);
	cp_put_bytes(&w, CP_T_SHOT_OK_DATA, png, 8);
	assert_int_equal(cp_frame_finish(&w), 0);
	assert_int_equal(cp_screenshot_ok_decode(w.buf + CP_HEADER_SIZE, w.len - CP_HEADER_SIZE, &ok2), -EBADMSG);
	assert_null(ok2.data);
	cp_writer_free(&w);
}

/* The frame in W, as the shim would judge it from an agent. */
static int agent_reply_verdict(const struct cp_writer *w)
{
	struct cp_header h;
	assert_int_equal(cp_header_decode(w->buf, w->len, &h), 0);
	return cp_agent_reply_check(&h, w->buf + CP_HEADER_SIZE);
}

static void test_agent_reply_check_admits_an_agents_answers_only(void **state)
{
	(void)state;
	struct cp_writer w;
	cp_writer_init(&w);
	struct cp_started st = { .pid = 7 };
	struct cp_exit ex = { .exit_code = 3 };
	struct cp_credit stdin_credit = { .stream = CP_STREAM_STDIN, .bytes = 10 };
	struct cp_credit stdout_credit = { .stream = CP_STREAM_STDOUT, .bytes = 10 };
	struct cp_stop stop = { .timeout_ms = 1 };
	static uint8_t fat[4096];

	assert_int_equal(cp_started_encode(&w, 1, &st), 0);
	assert_int_equal(agent_reply_verdict(&w), 0);
	assert_int_equal(cp_exit_encode(&w, 1, &ex), 0);
	assert_int_equal(agent_reply_verdict(&w), 0);
	assert_int_equal(cp_credit_encode(&w, 1, &stdin_credit), 0);
	assert_int_equal(agent_reply_verdict(&w), 0);
	assert_int_equal(cp_error_encode(&w, 1, &sample_error), 0);
	assert_int_equal(agent_reply_verdict(&w), 0);
	assert_int_equal(cp_empty_encode(&w, CP_OK, 1), 0);
	assert_int_equal(agent_reply_verdict(&w), 0);
	assert_int_equal(cp_data_encode(&w, 1, CP_STREAM_STDERR, false, "x", 1), 0);
	assert_int_equal(agent_reply_verdict(&w), 0);

	/* What only a shim or a client sends, stdin the wrong way, credit for stdout. */
	assert_int_equal(cp_stop_encode(&w, 1, &stop), 0);
	assert_int_equal(agent_reply_verdict(&w), -EPROTO);
	assert_int_equal(cp_data_encode(&w, 1, CP_STREAM_STDIN, false, "x", 1), 0);
	assert_int_equal(agent_reply_verdict(&w), -EPROTO);
	assert_int_equal(cp_credit_encode(&w, 1, &stdout_credit), 0);
	assert_int_equal(agent_reply_verdict(&w), -EPROTO);
	/* An EXIT padded with a field no EXIT has, past what its numbers need. */
	cp_frame_begin(&w, CP_EXIT, 0, 1);
	cp_put_u32(&w, 1, 0);
	cp_put_bytes(&w, 0x7777, fat, sizeof(fat));
	assert_int_equal(cp_frame_finish(&w), 0);
	assert_int_equal(agent_reply_verdict(&w), -EPROTO);
	/* An OK whose payload is not an FS entry. */
	cp_frame_begin(&w, CP_OK, 0, 1);
	cp_put_bytes(&w, 0x7777, fat, 16);
	assert_int_equal(cp_frame_finish(&w), 0);
	assert_int_equal(agent_reply_verdict(&w), -EPROTO);
	cp_writer_free(&w);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_header_round_trip),
		cmocka_unit_test(test_agent_reply_check_admits_an_agents_answers_only),
		cmocka_unit_test(test_header_is_little_endian_on_the_wire),
		cmocka_unit_test(test_header_shorter_than_header_size_rejected),
		cmocka_unit_test(test_header_len_over_max_payload_rejected),
		cmocka_unit_test(test_header_unknown_type_rejected),
		cmocka_unit_test(test_vm_dns_messages_round_trip_and_bounds),
		cmocka_unit_test(test_vm_listening_round_trip_and_bounds),
		cmocka_unit_test(test_tcp_listening_ports_reads_procs_tables),
		cmocka_unit_test(test_hello_round_trip),
		cmocka_unit_test(test_hello_without_version_rejected),
		cmocka_unit_test(test_error_round_trip),
		cmocka_unit_test(test_error_errno_out_of_range_becomes_eio),
		cmocka_unit_test(test_error_message_with_newline_or_escape_not_passed_through),
		cmocka_unit_test(test_exec_round_trip),
		cmocka_unit_test(test_exec_oci_process_fields_round_trip_and_bounds),
		cmocka_unit_test(test_exec_fds_count_round_trips_within_its_bound),
		cmocka_unit_test(test_exec_minimal_round_trip_gives_empty_env_and_null_cwd_user),
		cmocka_unit_test(test_exec_with_zero_args_rejected),
		cmocka_unit_test(test_exec_rows_or_cols_over_16_bits_rejected),
		cmocka_unit_test(test_started_round_trip),
		cmocka_unit_test(test_credit_round_trip),
		cmocka_unit_test(test_exit_round_trip_keeps_negative_exit_code),
		cmocka_unit_test(test_signal_round_trip),
		cmocka_unit_test(test_resize_round_trip),
		cmocka_unit_test(test_stop_round_trip),
		cmocka_unit_test(test_init_round_trip),
		cmocka_unit_test(test_empty_and_data_frames_round_trip),
		cmocka_unit_test(test_unknown_field_tags_are_skipped),
		cmocka_unit_test(test_repeated_string_field_keeps_last_value_without_leak),
		cmocka_unit_test(test_required_u32_fields_missing_rejected),
		cmocka_unit_test(test_integer_field_with_wrong_length_rejected),
		cmocka_unit_test(test_every_truncation_of_every_message_rejected_or_decoded_cleanly),
		cmocka_unit_test(test_field_length_running_past_end_rejected),
		cmocka_unit_test(test_next_field_rejects_partial_field_header),
		cmocka_unit_test(test_strings_with_embedded_nul_rejected),
		cmocka_unit_test(test_strings_longer_than_max_string_rejected),
		cmocka_unit_test(test_more_than_max_args_or_env_rejected),
		cmocka_unit_test(test_init_seccomp_not_multiple_of_8_or_empty_or_too_big_rejected),
		cmocka_unit_test(test_writer_refuses_to_exceed_max_payload_with_sticky_emsgsize),
		cmocka_unit_test(test_rxbuf_assembles_frames_delivered_one_byte_at_a_time),
		cmocka_unit_test(test_rxbuf_yields_many_frames_from_one_read),
		cmocka_unit_test(test_rxbuf_assembles_frames_split_at_odd_sizes),
		cmocka_unit_test(test_rxbuf_corrupt_header_returns_ebadmsg),
		cmocka_unit_test(test_rxbuf_reports_eagain_then_eof),
		cmocka_unit_test(test_rxbuf_accepts_max_payload_frame_and_rejects_one_byte_more),
		cmocka_unit_test(test_rxbuf_mixed_small_and_max_frames_survive_growth_and_compaction),
		cmocka_unit_test(test_rxbuf_unconsumed_frame_survives_a_fill),
		cmocka_unit_test(test_rxbuf_descriptors_belong_to_the_frame_they_came_with),
		cmocka_unit_test(test_rxbuf_an_execs_descriptors_come_out_in_order),
		cmocka_unit_test(test_fs_round_trip_every_op),
		cmocka_unit_test(test_fs_encode_refuses_missing_or_long_path),
		cmocka_unit_test(test_fs_bad_requests_rejected),
		cmocka_unit_test(test_fs_strings_with_nul_rejected),
		cmocka_unit_test(test_fs_entry_round_trip),
		cmocka_unit_test(test_fs_entry_negative_mtime_round_trips),
		cmocka_unit_test(test_fs_entry_bad_rejected),
		cmocka_unit_test(test_fs_entry_every_truncation_rejected_or_decoded_cleanly),
		cmocka_unit_test(test_fs_records_round_trip),
		cmocka_unit_test(test_fs_record_length_past_payload_rejected),
		cmocka_unit_test(test_fs_record_trailing_bytes_rejected),
		cmocka_unit_test(test_fs_record_with_bad_entry_rejected),
		cmocka_unit_test(test_fs_records_every_truncation_rejected_or_read_cleanly),
		cmocka_unit_test(test_mount_round_trip_and_required_fields),
		cmocka_unit_test(test_unmount_round_trip_and_target_required),
		cmocka_unit_test(test_request_ok_fields_are_optional_and_bounded),
		cmocka_unit_test(test_shutdown_frame_has_its_type_and_the_stop_body),
		cmocka_unit_test(test_request_ok_carries_a_port_list),
		cmocka_unit_test(test_save_round_trip_and_bounds),
		cmocka_unit_test(test_pause_round_trip_and_bounds),
		cmocka_unit_test(test_limits_round_trip_and_bounds),
		cmocka_unit_test(test_watch_round_trip_and_refusals),
		cmocka_unit_test(test_watch_event_records_round_trip_and_refusals),
		cmocka_unit_test(test_display_messages_round_trip_and_bounds),
		cmocka_unit_test(test_mount_messages_survive_every_truncation),
		cmocka_unit_test(test_port_add_remove_round_trip_and_bounds),
		cmocka_unit_test(test_net_rule_round_trip_and_bounds),
		cmocka_unit_test(test_fwd_connect_round_trip_and_bounds),
		cmocka_unit_test(test_vm_mount_round_trip_and_what_the_agent_may_be_asked),
		cmocka_unit_test(test_fs_entry_names_root_only_in_stat_replies),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
