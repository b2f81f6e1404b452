/* The shim's side of saves (docs/architecture.md, "Saves"): SAVE requests on a running sandbox
 * (save, checkpoint, fork) copy its own layer with its processes frozen, so the copy is one
 * moment's state. The copying is the library's (src/lib/checkpoint.c, src/lib/save.c). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "freeze.h"
#include "internal.h"
#include "save.h"
#include "saves.h"
#include "util.h"

int shim_save_request(const struct save_sandbox *sb, uint32_t op, const char *name, capsule_error *err)
{
	/* Checked before anything is frozen: a bad name costs the sandbox nothing. */
	int r = layer_op_check(sb->cfg, op, name, err);
	if (r < 0)
		return r;
	if ((r = sb->pause ? sb->pause(true, err) : sandbox_freeze(sb->cg, sb->cgname, true, err)) < 0)
		return r;
	r = layer_op(sb->cfg, sb->run_fd, op, name, err);
	capsule_error terr = { 0 };
	if ((sb->pause ? sb->pause(false, &terr) : sandbox_freeze(sb->cg, sb->cgname, false, &terr)) < 0 && r == 0)
		r = cap_err_plain(err, terr.code, "%s", terr.message);
	return r;
}
