/* image pull|import|ls|rm: the image store. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "json.h"

#ifdef CAPSULE_CLI_IMAGES_HELPER
/* The static CLI has no registry client: main() hands `image` to capsule-images first. */
int cmd_image(int argc, char **argv)
{
	return cli_exec_verb("capsule-images", argc, argv);
}
#else
static void image_help(void)
{
	printf("Usage: capsule image COMMAND\n\n"
	       "Images are pulled from registries (or imported from archives) into the store under\n"
	       "$CAPSULE_HOME/images, and used with 'capsule run --image NAME'.\n\n"
	       "Commands:\n"
	       "  pull REF [--insecure] [--platform OS/ARCH]   pull from a registry (alpine:3.20,\n"
	       "                               localhost:5000/team/tool:1.2); --insecure allows plain HTTP\n"
	       "  import FILE --name REF       import an oci-archive or docker-archive (docker save) tarball\n"
	       "  ls [--json]                  list images\n"
	       "  rm REF...                    remove images (sandboxes made from them keep their layers)\n");
}

struct pull_view {
	bool tty;
	char last_digest[80];
	const char *last_stage;
};

/* On a terminal, one bar redrawn in place per blob; otherwise a plain line per step. */
static void pull_progress(const char *stage, const char *digest, uint64_t done, uint64_t total, void *payload)
{
	struct pull_view *v = payload;
	bool same = !strcmp(v->last_digest, digest) && v->last_stage == stage;
	if (v->tty) {
		if (!strcmp(stage, "download")) {
			int width = 30, filled = total ? (int)((done * (uint64_t)width) / total) : 0;
			char d[16], t[16];
			cli_human_size(done, d, sizeof(d));
			cli_human_size(total, t, sizeof(t));
			fprintf(stderr, "\r%.19s [%.*s%*s] %s / %s ", digest, filled,
				"##############################", width - filled, "", d, t);
		} else {
			fprintf(stderr, "\r%.19s %-50s\n", digest, !strcmp(stage, "unpack") ? "unpacking" : "verified");
		}
		fflush(stderr);
	} else if (!same && strcmp(stage, "download")) {
		char t[16];
		cli_human_size(total, t, sizeof(t));
		fprintf(stderr, "%s %s (%s)\n", !strcmp(stage, "unpack") ? "unpacking" : "downloaded", digest, t);
	}
	snprintf(v->last_digest, sizeof(v->last_digest), "%s", digest);
	v->last_stage = stage;
}

static int image_pull(int argc, char **argv)
{
	capsule_pull_options o = CAPSULE_PULL_OPTIONS_INIT;
	const char *ref = NULL;
	bool quiet = false;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--insecure")) {
			o.insecure = true;
		} else if (!strcmp(argv[i], "-q") || !strcmp(argv[i], "--quiet")) {
			quiet = true;
		} else if (!strcmp(argv[i], "--platform")) {
			if (i + 1 >= argc)
				return cli_usage("image pull", "flag '--platform' needs a value");
			o.platform = argv[++i];
		} else if (!strncmp(argv[i], "--platform=", 11)) {
			o.platform = argv[i] + 11;
		} else if (!strcmp(argv[i], "--help")) {
			return printf("Usage: capsule image pull REF [--insecure] [--platform OS/ARCH] [-q]\n"), 0;
		} else if (argv[i][0] == '-') {
			return cli_usage("image pull", "unknown flag '%s'", argv[i]);
		} else if (ref) {
			return cli_usage("image pull", "unexpected argument '%s'", argv[i]);
		} else {
			ref = argv[i];
		}
	}
	if (!ref)
		return cli_usage("image pull", "no image reference given");
	struct pull_view view = { .tty = isatty(STDERR_FILENO) };
	if (!quiet) {
		o.progress = pull_progress;
		o.payload = &view;
	}
	capsule_error err = { 0 };
	char *name = NULL;
	if (capsule_image_pull(ref, &o, &name, &err) < 0) {
		if (view.tty && view.last_digest[0])
			fputc('\n', stderr);
		return cli_fail(&err);
	}
	printf("%s\n", name);
	free(name);
	return 0;
}

static int image_import(int argc, char **argv)
{
	const char *file = NULL, *name = NULL;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--name")) {
			if (i + 1 >= argc)
				return cli_usage("image import", "flag '--name' needs a value");
			name = argv[++i];
		} else if (!strncmp(argv[i], "--name=", 7)) {
			name = argv[i] + 7;
		} else if (!strcmp(argv[i], "--help")) {
			return printf("Usage: capsule image import FILE --name REF\n"), 0;
		} else if (argv[i][0] == '-') {
			return cli_usage("image import", "unknown flag '%s'", argv[i]);
		} else if (file) {
			return cli_usage("image import", "unexpected argument '%s'", argv[i]);
		} else {
			file = argv[i];
		}
	}
	if (!file)
		return cli_usage("image import", "no archive given");
	if (!name)
		return cli_usage("image import", "no --name given");
	capsule_error err = { 0 };
	char *canon = NULL;
	cli_status_begin("importing '%s'", file);
	int r = capsule_image_import(file, name, NULL, NULL, &canon, &err);
	cli_status_end();
	if (r < 0)
		return cli_fail(&err);
	printf("%s\n", canon);
	free(canon);
	return 0;
}

struct ls_row {
	char *name, *digest;
	int64_t size, created;
};

static int ls_row_member(const char *name, const char *value, size_t len, void *payload)
{
	(void)name;
	struct ls_row r = { 0 };
	if (json_get_string(value, len, "name", &r.name) < 0 || json_get_string(value, len, "digest", &r.digest) < 0) {
		free(r.name);
		return -EBADMSG;
	}
	json_get_int(value, len, "size", &r.size);
	json_get_int(value, len, "created", &r.created);
	char size[16], when[32];
	cli_human_size((uint64_t)r.size, size, sizeof(size));
	time_t t = (time_t)r.created;
	struct tm tm;
	strftime(when, sizeof(when), "%Y-%m-%d %H:%M", localtime_r(&t, &tm));
	printf("%-50s %-19.19s %10s  %s\n", r.name, r.digest, size, when);
	free(r.name);
	free(r.digest);
	return 0;
}

static int image_ls(int argc, char **argv)
{
	bool json = false;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json"))
			json = true;
		else if (!strcmp(argv[i], "--help"))
			return printf("Usage: capsule image ls [--json]\n"), 0;
		else
			return cli_usage("image ls", "unexpected argument '%s'", argv[i]);
	}
	capsule_error err = { 0 };
	char *text = NULL;
	if (capsule_image_list_json(&text, &err) < 0)
		return cli_fail(&err);
	if (json) {
		printf("%s\n", text);
	} else {
		printf("%-50s %-19s %10s  %s\n", "NAME", "DIGEST", "SIZE", "PULLED");
		json_array_each(text, strlen(text), 100000, ls_row_member, NULL);
	}
	free(text);
	return 0;
}

static int image_rm(int argc, char **argv)
{
	if (argc < 2)
		return cli_usage("image rm", "no image given");
	int rc = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--help"))
			return printf("Usage: capsule image rm REF...\n"), 0;
		capsule_error err = { 0 };
		if (capsule_image_remove(argv[i], &err) < 0)
			rc = cli_fail(&err);
		else
			printf("%s\n", argv[i]);
	}
	return rc;
}

int cmd_image(int argc, char **argv)
{
	if (argc < 2)
		return cli_usage("image", "no command given");
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
		image_help();
		return 0;
	}
	static const struct {
		const char *name;
		int (*fn)(int, char **);
	} verbs[] = { { "pull", image_pull }, { "import", image_import }, { "ls", image_ls },
		      { "list", image_ls },   { "rm", image_rm },         { "remove", image_rm } };
	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
		if (!strcmp(argv[1], verbs[i].name))
			return verbs[i].fn(argc - 1, argv + 1);
	return cli_usage("image", "unknown command '%s'", argv[1]);
}
#endif
