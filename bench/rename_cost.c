/* rename_cost: what a small file's replacement costs on the filesystem of DIR (docs/performance.md,
 * "Renames on the cold path", branch state28).
 *
 *   gcc -O2 -o /tmp/rename_cost bench/rename_cost.c && /tmp/rename_cost DIR [N]
 *
 * First, N fresh folders, one 350-byte file written into each as a start writes its config and
 * state.json: (fresh) a temp file renamed to a name that does not exist, (direct) written under
 * its final name, (over) a temp renamed over a file already there. Then one file in one folder
 * rewritten N times 2 ms apart, as a shim rewrites state.json at each change: (rewrite-over)
 * renamed over, (rewrite-swap) RENAME_EXCHANGE with one temp name reused, as write_file_swap_at
 * does. Prints the median and p90 of each, in microseconds. Removes what it made.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdbool.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "timing.h"

enum { FRESH, DIRECT, OVER, REWRITE_OVER, REWRITE_SWAP };
static const char *const names[] = { "fresh", "direct", "over", "rewrite-over", "rewrite-swap" };

static char data[350];

static void put(int dfd, const char *name, size_t len, int flags)
{
	int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_CLOEXEC | flags, 0600);
	if (fd < 0 || write(fd, data, len) != (ssize_t)len) {
		perror(name);
		exit(1);
	}
	close(fd);
}

static void one(int dfd, int mode, int i)
{
	size_t len = sizeof(data) - (size_t)(i % 7);
	if (mode == DIRECT) {
		put(dfd, "f", len, O_EXCL);
		return;
	}
	put(dfd, ".f.tmp", len, O_TRUNC);
	if (mode == REWRITE_SWAP)
		syscall(SYS_renameat2, dfd, ".f.tmp", dfd, "f", RENAME_EXCHANGE);
	else
		renameat(dfd, ".f.tmp", dfd, "f");
}

static void rm_folder(int top, const char *d)
{
	int dfd = openat(top, d, O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		unlinkat(dfd, "f", 0);
		unlinkat(dfd, ".f.tmp", 0);
		close(dfd);
	}
	unlinkat(top, d, AT_REMOVEDIR);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: rename_cost DIR [N]\n");
		return 2;
	}
	int n = argc > 2 ? atoi(argv[2]) : 200;
	int top = open(argv[1], O_DIRECTORY | O_CLOEXEC);
	uint64_t *t = calloc((size_t)(n > 0 ? n : 1), sizeof(*t));
	if (top < 0 || n <= 0 || !t) {
		fprintf(stderr, "rename_cost: need a folder and N > 0\n");
		return 2;
	}
	memset(data, 'x', sizeof(data));
	for (int mode = FRESH; mode <= REWRITE_SWAP; mode++) {
		bool rewrite = mode >= REWRITE_OVER;
		char d[64];
		for (int i = 0; i < n; i++) {
			snprintf(d, sizeof(d), ".rename_cost.%d.%d", (int)getpid(), rewrite ? 0 : i);
			if (!rewrite || i == 0)
				mkdirat(top, d, 0700);
			int dfd = openat(top, d, O_DIRECTORY | O_CLOEXEC);
			if (dfd < 0) {
				perror(d);
				return 1;
			}
			if (mode == OVER || (rewrite && i == 0))
				put(dfd, "f", 200, 0);
			if (rewrite)
				usleep(2000);
			uint64_t t0 = now_ns();
			one(dfd, mode, i);
			t[i] = now_ns() - t0;
			close(dfd);
		}
		for (int i = 0; i < (rewrite ? 1 : n); i++) {
			snprintf(d, sizeof(d), ".rename_cost.%d.%d", (int)getpid(), i);
			rm_folder(top, d);
		}
		qsort(t, (size_t)n, sizeof(*t), cmp_u64);
		printf("%-13s median %7.1f us  p90 %7.1f us\n", names[mode], pct_us(t, (size_t)n, 50), pct_us(t, (size_t)n, 90));
	}
	free(t);
	return 0;
}
