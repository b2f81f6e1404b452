/* Named volumes as the rest of the library uses them (volume.c). */
#ifndef CAPSULE_VOLUME_H
#define CAPSULE_VOLUME_H

#include <stdbool.h>

#include "capsule.h"

/* An open volume: its content as a folder fd, and a shared lock on volumes/<name>/lock
 * that says "in use" (volume rm takes it exclusively). For a quota volume MOUNT_FD is a
 * detached mount of its ext4 image (no mount namespace sees it); the loop device under it
 * is the one already serving that image, if any, so that every user shares one superblock. */
struct volume_handle {
	int lock_fd;
	int mount_fd; /* -1 for a folder volume */
	int data_fd;  /* O_PATH, O_DIRECTORY: the volume's content */
};
int volume_open(const char *name, struct volume_handle *vh, capsule_error *err);
/* Close everything but the lock; returns the lock fd (the caller owns it). */
int volume_release_keep_lock(struct volume_handle *vh);
void volume_close(struct volume_handle *vh);

/* Create NAME without a quota unless it exists (docker's `-v name:/path`); *CREATED says
 * whether this call made it, for a failed create to take it back. */
int volume_ensure(const char *name, bool *created, capsule_error *err);

#endif
