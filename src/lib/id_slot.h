/* Each sandbox of a root caller gets a host id range of its own, by slot (home.c). */
#ifndef CAPSULE_ID_SLOT_H
#define CAPSULE_ID_SLOT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "capsule.h"

/* Root callers map the sandbox's root to this unprivileged host range (docs/security.md). */
#define CAPSULE_DEFAULT_UID_BASE 1000000000u
#define CAPSULE_ID_COUNT 65536u

/* The host uid/gid that the root of the sandbox in id slot SLOT maps to, and how many ids are
 * mapped. Each sandbox of a root caller has a range of its own, so that per-user kernel
 * limits (inotify instances, message queues, ...) of one cannot be spent by another. */
void home_id_map(uint32_t slot, uid_t *uid_base, gid_t *gid_base, uint32_t *count, bool *rootless);
/* Take the lowest free id slot for sandbox NAME (slots/N, a link naming its owner; a
 * link whose owner is gone is taken over), and give it back. */
int id_slot_take(const char *name, uint32_t *slot, capsule_error *err);
void id_slot_release(const char *name, uint32_t slot);
/* Share, for sandbox NAME, the id slot of sandbox OF (a pod's: one whose namespaces NAME
 * joins), held while either lives; id_slot_release gives the share back. */
int id_slot_share(const char *name, const char *of, uint32_t *slot, capsule_error *err);
/* Rename the sandbox folder run/OLD to run/NEW (RENAME_NOREPLACE: -EEXIST, with a message,
 * when NEW exists) with its id slot SLOT: the slot's link names "OLD>NEW" while the folder
 * moves, so that no id_slot_take meanwhile, or after a crash there, finds the owner gone. */
int id_slot_rename(int run, const char *old_name, const char *new_name, uint32_t slot, capsule_error *err);

#endif
