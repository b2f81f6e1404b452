/* Networking for the container level (docs/architecture.md, "Network"): the forwards'
 * listeners and their relay, the files of the sandbox's /etc, and the PORT_* requests. What runs
 * inside the sandbox's network namespace (slirp4netns, the allowlist, the socket factory) is
 * net_ns.c's. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "json.h"
#include "mounts.h"
#include "net.h"
#include "parse.h"
#include "syscalls.h"
#include "util.h"

/* Each direction of a connection holds at most this much in its pipe: with NET_MAX_CONNS
 * the relay's kernel memory is bounded at 64 MiB. */
#define NET_PIPE_BYTES (256u * 1024)
#define KEY_FWD (1ull << 32)
#define KEY_CONN (2ull << 32)

void net_log(struct net *n, const char *fmt, ...)
{
	if (!n->log)
		return;
	va_list ap;
	va_start(ap, fmt);
	fprintf(n->log, "net: ");
	vfprintf(n->log, fmt, ap);
	fputc('\n', n->log);
	fflush(n->log);
	va_end(ap);
}

/* ---- listeners ------------------------------------------------------------------------ */

static int forward_listen(const struct port_forward *pf, int *out, capsule_error *err)
{
	struct sockaddr_storage ss = { 0 };
	socklen_t len;
	bool v6 = strchr(pf->host_ip, ':') != NULL;
	if (v6) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
		a->sin6_family = AF_INET6;
		a->sin6_port = htons(pf->host_port);
		if (inet_pton(AF_INET6, pf->host_ip, &a->sin6_addr) != 1)
			return cap_err_plain(err, EINVAL, "port forward: '%s' is not an IPv6 address", pf->host_ip);
		len = sizeof(*a);
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;
		a->sin_family = AF_INET;
		a->sin_port = htons(pf->host_port);
		if (inet_pton(AF_INET, pf->host_ip, &a->sin_addr) != 1)
			return cap_err_plain(err, EINVAL, "port forward: '%s' is not an IPv4 address", pf->host_ip);
		len = sizeof(*a);
	}
	_cleanup_close_ int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return cap_err(err, errno, "port forward %s:%u: socket", pf->host_ip, pf->host_port);
	int one = 1;
	/* As docker-proxy: a port whose last connections linger in TIME_WAIT is free to reuse;
	 * a port someone listens on is still refused. */
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (v6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, len) < 0) {
		if (errno == EADDRINUSE)
			return cap_err_plain(err, EADDRINUSE, "host port %s%s%s:%u is already in use", v6 ? "[" : "",
					     pf->host_ip, v6 ? "]" : "", pf->host_port);
		return cap_err(err, errno, "port forward: listening on %s:%u", pf->host_ip, pf->host_port);
	}
	if (listen(fd, 128) < 0)
		return cap_err(err, errno, "port forward: listening on %s:%u", pf->host_ip, pf->host_port);
	*out = take_fd(fd);
	return 0;
}

static struct net_forward *forward_find(struct net *n, const char *host_ip, uint16_t host_port)
{
	for (size_t i = 0; i < NET_MAX_FORWARDS; i++)
		if (n->fwd[i].used && n->fwd[i].pf.host_port == host_port && !strcmp(n->fwd[i].pf.host_ip, host_ip))
			return &n->fwd[i];
	return NULL;
}

static int forward_add(struct net *n, const struct port_forward *pf, bool hot, bool arm, capsule_error *err)
{
	if (forward_find(n, pf->host_ip, pf->host_port))
		return cap_err_plain(err, EEXIST, "host port %s:%u is already forwarded", pf->host_ip, pf->host_port);
	struct net_forward *f = NULL;
	for (size_t i = 0; i < NET_MAX_FORWARDS && !f; i++)
		if (!n->fwd[i].used)
			f = &n->fwd[i];
	if (!f)
		return cap_err_plain(err, E2BIG, "too many port forwards (at most %d)", NET_MAX_FORWARDS);
	int fd = -1;
	int r = forward_listen(pf, &fd, err);
	if (r < 0)
		return r;
	*f = (struct net_forward){ .used = true, .hot = hot, .fd = fd, .pf = *pf };
	if (arm) {
		struct epoll_event ev = { .events = EPOLLIN, .data.u64 = NET_KEY_BASE | KEY_FWD | (uint64_t)(f - n->fwd) };
		epoll_ctl(n->epfd, EPOLL_CTL_ADD, fd, &ev);
	}
	return 0;
}

/* ---- files in the sandbox's /etc ------------------------------------------------------ */

static int write_etc_files(struct net *n, int run_fd, capsule_error *err)
{
	char buf[8192];
	/* With names to answer, the DNS proxy (egress.c) is the only DNS server the sandbox may
	 * reach; otherwise the NAT's. */
	bool proxy = (n->cfg->nallow || n->cfg->nallow_names) && n->cfg->isolation != CAPSULE_ISOLATION_VM;
	int len = snprintf(buf, sizeof(buf), "# written by capsule: %s\nnameserver %s\n",
			   proxy ? "the sandbox's DNS proxy, which answers only allowed names" : "the DNS server of the sandbox's NAT",
			   proxy ? NET_DNS_PROXY_ADDR : CAPSULE_NETWORK_DNS);
	int r = write_file_atomic_at(run_fd, "resolv.conf", buf, (size_t)len, 0644, false);
	if (r < 0)
		return cap_err(err, -r, "writing the sandbox's resolv.conf");
	/* Names an allowlist resolved on the host: the sandbox may not ask DNS for them. */
	size_t off = (size_t)snprintf(buf, sizeof(buf), "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
	for (size_t i = 0; i < n->cfg->nallow; i++) {
		const struct egress_rule *e = &n->cfg->allow[i];
		if (!e->host[0] || !strcmp(e->host, "localhost") || off + 300 >= sizeof(buf))
			continue;
		char ip[INET_ADDRSTRLEN];
		struct in_addr a = { .s_addr = e->addr };
		inet_ntop(AF_INET, &a, ip, sizeof(ip));
		off += (size_t)snprintf(buf + off, sizeof(buf) - off, "%s\t%s\n", ip, e->host);
	}
	if ((r = write_file_atomic_at(run_fd, "hosts", buf, off, 0644, false)) < 0)
		return cap_err(err, -r, "writing the sandbox's hosts file");
	return 0;
}

int net_prepare(struct net *n, const struct capsule_config *cfg, int epfd, int run_fd, FILE *log, capsule_error *err)
{
	*n = (struct net){ .epfd = epfd, .log = log, .cfg = cfg, .slirp_exit_fd = -1, .factory_fd = -1 };
	for (size_t i = 0; i < NET_MAX_CONNS; i++)
		n->conns[i].fd[0] = n->conns[i].fd[1] = -1;
	/* Each relayed connection holds six fds (two sockets, two pipes). */
	struct rlimit rl;
	if (cfg->nports && getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 4096) {
		rl.rlim_cur = rl.rlim_max < 4096 ? rl.rlim_max : 4096;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	for (size_t i = 0; i < cfg->nports; i++) {
		int r = forward_add(n, &cfg->ports[i], false, false, err);
		if (r < 0)
			return r;
	}
	if (cfg->network == CAPSULE_NETWORK_FULL)
		return write_etc_files(n, run_fd, err);
	return 0;
}

int net_etc_trees(struct net *n, int run_fd, int *trees, const char **targets, size_t *count, capsule_error *err)
{
	static const char *const files[] = { "resolv.conf", "hosts" };
	if (n->cfg->network != CAPSULE_NETWORK_FULL)
		return 0;
	for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
		if (i == 1 && !n->cfg->nallow)
			break;
		int t = shim_host_tree(run_fd, files[i], AT_SYMLINK_NOFOLLOW, NET_ETC_ATTRS);
		if (t < 0)
			return cap_err(err, errno, "open_tree '%s'", files[i]);
		trees[*count] = t;
		targets[*count] = i == 0 ? "/etc/resolv.conf" : "/etc/hosts";
		(*count)++;
	}
	return 0;
}

void net_arm_forwards(struct net *n)
{
	for (size_t i = 0; i < NET_MAX_FORWARDS; i++) {
		if (!n->fwd[i].used)
			continue;
		struct epoll_event ev = { .events = EPOLLIN, .data.u64 = NET_KEY_BASE | KEY_FWD | i };
		epoll_ctl(n->epfd, EPOLL_CTL_ADD, n->fwd[i].fd, &ev);
	}
}

/* ---- the relay ------------------------------------------------------------------------- */

static void relay_close(struct net *n, struct net_conn *c)
{
	for (int s = 0; s < 2; s++) {
		if (c->fd[s] >= 0) {
			if (c->events[s] != ~0u)
				epoll_ctl(n->epfd, EPOLL_CTL_DEL, c->fd[s], NULL);
			close(c->fd[s]);
		}
		close(c->dir[s].pipe_r);
		close(c->dir[s].pipe_w);
	}
	if (c->fwd >= 0 && n->fwd[c->fwd].used)
		n->fwd[c->fwd].nconns--;
	memset(c, 0, sizeof(*c));
	c->fd[0] = c->fd[1] = -1;
	n->nconns--;
}

static uint64_t relay_key(struct net *n, struct net_conn *c, int side)
{
	return NET_KEY_BASE | KEY_CONN | ((uint64_t)(c - n->conns) << 1) | (uint64_t)side;
}

/* Register each fd for what its directions wait on: reading into an empty pipe, writing
 * out of a full one. A fd done both ways leaves the epoll set (a hung-up socket would
 * otherwise report EPOLLHUP forever). */
static void relay_update(struct net *n, struct net_conn *c)
{
	for (int s = 0; s < 2; s++) {
		const struct net_dir *in = &c->dir[s], *out = &c->dir[1 - s];
		uint32_t want = 0;
		bool done = in->src_eof && out->shut;
		if (c->connecting)
			want = s == 1 ? EPOLLOUT : 0;
		else {
			if (!in->src_eof && in->bytes == 0)
				want |= EPOLLIN;
			if (out->bytes > 0)
				want |= EPOLLOUT;
		}
		if (done && !c->connecting) {
			if (c->events[s] != ~0u)
				epoll_ctl(n->epfd, EPOLL_CTL_DEL, c->fd[s], NULL);
			c->events[s] = ~0u;
			continue;
		}
		if (want == c->events[s])
			continue;
		struct epoll_event ev = { .events = want, .data.u64 = relay_key(n, c, s) };
		epoll_ctl(n->epfd, c->events[s] == ~0u ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, c->fd[s], &ev);
		c->events[s] = want;
	}
}

/* Move what can move in direction D without blocking; -errno when a side failed. */
static int relay_pump(struct net_conn *c, int d)
{
	struct net_dir *x = &c->dir[d];
	int src = c->fd[d], dst = c->fd[1 - d];
	for (;;) {
		bool moved = false;
		if (!x->src_eof && x->bytes < NET_PIPE_BYTES) {
			ssize_t k = splice(src, NULL, x->pipe_w, NULL, NET_PIPE_BYTES - x->bytes,
					   SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
			if (k > 0) {
				x->bytes += (size_t)k;
				moved = true;
			} else if (k == 0) {
				x->src_eof = true;
			} else if (errno != EAGAIN && errno != EINTR) {
				return -errno;
			}
		}
		if (x->bytes > 0) {
			ssize_t k = splice(x->pipe_r, NULL, dst, NULL, x->bytes, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
			if (k > 0) {
				x->bytes -= (size_t)k;
				moved = true;
			} else if (k < 0 && errno != EAGAIN && errno != EINTR) {
				return -errno;
			}
		}
		if (!moved)
			break;
	}
	/* Half-close: the other side sees EOF once everything before it has arrived. */
	if (x->src_eof && x->bytes == 0 && !x->shut) {
		shutdown(dst, SHUT_WR);
		x->shut = true;
	}
	return 0;
}

static void relay_run(struct net *n, struct net_conn *c)
{
	if (relay_pump(c, 0) < 0 || relay_pump(c, 1) < 0 || (c->dir[0].shut && c->dir[1].shut)) {
		relay_close(n, c);
		return;
	}
	relay_update(n, c);
}

static int make_pipe(struct net_dir *d)
{
	int p[2];
	if (pipe2(p, O_NONBLOCK | O_CLOEXEC) < 0)
		return -errno;
	fcntl(p[1], F_SETPIPE_SZ, (int)NET_PIPE_BYTES);
	d->pipe_r = p[0];
	d->pipe_w = p[1];
	return 0;
}

static void forward_accept(struct net *n, int fi)
{
	struct net_forward *f = &n->fwd[fi];
	for (int burst = 0; burst < 64; burst++) {
		int cfd = accept4(f->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (cfd < 0)
			return;
		if (n->relay) {
			n->relay->accept(n, fi, cfd);
			continue;
		}
		struct net_conn *c = NULL;
		for (size_t i = 0; i < NET_MAX_CONNS && !c; i++)
			if (!n->conns[i].used)
				c = &n->conns[i];
		capsule_error err = { 0 };
		int sfd = -1;
		if (!c) {
			/* Bounded: a flood of connections gets closed ones, not our memory. */
			close(cfd);
			continue;
		}
		if (net_sandbox_socket(n, &sfd, &err) < 0) {
			net_log(n, "port %s:%u: %s", f->pf.host_ip, f->pf.host_port, err.message);
			close(cfd);
			continue;
		}
		*c = (struct net_conn){ .used = true, .fwd = fi, .fd = { cfd, sfd }, .events = { ~0u, ~0u } };
		c->dir[0].pipe_r = c->dir[0].pipe_w = c->dir[1].pipe_r = c->dir[1].pipe_w = -1;
		n->nconns++;
		f->nconns++;
		f->accepted++;
		if (make_pipe(&c->dir[0]) < 0 || make_pipe(&c->dir[1]) < 0) {
			relay_close(n, c);
			continue;
		}
		int one = 1;
		setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		setsockopt(sfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(f->pf.guest_port),
					  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
		if (connect(sfd, (struct sockaddr *)&to, sizeof(to)) < 0) {
			if (errno != EINPROGRESS) {
				relay_close(n, c);
				continue;
			}
			c->connecting = true;
		}
		relay_update(n, c);
		if (!c->connecting)
			relay_run(n, c);
	}
}

bool net_key_is_forward(uint64_t key)
{
	return ((key & ~NET_KEY_BASE) & ~0xffffffffull) != NET_KEY_DNS;
}

void net_event(struct net *n, uint64_t key, uint32_t events)
{
	(void)events;
	uint64_t k = key & ~NET_KEY_BASE;
	if ((k & ~0xffffffffull) == NET_KEY_RELAY) {
		if (n->relay)
			n->relay->event(n, (size_t)(k & 0xffffffffu), events);
		return;
	}
	if ((k & ~0xffffffffull) == NET_KEY_DNS) {
		egress_event(n, k & 0xffffffffu);
		return;
	}
	if ((k & ~0xffffffffull) == KEY_FWD) {
		size_t i = k & 0xffffffffu;
		if (i < NET_MAX_FORWARDS && n->fwd[i].used)
			forward_accept(n, (int)i);
		return;
	}
	size_t ci = (k & 0xffffffffu) >> 1;
	if (ci >= NET_MAX_CONNS || !n->conns[ci].used)
		return;
	struct net_conn *c = &n->conns[ci];
	if (c->connecting && (k & 1) == 0) {
		/* The client hung up before the sandbox side was connected. */
		relay_close(n, c);
		return;
	}
	if (c->connecting) {
		int e = 0;
		socklen_t el = sizeof(e);
		if (getsockopt(c->fd[1], SOL_SOCKET, SO_ERROR, &e, &el) < 0 || e) {
			/* Nothing listens inside: the client sees its connection closed. */
			relay_close(n, c);
			return;
		}
		c->connecting = false;
	}
	relay_run(n, c);
}

/* ---- teardown ------------------------------------------------------------------------- */

static void forward_close(struct net *n, struct net_forward *f)
{
	int fi = (int)(f - n->fwd);
	for (size_t i = 0; i < NET_MAX_CONNS; i++)
		if (n->conns[i].used && n->conns[i].fwd == fi)
			relay_close(n, &n->conns[i]);
	if (n->relay)
		n->relay->forward_closed(n, fi);
	epoll_ctl(n->epfd, EPOLL_CTL_DEL, f->fd, NULL);
	close(f->fd);
	memset(f, 0, sizeof(*f));
}

static void child_reap(struct net *n, pid_t *pid, bool force, const char *what)
{
	if (*pid <= 0)
		return;
	if (force)
		kill(*pid, SIGKILL);
	int st;
	pid_t r = waitpid(*pid, &st, force ? 0 : WNOHANG);
	if (r == *pid) {
		if (!force)
			net_log(n, "%s exited (wait status 0x%x)", what, (unsigned)st);
		*pid = 0;
	}
}

void net_reap(struct net *n, bool force)
{
	if (force) {
		for (size_t i = 0; i < NET_MAX_FORWARDS; i++)
			if (n->fwd[i].used)
				forward_close(n, &n->fwd[i]);
		if (n->slirp_exit_fd >= 0)
			close(n->slirp_exit_fd);
		if (n->factory_fd >= 0)
			close(n->factory_fd);
		n->slirp_exit_fd = n->factory_fd = -1;
		while (n->npool > 0)
			close(n->pool[--n->npool]);
		egress_free(n);
		/* Before the joined namespace is let go: a vm's relay removes its claims there. */
		if (n->relay)
			n->relay->free(n);
		n->relay = NULL;
		n->relay_state = NULL;
		if (n->joined)
			close(n->joined_fd);
		n->joined = false;
	}
	child_reap(n, &n->slirp_pid, force, "slirp4netns");
	pid_t fpid = n->factory_pid;
	child_reap(n, &n->factory_pid, force, "socket factory");
	if (fpid && !n->factory_pid && n->factory_fd >= 0) {
		/* The next connection starts a new one. */
		close(n->factory_fd);
		n->factory_fd = -1;
	}
}

/* ---- requests ------------------------------------------------------------------------- */

static int port_from_msg(const struct cp_port *m, struct port_forward *pf, capsule_error *err)
{
	if (m->flags & CP_PORT_UDP)
		return cap_err_plain(err, EOPNOTSUPP, "udp forwards are not supported (tcp only)");
	char spec[96];
	bool v6 = strchr(m->host_ip, ':') != NULL;
	snprintf(spec, sizeof(spec), "%s%s%s:%u:%u", v6 ? "[" : "", m->host_ip, v6 ? "]" : "", m->host_port,
		 m->guest_port ? m->guest_port : 1);
	struct port_spec ps;
	int r = parse_port_spec(spec, &ps, err);
	if (r < 0)
		return r;
	snprintf(pf->host_ip, sizeof(pf->host_ip), "%s", ps.host_ip);
	pf->host_port = ps.host_port;
	pf->guest_port = ps.guest_port;
	return 0;
}

int net_port_add(struct net *n, const struct cp_port *m, capsule_error *err)
{
	struct port_forward pf;
	int r = port_from_msg(m, &pf, err);
	if (r < 0 || (r = forward_add(n, &pf, true, true, err)) < 0)
		return r;
	net_log(n, "port forward %s:%u -> %u added", pf.host_ip, pf.host_port, pf.guest_port);
	return 0;
}

int net_port_remove(struct net *n, const struct cp_port *m, capsule_error *err)
{
	struct port_forward pf;
	int r = port_from_msg(m, &pf, err);
	if (r < 0)
		return r;
	struct net_forward *f = forward_find(n, pf.host_ip, pf.host_port);
	if (!f)
		return cap_err_plain(err, ENOENT, "no port forward on host port %s:%u", pf.host_ip, pf.host_port);
	forward_close(n, f);
	net_log(n, "port forward %s:%u removed", pf.host_ip, pf.host_port);
	return 0;
}

int net_ports_json(struct net *n, char **out, capsule_error *err)
{
	struct json_writer j;
	json_init(&j, true); /* shown by `capsule port ls --json` as it is */
	json_array_begin(&j);
	for (size_t i = 0; i < NET_MAX_FORWARDS; i++) {
		const struct net_forward *f = &n->fwd[i];
		/* A vm's listener in its joined network namespace (vmnet.c) is no host port. */
		if (!f->used || !f->pf.guest_port)
			continue;
		json_object_begin(&j);
		json_kv_string(&j, "host_ip", f->pf.host_ip);
		json_kv_uint(&j, "host_port", f->pf.host_port);
		json_kv_uint(&j, "guest_port", f->pf.guest_port);
		json_kv_string(&j, "protocol", "tcp");
		json_kv_bool(&j, "hot", f->hot);
		json_kv_uint(&j, "connections", f->nconns);
		json_object_end(&j);
	}
	json_array_end(&j);
	int e = 0;
	*out = json_steal(&j, &e);
	if (!*out)
		return cap_err(err, e ? -e : ENOMEM, "listing port forwards");
	return 0;
}
