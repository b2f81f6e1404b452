/* libFuzzer target: the egress DNS proxy's decoder and encoder (src/common/dns.c), which read
 * packets a sandbox's command writes and packets anyone on the path to the upstream can forge.
 *
 * Byte 0 picks the entry point: a query from the sandbox, or an upstream answer to a fixed
 * question ("app.capsule.test" A, id 0x1234). Besides "no crash, no overread", each success is
 * checked against dns.h's promises: a parsed name is lower-case host-name text of at most
 * DNS_MAX_NAME bytes; our answer to a parsed query reads back, through the upstream decoder,
 * as exactly the addresses and TTL we put in; answers give at most DNS_MAX_ADDRS distinct
 * addresses and no TTL with the top bit set. */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "dns.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#include "fuzz_check.h"

static void check_name(const char *name)
{
	size_t len = strlen(name);
	CHECK(len <= DNS_MAX_NAME);
	for (size_t i = 0; i < len; i++) {
		char c = name[i];
		CHECK((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.');
	}
}

static void fuzz_query(const uint8_t *p, size_t n)
{
	struct dns_query q;
	if (dns_query_parse(p, n, &q) < 0)
		return;
	check_name(q.name);
	CHECK(q.qclass != 0);
	/* Our answer, read back as an upstream's. */
	uint32_t addrs[3] = { 0x0102000a, 0x0202000a, 0x030200c0 };
	uint8_t out[DNS_MAX_PACKET];
	int len = dns_answer_build(&q, DNS_RCODE_NOERROR, addrs, 3, 77, out, sizeof(out));
	CHECK(len > 0);
	struct dns_query asked = q;
	struct dns_answer a;
	if (q.qtype == DNS_TYPE_A && q.qclass == DNS_CLASS_IN && q.name[0]) {
		CHECK(dns_answer_parse(out, (size_t)len, q.id, &asked, &a) == 0);
		CHECK(a.rcode == DNS_RCODE_NOERROR && a.naddrs == 3 && a.ttl == 77);
		CHECK(!memcmp(a.addrs, addrs, sizeof(addrs)));
	}
	/* And the upstream query we build for it parses as a query of the same name. */
	len = dns_query_build(&q, 0x4321, out, sizeof(out));
	if (q.name[0]) {
		CHECK(len > 0);
		struct dns_query back;
		CHECK(dns_query_parse(out, (size_t)len, &back) == 0);
		CHECK(!strcmp(back.name, q.name) && back.qtype == DNS_TYPE_A && back.id == 0x4321);
	}
}

static void fuzz_answer(const uint8_t *p, size_t n)
{
	struct dns_query q = { .id = 0x1234, .qtype = DNS_TYPE_A, .qclass = DNS_CLASS_IN };
	memcpy(q.name, "app.capsule.test", sizeof("app.capsule.test"));
	struct dns_answer a;
	if (dns_answer_parse(p, n, 0x1234, &q, &a) < 0)
		return;
	CHECK(a.naddrs <= DNS_MAX_ADDRS);
	CHECK(a.naddrs || a.ttl == 0);
	CHECK(!(a.ttl & 0x80000000u));
	for (size_t i = 0; i < a.naddrs; i++)
		for (size_t k = i + 1; k < a.naddrs; k++)
			CHECK(a.addrs[i] != a.addrs[k]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	if (data[0] & 1)
		fuzz_answer(data + 1, size - 1);
	else
		fuzz_query(data + 1, size - 1);
	return 0;
}
