/* The one dispatch of the save family: a SAVE request's wire number turned into an enum
 * save_op (and back, for the library's requests), and each operation on a sandbox's own
 * layer or, at the vm level, its disk. The shim (a running sandbox, frozen or down; and a
 * save at stop) and the library (a stopped one) both come through layer_op. */
#include <errno.h>
#include <stdint.h>

#include "internal.h"
#include "proto.h"
#include "save.h"
#include "util.h"

int save_op_from_wire(uint32_t wire, enum save_op *op, capsule_error *err)
{
	switch (wire) {
	case CP_SAVE_OP_SAVE:
		*op = SAVE_OP_SAVE;
		return 0;
	case CP_SAVE_OP_CHECKPOINT:
		*op = SAVE_OP_CHECKPOINT;
		return 0;
	case CP_SAVE_OP_REVERT:
		*op = SAVE_OP_REVERT;
		return 0;
	case CP_SAVE_OP_FORK:
		*op = SAVE_OP_FORK;
		return 0;
	}
	return cap_err_plain(err, EINVAL, "unknown save operation %u", wire);
}

uint32_t save_op_to_wire(enum save_op op)
{
	static const uint32_t wire[] = { [SAVE_OP_SAVE] = CP_SAVE_OP_SAVE, [SAVE_OP_CHECKPOINT] = CP_SAVE_OP_CHECKPOINT,
					 [SAVE_OP_REVERT] = CP_SAVE_OP_REVERT, [SAVE_OP_FORK] = CP_SAVE_OP_FORK };
	return wire[op];
}

const char *save_op_name(enum save_op op)
{
	static const char *const names[] = { [SAVE_OP_SAVE] = "save", [SAVE_OP_CHECKPOINT] = "checkpoint",
					     [SAVE_OP_REVERT] = "revert", [SAVE_OP_FORK] = "fork" };
	return names[op];
}

int layer_op_check(const struct capsule_config *cfg, enum save_op op, const char *name, capsule_error *err)
{
	int r = validate_name(name, op == SAVE_OP_FORK ? "sandbox name" : op == SAVE_OP_SAVE ? "save name" : "checkpoint name", err);
	if (r == 0 && op == SAVE_OP_SAVE)
		r = save_check_target(cfg, name, err);
	return r;
}

struct layer_op_args {
	const struct capsule_config *cfg;
	int run_fd;
	enum save_op op;
	const char *name;
};

static int container_layer_op(void *arg, capsule_error *err);

int layer_op(const struct capsule_config *cfg, int run_fd, enum save_op op, const char *name, capsule_error *err)
{
	int r = layer_op_check(cfg, op, name, err);
	if (r < 0)
		return r;
	if (cfg->isolation == CAPSULE_ISOLATION_VM)
		return vm_disk_op(cfg, run_fd, op, name, err);
	/* A user's sandbox has files of its other ids, which the user may neither read nor give
	 * their owners: the copy is made as root of a namespace of the user's ids. */
	struct layer_op_args a = { cfg, run_fd, op, name };
	return rootless_run_mapped(container_layer_op, &a, NULL, 0, err);
}

static int container_layer_op(void *arg, capsule_error *err)
{
	const struct layer_op_args *a = arg;
	const struct capsule_config *cfg = a->cfg;
	int run_fd = a->run_fd, r;
	enum save_op op = a->op;
	const char *name = a->name;
	if (op == SAVE_OP_REVERT)
		return checkpoint_restore(run_fd, cfg, name, err);
	_cleanup_close_ int upper = -1, store = -1;
	if ((r = sandbox_upper_open(run_fd, cfg, &upper, err)) < 0)
		return r;
	if (op == SAVE_OP_SAVE)
		return save_write(name, upper, cfg, err);
	if (op == SAVE_OP_FORK) {
		r = fork_copy_layer(cfg, upper, name, err);
		return r < 0 ? cap_err_wrap(err, r, "forking into '%s'", name) : 0;
	}
	if ((r = checkpoints_open(run_fd, &store, err)) < 0)
		return r;
	r = layer_snapshot_at(store, name, upper, cfg, cfg->id_slot, false, false, err);
	return r < 0 ? cap_err_wrap(err, r, "checkpoint '%s'", name) : 0;
}
