/* OCI images: references, registry documents, the content store under $CAPSULE_HOME/images,
 * the registry client and the layer unpacker. This code links libcurl and libarchive and
 * lives in its own archive (capsule_images): the static shim never links it, it only ever
 * sees the unpacked layers' paths in a sandbox's configuration (layer= lines). */
#ifndef CAPSULE_IMAGE_H
#define CAPSULE_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "capsule.h"

#define IMAGE_DIGEST_LEN 71 /* "sha256:" + 64 hex */
#define IMAGE_MAX_LAYERS 128
#define IMAGE_MAX_MANIFEST_BYTES (4u << 20)
#define IMAGE_MAX_CONFIG_BYTES (8u << 20)
#define IMAGE_MAX_INDEX_ENTRIES 256

/* A reference as docker reads it: [REGISTRY/]REPOSITORY[:TAG][@DIGEST]. A first component
 * with a '.' or ':' in it, or "localhost", is a registry; otherwise the registry is docker.io
 * and a one-component repository gets "library/". */
struct image_ref {
	char registry[256];   /* "docker.io", "localhost:5000" */
	char repository[256]; /* "library/alpine" */
	char tag[129];        /* "latest" when neither tag nor digest is given */
	char digest[IMAGE_DIGEST_LEN + 1];
};
int image_ref_parse(const char *text, struct image_ref *out, capsule_error *err);
/* The canonical name: "docker.io/library/alpine:3.20" or "reg/x@sha256:..". */
void image_ref_format(const struct image_ref *ref, char *out, size_t size);

bool image_digest_valid(const char *digest);

/* Is REGISTRY ("host[:port]" of a reference) loopback: exactly "localhost", an IPv4 literal
 * in 127.0.0.0/8 or "[::1]", with or without a port? Such registries may speak plain HTTP. */
bool image_registry_is_loopback(const char *registry);

/* The WWW-Authenticate challenge of a 401: `Bearer realm="..",service="..",scope=".."` or
 * `Basic realm=".."`. Strings are malloc'd; image_challenge_free frees them. */
struct image_challenge {
	bool bearer; /* else basic */
	char *realm, *service, *scope;
};
int image_challenge_parse(const char *header, struct image_challenge *out);
void image_challenge_free(struct image_challenge *c);

struct image_descriptor {
	char media_type[128];
	char digest[IMAGE_DIGEST_LEN + 1];
	int64_t size;
	char os[32], architecture[32], variant[32]; /* index entries only */
};

/* A manifest (docker v2 schema 2 or OCI) or an index (manifest list / OCI image index). */
struct image_manifest {
	bool is_index;
	struct image_descriptor config;
	struct image_descriptor *entries; /* layers, or an index's manifests */
	size_t nentries;
};
/* MEDIA_TYPE is the Content-Type the registry sent (may be NULL or empty: then the document's
 * own mediaType, or its shape, decides). */
int image_manifest_parse(const char *json, size_t len, const char *media_type, struct image_manifest *out,
			 capsule_error *err);
void image_manifest_free(struct image_manifest *m);
/* The index entry for OS/ARCH[/VARIANT]; NULL when none fits. */
const struct image_descriptor *image_index_select(const struct image_manifest *idx, const char *platform);

/* What an image's config says about running it. */
struct image_config {
	char **env, **entrypoint, **cmd; /* NULL-terminated, or NULL */
	char *workdir, *user;
	char *os, *architecture, *variant; /* the platform it was built for, where it says */
};
/* 0 when PLATFORM reads OS/ARCH[/VARIANT] (lower-case letters, digits, '_', '.', '-'); else
 * -EINVAL with a message naming it. */
int image_platform_check(const char *platform, capsule_error *err);
/* 0 when config C was built for PLATFORM (a checked one), or says nothing of its platform;
 * else -ENOENT naming both. */
int image_config_platform_match(const struct image_config *c, const char *platform, const char *image,
				capsule_error *err);
int image_config_parse(const char *json, size_t len, struct image_config *out, capsule_error *err);
void image_config_free(struct image_config *c);
void image_strv_free(char **v);
/* A JSON value's raw text as a string, or as an array of strings (null: *OUT stays NULL). */
int image_json_string(const char *raw, size_t len, char **out);
int image_json_strv(const char *raw, size_t len, char ***out);

/* What a pull and a layer may cost: the "limits" of the registry configuration (docs/cli.md),
 * these defaults otherwise. A hostile or broken registry cannot hold a pull (and the blob's
 * lock) for longer, nor a layer fill the disk beyond them. */
struct image_limits {
	uint64_t pull_seconds;     /* a whole pull: every manifest, blob and token in it */
	uint64_t transfer_seconds; /* one HTTP request and its whole answer */
	uint64_t stall_seconds;    /* an answer slower than IMAGE_STALL_BYTES_PER_SECOND this long */
	uint64_t layer_bytes;      /* one layer's tar, decompressed; and any one file's size in it */
	uint64_t layer_entries;    /* entries in one layer's tar */
	uint64_t store_bytes;      /* the store's blobs and unpacked layers; UINT64_MAX: none */
};
#define IMAGE_STALL_BYTES_PER_SECOND 1024
#define IMAGE_LIMITS_DEFAULT                                                                         \
	{                                                                                            \
		.pull_seconds = 4 * 3600, .transfer_seconds = 3600, .stall_seconds = 60,             \
		.layer_bytes = 8ull << 30, .layer_entries = 1000000, .store_bytes = UINT64_MAX,      \
	}

/* ---- the store ---- */

/* images/ of $CAPSULE_HOME, with blobs/sha256, layers/, tmp/ made. */
int store_open(int *images_fd, capsule_error *err);
/* Remove what killed unpacks and imports left in tmp/ (their process is gone). */
void store_sweep_tmp(int images_fd);
/* Is blob DIGEST stored, and is layer DIGEST unpacked? */
bool store_has_blob(int images_fd, const char *digest);
bool store_has_layer(int images_fd, const char *digest);
/* Read a small stored blob (a manifest or config), checking its digest again. */
int store_read_blob(int images_fd, const char *digest, size_t max, char **out, size_t *len, capsule_error *err);
/* Store DATA as a blob, after checking that it hashes to DIGEST. */
int store_put_blob(int images_fd, const char *digest, const void *data, size_t len, capsule_error *err);
/* Move the file tmp/TMPNAME into blobs/ once its content hashes to DIGEST; else remove it. */
int store_commit_blob_file(int images_fd, const char *tmpname, const char *digest, capsule_error *err);
/* Unpack blob DIGEST (a tar, plain, gzip or zstd) into layers/<hex>, once, within LIMITS'
 * layer_bytes and layer_entries, and within what store_bytes leaves (over them: EFBIG, and
 * no layer is stored). What it decompressed to is recorded in layer-sizes/<hex>. */
int store_unpack_layer(int images_fd, const char *digest, const struct image_limits *limits, capsule_error *err);
/* What the store holds: its blobs' sizes and its layers' recorded sizes (a layer unpacked
 * before sizes were recorded counts as its blob's size). */
int store_usage(int images_fd, uint64_t *bytes, capsule_error *err);
/* How many images the store names, and its bytes (store_usage). */
int image_store_usage(uint64_t *count, uint64_t *bytes, capsule_error *err);
/* Would N more bytes take the store past LIMITS' store_bytes? Then ENOSPC naming WHAT. */
int store_check_room(int images_fd, const struct image_limits *limits, uint64_t n, const char *what,
		     capsule_error *err);
/* Record NAME -> manifest DIGEST in index.json (replacing what NAME named before). */
int store_tag(int images_fd, const char *name, const char *manifest_digest, capsule_error *err);
/* The absolute path of layers/<hex> of DIGEST (malloc'd). */
char *store_layer_path(const char *digest);

/* sha256 of a buffer or of a file, as "sha256:<hex>". */
void image_sha256_buf(const void *data, size_t len, char out[IMAGE_DIGEST_LEN + 1]);
int image_sha256_fd(int fd, char out[IMAGE_DIGEST_LEN + 1]);

/* ---- unpacking ---- */

enum unpack_mode {
	UNPACK_LAYER,   /* an image layer: whiteouts, owners (root callers), modes, xattrs */
	UNPACK_ARCHIVE, /* an image archive: regular files and folders only, our own */
};
/* What one tar may cost: its decompressed bytes (what libarchive read, skipped entries too,
 * and no regular file may claim a larger size) and its entry count. BYTES_LIMIT names the
 * setting that gave BYTES, for the message. */
struct unpack_limits {
	uint64_t bytes, entries;
	const char *bytes_limit;
};
/* Unpack the tar read from FD into the folder DIR_FD. Nothing is ever created outside
 * DIR_FD: entries with ".." or absolute names, and hard links that leave it, are refused
 * (the whole tar fails), no symlink is followed, device nodes are skipped. A tar over
 * LIMITS fails with EFBIG. WHAT names the tar in messages. */
int unpack_tar(int fd, int dir_fd, enum unpack_mode mode, const struct unpack_limits *limits, const char *what,
	       uint64_t *decompressed_out, capsule_error *err);

/* ---- the registry client ---- */

struct registry_options {
	bool insecure; /* plain HTTP (and no TLS verification) allowed for this registry */
	const char *platform;
	capsule_image_progress_fn progress;
	void *payload;
};
/* Pull REF into the store; *NAME_OUT gets its canonical name, *DIGEST_OUT its manifest
 * digest (both malloc'd, either may be NULL). */
int registry_pull(const struct image_ref *ref, const struct registry_options *o, char **digest_out,
		  capsule_error *err);

/* The registry configuration file (docs/cli.md): docker's config.json "auths", plus
 * "mirrors", "insecure" and "limits". */
struct registry_settings {
	char *username, *password; /* for the registry asked about, or NULL */
	char **mirrors;            /* NULL-terminated, or NULL: "http://host:port" prefixes */
	bool insecure;
	struct image_limits limits;
};
/* REGISTRY NULL: only what is not about one registry (the limits). */
int registry_settings_load(const char *registry, struct registry_settings *out, capsule_error *err);
void registry_settings_free(struct registry_settings *s);
/* The limits alone, for unpacking outside a pull (import, a layer unpacked again). */
int image_limits_load(struct image_limits *out, capsule_error *err);

#endif
