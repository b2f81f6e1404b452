/* The network (proto.h): port forwards (PORT_ADD, PORT_REMOVE, PORTS), a vm's forwarded
 * connections (FWD_CONNECT) and egress rules (NET_ALLOW, NET_DENY, NET_LS). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "proto_internal.h"

/* ---- port forwards ---- */

static bool port_msg_valid(uint16_t type, const struct cp_port *m)
{
	bool add = type == CP_PORT_ADD;
	return m->host_ip && m->host_ip[0] && strlen(m->host_ip) <= CP_MAX_PORT_HOST_IP && m->host_port >= 1 &&
	       m->host_port <= 65535 && (add ? m->guest_port >= 1 && m->guest_port <= 65535 : m->guest_port == 0) &&
	       !(m->flags & ~CP_PORT_FLAGS_KNOWN);
}

int cp_port_encode(struct cp_writer *w, uint16_t type, uint32_t chan, const struct cp_port *m)
{
	if ((type != CP_PORT_ADD && type != CP_PORT_REMOVE) || !port_msg_valid(type, m))
		return -EINVAL;
	cp_frame_begin(w, type, 0, chan);
	cp_put_str(w, CP_T_PORT_HOST_IP, m->host_ip);
	cp_put_u32(w, CP_T_PORT_HOST_PORT, m->host_port);
	if (type == CP_PORT_ADD)
		cp_put_u32(w, CP_T_PORT_GUEST_PORT, m->guest_port);
	cp_put_u32(w, CP_T_PORT_FLAGS, m->flags);
	return cp_frame_finish(w);
}

int cp_port_decode(uint16_t type, const uint8_t *p, size_t n, struct cp_port *m)
{
	int ret = 0;
	memset(m, 0, sizeof(*m));
	DECODE_LOOP(p, n, {
		switch (f.tag) {
		case CP_T_PORT_HOST_IP: r = field_set_long_str(&f, CP_MAX_PORT_HOST_IP, &m->host_ip); break;
		case CP_T_PORT_HOST_PORT: r = cp_field_u32(&f, &m->host_port); break;
		case CP_T_PORT_GUEST_PORT: r = cp_field_u32(&f, &m->guest_port); break;
		case CP_T_PORT_FLAGS: r = cp_field_u32(&f, &m->flags); break;
		}
	});
	if ((type != CP_PORT_ADD && type != CP_PORT_REMOVE) || !port_msg_valid(type, m)) {
		ret = -EBADMSG;
		goto fail;
	}
	return 0;
fail:
	cp_port_free(m);
	return ret;
}

void cp_port_free(struct cp_port *m)
{
	free(m->host_ip);
	memset(m, 0, sizeof(*m));
}

/* ---- forwarded connections of a vm ---- */

int cp_fwd_connect_encode(struct cp_writer *w, uint32_t chan, const struct cp_fwd_connect *m)
{
	if (m->port < 1 || m->port > 65535)
		return -EINVAL;
	cp_frame_begin(w, CP_FWD_CONNECT, 0, chan);
	cp_put_u32(w, CP_T_FWD_CONNECT_PORT, m->port);
	return cp_frame_finish(w);
}

int cp_fwd_connect_decode(const uint8_t *p, size_t n, struct cp_fwd_connect *m)
{
	int ret = 0;
	memset(m, 0, sizeof(*m));
	DECODE_LOOP(p, n, {
		if (f.tag == CP_T_FWD_CONNECT_PORT)
			r = cp_field_u32(&f, &m->port);
	});
	if (m->port < 1 || m->port > 65535) {
		ret = -EBADMSG;
		goto fail;
	}
	return 0;
fail:
	memset(m, 0, sizeof(*m));
	return ret;
}
/* ---- egress rules ---- */

static bool net_rule_valid(uint16_t type, const struct cp_net_rule *m)
{
	return (type == CP_NET_ALLOW || type == CP_NET_DENY) && m->rule && m->rule[0] &&
	       strlen(m->rule) <= CP_MAX_NET_RULE;
}

int cp_net_rule_encode(struct cp_writer *w, uint16_t type, uint32_t chan, const struct cp_net_rule *m)
{
	if (!net_rule_valid(type, m))
		return -EINVAL;
	cp_frame_begin(w, type, 0, chan);
	cp_put_str(w, CP_T_NET_RULE, m->rule);
	return cp_frame_finish(w);
}

int cp_net_rule_decode(uint16_t type, const uint8_t *p, size_t n, struct cp_net_rule *m)
{
	int ret = 0;
	memset(m, 0, sizeof(*m));
	DECODE_LOOP(p, n, {
		if (f.tag == CP_T_NET_RULE)
			r = field_set_long_str(&f, CP_MAX_NET_RULE, &m->rule);
	});
	if (!net_rule_valid(type, m)) {
		ret = -EBADMSG;
		goto fail;
	}
	return 0;
fail:
	cp_net_rule_free(m);
	return ret;
}

void cp_net_rule_free(struct cp_net_rule *m)
{
	free(m->rule);
	memset(m, 0, sizeof(*m));
}
