/* sdk_exec: the C side of bench/sdk, built as a shared object and called once per round, so
 * that the C API and the Python SDK run interleaved on the same sandbox in one process.
 *
 * bench_c_exec_true(sb) runs /bin/true in SB with capsule_exec() (exactly what
 * bench/exec_rtt.c times) and returns the nanoseconds it took, measured here, in C, so the
 * cost of calling this function from Python is not counted against the C API. Negative on
 * failure. */
#define _GNU_SOURCE
#include <stdint.h>
#include <time.h>

#include "capsule.h"

int64_t bench_c_exec_true(capsule_sandbox *sb);

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t bench_c_exec_true(capsule_sandbox *sb)
{
	static const char *const argv[] = {"/bin/true", NULL};
	capsule_exec_options o = CAPSULE_EXEC_OPTIONS_INIT;
	o.argv = argv;
	capsule_exec_result res;
	int64_t t0 = now_ns();
	int r = capsule_exec(&res, sb, &o, NULL, 0, 4096, NULL);
	int64_t t = now_ns() - t0;
	if (r < 0)
		return r;
	int code = res.status.exit_code;
	capsule_exec_result_free(&res);
	return code == 0 ? t : -1;
}
