#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "io.h"
#include "log.h"
#include "vmnet.h"

/* What an output queue (outq_push) and a client's receive buffer (cp_rxbuf_fill) first take. */
#define IO_CLIENT_BUF (64 * 1024)

/* ---- output queues ------------------------------------------------------------------ */

int outq_push(struct outq *q, const void *p, size_t n)
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
			size_t cap = q->cap ? q->cap : IO_CLIENT_BUF;
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

size_t outq_pending(const struct outq *q)
{
	return q->len - q->start;
}

/* The first queued frame's descriptors (the entries at its offset, in order) go with the
 * bytes of that frame alone (at least its first byte), so that the receiver can tell which
 * frame they came with. */
static ssize_t send_with_fd(struct outq *q, int fd)
{
	size_t n = outq_pending(q) < q->fds[0].len ? outq_pending(q) : q->fds[0].len;
	unsigned k = 0;
	while (k < q->nfds && k < CP_EXEC_MAX_FDS && q->fds[k].at == q->fds[0].at)
		k++;
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int) * CP_EXEC_MAX_FDS)];
	} ctl;
	memset(&ctl, 0, sizeof(ctl));
	struct iovec iov = { q->buf + q->start, n };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
			      .msg_controllen = CMSG_SPACE(sizeof(int) * k) };
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int) * k);
	for (unsigned i = 0; i < k; i++)
		memcpy(CMSG_DATA(c) + i * sizeof(int), &q->fds[i].fd, sizeof(int));
	ssize_t sent = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
	if (sent > 0) {
		for (unsigned i = 0; i < k; i++)
			close(q->fds[i].fd);
		/* The rest of the frame, if any, goes as plain bytes. */
		memmove(q->fds, q->fds + k, (q->nfds - k) * sizeof(*q->fds));
		q->nfds -= k;
	}
	return sent;
}

int outq_flush(struct outq *q, int fd)
{
	while (outq_pending(q)) {
		ssize_t n;
		if (q->nfds && q->fds[0].at == q->sent) {
			n = send_with_fd(q, fd);
		} else {
			size_t want = outq_pending(q);
			if (q->nfds && q->fds[0].at - q->sent < want)
				want = (size_t)(q->fds[0].at - q->sent);
			n = send(fd, q->buf + q->start, want, MSG_NOSIGNAL | MSG_DONTWAIT);
		}
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				return 0;
			return -errno;
		}
		q->start += (size_t)n;
		q->sent += (uint64_t)n;
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

/* Send what is queued, then A, then B, in one sendmsg straight from the buffers (no copy of
 * a frame's payload while the peer keeps up), queueing whatever the socket does not take.
 * -errno when the peer is gone. */
static int outq_send(struct outq *q, int fd, const void *a, size_t an, const void *b, size_t bn)
{
	if (q->nfds) {
		/* A descriptor waits in the queue: keep to its order. */
		if ((an && outq_push(q, a, an) < 0) || (bn && outq_push(q, b, bn) < 0))
			return -ENOMEM;
		return outq_flush(q, fd);
	}
	size_t pend = outq_pending(q);
	struct iovec iov[3] = { { q->buf + q->start, pend }, { (void *)a, an }, { (void *)b, bn } };
	struct msghdr msg = { .msg_iov = pend ? iov : iov + 1, .msg_iovlen = pend ? 3 : 2 };
	ssize_t k;
	do
		k = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
	while (k < 0 && errno == EINTR);
	if (k < 0 && errno != EAGAIN)
		return -errno;
	size_t sent = k > 0 ? (size_t)k : 0;
	q->sent += sent;
	size_t qsent = sent < pend ? sent : pend;
	q->start += qsent;
	sent -= qsent;
	if (sent < an && outq_push(q, (const uint8_t *)a + sent, an - sent) < 0)
		return -ENOMEM;
	size_t bsent = sent > an ? sent - an : 0;
	if (bsent < bn && outq_push(q, (const uint8_t *)b + bsent, bn - bsent) < 0)
		return -ENOMEM;
	if (outq_pending(q) == 0)
		q->start = q->len = 0;
	return 0;
}

/* Queue frame HDR + P (N bytes) with descriptors FDS (NFDS, at most CP_EXEC_MAX_FDS) to pass
 * along with it. */
static int outq_push_fds(struct outq *q, const uint8_t *hdr, const void *p, size_t n, const int *fds, unsigned nfds)
{
	if (q->nfds + nfds > q->fds_cap) {
		unsigned cap = q->fds_cap ? q->fds_cap : 4;
		while (cap < q->nfds + nfds)
			cap *= 2;
		struct outq_fd *nf = realloc(q->fds, cap * sizeof(*nf));
		if (!nf)
			return -ENOMEM;
		q->fds = nf;
		q->fds_cap = cap;
	}
	uint64_t at = q->sent + outq_pending(q);
	if (outq_push(q, hdr, CP_HEADER_SIZE) < 0 || (n && outq_push(q, p, n) < 0))
		return -ENOMEM;
	for (unsigned i = 0; i < nfds; i++)
		q->fds[q->nfds++] = (struct outq_fd){ .at = at, .len = CP_HEADER_SIZE + n, .fd = fds[i] };
	return 0;
}

void outq_free(struct outq *q)
{
	for (unsigned i = 0; i < q->nfds; i++)
		close(q->fds[i].fd);
	free(q->fds);
	free(q->buf);
	memset(q, 0, sizeof(*q));
}

/* ---- epoll -------------------------------------------------------------------------- */

void io_init(struct shim_io *io, int epfd)
{
	io->epfd = epfd;
	io->agent_fd = -1;
	io->muted_client = -1;
	io->reserved_chan = 0;
	io->idle_since_ms = now_ms();
	cp_writer_init(&io->w);
}

static void ep_set(struct shim_io *io, int fd, uint64_t key, uint32_t events, bool add)
{
	struct epoll_event ev = { .events = events, .data.u64 = key };
	epoll_ctl(io->epfd, add ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd, &ev);
}

void io_watch(struct shim_io *io, int fd, uint64_t key, uint32_t events)
{
	ep_set(io, fd, key, events, true);
	if (key == KEY_AGENT)
		io->agent_events = events;
}

void io_unwatch(struct shim_io *io, int fd)
{
	epoll_ctl(io->epfd, EPOLL_CTL_DEL, fd, NULL);
}

void io_agent_attach(struct shim_io *io, int fd)
{
	io->agent_fd = fd;
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	cp_rxbuf_init(&io->agent_rx);
}

void io_agent_close(struct shim_io *io)
{
	if (io->agent_fd >= 0) {
		io_unwatch(io, io->agent_fd);
		close(io->agent_fd);
		io->agent_fd = -1;
	}
	cp_rxbuf_free(&io->agent_rx);
	outq_free(&io->agent_out);
}

void io_agent_update_events(struct shim_io *io)
{
	uint32_t ev = EPOLLIN | (outq_pending(&io->agent_out) ? EPOLLOUT : 0);
	if (io->agent_fd >= 0 && ev != io->agent_events) {
		ep_set(io, io->agent_fd, KEY_AGENT, ev, false);
		io->agent_events = ev;
	}
}

bool io_agent_backlogged(const struct shim_io *io)
{
	return outq_pending(&io->agent_out) > AGENT_OUTQ_MAX;
}

void io_agent_writable(struct shim_io *io)
{
	if (outq_flush(&io->agent_out, io->agent_fd) < 0)
		io->agent_failed(io);
	io_agent_update_events(io);
	if (!io_agent_backlogged(io))
		io_all_clients_update_events(io);
}

void io_client_update_events(struct shim_io *io, int ci)
{
	struct client *c = &io->clients[ci];
	uint32_t ev = 0;
	/* Back-pressure: while the agent is not keeping up, stop reading requests. */
	if (!c->closing && !io_agent_backlogged(io))
		ev |= EPOLLIN;
	if (outq_pending(&c->out))
		ev |= EPOLLOUT;
	if (ci == io->muted_client)
		ev = 0;
	if (ev == c->events)
		return;
	ep_set(io, c->fd, KEY_CLIENT_BASE + (uint64_t)ci, ev, false);
	c->events = ev;
}

void io_all_clients_update_events(struct shim_io *io)
{
	for (int i = 0; i < MAX_CLIENTS; i++)
		if (io->clients[i].used)
			io_client_update_events(io, i);
}

/* ---- sending ------------------------------------------------------------------------ */

void io_to_agent2(struct shim_io *io, const void *p, size_t n, const void *p2, size_t n2)
{
	if (io->agent_fd < 0)
		return;
	/* Corked (the frames of one read from a client): the agent gets them in one write. */
	if (io->cork_agent && n + n2 <= CORK_FRAME_MAX) {
		if (outq_push(&io->agent_out, p, n) < 0 || (n2 && outq_push(&io->agent_out, p2, n2) < 0)) {
			shim_log("agent connection failed");
			io->agent_failed(io);
			return;
		}
		io->agent_corked = true;
		return;
	}
	io->agent_corked = false;
	if (outq_send(&io->agent_out, io->agent_fd, p, n, p2, n2) < 0) {
		shim_log("agent connection failed");
		io->agent_failed(io);
		return;
	}
	io_agent_update_events(io);
	if (io_agent_backlogged(io))
		io_all_clients_update_events(io);
}

void io_to_agent(struct shim_io *io, const void *p, size_t n)
{
	io_to_agent2(io, p, n, NULL, 0);
}

/* Send what is queued for client CI; a client whose socket failed is closed. */
static void client_flush(struct shim_io *io, int ci)
{
	struct client *c = &io->clients[ci];
	if (outq_flush(&c->out, c->fd) < 0 || (c->closing && outq_pending(&c->out) == 0))
		io_client_close(io, ci);
	else
		io_client_update_events(io, ci);
}

void io_to_agent_fd(struct shim_io *io, const uint8_t *hdr, const void *payload, size_t n, int fd)
{
	io_to_agent_fds(io, hdr, payload, n, &fd, 1);
}

void io_to_agent_fds(struct shim_io *io, const uint8_t *hdr, const void *payload, size_t n, const int *fds,
		     unsigned nfds)
{
	if (io->agent_fd < 0 || outq_push_fds(&io->agent_out, hdr, payload, n, fds, nfds) < 0) {
		for (unsigned i = 0; i < nfds; i++)
			close(fds[i]);
		if (io->agent_fd >= 0) {
			shim_log("agent connection failed");
			io->agent_failed(io);
		}
		return;
	}
	io->agent_corked = false;
	if (outq_flush(&io->agent_out, io->agent_fd) < 0) {
		shim_log("agent connection failed");
		io->agent_failed(io);
		return;
	}
	io_agent_update_events(io);
}

void io_to_client_fd(struct shim_io *io, int ci, const uint8_t *hdr, const void *payload, size_t n, int fd)
{
	struct client *c = &io->clients[ci];
	if (!c->used || c->gone || outq_push_fds(&c->out, hdr, payload, n, &fd, 1) < 0) {
		close(fd);
		if (c->used && !c->gone)
			io_client_close(io, ci);
		return;
	}
	c->corked = false;
	client_flush(io, ci);
}

void io_to_client2(struct shim_io *io, int ci, const void *p, size_t n, const void *p2, size_t n2)
{
	struct client *c = &io->clients[ci];
	if (!c->used || c->gone)
		return;
	if (outq_pending(&c->out) + n + n2 > CLIENT_OUTQ_MAX) {
		/* A client that does not read what it asked for: cut it off, not us. */
		shim_log("client %d: output queue over its limit, disconnecting", ci);
		io_client_close(io, ci);
		return;
	}
	/* Corked (frames read from the agent in one go): small frames wait for io_uncork, so
	 * that the client gets them in one sendmsg and wakes once. */
	if (io->cork_clients && n + n2 <= CORK_FRAME_MAX) {
		if (outq_push(&c->out, p, n) < 0 || (n2 && outq_push(&c->out, p2, n2) < 0)) {
			io_client_close(io, ci);
			return;
		}
		c->corked = true;
		return;
	}
	c->corked = false;
	if (outq_send(&c->out, c->fd, p, n, p2, n2) < 0) {
		io_client_close(io, ci);
		return;
	}
	io_client_update_events(io, ci);
}

void io_cork_clients(struct shim_io *io)
{
	io->cork_clients = true;
}

void io_uncork_clients(struct shim_io *io)
{
	io->cork_clients = false;
	for (int i = 0; i < MAX_CLIENTS; i++) {
		struct client *c = &io->clients[i];
		if (!c->used || !c->corked)
			continue;
		c->corked = false;
		client_flush(io, i);
	}
}

void io_cork_agent(struct shim_io *io)
{
	io->cork_agent = true;
}

void io_uncork_agent(struct shim_io *io)
{
	io->cork_agent = false;
	if (!io->agent_corked)
		return;
	io->agent_corked = false;
	if (io->agent_fd < 0)
		return;
	if (outq_flush(&io->agent_out, io->agent_fd) < 0) {
		shim_log("agent connection failed");
		io->agent_failed(io);
		return;
	}
	io_agent_update_events(io);
}

void io_to_client(struct shim_io *io, int ci, const void *p, size_t n)
{
	io_to_client2(io, ci, p, n, NULL, 0);
}

void io_client_error(struct shim_io *io, int ci, uint32_t chan, int errnum, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	struct cp_error_msg m = { .errnum = (uint32_t)errnum, .message = msg };
	if (cp_error_encode(&io->w, chan, &m) == 0)
		io_to_client(io, ci, io->w.buf, io->w.len);
}

void io_forward_fds(struct shim_io *io, const struct cp_header *h, const uint8_t *payload, uint32_t chan,
		    const int *fds, unsigned nfds)
{
	uint8_t hdr[CP_HEADER_SIZE];
	struct cp_header nh = *h;
	nh.chan = chan;
	cp_header_encode(hdr, &nh);
	io_to_agent_fds(io, hdr, payload, h->len, fds, nfds);
}

void io_forward(struct shim_io *io, bool to_the_agent, int ci, const struct cp_header *h, const uint8_t *payload,
		uint32_t chan)
{
	uint8_t hdr[CP_HEADER_SIZE];
	struct cp_header nh = *h;
	nh.chan = chan;
	cp_header_encode(hdr, &nh);
	if (to_the_agent)
		io_to_agent2(io, hdr, sizeof(hdr), payload, h->len);
	else
		io_to_client2(io, ci, hdr, sizeof(hdr), payload, h->len);
}

/* ---- channels ----------------------------------------------------------------------- */

struct channel *io_chan_by_client(struct shim_io *io, int ci, uint32_t client_chan)
{
	for (size_t i = 0; i < io->chans_hwm; i++)
		if (io->chans[i].used && io->chans[i].client == ci && io->chans[i].client_chan == client_chan)
			return &io->chans[i];
	return NULL;
}

struct channel *io_chan_by_agent(struct shim_io *io, uint32_t agent_chan)
{
	for (size_t i = 0; i < io->chans_hwm; i++)
		if (io->chans[i].used && io->chans[i].agent_chan == agent_chan)
			return &io->chans[i];
	return NULL;
}

struct channel *io_chan_new(struct shim_io *io, int ci, uint32_t client_chan)
{
	struct channel *ch = NULL;
	for (size_t i = 0; i < MAX_CHANNELS && !ch; i++)
		if (!io->chans[i].used)
			ch = &io->chans[i];
	if (!ch)
		return NULL;
	if ((size_t)(ch - io->chans) + 1 > io->chans_hwm)
		io->chans_hwm = (size_t)(ch - io->chans) + 1;
	/* The vm forwarder's channels (vm_fwd_chan) are never a command's. */
	do {
		io->next_agent_chan++;
		if (io->next_agent_chan == 0 || vm_fwd_chan(io->next_agent_chan))
			io->next_agent_chan = 1;
	} while (io_chan_by_agent(io, io->next_agent_chan) ||
		 (io->reserved_chan && io->next_agent_chan == io->reserved_chan));
	memset(ch, 0, sizeof(*ch));
	ch->used = true;
	ch->client = ci;
	ch->client_chan = client_chan;
	ch->agent_chan = io->next_agent_chan;
	ch->out_credit[1] = ch->out_credit[2] = CP_INITIAL_WINDOW;
	ch->in_credit = CP_INITIAL_WINDOW;
	io->active++;
	return ch;
}

uint32_t io_agent_chan_new(struct shim_io *io)
{
	do {
		if (++io->next_agent_chan == 0)
			io->next_agent_chan = 1;
	} while (io_chan_by_agent(io, io->next_agent_chan));
	return io->next_agent_chan;
}

void io_chan_done(struct shim_io *io, struct channel *ch)
{
	if (ch->client >= 0 && io->clients[ch->client].used && io->clients[ch->client].nchans > 0)
		io->clients[ch->client].nchans--;
	if (ch->used && io->active > 0 && --io->active == 0)
		io->idle_since_ms = now_ms();
	memset(ch, 0, sizeof(*ch));
}

void io_chans_end(struct shim_io *io, int signo)
{
	for (size_t i = 0; i < io->chans_hwm; i++) {
		struct channel *ch = &io->chans[i];
		if (!ch->used)
			continue;
		struct cp_exit ex = { .exit_code = 128 + (uint32_t)signo, .signal = (uint32_t)signo };
		if (ch->client >= 0 && io->clients[ch->client].used && cp_exit_encode(&io->w, ch->client_chan, &ex) == 0)
			io_to_client(io, ch->client, io->w.buf, io->w.len);
		io_chan_done(io, ch);
	}
}

/* ---- clients ------------------------------------------------------------------------ */

void io_spares_prime(struct shim_io *io)
{
	if (!io->spare_rx)
		io->spare_rx = malloc(IO_CLIENT_BUF);
	if (!io->spare_out)
		io->spare_out = malloc(IO_CLIENT_BUF);
}

int io_client_add(struct shim_io *io, int fd, bool owner)
{
	for (int i = 0; i < MAX_CLIENTS; i++) {
		struct client *c = &io->clients[i];
		if (c->used)
			continue;
		memset(c, 0, sizeof(*c));
		c->used = true;
		c->fd = fd;
		c->owner = owner;
		cp_rxbuf_init(&c->rx);
		if (io->spare_rx) {
			c->rx.buf = io->spare_rx;
			c->rx.cap = IO_CLIENT_BUF;
			io->spare_rx = NULL;
		}
		if (io->spare_out) {
			c->out.buf = io->spare_out;
			c->out.cap = IO_CLIENT_BUF;
			io->spare_out = NULL;
		}
		/* An accepted fd is non-blocking from accept4; the creator's socket is not. */
		if (owner)
			fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
		socket_stream_buffers(fd);
		io_watch(io, fd, KEY_CLIENT_BASE + (uint64_t)i, EPOLLIN);
		c->events = EPOLLIN;
		return i;
	}
	close(fd);
	return -1;
}

void io_client_close(struct shim_io *io, int ci)
{
	struct client *c = &io->clients[ci];
	if (!c->used)
		return;
	if (ci == io->muted_client) {
		/* Its request is still on the stack: client_readable frees it when that returns. */
		c->gone = c->closing = true;
		return;
	}
	bool owner = c->owner;
	io_unwatch(io, c->fd);
	close(c->fd);
	/* musl's allocator (the static shim's) gives a freed 64 KiB block back to the kernel
	 * and maps a new one for the next client: an mmap, a munmap and fresh page faults in
	 * every exec. One of each is kept for the next client instead; only the pages a client
	 * wrote stay resident. */
	if (!io->spare_rx && c->rx.cap == IO_CLIENT_BUF) {
		io->spare_rx = c->rx.buf;
		c->rx.buf = NULL;
	}
	if (!io->spare_out && c->out.cap == IO_CLIENT_BUF) {
		io->spare_out = c->out.buf;
		c->out.buf = NULL;
	}
	cp_rxbuf_free(&c->rx);
	outq_free(&c->out);
	memset(c, 0, sizeof(*c));
	/* Commands the client was attached to go with it, as they would with a closed
	 * terminal; their channels are dropped when the agent reports the exit. */
	for (size_t i = 0; i < io->chans_hwm; i++) {
		struct channel *ch = &io->chans[i];
		if (!ch->used || ch->client != ci)
			continue;
		ch->client = -1;
		struct cp_signal sig = { .signo = SIGKILL };
		if (cp_signal_encode(&io->w, ch->agent_chan, &sig) == 0)
			io_to_agent(io, io->w.buf, io->w.len);
	}
	io->client_gone(io, ci, owner);
}

bool io_client_writable(struct shim_io *io, int ci)
{
	struct client *c = &io->clients[ci];
	if (outq_flush(&c->out, c->fd) < 0 || (c->closing && outq_pending(&c->out) == 0)) {
		io_client_close(io, ci);
		return false;
	}
	io_client_update_events(io, ci);
	return true;
}

void io_clients_last_words(struct shim_io *io)
{
	for (int i = 0; i < MAX_CLIENTS; i++) {
		struct client *c = &io->clients[i];
		if (!c->used)
			continue;
		/* Blocking now, with a bound: the shim is about to exit and these are the last words
		 * (outq_flush would give up at the first full socket buffer). */
		fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) & ~O_NONBLOCK);
		struct timeval tv = { .tv_sec = 1 };
		setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		write_all(c->fd, c->out.buf + c->out.start, outq_pending(&c->out));
	}
}
