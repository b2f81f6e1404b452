/* Unit tests for src/shim/vm/console.c's copy: a guest's console output reaches console.log up
 * to the cap, then one line saying the rest was dropped, and the rest is still read (a guest
 * whose output is not read waits on its serial port). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "util.h"
#include "vm.h"

/* A memfd holding LEN bytes of a pattern, at offset 0. */
static int source_of(size_t len)
{
	int fd = memfd_create("console-in", MFD_CLOEXEC);
	assert_true(fd >= 0);
	char *buf = malloc(len ? len : 1);
	assert_non_null(buf);
	for (size_t i = 0; i < len; i++)
		buf[i] = (char)('a' + i % 26);
	assert_int_equal(write_all(fd, buf, len), 0);
	free(buf);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	return fd;
}

/* Copy LEN bytes through vm_console_copy with cap MAX; the log's contents into *OUT. */
static size_t copy_through(size_t len, size_t max, char **out, size_t *out_len)
{
	int from = source_of(len), log = memfd_create("console-log", MFD_CLOEXEC);
	assert_true(log >= 0);
	size_t kept = vm_console_copy(from, log, max);
	/* Read to its end: nothing was left for a writer to block on. */
	char byte;
	assert_int_equal(read(from, &byte, 1), 0);
	assert_int_equal(lseek(log, 0, SEEK_SET), 0);
	assert_int_equal(read_fd_all(log, 64u << 20, out, out_len), 0);
	close(from);
	close(log);
	return kept;
}

static void test_output_under_the_cap_is_kept_whole(void **state)
{
	(void)state;
	char *log;
	size_t len;
	assert_int_equal(copy_through(5000, 1u << 20, &log, &len), 5000);
	assert_int_equal(len, 5000);
	assert_memory_equal(log, "abcdef", 6);
	free(log);
	/* Exactly the cap: nothing was dropped, so nothing says so. */
	assert_int_equal(copy_through(4096, 4096, &log, &len), 4096);
	assert_int_equal(len, 4096);
	free(log);
}

static void test_output_past_the_cap_is_cut_with_one_line_saying_so(void **state)
{
	(void)state;
	char *log;
	size_t len;
	size_t max = 100000;
	assert_int_equal(copy_through(3u << 20, max, &log, &len), max);
	assert_true(len > max && len < max + 200);
	assert_memory_equal(log, "abcdef", 6);
	log[len - 1] = '\0';
	assert_non_null(strstr(log + max, "dropped"));
	assert_null(strchr(log + max + 1, '\n'));
	free(log);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_output_under_the_cap_is_kept_whole),
		cmocka_unit_test(test_output_past_the_cap_is_cut_with_one_line_saying_so),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
