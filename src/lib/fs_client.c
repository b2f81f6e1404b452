/* The filesystem API, client side: each operation is one channel to the sandbox's agent
 * (docs/protocol.md, CP_FS). Streams keep at most one flow-control window in flight, so
 * memory stays constant whatever the size of the file. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "internal.h"
#include "util.h"

#define CREDIT_BATCH (CP_INITIAL_WINDOW / 4)
#define WRITE_CHUNK (256u * 1024)
#define LIST_MAX_ENTRIES (1u << 20)
#define READ_DEFAULT_MAX (1ull << 30)
#define DIRECT_CHUNK (1u << 20) /* a direct stream's reads and writes, as a C copy's */

/* One operation's channel, on a borrowed or an own connection (see exec.c). */
struct fschan {
	struct conn own;
	struct conn *c;
	capsule_sandbox *lender;
	uint32_t chan;
	bool open;     /* the channel has not seen its final reply */
};

struct capsule_fs_stream {
	struct fschan ch;
	bool writing;
	bool eof;            /* READ: the last DATA arrived */
	bool failed;
	capsule_error fail_err;
	/* READ: the frame at the front of the connection's buffer, partly handed out. */
	bool have_frame;
	struct cp_header h;
	const uint8_t *payload;
	size_t off;
	uint32_t unacked;
	/* WRITE */
	uint64_t credit;
	/* A direct stream (docs/protocol.md): the bytes go on this socket, to or from the agent,
	 * past the shim; -1 for DATA frames. */
	int sock;
	bool direct_done; /* READ: the socket reached its end and the agent's answer is in */
};

static int check_path(const char *path, const char *what, capsule_error *err)
{
	if (!path || !path[0])
		return cap_err_plain(err, EINVAL, "%s: no path given", what);
	size_t n = strnlen(path, CAPSULE_FS_PATH_MAX + 1);
	if (n > CAPSULE_FS_PATH_MAX)
		return cap_err_plain(err, ENAMETOOLONG, "%s: path is longer than %d bytes", what, CAPSULE_FS_PATH_MAX);
	if (path[0] != '/')
		return cap_err_plain(err, EINVAL, "%s: '%s' is not an absolute path inside the sandbox", what, path);
	return 0;
}

static void chan_release(struct fschan *f)
{
	if (!f->c)
		return;
	f->c->spin = false;
	if (!f->lender) {
		conn_close(f->c); /* the shim cancels what the channel had under way */
	} else {
		if (f->open) {
			/* Still under way on a connection we keep: ask the agent to drop it. Its
			 * final reply is skipped by the connection's next user. */
			struct cp_signal m = { .signo = SIGKILL };
			if (cp_signal_encode(&f->c->w, f->chan, &m) == 0)
				conn_send(f->c, NULL);
		}
		sandbox_return_conn(f->lender);
	}
	f->c = NULL;
}

static void data_header(uint8_t hdr[CP_HEADER_SIZE], uint32_t chan, size_t n, bool eof)
{
	struct cp_header h = { .len = (uint32_t)n, .type = CP_DATA,
			       .flags = (uint16_t)(CP_STREAM_STDIN | (eof ? CP_FLAG_EOF : 0)), .chan = chan };
	cp_header_encode(hdr, &h);
}

/* Open F's channel with request M. With DATA, the whole of the file to write follows the
 * request in the same sendmsg, as one DATA frame and the EOF: a small write then costs one
 * round trip and wakes the shim once. */
static int chan_begin_data(struct fschan *f, capsule_sandbox *sb, const struct cp_fs *m, const void *data, size_t len,
			   capsule_error *err)
{
	memset(f, 0, sizeof(*f));
	f->c = sandbox_borrow_conn(sb, &f->chan);
	int r;
	if (f->c) {
		f->lender = sb;
	} else {
		f->c = &f->own;
		f->chan = 1;
		if ((r = conn_open(f->c, capsule_sandbox_name(sb), err)) < 0) {
			f->c = NULL;
			return r;
		}
	}
	if ((r = cp_fs_encode(&f->c->w, f->chan, m)) < 0) {
		chan_release(f);
		return cap_err(err, -r, "encoding a filesystem request");
	}
	uint8_t dhdr[CP_HEADER_SIZE], ehdr[CP_HEADER_SIZE];
	data_header(dhdr, f->chan, len, false);
	data_header(ehdr, f->chan, 0, true);
	struct iovec iov[4] = { { f->c->w.buf, f->c->w.len } };
	int n = 1;
	if (data && len) {
		iov[n++] = (struct iovec){ dhdr, sizeof(dhdr) };
		iov[n++] = (struct iovec){ (void *)data, len };
	}
	if (data)
		iov[n++] = (struct iovec){ ehdr, sizeof(ehdr) };
	if ((r = conn_sendv(f->c, iov, n, err)) < 0) {
		chan_release(f);
		return r;
	}
	f->open = true;
	f->c->spin = true;
	return 0;
}

static int chan_begin(struct fschan *f, capsule_sandbox *sb, const struct cp_fs *m, capsule_error *err)
{
	return chan_begin_data(f, sb, m, NULL, 0, err);
}

/* The next frame on our channel (others, late frames of earlier users, are skipped). An
 * ERROR ends the channel and becomes the return value. The caller consumes the frame. */
static int chan_next(struct fschan *f, struct cp_header *h, const uint8_t **payload, capsule_error *err)
{
	for (;;) {
		int r = conn_recv(f->c, h, payload, -1, err);
		if (r < 0) {
			f->open = false;
			return r;
		}
		if (h->chan != f->chan) {
			conn_consume(f->c, h);
			continue;
		}
		if (h->type == CP_ERROR) {
			f->open = false;
			r = conn_error_from_frame(*payload, h->len, err);
			conn_consume(f->c, h);
			return r;
		}
		if (h->type == CP_OK)
			f->open = false;
		return 0;
	}
}

static void entry_to_public(capsule_fs_entry *out, struct cp_fs_entry *e)
{
	out->name = e->name;
	out->kind = (capsule_fs_kind)e->kind;
	out->size = e->size;
	out->mode = e->mode;
	out->mtime_ns = e->mtime_ns;
	out->uid = e->uid;
	out->gid = e->gid;
	out->link_target = e->link;
	e->name = e->link = NULL;
}

/* Wait for the final OK; with ENTRY, decode the entry it carries. */
static int chan_finish(struct fschan *f, capsule_fs_entry *entry, capsule_error *err)
{
	for (;;) {
		struct cp_header h;
		const uint8_t *payload;
		int r = chan_next(f, &h, &payload, err);
		if (r < 0)
			return r;
		if (h.type != CP_OK) {
			conn_consume(f->c, &h);
			continue;
		}
		if (entry) {
			struct cp_fs_entry e;
			r = cp_fs_entry_decode(payload, h.len, &e);
			conn_consume(f->c, &h);
			if (r < 0)
				return cap_err_plain(err, EPROTO, "malformed file entry from the sandbox");
			entry_to_public(entry, &e);
			return 0;
		}
		conn_consume(f->c, &h);
		return 0;
	}
}

static int simple_op(capsule_sandbox *sb, struct cp_fs *m, capsule_fs_entry *entry, capsule_error *err)
{
	struct fschan f;
	int r = chan_begin(&f, sb, m, err);
	if (r < 0)
		return r;
	r = chan_finish(&f, entry, err);
	chan_release(&f);
	return r;
}

void capsule_fs_entry_clear(capsule_fs_entry *e)
{
	if (!e)
		return;
	free(e->name);
	free(e->link_target);
	memset(e, 0, sizeof(*e));
}

void capsule_fs_entries_free(capsule_fs_entry *entries, size_t count)
{
	if (!entries)
		return;
	for (size_t i = 0; i < count; i++)
		capsule_fs_entry_clear(&entries[i]);
	free(entries);
}

int capsule_fs_stat(capsule_sandbox *sb, const char *path, capsule_fs_entry *out, capsule_error *err)
{
	int r = check_path(path, "stat", err);
	if (r < 0)
		return r;
	memset(out, 0, sizeof(*out));
	struct cp_fs m = { .op = CP_FS_STAT, .path = (char *)path };
	return simple_op(sb, &m, out, err);
}

int capsule_fs_mkdir(capsule_sandbox *sb, const char *path, uint32_t mode, unsigned flags, capsule_error *err)
{
	int r = check_path(path, "mkdir", err);
	if (r < 0)
		return r;
	if (mode > 07777)
		return cap_err_plain(err, EINVAL, "mkdir: mode %o is not a permission mode", mode);
	struct cp_fs m = { .op = CP_FS_MKDIR, .path = (char *)path, .mode = mode, .flags = flags & CAPSULE_FS_PARENTS };
	return simple_op(sb, &m, NULL, err);
}

int capsule_fs_remove(capsule_sandbox *sb, const char *path, unsigned flags, capsule_error *err)
{
	int r = check_path(path, "remove", err);
	if (r < 0)
		return r;
	struct cp_fs m = { .op = CP_FS_REMOVE, .path = (char *)path,
			   .flags = flags & (CAPSULE_FS_RECURSIVE | CAPSULE_FS_FORCE) };
	return simple_op(sb, &m, NULL, err);
}

int capsule_fs_rename(capsule_sandbox *sb, const char *from, const char *to, unsigned flags, capsule_error *err)
{
	int r;
	if ((r = check_path(from, "rename", err)) < 0 || (r = check_path(to, "rename", err)) < 0)
		return r;
	struct cp_fs m = { .op = CP_FS_RENAME, .path = (char *)from, .path2 = (char *)to,
			   .flags = flags & (CAPSULE_FS_NOREPLACE | CAPSULE_FS_PARENTS) };
	return simple_op(sb, &m, NULL, err);
}

int capsule_fs_symlink(capsule_sandbox *sb, const char *target, const char *path, capsule_error *err)
{
	int r = check_path(path, "symlink", err);
	if (r < 0)
		return r;
	if (!target || !target[0] || strlen(target) > CAPSULE_FS_PATH_MAX)
		return cap_err_plain(err, EINVAL, "symlink: the target must be 1 to %d bytes", CAPSULE_FS_PATH_MAX);
	struct cp_fs m = { .op = CP_FS_SYMLINK, .path = (char *)path, .path2 = (char *)target };
	return simple_op(sb, &m, NULL, err);
}

static int send_credit(struct fschan *f, uint32_t bytes, capsule_error *err)
{
	struct cp_credit m = { .stream = CP_STREAM_STDOUT, .bytes = bytes };
	int r = cp_credit_encode(&f->c->w, f->chan, &m);
	if (r < 0)
		return cap_err(err, -r, "encoding CREDIT");
	return conn_send(f->c, err);
}

static int cmp_entry(const void *a, const void *b)
{
	return strcmp(((const capsule_fs_entry *)a)->name, ((const capsule_fs_entry *)b)->name);
}

int capsule_fs_list(capsule_sandbox *sb, const char *path, capsule_fs_entry **out, size_t *count, capsule_error *err)
{
	*out = NULL;
	*count = 0;
	int r = check_path(path, "list", err);
	if (r < 0)
		return r;
	struct cp_fs m = { .op = CP_FS_LIST, .path = (char *)path };
	struct fschan f;
	if ((r = chan_begin(&f, sb, &m, err)) < 0)
		return r;
	capsule_fs_entry *v = NULL;
	size_t n = 0, cap = 0;
	uint32_t unacked = 0;
	for (;;) {
		struct cp_header h;
		const uint8_t *payload;
		if ((r = chan_next(&f, &h, &payload, err)) < 0)
			break;
		if (h.type == CP_OK) {
			conn_consume(f.c, &h);
			break;
		}
		if (h.type != CP_DATA || (h.flags & CP_FLAG_STREAM_MASK) != CP_STREAM_STDOUT) {
			conn_consume(f.c, &h);
			continue;
		}
		struct cp_reader rd = { .p = payload, .rem = h.len };
		struct cp_fs_entry e;
		int k;
		while ((k = cp_fs_record_next(&rd, &e)) > 0) {
			if (n == LIST_MAX_ENTRIES) {
				cp_fs_entry_free(&e);
				k = -EFBIG;
				break;
			}
			if (n == cap) {
				size_t nc = cap ? cap * 2 : 64;
				capsule_fs_entry *nv = realloc(v, nc * sizeof(*v));
				if (!nv) {
					cp_fs_entry_free(&e);
					k = -ENOMEM;
					break;
				}
				v = nv;
				cap = nc;
			}
			entry_to_public(&v[n++], &e);
		}
		unacked += h.len;
		conn_consume(f.c, &h);
		if (k < 0) {
			r = k == -EFBIG ? cap_err_plain(err, EFBIG, "list '%s': more than %u entries", path, LIST_MAX_ENTRIES)
			    : k == -ENOMEM ? cap_err(err, ENOMEM, "list '%s'", path)
					   : cap_err_plain(err, EPROTO, "list '%s': malformed entry from the sandbox", path);
			break;
		}
		if (unacked >= CREDIT_BATCH) {
			if ((r = send_credit(&f, unacked, err)) < 0)
				break;
			unacked = 0;
		}
	}
	chan_release(&f);
	if (r < 0) {
		capsule_fs_entries_free(v, n);
		return r;
	}
	if (n)
		qsort(v, n, sizeof(*v), cmp_entry);
	*out = v;
	*count = n;
	return 0;
}

/* ---- read streams ------------------------------------------------------------------- */

int capsule_fs_open_read(capsule_fs_stream **out, capsule_sandbox *sb, const char *path, capsule_error *err)
{
	*out = NULL;
	int r = check_path(path, "read", err);
	if (r < 0)
		return r;
	capsule_fs_stream *s = calloc(1, sizeof(*s));
	if (!s)
		return cap_err(err, ENOMEM, "allocating a stream");
	s->sock = -1;
	struct cp_fs m = { .op = CP_FS_READ, .path = (char *)path, .flags = CP_FS_DIRECT };
	if ((r = chan_begin(&s->ch, sb, &m, err)) < 0) {
		free(s);
		return r;
	}
	*out = s;
	return 0;
}

static int stream_fail(capsule_fs_stream *s, int r, capsule_error *err)
{
	s->failed = true;
	if (err)
		s->fail_err = *err;
	else
		cap_err_plain(&s->fail_err, -r, "%s", strerror(-r));
	return r;
}

/* Make the next chunk of a read stream available in s->payload + s->off. Returns 1 with
 * bytes there, 2 when the stream is direct (read it with direct_recv), 0 at the end, or an
 * error. */
static int read_next(capsule_fs_stream *s, capsule_error *err)
{
	if (s->failed) {
		if (err)
			*err = s->fail_err;
		return -s->fail_err.code;
	}
	if (s->sock >= 0)
		return 2;
	if (s->direct_done)
		return 0;
	for (;;) {
		if (s->have_frame && s->off < s->h.len)
			return 1;
		if (s->have_frame) {
			s->unacked += s->h.len;
			conn_consume(s->ch.c, &s->h);
			s->have_frame = false;
			if (s->unacked >= CREDIT_BATCH) {
				int r = send_credit(&s->ch, s->unacked, err);
				if (r < 0)
					return stream_fail(s, r, err);
				s->unacked = 0;
			}
		}
		if (!s->ch.open)
			return 0;
		int r = chan_next(&s->ch, &s->h, &s->payload, err);
		if (r < 0)
			return stream_fail(s, r, err);
		if (s->h.type == CP_OK) {
			conn_consume(s->ch.c, &s->h);
			if (!s->eof)
				return stream_fail(s, cap_err_plain(err, EPROTO, "the sandbox ended a read early"), err);
			return 0;
		}
		if (s->h.type == CP_STARTED) {
			/* A large file comes on a socket of its own (a small one as DATA frames). */
			s->sock = cp_rxbuf_take_fd(&s->ch.c->rx, &s->h);
			conn_consume(s->ch.c, &s->h);
			if (s->sock >= 0)
				return 2;
			continue;
		}
		if (s->h.type != CP_DATA || (s->h.flags & CP_FLAG_STREAM_MASK) != CP_STREAM_STDOUT) {
			conn_consume(s->ch.c, &s->h);
			continue;
		}
		if (s->h.flags & CP_FLAG_EOF)
			s->eof = true;
		s->have_frame = true;
		s->off = 0;
	}
}

/* A direct read's next bytes into BUF: > 0, or 0 once the socket has ended and the agent
 * said OK (its ERROR, or a socket that broke, is the error). */
static ssize_t direct_recv(capsule_fs_stream *s, void *buf, size_t cap, capsule_error *err)
{
	for (;;) {
		ssize_t n = recv(s->sock, buf, cap, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n > 0)
			return n;
		int e = n < 0 ? errno : 0;
		close(s->sock);
		s->sock = -1;
		s->direct_done = true;
		/* The socket's end is the file's only if the agent says OK after it. */
		int r = chan_finish(&s->ch, NULL, err);
		if (r == 0 && e)
			r = cap_err(err, e, "reading from the sandbox");
		return r < 0 ? stream_fail(s, r, err) : 0;
	}
}

ssize_t capsule_fs_stream_read(capsule_fs_stream *s, void *buf, size_t cap, capsule_error *err)
{
	if (s->writing)
		return cap_err_plain(err, EBADF, "this stream was opened for writing");
	int r = read_next(s, err);
	if (r == 2)
		return direct_recv(s, buf, cap, err);
	if (r <= 0)
		return r;
	size_t n = s->h.len - s->off;
	if (n > cap)
		n = cap;
	memcpy(buf, s->payload + s->off, n);
	s->off += n;
	return (ssize_t)n;
}

int capsule_fs_read_to_fd(capsule_sandbox *sb, const char *path, int fd, capsule_error *err)
{
	capsule_fs_stream *s;
	int r = capsule_fs_open_read(&s, sb, path, err);
	if (r < 0)
		return r;
	/* Straight from the connection's buffer to FD: no copy in between. */
	uint8_t *buf = NULL;
	while ((r = read_next(s, err)) > 0) {
		if (r == 2) {
			if (!buf && !(buf = malloc(DIRECT_CHUNK))) {
				r = cap_err(err, ENOMEM, "read '%s'", path);
				break;
			}
			ssize_t n = direct_recv(s, buf, DIRECT_CHUNK, err);
			if (n <= 0) {
				r = (int)n;
				break;
			}
			int w = write_all(fd, buf, (size_t)n);
			if (w < 0) {
				r = cap_err(err, -w, "writing what was read from '%s'", path);
				break;
			}
			continue;
		}
		int w = write_all(fd, s->payload + s->off, s->h.len - s->off);
		if (w < 0) {
			r = cap_err(err, -w, "writing what was read from '%s'", path);
			break;
		}
		s->off = s->h.len;
	}
	free(buf);
	capsule_fs_stream_free(s);
	return r;
}

int capsule_fs_read(capsule_sandbox *sb, const char *path, void **data, size_t *len, size_t max_bytes, capsule_error *err)
{
	*data = NULL;
	*len = 0;
	if (!max_bytes)
		max_bytes = READ_DEFAULT_MAX;
	capsule_fs_stream *s;
	int r = capsule_fs_open_read(&s, sb, path, err);
	if (r < 0)
		return r;
	uint8_t *buf = NULL;
	size_t n = 0, cap = 0;
	while ((r = read_next(s, err)) > 0) {
		/* Direct: up to a chunk straight into the buffer, and at most one byte past the
		 * limit, which tells a file that is too large. */
		size_t k = r == 2 ? (max_bytes - n < DIRECT_CHUNK ? max_bytes - n + 1 : DIRECT_CHUNK) : s->h.len - s->off;
		if (r != 2 && n + k > max_bytes) {
			r = cap_err_plain(err, EFBIG, "read '%s': the file is larger than %zu bytes", path, max_bytes);
			break;
		}
		if (n + k + 1 > cap) {
			size_t nc = cap ? cap : 64 * 1024;
			while (nc < n + k + 1)
				nc *= 2;
			uint8_t *nb = realloc(buf, nc);
			if (!nb) {
				r = cap_err(err, ENOMEM, "read '%s'", path);
				break;
			}
			buf = nb;
			cap = nc;
		}
		if (r == 2) {
			ssize_t got = direct_recv(s, buf + n, k, err);
			if (got < 0) {
				r = (int)got;
				break;
			}
			if (n + (size_t)got > max_bytes) {
				r = cap_err_plain(err, EFBIG, "read '%s': the file is larger than %zu bytes", path, max_bytes);
				break;
			}
			n += (size_t)got;
			continue;
		}
		memcpy(buf + n, s->payload + s->off, k);
		n += k;
		s->off = s->h.len;
	}
	capsule_fs_stream_free(s);
	if (r < 0) {
		free(buf);
		return r;
	}
	if (!buf && !(buf = malloc(1)))
		return cap_err(err, ENOMEM, "read '%s'", path);
	buf[n] = 0;
	*data = buf;
	*len = n;
	return 0;
}

/* ---- write streams ------------------------------------------------------------------ */

/* With WAIT_STARTED false the data may follow the request at once, within the first
 * window, as a command's stdin does: a small write costs one round trip instead of two. If
 * the agent refuses the request, its ERROR arrives instead of the OK and the shim drops the
 * data sent meanwhile. */
static int write_request(struct cp_fs *m, const char *path, uint32_t mode, unsigned flags, capsule_error *err)
{
	int r = check_path(path, "write", err);
	if (r < 0)
		return r;
	if (mode > 07777)
		return cap_err_plain(err, EINVAL, "write: mode %o is not a permission mode", mode);
	*m = (struct cp_fs){ .op = CP_FS_WRITE, .path = (char *)path, .mode = mode,
			     .flags = flags & (CAPSULE_FS_PARENTS | CAPSULE_FS_NOREPLACE) };
	return 0;
}

static int open_write(capsule_fs_stream **out, capsule_sandbox *sb, const char *path, uint32_t mode, unsigned flags,
		      bool wait_started, capsule_error *err)
{
	*out = NULL;
	struct cp_fs m;
	int r = write_request(&m, path, mode, flags, err);
	if (r < 0)
		return r;
	capsule_fs_stream *s = calloc(1, sizeof(*s));
	if (!s)
		return cap_err(err, ENOMEM, "allocating a stream");
	s->writing = true;
	s->sock = -1;
	/* Only a write that waits for STARTED can take a socket: the bytes wait for it. */
	if (wait_started)
		m.flags |= CP_FS_DIRECT;
	if ((r = chan_begin(&s->ch, sb, &m, err)) < 0) {
		free(s);
		return r;
	}
	/* Wait until the temporary file is open: a bad path fails here, before any data. */
	while (wait_started) {
		struct cp_header h;
		const uint8_t *payload;
		if ((r = chan_next(&s->ch, &h, &payload, err)) < 0) {
			capsule_fs_stream_free(s);
			return r;
		}
		uint16_t type = h.type;
		if (type == CP_STARTED)
			s->sock = cp_rxbuf_take_fd(&s->ch.c->rx, &h);
		conn_consume(s->ch.c, &h);
		if (type == CP_STARTED)
			break;
		if (type == CP_OK) {
			capsule_fs_stream_free(s);
			return cap_err_plain(err, EPROTO, "the sandbox ended a write before it began");
		}
	}
	s->credit = CP_INITIAL_WINDOW;
	*out = s;
	return 0;
}

/* Take the frames the agent sent meanwhile: credit, or an error that ends the write. With
 * WAIT, block until there is some credit. */
static int write_pump(capsule_fs_stream *s, bool wait, capsule_error *err)
{
	while (s->ch.open) {
		struct cp_header h;
		const uint8_t *payload;
		int r = conn_recv(s->ch.c, &h, &payload, wait && s->credit == 0 ? -1 : 0, err);
		if (r == -EAGAIN)
			return 0;
		if (r < 0)
			return stream_fail(s, r, err);
		if (h.chan != s->ch.chan) {
			conn_consume(s->ch.c, &h);
			continue;
		}
		if (h.type == CP_ERROR) {
			s->ch.open = false;
			r = conn_error_from_frame(payload, h.len, err);
			conn_consume(s->ch.c, &h);
			return stream_fail(s, r, err);
		}
		if (h.type == CP_CREDIT) {
			struct cp_credit m;
			if (cp_credit_decode(payload, h.len, &m) == 0 && m.stream == CP_STREAM_STDIN)
				s->credit += m.bytes;
		} else if (h.type == CP_OK) {
			s->ch.open = false;
			conn_consume(s->ch.c, &h);
			return stream_fail(s, cap_err_plain(err, EPROTO, "the sandbox ended a write early"), err);
		}
		conn_consume(s->ch.c, &h);
		if (s->credit > 0 && !wait)
			continue;
		if (s->credit > 0)
			return 0;
	}
	return s->failed ? -s->fail_err.code : 0;
}

/* One DATA frame, header and payload in one sendmsg, without copying the payload. */
static int send_data(capsule_fs_stream *s, const void *p, size_t n, bool eof, capsule_error *err)
{
	uint8_t hdr[CP_HEADER_SIZE];
	data_header(hdr, s->ch.chan, n, eof);
	struct iovec iov[2] = { { hdr, sizeof(hdr) }, { (void *)p, n } };
	int r = conn_sendv(s->ch.c, iov, 2, err);
	return r < 0 ? stream_fail(s, r, err) : 0;
}

/* A direct write's socket broke (errno E): the agent ended the stream, and its answer on the
 * channel says why. */
static int direct_broke(capsule_fs_stream *s, int e, capsule_error *err)
{
	close(s->sock);
	s->sock = -1;
	int r = e == EPIPE || e == ECONNRESET ? chan_finish(&s->ch, NULL, err) : cap_err(err, e, "sending to the sandbox");
	if (r == 0)
		r = cap_err_plain(err, EPROTO, "the sandbox ended a write early");
	return stream_fail(s, r, err);
}

int capsule_fs_stream_write(capsule_fs_stream *s, const void *buf, size_t len, capsule_error *err)
{
	if (!s->writing)
		return cap_err_plain(err, EBADF, "this stream was opened for reading");
	if (s->failed) {
		if (err)
			*err = s->fail_err;
		return -s->fail_err.code;
	}
	const uint8_t *p = buf;
	while (s->sock >= 0 && len) {
		ssize_t n = send(s->sock, p, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return direct_broke(s, errno, err);
		p += n;
		len -= (size_t)n;
	}
	while (len) {
		int r = write_pump(s, s->credit == 0, err);
		if (r < 0)
			return r;
		size_t n = len < WRITE_CHUNK ? len : WRITE_CHUNK;
		if (n > s->credit)
			n = (size_t)s->credit;
		if ((r = send_data(s, p, n, false, err)) < 0)
			return r;
		s->credit -= n;
		p += n;
		len -= n;
	}
	return 0;
}

int capsule_fs_stream_close(capsule_fs_stream *s, capsule_error *err)
{
	int r = 0;
	if (s->writing && !s->failed) {
		/* Direct: the socket's end says all the bytes are sent, the EOF on the channel
		 * that they are all there is: the agent commits on both. */
		if (s->sock >= 0) {
			close(s->sock);
			s->sock = -1;
		}
		if ((r = write_pump(s, false, err)) == 0 && (r = send_data(s, NULL, 0, true, err)) == 0)
			r = chan_finish(&s->ch, NULL, err);
		if (r < 0 && !s->failed)
			stream_fail(s, r, err);
	} else if (s->failed) {
		if (err)
			*err = s->fail_err;
		r = -s->fail_err.code;
	}
	chan_release(&s->ch);
	return r;
}

void capsule_fs_stream_free(capsule_fs_stream *s)
{
	if (!s)
		return;
	if (s->have_frame && s->ch.c)
		conn_consume(s->ch.c, &s->h);
	if (s->sock >= 0)
		close(s->sock);
	chan_release(&s->ch);
	free(s);
}

int capsule_fs_open_write(capsule_fs_stream **out, capsule_sandbox *sb, const char *path, uint32_t mode, unsigned flags,
			  capsule_error *err)
{
	return open_write(out, sb, path, mode, flags, true, err);
}

int capsule_fs_write(capsule_sandbox *sb, const char *path, const void *data, size_t len, uint32_t mode, unsigned flags,
		     capsule_error *err)
{
	if (len <= WRITE_CHUNK) {
		struct cp_fs m;
		int r = write_request(&m, path, mode, flags, err);
		if (r < 0)
			return r;
		struct fschan f;
		if ((r = chan_begin_data(&f, sb, &m, data ? data : "", len, err)) < 0)
			return r;
		r = chan_finish(&f, NULL, err);
		chan_release(&f);
		return r;
	}
	/* More than a window: wait until the agent has the file open, so that a bad path fails
	 * before any data is sent. Up to a window, the data follows the request at once. */
	capsule_fs_stream *s;
	int r = open_write(&s, sb, path, mode, flags, len > CP_INITIAL_WINDOW, err);
	if (r < 0)
		return r;
	if ((r = capsule_fs_stream_write(s, data, len, err)) == 0)
		r = capsule_fs_stream_close(s, err);
	capsule_fs_stream_free(s);
	return r;
}

int capsule_fs_write_from_fd(capsule_sandbox *sb, const char *path, int fd, uint32_t mode, unsigned flags,
			     capsule_error *err)
{
	uint8_t *buf = malloc(DIRECT_CHUNK);
	if (!buf)
		return cap_err(err, ENOMEM, "write '%s'", path);
	capsule_fs_stream *s;
	int r = capsule_fs_open_write(&s, sb, path, mode, flags, err);
	struct stat st;
	if (r == 0 && s->sock >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
		/* A file into a direct stream: sendfile hands the socket the file's pages, with no
		 * copy through our buffer (from where the file's offset is, as read would). */
		for (;;) {
			ssize_t n = sendfile(s->sock, fd, NULL, DIRECT_CHUNK);
			if (n > 0)
				continue;
			if (n < 0 && errno == EINTR)
				continue;
			if (n == 0) {
				r = capsule_fs_stream_close(s, err);
				capsule_fs_stream_free(s);
				free(buf);
				return r;
			}
			if (errno == EPIPE || errno == ECONNRESET) {
				r = direct_broke(s, errno, err);
				break;
			}
			if (errno != EINVAL && errno != ENOSYS) {
				r = cap_err(err, errno, "sending the data for '%s'", path);
				break;
			}
			break; /* a file sendfile cannot read: through the buffer below */
		}
	}
	while (r == 0) {
		ssize_t n = read(fd, buf, DIRECT_CHUNK);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = cap_err(err, errno, "reading the data for '%s'", path);
			break;
		}
		if (n == 0) {
			r = capsule_fs_stream_close(s, err);
			break;
		}
		r = capsule_fs_stream_write(s, buf, (size_t)n, err);
	}
	capsule_fs_stream_free(s);
	free(buf);
	return r;
}
