/* port add|ls|rm: port forwards of a running sandbox. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "json.h"

static void port_help(void)
{
	printf("Usage: capsule port COMMAND SANDBOX ...\n\n"
	       "  add SANDBOX [HOSTIP:]HOSTPORT:PORT[/tcp]  forward a host port (default address 127.0.0.1)\n"
	       "                                to PORT on the running sandbox's loopback\n"
	       "  ls SANDBOX [--json]           list the forwards\n"
	       "  rm SANDBOX [HOSTIP:]HOSTPORT  remove a forward (its open connections are closed)\n");
}

static int print_port_row(const char *name, const char *value, size_t len, void *payload)
{
	(void)name;
	(void)payload;
	char *ip = NULL, *proto = NULL;
	int64_t hp = 0, gp = 0, conns = 0;
	bool hot = false;
	json_get_string(value, len, "host_ip", &ip);
	json_get_string(value, len, "protocol", &proto);
	json_get_int(value, len, "host_port", &hp);
	json_get_int(value, len, "guest_port", &gp);
	json_get_int(value, len, "connections", &conns);
	json_get_bool(value, len, "hot", &hot);
	bool v6 = ip && strchr(ip, ':');
	char host[96];
	snprintf(host, sizeof(host), "%s%s%s:%lld", v6 ? "[" : "", ip ? ip : "?", v6 ? "]" : "", (long long)hp);
	printf("%-28s %-6lld %-5s %-4s %lld\n", host, (long long)gp, proto ? proto : "?", hot ? "yes" : "no",
	       (long long)conns);
	free(ip);
	free(proto);
	return 0;
}

int cmd_port(int argc, char **argv)
{
	if (argc < 2)
		return cli_usage("port", "no command given");
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		port_help();
		return 0;
	}
	const char *sub = argv[1];
	bool json;
	const char *pos[2];
	int npos, r;
	if ((r = cli_sub_args("port", argc, argv, pos, &npos, &json)) != 0)
		return r;
	bool is_ls = !strcmp(sub, "ls") || !strcmp(sub, "list");
	if (!is_ls && strcmp(sub, "add") && strcmp(sub, "rm"))
		return cli_usage("port", "unknown command '%s' (use add, ls or rm)", sub);
	if (npos < (is_ls ? 1 : 2))
		return cli_usage("port", is_ls ? "expected SANDBOX" : "expected SANDBOX and a port");
	if (is_ls && npos > 1)
		return cli_usage("port", "unexpected argument '%s'", pos[1]);
	capsule_sandbox *sb;
	capsule_error err = { 0 };
	if (capsule_sandbox_open(&sb, pos[0], &err) < 0)
		return cli_fail(&err);
	char *text = NULL;
	if (!strcmp(sub, "add"))
		r = capsule_port_add(sb, pos[1], &err);
	else if (!strcmp(sub, "rm"))
		r = capsule_port_remove(sb, pos[1], &err);
	else
		r = capsule_ports_json(sb, &text, &err);
	capsule_sandbox_free(sb);
	if (r < 0)
		return cli_fail(&err);
	if (text && json) {
		printf("%s\n", text);
	} else if (text) {
		printf("%-28s %-6s %-5s %-4s %s\n", "HOST", "PORT", "PROTO", "HOT", "CONNECTIONS");
		if (json_array_each(text, strlen(text), 1024, print_port_row, NULL) < 0) {
			free(text);
			return cli_failf("the sandbox sent a list of ports that is not valid JSON");
		}
	}
	free(text);
	return 0;
}
