/* The hot mount C API and the docker-style volume helpers, end to end; test_hotmount.py runs it
 * with a host folder (holding a file "marker") as argv[1]. Prints "ok NAME" per check and exits
 * non-zero at the first failure, saying what failed. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <capsule.h>

#include "check.h"

static const char *dir;

static void expect_fail(int r, int code, const char *needle, const capsule_error *err, const char *what)
{
	CHECK(r == -code, "%s: returned %d, wanted %d (%s)", what, r, -code, err->message);
	CHECK(err->code == code && strstr(err->message, needle) && !strchr(err->message, '\n'),
	      "%s: message '%s' lacks '%s'", what, err->message, needle);
}

static char *run_cat(capsule_sandbox *sb, const char *path)
{
	const char *argv[] = { "cat", path, NULL };
	capsule_exec_options o = CAPSULE_EXEC_OPTIONS_INIT;
	o.argv = argv;
	capsule_exec_result r;
	capsule_error err = { 0 };
	CHECK(capsule_exec(&r, sb, &o, NULL, 0, 1 << 20, &err) == 0, "cat %s: %s", path, err.message);
	char *out = strdup(r.status.exit_code == 0 ? r.stdout_buf : "");
	capsule_exec_result_free(&r);
	return out;
}

static void check_config_helpers(capsule_config *cfg)
{
	capsule_error err = { 0 };
	char json[8192];

	/* Rejected documents add nothing, even when an earlier entry was fine. */
	snprintf(json, sizeof(json), "{\"%s\": {\"bind\": \"/mnt/first\"}, \"%s\": {\"bind\": \"/mnt/x\", \"mode\": \"rx\"}}",
		 dir, dir);
	expect_fail(capsule_config_add_volumes_json(cfg, json, &err), EINVAL, "invalid mode 'rx'", &err, "bad mode");
	expect_fail(capsule_config_add_volumes_json(cfg, "[1, 2]", &err), EINVAL, "not a JSON object", &err, "array");
	expect_fail(capsule_config_add_volumes_json(cfg, "{\"/tmp\": {\"bind\": ", &err), EINVAL, "not a JSON object", &err,
		    "truncated");
	snprintf(json, sizeof(json), "{\"%s\": \"/mnt/x\"}", dir);
	expect_fail(capsule_config_add_volumes_json(cfg, json, &err), EINVAL, "must be an object", &err, "string entry");
	snprintf(json, sizeof(json), "{\"%s\": {\"mode\": \"ro\"}}", dir);
	expect_fail(capsule_config_add_volumes_json(cfg, json, &err), EINVAL, "has no \"bind\"", &err, "no bind");
	/* A key that is not a path is a named volume (on a scratch config: this one is started). */
	capsule_config *scratch;
	CHECK(capsule_config_new(&scratch, &err) == 0, "config: %s", err.message);
	CHECK(capsule_config_add_volumes_json(scratch, "{\"pip-cache\": {\"bind\": \"/root/.cache\"}}", &err) == 0,
	      "volume name in a volumes dict: %s", err.message);
	CHECK(capsule_config_add_mount_spec(scratch, "cache:/x:ro", &err) == 0, "volume in a mount spec: %s", err.message);
	capsule_config_free(scratch);
	expect_fail(capsule_config_add_volumes_json(cfg, "{\"not a name!\": {\"bind\": \"/x\"}}", &err), EINVAL,
		    "neither an absolute host path nor a valid volume name", &err, "bad name");
	expect_fail(capsule_config_add_volumes_json(cfg, "{\"/etc\": {\"bind\": \"/x\"}}", &err), EACCES,
		    "sensitive host path", &err, "sensitive");
	expect_fail(capsule_config_add_mount_spec(cfg, "no-colon", &err), EINVAL, "expected SRC:DST", &err, "bad spec");

	snprintf(json, sizeof(json), "{\"%s\": {\"bind\": \"/mnt/ro\", \"mode\": \"ro\"}, \"%s/\": {\"bind\": \"/mnt/rw\"}}",
		 dir, dir);
	CHECK(capsule_config_add_volumes_json(cfg, json, &err) == 0, "volumes json: %s", err.message);
	char spec[4200];
	snprintf(spec, sizeof(spec), "%s:/mnt/spec:ro", dir);
	CHECK(capsule_config_add_mount_spec(cfg, spec, &err) == 0, "mount spec: %s", err.message);
	printf("ok config\n");
}

/* The JSON's text without its indentation (none of the paths here holds a space): the
 * checks below look for members side by side. */
static void squeeze(char *s)
{
	char *w = s;
	for (char *r = s; *r; r++)
		if (*r != ' ' && *r != '\n')
			*w++ = *r;
	*w = '\0';
}

int main(int argc, char **argv)
{
	CHECK(argc == 2, "usage: hotmount_api HOSTDIR");
	dir = argv[1];
	capsule_error err = { 0 };
	capsule_config *cfg;
	CHECK(capsule_config_new(&cfg, &err) == 0, "config: %s", err.message);
	check_config_helpers(cfg);

	capsule_sandbox *sb;
	CHECK(capsule_sandbox_create(&sb, cfg, &err) == 0, "create: %s", err.message);
	capsule_config_free(cfg);
	char *m = run_cat(sb, "/mnt/ro/marker");
	CHECK(!strcmp(m, "marker\n"), "/mnt/ro/marker read '%s'", m);
	free(m);
	char *list = NULL;
	CHECK(capsule_mounts_json(sb, &list, &err) == 0, "mounts: %s", err.message);
	squeeze(list);
	CHECK(strstr(list, "\"guest_path\":\"/mnt/ro\",\"readonly\":true") &&
		      strstr(list, "\"guest_path\":\"/mnt/rw\",\"readonly\":false") &&
		      strstr(list, "\"guest_path\":\"/mnt/spec\",\"readonly\":true") && !strstr(list, "/mnt/first"),
	      "boot mounts listed as %s", list);
	free(list);
	printf("ok boot\n");

	char *handle = NULL;
	CHECK(capsule_mount(sb, dir, "/mnt/hot", CAPSULE_MOUNT_RO, &handle, &err) == 0, "mount: %s", err.message);
	CHECK(handle && handle[0] == 'm', "handle '%s'", handle ? handle : "(null)");
	m = run_cat(sb, "/mnt/hot/marker");
	CHECK(!strcmp(m, "marker\n"), "/mnt/hot/marker read '%s'", m);
	free(m);
	CHECK(capsule_mounts_json(sb, &list, &err) == 0, "mounts: %s", err.message);
	squeeze(list);
	char want[128];
	snprintf(want, sizeof(want), "\"guest_path\":\"/mnt/hot\",\"readonly\":true,\"handle\":\"%s\",\"hot\":true", handle);
	CHECK(strstr(list, want), "hot mount listed as %s", list);
	free(list);
	expect_fail(capsule_mount(sb, "relative", "/mnt/x", 0, NULL, &err), EINVAL, "not an absolute host path", &err,
		    "relative");
	expect_fail(capsule_mount(sb, dir, "/mnt/x", 0x80, NULL, &err), EINVAL, "unknown flags", &err, "flags");
	expect_fail(capsule_mount(sb, "/etc", "/mnt/x", 0, NULL, &err), EACCES, "sensitive", &err, "sensitive");
	CHECK(capsule_unmount(sb, handle, &err) == 0, "unmount: %s", err.message);
	expect_fail(capsule_unmount(sb, handle, &err), ENOENT, "no hot mount with handle", &err, "unmount twice");
	free(handle);
	m = run_cat(sb, "/mnt/hot/marker");
	CHECK(!strcmp(m, ""), "/mnt/hot/marker still read '%s' after unmount", m);
	free(m);
	printf("ok hot\n");
	capsule_sandbox_free(sb);
	return 0;
}
