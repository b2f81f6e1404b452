/* The transform hooks of the C API; tests/e2e/test_transform.py runs it with a host folder and
 * the demo plugin, writes through the mount and checks the host side itself. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <capsule.h>

#include "check.h"

int main(int argc, char **argv)
{
	CHECK(argc == 3, "usage: transform_api_check HOSTDIR PLUGIN");
	const char *host = argv[1], *plugin = argv[2];
	capsule_error err = { 0 };
	capsule_config *cfg;
	CHECK(capsule_config_new(&cfg, &err) == 0, "config: %s", err.message);
	/* A bad plugin leaves the configuration as it was: the same bind can be added after. */
	CHECK(capsule_config_add_bind_transform(cfg, host, "/mnt/t", false, "plugin.so", "k", &err) == -EINVAL,
	      "relative plugin accepted");
	CHECK(strstr(err.message, "'plugin.so' is not an absolute path") != NULL, "message: %s", err.message);
	CHECK(capsule_config_set_bind_transform(cfg, "/mnt/t", plugin, "k", &err) == -ENOENT,
	      "transform for a missing bind accepted");
	CHECK(capsule_config_add_bind_transform(cfg, host, "/mnt/t", false, plugin, "api-key", &err) == 0,
	      "add_bind_transform: %s", err.message);
	capsule_sandbox *sb;
	CHECK(capsule_sandbox_create(&sb, cfg, &err) == 0, "create: %s", err.message);
	capsule_config_free(cfg);
	capsule_exec_options o = CAPSULE_EXEC_OPTIONS_INIT;
	o.shell = "printf through-the-api > /mnt/t/api && cat /mnt/t/api";
	capsule_exec_result r;
	CHECK(capsule_exec(&r, sb, &o, NULL, 0, 1 << 20, &err) == 0, "exec: %s", err.message);
	CHECK(r.status.exit_code == 0 && !strcmp(r.stdout_buf, "through-the-api"), "exec printed '%s', exit %d: %s",
	      r.stdout_buf, r.status.exit_code, r.stderr_buf);
	capsule_exec_result_free(&r);
	CHECK(capsule_sandbox_stop(sb, 0, &err) == 0, "stop: %s", err.message);
	capsule_sandbox_free(sb);
	printf("ok transform-api\n");
	return 0;
}
