/* capsule_diff_json_since: the changes between two diffs of one sandbox (exec --diff, diff
 * --since), and the refusal of text that is not a diff (the function is public: its input
 * may be anything). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "internal.h"

static char *since(const char *before, const char *after, int expect)
{
	capsule_error err = { 0 };
	char *out = NULL;
	assert_int_equal(capsule_diff_json_since(before, after, &out, &err), expect);
	if (expect < 0) {
		assert_null(out);
		assert_int_equal(err.code, -expect);
		assert_non_null(strstr(err.message, "is not a diff's JSON"));
	}
	return out;
}

static void test_kinds_between_two_diffs(void **state)
{
	(void)state;
	const char *before = "[{\"path\":\"/etc/hostname\",\"kind\":\"deleted\",\"type\":\"file\"},"
			     "{\"path\":\"/root/gone\",\"kind\":\"added\",\"type\":\"file\",\"size\":2,\"mode\":\"0644\",\"mtime_ns\":1},"
			     "{\"path\":\"/root/kept\",\"kind\":\"added\",\"type\":\"file\",\"size\":2,\"mode\":\"0644\",\"mtime_ns\":1},"
			     "{\"path\":\"/root/same\",\"kind\":\"added\",\"type\":\"file\",\"size\":2,\"mode\":\"0644\",\"mtime_ns\":1}]";
	const char *after = "[{\"path\":\"/a/b\",\"kind\":\"added\",\"type\":\"file\",\"size\":1,\"mode\":\"0600\",\"mtime_ns\":3},"
			    "{\"path\":\"/a-c\",\"kind\":\"added\",\"type\":\"file\",\"size\":1,\"mode\":\"0600\",\"mtime_ns\":3},"
			    "{\"path\":\"/etc/hostname\",\"kind\":\"modified\",\"type\":\"file\",\"size\":2,\"mode\":\"0644\",\"mtime_ns\":2},"
			    "{\"path\":\"/root/kept\",\"kind\":\"added\",\"type\":\"file\",\"size\":4,\"mode\":\"0644\",\"mtime_ns\":2},"
			    "{\"path\":\"/root/same\",\"kind\":\"added\",\"type\":\"file\",\"size\":2,\"mode\":\"0644\",\"mtime_ns\":1}]";
	char *out = since(before, after, 0);
	/* The walk's order: /a and what it holds before /a-c. A deletion undone is added, a change
	 * taken back deleted (type only), a change changed again modified; /root/same is not. */
	assert_string_equal(out,
			    "[{\"path\":\"/a/b\",\"kind\":\"added\",\"type\":\"file\",\"size\":1,\"mode\":\"0600\",\"mtime_ns\":3},"
			    "{\"path\":\"/a-c\",\"kind\":\"added\",\"type\":\"file\",\"size\":1,\"mode\":\"0600\",\"mtime_ns\":3},"
			    "{\"path\":\"/etc/hostname\",\"kind\":\"added\",\"type\":\"file\",\"size\":2,\"mode\":\"0644\",\"mtime_ns\":2},"
			    "{\"path\":\"/root/gone\",\"kind\":\"deleted\",\"type\":\"file\"},"
			    "{\"path\":\"/root/kept\",\"kind\":\"modified\",\"type\":\"file\",\"size\":4,\"mode\":\"0644\",\"mtime_ns\":2}]");
	free(out);
	out = since("[]", "[]", 0);
	assert_string_equal(out, "[]");
	free(out);
}

/* A folder gone after is one entry, as in a diff: what it held before (added, or a deletion
 * inside it) is not listed again, nor is a name that only starts like it. */
static void test_a_deleted_folder_is_one_entry(void **state)
{
	(void)state;
	const char *before = "[{\"path\":\"/opt/a\",\"kind\":\"added\",\"type\":\"file\",\"size\":1,\"mode\":\"0644\",\"mtime_ns\":1},"
			     "{\"path\":\"/opt/b\",\"kind\":\"deleted\",\"type\":\"file\"},"
			     "{\"path\":\"/root/d\",\"kind\":\"added\",\"type\":\"dir\",\"size\":0,\"mode\":\"0755\",\"mtime_ns\":1},"
			     "{\"path\":\"/root/d/f\",\"kind\":\"added\",\"type\":\"file\",\"size\":1,\"mode\":\"0644\",\"mtime_ns\":1},"
			     "{\"path\":\"/root/d-e\",\"kind\":\"added\",\"type\":\"file\",\"size\":1,\"mode\":\"0644\",\"mtime_ns\":1}]";
	const char *after = "[{\"path\":\"/opt\",\"kind\":\"deleted\",\"type\":\"dir\"}]";
	char *out = since(before, after, 0);
	assert_string_equal(out, "[{\"path\":\"/opt\",\"kind\":\"deleted\",\"type\":\"dir\"},"
				 "{\"path\":\"/root/d\",\"kind\":\"deleted\",\"type\":\"dir\"},"
				 "{\"path\":\"/root/d-e\",\"kind\":\"deleted\",\"type\":\"file\"}]");
	free(out);
}

static void test_text_that_is_not_a_diff_is_refused(void **state)
{
	(void)state;
	since(NULL, "[]", -EINVAL);
	since("[]", "{}", -EINVAL);
	since("[{\"kind\":\"added\"}]", "[]", -EINVAL);      /* no path */
	since("[]", "[{\"path\":\"/a\"}]", -EINVAL);         /* no kind */
	since("[", "[]", -EINVAL);
	since("[]", "[{\"path\":\"/a\",\"kind\":1}]", -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_kinds_between_two_diffs),
		cmocka_unit_test(test_a_deleted_folder_is_one_entry),
		cmocka_unit_test(test_text_that_is_not_a_diff_is_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
