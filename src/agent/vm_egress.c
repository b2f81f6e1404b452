/* The egress allowlist inside a vm: capsule.allow= from the kernel command line, loaded as
 * nf_tables rules over netlink by the agent itself (vm_egress.h says why here and when).
 *
 * The table means what the container level's `nft -f -` text means (src/shim/net.c,
 * allowlist_load); `nft --debug=netlink` on the host shows that text compiled to the same
 * expressions as below, but for two spellings: `meta l4proto { tcp, udp }` (an anonymous
 * set) is written as one rule for tcp and one for udp, and an address prefix is always a
 * 4-byte load, a mask and a compare, where nft shortens byte-aligned prefixes. No libnftnl,
 * no nft in the initramfs: the agent stays one static binary and the guest runs no dynamic
 * loader before the first command. */
#include <arpa/inet.h>
#include <errno.h>
#include <endian.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_conntrack_common.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util.h"
#include "vm_egress.h"

#define EGRESS_TABLE "capsule_egress"
#define EGRESS_CHAIN "output"
/* The allowed networks: a chain of their own, jumped to from output, so that a running vm's
 * list is replaced in one transaction (flushed and filled again) without rule handles. */
#define EGRESS_CIDRS_CHAIN "cidrs"
#define EGRESS_ACK_WAIT_MS 5000

/* ---- parsing --------------------------------------------------------------------------- */

/* Decimal digits only, no sign, no leading zero (but "0"), at most MAX: the number into *V. */
static bool parse_decimal(const char *s, size_t len, unsigned long max, unsigned long *v)
{
	if (len == 0 || len > 5 || (len > 1 && s[0] == '0'))
		return false;
	unsigned long x = 0;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		x = x * 10 + (unsigned long)(s[i] - '0');
	}
	if (x > max)
		return false;
	*v = x;
	return true;
}

static int parse_one(const char *s, size_t len, struct vm_egress_rule *r, char *why, size_t whylen)
{
	const char *slash = memchr(s, '/', len);
	const char *colon = memchr(s, ':', len);
	if (!slash || (colon && colon < slash))
		return snprintf(why, whylen, "entry '%.*s' is not ADDR/PREFIX[:PORT]", (int)len, s), -EINVAL;
	char ip[INET_ADDRSTRLEN];
	size_t iplen = (size_t)(slash - s);
	struct in_addr a;
	if (iplen == 0 || iplen >= sizeof(ip))
		return snprintf(why, whylen, "entry '%.*s': not an IPv4 address", (int)len, s), -EINVAL;
	memcpy(ip, s, iplen);
	ip[iplen] = '\0';
	if (inet_pton(AF_INET, ip, &a) != 1)
		return snprintf(why, whylen, "entry '%.*s': not an IPv4 address", (int)len, s), -EINVAL;
	const char *pend = colon ? colon : s + len;
	unsigned long prefix, port = 0;
	if (!parse_decimal(slash + 1, (size_t)(pend - slash - 1), 32, &prefix))
		return snprintf(why, whylen, "entry '%.*s': prefix is not 0-32", (int)len, s), -EINVAL;
	if (colon && (!parse_decimal(colon + 1, (size_t)(s + len - colon - 1), 65535, &port) || port == 0))
		return snprintf(why, whylen, "entry '%.*s': port is not 1-65535", (int)len, s), -EINVAL;
	uint32_t mask = prefix ? htonl(~0u << (32 - prefix)) : 0;
	/* The shim masks every address: host bits mean the text is not the shim's. */
	if (a.s_addr & ~mask)
		return snprintf(why, whylen, "entry '%.*s': host bits set past the prefix", (int)len, s), -EINVAL;
	*r = (struct vm_egress_rule){ .addr = a.s_addr, .prefix = (uint8_t)prefix, .port = (uint16_t)port };
	return 0;
}

int vm_egress_parse(const char *text, struct vm_egress_rule *rules, size_t max, size_t *n, char *why, size_t whylen)
{
	*n = 0;
	if (!*text)
		return snprintf(why, whylen, "the list is empty"), -EINVAL;
	for (const char *s = text;;) {
		const char *end = strchr(s, ',');
		size_t len = end ? (size_t)(end - s) : strlen(s);
		if (len == 0)
			return snprintf(why, whylen, "an empty entry"), -EINVAL;
		if (*n >= max)
			return snprintf(why, whylen, "more than %zu entries", max), -EINVAL;
		int r = parse_one(s, len, &rules[*n], why, whylen);
		if (r < 0)
			return r;
		(*n)++;
		if (!end)
			return 0;
		s = end + 1;
	}
}

/* ---- the netlink batch ----------------------------------------------------------------- */

/* A message or attribute that does not fit sets FULL; the caller then returns 0. */
struct nlbuf {
	uint8_t *buf;
	size_t size, len;
	bool full;
	uint32_t seq;
	size_t acks;
};

static void *nl_put(struct nlbuf *b, size_t len)
{
	size_t aligned = NLMSG_ALIGN(len);
	if (b->full || aligned > b->size - b->len) {
		b->full = true;
		return NULL;
	}
	void *p = b->buf + b->len;
	memset(p, 0, aligned);
	b->len += aligned;
	return p;
}

/* A message of TYPE for FAMILY; returns its offset, for msg_end to fill in the length. */
static size_t msg_begin(struct nlbuf *b, uint16_t type, uint16_t flags, uint8_t family, uint16_t res_id)
{
	size_t at = b->len;
	struct nlmsghdr *h = nl_put(b, NLMSG_HDRLEN);
	struct nfgenmsg *g = nl_put(b, sizeof(struct nfgenmsg));
	if (!h || !g)
		return at;
	h->nlmsg_type = type;
	h->nlmsg_flags = NLM_F_REQUEST | flags;
	h->nlmsg_seq = b->seq++;
	g->nfgen_family = family;
	g->version = NFNETLINK_V0;
	g->res_id = htons(res_id);
	if (flags & NLM_F_ACK)
		b->acks++;
	return at;
}

static void msg_end(struct nlbuf *b, size_t at)
{
	if (!b->full)
		((struct nlmsghdr *)(b->buf + at))->nlmsg_len = (uint32_t)(b->len - at);
}

static void attr(struct nlbuf *b, uint16_t type, const void *data, size_t len)
{
	struct nlattr *a = nl_put(b, NLA_HDRLEN + len);
	if (!a)
		return;
	a->nla_type = type;
	a->nla_len = (uint16_t)(NLA_HDRLEN + len);
	memcpy((uint8_t *)a + NLA_HDRLEN, data, len);
}

static void attr_str(struct nlbuf *b, uint16_t type, const char *s)
{
	attr(b, type, s, strlen(s) + 1);
}

static void attr_be32(struct nlbuf *b, uint16_t type, uint32_t v)
{
	uint32_t be = htonl(v);
	attr(b, type, &be, sizeof(be));
}

static size_t nest_begin(struct nlbuf *b, uint16_t type)
{
	size_t at = b->len;
	struct nlattr *a = nl_put(b, NLA_HDRLEN);
	if (a)
		a->nla_type = type | NLA_F_NESTED;
	return at;
}

static void nest_end(struct nlbuf *b, size_t at)
{
	if (!b->full)
		((struct nlattr *)(b->buf + at))->nla_len = (uint16_t)(b->len - at);
}

/* ---- expressions: each one list element {NAME, DATA} ---- */

static size_t expr_begin(struct nlbuf *b, const char *name, size_t *data)
{
	size_t elem = nest_begin(b, NFTA_LIST_ELEM);
	attr_str(b, NFTA_EXPR_NAME, name);
	*data = nest_begin(b, NFTA_EXPR_DATA);
	return elem;
}

static void expr_end(struct nlbuf *b, size_t elem, size_t data)
{
	nest_end(b, data);
	nest_end(b, elem);
}

static void data_value(struct nlbuf *b, uint16_t type, const void *v, size_t len)
{
	size_t n = nest_begin(b, type);
	attr(b, NFTA_DATA_VALUE, v, len);
	nest_end(b, n);
}

static void expr_meta(struct nlbuf *b, uint32_t key)
{
	size_t d, e = expr_begin(b, "meta", &d);
	attr_be32(b, NFTA_META_DREG, NFT_REG_1);
	attr_be32(b, NFTA_META_KEY, key);
	expr_end(b, e, d);
}

static void expr_cmp(struct nlbuf *b, uint32_t op, const void *v, size_t len)
{
	size_t d, e = expr_begin(b, "cmp", &d);
	attr_be32(b, NFTA_CMP_SREG, NFT_REG_1);
	attr_be32(b, NFTA_CMP_OP, op);
	data_value(b, NFTA_CMP_DATA, v, len);
	expr_end(b, e, d);
}

static void expr_bitwise(struct nlbuf *b, const void *mask, size_t len)
{
	static const uint8_t zero[16];
	size_t d, e = expr_begin(b, "bitwise", &d);
	attr_be32(b, NFTA_BITWISE_SREG, NFT_REG_1);
	attr_be32(b, NFTA_BITWISE_DREG, NFT_REG_1);
	attr_be32(b, NFTA_BITWISE_LEN, (uint32_t)len);
	data_value(b, NFTA_BITWISE_MASK, mask, len);
	data_value(b, NFTA_BITWISE_XOR, zero, len);
	expr_end(b, e, d);
}

static void expr_payload_to(struct nlbuf *b, uint32_t base, uint32_t offset, uint32_t len, uint32_t dreg)
{
	size_t d, e = expr_begin(b, "payload", &d);
	attr_be32(b, NFTA_PAYLOAD_DREG, dreg);
	attr_be32(b, NFTA_PAYLOAD_BASE, base);
	attr_be32(b, NFTA_PAYLOAD_OFFSET, offset);
	attr_be32(b, NFTA_PAYLOAD_LEN, len);
	expr_end(b, e, d);
}

static void expr_payload(struct nlbuf *b, uint32_t base, uint32_t offset, uint32_t len)
{
	expr_payload_to(b, base, offset, len, NFT_REG_1);
}

static void attr_be64(struct nlbuf *b, uint16_t type, uint64_t v)
{
	uint64_t be = htobe64(v);
	attr(b, type, &be, sizeof(be));
}

/* lookup reg 1 set NAME (made in this batch as ID, or before it) */
static void expr_lookup(struct nlbuf *b, const char *set, uint32_t id)
{
	size_t d, e = expr_begin(b, "lookup", &d);
	attr_str(b, NFTA_LOOKUP_SET, set);
	attr_be32(b, NFTA_LOOKUP_SET_ID, id);
	attr_be32(b, NFTA_LOOKUP_SREG, NFT_REG_1);
	expr_end(b, e, d);
}

/* quota name "egress" */
static void expr_objref_quota(struct nlbuf *b)
{
	size_t d, e = expr_begin(b, "objref", &d);
	attr_be32(b, NFTA_OBJREF_IMM_TYPE, NFT_OBJECT_QUOTA);
	attr_str(b, NFTA_OBJREF_IMM_NAME, VM_EGRESS_QUOTA);
	expr_end(b, e, d);
}

static void expr_ct_state(struct nlbuf *b)
{
	size_t d, e = expr_begin(b, "ct", &d);
	attr_be32(b, NFTA_CT_DREG, NFT_REG_1);
	attr_be32(b, NFTA_CT_KEY, NFT_CT_STATE);
	expr_end(b, e, d);
}

static void expr_verdict(struct nlbuf *b, uint32_t code)
{
	size_t d, e = expr_begin(b, "immediate", &d);
	attr_be32(b, NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT);
	size_t data = nest_begin(b, NFTA_IMMEDIATE_DATA);
	size_t verdict = nest_begin(b, NFTA_DATA_VERDICT);
	attr_be32(b, NFTA_VERDICT_CODE, code);
	nest_end(b, verdict);
	nest_end(b, data);
	expr_end(b, e, d);
}

static void expr_accept(struct nlbuf *b)
{
	expr_verdict(b, NF_ACCEPT);
}

static void expr_jump(struct nlbuf *b, const char *chain)
{
	size_t d, e = expr_begin(b, "immediate", &d);
	attr_be32(b, NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT);
	size_t data = nest_begin(b, NFTA_IMMEDIATE_DATA);
	size_t verdict = nest_begin(b, NFTA_DATA_VERDICT);
	attr_be32(b, NFTA_VERDICT_CODE, (uint32_t)NFT_JUMP);
	attr_str(b, NFTA_VERDICT_CHAIN, chain);
	nest_end(b, verdict);
	nest_end(b, data);
	expr_end(b, e, d);
}

static void expr_reject(struct nlbuf *b, uint32_t type, uint8_t code)
{
	size_t d, e = expr_begin(b, "reject", &d);
	attr_be32(b, NFTA_REJECT_TYPE, type);
	attr(b, NFTA_REJECT_ICMP_CODE, &code, 1);
	expr_end(b, e, d);
}

/* ---- messages ---- */

static size_t rule_begin_in(struct nlbuf *b, const char *chain, size_t *exprs)
{
	size_t m = msg_begin(b, NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND | NLM_F_ACK,
			     NFPROTO_INET, 0);
	attr_str(b, NFTA_RULE_TABLE, EGRESS_TABLE);
	attr_str(b, NFTA_RULE_CHAIN, chain);
	*exprs = nest_begin(b, NFTA_RULE_EXPRESSIONS);
	return m;
}

static size_t rule_begin(struct nlbuf *b, size_t *exprs)
{
	return rule_begin_in(b, EGRESS_CHAIN, exprs);
}

static void rule_end(struct nlbuf *b, size_t m, size_t exprs)
{
	nest_end(b, exprs);
	msg_end(b, m);
}

/* A rule's start: [meta l4proto L4PROTO] meta nfproto ipv4. An inet table sees IPv6 too:
 * `ip daddr` holds only for IPv4 packets. */
static size_t rule_begin_ipv4(struct nlbuf *b, const char *chain, uint8_t l4proto, size_t *exprs)
{
	size_t m = rule_begin_in(b, chain, exprs);
	if (l4proto)
		expr_meta(b, NFT_META_L4PROTO), expr_cmp(b, NFT_CMP_EQ, &l4proto, 1);
	uint8_t ipv4 = NFPROTO_IPV4;
	expr_meta(b, NFT_META_NFPROTO);
	expr_cmp(b, NFT_CMP_EQ, &ipv4, 1);
	return m;
}

/* [meta l4proto L4PROTO] ip daddr ADDR/PREFIX [th dport PORT] accept */
static void rule_entry(struct nlbuf *b, const struct vm_egress_rule *r, uint8_t l4proto)
{
	size_t x, m = rule_begin_ipv4(b, EGRESS_CIDRS_CHAIN, l4proto, &x);
	if (r->prefix) {
		uint32_t mask = htonl(~0u << (32 - r->prefix));
		expr_payload(b, NFT_PAYLOAD_NETWORK_HEADER, 16, 4);
		if (r->prefix < 32)
			expr_bitwise(b, &mask, 4);
		expr_cmp(b, NFT_CMP_EQ, &r->addr, 4);
	}
	if (r->port) {
		uint16_t port = htons(r->port);
		expr_payload(b, NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2);
		expr_cmp(b, NFT_CMP_EQ, &port, 2);
	}
	expr_accept(b);
	rule_end(b, m, x);
}

/* A set of the proxy's: NAME (with ID in this batch) holds ipv4_addr, or with PORT
 * ipv4_addr . inet_service (the port's two bytes padded to a register's four), each element
 * with a timeout of its own. */
static void set_new(struct nlbuf *b, const char *name, uint32_t id, bool port)
{
	size_t m = msg_begin(b, NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWSET, NLM_F_CREATE | NLM_F_ACK, NFPROTO_INET, 0);
	attr_str(b, NFTA_SET_TABLE, EGRESS_TABLE);
	attr_str(b, NFTA_SET_NAME, name);
	attr_be32(b, NFTA_SET_FLAGS, NFT_SET_TIMEOUT);
	/* nft's type numbers (ipv4_addr 7, inet_service 13, concatenated 6 bits apart): only
	 * `nft list` reads them. */
	attr_be32(b, NFTA_SET_KEY_TYPE, port ? 7u << 6 | 13u : 7u);
	attr_be32(b, NFTA_SET_KEY_LEN, port ? 8 : 4);
	attr_be32(b, NFTA_SET_ID, id);
	msg_end(b, m);
}

/* [meta l4proto L4PROTO] meta nfproto ipv4 ip daddr [. th dport] @SET accept */
static void rule_lookup(struct nlbuf *b, const char *set, uint32_t id, uint8_t l4proto)
{
	size_t x, m = rule_begin_ipv4(b, EGRESS_CHAIN, l4proto, &x);
	expr_payload(b, NFT_PAYLOAD_NETWORK_HEADER, 16, 4);
	if (l4proto)
		expr_payload_to(b, NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, NFT_REG32_01);
	expr_lookup(b, set, id);
	expr_accept(b);
	rule_end(b, m, x);
}

/* oifname != "lo" meta l4proto [!=] tcp quota name "egress" reject with tcp reset | drop */
static void rule_quota(struct nlbuf *b, bool tcp)
{
	size_t x, m = rule_begin(b, &x);
	char lo[IFNAMSIZ] = "lo";
	uint8_t proto = IPPROTO_TCP;
	expr_meta(b, NFT_META_OIFNAME);
	expr_cmp(b, NFT_CMP_NEQ, lo, sizeof(lo));
	expr_meta(b, NFT_META_L4PROTO);
	expr_cmp(b, tcp ? NFT_CMP_EQ : NFT_CMP_NEQ, &proto, 1);
	expr_objref_quota(b);
	if (tcp)
		expr_reject(b, NFT_REJECT_TCP_RST, 0);
	else
		expr_verdict(b, NF_DROP);
	rule_end(b, m, x);
}

/* A rule in chain cidrs for each of the N entries R (two, tcp and udp, with a port). */
static void rules_entries(struct nlbuf *b, const struct vm_egress_rule *r, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (r[i].port) {
			rule_entry(b, &r[i], IPPROTO_TCP);
			rule_entry(b, &r[i], IPPROTO_UDP);
		} else {
			rule_entry(b, &r[i], 0);
		}
	}
}

size_t vm_egress_batch(const struct vm_egress_table *t, uint32_t seq, uint8_t *buf, size_t size, size_t *acks)
{
	struct nlbuf b = { .buf = buf, .size = size, .seq = seq };
	bool filter = t->n || t->dns;
	msg_end(&b, msg_begin(&b, NFNL_MSG_BATCH_BEGIN, 0, AF_UNSPEC, NFNL_SUBSYS_NFTABLES));

	size_t m = msg_begin(&b, NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWTABLE, NLM_F_CREATE | NLM_F_ACK, NFPROTO_INET, 0);
	attr_str(&b, NFTA_TABLE_NAME, EGRESS_TABLE);
	attr_be32(&b, NFTA_TABLE_FLAGS, 0);
	msg_end(&b, m);

	if (t->dns) {
		set_new(&b, VM_EGRESS_SET_ANY, 1, false);
		set_new(&b, VM_EGRESS_SET_PORT, 2, true);
	}
	/* quota egress { over BYTES bytes } */
	if (t->quota) {
		m = msg_begin(&b, NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWOBJ, NLM_F_CREATE | NLM_F_ACK, NFPROTO_INET, 0);
		attr_str(&b, NFTA_OBJ_TABLE, EGRESS_TABLE);
		attr_str(&b, NFTA_OBJ_NAME, VM_EGRESS_QUOTA);
		attr_be32(&b, NFTA_OBJ_TYPE, NFT_OBJECT_QUOTA);
		size_t data = nest_begin(&b, NFTA_OBJ_DATA);
		attr_be64(&b, NFTA_QUOTA_BYTES, t->quota);
		attr_be32(&b, NFTA_QUOTA_FLAGS, NFT_QUOTA_F_INV);
		nest_end(&b, data);
		msg_end(&b, m);
	}

	/* type filter hook output priority 0; policy drop (accept with only a quota) */
	m = msg_begin(&b, NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWCHAIN, NLM_F_CREATE | NLM_F_ACK, NFPROTO_INET, 0);
	attr_str(&b, NFTA_CHAIN_TABLE, EGRESS_TABLE);
	attr_str(&b, NFTA_CHAIN_NAME, EGRESS_CHAIN);
	size_t hook = nest_begin(&b, NFTA_CHAIN_HOOK);
	attr_be32(&b, NFTA_HOOK_HOOKNUM, NF_INET_LOCAL_OUT);
	attr_be32(&b, NFTA_HOOK_PRIORITY, 0);
	nest_end(&b, hook);
	attr_be32(&b, NFTA_CHAIN_POLICY, filter ? NF_DROP : NF_ACCEPT);
	attr_str(&b, NFTA_CHAIN_TYPE, "filter");
	msg_end(&b, m);

	if (filter) {
		m = msg_begin(&b, NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWCHAIN, NLM_F_CREATE | NLM_F_ACK, NFPROTO_INET, 0);
		attr_str(&b, NFTA_CHAIN_TABLE, EGRESS_TABLE);
		attr_str(&b, NFTA_CHAIN_NAME, EGRESS_CIDRS_CHAIN);
		msg_end(&b, m);
	}

	/* The quota first, as the container's: once it is used, open connections stop too. */
	if (t->quota) {
		rule_quota(&b, true);
		rule_quota(&b, false);
	}
	if (!filter)
		goto end;

	/* oifname "lo" accept: port forwards arrive on the guest's loopback. */
	size_t x;
	m = rule_begin(&b, &x);
	char lo[IFNAMSIZ] = "lo";
	expr_meta(&b, NFT_META_OIFNAME);
	expr_cmp(&b, NFT_CMP_EQ, lo, sizeof(lo));
	expr_accept(&b);
	rule_end(&b, m, x);

	/* ct state established,related accept: the answers to what was let out. */
	m = rule_begin(&b, &x);
	uint32_t states = NF_CT_STATE_BIT(IP_CT_ESTABLISHED) | NF_CT_STATE_BIT(IP_CT_RELATED), zero = 0;
	expr_ct_state(&b);
	expr_bitwise(&b, &states, sizeof(states));
	expr_cmp(&b, NFT_CMP_NEQ, &zero, sizeof(zero));
	expr_accept(&b);
	rule_end(&b, m, x);

	/* jump cidrs: the allowed networks (their chain, made above) */
	m = rule_begin(&b, &x);
	expr_jump(&b, EGRESS_CIDRS_CHAIN);
	rule_end(&b, m, x);
	rules_entries(&b, t->rules, t->n);
	if (t->dns) {
		rule_lookup(&b, VM_EGRESS_SET_ANY, 1, 0);
		rule_lookup(&b, VM_EGRESS_SET_PORT, 2, IPPROTO_TCP);
		rule_lookup(&b, VM_EGRESS_SET_PORT, 2, IPPROTO_UDP);
	}

	/* Refused at once, not dropped: a denied connect fails instead of waiting out its
	 * timeout. meta l4proto tcp reject with tcp reset; reject (ICMP port unreachable). */
	uint8_t tcp = IPPROTO_TCP;
	m = rule_begin(&b, &x);
	expr_meta(&b, NFT_META_L4PROTO);
	expr_cmp(&b, NFT_CMP_EQ, &tcp, 1);
	expr_reject(&b, NFT_REJECT_TCP_RST, 0);
	rule_end(&b, m, x);
	m = rule_begin(&b, &x);
	expr_reject(&b, NFT_REJECT_ICMPX_UNREACH, NFT_REJECT_ICMPX_PORT_UNREACH);
	rule_end(&b, m, x);

end:
	msg_end(&b, msg_begin(&b, NFNL_MSG_BATCH_END, 0, AF_UNSPEC, NFNL_SUBSYS_NFTABLES));
	if (b.full)
		return 0;
	*acks = b.acks;
	return b.len;
}

size_t vm_egress_cidrs(const struct vm_egress_rule *r, size_t n, uint32_t seq, uint8_t *buf, size_t size,
		       size_t *acks)
{
	struct nlbuf b = { .buf = buf, .size = size, .seq = seq };
	msg_end(&b, msg_begin(&b, NFNL_MSG_BATCH_BEGIN, 0, AF_UNSPEC, NFNL_SUBSYS_NFTABLES));
	/* DELRULE with a chain and no handle: every rule of the chain. */
	size_t m = msg_begin(&b, NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_DELRULE, NLM_F_ACK, NFPROTO_INET, 0);
	attr_str(&b, NFTA_RULE_TABLE, EGRESS_TABLE);
	attr_str(&b, NFTA_RULE_CHAIN, EGRESS_CIDRS_CHAIN);
	msg_end(&b, m);
	rules_entries(&b, r, n);
	msg_end(&b, msg_begin(&b, NFNL_MSG_BATCH_END, 0, AF_UNSPEC, NFNL_SUBSYS_NFTABLES));
	if (b.full)
		return 0;
	*acks = b.acks;
	return b.len;
}

/* A message of TYPE (NEWSETELEM, DELSETELEM, GETSETELEM) with the N elements E of one set
 * (those with a port, WITH_PORT, or those without); nothing when none is of that set. */
static void elem_msg(struct nlbuf *b, uint16_t type, const struct vm_egress_elem *e, size_t n, int with_port)
{
	size_t count = 0;
	for (size_t i = 0; i < n; i++)
		count += (e[i].port != 0) == with_port;
	if (!count)
		return;
	bool add = type == NFT_MSG_NEWSETELEM;
	size_t m = msg_begin(b, NFNL_SUBSYS_NFTABLES << 8 | type, (add ? NLM_F_CREATE : 0) | NLM_F_ACK, NFPROTO_INET, 0);
	attr_str(b, NFTA_SET_ELEM_LIST_TABLE, EGRESS_TABLE);
	attr_str(b, NFTA_SET_ELEM_LIST_SET, with_port ? VM_EGRESS_SET_PORT : VM_EGRESS_SET_ANY);
	size_t list = nest_begin(b, NFTA_SET_ELEM_LIST_ELEMENTS);
	for (size_t i = 0; i < n; i++) {
		if ((e[i].port != 0) != with_port)
			continue;
		uint8_t key[8] = { 0 };
		memcpy(key, &e[i].addr, 4);
		uint16_t port = htons(e[i].port);
		memcpy(key + 4, &port, 2);
		size_t elem = nest_begin(b, NFTA_LIST_ELEM);
		data_value(b, NFTA_SET_ELEM_KEY, key, with_port ? 8 : 4);
		if (add)
			attr_be64(b, NFTA_SET_ELEM_TIMEOUT, (uint64_t)e[i].ttl_s * 1000);
		nest_end(b, elem);
	}
	nest_end(b, list);
	msg_end(b, m);
}

size_t vm_egress_elements(const struct vm_egress_elem *del, size_t ndel, const struct vm_egress_elem *add, size_t nadd,
			  uint32_t seq, uint8_t *buf, size_t size, size_t *acks)
{
	struct nlbuf b = { .buf = buf, .size = size, .seq = seq };
	msg_end(&b, msg_begin(&b, NFNL_MSG_BATCH_BEGIN, 0, AF_UNSPEC, NFNL_SUBSYS_NFTABLES));
	/* One message per set and kind: the elements of each go in one list. */
	for (int with_port = 0; with_port < 2; with_port++)
		elem_msg(&b, NFT_MSG_DELSETELEM, del, ndel, with_port);
	for (int with_port = 0; with_port < 2; with_port++)
		elem_msg(&b, NFT_MSG_NEWSETELEM, add, nadd, with_port);
	msg_end(&b, msg_begin(&b, NFNL_MSG_BATCH_END, 0, AF_UNSPEC, NFNL_SUBSYS_NFTABLES));
	if (b.full)
		return 0;
	*acks = b.acks;
	return b.len;
}

int vm_egress_present(const struct vm_egress_elem *e, char *why, size_t whylen)
{
	uint8_t buf[256];
	struct nlbuf b = { .buf = buf, .size = sizeof(buf), .seq = 1 };
	elem_msg(&b, NFT_MSG_GETSETELEM, e, 1, e->port != 0);
	if (b.full)
		return snprintf(why, whylen, "an element does not fit its request"), -E2BIG;
	/* Not a batch: a GET is answered by the element and an ack, or ENOENT, and changes
	 * nothing (a failed batch would cost the kernel's abort, an RCU grace period). */
	int r = vm_egress_send(buf, b.len, 1, 1, why, whylen);
	return r == -ENOENT ? 0 : r < 0 ? r : 1;
}


/* ---- sending ----------------------------------------------------------------------------- */

/* What the message with sequence number SEQ (counted from FIRST, the batch's begin) made. */
static void describe_seq(uint32_t seq, uint32_t first, char *out, size_t size)
{
	uint32_t i = seq - first;
	if (i == 1)
		snprintf(out, size, "the table");
	else
		snprintf(out, size, "message %u of the batch", i);
}

int vm_egress_send(const uint8_t *buf, size_t len, size_t acks, uint32_t seq, char *why, size_t whylen)
{
	_cleanup_close_ int s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
	if (s < 0)
		return snprintf(why, whylen, "nf_tables netlink socket: %s", strerror(errno)), -errno;
	/* Errors need only say which message: not the message itself echoed back. */
	int one = 1;
	setsockopt(s, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof(one));
	/* Room for every ack at once (a running vm's 128 networks are 257 of them, each an skb of
	 * its own: past the default receive buffer the kernel drops them, ENOBUFS), as nft makes
	 * room; we hold CAP_NET_ADMIN, which the forced size asks for. */
	int rcvbuf = 4 << 20;
	if (setsockopt(s, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) < 0)
		setsockopt(s, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
	if (sendto(s, buf, len, 0, (struct sockaddr *)&kernel, sizeof(kernel)) != (ssize_t)len)
		return snprintf(why, whylen, "sending the nf_tables batch: %s", strerror(errno)), -EIO;
	uint8_t rx[8192];
	uint64_t deadline = now_ms() + EGRESS_ACK_WAIT_MS;
	for (size_t got = 0; got < acks;) {
		uint64_t now = now_ms();
		struct pollfd p = { .fd = s, .events = POLLIN };
		if (now >= deadline || poll(&p, 1, (int)(deadline - now)) <= 0)
			return snprintf(why, whylen, "the kernel answered %zu of %zu nf_tables messages", got, acks), -ETIMEDOUT;
		ssize_t n = recv(s, rx, sizeof(rx), 0);
		if (n < 0)
			return snprintf(why, whylen, "reading nf_tables answers: %s", strerror(errno)), -EIO;
		for (struct nlmsghdr *h = (struct nlmsghdr *)rx; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
			if (h->nlmsg_type != NLMSG_ERROR)
				continue;
			if (h->nlmsg_len < NLMSG_LENGTH(sizeof(struct nlmsgerr)))
				return snprintf(why, whylen, "a short nf_tables answer"), -EIO;
			const struct nlmsgerr *e = NLMSG_DATA(h);
			if (e->error) {
				char what[32];
				describe_seq(e->msg.nlmsg_seq, seq, what, sizeof(what));
				return snprintf(why, whylen, "the kernel refused %s: %s", what, strerror(-e->error)), e->error;
			}
			got++;
		}
	}
	return 0;
}

int vm_egress_quota_used(uint64_t *bytes, uint64_t *used, char *why, size_t whylen)
{
	_cleanup_close_ int s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
	if (s < 0)
		return snprintf(why, whylen, "nf_tables netlink socket: %s", strerror(errno)), -errno;
	uint8_t req[256];
	struct nlbuf b = { .buf = req, .size = sizeof(req), .seq = 1 };
	size_t m = msg_begin(&b, NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETOBJ, NLM_F_ACK, NFPROTO_INET, 0);
	attr_str(&b, NFTA_OBJ_TABLE, EGRESS_TABLE);
	attr_str(&b, NFTA_OBJ_NAME, VM_EGRESS_QUOTA);
	attr_be32(&b, NFTA_OBJ_TYPE, NFT_OBJECT_QUOTA);
	msg_end(&b, m);
	struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
	if (b.full || sendto(s, req, b.len, 0, (struct sockaddr *)&kernel, sizeof(kernel)) != (ssize_t)b.len)
		return snprintf(why, whylen, "asking for the quota: %s", strerror(errno)), -EIO;
	uint8_t rx[4096];
	bool found = false;
	for (;;) {
		struct pollfd p = { .fd = s, .events = POLLIN };
		if (poll(&p, 1, EGRESS_ACK_WAIT_MS) <= 0)
			return snprintf(why, whylen, "the kernel did not answer for the quota"), -ETIMEDOUT;
		ssize_t n = recv(s, rx, sizeof(rx), 0);
		if (n < 0)
			return snprintf(why, whylen, "reading the quota: %s", strerror(errno)), -EIO;
		for (struct nlmsghdr *h = (struct nlmsghdr *)rx; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
			if (h->nlmsg_type == NLMSG_ERROR) {
				const struct nlmsgerr *e = NLMSG_DATA(h);
				if (h->nlmsg_len < NLMSG_LENGTH(sizeof(*e)))
					return snprintf(why, whylen, "a short nf_tables answer"), -EIO;
				if (e->error)
					return snprintf(why, whylen, "the quota: %s", strerror(-e->error)), e->error;
				if (!found)
					return snprintf(why, whylen, "the kernel sent no quota"), -EIO;
				return 0;
			}
			if (h->nlmsg_type != (NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWOBJ))
				continue;
			/* NFTA_OBJ_DATA's NFTA_QUOTA_BYTES and NFTA_QUOTA_CONSUMED, big endian. */
			size_t off = NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(struct nfgenmsg));
			for (; off + NLA_HDRLEN <= h->nlmsg_len;) {
				const struct nlattr *a = (const void *)((const uint8_t *)h + off);
				if (a->nla_len < NLA_HDRLEN || off + a->nla_len > h->nlmsg_len)
					break;
				if ((a->nla_type & NLA_TYPE_MASK) == NFTA_OBJ_DATA) {
					for (size_t in = NLA_HDRLEN; in + NLA_HDRLEN <= a->nla_len;) {
						const struct nlattr *q = (const void *)((const uint8_t *)a + in);
						if (q->nla_len < NLA_HDRLEN || in + q->nla_len > a->nla_len)
							break;
						uint64_t v;
						if (q->nla_len == NLA_HDRLEN + 8) {
							memcpy(&v, (const uint8_t *)q + NLA_HDRLEN, 8);
							if ((q->nla_type & NLA_TYPE_MASK) == NFTA_QUOTA_BYTES)
								*bytes = be64toh(v);
							else if ((q->nla_type & NLA_TYPE_MASK) == NFTA_QUOTA_CONSUMED)
								*used = be64toh(v), found = true;
						}
						in += NLA_ALIGN(q->nla_len);
					}
				}
				off += NLA_ALIGN(a->nla_len);
			}
		}
	}
}
