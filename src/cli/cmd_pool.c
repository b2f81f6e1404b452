/* pool create|ls|rm: warm pools of ready sandboxes (take one with `run --pool NAME`). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "json.h"
#include "parse.h"
#include "run_opts.h"
#include "util.h"

static void pool_help(void)
{
	printf("Usage: capsule pool COMMAND\n\n"
	       "A pool keeps sandboxes started and ready, so that 'capsule run --pool NAME' and\n"
	       "'capsule create --pool NAME' take one at once instead of starting one. Each take\n"
	       "gets a fresh sandbox, and the pool starts another in the background.\n\n"
	       "Commands:\n"
	       "  create NAME --size N [OPTIONS]   keep N sandboxes ready (1 to %u), made with\n"
	       "                                   the options of 'capsule create'\n"
	       "  ls [--json] [-q]                 list pools: size, ready, options\n"
	       "  rm NAME...                       stop a pool's ready sandboxes and remove it\n",
	       CAPSULE_POOL_SIZE_MAX);
}

/* NAME, then --size N anywhere among the create options (taken out before they are read). */
static int pool_create(int argc, char **argv)
{
	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		if (argc < 2)
			return cli_usage("pool create", "no pool name given");
		char *help[] = { (char *)"pool create", (char *)"--help", NULL };
		struct sandbox_cli sbc = { 0 };
		return run_opts_parse("pool create", 2, help, &sbc, NULL);
	}
	if (argv[1][0] == '-')
		return cli_usage("pool create", "the pool's name comes first, before '%s'", argv[1]);
	const char *name = argv[1];
	const char *size_text = NULL;
	char **rest = calloc((size_t)argc + 1, sizeof(char *));
	if (!rest)
		return cli_failf("out of memory");
	int n = 0;
	rest[n++] = (char *)"pool create";
	for (int i = 2; i < argc; i++) {
		if (!strcmp(argv[i], "--size")) {
			if (i + 1 >= argc) {
				free(rest);
				return cli_usage("pool create", "flag '--size' needs a value");
			}
			size_text = argv[++i];
		} else if (!strncmp(argv[i], "--size=", 7)) {
			size_text = argv[i] + 7;
		} else {
			rest[n++] = argv[i];
		}
	}
	capsule_error err = { 0 };
	uint64_t size = 0;
	if (!size_text) {
		free(rest);
		return cli_usage("pool create", "no --size given");
	}
	if (parse_uint(size_text, "pool size", 1, CAPSULE_POOL_SIZE_MAX, &size, &err) < 0) {
		free(rest);
		return cli_fail(&err);
	}
	struct sandbox_cli sbc = { 0 };
	if (capsule_config_new(&sbc.cfg, &err) < 0) {
		free(rest);
		return cli_fail(&err);
	}
	int r = run_opts_parse("pool create", n, rest, &sbc, NULL);
	if (r == 0 && optind < n)
		r = cli_usage("pool create", "unexpected argument '%s'", rest[optind]);
	free(rest);
	if (r) {
		capsule_config_free(sbc.cfg);
		return r;
	}
	cli_status_begin("starting pool '%s'", name);
	r = capsule_pool_create(name, sbc.cfg, (uint32_t)size, &err);
	cli_status_end();
	capsule_config_free(sbc.cfg);
	if (r < 0)
		return cli_fail(&err);
	printf("%s\n", name);
	return 0;
}

struct ls_row {
	bool quiet;
};

static int ls_one(const char *key, const char *value, size_t len, void *payload)
{
	(void)key;
	struct ls_row *row = payload;
	_cleanup_free_ char *name = NULL, *iso = NULL, *image = NULL;
	int64_t size = 0, ready = 0;
	bool keeper = false;
	const char *opts = NULL;
	size_t olen = 0;
	if (json_get_string(value, len, "name", &name) < 0)
		return 0;
	if (row->quiet) {
		printf("%s\n", name);
		return 0;
	}
	json_get_int(value, len, "size", &size);
	json_get_int(value, len, "ready", &ready);
	json_get_bool(value, len, "keeper", &keeper);
	if (json_get_member(value, len, "options", &opts, &olen) == 0) {
		json_get_string(opts, olen, "isolation", &iso);
		json_get_string(opts, olen, "image", &image);
	}
	char counts[32];
	snprintf(counts, sizeof(counts), "%lld/%lld", (long long)ready, (long long)size);
	printf("%-24s %-8s %-7s %-10s %s\n", name, counts, keeper ? "yes" : "no (gone)", iso ? iso : "container",
	       image ? image : "host");
	return 0;
}

static int pool_ls(int argc, char **argv)
{
	bool json = false;
	struct ls_row row = { 0 };
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json"))
			json = true;
		else if (!strcmp(argv[i], "-q") || !strcmp(argv[i], "--quiet"))
			row.quiet = true;
		else if (!strcmp(argv[i], "--help"))
			return printf("Usage: capsule pool ls [--json] [-q]\n\n"
				      "READY is how many sandboxes wait to be taken, of the pool's size; KEEPER says\n"
				      "whether the process that refills it runs (after a crash: 'capsule pool rm').\n"),
			       0;
		else
			return cli_usage("pool ls", "unknown flag '%s'", argv[i]);
	}
	capsule_error err = { 0 };
	_cleanup_free_ char *text = NULL;
	if (capsule_pool_list_json(&text, &err) < 0)
		return cli_fail(&err);
	if (json) {
		printf("%s\n", text);
		return 0;
	}
	if (!row.quiet)
		printf("%-24s %-8s %-7s %-10s %s\n", "NAME", "READY", "KEEPER", "ISOLATION", "IMAGE");
	json_array_each(text, strlen(text), CAPSULE_POOLS_MAX, ls_one, &row);
	return 0;
}

static int pool_rm(int argc, char **argv)
{
	if (argc > 1 && !strcmp(argv[1], "--help"))
		return printf("Usage: capsule pool rm NAME...\n\n"
			      "Stop each pool's ready sandboxes and remove it; prints each name. Sandboxes\n"
			      "taken from it are not touched.\n"),
		       0;
	if (argc < 2)
		return cli_usage("pool rm", "no pool given");
	int code = 0;
	for (int i = 1; i < argc; i++) {
		if (argv[i][0] == '-')
			return cli_usage("pool rm", "unknown flag '%s'", argv[i]);
		capsule_error err = { 0 };
		if (capsule_pool_remove(argv[i], &err) < 0)
			code = cli_fail(&err);
		else
			printf("%s\n", argv[i]);
	}
	return code;
}

int cmd_pool(int argc, char **argv)
{
	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		pool_help();
		return argc < 2 ? EXIT_CAPSULE : 0;
	}
	if (!strcmp(argv[1], "create"))
		return pool_create(argc - 1, argv + 1);
	if (!strcmp(argv[1], "ls") || !strcmp(argv[1], "list"))
		return pool_ls(argc - 1, argv + 1);
	if (!strcmp(argv[1], "rm") || !strcmp(argv[1], "remove"))
		return pool_rm(argc - 1, argv + 1);
	return cli_usage("pool", "unknown command '%s' (create, ls, rm)", argv[1]);
}
