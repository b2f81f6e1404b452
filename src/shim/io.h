/* The shim's I/O layer: one epoll set, the agent's connection, the clients' connections and
 * the channels that multiplex the clients' commands onto the agent's. It knows frames and
 * flow control, not what a request means: the shim's request dispatch (requests.c) and its
 * lifecycle (lifecycle.c) sit on top, and hear back through the two callbacks. */
#ifndef CAPSULE_SHIM_IO_H
#define CAPSULE_SHIM_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto.h"
#include "util.h"

#define MAX_CLIENTS 256
#define MAX_CHANNELS 4096
#define MAX_CHANNELS_PER_CLIENT 256
#define CLIENT_OUTQ_MAX (16u << 20)
#define CORK_FRAME_MAX (16u * 1024) /* larger frames are never held back by io_cork */
#define AGENT_OUTQ_MAX (8u << 20)

/* epoll keys; NET_KEY_BASE (net.h) and up are the network's. */
enum { KEY_LISTEN = 1, KEY_AGENT, KEY_PIDFD, KEY_SIGNAL, KEY_SAVE, KEY_CLIENT_BASE = 16 };

/* Bytes waiting to be written to a non-blocking socket, and descriptors to pass with some of
 * them (a direct stream's socket, with the one frame it belongs to: cp_rxbuf_fill_fds). */
struct outq_fd {
	uint64_t at; /* stream offset of the frame's first byte */
	size_t len;  /* the frame's length */
	int fd;      /* closed once sent */
};
struct outq {
	uint8_t *buf;
	size_t start, len, cap;
	uint64_t sent; /* stream offset of buf[start] */
	struct outq_fd *fds;
	unsigned nfds, fds_cap;
};

struct client {
	bool used;
	int fd;
	bool owner;      /* the creator of an ephemeral sandbox: its EOF ends the sandbox */
	bool hello_done;
	bool closing;    /* flush what is queued, then close */
	bool stop_waiter; /* gets OK when the stop completes */
	uint32_t stop_chan;
	bool gone;        /* closed while its request waits for the guest: freed once it returns */
	struct cp_rxbuf rx;
	struct outq out;
	unsigned nchans;  /* channels open for this client: one client cannot take them all */
	uint32_t events;  /* what epoll watches on fd (see agent_events) */
	bool corked;      /* out holds frames held back by io_cork_clients, not yet tried */
	bool one_command; /* CP_HELLO_ONE_COMMAND: closed by us once its last channel ends */
};

/* One multiplexed channel: (client, its channel id) <-> the agent's channel id. */
struct channel {
	bool used;
	int client;            /* index in clients[], -1 once the client is gone */
	uint32_t client_chan;
	uint32_t agent_chan;
	bool started;           /* the agent said STARTED: it says so once */
	/* An FS READ or WRITE that asked for a direct stream (CP_FS_DIRECT) where descriptors
	 * can be passed: the agent's STARTED gets a socketpair (agent.c). DIRECT_READ: the agent
	 * sends on it. */
	bool direct, direct_read;
	bool fs; /* an FS request: its answer may be followed at once by the client's next */
	uint64_t out_credit[3]; /* stdout/stderr bytes the client has granted */
	uint64_t in_credit;     /* stdin bytes the agent has granted */
};

struct shim_io {
	int epfd;
	int agent_fd; /* -1 while there is no agent */
	struct cp_rxbuf agent_rx;
	struct outq agent_out;
	uint32_t agent_events; /* what epoll watches on agent_fd: a relayed frame that changes
				* nothing costs no epoll_ctl */
	struct cp_writer w; /* where a frame is encoded before it is sent */
	struct client clients[MAX_CLIENTS];
	struct channel chans[MAX_CHANNELS];
	size_t chans_hwm; /* chans[] at or past this index were never used: lookups stop here */
	uint32_t next_agent_chan;
	/* While a request waits for the guest's answer, the client that asked is muted (its
	 * buffers hold the request being served) and the agent channel it waits on is not
	 * handed out: -1 and 0 when no one waits. */
	int muted_client;
	bool cork_clients; /* io_cork_clients: small frames to clients wait for the uncork */
	bool cork_agent;   /* io_cork_agent: small frames to the agent wait for the uncork */
	bool agent_corked; /* agent_out holds frames held back, not yet tried */
	uint32_t reserved_chan;
	/* Activity, the one definition of idle (STATS, capsule_sandbox_stats): the command and
	 * file channels open now, and when the last of them ended (monotonic ms). */
	unsigned active;
	uint64_t idle_since_ms;
	/* A gone client's receive buffer and output queue (IO_CLIENT_BUF bytes each), kept for
	 * the next one (io_client_close says why), or NULL. */
	uint8_t *spare_rx, *spare_out;
	/* What the layer above does when the agent's connection fails (a write to it did), and
	 * when a client's connection is gone (OWNER: the creator of an ephemeral sandbox). */
	void (*agent_failed)(struct shim_io *io);
	void (*client_gone)(struct shim_io *io, int ci, bool owner);
};

void outq_free(struct outq *q);
int outq_push(struct outq *q, const void *p, size_t n);
size_t outq_pending(const struct outq *q);
/* Write what the socket takes; -errno when the peer is gone. */
int outq_flush(struct outq *q, int fd);

/* No agent, no clients, no channels; EPFD is the loop's epoll set. */
void io_init(struct shim_io *io, int epfd);
void io_watch(struct shim_io *io, int fd, uint64_t key, uint32_t events);
void io_unwatch(struct shim_io *io, int fd);

/* The agent's end of the socketpair becomes the agent connection (not yet in the epoll set). */
void io_agent_attach(struct shim_io *io, int fd);
/* Close the agent connection and drop what was queued for it or read from it. */
void io_agent_close(struct shim_io *io);
void io_agent_update_events(struct shim_io *io);
bool io_agent_backlogged(const struct shim_io *io);
/* EPOLLOUT on the agent: send what is queued, and read clients again once it drains. */
void io_agent_writable(struct shim_io *io);

void io_client_update_events(struct shim_io *io, int ci);
void io_all_clients_update_events(struct shim_io *io);

void io_to_agent2(struct shim_io *io, const void *p, size_t n, const void *p2, size_t n2);
void io_to_agent(struct shim_io *io, const void *p, size_t n);
/* A frame (header HDR, PAYLOAD) that carries descriptor FD, which is closed here once sent
 * (or when the peer goes). Sent at once, behind what is queued. */
void io_to_agent_fd(struct shim_io *io, const uint8_t *hdr, const void *payload, size_t n, int fd);
/* The same with NFDS descriptors (at most CP_EXEC_MAX_FDS), in one SCM_RIGHTS message. */
void io_to_agent_fds(struct shim_io *io, const uint8_t *hdr, const void *payload, size_t n, const int *fds,
		     unsigned nfds);
void io_to_client_fd(struct shim_io *io, int ci, const uint8_t *hdr, const void *payload, size_t n, int fd);
void io_to_client2(struct shim_io *io, int ci, const void *p, size_t n, const void *p2, size_t n2);
/* Between a cork and its uncork, small frames for clients (for the agent) are queued, then
 * sent in one sendmsg: the frames of one read from the agent (from a client) wake their
 * reader once. A wait for the agent's answer (agent_wait_loop) uncorks the clients first. */
void io_cork_clients(struct shim_io *io);
void io_uncork_clients(struct shim_io *io);
void io_cork_agent(struct shim_io *io);
void io_uncork_agent(struct shim_io *io);
void io_to_client(struct shim_io *io, int ci, const void *p, size_t n);
/* An ERROR frame to client CI on CHAN. */
void io_client_error(struct shim_io *io, int ci, uint32_t chan, int errnum, const char *fmt, ...) _printf_(5, 6);
/* Pass a frame on with a new channel id: to the agent, or to client CI. */
void io_forward(struct shim_io *io, bool to_the_agent, int ci, const struct cp_header *h, const uint8_t *payload,
		uint32_t chan);
/* The same to the agent, with the NFDS descriptors FDS that came with it (EXEC's). */
void io_forward_fds(struct shim_io *io, const struct cp_header *h, const uint8_t *payload, uint32_t chan,
		    const int *fds, unsigned nfds);

struct channel *io_chan_by_client(struct shim_io *io, int ci, uint32_t client_chan);
struct channel *io_chan_by_agent(struct shim_io *io, uint32_t agent_chan);
/* A channel for client CI's CLIENT_CHAN with a fresh agent channel; NULL when all are taken. */
struct channel *io_chan_new(struct shim_io *io, int ci, uint32_t client_chan);
/* A fresh agent channel for a request of the shim's own (no client channel behind it). */
uint32_t io_agent_chan_new(struct shim_io *io);
/* The agent's final frame on CH has been passed on: the channel is free again. */
void io_chan_done(struct shim_io *io, struct channel *ch);
/* Every channel ends as its command would under SIGNO (an EXIT to its client). */
void io_chans_end(struct shim_io *io, int signo);

/* Fill the spare client buffers where they are not: the first client of a sandbox that has had
 * none go yet (a pooled sandbox's taker) then maps nothing. */
void io_spares_prime(struct shim_io *io);
/* A new connection (OWNER: the ephemeral sandbox's creator); its index, or -1 (then closed). */
int io_client_add(struct shim_io *io, int fd, bool owner);
void io_client_close(struct shim_io *io, int ci);
/* EPOLLOUT on client CI; false when the client is gone after it. */
bool io_client_writable(struct shim_io *io, int ci);
/* The shim exits: each client gets what is queued for it, blocking for at most a second. */
void io_clients_last_words(struct shim_io *io);

#endif
