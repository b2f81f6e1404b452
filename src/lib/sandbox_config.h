/* A sandbox's configuration: struct capsule_config, its limits, its on-disk form and the checks
 * made at create (config.c, config_keys.c, config_mounts.c; the network part in net_client.c). */
#ifndef CAPSULE_SANDBOX_CONFIG_H
#define CAPSULE_SANDBOX_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "capsule.h"

#define CAPSULE_NAME_MAX 63
#define CAPSULE_DEFAULT_BOOT_TIMEOUT_MS 10000
/* A VM boots a kernel; under TCG (no KVM) that is seconds, more on a loaded host. */
#define CAPSULE_DEFAULT_VM_BOOT_TIMEOUT_MS 60000
#define CAPSULE_MAX_QEMU_ARGS 64
/* A sandbox with no pids limit could spend the host's pids (pid_max is often 32768). */
#define CAPSULE_DEFAULT_PIDS_LIMIT 4096

#define CAPSULE_MAX_TMPFS 16
#define CAPSULE_DEFAULT_TMPFS_BYTES (64ull << 20)

struct tmpfs_mount {
	char *target; /* normalized absolute path inside the sandbox */
	uint64_t size_bytes;
	uint32_t mode;
};

#define CAPSULE_MAX_BINDS 32
#define CAPSULE_MAX_DEVICES 32
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

/* One --allow-host name answered by the sandbox's DNS proxy (the container level: the shim's
 * dns_proxy.c), PORT 0 = any port. Addresses are opened as the proxy hands them out. */
struct egress_name {
	char name[254];
	uint16_t port;
};

/* A sandbox's configuration as stored in run/<name>/config: "key=value" lines. */
struct capsule_config {
	char name[CAPSULE_NAME_MAX + 1];
	char image[256];
	char hostname[64];
	capsule_isolation isolation;
	uint64_t memory_bytes;
	uint32_t cpus_milli;
	/* The cgroup's cpu weight as cgroup v1's cpu.shares (2 to 262144; v2's cpu.weight is
	 * converted from it as runc converts it): an OCI spec's linux.resources.cpu.shares, which
	 * the kubelet sets from a container's cpu request. 0: the default (1024). */
	uint32_t cpu_shares;
	uint32_t pids_limit;
	/* An OCI spec's finer linux.resources (docs/oci.md; the shim's struct cgroup_limits says
	 * how each is written at cgroup v1 and v2). 0 or NULL: unset, the cgroup's default. */
	struct cgroup_extra {
		uint64_t cpu_quota_us, cpu_period_us; /* exact, instead of cpus_milli over 100 ms */
		uint64_t cpu_burst_us;
		uint64_t cpu_rt_runtime_us;           /* UINT64_MAX: -1, no limit */
		uint64_t cpu_rt_period_us;
		bool cpu_idle;
		char *cpuset_cpus, *cpuset_mems;      /* "0-3,6" */
		uint64_t memory_swap;                 /* memory + swap; UINT64_MAX: swap unlimited */
		uint64_t memory_reservation;          /* the soft limit (v2: memory.low) */
		bool memory_swappiness_set;
		uint32_t memory_swappiness;           /* 0 to 100 */
		bool oom_kill_disable;
		uint64_t memory_kernel_tcp;           /* v1's kmem.tcp limit */
	} cg;
	uint32_t boot_timeout_ms;
	uint32_t idle_pause_ms; /* the shim pauses the sandbox after this long idle; 0: never */
	bool detached;
	char **env; /* NULL-terminated */
	size_t envc;
	char **labels; /* NULL-terminated "KEY=VALUE", each KEY once */
	size_t nlabels;
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
	/* A host folder that is the container's root itself, writable, idmapped like a layer (an
	 * OCI bundle's rootfs: what the container writes lands there, as with runc); with
	 * base_none and no layers. NULL: the root is the layers below the sandbox's own. */
	char *rootfs;
	bool rootfs_readonly; /* that root read-only */
	/* Namespaced kernel settings the container level writes before /proc/sys is made
	 * read-only, "name=value,name=value" (an OCI spec's linux.sysctl); NULL: none. */
	char *sysctls;
	/* The sandbox's cgroup, "/a/b/c" from each hierarchy's root (an OCI spec's
	 * linux.cgroupsPath); NULL: capsule/<name>.<home digest>. */
	char *cgroup_path;
	/* A network namespace to join instead of making one (an OCI spec's
	 * linux.namespaces[].path of type network): its owner configures it, so capsule's own
	 * network (slirp4netns, ports, the allowlist) is not set up. NULL: the sandbox's own. */
	char *net_ns;
	/* An IPC and a UTS namespace to join (an OCI spec's paths: a pod's, its pause
	 * container's, named through that container's monitor): checked by the shim to be no
	 * namespace of the host's user namespace. The UTS one's hostname is its owner's. NULL:
	 * the sandbox's own. */
	char *ipc_ns, *uts_ns;
	/* A pid namespace to join (an OCI spec's path: a pod's shareProcessNamespace): at create
	 * it must be a running sandbox's of this home (sandbox.c); the agent is then not its PID 1
	 * (docs/oci.md). NULL: the sandbox's own. */
	char *pid_ns;
	/* More paths to mask and to make read-only than capsule's own lists (proc_masks.c), after
	 * the mounts: "/a,/b" (an OCI spec's linux.maskedPaths, readonlyPaths); NULL: none. */
	char *masked_paths, *readonly_paths;
	/* Mount attributes of binds and tmpfs mounts beyond capsule's own (nosuid, nodev, ro):
	 * "/a=noexec+strictatime,/b=noatime" (an OCI spec's mount options); NULL: none. */
	char *mount_attrs;
	/* The order of the tmpfs and bind mounts, one letter each, "ttbtb" (an OCI spec's, whose
	 * later mounts go over earlier ones); NULL: every tmpfs, then every bind. */
	char *mount_order;
	/* The sandbox's id maps as an OCI spec's linux.uidMappings and gidMappings give them,
	 * "HOST SIZE" for container ids from 0 (capsule_oci_spec_parse checks them); NULL: the
	 * sandbox's own range (id_slot). With them, the root folder and binds are not idmapped:
	 * their ids on disk are host ids, as the caller made them for the mapping. */
	char *uid_map, *gid_map;
	/* Device nodes the shim makes (an OCI spec's linux.devices beyond capsule's own):
	 * "T:MAJOR:MINOR:MODE:UID:GID:OPEN:PATH,..." with T c, b or p, MODE octal, OPEN 1 when the
	 * spec's device rules let it be read and written (0: it is there, and cannot be opened);
	 * NULL: none. */
	char *devices;
	/* An image's defaults (its config): the working directory and user of commands that
	 * name none, and the command `run` gives when it is given none (Entrypoint + Cmd). */
	char *workdir, *user;
	char **entrypoint, **cmd; /* NULL-terminated, or NULL */
	/* The capabilities of a command run as root, and the most any command of the sandbox may
	 * be given (an OCI spec's process.capabilities); unset: capsule's own set
	 * (container_default_caps). */
	bool caps_set;
	uint64_t caps;
	int64_t created_unix;
	uint32_t id_slot;   /* root callers: the sandbox's host id range is base + slot * 65536 */
	capsule_network network;
	struct port_forward ports[CAPSULE_MAX_PORTS];
	size_t nports;
	struct egress_rule allow[CAPSULE_MAX_ALLOW];
	size_t nallow;
	struct egress_name allow_names[CAPSULE_MAX_ALLOW];
	size_t nallow_names;
	char dns_server[64];          /* the DNS proxy's upstream "IP[:PORT]"; "": the host's first nameserver */
	bool dns_private;             /* the proxy may open private, loopback and link-local answers */
	uint64_t egress_quota_bytes;  /* bytes the sandbox may send out; 0: no quota */
	capsule_progress_fn progress;
	void *progress_payload;
	char save[CAPSULE_NAME_MAX + 1]; /* save the sandbox's filesystem under this name when it stops; "" = ephemeral */
	/* A create that names a pool takes a ready sandbox from it (pool.c); a sandbox whose own
	 * configuration names one is that pool's ready sandbox, not yet taken: hidden from the
	 * list, and its shim refuses every request but TAKE and STOP. "" = neither. */
	char pool[CAPSULE_NAME_MAX + 1];
	/* The name a pool's sandbox was started under, which its hostname keeps after a take
	 * renames it; "" = its own name. */
	char origin[CAPSULE_NAME_MAX + 1];
	/* What its cgroups are named after (sandbox_cgroup_name): "NAME~<8 hex>", made at its create,
	 * which no other sandbox has (no name holds '~'), so that an ended sandbox's cgroups can
	 * go after its name is free; "" = its name (a configuration written before). */
	char cgroup_base[CAPSULE_NAME_MAX + 10];
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
/* The same into a CFG the caller has zeroed (a calloc'd handle): the struct is about 39 KB, and
 * every `capsule exec` opens a handle, so it is not zeroed twice. */
int config_parse_zeroed(const char *text, size_t len, struct capsule_config *cfg, capsule_error *err);
int config_load_zeroed_at(int dirfd, struct capsule_config *cfg, capsule_error *err);
void config_clear(struct capsule_config *cfg);
/* The hostname inside: the one set, else the name the sandbox was started under (a pool's
 * sandbox keeps the one it booted with when a take renames it). */
const char *config_hostname(const struct capsule_config *cfg);
/* Whether the sandbox's own layer (a container's upper layer, a vm's qcow2) goes with it, so
 * that nothing need sync it to the host's disk: an ephemeral sandbox's is removed at its end
 * (kept, stopped, only by its creator on this boot). A detached sandbox's must survive a host
 * crash, and so must a pool's ready sandbox's, which a take may make detached: neither an
 * overlay's `volatile` nor QEMU's cache mode can be dropped while the sandbox runs. */
bool config_layer_volatile(const struct capsule_config *cfg);
/* The name its cgroups are made under (sandbox_cgroup_name): cgroup_base, else the origin,
 * else the name. */
const char *config_cgroup_base(const struct capsule_config *cfg);
/* BASE is a cgroup_base as the library makes them: a valid name, '~', 8 lowercase hex digits. */
bool cgroup_base_valid(const char *base);
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
/* Remove the blobs and layers no image, sandbox or save names (image.c; *FREED gets their
 * bytes), where the image store is linked: a save's removal may leave layers only it kept. */
int image_store_prune(uint64_t *freed, capsule_error *err) __attribute__((weak));
/* The network part of the configuration (src/lib/net_client.c): its config lines, and one line of
 * it read back (1 when KEY was a network key, 0 when not, negative on a bad value). */
void config_net_serialize(const struct capsule_config *cfg, FILE *f);
int config_net_parse_line(struct capsule_config *cfg, const char *key, const char *value, capsule_error *err);
/* The display (src/lib/display_client.c): refused for a container at create; inspect's "display". */
int config_display_check(const struct capsule_config *cfg, capsule_error *err);
/* -EINVAL where CFG asks its isolation level for what it cannot give: vm-only settings on a
 * container, a container's cpu limit beyond the host's CPUs. */
int config_level_check(const struct capsule_config *cfg, capsule_error *err);
/* docker's finer resource flags (config_resources.c): a cpuset LIST whose every cpu (MEMS:
 * memory node) the host has online; swap (UINT64_MAX: unlimited) and the reservation against
 * the memory limit, each error naming its flag; the whole of a config's (a vm refuses them). */
int config_cpuset_check(const char *list, bool mems, capsule_error *err);
int config_memory_pair_check(uint64_t memory, bool swap_set, uint64_t swap, uint64_t reservation, capsule_error *err);
int config_resources_check(const struct capsule_config *cfg, capsule_error *err);
/* Settings that only make sense together (an allowlist needs the full network). */
int config_net_check(struct capsule_config *cfg, capsule_error *err);
/* Which mount comes next of NT tmpfs and NB bind mounts once T and B of them are made, in
 * ORDER (config's mount_order; NULL: tmpfs first): 't', 'b', or 0 when all are made. Mounts
 * ORDER does not name (binds the shim adds) come after. */
char config_mount_next(const char *order, size_t nt, size_t nb, size_t t, size_t b);
/* The MOUNT_ATTR_* bits config's mount_attrs gives the mount at TARGET (0: none). */
uint64_t config_mount_attrs(const struct capsule_config *cfg, const char *target);
/* The propagation config's mount_attrs gives the mount at TARGET ("shared", "rshared",
 * "unbindable", "runbindable"): MS_SHARED or MS_UNBINDABLE, with CONFIG_PROPAGATION_RECURSIVE
 * for its submounts too; 0: private, as every mount of a sandbox is. */
#define CONFIG_PROPAGATION_RECURSIVE (1ull << 40)
uint64_t config_mount_propagation(const struct capsule_config *cfg, const char *target);
const char *network_mode_name(capsule_network mode);
/* "a.b.c.d/p:port" (":port" only when not 0) into BUF. */
void egress_rule_format(const struct egress_rule *e, char *buf, size_t size);

int validate_name(const char *name, const char *what, capsule_error *err);
/* Whether CFG has the label FILTER asks for: "KEY=VALUE", or "KEY" with any value. */
bool config_has_label(const struct capsule_config *cfg, const char *filter);

/* -EACCES with a message when the host path RESOLVED (a realpath) is one that sandboxes may
 * not see without being allowed explicitly. */
int check_sensitive_source(const char *resolved, capsule_error *err);

/* A disk size as --disk-size takes it ("4G": 64M to 16T). */
int config_disk_size_parse(const char *size, uint64_t *bytes, capsule_error *err);
/* Fill what CFG leaves unset from the host's capsule.json (host_config.c): the disk size. */
int host_config_apply(struct capsule_config *cfg, capsule_error *err);

#endif
