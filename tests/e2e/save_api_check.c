/* The saves C API end to end; tests/e2e/test_saves.py runs it with a name prefix as argv[1].
 * Prints "ok NAME" per check and exits non-zero at the first failure. */
#include <errno.h>
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
	if (capsule_fs_read(sb, path, &data, &len, 4096, &err) < 0)
		return NULL;
	char *s = malloc(len + 1);
	memcpy(s, data, len);
	s[len] = '\0';
	free(data);
	return s;
}

int main(int argc, char **argv)
{
	CHECK(argc == 2, "usage: save_api_check PREFIX");
	char save[64], fork_name[64];
	snprintf(save, sizeof(save), "%s-s", argv[1]);
	snprintf(fork_name, sizeof(fork_name), "%s-f", argv[1]);
	capsule_error err = { 0 };

	capsule_config *cfg;
	CHECK(capsule_config_new(&cfg, &err) == 0, "config: %s", err.message);
	CHECK(capsule_config_set_save(cfg, "../x", &err) == -EINVAL, "bad save name accepted");
	CHECK(strstr(err.message, "save name") != NULL, "message: %s", err.message);
	CHECK(capsule_config_set_save(cfg, save, &err) == 0, "set_save: %s", err.message);
	capsule_sandbox *sb;
	CHECK(capsule_sandbox_create(&sb, cfg, &err) == 0, "create: %s", err.message);
	CHECK(capsule_fs_write(sb, "/root/f", "one", 3, 0644, 0, &err) == 0, "write: %s", err.message);
	CHECK(capsule_checkpoint(sb, "c1", &err) == 0, "checkpoint: %s", err.message);
	CHECK(capsule_fs_write(sb, "/root/f", "two", 3, 0644, 0, &err) == 0, "write: %s", err.message);
	CHECK(capsule_revert(sb, "nosuch", &err) == -ENOENT, "revert to a missing checkpoint: %s", err.message);
	CHECK(capsule_revert(sb, "c1", &err) == 0, "revert: %s", err.message);
	char *f = read_file(sb, "/root/f");
	CHECK(f && !strcmp(f, "one"), "after revert: %s", f ? f : "(none)");
	free(f);
	puts("ok checkpoint-revert");

	capsule_sandbox *fork = NULL;
	CHECK(capsule_fork(sb, fork_name, &fork, &err) == 0, "fork: %s", err.message);
	CHECK(fork && !strcmp(capsule_sandbox_name(fork), fork_name), "fork handle");
	f = read_file(fork, "/root/f");
	CHECK(f && !strcmp(f, "one"), "in the fork: %s", f ? f : "(none)");
	free(f);
	CHECK(capsule_sandbox_stop(fork, 0, &err) == 0, "stop fork: %s", err.message);
	capsule_sandbox_free(fork);
	CHECK(capsule_sandbox_remove(fork_name, true, &err) == 0, "rm fork: %s", err.message);
	puts("ok fork");

	/* The stop saves (config_set_save); the sandbox is ephemeral and gone after it. */
	CHECK(capsule_sandbox_stop(sb, 0, &err) == 0, "stop: %s", err.message);
	capsule_sandbox_free(sb);
	char *json;
	CHECK(capsule_saves_json(&json, &err) == 0, "saves_json: %s", err.message);
	CHECK(strstr(json, save) != NULL, "listed: %s", json);
	free(json);
	CHECK(capsule_config_set_save(cfg, NULL, &err) == 0, "clear save: %s", err.message);
	CHECK(capsule_config_set_image(cfg, save, &err) == 0, "image: %s", err.message);
	CHECK(capsule_sandbox_create(&sb, cfg, &err) == 0, "create from save: %s", err.message);
	f = read_file(sb, "/root/f");
	CHECK(f && !strcmp(f, "one"), "from the save: %s", f ? f : "(none)");
	free(f);
	CHECK(capsule_save_remove(save, &err) == -EBUSY, "rm of a save in use: %s", err.message);
	capsule_sandbox_free(sb);
	puts("ok save-on-stop");

	CHECK(capsule_save_remove(save, &err) == 0, "rm: %s", err.message);
	CHECK(capsule_save_remove(save, &err) == -ENOENT, "rm twice: %s", err.message);
	CHECK(capsule_save_remove("a/b", &err) == -EINVAL, "bad name: %s", err.message);
	capsule_config_free(cfg);
	puts("ok remove");
	return 0;
}
