/* Exercises the C API end to end; tests/e2e/test_api.py runs it. Prints "ok NAME" per check
 * and exits non-zero at the first failure, saying what failed. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <capsule.h>

#include "check.h"

static capsule_sandbox *sb;

static void run_echo(const char *word)
{
	const char *argv[] = { "echo", word, NULL };
	capsule_exec_options o = CAPSULE_EXEC_OPTIONS_INIT;
	o.argv = argv;
	capsule_exec_result r;
	capsule_error err = { 0 };
	CHECK(capsule_exec(&r, sb, &o, NULL, 0, 1 << 20, &err) == 0, "exec echo %s: %s", word, err.message);
	char want[64];
	snprintf(want, sizeof(want), "%s\n", word);
	CHECK(strcmp(r.stdout_buf, want) == 0, "echo %s printed '%s'", word, r.stdout_buf);
	CHECK(r.status.exit_code == 0, "echo %s exited %d", word, r.status.exit_code);
	capsule_exec_result_free(&r);
}

static void *thread_main(void *arg)
{
	char word[32];
	for (int i = 0; i < 10; i++) {
		snprintf(word, sizeof(word), "t%ld-%d", (long)(intptr_t)arg, i);
		run_echo(word);
	}
	return NULL;
}

int main(void)
{
	capsule_error err = { 0 };
	capsule_config *cfg;
	CHECK(capsule_config_new(&cfg, &err) == 0, "config: %s", err.message);
	CHECK(capsule_config_set_memory(cfg, "12X", &err) == -EINVAL, "bad size accepted");
	CHECK(strstr(err.message, "'12X'") != NULL, "bad size message: %s", err.message);
	CHECK(capsule_sandbox_create(&sb, cfg, &err) == 0, "create: %s", err.message);
	capsule_config_free(cfg);
	printf("ok create\n");

	for (int i = 0; i < 30; i++) {
		char w[16];
		snprintf(w, sizeof(w), "seq%d", i);
		run_echo(w);
	}
	printf("ok sequential\n");

	/* A command freed while it still streams is killed, and the next one works. */
	const char *yes[] = { "yes", NULL };
	capsule_exec_options o = CAPSULE_EXEC_OPTIONS_INIT;
	o.argv = yes;
	capsule_process *p;
	CHECK(capsule_exec_start(&p, sb, &o, &err) == 0, "start yes: %s", err.message);
	char buf[4096];
	int stream;
	CHECK(capsule_process_read(p, &stream, buf, sizeof(buf), &err) > 0, "read yes: %s", err.message);
	capsule_process_free(p);
	run_echo("after-free");
	const char *ps[] = { "sh", "-c", "ps -e -o comm= | grep -c '^yes$' || true", NULL };
	o.argv = ps;
	capsule_exec_result r;
	CHECK(capsule_exec(&r, sb, &o, NULL, 0, 4096, &err) == 0, "ps: %s", err.message);
	CHECK(strcmp(r.stdout_buf, "0\n") == 0, "yes still running after free: '%s'", r.stdout_buf);
	capsule_exec_result_free(&r);
	printf("ok free-kills\n");

	/* stdin, and a command that writes before it has read everything. */
	static char big[3 << 20];
	memset(big, 'x', sizeof(big));
	const char *cat[] = { "cat", NULL };
	o.argv = cat;
	CHECK(capsule_exec(&r, sb, &o, big, sizeof(big), sizeof(big), &err) == 0, "cat: %s", err.message);
	CHECK(r.stdout_len == sizeof(big), "cat returned %zu bytes", r.stdout_len);
	capsule_exec_result_free(&r);
	printf("ok stdin\n");

	pthread_t t[6];
	for (long i = 0; i < 6; i++)
		pthread_create(&t[i], NULL, thread_main, (void *)(intptr_t)i);
	for (int i = 0; i < 6; i++)
		pthread_join(t[i], NULL);
	printf("ok threads\n");

	const char *none[] = { "no-such-command", NULL };
	o.argv = none;
	CHECK(capsule_exec_start(&p, sb, &o, &err) == -ENOENT, "missing command: %s", err.message);
	run_echo("after-error");
	printf("ok errors\n");

	CHECK(capsule_sandbox_stop(sb, 0, &err) == 0, "stop: %s", err.message);
	CHECK(!capsule_sandbox_is_running(sb), "still running after stop");
	capsule_sandbox_free(sb);
	printf("ok stop\n");
	return 0;
}
