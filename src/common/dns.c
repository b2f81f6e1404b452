/* The DNS decoder and encoder of the egress proxy (dns.h): RFC 1035 section 4, the parts a stub
 * resolver's A query and a recursive resolver's answer use. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dns.h"

#define HDR 12
#define FLAG_QR 0x8000u
#define FLAG_AA 0x0400u
#define FLAG_TC 0x0200u
#define FLAG_RD 0x0100u
#define FLAG_RA 0x0080u
#define OPCODE(f) (((f) >> 11) & 0xfu)
/* Records looked at in one answer: a real answer has a handful. */
#define MAX_RECORDS 64
/* Compression pointers followed in one name: each must point before the last, so a name
 * cannot loop, and this bounds the work on a long chain. */
#define MAX_JUMPS 32

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
	put16(p, (uint16_t)(v >> 16));
	put16(p + 2, (uint16_t)v);
}

static bool label_char(uint8_t c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

/* The name at *OFF of the message P (N bytes) in lower-case text into OUT (DNS_MAX_NAME + 1);
 * *OFF moves past it (past the first pointer when it is compressed). POINTERS: whether
 * compression may be used (not in a query's question). A label with a byte that is not a
 * host name's, a name too long, a pointer forwards or out of bounds: -EBADMSG. */
static int read_name(const uint8_t *p, size_t n, size_t *off, bool pointers, char *out)
{
	size_t pos = *off, len = 0, end = 0, floor = *off;
	int jumps = 0;
	for (;;) {
		if (pos >= n)
			return -EBADMSG;
		uint8_t l = p[pos];
		if ((l & 0xc0) == 0xc0) {
			if (!pointers || pos + 1 >= n || ++jumps > MAX_JUMPS)
				return -EBADMSG;
			size_t target = (size_t)(l & 0x3f) << 8 | p[pos + 1];
			/* Strictly before every label read so far: no loop is possible. */
			if (target >= floor)
				return -EBADMSG;
			if (!end)
				end = pos + 2;
			pos = floor = target;
			continue;
		}
		if (l & 0xc0)
			return -EBADMSG; /* the 0x40 and 0x80 label types are obsolete or unused */
		if (l == 0) {
			pos++;
			break;
		}
		if (pos + 1 + l > n || len + (len ? 1 : 0) + l > DNS_MAX_NAME)
			return -EBADMSG;
		if (len)
			out[len++] = '.';
		for (size_t i = 0; i < l; i++) {
			uint8_t c = p[pos + 1 + i];
			if (!label_char(c))
				return -EBADMSG;
			out[len++] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
		}
		pos += 1 + (size_t)l;
	}
	out[len] = '\0';
	*off = end ? end : pos;
	return 0;
}

/* NAME in wire form at OUT (room CAP); its length or -ENOSPC. NAME is one read_name made or
 * one dns_name_valid accepted. */
static int write_name(const char *name, uint8_t *out, size_t cap)
{
	size_t o = 0;
	const char *s = name;
	while (*s) {
		const char *dot = strchr(s, '.');
		size_t l = dot ? (size_t)(dot - s) : strlen(s);
		if (l == 0 || l > 63 || o + 1 + l >= cap)
			return -ENOSPC;
		out[o++] = (uint8_t)l;
		memcpy(out + o, s, l);
		o += l;
		s += l + (dot ? 1 : 0);
	}
	if (o >= cap)
		return -ENOSPC;
	out[o++] = 0;
	return (int)o;
}

bool dns_name_valid(const char *name)
{
	size_t len = strlen(name), label = 0, labels = 0;
	if (len == 0 || len > DNS_MAX_NAME)
		return false;
	for (size_t i = 0; i <= len; i++) {
		if (i == len || name[i] == '.') {
			if (label == 0 || label > 63)
				return false;
			labels++;
			label = 0;
		} else if (!label_char((uint8_t)name[i])) {
			return false;
		} else {
			label++;
		}
	}
	return labels >= 2;
}

int dns_query_parse(const uint8_t *p, size_t n, struct dns_query *q)
{
	memset(q, 0, sizeof(*q));
	if (n < HDR)
		return -EBADMSG;
	q->id = get16(p);
	uint16_t flags = get16(p + 2);
	q->rd = flags & FLAG_RD;
	/* One question, nothing else but an EDNS OPT record (which we do not need to read). */
	if ((flags & FLAG_QR) || OPCODE(flags) != 0 || get16(p + 4) != 1 || get16(p + 6) || get16(p + 8) ||
	    get16(p + 10) > 1)
		return -EBADMSG;
	size_t off = HDR;
	char name[DNS_MAX_NAME + 1];
	if (read_name(p, n, &off, false, name) < 0 || off + 4 > n)
		return -EBADMSG;
	memcpy(q->name, name, sizeof(name));
	q->qtype = get16(p + off);
	q->qclass = get16(p + off + 2);
	if (q->qclass == 0)
		return -EBADMSG; /* 0 stands for "no question" in dns_answer_build */
	return 0;
}

static int build_header(uint8_t *out, size_t cap, uint16_t id, uint16_t flags, uint16_t qd, uint16_t an)
{
	if (cap < HDR)
		return -ENOSPC;
	put16(out, id);
	put16(out + 2, flags);
	put16(out + 4, qd);
	put16(out + 6, an);
	put16(out + 8, 0);
	put16(out + 10, 0);
	return HDR;
}

static int build_question(const struct dns_query *q, uint16_t qtype, uint8_t *out, size_t cap)
{
	int k = write_name(q->name, out, cap);
	if (k < 0 || (size_t)k + 4 > cap)
		return -ENOSPC;
	put16(out + k, qtype);
	put16(out + k + 2, DNS_CLASS_IN);
	return k + 4;
}

int dns_query_build(const struct dns_query *q, uint16_t id, uint8_t *out, size_t cap)
{
	int h = build_header(out, cap, id, FLAG_RD, 1, 0);
	if (h < 0)
		return h;
	int k = build_question(q, DNS_TYPE_A, out + h, cap - (size_t)h);
	return k < 0 ? k : h + k;
}

int dns_answer_build(const struct dns_query *q, uint8_t rcode, const uint32_t *addrs, size_t naddrs, uint32_t ttl,
		     uint8_t *out, size_t cap)
{
	bool question = q->qclass != 0;
	if (rcode != DNS_RCODE_NOERROR || !question)
		naddrs = 0;
	uint16_t flags = FLAG_QR | FLAG_RA | (q->rd ? FLAG_RD : 0) | (rcode & 0xfu);
	int h = build_header(out, cap, q->id, flags, question ? 1 : 0, (uint16_t)naddrs);
	if (h < 0 || !question)
		return h;
	size_t o = (size_t)h;
	int k = build_question(q, q->qtype, out + o, cap - o);
	if (k < 0)
		return k;
	o += (size_t)k;
	for (size_t i = 0; i < naddrs; i++) {
		if (o + 16 > cap)
			return -ENOSPC;
		put16(out + o, 0xc000 | HDR); /* the question's name */
		put16(out + o + 2, DNS_TYPE_A);
		put16(out + o + 4, DNS_CLASS_IN);
		put32(out + o + 6, ttl);
		put16(out + o + 10, 4);
		memcpy(out + o + 12, &addrs[i], 4);
		o += 16;
	}
	return (int)o;
}

static bool in_chain(char chain[][DNS_MAX_NAME + 1], size_t nchain, const char *name)
{
	for (size_t i = 0; i < nchain; i++)
		if (!strcmp(chain[i], name))
			return true;
	return false;
}

int dns_answer_parse(const uint8_t *p, size_t n, uint16_t id, const struct dns_query *q, struct dns_answer *a)
{
	memset(a, 0, sizeof(*a));
	if (n < HDR || get16(p) != id)
		return -EBADMSG;
	uint16_t flags = get16(p + 2);
	if (!(flags & FLAG_QR) || OPCODE(flags) != 0 || get16(p + 4) != 1)
		return -EBADMSG;
	a->rcode = flags & 0xfu;
	a->truncated = flags & FLAG_TC;
	size_t off = HDR;
	char name[DNS_MAX_NAME + 1];
	if (read_name(p, n, &off, true, name) < 0 || off + 4 > n || strcmp(name, q->name) ||
	    get16(p + off) != DNS_TYPE_A || get16(p + off + 2) != DNS_CLASS_IN)
		return -EBADMSG;
	off += 4;
	/* The names that lead to the question's: A records of any other name are ignored (an
	 * upstream must not open addresses for names the sandbox did not ask for). */
	char chain[DNS_MAX_CHAIN][DNS_MAX_NAME + 1];
	size_t nchain = 1;
	memcpy(chain[0], q->name, strlen(q->name) + 1);
	uint32_t ttl = UINT32_MAX;
	unsigned count = get16(p + 6);
	for (unsigned i = 0; i < count && i < MAX_RECORDS; i++) {
		if (read_name(p, n, &off, true, name) < 0 || off + 10 > n)
			return -EBADMSG;
		uint16_t type = get16(p + off), klass = get16(p + off + 2);
		uint32_t rttl = get32(p + off + 4);
		size_t rdlen = get16(p + off + 8);
		off += 10;
		if (off + rdlen > n)
			return -EBADMSG;
		/* RFC 2181 8: a TTL with the top bit set is 0. */
		if (rttl & 0x80000000u)
			rttl = 0;
		if (klass == DNS_CLASS_IN && in_chain(chain, nchain, name)) {
			if (type == DNS_TYPE_CNAME) {
				size_t roff = off;
				char target[DNS_MAX_NAME + 1];
				if (read_name(p, off + rdlen, &roff, true, target) < 0 || roff != off + rdlen)
					return -EBADMSG;
				if (nchain < DNS_MAX_CHAIN && !in_chain(chain, nchain, target)) {
					memcpy(chain[nchain++], target, strlen(target) + 1);
					if (rttl < ttl)
						ttl = rttl;
				}
			} else if (type == DNS_TYPE_A && rdlen == 4 && a->naddrs < DNS_MAX_ADDRS) {
				uint32_t addr;
				memcpy(&addr, p + off, 4);
				bool dup = false;
				for (size_t k = 0; k < a->naddrs; k++)
					dup |= a->addrs[k] == addr;
				if (!dup)
					a->addrs[a->naddrs++] = addr;
				if (rttl < ttl)
					ttl = rttl;
			}
		}
		off += rdlen;
	}
	a->ttl = a->naddrs ? ttl : 0;
	return 0;
}

int dns_server_parse(const char *text, struct sockaddr_in *out)
{
	char ip[INET_ADDRSTRLEN];
	const char *colon = strchr(text, ':');
	size_t n = colon ? (size_t)(colon - text) : strlen(text);
	unsigned long port = 53;
	if (n == 0 || n >= sizeof(ip))
		return -EINVAL;
	memcpy(ip, text, n);
	ip[n] = '\0';
	if (colon) {
		char *end;
		if (!colon[1] || colon[1] == '-' || colon[1] == '+')
			return -EINVAL;
		port = strtoul(colon + 1, &end, 10);
		if (*end || port < 1 || port > 65535)
			return -EINVAL;
	}
	*out = (struct sockaddr_in){ .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	return inet_pton(AF_INET, ip, &out->sin_addr) == 1 ? 0 : -EINVAL;
}
