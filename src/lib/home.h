/* $CAPSULE_HOME and what lies in it (home.c): its folders, run/<name>/, the "host" image's
 * lower root, helper binaries, the user's configuration folder. */
#ifndef CAPSULE_HOME_H
#define CAPSULE_HOME_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "capsule.h"

/* $CAPSULE_HOME (0700, its owner's alone; refused when another user owns it or may write
 * to it) and its folders, created on first use. */
int home_open(int *home_fd, capsule_error *err);
int home_subdir_open(const char *sub, int *fd, capsule_error *err);

/* The read-only lower root of the "host" image (a skeleton: fresh /etc, empty /root, /tmp,
 * mount points for the host's /usr); made once, atomically. Returns its path (malloc'd). */
int image_host_lower(uid_t uid_base, gid_t gid_base, char **path, capsule_error *err);

/* Locate a helper binary ("capsule-shim", "capsule-agent"): $CAPSULE_LIBEXEC, then the folder
 * of the running binary or of libcapsule.so, then the install libexec folder. */
int find_helper(const char *name, char **path, capsule_error *err);

/* run/<name>/ helpers. */
int run_dir_open(const char *name, int *fd, capsule_error *err);
/* run/<name>/control.sock as a path from the root, for connect(2): a new process that
 * connects through /proc/self/fd/N/ makes the kernel build /proc inodes for its pid, its fd
 * folder and N (and drop them at its exit), about 8% of a short-lived CLI exec's CPU.
 * -ENAMETOOLONG where it does not fit in SIZE (sun_path's 108 bytes), -EINVAL for a home in a
 * shared folder (reached only through its checked descriptor) or a name that is no folder's. */
int run_dir_socket_path(const char *name, char *out, size_t size);
/* Mark folder DIR (run/, the home) so that ext2/3/4 place each folder made in it in a block
 * group of its own choosing (chattr +T); best effort, a no-op where the filesystem has no such
 * flag. */
void folders_spread(int dir);
/* true if a shim holds run/<name>/lock */
bool run_dir_locked(int dirfd);
/* The sandbox of folder DIRFD is paused to disk: its state.json says so, written by its
 * shim as it exited (a vm's memory in memory.state). Meaningful only while it is not locked. */
bool run_dir_paused_to_disk(int dirfd);

/* The sandbox's cgroup name: its own name plus a digest of $CAPSULE_HOME, so that two homes
 * (two users, two test runs) can each have a sandbox "dev" without sharing a cgroup. */
void sandbox_cgroup_name(const char *name, char *out, size_t size);
/* Room for sandbox_cgroup_name's answer about any config_cgroup_base. */
#define SANDBOX_CGROUP_NAME_MAX (CAPSULE_NAME_MAX + 32)

/* NAME in the user's configuration folder: $XDG_CONFIG_HOME/capsule/NAME, else
 * $HOME/.config/capsule/NAME; -ENOENT when neither is an absolute path. */
int user_config_path(const char *name, char *out, size_t size);

/* Test hook: when $ENV starts with STAGE, announce "STAGE PID" in FILE of $CAPSULE_HOME's
 * folder SUB (NULL: the home itself) and wait there to be killed, so that a test can SIGKILL
 * the process at a chosen step. */
void home_test_pause(const char *env, const char *stage, const char *sub, const char *file);

#endif
