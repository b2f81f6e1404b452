/* Checkpoints (run/<name>/checkpoints/<checkpoint>/, the save store's format, kept while the
 * sandbox exists) put back as a sandbox's own layer, and a fork's copy of one sandbox's layer
 * into a new one's. Used by the shim for running sandboxes (with their processes frozen or
 * gone) and by the library for stopped ones. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "layer_copy.h"
#include "save.h"
#include "util.h"

int checkpoints_open(int run_fd, int *fd, capsule_error *err)
{
	if (mkdirat(run_fd, "checkpoints", 0700) < 0 && errno != EEXIST)
		return cap_err(err, errno, "mkdir 'checkpoints'");
	*fd = openat(run_fd, "checkpoints", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (*fd < 0)
		return cap_err(err, errno, "open 'checkpoints'");
	return 0;
}

/* A fork's new sandbox: its folder was made (and locked) by the library, which waits for us
 * before it starts that sandbox's shim; its own layer must not exist yet. Our layer is copied
 * into it with owners moved to its id range. */
int fork_copy_layer(const struct capsule_config *cfg, int upper, const char *target, capsule_error *err)
{
	_cleanup_close_ int dir = -1, dst = -1;
	int r = run_dir_open(target, &dir, err);
	if (r < 0)
		return r;
	if (!run_dir_locked(dir))
		return cap_err_plain(err, EINVAL, "sandbox '%s' is not being made by a fork", target);
	struct capsule_config tcfg;
	if ((r = config_load_at(dir, &tcfg, err)) < 0)
		return r;
	uint32_t slot = tcfg.id_slot;
	struct sandbox_layer l;
	/* The new sandbox's own disk, where it has a disk size: the copy must fit in it. */
	r = sandbox_layer_open(dir, &tcfg, true, &l, err);
	config_clear(&tcfg);
	if (r < 0)
		return cap_err_wrap(err, r, "making the layer of sandbox '%s'", target);
	if (mkdirat(l.root_fd, "upper", 0755) < 0 ||
	    (dst = openat(l.root_fd, "upper", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0)
		r = cap_err(err, errno, "making the layer of sandbox '%s'", target);
	sandbox_layer_close(&l);
	if (r < 0)
		return r;
	uid_t ub, tub;
	gid_t gb, tgb;
	uint32_t count;
	bool rootless;
	home_id_map(cfg->id_slot, &ub, &gb, &count, &rootless);
	home_id_map(slot, &tub, &tgb, &count, &rootless);
	struct id_shift shift = { ub, gb, tub, tgb, count, !rootless };
	struct layer_copy_stats stats;
	return layer_copy(upper, dst, &shift, &stats, err);
}

int checkpoint_exists(int run_fd, const char *name, capsule_error *err)
{
	int r = validate_name(name, "checkpoint name", err);
	if (r < 0)
		return r;
	char path[128];
	snprintf(path, sizeof(path), "checkpoints/%s/layer", name);
	struct stat st;
	if (fstatat(run_fd, path, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode))
		return cap_err_plain(err, ENOENT, "no checkpoint named '%s'", name);
	return 0;
}

struct restore_source {
	int src;
	uid_t ub;
	gid_t gb;
	uint32_t count;
	bool rootless;
};

/* ROOT_FD/upper.new becomes the checkpoint's layer, owned by the sandbox's root. */
static int restore_upper_new(int root_fd, void *payload, capsule_error *err)
{
	const struct restore_source *rs = payload;
	rm_rf_at(root_fd, "upper.new");
	if (mkdirat(root_fd, "upper.new", 0755) < 0)
		return cap_err(err, errno, "mkdir 'upper.new'");
	_cleanup_close_ int dst = openat(root_fd, "upper.new", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dst < 0)
		return cap_err(err, errno, "open 'upper.new'");
	struct id_shift shift = { 0, 0, rs->ub, rs->gb, rs->count, !rs->rootless };
	struct layer_copy_stats stats;
	int r = layer_copy(rs->src, dst, &shift, &stats, err);
	/* The layer's own root keeps the sandbox root's owner; the start fixes its mode. */
	if (r == 0 && fchownat(root_fd, "upper.new", rs->ub, rs->gb, AT_SYMLINK_NOFOLLOW) < 0)
		r = cap_err(err, errno, "chown 'upper.new'");
	return r;
}

/* On a disk of its own, the new layer is a fresh disk's upper/. */
static int restore_onto_disk(int root_fd, void *payload, capsule_error *err)
{
	int r = restore_upper_new(root_fd, payload, err);
	if (r == 0 && renameat(root_fd, "upper.new", root_fd, "upper") < 0)
		r = cap_err(err, errno, "rename 'upper.new'");
	return r;
}

static int restore_in_folder(int run_fd, struct restore_source *rs, const char *name, capsule_error *err)
{
	_cleanup_close_ int fs = openat(run_fd, "fs", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fs < 0)
		return cap_err(err, errno, "open 'fs'");
	rm_rf_at(fs, "work");
	int r = restore_upper_new(fs, rs, err);
	if (r == 0 && renameat2(fs, "upper.new", fs, "upper", RENAME_EXCHANGE) < 0)
		r = cap_err(err, errno, "putting checkpoint '%s' in place", name);
	/* The old layer, now at fs/upper.new, leaves under a name no later revert reuses, so its
	 * removal may go on in the background (a kill leaves it to the sandbox's own removal). */
	char old[64];
	snprintf(old, sizeof(old), "fs/upper.old-%d-%llx", (int)getpid(), (unsigned long long)now_ns());
	if (r == 0 && renameat(run_fd, "fs/upper.new", run_fd, old) == 0)
		layer_remove_replaced(run_fd, old);
	else
		rm_rf_at(fs, "upper.new");
	return r;
}

int checkpoint_restore(int run_fd, const struct capsule_config *cfg, const char *name, capsule_error *err)
{
	if (cfg->isolation == CAPSULE_ISOLATION_VM)
		return vm_disk_op(cfg, run_fd, SAVE_OP_REVERT, name, err);
	int r = checkpoint_exists(run_fd, name, err);
	if (r < 0)
		return r;
	char path[128];
	snprintf(path, sizeof(path), "checkpoints/%s/layer", name);
	struct restore_source rs = { .src = openat(run_fd, path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) };
	if (rs.src < 0)
		return cap_err(err, errno, "open checkpoint '%s'", name);
	home_id_map(cfg->id_slot, &rs.ub, &rs.gb, &rs.count, &rs.rootless);
	if (layer_has_disk(cfg))
		r = layer_disk_replace(run_fd, cfg, restore_onto_disk, &rs, err);
	else
		r = restore_in_folder(run_fd, &rs, name, err);
	close(rs.src);
	return r < 0 ? cap_err_wrap(err, r, "reverting to checkpoint '%s'", name) : 0;
}
