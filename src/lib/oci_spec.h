/* An OCI bundle's config.json (runtime-spec 1.x) read into a sandbox's configuration and the
 * options of its process (oci_spec.c and a file per section, oci_spec_parse.h), and the spec's seccomp profile compiled to BPF
 * (oci_seccomp.c). docs/oci.md lists what is honoured and what is refused. */
#ifndef CAPSULE_OCI_SPEC_H
#define CAPSULE_OCI_SPEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "capsule.h"

#define OCI_MAX_GROUPS 64
#define OCI_MAX_RLIMITS 16
#define OCI_MAX_HOOKS 16

struct capsule_oci_spec {
	capsule_config *cfg; /* NULL for a process alone (CAPSULE_OCI_PROCESS_ONLY) */
	char **argv, **env;  /* NULL-terminated */
	char *cwd;
	char user[32]; /* "uid:gid" */
	bool terminal;
	uint16_t rows, cols;
	uint32_t groups[OCI_MAX_GROUPS];
	size_t ngroups;
	bool caps_set;
	uint64_t caps, caps_inheritable, caps_ambient;
	bool umask_set;
	uint32_t umask;
	bool new_privs; /* noNewPrivileges false or absent */
	bool oom_score_adj_set;
	uint32_t oom_score_adj;
	capsule_rlimit rlimits[OCI_MAX_RLIMITS];
	size_t nrlimits;
	uint8_t *seccomp_bpf;
	size_t seccomp_len;
	char *annotations; /* the annotations object's JSON text, or NULL */
	char *warnings;    /* capsule_oci_spec_warnings's lines, or NULL */
	capsule_oci_hook hooks[4][OCI_MAX_HOOKS]; /* by capsule_oci_hook_kind; strings malloc'd */
	size_t nhooks[4];
};

/* Compile linux.seccomp (its JSON text) into *BPF (malloc'd) and *LEN bytes. */
int oci_seccomp_compile(const char *json, size_t len, uint8_t **bpf, size_t *bpf_len, capsule_error *err);

#endif
