/* One command through the C API with the exec options a CLI does not give, for the security
 * suite (tests/security/test_exec_options.py):
 *
 *   exec_opts SANDBOX CAPS FILTER ARGV...
 *
 * CAPS: "-" for the sandbox's default, else the command's set in hex (caps_set, nothing
 * inheritable or ambient). FILTER: "-" for none, "close_range-eperm", "close_range-enosys" or
 * "close_range-kill": a process filter above capsule's own that answers close_range(2) so.
 * Prints the command's stdout and stderr as they came and exits with its status; a refused
 * start prints "refused ERRNO: MESSAGE" on stderr and exits 125. */
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>

#include <capsule.h>

#if defined(__x86_64__)
#define ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define ARCH AUDIT_ARCH_AARCH64
#endif

#include "check.h"

int main(int argc, char **argv)
{
	CHECK(argc >= 5, "usage: exec_opts SANDBOX CAPS|- FILTER|- ARGV...");
	capsule_error err = { 0 };
	capsule_sandbox *sb;
	CHECK(capsule_sandbox_open(&sb, argv[1], &err) == 0, "open %s: %s", argv[1], err.message);
	capsule_exec_options o = CAPSULE_EXEC_OPTIONS_INIT;
	o.argv = (const char *const *)argv + 4;
	if (strcmp(argv[2], "-")) {
		o.caps_set = true;
		o.caps = strtoull(argv[2], NULL, 16);
	}
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ARCH, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_close_range, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM), /* the action, set below */
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	if (strcmp(argv[3], "-")) {
		if (!strcmp(argv[3], "close_range-enosys"))
			f[5].k = SECCOMP_RET_ERRNO | ENOSYS;
		else if (!strcmp(argv[3], "close_range-kill"))
			f[5].k = SECCOMP_RET_KILL_PROCESS;
		else
			CHECK(!strcmp(argv[3], "close_range-eperm"), "unknown filter '%s'", argv[3]);
		o.seccomp_bpf = f;
		o.seccomp_len = sizeof(f);
	}
	capsule_exec_result r;
	int rc = capsule_exec(&r, sb, &o, NULL, 0, 1 << 20, &err);
	capsule_sandbox_free(sb);
	if (rc < 0) {
		fprintf(stderr, "refused %d: %s\n", -rc, err.message);
		return 125;
	}
	fwrite(r.stdout_buf, 1, r.stdout_len, stdout);
	fwrite(r.stderr_buf, 1, r.stderr_len, stderr);
	int status = r.status.exit_code;
	capsule_exec_result_free(&r);
	return status;
}
