/* libcapsule internals shared with capsule-shim (which links the full-visibility archive). */
#ifndef CAPSULE_INTERNAL_H
#define CAPSULE_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "capsule.h"
#include "proto.h"

#define CAPSULE_NAME_MAX 63
#define CAPSULE_DEFAULT_BOOT_TIMEOUT_MS 10000
/* A VM boots a kernel; under TCG (no KVM) that is seconds, more on a loaded host. */
#define CAPSULE_DEFAULT_VM_BOOT_TIMEOUT_MS 60000
#define CAPSULE_MAX_QEMU_ARGS 64
#define CAPSULE_DEFAULT_STOP_TIMEOUT_MS 10000
/* A sandbox with no pids limit could spend the host's pids (pid_max is often 32768). */
#define CAPSULE_DEFAULT_PIDS_LIMIT 4096
/* Root callers map the sandbox's root to this unprivileged host range (docs/security.md). */
#define CAPSULE_DEFAULT_UID_BASE 1000000000u
#define CAPSULE_ID_COUNT 65536u

#define CAPSULE_MAX_TMPFS 16
#define CAPSULE_DEFAULT_TMPFS_BYTES (64ull << 20)

struct tmpfs_mount {
	char *target; /* normalized absolute path inside the sandbox */
	uint64_t size_bytes;
	uint32_t mode;
};

#define CAPSULE_MAX_BINDS 32
/* Read-only layers below a sandbox's own (an image's, a save's): overlayfs takes up to 500, and
 * each is one more mount the shim makes at start. */
#define CAPSULE_MAX_LAYERS 128

struct bind_mount {
	char *source; /* absolute host path, as given; or a volume's name */
	char *target; /* normalized absolute path inside the sandbox */
	bool readonly;
	char *transform;        /* absolute path of a transform plugin (docs/transforms.md), or NULL */
	char *transform_config; /* its config string, with transform */
	bool volume;  /* source names a volume (volumes/<source>) */
};

#define CAPSULE_TRANSFORM_CONFIG_MAX 4096

#define CAPSULE_MAX_PORTS 32
#define CAPSULE_MAX_ALLOW 64

/* One -p forward: the shim listens on HOST_IP:HOST_PORT and carries each connection to
 * 127.0.0.1:GUEST_PORT inside the sandbox's network namespace. */
struct port_forward {
	char host_ip[64]; /* canonical text form (inet_ntop) */
	uint16_t host_port;
	uint16_t guest_port;
};

/* One egress allowlist entry: IPv4 ADDR/PREFIX (network order), PORT 0 = any port. HOST is
 * the name it was resolved from (--allow-host), empty for --allow-cidr. */
struct egress_rule {
	uint32_t addr;
	uint8_t prefix;
	uint16_t port;
	char host[256];
};

/* A sandbox's configuration as stored in run/<name>/config: "key=value" lines. */
struct capsule_config {
	char name[CAPSULE_NAME_MAX + 1];
	char image[256];
	char hostname[64];
	capsule_isolation isolation;
	uint64_t memory_bytes;
	uint32_t cpus_milli;
	uint32_t pids_limit;
	uint32_t boot_timeout_ms;
	bool detached;
	char **env; /* NULL-terminated */
	size_t envc;
	struct tmpfs_mount tmpfs[CAPSULE_MAX_TMPFS];
	size_t ntmpfs;
	struct bind_mount binds[CAPSULE_MAX_BINDS];
	size_t nbinds;
	/* Host folders of read-only layers, bottom first (an OCI manifest's order), whose files
	 * carry the image's own ids; in overlayfs's format (0:0 character-device whiteouts,
	 * user.overlay.opaque). With base_none they are the whole root; otherwise they lie on top
	 * of the "host" image. */
	char *layers[CAPSULE_MAX_LAYERS];
	size_t nlayers;
	bool base_none;
	/* An image's defaults (its config): the working directory and user of commands that
	 * name none, and the command `run` gives when it is given none (Entrypoint + Cmd). */
	char *workdir, *user;
	char **entrypoint, **cmd; /* NULL-terminated, or NULL */
	int64_t created_unix;
	uint32_t id_slot;   /* root callers: the sandbox's host id range is base + slot * 65536 */
	capsule_network network;
	struct port_forward ports[CAPSULE_MAX_PORTS];
	size_t nports;
	struct egress_rule allow[CAPSULE_MAX_ALLOW];
	size_t nallow;
	capsule_progress_fn progress;
	void *progress_payload;
	char save[CAPSULE_NAME_MAX + 1]; /* save the sandbox's filesystem under this name when it stops; "" = ephemeral */
	/* vm isolation */
	bool boot_timeout_set; /* else the level's default applies */
	char accel[8];         /* "auto" (or empty), "kvm", "tcg" */
	char **qemu_args;      /* appended to QEMU's command line */
	size_t nqemu_args;
	uint64_t disk_bytes;   /* the root disk's size; 0: the default (src/shim/vm/disk.c) */
	char *disk_from;       /* a vm save's disk (saves/<name>/disk.qcow2) the root disk starts from */
	bool display;          /* a virtio GPU, keyboard and tablet, VNC on an owner-only socket (display.c) */
};

int config_serialize(const struct capsule_config *cfg, char **out, size_t *len);
int config_parse(const char *text, size_t len, struct capsule_config *cfg, capsule_error *err);
/* Read and parse the "config" file in the sandbox folder DIRFD. */
int config_load_at(int dirfd, struct capsule_config *cfg, capsule_error *err);
void config_clear(struct capsule_config *cfg);
/* The boot timeout a start waits: the one set, or the isolation level's default. */
uint32_t config_boot_timeout_ms(const struct capsule_config *cfg);
/* Put the layer folder PATH (absolute) on top of CFG's layers. */
int config_add_layer(struct capsule_config *cfg, const char *path, capsule_error *err);
int config_copy(struct capsule_config *dst, const struct capsule_config *src);
/* Put ENV (NULL-terminated; an image's Env, a save's) before CFG's own environment, so
 * that the sandbox's own (-e) wins over it. */
int config_prepend_env(struct capsule_config *cfg, const char *const *env, capsule_error *err);
/* Set an image default: the working directory, the user, the entrypoint or the cmd (a
 * NULL-terminated copy is made; ARGV NULL clears it). */
int config_set_image_defaults(struct capsule_config *cfg, const char *workdir, const char *user,
			      const char *const *entrypoint, const char *const *cmd, capsule_error *err);
/* Resolve CFG's image (not "host", no layers yet) into its layers and defaults: libcapsule's
 * image store (capsule_images) defines it; code linked without it (the shim) sees NULL. */
int image_resolve(struct capsule_config *cfg, capsule_error *err) __attribute__((weak));
/* The configuration a handle was made from. */
const struct capsule_config *sandbox_config(const capsule_sandbox *sb);
/* The network part of the configuration (src/lib/net.c): its config lines, and one line of
 * it read back (1 when KEY was a network key, 0 when not, negative on a bad value). */
void config_net_serialize(const struct capsule_config *cfg, FILE *f);
int config_net_parse_line(struct capsule_config *cfg, const char *key, const char *value, capsule_error *err);
/* The display (src/lib/display.c): refused for a container at create; inspect's "display". */
int config_display_check(const struct capsule_config *cfg, capsule_error *err);
/* -EINVAL where CFG asks its isolation level for what it cannot give: vm-only settings on a
 * container, a container's cpu limit beyond the host's CPUs. */
int config_level_check(const struct capsule_config *cfg, capsule_error *err);
struct json_writer;
void sandbox_display_inspect_json(capsule_sandbox *sb, bool running, struct json_writer *j);
/* Settings that only make sense together (an allowlist needs the full network). */
int config_net_check(const struct capsule_config *cfg, capsule_error *err);
const char *network_mode_name(capsule_network mode);
struct json_writer;
/* The "network" member of inspect's JSON: mode, ports (the shim's live list when RUNNING),
 * allowlist. */
void sandbox_net_inspect_json(capsule_sandbox *sb, const struct capsule_config *cfg, bool running,
			      struct json_writer *j);
/* "a.b.c.d/p:port" (":port" only when not 0) into BUF. */
void egress_rule_format(const struct egress_rule *e, char *buf, size_t size);

/* $CAPSULE_HOME (0700, its owner's alone; refused when another user owns it or may write
 * to it) and its folders, created on first use. */
int home_open(int *home_fd, capsule_error *err);
int home_subdir_open(const char *sub, int *fd, capsule_error *err);
/* The host uid/gid that the root of the sandbox in id slot SLOT maps to, and how many ids are
 * mapped. Each sandbox of a root caller has a range of its own, so that per-user kernel
 * limits (inotify instances, message queues, ...) of one cannot be spent by another. */
void home_id_map(uint32_t slot, uid_t *uid_base, gid_t *gid_base, uint32_t *count, bool *rootless);
/* Take the lowest free id slot for sandbox NAME (slots/N, a link naming its owner; a
 * link whose owner is gone is taken over), and give it back. */
int id_slot_take(const char *name, uint32_t *slot, capsule_error *err);
void id_slot_release(const char *name, uint32_t slot);

/* The read-only lower root of the "host" image (a skeleton: fresh /etc, empty /root, /tmp,
 * mount points for the host's /usr); made once, atomically. Returns its path (malloc'd). */
int image_host_lower(uid_t uid_base, gid_t gid_base, char **path, capsule_error *err);

/* Locate a helper binary ("capsule-shim", "capsule-agent"): $CAPSULE_LIBEXEC, then the folder
 * of the running binary or of libcapsule.so, then the install libexec folder. */
int find_helper(const char *name, char **path, capsule_error *err);

/* run/<name>/ helpers. */
int run_dir_open(const char *name, int *fd, capsule_error *err);
/* true if a shim holds run/<name>/lock */
bool run_dir_locked(int dirfd);
/* Clean up after a shim that died without doing so (SIGKILL): cgroups, sockets, and for an
 * ephemeral sandbox the whole folder. Returns 1 if it cleaned something, 0 if the sandbox is
 * alive or was already clean. */
int sweep_stale(const char *name);

int validate_name(const char *name, const char *what, capsule_error *err);

/* -EACCES with a message when the host path RESOLVED (a realpath) is one that sandboxes may
 * not see without being allowed explicitly. */
int check_sensitive_source(const char *resolved, capsule_error *err);

/* The sandbox's cgroup name: its own name plus a digest of $CAPSULE_HOME, so that two homes
 * (two users, two test runs) can each have a sandbox "dev" without sharing a cgroup. */
void sandbox_cgroup_name(const char *name, char *out, size_t size);

/* A blocking protocol connection to a sandbox's shim. */
struct conn {
	int fd;
	struct cp_rxbuf rx;
	struct cp_writer w;
	bool nonblocking;
};
/* Connect to run/<name>/control.sock and exchange HELLO. -ENOTCONN when the sandbox is not
 * running. */
int conn_open(struct conn *c, const char *name, capsule_error *err);
/* Adopt an fd that is already past HELLO (the creator's socketpair). */
void conn_adopt(struct conn *c, int fd);
/* Send the frame encoded in c->w. */
int conn_send(struct conn *c, capsule_error *err);
/* Receive one frame; TIMEOUT_MS < 0 waits forever, 0 does not wait (-EAGAIN). The payload
 * stays valid until conn_consume. */
int conn_recv(struct conn *c, struct cp_header *h, const uint8_t **payload, int timeout_ms, capsule_error *err);
void conn_consume(struct conn *c, const struct cp_header *h);
/* Turn an ERROR frame's payload into err and return its -errno. */
int conn_error_from_frame(const uint8_t *payload, size_t len, capsule_error *err);
void conn_close(struct conn *c);
/* Send the request the shim answers itself (MOUNT, PORT_ADD, ...) encoded in C->w on channel
 * 1 and wait for its final answer. On OK the fields it carries are decoded into *OK (when OK
 * is not NULL). */
int shim_request(struct conn *c, struct cp_request_ok *ok, capsule_error *err);
/* The same, waiting up to TIMEOUT_MS for the answer (a save copies a whole layer). */
int shim_request_wait(struct conn *c, struct cp_request_ok *ok, int timeout_ms, capsule_error *err);

/* The creator's connection of an ephemeral sandbox is already past HELLO: it is lent to one
 * command at a time, which saves a connect and a round trip on every exec. NULL when there is
 * none or it is lent out; then the caller opens its own. *CHAN is a channel id not used on it
 * before. */
struct conn *sandbox_borrow_conn(capsule_sandbox *sb, uint32_t *chan);
/* The same, but only a connection that is open and idle now: never connects (which waits for
 * the shim's HELLO). For calls that must not block. */
struct conn *sandbox_borrow_idle_conn(capsule_sandbox *sb, uint32_t *chan);
void sandbox_return_conn(capsule_sandbox *sb);

/* An open volume: its content as a folder fd, and a shared lock on volumes/<name>/lock
 * that says "in use" (volume rm takes it exclusively). For a quota volume MOUNT_FD is a
 * detached mount of its ext4 image (no mount namespace sees it); the loop device under it
 * is the one already serving that image, if any, so that every user shares one superblock. */
struct volume_handle {
	int lock_fd;
	int mount_fd; /* -1 for a folder volume */
	int data_fd;  /* O_PATH, O_DIRECTORY: the volume's content */
};
int volume_open(const char *name, struct volume_handle *vh, capsule_error *err);
/* Close everything but the lock; returns the lock fd (the caller owns it). */
int volume_release_keep_lock(struct volume_handle *vh);
void volume_close(struct volume_handle *vh);
/* NAME in the user's configuration folder: $XDG_CONFIG_HOME/capsule/NAME, else
 * $HOME/.config/capsule/NAME; -ENOENT when neither is an absolute path. */
int user_config_path(const char *name, char *out, size_t size);

/* Create NAME without a quota unless it exists (docker's `-v name:/path`); *CREATED says
 * whether this call made it, for a failed create to take it back. */
int volume_ensure(const char *name, bool *created, capsule_error *err);

/* A disk size as --disk-size takes it ("4G": 64M to 16T). */
int config_disk_size_parse(const char *size, uint64_t *bytes, capsule_error *err);
/* Fill what CFG leaves unset from the host's capsule.json (host_config.c): the disk size. */
int host_config_apply(struct capsule_config *cfg, capsule_error *err);

/* ext4 images on loop devices (ext4_image.c). mkfs.ext4 with OPTS (NULL-terminated) on the
 * image at path IMAGE; WHAT ("volume 'x'") begins every message. */
int ext4_image_mkfs(const char *image, const char *const *opts, const char *what, capsule_error *err);
/* A detached mount (no mount namespace sees it) of the ext4 image IMG, nosuid and nodev, with
 * the mount FLAGS (NULL-terminated, or NULL). The loop device is the one already serving IMG
 * if there is one, so every user shares one superblock; LABEL names a new one. The caller
 * keeps two attachers of one image apart (a flock). */
int ext4_image_mount(int img, const char *label, const char *const *flags, const char *what, int *mnt,
		     capsule_error *err);

/* A container sandbox's own layer (layer_disk.c): ROOT_FD holds upper/ and work/. It is the
 * sandbox's fs/ folder, or, when the sandbox has a disk size, the root of a detached mount
 * of its ext4 image run/<name>/layer.img. */
struct sandbox_layer {
	int root_fd;
};
bool layer_has_disk(const struct capsule_config *cfg);
/* -EPERM with a message where CFG's disk cannot be had (loop devices need root). */
int layer_disk_check(const struct capsule_config *cfg, capsule_error *err);
/* Open the layer of the sandbox whose folder is RUN_FD; MAKE makes what is missing (its
 * disk image, fs/) but never upper/ or work/, whose owner is the caller's to choose. */
int sandbox_layer_open(int run_fd, const struct capsule_config *cfg, bool make, struct sandbox_layer *l,
		       capsule_error *err);
void sandbox_layer_close(struct sandbox_layer *l);
/* The layer's upper/ as a folder fd, wherever it lives (for saves, checkpoints, forks). */
int sandbox_upper_open(int run_fd, const struct capsule_config *cfg, int *upper, capsule_error *err);
/* A sandbox with a disk gets a fresh one that FILL fills (ROOT_FD: its root), put in place
 * of the old only when FILL succeeded (a revert: the old layer and the new never share one
 * disk's room). */
typedef int (*layer_fill_fn)(int root_fd, void *payload, capsule_error *err);
int layer_disk_replace(int run_fd, const struct capsule_config *cfg, layer_fill_fn fill, void *payload,
		       capsule_error *err);

/* capsule_sandbox_create, with PREPARE called once the sandbox's folder, lock, id slot and
 * config exist and before its shim starts (a fork fills its layer there). */
typedef int (*sandbox_prepare_fn)(int run_dir_fd, const struct capsule_config *cfg, void *payload, capsule_error *err);
int sandbox_create_prepared(capsule_sandbox **out, const struct capsule_config *cfg, sandbox_prepare_fn prepare,
			    void *payload, capsule_error *err);

#endif
