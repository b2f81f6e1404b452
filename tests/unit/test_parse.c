/* Unit tests for src/common/parse.c: every accepted form, every error path (with the exact
 * wording for a few), boundaries, and random input that must not crash. */
#include <errno.h>
#include <inttypes.h>
#include <locale.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "parse.h"

/* ---- helpers ---------------------------------------------------------------------------- */

/* Every failure must come with a filled, one-line, printable, valid UTF-8 message (messages
 * end up in JSON and on terminals). main() selects a UTF-8 locale for mbstowcs. */
static void check_message_shape(const capsule_error *e)
{
	assert_true(e->message[0] != '\0');
	if (mbstowcs(NULL, e->message, 0) == (size_t)-1)
		fail_msg("message is not valid UTF-8: %s", e->message);
	for (const char *p = e->message; *p; p++) {
		unsigned char c = (unsigned char)*p;
		if (c < 0x20 || c == 0x7f)
			fail_msg("control byte 0x%02x in message: %s", c, e->message);
	}
}

/* Checks one failure, then poisons E: a test that reuses one error object for its next call
 * must see that call fill it, not pass on what the last one left. */
static void expect_fail(int ret, capsule_error *e, int code, const char *needle)
{
	if (ret != -code)
		fail_msg("expected %d, got %d (%s)", -code, ret, e->message);
	assert_int_equal(e->code, code);
	check_message_shape(e);
	if (needle && !strstr(e->message, needle))
		fail_msg("message '%s' lacks '%s'", e->message, needle);
	e->code = -1;
	snprintf(e->message, sizeof(e->message), "(left over from an earlier call)");
}

static uint64_t size_ok(const char *s)
{
	capsule_error e = {0};
	uint64_t v = 12345;
	int r = parse_size(s, &v, &e);
	if (r != 0)
		fail_msg("parse_size('%s') failed: %s", s, e.message);
	return v;
}

static void size_bad(const char *s, const char *needle)
{
	capsule_error e = {0};
	uint64_t v = 12345;
	expect_fail(parse_size(s, &v, &e), &e, EINVAL, needle);
	assert_int_equal(v, 12345); /* untouched on failure */
}

static uint32_t cpus_ok(const char *s)
{
	capsule_error e = {0};
	uint32_t v = 7;
	if (parse_cpus(s, &v, &e) != 0)
		fail_msg("parse_cpus('%s') failed: %s", s, e.message);
	return v;
}

static void cpus_bad(const char *s, const char *needle)
{
	capsule_error e = {0};
	uint32_t v = 7;
	expect_fail(parse_cpus(s, &v, &e), &e, EINVAL, needle);
	assert_int_equal(v, 7);
}

static uint32_t dur_ok(const char *s)
{
	capsule_error e = {0};
	uint32_t v = 7;
	if (parse_duration_ms(s, &v, &e) != 0)
		fail_msg("parse_duration_ms('%s') failed: %s", s, e.message);
	return v;
}

static void dur_bad(const char *s, const char *needle)
{
	capsule_error e = {0};
	uint32_t v = 7;
	expect_fail(parse_duration_ms(s, &v, &e), &e, EINVAL, needle);
	assert_int_equal(v, 7);
}

static void name_bad(const char *s, const char *needle)
{
	capsule_error e = {0};
	expect_fail(parse_name(s, "sandbox name", &e), &e, EINVAL, needle);
}

static void mount_bad(const char *s, const char *needle)
{
	capsule_error e = {0};
	struct mount_spec m;
	memset(&m, 0xa5, sizeof(m)); /* garbage in: must come back zeroed */
	expect_fail(parse_mount_spec(s, &m, &e), &e, EINVAL, needle);
	assert_null(m.source);
	assert_null(m.target);
	mount_spec_free(&m);
}

static void tmpfs_bad(const char *s, const char *needle)
{
	capsule_error e = {0};
	struct tmpfs_spec t;
	memset(&t, 0xa5, sizeof(t));
	expect_fail(parse_tmpfs_spec(s, &t, &e), &e, EINVAL, needle);
	assert_null(t.target);
	tmpfs_spec_free(&t);
}

static void env_bad(const char *s, const char *needle)
{
	capsule_error e = {0};
	expect_fail(parse_env(s, &e), &e, EINVAL, needle);
}

static void user_bad(const char *s, const char *needle)
{
	capsule_error e = {0};
	char *u = (char *)1, *g = (char *)1;
	expect_fail(parse_user_spec(s, &u, &g, &e), &e, EINVAL, needle);
	assert_null(u);
	assert_null(g);
}

static void port_bad(const char *s, const char *needle)
{
	capsule_error e = {0};
	struct port_spec p;
	memset(&p, 0x5a, sizeof(p));
	struct port_spec before = p;
	expect_fail(parse_port_spec(s, &p, &e), &e, EINVAL, needle);
	assert_memory_equal(&p, &before, sizeof(p));
}

static char *repeat(char c, size_t n)
{
	char *s = malloc(n + 1);
	assert_non_null(s);
	memset(s, c, n);
	s[n] = '\0';
	return s;
}

/* ---- parse_size ------------------------------------------------------------------------- */

static void test_size_plain_bytes_and_zero(void **state)
{
	(void)state;
	assert_int_equal(size_ok("0"), 0);
	assert_int_equal(size_ok("1"), 1);
	assert_int_equal(size_ok("1024"), 1024);
	assert_int_equal(size_ok("007"), 7);
	assert_int_equal(size_ok("10b"), 10);
	assert_int_equal(size_ok("10B"), 10);
}

static void test_size_binary_units_any_case(void **state)
{
	(void)state;
	assert_int_equal(size_ok("512k"), 512ull << 10);
	assert_int_equal(size_ok("512K"), 512ull << 10);
	assert_int_equal(size_ok("512m"), 512ull << 20);
	assert_int_equal(size_ok("512M"), 512ull << 20);
	assert_int_equal(size_ok("1g"), 1ull << 30);
	assert_int_equal(size_ok("1G"), 1ull << 30);
	assert_int_equal(size_ok("2t"), 2ull << 40);
	assert_int_equal(size_ok("2T"), 2ull << 40);
}

static void test_size_unit_suffix_forms_b_ib(void **state)
{
	(void)state;
	assert_int_equal(size_ok("100MB"), 100ull << 20);
	assert_int_equal(size_ok("100mb"), 100ull << 20);
	assert_int_equal(size_ok("1GiB"), 1ull << 30);
	assert_int_equal(size_ok("1gib"), 1ull << 30);
	assert_int_equal(size_ok("1Gi"), 1ull << 30);
	assert_int_equal(size_ok("4KB"), 4096);
	assert_int_equal(size_ok("1 G"), 1ull << 30); /* docker allows one space */
}

static void test_size_fractions_truncate_to_bytes(void **state)
{
	(void)state;
	assert_int_equal(size_ok("1.5G"), 3ull << 29);
	assert_int_equal(size_ok("0.5k"), 512);
	assert_int_equal(size_ok("1.5"), 1);
	assert_int_equal(size_ok("0.0001k"), 0);
	assert_int_equal(size_ok("1.999999999999999999999999k"), 2047);
	assert_int_equal(size_ok("0.25m"), 256ull << 10);
}

static void test_size_limit_is_2_pow_62(void **state)
{
	(void)state;
	assert_int_equal(size_ok("4611686018427387904"), 1ull << 62);
	assert_int_equal(size_ok("4194304t"), 1ull << 62);
	assert_int_equal(size_ok("4194303.999t"), (4194303ull << 40) + (999ull << 40) / 1000);
	size_bad("4611686018427387905", "too large");
	size_bad("4194304.001t", "too large");
	size_bad("4194305t", "too large");
}

static void test_size_huge_numbers_do_not_wrap(void **state)
{
	(void)state;
	size_bad("99999999999999999999G", "'99999999999999999999G'");
	size_bad("99999999999999999999G", "too large");
	size_bad("18446744073709551616", "too large");
	size_bad("18446744073709551615", "too large");
	size_bad("17179869184g", "too large"); /* 2^34 g = 2^64: would wrap to 0 in 64 bits */
	size_bad("99999999999999999999999999999999999999999999999999", "too large");
}

static void test_size_unknown_unit_exact_message(void **state)
{
	(void)state;
	capsule_error e = {0};
	uint64_t v;
	assert_int_equal(parse_size("512X", &v, &e), -EINVAL);
	assert_int_equal(e.code, EINVAL);
	assert_string_equal(e.message, "invalid size '512X': unknown unit 'X' (use b, k, m, g or t)");
	size_bad("512KX", "unknown unit 'KX'");
	size_bad("1p", "unknown unit 'p'");
	size_bad("1iB", "unknown unit 'iB'");
	size_bad("1kbb", "unknown unit 'kbb'");
	size_bad("1KiBs", "unknown unit");
}

static void test_size_rejects_empty_negative_and_junk(void **state)
{
	(void)state;
	capsule_error e = {0};
	uint64_t v;
	assert_int_equal(parse_size("", &v, &e), -EINVAL);
	assert_string_equal(e.message, "invalid size '': empty value");
	size_bad(NULL, "''");
	size_bad("-1", "must not be negative");
	size_bad("-1G", "'-1G'");
	size_bad("+1", "expected a number");
	size_bad(" 1", "expected a number");
	size_bad("G", "expected a number");
	size_bad(".5G", "expected a number");
	size_bad("1.", "expected digits after '.'");
	size_bad("1.G", "expected digits after '.'");
	size_bad("1.5.5G", "unknown unit '.5G'");
	size_bad("1 ", "unknown unit ' '");
	size_bad("1  G", "unknown unit ' G'");
	size_bad("1G ", "unknown unit 'G '");
	size_bad("0x10", "unknown unit 'x10'");
	size_bad("1e3", "unknown unit 'e3'");
	size_bad("1,5G", "unknown unit ',5G'");
}

static void test_size_message_escapes_control_bytes(void **state)
{
	(void)state;
	size_bad("1\nG", "'1\\x0aG'");
	size_bad("\x1b[31m", "'\\x1b[31m'");
}

static void test_size_null_err_is_allowed(void **state)
{
	(void)state;
	uint64_t v = 3;
	assert_int_equal(parse_size("bogus", &v, NULL), -EINVAL);
	assert_int_equal(v, 3);
	assert_int_equal(parse_size("2k", &v, NULL), 0);
	assert_int_equal(v, 2048);
}

static void test_size_long_input_message_is_truncated_not_overflowed(void **state)
{
	(void)state;
	char *s = repeat('9', 5000);
	capsule_error e = {0};
	uint64_t v;
	assert_int_equal(parse_size(s, &v, &e), -EINVAL);
	check_message_shape(&e);
	assert_non_null(strstr(e.message, "..."));
	assert_non_null(strstr(e.message, "too large"));
	free(s);
}

/* ---- parse_cpus ------------------------------------------------------------------------- */

static void test_cpus_accepts_docker_forms(void **state)
{
	(void)state;
	assert_int_equal(cpus_ok("1"), 1000);
	assert_int_equal(cpus_ok("0.5"), 500);
	assert_int_equal(cpus_ok("1.25"), 1250);
	assert_int_equal(cpus_ok(".5"), 500);
	assert_int_equal(cpus_ok("2.0"), 2000);
	assert_int_equal(cpus_ok("0.001"), 1);
	assert_int_equal(cpus_ok("0.5000"), 500); /* zeros past the third decimal are exact */
	assert_int_equal(cpus_ok("16"), 16000);
}

static void test_cpus_boundaries(void **state)
{
	(void)state;
	assert_int_equal(cpus_ok("1024"), 1024000);
	assert_int_equal(cpus_ok("1024.000"), 1024000);
	cpus_bad("1024.001", "at most 1024 CPUs");
	cpus_bad("1025", "at most 1024 CPUs");
	cpus_bad("99999999999999999999999", "at most 1024 CPUs");
	cpus_bad("0", "must be greater than 0");
	cpus_bad("0.000", "must be greater than 0");
	cpus_bad("0.0001", "at most 3 decimal places");
	cpus_bad("1.2345", "at most 3 decimal places");
}

static void test_cpus_rejects_malformed(void **state)
{
	(void)state;
	capsule_error e = {0};
	uint32_t v;
	assert_int_equal(parse_cpus("1.5x", &v, &e), -EINVAL);
	assert_string_equal(e.message, "invalid cpus '1.5x': unexpected 'x' after the number");
	cpus_bad("", "empty value");
	cpus_bad(NULL, "empty value");
	cpus_bad("-1", "must be greater than 0");
	cpus_bad("abc", "expected a number");
	cpus_bad(".", "expected a number");
	cpus_bad("1.", "expected digits after '.'");
	cpus_bad(" 1", "expected a number");
	cpus_bad("1 ", "unexpected ' '");
	cpus_bad("1e3", "unexpected 'e3'");
	cpus_bad("1.5.5", "unexpected '.5'");
}

/* ---- parse_duration_ms ------------------------------------------------------------------ */

static void test_duration_units(void **state)
{
	(void)state;
	assert_int_equal(dur_ok("30"), 30000);
	assert_int_equal(dur_ok("0"), 0);
	assert_int_equal(dur_ok("30s"), 30000);
	assert_int_equal(dur_ok("500ms"), 500);
	assert_int_equal(dur_ok("2m"), 120000);
	assert_int_equal(dur_ok("1h"), 3600000);
	assert_int_equal(dur_ok("1.5s"), 1500);
	assert_int_equal(dur_ok("1.5"), 1500);
	assert_int_equal(dur_ok(".5s"), 500);
	assert_int_equal(dur_ok("0.5h"), 1800000);
}

static void test_duration_compound_and_truncation(void **state)
{
	(void)state;
	assert_int_equal(dur_ok("1m30s"), 90000);
	assert_int_equal(dur_ok("1h1m1s1ms"), 3661001);
	assert_int_equal(dur_ok("1.5ms"), 1);
	assert_int_equal(dur_ok("0.0001s"), 0);
	assert_int_equal(dur_ok("1.0009999999999s"), 1000);
}

static void test_duration_limit_uint32(void **state)
{
	(void)state;
	assert_int_equal(dur_ok("4294967295ms"), UINT32_MAX);
	assert_int_equal(dur_ok("4294967.295s"), UINT32_MAX);
	assert_int_equal(dur_ok("1193h"), 1193u * 3600000u);
	dur_bad("4294967296ms", "too long");
	dur_bad("4294968", "too long");
	dur_bad("1194h", "too long");
	dur_bad("1193h3m", "too long");
	assert_int_equal(dur_ok("1193h2m"), 1193u * 3600000u + 120000u);
	dur_bad("99999999999999999999999h", "too long");
	dur_bad("18446744073709551616ms", "too long");
}

static void test_duration_rejects_malformed(void **state)
{
	(void)state;
	capsule_error e = {0};
	uint32_t v;
	assert_int_equal(parse_duration_ms("30S", &v, &e), -EINVAL);
	assert_string_equal(e.message, "invalid duration '30S': unknown unit 'S' (use ms, s, m or h)");
	assert_int_equal(parse_duration_ms("1m30", &v, &e), -EINVAL);
	assert_string_equal(e.message, "invalid duration '1m30': missing unit after '30' (use ms, s, m or h)");
	dur_bad("", "empty value");
	dur_bad(NULL, "empty value");
	dur_bad("-1s", "must not be negative");
	dur_bad("s", "expected a number at 's'");
	dur_bad("1.s", "expected digits after '.'");
	dur_bad("1x", "unknown unit 'x'");
	dur_bad("1us", "unknown unit 'us'");
	dur_bad("1 s", "unknown unit ' s'");
	dur_bad("1s ", "unknown unit 's '");
	dur_bad("1d", "unknown unit 'd'");
	dur_bad("1ms.", "expected a number at '.'");
	dur_bad("1m-5s", "unknown unit 'm-'");
}

/* ---- parse_uint ------------------------------------------------------------------------- */

static void test_uint_accepts_range_bounds(void **state)
{
	(void)state;
	uint64_t v = 0;
	assert_int_equal(parse_uint("1", "pids limit", 1, 100, &v, NULL), 0);
	assert_int_equal(v, 1);
	assert_int_equal(parse_uint("100", "pids limit", 1, 100, &v, NULL), 0);
	assert_int_equal(v, 100);
	assert_int_equal(parse_uint("0", "x", 0, 0, &v, NULL), 0);
	assert_int_equal(v, 0);
	assert_int_equal(parse_uint("18446744073709551615", "x", 0, UINT64_MAX, &v, NULL), 0);
	assert_true(v == UINT64_MAX);
	assert_int_equal(parse_uint("0042", "x", 0, 100, &v, NULL), 0);
	assert_int_equal(v, 42);
}

static void test_uint_out_of_range_exact_message(void **state)
{
	(void)state;
	capsule_error e = {0};
	uint64_t v = 9;
	assert_int_equal(parse_uint("0", "pids limit", 1, 100, &v, &e), -EINVAL);
	assert_string_equal(e.message, "invalid pids limit '0': must be between 1 and 100");
	assert_int_equal(v, 9);
	expect_fail(parse_uint("101", "pids limit", 1, 100, &v, &e), &e, EINVAL, "between 1 and 100");
	expect_fail(parse_uint("18446744073709551616", "x", 0, UINT64_MAX, &v, &e), &e, EINVAL, "between");
	expect_fail(parse_uint("99999999999999999999999999", "x", 0, 10, &v, &e), &e, EINVAL, "between");
	assert_int_equal(v, 9);
}

static void test_uint_rejects_non_decimal(void **state)
{
	(void)state;
	capsule_error e = {0};
	uint64_t v = 9;
	assert_int_equal(parse_uint("x", "pids limit", 1, 100, &v, &e), -EINVAL);
	assert_string_equal(e.message, "invalid pids limit 'x': not a decimal number");
	const char *bad[] = { "+1", "-1", " 1", "1 ", "0x10", "1.0", "1e2", "１" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		expect_fail(parse_uint(bad[i], "pids limit", 0, 100, &v, &e), &e, EINVAL, "not a decimal number");
	expect_fail(parse_uint("", "pids limit", 0, 100, &v, &e), &e, EINVAL, "invalid pids limit '': empty value");
	expect_fail(parse_uint(NULL, NULL, 0, 100, &v, &e), &e, EINVAL, "invalid number '': empty value");
	assert_int_equal(v, 9);
}

/* ---- parse_name ------------------------------------------------------------------------- */

static void test_name_accepts_valid(void **state)
{
	(void)state;
	char *max = repeat('a', 63);
	assert_int_equal(parse_name("a", "sandbox name", NULL), 0);
	assert_int_equal(parse_name("0", "sandbox name", NULL), 0);
	assert_int_equal(parse_name("My-box_1.2", "sandbox name", NULL), 0);
	assert_int_equal(parse_name("a..b", "sandbox name", NULL), 0);
	assert_int_equal(parse_name("a-", "sandbox name", NULL), 0);
	assert_int_equal(parse_name(max, "sandbox name", NULL), 0);
	free(max);
}

static void test_name_rejects_invalid(void **state)
{
	(void)state;
	capsule_error e = {0};
	char *toolong = repeat('a', 64);
	assert_int_equal(parse_name("a/b", "sandbox name", &e), -EINVAL);
	assert_string_equal(e.message,
			    "invalid sandbox name 'a/b': character '/' is not allowed (use letters, digits, '_', '.' and '-')");
	name_bad(toolong, "too long (64 characters, at most 63)");
	name_bad("", "invalid sandbox name '': must not be empty");
	name_bad(NULL, "must not be empty");
	name_bad("-a", "must start with a letter or a digit");
	name_bad(".a", "must start with a letter or a digit");
	name_bad("_a", "must start with a letter or a digit");
	name_bad(".", "must start");
	name_bad("..", "must start");
	name_bad("a b", "character ' '");
	name_bad("a:b", "character ':'");
	name_bad("a\nb", "character '\\x0a'");
	name_bad("caf\xc3\xa9", "character '\xc3\xa9' is not allowed");
	name_bad("a\xff", "invalid sandbox name 'a\\xff': character '\\xff'");
	name_bad("a\xc3", "character '\\xc3'");
	assert_int_equal(parse_name("a b", "volume name", &e), -EINVAL);
	assert_non_null(strstr(e.message, "invalid volume name 'a b'"));
	assert_int_equal(parse_name("", NULL, &e), -EINVAL);
	assert_non_null(strstr(e.message, "invalid name"));
	free(toolong);
}

/* ---- normalize_abs_path ----------------------------------------------------------------- */

static void test_normalize_table(void **state)
{
	(void)state;
	static const struct {
		const char *in, *out;
	} cases[] = {
		{ "/", "/" },
		{ "//", "/" },
		{ "///a///b///", "/a/b" },
		{ "/a/b/", "/a/b" },
		{ "/a/./b/.", "/a/b" },
		{ "/./", "/" },
		{ "/a/../b", "/b" },
		{ "/..", "/" },
		{ "/../../x", "/x" },
		{ "/a/b/../../..", "/" },
		{ "/a/b/../c/./d/..", "/a/c" },
		{ "/..a/b..", "/..a/b.." },
		{ "/.../.x", "/.../.x" },
		{ "/a/.", "/a" },
		{ "/a/..", "/" },
		{ "/usr/lib/../lib64//x", "/usr/lib64/x" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char out[64];
		capsule_error e = {0};
		if (normalize_abs_path(cases[i].in, out, sizeof(out), &e) != 0)
			fail_msg("normalize('%s') failed: %s", cases[i].in, e.message);
		if (strcmp(out, cases[i].out) != 0)
			fail_msg("normalize('%s') = '%s', want '%s'", cases[i].in, out, cases[i].out);
	}
}

static void test_normalize_in_place(void **state)
{
	(void)state;
	char buf[] = "//a/./b/../c//";
	assert_int_equal(normalize_abs_path(buf, buf, sizeof(buf), NULL), 0);
	assert_string_equal(buf, "/a/c");
}

static void test_normalize_rejects_relative(void **state)
{
	(void)state;
	char out[64];
	capsule_error e = {0};
	assert_int_equal(normalize_abs_path("a/b", out, sizeof(out), &e), -EINVAL);
	assert_string_equal(e.message, "invalid path 'a/b': must be absolute");
	expect_fail(normalize_abs_path("", out, sizeof(out), &e), &e, EINVAL, "must be absolute");
	expect_fail(normalize_abs_path("./a", out, sizeof(out), &e), &e, EINVAL, "must be absolute");
	expect_fail(normalize_abs_path(NULL, out, sizeof(out), &e), &e, EINVAL, "must be absolute");
}

static void test_normalize_length_limit_4096(void **state)
{
	(void)state;
	char *ok = repeat('a', 4096), *bad = repeat('a', 4097);
	char *out = malloc(4100);
	capsule_error e = {0};
	ok[0] = '/';
	bad[0] = '/';
	assert_int_equal(normalize_abs_path(ok, out, 4100, &e), 0);
	assert_string_equal(out, ok);
	expect_fail(normalize_abs_path(bad, out, 4100, &e), &e, EINVAL, "too long (4097 bytes, at most 4096)");
	free(ok);
	free(bad);
	free(out);
}

static void test_normalize_small_buffer_is_erange(void **state)
{
	(void)state;
	char out[4];
	capsule_error e = {0};
	expect_fail(normalize_abs_path("/abc", out, sizeof(out), &e), &e, ERANGE, "buffer too small");
	/* The check is on the input length (the result can never be longer), not the result. */
	expect_fail(normalize_abs_path("/a/..", out, sizeof(out), &e), &e, ERANGE, "buffer too small");
	assert_int_equal(normalize_abs_path("/ab", out, sizeof(out), &e), 0);
	assert_string_equal(out, "/ab");
}

/* ---- parse_mount_spec ------------------------------------------------------------------- */

static void test_mount_host_path_default_rw(void **state)
{
	(void)state;
	struct mount_spec m;
	capsule_error e = {0};
	assert_int_equal(parse_mount_spec("/srv/data:/data", &m, &e), 0);
	assert_string_equal(m.source, "/srv/data");
	assert_string_equal(m.target, "/data");
	assert_false(m.source_is_volume);
	assert_false(m.readonly);
	mount_spec_free(&m);
	assert_null(m.source);
	assert_null(m.target);
	mount_spec_free(&m); /* twice is fine */
	mount_spec_free(NULL);
}

static void test_mount_volume_ro_and_options(void **state)
{
	(void)state;
	struct mount_spec m;
	assert_int_equal(parse_mount_spec("cache-1:/var/cache:ro", &m, NULL), 0);
	assert_string_equal(m.source, "cache-1");
	assert_string_equal(m.target, "/var/cache");
	assert_true(m.source_is_volume);
	assert_true(m.readonly);
	mount_spec_free(&m);

	assert_int_equal(parse_mount_spec("/h:/d:rw", &m, NULL), 0);
	assert_false(m.readonly);
	mount_spec_free(&m);
	assert_int_equal(parse_mount_spec("/h:/d:ro,ro", &m, NULL), 0);
	assert_true(m.readonly);
	mount_spec_free(&m);
	assert_int_equal(parse_mount_spec("/:/host", &m, NULL), 0); /* the host root as a source is allowed */
	assert_string_equal(m.source, "/");
	mount_spec_free(&m);
}

static void test_mount_target_is_normalized_source_verbatim(void **state)
{
	(void)state;
	struct mount_spec m;
	assert_int_equal(parse_mount_spec("/a//b/../c/:/x//y/./z/:ro", &m, NULL), 0);
	assert_string_equal(m.source, "/a//b/../c/");
	assert_string_equal(m.target, "/x/y/z");
	mount_spec_free(&m);
}

static void test_mount_rejects_bad_targets(void **state)
{
	(void)state;
	capsule_error e = {0};
	struct mount_spec m;
	assert_int_equal(parse_mount_spec("/h:/a/../etc", &m, &e), -EINVAL);
	assert_string_equal(e.message, "invalid mount '/h:/a/../etc': target '/a/../etc' must not contain '..'");
	mount_bad("/h:/", "target must not be '/'");
	mount_bad("/h://", "target must not be '/'");
	mount_bad("/h:/.", "target must not be '/'");
	mount_bad("/h:/..", "must not contain '..'");
	mount_bad("/h:/a/..", "must not contain '..'");
	mount_bad("/h:data", "target 'data' must be an absolute path");
	mount_bad("/h:", "empty target");
	mount_bad("/h::ro", "empty target");
	char *longt = repeat('a', 4200);
	longt[0] = '/';
	char *spec;
	assert_true(asprintf(&spec, "/h:%s", longt) > 0);
	mount_bad(spec, "target too long");
	free(spec);
	assert_true(asprintf(&spec, "%s:/d", longt) > 0);
	mount_bad(spec, "source too long");
	free(spec);
	free(longt);
}

static void test_mount_rejects_bad_sources(void **state)
{
	(void)state;
	mount_bad("", "invalid mount '': empty value");
	mount_bad(NULL, "empty value");
	mount_bad(":/d", "empty source");
	mount_bad("./data:/d", "source './data' is neither an absolute host path nor a valid volume name");
	mount_bad("-vol:/d", "neither an absolute host path nor a valid volume name");
	mount_bad("vol name:/d", "neither");
	mount_bad("/h", "expected SRC:DST[:ro|rw]");
	mount_bad("vol", "expected SRC:DST");
}

static void test_mount_rejects_bad_options(void **state)
{
	(void)state;
	mount_bad("/h:/d:z", "unknown option 'z' (use ro or rw)");
	mount_bad("/h:/d:ro,z", "unknown option 'z'");
	mount_bad("/h:/d:RO", "unknown option 'RO'");
	mount_bad("/h:/d:", "empty options");
	mount_bad("/h:/d:ro,", "empty option");
	mount_bad("/h:/d:,ro", "empty option");
	mount_bad("/h:/d:ro,,rw", "empty option");
	mount_bad("/h:/d:ro,rw", "conflicting options 'ro' and 'rw'");
	mount_bad("/h:/d:rw,ro", "conflicting");
	mount_bad("/h:/d:ro:x", "too many ':'");
	mount_bad("C:/x:/d", "unknown option '/d'");
	mount_bad("a:b:c:d", "too many ':'");
}

/* ---- parse_tmpfs_spec ------------------------------------------------------------------- */

static void test_tmpfs_defaults(void **state)
{
	(void)state;
	struct tmpfs_spec t;
	assert_int_equal(parse_tmpfs_spec("/tmp", &t, NULL), 0);
	assert_string_equal(t.target, "/tmp");
	assert_int_equal(t.size_bytes, 64ull << 20);
	assert_int_equal(t.mode, 01777);
	tmpfs_spec_free(&t);
	assert_null(t.target);
	tmpfs_spec_free(&t);
	tmpfs_spec_free(NULL);
}

static void test_tmpfs_size_and_mode(void **state)
{
	(void)state;
	struct tmpfs_spec t;
	assert_int_equal(parse_tmpfs_spec("/run//x/:size=100M,mode=0755", &t, NULL), 0);
	assert_string_equal(t.target, "/run/x");
	assert_int_equal(t.size_bytes, 100ull << 20);
	assert_int_equal(t.mode, 0755);
	tmpfs_spec_free(&t);
	assert_int_equal(parse_tmpfs_spec("/t:mode=7777", &t, NULL), 0);
	assert_int_equal(t.mode, 07777);
	assert_int_equal(t.size_bytes, 64ull << 20);
	tmpfs_spec_free(&t);
	assert_int_equal(parse_tmpfs_spec("/t:mode=0", &t, NULL), 0);
	assert_int_equal(t.mode, 0);
	tmpfs_spec_free(&t);
	assert_int_equal(parse_tmpfs_spec("/t:size=1k,size=2k", &t, NULL), 0); /* last wins, as in mount(8) */
	assert_int_equal(t.size_bytes, 2048);
	tmpfs_spec_free(&t);
}

static void test_tmpfs_rejects_bad_input(void **state)
{
	(void)state;
	capsule_error e = {0};
	struct tmpfs_spec t;
	assert_int_equal(parse_tmpfs_spec("/tmp:size=5X", &t, &e), -EINVAL);
	assert_string_equal(e.message,
			    "invalid tmpfs '/tmp:size=5X': invalid size '5X': unknown unit 'X' (use b, k, m, g or t)");
	tmpfs_bad("", "invalid tmpfs '': empty value");
	tmpfs_bad(NULL, "empty value");
	tmpfs_bad("tmp", "target 'tmp' must be an absolute path");
	tmpfs_bad("/", "target must not be '/'");
	tmpfs_bad("/a/../b", "must not contain '..'");
	tmpfs_bad(":size=1m", "empty target");
	tmpfs_bad("/tmp:", "empty options");
	tmpfs_bad("/tmp:size=", "invalid size '': empty value");
	tmpfs_bad("/tmp:size=0", "size must be greater than 0");
	tmpfs_bad("/tmp:size=-1", "must not be negative");
	tmpfs_bad("/tmp:mode=", "empty mode");
	tmpfs_bad("/tmp:mode=8", "mode '8' is not octal");
	tmpfs_bad("/tmp:mode=0x1ff", "not octal");
	tmpfs_bad("/tmp:mode=17777", "mode '17777' is above 7777");
	tmpfs_bad("/tmp:mode=77777777777777777777777", "above 7777");
	tmpfs_bad("/tmp:noexec", "unknown option 'noexec' (use size= or mode=)");
	tmpfs_bad("/tmp:size", "unknown option 'size'");
	tmpfs_bad("/tmp:size=1m,,mode=1", "empty option");
	tmpfs_bad("/tmp:size=1m,", "empty option");
	tmpfs_bad("/tmp:a:b", "too many ':'");
}

/* ---- parse_env -------------------------------------------------------------------------- */

static void test_env_accepts_valid(void **state)
{
	(void)state;
	const char *ok[] = { "A=1", "_=", "_x9=", "PATH=/bin:/usr/bin", "A=b=c", "A=line\nbreak", "a=\xff" };
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		capsule_error e = {0};
		if (parse_env(ok[i], &e) != 0)
			fail_msg("parse_env('%s') failed: %s", ok[i], e.message);
	}
}

static void test_env_rejects_invalid(void **state)
{
	(void)state;
	capsule_error e = {0};
	assert_int_equal(parse_env("FOO", &e), -EINVAL);
	assert_string_equal(e.message, "invalid environment variable 'FOO': expected KEY=VALUE");
	env_bad("", "expected KEY=VALUE");
	env_bad(NULL, "expected KEY=VALUE");
	env_bad("=x", "empty name");
	env_bad("1A=x", "name '1A': must start with a letter or '_'");
	env_bad("A-B=x", "name 'A-B': character '-' is not allowed");
	env_bad("A B=x", "character ' '");
	env_bad("A\n=x", "character '\\x0a'");
	env_bad("\xc3\xa9=x", "character '\xc3\xa9' is not allowed");
}

static void test_env_message_never_shows_value(void **state)
{
	(void)state;
	capsule_error e = {0};
	const char *bad[] = { "1A=hunter2", "A-B=hunter2", "=hunter2", "A B=hunter2" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(parse_env(bad[i], &e), -EINVAL);
		if (strstr(e.message, "hunter2"))
			fail_msg("secret leaked: %s", e.message);
	}
}

/* ---- parse_user_spec -------------------------------------------------------------------- */

static void test_user_forms(void **state)
{
	(void)state;
	static const struct {
		const char *in, *user, *group;
	} cases[] = {
		{ "alice", "alice", NULL },
		{ "1000", "1000", NULL },
		{ "0", "0", NULL },
		{ "1000:1000", "1000", "1000" },
		{ "alice:staff", "alice", "staff" },
		{ "www-data:0", "www-data", "0" },
		{ "4294967294:4294967294", "4294967294", "4294967294" },
		{ "svc$", "svc$", NULL },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *u = NULL, *g = NULL;
		capsule_error e = {0};
		if (parse_user_spec(cases[i].in, &u, &g, &e) != 0)
			fail_msg("parse_user_spec('%s') failed: %s", cases[i].in, e.message);
		assert_string_equal(u, cases[i].user);
		if (cases[i].group)
			assert_string_equal(g, cases[i].group);
		else
			assert_null(g);
		free(u);
		free(g);
	}
}

static void test_user_rejects_invalid(void **state)
{
	(void)state;
	capsule_error e = {0};
	char *u, *g;
	assert_int_equal(parse_user_spec("a:b:c", &u, &g, &e), -EINVAL);
	assert_string_equal(e.message, "invalid user 'a:b:c': more than one ':' (use NAME|UID[:GROUP|GID])");
	user_bad("", "empty value");
	user_bad(NULL, "empty value");
	user_bad(":", "empty user");
	user_bad(":staff", "empty user");
	user_bad("alice:", "empty group");
	user_bad("::", "more than one ':'");
	user_bad("al ice", "character ' ' is not allowed in user");
	user_bad("alice:st\taff", "character '\\x09' is not allowed in group");
	user_bad("a/b", "character '/'");
	user_bad("-alice", "user '-alice' must not start with '-'");
	user_bad("alice:-g", "group '-g' must not start with '-'");
	user_bad("4294967295", "user '4294967295' out of range");
	user_bad("0:4294967295", "group '4294967295' out of range");
	user_bad("99999999999999999999999", "out of range");
	char *longname = repeat('u', 300);
	user_bad(longname, "user too long");
	free(longname);
}

/* ---- parse_port_spec -------------------------------------------------------------------- */

static void test_port_forms(void **state)
{
	(void)state;
	struct port_spec p;
	capsule_error e = {0};

	assert_int_equal(parse_port_spec("8080:80", &p, &e), 0);
	assert_string_equal(p.host_ip, "127.0.0.1");
	assert_int_equal(p.host_port, 8080);
	assert_int_equal(p.guest_port, 80);
	assert_false(p.udp);

	assert_int_equal(parse_port_spec("0.0.0.0:53:5353/udp", &p, &e), 0);
	assert_string_equal(p.host_ip, "0.0.0.0");
	assert_int_equal(p.host_port, 53);
	assert_int_equal(p.guest_port, 5353);
	assert_true(p.udp);

	assert_int_equal(parse_port_spec("[::1]:8080:80/tcp", &p, &e), 0);
	assert_string_equal(p.host_ip, "::1");
	assert_false(p.udp);

	assert_int_equal(parse_port_spec("[0:0:0:0:0:0:0:1]:1:65535/UDP", &p, &e), 0);
	assert_string_equal(p.host_ip, "::1"); /* canonical form */
	assert_int_equal(p.host_port, 1);
	assert_int_equal(p.guest_port, 65535);
	assert_true(p.udp);

	assert_int_equal(parse_port_spec("192.168.1.10:00443:443", &p, &e), 0);
	assert_string_equal(p.host_ip, "192.168.1.10");
	assert_int_equal(p.host_port, 443);
}

static void test_port_rejects_bad_ports(void **state)
{
	(void)state;
	capsule_error e = {0};
	struct port_spec p;
	assert_int_equal(parse_port_spec("65536:80", &p, &e), -EINVAL);
	assert_string_equal(e.message, "invalid port mapping '65536:80': host port '65536' out of range (use 1-65535)");
	port_bad("0:80", "host port '0' out of range");
	port_bad("80:0", "guest port '0' out of range");
	port_bad("80:99999999999999999999", "guest port '99999999999999999999' out of range");
	port_bad("80", "expected [HOSTIP:]HOSTPORT:GUESTPORT");
	port_bad("", "empty value");
	port_bad(NULL, "empty value");
	port_bad(":80", "empty host port");
	port_bad("80:", "empty guest port");
	port_bad("127.0.0.1::80", "empty host port");
	port_bad("a:80", "host port 'a' is not a number");
	port_bad("80:8o", "guest port '8o' is not a number");
	port_bad("+80:80", "is not a number");
	port_bad("80-90:80-90", "is not a number");
	port_bad(" 80:80", "is not a number");
}

static void test_port_rejects_bad_protocol_and_address(void **state)
{
	(void)state;
	port_bad("80:80/sctp", "unknown protocol 'sctp' (use tcp or udp)");
	port_bad("80:80/", "unknown protocol ''");
	port_bad("80:80/tcp/udp", "unknown protocol 'tcp/udp'");
	port_bad("1.2.3:80:80", "'1.2.3' is not an IPv4 address");
	port_bad("localhost:80:80", "'localhost' is not an IPv4 address");
	port_bad(":80:80", "empty host address");
	port_bad("::1:80:80", "IPv6 host address goes in brackets");
	port_bad("1:2:3:4", "too many ':'");
	port_bad("[::1]8080:80", "expected ':' after ']'");
	port_bad("[::1:8080:80", "missing ']'");
	port_bad("[::1]:8080", "expected HOSTPORT:GUESTPORT");
	port_bad("[]:80:80", "'' is not an IPv6 address");
	port_bad("[1.2.3.4]:80:80", "not an IPv6 address");
	port_bad("[::1]/tcp", "expected ':' after ']'");
	char *longip = repeat('1', 100);
	char *spec;
	assert_true(asprintf(&spec, "%s:80:80", longip) > 0);
	port_bad(spec, "host address too long");
	free(spec);
	assert_true(asprintf(&spec, "[%s]:80:80", longip) > 0);
	port_bad(spec, "host address too long");
	free(spec);
	free(longip);
}

/* ---- random input ----------------------------------------------------------------------- */

/* Bytes weighted towards the ones the grammars care about, plus anything at all. */
static void random_string(char *buf, size_t cap, unsigned *seed)
{
	static const char alphabet[] = "0123456789.:/,=-+[]kKmMgGtTbBiIsShHuUdpxXoOrRwWaz_ \t\n\xff\xc3";
	size_t n = (size_t)rand_r(seed) % (cap - 1);
	for (size_t i = 0; i < n; i++) {
		int r = rand_r(seed);
		if (r % 8 == 0) {
			buf[i] = (char)(1 + r / 8 % 255); /* any byte but NUL */
		} else {
			buf[i] = alphabet[(size_t)(r / 8) % (sizeof(alphabet) - 1)];
		}
	}
	buf[n] = '\0';
}

static void check_result(int r, const capsule_error *e, const char *in)
{
	if (r == 0)
		return;
	if (r >= 0 || e->code != -r)
		fail_msg("input '%s': bad return %d / code %d", in, r, e->code);
	check_message_shape(e);
}

static void check_normalized(const char *p)
{
	assert_true(p[0] == '/');
	assert_null(strstr(p, "//"));
	assert_null(strstr(p, "/./"));
	assert_null(strstr(p, "/../"));
	size_t n = strlen(p);
	if (n > 1) {
		assert_true(p[n - 1] != '/');
		assert_false(n >= 2 && strcmp(p + n - 2, "/.") == 0);
		assert_false(n >= 3 && strcmp(p + n - 3, "/..") == 0);
	}
}

/* Every parser on one input: any result is fine, but failures must be well formed and
 * successes must satisfy each parser's promises. */
static void exercise_all(const char *in)
{
	char out[256];
	capsule_error e = {0};
	uint64_t u64;
	uint32_t u32;
	int r;

	r = parse_size(in, &u64, &e);
	check_result(r, &e, in);
	if (r == 0)
		assert_true(u64 <= (1ull << 62));
	r = parse_cpus(in, &u32, &e);
	check_result(r, &e, in);
	if (r == 0)
		assert_true(u32 >= 1 && u32 <= 1024000);
	r = parse_duration_ms(in, &u32, &e);
	check_result(r, &e, in);
	r = parse_uint(in, "count", 1, 1000, &u64, &e);
	check_result(r, &e, in);
	if (r == 0)
		assert_true(u64 >= 1 && u64 <= 1000);
	check_result(parse_name(in, "name", &e), &e, in);
	check_result(parse_env(in, &e), &e, in);

	r = normalize_abs_path(in, out, sizeof(out), &e);
	check_result(r, &e, in);
	if (r == 0)
		check_normalized(out);

	struct mount_spec m;
	r = parse_mount_spec(in, &m, &e);
	check_result(r, &e, in);
	if (r == 0) {
		check_normalized(m.target);
		assert_true(strcmp(m.target, "/") != 0);
		assert_true(m.source_is_volume == (m.source[0] != '/'));
	}
	mount_spec_free(&m);

	struct tmpfs_spec t;
	r = parse_tmpfs_spec(in, &t, &e);
	check_result(r, &e, in);
	if (r == 0) {
		check_normalized(t.target);
		assert_true(t.size_bytes > 0 && t.mode <= 07777);
	}
	tmpfs_spec_free(&t);

	char *user = NULL, *group = NULL;
	r = parse_user_spec(in, &user, &group, &e);
	check_result(r, &e, in);
	if (r == 0)
		assert_non_null(user);
	free(user);
	free(group);

	struct port_spec p;
	r = parse_port_spec(in, &p, &e);
	check_result(r, &e, in);
	if (r == 0) {
		assert_true(p.host_port >= 1 && p.guest_port >= 1);
		assert_non_null(memchr(p.host_ip, '\0', sizeof(p.host_ip)));
	}
}

static void test_random_input_never_crashes(void **state)
{
	(void)state;
	unsigned seed = 12345;
	char in[96];

	for (int iter = 0; iter < 40000; iter++) {
		random_string(in, sizeof(in), &seed);
		/* Half the time make it look like a path, to reach deeper into the path code. */
		if (iter % 2 && in[0])
			in[0] = '/';
		exercise_all(in);
	}
}

/* Valid inputs with a few random edits (replace, insert, delete a byte) land near the
 * boundaries of each grammar far more often than random strings do. */
static void test_mutated_valid_inputs_never_crash(void **state)
{
	(void)state;
	static const char *const seeds[] = {
		"1.5G", "100MiB", "4611686018427387904", "0.125", "1024", "1h30m", "500ms", "1.5s",
		"my-box.1", "A_B=c=d", "/srv/data:/data:ro", "vol:/a/b/./c/", "/tmp:size=64m,mode=1777",
		"alice:staff", "1000:1000", "127.0.0.1:8080:80/udp", "[::1]:8080:80/tcp", "/a/../b//c/.",
	};
	unsigned seed = 777;
	char in[128];

	for (int iter = 0; iter < 40000; iter++) {
		const char *base = seeds[(size_t)rand_r(&seed) % (sizeof(seeds) / sizeof(seeds[0]))];
		size_t n = strlen(base);
		memcpy(in, base, n + 1);
		for (int edits = 1 + rand_r(&seed) % 3; edits > 0; edits--) {
			size_t at = n ? (size_t)rand_r(&seed) % n : 0;
			char c = (char)(1 + rand_r(&seed) % 255);
			switch (rand_r(&seed) % 3) {
			case 0:
				if (n)
					in[at] = c;
				break;
			case 1:
				if (n + 2 < sizeof(in)) {
					memmove(in + at + 1, in + at, n - at + 1);
					in[at] = c;
					n++;
				}
				break;
			default:
				if (n) {
					memmove(in + at, in + at + 1, n - at);
					n--;
				}
			}
		}
		exercise_all(in);
	}
}

/* Random strings rarely parse; these grow valid inputs so the success paths get fuzzed too. */
static void test_random_valid_sizes_and_durations_roundtrip(void **state)
{
	(void)state;
	unsigned seed = 99;
	static const char *const su[] = { "", "b", "k", "K", "m", "M", "g", "G", "t", "KB", "MiB", "gib" };
	static const uint64_t sm[] = { 1, 1, 1ull << 10, 1ull << 10, 1ull << 20, 1ull << 20, 1ull << 30,
				       1ull << 30, 1ull << 40, 1ull << 10, 1ull << 20, 1ull << 30 };
	for (int i = 0; i < 20000; i++) {
		char s[64];
		uint64_t n = (uint64_t)rand_r(&seed) % 5000;
		size_t k = (size_t)rand_r(&seed) % (sizeof(su) / sizeof(su[0]));
		uint64_t v;
		snprintf(s, sizeof(s), "%" PRIu64 "%s", n, su[k]);
		assert_int_equal(parse_size(s, &v, NULL), 0);
		assert_true(v == n * sm[k]);

		uint32_t ms, a = (uint32_t)rand_r(&seed) % 1000, b = (uint32_t)rand_r(&seed) % 60;
		snprintf(s, sizeof(s), "%um%us%ums", a, b, a);
		assert_int_equal(parse_duration_ms(s, &ms, NULL), 0);
		assert_int_equal(ms, a * 60000 + b * 1000 + a);
	}
}

int main(void)
{
	if (!setlocale(LC_CTYPE, "C.UTF-8")) {
		fprintf(stderr, "C.UTF-8 locale unavailable\n");
		return 1;
	}
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_size_plain_bytes_and_zero),
		cmocka_unit_test(test_size_binary_units_any_case),
		cmocka_unit_test(test_size_unit_suffix_forms_b_ib),
		cmocka_unit_test(test_size_fractions_truncate_to_bytes),
		cmocka_unit_test(test_size_limit_is_2_pow_62),
		cmocka_unit_test(test_size_huge_numbers_do_not_wrap),
		cmocka_unit_test(test_size_unknown_unit_exact_message),
		cmocka_unit_test(test_size_rejects_empty_negative_and_junk),
		cmocka_unit_test(test_size_message_escapes_control_bytes),
		cmocka_unit_test(test_size_null_err_is_allowed),
		cmocka_unit_test(test_size_long_input_message_is_truncated_not_overflowed),
		cmocka_unit_test(test_cpus_accepts_docker_forms),
		cmocka_unit_test(test_cpus_boundaries),
		cmocka_unit_test(test_cpus_rejects_malformed),
		cmocka_unit_test(test_duration_units),
		cmocka_unit_test(test_duration_compound_and_truncation),
		cmocka_unit_test(test_duration_limit_uint32),
		cmocka_unit_test(test_duration_rejects_malformed),
		cmocka_unit_test(test_uint_accepts_range_bounds),
		cmocka_unit_test(test_uint_out_of_range_exact_message),
		cmocka_unit_test(test_uint_rejects_non_decimal),
		cmocka_unit_test(test_name_accepts_valid),
		cmocka_unit_test(test_name_rejects_invalid),
		cmocka_unit_test(test_normalize_table),
		cmocka_unit_test(test_normalize_in_place),
		cmocka_unit_test(test_normalize_rejects_relative),
		cmocka_unit_test(test_normalize_length_limit_4096),
		cmocka_unit_test(test_normalize_small_buffer_is_erange),
		cmocka_unit_test(test_mount_host_path_default_rw),
		cmocka_unit_test(test_mount_volume_ro_and_options),
		cmocka_unit_test(test_mount_target_is_normalized_source_verbatim),
		cmocka_unit_test(test_mount_rejects_bad_targets),
		cmocka_unit_test(test_mount_rejects_bad_sources),
		cmocka_unit_test(test_mount_rejects_bad_options),
		cmocka_unit_test(test_tmpfs_defaults),
		cmocka_unit_test(test_tmpfs_size_and_mode),
		cmocka_unit_test(test_tmpfs_rejects_bad_input),
		cmocka_unit_test(test_env_accepts_valid),
		cmocka_unit_test(test_env_rejects_invalid),
		cmocka_unit_test(test_env_message_never_shows_value),
		cmocka_unit_test(test_user_forms),
		cmocka_unit_test(test_user_rejects_invalid),
		cmocka_unit_test(test_port_forms),
		cmocka_unit_test(test_port_rejects_bad_ports),
		cmocka_unit_test(test_port_rejects_bad_protocol_and_address),
		cmocka_unit_test(test_random_input_never_crashes),
		cmocka_unit_test(test_mutated_valid_inputs_never_crash),
		cmocka_unit_test(test_random_valid_sizes_and_durations_roundtrip),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
