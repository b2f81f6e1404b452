/* A hostile capsule-agent, for tests/security/test_vm_hostile_guest.py: what a guest whose
 * kernel or agent is no longer ours can put on the agent's channel. It says HELLO and takes
 * INIT as the real agent does (fd 3 is its end of the shim's socket), then answers each EXEC
 * with the misbehaviour its argv[0] names:
 *
 *   foreign      STARTED, then a STOP frame (one a shim sends, never an agent), then EXIT 0
 *   restarted    STARTED twice
 *   fat-exit     EXIT whose payload is 512 KiB of a field no EXIT has
 *   giant        a header that announces a 4 GiB payload
 *   garbage      64 KiB of bytes that are no frame at all
 *   flood        DATA on stdout far past the credit the client granted
 *   stop-exit    STARTED, then EXIT with signal SIGSTOP (no process ends by a stop signal)
 *   polite       STARTED, "ok\n" on stdout, EXIT 0 (the control: a well-behaved answer)
 *
 * It never exits on its own: the sandbox's end is the shim's to decide. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proto.h"

#define AGENT_FD 3

static struct cp_writer w;

static void send_all(const void *p, size_t n)
{
	const uint8_t *b = p;
	while (n) {
		ssize_t k = write(AGENT_FD, b, n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			_exit(0); /* the shim hung up: the sandbox is over */
		b += k;
		n -= (size_t)k;
	}
}

static void send_w(void)
{
	send_all(w.buf, w.len);
}

static void started(uint32_t chan)
{
	struct cp_started st = { .pid = 2 };
	if (cp_started_encode(&w, chan, &st) == 0)
		send_w();
}

static void exited(uint32_t chan)
{
	struct cp_exit ex = { 0 };
	if (cp_exit_encode(&w, chan, &ex) == 0)
		send_w();
}

static void misbehave(const char *how, uint32_t chan)
{
	static uint8_t junk[512 * 1024];
	if (!strcmp(how, "foreign")) {
		started(chan);
		struct cp_stop stop = { .timeout_ms = 1 };
		if (cp_stop_encode(&w, chan, &stop) == 0)
			send_w();
		exited(chan);
	} else if (!strcmp(how, "restarted")) {
		started(chan);
		started(chan);
		exited(chan);
	} else if (!strcmp(how, "fat-exit")) {
		started(chan);
		cp_frame_begin(&w, CP_EXIT, 0, chan);
		cp_put_u32(&w, 1, 0);
		cp_put_bytes(&w, 0x7777, junk, sizeof(junk));
		if (cp_frame_finish(&w) == 0)
			send_w();
	} else if (!strcmp(how, "giant")) {
		uint8_t hdr[CP_HEADER_SIZE];
		struct cp_header h = { .len = 0xffffffffu, .type = CP_DATA, .flags = CP_STREAM_STDOUT, .chan = chan };
		cp_header_encode(hdr, &h);
		send_all(hdr, sizeof(hdr));
		send_all(junk, 4096);
	} else if (!strcmp(how, "garbage")) {
		for (size_t i = 0; i < 64 * 1024; i++)
			junk[i] = (uint8_t)(i * 131 + 7);
		send_all(junk, 64 * 1024);
	} else if (!strcmp(how, "stop-exit")) {
		started(chan);
		struct cp_exit ex = { .exit_code = 128 + SIGSTOP, .signal = SIGSTOP };
		if (cp_exit_encode(&w, chan, &ex) == 0)
			send_w();
	} else if (!strcmp(how, "flood")) {
		started(chan);
		for (int i = 0; i < 64; i++)
			if (cp_data_encode(&w, chan, CP_STREAM_STDOUT, false, junk, 256 * 1024) == 0)
				send_w();
	} else {
		started(chan);
		if (cp_data_encode(&w, chan, CP_STREAM_STDOUT, false, "ok\n", 3) == 0)
			send_w();
		exited(chan);
	}
}

static void on_frame(const struct cp_header *h, const uint8_t *payload)
{
	if (h->type == CP_INIT) {
		if (cp_empty_encode(&w, CP_OK, h->chan) == 0)
			send_w();
	} else if (h->type == CP_EXEC) {
		struct cp_exec m;
		if (cp_exec_decode(payload, h->len, &m) < 0)
			return;
		misbehave(m.argc ? m.argv[0] : "", h->chan);
		cp_exec_free(&m);
	}
}

int main(void)
{
	cp_writer_init(&w);
	struct cp_hello me = { .version = CP_VERSION, .role = "agent" };
	if (cp_hello_encode(&w, 0, &me) == 0)
		send_w();
	struct cp_rxbuf rx;
	cp_rxbuf_init(&rx);
	for (;;) {
		long n = cp_rxbuf_fill(&rx, AGENT_FD);
		if (n == 0 || (n < 0 && n != -EINTR && n != -EAGAIN))
			break;
		struct cp_header h;
		const uint8_t *payload;
		while (cp_rxbuf_peek(&rx, &h, &payload) > 0) {
			on_frame(&h, payload);
			cp_rxbuf_consume(&rx, &h);
		}
	}
	/* The shim hung up; a PID 1 that exits ends the sandbox, which is what it wants now. */
	return 0;
}
