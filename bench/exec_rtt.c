/* exec_rtt: the C API's figures for bench/run.
 *
 *   exec_rtt NAME [N] [COLD]
 *
 * 1. Creates the sandbox NAME with capsule_sandbox_create (ephemeral, default image), then
 *    times N (default 500) capsule_exec() of /bin/true, alternating each one with a bare
 *    posix_spawn() + waitpid() of /bin/true on the host, so that machine noise falls on both.
 * 2. Times COLD (default 30) API cold starts: capsule_sandbox_create (unnamed) + capsule_exec
 *    of /bin/true + capsule_sandbox_free, i.e. `capsule run -- /bin/true` without the CLI.
 *
 * Prints one "key value" line per figure (microseconds) for bench/run to parse. Exit status 0
 * only when every exec succeeded with exit code 0. The sandbox NAME is removed before exit;
 * bench/run also removes it by name in case this program is killed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "capsule.h"
#include "timing.h"

extern char **environ;

static double mean_us(const uint64_t *v, size_t n)
{
	double s = 0;
	for (size_t i = 0; i < n; i++)
		s += (double)v[i];
	return s / (double)n / 1000.0;
}

static void report(const char *key, uint64_t *v, size_t n)
{
	qsort(v, n, sizeof(*v), cmp_u64);
	printf("%s_p50_us %.1f\n", key, pct_us(v, n, 50));
	printf("%s_p99_us %.1f\n", key, pct_us(v, n, 99));
	printf("%s_mean_us %.1f\n", key, mean_us(v, n));
	printf("%s_min_us %.1f\n", key, (double)v[0] / 1000.0);
	printf("%s_n %zu\n", key, n);
}

static int bare_spawn(void)
{
	static char *const argv[] = {"/bin/true", NULL};
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
	pid_t pid;
	int r = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (r != 0)
		return -r;
	int st;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -errno;
	return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

static int run_true(capsule_sandbox *sb, capsule_error *err)
{
	static const char *const argv[] = {"/bin/true", NULL};
	capsule_exec_options o = CAPSULE_EXEC_OPTIONS_INIT;
	o.argv = argv;
	capsule_exec_result res;
	int r = capsule_exec(&res, sb, &o, NULL, 0, 4096, err);
	if (r < 0)
		return r;
	int code = res.status.exit_code;
	capsule_exec_result_free(&res);
	if (code != 0) {
		snprintf(err->message, sizeof(err->message), "/bin/true exited %d", code);
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: exec_rtt NAME [N] [COLD]\n");
		return 2;
	}
	const char *name = argv[1];
	size_t n = argc > 2 ? strtoul(argv[2], NULL, 10) : 500;
	size_t cold = argc > 3 ? strtoul(argv[3], NULL, 10) : 30;
	if (n < 1)
		n = 1;

	uint64_t *api = calloc(n, sizeof(*api)), *bare = calloc(n, sizeof(*bare));
	uint64_t *cs = calloc(cold ? cold : 1, sizeof(*cs));
	if (!api || !bare || !cs)
		return 1;

	int rc = 0;
	capsule_error err;
	capsule_error_clear(&err);
	capsule_config *cfg = NULL;
	capsule_sandbox *sb = NULL;
	if (capsule_config_new(&cfg, &err) < 0 || capsule_config_set_name(cfg, name, &err) < 0) {
		fprintf(stderr, "exec_rtt: config: %s\n", err.message);
		return 1;
	}
	uint64_t t0 = now_ns();
	if (capsule_sandbox_create(&sb, cfg, &err) < 0) {
		fprintf(stderr, "exec_rtt: create: %s\n", err.message);
		capsule_config_free(cfg);
		return 1;
	}
	printf("create_named_us %.1f\n", (double)(now_ns() - t0) / 1000.0);
	capsule_config_free(cfg);

	/* Warm-up: the first few execs fault in the agent's and the library's pages. */
	for (int i = 0; i < 5; i++) {
		if (run_true(sb, &err) < 0) {
			fprintf(stderr, "exec_rtt: warm-up exec: %s\n", err.message);
			rc = 1;
			goto out;
		}
		bare_spawn();
	}
	size_t fails = 0;
	for (size_t i = 0; i < n; i++) {
		uint64_t a = now_ns();
		if (run_true(sb, &err) < 0) {
			if (fails++ == 0)
				fprintf(stderr, "exec_rtt: exec %zu: %s\n", i, err.message);
		}
		uint64_t b = now_ns();
		if (bare_spawn() < 0)
			fails++;
		uint64_t c = now_ns();
		api[i] = b - a;
		bare[i] = c - b;
	}
	printf("exec_failures %zu\n", fails);
	if (fails)
		rc = 1;
	report("api_exec", api, n);
	report("bare_spawn", bare, n);

out:
	t0 = now_ns();
	capsule_sandbox_free(sb);
	capsule_error_clear(&err);
	capsule_sandbox_remove(name, true, &err); /* named: may stay stopped after free */
	printf("free_remove_named_us %.1f\n", (double)(now_ns() - t0) / 1000.0);
	if (rc)
		return rc;

	/* API cold start: create (generated name, ephemeral) + exec + free. */
	size_t cold_fail = 0, got = 0;
	for (size_t i = 0; i < cold; i++) {
		capsule_config *c = NULL;
		capsule_sandbox *s = NULL;
		capsule_error_clear(&err);
		uint64_t a = now_ns();
		if (capsule_config_new(&c, &err) < 0 || capsule_sandbox_create(&s, c, &err) < 0) {
			if (cold_fail++ == 0)
				fprintf(stderr, "exec_rtt: cold create %zu: %s\n", i, err.message);
			capsule_config_free(c);
			continue;
		}
		if (run_true(s, &err) < 0 && cold_fail++ == 0)
			fprintf(stderr, "exec_rtt: cold exec %zu: %s\n", i, err.message);
		capsule_sandbox_free(s);
		capsule_config_free(c);
		cs[got++] = now_ns() - a;
	}
	printf("cold_failures %zu\n", cold_fail);
	if (got)
		report("api_cold", cs, got);
	return cold_fail ? 1 : 0;
}
