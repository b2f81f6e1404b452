/* The container level (level.h): namespaces, cgroups and seccomp around the agent as PID 1
 * (container.c), its root an overlay of the image's layers and the sandbox's own layer. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <linux/nsfs.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/sysmacros.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cgroup.h"
#include "freeze.h"
#include "json.h"
#include "rootless.h"
#include "save.h"
#include "shim.h"
#include "syscalls.h"

static bool container_rootless(const struct shim *s)
{
	uid_t ub;
	gid_t gb;
	uint32_t count;
	bool rootless;
	home_id_map(s->cfg.id_slot, &ub, &gb, &count, &rootless);
	return rootless;
}

/* The sandbox's host ids: its own range (home_id_map), or an OCI spec's mappings (config's
 * uid_map and gid_map, checked by the parser), then 1 (and *GCOUNT the gid map's size). */
static int sandbox_ids(const struct shim *s, uid_t *ub, gid_t *gb, uint32_t *count, uint32_t *gcount, bool *rootless,
		       capsule_error *err)
{
	home_id_map(s->cfg.id_slot, ub, gb, count, rootless);
	*gcount = 0;
	if (!s->cfg.uid_map && !s->cfg.gid_map)
		return 0;
	unsigned u, us, g, gs;
	if (*rootless || rootless_mapped_ids() || !s->cfg.uid_map || !s->cfg.gid_map ||
	    sscanf(s->cfg.uid_map, "%u %u", &u, &us) != 2 || sscanf(s->cfg.gid_map, "%u %u", &g, &gs) != 2 || !u || !g ||
	    !us || !gs || us > CAPSULE_ID_COUNT || gs > CAPSULE_ID_COUNT)
		return cap_err_plain(err, EINVAL, "the sandbox's id maps '%s' and '%s' cannot be used here",
				     s->cfg.uid_map ? s->cfg.uid_map : "", s->cfg.gid_map ? s->cfg.gid_map : "");
	*ub = u;
	*gb = g;
	*count = us;
	*gcount = gs;
	return 1;
}

/* Whether the pids limit falls to RLIMIT_NPROC (rootless.h): a user's sandbox without a pids
 * cgroup it may make (cgroup v1, or v2 without delegation). The default limit must never make a
 * default run fail, and an explicit one is enforced the same way. */
static bool pids_by_rlimit(const struct shim *s)
{
	if (!container_rootless(s) || !s->cfg.pids_limit)
		return false;
	struct cgroup_support sup;
	cgroup_probe(&sup);
	return !sup.pids;
}

static void container_cgroup_limits(const struct shim *s, struct cgroup_limits *lim)
{
	*lim = (struct cgroup_limits){
		.memory_bytes = s->cfg.memory_bytes,
		.cpus_milli = s->cfg.cpus_milli,
		.cpu_shares = s->cfg.cpu_shares,
		.pids_max = pids_by_rlimit(s) ? 0 : s->cfg.pids_limit,
		.x = &s->cfg.cg,
	};
}

static int make_agent_memfd(int *out, capsule_error *err)
{
	_cleanup_free_ char *path = NULL;
	int r = find_helper("capsule-agent", &path, err);
	if (r < 0)
		return r;
	_cleanup_close_ int src = open(path, O_RDONLY | O_CLOEXEC);
	if (src < 0)
		return cap_err(err, errno, "open '%s'", path);
	struct stat st;
	if (fstat(src, &st) < 0)
		return cap_err(err, errno, "stat '%s'", path);
	int fd = memfd_create("capsule-agent", MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_EXEC);
	if (fd < 0 && errno == EINVAL)
		fd = memfd_create("capsule-agent", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return cap_err(err, errno, "memfd_create");
	off_t off = 0;
	while (off < st.st_size) {
		ssize_t n = sendfile(fd, src, &off, (size_t)(st.st_size - off));
		if (n <= 0) {
			int e = n < 0 ? errno : EIO;
			close(fd);
			return cap_err(err, e, "copying '%s' into a memfd", path);
		}
	}
	/* Sealed: nothing in the sandbox can rewrite the binary it runs as PID 1 through
	 * /proc/1/exe (the runc CVE-2019-5736 class). */
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0) {
		int e = errno;
		close(fd);
		return cap_err(err, e, "sealing the agent memfd");
	}
	*out = fd;
	return 0;
}

/* Each layer folder becomes a read-only, nosuid, nodev detached clone (container.c idmaps it
 * and attaches it below FS/l/), and gets its empty mount point FS/l/<i>, owned by the
 * sandbox's root, which does the attaching. */
static int open_layer_trees(struct shim *s, uid_t ub, gid_t gb, capsule_error *err)
{
	struct container_boot *b = &s->ct_boot;
	if (s->cfg.rootfs) {
		/* The root itself, writable; idmapped in the child's hook like the layers. */
		int tree = shim_host_tree(AT_FDCWD, s->cfg.rootfs, 0, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV);
		if (tree < 0)
			return cap_err(err, errno, "the root folder '%s'", s->cfg.rootfs);
		b->layer_trees[b->nlayer_trees++] = tree;
		return 0;
	}
	if (!s->cfg.nlayers)
		return 0;
	/* Layer 0 goes on fs/rootfs, under the overlay (container_rootfs.c): only the others need
	 * a folder of their own. */
	if (s->cfg.nlayers > 1 &&
	    ((mkdirat(s->run_fd, "fs/l", 0700) < 0 && errno != EEXIST) || fchownat(s->run_fd, "fs/l", ub, gb, 0) < 0))
		return cap_err(err, errno, "mkdir 'fs/l'");
	for (size_t i = 0; i < s->cfg.nlayers; i++) {
		char at[32];
		snprintf(at, sizeof(at), "fs/l/%zu", i);
		if (i && ((mkdirat(s->run_fd, at, 0700) < 0 && errno != EEXIST) || fchownat(s->run_fd, at, ub, gb, 0) < 0))
			return cap_err(err, errno, "mkdir '%s'", at);
		int tree = shim_host_tree(AT_FDCWD, s->cfg.layers[i], 0, LAYER_ATTRS);
		if (tree < 0)
			return cap_err(err, errno, "image layer '%s'", s->cfg.layers[i]);
		b->layer_trees[b->nlayer_trees++] = tree;
	}
	return 0;
}

/* A root-run sandbox's "host" image: one skeleton for every sandbox (images/host-v1-0, owned by
 * root, the one a vm shares too), attached as the overlay's only layer and idmapped like a
 * layer (container.c), so that its root's files are the sandbox root's. Without it each id
 * range had a skeleton of its own, built (a copy of /etc/alternatives and the rest) the first
 * time the range was used: what made many sandboxes at once slow. A user's sandbox cannot
 * idmap, and keeps a skeleton owned by its own ids as the overlay's lowerdir. */
static int open_host_image_tree(struct shim *s, uid_t ub, gid_t gb, capsule_error *err)
{
	struct container_boot *b = &s->ct_boot;
	_cleanup_free_ char *skeleton = NULL;
	int r = image_host_lower(0, 0, &skeleton, err);
	if (r < 0)
		return r;
	/* Attached on fs/rootfs, under the overlay: no folder of its own. */
	int tree = shim_host_tree(AT_FDCWD, skeleton, 0, LAYER_ATTRS);
	if (tree < 0)
		return cap_err(err, errno, "the host image '%s'", skeleton);
	b->layer_trees[b->nlayer_trees++] = tree;
	return 0;
}

struct owned_dir {
	const char *path;
	mode_t mode;
};

static int make_owned_dirs(int at, const struct owned_dir *dirs, size_t n, uid_t ub, gid_t gb, capsule_error *err)
{
	for (size_t i = 0; i < n; i++) {
		if (mkdirat(at, dirs[i].path, dirs[i].mode) < 0 && errno != EEXIST)
			return cap_err(err, errno, "mkdir '%s'", dirs[i].path);
		if (fchownat(at, dirs[i].path, ub, gb, AT_SYMLINK_NOFOLLOW) < 0 ||
		    fchmodat(at, dirs[i].path, dirs[i].mode, 0) < 0)
			return cap_err(err, errno, "preparing '%s'", dirs[i].path);
	}
	return 0;
}

/* The sandbox's own layer: upper/ and work/ in fs/, or on its disk (*DISK, a detached mount
 * the child attaches at fs/disk), all the sandbox root's. The upper folder is the sandbox's
 * "/" as overlayfs shows it: its mode is the root's. */
static int prepare_layer(struct shim *s, uid_t ub, gid_t gb, int *disk, capsule_error *err)
{
	static const struct owned_dir in_folder[] = { { "fs", 0700 }, { "fs/upper", 0755 }, { "fs/work", 0700 },
						      { "fs/rootfs", 0700 } };
	static const struct owned_dir beside_disk[] = { { "fs", 0700 }, { "fs/disk", 0700 }, { "fs/rootfs", 0700 } };
	static const struct owned_dir on_disk[] = { { "upper", 0755 }, { "work", 0700 } };
	if (!layer_has_disk(&s->cfg))
		return make_owned_dirs(s->run_fd, in_folder, ARRAY_SIZE(in_folder), ub, gb, err);
	struct sandbox_layer l;
	int r = make_owned_dirs(s->run_fd, beside_disk, ARRAY_SIZE(beside_disk), ub, gb, err);
	if (r == 0)
		r = sandbox_layer_open(s->run_fd, &s->cfg, true, &l, err);
	if (r < 0)
		return r;
	/* A volatile overlay leaves work/work/incompat/volatile behind, which refuses the next
	 * mount on that work folder: a kept sandbox's start again gets a new one, as fs/work is
	 * removed at a stop (lifecycle.c). */
	if (config_layer_volatile(&s->cfg))
		rootless_rm_rf_at(l.root_fd, "work");
	if ((r = make_owned_dirs(l.root_fd, on_disk, ARRAY_SIZE(on_disk), ub, gb, err)) < 0) {
		sandbox_layer_close(&l);
		return r;
	}
	*disk = l.root_fd;
	return 0;
}

/* Config's devices (an OCI spec's linux.devices, docs/oci.md), each a node made here, as host
 * root, on a tmpfs of the host's user namespace, which is not nodev (the sandbox's own /dev is
 * its user namespace's, where the kernel opens no node), owned by its sandbox ids, and bound in
 * as a file: nosuid, noexec, and nodev too when the spec's device rules deny it. The tmpfs
 * itself is never attached: the sandbox sees each node alone, never a folder to make more in
 * (nor could it: mknod of a device needs the host's CAP_MKNOD). */
static int open_device_trees(struct shim *s, uid_t ub, gid_t gb, capsule_error *err)
{
	struct container_boot *b = &s->ct_boot;
	if (!s->cfg.devices)
		return 0;
	int fs = sys_fsopen("tmpfs", FSOPEN_CLOEXEC);
	if (fs < 0)
		return cap_err(err, errno, "a tmpfs for the sandbox's device nodes");
	int mnt = -1;
	if (sys_fsconfig(fs, FSCONFIG_SET_STRING, "size", "65536", 0) == 0 &&
	    sys_fsconfig(fs, FSCONFIG_SET_STRING, "mode", "0700", 0) == 0 &&
	    sys_fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) == 0)
		mnt = sys_fsmount(fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC);
	int e = errno;
	close(fs);
	if (mnt < 0)
		return cap_err(err, e, "a tmpfs for the sandbox's device nodes");
	int r = 0;
	size_t i = 0;
	for (const char *p = s->cfg.devices; r == 0 && p && *p && i < CAPSULE_MAX_DEVICES; i++) {
		char t;
		unsigned maj, min, mode, uid, gid;
		int open_ok, off = 0;
		const char *comma = strchr(p, ',');
		size_t len = comma ? (size_t)(comma - p) : strlen(p);
		if (sscanf(p, "%c:%u:%u:%o:%u:%u:%d:%n", &t, &maj, &min, &mode, &uid, &gid, &open_ok, &off) != 7 || !off ||
		    (size_t)off >= len || len - (size_t)off >= sizeof(b->device_targets[0]) || mode > 0777 ||
		    uid >= CAPSULE_ID_COUNT || gid >= CAPSULE_ID_COUNT || (t != 'c' && t != 'b' && t != 'p')) {
			r = cap_err_plain(err, EINVAL, "config's devices: '%.*s' is not a device", (int)len, p);
			break;
		}
		char *target = b->device_targets[i];
		snprintf(target, sizeof(b->device_targets[i]), "%.*s", (int)(len - (size_t)off), p + off);
		char name[16];
		snprintf(name, sizeof(name), "d%zu", i);
		mode_t type = t == 'c' ? S_IFCHR : t == 'b' ? S_IFBLK : S_IFIFO;
		int tree = -1;
		if (mknodat(mnt, name, type | 0600, t == 'p' ? 0 : makedev(maj, min)) < 0 ||
		    fchownat(mnt, name, ub + uid, gb + gid, AT_SYMLINK_NOFOLLOW) < 0 || fchmodat(mnt, name, mode, 0) < 0 ||
		    (tree = sys_open_tree(mnt, name, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC)) < 0) {
			r = cap_err(err, errno, "the device node '%s'", target);
			break;
		}
		struct mount_attr a = { .attr_set = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC | (open_ok ? 0 : MOUNT_ATTR_NODEV) };
		if (sys_mount_setattr(tree, "", AT_EMPTY_PATH, &a) < 0) {
			r = cap_err(err, errno, "the device node '%s'", target);
			close(tree);
			break;
		}
		b->binds[b->nbinds++] = (struct container_bind){ .tree = tree, .target = target, .no_idmap = true };
		p = comma ? comma + 1 : p + len;
	}
	close(mnt);
	return r;
}

/* Everything the child attaches, opened here with the shim's rights: the layers, the
 * sandbox's own layer, the binds, the network's /etc files, and the agent's binary. */
static int container_prepare(struct shim *s, capsule_error *err)
{
	struct container_boot *b = &s->ct_boot;
	uid_t ub;
	gid_t gb;
	uint32_t count, gcount;
	bool rootless;
	int r = sandbox_ids(s, &ub, &gb, &count, &gcount, &rootless, err);
	if (r < 0)
		return r;
	/* The library resolved the image to layers; "host" with no layers is the host image. */
	bool shared_host = !s->cfg.base_none && !rootless && !s->cfg.nlayers && !s->cfg.rootfs;
	if (!s->cfg.base_none && !shared_host && (r = image_host_lower(ub, gb, &b->lower, err)) < 0)
		return r;
	if ((r = prepare_layer(s, ub, gb, &b->disk, err)) < 0)
		return r;
	if (shared_host && (r = open_host_image_tree(s, ub, gb, err)) < 0)
		return r;
	if ((r = fd_path(s->run_fd, b->fsdir, sizeof(b->fsdir) - 4, err)) < 0)
		return r;
	strcat(b->fsdir, "/fs");
	shim_progress("rootfs-prep");
	if ((r = make_agent_memfd(&b->memfd, err)) < 0)
		return r;
	shim_progress("memfd");
	if ((r = open_layer_trees(s, ub, gb, err)) < 0)
		return r;
	if ((r = open_bind_trees(s, b->binds, &b->nbinds, false, err)) < 0)
		return r;
	int etc_trees[2];
	const char *etc_targets[2];
	size_t netc = 0;
	if ((r = net_etc_trees(&s->net, s->run_fd, etc_trees, etc_targets, &netc, err)) < 0)
		return r;
	for (size_t i = 0; i < netc; i++)
		b->binds[b->nbinds++] = (struct container_bind){ .tree = etc_trees[i], .target = etc_targets[i],
								 .attrs = NET_ETC_ATTRS };
	if (!rootless && (r = open_device_trees(s, ub, gb, err)) < 0)
		return r;
	return 0;
}

/* What the start did not take yet: it closes these itself once the child has them. */
static void container_boot_close(struct container_boot *b)
{
	free(b->lower);
	if (b->disk >= 0)
		close(b->disk);
	if (b->memfd >= 0)
		close(b->memfd);
	for (size_t i = 0; i < b->nlayer_trees; i++)
		close(b->layer_trees[i]);
	close_bind_trees(b->binds, b->nbinds);
	memset(b, 0, sizeof(*b));
	b->disk = b->memfd = -1;
}

static void container_unprepare(struct shim *s)
{
	container_boot_close(&s->ct_boot);
	binds_release(s);
}

/* A namespace to join, opened with the shim's (the caller's) rights and checked to be of TYPE,
 * into *FD; -1 when PATH is NULL (the sandbox makes its own). An IPC or UTS namespace must
 * also be a sandbox's: one owned by the shim's own user namespace is the host's (or a
 * container's that shares the host's ids), and sharing it would undo the sandbox. A network
 * namespace is the CRI's or podman's, made for the container and owned by the host. */
int shim_open_joined_ns(const char *path, int type, const char *what, int *fd, capsule_error *err)
{
	*fd = -1;
	if (!path)
		return 0;
	int f = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (f < 0)
		return cap_err(err, errno, "the %s namespace '%s'", what, path);
	int got = ioctl(f, NS_GET_NSTYPE);
	if (got != type) {
		int e = got < 0 && errno != ENOTTY ? errno : EINVAL;
		close(f);
		return cap_err_plain(err, e, "'%s' is not %s %s namespace", path, type == CLONE_NEWIPC ? "an" : "a", what);
	}
	if (type != CLONE_NEWNET) {
		struct stat owner, own;
		int u = ioctl(f, NS_GET_USERNS);
		int r = u < 0 ? -errno : fstat(u, &owner) < 0 || stat("/proc/self/ns/user", &own) < 0 ? -errno : 0;
		if (u >= 0)
			close(u);
		if (r == 0 && owner.st_ino == own.st_ino && owner.st_dev == own.st_dev)
			r = -EPERM;
		if (r < 0) {
			close(f);
			if (r == -EPERM)
				return cap_err_plain(err, EPERM,
						     "the %s namespace '%s' is the host's, not a sandbox's: capsule never "
						     "shares the host's (in a pod, the pause container must be capsule's too)",
						     what, path);
			return cap_err(err, -r, "the owner of the %s namespace '%s'", what, path);
		}
	}
	*fd = f;
	return 0;
}

static int container_start_process(struct shim *s, int agent_sock, capsule_error *err)
{
	struct container_boot *b = &s->ct_boot;
	uid_t ub;
	gid_t gb;
	uint32_t count;
	bool rootless;
	uint32_t gcount;
	int spec_ids = sandbox_ids(s, &ub, &gb, &count, &gcount, &rootless, err);
	if (spec_ids < 0) {
		container_boot_close(b);
		return spec_ids;
	}
	struct container_tmpfs tmpfs[CAPSULE_MAX_TMPFS];
	for (size_t i = 0; i < s->cfg.ntmpfs; i++)
		tmpfs[i] = (struct container_tmpfs){ s->cfg.tmpfs[i].target, s->cfg.tmpfs[i].size_bytes, s->cfg.tmpfs[i].mode,
						     config_mount_attrs(&s->cfg, s->cfg.tmpfs[i].target),
						     config_mount_propagation(&s->cfg, s->cfg.tmpfs[i].target) };
	struct rootless_ids ids;
	if (rootless)
		rootless_ids(&ids);
	bool by_cgroup = s->cg && cgroup_controller_path(s->cg, "pids");
	snprintf(s->ct.pids_by, sizeof(s->ct.pids_by), "%s",
		 !s->cfg.pids_limit ? "" : by_cgroup ? "cgroup" : "rlimit_nproc");
	struct container_spec spec = {
		.hostname = config_hostname(&s->cfg),
		.lowerdir = b->lower,
		.fsdir = b->fsdir,
		.host_image = !s->cfg.base_none,
		.agent_memfd = b->memfd,
		.agent_sock = agent_sock,
		.uid_base = ub,
		.gid_base = gb,
		.id_count = count,
		.gid_count = gcount,
		.spec_ids = spec_ids,
		.rootless = rootless,
		.rootless_ids = rootless ? &ids : NULL,
		.pids_rlimit = s->cfg.pids_limit && !by_cgroup ? s->cfg.pids_limit : 0,
		.tmpfs = tmpfs,
		.ntmpfs = s->cfg.ntmpfs,
		.binds = b->binds,
		.nbinds = b->nbinds,
		.mount_order = s->cfg.mount_order,
		.layer_trees = b->layer_trees,
		.nlayers = b->nlayer_trees,
		.disk_tree = b->disk,
		.root_is_tree = s->cfg.rootfs != NULL,
		.volatile_upper = config_layer_volatile(&s->cfg),
		.root_readonly = s->cfg.rootfs_readonly,
		.sysctls = s->cfg.sysctls,
		.masked_paths = s->cfg.masked_paths,
		.readonly_paths = s->cfg.readonly_paths,
		.net_ns = s->cfg.net_ns,
		.ipc_ns = s->cfg.ipc_ns,
		.uts_ns = s->cfg.uts_ns,
		.net_ns_fd = -1,
		.pid_ns = s->cfg.pid_ns,
		.ipc_ns_fd = -1,
		.uts_ns_fd = -1,
		.pid_ns_fd = -1,
	};
	int r = shim_open_joined_ns(s->cfg.net_ns, CLONE_NEWNET, "network", &spec.net_ns_fd, err);
	if (r == 0)
		r = shim_open_joined_ns(s->cfg.ipc_ns, CLONE_NEWIPC, "ipc", &spec.ipc_ns_fd, err);
	if (r == 0)
		r = shim_open_joined_ns(s->cfg.uts_ns, CLONE_NEWUTS, "uts", &spec.uts_ns_fd, err);
	/* In a joined pid namespace the sandbox's end does not end its processes (its agent is
	 * not the namespace's PID 1): its cgroup is what they are found and killed by. */
	if (r == 0 && s->cfg.pid_ns && !cgroup_tracks(s->cg))
		r = cap_err_plain(err, EOPNOTSUPP, "joining the pid namespace '%s' needs a cgroup of the sandbox's own, "
						   "which ends its processes", s->cfg.pid_ns);
	if (r == 0)
		r = shim_open_joined_ns(s->cfg.pid_ns, CLONE_NEWPID, "pid", &spec.pid_ns_fd, err);
	/* On cgroup v1 the child moves itself (container.c); elsewhere the shim moves it. */
	int tasks_fds[CGROUP_MAX_DIRS];
	int ntasks = 0;
	if (r == 0 && s->cg && (ntasks = cgroup_open_self_join(s->cg, tasks_fds, err)) < 0)
		r = ntasks;
	if (r < 0) {
		if (spec.net_ns_fd >= 0)
			close(spec.net_ns_fd);
		if (spec.ipc_ns_fd >= 0)
			close(spec.ipc_ns_fd);
		if (spec.uts_ns_fd >= 0)
			close(spec.uts_ns_fd);
		if (spec.pid_ns_fd >= 0)
			close(spec.pid_ns_fd);
		container_boot_close(b);
		return r;
	}
	spec.cgroup_tasks_fds = tasks_fds;
	spec.ncgroup_tasks = (size_t)ntasks;
	shim_progress("namespaces");
	r = container_start(&s->ct, &spec, ntasks > 0 ? NULL : sandbox_join_cgroup, s, err);
	for (int i = 0; i < ntasks; i++)
		close(tasks_fds[i]);
	if (spec.net_ns_fd >= 0)
		close(spec.net_ns_fd);
	if (spec.ipc_ns_fd >= 0)
		close(spec.ipc_ns_fd);
	if (spec.uts_ns_fd >= 0)
		close(spec.uts_ns_fd);
	if (spec.pid_ns_fd >= 0)
		close(spec.pid_ns_fd);
	/* The child has its mounts: the shim keeps none of them. */
	container_boot_close(b);
	if (r < 0)
		return r;
	s->proc_pid = s->ct.pid;
	s->proc_pidfd = s->ct.pidfd;
	return 0;
}

static int container_died_during_start(struct shim *s, capsule_error *err)
{
	(void)s;
	return cap_err_plain(err, ECHILD, "the sandbox's init died during start");
}

/* Before any client can run a command: the interface, the allowlist. */
static int container_ready(struct shim *s, capsule_error *err)
{
	return net_start(&s->net, &s->ct, container_rootless(s), s->boot_deadline_ms, err);
}

/* SIGKILL to PID 1 takes every process of the sandbox with it (pid namespace). Transform
 * servers first: a command waiting on one (a slow plugin, a huge write) sits in the kernel
 * where SIGKILL cannot reach it until the server answers; with the server gone, its
 * connection is aborted and every waiter returns. */
/* A sandbox in a joined pid namespace (a pod's): its processes outlive its agent, which is not
 * that namespace's PID 1, and are killed through its cgroup. */
static void kill_joined_pid_ns(struct shim *s)
{
	capsule_error err = { 0 };
	if (s->cfg.pid_ns && cgroup_kill_all(s->cg, &err) < 0)
		shim_log("ending the processes of a joined pid namespace: %s", err.message);
}

static void container_kill(struct shim *s)
{
	transform_servers_reap(s, true);
	sys_pidfd_send_signal(s->ct.pidfd, SIGKILL);
	kill_joined_pid_ns(s);
}

static void container_teardown(struct shim *s)
{
	if (s->ct.pidfd >= 0) {
		io_unwatch(&s->io, s->ct.pidfd);
		proc_kill_and_reap(s->ct.pidfd);
		close(s->ct.pidfd);
	}
	kill_joined_pid_ns(s);
	if (s->ct.mntns_fd >= 0) {
		if (s->unmount_later && s->ended_mntns < 0)
			s->ended_mntns = s->ct.mntns_fd;
		else
			close(s->ct.mntns_fd); /* unmounts now */
	}
	s->ct.mntns_fd = -1;
	s->ct.pid = s->proc_pid = -1;
	s->ct.pidfd = s->proc_pidfd = -1;
}

static int container_freeze(struct shim *s, bool on, capsule_error *err)
{
	char cgname[SANDBOX_CGROUP_NAME_MAX];
	sandbox_cgroup_name(config_cgroup_base(&s->cfg), cgname, sizeof(cgname));
	return sandbox_freeze(s->cg, cgname, on, err);
}

static int container_pause(struct shim *s, capsule_error *err)
{
	return container_freeze(s, true, err);
}

static int container_resume(struct shim *s, capsule_error *err)
{
	return container_freeze(s, false, err);
}

/* A rootless sandbox's ids are its user's own: nothing to map. */
static int container_hot_idmap(struct shim *s, int tree, uid_t owner_uid, gid_t owner_gid, bool readonly,
			       const char *what, capsule_error *err)
{
	(void)readonly;
	int r = container_rootless(s) ? 0 : container_idmap_tree(&s->ct, tree, owner_uid, owner_gid, err);
	return r < 0 ? cap_err_wrap(err, r, "mount of '%s'", what) : 0;
}

/* The tree is read-only already where asked (mounts.c), but for a rootless shim's, which the
 * attach clones: the name is the vm share's. */
static int container_hot_attach_op(struct shim *s, int tree, const char *name, const char *target, bool is_dir,
				   bool readonly, uint64_t *mnt_id, capsule_error *err)
{
	(void)name;
	uint64_t attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | (readonly ? MOUNT_ATTR_RDONLY : 0);
	return container_hot_attach(&s->ct, container_rootless(s), tree, attrs, target, is_dir, mnt_id, err);
}

static int container_hot_detach_op(struct shim *s, const char *name, const char *target, uint64_t mnt_id,
				   capsule_error *err)
{
	(void)name;
	return container_hot_detach(&s->ct, container_rootless(s), target, mnt_id, err);
}

/* layer_op's own dispatch, as for a save of the running sandbox: not repeated here. */
static int container_save_at_stop(struct shim *s, const char *name, capsule_error *err)
{
	return layer_op(&s->cfg, s->run_fd, SAVE_OP_SAVE, name, err);
}

static void container_describe(const struct shim *s, struct json_writer *j)
{
	json_kv_bool(j, "oom_floor", s->ct.oom_floor);
	if (!s->ct.oom_floor)
		json_kv_string(j, "oom_note", s->ct.oom_note);
	if (s->ct.pids_by[0])
		json_kv_string(j, "pids_limit_by", s->ct.pids_by);
	if (!container_rootless(s))
		return;
	/* What a user's sandbox maps: its ids 1.. onto the user's subordinate range, or only
	 * root onto the user. */
	struct rootless_ids ids;
	rootless_ids(&ids);
	json_key(j, "rootless");
	json_object_begin(j);
	json_kv_string(j, "id_map", ids.ranges ? "subordinate" : "single");
	if (ids.ranges) {
		json_kv_uint(j, "sub_uid_start", ids.sub_uid.start);
		json_kv_uint(j, "sub_uid_count", ids.sub_uid.count);
		json_kv_uint(j, "sub_gid_start", ids.sub_gid.start);
		json_kv_uint(j, "sub_gid_count", ids.sub_gid.count);
	} else {
		json_kv_string(j, "id_map_note", ids.note);
	}
	json_object_end(j);
}

static int container_display(struct shim *s, const struct cp_header *h, const uint8_t *payload, struct cp_writer *w,
			     capsule_error *err)
{
	(void)payload;
	(void)w;
	return cap_err_plain(err, EOPNOTSUPP, "%s: sandbox '%s' has no display (a display needs --isolation vm)",
			     h->type == CP_SCREENSHOT ? "screenshot" : "input", s->cfg.name);
}

const struct level_ops container_level = {
	.name = "container",
	.passes_fds = true,
	.cgroup_limits = container_cgroup_limits,
	.prepare = container_prepare,
	.unprepare = container_unprepare,
	.start = container_start_process,
	.died_during_start = container_died_during_start,
	.ready = container_ready,
	.kill = container_kill,
	.teardown = container_teardown,
	.pause = container_pause,
	.resume = container_resume,
	.hot_idmap = container_hot_idmap,
	.hot_attach = container_hot_attach_op,
	.hot_detach = container_hot_detach_op,
	.save_at_stop = container_save_at_stop,
	.describe = container_describe,
	.display = container_display,
};
