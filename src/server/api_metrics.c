/* GET /metrics: Prometheus's text exposition format (0.0.4). What the caller's token may see:
 * its own sandboxes and its own requests; an admin token (capsule token create NAME --admin)
 * sees every token's. Per sandbox what the library measures (capsule_sandbox_stats: cpu,
 * memory, pids, disk and network I/O, activity), and what the server counts itself: execs and
 * their latency, requests by route and status. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <microhttpd.h>
#include <openssl/crypto.h>

#include "api_internal.h"
#include "serve.h"
#include "util.h"

/* Seconds; Prometheus's own default buckets, with a minute on top for long commands. */
static const double exec_buckets[METRICS_EXEC_BUCKETS] = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
							   0.5,   1,    2.5,   5,    10,  60 };

/* Request counts: one row per (token, method, route, status) seen, at most REQ_ROWS_MAX; what
 * would make more is counted in one overflow figure instead, so that no client can grow the
 * table without bound (a token may make requests with any status, but routes and statuses are
 * few: the bound is far above real use). */
#define REQ_ROWS_MAX 4096

struct req_row {
	char token[SERVE_TOKEN_NAME_MAX + 1]; /* "" for requests without a valid token */
	char method[16];
	const char *route;                    /* the route's pattern (static), or NULL: no route */
	unsigned status;
	uint64_t count;
};

static pthread_mutex_t metrics_lock = PTHREAD_MUTEX_INITIALIZER;
static struct req_row *req_rows;
static size_t n_req_rows;
static uint64_t req_overflow;

void metrics_count_request(const struct request *rq)
{
	const char *token = rq->authed ? rq->token_name : "";
	const char *route = rq->route ? rq->route->pattern : NULL;
	pthread_mutex_lock(&metrics_lock);
	struct req_row *row = NULL;
	for (size_t i = 0; i < n_req_rows && !row; i++)
		if (req_rows[i].status == rq->status && req_rows[i].route == route && !strcmp(req_rows[i].method, rq->method) &&
		    !strcmp(req_rows[i].token, token))
			row = &req_rows[i];
	if (!row && n_req_rows < REQ_ROWS_MAX) {
		struct req_row *v = realloc(req_rows, (n_req_rows + 1) * sizeof(*v));
		if (v) {
			req_rows = v;
			row = &req_rows[n_req_rows++];
			memset(row, 0, sizeof(*row));
			snprintf(row->token, sizeof(row->token), "%s", token);
			snprintf(row->method, sizeof(row->method), "%s", rq->method);
			row->route = route;
			row->status = rq->status;
		}
	}
	if (row)
		row->count++;
	else
		req_overflow++;
	pthread_mutex_unlock(&metrics_lock);
}

void metrics_count_exec(struct sandbox_entry *e, uint64_t ms, const char *outcome)
{
	double s = (double)ms / 1000.0;
	pthread_mutex_lock(&metrics_lock);
	for (size_t i = 0; i < METRICS_EXEC_BUCKETS; i++)
		if (s <= exec_buckets[i])
			e->exec_buckets[i]++;
	e->exec_count++;
	e->exec_ms_sum += ms;
	if (!strcmp(outcome, "exited"))
		e->exec_exited++;
	else if (!strcmp(outcome, "timed_out"))
		e->exec_timed_out++;
	else
		e->exec_failed++;
	pthread_mutex_unlock(&metrics_lock);
}

/* A label value as the format wants it: backslash, double quote and newline escaped. */
static void label_value(FILE *f, const char *v)
{
	for (; *v; v++) {
		if (*v == '\\' || *v == '"')
			fputc('\\', f), fputc(*v, f);
		else if (*v == '\n')
			fputs("\\n", f);
		else
			fputc(*v, f);
	}
}

static void family(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Whole numbers (bytes, counts) exactly, seconds to the microsecond. */
static void number(FILE *f, double v)
{
	if (v == (double)(uint64_t)v && v < 1e18)
		fprintf(f, "%llu\n", (unsigned long long)v);
	else
		fprintf(f, "%.6f\n", v);
}

static void sample(FILE *f, const char *name, const char *sandbox, const char *extra_key, const char *extra_value,
		   double value)
{
	fprintf(f, "%s{sandbox=\"%s\"", name, sandbox);
	if (extra_key) {
		fprintf(f, ",%s=\"", extra_key);
		label_value(f, extra_value);
		fputc('"', f);
	}
	fputs("} ", f);
	number(f, value);
}

struct sandbox_view {
	struct sandbox_entry *e;
	capsule_stats st;
	bool have_stats;
	char token[SERVE_TOKEN_NAME_MAX + 1];
	uint64_t buckets[METRICS_EXEC_BUCKETS], count, ms_sum, exited, timed_out, failed;
};

/* The name of the token with hash OWNER, or "" (removed). Under the lock. */
static void owner_name(const uint8_t owner[32], char out[SERVE_TOKEN_NAME_MAX + 1])
{
	out[0] = '\0';
	for (size_t i = 0; i < serve_state.n_tokens; i++)
		if (!CRYPTO_memcmp(serve_state.tokens[i].hash, owner, 32))
			memcpy(out, serve_state.tokens[i].name, SERVE_TOKEN_NAME_MAX + 1);
}

static void write_sandboxes(FILE *f, struct sandbox_view *v, size_t n)
{
	family(f, "capsule_sandboxes", "gauge", "Sandboxes this token may see.");
	fprintf(f, "capsule_sandboxes %zu\n", n);
	family(f, "capsule_sandbox_info", "gauge", "One per sandbox, its settings as labels.");
	for (size_t i = 0; i < n; i++) {
		struct sandbox_entry *e = v[i].e;
		fprintf(f, "capsule_sandbox_info{sandbox=\"%s\",token=\"", e->id);
		label_value(f, v[i].token);
		fputs("\",image=\"", f);
		label_value(f, e->image ? e->image : "host");
		fprintf(f, "\",isolation=\"%s\"} 1\n", e->isolation == CAPSULE_ISOLATION_VM ? "vm" : "container");
	}
	family(f, "capsule_sandbox_memory_limit_bytes", "gauge", "The sandbox's memory limit.");
	for (size_t i = 0; i < n; i++)
		sample(f, "capsule_sandbox_memory_limit_bytes", v[i].e->id, NULL, NULL, (double)v[i].e->memory_bytes);

	/* What the library measures: absent for a sandbox whose figure could not be had. */
	struct {
		const char *name, *type, *help;
	} fam[] = {
		{ "capsule_sandbox_cpu_seconds_total", "counter", "CPU time used, user and system." },
		{ "capsule_sandbox_memory_bytes", "gauge", "Memory charged to the sandbox now." },
		{ "capsule_sandbox_pids", "gauge", "Processes in the sandbox now." },
		{ "capsule_sandbox_disk_read_bytes_total", "counter", "Bytes read from block devices." },
		{ "capsule_sandbox_disk_written_bytes_total", "counter", "Bytes written to block devices." },
		{ "capsule_sandbox_active_operations", "gauge", "Commands and file operations in progress." },
		{ "capsule_sandbox_idle_seconds", "gauge", "Time since the last command or file operation ended (0 while one runs)." },
	};
	for (size_t k = 0; k < ARRAY_SIZE(fam); k++) {
		family(f, fam[k].name, fam[k].type, fam[k].help);
		for (size_t i = 0; i < n; i++) {
			const capsule_stats *st = &v[i].st;
			if (!v[i].have_stats)
				continue;
			double val;
			switch (k) {
			case 0:
				if (!st->has_cpu)
					continue;
				val = (double)st->cpu_usec / 1e6;
				break;
			case 1:
				if (!st->has_memory)
					continue;
				val = (double)st->memory_bytes;
				break;
			case 2:
				if (!st->has_pids)
					continue;
				val = (double)st->pids;
				break;
			case 3:
			case 4:
				if (!st->has_disk)
					continue;
				val = (double)(k == 3 ? st->disk_read_bytes : st->disk_write_bytes);
				break;
			case 5:
				val = st->active;
				break;
			default:
				val = (double)st->idle_ms / 1000.0;
				break;
			}
			sample(f, fam[k].name, v[i].e->id, NULL, NULL, val);
		}
	}
	static const char *const net_names[] = { "capsule_sandbox_network_receive_bytes_total",
						 "capsule_sandbox_network_transmit_bytes_total",
						 "capsule_sandbox_network_receive_packets_total",
						 "capsule_sandbox_network_transmit_packets_total" };
	for (size_t k = 0; k < 4; k++) {
		family(f, net_names[k], "counter", "Network I/O of the sandbox's interfaces (containers).");
		for (size_t i = 0; i < n; i++)
			for (size_t j = 0; v[i].have_stats && j < v[i].st.n_net; j++) {
				const typeof(v[i].st.net[0]) *ni = &v[i].st.net[j];
				uint64_t val = k == 0 ? ni->rx_bytes : k == 1 ? ni->tx_bytes : k == 2 ? ni->rx_packets : ni->tx_packets;
				sample(f, net_names[k], v[i].e->id, "interface", ni->name, (double)val);
			}
	}

	family(f, "capsule_execs_total", "counter", "Execs over the API, plain and streaming, by outcome (exited, timed_out, error).");
	for (size_t i = 0; i < n; i++) {
		sample(f, "capsule_execs_total", v[i].e->id, "outcome", "exited", (double)v[i].exited);
		sample(f, "capsule_execs_total", v[i].e->id, "outcome", "timed_out", (double)v[i].timed_out);
		sample(f, "capsule_execs_total", v[i].e->id, "outcome", "error", (double)v[i].failed);
	}
	family(f, "capsule_exec_duration_seconds", "histogram", "Time an exec over the API took, start to answer (a streaming one: to its end).");
	for (size_t i = 0; i < n; i++) {
		for (size_t b = 0; b < METRICS_EXEC_BUCKETS; b++)
			fprintf(f, "capsule_exec_duration_seconds_bucket{sandbox=\"%s\",le=\"%g\"} %llu\n", v[i].e->id,
				exec_buckets[b], (unsigned long long)v[i].buckets[b]);
		fprintf(f, "capsule_exec_duration_seconds_bucket{sandbox=\"%s\",le=\"+Inf\"} %llu\n", v[i].e->id,
			(unsigned long long)v[i].count);
		fprintf(f, "capsule_exec_duration_seconds_sum{sandbox=\"%s\"} ", v[i].e->id);
		number(f, (double)v[i].ms_sum / 1000.0);
		fprintf(f, "capsule_exec_duration_seconds_count{sandbox=\"%s\"} %llu\n", v[i].e->id,
			(unsigned long long)v[i].count);
	}
}

static void write_requests(FILE *f, const struct request *rq)
{
	family(f, "capsule_http_requests_total", "counter",
	       "Requests answered, by token, method, route and status (route \"\": none matched).");
	pthread_mutex_lock(&metrics_lock);
	for (size_t i = 0; i < n_req_rows; i++) {
		const struct req_row *r = &req_rows[i];
		if (!rq->admin && strcmp(r->token, rq->token_name))
			continue;
		fputs("capsule_http_requests_total{token=\"", f);
		label_value(f, r->token);
		fprintf(f, "\",method=\"%s\",route=\"", r->method);
		label_value(f, r->route ? r->route : "");
		fprintf(f, "\",code=\"%u\"} %llu\n", r->status, (unsigned long long)r->count);
	}
	uint64_t overflow = req_overflow;
	pthread_mutex_unlock(&metrics_lock);
	if (rq->admin) {
		family(f, "capsule_http_requests_uncounted_total", "counter",
		       "Requests past the table's bound of rows, counted here only.");
		fprintf(f, "capsule_http_requests_uncounted_total %llu\n", (unsigned long long)overflow);
	}
}

void handle_metrics(struct MHD_Connection *c, struct request *rq)
{
	/* References first, then the library's stats outside the lock: each asks a shim. */
	pthread_mutex_lock(&serve_state.lock);
	size_t total = 0;
	for (struct sandbox_entry *e = serve_state.entries; e; e = e->next)
		total++;
	struct sandbox_view *v = calloc(total ? total : 1, sizeof(*v));
	size_t n = 0;
	if (v)
		for (struct sandbox_entry *e = serve_state.entries; e; e = e->next)
			if (e->sb && (rq->admin || !CRYPTO_memcmp(e->owner, rq->owner, 32))) {
				e->refs++;
				v[n].e = e;
				owner_name(e->owner, v[n].token);
				n++;
			}
	pthread_mutex_unlock(&serve_state.lock);
	if (!v) {
		respond_json(c, rq, 500, NULL);
		return;
	}
	pthread_mutex_lock(&metrics_lock);
	for (size_t i = 0; i < n; i++) {
		struct sandbox_entry *e = v[i].e;
		memcpy(v[i].buckets, e->exec_buckets, sizeof(v[i].buckets));
		v[i].count = e->exec_count;
		v[i].ms_sum = e->exec_ms_sum;
		v[i].exited = e->exec_exited;
		v[i].timed_out = e->exec_timed_out;
		v[i].failed = e->exec_failed;
	}
	pthread_mutex_unlock(&metrics_lock);
	for (size_t i = 0; i < n; i++)
		v[i].have_stats = capsule_sandbox_stats(v[i].e->sb, &v[i].st, NULL) == 0;

	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	if (f) {
		write_sandboxes(f, v, n);
		write_requests(f, rq);
	}
	for (size_t i = 0; i < n; i++)
		entry_unref(v[i].e);
	free(v);
	if (!f || fclose(f) != 0) {
		free(text);
		respond_json(c, rq, 500, NULL);
		return;
	}
	struct MHD_Response *resp = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
	if (!resp)
		free(text);
	queue(c, rq, 200, resp, "text/plain; version=0.0.4; charset=utf-8");
}
