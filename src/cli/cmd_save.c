/* save, checkpoint, revert, fork, saves ls|rm: a sandbox's filesystem kept and started from. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "json.h"

/* VERB SANDBOX NAME: the shape of save, checkpoint, revert and fork. */
static int sandbox_and_name(const char *verb, const char *usage, int argc, char **argv, const char **sandbox,
			    const char **name)
{
	*sandbox = *name = NULL;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			printf("Usage: capsule %s\n", usage);
			exit(0);
		}
		if (argv[i][0] == '-')
			return cli_usage(verb, "unknown flag '%s'", argv[i]);
		if (!*sandbox)
			*sandbox = argv[i];
		else if (!*name)
			*name = argv[i];
		else
			return cli_usage(verb, "unexpected argument '%s'", argv[i]);
	}
	if (!*sandbox)
		return cli_usage(verb, "no sandbox given");
	if (!*name)
		return cli_usage(verb, "no %s name given", strcmp(verb, "fork") ? strcmp(verb, "save") ? "checkpoint" : "save"
									 : "new sandbox");
	return 0;
}

static int run_op(const char *verb, const char *usage, int argc, char **argv,
		  int (*op)(capsule_sandbox *, const char *, capsule_error *))
{
	const char *sandbox, *name;
	int r = sandbox_and_name(verb, usage, argc, argv, &sandbox, &name);
	if (r)
		return r;
	capsule_error err = { 0 };
	capsule_sandbox *sb;
	if (capsule_sandbox_open(&sb, sandbox, &err) < 0)
		return cli_fail(&err);
	cli_status_begin("%s '%s' %s '%s'", !strcmp(verb, "fork") ? "forking" : !strcmp(verb, "revert") ? "reverting" : "saving",
			 sandbox, !strcmp(verb, "fork") ? "as" : !strcmp(verb, "revert") ? "to" : "as", name);
	r = op(sb, name, &err);
	cli_status_end();
	capsule_sandbox_free(sb);
	if (r < 0)
		return cli_fail(&err);
	printf("%s\n", name);
	return 0;
}

int cmd_save(int argc, char **argv)
{
	return run_op("save", "save SANDBOX NAME\n\nSave the sandbox's filesystem now as NAME (its processes are\n"
			      "frozen for the copy). Start from it with 'capsule run --image NAME'.",
		      argc, argv, capsule_save);
}

int cmd_checkpoint(int argc, char **argv)
{
	return run_op("checkpoint", "checkpoint SANDBOX NAME\n\nKeep the sandbox's filesystem as checkpoint NAME,\n"
				    "for as long as the sandbox exists ('capsule revert' goes back to it).",
		      argc, argv, capsule_checkpoint);
}

int cmd_revert(int argc, char **argv)
{
	return run_op("revert", "revert SANDBOX NAME\n\nPut the sandbox's filesystem back to checkpoint NAME. A running\n"
				"sandbox restarts: its processes are killed, hot mounts dropped.",
		      argc, argv, capsule_revert);
}

static int fork_op(capsule_sandbox *sb, const char *name, capsule_error *err)
{
	return capsule_fork(sb, name, NULL, err);
}

int cmd_fork(int argc, char **argv)
{
	return run_op("fork", "fork SANDBOX NEW\n\nStart sandbox NEW (named, running until stopped) from SANDBOX's\n"
			      "configuration and current filesystem; SANDBOX goes on.",
		      argc, argv, fork_op);
}

static void saves_help(void)
{
	printf("Usage: capsule saves COMMAND\n\n"
	       "Saves are sandboxes' filesystems kept by name ('capsule run --save NAME',\n"
	       "'capsule save SANDBOX NAME'); start from one with '--image NAME'.\n\n"
	       "Commands:\n"
	       "  ls [--json]    list saves, with the chain each is on and sizes\n"
	       "  rm NAME...     remove (refused while a save or a sandbox depends on it)\n");
}

static void human_size(uint64_t b, char *out, size_t n)
{
	static const char units[] = "BKMGT";
	double v = (double)b;
	int u = 0;
	while (v >= 1024 && u < 4) {
		v /= 1024;
		u++;
	}
	snprintf(out, n, u ? "%.1f%c" : "%.0f%c", v, units[u]);
}

static int chain_part(const char *name, const char *value, size_t len, void *payload)
{
	(void)name;
	char **chain = payload;
	char *s = NULL;
	if (json_string_value(value, len, &s) < 0 || !s)
		return 0;
	char *joined = NULL;
	if (asprintf(&joined, "%s%s%s", *chain ? *chain : "", *chain ? " > " : "", s) < 0)
		joined = NULL;
	free(s);
	free(*chain);
	*chain = joined;
	return 0;
}

static int ls_row(const char *name, const char *value, size_t len, void *payload)
{
	(void)name;
	(void)payload;
	char *save = NULL, *chain = NULL;
	int64_t size = 0, chain_size = 0, created = 0;
	json_get_string(value, len, "name", &save);
	json_get_int(value, len, "size", &size);
	json_get_int(value, len, "chain_size", &chain_size);
	json_get_int(value, len, "created", &created);
	const char *chain_json;
	size_t chain_len;
	if (json_get_member(value, len, "chain", &chain_json, &chain_len) == 0)
		json_array_each(chain_json, chain_len, 256, chain_part, &chain);
	char sz[16], csz[16], when[32];
	human_size((uint64_t)size, sz, sizeof(sz));
	human_size((uint64_t)chain_size, csz, sizeof(csz));
	time_t t = (time_t)created;
	struct tm tm;
	strftime(when, sizeof(when), "%Y-%m-%d %H:%M", localtime_r(&t, &tm));
	printf("%-24s %-8s %-8s %-17s %s\n", save ? save : "?", sz, csz, when, chain ? chain : "");
	free(save);
	free(chain);
	return 0;
}

static int saves_ls(int argc, char **argv)
{
	bool json = false;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json"))
			json = true;
		else if (!strcmp(argv[i], "--help"))
			return printf("Usage: capsule saves ls [--json]\n"), 0;
		else
			return cli_usage("saves ls", "unknown %s '%s'", argv[i][0] == '-' ? "flag" : "argument", argv[i]);
	}
	capsule_error err = { 0 };
	char *text;
	if (capsule_saves_json(&text, &err) < 0)
		return cli_fail(&err);
	if (json) {
		printf("%s\n", text);
	} else {
		printf("%-24s %-8s %-8s %-17s %s\n", "NAME", "SIZE", "CHAIN", "CREATED", "FROM");
		json_array_each(text, strlen(text), 1u << 20, ls_row, NULL);
	}
	free(text);
	return 0;
}

static int saves_rm(int argc, char **argv)
{
	int n = 0, rc = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--help"))
			return printf("Usage: capsule saves rm NAME...\n"), 0;
		if (argv[i][0] == '-')
			return cli_usage("saves rm", "unknown flag '%s'", argv[i]);
	}
	for (int i = 1; i < argc; i++) {
		n++;
		capsule_error err = { 0 };
		if (capsule_save_remove(argv[i], &err) < 0)
			rc = cli_fail(&err);
		else
			printf("%s\n", argv[i]);
	}
	if (!n)
		return cli_usage("saves rm", "no save name given");
	return rc;
}

int cmd_saves(int argc, char **argv)
{
	if (argc < 2)
		return cli_usage("saves", "no command given");
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		saves_help();
		return 0;
	}
	if (!strcmp(argv[1], "ls") || !strcmp(argv[1], "list"))
		return saves_ls(argc - 1, argv + 1);
	if (!strcmp(argv[1], "rm") || !strcmp(argv[1], "remove")) {
#ifdef CAPSULE_CLI_IMAGES_HELPER
		/* Removing a save may free image layers only it kept: the image store's code, which
		 * the static CLI does not have, collects them. */
		return cli_images_helper(argv - 1);
#endif
		return saves_rm(argc - 1, argv + 1);
	}
	return cli_usage("saves", "unknown command '%s'", argv[1]);
}
