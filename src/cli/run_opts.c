/* The flags of run, create and exec. A sandbox setting's flag, its help and its checks come
 * from the library's table (capsule_config_option_at): a new setting needs nothing here. What
 * is the CLI's own is how the one command runs (-e, -w, -u, -i, -t, -d, --timeout,
 * --preserve-fds) and the order -v is applied in. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parse.h"
#include "run_opts.h"
#include "util.h"

enum {
	OPT_TIMEOUT = 1000,
	OPT_RM,
	OPT_HELP,
	OPT_ALLOW_SENSITIVE,
	OPT_DIFF,
	OPT_PRESERVE_FDS,
	OPT_SETTING = 2000, /* + the index of a capsule_config_option */
};

static const struct option cli_options[] = {
	{ "env", required_argument, NULL, 'e' },
	{ "workdir", required_argument, NULL, 'w' },
	{ "user", required_argument, NULL, 'u' },
	{ "interactive", no_argument, NULL, 'i' },
	{ "tty", no_argument, NULL, 't' },
	{ "detach", no_argument, NULL, 'd' },
	{ "timeout", required_argument, NULL, OPT_TIMEOUT },
	{ "rm", no_argument, NULL, OPT_RM },
	{ "allow-sensitive", no_argument, NULL, OPT_ALLOW_SENSITIVE },
	{ "diff", no_argument, NULL, OPT_DIFF },
	{ "preserve-fds", required_argument, NULL, OPT_PRESERVE_FDS },
	{ "help", no_argument, NULL, OPT_HELP },
};

/* getopt_long's tables: the settings' long options, then the CLI's own, and the short ones. */
struct option_set {
	struct option *longs;
	char *shorts;
};

static void option_set_free(struct option_set *s)
{
	free(s->longs);
	free(s->shorts);
}

static int option_set_build(struct option_set *s)
{
	size_t count = 0;
	while (capsule_config_option_at(count))
		count++;
	s->longs = calloc(count + ARRAY_SIZE(cli_options) + 1, sizeof(struct option));
	s->shorts = malloc(3 * count + 16);
	if (!s->longs || !s->shorts) {
		option_set_free(s);
		return cli_failf("out of memory");
	}
	/* "+": stop at the first word that is not an option, so the command's own flags are
	 * left alone, with or without "--". Leading ':' makes getopt report a missing value as
	 * ':' rather than '?'. */
	char *sp = s->shorts + sprintf(s->shorts, "+:");
	size_t n = 0;
	for (size_t i = 0; i < count; i++) {
		const capsule_config_option *o = capsule_config_option_at(i);
		s->longs[n++] = (struct option){ o->flag, o->value_name ? required_argument : no_argument, NULL,
						 OPT_SETTING + (int)i };
		if (o->short_flag)
			sp += sprintf(sp, o->value_name ? "%c:" : "%c", o->short_flag);
	}
	for (size_t i = 0; i < ARRAY_SIZE(cli_options); i++)
		s->longs[n++] = cli_options[i];
	strcpy(sp, "e:w:u:itdh");
	return 0;
}

/* "  -m, --memory SIZE" and the help beside it, from column 24, its further lines below. */
static void flag_help(char short_flag, const char *flag, const char *value_name, const char *help)
{
	char left[128], shortpart[8] = "";
	if (short_flag)
		snprintf(shortpart, sizeof(shortpart), "-%c, ", short_flag);
	int n = snprintf(left, sizeof(left), "  %s--%s%s%s", shortpart, flag, value_name ? " " : "",
			 value_name ? value_name : "");
	printf(n <= 21 ? "%-23s" : "%s  ", left);
	for (const char *line = help; line;) {
		const char *nl = strchr(line, '\n');
		printf("%.*s\n", nl ? (int)(nl - line) : (int)strlen(line), line);
		if ((line = nl ? nl + 1 : NULL))
			printf("%23s", "");
	}
}

static void run_help(const char *verb)
{
	bool is_exec = !strcmp(verb, "exec");
	if (is_exec)
		printf("Usage: capsule exec [OPTIONS] SANDBOX [--] COMMAND [ARG...]\n\n");
	else if (!strcmp(verb, "create"))
		printf("Usage: capsule create [OPTIONS]\n\n");
	else if (!strcmp(verb, "pool create"))
		printf("Usage: capsule pool create NAME --size N [OPTIONS]\n\n"
		       "  --size N             how many sandboxes to keep ready (1 to %u)\n",
		       CAPSULE_POOL_SIZE_MAX);
	else
		printf("Usage: capsule run [OPTIONS] [--] COMMAND [ARG...]\n\n");
	const capsule_config_option *o;
	for (size_t i = 0; !is_exec && (o = capsule_config_option_at(i)); i++) {
		flag_help(o->short_flag, o->flag, o->value_name, o->help);
		/* Beside the flag it changes: the CLI's own, not a setting. */
		if (!strcmp(o->flag, "volume"))
			flag_help(0, "allow-sensitive", NULL, "allow sensitive host paths (/etc, ~/.ssh, ...) as -v sources");
	}
	if (strcmp(verb, "create") && strcmp(verb, "pool create"))
		printf("  -e, --env K=V        set an environment variable (K alone: take it from here)\n"
		       "  -w, --workdir DIR    working directory inside\n"
		       "  -u, --user USER      user[:group] or uid[:gid] inside\n"
		       "  -i, --interactive    keep stdin open\n"
		       "  -t, --tty            allocate a pseudo-terminal\n"
		       "  -d, --detach         run the command in the background\n"
		       "  --timeout DUR        kill the command (and its children) after DUR\n"
		       "  --preserve-fds N     pass our fds 3 to 3+N-1 to the command as the same numbers\n"
		       "                       (container level; at most %d)\n", CAPSULE_EXEC_MAX_FDS);
	if (is_exec)
		printf("  --diff               after the command, print the files it added, changed and\n"
		       "                       deleted to stderr (as 'capsule diff'; container level)\n");
	else
		printf("  -e, --env K=V        environment for every command\n");
}

/* A sandbox setting: most go straight to the library; -v and --transform wait for all flags. */
static int setting_opt(const char *verb, const capsule_config_option *o, struct sandbox_cli *sbc)
{
	if (!sbc)
		return cli_usage(verb, "unknown flag '--%s'", o->flag);
	if (!strcmp(o->flag, "volume")) {
		if (sbc->nvolumes >= ARRAY_SIZE(sbc->volumes))
			return cli_failf("too many -v options");
		sbc->volumes[sbc->nvolumes++] = optarg;
		return 0;
	}
	if (!strcmp(o->flag, "transform")) {
		if (sbc->ntransforms >= ARRAY_SIZE(sbc->transforms))
			return cli_failf("too many --transform options");
		sbc->transforms[sbc->ntransforms++] = optarg;
		return 0;
	}
	capsule_error err = { 0 };
	if (capsule_config_set_option(sbc->cfg, o->flag, o->value_name ? optarg : NULL, &err) < 0)
		return cli_fail(&err);
	/* run gives an image's own command when it is given none. */
	if (!strcmp(o->flag, "image"))
		sbc->image = optarg;
	if (!strcmp(o->flag, "pool"))
		sbc->pool = optarg;
	return 0;
}

/* -e KEY=VALUE, or docker's -e KEY: the value comes from our own environment, or it is unset. */
static int env_opt(struct sandbox_cli *sbc, struct exec_cli *ec)
{
	capsule_error err = { 0 };
	const char *kv = optarg;
	_cleanup_free_ char *owned = NULL;
	if (!strchr(kv, '=')) {
		/* The name is checked all the same: -e '' is a mistake, not an unset name. */
		if (!*kv)
			return cli_failf("invalid environment variable '': expected KEY or KEY=VALUE");
		if (asprintf(&owned, "%s=", kv) < 0)
			return cli_failf("out of memory");
		if (parse_env(owned, &err) < 0)
			return cli_fail(&err);
		free(owned);
		owned = NULL;
		const char *val = getenv(kv);
		if (!val)
			return 0;
		if (asprintf(&owned, "%s=%s", kv, val) < 0)
			return cli_failf("out of memory");
		kv = owned;
	}
	if (parse_env(kv, &err) < 0)
		return cli_fail(&err);
	/* run's go to the command; run adds them to the sandbox's own too, unless it is a pool's. */
	if (ec) {
		if (ec->nenv >= CP_MAX_ENV_CLI)
			return cli_failf("too many -e options (at most %d)", CP_MAX_ENV_CLI);
		ec->env_owned[ec->nenv] = steal_ptr(owned);
		ec->env[ec->nenv++] = kv;
		ec->env[ec->nenv] = NULL;
		return 0;
	}
	return capsule_config_add_env(sbc->cfg, kv, &err) < 0 ? cli_fail(&err) : 0;
}

static int exec_opt(const char *verb, int opt, struct exec_cli *ec)
{
	capsule_error err = { 0 };
	if (!ec) {
		if (opt == OPT_TIMEOUT)
			return cli_usage(verb, "unknown flag '--timeout'");
		if (opt == 'w' || opt == 'u')
			return cli_usage(verb, "unknown flag '%s'", opt == 'w' ? "--workdir" : "--user");
		return cli_usage(verb, "unknown flag '-%c'", opt);
	}
	switch (opt) {
	case 'w':
		if (optarg[0] != '/')
			return cli_failf("working directory '%s' is not an absolute path", optarg);
		ec->workdir = optarg;
		return 0;
	case 'u': {
		char *u = NULL, *g = NULL;
		int r = parse_user_spec(optarg, &u, &g, &err);
		free(u);
		free(g);
		ec->user = optarg;
		return r < 0 ? cli_fail(&err) : 0;
	}
	case 'i':
		ec->interactive = true;
		return 0;
	case 't':
		ec->tty = true;
		return 0;
	case 'd':
		ec->detach = true;
		return 0;
	case OPT_TIMEOUT:
		if (parse_duration_ms(optarg, &ec->timeout_ms, &err) < 0)
			return cli_fail(&err);
		if (ec->timeout_ms == 0)
			return cli_failf("invalid timeout '%s': must be more than 0", optarg);
		return 0;
	}
	return cli_usage(verb, "unknown flag");
}

/* podman's --preserve-fds N. Checked as the flags are read, before the CLI opens anything
 * of its own that could take one of those numbers. */
static int preserve_fds_opt(struct exec_cli *ec)
{
	char *end;
	errno = 0;
	long v = strtol(optarg, &end, 10);
	if (!optarg[0] || *end || errno || v < 0 || v > CAPSULE_EXEC_MAX_FDS)
		return cli_failf("--preserve-fds '%s': give a count from 0 to %d", optarg, CAPSULE_EXEC_MAX_FDS);
	for (int fd = 3; fd < 3 + v; fd++)
		if (fcntl(fd, F_GETFD) < 0)
			return cli_failf("--preserve-fds %ld: descriptor %d is not open", v, fd);
	ec->preserve_fds = (int)v;
	return 0;
}

static const capsule_config_option *setting_by_short(int opt)
{
	const capsule_config_option *o;
	for (size_t i = 0; (o = capsule_config_option_at(i)); i++)
		if (o->short_flag == opt)
			return o;
	return NULL;
}

static int one_opt(const char *verb, int opt, struct sandbox_cli *sbc, struct exec_cli *ec)
{
	const capsule_config_option *o;
	if (opt >= OPT_SETTING && (o = capsule_config_option_at((size_t)(opt - OPT_SETTING))))
		return setting_opt(verb, o, sbc);
	if (opt < 128 && (o = setting_by_short(opt)))
		return setting_opt(verb, o, sbc);
	switch (opt) {
	case 'e':
		return env_opt(sbc, ec);
	case 'w':
	case 'u':
	case 'i':
	case 't':
	case 'd':
	case OPT_TIMEOUT:
		return exec_opt(verb, opt, ec);
	case OPT_ALLOW_SENSITIVE:
		if (!sbc)
			return cli_usage(verb, "unknown flag '--allow-sensitive'");
		sbc->allow_sensitive = true;
		return 0;
	case OPT_DIFF:
		if (strcmp(verb, "exec") != 0 || !ec)
			return cli_usage(verb, "unknown flag '--diff'");
		ec->diff = true;
		return 0;
	case OPT_PRESERVE_FDS:
		if (!ec)
			return cli_usage(verb, "unknown flag '--preserve-fds'");
		return preserve_fds_opt(ec);
	case OPT_RM:
		return 0; /* run is ephemeral already; accepted for docker muscle memory */
	case OPT_HELP:
		run_help(verb);
		exit(0);
	}
	return cli_usage(verb, "unknown flag");
}

/* -v after all flags (--allow-sensitive may follow it), then the transforms over them. */
static int apply_mounts(struct sandbox_cli *sbc)
{
	for (size_t i = 0; i < sbc->nvolumes; i++) {
		capsule_error err = { 0 };
		struct mount_spec m;
		if (parse_mount_spec(sbc->volumes[i], &m, &err) < 0)
			return cli_fail(&err);
		int r = 0;
		if (m.source_is_volume)
			r = capsule_config_add_volume(sbc->cfg, m.source, m.target, m.readonly, &err);
		else
			r = capsule_config_add_bind(sbc->cfg, m.source, m.target, m.readonly, sbc->allow_sensitive, &err);
		mount_spec_free(&m);
		if (r < 0)
			return cli_fail(&err);
	}
	for (size_t i = 0; i < sbc->ntransforms; i++) {
		capsule_error err = { 0 };
		if (capsule_config_set_option(sbc->cfg, "transform", sbc->transforms[i], &err) < 0)
			return cli_fail(&err);
	}
	return 0;
}

int run_opts_parse(const char *verb, int argc, char **argv, struct sandbox_cli *sbc, struct exec_cli *ec)
{
	struct option_set s = { 0 };
	int r = option_set_build(&s);
	if (r)
		return r;
	optind = 1;
	opterr = 0;
	int opt;
	while (r == 0 && (opt = getopt_long(argc, argv, s.shorts, s.longs, NULL)) != -1) {
		if (opt == 'h')
			opt = OPT_HELP;
		if (opt == '?')
			r = cli_usage(verb, "unknown flag '%s'", cli_getopt_flag(argc, argv));
		else if (opt == ':')
			r = cli_usage(verb, "flag '%s' needs a value", cli_getopt_flag(argc, argv));
		else
			r = one_opt(verb, opt, sbc, ec);
	}
	option_set_free(&s);
	if (r == 0 && sbc)
		r = apply_mounts(sbc);
	return r;
}

void exec_cli_free(struct exec_cli *ec)
{
	for (size_t i = 0; i < ec->nenv; i++)
		free(ec->env_owned[i]);
}
