/* mount, mounts, unmount: hot mounts into a running sandbox. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "json.h"

static int open_sandbox(const char *name, capsule_sandbox **sb)
{
	capsule_error err = { 0 };
	if (capsule_sandbox_open(sb, name, &err) < 0)
		return cli_fail(&err);
	return 0;
}

int cmd_mount(int argc, char **argv)
{
	const char *pos[3];
	int npos = 0;
	unsigned flags = 0;
	bool dashdash = false;
	for (int i = 1; i < argc; i++) {
		if (!dashdash && !strcmp(argv[i], "--")) {
			dashdash = true;
		} else if (!dashdash && !strcmp(argv[i], "--ro")) {
			flags |= CAPSULE_MOUNT_RO;
		} else if (!dashdash && !strcmp(argv[i], "--allow-sensitive")) {
			flags |= CAPSULE_MOUNT_ALLOW_SENSITIVE;
		} else if (!dashdash && !strcmp(argv[i], "--help")) {
			printf("Usage: capsule mount [OPTIONS] SANDBOX HOST_PATH GUEST_PATH\n\n"
			       "Bind HOST_PATH into the running SANDBOX at GUEST_PATH and print the mount's handle.\n\n"
			       "  --ro                 read-only for everyone in the sandbox, root included\n"
			       "  --allow-sensitive    allow a sensitive host path (/etc, ~/.ssh, ...)\n");
			return 0;
		} else if (!dashdash && argv[i][0] == '-' && argv[i][1]) {
			return cli_usage("mount", "unknown flag '%s'", argv[i]);
		} else {
			if (npos == 3)
				return cli_usage("mount", "unexpected argument '%s'", argv[i]);
			pos[npos++] = argv[i];
		}
	}
	if (npos < 3)
		return cli_usage("mount", "expected SANDBOX HOST_PATH GUEST_PATH");
	capsule_sandbox *sb;
	int r = open_sandbox(pos[0], &sb);
	if (r)
		return r;
	capsule_error err = { 0 };
	char *handle = NULL;
	r = capsule_mount(sb, pos[1], pos[2], flags, &handle, &err);
	capsule_sandbox_free(sb);
	if (r < 0)
		return cli_fail(&err);
	printf("%s\n", handle);
	free(handle);
	return 0;
}

int cmd_unmount(int argc, char **argv)
{
	const char *pos[2];
	int npos = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--help")) {
			printf("Usage: capsule unmount SANDBOX GUEST_PATH|HANDLE\n\n"
			       "Remove a hot mount; processes in the sandbox keep running.\n");
			return 0;
		}
		if (argv[i][0] == '-' && argv[i][1])
			return cli_usage("unmount", "unknown flag '%s'", argv[i]);
		if (npos == 2)
			return cli_usage("unmount", "unexpected argument '%s'", argv[i]);
		pos[npos++] = argv[i];
	}
	if (npos < 2)
		return cli_usage("unmount", "expected SANDBOX GUEST_PATH|HANDLE");
	capsule_sandbox *sb;
	int r = open_sandbox(pos[0], &sb);
	if (r)
		return r;
	capsule_error err = { 0 };
	r = capsule_unmount(sb, pos[1], &err);
	capsule_sandbox_free(sb);
	return r < 0 ? cli_fail(&err) : 0;
}

static int print_mount_row(const char *name, const char *value, size_t len, void *payload)
{
	(void)name;
	(void)payload;
	char *kind = NULL, *host = NULL, *guest = NULL, *handle = NULL;
	bool ro = false, hot = false;
	json_get_string(value, len, "kind", &kind);
	json_get_string(value, len, "host_path", &host);
	json_get_string(value, len, "guest_path", &guest);
	json_get_string(value, len, "handle", &handle);
	json_get_bool(value, len, "readonly", &ro);
	json_get_bool(value, len, "hot", &hot);
	printf("%-8s %-6s %-4s %-3s %-30s %s\n", handle ? handle : "-", kind ? kind : "?", ro ? "ro" : "rw",
	       hot ? "yes" : "no", guest ? guest : "?", host ? host : "-");
	free(kind);
	free(host);
	free(guest);
	free(handle);
	return 0;
}

int cmd_mounts(int argc, char **argv)
{
	const char *name = NULL;
	bool json = false;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json"))
			json = true;
		else if (!strcmp(argv[i], "--help"))
			return printf("Usage: capsule mounts SANDBOX [--json]\n\n"
				      "Every mount of a running sandbox: boot-time and hot.\n"),
			       0;
		else if (argv[i][0] == '-')
			return cli_usage("mounts", "unknown flag '%s'", argv[i]);
		else if (name)
			return cli_usage("mounts", "unexpected argument '%s'", argv[i]);
		else
			name = argv[i];
	}
	if (!name)
		return cli_usage("mounts", "no sandbox given");
	capsule_sandbox *sb;
	int r = open_sandbox(name, &sb);
	if (r)
		return r;
	capsule_error err = { 0 };
	char *text = NULL;
	r = capsule_mounts_json(sb, &text, &err);
	capsule_sandbox_free(sb);
	if (r < 0)
		return cli_fail(&err);
	if (json) {
		printf("%s\n", text);
	} else {
		printf("%-8s %-6s %-4s %-3s %-30s %s\n", "HANDLE", "KIND", "MODE", "HOT", "GUEST PATH", "HOST PATH");
		if (json_array_each(text, strlen(text), 1024, print_mount_row, NULL) < 0) {
			free(text);
			return cli_failf("the sandbox sent a list of mounts that is not valid JSON");
		}
	}
	free(text);
	return 0;
}
