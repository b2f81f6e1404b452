/* One command through the C API with the exec options a CLI does not give, for the security
 * suite (tests/security/test_exec_caps.py, test_fds.py):
 *
 *   exec_opts SANDBOX CAPS FILTER ARGV...
 *
 * CAPS: "-" for the sandbox's default, else the command's set in hex (caps_set, nothing
 * inheritable or ambient); "last": the default set, the command run with `last` (its
 * connection the command's alone, closed by the shim at its end), then once more on the same
 * handle without it, which must open a new connection. FILTER: "-" for none, "close_range-eperm", "close_range-enosys" or
 * "close_range-kill": a process filter above capsule's own that answers close_range(2) so.
 * Prints the command's stdout and stderr as they came and exits with its status; a refused
 * start prints "refused ERRNO: MESSAGE" on stderr and exits 125. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <capsule.h>

#include "check.h"
#include "close_range_filter.h"

int main(int argc, char **argv)
{
	CHECK(argc >= 5, "usage: exec_opts SANDBOX CAPS|- FILTER|- ARGV...");
	capsule_error err = { 0 };
	capsule_sandbox *sb;
	CHECK(capsule_sandbox_open(&sb, argv[1], &err) == 0, "open %s: %s", argv[1], err.message);
	capsule_exec_options o = CAPSULE_EXEC_OPTIONS_INIT;
	o.argv = (const char *const *)argv + 4;
	bool last = !strcmp(argv[2], "last");
	o.last = last;
	if (strcmp(argv[2], "-") && !last) {
		o.caps_set = true;
		o.caps = strtoull(argv[2], NULL, 16);
	}
	struct sock_filter f[CLOSE_RANGE_FILTER_LEN];
	if (strcmp(argv[3], "-")) {
		if (!strcmp(argv[3], "close_range-enosys"))
			close_range_filter(f, SECCOMP_RET_ERRNO | ENOSYS);
		else if (!strcmp(argv[3], "close_range-kill"))
			close_range_filter(f, SECCOMP_RET_KILL_PROCESS);
		else if (!strcmp(argv[3], "close_range-eperm"))
			close_range_filter(f, SECCOMP_RET_ERRNO | EPERM);
		else
			CHECK(false, "unknown filter '%s'", argv[3]);
		o.seccomp_bpf = f;
		o.seccomp_len = sizeof(f);
	}
	capsule_exec_result r;
	int rc = capsule_exec(&r, sb, &o, NULL, 0, 1 << 20, &err);
	if (rc >= 0 && last) {
		fwrite(r.stdout_buf, 1, r.stdout_len, stdout);
		capsule_exec_result_free(&r);
		o.last = false;
		rc = capsule_exec(&r, sb, &o, NULL, 0, 1 << 20, &err);
	}
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
