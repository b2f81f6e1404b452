/* A transform plugin that crashes on the first read or write: the mount must fail with an
 * error, not hang, and the sandbox must still stop. */
#include <stdlib.h>

#include "capsule_transform.h"

static void *crash_open(const char *config)
{
	(void)config;
	static int ctx;
	return &ctx;
}

static int crash_apply(void *ctx, const char *path, uint64_t offset, uint8_t *buf, size_t len)
{
	(void)ctx, (void)path, (void)offset, (void)buf, (void)len;
	/* abort, not a SIGSEGV: sanitizer builds would report a SIGSEGV as a bug of theirs. */
	abort();
}

__attribute__((visibility("default"))) const struct capsule_transform_v1 capsule_transform_v1 = {
	.abi = CAPSULE_TRANSFORM_ABI_V1,
	.open = crash_open,
	.encode = crash_apply,
	.decode = crash_apply,
};
