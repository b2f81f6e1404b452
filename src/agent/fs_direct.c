/* Direct streams of the filesystem API: a large READ or WRITE whose bytes travel on a
 * socketpair end that the shim passed in (CP_DIRECT) instead of DATA frames, moved with
 * splice and sendfile. The request, STARTED, a write's EOF and the final answer stay on the
 * agent channel (fs.c); this file moves the bytes and ends the stream. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fs_internal.h"
#include "util.h"

/* Take SOCK, from the shim's DIRECT, as O's direct stream, watched for EVENTS. */
static bool direct_begin(struct fsop *o, int sock, uint32_t events)
{
	if (!fs_state.dbuf && !(fs_state.dbuf = malloc(DIRECT_CHUNK)))
		return false;
	if (fcntl(sock, F_SETFL, O_NONBLOCK) < 0)
		return false;
	struct epoll_event ev = { .events = events, .data.u64 = ((uint64_t)(o - fs_state.ops) << 8) | AGENT_ROLE_FS };
	if (epoll_ctl(fs_state.epfd, EPOLL_CTL_ADD, sock, &ev) < 0)
		return false;
	o->sock = sock;
	return true;
}

/* Ask for a direct stream: STARTED, and the shim answers with DIRECT (fs_direct). */
void fs_direct_ask(struct fsop *o)
{
	o->awaiting = true;
	struct cp_started st = { .pid = 0 };
	if (cp_started_encode(agent_writer(), o->chan, &st) == 0)
		agent_send_frame();
}


/* ---- direct streams ----------------------------------------------------------------- */

/* The pipe a direct write's bytes pass through on their way from the socket to the file:
 * splice moves the socket's pages into it without a copy, and the file takes them with one
 * (read and write would copy twice). Shared by all writes (one turn of the loop empties it);
 * made again after a failure that may have left bytes in it. */
static int pipe_fds[2] = { -1, -1 };

static bool pipe_ready(void)
{
	if (pipe_fds[0] >= 0)
		return true;
	if (pipe2(pipe_fds, O_CLOEXEC | O_NONBLOCK) < 0)
		return false;
	fcntl(pipe_fds[0], F_SETPIPE_SZ, DIRECT_CHUNK); /* else the default 64 KiB */
	return true;
}

static void pipe_drop(void)
{
	if (pipe_fds[0] >= 0) {
		close(pipe_fds[0]);
		close(pipe_fds[1]);
	}
	pipe_fds[0] = pipe_fds[1] = -1;
}

/* Up to a chunk from O's socket: into the pipe and on into the file, or through our buffer
 * where splice does not go. Bytes moved, 0 at the socket's end, or -errno (*FILE_ERR: the
 * file's, else the socket's). */
static ssize_t direct_move(struct fsop *o, bool *file_err)
{
	*file_err = false;
	if (pipe_ready()) {
		ssize_t n;
		do
			n = splice(o->sock, NULL, pipe_fds[1], NULL, DIRECT_CHUNK, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
		while (n < 0 && errno == EINTR);
		if (n > 0) {
			for (ssize_t left = n; left > 0;) {
				ssize_t k = splice(pipe_fds[0], NULL, o->fd, NULL, (size_t)left, SPLICE_F_MOVE);
				if (k < 0 && errno == EINTR)
					continue;
				if (k <= 0) {
					int e = k < 0 ? errno : EIO;
					pipe_drop();
					*file_err = true;
					return -e;
				}
				left -= k;
			}
			return n;
		}
		if (n == 0 || errno == EAGAIN)
			return n == 0 ? 0 : -EAGAIN;
		if (errno != EINVAL)
			return -errno;
		/* A file system that takes no splice: the buffer from now on. */
	}
	ssize_t n;
	do
		n = read(o->sock, fs_state.dbuf, DIRECT_CHUNK);
	while (n < 0 && errno == EINTR);
	if (n <= 0)
		return n < 0 ? -errno : 0;
	int w = write_all(o->fd, fs_state.dbuf, (size_t)n);
	if (w < 0) {
		*file_err = true;
		return w;
	}
	return n;
}

static void direct_write(struct fsop *o)
{
	bool file_err;
	ssize_t n = direct_move(o, &file_err);
	if (n == -EAGAIN)
		return;
	if (n < 0) {
		/* ENOSPC, EDQUOT, EFBIG: the old file stays; the client's next send fails and it
		 * reads this ERROR. */
		fs_reply_errno(o->chan, (int)-n, file_err ? "write" : "write (the stream broke)", o->path);
		fs_op_end(o);
		return;
	}
	if (n == 0) {
		/* The client shut its end: all the bytes are here. Its EOF on the channel commits. */
		close(o->sock);
		o->sock = -1;
		o->sock_eof = true;
		if (o->eof_frame)
			fs_write_commit(o);
		return;
	}
	o->written += (uint64_t)n;
}

static void direct_read(struct fsop *o)
{
	ssize_t n;
	do
		n = sendfile(o->sock, o->fd, &o->off, DIRECT_CHUNK);
	while (n < 0 && errno == EINTR);
	if (n < 0 && (errno == EINVAL || errno == ENOSYS)) {
		/* A file system without splice: through our buffer, resumed at the next byte
		 * the socket did not take. */
		ssize_t k = pread(o->fd, fs_state.dbuf, DIRECT_CHUNK, o->off);
		n = k <= 0 ? k : send(o->sock, fs_state.dbuf, (size_t)k, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n > 0)
			o->off += n;
	}
	if (n < 0 && errno == EAGAIN)
		return;
	if (n < 0) {
		agent_send_error(o->chan, errno, errno == EPIPE || errno == ECONNRESET ? "read: the reader went away"
										 : "read: the file could not be read to the end");
		fs_op_end(o);
		return;
	}
	if (n == 0) {
		close(o->sock); /* the client's end reads its end, then the OK below */
		o->sock = -1;
		fs_reply_ok(o->chan);
		fs_op_end(o);
	}
}

void fs_direct(uint32_t chan, int sock)
{
	struct fsop *o = fs_op_by_chan(chan);
	if (!o || !o->awaiting) {
		if (sock >= 0)
			close(sock); /* the operation ended meanwhile (cancelled) */
		return;
	}
	o->awaiting = false;
	if (sock < 0) {
		/* The shim had no socket for it: DATA frames, as without the flag. A read starts
		 * now; a write's data follows. */
		if (o->kind == XFER_READ)
			fs_read_pump(o);
		return;
	}
	if (!direct_begin(o, sock, o->kind == XFER_WRITE ? EPOLLIN : EPOLLOUT)) {
		close(sock);
		agent_send_error(o->chan, ENOMEM, "the direct stream could not be set up");
		fs_op_end(o);
	}
}

void fs_event(size_t index, uint32_t events)
{
	(void)events; /* errors and hang-ups show in the read or send */
	if (index >= MAX_FS_OPS)
		return;
	struct fsop *o = &fs_state.ops[index];
	if (!o->used || o->sock < 0)
		return;
	if (o->kind == XFER_WRITE)
		direct_write(o);
	else if (o->kind == XFER_READ)
		direct_read(o);
}
