/* Forwarded connections of a vm (docs/protocol.md, "Forwarded connections"). The shim
 * accepts a port forward's connection on the host and, since it cannot make a socket inside
 * a guest as it can inside a container's network namespace, asks us to: FWD_CONNECT names
 * the port, we connect to 127.0.0.1:PORT in the guest, and the bytes cross the agent channel
 * as DATA, stream 0 towards the guest, stream 1 back, each direction under credit with a
 * window of CP_FWD_WINDOW. EOF either way is a half-close (shutdown SHUT_WR on the guest
 * socket, a DATA EOF to the shim); once both ways are done we answer OK. Only the guest's
 * loopback is ever dialled: the port is all the shim chooses. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent.h"

/* Above the shim's own bound (NET_MAX_CONNS): a shim that asks for more is refused. */
#define MAX_FWDS 256

struct fwd {
	bool used;
	bool connecting;
	uint32_t chan;
	uint16_t port;
	int fd;
	uint32_t credit;   /* stream 1 bytes the shim still takes */
	uint8_t *inq;      /* stream 0 bytes received, not yet written to the socket */
	size_t inq_len;
	bool in_eof;       /* the shim's EOF came */
	bool shut;         /* ... and was passed on as SHUT_WR */
	bool out_eof_sent; /* the guest side's EOF went to the shim */
	uint32_t events;   /* ~0u: not in the epoll set */
};

static struct fwd fwds[MAX_FWDS];
static int fwd_epfd = -1;

void fwd_init(int epfd)
{
	fwd_epfd = epfd;
}

static struct fwd *fwd_by_chan(uint32_t chan)
{
	for (size_t i = 0; i < MAX_FWDS; i++)
		if (fwds[i].used && fwds[i].chan == chan)
			return &fwds[i];
	return NULL;
}

static void fwd_release(struct fwd *f)
{
	if (f->fd >= 0) {
		if (f->events != ~0u)
			epoll_ctl(fwd_epfd, EPOLL_CTL_DEL, f->fd, NULL);
		close(f->fd);
	}
	free(f->inq);
	memset(f, 0, sizeof(*f));
	f->fd = -1;
	f->events = ~0u;
}

static void fwd_fail(struct fwd *f, int e, const char *what)
{
	char msg[128];
	snprintf(msg, sizeof(msg), "%s 127.0.0.1:%u in the guest: %s", what, f->port, strerror(e));
	agent_send_error(f->chan, e, msg);
	fwd_release(f);
}

static void fwd_watch(struct fwd *f)
{
	uint32_t want = 0;
	if (f->connecting)
		want = EPOLLOUT;
	else {
		if (!f->out_eof_sent && f->credit > 0)
			want |= EPOLLIN;
		if (f->inq_len > 0)
			want |= EPOLLOUT;
	}
	if (want == f->events)
		return;
	/* Nothing to wait for: out of the set, or a hung-up socket would report EPOLLHUP
	 * without end while we wait for the shim's EOF. */
	if (want == 0) {
		epoll_ctl(fwd_epfd, EPOLL_CTL_DEL, f->fd, NULL);
		f->events = ~0u;
		return;
	}
	struct epoll_event ev = { .events = want, .data.u64 = ((uint64_t)(f - fwds) << 8) | AGENT_ROLE_FWD };
	epoll_ctl(fwd_epfd, f->events == ~0u ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, f->fd, &ev);
	f->events = want;
}

/* Both ways done: the channel ends. */
static bool fwd_maybe_finish(struct fwd *f)
{
	if (!f->out_eof_sent || !f->shut)
		return false;
	if (cp_empty_encode(agent_writer(), CP_OK, f->chan) == 0)
		agent_send_frame();
	fwd_release(f);
	return true;
}

static void fwd_flush(struct fwd *f)
{
	size_t written = 0;
	while (written < f->inq_len) {
		ssize_t n = send(f->fd, f->inq + written, f->inq_len - written, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				break;
			fwd_fail(f, errno, "writing to");
			return;
		}
		written += (size_t)n;
	}
	if (written) {
		memmove(f->inq, f->inq + written, f->inq_len - written);
		f->inq_len -= written;
		agent_send_credit(f->chan, CP_STREAM_STDIN, (uint32_t)written);
	}
	if (f->in_eof && f->inq_len == 0 && !f->shut) {
		shutdown(f->fd, SHUT_WR);
		f->shut = true;
	}
	if (!fwd_maybe_finish(f))
		fwd_watch(f);
}

static void fwd_read(struct fwd *f)
{
	static uint8_t buf[CP_DATA_CHUNK];
	while (f->credit > 0 && !f->out_eof_sent) {
		size_t want = f->credit < sizeof(buf) ? f->credit : sizeof(buf);
		ssize_t n = recv(f->fd, buf, want, MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			break;
		if (n < 0) {
			fwd_fail(f, errno, "reading from");
			return;
		}
		if (cp_data_encode(agent_writer(), f->chan, CP_STREAM_STDOUT, n == 0, buf, (size_t)n) == 0)
			agent_send_frame();
		if (n == 0) {
			f->out_eof_sent = true;
			if (fwd_maybe_finish(f))
				return;
			break;
		}
		f->credit -= (uint32_t)n;
	}
	fwd_watch(f);
}

void fwd_connect(uint32_t chan, const uint8_t *payload, size_t len)
{
	struct cp_fwd_connect m;
	if (cp_fwd_connect_decode(payload, len, &m) < 0) {
		agent_send_error(chan, EBADMSG, "malformed FWD_CONNECT request");
		return;
	}
	if (chan == 0 || fwd_by_chan(chan)) {
		agent_send_error(chan, EBADMSG, "FWD_CONNECT on a channel already in use");
		return;
	}
	struct fwd *f = NULL;
	for (size_t i = 0; i < MAX_FWDS && !f; i++)
		if (!fwds[i].used)
			f = &fwds[i];
	if (!f) {
		agent_send_error(chan, EAGAIN, "too many forwarded connections in this sandbox (256)");
		return;
	}
	*f = (struct fwd){ .used = true, .chan = chan, .port = (uint16_t)m.port, .credit = CP_FWD_WINDOW, .events = ~0u };
	f->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (f->fd < 0) {
		fwd_fail(f, errno, "socket for");
		return;
	}
	int one = 1;
	setsockopt(f->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(f->port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	if (connect(f->fd, (struct sockaddr *)&to, sizeof(to)) < 0) {
		if (errno != EINPROGRESS) {
			fwd_fail(f, errno, "connect to");
			return;
		}
		f->connecting = true;
		fwd_watch(f);
		return;
	}
	struct cp_started st = { 0 };
	if (cp_started_encode(agent_writer(), chan, &st) == 0)
		agent_send_frame();
	fwd_watch(f);
}

void fwd_event(size_t index, uint32_t events)
{
	if (index >= MAX_FWDS || !fwds[index].used)
		return;
	struct fwd *f = &fwds[index];
	if (f->connecting) {
		int e = 0;
		socklen_t el = sizeof(e);
		if (getsockopt(f->fd, SOL_SOCKET, SO_ERROR, &e, &el) < 0)
			e = errno;
		if (e) {
			fwd_fail(f, e, "connect to");
			return;
		}
		f->connecting = false;
		struct cp_started st = { 0 };
		if (cp_started_encode(agent_writer(), f->chan, &st) == 0)
			agent_send_frame();
		fwd_flush(f);
		return;
	}
	if (events & EPOLLOUT) {
		fwd_flush(f);
		if (!f->used)
			return;
	}
	if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
		fwd_read(f);
}

bool fwd_data(const struct cp_header *h, const uint8_t *payload)
{
	struct fwd *f = fwd_by_chan(h->chan);
	if (!f)
		return false;
	if ((h->flags & CP_FLAG_STREAM_MASK) != CP_STREAM_STDIN || f->in_eof)
		return true;
	if (h->len) {
		if (f->inq_len + h->len > CP_FWD_WINDOW) {
			/* Past the credit we granted: the shim is broken. */
			agent_send_error(f->chan, EBADMSG, "forwarded bytes sent past their flow-control credit");
			fwd_release(f);
			return true;
		}
		uint8_t *nq = realloc(f->inq, f->inq_len + h->len);
		if (!nq) {
			fwd_fail(f, ENOMEM, "buffering for");
			return true;
		}
		f->inq = nq;
		memcpy(f->inq + f->inq_len, payload, h->len);
		f->inq_len += h->len;
	}
	if (h->flags & CP_FLAG_EOF)
		f->in_eof = true;
	if (!f->connecting)
		fwd_flush(f);
	return true;
}

bool fwd_credit(const struct cp_header *h, const uint8_t *payload)
{
	struct fwd *f = fwd_by_chan(h->chan);
	if (!f)
		return false;
	struct cp_credit m;
	if (cp_credit_decode(payload, h->len, &m) < 0 || m.stream != CP_STREAM_STDOUT)
		return true;
	uint64_t c = (uint64_t)f->credit + m.bytes;
	f->credit = c > CP_FWD_WINDOW ? CP_FWD_WINDOW : (uint32_t)c;
	if (!f->connecting)
		fwd_read(f);
	return true;
}

void fwd_close(uint32_t chan)
{
	struct fwd *f = fwd_by_chan(chan);
	if (!f)
		return; /* it ended on its own; the shim has our final frame or will */
	/* A reset, as the host client's side ended without a goodbye. */
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	setsockopt(f->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	fwd_release(f);
	if (cp_empty_encode(agent_writer(), CP_OK, chan) == 0)
		agent_send_frame();
}
