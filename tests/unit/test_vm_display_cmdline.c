/* Unit tests for src/shim/vm/display.c's kernel command line words: a display vm's console
 * shell runs as the sandbox's user, passed only when a command line can carry it unchanged. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "internal.h"
#include "vm.h"

static const char *words(bool display, const char *user)
{
	static char out[128];
	struct capsule_config cfg = { 0 };
	cfg.display = display;
	cfg.user = (char *)user;
	vm_display_cmdline(&cfg, out, sizeof(out));
	return out;
}

static void test_no_display_no_words(void **state)
{
	(void)state;
	assert_string_equal(words(false, "alice"), "");
}

static void test_the_sandbox_user_or_root_by_number(void **state)
{
	(void)state;
	assert_string_equal(words(true, NULL), " capsule.display=1 capsule.console_user=0");
	assert_string_equal(words(true, ""), " capsule.display=1 capsule.console_user=0");
	assert_string_equal(words(true, "alice"), " capsule.display=1 capsule.console_user=alice");
	assert_string_equal(words(true, "1000:video"), " capsule.display=1 capsule.console_user=1000:video");
	assert_string_equal(words(true, "www-data"), " capsule.display=1 capsule.console_user=www-data");
}

/* A user the command line would split or reinterpret is not passed: "-", no shell, never a
 * shell as whoever the first word names. */
static void test_a_user_a_command_line_cannot_carry_is_refused(void **state)
{
	(void)state;
	static const char *const odd[] = { "alice capsule.display=0", "root\tx", "a=b", "bob\"", "us\xc3\xa9r",
					   "0123456789012345678901234567890123456789012345678901234567890123456789" };
	for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++)
		assert_string_equal(words(true, odd[i]), " capsule.display=1 capsule.console_user=-");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_no_display_no_words),
		cmocka_unit_test(test_the_sandbox_user_or_root_by_number),
		cmocka_unit_test(test_a_user_a_command_line_cannot_carry_is_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
