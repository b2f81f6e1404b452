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
#include "run_opts.h"
#include "parse.h"
#include "util.h"

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
	/* The handle makes no call after the command but --diff's: its connection can be the
	 * command's alone, closed by the shim at the end (no wakeup of the shim at our exit). */
	o.last = !ec->diff;
	int fds[CAPSULE_EXEC_MAX_FDS];
	for (int i = 0; i < ec->preserve_fds; i++)
		fds[i] = 3 + i;
	o.fds = fds;
	o.nfds = (size_t)ec->preserve_fds;
	if (o.tty && isatty(STDOUT_FILENO)) {
		struct winsize ws;
		if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0) {
			o.rows = ws.ws_row;
			o.cols = ws.ws_col;
		}
	}
	capsule_process *p;
	int started = capsule_exec_start(&p, sb, &o, &err);
	/* The command has its copies: a pipe's write end kept here would hold off its reader's
	 * end of file until the command's output ends too. */
	for (int i = 0; i < ec->preserve_fds; i++)
		close(3 + i);
	if (started < 0) {
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
	/* In .bss, as in cmd_exec: a zeroed local was a 16 KB memset. cmd_run runs once per process. */
	static struct exec_cli ec;
	if (capsule_config_new(&sbc.cfg, &err) < 0)
		return cli_fail(&err);
	int r = run_opts_parse("run", argc, argv, &sbc, &ec);
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
	/* -e on run applies to the command; it is also the sandbox's default for later execs,
	 * except in a sandbox from a pool, which has the pool's settings (and was started before). */
	for (size_t i = 0; i < ec.nenv && !sbc.pool; i++) {
		if (capsule_config_add_env(sbc.cfg, ec.env[i], &err) < 0) {
			capsule_config_free(sbc.cfg);
			exec_cli_free(&ec);
			return cli_fail(&err);
		}
	}
	/* Before a boot that could only end in the refusal. */
	if (ec.preserve_fds && capsule_config_get_isolation(sbc.cfg) == CAPSULE_ISOLATION_VM) {
		capsule_config_free(sbc.cfg);
		exec_cli_free(&ec);
		return cli_failf("--preserve-fds needs the container level: a vm's agent is reached over virtio-serial, "
				 "which carries bytes only");
	}
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
	int r = run_opts_parse("create", argc, argv, &sbc, NULL);
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
	/* 16 KB, mostly the -e arrays: in .bss it is zero without the CLI writing its pages, where
	 * a zeroed local was a 16 KB memset per exec. cmd_exec runs once per process. */
	static struct exec_cli ec;
	int r = run_opts_parse("exec", argc, argv, NULL, &ec);
	if (r)
		return r;
	if (optind >= argc)
		return cli_usage("exec", "no sandbox given");
	const char *name = argv[optind++];
	if (optind < argc && !strcmp(argv[optind], "--"))
		optind++;
	if (optind >= argc)
		return cli_usage("exec", "no command given");
	if (ec.diff && ec.detach)
		return cli_usage("exec", "--diff needs the command's end: it cannot be combined with --detach");
	capsule_sandbox *sb;
	/* Without --diff the connect is the running check: it says "not running" or "paused to
	 * disk" as cli_open_running would, and the folder is walked to once, not three times. */
	capsule_error oerr = { 0 };
	int rc = ec.diff ? cli_open_running(name, &sb) : capsule_sandbox_open(&sb, name, &oerr) < 0 ? cli_fail(&oerr) : 0;
	if (rc != 0)
		return rc;
	/* What the command changed is what differs between the sandbox's diff before and after
	 * it: both cost what changed, not the tree. */
	capsule_error err = { 0 };
	char *before = NULL, *after = NULL;
	if (ec.diff && capsule_sandbox_diff_json(sb, &before, &err) < 0) {
		capsule_sandbox_free(sb);
		exec_cli_free(&ec);
		return cli_fail(&err);
	}
	int code = run_command(sb, &ec, argv + optind);
	if (ec.diff) {
		fflush(stdout);
		if (capsule_sandbox_diff_json(sb, &after, &err) < 0)
			cli_fail(&err);
		else
			cli_print_diff_since(before, after);
	}
	free(before);
	free(after);
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
			return cli_usage("stop", "flag '%s' needs a value", cli_getopt_flag(argc, argv));
		} else {
			return cli_usage("stop", "unknown flag '%s'", cli_getopt_flag(argc, argv));
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

enum pause_verb { VERB_PAUSE, VERB_RESUME, VERB_PAUSE_TO_DISK };

static int pause_one(const char *name, void *payload)
{
	enum pause_verb verb = *(enum pause_verb *)payload;
	capsule_error err = { 0 };
	capsule_sandbox *sb;
	if (capsule_sandbox_open(&sb, name, &err) < 0)
		return cli_fail(&err);
	int r = verb == VERB_RESUME	   ? capsule_sandbox_resume(sb, &err)
		: verb == VERB_PAUSE_TO_DISK ? capsule_sandbox_pause_to_disk(sb, &err)
					     : capsule_sandbox_pause(sb, &err);
	capsule_sandbox_free(sb);
	if (r < 0)
		return cli_fail(&err);
	printf("%s\n", name);
	return 0;
}

static int pause_or_resume(bool resume, int argc, char **argv)
{
	const char *verb = resume ? "resume" : "pause";
	enum pause_verb what = resume ? VERB_RESUME : VERB_PAUSE;
	int i = 1;
	for (; i < argc && argv[i][0] == '-'; i++) {
		if (!strcmp(argv[i], "--help")) {
			if (resume)
				fputs("Usage: capsule resume SANDBOX...\n\n"
				      "Let paused sandboxes run again; prints each name. A running one is not an error.\n"
				      "One paused to disk gets a new shim that loads its memory (no boot), also after\n"
				      "a host restart.\n",
				      stdout);
			else
				fputs("Usage: capsule pause [--to-disk] SANDBOX...\n\n"
				      "Hold every process of running sandboxes still, in memory (the cgroup freezer,\n"
				      "a vm's vCPUs), until 'capsule resume' or a stop; prints each name. Meanwhile\n"
				      "exec, fs, cp and mount are refused; inspect and ps say 'paused'.\n\n"
				      "  --to-disk   vms only: write the guest's memory to the sandbox's folder and end\n"
				      "              QEMU and its shim (their memory freed); 'capsule resume' loads it,\n"
				      "              even after a host restart. Not with a bind or hot mount, nor the\n"
				      "              'host' image (a 9p share in use blocks QEMU's migration).\n",
				      stdout);
			return 0;
		}
		if (!resume && !strcmp(argv[i], "--to-disk")) {
			what = VERB_PAUSE_TO_DISK;
			continue;
		}
		return cli_usage(verb, "unknown flag '%s'", argv[i]);
	}
	return for_each_name(verb, argc, argv, i, pause_one, &what);
}

int cmd_pause(int argc, char **argv)
{
	return pause_or_resume(false, argc, argv);
}

int cmd_resume(int argc, char **argv)
{
	return pause_or_resume(true, argc, argv);
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
