/* system df|prune: the space the stores of $CAPSULE_HOME take (images, saves, the vm store),
 * and what nothing uses any more, as `docker system df` and `docker system prune`. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "json.h"

#ifdef CAPSULE_CLI_IMAGES_HELPER
/* The static CLI has no image store: main() hands `system` to capsule-images, whose prune
 * can remove unused layers. */
int cmd_system(int argc, char **argv)
{
	(void)argc;
	return cli_images_helper(argv - 1);
}
#else
static void system_help(void)
{
	printf("Usage: capsule system COMMAND\n\n"
	       "Commands:\n"
	       "  df [--json] [-v]   the space images, saves and the vm store take; -v lists the vm\n"
	       "                     store's files and why each is kept\n"
	       "  prune              remove image layers and vm store files that nothing uses\n");
}

static uint64_t member_uint(const char *text, size_t len, const char *outer, const char *key)
{
	const char *member;
	size_t member_len;
	int64_t v = 0;
	if (json_get_member(text, len, outer, &member, &member_len) < 0 ||
	    json_get_int(member, member_len, key, &v) < 0 || v < 0)
		return 0;
	return (uint64_t)v;
}

static int file_row(const char *name, const char *value, size_t len, void *payload)
{
	(void)name, (void)payload;
	char *file = NULL, *kind = NULL, *kept = NULL;
	int64_t bytes = 0;
	json_get_string(value, len, "name", &file);
	json_get_string(value, len, "kind", &kind);
	json_get_string(value, len, "kept", &kept);
	json_get_int(value, len, "bytes", &bytes);
	char size[32];
	cli_human_size((uint64_t)bytes, size, sizeof(size));
	printf("  %-10s %-10s %-9s %s\n", kind ? kind : "", size, kept ? kept : "unused", file ? file : "");
	free(file);
	free(kind);
	free(kept);
	return 0;
}

static int system_df(int argc, char **argv)
{
	bool json = false, verbose = false;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json"))
			json = true;
		else if (!strcmp(argv[i], "-v") || !strcmp(argv[i], "--verbose"))
			verbose = true;
		else if (!strcmp(argv[i], "--help"))
			return printf("Usage: capsule system df [--json] [-v]\n"), 0;
		else
			return cli_usage("system df", "unknown argument '%s'", argv[i]);
	}
	capsule_error err = { 0 };
	char *text = NULL;
	if (capsule_system_df_json(&text, &err) < 0)
		return cli_fail(&err);
	if (json) {
		printf("%s\n", text);
		free(text);
		return 0;
	}
	size_t len = strlen(text);
	char size[32], reclaim[32];
	printf("%-10s %-7s %-10s %s\n", "TYPE", "COUNT", "SIZE", "RECLAIMABLE");
	cli_human_size(member_uint(text, len, "images", "bytes"), size, sizeof(size));
	printf("%-10s %-7" PRIu64 " %-10s %s\n", "images", member_uint(text, len, "images", "count"), size, "-");
	cli_human_size(member_uint(text, len, "saves", "bytes"), size, sizeof(size));
	printf("%-10s %-7" PRIu64 " %-10s %s\n", "saves", member_uint(text, len, "saves", "count"), size, "-");
	cli_human_size(member_uint(text, len, "vm", "bytes"), size, sizeof(size));
	cli_human_size(member_uint(text, len, "vm", "reclaimable"), reclaim, sizeof(reclaim));
	printf("%-10s %-7" PRIu64 " %-10s %s\n", "vm store", member_uint(text, len, "vm", "entries"), size, reclaim);
	if (verbose) {
		const char *vm, *files;
		size_t vm_len, files_len;
		if (json_get_member(text, len, "vm", &vm, &vm_len) == 0 &&
		    json_get_member(vm, vm_len, "files", &files, &files_len) == 0) {
			printf("\nvm store files:\n  %-10s %-10s %-9s %s\n", "KIND", "SIZE", "KEPT", "NAME");
			json_array_each(files, files_len, 1u << 20, file_row, NULL);
		}
	}
	free(text);
	return 0;
}

static int system_prune(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--help"))
			return printf("Usage: capsule system prune\n"), 0;
		return cli_usage("system prune", "unknown argument '%s'", argv[i]);
	}
	capsule_error err = { 0 };
	uint64_t freed = 0;
	if (capsule_system_prune(&freed, &err) < 0)
		return cli_fail(&err);
	char size[32];
	cli_human_size(freed, size, sizeof(size));
	printf("Total reclaimed space: %s\n", size);
	return 0;
}

int cmd_system(int argc, char **argv)
{
	if (argc < 2)
		return cli_usage("system", "no command given");
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		system_help();
		return 0;
	}
	if (!strcmp(argv[1], "df"))
		return system_df(argc - 1, argv + 1);
	if (!strcmp(argv[1], "prune"))
		return system_prune(argc - 1, argv + 1);
	return cli_usage("system", "unknown command '%s'", argv[1]);
}
#endif
