/* The codec's core (proto.h): frame headers, the field writer and reader, HELLO, ERROR,
 * bare and DATA frames, and frame assembly from a byte stream. The message families are in
 * proto_exec.c, proto_fs.c, proto_mounts.c, proto_saves.c, proto_net.c and proto_display.c. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proto_internal.h"

void cp_header_encode(uint8_t out[CP_HEADER_SIZE], const struct cp_header *hdr)
{
	put_le32(out, hdr->len);
	put_le16(out + 4, hdr->type);
	put_le16(out + 6, hdr->flags);
	put_le32(out + 8, hdr->chan);
}

bool cp_type_known(uint16_t type)
{
	switch (type) {
	case CP_HELLO: case CP_ERROR: case CP_OK:
	case CP_EXEC: case CP_STARTED: case CP_DATA: case CP_CREDIT: case CP_EXIT: case CP_SIGNAL: case CP_RESIZE:
	case CP_STOP: case CP_TAKE: case CP_INIT: case CP_SHUTDOWN: case CP_FS: case CP_WATCH:
	case CP_VM_MOUNT: case CP_VM_UNMOUNT: case CP_VM_MOUNTED:
	case CP_MOUNT: case CP_UNMOUNT: case CP_MOUNTS:
	case CP_PORT_ADD: case CP_PORT_REMOVE: case CP_PORTS: case CP_STATS: case CP_LIMITS:
	case CP_NET_ALLOW: case CP_NET_DENY: case CP_NET_LS:
	case CP_SAVE: case CP_PAUSE:
	case CP_FWD_CONNECT: case CP_FWD_CLOSE: case CP_DIRECT:
	case CP_DNS_QUERY: case CP_EGRESS: case CP_EGRESS_USED: case CP_VM_LISTENING:
	case CP_SCREENSHOT: case CP_INPUT:
		return true;
	}
	return false;
}

const char *cp_type_name(uint16_t type)
{
	switch (type) {
	case CP_HELLO: return "HELLO";
	case CP_ERROR: return "ERROR";
	case CP_OK: return "OK";
	case CP_EXEC: return "EXEC";
	case CP_STARTED: return "STARTED";
	case CP_DATA: return "DATA";
	case CP_CREDIT: return "CREDIT";
	case CP_EXIT: return "EXIT";
	case CP_SIGNAL: return "SIGNAL";
	case CP_RESIZE: return "RESIZE";
	case CP_STOP: return "STOP";
	case CP_TAKE: return "TAKE";
	case CP_INIT: return "INIT";
	case CP_SHUTDOWN: return "SHUTDOWN";
	case CP_VM_MOUNT: return "VM_MOUNT";
	case CP_VM_UNMOUNT: return "VM_UNMOUNT";
	case CP_VM_MOUNTED: return "VM_MOUNTED";
	case CP_FS: return "FS";
	case CP_WATCH: return "WATCH";
	case CP_MOUNT: return "MOUNT";
	case CP_UNMOUNT: return "UNMOUNT";
	case CP_MOUNTS: return "MOUNTS";
	case CP_PORT_ADD: return "PORT_ADD";
	case CP_PORT_REMOVE: return "PORT_REMOVE";
	case CP_PORTS: return "PORTS";
	case CP_STATS: return "STATS";
	case CP_LIMITS: return "LIMITS";
	case CP_NET_ALLOW: return "NET_ALLOW";
	case CP_NET_DENY: return "NET_DENY";
	case CP_NET_LS: return "NET_LS";
	case CP_SAVE: return "SAVE";
	case CP_PAUSE: return "PAUSE";
	case CP_FWD_CONNECT: return "FWD_CONNECT";
	case CP_FWD_CLOSE: return "FWD_CLOSE";
	case CP_DIRECT: return "DIRECT";
	case CP_DNS_QUERY: return "DNS_QUERY";
	case CP_EGRESS: return "EGRESS";
	case CP_EGRESS_USED: return "EGRESS_USED";
	case CP_VM_LISTENING: return "VM_LISTENING";
	case CP_SCREENSHOT: return "SCREENSHOT";
	case CP_INPUT: return "INPUT";
	}
	return "UNKNOWN";
}

int cp_header_decode(const uint8_t *buf, size_t n, struct cp_header *hdr)
{
	if (n < CP_HEADER_SIZE)
		return -EBADMSG;
	hdr->len = get_le32(buf);
	hdr->type = get_le16(buf + 4);
	hdr->flags = get_le16(buf + 6);
	hdr->chan = get_le32(buf + 8);
	if (hdr->len > CP_MAX_PAYLOAD || !cp_type_known(hdr->type))
		return -EBADMSG;
	return 0;
}

/* ---- writer ---- */

void cp_writer_init(struct cp_writer *w)
{
	memset(w, 0, sizeof(*w));
}

void cp_writer_free(struct cp_writer *w)
{
	free(w->buf);
	memset(w, 0, sizeof(*w));
}

void cp_put_bytes(struct cp_writer *w, uint16_t tag, const void *p, size_t n)
{
	if (n > UINT32_MAX) {
		w->err = w->err ? w->err : -EMSGSIZE;
		return;
	}
	uint8_t *d = writer_reserve(w, 6 + n);
	if (!d)
		return;
	put_le16(d, tag);
	put_le32(d + 2, (uint32_t)n);
	if (n)
		memcpy(d + 6, p, n);
}

void cp_put_u32(struct cp_writer *w, uint16_t tag, uint32_t v)
{
	uint8_t b[4];
	put_le32(b, v);
	cp_put_bytes(w, tag, b, 4);
}

void cp_put_u64(struct cp_writer *w, uint16_t tag, uint64_t v)
{
	uint8_t b[8];
	put_le64(b, v);
	cp_put_bytes(w, tag, b, 8);
}

void cp_put_str(struct cp_writer *w, uint16_t tag, const char *s)
{
	if (s)
		cp_put_bytes(w, tag, s, strlen(s));
}

void cp_frame_begin(struct cp_writer *w, uint16_t type, uint16_t flags, uint32_t chan)
{
	w->len = 0;
	w->err = 0;
	uint8_t *h = writer_reserve(w, CP_HEADER_SIZE);
	if (!h)
		return;
	struct cp_header hdr = { .len = 0, .type = type, .flags = flags, .chan = chan };
	cp_header_encode(h, &hdr);
}

int cp_frame_finish(struct cp_writer *w)
{
	if (w->err)
		return w->err;
	if (w->len < CP_HEADER_SIZE)
		return -EINVAL;
	size_t payload = w->len - CP_HEADER_SIZE;
	if (payload > CP_MAX_PAYLOAD)
		return -EMSGSIZE;
	put_le32(w->buf, (uint32_t)payload);
	return 0;
}

/* ---- reader ---- */

int cp_next_field(struct cp_reader *r, struct cp_field *f)
{
	if (r->rem == 0)
		return 0;
	if (r->rem < 6)
		return -EBADMSG;
	uint16_t tag = get_le16(r->p);
	uint32_t len = get_le32(r->p + 2);
	if (len > r->rem - 6)
		return -EBADMSG;
	f->tag = tag;
	f->len = len;
	f->val = r->p + 6;
	r->p += 6 + (size_t)len;
	r->rem -= 6 + (size_t)len;
	return 1;
}

int cp_field_u32(const struct cp_field *f, uint32_t *v)
{
	if (f->len != 4)
		return -EBADMSG;
	*v = get_le32(f->val);
	return 0;
}

int cp_field_u64(const struct cp_field *f, uint64_t *v)
{
	if (f->len != 8)
		return -EBADMSG;
	*v = get_le64(f->val);
	return 0;
}

int cp_field_strdup(const struct cp_field *f, char **out)
{
	return cp_field_strndup(f, CP_MAX_STRING, out);
}

int cp_field_strndup(const struct cp_field *f, size_t max, char **out)
{
	if (f->len > max || memchr(f->val, '\0', f->len))
		return -EBADMSG;
	char *s = malloc((size_t)f->len + 1);
	if (!s)
		return -ENOMEM;
	memcpy(s, f->val, f->len);
	s[f->len] = '\0';
	*out = s;
	return 0;
}

int cp_field_set_str(const struct cp_field *f, char **slot)
{
	return field_set_str(f, slot);
}

/* ---- messages ---- */

int cp_hello_encode(struct cp_writer *w, uint32_t chan, const struct cp_hello *m)
{
	cp_frame_begin(w, CP_HELLO, 0, chan);
	cp_put_u32(w, CP_T_HELLO_VERSION, m->version);
	cp_put_str(w, CP_T_HELLO_ROLE, m->role);
	if (m->flags)
		cp_put_u32(w, CP_T_HELLO_FLAGS, m->flags);
	return cp_frame_finish(w);
}

int cp_hello_decode(const uint8_t *p, size_t n, struct cp_hello *m)
{
	int ret = 0;
	memset(m, 0, sizeof(*m));
	bool have_version = false;
	DECODE_LOOP(p, n, {
		if (f.tag == CP_T_HELLO_VERSION) {
			r = cp_field_u32(&f, &m->version);
			have_version = true;
		} else if (f.tag == CP_T_HELLO_ROLE) {
			r = field_set_str(&f, &m->role);
		} else if (f.tag == CP_T_HELLO_FLAGS) {
			r = cp_field_u32(&f, &m->flags);
		}
	});
	if (!have_version) {
		ret = -EBADMSG;
		goto fail;
	}
	return 0;
fail:
	cp_hello_free(m);
	return ret;
}

void cp_hello_free(struct cp_hello *m)
{
	free(m->role);
	m->role = NULL;
}

int cp_error_encode(struct cp_writer *w, uint32_t chan, const struct cp_error_msg *m)
{
	cp_frame_begin(w, CP_ERROR, 0, chan);
	cp_put_u32(w, CP_T_ERROR_ERRNO, m->errnum);
	cp_put_str(w, CP_T_ERROR_MESSAGE, m->message);
	return cp_frame_finish(w);
}

/* An error message is shown to people, and it may come from inside the sandbox: control
 * bytes become \xNN so it stays one line and carries no terminal escapes. */
static int sanitize_line(char **s)
{
	size_t n = 0;
	for (const char *c = *s; *c; c++)
		n += ((unsigned char)*c < 0x20 || *c == 0x7f) ? 4 : 1;
	if (n == strlen(*s))
		return 0;
	char *out = malloc(n + 1), *o = out;
	if (!out)
		return -ENOMEM;
	for (const char *c = *s; *c; c++) {
		unsigned char u = (unsigned char)*c;
		if (u < 0x20 || u == 0x7f) {
			static const char hex[] = "0123456789abcdef";
			*o++ = '\\';
			*o++ = 'x';
			*o++ = hex[u >> 4];
			*o++ = hex[u & 15];
		} else {
			*o++ = (char)u;
		}
	}
	*o = '\0';
	free(*s);
	*s = out;
	return 0;
}

int cp_error_decode(const uint8_t *p, size_t n, struct cp_error_msg *m)
{
	int ret = 0;
	memset(m, 0, sizeof(*m));
	DECODE_LOOP(p, n, {
		if (f.tag == CP_T_ERROR_ERRNO)
			r = cp_field_u32(&f, &m->errnum);
		else if (f.tag == CP_T_ERROR_MESSAGE)
			r = field_set_str(&f, &m->message);
	});
	/* An errno outside the usual range would be meaningless to strerror and to callers. */
	if (m->errnum == 0 || m->errnum > 4095)
		m->errnum = EIO;
	if (m->message && (ret = sanitize_line(&m->message)) < 0)
		goto fail;
	return 0;
fail:
	cp_error_free(m);
	return ret;
}

void cp_error_free(struct cp_error_msg *m)
{
	free(m->message);
	m->message = NULL;
}

int cp_empty_encode(struct cp_writer *w, uint16_t type, uint32_t chan)
{
	cp_frame_begin(w, type, 0, chan);
	return cp_frame_finish(w);
}

int cp_data_encode(struct cp_writer *w, uint32_t chan, uint16_t stream, bool eof, const void *p, size_t n)
{
	if (n > CP_MAX_PAYLOAD) {
		w->len = 0;
		return w->err = -EMSGSIZE;
	}
	cp_frame_begin(w, CP_DATA, (uint16_t)((stream & CP_FLAG_STREAM_MASK) | (eof ? CP_FLAG_EOF : 0)), chan);
	uint8_t *d = writer_reserve(w, n);
	if (d && n)
		memcpy(d, p, n);
	return cp_frame_finish(w);
}

/* ---- rx buffer ---- */

void cp_rxbuf_init(struct cp_rxbuf *rx)
{
	memset(rx, 0, sizeof(*rx));
}

static void rx_drop_fds_before(struct cp_rxbuf *rx, uint64_t end)
{
	unsigned k = 0;
	for (unsigned i = 0; i < rx->nfds; i++) {
		if (rx->fds[i].at < end)
			close(rx->fds[i].fd);
		else
			rx->fds[k++] = rx->fds[i];
	}
	rx->nfds = k;
}

void cp_rxbuf_free(struct cp_rxbuf *rx)
{
	rx_drop_fds_before(rx, UINT64_MAX);
	free(rx->fds);
	free(rx->buf);
	memset(rx, 0, sizeof(*rx));
}

static long rx_make_room(struct cp_rxbuf *rx)
{
	const size_t max = CP_HEADER_SIZE + CP_MAX_PAYLOAD;
	/* Compact lazily: consumed bytes are dropped only when room is needed. */
	if (rx->start > 0 && (rx->start == rx->len || rx->cap - rx->len < 16 * 1024)) {
		memmove(rx->buf, rx->buf + rx->start, rx->len - rx->start);
		rx->len -= rx->start;
		rx->base += rx->start;
		rx->start = 0;
	}
	size_t want = 64 * 1024;
	/* Grow to fit the frame at the front, never past one maximal frame. */
	if (rx->len - rx->start >= CP_HEADER_SIZE) {
		struct cp_header h;
		if (cp_header_decode(rx->buf + rx->start, rx->len - rx->start, &h) == 0 &&
		    CP_HEADER_SIZE + (size_t)h.len > want)
			want = CP_HEADER_SIZE + (size_t)h.len;
	}
	if (want > max)
		want = max;
	if (rx->cap < want) {
		uint8_t *nb = realloc(rx->buf, want);
		if (!nb)
			return -ENOMEM;
		rx->buf = nb;
		rx->cap = want;
	}
	if (rx->len == rx->cap)
		return -ENOBUFS;
	return 0;
}

long cp_rxbuf_fill(struct cp_rxbuf *rx, int fd)
{
	long r = rx_make_room(rx);
	if (r < 0)
		return r;
	for (;;) {
		ssize_t n = read(fd, rx->buf + rx->len, rx->cap - rx->len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno == EWOULDBLOCK ? -EAGAIN : -errno;
		}
		rx->len += (size_t)n;
		return (long)n;
	}
}

long cp_rxbuf_fill_fds(struct cp_rxbuf *rx, int fd)
{
	long r = rx_make_room(rx);
	if (r < 0)
		return r;
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int) * CP_RX_FDS)];
	} ctl;
	struct iovec iov = { rx->buf + rx->len, rx->cap - rx->len };
	for (;;) {
		struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
				      .msg_controllen = sizeof(ctl.buf) };
		ssize_t n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno == EWOULDBLOCK ? -EAGAIN : -errno;
		}
		rx->len += (size_t)n;
		uint64_t at = rx->base + rx->len - 1;
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
			if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
				continue;
			size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			if (k && !rx->fds)
				rx->fds = malloc(CP_RX_FDS * sizeof(*rx->fds));
			for (size_t i = 0; i < k; i++) {
				int f;
				memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
				if (n > 0 && rx->fds && rx->nfds < CP_RX_FDS)
					rx->fds[rx->nfds++] = (struct cp_rx_fd){ .fd = f, .at = at };
				else
					close(f);
			}
		}
		return (long)n;
	}
}

unsigned cp_rxbuf_take_fds(struct cp_rxbuf *rx, const struct cp_header *hdr, int *out, unsigned max)
{
	uint64_t from = rx->base + rx->start, end = from + CP_HEADER_SIZE + hdr->len;
	unsigned n = 0, k = 0;
	/* Those left keep their order: they were appended as they came. */
	for (unsigned i = 0; i < rx->nfds; i++) {
		if (n < max && rx->fds[i].at >= from && rx->fds[i].at < end)
			out[n++] = rx->fds[i].fd;
		else
			rx->fds[k++] = rx->fds[i];
	}
	rx->nfds = k;
	return n;
}

int cp_rxbuf_take_fd(struct cp_rxbuf *rx, const struct cp_header *hdr)
{
	int fd;
	return cp_rxbuf_take_fds(rx, hdr, &fd, 1) ? fd : -1;
}

int cp_rxbuf_peek(struct cp_rxbuf *rx, struct cp_header *hdr, const uint8_t **payload)
{
	size_t avail = rx->len - rx->start;
	if (avail < CP_HEADER_SIZE)
		return 0;
	int r = cp_header_decode(rx->buf + rx->start, avail, hdr);
	if (r < 0)
		return r;
	if (avail < CP_HEADER_SIZE + (size_t)hdr->len)
		return 0;
	*payload = rx->buf + rx->start + CP_HEADER_SIZE;
	return 1;
}

void cp_rxbuf_consume(struct cp_rxbuf *rx, const struct cp_header *hdr)
{
	size_t n = CP_HEADER_SIZE + (size_t)hdr->len;
	if (rx->nfds)
		rx_drop_fds_before(rx, rx->base + rx->start + n);
	if (n >= rx->len - rx->start) {
		rx->base += rx->len;
		rx->start = rx->len = 0;
		return;
	}
	rx->start += n;
}