/* The shim's side of networking (docs/architecture.md, "Network"): slirp4netns for the full
 * mode, the egress allowlist loaded into the sandbox's own network namespace, and port
 * forwards: listeners on the host whose connections the shim relays, in its epoll loop, to
 * sockets made inside the sandbox's network namespace. */
#ifndef CAPSULE_SHIM_NET_H
#define CAPSULE_SHIM_NET_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "capsule.h"
#include "container.h"
#include "internal.h"
#include "proto.h"
#include "util.h"

/* epoll keys at or above this belong to net_event. */
#define NET_KEY_BASE (1ull << 40)
/* Forwards at once: the boot-time ones and those added to the running sandbox. */
#define NET_MAX_FORWARDS 64
/* Relayed connections at once, all forwards of one sandbox together. */
#define NET_MAX_CONNS 128
/* Sockets the factory makes at a time. */
#define NET_SOCKET_BATCH 16

struct net_forward {
	bool used;
	bool hot; /* added to the running sandbox */
	int fd;   /* the listening socket on the host */
	struct port_forward pf;
	unsigned nconns;
	uint64_t accepted;
};

struct net_dir {
	int pipe_r, pipe_w;
	size_t bytes; /* in the pipe */
	bool src_eof;
	bool shut;    /* dst got SHUT_WR */
};

struct net_conn {
	bool used;
	bool connecting;
	int fwd;
	int fd[2];             /* 0: the host client, 1: the socket in the sandbox */
	uint32_t events[2];    /* what each fd is registered for, ~0u when not registered */
	struct net_dir dir[2]; /* 0: host -> sandbox, 1: sandbox -> host */
};

struct net;
struct egress; /* egress.c */

/* Where a forward's accepted connections go when they do not go to a socket in the sandbox's
 * network namespace (this file's relay, the container level's): the vm level carries them over
 * the agent channel (vmnet.c). Its epoll keys are NET_KEY_BASE | NET_KEY_RELAY | index. */
#define NET_KEY_RELAY (3ull << 32)
struct net_relay_ops {
	void (*accept)(struct net *n, int fwd, int cfd);
	void (*event)(struct net *n, size_t index, uint32_t events);
	/* Forward FWD goes (removed, or the sandbox ends): so do its connections. */
	void (*forward_closed)(struct net *n, int fwd);
	void (*free)(struct net *n);
};

struct net {
	int epfd;
	FILE *log;
	const struct capsule_config *cfg;
	const struct container *ct;
	bool rootless;
	pid_t slirp_pid;
	int slirp_exit_fd; /* its --exit-fd: slirp4netns exits when we close this */
	pid_t factory_pid; /* a child in the sandbox's network namespace that makes sockets there */
	int factory_fd;
	int pool[NET_SOCKET_BATCH]; /* sockets the factory made, not used yet */
	size_t npool;
	struct net_forward fwd[NET_MAX_FORWARDS];
	struct net_conn conns[NET_MAX_CONNS];
	unsigned nconns;
	const struct net_relay_ops *relay; /* NULL: connections go into the sandbox's namespace */
	void *relay_state;
	struct egress *egress; /* the egress rules and DNS proxy, NULL without them */
	/* A vm's network namespace by path (config's net_ns), where QEMU runs: the namespace
	 * net_nft enters when there is no container (vmnet.c), and its listener's forward. */
	bool joined;
	int joined_fd;
};

/* Between net.c and net_ns.c: a TCP socket made inside the sandbox's network namespace (by
 * the socket factory, started at the first call), for a forward's connection. */
int net_sandbox_socket(struct net *n, int *out, capsule_error *err);

/* The DNS proxy's address inside the sandbox (its resolv.conf), port 53. */
#define NET_DNS_PROXY_ADDR "127.0.0.53"
/* The DNS proxy's UDP socket, bound inside the sandbox's network namespace. */
int net_sandbox_dns_socket(struct net *n, int *out, capsule_error *err);
/* Run `nft -f -` with TEXT in the sandbox's network namespace; with OUT, `nft -j` with TEXT's
 * words as its arguments instead (a listing), and what it printed. */
int net_nft(struct net *n, const char *text, size_t len, char **out, capsule_error *err);

/* The egress rules (egress.c): the table loaded at start, the DNS proxy, the NET_* requests. */
int egress_start(struct net *n, capsule_error *err);
/* A vm's (the guest's kernel holds the table its agent made at boot): SEND carries EGRESS
 * frames to the agent for CTX, unanswered; CALL sends M on a channel of its own and waits for
 * the agent's answer, the quota's use into *USED. RESTORED: the guest was resumed from disk,
 * with the table it had. */
typedef void (*egress_send_fn)(void *ctx, const void *a, size_t an, const void *b, size_t bn);
typedef int (*egress_call_fn)(void *ctx, const struct cp_egress *m, uint64_t *used, capsule_error *err);
int egress_vm_start(struct net *n, egress_send_fn send, egress_call_fn call, void *ctx, bool restored,
		    capsule_error *err);
/* A vm agent's DNS_QUERY (chan 0). */
void egress_vm_query(struct net *n, const uint8_t *payload, size_t len);
void egress_event(struct net *n, uint64_t key);
void egress_free(struct net *n);
int egress_allow(struct net *n, const char *rule, capsule_error *err);
int egress_deny(struct net *n, const char *rule, capsule_error *err);
int egress_json(struct net *n, char **out, capsule_error *err);
#define NET_KEY_DNS (4ull << 32)

/* Before the sandbox exists: listen on every configured forward (a host port that is taken
 * fails here, with nothing else made yet), and for the full mode write run/<name>/resolv.conf
 * (and hosts, for --allow-host names). */
int net_prepare(struct net *n, const struct capsule_config *cfg, int epfd, int run_fd, FILE *log, capsule_error *err);
#define NET_ETC_ATTRS (MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC)
/* Detached read-only mounts of those files and where they go in the sandbox, appended to
 * TREES/TARGETS (room for 2). */
int net_etc_trees(struct net *n, int run_fd, int *trees, const char **targets, size_t *count, capsule_error *err);
/* Once the agent runs (CT): start slirp4netns and wait until the interface is configured,
 * load the allowlist, and start accepting on the forwards. */
int net_start(struct net *n, const struct container *ct, bool rootless, uint64_t deadline_ms, capsule_error *err);
void net_event(struct net *n, uint64_t key, uint32_t events);
/* Whether an event's KEY is a forward's (a listener, or a forwarded connection at either
 * level), not the DNS proxy's. */
bool net_key_is_forward(uint64_t key);
/* A line to shim.log, "net: ..." (nothing without a log). */
void net_log(struct net *n, const char *fmt, ...) _printf_(2, 3);
/* Start accepting on every forward (net_start does it for a container). */
void net_arm_forwards(struct net *n);
/* SIGCHLD: reap our children that exited; FORCE: kill and reap them all, close everything. */
void net_reap(struct net *n, bool force);

int net_port_add(struct net *n, const struct cp_port *m, capsule_error *err);
int net_port_remove(struct net *n, const struct cp_port *m, capsule_error *err);
int net_ports_json(struct net *n, char **out, capsule_error *err);

#endif
