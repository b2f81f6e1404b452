/* ps and inspect. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "json.h"

static void format_age(int64_t since, char *out, size_t n)
{
	int64_t d = (int64_t)time(NULL) - since;
	if (since <= 0 || d < 0)
		snprintf(out, n, "-");
	else if (d < 60)
		snprintf(out, n, "%llds ago", (long long)d);
	else if (d < 3600)
		snprintf(out, n, "%lldm ago", (long long)(d / 60));
	else if (d < 86400)
		snprintf(out, n, "%lldh ago", (long long)(d / 3600));
	else
		snprintf(out, n, "%lldd ago", (long long)(d / 86400));
}

/* Without -a, the sandboxes that are up: running or paused (as docker ps lists a paused one). */
static bool ps_listed(bool all, const char *state)
{
	return all || !strcmp(state, "running") || !strcmp(state, "paused");
}

int cmd_ps(int argc, char **argv)
{
	bool all = false, json = false;
	/* --filter label=...: at most one per argument, NULL-terminated for the library. */
	const char **labels = calloc((size_t)argc + 1, sizeof(*labels));
	size_t nlabels = 0;
	if (!labels)
		return cli_failf("out of memory");
	for (int i = 1; i < argc; i++) {
		const char *filter = NULL;
		if (!strcmp(argv[i], "-a") || !strcmp(argv[i], "--all"))
			all = true;
		else if (!strcmp(argv[i], "--json"))
			json = true;
		else if (!strcmp(argv[i], "-f") || !strcmp(argv[i], "--filter")) {
			if (i + 1 == argc) {
				free(labels);
				return cli_usage("ps", "%s needs a value (label=KEY=VALUE or label=KEY)", argv[i]);
			}
			filter = argv[++i];
		} else if (!strncmp(argv[i], "--filter=", 9))
			filter = argv[i] + 9;
		else if (!strcmp(argv[i], "--help")) {
			free(labels);
			return fputs("Usage: capsule ps [-a] [--json] [--filter label=KEY[=VALUE]...]\n\n"
				     "List sandboxes: name, state, image, isolation and when each was made.\n\n"
				     "  -a, --all        stopped and starting ones too (default: running ones only)\n"
				     "  --json           a JSON array, for scripts\n"
				     "  -f, --filter label=KEY=VALUE\n"
				     "                   only sandboxes with that label (label=KEY: any value);\n"
				     "                   repeat for more, all must match (labels: run --label)\n",
				     stdout),
			       0;
		} else {
			free(labels);
			return cli_usage("ps", "unknown flag '%s'", argv[i]);
		}
		if (filter && strncmp(filter, "label=", 6)) {
			free(labels);
			return cli_usage("ps", "unknown filter '%s' (label=KEY=VALUE or label=KEY)", filter);
		}
		if (filter)
			labels[nlabels++] = filter + 6;
	}
	capsule_error err = { 0 };
	capsule_sandbox_info *v;
	size_t n;
	int lr = capsule_sandbox_list_labeled(&v, &n, labels, &err);
	free(labels);
	if (lr < 0)
		return cli_fail(&err);
	if (json) {
		struct json_writer j;
		json_init(&j, true);
		json_array_begin(&j);
		for (size_t i = 0; i < n; i++) {
			if (!ps_listed(all, v[i].state))
				continue;
			json_object_begin(&j);
			json_kv_string(&j, "name", v[i].name);
			json_kv_string(&j, "state", v[i].state);
			json_kv_string(&j, "image", v[i].image);
			json_kv_string(&j, "isolation", v[i].isolation == CAPSULE_ISOLATION_VM ? "vm" : "container");
			json_kv_bool(&j, "detached", v[i].detached);
			json_kv_int(&j, "created", v[i].created_unix);
			json_kv_int(&j, "shim_pid", v[i].shim_pid);
			json_object_end(&j);
		}
		json_array_end(&j);
		int e = 0;
		char *text = json_steal(&j, &e);
		free(v);
		if (!text)
			return cli_failf("formatting JSON failed");
		printf("%s\n", text);
		free(text);
		return 0;
	}
	printf("%-24s %-9s %-12s %-10s %s\n", "NAME", "STATE", "IMAGE", "ISOLATION", "CREATED");
	for (size_t i = 0; i < n; i++) {
		if (!ps_listed(all, v[i].state))
			continue;
		char age[32];
		format_age(v[i].created_unix, age, sizeof(age));
		printf("%-24s %-9s %-12s %-10s %s\n", v[i].name, v[i].state, v[i].image,
		       v[i].isolation == CAPSULE_ISOLATION_VM ? "vm" : "container", age);
	}
	free(v);
	return 0;
}

int cmd_inspect(int argc, char **argv)
{
	const char *name = NULL;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json"))
			continue; /* inspect always prints JSON, as docker's does */
		if (!strcmp(argv[i], "--help"))
			return fputs("Usage: capsule inspect SANDBOX [--json]\n\n"
				     "A sandbox's details as JSON: state, limits, mounts, ports, and for a vm its\n"
				     "QEMU and kernel (--json is accepted for docker users; the output is JSON anyway).\n",
				     stdout),
			       0;
		if (argv[i][0] == '-')
			return cli_usage("inspect", "unknown flag '%s'", argv[i]);
		if (name)
			return cli_usage("inspect", "unexpected argument '%s'", argv[i]);
		name = argv[i];
	}
	if (!name)
		return cli_usage("inspect", "no sandbox given");
	capsule_error err = { 0 };
	capsule_sandbox *sb;
	if (capsule_sandbox_open(&sb, name, &err) < 0)
		return cli_fail(&err);
	char *text;
	int r = capsule_sandbox_inspect_json(sb, &text, &err);
	capsule_sandbox_free(sb);
	if (r < 0)
		return cli_fail(&err);
	printf("%s\n", text);
	free(text);
	return 0;
}
