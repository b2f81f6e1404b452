/* A TCP sender, sink and connection counter for bench/net, the same binary on the host and
 * inside a sandbox (built static by bench/net):
 *
 *   net_xfer sink PORT           accept on 127.0.0.1:PORT, read each connection to EOF, answer
 *                                its byte count, forever
 *   net_xfer accept PORT         accept on 127.0.0.1:PORT and close each connection, forever
 *   net_xfer send HOST PORT MIB  send MIB MiB in 1 MiB writes, half-close, wait for the count;
 *                                prints the seconds it took
 *   net_xfer conns HOST PORT N   N connections one after another, each until the server closes
 *                                it; prints connections per second
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (1u << 20)

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int listen_on(int port)
{
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(s, 1024) < 0) {
		perror("listen");
		exit(1);
	}
	return s;
}

static int connect_to(const char *host, int port)
{
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	if (s < 0 || inet_pton(AF_INET, host, &a.sin_addr) != 1 || connect(s, (struct sockaddr *)&a, sizeof(a)) < 0) {
		perror("connect");
		exit(1);
	}
	return s;
}

int main(int argc, char **argv)
{
	static char buf[CHUNK];
	if (argc == 3 && (!strcmp(argv[1], "sink") || !strcmp(argv[1], "accept"))) {
		int l = listen_on(atoi(argv[2]));
		bool sink = !strcmp(argv[1], "sink");
		for (;;) {
			int c = accept(l, NULL, NULL);
			if (c < 0)
				continue;
			if (sink) {
				unsigned long long n = 0;
				ssize_t k;
				while ((k = read(c, buf, sizeof(buf))) > 0)
					n += (unsigned long long)k;
				char reply[32];
				int len = snprintf(reply, sizeof(reply), "%llu", n);
				(void)!write(c, reply, (size_t)len);
			}
			close(c);
		}
	}
	if (argc == 5 && !strcmp(argv[1], "send")) {
		long mib = atol(argv[4]);
		double t0 = now();
		int s = connect_to(argv[2], atoi(argv[3]));
		for (long i = 0; i < mib; i++) {
			for (size_t off = 0; off < CHUNK;) {
				ssize_t k = write(s, buf + off, CHUNK - off);
				if (k <= 0) {
					perror("write");
					return 1;
				}
				off += (size_t)k;
			}
		}
		shutdown(s, SHUT_WR);
		char reply[32] = { 0 };
		ssize_t k = read(s, reply, sizeof(reply) - 1);
		double t = now() - t0;
		if (k <= 0 || strtoull(reply, NULL, 10) != (unsigned long long)mib * CHUNK) {
			fprintf(stderr, "short transfer: '%s'\n", reply);
			return 1;
		}
		printf("%.6f\n", t);
		return 0;
	}
	if (argc == 5 && !strcmp(argv[1], "conns")) {
		long n = atol(argv[4]);
		double t0 = now();
		for (long i = 0; i < n; i++) {
			int s = connect_to(argv[2], atoi(argv[3]));
			char c;
			while (read(s, &c, 1) > 0)
				;
			close(s);
		}
		printf("%.1f\n", (double)n / (now() - t0));
		return 0;
	}
	fprintf(stderr, "usage: see the comment at the top of net_xfer.c\n");
	return 2;
}
