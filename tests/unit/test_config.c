/* Unit tests for the sandbox configuration's on-disk form (src/lib/config.c): what the
 * library writes, the shim must read back the same, and a damaged file must be refused. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "internal.h"

static void round_trip(const struct capsule_config *in, struct capsule_config *out)
{
	char *text = NULL;
	size_t len = 0;
	assert_int_equal(config_serialize(in, &text, &len), 0);
	capsule_error e = { 0 };
	if (config_parse(text, len, out, &e) != 0)
		fail_msg("parse of our own output failed: %s\n%s", e.message, text);
	free(text);
}

static void test_layers_round_trip(void **state)
{
	(void)state;
	struct capsule_config cfg = { .name = "t" };
	capsule_error e = { 0 };
	assert_int_equal(config_add_layer(&cfg, "/store/layers/a", &e), 0);
	assert_int_equal(config_add_layer(&cfg, "/store/layers/b c:d", &e), 0);
	cfg.base_none = true;
	struct capsule_config back;
	round_trip(&cfg, &back);
	assert_true(back.base_none);
	assert_int_equal(back.nlayers, 2);
	assert_string_equal(back.layers[0], "/store/layers/a");
	assert_string_equal(back.layers[1], "/store/layers/b c:d");

	struct capsule_config copy;
	assert_int_equal(config_copy(&copy, &back), 0);
	assert_int_equal(copy.nlayers, 2);
	assert_ptr_not_equal(copy.layers[1], back.layers[1]);
	assert_string_equal(copy.layers[1], back.layers[1]);
	config_clear(&copy);
	config_clear(&back);

	/* Without base=none the layers lie on the host image. */
	cfg.base_none = false;
	round_trip(&cfg, &back);
	assert_false(back.base_none);
	assert_int_equal(back.nlayers, 2);
	config_clear(&back);
	config_clear(&cfg);
}

static void test_layer_errors(void **state)
{
	(void)state;
	struct capsule_config cfg = { .name = "t" };
	capsule_error e = { 0 };
	assert_int_equal(config_add_layer(&cfg, "relative/path", &e), -EINVAL);
	assert_non_null(strstr(e.message, "'relative/path'"));
	assert_int_equal(config_add_layer(&cfg, "/a\nimage=x", &e), -EINVAL);
	for (int i = 0; i < CAPSULE_MAX_LAYERS; i++)
		assert_int_equal(config_add_layer(&cfg, "/l", &e), 0);
	assert_int_equal(config_add_layer(&cfg, "/l", &e), -E2BIG);
	config_clear(&cfg);

	static const char *const bad[] = {
		"name=t\nbase=none\n",             /* nothing to be the root */
		"name=t\nbase=maybe\nlayer=/l\n", /* unknown base */
		"name=t\nlayer=relative\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct capsule_config c;
		memset(&e, 0, sizeof(e));
		if (config_parse(bad[i], strlen(bad[i]), &c, &e) != -EINVAL)
			fail_msg("accepted: %s", bad[i]);
		assert_true(e.message[0] != '\0');
		assert_null(strchr(e.message, '\n'));
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_layers_round_trip),
		cmocka_unit_test(test_layer_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
