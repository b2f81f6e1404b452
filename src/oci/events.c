/* capsule-oci events: runc's event stream from capsule_sandbox_stats.
 *
 * Each line is one JSON object as runc writes it: {"type":"stats","id":ID,"data":STATS} with
 * STATS in runc's types.Stats shape (the keys containerd and podman read: cpu.usage.total in
 * nanoseconds, memory.usage.{usage,limit}, pids.{current,limit}, blkio's
 * ioServiceBytesRecursive, network_interfaces), and {"type":"oom","id":ID} each time the
 * memory controller's OOM kill count grows. --stats prints one stats event and exits; without
 * it the stream goes on every --interval until the container stops. OOM kills are looked for
 * more often than stats are printed (runc is woken by the kernel's eventfd; capsule asks its
 * shim), so a kill is reported within OOM_POLL_MS. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "json.h"
#include "oci.h"
#include "util.h"

#define OOM_POLL_MS 200

static void stats_data(struct json_writer *w, const capsule_stats *st)
{
	json_object_begin(w);
	json_key(w, "cpu");
	json_object_begin(w);
	json_key(w, "usage");
	json_object_begin(w);
	json_kv_uint(w, "total", st->has_cpu ? st->cpu_usec * 1000 : 0);
	json_object_end(w);
	json_key(w, "throttling");
	json_object_begin(w);
	json_object_end(w);
	json_object_end(w);

	json_key(w, "memory");
	json_object_begin(w);
	json_key(w, "usage");
	json_object_begin(w);
	json_kv_uint(w, "usage", st->has_memory ? st->memory_bytes : 0);
	json_kv_uint(w, "limit", st->memory_limit_bytes);
	json_object_end(w);
	json_object_end(w);

	json_key(w, "pids");
	json_object_begin(w);
	json_kv_uint(w, "current", st->has_pids ? st->pids : 0);
	json_kv_uint(w, "limit", st->pids_limit);
	json_object_end(w);

	/* The sandbox's bytes summed over its devices: capsule keeps no per-device figure, so
	 * they are given as device 0:0. */
	json_key(w, "blkio");
	json_object_begin(w);
	json_key(w, "ioServiceBytesRecursive");
	json_array_begin(w);
	if (st->has_disk) {
		const char *ops[] = { "Read", "Write", "Total" };
		uint64_t v[] = { st->disk_read_bytes, st->disk_write_bytes, st->disk_read_bytes + st->disk_write_bytes };
		for (size_t i = 0; i < ARRAY_SIZE(ops); i++) {
			json_object_begin(w);
			json_kv_uint(w, "major", 0);
			json_kv_uint(w, "minor", 0);
			json_kv_string(w, "op", ops[i]);
			json_kv_uint(w, "value", v[i]);
			json_object_end(w);
		}
	}
	json_array_end(w);
	json_object_end(w);

	json_key(w, "network_interfaces");
	json_array_begin(w);
	for (size_t i = 0; i < st->n_net; i++) {
		json_object_begin(w);
		json_kv_string(w, "name", st->net[i].name);
		json_kv_uint(w, "rx_bytes", st->net[i].rx_bytes);
		json_kv_uint(w, "rx_packets", st->net[i].rx_packets);
		json_kv_uint(w, "tx_bytes", st->net[i].tx_bytes);
		json_kv_uint(w, "tx_packets", st->net[i].tx_packets);
		json_object_end(w);
	}
	json_array_end(w);
	json_object_end(w);
}

/* One event line on stdout; STATS is NULL for an oom event. */
static int emit(const char *id, const capsule_stats *st)
{
	struct json_writer w;
	json_init(&w, false);
	json_object_begin(&w);
	json_kv_string(&w, "type", st ? "stats" : "oom");
	json_kv_string(&w, "id", id);
	if (st) {
		json_key(&w, "data");
		stats_data(&w, st);
	}
	json_object_end(&w);
	char *text = json_steal(&w, NULL);
	if (!text)
		return oci_fail("out of memory");
	printf("%s\n", text);
	free(text);
	return fflush(stdout) == 0 ? 0 : oci_fail("events: stdout: %s", strerror(errno));
}

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int oci_events(const struct oci_state *st, bool once, uint64_t interval_ms)
{
	if (strcmp(st->status, "running") && strcmp(st->status, "created") && strcmp(st->status, "paused"))
		return oci_fail("container '%s' is %s: it has no events", st->id, st->status);
	capsule_error err = { 0 };
	capsule_sandbox *sb;
	if (capsule_sandbox_open(&sb, st->sandbox, &err) < 0)
		return oci_fail_err(&err);
	capsule_stats s;
	int r = capsule_sandbox_stats(sb, &s, &err);
	if (r < 0 || once) {
		capsule_sandbox_free(sb);
		return r < 0 ? oci_fail_err(&err) : emit(st->id, &s);
	}
	uint64_t ooms = s.has_oom ? s.oom_kills : 0;
	uint64_t next = mono_ms();
	for (;;) {
		if (s.has_oom && s.oom_kills > ooms && (r = emit(st->id, NULL)))
			break;
		if (s.has_oom)
			ooms = s.oom_kills;
		uint64_t now = mono_ms();
		if (now >= next) {
			if ((r = emit(st->id, &s)))
				break;
			next = now + interval_ms;
		}
		uint64_t wait = next - now < OOM_POLL_MS ? next - now : OOM_POLL_MS;
		usleep((useconds_t)wait * 1000);
		/* The container stopped: the stream ends, as runc's does. */
		if (capsule_sandbox_stats(sb, &s, &err) < 0) {
			r = 0;
			break;
		}
	}
	capsule_sandbox_free(sb);
	return r;
}
