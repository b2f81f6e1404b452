/* The capsule wire protocol (docs/protocol.md): framed, multiplexed, versioned, with credit
 * based flow control for streams. The same codec runs on both hops (client <-> shim,
 * shim <-> agent). Every decoder here treats its input as hostile: lengths, counts and totals
 * are bounded, and nothing is read outside the buffer it was given.
 *
 * One header; the code is one file per message family: proto.c (frames, fields, HELLO, ERROR,
 * DATA, frame assembly), proto_exec.c (EXEC and its streams, STOP, INIT, what an agent may
 * answer), proto_fs.c, proto_mounts.c (hot and vm mounts), proto_saves.c, proto_net.c (port
 * forwards, a vm's forwarded connections) and proto_display.c. */
#ifndef CAPSULE_PROTO_H
#define CAPSULE_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CP_VERSION 1
#define CP_HEADER_SIZE 12
#define CP_MAX_PAYLOAD (1u << 20)      /* hard limit on one frame's payload */
#define CP_DATA_CHUNK (128u * 1024)     /* what senders put in one DATA frame */
#define CP_INITIAL_WINDOW (1024u * 1024) /* credit each stream starts with, per direction */

/* Limits on decoded messages, far above real use and far below what hurts. */
#define CP_MAX_ARGS 4096
#define CP_MAX_ENV 4096
#define CP_MAX_STRING (64u * 1024) /* one argv/env/path string */

enum cp_type {
	CP_HELLO = 1,   /* chan 0; both sides send it first: version, role */
	CP_ERROR = 2,   /* final reply on a channel: errno + message */
	CP_OK = 3,      /* final (or only) reply on a channel; may carry fields */

	CP_EXEC = 16,    /* start a process on a new channel */
	CP_STARTED = 17, /* the process runs: pid */
	CP_DATA = 18,    /* stream bytes; flags: stream | CP_FLAG_EOF; payload is raw bytes */
	CP_CREDIT = 19,  /* the receiver of a stream grants more bytes */
	CP_EXIT = 20,    /* final: the process ended */
	CP_SIGNAL = 21,  /* send a signal to the channel's process (or to PID) */
	CP_RESIZE = 22,  /* pty window size */

	CP_STOP = 32,    /* client -> shim: stop the sandbox gracefully */
	CP_TAKE = 33,    /* client -> shim: a pool's ready sandbox becomes the client's, under a name */
	CP_INIT = 48,    /* shim -> agent, once after HELLO: the sandbox's settings */
	CP_SHUTDOWN = 49, /* shim -> agent: SIGTERM everything, exit after the grace time */
	CP_VM_MOUNT = 50,   /* shim -> agent (vm): mount a share's entry or a tmpfs in the guest */
	CP_VM_UNMOUNT = 51, /* shim -> agent (vm): remove a mount VM_MOUNT made, checked by its id */
	CP_VM_MOUNTED = 52, /* agent -> shim (vm): VM_MOUNT's answer, the new mount's id */
	CP_FWD_CONNECT = 53, /* shim -> agent (vm): connect to 127.0.0.1:PORT in the guest on a new channel */
	CP_FWD_CLOSE = 54,   /* shim -> agent (vm): drop a forwarded connection at once */
	CP_DIRECT = 55,      /* shim -> agent (container): a direct stream's socket (SCM_RIGHTS), or none */
	CP_DNS_QUERY = 56,   /* agent -> shim (vm), chan 0: a DNS query a guest program sent to the proxy */
	CP_EGRESS = 57,      /* shim -> agent (vm): close and open addresses, then answer a DNS query */
	CP_EGRESS_USED = 58, /* agent -> shim (vm): EGRESS's answer on a channel: the quota's use */
	CP_VM_LISTENING = 59, /* agent -> shim (vm), chan 0: the TCP ports the guest listens on, when they change */

	CP_FS = 64,      /* a filesystem operation on a new channel (struct cp_fs) */
	CP_WATCH = 65,   /* client -> agent: stream a folder's changes on a new channel (proto_watch.c) */
	CP_MOUNT = 80,   /* client -> shim: bind a host path into the running sandbox */
	CP_UNMOUNT = 81, /* client -> shim: remove a hot mount, by guest path or handle */
	CP_MOUNTS = 82,  /* client -> shim: list every mount (boot-time and hot) */
	CP_PORT_ADD = 83,    /* client -> shim: forward a host port into the running sandbox */
	CP_PORT_REMOVE = 84, /* client -> shim: remove a port forward by its host side */
	CP_PORTS = 85,       /* client -> shim: list the port forwards */
	CP_STATS = 86,       /* client -> shim: activity and resource use, a JSON object */
	CP_LIMITS = 87,      /* client -> shim: change a running sandbox's cgroup limits (proto_limits.c) */
	CP_SAVE = 96,    /* client -> shim: save, checkpoint, revert or fork the sandbox's filesystem */
	CP_PAUSE = 97,   /* client -> shim: pause or resume every process of the sandbox (proto_saves.c) */
	CP_SCREENSHOT = 100, /* client -> shim: a vm's screen as PNG, in chunks (proto_display.c) */
	CP_INPUT = 101,      /* client -> shim: keys, text, mouse moves and clicks for a vm's display */
	CP_NET_ALLOW = 120,  /* client -> shim: allow NAME[:PORT] or CIDR[:PORT] out of the running sandbox */
	CP_NET_DENY = 121,   /* client -> shim: remove an allowed entry */
	CP_NET_LS = 122,     /* client -> shim: the egress rules, the proxy's open addresses, the quota */
};

#define CP_FLAG_STREAM_MASK 0x00ffu
#define CP_FLAG_EOF 0x0100u

enum cp_stream { CP_STREAM_STDIN = 0, CP_STREAM_STDOUT = 1, CP_STREAM_STDERR = 2 };

struct cp_header {
	uint32_t len;   /* payload bytes after the header, <= CP_MAX_PAYLOAD */
	uint16_t type;  /* enum cp_type */
	uint16_t flags;
	uint32_t chan;  /* 0: the connection itself; others chosen by the requester */
};

/* Encode HDR into OUT (CP_HEADER_SIZE bytes, little endian). */
void cp_header_encode(uint8_t out[CP_HEADER_SIZE], const struct cp_header *hdr);
/* Decode a header from BUF (at least CP_HEADER_SIZE bytes). -EBADMSG if len is over
 * CP_MAX_PAYLOAD or the type is unknown. */
int cp_header_decode(const uint8_t *buf, size_t n, struct cp_header *hdr);
bool cp_type_known(uint16_t type);
const char *cp_type_name(uint16_t type);

/* ---- payload fields: a sequence of (u16 tag, u32 len, value) --------------------------- */

struct cp_writer {
	uint8_t *buf;
	size_t len, cap;
	int err; /* sticky: the first -errno seen; later puts do nothing */
};

void cp_writer_init(struct cp_writer *w);
void cp_writer_free(struct cp_writer *w);
void cp_put_u32(struct cp_writer *w, uint16_t tag, uint32_t v);
void cp_put_u64(struct cp_writer *w, uint16_t tag, uint64_t v);
void cp_put_str(struct cp_writer *w, uint16_t tag, const char *s);
void cp_put_bytes(struct cp_writer *w, uint16_t tag, const void *p, size_t n);
/* Reserve room for a frame header at the start; cp_writer_finish fills it in and returns the
 * whole frame (header + payload) in w->buf/w->len, or w->err. */
void cp_frame_begin(struct cp_writer *w, uint16_t type, uint16_t flags, uint32_t chan);
int cp_frame_finish(struct cp_writer *w);

struct cp_field {
	uint16_t tag;
	uint32_t len;
	const uint8_t *val;
};

struct cp_reader {
	const uint8_t *p;
	size_t rem;
};

/* 1 and *F filled: a field; 0: end of payload; -EBADMSG: truncated or malformed. */
int cp_next_field(struct cp_reader *r, struct cp_field *f);
int cp_field_u32(const struct cp_field *f, uint32_t *v); /* -EBADMSG unless len == 4 */
int cp_field_u64(const struct cp_field *f, uint64_t *v); /* -EBADMSG unless len == 8 */
/* A string field: no NUL inside, len <= CP_MAX_STRING. Returns a malloc'd copy in *out. */
int cp_field_strdup(const struct cp_field *f, char **out);
/* The same with a bound of MAX bytes instead of CP_MAX_STRING. */
int cp_field_strndup(const struct cp_field *f, size_t max, char **out);
/* Replace *SLOT with a fresh copy of the string field; a repeated field keeps the last value. */
int cp_field_set_str(const struct cp_field *f, char **slot);

/* ---- messages ------------------------------------------------------------------------- */

/* Field tags are per message; unknown tags are skipped so that newer peers can add fields. */

struct cp_hello {
	uint32_t version;
	char *role; /* "client", "shim", "agent" */
	uint32_t flags; /* CP_HELLO_*: a client's */
};
enum { CP_T_HELLO_VERSION = 1, CP_T_HELLO_ROLE = 2, CP_T_HELLO_FLAGS = 3 };
/* The connection carries one command: the shim closes it once that command's channel has
 * ended (its EXIT or ERROR sent), so the client's own close wakes no one. */
#define CP_HELLO_ONE_COMMAND 0x1u

struct cp_error_msg {
	uint32_t errnum; /* positive errno */
	char *message;
};
enum { CP_T_ERROR_ERRNO = 1, CP_T_ERROR_MESSAGE = 2 };

#define CP_EXEC_TTY 0x1u
#define CP_EXEC_STDIN 0x2u
#define CP_EXEC_DETACH 0x4u
/* The supplementary groups are exactly GROUPS (an OCI process's additionalGids), not the
 * user's groups from the sandbox's /etc/group. */
#define CP_EXEC_GROUPS 0x8u
/* No no_new_privs for this command (an OCI process's noNewPrivileges false). */
#define CP_EXEC_NEW_PRIVS 0x10u
/* What an OCI process asks beyond a command's defaults (docs/oci.md). */
#define CP_EXEC_MAX_GROUPS 64
#define CP_EXEC_MAX_RLIMITS 16
/* Descriptors a command gets as 3, 4, ... (an OCI runtime's --preserve-fds). They travel with
 * the EXEC frame's own bytes as one SCM_RIGHTS message (client -> shim -> agent, where both
 * hops are unix sockets: the container level), in order; FDS says how many must arrive, so
 * that one lost on the way fails the command instead of shifting the rest. */
#define CP_EXEC_MAX_FDS 64
struct cp_rlimit {
	uint32_t resource;
	uint64_t soft, hard;
};
struct cp_exec {
	char **argv; /* NULL-terminated */
	size_t argc;
	char **env; /* NULL-terminated "K=V" */
	size_t envc;
	char *cwd;  /* may be NULL */
	char *user; /* may be NULL */
	uint32_t flags;
	uint32_t rows, cols;
	uint32_t timeout_ms;
	uint32_t groups[CP_EXEC_MAX_GROUPS]; /* with CP_EXEC_GROUPS */
	size_t ngroups;
	bool caps_set;                       /* the command's capabilities are CAPS, not INIT's (which only root keeps) */
	uint64_t caps;
	uint64_t caps_inheritable, caps_ambient; /* with caps_set: subsets of CAPS */
	bool umask_set;
	uint32_t umask;
	bool oom_score_adj_set;
	uint32_t oom_score_adj; /* 0 to 1000 */
	struct cp_rlimit rlimits[CP_EXEC_MAX_RLIMITS]; /* set before exec */
	size_t nrlimits;
	uint8_t *seccomp_bpf; /* a filter installed above INIT's, or NULL */
	size_t seccomp_len;
	uint32_t nfds; /* descriptors that come with the frame (CP_EXEC_MAX_FDS at most) */
};
enum {
	CP_T_EXEC_ARG = 1, /* repeated, in order */
	CP_T_EXEC_ENV = 2, /* repeated */
	CP_T_EXEC_CWD = 3,
	CP_T_EXEC_USER = 4,
	CP_T_EXEC_FLAGS = 5,
	CP_T_EXEC_ROWS = 6,
	CP_T_EXEC_COLS = 7,
	CP_T_EXEC_TIMEOUT_MS = 8,
	CP_T_EXEC_GROUP = 9,   /* repeated u32 */
	CP_T_EXEC_CAPS = 10,   /* u64 */
	CP_T_EXEC_RLIMIT = 11, /* repeated: u32 resource, u64 soft, u64 hard (little-endian) */
	CP_T_EXEC_SECCOMP = 12,
	CP_T_EXEC_CAPS_INHERITABLE = 13, /* u64 */
	CP_T_EXEC_CAPS_AMBIENT = 14,     /* u64 */
	CP_T_EXEC_UMASK = 15,            /* u32 */
	CP_T_EXEC_OOM_SCORE_ADJ = 16,    /* u32, 0 to 1000 */
	CP_T_EXEC_FDS = 17,              /* u32, 1 to CP_EXEC_MAX_FDS: descriptors passed with the frame */
};

struct cp_started {
	uint32_t pid;
};
enum { CP_T_STARTED_PID = 1 };

struct cp_credit {
	uint32_t stream;
	uint32_t bytes;
};
enum { CP_T_CREDIT_STREAM = 1, CP_T_CREDIT_BYTES = 2 };

struct cp_exit {
	int32_t exit_code;
	uint32_t signal;
	uint32_t timed_out;
};
enum { CP_T_EXIT_CODE = 1, CP_T_EXIT_SIGNAL = 2, CP_T_EXIT_TIMED_OUT = 3 };

struct cp_signal {
	uint32_t signo;
	uint32_t pid; /* 0: the channel's process */
};
enum { CP_T_SIGNAL_SIGNO = 1, CP_T_SIGNAL_PID = 2 };

struct cp_resize {
	uint32_t rows, cols;
};
enum { CP_T_RESIZE_ROWS = 1, CP_T_RESIZE_COLS = 2 };

struct cp_stop {
	uint32_t timeout_ms;
	uint32_t keep; /* STOP: 1 keeps an ephemeral sandbox, stopped, as a detached one is kept */
	/* STOP: 1 removes the sandbox, detached or not, as an ephemeral one's end does: the name
	 * is free when the stop is answered, the folder goes after the answer (rm -f) */
	uint32_t remove;
};
enum { CP_T_STOP_TIMEOUT_MS = 1, CP_T_STOP_KEEP = 2, CP_T_STOP_REMOVE = 3 };

/* TAKE: the ready sandbox of pool POOL becomes NAME (renamed when NAME differs), owned by the
 * connection that asks (its close ends the sandbox) or, DETACHED, by nobody. Answered by OK
 * or ERROR; of two takers one gets OK, the other ERROR (EBUSY). */
struct cp_take {
	char *name; /* required, a sandbox name */
	char *pool; /* required, the pool the taker expects the sandbox to be in */
	uint32_t detached;
};
enum { CP_T_TAKE_NAME = 1, CP_T_TAKE_POOL = 2, CP_T_TAKE_DETACHED = 3 };
#define CP_MAX_TAKE_NAME 63u

/* What the agent needs to know about its sandbox. */
struct cp_init {
	uint8_t *seccomp_bpf; /* struct sock_filter array, installed on every command */
	size_t seccomp_len;   /* bytes; a multiple of 8 */
	char **env;           /* default environment, NULL-terminated */
	size_t envc;
	uint64_t cap_keep;    /* capability bits kept for commands run as root */
	uint32_t flags;
};
enum {
	CP_T_INIT_SECCOMP = 1,
	CP_T_INIT_ENV = 2,
	CP_T_INIT_CAP_KEEP = 3,
	CP_T_INIT_FLAGS = 4,
};
#define CP_MAX_SECCOMP_BYTES (64u * 1024)

/* A filesystem operation, resolved by the agent inside the sandbox. Replies:
 *  STAT: OK carrying one entry's fields.  LIST: DATA on stream 1 whose payloads are whole
 *  entry records (u32 length + entry fields; a record never spans frames), then OK.
 *  READ: DATA on stream 1 (the last with EOF), then OK.  WRITE: STARTED once the temporary
 *  file is open, then the client streams DATA on stream 0 under credit; its EOF commits and
 *  the agent answers OK with the new file's entry. Others: OK. Any: ERROR. */
enum cp_fs_op {
	CP_FS_STAT = 1,
	CP_FS_LIST = 2,
	CP_FS_READ = 3,
	CP_FS_WRITE = 4,
	CP_FS_MKDIR = 5,
	CP_FS_REMOVE = 6,
	CP_FS_RENAME = 7,
	CP_FS_SYMLINK = 8,
};
#define CP_FS_PARENTS 0x1u
#define CP_FS_RECURSIVE 0x2u
#define CP_FS_FORCE 0x4u
#define CP_FS_NOREPLACE 0x8u
/* READ, WRITE: the stream's bytes may travel on a socket of their own, past the shim (see
 * docs/protocol.md, "Direct streams"). A request, not a promise: where descriptors can be
 * passed (the container level) an agent that wants it (a write, a read of more than a chunk)
 * answers STARTED and waits; the shim then makes a socketpair and passes one end to the agent
 * with a DIRECT frame and the other to the client with STARTED. Otherwise, or with an
 * DIRECT that carries none, the stream is DATA frames as without the flag. */
#define CP_FS_DIRECT 0x10u
#define CP_FS_PATH_MAX 4096u
#define CP_FS_NAME_MAX 255u

struct cp_fs {
	uint32_t op;
	char *path;
	char *path2; /* RENAME: the new path; SYMLINK: the link's target */
	uint32_t flags;
	uint32_t mode;
};
enum { CP_T_FS_OP = 1, CP_T_FS_PATH = 2, CP_T_FS_PATH2 = 3, CP_T_FS_FLAGS = 4, CP_T_FS_MODE = 5 };

enum cp_fs_kind { CP_FS_KIND_FILE = 1, CP_FS_KIND_DIR = 2, CP_FS_KIND_SYMLINK = 3, CP_FS_KIND_OTHER = 4 };
struct cp_fs_entry {
	char *name;
	uint32_t kind;
	uint64_t size;
	uint32_t mode; /* 07777 */
	int64_t mtime_ns;
	uint32_t uid, gid;
	char *link; /* symlinks only */
};
enum {
	CP_T_ENT_NAME = 1,
	CP_T_ENT_KIND = 2,
	CP_T_ENT_SIZE = 3,
	CP_T_ENT_MODE = 4,
	CP_T_ENT_MTIME_NS = 5,
	CP_T_ENT_UID = 6,
	CP_T_ENT_GID = 7,
	CP_T_ENT_LINK = 8,
};
/* Hot mounts. MOUNT and UNMOUNT are answered by OK (MOUNT's with the handle) or ERROR;
 * MOUNTS (no fields) by OK with the list as a JSON array. */
#define CP_MOUNT_RO 0x1u
#define CP_MOUNT_ALLOW_SENSITIVE 0x2u
#define CP_MOUNT_FLAGS_KNOWN (CP_MOUNT_RO | CP_MOUNT_ALLOW_SENSITIVE)
#define CP_MAX_MOUNT_HANDLE 64u
#define CP_MAX_LIST_JSON (CP_MAX_PAYLOAD - 1024) /* a list fits one frame, or is refused */
struct cp_mount {
	char *host_path;  /* required */
	char *guest_path; /* required */
	uint32_t flags;   /* CP_MOUNT_*; unknown bits are refused */
};
enum { CP_T_MOUNT_HOST_PATH = 1, CP_T_MOUNT_GUEST_PATH = 2, CP_T_MOUNT_FLAGS = 3 };

struct cp_unmount {
	char *target; /* required: a guest path (starts with '/') or a handle */
};
enum { CP_T_UNMOUNT_TARGET = 1 };

/* The fields an OK may carry in answer to a request the shim serves itself: MOUNT (handle),
 * MOUNTS, PORTS and STATS (list_json, STATS's an object); the others carry none. */
struct cp_request_ok {
	char *handle;    /* at most CP_MAX_MOUNT_HANDLE bytes */
	char *list_json; /* at most CP_MAX_LIST_JSON bytes */
};
enum { CP_T_REQUEST_OK_HANDLE = 1, CP_T_REQUEST_OK_LIST_JSON = 2 };

/* Port forwards. PORT_ADD and PORT_REMOVE are answered by OK or ERROR; PORTS (no fields) by
 * OK carrying the list as a JSON array (cp_request_ok.list_json). */
#define CP_PORT_UDP 0x1u
#define CP_PORT_FLAGS_KNOWN CP_PORT_UDP
#define CP_MAX_PORT_HOST_IP 63u
struct cp_port {
	char *host_ip;      /* required: an address's text form, at most CP_MAX_PORT_HOST_IP bytes */
	uint32_t host_port; /* required, 1-65535 */
	uint32_t guest_port; /* PORT_ADD: required, 1-65535; PORT_REMOVE: absent (0) */
	uint32_t flags;     /* CP_PORT_*; unknown bits are refused */
};
enum { CP_T_PORT_HOST_IP = 1, CP_T_PORT_HOST_PORT = 2, CP_T_PORT_GUEST_PORT = 3, CP_T_PORT_FLAGS = 4 };

/* A forwarded connection of a vm (docs/protocol.md, "Forwarded connections"): FWD_CONNECT
 * opens the channel; STARTED answers once the guest socket is connected (ERROR when it is
 * not); the bytes then flow as DATA, stream 0 towards the guest and stream 1 back, each under
 * credit with a window of CP_FWD_WINDOW, EOF passed on as a half-close; the agent ends the
 * channel with OK once both ways are done (or ERROR). FWD_CLOSE (no fields) drops it. */
#define CP_FWD_WINDOW (512u * 1024)
struct cp_fwd_connect {
	uint32_t port; /* required, 1-65535 */
};
enum { CP_T_FWD_CONNECT_PORT = 1 };

/* Egress rules (proto_net.c). NET_ALLOW and NET_DENY carry one rule, answered by OK or ERROR;
 * NET_LS (no fields) by OK with list_json. */
#define CP_MAX_NET_RULE 300u
struct cp_net_rule {
	char *rule; /* required: "NAME[:PORT]" or "CIDR[:PORT]", at most CP_MAX_NET_RULE bytes, no NUL */
};
enum { CP_T_NET_RULE = 1 };
int cp_fwd_connect_encode(struct cp_writer *w, uint32_t chan, const struct cp_fwd_connect *m);
int cp_fwd_connect_decode(const uint8_t *p, size_t n, struct cp_fwd_connect *m);

/* A vm's DNS proxy (docs/protocol.md, "A vm's DNS proxy"). The agent relays each datagram a
 * guest program sends to 127.0.0.53:53 as DNS_QUERY (chan 0, never answered); the shim
 * decides and sends EGRESS (chan 0): the elements to delete from the guest's sets, those to
 * add with their timeouts, then the answer to send back to the client, in that order, so the
 * first connect after a lookup finds its address open. EGRESS may also replace the allowed
 * networks (set_cidrs). EGRESS on a channel of its own is answered, once done, by EGRESS_USED
 * (the quota's use) or ERROR. The decoders take
 * at most CP_MAX_EGRESS_ELEMS elements each way and a packet of at most CP_MAX_DNS_PACKET. */
#define CP_MAX_DNS_PACKET 1232u
#define CP_MAX_EGRESS_ELEMS 64u
#define CP_MAX_EGRESS_TTL_S 86400u
#define CP_MAX_EGRESS_CIDRS 128u
struct cp_dns_packet {
	uint32_t addr;  /* the guest client's IPv4 address, network order */
	uint32_t port;  /* its UDP port, 1-65535 */
	size_t len;     /* 0: none (EGRESS without an answer) */
	uint8_t data[CP_MAX_DNS_PACKET];
};
struct cp_egress_elem {
	uint32_t addr;  /* network order */
	uint16_t port;  /* 0: the address's every port (set dns_any), else dns_port */
	uint32_t ttl_s; /* add: 1-CP_MAX_EGRESS_TTL_S; delete: 0 */
};
struct cp_egress_cidr {
	uint32_t addr;  /* network order, no bit set past the prefix */
	uint8_t prefix; /* 0-32 */
	uint16_t port;  /* 0: any */
};
struct cp_egress {
	struct cp_egress_elem del[CP_MAX_EGRESS_ELEMS], add[CP_MAX_EGRESS_ELEMS];
	size_t ndel, nadd;
	/* With set_cidrs, the allowed networks become these (NCIDRS, none included). */
	bool set_cidrs;
	struct cp_egress_cidr cidrs[CP_MAX_EGRESS_CIDRS];
	size_t ncidrs;
	struct cp_dns_packet answer;
};
struct cp_egress_used {
	uint64_t bytes; /* the quota's size, 0: none */
	uint64_t used;
};
enum { CP_T_DNS_ADDR = 1, CP_T_DNS_PORT = 2, CP_T_DNS_PACKET = 3, CP_T_EGRESS_DEL = 4, CP_T_EGRESS_ADD = 5,
       CP_T_EGRESS_BYTES = 6, CP_T_EGRESS_USED = 7, CP_T_EGRESS_SET_CIDRS = 8, CP_T_EGRESS_CIDR = 9 };
int cp_dns_query_encode(struct cp_writer *w, uint32_t chan, const struct cp_dns_packet *m);
int cp_dns_query_decode(const uint8_t *p, size_t n, struct cp_dns_packet *m);
int cp_egress_encode(struct cp_writer *w, uint32_t chan, const struct cp_egress *m);
int cp_egress_decode(const uint8_t *p, size_t n, struct cp_egress *m);
int cp_egress_used_encode(struct cp_writer *w, uint32_t chan, const struct cp_egress_used *m);
int cp_egress_used_decode(const uint8_t *p, size_t n, struct cp_egress_used *m);

/* The TCP ports a vm's guest listens on (docs/architecture.md, "Several vms in one pod"): sent
 * by the agent of a vm behind a joined network namespace (capsule.ports=report) whenever the
 * set changes, chan 0, never answered; the shim claims each port in the namespace for its
 * guest. Ports are 1-65535, strictly ascending, at most CP_MAX_VM_LISTENING. */
#define CP_MAX_VM_LISTENING 64u
struct cp_vm_listening {
	uint16_t port[CP_MAX_VM_LISTENING];
	size_t n;
};
enum { CP_T_VM_LISTENING_PORT = 1 };
int cp_vm_listening_encode(struct cp_writer *w, uint32_t chan, const struct cp_vm_listening *m);
int cp_vm_listening_decode(const uint8_t *p, size_t n, struct cp_vm_listening *m);

/* Each message has encode (a whole frame into W: header + fields) and decode (the payload
 * only; allocates; on error nothing is left allocated). free accepts a zeroed struct. */
int cp_hello_encode(struct cp_writer *w, uint32_t chan, const struct cp_hello *m);
int cp_hello_decode(const uint8_t *p, size_t n, struct cp_hello *m);
void cp_hello_free(struct cp_hello *m);

int cp_error_encode(struct cp_writer *w, uint32_t chan, const struct cp_error_msg *m);
int cp_error_decode(const uint8_t *p, size_t n, struct cp_error_msg *m);
void cp_error_free(struct cp_error_msg *m);

int cp_exec_encode(struct cp_writer *w, uint32_t chan, const struct cp_exec *m);
int cp_exec_decode(const uint8_t *p, size_t n, struct cp_exec *m);
void cp_exec_free(struct cp_exec *m);

int cp_started_encode(struct cp_writer *w, uint32_t chan, const struct cp_started *m);
int cp_started_decode(const uint8_t *p, size_t n, struct cp_started *m);

int cp_credit_encode(struct cp_writer *w, uint32_t chan, const struct cp_credit *m);
int cp_credit_decode(const uint8_t *p, size_t n, struct cp_credit *m);

int cp_exit_encode(struct cp_writer *w, uint32_t chan, const struct cp_exit *m);
int cp_exit_decode(const uint8_t *p, size_t n, struct cp_exit *m);

int cp_signal_encode(struct cp_writer *w, uint32_t chan, const struct cp_signal *m);
int cp_signal_decode(const uint8_t *p, size_t n, struct cp_signal *m);

int cp_resize_encode(struct cp_writer *w, uint32_t chan, const struct cp_resize *m);
int cp_resize_decode(const uint8_t *p, size_t n, struct cp_resize *m);

int cp_stop_encode(struct cp_writer *w, uint32_t chan, const struct cp_stop *m);
/* SHUTDOWN (shim -> agent) carries the STOP message's body; it is decoded by cp_stop_decode. */
int cp_shutdown_encode(struct cp_writer *w, uint32_t chan, const struct cp_stop *m);
int cp_stop_decode(const uint8_t *p, size_t n, struct cp_stop *m);
int cp_take_encode(struct cp_writer *w, uint32_t chan, const struct cp_take *m);
int cp_take_decode(const uint8_t *p, size_t n, struct cp_take *m);
void cp_take_free(struct cp_take *m);

int cp_init_encode(struct cp_writer *w, uint32_t chan, const struct cp_init *m);
int cp_init_decode(const uint8_t *p, size_t n, struct cp_init *m);
void cp_init_free(struct cp_init *m);

int cp_fs_encode(struct cp_writer *w, uint32_t chan, const struct cp_fs *m);
int cp_fs_decode(const uint8_t *p, size_t n, struct cp_fs *m);
void cp_fs_free(struct cp_fs *m);

/* An entry as the payload of an OK frame (STAT, WRITE). */
int cp_fs_entry_encode_ok(struct cp_writer *w, uint32_t chan, const struct cp_fs_entry *m);
/* Decode one entry from the fields in P..P+N. The name must be a single component (no '/',
 * not "." or ".."), or exactly "/" (STAT of the root; never in a LIST record), a link
 * target at most CP_FS_PATH_MAX bytes: the agent is not trusted. */
int cp_fs_entry_decode(const uint8_t *p, size_t n, struct cp_fs_entry *m);
void cp_fs_entry_free(struct cp_fs_entry *m);
/* LIST records: append one record (u32 length + fields) to BUF (no frame header). */
int cp_fs_record_append(struct cp_writer *w, const struct cp_fs_entry *m);
/* Take the next record from a LIST DATA payload: 1 and *M filled, 0 at the end, -EBADMSG
 * (a record running past the payload, or a bad entry). Unless 1, *M is left zeroed. */
int cp_fs_record_next(struct cp_reader *r, struct cp_fs_entry *m);

int cp_mount_encode(struct cp_writer *w, uint32_t chan, const struct cp_mount *m);
int cp_mount_decode(const uint8_t *p, size_t n, struct cp_mount *m);
void cp_mount_free(struct cp_mount *m);

int cp_unmount_encode(struct cp_writer *w, uint32_t chan, const struct cp_unmount *m);
int cp_unmount_decode(const uint8_t *p, size_t n, struct cp_unmount *m);
void cp_unmount_free(struct cp_unmount *m);

/* An OK frame carrying the fields that are set. */
/* SAVE: OP on the sandbox's own layer, NAME its save, checkpoint or new sandbox. Answered by
 * OK or ERROR once done. */
enum { CP_SAVE_OP_SAVE = 1, CP_SAVE_OP_CHECKPOINT = 2, CP_SAVE_OP_REVERT = 3, CP_SAVE_OP_FORK = 4 };
struct cp_save {
	uint32_t op;
	char *name; /* required; at most 63 bytes */
};
enum { CP_T_SAVE_OP = 1, CP_T_SAVE_NAME = 2 };
#define CP_MAX_SAVE_NAME 63u
int cp_save_encode(struct cp_writer *w, uint32_t chan, const struct cp_save *m);
int cp_save_decode(const uint8_t *p, size_t n, struct cp_save *m);
void cp_save_free(struct cp_save *m);

/* PAUSE: OP pauses or resumes every process of the running sandbox, in memory (the cgroup
 * freezer, a vm's vCPUs); TO_DISK saves a vm's memory to run/<name>/ and ends its shim,
 * answered once the sandbox's lock is free (resumed by a new shim: capsule_sandbox_resume).
 * Answered by OK or ERROR. The decoder refuses a missing or unknown op. */
enum { CP_PAUSE_OP_PAUSE = 1, CP_PAUSE_OP_RESUME = 2, CP_PAUSE_OP_TO_DISK = 3 };
struct cp_pause {
	uint32_t op;
};
enum { CP_T_PAUSE_OP = 1 };
int cp_pause_encode(struct cp_writer *w, uint32_t chan, const struct cp_pause *m);
int cp_pause_decode(const uint8_t *p, size_t n, struct cp_pause *m);

/* LIMITS: change the running sandbox's cgroup limits; SET says which fields are given (the
 * CAPSULE_LIMIT_* bits of capsule.h). A negative memory, quota or pids value is "no limit".
 * The cpuset lists are strings of at most CP_LIMITS_CPUSET_MAX bytes (refused beyond).
 * Answered by OK or ERROR (nothing changed). The decoder refuses an empty or unknown SET. */
#define CP_LIMITS_CPUSET_MAX 255
struct cp_limits {
	uint32_t set;
	int64_t memory_bytes, cpu_quota_us, pids_max;
	uint64_t cpu_period_us, cpu_shares;
	int64_t memory_swap, memory_reservation, cpu_rt_runtime_us;
	uint64_t cpu_rt_period_us;
	char cpuset_cpus[CP_LIMITS_CPUSET_MAX + 1], cpuset_mems[CP_LIMITS_CPUSET_MAX + 1];
};
enum {
	CP_T_LIMITS_SET = 1,
	CP_T_LIMITS_MEMORY = 2,
	CP_T_LIMITS_CPU_QUOTA = 3,
	CP_T_LIMITS_CPU_PERIOD = 4,
	CP_T_LIMITS_CPU_SHARES = 5,
	CP_T_LIMITS_PIDS = 6,
	CP_T_LIMITS_MEMORY_SWAP = 7,
	CP_T_LIMITS_MEMORY_RESERVATION = 8,
	CP_T_LIMITS_CPUSET_CPUS = 9,
	CP_T_LIMITS_CPUSET_MEMS = 10,
	CP_T_LIMITS_CPU_RT_PERIOD = 11,
	CP_T_LIMITS_CPU_RT_RUNTIME = 12,
};
int cp_limits_encode(struct cp_writer *w, uint32_t chan, const struct cp_limits *m);
int cp_limits_decode(const uint8_t *p, size_t n, struct cp_limits *m);
/* The bounds of each value (capsule.h's capsule_limits): 0, or -EINVAL with WHY one line. */
int cp_limits_check(const struct cp_limits *m, char *why, size_t size);

/* WATCH: stream the changes below PATH (absolute in the sandbox, at most CP_FS_PATH_MAX
 * bytes), of its whole tree with CP_WATCH_RECURSIVE. The agent answers STARTED once it
 * watches, then DATA on stream 1 whose payloads are event records, under the client's
 * credit; OK once the watched folder is gone, ERROR ECANCELED after the client's SIGNAL. The
 * decoder refuses a missing or relative path, one over the bound, and unknown flags. */
#define CP_WATCH_RECURSIVE 0x1u
struct cp_watch {
	char *path;
	uint32_t flags;
};
enum { CP_T_WATCH_PATH = 1, CP_T_WATCH_FLAGS = 2 };
int cp_watch_encode(struct cp_writer *w, uint32_t chan, const struct cp_watch *m);
int cp_watch_decode(const uint8_t *p, size_t n, struct cp_watch *m);
void cp_watch_free(struct cp_watch *m);

/* A WATCH event record: u32 length, then fields. KIND is required; PATH (absolute, at most
 * CP_FS_PATH_MAX bytes) is required except for an overflow, which has none; FROM (the same
 * bounds) is required for a move and refused on any other kind. The agent is not trusted:
 * the decoder checks all of it. */
enum cp_watch_kind {
	CP_WATCH_CREATE = 1,
	CP_WATCH_MODIFY = 2,
	CP_WATCH_DELETE = 3,
	CP_WATCH_MOVE = 4,
	CP_WATCH_OVERFLOW = 5, /* events were lost: the kernel's queue or the client's credit ran out */
};
struct cp_watch_event {
	uint32_t kind;
	char *path;
	char *from;
	uint64_t time_ns; /* the agent's CLOCK_REALTIME when it read the event */
	uint32_t is_dir;  /* 0 or 1 */
};
enum { CP_T_WEV_KIND = 1, CP_T_WEV_PATH = 2, CP_T_WEV_FROM = 3, CP_T_WEV_TIME = 4, CP_T_WEV_DIR = 5 };
/* Append one record (no frame header) to W; -EINVAL for an event the decoder would refuse. */
int cp_watch_event_append(struct cp_writer *w, const struct cp_watch_event *m);
/* The next record of a WATCH DATA payload: 1 and *M filled, 0 at the end, -EBADMSG for a
 * record that is malformed or runs past the payload. *M is zeroed first either way. */
int cp_watch_event_next(struct cp_reader *r, struct cp_watch_event *m);
void cp_watch_event_free(struct cp_watch_event *m);

int cp_request_ok_encode(struct cp_writer *w, uint32_t chan, const struct cp_request_ok *m);
int cp_request_ok_decode(const uint8_t *p, size_t n, struct cp_request_ok *m);
void cp_request_ok_free(struct cp_request_ok *m);

/* TYPE is CP_PORT_ADD or CP_PORT_REMOVE. */
int cp_port_encode(struct cp_writer *w, uint16_t type, uint32_t chan, const struct cp_port *m);
int cp_port_decode(uint16_t type, const uint8_t *p, size_t n, struct cp_port *m);
void cp_port_free(struct cp_port *m);

/* TYPE is CP_NET_ALLOW or CP_NET_DENY. */
int cp_net_rule_encode(struct cp_writer *w, uint16_t type, uint32_t chan, const struct cp_net_rule *m);
int cp_net_rule_decode(uint16_t type, const uint8_t *p, size_t n, struct cp_net_rule *m);
void cp_net_rule_free(struct cp_net_rule *m);
/* A bare frame with no payload (CP_OK, CP_SHUTDOWN, CP_MOUNTS, CP_PORTS, CP_STATS,
 * CP_NET_LS) or a DATA frame with raw bytes. */
int cp_empty_encode(struct cp_writer *w, uint16_t type, uint32_t chan);
int cp_data_encode(struct cp_writer *w, uint32_t chan, uint16_t stream, bool eof, const void *p, size_t n);

/* vm isolation: the shim asks the agent to make (and remove) the guest side of a mount.
 * VM_MOUNT is answered by VM_MOUNTED or ERROR; VM_UNMOUNT by OK or ERROR. */
/* SHARES_OFF and SHARES_ON unmount and mount again the root of the `mounts` share itself
 * (around a pause to disk: a 9p share mounted in the guest blocks QEMU's migration); they
 * carry a target ("/") and nothing else, and VM_MOUNTED says the share's mount id. */
enum cp_vm_mount_kind { CP_VM_MOUNT_SHARE = 1, CP_VM_MOUNT_TMPFS = 2, CP_VM_MOUNT_SHARES_OFF = 3, CP_VM_MOUNT_SHARES_ON = 4 };
#define CP_VM_MOUNT_RO 0x1u
#define CP_VM_MOUNT_FILE 0x2u        /* the share's entry is a file: mount it onto a file */
#define CP_VM_MOUNT_NO_SYMLINKS 0x4u /* no symlink anywhere on the target's path (hot mounts) */
/* An OCI spec's mount options beyond capsule's own (config's mount_attrs), as a container's: */
#define CP_VM_MOUNT_NOEXEC 0x8u
#define CP_VM_MOUNT_NOATIME 0x10u
#define CP_VM_MOUNT_STRICTATIME 0x20u
#define CP_VM_MOUNT_NODIRATIME 0x40u
#define CP_VM_MOUNT_FLAGS_KNOWN (CP_VM_MOUNT_RO | CP_VM_MOUNT_FILE | CP_VM_MOUNT_NO_SYMLINKS | CP_VM_MOUNT_NOEXEC | \
				 CP_VM_MOUNT_NOATIME | CP_VM_MOUNT_STRICTATIME | CP_VM_MOUNT_NODIRATIME)
#define CP_VM_MOUNT_NAME_MAX 32u
/* The 9p mount tag of the one share that carries every host folder a vm sandbox mounts. */
#define CP_VM_MOUNTS_TAG "mounts"
struct cp_vm_mount {
	uint32_t kind;    /* enum cp_vm_mount_kind */
	char *name;       /* SHARE: one entry of the mounts share, a single component */
	char *target;     /* required: absolute guest path */
	uint32_t flags;   /* CP_VM_MOUNT_*; unknown bits are refused */
	uint64_t size;    /* TMPFS: bytes, required */
	uint32_t mode;    /* TMPFS: at most 07777 */
};
enum { CP_T_VM_MOUNT_KIND = 1, CP_T_VM_MOUNT_NAME = 2, CP_T_VM_MOUNT_TARGET = 3, CP_T_VM_MOUNT_FLAGS = 4,
       CP_T_VM_MOUNT_SIZE = 5, CP_T_VM_MOUNT_MODE = 6 };
struct cp_vm_unmount {
	char *target;    /* required: absolute guest path */
	uint64_t mnt_id; /* required: what VM_MOUNTED said */
};
enum { CP_T_VM_UNMOUNT_TARGET = 1, CP_T_VM_UNMOUNT_MNT_ID = 2 };
struct cp_vm_mounted {
	uint64_t mnt_id;
};
enum { CP_T_VM_MOUNTED_MNT_ID = 1 };
int cp_vm_mount_encode(struct cp_writer *w, uint32_t chan, const struct cp_vm_mount *m);
int cp_vm_mount_decode(const uint8_t *p, size_t n, struct cp_vm_mount *m);
void cp_vm_mount_free(struct cp_vm_mount *m);
int cp_vm_unmount_encode(struct cp_writer *w, uint32_t chan, const struct cp_vm_unmount *m);
int cp_vm_unmount_decode(const uint8_t *p, size_t n, struct cp_vm_unmount *m);
void cp_vm_unmount_free(struct cp_vm_unmount *m);
int cp_vm_mounted_encode(struct cp_writer *w, uint32_t chan, const struct cp_vm_mounted *m);
int cp_vm_mounted_decode(const uint8_t *p, size_t n, struct cp_vm_mounted *m);

/* ---- frame assembly from a byte stream ------------------------------------------------ */


/* What an agent may send on a client's channel, checked before the shim forwards it (the
 * agent is inside the sandbox: docs/security.md, "A hostile or wedged guest"): only the frames
 * an agent answers a command with (STARTED, DATA on stdout or stderr, CREDIT for stdin, EXIT,
 * ERROR, OK), each taken by its decoder, and no bigger than its fields need where it carries
 * only numbers. 0, or -EPROTO. Credit and order are the shim's to check. */
#define CP_MAX_AGENT_NUMBERS_PAYLOAD 256u
int cp_agent_reply_check(const struct cp_header *h, const uint8_t *payload);
/* Accumulates bytes read from a socket and yields whole frames. The buffer never grows past
 * CP_HEADER_SIZE + CP_MAX_PAYLOAD. */
#define CP_RX_FDS CP_EXEC_MAX_FDS
struct cp_rxbuf {
	uint8_t *buf;
	size_t start; /* first unconsumed byte */
	size_t len;   /* end of valid bytes */
	size_t cap;
	/* cp_rxbuf_fill_fds: descriptors that came with the bytes, each tagged with the stream
	 * offset of the last byte of the read that brought it. The sender passes a descriptor
	 * with one frame's bytes alone, so the descriptor belongs to the frame holding that byte. */
	uint64_t base; /* stream offset of buf[0] */
	struct cp_rx_fd {
		int fd;
		uint64_t at;
	} *fds; /* CP_RX_FDS of them, allocated with the first descriptor that comes */
	unsigned nfds;
};
void cp_rxbuf_init(struct cp_rxbuf *rx);
void cp_rxbuf_free(struct cp_rxbuf *rx);
/* Read what is available from FD (non-blocking or blocking). Returns bytes read (> 0), 0 on
 * EOF, -EAGAIN when nothing was ready, or another -errno. */
long cp_rxbuf_fill(struct cp_rxbuf *rx, int fd);
/* The same with recvmsg, keeping descriptors passed with SCM_RIGHTS (O_CLOEXEC) for
 * cp_rxbuf_take_fd; more than CP_RX_FDS waiting are closed. For a socket only. */
long cp_rxbuf_fill_fds(struct cp_rxbuf *rx, int fd);
/* The descriptor that came with the frame at the front (HDR from cp_rxbuf_peek), now the
 * caller's; -1 when none did. Descriptors of frames consumed without one being taken are
 * closed by cp_rxbuf_consume. */
int cp_rxbuf_take_fd(struct cp_rxbuf *rx, const struct cp_header *hdr);
/* Every descriptor that came with that frame, at most MAX, in the order they were sent, into
 * OUT (now the caller's); how many. */
unsigned cp_rxbuf_take_fds(struct cp_rxbuf *rx, const struct cp_header *hdr, int *out, unsigned max);
/* 1: a whole frame is at the front (HDR filled, *PAYLOAD points into the buffer, valid until
 * cp_rxbuf_consume or the next cp_rxbuf_fill, which may move the bytes); 0: need more bytes;
 * -EBADMSG: the stream is corrupt (bad header). */
int cp_rxbuf_peek(struct cp_rxbuf *rx, struct cp_header *hdr, const uint8_t **payload);
void cp_rxbuf_consume(struct cp_rxbuf *rx, const struct cp_header *hdr);

/* ---- display (vm isolation; src/common/proto_display.c) -------------------------------- */

/* SCREENSHOT: OFFSET 0 takes a new screenshot; the OK carries its id, total size, size in
 * pixels and the first chunk. A later request with that id and an offset gets the chunk from
 * there. The shim keeps only its latest screenshot: an older id is answered ESTALE. */
#define CP_SCREENSHOT_CHUNK (512u * 1024)
#define CP_MAX_SCREENSHOT (64u << 20)
struct cp_screenshot {
	uint64_t offset;
	uint32_t shot; /* required with a non-zero offset */
};
enum { CP_T_SHOT_OFFSET = 1, CP_T_SHOT_ID = 2 };
struct cp_screenshot_ok {
	uint32_t shot;         /* required, non-zero */
	uint64_t size;         /* required: the whole PNG, at most CP_MAX_SCREENSHOT */
	uint32_t width, height;
	const uint8_t *data;   /* decoded: points into the payload; at most CP_SCREENSHOT_CHUNK */
	size_t data_len;
};
enum { CP_T_SHOT_OK_ID = 1, CP_T_SHOT_OK_SIZE = 2, CP_T_SHOT_OK_WIDTH = 3, CP_T_SHOT_OK_HEIGHT = 4, CP_T_SHOT_OK_DATA = 5 };

/* INPUT: one action, answered OK once QEMU has it, or ERROR. */
enum { CP_INPUT_TYPE = 1, CP_INPUT_KEY = 2, CP_INPUT_MOVE = 3, CP_INPUT_CLICK = 4 };
#define CP_MAX_INPUT_TEXT 64u
struct cp_input {
	uint32_t kind; /* required: CP_INPUT_* */
	char *text;    /* TYPE: the text; KEY: the key spec ("ctrl-c"); CLICK: the button (absent: left);
			* 1 to CP_MAX_INPUT_TEXT bytes */
	uint32_t x, y; /* MOVE: required, pixels; absent (0) otherwise */
};
enum { CP_T_INPUT_KIND = 1, CP_T_INPUT_TEXT = 2, CP_T_INPUT_X = 3, CP_T_INPUT_Y = 4 };

int cp_screenshot_encode(struct cp_writer *w, uint32_t chan, const struct cp_screenshot *m);
int cp_screenshot_decode(const uint8_t *p, size_t n, struct cp_screenshot *m);
void cp_screenshot_free(struct cp_screenshot *m);
int cp_screenshot_ok_encode(struct cp_writer *w, uint32_t chan, const struct cp_screenshot_ok *m);
int cp_screenshot_ok_decode(const uint8_t *p, size_t n, struct cp_screenshot_ok *m);
void cp_screenshot_ok_free(struct cp_screenshot_ok *m);
int cp_input_encode(struct cp_writer *w, uint32_t chan, const struct cp_input *m);
int cp_input_decode(const uint8_t *p, size_t n, struct cp_input *m);
void cp_input_free(struct cp_input *m);

#endif
