/* The table of a sandbox's settings (config_keys.c): one row per key of run/<name>/config,
 * which drives the file's writer and reader, copy and free, inspect's "limits" and the
 * flags of `capsule run` and `capsule create` (through capsule_config_options). A scalar key
 * is one row and its field in struct capsule_config; a list or a value with a form of its
 * own (mounts, env, ports) keeps its code, reached through the row's handlers. How to add
 * one: CONTRIBUTING.md. */
#ifndef CAPSULE_CONFIG_KEYS_H
#define CAPSULE_CONFIG_KEYS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "sandbox_config.h"

enum config_key_type {
	CONFIG_KEY_TEXT,   /* a char array in the struct; SIZE bounds it */
	CONFIG_KEY_STRING, /* a malloc'd char *, or NULL (not written) */
	CONFIG_KEY_U32,
	CONFIG_KEY_U64,
	CONFIG_KEY_I64,    /* never negative on disk */
	CONFIG_KEY_BOOL,   /* "1" or "0" */
	CONFIG_KEY_CUSTOM, /* the row's own load and save, and copy/forget/clear where it owns memory */
};

enum {
	/* Not written while zero or empty: the key is younger than the format, and a file
	 * without it must read as it did. */
	CONFIG_KEY_OMIT_UNSET = 1 << 0,
	/* inspect's "limits" shows it only when set: younger than the members every sandbox shows. */
	CONFIG_KEY_INSPECT_SET = 1 << 1,
};

struct config_key {
	/* The key in run/<name>/config; NULL for a flag whose value another row writes
	 * (--allow-cidr, --publish: lines of the "network" row). */
	const char *name;
	/* More keys the row reads (a list written as several keys: "volume" lines are binds). */
	const char *also[3];
	enum config_key_type type;
	size_t offset, size; /* the field in struct capsule_config */
	uint64_t max;        /* integers: the largest value a file may hold */
	unsigned flags;
	/* Read one line KEY=VALUE of a file, where the type's own reading is not enough (a
	 * value checked again, an enum, a list entry). */
	int (*load)(struct capsule_config *cfg, const char *key, const char *value, capsule_error *err);
	/* Write the row's lines. */
	void (*save)(const struct capsule_config *cfg, FILE *f);
	/* Rows that own memory beyond a STRING: config_copy makes DST a shallow copy of SRC,
	 * FORGET drops DST's references to SRC's memory (without freeing it), COPY then makes
	 * DST's own; CLEAR frees. */
	void (*forget)(struct capsule_config *cfg);
	int (*copy)(struct capsule_config *dst, const struct capsule_config *src);
	void (*clear)(struct capsule_config *cfg);
	/* inspect's member in "limits", or NULL. */
	const char *inspect_limit;
	/* The flag of run and create, or NULL: SET takes its value as the flag gives it (NULL
	 * for a switch), with the checks of the C API's setter. */
	capsule_config_option option;
	int (*set)(struct capsule_config *cfg, const char *value, capsule_error *err);
};

extern const struct config_key config_keys[];
extern const size_t config_key_count;

/* A file's integer VALUE of KEY, at most MAX. */
int config_parse_uint(const char *key, const char *value, uint64_t max, uint64_t *out, capsule_error *err);

/* The rows' handlers, each beside the data it handles: config.c (scalars with a form of their
 * own, env, QEMU arguments, layers, image defaults), config_mounts.c (tmpfs, binds, volumes,
 * transforms), net_client.c (the network, its ports and allowlist). */
#define CONFIG_LIST_HANDLERS(key)                                                                          \
	int config_##key##_load(struct capsule_config *cfg, const char *k, const char *value, capsule_error *err); \
	void config_##key##_save(const struct capsule_config *cfg, FILE *f);                                 \
	void config_##key##_forget(struct capsule_config *cfg);                                               \
	int config_##key##_copy(struct capsule_config *dst, const struct capsule_config *src);               \
	void config_##key##_clear(struct capsule_config *cfg);
CONFIG_LIST_HANDLERS(qemu_arg)
CONFIG_LIST_HANDLERS(tmpfs)
CONFIG_LIST_HANDLERS(bind)
CONFIG_LIST_HANDLERS(env)
CONFIG_LIST_HANDLERS(label)
CONFIG_LIST_HANDLERS(layer)
CONFIG_LIST_HANDLERS(entrypoint)
CONFIG_LIST_HANDLERS(cmd)
int config_isolation_load(struct capsule_config *cfg, const char *k, const char *value, capsule_error *err);
void config_isolation_save(const struct capsule_config *cfg, FILE *f);
int config_accel_load(struct capsule_config *cfg, const char *k, const char *value, capsule_error *err);
int config_disk_size_load(struct capsule_config *cfg, const char *k, const char *value, capsule_error *err);
int config_save_load(struct capsule_config *cfg, const char *k, const char *value, capsule_error *err);
int config_base_load(struct capsule_config *cfg, const char *k, const char *value, capsule_error *err);
void config_base_save(const struct capsule_config *cfg, FILE *f);
int config_transform_load(struct capsule_config *cfg, const char *k, const char *value, capsule_error *err);
void config_transform_save(const struct capsule_config *cfg, FILE *f);
/* Flags whose value needs reading before the C API's setter takes it. */
int config_pids_set(struct capsule_config *cfg, const char *value, capsule_error *err);
int config_isolation_set(struct capsule_config *cfg, const char *value, capsule_error *err);
int config_boot_timeout_set(struct capsule_config *cfg, const char *value, capsule_error *err);
int config_idle_pause_set(struct capsule_config *cfg, const char *value, capsule_error *err);
int config_display_switch(struct capsule_config *cfg, const char *value, capsule_error *err);
int config_dns_private_switch(struct capsule_config *cfg, const char *value, capsule_error *err);
int config_tmpfs_set(struct capsule_config *cfg, const char *value, capsule_error *err);
int config_transform_set(struct capsule_config *cfg, const char *value, capsule_error *err);


#endif
