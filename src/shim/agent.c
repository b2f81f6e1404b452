/* The agent's side of the shim: its bring-up (HELLO, INIT), the frames it sends, and the
 * waits for the guest's answer to a request of the shim's own. The same for both levels: a
 * container's agent is its PID 1, a vm's is behind QEMU's virtio-serial port. */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "seccomp_filter.h"
#include "shim.h"
#include "vmnet.h"

/* Blocking receive of one frame from the agent during bring-up, with a deadline. */
static int agent_recv(struct shim *s, struct cp_header *h, const uint8_t **payload, capsule_error *err)
{
	for (;;) {
		int k = cp_rxbuf_peek(&s->io.agent_rx, h, payload);
		if (k > 0)
			return 0;
		if (k < 0)
			return cap_err_plain(err, EPROTO, "malformed frame from the agent");
		uint64_t now = now_ms();
		if (now >= s->boot_deadline_ms)
			return cap_err_plain(err, ETIMEDOUT, "the agent did not answer within the boot timeout (%u ms)",
					     config_boot_timeout_ms(&s->cfg));
		struct pollfd pfd[2] = { { .fd = s->io.agent_fd, .events = POLLIN },
					 { .fd = s->proc_pidfd, .events = POLLIN } };
		int r = poll(pfd, 2, (int)(s->boot_deadline_ms - now));
		if (r < 0 && errno != EINTR)
			return cap_err(err, errno, "poll");
		if (pfd[0].revents) {
			long n = cp_rxbuf_fill(&s->io.agent_rx, s->io.agent_fd);
			if (n == 0)
				return cap_err_plain(err, EPIPE, "the agent exited during start");
			if (n < 0 && n != -EAGAIN)
				return cap_err(err, (int)-n, "reading from the agent");
		} else if (pfd[1].revents) {
			return s->level->died_during_start(s, err);
		}
	}
}

/* The agent said nothing yet: HELLO both ways, then its settings. The same for both levels. */
int agent_bring_up(struct shim *s, const char *hostname, capsule_error *err)
{
	int r;
	shim_progress("agent");
	struct cp_header h;
	const uint8_t *payload;
	if ((r = agent_recv(s, &h, &payload, err)) < 0)
		return r;
	struct cp_hello hello;
	if (h.type != CP_HELLO || cp_hello_decode(payload, h.len, &hello) < 0)
		return cap_err_plain(err, EPROTO, "the agent did not say HELLO");
	uint32_t v = hello.version;
	cp_hello_free(&hello);
	cp_rxbuf_consume(&s->io.agent_rx, &h);
	if (v != CP_VERSION)
		return cap_err_plain(err, EPROTONOSUPPORT, "agent speaks protocol %u, the shim %u", v, CP_VERSION);

	struct cp_hello me = { .version = CP_VERSION, .role = "shim" };
	if ((r = cp_hello_encode(&s->io.w, 0, &me)) < 0)
		return cap_err(err, -r, "encoding HELLO");
	io_to_agent(&s->io, s->io.w.buf, s->io.w.len);

	char host_kv[96];
	snprintf(host_kv, sizeof(host_kv), "HOSTNAME=%s", hostname);
	size_t nenv = 0;
	char *envv[CP_MAX_ENV + 4];
	envv[nenv++] = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
	envv[nenv++] = host_kv;
	for (size_t i = 0; i < s->cfg.envc && nenv < CP_MAX_ENV; i++)
		envv[nenv++] = s->cfg.env[i];
	envv[nenv] = NULL;
	struct cp_init init = {
		.seccomp_bpf = (uint8_t *)capsule_seccomp_bpf,
		.seccomp_len = sizeof(capsule_seccomp_bpf),
		.env = envv,
		.envc = nenv,
		.cap_keep = s->cfg.caps_set ? s->cfg.caps : container_default_caps(),
	};
	if ((r = cp_init_encode(&s->io.w, 0, &init)) < 0)
		return cap_err(err, -r, "encoding INIT");
	io_to_agent(&s->io, s->io.w.buf, s->io.w.len);
	if ((r = agent_recv(s, &h, &payload, err)) < 0)
		return r;
	if (h.type != CP_OK)
		return cap_err_plain(err, EPROTO, "the agent refused its settings");
	cp_rxbuf_consume(&s->io.agent_rx, &h);
	shim_progress("agent-ready");
	return 0;
}

/* A vm_fwd_send_fn: CTX is the shim. */
void agent_send(void *ctx, const void *p, size_t n, const void *p2, size_t n2)
{
	struct shim *s = ctx;
	io_to_agent2(&s->io, p, n, p2, n2);
}

/* The agent is inside the sandbox: a frame no agent sends means it is broken or not ours any
 * more. Either way the sandbox ends, and what it sent after is dropped, not forwarded. */
void agent_distrust(struct shim *s, const char *fmt, ...)
{
	char why[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	shim_log("%s: the sandbox ends", why);
	s->agent_distrusted = true;
	begin_stop(s, 0);
}

/* A direct stream's STARTED (CH asked for one with CP_FS_DIRECT, and the agent wants it): its
 * bytes go on a socketpair of their own between the client and the agent, past this relay,
 * which saves two copies and two of our wakeups per chunk. The shim makes the pair, so no
 * descriptor a client sends reaches the sandbox this way (a client's reach it only with an
 * EXEC, for its command: requests.c): the agent gets one end in a DIRECT frame, the client
 * the other with STARTED. The end that does not send is shut for sending. The agent still answers on the
 * channel, which keeps its limits, and resolves the request's path as ever. Without a pair
 * (no client any more, too many queued, no descriptors left) DIRECT carries none and the
 * stream is frames. */
#define DIRECT_QUEUED_MAX 16

static void direct_stream_start(struct shim *s, struct channel *ch, const struct cp_header *h, const uint8_t *payload)
{
	bool client = ch->client >= 0 && s->io.clients[ch->client].used;
	/* Sockets waiting in a queue hold descriptors of ours: a client that does not read its
	 * answers (or an agent that does not read) gets frames past a few, so that it cannot
	 * use up the shim's descriptors. */
	bool room = client && s->io.clients[ch->client].out.nfds < DIRECT_QUEUED_MAX &&
		    s->io.agent_out.nfds < DIRECT_QUEUED_MAX;
	int sv[2] = { -1, -1 };
	if (room && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0) {
		/* sv[0] the client's, sv[1] the agent's. */
		shutdown(ch->direct_read ? sv[0] : sv[1], SHUT_WR);
		socket_stream_buffers(sv[0]);
		socket_stream_buffers(sv[1]);
	}
	uint8_t hdr[CP_HEADER_SIZE];
	struct cp_header dh = { .type = CP_DIRECT, .chan = ch->agent_chan };
	cp_header_encode(hdr, &dh);
	if (sv[1] >= 0)
		io_to_agent_fd(&s->io, hdr, NULL, 0, sv[1]);
	else
		io_to_agent(&s->io, hdr, sizeof(hdr));
	if (!client)
		return;
	struct cp_header nh = *h;
	nh.chan = ch->client_chan;
	cp_header_encode(hdr, &nh);
	if (sv[0] >= 0)
		io_to_client_fd(&s->io, ch->client, hdr, payload, h->len, sv[0]);
	else
		io_to_client2(&s->io, ch->client, hdr, sizeof(hdr), payload, h->len);
}

void agent_frame(struct shim *s, const struct cp_header *h, const uint8_t *payload)
{
	if (s->agent_distrusted)
		return;
	if (vm_fwd_chan(h->chan)) {
		vm_fwd_agent_frame(&s->net, h, payload);
		return;
	}
	/* A guest program's DNS query, relayed by a vm's agent to the proxy (egress.c). */
	if (h->type == CP_DNS_QUERY && h->chan == 0) {
		egress_vm_query(&s->net, payload, h->len);
		return;
	}
	if (h->type == CP_VM_LISTENING && h->chan == 0) {
		vm_fwd_listening(&s->net, payload, h->len);
		return;
	}
	struct channel *ch = h->chan ? io_chan_by_agent(&s->io, h->chan) : NULL;
	if (!ch)
		return;
	if (cp_agent_reply_check(h, payload) < 0 || (h->type == CP_STARTED && ch->started)) {
		/* Forwarded, it would reach a client that trusts the shim's frames, past the flow
		 * control that bounds DATA. */
		agent_distrust(s, "agent sent a malformed or unexpected %s on channel %u", cp_type_name(h->type), h->chan);
		return;
	}
	if (h->type == CP_STARTED)
		ch->started = true;
	if (h->type == CP_DATA) {
		unsigned stream = h->flags & CP_FLAG_STREAM_MASK;
		if (h->len > ch->out_credit[stream]) {
			agent_distrust(s, "agent sent DATA past its credit on channel %u", h->chan);
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
	if (h->type == CP_STARTED && ch->direct) {
		direct_stream_start(s, ch, h, payload);
	} else if (ch->client >= 0 && s->io.clients[ch->client].used) {
		io_forward(&s->io, false, ch->client, h, payload, ch->client_chan);
		s->fs_answered |= final && ch->fs;
	}
	if (final) {
		int ci = ch->client;
		io_chan_done(&s->io, ch);
		/* A one-command connection is closed here, once what is queued for it has gone
		 * (at the uncork, or at once), so that the client's close wakes no one. */
		struct client *c = ci >= 0 ? &s->io.clients[ci] : NULL;
		if (c && c->used && c->one_command && c->nchans == 0 && !c->closing) {
			c->closing = true;
			if (!c->corked)
				io_client_writable(&s->io, ci);
		}
	}
}

void agent_readable(struct shim *s)
{
	long n = cp_rxbuf_fill(&s->io.agent_rx, s->io.agent_fd);
	if (n == -EAGAIN)
		return;
	if (n <= 0) {
		io_unwatch(&s->io, s->io.agent_fd);
		close(s->io.agent_fd);
		s->io.agent_fd = -1;
		if (!s->stopping)
			shim_log("agent connection closed");
		begin_stop(s, 0);
		return;
	}
	struct cp_header h;
	const uint8_t *payload;
	int k;
	s->reading_agent = true;
	io_cork_clients(&s->io);
	while ((k = cp_rxbuf_peek(&s->io.agent_rx, &h, &payload)) > 0) {
		agent_frame(s, &h, payload);
		cp_rxbuf_consume(&s->io.agent_rx, &h);
	}
	io_uncork_clients(&s->io);
	if (k < 0)
		agent_distrust(s, "malformed frame from the agent");
	s->reading_agent = false;
}

/* The loop's other events, while a wait for the guest watches the agent and QEMU itself. */
static void serve_others(struct shim *s)
{
	struct epoll_event evs[64];
	int n = epoll_wait(s->io.epfd, evs, 64, 0);
	for (int i = 0; i < n; i++)
		if (evs[i].data.u64 != KEY_AGENT && evs[i].data.u64 != KEY_PIDFD)
			dispatch_event(s, &evs[i]);
	/* What the others queued for the agent is flushed by the wait's poll. */
	io_agent_update_events(&s->io);
}

static int agent_wait_loop(struct shim *s, uint32_t chan, uint32_t timeout_ms, const char *what, struct cp_header *h,
			   const uint8_t **payload, capsule_error *err)
{
	uint64_t deadline = now_ms() + timeout_ms;
	bool was_stopping = s->stopping;
	/* Other clients' frames must not wait as long as the guest takes to answer. */
	io_uncork_clients(&s->io);
	for (;;) {
		if (s->io.agent_fd < 0)
			return cap_err_plain(err, EPIPE, "the agent went away during %s", what);
		if (s->agent_distrusted)
			return cap_err_plain(err, EPROTO, "the agent broke the protocol during %s", what);
		int k = 0;
		while (!s->agent_distrusted && (k = cp_rxbuf_peek(&s->io.agent_rx, h, payload)) > 0) {
			if (h->chan == chan)
				return 0;
			agent_frame(s, h, *payload);
			cp_rxbuf_consume(&s->io.agent_rx, h);
		}
		if (k < 0) {
			agent_distrust(s, "malformed frame from the agent");
			return cap_err_plain(err, EPROTO, "malformed frame from the agent");
		}
		if (s->stopping && !was_stopping)
			return cap_err_plain(err, ESHUTDOWN, "sandbox '%s' is stopping", s->name);
		/* The stop's own sync: a second, forced stop gives up on the guest. */
		if (s->stop_forced)
			return cap_err_plain(err, ECANCELED, "the stop of sandbox '%s' was forced", s->name);
		uint64_t now = now_ms();
		if (now >= deadline) {
			s->agent_unresponsive = true;
			return cap_err_plain(err, ETIMEDOUT, "the guest did not answer %s within %u ms", what, timeout_ms);
		}
		struct pollfd pfd[3] = {
			{ .fd = s->io.agent_fd, .events = POLLIN | (outq_pending(&s->io.agent_out) ? POLLOUT : 0) },
			{ .fd = s->proc_pidfd, .events = POLLIN },
			{ .fd = s->loop_running ? s->io.epfd : -1, .events = POLLIN },
		};
		if (poll(pfd, 3, (int)(deadline - now)) < 0 && errno != EINTR)
			return cap_err(err, errno, "poll");
		if (pfd[1].revents)
			return cap_err_plain(err, ECHILD, "sandbox '%s' ended during %s", s->name, what);
		if (pfd[0].revents & POLLOUT && outq_flush(&s->io.agent_out, s->io.agent_fd) < 0)
			return cap_err_plain(err, EPIPE, "the agent went away during %s", what);
		if (pfd[0].revents & (POLLIN | POLLHUP | POLLERR)) {
			long n = cp_rxbuf_fill(&s->io.agent_rx, s->io.agent_fd);
			if (n == 0 || (n < 0 && n != -EAGAIN))
				return cap_err_plain(err, EPIPE, "the agent went away during %s", what);
		}
		if (pfd[2].revents)
			serve_others(s);
	}
}

/* The final answer on agent channel CHAN, within TIMEOUT_MS, or an error: the guest is
 * hostile or wedged as often as slow. Other clients are served meanwhile (once the loop
 * runs), a stop ends the wait, and frames for other channels are forwarded as usual. The
 * answer is left in the agent's rxbuf, its header in *H and payload in *PAYLOAD, for the
 * caller to read and consume. WHAT names the request. */
int agent_wait_answer(struct shim *s, uint32_t chan, uint32_t timeout_ms, const char *what, struct cp_header *h,
		      const uint8_t **payload, capsule_error *err)
{
	if (s->agent_waiting)
		return cap_err_plain(err, EBUSY, "sandbox '%s' is waiting for its guest already", s->name);
	s->agent_waiting = true;
	s->io.reserved_chan = chan;
	int asker = s->io.muted_client = s->serving_client;
	if (asker >= 0)
		io_client_update_events(&s->io, asker);
	int r = agent_wait_loop(s, chan, timeout_ms, what, h, payload, err);
	s->agent_waiting = false;
	s->io.muted_client = -1;
	s->io.reserved_chan = 0;
	if (asker >= 0 && s->io.clients[asker].used && !s->io.clients[asker].gone)
		io_client_update_events(&s->io, asker);
	return r;
}
