/* fs and cp: files inside a running sandbox, through the filesystem API. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "json.h"
#include "util.h"

static const char fs_usage[] =
	"Usage: capsule fs NAME COMMAND [OPTIONS] PATH...\n\n"
	"Files inside a running sandbox, over the same channel as exec (no mount, no network).\n\n"
	"Commands:\n"
	"  write [-p] [--mode MODE] PATH [CONTENT]  write CONTENT (or stdin, or - for stdin) to PATH, atomically\n"
	"  cat PATH...                              print files\n"
	"  ls [-l] [--json] [PATH]                  list a folder (default /)\n"
	"  stat [--json] PATH                       kind, size, mode, owner, mtime of PATH\n"
	"  mkdir [-p] [--mode MODE] PATH...         make folders\n"
	"  rm [-r] [-f] PATH...                     remove files or folders\n"
	"  mv [-n] SRC DST                          rename (-n: never replace DST)\n"
	"  ln -s TARGET PATH                        make a symlink\n";

static const char *kind_name(capsule_fs_kind k)
{
	switch (k) {
	case CAPSULE_FS_FILE: return "file";
	case CAPSULE_FS_DIR: return "dir";
	case CAPSULE_FS_SYMLINK: return "symlink";
	default: return "other";
	}
}

static void format_mtime(int64_t ns, char *out, size_t n)
{
	time_t t = (time_t)(ns / 1000000000);
	struct tm tm;
	strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
}

static void entry_json(struct json_writer *j, const capsule_fs_entry *e, const char *path)
{
	char mode[8], mt[32];
	snprintf(mode, sizeof(mode), "%04o", e->mode);
	format_mtime(e->mtime_ns, mt, sizeof(mt));
	json_object_begin(j);
	json_kv_string(j, "name", e->name);
	json_kv_string(j, "path", path);
	json_kv_string(j, "kind", kind_name(e->kind));
	json_kv_uint(j, "size", e->size);
	json_kv_string(j, "mode", mode);
	json_kv_string(j, "mtime", mt);
	json_kv_int(j, "mtime_ns", e->mtime_ns);
	json_kv_uint(j, "uid", e->uid);
	json_kv_uint(j, "gid", e->gid);
	if (e->link_target)
		json_kv_string(j, "link_target", e->link_target);
	json_object_end(j);
}

static int print_json(struct json_writer *j)
{
	int e = 0;
	char *text = json_steal(j, &e);
	if (!text)
		return cli_failf("formatting JSON failed");
	printf("%s\n", text);
	free(text);
	return 0;
}

/* Names come from the sandbox: on a terminal, control characters are shown as '?', as ls
 * does, so a file name cannot drive the terminal: C0 and DEL, the C1 controls (U+0080-U+009F,
 * U+009B is CSI to some terminals) and bytes that are no UTF-8 (a lone 0x9b is CSI to an
 * 8-bit terminal). */
static void put_name(const char *name)
{
	static int tty = -1;
	if (tty < 0)
		tty = isatty(STDOUT_FILENO);
	const unsigned char *c = (const unsigned char *)name;
	size_t n = strlen(name);
	for (size_t i = 0; i < n;) {
		size_t l = c[i] < 0x80 ? 1 : utf8_seq_len(c + i, n - i);
		bool control = c[i] < 0x20 || c[i] == 0x7f || l == 0 || (c[i] == 0xc2 && c[i + 1] <= 0x9f);
		size_t step = l ? l : 1;
		if (tty && control)
			putchar('?');
		else
			fwrite(c + i, 1, step, stdout);
		i += step;
	}
}

static void entry_long(const capsule_fs_entry *e)
{
	static const char kinds[] = "?-dlo";
	char perms[11] = { kinds[e->kind <= 4 ? e->kind : 0] };
	const char *rwx = "rwxrwxrwx";
	for (int i = 0; i < 9; i++)
		perms[1 + i] = (e->mode & (0400u >> i)) ? rwx[i] : '-';
	char mt[32];
	format_mtime(e->mtime_ns, mt, sizeof(mt));
	printf("%s %6u %6u %12llu %s ", perms, e->uid, e->gid, (unsigned long long)e->size, mt);
	put_name(e->name);
	if (e->link_target) {
		fputs(" -> ", stdout);
		put_name(e->link_target);
	}
	putchar('\n');
}

static int parse_mode(const char *s, uint32_t *mode)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 8);
	if (errno || !*s || *end || v > 07777)
		return -1;
	*mode = (uint32_t)v;
	return 0;
}

/* Flags before the operands: each verb names the ones it takes. */
struct fs_flags {
	bool parents, recursive, force, longfmt, json, noreplace, symbolic;
	uint32_t mode;
};

static int parse_flags(const char *verb, const char *allowed, int argc, char **argv, int *i, struct fs_flags *f)
{
	for (; *i < argc && argv[*i][0] == '-' && argv[*i][1]; (*i)++) {
		const char *a = argv[*i];
		if (!strcmp(a, "--")) {
			(*i)++;
			break;
		}
		if (!strcmp(a, "--json") && strchr(allowed, 'j')) {
			f->json = true;
			continue;
		}
		if (!strcmp(a, "--mode") && strchr(allowed, 'm')) {
			if (*i + 1 >= argc || parse_mode(argv[*i + 1], &f->mode) < 0)
				return cli_usage("fs", "%s: --mode needs an octal mode such as 0644", verb);
			(*i)++;
			continue;
		}
		if (a[1] == '-')
			return cli_usage("fs", "%s: unknown flag '%s'", verb, a);
		for (const char *c = a + 1; *c; c++) {
			if (!strchr(allowed, *c))
				return cli_usage("fs", "%s: unknown flag '-%c'", verb, *c);
			switch (*c) {
			case 'p': f->parents = true; break;
			case 'r': case 'R': f->recursive = true; break;
			case 'f': f->force = true; break;
			case 'l': f->longfmt = true; break;
			case 'n': f->noreplace = true; break;
			case 's': f->symbolic = true; break;
			}
		}
	}
	return 0;
}

static int fs_ls(capsule_sandbox *sb, const char *path, const struct fs_flags *f)
{
	capsule_error err = { 0 };
	capsule_fs_entry *v;
	size_t n;
	if (capsule_fs_list(sb, path, &v, &n, &err) < 0)
		return cli_fail(&err);
	struct json_writer j;
	if (f->json) {
		json_init(&j, true);
		json_array_begin(&j);
	}
	for (size_t i = 0; i < n; i++) {
		if (f->json) {
			char full[CAPSULE_FS_PATH_MAX + 256 + 2];
			snprintf(full, sizeof(full), "%s%s%s", path, path[strlen(path) - 1] == '/' ? "" : "/", v[i].name);
			entry_json(&j, &v[i], full);
		} else if (f->longfmt) {
			entry_long(&v[i]);
		} else {
			put_name(v[i].name);
			putchar('\n');
		}
	}
	capsule_fs_entries_free(v, n);
	if (f->json) {
		json_array_end(&j);
		return print_json(&j);
	}
	return 0;
}

static int fs_stat(capsule_sandbox *sb, const char *path, const struct fs_flags *f)
{
	capsule_error err = { 0 };
	capsule_fs_entry e;
	if (capsule_fs_stat(sb, path, &e, &err) < 0)
		return cli_fail(&err);
	int rc = 0;
	if (f->json) {
		struct json_writer j;
		json_init(&j, true);
		entry_json(&j, &e, path);
		rc = print_json(&j);
	} else {
		char mt[32];
		format_mtime(e.mtime_ns, mt, sizeof(mt));
		printf("path: %s\nkind: %s\nsize: %llu\nmode: %04o\nuid: %u\ngid: %u\nmtime: %s\n", path, kind_name(e.kind),
		       (unsigned long long)e.size, e.mode, e.uid, e.gid, mt);
		if (e.link_target)
			printf("link_target: %s\n", e.link_target);
	}
	capsule_fs_entry_clear(&e);
	return rc;
}

int cmd_fs(int argc, char **argv)
{
	if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")))
		return fputs(fs_usage, stdout), 0;
	if (argc < 3)
		return cli_usage("fs", "needs a sandbox name and a command");
	const char *name = argv[1], *verb = argv[2];
	int i = 3;
	struct fs_flags f = { 0 };
	const char *allowed = !strcmp(verb, "write") ? "pm" : !strcmp(verb, "ls") ? "lj" : !strcmp(verb, "stat") ? "j"
			      : !strcmp(verb, "mkdir") ? "pm" : !strcmp(verb, "rm") ? "rRf" : !strcmp(verb, "mv") ? "n"
			      : !strcmp(verb, "ln") ? "s" : !strcmp(verb, "cat") ? "" : NULL;
	if (!allowed)
		return cli_usage("fs", "unknown command '%s'", verb);
	int rc = parse_flags(verb, allowed, argc, argv, &i, &f);
	if (rc)
		return rc;
	int nargs = argc - i;
	char **args = argv + i;
	int need_min = !strcmp(verb, "ls") ? 0 : !strcmp(verb, "mv") || !strcmp(verb, "ln") ? 2 : 1;
	int need_max = !strcmp(verb, "ls") || !strcmp(verb, "stat") ? 1 : !strcmp(verb, "write") || !strcmp(verb, "mv") || !strcmp(verb, "ln") ? 2 : 1 << 20;
	if (nargs < need_min || nargs > need_max)
		return cli_usage("fs", "%s: wrong number of paths", verb);
	if (!strcmp(verb, "ln") && !f.symbolic)
		return cli_usage("fs", "ln: only symbolic links are supported (use -s)");

	capsule_error err = { 0 };
	capsule_sandbox *sb;
	if ((rc = cli_open_running(name, &sb)) != 0)
		return rc;
	int r = 0;
	if (!strcmp(verb, "write")) {
		unsigned fl = f.parents ? CAPSULE_FS_PARENTS : 0;
		if (nargs == 2 && strcmp(args[1], "-") != 0)
			r = capsule_fs_write(sb, args[0], args[1], strlen(args[1]), f.mode, fl, &err);
		else
			r = capsule_fs_write_from_fd(sb, args[0], STDIN_FILENO, f.mode, fl, &err);
		/* The usual first surprise: a folder that is not there yet. Say how to have it made. */
		size_t len = strlen(err.message);
		if (r == -ENOENT && !f.parents && len + 48 < sizeof(err.message))
			snprintf(err.message + len, sizeof(err.message) - len, " (-p makes the missing folders)");
	} else if (!strcmp(verb, "cat")) {
		for (int k = 0; k < nargs && r == 0; k++)
			r = capsule_fs_read_to_fd(sb, args[k], STDOUT_FILENO, &err);
	} else if (!strcmp(verb, "ls")) {
		rc = fs_ls(sb, nargs ? args[0] : "/", &f);
	} else if (!strcmp(verb, "stat")) {
		rc = fs_stat(sb, args[0], &f);
	} else if (!strcmp(verb, "mkdir")) {
		for (int k = 0; k < nargs && r == 0; k++)
			r = capsule_fs_mkdir(sb, args[k], f.mode, f.parents ? CAPSULE_FS_PARENTS : 0, &err);
	} else if (!strcmp(verb, "rm")) {
		unsigned fl = (f.recursive ? CAPSULE_FS_RECURSIVE : 0) | (f.force ? CAPSULE_FS_FORCE : 0);
		for (int k = 0; k < nargs && r == 0; k++)
			r = capsule_fs_remove(sb, args[k], fl, &err);
	} else if (!strcmp(verb, "mv")) {
		r = capsule_fs_rename(sb, args[0], args[1], f.noreplace ? CAPSULE_FS_NOREPLACE : 0, &err);
	} else {
		r = capsule_fs_symlink(sb, args[0], args[1], &err);
	}
	capsule_sandbox_free(sb);
	if (r < 0)
		return cli_fail(&err);
	return rc;
}

/* NAME:PATH names a path in a sandbox; anything else is a host path (use ./a:b for a host
 * file whose name has a colon). */
static bool split_remote(const char *arg, char *name, size_t n, const char **path)
{
	const char *colon = strchr(arg, ':');
	if (!colon || arg[0] == '/' || arg[0] == '.' || (size_t)(colon - arg) >= n || colon == arg)
		return false;
	for (const char *c = arg; c < colon; c++)
		if (*c == '/')
			return false;
	memcpy(name, arg, (size_t)(colon - arg));
	name[colon - arg] = 0;
	*path = colon + 1;
	return true;
}

int cmd_cp(int argc, char **argv)
{
	if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		printf("Usage: capsule cp SRC DST\n\n"
		       "Copy files and folders between the host and a running sandbox; one side is NAME:PATH.\n"
		       "  capsule cp ./file.txt dev:/app/file.txt\n  capsule cp dev:/app/out ./out\n"
		       "Folders are copied whole; symlinks are copied as symlinks, never followed.\n"
		       "On the host no symlink is followed, not even in the path given: name real folders.\n");
		return 0;
	}
	if (argc != 3)
		return cli_usage("cp", "needs exactly SRC and DST");
	char src_name[128], dst_name[128];
	const char *src_path, *dst_path;
	bool src_remote = split_remote(argv[1], src_name, sizeof(src_name), &src_path);
	bool dst_remote = split_remote(argv[2], dst_name, sizeof(dst_name), &dst_path);
	if (src_remote == dst_remote)
		return cli_usage("cp", "exactly one of SRC and DST must be NAME:PATH in a sandbox");
	const char *name = src_remote ? src_name : dst_name;
	capsule_error err = { 0 };
	capsule_sandbox *sb;
	int rc = cli_open_running(name, &sb);
	if (rc != 0)
		return rc;
	int r = src_remote ? capsule_copy_from(sb, src_path, argv[2], &err) : capsule_copy_to(sb, argv[1], dst_path, &err);
	capsule_sandbox_free(sb);
	return r < 0 ? cli_fail(&err) : 0;
}
