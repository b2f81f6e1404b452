/* The vm isolation level: a QEMU microVM whose PID 1 is capsule-agent. The shim starts QEMU
 * as its child, hands it one end of a socketpair as the agent's virtio-serial port and one
 * as its QMP monitor, and from then on talks to the agent exactly as it does in a container.
 * docs/architecture.md, "vm isolation", says why each piece is the way it is. */
#ifndef CAPSULE_SHIM_VM_H
#define CAPSULE_SHIM_VM_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "capsule.h"
#include "internal.h"

struct vm_shares;

/* The virtio-serial port's name, as the guest sees it in /sys/class/virtio-ports/<p>/name. */
#define VM_AGENT_PORT_NAME "capsule.agent"
/* 9p mount tags: the host's /usr (and /bin, /lib*, /sbin where they are folders, not
 * symlinks) as "host-<name>", over the host image's root disk. */
#define VM_HOST_TAG_PREFIX "host-"
/* The agent's name in the initramfs, given to the kernel as rdinit=: PID 1 in the guest is then
 * called what it is called in a container (its comm, /proc/1/cmdline). */
#define VM_INIT_NAME "capsule-agent"
/* capsule's own guest kernel, installed beside the helpers (scripts/build-guest-kernel) */
#define VM_OWN_KERNEL_NAME "capsule-vmlinux"
/* x86's COMMAND_LINE_SIZE: the kernel keeps this much of -append, with its NUL. */
#define VM_KERNEL_CMDLINE_MAX 2048
#define VM_DEFAULT_MEMORY_BYTES (512ull << 20)
/* The least --memory a vm boots with, by kernel: Debian's holds about 45M and needs about 35M
 * more to reach our init (with 96M a guest booted with 5M free, with 64M never); capsule's own
 * holds about 21M, and with 64M a guest has about 40M free for its commands. */
#define VM_MIN_MEMORY_MIB_HOST_KERNEL 128ull
#define VM_MIN_MEMORY_MIB_OWN_KERNEL 64ull
/* The timer rate capsule's own kernel is built with (CONFIG_HZ_250 in vm/kernel/capsule.config):
 * the shim turns the host's TSC rate into loops_per_jiffy (lpj=) with it. */
#define VM_OWN_KERNEL_HZ 250u
/* QEMU runs in the sandbox's cgroups (vm/level.c): --memory is the guest's RAM, and
 * QEMU's own needs (TCG's code buffer, its heap, the 9p and block workers) come on top as an
 * allowance; its threads are counted, not the guest's processes, with a fixed bound. */
/* TCG's translation buffer, the largest thing QEMU holds after guest RAM: it fills as the guest
 * runs code it has not run before, to about 30M by the first command and up to whatever
 * tb-size allows after a few more (65M of 128M after five commands), and a full buffer is
 * flushed and refilled. 16M cost no measurable boot time (QEMU's CPU time to the first
 * command the same as with 128M; the kernel alone needs under 8M) and bounds a vm's TCG part
 * at 16M for its life; smaller ones slow the boot (4M: 1.5 times the CPU for the kernel alone). */
#define VM_TCG_CODE_BUFFER_MIB 16u
#define VM_QEMU_MEMORY_ALLOWANCE (384ull << 20)
#define VM_QEMU_PIDS_MAX 512u

struct vm {
	pid_t pid; /* QEMU, our child */
	int pidfd;
	int qmp_fd;
	char accel[8]; /* what it runs with: "kvm" or "tcg" */
	/* Why auto took TCG on a host whose KVM device is there but cannot run a guest ("" when
	 * it did not, or when the host has no KVM at all). */
	char accel_fallback[256];
};

struct vm_spec {
	int run_fd;                  /* run/<name>/: qemu.log, console.log, vm.json, vnc.sock */
	const struct capsule_config *cfg;
	const char *hostname;
	int agent_sock;              /* QEMU's end of the agent socketpair */
	const char *mounts_dir;      /* the host folders' share (shares.h), or NULL for none */
	/* A user's share with entries (shares.h): QEMU then runs as root of a user namespace of
	 * the user's ids, as a container's root does, and its child attaches them. NULL else. */
	const struct vm_shares *deferred;
	/* The root disk (disk.c): its qcow2, and how the guest uses it, VM_DISK_MODE_*, which
	 * reaches the agent as capsule.disk= on the kernel's command line. Required. */
	const char *disk;
	const char *disk_mode;
	/* Overrides the config's accel (NULL: the config's); with the reason, when auto fell
	 * back from KVM to TCG (vm/level.c), kept in vm.json. */
	const char *accel;
	const char *accel_fallback;
	/* Puts QEMU's process in the sandbox's cgroups (or fails the start), called while the
	 * child waits before its exec, so QEMU allocates nothing outside the sandbox's limits.
	 * NULL: left where the shim is. */
	int (*place)(pid_t pid, void *payload, capsule_error *err);
	void *place_payload;
	/* Whether place puts QEMU in a cgroup: a user's shim without a delegated cgroup has none,
	 * and QEMU is then bounded only by what it is given (-m, -smp). Said in vm.json. */
	bool in_cgroup;
	/* A network namespace to run QEMU in (a config's net_ns, opened and checked by the shim),
	 * or -1: QEMU's child enters it first, before its own user namespace, so libslirp's
	 * sockets are made there and the guest's traffic leaves through the namespace's owner's
	 * network (podman's, a pod's), not the host's. */
	int net_ns_fd;
	/* A resume from disk: QEMU waits stopped (-incoming defer, -S) for the memory state,
	 * with the same devices as the QEMU that saved it. */
	bool incoming;
};

/* The guest kernel a vm boots. */
struct vm_kernel {
	char *path;    /* the file QEMU loads */
	char *version; /* its release, as uname -r says it in the guest */
	/* capsule's own kernel (vm/kernel/capsule.config): every driver built in, an ELF with a
	 * PVH entry; no modules to ship and no bzImage to unpack. */
	bool builtin;
};

/* The kernel to boot: $CAPSULE_VM_KERNEL when set (a vmlinuz-<ver> with its modules, or an
 * ELF kernel with every driver built in); else capsule's own (capsule-vmlinux, found as the
 * helpers are); else the newest /boot/vmlinuz-<ver> with its /lib/modules/<ver>. */
int vm_find_kernel(struct vm_kernel *k, capsule_error *err);
void vm_kernel_free(struct vm_kernel *k);
#define _cleanup_kernel_ __attribute__((cleanup(vm_kernel_free)))
/* The release in the banner ("Linux version 6.1.0-capsule ...") of the ELF kernel at PATH;
 * -ENOEXEC when it is not a whole x86-64 ELF with a PVH entry note. */
int vm_kernel_elf_release(const char *path, char *release, size_t size);

/* The initramfs for kernel K with AGENT as /init and the modules the agent loads (none for a
 * builtin kernel), built once into $CAPSULE_HOME/vm/ (keyed by version and agent digest) and
 * renamed into place. */
int vm_initramfs(const struct vm_kernel *k, const char *agent, char **path, capsule_error *err);
/* The module groups beyond core and pci that CFG's devices need, comma separated, into BUF
 * ("" for none): the guest loads them as the kernel command line's capsule.modules= names them. */
void vm_module_groups(const struct capsule_config *cfg, char *buf, size_t size);

/* The kernel BZIMAGE unpacked to an ELF with a PVH entry, cached in $CAPSULE_HOME/vm/ (see
 * kernel.c); *elf malloc'd. -errno when it cannot be had: the caller boots the bzImage. */
int vm_kernel_pvh(const char *bzimage, const char *version, char **elf);

/* 0 when the KVM device DEV (/dev/kvm) can run an ordinary guest kernel, as far as the host
 * tells before a boot (kvm.c); else -errno and why not, one line, into WHY. */
int vm_kvm_probe(const char *dev, char *why, size_t size);
/* kvm when vm_kvm_probe passes (and ACCEL allows it), else tcg, with why into FALLBACK when
 * auto passed over a KVM device that is there; -errno with a message when ACCEL demands kvm
 * and it cannot be had. */
int vm_pick_accel(const char *accel, char out[8], char *fallback, size_t fallback_size, capsule_error *err);

/* The guest's serial console (console.c): run/<name>/VM_CONSOLE_LOG, 0600, its first
 * VM_CONSOLE_LOG_MAX_BYTES and a line saying the rest was dropped. */
#define VM_CONSOLE_LOG "console.log"
#define VM_CONSOLE_LOG_MAX_BYTES (1u << 20)
/* Make the log (truncated) and start its copy; *QEMU_END gets the socket QEMU writes the
 * console to (O_CLOEXEC, the caller's to hand on and close). */
int vm_console_start(int run_fd, int *qemu_end, capsule_error *err);
/* The copy itself: FROM into LOG until EOF, at most MAX bytes of it and then the line that
 * says so, the rest read and dropped. Returns the bytes of FROM kept. */
size_t vm_console_copy(int from, int log, size_t max);

/* Start QEMU; on return it runs with the agent channel and QMP connected. */
int vm_start(struct vm *vm, const struct vm_spec *spec, capsule_error *err);
/* One QMP command with no arguments ("stop", "cont"), waited for. */
int vm_qmp(struct vm *vm, const char *command, capsule_error *err);
/* Ask QEMU to quit over QMP, give it a moment, then SIGKILL. It stays to be reaped. */
void vm_kill(struct vm *vm);
/* The last line QEMU wrote to its log (why it exited), into BUF. */
void vm_last_words(int run_fd, char *buf, size_t size);

/* ---- pause to disk (migrate.c) ---- */

/* In run/<name>/: the memory state of a vm paused to disk (QEMU's migration stream: the
 * guest's RAM less its zero pages, and its devices' state), and the one being written. */
#define VM_STATE_FILE "memory.state"
#define VM_STATE_TMP "memory.state.tmp"
/* What the devices' state may add to the guest's RAM in the stream (a few hundred KiB seen). */
#define VM_STATE_DEVICE_BYTES (64ull << 20)
/* The most a state file of CFG's guest may take: its RAM and VM_STATE_DEVICE_BYTES. */
uint64_t vm_state_max_bytes(const struct capsule_config *cfg);
/* -ENOSPC with a message when the folder RUN_FD has less than MAX_BYTES free. */
int vm_state_space_check(int run_fd, uint64_t max_bytes, capsule_error *err);
/* The stopped guest's memory and devices into RUN_FD/VM_STATE_FILE (written as VM_STATE_TMP,
 * fsync'd, renamed), at most MAX_BYTES of it; *BYTES gets its size. QEMU is left
 * postmigrate (cont runs it again); on failure no file is left. */
int vm_migrate_to_file(struct vm *vm, int run_fd, uint64_t max_bytes, uint64_t *bytes, capsule_error *err);
/* A QEMU started with spec.incoming loads RUN_FD/VM_STATE_FILE; it stays stopped (cont). */
int vm_migrate_from_file(struct vm *vm, int run_fd, capsule_error *err);

/* ---- the root disk (disk.c) ---- */

#define VM_DISK_FILE "disk.qcow2"         /* in run/<name>/ */
#define VM_DISK_SERIAL "capsule-root"     /* virtio-blk serial the agent finds it by */
#define VM_DISK_MODE_ROOT "root"          /* the disk is the whole root (an OCI image) */
#define VM_DISK_MODE_HOST "root+host"     /* the root, with the host's /usr etc. over 9p on it */
#define VM_DISK_MIN_BYTES (64ull << 20)
#define VM_DISK_DEFAULT_BYTES (2ull << 30)

/* The layer folders LAYERS (bottom first) flattened into an ext4 file, built once per
 * stack into $CAPSULE_HOME/vm/ and renamed into place; its path in *PATH (malloc'd). */
int vm_rootfs(char *const *layers, size_t n, char **path, capsule_error *err);
/* run/<name>/disk.qcow2 over BASE, WANT_BYTES (0: the default) large, unless it is there
 * already; its absolute path in *PATH. A size smaller than BASE is refused (IMAGE names it). */
int vm_disk_overlay(int run_fd, const char *run_path, const char *base, uint64_t want_bytes, const char *image,
		    char **path, capsule_error *err);
/* Run the QMP COMMAND (ARGUMENTS: a JSON object's text, or NULL) on the monitor FD after the
 * handshake and wait up to TIMEOUT_MS for its answer; events are skipped. *RET (may be NULL)
 * gets the raw JSON text of the answer's "return", malloc'd. QEMU's own error is EIO with its
 * description (qmp.c). */
int qmp_execute(int fd, const char *command, const char *arguments, int timeout_ms, char **ret, capsule_error *err);
/* The same with PASS_FD sent along (SCM_RIGHTS), for getfd. */
int qmp_execute_fd(int fd, const char *command, const char *arguments, int pass_fd, int timeout_ms, char **ret,
		   capsule_error *err);
/* Drop what qmp_execute had read past its last answer: the monitor is a new QEMU's. */
void qmp_forget(void);

/* The display (display.c; --display): QEMU's extra arguments (a virtio GPU, keyboard and
 * tablet), NULL-terminated and static, or NULL without a display; the words the guest's kernel
 * command line gets, into OUT ("" without one). Its VNC server listens on
 * run/<name>/VM_VNC_SOCKET only. */
#define VM_VNC_SOCKET "vnc.sock"
const char *const *vm_display_qemu_args(const struct capsule_config *cfg);
void vm_display_cmdline(const struct capsule_config *cfg, char *out, size_t size);
/* After QEMU started: check with QMP that its VNC server is on the socket, and only there, and
 * write run/<name>/display.json. */
int vm_display_start(struct vm *vm, int run_fd, capsule_error *err);
/* A SCREENSHOT or INPUT request (header H, PAYLOAD) for sandbox CFG: its OK frame encoded into W,
 * or -errno with ERR (a container, a vm without a display, a bad key name, ...). */
struct cp_header;
struct cp_writer;
int vm_display_request(struct vm *vm, const struct capsule_config *cfg, int run_fd, const struct cp_header *h,
		       const uint8_t *payload, struct cp_writer *w, capsule_error *err);

#endif
