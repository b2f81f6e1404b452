/* A vm's DNS proxy, the guest's half (docs/architecture.md, "Egress by name"). The proxy is
 * the shim's (src/shim/egress.c, the container level's code): it decides which names are
 * answered, asks the upstream resolver and keeps what is open. The agent only carries: each
 * datagram a guest program sends to 127.0.0.53:53 goes to the shim as DNS_QUERY, and the
 * shim's EGRESS comes back as nf_tables set elements (vm_egress.c, over netlink: no nft in
 * the guest) and then the answer, sent from the same socket, so the first connect after a
 * lookup finds its address open. The guest kernel enforces, as it does the boot table. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent.h"
#include "util.h"
#include "vm_egress.h"

/* Datagrams relayed to the shim per second (as much again in a burst); the rest are dropped
 * here: the shim answers over its own bound with SERVFAIL, but a flood must not fill the
 * agent channel that commands' output shares. */
#define DNS_RELAY_PER_S 256

static int dns_fd = -1;
static uint32_t nl_seq = 1000;
static double tokens = DNS_RELAY_PER_S;
static uint64_t tokens_at;

bool vm_dns_wanted(void)
{
	char v[16];
	return agent_in_vm() && agent_cmdline_get("capsule.dns", v, sizeof(v)) && !strcmp(v, "proxy");
}

void vm_dns_init(int epfd)
{
	if (!vm_dns_wanted())
		return;
	/* Bound before any command runs, with neither SO_REUSEADDR nor SO_REUSEPORT: no command
	 * can bind the port (or the wildcard address's port 53) beside us. */
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(53) };
	inet_pton(AF_INET, VM_DNS_PROXY_ADDR, &sa.sin_addr);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		fprintf(stderr, "capsule-agent: the DNS proxy's socket: %s\n", strerror(errno));
		if (fd >= 0)
			close(fd);
		return;
	}
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = AGENT_ROLE_DNS };
	epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
	dns_fd = fd;
	tokens_at = now_ms();
}

void vm_dns_event(void)
{
	for (int burst = 0; burst < 64; burst++) {
		struct cp_dns_packet q;
		struct sockaddr_in from;
		socklen_t fl = sizeof(from);
		ssize_t k = recvfrom(dns_fd, q.data, sizeof(q.data), MSG_DONTWAIT | MSG_TRUNC, (struct sockaddr *)&from, &fl);
		if (k < 0)
			return;
		if (k == 0 || (size_t)k > sizeof(q.data) || fl != sizeof(from) || from.sin_family != AF_INET)
			continue;
		uint64_t now = now_ms();
		tokens += (double)(now - tokens_at) * DNS_RELAY_PER_S / 1000.0;
		tokens = tokens > DNS_RELAY_PER_S ? DNS_RELAY_PER_S : tokens;
		tokens_at = now;
		if (tokens < 1)
			continue;
		tokens -= 1;
		q.addr = from.sin_addr.s_addr;
		q.port = ntohs(from.sin_port);
		q.len = (size_t)k;
		if (cp_dns_query_encode(agent_writer(), 0, &q) == 0)
			agent_send_frame();
	}
}

static bool elem_in(const struct vm_egress_elem *list, size_t n, const struct vm_egress_elem *e)
{
	for (size_t i = 0; i < n; i++)
		if (list[i].addr == e->addr && list[i].port == e->port)
			return true;
	return false;
}

/* M's deletions and additions, in one transaction. What is to be deleted is deleted only if
 * it is still there (a deletion of what the kernel timed out would fail the transaction). An
 * address added that is in its set already is deleted first in the same transaction, since
 * Linux 6.1 keeps an element's old timeout when it is added again (6.10 and later take the
 * new one): a refresh, or an element the shim does not know of (a guest resumed from disk
 * keeps its sets, its new shim starts empty), gets the TTL the answer promises, with no
 * moment in between where the address is closed. */
static int elements_apply(const struct cp_egress *m, char *why, size_t whylen)
{
	struct vm_egress_elem del[2 * CP_MAX_EGRESS_ELEMS], add[CP_MAX_EGRESS_ELEMS];
	size_t ndel = 0;
	for (size_t i = 0; i < m->ndel + m->nadd; i++) {
		const struct cp_egress_elem *c = i < m->ndel ? &m->del[i] : &m->add[i - m->ndel];
		struct vm_egress_elem v = { .addr = c->addr, .port = c->port, .ttl_s = c->ttl_s };
		if (i >= m->ndel)
			add[i - m->ndel] = v;
		if (elem_in(del, ndel, &v))
			continue;
		int r = vm_egress_present(&v, why, whylen);
		if (r < 0)
			return r;
		if (r)
			del[ndel++] = v;
	}
	if (!ndel && !m->nadd)
		return 0;
	static uint8_t buf[VM_EGRESS_ELEMS_BATCH_MAX];
	size_t acks, len = vm_egress_elements(del, ndel, add, m->nadd, nl_seq, buf, sizeof(buf), &acks);
	if (!len)
		return snprintf(why, whylen, "%zu elements do not fit one batch", ndel + m->nadd), -E2BIG;
	int r = vm_egress_send(buf, len, acks, nl_seq, why, whylen);
	nl_seq += 8;
	return r;
}

/* The allowed networks become M's (chain cidrs, flushed and filled in one transaction). */
static int cidrs_replace(const struct cp_egress *m, char *why, size_t whylen)
{
	struct vm_egress_rule r[CP_MAX_EGRESS_CIDRS];
	for (size_t i = 0; i < m->ncidrs; i++)
		r[i] = (struct vm_egress_rule){ .addr = m->cidrs[i].addr, .prefix = m->cidrs[i].prefix,
						.port = m->cidrs[i].port };
	uint8_t *buf = malloc(VM_EGRESS_BATCH_MAX);
	if (!buf)
		return snprintf(why, whylen, "out of memory"), -ENOMEM;
	size_t acks, len = vm_egress_cidrs(r, m->ncidrs, nl_seq, buf, VM_EGRESS_BATCH_MAX, &acks);
	int rc = len ? vm_egress_send(buf, len, acks, nl_seq, why, whylen)
		     : (snprintf(why, whylen, "%zu networks do not fit one batch", m->ncidrs), -E2BIG);
	nl_seq += 512;
	free(buf);
	return rc;
}

void vm_dns_egress(const struct cp_header *h, const uint8_t *payload)
{
	static struct cp_egress m;
	char why[160];
	if (cp_egress_decode(payload, h->len, &m) < 0) {
		if (h->chan)
			agent_send_error(h->chan, EBADMSG, "malformed EGRESS");
		return;
	}
	int r = m.set_cidrs ? cidrs_replace(&m, why, sizeof(why)) : 0;
	if (r < 0 && h->chan) {
		agent_send_error(h->chan, -r, why);
		return;
	}
	/* Once more if an element the kernel had a moment ago timed out meanwhile. */
	if ((m.ndel || m.nadd) && elements_apply(&m, why, sizeof(why)) < 0 &&
	    (r = elements_apply(&m, why, sizeof(why))) < 0) {
		/* Not opened: no answer, and the client asks again. */
		fprintf(stderr, "capsule-agent: dns: changing %zu addresses: %s\n", m.ndel + m.nadd, why);
		if (h->chan)
			agent_send_error(h->chan, -r, why);
		return;
	}
	if (m.answer.len && dns_fd >= 0) {
		struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons((uint16_t)m.answer.port),
					  .sin_addr.s_addr = m.answer.addr };
		sendto(dns_fd, m.answer.data, m.answer.len, MSG_DONTWAIT, (struct sockaddr *)&to, sizeof(to));
	}
	if (!h->chan)
		return;
	/* Asked on a channel: done, with the quota's use (none without a quota object). */
	struct cp_egress_used u = { 0 };
	r = vm_egress_quota_used(&u.bytes, &u.used, why, sizeof(why));
	if (r < 0 && r != -ENOENT)
		agent_send_error(h->chan, -r, why);
	else if (cp_egress_used_encode(agent_writer(), h->chan, &u) == 0)
		agent_send_frame();
}
