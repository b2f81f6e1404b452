/* What a sandbox's /dev holds, and the parts of /proc and /sys that its commands must not
 * reach, for both levels: the container's shim makes them from the host (container.c), a vm's
 * agent from inside the guest (vm_boot.c). One table each, so that the levels cannot drift
 * apart. Paths are relative to the sandbox's root. */
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

/* The device nodes of a sandbox's /dev, by name and number: a container binds the host's
 * (which must be that character device), a vm's agent makes them. */
struct sandbox_dev_node {
	const char *name;
	unsigned major, minor;
};
extern const struct sandbox_dev_node sandbox_dev_nodes[];
extern const size_t sandbox_dev_nodes_count;
/* Its symlinks: {target, name in /dev}. */
extern const char *const sandbox_dev_links[][2];
extern const size_t sandbox_dev_links_count;

#endif
