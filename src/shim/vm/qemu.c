/* QEMU as the shim's child: its command line, its start, QMP, and its end.
 *
 * QEMU gets its channels as inherited socketpair ends (chardev socket,fd=N): the agent's
 * virtio-serial port on fd 3, the QMP monitor on fd 4 and the serial console on fd 5 (copied
 * into console.log with a cap, console.c). Nothing is listening on a path but a display's VNC
 * socket, in the owner's run folder, so nothing else on the host can connect to any. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "child.h"
#include "json.h"
#include "proto.h"
#include "rootless.h"
#include "shares.h"
#include "syscalls.h"
#include "util.h"
#include "vm.h"
#include "vmnet.h"

#define QEMU_AGENT_FD 3
#define QEMU_QMP_FD 4
#define QEMU_CONSOLE_FD 5
#define QMP_TIMEOUT_MS 30000
#define MAX_QEMU_ARGV 160
#define QEMU_MMIO_CMDLINE_BYTES (8 * 40)

/* Under TCG the guest's TSC runs at the host's rate (QEMU reads the host's counter). The guest
 * kernel calibrates it against the PIT, which under emulation on a busy host fails now and
 * then; the kernel then marks the TSC unstable and, with no HPET or ACPI PM timer on microvm,
 * hung before init in our runs. So we measure the rate here (20 ms) and say it on the kernel
 * command line (tsc_early_khz), and tsc=reliable keeps the clocksource watchdog from
 * judging it against jiffies, which emulation skews. 0 where it cannot be measured. */
static unsigned long host_tsc_khz(void)
{
#if defined(__x86_64__)
	struct timespec a, b;
	unsigned lo, hi;
	clock_gettime(CLOCK_MONOTONIC_RAW, &a);
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	uint64_t t0 = ((uint64_t)hi << 32) | lo;
	struct timespec nap = { .tv_nsec = 20 * 1000 * 1000 };
	nanosleep(&nap, NULL);
	clock_gettime(CLOCK_MONOTONIC_RAW, &b);
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	uint64_t t1 = ((uint64_t)hi << 32) | lo;
	uint64_t ns = (uint64_t)(b.tv_sec - a.tv_sec) * 1000000000ull + (uint64_t)b.tv_nsec - (uint64_t)a.tv_nsec;
	return ns && t1 > t0 ? (unsigned long)((t1 - t0) * 1000000ull / ns) : 0;
#else
	return 0;
#endif
}

static const char *const host_dirs[] = { "usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32" };

int vm_pick_accel(const char *accel, char out[8], char *fallback, size_t fallback_size, capsule_error *err)
{
	bool want_kvm = accel && !strcmp(accel, "kvm"), want_tcg = accel && !strcmp(accel, "tcg");
	/* $CAPSULE_KVM_DEVICE: the node to probe instead of /dev/kvm (a test shows auto falling
	 * back from a device that is no KVM). */
	const char *dev = getenv("CAPSULE_KVM_DEVICE");
	if (!dev || !*dev)
		dev = "/dev/kvm";
	fallback[0] = '\0';
	if (!want_tcg) {
		char why[224];
		int r = vm_kvm_probe(dev, why, sizeof(why));
		if (r == 0) {
			snprintf(out, 8, "kvm");
			return 0;
		}
		if (want_kvm)
			return cap_err_plain(err, -r, "accel 'kvm': %s", why);
		/* No KVM at all is the ordinary TCG host; a KVM that is there but unusable is
		 * worth saying, for whoever wonders why the boot took seconds. */
		if (r != -ENOENT)
			snprintf(fallback, fallback_size, "%s", why);
	}
	snprintf(out, 8, "tcg");
	return 0;
}

struct argv_builder {
	char *v[MAX_QEMU_ARGV + 1];
	size_t n;
	bool oom;
};

static void arg(struct argv_builder *a, const char *fmt, ...) _printf_(2, 3);
static void arg(struct argv_builder *a, const char *fmt, ...)
{
	if (a->n >= MAX_QEMU_ARGV) {
		a->oom = true;
		return;
	}
	va_list ap;
	va_start(ap, fmt);
	char *s = NULL;
	if (vasprintf(&s, fmt, ap) < 0)
		s = NULL;
	va_end(ap);
	if (!s)
		a->oom = true;
	else
		a->v[a->n++] = s;
}

static void argv_free(struct argv_builder *a)
{
	for (size_t i = 0; i < a->n; i++)
		free(a->v[i]);
	a->n = 0;
}

/* QEMU splits -fsdev/-chardev options at ','; a path with one is written ",,". */
static char *qemu_escape(const char *s)
{
	size_t n = strlen(s), commas = 0;
	for (size_t i = 0; i < n; i++)
		commas += s[i] == ',';
	char *out = malloc(n + commas + 1), *o = out;
	if (!out)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		*o++ = s[i];
		if (s[i] == ',')
			*o++ = ',';
	}
	*o = '\0';
	return out;
}

/* A 9p share. Read-only ones (the host's /usr): security_model=none, QEMU reads
 * the files with its own (the creator's) rights, and readonly=on refuses every write in QEMU
 * itself, whatever the guest kernel asks.
 *
 * The writable one carries the host folders (shares.h), also with security_model=none, so the
 * host sees what the guest makes as the container level shows it (real modes, owners,
 * symlinks), and a host symlink in a bound folder works in the guest. QEMU runs as the
 * creator, so what keeps a guest's root from planting a set-id program or a device node on
 * the host is QEMU's own confinement (vm_qemu_limit_caps: no CAP_MKNOD, CAP_FSETID,
 * CAP_SETFCAP, CAP_SYS_ADMIN, and a seccomp filter refusing set-id modes). QEMU resolves every
 * name with O_NOFOLLOW from the share's top and refuses ".." above it. multidevs=remap: each
 * entry is a mount of its own, and inode numbers of different filesystems must not collide in
 * the guest's view. */
static void share_9p(struct argv_builder *a, const char *tag, const char *path, bool writable)
{
	_cleanup_free_ char *p = qemu_escape(path);
	if (!p) {
		a->oom = true;
		return;
	}
	arg(a, "-fsdev");
	arg(a, "local,id=fs-%s,path=%s,security_model=none,%s", tag, p, writable ? "multidevs=remap" : "readonly=on");
	arg(a, "-device");
	arg(a, "virtio-9p-device,fsdev=fs-%s,mount_tag=%s", tag, tag);
}

static void share(struct argv_builder *a, const char *tag, const char *path)
{
	share_9p(a, tag, path, false);
}

static int build_argv(struct argv_builder *a, const struct vm_spec *spec, const char *accel, const char *kernel,
		      bool own_kernel, const char *initramfs, const char *run_path, capsule_error *err)
{
	const struct capsule_config *cfg = spec->cfg;
	uint64_t mem = cfg->memory_bytes ? cfg->memory_bytes : VM_DEFAULT_MEMORY_BYTES;
	unsigned cpus = cfg->cpus_milli ? (cfg->cpus_milli + 999) / 1000 : 1;
	const char *qemu = getenv("CAPSULE_QEMU");
	_cleanup_free_ char *run_esc = qemu_escape(run_path);
	if (!run_esc)
		return cap_err(err, ENOMEM, "qemu command line");
	arg(a, "%s", qemu && *qemu ? qemu : "qemu-system-x86_64");
	/* microvm: no PCI bus, no firmware tables to walk, virtio over MMIO; the fewest devices
	 * for the kernel to probe, which is most of a boot under TCG. */
	arg(a, "-M");
	/* Without ACPI (capsule's own kernel has none: vm/kernel/capsule.config) QEMU names each
	 * virtio-mmio device on the kernel command line, qboot's MP table gives the CPUs, and the
	 * kernel skips the ACPI interpreter, tens of milliseconds under TCG. Debian's kernel keeps
	 * the ACPI tables it was tested with. */
	arg(a, "%s", own_kernel ? "microvm,acpi=off" : "microvm");
	arg(a, "-accel");
	/* TCG's code buffer is QEMU's biggest allocation after guest RAM (up to 1 GiB by default,
	 * filled as the guest runs new code): capped small (vm.h says why), which also keeps it
	 * inside the vm's cgroup allowance. */
	if (!strcmp(accel, "tcg"))
		arg(a, "tcg,tb-size=%u", VM_TCG_CODE_BUFFER_MIB);
	else
		arg(a, "%s", accel);
	if (!strcmp(accel, "kvm")) {
		arg(a, "-cpu");
		arg(a, "host");
	}
	/* QEMU's own seccomp filter: no exec, no setuid, no obsolete syscalls, no scheduler or
	 * resource knobs, for the day a guest gets code running in QEMU. */
	arg(a, "-sandbox");
	arg(a, "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny");
	arg(a, "-nodefaults");
	arg(a, "-no-user-config");
	arg(a, "-nographic");
	arg(a, "-no-reboot");
	arg(a, "-m");
	arg(a, "%llu", (unsigned long long)(mem >> 20));
	arg(a, "-smp");
	arg(a, "%u", cpus);
	arg(a, "-kernel");
	arg(a, "%s", kernel);
	arg(a, "-initrd");
	arg(a, "%s", initramfs);
	/* panic=-1 with -no-reboot: a guest that dies ends QEMU instead of hanging. */
	char tsc[80] = "";
	unsigned long khz = strcmp(accel, "tcg") ? 0 : host_tsc_khz();
	if (khz)
		snprintf(tsc, sizeof(tsc), " tsc_early_khz=%lu tsc=reliable", khz);
	/* Each further CPU calibrates its delay loop against the timer, which under TCG on a busy
	 * host took a quarter of a second and failed ("Consider using lpj="). The rate is known:
	 * loops_per_jiffy is the TSC's ticks per jiffy, given where we know the kernel's HZ. */
	if (khz && own_kernel)
		snprintf(tsc + strlen(tsc), sizeof(tsc) - strlen(tsc), " lpj=%lu", khz * 1000 / VM_OWN_KERNEL_HZ);
	/* The module groups the guest loads beyond core and pci: the drivers of the devices the
	 * features below give it, comma separated (vm_boot.c). */
	char groups[128] = "", modules[160] = "", display[128];
	vm_module_groups(cfg, groups, sizeof(groups));
	vm_display_cmdline(cfg, display, sizeof(display));
	if (groups[0])
		snprintf(modules, sizeof(modules), " capsule.modules=%s", groups);
	char net[VM_NET_CMDLINE_MAX];
	vm_net_cmdline(cfg, net, sizeof(net));
	/* An OCI spec's masked and read-only paths beyond capsule's own, applied by the agent at
	 * boot as it applies those (vm_boot.c); a path the line cannot carry is refused. */
	const char *masked = cfg->masked_paths ? cfg->masked_paths : "", *ro = cfg->readonly_paths ? cfg->readonly_paths : "";
	if (strpbrk(masked, " \t\n\"") || strpbrk(ro, " \t\n\""))
		return cap_err_plain(err, EINVAL, "a masked or read-only path with a space or a quote cannot reach a vm's guest");
	arg(a, "-append");
	/* The agent ends a guest with a reset, which -no-reboot makes QEMU's exit: a machine without
	 * ACPI has no power-off device. reboot=t resets by a triple fault at once; the kernel's
	 * default first pokes a keyboard controller microvm does not have, and waits for it. */
	arg(a, "console=ttyS0 rdinit=/" VM_INIT_NAME " quiet loglevel=3 panic=-1 reboot=t no_timer_check%s capsule.vm=1 capsule.hostname=%s%s%s%s%s%s%s%s%s%s",
	    tsc, spec->hostname, net, spec->disk ? " capsule.disk=" : "", spec->disk ? spec->disk_mode : "",
	    modules, display, masked[0] ? " capsule.mask=" : "", masked, ro[0] ? " capsule.ro=" : "", ro);
	/* The kernel cuts a longer line without a word, and with it the allowlist's end. Without
	 * ACPI, QEMU adds " virtio_mmio.device=512@0xfeb00e00:12" for each device, on at most
	 * eight transports: that room is kept. */
	size_t cmdline_max = VM_KERNEL_CMDLINE_MAX - (own_kernel ? QEMU_MMIO_CMDLINE_BYTES : 0);
	if (!a->oom && strlen(a->v[a->n - 1]) >= cmdline_max)
		return cap_err_plain(err, E2BIG, "the guest kernel's command line would be %zu bytes (at most %zu)",
				     strlen(a->v[a->n - 1]), cmdline_max - 1);
	arg(a, "-chardev");
	arg(a, "socket,id=console,fd=%d", QEMU_CONSOLE_FD);
	arg(a, "-serial");
	arg(a, "chardev:console");
	/* Free page reporting: memory the guest touched once and freed (the kernel's init
	 * sections, boot-time buffers) goes back to the host, from 32 KiB blocks up (the agent
	 * sets the order: vm_boot.c). No inflating: the guest keeps all of its memory. */
	arg(a, "-device");
	arg(a, "virtio-balloon-device,free-page-reporting=on");
	arg(a, "-device");
	arg(a, "virtio-serial-device");
	arg(a, "-chardev");
	arg(a, "socket,id=agent,fd=%d", QEMU_AGENT_FD);
	arg(a, "-device");
	arg(a, "virtserialport,chardev=agent,name=%s", VM_AGENT_PORT_NAME);
	arg(a, "-chardev");
	arg(a, "socket,id=qmp,fd=%d", QEMU_QMP_FD);
	arg(a, "-mon");
	arg(a, "chardev=qmp,mode=control");
	for (const char *const *d = vm_display_qemu_args(cfg); d && *d; d++)
		arg(a, "%s", *d);
	if (cfg->display) {
		arg(a, "-vnc");
		arg(a, "unix:%s/" VM_VNC_SOCKET, run_esc);
	}
	_cleanup_free_ char *disk = qemu_escape(spec->disk);
	if (!disk)
		a->oom = true;
	/* An ephemeral sandbox's disk goes with it: cache=unsafe leaves out the fdatasync of the
	 * qcow2 at each of the guest's flushes (a score in a boot and shutdown), while QEMU still
	 * writes what it holds to the host's page cache there (a save's copy reads it). */
	arg(a, "-drive");
	arg(a, "file=%s,format=qcow2,if=none,id=root,node-name=root-top,cache=%s,discard=unmap", disk ? disk : "",
	    config_layer_volatile(cfg) ? "unsafe" : "writeback");
	arg(a, "-device");
	arg(a, "virtio-blk-device,drive=root,serial=%s", VM_DISK_SERIAL);
	for (size_t i = 0; strcmp(spec->disk_mode, VM_DISK_MODE_ROOT) && i < ARRAY_SIZE(host_dirs); i++) {
		char host[16], tag[32];
		snprintf(host, sizeof(host), "/%s", host_dirs[i]);
		snprintf(tag, sizeof(tag), VM_HOST_TAG_PREFIX "%s", host_dirs[i]);
		struct stat st;
		/* Merged-/usr hosts have symlinks here, which the skeleton mirrors. */
		if (lstat(host, &st) == 0 && S_ISDIR(st.st_mode))
			share(a, tag, host);
	}
	const char *net_args[8];
	size_t nnet = vm_net_qemu_args(cfg, net_args, ARRAY_SIZE(net_args));
	for (size_t i = 0; i < nnet; i++)
		arg(a, "%s", net_args[i]);
	if (spec->mounts_dir)
		share_9p(a, CP_VM_MOUNTS_TAG, spec->mounts_dir, true);
	for (size_t i = 0; i < cfg->nqemu_args; i++)
		arg(a, "%s", cfg->qemu_args[i]);
	if (spec->incoming) {
		/* The memory state comes over QMP (migrate.c); the guest stays stopped after. */
		arg(a, "-incoming");
		arg(a, "defer");
		arg(a, "-S");
	}
	if (a->oom)
		return cap_err_plain(err, E2BIG, "qemu command line: out of memory or more than %d arguments",
				     MAX_QEMU_ARGV);
	a->v[a->n] = NULL;
	return 0;
}

/* One JSON object from QMP (they come one a line); events are skipped. -errno on EOF or
 * when the deadline passes. */
static int qmp_read(int fd, char *buf, size_t size, uint64_t deadline_ms, const char *want)
{
	size_t len = 0;
	for (;;) {
		char *nl;
		while ((nl = memchr(buf, '\n', len))) {
			size_t line = (size_t)(nl - buf) + 1;
			bool match = memmem(buf, line, want, strlen(want)) != NULL;
			bool error = memmem(buf, line, "\"error\"", 7) != NULL;
			if (match || error) {
				*nl = '\0';
				return error ? -EPROTO : 0;
			}
			memmove(buf, buf + line, len - line);
			len -= line;
		}
		if (len + 1 >= size)
			return -EMSGSIZE;
		uint64_t now = now_ms();
		if (now >= deadline_ms)
			return -ETIMEDOUT;
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int r = poll(&p, 1, (int)(deadline_ms - now));
		if (r < 0 && errno != EINTR)
			return -errno;
		if (r <= 0)
			continue;
		ssize_t n = read(fd, buf + len, size - 1 - len);
		if (n == 0)
			return -EPIPE;
		if (n < 0 && errno != EINTR && errno != EAGAIN)
			return -errno;
		if (n > 0)
			len += (size_t)n;
	}
}

static int qmp_handshake(int fd)
{
	char buf[8192];
	uint64_t deadline = now_ms() + QMP_TIMEOUT_MS;
	int r = qmp_read(fd, buf, sizeof(buf), deadline, "\"QMP\"");
	if (r < 0)
		return r;
	static const char caps[] = "{\"execute\": \"qmp_capabilities\"}\n";
	if ((r = write_all(fd, caps, sizeof(caps) - 1)) < 0)
		return r;
	return qmp_read(fd, buf, sizeof(buf), deadline, "\"return\"");
}

void vm_last_words(int run_fd, char *buf, size_t size)
{
	_cleanup_free_ char *log = NULL;
	size_t len = 0;
	buf[0] = '\0';
	if (read_file_at(run_fd, "qemu.log", 1u << 20, &log, &len) < 0 || len == 0)
		return;
	while (len > 0 && (log[len - 1] == '\n' || log[len - 1] == '\r'))
		len--;
	size_t start = len;
	while (start > 0 && log[start - 1] != '\n')
		start--;
	snprintf(buf, size, "%.*s", (int)(len - start), log + start);
}

static void write_vm_json(const struct vm_spec *spec, const struct vm *vm, const struct argv_builder *a,
			  const struct vm_kernel *kernel, const char *initramfs, const char *pvh)
{
	struct json_writer j;
	json_init(&j, true);
	json_object_begin(&j);
	json_kv_string(&j, "accel", vm->accel);
	if (spec->accel_fallback || vm->accel_fallback[0])
		json_kv_string(&j, "accel_fallback", spec->accel_fallback ? spec->accel_fallback : vm->accel_fallback);
	json_kv_string(&j, "machine", "microvm");
	/* "cgroup": QEMU is in the sandbox's cgroups. "none" (a user without a delegated cgroup):
	 * the guest's memory and vCPUs are what -m and -smp give it, and QEMU's own overhead
	 * (its code, device buffers, TCG's translation cache) has no bound but the user's rlimits. */
	json_kv_string(&j, "qemu_bounded_by", spec->in_cgroup ? "cgroup" : "none");
	json_kv_string(&j, "kernel", kernel->path);
	json_kv_string(&j, "kernel_version", kernel->version);
	/* "capsule": capsule's own kernel, every driver built in; "host": the host's, with modules. */
	json_kv_string(&j, "kernel_kind", kernel->builtin ? "capsule" : "host");
	/* "pvh": QEMU loaded an ELF at its PVH entry: a builtin kernel, or pvh_kernel, the
	 * bzImage's payload unpacked (kernel.c). */
	json_kv_string(&j, "kernel_entry", kernel->builtin || pvh ? "pvh" : "bzimage");
	if (pvh)
		json_kv_string(&j, "pvh_kernel", pvh);
	json_kv_string(&j, "initramfs", initramfs);
	json_kv_int(&j, "qemu_pid", vm->pid);
	if (spec->disk)
		json_kv_string(&j, "disk", spec->disk);
	/* One string, as a shell would show it; the arguments are also given one by one. */
	size_t total = 1;
	for (size_t i = 0; i < a->n; i++)
		total += strlen(a->v[i]) + 1;
	_cleanup_free_ char *line = calloc(1, total);
	for (size_t i = 0; line && i < a->n; i++) {
		if (i)
			strcat(line, " ");
		strcat(line, a->v[i]);
	}
	json_kv_string(&j, "qemu_command_line", line ? line : "");
	json_key(&j, "qemu_argv");
	json_array_begin(&j);
	for (size_t i = 0; i < a->n; i++)
		json_string(&j, a->v[i]);
	json_array_end(&j);
	json_object_end(&j);
	int e = 0;
	char *text = json_steal(&j, &e);
	if (text)
		write_file_atomic_at(spec->run_fd, "vm.json", text, strlen(text), 0600, false);
	free(text);
}

/* QEMU makes a file it is told to write with mode 0666 less the umask, and keeps the mode of
 * one that is there: made (or left by an older capsule) here first, a log stays 0600. */
static int open_private_log(int run_fd, const char *name)
{
	int fd = openat(run_fd, name, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd >= 0 && fchmod(fd, 0600) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static _Noreturn void qemu_child(const struct vm_spec *spec, int qmp_sock, int console_sock, int placed,
				 int unshared, pid_t parent, char *const *argv)
{
	shim_child_prepare(parent);
	/* Entered as root of the host, before anything else: a user namespace of our own would
	 * have no right over a namespace the host owns. Only QEMU is in it; the shim stays in
	 * the host's network, where its listeners are. */
	if (spec->net_ns_fd >= 0 && setns(spec->net_ns_fd, CLONE_NEWNET) < 0) {
		dprintf(2, "capsule-shim: QEMU joining the network namespace '%s': %s\n", spec->cfg->net_ns,
			strerror(errno));
		_exit(127);
	}
	/* A user's share: a user namespace the parent maps as a container's (dumpable meanwhile,
	 * or our /proc files would be root's), with a mount namespace of its own. */
	if (spec->deferred) {
		/* New credentials may clear both flags. */
		if (unshare(CLONE_NEWUSER | CLONE_NEWNS) < 0) {
			dprintf(unshared, "%s", strerror(errno));
			_exit(127);
		}
		prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
		if (getppid() != parent || prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) < 0 || write(unshared, "u", 1) != 1)
			_exit(127);
		close(unshared);
	}
	/* Not one allocation before the parent has put us in the sandbox's cgroups: its byte
	 * says so, EOF says the start failed. */
	char go;
	ssize_t k;
	while ((k = read(placed, &go, 1)) < 0 && errno == EINTR)
		;
	if (k != 1)
		_exit(127);
	if (spec->deferred) {
		prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
		int log = open_private_log(spec->run_fd, "qemu.log");
		if (log < 0 || dup2(log, 2) < 0 || vm_shares_enter(spec->deferred) < 0)
			_exit(127);
		close(log);
	}
	/* What QEMU makes in the run folder (the VNC socket, screendumps) is its owner's alone: a
	 * unix socket is connected to by whoever may write it. */
	umask(0077);
	/* QEMU asks for transparent huge pages on guest RAM (MADV_HUGEPAGE): each 2 MiB that the
	 * guest touches a byte of would then count whole, and an idle VM would hold several times
	 * the memory it uses. Kept across exec. */
	prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0);
	int log = open_private_log(spec->run_fd, "qemu.log");
	int null = open("/dev/null", O_RDONLY);
	if (log < 0 || null < 0 || dup2(null, 0) < 0 || dup2(log, 1) < 0 || dup2(log, 2) < 0)
		_exit(127);
	/* fds 3 to 5 may be taken by the very fds we move there: go through high numbers. */
	int agent = fcntl(spec->agent_sock, F_DUPFD, 100), qmp = fcntl(qmp_sock, F_DUPFD, 100);
	int console = fcntl(console_sock, F_DUPFD, 100);
	if (agent < 0 || qmp < 0 || console < 0 || dup2(agent, QEMU_AGENT_FD) < 0 || dup2(qmp, QEMU_QMP_FD) < 0 ||
	    dup2(console, QEMU_CONSOLE_FD) < 0)
		_exit(127);
	if (fds_cloexec_from(QEMU_CONSOLE_FD + 1) < 0)
		_exit(127);
	int capr = vm_qemu_limit_caps();
	if (capr < 0) {
		dprintf(2, "capsule-shim: limiting QEMU's capabilities: %s\n", strerror(-capr));
		_exit(127);
	}
	execvp(argv[0], argv);
	dprintf(2, "capsule-shim: exec '%s': %s\n", argv[0], strerror(errno));
	_exit(127);
}

static void close_pair(int p[2])
{
	for (int i = 0; i < 2; i++)
		if (p[i] >= 0)
			close(p[i]);
}

/* QEMU's child is in its user namespace (its byte on UNSHARED says so, else its reason): map
 * it as a container's, the user's ids 0.. (rootless.h). */
static int map_qemu_ids(pid_t pid, int unshared[2], capsule_error *err)
{
	close(unshared[1]);
	char why[128];
	ssize_t k;
	while ((k = read(unshared[0], why, sizeof(why) - 1)) < 0 && errno == EINTR)
		;
	close(unshared[0]);
	if (k != 1 || why[0] != 'u') {
		why[k > 0 ? k : 0] = '\0';
		return cap_err_plain(err, EPERM, "a user namespace for QEMU (the vm's share of host folders): %s",
				     k > 0 ? why : "its process died");
	}
	struct rootless_ids ids;
	rootless_ids(&ids);
	return rootless_map_ids(pid, &ids, err);
}

int vm_start(struct vm *vm, const struct vm_spec *spec, capsule_error *err)
{
	memset(vm, 0, sizeof(*vm));
	vm->pid = -1;
	vm->pidfd = vm->qmp_fd = -1;
	const struct capsule_config *cfg = spec->cfg;
	_cleanup_kernel_ struct vm_kernel kernel = { 0 };
	int r = vm_find_kernel(&kernel, err);
	if (r < 0)
		return r;
	unsigned long long min_mib = kernel.builtin ? VM_MIN_MEMORY_MIB_OWN_KERNEL : VM_MIN_MEMORY_MIB_HOST_KERNEL;
	if (cfg->memory_bytes && cfg->memory_bytes < (min_mib << 20))
		return cap_err_plain(err, EINVAL, "vm isolation with %s kernel needs at least %lluM of memory (given %llu bytes)",
				     kernel.builtin ? "capsule's" : "the host's", min_mib,
				     (unsigned long long)cfg->memory_bytes);
	if ((r = vm_pick_accel(spec->accel ? spec->accel : cfg->accel, vm->accel, vm->accel_fallback,
			       sizeof(vm->accel_fallback), err)) < 0)
		return r;
	_cleanup_free_ char *agent = NULL, *initramfs = NULL;
	if ((r = find_helper("capsule-agent", &agent, err)) < 0 || (r = vm_initramfs(&kernel, agent, &initramfs, err)) < 0)
		return r;
	/* What QEMU loads: a builtin kernel is already an ELF with a PVH entry; Debian's bzImage
	 * is unpacked to one where it can be, else booted as it is. */
	_cleanup_free_ char *pvh = NULL;
	if (!kernel.builtin)
		vm_kernel_pvh(kernel.path, kernel.version, &pvh);
	const char *boot_kernel = pvh ? pvh : kernel.path;
	char run_path[PATH_MAX];
	int rp = fd_path(spec->run_fd, run_path, sizeof(run_path), err);
	if (rp < 0)
		return rp;

	struct argv_builder a = { 0 };
	if ((r = build_argv(&a, spec, vm->accel, boot_kernel, kernel.builtin, initramfs, run_path, err)) < 0) {
		argv_free(&a);
		return r;
	}
	int qmp[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, qmp) < 0) {
		argv_free(&a);
		return cap_err(err, errno, "socketpair");
	}
	/* Once started, the console's copy ends by itself when its socket closes: here, or when
	 * QEMU exits. */
	_cleanup_close_ int console = -1;
	if ((r = vm_console_start(spec->run_fd, &console, err)) < 0) {
		close(qmp[0]);
		close(qmp[1]);
		argv_free(&a);
		return r;
	}
	int placed[2] = { -1, -1 }, unshared[2] = { -1, -1 };
	if (pipe2(placed, O_CLOEXEC) < 0 || (spec->deferred && pipe2(unshared, O_CLOEXEC) < 0)) {
		r = cap_err(err, errno, "pipe");
		close_pair(placed);
		close(qmp[0]);
		close(qmp[1]);
		argv_free(&a);
		return r;
	}
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid < 0) {
		r = cap_err(err, errno, "fork");
		close(placed[0]);
		close(placed[1]);
		close_pair(unshared);
		close(qmp[0]);
		close(qmp[1]);
		argv_free(&a);
		return r;
	}
	if (pid == 0)
		qemu_child(spec, qmp[1], console, placed[0], unshared[1], parent, a.v);
	close(placed[0]);
	close(qmp[1]);
	vm->pid = pid;
	vm->qmp_fd = qmp[0];
	r = spec->deferred ? map_qemu_ids(pid, unshared, err) : 0;
	if (r == 0 && spec->place)
		r = spec->place(pid, spec->place_payload, err);
	if (r == 0 && write(placed[1], "", 1) != 1)
		r = cap_err(err, errno, "starting QEMU");
	close(placed[1]);
	if (r < 0) {
		/* It never exec'd: EOF on its pipe ends it, the wait reaps it. */
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
		close(qmp[0]);
		vm->pid = -1;
		vm->qmp_fd = -1;
		argv_free(&a);
		return r;
	}
	vm->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (vm->pidfd < 0) {
		r = cap_err(err, errno, "pidfd_open of QEMU");
		vm_kill(vm);
		waitpid(pid, NULL, 0);
		argv_free(&a);
		return r;
	}
	write_vm_json(spec, vm, &a, &kernel, initramfs, pvh);
	argv_free(&a);
	/* A new QEMU (a revert restarts it): nothing the last one sent is left to be read. */
	qmp_forget();
	if ((r = qmp_handshake(vm->qmp_fd)) < 0) {
		char why[512];
		vm_kill(vm);
		waitpid(pid, NULL, 0);
		vm_last_words(spec->run_fd, why, sizeof(why));
		return cap_err_plain(err, -r == EPIPE ? ECHILD : -r, "QEMU did not start: %s",
				     why[0] ? why : strerror(-r));
	}
	return 0;
}

int vm_qmp(struct vm *vm, const char *command, capsule_error *err)
{
	if (vm->qmp_fd < 0)
		return cap_err_plain(err, EPIPE, "QMP %s: QEMU's monitor is closed", command);
	return qmp_execute(vm->qmp_fd, command, NULL, QMP_TIMEOUT_MS, NULL, err);
}

void vm_kill(struct vm *vm)
{
	if (vm->pid <= 0)
		return;
	if (vm->qmp_fd >= 0) {
		/* Asked first: QEMU then flushes and closes what it holds. Then, quit or not, it
		 * goes: a guest never decides how long its host waits. */
		static const char quit[] = "{\"execute\": \"quit\"}\n";
		(void)!send(vm->qmp_fd, quit, sizeof(quit) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (vm->pidfd >= 0) {
			struct pollfd p = { .fd = vm->pidfd, .events = POLLIN };
			poll(&p, 1, 1000);
		}
		close(vm->qmp_fd);
		vm->qmp_fd = -1;
	}
	if (vm->pidfd >= 0)
		sys_pidfd_send_signal(vm->pidfd, SIGKILL);
	else
		kill(vm->pid, SIGKILL);
}
