/* capsule's default seccomp filter, modelled on Docker's default profile
 * (moby profiles/seccomp/default.json) and built with libseccomp.
 *
 * Exported as classic BPF rather than loaded with seccomp_load(), so that the caller can build
 * it early, while an error can still be reported cleanly, and install it with two plain
 * syscalls at the last moment before exec.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <seccomp.h>

#include "seccomp_policy.h"
#include "util.h"

#ifndef SCMP_VER_MAJOR
#error "<seccomp.h> did not reach libseccomp's header"
#endif

/* The kernel refuses longer programs (BPF_MAXINSNS); catching it here gives a better error
 * than EINVAL from seccomp(2) inside the sandbox. */
#define SECCOMP_MAX_BYTES (BPF_MAXINSNS * sizeof(struct sock_filter))

/* Arguments the kernel declares int or unsigned int are truncated to their low 32 bits, but
 * seccomp sees the full 64-bit register. Comparing all 64 bits lets a caller set a high bit
 * to slip a blocked value past the filter (CVE-2017-5226 / CVE-2019-10063 for TIOCSTI), so
 * such arguments are only ever compared through this mask. */
#define SECCOMP_LOW32 0xFFFFFFFFULL

#ifndef CLONE_NEWCGROUP
#define CLONE_NEWCGROUP 0x02000000
#endif
#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif
#ifndef TIOCLINUX
#define TIOCLINUX 0x541C
#endif

/* Namespace creation is the way in to most of the kernel that root in a user namespace can
 * reach (mounts, netfilter, ...); the sandbox's namespaces are all made before the filter. */
#define SECCOMP_CLONE_NS_FLAGS                                                            \
	(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID |       \
	 CLONE_NEWNET | CLONE_NEWCGROUP)

/* Allowed whatever their arguments: Docker's unconditional list, less what we deny below,
 * plus syscalls newer than it that are no more dangerous than ones already here. Names this
 * libseccomp or this architecture does not know are skipped, and so fall to the default
 * ENOSYS. */
static const char *const seccomp_allowed[] = {
	"accept", "accept4", "access", "alarm", "arch_prctl", "bind", "brk", "cachestat",
	"capget", "capset", "chdir", "chown", "chroot", "clock_getres", "clock_gettime",
	"clock_nanosleep", "close", "close_range", "connect", "copy_file_range", "dup",
	"dup2", "dup3", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old",
	"epoll_pwait", "epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2",
	"execve", "execveat", "exit", "exit_group", "faccessat", "faccessat2", "fadvise64",
	"fallocate", "fanotify_mark", "fchdir", "fchown",
	"fchownat", "fcntl", "fdatasync", "fgetxattr", "flistxattr", "flock", "fork",
	"fremovexattr", "fsetxattr", "fstat", "fstatfs", "fsync", "ftruncate", "futex",
	"futex_requeue", "futex_wait", "futex_waitv", "futex_wake", "futimesat", "getcpu",
	"getcwd", "getdents", "getdents64", "getegid", "geteuid", "getgid", "getgroups",
	"getitimer", "getpeername", "getpgid", "getpgrp", "getpid", "getppid", "getpriority",
	"getrandom", "getresgid", "getresuid", "getrlimit", "get_robust_list", "getrusage",
	"getsid", "getsockname", "getsockopt", "get_thread_area", "gettid", "gettimeofday",
	"getuid", "getxattr", "getxattrat", "inotify_add_watch", "inotify_init", "inotify_init1",
	"inotify_rm_watch", "io_cancel", "io_destroy", "io_getevents", "io_pgetevents",
	"ioprio_get", "ioprio_set", "io_setup", "io_submit", "kill", "landlock_add_rule",
	"landlock_create_ruleset", "landlock_restrict_self", "lchown", "lgetxattr", "link",
	"linkat", "listen", "listxattr", "listxattrat", "llistxattr", "lremovexattr", "lseek",
	"lsetxattr", "lstat", "madvise", "map_shadow_stack", "membarrier", "memfd_create",
	"memfd_secret", "mincore", "mkdir", "mkdirat", "mlock", "mlock2",
	"mlockall", "mmap", "modify_ldt", "mprotect", "mq_getsetattr", "mq_notify", "mq_open",
	"mq_timedreceive", "mq_timedsend", "mq_unlink", "mremap", "mseal", "msgctl", "msgget",
	"msgrcv", "msgsnd", "msync", "munlock", "munlockall", "munmap", "nanosleep",
	"newfstatat", "pause", "pidfd_open", "pidfd_send_signal",
	"pipe", "pipe2", "pkey_alloc", "pkey_free", "pkey_mprotect", "poll", "ppoll", "prctl",
	"pread64", "preadv", "preadv2", "prlimit64", "process_mrelease", "pselect6", "pwrite64",
	"pwritev", "pwritev2", "read", "readahead", "readlink", "readlinkat", "readv",
	"recvfrom", "recvmmsg", "recvmsg", "remap_file_pages", "removexattr", "removexattrat",
	"rename", "renameat", "renameat2", "restart_syscall", "rmdir", "rseq", "rt_sigaction",
	"rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend",
	"rt_sigtimedwait", "rt_tgsigqueueinfo", "sched_getaffinity", "sched_getattr",
	"sched_getparam", "sched_get_priority_max", "sched_get_priority_min",
	"sched_getscheduler", "sched_rr_get_interval", "sched_setaffinity", "sched_setattr",
	"sched_setparam", "sched_setscheduler", "sched_yield", "seccomp", "select", "semctl",
	"semget", "semop", "semtimedop", "sendfile", "sendmmsg", "sendmsg", "sendto",
	"setfsgid", "setfsuid", "setgid", "setgroups", "setitimer", "setpgid", "setpriority",
	"setregid", "setresgid", "setresuid", "setreuid", "setrlimit", "set_robust_list",
	"setsid", "setsockopt", "set_thread_area", "set_tid_address", "setuid", "setxattr",
	"setxattrat", "shmat", "shmctl", "shmdt", "shmget", "shutdown", "sigaltstack",
	"signalfd", "signalfd4", "socketpair", "splice", "stat", "statfs", "statx", "symlink",
	"symlinkat", "sync", "sync_file_range", "syncfs", "sysinfo", "tee", "tgkill", "time",
	"timer_create", "timer_delete", "timer_getoverrun", "timer_gettime", "timer_settime",
	"timerfd_create", "timerfd_gettime", "timerfd_settime", "times", "tkill", "truncate",
	"umask", "uname", "unlink", "unlinkat", "uretprobe", "utime", "utimensat", "utimes",
	"vfork", "vmsplice", "wait4", "waitid", "write", "writev",
};

/* EPERM, not the default ENOSYS: these exist, and a program that tries one should be told it
 * may not, rather than fall back to some other way of doing the same thing. Most are here
 * because Docker allows them only with a capability the sandbox does not get; the others
 * reach kernel code that sandboxes have broken out through. */
static const char *const seccomp_denied[] = {
	/* mounts and the new mount API: the sandbox's view of the file system is fixed */
	"mount", "umount", "umount2", "pivot_root", "fsopen", "fsconfig", "fsmount", "fspick",
	"open_tree", "open_tree_attr", "move_mount", "mount_setattr",
	/* new namespaces (clone is filtered by flag below) */
	"unshare", "setns",
	/* io_uring ops are not seen by seccomp at all, so they would bypass this filter */
	"io_uring_setup", "io_uring_enter", "io_uring_register",
	/* other processes' memory and files; pidfd_getfd is the pidfd form of ptrace's reach */
	"ptrace", "process_vm_readv", "process_vm_writev", "process_madvise", "kcmp",
	"pidfd_getfd",
	/* file handles walk around the mount tree (the "shocker" escape) */
	"open_by_handle_at", "name_to_handle_at",
	/* large kernel attack surface with a history of exploits */
	"bpf", "perf_event_open", "userfaultfd", "keyctl", "add_key", "request_key",
	"fanotify_init", "lookup_dcookie",
	/* host-wide state: modules, kexec, reboot, swap, quotas, accounting, logs */
	"init_module", "finit_module", "delete_module", "create_module", "get_kernel_syms",
	"query_module", "kexec_load", "kexec_file_load", "reboot", "swapon", "swapoff",
	"quotactl", "quotactl_fd", "acct", "syslog", "vhangup", "nfsservctl",
	/* the clock is not namespaced. adjtimex sets it as well as clock_adjtime does (glibc's
	 * adjtimex() is clock_adjtime(CLOCK_REALTIME) anyway), so both go */
	"settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
	/* names for the host, if the UTS namespace were ever shared */
	"sethostname", "setdomainname",
	/* raw hardware access */
	"iopl", "ioperm", "vm86", "vm86old",
	/* NUMA placement: Docker wants CAP_SYS_NICE for all of these */
	"get_mempolicy", "set_mempolicy", "set_mempolicy_home_node", "mbind", "move_pages",
	"migrate_pages",
	/* obsolete interfaces nothing current uses */
	"uselib", "ustat", "sysfs", "_sysctl",
};

/* The personas Docker allows: PER_LINUX, PER_LINUX32, UNAME26 with each, and 0xffffffff,
 * which only queries. Others switch on old ABI quirks such as READ_IMPLIES_EXEC. */
static const uint32_t seccomp_personas[] = { 0x0, 0x8, 0x20000, 0x20008, 0xffffffff };

/* TIOCSTI pushes input into the terminal, which may be the caller's, outside the sandbox
 * (CVE-2017-5226); TIOCLINUX can do the same through the console's selection buffer. */
static const uint32_t seccomp_bad_ioctls[] = { TIOCSTI, TIOCLINUX };

/* vsock is not in the network namespace: from here it reaches the host and any VM sandboxes'
 * agents. Docker blocks it too. */
static const uint32_t seccomp_bad_families[] = { AF_VSOCK };

static void seccomp_ctx_releasep(scmp_filter_ctx *ctx)
{
	if (*ctx)
		seccomp_release(*ctx);
}

static int seccomp_rc_errno(int r)
{
	return r < 0 ? -r : EINVAL;
}

/* The number of NAME for the native architecture, or -1 when there is none: libseccomp does
 * not know the name, or gives a negative pseudo-number for a syscall this architecture
 * lacks (rules for those are silently dropped). */
static int seccomp_nr(const char *name)
{
	int nr = seccomp_syscall_resolve_name(name);

	return nr < 0 ? -1 : nr;
}

static int seccomp_add_names(scmp_filter_ctx ctx, uint32_t action, const char *const *names,
			     size_t n, capsule_error *err)
{
	for (size_t i = 0; i < n; i++) {
		int nr = seccomp_nr(names[i]);
		if (nr < 0)
			continue;
		int r = seccomp_rule_add(ctx, action, nr, 0);
		if (r < 0)
			return cap_err(err, seccomp_rc_errno(r), "seccomp: adding a rule for '%s'",
				       names[i]);
	}
	return 0;
}

/* Does any of VALS start with the bits WANT under MASK? */
static bool seccomp_prefix_used(const uint32_t *vals, size_t n, uint32_t mask, uint32_t want)
{
	for (size_t i = 0; i < n; i++)
		if ((vals[i] & mask) == want)
			return true;
	return false;
}

/*
 * Add ACTION rules for syscall NR that match exactly when the low 32 bits of argument ARG are
 * none of VALS. libseccomp has no masked "not equal", and an unconditional rule for a
 * syscall silently swallows that syscall's conditional rules, so the complement is spelled
 * out: in a binary trie of VALS, every subtree that holds none of them is one masked compare
 * of the bits above its root. The rules never match a value in VALS, so rules with another
 * action for those values can sit beside them in any order. At most 32 per value.
 */
static int seccomp_add_except(scmp_filter_ctx ctx, uint32_t action, const char *name,
			      unsigned int arg, const uint32_t *vals, size_t n, capsule_error *err)
{
	int nr = seccomp_nr(name);

	if (nr < 0)
		return 0;
	for (size_t i = 0; i < n; i++) {
		for (int bit = 31; bit >= 0; bit--) {
			uint32_t mask = UINT32_MAX << bit;
			uint32_t want = (vals[i] ^ (UINT32_C(1) << bit)) & mask;

			if (seccomp_prefix_used(vals, n, mask, want))
				continue;
			/* an earlier value on the same branch has added this one */
			if (seccomp_prefix_used(vals, i, mask, vals[i] & mask))
				continue;
			int r = seccomp_rule_add(ctx, action, nr, 1,
						 SCMP_CMP(arg, SCMP_CMP_MASKED_EQ, mask, want));
			if (r < 0)
				return cap_err(err, seccomp_rc_errno(r),
					       "seccomp: adding a rule for '%s'", name);
		}
	}
	return 0;
}

/* ACTION for syscall NAME when the low 32 bits of argument ARG are one of VALS. */
static int seccomp_add_values(scmp_filter_ctx ctx, uint32_t action, const char *name,
			      unsigned int arg, const uint32_t *vals, size_t n, capsule_error *err)
{
	int nr = seccomp_nr(name);

	if (nr < 0)
		return 0;
	for (size_t i = 0; i < n; i++) {
		int r = seccomp_rule_add(ctx, action, nr, 1,
					 SCMP_CMP(arg, SCMP_CMP_MASKED_EQ, SECCOMP_LOW32, vals[i]));
		if (r < 0)
			return cap_err(err, seccomp_rc_errno(r), "seccomp: adding a rule for '%s'",
				       name);
	}
	return 0;
}

static int seccomp_add_clone(scmp_filter_ctx ctx, capsule_error *err)
{
	/* clone's flags are unsigned long and arg0 on x86_64 and arm64 (not on s390) */
	int r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1,
				 SCMP_A0(SCMP_CMP_MASKED_EQ, SECCOMP_CLONE_NS_FLAGS, 0));
	if (r < 0)
		return cap_err(err, seccomp_rc_errno(r), "seccomp: adding a rule for 'clone'");

	/* one rule per flag, as an unconditional EPERM would swallow the ALLOW above */
	for (unsigned int bit = 0; bit < 32; bit++) {
		uint64_t flag = UINT64_C(1) << bit;

		if (!(SECCOMP_CLONE_NS_FLAGS & flag))
			continue;
		r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
				     SCMP_A0(SCMP_CMP_MASKED_EQ, flag, flag));
		if (r < 0)
			return cap_err(err, seccomp_rc_errno(r),
				       "seccomp: adding a rule for 'clone'");
	}

	/* clone3 passes its flags in memory, where seccomp cannot look. ENOSYS, not EPERM,
	 * makes glibc fall back to clone, whose flags the rules above check. It is the default
	 * action already (libseccomp refuses a rule that repeats it with EACCES), but should
	 * not change if the default does. */
	r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
	if (r < 0 && r != -EACCES)
		return cap_err(err, seccomp_rc_errno(r), "seccomp: adding a rule for 'clone3'");
	return 0;
}

/* Every call that gives a file its mode, with the argument that carries the mode and, for the
 * opens, the one that carries the flags (-1: none). */
static const struct seccomp_mode_call {
	const char *name;
	int mode_arg, flags_arg;
} seccomp_mode_calls[] = {
	{ "chmod", 1, -1 },  { "fchmod", 1, -1 }, { "fchmodat", 2, -1 }, { "fchmodat2", 2, -1 },
	{ "creat", 1, -1 },  { "mknod", 1, -1 },  { "mknodat", 2, -1 },  { "open", 2, 1 },
	{ "openat", 3, 2 },
};

#define SECCOMP_SETID_BITS ((uint64_t)(S_ISUID | S_ISGID))
/* O_TMPFILE without its O_DIRECTORY half, which plain directory opens carry too. */
#define SECCOMP_O_TMPFILE_BIT ((uint64_t)(O_TMPFILE & ~O_DIRECTORY))

/*
 * No set-uid or set-gid bit can be given to a file by a command (EPERM). Inside the sandbox
 * such a bit is worth nothing (no_new_privs), but a file in a bind, a hot mount or a volume is
 * also a host file, and sandbox root writes there as the host user who made the sandbox:
 * chmod 4755 would hand that user's privilege to whoever on the host runs it. Refusing the
 * bit at the syscall holds for every host-backed mount at once, whatever the mount. An open
 * is refused only when it creates (O_CREAT, O_TMPFILE): a plain open's mode is unused.
 * openat2 carries its mode in memory, out of a filter's sight, so it is not allowed (ENOSYS:
 * libc and programs fall back to openat). A name this libseccomp does not know (fchmodat2 in
 * older ones) gets no rule and so the default ENOSYS, and libc falls back to fchmodat.
 */
static int seccomp_add_mode_call(scmp_filter_ctx ctx, const struct seccomp_mode_call *c, capsule_error *err)
{
	int nr = seccomp_nr(c->name);
	if (nr < 0)
		return 0;
	const uint64_t bits[] = { S_ISUID, S_ISGID };
	int r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1,
				 SCMP_CMP((unsigned)c->mode_arg, SCMP_CMP_MASKED_EQ, SECCOMP_SETID_BITS, 0));
	if (r == 0 && c->flags_arg < 0) {
		for (size_t i = 0; r == 0 && i < ARRAY_SIZE(bits); i++)
			r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 1,
					     SCMP_CMP((unsigned)c->mode_arg, SCMP_CMP_MASKED_EQ, bits[i], bits[i]));
	} else if (r == 0) {
		const uint64_t creating[] = { O_CREAT, SECCOMP_O_TMPFILE_BIT };
		r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1,
				     SCMP_CMP((unsigned)c->flags_arg, SCMP_CMP_MASKED_EQ, O_CREAT | SECCOMP_O_TMPFILE_BIT, 0));
		for (size_t f = 0; r == 0 && f < ARRAY_SIZE(creating); f++)
			for (size_t i = 0; r == 0 && i < ARRAY_SIZE(bits); i++)
				r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 2,
						     SCMP_CMP((unsigned)c->flags_arg, SCMP_CMP_MASKED_EQ, creating[f], creating[f]),
						     SCMP_CMP((unsigned)c->mode_arg, SCMP_CMP_MASKED_EQ, bits[i], bits[i]));
	}
	if (r < 0)
		return cap_err(err, seccomp_rc_errno(r), "seccomp: adding a rule for '%s'", c->name);
	return 0;
}

static int seccomp_add_rules(scmp_filter_ctx ctx, capsule_error *err)
{
	int r;

	r = seccomp_add_names(ctx, SCMP_ACT_ALLOW, seccomp_allowed, ARRAY_SIZE(seccomp_allowed),
			      err);
	if (r < 0)
		return r;
	r = seccomp_add_names(ctx, SCMP_ACT_ERRNO(EPERM), seccomp_denied,
			      ARRAY_SIZE(seccomp_denied), err);
	if (r < 0)
		return r;
	r = seccomp_add_clone(ctx, err);
	if (r < 0)
		return r;
	for (size_t i = 0; i < ARRAY_SIZE(seccomp_mode_calls); i++)
		if ((r = seccomp_add_mode_call(ctx, &seccomp_mode_calls[i], err)) < 0)
			return r;

	r = seccomp_add_values(ctx, SCMP_ACT_ERRNO(EPERM), "ioctl", 1, seccomp_bad_ioctls,
			       ARRAY_SIZE(seccomp_bad_ioctls), err);
	if (r < 0)
		return r;
	r = seccomp_add_except(ctx, SCMP_ACT_ALLOW, "ioctl", 1, seccomp_bad_ioctls,
			       ARRAY_SIZE(seccomp_bad_ioctls), err);
	if (r < 0)
		return r;

	r = seccomp_add_values(ctx, SCMP_ACT_ERRNO(EPERM), "socket", 0, seccomp_bad_families,
			       ARRAY_SIZE(seccomp_bad_families), err);
	if (r < 0)
		return r;
	r = seccomp_add_except(ctx, SCMP_ACT_ALLOW, "socket", 0, seccomp_bad_families,
			       ARRAY_SIZE(seccomp_bad_families), err);
	if (r < 0)
		return r;

	r = seccomp_add_values(ctx, SCMP_ACT_ALLOW, "personality", 0, seccomp_personas,
			       ARRAY_SIZE(seccomp_personas), err);
	if (r < 0)
		return r;
	return seccomp_add_except(ctx, SCMP_ACT_ERRNO(EPERM), "personality", 0, seccomp_personas,
				  ARRAY_SIZE(seccomp_personas), err);
}

static int seccomp_export_buf(scmp_filter_ctx ctx, uint8_t **out, size_t *out_len,
			      capsule_error *err)
{
	_cleanup_close_ int fd = memfd_create("capsule-seccomp", MFD_CLOEXEC);
	if (fd < 0)
		return cap_err(err, errno, "seccomp: memfd_create");

	int r = seccomp_export_bpf(ctx, fd);
	if (r < 0)
		return cap_err(err, seccomp_rc_errno(r), "seccomp: exporting the filter");

	struct stat st;
	if (fstat(fd, &st) < 0)
		return cap_err(err, errno, "seccomp: fstat of the exported filter");
	if (st.st_size <= 0 || (size_t)st.st_size % sizeof(struct sock_filter) != 0)
		return cap_err(err, EINVAL, "seccomp: exported filter has %lld bytes",
			       (long long)st.st_size);
	if ((size_t)st.st_size > SECCOMP_MAX_BYTES)
		return cap_err(err, E2BIG, "seccomp: exported filter has %lld bytes, more than %zu",
			       (long long)st.st_size, (size_t)SECCOMP_MAX_BYTES);

	size_t len = (size_t)st.st_size;
	_cleanup_free_ uint8_t *buf = malloc(len);
	if (!buf)
		return cap_err(err, ENOMEM, "seccomp: %zu bytes for the filter", len);
	if (lseek(fd, 0, SEEK_SET) < 0)
		return cap_err(err, errno, "seccomp: rewinding the exported filter");
	r = read_all(fd, buf, len);
	if (r < 0)
		return cap_err(err, -r, "seccomp: reading back the exported filter");

	*out = steal_ptr(buf);
	*out_len = len;
	return 0;
}

int seccomp_default_bpf(uint8_t **out, size_t *out_len, capsule_error *err)
{
	*out = NULL;
	*out_len = 0;

	/* ENOSYS for anything not named: a syscall newer than this list looks to libc like an
	 * older kernel, and libc falls back to the old way, which this filter does know. */
	_cleanup_(seccomp_ctx_releasep) scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ERRNO(ENOSYS));
	if (!ctx)
		return cap_err(err, ENOMEM, "seccomp: seccomp_init");

	/* Only the native ABI is in the filter. On x86_64 a process can also make i386
	 * syscalls (int 0x80) and, where the kernel has it, x32 ones (numbers with bit 30 set);
	 * each has its own numbers and argument layout, a classic way around filters written
	 * for one ABI. Nothing in a sandbox needs them, so they kill the process rather than
	 * get rules of their own that would have to be kept in step. */
	int r = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
	if (r < 0)
		return cap_err(err, seccomp_rc_errno(r), "seccomp: setting the bad-arch action");

#if SCMP_VER_MAJOR > 2 || (SCMP_VER_MAJOR == 2 && SCMP_VER_MINOR >= 5)
	/* A binary search over syscall numbers instead of a linear scan of a few hundred. This
	 * only changes speed, so a libseccomp that refuses it is fine. */
	(void)seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2);
#endif

	r = seccomp_add_rules(ctx, err);
	if (r < 0)
		return r;
	return seccomp_export_buf(ctx, out, out_len, err);
}
