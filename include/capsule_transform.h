/* capsule transform plugins: the ABI between capsule-fuse and a shared object that
 * transforms file contents on their way between a sandbox and the host (docs/transforms.md).
 *
 * A plugin exports one symbol, CAPSULE_TRANSFORM_SYMBOL, of type struct capsule_transform_v1,
 * with .abi = CAPSULE_TRANSFORM_ABI_V1. capsule-fuse dlopens the plugin (RTLD_NOW |
 * RTLD_LOCAL), checks the symbol and its abi, calls open() once with the mount's config
 * string, then encode() on every write (clear -> stored) and decode() on every read
 * (stored -> clear), and close() when the sandbox stops.
 *
 * Transforms are LENGTH-PRESERVING, OFFSET-AWARE and IN PLACE: byte i of a file's clear data
 * is stored at byte i on the host, and may depend only on the bytes at i, the offset i and
 * the plugin's own state (a stream cipher in counter mode is the model). That is what lets
 * random-access reads and writes, truncate and append work without keeping sizes or
 * rewriting whole blocks. Calls come from one thread at a time.
 */
#ifndef CAPSULE_TRANSFORM_H
#define CAPSULE_TRANSFORM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CAPSULE_TRANSFORM_ABI_V1 1u
#define CAPSULE_TRANSFORM_SYMBOL "capsule_transform_v1"

struct capsule_transform_v1 {
	uint32_t abi; /* CAPSULE_TRANSFORM_ABI_V1 */
	/* The mount's config string ("" when none was given). Returns the plugin's context, or
	 * NULL (with errno set) to refuse the mount: the sandbox then does not start. */
	void *(*open)(const char *config);
	/* Transform LEN bytes at BUF, which sit at OFFSET in the file PATH (the file's path below
	 * the mount, starting with '/', as it was when the file was opened; informational: a
	 * transform that depends on it cannot survive a rename). encode turns clear data into
	 * what is stored; decode turns it back. Return 0, or a negative errno that the sandbox's
	 * read or write then fails with. */
	int (*encode)(void *ctx, const char *path, uint64_t offset, uint8_t *buf, size_t len);
	int (*decode)(void *ctx, const char *path, uint64_t offset, uint8_t *buf, size_t len);
	/* May be NULL. */
	void (*close)(void *ctx);
};

#ifdef __cplusplus
}
#endif
#endif
