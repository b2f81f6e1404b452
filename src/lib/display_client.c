/* A vm's display (--display): the setting, what inspect shows of it, and the requests a
 * running sandbox's shim answers with QMP (src/shim/vm/display.c): screenshots and input. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "json.h"
#include "util.h"

/* A screenshot is QEMU's screendump, chunk by chunk; an input action may type a long text. */
#define DISPLAY_REPLY_TIMEOUT_MS 60000
/* Another client's screenshot may replace ours between two chunks (the shim keeps one). */
#define SCREENSHOT_ATTEMPTS 3

int capsule_config_set_display(capsule_config *cfg, bool enabled, capsule_error *err)
{
	if (!cfg)
		return cap_err_plain(err, EINVAL, "display: no configuration given");
	cfg->display = enabled;
	return 0;
}

int config_display_check(const struct capsule_config *cfg, capsule_error *err)
{
	if (cfg->display && cfg->isolation != CAPSULE_ISOLATION_VM)
		return cap_err_plain(err, EOPNOTSUPP, "a display needs --isolation vm (sandbox '%s' is a container)",
				     cfg->name);
	return 0;
}

void sandbox_display_inspect_json(capsule_sandbox *sb, bool running, struct json_writer *j)
{
	const struct capsule_config *cfg = sandbox_config(sb);
	json_key(j, "display");
	json_object_begin(j);
	json_kv_bool(j, "enabled", cfg->display);
	_cleanup_close_ int dir = -1;
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	if (cfg->display && running && run_dir_open(cfg->name, &dir, NULL) == 0 &&
	    read_file_at(dir, "display.json", 1u << 16, &text, &len) == 0) {
		_cleanup_free_ char *socket_path = NULL;
		if (json_get_string(text, len, "vnc_socket", &socket_path) == 0)
			json_kv_string(j, "vnc_socket", socket_path);
	}
	json_object_end(j);
}

/* One SCREENSHOT request on C and its answer; the OK's fields into *OK, its data copied into
 * BUF at OFFSET (BUF holds SIZE bytes once known). */
static int screenshot_chunk(struct conn *c, const struct cp_screenshot *req, struct cp_screenshot_ok *ok,
			    uint8_t **buf, capsule_error *err)
{
	int r = cp_screenshot_encode(&c->w, 1, req);
	if (r < 0)
		return cap_err(err, -r, "encoding a screenshot request");
	if ((r = conn_send(c, err)) < 0)
		return r;
	for (;;) {
		struct cp_header h;
		const uint8_t *payload;
		if ((r = conn_recv(c, &h, &payload, DISPLAY_REPLY_TIMEOUT_MS, err)) < 0)
			return r;
		if (h.chan == 1 && h.type == CP_ERROR)
			return conn_error_from_frame(payload, h.len, err);
		if (h.chan != 1 || h.type != CP_OK) {
			conn_consume(c, &h);
			continue;
		}
		struct cp_screenshot_ok m;
		if (cp_screenshot_ok_decode(payload, h.len, &m) < 0 ||
		    (req->offset && (m.shot != ok->shot || m.size != ok->size)) || req->offset + m.data_len > m.size ||
		    (m.data_len == 0 && req->offset < m.size)) {
			conn_consume(c, &h);
			return cap_err_plain(err, EPROTO, "malformed screenshot from the sandbox's shim");
		}
		if (req->offset == 0) {
			free(*buf);
			if (!(*buf = malloc(m.size ? m.size : 1))) {
				conn_consume(c, &h);
				return cap_err(err, ENOMEM, "screenshot of %llu bytes", (unsigned long long)m.size);
			}
		}
		if (m.data_len)
			memcpy(*buf + req->offset, m.data, m.data_len);
		ok->shot = m.shot;
		ok->size = m.size;
		ok->width = m.width;
		ok->height = m.height;
		ok->data_len = m.data_len;
		conn_consume(c, &h);
		return 0;
	}
}

int capsule_screenshot(capsule_sandbox *sb, uint8_t **png_out, size_t *len_out, capsule_error *err)
{
	if (png_out)
		*png_out = NULL;
	if (len_out)
		*len_out = 0;
	if (!sb || !png_out || !len_out)
		return cap_err_plain(err, EINVAL, "screenshot: no sandbox or output given");
	struct conn c;
	int r = conn_open(&c, capsule_sandbox_name(sb), err);
	if (r < 0)
		return r;
	_cleanup_free_ uint8_t *buf = NULL;
	struct cp_screenshot_ok ok = { 0 };
	for (int attempt = 0; attempt < SCREENSHOT_ATTEMPTS; attempt++) {
		struct cp_screenshot req = { 0 };
		do {
			r = screenshot_chunk(&c, &req, &ok, &buf, err);
			req.offset += ok.data_len;
			req.shot = ok.shot;
		} while (r == 0 && req.offset < ok.size);
		if (r != -ESTALE)
			break;
	}
	conn_close(&c);
	if (r < 0)
		return r;
	*png_out = steal_ptr(buf);
	*len_out = ok.size;
	return 0;
}

int capsule_screenshot_file(capsule_sandbox *sb, const char *path, capsule_error *err)
{
	if (!path || !path[0])
		return cap_err_plain(err, EINVAL, "screenshot: no file given");
	_cleanup_free_ uint8_t *png = NULL;
	size_t len;
	int r = capsule_screenshot(sb, &png, &len, err);
	if (r < 0)
		return r;
	/* Written beside its final name and renamed over it: a reader never sees half a PNG. */
	const char *slash = strrchr(path, '/');
	const char *base = slash ? slash + 1 : path;
	if (!base[0])
		return cap_err_plain(err, EISDIR, "screenshot '%s': names a folder, not a file", path);
	_cleanup_free_ char *folder = slash == path ? strdup("/") : slash ? strndup(path, (size_t)(slash - path)) : strdup(".");
	if (!folder)
		return cap_err(err, ENOMEM, "screenshot '%s'", path);
	_cleanup_close_ int dir = open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dir < 0)
		return cap_err(err, errno, "screenshot '%s': opening its folder", path);
	if ((r = write_file_atomic_at(dir, base, png, len, 0644, true)) < 0)
		return cap_err(err, -r, "writing screenshot '%s'", path);
	return 0;
}

static int input_request(capsule_sandbox *sb, const struct cp_input *m, capsule_error *err)
{
	if (!sb)
		return cap_err_plain(err, EINVAL, "input: no sandbox given");
	struct conn c;
	int r = conn_open(&c, capsule_sandbox_name(sb), err);
	if (r < 0)
		return r;
	if ((r = cp_input_encode(&c.w, 1, m)) < 0)
		r = cap_err(err, -r, "encoding an input request");
	else
		r = shim_request_wait(&c, NULL, DISPLAY_REPLY_TIMEOUT_MS, err);
	conn_close(&c);
	return r;
}

int capsule_input_type(capsule_sandbox *sb, const char *text, capsule_error *err)
{
	if (!text || !text[0])
		return cap_err_plain(err, EINVAL, "input type: no text given");
	/* What a US keyboard types: printable ASCII, newline and tab. Checked whole before the
	 * first piece goes, so that a bad character types nothing. */
	for (size_t i = 0, at = 1; text[i]; at++) {
		unsigned char ch = (unsigned char)text[i];
		char name[16];
		size_t n;
		char_describe(text + i, name, &n);
		/* Counted in characters, as the person who wrote the text counts. */
		if ((ch < 0x20 || ch > 0x7e) && ch != '\n' && ch != '\t')
			return cap_err_plain(err, EINVAL,
					     "character '%s' (character %zu of the text) has no key on a US keyboard; "
					     "send it with input key",
					     name, at);
		i += n;
	}
	size_t len = strlen(text);
	for (size_t off = 0; off < len; off += CP_MAX_INPUT_TEXT) {
		char piece[CP_MAX_INPUT_TEXT + 1];
		snprintf(piece, sizeof(piece), "%s", text + off);
		struct cp_input m = { .kind = CP_INPUT_TYPE, .text = piece };
		int r = input_request(sb, &m, err);
		if (r < 0)
			return r;
	}
	return 0;
}

int capsule_input_key(capsule_sandbox *sb, const char *spec, capsule_error *err)
{
	if (!spec || !spec[0] || strlen(spec) > CP_MAX_INPUT_TEXT)
		return cap_err_plain(err, EINVAL, "input key: '%s' is not a key (1 to %u bytes, e.g. ctrl-c)", spec ? spec : "",
				     CP_MAX_INPUT_TEXT);
	struct cp_input m = { .kind = CP_INPUT_KEY, .text = (char *)spec };
	return input_request(sb, &m, err);
}

int capsule_input_mouse_move(capsule_sandbox *sb, uint32_t x, uint32_t y, capsule_error *err)
{
	struct cp_input m = { .kind = CP_INPUT_MOVE, .x = x, .y = y };
	return input_request(sb, &m, err);
}

int capsule_input_mouse_click(capsule_sandbox *sb, const char *button, capsule_error *err)
{
	if (button && (!button[0] || strlen(button) > CP_MAX_INPUT_TEXT))
		return cap_err_plain(err, EINVAL, "unknown mouse button '%s' (use left, right or middle)", button);
	struct cp_input m = { .kind = CP_INPUT_CLICK, .text = (char *)button };
	return input_request(sb, &m, err);
}
