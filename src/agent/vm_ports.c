/* The TCP ports a guest listens on, for a vm behind a joined network namespace (a pod's):
 * with capsule.ports=report on the kernel command line, the agent reads the guest's TCP
 * tables twice a second and sends VM_LISTENING whenever the set changes, and the shim claims
 * those ports in the namespace for this guest (src/shim/vm/vmnet.c; docs/architecture.md,
 * "Several vms in one pod"). Polled: the guest kernel offers no event for a listen(), and its
 * tables are read without sock_diag (not built into the guest kernel). An unchanged set is
 * sent again every PORTS_RESEND ticks: the shim then tries again the ports another vm held
 * (which that vm may have let go since). The tables are opened
 * before any command runs, so nothing the workload mounts over its /proc hides them. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "agent.h"
#include "util.h"

#define PORTS_POLL_MS 500
#define PORTS_RESEND 10

static int timer_fd = -1;
static int table_fd[2] = { -1, -1 };
static struct cp_vm_listening sent;
static bool sent_once;
static unsigned unchanged;

void vm_ports_init(int epfd)
{
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
		n = tcp_listening_ports(buf, ports, n, CP_MAX_VM_LISTENING);
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

void vm_ports_event(void)
{
	uint64_t ticks;
	if (read(timer_fd, &ticks, sizeof(ticks)) < 0)
		return;
	struct cp_vm_listening now = { .n = 0 };
	for (size_t i = 0; i < 2; i++)
		now.n = table_read(table_fd[i], now.port, now.n);
	if (sent_once && now.n == sent.n && !memcmp(now.port, sent.port, now.n * sizeof(now.port[0])) &&
	    (!now.n || ++unchanged < PORTS_RESEND))
		return;
	unchanged = 0;
	if (cp_vm_listening_encode(agent_writer(), 0, &now) == 0) {
		agent_send_frame();
		sent = now;
		sent_once = true;
	}
}
