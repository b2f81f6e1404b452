/* Unit tests for src/common/json_write.c and json_read.c: exact writer output (compact and
 * pretty), escaping and UTF-8 repair, misuse detection, the flat-object reader's grammar and
 * bounds, round trips, and hostile input that must not crash or read outside the buffer. */
#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "json.h"

/* ---- helpers ---------------------------------------------------------------------------- */

static char *finish(struct json_writer *w)
{
	int e = 12345;
	char *s = json_steal(w, &e);
	if (!s)
		fail_msg("json_steal failed: %d", e);
	assert_int_equal(e, 0);
	return s;
}

static void expect_text(struct json_writer *w, const char *want)
{
	char *s = finish(w);
	assert_string_equal(s, want);
	free(s);
}

static void expect_misuse(struct json_writer *w, int code)
{
	int e = 0;
	assert_null(json_steal(w, &e));
	assert_int_equal(e, code);
}

/* The text of one string value written by json_string. */
static char *string_json(const char *s)
{
	struct json_writer w;
	json_init(&w, false);
	json_string(&w, s);
	return finish(&w);
}

static void expect_string_json(const char *in, const char *want)
{
	char *s = string_json(in);
	assert_string_equal(s, want);
	free(s);
}

/* Copy TEXT into a heap block of exactly LEN bytes with no NUL after it, so ASan flags any
 * read past the end. */
static char *exact(const char *text, size_t len)
{
	char *p = malloc(len ? len : 1);
	assert_non_null(p);
	memcpy(p, text, len);
	return p;
}

static int get_string(const char *text, const char *key, char **out)
{
	size_t n = strlen(text);
	char *p = exact(text, n);
	int r = json_get_string(p, n, key, out);
	free(p);
	return r;
}

static int get_int(const char *text, const char *key, int64_t *out)
{
	size_t n = strlen(text);
	char *p = exact(text, n);
	int r = json_get_int(p, n, key, out);
	free(p);
	return r;
}

static int get_bool(const char *text, const char *key, bool *out)
{
	size_t n = strlen(text);
	char *p = exact(text, n);
	int r = json_get_bool(p, n, key, out);
	free(p);
	return r;
}

static void expect_get_string(const char *text, const char *key, const char *want)
{
	char *v = NULL;
	int r = get_string(text, key, &v);
	if (r != 0)
		fail_msg("json_get_string(%s, %s) = %d", text, key, r);
	assert_string_equal(v, want);
	free(v);
}

static void expect_invalid(const char *text)
{
	int64_t v;
	int r = get_int(text, "a", &v);
	if (r != -EBADMSG)
		fail_msg("expected -EBADMSG for '%s', got %d", text, r);
}

/* ---- writer ----------------------------------------------------------------------------- */

static void test_writer_compact_object_all_types(void **state)
{
	(void)state;
	struct json_writer w;
	json_init(&w, false);
	json_object_begin(&w);
	json_kv_string(&w, "name", "box");
	json_kv_int(&w, "neg", -5);
	json_kv_uint(&w, "big", 18446744073709551615ull);
	json_kv_bool(&w, "t", true);
	json_kv_bool(&w, "f", false);
	json_key(&w, "n");
	json_null(&w);
	json_kv_string(&w, "nul", NULL);
	json_object_end(&w);
	expect_text(&w, "{\"name\":\"box\",\"neg\":-5,\"big\":18446744073709551615,\"t\":true,\"f\":false,"
			"\"n\":null,\"nul\":null}");
}

static void test_writer_compact_nested_containers(void **state)
{
	(void)state;
	struct json_writer w;
	json_init(&w, false);
	json_array_begin(&w);
	json_int(&w, 1);
	json_array_begin(&w);
	json_array_end(&w);
	json_object_begin(&w);
	json_object_end(&w);
	json_object_begin(&w);
	json_key(&w, "a");
	json_array_begin(&w);
	json_string(&w, "x");
	json_bool(&w, false);
	json_array_end(&w);
	json_key(&w, "b");
	json_object_begin(&w);
	json_kv_int(&w, "c", 0);
	json_object_end(&w);
	json_object_end(&w);
	json_null(&w);
	json_array_end(&w);
	expect_text(&w, "[1,[],{},{\"a\":[\"x\",false],\"b\":{\"c\":0}},null]");
}

static void test_writer_pretty_layout(void **state)
{
	(void)state;
	struct json_writer w;
	json_init(&w, true);
	json_object_begin(&w);
	json_kv_string(&w, "id", "abc");
	json_key(&w, "ports");
	json_array_begin(&w);
	json_uint(&w, 80);
	json_uint(&w, 443);
	json_array_end(&w);
	json_key(&w, "empty");
	json_object_begin(&w);
	json_object_end(&w);
	json_key(&w, "none");
	json_array_begin(&w);
	json_array_end(&w);
	json_key(&w, "nested");
	json_object_begin(&w);
	json_kv_bool(&w, "ok", true);
	json_object_end(&w);
	json_object_end(&w);
	expect_text(&w, "{\n"
			"  \"id\": \"abc\",\n"
			"  \"ports\": [\n"
			"    80,\n"
			"    443\n"
			"  ],\n"
			"  \"empty\": {},\n"
			"  \"none\": [],\n"
			"  \"nested\": {\n"
			"    \"ok\": true\n"
			"  }\n"
			"}");
}

static void test_writer_pretty_strings_ending_in_space_or_colon(void **state)
{
	(void)state;
	/* The writer tells "value after a key" from the last byte it wrote; values whose content
	 * ends in ' ' or ':' must not confuse it (they end in '"'). */
	struct json_writer w;
	json_init(&w, true);
	json_array_begin(&w);
	json_string(&w, "a ");
	json_string(&w, "b:");
	json_array_end(&w);
	expect_text(&w, "[\n  \"a \",\n  \"b:\"\n]");
	json_init(&w, false);
	json_object_begin(&w);
	json_kv_string(&w, "k: ", "v: ");
	json_kv_string(&w, "k2", ":");
	json_object_end(&w);
	expect_text(&w, "{\"k: \":\"v: \",\"k2\":\":\"}");
}

static void test_writer_scalar_top_level_values(void **state)
{
	(void)state;
	struct json_writer w;
	json_init(&w, false);
	json_int(&w, INT64_MIN);
	expect_text(&w, "-9223372036854775808");
	json_int(&w, INT64_MAX);
	expect_text(&w, "9223372036854775807");
	json_uint(&w, 0);
	expect_text(&w, "0");
	json_string(&w, "");
	expect_text(&w, "\"\"");
	json_string(&w, NULL);
	expect_text(&w, "null");
	json_bool(&w, true);
	expect_text(&w, "true");
}

static void test_writer_escapes_quotes_backslash_and_controls(void **state)
{
	(void)state;
	expect_string_json("say \"hi\"", "\"say \\\"hi\\\"\"");
	expect_string_json("C:\\dir", "\"C:\\\\dir\"");
	expect_string_json("a\nb\tc\rd", "\"a\\u000ab\\u0009c\\u000dd\"");
	expect_string_json("\x01\x1f\x7f", "\"\\u0001\\u001f\\u007f\"");
	expect_string_json("\x1b[31m", "\"\\u001b[31m\"");
	/* The C1 controls, UTF-8 encoded: CSI (U+009B) works as ESC [ on some terminals. */
	expect_string_json("\xc2\x9b" "31m", "\"\\u009b31m\"");
	expect_string_json("a\xc2\x80z\xc2\x9f", "\"a\\u0080z\\u009f\"");
	expect_string_json("\xc2\xa0", "\"\xc2\xa0\"");             /* U+00A0 is printable */
	expect_string_json("/slash/ is fine", "\"/slash/ is fine\"");
}

static void test_writer_passes_valid_utf8(void **state)
{
	(void)state;
	expect_string_json("caf\xc3\xa9", "\"caf\xc3\xa9\"");
	expect_string_json("\xe2\x82\xac", "\"\xe2\x82\xac\"");             /* U+20AC */
	expect_string_json("\xf0\x9f\x98\x80", "\"\xf0\x9f\x98\x80\"");     /* U+1F600 */
	expect_string_json("\xef\xbf\xbf", "\"\xef\xbf\xbf\"");             /* U+FFFF */
	expect_string_json("\xf4\x8f\xbf\xbf", "\"\xf4\x8f\xbf\xbf\"");     /* U+10FFFF */
	expect_string_json("\xed\x9f\xbf", "\"\xed\x9f\xbf\"");             /* U+D7FF */
	expect_string_json("\xee\x80\x80", "\"\xee\x80\x80\"");             /* U+E000 */
}

static void test_writer_replaces_invalid_utf8_bytes(void **state)
{
	(void)state;
	expect_string_json("\xff", "\"\\ufffd\"");
	expect_string_json("a\x80z", "\"a\\ufffdz\"");                   /* lone continuation */
	expect_string_json("\xe2\x82", "\"\\ufffd\\ufffd\"");            /* truncated at the end */
	expect_string_json("\xe2\x82z", "\"\\ufffd\\ufffdz\"");          /* truncated in the middle */
	expect_string_json("\xc0\xaf", "\"\\ufffd\\ufffd\"");            /* overlong '/' */
	expect_string_json("\xe0\x80\xaf", "\"\\ufffd\\ufffd\\ufffd\""); /* overlong, 3 bytes */
	expect_string_json("\xed\xa0\x80", "\"\\ufffd\\ufffd\\ufffd\""); /* surrogate U+D800 */
	expect_string_json("\xf4\x90\x80\x80", "\"\\ufffd\\ufffd\\ufffd\\ufffd\""); /* > U+10FFFF */
	expect_string_json("\xf5\x80", "\"\\ufffd\\ufffd\"");
	expect_string_json("\xc3\xa9\xff\xc3\xa9", "\"\xc3\xa9\\ufffd\xc3\xa9\"");
}

static void test_writer_raw_values_take_their_place_and_commas(void **state)
{
	(void)state;
	struct json_writer w;
	json_init(&w, false);
	json_object_begin(&w);
	json_key(&w, "a");
	json_raw(&w, "{\"x\":[1,2]}");
	json_key(&w, "b");
	json_array_begin(&w);
	json_raw(&w, "3");
	json_raw(&w, "\"s\"");
	json_array_end(&w);
	json_object_end(&w);
	expect_text(&w, "{\"a\":{\"x\":[1,2]},\"b\":[3,\"s\"]}");
	/* A raw value is a value: one at the top level, none after it. */
	json_raw(&w, "{}");
	json_raw(&w, "{}");
	int err = 0;
	assert_null(json_steal(&w, &err));
	assert_int_equal(err, -EINVAL);
}

static void test_writer_escapes_keys_too(void **state)
{
	(void)state;
	struct json_writer w;
	json_init(&w, false);
	json_object_begin(&w);
	json_kv_int(&w, "a\"b\n\xff", 1);
	json_kv_int(&w, NULL, 2);
	json_object_end(&w);
	expect_text(&w, "{\"a\\\"b\\u000a\\ufffd\":1,\"\":2}");
}

static void test_writer_grows_buffer_for_large_output(void **state)
{
	(void)state;
	struct json_writer w;
	char key[32];
	json_init(&w, false);
	json_object_begin(&w);
	for (int i = 0; i < 20000; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		json_kv_int(&w, key, i);
	}
	char *long_value = malloc(100001);
	memset(long_value, 'x', 100000);
	long_value[100000] = '\0';
	json_kv_string(&w, "long", long_value);
	json_object_end(&w);
	char *s = finish(&w);
	assert_true(strncmp(s, "{\"k0\":0,\"k1\":1,", 15) == 0);
	int64_t v;
	assert_int_equal(json_get_int(s, strlen(s), "k19999", &v), 0);
	assert_int_equal(v, 19999);
	char *got = NULL;
	assert_int_equal(json_get_string(s, strlen(s), "long", &got), 0);
	assert_string_equal(got, long_value);
	free(got);
	free(long_value);
	free(s);
}

static void test_writer_steal_resets_and_keeps_pretty(void **state)
{
	(void)state;
	struct json_writer w;
	json_init(&w, true);
	json_array_begin(&w);
	json_int(&w, 1);
	json_array_end(&w);
	char *a = json_steal(&w, NULL); /* err_out may be NULL */
	assert_string_equal(a, "[\n  1\n]");
	assert_null(w.buf);
	assert_int_equal(w.len, 0);
	assert_true(w.pretty);
	json_array_begin(&w);
	json_array_end(&w);
	char *b = finish(&w);
	assert_string_equal(b, "[]");
	free(a);
	free(b);
}

static void test_writer_free_discards_and_allows_reuse(void **state)
{
	(void)state;
	struct json_writer w;
	json_init(&w, false);
	json_object_begin(&w);
	json_kv_string(&w, "a", "b");
	json_free(&w); /* unfinished: nothing leaks */
	assert_null(w.buf);
	json_free(&w);
	json_free(NULL);
	json_bool(&w, false);
	expect_text(&w, "false");
}

static void test_writer_misuse_unbalanced(void **state)
{
	(void)state;
	struct json_writer w;
	json_init(&w, false);
	json_object_begin(&w);
	expect_misuse(&w, -EINVAL); /* unclosed */
	json_object_end(&w);
	expect_misuse(&w, -EINVAL); /* end without begin */
	json_array_begin(&w);
	json_array_end(&w);
	json_array_end(&w);
	expect_misuse(&w, -EINVAL); /* one end too many */
	expect_misuse(&w, -EINVAL); /* nothing written at all */
}

static void test_writer_misuse_keys(void **state)
{
	(void)state;
	struct json_writer w;
	json_init(&w, false);
	json_key(&w, "top");
	expect_misuse(&w, -EINVAL); /* key outside an object */
	json_object_begin(&w);
	json_key(&w, "a");
	json_key(&w, "b");
	json_int(&w, 1);
	json_object_end(&w);
	expect_misuse(&w, -EINVAL); /* key without value */
	json_object_begin(&w);
	json_key(&w, "a");
	json_object_end(&w);
	expect_misuse(&w, -EINVAL); /* object ends right after a key */
	json_init(&w, true);
	json_object_begin(&w);
	json_key(&w, "a");
	json_key(&w, "b");
	json_int(&w, 1);
	json_object_end(&w);
	expect_misuse(&w, -EINVAL); /* the same, pretty */
}

static void test_writer_misuse_two_top_level_values(void **state)
{
	(void)state;
	struct json_writer w;
	json_init(&w, false);
	json_int(&w, 1);
	json_int(&w, 2);
	expect_misuse(&w, -EINVAL);
	json_object_begin(&w);
	json_object_end(&w);
	json_array_begin(&w);
	json_array_end(&w);
	expect_misuse(&w, -EINVAL);
}

static void test_writer_depth_limit_31(void **state)
{
	(void)state;
	struct json_writer w;
	json_init(&w, false);
	for (int i = 0; i < 31; i++)
		json_array_begin(&w);
	for (int i = 0; i < 31; i++)
		json_array_end(&w);
	char *s = finish(&w);
	assert_int_equal(strlen(s), 62);
	free(s);

	for (int i = 0; i < 40; i++)
		json_array_begin(&w);
	for (int i = 0; i < 40; i++)
		json_array_end(&w);
	expect_misuse(&w, -EINVAL);
}

static void test_writer_error_is_sticky(void **state)
{
	(void)state;
	struct json_writer w;
	json_init(&w, false);
	json_object_begin(&w);
	w.err = -ENOMEM; /* as if a realloc had failed */
	size_t len = w.len;
	json_kv_string(&w, "a", "b");
	json_object_end(&w);
	assert_int_equal(w.len, len);
	expect_misuse(&w, -ENOMEM);
	/* After steal the writer is fresh again. */
	json_null(&w);
	expect_text(&w, "null");
}

/* ---- reader ----------------------------------------------------------------------------- */

static void test_reader_finds_top_level_scalars(void **state)
{
	(void)state;
	const char *doc = " {\"name\":\"box\", \"pid\" : 1234 ,\"up\":true,\"down\":false,\n"
			  "\"neg\":-17,\"obj\":{\"pid\":5,\"name\":\"inner\"},\"arr\":[1,\"x\",{\"up\":false}]}\r\n\t ";
	char *s = NULL;
	int64_t i = 0;
	bool b = false;
	assert_int_equal(get_string(doc, "name", &s), 0);
	assert_string_equal(s, "box");
	free(s);
	assert_int_equal(get_int(doc, "pid", &i), 0);
	assert_int_equal(i, 1234);
	assert_int_equal(get_int(doc, "neg", &i), 0);
	assert_int_equal(i, -17);
	assert_int_equal(get_bool(doc, "up", &b), 0);
	assert_true(b);
	assert_int_equal(get_bool(doc, "down", &b), 0);
	assert_false(b);
}

static void test_reader_absent_nested_and_null_are_enoent(void **state)
{
	(void)state;
	char *s = (char *)1;
	int64_t i = 99;
	bool b = true;
	assert_int_equal(get_string("{\"a\":\"x\"}", "b", &s), -ENOENT);
	assert_int_equal(get_string("{\"o\":{\"b\":\"x\"}}", "b", &s), -ENOENT); /* nested only */
	assert_int_equal(get_string("{\"b\":null}", "b", &s), -ENOENT);
	assert_int_equal(get_int("{\"b\":null}", "b", &i), -ENOENT);
	assert_int_equal(get_bool("{\"b\":null}", "b", &b), -ENOENT);
	assert_int_equal(get_int("{}", "b", &i), -ENOENT);
	assert_int_equal(get_int("{\"B\":1}", "b", &i), -ENOENT); /* case-sensitive */
	assert_int_equal(get_int("{\"bb\":1}", "b", &i), -ENOENT);
	assert_int_equal(get_int("{\"b\\u0000\":1}", "b", &i), -ENOENT);
	assert_true(s == (char *)1);
	assert_int_equal(i, 99);
	assert_true(b);
}

static void test_reader_wrong_type_is_ebadmsg(void **state)
{
	(void)state;
	char *s = NULL;
	int64_t i;
	bool b;
	assert_int_equal(get_string("{\"a\":1}", "a", &s), -EBADMSG);
	assert_int_equal(get_string("{\"a\":[\"x\"]}", "a", &s), -EBADMSG);
	assert_int_equal(get_int("{\"a\":\"1\"}", "a", &i), -EBADMSG);
	assert_int_equal(get_int("{\"a\":true}", "a", &i), -EBADMSG);
	assert_int_equal(get_bool("{\"a\":1}", "a", &b), -EBADMSG);
	assert_int_equal(get_bool("{\"a\":\"true\"}", "a", &b), -EBADMSG);
	assert_int_equal(get_bool("{\"a\":{}}", "a", &b), -EBADMSG);
	assert_null(s);
}

static void test_reader_unescapes_strings(void **state)
{
	(void)state;
	expect_get_string("{\"a\":\"q\\\"b\\\\s\\/n\\nt\\tr\\rb\\bf\\f\"}", "a", "q\"b\\s/n\nt\tr\rb\bf\f");
	expect_get_string("{\"a\":\"\\u0041\\u00e9\\u20AC\"}", "a", "A\xc3\xa9\xe2\x82\xac");
	expect_get_string("{\"a\":\"\\ud83d\\ude00\"}", "a", "\xf0\x9f\x98\x80");
	expect_get_string("{\"a\":\"raw \xc3\xa9 \xf0\x9f\x98\x80\"}", "a", "raw \xc3\xa9 \xf0\x9f\x98\x80");
	expect_get_string("{\"a\":\"\"}", "a", "");
	/* Keys are compared after unescaping. */
	expect_get_string("{\"\\u006bey\":\"v\"}", "key", "v");
	expect_get_string("{\"\":\"empty key\"}", "", "empty key");
}

static void test_reader_lone_surrogates_become_replacement(void **state)
{
	(void)state;
	expect_get_string("{\"a\":\"\\ud800\"}", "a", "\xef\xbf\xbd");
	expect_get_string("{\"a\":\"\\udc00x\"}", "a", "\xef\xbf\xbdx");
	expect_get_string("{\"a\":\"\\ud800\\u0041\"}", "a", "\xef\xbf\xbd" "A");
	expect_get_string("{\"a\":\"\\ud800\\ud800\\udc00\"}", "a", "\xef\xbf\xbd\xf0\x90\x80\x80");
	expect_get_string("{\"a\":\"\\ud800\\n\"}", "a", "\xef\xbf\xbd\n");
}

static void test_reader_nul_in_wanted_string_is_ebadmsg(void **state)
{
	(void)state;
	char *s = NULL;
	assert_int_equal(get_string("{\"a\":\"x\\u0000y\"}", "a", &s), -EBADMSG);
	assert_null(s);
	/* Elsewhere it is fine. */
	expect_get_string("{\"b\":\"x\\u0000y\",\"a\":\"ok\"}", "a", "ok");
}

static void test_reader_int_limits_and_non_integers(void **state)
{
	(void)state;
	int64_t v = 7;
	assert_int_equal(get_int("{\"a\":9223372036854775807}", "a", &v), 0);
	assert_true(v == INT64_MAX);
	assert_int_equal(get_int("{\"a\":-9223372036854775808}", "a", &v), 0);
	assert_true(v == INT64_MIN);
	assert_int_equal(get_int("{\"a\":0}", "a", &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(get_int("{\"a\":-0}", "a", &v), 0);
	assert_int_equal(v, 0);
	v = 7;
	assert_int_equal(get_int("{\"a\":9223372036854775808}", "a", &v), -ERANGE);
	assert_int_equal(get_int("{\"a\":-9223372036854775809}", "a", &v), -ERANGE);
	assert_int_equal(get_int("{\"a\":99999999999999999999999999}", "a", &v), -ERANGE);
	assert_int_equal(get_int("{\"a\":1.5}", "a", &v), -ERANGE);
	assert_int_equal(get_int("{\"a\":1.0}", "a", &v), -ERANGE);
	assert_int_equal(get_int("{\"a\":1e3}", "a", &v), -ERANGE);
	assert_int_equal(get_int("{\"a\":1E+3}", "a", &v), -ERANGE);
	assert_int_equal(v, 7);
}

static void test_reader_duplicate_key_is_ebadmsg(void **state)
{
	(void)state;
	int64_t v;
	assert_int_equal(get_int("{\"a\":1,\"a\":2}", "a", &v), -EBADMSG);
	assert_int_equal(get_int("{\"a\":1,\"\\u0061\":2}", "a", &v), -EBADMSG);
	/* Duplicates of other keys do not matter to this caller. */
	assert_int_equal(get_int("{\"b\":1,\"b\":2,\"a\":3}", "a", &v), 0);
	assert_int_equal(v, 3);
}

static void test_reader_rejects_invalid_json(void **state)
{
	(void)state;
	static const char *const bad[] = {
		"", " ", "{", "}", "[]", "[{\"a\":1}]", "\"a\"", "1", "null",
		"{\"a\"}", "{\"a\":}", "{\"a\" 1}", "{\"a\":1,}", "{,\"a\":1}", "{\"a\":1 \"b\":2}",
		"{a:1}", "{'a':1}", "{\"a\":1}}", "{\"a\":1}x", "{\"a\":1}{}", "{\"a\":1",
		"{\"a\":01}", "{\"a\":-}", "{\"a\":-01}", "{\"a\":1.}", "{\"a\":.5}", "{\"a\":1e}",
		"{\"a\":1e+}", "{\"a\":+1}", "{\"a\":0x10}", "{\"a\":NaN}", "{\"a\":Infinity}",
		"{\"a\":tru}", "{\"a\":True}", "{\"a\":nul}", "{\"a\":falsey}",
		"{\"a\":\"x}", "{\"a\":\"x\\\"}", "{\"a\":\"\\q\"}", "{\"a\":\"\\u12G4\"}", "{\"a\":\"\\u12\"}",
		"{\"a\":\"\\\"}", "{\"a\":\"tab\there\"}", "{\"a\":\"nl\nhere\"}",
		"{\"a\":\"\xff\"}", "{\"a\":\"\xc3\"}", "{\"a\":\"\xed\xa0\x80\"}", "{\"a\":\"\xc0\xaf\"}",
		"{\"a\":[1,]}", "{\"a\":[,1]}", "{\"a\":[1 2]}", "{\"a\":{\"b\"}}", "{\"a\":{\"b\":1,}}",
		"{\"a\":[}", "{\"a\":{]}", "\xef\xbb\xbf{\"a\":1}", "{\"a\":1}\v", "{\f\"a\":1}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		expect_invalid(bad[i]);
}

static void test_reader_invalid_json_wins_over_found_key(void **state)
{
	(void)state;
	int64_t v = 7;
	/* The key is there and fine, but the text as a whole is broken: a truncated or corrupt
	 * state file must not be half-believed. */
	assert_int_equal(get_int("{\"a\":1,\"b\":", "a", &v), -EBADMSG);
	assert_int_equal(get_int("{\"a\":1,\"b\":[[[}", "a", &v), -EBADMSG);
	assert_int_equal(v, 7);
}

static void test_reader_embedded_nul_byte_in_text(void **state)
{
	(void)state;
	static const char doc[] = "{\"a\":1\0}";
	int64_t v;
	char *p = exact(doc, sizeof(doc) - 1);
	assert_int_equal(json_get_int(p, sizeof(doc) - 1, "a", &v), -EBADMSG);
	/* A NUL right after the object is trailing junk too. */
	static const char doc2[] = "{\"a\":1}\0";
	char *p2 = exact(doc2, sizeof(doc2) - 1);
	assert_int_equal(json_get_int(p2, sizeof(doc2) - 1, "a", &v), -EBADMSG);
	assert_int_equal(json_get_int(p2, sizeof(doc2) - 2, "a", &v), 0);
	assert_int_equal(v, 1);
	free(p);
	free(p2);
}

static void test_reader_depth_limit_32(void **state)
{
	(void)state;
	/* The top-level object is level 1, so 31 more nested arrays are the most allowed. */
	char doc[256];
	int64_t v;
	for (int levels = 30; levels <= 34; levels++) {
		size_t o = 0;
		o += (size_t)snprintf(doc + o, sizeof(doc) - o, "{\"x\":");
		for (int i = 0; i < levels; i++)
			doc[o++] = '[';
		for (int i = 0; i < levels; i++)
			doc[o++] = ']';
		o += (size_t)snprintf(doc + o, sizeof(doc) - o, ",\"a\":5}");
		int r = get_int(doc, "a", &v);
		if (levels <= 31)
			assert_int_equal(r, 0);
		else
			assert_int_equal(r, -EBADMSG);
	}
}

static void test_reader_deep_nesting_attack_is_bounded(void **state)
{
	(void)state;
	/* A million '[' must be refused quickly without deep recursion. */
	size_t n = 1000000;
	char *doc = malloc(n + 8);
	memcpy(doc, "{\"a\":", 5);
	memset(doc + 5, '[', n);
	int64_t v;
	assert_int_equal(json_get_int(doc, n + 5, "a", &v), -EBADMSG);
	memset(doc + 5, '{', n);
	assert_int_equal(json_get_int(doc, n + 5, "a", &v), -EBADMSG);
	free(doc);
}

static void test_reader_bad_arguments(void **state)
{
	(void)state;
	char *s;
	int64_t i;
	bool b;
	assert_int_equal(json_get_string("{}", 2, NULL, &s), -EINVAL);
	assert_int_equal(json_get_string(NULL, 0, "a", &s), -EINVAL);
	assert_int_equal(json_get_string("{}", 2, "a", NULL), -EINVAL);
	assert_int_equal(json_get_int("{}", 2, "a", NULL), -EINVAL);
	assert_int_equal(json_get_bool("{}", 2, "a", NULL), -EINVAL);
	assert_int_equal(json_get_int("{\"a\":1}", 0, "a", &i), -EBADMSG);
	assert_int_equal(json_get_bool("{\"a\":true}", 3, "a", &b), -EBADMSG);
}

/* Every prefix of a valid document, each in a buffer ending exactly at its length: only the
 * whole document may parse, and nothing may read past the end (ASan). */
static void test_reader_every_truncation_is_safe(void **state)
{
	(void)state;
	const char *doc = "{\"s\":\"a\\u00e9\\ud83d\\ude00\\n\",\"i\":-12.5e+3,\"j\":42,\"b\":true,"
			  "\"o\":{\"x\":[null,false,\"\xc3\xa9\"]},\"n\":null}";
	size_t n = strlen(doc);
	for (size_t len = 0; len <= n; len++) {
		char *p = exact(doc, len);
		char *s = NULL;
		int64_t i;
		bool b;
		int want = len == n ? 0 : -EBADMSG;
		assert_int_equal(json_get_string(p, len, "s", &s), want);
		free(s);
		assert_int_equal(json_get_int(p, len, "j", &i), want);
		assert_int_equal(json_get_bool(p, len, "b", &b), want);
		assert_int_equal(json_get_int(p, len, "i", &i), len == n ? -ERANGE : -EBADMSG);
		free(p);
	}
}

/* ---- round trips ------------------------------------------------------------------------ */

static void test_roundtrip_writer_to_reader(void **state)
{
	(void)state;
	static const char *const strings[] = {
		"", "plain", "quote\" back\\ slash", "ctl\x01\x1f\x7f\n\t", "caf\xc3\xa9 \xf0\x9f\x98\x80",
		"colon: ", "{\"not\":\"json\"}",
	};
	for (int pretty = 0; pretty <= 1; pretty++) {
		struct json_writer w;
		char key[16];
		json_init(&w, pretty);
		json_object_begin(&w);
		for (size_t i = 0; i < sizeof(strings) / sizeof(strings[0]); i++) {
			snprintf(key, sizeof(key), "s%zu", i);
			json_kv_string(&w, key, strings[i]);
		}
		json_kv_string(&w, "bad", "x\xffy");
		json_kv_int(&w, "min", INT64_MIN);
		json_kv_int(&w, "max", INT64_MAX);
		json_kv_uint(&w, "u", 4000000000u);
		json_kv_uint(&w, "umax", UINT64_MAX);
		json_kv_bool(&w, "t", true);
		json_kv_string(&w, "null", NULL);
		json_key(&w, "nested");
		json_object_begin(&w);
		json_kv_int(&w, "min", 1);
		json_object_end(&w);
		json_object_end(&w);
		char *doc = finish(&w);
		size_t n = strlen(doc);

		for (size_t i = 0; i < sizeof(strings) / sizeof(strings[0]); i++) {
			char *v = NULL;
			snprintf(key, sizeof(key), "s%zu", i);
			assert_int_equal(json_get_string(doc, n, key, &v), 0);
			assert_string_equal(v, strings[i]);
			free(v);
		}
		char *v = NULL;
		assert_int_equal(json_get_string(doc, n, "bad", &v), 0);
		assert_string_equal(v, "x\xef\xbf\xbdy");
		free(v);
		int64_t i64;
		bool b;
		assert_int_equal(json_get_int(doc, n, "min", &i64), 0);
		assert_true(i64 == INT64_MIN);
		assert_int_equal(json_get_int(doc, n, "max", &i64), 0);
		assert_true(i64 == INT64_MAX);
		assert_int_equal(json_get_int(doc, n, "u", &i64), 0);
		assert_true(i64 == 4000000000);
		assert_int_equal(json_get_int(doc, n, "umax", &i64), -ERANGE);
		assert_int_equal(json_get_bool(doc, n, "t", &b), 0);
		assert_true(b);
		assert_int_equal(json_get_string(doc, n, "null", &v), -ENOENT);
		free(doc);
	}
}

/* ---- hostile input ---------------------------------------------------------------------- */

static bool allowed_result(int r)
{
	return r == 0 || r == -ENOENT || r == -EBADMSG || r == -ERANGE;
}

static void read_all_ways(const char *p, size_t len)
{
	char *s = NULL;
	int64_t i;
	bool b;
	static const char *const keys[] = { "a", "", "b\xc3\xa9" };
	for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
		int r = json_get_string(p, len, keys[k], &s);
		assert_true(allowed_result(r));
		if (r == 0) {
			assert_non_null(s);
			free(s);
			s = NULL;
		}
		assert_true(allowed_result(json_get_int(p, len, keys[k], &i)));
		assert_true(allowed_result(json_get_bool(p, len, keys[k], &b)));
	}
}

static void test_reader_random_bytes_never_crash(void **state)
{
	(void)state;
	static const char alphabet[] = "{}[]\":,\\ u0123456789abcdefABCDEF-+.eEtrunlsf\xc3\xa9\xff\xed\xa0\n";
	unsigned seed = 4242;
	for (int iter = 0; iter < 30000; iter++) {
		size_t len = (size_t)rand_r(&seed) % 80;
		char *p = malloc(len ? len : 1);
		for (size_t i = 0; i < len; i++) {
			int r = rand_r(&seed);
			p[i] = r % 6 == 0 ? (char)(r / 6) : alphabet[(size_t)(r / 6) % (sizeof(alphabet) - 1)];
		}
		if (len && iter % 2)
			p[0] = '{';
		read_all_ways(p, len);
		free(p);
	}
}

static void test_reader_mutated_documents_never_crash(void **state)
{
	(void)state;
	const char *base = "{\"a\":\"x\\u00e9\\ud83d\\ude00\",\"\":[1,-2.5e3,{\"c\":null}],\"b\xc3\xa9\":true,"
			   "\"d\":{\"e\":[[[]]]},\"f\":false}";
	size_t n = strlen(base);
	unsigned seed = 31337;
	for (int iter = 0; iter < 30000; iter++) {
		size_t len = n;
		char buf[256];
		memcpy(buf, base, n);
		for (int edits = 1 + rand_r(&seed) % 4; edits > 0; edits--) {
			size_t at = (size_t)rand_r(&seed) % (len ? len : 1);
			char c = (char)rand_r(&seed);
			switch (rand_r(&seed) % 4) {
			case 0:
				if (len)
					buf[at] = c;
				break;
			case 1:
				if (len < sizeof(buf)) {
					memmove(buf + at + 1, buf + at, len - at);
					buf[at] = c;
					len++;
				}
				break;
			case 2:
				if (len) {
					memmove(buf + at, buf + at + 1, len - at - 1);
					len--;
				}
				break;
			default:
				len = at; /* truncate */
			}
		}
		char *p = exact(buf, len);
		read_all_ways(p, len);
		free(p);
	}
}

/* ---- member and element walks ------------------------------------------------------------ */

struct walk_log {
	char text[1024];
	int stop_at; /* return -ECANCELED on this call (1-based); 0: never */
	int calls;
};

static int log_member(const char *name, const char *value, size_t len, void *payload)
{
	struct walk_log *l = payload;
	size_t n = strlen(l->text);
	snprintf(l->text + n, sizeof(l->text) - n, "%s=%.*s;", name ? name : "-", (int)len, value);
	if (++l->calls == l->stop_at)
		return -ECANCELED;
	return 0;
}

static void test_object_walk_gives_names_and_raw_values_in_order(void **state)
{
	(void)state;
	struct walk_log l = { 0 };
	const char *doc = " { \"/a\\u0041\" : {\"bind\": \"/x\", \"mode\": \"ro\"} , \"b\":[1, 2] ,\"\":null } ";
	assert_int_equal(json_object_each(doc, strlen(doc), 10, log_member, &l), 0);
	assert_string_equal(l.text, "/aA={\"bind\": \"/x\", \"mode\": \"ro\"};b=[1, 2];=null;");
	/* A member's object can be read again with the flat reader. */
	const char *v = strchr(doc, '{' ) + 1;
	v = strchr(v, '{');
	char *bind = NULL;
	assert_int_equal(json_get_string(v, strlen("{\"bind\": \"/x\", \"mode\": \"ro\"}"), "bind", &bind), 0);
	assert_string_equal(bind, "/x");
	free(bind);
	memset(&l, 0, sizeof(l));
	assert_int_equal(json_object_each("{}", 2, 10, log_member, &l), 0);
	assert_int_equal(l.calls, 0);
}

static void test_array_walk_gives_elements_in_order(void **state)
{
	(void)state;
	struct walk_log l = { 0 };
	const char *doc = "[{\"k\":1}, \"s\", 3 ,[ ]]";
	assert_int_equal(json_array_each(doc, strlen(doc), 10, log_member, &l), 0);
	assert_string_equal(l.text, "-={\"k\":1};-=\"s\";-=3;-=[ ];");
	memset(&l, 0, sizeof(l));
	assert_int_equal(json_array_each(" [ ] ", 5, 10, log_member, &l), 0);
	assert_int_equal(l.calls, 0);
}

static void test_walks_validate_the_whole_document_before_calling_back(void **state)
{
	(void)state;
	static const char *const bad[] = {
		"{\"a\":1,}", "{\"a\":1} x", "{\"a\" 1}", "{\"a\":1", "[1,]", "{\"a\":[1}", "", "  ", "\"s\"",
		"{\"a\\u0000\":1}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct walk_log l = { 0 };
		int r = json_object_each(bad[i], strlen(bad[i]), 10, log_member, &l);
		assert_int_equal(r, -EBADMSG);
		if (i != 9) /* the NUL name is found while walking, after the text was valid */
			assert_int_equal(l.calls, 0);
	}
	struct walk_log l = { 0 };
	assert_int_equal(json_object_each("[1]", 3, 10, log_member, &l), -EBADMSG);
	assert_int_equal(json_array_each("{}", 2, 10, log_member, &l), -EBADMSG);
	assert_int_equal(json_object_each(NULL, 0, 10, log_member, &l), -EINVAL);
	assert_int_equal(json_array_each("[]", 2, 10, NULL, &l), -EINVAL);
}

static void test_get_member_gives_a_members_raw_text(void **state)
{
	(void)state;
	const char *doc = "{\"a\": 1, \"vm\": {\"files\": [1, {\"x\": \"}\"}]}, \"vm\": {\"n\": 2}}";
	const char *v;
	size_t n;
	/* The last of a repeated key, as json_get_* take it; its text points into DOC. */
	assert_int_equal(json_get_member(doc, strlen(doc), "vm", &v, &n), 0);
	assert_true(v > doc && v + n <= doc + strlen(doc));
	assert_int_equal(n, strlen("{\"n\": 2}"));
	assert_memory_equal(v, "{\"n\": 2}", n);
	int64_t i = 0;
	assert_int_equal(json_get_int(v, n, "n", &i), 0);
	assert_int_equal(i, 2);
	assert_int_equal(json_get_member(doc, strlen(doc), "a", &v, &n), 0);
	assert_memory_equal(v, "1", n);
	assert_int_equal(json_get_member(doc, strlen(doc), "files", &v, &n), -ENOENT);
	assert_int_equal(json_get_member("{\"a\": ", 6, "a", &v, &n) < 0, 1);
	assert_int_equal(json_get_member("[1]", 3, "a", &v, &n) < 0, 1);
}

static void test_walks_are_bounded_and_stop_at_a_callback_error(void **state)
{
	(void)state;
	struct walk_log l = { 0 };
	assert_int_equal(json_object_each("{\"a\":1,\"b\":2,\"c\":3}", 19, 2, log_member, &l), -E2BIG);
	assert_int_equal(l.calls, 2);
	memset(&l, 0, sizeof(l));
	assert_int_equal(json_array_each("[1,2,3]", 7, 2, log_member, &l), -E2BIG);
	memset(&l, 0, sizeof(l));
	l.stop_at = 2;
	assert_int_equal(json_array_each("[1,2,3]", 7, 10, log_member, &l), -ECANCELED);
	assert_int_equal(l.calls, 2);
	/* Nesting past the reader's depth limit is refused, not recursed into. */
	char deep[200];
	size_t n = 0;
	deep[n++] = '[';
	for (int i = 0; i < 60; i++)
		deep[n++] = '[';
	for (int i = 0; i < 60; i++)
		deep[n++] = ']';
	deep[n++] = ']';
	memset(&l, 0, sizeof(l));
	assert_int_equal(json_array_each(deep, n, 10, log_member, &l), -EBADMSG);
	assert_int_equal(l.calls, 0);
}

static void test_walks_survive_every_truncation(void **state)
{
	(void)state;
	const char *doc = "{\"/h\": {\"bind\": \"/g\", \"mode\": \"rw\"}, \"x\": [true, false, null, -1.5e3]}";
	size_t len = strlen(doc);
	for (size_t n = 0; n < len; n++) {
		char *copy = malloc(n ? n : 1);
		memcpy(copy, doc, n);
		struct walk_log l = { 0 };
		assert_int_equal(json_object_each(copy, n, 10, log_member, &l), -EBADMSG);
		assert_int_equal(l.calls, 0);
		free(copy);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_writer_compact_object_all_types),
		cmocka_unit_test(test_writer_compact_nested_containers),
		cmocka_unit_test(test_writer_pretty_layout),
		cmocka_unit_test(test_writer_pretty_strings_ending_in_space_or_colon),
		cmocka_unit_test(test_writer_scalar_top_level_values),
		cmocka_unit_test(test_writer_escapes_quotes_backslash_and_controls),
		cmocka_unit_test(test_writer_passes_valid_utf8),
		cmocka_unit_test(test_writer_replaces_invalid_utf8_bytes),
		cmocka_unit_test(test_writer_raw_values_take_their_place_and_commas),
		cmocka_unit_test(test_writer_escapes_keys_too),
		cmocka_unit_test(test_writer_grows_buffer_for_large_output),
		cmocka_unit_test(test_writer_steal_resets_and_keeps_pretty),
		cmocka_unit_test(test_writer_free_discards_and_allows_reuse),
		cmocka_unit_test(test_writer_misuse_unbalanced),
		cmocka_unit_test(test_writer_misuse_keys),
		cmocka_unit_test(test_writer_misuse_two_top_level_values),
		cmocka_unit_test(test_writer_depth_limit_31),
		cmocka_unit_test(test_writer_error_is_sticky),
		cmocka_unit_test(test_reader_finds_top_level_scalars),
		cmocka_unit_test(test_reader_absent_nested_and_null_are_enoent),
		cmocka_unit_test(test_reader_wrong_type_is_ebadmsg),
		cmocka_unit_test(test_reader_unescapes_strings),
		cmocka_unit_test(test_reader_lone_surrogates_become_replacement),
		cmocka_unit_test(test_reader_nul_in_wanted_string_is_ebadmsg),
		cmocka_unit_test(test_reader_int_limits_and_non_integers),
		cmocka_unit_test(test_reader_duplicate_key_is_ebadmsg),
		cmocka_unit_test(test_reader_rejects_invalid_json),
		cmocka_unit_test(test_reader_invalid_json_wins_over_found_key),
		cmocka_unit_test(test_reader_embedded_nul_byte_in_text),
		cmocka_unit_test(test_reader_depth_limit_32),
		cmocka_unit_test(test_reader_deep_nesting_attack_is_bounded),
		cmocka_unit_test(test_reader_bad_arguments),
		cmocka_unit_test(test_reader_every_truncation_is_safe),
		cmocka_unit_test(test_roundtrip_writer_to_reader),
		cmocka_unit_test(test_reader_random_bytes_never_crash),
		cmocka_unit_test(test_reader_mutated_documents_never_crash),
		cmocka_unit_test(test_object_walk_gives_names_and_raw_values_in_order),
		cmocka_unit_test(test_array_walk_gives_elements_in_order),
		cmocka_unit_test(test_walks_validate_the_whole_document_before_calling_back),
		cmocka_unit_test(test_get_member_gives_a_members_raw_text),
		cmocka_unit_test(test_walks_are_bounded_and_stop_at_a_callback_error),
		cmocka_unit_test(test_walks_survive_every_truncation),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
