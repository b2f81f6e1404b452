/* libFuzzer target: the frame layer as a hostile peer drives it (docs/security.md, "A hostile
 * or wedged guest").
 *
 * The input is a byte stream sent through a real non-blocking pipe in chunks whose sizes the
 * input picks, read back with cp_rxbuf_fill, split with cp_rxbuf_peek/consume, and every whole
 * frame is handed to the decoder for its type, and to the shim's check of what an agent may
 * answer a client (cp_agent_reply_check). A plain reference parser walks the same bytes,
 * and the frames the rx buffer yields must be exactly the ones it finds: same headers, same
 * payload bytes, same verdict on a corrupt header.
 *
 * Input layout:
 *   byte 0     mode: bits 0-1 chunk size class (1-16, 1-512, 1-8192, 1-65536 bytes);
 *              bits 2-4 all set: a generated DATA frame goes first (grows the buffer, so
 *              the fuzzed frames after it land at an offset and exercise compaction; rare,
 *              as big frames are slow); bits 5-7 seed the chunk sizes
 *   bytes 1-2  that frame's payload size, little endian v: v * 2 below 0xff00 (up to ~128 KiB,
 *              around the 64 KiB first allocation), else CP_MAX_PAYLOAD - (0xffff - v) * 4 KiB
 *   rest       the stream
 * Inputs shorter than 3 bytes are the stream as they are.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#include "fuzz_check.h"

static int pipe_fds[2] = { -1, -1 };

static void open_pipe(void)
{
	if (pipe_fds[0] >= 0)
		return;
	if (pipe2(pipe_fds, O_NONBLOCK | O_CLOEXEC) < 0) {
		perror("pipe2");
		abort();
	}
}

/* Empty the pipe so the next input starts clean (an input may stop at a corrupt header). */
static void drain_pipe(void)
{
	uint8_t buf[4096];
	while (read(pipe_fds[0], buf, sizeof(buf)) > 0)
		;
}

static uint8_t pattern[CP_MAX_PAYLOAD]; /* the generated frame's payload */
static uint8_t *stream_buf;
static size_t stream_cap;

static uint8_t *stream_buffer(size_t len)
{
	if (!stream_buf) {
		for (size_t i = 0; i < sizeof(pattern); i++)
			pattern[i] = (uint8_t)(i * 7 + 1);
	}
	if (!stream_buf || len > stream_cap) {
		if (len < 4096)
			len = 4096;
		uint8_t *nb = realloc(stream_buf, len);
		CHECK(nb != NULL);
		stream_buf = nb;
		stream_cap = len;
	}
	return stream_buf;
}

static uint32_t xorshift(uint32_t *s)
{
	uint32_t x = *s;
	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	return *s = x;
}

/* What every successful decode must guarantee, whatever the input. */
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

/* What the shim forwards to a client from an agent (cp_agent_reply_check): only the frames an
 * agent answers with, the numbers-only ones small, DATA on stdout or stderr. Checked on a copy
 * of exactly the payload's size. */
static void check_agent_reply(const struct cp_header *h, const uint8_t *payload)
{
	uint8_t *p = malloc(h->len ? h->len : 1);
	CHECK(p != NULL);
	memcpy(p, payload, h->len);
	if (cp_agent_reply_check(h, p) == 0) {
		unsigned stream = h->flags & CP_FLAG_STREAM_MASK;
		CHECK(h->type == CP_STARTED || h->type == CP_DATA || h->type == CP_CREDIT || h->type == CP_EXIT ||
		      h->type == CP_ERROR || h->type == CP_OK);
		if (h->type == CP_STARTED || h->type == CP_CREDIT || h->type == CP_EXIT)
			CHECK(h->len <= CP_MAX_AGENT_NUMBERS_PAYLOAD);
		if (h->type == CP_DATA)
			CHECK(stream == CP_STREAM_STDOUT || stream == CP_STREAM_STDERR);
	}
	free(p);
}

/* Decode one frame's payload with the decoder for its type, from a copy of exactly its size
 * so ASan sees any overread. */
static void dispatch(const struct cp_header *h, const uint8_t *payload)
{
	check_agent_reply(h, payload);
	if (h->type == CP_DATA || h->type == CP_OK || h->type == CP_SHUTDOWN)
		return; /* raw bytes or nothing: no decoder */
	uint8_t *p = malloc(h->len ? h->len : 1);
	CHECK(p != NULL);
	memcpy(p, payload, h->len);
	size_t n = h->len;
	int r = 0;
	switch (h->type) {
	case CP_HELLO: {
		struct cp_hello m;
		if ((r = cp_hello_decode(p, n, &m)) == 0) {
			CHECK(!m.role || strlen(m.role) <= CP_MAX_STRING);
			cp_hello_free(&m);
		}
		break;
	}
	case CP_ERROR: {
		struct cp_error_msg m;
		if ((r = cp_error_decode(p, n, &m)) == 0) {
			CHECK(m.errnum > 0 && m.errnum <= 4095);
			CHECK(!m.message || strlen(m.message) <= CP_MAX_STRING);
			cp_error_free(&m);
		}
		break;
	}
	case CP_EXEC: {
		struct cp_exec m;
		if ((r = cp_exec_decode(p, n, &m)) == 0) {
			CHECK(m.argc >= 1);
			check_strv(m.argv, m.argc, CP_MAX_ARGS);
			check_strv(m.env, m.envc, CP_MAX_ENV);
			CHECK(m.rows <= 0xffff && m.cols <= 0xffff);
			CHECK(m.nfds <= CP_EXEC_MAX_FDS);
			cp_exec_free(&m);
		}
		break;
	}
	case CP_STARTED: {
		struct cp_started m;
		r = cp_started_decode(p, n, &m);
		break;
	}
	case CP_CREDIT: {
		struct cp_credit m;
		r = cp_credit_decode(p, n, &m);
		break;
	}
	case CP_EXIT: {
		struct cp_exit m;
		r = cp_exit_decode(p, n, &m);
		break;
	}
	case CP_SIGNAL: {
		struct cp_signal m;
		r = cp_signal_decode(p, n, &m);
		break;
	}
	case CP_RESIZE: {
		struct cp_resize m;
		r = cp_resize_decode(p, n, &m);
		break;
	}
	case CP_STOP: {
		struct cp_stop m;
		r = cp_stop_decode(p, n, &m);
		break;
	}
	case CP_TAKE: {
		struct cp_take m;
		if ((r = cp_take_decode(p, n, &m)) == 0) {
			CHECK(m.name && strlen(m.name) <= CP_MAX_TAKE_NAME);
			CHECK(m.pool && strlen(m.pool) <= CP_MAX_TAKE_NAME);
			cp_take_free(&m);
		}
		break;
	}
	case CP_INIT: {
		struct cp_init m;
		if ((r = cp_init_decode(p, n, &m)) == 0) {
			check_strv(m.env, m.envc, CP_MAX_ENV);
			CHECK(m.seccomp_len % 8 == 0 && m.seccomp_len <= CP_MAX_SECCOMP_BYTES);
			CHECK((m.seccomp_len == 0) == (m.seccomp_bpf == NULL));
			cp_init_free(&m);
		}
		break;
	}
	case CP_FS: {
		struct cp_fs m;
		if ((r = cp_fs_decode(p, n, &m)) == 0) {
			CHECK(m.op >= CP_FS_STAT && m.op <= CP_FS_SYMLINK);
			CHECK(m.path && strlen(m.path) <= CP_FS_PATH_MAX);
			CHECK(!m.path2 || strlen(m.path2) <= CP_FS_PATH_MAX);
			CHECK(m.mode <= 07777);
			cp_fs_free(&m);
		}
		break;
	}
	case CP_MOUNT: {
		struct cp_mount m;
		if ((r = cp_mount_decode(p, n, &m)) == 0) {
			CHECK(m.host_path && m.guest_path && !(m.flags & ~CP_MOUNT_FLAGS_KNOWN));
			cp_mount_free(&m);
		}
		break;
	}
	case CP_UNMOUNT: {
		struct cp_unmount m;
		if ((r = cp_unmount_decode(p, n, &m)) == 0) {
			CHECK(m.target != NULL);
			cp_unmount_free(&m);
		}
		break;
	}
	case CP_MOUNTS:
	case CP_PORTS:
	case CP_STATS:
	case CP_NET_LS:
		break; /* a bare request: no fields to decode */
	case CP_NET_ALLOW:
	case CP_NET_DENY: {
		struct cp_net_rule m;
		if ((r = cp_net_rule_decode(h->type, p, n, &m)) == 0) {
			CHECK(m.rule && m.rule[0] && strlen(m.rule) <= CP_MAX_NET_RULE);
			cp_net_rule_free(&m);
		}
		break;
	}
	case CP_PORT_ADD:
	case CP_PORT_REMOVE: {
		struct cp_port m;
		if ((r = cp_port_decode(h->type, p, n, &m)) == 0) {
			CHECK(m.host_ip && strlen(m.host_ip) <= CP_MAX_PORT_HOST_IP && !(m.flags & ~CP_PORT_FLAGS_KNOWN));
			cp_port_free(&m);
		}
		break;
	}
	case CP_SAVE: {
		struct cp_save m;
		if ((r = cp_save_decode(p, n, &m)) == 0) {
			CHECK(m.name && strlen(m.name) <= CP_MAX_SAVE_NAME && m.op >= CP_SAVE_OP_SAVE && m.op <= CP_SAVE_OP_FORK);
			cp_save_free(&m);
		}
		break;
	}
	case CP_PAUSE: {
		struct cp_pause m;
		if ((r = cp_pause_decode(p, n, &m)) == 0)
			CHECK(m.op == CP_PAUSE_OP_PAUSE || m.op == CP_PAUSE_OP_RESUME || m.op == CP_PAUSE_OP_TO_DISK);
		break;
	}
	case CP_DNS_QUERY: {
		static struct cp_dns_packet m;
		if ((r = cp_dns_query_decode(p, n, &m)) == 0)
			CHECK(m.len >= 1 && m.len <= CP_MAX_DNS_PACKET && m.port >= 1 && m.port <= 65535);
		break;
	}
	case CP_EGRESS: {
		static struct cp_egress m; /* tens of KiB: not on the stack */
		if ((r = cp_egress_decode(p, n, &m)) == 0)
			CHECK(m.nadd <= CP_MAX_EGRESS_ELEMS && m.ndel <= CP_MAX_EGRESS_ELEMS &&
			      m.ncidrs <= CP_MAX_EGRESS_CIDRS && m.answer.len <= CP_MAX_DNS_PACKET);
		break;
	}
	case CP_EGRESS_USED: {
		struct cp_egress_used m;
		r = cp_egress_used_decode(p, n, &m);
		break;
	}
	case CP_VM_LISTENING: {
		struct cp_vm_listening m;
		if ((r = cp_vm_listening_decode(p, n, &m)) == 0)
			CHECK(m.n <= CP_MAX_VM_LISTENING);
		break;
	}
	case CP_LIMITS: {
		struct cp_limits m;
		/* Decoded, a request names what it sets and nothing else; the bounds are checked
		 * after (cp_limits_check), and must answer in one line whatever the values. */
		if ((r = cp_limits_decode(p, n, &m)) == 0) {
			char why[160];
			CHECK(m.set && !(m.set & ~0x7ffu));
			CHECK(strlen(m.cpuset_cpus) <= CP_LIMITS_CPUSET_MAX && strlen(m.cpuset_mems) <= CP_LIMITS_CPUSET_MAX);
			int c = cp_limits_check(&m, why, sizeof(why));
			CHECK(c == 0 || (c == -EINVAL && why[0] && !strchr(why, '\n')));
		}
		break;
	}
	case CP_WATCH: {
		struct cp_watch m;
		if ((r = cp_watch_decode(p, n, &m)) == 0) {
			CHECK(m.path && m.path[0] == '/' && strlen(m.path) <= CP_FS_PATH_MAX);
			CHECK(!(m.flags & ~CP_WATCH_RECURSIVE));
			cp_watch_free(&m);
		}
		break;
	}
	case CP_VM_MOUNT: {
		struct cp_vm_mount m;
		if ((r = cp_vm_mount_decode(p, n, &m)) == 0) {
			CHECK(m.target && m.target[0] == '/' && !(m.flags & ~CP_VM_MOUNT_FLAGS_KNOWN));
			CHECK(m.kind == CP_VM_MOUNT_TMPFS || m.kind == CP_VM_MOUNT_SHARES_OFF || m.kind == CP_VM_MOUNT_SHARES_ON ||
			      (m.name && !strchr(m.name, '/')));
			cp_vm_mount_free(&m);
		}
		break;
	}
	case CP_VM_UNMOUNT: {
		struct cp_vm_unmount m;
		if ((r = cp_vm_unmount_decode(p, n, &m)) == 0) {
			CHECK(m.target && m.mnt_id);
			cp_vm_unmount_free(&m);
		}
		break;
	}
	case CP_VM_MOUNTED: {
		struct cp_vm_mounted m;
		if ((r = cp_vm_mounted_decode(p, n, &m)) == 0)
			CHECK(m.mnt_id != 0);
		break;
	}
	case CP_FWD_CONNECT: {
		struct cp_fwd_connect m;
		if ((r = cp_fwd_connect_decode(p, n, &m)) == 0)
			CHECK(m.port >= 1 && m.port <= 65535);
		break;
	}
	case CP_FWD_CLOSE:
	case CP_DIRECT: /* no payload; its descriptor is not in the bytes */
		break;
	case CP_SCREENSHOT: {
		struct cp_screenshot m;
		if ((r = cp_screenshot_decode(p, n, &m)) == 0) {
			CHECK(m.offset == 0 || m.shot != 0);
			cp_screenshot_free(&m);
		}
		break;
	}
	case CP_INPUT: {
		struct cp_input m;
		if ((r = cp_input_decode(p, n, &m)) == 0) {
			CHECK(!m.text || (m.text[0] && strlen(m.text) <= CP_MAX_INPUT_TEXT));
			cp_input_free(&m);
		}
		break;
	}
	default:
		CHECK(!"the rx buffer yielded a frame of unknown type");
	}
	CHECK(r == 0 || r == -EBADMSG);
	free(p);
}

/* The reference: the whole frames in STREAM[0..LEN), and whether the walk stopped at a header
 * that does not decode. */
struct expect {
	size_t frames;
	bool corrupt;
};

static struct expect reference_walk(const uint8_t *stream, size_t len)
{
	struct expect e = { 0, false };
	size_t off = 0;
	while (len - off >= CP_HEADER_SIZE) {
		struct cp_header h;
		if (cp_header_decode(stream + off, len - off, &h) < 0) {
			e.corrupt = true;
			break;
		}
		if (len - off - CP_HEADER_SIZE < h.len)
			break;
		off += CP_HEADER_SIZE + h.len;
		e.frames++;
	}
	return e;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	open_pipe();

	/* The header decoder alone, on the raw input (any length, any bytes). */
	{
		struct cp_header h;
		int r = cp_header_decode(data, size, &h);
		CHECK(r == 0 || r == -EBADMSG);
		if (r == 0)
			CHECK(h.len <= CP_MAX_PAYLOAD && cp_type_known(h.type));
	}

	uint8_t mode = 0;
	size_t prefix_len = 0;
	const uint8_t *rest = data;
	size_t rest_len = size;
	if (size >= 3) {
		mode = data[0];
		if ((mode & 0x1c) == 0x1c) {
			uint32_t v = (uint32_t)data[1] | ((uint32_t)data[2] << 8);
			size_t plen = v < 0xff00 ? (size_t)v * 2 : CP_MAX_PAYLOAD - (size_t)(0xffff - v) * 4096;
			prefix_len = CP_HEADER_SIZE + plen;
		}
		rest = data + 3;
		rest_len = size - 3;
	}

	/* The stream lives in a buffer kept across runs: a fresh megabyte per run would spend
	 * the time in page faults. */
	size_t len = prefix_len + rest_len;
	uint8_t *stream = stream_buffer(len);
	if (prefix_len) {
		const struct cp_header h = { .len = (uint32_t)(prefix_len - CP_HEADER_SIZE), .type = CP_DATA,
					     .flags = CP_STREAM_STDOUT, .chan = 1 };
		cp_header_encode(stream, &h);
		memcpy(stream + CP_HEADER_SIZE, pattern, prefix_len - CP_HEADER_SIZE);
	}
	if (rest_len)
		memcpy(stream + prefix_len, rest, rest_len);

	struct expect want = reference_walk(stream, len);

	static const uint32_t chunk_max[4] = { 16, 512, 8192, 65536 };
	uint32_t seed = 0x9e3779b9u ^ ((uint32_t)(mode >> 5) << 8) ^ (uint32_t)size;
	if (!seed)
		seed = 1;

	struct cp_rxbuf rx;
	cp_rxbuf_init(&rx);
	size_t off = 0;      /* bytes written into the pipe */
	size_t ref_off = 0;  /* where the next expected frame starts in STREAM */
	size_t got = 0;      /* frames the rx buffer yielded */
	int verdict = 0;
	bool eof = false;

	for (;;) {
		/* Take every whole frame at the front. */
		for (;;) {
			struct cp_header h;
			const uint8_t *payload = NULL;
			int r = cp_rxbuf_peek(&rx, &h, &payload);
			CHECK(r == 0 || r == 1 || r == -EBADMSG);
			if (r <= 0) {
				verdict = r;
				break;
			}
			CHECK(got < want.frames);
			struct cp_header ref;
			CHECK(cp_header_decode(stream + ref_off, len - ref_off, &ref) == 0);
			CHECK(h.len == ref.len && h.type == ref.type && h.flags == ref.flags && h.chan == ref.chan);
			CHECK(payload != NULL || h.len == 0);
			CHECK(h.len == 0 || memcmp(payload, stream + ref_off + CP_HEADER_SIZE, h.len) == 0);
			dispatch(&h, payload);
			ref_off += CP_HEADER_SIZE + h.len;
			got++;
			cp_rxbuf_consume(&rx, &h);
		}
		if (verdict < 0 || eof)
			break;

		/* Send the next chunk; a big generated frame goes at least 4 KiB at a time. */
		if (off < len) {
			size_t max = chunk_max[mode & 3];
			if (off < prefix_len && max < 4096)
				max = 4096;
			size_t n = 1 + xorshift(&seed) % max;
			if (n > len - off)
				n = len - off;
			ssize_t w = write(pipe_fds[1], stream + off, n);
			if (w > 0)
				off += (size_t)w;
			else
				CHECK(w < 0 && errno == EAGAIN);
		}

		long r = cp_rxbuf_fill(&rx, pipe_fds[0]);
		/* The buffer must always have room for the rest of the frame at its front. */
		CHECK(r != -ENOBUFS);
		CHECK(r > 0 || r == -EAGAIN);
		CHECK(rx.cap <= CP_HEADER_SIZE + CP_MAX_PAYLOAD);
		CHECK(rx.start <= rx.len && rx.len <= rx.cap);
		if (r == -EAGAIN && off == len)
			eof = true; /* all sent, all read: one last look at the front */
	}

	CHECK(got == want.frames);
	CHECK((verdict == -EBADMSG) == want.corrupt);
	if (!want.corrupt)
		CHECK(off == len);

	drain_pipe();
	cp_rxbuf_free(&rx);
	return 0;
}
