/* The filesystem API through the C library; tests/e2e/test_fs_api.py runs it. Prints
 * "ok NAME" per check and exits non-zero at the first failure, saying what failed.
 *
 * The sandbox is an ephemeral one made with capsule_sandbox_create, so every operation
 * borrows its creator's connection: streams abandoned half way must leave that shared
 * connection usable. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <capsule.h>

#include "check.h"

static capsule_sandbox *sb;

#define STREAM_BYTES (64u << 20)

/* The byte at OFFSET of the test pattern: depends on the offset, so a dropped, repeated or
 * reordered chunk shows. */
static uint8_t pattern(uint64_t off)
{
	uint64_t x = (off / 8 + 1) * 0x9e3779b97f4a7c15ull;
	x ^= x >> 29;
	return (uint8_t)(x >> (8 * (off % 8)));
}

static void fill(uint8_t *buf, uint64_t off, size_t n)
{
	for (size_t i = 0; i < n; i++)
		buf[i] = pattern(off + i);
}

static void write_file(const char *path, const char *content)
{
	capsule_error err = { 0 };
	CHECK(capsule_fs_write(sb, path, content, strlen(content), 0, 0, &err) == 0, "write %s: %s", path, err.message);
}

static void expect_content(const char *path, const char *want)
{
	capsule_error err = { 0 };
	void *data;
	size_t len;
	CHECK(capsule_fs_read(sb, path, &data, &len, 0, &err) == 0, "read %s: %s", path, err.message);
	CHECK(len == strlen(want) && memcmp(data, want, len) == 0, "%s holds '%s', not '%s'", path, (char *)data, want);
	free(data);
}

static size_t temp_files_in(const char *dir)
{
	capsule_error err = { 0 };
	capsule_fs_entry *v;
	size_t n, k = 0;
	CHECK(capsule_fs_list(sb, dir, &v, &n, &err) == 0, "list %s: %s", dir, err.message);
	for (size_t i = 0; i < n; i++)
		k += strncmp(v[i].name, ".capsule-write-", 15) == 0;
	capsule_fs_entries_free(v, n);
	return k;
}

static void run_sh(const char *script)
{
	const char *argv[] = { "sh", "-c", script, NULL };
	capsule_exec_options o = CAPSULE_EXEC_OPTIONS_INIT;
	o.argv = argv;
	capsule_exec_result r;
	capsule_error err = { 0 };
	CHECK(capsule_exec(&r, sb, &o, NULL, 0, 1 << 20, &err) == 0, "exec %s: %s", script, err.message);
	CHECK(r.status.exit_code == 0, "sh -c '%s' exited %d: %s", script, r.status.exit_code, r.stderr_buf);
	capsule_exec_result_free(&r);
}

static void check_stream_round_trip(void)
{
	static const size_t wsizes[] = { 1, 4093, 65537, 3, 262147, 1048583, 7, 131071 };
	static const size_t rsizes[] = { 1, 8191, 99991, 5, 300007, 13, 2097169 };
	capsule_error err = { 0 };
	capsule_fs_stream *s;
	uint8_t *buf = malloc(4u << 20);
	CHECK(buf != NULL, "malloc");
	CHECK(capsule_fs_open_write(&s, sb, "/tmp/stream", 0600, 0, &err) == 0, "open_write: %s", err.message);
	uint64_t off = 0;
	for (size_t i = 0; off < STREAM_BYTES; i++) {
		size_t n = wsizes[i % (sizeof(wsizes) / sizeof(wsizes[0]))];
		if (n > STREAM_BYTES - off)
			n = (size_t)(STREAM_BYTES - off);
		fill(buf, off, n);
		CHECK(capsule_fs_stream_write(s, buf, n, &err) == 0, "stream_write at %llu: %s", (unsigned long long)off,
		      err.message);
		off += n;
	}
	CHECK(capsule_fs_stream_close(s, &err) == 0, "stream_close: %s", err.message);
	capsule_fs_stream_free(s);

	capsule_fs_entry e;
	CHECK(capsule_fs_stat(sb, "/tmp/stream", &e, &err) == 0, "stat: %s", err.message);
	CHECK(e.kind == CAPSULE_FS_FILE && e.size == STREAM_BYTES && e.mode == 0600, "stat: kind %d size %llu mode %o",
	      e.kind, (unsigned long long)e.size, e.mode);
	capsule_fs_entry_clear(&e);

	CHECK(capsule_fs_open_read(&s, sb, "/tmp/stream", &err) == 0, "open_read: %s", err.message);
	off = 0;
	for (size_t i = 0;; i++) {
		size_t cap = rsizes[i % (sizeof(rsizes) / sizeof(rsizes[0]))];
		ssize_t n = capsule_fs_stream_read(s, buf, cap, &err);
		CHECK(n >= 0, "stream_read at %llu: %s", (unsigned long long)off, err.message);
		if (n == 0)
			break;
		CHECK((size_t)n <= cap, "stream_read returned %zd for a buffer of %zu", n, cap);
		for (ssize_t k = 0; k < n; k++)
			CHECK(buf[k] == pattern(off + (uint64_t)k), "byte %llu differs", (unsigned long long)(off + (uint64_t)k));
		off += (uint64_t)n;
	}
	CHECK(off == STREAM_BYTES, "read %llu bytes back, wrote %u", (unsigned long long)off, STREAM_BYTES);
	CHECK(capsule_fs_stream_read(s, buf, 16, &err) == 0, "a read after the end is not 0");
	CHECK(capsule_fs_stream_close(s, &err) == 0, "close of a read stream: %s", err.message);
	capsule_fs_stream_free(s);
	CHECK(temp_files_in("/tmp") == 0, "a temporary file was left in /tmp");
	free(buf);
	printf("ok stream-64mib\n");
}

static void check_read_limit(void)
{
	capsule_error err = { 0 };
	void *data = (void *)1;
	size_t len = 1;
	write_file("/tmp/ten", "0123456789");
	CHECK(capsule_fs_read(sb, "/tmp/ten", &data, &len, 9, &err) == -EFBIG, "a 10-byte file read with max 9: %s",
	      err.message);
	CHECK(data == NULL && len == 0, "a failed read left output");
	CHECK(strstr(err.message, "/tmp/ten") != NULL, "EFBIG message does not name the path: %s", err.message);
	CHECK(capsule_fs_read(sb, "/tmp/ten", &data, &len, 10, &err) == 0 && len == 10, "a read with max = size: %s",
	      err.message);
	CHECK(((char *)data)[10] == 0, "not NUL-terminated");
	free(data);
	CHECK(capsule_fs_read(sb, "/tmp/stream", &data, &len, 1 << 20, &err) == -EFBIG, "64 MiB with max 1 MiB");
	expect_content("/tmp/ten", "0123456789"); /* the connection still works */
	printf("ok read-limit\n");
}

static void check_abandoned_write_keeps_old(void)
{
	capsule_error err = { 0 };
	write_file("/tmp/keep", "old content");
	static uint8_t chunk[300000];
	memset(chunk, 'N', sizeof(chunk));
	for (int i = 0; i < 300; i++) {
		capsule_fs_stream *s;
		CHECK(capsule_fs_open_write(&s, sb, "/tmp/keep", 0, 0, &err) == 0, "open_write #%d: %s", i, err.message);
		if (i % 3 != 0)
			CHECK(capsule_fs_stream_write(s, chunk, (size_t)(i % 7 + 1) * 1000 * (size_t)(i % 3), &err) == 0,
			      "stream_write #%d: %s", i, err.message);
		capsule_fs_stream_free(s); /* no close: no commit */
	}
	expect_content("/tmp/keep", "old content");
	CHECK(temp_files_in("/tmp") == 0, "abandoned writes left temporary files");
	printf("ok abandoned-write\n");
}

static void check_abandoned_reads_leave_the_connection_usable(void)
{
	capsule_error err = { 0 };
	uint8_t buf[1000];
	for (int i = 0; i < 300; i++) {
		capsule_fs_stream *s;
		CHECK(capsule_fs_open_read(&s, sb, "/tmp/stream", &err) == 0, "open_read #%d: %s", i, err.message);
		for (int k = 0; k < i % 5; k++)
			CHECK(capsule_fs_stream_read(s, buf, sizeof(buf), &err) > 0, "stream_read #%d: %s", i, err.message);
		capsule_fs_stream_free(s); /* half way */
		if (i % 50 == 0)
			expect_content("/tmp/ten", "0123456789");
	}
	capsule_fs_entry e;
	CHECK(capsule_fs_stat(sb, "/tmp/ten", &e, &err) == 0 && e.size == 10, "stat after abandoned reads: %s",
	      err.message);
	capsule_fs_entry_clear(&e);
	run_sh("test \"$(cat /tmp/ten)\" = 0123456789");
	printf("ok abandoned-read\n");
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void check_list_of_5000(void)
{
	capsule_error err = { 0 };
	run_sh("mkdir /tmp/many && cd /tmp/many && i=0; while [ $i -lt 5000 ]; do : > f$i; i=$((i+1)); done");
	capsule_fs_entry *v;
	size_t n;
	CHECK(capsule_fs_list(sb, "/tmp/many", &v, &n, &err) == 0, "list: %s", err.message);
	CHECK(n == 5000, "listed %zu entries, want 5000", n);
	char *want[5000];
	char names[5000][8];
	for (int i = 0; i < 5000; i++) {
		snprintf(names[i], sizeof(names[i]), "f%d", i);
		want[i] = names[i];
	}
	qsort(want, 5000, sizeof(want[0]), cmp_str);
	for (size_t i = 0; i < n; i++) {
		CHECK(strcmp(v[i].name, want[i]) == 0, "entry %zu is '%s', want '%s'", i, v[i].name, want[i]);
		CHECK(v[i].kind == CAPSULE_FS_FILE && v[i].size == 0 && !v[i].link_target, "entry %s", v[i].name);
	}
	capsule_fs_entries_free(v, n);
	printf("ok list-5000\n");
}

static void check_errors(void)
{
	capsule_error err = { 0 };
	capsule_fs_stream *s = (capsule_fs_stream *)1;
	/* A missing file fails at the open or, at the latest, at the first read. */
	int r = capsule_fs_open_read(&s, sb, "/no/such", &err);
	if (r == 0) {
		uint8_t one;
		r = (int)capsule_fs_stream_read(s, &one, 1, &err);
		capsule_fs_stream_free(s);
	} else {
		CHECK(s == NULL, "a failed open_read left a stream");
	}
	CHECK(r == -ENOENT && strstr(err.message, "/no/such"), "read of a missing file: %d %s", r, err.message);
	CHECK(capsule_fs_open_read(&s, sb, "relative", &err) == -EINVAL, "relative path");
	CHECK(capsule_fs_open_write(&s, sb, "/tmp", 0, 0, &err) == -EISDIR, "open_write of a folder: %s", err.message);
	CHECK(capsule_fs_open_write(&s, sb, "/tmp/x", 010000, 0, &err) == -EINVAL, "mode 010000 accepted");
	CHECK(capsule_fs_write(sb, "/tmp/ten", "x", 1, 0, CAPSULE_FS_NOREPLACE, &err) == -EEXIST, "NOREPLACE replaced");
	expect_content("/tmp/ten", "0123456789");
	char *longp = malloc(CAPSULE_FS_PATH_MAX + 2);
	memset(longp, 'a', CAPSULE_FS_PATH_MAX + 1);
	longp[0] = '/';
	longp[CAPSULE_FS_PATH_MAX + 1] = 0;
	CHECK(capsule_fs_remove(sb, longp, 0, &err) == -ENAMETOOLONG, "a path over the limit");
	free(longp);
	CHECK(capsule_fs_open_write(&s, sb, "/tmp/w", 0, 0, &err) == 0, "open_write: %s", err.message);
	uint8_t b[4];
	CHECK(capsule_fs_stream_read(s, b, sizeof(b), &err) == -EBADF, "read from a write stream");
	capsule_fs_stream_free(s);
	printf("ok errors\n");
}

/* A write up to one chunk goes out as request, data and EOF in one send, without waiting for
 * STARTED. Each size round-trips whole (empty, around the chunk and the window); a refused one
 * fails with its own error, and the data sent behind it does not reach the next operation on
 * the shared connection. */
static void check_small_writes_in_one_send(void)
{
	capsule_error err = { 0 };
	static const size_t sizes[] = { 0, 1, 4096, 256 * 1024 - 1, 256 * 1024, 256 * 1024 + 1, 1024 * 1024,
					1024 * 1024 + 1 };
	static uint8_t buf[1024 * 1024 + 1];
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		fill(buf, i * 7919, sizes[i]);
		CHECK(capsule_fs_write(sb, "/tmp/small", buf, sizes[i], 0, 0, &err) == 0, "write of %zu bytes: %s",
		      sizes[i], err.message);
		void *data;
		size_t len;
		CHECK(capsule_fs_read(sb, "/tmp/small", &data, &len, 0, &err) == 0, "read back: %s", err.message);
		CHECK(len == sizes[i] && memcmp(data, buf, len) == 0, "%zu bytes written, %zu different read back", sizes[i], len);
		free(data);
	}
	write_file("/tmp/keep-small", "old content");
	memset(buf, 'X', 4096);
	for (int i = 0; i < 20; i++) {
		CHECK(capsule_fs_write(sb, "/no/such/folder/f", buf, 4096, 0, 0, &err) == -ENOENT,
		      "a small write under a missing folder: %s", err.message);
		CHECK(strstr(err.message, "/no/such/folder/f") != NULL, "the error names the path: %s", err.message);
		CHECK(capsule_fs_write(sb, "/tmp", buf, 4096, 0, 0, &err) < 0, "a small write over a folder");
		CHECK(capsule_fs_write(sb, "/tmp/keep-small", buf, 4096, 0, CAPSULE_FS_NOREPLACE, &err) == -EEXIST,
		      "a small write that may not replace: %s", err.message);
		expect_content("/tmp/keep-small", "old content");
	}
	CHECK(temp_files_in("/tmp") == 0, "refused small writes left temporary files");
	printf("ok small-writes\n");
}

/* A writer killed half way through a stream (its connection gone with it) leaves the old file
 * and no temporary one. The writer is a child with its own handle and connection. */
static void check_killed_writer_keeps_old(void)
{
	capsule_error err = { 0 };
	write_file("/tmp/keep-killed", "old content");
	int ready[2];
	CHECK(pipe(ready) == 0, "pipe");
	pid_t pid = fork();
	CHECK(pid >= 0, "fork");
	if (pid == 0) {
		capsule_sandbox *own;
		capsule_fs_stream *s;
		static uint8_t chunk[1 << 20];
		memset(chunk, 'K', sizeof(chunk));
		if (capsule_sandbox_open(&own, capsule_sandbox_name(sb), &err) < 0 ||
		    capsule_fs_open_write(&s, own, "/tmp/keep-killed", 0, 0, &err) < 0 ||
		    capsule_fs_stream_write(s, chunk, sizeof(chunk), &err) < 0 ||
		    capsule_fs_stream_write(s, chunk, sizeof(chunk), &err) < 0)
			_exit(1);
		(void)!write(ready[1], "x", 1);
		pause(); /* killed here, mid-transfer */
		_exit(1);
	}
	close(ready[1]);
	char c;
	CHECK(read(ready[0], &c, 1) == 1, "the writer did not get half way");
	close(ready[0]);
	kill(pid, SIGKILL);
	int st;
	CHECK(waitpid(pid, &st, 0) == pid && WIFSIGNALED(st), "the writer was not killed");
	/* The shim cancels the channel when the connection goes; the agent then removes the
	 * temporary file. Both happen after the kill: wait for it, boundedly. */
	for (int i = 0; i < 200 && temp_files_in("/tmp") != 0; i++)
		usleep(10000);
	expect_content("/tmp/keep-killed", "old content");
	CHECK(temp_files_in("/tmp") == 0, "a killed writer left a temporary file");
	printf("ok killed-writer\n");
}

/* ---- direct streams (CP_FS_DIRECT) ---------------------------------------------------- */

/* The sockets this process holds, as a bit set of their numbers (below 1024): a direct
 * stream adds one of its own. */
static int sockets_held(uint8_t set[128])
{
	DIR *d = opendir("/proc/self/fd");
	CHECK(d != NULL, "opendir /proc/self/fd");
	int n = 0;
	memset(set, 0, 128);
	struct dirent *de;
	while ((de = readdir(d))) {
		int fd = atoi(de->d_name);
		struct stat st;
		if (de->d_name[0] != '.' && fd != dirfd(d) && fd < 1024 && fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode)) {
			n++;
			set[fd / 8] |= (uint8_t)(1u << (fd % 8));
		}
	}
	closedir(d);
	return n;
}

static uint64_t rng_state;
static uint64_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

/* At the container level a stream's bytes go on a socket of its own: the client holds one
 * more socket while the stream is open, one the agent cannot send on when it writes. */
static void check_direct_stream_is_used(void)
{
	capsule_error err = { 0 };
	uint8_t was[128], now[128];
	int before = sockets_held(was);
	capsule_fs_stream *s;
	CHECK(capsule_fs_open_write(&s, sb, "/tmp/direct", 0, 0, &err) == 0, "open_write: %s", err.message);
	int held = sockets_held(now), sock = -1;
	CHECK(held == before + 1, "a write stream holds %d sockets, %d before", held, before);
	for (int fd = 0; fd < 1024; fd++)
		if ((now[fd / 8] & ~was[fd / 8]) & (1u << (fd % 8)))
			sock = fd;
	char c;
	ssize_t got = recv(sock, &c, 1, MSG_DONTWAIT | MSG_PEEK);
	CHECK(got == 0, "the agent's end of a write's socket can send (fd %d: %zd, %s)", sock, got, strerror(errno));
	CHECK(capsule_fs_stream_write(s, "direct", 6, &err) == 0, "stream_write: %s", err.message);
	CHECK(capsule_fs_stream_close(s, &err) == 0, "close: %s", err.message);
	capsule_fs_stream_free(s);
	CHECK(sockets_held(now) == before, "the stream's socket outlived it");
	expect_content("/tmp/direct", "direct");
	printf("ok direct-used\n");
}

/* Files of random sizes (around the chunk, the window and the frame sizes, and far past
 * them) through each way in and out, each read back whole and compared byte for byte. */
static void check_direct_random_sizes(void)
{
	capsule_error err = { 0 };
	rng_state = (uint64_t)time(NULL) | 1;
	printf("seed %llu\n", (unsigned long long)rng_state);
	static const size_t edges[] = { 0, 1, 262144, 262145, 1048575, 1048576, 1048577, 2097152 + 13 };
	size_t max = 24u << 20;
	uint8_t *buf = malloc(max), *back = malloc(max);
	CHECK(buf && back, "malloc");
	for (int i = 0; i < 24; i++) {
		size_t n = i < 8 ? edges[i] : (size_t)(rnd() % (i % 4 == 0 ? max : 3u << 20));
		uint64_t base = rnd();
		fill(buf, base, n);
		int way = i % 3;
		if (way == 0) {
			CHECK(capsule_fs_write(sb, "/tmp/rand", buf, n, 0, 0, &err) == 0, "write of %zu: %s", n, err.message);
		} else {
			capsule_fs_stream *s;
			CHECK(capsule_fs_open_write(&s, sb, "/tmp/rand", 0, 0, &err) == 0, "open_write: %s", err.message);
			for (size_t off = 0; off < n;) {
				size_t k = 1 + (size_t)(rnd() % (way == 1 ? 70000 : 3u << 20));
				if (k > n - off)
					k = n - off;
				CHECK(capsule_fs_stream_write(s, buf + off, k, &err) == 0, "stream_write: %s", err.message);
				off += k;
			}
			CHECK(capsule_fs_stream_close(s, &err) == 0, "close of %zu: %s", n, err.message);
			capsule_fs_stream_free(s);
		}
		if (way == 0) {
			void *data;
			size_t len;
			CHECK(capsule_fs_read(sb, "/tmp/rand", &data, &len, 0, &err) == 0, "read of %zu: %s", n, err.message);
			CHECK(len == n && memcmp(data, buf, n) == 0, "%zu bytes written, %zu different read back", n, len);
			free(data);
			if (n > 1) {
				CHECK(capsule_fs_read(sb, "/tmp/rand", &data, &len, n - 1, &err) == -EFBIG,
				      "%zu bytes read with a limit of one less: %s", n, err.message);
			}
		} else if (way == 1) {
			char path[] = "/tmp/capsule-fs-check-XXXXXX";
			int fd = mkstemp(path);
			CHECK(fd >= 0, "mkstemp");
			unlink(path);
			CHECK(capsule_fs_read_to_fd(sb, "/tmp/rand", fd, &err) == 0, "read_to_fd of %zu: %s", n, err.message);
			CHECK(lseek(fd, 0, SEEK_END) == (off_t)n, "read_to_fd wrote %lld of %zu", (long long)lseek(fd, 0, SEEK_END), n);
			CHECK(pread(fd, back, n, 0) == (ssize_t)n && memcmp(back, buf, n) == 0, "read_to_fd: %zu bytes differ", n);
			close(fd);
		} else {
			capsule_fs_stream *s;
			CHECK(capsule_fs_open_read(&s, sb, "/tmp/rand", &err) == 0, "open_read: %s", err.message);
			size_t off = 0;
			for (;;) {
				size_t cap = 1 + (size_t)(rnd() % 2000000);
				if (cap > max - off)
					cap = max - off;
				ssize_t k = capsule_fs_stream_read(s, back + off, cap, &err);
				CHECK(k >= 0, "stream_read: %s", err.message);
				if (k == 0)
					break;
				off += (size_t)k;
				CHECK(off <= n, "more read back than the %zu bytes written", n);
			}
			CHECK(off == n && memcmp(back, buf, n) == 0, "%zu bytes written, %zu different read back", n, off);
			capsule_fs_stream_free(s);
		}
	}
	CHECK(temp_files_in("/tmp") == 0, "a temporary file was left in /tmp");
	free(buf);
	free(back);
	printf("ok direct-random\n");
}

/* Several processes at once, each with its own handle: direct writes and reads of their own
 * files and execs, interleaved; every byte and every exit code as expected. */
/* Fork a worker: its pid in the parent; in the child 0, with *OWN a handle of its own on the
 * sandbox (its own connection to the shim). */
static pid_t start_worker(capsule_sandbox **own)
{
	pid_t pid = fork();
	CHECK(pid >= 0, "fork");
	if (pid > 0)
		return pid;
	capsule_error err = { 0 };
	if (capsule_sandbox_open(own, capsule_sandbox_name(sb), &err) < 0) {
		fprintf(stderr, "worker: open: %s\n", err.message);
		_exit(10);
	}
	return 0;
}

/* Wait for forked workers, each of which must exit 0. */
static void wait_workers(const pid_t *pids, int n)
{
	for (int w = 0; w < n; w++) {
		int st;
		CHECK(waitpid(pids[w], &st, 0) == pids[w], "waitpid");
		CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "worker %d failed (status %d)", w, st);
	}
}

static void check_concurrent_streams_and_execs(void)
{
	enum { WORKERS = 4 };
	pid_t pids[WORKERS];
	for (int w = 0; w < WORKERS; w++) {
		capsule_sandbox *own;
		if ((pids[w] = start_worker(&own)) > 0)
			continue;
		capsule_error err = { 0 };
		size_t n = (size_t)(3u << 20) + (size_t)w * 4099;
		uint8_t *buf = malloc(n);
		char path[64], script[128];
		snprintf(path, sizeof(path), "/tmp/worker-%d", w);
		for (int round = 0; round < 6; round++) {
			fill(buf, (uint64_t)w * 1000003 + (uint64_t)round, n);
			if (capsule_fs_write(own, path, buf, n, 0, 0, &err) < 0)
				_exit(11);
			snprintf(script, sizeof(script), "test $(wc -c < %s) = %zu && exit %d", path, n, 3 + round);
			const char *argv[] = { "sh", "-c", script, NULL };
			capsule_exec_options o = CAPSULE_EXEC_OPTIONS_INIT;
			o.argv = argv;
			capsule_exec_result r;
			if (capsule_exec(&r, own, &o, NULL, 0, 1 << 20, &err) < 0)
				_exit(12);
			int code = r.status.exit_code;
			capsule_exec_result_free(&r);
			if (code != 3 + round)
				_exit(13);
			void *data;
			size_t len;
			if (capsule_fs_read(own, path, &data, &len, 0, &err) < 0)
				_exit(14);
			if (len != n || memcmp(data, buf, n) != 0)
				_exit(15);
			free(data);
		}
		free(buf);
		capsule_sandbox_free(own);
		_exit(0);
	}
	wait_workers(pids, WORKERS);
	printf("ok concurrent\n");
}

/* Small file operations round trip after round trip, as bench/fs_rtt.c makes them: the
 * library and the shim poll a while for a small operation's next frame before they sleep,
 * and back off when the poll finds nothing (src/lib/client.c conn_spin, src/shim/shim.c
 * spin_wait). Whatever way a wait ends (the answer during the poll, after it, a poll that is
 * skipped), the bytes, the errors, a pause and the sandbox's end must be as without it. No
 * timing is asserted. */

/* ROUNDS write-then-read round trips of PATH on H, sizes varying around 4 KiB, each read
 * checked byte for byte; every 16th round also a read of a missing file and a write below a
 * regular file, whose errors must arrive as they are. */
static int round_trips(capsule_sandbox *h, const char *path, unsigned seed, int rounds, char *why, size_t whylen)
{
	uint8_t buf[8192];
	capsule_error err = { 0 };
	for (int i = 0; i < rounds; i++) {
		size_t n = 1 + ((size_t)i * 977 + seed) % sizeof(buf);
		if (i % 5 == 0)
			n = 4096;
		fill(buf, (uint64_t)(seed + (unsigned)i) * 8192, n);
		if (capsule_fs_write(h, path, buf, n, 0644, 0, &err) < 0) {
			snprintf(why, whylen, "write %s round %d: %s", path, i, err.message);
			return -1;
		}
		void *data = NULL;
		size_t len = 0;
		if (capsule_fs_read(h, path, &data, &len, 0, &err) < 0) {
			snprintf(why, whylen, "read %s round %d: %s", path, i, err.message);
			return -1;
		}
		int same = len == n && memcmp(data, buf, n) == 0;
		free(data);
		if (!same) {
			snprintf(why, whylen, "read %s round %d: %zu bytes back, %zu written, or other bytes", path, i, len, n);
			return -1;
		}
		if (i % 16 != 0)
			continue;
		if (capsule_fs_read(h, "/tmp/no-such-file-here", &data, &len, 0, &err) != -ENOENT ||
		    !strstr(err.message, "no-such-file-here")) {
			snprintf(why, whylen, "read of a missing file, round %d: '%s' (%d)", i, err.message, err.code);
			return -1;
		}
		char below[256];
		snprintf(below, sizeof(below), "%s/below", path);
		if (capsule_fs_write(h, below, "x", 1, 0, 0, &err) != -ENOTDIR) {
			snprintf(why, whylen, "write below a file, round %d: '%s' (%d)", i, err.message, err.code);
			return -1;
		}
	}
	return 0;
}

/* The same process on each CPU in turn, then free: on the shim's CPU a poll finds nothing
 * and backs off, on another it tends to find the answer. */
static void check_each_cpu(void)
{
	cpu_set_t all;
	CHECK(sched_getaffinity(0, sizeof(all), &all) == 0, "sched_getaffinity");
	char why[512];
	int placed = 0;
	for (int cpu = 0; cpu < CPU_SETSIZE && placed < 4; cpu++) {
		if (!CPU_ISSET(cpu, &all))
			continue;
		cpu_set_t one;
		CPU_ZERO(&one);
		CPU_SET(cpu, &one);
		CHECK(sched_setaffinity(0, sizeof(one), &one) == 0, "sched_setaffinity %d", cpu);
		CHECK(round_trips(sb, "/tmp/small-cpu", (unsigned)cpu, 300, why, sizeof(why)) == 0, "on CPU %d: %s", cpu,
		      why);
		placed++;
	}
	CHECK(sched_setaffinity(0, sizeof(all), &all) == 0, "sched_setaffinity back");
	CHECK(round_trips(sb, "/tmp/small-cpu", 99, 300, why, sizeof(why)) == 0, "unpinned: %s", why);
	printf("ok small-each-cpu %d\n", placed);
}

/* Eight clients at once, each its own handle (its own connection to the shim), so the
 * shim's poll after one client's answer finds the others' requests. */
static void check_concurrent_small(void)
{
	enum { WORKERS = 8 };
	pid_t pids[WORKERS];
	for (int w = 0; w < WORKERS; w++) {
		capsule_sandbox *own;
		if ((pids[w] = start_worker(&own)) > 0)
			continue;
		char path[64], why[512];
		snprintf(path, sizeof(path), "/tmp/small-worker-%d", w);
		if (round_trips(own, path, (unsigned)w * 1000, 150, why, sizeof(why)) < 0) {
			fprintf(stderr, "worker %d: %s\n", w, why);
			_exit(11);
		}
		capsule_sandbox_free(own);
		_exit(0);
	}
	wait_workers(pids, WORKERS);
	printf("ok small-concurrent\n");
}

/* A paused sandbox refuses small operations at once, in one line, and serves them again
 * after the resume (right after a run of round trips, so the shim was polling). */
static void check_paused(void)
{
	capsule_error err = { 0 };
	char why[512];
	CHECK(round_trips(sb, "/tmp/small-pause", 1, 20, why, sizeof(why)) == 0, "before the pause: %s", why);
	CHECK(capsule_sandbox_pause(sb, &err) == 0, "pause: %s", err.message);
	for (int i = 0; i < 3; i++) {
		CHECK(capsule_fs_write(sb, "/tmp/small-pause", "x", 1, 0, 0, &err) == -EBUSY && strstr(err.message, "paused"),
		      "write while paused: '%s' (%d)", err.message, err.code);
		void *data;
		size_t len;
		CHECK(capsule_fs_read(sb, "/tmp/small-pause", &data, &len, 0, &err) == -EBUSY,
		      "read while paused: '%s' (%d)", err.message, err.code);
	}
	CHECK(capsule_sandbox_resume(sb, &err) == 0, "resume: %s", err.message);
	CHECK(round_trips(sb, "/tmp/small-pause", 2, 20, why, sizeof(why)) == 0, "after the resume: %s", why);
	printf("ok small-paused\n");
}

/* The sandbox ends while a client makes round trips as fast as it can: each of its calls
 * returns (the last ones with an error), none waits for ever. */
static void check_end_while_busy(void)
{
	int ready[2];
	CHECK(pipe(ready) == 0, "pipe");
	pid_t pid = fork();
	CHECK(pid >= 0, "fork");
	if (pid == 0) {
		close(ready[0]);
		capsule_error err = { 0 };
		capsule_sandbox *own;
		if (capsule_sandbox_open(&own, capsule_sandbox_name(sb), &err) < 0)
			_exit(10);
		uint8_t buf[4096];
		fill(buf, 5, sizeof(buf));
		for (long i = 0;; i++) {
			if (i == 50 && write(ready[1], "r", 1) != 1)
				_exit(11);
			void *data = NULL;
			size_t len = 0;
			if (capsule_fs_write(own, "/tmp/small-end", buf, sizeof(buf), 0, 0, &err) < 0 ||
			    capsule_fs_read(own, "/tmp/small-end", &data, &len, 0, &err) < 0) {
				/* Before the 50th the sandbox was not asked to stop yet. */
				fprintf(stderr, "round %ld: %s (%d)\n", i, err.message, err.code);
				_exit(i >= 50 && err.code && err.message[0] ? 0 : 12);
			}
			if (len != sizeof(buf) || memcmp(data, buf, len) != 0)
				_exit(13);
			free(data);
		}
	}
	close(ready[1]);
	char c;
	CHECK(read(ready[0], &c, 1) == 1, "the busy client did not start");
	close(ready[0]);
	capsule_error err = { 0 };
	CHECK(capsule_sandbox_stop(sb, 2000, &err) == 0, "stop: %s", err.message);
	int st;
	CHECK(waitpid(pid, &st, 0) == pid, "waitpid");
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the busy client ended with status %d", st);
	printf("ok small-end-while-busy\n");
}

int main(void)
{
	capsule_error err = { 0 };
	capsule_config *cfg;
	CHECK(capsule_config_new(&cfg, &err) == 0, "config: %s", err.message);
	CHECK(capsule_sandbox_create(&sb, cfg, &err) == 0, "create: %s", err.message);
	capsule_config_free(cfg);
	check_stream_round_trip();
	check_read_limit();
	check_abandoned_write_keeps_old();
	check_abandoned_reads_leave_the_connection_usable();
	check_list_of_5000();
	check_errors();
	check_small_writes_in_one_send();
	check_killed_writer_keeps_old();
	check_direct_stream_is_used();
	check_direct_random_sizes();
	check_concurrent_streams_and_execs();
	check_each_cpu();
	check_concurrent_small();
	check_paused();
	check_end_while_busy(); /* the last: the sandbox ends */
	capsule_sandbox_free(sb);
	return 0;
}
