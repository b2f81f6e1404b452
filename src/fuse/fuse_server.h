/* What the files of capsule-fuse share (capsule-fuse.c says what the server is):
 *   capsule-fuse.c  start: arguments, the plugin, privileges, the session loop
 *   fuse_nodes.c    ids as the sandbox sees them, the node table, reaching host objects
 *   fuse_ops.c      the namespace operations (lookup, attributes, make, remove, rename,
 *                   folders) and the operations table
 *   fuse_data.c     file data through the plugin: open, read, write, sizes and holes */
#ifndef CAPSULE_FUSE_SERVER_H
#define CAPSULE_FUSE_SERVER_H

#define FUSE_USE_VERSION 34

#include <fuse_lowlevel.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "capsule_transform.h"

#define FUSE_FD 3
#define ROOT_FD 4
#define CTL_FD 5
#define IO_CHUNK (1u << 20)
#define CONFIG_MAX (64u << 10)

#ifndef SYS_fchmodat2
#define SYS_fchmodat2 452
#endif

struct node {
	struct node *next; /* hash chain */
	int fd;            /* O_PATH | O_NOFOLLOW */
	dev_t dev;
	ino_t ino;
	uint64_t nlookup;
};

struct handle {
	int fd;
	char *path; /* below the mount, for the plugin */
};

struct server_state {
	const struct capsule_transform_v1 *tf;
	void *tf_ctx;
	uid_t uid_base;
	gid_t gid_base;
	uint32_t id_count;
	uid_t host_uid_base; /* where the sandbox's ids 1.. lie on the host's disks */
	gid_t host_gid_base;
	uid_t owner_uid;
	gid_t owner_gid;
	bool readonly;
	/* The served folder's filesystem reports holes (SEEK_HOLE): gaps stay holes. */
	bool holes;
	struct node root;
	char root_path[PATH_MAX];
	size_t root_path_len;
	struct node **table;
	size_t table_size, nnodes;
	uint8_t *buf; /* one request at a time: the session loop is single threaded */
	size_t buf_cap;
};

/* The one server's state (capsule-fuse.c). */
extern struct server_state G;

/* fuse_nodes.c */
int uid_to_host(uid_t kuid, uid_t *out);
int gid_to_host(gid_t kgid, gid_t *out);
void stat_to_guest(struct stat *st);
struct node *node_of(fuse_ino_t ino);
int table_grow(void);
void node_forget(struct node *n, uint64_t count);
int openat2_beneath(int dirfd, const char *name, int flags, mode_t mode);
bool name_ok(const char *name);
int node_reopen(const struct node *n, int flags);
int node_stat(const struct node *n, struct stat *st);
char *fd_path(int fd);
int own_for_caller(fuse_req_t req, int parent_fd, int fd);
void reply_entry(fuse_req_t req, int fd, struct fuse_file_info *fi);

/* fuse_data.c */
uint8_t *io_buf(size_t len);
bool folder_keeps_holes(int dirfd);
int set_size(struct node *n, struct fuse_file_info *fi, uint64_t size);
void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, struct fuse_file_info *fi);
void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi);
void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
	      struct fuse_file_info *fi);
void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi);

/* fuse_ops.c */
bool refuse_change(fuse_req_t req, const char *name);
extern const struct fuse_lowlevel_ops server_ops;

#endif
