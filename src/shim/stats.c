/* STATS: the sandbox's activity and what it uses (docs/protocol.md), for capsule_sandbox_stats.
 *
 * From the sandbox's cgroups where the kernel keeps the figure (v2: cpu.stat, memory.current,
 * pids.current, io.stat; v1: memory.usage_in_bytes, pids.current, cpuacct.usage beside cpu), otherwise from /proc over
 * the sandbox's processes. /proc's sums are whole, not only of the processes alive now: a
 * process reaped by its parent has its cpu time added to the parent's cutime and cstime, and
 * its I/O to the parent's /proc/PID/io (the kernel's wait_task_zombie does both), so summing
 * utime+stime+cutime+cstime and read_bytes/write_bytes over the living counts every process
 * once, up to the agent, which reaps every orphan. A vm's processes are QEMU's (it runs in
 * the sandbox's cgroups), so its figures are what QEMU uses. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cgroup.h"
#include "json.h"
#include "shim.h"

#define STATS_PIDS_MAX 8192

/* The first unsigned number in FILE (a one-value cgroup file), or -1. */
static int read_u64_file(const char *dir, const char *file, uint64_t *out)
{
	char path[4200];
	snprintf(path, sizeof(path), "%s/%s", dir, file);
	FILE *f = fopen(path, "re");
	if (!f)
		return -1;
	unsigned long long v;
	int n = fscanf(f, "%llu", &v);
	fclose(f);
	if (n != 1)
		return -1;
	*out = v;
	return 0;
}

/* The value of "KEY N" lines of a flat-keyed file (cpu.stat's usage_usec). */
static int read_keyed(const char *dir, const char *file, const char *key, uint64_t *out)
{
	char path[4200], line[256];
	snprintf(path, sizeof(path), "%s/%s", dir, file);
	FILE *f = fopen(path, "re");
	if (!f)
		return -1;
	int r = -1;
	size_t kl = strlen(key);
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, key, kl) && line[kl] == ' ') {
			*out = strtoull(line + kl + 1, NULL, 10);
			r = 0;
			break;
		}
	fclose(f);
	return r;
}

/* v2 io.stat: "MAJ:MIN rbytes=N wbytes=N rios=N ..." per device, summed. */
static int read_io_stat(const char *dir, uint64_t *rd, uint64_t *wr)
{
	char path[4200], line[1024];
	snprintf(path, sizeof(path), "%s/io.stat", dir);
	FILE *f = fopen(path, "re");
	if (!f)
		return -1;
	*rd = *wr = 0;
	while (fgets(line, sizeof(line), f)) {
		char *p;
		if ((p = strstr(line, " rbytes=")))
			*rd += strtoull(p + 8, NULL, 10);
		if ((p = strstr(line, " wbytes=")))
			*wr += strtoull(p + 8, NULL, 10);
	}
	fclose(f);
	return 0;
}

struct pid_set {
	pid_t v[STATS_PIDS_MAX];
	size_t n;
};

/* The pids listed in PATH (cgroup.procs, a task's children), added to PS. */
static void pids_from_file(const char *path, struct pid_set *ps)
{
	FILE *f = fopen(path, "re");
	if (!f)
		return;
	long p;
	while (ps->n < STATS_PIDS_MAX && fscanf(f, "%ld", &p) == 1)
		ps->v[ps->n++] = (pid_t)p;
	fclose(f);
}

/* Without a cgroup: PID and its descendants, through /proc/PID/task/TID/children. */
static void pids_from_tree(pid_t root, struct pid_set *ps)
{
	ps->v[ps->n++] = root;
	for (size_t i = 0; i < ps->n && ps->n < STATS_PIDS_MAX; i++) {
		char path[96];
		snprintf(path, sizeof(path), "/proc/%d/task", (int)ps->v[i]);
		DIR *d = opendir(path);
		if (!d)
			continue;
		struct dirent *de;
		while ((de = readdir(d)) && ps->n < STATS_PIDS_MAX) {
			if (!isdigit((unsigned char)de->d_name[0]))
				continue;
			char cpath[160];
			snprintf(cpath, sizeof(cpath), "/proc/%d/task/%s/children", (int)ps->v[i], de->d_name);
			pids_from_file(cpath, ps);
		}
		closedir(d);
	}
}

struct proc_sums {
	uint64_t cpu_ticks, rss_pages, read_bytes, write_bytes;
	bool io_ok;
};

static void proc_add(pid_t pid, struct proc_sums *s)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		ssize_t n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		/* After the comm's closing parenthesis: field 3 (state) on; utime is field 14. */
		char *p = n > 0 ? (buf[n] = '\0', strrchr(buf, ')')) : NULL;
		unsigned long long f[22] = { 0 };
		if (p) {
			p += 2;
			size_t i = 3;
			for (char *tok = strtok(p, " "); tok && i < 25; tok = strtok(NULL, " "), i++)
				if (i >= 14 && i <= 24)
					f[i - 3] = strtoull(tok, NULL, 10);
			s->cpu_ticks += f[11] + f[12] + f[13] + f[14];
			s->rss_pages += f[21];
		}
	}
	snprintf(path, sizeof(path), "/proc/%d/io", (int)pid);
	FILE *io = fopen(path, "re");
	if (io) {
		char line[128];
		while (fgets(line, sizeof(line), io)) {
			if (!strncmp(line, "read_bytes: ", 12))
				s->read_bytes += strtoull(line + 12, NULL, 10), s->io_ok = true;
			else if (!strncmp(line, "write_bytes: ", 13))
				s->write_bytes += strtoull(line + 13, NULL, 10);
		}
		fclose(io);
	}
}

/* A container's interfaces, from its init's network namespace. */
static void network_json(struct json_writer *w, pid_t pid)
{
	char path[64], line[512];
	snprintf(path, sizeof(path), "/proc/%d/net/dev", (int)pid);
	FILE *f = fopen(path, "re");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		char *colon = strchr(line, ':');
		if (!colon)
			continue; /* the two header lines */
		*colon = '\0';
		char *name = line;
		while (*name == ' ')
			name++;
		unsigned long long v[16] = { 0 };
		if (sscanf(colon + 1, "%llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
			   &v[4], &v[5], &v[6], &v[7], &v[8], &v[9]) != 10)
			continue;
		json_object_begin(w);
		json_kv_string(w, "interface", name);
		json_kv_uint(w, "rx_bytes", v[0]);
		json_kv_uint(w, "rx_packets", v[1]);
		json_kv_uint(w, "tx_bytes", v[8]);
		json_kv_uint(w, "tx_packets", v[9]);
		json_object_end(w);
	}
	fclose(f);
}

int shim_stats_json(struct shim *s, char **out, capsule_error *err)
{
	struct json_writer w;
	json_init(&w, false);
	json_object_begin(&w);
	json_kv_uint(&w, "active", s->io.active);
	json_kv_uint(&w, "idle_ms", s->io.active ? 0 : now_ms() - s->io.idle_since_ms);

	const char *main_dir = s->cg && cgroup_active(s->cg) ? cgroup_path(s->cg) : NULL;
	bool v2 = s->cg && cgroup_v2_fd(s->cg) >= 0;
	const char *mem_dir = s->cg ? cgroup_controller_path(s->cg, "memory") : NULL;
	const char *pids_dir = s->cg ? cgroup_controller_path(s->cg, "pids") : NULL;
	uint64_t cpu_usec = 0, memory = 0, pids = 0, rd = 0, wr = 0;
	bool have_cpu = v2 && read_keyed(main_dir, "cpu.stat", "usage_usec", &cpu_usec) == 0;
	/* v1: cpuacct's nanoseconds, where it is co-mounted with cpu (as systemd mounts it). */
	const char *cpu_dir = !v2 && s->cg ? cgroup_controller_path(s->cg, "cpu") : NULL;
	if (!have_cpu && cpu_dir && read_u64_file(cpu_dir, "cpuacct.usage", &cpu_usec) == 0)
		cpu_usec /= 1000, have_cpu = true;
	bool have_mem = mem_dir && read_u64_file(mem_dir, v2 ? "memory.current" : "memory.usage_in_bytes", &memory) == 0;
	bool have_pids = pids_dir && read_u64_file(pids_dir, "pids.current", &pids) == 0;
	bool have_io = v2 && read_io_stat(main_dir, &rd, &wr) == 0;

	/* /proc for what the cgroups did not give. */
	if (!(have_cpu && have_mem && have_pids && have_io) && s->proc_pid > 0) {
		struct pid_set *ps = calloc(1, sizeof(*ps));
		if (!ps) {
			json_free(&w);
			return cap_err(err, ENOMEM, "sandbox stats");
		}
		if (main_dir) {
			char path[4200];
			snprintf(path, sizeof(path), "%s/cgroup.procs", main_dir);
			pids_from_file(path, ps);
		}
		if (ps->n == 0)
			pids_from_tree(s->proc_pid, ps);
		struct proc_sums sum = { 0 };
		for (size_t i = 0; i < ps->n; i++)
			proc_add(ps->v[i], &sum);
		long tck = sysconf(_SC_CLK_TCK);
		long page = sysconf(_SC_PAGESIZE);
		if (!have_cpu && tck > 0)
			cpu_usec = sum.cpu_ticks * (1000000ull / (uint64_t)tck), have_cpu = true;
		if (!have_mem && page > 0)
			memory = sum.rss_pages * (uint64_t)page, have_mem = true;
		if (!have_pids)
			pids = ps->n, have_pids = true;
		if (!have_io && sum.io_ok)
			rd = sum.read_bytes, wr = sum.write_bytes, have_io = true;
		free(ps);
	}
	if (have_cpu)
		json_kv_uint(&w, "cpu_usec", cpu_usec);
	if (have_mem)
		json_kv_uint(&w, "memory_bytes", memory);
	if (have_pids)
		json_kv_uint(&w, "pids", pids);
	/* Limits and OOM kills, for runc's stats shape and its oom event (capsule-oci events):
	 * "max", or v1's page-rounded LONG_MAX, is no limit and no key. */
	uint64_t lim;
	if (mem_dir && read_u64_file(mem_dir, v2 ? "memory.max" : "memory.limit_in_bytes", &lim) == 0 &&
	    lim < (1ull << 62))
		json_kv_uint(&w, "memory_limit", lim);
	if (pids_dir && read_u64_file(pids_dir, "pids.max", &lim) == 0)
		json_kv_uint(&w, "pids_limit", lim);
	long long ooms = s->cg ? cgroup_oom_count(s->cg) : -1;
	if (ooms >= 0)
		json_kv_uint(&w, "oom_kills", (uint64_t)ooms);
	if (have_io) {
		json_kv_uint(&w, "disk_read_bytes", rd);
		json_kv_uint(&w, "disk_write_bytes", wr);
	}
	json_key(&w, "network");
	json_array_begin(&w);
	/* A vm's network is the guest kernel's: QEMU's namespace is the shim's. */
	if (s->cfg.isolation != CAPSULE_ISOLATION_VM && s->proc_pid > 0)
		network_json(&w, s->proc_pid);
	json_array_end(&w);
	json_object_end(&w);
	int e = 0;
	*out = json_steal(&w, &e);
	if (!*out)
		return cap_err(err, e ? -e : ENOMEM, "formatting sandbox stats");
	return 0;
}
