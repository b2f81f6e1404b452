/* The smallest libcapsule program: a sandbox, one command, its output, its exit code.
 *   cc hello.c -lcapsule && ./a.out */
#include <stdio.h>

#include <capsule.h>

int main(void)
{
	capsule_error err = { 0 };
	capsule_config *cfg = NULL;
	capsule_sandbox *sb = NULL;
	if (capsule_config_new(&cfg, &err) < 0 || capsule_config_set_memory(cfg, "256M", &err) < 0 ||
	    capsule_sandbox_create(&sb, cfg, &err) < 0) {
		fprintf(stderr, "hello: %s\n", err.message);
		capsule_config_free(cfg);
		return 1;
	}
	capsule_config_free(cfg);

	const char *argv[] = { "uname", "-a", NULL };
	capsule_exec_options opts = CAPSULE_EXEC_OPTIONS_INIT;
	opts.argv = argv;
	capsule_exec_result res;
	if (capsule_exec(&res, sb, &opts, NULL, 0, 1 << 20, &err) < 0) {
		fprintf(stderr, "hello: %s\n", err.message);
		capsule_sandbox_free(sb);
		return 1;
	}
	printf("sandbox %s says: %s", capsule_sandbox_name(sb), res.stdout_buf);
	printf("exit code %d\n", res.status.exit_code);
	capsule_exec_result_free(&res);
	capsule_sandbox_stop(sb, 0, NULL);
	capsule_sandbox_free(sb);
	return 0;
}
