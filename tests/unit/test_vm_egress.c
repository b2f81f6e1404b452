/* Unit tests for the agent's egress allowlist (src/agent/vm_egress.c): capsule.allow= is
 * untrusted text and only the shim's exact form passes; the nf_tables batch built from it,
 * loaded (as root) into a network namespace of the test's own, lists as the container
 * level's table does, rule for rule (nft prints `meta l4proto tcp ... th dport` back as
 * `tcp dport`, and the container's `meta l4proto { tcp, udp }` is one rule per protocol),
 * but for the networks: the container's interval sets are a chain of rules here, `cidrs`,
 * which a running vm's list replaces in one transaction. */
#include <errno.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <cmocka.h>

#include "proto.h"
#include "util.h"
#include "vm_egress.h"

#define NFT "/usr/sbin/nft"

static void test_parse_accepts_the_shims_form(void **state)
{
	(void)state;
	struct vm_egress_rule r[VM_EGRESS_MAX_RULES];
	size_t n = 99;
	char why[160] = "";
	assert_int_equal(vm_egress_parse("10.0.2.2/32:8000,192.0.2.0/24,0.0.0.0/0:53", r, VM_EGRESS_MAX_RULES, &n, why,
					 sizeof(why)),
			 0);
	assert_int_equal(n, 3);
	assert_int_equal(r[0].addr, inet_addr("10.0.2.2"));
	assert_int_equal(r[0].prefix, 32);
	assert_int_equal(r[0].port, 8000);
	assert_int_equal(r[1].addr, inet_addr("192.0.2.0"));
	assert_int_equal(r[1].prefix, 24);
	assert_int_equal(r[1].port, 0);
	assert_int_equal(r[2].addr, 0);
	assert_int_equal(r[2].prefix, 0);
	assert_int_equal(r[2].port, 53);
}

static void test_parse_refuses_anything_else(void **state)
{
	(void)state;
	static const char *const bad[] = {
		"", ",", "10.0.2.2/32,", ",10.0.2.2/32", "10.0.2.2/32,,10.0.2.3/32", "10.0.2.2", "10.0.2.2:80",
		"10.0.2.2/33", "10.0.2.2/", "10.0.2.2/032", "10.0.2.2/-1", "10.0.2.2/32:0", "10.0.2.2/32:65536",
		"10.0.2.2/32:", "10.0.2.2/32:+80", "10.0.2.2/32:080", "10.0.2.1/24", "1.2.3/32", "1.2.3.4.5/32",
		"::1/128", " 10.0.2.2/32", "10.0.2.2/32 ", "10.0.2.2/32:80:1", "name/32:80", "10.0.2.2:80/32",
		"10.0.2.2/32:99999999999999999999",
	};
	struct vm_egress_rule r[VM_EGRESS_MAX_RULES];
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		size_t n;
		char why[160] = "";
		int rc = vm_egress_parse(bad[i], r, VM_EGRESS_MAX_RULES, &n, why, sizeof(why));
		if (rc != -EINVAL)
			fail_msg("'%s' was accepted (%d)", bad[i], rc);
		assert_true(why[0] != '\0' && !strchr(why, '\n'));
	}
}

static void test_parse_bounds_the_count(void **state)
{
	(void)state;
	char text[VM_EGRESS_MAX_RULES * 24 + 32] = "";
	size_t off = 0;
	for (int i = 0; i <= VM_EGRESS_MAX_RULES; i++)
		off += (size_t)snprintf(text + off, sizeof(text) - off, "%s10.0.%d.0/24", i ? "," : "", i);
	struct vm_egress_rule r[VM_EGRESS_MAX_RULES];
	size_t n;
	char why[160] = "";
	assert_int_equal(vm_egress_parse(text, r, VM_EGRESS_MAX_RULES, &n, why, sizeof(why)), -EINVAL);
	assert_non_null(strstr(why, "more than 64"));
	/* One fewer fits. */
	*strrchr(text, ',') = '\0';
	assert_int_equal(vm_egress_parse(text, r, VM_EGRESS_MAX_RULES, &n, why, sizeof(why)), 0);
	assert_int_equal(n, VM_EGRESS_MAX_RULES);
}

static void test_batch_fits_its_bound_and_says_when_not(void **state)
{
	(void)state;
	struct vm_egress_rule r[VM_EGRESS_MAX_RULES];
	for (int i = 0; i < VM_EGRESS_MAX_RULES; i++)
		r[i] = (struct vm_egress_rule){ .addr = htonl(0x0a000000u | (uint32_t)i << 8), .prefix = 23, .port = 65535 };
	uint8_t *buf = malloc(VM_EGRESS_BATCH_MAX);
	assert_non_null(buf);
	size_t acks = 0;
	struct vm_egress_table t = { .rules = r, .n = VM_EGRESS_MAX_RULES, .dns = true, .quota = UINT64_MAX };
	size_t len = vm_egress_batch(&t, 1, buf, VM_EGRESS_BATCH_MAX, &acks);
	assert_true(len > 0 && len <= VM_EGRESS_BATCH_MAX);
	/* table, two sets, the quota, two chains, two quota rules, lo, established, the jump,
	 * 2 x 64 entries, three lookups, two rejects */
	assert_int_equal(acks, 6 + 2 + 3 + 2 * VM_EGRESS_MAX_RULES + 3 + 2);
	/* Replacing the networks: the flush and 2 x 128 entries (the shim's bound, at run time). */
	struct vm_egress_rule many[CP_MAX_EGRESS_CIDRS];
	for (unsigned i = 0; i < CP_MAX_EGRESS_CIDRS; i++)
		many[i] = (struct vm_egress_rule){ .addr = htonl(0x0a000000u | i << 9), .prefix = 23, .port = 65535 };
	assert_true(vm_egress_cidrs(many, CP_MAX_EGRESS_CIDRS, 1, buf, VM_EGRESS_BATCH_MAX, &acks) > 0);
	assert_int_equal(acks, 1 + 2 * CP_MAX_EGRESS_CIDRS);
	assert_int_equal(vm_egress_batch(&t, 1, buf, len - 1, &acks), 0);
	/* The most elements one EGRESS carries fit their batch. */
	struct vm_egress_elem e[64];
	for (int i = 0; i < 64; i++)
		e[i] = (struct vm_egress_elem){ .addr = htonl(0xc6336400u | (uint32_t)i), .port = (uint16_t)(i % 2 * 443),
						.ttl_s = 86400 };
	assert_true(vm_egress_elements(NULL, 0, e, 64, 1, buf, VM_EGRESS_ELEMS_BATCH_MAX, &acks) > 0);
	assert_int_equal(acks, 2);
	/* ... with the most deletions one EGRESS can cause before them (its own and a refresh of
	 * each addition). */
	struct vm_egress_elem d[2 * 64];
	for (int i = 0; i < 2 * 64; i++)
		d[i] = (struct vm_egress_elem){ .addr = htonl(0xc6336400u | (uint32_t)i), .port = (uint16_t)(i % 2 * 443) };
	assert_true(vm_egress_elements(d, 2 * 64, e, 64, 1, buf, VM_EGRESS_ELEMS_BATCH_MAX, &acks) > 0);
	assert_int_equal(acks, 4);
	free(buf);
}

/* What load_and_list does after the table: add ADD, delete DEL, and say the quota's use. */
struct after {
	bool dns;
	uint64_t quota;
	const struct vm_egress_elem *add, *del;
	size_t nadd, ndel;
	const struct vm_egress_rule *cidrs; /* the networks replaced by these (NCIDRS, when not 0) */
	size_t ncidrs;
};

/* In a new network namespace: load the batch for TEXT (and A's), then `nft list ruleset` into
 * OUT (after A's "quota BYTES USED" line). */
static int load_and_list_after(const char *text, const struct after *a, char *out, size_t size)
{
	int p[2];
	assert_int_equal(pipe(p), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(p[0]);
		if (unshare(CLONE_NEWNET) < 0)
			_exit(2);
		struct vm_egress_rule r[VM_EGRESS_MAX_RULES];
		size_t n, acks;
		char why[160];
		static uint8_t buf[VM_EGRESS_BATCH_MAX];
		n = 0;
		if (*text && vm_egress_parse(text, r, VM_EGRESS_MAX_RULES, &n, why, sizeof(why)) < 0)
			_exit(3);
		struct vm_egress_table t = { .rules = r, .n = n, .dns = a->dns, .quota = a->quota };
		size_t len = vm_egress_batch(&t, 1, buf, sizeof(buf), &acks);
		if (!len || vm_egress_send(buf, len, acks, 1, why, sizeof(why)) < 0) {
			dprintf(p[1], "send: %s", why);
			_exit(4);
		}
		if (a->nadd && (!(len = vm_egress_elements(NULL, 0, a->add, a->nadd, 100, buf, sizeof(buf), &acks)) ||
				vm_egress_send(buf, len, acks, 100, why, sizeof(why)) < 0)) {
			dprintf(p[1], "add: %s", why);
			_exit(5);
		}
		if (a->ndel && (!(len = vm_egress_elements(a->del, a->ndel, NULL, 0, 200, buf, sizeof(buf), &acks)) ||
				vm_egress_send(buf, len, acks, 200, why, sizeof(why)) < 0)) {
			dprintf(p[1], "delete: %s", why);
			_exit(6);
		}
		if (a->ncidrs && (!(len = vm_egress_cidrs(a->cidrs, a->ncidrs, 300, buf, sizeof(buf), &acks)) ||
				  vm_egress_send(buf, len, acks, 300, why, sizeof(why)) < 0)) {
			dprintf(p[1], "cidrs: %s", why);
			_exit(8);
		}
		/* What is in a set and what is not, as the agent asks before a deletion. */
		for (size_t i = 0; i < a->nadd; i++)
			dprintf(p[1], "present %zu %d\n", i, vm_egress_present(&a->add[i], why, sizeof(why)));
		uint64_t bytes = 0, used = 0;
		if (a->quota && vm_egress_quota_used(&bytes, &used, why, sizeof(why)) < 0) {
			dprintf(p[1], "quota: %s", why);
			_exit(7);
		}
		if (a->quota)
			dprintf(p[1], "quota %llu %llu\n", (unsigned long long)bytes, (unsigned long long)used);
		dup2(p[1], 1);
		execl(NFT, "nft", "list", "ruleset", (char *)NULL);
		_exit(127);
	}
	close(p[1]);
	size_t off = 0;
	ssize_t k;
	while (off + 1 < size && (k = read(p[0], out + off, size - off - 1)) > 0)
		off += (size_t)k;
	out[off] = '\0';
	close(p[0]);
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static int load_and_list(const char *text, char *out, size_t size)
{
	return load_and_list_after(text, &(struct after){ 0 }, out, size);
}

static void test_loaded_table_reads_as_the_container_rules(void **state)
{
	(void)state;
	if (geteuid() != 0 || access(NFT, X_OK) != 0)
		skip();
	char out[8192];
	int rc = load_and_list("10.0.2.2/32:8000,192.0.2.0/24,198.51.100.0/23:53", out, sizeof(out));
	if (rc != 0)
		fail_msg("load failed (%d): %s", rc, out);
	static const char want[] = "table inet capsule_egress {\n"
				   "\tchain output {\n"
				   "\t\ttype filter hook output priority filter; policy drop;\n"
				   "\t\toifname \"lo\" accept\n"
				   "\t\tct state established,related accept\n"
				   "\t\tjump cidrs\n"
				   "\t\tmeta l4proto tcp reject with tcp reset\n"
				   "\t\treject\n"
				   "\t}\n"
				   "\n"
				   "\tchain cidrs {\n"
				   "\t\tip daddr 10.0.2.2 tcp dport 8000 accept\n"
				   "\t\tip daddr 10.0.2.2 udp dport 8000 accept\n"
				   "\t\tip daddr 192.0.2.0/24 accept\n"
				   "\t\tip daddr 198.51.100.0/23 tcp dport 53 accept\n"
				   "\t\tip daddr 198.51.100.0/23 udp dport 53 accept\n"
				   "\t}\n"
				   "}\n";
	assert_string_equal(out, want);
}

/* The proxy's sets and the quota, as the container's text has them (src/shim/egress.c,
 * table_load): elements added with their timeouts, one deleted again, and the quota read
 * back from the kernel. */
static void test_proxy_sets_and_quota_read_as_the_container_rules(void **state)
{
	(void)state;
	if (geteuid() != 0 || access(NFT, X_OK) != 0)
		skip();
	char out[8192];
	const struct vm_egress_elem add[] = {
		{ .addr = inet_addr("192.0.2.7"), .ttl_s = 3600 },
		{ .addr = inet_addr("198.51.100.9"), .port = 443, .ttl_s = 3600 },
		{ .addr = inet_addr("203.0.113.5"), .ttl_s = 3600 },
	};
	const struct vm_egress_elem del[] = { { .addr = inet_addr("203.0.113.5") } };
	/* The networks given at boot (10.0.2.2:8000) replaced by two others. */
	const struct vm_egress_rule cidrs[] = {
		{ .addr = inet_addr("192.0.2.0"), .prefix = 24 },
		{ .addr = inet_addr("10.0.2.2"), .prefix = 32, .port = 9000 },
	};
	struct after a = { .dns = true, .quota = 5000000, .add = add, .nadd = 3, .del = del, .ndel = 1, .cidrs = cidrs,
			   .ncidrs = 2 };
	int rc = load_and_list_after("10.0.2.2/32:8000", &a, out, sizeof(out));
	if (rc != 0)
		fail_msg("load failed (%d): %s", rc, out);
	static const char *const want[] = {
		"present 0 1\npresent 1 1\npresent 2 0\n",
		"quota 5000000 0\n",
		"\tset dns_any {\n\t\ttype ipv4_addr\n\t\tflags timeout\n\t\telements = { 192.0.2.7 timeout 1h expires ",
		"\tset dns_port {\n\t\ttype ipv4_addr . inet_service\n\t\tflags timeout\n\t\telements = { 198.51.100.9 . 443 timeout 1h expires ",
		"\tquota egress {\n\t\tover 5000000 bytes\n\t}\n",
		"\t\ttype filter hook output priority filter; policy drop;\n"
		"\t\toifname != \"lo\" meta l4proto tcp quota name \"egress\" reject with tcp reset\n"
		"\t\toifname != \"lo\" meta l4proto != tcp quota name \"egress\" drop\n"
		"\t\toifname \"lo\" accept\n"
		"\t\tct state established,related accept\n"
		"\t\tjump cidrs\n"
		"\t\tip daddr @dns_any accept\n"
		"\t\tip daddr . tcp dport @dns_port accept\n"
		"\t\tip daddr . udp dport @dns_port accept\n"
		"\t\tmeta l4proto tcp reject with tcp reset\n"
		"\t\treject\n",
		("\tchain cidrs {\n\t\tip daddr 192.0.2.0/24 accept\n\t\tip daddr 10.0.2.2 tcp dport 9000 accept\n"
		 "\t\tip daddr 10.0.2.2 udp dport 9000 accept\n\t}\n"),
	};
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		if (!strstr(out, want[i]))
			fail_msg("missing:\n%s\nin:\n%s", want[i], out);
	assert_null(strstr(out, "203.0.113.5"));
	assert_null(strstr(out, "8000"));
}

/* The shim's most networks, each with a port, replace the boot table's in one transaction. */
static void test_most_networks_replace_the_boot_ones_in_one_batch(void **state)
{
	(void)state;
	if (geteuid() != 0 || access(NFT, X_OK) != 0)
		skip();
	static struct vm_egress_rule many[CP_MAX_EGRESS_CIDRS];
	for (unsigned i = 0; i < CP_MAX_EGRESS_CIDRS; i++)
		many[i] = (struct vm_egress_rule){ .addr = htonl(0x0a000000u | i << 9), .prefix = 23, .port = 65535 };
	static char out[256 * 1024];
	struct after a = { .cidrs = many, .ncidrs = CP_MAX_EGRESS_CIDRS };
	int rc = load_and_list_after("192.0.2.0/24", &a, out, sizeof(out));
	if (rc != 0)
		fail_msg("load failed (%d): %.300s", rc, out);
	size_t rules = 0;
	for (const char *p = out; (p = strstr(p, "dport 65535 accept")); p++)
		rules++;
	assert_int_equal(rules, 2 * CP_MAX_EGRESS_CIDRS);
	assert_null(strstr(out, "192.0.2.0/24"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_accepts_the_shims_form),
		cmocka_unit_test(test_parse_refuses_anything_else),
		cmocka_unit_test(test_parse_bounds_the_count),
		cmocka_unit_test(test_batch_fits_its_bound_and_says_when_not),
		cmocka_unit_test(test_loaded_table_reads_as_the_container_rules),
		cmocka_unit_test(test_proxy_sets_and_quota_read_as_the_container_rules),
		cmocka_unit_test(test_most_networks_replace_the_boot_ones_in_one_batch),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
