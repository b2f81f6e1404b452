/* capsule's default seccomp filter for commands run inside a container sandbox. */
#ifndef CAPSULE_SECCOMP_POLICY_H
#define CAPSULE_SECCOMP_POLICY_H

#include <stddef.h>
#include <stdint.h>

#include "capsule.h"

/* Build capsule's default seccomp filter for commands run inside a sandbox, as a classic BPF
 * program: a malloc'd array of struct sock_filter (8 bytes each) in *out, its size in bytes in
 * *out_len. The caller installs it later with prctl(PR_SET_NO_NEW_PRIVS) +
 * seccomp(SECCOMP_SET_MODE_FILTER). Returns 0 or -errno and fills err. */
int seccomp_default_bpf(uint8_t **out, size_t *out_len, capsule_error *err);

#endif
