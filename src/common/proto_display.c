/* The display messages of the wire protocol (docs/protocol.md, "Display"): SCREENSHOT and its
 * OK, INPUT. Decoders treat their input as hostile, as proto.c's do, and are fuzzed
 * (tests/fuzz/fuzz_messages.c). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

int cp_screenshot_encode(struct cp_writer *w, uint32_t chan, const struct cp_screenshot *m)
{
	if (m->offset > CP_MAX_SCREENSHOT || (m->offset && !m->shot))
		return -EINVAL;
	cp_frame_begin(w, CP_SCREENSHOT, 0, chan);
	if (m->offset)
		cp_put_u64(w, CP_T_SHOT_OFFSET, m->offset);
	if (m->shot)
		cp_put_u32(w, CP_T_SHOT_ID, m->shot);
	return cp_frame_finish(w);
}

int cp_screenshot_decode(const uint8_t *p, size_t n, struct cp_screenshot *m)
{
	memset(m, 0, sizeof(*m));
	struct cp_reader rd = { .p = p, .rem = n };
	struct cp_field f;
	int k;
	while ((k = cp_next_field(&rd, &f)) > 0) {
		int r = 0;
		if (f.tag == CP_T_SHOT_OFFSET)
			r = cp_field_u64(&f, &m->offset);
		else if (f.tag == CP_T_SHOT_ID)
			r = cp_field_u32(&f, &m->shot);
		if (r < 0) {
			memset(m, 0, sizeof(*m));
			return r;
		}
	}
	if (k < 0 || m->offset > CP_MAX_SCREENSHOT || (m->offset && !m->shot)) {
		memset(m, 0, sizeof(*m));
		return -EBADMSG;
	}
	return 0;
}

void cp_screenshot_free(struct cp_screenshot *m)
{
	memset(m, 0, sizeof(*m));
}

int cp_screenshot_ok_encode(struct cp_writer *w, uint32_t chan, const struct cp_screenshot_ok *m)
{
	if (!m->shot || m->size > CP_MAX_SCREENSHOT || m->data_len > CP_SCREENSHOT_CHUNK || m->data_len > m->size ||
	    (m->data_len && !m->data))
		return -EINVAL;
	cp_frame_begin(w, CP_OK, 0, chan);
	cp_put_u32(w, CP_T_SHOT_OK_ID, m->shot);
	cp_put_u64(w, CP_T_SHOT_OK_SIZE, m->size);
	cp_put_u32(w, CP_T_SHOT_OK_WIDTH, m->width);
	cp_put_u32(w, CP_T_SHOT_OK_HEIGHT, m->height);
	if (m->data_len)
		cp_put_bytes(w, CP_T_SHOT_OK_DATA, m->data, m->data_len);
	return cp_frame_finish(w);
}

int cp_screenshot_ok_decode(const uint8_t *p, size_t n, struct cp_screenshot_ok *m)
{
	memset(m, 0, sizeof(*m));
	struct cp_reader rd = { .p = p, .rem = n };
	struct cp_field f;
	bool have_size = false;
	int k;
	while ((k = cp_next_field(&rd, &f)) > 0) {
		int r = 0;
		if (f.tag == CP_T_SHOT_OK_ID)
			r = cp_field_u32(&f, &m->shot);
		else if (f.tag == CP_T_SHOT_OK_SIZE)
			r = cp_field_u64(&f, &m->size), have_size = true;
		else if (f.tag == CP_T_SHOT_OK_WIDTH)
			r = cp_field_u32(&f, &m->width);
		else if (f.tag == CP_T_SHOT_OK_HEIGHT)
			r = cp_field_u32(&f, &m->height);
		else if (f.tag == CP_T_SHOT_OK_DATA) {
			m->data = f.val;
			m->data_len = f.len;
		}
		if (r < 0) {
			memset(m, 0, sizeof(*m));
			return r;
		}
	}
	/* The shim is not inside the boundary, but a client still checks what it will add up. */
	if (k < 0 || !m->shot || !have_size || m->size > CP_MAX_SCREENSHOT || m->data_len > CP_SCREENSHOT_CHUNK ||
	    m->data_len > m->size) {
		memset(m, 0, sizeof(*m));
		return -EBADMSG;
	}
	if (!m->data_len)
		m->data = NULL;
	return 0;
}

void cp_screenshot_ok_free(struct cp_screenshot_ok *m)
{
	memset(m, 0, sizeof(*m));
}

static bool input_valid(const struct cp_input *m)
{
	if (m->kind < CP_INPUT_TYPE || m->kind > CP_INPUT_CLICK)
		return false;
	if (m->text && (!m->text[0] || strlen(m->text) > CP_MAX_INPUT_TEXT))
		return false;
	if ((m->kind == CP_INPUT_TYPE || m->kind == CP_INPUT_KEY) && !m->text)
		return false;
	if (m->kind == CP_INPUT_MOVE && m->text)
		return false;
	return m->kind == CP_INPUT_MOVE || (m->x == 0 && m->y == 0);
}

int cp_input_encode(struct cp_writer *w, uint32_t chan, const struct cp_input *m)
{
	if (!input_valid(m))
		return -EINVAL;
	cp_frame_begin(w, CP_INPUT, 0, chan);
	cp_put_u32(w, CP_T_INPUT_KIND, m->kind);
	if (m->text)
		cp_put_str(w, CP_T_INPUT_TEXT, m->text);
	if (m->kind == CP_INPUT_MOVE) {
		cp_put_u32(w, CP_T_INPUT_X, m->x);
		cp_put_u32(w, CP_T_INPUT_Y, m->y);
	}
	return cp_frame_finish(w);
}

int cp_input_decode(const uint8_t *p, size_t n, struct cp_input *m)
{
	memset(m, 0, sizeof(*m));
	struct cp_reader rd = { .p = p, .rem = n };
	struct cp_field f;
	bool have_x = false, have_y = false;
	int k = 0, r = 0;
	while (r == 0 && (k = cp_next_field(&rd, &f)) > 0) {
		if (f.tag == CP_T_INPUT_KIND)
			r = cp_field_u32(&f, &m->kind);
		else if (f.tag == CP_T_INPUT_TEXT)
			r = cp_field_set_str(&f, &m->text);
		else if (f.tag == CP_T_INPUT_X)
			r = cp_field_u32(&f, &m->x), have_x = true;
		else if (f.tag == CP_T_INPUT_Y)
			r = cp_field_u32(&f, &m->y), have_y = true;
	}
	if (r == 0 && k < 0)
		r = k;
	if (r == 0 && m->kind == CP_INPUT_MOVE && (!have_x || !have_y))
		r = -EBADMSG;
	/* Coordinates mean something only to MOVE: elsewhere they are dropped, so that each
	 * message has one encoding. */
	if (r == 0 && m->kind != CP_INPUT_MOVE)
		m->x = m->y = 0;
	if (r == 0 && !input_valid(m))
		r = -EBADMSG;
	if (r < 0) {
		cp_input_free(m);
		return r;
	}
	return 0;
}

void cp_input_free(struct cp_input *m)
{
	free(m->text);
	memset(m, 0, sizeof(*m));
}
