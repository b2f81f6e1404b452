/* Unit tests for fds_cloexec_from and fds_close_range (src/common/util.c), the agent's last step before it execs a
 * command: with close_range, and with a seccomp filter that refuses close_range (ENOSYS, as an
 * older kernel, or EPERM) so that the walk of /proc/self/fd is what marks the fds; and when
 * neither way works, an error rather than silence. Each case runs in a child, which the filter
 * would otherwise outlive. Also read_fd_all_sized, the agent's read of a sandbox's user files. */
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <setjmp.h>
#include <stdio.h>
#include <sys/stat.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "util.h"

#if defined(__x86_64__)
#define ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define ARCH AUDIT_ARCH_AARCH64
#endif

/* Refuse NR1 and NR2 (-1: none) with ERRNO. */
static int refuse(long nr1, long nr2, int errnum)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ARCH, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)nr1, 1, 0),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)nr2, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (uint32_t)errnum),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = sizeof(f) / sizeof(f[0]), .filter = f };
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return -1;
	return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog);
}

/* In a child: open fds without close-on-exec (one high), apply the filter, run
 * fds_cloexec_from(3), or with CLOSING fds_close_range(3, 199). Exit 0 when every fd from 3 is
 * close-on-exec (with CLOSING: those below 200 closed, 200 left as it was) after it returned 0,
 * 2 when it returned an error, 1 otherwise. */
static int child(long nr1, long nr2, int errnum, bool closing)
{
	pid_t pid = fork();
	if (pid == 0) {
		int a = open("/dev/null", O_RDONLY);
		int b = dup2(a, 200);
		if (a < 3 || b != 200 || (nr1 >= 0 && refuse(nr1, nr2, errnum) < 0))
			_exit(1);
		if (closing) {
			if (fds_close_range(3, 199) < 0)
				_exit(2);
			_exit(fcntl(a, F_GETFD) < 0 && errno == EBADF && fcntl(b, F_GETFD) == 0 ? 0 : 1);
		}
		if (fds_cloexec_from(3) < 0)
			_exit(2);
		_exit((fcntl(a, F_GETFD) & FD_CLOEXEC) && (fcntl(b, F_GETFD) & FD_CLOEXEC) &&
		      !(fcntl(0, F_GETFD) & FD_CLOEXEC) ? 0 : 1);
	}
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	return WEXITSTATUS(st);
}

static void test_close_range(void **state)
{
	(void)state;
	assert_int_equal(child(-1, -1, 0, false), 0);
}

static void test_close_range_refused_walks_proc(void **state)
{
	(void)state;
	assert_int_equal(child(SYS_close_range, -1, ENOSYS, false), 0);
	assert_int_equal(child(SYS_close_range, -1, EPERM, false), 0);
}

static void test_close_without_close_range_walks_proc(void **state)
{
	(void)state;
	assert_int_equal(child(-1, -1, 0, true), 0);
	assert_int_equal(child(SYS_close_range, -1, ENOSYS, true), 0);
}

static void test_neither_way_is_an_error(void **state)
{
	(void)state;
	assert_int_equal(child(SYS_close_range, SYS_openat, EPERM, false), 2);
	assert_int_equal(child(SYS_close_range, SYS_openat, EPERM, true), 2);
}

/* read_fd_all_sized, which the agent reads a sandbox's /etc/passwd and /etc/group with: the
 * file is whole for every size around its first buffer (4 KiB), and whole too when it grew
 * after the fstat that gave the size; a size past MAX is refused. */
static void test_read_sized_whole(void **state)
{
	(void)state;
	static const size_t sizes[] = { 0, 1, 4095, 4096, 4097, 8193, 10000 };
	char *want = malloc(20000);
	assert_non_null(want);
	for (size_t i = 0; i < 20000; i++)
		want[i] = (char)('a' + i % 23);
	for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++)
		for (size_t grow = 0; grow <= 5000; grow += 5000) {
			FILE *f = tmpfile();
			assert_non_null(f);
			int fd = fileno(f);
			assert_int_equal(write(fd, want, sizes[k]), (ssize_t)sizes[k]);
			struct stat st;
			assert_int_equal(fstat(fd, &st), 0);
			/* Grown after the fstat: the size given is short of what is there. */
			assert_int_equal(write(fd, want + sizes[k], grow), (ssize_t)grow);
			assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
			char *got = NULL;
			size_t len = 0;
			assert_int_equal(read_fd_all_sized(fd, (size_t)st.st_size, 1u << 20, &got, &len), 0);
			assert_int_equal(len, sizes[k] + grow);
			assert_memory_equal(got, want, len);
			assert_int_equal(got[len], '\0');
			free(got);
			fclose(f);
		}
	FILE *f = tmpfile();
	assert_non_null(f);
	assert_int_equal(write(fileno(f), want, 10000), 10000);
	assert_int_equal(lseek(fileno(f), 0, SEEK_SET), 0);
	char *got = NULL;
	assert_int_equal(read_fd_all_sized(fileno(f), 10000, 8192, &got, NULL), -EFBIG);
	assert_null(got);
	fclose(f);
	free(want);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_read_sized_whole),
		cmocka_unit_test(test_close_range),
		cmocka_unit_test(test_close_range_refused_walks_proc),
		cmocka_unit_test(test_close_without_close_range_walks_proc),
		cmocka_unit_test(test_neither_way_is_an_error),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
