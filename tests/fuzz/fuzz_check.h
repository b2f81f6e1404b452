/* What every fuzz target shares: an invariant that does not hold is a crash the fuzzer keeps. */
#ifndef CAPSULE_FUZZ_CHECK_H
#define CAPSULE_FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond)                                                                        \
	do {                                                                               \
		if (!(cond)) {                                                             \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
			abort();                                                           \
		}                                                                          \
	} while (0)

#endif
