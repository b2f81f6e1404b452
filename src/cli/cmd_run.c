/* run, create, start, exec, stop, kill, rm: the lifecycle verbs. */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <termios.h>
#include <unistd.h>

#include "cli.h"
#include "parse.h"
#include "util.h"

/* What run and exec share: how to run the one command. */
struct exec_cli {
	const char *env[CP_MAX_ENV_CLI + 1];
	size_t nenv;
	char *env_owned[CP_MAX_ENV_CLI];
	const char *workdir;
	const char *user;
	bool interactive, tty, detach;
	uint32_t timeout_ms;
};

/* Sandbox settings for run and create. */
struct sandbox_cli {
	capsule_config *cfg;
	const char *image; /* as given with --image, or NULL */
	bool named;
	bool allow_sensitive;
	char *volumes[64]; /* -v specs, applied after all flags: --allow-sensitive may come later */
	size_t nvolumes;
	char *transforms[32]; /* --transform specs, applied after the -v they name */
	size_t ntransforms;
};

enum {
	OPT_NAME = 1000, OPT_IMAGE, OPT_CPUS, OPT_PIDS, OPT_HOSTNAME, OPT_ISOLATION, OPT_BOOT_TIMEOUT, OPT_TIMEOUT,
	OPT_RM, OPT_HELP, OPT_TMPFS, OPT_ALLOW_SENSITIVE, OPT_TRANSFORM, OPT_NETWORK, OPT_ALLOW_HOST, OPT_ALLOW_CIDR,
	OPT_SAVE,
	OPT_ACCEL, OPT_QEMU_ARG,
	OPT_DISK_SIZE,
	OPT_DISPLAY,
};

static const struct option sandbox_options[] = {
	{ "name", required_argument, NULL, OPT_NAME },
	{ "image", required_argument, NULL, OPT_IMAGE },
	{ "memory", required_argument, NULL, 'm' },
	{ "cpus", required_argument, NULL, OPT_CPUS },
	{ "pids-limit", required_argument, NULL, OPT_PIDS },
	{ "hostname", required_argument, NULL, OPT_HOSTNAME },
	{ "isolation", required_argument, NULL, OPT_ISOLATION },
	{ "boot-timeout", required_argument, NULL, OPT_BOOT_TIMEOUT },
	{ "accel", required_argument, NULL, OPT_ACCEL },
	{ "qemu-arg", required_argument, NULL, OPT_QEMU_ARG },
	{ "disk-size", required_argument, NULL, OPT_DISK_SIZE },
	{ "display", no_argument, NULL, OPT_DISPLAY },
	{ "env", required_argument, NULL, 'e' },
	{ "workdir", required_argument, NULL, 'w' },
	{ "user", required_argument, NULL, 'u' },
	{ "interactive", no_argument, NULL, 'i' },
	{ "tty", no_argument, NULL, 't' },
	{ "detach", no_argument, NULL, 'd' },
	{ "timeout", required_argument, NULL, OPT_TIMEOUT },
	{ "rm", no_argument, NULL, OPT_RM },
	{ "tmpfs", required_argument, NULL, OPT_TMPFS },
	{ "volume", required_argument, NULL, 'v' },
	{ "allow-sensitive", no_argument, NULL, OPT_ALLOW_SENSITIVE },
	{ "transform", required_argument, NULL, OPT_TRANSFORM },
	{ "network", required_argument, NULL, OPT_NETWORK },
	{ "publish", required_argument, NULL, 'p' },
	{ "allow-host", required_argument, NULL, OPT_ALLOW_HOST },
	{ "allow-cidr", required_argument, NULL, OPT_ALLOW_CIDR },
	{ "save", required_argument, NULL, OPT_SAVE },
	{ "help", no_argument, NULL, OPT_HELP },
	{ 0 },
};

static void run_help(const char *verb)
{
	bool is_exec = !strcmp(verb, "exec");
	if (is_exec)
		printf("Usage: capsule exec [OPTIONS] SANDBOX [--] COMMAND [ARG...]\n\n");
	else if (!strcmp(verb, "create"))
		printf("Usage: capsule create [OPTIONS]\n\n");
	else
		printf("Usage: capsule run [OPTIONS] [--] COMMAND [ARG...]\n\n");
	if (!is_exec)
		printf("  --name NAME          name the sandbox (default: generated)\n"
		       "  --image IMAGE        image to start from (default: host)\n"
		       "  -m, --memory SIZE    memory limit, e.g. 512M\n"
		       "  --cpus N             cpu limit, e.g. 1.5\n"
		       "  --pids-limit N       most processes at once\n"
		       "  --hostname NAME      hostname inside (default: the sandbox's name)\n"
		       "  --isolation KIND     container (default) or vm\n"
		       "  --boot-timeout DUR   how long start may take (default 10s; 60s with vm)\n"
		       "  --accel KIND         vm: auto (default: kvm if /dev/kvm opens, else tcg), kvm or tcg\n"
		       "  --qemu-arg ARG       vm: one more argument for QEMU (repeat for more)\n"
		       "  --disk-size SIZE     the sandbox's disk, e.g. 4G: a container's own layer\n"
		       "                       (default: unbounded), a vm's root disk (default 2G)\n"
		       "  --display            vm: a virtio GPU, keyboard and tablet, VNC on a socket\n"
		       "  --tmpfs DST[:OPTS]   a tmpfs at DST; OPTS: size=64M, mode=1777\n"
		       "  -v, --volume SRC:DST[:ro|rw]  bind the host path SRC at DST; SRC not starting\n"
		       "                       with / is a named volume (created if missing)\n"
		       "  --allow-sensitive    allow sensitive host paths (/etc, ~/.ssh, ...) as -v sources\n"
		       "  --transform DST=PLUGIN[:CONFIG]  serve the -v folder at DST through a transform plugin\n"
		       "  --network MODE       none (default: loopback only), mounts-only (the same) or full\n"
		       "                       (outbound through user-mode NAT; the host's 127.0.0.1 is 10.0.2.2)\n"
		       "  -p, --publish [HOSTIP:]HOSTPORT:PORT[/tcp]  forward a host port (default address\n"
		       "                       127.0.0.1) to PORT on the sandbox's loopback\n"
		       "  --allow-host NAME:PORT  with --network full, allow only listed destinations: NAME is\n"
		       "                       resolved now, on the host\n"
		       "  --allow-cidr CIDR[:PORT]  the same for an IPv4 address or network\n"
		       "  --save NAME          save the filesystem as NAME when the sandbox stops\n"
		       "                       (start from it with --image NAME)\n");
	if (strcmp(verb, "create"))
		printf("  -e, --env K=V        set an environment variable (K alone: take it from here)\n"
		       "  -w, --workdir DIR    working directory inside\n"
		       "  -u, --user USER      user[:group] or uid[:gid] inside\n"
		       "  -i, --interactive    keep stdin open\n"
		       "  -t, --tty            allocate a pseudo-terminal\n"
		       "  -d, --detach         run the command in the background\n"
		       "  --timeout DUR        kill the command (and its children) after DUR\n");
	else
		printf("  -e, --env K=V        environment for every command\n");
}

static int parse_common_opt(const char *verb, int opt, struct sandbox_cli *sbc, struct exec_cli *ec)
{
	capsule_error err = { 0 };
	uint64_t v;
	uint32_t ms;
	int r = 0;
	switch (opt) {
	case OPT_NAME:
		if (!sbc)
			return cli_usage(verb, "unknown flag '--name'");
		r = capsule_config_set_name(sbc->cfg, optarg, &err);
		sbc->named = true;
		break;
	case OPT_IMAGE:
		if (!sbc)
			return cli_usage(verb, "unknown flag '--image'");
		r = capsule_config_set_image(sbc->cfg, optarg, &err);
		sbc->image = optarg;
		break;
	case 'm':
		if (!sbc)
			return cli_usage(verb, "unknown flag '--memory'");
		r = capsule_config_set_memory(sbc->cfg, optarg, &err);
		break;
	case OPT_CPUS:
		if (!sbc)
			return cli_usage(verb, "unknown flag '--cpus'");
		r = capsule_config_set_cpus(sbc->cfg, optarg, &err);
		break;
	case OPT_PIDS:
		if (!sbc)
			return cli_usage(verb, "unknown flag '--pids-limit'");
		if ((r = parse_uint(optarg, "pids limit", 0, 4194304, &v, &err)) == 0)
			r = capsule_config_set_pids_limit(sbc->cfg, (uint32_t)v, &err);
		break;
	case OPT_HOSTNAME:
		if (!sbc)
			return cli_usage(verb, "unknown flag '--hostname'");
		r = capsule_config_set_hostname(sbc->cfg, optarg, &err);
		break;
	case OPT_ISOLATION:
		if (!sbc)
			return cli_usage(verb, "unknown flag '--isolation'");
		if (!strcmp(optarg, "container"))
			r = capsule_config_set_isolation(sbc->cfg, CAPSULE_ISOLATION_CONTAINER, &err);
		else if (!strcmp(optarg, "vm"))
			r = capsule_config_set_isolation(sbc->cfg, CAPSULE_ISOLATION_VM, &err);
		else
			return cli_failf("invalid isolation '%s' (use container or vm)", optarg);
		break;
	case OPT_BOOT_TIMEOUT:
		if (!sbc)
			return cli_usage(verb, "unknown flag '--boot-timeout'");
		if ((r = parse_duration_ms(optarg, &ms, &err)) == 0)
			r = capsule_config_set_boot_timeout_ms(sbc->cfg, ms, &err);
		break;
	case OPT_ACCEL:
		if (!sbc)
			return cli_usage(verb, "unknown flag '--accel'");
		r = capsule_config_set_accel(sbc->cfg, optarg, &err);
		break;
	case OPT_QEMU_ARG:
		if (!sbc)
			return cli_usage(verb, "unknown flag '--qemu-arg'");
		r = capsule_config_add_qemu_arg(sbc->cfg, optarg, &err);
		break;
	case OPT_DISK_SIZE:
		if (!sbc)
			return cli_usage(verb, "unknown flag '--disk-size'");
		r = capsule_config_set_disk_size(sbc->cfg, optarg, &err);
		break;
	case OPT_DISPLAY:
		if (!sbc)
			return cli_usage(verb, "unknown flag '--display'");
		r = capsule_config_set_display(sbc->cfg, true, &err);
		break;
	case 'e': {
		const char *kv = optarg;
		char *owned = NULL;
		if (!strchr(kv, '=')) {
			/* docker's -e KEY: the value comes from our own environment, or it is unset.
			 * The name is checked all the same: -e '' is a mistake, not an unset name. */
			if (!*kv)
				return cli_failf("invalid environment variable '': expected KEY or KEY=VALUE");
			if (asprintf(&owned, "%s=", kv) < 0)
				return cli_failf("out of memory");
			r = parse_env(owned, &err);
			free(owned);
			owned = NULL;
			if (r < 0)
				break;
			const char *val = getenv(kv);
			if (!val)
				break;
			if (asprintf(&owned, "%s=%s", kv, val) < 0)
				return cli_failf("out of memory");
			kv = owned;
		}
		if ((r = parse_env(kv, &err)) < 0) {
			free(owned);
			break;
		}
		if (ec && !sbc) {
			if (ec->nenv >= CP_MAX_ENV_CLI) {
				free(owned);
				return cli_failf("too many -e options (at most %d)", CP_MAX_ENV_CLI);
			}
			ec->env_owned[ec->nenv] = owned;
			ec->env[ec->nenv++] = kv;
			ec->env[ec->nenv] = NULL;
		} else {
			r = capsule_config_add_env(sbc->cfg, kv, &err);
			free(owned);
		}
		break;
	}
	case 'w':
		if (!ec)
			return cli_usage(verb, "unknown flag '--workdir'");
		if (optarg[0] != '/')
			return cli_failf("working directory '%s' is not an absolute path", optarg);
		ec->workdir = optarg;
		break;
	case 'u': {
		if (!ec)
			return cli_usage(verb, "unknown flag '--user'");
		char *u = NULL, *g = NULL;
		r = parse_user_spec(optarg, &u, &g, &err);
		free(u);
		free(g);
		ec->user = optarg;
		break;
	}
	case 'i':
	case 't':
	case 'd':
		if (!ec)
			return cli_usage(verb, "unknown flag '-%c'", opt);
		if (opt == 'i')
			ec->interactive = true;
		else if (opt == 't')
			ec->tty = true;
		else
			ec->detach = true;
		break;
	case OPT_TIMEOUT:
		if (!ec)
			return cli_usage(verb, "unknown flag '--timeout'");
		r = parse_duration_ms(optarg, &ec->timeout_ms, &err);
		if (r == 0 && ec->timeout_ms == 0)
			return cli_failf("invalid timeout '%s': must be more than 0", optarg);
		break;
	case OPT_TMPFS: {
		if (!sbc)
			return cli_usage(verb, "unknown flag '--tmpfs'");
		struct tmpfs_spec t;
		if ((r = parse_tmpfs_spec(optarg, &t, &err)) == 0) {
			r = capsule_config_add_tmpfs(sbc->cfg, t.target, t.size_bytes, t.mode, &err);
			tmpfs_spec_free(&t);
		}
		break;
	}
	case 'v':
		if (!sbc)
			return cli_usage(verb, "unknown flag '--volume'");
		if (sbc->nvolumes >= 64)
			return cli_failf("too many -v options");
		sbc->volumes[sbc->nvolumes++] = optarg;
		break;
	case OPT_ALLOW_SENSITIVE:
		if (!sbc)
			return cli_usage(verb, "unknown flag '--allow-sensitive'");
		sbc->allow_sensitive = true;
		break;
	case OPT_TRANSFORM:
		if (!sbc)
			return cli_usage(verb, "unknown flag '--transform'");
		if (sbc->ntransforms >= ARRAY_SIZE(sbc->transforms))
			return cli_failf("too many --transform options");
		sbc->transforms[sbc->ntransforms++] = optarg;
		break;
	case OPT_SAVE:
		if (!sbc)
			return cli_usage(verb, "unknown flag '--save'");
		r = capsule_config_set_save(sbc->cfg, optarg, &err);
		break;
	case OPT_NETWORK:
	case 'p':
	case OPT_ALLOW_HOST:
	case OPT_ALLOW_CIDR:
		if (!sbc)
			return cli_usage(verb, "unknown flag '%s'", opt == 'p' ? "--publish" : "--network");
		if (opt == OPT_NETWORK)
			r = capsule_config_set_network_name(sbc->cfg, optarg, &err);
		else if (opt == 'p')
			r = capsule_config_add_port_forward(sbc->cfg, optarg, &err);
		else if (opt == OPT_ALLOW_HOST)
			r = capsule_config_add_allow_host(sbc->cfg, optarg, &err);
		else
			r = capsule_config_add_allow_cidr(sbc->cfg, optarg, &err);
		break;
	case OPT_RM:
		break; /* run is ephemeral already; accepted for docker muscle memory */
	case OPT_HELP:
		run_help(verb);
		exit(0);
	case '?':
		return EXIT_CAPSULE; /* getopt printed which flag */
	default:
		return cli_usage(verb, "unknown flag");
	}
	return r < 0 ? cli_fail(&err) : 0;
}

static int parse_opts(const char *verb, int argc, char **argv, struct sandbox_cli *sbc, struct exec_cli *ec)
{
	optind = 1;
	opterr = 0;
	int opt;
	/* "+": stop at the first word that is not an option, so the command's own flags are
	 * left alone, with or without "--". */
	/* Leading ':' makes getopt report a missing value as ':' rather than '?'. */
	while ((opt = getopt_long(argc, argv, "+:m:e:w:u:v:p:itdh", sandbox_options, NULL)) != -1) {
		if (opt == 'h')
			opt = OPT_HELP;
		if (opt == '?')
			return cli_usage(verb, "unknown flag '%s'", argv[optind - 1]);
		if (opt == ':')
			return cli_usage(verb, "flag '%s' needs a value", argv[optind - 1]);
		int r = parse_common_opt(verb, opt, sbc, ec);
		if (r)
			return r;
	}
	for (size_t i = 0; sbc && i < sbc->nvolumes; i++) {
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
	/* DST=PLUGIN[:CONFIG]: the plugin path ends at the first ':', the config is the rest. */
	for (size_t i = 0; sbc && i < sbc->ntransforms; i++) {
		capsule_error err = { 0 };
		const char *spec = sbc->transforms[i];
		const char *eq = strchr(spec, '=');
		if (!eq || eq == spec || !eq[1])
			return cli_failf("invalid --transform '%s': expected DST=PLUGIN[:CONFIG]", spec);
		const char *colon = strchr(eq + 1, ':');
		char *target = strndup(spec, (size_t)(eq - spec));
		char *plugin = colon ? strndup(eq + 1, (size_t)(colon - eq - 1)) : strdup(eq + 1);
		int r = target && plugin ? capsule_config_set_bind_transform(sbc->cfg, target, plugin, colon ? colon + 1 : NULL, &err)
					 : cap_err(&err, ENOMEM, "--transform");
		free(target);
		free(plugin);
		if (r < 0)
			return cli_fail(&err);
	}
	return 0;
}

static void exec_cli_free(struct exec_cli *ec)
{
	for (size_t i = 0; i < ec->nenv; i++)
		free(ec->env_owned[i]);
}

/* ---- the I/O pump ---- */

static struct termios saved_termios;
static bool termios_saved;

static void restore_terminal(void)
{
	if (termios_saved)
		tcsetattr(STDIN_FILENO, TCSADRAIN, &saved_termios);
	termios_saved = false;
}

static void raw_terminal(void)
{
	if (!isatty(STDIN_FILENO) || tcgetattr(STDIN_FILENO, &saved_termios) < 0)
		return;
	struct termios raw = saved_termios;
	/* Fully raw: the pty inside already turns \n into \r\n. */
	cfmakeraw(&raw);
	termios_saved = true;
	atexit(restore_terminal);
	tcsetattr(STDIN_FILENO, TCSADRAIN, &raw);
}

static int exit_code_for_start_error(const capsule_error *err)
{
	if (err->code == ENOENT && strstr(err->message, "exec '"))
		return EXIT_NOT_FOUND;
	if ((err->code == EACCES || err->code == ENOEXEC || err->code == EPERM || err->code == EISDIR) &&
	    strstr(err->message, "exec '"))
		return EXIT_CANNOT_EXEC;
	return EXIT_CAPSULE;
}

/* Start the command and pass its streams through until it exits; returns the exit code. */
static int run_command(capsule_sandbox *sb, struct exec_cli *ec, char **argv)
{
	capsule_error err = { 0 };
	capsule_exec_options o = CAPSULE_EXEC_OPTIONS_INIT;
	o.argv = (const char *const *)argv;
	o.env = ec->nenv ? ec->env : NULL;
	o.cwd = ec->workdir;
	o.user = ec->user;
	o.tty = ec->tty;
	o.stdin_open = ec->interactive;
	o.timeout_ms = ec->timeout_ms;
	o.detach = ec->detach;
	if (o.tty && isatty(STDOUT_FILENO)) {
		struct winsize ws;
		if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0) {
			o.rows = ws.ws_row;
			o.cols = ws.ws_col;
		}
	}
	capsule_process *p;
	if (capsule_exec_start(&p, sb, &o, &err) < 0) {
		cli_fail(&err);
		return exit_code_for_start_error(&err);
	}
	if (ec->detach) {
		printf("%d\n", (int)capsule_process_pid(p));
		capsule_process_free(p);
		return 0;
	}

	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGWINCH);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGHUP);
	sigaddset(&mask, SIGQUIT);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	signal(SIGPIPE, SIG_IGN);
	if (o.tty && o.stdin_open)
		raw_terminal();
	capsule_process_set_nonblocking(p, true);

	bool stdin_open = ec->interactive;
	static char buf[128 * 1024];
	int code = 0;
	for (;;) {
		int stream;
		ssize_t n = capsule_process_read(p, &stream, buf, sizeof(buf), &err);
		if (n > 0) {
			write_all(stream == CAPSULE_STDERR ? STDERR_FILENO : STDOUT_FILENO, buf, (size_t)n);
			continue;
		}
		if (n == 0)
			break;
		if (n != -EAGAIN) {
			restore_terminal();
			capsule_process_free(p);
			if (sfd >= 0)
				close(sfd);
			return cli_fail(&err);
		}
		struct pollfd pfd[3] = {
			{ .fd = capsule_process_fd(p), .events = POLLIN },
			{ .fd = stdin_open ? STDIN_FILENO : -1, .events = POLLIN },
			{ .fd = sfd, .events = POLLIN },
		};
		if (poll(pfd, 3, -1) < 0 && errno != EINTR)
			break;
		if (pfd[2].revents) {
			struct signalfd_siginfo si;
			while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
				if (si.ssi_signo == SIGWINCH) {
					struct winsize ws;
					if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0)
						capsule_process_resize(p, ws.ws_row, ws.ws_col, NULL);
				} else {
					/* Like docker's sig-proxy: the command gets the signal. */
					capsule_process_signal(p, (int)si.ssi_signo, NULL);
				}
			}
		}
		if (pfd[1].revents) {
			char in[64 * 1024];
			ssize_t m = read(STDIN_FILENO, in, sizeof(in));
			if (m <= 0) {
				stdin_open = false;
				capsule_process_close_stdin(p, NULL);
			} else {
				/* Blocking for flow control is fine: the command is reading. */
				capsule_process_set_nonblocking(p, false);
				ssize_t w = capsule_process_write(p, in, (size_t)m, &err);
				capsule_process_set_nonblocking(p, true);
				if (w < 0) {
					stdin_open = false;
				}
			}
		}
	}
	capsule_exit_status st;
	if (capsule_process_wait(p, &st, &err) < 0) {
		restore_terminal();
		capsule_process_free(p);
		return cli_fail(&err);
	}
	restore_terminal();
	code = st.exit_code;
	if (st.timed_out)
		fprintf(stderr, "capsule: command timed out after %u ms and was killed\n", ec->timeout_ms);
	capsule_process_free(p);
	if (sfd >= 0)
		close(sfd);
	return code;
}

static void start_stage(const char *stage, uint64_t cur, uint64_t total, void *payload)
{
	(void)cur;
	(void)total;
	(void)payload;
	cli_status_stage(stage);
}

int cmd_run(int argc, char **argv)
{
	capsule_error err = { 0 };
	struct sandbox_cli sbc = { 0 };
	struct exec_cli ec = { 0 };
	if (capsule_config_new(&sbc.cfg, &err) < 0)
		return cli_fail(&err);
	int r = parse_opts("run", argc, argv, &sbc, &ec);
	if (r) {
		capsule_config_free(sbc.cfg);
		return r;
	}
	if (optind < argc && !strcmp(argv[optind], "--"))
		optind++;
	/* An image's Entrypoint and Cmd make the command that is not given (docker run IMAGE). */
	bool from_image = sbc.image && strcmp(sbc.image, "host");
	if (optind >= argc && !from_image) {
		capsule_config_free(sbc.cfg);
		return cli_usage("run", "no command given");
	}
	/* -e on run applies to the command; it is also the sandbox's default for later execs. */
	for (size_t i = 0; i < ec.nenv; i++)
		capsule_config_add_env(sbc.cfg, ec.env[i], NULL);
	if (ec.detach)
		capsule_config_set_detached(sbc.cfg, true, NULL);
	capsule_config_set_progress(sbc.cfg, start_stage, NULL, NULL);
	capsule_sandbox *sb;
	cli_status_begin("starting the sandbox");
	int created = capsule_sandbox_create(&sb, sbc.cfg, &err);
	cli_status_end();
	if (created < 0) {
		capsule_config_free(sbc.cfg);
		exec_cli_free(&ec);
		return cli_fail(&err);
	}
	capsule_config_free(sbc.cfg);
	char **command = NULL;
	if (capsule_sandbox_image_command(sb, (const char *const *)(argv + optind), &command, &err) < 0) {
		capsule_sandbox_stop(sb, 0, NULL);
		capsule_sandbox_free(sb);
		exec_cli_free(&ec);
		return cli_fail(&err);
	}
	if (ec.detach)
		printf("%s\n", capsule_sandbox_name(sb));
	/* docker's run makes a working directory that is not there (its exec does not): a new
	 * sandbox's root is ours to shape, and a run that failed on it would leave what its create
	 * made, a volume named by -v, behind. */
	int made = ec.workdir ? capsule_fs_mkdir(sb, ec.workdir, 0755, CAPSULE_FS_PARENTS, &err) : 0;
	if (made < 0) {
		if (made == -EEXIST)
			snprintf(err.message, sizeof(err.message), "working directory '%s' is not a folder", ec.workdir);
		capsule_strv_free(command);
		capsule_sandbox_stop(sb, 0, NULL);
		capsule_sandbox_free(sb);
		exec_cli_free(&ec);
		return cli_fail(&err);
	}
	int code = run_command(sb, &ec, command);
	capsule_strv_free(command);
	/* The stop is where --save happens: its failure is this command's. */
	if (!ec.detach && capsule_sandbox_stop(sb, 0, &err) < 0) {
		cli_fail(&err);
		if (code == 0)
			code = EXIT_CAPSULE;
	}
	capsule_sandbox_free(sb);
	exec_cli_free(&ec);
	return code;
}

int cmd_create(int argc, char **argv)
{
	capsule_error err = { 0 };
	struct sandbox_cli sbc = { 0 };
	if (capsule_config_new(&sbc.cfg, &err) < 0)
		return cli_fail(&err);
	int r = parse_opts("create", argc, argv, &sbc, NULL);
	if (r == 0 && optind < argc)
		r = cli_usage("create", "unexpected argument '%s'", argv[optind]);
	if (r) {
		capsule_config_free(sbc.cfg);
		return r;
	}
	capsule_config_set_detached(sbc.cfg, true, NULL);
	capsule_config_set_progress(sbc.cfg, start_stage, NULL, NULL);
	capsule_sandbox *sb;
	cli_status_begin("creating the sandbox");
	r = capsule_sandbox_create(&sb, sbc.cfg, &err);
	cli_status_end();
	capsule_config_free(sbc.cfg);
	if (r < 0)
		return cli_fail(&err);
	printf("%s\n", capsule_sandbox_name(sb));
	capsule_sandbox_free(sb);
	return 0;
}

int cmd_exec(int argc, char **argv)
{
	struct exec_cli ec = { 0 };
	int r = parse_opts("exec", argc, argv, NULL, &ec);
	if (r)
		return r;
	if (optind >= argc)
		return cli_usage("exec", "no sandbox given");
	const char *name = argv[optind++];
	if (optind < argc && !strcmp(argv[optind], "--"))
		optind++;
	if (optind >= argc)
		return cli_usage("exec", "no command given");
	capsule_sandbox *sb;
	int rc = cli_open_running(name, &sb);
	if (rc != 0)
		return rc;
	int code = run_command(sb, &ec, argv + optind);
	capsule_sandbox_free(sb);
	exec_cli_free(&ec);
	return code;
}

/* Verbs that take one or more sandbox names and a few flags of their own. */
static int for_each_name(const char *verb, int argc, char **argv, int first, int (*fn)(const char *, void *), void *payload)
{
	if (first >= argc)
		return cli_usage(verb, "no sandbox given");
	int code = 0;
	for (int i = first; i < argc; i++)
		if (fn(argv[i], payload) != 0)
			code = EXIT_CAPSULE;
	return code;
}

static int start_one(const char *name, void *payload)
{
	(void)payload;
	capsule_error err = { 0 };
	capsule_sandbox *sb;
	if (capsule_sandbox_open(&sb, name, &err) < 0)
		return cli_fail(&err);
	cli_status_begin("starting '%s'", name);
	int r = capsule_sandbox_start(sb, &err);
	cli_status_end();
	capsule_sandbox_free(sb);
	/* docker's rule, as for a stop of a stopped sandbox: what is asked for holds already. */
	if (r < 0 && r != -EALREADY)
		return cli_fail(&err);
	printf("%s\n", name);
	return 0;
}

int cmd_start(int argc, char **argv)
{
	if (argc > 1 && argv[1][0] == '-')
		return strcmp(argv[1], "--help") ? cli_usage("start", "unknown flag '%s'", argv[1])
						  : (fputs("Usage: capsule start SANDBOX...\n\n"
							   "Start stopped sandboxes again, with the settings they were created with;\n"
							   "prints each name. A running one is left as it is (not an error).\n",
							   stdout),
						     0);
	return for_each_name("start", argc, argv, 1, start_one, NULL);
}

static int stop_one(const char *name, void *payload)
{
	uint32_t timeout_ms = *(uint32_t *)payload;
	capsule_error err = { 0 };
	capsule_sandbox *sb;
	if (capsule_sandbox_open(&sb, name, &err) < 0)
		return cli_fail(&err);
	int r = capsule_sandbox_stop(sb, timeout_ms, &err);
	capsule_sandbox_free(sb);
	if (r < 0)
		return cli_fail(&err);
	printf("%s\n", name);
	return 0;
}

int cmd_stop(int argc, char **argv)
{
	uint32_t timeout_ms = CAPSULE_STOP_TIMEOUT_DEFAULT_MS;
	static const struct option opts[] = { { "time", required_argument, NULL, 't' }, { "help", no_argument, NULL, 'h' }, { 0 } };
	optind = 1;
	opterr = 0;
	int opt;
	while ((opt = getopt_long(argc, argv, "+:t:h", opts, NULL)) != -1) {
		capsule_error err = { 0 };
		uint64_t secs;
		if (opt == 't') {
			if (parse_uint(optarg, "stop timeout", 0, 86400, &secs, &err) < 0)
				return cli_fail(&err);
			timeout_ms = (uint32_t)secs * 1000u;
		} else if (opt == 'h') {
			printf("Usage: capsule stop [-t SECONDS] SANDBOX...\n\n"
			       "Stop sandboxes: SIGTERM to every process, then SIGKILL to what is left once\n"
			       "the grace is over; prints each name. A stopped one is not an error.\n\n"
			       "  -t, --time SECONDS   the grace (default %u, 0: SIGKILL at once)\n",
			       CAPSULE_STOP_TIMEOUT_DEFAULT_MS / 1000u);
			return 0;
		} else if (opt == ':') {
			return cli_usage("stop", "flag '%s' needs a value", argv[optind - 1]);
		} else {
			return cli_usage("stop", "unknown flag '%s'", argv[optind - 1]);
		}
	}
	return for_each_name("stop", argc, argv, optind, stop_one, &timeout_ms);
}

int cmd_kill(int argc, char **argv)
{
	uint32_t zero = 0;
	if (argc > 1 && !strcmp(argv[1], "--help"))
		return fputs("Usage: capsule kill SANDBOX...\n\n"
			     "Stop sandboxes at once (SIGKILL, the same as 'capsule stop -t 0'); prints each name.\n",
			     stdout),
		       0;
	if (argc > 1 && argv[1][0] == '-')
		return cli_usage("kill", "unknown flag '%s'", argv[1]);
	return for_each_name("kill", argc, argv, 1, stop_one, &zero);
}

static int rm_one(const char *name, void *payload)
{
	bool force = *(bool *)payload;
	capsule_error err = { 0 };
	if (capsule_sandbox_remove(name, force, &err) < 0)
		return cli_fail(&err);
	printf("%s\n", name);
	return 0;
}

int cmd_rm(int argc, char **argv)
{
	bool force = false;
	int i = 1;
	for (; i < argc && argv[i][0] == '-'; i++) {
		if (!strcmp(argv[i], "-f") || !strcmp(argv[i], "--force"))
			force = true;
		else if (!strcmp(argv[i], "--help"))
			return fputs("Usage: capsule rm [-f] SANDBOX...\n\n"
				     "Remove stopped sandboxes: their folder and their own layer; prints each name.\n\n"
				     "  -f, --force   kill a running sandbox first instead of refusing it\n",
				     stdout),
			       0;
		else
			return cli_usage("rm", "unknown flag '%s'", argv[i]);
	}
	return for_each_name("rm", argc, argv, i, rm_one, &force);
}
