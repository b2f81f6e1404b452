/* The TCP ports a guest listens on, for a vm behind a joined network namespace (a pod's):
 * with capsule.ports=report on the kernel command line, the agent reads the guest's TCP
 * tables twice a second and sends VM_LISTENING whenever the set changes, and the shim claims
 * those ports in the namespace for this guest (src/shim/vm/vmnet.c; docs/architecture.md,
 * "Several vms in one pod"). Polled: the guest kernel offers no event for a listen(), and its
 * tables are read without sock_diag (not built into the guest kernel). An unchanged set is
 * sent again every PORTS_RESEND ticks: the shim then tries again the ports another vm held
 * (which that vm may have let go since), and reads the other vms' ports anew.
 *
 * The other way, the shim's VM_LISTENING names the ports the pod's other vms hold: a pod's
 * containers share localhost, so the agent listens on each on the guest's 127.0.0.1 (where a
 * guest program that listens on one itself keeps it: the bind fails) and relays what it
 * accepts to the same port of the gateway 10.0.2.2, which libslirp makes the namespace's
 * loopback, where the map sends it to the vm that holds the port. The guest kernel has no
 * NAT, so this is a relay of bytes, not a redirect; its own listeners are left out of the
 * reports. The tables are opened before any command runs, so nothing the workload mounts over
 * its /proc hides them. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "agent.h"
#include "capsule.h"
#include "util.h"

#define PORTS_POLL_MS 500
#define PORTS_RESEND 4

/* Connections relayed at once (each holds two buffers of RELAY_BUF); more are closed. */
#define RELAY_MAX 64
#define RELAY_BUF 16384
/* Epoll keys' indexes above AGENT_ROLE_PORTS: the timer, a listener (1 + its index), a
 * relayed connection's end (RELAY_KEY + 2 * its index + end). */
#define LISTENER_KEY 1
#define RELAY_KEY 256

static int ports_epfd = -1;
static int timer_fd = -1;
static int table_fd[2] = { -1, -1 };
static struct cp_vm_listening sent;
static bool sent_once;
static unsigned unchanged;

struct peer {
	uint16_t port;
	int fd;
};
static struct peer peers[CP_MAX_VM_LISTENING];
static size_t npeers;

/* End 0 is the guest program's connection, end 1 ours to the gateway; buf[d] holds what was
 * read from end d and is still to be written to the other. */
struct relay {
	bool used, connected;
	int fd[2];
	uint8_t *buf[2];
	size_t len[2], off[2];
	bool eof[2], shut[2];
	uint32_t events[2]; /* ~0u: not in the epoll set */
};
static struct relay relays[RELAY_MAX];

void vm_ports_init(int epfd)
{
	ports_epfd = epfd;
	char v[16];
	if (!agent_in_vm() || !agent_cmdline_get("capsule.ports", v, sizeof(v)) || strcmp(v, "report"))
		return;
	table_fd[0] = open("/proc/net/tcp", O_RDONLY | O_CLOEXEC);
	table_fd[1] = open("/proc/net/tcp6", O_RDONLY | O_CLOEXEC);
	timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	struct itimerspec its = { .it_interval = { .tv_nsec = PORTS_POLL_MS * 1000000L },
				  .it_value = { .tv_nsec = PORTS_POLL_MS * 1000000L } };
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = AGENT_ROLE_PORTS };
	if (table_fd[0] < 0 || timer_fd < 0 || timerfd_settime(timer_fd, 0, &its, NULL) < 0 ||
	    epoll_ctl(epfd, EPOLL_CTL_ADD, timer_fd, &ev) < 0)
		fprintf(stderr, "capsule-agent: the listening ports' poll: %s\n", strerror(errno));
}

/* FD's table, in chunks of whole lines (a busy guest's table of connections can be large). */
static size_t table_read(int fd, uint16_t *ports, size_t n)
{
	static char buf[16384];
	if (fd < 0 || lseek(fd, 0, SEEK_SET) < 0)
		return n;
	size_t have = 1;
	buf[0] = '\n'; /* the parser skips what comes before the first newline: the header, a partial line */
	for (;;) {
		ssize_t k = read(fd, buf + have, sizeof(buf) - 1 - have);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			break;
		have += (size_t)k;
		buf[have] = '\0';
		char *last = strrchr(buf, '\n');
		*last = '\0';
		n = tcp_listening_ports(buf, ports, n, 2 * CP_MAX_VM_LISTENING);
		/* The partial line after the last newline, behind a newline of its own. */
		size_t tail = have - (size_t)(last + 1 - buf);
		memmove(buf + 1, last + 1, tail);
		buf[0] = '\n';
		have = 1 + tail;
		if (have >= sizeof(buf) - 1)
			have = 1; /* no line is this long: drop it */
	}
	return n;
}

static void tick(void)
{
	uint64_t ticks;
	if (read(timer_fd, &ticks, sizeof(ticks)) < 0)
		return;
	/* Room for the agent's own listeners (at most CP_MAX_VM_LISTENING), left out below,
	 * beside as many of the guest's. */
	uint16_t all[2 * CP_MAX_VM_LISTENING];
	size_t nall = 0;
	for (size_t i = 0; i < 2; i++)
		nall = table_read(table_fd[i], all, nall);
	struct cp_vm_listening now = { .n = 0 };
	for (size_t i = 0; i < nall && now.n < CP_MAX_VM_LISTENING; i++) {
		bool ours = false;
		for (size_t j = 0; j < npeers && !ours; j++)
			ours = peers[j].port == all[i];
		if (!ours)
			now.port[now.n++] = all[i];
	}
	if (sent_once && now.n == sent.n && !memcmp(now.port, sent.port, now.n * sizeof(now.port[0])) &&
	    ++unchanged < PORTS_RESEND)
		return;
	unchanged = 0;
	if (cp_vm_listening_encode(agent_writer(), 0, &now) == 0) {
		agent_send_frame();
		sent = now;
		sent_once = true;
	}
}

/* ---- the other vms' ports on the guest's loopback ---- */

static void relay_free(struct relay *c)
{
	for (int d = 0; d < 2; d++) {
		if (c->fd[d] >= 0)
			close(c->fd[d]); /* leaves the epoll set with it */
		free(c->buf[d]);
	}
	memset(c, 0, sizeof(*c));
}

static void relay_watch(struct relay *c)
{
	for (int d = 0; d < 2; d++) {
		uint32_t want = 0;
		if (c->connected && c->len[d] == 0 && !c->eof[d])
			want |= EPOLLIN;
		if (c->len[!d] > c->off[!d] || (d == 1 && !c->connected))
			want |= EPOLLOUT;
		if (want == c->events[d])
			continue;
		/* A socket with nothing to wait for leaves the set: a hung-up one would report
		 * EPOLLHUP whatever it is registered for. */
		if (!want) {
			epoll_ctl(ports_epfd, EPOLL_CTL_DEL, c->fd[d], NULL);
			c->events[d] = ~0u;
			continue;
		}
		struct epoll_event ev = { .events = want,
					  .data.u64 = AGENT_ROLE_PORTS | (uint64_t)(RELAY_KEY + 2 * (c - relays) + d) << 8 };
		epoll_ctl(ports_epfd, c->events[d] == ~0u ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, c->fd[d], &ev);
		c->events[d] = want;
	}
}

/* Move what each end has to the other, once: the loop's level-triggered events call again. */
static void relay_pump(struct relay *c)
{
	for (int d = 0; d < 2 && c->connected; d++) {
		if (c->len[d] || c->eof[d])
			continue;
		ssize_t k = recv(c->fd[d], c->buf[d], RELAY_BUF, MSG_DONTWAIT);
		if (k < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (k < 0) {
			relay_free(c);
			return;
		}
		c->len[d] = (size_t)k;
		c->off[d] = 0;
		c->eof[d] = k == 0;
	}
	for (int d = 0; d < 2; d++) {
		while (c->off[d] < c->len[d]) {
			ssize_t k = send(c->fd[!d], c->buf[d] + c->off[d], c->len[d] - c->off[d], MSG_DONTWAIT | MSG_NOSIGNAL);
			if (k < 0 && errno == EINTR)
				continue;
			if (k < 0 && errno == EAGAIN)
				break;
			if (k < 0) {
				relay_free(c);
				return;
			}
			c->off[d] += (size_t)k;
		}
		if (c->off[d] == c->len[d])
			c->len[d] = c->off[d] = 0;
		if (c->eof[d] && !c->len[d] && !c->shut[d]) {
			shutdown(c->fd[!d], SHUT_WR);
			c->shut[d] = true;
		}
	}
	if (c->shut[0] && c->shut[1]) {
		relay_free(c);
		return;
	}
	relay_watch(c);
}

static void relay_event(size_t index, uint32_t events)
{
	if (index / 2 >= RELAY_MAX || !relays[index / 2].used)
		return;
	struct relay *c = &relays[index / 2];
	if (index % 2 == 1 && !c->connected) {
		int e = 0;
		socklen_t el = sizeof(e);
		if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
			return;
		if (getsockopt(c->fd[1], SOL_SOCKET, SO_ERROR, &e, &el) < 0 || e) {
			relay_free(c);
			return;
		}
		c->connected = true;
	}
	relay_pump(c);
}

static void peer_accept(struct peer *p)
{
	for (int burst = 0; burst < 16; burst++) {
		int cfd = accept4(p->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (cfd < 0)
			return;
		struct relay *c = NULL;
		for (size_t i = 0; i < RELAY_MAX && !c; i++)
			if (!relays[i].used)
				c = &relays[i];
		struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(p->port) };
		inet_pton(AF_INET, CAPSULE_NETWORK_GATEWAY, &to.sin_addr);
		int ofd = c ? socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0) : -1;
		uint8_t *b0 = ofd >= 0 ? malloc(RELAY_BUF) : NULL, *b1 = b0 ? malloc(RELAY_BUF) : NULL;
		if (!b1 || (connect(ofd, (struct sockaddr *)&to, sizeof(to)) < 0 && errno != EINPROGRESS)) {
			/* Bounded: a flood of connections gets them closed, not the agent's memory. */
			close(cfd);
			if (ofd >= 0)
				close(ofd);
			free(b0);
			free(b1);
			continue;
		}
		/* Each write is a whole piece a program wrote: Nagle would hold a reply's second piece
		 * for the first's delayed ACK (40 ms on loopback). */
		int one = 1;
		setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		setsockopt(ofd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		*c = (struct relay){ .used = true, .fd = { cfd, ofd }, .buf = { b0, b1 }, .events = { ~0u, ~0u } };
		relay_watch(c);
	}
}

void vm_ports_event(size_t index, uint32_t events)
{
	if (index == 0)
		tick();
	else if (index >= LISTENER_KEY && index < LISTENER_KEY + npeers)
		peer_accept(&peers[index - LISTENER_KEY]);
	else if (index >= RELAY_KEY)
		relay_event(index - RELAY_KEY, events);
}

/* A listener on 127.0.0.1:PORT, or -1 where a guest program has the port (or the wildcard's). */
static int peer_listen(uint16_t port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1;
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	if (fd >= 0 && (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
			bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 64) < 0)) {
		close(fd);
		return -1;
	}
	return fd;
}

void vm_ports_peers(const uint8_t *payload, size_t len)
{
	static struct cp_vm_listening m;
	if (timer_fd < 0 || cp_vm_listening_decode(payload, len, &m) < 0)
		return;
	struct peer now[CP_MAX_VM_LISTENING];
	size_t n = 0;
	for (size_t i = 0; i < m.n; i++) {
		int fd = -1;
		for (size_t j = 0; j < npeers && fd < 0; j++)
			if (peers[j].port == m.port[i]) {
				fd = peers[j].fd;
				peers[j].fd = -1;
			}
		if (fd < 0 && (fd = peer_listen(m.port[i])) < 0)
			continue;
		now[n++] = (struct peer){ .port = m.port[i], .fd = fd };
	}
	/* Connections already relayed stay; only the listeners go. */
	for (size_t j = 0; j < npeers; j++)
		if (peers[j].fd >= 0)
			close(peers[j].fd);
	memcpy(peers, now, n * sizeof(now[0]));
	npeers = n;
	for (size_t i = 0; i < npeers; i++) {
		struct epoll_event ev = { .events = EPOLLIN, .data.u64 = AGENT_ROLE_PORTS | (uint64_t)(LISTENER_KEY + i) << 8 };
		if (epoll_ctl(ports_epfd, EPOLL_CTL_MOD, peers[i].fd, &ev) < 0)
			epoll_ctl(ports_epfd, EPOLL_CTL_ADD, peers[i].fd, &ev);
	}
}
