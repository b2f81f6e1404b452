/* Copying layer folders between id ranges (saves, checkpoints, forks). */
#ifndef CAPSULE_LAYER_COPY_H
#define CAPSULE_LAYER_COPY_H

#include <dirent.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "capsule.h"

/* Owners in [src, src + count) become [dst, dst + count); others become nobody (65534) of the
 * destination range. Without CHOWN (rootless callers, who can give no file away) owners stay
 * as they are. */
struct id_shift {
	uint32_t src_uid, src_gid, dst_uid, dst_gid, count;
	bool chown;
};

struct layer_copy_stats {
	uint64_t entries, bytes, skipped;
};

/* Copy the tree in folder SRC into the empty folder DST (both O_DIRECTORY fds), keeping modes,
 * times, user.* xattrs, symlinks, hard links, fifos and whiteouts, never following a link. */
int layer_copy(int src, int dst, const struct id_shift *shift, struct layer_copy_stats *stats, capsule_error *err);
/* The data of the regular file IN (SIZE bytes) into the empty file OUT: a reflink, else its
 * data extents (SEEK_DATA/SEEK_HOLE; holes stay holes) by copy_file_range, else read and
 * write. 0 or -errno. */
int layer_copy_data(int in, int out, uint64_t size);
/* Bytes the tree in DIRFD takes on disk. */
uint64_t layer_disk_usage(int dirfd, int depth);
/* A DIR stream over a duplicate of DIRFD, from its first entry (closedir closes the copy). */
DIR *dir_walk_open(int dirfd);
/* A tree that a save or revert replaced (DIRFD/NAME, out of use already): removed now, or with
 * deferral on (the shim) by layer_run_deferred_removals, once the caller has its answer. A kill
 * before then leaves it to the next sweep (saves) or revert (fs/upper.new). */
void layer_remove_replaced(int dirfd, const char *name);
void layer_defer_removals(bool on);
void layer_run_deferred_removals(void);
/* Test hook: wait to be killed when $CAPSULE_TEST_SAVE_PAUSE names STAGE. */
void layer_test_pause(const char *stage);

#endif
