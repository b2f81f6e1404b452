/* SAVE (proto.h): save, checkpoint, revert or fork a running sandbox's own layer; PAUSE: hold
 * its processes still, or let them run again. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "proto_internal.h"

int cp_save_encode(struct cp_writer *w, uint32_t chan, const struct cp_save *m)
{
	if (!m->name || !str_fits(m->name, CP_MAX_SAVE_NAME) || m->op < CP_SAVE_OP_SAVE || m->op > CP_SAVE_OP_FORK)
		return -EINVAL;
	cp_frame_begin(w, CP_SAVE, 0, chan);
	cp_put_u32(w, CP_T_SAVE_OP, m->op);
	cp_put_str(w, CP_T_SAVE_NAME, m->name);
	return cp_frame_finish(w);
}

int cp_save_decode(const uint8_t *p, size_t n, struct cp_save *m)
{
	int ret = 0;
	memset(m, 0, sizeof(*m));
	DECODE_LOOP(p, n, {
		if (f.tag == CP_T_SAVE_OP)
			r = cp_field_u32(&f, &m->op);
		else if (f.tag == CP_T_SAVE_NAME)
			r = field_set_str(&f, &m->name);
	});
	if (!m->name || strlen(m->name) > CP_MAX_SAVE_NAME || m->op < CP_SAVE_OP_SAVE || m->op > CP_SAVE_OP_FORK) {
		ret = -EBADMSG;
		goto fail;
	}
	return 0;
fail:
	cp_save_free(m);
	return ret;
}

void cp_save_free(struct cp_save *m)
{
	free(m->name);
	m->name = NULL;
}
int cp_pause_encode(struct cp_writer *w, uint32_t chan, const struct cp_pause *m)
{
	if (m->op < CP_PAUSE_OP_PAUSE || m->op > CP_PAUSE_OP_TO_DISK)
		return -EINVAL;
	cp_frame_begin(w, CP_PAUSE, 0, chan);
	cp_put_u32(w, CP_T_PAUSE_OP, m->op);
	return cp_frame_finish(w);
}

int cp_pause_decode(const uint8_t *p, size_t n, struct cp_pause *m)
{
	int ret = 0;
	memset(m, 0, sizeof(*m));
	DECODE_LOOP(p, n, {
		if (f.tag == CP_T_PAUSE_OP)
			r = cp_field_u32(&f, &m->op);
	});
	if (m->op < CP_PAUSE_OP_PAUSE || m->op > CP_PAUSE_OP_TO_DISK)
		return -EBADMSG;
	return 0;
fail:
	return ret;
}
