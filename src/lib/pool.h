/* Warm pools (pool.c): the keeper's loop and the sweep of pools nothing keeps. */
#ifndef CAPSULE_POOL_H
#define CAPSULE_POOL_H

#include "capsule.h"

/* The keeper of pool NAME (capsule-pool-keeper): LOCK_FD is the pool's lock, taken by the
 * create; the first sandbox's outcome is written to REPORT_FD as "ERRNO MESSAGE\n" (0 when
 * it is ready). Keeps the pool full until its folder is moved or removed or a SIGTERM comes,
 * then stops its ready sandboxes and returns the exit status. */
int pool_keep(const char *name, int report_fd, int lock_fd);
/* Remove every pool whose keeper is gone; returns how many, or -errno. */
int pool_prune(capsule_error *err);

#endif
