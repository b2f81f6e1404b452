/* The network of a vm (docs/architecture.md, "vm isolation"): QEMU's user-mode network for
 * `full`, and the port forwards' connections relayed over the agent channel in every mode
 * (FWD_CONNECT, docs/protocol.md). The listeners, their limits and the PORT_* requests are
 * the container level's (net.c); only what happens to an accepted connection differs. */
#ifndef CAPSULE_SHIM_VMNET_H
#define CAPSULE_SHIM_VMNET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "capsule.h"
#include "internal.h"
#include "net.h"
#include "proto.h"
#include "shares.h"

/* Agent channels the shim opens itself for forwarded connections: the top bit is theirs, so
 * they never meet the ids that client channels are mapped to. */
#define VM_FWD_CHAN_BIT 0x80000000u

static inline bool vm_fwd_chan(uint32_t chan)
{
	return (chan & VM_FWD_CHAN_BIT) != 0;
}

/* Whether the guest has a NIC (QEMU's user-mode network): the full mode, or a network
 * namespace by path (an OCI spec's: podman's, a pod's), in which QEMU then runs, so what the
 * guest sends leaves through that namespace's network as a container's would. */
static inline bool vm_net_nic(const struct capsule_config *cfg)
{
	return cfg->network == CAPSULE_NETWORK_FULL || cfg->net_ns;
}

/* QEMU's arguments for CFG's network (none for none and mounts-only), at most MAX, pointing at
 * static strings; and what goes on the kernel's command line into BUF: "" or
 * " capsule.net=full", and with an allowlist " capsule.allow=ADDR/PREFIX[:PORT],..." and
 * " capsule.dns=proxy", with a quota " capsule.quota=BYTES", behind a joined network namespace
 * " capsule.ports=report" (the agent loads them as nf_tables
 * rules before it answers: src/agent/vm_egress.c; and relays DNS to the shim's proxy). VM_NET_CMDLINE_MAX
 * holds the longest. The module group "net" (virtio_net) is named by vm_module_groups
 * (initramfs.c). */
#define VM_NET_CMDLINE_MAX (128 + CAPSULE_MAX_ALLOW * 25)
size_t vm_net_qemu_args(const struct capsule_config *cfg, const char **out, size_t max);
void vm_net_cmdline(const struct capsule_config *cfg, char *buf, size_t size);

/* 0 when CFG's egress allowlist (if any) can be had in a vm: the kernel the vm would boot
 * has every feature built in (capsule's own has nf_tables). Else -EOPNOTSUPP and one line
 * naming the kernel, for the shim to say before anything of the sandbox starts. A builtin
 * kernel without nf_tables is found out at boot: the agent refuses to go on without its
 * table. */
int vm_net_allowlist_check(const struct capsule_config *cfg, capsule_error *err);

/* With an allowlist and the shares (a root shim), run/<name>/hosts is the shares' entry
 * VM_NET_HOSTS_ENTRY (read-only), for the shim to have the agent bind it over /etc/hosts
 * (VM_MOUNT) before any command runs. A rootless vm has no shares: its guest then has no
 * names for the allowed hosts, only their addresses. */
#define VM_NET_HOSTS_ENTRY "hosts"
bool vm_net_hosts_wanted(const struct capsule_config *cfg, const struct vm_shares *s);
int vm_net_hosts_attach(const struct capsule_config *cfg, struct vm_shares *s, capsule_error *err);

/* Sends a frame to the agent (header A, payload B) for CTX, as the shim's io_to_agent2. */
typedef void (*vm_fwd_send_fn)(void *ctx, const void *a, size_t an, const void *b, size_t bn);

/* Once the agent runs: N's forwards become net_relay_ops that carry each accepted connection
 * over the agent channel (a FWD_CONNECT for its guest side), and accepting starts. */
int vm_fwd_start(struct net *n, vm_fwd_send_fn send, void *ctx, capsule_error *err);
/* The agent's VM_LISTENING (the ports its guest listens on) for a vm behind a joined network
 * namespace: this shim's claims in the namespace's map become those ports, less those another
 * vm there holds (docs/architecture.md, "Several vms in one pod"). */
void vm_fwd_listening(struct net *n, const uint8_t *payload, size_t len);
/* A frame from the agent on a channel of ours (vm_fwd_chan). */
void vm_fwd_agent_frame(struct net *n, const struct cp_header *h, const uint8_t *payload);

#endif
