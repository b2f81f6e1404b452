/* QMP commands after the handshake: one command at a time, each with an id of its own, its
 * answer found among QEMU's events by that id. QEMU's output is treated as hostile-ish input
 * (a guest can make it emit events with data of its choosing): lines are bounded, anything
 * longer is skipped whole, and each line is parsed with the project's JSON reader. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "json.h"
#include "util.h"
#include "vm.h"

#define QMP_LINE_MAX (64u * 1024)
/* Events that pile up between commands (VNC clients coming and going, the guest's RTC) are
 * read and dropped; past this much of them in one wait, something is wrong. */
#define QMP_SKIP_MAX (16u << 20)

/* Bytes read past one answer stay for the next command: the shim has one QMP connection and
 * one thread. */
static struct {
	char buf[QMP_LINE_MAX];
	size_t len;
	bool skipping; /* inside a line longer than the buffer: drop up to its newline */
} rx;

static unsigned qmp_next_id;

struct qmp_member {
	const char *name;
	char *value; /* raw JSON text, malloc'd */
};

static int take_member(const char *name, const char *value, size_t len, void *payload)
{
	struct qmp_member *m = payload;
	if (strcmp(name, m->name) != 0 || m->value)
		return 0;
	m->value = strndup(value, len);
	return m->value ? 0 : -ENOMEM;
}

/* The raw text of member NAME of the object LINE, malloc'd; NULL when absent or invalid. */
static char *member_text(const char *line, size_t len, const char *name)
{
	struct qmp_member m = { .name = name };
	if (json_object_each(line, len, 64, take_member, &m) < 0) {
		free(m.value);
		return NULL;
	}
	return m.value;
}

/* 1 when LINE answers command ID (*RESULT, *RET or ERR filled), 0 when it does not. */
static int answer_of(const char *line, size_t len, const char *id, char **ret, capsule_error *err, int *result)
{
	_cleanup_free_ char *line_id = NULL;
	if (json_get_string(line, len, "id", &line_id) < 0 || strcmp(line_id, id) != 0)
		return 0;
	_cleanup_free_ char *error = member_text(line, len, "error");
	if (error) {
		_cleanup_free_ char *desc = NULL;
		json_get_string(error, strlen(error), "desc", &desc);
		*result = cap_err_plain(err, EIO, "QEMU: %.300s", desc ? desc : "an error with no description");
		return 1;
	}
	char *value = member_text(line, len, "return");
	if (!value) {
		*result = cap_err_plain(err, EPROTO, "QEMU answered with neither return nor error");
		return 1;
	}
	if (ret)
		*ret = value;
	else
		free(value);
	*result = 0;
	return 1;
}

void qmp_forget(void)
{
	rx.len = 0;
	rx.skipping = false;
}

/* The request, with PASS_FD (>= 0) beside its first byte as SCM_RIGHTS: QEMU keeps an fd
 * that came with a command for that command (getfd names it). */
static int qmp_send(int fd, const char *req, size_t len, int pass_fd)
{
	if (pass_fd < 0)
		return write_all(fd, req, len);
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	memset(&u, 0, sizeof(u));
	struct iovec iov = { .iov_base = (void *)req, .iov_len = 1 };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf) };
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
	ssize_t n;
	while ((n = sendmsg(fd, &msg, MSG_NOSIGNAL)) < 0 && errno == EINTR)
		;
	if (n < 0)
		return -errno;
	return write_all(fd, req + 1, len - 1);
}

int qmp_execute(int fd, const char *command, const char *arguments, int timeout_ms, char **ret, capsule_error *err)
{
	return qmp_execute_fd(fd, command, arguments, -1, timeout_ms, ret, err);
}

int qmp_execute_fd(int fd, const char *command, const char *arguments, int pass_fd, int timeout_ms, char **ret,
		   capsule_error *err)
{
	char id[32];
	snprintf(id, sizeof(id), "capsule-%u", ++qmp_next_id);
	_cleanup_free_ char *req = NULL;
	if (asprintf(&req, "{\"execute\": \"%s\"%s%s, \"id\": \"%s\"}\n", command, arguments ? ", \"arguments\": " : "",
		     arguments ? arguments : "", id) < 0)
		return cap_err(err, ENOMEM, "QMP %s", command);
	int r = qmp_send(fd, req, strlen(req), pass_fd);
	if (r < 0)
		return cap_err(err, -r, "QMP %s: sending to QEMU", command);
	uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
	size_t skipped = 0;
	for (;;) {
		char *nl;
		while ((nl = memchr(rx.buf, '\n', rx.len))) {
			size_t line = (size_t)(nl - rx.buf);
			int result = 0, found = 0;
			if (rx.skipping)
				rx.skipping = false;
			else
				found = answer_of(rx.buf, line, id, ret, err, &result);
			skipped += line + 1;
			memmove(rx.buf, nl + 1, rx.len - line - 1);
			rx.len -= line + 1;
			if (found)
				return result < 0 ? cap_err_wrap(err, result, "QMP %s", command) : 0;
		}
		if (rx.len == sizeof(rx.buf)) {
			/* A line longer than any answer of ours: not ours, drop it. */
			skipped += rx.len;
			rx.len = 0;
			rx.skipping = true;
		}
		if (skipped > QMP_SKIP_MAX)
			return cap_err_plain(err, EMSGSIZE, "QMP %s: QEMU sent over %u MiB without answering", command,
					     QMP_SKIP_MAX >> 20);
		uint64_t now = now_ms();
		if (now >= deadline)
			return cap_err_plain(err, ETIMEDOUT, "QMP %s: QEMU did not answer within %d ms", command, timeout_ms);
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int k = poll(&p, 1, (int)(deadline - now));
		if (k < 0 && errno != EINTR)
			return cap_err(err, errno, "QMP %s: poll", command);
		if (k <= 0)
			continue;
		ssize_t n = read(fd, rx.buf + rx.len, sizeof(rx.buf) - rx.len);
		if (n == 0)
			return cap_err_plain(err, EPIPE, "QMP %s: QEMU closed its monitor", command);
		if (n < 0 && errno != EINTR && errno != EAGAIN)
			return cap_err(err, errno, "QMP %s: reading from QEMU", command);
		if (n > 0)
			rx.len += (size_t)n;
	}
}
