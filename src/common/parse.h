/* Parsers for the values users type on the command line (sizes, CPUs, durations, names, -v,
 * --tmpfs, -e, --user, -p) and a lexical path normalizer. They accept what docker accepts where
 * that is sensible, and every failure fills ERR with one line that quotes the bad input, e.g.
 * "invalid size '512X': unknown unit 'X' (use b, k, m, g or t)". Control bytes in the input are
 * shown as \xNN so the message stays on one line. Outputs are written only on success (the
 * struct outputs are zeroed first, so their _free is always safe). */
#ifndef CAPSULE_PARSE_H
#define CAPSULE_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "capsule.h"

/* Longest path normalize_abs_path (and so -v / --tmpfs targets) accepts, in bytes. */
#define CAP_PATH_MAX 4096

/* Sizes as docker accepts them: "1024", "512k", "512K", "512m", "1g", "1.5G", "100MB", "1GiB";
 * binary units (k = 1024). Rejects empty, negative, overflow (> 2^62), unknown units, trailing
 * junk. "0" is allowed. One space between number and unit is allowed ("1 G") as in docker;
 * fractions are truncated to whole bytes. */
int parse_size(const char *s, uint64_t *out, capsule_error *err);

/* CPUs as docker --cpus: "1", "0.5", "1.25", ".5" -> millicpus (1000, 500, 1250, 500). Must be
 * > 0 and <= 1024 cpus; at most 3 decimals (trailing zeros beyond that are fine). */
int parse_cpus(const char *s, uint32_t *milli, capsule_error *err);

/* Durations: "30" (seconds), "30s", "500ms", "2m", "1h", "1.5s", and Go-style sums such as
 * "1m30s". Units are case-sensitive. Result in ms (fractions of a ms are truncated),
 * <= UINT32_MAX. */
int parse_duration_ms(const char *s, uint32_t *ms, capsule_error *err);

/* An integer in [min,max], decimal digits only (no sign, spaces or 0x), named WHAT in errors
 * ("invalid pids limit 'x': ..."). */
int parse_uint(const char *s, const char *what, uint64_t min, uint64_t max, uint64_t *out,
	       capsule_error *err);

/* Sandbox / volume / save names: [a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}. WHAT is "sandbox name" etc. */
int parse_name(const char *s, const char *what, capsule_error *err);

/* A sandbox label (capsule_config_add_label): KEY of 1 to CAPSULE_LABEL_KEY_MAX letters,
 * digits, '_', '.', '-', '/' (Kubernetes-style names), VALUE of at most
 * CAPSULE_LABEL_VALUE_MAX bytes without control characters, so that a label never breaks a
 * config line, a log line or a query string. */
int parse_label_check(const char *key, const char *value, capsule_error *err);
/* "KEY=VALUE" split and checked as above; *KEY and *VALUE malloc'd on success. With
 * KEY_ALONE_OK, "KEY" (no '=') is taken too, *VALUE NULL (a filter on the key's presence). */
int parse_label(const char *text, bool key_alone_ok, char **key, char **value, capsule_error *err);

/* -v SRC:DST[:OPTS] as docker: SRC is an absolute host path (kept verbatim) or a volume name
 * (parse_name rules); DST an absolute path in the sandbox; OPTS a comma list of ro|rw (others,
 * empty items and "ro,rw" together -> error). No ':' in paths is supported (docker's rule too).
 * Rejects DST "/" (also after normalization, e.g. "/."), DST with ".." components, empty parts. */
struct mount_spec {
	char *source; /* malloc'd */
	char *target; /* malloc'd, normalized: no trailing '/', no '//', no '.' components */
	bool source_is_volume;
	bool readonly;
};
int parse_mount_spec(const char *spec, struct mount_spec *out, capsule_error *err);
void mount_spec_free(struct mount_spec *m);

/* --tmpfs DST[:size=100M,mode=1777]: default size 64M, default mode 01777; size > 0 (the
 * kernel reads size=0 as unlimited); mode octal <= 07777; other options -> error. DST follows
 * the -v target rules. */
#define CAP_TMPFS_DEFAULT_SIZE (64ull << 20)
#define CAP_TMPFS_DEFAULT_MODE 01777u
struct tmpfs_spec {
	char *target;
	uint64_t size_bytes;
	uint32_t mode;
};
int parse_tmpfs_spec(const char *spec, struct tmpfs_spec *out, capsule_error *err);
void tmpfs_spec_free(struct tmpfs_spec *t);

/* -e KEY=VALUE: KEY non-empty, [A-Za-z_][A-Za-z0-9_]*; VALUE may be empty (and may hold any
 * byte). Returns 0 if valid. A bare "KEY" (no '=') is rejected here; the CLI resolves it from
 * its own environment first. Error messages quote only the KEY, never the VALUE, which is
 * often a secret. */
int parse_env(const char *kv, capsule_error *err);

/* The one limit on an environment, a sandbox's or a command's: 256 KiB in all, and at most
 * 64 KiB a variable (the wire protocol's limit on one string, CP_MAX_STRING; the kernel's
 * own, MAX_ARG_STRLEN, is 128 KiB). */
#define CAPSULE_ENV_MAX_BYTES (256u << 10)
#define CAPSULE_ENV_VAR_MAX_BYTES ((64u << 10) - 1)
/* -E2BIG with one message for every caller when the N entries of ENV (may be NULL: N is then
 * counted up to a NULL) plus ADDING (may be NULL) go past that limit. */
int env_size_check(const char *const *env, size_t n, const char *adding, capsule_error *err);

/* --user as docker: "name", "uid", "uid:gid", "name:group". Split into user and optional group
 * strings (malloc'd; *group is NULL when absent; both NULL on failure). Rejects empty parts,
 * more than one ':', names with control bytes, spaces or '/', names starting with '-', and
 * numeric ids above 4294967294 ((uid_t)-1 means "unchanged" to the kernel). */
int parse_user_spec(const char *s, char **user, char **group, capsule_error *err);

/* Port forward -p [HOSTIP:]HOSTPORT:GUESTPORT[/tcp|/udp] (docker). Host IP default
 * "127.0.0.1"; an IPv6 host address goes in brackets ("[::1]:8080:80") and is stored without
 * them; host_ip holds the canonical text form. Ports 1-65535; protocol case-insensitive. */
struct port_spec {
	char host_ip[64];
	uint16_t host_port;
	uint16_t guest_port;
	bool udp;
};
int parse_port_spec(const char *s, struct port_spec *out, capsule_error *err);

/* Normalize an absolute in-sandbox path lexically (collapse //, remove ., resolve .. against the
 * root, never going above "/"; no trailing '/' except for "/" itself). The result is never
 * longer than IN, so out_size >= strlen(in)+1 suffices (-ERANGE otherwise); OUT may equal IN.
 * Returns -EINVAL for relative or too long (> CAP_PATH_MAX bytes) paths. */
int normalize_abs_path(const char *in, char *out, size_t out_size, capsule_error *err);

#endif
