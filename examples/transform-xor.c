/* A demonstration transform plugin for capsule-fuse (docs/transforms.md).
 *
 * It XORs every byte with a keystream derived from a key and the byte's offset in the file:
 * stored[i] = clear[i] ^ ks(key, i), where ks takes byte i % 8 of splitmix64(key ^ i / 8).
 * Like a stream cipher in counter mode it is length-preserving and offset-aware, so any byte
 * range can be encoded or decoded on its own.
 *
 * THIS IS A DEMO, NOT ENCRYPTION. splitmix64 is not a cryptographic function, there is no
 * nonce (every file shares one keystream, so two files XORed together cancel it) and no
 * integrity. Use it to see the mechanism, and write a real plugin (AES-CTR or ChaCha20 with
 * a per-file nonce kept elsewhere) for data that matters.
 *
 * Config: the key, any string ("" is a valid, weak key). The file's path is not used, so a
 * rename keeps a file readable.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "capsule_transform.h"

struct xor_ctx {
	uint64_t key;
};

static uint64_t splitmix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static void *xor_open(const char *config)
{
	struct xor_ctx *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	/* FNV-1a of the config string, then mixed: any string is a key. */
	uint64_t h = 0xcbf29ce484222325ull;
	for (const unsigned char *p = (const unsigned char *)config; *p; p++)
		h = (h ^ *p) * 0x100000001b3ull;
	c->key = splitmix64(h);
	return c;
}

static int xor_apply(void *ctx, const char *path, uint64_t offset, uint8_t *buf, size_t len)
{
	(void)path;
	const struct xor_ctx *c = ctx;
	size_t i = 0;
	while (i < len) {
		uint64_t off = offset + i;
		uint64_t word = splitmix64(c->key ^ (off / 8));
		unsigned shift = (unsigned)(off % 8);
		/* The rest of this 8-byte word's keystream, then the next word. */
		for (; shift < 8 && i < len; shift++, i++)
			buf[i] ^= (uint8_t)(word >> (8 * shift));
	}
	return 0;
}

static void xor_close(void *ctx)
{
	free(ctx);
}

__attribute__((visibility("default"))) const struct capsule_transform_v1 capsule_transform_v1 = {
	.abi = CAPSULE_TRANSFORM_ABI_V1,
	.open = xor_open,
	.encode = xor_apply,
	.decode = xor_apply,
	.close = xor_close,
};
