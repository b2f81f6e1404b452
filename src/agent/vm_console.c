/* The display's console (--display; capsule.display=1): what a VM's local console offers, a
 * shell on the screen. The kernel's framebuffer console draws /dev/tty1 on the virtio GPU and
 * the virtio keyboard types into it, so a person with a VNC viewer, or `capsule screenshot`
 * and `capsule input`, sees a prompt and can use it.
 *
 * The shell is a command like any other: the sandbox's user (capsule.console_user=, the user
 * `capsule exec` runs as without -u), INIT's environment, seccomp filter and capabilities,
 * no_new_privs, its own session with tty1 as the controlling terminal. It is not a way around
 * the sandbox's confinement, only another terminal into it. When it exits (ctrl-d, `exit`) a
 * new one starts, as getty would, after a pause when it lived only briefly (a shell that cannot
 * start must not spin). At shutdown it is hung up and not restarted. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"
#include "util.h"

#define CONSOLE_TTY "/dev/tty1"
/* A shell that lived less than this is restarted only after RESTART_PAUSE_MS. */
#define SHORT_LIFE_MS 2000
#define RESTART_PAUSE_MS 2000

static struct {
	bool enabled;
	bool stopped;
	const struct cp_init *init;
	char user[128];
	bool user_ok;       /* false: capsule.console_user=-, no shell at all */
	pid_t pid;           /* the running shell; 0 when none */
	uint64_t started_ms;
	uint64_t restart_at; /* 0: no restart pending */
	bool banner_shown;
} C;

/* A line on the console itself: where the person looking at the screen will read it. */
static void console_say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void console_say(const char *fmt, ...)
{
	char line[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	int fd = open(CONSOLE_TTY, O_WRONLY | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return;
	/* The tty turns \n into \r\n only while OPOST is on, which a previous program may have
	 * left off: write the \r ourselves. */
	for (char *p = line; *p; p++) {
		if (*p == '\n')
			(void)!write(fd, "\r", 1);
		(void)!write(fd, p, 1);
	}
	close(fd);
}

static void spawn_shell(void)
{
	char errbuf[512] = "";
	uid_t uid;
	gid_t gid;
	gid_t *groups = NULL;
	size_t ngroups = 0;
	char *home = NULL;
	int r = agent_resolve_user(C.user[0] ? C.user : NULL, &uid, &gid, &groups, &ngroups, &home, errbuf,
				   sizeof(errbuf));
	if (r < 0) {
		console_say("capsule: no console shell: user '%s': %s\n", C.user, errbuf[0] ? errbuf : strerror(-r));
		C.restart_at = 0;
		return;
	}
	/* As login does: the terminal is the user's while their shell runs on it. */
	gid_t tty_gid;
	if (agent_group_gid("/etc/group", "tty", &tty_gid) < 0)
		tty_gid = 0;
	if (chown(CONSOLE_TTY, uid, tty_gid) < 0 || chmod(CONSOLE_TTY, 0620) < 0)
		fprintf(stderr, "capsule-agent: console: chown '%s': %s\n", CONSOLE_TTY, strerror(errno));

	char **envp = calloc(C.init->envc + 3, sizeof(char *));
	if (!envp) {
		free(groups);
		free(home);
		C.restart_at = now_ms() + RESTART_PAUSE_MS;
		return;
	}
	size_t n = 0;
	bool have_home = false;
	for (size_t i = 0; i < C.init->envc; i++) {
		const char *kv = C.init->env[i];
		if (!strncmp(kv, "TERM=", 5))
			continue; /* the console is a Linux VT, whatever a pty client declared */
		have_home |= !strncmp(kv, "HOME=", 5);
		envp[n++] = (char *)kv;
	}
	char home_kv[4200];
	snprintf(home_kv, sizeof(home_kv), "HOME=%s", home ? home : "/");
	if (!have_home)
		envp[n++] = home_kv;
	envp[n++] = "TERM=linux";
	envp[n] = NULL;

	/* The user's login shell, as login starts it, where the sandbox can run it (not a
	 * nologin); else /bin/sh, the one shell every image with a shell has. -l: a login shell,
	 * which reads /etc/profile (PATH and a prompt) as a console login's does. */
	char shell[256];
	if (agent_user_shell(uid, shell, sizeof(shell)) < 0 || strstr(shell, "nologin") || strstr(shell, "/false") ||
	    access(shell, X_OK) < 0)
		snprintf(shell, sizeof(shell), "/bin/sh");
	char *argv[] = { shell, "-l", NULL };
	struct stat st;
	struct spawn_request req = {
		.argv = argv,
		.envp = envp,
		.cwd = home && stat(home, &st) == 0 && S_ISDIR(st.st_mode) ? home : "/",
		.uid = uid,
		.gid = gid,
		.groups = groups,
		.ngroups = ngroups,
		.console = CONSOLE_TTY,
		.seccomp_bpf = C.init->seccomp_bpf,
		.seccomp_len = C.init->seccomp_len,
		.cap_keep = C.init->cap_keep,
	};
	if (!C.banner_shown) {
		char host[256] = "";
		gethostname(host, sizeof(host) - 1);
		console_say("\ncapsule sandbox %s: the display's console, a shell as %s (restarted when it exits).\n"
			    "`capsule exec` runs commands in the same sandbox.\n\n",
			    host, !C.user[0] || !strcmp(C.user, "0") ? "root" : C.user);
		C.banner_shown = true;
	}
	struct spawn_result res;
	r = agent_spawn(&req, &res, errbuf, sizeof(errbuf));
	free(envp);
	free(groups);
	free(home);
	if (r < 0) {
		console_say("capsule: the console shell did not start: %s\n", errbuf);
		C.restart_at = now_ms() + RESTART_PAUSE_MS * 5;
		return;
	}
	C.pid = res.pid;
	C.started_ms = now_ms();
	C.restart_at = 0;
}

void vm_console_start(const struct cp_init *init)
{
	char value[8];
	if (!agent_in_vm() || !agent_cmdline_get("capsule.display", value, sizeof(value)) || strcmp(value, "1"))
		return;
	C.enabled = true;
	C.init = init;
	/* The shim passes the sandbox's user only when it is safe on a command line (a name or
	 * ids); "-" means it was not: no shell then, rather than one as someone else. */
	if (agent_cmdline_get("capsule.console_user", C.user, sizeof(C.user)) && !strcmp(C.user, "-")) {
		console_say("capsule: no console shell: the sandbox's user cannot be passed to the guest\n");
		return;
	}
	C.user_ok = true;
	spawn_shell();
}

bool vm_console_reaped(pid_t pid)
{
	if (!C.enabled || pid != C.pid || pid <= 0)
		return false;
	C.pid = 0;
	if (!C.stopped)
		C.restart_at = now_ms() + (now_ms() - C.started_ms < SHORT_LIFE_MS ? RESTART_PAUSE_MS : 0);
	return true;
}

int vm_console_timeout_ms(void)
{
	if (!C.restart_at || C.stopped)
		return -1;
	uint64_t now = now_ms();
	return C.restart_at <= now ? 0 : (int)(C.restart_at - now);
}

void vm_console_tick(void)
{
	if (C.restart_at && !C.stopped && C.user_ok && now_ms() >= C.restart_at)
		spawn_shell();
}

void vm_console_stop(void)
{
	C.stopped = true;
	C.restart_at = 0;
	/* An interactive shell ignores SIGTERM, which is all the other commands get first: a
	 * hangup is what ends a terminal's shell, and its job-control children with it. */
	if (C.pid > 0) {
		kill(-C.pid, SIGHUP);
		kill(-C.pid, SIGCONT);
	}
}
