/* volume create|ls|inspect|rm|write|read: named volumes, apart from any sandbox. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "parse.h"

static void volume_help(void)
{
	printf("Usage: capsule volume COMMAND\n\n"
	       "Named volumes live apart from sandboxes until removed; mount one with\n"
	       "'capsule run -v NAME:/path[:ro]' (a missing one is created then, without a quota).\n\n"
	       "Commands:\n"
	       "  create NAME [--quota SIZE]   a folder, or with a quota an ext4 image of SIZE (min 8M)\n"
	       "  ls [--json]                  list volumes\n"
	       "  inspect NAME                 details as JSON\n"
	       "  rm NAME...                   remove (refused while a running sandbox uses it)\n"
	       "  write NAME PATH              write stdin to PATH in the volume (host side)\n"
	       "  read NAME PATH               print PATH in the volume to stdout (host side)\n");
}

static void format_quota(uint64_t b, char *out, size_t n)
{
	static const char units[] = "BKMGT";
	int u = 0;
	if (!b) {
		snprintf(out, n, "-");
		return;
	}
	while (u < 4 && b % 1024 == 0 && b >= 1024) {
		b /= 1024;
		u++;
	}
	snprintf(out, n, "%" PRIu64 "%c", b, units[u]);
}

static int volume_create(int argc, char **argv)
{
	const char *name = NULL, *quota = NULL;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--quota") || !strcmp(argv[i], "-q")) {
			if (i + 1 >= argc)
				return cli_usage("volume create", "flag '%s' needs a value", argv[i]);
			quota = argv[++i];
		} else if (!strncmp(argv[i], "--quota=", 8)) {
			quota = argv[i] + 8;
		} else if (!strcmp(argv[i], "--help")) {
			return printf("Usage: capsule volume create NAME [--quota SIZE]\n"), 0;
		} else if (argv[i][0] == '-') {
			return cli_usage("volume create", "unknown flag '%s'", argv[i]);
		} else if (name) {
			return cli_usage("volume create", "unexpected argument '%s'", argv[i]);
		} else {
			name = argv[i];
		}
	}
	if (!name)
		return cli_usage("volume create", "no volume name given");
	capsule_error err = { 0 };
	uint64_t bytes = 0;
	if (quota) {
		if (parse_size(quota, &bytes, &err) < 0)
			return cli_fail(&err);
		if (bytes == 0)
			return cli_failf("invalid quota '%s': must be more than 0 (leave --quota out for none)", quota);
	}
	if (capsule_volume_create(name, bytes, &err) < 0)
		return cli_fail(&err);
	printf("%s\n", name);
	return 0;
}

static int volume_ls(int argc, char **argv)
{
	bool json = false, quiet = false;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json"))
			json = true;
		else if (!strcmp(argv[i], "-q") || !strcmp(argv[i], "--quiet"))
			quiet = true;
		else if (!strcmp(argv[i], "--help"))
			return printf("Usage: capsule volume ls [--json] [-q]\n"), 0;
		else
			return cli_usage("volume ls", "unknown flag '%s'", argv[i]);
	}
	capsule_error err = { 0 };
	if (json) {
		char *text;
		if (capsule_volume_list_json(&text, &err) < 0)
			return cli_fail(&err);
		printf("%s\n", text);
		free(text);
		return 0;
	}
	capsule_volume_info *v;
	size_t n;
	if (capsule_volume_list(&v, &n, &err) < 0)
		return cli_fail(&err);
	if (!quiet)
		printf("%-32s %-7s %-8s %s\n", "NAME", "KIND", "QUOTA", "IN USE");
	for (size_t i = 0; i < n; i++) {
		if (quiet) {
			printf("%s\n", v[i].name);
			continue;
		}
		char q[32];
		format_quota(v[i].quota_bytes, q, sizeof(q));
		printf("%-32s %-7s %-8s %s\n", v[i].name, v[i].kind, q, v[i].in_use ? "yes" : "no");
	}
	free(v);
	return 0;
}

static int volume_inspect(int argc, char **argv)
{
	const char *name = NULL;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json"))
			continue; /* always JSON */
		if (!strcmp(argv[i], "--help"))
			return printf("Usage: capsule volume inspect NAME\n"), 0;
		if (argv[i][0] == '-')
			return cli_usage("volume inspect", "unknown flag '%s'", argv[i]);
		if (name)
			return cli_usage("volume inspect", "unexpected argument '%s'", argv[i]);
		name = argv[i];
	}
	if (!name)
		return cli_usage("volume inspect", "no volume name given");
	capsule_error err = { 0 };
	char *text;
	if (capsule_volume_inspect_json(&text, name, &err) < 0)
		return cli_fail(&err);
	printf("%s\n", text);
	free(text);
	return 0;
}

static int volume_rm(int argc, char **argv)
{
	int n = 0, rc = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--help"))
			return printf("Usage: capsule volume rm NAME...\n"), 0;
		if (argv[i][0] == '-')
			return cli_usage("volume rm", "unknown flag '%s'", argv[i]);
	}
	for (int i = 1; i < argc; i++) {
		n++;
		capsule_error err = { 0 };
		if (capsule_volume_remove(argv[i], &err) < 0)
			rc = cli_fail(&err);
		else
			printf("%s\n", argv[i]);
	}
	if (!n)
		return cli_usage("volume rm", "no volume name given");
	return rc;
}

static int volume_io(const char *verb, int argc, char **argv, bool write)
{
	const char *args[2] = { NULL, NULL };
	int na = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--help"))
			return printf("Usage: capsule volume %s NAME PATH\n", verb), 0;
		if (argv[i][0] == '-' && argv[i][1])
			return cli_usage(verb, "unknown flag '%s'", argv[i]);
		if (na == 2)
			return cli_usage(verb, "unexpected argument '%s'", argv[i]);
		args[na++] = argv[i];
	}
	if (na < 2)
		return cli_usage(verb, "needs a volume name and a path");
	capsule_error err = { 0 };
	int r = write ? capsule_volume_write_from_fd(args[0], args[1], 0, &err)
		      : capsule_volume_read_to_fd(args[0], args[1], 1, &err);
	if (r < 0)
		return cli_fail(&err);
	if (!write && fflush(stdout) != 0)
		return cli_failf("writing to stdout: %s", strerror(errno));
	return 0;
}

int cmd_volume(int argc, char **argv)
{
	if (argc < 2)
		return cli_usage("volume", "no command given");
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		volume_help();
		return 0;
	}
	const char *sub = argv[1];
	if (!strcmp(sub, "create"))
		return volume_create(argc - 1, argv + 1);
	if (!strcmp(sub, "ls") || !strcmp(sub, "list"))
		return volume_ls(argc - 1, argv + 1);
	if (!strcmp(sub, "inspect"))
		return volume_inspect(argc - 1, argv + 1);
	if (!strcmp(sub, "rm") || !strcmp(sub, "remove"))
		return volume_rm(argc - 1, argv + 1);
	if (!strcmp(sub, "write"))
		return volume_io("volume write", argc - 1, argv + 1, true);
	if (!strcmp(sub, "read"))
		return volume_io("volume read", argc - 1, argv + 1, false);
	fprintf(stderr, "capsule: unknown volume command '%s' (see 'capsule volume --help')\n", sub);
	return EXIT_CAPSULE;
}
