/* The guest's side of a display (--display; capsule.display=1 on the kernel command line, and
 * the "display" module group in capsule.modules=, which vm_boot.c loads): the device nodes a
 * GUI program needs in the sandbox's /dev: /dev/dri/..., /dev/fb0, /dev/input/event..., the
 * virtual terminals /dev/tty0 to tty2, and nothing more, and no reboot on ctrl-alt-delete.
 * The shell on the console (tty1) is vm_console.c's.
 *
 * The nodes are root's and a group's, 0660, never world-writable: an input node gives every
 * keystroke a viewer types (a password into the GUI) and takes injected ones, and the screen
 * shows what the GUI shows. The groups are the sandbox's own "video" (fb0, dri) and "input"
 * (event*), as a distribution has them, so the user who starts the GUI program is given access
 * as on any Linux desktop: by membership in /etc/group (or -u user:video). Without such a group
 * in the image, only root. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "agent.h"
#include "util.h"

/* virtio-gpu sets its mode and registers fb0 while its module loads, and virtio-input its
 * event devices; this is a bound for a host so loaded that it takes long. */
#define DEVICE_WAIT_MS 10000
/* QEMU's display: a virtio keyboard and a virtio tablet. */
#define INPUT_DEVICES 2

static int display_wanted = -1;

static bool wanted(void)
{
	if (display_wanted >= 0)
		return display_wanted;
	char value[8];
	display_wanted = agent_cmdline_get("capsule.display", value, sizeof(value)) && !strcmp(value, "1");
	return display_wanted;
}

/* NAME's device number from /sys/class/CLASS/NAME/dev ("maj:min"). */
static int sysfs_devnum(const char *class, const char *name, dev_t *out)
{
	char path[300], text[32];
	snprintf(path, sizeof(path), "/sys/class/%s/%s/dev", class, name);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd >= 0 ? read(fd, text, sizeof(text) - 1) : -1;
	if (fd >= 0)
		close(fd);
	if (n <= 0)
		return -ENOENT;
	text[n] = '\0';
	unsigned maj, min;
	if (sscanf(text, "%u:%u", &maj, &min) != 2)
		return -EINVAL;
	*out = makedev(maj, min);
	return 0;
}

/* Each device of /sys/class/CLASS whose name starts with PREFIX gets its node as DEV/SUB/NAME,
 * root:GID 0660. Returns how many. */
static int make_nodes(const char *class, const char *prefix, const char *dev, const char *sub, gid_t gid)
{
	DIR *d = opendir(class);
	int count = 0;
	struct dirent *de;
	while (d && (de = readdir(d))) {
		const char *name = de->d_name;
		dev_t num;
		if (strncmp(name, prefix, strlen(prefix)) || sysfs_devnum(class + strlen("/sys/class/"), name, &num) < 0)
			continue;
		char path[300];
		snprintf(path, sizeof(path), "%s/%s%s%s", dev, sub, sub[0] ? "/" : "", name);
		if (sub[0]) {
			char folder[300];
			snprintf(folder, sizeof(folder), "%s/%s", dev, sub);
			mkdir(folder, 0755);
		}
		if ((mknod(path, S_IFCHR | 0660, num) < 0 && errno != EEXIST) || chown(path, 0, gid) < 0 ||
		    chmod(path, 0660) < 0)
			fprintf(stderr, "capsule-agent: mknod '%s': %s\n", path, strerror(errno));
		else
			count++;
	}
	if (d)
		closedir(d);
	return count;
}

static int count_devices(const char *class, const char *prefix)
{
	DIR *d = opendir(class);
	int count = 0;
	struct dirent *de;
	while (d && (de = readdir(d))) {
		dev_t num;
		if (!strncmp(de->d_name, prefix, strlen(prefix)) &&
		    sysfs_devnum(class + strlen("/sys/class/"), de->d_name, &num) == 0)
			count++;
	}
	if (d)
		closedir(d);
	return count;
}

/* linux/kd.h and linux/keyboard.h, which a musl build may not have. */
#define KDGKBENT_IOCTL 0x4B46
#define KDSKBENT_IOCTL 0x4B47
#define KEYMAP_BOOT ((2 << 8) | 12)   /* K_BOOT: K(KT_SPEC, 12) */
#define KEYMAP_HOLE (2 << 8)          /* K_HOLE: K(KT_SPEC, 0) */
struct kbentry_compat {
	unsigned char kb_table;
	unsigned char kb_index;
	unsigned short kb_value;
};

/* The kernel's keymap reboots the machine on ctrl-alt-delete (or signals PID 1, the agent,
 * which then shuts the sandbox down): any VNC viewer or `capsule input key ctrl-alt-delete`
 * would end the sandbox. The keys stay, as keys, for programs that read the input devices;
 * only the console's Boot action goes. Delete (111) and keypad Delete (83) carry it. */
static void keymap_drop_boot(void)
{
	int fd = open("/dev/tty0", O_RDWR | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		fprintf(stderr, "capsule-agent: display: open '/dev/tty0': %s\n", strerror(errno));
		return;
	}
	static const unsigned char keys[] = { 111, 83 };
	for (unsigned table = 0; table < 256; table++)
		for (size_t k = 0; k < sizeof(keys); k++) {
			struct kbentry_compat e = { .kb_table = (unsigned char)table, .kb_index = keys[k] };
			if (ioctl(fd, KDGKBENT_IOCTL, &e) < 0 || e.kb_value != KEYMAP_BOOT)
				continue;
			e.kb_value = KEYMAP_HOLE;
			if (ioctl(fd, KDSKBENT_IOCTL, &e) < 0)
				fprintf(stderr, "capsule-agent: display: keymap: %s\n", strerror(errno));
		}
	close(fd);
}

/* The virtual terminals: tty1 is the console the kernel draws on the screen (vm_console.c
 * runs a shell on it and gives it to the shell's user), tty2 is free for a graphical server
 * (X takes the first free VT, and its keyboard with it, and gives the screen back to tty1 when
 * it exits), tty0 is "the active VT", which X opens to find the one in front. root:tty 0620,
 * as a distribution has them: the console's ioctls that matter (a mode, a VT switch, the
 * keymap) need the terminal to be the caller's controlling one, or CAP_SYS_TTY_CONFIG, which
 * commands do not have. */
static void make_vts(const char *dev, gid_t tty_gid)
{
	for (unsigned vt = 0; vt <= 2; vt++) {
		char path[300];
		snprintf(path, sizeof(path), "%s/tty%u", dev, vt);
		if ((mknod(path, S_IFCHR | 0620, makedev(4, vt)) < 0 && errno != EEXIST) || chown(path, 0, tty_gid) < 0 ||
		    chmod(path, 0620) < 0)
			fprintf(stderr, "capsule-agent: mknod '%s': %s\n", path, strerror(errno));
	}
}

/* The sandbox's group NAME, or root's where it has none. */
static gid_t device_group(const char *group_file, const char *name)
{
	gid_t gid;
	return agent_group_gid(group_file, name, &gid) == 0 ? gid : 0;
}

void vm_display_dev(const char *dev, const char *group_file)
{
	if (!wanted())
		return;
	keymap_drop_boot();
	uint64_t deadline = now_ms() + DEVICE_WAIT_MS;
	while ((count_devices("/sys/class/graphics", "fb") < 1 || count_devices("/sys/class/input", "event") < INPUT_DEVICES) &&
	       now_ms() < deadline)
		usleep(5000);
	gid_t video = device_group(group_file, "video"), input_group = device_group(group_file, "input");
	int fb = make_nodes("/sys/class/graphics", "fb", dev, "", video);
	int dri = make_nodes("/sys/class/drm", "", dev, "dri", video);
	int input = make_nodes("/sys/class/input", "event", dev, "input", input_group);
	make_vts(dev, device_group(group_file, "tty"));
	if (fb < 1 || dri < 1 || input < INPUT_DEVICES)
		fprintf(stderr, "capsule-agent: display: %d framebuffer, %d DRM and %d input device(s) appeared\n", fb, dri,
			input);
}
