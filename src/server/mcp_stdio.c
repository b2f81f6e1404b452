/* `capsule mcp`: the MCP server over stdio, for an agent that starts it as a subprocess. One
 * JSON-RPC message a line each way (newline-delimited, no embedded newlines: the compact
 * writer escapes them), requests answered in order. Its sandboxes are the stdio client's alone
 * (one owner, no tokens) under the same table, limits and lifetimes as capsule serve's, and
 * they go when it ends: at the end of stdin, at SIGTERM, SIGINT or SIGHUP, and, since they are
 * ephemeral (they die with the process that made them), even when it is killed. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mcp.h"
#include "serve.h"
#include "util.h"

static pthread_mutex_t stop_lock = PTHREAD_MUTEX_INITIALIZER;
static bool stopped;

/* Once, from whichever comes first: the end of stdin or a signal. */
static void stop_sandboxes(void)
{
	pthread_mutex_lock(&stop_lock);
	if (!stopped) {
		serve_api_shutdown();
		stopped = true;
	}
	pthread_mutex_unlock(&stop_lock);
}

static void *signal_main(void *arg)
{
	const sigset_t *set = arg;
	int sig = 0;
	sigwait(set, &sig);
	/* The main thread may be in an exec: removing its sandbox ends it, and nothing of this
	 * process is needed afterwards. */
	stop_sandboxes();
	_exit(0);
}

static int out_fd = -1;

/* TEXT and a newline, whole: a reader takes a message per line. */
static int send_line(char *text)
{
	size_t len = strlen(text);
	char *line = realloc(text, len + 2);
	if (!line) {
		free(text);
		return -ENOMEM;
	}
	line[len++] = '\n';
	int r = 0;
	for (size_t off = 0; off < len;) {
		ssize_t n = write(out_fd, line + off, len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			r = -EPIPE;
			break;
		}
		off += (size_t)n;
	}
	free(line);
	return r;
}

static int handle_line(struct mcp_session *s, char *line, size_t len)
{
	while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == ' ' || line[len - 1] == '\t'))
		len--;
	size_t start = 0;
	while (start < len && (line[start] == ' ' || line[start] == '\t'))
		start++;
	if (start == len)
		return 0; /* a blank line between messages */
	struct mcp_message m;
	int rpc_code;
	capsule_error err = { 0 };
	char *reply;
	if (mcp_decode_message(line + start, len - start, &m, &rpc_code, &err) < 0) {
		reply = mcp_error_reply(&m, rpc_code, err.message);
	} else {
		reply = mcp_answer(s, &m);
		if (!reply && m.kind == MCP_REQUEST)
			reply = mcp_error_reply(&m, JSONRPC_INTERNAL_ERROR, "out of memory");
	}
	mcp_message_free(&m);
	return reply ? send_line(reply) : 0;
}

/* Messages until the end of stdin. A line longer than MCP_MESSAGE_MAX is answered with an
 * error as soon as it is that long and the rest of it is read and dropped: memory stays
 * bounded whatever a client sends. */
static int serve_lines(int in_fd, struct mcp_session *s)
{
	char *line = malloc(MCP_MESSAGE_MAX + 1);
	char *buf = malloc(64 * 1024);
	if (!line || !buf) {
		free(line);
		free(buf);
		return -ENOMEM;
	}
	size_t n = 0;
	bool skipping = false;
	int r = 0;
	for (;;) {
		ssize_t got = read(in_fd, buf, 64 * 1024);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			break;
		for (char *p = buf, *end = buf + got; p < end && r == 0;) {
			char *nl = memchr(p, '\n', (size_t)(end - p));
			size_t seg = (size_t)((nl ? nl : end) - p);
			if (!skipping && n + seg > MCP_MESSAGE_MAX) {
				skipping = true;
				n = 0;
				r = send_line(mcp_error_reply(NULL, JSONRPC_INVALID_REQUEST,
							      "a message is at most 1048576 bytes (1 MiB); this one was dropped"));
			}
			if (!skipping) {
				memcpy(line + n, p, seg);
				n += seg;
			}
			p += seg;
			if (nl) {
				p++;
				if (!skipping)
					r = handle_line(s, line, n);
				skipping = false;
				n = 0;
			}
		}
		if (r < 0)
			break; /* the client has gone: nothing can be answered any more */
	}
	/* A last message without its newline. */
	if (r == 0 && n > 0 && !skipping)
		r = handle_line(s, line, n);
	free(line);
	free(buf);
	return r;
}

int mcp_stdio_serve(const struct serve_options *o)
{
	/* Only messages may reach stdout, and nothing but this server may read stdin: the
	 * streams are moved to private descriptors, and a child that inherited 0 or 1 (a shim,
	 * an image helper) would find /dev/null and stderr there. */
	int in_fd = fcntl(0, F_DUPFD_CLOEXEC, 3);
	out_fd = fcntl(1, F_DUPFD_CLOEXEC, 3);
	int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (in_fd < 0 || out_fd < 0 || null_fd < 0 || dup2(null_fd, 0) < 0 || dup2(2, 1) < 0) {
		fprintf(stderr, "capsule mcp: setting up stdin and stdout: %s\n", strerror(errno));
		return 125;
	}
	close(null_fd);

	static sigset_t stop; /* the signal thread's */
	sigemptyset(&stop);
	sigaddset(&stop, SIGTERM);
	sigaddset(&stop, SIGINT);
	sigaddset(&stop, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &stop, NULL);
	signal(SIGPIPE, SIG_IGN);

	capsule_error err = { 0 };
	if (serve_api_init(o, &err) < 0) {
		fprintf(stderr, "capsule mcp: %s\n", err.message);
		return 125;
	}
	pthread_t sig_thread;
	if (pthread_create(&sig_thread, NULL, signal_main, &stop) != 0) {
		fprintf(stderr, "capsule mcp: starting the signal thread failed\n");
		stop_sandboxes();
		serve_api_free();
		return 125;
	}
	pthread_detach(sig_thread);

	struct mcp_session s = { .owner_name = "this MCP client" };
	int r = serve_lines(in_fd, &s);
	stop_sandboxes();
	serve_api_free();
	close(in_fd);
	if (r == -ENOMEM) {
		fprintf(stderr, "capsule mcp: out of memory\n");
		return 125;
	}
	return 0;
}
