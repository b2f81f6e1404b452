#include "proc_masks.h"

/* As docker masks them. */
const char *const sandbox_masked_paths[] = {
	"proc/acpi", "proc/asound", "proc/kcore", "proc/keys", "proc/latency_stats", "proc/timer_list",
	"proc/timer_stats", "proc/sched_debug", "proc/scsi", "sys/firmware", "sys/devices/virtual/powercap",
};
const size_t sandbox_masked_paths_count = sizeof(sandbox_masked_paths) / sizeof(sandbox_masked_paths[0]);

/* /proc/sys above all: in a vm, root is the guest kernel's real root, and a writable
 * kernel.core_pattern would run a program of its choosing outside every confinement. */
const char *const sandbox_readonly_paths[] = {
	"proc/bus", "proc/fs", "proc/irq", "proc/sys", "proc/sysrq-trigger",
};
const size_t sandbox_readonly_paths_count = sizeof(sandbox_readonly_paths) / sizeof(sandbox_readonly_paths[0]);

const struct sandbox_dev_node sandbox_dev_nodes[] = {
	{ "null", 1, 3 }, { "zero", 1, 5 }, { "full", 1, 7 }, { "random", 1, 8 }, { "urandom", 1, 9 }, { "tty", 5, 0 },
};
const size_t sandbox_dev_nodes_count = sizeof(sandbox_dev_nodes) / sizeof(sandbox_dev_nodes[0]);

const char *const sandbox_dev_links[][2] = {
	{ "pts/ptmx", "ptmx" }, { "/proc/self/fd", "fd" }, { "/proc/self/fd/0", "stdin" },
	{ "/proc/self/fd/1", "stdout" }, { "/proc/self/fd/2", "stderr" },
};
const size_t sandbox_dev_links_count = sizeof(sandbox_dev_links) / sizeof(sandbox_dev_links[0]);
