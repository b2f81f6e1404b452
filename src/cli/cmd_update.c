/* capsule update: change a running sandbox's limits, as `docker update` does
 * (capsule_sandbox_update_limits). */
#include <string.h>

#include "cli.h"
#include "parse.h"

static const char update_help[] =
	"Usage: capsule update [--memory SIZE] [--memory-swap SIZE] [--memory-reservation SIZE] [--cpus N]\n"
	"                      [--cpu-shares N] [--cpuset-cpus LIST] [--cpuset-mems LIST] [--pids-limit N] SANDBOX\n\n"
	"Change a running sandbox's limits; every value is checked before any is changed, and one the\n"
	"kernel refuses (memory below what cannot be reclaimed) leaves the old limits in place.\n\n"
	"  --memory SIZE      memory, swap included (512M, 1G; -1: no limit). Not for a vm: its\n"
	"                     memory is the guest's RAM, fixed when it boots\n"
	"  --memory-swap SIZE memory + swap, with --memory and not below it (-1: unlimited swap;\n"
	"                     not given: no swap)\n"
	"  --memory-reservation SIZE  the soft limit, at most the memory limit (-1: none)\n"
	"  --cpus N           cpus (1.5: 150 ms of cpu time per 100 ms; 0: no limit)\n"
	"  --cpu-shares N     relative weight against other sandboxes (2 to 262144)\n"
	"  --cpuset-cpus LIST the cpus it may run on (0-1,3), of a sandbox made with a cpuset\n"
	"  --cpuset-mems LIST the memory nodes it may use, the same\n"
	"  --pids-limit N     processes (0 or -1: no limit)\n"
	"The memory and cpuset settings are a container's: a vm's cgroup is QEMU's (cpu and pids).\n";

int cmd_update(int argc, char **argv)
{
	capsule_limits lim = { 0 };
	capsule_error err = { 0 };
	const char *name = NULL;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			fputs(update_help, stdout);
			return 0;
		}
		if (a[0] != '-') {
			if (name)
				return cli_usage("update", "one sandbox at a time ('%s' and '%s')", name, a);
			name = a;
			continue;
		}
		if (i + 1 >= argc)
			return cli_usage("update", "'%s' needs a value", a);
		const char *v = argv[++i];
		uint64_t n;
		if (!strcmp(a, "--memory")) {
			lim.set |= CAPSULE_LIMIT_MEMORY;
			if (!strcmp(v, "-1"))
				lim.memory_bytes = -1;
			else if (parse_size(v, &n, &err) < 0)
				return cli_fail(&err);
			else
				lim.memory_bytes = (int64_t)n;
		} else if (!strcmp(a, "--memory-swap") || !strcmp(a, "--memory-reservation")) {
			bool swap = a[9] == 's';
			int64_t b = -1;
			if (strcmp(v, "-1") && parse_size(v, &n, &err) < 0)
				return cli_usage("update", "%s: %s", a, err.message);
			if (strcmp(v, "-1"))
				b = (int64_t)n;
			lim.set |= swap ? CAPSULE_LIMIT_MEMORY_SWAP : CAPSULE_LIMIT_MEMORY_RESERVATION;
			*(swap ? &lim.memory_swap_bytes : &lim.memory_reservation_bytes) = b;
		} else if (!strcmp(a, "--cpuset-cpus")) {
			lim.set |= CAPSULE_LIMIT_CPUSET_CPUS;
			lim.cpuset_cpus = v;
		} else if (!strcmp(a, "--cpuset-mems")) {
			lim.set |= CAPSULE_LIMIT_CPUSET_MEMS;
			lim.cpuset_mems = v;
		} else if (!strcmp(a, "--cpus")) {
			uint32_t milli;
			lim.set |= CAPSULE_LIMIT_CPU_QUOTA | CAPSULE_LIMIT_CPU_PERIOD;
			lim.cpu_period_us = 100000;
			if (!strcmp(v, "0"))
				lim.cpu_quota_us = -1;
			else if (parse_cpus(v, &milli, &err) < 0)
				return cli_fail(&err);
			else
				lim.cpu_quota_us = (int64_t)milli * 100;
		} else if (!strcmp(a, "--cpu-shares")) {
			if (parse_uint(v, "cpu shares", 2, 262144, &n, &err) < 0)
				return cli_fail(&err);
			lim.set |= CAPSULE_LIMIT_CPU_SHARES;
			lim.cpu_shares = n;
		} else if (!strcmp(a, "--pids-limit")) {
			lim.set |= CAPSULE_LIMIT_PIDS;
			if (!strcmp(v, "-1"))
				lim.pids_max = -1;
			else if (parse_uint(v, "pids limit", 0, 4194304, &n, &err) < 0)
				return cli_fail(&err);
			else
				lim.pids_max = (int64_t)n;
		} else {
			return cli_usage("update", "unknown flag '%s'", a);
		}
	}
	if (!name)
		return cli_usage("update", "no sandbox given");
	if (!lim.set)
		return cli_usage("update", "no limit given (--memory, --memory-swap, --memory-reservation, --cpus, "
					   "--cpu-shares, --cpuset-cpus, --cpuset-mems, --pids-limit)");
	/* docker's rule: swap is memory + swap, so it comes with the memory it adds to. */
	if ((lim.set & CAPSULE_LIMIT_MEMORY_SWAP) && !(lim.set & CAPSULE_LIMIT_MEMORY))
		return cli_usage("update", "--memory-swap needs --memory (it is memory + swap)");
	if ((lim.set & CAPSULE_LIMIT_MEMORY_SWAP) && lim.memory_swap_bytes >= 0 && lim.memory_swap_bytes < lim.memory_bytes)
		return cli_usage("update", "--memory-swap %lld is below --memory %lld (it is memory + swap)",
				 (long long)lim.memory_swap_bytes, (long long)lim.memory_bytes);
	capsule_sandbox *sb;
	int r = cli_open_running(name, &sb);
	if (r)
		return r;
	r = capsule_sandbox_update_limits(sb, &lim, &err);
	capsule_sandbox_free(sb);
	if (r < 0)
		return cli_fail(&err);
	printf("%s\n", name);
	return 0;
}
