/* ext4 images on loop devices (ext4_image.c): quota volumes and sandbox disks. */
#ifndef CAPSULE_EXT4_IMAGE_H
#define CAPSULE_EXT4_IMAGE_H

#include "capsule.h"

/* ext4 images on loop devices (ext4_image.c). mkfs.ext4 with OPTS (NULL-terminated) on the
 * image at path IMAGE; WHAT ("volume 'x'") begins every message. */
int ext4_image_mkfs(const char *image, const char *const *opts, const char *what, capsule_error *err);
/* A detached mount (no mount namespace sees it) of the ext4 image IMG, nosuid and nodev, with
 * the mount FLAGS (NULL-terminated, or NULL). The loop device is the one already serving IMG
 * if there is one, so every user shares one superblock; LABEL names a new one. The caller
 * keeps two attachers of one image apart (a flock). */
int ext4_image_mount(int img, const char *label, const char *const *flags, const char *what, int *mnt,
		     capsule_error *err);

#endif
