/* A vm's display (--display, quicksand's enable_display): QEMU gets a virtio GPU, a virtio
 * keyboard and tablet and a VNC server on 127.0.0.1; the shim answers SCREENSHOT with QMP's
 * screendump and INPUT with QMP's input-send-event. docs/architecture.md, "Display", says
 * why each piece is the way it is. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "json.h"
#include "proto.h"
#include "util.h"
#include "vm.h"

#define QMP_INPUT_TIMEOUT_MS 10000
/* A screendump is QEMU copying the guest's framebuffer and compressing it: well under a
 * second, unless the host is swamped. */
#define QMP_SCREENDUMP_TIMEOUT_MS 30000
#define MAX_KEYS_IN_COMBO 8
/* A typed character is a press and a release; the guest's virtio-input queue holds 64 events
 * and QEMU drops a whole report that does not fit, so characters are spaced as xdotool spaces
 * them (12 ms). 5 ms was too little once the console shell echoes every key through fbcon,
 * which under TCG on a busy host keeps the guest from draining the queue: a line typed at
 * once lost a character now and then. */
#define TYPE_GAP_NS (12 * 1000 * 1000)

/* The VNC server listens on a unix socket in the sandbox's run folder (vm_display_vnc_arg), never
 * on TCP: RFB's own authentication is an 8-byte DES challenge, and a port on 127.0.0.1 is open
 * to every local user and, through QEMU's user-mode network (10.0.2.2), to every sandbox with
 * --network full. A socket file is reachable only by who may write it: the owner (QEMU runs
 * with umask 077). microvm's virtio-mmio transports are legacy (virtio 0.9) unless told
 * otherwise, and the guest's virtio-gpu and virtio-input drivers refuse a device without
 * VIRTIO_F_VERSION_1: they stay unbound, silently. */
static const char *const display_args[] = {
	"-global", "virtio-mmio.force-legacy=false",
	"-device", "virtio-gpu-device",      "-device", "virtio-keyboard-device",
	"-device", "virtio-tablet-device",   NULL,
};

const char *const *vm_display_qemu_args(const struct capsule_config *cfg)
{
	return cfg->display ? display_args : NULL;
}

/* A user as the guest's kernel command line can carry it: words split at spaces, and nothing
 * but a name or ids ("name", "uid", "name:group", "uid:gid") is ever meant. */
static bool cmdline_safe_user(const char *user)
{
	if (!*user || strlen(user) > 64)
		return false;
	for (const char *p = user; *p; p++)
		if (!isalnum((unsigned char)*p) && !strchr("._:-", *p))
			return false;
	return true;
}

void vm_display_cmdline(const struct capsule_config *cfg, char *out, size_t size)
{
	/* capsule.display=1: the agent makes the display's device nodes (its modules come with
	 * the "display" group, vm_module_groups) and runs a shell on the console, tty1, as
	 * capsule.console_user=, the user `capsule exec` runs as ("-": not one that can be said
	 * here, so no shell). fbcon's cursor stays: the console is a terminal a person types
	 * into; a program that takes the screen (X, a framebuffer writer through a VT in
	 * graphics mode) hides it, and one writing /dev/fb0 directly draws over it. */
	if (!cfg->display) {
		snprintf(out, size, "%s", "");
		return;
	}
	const char *user = cfg->user && *cfg->user ? cfg->user : "0";
	snprintf(out, size, " capsule.display=1 capsule.console_user=%s", cmdline_safe_user(user) ? user : "-");
}

int vm_display_start(struct vm *vm, int run_fd, capsule_error *err)
{
	_cleanup_free_ char *ret = NULL, *family = NULL, *service = NULL;
	int r = qmp_execute(vm->qmp_fd, "query-vnc", NULL, QMP_INPUT_TIMEOUT_MS, &ret, err);
	if (r < 0)
		return r;
	char dir[PATH_MAX];
	int rp = fd_path(run_fd, dir, sizeof(dir), err);
	if (rp < 0)
		return rp;
	char path[PATH_MAX + 16];
	snprintf(path, sizeof(path), "%s/" VM_VNC_SOCKET, dir);
	size_t len = strlen(ret);
	/* Checked, not assumed: the server must be on the owner's socket and nowhere else. */
	if (json_get_string(ret, len, "family", &family) < 0 || json_get_string(ret, len, "service", &service) < 0 ||
	    strcmp(family, "unix") != 0 || strcmp(service, path) != 0)
		return cap_err_plain(err, EPROTO, "QEMU's VNC server is not on the unix socket '%s'", path);
	struct json_writer j;
	json_init(&j, true);
	json_object_begin(&j);
	json_kv_string(&j, "vnc_socket", path);
	json_object_end(&j);
	int e = 0;
	_cleanup_free_ char *text = json_steal(&j, &e);
	if (!text)
		return cap_err(err, e ? -e : ENOMEM, "display.json");
	if ((r = write_file_atomic_at(run_fd, "display.json", text, strlen(text), 0600, false)) < 0)
		return cap_err(err, -r, "writing 'display.json'");
	return 0;
}

/* ---- screendump ------------------------------------------------------------------------ */

/* The first MAX bytes of the file NAME in DIRFD (all of it when shorter). */
static int read_head_at(int dirfd, const char *name, size_t max, char **out, size_t *out_len)
{
	_cleanup_close_ int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	_cleanup_free_ char *buf = malloc(max + 1);
	if (fd < 0 || !buf)
		return fd < 0 ? -errno : -ENOMEM;
	ssize_t n = pread(fd, buf, max, 0);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	*out = steal_ptr(buf);
	*out_len = (size_t)n;
	return 0;
}

/* QEMU writes the dump itself, to a path: one in the sandbox's run folder, which the guest
 * cannot name or reach. The shim reads it back (bounded; with HEAD_ONLY just its first MAX
 * bytes) and removes it. */
static int screendump(struct vm *vm, int run_fd, const char *format, const char *name, size_t max, bool head_only,
		      char **data, size_t *len, capsule_error *err)
{
	char dir[PATH_MAX];
	int rp = fd_path(run_fd, dir, sizeof(dir), err);
	if (rp < 0)
		return rp;
	char path[PATH_MAX + 64];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	unlinkat(run_fd, name, 0);
	struct json_writer j;
	json_init(&j, false);
	json_object_begin(&j);
	json_kv_string(&j, "filename", path);
	json_kv_string(&j, "format", format);
	json_object_end(&j);
	int e = 0;
	_cleanup_free_ char *args = json_steal(&j, &e);
	if (!args)
		return cap_err(err, e ? -e : ENOMEM, "screendump");
	int r = qmp_execute(vm->qmp_fd, "screendump", args, QMP_SCREENDUMP_TIMEOUT_MS, NULL, err);
	if (r == 0) {
		r = head_only ? read_head_at(run_fd, name, max, data, len) : read_file_at(run_fd, name, max, data, len);
		if (r == -EFBIG)
			r = cap_err_plain(err, EFBIG, "the screenshot is over %zu MiB", max >> 20);
		else if (r < 0)
			r = cap_err(err, -r, "reading the screendump '%s'", path);
	}
	unlinkat(run_fd, name, 0);
	return r;
}

static uint32_t be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Width and height from a PNG's IHDR, which must come first. */
static int png_size(const unsigned char *p, size_t len, uint32_t *w, uint32_t *h)
{
	static const unsigned char sig[8] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n' };
	if (len < 33 || memcmp(p, sig, 8) || be32(p + 8) != 13 || memcmp(p + 12, "IHDR", 4))
		return -EBADMSG;
	*w = be32(p + 16);
	*h = be32(p + 20);
	return *w && *h ? 0 : -EBADMSG;
}

/* "P6 <width> <height> <maxval>" with whitespace between. */
static int ppm_size(const char *p, size_t len, uint32_t *w, uint32_t *h)
{
	char head[64];
	size_t n = len < sizeof(head) - 1 ? len : sizeof(head) - 1;
	memcpy(head, p, n);
	head[n] = '\0';
	unsigned x, y;
	if (sscanf(head, "P6 %u %u", &x, &y) != 2 || !x || !y)
		return -EBADMSG;
	*w = x;
	*h = y;
	return 0;
}

/* The screen's size now: a PPM dump is a copy of the framebuffer, no compression. */
static int screen_size(struct vm *vm, int run_fd, uint32_t *w, uint32_t *h, capsule_error *err)
{
	_cleanup_free_ char *ppm = NULL;
	size_t len;
	int r = screendump(vm, run_fd, "ppm", "screen-size.ppm", 64, true, &ppm, &len, err);
	if (r < 0)
		return r;
	if (ppm_size(ppm, len, w, h) < 0)
		return cap_err_plain(err, EPROTO, "QEMU's screendump is not a PPM image");
	return 0;
}

/* The latest screenshot, which chunked requests read from; one per shim. */
static struct {
	uint32_t id;
	char *png;
	size_t len;
	uint32_t width, height;
} shot;

static int screenshot_request(struct vm *vm, int run_fd, uint32_t chan, const struct cp_screenshot *m,
			      struct cp_writer *w, capsule_error *err)
{
	if (m->offset == 0) {
		free(shot.png);
		memset(&shot, 0, sizeof(shot));
		static uint32_t next_id;
		char *png = NULL;
		size_t len = 0;
		int r = screendump(vm, run_fd, "png", "screenshot.png", CP_MAX_SCREENSHOT, false, &png, &len, err);
		if (r < 0)
			return r;
		if (png_size((const unsigned char *)png, len, &shot.width, &shot.height) < 0) {
			free(png);
			return cap_err_plain(err, EPROTO, "QEMU's screendump is not a PNG image");
		}
		if (++next_id == 0)
			next_id = 1;
		shot.id = next_id;
		shot.png = png;
		shot.len = len;
	} else if (m->shot != shot.id || !shot.png) {
		return cap_err_plain(err, ESTALE, "screenshot %u was replaced by a newer one", m->shot);
	} else if (m->offset > shot.len) {
		return cap_err_plain(err, EINVAL, "offset %llu is past the screenshot's %zu bytes",
				     (unsigned long long)m->offset, shot.len);
	}
	size_t left = shot.len - (size_t)m->offset;
	struct cp_screenshot_ok ok = {
		.shot = shot.id,
		.size = shot.len,
		.width = shot.width,
		.height = shot.height,
		.data = (const uint8_t *)shot.png + m->offset,
		.data_len = left < CP_SCREENSHOT_CHUNK ? left : CP_SCREENSHOT_CHUNK,
	};
	int r = cp_screenshot_ok_encode(w, chan, &ok);
	if (r < 0)
		return cap_err(err, -r, "encoding the screenshot");
	/* Read to its end: nothing more to keep. */
	if (m->offset + ok.data_len == shot.len) {
		free(shot.png);
		shot.png = NULL;
	}
	return 0;
}

/* ---- input ------------------------------------------------------------------------------- */

/* QEMU's key names (QKeyCode) that a key spec may use, and the friendlier names people type. */
static const char *const qcodes[] = {
	"esc", "tab", "ret", "spc", "backspace", "delete", "insert", "home", "end", "pgup", "pgdn", "up", "down",
	"left", "right", "minus", "equal", "bracket_left", "bracket_right", "semicolon", "apostrophe",
	"grave_accent", "backslash", "comma", "dot", "slash", "caps_lock", "num_lock", "scroll_lock", "print",
	"pause", "menu", "shift", "shift_r", "ctrl", "ctrl_r", "alt", "alt_r", "meta_l", "meta_r",
	"f1", "f2", "f3", "f4", "f5", "f6", "f7", "f8", "f9", "f10", "f11", "f12", "kp_0", "kp_1", "kp_2", "kp_3",
	"kp_4", "kp_5", "kp_6", "kp_7", "kp_8", "kp_9", "kp_add", "kp_subtract", "kp_multiply", "kp_divide",
	"kp_enter", "kp_decimal", "less", "compose", "audiomute", "volumeup", "volumedown",
};

static const char *const key_aliases[][2] = {
	{ "enter", "ret" },       { "return", "ret" },     { "escape", "esc" },   { "space", "spc" },
	{ "pageup", "pgup" },     { "page_up", "pgup" },   { "pagedown", "pgdn" }, { "page_down", "pgdn" },
	{ "del", "delete" },      { "ins", "insert" },     { "control", "ctrl" }, { "ctl", "ctrl" },
	{ "super", "meta_l" },    { "win", "meta_l" },     { "meta", "meta_l" },  { "cmd", "meta_l" },
	{ "altgr", "alt_r" },     { "capslock", "caps_lock" }, { "printscreen", "print" },
	{ "backtick", "grave_accent" }, { "period", "dot" },
};

/* A character on a US keyboard: its key and whether shift is held for it. */
static int char_key(unsigned char c, const char **qcode, bool *shift)
{
	static char letter[2], digit[2];
	static const char shifted_digits[] = ")!@#$%^&*(";
	static const struct {
		char plain, shifted;
		const char *qcode;
	} punct[] = {
		{ '-', '_', "minus" },        { '=', '+', "equal" },          { '[', '{', "bracket_left" },
		{ ']', '}', "bracket_right" }, { ';', ':', "semicolon" },     { '\'', '"', "apostrophe" },
		{ '`', '~', "grave_accent" },  { '\\', '|', "backslash" },    { ',', '<', "comma" },
		{ '.', '>', "dot" },           { '/', '?', "slash" },
	};
	*shift = false;
	if (c >= 'a' && c <= 'z') {
		letter[0] = (char)c;
		*qcode = letter;
		return 0;
	}
	if (c >= 'A' && c <= 'Z') {
		letter[0] = (char)tolower(c);
		*qcode = letter;
		*shift = true;
		return 0;
	}
	if (c >= '0' && c <= '9') {
		digit[0] = (char)c;
		*qcode = digit;
		return 0;
	}
	const char *d = c ? strchr(shifted_digits, c) : NULL;
	if (d) {
		digit[0] = (char)('0' + (d - shifted_digits));
		*qcode = digit;
		*shift = true;
		return 0;
	}
	if (c == ' ' || c == '\n' || c == '\t') {
		*qcode = c == ' ' ? "spc" : c == '\n' ? "ret" : "tab";
		return 0;
	}
	for (size_t i = 0; i < ARRAY_SIZE(punct); i++)
		if (c == (unsigned char)punct[i].plain || c == (unsigned char)punct[i].shifted) {
			*qcode = punct[i].qcode;
			*shift = c == (unsigned char)punct[i].shifted;
			return 0;
		}
	return -ENOENT;
}

/* One key of a spec: a single character (as typed), or a key's name (any case). */
static int key_by_name(const char *name, size_t len, const char **qcode, bool *shift)
{
	*shift = false;
	if (len == 1) {
		/* char_key hands out static buffers: one key at a time is resolved and sent. */
		return char_key((unsigned char)name[0], qcode, shift);
	}
	char lower[32];
	if (len >= sizeof(lower))
		return -ENOENT;
	for (size_t i = 0; i < len; i++)
		lower[i] = (char)tolower((unsigned char)name[i]);
	lower[len] = '\0';
	for (size_t i = 0; i < ARRAY_SIZE(key_aliases); i++)
		if (!strcmp(lower, key_aliases[i][0])) {
			*qcode = key_aliases[i][1];
			return 0;
		}
	for (size_t i = 0; i < ARRAY_SIZE(qcodes); i++)
		if (!strcmp(lower, qcodes[i])) {
			*qcode = qcodes[i];
			return 0;
		}
	return -ENOENT;
}

static int send_events(struct vm *vm, const char *events, capsule_error *err)
{
	_cleanup_free_ char *args = NULL;
	if (asprintf(&args, "{\"events\": [%s]}", events) < 0)
		return cap_err(err, ENOMEM, "input");
	return qmp_execute(vm->qmp_fd, "input-send-event", args, QMP_INPUT_TIMEOUT_MS, NULL, err);
}

/* Press (or release) the keys QCODES[0..N) in one report: held keys in order, released in
 * reverse. The names are all ours (the tables above), so no JSON escaping is needed. */
static int send_keys(struct vm *vm, const char *const *qcodes_v, size_t n, bool down, capsule_error *err)
{
	char events[MAX_KEYS_IN_COMBO * 2 * 96];
	size_t off = 0;
	for (size_t k = 0; k < n; k++) {
		size_t i = down ? k : n - 1 - k;
		off += (size_t)snprintf(events + off, sizeof(events) - off,
					"%s{\"type\": \"key\", \"data\": {\"down\": %s, \"key\": {\"type\": \"qcode\", \"data\": \"%s\"}}}",
					k ? ", " : "", down ? "true" : "false", qcodes_v[i]);
		if (off >= sizeof(events))
			return cap_err_plain(err, E2BIG, "too many keys at once");
	}
	return send_events(vm, events, err);
}

static int press_and_release(struct vm *vm, const char *const *keys, size_t n, capsule_error *err)
{
	int r = send_keys(vm, keys, n, true, err);
	if (r == 0)
		r = send_keys(vm, keys, n, false, err);
	return r;
}

static int type_text(struct vm *vm, const char *text, capsule_error *err)
{
	/* All or nothing: every character is checked before the first is sent. A position is
	 * counted in characters, as the person who wrote the text counts. */
	for (size_t i = 0, at = 0; text[i]; at++) {
		const char *q;
		bool shift;
		char name[16];
		size_t len;
		char_describe(text + i, name, &len);
		if (len > 1 || char_key((unsigned char)text[i], &q, &shift) < 0)
			return cap_err_plain(err, EINVAL,
					     "character '%s' (character %zu of the text) has no key on a US keyboard; "
					     "send it with input key",
					     name, at + 1);
		i += len;
	}
	for (size_t i = 0; text[i]; i++) {
		const char *q;
		bool shift;
		char_key((unsigned char)text[i], &q, &shift);
		char key[16];
		snprintf(key, sizeof(key), "%s", q);
		const char *keys[2] = { "shift", key };
		int r = shift ? press_and_release(vm, keys, 2, err) : press_and_release(vm, keys + 1, 1, err);
		if (r < 0)
			return r;
		struct timespec gap = { .tv_nsec = TYPE_GAP_NS };
		nanosleep(&gap, NULL);
	}
	return 0;
}

/* "ctrl-c", "ctrl+alt+delete", "shift-tab", "f5", "A": every key but the last is held while
 * the last is pressed. */
static int press_key_spec(struct vm *vm, const char *spec, capsule_error *err)
{
	char names[MAX_KEYS_IN_COMBO + 1][16];
	const char *keys[MAX_KEYS_IN_COMBO + 1];
	size_t n = 0;
	bool shift_needed = false;
	size_t len = strlen(spec);
	for (size_t start = 0; start <= len;) {
		size_t end = start;
		/* A lone '-' or '+' is the key itself, not a separator. */
		if (len == 1)
			end = 1;
		else
			while (end < len && spec[end] != '-' && spec[end] != '+')
				end++;
		if (end == start)
			return cap_err_plain(err, EINVAL, "key '%s': an empty key name (join keys with '-' or '+')", spec);
		if (n == MAX_KEYS_IN_COMBO)
			return cap_err_plain(err, EINVAL, "key '%s': more than %d keys at once", spec, MAX_KEYS_IN_COMBO);
		const char *q;
		bool shift;
		if (key_by_name(spec + start, end - start, &q, &shift) < 0)
			return cap_err_plain(err, EINVAL,
					     "unknown key '%.*s' in '%s' (use a character, or a name such as ctrl, "
					     "alt, shift, meta, enter, esc, tab, space, backspace, delete, up, pageup, "
					     "home, f1-f12)",
					     (int)(end - start), spec + start, spec);
		snprintf(names[n], sizeof(names[n]), "%s", q);
		keys[n] = names[n];
		n++;
		shift_needed |= shift;
		start = end + 1;
	}
	if (shift_needed) {
		/* An uppercase letter or a shifted symbol: shift is held first. */
		memmove(keys + 1, keys, n * sizeof(keys[0]));
		keys[0] = "shift";
		n++;
	}
	return press_and_release(vm, keys, n, err);
}

static int mouse_move(struct vm *vm, int run_fd, uint32_t x, uint32_t y, capsule_error *err)
{
	uint32_t w = 0, h = 0;
	int r = screen_size(vm, run_fd, &w, &h, err);
	if (r < 0)
		return r;
	if (x >= w || y >= h)
		return cap_err_plain(err, EINVAL, "mouse position (%u, %u) is outside the %ux%u screen", x, y, w, h);
	/* The tablet's axes run 0 to 0x7fff whatever the screen's size; this is the scaling that
	 * QEMU's own VNC server applies to a client's pointer. */
	char events[256];
	snprintf(events, sizeof(events),
		 "{\"type\": \"abs\", \"data\": {\"axis\": \"x\", \"value\": %llu}}, "
		 "{\"type\": \"abs\", \"data\": {\"axis\": \"y\", \"value\": %llu}}",
		 (unsigned long long)x * 0x7fff / w, (unsigned long long)y * 0x7fff / h);
	return send_events(vm, events, err);
}

static int mouse_click(struct vm *vm, const char *button, capsule_error *err)
{
	const char *b = button ? button : "left";
	if (strcmp(b, "left") && strcmp(b, "right") && strcmp(b, "middle"))
		return cap_err_plain(err, EINVAL, "unknown mouse button '%s' (use left, right or middle)", b);
	char events[128];
	for (int down = 1; down >= 0; down--) {
		snprintf(events, sizeof(events), "{\"type\": \"btn\", \"data\": {\"down\": %s, \"button\": \"%s\"}}",
			 down ? "true" : "false", b);
		int r = send_events(vm, events, err);
		if (r < 0)
			return r;
	}
	return 0;
}

int vm_display_request(struct vm *vm, const struct capsule_config *cfg, int run_fd, const struct cp_header *h,
		       const uint8_t *payload, struct cp_writer *w, capsule_error *err)
{
	const char *what = h->type == CP_SCREENSHOT ? "screenshot" : "input";
	if (cfg->isolation != CAPSULE_ISOLATION_VM)
		return cap_err_plain(err, EOPNOTSUPP, "%s: sandbox '%s' has no display (a display needs --isolation vm)",
				     what, cfg->name);
	if (!cfg->display)
		return cap_err_plain(err, ENODEV, "%s: sandbox '%s' was started without a display (create it with --display)",
				     what, cfg->name);
	if (h->type == CP_SCREENSHOT) {
		struct cp_screenshot m;
		if (cp_screenshot_decode(payload, h->len, &m) < 0)
			return cap_err_plain(err, EBADMSG, "malformed SCREENSHOT request");
		return screenshot_request(vm, run_fd, h->chan, &m, w, err);
	}
	struct cp_input m;
	if (cp_input_decode(payload, h->len, &m) < 0)
		return cap_err_plain(err, EBADMSG, "malformed INPUT request");
	int r;
	switch (m.kind) {
	case CP_INPUT_TYPE:
		r = type_text(vm, m.text, err);
		break;
	case CP_INPUT_KEY:
		r = press_key_spec(vm, m.text, err);
		break;
	case CP_INPUT_MOVE:
		r = mouse_move(vm, run_fd, m.x, m.y, err);
		break;
	default:
		r = mouse_click(vm, m.text, err);
		break;
	}
	cp_input_free(&m);
	if (r == 0 && (r = cp_empty_encode(w, CP_OK, h->chan)) < 0)
		r = cap_err(err, -r, "encoding the answer");
	return r;
}
