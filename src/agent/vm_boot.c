/* capsule-agent as the /init of a guest (vm isolation). Before the common code runs, it does
 * what the shim's container code does on the host for the container level: it loads the
 * kernel modules the initramfs carries, finds its channel (a virtio-serial port, made fd 3),
 * and builds the sandbox's root (its root disk, the host's /usr over read-only 9p for the host
 * image, fresh /proc, /sys and a minimal /dev), then moves
 * into it. From there on the agent cannot tell the levels apart, which is the point. */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "agent.h"
#include "proc_masks.h"
#include "util.h"

#ifndef MODULE_INIT_COMPRESSED_FILE
#define MODULE_INIT_COMPRESSED_FILE 4
#endif

#define PORT_WAIT_MS 20000
/* The virtio-serial port's name: VM_AGENT_PORT_NAME in src/shim/vm/vm.h. */
#define VM_AGENT_PORT "capsule.agent"
#define MAX_MODULE_FILES 64

static bool in_vm;

bool agent_in_vm(void)
{
	return in_vm;
}

_Noreturn void agent_exit(int code)
{
	if (in_vm) {
		/* PID 1 of a guest does not just exit (the kernel would panic): it resets the
		 * machine, which ends QEMU (-no-reboot), which the shim sees. A reset, not a power
		 * off: microvm without ACPI (capsule's own kernel) has no power-off device, and
		 * the kernel would halt the CPUs and leave QEMU running. */
		sync();
		reboot(RB_AUTOBOOT);
	}
	/* A PID 1's end ends its namespace's processes; a pod's shared one outlives the agent. */
	if (getpid() != 1)
		agent_signal_all(SIGKILL);
	_exit(code);
}

static void vm_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void vm_log(const char *fmt, ...)
{
	/* stderr is /dev/console, the serial port QEMU writes to run/<name>/console.log. */
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "capsule-agent: ");
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

static _Noreturn void vm_die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static _Noreturn void vm_die(const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	vm_log("%s", msg);
	agent_exit(1);
}

static void must_mount(const char *src, const char *target, const char *type, unsigned long flags, const char *data)
{
	mkdir(target, 0755);
	if (mount(src, target, type, flags, data) < 0)
		vm_die("mount %s on '%s' (%s): %s", type, target, data ? data : "", strerror(errno));
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* /modules/GROUP/NNN-name.ko in name order: the host numbered them so that each comes after
 * what it depends on. Loaded from their fds; each file is deleted once in (it is RAM). */
static void load_module_group(const char *group)
{
	char dir[80];
	snprintf(dir, sizeof(dir), "/modules/%s", group);
	DIR *d = opendir(dir);
	if (!d)
		return;
	char *names[MAX_MODULE_FILES];
	size_t n = 0;
	struct dirent *de;
	while ((de = readdir(d)) && n < MAX_MODULE_FILES)
		if (de->d_name[0] != '.' && (names[n] = strdup(de->d_name)))
			n++;
	closedir(d);
	qsort(names, n, sizeof(names[0]), name_cmp);
	for (size_t i = 0; i < n; i++) {
		char path[400];
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		bool compressed = strstr(names[i], ".ko.") != NULL;
		if (fd < 0 || syscall(SYS_finit_module, fd, "", compressed ? MODULE_INIT_COMPRESSED_FILE : 0) < 0) {
			if (errno != EEXIST)
				vm_log("loading module '%s': %s", path, strerror(errno));
		}
		if (fd >= 0)
			close(fd);
		free(names[i]);
	}
}

static bool dir_has_entries(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *de;
	bool any = false;
	while (d && !any && (de = readdir(d)))
		any = de->d_name[0] != '.';
	if (d)
		closedir(d);
	return any;
}

/* "core" always; "pci" where there is a PCI bus; then the groups that capsule.modules=
 * (from the shim, which knows which devices it gave the machine) names, comma separated. */
static void load_modules(const char *groups)
{
	load_module_group("core");
	if (dir_has_entries("/sys/bus/pci/devices"))
		load_module_group("pci");
	char list[256];
	snprintf(list, sizeof(list), "%s", groups);
	for (char *save = NULL, *g = strtok_r(list, ",", &save); g; g = strtok_r(NULL, ",", &save))
		if (strcmp(g, "core") && strcmp(g, "pci") && !strchr(g, '/') && strcmp(g, "..") && strcmp(g, "."))
			load_module_group(g);
	/* The initramfs is RAM: what is loaded (or not wanted) goes. */
	DIR *d = opendir("/modules");
	struct dirent *de;
	while (d && (de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		char dir[300];
		snprintf(dir, sizeof(dir), "/modules/%s", de->d_name);
		DIR *g = opendir(dir);
		struct dirent *ge;
		while (g && (ge = readdir(g)))
			if (ge->d_name[0] != '.')
				unlinkat(dirfd(g), ge->d_name, 0);
		if (g)
			closedir(g);
		rmdir(dir);
	}
	if (d)
		closedir(d);
	rmdir("/modules");
}

/* Dotted options of the kernel's command line (the shim writes them) never reach init's argv
 * or environment: they are read here. */
bool agent_cmdline_get(const char *key, char *out, size_t size)
{
	char buf[4096];
	int fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
	ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
	if (fd >= 0)
		close(fd);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	size_t klen = strlen(key);
	for (char *save = NULL, *t = strtok_r(buf, " \n", &save); t; t = strtok_r(NULL, " \n", &save))
		if (!strncmp(t, key, klen) && t[klen] == '=') {
			snprintf(out, size, "%s", t + klen + 1);
			return true;
		}
	return false;
}

/* "capsule.hostname=" (a name the shim validated) and "capsule.modules=". */
static void read_cmdline(char *modules, size_t size)
{
	char name[256];
	if (agent_cmdline_get("capsule.hostname", name, sizeof(name)) && name[0])
		sethostname(name, strlen(name));
	if (!agent_cmdline_get("capsule.modules", modules, size))
		modules[0] = '\0';
}

/* The device node /dev/NAME of the first entry NAME of sysfs folder DIR whose file ATTR is
 * the line WANT, into DEV; waited for up to TIMEOUT_MS, since the sysfs entry appears when the
 * driver binds and its node in devtmpfs a moment later. false when none came. */
bool vm_sysfs_dev_wait(const char *dir, const char *attr, const char *want, char *dev, size_t size,
		       unsigned timeout_ms)
{
	uint64_t deadline = now_ms() + timeout_ms;
	size_t wlen = strlen(want);
	do {
		DIR *d = opendir(dir);
		struct dirent *de;
		while (d && (de = readdir(d))) {
			if (de->d_name[0] == '.')
				continue;
			char path[300], value[64] = "";
			snprintf(path, sizeof(path), "%s/%s/%s", dir, de->d_name, attr);
			int fd = open(path, O_RDONLY | O_CLOEXEC);
			ssize_t k = fd >= 0 ? read(fd, value, sizeof(value) - 1) : -1;
			if (fd >= 0)
				close(fd);
			if (k <= 0 || strncmp(value, want, wlen) != 0 || (value[wlen] != '\0' && value[wlen] != '\n'))
				continue;
			snprintf(dev, size, "/dev/%s", de->d_name);
			if (access(dev, F_OK) == 0) {
				closedir(d);
				return true;
			}
		}
		if (d)
			closedir(d);
		usleep(5000);
	} while (now_ms() < deadline);
	return false;
}

/* The port's name is in sysfs (virtio-ports/vportNpM/name). */
static int open_agent_port(void)
{
	char dev[300];
	if (!vm_sysfs_dev_wait("/sys/class/virtio-ports", "name", VM_AGENT_PORT, dev, sizeof(dev), PORT_WAIT_MS))
		return -1;
	return open(dev, O_RDWR | O_CLOEXEC | O_NOCTTY);
}

static void mknod_dev(const char *name, unsigned maj, unsigned min)
{
	char path[64];
	snprintf(path, sizeof(path), "/newroot/dev/%s", name);
	if (mknod(path, S_IFCHR | 0666, makedev(maj, min)) < 0 || chmod(path, 0666) < 0)
		vm_die("mknod '%s': %s", path, strerror(errno));
}

/* The same /dev as the container level: a small tmpfs with the usual nodes, its own devpts,
 * shm and mqueue. Not devtmpfs: the guest's devices (the agent's port among them) are none of
 * a command's business. */
static void setup_dev(void)
{
	must_mount("tmpfs", "/newroot/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=65536");
	for (size_t i = 0; i < sandbox_dev_nodes_count; i++)
		mknod_dev(sandbox_dev_nodes[i].name, sandbox_dev_nodes[i].major, sandbox_dev_nodes[i].minor);
	must_mount("devpts", "/newroot/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620");
	must_mount("tmpfs", "/newroot/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=67108864");
	must_mount("mqueue", "/newroot/dev/mqueue", "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	for (size_t i = 0; i < sandbox_dev_links_count; i++) {
		char path[64];
		snprintf(path, sizeof(path), "/newroot/dev/%s", sandbox_dev_links[i][1]);
		if (symlink(sandbox_dev_links[i][0], path) < 0 && errno != EEXIST)
			vm_die("symlink '%s': %s", path, strerror(errno));
	}
}

/* Root in the guest is the guest kernel's real root: what the container level gets from a
 * user namespace has to be taken away here. Kernel knobs that run a program of the caller's
 * choosing with every capability (core_pattern's pipe helper, modprobe for request_module)
 * are made harmless, sysrq is turned off (a viewer's Alt+SysRq would reset the guest), and
 * module loading ends for good once the agent's own modules are in: until the next boot,
 * nothing (the agent included) can turn it back on. Done before /proc/sys goes read-only. */
static void lock_kernel_knobs(void)
{
	static const char *const knobs[][2] = {
		{ "/proc/sys/kernel/core_pattern", "core\n" },
		{ "/proc/sys/kernel/modprobe", "\n" },
		{ "/proc/sys/kernel/sysrq", "0\n" },
		{ "/proc/sys/kernel/modules_disabled", "1\n" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(knobs); i++) {
		int fd = open(knobs[i][0], O_WRONLY | O_CLOEXEC);
		/* No such knob: the kernel was built without what it guards (capsule's own kernel
		 * has no modules and no sysrq), which is the state it would be set to. */
		if (fd < 0 && errno == ENOENT)
			continue;
		size_t len = strlen(knobs[i][1]);
		if (fd < 0 || write(fd, knobs[i][1], len) != (ssize_t)len)
			vm_die("writing '%s': %s", knobs[i][0], strerror(errno));
		close(fd);
	}
}

/* Free page reporting (QEMU's virtio-balloon, free-page-reporting=on) hands the host back
 * guest memory that is free, but Linux 6.1 reports only free blocks of pageblock order, 4 MiB
 * here, and sets that order when the balloon registers (mm/page_reporting.c: a command line
 * value is overwritten). What the boot writes and frees in smaller pieces (the kernel's init
 * sections, the initramfs's pages, early buffers) then stays with the host, about 3.5 MiB
 * of an idle vm. From 32 KiB up is reported instead: order 3, where 0, 3 and 6 gave the same
 * within 1 MiB (docs/performance.md). A kernel without page reporting has no such file. */
#define VM_PAGE_REPORTING_ORDER "3\n"

static void report_small_free_pages(void)
{
	int fd = open("/sys/module/page_reporting/parameters/page_reporting_order", O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	if (write(fd, VM_PAGE_REPORTING_ORDER, strlen(VM_PAGE_REPORTING_ORDER)) < 0)
		vm_log("page_reporting_order: %s", strerror(errno));
	close(fd);
}

static void mask_path(const char *path)
{
	char target[4200];
	snprintf(target, sizeof(target), "/newroot/%s", path);
	struct stat st;
	if (lstat(target, &st) < 0)
		return; /* not on this kernel, or not in this image (runc skips it too) */
	int r = S_ISDIR(st.st_mode) ? mount("tmpfs", target, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
					   "size=0,mode=0555")
				    : mount("/newroot/dev/null", target, NULL, MS_BIND, NULL);
	if (r < 0)
		vm_die("masking '/%s': %s", path, strerror(errno));
}

static void readonly_path(const char *path)
{
	char target[4200];
	snprintf(target, sizeof(target), "/newroot/%s", path);
	if (access(target, F_OK) < 0)
		return;
	if (mount(target, target, NULL, MS_BIND | MS_REC, NULL) < 0 ||
	    mount(NULL, target, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
		vm_die("read-only '/%s': %s", path, strerror(errno));
}

/* An OCI spec's own lists (config's masked_paths, readonly_paths), "/a,/b" as KEY= on the
 * command line. The paths are the guest's (a name that leaves the root through a symlink
 * reaches the guest's own initramfs, nothing of the host's), but still only absolute
 * paths without a ".." component are taken. */
static void spec_paths(const char *key, void (*apply)(const char *path))
{
	char list[2048];
	if (!agent_cmdline_get(key, list, sizeof(list)))
		return;
	for (char *save = NULL, *p = strtok_r(list, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
		size_t l = strlen(p);
		if (p[0] != '/' || strstr(p, "/../") || (l >= 3 && !strcmp(p + l - 3, "/..")))
			vm_die("%s: '%s' is not an absolute path without '..'", key, p);
		apply(p + 1);
	}
}

/* The container level's masks (proc_masks.c) over the sandbox's fresh /proc and /sys: the
 * same table, applied from inside, and a spec's beyond them. /dev/null is the node setup_dev
 * just made. */
static void mask_kernel_paths(void)
{
	for (size_t i = 0; i < sandbox_masked_paths_count; i++)
		mask_path(sandbox_masked_paths[i]);
	for (size_t i = 0; i < sandbox_readonly_paths_count; i++)
		readonly_path(sandbox_readonly_paths[i]);
	spec_paths("capsule.mask", mask_path);
	spec_paths("capsule.ro", readonly_path);
}

#define NINEP_OPTS "trans=virtio,version=9p2000.L,msize=262144,cache=loose"

static void setup_root(void)
{
	/* The root disk the shim attached (vm_disk.c): every vm has one. */
	char why[300];
	bool host_shares = true;
	int disk = agent_vm_disk_root("/newroot", &host_shares, why, sizeof(why));
	if (disk < 0)
		vm_die("root disk: %s", why);
	if (disk == 0)
		vm_die("no root disk: the kernel command line has no capsule.disk=");
	static const char *const host_dirs[] = { "usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32" };
	for (size_t i = 0; host_shares && i < ARRAY_SIZE(host_dirs); i++) {
		char target[64], tag[32];
		snprintf(target, sizeof(target), "/newroot/%s", host_dirs[i]);
		snprintf(tag, sizeof(tag), "host-%s", host_dirs[i]);
		struct stat st;
		/* The skeleton mirrors the host: a folder here is a share, a symlink is not. */
		if (lstat(target, &st) < 0 || !S_ISDIR(st.st_mode))
			continue;
		must_mount(tag, target, "9p", MS_RDONLY | MS_NOSUID | MS_NODEV, NINEP_OPTS);
	}
	vm_mounts_boot();
	must_mount("proc", "/newroot/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	must_mount("sysfs", "/newroot/sys", "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	setup_dev();
	mask_kernel_paths();
	vm_display_dev("/newroot/dev", "/newroot/etc/group");
}

int agent_vm_boot(void)
{
	/* A container's agent is exec'd into a root with /proc mounted; a guest's /init starts
	 * with nothing mounted at all. */
	if (getpid() != 1 || access("/proc/self", F_OK) == 0)
		return 0;
	in_vm = true;
	must_mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	must_mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	must_mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID | MS_NOEXEC, NULL);
	char modules[256];
	read_cmdline(modules, sizeof(modules));
	load_modules(modules);
	lock_kernel_knobs();
	report_small_free_pages();
	int port = open_agent_port();
	if (port < 0)
		vm_die("no virtio-serial port named '%s' appeared", VM_AGENT_PORT);
	if (dup2(port, AGENT_CONTROL_FD) < 0)
		vm_die("dup2 of the agent port: %s", strerror(errno));
	if (port != AGENT_CONTROL_FD)
		close(port);
	setup_root();
	char why[256];
	if (vm_net_setup("/newroot", why, sizeof(why)) < 0)
		vm_die("network: %s", why);
	/* The initramfs's own mounts go; the port stays open through its fd. */
	umount2("/dev", MNT_DETACH);
	umount2("/sys", MNT_DETACH);
	umount2("/proc", MNT_DETACH);
	unlink("/capsule-agent");
	/* The initramfs cannot be pivot_root'ed away: the new root is moved over it instead, as
	 * switch_root does. */
	if (chdir("/newroot") < 0 || mount(".", "/", NULL, MS_MOVE, NULL) < 0 || chroot(".") < 0 || chdir("/") < 0)
		vm_die("moving into the new root: %s", strerror(errno));
	return 0;
}
