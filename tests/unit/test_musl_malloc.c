/* The musl CLI's allocator (src/cli/musl_malloc.c), linked the way tools/musl-static-cc links it:
 * statically with musl, where it replaces musl's malloc for the whole program (and for musl's
 * own strdup, getline, vasprintf). Built and run only where musl-gcc is (tests/unit/meson.build).
 * Plain asserts: cmocka is built for glibc. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int failures;

#define CHECK(cond)                                                                 \
	do {                                                                        \
		if (!(cond)) {                                                      \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
			failures++;                                                 \
		}                                                                   \
	} while (0)

static void fill(unsigned char *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (unsigned char)(seed * 131u + i * 7u);
}

static int intact(const unsigned char *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != (unsigned char)(seed * 131u + i * 7u))
			return 0;
	return 1;
}

/* The program's malloc is the CLI's, not mallocng: a 100-byte request gets a 128-byte block
 * less its 16-byte header. */
static void test_replacement_in_effect(void)
{
	void *p = malloc(100);
	CHECK(p && malloc_usable_size(p) == 112);
	free(p);
}

static void test_alignment_and_sizes(void)
{
	static const size_t sizes[] = { 0, 1, 15, 16, 17, 100, 4096, 4097, 39832, 65536, 262128, 262129, 1 << 20, 3 << 20 };
	void *p[sizeof(sizes) / sizeof(sizes[0])];
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		p[i] = malloc(sizes[i]);
		CHECK(p[i] != NULL);
		CHECK(((uintptr_t)p[i] & 15) == 0);
		CHECK(malloc_usable_size(p[i]) >= sizes[i]);
		fill(p[i], sizes[i], (unsigned)i);
	}
	/* No two overlap: each still holds its own pattern after all were written. */
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		CHECK(intact(p[i], sizes[i], (unsigned)i));
		free(p[i]);
	}
	free(NULL);
}

static void test_calloc_zeroes_reused_blocks(void)
{
	for (size_t n = 8; n <= (1 << 20); n *= 4) {
		unsigned char *a = malloc(n);
		CHECK(a != NULL);
		memset(a, 0xaa, n);
		free(a);
		unsigned char *b = calloc(1, n);
		CHECK(b != NULL);
		size_t nonzero = 0;
		for (size_t i = 0; i < n; i++)
			nonzero += b[i] != 0;
		CHECK(nonzero == 0);
		free(b);
	}
	/* volatile: the compiler refuses sizes it can see are too large */
	volatile size_t half = SIZE_MAX / 2, huge = SIZE_MAX - 8;
	errno = 0;
	CHECK(calloc(half, 4) == NULL && errno == ENOMEM);
	errno = 0;
	CHECK(malloc(huge) == NULL && errno == ENOMEM);
}

static void test_realloc_keeps_contents(void)
{
	unsigned char *p = realloc(NULL, 10);
	CHECK(p != NULL);
	fill(p, 10, 1);
	size_t have = 10;
	/* Up through the classes into a mapping of its own, then back down. */
	static const size_t steps[] = { 100, 5000, 200000, 300000, 5 << 20, 70000, 20, 3 };
	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		size_t keep = have < steps[i] ? have : steps[i];
		p = realloc(p, steps[i]);
		CHECK(p != NULL);
		CHECK(intact(p, keep, 1));
		fill(p, steps[i], 1);
		have = steps[i];
	}
	free(p);
}

static void test_aligned(void)
{
	static const size_t aligns[] = { 8, 16, 64, 4096, 65536 };
	for (size_t i = 0; i < sizeof(aligns) / sizeof(aligns[0]); i++) {
		void *p = aligned_alloc(aligns[i], 1000);
		CHECK(p && ((uintptr_t)p & (aligns[i] - 1)) == 0);
		fill(p, 1000, 9);
		CHECK(intact(p, 1000, 9));
		free(p);
		void *q = NULL;
		CHECK(posix_memalign(&q, aligns[i] < sizeof(void *) ? sizeof(void *) : aligns[i], 300000) == 0);
		CHECK(q && ((uintptr_t)q & (aligns[i] - 1)) == 0);
		free(q);
	}
	void *q = NULL;
	CHECK(posix_memalign(&q, 24, 10) == EINVAL);
	errno = 0;
	CHECK(aligned_alloc(3, 10) == NULL && errno == EINVAL);
}

/* musl's own functions that allocate with the public malloc. */
static void test_libc_users(void)
{
	char *s = strdup("capsule");
	CHECK(s && !strcmp(s, "capsule"));
	free(s);
	char *a = NULL;
	CHECK(asprintf(&a, "%s-%d", "x", 42) == 4 && !strcmp(a, "x-42"));
	free(a);
	FILE *f = fmemopen((char[]){ "one\ntwo two two\n" }, 16, "r");
	CHECK(f != NULL);
	char *line = NULL;
	size_t cap = 0;
	CHECK(getline(&line, &cap, f) == 4 && !strcmp(line, "one\n"));
	CHECK(getline(&line, &cap, f) == 12 && !strcmp(line, "two two two\n"));
	free(line);
	fclose(f);
}

/* Random sizes (up to 512 KiB, most of them small), frees and reallocs in random order, every
 * live block checked against its pattern. */
static void stress(unsigned seed, size_t rounds)
{
	enum { SLOTS = 512 };
	unsigned char *p[SLOTS] = { 0 };
	size_t n[SLOTS] = { 0 };
	unsigned s[SLOTS] = { 0 };
	unsigned x = seed;
	for (size_t r = 0; r < rounds; r++) {
		x = x * 1103515245u + 12345u;
		size_t i = (x >> 8) % SLOTS;
		if (p[i] && !intact(p[i], n[i], s[i])) {
			CHECK(!"a live block was overwritten");
			return;
		}
		size_t size = (size_t)1 << ((x >> 20) % 20);
		size = (size - 1) & (x * 2654435761u);
		switch ((x >> 4) % 3) {
		case 0:
			free(p[i]);
			p[i] = malloc(size);
			break;
		case 1:
			p[i] = realloc(p[i], size);
			if (p[i] && !intact(p[i], n[i] < size ? n[i] : size, s[i])) {
				CHECK(!"realloc lost contents");
				return;
			}
			break;
		default:
			free(p[i]);
			p[i] = NULL;
			size = 0;
			break;
		}
		CHECK(size == 0 || p[i] != NULL);
		n[i] = p[i] ? size : 0;
		s[i] = x;
		if (p[i])
			fill(p[i], n[i], s[i]);
	}
	for (size_t i = 0; i < SLOTS; i++) {
		CHECK(!p[i] || intact(p[i], n[i], s[i]));
		free(p[i]);
	}
}

/* In a child: FN misuses the heap; the allocator must stop the process (SIGABRT) rather than
 * hand a block to two owners. */
static void expect_abort(void (*fn)(void), const char *what)
{
	pid_t pid = fork();
	if (pid == 0) {
		fn();
		_exit(0);
	}
	int status = 0;
	CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
	if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT))
		fprintf(stderr, "%s: not stopped (status 0x%x)\n", what, status), failures++;
}

/* volatile: the compiler knows malloc and free, and would drop a pair it can see through */
static void double_free(void)
{
	void *volatile p = malloc(100);
	free(p);
	free(p);
}

static void double_free_after_reuse_of_another(void)
{
	void *volatile p = malloc(4000);
	void *volatile q = malloc(4000);
	free(p);
	free(q);
	void *volatile r = malloc(4000); /* q's block again: p stays freed */
	free(p);
	free(r);
}

static void free_of_a_foreign_pointer(void)
{
	static unsigned char not_ours[64] __attribute__((aligned(16)));
	memset(not_ours, 0x7f, sizeof(not_ours));
	void *volatile p = not_ours + 16; /* the compiler would refuse the free it can see */
	free(p);
}

static void *stress_thread(void *arg)
{
	stress((unsigned)(uintptr_t)arg, 5000);
	return NULL;
}

int main(void)
{
	test_replacement_in_effect();
	test_alignment_and_sizes();
	test_calloc_zeroes_reused_blocks();
	test_realloc_keeps_contents();
	test_aligned();
	test_libc_users();
	expect_abort(double_free, "a double free");
	expect_abort(double_free_after_reuse_of_another, "a double free after another block's reuse");
	expect_abort(free_of_a_foreign_pointer, "a free of memory malloc never gave");
	stress(1, 10000);
	pthread_t t[3];
	for (uintptr_t i = 0; i < 3; i++)
		CHECK(pthread_create(&t[i], NULL, stress_thread, (void *)(i + 7)) == 0);
	for (int i = 0; i < 3; i++)
		pthread_join(t[i], NULL);
	if (failures) {
		fprintf(stderr, "%d checks failed\n", failures);
		return 1;
	}
	printf("musl malloc: all checks passed\n");
	return 0;
}
