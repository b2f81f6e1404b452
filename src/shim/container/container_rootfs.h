/* The container child's filesystem (container_rootfs.c): its root from the image's layers,
 * /dev, /proc and /sys, binds, volumes and tmpfs, masks and read-only paths, sysctls. It runs
 * in the child that container_start clones, between its id maps and its cgroups, and dies
 * with a message to the parent (container_child_die) on the first failure. */
#ifndef CAPSULE_CONTAINER_ROOTFS_H
#define CAPSULE_CONTAINER_ROOTFS_H

#include <stdbool.h>
#include <stddef.h>

#include "container.h"
#include "util.h"

#define SYS_ATTRS (MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC)
#define MQUEUE_ATTRS (MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC)
#define PROC_ATTRS (MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC)

/* sysfs belongs to the network namespace it is made in, and only that namespace's owner may
 * make it: for a joined one the shim makes it there (join_net_ns), the child attaches it. */
extern int container_joined_sys_tree;
/* mqueue belongs to the IPC namespace it is made in, and only that namespace's owner may make
 * it: for a joined one (a pod's) the shim makes it there, the child attaches it. */
extern int container_joined_mqueue_tree;
/* proc shows its mounter's own pid namespace, and only a process of that namespace with rights
 * over its owner may make it: for a joined one (a pod's) a helper of the shim's makes it
 * there (make_joined_proc), the child attaches it. */
extern int container_joined_proc_tree;

/* Report ERRNUM and the formatted message to the parent over the error pipe, and exit. */
_Noreturn void container_child_die(int errnum, const char *fmt, ...) _printf_(2, 3);

/* Build the sandbox's root below FSFD (its folder; HOST_FD the host image, or -1) and pivot
 * into it. */
void container_setup_rootfs(const struct container_spec *spec, int fsfd, int host_fd);

/* Write LIST's sysctls of one kind (NET: net.*) below ROOTFD's /proc/sys; 0 or -errno, with
 * the failing one's name in FAILED. */
int container_write_sysctls(const char *list, bool net, int rootfd, char *failed, size_t size);

#endif
