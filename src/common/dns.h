/* The DNS messages of the egress proxy (docs/architecture.md, "Egress by name"): a query from
 * the sandbox, an answer from the upstream resolver, and the answer we build for the sandbox.
 * Both inputs are hostile (a sandbox's command writes the query, anyone on the path can forge
 * the answer): every read is bounds-checked, compression pointers only point backwards and are
 * followed a bounded number of times, and counts are capped. The proxy never passes upstream
 * bytes to the sandbox; it builds a fresh answer from the A records it accepted. */
#ifndef CAPSULE_DNS_H
#define CAPSULE_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DNS_MAX_NAME 253     /* text form, without the final dot */
#define DNS_MAX_PACKET 1232  /* what we read and write over UDP (the EDNS "DNS flag day" size) */
#define DNS_MAX_ADDRS 16     /* A records taken from one answer */
#define DNS_MAX_CHAIN 8      /* CNAME steps followed from the question's name */

enum { DNS_TYPE_A = 1, DNS_TYPE_CNAME = 5, DNS_TYPE_AAAA = 28, DNS_CLASS_IN = 1 };
enum { DNS_RCODE_NOERROR = 0, DNS_RCODE_FORMERR = 1, DNS_RCODE_SERVFAIL = 2, DNS_RCODE_NXDOMAIN = 3,
       DNS_RCODE_REFUSED = 5 };

struct dns_query {
	uint16_t id;
	bool rd;                      /* recursion desired, echoed */
	char name[DNS_MAX_NAME + 1];  /* lower case, no final dot; "" is the root */
	uint16_t qtype, qclass;
};

struct dns_answer {
	uint8_t rcode;
	bool truncated;
	size_t naddrs;
	uint32_t addrs[DNS_MAX_ADDRS]; /* network order, A records of the name or its CNAME chain */
	uint32_t ttl;                  /* the smallest TTL among them (and the CNAMEs on the way) */
};

/* A standard query with one question (an EDNS OPT record may follow); 0 or -EBADMSG. Only
 * the header's id is known after a failure (Q->id), so that a FORMERR can be answered. */
int dns_query_parse(const uint8_t *p, size_t n, struct dns_query *q);
/* A query for Q's name and type A with id ID (RD set) into OUT; its length, or -ENOSPC. */
int dns_query_build(const struct dns_query *q, uint16_t id, uint8_t *out, size_t cap);
/* The upstream's answer to the query ID for Q: 0 or -EBADMSG (not an answer to that question). */
int dns_answer_parse(const uint8_t *p, size_t n, uint16_t id, const struct dns_query *q, struct dns_answer *a);
/* Our answer to Q: RCODE and, for NOERROR, the A records ADDRS with TTL; its length or -ENOSPC. */
int dns_answer_build(const struct dns_query *q, uint8_t rcode, const uint32_t *addrs, size_t naddrs, uint32_t ttl,
		     uint8_t *out, size_t cap);
/* "IPV4[:PORT]" (port 53 when none) of an upstream resolver; 0 or -EINVAL. */
struct sockaddr_in;
int dns_server_parse(const char *text, struct sockaddr_in *out);
/* NAME (text) is a host name we accept in an allowlist: letters, digits, '-', '_' labels of
 * 1-63 bytes, at most DNS_MAX_NAME in all, at least two labels. */
bool dns_name_valid(const char *name);

#endif
