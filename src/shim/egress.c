/* A sandbox's egress rules (docs/architecture.md, "Egress by name"): the nftables table, the
 * DNS proxy that opens addresses in it for the names allowed, the byte quota, and the NET_*
 * requests that change them on a running sandbox.
 *
 * The proxy runs here, in the shim's event loop, at both levels; its upstream socket is the
 * host's, so the sandbox never reaches the resolver itself, and nothing the sandbox runs
 * shares its memory or can signal it. A container's table is in its network namespace, which
 * `nft` changes, and the proxy's socket is bound there (127.0.0.53:53, made by the socket
 * factory). A vm's table is in its guest's kernel, made at boot by the agent: its queries
 * arrive from the agent as DNS_QUERY, and the elements to open and close and the answer go
 * back as EGRESS (src/agent/vm_dns.c), in that order. */
#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dns.h"
#include "json.h"
#include "net.h"
#include "parse.h"
#include "util.h"

/* The TTL the proxy gives and opens addresses for: at least this (a name's churn of nft runs
 * is bounded by it), at most that (an address the resolver stopped giving closes by then). */
#define EGRESS_TTL_MIN_S 2u
#define EGRESS_TTL_MAX_S 3600u
#define EGRESS_MAX_NAMES 128
#define EGRESS_MAX_CIDRS 128
/* Addresses the proxy holds open at once, all names together: one name answers at most
 * DNS_MAX_ADDRS, and a sandbox that asks for more than this gets SERVFAIL. */
#define EGRESS_MAX_OPEN 512
/* Queries waiting for the upstream at once; an older one is dropped for a new one. */
#define EGRESS_MAX_PENDING 64
#define EGRESS_UPSTREAM_TIMEOUT_MS 5000
/* Per second, with as much again in a burst: the upstream queries a sandbox may cause (the
 * rest get SERVFAIL), and the nft runs (each holds the shim's loop for a few ms). */
#define EGRESS_QUERIES_PER_S 100
#define EGRESS_NFT_RUNS_PER_S 20
#define KEY_SANDBOX 0
#define KEY_UPSTREAM 1

struct egress_open {
	char name[DNS_MAX_NAME + 1];
	uint16_t port;
	uint32_t addr;
	uint64_t expires_ms;
};

struct egress_pending {
	bool used;
	uint16_t up_id;
	uint64_t sent_ms;
	struct dns_query q;
	struct sockaddr_in from;
};

struct egress {
	bool filter; /* an allowlist: policy drop */
	struct egress_name names[EGRESS_MAX_NAMES];
	size_t nnames;
	struct egress_rule cidrs[EGRESS_MAX_CIDRS];
	size_t ncidrs;
	struct egress_open open[EGRESS_MAX_OPEN];
	size_t nopen;
	struct egress_pending pending[EGRESS_MAX_PENDING];
	int dns_fd, up_fd;
	struct sockaddr_in upstream;
	uint64_t quota;
	uint64_t queries, refused;
	/* Refusals are logged as a count, at most one line a second: a line per refused query
	 * would let the sandbox write the host's disk full. */
	uint64_t refused_logged, refused_log_ms;
	uint64_t dropped, dropped_logged, dropped_log_ms; /* answers' addresses left out, likewise */
	struct bucket { double tokens; uint64_t at_ms; } query_bucket, nft_bucket;
	/* A vm's: the agent changes the guest's sets; MSG stages the elements of the next EGRESS,
	 * which the answer (or a deny) sends. */
	bool vm;
	struct cp_egress msg, call_msg;
	struct cp_writer w;
	egress_send_fn send;
	egress_call_fn call;
	void *ctx;
};

/* A token bucket of RATE per second, holding at most RATE: false when empty. */
static bool bucket_take(struct bucket *b, unsigned rate)
{
	uint64_t now = now_ms();
	b->tokens += (double)(now - b->at_ms) * rate / 1000.0;
	if (b->tokens > rate)
		b->tokens = rate;
	b->at_ms = now;
	if (b->tokens < 1)
		return false;
	b->tokens -= 1;
	return true;
}

/* ---- nft --------------------------------------------------------------------------------- */

static void fmt_addr(uint32_t addr, char *buf)
{
	struct in_addr a = { .s_addr = addr };
	inet_ntop(AF_INET, &a, buf, INET_ADDRSTRLEN);
}

/* "add|delete element inet capsule_egress SET { ELEMENT }" for a CIDR entry. */
static void cidr_element(FILE *f, const char *verb, const struct egress_rule *e)
{
	char ip[INET_ADDRSTRLEN];
	fmt_addr(e->addr, ip);
	if (e->port)
		fprintf(f, "%s element inet capsule_egress cidr_port { %s/%u . %u }\n", verb, ip, e->prefix, e->port);
	else
		fprintf(f, "%s element inet capsule_egress cidr_any { %s/%u }\n", verb, ip, e->prefix);
}

static void open_element(FILE *f, const char *verb, uint32_t addr, uint16_t port, uint32_t ttl_s)
{
	char ip[INET_ADDRSTRLEN], timeout[32] = "";
	fmt_addr(addr, ip);
	if (ttl_s)
		snprintf(timeout, sizeof(timeout), " timeout %us", ttl_s);
	if (port)
		fprintf(f, "%s element inet capsule_egress dns_port { %s . %u%s }\n", verb, ip, port, timeout);
	else
		fprintf(f, "%s element inet capsule_egress dns_any { %s%s }\n", verb, ip, timeout);
}

/* A vm's staged elements, and ANSWER (NULL: none), to the agent as one EGRESS. */
static void vm_flush(struct egress *eg, const struct cp_dns_packet *answer)
{
	if (answer)
		eg->msg.answer = *answer;
	if ((eg->msg.nadd || eg->msg.ndel || eg->msg.answer.len) && cp_egress_encode(&eg->w, 0, &eg->msg) == 0)
		eg->send(eg->ctx, eg->w.buf, eg->w.len, NULL, 0);
	eg->msg.nadd = eg->msg.ndel = eg->msg.answer.len = 0;
}

/* An element staged for the vm's next EGRESS: false when the message is full. */
static bool vm_stage(struct egress *eg, bool add, uint32_t addr, uint16_t port, uint32_t ttl_s)
{
	size_t *n = add ? &eg->msg.nadd : &eg->msg.ndel;
	if (*n >= CP_MAX_EGRESS_ELEMS)
		return false;
	(add ? eg->msg.add : eg->msg.del)[(*n)++] = (struct cp_egress_elem){ .addr = addr, .port = port, .ttl_s = ttl_s };
	return true;
}

/* Run TEXT (LEN bytes, freed here) in one nft transaction. */
static int nft_batch(struct net *n, char *text, size_t len, capsule_error *err)
{
	int r = len ? net_nft(n, text, len, NULL, err) : 0;
	free(text);
	return r;
}

/* One element added to or deleted from a set: a CIDR entry's (C), else an opened address's. */
static int nft_element(struct net *n, const char *verb, const struct egress_rule *c, uint32_t addr, uint16_t port,
		       capsule_error *err)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	if (!f)
		return cap_err(err, ENOMEM, "egress rules");
	if (c)
		cidr_element(f, verb, c);
	else
		open_element(f, verb, addr, port, 0);
	fclose(f);
	return nft_batch(n, text, len, err);
}

/* The table. Loopback (the DNS proxy, port forwards) and answers to allowed connections
 * pass; then the sets: the allowed networks (intervals), and the addresses the proxy opened
 * (with timeouts: the kernel closes them when their TTL ends, whatever the shim does). A
 * quota comes first, so that once it is used nothing leaves, open connections included. */
static int table_load(struct net *n, struct egress *eg, capsule_error *err)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	if (!f)
		return cap_err(err, ENOMEM, "egress rules");
	fprintf(f, "table inet capsule_egress {\n"
		   "\tset cidr_any { type ipv4_addr; flags interval; }\n"
		   "\tset cidr_port { type ipv4_addr . inet_service; flags interval; }\n"
		   "\tset dns_any { type ipv4_addr; flags timeout; }\n"
		   "\tset dns_port { type ipv4_addr . inet_service; flags timeout; }\n");
	if (eg->quota)
		fprintf(f, "\tquota egress { over %llu bytes }\n", (unsigned long long)eg->quota);
	fprintf(f, "\tchain output {\n\t\ttype filter hook output priority 0; policy %s;\n",
		eg->filter ? "drop" : "accept");
	if (eg->quota)
		fprintf(f, "\t\toifname != \"lo\" meta l4proto tcp quota name \"egress\" reject with tcp reset\n"
			   "\t\toifname != \"lo\" meta l4proto != tcp quota name \"egress\" drop\n");
	if (eg->filter)
		fprintf(f, "\t\toifname \"lo\" accept\n\t\tct state established,related accept\n"
			   "\t\tip daddr @cidr_any accept\n"
			   "\t\tmeta l4proto { tcp, udp } ip daddr . th dport @cidr_port accept\n"
			   "\t\tip daddr @dns_any accept\n"
			   "\t\tmeta l4proto { tcp, udp } ip daddr . th dport @dns_port accept\n"
			   "\t\tmeta l4proto tcp reject with tcp reset\n\t\treject\n");
	fprintf(f, "\t}\n}\n");
	for (size_t i = 0; i < eg->ncidrs; i++)
		cidr_element(f, "add", &eg->cidrs[i]);
	fclose(f);
	return nft_batch(n, text, len, err);
}

/* ---- the proxy ----------------------------------------------------------------------------- */

static bool name_allowed(const struct egress *eg, const char *name)
{
	for (size_t i = 0; i < eg->nnames; i++)
		if (!strcmp(eg->names[i].name, name))
			return true;
	return false;
}

/* Addresses no allowed name may open unless --dns-private: the sandbox's own NAT and the
 * host's loopback behind it (10.0.2.0/24), private and shared networks, link-local (cloud
 * metadata), and never "this network", loopback (the sandbox's own), multicast and reserved. */
static bool addr_acceptable(const struct capsule_config *cfg, uint32_t addr)
{
	uint32_t a = ntohl(addr);
	uint8_t b0 = (uint8_t)(a >> 24), b1 = (uint8_t)(a >> 16), b2 = (uint8_t)(a >> 8);
	if (b0 == 0 || b0 == 127 || b0 >= 224)
		return false;
	/* 198.18.0.0/15 (benchmarking) and 192.0.0.0/24 (IETF protocol assignments) are used
	 * inside networks (test rigs, NAT64 and DS-Lite gateways), never on the internet. */
	bool internal = b0 == 10 || (b0 == 172 && (b1 & 0xf0) == 16) || (b0 == 192 && b1 == 168) ||
			(b0 == 169 && b1 == 254) || (b0 == 100 && (b1 & 0xc0) == 64) ||
			(b0 == 198 && (b1 & 0xfe) == 18) || (b0 == 192 && b1 == 0 && b2 == 0);
	return !internal || cfg->dns_private;
}

/* Whether ADDR is one of the host's own: an address of any interface of the shim's network
 * namespace, where the NAT (slirp4netns) connects from, so that a connection to it reaches the
 * host's services listening there (on 0.0.0.0 too), public addresses included. Read at each
 * answer, since interfaces come and go; when they cannot be read, every address counts as the
 * host's (nothing opens). */
static bool addr_is_host(const struct ifaddrs *ifa, bool ifa_read, uint32_t addr)
{
	if (!ifa_read)
		return true;
	for (const struct ifaddrs *i = ifa; i; i = i->ifa_next)
		if (i->ifa_addr && i->ifa_addr->sa_family == AF_INET &&
		    ((const struct sockaddr_in *)(const void *)i->ifa_addr)->sin_addr.s_addr == addr)
			return true;
	return false;
}

/* An answer's address left out, logged at most once a second with a count (the answers come
 * as fast as the sandbox asks, up to EGRESS_QUERIES_PER_S). */
static void dropped_log(struct net *n, struct egress *eg, const char *name, uint32_t addr, const char *why)
{
	eg->dropped++;
	uint64_t now = now_ms();
	if (eg->dropped_log_ms && now - eg->dropped_log_ms < 1000)
		return;
	char ip[INET_ADDRSTRLEN];
	fmt_addr(addr, ip);
	net_log(n, "dns: '%s': %s is %s: not opened, and left out of the answer (%llu such since the last such line)",
		name, ip, why, (unsigned long long)(eg->dropped - eg->dropped_logged));
	eg->dropped_logged = eg->dropped;
	eg->dropped_log_ms = now;
}

static void send_answer(struct egress *eg, const struct sockaddr_in *to, const struct dns_query *q, uint8_t rcode,
			const uint32_t *addrs, size_t naddrs, uint32_t ttl)
{
	struct cp_dns_packet out = { .addr = to->sin_addr.s_addr, .port = ntohs(to->sin_port) };
	int len = dns_answer_build(q, rcode, addrs, naddrs, ttl, out.data, sizeof(out.data));
	out.len = len > 0 ? (size_t)len : 0;
	if (eg->vm)
		vm_flush(eg, out.len ? &out : NULL);
	else if (out.len)
		sendto(eg->dns_fd, out.data, out.len, MSG_DONTWAIT, (const struct sockaddr *)to, sizeof(*to));
}

static struct egress_open *open_find(struct egress *eg, const char *name, uint16_t port, uint32_t addr)
{
	for (size_t i = 0; i < eg->nopen; i++)
		if (eg->open[i].addr == addr && eg->open[i].port == port && !strcmp(eg->open[i].name, name))
			return &eg->open[i];
	return NULL;
}

static void open_sweep(struct egress *eg, uint64_t now)
{
	for (size_t i = 0; i < eg->nopen;)
		if (eg->open[i].expires_ms <= now)
			eg->open[i] = eg->open[--eg->nopen];
		else
			i++;
}

/* Open ADDRS for every allowed entry of Q's name, for TTL seconds (the kernel closes them
 * then); *TTL comes back as what the answer may say: an address still open for less time
 * than a fresh TTL is not touched, and the answer promises only what is left of it. */
static int open_addrs(struct net *n, struct egress *eg, const char *name, const uint32_t *addrs, size_t naddrs,
		      uint32_t *ttl, capsule_error *err)
{
	uint64_t now = now_ms();
	open_sweep(eg, now);
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	if (!f)
		return cap_err(err, ENOMEM, "egress rules");
	uint32_t want = *ttl;
	size_t added = 0;
	struct egress_open *touched[EGRESS_MAX_OPEN];
	int r = 0;
	for (size_t i = 0; i < eg->nnames && r == 0; i++) {
		const struct egress_name *e = &eg->names[i];
		if (strcmp(e->name, name))
			continue;
		for (size_t k = 0; k < naddrs; k++) {
			struct egress_open *o = open_find(eg, name, e->port, addrs[k]);
			if (o && o->expires_ms >= now + want * 500ull) {
				uint32_t left = (uint32_t)((o->expires_ms - now) / 1000);
				if (left < *ttl)
					*ttl = left;
				continue;
			}
			if (!o && eg->nopen >= EGRESS_MAX_OPEN) {
				r = cap_err_plain(err, ENOSPC, "too many addresses open at once (%d)", EGRESS_MAX_OPEN);
				break;
			}
			/* Re-adding an element sets its timeout anew (Linux 6.10 and later); a vm's
			 * agent deletes it first (its guest runs 6.1). */
			if (eg->vm && !vm_stage(eg, true, addrs[k], e->port, want)) {
				r = cap_err_plain(err, ENOSPC, "too many addresses in one answer (%d)", CP_MAX_EGRESS_ELEMS);
				break;
			}
			open_element(f, "add", addrs[k], e->port, want);
			if (!o) {
				o = &eg->open[eg->nopen++];
				snprintf(o->name, sizeof(o->name), "%s", name);
				o->port = e->port;
				o->addr = addrs[k];
			}
			o->expires_ms = now + want * 1000ull;
			touched[added++] = o;
		}
	}
	fclose(f);
	if (r == 0 && added && !bucket_take(&eg->nft_bucket, EGRESS_NFT_RUNS_PER_S))
		r = cap_err_plain(err, EAGAIN, "more than %d changes of the rules a second", EGRESS_NFT_RUNS_PER_S);
	if (r == 0 && added && !eg->vm) {
		r = nft_batch(n, text, len, err);
		text = NULL;
	}
	free(text);
	/* A vm's go with the answer (send_answer), or not at all. */
	if (eg->vm && r < 0)
		eg->msg.nadd = eg->msg.ndel = 0;
	/* Not opened: forgotten (the sweep drops them), so that the next lookup tries again. */
	for (size_t i = 0; r < 0 && i < added; i++)
		touched[i]->expires_ms = 0;
	return r;
}

static void refused_log(struct net *n, struct egress *eg, const char *latest)
{
	uint64_t now = now_ms();
	if (eg->refused_log_ms && now - eg->refused_log_ms < 1000)
		return;
	net_log(n, "dns: %llu queries for names not allowed got NXDOMAIN since the last such line (the latest '%.64s')",
		(unsigned long long)(eg->refused - eg->refused_logged), latest);
	eg->refused_logged = eg->refused;
	eg->refused_log_ms = now;
}

/* One query of the sandbox's, K bytes in BUF from FROM. */
static void query_handle(struct net *n, struct egress *eg, const uint8_t *buf, ssize_t k, const struct sockaddr_in *from)
{
	eg->queries++;
	struct dns_query q;
	if (dns_query_parse(buf, (size_t)k, &q) < 0) {
		if (k >= 12) {
			struct dns_query bare = { .id = q.id };
			send_answer(eg, from, &bare, DNS_RCODE_FORMERR, NULL, 0, 0);
		}
		return;
	}
	/* The rate bound comes before anything else a query costs the host (a log line, a
	 * lookup upstream). */
	if (!bucket_take(&eg->query_bucket, EGRESS_QUERIES_PER_S)) {
		send_answer(eg, from, &q, DNS_RCODE_SERVFAIL, NULL, 0, 0);
		return;
	}
	if (q.qclass != DNS_CLASS_IN || !name_allowed(eg, q.name)) {
		eg->refused++;
		refused_log(n, eg, q.name);
		send_answer(eg, from, &q, DNS_RCODE_NXDOMAIN, NULL, 0, 0);
		return;
	}
	/* IPv4 only (the NAT has no IPv6): other types of an allowed name have no data, and
	 * nothing but A queries reaches the upstream. */
	if (q.qtype != DNS_TYPE_A) {
		send_answer(eg, from, &q, DNS_RCODE_NOERROR, NULL, 0, 0);
		return;
	}
	struct egress_pending *p = NULL, *oldest = &eg->pending[0];
	for (size_t i = 0; i < EGRESS_MAX_PENDING && !p; i++) {
		if (!eg->pending[i].used)
			p = &eg->pending[i];
		else if (eg->pending[i].sent_ms < oldest->sent_ms)
			oldest = &eg->pending[i];
	}
	if (!p)
		p = oldest;
	*p = (struct egress_pending){ .used = true, .sent_ms = now_ms(), .q = q, .from = *from };
	/* A fresh random id per upstream query: an off-path forger must guess it (and the
	 * port), and the sandbox's own id never reaches the upstream. */
	if (getrandom(&p->up_id, sizeof(p->up_id), GRND_NONBLOCK) != sizeof(p->up_id))
		p->up_id = (uint16_t)(now_ns() ^ (uint64_t)(p - eg->pending));
	uint8_t out[DNS_MAX_PACKET];
	int len = dns_query_build(&q, p->up_id, out, sizeof(out));
	if (len < 0 || sendto(eg->up_fd, out, (size_t)len, MSG_DONTWAIT, (struct sockaddr *)&eg->upstream,
			      sizeof(eg->upstream)) < 0) {
		p->used = false;
		send_answer(eg, from, &q, DNS_RCODE_SERVFAIL, NULL, 0, 0);
	}
}

static void sandbox_query(struct net *n, struct egress *eg)
{
	for (int burst = 0; burst < 64; burst++) {
		uint8_t buf[DNS_MAX_PACKET];
		struct sockaddr_in from;
		socklen_t fl = sizeof(from);
		ssize_t k = recvfrom(eg->dns_fd, buf, sizeof(buf), MSG_DONTWAIT, (struct sockaddr *)&from, &fl);
		if (k < 0)
			return;
		if (fl == sizeof(from) && from.sin_family == AF_INET)
			query_handle(n, eg, buf, k, &from);
	}
}

void egress_vm_query(struct net *n, const uint8_t *payload, size_t len)
{
	struct egress *eg = n->egress;
	struct cp_dns_packet q;
	if (!eg || !eg->vm || eg->up_fd < 0 || cp_dns_query_decode(payload, len, &q) < 0)
		return;
	struct sockaddr_in from = { .sin_family = AF_INET, .sin_addr.s_addr = q.addr, .sin_port = htons((uint16_t)q.port) };
	query_handle(n, eg, q.data, (ssize_t)q.len, &from);
}

static void upstream_answer(struct net *n, struct egress *eg)
{
	for (int burst = 0; burst < 64; burst++) {
		uint8_t buf[DNS_MAX_PACKET];
		struct sockaddr_in from;
		socklen_t fl = sizeof(from);
		ssize_t k = recvfrom(eg->up_fd, buf, sizeof(buf), MSG_DONTWAIT, (struct sockaddr *)&from, &fl);
		if (k < 0)
			return;
		if (k < 12 || fl != sizeof(from) || from.sin_addr.s_addr != eg->upstream.sin_addr.s_addr ||
		    from.sin_port != eg->upstream.sin_port)
			continue;
		uint16_t id = (uint16_t)(buf[0] << 8 | buf[1]);
		uint64_t now = now_ms();
		struct egress_pending *p = NULL;
		for (size_t i = 0; i < EGRESS_MAX_PENDING && !p; i++)
			if (eg->pending[i].used && eg->pending[i].up_id == id)
				p = &eg->pending[i];
		if (!p)
			continue;
		struct dns_answer a;
		if (dns_answer_parse(buf, (size_t)k, id, &p->q, &a) < 0)
			continue; /* not an answer to that question: wait for the real one */
		p->used = false;
		if (now - p->sent_ms > EGRESS_UPSTREAM_TIMEOUT_MS)
			continue;
		if (a.rcode != DNS_RCODE_NOERROR) {
			send_answer(eg, &p->from, &p->q, a.rcode == DNS_RCODE_NXDOMAIN ? DNS_RCODE_NXDOMAIN : DNS_RCODE_SERVFAIL,
				    NULL, 0, 0);
			continue;
		}
		uint32_t addrs[DNS_MAX_ADDRS];
		size_t naddrs = 0;
		struct ifaddrs *ifa = NULL;
		bool ifa_read = getifaddrs(&ifa) == 0;
		for (size_t i = 0; i < a.naddrs; i++) {
			if (!addr_acceptable(n->cfg, a.addrs[i]))
				dropped_log(n, eg, p->q.name, a.addrs[i], "internal (see --dns-private)");
			else if (addr_is_host(ifa, ifa_read, a.addrs[i]))
				dropped_log(n, eg, p->q.name, a.addrs[i], "an address of this host");
			else
				addrs[naddrs++] = a.addrs[i];
		}
		if (ifa_read)
			freeifaddrs(ifa);
		uint32_t ttl = a.ttl < EGRESS_TTL_MIN_S ? EGRESS_TTL_MIN_S : a.ttl > EGRESS_TTL_MAX_S ? EGRESS_TTL_MAX_S : a.ttl;
		capsule_error err = { 0 };
		if (naddrs && open_addrs(n, eg, p->q.name, addrs, naddrs, &ttl, &err) < 0) {
			net_log(n, "dns: '%s': %s", p->q.name, err.message);
			send_answer(eg, &p->from, &p->q, DNS_RCODE_SERVFAIL, NULL, 0, 0);
			continue;
		}
		send_answer(eg, &p->from, &p->q, DNS_RCODE_NOERROR, addrs, naddrs, ttl);
	}
}

void egress_event(struct net *n, uint64_t key)
{
	struct egress *eg = n->egress;
	if (!eg)
		return;
	if (key == KEY_SANDBOX)
		sandbox_query(n, eg);
	else
		upstream_answer(n, eg);
}

/* The upstream: --dns-server, else the first IPv4 nameserver of the host's resolv.conf. */
static int upstream_find(const struct capsule_config *cfg, struct sockaddr_in *out, capsule_error *err)
{
	if (cfg->dns_server[0])
		return dns_server_parse(cfg->dns_server, out) < 0
			       ? cap_err_plain(err, EINVAL, "invalid dns_server '%s'", cfg->dns_server) : 0;
	FILE *f = fopen("/etc/resolv.conf", "re");
	char line[256];
	while (f && fgets(line, sizeof(line), f)) {
		char ip[64];
		if (sscanf(line, " nameserver %63s", ip) == 1 && dns_server_parse(ip, out) == 0) {
			fclose(f);
			return 0;
		}
	}
	if (f)
		fclose(f);
	return cap_err_plain(err, ENOENT, "--allow-host names need a DNS server: the host's /etc/resolv.conf names no "
			     "IPv4 nameserver (give one with --dns-server)");
}

/* The proxy's sockets: the upstream's on the host and, for a container, the sandbox's inside
 * its namespace (a vm's queries come from its agent). */
static int proxy_start(struct net *n, struct egress *eg, capsule_error *err)
{
	int r = upstream_find(n->cfg, &eg->upstream, err);
	if (r < 0)
		return r;
	if (!eg->vm && (r = net_sandbox_dns_socket(n, &eg->dns_fd, err)) < 0)
		return cap_err_wrap(err, r, "the DNS proxy's socket in the sandbox");
	eg->up_fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (eg->up_fd < 0)
		return cap_err(err, errno, "the DNS proxy's upstream socket");
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = NET_KEY_BASE | NET_KEY_DNS | KEY_SANDBOX };
	if (eg->dns_fd >= 0)
		epoll_ctl(n->epfd, EPOLL_CTL_ADD, eg->dns_fd, &ev);
	ev.data.u64 = NET_KEY_BASE | NET_KEY_DNS | KEY_UPSTREAM;
	epoll_ctl(n->epfd, EPOLL_CTL_ADD, eg->up_fd, &ev);
	return 0;
}

/* N's egress state as its config gives it, in *OUT (a vm's with VM set), or nothing (*OUT
 * NULL, 0) without rules or a quota. */
static int egress_new(struct net *n, bool vm, struct egress **out, capsule_error *err)
{
	const struct capsule_config *cfg = n->cfg;
	*out = NULL;
	if (!cfg->nallow && !cfg->nallow_names && !cfg->egress_quota_bytes)
		return 0;
	struct egress *eg = calloc(1, sizeof(*eg));
	if (!eg)
		return cap_err(err, ENOMEM, "egress rules");
	eg->vm = vm;
	cp_writer_init(&eg->w);
	eg->dns_fd = eg->up_fd = -1;
	eg->query_bucket = (struct bucket){ EGRESS_QUERIES_PER_S, now_ms() };
	eg->nft_bucket = (struct bucket){ EGRESS_NFT_RUNS_PER_S, now_ms() };
	n->egress = *out = eg;
	eg->filter = cfg->nallow || cfg->nallow_names;
	eg->quota = cfg->egress_quota_bytes;
	for (size_t i = 0; i < cfg->nallow && i < EGRESS_MAX_CIDRS; i++)
		eg->cidrs[eg->ncidrs++] = cfg->allow[i];
	for (size_t i = 0; i < cfg->nallow_names && i < EGRESS_MAX_NAMES; i++)
		eg->names[eg->nnames++] = cfg->allow_names[i];
	return 0;
}

/* The proxy runs for every allowlist (the sandbox's resolv.conf names it), since names can be
 * allowed later; without a name yet, a host with no resolver only logs it. */
static int egress_proxy_begin(struct net *n, struct egress *eg, capsule_error *err)
{
	int r;
	if (eg->filter && (r = proxy_start(n, eg, err)) < 0) {
		if (n->cfg->nallow_names)
			return r;
		net_log(n, "dns: no proxy: %s", err->message);
	}
	net_log(n, "egress rules %s (%zu networks, %zu names%s)", eg->vm ? "in the guest" : "loaded", eg->ncidrs,
		eg->nnames, eg->quota ? ", a quota" : "");
	return 0;
}

int egress_start(struct net *n, capsule_error *err)
{
	struct egress *eg;
	int r = egress_new(n, false, &eg, err);
	if (r < 0 || !eg)
		return r;
	if ((r = table_load(n, eg, err)) < 0)
		return r;
	return egress_proxy_begin(n, eg, err);
}

/* A vm's allowed networks, EG's list, replace the guest's (chain cidrs), answered. */
static int vm_cidrs_sync(struct egress *eg, capsule_error *err)
{
	struct cp_egress *m = &eg->call_msg;
	*m = (struct cp_egress){ .set_cidrs = true, .ncidrs = eg->ncidrs };
	for (size_t i = 0; i < eg->ncidrs; i++)
		m->cidrs[i] = (struct cp_egress_cidr){ .addr = eg->cidrs[i].addr, .prefix = eg->cidrs[i].prefix,
						       .port = eg->cidrs[i].port };
	uint64_t used;
	return eg->call(eg->ctx, m, &used, err);
}

int egress_vm_start(struct net *n, egress_send_fn send, egress_call_fn call, void *ctx, bool restored,
		    capsule_error *err)
{
	struct egress *eg;
	int r = egress_new(n, true, &eg, err);
	if (r < 0 || !eg)
		return r;
	eg->send = send;
	eg->call = call;
	eg->ctx = ctx;
	/* A guest resumed from disk kept its table, networks changed by `net` included: they
	 * become the config's again, as this shim knows them. */
	capsule_error e = { 0 };
	if (restored && eg->filter && vm_cidrs_sync(eg, &e) < 0)
		net_log(n, "egress: the resumed guest's networks: %s", e.message);
	return egress_proxy_begin(n, eg, err);
}

void egress_free(struct net *n)
{
	struct egress *eg = n->egress;
	if (!eg)
		return;
	for (int i = 0; i < 2; i++) {
		int fd = i ? eg->up_fd : eg->dns_fd;
		if (fd >= 0) {
			epoll_ctl(n->epfd, EPOLL_CTL_DEL, fd, NULL);
			close(fd);
		}
	}
	cp_writer_free(&eg->w);
	free(eg);
	n->egress = NULL;
}

/* ---- NET_ALLOW, NET_DENY, NET_LS ----------------------------------------------------------- */

/* RULE as a CIDR entry (its head is an IPv4 address) into *C (1), or as a name into *NM (0). */
static int rule_parse(const char *rule, struct egress_rule *c, struct egress_name *nm, capsule_error *err)
{
	char head[256];
	size_t hl = strcspn(rule, "/:");
	if (hl < sizeof(head)) {
		memcpy(head, rule, hl);
		head[hl] = '\0';
		struct in_addr a;
		if (inet_pton(AF_INET, head, &a) == 1) {
			struct capsule_config *scratch = calloc(1, sizeof(*scratch));
			if (!scratch)
				return cap_err(err, ENOMEM, "net allow");
			int r = capsule_config_add_allow_cidr(scratch, rule, err);
			if (r == 0)
				*c = scratch->allow[0];
			free(scratch);
			return r < 0 ? r : 1;
		}
	}
	const char *colon = strrchr(rule, ':');
	size_t n = colon ? (size_t)(colon - rule) : strlen(rule);
	uint64_t port = 0;
	if (n >= sizeof(nm->name) || (colon && parse_uint(colon + 1, "port", 1, 65535, &port, NULL) < 0))
		return cap_err_plain(err, EINVAL, "invalid rule '%s': expected NAME[:PORT] or CIDR[:PORT]", rule);
	memset(nm, 0, sizeof(*nm));
	for (size_t i = 0; i < n; i++)
		nm->name[i] = (char)(rule[i] >= 'A' && rule[i] <= 'Z' ? rule[i] + 32 : rule[i]);
	if (!dns_name_valid(nm->name))
		return cap_err_plain(err, EINVAL, "invalid rule '%s': '%s' is not a DNS name", rule, nm->name);
	nm->port = (uint16_t)port;
	return 0;
}

static int egress_of(struct net *n, struct egress **out, capsule_error *err)
{
	if (!n->egress || !n->egress->filter)
		return cap_err_plain(err, EINVAL, "this sandbox has no egress allowlist (create it with --allow-host or "
				     "--allow-cidr and --network full)");
	*out = n->egress;
	return 0;
}

/* RULE, parsed, and where it stands among the sandbox's entries. */
struct rule_ref {
	struct egress *eg;
	bool cidr;
	struct egress_rule c;
	struct egress_name nm;
	bool found;
	size_t index;
};

static int rule_find(struct net *n, const char *rule, struct rule_ref *ref, capsule_error *err)
{
	*ref = (struct rule_ref){ 0 };
	int r = egress_of(n, &ref->eg, err);
	if (r < 0 || (r = rule_parse(rule, &ref->c, &ref->nm, err)) < 0)
		return r;
	ref->cidr = r == 1;
	const struct egress *eg = ref->eg;
	for (size_t i = 0; i < (ref->cidr ? eg->ncidrs : eg->nnames) && !ref->found; i++) {
		const struct egress_rule *c = &eg->cidrs[i];
		const struct egress_name *nm = &eg->names[i];
		ref->found = ref->cidr ? c->addr == ref->c.addr && c->prefix == ref->c.prefix && c->port == ref->c.port
				       : nm->port == ref->nm.port && !strcmp(nm->name, ref->nm.name);
		ref->index = i;
	}
	return 0;
}

int egress_allow(struct net *n, const char *rule, capsule_error *err)
{
	struct rule_ref ref;
	int r = rule_find(n, rule, &ref, err);
	if (r < 0)
		return r;
	struct egress *eg = ref.eg;
	if (ref.found)
		return cap_err_plain(err, EEXIST, "'%s' is already allowed", rule);
	if (ref.cidr) {
		if (eg->ncidrs >= EGRESS_MAX_CIDRS)
			return cap_err_plain(err, E2BIG, "too many allowed networks (at most %d)", EGRESS_MAX_CIDRS);
		if (eg->vm) {
			eg->cidrs[eg->ncidrs++] = ref.c;
			if ((r = vm_cidrs_sync(eg, err)) < 0) {
				eg->ncidrs--;
				return r;
			}
		} else {
			if ((r = nft_element(n, "add", &ref.c, 0, 0, err)) < 0)
				return cap_err_plain(err, -r, "net allow '%s': nft refused it (does it overlap an allowed network?)",
						     rule);
			eg->cidrs[eg->ncidrs++] = ref.c;
		}
	} else {
		if (eg->nnames >= EGRESS_MAX_NAMES)
			return cap_err_plain(err, E2BIG, "too many allowed names (at most %d)", EGRESS_MAX_NAMES);
		if (eg->up_fd < 0 && (r = proxy_start(n, eg, err)) < 0)
			return r;
		eg->names[eg->nnames++] = ref.nm;
	}
	net_log(n, "egress: '%s' allowed", rule);
	return 0;
}

int egress_deny(struct net *n, const char *rule, capsule_error *err)
{
	struct rule_ref ref;
	int r = rule_find(n, rule, &ref, err);
	if (r < 0)
		return r;
	struct egress *eg = ref.eg;
	const struct egress_name nm = ref.nm;
	if (!ref.found)
		return cap_err_plain(err, ENOENT, "'%s' is not allowed (see capsule net ls)", rule);
	if (ref.cidr) {
		if (!eg->vm && (r = nft_element(n, "delete", &ref.c, 0, 0, err)) < 0)
			return r;
		const struct egress_rule gone = eg->cidrs[ref.index];
		eg->cidrs[ref.index] = eg->cidrs[--eg->ncidrs];
		if (eg->vm && (r = vm_cidrs_sync(eg, err)) < 0) {
			eg->cidrs[eg->ncidrs++] = eg->cidrs[ref.index];
			eg->cidrs[ref.index] = gone;
			return r;
		}
	} else {
		eg->names[ref.index] = eg->names[--eg->nnames];
		/* Close what the proxy opened for it, unless another name holds the same element.
		 * One nft run each: an element the kernel timed out meanwhile fails alone. */
		uint64_t now = now_ms();
		open_sweep(eg, now);
		for (size_t k = 0; k < eg->nopen;) {
			struct egress_open *o = &eg->open[k];
			if (o->port != nm.port || strcmp(o->name, nm.name)) {
				k++;
				continue;
			}
			bool shared = false;
			for (size_t j = 0; j < eg->nopen; j++)
				shared |= j != k && eg->open[j].addr == o->addr && eg->open[j].port == o->port;
			if (!shared && !eg->vm)
				nft_element(n, "delete", NULL, o->addr, o->port, NULL);
			if (!shared && eg->vm && !vm_stage(eg, false, o->addr, o->port, 0)) {
				vm_flush(eg, NULL);
				vm_stage(eg, false, o->addr, o->port, 0);
			}
			*o = eg->open[--eg->nopen];
		}
		if (eg->vm)
			vm_flush(eg, NULL);
	}
	net_log(n, "egress: '%s' denied", rule);
	return 0;
}

/* The quota's use, from `nft -j list quota`: {"quota": {..., "used": N, ...}}. */
static int quota_used(struct net *n, uint64_t *used, capsule_error *err)
{
	struct egress *eg = n->egress;
	if (eg->vm) {
		eg->call_msg = (struct cp_egress){ .ndel = 0 };
		return eg->call(eg->ctx, &eg->call_msg, used, err);
	}
	_cleanup_free_ char *out = NULL;
	int r = net_nft(n, "list quota inet capsule_egress egress", 0, &out, err);
	if (r < 0)
		return r;
	const char *u = out ? strstr(out, "\"used\":") : NULL;
	if (!u)
		return cap_err_plain(err, EPROTO, "nft did not say how much of the quota is used");
	*used = strtoull(u + 7, NULL, 10);
	return 0;
}

int egress_json(struct net *n, char **out, capsule_error *err)
{
	struct egress *eg = n->egress;
	struct json_writer j;
	json_init(&j, true);
	json_object_begin(&j);
	json_key(&j, "names");
	json_array_begin(&j);
	uint64_t now = now_ms();
	for (size_t i = 0; eg && i < eg->nnames; i++) {
		json_object_begin(&j);
		json_kv_string(&j, "name", eg->names[i].name);
		json_kv_uint(&j, "port", eg->names[i].port);
		json_key(&j, "addresses");
		json_array_begin(&j);
		for (size_t k = 0; k < eg->nopen; k++) {
			const struct egress_open *o = &eg->open[k];
			if (o->port != eg->names[i].port || strcmp(o->name, eg->names[i].name) || o->expires_ms <= now)
				continue;
			char ip[INET_ADDRSTRLEN];
			fmt_addr(o->addr, ip);
			json_object_begin(&j);
			json_kv_string(&j, "address", ip);
			json_kv_uint(&j, "expires_in_ms", o->expires_ms - now);
			json_object_end(&j);
		}
		json_array_end(&j);
		json_object_end(&j);
	}
	json_array_end(&j);
	json_key(&j, "cidrs");
	json_array_begin(&j);
	for (size_t i = 0; eg && i < eg->ncidrs; i++) {
		char rule[64];
		egress_rule_format(&eg->cidrs[i], rule, sizeof(rule));
		json_object_begin(&j);
		json_kv_string(&j, "rule", rule);
		if (eg->cidrs[i].host[0])
			json_kv_string(&j, "host", eg->cidrs[i].host);
		json_object_end(&j);
	}
	json_array_end(&j);
	json_key(&j, "quota");
	uint64_t used = 0;
	if (eg && eg->quota && quota_used(n, &used, NULL) == 0) {
		json_object_begin(&j);
		json_kv_uint(&j, "bytes", eg->quota);
		json_kv_uint(&j, "used", used);
		json_object_end(&j);
	} else {
		json_null(&j);
	}
	if (eg && eg->up_fd >= 0) {
		json_kv_uint(&j, "dns_queries", eg->queries);
		json_kv_uint(&j, "dns_refused", eg->refused);
	}
	json_object_end(&j);
	int e = 0;
	*out = json_steal(&j, &e);
	if (!*out)
		return cap_err(err, e ? -e : ENOMEM, "listing egress rules");
	return 0;
}
