#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "json.h"
#include "mounts.h"
#include "parse.h"
#include "proto.h"
#include "syscalls.h"
#include "util.h"

int mount_peer_get(int sockfd, struct mount_peer *p, capsule_error *err)
{
	memset(p, 0, sizeof(*p));
	struct ucred cred;
	socklen_t len = sizeof(cred);
	if (getsockopt(sockfd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return cap_err(err, errno, "reading the client's credentials");
	p->uid = cred.uid;
	p->gid = cred.gid;
	/* The kernel says how much room the list needs when it does not fit. */
	len = 64 * sizeof(gid_t);
	for (int tries = 0; tries < 3; tries++) {
		gid_t *g = realloc(p->groups, len ? len : sizeof(gid_t));
		if (!g) {
			mount_peer_free(p);
			return cap_err(err, ENOMEM, "reading the client's groups");
		}
		p->groups = g;
		socklen_t have = len;
		if (getsockopt(sockfd, SOL_SOCKET, SO_PEERGROUPS, p->groups, &have) == 0) {
			p->ngroups = (int)(have / sizeof(gid_t));
			return 0;
		}
		if (errno != ERANGE) {
			mount_peer_free(p);
			return cap_err(err, errno, "reading the client's groups");
		}
		len = have;
	}
	mount_peer_free(p);
	return cap_err_plain(err, EAGAIN, "reading the client's groups: the list kept changing");
}

void mount_peer_free(struct mount_peer *p)
{
	free(p->groups);
	p->groups = NULL;
	p->ngroups = 0;
}

static bool path_is_below(const char *path, const char *top)
{
	size_t n = strlen(top);
	return strncmp(path, top, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

/* Open PATH (O_PATH) with the file-system rights of PEER and check that PEER may read it (and
 * search it, for a folder; and write it, for a read-write mount). The shim runs as root for
 * root callers: without this, anyone it serves could mount what only root may read. */
static int open_source_as(const struct mount_peer *peer, const char *path, bool readonly, int *out, bool *is_dir,
			  capsule_error *err)
{
	/* Only a root shim has rights beyond its client's; a rootless shim serves its own user
	 * (and root, who then gets the shim's lesser rights). */
	bool switch_ids = geteuid() == 0 && peer->uid != 0;
	gid_t saved_groups[256];
	int nsaved = 0;
	uid_t old_fsuid = 0;
	gid_t old_fsgid = 0;
	if (switch_ids) {
		nsaved = getgroups((int)ARRAY_SIZE(saved_groups), saved_groups);
		if (nsaved < 0)
			return cap_err(err, errno, "getgroups");
		if (setgroups((size_t)peer->ngroups, peer->groups) < 0)
			return cap_err(err, errno, "taking the groups of uid %u", (unsigned)peer->uid);
		old_fsgid = (gid_t)setfsgid(peer->gid);
		old_fsuid = (uid_t)setfsuid(peer->uid);
		/* setfsuid reports the old value, never an error: ask again to be sure. */
		if ((uid_t)setfsuid((uid_t)-1) != peer->uid || (gid_t)setfsgid((gid_t)-1) != peer->gid) {
			setfsuid(old_fsuid);
			setfsgid(old_fsgid);
			setgroups((size_t)nsaved, saved_groups);
			return cap_err_plain(err, EPERM, "cannot take the rights of uid %u to open '%s'", (unsigned)peer->uid,
					     path);
		}
	}
	int e = 0;
	int fd = open(path, O_PATH | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		e = errno;
	} else {
		int mode = R_OK | (S_ISDIR(st.st_mode) ? X_OK : 0) | (readonly ? 0 : W_OK);
		/* AT_EACCESS: checked with the fs ids just taken, not the shim's real ones. */
		if (sys_faccessat2(fd, "", mode, AT_EMPTY_PATH | AT_EACCESS) < 0)
			e = errno;
		*is_dir = S_ISDIR(st.st_mode);
	}
	if (switch_ids) {
		setfsuid(old_fsuid);
		setfsgid(old_fsgid);
		if (setgroups((size_t)nsaved, saved_groups) < 0)
			abort(); /* never go on with a client's groups */
	}
	if (e) {
		if (fd >= 0)
			close(fd);
		if (e == EACCES && fd >= 0)
			return cap_err_plain(err, EACCES, "mount source '%s': the caller may not %s it", path,
					     readonly ? "read" : "read and write");
		return cap_err(err, e, "mount source '%s'", path);
	}
	*out = fd;
	return 0;
}

static struct hot_mount *find_hot(struct hot_mounts *t, const char *handle, const char *target)
{
	for (size_t i = 0; i < t->n; i++)
		if ((handle && !strcmp(t->m[i].handle, handle)) || (target && !strcmp(t->m[i].target, target)))
			return &t->m[i];
	return NULL;
}

/* A guest path as boot-time mounts take it: absolute, normalized, not the root, not below
 * /proc or /sys (their masks must stay). */
static int guest_target(const char *guest_path, char *norm, size_t size, capsule_error *err)
{
	if (guest_path[0] != '/')
		return cap_err_plain(err, EINVAL, "mount target '%s' is not an absolute path", guest_path);
	if (strlen(guest_path) >= size)
		return cap_err_plain(err, ENAMETOOLONG, "mount target is longer than %d bytes", CAP_PATH_MAX);
	int r = normalize_abs_path(guest_path, norm, size, err);
	if (r < 0)
		return r;
	if (!strcmp(norm, "/"))
		return cap_err_plain(err, EINVAL, "mount target '%s' is the sandbox's root", guest_path);
	if (path_is_below(norm, "/proc") || path_is_below(norm, "/sys"))
		return cap_err_plain(err, EINVAL, "mount target '%s' is below /proc or /sys", guest_path);
	return 0;
}

int shim_host_tree(int dirfd, const char *path, unsigned flags, uint64_t attrs)
{
	if (geteuid() != 0)
		return *path ? openat(dirfd, path, O_PATH | O_CLOEXEC | ((flags & AT_SYMLINK_NOFOLLOW) ? O_NOFOLLOW : 0))
			     : fcntl(dirfd, F_DUPFD_CLOEXEC, 3);
	int tree = sys_open_tree(dirfd, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | flags);
	/* An atime mode replaces the mount's own: the kernel wants that field cleared with it.
	 * Private: a clone of a shared host mount is in the host's peer group (systemd makes every
	 * mount shared), and what the sandbox mounts below it would appear on the host. */
	struct mount_attr a = { .attr_set = attrs,
				.attr_clr = attrs & (MOUNT_ATTR__ATIME | MOUNT_ATTR_NODIRATIME) ? MOUNT_ATTR__ATIME : 0,
				.propagation = MS_PRIVATE };
	if (tree >= 0 && sys_mount_setattr(tree, "", AT_EMPTY_PATH | (flags & AT_RECURSIVE), &a) < 0) {
		int e = errno;
		close(tree);
		errno = e;
		return -1;
	}
	return tree;
}

int hot_mount_add(struct hot_mounts *t, const struct mount_sandbox *sb, const struct mount_peer *peer,
		  const char *host_path, const char *guest_path, uint32_t flags, const char **handle, capsule_error *err)
{
	bool readonly = flags & CP_MOUNT_RO;
	if (host_path[0] != '/')
		return cap_err_plain(err, EINVAL, "mount source '%s' is not an absolute host path", host_path);
	if (strlen(host_path) > CAP_PATH_MAX)
		return cap_err_plain(err, ENAMETOOLONG, "mount source is longer than %d bytes", CAP_PATH_MAX);
	char target[CAP_PATH_MAX + 2];
	int r = guest_target(guest_path, target, sizeof(target), err);
	if (r < 0)
		return r;
	if (t->n >= HOT_MOUNTS_MAX)
		return cap_err_plain(err, E2BIG, "too many hot mounts in sandbox '%s' (at most %d); unmount one first",
				     sb->name, HOT_MOUNTS_MAX);
	for (size_t i = 0; i < sb->cfg->nbinds; i++)
		if (!strcmp(sb->cfg->binds[i].target, target))
			return cap_err_plain(err, EEXIST, "'%s' is already a mount in sandbox '%s'", target, sb->name);
	for (size_t i = 0; i < sb->cfg->ntmpfs; i++)
		if (!strcmp(sb->cfg->tmpfs[i].target, target))
			return cap_err_plain(err, EEXIST, "'%s' is already a mount in sandbox '%s'", target, sb->name);
	if (find_hot(t, NULL, target))
		return cap_err_plain(err, EEXIST, "'%s' is already a hot mount in sandbox '%s'", target, sb->name);

	_cleanup_close_ int src = -1;
	bool is_dir = false;
	if ((r = open_source_as(peer, host_path, readonly, &src, &is_dir, err)) < 0)
		return r;
	/* The sensitive check is made on what was opened, so a symlink to /etc, or a path
	 * swapped between the check and the open, is judged by where it really leads. */
	if (!(flags & CP_MOUNT_ALLOW_SENSITIVE)) {
		char self[64], resolved[CAP_PATH_MAX + 64];
		snprintf(self, sizeof(self), "/proc/self/fd/%d", src);
		ssize_t l = readlink(self, resolved, sizeof(resolved) - 1);
		if (l < 0)
			return cap_err(err, errno, "mount source '%s'", host_path);
		resolved[l] = '\0';
		if ((r = check_sensitive_source(resolved, err)) < 0)
			return r;
	}
	_cleanup_close_ int tree = shim_host_tree(src, "", AT_EMPTY_PATH | AT_RECURSIVE,
						  MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | (readonly ? MOUNT_ATTR_RDONLY : 0));
	if (tree < 0)
		return cap_err(err, errno, "preparing the mount of '%s'", host_path);
	if ((r = sb->level->hot_idmap(sb->shim, tree, peer->uid, peer->gid, readonly, host_path, err)) < 0)
		return r;

	struct hot_mount *m = &t->m[t->n];
	memset(m, 0, sizeof(*m));
	m->source = strdup(host_path);
	m->target = strdup(target);
	if (!m->source || !m->target) {
		free(m->source);
		free(m->target);
		return cap_err(err, ENOMEM, "mount of '%s'", host_path);
	}
	char handle_name[sizeof(m->handle)];
	snprintf(handle_name, sizeof(handle_name), "m%u", t->next_handle + 1);
	r = sb->level->hot_attach(sb->shim, tree, handle_name, target, is_dir, readonly, &m->mnt_id, err);
	if (r < 0) {
		free(m->source);
		free(m->target);
		return r;
	}
	m->readonly = readonly;
	snprintf(m->handle, sizeof(m->handle), "m%u", ++t->next_handle);
	t->n++;
	*handle = m->handle;
	return 0;
}

int hot_mount_remove(struct hot_mounts *t, const struct mount_sandbox *sb, const char *what, capsule_error *err)
{
	struct hot_mount *m;
	char target[CAP_PATH_MAX + 2];
	if (what[0] == '/') {
		if (strlen(what) > CAP_PATH_MAX)
			return cap_err_plain(err, ENAMETOOLONG, "unmount: path longer than %d bytes", CAP_PATH_MAX);
		int r = normalize_abs_path(what, target, sizeof(target), err);
		if (r < 0)
			return r;
		m = find_hot(t, NULL, target);
		if (!m) {
			for (size_t i = 0; i < sb->cfg->nbinds; i++)
				if (!strcmp(sb->cfg->binds[i].target, target))
					return cap_err_plain(err, EBUSY,
							     "'%s' in sandbox '%s' was mounted at start; only hot mounts can be unmounted",
							     target, sb->name);
			for (size_t i = 0; i < sb->cfg->ntmpfs; i++)
				if (!strcmp(sb->cfg->tmpfs[i].target, target))
					return cap_err_plain(err, EBUSY,
							     "'%s' in sandbox '%s' was mounted at start; only hot mounts can be unmounted",
							     target, sb->name);
			return cap_err_plain(err, ENOENT, "'%s' is not a hot mount in sandbox '%s'", target, sb->name);
		}
	} else {
		m = find_hot(t, what, NULL);
		if (!m)
			return cap_err_plain(err, ENOENT, "no hot mount with handle '%s' in sandbox '%s'", what, sb->name);
	}
	/* A lazy unmount would take the mounts below it along and leave their rows behind. */
	for (size_t i = 0; i < t->n; i++)
		if (&t->m[i] != m && path_is_below(t->m[i].target, m->target))
			return cap_err_plain(err, EBUSY, "'%s' has the hot mount '%s' (%s) below it; unmount that first",
					     m->target, t->m[i].target, t->m[i].handle);
	int r = sb->level->hot_detach(sb->shim, m->handle, m->target, m->mnt_id, err);
	if (r < 0)
		return r;
	free(m->source);
	free(m->target);
	size_t i = (size_t)(m - t->m);
	memmove(&t->m[i], &t->m[i + 1], (t->n - i - 1) * sizeof(t->m[0]));
	t->n--;
	return 0;
}

static void mount_entry(struct json_writer *j, const char *kind, const char *host, const char *guest, bool ro,
			const char *handle)
{
	json_object_begin(j);
	json_kv_string(j, "kind", kind);
	json_kv_string(j, "host_path", host);
	json_kv_string(j, "guest_path", guest);
	json_kv_bool(j, "readonly", ro);
	json_kv_string(j, "handle", handle);
	json_kv_bool(j, "hot", handle != NULL);
}

int mounts_list_json(const struct hot_mounts *t, const struct mount_sandbox *sb, char **out, capsule_error *err)
{
	struct json_writer j;
	json_init(&j, true); /* shown by `capsule mounts --json` as it is */
	json_array_begin(&j);
	for (size_t i = 0; i < sb->cfg->nbinds; i++) {
		const struct bind_mount *b = &sb->cfg->binds[i];
		mount_entry(&j, b->volume ? "volume" : "bind", b->source, b->target, b->readonly, NULL);
		if (b->transform)
			json_kv_string(&j, "transform", b->transform);
		json_object_end(&j);
	}
	for (size_t i = 0; i < sb->cfg->ntmpfs; i++) {
		mount_entry(&j, "tmpfs", NULL, sb->cfg->tmpfs[i].target, false, NULL);
		json_kv_uint(&j, "size_bytes", sb->cfg->tmpfs[i].size_bytes);
		json_object_end(&j);
	}
	for (size_t i = 0; i < t->n; i++) {
		mount_entry(&j, "bind", t->m[i].source, t->m[i].target, t->m[i].readonly, t->m[i].handle);
		json_object_end(&j);
	}
	json_array_end(&j);
	int e = 0;
	char *text = json_steal(&j, &e);
	if (!text)
		return cap_err(err, e == -ENOMEM ? ENOMEM : EINVAL, "listing mounts");
	if (strlen(text) > CP_MAX_LIST_JSON) {
		free(text);
		return cap_err_plain(err, EMSGSIZE, "the list of mounts is too long to send (over %u bytes)",
				     CP_MAX_LIST_JSON);
	}
	*out = text;
	return 0;
}
