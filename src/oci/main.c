/* capsule-oci: runc's command line over libcapsule (docs/oci.md).
 *
 *   capsule-oci [--root DIR] [--log FILE] [--log-format text|json] VERB [OPTIONS] ID ...
 *
 * Options are taken as runc's command-line library takes them: --name VALUE, --name=VALUE,
 * single-letter aliases, switches without a value, before or after the id. */
#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "json.h"
#include "oci.h"
#include "parse.h"
#include "util.h"

static const char *log_path;
static bool log_json;

static void log_line(const char *level, const char *msg)
{
	if (!log_path)
		return;
	int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (fd < 0)
		return;
	char line[2048];
	if (log_json) {
		struct json_writer j;
		json_init(&j, false);
		json_object_begin(&j);
		json_kv_string(&j, "level", level);
		json_kv_string(&j, "msg", msg);
		time_t t = time(NULL);
		struct tm tm;
		gmtime_r(&t, &tm);
		char when[32];
		strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
		json_kv_string(&j, "time", when);
		json_object_end(&j);
		char *text = json_steal(&j, NULL);
		snprintf(line, sizeof(line), "%s\n", text ? text : "{}");
		free(text);
	} else {
		snprintf(line, sizeof(line), "level=%s msg=\"%s\"\n", level, msg);
	}
	write_all(fd, line, strlen(line));
	close(fd);
}

/* "capsule-oci: PREFIXMESSAGE" to stderr, and MESSAGE at LEVEL to --log. */
_printf_(3, 0) static void report(const char *level, const char *prefix, const char *fmt, va_list ap)
{
	char msg[1024];
	vsnprintf(msg, sizeof(msg), fmt, ap);
	fprintf(stderr, "capsule-oci: %s%s\n", prefix, msg);
	log_line(level, msg);
}

int oci_fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	report("error", "", fmt, ap);
	va_end(ap);
	return 1;
}

void oci_warn(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	report("warning", "warning: ", fmt, ap);
	va_end(ap);
}

int oci_fail_err(const capsule_error *err)
{
	return oci_fail("%s", err->message[0] ? err->message : strerror(err->code));
}

/* ---- options ---------------------------------------------------------------------------- */

struct opt {
	const char *name;  /* long name */
	char alias;        /* single letter, or 0 */
	bool takes_value;
	const char **value; /* the last value, or "1" for a switch */
	const char ***list; /* a repeated option (--env): every value; or NULL */
	size_t *nlist;
};

/* Sort ARGV[FIRST..] into options (per OPTS) and positional arguments; "--" ends the
 * options; the first positional argument after the id with STOP_AT_ARGS set ends them too
 * (exec's command keeps its own options). */
static int parse_opts(int argc, char **argv, int first, struct opt *opts, size_t nopts, char ***pos, size_t *npos,
		      size_t stop_after)
{
	*pos = calloc((size_t)argc + 1, sizeof(char *));
	*npos = 0;
	if (!*pos)
		return oci_fail("out of memory");
	for (int i = first; i < argc; i++) {
		const char *a = argv[i];
		if (stop_after && *npos >= stop_after) {
			(*pos)[(*npos)++] = argv[i];
			continue;
		}
		if (!strcmp(a, "--")) {
			for (i++; i < argc; i++)
				(*pos)[(*npos)++] = argv[i];
			break;
		}
		if (a[0] != '-' || !a[1]) {
			(*pos)[(*npos)++] = argv[i];
			continue;
		}
		const char *name = a + 1 + (a[1] == '-');
		const char *eq = strchr(name, '=');
		size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
		struct opt *o = NULL;
		for (size_t k = 0; k < nopts && !o; k++) {
			if ((strlen(opts[k].name) == nlen && !strncmp(opts[k].name, name, nlen)) ||
			    (nlen == 1 && opts[k].alias == name[0]))
				o = &opts[k];
		}
		if (!o)
			return oci_fail("unknown option '%s'", a);
		const char *v = "1";
		if (o->takes_value) {
			if (eq)
				v = eq + 1;
			else if (i + 1 < argc)
				v = argv[++i];
			else
				return oci_fail("option '%s' needs a value", a);
		} else if (eq) {
			v = strcmp(eq + 1, "false") ? "1" : NULL;
		}
		*o->value = v;
		if (o->list) {
			const char **l = realloc(*o->list, (*o->nlist + 2) * sizeof(char *));
			if (!l)
				return oci_fail("out of memory");
			l[(*o->nlist)++] = v;
			l[*o->nlist] = NULL;
			*o->list = l;
		}
	}
	return 0;
}

static int need_id(char **pos, size_t npos, const char *verb)
{
	if (npos < 1)
		return oci_fail("%s: no container id given", verb);
	return 0;
}

/* ---- verbs ------------------------------------------------------------------------------ */

/* runc's --preserve-fds N: our descriptors 3..3+N-1 go to the process as the same numbers. */
static int parse_preserve_fds(const char *n, int *out)
{
	*out = 0;
	if (!n)
		return 0;
	char *end;
	errno = 0;
	long v = strtol(n, &end, 10);
	if (!*n || *end || errno)
		return oci_fail("--preserve-fds '%s': not a number", n);
	if (v < 0)
		return oci_fail("--preserve-fds %ld: a count of descriptors cannot be negative", v);
	if (v > CAPSULE_EXEC_MAX_FDS)
		return oci_fail("--preserve-fds %ld: at most %d descriptors can be passed", v, CAPSULE_EXEC_MAX_FDS);
	for (int fd = 3; fd < 3 + v; fd++)
		if (fcntl(fd, F_GETFD) < 0)
			return oci_fail("--preserve-fds %ld: descriptor %d is not open", v, fd);
	*out = (int)v;
	return 0;
}

static int cmd_create_run(int argc, char **argv, bool create)
{
	const char *bundle = NULL, *pid_file = NULL, *console = NULL, *detach = NULL, *preserve = NULL, *no_pivot = NULL,
		   *no_keyring = NULL, *no_subreaper = NULL, *keep = NULL;
	struct opt opts[] = {
		{ "bundle", 'b', true, &bundle },	  { "pid-file", 0, true, &pid_file },
		{ "console-socket", 0, true, &console }, { "detach", 'd', false, &detach },
		{ "preserve-fds", 0, true, &preserve },	  { "no-pivot", 0, false, &no_pivot },
		{ "no-new-keyring", 0, false, &no_keyring }, { "no-subreaper", 0, false, &no_subreaper },
		{ "keep", 0, false, &keep },
	};
	_cleanup_free_ char **pos = NULL;
	size_t npos;
	int nfds;
	if (parse_opts(argc, argv, 1, opts, ARRAY_SIZE(opts), &pos, &npos, 0) || need_id(pos, npos, argv[0]) ||
	    parse_preserve_fds(preserve, &nfds))
		return 1;
	if (keep)
		return oci_fail("run --keep is not supported: a stopped container's sandbox is removed");
	struct oci_run o = {
		.id = pos[0],
		.bundle = bundle,
		.pid_file = pid_file,
		.console_socket = console,
		.detach = detach != NULL,
		.no_start = create,
		.preserve_fds = nfds,
	};
	return oci_create_or_run(&o);
}

static int cmd_create(int argc, char **argv)
{
	return cmd_create_run(argc, argv, true);
}

static int cmd_run(int argc, char **argv)
{
	return cmd_create_run(argc, argv, false);
}

static int cmd_start(int argc, char **argv)
{
	_cleanup_free_ char **pos = NULL;
	size_t npos;
	if (parse_opts(argc, argv, 1, NULL, 0, &pos, &npos, 0) || need_id(pos, npos, "start"))
		return 1;
	return oci_start(pos[0]);
}

static int load_state(const char *id, struct oci_state *st, int *dirfd_out)
{
	int dirfd;
	if (oci_state_dir_open(id, &dirfd))
		return 1;
	if (oci_state_read(dirfd, st) < 0) {
		close(dirfd);
		return oci_fail("container '%s': no readable state", id);
	}
	if (dirfd_out)
		*dirfd_out = dirfd;
	else
		close(dirfd);
	return 0;
}

static int cmd_state(int argc, char **argv)
{
	_cleanup_free_ char **pos = NULL;
	size_t npos;
	if (parse_opts(argc, argv, 1, NULL, 0, &pos, &npos, 0) || need_id(pos, npos, "state"))
		return 1;
	struct oci_state st;
	if (load_state(pos[0], &st, NULL))
		return 1;
	char *text = NULL;
	oci_state_json(&st, true, &text);
	oci_state_clear(&st);
	if (!text)
		return oci_fail("out of memory");
	printf("%s\n", text);
	free(text);
	return 0;
}

static int signal_number(const char *s)
{
	char *end;
	long n = strtol(s, &end, 10);
	if (!*end && n > 0 && n < 65)
		return (int)n;
	if (!strncasecmp(s, "SIG", 3))
		s += 3;
	for (int i = 1; i < SIGRTMIN; i++) {
		const char *abbrev = sigabbrev_np(i);
		if (abbrev && !strcasecmp(abbrev, s))
			return i;
	}
	return -1;
}

static int cmd_kill(int argc, char **argv)
{
	const char *all = NULL;
	struct opt opts[] = { { "all", 'a', false, &all } };
	_cleanup_free_ char **pos = NULL;
	size_t npos;
	if (parse_opts(argc, argv, 1, opts, ARRAY_SIZE(opts), &pos, &npos, 0) || need_id(pos, npos, "kill"))
		return 1;
	int sig = npos > 1 ? signal_number(pos[1]) : SIGTERM;
	if (sig < 0)
		return oci_fail("kill: unknown signal '%s'", pos[1]);
	struct oci_state st;
	if (load_state(pos[0], &st, NULL))
		return 1;
	oci_state_clear(&st);
	/* runc's words: containerd's shim takes "container not running" as a kill that found
	 * the process gone (the CRI kills an exited container's task before deleting it). */
	if (strcmp(st.status, "created") && strcmp(st.status, "running") && strcmp(st.status, "paused"))
		return oci_fail("container not running: '%s' is %s", pos[0], st.status);
	/* The monitor passes the signal on to the process; SIGKILL (and with --all, every
	 * signal's default end) takes the monitor, and the sandbox goes with it. */
	int r = oci_signal_pid(st.pid, st.pid_start, sig);
	if (r == -ESRCH)
		return oci_fail("container '%s' is not running", pos[0]);
	if (r < 0)
		return oci_fail("kill: %s", strerror(-r));
	return 0;
}

static void wait_gone(pid_t pid, uint64_t start)
{
	for (int i = 0; i < 1000 && oci_proc_start_time(pid) == start; i++) {
		struct timespec ts = { 0, 10 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
}

static int cmd_delete(int argc, char **argv)
{
	const char *force = NULL;
	struct opt opts[] = { { "force", 'f', false, &force } };
	_cleanup_free_ char **pos = NULL;
	size_t npos;
	if (parse_opts(argc, argv, 1, opts, ARRAY_SIZE(opts), &pos, &npos, 0) || need_id(pos, npos, "delete"))
		return 1;
	int dirfd;
	if (oci_check_id(pos[0]))
		return 1;
	struct oci_state st;
	if (load_state(pos[0], &st, &dirfd)) {
		/* runc: deleting what does not exist with --force is not an error. */
		return force ? 0 : 1;
	}
	if (strcmp(st.status, "stopped") && !force) {
		oci_state_clear(&st);
		close(dirfd);
		return oci_fail("container '%s' is %s: stop it first, or delete --force", pos[0], st.status);
	}
	if (strcmp(st.status, "stopped") && oci_signal_pid(st.pid, st.pid_start, SIGKILL) == 0)
		wait_gone(st.pid, st.pid_start);
	/* The monitor's end ends the sandbox; wait for its shim to have removed it, so that the id
	 * can be used again at once. */
	capsule_error err = { 0 };
	if (st.sandbox[0] && capsule_sandbox_remove(st.sandbox, true, &err) < 0 && err.code != ENOENT)
		oci_fail("removing sandbox '%s': %s", st.sandbox, err.message);
	/* The container is gone: its poststop hooks, with the state a stopped container has. */
	snprintf(st.status, sizeof(st.status), "stopped");
	oci_poststop(dirfd, &st);
	oci_state_clear(&st);
	close(dirfd);
	int r = oci_state_dir_remove(pos[0]);
	if (r < 0)
		return oci_fail("removing the state of '%s': %s", pos[0], strerror(-r));
	return 0;
}

static int cmd_exec(int argc, char **argv)
{
	const char *process = NULL, *detach = NULL, *tty = NULL, *console = NULL, *pid_file = NULL, *cwd = NULL,
		   *user = NULL, *env = NULL, *cap = NULL, *preserve = NULL, *nnp = NULL, *label = NULL, *apparmor = NULL,
		   *cgroup = NULL, *ignore_paused = NULL;
	const char **envs = NULL, **caps = NULL;
	size_t nenv = 0, ncaps = 0;
	struct opt opts[] = {
		{ "process", 'p', true, &process },
		{ "detach", 'd', false, &detach },
		{ "tty", 't', false, &tty },
		{ "console-socket", 0, true, &console },
		{ "pid-file", 0, true, &pid_file },
		{ "cwd", 0, true, &cwd },
		{ "user", 'u', true, &user },
		{ "env", 'e', true, &env, &envs, &nenv },
		{ "cap", 'c', true, &cap, &caps, &ncaps },
		{ "preserve-fds", 0, true, &preserve },
		{ "no-new-privs", 0, false, &nnp },
		{ "process-label", 0, true, &label },
		{ "apparmor", 0, true, &apparmor },
		{ "cgroup", 0, true, &cgroup },
		{ "ignore-paused", 0, false, &ignore_paused },
	};
	_cleanup_free_ char **pos = NULL;
	size_t npos;
	int nfds;
	if (parse_opts(argc, argv, 1, opts, ARRAY_SIZE(opts), &pos, &npos, 1) || need_id(pos, npos, "exec") ||
	    parse_preserve_fds(preserve, &nfds))
		return 1;
	if (ncaps)
		return oci_fail("exec --cap is not supported: give the process's capabilities with --process");
	if ((label && *label) || (apparmor && *apparmor))
		return oci_fail("exec: LSM labels and profiles are not supported by capsule");
	if (cgroup)
		return oci_fail("exec --cgroup is not supported: a sandbox has one cgroup");
	if (user) {
		/* runc takes uid[:gid]; so does capsule ("uid:gid"). */
		for (const char *c = user; *c; c++)
			if (!((*c >= '0' && *c <= '9') || *c == ':'))
				return oci_fail("exec --user '%s': give uid[:gid]", user);
	}
	struct oci_exec o = {
		.id = pos[0],
		.process = process,
		.args = npos > 1 ? pos + 1 : NULL,
		.env = envs,
		.nenv = nenv,
		.cwd = cwd,
		.user = user,
		.tty = tty != NULL,
		.detach = detach != NULL,
		.pid_file = pid_file,
		.console_socket = console,
		.preserve_fds = nfds,
	};
	int r = oci_exec(&o);
	free(envs);
	return r;
}

/* End the array J and print it when the listing is JSON (a table was printed as it went). */
static int print_array(struct json_writer *j, bool json)
{
	json_array_end(j);
	char *text = json_steal(j, NULL);
	if (json)
		printf("%s\n", text ? text : "[]");
	free(text);
	return 0;
}

static void json_strings(struct json_writer *j, const char *key, const char *const *v, size_t n)
{
	json_key(j, key);
	json_array_begin(j);
	for (size_t i = 0; i < n; i++)
		json_string(j, v[i]);
	json_array_end(j);
}

static int pids_json_or_table(const char *id, bool json)
{
	struct oci_state st;
	if (load_state(id, &st, NULL))
		return 1;
	oci_state_clear(&st);
	if (strcmp(st.status, "running") && strcmp(st.status, "created") && strcmp(st.status, "paused"))
		return oci_fail("container '%s' is not running", id);
	capsule_error err = { 0 };
	capsule_sandbox *sb;
	capsule_sandbox_info info;
	if (capsule_sandbox_open(&sb, st.sandbox, &err) < 0 || capsule_sandbox_inspect(sb, &info, &err) < 0)
		return oci_fail_err(&err);
	capsule_sandbox_free(sb);
	/* The sandbox's processes are those in the agent's pid namespace; the agent itself is
	 * capsule's, not the container's. */
	char ns[64], link[128], other[128];
	snprintf(ns, sizeof(ns), "/proc/%d/ns/pid", (int)info.init_pid);
	ssize_t n = readlink(ns, link, sizeof(link) - 1);
	if (info.isolation != CAPSULE_ISOLATION_CONTAINER || n <= 0)
		return oci_fail("ps: the processes of a vm are inside its guest");
	link[n] = 0;
	DIR *d = opendir("/proc");
	if (!d)
		return oci_fail("/proc: %s", strerror(errno));
	struct json_writer j;
	json_init(&j, false);
	json_array_begin(&j);
	if (!json)
		printf("PID\n");
	struct dirent *e;
	while ((e = readdir(d))) {
		char *end;
		long pid = strtol(e->d_name, &end, 10);
		if (*end || pid <= 0 || pid == info.init_pid)
			continue;
		snprintf(ns, sizeof(ns), "/proc/%ld/ns/pid", pid);
		ssize_t m = readlink(ns, other, sizeof(other) - 1);
		if (m <= 0)
			continue;
		other[m] = 0;
		if (strcmp(other, link))
			continue;
		if (json)
			json_int(&j, pid);
		else
			printf("%ld\n", pid);
	}
	closedir(d);
	return print_array(&j, json);
}

static int cmd_ps(int argc, char **argv)
{
	const char *format = NULL;
	struct opt opts[] = { { "format", 'f', true, &format } };
	_cleanup_free_ char **pos = NULL;
	size_t npos;
	if (parse_opts(argc, argv, 1, opts, ARRAY_SIZE(opts), &pos, &npos, 1) || need_id(pos, npos, "ps"))
		return 1;
	if (npos > 1)
		return oci_fail("ps: options for ps(1) are not supported: capsule-oci prints the pids");
	if (format && strcmp(format, "json") && strcmp(format, "table"))
		return oci_fail("ps --format '%s': json or table", format);
	return pids_json_or_table(pos[0], format && !strcmp(format, "json"));
}

struct list_walk {
	struct json_writer *j; /* --format json, else NULL */
	bool quiet;
};

static int list_one(const struct oci_state *st, void *payload)
{
	struct list_walk *w = payload;
	bool live = strcmp(st->status, "stopped");
	if (w->j) {
		json_object_begin(w->j);
		json_kv_string(w->j, "ociVersion", OCI_VERSION);
		json_kv_string(w->j, "id", st->id);
		json_kv_int(w->j, "pid", live ? st->pid : 0);
		json_kv_string(w->j, "status", st->status);
		json_kv_string(w->j, "bundle", st->bundle);
		json_kv_string(w->j, "rootfs", st->bundle);
		json_kv_string(w->j, "created", st->created);
		json_kv_string(w->j, "owner", "root");
		json_object_end(w->j);
	} else if (w->quiet) {
		printf("%s\n", st->id);
	} else {
		printf("%-40s %-8d %-10s %-40s %s\n", st->id, live ? (int)st->pid : 0, st->status, st->bundle, st->created);
	}
	return 0;
}

static int cmd_list(int argc, char **argv)
{
	const char *format = NULL, *quiet = NULL;
	struct opt opts[] = { { "format", 'f', true, &format }, { "quiet", 'q', false, &quiet } };
	_cleanup_free_ char **pos = NULL;
	size_t npos;
	if (parse_opts(argc, argv, 1, opts, ARRAY_SIZE(opts), &pos, &npos, 0))
		return 1;
	bool json = format && !strcmp(format, "json");
	if (format && !json && strcmp(format, "table"))
		return oci_fail("list --format '%s': json or table", format);
	struct json_writer j;
	json_init(&j, false);
	json_array_begin(&j);
	if (!json && !quiet)
		printf("%-40s %-8s %-10s %-40s %s\n", "ID", "PID", "STATUS", "BUNDLE", "CREATED");
	struct list_walk w = { json ? &j : NULL, quiet != NULL };
	oci_state_each(list_one, &w);
	return print_array(&j, json);
}

static int cmd_features(int argc, char **argv)
{
	static const char *const caps[] = {
		"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
		"CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
		"CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE",
		"CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
		"CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
		"CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
		"CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
	};
	struct json_writer j;
	json_init(&j, true);
	json_object_begin(&j);
	json_kv_string(&j, "ociVersionMin", "1.0.0");
	json_kv_string(&j, "ociVersionMax", OCI_VERSION);
	json_key(&j, "hooks");
	json_array_begin(&j);
	json_array_end(&j);
	static const char *const mopts[] = { "bind", "rbind", "ro", "rw", "nosuid", "nodev", "private", "rprivate", "slave",
					     "rslave" };
	json_strings(&j, "mountOptions", mopts, ARRAY_SIZE(mopts));
	json_key(&j, "linux");
	json_object_begin(&j);
	static const char *const ns[] = { "pid", "network", "mount", "ipc", "uts", "user", "cgroup" };
	json_strings(&j, "namespaces", ns, ARRAY_SIZE(ns));
	json_strings(&j, "capabilities", caps, ARRAY_SIZE(caps));
	json_key(&j, "cgroup");
	json_object_begin(&j);
	json_kv_bool(&j, "v1", true);
	json_kv_bool(&j, "v2", true);
	json_kv_bool(&j, "systemd", false);
	json_kv_bool(&j, "systemdUser", false);
	json_object_end(&j);
	json_key(&j, "seccomp");
	json_object_begin(&j);
	json_kv_bool(&j, "enabled", true);
	static const char *const acts[] = { "SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD",
					    "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_LOG", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP" };
	json_strings(&j, "actions", acts, ARRAY_SIZE(acts));
	static const char *const ops[] = { "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
					   "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE" };
	json_strings(&j, "operators", ops, ARRAY_SIZE(ops));
	json_object_end(&j);
	json_key(&j, "apparmor");
	json_object_begin(&j);
	json_kv_bool(&j, "enabled", false);
	json_object_end(&j);
	json_key(&j, "selinux");
	json_object_begin(&j);
	json_kv_bool(&j, "enabled", false);
	json_object_end(&j);
	json_object_end(&j);
	json_key(&j, "annotations");
	json_object_begin(&j);
	json_kv_string(&j, "capsule.isolation", "container or vm: the level the bundle runs at");
	json_object_end(&j);
	json_object_end(&j);
	char *text = json_steal(&j, NULL);
	printf("%s\n", text ? text : "{}");
	free(text);
	return 0;
}

/* runc's default spec, trimmed to what capsule honours. */
static const char default_spec[] =
	"{\n"
	"  \"ociVersion\": \"" OCI_VERSION "\",\n"
	"  \"process\": {\n"
	"    \"terminal\": true,\n"
	"    \"user\": { \"uid\": 0, \"gid\": 0 },\n"
	"    \"args\": [ \"sh\" ],\n"
	"    \"env\": [ \"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\", \"TERM=xterm\" ],\n"
	"    \"cwd\": \"/\",\n"
	"    \"capabilities\": {\n"
	"      \"bounding\": [ \"CAP_AUDIT_WRITE\", \"CAP_KILL\", \"CAP_NET_BIND_SERVICE\" ],\n"
	"      \"effective\": [ \"CAP_AUDIT_WRITE\", \"CAP_KILL\", \"CAP_NET_BIND_SERVICE\" ],\n"
	"      \"permitted\": [ \"CAP_AUDIT_WRITE\", \"CAP_KILL\", \"CAP_NET_BIND_SERVICE\" ]\n"
	"    },\n"
	"    \"rlimits\": [ { \"type\": \"RLIMIT_NOFILE\", \"hard\": 1024, \"soft\": 1024 } ],\n"
	"    \"noNewPrivileges\": true\n"
	"  },\n"
	"  \"root\": { \"path\": \"rootfs\", \"readonly\": false },\n"
	"  \"hostname\": \"capsule\",\n"
	"  \"mounts\": [\n"
	"    { \"destination\": \"/proc\", \"type\": \"proc\", \"source\": \"proc\" },\n"
	"    { \"destination\": \"/dev\", \"type\": \"tmpfs\", \"source\": \"tmpfs\", \"options\": [ \"nosuid\", \"strictatime\", \"mode=755\", \"size=65536k\" ] },\n"
	"    { \"destination\": \"/dev/pts\", \"type\": \"devpts\", \"source\": \"devpts\" },\n"
	"    { \"destination\": \"/dev/shm\", \"type\": \"tmpfs\", \"source\": \"shm\" },\n"
	"    { \"destination\": \"/dev/mqueue\", \"type\": \"mqueue\", \"source\": \"mqueue\" },\n"
	"    { \"destination\": \"/sys\", \"type\": \"sysfs\", \"source\": \"sysfs\" }\n"
	"  ],\n"
	"  \"linux\": {\n"
	"    \"resources\": { \"devices\": [ { \"allow\": false, \"access\": \"rwm\" } ] },\n"
	"    \"namespaces\": [ { \"type\": \"pid\" }, { \"type\": \"network\" }, { \"type\": \"ipc\" }, { \"type\": \"uts\" }, { \"type\": \"mount\" } ]\n"
	"  }\n"
	"}\n";

static int cmd_spec(int argc, char **argv)
{
	const char *bundle = NULL, *rootless = NULL;
	struct opt opts[] = { { "bundle", 'b', true, &bundle }, { "rootless", 0, false, &rootless } };
	_cleanup_free_ char **pos = NULL;
	size_t npos;
	if (parse_opts(argc, argv, 1, opts, ARRAY_SIZE(opts), &pos, &npos, 0))
		return 1;
	char path[4200];
	snprintf(path, sizeof(path), "%s/config.json", bundle ? bundle : ".");
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0)
		return oci_fail("%s: %s", path, errno == EEXIST ? "exists already" : strerror(errno));
	int r = write_all(fd, default_spec, strlen(default_spec));
	close(fd);
	return r < 0 ? oci_fail("%s: %s", path, strerror(-r)) : 0;
}

static int refuse(const char *verb, const char *why)
{
	return oci_fail("%s is not supported by capsule-oci: %s", verb, why);
}

static int cmd_checkpoint(int argc, char **argv)
{
	return refuse("checkpoint", "a process's memory cannot be saved yet (capsule's checkpoints keep files)");
}

static int cmd_restore(int argc, char **argv)
{
	return refuse("restore", "a process's memory cannot be saved yet (capsule's checkpoints keep files)");
}

/* pause and resume: the library freezes every process of the sandbox (the cgroup freezer; a
 * vm's QMP stop). The monitor is a host process and stays awake, so a KILL of it (kill,
 * delete --force) still ends a paused container. */
static int cmd_pause_resume(int argc, char **argv)
{
	bool pause = !strcmp(argv[0], "pause");
	_cleanup_free_ char **pos = NULL;
	size_t npos;
	if (parse_opts(argc, argv, 1, NULL, 0, &pos, &npos, 0) || need_id(pos, npos, argv[0]))
		return 1;
	struct oci_state st;
	if (load_state(pos[0], &st, NULL))
		return 1;
	oci_state_clear(&st);
	/* runc: a created or running container pauses, only a paused one resumes. */
	if (pause ? strcmp(st.status, "running") && strcmp(st.status, "created") : strcmp(st.status, "paused") != 0)
		return oci_fail("container '%s' is %s, not %s", pos[0], st.status, pause ? "running" : "paused");
	capsule_error err = { 0 };
	capsule_sandbox *sb;
	if (capsule_sandbox_open(&sb, st.sandbox, &err) < 0)
		return oci_fail_err(&err);
	int r = pause ? capsule_sandbox_pause(sb, &err) : capsule_sandbox_resume(sb, &err);
	capsule_sandbox_free(sb);
	return r < 0 ? oci_fail_err(&err) : 0;
}

static int cmd_update(int argc, char **argv)
{
	struct oci_update u = { 0 };
	const char *kernel = NULL, *kernel_tcp = NULL, *blkio = NULL, *l3 = NULL, *membw = NULL;
	struct opt opts[] = {
		{ "resources", 'r', true, &u.resources },
		{ "memory", 0, true, &u.memory },
		{ "memory-swap", 0, true, &u.memory_swap },
		{ "cpu-quota", 0, true, &u.cpu_quota },
		{ "cpu-period", 0, true, &u.cpu_period },
		{ "cpu-share", 0, true, &u.cpu_share },
		{ "pids-limit", 0, true, &u.pids_limit },
		{ "cpuset-cpus", 0, true, &u.cpuset_cpus },
		{ "cpuset-mems", 0, true, &u.cpuset_mems },
		{ "memory-reservation", 0, true, &u.reservation },
		{ "kernel-memory", 0, true, &kernel },
		{ "kernel-memory-tcp", 0, true, &kernel_tcp },
		{ "blkio-weight", 0, true, &blkio },
		{ "cpu-rt-period", 0, true, &u.rt_period },
		{ "cpu-rt-runtime", 0, true, &u.rt_runtime },
		{ "l3-cache-schema", 0, true, &l3 },
		{ "mem-bw-schema", 0, true, &membw },
	};
	_cleanup_free_ char **pos = NULL;
	size_t npos;
	if (parse_opts(argc, argv, 1, opts, ARRAY_SIZE(opts), &pos, &npos, 0) || need_id(pos, npos, "update"))
		return 1;
	u.id = pos[0];
	const char *no_ctrl = "capsule sets no such limit";
	typeof(u.refused[0]) refused[] = {
		{ "kernel-memory", kernel, "the kernel no longer enforces it (runc 1.1 ignores it)" },
		{ "kernel-memory-tcp", kernel_tcp, "it is set at create only (linux.resources.memory.kernelTCP)" },
		{ "blkio-weight", blkio, no_ctrl },
		{ "l3-cache-schema", l3, "there is no Intel RDT here" }, { "mem-bw-schema", membw, "there is no Intel RDT here" },
	};
	memcpy(u.refused, refused, sizeof(refused));
	u.nrefused = ARRAY_SIZE(refused);
	return oci_update(&u);
}

static int cmd_events(int argc, char **argv)
{
	const char *stats = NULL, *interval = NULL;
	struct opt opts[] = { { "stats", 0, false, &stats }, { "interval", 0, true, &interval } };
	_cleanup_free_ char **pos = NULL;
	size_t npos;
	if (parse_opts(argc, argv, 1, opts, ARRAY_SIZE(opts), &pos, &npos, 0) || need_id(pos, npos, "events"))
		return 1;
	uint32_t ms = 5000;
	capsule_error err = { 0 };
	if (interval && (parse_duration_ms(interval, &ms, &err) < 0 || ms == 0))
		return oci_fail("events --interval '%s': a duration above zero, e.g. 5s or 100ms", interval);
	struct oci_state st;
	if (load_state(pos[0], &st, NULL))
		return 1;
	int r = oci_events(&st, stats != NULL, ms);
	oci_state_clear(&st);
	return r;
}

static const struct {
	const char *name;
	int (*fn)(int argc, char **argv);
} verbs[] = {
	{ "create", cmd_create },	  { "start", cmd_start },	{ "state", cmd_state },
	{ "kill", cmd_kill },		  { "delete", cmd_delete },	{ "run", cmd_run },
	{ "exec", cmd_exec },		  { "ps", cmd_ps },		{ "list", cmd_list },
	{ "features", cmd_features },	  { "spec", cmd_spec },		{ "checkpoint", cmd_checkpoint },
	{ "restore", cmd_restore },	  { "pause", cmd_pause_resume },	{ "resume", cmd_pause_resume },
	{ "update", cmd_update },	  { "events", cmd_events },
};

static void usage(FILE *f)
{
	fprintf(f, "usage: capsule-oci [--root DIR] [--log FILE] [--log-format text|json] VERB [OPTIONS] ID\n"
		   "verbs: create start state kill delete run exec ps pause resume update events list features spec\n"
		   "  update [--resources FILE|-] [--memory N] [--memory-swap N] [--cpu-quota N] [--cpu-period N]\n"
		   "         [--cpu-share N] [--pids-limit N] ID   change a running container's limits\n"
		   "  events [--stats] [--interval 5s] ID           runc's stats and oom events, as JSON lines\n"
		   "(docs/oci.md)\n");
}

int main(int argc, char **argv)
{
	const char *root = NULL, *log = NULL, *log_format = NULL, *systemd = NULL, *debug = NULL, *version = NULL,
		   *help = NULL, *criu = NULL, *rootless = NULL;
	struct opt opts[] = {
		{ "root", 0, true, &root },	  { "log", 0, true, &log },	 { "log-format", 0, true, &log_format },
		{ "systemd-cgroup", 0, false, &systemd }, { "debug", 0, false, &debug }, { "version", 'v', false, &version },
		{ "help", 'h', false, &help },	  { "criu", 0, true, &criu },	 { "rootless", 0, true, &rootless },
	};
	/* The global options come before the verb: stop at the first word. */
	int i = 1;
	for (; i < argc && argv[i][0] == '-'; i++) {
		const char *name = argv[i] + 1 + (argv[i][1] == '-');
		const char *eq = strchr(name, '=');
		size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
		struct opt *o = NULL;
		for (size_t k = 0; k < ARRAY_SIZE(opts) && !o; k++)
			if ((strlen(opts[k].name) == nlen && !strncmp(opts[k].name, name, nlen)) ||
			    (nlen == 1 && opts[k].alias == name[0]))
				o = &opts[k];
		if (!o)
			return oci_fail("unknown option '%s'", argv[i]);
		if (o->takes_value && !eq && i + 1 >= argc)
			return oci_fail("option '%s' needs a value", argv[i]);
		*o->value = o->takes_value ? (eq ? eq + 1 : argv[++i]) : (eq && !strcmp(eq + 1, "false") ? NULL : "1");
	}
	if (log && *log)
		log_path = log;
	if (log_format) {
		if (strcmp(log_format, "json") && strcmp(log_format, "text"))
			return oci_fail("--log-format '%s': json or text", log_format);
		log_json = !strcmp(log_format, "json");
	}
	if (version) {
		printf("capsule-oci version %s\nspec: %s\n", CAPSULE_VERSION_STRING, OCI_VERSION);
		return 0;
	}
	if (help || i >= argc) {
		usage(help ? stdout : stderr);
		return help ? 0 : 1;
	}
	if (root && *root)
		oci_root = root;
	if (systemd)
		return oci_fail("--systemd-cgroup is not supported: capsule makes a sandbox's cgroups itself (use the "
				"cgroupfs manager)");
	if (rootless && strcmp(rootless, "auto") && strcmp(rootless, "false"))
		return oci_fail("--rootless %s is not supported: capsule-oci runs as root", rootless);
	for (size_t k = 0; k < ARRAY_SIZE(verbs); k++)
		if (!strcmp(argv[i], verbs[k].name))
			return verbs[k].fn(argc - i, argv + i);
	usage(stderr);
	return oci_fail("unknown verb '%s'", argv[i]);
}
