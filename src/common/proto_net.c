/* The network (proto.h): port forwards (PORT_ADD, PORT_REMOVE, PORTS), a vm's forwarded
 * connections (FWD_CONNECT) and egress rules (NET_ALLOW, NET_DENY, NET_LS). */
#include <arpa/inet.h>
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

/* ---- a vm's DNS proxy ---- */

static void packet_put(struct cp_writer *w, const struct cp_dns_packet *m)
{
	cp_put_u32(w, CP_T_DNS_ADDR, m->addr);
	cp_put_u32(w, CP_T_DNS_PORT, m->port);
	cp_put_bytes(w, CP_T_DNS_PACKET, m->data, m->len);
}

static bool packet_valid(const struct cp_dns_packet *m)
{
	return m->len <= CP_MAX_DNS_PACKET && m->port >= 1 && m->port <= 65535;
}

/* A packet field of PACKET, or the client's address or port: 1; another field: 0. */
static int packet_field(const struct cp_field *f, struct cp_dns_packet *m)
{
	switch (f->tag) {
	case CP_T_DNS_ADDR: return cp_field_u32(f, &m->addr) < 0 ? -EBADMSG : 1;
	case CP_T_DNS_PORT: return cp_field_u32(f, &m->port) < 0 ? -EBADMSG : 1;
	case CP_T_DNS_PACKET:
		if (f->len == 0 || f->len > CP_MAX_DNS_PACKET)
			return -EBADMSG;
		memcpy(m->data, f->val, f->len);
		m->len = f->len;
		return 1;
	}
	return 0;
}

int cp_dns_query_encode(struct cp_writer *w, uint32_t chan, const struct cp_dns_packet *m)
{
	if (!packet_valid(m) || m->len == 0)
		return -EINVAL;
	cp_frame_begin(w, CP_DNS_QUERY, 0, chan);
	packet_put(w, m);
	return cp_frame_finish(w);
}

int cp_dns_query_decode(const uint8_t *p, size_t n, struct cp_dns_packet *m)
{
	int ret = 0;
	m->addr = m->port = 0;
	m->len = 0;
	DECODE_LOOP(p, n, { r = packet_field(&f, m) < 0 ? -EBADMSG : 0; });
	if (packet_valid(m) && m->len)
		return 0;
	ret = -EBADMSG;
fail:
	m->len = 0;
	return ret;
}

/* An element: its address as it is in memory (network order), port and TTL little endian. */
static void elem_put(struct cp_writer *w, uint16_t tag, const struct cp_egress_elem *e)
{
	uint8_t b[10];
	memcpy(b, &e->addr, 4);
	put_le16(b + 4, e->port);
	put_le32(b + 6, e->ttl_s);
	cp_put_bytes(w, tag, b, sizeof(b));
}

static int elem_get(const struct cp_field *f, bool add, struct cp_egress_elem *list, size_t *n)
{
	if (f->len != 10 || *n >= CP_MAX_EGRESS_ELEMS)
		return -EBADMSG;
	struct cp_egress_elem *e = &list[(*n)++];
	memcpy(&e->addr, f->val, 4);
	e->port = get_le16(f->val + 4);
	e->ttl_s = get_le32(f->val + 6);
	return (add ? e->ttl_s >= 1 && e->ttl_s <= CP_MAX_EGRESS_TTL_S : e->ttl_s == 0) ? 0 : -EBADMSG;
}

static bool cidr_valid(const struct cp_egress_cidr *c)
{
	/* The prefix is the peer's byte: checked before it sizes a shift. */
	if (c->prefix > 32)
		return false;
	uint32_t mask = c->prefix ? htonl(~0u << (32 - c->prefix)) : 0;
	return !(c->addr & ~mask);
}

int cp_egress_encode(struct cp_writer *w, uint32_t chan, const struct cp_egress *m)
{
	if (m->ndel > CP_MAX_EGRESS_ELEMS || m->nadd > CP_MAX_EGRESS_ELEMS || m->ncidrs > CP_MAX_EGRESS_CIDRS ||
	    (m->ncidrs && !m->set_cidrs) || (m->answer.len && !packet_valid(&m->answer)))
		return -EINVAL;
	for (size_t i = 0; i < m->ncidrs; i++)
		if (!cidr_valid(&m->cidrs[i]))
			return -EINVAL;
	for (size_t i = 0; i < m->nadd; i++)
		if (m->add[i].ttl_s < 1 || m->add[i].ttl_s > CP_MAX_EGRESS_TTL_S)
			return -EINVAL;
	cp_frame_begin(w, CP_EGRESS, 0, chan);
	for (size_t i = 0; i < m->ndel; i++)
		elem_put(w, CP_T_EGRESS_DEL, &(struct cp_egress_elem){ .addr = m->del[i].addr, .port = m->del[i].port });
	for (size_t i = 0; i < m->nadd; i++)
		elem_put(w, CP_T_EGRESS_ADD, &m->add[i]);
	if (m->set_cidrs)
		cp_put_u32(w, CP_T_EGRESS_SET_CIDRS, 1);
	for (size_t i = 0; i < m->ncidrs; i++) {
		uint8_t b[7];
		memcpy(b, &m->cidrs[i].addr, 4);
		b[4] = m->cidrs[i].prefix;
		put_le16(b + 5, m->cidrs[i].port);
		cp_put_bytes(w, CP_T_EGRESS_CIDR, b, sizeof(b));
	}
	if (m->answer.len)
		packet_put(w, &m->answer);
	return cp_frame_finish(w);
}

int cp_egress_decode(const uint8_t *p, size_t n, struct cp_egress *m)
{
	int ret = 0;
	m->ndel = m->nadd = m->ncidrs = 0;
	m->set_cidrs = false;
	m->answer = (struct cp_dns_packet){ .len = 0 };
	DECODE_LOOP(p, n, {
		if (f.tag == CP_T_EGRESS_DEL || f.tag == CP_T_EGRESS_ADD) {
			bool add = f.tag == CP_T_EGRESS_ADD;
			r = elem_get(&f, add, add ? m->add : m->del, add ? &m->nadd : &m->ndel);
		} else if (f.tag == CP_T_EGRESS_SET_CIDRS) {
			uint32_t v;
			r = cp_field_u32(&f, &v) < 0 || v != 1 ? -EBADMSG : 0;
			m->set_cidrs = true;
		} else if (f.tag == CP_T_EGRESS_CIDR) {
			if (f.len != 7 || m->ncidrs >= CP_MAX_EGRESS_CIDRS) {
				r = -EBADMSG;
			} else {
				struct cp_egress_cidr *c = &m->cidrs[m->ncidrs++];
				memcpy(&c->addr, f.val, 4);
				c->prefix = f.val[4];
				c->port = get_le16(f.val + 5);
				r = cidr_valid(c) ? 0 : -EBADMSG;
			}
		} else {
			r = packet_field(&f, &m->answer) < 0 ? -EBADMSG : 0;
		}
	});
	if ((!m->answer.len || packet_valid(&m->answer)) && (m->set_cidrs || !m->ncidrs))
		return 0;
	ret = -EBADMSG;
fail:
	m->ndel = m->nadd = m->ncidrs = m->answer.len = 0;
	m->set_cidrs = false;
	return ret;
}

int cp_egress_used_encode(struct cp_writer *w, uint32_t chan, const struct cp_egress_used *m)
{
	cp_frame_begin(w, CP_EGRESS_USED, 0, chan);
	cp_put_u64(w, CP_T_EGRESS_BYTES, m->bytes);
	cp_put_u64(w, CP_T_EGRESS_USED, m->used);
	return cp_frame_finish(w);
}

int cp_egress_used_decode(const uint8_t *p, size_t n, struct cp_egress_used *m)
{
	int ret = 0;
	*m = (struct cp_egress_used){ 0 };
	DECODE_LOOP(p, n, {
		if (f.tag == CP_T_EGRESS_BYTES)
			r = cp_field_u64(&f, &m->bytes);
		else if (f.tag == CP_T_EGRESS_USED)
			r = cp_field_u64(&f, &m->used);
	});
	return 0;
fail:
	return ret;
}

/* ---- a vm's listening ports ---- */

static bool listening_valid(const struct cp_vm_listening *m)
{
	if (m->n > CP_MAX_VM_LISTENING)
		return false;
	for (size_t i = 0; i < m->n; i++)
		if (!m->port[i] || (i && m->port[i] <= m->port[i - 1]))
			return false;
	return true;
}

int cp_vm_listening_encode(struct cp_writer *w, uint32_t chan, const struct cp_vm_listening *m)
{
	if (!listening_valid(m))
		return -EINVAL;
	cp_frame_begin(w, CP_VM_LISTENING, 0, chan);
	for (size_t i = 0; i < m->n; i++)
		cp_put_u32(w, CP_T_VM_LISTENING_PORT, m->port[i]);
	return cp_frame_finish(w);
}

int cp_vm_listening_decode(const uint8_t *p, size_t n, struct cp_vm_listening *m)
{
	int ret = 0;
	m->n = 0;
	DECODE_LOOP(p, n, {
		if (f.tag == CP_T_VM_LISTENING_PORT) {
			uint32_t v;
			if (cp_field_u32(&f, &v) < 0 || v > 65535 || m->n >= CP_MAX_VM_LISTENING)
				r = -EBADMSG;
			else
				m->port[m->n++] = (uint16_t)v;
		}
	});
	if (listening_valid(m))
		return 0;
	ret = -EBADMSG;
fail:
	m->n = 0;
	return ret;
}
