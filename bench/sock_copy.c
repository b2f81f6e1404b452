/* sock_copy: the stream anchor for bench/files, a plain C copy of a file over a unix socket.
 *
 *   sock_copy SRC DST
 *
 * One process reads SRC in 1 MiB reads and writes each to a unix stream socket; a second reads
 * the socket in 1 MiB reads and writes what it gets to DST (created or truncated). That is the
 * work `capsule fs write` does (read the file, send it over a socket, write it on the other
 * side) with nothing else: no frames, no relay, no flow control. Prints "seconds S" for the
 * whole copy, from before the first read until the receiver has closed DST.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "timing.h"

#define CHUNK (1u << 20)

static int write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t k = write(fd, p, n);
		if (k < 0)
			return -1;
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

/* Read FROM in CHUNK reads into TO until EOF. */
static int pump(int from, int to, char *buf)
{
	for (;;) {
		ssize_t n = read(from, buf, CHUNK);
		if (n < 0)
			return -1;
		if (n == 0)
			return 0;
		if (write_all(to, buf, (size_t)n) < 0)
			return -1;
	}
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: sock_copy SRC DST\n");
		return 2;
	}
	char *buf = malloc(CHUNK);
	int sv[2];
	if (!buf || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return 1;
	uint64_t t0 = now_ns();
	pid_t pid = fork();
	if (pid < 0)
		return 1;
	if (pid == 0) {
		close(sv[0]);
		int dst = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		_exit(dst < 0 || pump(sv[1], dst, buf) < 0 || close(dst) < 0 ? 1 : 0);
	}
	close(sv[1]);
	int src = open(argv[1], O_RDONLY | O_CLOEXEC);
	int rc = src < 0 || pump(src, sv[0], buf) < 0 ? 1 : 0;
	close(sv[0]);
	int st;
	if (waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
		rc = 1;
	printf("seconds %.6f\n", (double)(now_ns() - t0) / 1e9);
	return rc;
}
