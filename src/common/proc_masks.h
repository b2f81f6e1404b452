/* The parts of /proc and /sys that a sandbox's commands must not reach, for both levels: the
 * container's shim masks them from the host (container.c), a vm's agent from inside the guest
 * (vm_boot.c). One table, so that the levels cannot drift apart. Paths are relative to the
 * sandbox's root. */
#ifndef CAPSULE_PROC_MASKS_H
#define CAPSULE_PROC_MASKS_H

#include <stddef.h>

/* Host (or guest kernel) information and knobs: files are covered with /dev/null, folders
 * with an empty read-only tmpfs. Missing ones are skipped (not on this kernel). */
extern const char *const sandbox_masked_paths[];
extern const size_t sandbox_masked_paths_count;
/* Kernel-wide settings (sysctl, sysrq, IRQ affinity, ...): bound read-only over themselves. */
extern const char *const sandbox_readonly_paths[];
extern const size_t sandbox_readonly_paths_count;

#endif
