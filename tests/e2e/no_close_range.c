/* Run a program under a seccomp filter that answers close_range(2) with ENOSYS, as an older
 * kernel or an older container runtime's profile would (crun's no_openat2 trick): everything it
 * starts inherits the filter, so each place that closes fds before an exec must fall back.
 *
 *   no_close_range PROGRAM [ARGS...] */
#include <errno.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "close_range_filter.h"

int main(int argc, char **argv)
{
	if (argc < 2) {
		fputs("usage: no_close_range PROGRAM [ARGS...]\n", stderr);
		return 2;
	}
	struct sock_filter f[CLOSE_RANGE_FILTER_LEN];
	close_range_filter(f, SECCOMP_RET_ERRNO | ENOSYS);
	struct sock_fprog prog = { .len = CLOSE_RANGE_FILTER_LEN, .filter = f };
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0) {
		perror("no_close_range: seccomp");
		return 2;
	}
	execvp(argv[1], argv + 1);
	perror("no_close_range: exec");
	return 127;
}
