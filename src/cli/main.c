#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

#include "cli.h"
#include "config.h"

static int cmd_version(int argc, char **argv);
static int cmd_help(int argc, char **argv);

static const struct cli_command commands[] = {
	{ "run", cmd_run, "Run a command in a new sandbox" },
	{ "create", cmd_create, "Create a named sandbox that runs until stopped" },
	{ "start", cmd_start, "Start a stopped sandbox" },
	{ "exec", cmd_exec, "Run a command in a running sandbox" },
	{ "stop", cmd_stop, "Stop sandboxes (SIGTERM, then SIGKILL after a timeout)" },
	{ "kill", cmd_kill, "Kill sandboxes at once" },
	{ "pause", cmd_pause, "Hold every process of sandboxes still, in memory" },
	{ "resume", cmd_resume, "Let paused sandboxes run again" },
	{ "update", cmd_update, "Change a running sandbox's memory, cpu and pids limits" },
	{ "rm", cmd_rm, "Remove sandboxes" },
	{ "ps", cmd_ps, "List sandboxes" },
	{ "inspect", cmd_inspect, "Show a sandbox's details as JSON" },
	{ "diff", cmd_diff, "List the files added, changed and deleted in a sandbox" },
	{ "watch", cmd_watch, "Print the changes below a path in a sandbox as they happen" },
	{ "fs", cmd_fs, "Read, write and list files in a running sandbox" },
	{ "cp", cmd_cp, "Copy files and folders between the host and a sandbox" },
	{ "volume", cmd_volume, "Manage named volumes (create, ls, inspect, rm, write, read)" },
	{ "mount", cmd_mount, "Bind a host path into a running sandbox" },
	{ "mounts", cmd_mounts, "List a sandbox's mounts" },
	{ "unmount", cmd_unmount, "Remove a hot mount from a running sandbox" },
	{ "save", cmd_save, "Save a sandbox's filesystem now, by name" },
	{ "checkpoint", cmd_checkpoint, "Keep a sandbox's filesystem as a checkpoint" },
	{ "revert", cmd_revert, "Put a sandbox's filesystem back to a checkpoint" },
	{ "fork", cmd_fork, "Start a new sandbox from a sandbox's current state" },
	{ "saves", cmd_saves, "Manage saves (ls, rm)" },
	{ "pool", cmd_pool, "Keep sandboxes ready to take at once (create, ls, rm)" },
	{ "image", cmd_image, "Manage images (pull, import, ls, rm)" },
	{ "system", cmd_system, "Show and reclaim the space the stores take (df, prune)" },
	{ "port", cmd_port, "Forward host ports into a running sandbox (add, ls, rm)" },
	{ "net", cmd_net, "Egress rules of a running container (allow, deny, ls)" },
	{ "screenshot", cmd_screenshot, "Save a vm's screen as a PNG file" },
	{ "input", cmd_input, "Type, press keys, move and click on a vm's display" },
	{ "serve", cmd_serve, "Serve the HTTP API for sandboxes (docs/serve.md)" },
	{ "token", cmd_token, "Manage API tokens of 'capsule serve' (create, ls, rm)" },
	{ "mcp", cmd_serve, "Serve MCP tools for agents over stdin and stdout (docs/mcp.md)" },
	{ "doctor", cmd_doctor, "What this host supports, and why not" },
	{ "version", cmd_version, "Print the version" },
	{ "help", cmd_help, "Show this help" },
};

int cli_fail(const capsule_error *err)
{
	fprintf(stderr, "capsule: %s\n", err && err->message[0] ? err->message : "unknown error");
	return EXIT_CAPSULE;
}

int cli_failf(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("capsule: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	return EXIT_CAPSULE;
}

int cli_usage(const char *verb, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "capsule %s: ", verb);
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, " (see 'capsule %s --help')\n", verb);
	va_end(ap);
	return EXIT_CAPSULE;
}

const char *cli_getopt_flag(int argc, char **argv)
{
	return argv[(optind > argc ? argc : optind) - 1];
}

int cli_sub_args(const char *verb, int argc, char **argv, const char **pos, int *npos, bool *json)
{
	*npos = 0;
	*json = false;
	for (int i = 2; i < argc; i++) {
		if (!strcmp(argv[i], "--json") && !strcmp(argv[1], "ls"))
			*json = true;
		else if (argv[i][0] == '-' && argv[i][1])
			return cli_usage(verb, "unknown flag '%s'", argv[i]);
		else if (*npos == 2)
			return cli_usage(verb, "unexpected argument '%s'", argv[i]);
		else
			pos[(*npos)++] = argv[i];
	}
	return 0;
}

int cli_open_running(const char *name, capsule_sandbox **sb)
{
	capsule_error err = { 0 };
	if (capsule_sandbox_open(sb, name, &err) < 0)
		return cli_fail(&err);
	if (!capsule_sandbox_is_running(*sb)) {
		/* Not running, but paused: to disk, with no shim (capsule.h). */
		capsule_sandbox_info info;
		bool on_disk = capsule_sandbox_inspect(*sb, &info, NULL) == 0 && !strcmp(info.state, "paused");
		capsule_sandbox_free(*sb);
		*sb = NULL;
		if (on_disk)
			return cli_failf("sandbox '%s' is paused to disk: resume it first", name);
		return cli_failf("sandbox '%s' is not running", name);
	}
	return 0;
}

static int cmd_version(int argc, char **argv)
{
	if (argc > 1 && !strcmp(argv[1], "--help"))
		return fputs("Usage: capsule version\n\nPrint capsule's version (also 'capsule --version').\n\n"
			     "  --help   this text\n",
			     stdout),
		       0;
	if (argc > 1)
		return cli_usage("version", "unexpected argument '%s'", argv[1]);
	printf("capsule %s\n", CAPSULE_VERSION_STRING);
	return 0;
}

/* To stdout when asked for, to stderr when it stands for an error (no command at all). */
static void print_global_help(FILE *out)
{
	fprintf(out, "Usage: capsule COMMAND [OPTIONS] [ARGS]\n\ncapsule runs commands in sandboxes.\n\nCommands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(out, "  %-11s %s\n", commands[i].name, commands[i].summary);
	fprintf(out, "\nRun 'capsule COMMAND --help' (or 'capsule help COMMAND') for a command's options.\n");
}

/* `capsule help [COMMAND]`: the global help, or COMMAND's own, as `COMMAND --help` gives it. */
static int cmd_help(int argc, char **argv)
{
	if (argc < 2) {
		print_global_help(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))
		return fputs("Usage: capsule help [COMMAND]\n\nThe list of commands, or COMMAND's own help.\n\n"
			     "  --help   this text\n",
			     stdout),
		       0;
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (!strcmp(commands[i].name, argv[1]) && commands[i].fn != cmd_help) {
			char *help_argv[] = { argv[1], "--help", NULL };
			return commands[i].fn(2, help_argv);
		}
	return cli_usage("help", "unknown command '%s'", argv[1]);
}

int cli_exec_helper(const char *helper, char **argv)
{
	/* Beside this binary (the build tree, a relocated install), then where install puts it. */
	char path[PATH_MAX];
	const char *env = getenv("CAPSULE_LIBEXEC");
	if (env && *env) {
		snprintf(path, sizeof(path), "%s/%s", env, helper);
		execv(path, argv);
	}
	ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 32);
	if (n > 0) {
		path[n] = '\0';
		char *slash = strrchr(path, '/');
		if (slash) {
			snprintf(slash + 1, sizeof(path) - (size_t)(slash + 1 - path), "%s", helper);
			execv(path, argv);
		}
	}
	snprintf(path, sizeof(path), "%s/%s", CAPSULE_LIBEXECDIR, helper);
	execv(path, argv);
	return cli_failf("this command needs '%s', which cannot be run: %s", path, strerror(errno));
}

void cli_human_size(uint64_t bytes, char *out, size_t size)
{
	static const char *const units[] = { "B", "kB", "MB", "GB", "TB" };
	double v = (double)bytes;
	int u = 0;
	while (v >= 1000 && u < 4) {
		v /= 1000;
		u++;
	}
	snprintf(out, size, u ? "%.1f %s" : "%.0f %s", v, units[u]);
}

/* "capsule VERB ARGS...": rebuilt rather than taken from argv - 1, since `capsule help VERB`
 * calls a verb with an argv of its own that has nothing before it. */
int cli_exec_verb(const char *helper, int argc, char **argv)
{
	char **full = calloc((size_t)argc + 2, sizeof(char *));
	if (!full)
		return cli_failf("out of memory");
	full[0] = "capsule";
	for (int i = 0; i < argc; i++)
		full[i + 1] = argv[i];
	int r = cli_exec_helper(helper, full);
	free(full);
	return r;
}

int cli_images_helper(char **argv)
{
	return cli_exec_helper("capsule-images", argv);
}

#ifdef CAPSULE_CLI_IMAGES_HELPER
/* run/create with an --image other than "host": the image is resolved (and maybe pulled). */
static bool needs_images(int argc, char **argv)
{
	bool pool_create = !strcmp(argv[1], "pool") && argc > 2 && !strcmp(argv[2], "create");
	if (strcmp(argv[1], "run") && strcmp(argv[1], "create") && !pool_create)
		return false;
	for (int i = pool_create ? 3 : 2; i < argc && strcmp(argv[i], "--"); i++) {
		const char *v = NULL;
		if (!strcmp(argv[i], "--image") && i + 1 < argc)
			v = argv[i + 1];
		else if (!strncmp(argv[i], "--image=", 8))
			v = argv[i] + 8;
		if (v && strcmp(v, "host"))
			return true;
	}
	return false;
}
#endif

int main(int argc, char **argv)
{
	if (argc < 2)
		return print_global_help(stderr), EXIT_CAPSULE;
	const char *verb = argv[1];
#ifdef CAPSULE_CLI_IMAGES_HELPER
	if (needs_images(argc, argv))
		return cli_images_helper(argv);
#endif
	if (!strcmp(verb, "--help") || !strcmp(verb, "-h"))
		return print_global_help(stdout), 0;
	if (!strcmp(verb, "--version"))
		return cmd_version(argc - 1, argv + 1);
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (!strcmp(commands[i].name, verb))
			return commands[i].fn(argc - 1, argv + 1);
	fprintf(stderr, "capsule: unknown command '%s' (see 'capsule help')\n", verb);
	return EXIT_CAPSULE;
}
