/* capsule-shim: one per sandbox, on the host. It creates and owns the sandbox (namespaces
 * and cgroups, or a vm), talks to the agent inside over a socketpair, and serves any number
 * of clients on run/<name>/control.sock, multiplexing their channels onto the agent's.
 *
 *   capsule-shim --name NAME [--unpin]  started by libcapsule; fd 3 is the creator's socket,
 *                                       fd 4 the sandbox's lock, already held; --unpin: started
 *                                       pinned to the creator's CPU, take every CPU back
 *   capsule-shim --cleanup --name NAME  sweep what a killed shim left behind
 *   capsule-shim --probe                what this host supports, as JSON
 *   capsule-shim --remover CGROUP_BASE  a pool sandbox's end's remover (lifecycle.c)
 *
 * It never prints to a terminal: errors go to the creator as protocol ERROR frames, and to
 * run/<name>/shim.log. This file is main and the event loop; shim.h says where the rest is. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cgroup.h"
#include "freeze.h"
#include "layer_copy.h"
#include "rootless.h"
#include "probe.h"
#include "shim.h"

#define CREATOR_FD 3
#define LOCK_FD 4

/* main's alone: every other part is handed the shim it works on. All zero, so in .bss: one
 * field set here put its whole 340 KiB in .data, where each page the shim touched was a page
 * of the file or a private copy of one, resident for the sandbox's life (main sets the rest). */
static struct shim S;

const struct level_ops *level_of(const struct capsule_config *cfg)
{
	return cfg->isolation == CAPSULE_ISOLATION_VM ? &vm_level : &container_level;
}

static struct shim *shim_of_io(struct shim_io *io)
{
	return (struct shim *)((char *)io - offsetof(struct shim, io));
}

static void agent_failed(struct shim_io *io)
{
	begin_stop(shim_of_io(io), 0);
}

static void client_gone(struct shim_io *io, int ci, bool owner)
{
	struct shim *s = shim_of_io(io);
	if (s->save_client == ci)
		s->save_client = -1;
	if (owner) {
		shim_log("creator of the ephemeral sandbox went away");
		begin_stop(s, 0);
	}
}

static int listen_control(capsule_error *err)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	/* A user's socket goes to $XDG_RUNTIME_DIR (rootless.h), linked from the run folder;
	 * else into the run folder, named through our descriptor of it, which keeps the name
	 * short whatever the home's path. */
	bool runtime = rootless_socket_path(S.name, sa.sun_path, sizeof(sa.sun_path)) == 0;
	if (!runtime)
		snprintf(sa.sun_path, sizeof(sa.sun_path), "/proc/self/fd/%d/control.sock", S.run_fd);
	control_socket_remove(S.run_fd);
	if (runtime)
		unlink(sa.sun_path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return cap_err(err, errno, "socket");
	mode_t old = umask(0077);
	int r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (r < 0 || listen(fd, 128) < 0 || (runtime && symlinkat(sa.sun_path, S.run_fd, "control.sock") < 0)) {
		int e = errno;
		close(fd);
		if (runtime)
			unlink(sa.sun_path);
		return cap_err(err, e, "listen on '%s'", sa.sun_path);
	}
	S.listen_fd = fd;
	return 0;
}

static void report_to_creator(int fd, int ret, const capsule_error *err)
{
	struct cp_writer w;
	cp_writer_init(&w);
	struct cp_hello me = { .version = CP_VERSION, .role = "shim" };
	if (cp_hello_encode(&w, 0, &me) == 0)
		write_all(fd, w.buf, w.len);
	if (ret < 0) {
		struct cp_error_msg m = { .errnum = (uint32_t)(err->code ? err->code : -ret), .message = (char *)err->message };
		if (cp_error_encode(&w, 0, &m) == 0)
			write_all(fd, w.buf, w.len);
	} else if (cp_empty_encode(&w, CP_OK, 0) == 0) {
		write_all(fd, w.buf, w.len);
	}
	cp_writer_free(&w);
}

static int open_run_dir(capsule_error *err)
{
	int r = run_dir_open(S.name, &S.run_fd, err);
	if (r < 0)
		return r;
	/* The creator took the lock before anything could see the folder and handed it to us
	 * as fd 4; flock on the same open file description only confirms we hold it. */
	S.lock_fd = LOCK_FD;
	struct stat have, want;
	if (fcntl(S.lock_fd, F_SETFD, FD_CLOEXEC) < 0 || fstat(S.lock_fd, &have) < 0 ||
	    fstatat(S.run_fd, "lock", &want, AT_SYMLINK_NOFOLLOW) < 0 || have.st_dev != want.st_dev ||
	    have.st_ino != want.st_ino)
		return cap_err_plain(err, EBADF, "capsule-shim was not given the lock of sandbox '%s' as fd 4", S.name);
	if (flock(S.lock_fd, LOCK_EX | LOCK_NB) < 0)
		return cap_err_plain(err, EBUSY, "sandbox '%s' is already running", S.name);
	return 0;
}

static int run_cleanup(void)
{
	capsule_error err = { 0 };
	char cgname[SANDBOX_CGROUP_NAME_MAX];
	/* Its cgroups are named after its config's cgroup_base (or, made before there was one, the
	 * name it started under). */
	_cleanup_close_ int dir = -1;
	struct capsule_config cfg;
	if (run_dir_open(S.name, &dir, NULL) == 0 && config_load_at(dir, &cfg, NULL) == 0) {
		sandbox_cgroup_name(config_cgroup_base(&cfg), cgname, sizeof(cgname));
		config_clear(&cfg);
	} else {
		sandbox_cgroup_name(S.name, cgname, sizeof(cgname));
	}
	sandbox_freezer_remove(cgname);
	return cgroup_remove_by_name(cgname, &err) < 0 ? 1 : 0;
}

/* One event of the loop's epoll set. The agent's and the sandbox process's are the loop's
 * own; a wait for the guest (agent_wait_answer) hands it only the others. */
void dispatch_event(struct shim *s, const struct epoll_event *ev)
{
	uint64_t key = ev->data.u64;
	if (key == KEY_LISTEN) {
		for (;;) {
			int fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
			if (fd < 0)
				break;
			/* A client sends its HELLO (and the CLI its EXEC) right behind the connect:
			 * it is usually here already, and read now it costs no turn of the loop. */
			int ci = io_client_add(&s->io, fd, false);
			if (ci >= 0)
				client_readable(s, ci);
		}
	} else if (key == KEY_AGENT) {
		if (ev->events & EPOLLOUT)
			io_agent_writable(&s->io);
		if (s->io.agent_fd >= 0 && (ev->events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
			agent_readable(s);
	} else if (key == KEY_PIDFD) {
		/* The agent (PID 1) or QEMU exited: the sandbox is over. */
		int st;
		waitpid(s->proc_pid, &st, WNOHANG);
		finish_and_exit(s);
	} else if (key == KEY_SAVE) {
		if (save_job_running(&s->save))
			save_done(s, false);
	} else if (key == KEY_SIGNAL) {
		struct signalfd_siginfo si;
		while (read(s->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
			if (si.ssi_signo != SIGCHLD)
				begin_stop(s, CAPSULE_DEFAULT_STOP_TIMEOUT_MS);
			else {
				transform_servers_reap(s, false);
				net_reap(&s->net, false);
			}
		}
	} else if (key >= NET_KEY_BASE) {
		/* A forwarded connection is a client too: its arrival or its traffic resumes a
		 * sandbox paused for idleness (a failed resume is logged; the relay then waits). */
		capsule_error err = { 0 };
		if (s->paused_by_idle && net_key_is_forward(key) && sandbox_unpause(s, &err) < 0)
			shim_log("resume for a forwarded connection: %s", err.message);
		net_event(&s->net, key, ev->events);
	} else {
		int ci = (int)(key - KEY_CLIENT_BASE);
		struct client *c = &s->io.clients[ci];
		if (!c->used || c->gone)
			return;
		if ((ev->events & EPOLLOUT) && !io_client_writable(&s->io, ci))
			return;
		if (ev->events & (EPOLLIN | EPOLLHUP | EPOLLERR))
			client_readable(s, ci);
	}
}

/* After a file operation's answer, the client's next small request tends to follow within
 * tens of microseconds (a write, then a read of it). When the client runs on another CPU,
 * sleeping in between means that request wakes ours out of its idle state (an interrupt to a
 * halted vCPU, 20 to 40 us here), so the loop polls for a while first. On the client's own
 * CPU the poll holds the CPU the client needs and ends with nothing: then it is skipped for
 * the next 4, 8, ... 256 answers, as the library's own wait does (client.c, conn_spin). */
#define SPIN_NS 50000u
#define SPIN_BACKOFF_MAX 256u

static int spin_wait(struct shim *s, struct epoll_event *evs, int max)
{
	static unsigned skip, backoff;
	if (!s->fs_answered)
		return 0;
	s->fs_answered = false;
	if (skip) {
		skip--;
		return 0;
	}
	uint64_t until = now_ns() + SPIN_NS;
	while (now_ns() < until) {
		int n = epoll_wait(s->io.epfd, evs, max, 0);
		if (n != 0) {
			backoff = 0;
			return n;
		}
	}
	backoff = backoff ? backoff * 2 : 4;
	if (backoff > SPIN_BACKOFF_MAX)
		backoff = SPIN_BACKOFF_MAX;
	skip = backoff;
	return 0;
}

_Noreturn static void event_loop(struct shim *s)
{
	s->loop_running = true;
	bool primed = false;
	for (;;) {
		/* Once, at the first moment nothing runs (a pooled sandbox waiting for its take):
		 * the next client's buffers, off that client's path. */
		if (!primed && s->io.active == 0) {
			io_spares_prime(&s->io);
			primed = true;
		}
		int timeout = idle_pause_wait_ms(s);
		if (s->stopping && !s->killed) {
			uint64_t now = now_ms();
			timeout = now >= s->stop_deadline_ms ? 0 : (int)(s->stop_deadline_ms - now);
		}
		struct epoll_event evs[64];
		int n = spin_wait(s, evs, 64);
		if (n == 0)
			n = epoll_wait(s->io.epfd, evs, 64, timeout);
		if (n < 0 && errno != EINTR)
			_exit(1);
		for (int i = 0; i < n; i++)
			dispatch_event(s, &evs[i]);
		idle_pause_check(s);
		if (s->stopping && !s->killed && now_ms() >= s->stop_deadline_ms) {
			/* Said in the log, for whoever wonders why a stop took its whole grace. (An agent
			 * that ended its work closed the channel, and the deadline came forward.) */
			if (s->io.agent_fd >= 0)
				shim_log("the stop's grace is over: killing what is left");
			kill_sandbox(s);
		}
	}
}

/* Nothing made yet: every fd closed, no process. */
static void shim_state_init(void)
{
	S.run_fd = S.lock_fd = S.sigfd = S.listen_fd = -1;
	S.proc_pid = S.proc_pidfd = -1;
	S.agent_sock = -1;
	S.ct.pid = S.ct.pidfd = S.ct.mntns_fd = -1;
	S.ended_mntns = -1;
	S.remover_pid = S.remover_go = -1;
	S.ct_boot.disk = S.ct_boot.memfd = -1;
	S.vm.pid = S.vm.pidfd = S.vm.qmp_fd = -1;
	S.shares.dir_fd = -1;
	S.save = SAVE_JOB_NONE;
	S.save_client = -1;
	io_init(&S.io, -1);
	S.io.agent_failed = agent_failed;
	S.io.client_gone = client_gone;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "name", required_argument, NULL, 'n' },
		{ "cleanup", no_argument, NULL, 'c' },
		{ "probe", no_argument, NULL, 'p' },
		{ "restore", no_argument, NULL, 'r' },
		{ "unpin", no_argument, NULL, 'u' },
		{ 0 },
	};
	/* finish_ephemeral's child of a pool's ready sandbox (remover_prefork), in an image of
	 * its own: fd 3 and 4 are its socket and the run folder. */
	if (argc == 3 && !strcmp(argv[1], "--remover"))
		remover_main(argv[2][0] && cgroup_base_valid(argv[2]) ? argv[2] : NULL);
	S.serving_client = -1;
	bool cleanup = false;
	int o;
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (o == 'n')
			snprintf(S.name, sizeof(S.name), "%s", optarg);
		else if (o == 'c')
			cleanup = true;
		else if (o == 'p')
			return shim_probe();
		else if (o == 'r')
			S.restoring = true;
		else if (o == 'u')
			cpu_unpin(0); /* before any child inherits the pin */
		else
			return 2;
	}
	/* --cleanup also takes what an ended sandbox's cgroups are named after (cgroup_base): its
	 * folder, renamed, is no longer found by a name. */
	if (cleanup && cgroup_base_valid(S.name))
		return run_cleanup();
	if (!S.name[0] || validate_name(S.name, "sandbox name", NULL) < 0)
		return 2;
	if (cleanup)
		return run_cleanup();

	shim_progress_begin();
	layer_defer_removals(true);
	shim_state_init();
	signal(SIGPIPE, SIG_IGN);
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	int creator = CREATOR_FD;
	if (fcntl(creator, F_SETFD, FD_CLOEXEC) < 0)
		return 2;

	capsule_error err = { 0 };
	int r = open_run_dir(&err);
	if (r == 0) {
		shim_log_open(S.run_fd);
		/* S.cfg is still all zero: clearing its 39 KiB again would make each page resident. */
		r = config_load_zeroed_at(S.run_fd, &S.cfg, &err);
	}
	S.level = level_of(&S.cfg);
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigaddset(&mask, SIGCHLD);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	if (r == 0) {
		S.io.epfd = epoll_create1(EPOLL_CLOEXEC);
		S.sigfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
		if (S.io.epfd < 0 || S.sigfd < 0)
			r = cap_err(&err, errno, "epoll/signalfd");
	}
	/* A resume from disk: the memory state must be there, and the level able to load it. */
	if (r == 0 && S.restoring && (!S.level->reattach || faccessat(S.run_fd, VM_STATE_FILE, R_OK, AT_SYMLINK_NOFOLLOW) < 0))
		r = cap_err_plain(&err, ENOENT, "sandbox '%s' has no memory state on disk to resume from", S.name);
	if (r == 0)
		r = sandbox_start(&S, &err);
	if (r == 0)
		r = listen_control(&err);
	if (r < 0) {
		shim_log("start failed: %s", err.message);
		report_to_creator(creator, r, &err);
		sandbox_teardown(&S);
		if (S.run_fd >= 0) {
			control_socket_remove(S.run_fd);
			rootless_rm_rf_at(S.run_fd, "fs/work");
		}
		/* The creator removes the folder of a sandbox that never started. */
		return 1;
	}
	S.started_unix = (int64_t)time(NULL);
	write_state(&S, "running");
	if (S.restoring) {
		/* The guest has run on from it (its disk moved on): it can never be loaded again. */
		unlinkat(S.run_fd, VM_STATE_FILE, 0);
		S.restoring = false;
		shim_log("resumed from disk");
	}
	shim_log("started, agent pid %d;%s", (int)S.proc_pid, shim_progress_log());

	io_watch(&S.io, S.listen_fd, KEY_LISTEN, EPOLLIN);
	io_watch(&S.io, S.io.agent_fd, KEY_AGENT, EPOLLIN);
	io_watch(&S.io, S.proc_pidfd, KEY_PIDFD, EPOLLIN);
	io_watch(&S.io, S.sigfd, KEY_SIGNAL, EPOLLIN);
	/* Before the keeper hears it is ready: the remover's fork and exec are then the refill's,
	 * not beside a take that follows at once. */
	remover_prefork(&S);
	report_to_creator(creator, 0, NULL);
	if (S.cfg.detached) {
		close(creator);
	} else if (io_client_add(&S.io, creator, true) >= 0) {
		S.io.clients[0].hello_done = true;
	}
	event_loop(&S);
}
