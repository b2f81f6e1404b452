/* The client end of the wire protocol: a blocking connection to one shim. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include "conn.h"
#include "home.h"
#include "proto.h"
#include "sandbox_config.h"
#include "util.h"

void conn_adopt(struct conn *c, int fd)
{
	memset(c, 0, sizeof(*c));
	c->fd = fd;
	cp_rxbuf_init(&c->rx);
	cp_writer_init(&c->w);
}

void conn_close(struct conn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->hello_out_len = 0;
	cp_rxbuf_free(&c->rx);
	cp_writer_free(&c->w);
}

/* One sendmsg of MSG, waiting for room: the bytes the socket took, or the error. */
static ssize_t send_once(struct conn *c, const struct msghdr *msg, capsule_error *err)
{
	for (;;) {
		ssize_t k = sendmsg(c->fd, msg, MSG_NOSIGNAL);
		if (k >= 0)
			return k;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN) {
			struct pollfd pfd = { .fd = c->fd, .events = POLLOUT };
			poll(&pfd, 1, -1);
			continue;
		}
		/* Before the shim's HELLO, as conn_fill says it: a shim that was stopping. */
		if ((errno == EPIPE || errno == ECONNRESET) && c->hello_pending)
			return cap_err_plain(err, ENOTCONN, "sandbox '%s' is not running (it was stopping)", c->hello_name);
		if (errno == EPIPE || errno == ECONNRESET)
			return cap_err_plain(err, ESHUTDOWN, "the sandbox went away");
		return cap_err(err, errno, "sending to the sandbox");
	}
}

static int sendv_all(struct conn *c, struct iovec *iov, int n, capsule_error *err);

/* Send the HELLO that open_hello held back, alone. */
static int hello_flush(struct conn *c, capsule_error *err)
{
	struct iovec iov = { c->hello_out, c->hello_out_len };
	c->hello_out_len = 0;
	return sendv_all(c, &iov, 1, err);
}

int conn_sendv(struct conn *c, struct iovec *iov, int n, capsule_error *err)
{
	if (c->hello_out_len) {
		struct iovec both[8];
		if (n >= (int)(sizeof(both) / sizeof(both[0]))) {
			int r = hello_flush(c, err);
			return r < 0 ? r : sendv_all(c, iov, n, err);
		}
		both[0] = (struct iovec){ c->hello_out, c->hello_out_len };
		memcpy(both + 1, iov, sizeof(*iov) * (size_t)n);
		c->hello_out_len = 0;
		return sendv_all(c, both, n + 1, err);
	}
	return sendv_all(c, iov, n, err);
}

static int sendv_all(struct conn *c, struct iovec *iov, int n, capsule_error *err)
{
	struct msghdr msg = { .msg_iov = iov, .msg_iovlen = (size_t)n };
	while (msg.msg_iovlen && msg.msg_iov->iov_len == 0) {
		msg.msg_iov++;
		msg.msg_iovlen--;
	}
	while (msg.msg_iovlen) {
		ssize_t k = send_once(c, &msg, err);
		if (k < 0)
			return (int)k;
		while (k > 0 || (msg.msg_iovlen && msg.msg_iov->iov_len == 0)) {
			size_t take = (size_t)k < msg.msg_iov->iov_len ? (size_t)k : msg.msg_iov->iov_len;
			msg.msg_iov->iov_base = (uint8_t *)msg.msg_iov->iov_base + take;
			msg.msg_iov->iov_len -= take;
			k -= (ssize_t)take;
			if (msg.msg_iov->iov_len == 0) {
				msg.msg_iov++;
				if (--msg.msg_iovlen == 0)
					break;
			}
		}
	}
	return 0;
}

int conn_send(struct conn *c, capsule_error *err)
{
	if (c->w.err)
		return cap_err(err, -c->w.err, "encoding a request");
	struct iovec iov = { c->w.buf, c->w.len };
	return conn_sendv(c, &iov, 1, err);
}

int conn_send_fds(struct conn *c, const int *fds, size_t nfds, capsule_error *err)
{
	if (!nfds)
		return conn_send(c, err);
	if (c->w.err)
		return cap_err(err, -c->w.err, "encoding a request");
	if (nfds > CP_EXEC_MAX_FDS)
		return cap_err_plain(err, E2BIG, "at most %d descriptors go with a request", CP_EXEC_MAX_FDS);
	int r;
	if (c->hello_out_len && (r = hello_flush(c, err)) < 0)
		return r;
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int) * CP_EXEC_MAX_FDS)];
	} ctl;
	memset(&ctl, 0, sizeof(ctl));
	/* The descriptors go with this frame's bytes alone: the shim tells which frame brought
	 * them by the last byte of the read they came with (cp_rxbuf_fill_fds). */
	struct iovec iov = { c->w.buf, c->w.len };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
			      .msg_controllen = CMSG_SPACE(sizeof(int) * nfds) };
	struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
	memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
	ssize_t k = send_once(c, &msg, err);
	if (k < 0)
		return (int)k;
	/* The rest of the frame, if the socket took only part of it, as plain bytes. */
	iov.iov_base = c->w.buf + k;
	iov.iov_len = c->w.len - (size_t)k;
	return iov.iov_len ? conn_sendv(c, &iov, 1, err) : 0;
}

static int hello_answer(struct conn *c, const struct cp_header *h, const uint8_t *payload, capsule_error *err);

/* A small request's answer comes in tens of microseconds, and most of that is wakeups: when
 * the shim and the agent run on another CPU, the answer has to wake ours out of its idle
 * state (an interrupt to a halted vCPU on a paravirtualized machine, 20 to 40 us). Polling
 * for a while instead of sleeping saves that wakeup, but only when the answer is made on
 * another CPU: on ours, the spin holds the CPU that the shim and the agent are waiting for,
 * and the answer comes only after it. So a spin that ends without the answer backs off (it
 * is skipped for the next 4, 8, ... 256 waits of this thread), and one that sees it keeps
 * spinning (docs/performance.md, "Small files across CPUs"). */
#define SPIN_NS 100000u
#define SPIN_BACKOFF_MAX 256u
static __thread unsigned spin_skip, spin_backoff;

static void conn_spin(struct conn *c)
{
	if (spin_skip) {
		spin_skip--;
		return;
	}
	uint64_t until = now_ns() + SPIN_NS;
	struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
	for (;;) {
		if (poll(&pfd, 1, 0) != 0) {
			spin_backoff = 0;
			return;
		}
		if (now_ns() >= until)
			break;
	}
	spin_backoff = spin_backoff ? spin_backoff * 2 : 4;
	if (spin_backoff > SPIN_BACKOFF_MAX)
		spin_backoff = SPIN_BACKOFF_MAX;
	spin_skip = spin_backoff;
}

/* Wait until more bytes are in C's buffer (until DEADLINE when TIMEOUT_MS > 0; not at all
 * when it is 0: -EAGAIN). */
static int conn_fill(struct conn *c, int timeout_ms, uint64_t deadline, capsule_error *err)
{
	/* An answer is awaited before any request went: the shim waits for our HELLO first. */
	int hr;
	if (c->hello_out_len && (hr = hello_flush(c, err)) < 0)
		return hr;
	if (c->spin && timeout_ms != 0)
		conn_spin(c);
	/* No deadline: the receive itself waits (the socket blocks), one system call instead
	 * of a poll and then the receive. */
	bool polled = timeout_ms >= 0;
	for (;;) {
		int wait = timeout_ms;
		if (timeout_ms > 0) {
			uint64_t now = now_ms();
			if (now >= deadline)
				return cap_err_plain(err, ETIMEDOUT, "timed out waiting for the sandbox");
			wait = (int)(deadline - now);
		}
		if (polled) {
			struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
			int r = poll(&pfd, 1, wait);
			if (r < 0) {
				if (errno == EINTR)
					continue;
				return cap_err(err, errno, "poll");
			}
			if (r == 0)
				return timeout_ms == 0 ? -EAGAIN : cap_err_plain(err, ETIMEDOUT, "timed out waiting for the sandbox");
		}
		long n = cp_rxbuf_fill_fds(&c->rx, c->fd); /* a direct stream's socket comes with STARTED */
		if (n == -EAGAIN) {
			polled = true; /* a socket that does not block: poll for it */
			continue;
		}
		/* A reset is a hang-up with unread data on our side: the same end, as sending sees it. */
		if ((n == 0 || n == -ECONNRESET) && c->hello_pending)
			return cap_err_plain(err, ENOTCONN, "sandbox '%s' is not running (it was stopping)", c->hello_name);
		if (n == 0 || n == -ECONNRESET)
			return cap_err_plain(err, ESHUTDOWN, "the sandbox went away");
		if (n < 0)
			return cap_err(err, (int)-n, "reading from the sandbox");
		return 0;
	}
}

/* The next frame in C's buffer, the shim's answer to a pipelined HELLO checked first: 1 with
 * a frame, 0 with none yet, or an error. */
static int conn_peek(struct conn *c, struct cp_header *h, const uint8_t **payload, capsule_error *err)
{
	for (;;) {
		int k = cp_rxbuf_peek(&c->rx, h, payload);
		if (k < 0)
			return cap_err_plain(err, EPROTO, "malformed frame from the sandbox");
		if (k == 0 || !c->hello_pending)
			return k;
		int r = hello_answer(c, h, *payload, err);
		if (r < 0)
			return r;
	}
}

int conn_recv(struct conn *c, struct cp_header *h, const uint8_t **payload, int timeout_ms, capsule_error *err)
{
	uint64_t deadline = timeout_ms > 0 ? now_ms() + (uint64_t)timeout_ms : 0;
	for (;;) {
		int k = conn_peek(c, h, payload, err);
		if (k != 0)
			return k < 0 ? k : 0;
		int r = conn_fill(c, timeout_ms, deadline, err);
		if (r < 0)
			return r;
	}
}

void conn_consume(struct conn *c, const struct cp_header *h)
{
	cp_rxbuf_consume(&c->rx, h);
}

int conn_error_from_frame(const uint8_t *payload, size_t len, capsule_error *err)
{
	struct cp_error_msg m;
	if (cp_error_decode(payload, len, &m) < 0)
		return cap_err_plain(err, EPROTO, "malformed error from the sandbox");
	int e = (int)m.errnum;
	cap_err_plain(err, e, "%s", m.message ? m.message : strerror(e));
	cp_error_free(&m);
	return -e;
}

/* The shim's answer to our HELLO (H, PAYLOAD): consumed when it is one. */
static int hello_answer(struct conn *c, const struct cp_header *h, const uint8_t *payload, capsule_error *err)
{
	c->hello_pending = false;
	if (h->type == CP_ERROR)
		return conn_error_from_frame(payload, h->len, err);
	struct cp_hello m;
	if (h->type != CP_HELLO || cp_hello_decode(payload, h->len, &m) < 0)
		return cap_err_plain(err, EPROTO, "sandbox '%s' answered with something other than HELLO", c->hello_name);
	cp_hello_free(&m);
	conn_consume(c, h);
	return 0;
}

static bool peer_is_own_user(int fd)
{
	struct ucred cr;
	socklen_t len = sizeof(cr);
	return getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) == 0 && cr.uid == geteuid();
}

/* Connect to NAME's shim and send HELLO; with WAIT, take its answer too. DIR_IN is NAME's
 * run folder already open (taken), or -1. */
static int open_hello(struct conn *c, const char *name, int dir_in, bool wait, uint32_t flags, capsule_error *err)
{
	_cleanup_close_ int dir = dir_in;
	int r = 0;
	/* By its path from the root where it fits (run_dir_socket_path says why); the folder is
	 * then walked to only when the connect fails, to say why. Else through /proc/self/fd: no
	 * limit from sun_path's 108 bytes on how deep the home is. */
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	bool by_path = run_dir_socket_path(name, sa.sun_path, sizeof(sa.sun_path)) == 0;
again:
	if (!by_path) {
		if (dir < 0 && (r = run_dir_open(name, &dir, err)) < 0)
			return r;
		snprintf(sa.sun_path, sizeof(sa.sun_path), "/proc/self/fd/%d/control.sock", dir);
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return cap_err(err, errno, "socket");
	socket_stream_buffers(fd);
	/* A sandbox that is starting holds its lock before its shim listens: wait for it then,
	 * as long as a start may take. The clock is first read then: a first read costs a
	 * short-lived CLI the vDSO's lookup and two page faults. */
	uint64_t deadline = 0;
	while (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;
		if (e == EINTR)
			continue;
		if (dir < 0 && (r = run_dir_open(name, &dir, err)) < 0) {
			close(fd);
			return r;
		}
		if (!deadline)
			deadline = now_ms() + CAPSULE_DEFAULT_BOOT_TIMEOUT_MS + 5000;
		if ((e == ENOENT || e == ECONNREFUSED) && now_ms() < deadline && run_dir_locked(dir)) {
			usleep(2000);
			continue;
		}
		close(fd);
		if ((e == ENOENT || e == ECONNREFUSED) && !run_dir_locked(dir) && run_dir_paused_to_disk(dir))
			return cap_err_plain(err, EBUSY, "sandbox '%s' is paused to disk: resume it first", name);
		if (e == ENOENT || e == ECONNREFUSED)
			return cap_err_plain(err, ENOTCONN, "sandbox '%s' is not running", name);
		return cap_err(err, e, "connecting to sandbox '%s'", name);
	}
	/* A path names whatever lies there now, and the folders above the home may be someone
	 * else's to swap (only the home itself is checked): a socket that another user's process
	 * listens on is never spoken to. The folder the checks were made on is used instead. */
	if (by_path && !peer_is_own_user(fd)) {
		close(fd);
		by_path = false;
		goto again;
	}
	conn_adopt(c, fd);
	c->hello_name = name;
	struct cp_hello hello = { .version = CP_VERSION, .role = "client", .flags = flags };
	c->one_command = flags & CP_HELLO_ONE_COMMAND;
	if ((r = cp_hello_encode(&c->w, 0, &hello)) < 0)
		goto fail;
	c->hello_pending = true;
	if (!wait && c->w.len <= sizeof(c->hello_out)) {
		memcpy(c->hello_out, c->w.buf, c->w.len);
		c->hello_out_len = (uint8_t)c->w.len;
		return 0;
	}
	if ((r = conn_send(c, err)) < 0)
		goto fail;
	if (!wait)
		return 0;
	uint64_t hello_deadline = now_ms() + 10000;
	while (c->hello_pending) {
		struct cp_header h;
		const uint8_t *payload;
		if ((r = conn_peek(c, &h, &payload, err)) < 0 ||
		    (c->hello_pending && (r = conn_fill(c, 10000, hello_deadline, err)) < 0))
			goto fail;
	}
	return 0;
fail:
	conn_close(c);
	/* Hung up on before the hellos were done: a shim that is stopping. */
	if (r == -ECONNRESET || r == -EPIPE || r == -ESHUTDOWN)
		r = cap_err_plain(err, ENOTCONN, "sandbox '%s' is not running (it was stopping)", name);
	return r;
}

int conn_open(struct conn *c, const char *name, capsule_error *err)
{
	return open_hello(c, name, -1, true, 0, err);
}

int conn_open_pipelined(struct conn *c, const char *name, int dir, capsule_error *err)
{
	return open_hello(c, name, dir, false, 0, err);
}

int conn_open_one_command(struct conn *c, const char *name, int dir, capsule_error *err)
{
	return open_hello(c, name, dir, false, CP_HELLO_ONE_COMMAND, err);
}

/* A request the shim answers itself (a hot mount opens host paths and walks the sandbox's
 * tree, and may wait for a busy shim): more than this means the shim is wedged. */
#define SHIM_REPLY_TIMEOUT_MS 30000

int shim_request(struct conn *c, struct cp_request_ok *ok, capsule_error *err)
{
	return shim_request_wait(c, ok, SHIM_REPLY_TIMEOUT_MS, err);
}

int shim_request_wait(struct conn *c, struct cp_request_ok *ok, int timeout_ms, capsule_error *err)
{
	int r = conn_send(c, err);
	if (r < 0)
		return r;
	for (;;) {
		struct cp_header h;
		const uint8_t *payload;
		if ((r = conn_recv(c, &h, &payload, timeout_ms, err)) < 0)
			return r;
		if (h.chan == 1 && h.type == CP_ERROR)
			return conn_error_from_frame(payload, h.len, err);
		if (h.chan == 1 && h.type == CP_OK) {
			struct cp_request_ok m;
			if (cp_request_ok_decode(payload, h.len, &m) < 0)
				return cap_err_plain(err, EPROTO, "malformed answer from the sandbox's shim");
			if (ok)
				*ok = m;
			else
				cp_request_ok_free(&m);
			conn_consume(c, &h);
			return 0;
		}
		conn_consume(c, &h);
	}
}

int shim_json_request(const char *name, uint16_t type, char **json_out, capsule_error *err)
{
	*json_out = NULL;
	struct conn c;
	int r = conn_open(&c, name, err);
	if (r < 0)
		return r;
	struct cp_request_ok ok = { 0 };
	if ((r = cp_empty_encode(&c.w, type, 1)) < 0)
		r = cap_err(err, -r, "encoding a %s request", cp_type_name(type));
	else
		r = shim_request(&c, &ok, err);
	conn_close(&c);
	if (r < 0)
		return r;
	if (!ok.list_json) {
		cp_request_ok_free(&ok);
		return cap_err_plain(err, EPROTO, "sandbox '%s' answered %s without its JSON", name, cp_type_name(type));
	}
	*json_out = steal_ptr(ok.list_json);
	cp_request_ok_free(&ok);
	return 0;
}
