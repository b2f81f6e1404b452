/* The seccomp filter the fd tests take close_range(2) away with (exec_opts.c, no_close_range.c):
 * close_range gets ACTION (SECCOMP_RET_ERRNO | errno, or a kill), every other call is allowed,
 * as is every call of another architecture's ABI. */
#ifndef CAPSULE_TESTS_CLOSE_RANGE_FILTER_H
#define CAPSULE_TESTS_CLOSE_RANGE_FILTER_H

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/syscall.h>

#if defined(__x86_64__)
#define CLOSE_RANGE_FILTER_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define CLOSE_RANGE_FILTER_ARCH AUDIT_ARCH_AARCH64
#endif

#define CLOSE_RANGE_FILTER_LEN 7

static inline void close_range_filter(struct sock_filter f[CLOSE_RANGE_FILTER_LEN], uint32_t action)
{
	const struct sock_filter prog[CLOSE_RANGE_FILTER_LEN] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, CLOSE_RANGE_FILTER_ARCH, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_close_range, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, action),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	for (size_t i = 0; i < CLOSE_RANGE_FILTER_LEN; i++)
		f[i] = prog[i];
}

#endif
