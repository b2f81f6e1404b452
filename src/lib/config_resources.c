/* docker's finer resource flags of run, create and update: --cpuset-cpus, --cpuset-mems,
 * --memory-swap and --memory-reservation. They fill the same fields an OCI spec's
 * linux.resources does (struct cgroup_extra), which the shim writes. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "parse.h"
#include "sandbox_config.h"
#include "util.h"

#define CPUSET_BITS 8192

/* LIST ("0-3,6") into BITS; false when it is not such a list, or names a number past
 * CPUSET_BITS. */
static bool cpuset_parse(const char *list, uint8_t *bits)
{
	const char *p = list;
	do {
		char *end;
		if (*p < '0' || *p > '9')
			return false;
		unsigned long a = strtoul(p, &end, 10), b = a;
		if (*end == '-') {
			p = end + 1;
			if (*p < '0' || *p > '9')
				return false;
			b = strtoul(p, &end, 10);
		}
		if (a > b || b >= CPUSET_BITS)
			return false;
		for (unsigned long i = a; i <= b; i++)
			bits[i / 8] |= (uint8_t)(1u << (i % 8));
		p = end;
	} while (*p == ',' && *++p);
	return *p == '\0';
}

/* The cpus (or memory nodes) the host has online, as the kernel lists them; a kernel
 * without NUMA has no node folder and one node, 0. */
static void host_online(bool mems, char *out, size_t size)
{
	const char *path = mems ? "/sys/devices/system/node/online" : "/sys/devices/system/cpu/online";
	snprintf(out, size, "0");
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	ssize_t n = read(fd, out, size - 1);
	close(fd);
	if (n <= 0) {
		snprintf(out, size, "0");
		return;
	}
	out[n] = '\0';
	out[strcspn(out, "\n")] = '\0';
}

int config_cpuset_check(const char *list, bool mems, capsule_error *err)
{
	const char *flag = mems ? "--cpuset-mems" : "--cpuset-cpus";
	uint8_t want[CPUSET_BITS / 8] = { 0 }, have[CPUSET_BITS / 8] = { 0 };
	if (!list || strlen(list) > 255 || !cpuset_parse(list, want))
		return cap_err_plain(err, EINVAL, "%s '%.64s': not a list such as 0-3,6", flag, list ? list : "");
	char online[256];
	host_online(mems, online, sizeof(online));
	if (!cpuset_parse(online, have))
		return 0; /* a form this reader does not know: the kernel's write will say */
	for (unsigned i = 0; i < CPUSET_BITS; i++)
		if ((want[i / 8] & (1u << (i % 8))) && !(have[i / 8] & (1u << (i % 8))))
			return cap_err_plain(err, EINVAL, "%s '%.64s': %s %u is not on this host (it has %s)", flag, list,
					     mems ? "memory node" : "cpu", i, online);
	return 0;
}

static int set_list(char **field, const char *list, bool mems, capsule_error *err)
{
	int r = config_cpuset_check(list, mems, err);
	if (r < 0)
		return r;
	char *copy = strdup(list);
	if (!copy)
		return cap_err(err, ENOMEM, "%s", mems ? "--cpuset-mems" : "--cpuset-cpus");
	free(*field);
	*field = copy;
	return 0;
}

int capsule_config_set_cpuset_cpus(capsule_config *cfg, const char *list, capsule_error *err)
{
	return set_list(&cfg->cg.cpuset_cpus, list, false, err);
}

int capsule_config_set_cpuset_mems(capsule_config *cfg, const char *list, capsule_error *err)
{
	return set_list(&cfg->cg.cpuset_mems, list, true, err);
}

/* SIZE as docker's memory flags take it, "-1" being MINUS_ONE. */
static int size_value(const char *flag, const char *size, uint64_t minus_one, uint64_t *out, capsule_error *err)
{
	if (size && !strcmp(size, "-1")) {
		*out = minus_one;
		return 0;
	}
	capsule_error e = { 0 };
	if (!size || parse_size(size, out, &e) < 0)
		return cap_err_plain(err, EINVAL, "%s: %s", flag, size ? e.message : "no size given");
	if (*out == 0)
		return cap_err_plain(err, EINVAL, "%s 0: a size such as 512M, or -1", flag);
	return 0;
}

int capsule_config_set_memory_swap(capsule_config *cfg, const char *size, capsule_error *err)
{
	uint64_t v;
	int r = size_value("--memory-swap", size, UINT64_MAX, &v, err);
	if (r == 0)
		cfg->cg.memory_swap = v;
	return r;
}

int capsule_config_set_memory_reservation(capsule_config *cfg, const char *size, capsule_error *err)
{
	uint64_t v;
	int r = size_value("--memory-reservation", size, 0, &v, err);
	if (r == 0)
		cfg->cg.memory_reservation = v;
	return r;
}

int config_memory_pair_check(uint64_t memory, bool swap_set, uint64_t swap, uint64_t reservation, capsule_error *err)
{
	if (swap_set && !memory)
		return cap_err_plain(err, EINVAL, "--memory-swap needs --memory (it is memory + swap)");
	if (swap_set && swap != UINT64_MAX && swap < memory)
		return cap_err_plain(err, EINVAL, "--memory-swap %llu is below --memory %llu (it is memory + swap, at least the memory)",
				     (unsigned long long)swap, (unsigned long long)memory);
	if (reservation && memory && reservation > memory)
		return cap_err_plain(err, EINVAL, "--memory-reservation %llu is above --memory %llu (the soft limit is under the hard one)",
				     (unsigned long long)reservation, (unsigned long long)memory);
	return 0;
}

int config_resources_check(const struct capsule_config *cfg, capsule_error *err)
{
	const struct cgroup_extra *x = &cfg->cg;
	if (cfg->isolation == CAPSULE_ISOLATION_VM) {
		const char *flag = x->cpuset_cpus ? "--cpuset-cpus" : x->cpuset_mems ? "--cpuset-mems"
				   : x->memory_swap ? "--memory-swap" : x->memory_reservation ? "--memory-reservation" : NULL;
		if (flag)
			return cap_err_plain(err, EOPNOTSUPP, "%s is for a container: a vm's cgroup is QEMU's, at the vm level "
							      "cpu and pids only (sandbox '%s')", flag, cfg->name);
		return 0;
	}
	return config_memory_pair_check(cfg->memory_bytes, x->memory_swap != 0, x->memory_swap, x->memory_reservation, err);
}
