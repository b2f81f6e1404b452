/* capsule-fuse's view of host objects: ids mapped as an idmapped bind would, the node table
 * (one O_PATH fd per object the kernel looked up), and reaching a name below a node. */
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuse_server.h"

/* ---- ids ---------------------------------------------------------------------------- */

/* Host ids as the sandbox's kernel ids, as capsule idmaps a bind (container.c,
 * container_host_folder_userns): the owner (the user who made the sandbox, this server's own
 * uid) is the sandbox's root, the sandbox's own host range is its ids 1.., and any other host
 * id is nobody's. So what sandbox root makes is the owner's, what its other users make lands
 * on ids no host user has, and no chown gives a file another host user's id. A container's
 * kernel ids are that host range itself (the two bases are equal); a vm's are the guest's
 * own, as QEMU passes them (the kernel base is 0). */
static uid_t uid_to_guest(uid_t host)
{
	if (host == G.owner_uid)
		return G.uid_base;
	return host > G.host_uid_base && host - G.host_uid_base < G.id_count ? G.uid_base + (host - G.host_uid_base)
									       : (uid_t)-1;
}

static gid_t gid_to_guest(gid_t host)
{
	if (host == G.owner_gid)
		return G.gid_base;
	return host > G.host_gid_base && host - G.host_gid_base < G.id_count ? G.gid_base + (host - G.host_gid_base)
									       : (gid_t)-1;
}

int uid_to_host(uid_t kuid, uid_t *out)
{
	if (kuid < G.uid_base || kuid - G.uid_base >= G.id_count)
		return -EPERM;
	*out = kuid == G.uid_base ? G.owner_uid : G.host_uid_base + (kuid - G.uid_base);
	return 0;
}

int gid_to_host(gid_t kgid, gid_t *out)
{
	if (kgid < G.gid_base || kgid - G.gid_base >= G.id_count)
		return -EPERM;
	*out = kgid == G.gid_base ? G.owner_gid : G.host_gid_base + (kgid - G.gid_base);
	return 0;
}

void stat_to_guest(struct stat *st)
{
	st->st_uid = uid_to_guest(st->st_uid);
	st->st_gid = gid_to_guest(st->st_gid);
}

/* ---- nodes -------------------------------------------------------------------------- */

static size_t node_hash(dev_t dev, ino_t ino)
{
	uint64_t h = (uint64_t)ino * 0x9e3779b97f4a7c15ull ^ (uint64_t)dev;
	return (size_t)(h % G.table_size);
}

struct node *node_of(fuse_ino_t ino)
{
	return ino == FUSE_ROOT_ID ? &G.root : (struct node *)(uintptr_t)ino;
}

int table_grow(void)
{
	size_t size = G.table_size ? G.table_size * 2 : 1024;
	struct node **t = calloc(size, sizeof(*t));
	if (!t)
		return -ENOMEM;
	struct node **old = G.table;
	size_t old_size = G.table_size;
	G.table = t;
	G.table_size = size;
	for (size_t i = 0; i < old_size; i++) {
		for (struct node *n = old[i], *next; n; n = next) {
			next = n->next;
			size_t h = node_hash(n->dev, n->ino);
			n->next = t[h];
			t[h] = n;
		}
	}
	free(old);
	return 0;
}

/* The node for the object that FD (O_PATH, ours to give) names; one lookup counted. */
static int node_get(int fd, const struct stat *st, struct node **out)
{
	if (st->st_dev == G.root.dev && st->st_ino == G.root.ino) {
		close(fd);
		G.root.nlookup++;
		*out = &G.root;
		return 0;
	}
	if (G.nnodes + 1 > G.table_size && table_grow() < 0) {
		close(fd);
		return -ENOMEM;
	}
	size_t h = node_hash(st->st_dev, st->st_ino);
	for (struct node *n = G.table[h]; n; n = n->next) {
		if (n->dev == st->st_dev && n->ino == st->st_ino) {
			close(fd);
			n->nlookup++;
			*out = n;
			return 0;
		}
	}
	struct node *n = calloc(1, sizeof(*n));
	if (!n) {
		close(fd);
		return -ENOMEM;
	}
	*n = (struct node){ .next = G.table[h], .fd = fd, .dev = st->st_dev, .ino = st->st_ino, .nlookup = 1 };
	G.table[h] = n;
	G.nnodes++;
	*out = n;
	return 0;
}

void node_forget(struct node *n, uint64_t count)
{
	if (n == &G.root)
		return;
	n->nlookup = count >= n->nlookup ? 0 : n->nlookup - count;
	if (n->nlookup)
		return;
	size_t h = node_hash(n->dev, n->ino);
	for (struct node **p = &G.table[h]; *p; p = &(*p)->next) {
		if (*p == n) {
			*p = n->next;
			break;
		}
	}
	close(n->fd);
	free(n);
	G.nnodes--;
}

/* ---- host access -------------------------------------------------------------------- */

int openat2_beneath(int dirfd, const char *name, int flags, mode_t mode)
{
	struct open_how how = {
		.flags = (uint64_t)(flags | O_CLOEXEC),
		.mode = (flags & O_CREAT) ? mode : 0,
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
	};
	int fd = (int)syscall(SYS_openat2, dirfd, name, &how, sizeof(how));
	return fd < 0 ? -errno : fd;
}

/* The kernel sends single names; anything else is refused rather than resolved. */
bool name_ok(const char *name)
{
	return name[0] && !strchr(name, '/') && strcmp(name, ".") && strcmp(name, "..");
}

/* Reopen a node's O_PATH handle for I/O. The path is this process's own fd link: it names an
 * object we already hold, so nothing the sandbox or the host renames can redirect it. */
int node_reopen(const struct node *n, int flags)
{
	char p[64];
	snprintf(p, sizeof(p), "/proc/self/fd/%d", n->fd);
	int fd = open(p, flags | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

int node_stat(const struct node *n, struct stat *st)
{
	return fstatat(n->fd, "", st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
}

/* The object's path below the served folder, "/"-rooted, for the plugin. */
char *fd_path(int fd)
{
	char p[64], target[PATH_MAX];
	snprintf(p, sizeof(p), "/proc/self/fd/%d", fd);
	ssize_t l = readlink(p, target, sizeof(target) - 1);
	if (l < 0)
		return strdup("/");
	target[l] = '\0';
	const char *rel = target;
	if (!strncmp(target, G.root_path, G.root_path_len) &&
	    (target[G.root_path_len] == '/' || target[G.root_path_len] == '\0'))
		rel = target + G.root_path_len;
	return strdup(rel[0] ? rel : "/");
}

/* Take ownership of a just-made object for the caller of REQ, as an idmapped mount would. */
int own_for_caller(fuse_req_t req, int parent_fd, int fd)
{
	const struct fuse_ctx *c = fuse_req_ctx(req);
	uid_t uid;
	gid_t gid;
	if (uid_to_host(c->uid, &uid) < 0 || gid_to_host(c->gid, &gid) < 0)
		return -EPERM;
	struct stat pst;
	/* A set-group-id folder gives its group, as the kernel does on a local filesystem. */
	if (fstat(parent_fd, &pst) == 0 && (pst.st_mode & S_ISGID))
		gid = (gid_t)-1;
	return fchownat(fd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
}

void reply_entry(fuse_req_t req, int fd, struct fuse_file_info *fi)
{
	struct stat st;
	if (fstatat(fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) {
		int e = errno;
		close(fd);
		fuse_reply_err(req, e);
		return;
	}
	struct node *n;
	int r = node_get(fd, &st, &n);
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	stat_to_guest(&st);
	/* Host-side changes show at once: correctness before caching. */
	struct fuse_entry_param e = { .ino = (fuse_ino_t)(uintptr_t)n, .attr = st, .attr_timeout = 0, .entry_timeout = 0 };
	if (n == &G.root)
		e.ino = FUSE_ROOT_ID;
	if (fi)
		fuse_reply_create(req, &e, fi);
	else
		fuse_reply_entry(req, &e);
}
