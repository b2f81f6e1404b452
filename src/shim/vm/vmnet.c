/* The network of a vm: QEMU's user-mode network for `full`, and port forwards relayed over
 * the agent channel (docs/architecture.md, "vm isolation"; docs/protocol.md, "Forwarded
 * connections").
 *
 * A container's forwarded connection is spliced to a socket made in its network namespace;
 * a guest's network stack is out of the shim's reach, so the agent makes that socket: the
 * shim accepts on the host exactly as for a container (the listeners, their limits and the
 * PORT_* requests are net.c's), opens a channel of its own with FWD_CONNECT, and moves the
 * bytes as DATA frames under the protocol's credit, with a window of CP_FWD_WINDOW each way,
 * so that a connection holds at most that much in the shim whatever either end does. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "syscalls.h"
#include "mounts.h"
#include "shim.h"
#include "util.h"
#include "vm.h"
#include "vmnet.h"

/* linux/netfilter_ipv4.h's, whose headers clash with glibc's netinet/in.h. */
#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80
#endif

/* ---- QEMU's side -------------------------------------------------------------------- */

/* The same reach as a container's slirp4netns: outbound TCP/UDP and DNS through a user-mode
 * NAT, the gateway 10.0.2.2 being the host's loopback, IPv6 off. Nothing comes in but what
 * the shim carries: no hostfwd, no guestfwd, no tftp, no smb (which would spawn smbd; QEMU's
 * -sandbox spawn=deny refuses that anyway). */
size_t vm_net_qemu_args(const struct capsule_config *cfg, const char **out, size_t max)
{
	static const char *const full[] = {
		"-netdev", "user,id=net0,ipv6=off,net=10.0.2.0/24,host=" CAPSULE_NETWORK_GATEWAY ",dns=" CAPSULE_NETWORK_DNS,
		"-device", "virtio-net-device,netdev=net0",
	};
	if (!vm_net_nic(cfg) || max < ARRAY_SIZE(full))
		return 0;
	for (size_t i = 0; i < ARRAY_SIZE(full); i++)
		out[i] = full[i];
	return ARRAY_SIZE(full);
}

void vm_net_cmdline(const struct capsule_config *cfg, char *buf, size_t size)
{
	buf[0] = '\0';
	if (!vm_net_nic(cfg))
		return;
	size_t off = (size_t)snprintf(buf, size, " capsule.net=full");
	/* The allowlist as the library stored it (resolved, masked), the config's own form: at
	 * most CAPSULE_MAX_ALLOW entries of at most 24 bytes, far below the 2048 bytes a guest
	 * kernel's command line may have (build_argv checks the whole line). */
	for (size_t i = 0; i < cfg->nallow && off < size; i++) {
		char rule[64];
		egress_rule_format(&cfg->allow[i], rule, sizeof(rule));
		off += (size_t)snprintf(buf + off, size - off, "%s%s", i ? "," : " capsule.allow=", rule);
	}
	/* The proxy (egress.c) answers for every allowlist, since names can be allowed later. */
	if ((cfg->nallow || cfg->nallow_names) && off < size)
		off += (size_t)snprintf(buf + off, size - off, " capsule.dns=proxy");
	if (cfg->egress_quota_bytes && off < size)
		off += (size_t)snprintf(buf + off, size - off, " capsule.quota=%llu", (unsigned long long)cfg->egress_quota_bytes);
	/* Behind a joined namespace, the agent reports the guest's listening ports, which the shim
	 * claims there (vm_fwd_listening). */
	if (cfg->net_ns && off < size)
		snprintf(buf + off, size - off, " capsule.ports=report");
}

int vm_net_allowlist_check(const struct capsule_config *cfg, capsule_error *err)
{
	if (!cfg->nallow && !cfg->nallow_names && !cfg->egress_quota_bytes)
		return 0;
	struct vm_kernel k;
	int r = vm_find_kernel(&k, err);
	if (r < 0)
		return r;
	/* A modular kernel (Debian's) has nf_tables only as modules, which the guest cannot load
	 * after boot: the rules could not be made, and the sandbox must not start without them. */
	if (!k.builtin)
		r = cap_err_plain(err, EOPNOTSUPP,
				  "an egress allowlist (--allow-host, --allow-cidr) or quota with vm isolation needs a guest kernel "
				  "with nf_tables built in, as " VM_OWN_KERNEL_NAME " has; '%s' is a modular kernel",
				  k.path);
	vm_kernel_free(&k);
	return r;
}

/* The names an allowlist resolved on the host (run/<name>/hosts, net.c's) reach the guest as
 * the container level gives them: a read-only file over /etc/hosts, since DNS is refused.
 * The file is an entry of the shares (a root shim's); the shim then has the agent bind it. */
bool vm_net_hosts_wanted(const struct capsule_config *cfg, const struct vm_shares *s)
{
	return cfg->network == CAPSULE_NETWORK_FULL && cfg->nallow && s->enabled;
}

int vm_net_hosts_attach(const struct capsule_config *cfg, struct vm_shares *s, capsule_error *err)
{
	if (!vm_net_hosts_wanted(cfg, s))
		return 0;
	/* By path, beside the shares' folder: the run folder's fd names a mount of the host's
	 * namespace, which open_tree cannot clone into the shim's own. */
	char path[PATH_MAX];
	const char *slash = strrchr(s->dir, '/');
	snprintf(path, sizeof(path), "%.*s/hosts", (int)(slash - s->dir), s->dir);
	const uint64_t attrs = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
	_cleanup_close_ int t = shim_host_tree(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, attrs);
	if (t < 0)
		return cap_err(err, errno, "preparing '%s' for the vm's share", path);
	return vm_shares_attach(s, t, VM_NET_HOSTS_ENTRY, false, attrs, err);
}

/* ---- forwarded connections ------------------------------------------------------------ */

struct vm_conn {
	bool used;
	bool started;   /* the agent is connected inside */
	bool host_eof;  /* the host client's EOF went to the agent */
	bool agent_eof; /* the guest side's EOF came */
	bool shut;      /* ... and reached the host client as SHUT_WR */
	bool final;     /* the agent ended the channel */
	int fwd;
	int fd;         /* the host client */
	uint32_t chan;
	uint32_t send_credit;  /* stream 0 bytes the agent still takes */
	uint32_t agent_credit; /* stream 1 bytes we let the agent send */
	uint8_t *q;            /* bytes from the agent not yet written to the host client */
	size_t qlen;
	uint32_t events;       /* ~0u: not in the epoll set */
};

struct vm_fwd {
	/* The ports this shim holds in its joined namespace's map for its guest, and those its
	 * guest listens on that another vm there holds (each said once in the log). */
	uint16_t claimed[CP_MAX_VM_LISTENING], refused[CP_MAX_VM_LISTENING];
	size_t nclaimed, nrefused;
	/* The ports the namespace's other vms hold, as last sent to the agent, which listens on
	 * them on the guest's loopback for the guest's programs (vm_ports.c). */
	struct cp_vm_listening peers;
	uint64_t report_ms; /* when the agent's last VM_LISTENING was taken */
	vm_fwd_send_fn send;
	void *send_ctx;
	uint32_t next_chan;
	struct cp_writer w;
	struct vm_conn c[NET_MAX_CONNS];
};

/* N's relay state, NULL before vm_fwd_start and after the relay is freed. */
static struct vm_fwd *fwd_of(const struct net *n)
{
	return n->relay_state;
}

static void fwd_send(struct vm_fwd *v, const void *a, size_t an, const void *b, size_t bn)
{
	v->send(v->send_ctx, a, an, b, bn);
}

static const struct net_relay_ops vm_relay_ops;
static void peers_update(struct net *n, struct vm_fwd *v, unsigned listener);
static unsigned ns_listener_port(const struct net *n);

/* The nat table in a joined namespace, one for every vm there (a pod's several): a TCP
 * connection that comes into it (podman's -p DNATs the host's port to the namespace's address;
 * a pod's ports, a peer's connection), or is made in it to one of its own addresses, loopback
 * included (a program in the namespace, a guest's 10.0.2.2 through libslirp), is redirected by
 * its port through the map `ports` to the listener of the shim whose guest listens on that
 * port, which takes the port asked for from SO_ORIGINAL_DST and connects to it in its guest.
 * Each shim claims its guest's ports as its agent reports them (VM_LISTENING) and removes its
 * claims when its guest stops listening or the sandbox ends; a port no vm claims finds nothing
 * in the namespace and is refused, as in a pod where nothing listens on it. Made so that any
 * vm may (re)make it without touching another's claims: the table and map are added if they
 * are not there, the chains flushed and their one rule added in the same transaction. A
 * redirect is decided at a connection's first packet only, so a listener's own port is never
 * redirected again, even where it equals a port a guest claims. */
#define VM_NS_NFT "add table ip capsule_vm_in\n" \
	"add map ip capsule_vm_in ports { type inet_service : inet_service; }\n" \
	"add chain ip capsule_vm_in pre { type nat hook prerouting priority -100; policy accept; }\n" \
	"flush chain ip capsule_vm_in pre\n" \
	"add rule ip capsule_vm_in pre iifname != \"lo\" meta l4proto tcp redirect to :tcp dport map @ports\n" \
	"add chain ip capsule_vm_in out { type nat hook output priority -100; policy accept; }\n" \
	"flush chain ip capsule_vm_in out\n" \
	"add rule ip capsule_vm_in out fib daddr type local meta l4proto tcp redirect to :tcp dport map @ports\n"

/* A vm behind a network namespace by path: QEMU runs in it (qemu.c), but the guest's address
 * is libslirp's, which takes no connection in; the shim listens in the namespace instead, a
 * forward of guest port 0 ("the port the connection was for") beside the host's forwards. */
static int ns_listen(struct net *n, capsule_error *err)
{
	for (size_t i = 0; i < NET_MAX_FORWARDS; i++)
		if (n->fwd[i].used && !n->fwd[i].pf.guest_port)
			return 0; /* a restart of the same sandbox keeps it */
	struct net_forward *f = NULL;
	for (size_t i = 0; i < NET_MAX_FORWARDS && !f; i++)
		if (!n->fwd[i].used)
			f = &n->fwd[i];
	if (!f)
		return cap_err_plain(err, E2BIG, "too many port forwards (at most %d)", NET_MAX_FORWARDS - 1);
	int ns = -1;
	int r = shim_open_joined_ns(n->cfg->net_ns, CLONE_NEWNET, "network", &ns, err);
	if (r < 0)
		return r;
	_cleanup_close_ int own = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	if (own < 0 || setns(ns, CLONE_NEWNET) < 0) {
		r = cap_err(err, errno, "entering the network namespace '%s'", n->cfg->net_ns);
		close(ns);
		return r;
	}
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int e = fd < 0 ? errno : 0;
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_ANY) };
	socklen_t alen = sizeof(a);
	if (fd >= 0 && (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 128) < 0 ||
			getsockname(fd, (struct sockaddr *)&a, &alen) < 0))
		e = errno;
	/* Back to the host's, or the shim would serve its own clients from the wrong place. */
	if (setns(own, CLONE_NEWNET) < 0)
		abort();
	if (n->joined)
		close(n->joined_fd);
	n->joined = true;
	n->joined_fd = ns;
	if (e) {
		if (fd >= 0)
			close(fd);
		return cap_err(err, e, "a listener in the network namespace '%s'", n->cfg->net_ns);
	}
	if ((r = net_nft(n, VM_NS_NFT, sizeof(VM_NS_NFT) - 1, NULL, err)) < 0) {
		close(fd);
		return r;
	}
	*f = (struct net_forward){ .used = true, .fd = fd, .pf = { .host_ip = "0.0.0.0", .host_port = ntohs(a.sin_port) } };
	net_log(n, "listening in the network namespace '%s' on port %u for the guest", n->cfg->net_ns, f->pf.host_port);
	return 0;
}

int vm_fwd_start(struct net *n, vm_fwd_send_fn send, void *ctx, capsule_error *err)
{
	if (n->cfg->net_ns) {
		int r = ns_listen(n, err);
		if (r < 0)
			return r;
	}
	struct vm_fwd *v = calloc(1, sizeof(*v));
	if (!v)
		return cap_err(err, ENOMEM, "port forwards of the vm");
	v->send = send;
	v->send_ctx = ctx;
	cp_writer_init(&v->w);
	for (size_t i = 0; i < NET_MAX_CONNS; i++)
		v->c[i].fd = -1;
	n->relay = &vm_relay_ops;
	n->relay_state = v;
	net_arm_forwards(n);
	/* Before the first command: the other vms' ports are held on the guest's loopback before
	 * any program of the guest can bind one of them. */
	if (n->joined)
		peers_update(n, v, ns_listener_port(n));
	return 0;
}

static void conn_update(struct net *n, struct vm_conn *c)
{
	uint32_t want = 0;
	if (c->started && !c->host_eof && !c->final && c->send_credit > 0)
		want |= EPOLLIN;
	if (c->qlen > 0)
		want |= EPOLLOUT;
	if (want == c->events)
		return;
	/* A socket with nothing to wait for leaves the set: a hung-up one would otherwise
	 * report EPOLLHUP whatever it is registered for. */
	if (want == 0) {
		epoll_ctl(n->epfd, EPOLL_CTL_DEL, c->fd, NULL);
		c->events = ~0u;
		return;
	}
	struct epoll_event ev = { .events = want, .data.u64 = NET_KEY_BASE | NET_KEY_RELAY | (uint64_t)(c - fwd_of(n)->c) };
	epoll_ctl(n->epfd, c->events == ~0u ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, c->fd, &ev);
	c->events = want;
}

/* The end of a connection. Unless the agent ended the channel itself, it is told to drop its
 * side; a late frame on the channel then finds nothing here and is ignored. */
static void conn_free(struct net *n, struct vm_conn *c)
{
	struct vm_fwd *v = fwd_of(n);
	if (!c->final && cp_empty_encode(&v->w, CP_FWD_CLOSE, c->chan) == 0)
		fwd_send(v, v->w.buf, v->w.len, NULL, 0);
	if (c->events != ~0u)
		epoll_ctl(n->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	free(c->q);
	if (c->fwd >= 0 && n->fwd[c->fwd].used && n->fwd[c->fwd].nconns > 0)
		n->fwd[c->fwd].nconns--;
	n->nconns--;
	memset(c, 0, sizeof(*c));
	c->fd = -1;
}

static struct vm_conn *conn_by_chan(struct net *n, uint32_t chan)
{
	struct vm_fwd *v = fwd_of(n);
	for (size_t i = 0; v && i < NET_MAX_CONNS; i++)
		if (v->c[i].used && v->c[i].chan == chan)
			return &v->c[i];
	return NULL;
}

static void vm_fwd_accept(struct net *n, int fi, int cfd)
{
	struct vm_fwd *v = fwd_of(n);
	struct vm_conn *c = NULL;
	for (size_t i = 0; i < NET_MAX_CONNS && !c; i++)
		if (!v->c[i].used)
			c = &v->c[i];
	if (!c) {
		/* Bounded as for a container: a flood gets closed connections, not our memory. */
		close(cfd);
		return;
	}
	uint32_t chan;
	do
		chan = VM_FWD_CHAN_BIT | (++v->next_chan & ~VM_FWD_CHAN_BIT);
	while (conn_by_chan(n, chan));
	struct net_forward *f = &n->fwd[fi];
	*c = (struct vm_conn){ .used = true, .fwd = fi, .fd = cfd, .chan = chan, .send_credit = CP_FWD_WINDOW,
			       .agent_credit = CP_FWD_WINDOW, .events = ~0u };
	n->nconns++;
	f->nconns++;
	f->accepted++;
	int one = 1;
	setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	struct cp_fwd_connect m = { .port = f->pf.guest_port };
	struct sockaddr_in to;
	socklen_t tolen = sizeof(to);
	if (!m.port && getsockopt(cfd, SOL_IP, SO_ORIGINAL_DST, &to, &tolen) == 0)
		m.port = ntohs(to.sin_port);
	if (!m.port) {
		c->final = true;
		conn_free(n, c);
		return;
	}
	if (cp_fwd_connect_encode(&v->w, chan, &m) < 0) {
		c->final = true;
		conn_free(n, c);
		return;
	}
	fwd_send(v, v->w.buf, v->w.len, NULL, 0);
}

/* Host client -> agent, as far as the agent's credit goes. */
static void conn_read_host(struct net *n, struct vm_conn *c)
{
	static uint8_t buf[CP_DATA_CHUNK];
	struct vm_fwd *v = fwd_of(n);
	while (c->send_credit > 0 && !c->host_eof) {
		size_t want = c->send_credit < sizeof(buf) ? c->send_credit : sizeof(buf);
		ssize_t k = recv(c->fd, buf, want, MSG_DONTWAIT);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0 && errno == EAGAIN)
			break;
		if (k < 0) {
			conn_free(n, c);
			return;
		}
		uint8_t hdr[CP_HEADER_SIZE];
		struct cp_header h = { .len = (uint32_t)k, .type = CP_DATA,
				       .flags = CP_STREAM_STDIN | (k == 0 ? CP_FLAG_EOF : 0), .chan = c->chan };
		cp_header_encode(hdr, &h);
		fwd_send(v, hdr, sizeof(hdr), buf, (size_t)k);
		if (k == 0)
			c->host_eof = true;
		c->send_credit -= (uint32_t)k;
	}
	conn_update(n, c);
}

/* Agent -> host client: what was queued, then the half-close; each byte written is credit
 * given back to the agent. */
static void conn_write_host(struct net *n, struct vm_conn *c, const uint8_t *p, size_t len)
{
	struct vm_fwd *v = fwd_of(n);
	size_t written = 0;
	const uint8_t *src = c->qlen ? c->q : p;
	size_t srclen = c->qlen ? c->qlen : len;
	while (written < srclen) {
		ssize_t k = send(c->fd, src + written, srclen - written, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0 && errno == EAGAIN)
			break;
		if (k < 0) {
			conn_free(n, c);
			return;
		}
		written += (size_t)k;
	}
	if (c->qlen) {
		memmove(c->q, c->q + written, c->qlen - written);
		c->qlen -= written;
	} else if (written < len) {
		uint8_t *nq = realloc(c->q, len - written);
		if (!nq) {
			conn_free(n, c);
			return;
		}
		c->q = nq;
		memcpy(c->q, p + written, len - written);
		c->qlen = len - written;
	}
	if (written) {
		c->agent_credit += (uint32_t)written;
		struct cp_credit m = { .stream = CP_STREAM_STDOUT, .bytes = (uint32_t)written };
		if (!c->final && cp_credit_encode(&v->w, c->chan, &m) == 0)
			fwd_send(v, v->w.buf, v->w.len, NULL, 0);
	}
	if (c->qlen == 0 && c->agent_eof && !c->shut) {
		shutdown(c->fd, SHUT_WR);
		c->shut = true;
	}
	if (c->qlen == 0 && c->final) {
		conn_free(n, c);
		return;
	}
	conn_update(n, c);
}

static void vm_fwd_event(struct net *n, size_t index, uint32_t events)
{
	struct vm_fwd *v = fwd_of(n);
	if (!v || index >= NET_MAX_CONNS || !v->c[index].used)
		return;
	struct vm_conn *c = &v->c[index];
	if (events & EPOLLOUT) {
		conn_write_host(n, c, NULL, 0);
		if (!c->used)
			return;
	}
	if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
		conn_read_host(n, c);
}

void vm_fwd_agent_frame(struct net *n, const struct cp_header *h, const uint8_t *payload)
{
	struct vm_conn *c = conn_by_chan(n, h->chan);
	if (!c)
		return;
	switch (h->type) {
	case CP_STARTED:
		c->started = true;
		conn_update(n, c);
		return;
	case CP_DATA: {
		/* The agent is inside the boundary: past its credit, its connection ends. */
		if ((h->flags & CP_FLAG_STREAM_MASK) != CP_STREAM_STDOUT || h->len > c->agent_credit || c->agent_eof) {
			net_log(n, "agent sent a forwarded connection's DATA out of turn; dropping it");
			conn_free(n, c);
			return;
		}
		c->agent_credit -= h->len;
		if (h->flags & CP_FLAG_EOF)
			c->agent_eof = true;
		if (c->qlen && h->len) {
			uint8_t *nq = realloc(c->q, c->qlen + h->len);
			if (!nq) {
				conn_free(n, c);
				return;
			}
			c->q = nq;
			memcpy(c->q + c->qlen, payload, h->len);
			c->qlen += h->len;
		}
		conn_write_host(n, c, c->qlen ? NULL : payload, c->qlen ? 0 : h->len);
		return;
	}
	case CP_CREDIT: {
		struct cp_credit m;
		if (cp_credit_decode(payload, h->len, &m) < 0 || m.stream != CP_STREAM_STDIN)
			return;
		uint64_t credit = (uint64_t)c->send_credit + m.bytes;
		c->send_credit = credit > CP_FWD_WINDOW ? CP_FWD_WINDOW : (uint32_t)credit;
		conn_update(n, c);
		return;
	}
	case CP_OK:
	case CP_ERROR:
	case CP_EXIT:
		/* Nothing listens inside (ERROR before STARTED): the client sees its connection
		 * closed, as with a container. Otherwise what is queued still goes out first. */
		c->final = true;
		if (h->type == CP_ERROR && !c->started) {
			struct cp_error_msg e;
			if (cp_error_decode(payload, h->len, &e) == 0) {
				net_log(n, "port %s:%u: %s", n->fwd[c->fwd].pf.host_ip, n->fwd[c->fwd].pf.host_port, e.message);
				cp_error_free(&e);
			}
		}
		if (c->qlen == 0)
			conn_free(n, c);
		else
			conn_update(n, c);
		return;
	default:
		return;
	}
}

/* ---- a pod's ports: which vm of a joined namespace a port goes to ---------------------- */

static bool port_in(const uint16_t *list, size_t n, uint16_t port)
{
	for (size_t i = 0; i < n; i++)
		if (list[i] == port)
			return true;
	return false;
}

/* The port of this shim's listener in its joined namespace, 0 when it has none. */
static unsigned ns_listener_port(const struct net *n)
{
	for (size_t i = 0; n->joined && i < NET_MAX_FORWARDS; i++)
		if (n->fwd[i].used && !n->fwd[i].pf.guest_port)
			return n->fwd[i].pf.host_port;
	return 0;
}

/* The ports listened on in the joined namespace (its own /proc/thread-self/net/tcp, read
 * after entering it), sorted, at most MAX; -1 when unknown (unreadable, or more than MAX). A
 * claim whose listener is not among them is a shim's that ended without removing it (killed). */
static int ns_listening(struct net *n, uint16_t *ports, size_t max)
{
	_cleanup_close_ int own = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	if (own < 0 || setns(n->joined_fd, CLONE_NEWNET) < 0)
		return -1;
	int fd = open("/proc/thread-self/net/tcp", O_RDONLY | O_CLOEXEC);
	if (setns(own, CLONE_NEWNET) < 0)
		abort();
	_cleanup_free_ char *text = NULL;
	size_t len;
	int r = fd < 0 ? -errno : read_fd_all(fd, 4 << 20, &text, &len);
	if (fd >= 0)
		close(fd);
	if (r < 0)
		return -1;
	size_t k = tcp_listening_ports(text, ports, 0, max);
	return k == max ? -1 : (int)k;
}

/* The namespace's map as (port, listener) pairs, at most MAX; -1 when it cannot be read. */
static int ports_map(struct net *n, uint16_t (*kv)[2], size_t max)
{
	_cleanup_free_ char *out = NULL;
	capsule_error e = { 0 };
	if (net_nft(n, "list map ip capsule_vm_in ports", 0, &out, &e) < 0 || !out)
		return -1;
	/* nft -j: ..."elem": [[8080, 40001], [9090, 40002]]... */
	const char *p = strstr(out, "\"elem\": [");
	size_t k = 0;
	unsigned key, val;
	int used;
	for (p = p ? p + 9 : NULL; p && k < max && sscanf(p, " [%u, %u]%n", &key, &val, &used) == 2; k++) {
		kv[k][0] = (uint16_t)key;
		kv[k][1] = (uint16_t)val;
		p += used;
		p = *p == ',' ? p + 1 : NULL;
	}
	return (int)k;
}

/* One nft transaction for PORTS: claim each for LISTENER (`create`, which fails on an element
 * there), release each (`delete`), or both (a dead listener's claim taken over); 0 when the
 * kernel took all of it. */
enum port_op { PORT_CLAIM, PORT_RELEASE, PORT_TAKE_OVER };

static int ports_nft(struct net *n, enum port_op op, const uint16_t *ports, size_t count, unsigned listener)
{
	char text[CP_MAX_VM_LISTENING * 100];
	size_t off = 0;
	for (size_t i = 0; i < count && off < sizeof(text); i++) {
		if (op != PORT_CLAIM)
			off += (size_t)snprintf(text + off, sizeof(text) - off, "delete element ip capsule_vm_in ports { %u }\n",
						ports[i]);
		if (op != PORT_RELEASE && off < sizeof(text))
			off += (size_t)snprintf(text + off, sizeof(text) - off,
						"create element ip capsule_vm_in ports { %u : %u }\n", ports[i], listener);
	}
	capsule_error e = { 0 };
	return off < sizeof(text) ? net_nft(n, text, off, NULL, &e) : -E2BIG;
}

/* The guest's ports in WANT that this shim does not hold yet, claimed for LISTENER unless
 * another vm of the namespace holds them: the map's element is made with `create` (which
 * fails on one there), so of two guests that listen on one port the one whose agent reported
 * it first gets it, and the other's shim says so in its log, once, and tries again at each
 * report (at least every 2 s). All at once first (the common case: one nft run); when that
 * fails, port by port against the map as it is, taking over a claim whose listener is gone. */
static void ports_claim(struct net *n, struct vm_fwd *v, const struct cp_vm_listening *want, unsigned listener)
{
	uint16_t todo[CP_MAX_VM_LISTENING], refused[CP_MAX_VM_LISTENING];
	size_t ntodo = 0, nrefused = 0;
	for (size_t i = 0; i < want->n; i++)
		if (!port_in(v->claimed, v->nclaimed, want->port[i]))
			todo[ntodo++] = want->port[i];
	if (!ntodo || ports_nft(n, PORT_CLAIM, todo, ntodo, listener) == 0) {
		memcpy(v->claimed + v->nclaimed, todo, ntodo * sizeof(todo[0]));
		v->nclaimed += ntodo;
		v->nrefused = 0;
		return;
	}
	uint16_t kv[256][2], live[1024];
	int k = ports_map(n, kv, ARRAY_SIZE(kv));
	int nlive = ns_listening(n, live, ARRAY_SIZE(live));
	for (size_t i = 0; i < ntodo; i++) {
		unsigned owner = 0;
		for (int j = 0; j < k && !owner; j++)
			owner = kv[j][0] == todo[i] ? kv[j][1] : 0;
		bool gone = owner && nlive >= 0 && !port_in(live, (size_t)nlive, (uint16_t)owner);
		bool mine = owner == listener;
		if (!mine && (!owner || gone)) {
			/* Free (its holder let it go since), or a dead shim's: delete and create in one
			 * transaction, which fails as a whole if another shim was quicker. */
			mine = ports_nft(n, owner ? PORT_TAKE_OVER : PORT_CLAIM, &todo[i], 1, listener) == 0;
			if (mine && gone)
				net_log(n, "port %u: taken over from a listener (port %u) that is gone", todo[i], owner);
		}
		if (mine) {
			v->claimed[v->nclaimed++] = todo[i];
			continue;
		}
		if (!port_in(v->refused, v->nrefused, todo[i]))
			net_log(n, "port %u: the guest listens on it, but another container of the network namespace '%s' "
				   "serves it (its listener on port %u): connections to port %u go there, not to this guest",
				todo[i], n->cfg->net_ns, owner, todo[i]);
		refused[nrefused++] = todo[i];
	}
	memcpy(v->refused, refused, nrefused * sizeof(refused[0]));
	v->nrefused = nrefused;
}

/* Remove the claims not in KEEP: in one transaction, or, when it fails (an element another
 * shim removed as a dead listener's while this one's was closing), one by one. */
static void ports_release(struct net *n, struct vm_fwd *v, const struct cp_vm_listening *keep)
{
	if (!n->joined)
		return;
	uint16_t gone[CP_MAX_VM_LISTENING];
	size_t kept = 0, ngone = 0;
	for (size_t i = 0; i < v->nclaimed; i++) {
		if (port_in(keep->port, keep->n, v->claimed[i]))
			v->claimed[kept++] = v->claimed[i];
		else
			gone[ngone++] = v->claimed[i];
	}
	v->nclaimed = kept;
	if (!ngone || ports_nft(n, PORT_RELEASE, gone, ngone, 0) == 0)
		return;
	for (size_t i = 0; i < ngone; i++)
		ports_nft(n, PORT_RELEASE, &gone[i], 1, 0);
}

/* The other vms' ports, to the agent when they changed: a pod's containers share localhost,
 * so a guest's program reaches another container's port on its own 127.0.0.1 (the agent
 * relays it to the namespace's loopback, where the map sends it on). Read at each of the
 * agent's reports, which come at least every few seconds. */
static void peers_update(struct net *n, struct vm_fwd *v, unsigned listener)
{
	uint16_t kv[256][2], live[1024];
	int k = ports_map(n, kv, ARRAY_SIZE(kv));
	if (k < 0)
		return;
	int nlive = k ? ns_listening(n, live, ARRAY_SIZE(live)) : -1;
	struct cp_vm_listening now = { .n = 0 };
	char text[64 + 256 * 8];
	size_t off = 0, stale = 0;
	for (int i = 0; i < k; i++) {
		if (kv[i][1] == listener || !kv[i][0])
			continue;
		/* A dead shim's claim: removed, by whichever of the namespace's shims sees it first. */
		if (nlive >= 0 && !port_in(live, (size_t)nlive, kv[i][1])) {
			net_log(n, "port %u: the listener that held it (port %u) is gone; removing its claim", kv[i][0], kv[i][1]);
			off += (size_t)snprintf(text + off, sizeof(text) - off, "%s%u",
						stale++ ? ", " : "delete element ip capsule_vm_in ports { ", kv[i][0]);
			continue;
		}
		size_t at = 0;
		while (at < now.n && now.port[at] < kv[i][0])
			at++;
		if (now.n >= CP_MAX_VM_LISTENING || (at < now.n && now.port[at] == kv[i][0]))
			continue;
		memmove(now.port + at + 1, now.port + at, (now.n - at) * sizeof(now.port[0]));
		now.port[at] = kv[i][0];
		now.n++;
	}
	if (stale) {
		capsule_error e = { 0 };
		off += (size_t)snprintf(text + off, sizeof(text) - off, " }\n");
		if (net_nft(n, text, off, NULL, &e) < 0)
			net_log(n, "removing claims of listeners that are gone: %s", e.message);
	}
	if (now.n == v->peers.n && !memcmp(now.port, v->peers.port, now.n * sizeof(now.port[0])))
		return;
	if (cp_vm_listening_encode(&v->w, 0, &now) < 0)
		return;
	fwd_send(v, v->w.buf, v->w.len, NULL, 0);
	v->peers = now;
}

void vm_fwd_listening(struct net *n, const uint8_t *payload, size_t len)
{
	struct vm_fwd *v = fwd_of(n);
	unsigned listener = ns_listener_port(n);
	static struct cp_vm_listening m;
	if (!v || !listener)
		return; /* not a vm behind a joined namespace: nothing to claim for */
	if (cp_vm_listening_decode(payload, len, &m) < 0) {
		net_log(n, "agent sent a malformed VM_LISTENING; ignoring it");
		return;
	}
	/* Each report runs nft; the agent sends at most one per 500 ms tick, so one within 100 ms
	 * of the last is not the agent's way and is dropped (the next is at most 2 s away): a
	 * guest's flood makes the shim run nft a few times in 100 ms at most. */
	uint64_t now = now_ms();
	if (v->report_ms && now - v->report_ms < 100)
		return;
	v->report_ms = now;
	ports_release(n, v, &m);
	ports_claim(n, v, &m, listener);
	peers_update(n, v, listener);
}

static void vm_fwd_forward_closed(struct net *n, int fi)
{
	struct vm_fwd *v = fwd_of(n);
	for (size_t i = 0; v && i < NET_MAX_CONNS; i++)
		if (v->c[i].used && v->c[i].fwd == fi)
			conn_free(n, &v->c[i]);
}

static void vm_fwd_free(struct net *n)
{
	struct vm_fwd *v = fwd_of(n);
	if (!v)
		return;
	ports_release(n, v, &(struct cp_vm_listening){ .n = 0 });
	for (size_t i = 0; i < NET_MAX_CONNS; i++)
		if (v->c[i].used)
			conn_free(n, &v->c[i]);
	cp_writer_free(&v->w);
	free(v);
	n->relay_state = NULL;
}

static const struct net_relay_ops vm_relay_ops = {
	.accept = vm_fwd_accept,
	.event = vm_fwd_event,
	.forward_closed = vm_fwd_forward_closed,
	.free = vm_fwd_free,
};
