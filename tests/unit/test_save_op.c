/* Unit tests for the save family's protocol boundary (src/lib/save/save_op.c): every wire
 * number of a SAVE request maps to one enum save_op and back, and any other number is refused
 * with one line before anything is done. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "proto.h"
#include "save.h"

static void test_every_wire_op_maps_to_one_save_op_and_back(void **state)
{
	(void)state;
	static const struct {
		uint32_t wire;
		enum save_op op;
		const char *name;
	} ops[] = {
		{ CP_SAVE_OP_SAVE, SAVE_OP_SAVE, "save" },
		{ CP_SAVE_OP_CHECKPOINT, SAVE_OP_CHECKPOINT, "checkpoint" },
		{ CP_SAVE_OP_REVERT, SAVE_OP_REVERT, "revert" },
		{ CP_SAVE_OP_FORK, SAVE_OP_FORK, "fork" },
	};
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
		enum save_op op = (enum save_op)-1;
		capsule_error e = { 0 };
		assert_int_equal(save_op_from_wire(ops[i].wire, &op, &e), 0);
		assert_int_equal(op, ops[i].op);
		assert_int_equal(save_op_to_wire(op), ops[i].wire);
		assert_string_equal(save_op_name(op), ops[i].name);
	}
}

static void test_unknown_wire_op_is_refused_with_one_line(void **state)
{
	(void)state;
	static const uint32_t bad[] = { 0, CP_SAVE_OP_FORK + 1, 0xffffffffu };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		enum save_op op = SAVE_OP_FORK;
		capsule_error e = { 0 };
		assert_int_equal(save_op_from_wire(bad[i], &op, &e), -EINVAL);
		assert_int_equal(e.code, EINVAL);
		assert_non_null(strstr(e.message, "unknown save operation"));
		assert_null(strchr(e.message, '\n'));
		assert_int_equal(op, SAVE_OP_FORK);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_every_wire_op_maps_to_one_save_op_and_back),
		cmocka_unit_test(test_unknown_wire_op_is_refused_with_one_line),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
