/* capsule update: change a running sandbox's limits, as `docker update` does
 * (capsule_sandbox_update_limits). */
#include <string.h>

#include "cli.h"
#include "parse.h"

static const char update_help[] =
	"Usage: capsule update [--memory SIZE] [--cpus N] [--cpu-shares N] [--pids-limit N] SANDBOX\n\n"
	"Change a running sandbox's limits; every value is checked before any is changed, and one the\n"
	"kernel refuses (memory below what cannot be reclaimed) leaves the old limits in place.\n\n"
	"  --memory SIZE      memory, swap included (512M, 1G; -1: no limit). Not for a vm: its\n"
	"                     memory is the guest's RAM, fixed when it boots\n"
	"  --cpus N           cpus (1.5: 150 ms of cpu time per 100 ms; 0: no limit)\n"
	"  --cpu-shares N     relative weight against other sandboxes (2 to 262144)\n"
	"  --pids-limit N     processes (0 or -1: no limit)\n";

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
		return cli_usage("update", "no limit given (--memory, --cpus, --cpu-shares, --pids-limit)");
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
