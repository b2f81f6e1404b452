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

static int open_upper(int run_fd, int *fd, capsule_error *err)
{
	*fd = openat(run_fd, "fs/upper", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (*fd < 0)
		return cap_err(err, errno, "open the sandbox's layer 'fs/upper'");
	return 0;
}

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
	_cleanup_close_ int dir = -1, fs = -1, dst = -1;
	int r = run_dir_open(target, &dir, err);
	if (r < 0)
		return r;
	if (!run_dir_locked(dir))
		return cap_err_plain(err, EINVAL, "sandbox '%s' is not being made by a fork", target);
	struct capsule_config tcfg;
	if ((r = config_load_at(dir, &tcfg, err)) < 0)
		return r;
	uint32_t slot = tcfg.id_slot;
	config_clear(&tcfg);
	if (mkdirat(dir, "fs", 0700) < 0)
		return cap_err(err, errno, "mkdir 'fs' of sandbox '%s'", target);
	if ((fs = openat(dir, "fs", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0 || mkdirat(fs, "upper", 0755) < 0 ||
	    (dst = openat(fs, "upper", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0)
		return cap_err(err, errno, "making the layer of sandbox '%s'", target);
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

int checkpoint_restore(int run_fd, const struct capsule_config *cfg, const char *name, capsule_error *err)
{
	if (cfg->isolation == CAPSULE_ISOLATION_VM)
		return vm_disk_op(cfg, run_fd, CP_SAVE_OP_REVERT, name, err);
	int r = checkpoint_exists(run_fd, name, err);
	if (r < 0)
		return r;
	char path[128];
	snprintf(path, sizeof(path), "checkpoints/%s/layer", name);
	_cleanup_close_ int src = openat(run_fd, path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (src < 0)
		return cap_err(err, errno, "open checkpoint '%s'", name);
	uid_t ub;
	gid_t gb;
	uint32_t count;
	bool rootless;
	home_id_map(cfg->id_slot, &ub, &gb, &count, &rootless);
	rm_rf_at(run_fd, "fs/upper.new");
	rm_rf_at(run_fd, "fs/work");
	if (mkdirat(run_fd, "fs/upper.new", 0755) < 0)
		return cap_err(err, errno, "mkdir 'fs/upper.new'");
	_cleanup_close_ int dst = openat(run_fd, "fs/upper.new", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	struct id_shift shift = { 0, 0, ub, gb, count, !rootless };
	struct layer_copy_stats stats;
	if (dst < 0)
		r = cap_err(err, errno, "open 'fs/upper.new'");
	else
		r = layer_copy(src, dst, &shift, &stats, err);
	/* The layer's own root keeps the sandbox root's owner; the start fixes its mode. */
	if (r == 0 && fchownat(run_fd, "fs/upper.new", ub, gb, AT_SYMLINK_NOFOLLOW) < 0)
		r = cap_err(err, errno, "chown 'fs/upper.new'");
	if (r == 0 && renameat2(run_fd, "fs/upper.new", run_fd, "fs/upper", RENAME_EXCHANGE) < 0)
		r = cap_err(err, errno, "putting checkpoint '%s' in place", name);
	/* The old layer, now at fs/upper.new, leaves under a name no later revert reuses, so its
	 * removal may go on in the background (a kill leaves it to the sandbox's own removal). */
	char old[64];
	snprintf(old, sizeof(old), "fs/upper.old-%d-%llx", (int)getpid(), (unsigned long long)now_ns());
	if (r == 0 && renameat(run_fd, "fs/upper.new", run_fd, old) == 0)
		layer_remove_replaced(run_fd, old);
	else
		rm_rf_at(run_fd, "fs/upper.new");
	return r < 0 ? cap_err_wrap(err, r, "reverting to checkpoint '%s'", name) : 0;
}

int layer_op_check(const struct capsule_config *cfg, uint32_t op, const char *name, capsule_error *err)
{
	if (op < CP_SAVE_OP_SAVE || op > CP_SAVE_OP_FORK)
		return cap_err_plain(err, EINVAL, "unknown save operation %u", op);
	int r = validate_name(name, op == CP_SAVE_OP_FORK ? "sandbox name" : op == CP_SAVE_OP_SAVE ? "save name" : "checkpoint name", err);
	if (r == 0 && op == CP_SAVE_OP_SAVE)
		r = save_check_target(cfg, name, err);
	return r;
}

int layer_op(const struct capsule_config *cfg, int run_fd, uint32_t op, const char *name, capsule_error *err)
{
	int r = layer_op_check(cfg, op, name, err);
	if (r < 0)
		return r;
	if (cfg->isolation == CAPSULE_ISOLATION_VM)
		return vm_disk_op(cfg, run_fd, op, name, err);
	if (op == CP_SAVE_OP_REVERT)
		return checkpoint_restore(run_fd, cfg, name, err);
	_cleanup_close_ int upper = -1, store = -1;
	if ((r = open_upper(run_fd, &upper, err)) < 0)
		return r;
	if (op == CP_SAVE_OP_SAVE)
		return save_write(name, upper, cfg, err);
	if (op == CP_SAVE_OP_FORK) {
		r = fork_copy_layer(cfg, upper, name, err);
		return r < 0 ? cap_err_wrap(err, r, "forking into '%s'", name) : 0;
	}
	if ((r = checkpoints_open(run_fd, &store, err)) < 0)
		return r;
	r = layer_snapshot_at(store, name, upper, cfg, cfg->id_slot, false, false, err);
	return r < 0 ? cap_err_wrap(err, r, "checkpoint '%s'", name) : 0;
}
