/* The musl-built CLI's allocator (linked into the CLI only, through tools/musl-static-cc; the
 * musl shim keeps musl's own).
 *
 * musl's mallocng maps a fresh group for each size class it first meets and unmaps groups as
 * they empty. A `capsule exec` makes nine allocations (the handle with its configuration, a
 * file's read buffer, the connection's receive buffer, a few small ones), and mallocng turned
 * them into eight mmap and munmap calls and a dozen page faults more than a bump of a pointer
 * would have, on the path of every command: on a paravirtualized machine each is an exit to
 * the hypervisor, and together they were about 0.2 ms of the CLI's CPU (docs/performance.md,
 * "The CLI's allocator"). A CLI process lives briefly and allocates little and it is the only
 * one to allocate while it runs, so this one is simple: power-of-two blocks with a free list
 * per size, carved from 1 MiB chunks that are never given back (the first is in .bss and costs
 * nothing until touched; what is never touched is never backed), and anything over 256 KiB in
 * a mapping of its own. A block is reused only for its own size, so the worst waste is half a
 * block, and memory a long command frees is reused by the next allocation of that size.
 *
 * musl supports replacing malloc in a static link: defining these functions keeps the
 * program's allocations here, while musl's own internal ones (__libc_malloc) stay with
 * mallocng and are freed there. CLI_MALLOC(name) lets tests/unit/test_musl_malloc.c build the
 * same code under its own names as well. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <malloc.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef CLI_MALLOC
#define CLI_MALLOC(name) name
#endif

/* Every block starts with this header; 16 bytes keep the data 16-byte aligned, as malloc's
 * must be for any type. */
struct block {
	uint16_t shift;   /* log2 of the block's size (header included); 0 for a mapping of its own */
	uint16_t state;   /* BLOCK_FRESH, BLOCK_USED or BLOCK_FREE */
	uint32_t map_off; /* a mapping's: where the data starts (past an alignment's padding) */
	size_t map_len;   /* a mapping's length */
};

/* FRESH: carved from a chunk or mapped and never handed out before, so all zero past the
 * header. FREE lets free() refuse a block twice: a double free would otherwise put a block on
 * its list twice and hand it out to two owners, silently, where mallocng would abort. */
enum { BLOCK_USED, BLOCK_FRESH, BLOCK_FREE };

#define HDR sizeof(struct block)
#define MIN_SHIFT 5u  /* 32-byte blocks: the header and 16 bytes */
#define MAX_SHIFT 18u /* 256 KiB blocks; larger requests are mapped on their own */
#define CHUNK (1u << 20)

_Static_assert(sizeof(struct block) == 16, "the header keeps data 16-byte aligned");

static struct {
	void *free_list[MAX_SHIFT + 1]; /* per size: blocks freed, linked through their data */
	uint8_t *cur, *end;             /* what is left of the chunk being carved */
	volatile int lock;
} H;

static uint8_t first_chunk[CHUNK] __attribute__((aligned(16)));

/* Only the main thread allocates in the CLI (its one other thread, the progress line, draws
 * into fixed buffers), so the lock is there for correctness, not for contention. */
static void heap_lock(void)
{
	while (__atomic_exchange_n(&H.lock, 1, __ATOMIC_ACQUIRE))
		sched_yield();
}

static void heap_unlock(void)
{
	__atomic_store_n(&H.lock, 0, __ATOMIC_RELEASE);
}

static unsigned shift_for(size_t n)
{
	size_t need = n + HDR;
	unsigned s = MIN_SHIFT;
	while (((size_t)1 << s) < need)
		s++;
	return s;
}

/* A block of 1 << SHIFT bytes, from its free list or carved from a chunk (a new one when the
 * current chunk's rest is too small: that rest is left unused, and being untouched it costs
 * no memory). Called with the lock held. */
static struct block *take_block(unsigned shift)
{
	struct block *b = H.free_list[shift];
	if (b) {
		H.free_list[shift] = *(void **)(b + 1);
		b->state = BLOCK_USED;
		return b;
	}
	size_t size = (size_t)1 << shift;
	if (!H.cur) {
		H.cur = first_chunk;
		H.end = first_chunk + sizeof(first_chunk);
	}
	if ((size_t)(H.end - H.cur) < size) {
		void *m = mmap(NULL, CHUNK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (m == MAP_FAILED)
			return NULL;
		H.cur = m;
		H.end = H.cur + CHUNK;
	}
	b = (struct block *)H.cur;
	H.cur += size;
	b->shift = (uint16_t)shift;
	b->state = BLOCK_FRESH;
	b->map_off = 0;
	b->map_len = 0;
	return b;
}

/* N bytes in a mapping of their own, the data aligned to ALIGN (a power of two, at least 16):
 * the header sits just before the data, and map_off and map_len find the mapping again. */
static struct block *map_alloc(size_t n, size_t align)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	if (align > UINT32_MAX / 2 || n > SIZE_MAX - align - HDR - page) {
		errno = ENOMEM;
		return NULL;
	}
	size_t len = (n + align + HDR + page - 1) & ~(page - 1);
	uint8_t *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED) {
		errno = ENOMEM;
		return NULL;
	}
	uintptr_t data = ((uintptr_t)m + HDR + align - 1) & ~(uintptr_t)(align - 1);
	struct block *b = (struct block *)data - 1;
	b->shift = 0;
	b->state = BLOCK_FRESH;
	b->map_off = (uint32_t)(data - (uintptr_t)m);
	b->map_len = len;
	return b;
}

static size_t usable(const struct block *b)
{
	return b->shift ? ((size_t)1 << b->shift) - HDR : b->map_len - b->map_off;
}

/* The header of a new block of at least N bytes, or NULL with errno set. (The public functions
 * hand out the data after it; the compiler's knowledge of malloc would flag the header's
 * access through a pointer that malloc returned.) */
static struct block *alloc_block(size_t n)
{
	if (n > ((size_t)1 << MAX_SHIFT) - HDR)
		return map_alloc(n, HDR);
	heap_lock();
	struct block *b = take_block(shift_for(n));
	heap_unlock();
	if (!b)
		errno = ENOMEM;
	return b;
}

static void *data_of(struct block *b)
{
	return b ? b + 1 : NULL;
}

void *CLI_MALLOC(malloc)(size_t n)
{
	return data_of(alloc_block(n));
}

void CLI_MALLOC(free)(void *p)
{
	if (!p)
		return;
	struct block *b = (struct block *)p - 1;
	/* A pointer this allocator did not hand out, or handed out and took back: stop, as
	 * mallocng does, rather than corrupt the lists. */
	if (b->state == BLOCK_FREE || (b->shift && (b->shift < MIN_SHIFT || b->shift > MAX_SHIFT)))
		abort();
	if (!b->shift) {
		munmap((uint8_t *)p - b->map_off, b->map_len);
		return;
	}
	heap_lock();
	b->state = BLOCK_FREE;
	*(void **)p = H.free_list[b->shift];
	H.free_list[b->shift] = b;
	heap_unlock();
}

void *CLI_MALLOC(calloc)(size_t count, size_t size)
{
	size_t n;
	if (__builtin_mul_overflow(count, size, &n)) {
		errno = ENOMEM;
		return NULL;
	}
	struct block *b = alloc_block(n);
	if (!b)
		return NULL;
	/* A fresh block and a new mapping are zero already; clearing them would only fault in
	 * pages the caller may never touch (the handle's configuration is 39 KB, mostly unset). */
	if (b->state != BLOCK_FRESH)
		memset(b + 1, 0, n);
	return b + 1;
}

void *CLI_MALLOC(realloc)(void *p, size_t n)
{
	if (!p)
		return CLI_MALLOC(malloc)(n);
	struct block *b = (struct block *)p - 1;
	size_t have = usable(b);
	if (n <= have && (b->shift || n > ((size_t)1 << MAX_SHIFT) - HDR))
		return p;
	void *q = CLI_MALLOC(malloc)(n);
	if (!q)
		return NULL;
	memcpy(q, p, have < n ? have : n);
	CLI_MALLOC(free)(p);
	return q;
}

void *CLI_MALLOC(aligned_alloc)(size_t align, size_t n)
{
	if (!align || (align & (align - 1))) {
		errno = EINVAL;
		return NULL;
	}
	return data_of(align <= HDR ? alloc_block(n) : map_alloc(n, align));
}

int CLI_MALLOC(posix_memalign)(void **out, size_t align, size_t n)
{
	if (align < sizeof(void *) || (align & (align - 1)))
		return EINVAL;
	void *p = CLI_MALLOC(aligned_alloc)(align, n);
	if (!p)
		return ENOMEM;
	*out = p;
	return 0;
}

void *CLI_MALLOC(memalign)(size_t align, size_t n)
{
	return CLI_MALLOC(aligned_alloc)(align, n);
}

size_t CLI_MALLOC(malloc_usable_size)(void *p)
{
	return p ? usable((struct block *)p - 1) : 0;
}
