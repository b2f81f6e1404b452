/* Small file operations round trip after round trip, as bench/fs_rtt.c makes them: the
 * library and the shim poll a while for a small operation's next frame before they sleep,
 * and back off when the poll finds nothing (src/lib/client.c conn_spin, src/shim/shim.c
 * spin_wait). Whatever way a wait ends (the answer during the poll, after it, a poll that is
 * skipped), the bytes, the errors, a pause and the sandbox's end must be as without it.
 * tests/e2e/test_fs_small.py runs it; prints "ok NAME" per check, exits non-zero at the
 * first failure. No timing is asserted. */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <capsule.h>

#include "check.h"

static capsule_sandbox *sb;

static void fill(uint8_t *buf, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		buf[i] = (uint8_t)(i * 131 + seed * 7 + (i >> 8));
}

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
		fill(buf, n, seed + (unsigned)i);
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
	printf("ok each-cpu %d\n", placed);
}

/* Eight clients at once, each its own handle (its own connection to the shim), so the
 * shim's poll after one client's answer finds the others' requests. */
static void check_concurrent(void)
{
	enum { WORKERS = 8 };
	pid_t pids[WORKERS];
	for (int w = 0; w < WORKERS; w++) {
		pids[w] = fork();
		CHECK(pids[w] >= 0, "fork");
		if (pids[w] > 0)
			continue;
		capsule_error err = { 0 };
		capsule_sandbox *own;
		if (capsule_sandbox_open(&own, capsule_sandbox_name(sb), &err) < 0) {
			fprintf(stderr, "worker %d: open: %s\n", w, err.message);
			_exit(10);
		}
		char path[64], why[512];
		snprintf(path, sizeof(path), "/tmp/small-worker-%d", w);
		if (round_trips(own, path, (unsigned)w * 1000, 150, why, sizeof(why)) < 0) {
			fprintf(stderr, "worker %d: %s\n", w, why);
			_exit(11);
		}
		capsule_sandbox_free(own);
		_exit(0);
	}
	for (int w = 0; w < WORKERS; w++) {
		int st;
		CHECK(waitpid(pids[w], &st, 0) == pids[w], "waitpid");
		CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "worker %d failed (status %d)", w, st);
	}
	printf("ok concurrent\n");
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
	printf("ok paused\n");
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
		fill(buf, sizeof(buf), 5);
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
	printf("ok end-while-busy\n");
}

int main(void)
{
	capsule_error err = { 0 };
	capsule_config *cfg;
	CHECK(capsule_config_new(&cfg, &err) == 0, "config: %s", err.message);
	CHECK(capsule_sandbox_create(&sb, cfg, &err) == 0, "create: %s", err.message);
	capsule_config_free(cfg);
	check_each_cpu();
	check_concurrent();
	check_paused();
	check_end_while_busy();
	capsule_sandbox_free(sb);
	return 0;
}
