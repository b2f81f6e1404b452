/* serve_rtt: capsule serve's figures beside the C API's, for bench/serve.
 *
 *   serve_rtt NAME PORT TOKEN [N] [CLIENTS] [SECONDS] [FILE_MIB]
 *
 * NAME is a running sandbox the server on 127.0.0.1:PORT made for TOKEN (its id is its name).
 * 1. N (default 500) execs of /bin/true, alternating capsule_exec() on the sandbox opened with
 *    capsule_sandbox_open and POST /v1/sandboxes/NAME/exec on one kept-alive connection, so
 *    that machine noise falls on both.
 * 2. CLIENTS (default 32) threads, each on its own kept-alive connection, POSTing that exec
 *    for SECONDS (default 5): requests per second.
 * 3. FILE_MIB (default 64) MiB from a file in /dev/shm into the sandbox and back, three rounds
 *    of each, alternating PUT/GET .../files with capsule_fs_write_from_fd/capsule_fs_read_to_fd.
 * The client is a plain socket writing HTTP/1.1 and reading Content-Length or chunked
 * answers: no client library's own cost in the HTTP figures. Prints "key value" lines
 * (microseconds, seconds); exit status 0 only when every request and call succeeded.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "capsule.h"
#include "timing.h"

static int port;
static uint64_t body_bytes; /* of the last answer, to check a download came whole */
static const char *token, *name;

struct http {
	int fd;
	char buf[1 << 16];
	size_t have, off;
};

static int http_connect(struct http *h)
{
	h->have = h->off = 0;
	h->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int one = 1;
	setsockopt(h->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return connect(h->fd, (struct sockaddr *)&sa, sizeof(sa));
}

static int fill(struct http *h)
{
	if (h->off < h->have)
		return 0;
	ssize_t n = read(h->fd, h->buf, sizeof(h->buf));
	if (n <= 0)
		return -1;
	h->have = (size_t)n, h->off = 0;
	return 0;
}

static int read_line(struct http *h, char *line, size_t cap)
{
	size_t n = 0;
	for (;;) {
		if (fill(h) < 0)
			return -1;
		char c = h->buf[h->off++];
		if (c == '\n')
			break;
		if (c != '\r' && n + 1 < cap)
			line[n++] = c;
	}
	line[n] = '\0';
	return 0;
}

/* LEN bytes of body, to OUT_FD when >= 0 (else dropped). */
static int read_body(struct http *h, uint64_t len, int out_fd)
{
	while (len) {
		if (fill(h) < 0)
			return -1;
		size_t n = h->have - h->off;
		if (n > len)
			n = (size_t)len;
		if (out_fd >= 0 && write(out_fd, h->buf + h->off, n) != (ssize_t)n)
			return -1;
		body_bytes += n;
		h->off += n, len -= n;
	}
	return 0;
}

/* The answer's status, its body read whole (chunked or not). */
static int read_response(struct http *h, int out_fd)
{
	char line[1024];
	int status = 0;
	body_bytes = 0;
	if (read_line(h, line, sizeof(line)) < 0 || sscanf(line, "HTTP/1.1 %d", &status) != 1)
		return -1;
	uint64_t len = 0;
	int chunked = 0;
	for (;;) {
		if (read_line(h, line, sizeof(line)) < 0)
			return -1;
		if (!line[0])
			break;
		if (!strncasecmp(line, "Content-Length:", 15))
			len = strtoull(line + 15, NULL, 10);
		else if (!strncasecmp(line, "Transfer-Encoding:", 18) && strstr(line, "chunked"))
			chunked = 1;
	}
	if (!chunked)
		return read_body(h, len, out_fd) < 0 ? -1 : status;
	for (;;) {
		if (read_line(h, line, sizeof(line)) < 0)
			return -1;
		uint64_t n = strtoull(line, NULL, 16);
		if (n == 0)
			break;
		if (read_body(h, n, out_fd) < 0 || read_line(h, line, sizeof(line)) < 0)
			return -1;
	}
	while (read_line(h, line, sizeof(line)) == 0 && line[0]) /* trailers */
		;
	return status;
}

static int send_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w <= 0)
			return -1;
		p += w, n -= (size_t)w;
	}
	return 0;
}

static int http_exec(struct http *h)
{
	static const char body[] = "{\"cmd\":[\"/bin/true\"]}";
	char req[1024];
	int n = snprintf(req, sizeof(req),
			 "POST /v1/sandboxes/%s/exec HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n"
			 "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
			 name, token, sizeof(body) - 1, body);
	if (send_all(h->fd, req, (size_t)n) < 0)
		return -1;
	return read_response(h, -1) == 200 ? 0 : -1;
}

static int api_exec(capsule_sandbox *sb)
{
	static const char *const argv[] = { "/bin/true", NULL };
	capsule_exec_options o = CAPSULE_EXEC_OPTIONS_INIT;
	o.argv = argv;
	capsule_exec_result res;
	capsule_error err = { 0 };
	int r = capsule_exec(&res, sb, &o, NULL, 0, 4096, &err);
	if (r < 0) {
		fprintf(stderr, "serve_rtt: exec: %s\n", err.message);
		return -1;
	}
	r = res.status.exit_code == 0 ? 0 : -1;
	capsule_exec_result_free(&res);
	return r;
}

/* ---- 32 clients ---- */

struct client {
	pthread_t t;
	uint64_t until, count;
	int failed;
};

static void *client_main(void *arg)
{
	struct client *c = arg;
	struct http *h = malloc(sizeof(*h));
	if (!h || http_connect(h) < 0) {
		c->failed = 1;
		free(h);
		return NULL;
	}
	while (now_ns() < c->until) {
		if (http_exec(h) < 0) {
			c->failed = 1;
			break;
		}
		c->count++;
	}
	close(h->fd);
	free(h);
	return NULL;
}

/* ---- files ---- */

static int http_put(struct http *h, const char *path, int fd, off_t size)
{
	char req[1024];
	int n = snprintf(req, sizeof(req),
			 "PUT /v1/sandboxes/%s/files?path=%s HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n"
			 "Content-Length: %lld\r\n\r\n",
			 name, path, token, (long long)size);
	if (send_all(h->fd, req, (size_t)n) < 0)
		return -1;
	off_t off = 0;
	while (off < size)
		if (sendfile(h->fd, fd, &off, (size_t)(size - off)) <= 0)
			return -1;
	int status = read_response(h, -1);
	return status == 200 || status == 201 ? 0 : -1;
}

static int http_get(struct http *h, const char *path, int out_fd)
{
	char req[1024];
	int n = snprintf(req, sizeof(req),
			 "GET /v1/sandboxes/%s/files?path=%s HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n\r\n",
			 name, path, token);
	if (send_all(h->fd, req, (size_t)n) < 0)
		return -1;
	return read_response(h, out_fd) == 200 ? 0 : -1;
}

static off_t file_size_in(capsule_sandbox *sb, const char *path)
{
	capsule_fs_entry st;
	capsule_error err = { 0 };
	if (capsule_fs_stat(sb, path, &st, &err) < 0)
		return -1;
	off_t size = (off_t)st.size;
	capsule_fs_entry_clear(&st);
	return size;
}

static double median3(double *v)
{
	double a = v[0], b = v[1], c = v[2];
	return a > b ? (b > c ? b : (a > c ? c : a)) : (a > c ? a : (b > c ? c : b));
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: serve_rtt NAME PORT TOKEN [N] [CLIENTS] [SECONDS] [FILE_MIB]\n");
		return 2;
	}
	name = argv[1], port = atoi(argv[2]), token = argv[3];
	size_t n = argc > 4 ? strtoul(argv[4], NULL, 10) : 500;
	size_t clients = argc > 5 ? strtoul(argv[5], NULL, 10) : 32;
	double seconds = argc > 6 ? atof(argv[6]) : 5;
	size_t mib = argc > 7 ? strtoul(argv[7], NULL, 10) : 64;
	if (n == 0)
		n = 1;
	capsule_error err = { 0 };
	capsule_sandbox *sb;
	if (capsule_sandbox_open(&sb, name, &err) < 0) {
		fprintf(stderr, "serve_rtt: %s\n", err.message);
		return 1;
	}
	static struct http h;
	if (http_connect(&h) < 0) {
		perror("serve_rtt: connect");
		return 1;
	}
	uint64_t *api = calloc(n, sizeof(*api)), *web = calloc(n, sizeof(*web));
	for (size_t i = 0; i < n + 10; i++) {
		uint64_t t0 = now_ns();
		if (api_exec(sb) < 0)
			return 1;
		uint64_t t1 = now_ns();
		if (http_exec(&h) < 0) {
			fprintf(stderr, "serve_rtt: the HTTP exec failed\n");
			return 1;
		}
		uint64_t t2 = now_ns();
		if (i >= 10) { /* warm-up rounds are not counted */
			api[i - 10] = t1 - t0;
			web[i - 10] = t2 - t1;
		}
	}
	qsort(api, n, sizeof(*api), cmp_u64);
	qsort(web, n, sizeof(*web), cmp_u64);
	printf("n %zu\n", n);
	printf("api_p50_us %.1f\napi_p99_us %.1f\n", pct_us(api, n, 50), pct_us(api, n, 99));
	printf("http_p50_us %.1f\nhttp_p99_us %.1f\n", pct_us(web, n, 50), pct_us(web, n, 99));
	fflush(stdout);

	struct client *cs = calloc(clients, sizeof(*cs));
	uint64_t start = now_ns(), until = start + (uint64_t)(seconds * 1e9);
	for (size_t i = 0; i < clients; i++) {
		cs[i].until = until;
		pthread_create(&cs[i].t, NULL, client_main, &cs[i]);
	}
	uint64_t total = 0;
	int failed = 0;
	for (size_t i = 0; i < clients; i++) {
		pthread_join(cs[i].t, NULL);
		total += cs[i].count;
		failed |= cs[i].failed;
	}
	double took = (double)(now_ns() - start) / 1e9;
	if (failed) {
		fprintf(stderr, "serve_rtt: a concurrent client failed\n");
		return 1;
	}
	printf("clients %zu\nrequests %llu\nrps %.0f\n", clients, (unsigned long long)total, (double)total / took);
	fflush(stdout);

	char host[64];
	snprintf(host, sizeof(host), "/dev/shm/serve_rtt.%d", (int)getpid());
	int fd = open(host, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
	char *block = malloc(1 << 20);
	for (size_t i = 0; i < (1u << 20); i++)
		block[i] = (char)(i * 131 + 17);
	for (size_t i = 0; i < mib; i++)
		if (write(fd, block, 1 << 20) != 1 << 20)
			return perror("serve_rtt: the file"), 1;
	off_t size = (off_t)mib << 20;
	double up_api[3], up_web[3], down_api[3], down_web[3];
	int rc = 0;
	for (int round = 0; round < 3 && rc == 0; round++) {
		uint64_t t0 = now_ns();
		lseek(fd, 0, SEEK_SET);
		if (capsule_fs_write_from_fd(sb, "/tmp/bench-api", fd, 0644, 0, &err) < 0)
			rc = fprintf(stderr, "serve_rtt: fs write: %s\n", err.message);
		uint64_t t1 = now_ns();
		if (!rc && http_put(&h, "/tmp/bench-http", fd, size) < 0)
			rc = fprintf(stderr, "serve_rtt: PUT failed\n");
		uint64_t t2 = now_ns();
		if (!rc && capsule_fs_read_to_fd(sb, "/tmp/bench-api", null, &err) < 0)
			rc = fprintf(stderr, "serve_rtt: fs read: %s\n", err.message);
		uint64_t t3 = now_ns();
		if (!rc && (http_get(&h, "/tmp/bench-http", null) < 0 || body_bytes != (uint64_t)size))
			rc = fprintf(stderr, "serve_rtt: GET failed\n");
		if (!rc && (file_size_in(sb, "/tmp/bench-api") != size || file_size_in(sb, "/tmp/bench-http") != size))
			rc = fprintf(stderr, "serve_rtt: a file in the sandbox is not %lld bytes\n", (long long)size);
		uint64_t t4 = now_ns();
		up_api[round] = (double)(t1 - t0) / 1e9, up_web[round] = (double)(t2 - t1) / 1e9;
		down_api[round] = (double)(t3 - t2) / 1e9, down_web[round] = (double)(t4 - t3) / 1e9;
	}
	unlink(host);
	if (rc)
		return 1;
	printf("file_mib %zu\n", mib);
	printf("up_api_s %.3f\nup_http_s %.3f\n", median3(up_api), median3(up_web));
	printf("down_api_s %.3f\ndown_http_s %.3f\n", median3(down_api), median3(down_web));
	capsule_sandbox_free(sb);
	return 0;
}
