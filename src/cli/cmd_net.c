/* net allow|deny|ls: the egress rules of a running container (docs/cli.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "json.h"

static void net_help(void)
{
	printf("Usage: capsule net COMMAND SANDBOX ...\n\n"
	       "  allow SANDBOX NAME[:PORT]|CIDR[:PORT]  allow a name (answered by the sandbox's DNS\n"
	       "                                proxy) or an IPv4 network out of the running sandbox\n"
	       "  deny SANDBOX NAME[:PORT]|CIDR[:PORT]   remove an allowed entry (addresses the proxy\n"
	       "                                opened for a name close with it)\n"
	       "  ls SANDBOX [--json]           the allowed names with their open addresses, the\n"
	       "                                networks, and the egress quota's use\n");
}

static int print_addr(const char *name, const char *value, size_t len, void *payload)
{
	(void)name;
	(void)payload;
	char *addr = NULL;
	int64_t ms = 0;
	json_get_string(value, len, "address", &addr);
	json_get_int(value, len, "expires_in_ms", &ms);
	printf("    %-15s open for %.1f s\n", addr ? addr : "?", (double)ms / 1000);
	free(addr);
	return 0;
}

static int print_name(const char *name, const char *value, size_t len, void *payload)
{
	(void)name;
	(void)payload;
	char *host = NULL;
	int64_t port = 0;
	const char *addrs;
	size_t alen;
	json_get_string(value, len, "name", &host);
	json_get_int(value, len, "port", &port);
	if (port)
		printf("name  %s:%lld\n", host ? host : "?", (long long)port);
	else
		printf("name  %s (any port)\n", host ? host : "?");
	free(host);
	if (json_get_member(value, len, "addresses", &addrs, &alen) == 0)
		json_array_each(addrs, alen, 1024, print_addr, NULL);
	return 0;
}

static int print_cidr(const char *name, const char *value, size_t len, void *payload)
{
	(void)name;
	(void)payload;
	char *rule = NULL, *host = NULL;
	json_get_string(value, len, "rule", &rule);
	json_get_string(value, len, "host", &host);
	printf("cidr  %s", rule ? rule : "?");
	printf(host ? "  (%s)\n" : "%s\n", host ? host : "");
	free(rule);
	free(host);
	return 0;
}

static int print_rules(const char *text)
{
	size_t len = strlen(text);
	const char *v;
	size_t vl;
	if (json_get_member(text, len, "names", &v, &vl) < 0 || json_array_each(v, vl, 1024, print_name, NULL) < 0 ||
	    json_get_member(text, len, "cidrs", &v, &vl) < 0 || json_array_each(v, vl, 1024, print_cidr, NULL) < 0)
		return cli_failf("the sandbox sent egress rules that are not valid JSON");
	int64_t bytes, used;
	if (json_get_member(text, len, "quota", &v, &vl) == 0 && json_get_int(v, vl, "bytes", &bytes) == 0 &&
	    json_get_int(v, vl, "used", &used) == 0)
		printf("quota %lld of %lld bytes sent\n", (long long)used, (long long)bytes);
	return 0;
}

int cmd_net(int argc, char **argv)
{
	if (argc < 2)
		return cli_usage("net", "no command given");
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		net_help();
		return 0;
	}
	const char *sub = argv[1];
	bool json;
	const char *pos[2];
	int npos, r;
	if ((r = cli_sub_args("net", argc, argv, pos, &npos, &json)) != 0)
		return r;
	bool is_ls = !strcmp(sub, "ls");
	if (!is_ls && strcmp(sub, "allow") && strcmp(sub, "deny"))
		return cli_usage("net", "unknown command '%s' (use allow, deny or ls)", sub);
	if (npos < (is_ls ? 1 : 2))
		return cli_usage("net", is_ls ? "expected SANDBOX" : "expected SANDBOX and NAME[:PORT] or CIDR[:PORT]");
	if (is_ls && npos > 1)
		return cli_usage("net", "unexpected argument '%s'", pos[1]);
	capsule_sandbox *sb;
	capsule_error err = { 0 };
	if (capsule_sandbox_open(&sb, pos[0], &err) < 0)
		return cli_fail(&err);
	char *text = NULL;
	if (!strcmp(sub, "allow"))
		r = capsule_net_allow(sb, pos[1], &err);
	else if (!strcmp(sub, "deny"))
		r = capsule_net_deny(sb, pos[1], &err);
	else
		r = capsule_net_json(sb, &text, &err);
	capsule_sandbox_free(sb);
	if (r < 0)
		return cli_fail(&err);
	if (text && json)
		printf("%s\n", text);
	else if (text)
		r = print_rules(text);
	free(text);
	return r;
}
