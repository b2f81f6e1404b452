/* Network settings: the mode (none, mounts-only, full), port forwards (-p), the egress
 * allowlist (--allow-host, --allow-cidr), their config lines, and the port requests a running
 * sandbox's shim answers (src/shim/net.c does the work). */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dns.h"
#include "internal.h"
#include "json.h"
#include "parse.h"
#include "util.h"

/* More than the shim can hold (NET_MAX_FORWARDS): a longer list is not from our shim. */
#define NET_MAX_PORTS_LISTED 256

static const char *const network_names[] = {
	[CAPSULE_NETWORK_NONE] = "none",
	[CAPSULE_NETWORK_MOUNTS_ONLY] = "mounts-only",
	[CAPSULE_NETWORK_FULL] = "full",
};

const char *network_mode_name(capsule_network mode)
{
	return (unsigned)mode < ARRAY_SIZE(network_names) ? network_names[mode] : "none";
}

int capsule_config_set_network(capsule_config *cfg, capsule_network mode, capsule_error *err)
{
	if ((unsigned)mode >= ARRAY_SIZE(network_names))
		return cap_err_plain(err, EINVAL, "invalid network mode %d (use none, mounts-only or full)", (int)mode);
	cfg->network = mode;
	return 0;
}

int capsule_config_set_network_name(capsule_config *cfg, const char *mode, capsule_error *err)
{
	for (size_t i = 0; mode && i < ARRAY_SIZE(network_names); i++)
		if (!strcmp(mode, network_names[i]))
			return capsule_config_set_network(cfg, (capsule_network)i, err);
	return cap_err_plain(err, EINVAL, "invalid network mode '%s' (use none, mounts-only or full)", mode ? mode : "");
}

static int add_port(struct capsule_config *cfg, const struct port_spec *ps, const char *spec, capsule_error *err)
{
	if (ps->udp)
		return cap_err_plain(err, EOPNOTSUPP, "port forward '%s': udp forwards are not supported (tcp only)", spec);
	for (size_t i = 0; i < cfg->nports; i++)
		if (cfg->ports[i].host_port == ps->host_port && !strcmp(cfg->ports[i].host_ip, ps->host_ip))
			return cap_err_plain(err, EEXIST, "port forward '%s': host port %s:%u is forwarded twice", spec,
					     ps->host_ip, ps->host_port);
	if (cfg->nports >= CAPSULE_MAX_PORTS)
		return cap_err_plain(err, E2BIG, "too many port forwards (at most %d)", CAPSULE_MAX_PORTS);
	struct port_forward *p = &cfg->ports[cfg->nports++];
	snprintf(p->host_ip, sizeof(p->host_ip), "%s", ps->host_ip);
	p->host_port = ps->host_port;
	p->guest_port = ps->guest_port;
	return 0;
}

int capsule_config_add_port_forward(capsule_config *cfg, const char *spec, capsule_error *err)
{
	struct port_spec ps;
	int r = parse_port_spec(spec, &ps, err);
	if (r < 0)
		return r;
	return add_port(cfg, &ps, spec, err);
}

static int push_rule(struct capsule_config *cfg, uint32_t addr, uint8_t prefix, uint16_t port, const char *host,
		     capsule_error *err)
{
	if (cfg->nallow >= CAPSULE_MAX_ALLOW)
		return cap_err_plain(err, E2BIG, "too many egress allowlist entries (at most %d)", CAPSULE_MAX_ALLOW);
	struct egress_rule *e = &cfg->allow[cfg->nallow++];
	e->addr = addr;
	e->prefix = prefix;
	e->port = port;
	snprintf(e->host, sizeof(e->host), "%s", host ? host : "");
	return 0;
}

/* "PORT" after the last ':' of SPEC into *PORT; the part before it is copied into HEAD. */
static int split_port(const char *what, const char *spec, char *head, size_t size, uint16_t *port, bool required,
		      capsule_error *err)
{
	const char *colon = strrchr(spec, ':');
	uint64_t v = 0;
	if (!colon && required)
		return cap_err_plain(err, EINVAL, "invalid %s '%s': expected NAME:PORT", what, spec);
	size_t n = colon ? (size_t)(colon - spec) : strlen(spec);
	if (n == 0 || n >= size)
		return cap_err_plain(err, EINVAL, "invalid %s '%s': empty or too long address", what, spec);
	if (colon && parse_uint(colon + 1, "port", 1, 65535, &v, NULL) < 0)
		return cap_err_plain(err, EINVAL, "invalid %s '%s': port '%s' is not 1-65535", what, spec, colon + 1);
	memcpy(head, spec, n);
	head[n] = '\0';
	*port = (uint16_t)v;
	return 0;
}

/* NAME's IPv4 addresses from the host's resolver into OUT (at most MAX); how many, or -errno
 * with ERR naming SPEC. */
static int resolve_on_host(const char *spec, const char *name, uint32_t *out, size_t max, capsule_error *err)
{
	struct addrinfo hints = { .ai_family = AF_INET, .ai_socktype = SOCK_STREAM };
	struct addrinfo *res = NULL;
	int g = getaddrinfo(name, NULL, &hints, &res);
	if (g != 0)
		return cap_err_plain(err, g == EAI_NONAME ? ENOENT : EHOSTUNREACH, "--allow-host '%s': cannot resolve '%s': %s",
				     spec, name, gai_strerror(g));
	size_t n = 0;
	for (struct addrinfo *a = res; a && n < max; a = a->ai_next) {
		uint32_t addr = ((struct sockaddr_in *)a->ai_addr)->sin_addr.s_addr;
		bool dup = false;
		for (size_t i = 0; i < n; i++)
			dup |= out[i] == addr;
		if (!dup)
			out[n++] = addr;
	}
	freeaddrinfo(res);
	return (int)n;
}

static int push_name(struct capsule_config *cfg, const char *name, uint16_t port, capsule_error *err)
{
	for (size_t i = 0; i < cfg->nallow_names; i++)
		if (cfg->allow_names[i].port == port && !strcmp(cfg->allow_names[i].name, name))
			return 0;
	if (cfg->nallow_names >= CAPSULE_MAX_ALLOW)
		return cap_err_plain(err, E2BIG, "too many --allow-host names (at most %d)", CAPSULE_MAX_ALLOW);
	struct egress_name *e = &cfg->allow_names[cfg->nallow_names++];
	snprintf(e->name, sizeof(e->name), "%s", name);
	e->port = port;
	return 0;
}

/* A DNS name (two labels or more) is kept as a name: the sandbox's DNS proxy (the shim's, at
 * both levels) answers it for as long as the sandbox lives; nothing is asked of the host's
 * resolver now. A single label (localhost, the host's own name) is no DNS
 * name: what the host's resolver says of it is fixed now, as addresses, the host's loopback
 * meaning the gateway (slirp4netns maps it there). */
int capsule_config_add_allow_host(capsule_config *cfg, const char *name_port, capsule_error *err)
{
	if (!name_port || !*name_port || strpbrk(name_port, "\n /"))
		return cap_err_plain(err, EINVAL, "invalid --allow-host '%s': expected NAME[:PORT]", name_port ? name_port : "");
	char name[256];
	uint16_t port;
	int r = split_port("--allow-host", name_port, name, sizeof(name), &port, false, err);
	if (r < 0)
		return r;
	for (char *c = name; *c; c++)
		if (*c >= 'A' && *c <= 'Z')
			*c = (char)(*c + 32);
	if (dns_name_valid(name))
		return push_name(cfg, name, port, err);
	char label[300];
	snprintf(label, sizeof(label), "%s.x", name);
	if (strchr(name, '.') || !dns_name_valid(label))
		return cap_err_plain(err, EINVAL, "invalid --allow-host '%s': '%s' is not a DNS name", name_port, name);
	uint32_t addrs[CAPSULE_MAX_ALLOW];
	int n = resolve_on_host(name_port, name, addrs, ARRAY_SIZE(addrs), err);
	if (n < 0)
		return n;
	size_t before = cfg->nallow;
	uint32_t gw;
	inet_pton(AF_INET, CAPSULE_NETWORK_GATEWAY, &gw);
	for (int i = 0; i < n && r == 0; i++) {
		uint32_t addr = (ntohl(addrs[i]) >> 24) == 127 ? gw : addrs[i];
		bool dup = false;
		for (size_t k = 0; k < cfg->nallow; k++)
			dup |= cfg->allow[k].addr == addr && cfg->allow[k].port == port && !strcmp(cfg->allow[k].host, name);
		if (!dup)
			r = push_rule(cfg, addr, 32, port, name, err);
	}
	if (r < 0)
		cfg->nallow = before;
	return r;
}

int capsule_config_add_allow_cidr(capsule_config *cfg, const char *cidr_port, capsule_error *err)
{
	if (!cidr_port || !*cidr_port || strpbrk(cidr_port, "\n "))
		return cap_err_plain(err, EINVAL, "invalid --allow-cidr '%s': expected CIDR[:PORT]", cidr_port ? cidr_port : "");
	char head[64];
	uint16_t port = 0;
	int r = split_port("--allow-cidr", cidr_port, head, sizeof(head), &port, false, err);
	if (r < 0)
		return r;
	uint64_t prefix = 32;
	char *slash = strchr(head, '/');
	if (slash) {
		*slash = '\0';
		if (parse_uint(slash + 1, "prefix", 0, 32, &prefix, NULL) < 0)
			return cap_err_plain(err, EINVAL, "invalid --allow-cidr '%s': prefix '%s' is not 0-32", cidr_port,
					     slash + 1);
	}
	struct in_addr a;
	if (inet_pton(AF_INET, head, &a) != 1)
		return cap_err_plain(err, EINVAL, "invalid --allow-cidr '%s': '%s' is not an IPv4 address", cidr_port, head);
	uint32_t mask = prefix ? htonl(~0u << (32 - prefix)) : 0;
	return push_rule(cfg, a.s_addr & mask, (uint8_t)prefix, port, NULL, err);
}

void egress_rule_format(const struct egress_rule *e, char *buf, size_t size)
{
	char ip[INET_ADDRSTRLEN];
	struct in_addr a = { .s_addr = e->addr };
	inet_ntop(AF_INET, &a, ip, sizeof(ip));
	if (e->port)
		snprintf(buf, size, "%s/%u:%u", ip, e->prefix, e->port);
	else
		snprintf(buf, size, "%s/%u", ip, e->prefix);
}

int config_net_check(struct capsule_config *cfg, capsule_error *err)
{
	if ((cfg->nallow || cfg->nallow_names) && cfg->network != CAPSULE_NETWORK_FULL)
		return cap_err_plain(err, EINVAL, "an egress allowlist (--allow-host, --allow-cidr) needs --network full");
	if (cfg->egress_quota_bytes && cfg->network != CAPSULE_NETWORK_FULL)
		return cap_err_plain(err, EINVAL, "--egress-quota needs --network full");
	return 0;
}

int capsule_config_set_egress_quota(capsule_config *cfg, const char *size, capsule_error *err)
{
	uint64_t v;
	int r = parse_size(size, &v, NULL);
	if (r < 0 || v == 0)
		return cap_err_plain(err, EINVAL, "invalid --egress-quota '%s' (a size, e.g. 10M)", size ? size : "");
	cfg->egress_quota_bytes = v;
	return 0;
}

int capsule_config_set_dns_server(capsule_config *cfg, const char *addr_port, capsule_error *err)
{
	struct sockaddr_in sa;
	if (!addr_port || dns_server_parse(addr_port, &sa) < 0)
		return cap_err_plain(err, EINVAL, "invalid --dns-server '%s': expected IPV4[:PORT]", addr_port ? addr_port : "");
	snprintf(cfg->dns_server, sizeof(cfg->dns_server), "%s", addr_port);
	return 0;
}

int config_dns_private_switch(struct capsule_config *cfg, const char *value, capsule_error *err)
{
	if (value && strcmp(value, "1") && strcmp(value, "0"))
		return cap_err_plain(err, EINVAL, "invalid dns-private '%s' (use 1 or 0)", value);
	cfg->dns_private = !value || !strcmp(value, "1");
	return 0;
}

/* ---- config lines ---- */

void config_net_serialize(const struct capsule_config *cfg, FILE *f)
{
	fprintf(f, "network=%s\n", network_mode_name(cfg->network));
	for (size_t i = 0; i < cfg->nports; i++) {
		const struct port_forward *p = &cfg->ports[i];
		bool v6 = strchr(p->host_ip, ':') != NULL;
		fprintf(f, "port=%s%s%s:%u:%u\n", v6 ? "[" : "", p->host_ip, v6 ? "]" : "", p->host_port, p->guest_port);
	}
	for (size_t i = 0; i < cfg->nallow; i++) {
		char rule[64];
		egress_rule_format(&cfg->allow[i], rule, sizeof(rule));
		/* The port is always written, so that the name after it cannot be taken for one. */
		if (!cfg->allow[i].port)
			strcat(rule, ":0");
		fprintf(f, "allow=%s%s%s\n", rule, cfg->allow[i].host[0] ? ":" : "", cfg->allow[i].host);
	}
	for (size_t i = 0; i < cfg->nallow_names; i++)
		fprintf(f, "allow_name=%s:%u\n", cfg->allow_names[i].name, cfg->allow_names[i].port);
}

/* "a.b.c.d/p:port[:name]" as written above. */
static int parse_allow_line(struct capsule_config *cfg, const char *v, capsule_error *err)
{
	unsigned a[4], prefix, port;
	int off = 0;
	if (sscanf(v, "%3u.%3u.%3u.%3u/%2u:%5u%n", &a[0], &a[1], &a[2], &a[3], &prefix, &port, &off) != 6 ||
	    a[0] > 255 || a[1] > 255 || a[2] > 255 || a[3] > 255 || prefix > 32 || port > 65535 ||
	    (v[off] && (v[off] != ':' || strlen(v + off + 1) >= sizeof(cfg->allow[0].host))))
		return cap_err_plain(err, EINVAL, "sandbox configuration: invalid allow '%s'", v);
	uint32_t addr = htonl(a[0] << 24 | a[1] << 16 | a[2] << 8 | a[3]);
	return push_rule(cfg, addr, (uint8_t)prefix, (uint16_t)port, v[off] ? v + off + 1 : NULL, err);
}

int config_net_parse_line(struct capsule_config *cfg, const char *key, const char *value, capsule_error *err)
{
	int r;
	if (!strcmp(key, "network")) {
		if (capsule_config_set_network_name(cfg, value, NULL) < 0)
			return cap_err_plain(err, EINVAL, "sandbox configuration: invalid network '%s'", value);
		return 1;
	}
	if (!strcmp(key, "port")) {
		struct port_spec ps;
		if (parse_port_spec(value, &ps, NULL) < 0 || (r = add_port(cfg, &ps, value, err)) < 0)
			return cap_err_plain(err, EINVAL, "sandbox configuration: invalid port '%s'", value);
		return 1;
	}
	if (!strcmp(key, "allow"))
		return (r = parse_allow_line(cfg, value, err)) < 0 ? r : 1;
	if (!strcmp(key, "allow_name")) {
		char name[256];
		uint64_t port = 0;
		const char *colon = strrchr(value, ':');
		size_t n = colon ? (size_t)(colon - value) : 0;
		if (n && n < sizeof(name))
			memcpy(name, value, n);
		name[n < sizeof(name) ? n : 0] = '\0';
		if (!colon || parse_uint(colon + 1, "port", 0, 65535, &port, NULL) < 0 || !dns_name_valid(name) ||
		    (r = push_name(cfg, name, (uint16_t)port, err)) < 0)
			return cap_err_plain(err, EINVAL, "sandbox configuration: invalid allow_name '%s'", value);
		return 1;
	}
	return 0;
}

/* ---- a running sandbox's forwards ---- */

static int port_request(capsule_sandbox *sb, uint16_t type, const struct port_spec *ps, capsule_error *err)
{
	struct conn c;
	int r = conn_open(&c, capsule_sandbox_name(sb), err);
	if (r < 0)
		return r;
	struct cp_port m = {
		.host_ip = (char *)ps->host_ip,
		.host_port = ps->host_port,
		.guest_port = type == CP_PORT_ADD ? ps->guest_port : 0,
		.flags = ps->udp ? CP_PORT_UDP : 0,
	};
	r = cp_port_encode(&c.w, type, 1, &m);
	if (r < 0)
		r = cap_err(err, -r, "encoding a %s request", cp_type_name(type));
	else
		r = shim_request(&c, NULL, err);
	conn_close(&c);
	return r;
}

int capsule_port_add(capsule_sandbox *sb, const char *spec, capsule_error *err)
{
	if (!sb)
		return cap_err_plain(err, EINVAL, "port add: no sandbox given");
	struct port_spec ps;
	int r = parse_port_spec(spec, &ps, err);
	if (r < 0)
		return r;
	if (ps.udp)
		return cap_err_plain(err, EOPNOTSUPP, "port forward '%s': udp forwards are not supported (tcp only)", spec);
	return port_request(sb, CP_PORT_ADD, &ps, err);
}

int capsule_port_remove(capsule_sandbox *sb, const char *host_side, capsule_error *err)
{
	if (!sb)
		return cap_err_plain(err, EINVAL, "port rm: no sandbox given");
	if (!host_side || !*host_side || strlen(host_side) > 80)
		return cap_err_plain(err, EINVAL, "invalid port '%s': expected [HOSTIP:]HOSTPORT", host_side ? host_side : "");
	/* The host side of a mapping is a mapping's head: parse it as one, with any guest port. */
	char spec[96];
	snprintf(spec, sizeof(spec), "%s:1", host_side);
	struct port_spec ps;
	if (strchr(host_side, '/') || parse_port_spec(spec, &ps, NULL) < 0)
		return cap_err_plain(err, EINVAL, "invalid port '%s': expected [HOSTIP:]HOSTPORT", host_side);
	return port_request(sb, CP_PORT_REMOVE, &ps, err);
}

int capsule_ports_json(capsule_sandbox *sb, char **json_out, capsule_error *err)
{
	if (!json_out)
		return cap_err_plain(err, EINVAL, "ports: no output given");
	*json_out = NULL;
	if (!sb)
		return cap_err_plain(err, EINVAL, "ports: no sandbox given");
	return shim_json_request(capsule_sandbox_name(sb), CP_PORTS, json_out, err);
}

/* ---- a running sandbox's egress rules ---- */

static int net_rule_request(capsule_sandbox *sb, uint16_t type, const char *rule, capsule_error *err)
{
	const char *what = type == CP_NET_ALLOW ? "net allow" : "net deny";
	if (!sb)
		return cap_err_plain(err, EINVAL, "%s: no sandbox given", what);
	if (!rule || !*rule || strlen(rule) > CP_MAX_NET_RULE || strpbrk(rule, " \t\n"))
		return cap_err_plain(err, EINVAL, "%s: invalid rule '%s': expected NAME[:PORT] or CIDR[:PORT]", what,
				     rule ? rule : "");
	struct conn c;
	int r = conn_open(&c, capsule_sandbox_name(sb), err);
	if (r < 0)
		return r;
	struct cp_net_rule m = { .rule = (char *)rule };
	if ((r = cp_net_rule_encode(&c.w, type, 1, &m)) < 0)
		r = cap_err(err, -r, "encoding a %s request", cp_type_name(type));
	else
		r = shim_request(&c, NULL, err);
	conn_close(&c);
	return r;
}

int capsule_net_allow(capsule_sandbox *sb, const char *rule, capsule_error *err)
{
	return net_rule_request(sb, CP_NET_ALLOW, rule, err);
}

int capsule_net_deny(capsule_sandbox *sb, const char *rule, capsule_error *err)
{
	return net_rule_request(sb, CP_NET_DENY, rule, err);
}

int capsule_net_json(capsule_sandbox *sb, char **json_out, capsule_error *err)
{
	if (!json_out)
		return cap_err_plain(err, EINVAL, "net ls: no output given");
	*json_out = NULL;
	if (!sb)
		return cap_err_plain(err, EINVAL, "net ls: no sandbox given");
	return shim_json_request(capsule_sandbox_name(sb), CP_NET_LS, json_out, err);
}

/* ---- inspect ---- */

static void port_json(struct json_writer *j, const char *host_ip, int64_t host_port, int64_t guest_port, bool hot)
{
	json_object_begin(j);
	json_kv_string(j, "host_ip", host_ip);
	json_kv_int(j, "host_port", host_port);
	json_kv_int(j, "guest_port", guest_port);
	json_kv_string(j, "protocol", "tcp");
	json_kv_bool(j, "hot", hot);
	json_object_end(j);
}

static int live_port_json(const char *name, const char *value, size_t len, void *payload)
{
	(void)name;
	char *ip = NULL;
	int64_t hp = 0, gp = 0;
	bool hot = false;
	json_get_string(value, len, "host_ip", &ip);
	json_get_int(value, len, "host_port", &hp);
	json_get_int(value, len, "guest_port", &gp);
	json_get_bool(value, len, "hot", &hot);
	port_json(payload, ip ? ip : "", hp, gp, hot);
	free(ip);
	return 0;
}

void sandbox_net_inspect_json(capsule_sandbox *sb, const struct capsule_config *cfg, bool running,
			      struct json_writer *j)
{
	json_key(j, "network");
	json_object_begin(j);
	json_kv_string(j, "mode", network_mode_name(cfg->network));
	if (cfg->network == CAPSULE_NETWORK_FULL) {
		json_kv_string(j, "gateway", CAPSULE_NETWORK_GATEWAY);
		json_kv_string(j, "dns", CAPSULE_NETWORK_DNS);
	}
	json_key(j, "ports");
	json_array_begin(j);
	/* A running sandbox's shim knows the forwards added since it started too. */
	_cleanup_free_ char *live = NULL;
	if (!running || capsule_ports_json(sb, &live, NULL) < 0 ||
	    json_array_each(live, strlen(live), NET_MAX_PORTS_LISTED, live_port_json, j) < 0) {
		for (size_t i = 0; i < cfg->nports; i++)
			port_json(j, cfg->ports[i].host_ip, cfg->ports[i].host_port, cfg->ports[i].guest_port, false);
	}
	json_array_end(j);
	json_key(j, "allow");
	json_array_begin(j);
	for (size_t i = 0; i < cfg->nallow; i++) {
		char rule[64];
		egress_rule_format(&cfg->allow[i], rule, sizeof(rule));
		json_object_begin(j);
		json_kv_string(j, "rule", rule);
		if (cfg->allow[i].host[0])
			json_kv_string(j, "host", cfg->allow[i].host);
		json_object_end(j);
	}
	json_array_end(j);
	json_key(j, "allow_names");
	json_array_begin(j);
	for (size_t i = 0; i < cfg->nallow_names; i++) {
		json_object_begin(j);
		json_kv_string(j, "name", cfg->allow_names[i].name);
		json_kv_uint(j, "port", cfg->allow_names[i].port);
		json_object_end(j);
	}
	json_array_end(j);
	/* The proxy's state and the quota's use are the shim's: a running sandbox's, as it is. */
	_cleanup_free_ char *egress = NULL;
	if (running && (cfg->nallow || cfg->nallow_names || cfg->egress_quota_bytes) &&
	    capsule_net_json(sb, &egress, NULL) == 0) {
		json_key(j, "egress");
		json_raw(j, egress);
	}
	json_object_end(j);
}
