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
