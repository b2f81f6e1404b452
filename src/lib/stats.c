/* capsule_sandbox_stats: the shim's STATS answer (docs/protocol.md) read into the public
 * struct. The shim measures (src/shim/stats.c); this only asks and decodes. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "json.h"
#include "util.h"

static bool get_u64(const char *text, size_t len, const char *key, uint64_t *out)
{
	int64_t v;
	if (json_get_int(text, len, key, &v) < 0 || v < 0)
		return false;
	*out = (uint64_t)v;
	return true;
}

static int net_entry(const char *name, const char *value, size_t len, void *payload)
{
	capsule_stats *st = payload;
	if (st->n_net == CAPSULE_STATS_NET_MAX)
		return 0;
	_cleanup_free_ char *ifname = NULL;
	if (json_get_string(value, len, "interface", &ifname) < 0)
		return -EBADMSG;
	typeof(st->net[0]) *n = &st->net[st->n_net];
	snprintf(n->name, sizeof(n->name), "%s", ifname);
	if (!get_u64(value, len, "rx_bytes", &n->rx_bytes) || !get_u64(value, len, "tx_bytes", &n->tx_bytes) ||
	    !get_u64(value, len, "rx_packets", &n->rx_packets) || !get_u64(value, len, "tx_packets", &n->tx_packets))
		return -EBADMSG;
	st->n_net++;
	return 0;
}

int capsule_sandbox_stats(capsule_sandbox *sb, capsule_stats *out, capsule_error *err)
{
	if (!sb || !out)
		return cap_err_plain(err, EINVAL, "stats: no sandbox or no output given");
	memset(out, 0, sizeof(*out));
	_cleanup_free_ char *t = NULL;
	int r = shim_json_request(capsule_sandbox_name(sb), CP_STATS, &t, err);
	if (r < 0)
		return r;
	size_t len = strlen(t);
	uint64_t active = 0;
	const char *net = NULL;
	size_t net_len = 0;
	if (!get_u64(t, len, "active", &active) || !get_u64(t, len, "idle_ms", &out->idle_ms) ||
	    json_get_member(t, len, "network", &net, &net_len) < 0 ||
	    json_array_each(net, net_len, 64, net_entry, out) < 0) {
		return cap_err_plain(err, EPROTO, "sandbox '%s' answered STATS with a malformed object",
				     capsule_sandbox_name(sb));
	}
	out->active = (uint32_t)active;
	out->has_cpu = get_u64(t, len, "cpu_usec", &out->cpu_usec);
	out->has_memory = get_u64(t, len, "memory_bytes", &out->memory_bytes);
	out->has_pids = get_u64(t, len, "pids", &out->pids);
	out->has_disk = get_u64(t, len, "disk_read_bytes", &out->disk_read_bytes) &&
			get_u64(t, len, "disk_write_bytes", &out->disk_write_bytes);
	get_u64(t, len, "memory_limit", &out->memory_limit_bytes);
	get_u64(t, len, "pids_limit", &out->pids_limit);
	out->has_oom = get_u64(t, len, "oom_kills", &out->oom_kills);
	return 0;
}
