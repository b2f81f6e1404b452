/* diff: what changed in a sandbox's filesystem (capsule_sandbox_diff_json), and exec --diff:
 * what one command changed, the difference between the diff before it and the diff after;
 * watch: the changes as they happen (capsule_watch_*). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "json.h"
#include "util.h"

/* A path as one line whatever it holds: backslash, control bytes and DEL escaped (a name
 * with a newline must not forge a second line), the C1 controls too (U+0080-U+009F: a
 * terminal may take U+009B for CSI). */
static void put_path(FILE *f, const char *p)
{
	for (const unsigned char *s = (const unsigned char *)p; *s; s++) {
		if (s[0] == 0xc2 && s[1] >= 0x80 && s[1] <= 0x9f)
			fprintf(f, "\\u%04x", *++s);
		else if (*s == '\\')
			fputs("\\\\", f);
		else if (*s == '\n')
			fputs("\\n", f);
		else if (*s == '\t')
			fputs("\\t", f);
		else if (*s < 0x20 || *s == 0x7f)
			fprintf(f, "\\x%02x", *s);
		else
			fputc(*s, f);
	}
}

/* "A 0644 12 /path": added, changed or deleted (docker diff's letters), mode and size. */
static void print_line(FILE *f, const char *text, size_t len, char letter)
{
	_cleanup_free_ char *path = NULL, *kind = NULL, *mode = NULL;
	int64_t size = 0;
	json_get_string(text, len, "path", &path);
	json_get_string(text, len, "kind", &kind);
	if (kind && !strcmp(kind, "deleted"))
		letter = 'D';
	else if (!letter)
		letter = kind && !strcmp(kind, "added") ? 'A' : 'C';
	bool deleted = letter == 'D';
	fprintf(f, "%c ", letter);
	if (!deleted && json_get_string(text, len, "mode", &mode) == 0 && json_get_int(text, len, "size", &size) == 0)
		fprintf(f, "%s %10lld ", mode, (long long)size);
	else
		fprintf(f, "%-4s %10s ", "-", "-");
	put_path(f, path ? path : "?");
	fputc('\n', f);
}

static int print_row(const char *name, const char *value, size_t len, void *payload)
{
	(void)name;
	print_line(payload, value, len, 0);
	return 0;
}

/* JSON as it is, or one line a change, on F. */
static int print_all(FILE *f, const char *json, bool as_json)
{
	if (as_json) {
		fprintf(f, "%s\n", json);
		return 0;
	}
	if (json_array_each(json, strlen(json), 2000000, print_row, f) < 0)
		return cli_failf("diff: malformed answer from the library");
	return 0;
}

int cli_print_diff_since(const char *before, const char *after)
{
	capsule_error err = { 0 };
	char *json = NULL;
	if (capsule_diff_json_since(before, after, &json, &err) < 0)
		return cli_fail(&err);
	int r = print_all(stderr, json, false);
	free(json);
	return r;
}

int cmd_diff(int argc, char **argv)
{
	bool as_json = false;
	const char *name = NULL, *since = NULL;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--help")) {
			fputs("Usage: capsule diff [--json] [--since CHECKPOINT|SAVE] SANDBOX\n\n"
			      "What changed in a sandbox's filesystem since it was made, running or stopped:\n"
			      "one line per change, 'A' added, 'C' changed, 'D' deleted, with mode and size.\n"
			      "Read from its own layer, so it costs what changed. Container level only.\n\n"
			      "  --json               a JSON array of {path, kind, type, size, mode, mtime_ns,\n"
			      "                       link_target}\n"
			      "  --since NAME         only what changed since the sandbox's checkpoint NAME or,\n"
			      "                       if it has none of that name, save NAME (one taken from\n"
			      "                       it, from a sandbox of its image, or the one it started\n"
			      "                       from); 'checkpoint:NAME' or 'save:NAME' to say which\n",
			      stdout);
			return 0;
		}
		if (!strcmp(argv[i], "--json"))
			as_json = true;
		else if (!strcmp(argv[i], "--since") && i + 1 < argc)
			since = argv[++i];
		else if (!strcmp(argv[i], "--since"))
			return cli_usage("diff", "flag '--since' needs a value");
		else if (argv[i][0] == '-')
			return cli_usage("diff", "unknown flag '%s'", argv[i]);
		else if (name)
			return cli_usage("diff", "unexpected argument '%s'", argv[i]);
		else
			name = argv[i];
	}
	if (!name)
		return cli_usage("diff", "no sandbox given");
	capsule_error err = { 0 };
	capsule_sandbox *sb;
	if (capsule_sandbox_open(&sb, name, &err) < 0)
		return cli_fail(&err);
	char *json = NULL;
	int r = since ? capsule_sandbox_diff_since_json(sb, since, &json, &err) : capsule_sandbox_diff_json(sb, &json, &err);
	capsule_sandbox_free(sb);
	if (r < 0)
		return cli_fail(&err);
	r = print_all(stdout, json, as_json);
	free(json);
	return r;
}

static volatile sig_atomic_t watch_stop;

static void on_stop_signal(int sig)
{
	(void)sig;
	watch_stop = 1;
}

/* "create /path", "move /from -> /to", one line each, the path escaped as diff's are. */
static void print_event(const char *json)
{
	size_t len = strlen(json);
	_cleanup_free_ char *kind = NULL, *path = NULL, *from = NULL;
	json_get_string(json, len, "kind", &kind);
	json_get_string(json, len, "path", &path);
	json_get_string(json, len, "from", &from);
	if (kind && !strcmp(kind, "overflow")) {
		puts("overflow (events were lost: look again at what is watched)");
		return;
	}
	printf("%s ", kind ? kind : "?");
	if (from) {
		put_path(stdout, from);
		fputs(" -> ", stdout);
	}
	put_path(stdout, path ? path : "?");
	fputc('\n', stdout);
}

int cmd_watch(int argc, char **argv)
{
	bool as_json = false, recursive = false;
	const char *args[2] = { NULL, NULL };
	size_t nargs = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--help")) {
			fputs("Usage: capsule watch [--recursive] [--json] SANDBOX PATH\n\n"
			      "Print the changes below PATH in a running sandbox as they happen, seen from inside\n"
			      "it: create, modify, delete, move, and overflow when events were lost. Until the\n"
			      "path is gone, the sandbox stops, or Ctrl-C. At the vm level, what the host changes\n"
			      "in a bound folder is not seen.\n\n"
			      "  -r, --recursive   the whole tree below PATH (at most 8192 folders)\n"
			      "  --json            one JSON object a line: kind, path, from, time, time_ns, dir\n",
			      stdout);
			return 0;
		}
		if (!strcmp(argv[i], "--json"))
			as_json = true;
		else if (!strcmp(argv[i], "--recursive") || !strcmp(argv[i], "-r"))
			recursive = true;
		else if (argv[i][0] == '-')
			return cli_usage("watch", "unknown flag '%s'", argv[i]);
		else if (nargs == 2)
			return cli_usage("watch", "unexpected argument '%s'", argv[i]);
		else
			args[nargs++] = argv[i];
	}
	if (nargs < 2)
		return cli_usage("watch", nargs ? "no path given" : "no sandbox given");
	capsule_sandbox *sb;
	int rc = cli_open_running(args[0], &sb);
	if (rc != 0)
		return rc;
	capsule_error err = { 0 };
	capsule_watch *w;
	int r = capsule_watch_start(sb, args[1], recursive, &w, &err);
	capsule_sandbox_free(sb);
	if (r < 0)
		return cli_fail(&err);
	/* Ctrl-C ends the watch, not the process mid-line. */
	struct sigaction sa = { .sa_handler = on_stop_signal };
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	int code = 0;
	while (!watch_stop) {
		char *json = NULL;
		r = capsule_watch_next(w, &json, 200, &err);
		if (r == -EAGAIN)
			continue;
		if (r <= 0) {
			if (r < 0 && err.code != ESHUTDOWN)
				code = cli_fail(&err);
			break;
		}
		if (as_json)
			puts(json);
		else
			print_event(json);
		free(json);
		if (fflush(stdout) != 0)
			break; /* the reader went away */
	}
	capsule_watch_free(w);
	return code;
}
