/* CHECK for the C programs the pytest suites drive: on failure, say what failed on stderr
 * and exit 1, so the test that runs the program fails with that line. */
#ifndef CAPSULE_TESTS_CHECK_H
#define CAPSULE_TESTS_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond, ...)                                   \
	do {                                               \
		if (!(cond)) {                             \
			fprintf(stderr, "FAIL: " __VA_ARGS__); \
			fputc('\n', stderr);               \
			exit(1);                           \
		}                                          \
	} while (0)

#endif
