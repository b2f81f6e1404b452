/* A sandbox's life in its shim: the resources it is made of, brought up in order by one walk
 * and released by the walk back (kvmtool's dev_init/dev_exit pairs); the stop; the revert,
 * which walks down and up again in the same shim; the end. The level does its part behind
 * s->level (level.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cgroup.h"
#include "freeze.h"
#include "json.h"
#include "layer_copy.h"
#include "rootless.h"
#include "shim.h"
#include "syscalls.h"
#include "vm_store.h"

/* ---- start-up phases ---------------------------------------------------------------- */

/* Each with its time since the shim began, for the log (perf work, and what a slow start
 * spent its time on). */
static uint64_t shim_t0_ns;
static char phase_log[256];

void shim_progress_begin(void)
{
	shim_t0_ns = now_ns();
}

void shim_progress(const char *stage)
{
	size_t n = strlen(phase_log);
	snprintf(phase_log + n, sizeof(phase_log) - n, " %s=%.2fms", stage, (double)(now_ns() - shim_t0_ns) / 1e6);
}

const char *shim_progress_log(void)
{
	return phase_log;
}

/* ---- helpers of both levels --------------------------------------------------------- */

int sandbox_join_cgroup(pid_t child, void *payload, capsule_error *err)
{
	struct shim *s = payload;
	/* A sandbox that is not in its cgroups would run without its limits: that fails the
	 * start, it is not a warning. */
	return s->cg ? cgroup_add_pid(s->cg, child, err) : 0;
}

void proc_kill_and_reap(int pidfd)
{
	sys_pidfd_send_signal(pidfd, SIGKILL);
	siginfo_t si;
	/* By pidfd, not pid: one the loop reaped already may be someone else's by now. */
	while (waitid(P_PIDFD, (id_t)pidfd, &si, WEXITED) < 0 && errno == EINTR)
		;
}

/* Transform servers are our children: reap the ones that exited (a crashed plugin leaves its
 * mount failing with ENOTCONN, not a zombie), or with FORCE kill and reap them all. */
void transform_servers_reap(struct shim *s, bool force)
{
	for (size_t i = 0; i < s->ntransforms; i++) {
		struct transform_server *t = &s->transforms[i];
		int st;
		if (t->pid > 0 && transform_server_reap(t, force, &st) && !force)
			shim_log("transform server of '%s' exited (wait status 0x%x)", t->target, (unsigned)st);
	}
}

static const char *sandbox_hostname(const struct shim *s)
{
	return config_hostname(&s->cfg);
}

/* ---- the resources ------------------------------------------------------------------ */

/* First, so that a host port that is taken fails the start before anything is made. */
static int network_up(struct shim *s, capsule_error *err)
{
	shim_progress("prepare");
	return net_prepare(&s->net, &s->cfg, s->io.epfd, s->run_fd, shim_log_file(), err);
}

/* slirp4netns, the socket factory and the forwards' listeners. */
static void network_down(struct shim *s)
{
	net_reap(&s->net, true);
}

static int cgroup_up(struct shim *s, capsule_error *err)
{
	struct cgroup_limits lim;
	s->level->cgroup_limits(s, &lim);
	char cgname[SANDBOX_CGROUP_NAME_MAX];
	sandbox_cgroup_name(config_cgroup_base(&s->cfg), cgname, sizeof(cgname));
	int r = s->cfg.cgroup_path ? cgroup_create_at(&s->cg, s->cfg.cgroup_path, &lim, err)
				   : cgroup_create(&s->cg, cgname, &lim, err);
	if (r == 0)
		shim_progress("cgroup");
	return r;
}

static void cgroup_down(struct shim *s)
{
	/* finish_ephemeral's child removes them, after the answer, by their name. */
	if (s->cgroup_later) {
		cgroup_free(s->cg);
		s->cg = NULL;
		return;
	}
	capsule_error err = { 0 };
	if (s->cg && cgroup_destroy(s->cg, &err) < 0)
		shim_log("cgroup cleanup: %s", err.message);
	cgroup_free(s->cg);
	s->cg = NULL;
	/* A save's freeze may have made a v1 freezer cgroup beside the others. */
	char cgname[SANDBOX_CGROUP_NAME_MAX];
	sandbox_cgroup_name(config_cgroup_base(&s->cfg), cgname, sizeof(cgname));
	sandbox_freezer_remove(cgname);
}

static int host_side_up(struct shim *s, capsule_error *err)
{
	return s->level->prepare(s, err);
}

static void host_side_down(struct shim *s)
{
	s->level->unprepare(s);
}

/* The socketpair to the agent: the shim's end is the agent connection, the other the
 * process's, handed over by its start. */
static int channel_up(struct shim *s, capsule_error *err)
{
	int sp[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0)
		return cap_err(err, errno, "socketpair");
	socket_stream_buffers(sp[0]);
	socket_stream_buffers(sp[1]);
	io_agent_attach(&s->io, sp[0]);
	s->agent_sock = sp[1];
	return 0;
}

static void channel_down(struct shim *s)
{
	if (s->agent_sock >= 0)
		close(s->agent_sock);
	s->agent_sock = -1;
	io_agent_close(&s->io);
}

static int process_up(struct shim *s, capsule_error *err)
{
	s->boot_deadline_ms = 0;
	int r = s->level->start(s, s->agent_sock, err);
	/* The process has its end (or never will). */
	close(s->agent_sock);
	s->agent_sock = -1;
	if (r < 0)
		return r;
	uint64_t deadline = now_ms() + config_boot_timeout_ms(&s->cfg);
	if (!s->boot_deadline_ms || s->boot_deadline_ms > deadline)
		s->boot_deadline_ms = deadline;
	return 0;
}

static void process_down(struct shim *s)
{
	s->level->teardown(s);
}

static int hello_up(struct shim *s, capsule_error *err)
{
	if (s->restoring)
		return s->level->reattach(s, err);
	return agent_bring_up(s, sandbox_hostname(s), err);
}

static int ready_up(struct shim *s, capsule_error *err)
{
	int r = s->level->ready(s, err);
	if (r == 0)
		shim_progress("ready");
	return r;
}

/* In the order they are made; each down copes with what a failed up got to, and a sandbox's
 * end, its revert and its failed start all walk back through the same downs. */
static const struct resource {
	const char *name;
	int (*up)(struct shim *s, capsule_error *err);
	void (*down)(struct shim *s);
} resources[] = {
	{ "network", network_up, network_down },
	{ "cgroup", cgroup_up, cgroup_down },
	{ "host side", host_side_up, host_side_down },
	{ "agent channel", channel_up, channel_down },
	{ "process", process_up, process_down },
	{ "agent", hello_up, NULL },
	{ "readiness", ready_up, NULL },
};
enum { STEP_CHANNEL = 3, STEP_AGENT = 5 };

static int resources_walk_up(struct shim *s, capsule_error *err)
{
	while (s->resources_up < ARRAY_SIZE(resources)) {
		const struct resource *res = &resources[s->resources_up++];
		int r = res->up(s, err);
		if (r < 0) {
			shim_log("start: %s: %s", res->name, err->message);
			return r;
		}
	}
	return 0;
}

static void resources_walk_down(struct shim *s, size_t keep)
{
	while (s->resources_up > keep) {
		const struct resource *res = &resources[--s->resources_up];
		if (res->down)
			res->down(s);
	}
}

int sandbox_start(struct shim *s, capsule_error *err)
{
	for (;;) {
		int r = resources_walk_up(s, err);
		size_t failed = s->resources_up - 1;
		if (r == 0 || failed < STEP_CHANNEL || failed > STEP_AGENT || !s->level->start_again ||
		    !s->level->start_again(s, err))
			return r;
		resources_walk_down(s, STEP_CHANNEL);
		memset(err, 0, sizeof(*err));
	}
}

void sandbox_teardown(struct shim *s)
{
	resources_walk_down(s, 0);
}

/* ---- state file --------------------------------------------------------------------- */

void write_state(struct shim *s, const char *state)
{
	/* Paused to disk, the sandbox has no process: its shim is ending. */
	bool running = (!strcmp(state, "running") || !strcmp(state, "paused")) && !s->paused_to_disk;
	struct json_writer j;
	json_init(&j, true);
	json_object_begin(&j);
	json_kv_string(&j, "name", s->cfg.name);
	json_kv_string(&j, "state", state);
	if (!strcmp(state, "paused")) {
		json_kv_string(&j, "paused_by", s->paused_by_idle ? "idle" : "user");
		json_kv_string(&j, "paused_to", s->paused_to_disk ? "disk" : "memory");
	}
	if (s->paused_to_disk) {
		/* What a resume needs that the config does not say: the accelerator QEMU ran
		 * with (a TCG guest's state does not load under KVM). */
		json_kv_string(&j, "memory_state", VM_STATE_FILE);
		json_kv_uint(&j, "memory_state_bytes", s->state_bytes);
		json_kv_string(&j, "accel", s->vm.accel);
	}
	json_kv_int(&j, "shim_pid", running ? (int64_t)getpid() : 0);
	json_kv_int(&j, "init_pid", running ? (int64_t)s->proc_pid : 0);
	json_kv_int(&j, "started", s->started_unix);
	json_kv_string(&j, "cgroup", s->cg ? cgroup_memory_path(s->cg) : NULL);
	if (running && s->level->describe)
		s->level->describe(s, &j);
	json_object_end(&j);
	int e = 0;
	char *text = json_steal(&j, &e);
	if (!text)
		return;
	write_file_atomic_at(s->run_fd, "state.json", text, strlen(text), 0600, false);
	free(text);
}

/* ---- stop --------------------------------------------------------------------------- */

void kill_sandbox(struct shim *s)
{
	if (!s->killed)
		s->level->kill(s);
	s->killed = true;
}

void begin_stop(struct shim *s, uint32_t grace_ms)
{
	/* The sandbox is frozen for a save's copy (down for a revert's) and must be thawed to
	 * stop; the copy is abandoned (never renamed into place), not waited for. */
	if (save_job_running(&s->save))
		save_done(s, true);
	/* A paused sandbox's processes could not take their SIGTERM (nor, under the v1 freezer,
	 * even a SIGKILL): it runs again for its grace time, and stops as a running one does. */
	capsule_error err = { 0 };
	if (sandbox_unpause(s, &err) < 0)
		shim_log("resuming to stop: %s", err.message);
	if (s->stopping) {
		uint64_t d = now_ms() + grace_ms;
		if (d < s->stop_deadline_ms)
			s->stop_deadline_ms = d;
		if (grace_ms == 0)
			s->stop_forced = true;
		return;
	}
	s->stopping = true;
	s->stop_deadline_ms = now_ms() + grace_ms;
	shim_log("stopping (grace %u ms)", grace_ms);
	if (grace_ms == 0 || s->io.agent_fd < 0) {
		/* Inside a wait for the guest, or while the agent's frames are walked, that ends
		 * first and the loop kills at once (the deadline is now): the kill's own sync
		 * waits for the agent and refills the buffer being walked. */
		if (!s->agent_waiting && !s->reading_agent)
			kill_sandbox(s);
		return;
	}
	struct cp_stop m = { .timeout_ms = grace_ms };
	struct cp_writer w;
	cp_writer_init(&w);
	if (cp_shutdown_encode(&w, 0, &m) == 0)
		io_to_agent(&s->io, w.buf, w.len);
	cp_writer_free(&w);
}

/* The stop's waiters hear how it went: OK, or the save's error. */
static void answer_stop_waiters(struct shim *s, const capsule_error *save_err)
{
	for (int i = 0; i < MAX_CLIENTS; i++) {
		struct client *c = &s->io.clients[i];
		if (!c->used || !c->stop_waiter)
			continue;
		if (save_err->code) {
			struct cp_error_msg m = { .errnum = (uint32_t)save_err->code, .message = (char *)save_err->message };
			if (cp_error_encode(&s->io.w, c->stop_chan, &m) == 0)
				outq_push(&c->out, s->io.w.buf, s->io.w.len);
		} else if (cp_empty_encode(&s->io.w, CP_OK, c->stop_chan) == 0) {
			outq_push(&c->out, s->io.w.buf, s->io.w.len);
		}
	}
}

/* An ended sandbox's cgroups by their name (BASE's, unique: cgroup_base), as `capsule-shim
 * --cleanup` removes them: its processes are gone, this only removes the folders. */
static void cgroups_remove_by_base(const char *base)
{
	char cgname[SANDBOX_CGROUP_NAME_MAX];
	sandbox_cgroup_name(base, cgname, sizeof(cgname));
	sandbox_freezer_remove(cgname);
	capsule_error err = { 0 };
	cgroup_remove_by_name(cgname, &err);
}

/* The child of finish_ephemeral that removes the sandbox's folder once its parent has answered
 * and exited. It keeps only its end of the go-ahead socket (fd 3) and the run folder (fd 4): a
 * client's socket kept open here would delay that client's end of file. The go-ahead is 'g'
 * and the folder's new name (.gone-NAME.PID, PID this child's), or 'c' and the name (its
 * cgroups are this child's to remove too, by CGROUPS, its configuration's cgroup_base), or 'n'
 * (nothing is), with the reference to the sandbox's mount namespace, whose close unmounts its
 * tree, as fd 5. A parent killed before its go-ahead may not have renamed the folder: one still
 * under the sandbox's name is a stale sandbox's, which the next open of that name sweeps once
 * its lock is free (this process does not hold it); one renamed, a .gone- folder of this
 * child's pid, is this child's, and its cgroups too. */
static _Noreturn void remove_remains(int go, int run, const char *cgroups, bool own_image)
{
	/* Through numbers above 4 first: either may sit on 3 or 4 now. */
	int g = fcntl(go, F_DUPFD_CLOEXEC, 10), r = fcntl(run, F_DUPFD_CLOEXEC, 10);
	if (g < 0 || r < 0 || dup2(g, 3) < 0 || dup2(r, 4) < 0)
		_exit(1);
	sys_close_range(5, ~0U, 0);
	/* One that idles for a ready sandbox's life execs a fresh image: a forked copy would share
	 * the shim's memory copy-on-write meanwhile, and every page the shim then wrote (its take,
	 * its commands) a copy, 0.06 ms more of a take. Failing that, it waits as it is. */
	if (own_image) {
		char *argv[] = { (char *)"capsule-shim", (char *)"--remover", (char *)(cgroups ? cgroups : ""), NULL };
		execve("/proc/self/exe", argv, environ);
	}
	remover_main(cgroups);
}

_Noreturn void remover_main(const char *cgroups)
{
	char text[CAPSULE_NAME_MAX + 40] = "";
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} cm;
	struct iovec iov = { .iov_base = text, .iov_len = sizeof(text) - 1 };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.buf, .msg_controllen = sizeof(cm.buf) };
	ssize_t n;
	while ((n = recvmsg(3, &msg, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR)
		;
	int mntns = -1;
	struct cmsghdr *c = n > 0 ? CMSG_FIRSTHDR(&msg) : NULL;
	if (c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS && c->cmsg_len == CMSG_LEN(sizeof(int)))
		memcpy(&mntns, CMSG_DATA(c), sizeof(int));
	/* As fd 5, where whoever looks for the reference (tests/e2e/test_ephemeral.py) finds it. */
	if (mntns >= 0 && mntns != 5 && dup2(mntns, 5) == 5) {
		close(mntns);
		mntns = 5;
	}
	text[n > 0 ? n : 0] = '\0';
	char b = text[0];
	const char *gone = text + 1;
	bool ours = (b == 'g' || b == 'c') && gone[0] == '.';
	if (n <= 0) {
		/* The parent died: a .gone- folder of this pid is this child's. */
		char suffix[24];
		snprintf(suffix, sizeof(suffix), ".%d", (int)getpid());
		int d = dup(4);
		DIR *dir = d >= 0 ? fdopendir(d) : NULL;
		struct dirent *de;
		while (dir && (de = readdir(dir))) {
			size_t l = strlen(de->d_name), sl = strlen(suffix);
			if (!strncmp(de->d_name, ".gone-", 6) && l > sl && !strcmp(de->d_name + l - sl, suffix) &&
			    l < sizeof(text) - 1) {
				snprintf(text, sizeof(text), "c%s", de->d_name);
				ours = true;
				break;
			}
		}
		if (dir)
			closedir(dir);
		else if (d >= 0)
			close(d);
		b = 'c';
	}
	if (ours)
		home_test_pause("CAPSULE_TEST_SHIM_PAUSE", "end-remains", NULL, ".test-shim-paused");
	/* Whatever the parent said (or if it died): no process is left in the namespace. Killed
	 * before this, the kernel drops the reference all the same. The parent says when it has
	 * closed its own copy (remover_release): ours is then the last, and the unmounting with
	 * it, not the parent's exit, which its caller waits for. A parent gone meanwhile ends
	 * the wait too (EOF), and a parent stopped by someone holds it at most 10 s. */
	if (mntns >= 0) {
		struct timeval tv = { .tv_sec = 10 };
		setsockopt(3, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		char x;
		while (recv(3, &x, 1, 0) < 0 && errno == EINTR)
			;
		close(mntns);
	}
	if (ours) {
		/* The cgroups first: killed in between, the folder's config still names them. */
		if (cgroups && b == 'c')
			cgroups_remove_by_base(cgroups);
		rootless_rm_rf_at(4, gone);
	}
	_exit(0);
}

/* Whether S's end is finish_ephemeral's. */
static bool ends_ephemeral(const struct shim *s)
{
	return s->stop_remove || (!s->cfg.detached && !s->stop_keep);
}

/* Fork finish_ephemeral's child; it waits for the go-ahead. false: none could be forked. */
static bool remover_fork(struct shim *s, int run)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return false;
	pid_t kid = fork();
	if (kid == 0)
		remove_remains(sv[0], run, s->cfg.cgroup_base[0] && !s->cfg.cgroup_path ? s->cfg.cgroup_base : NULL,
			       s->cfg.pool[0] != '\0');
	close(sv[0]);
	if (kid < 0) {
		close(sv[1]);
		return false;
	}
	s->remover_pid = kid;
	s->remover_go = sv[1];
	return true;
}

/* Tell the remover what is its (WHAT: 'g', 'c' or 'n', see remove_remains) under the name
 * GONE, with MNTNS (or none) for it to close, and let it go. */
static void remover_release(struct shim *s, char what, const char *gone, int mntns)
{
	if (s->remover_go < 0)
		return;
	char text[CAPSULE_NAME_MAX + 40];
	int len = snprintf(text, sizeof(text), "%c%s", what, gone);
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} cm;
	memset(&cm, 0, sizeof(cm));
	struct iovec iov = { .iov_base = text, .iov_len = (size_t)len };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	if (mntns >= 0) {
		msg.msg_control = cm.buf;
		msg.msg_controllen = sizeof(cm.buf);
		struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &mntns, sizeof(int));
	}
	/* A remover killed meanwhile leaves its .gone- folder to sweep_abandoned_creates. */
	(void)!sendmsg(s->remover_go, &msg, MSG_NOSIGNAL);
	/* Our copy goes first, and then we say so: the remover closes its own only after that
	 * word, so the last reference is the remover's, and with it the unmounting of the tree
	 * and its two RCU grace periods (namespace_unlock's, the overlay's). In our exit they
	 * were the CLI's to wait for, whenever the remover had closed its copy first (12 of 30
	 * runs, docs/performance.md, cold29). */
	if (mntns >= 0) {
		/* tests/e2e/test_ephemeral.py holds us here: the remover still holds its copy. */
		home_test_pause("CAPSULE_TEST_SHIM_PAUSE", "end-release", NULL, ".test-shim-paused");
		close(mntns);
		(void)!send(s->remover_go, "r", 1, MSG_NOSIGNAL);
	}
	close(s->remover_go);
	s->remover_go = -1;
	s->remover_pid = -1;
}

/* A pool's ready sandbox forks its end's remover now, once it is ready and its creator (the
 * keeper) has its answer: the fork is the refill's, not in the stop a taker waits for. It
 * idles, holding only a socket and the run folder, until the sandbox ends: the go-ahead names
 * the folder as it is then (a take may have renamed the sandbox). */
void remover_prefork(struct shim *s)
{
	if (s->remover_pid > 0 || !s->cfg.pool[0])
		return;
	_cleanup_close_ int run = -1;
	if (home_subdir_open("run", &run, NULL) == 0)
		remover_fork(s, run);
}

/* An ephemeral sandbox's end, once its processes, cgroups and network are gone: what is left
 * is its folder, whose removal (the overlay's upper and work folders among it: 20 to 35 ms on
 * the development machine's ext4) was most of an end's time, and the caller's wait. The name
 * is freed first, and the folder removed after the answer by a child (forked here, or when a
 * pool's sandbox became ready: remover_prefork), whose pid the folder's new name run/.gone-NAME.PID carries: the creator waits for
 * this process's exit, not for the child's, and should the child be killed, sweep_abandoned_creates
 * removes the folder (its pid is gone). The id slot is given back while the folder still holds
 * the name (one given back after the rename could have been claimed meanwhile by a new sandbox
 * of that name). A ready sandbox of a pool is not ended this way: `pool rm` returns with
 * nothing left. */
static _Noreturn void finish_ephemeral(struct shim *s, const capsule_error *save_err)
{
	shim_log("stopped");
	shim_log_close();
	_cleanup_close_ int run = -1;
	char gone[CAPSULE_NAME_MAX + 32] = "";
	if (!s->cfg.pool[0] && home_subdir_open("run", &run, NULL) == 0 && s->remover_pid <= 0)
		remover_fork(s, run);
	if (s->remover_pid > 0)
		home_test_pause("CAPSULE_TEST_SHIM_PAUSE", "end-rename", NULL, ".test-shim-paused");
	/* One forked earlier (a pool's ready sandbox's) and killed since would leave the folder
	 * to the next sweep: a new one removes it now. */
	if (s->remover_pid > 0 && waitpid(s->remover_pid, NULL, WNOHANG) != 0) {
		remover_release(s, 'n', "", -1);
		if (run >= 0)
			remover_fork(s, run);
	}
	pid_t kid = run >= 0 ? s->remover_pid : -1;
	if (kid > 0)
		snprintf(gone, sizeof(gone), ".gone-%s.%d", s->name, (int)kid);
	bool moved = false;
	if (kid > 0) {
		id_slot_release(s->name, s->cfg.id_slot);
		rootless_rm_rf_at(run, gone); /* an earlier process of that pid that died here */
		moved = renameat2(run, s->name, run, gone, RENAME_NOREPLACE) == 0;
	}
	/* The child unmounts the tree after the answer; without one, it is done here. */
	int mntns = moved ? s->ended_mntns : -1;
	if (!moved && s->ended_mntns >= 0)
		close(s->ended_mntns);
	s->ended_mntns = -1;
	if (!moved) {
		if (s->cgroup_later)
			cgroups_remove_by_base(s->cfg.cgroup_base);
		if (run >= 0 || home_subdir_open("run", &run, NULL) == 0)
			rootless_rm_rf_at(run, s->name);
		if (kid <= 0)
			id_slot_release(s->name, s->cfg.id_slot);
	}
	/* Only now let go of the sandbox and tell whoever asked for the stop: when they hear OK
	 * the name is free, and a create of it may follow at once. */
	close(s->lock_fd);
	s->lock_fd = -1;
	answer_stop_waiters(s, save_err);
	io_clients_last_words(&s->io);
	/* The reference goes with the go-ahead (remover_release closes this process's copy). */
	remover_release(s, moved ? (s->cgroup_later ? 'c' : 'g') : 'n', gone, mntns);
	layer_run_deferred_removals();
	_exit(0);
}

_Noreturn void finish_and_exit(struct shim *s)
{
	s->exiting = true;
	if (save_job_running(&s->save))
		save_done(s, true);
	bool ends = ends_ephemeral(s);
	/* Removing cgroups waits for the kernel's cgroup lock, which another sandbox's start holds
	 * while it waits for an RCU grace period (a pool's refill, 5 to 14 ms under load): ended
	 * by finish_ephemeral, cgroups named uniquely go after the answer. */
	s->cgroup_later = ends && !s->cfg.pool[0] && s->cfg.cgroup_base[0] && !s->cfg.cgroup_path;
	/* So does the unmounting of its tree, held by a reference to its mount namespace: at the
	 * agent's exit it was an RCU grace period and each superblock's shutdown (1 to 5 ms of a
	 * cold run). */
	s->unmount_later = ends && !s->cfg.pool[0] && !s->cfg.save[0]; /* a save copies an unmounted layer */
	/* A remover forked early (remover_prefork) for an end that is not this one (a detached
	 * taker's, the keeper's stop of a ready sandbox): it has nothing to do. */
	if (!s->unmount_later)
		remover_release(s, 'n', "", -1);
	/* The agent is gone, and with it every process of the sandbox (it was PID 1). */
	sandbox_teardown(s);
	control_socket_remove(s->run_fd);
	/* A named save is taken now, with every process gone, before anything is removed; the
	 * stop is answered only after it, with its error if it failed. */
	capsule_error save_err = { 0 };
	if (s->cfg.save[0]) {
		uint64_t t0 = now_ns();
		if (s->level->save_at_stop(s, s->cfg.save, &save_err) < 0)
			shim_log("%s", save_err.message);
		else
			shim_log("saved as '%s' (%.1f ms)", s->cfg.save, (double)(now_ns() - t0) / 1e6);
	}
	/* QEMU is gone: what it booted from is free to collect once the stop is answered, not
	 * only once this process has exited (the sandbox's qcow2, if it stays, keeps its base). */
	vm_store_unpin_all();
	/* Nothing of an ephemeral sandbox outlives it, nor of one a STOP removes. */
	if (ends)
		finish_ephemeral(s, &save_err);
	rootless_rm_rf_at(s->run_fd, "fs/work");
	write_state(s, "stopped");
	shim_log("stopped");
	/* Only now, with everything cleaned up, let go of the sandbox and tell whoever asked
	 * for the stop: when they hear OK, a start or rm may take the lock at once. */
	close(s->lock_fd);
	s->lock_fd = -1;
	answer_stop_waiters(s, &save_err);
	io_clients_last_words(&s->io);
	layer_run_deferred_removals();
	_exit(0);
}

_Noreturn void finish_paused_to_disk(struct shim *s)
{
	s->exiting = true;
	s->paused_to_disk = true;
	/* QEMU has quit: what is left of the sandbox (its cgroups, its network, the share's
	 * folder) goes as at a stop; its folder, disk and memory state stay. */
	char accel[sizeof(s->vm.accel)];
	memcpy(accel, s->vm.accel, sizeof(accel));
	sandbox_teardown(s);
	memcpy(s->vm.accel, accel, sizeof(accel));
	control_socket_remove(s->run_fd);
	vm_store_unpin_all();
	write_state(s, "paused");
	shim_log("paused to disk (%llu bytes of memory state); the shim exits", (unsigned long long)s->state_bytes);
	close(s->lock_fd);
	s->lock_fd = -1;
	capsule_error none = { 0 };
	answer_stop_waiters(s, &none);
	io_clients_last_words(&s->io);
	layer_run_deferred_removals();
	_exit(0);
}

/* ---- revert ------------------------------------------------------------------------- */

/* REVERT: the sandbox's processes are killed (as by a stop: commands in flight end with
 * 137), its own layer becomes the checkpoint's (copied by a save job, the loop serving
 * meanwhile), and it starts again in this shim from its boot-time configuration
 * (revert_restart). Connections stay; hot mounts are gone with the old mount namespace, and
 * forwards added while it ran with the old network namespace. Overlayfs cannot swap the upper
 * layer under a mounted overlay, and the root cannot be unmounted under its PID 1: a restart
 * is the one consistent way. */
void revert_take_down(struct shim *s)
{
	/* The new sandbox's fds join the epoll set only once it is up: until then its waits
	 * serve nobody else. */
	s->loop_running = false;
	sandbox_teardown(s);
	io_chans_end(&s->io, SIGKILL);
	memset(&s->hot, 0, sizeof(s->hot));
}

bool sandbox_down(const struct shim *s)
{
	return s->resources_up == 0;
}

int revert_restart(struct shim *s, capsule_error *err)
{
	int r = sandbox_start(s, err);
	if (r < 0)
		return r;
	io_watch(&s->io, s->io.agent_fd, KEY_AGENT, EPOLLIN);
	io_watch(&s->io, s->proc_pidfd, KEY_PIDFD, EPOLLIN);
	s->loop_running = true;
	write_state(s, "running");
	shim_log("restarted, agent pid %d", (int)s->proc_pid);
	return 0;
}
