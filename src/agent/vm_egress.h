/* The egress allowlist inside a vm (docs/architecture.md, "vm isolation"; docs/security.md,
 * "Network"). The shim resolves --allow-host and parses --allow-cidr on the host, as for a
 * container, and writes the result on the guest kernel's command line as
 * capsule.allow=ADDR/PREFIX[:PORT],...; the agent parses it as untrusted input and loads the
 * container level's table (inet capsule_egress) itself over nf_tables netlink, before it
 * answers the shim at all, so no command ever runs without it.
 *
 * Parsing and building the batch are pure (no I/O) so that the unit tests can check them on
 * the host, and load the batch into a network namespace of their own. */
#ifndef CAPSULE_AGENT_VM_EGRESS_H
#define CAPSULE_AGENT_VM_EGRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The library's CAPSULE_MAX_ALLOW: a longer list is not from our shim. */
#define VM_EGRESS_MAX_RULES 64
/* Room for the most rules of the longest form: a boot batch of 64 port rules (each sent twice,
 * for tcp and udp) is about 60 KiB, a running vm's 128 networks with ports about 131 KiB (one
 * sendto: below the 208 KiB a netlink socket's send buffer holds by default). */
#define VM_EGRESS_BATCH_MAX (256u * 1024)

struct vm_egress_rule {
	uint32_t addr; /* network order, host bits zero */
	uint8_t prefix;
	uint16_t port; /* 0: any port */
};

/* TEXT ("10.0.2.2/32:8000,192.0.2.0/24") into RULES (at most MAX), their count into *N.
 * -EINVAL with why, one line, into WHY for anything but that exact form: an address that is
 * not a dotted quad, a prefix over 32 or with host bits set, a port outside 1-65535, an empty
 * entry, more than MAX entries. */
int vm_egress_parse(const char *text, struct vm_egress_rule *rules, size_t max, size_t *n, char *why, size_t whylen);

/* The DNS proxy's sets (the container level's names) and the quota object. */
#define VM_EGRESS_SET_ANY "dns_any"
#define VM_EGRESS_SET_PORT "dns_port"
#define VM_EGRESS_QUOTA "egress"

struct vm_egress_table {
	const struct vm_egress_rule *rules; /* capsule.allow= */
	size_t n;
	bool dns;       /* capsule.dns=proxy: the sets dns_any and dns_port and a rule each */
	uint64_t quota; /* capsule.quota=: bytes the guest may send out, 0 for none */
};

/* The nf_tables batch that makes table T in BUF (SIZE bytes): BATCH_BEGIN, the table, the
 * proxy's sets and the quota when T has them, the output chain (policy drop with rules or the
 * proxy, accept with only a quota), the chain cidrs for the allowed networks, the quota's two
 * rules, a rule each for lo, established/related, the jump to cidrs (and in cidrs one for every
 * entry) and each of the proxy's sets, the two rejects, BATCH_END.
 * Every message but the batch's two asks for an ack; their count goes to *ACKS and their
 * sequence numbers start at SEQ. Returns the bytes used, or 0 when SIZE is too small. */
size_t vm_egress_batch(const struct vm_egress_table *t, uint32_t seq, uint8_t *buf, size_t size, size_t *acks);

/* The batch that replaces the allowed networks of the table (chain cidrs) with the N entries
 * R, in one transaction, as vm_egress_batch returns it. */
size_t vm_egress_cidrs(const struct vm_egress_rule *r, size_t n, uint32_t seq, uint8_t *buf, size_t size,
		       size_t *acks);

/* An address the proxy opens (in dns_any, or with a port in dns_port) for TTL_S seconds. */
struct vm_egress_elem {
	uint32_t addr; /* network order */
	uint16_t port;
	uint32_t ttl_s; /* adding: the element's timeout */
};
/* The batch that deletes the NDEL elements DEL and adds the NADD elements ADD, in that order,
 * as vm_egress_batch returns it. One transaction: an element deleted that is not there (its
 * timeout ended) fails all of it, so a caller deletes only what vm_egress_present found. */
size_t vm_egress_elements(const struct vm_egress_elem *del, size_t ndel, const struct vm_egress_elem *add, size_t nadd,
			  uint32_t seq, uint8_t *buf, size_t size, size_t *acks);
/* Whether E is in its set now (GETSETELEM): 1, 0, or -errno with WHY. */
int vm_egress_present(const struct vm_egress_elem *e, char *why, size_t whylen);
/* Room for the most elements one EGRESS message carries. */
#define VM_EGRESS_ELEMS_BATCH_MAX 16384u

/* Send BUF (LEN bytes, ACKS acks expected) on a NETLINK_NETFILTER socket and wait for every ack:
 * 0, or -errno with why into WHY (the kernel's answer to the first message it refused; the
 * batch is one transaction, so nothing of it stays). */
int vm_egress_send(const uint8_t *buf, size_t len, size_t acks, uint32_t seq, char *why, size_t whylen);

/* The quota's size and what of it is used, read back from the kernel (GETOBJ). */
int vm_egress_quota_used(uint64_t *bytes, uint64_t *used, char *why, size_t whylen);

#endif
