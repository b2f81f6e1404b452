/* What the files that read config.json share (oci_spec.c, the document and its hooks;
 * oci_spec_values.c, the value readers; oci_spec_process.c, oci_spec_mounts.c and
 * oci_spec_linux.c, a section each). Private to the library. */
#ifndef CAPSULE_OCI_SPEC_PARSE_H
#define CAPSULE_OCI_SPEC_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "capsule.h"
#include "json.h"
#include "oci_spec.h"

#define MAX_MEMBERS 256
#define MAX_ELEMENTS 4096

/* Where in the document a value is, for messages ("process.user.uid"). */
struct walk {
	struct capsule_oci_spec *spec;
	capsule_error *err;
	const char *where;
	const char *bundle;
	size_t n;       /* elements seen by an array walk */
	uint64_t mask;  /* a capability walk's set */
	void *payload;  /* a walk's own target */
};


/* Items apart with ',' in one malloc'd string, for a config key (the shim splits it). */
struct joined {
	char *out;
	size_t len, cap;
};

int oci_bad(capsule_error *err, const char *where, const char *what);
/* One more line for capsule_oci_spec_warnings. */
int oci_warn_add(struct capsule_oci_spec *spec, const char *line, capsule_error *err);
int oci_unsupported(capsule_error *err, const char *where, const char *why);
bool oci_is_null(const char *v, size_t n);
/* An empty value ([], {}, "", null, false, 0) asks for nothing. */
bool oci_is_empty(const char *v, size_t n);
int oci_value_string(const char *v, size_t n, const char *where, char **out, capsule_error *err);
int oci_value_int(const char *v, size_t n, const char *where, int64_t *out, capsule_error *err);
int oci_value_u64(const char *v, size_t n, const char *where, uint64_t *out, capsule_error *err);
int oci_value_bool(const char *v, size_t n, const char *where, bool *out, capsule_error *err);
int oci_value_uint32(const char *v, size_t n, const char *where, uint32_t *out, capsule_error *err);
/* Walk the array (or object) V at WHERE: FN's own error stands; the walk's becomes one naming
 * WHERE. */
int oci_walk_json(bool array, const char *v, size_t n, size_t max, json_member_fn fn, void *payload, const char *where,
		  capsule_error *err);
int oci_join(struct joined *j, const char *a, const char *b, const char *where, capsule_error *err);
/* A JSON array of strings into a NULL-terminated malloc'd vector. */
int oci_value_strv(const char *v, size_t n, const char *where, char ***out, capsule_error *err);
void oci_strv_free_all(char **v);

/* The sections, each into SPEC. */
int oci_parse_process(struct capsule_oci_spec *spec, const char *v, size_t n, capsule_error *err);
int oci_parse_root(struct capsule_oci_spec *spec, const char *v, size_t n, const char *bundle, capsule_error *err);
int oci_parse_mounts(struct capsule_oci_spec *spec, const char *v, size_t n, const char *bundle, capsule_error *err);
int oci_parse_linux(struct capsule_oci_spec *spec, const char *v, size_t n, capsule_error *err);

#endif
