/* The library's connection to a sandbox's shim (client.c), and the one a handle lends out
 * (sandbox.c). */
#ifndef CAPSULE_CONN_H
#define CAPSULE_CONN_H

#include <stdbool.h>
#include <stdint.h>

#include "capsule.h"
#include "proto.h"

/* A blocking protocol connection to a sandbox's shim. */
struct conn {
	int fd;
	struct cp_rxbuf rx;
	struct cp_writer w;
	bool nonblocking;
	bool spin;
	/* conn_open_pipelined: the shim's HELLO is still to come, ahead of every other frame.
	 * HELLO_NAME (the sandbox's, for messages) outlives the connection. */
	bool hello_pending;
	const char *hello_name;
	/* Our pipelined HELLO, not sent yet: it goes in the same sendmsg as the first request
	 * (a CLI exec's EXEC, a pool's TAKE), so the shim finds both in one read. */
	uint8_t hello_out[64];
	uint8_t hello_out_len;
	/* Opened for one command (CP_HELLO_ONE_COMMAND): the shim closes it after that
	 * command's end, so it is never lent again. */
	bool one_command;
};
/* Connect to run/<name>/control.sock and exchange HELLO. -ENOTCONN when the sandbox is not
 * running. */
int conn_open(struct conn *c, const char *name, capsule_error *err);
/* The same, without waiting for the shim's HELLO: the first request goes out right behind
 * ours, and conn_recv checks the answer to it before any other frame. One round trip less
 * for a client that makes one call (the CLI's exec). NAME must outlive the connection. DIR is
 * NAME's run folder when the caller has it open (taken, closed here), else -1. */
int conn_open_pipelined(struct conn *c, const char *name, int dir, capsule_error *err);
/* The same for one command (CP_HELLO_ONE_COMMAND): the shim closes it after that command. */
int conn_open_one_command(struct conn *c, const char *name, int dir, capsule_error *err);
/* Adopt an fd that is already past HELLO (the creator's socketpair). */
void conn_adopt(struct conn *c, int fd);
/* Send the frame encoded in c->w. */
int conn_send(struct conn *c, capsule_error *err);
/* The same with NFDS descriptors (at most CP_EXEC_MAX_FDS) passed along as SCM_RIGHTS; the
 * caller keeps its own. */
int conn_send_fds(struct conn *c, const int *fds, size_t nfds, capsule_error *err);
/* Send IOV[0..N) whole with as few sendmsg calls as the socket allows (IOV is consumed):
 * frames sent together reach the shim in one read and cost it one wakeup. */
struct iovec;
int conn_sendv(struct conn *c, struct iovec *iov, int n, capsule_error *err);
/* Receive one frame; TIMEOUT_MS < 0 waits forever, 0 does not wait (-EAGAIN). The payload
 * stays valid until conn_consume. */
int conn_recv(struct conn *c, struct cp_header *h, const uint8_t **payload, int timeout_ms, capsule_error *err);
void conn_consume(struct conn *c, const struct cp_header *h);
/* Turn an ERROR frame's payload into err and return its -errno. */
int conn_error_from_frame(const uint8_t *payload, size_t len, capsule_error *err);
void conn_close(struct conn *c);
/* Send the request the shim answers itself (MOUNT, PORT_ADD, ...) encoded in C->w on channel
 * 1 and wait for its final answer. On OK the fields it carries are decoded into *OK (when OK
 * is not NULL). */
int shim_request(struct conn *c, struct cp_request_ok *ok, capsule_error *err);
/* A bare request of TYPE (MOUNTS, PORTS, STATS) to sandbox NAME's shim on a connection of its
 * own; *JSON_OUT (malloc'd) is the JSON its OK carries. */
int shim_json_request(const char *name, uint16_t type, char **json_out, capsule_error *err);
/* The same, waiting up to TIMEOUT_MS for the answer (a save copies a whole layer). */
int shim_request_wait(struct conn *c, struct cp_request_ok *ok, int timeout_ms, capsule_error *err);

/* The creator's connection of an ephemeral sandbox is already past HELLO: it is lent to one
 * command at a time, which saves a connect and a round trip on every exec. NULL when there is
 * none or it is lent out; then the caller opens its own. *CHAN is a channel id not used on it
 * before. */
struct conn *sandbox_borrow_conn(capsule_sandbox *sb, uint32_t *chan);
/* The same for a command after which the handle makes no other call: a connection opened
 * for it is its alone (conn_open_one_command). */
struct conn *sandbox_borrow_conn_last(capsule_sandbox *sb, uint32_t *chan);
/* The same, but only a connection that is open and idle now: never connects (which waits for
 * the shim's HELLO). For calls that must not block. */
struct conn *sandbox_borrow_idle_conn(capsule_sandbox *sb, uint32_t *chan);
void sandbox_return_conn(capsule_sandbox *sb);

#endif
