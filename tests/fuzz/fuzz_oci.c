/* libFuzzer target: config.json and exec's process.json (src/lib/oci_spec*.c, oci_seccomp.c),
 * which capsule-oci reads from a bundle someone else wrote.
 *
 * Byte 0 picks the form (even: a whole config.json, its bundle /nonexistent-bundle; odd: a
 * process alone); the rest is the document. Besides "no crash, no overread, no leak": a
 * refusal is one line naming config.json or process, with its errno; a success has a command
 * and an absolute cwd (a config may have no process), a seccomp filter of whole instructions, and options the exec request takes. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "capsule.h"
#include "oci_spec.h"
#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 256 * 1024)
		return 0;
	unsigned flags = data[0] & 1 ? CAPSULE_OCI_PROCESS_ONLY : 0;
	const char *text = (const char *)data + 1;
	size_t len = size - 1;
	capsule_oci_spec *spec = NULL;
	capsule_error e = { 0 };
	int r = capsule_oci_spec_parse(&spec, text, len, "/nonexistent-bundle", flags, &e);
	if (r < 0) {
		CHECK(spec == NULL);
		CHECK(e.code == -r);
		CHECK(e.message[0]);
		CHECK(strchr(e.message, '\n') == NULL);
		return 0;
	}
	CHECK(r == 0 && spec);
	capsule_exec_options o;
	capsule_oci_spec_exec_options(spec, &o);
	/* A config may have no process (it cannot start); a process always has a command. */
	CHECK(o.argv || !flags);
	CHECK(!o.argv || (o.argv[0] && o.argv[0][0] && o.cwd && o.cwd[0] == '/'));
	CHECK(o.ngroups <= CP_EXEC_MAX_GROUPS && o.nrlimits <= CP_EXEC_MAX_RLIMITS);
	CHECK(o.seccomp_len % 8 == 0 && o.seccomp_len <= CP_MAX_SECCOMP_BYTES);
	CHECK((o.seccomp_len == 0) == (o.seccomp_bpf == NULL));
	for (size_t i = 0; i < o.nrlimits; i++)
		CHECK(o.rlimits[i].soft <= o.rlimits[i].hard);
	for (size_t i = 0; o.env && o.env[i]; i++)
		CHECK(strchr(o.env[i], '=') && o.env[i][0] != '=');
	CHECK((capsule_oci_spec_config(spec) == NULL) == (flags != 0));
	/* Hooks: an absolute path, arguments taken from the text, a bounded timeout. */
	for (int kind = CAPSULE_OCI_HOOK_PRESTART; kind <= CAPSULE_OCI_HOOK_POSTSTOP; kind++) {
		const capsule_oci_hook *h;
		size_t n = capsule_oci_spec_hooks(spec, (capsule_oci_hook_kind)kind, &h);
		for (size_t i = 0; i < n; i++) {
			CHECK(h[i].path && h[i].path[0] == '/' && h[i].timeout_s <= 86400);
			for (size_t j = 0; h[i].args && h[i].args[j]; j++)
				CHECK(strlen(h[i].args[j]) < len); /* from the text, unescaped */
		}
	}
	capsule_oci_spec_free(spec);
	return 0;
}
