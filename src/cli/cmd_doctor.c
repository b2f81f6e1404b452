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

static int needs_root_line(const char *name, const char *value, size_t len, void *payload)
{
	(void)payload;
	char *why = NULL;
	if (json_string_value(value, len, &why) == 0)
		printf("  %-22s needs root: %s\n", name, why);
	free(why);
	return 0;
}

/* A user's doctor: how the sandbox's ids map, what bounds its processes, what needs root. */
static void print_rootless(const char *text, size_t len)
{
	char *map = NULL, *note = NULL, *pids = NULL;
	if (json_get_string(text, len, "rootless_id_map", &map) < 0)
		return;
	json_get_string(text, len, "rootless_id_map_note", &note);
	json_get_string(text, len, "pids_limit_by", &pids);
	printf("\nwithout root:\n");
	printf("  %-22s %s%s%s\n", "id map", !strcmp(map, "subordinate") ? "your subordinate ranges" : "a single id",
	       note ? ": " : "", note ? note : "");
	printf("  %-22s %s\n", "pids limit",
	       pids && !strcmp(pids, "cgroup") ? "a pids cgroup" : "RLIMIT_NPROC, per user id inside the sandbox");
	const char *needs;
	size_t needs_len;
	if (json_get_member(text, len, "rootless_needs_root", &needs, &needs_len) == 0)
		json_object_each(needs, needs_len, 32, needs_root_line, NULL);
	free(map);
	free(note);
	free(pids);
}

int cmd_doctor(int argc, char **argv)
{
	bool json = argc > 1 && !strcmp(argv[1], "--json");
	if (argc > 1 && !json)
		return strcmp(argv[1], "--help") ? cli_usage("doctor", "unknown flag '%s'", argv[1])
						  : (fputs("Usage: capsule doctor [--json]\n\n"
							 "What this host supports for each isolation level, and why not where it does\n"
							 "not (user namespaces, cgroups, seccomp, the OOM floor, KVM, QEMU, the guest kernel).\n\n"
							 "  --json   the same as one JSON object\n",
							 stdout),
						   0);
	capsule_error err = { 0 };
	char *text;
	if (capsule_doctor_json(&text, &err) < 0)
		return cli_fail(&err);
	if (json) {
		fputs(text, stdout);
		free(text);
		return 0;
	}
	size_t len = strlen(text);
	char *version = NULL, *kernel = NULL, *arch = NULL;
	json_get_string(text, len, "version", &version);
	json_get_string(text, len, "kernel", &kernel);
	json_get_string(text, len, "arch", &arch);
	printf("capsule %s on Linux %s (%s)\n", version ? version : "?", kernel ? kernel : "?", arch ? arch : "?");
	free(version);
	free(kernel);
	free(arch);
	printf("\ncontainer isolation:\n");
	static const char *const keys[][2] = {
		{ "container_usable", "usable" }, { "user_namespaces", "user namespaces" },
		{ "namespaces", "all namespaces" }, { "openat2", "openat2" }, { "mount_api", "mount API" },
		{ "seccomp", "seccomp" }, { "cgroup_memory", "memory limit" }, { "cgroup_cpu", "cpu limit" },
		{ "cgroup_pids", "pids limit" }, { "oom_floor", "oom_score_adj floor 0" },
	};
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		bool v = false;
		json_get_bool(text, len, keys[i][0], &v);
		const char *why = !strcmp(keys[i][0], "container_usable") ? "container_reason"
				  : !strncmp(keys[i][0], "cgroup_", 7) ? "cgroup_reason"
				  : !strcmp(keys[i][0], "oom_floor") ? "oom_reason" : NULL;
		line(keys[i][1], v, text, len, why);
	}
	printf("\nvm isolation:\n");
	static const char *const vkeys[][2] = { { "vm_usable", "usable" }, { "kvm", "/dev/kvm" }, { "qemu", "qemu" } };
	for (size_t i = 0; i < sizeof(vkeys) / sizeof(vkeys[0]); i++) {
		bool v = false;
		json_get_bool(text, len, vkeys[i][0], &v);
		line(vkeys[i][1], v, text, len, i == 0 ? "vm_reason" : i == 1 ? "kvm_reason" : NULL);
	}
	char *vm_kernel = NULL, *vm_kernel_kind = NULL;
	json_get_string(text, len, "vm_kernel", &vm_kernel);
	json_get_string(text, len, "vm_kernel_kind", &vm_kernel_kind);
	if (vm_kernel && vm_kernel_kind)
		printf("  %-22s %s (%s)\n", "guest kernel", !strcmp(vm_kernel_kind, "capsule") ? "capsule's own" : "the host's",
		       vm_kernel);
	free(vm_kernel);
	free(vm_kernel_kind);
	print_rootless(text, len);
	char *home = NULL;
	json_get_string(text, len, "home", &home);
	printf("\nstate in %s\n", home ? home : "?");
	free(home);
	free(text);
	return 0;
}
