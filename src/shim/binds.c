/* Boot-time binds and volumes, for both levels: a container attaches the trees in its mount
 * namespace, a vm puts them on its share. */
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cgroup.h"
#include "shim.h"
#include "syscalls.h"

void close_bind_trees(struct container_bind *binds, size_t n)
{
	for (size_t i = 0; i < n; i++)
		close(binds[i].tree);
}

/* A transform mount is served by capsule-fuse: a FUSE mount, not a clone of the folder. The
 * server maps ids itself (docs/architecture.md), so no idmap goes on top. */
static int open_transform_tree(struct shim *s, const struct bind_mount *b, bool guest_ids_from_zero, int *tree,
			       capsule_error *err)
{
	struct transform_ids ids;
	bool rootless;
	home_id_map(s->cfg.id_slot, &ids.host_uid_base, &ids.host_gid_base, &ids.count, &rootless);
	/* QEMU passes the guest's ids as they are (security_model=none): the guest's root is
	 * id 0, its id N the sandbox's host id, as on the share. */
	ids.uid_base = guest_ids_from_zero ? 0 : ids.host_uid_base;
	ids.gid_base = guest_ids_from_zero ? 0 : ids.host_gid_base;
	uint32_t timeout = s->cfg.boot_timeout_ms ? s->cfg.boot_timeout_ms : CAPSULE_DEFAULT_BOOT_TIMEOUT_MS;
	/* A volume's content folder is served like a host folder; the server's fd keeps the
	 * volume's filesystem alive, our shared lock keeps it ours. */
	struct volume_handle vh = { .lock_fd = -1, .mount_fd = -1, .data_fd = -1 };
	int r = b->volume ? volume_open(b->source, &vh, err) : 0;
	FILE *log = shim_log_file();
	if (r == 0)
		r = transform_mount_open(b, vh.data_fd, &ids, timeout, log ? fileno(log) : -1, tree,
					 &s->transforms[s->ntransforms], err);
	if (b->volume && vh.lock_fd >= 0)
		s->volume_locks[s->nvolume_locks++] = volume_release_keep_lock(&vh);
	if (r < 0)
		return r;
	s->ntransforms++;
	/* The server's work is the sandbox's: its memory, CPU and pids count against the
	 * sandbox's limits, not against nobody's. */
	if (s->cg && (r = cgroup_add_pid(s->cg, s->transforms[s->ntransforms - 1].pid, err)) < 0) {
		close(*tree);
		return r;
	}
	return 0;
}

/* Host paths are opened here, with the shim's rights, which are those of whoever made the
 * sandbox; never from inside it. Each becomes a detached mount, made read-only (for every
 * user inside, root included) and nosuid, nodev before the sandbox exists. */
int open_bind_trees(struct shim *s, struct container_bind *binds, size_t *n, bool guest_ids_from_zero,
		    capsule_error *err)
{
	for (size_t i = 0; i < s->cfg.nbinds; i++) {
		const struct bind_mount *b = &s->cfg.binds[i];
		int tree;
		if (b->transform) {
			int r = open_transform_tree(s, b, guest_ids_from_zero, &tree, err);
			if (r < 0) {
				close_bind_trees(binds, *n);
				return r;
			}
			binds[(*n)++] = (struct container_bind){ .tree = tree, .target = b->target, .is_dir = true,
								 .no_idmap = true };
			continue;
		}
		uint64_t attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | (b->readonly ? MOUNT_ATTR_RDONLY : 0) |
				 config_mount_attrs(&s->cfg, b->target);
		if (b->volume) {
			/* A volume is one more tree: its content folder (inside its mounted image for
			 * one with a quota), cloned, so idmapping, read-only and the target's
			 * resolution are those of any bind. */
			struct volume_handle vh;
			int r = volume_open(b->source, &vh, err);
			if (r < 0) {
				close_bind_trees(binds, *n);
				return r;
			}
			tree = shim_host_tree(vh.data_fd, "", AT_EMPTY_PATH | AT_RECURSIVE, attrs);
			int e = errno;
			s->volume_locks[s->nvolume_locks++] = volume_release_keep_lock(&vh);
			errno = e;
		} else {
			tree = shim_host_tree(AT_FDCWD, b->source, AT_RECURSIVE, attrs);
		}
		if (tree < 0) {
			int r = cap_err(err, errno, "%s '%s'", b->volume ? "volume" : "mount source", b->source);
			close_bind_trees(binds, *n);
			return r;
		}
		binds[(*n)++] = (struct container_bind){ .tree = tree, .target = b->target, .attrs = attrs,
							 .propagation = config_mount_propagation(&s->cfg, b->target) };
		struct stat st;
		if (fstat(tree, &st) < 0) {
			int r = cap_err(err, errno, "preparing the mount of '%s'", b->source);
			close_bind_trees(binds, *n);
			return r;
		}
		binds[*n - 1].is_dir = S_ISDIR(st.st_mode);
	}
	return 0;
}

void binds_release(struct shim *s)
{
	transform_servers_reap(s, true);
	s->ntransforms = 0;
	for (size_t i = 0; i < s->nvolume_locks; i++)
		close(s->volume_locks[i]);
	s->nvolume_locks = 0;
}
