/* An ephemeral sandbox with a disk of its own, kept by capsule_sandbox_stop_keep and started
 * again: its volatile overlay left work/work/incompat/volatile on the disk, which would refuse
 * the second mount. tests/e2e/test_volatile_layer.py runs it with the sandbox's name as argv[1].
 * Prints "ok NAME" per check and exits non-zero at the first failure. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <capsule.h>

#include "check.h"

static char *read_file(capsule_sandbox *sb, const char *path)
{
	void *data = NULL;
	size_t len = 0;
	capsule_error err = { 0 };
	CHECK(capsule_fs_read(sb, path, &data, &len, 1 << 20, &err) == 0, "read '%s': %s", path, err.message);
	char *s = malloc(len + 1);
	CHECK(s, "malloc");
	memcpy(s, data, len);
	s[len] = '\0';
	free(data);
	return s;
}

/* The root's line of the agent's mountinfo: its super options say whether it is volatile. */
static void check_root_volatile(capsule_sandbox *sb, const char *when)
{
	char *info = read_file(sb, "/proc/self/mountinfo");
	char *line = strstr(info, " / / ");
	CHECK(line, "%s: no root in mountinfo:\n%s", when, info);
	char *end = strchr(line, '\n');
	if (end)
		*end = '\0';
	CHECK(strstr(line, " - overlay ") && strstr(line, "volatile"), "%s: the root is not a volatile overlay: %s", when,
	      line);
	free(info);
}

int main(int argc, char **argv)
{
	CHECK(argc == 2, "usage: volatile_check NAME");
	capsule_error err = { 0 };
	capsule_config *cfg;
	CHECK(capsule_config_new(&cfg, &err) == 0, "config: %s", err.message);
	CHECK(capsule_config_set_name(cfg, argv[1], &err) == 0, "name: %s", err.message);
	CHECK(capsule_config_set_disk_size(cfg, "64M", &err) == 0, "disk size: %s", err.message);
	capsule_sandbox *sb;
	CHECK(capsule_sandbox_create(&sb, cfg, &err) == 0, "create: %s", err.message);
	capsule_config_free(cfg);
	check_root_volatile(sb, "first start");
	CHECK(capsule_fs_write(sb, "/root/f", "kept", 4, 0644, 0, &err) == 0, "write: %s", err.message);
	puts("ok volatile");

	CHECK(capsule_sandbox_stop_keep(sb, 0, &err) == 0, "stop_keep: %s", err.message);
	CHECK(capsule_sandbox_start(sb, &err) == 0, "start again: %s", err.message);
	check_root_volatile(sb, "second start");
	char *f = read_file(sb, "/root/f");
	CHECK(!strcmp(f, "kept"), "after the start again: '%s'", f);
	free(f);
	puts("ok restart");

	capsule_sandbox_free(sb);
	return 0;
}
