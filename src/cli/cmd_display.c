/* screenshot and input: a vm's display (--display), through the library's display calls. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static int open_sandbox(const char *name, capsule_sandbox **sb)
{
	capsule_error err = { 0 };
	if (capsule_sandbox_open(sb, name, &err) < 0)
		return cli_fail(&err);
	return 0;
}

int cmd_screenshot(int argc, char **argv)
{
	if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		printf("Usage: capsule screenshot SANDBOX FILE.png\n\n"
		       "Save the screen of a running vm that has a display (--display) as a PNG file.\n");
		return 0;
	}
	for (int i = 1; i < argc; i++)
		if (argv[i][0] == '-' && argv[i][1])
			return cli_usage("screenshot", "unknown flag '%s'", argv[i]);
	if (argc != 3)
		return cli_usage("screenshot", "expected SANDBOX and FILE");
	capsule_sandbox *sb;
	int r = open_sandbox(argv[1], &sb);
	if (r)
		return r;
	capsule_error err = { 0 };
	r = capsule_screenshot_file(sb, argv[2], &err);
	capsule_sandbox_free(sb);
	return r < 0 ? cli_fail(&err) : 0;
}

static void input_help(void)
{
	printf("Usage: capsule input SANDBOX ACTION ...\n\n"
	       "  type TEXT             type TEXT as a US keyboard does\n"
	       "  key SPEC              press a key or combination: ctrl-c, ctrl+alt+delete, enter, f5, a\n"
	       "  mouse move X Y        move the pointer to pixel X, Y\n"
	       "  mouse click [BUTTON]  click left (default), right or middle\n");
}

/* A pixel coordinate: a decimal number that fits in 32 bits. */
static int parse_coord(const char *text, const char *axis, uint32_t *out)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(text, &end, 10);
	if (!text[0] || text[0] == '-' || *end || errno || v > UINT32_MAX)
		return cli_usage("input", "bad %s coordinate '%s' (a pixel: 0, 1, 2, ...)", axis, text);
	*out = (uint32_t)v;
	return 0;
}

int cmd_input(int argc, char **argv)
{
	if (argc < 2)
		return cli_usage("input", "no command given");
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		input_help();
		return 0;
	}
	if (argc < 3)
		return cli_usage("input", "expected SANDBOX and an action (type, key, mouse)");
	const char *name = argv[1], *action = argv[2];
	uint32_t x = 0, y = 0;
	int kind;
	if (!strcmp(action, "type") || !strcmp(action, "key")) {
		if (argc != 4)
			return cli_usage("input", "%s: expected one argument", action);
		kind = action[0] == 't' ? 0 : 1;
	} else if (!strcmp(action, "mouse") && argc >= 4 && !strcmp(argv[3], "move")) {
		if (argc != 6)
			return cli_usage("input", "mouse move: expected X and Y");
		int r = parse_coord(argv[4], "x", &x);
		if (r == 0)
			r = parse_coord(argv[5], "y", &y);
		if (r)
			return r;
		kind = 2;
	} else if (!strcmp(action, "mouse") && argc >= 4 && !strcmp(argv[3], "click")) {
		if (argc > 5)
			return cli_usage("input", "mouse click: expected at most a button");
		kind = 3;
	} else if (!strcmp(action, "mouse")) {
		return cli_usage("input", "mouse: expected move X Y or click [BUTTON]");
	} else {
		return cli_usage("input", "unknown action '%s' (use type, key or mouse)", action);
	}
	capsule_sandbox *sb;
	int r = open_sandbox(name, &sb);
	if (r)
		return r;
	capsule_error err = { 0 };
	switch (kind) {
	case 0:
		r = capsule_input_type(sb, argv[3], &err);
		break;
	case 1:
		r = capsule_input_key(sb, argv[3], &err);
		break;
	case 2:
		r = capsule_input_mouse_move(sb, x, y, &err);
		break;
	default:
		r = capsule_input_mouse_click(sb, argc == 5 ? argv[4] : NULL, &err);
		break;
	}
	capsule_sandbox_free(sb);
	return r < 0 ? cli_fail(&err) : 0;
}
