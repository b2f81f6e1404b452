/* The filesystem API's state inside the agent, shared by fs.c (requests and DATA-frame
 * streams) and fs_direct.c (streams over a socket of their own). Nothing outside those two
 * files includes it. */
#ifndef CAPSULE_AGENT_FS_INTERNAL_H
#define CAPSULE_AGENT_FS_INTERNAL_H

#include <dirent.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "agent.h"

#define MAX_FS_OPS 256
#define FS_CHUNK (256u * 1024)
/* A direct stream moves up to this much per turn of the loop: as a C copy with 1 MiB reads
 * and writes does, while other channels still get their turn. */
#define DIRECT_CHUNK (1u << 20)
#define RELEASE_MAX 32

enum xfer { XFER_READ = 1, XFER_LIST, XFER_WRITE };

struct fsop {
	bool used;
	enum xfer kind;
	uint32_t chan;
	int fd;          /* READ: the file; WRITE: the temporary file */
	DIR *dir;        /* LIST */
	uint64_t credit; /* READ, LIST: bytes we may still send */
	bool short_read; /* READ: the last chunk was shorter than asked for */
	off_t size;      /* READ: the file's size when it was opened */
	int parent;      /* WRITE: the target's folder */
	char *name;      /* WRITE: the target's name */
	char *tmp;       /* WRITE: the temporary file's name */
	char *path;      /* WRITE: the path asked for, for messages */
	unsigned flags;
	uint64_t written;
	mode_t mode;     /* WRITE: the new file's mode, set at commit */
	bool chown;      /* WRITE: give it the replaced file's owner */
	uid_t uid;
	gid_t gid;
	off_t old_size;  /* WRITE: the replaced file's size */
	/* A direct stream (CP_FS_DIRECT): the bytes travel on SOCK, a socketpair end the shim
	 * made, instead of DATA frames; the channel still carries the request, STARTED, the
	 * client's EOF (WRITE) and the final answer. */
	int sock;
	bool awaiting;   /* STARTED sent for a direct stream: the shim's DIRECT is next */
	bool sock_eof;   /* WRITE: the client shut its end */
	bool eof_frame;  /* WRITE: the client's EOF came on the channel */
	off_t off;       /* READ: the next byte to send */
};

struct fs_state {
	int root;
	struct fsop ops[MAX_FS_OPS];
	size_t hwm;
	uint8_t *buf; /* one frame: header + FS_CHUNK */
	int epfd;
	uint8_t *dbuf; /* a direct stream's chunk (DIRECT_CHUNK), made at the first */
	int release[RELEASE_MAX]; /* replaced files and ended operations' files, closed after the next flush */
	unsigned nrelease;
};

/* Zeroed (bss): an initialiser would put the whole table in the agent's file. */
extern struct fs_state fs_state;

struct fsop *fs_op_by_chan(uint32_t chan);
/* Close what O holds (an unfinished write's temporary file is removed) and free its slot. */
void fs_op_end(struct fsop *o);
void fs_reply_errno(uint32_t chan, int e, const char *what, const char *path);
void fs_reply_ok(uint32_t chan);
/* A READ's next chunk as DATA frames, under its credit. */
void fs_read_pump(struct fsop *o);
/* Every byte of a WRITE is in its temporary file: rename it over the target and answer. */
void fs_write_commit(struct fsop *o);
/* Ask the shim for a direct stream for O (fs_direct.c): STARTED, answered with DIRECT. */
void fs_direct_ask(struct fsop *o);

#endif
