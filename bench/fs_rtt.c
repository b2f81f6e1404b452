/* fs_rtt: the filesystem API's small-file figure for bench/files.
 *
 *   fs_rtt NAME DIR HOSTDIR [N]
 *
 * Opens the running sandbox NAME and times N (default 500) round trips of a 4 KiB file:
 * capsule_fs_write of DIR/small then capsule_fs_read of it back. Each is alternated with the
 * same round trip on the host without a sandbox (open, write, close, open, read, close in
 * HOSTDIR), so machine noise falls on both. Prints "key value" lines (microseconds) for
 * bench/files to parse; exit status 0 only when every round trip returned the bytes written.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "capsule.h"
#include "timing.h"

static int host_round_trip(const char *path, const char *data, size_t len, char *back)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, data, len) != (ssize_t)len || close(fd) < 0)
		return -1;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, back, len);
	close(fd);
	return n == (ssize_t)len && memcmp(back, data, len) == 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: fs_rtt NAME DIR HOSTDIR [N]\n");
		return 2;
	}
	size_t n = argc > 4 ? strtoul(argv[4], NULL, 10) : 500;
	if (n == 0)
		n = 1;
	capsule_error err = { 0 };
	capsule_sandbox *sb;
	if (capsule_sandbox_open(&sb, argv[1], &err) < 0) {
		printf("error %s\n", err.message);
		return 1;
	}
	char guest[4096], host[4096];
	snprintf(guest, sizeof(guest), "%s/small", argv[2]);
	snprintf(host, sizeof(host), "%s/small", argv[3]);
	char data[4096], back[4096];
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (char)(i * 31 + 7);
	uint64_t *cap = calloc(n, sizeof(*cap)), *bare = calloc(n, sizeof(*bare));
	int rc = 0;
	for (size_t i = 0; i < n + 10 && rc == 0; i++) {
		data[0] = (char)i;
		uint64_t t0 = now_ns();
		void *got = NULL;
		size_t got_len = 0;
		if (capsule_fs_write(sb, guest, data, sizeof(data), 0, 0, &err) < 0 ||
		    capsule_fs_read(sb, guest, &got, &got_len, 0, &err) < 0) {
			printf("error %s\n", err.message);
			rc = 1;
			break;
		}
		uint64_t t1 = now_ns();
		if (got_len != sizeof(data) || memcmp(got, data, sizeof(data)) != 0) {
			printf("error read back differs\n");
			rc = 1;
		}
		free(got);
		uint64_t t2 = now_ns();
		if (host_round_trip(host, data, sizeof(data), back) < 0) {
			printf("error host round trip failed\n");
			rc = 1;
		}
		uint64_t t3 = now_ns();
		if (i >= 10) { /* warm-up rounds are not counted */
			cap[i - 10] = t1 - t0;
			bare[i - 10] = t3 - t2;
		}
	}
	if (rc == 0) {
		qsort(cap, n, sizeof(*cap), cmp_u64);
		qsort(bare, n, sizeof(*bare), cmp_u64);
		printf("n %zu\n", n);
		printf("fs_p50_us %.1f\nfs_p99_us %.1f\n", pct_us(cap, n, 50), pct_us(cap, n, 99));
		printf("host_p50_us %.1f\nhost_p99_us %.1f\n", pct_us(bare, n, 50), pct_us(bare, n, 99));
	}
	unlink(host);
	capsule_sandbox_free(sb);
	free(cap);
	free(bare);
	return rc;
}
