/* capsule-shim: one per sandbox, on the host. It creates and owns the sandbox (namespaces
 * and cgroups), talks to the agent inside over a socketpair, and serves any number of
 * clients on run/<name>/control.sock, multiplexing their channels onto the agent's.
 *
 *   capsule-shim --name NAME            started by libcapsule; fd 3 is the creator's socket,
 *                                       fd 4 the sandbox's lock, already held
 *   capsule-shim --cleanup --name NAME  sweep what a killed shim left behind
 *   capsule-shim --probe                what this host supports, as JSON
 *
 * It never prints to a terminal: errors go to the creator as protocol ERROR frames, and to
 * run/<name>/shim.log. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/sendfile.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>

#include "cgroup.h"
#include "container.h"
#include "internal.h"
#include "json.h"
#include "mounts.h"
#include "net.h"
#include "probe.h"
#include "proto.h"
#include "layer_copy.h"
#include "save.h"
#include "saves.h"
#include "freeze.h"
#include "seccomp_filter.h"
#include "syscalls.h"
#include "transform.h"
#include "util.h"
#include "vm.h"
#include "vmnet.h"
#include "shares.h"

#define CREATOR_FD 3
#define LOCK_FD 4
#define MAX_CLIENTS 256
#define MAX_CHANNELS 4096
#define MAX_CHANNELS_PER_CLIENT 256
#define CLIENT_OUTQ_MAX (16u << 20)
#define AGENT_OUTQ_MAX (8u << 20)

enum { KEY_LISTEN = 1, KEY_AGENT, KEY_PIDFD, KEY_SIGNAL, KEY_SAVE, KEY_CLIENT_BASE = 16 };

/* Bytes waiting to be written to a non-blocking socket. */
struct outq {
	uint8_t *buf;
	size_t start, len, cap;
};

struct client {
	bool used;
	int fd;
	bool owner;      /* the creator of an ephemeral sandbox: its EOF ends the sandbox */
	bool hello_done;
	bool closing;    /* flush what is queued, then close */
	bool stop_waiter; /* gets OK when the stop completes */
	uint32_t stop_chan;
	bool gone;        /* closed while its request waits for the guest: freed once it returns */
	struct cp_rxbuf rx;
	struct outq out;
	unsigned nchans;  /* channels open for this client: one client cannot take them all */
};

/* One multiplexed channel: (client, its channel id) <-> the agent's channel id. */
struct channel {
	bool used;
	int client;            /* index in clients[], -1 once the client is gone */
	uint32_t client_chan;
	uint32_t agent_chan;
	bool started;           /* the agent said STARTED: it says so once */
	uint64_t out_credit[3]; /* stdout/stderr bytes the client has granted */
	uint64_t in_credit;     /* stdin bytes the agent has granted */
};

static struct shim {
	char name[CAPSULE_NAME_MAX + 1];
	int run_fd;
	int lock_fd;
	int epfd, sigfd, listen_fd;
	struct capsule_config cfg;
	struct cgroup_handle *cg;
	struct container ct;
	int agent_fd;
	struct cp_rxbuf agent_rx;
	struct outq agent_out;
	struct cp_writer w;
	struct client clients[MAX_CLIENTS];
	struct channel chans[MAX_CHANNELS];
	size_t chans_hwm; /* chans[] at or past this index were never used: lookups stop here */
	uint32_t next_agent_chan;
	bool stopping;
	bool killed;        /* SIGKILL sent: only the pidfd is left to wait for */
	uint64_t stop_deadline_ms;
	int64_t started_unix;
	FILE *log;
	struct transform_server transforms[CAPSULE_MAX_BINDS]; /* capsule-fuse of each transform mount */
	size_t ntransforms;
	/* Shared locks on the volumes the sandbox mounts, held for its life (volume rm waits
	 * for none of them: it refuses while any is held). They die with this process. */
	int volume_locks[CAPSULE_MAX_BINDS];
	size_t nvolume_locks;
	struct hot_mounts hot;
	struct vm vm; /* vm isolation: QEMU, whose pid and pidfd are also in ct */
	struct vm_shares shares; /* vm isolation: the share of host folders */
	struct net net;
	/* The save, checkpoint, fork or revert being copied, and who asked for it (-1 once gone). */
	struct save_job save;
	int save_client;
	uint32_t save_chan;
	bool exiting; /* in finish_and_exit: a failed revert must not enter it again */
	/* A request that waits for the guest's answer (agent_wait_answer) runs the loop itself,
	 * so a guest that stops answering stalls only the client that asked: that client is
	 * muted until its answer (its buffers hold the request being served), the others are
	 * served, and a stop ends the wait. */
	bool loop_running;    /* the sandbox is up and its fds are in the epoll set */
	int serving_client;   /* the client whose request is being handled, or -1 */
	bool agent_waiting;   /* a wait for the guest's answer is in progress */
	int waiting_client;   /* the client that asked for it, muted meanwhile, or -1 */
	uint32_t waiting_chan; /* its agent channel, which chan_new must not hand out */
	bool agent_unresponsive; /* a wait timed out: the stop does not wait for the guest again */
	bool agent_distrusted;   /* it broke the protocol: nothing more it sends is forwarded */
	bool reading_agent;      /* agent_readable walks S.agent_rx, which a wait would refill */
	bool stop_forced;        /* a kill came while stopping: the stop waits for the guest no more */
} S = { .serving_client = -1, .waiting_client = -1 };

static void shim_log(const char *fmt, ...) _printf_(1, 2);
static void shim_log(const char *fmt, ...)
{
	if (!S.log)
		return;
	time_t t = time(NULL);
	struct tm tm;
	char ts[32];
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", gmtime_r(&t, &tm));
	fprintf(S.log, "%s ", ts);
	va_list ap;
	va_start(ap, fmt);
	vfprintf(S.log, fmt, ap);
	va_end(ap);
	fputc('\n', S.log);
	fflush(S.log);
}

/* ---- output queues ------------------------------------------------------------------ */

static int outq_push(struct outq *q, const void *p, size_t n)
{
	if (q->start > 0 && q->start == q->len)
		q->start = q->len = 0;
	if (q->len + n > q->cap) {
		if (q->start > 0) {
			memmove(q->buf, q->buf + q->start, q->len - q->start);
			q->len -= q->start;
			q->start = 0;
		}
		if (q->len + n > q->cap) {
			size_t cap = q->cap ? q->cap : 64 * 1024;
			while (cap < q->len + n)
				cap *= 2;
			uint8_t *nb = realloc(q->buf, cap);
			if (!nb)
				return -ENOMEM;
			q->buf = nb;
			q->cap = cap;
		}
	}
	memcpy(q->buf + q->len, p, n);
	q->len += n;
	return 0;
}

static size_t outq_pending(const struct outq *q)
{
	return q->len - q->start;
}

/* Write what we can; -errno when the peer is gone. */
static int outq_flush(struct outq *q, int fd)
{
	while (outq_pending(q)) {
		ssize_t n = send(fd, q->buf + q->start, outq_pending(q), MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				return 0;
			return -errno;
		}
		q->start += (size_t)n;
	}
	q->start = q->len = 0;
	/* Give back what a burst made us allocate. */
	if (q->cap > 1u << 20) {
		free(q->buf);
		q->buf = NULL;
		q->cap = 0;
	}
	return 0;
}

/* Send A then B: straight from the caller's buffers while nothing is queued (no copy for
 * the common case), queueing whatever the socket does not take. -errno when the peer is gone. */
static int outq_send(struct outq *q, int fd, const void *a, size_t an, const void *b, size_t bn)
{
	size_t sent = 0;
	if (outq_pending(q) == 0) {
		struct iovec iov[2] = { { (void *)a, an }, { (void *)b, bn } };
		struct msghdr msg = { .msg_iov = iov, .msg_iovlen = bn ? 2 : 1 };
		ssize_t k;
		do
			k = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
		while (k < 0 && errno == EINTR);
		if (k < 0 && errno != EAGAIN)
			return -errno;
		sent = k > 0 ? (size_t)k : 0;
	}
	if (sent < an && outq_push(q, (const uint8_t *)a + sent, an - sent) < 0)
		return -ENOMEM;
	size_t bsent = sent > an ? sent - an : 0;
	if (bsent < bn && outq_push(q, (const uint8_t *)b + bsent, bn - bsent) < 0)
		return -ENOMEM;
	return outq_pending(q) ? outq_flush(q, fd) : 0;
}

static void outq_free(struct outq *q)
{
	free(q->buf);
	memset(q, 0, sizeof(*q));
}

/* ---- epoll -------------------------------------------------------------------------- */

static void ep_set(int fd, uint64_t key, uint32_t events, bool add)
{
	struct epoll_event ev = { .events = events, .data.u64 = key };
	epoll_ctl(S.epfd, add ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd, &ev);
}

static void agent_update_events(void)
{
	if (S.agent_fd >= 0)
		ep_set(S.agent_fd, KEY_AGENT, EPOLLIN | (outq_pending(&S.agent_out) ? EPOLLOUT : 0), false);
}

static bool agent_backlogged(void)
{
	return outq_pending(&S.agent_out) > AGENT_OUTQ_MAX;
}

static void client_update_events(int ci)
{
	struct client *c = &S.clients[ci];
	uint32_t ev = 0;
	/* Back-pressure: while the agent is not keeping up, stop reading requests. */
	if (!c->closing && !agent_backlogged())
		ev |= EPOLLIN;
	if (outq_pending(&c->out))
		ev |= EPOLLOUT;
	if (S.agent_waiting && ci == S.waiting_client)
		ev = 0;
	ep_set(c->fd, KEY_CLIENT_BASE + (uint64_t)ci, ev, false);
}

static void all_clients_update_events(void)
{
	for (int i = 0; i < MAX_CLIENTS; i++)
		if (S.clients[i].used)
			client_update_events(i);
}

/* ---- sending ------------------------------------------------------------------------ */

static void begin_stop(uint32_t grace_ms);
static void client_close(int ci);

static void to_agent2(const void *p, size_t n, const void *p2, size_t n2)
{
	if (S.agent_fd < 0)
		return;
	if (outq_send(&S.agent_out, S.agent_fd, p, n, p2, n2) < 0) {
		shim_log("agent connection failed");
		begin_stop(0);
		return;
	}
	agent_update_events();
	if (agent_backlogged())
		all_clients_update_events();
}

static void to_agent(const void *p, size_t n)
{
	to_agent2(p, n, NULL, 0);
}

static void to_client2(int ci, const void *p, size_t n, const void *p2, size_t n2)
{
	struct client *c = &S.clients[ci];
	if (!c->used || c->gone)
		return;
	if (outq_pending(&c->out) + n + n2 > CLIENT_OUTQ_MAX) {
		/* A client that does not read what it asked for: cut it off, not us. */
		shim_log("client %d: output queue over its limit, disconnecting", ci);
		client_close(ci);
		return;
	}
	if (outq_send(&c->out, c->fd, p, n, p2, n2) < 0) {
		client_close(ci);
		return;
	}
	client_update_events(ci);
}

static void to_client(int ci, const void *p, size_t n)
{
	to_client2(ci, p, n, NULL, 0);
}

static void client_send_error(int ci, uint32_t chan, int errnum, const char *fmt, ...) _printf_(4, 5);
static void client_send_error(int ci, uint32_t chan, int errnum, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	struct cp_error_msg m = { .errnum = (uint32_t)errnum, .message = msg };
	if (cp_error_encode(&S.w, chan, &m) == 0)
		to_client(ci, S.w.buf, S.w.len);
}

/* Forward a frame whose header and payload are given, with a new channel id. */
static void forward(bool to_the_agent, int ci, const struct cp_header *h, const uint8_t *payload, uint32_t chan)
{
	uint8_t hdr[CP_HEADER_SIZE];
	struct cp_header nh = *h;
	nh.chan = chan;
	cp_header_encode(hdr, &nh);
	if (to_the_agent)
		to_agent2(hdr, sizeof(hdr), payload, h->len);
	else
		to_client2(ci, hdr, sizeof(hdr), payload, h->len);
}

/* ---- channels ----------------------------------------------------------------------- */

static struct channel *chan_by_client(int ci, uint32_t client_chan)
{
	for (size_t i = 0; i < S.chans_hwm; i++)
		if (S.chans[i].used && S.chans[i].client == ci && S.chans[i].client_chan == client_chan)
			return &S.chans[i];
	return NULL;
}

static struct channel *chan_by_agent(uint32_t agent_chan)
{
	for (size_t i = 0; i < S.chans_hwm; i++)
		if (S.chans[i].used && S.chans[i].agent_chan == agent_chan)
			return &S.chans[i];
	return NULL;
}

static struct channel *chan_new(int ci, uint32_t client_chan)
{
	struct channel *ch = NULL;
	for (size_t i = 0; i < MAX_CHANNELS && !ch; i++)
		if (!S.chans[i].used)
			ch = &S.chans[i];
	if (!ch)
		return NULL;
	if ((size_t)(ch - S.chans) + 1 > S.chans_hwm)
		S.chans_hwm = (size_t)(ch - S.chans) + 1;
	do {
		S.next_agent_chan++;
		if (S.next_agent_chan == 0 || vm_fwd_chan(S.next_agent_chan))
			S.next_agent_chan = 1;
	} while (chan_by_agent(S.next_agent_chan) || (S.agent_waiting && S.next_agent_chan == S.waiting_chan));
	memset(ch, 0, sizeof(*ch));
	ch->used = true;
	ch->client = ci;
	ch->client_chan = client_chan;
	ch->agent_chan = S.next_agent_chan;
	ch->out_credit[1] = ch->out_credit[2] = CP_INITIAL_WINDOW;
	ch->in_credit = CP_INITIAL_WINDOW;
	return ch;
}

/* ---- state file --------------------------------------------------------------------- */

static void write_state(const char *state)
{
	struct json_writer j;
	json_init(&j, true);
	json_object_begin(&j);
	json_kv_string(&j, "name", S.cfg.name);
	json_kv_string(&j, "state", state);
	json_kv_int(&j, "shim_pid", strcmp(state, "running") ? 0 : (int64_t)getpid());
	json_kv_int(&j, "init_pid", strcmp(state, "running") ? 0 : (int64_t)S.ct.pid);
	json_kv_int(&j, "started", S.started_unix);
	json_kv_string(&j, "cgroup", S.cg ? cgroup_memory_path(S.cg) : NULL);
	if (!strcmp(state, "running") && S.cfg.isolation != CAPSULE_ISOLATION_VM) {
		json_kv_bool(&j, "oom_floor", S.ct.oom_floor);
		if (!S.ct.oom_floor)
			json_kv_string(&j, "oom_note", S.ct.oom_note);
	}
	json_object_end(&j);
	int e = 0;
	char *text = json_steal(&j, &e);
	if (!text)
		return;
	write_file_atomic_at(S.run_fd, "state.json", text, strlen(text), 0600, false);
	free(text);
}

/* ---- stop and teardown -------------------------------------------------------------- */

/* Transform servers are our children: reap the ones that exited (a crashed plugin leaves its
 * mount failing with ENOTCONN, not a zombie), or with FORCE kill and reap them all. */
static void transform_servers_reap(bool force)
{
	for (size_t i = 0; i < S.ntransforms; i++) {
		struct transform_server *t = &S.transforms[i];
		int st;
		if (t->pid > 0 && transform_server_reap(t, force, &st) && !force)
			shim_log("transform server of '%s' exited (wait status 0x%x)", t->target, (unsigned)st);
	}
}

static int vm_agent_sync(uint32_t timeout_ms, capsule_error *err);

/* SIGKILL to PID 1 takes every process of the sandbox with it (pid namespace). */
static void kill_sandbox(void)
{
	if (!S.killed && S.cfg.isolation == CAPSULE_ISOLATION_VM) {
		/* A vm that is saved at stop: what its commands wrote may still be in the guest's
		 * page cache, which QEMU's quit would lose. A wedged agent costs the stop 10 s. */
		capsule_error e = { 0 };
		if (S.agent_unresponsive || S.agent_distrusted)
			shim_log("the guest stopped answering or broke the protocol: its save gets no sync");
		else if (S.cfg.save[0] && S.agent_fd >= 0 && vm_agent_sync(10000, &e) < 0)
			shim_log("syncing the guest before its save: %s", e.message);
		vm_kill(&S.vm);
	}
	else if (!S.killed) {
		/* Transform servers first: a command waiting on one (a slow plugin, a huge write)
		 * sits in the kernel where SIGKILL cannot reach it until the server answers; with
		 * the server gone, its connection is aborted and every waiter returns. */
		transform_servers_reap(true);
		sys_pidfd_send_signal(S.ct.pidfd, SIGKILL);
	}
	S.killed = true;
}

static void save_done(bool cancel);

static void begin_stop(uint32_t grace_ms)
{
	/* The sandbox is frozen for a save's copy (down for a revert's) and must be thawed to
	 * stop; the copy is abandoned (never renamed into place), not waited for. */
	if (save_job_running(&S.save))
		save_done(true);
	if (S.stopping) {
		uint64_t d = now_ms() + grace_ms;
		if (d < S.stop_deadline_ms)
			S.stop_deadline_ms = d;
		if (grace_ms == 0)
			S.stop_forced = true;
		return;
	}
	S.stopping = true;
	S.stop_deadline_ms = now_ms() + grace_ms;
	shim_log("stopping (grace %u ms)", grace_ms);
	if (grace_ms == 0 || S.agent_fd < 0) {
		/* Inside a wait for the guest, or while the agent's frames are walked, that ends
		 * first and the loop kills at once (the deadline is now): the kill's own sync
		 * waits for the agent and refills the buffer being walked. */
		if (!S.agent_waiting && !S.reading_agent)
			kill_sandbox();
		return;
	}
	struct cp_stop m = { .timeout_ms = grace_ms };
	struct cp_writer w;
	cp_writer_init(&w);
	if (cp_shutdown_encode(&w, 0, &m) == 0)
		to_agent(w.buf, w.len);
	cp_writer_free(&w);
}

_Noreturn static void finish_and_exit(void)
{
	S.exiting = true;
	if (save_job_running(&S.save))
		save_done(true);
	/* The agent is gone, and with it every process of the sandbox (it was PID 1). */
	vm_shares_release(&S.shares);
	transform_servers_reap(true);
	net_reap(&S.net, true);
	capsule_error err = { 0 };
	if (S.cg && cgroup_destroy(S.cg, &err) < 0)
		shim_log("cgroup cleanup: %s", err.message);
	char cgname[CAPSULE_NAME_MAX + 16];
	sandbox_cgroup_name(S.name, cgname, sizeof(cgname));
	sandbox_freezer_remove(cgname);
	unlinkat(S.run_fd, "control.sock", 0);
	/* A named save is taken now, with every process gone, before anything is removed; the
	 * stop is answered only after it, with its error if it failed. */
	capsule_error save_err = { 0 };
	if (S.cfg.save[0]) {
		uint64_t t0 = now_ns();
		_cleanup_close_ int upper = -1;
		/* A vm's guest synced its disks as it powered off; QEMU has exited. */
		if (S.cfg.isolation == CAPSULE_ISOLATION_VM)
			layer_op(&S.cfg, S.run_fd, CP_SAVE_OP_SAVE, S.cfg.save, &save_err);
		else if (sandbox_upper_open(S.run_fd, &S.cfg, &upper, &save_err) == 0)
			save_write(S.cfg.save, upper, &S.cfg, &save_err);
		if (save_err.code)
			shim_log("%s", save_err.message);
		else
			shim_log("saved as '%s' (%.1f ms)", S.cfg.save, (double)(now_ns() - t0) / 1e6);
	}
	bool ephemeral = !S.cfg.detached;
	if (ephemeral) {
		/* Nothing of an ephemeral sandbox outlives it. */
		shim_log("stopped");
		_cleanup_close_ int run = -1;
		if (home_subdir_open("run", &run, NULL) == 0)
			rm_rf_at(run, S.name);
		id_slot_release(S.name, S.cfg.id_slot);
		if (S.log)
			fclose(S.log);
		S.log = NULL;
	} else {
		rm_rf_at(S.run_fd, "fs/work");
		write_state("stopped");
		shim_log("stopped");
	}
	/* Only now, with everything cleaned up, let go of the sandbox and tell whoever asked
	 * for the stop: when they hear OK, a start or rm may take the lock at once. */
	close(S.lock_fd);
	S.lock_fd = -1;
	for (int i = 0; i < MAX_CLIENTS; i++) {
		struct client *c = &S.clients[i];
		if (!c->used)
			continue;
		if (c->stop_waiter && save_err.code) {
			struct cp_error_msg m = { .errnum = (uint32_t)save_err.code, .message = save_err.message };
			if (cp_error_encode(&S.w, c->stop_chan, &m) == 0)
				outq_push(&c->out, S.w.buf, S.w.len);
		} else if (c->stop_waiter && cp_empty_encode(&S.w, CP_OK, c->stop_chan) == 0) {
			outq_push(&c->out, S.w.buf, S.w.len);
		}
		/* Blocking now, with a bound: we are about to exit and these are the last words
		 * (outq_flush would give up at the first full socket buffer). */
		fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) & ~O_NONBLOCK);
		struct timeval tv = { .tv_sec = 1 };
		setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		write_all(c->fd, c->out.buf + c->out.start, outq_pending(&c->out));
	}
	layer_run_deferred_removals();
	_exit(0);
}

/* ---- client requests ---------------------------------------------------------------- */

static void client_close(int ci)
{
	struct client *c = &S.clients[ci];
	if (!c->used)
		return;
	if (S.agent_waiting && ci == S.waiting_client) {
		/* Its request is still on the stack: client_readable frees it when that returns. */
		c->gone = c->closing = true;
		return;
	}
	bool owner = c->owner;
	epoll_ctl(S.epfd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	cp_rxbuf_free(&c->rx);
	outq_free(&c->out);
	memset(c, 0, sizeof(*c));
	if (S.save_client == ci)
		S.save_client = -1;
	/* Commands the client was attached to go with it, as they would with a closed
	 * terminal; their channels are dropped when the agent reports the exit. */
	for (size_t i = 0; i < S.chans_hwm; i++) {
		struct channel *ch = &S.chans[i];
		if (!ch->used || ch->client != ci)
			continue;
		ch->client = -1;
		struct cp_signal sig = { .signo = SIGKILL };
		if (cp_signal_encode(&S.w, ch->agent_chan, &sig) == 0)
			to_agent(S.w.buf, S.w.len);
	}
	if (owner) {
		shim_log("creator of the ephemeral sandbox went away");
		begin_stop(0);
	}
}

/* While a save copies the layer, the sandbox is frozen (a vm's guest paused) and the copy is of
 * one moment: another save, a revert and changes to its mounts and ports are refused until
 * it is done. Commands (EXEC, FS) are passed on and run once it thaws; during a revert, which
 * has the sandbox down, they are refused too. */
static bool refused_while_saving(int ci, uint32_t chan)
{
	if (!save_job_running(&S.save))
		return false;
	client_send_error(ci, chan, EBUSY, "sandbox '%s' is busy with %s '%s': try again when it is done", S.name,
			  shim_save_op_name(S.save.op), S.save.name);
	return true;
}

/* The requests the shim answers itself (MOUNT..., PORT_...) go on a fresh channel of their
 * own, and not while the sandbox stops. */
static bool shim_request_acceptable(int ci, const struct cp_header *h)
{
	if (h->chan == 0 || chan_by_client(ci, h->chan)) {
		client_send_error(ci, h->chan, EBADMSG, "%s on channel %u, which is 0 or in use", cp_type_name(h->type),
				  h->chan);
		return false;
	}
	if (S.stopping) {
		client_send_error(ci, h->chan, ESHUTDOWN, "sandbox '%s' is stopping", S.name);
		return false;
	}
	bool changes_sandbox = h->type == CP_MOUNT || h->type == CP_UNMOUNT || h->type == CP_PORT_ADD ||
			       h->type == CP_PORT_REMOVE;
	return !(changes_sandbox && refused_while_saving(ci, h->chan));
}

/* Mounts, saves and reverts change what a request waiting for the guest works on: one at a
 * time, the others refused at once rather than queued behind a guest that may never answer. */
static bool guest_busy(int ci, const struct cp_header *h)
{
	if (!S.agent_waiting)
		return false;
	client_send_error(ci, h->chan, EBUSY, "sandbox '%s' is waiting for its guest to answer another request; try again",
			  S.name);
	return true;
}

/* Their one final answer: ERROR with ERR when R < 0, else OK carrying OK's fields. */
static void shim_request_answer(int ci, const struct cp_header *h, int r, const capsule_error *err,
				const struct cp_request_ok *ok)
{
	if (r < 0) {
		client_send_error(ci, h->chan, err->code ? err->code : -r, "%s", err->message);
		return;
	}
	if ((r = cp_request_ok_encode(&S.w, h->chan, ok)) < 0) {
		client_send_error(ci, h->chan, -r, "encoding the answer to %s", cp_type_name(h->type));
		return;
	}
	to_client(ci, S.w.buf, S.w.len);
}

static int vm_hot_attach(int tree, const char *name, const char *target, bool is_dir, bool readonly,
			 uint64_t *mnt_id, capsule_error *err);
static int vm_hot_detach(const char *name, const char *target, uint64_t mnt_id, capsule_error *err);
static int vm_idmap_tree(int tree, uid_t owner_uid, gid_t owner_gid, bool readonly, const char *what,
			 capsule_error *err);

/* Hot mounts are answered here: a container's is a few syscalls and one short-lived child,
 * well under the time a client would notice the loop pause; a vm's waits for the guest's
 * answer, serving the other clients meanwhile (agent_wait_answer). */
static void mount_request(int ci, const struct cp_header *h, const uint8_t *payload)
{
	if (!shim_request_acceptable(ci, h) || guest_busy(ci, h))
		return;
	uid_t ub;
	gid_t gb;
	uint32_t count;
	struct mount_sandbox sb = { .name = S.name, .cfg = &S.cfg, .ct = &S.ct };
	home_id_map(S.cfg.id_slot, &ub, &gb, &count, &sb.rootless);
	if (S.cfg.isolation == CAPSULE_ISOLATION_VM) {
		sb.vm_attach = vm_hot_attach;
		sb.vm_detach = vm_hot_detach;
		sb.vm_idmap = vm_idmap_tree;
	}
	capsule_error err = { 0 };
	struct cp_request_ok ok = { 0 };
	_cleanup_free_ char *list = NULL;
	int r;
	if (h->type == CP_MOUNT) {
		struct cp_mount m;
		struct mount_peer peer;
		if (cp_mount_decode(payload, h->len, &m) < 0) {
			client_send_error(ci, h->chan, EBADMSG, "malformed MOUNT request");
			return;
		}
		const char *handle = NULL;
		r = mount_peer_get(S.clients[ci].fd, &peer, &err);
		if (r == 0) {
			uint64_t t0 = now_ns();
			r = hot_mount_add(&S.hot, &sb, &peer, m.host_path, m.guest_path, m.flags, &handle, &err);
			if (r == 0)
				shim_log("hot mount %s: '%s' at '%s'%s for uid %u (%.2f ms)", handle, m.host_path,
					 S.hot.m[S.hot.n - 1].target, (m.flags & CP_MOUNT_RO) ? " read-only" : "",
					 (unsigned)peer.uid, (double)(now_ns() - t0) / 1e6);
			mount_peer_free(&peer);
		}
		ok.handle = (char *)handle;
		cp_mount_free(&m);
	} else if (h->type == CP_UNMOUNT) {
		struct cp_unmount m;
		if (cp_unmount_decode(payload, h->len, &m) < 0) {
			client_send_error(ci, h->chan, EBADMSG, "malformed UNMOUNT request");
			return;
		}
		uint64_t t0 = now_ns();
		r = hot_mount_remove(&S.hot, &sb, m.target, &err);
		if (r == 0)
			shim_log("hot mount '%s' removed (%.2f ms)", m.target, (double)(now_ns() - t0) / 1e6);
		cp_unmount_free(&m);
	} else {
		r = mounts_list_json(&S.hot, &sb, &list, &err);
		ok.list_json = list;
	}
	shim_request_answer(ci, h, r, &err, &ok);
}

/* Port forwards are answered here, at once: a listen or a close. */
static void port_request(int ci, const struct cp_header *h, const uint8_t *payload)
{
	if (!shim_request_acceptable(ci, h))
		return;
	capsule_error err = { 0 };
	struct cp_request_ok ok = { 0 };
	_cleanup_free_ char *list = NULL;
	int r;
	if (h->type == CP_PORTS) {
		r = net_ports_json(&S.net, &list, &err);
		ok.list_json = list;
	} else {
		struct cp_port m;
		if (cp_port_decode(h->type, payload, h->len, &m) < 0) {
			client_send_error(ci, h->chan, EBADMSG, "malformed %s request", cp_type_name(h->type));
			return;
		}
		r = h->type == CP_PORT_ADD ? net_port_add(&S.net, &m, &err) : net_port_remove(&S.net, &m, &err);
		cp_port_free(&m);
	}
	shim_request_answer(ci, h, r, &err, &ok);
}

static int start_sandbox(capsule_error *err);

/* REVERT: the sandbox's processes are killed (as by a stop: commands in flight end with
 * 137), its own layer becomes the checkpoint's (copied by a save job, the loop serving
 * meanwhile), and it starts again in this shim from its boot-time configuration
 * (revert_restart). Connections stay; hot mounts are gone with the old mount namespace.
 * Overlayfs cannot swap the upper layer under a mounted overlay, and the root cannot be
 * unmounted under its PID 1: a restart is the one consistent way. */
static void revert_take_down(void)
{
	/* The new sandbox's fds join the epoll set only once it is up: until then its waits
	 * serve nobody else. */
	S.loop_running = false;
	sys_pidfd_send_signal(S.ct.pidfd, SIGKILL);
	while (waitpid(S.ct.pid, NULL, 0) < 0 && errno == EINTR)
		;
	for (size_t i = 0; i < S.chans_hwm; i++) {
		struct channel *ch = &S.chans[i];
		if (!ch->used)
			continue;
		struct cp_exit ex = { .exit_code = 128 + SIGKILL, .signal = SIGKILL };
		if (ch->client >= 0 && S.clients[ch->client].used && cp_exit_encode(&S.w, ch->client_chan, &ex) == 0) {
			to_client(ch->client, S.w.buf, S.w.len);
			if (S.clients[ch->client].nchans > 0)
				S.clients[ch->client].nchans--;
		}
		memset(ch, 0, sizeof(*ch));
	}
	epoll_ctl(S.epfd, EPOLL_CTL_DEL, S.ct.pidfd, NULL);
	close(S.ct.pidfd);
	S.ct.pidfd = -1;
	if (S.cfg.isolation == CAPSULE_ISOLATION_VM && S.vm.qmp_fd >= 0) {
		close(S.vm.qmp_fd);
		S.vm.qmp_fd = -1;
	}
	if (S.agent_fd >= 0) {
		epoll_ctl(S.epfd, EPOLL_CTL_DEL, S.agent_fd, NULL);
		close(S.agent_fd);
		S.agent_fd = -1;
	}
	cp_rxbuf_free(&S.agent_rx);
	outq_free(&S.agent_out);
	transform_servers_reap(true);
	S.ntransforms = 0;
	/* A vm's host folders: the start attaches its binds again, hot mounts go with the rest. */
	vm_shares_release(&S.shares);
	/* The network is the old namespace's: slirp4netns, the socket factory and the forwards'
	 * listeners go, and the start makes them again (forwards added while it ran are gone,
	 * as hot mounts are). */
	net_reap(&S.net, true);
	for (size_t i = 0; i < S.nvolume_locks; i++)
		close(S.volume_locks[i]);
	S.nvolume_locks = 0;
	memset(&S.hot, 0, sizeof(S.hot));
	if (S.cg) {
		cgroup_destroy(S.cg, NULL);
		cgroup_free(S.cg);
		S.cg = NULL;
	}
	char cgname[CAPSULE_NAME_MAX + 16];
	sandbox_cgroup_name(S.name, cgname, sizeof(cgname));
	sandbox_freezer_remove(cgname);
}

static int revert_restart(capsule_error *err)
{
	int r = start_sandbox(err);
	if (r < 0)
		return r;
	ep_set(S.agent_fd, KEY_AGENT, EPOLLIN, true);
	ep_set(S.ct.pidfd, KEY_PIDFD, EPOLLIN, true);
	S.loop_running = true;
	write_state("running");
	shim_log("restarted, agent pid %d", (int)S.ct.pid);
	return 0;
}

/* The old sandbox is gone and the new one did not start: it is over. */
_Noreturn static void revert_failed(void)
{
	if (S.ct.pidfd >= 0) {
		sys_pidfd_send_signal(S.ct.pidfd, SIGKILL);
		waitpid(S.ct.pid, NULL, 0);
	}
	finish_and_exit();
}

/* vm isolation, around a save's copy of the disk: the agent syncs the guest's file systems
 * (SAVE to the agent), then QMP stop pauses the guest, which drains and flushes QEMU's block
 * layer, so the qcow2 on the host is whole and current; cont lets it run again. Frames that
 * arrive meanwhile for other channels are served as usual. */
#define VM_SYNC_CHAN 0xfffffff0u

static void agent_frame(const struct cp_header *h, const uint8_t *payload);
static void agent_distrust(const char *fmt, ...) _printf_(1, 2);

static void dispatch_event(const struct epoll_event *ev);

/* The loop's other events, while a wait for the guest watches the agent and QEMU itself. */
static void serve_others(void)
{
	struct epoll_event evs[64];
	int n = epoll_wait(S.epfd, evs, 64, 0);
	for (int i = 0; i < n; i++)
		if (evs[i].data.u64 != KEY_AGENT && evs[i].data.u64 != KEY_PIDFD)
			dispatch_event(&evs[i]);
	/* What the others queued for the agent is flushed by the wait's poll. */
	agent_update_events();
}

static int agent_wait_loop(uint32_t chan, uint32_t timeout_ms, const char *what, struct cp_header *h,
			   const uint8_t **payload, capsule_error *err)
{
	uint64_t deadline = now_ms() + timeout_ms;
	bool was_stopping = S.stopping;
	for (;;) {
		if (S.agent_fd < 0)
			return cap_err_plain(err, EPIPE, "the agent went away during %s", what);
		if (S.agent_distrusted)
			return cap_err_plain(err, EPROTO, "the agent broke the protocol during %s", what);
		int k = 0;
		while (!S.agent_distrusted && (k = cp_rxbuf_peek(&S.agent_rx, h, payload)) > 0) {
			if (h->chan == chan)
				return 0;
			agent_frame(h, *payload);
			cp_rxbuf_consume(&S.agent_rx, h);
		}
		if (k < 0) {
			agent_distrust("malformed frame from the agent");
			return cap_err_plain(err, EPROTO, "malformed frame from the agent");
		}
		if (S.stopping && !was_stopping)
			return cap_err_plain(err, ESHUTDOWN, "sandbox '%s' is stopping", S.name);
		/* The stop's own sync: a second, forced stop gives up on the guest. */
		if (S.stop_forced)
			return cap_err_plain(err, ECANCELED, "the stop of sandbox '%s' was forced", S.name);
		uint64_t now = now_ms();
		if (now >= deadline) {
			S.agent_unresponsive = true;
			return cap_err_plain(err, ETIMEDOUT, "the guest did not answer %s within %u ms", what, timeout_ms);
		}
		struct pollfd pfd[3] = {
			{ .fd = S.agent_fd, .events = POLLIN | (outq_pending(&S.agent_out) ? POLLOUT : 0) },
			{ .fd = S.ct.pidfd, .events = POLLIN },
			{ .fd = S.loop_running ? S.epfd : -1, .events = POLLIN },
		};
		if (poll(pfd, 3, (int)(deadline - now)) < 0 && errno != EINTR)
			return cap_err(err, errno, "poll");
		if (pfd[1].revents)
			return cap_err_plain(err, ECHILD, "QEMU exited during %s", what);
		if (pfd[0].revents & POLLOUT && outq_flush(&S.agent_out, S.agent_fd) < 0)
			return cap_err_plain(err, EPIPE, "the agent went away during %s", what);
		if (pfd[0].revents & (POLLIN | POLLHUP | POLLERR)) {
			long n = cp_rxbuf_fill(&S.agent_rx, S.agent_fd);
			if (n == 0 || (n < 0 && n != -EAGAIN))
				return cap_err_plain(err, EPIPE, "the agent went away during %s", what);
		}
		if (pfd[2].revents)
			serve_others();
	}
}

/* The final answer on agent channel CHAN, within TIMEOUT_MS, or an error: the guest is
 * hostile or wedged as often as slow. Other clients are served meanwhile (once the loop
 * runs), a stop ends the wait, and frames for other channels are forwarded as usual. The
 * answer is left in S.agent_rx, its header in *H and payload in *PAYLOAD, for the caller to
 * read and consume. WHAT names the request. */
static int agent_wait_answer(uint32_t chan, uint32_t timeout_ms, const char *what, struct cp_header *h,
			     const uint8_t **payload, capsule_error *err)
{
	if (S.agent_waiting)
		return cap_err_plain(err, EBUSY, "sandbox '%s' is waiting for its guest already", S.name);
	S.agent_waiting = true;
	S.waiting_chan = chan;
	int asker = S.waiting_client = S.serving_client;
	if (asker >= 0)
		client_update_events(asker);
	int r = agent_wait_loop(chan, timeout_ms, what, h, payload, err);
	S.agent_waiting = false;
	S.waiting_client = -1;
	if (asker >= 0 && S.clients[asker].used && !S.clients[asker].gone)
		client_update_events(asker);
	return r;
}

static int vm_agent_sync(uint32_t timeout_ms, capsule_error *err)
{
	if (chan_by_agent(VM_SYNC_CHAN))
		return cap_err_plain(err, EBUSY, "agent channel %u is in use", VM_SYNC_CHAN);
	struct cp_save m = { .op = CP_SAVE_OP_SAVE, .name = (char *)"sync" };
	struct cp_writer w;
	cp_writer_init(&w);
	int r = cp_save_encode(&w, VM_SYNC_CHAN, &m);
	if (r == 0) {
		shim_log("asking the guest to sync its disks");
		to_agent(w.buf, w.len);
	}
	cp_writer_free(&w);
	if (r < 0)
		return cap_err(err, -r, "asking the agent to sync");
	struct cp_header h;
	const uint8_t *payload;
	if ((r = agent_wait_answer(VM_SYNC_CHAN, timeout_ms, "a sync of its disks", &h, &payload, err)) < 0)
		return r;
	bool ok = h.type == CP_OK;
	cp_rxbuf_consume(&S.agent_rx, &h);
	return ok ? 0 : cap_err_plain(err, EIO, "the agent could not sync the guest's disks");
}

static int vm_pause(bool on, capsule_error *err)
{
	if (!on)
		return vm_qmp(&S.vm, "cont", err);
	int r = vm_agent_sync(60000, err);
	return r < 0 ? r : vm_qmp(&S.vm, "stop", err);
}

static void save_sandbox_of_shim(struct save_sandbox *sb, char *cgname, size_t size)
{
	sandbox_cgroup_name(S.name, cgname, size);
	*sb = (struct save_sandbox){ .cfg = &S.cfg, .run_fd = S.run_fd, .cg = S.cg, .cgname = cgname,
				     .pause = S.cfg.isolation == CAPSULE_ISOLATION_VM ? vm_pause : NULL };
}

static void save_answer(int ci, uint32_t chan, int r, const capsule_error *err)
{
	if (r < 0) {
		client_send_error(ci, chan, err->code ? err->code : -r, "%s", err->message);
	} else if (cp_empty_encode(&S.w, CP_OK, chan) == 0) {
		to_client(ci, S.w.buf, S.w.len);
		/* The answer goes out first; what the save replaced is removed after. */
		outq_flush(&S.clients[ci].out, S.clients[ci].fd);
	}
}

/* The save's child has exited (or, with CANCEL, is killed now): the sandbox thaws (after a
 * revert, starts again) and the client that asked hears how it went. */
static void save_done(bool cancel)
{
	char cgname[CAPSULE_NAME_MAX + 16];
	struct save_sandbox sb;
	save_sandbox_of_shim(&sb, cgname, sizeof(cgname));
	epoll_ctl(S.epfd, EPOLL_CTL_DEL, S.save.pidfd, NULL);
	uint32_t op = S.save.op;
	char name[sizeof(S.save.name)];
	snprintf(name, sizeof(name), "%s", S.save.name);
	uint64_t t0 = S.save.started_ns;
	capsule_error err = { 0 };
	int r = shim_save_finish(&sb, &S.save, cancel, &err);
	if (r == 0 && op == CP_SAVE_OP_REVERT)
		r = revert_restart(&err);
	if (r < 0)
		shim_log("%s", err.message);
	else
		shim_log("%s '%s' done (%.1f ms)", shim_save_op_name(op), name, (double)(now_ns() - t0) / 1e6);
	if (S.save_client >= 0)
		save_answer(S.save_client, S.save_chan, r, &err);
	S.save_client = -1;
	if (r < 0 && op == CP_SAVE_OP_REVERT && !S.exiting)
		revert_failed();
}

/* SAVE is answered by save_done, once a child has copied the layer (for a revert, once the
 * sandbox runs again), the loop serving the other clients meanwhile, as it does while a vm's
 * guest is asked to sync first, which it may never answer. One at a time: a second is
 * refused until the first is done. */
static void save_request(int ci, const struct cp_header *h, const uint8_t *payload)
{
	if (h->chan == 0 || chan_by_client(ci, h->chan)) {
		client_send_error(ci, h->chan, EBADMSG, "SAVE on channel %u, which is 0 or in use", h->chan);
		return;
	}
	if (S.stopping) {
		client_send_error(ci, h->chan, ESHUTDOWN, "sandbox '%s' is stopping", S.name);
		return;
	}
	if (refused_while_saving(ci, h->chan) || guest_busy(ci, h))
		return;
	struct cp_save m;
	if (cp_save_decode(payload, h->len, &m) < 0) {
		client_send_error(ci, h->chan, EBADMSG, "malformed SAVE request");
		return;
	}
	capsule_error err = { 0 };
	uint32_t op = m.op;
	int r = 0;
	if (op == CP_SAVE_OP_REVERT && (r = checkpoint_exists(S.run_fd, m.name, &err)) == 0)
		revert_take_down();
	char cgname[CAPSULE_NAME_MAX + 16];
	struct save_sandbox sb;
	save_sandbox_of_shim(&sb, cgname, sizeof(cgname));
	if (r == 0)
		r = shim_save_start(&sb, op, m.name, &S.save, &err);
	bool down = op == CP_SAVE_OP_REVERT && S.ct.pidfd < 0;
	cp_save_free(&m);
	if (r < 0) {
		save_answer(ci, h->chan, r, &err);
		if (down)
			revert_failed();
		return;
	}
	S.save_client = ci;
	S.save_chan = h->chan;
	ep_set(S.save.pidfd, KEY_SAVE, EPOLLIN, true);
}

/* Screenshots and input are QMP exchanges with QEMU, answered here; the loop waits for them
 * (a screendump is QEMU's copy of the framebuffer). */
static void display_request(int ci, const struct cp_header *h, const uint8_t *payload)
{
	if (!shim_request_acceptable(ci, h))
		return;
	capsule_error err = { 0 };
	int r = vm_display_request(&S.vm, &S.cfg, S.run_fd, h, payload, &S.w, &err);
	if (r < 0)
		client_send_error(ci, h->chan, err.code ? err.code : -r, "%s", err.message);
	else
		to_client(ci, S.w.buf, S.w.len);
}

static void client_request(int ci, const struct cp_header *h, const uint8_t *payload)
{
	struct client *c = &S.clients[ci];
	if (!c->hello_done) {
		struct cp_hello m;
		if (h->type != CP_HELLO || cp_hello_decode(payload, h->len, &m) < 0) {
			client_send_error(ci, h->chan, EPROTO, "expected HELLO first");
			c->closing = true;
			return;
		}
		uint32_t v = m.version;
		cp_hello_free(&m);
		if (v != CP_VERSION) {
			client_send_error(ci, h->chan, EPROTONOSUPPORT,
					  "protocol version %u not supported (this shim speaks %u)", v, CP_VERSION);
			c->closing = true;
			return;
		}
		c->hello_done = true;
		struct cp_hello me = { .version = CP_VERSION, .role = "shim" };
		if (cp_hello_encode(&S.w, 0, &me) == 0)
			to_client(ci, S.w.buf, S.w.len);
		return;
	}

	struct channel *ch = h->chan ? chan_by_client(ci, h->chan) : NULL;
	switch (h->type) {
	case CP_EXEC:
	case CP_FS:
	case CP_SIGNAL:
		if (h->type == CP_SIGNAL && ch) {
			forward(true, ci, h, payload, ch->agent_chan);
			return;
		}
		if (h->chan == 0 || ch) {
			client_send_error(ci, h->chan, EBADMSG, "%s on channel %u, which is 0 or in use",
					  cp_type_name(h->type), h->chan);
			return;
		}
		if (S.stopping) {
			client_send_error(ci, h->chan, ESHUTDOWN, "sandbox '%s' is stopping", S.name);
			return;
		}
		/* No agent to pass it to until the sandbox starts again. */
		if (S.save.op == CP_SAVE_OP_REVERT && refused_while_saving(ci, h->chan))
			return;
		if (c->nchans >= MAX_CHANNELS_PER_CLIENT) {
			client_send_error(ci, h->chan, EAGAIN, "too many open channels on this connection (%d)",
					  MAX_CHANNELS_PER_CLIENT);
			return;
		}
		ch = chan_new(ci, h->chan);
		if (!ch) {
			client_send_error(ci, h->chan, EAGAIN, "too many open channels on sandbox '%s'", S.name);
			return;
		}
		c->nchans++;
		forward(true, ci, h, payload, ch->agent_chan);
		return;
	case CP_DATA:
		if ((h->flags & CP_FLAG_STREAM_MASK) != CP_STREAM_STDIN) {
			client_send_error(ci, 0, EBADMSG, "DATA from a client must be stdin; closing the connection");
			c->closing = true;
			return;
		}
		if (!ch)
			return; /* late stdin after exit */
		if (h->len > ch->in_credit) {
			client_send_error(ci, h->chan, EBADMSG, "stdin sent past its flow-control credit");
			c->closing = true;
			return;
		}
		ch->in_credit -= h->len;
		forward(true, ci, h, payload, ch->agent_chan);
		return;
	case CP_CREDIT: {
		struct cp_credit m;
		if (!ch || cp_credit_decode(payload, h->len, &m) < 0 || m.stream < 1 || m.stream > 2)
			return;
		ch->out_credit[m.stream] += m.bytes;
		forward(true, ci, h, payload, ch->agent_chan);
		return;
	}
	case CP_RESIZE:
		if (ch)
			forward(true, ci, h, payload, ch->agent_chan);
		return;
	case CP_STOP: {
		struct cp_stop m;
		if (cp_stop_decode(payload, h->len, &m) < 0) {
			client_send_error(ci, h->chan, EBADMSG, "malformed STOP request");
			return;
		}
		c->stop_waiter = true;
		c->stop_chan = h->chan;
		begin_stop(m.timeout_ms);
		return;
	}
	case CP_MOUNT:
	case CP_UNMOUNT:
	case CP_MOUNTS:
		mount_request(ci, h, payload);
		return;
	case CP_SAVE:
		save_request(ci, h, payload);
		return;
	case CP_PORT_ADD:
	case CP_PORT_REMOVE:
	case CP_PORTS:
		port_request(ci, h, payload);
		return;
	case CP_SCREENSHOT:
	case CP_INPUT:
		display_request(ci, h, payload);
		return;
	default:
		client_send_error(ci, h->chan, EOPNOTSUPP, "%s is not a request a client can make",
				  cp_type_name(h->type));
	}
}

static void client_readable(int ci)
{
	struct client *c = &S.clients[ci];
	long n = cp_rxbuf_fill(&c->rx, c->fd);
	if (n == -EAGAIN)
		return;
	if (n <= 0) {
		client_close(ci);
		return;
	}
	struct cp_header h;
	const uint8_t *payload;
	int k = 0;
	while (c->used && !c->closing && (k = cp_rxbuf_peek(&c->rx, &h, &payload)) > 0) {
		/* Another client's request may be served inside this one's wait for the guest. */
		int outer = S.serving_client;
		S.serving_client = ci;
		client_request(ci, &h, payload);
		S.serving_client = outer;
		if (c->gone) {
			client_close(ci);
			return;
		}
		if (c->used)
			cp_rxbuf_consume(&c->rx, &h);
	}
	if (c->used && !c->closing && k < 0) {
		/* Garbage on the socket: tell the client why, drop it, and carry on. */
		client_send_error(ci, 0, EBADMSG, "malformed frame header; closing the connection");
		c->closing = true;
	}
	if (c->used && c->closing && outq_pending(&c->out) == 0)
		client_close(ci);
	else if (c->used)
		client_update_events(ci);
}

static int client_add(int fd, bool owner)
{
	for (int i = 0; i < MAX_CLIENTS; i++) {
		struct client *c = &S.clients[i];
		if (c->used)
			continue;
		memset(c, 0, sizeof(*c));
		c->used = true;
		c->fd = fd;
		c->owner = owner;
		cp_rxbuf_init(&c->rx);
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
		ep_set(fd, KEY_CLIENT_BASE + (uint64_t)i, EPOLLIN, true);
		return i;
	}
	close(fd);
	return -1;
}

/* ---- agent frames ------------------------------------------------------------------- */

/* The agent is inside the sandbox: a frame no agent sends means it is broken or not ours any
 * more. Either way the sandbox ends, and what it sent after is dropped, not forwarded. */
static void agent_distrust(const char *fmt, ...) _printf_(1, 2);
static void agent_distrust(const char *fmt, ...)
{
	char why[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	shim_log("%s: the sandbox ends", why);
	S.agent_distrusted = true;
	begin_stop(0);
}

static void agent_frame(const struct cp_header *h, const uint8_t *payload)
{
	if (S.agent_distrusted)
		return;
	if (vm_fwd_chan(h->chan)) {
		vm_fwd_agent_frame(&S.net, h, payload);
		return;
	}
	struct channel *ch = h->chan ? chan_by_agent(h->chan) : NULL;
	if (!ch)
		return;
	if (cp_agent_reply_check(h, payload) < 0 || (h->type == CP_STARTED && ch->started)) {
		/* Forwarded, it would reach a client that trusts the shim's frames, past the flow
		 * control that bounds DATA. */
		agent_distrust("agent sent a malformed or unexpected %s on channel %u", cp_type_name(h->type), h->chan);
		return;
	}
	if (h->type == CP_STARTED)
		ch->started = true;
	if (h->type == CP_DATA) {
		unsigned stream = h->flags & CP_FLAG_STREAM_MASK;
		if (h->len > ch->out_credit[stream]) {
			agent_distrust("agent sent DATA past its credit on channel %u", h->chan);
			return;
		}
		ch->out_credit[stream] -= h->len;
	} else if (h->type == CP_CREDIT) {
		struct cp_credit m;
		if (cp_credit_decode(payload, h->len, &m) == 0)
			ch->in_credit = ch->in_credit + m.bytes > CP_INITIAL_WINDOW * 4ull ? CP_INITIAL_WINDOW * 4ull
											 : ch->in_credit + m.bytes;
	}
	bool final = h->type == CP_EXIT || h->type == CP_ERROR || h->type == CP_OK;
	if (ch->client >= 0 && S.clients[ch->client].used)
		forward(false, ch->client, h, payload, ch->client_chan);
	if (final) {
		if (ch->client >= 0 && S.clients[ch->client].used && S.clients[ch->client].nchans > 0)
			S.clients[ch->client].nchans--;
		memset(ch, 0, sizeof(*ch));
	}
}

static void agent_readable(void)
{
	long n = cp_rxbuf_fill(&S.agent_rx, S.agent_fd);
	if (n == -EAGAIN)
		return;
	if (n <= 0) {
		epoll_ctl(S.epfd, EPOLL_CTL_DEL, S.agent_fd, NULL);
		close(S.agent_fd);
		S.agent_fd = -1;
		if (!S.stopping)
			shim_log("agent connection closed");
		begin_stop(0);
		return;
	}
	struct cp_header h;
	const uint8_t *payload;
	int k;
	S.reading_agent = true;
	while ((k = cp_rxbuf_peek(&S.agent_rx, &h, &payload)) > 0) {
		agent_frame(&h, payload);
		cp_rxbuf_consume(&S.agent_rx, &h);
	}
	if (k < 0)
		agent_distrust("malformed frame from the agent");
	S.reading_agent = false;
}

/* ---- start -------------------------------------------------------------------------- */

/* Start-up phases with their time since the shim began, for the log (perf work, and what
 * a slow start spent its time on). */
static uint64_t shim_t0_ns;
static char phase_log[256];

static void progress(const char *stage)
{
	size_t n = strlen(phase_log);
	snprintf(phase_log + n, sizeof(phase_log) - n, " %s=%.2fms", stage, (double)(now_ns() - shim_t0_ns) / 1e6);
}

/* Blocking receive of one frame from the agent during bring-up, with a deadline. */
static int agent_recv(struct cp_header *h, const uint8_t **payload, uint64_t deadline_ms, capsule_error *err)
{
	for (;;) {
		int k = cp_rxbuf_peek(&S.agent_rx, h, payload);
		if (k > 0)
			return 0;
		if (k < 0)
			return cap_err_plain(err, EPROTO, "malformed frame from the agent");
		uint64_t now = now_ms();
		if (now >= deadline_ms)
			return cap_err_plain(err, ETIMEDOUT, "the agent did not answer within the boot timeout (%u ms)",
					     config_boot_timeout_ms(&S.cfg));
		struct pollfd pfd[2] = { { .fd = S.agent_fd, .events = POLLIN }, { .fd = S.ct.pidfd, .events = POLLIN } };
		int r = poll(pfd, 2, (int)(deadline_ms - now));
		if (r < 0 && errno != EINTR)
			return cap_err(err, errno, "poll");
		if (pfd[0].revents) {
			long n = cp_rxbuf_fill(&S.agent_rx, S.agent_fd);
			if (n == 0)
				return cap_err_plain(err, EPIPE, "the agent exited during start");
			if (n < 0 && n != -EAGAIN)
				return cap_err(err, (int)-n, "reading from the agent");
		} else if (pfd[1].revents) {
			if (S.cfg.isolation == CAPSULE_ISOLATION_VM) {
				char why[512];
				vm_last_words(S.run_fd, why, sizeof(why));
				return cap_err_plain(err, ECHILD, "QEMU exited during boot%s%s (see '%s/run/%s/console.log')",
						     why[0] ? ": " : "", why, capsule_home(), S.name);
			}
			return cap_err_plain(err, ECHILD, "the sandbox's init died during start");
		}
	}
}

static int make_agent_memfd(int *out, capsule_error *err)
{
	_cleanup_free_ char *path = NULL;
	int r = find_helper("capsule-agent", &path, err);
	if (r < 0)
		return r;
	_cleanup_close_ int src = open(path, O_RDONLY | O_CLOEXEC);
	if (src < 0)
		return cap_err(err, errno, "open '%s'", path);
	struct stat st;
	if (fstat(src, &st) < 0)
		return cap_err(err, errno, "stat '%s'", path);
	int fd = memfd_create("capsule-agent", MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_EXEC);
	if (fd < 0 && errno == EINVAL)
		fd = memfd_create("capsule-agent", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return cap_err(err, errno, "memfd_create");
	off_t off = 0;
	while (off < st.st_size) {
		ssize_t n = sendfile(fd, src, &off, (size_t)(st.st_size - off));
		if (n <= 0) {
			int e = n < 0 ? errno : EIO;
			close(fd);
			return cap_err(err, e, "copying '%s' into a memfd", path);
		}
	}
	/* Sealed: nothing in the sandbox can rewrite the binary it runs as PID 1 through
	 * /proc/1/exe (the runc CVE-2019-5736 class). */
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0) {
		int e = errno;
		close(fd);
		return cap_err(err, e, "sealing the agent memfd");
	}
	*out = fd;
	return 0;
}

static int join_cgroup(pid_t child, void *payload, capsule_error *err)
{
	(void)payload;
	/* A sandbox that is not in its cgroups would run without its limits: that fails the
	 * start, it is not a warning. */
	return S.cg ? cgroup_add_pid(S.cg, child, err) : 0;
}

static void close_bind_trees(struct container_bind *binds, size_t n)
{
	for (size_t i = 0; i < n; i++)
		close(binds[i].tree);
}

/* Host paths are opened here, with the shim's rights, which are those of whoever made the
 * sandbox; never from inside it. Each becomes a detached mount, made read-only (for every
 * user inside, root included) and nosuid, nodev before the sandbox exists. */
static int open_bind_trees(struct container_bind *binds, size_t *n, capsule_error *err)
{
	for (size_t i = 0; i < S.cfg.nbinds; i++) {
		const struct bind_mount *b = &S.cfg.binds[i];
		if (b->transform) {
			/* Served by capsule-fuse: a FUSE mount, not a clone of the folder. The
			 * server maps ids itself (docs/architecture.md), so no idmap on top. */
			struct transform_ids ids;
			bool rootless;
			home_id_map(S.cfg.id_slot, &ids.host_uid_base, &ids.host_gid_base, &ids.count, &rootless);
			ids.uid_base = ids.host_uid_base;
			ids.gid_base = ids.host_gid_base;
			if (S.cfg.isolation == CAPSULE_ISOLATION_VM) {
				/* QEMU passes the guest's ids as they are (security_model=none): the
				 * guest's root is id 0, its id N the sandbox's host id, as on the share. */
				ids.uid_base = 0;
				ids.gid_base = 0;
			}
			int tree;
			uint32_t timeout = S.cfg.boot_timeout_ms ? S.cfg.boot_timeout_ms : CAPSULE_DEFAULT_BOOT_TIMEOUT_MS;
			/* A volume's content folder is served like a host folder; the server's fd
			 * keeps the volume's filesystem alive, our shared lock keeps it ours. */
			struct volume_handle vh = { .lock_fd = -1, .mount_fd = -1, .data_fd = -1 };
			int r = b->volume ? volume_open(b->source, &vh, err) : 0;
			if (r == 0)
				r = transform_mount_open(b, vh.data_fd, &ids, timeout, S.log ? fileno(S.log) : -1, &tree,
							 &S.transforms[S.ntransforms], err);
			if (b->volume && vh.lock_fd >= 0)
				S.volume_locks[S.nvolume_locks++] = volume_release_keep_lock(&vh);
			if (r < 0) {
				close_bind_trees(binds, *n);
				return r;
			}
			S.ntransforms++;
			/* The server's work is the sandbox's: its memory, CPU and pids count against the
			 * sandbox's limits, not against nobody's. */
			if (S.cg && (r = cgroup_add_pid(S.cg, S.transforms[S.ntransforms - 1].pid, err)) < 0) {
				close(tree);
				close_bind_trees(binds, *n);
				return r;
			}
			binds[(*n)++] = (struct container_bind){ .tree = tree, .target = b->target, .is_dir = true,
								 .no_idmap = true };
			continue;
		}
		int tree;
		if (b->volume) {
			/* A volume is one more tree: its content folder (inside its mounted image for
			 * one with a quota), cloned, so idmapping, read-only and the target's
			 * resolution are those of any bind. */
			struct volume_handle vh;
			int r = volume_open(b->source, &vh, err);
			if (r < 0) {
				close_bind_trees(binds, *n);
				return r;
			}
			tree = sys_open_tree(vh.data_fd, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH | AT_RECURSIVE);
			int e = errno;
			S.volume_locks[S.nvolume_locks++] = volume_release_keep_lock(&vh);
			errno = e;
		} else {
			tree = sys_open_tree(AT_FDCWD, b->source, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
		}
		if (tree < 0) {
			int r = cap_err(err, errno, "%s '%s'", b->volume ? "volume" : "mount source", b->source);
			close_bind_trees(binds, *n);
			return r;
		}
		binds[(*n)++] = (struct container_bind){ .tree = tree, .target = b->target };
		struct stat st;
		struct mount_attr a = { .attr_set = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV |
						    (b->readonly ? MOUNT_ATTR_RDONLY : 0) };
		if (fstat(tree, &st) < 0 || sys_mount_setattr(tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &a) < 0) {
			int r = cap_err(err, errno, "preparing the mount of '%s'", b->source);
			close_bind_trees(binds, *n);
			return r;
		}
		binds[*n - 1].is_dir = S_ISDIR(st.st_mode);
	}
	return 0;
}

static int agent_bring_up(const char *hostname, uint64_t deadline, capsule_error *err);

/* vm: one mount request to the agent and its final answer (agent_wait_answer), as a
 * container's hot mount child is waited for. MOUNT or UNMOUNT is set; *MNT_ID gets
 * VM_MOUNTED's id. */
#define VM_CALL_TIMEOUT_MS 20000
static int vm_agent_call(const struct cp_vm_mount *mount, const struct cp_vm_unmount *unmount, uint64_t *mnt_id,
			 capsule_error *err)
{
	if (S.agent_fd < 0 || S.stopping)
		return cap_err_plain(err, ESHUTDOWN, "sandbox '%s' is stopping", S.name);
	do {
		if (++S.next_agent_chan == 0)
			S.next_agent_chan = 1;
	} while (chan_by_agent(S.next_agent_chan));
	uint32_t chan = S.next_agent_chan;
	int r = mount ? cp_vm_mount_encode(&S.w, chan, mount) : cp_vm_unmount_encode(&S.w, chan, unmount);
	if (r < 0)
		return cap_err(err, -r, "encoding %s", mount ? "VM_MOUNT" : "VM_UNMOUNT");
	shim_log("asking the guest to %s '%s'", mount ? "mount" : "unmount", mount ? mount->target : unmount->target);
	to_agent(S.w.buf, S.w.len);
	struct cp_header h;
	const uint8_t *payload;
	if ((r = agent_wait_answer(chan, VM_CALL_TIMEOUT_MS, "a mount request", &h, &payload, err)) < 0)
		return r;
	if (h.type == CP_ERROR) {
		struct cp_error_msg m;
		if (cp_error_decode(payload, h.len, &m) < 0)
			r = cap_err_plain(err, EPROTO, "malformed ERROR from the agent");
		else
			r = cap_err_plain(err, m.errnum ? (int)m.errnum : EIO, "%s", m.message ? m.message : "");
		if (r == 0)
			r = -EIO;
		cp_error_free(&m);
	} else if (mount && h.type == CP_VM_MOUNTED) {
		struct cp_vm_mounted m;
		r = cp_vm_mounted_decode(payload, h.len, &m) < 0 ? cap_err_plain(err, EPROTO, "malformed VM_MOUNTED from the agent")
								   : 0;
		if (r == 0 && mnt_id)
			*mnt_id = m.mnt_id;
	} else if (!mount && h.type == CP_OK) {
		r = 0;
	} else {
		r = cap_err_plain(err, EPROTO, "the agent answered %s with %s", mount ? "VM_MOUNT" : "VM_UNMOUNT",
				  cp_type_name(h.type));
	}
	cp_rxbuf_consume(&S.agent_rx, &h);
	return r;
}

/* Boot-time binds and volumes become entries b<i> of the share, before QEMU starts. */
static int vm_boot_shares(capsule_error *err)
{
	int r = vm_shares_prepare(&S.shares, S.run_fd, err);
	if (r < 0 || (r = vm_net_hosts_attach(&S.cfg, &S.shares, err)) < 0 || !S.cfg.nbinds)
		return r;
	if (!S.shares.enabled)
		return cap_err_plain(err, EOPNOTSUPP,
				     "bind mounts and volumes with vm isolation need capsule to run as root (sandbox '%s')",
				     S.name);
	struct container_bind binds[CAPSULE_MAX_BINDS + 2];
	size_t nbinds = 0;
	if ((r = open_bind_trees(binds, &nbinds, err)) < 0)
		return r;
	for (size_t i = 0; i < nbinds && r == 0; i++) {
		char name[16];
		snprintf(name, sizeof(name), "b%zu", i);
		/* A transform's server maps ids itself. */
		if (!binds[i].no_idmap)
			r = vm_idmap_tree(binds[i].tree, geteuid(), getegid(), S.cfg.binds[i].readonly, S.cfg.binds[i].source, err);
		if (r == 0)
			r = vm_shares_attach(&S.shares, binds[i].tree, name, binds[i].is_dir, err);
	}
	close_bind_trees(binds, nbinds);
	return r;
}

/* Once the agent is up: tmpfs first, then the binds, as the container level mounts them. */
static int vm_boot_mounts(capsule_error *err)
{
	int r;
	for (size_t i = 0; i < S.cfg.ntmpfs; i++) {
		struct cp_vm_mount m = { .kind = CP_VM_MOUNT_TMPFS, .target = S.cfg.tmpfs[i].target,
					 .size = S.cfg.tmpfs[i].size_bytes, .mode = S.cfg.tmpfs[i].mode };
		if ((r = vm_agent_call(&m, NULL, NULL, err)) < 0)
			return r;
	}
	for (size_t i = 0; i < S.cfg.nbinds; i++) {
		char name[16];
		snprintf(name, sizeof(name), "b%zu", i);
		struct stat st;
		bool is_file = fstatat(S.shares.dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISDIR(st.st_mode);
		struct cp_vm_mount m = { .kind = CP_VM_MOUNT_SHARE, .name = name, .target = S.cfg.binds[i].target,
					 .flags = (S.cfg.binds[i].readonly ? CP_VM_MOUNT_RO : 0) | (is_file ? CP_VM_MOUNT_FILE : 0) };
		if ((r = vm_agent_call(&m, NULL, NULL, err)) < 0)
			return r;
	}
	if (vm_net_hosts_wanted(&S.cfg, &S.shares)) {
		struct cp_vm_mount m = { .kind = CP_VM_MOUNT_SHARE, .name = VM_NET_HOSTS_ENTRY, .target = "/etc/hosts",
					 .flags = CP_VM_MOUNT_RO | CP_VM_MOUNT_FILE };
		if ((r = vm_agent_call(&m, NULL, NULL, err)) < 0)
			return r;
	}
	return 0;
}

/* The guest's ids on a host folder are the container level's: OWNER for its root, the
 * sandbox's own host range for the rest (vm_shares_idmap). */
static int vm_idmap_tree(int tree, uid_t owner_uid, gid_t owner_gid, bool readonly, const char *what,
			 capsule_error *err)
{
	uid_t ub;
	gid_t gb;
	uint32_t count;
	bool rootless;
	home_id_map(S.cfg.id_slot, &ub, &gb, &count, &rootless);
	return vm_shares_idmap(tree, owner_uid, owner_gid, ub, gb, count, readonly, what, err);
}

static int vm_hot_attach(int tree, const char *name, const char *target, bool is_dir, bool readonly,
			 uint64_t *mnt_id, capsule_error *err)
{
	int r = vm_shares_attach(&S.shares, tree, name, is_dir, err);
	if (r < 0)
		return r;
	struct cp_vm_mount m = { .kind = CP_VM_MOUNT_SHARE, .name = (char *)name, .target = (char *)target,
				 .flags = CP_VM_MOUNT_NO_SYMLINKS | (readonly ? CP_VM_MOUNT_RO : 0) |
					  (is_dir ? 0 : CP_VM_MOUNT_FILE) };
	if ((r = vm_agent_call(&m, NULL, mnt_id, err)) < 0)
		vm_shares_detach(&S.shares, name);
	return r;
}

static int vm_hot_detach(const char *name, const char *target, uint64_t mnt_id, capsule_error *err)
{
	struct cp_vm_unmount m = { .target = (char *)target, .mnt_id = mnt_id };
	int r = vm_agent_call(NULL, &m, NULL, err);
	if (r == 0)
		vm_shares_detach(&S.shares, name);
	return r;
}

/* The vm's root disk (src/shim/vm/disk.c): the layer stack (the host image's skeleton at the
 * bottom unless the image is the whole root) flattened into a cached ext4, and the sandbox's
 * own qcow2 over it. */
static int vm_root_disk(const char *skeleton, char **disk, const char **mode, capsule_error *err)
{
	char *stack[CAPSULE_MAX_LAYERS + 1];
	size_t n = 0;
	if (skeleton)
		stack[n++] = (char *)skeleton;
	for (size_t i = 0; i < S.cfg.nlayers; i++)
		stack[n++] = S.cfg.layers[i];
	char run_path[PATH_MAX];
	int rp = fd_path(S.run_fd, run_path, sizeof(run_path), err);
	if (rp < 0)
		return rp;
	_cleanup_free_ char *base = NULL;
	/* From a vm save: its disk (over the ext4 it was made on) is the new disk's backing. */
	int r = S.cfg.disk_from ? ((base = strdup(S.cfg.disk_from)) ? 0 : cap_err(err, ENOMEM, "vm disk"))
				: vm_rootfs(stack, n, &base, err);
	if (r == 0)
		r = vm_disk_overlay(S.run_fd, run_path, base, S.cfg.disk_bytes, S.cfg.image, disk, err);
	*mode = skeleton ? VM_DISK_MODE_HOST : VM_DISK_MODE_ROOT;
	if (r == 0)
		shim_log("root disk %s over %s", *disk, base);
	return r;
}

#define VM_KVM_BOOT_MS 20000

/* QEMU started with SPEC and its agent's HELLO and INIT done: S.vm, S.ct and S.agent_fd set
 * (also on failure, for the caller to tear down). */
static int vm_boot_qemu(const struct vm_spec *spec_in, const char *hostname, capsule_error *err)
{
	int sp[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0)
		return cap_err(err, errno, "socketpair");
	struct vm_spec spec = *spec_in;
	spec.agent_sock = sp[1];
	progress("qemu");
	int r = vm_start(&S.vm, &spec, err);
	close(sp[1]);
	if (r < 0) {
		close(sp[0]);
		return r;
	}
	S.ct.pid = S.vm.pid;
	S.ct.pidfd = S.vm.pidfd;
	shim_log("QEMU pid %d, accel %s", (int)S.vm.pid, S.vm.accel);
	S.agent_fd = sp[0];
	fcntl(S.agent_fd, F_SETFL, fcntl(S.agent_fd, F_GETFL) | O_NONBLOCK);
	cp_rxbuf_init(&S.agent_rx);
	if (S.cfg.display && (r = vm_display_start(&S.vm, S.run_fd, err)) < 0)
		return r;
	uint64_t deadline = now_ms() + config_boot_timeout_ms(&S.cfg);
	/* A KVM boot that auto chose gets less time: TCG is what is left to try. */
	bool auto_accel = !S.cfg.accel[0] || !strcmp(S.cfg.accel, "auto");
	if (auto_accel && !spec.accel && !strcmp(S.vm.accel, "kvm") && deadline > now_ms() + VM_KVM_BOOT_MS)
		deadline = now_ms() + VM_KVM_BOOT_MS;
	return agent_bring_up(hostname, deadline, err);
}

/* What a failed vm_boot_qemu left: QEMU killed and reaped, the channel closed. */
static void vm_boot_abandon(void)
{
	/* Through its pidfd only: a QEMU that vm_start already reaped has a pid that may be
	 * someone else's now. */
	if (S.vm.pidfd >= 0) {
		vm_kill(&S.vm);
		while (waitpid(S.vm.pid, NULL, 0) < 0 && errno == EINTR)
			;
		close(S.vm.pidfd);
	}
	if (S.vm.qmp_fd >= 0)
		close(S.vm.qmp_fd);
	memset(&S.vm, 0, sizeof(S.vm));
	S.vm.pid = -1;
	S.vm.pidfd = S.vm.qmp_fd = -1;
	S.ct.pid = -1;
	S.ct.pidfd = -1;
	if (S.agent_fd >= 0)
		close(S.agent_fd);
	S.agent_fd = -1;
	cp_rxbuf_free(&S.agent_rx);
	outq_free(&S.agent_out);
}

/* QEMU is the vm's every host process, and the transform servers of its binds work for it:
 * they go in the sandbox's cgroups, as Firecracker's jailer puts its VMM in the microVM's.
 * The limits are QEMU's (vm.h): the guest's RAM plus an allowance, its vCPUs' time, a bound
 * on its threads where the pids controller can be had (the guest's kernel counts the guest's
 * processes). */
static int vm_cgroup_create(capsule_error *err)
{
	struct cgroup_support sup;
	cgroup_probe(&sup);
	struct cgroup_limits lim = {
		.memory_bytes = S.cfg.memory_bytes ? S.cfg.memory_bytes + VM_QEMU_MEMORY_ALLOWANCE : 0,
		.cpus_milli = S.cfg.cpus_milli,
		.pids_max = sup.pids ? VM_QEMU_PIDS_MAX : 0,
	};
	char cgname[CAPSULE_NAME_MAX + 16];
	sandbox_cgroup_name(S.name, cgname, sizeof(cgname));
	return cgroup_create(&S.cg, cgname, &lim, err);
}

/* vm isolation: QEMU in place of the namespaces, its virtio-serial port in place of the
 * socketpair's far end; from agent_bring_up on, nothing differs. */
static int start_vm(capsule_error *err)
{
	/* First, as for a container: a host port that is taken fails before QEMU starts. */
	int r = net_prepare(&S.net, &S.cfg, S.epfd, S.run_fd, S.log, err);
	if (r < 0)
		return r;
	if ((r = vm_net_allowlist_check(&S.cfg, err)) < 0 || (r = vm_cgroup_create(err)) < 0)
		return r;
	_cleanup_free_ char *skeleton = NULL;
	/* 9p shows the guest the skeleton's host owners as they are: root's own, for root. */
	r = S.cfg.base_none ? 0 : image_host_lower(geteuid(), getegid(), &skeleton, err);
	if (r < 0)
		return r;
	if ((r = vm_boot_shares(err)) < 0)
		return r;
	progress("disk");
	_cleanup_free_ char *disk = NULL;
	const char *disk_mode = NULL;
	if ((r = vm_root_disk(skeleton, &disk, &disk_mode, err)) < 0)
		return r;
	const char *hostname = S.cfg.hostname[0] ? S.cfg.hostname : S.cfg.name;
	struct vm_spec spec = {
		.run_fd = S.run_fd,
		.cfg = &S.cfg,
		.hostname = hostname,
		.mounts_dir = S.shares.enabled ? S.shares.dir : NULL,
		.disk = disk,
		.disk_mode = disk_mode,
		.place = join_cgroup,
	};
	/* accel auto is KVM where /dev/kvm opens and a guest boots there, TCG otherwise: a KVM
	 * that QEMU cannot use, or on which the guest does not answer within VM_KVM_BOOT_MS (a KVM
	 * boot takes well under a second; a stock kernel has been seen to hang on some hosts),
	 * is given up for one TCG boot, and vm.json says why. */
	char fallback[sizeof(err->message) + 48];
	for (;;) {
		if ((r = vm_boot_qemu(&spec, hostname, err)) == 0)
			break;
		bool auto_accel = !S.cfg.accel[0] || !strcmp(S.cfg.accel, "auto");
		if (!auto_accel || spec.accel || strcmp(S.vm.accel, "kvm") != 0)
			return r;
		snprintf(fallback, sizeof(fallback), "KVM did not boot the guest: %s", err->message);
		shim_log("%s; booting again with TCG", fallback);
		vm_boot_abandon();
		memset(err, 0, sizeof(*err));
		spec.accel = "tcg";
		spec.accel_fallback = fallback;
	}
	if ((r = vm_boot_mounts(err)) < 0 || (r = vm_fwd_start(&S.net, to_agent2, err)) < 0)
		return r;
	progress("ready");
	return 0;
}

static void close_layer_trees(int *trees, size_t n)
{
	for (size_t i = 0; i < n; i++)
		close(trees[i]);
}

/* Each layer folder becomes a read-only, nosuid, nodev detached clone (container.c idmaps it
 * and attaches it below FS/l/), and gets its empty mount point FS/l/<i>, owned by the
 * sandbox's root, which does the attaching. */
static int open_layer_trees(int *trees, uid_t ub, gid_t gb, capsule_error *err)
{
	if (!S.cfg.nlayers)
		return 0;
	if ((mkdirat(S.run_fd, "fs/l", 0700) < 0 && errno != EEXIST) || fchownat(S.run_fd, "fs/l", ub, gb, 0) < 0)
		return cap_err(err, errno, "mkdir 'fs/l'");
	for (size_t i = 0; i < S.cfg.nlayers; i++) {
		char at[32];
		snprintf(at, sizeof(at), "fs/l/%zu", i);
		struct mount_attr a = { .attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV };
		int r = 0;
		if ((mkdirat(S.run_fd, at, 0700) < 0 && errno != EEXIST) || fchownat(S.run_fd, at, ub, gb, 0) < 0)
			r = cap_err(err, errno, "mkdir '%s'", at);
		else if ((trees[i] = sys_open_tree(AT_FDCWD, S.cfg.layers[i], OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC)) < 0)
			r = cap_err(err, errno, "image layer '%s'", S.cfg.layers[i]);
		else if (sys_mount_setattr(trees[i], "", AT_EMPTY_PATH, &a) < 0)
			r = cap_err(err, errno, "preparing image layer '%s'", S.cfg.layers[i]);
		if (r < 0) {
			close_layer_trees(trees, i + (trees[i] >= 0));
			return r;
		}
	}
	return 0;
}

struct owned_dir {
	const char *path;
	mode_t mode;
};

static int make_owned_dirs(int at, const struct owned_dir *dirs, size_t n, uid_t ub, gid_t gb, capsule_error *err)
{
	for (size_t i = 0; i < n; i++) {
		if (mkdirat(at, dirs[i].path, dirs[i].mode) < 0 && errno != EEXIST)
			return cap_err(err, errno, "mkdir '%s'", dirs[i].path);
		if (fchownat(at, dirs[i].path, ub, gb, AT_SYMLINK_NOFOLLOW) < 0 ||
		    fchmodat(at, dirs[i].path, dirs[i].mode, 0) < 0)
			return cap_err(err, errno, "preparing '%s'", dirs[i].path);
	}
	return 0;
}

/* The sandbox's own layer: upper/ and work/ in fs/, or on its disk (*DISK, a detached mount
 * the child attaches at fs/disk), all the sandbox root's. The upper folder is the sandbox's
 * "/" as overlayfs shows it: its mode is the root's. */
static int prepare_layer(uid_t ub, gid_t gb, int *disk, capsule_error *err)
{
	static const struct owned_dir in_folder[] = { { "fs", 0700 }, { "fs/upper", 0755 }, { "fs/work", 0700 },
						      { "fs/rootfs", 0700 } };
	static const struct owned_dir beside_disk[] = { { "fs", 0700 }, { "fs/disk", 0700 }, { "fs/rootfs", 0700 } };
	static const struct owned_dir on_disk[] = { { "upper", 0755 }, { "work", 0700 } };
	if (!layer_has_disk(&S.cfg))
		return make_owned_dirs(S.run_fd, in_folder, ARRAY_SIZE(in_folder), ub, gb, err);
	struct sandbox_layer l;
	int r = make_owned_dirs(S.run_fd, beside_disk, ARRAY_SIZE(beside_disk), ub, gb, err);
	if (r == 0)
		r = sandbox_layer_open(S.run_fd, &S.cfg, true, &l, err);
	if (r < 0)
		return r;
	if ((r = make_owned_dirs(l.root_fd, on_disk, ARRAY_SIZE(on_disk), ub, gb, err)) < 0) {
		sandbox_layer_close(&l);
		return r;
	}
	*disk = l.root_fd;
	return 0;
}

static int start_sandbox(capsule_error *err)
{
	int r;
	if (S.cfg.isolation == CAPSULE_ISOLATION_VM)
		return start_vm(err);
	progress("prepare");
	/* First, so that a host port that is taken fails the start before anything is made. */
	if ((r = net_prepare(&S.net, &S.cfg, S.epfd, S.run_fd, S.log, err)) < 0)
		return r;
	struct cgroup_limits lim = {
		.memory_bytes = S.cfg.memory_bytes,
		.cpus_milli = S.cfg.cpus_milli,
		.pids_max = S.cfg.pids_limit,
	};
	char cgname[CAPSULE_NAME_MAX + 16];
	sandbox_cgroup_name(S.name, cgname, sizeof(cgname));
	if ((r = cgroup_create(&S.cg, cgname, &lim, err)) < 0)
		return r;

	progress("cgroup");

	uid_t ub;
	gid_t gb;
	uint32_t count;
	bool rootless;
	home_id_map(S.cfg.id_slot, &ub, &gb, &count, &rootless);

	/* The library resolved the image to layers; "host" with no layers is the host image. */
	_cleanup_free_ char *lower = NULL;
	if (!S.cfg.base_none && (r = image_host_lower(ub, gb, &lower, err)) < 0)
		return r;

	_cleanup_close_ int disk = -1;
	if ((r = prepare_layer(ub, gb, &disk, err)) < 0)
		return r;
	char fsdir[4096];
	char self[64];
	snprintf(self, sizeof(self), "/proc/self/fd/%d", S.run_fd);
	ssize_t l = readlink(self, fsdir, sizeof(fsdir) - 4);
	if (l < 0)
		return cap_err(err, errno, "readlink '%s'", self);
	fsdir[l] = '\0';
	strcat(fsdir, "/fs");

	progress("rootfs-prep");
	_cleanup_close_ int memfd = -1;
	if ((r = make_agent_memfd(&memfd, err)) < 0)
		return r;
	progress("memfd");
	int layer_trees[CAPSULE_MAX_LAYERS];
	if ((r = open_layer_trees(layer_trees, ub, gb, err)) < 0)
		return r;
	struct container_bind binds[CAPSULE_MAX_BINDS + 2];
	size_t nbinds = 0;
	if ((r = open_bind_trees(binds, &nbinds, err)) < 0) {
		close_layer_trees(layer_trees, S.cfg.nlayers);
		return r;
	}
	int etc_trees[2];
	const char *etc_targets[2];
	size_t netc = 0;
	if ((r = net_etc_trees(&S.net, S.run_fd, etc_trees, etc_targets, &netc, err)) < 0) {
		close_bind_trees(binds, nbinds);
		close_layer_trees(layer_trees, S.cfg.nlayers);
		return r;
	}
	for (size_t i = 0; i < netc; i++)
		binds[nbinds++] = (struct container_bind){ .tree = etc_trees[i], .target = etc_targets[i] };
	int sp[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0) {
		close_bind_trees(binds, nbinds);
		close_layer_trees(layer_trees, S.cfg.nlayers);
		return cap_err(err, errno, "socketpair");
	}

	struct container_tmpfs tmpfs[CAPSULE_MAX_TMPFS];
	for (size_t i = 0; i < S.cfg.ntmpfs; i++)
		tmpfs[i] = (struct container_tmpfs){ S.cfg.tmpfs[i].target, S.cfg.tmpfs[i].size_bytes, S.cfg.tmpfs[i].mode };
	struct container_spec spec = {
		.hostname = S.cfg.hostname[0] ? S.cfg.hostname : S.cfg.name,
		.lowerdir = lower,
		.fsdir = fsdir,
		.host_image = !S.cfg.base_none,
		.agent_memfd = memfd,
		.agent_sock = sp[1],
		.uid_base = ub,
		.gid_base = gb,
		.id_count = count,
		.rootless = rootless,
		.tmpfs = tmpfs,
		.ntmpfs = S.cfg.ntmpfs,
		.binds = binds,
		.nbinds = nbinds,
		.layer_trees = layer_trees,
		.nlayers = S.cfg.nlayers,
		.disk_tree = disk,
	};
	progress("namespaces");
	r = container_start(&S.ct, &spec, join_cgroup, NULL, err);
	close(sp[1]);
	close_bind_trees(binds, nbinds);
	close_layer_trees(layer_trees, S.cfg.nlayers);
	if (r < 0) {
		close(sp[0]);
		return r;
	}
	S.agent_fd = sp[0];
	fcntl(S.agent_fd, F_SETFL, fcntl(S.agent_fd, F_GETFL) | O_NONBLOCK);
	cp_rxbuf_init(&S.agent_rx);
	uint64_t deadline = now_ms() + config_boot_timeout_ms(&S.cfg);
	if ((r = agent_bring_up(spec.hostname, deadline, err)) < 0)
		return r;
	/* Before any client can run a command: the interface, the allowlist. */
	if ((r = net_start(&S.net, &S.ct, rootless, deadline, err)) < 0)
		return r;
	progress("ready");
	return 0;
}

/* The agent said nothing yet: HELLO both ways, then its settings. The same for both levels. */
static int agent_bring_up(const char *hostname, uint64_t deadline, capsule_error *err)
{
	int r;
	progress("agent");
	struct cp_header h;
	const uint8_t *payload;
	if ((r = agent_recv(&h, &payload, deadline, err)) < 0)
		return r;
	struct cp_hello hello;
	if (h.type != CP_HELLO || cp_hello_decode(payload, h.len, &hello) < 0)
		return cap_err_plain(err, EPROTO, "the agent did not say HELLO");
	uint32_t v = hello.version;
	cp_hello_free(&hello);
	cp_rxbuf_consume(&S.agent_rx, &h);
	if (v != CP_VERSION)
		return cap_err_plain(err, EPROTONOSUPPORT, "agent speaks protocol %u, the shim %u", v, CP_VERSION);

	struct cp_hello me = { .version = CP_VERSION, .role = "shim" };
	if ((r = cp_hello_encode(&S.w, 0, &me)) < 0)
		return cap_err(err, -r, "encoding HELLO");
	to_agent(S.w.buf, S.w.len);

	char host_kv[96];
	snprintf(host_kv, sizeof(host_kv), "HOSTNAME=%s", hostname);
	size_t nenv = 0;
	char *envv[CP_MAX_ENV + 4];
	envv[nenv++] = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
	envv[nenv++] = host_kv;
	for (size_t i = 0; i < S.cfg.envc && nenv < CP_MAX_ENV; i++)
		envv[nenv++] = S.cfg.env[i];
	envv[nenv] = NULL;
	struct cp_init init = {
		.seccomp_bpf = (uint8_t *)capsule_seccomp_bpf,
		.seccomp_len = sizeof(capsule_seccomp_bpf),
		.env = envv,
		.envc = nenv,
		.cap_keep = container_default_caps(),
	};
	if ((r = cp_init_encode(&S.w, 0, &init)) < 0)
		return cap_err(err, -r, "encoding INIT");
	to_agent(S.w.buf, S.w.len);
	if ((r = agent_recv(&h, &payload, deadline, err)) < 0)
		return r;
	if (h.type != CP_OK)
		return cap_err_plain(err, EPROTO, "the agent refused its settings");
	cp_rxbuf_consume(&S.agent_rx, &h);
	progress("agent-ready");
	return 0;
}

static int listen_control(capsule_error *err)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char dir[4096];
	int rp = fd_path(S.run_fd, dir, sizeof(dir), err);
	if (rp < 0)
		return rp;
	if ((size_t)snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/control.sock", dir) >= sizeof(sa.sun_path))
		return cap_err_plain(err, ENAMETOOLONG, "control socket path '%s/control.sock' is too long", dir);
	unlinkat(S.run_fd, "control.sock", 0);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return cap_err(err, errno, "socket");
	mode_t old = umask(0077);
	int r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (r < 0 || listen(fd, 128) < 0) {
		int e = errno;
		close(fd);
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
	char cgname[CAPSULE_NAME_MAX + 16];
	sandbox_cgroup_name(S.name, cgname, sizeof(cgname));
	sandbox_freezer_remove(cgname);
	return cgroup_remove_by_name(cgname, &err) < 0 ? 1 : 0;
}

static void event_loop(void);

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "name", required_argument, NULL, 'n' },
		{ "cleanup", no_argument, NULL, 'c' },
		{ "probe", no_argument, NULL, 'p' },
		{ 0 },
	};
	bool cleanup = false;
	int o;
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (o == 'n')
			snprintf(S.name, sizeof(S.name), "%s", optarg);
		else if (o == 'c')
			cleanup = true;
		else if (o == 'p')
			return shim_probe();
		else
			return 2;
	}
	if (!S.name[0] || validate_name(S.name, "sandbox name", NULL) < 0)
		return 2;
	if (cleanup)
		return run_cleanup();

	shim_t0_ns = now_ns();
	layer_defer_removals(true);
	S.agent_fd = -1;
	S.listen_fd = -1;
	S.save = SAVE_JOB_NONE;
	S.save_client = -1;
	signal(SIGPIPE, SIG_IGN);
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	cp_writer_init(&S.w);
	int creator = CREATOR_FD;
	if (fcntl(creator, F_SETFD, FD_CLOEXEC) < 0)
		return 2;

	capsule_error err = { 0 };
	int r = open_run_dir(&err);
	if (r == 0) {
		int logfd = openat(S.run_fd, "shim.log", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (logfd >= 0)
			S.log = fdopen(logfd, "a");
		r = config_load_at(S.run_fd, &S.cfg, &err);
	}
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigaddset(&mask, SIGCHLD);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	if (r == 0) {
		S.epfd = epoll_create1(EPOLL_CLOEXEC);
		S.sigfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
		if (S.epfd < 0 || S.sigfd < 0)
			r = cap_err(&err, errno, "epoll/signalfd");
	}
	if (r == 0)
		r = start_sandbox(&err);
	if (r == 0)
		r = listen_control(&err);
	if (r < 0) {
		shim_log("start failed: %s", err.message);
		report_to_creator(creator, r, &err);
		if (S.ct.pidfd > 0) {
			sys_pidfd_send_signal(S.ct.pidfd, SIGKILL);
			waitpid(S.ct.pid, NULL, 0);
		}
		vm_shares_release(&S.shares);
		transform_servers_reap(true);
		net_reap(&S.net, true);
		if (S.cg)
			cgroup_destroy(S.cg, NULL);
		if (S.run_fd > 0) {
			unlinkat(S.run_fd, "control.sock", 0);
			rm_rf_at(S.run_fd, "fs/work");
		}
		/* The creator removes the folder of a sandbox that never started. */
		return 1;
	}
	S.started_unix = (int64_t)time(NULL);
	write_state("running");
	shim_log("started, agent pid %d;%s", (int)S.ct.pid, phase_log);

	ep_set(S.listen_fd, KEY_LISTEN, EPOLLIN, true);
	ep_set(S.agent_fd, KEY_AGENT, EPOLLIN, true);
	ep_set(S.ct.pidfd, KEY_PIDFD, EPOLLIN, true);
	ep_set(S.sigfd, KEY_SIGNAL, EPOLLIN, true);
	report_to_creator(creator, 0, NULL);
	if (S.cfg.detached) {
		close(creator);
	} else if (client_add(creator, true) >= 0) {
		S.clients[0].hello_done = true;
	}
	event_loop();
	return 0;
}

/* One event of the loop's epoll set. The agent's and QEMU's are the loop's own; a wait for
 * the guest (agent_wait_answer) hands it only the others. */
static void dispatch_event(const struct epoll_event *ev)
{
	uint64_t key = ev->data.u64;
	if (key == KEY_LISTEN) {
		for (;;) {
			int fd = accept4(S.listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
			if (fd < 0)
				break;
			client_add(fd, false);
		}
	} else if (key == KEY_AGENT) {
		if (ev->events & EPOLLOUT) {
			if (outq_flush(&S.agent_out, S.agent_fd) < 0)
				begin_stop(0);
			agent_update_events();
			if (!agent_backlogged())
				all_clients_update_events();
		}
		if (S.agent_fd >= 0 && (ev->events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
			agent_readable();
	} else if (key == KEY_PIDFD) {
		/* The agent (PID 1) exited: the sandbox is over. */
		int st;
		waitpid(S.ct.pid, &st, WNOHANG);
		finish_and_exit();
	} else if (key == KEY_SAVE) {
		if (save_job_running(&S.save))
			save_done(false);
	} else if (key == KEY_SIGNAL) {
		struct signalfd_siginfo si;
		while (read(S.sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
			if (si.ssi_signo != SIGCHLD)
				begin_stop(CAPSULE_DEFAULT_STOP_TIMEOUT_MS);
			else {
				transform_servers_reap(false);
				net_reap(&S.net, false);
			}
		}
	} else if (key >= NET_KEY_BASE) {
		net_event(&S.net, key, ev->events);
	} else {
		int ci = (int)(key - KEY_CLIENT_BASE);
		struct client *c = &S.clients[ci];
		if (!c->used || c->gone)
			return;
		if (ev->events & EPOLLOUT) {
			if (outq_flush(&c->out, c->fd) < 0) {
				client_close(ci);
				return;
			}
			if (c->closing && outq_pending(&c->out) == 0) {
				client_close(ci);
				return;
			}
			client_update_events(ci);
		}
		if (ev->events & (EPOLLIN | EPOLLHUP | EPOLLERR))
			client_readable(ci);
	}
}

static void event_loop(void)
{
	S.loop_running = true;
	for (;;) {
		int timeout = -1;
		if (S.stopping && !S.killed) {
			uint64_t now = now_ms();
			timeout = now >= S.stop_deadline_ms ? 0 : (int)(S.stop_deadline_ms - now);
		}
		struct epoll_event evs[64];
		int n = epoll_wait(S.epfd, evs, 64, timeout);
		if (n < 0 && errno != EINTR)
			_exit(1);
		for (int i = 0; i < n; i++)
			dispatch_event(&evs[i]);
		if (S.stopping && !S.killed && now_ms() >= S.stop_deadline_ms) {
			/* Said in the log, for whoever wonders why a stop took its whole grace. (An agent
			 * that ended its work closed the channel, and the deadline came forward.) */
			if (S.agent_fd >= 0)
				shim_log("the stop's grace is over: killing what is left");
			kill_sandbox();
		}
	}
}
