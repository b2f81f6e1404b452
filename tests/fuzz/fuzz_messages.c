/* libFuzzer target: the message decoders, and the encoders as their inverse.
 *
 * Byte 0 picks a decoder (bytes 0xf0 and up, byte % 3: mount, unmount, request_ok; 0xe0 to
 * 0xef, byte % 2: port add, port remove; 0xd0 to 0xd7: save; 0xd8 to 0xdf: pause; 0xcc and 0xcd: a vm's
 * FWD_CONNECT; 0xa0 to 0xae, byte % 3: a vm's DNS_QUERY, EGRESS, EGRESS_USED; 0xaf: VM_LISTENING; 0xce: WATCH; 0xcf: WATCH event records (a DATA payload); 0xc0 to 0xcb, byte % 3: vm_mount, vm_unmount, vm_mounted; 0xb0 to 0xbf, byte %
 * 3: screenshot, screenshot OK, input; others,
 * byte % 13: hello, error, exec, started, credit, exit, signal, resize, stop, init, fs, fs
 * entry (an OK payload), LIST records (a DATA payload)); the rest is the
 * payload, copied into a buffer of exactly its size so ASan sees any overread. When the decode
 * succeeds, the message is encoded again and that frame decoded again: the two decoded
 * messages must be equal, and encoding the second must give the same bytes as encoding the
 * first (one canonical encoding per message). LIST records are walked to the end or the first
 * bad one; the good ones, appended again, must read back the same and give the same bytes.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#include "fuzz_check.h"

static bool str_eq(const char *a, const char *b)
{
	if (!a || !b)
		return a == b;
	return strcmp(a, b) == 0;
}

static bool strv_eq(char *const *a, size_t an, char *const *b, size_t bn)
{
	if (an != bn)
		return false;
	for (size_t i = 0; i < an; i++)
		if (!str_eq(a[i], b[i]))
			return false;
	return a[an] == NULL && b[bn] == NULL;
}

static void check_strv(char *const *v, size_t n, size_t max)
{
	CHECK(v != NULL);
	CHECK(n <= max);
	for (size_t i = 0; i < n; i++) {
		CHECK(v[i] != NULL);
		CHECK(strlen(v[i]) <= CP_MAX_STRING);
	}
	CHECK(v[n] == NULL);
}

/* The frame in W must carry TYPE and decode as a header; returns its payload length. */
static size_t check_frame(const struct cp_writer *w, uint16_t type)
{
	struct cp_header h;
	CHECK(w->len >= CP_HEADER_SIZE);
	CHECK(cp_header_decode(w->buf, w->len, &h) == 0);
	CHECK(h.type == type);
	CHECK(h.chan == 7);
	CHECK((size_t)h.len == w->len - CP_HEADER_SIZE);
	return h.len;
}

/* A copy of the frame's payload of exactly its size. */
static uint8_t *payload_copy(const struct cp_writer *w, size_t n)
{
	uint8_t *p = malloc(n ? n : 1);
	CHECK(p != NULL);
	memcpy(p, w->buf + CP_HEADER_SIZE, n);
	return p;
}

/* Encode A's struct with ENCODE into W1, decode it into B, encode B into W2: W1 == W2. The
 * macro keeps each message's three calls in one place. */
#define ROUND_TRIP(T, encode, decode, free_fn, eq, a, type)                                  \
	do {                                                                                  \
		struct cp_writer w1, w2;                                                      \
		cp_writer_init(&w1);                                                          \
		cp_writer_init(&w2);                                                          \
		int er = encode(&w1, 7, &(a));                                                \
		if (er == -EMSGSIZE && n + 64 >= CP_MAX_PAYLOAD) {                            \
			/* a canonical encoding may add fields the input left out */          \
			cp_writer_free(&w1);                                                  \
			break;                                                                \
		}                                                                             \
		CHECK(er == 0);                                                               \
		size_t n1 = check_frame(&w1, type);                                           \
		uint8_t *p1 = payload_copy(&w1, n1);                                          \
		T b;                                                                          \
		CHECK(decode(p1, n1, &b) == 0);                                               \
		CHECK(eq(&(a), &b));                                                          \
		CHECK(encode(&w2, 7, &b) == 0);                                               \
		CHECK(w1.len == w2.len && memcmp(w1.buf, w2.buf, w1.len) == 0);               \
		free_fn(&b);                                                                  \
		free(p1);                                                                     \
		cp_writer_free(&w1);                                                          \
		cp_writer_free(&w2);                                                          \
	} while (0)

static bool hello_eq(const struct cp_hello *a, const struct cp_hello *b)
{
	return a->version == b->version && str_eq(a->role, b->role) && a->flags == b->flags;
}

static bool error_eq(const struct cp_error_msg *a, const struct cp_error_msg *b)
{
	return a->errnum == b->errnum && str_eq(a->message, b->message);
}

static bool exec_eq(const struct cp_exec *a, const struct cp_exec *b)
{
	return strv_eq(a->argv, a->argc, b->argv, b->argc) && strv_eq(a->env, a->envc, b->env, b->envc) &&
	       str_eq(a->cwd, b->cwd) && str_eq(a->user, b->user) && a->flags == b->flags && a->rows == b->rows &&
	       a->cols == b->cols && a->timeout_ms == b->timeout_ms && a->nfds == b->nfds;
}

static bool init_eq(const struct cp_init *a, const struct cp_init *b)
{
	return a->seccomp_len == b->seccomp_len &&
	       (a->seccomp_len == 0 || memcmp(a->seccomp_bpf, b->seccomp_bpf, a->seccomp_len) == 0) &&
	       strv_eq(a->env, a->envc, b->env, b->envc) && a->cap_keep == b->cap_keep && a->flags == b->flags;
}

static bool started_eq(const struct cp_started *a, const struct cp_started *b) { return a->pid == b->pid; }
static bool credit_eq(const struct cp_credit *a, const struct cp_credit *b)
{
	return a->stream == b->stream && a->bytes == b->bytes;
}
static bool exit_eq(const struct cp_exit *a, const struct cp_exit *b)
{
	return a->exit_code == b->exit_code && a->signal == b->signal && a->timed_out == b->timed_out;
}
static bool signal_eq(const struct cp_signal *a, const struct cp_signal *b)
{
	return a->signo == b->signo && a->pid == b->pid;
}
static bool resize_eq(const struct cp_resize *a, const struct cp_resize *b)
{
	return a->rows == b->rows && a->cols == b->cols;
}
static bool stop_eq(const struct cp_stop *a, const struct cp_stop *b) { return a->timeout_ms == b->timeout_ms; }

static bool fs_eq(const struct cp_fs *a, const struct cp_fs *b)
{
	return a->op == b->op && str_eq(a->path, b->path) && str_eq(a->path2, b->path2) && a->flags == b->flags &&
	       a->mode == b->mode;
}

static bool entry_eq(const struct cp_fs_entry *a, const struct cp_fs_entry *b)
{
	return str_eq(a->name, b->name) && a->kind == b->kind && a->size == b->size && a->mode == b->mode &&
	       a->mtime_ns == b->mtime_ns && a->uid == b->uid && a->gid == b->gid && str_eq(a->link, b->link);
}

/* What cp_fs_decode promises the agent. */
static void check_fs(const struct cp_fs *m)
{
	CHECK(m->op >= CP_FS_STAT && m->op <= CP_FS_SYMLINK);
	CHECK(m->path != NULL && strlen(m->path) <= CP_FS_PATH_MAX);
	CHECK(!m->path2 || strlen(m->path2) <= CP_FS_PATH_MAX);
	CHECK((m->op != CP_FS_RENAME && m->op != CP_FS_SYMLINK) || m->path2 != NULL);
	CHECK(m->mode <= 07777);
}

/* What cp_fs_entry_decode promises the client: a name it may append to a local folder (one
 * component, not "." or ".."; only a STAT reply, ROOT_OK, may name the root "/"), a known
 * kind, permission bits only, a bounded link on a symlink only. */
static void check_entry(const struct cp_fs_entry *m, bool root_ok)
{
	CHECK(m->name != NULL);
	size_t n = strlen(m->name);
	CHECK(n >= 1 && n <= CP_FS_NAME_MAX);
	CHECK(strchr(m->name, '/') == NULL || (root_ok && strcmp(m->name, "/") == 0));
	CHECK(strcmp(m->name, ".") != 0 && strcmp(m->name, "..") != 0);
	CHECK(m->kind >= CP_FS_KIND_FILE && m->kind <= CP_FS_KIND_OTHER);
	CHECK(m->mode <= 07777);
	CHECK(!m->link || (m->kind == CP_FS_KIND_SYMLINK && strlen(m->link) <= CP_FS_PATH_MAX));
}

/* A LIST DATA payload: walk its records; append the good ones again (W1), walk that, append
 * what it gave (W2): both walks see the same entries and W1 == W2. Returns the first walk's
 * end: 0 or its error. Our records carry every field, so they may be longer than the input's:
 * past a quarter of the frame limit only the walk is checked. */
static int walk_records(const uint8_t *p, size_t n)
{
	struct cp_writer w1, w2;
	cp_writer_init(&w1);
	cp_writer_init(&w2);
	struct cp_reader r = { .p = p, .rem = n };
	struct cp_fs_entry e;
	size_t count = 0;
	int k;
	for (;;) {
		size_t before = r.rem;
		k = cp_fs_record_next(&r, &e);
		if (k <= 0)
			break;
		/* Each record takes at least its length prefix and never more than is left. */
		CHECK(r.rem + 4 <= before);
		check_entry(&e, false);
		CHECK(cp_fs_record_append(&w1, &e) == 0 || n > CP_MAX_PAYLOAD / 4);
		cp_fs_entry_free(&e);
		count++;
	}
	CHECK(e.name == NULL && e.link == NULL);
	CHECK(k == 0 || r.rem > 0); /* an error leaves bytes unread */
	if (w1.err) {
		cp_writer_free(&w1);
		return k;
	}
	uint8_t *c = malloc(w1.len ? w1.len : 1);
	CHECK(c != NULL);
	if (w1.len)
		memcpy(c, w1.buf, w1.len);
	struct cp_reader r1 = { .p = c, .rem = w1.len };
	struct cp_reader orig = { .p = p, .rem = n };
	size_t again = 0;
	struct cp_fs_entry a, b;
	while (cp_fs_record_next(&r1, &b) > 0) {
		CHECK(again < count);
		CHECK(cp_fs_record_next(&orig, &a) == 1);
		CHECK(entry_eq(&a, &b));
		CHECK(cp_fs_record_append(&w2, &b) == 0);
		cp_fs_entry_free(&a);
		cp_fs_entry_free(&b);
		again++;
	}
	CHECK(r1.rem == 0 && again == count);
	CHECK(w1.len == w2.len && (w1.len == 0 || memcmp(w1.buf, w2.buf, w1.len) == 0));
	free(c);
	cp_writer_free(&w1);
	cp_writer_free(&w2);
	return k;
}

/* The u32-only messages own nothing. */
#define NO_FREE(m) ((void)(m))

static bool mount_eq(const struct cp_mount *a, const struct cp_mount *b)
{
	return str_eq(a->host_path, b->host_path) && str_eq(a->guest_path, b->guest_path) && a->flags == b->flags;
}
static bool unmount_eq(const struct cp_unmount *a, const struct cp_unmount *b) { return str_eq(a->target, b->target); }
static bool request_ok_eq(const struct cp_request_ok *a, const struct cp_request_ok *b)
{
	return str_eq(a->handle, b->handle) && str_eq(a->list_json, b->list_json);
}

static int fuzz_mount_messages(unsigned which, const uint8_t *p, size_t n)
{
	int r;
	if (which == 0) {
		struct cp_mount a;
		r = cp_mount_decode(p, n, &a);
		if (r == 0) {
			CHECK(a.host_path && a.guest_path && !(a.flags & ~CP_MOUNT_FLAGS_KNOWN));
			CHECK(strlen(a.host_path) <= CP_MAX_STRING && strlen(a.guest_path) <= CP_MAX_STRING);
			ROUND_TRIP(struct cp_mount, cp_mount_encode, cp_mount_decode, cp_mount_free, mount_eq, a, CP_MOUNT);
			cp_mount_free(&a);
		} else {
			CHECK(a.host_path == NULL && a.guest_path == NULL);
		}
	} else if (which == 1) {
		struct cp_unmount a;
		r = cp_unmount_decode(p, n, &a);
		if (r == 0) {
			CHECK(a.target && strlen(a.target) <= CP_MAX_STRING);
			ROUND_TRIP(struct cp_unmount, cp_unmount_encode, cp_unmount_decode, cp_unmount_free, unmount_eq, a,
				   CP_UNMOUNT);
			cp_unmount_free(&a);
		} else {
			CHECK(a.target == NULL);
		}
	} else {
		struct cp_request_ok a;
		r = cp_request_ok_decode(p, n, &a);
		if (r == 0) {
			CHECK(!a.handle || strlen(a.handle) <= CP_MAX_MOUNT_HANDLE);
			CHECK(!a.list_json || strlen(a.list_json) <= CP_MAX_LIST_JSON);
			ROUND_TRIP(struct cp_request_ok, cp_request_ok_encode, cp_request_ok_decode, cp_request_ok_free, request_ok_eq,
				   a, CP_OK);
			cp_request_ok_free(&a);
		} else {
			CHECK(a.handle == NULL && a.list_json == NULL);
		}
	}
	return r;
}

static bool save_eq(const struct cp_save *a, const struct cp_save *b)
{
	return a->op == b->op && str_eq(a->name, b->name);
}

static int fuzz_save_message(const uint8_t *p, size_t n)
{
	struct cp_save a;
	int r = cp_save_decode(p, n, &a);
	if (r == 0) {
		CHECK(a.name && strlen(a.name) <= CP_MAX_SAVE_NAME);
		CHECK(a.op >= CP_SAVE_OP_SAVE && a.op <= CP_SAVE_OP_FORK);
		ROUND_TRIP(struct cp_save, cp_save_encode, cp_save_decode, cp_save_free, save_eq, a, CP_SAVE);
		cp_save_free(&a);
	} else {
		CHECK(a.name == NULL);
	}
	return r;
}

static bool screenshot_eq(const struct cp_screenshot *a, const struct cp_screenshot *b)
{
	return a->offset == b->offset && a->shot == b->shot;
}

static bool screenshot_ok_eq(const struct cp_screenshot_ok *a, const struct cp_screenshot_ok *b)
{
	return a->shot == b->shot && a->size == b->size && a->width == b->width && a->height == b->height &&
	       a->data_len == b->data_len && (a->data_len == 0 || memcmp(a->data, b->data, a->data_len) == 0);
}

static bool input_eq(const struct cp_input *a, const struct cp_input *b)
{
	return a->kind == b->kind && str_eq(a->text, b->text) && a->x == b->x && a->y == b->y;
}

/* The display messages: SCREENSHOT, its OK, INPUT (selector bytes 0xc0 to 0xcf, byte % 3). */
static int fuzz_display_messages(unsigned which, const uint8_t *p, size_t n)
{
	int r;
	if (which == 0) {
		struct cp_screenshot a;
		if ((r = cp_screenshot_decode(p, n, &a)) == 0) {
			CHECK(a.offset <= CP_MAX_SCREENSHOT && (a.offset == 0 || a.shot != 0));
			ROUND_TRIP(struct cp_screenshot, cp_screenshot_encode, cp_screenshot_decode, cp_screenshot_free,
				   screenshot_eq, a, CP_SCREENSHOT);
		}
	} else if (which == 1) {
		struct cp_screenshot_ok a;
		if ((r = cp_screenshot_ok_decode(p, n, &a)) == 0) {
			CHECK(a.shot != 0 && a.size <= CP_MAX_SCREENSHOT && a.data_len <= CP_SCREENSHOT_CHUNK &&
			      a.data_len <= a.size);
			/* The data lies inside the payload. */
			CHECK(a.data_len == 0 || (a.data >= p && a.data + a.data_len <= p + n));
			ROUND_TRIP(struct cp_screenshot_ok, cp_screenshot_ok_encode, cp_screenshot_ok_decode,
				   cp_screenshot_ok_free, screenshot_ok_eq, a, CP_OK);
		} else {
			CHECK(a.data == NULL && a.data_len == 0);
		}
	} else {
		struct cp_input a;
		if ((r = cp_input_decode(p, n, &a)) == 0) {
			CHECK(a.kind >= CP_INPUT_TYPE && a.kind <= CP_INPUT_CLICK);
			CHECK(!a.text || (a.text[0] && strlen(a.text) <= CP_MAX_INPUT_TEXT));
			CHECK(a.kind == CP_INPUT_MOVE || (a.x == 0 && a.y == 0));
			ROUND_TRIP(struct cp_input, cp_input_encode, cp_input_decode, cp_input_free, input_eq, a, CP_INPUT);
			cp_input_free(&a);
		} else {
			CHECK(a.text == NULL);
		}
	}
	return r;
}

static bool port_eq(const struct cp_port *a, const struct cp_port *b)
{
	return str_eq(a->host_ip, b->host_ip) && a->host_port == b->host_port && a->guest_port == b->guest_port &&
	       a->flags == b->flags;
}
static int port_add_encode(struct cp_writer *w, uint32_t chan, const struct cp_port *m)
{
	return cp_port_encode(w, CP_PORT_ADD, chan, m);
}
static int port_add_decode(const uint8_t *p, size_t n, struct cp_port *m)
{
	return cp_port_decode(CP_PORT_ADD, p, n, m);
}
static int port_remove_encode(struct cp_writer *w, uint32_t chan, const struct cp_port *m)
{
	return cp_port_encode(w, CP_PORT_REMOVE, chan, m);
}
static int port_remove_decode(const uint8_t *p, size_t n, struct cp_port *m)
{
	return cp_port_decode(CP_PORT_REMOVE, p, n, m);
}

static int fuzz_port_messages(bool add, const uint8_t *p, size_t n)
{
	struct cp_port a;
	int r = add ? port_add_decode(p, n, &a) : port_remove_decode(p, n, &a);
	if (r != 0) {
		CHECK(a.host_ip == NULL);
		return r;
	}
	CHECK(a.host_ip && a.host_ip[0] && strlen(a.host_ip) <= CP_MAX_PORT_HOST_IP);
	CHECK(a.host_port >= 1 && a.host_port <= 65535 && !(a.flags & ~CP_PORT_FLAGS_KNOWN));
	CHECK(add ? a.guest_port >= 1 && a.guest_port <= 65535 : a.guest_port == 0);
	if (add)
		ROUND_TRIP(struct cp_port, port_add_encode, port_add_decode, cp_port_free, port_eq, a, CP_PORT_ADD);
	else
		ROUND_TRIP(struct cp_port, port_remove_encode, port_remove_decode, cp_port_free, port_eq, a, CP_PORT_REMOVE);
	cp_port_free(&a);
	return 0;
}

static bool fwd_connect_eq(const struct cp_fwd_connect *a, const struct cp_fwd_connect *b)
{
	return a->port == b->port;
}
static void fwd_connect_free(struct cp_fwd_connect *m)
{
	(void)m;
}

static bool vm_mount_eq(const struct cp_vm_mount *a, const struct cp_vm_mount *b)
{
	return a->kind == b->kind && str_eq(a->name, b->name) && str_eq(a->target, b->target) && a->flags == b->flags &&
	       a->size == b->size && a->mode == b->mode;
}
static bool vm_unmount_eq(const struct cp_vm_unmount *a, const struct cp_vm_unmount *b)
{
	return str_eq(a->target, b->target) && a->mnt_id == b->mnt_id;
}
static bool vm_mounted_eq(const struct cp_vm_mounted *a, const struct cp_vm_mounted *b)
{
	return a->mnt_id == b->mnt_id;
}
static void vm_mounted_free(struct cp_vm_mounted *m)
{
	(void)m;
}

static int fuzz_fwd_connect(const uint8_t *p, size_t n)
{
	struct cp_fwd_connect a;
	int r = cp_fwd_connect_decode(p, n, &a);
	if (r != 0) {
		CHECK(a.port == 0);
		return r;
	}
	CHECK(a.port >= 1 && a.port <= 65535);
	ROUND_TRIP(struct cp_fwd_connect, cp_fwd_connect_encode, cp_fwd_connect_decode, fwd_connect_free, fwd_connect_eq,
		   a, CP_FWD_CONNECT);
	return 0;
}

static bool packet_eq(const struct cp_dns_packet *a, const struct cp_dns_packet *b)
{
	return a->len == b->len && (!a->len || (a->addr == b->addr && a->port == b->port &&
						 memcmp(a->data, b->data, a->len) == 0));
}
static bool elems_eq(const struct cp_egress_elem *a, const struct cp_egress_elem *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (a[i].addr != b[i].addr || a[i].port != b[i].port || a[i].ttl_s != b[i].ttl_s)
			return false;
	return true;
}
static bool egress_eq(const struct cp_egress *a, const struct cp_egress *b)
{
	if (a->set_cidrs != b->set_cidrs || a->ncidrs != b->ncidrs)
		return false;
	for (size_t i = 0; i < a->ncidrs; i++)
		if (a->cidrs[i].addr != b->cidrs[i].addr || a->cidrs[i].prefix != b->cidrs[i].prefix ||
		    a->cidrs[i].port != b->cidrs[i].port)
			return false;
	return a->ndel == b->ndel && a->nadd == b->nadd && elems_eq(a->del, b->del, a->ndel) &&
	       elems_eq(a->add, b->add, a->nadd) && packet_eq(&a->answer, &b->answer);
}
static bool egress_used_eq(const struct cp_egress_used *a, const struct cp_egress_used *b)
{
	return a->bytes == b->bytes && a->used == b->used;
}
static void no_free_packet(struct cp_dns_packet *m)
{
	(void)m;
}
static void no_free_egress(struct cp_egress *m)
{
	(void)m;
}
static void no_free_egress_used(struct cp_egress_used *m)
{
	(void)m;
}

/* A vm agent's DNS_QUERY is hostile input to the shim; EGRESS and EGRESS_USED are the shim's
 * and the agent's to each other. */
static int fuzz_vm_dns_messages(int which, const uint8_t *p, size_t n)
{
	if (which == 0) {
		static struct cp_dns_packet a;
		int r = cp_dns_query_decode(p, n, &a);
		if (r != 0) {
			CHECK(a.len == 0);
			return r;
		}
		CHECK(a.len >= 1 && a.len <= CP_MAX_DNS_PACKET && a.port >= 1 && a.port <= 65535);
		ROUND_TRIP(struct cp_dns_packet, cp_dns_query_encode, cp_dns_query_decode, no_free_packet, packet_eq, a,
			   CP_DNS_QUERY);
		return 0;
	}
	if (which == 1) {
		static struct cp_egress a;
		int r = cp_egress_decode(p, n, &a);
		if (r != 0) {
			CHECK(a.nadd == 0 && a.ndel == 0 && a.ncidrs == 0 && !a.set_cidrs && a.answer.len == 0);
			return r;
		}
		CHECK(a.nadd <= CP_MAX_EGRESS_ELEMS && a.ndel <= CP_MAX_EGRESS_ELEMS);
		ROUND_TRIP(struct cp_egress, cp_egress_encode, cp_egress_decode, no_free_egress, egress_eq, a, CP_EGRESS);
		return 0;
	}
	struct cp_egress_used a;
	int r = cp_egress_used_decode(p, n, &a);
	if (r != 0)
		return r;
	ROUND_TRIP(struct cp_egress_used, cp_egress_used_encode, cp_egress_used_decode, no_free_egress_used,
		   egress_used_eq, a, CP_EGRESS_USED);
	return 0;
}

static bool listening_eq(const struct cp_vm_listening *a, const struct cp_vm_listening *b)
{
	return a->n == b->n && !memcmp(a->port, b->port, a->n * sizeof(a->port[0]));
}
static void no_free_listening(struct cp_vm_listening *m)
{
	(void)m;
}

/* A vm agent's VM_LISTENING is hostile input to the shim (and the shim's to the agent). */
static int fuzz_vm_listening(const uint8_t *p, size_t n)
{
	struct cp_vm_listening a;
	int r = cp_vm_listening_decode(p, n, &a);
	if (r != 0) {
		CHECK(a.n == 0);
		return r;
	}
	CHECK(a.n <= CP_MAX_VM_LISTENING);
	for (size_t i = 0; i < a.n; i++)
		CHECK(a.port[i] >= 1 && (i == 0 || a.port[i] > a.port[i - 1]));
	ROUND_TRIP(struct cp_vm_listening, cp_vm_listening_encode, cp_vm_listening_decode, no_free_listening,
		   listening_eq, a, CP_VM_LISTENING);
	return 0;
}

static bool watch_eq(const struct cp_watch *a, const struct cp_watch *b)
{
	return str_eq(a->path, b->path) && a->flags == b->flags;
}

static int fuzz_watch(const uint8_t *p, size_t n)
{
	struct cp_watch a;
	int r = cp_watch_decode(p, n, &a);
	if (r != 0) {
		CHECK(a.path == NULL);
		return r;
	}
	CHECK(a.path[0] == '/' && strlen(a.path) <= CP_FS_PATH_MAX && !(a.flags & ~CP_WATCH_RECURSIVE));
	ROUND_TRIP(struct cp_watch, cp_watch_encode, cp_watch_decode, cp_watch_free, watch_eq, a, CP_WATCH);
	cp_watch_free(&a);
	return 0;
}

static bool watch_event_eq(const struct cp_watch_event *a, const struct cp_watch_event *b)
{
	return a->kind == b->kind && str_eq(a->path, b->path) && str_eq(a->from, b->from) && a->time_ns == b->time_ns &&
	       a->is_dir == b->is_dir;
}

/* WATCH's records come from the agent, inside the boundary: every bound the decoder promises
 * is checked, and the good records, appended again, read back the same. */
static int fuzz_watch_events(const uint8_t *p, size_t n)
{
	struct cp_reader r = { .p = p, .rem = n };
	struct cp_writer w;
	cp_writer_init(&w);
	struct cp_watch_event e;
	int k;
	size_t count = 0;
	for (;;) {
		size_t before = r.rem;
		k = cp_watch_event_next(&r, &e);
		if (k <= 0)
			break;
		CHECK(r.rem + 4 <= before);
		CHECK(e.kind >= CP_WATCH_CREATE && e.kind <= CP_WATCH_OVERFLOW && e.is_dir <= 1);
		if (e.kind == CP_WATCH_OVERFLOW)
			CHECK(!e.path && !e.from);
		else
			CHECK(e.path && e.path[0] == '/' && strlen(e.path) <= CP_FS_PATH_MAX);
		CHECK(e.kind == CP_WATCH_MOVE ? (e.from && e.from[0] == '/' && strlen(e.from) <= CP_FS_PATH_MAX) : !e.from);
		CHECK(cp_watch_event_append(&w, &e) == 0);
		cp_watch_event_free(&e);
		count++;
	}
	CHECK(e.path == NULL && e.from == NULL);
	struct cp_reader again = { .p = w.buf, .rem = w.len }, orig = { .p = p, .rem = n };
	struct cp_watch_event a, b;
	for (size_t i = 0; i < count; i++) {
		CHECK(cp_watch_event_next(&again, &b) == 1);
		CHECK(cp_watch_event_next(&orig, &a) == 1);
		CHECK(watch_event_eq(&a, &b));
		cp_watch_event_free(&a);
		cp_watch_event_free(&b);
	}
	CHECK(again.rem == 0);
	cp_writer_free(&w);
	return k;
}

/* VM_MOUNT, VM_UNMOUNT, VM_MOUNTED (shim <-> agent, vm isolation): what decodes is what the
 * agent acts on, so every bound the decoder promises is checked here. */
static int fuzz_vm_mount_messages(unsigned which, const uint8_t *p, size_t n)
{
	int r;
	if (which == 0) {
		struct cp_vm_mount a;
		if ((r = cp_vm_mount_decode(p, n, &a)) != 0) {
			CHECK(a.name == NULL && a.target == NULL);
			return r;
		}
		CHECK(a.target && a.target[0] == '/' && strlen(a.target) <= CP_MAX_STRING);
		CHECK(!(a.flags & ~CP_VM_MOUNT_FLAGS_KNOWN));
		if (a.kind == CP_VM_MOUNT_SHARE) {
			CHECK(a.name && a.name[0] && strlen(a.name) <= CP_VM_MOUNT_NAME_MAX && !strchr(a.name, '/'));
			CHECK(strcmp(a.name, ".") && strcmp(a.name, ".."));
		} else if (a.kind == CP_VM_MOUNT_SHARES_OFF || a.kind == CP_VM_MOUNT_SHARES_ON) {
			/* A pause to disk's: the share as a whole, nothing else named. */
			CHECK(!a.name && !a.size && !a.mode && !a.flags);
		} else {
			CHECK(a.kind == CP_VM_MOUNT_TMPFS && !a.name && a.size > 0 && a.mode <= 07777);
		}
		ROUND_TRIP(struct cp_vm_mount, cp_vm_mount_encode, cp_vm_mount_decode, cp_vm_mount_free, vm_mount_eq, a,
			   CP_VM_MOUNT);
		cp_vm_mount_free(&a);
	} else if (which == 1) {
		struct cp_vm_unmount a;
		if ((r = cp_vm_unmount_decode(p, n, &a)) != 0) {
			CHECK(a.target == NULL);
			return r;
		}
		CHECK(a.target && a.target[0] == '/' && a.mnt_id != 0);
		ROUND_TRIP(struct cp_vm_unmount, cp_vm_unmount_encode, cp_vm_unmount_decode, cp_vm_unmount_free,
			   vm_unmount_eq, a, CP_VM_UNMOUNT);
		cp_vm_unmount_free(&a);
	} else {
		struct cp_vm_mounted a;
		if ((r = cp_vm_mounted_decode(p, n, &a)) != 0)
			return r;
		CHECK(a.mnt_id != 0);
		ROUND_TRIP(struct cp_vm_mounted, cp_vm_mounted_encode, cp_vm_mounted_decode, vm_mounted_free, vm_mounted_eq,
			   a, CP_VM_MOUNTED);
	}
	return 0;
}

static bool pause_eq(const struct cp_pause *a, const struct cp_pause *b)
{
	return a->op == b->op;
}

static void cp_pause_nofree(struct cp_pause *m)
{
	(void)m;
}

static int fuzz_pause_message(const uint8_t *p, size_t n)
{
	struct cp_pause a;
	int r = cp_pause_decode(p, n, &a);
	if (r == 0) {
		CHECK(a.op == CP_PAUSE_OP_PAUSE || a.op == CP_PAUSE_OP_RESUME || a.op == CP_PAUSE_OP_TO_DISK);
		ROUND_TRIP(struct cp_pause, cp_pause_encode, cp_pause_decode, cp_pause_nofree, pause_eq, a, CP_PAUSE);
	}
	return r == -EBADMSG ? 0 : r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	const unsigned selector = data[0] % 13;
	const size_t n = size - 1;
	uint8_t *p = malloc(n ? n : 1);
	CHECK(p != NULL);
	memcpy(p, data + 1, n);

	int r;
	/* Selector bytes 0xf0 and up: the hot mount messages (so that the older selectors, and
	 * the corpus built on them, keep their meaning). */
	if (data[0] >= 0xb0 && data[0] < 0xc0) {
		r = fuzz_display_messages(data[0] % 3, p, n);
		CHECK(r == 0 || r == -EBADMSG || r == -ENOMEM);
		free(p);
		return 0;
	}
	if (data[0] >= 0xa0 && data[0] < 0xb0) {
		r = data[0] == 0xaf ? fuzz_vm_listening(p, n) : fuzz_vm_dns_messages(data[0] % 3, p, n);
		CHECK(r == 0 || r == -EBADMSG || r == -ENOMEM);
		free(p);
		return 0;
	}
	if (data[0] >= 0xcc && data[0] < 0xd0) {
		r = data[0] < 0xce ? fuzz_fwd_connect(p, n) : data[0] == 0xce ? fuzz_watch(p, n) : fuzz_watch_events(p, n);
		CHECK(r == 0 || r == -EBADMSG || r == -ENOMEM);
		free(p);
		return 0;
	}
	if (data[0] >= 0xc0 && data[0] < 0xcc) {
		r = fuzz_vm_mount_messages(data[0] % 3, p, n);
		CHECK(r == 0 || r == -EBADMSG || r == -ENOMEM);
		free(p);
		return 0;
	}
	if (data[0] >= 0xd0 && data[0] < 0xe0) {
		r = data[0] < 0xd8 ? fuzz_save_message(p, n) : fuzz_pause_message(p, n);
		CHECK(r == 0 || r == -EBADMSG || r == -ENOMEM);
		free(p);
		return 0;
	}
	if (data[0] >= 0xe0 && data[0] < 0xf0) {
		r = fuzz_port_messages(data[0] % 2 == 0, p, n);
		CHECK(r == 0 || r == -EBADMSG || r == -ENOMEM);
		free(p);
		return 0;
	}
	if (data[0] >= 0xf0) {
		r = fuzz_mount_messages(data[0] % 3, p, n);
		CHECK(r == 0 || r == -EBADMSG || r == -ENOMEM);
		free(p);
		return 0;
	}
	switch (selector) {
	case 0: {
		struct cp_hello a;
		r = cp_hello_decode(p, n, &a);
		if (r == 0) {
			CHECK(!a.role || strlen(a.role) <= CP_MAX_STRING);
			ROUND_TRIP(struct cp_hello, cp_hello_encode, cp_hello_decode, cp_hello_free, hello_eq, a, CP_HELLO);
			cp_hello_free(&a);
		} else {
			CHECK(a.role == NULL);
		}
		break;
	}
	case 1: {
		struct cp_error_msg a;
		r = cp_error_decode(p, n, &a);
		if (r == 0) {
			CHECK(a.errnum > 0 && a.errnum <= 4095);
			ROUND_TRIP(struct cp_error_msg, cp_error_encode, cp_error_decode, cp_error_free, error_eq, a,
				   CP_ERROR);
			cp_error_free(&a);
		} else {
			CHECK(a.message == NULL);
		}
		break;
	}
	case 2: {
		struct cp_exec a;
		r = cp_exec_decode(p, n, &a);
		if (r == 0) {
			CHECK(a.argc >= 1);
			check_strv(a.argv, a.argc, CP_MAX_ARGS);
			check_strv(a.env, a.envc, CP_MAX_ENV);
			CHECK(a.rows <= 0xffff && a.cols <= 0xffff);
			ROUND_TRIP(struct cp_exec, cp_exec_encode, cp_exec_decode, cp_exec_free, exec_eq, a, CP_EXEC);
			cp_exec_free(&a);
		} else {
			CHECK(a.argv == NULL && a.env == NULL && a.cwd == NULL && a.user == NULL);
		}
		break;
	}
	case 3: {
		struct cp_started a;
		r = cp_started_decode(p, n, &a);
		if (r == 0)
			ROUND_TRIP(struct cp_started, cp_started_encode, cp_started_decode, NO_FREE, started_eq, a,
				   CP_STARTED);
		break;
	}
	case 4: {
		struct cp_credit a;
		r = cp_credit_decode(p, n, &a);
		if (r == 0)
			ROUND_TRIP(struct cp_credit, cp_credit_encode, cp_credit_decode, NO_FREE, credit_eq, a, CP_CREDIT);
		break;
	}
	case 5: {
		struct cp_exit a;
		r = cp_exit_decode(p, n, &a);
		if (r == 0)
			ROUND_TRIP(struct cp_exit, cp_exit_encode, cp_exit_decode, NO_FREE, exit_eq, a, CP_EXIT);
		break;
	}
	case 6: {
		struct cp_signal a;
		r = cp_signal_decode(p, n, &a);
		if (r == 0)
			ROUND_TRIP(struct cp_signal, cp_signal_encode, cp_signal_decode, NO_FREE, signal_eq, a, CP_SIGNAL);
		break;
	}
	case 7: {
		struct cp_resize a;
		r = cp_resize_decode(p, n, &a);
		if (r == 0)
			ROUND_TRIP(struct cp_resize, cp_resize_encode, cp_resize_decode, NO_FREE, resize_eq, a, CP_RESIZE);
		break;
	}
	case 8: {
		struct cp_stop a;
		r = cp_stop_decode(p, n, &a);
		if (r == 0)
			ROUND_TRIP(struct cp_stop, cp_stop_encode, cp_stop_decode, NO_FREE, stop_eq, a, CP_STOP);
		break;
	}
	case 9: {
		struct cp_init a;
		r = cp_init_decode(p, n, &a);
		if (r == 0) {
			check_strv(a.env, a.envc, CP_MAX_ENV);
			CHECK(a.seccomp_len % 8 == 0 && a.seccomp_len <= CP_MAX_SECCOMP_BYTES);
			CHECK((a.seccomp_len == 0) == (a.seccomp_bpf == NULL));
			ROUND_TRIP(struct cp_init, cp_init_encode, cp_init_decode, cp_init_free, init_eq, a, CP_INIT);
			cp_init_free(&a);
		} else {
			CHECK(a.seccomp_bpf == NULL && a.env == NULL);
		}
		break;
	}
	case 10: {
		struct cp_fs a;
		r = cp_fs_decode(p, n, &a);
		if (r == 0) {
			check_fs(&a);
			ROUND_TRIP(struct cp_fs, cp_fs_encode, cp_fs_decode, cp_fs_free, fs_eq, a, CP_FS);
			cp_fs_free(&a);
		} else {
			CHECK(a.path == NULL && a.path2 == NULL);
		}
		break;
	}
	case 11: {
		struct cp_fs_entry a;
		r = cp_fs_entry_decode(p, n, &a);
		if (r == 0) {
			check_entry(&a, true);
			ROUND_TRIP(struct cp_fs_entry, cp_fs_entry_encode_ok, cp_fs_entry_decode, cp_fs_entry_free,
				   entry_eq, a, CP_OK);
			cp_fs_entry_free(&a);
		} else {
			CHECK(a.name == NULL && a.link == NULL);
		}
		break;
	}
	default:
		r = walk_records(p, n);
		break;
	}
	/* Decoders fail only for a malformed payload (-EBADMSG) or, in theory, -ENOMEM. */
	CHECK(r == 0 || r == -EBADMSG || r == -ENOMEM);
	free(p);
	return 0;
}
