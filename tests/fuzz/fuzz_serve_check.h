/* What the fuzz targets of capsule serve's decoders (fuzz_serve.c, fuzz_mcp.c) hold every
 * failure to: the error contract's one printable line, with the errno returned. */
#ifndef CAPSULE_FUZZ_SERVE_CHECK_H
#define CAPSULE_FUZZ_SERVE_CHECK_H

#include <errno.h>
#include <string.h>

#include "capsule.h"
#include "fuzz_check.h"

static inline void check_error(int r, const capsule_error *err)
{
	CHECK(r < 0);
	CHECK(err->code == -r);
	CHECK(r == -EINVAL || r == -ENOMEM);
	size_t n = strnlen(err->message, sizeof(err->message));
	CHECK(n > 0 && n < sizeof(err->message));
	for (size_t i = 0; i < n; i++)
		CHECK((unsigned char)err->message[i] >= 0x20 && err->message[i] != 0x7f);
}

#endif
