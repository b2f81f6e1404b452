/* The vm level (level.h): QEMU in place of the namespaces, its virtio-serial port in place of
 * the socketpair's far end; from the agent's bring-up on, nothing differs. The host folders
 * reach the guest over one 9p share (shares.c), mounted there by the agent on request. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cgroup.h"
#include "json.h"
#include "save.h"
#include "shim.h"
#include "syscalls.h"
#include "vmnet.h"

/* A KVM boot that auto chose gets this long for the agent's HELLO: TCG is what is left to try. */
#define VM_KVM_BOOT_MS 20000
/* The agent's answer to a mount request of the shim's. */
#define VM_CALL_TIMEOUT_MS 20000
/* The agent channel of the shim's own sync of the guest's disks. */
#define VM_SYNC_CHAN 0xfffffff0u

/* QEMU is the vm's every host process, and the transform servers of its binds work for it:
 * they go in the sandbox's cgroups, as Firecracker's jailer puts its VMM in the microVM's.
 * The limits are QEMU's (vm.h): the guest's RAM plus an allowance, its vCPUs' time, a bound
 * on its threads where the pids controller can be had (the guest's kernel counts the guest's
 * processes). */
static void vm_cgroup_limits(const struct shim *s, struct cgroup_limits *lim)
{
	struct cgroup_support sup;
	cgroup_probe(&sup);
	*lim = (struct cgroup_limits){
		.memory_bytes = s->cfg.memory_bytes ? s->cfg.memory_bytes + VM_QEMU_MEMORY_ALLOWANCE : 0,
		.cpus_milli = s->cfg.cpus_milli,
		.cpu_shares = s->cfg.cpu_shares,
		.pids_max = sup.pids ? VM_QEMU_PIDS_MAX : 0,
	};
}

/* One mount request to the agent and its final answer (agent_wait_answer), as a container's
 * hot mount child is waited for. MOUNT or UNMOUNT is set; *MNT_ID gets VM_MOUNTED's id. */
static int vm_agent_call(struct shim *s, const struct cp_vm_mount *mount, const struct cp_vm_unmount *unmount,
			 uint64_t *mnt_id, capsule_error *err)
{
	if (s->io.agent_fd < 0 || s->stopping)
		return cap_err_plain(err, ESHUTDOWN, "sandbox '%s' is stopping", s->name);
	uint32_t chan = io_agent_chan_new(&s->io);
	int r = mount ? cp_vm_mount_encode(&s->io.w, chan, mount) : cp_vm_unmount_encode(&s->io.w, chan, unmount);
	if (r < 0)
		return cap_err(err, -r, "encoding %s", mount ? "VM_MOUNT" : "VM_UNMOUNT");
	if (mount && (mount->kind == CP_VM_MOUNT_SHARES_OFF || mount->kind == CP_VM_MOUNT_SHARES_ON))
		shim_log("asking the guest to %s the share of host folders",
			 mount->kind == CP_VM_MOUNT_SHARES_ON ? "mount" : "unmount");
	else
		shim_log("asking the guest to %s '%s'", mount ? "mount" : "unmount", mount ? mount->target : unmount->target);
	io_to_agent(&s->io, s->io.w.buf, s->io.w.len);
	struct cp_header h;
	const uint8_t *payload;
	if ((r = agent_wait_answer(s, chan, VM_CALL_TIMEOUT_MS, "a mount request", &h, &payload, err)) < 0)
		return r;
	if (h.type == CP_ERROR) {
		struct cp_error_msg m;
		if (cp_error_decode(payload, h.len, &m) < 0)
			r = cap_err_plain(err, EPROTO, "malformed ERROR from the agent");
		else
			r = cap_err_plain(err, m.errnum ? (int)m.errnum : EIO, "%s", m.message ? m.message : "");
		if (r == 0)
			r = -EIO;
		cp_error_free(&m);
	} else if (mount && h.type == CP_VM_MOUNTED) {
		struct cp_vm_mounted m;
		r = cp_vm_mounted_decode(payload, h.len, &m) < 0 ? cap_err_plain(err, EPROTO, "malformed VM_MOUNTED from the agent")
								   : 0;
		if (r == 0 && mnt_id)
			*mnt_id = m.mnt_id;
	} else if (!mount && h.type == CP_OK) {
		r = 0;
	} else {
		r = cap_err_plain(err, EPROTO, "the agent answered %s with %s", mount ? "VM_MOUNT" : "VM_UNMOUNT",
				  cp_type_name(h.type));
	}
	cp_rxbuf_consume(&s->io.agent_rx, &h);
	return r;
}

/* The guest's file systems synced (SAVE to the agent): what its commands wrote may still be
 * in its page cache, which a QMP stop or QEMU's quit would not flush. */
static int vm_agent_sync(struct shim *s, uint32_t timeout_ms, capsule_error *err)
{
	if (io_chan_by_agent(&s->io, VM_SYNC_CHAN))
		return cap_err_plain(err, EBUSY, "agent channel %u is in use", VM_SYNC_CHAN);
	struct cp_save m = { .op = CP_SAVE_OP_SAVE, .name = (char *)"sync" };
	struct cp_writer w;
	cp_writer_init(&w);
	int r = cp_save_encode(&w, VM_SYNC_CHAN, &m);
	if (r == 0) {
		shim_log("asking the guest to sync its disks");
		io_to_agent(&s->io, w.buf, w.len);
	}
	cp_writer_free(&w);
	if (r < 0)
		return cap_err(err, -r, "asking the agent to sync");
	struct cp_header h;
	const uint8_t *payload;
	if ((r = agent_wait_answer(s, VM_SYNC_CHAN, timeout_ms, "a sync of its disks", &h, &payload, err)) < 0)
		return r;
	bool ok = h.type == CP_OK;
	cp_rxbuf_consume(&s->io.agent_rx, &h);
	return ok ? 0 : cap_err_plain(err, EIO, "the agent could not sync the guest's disks");
}

/* The guest's ids on a host folder are the container level's: OWNER for its root, the
 * sandbox's own host range for the rest (vm_shares_idmap). */
static int vm_hot_idmap(struct shim *s, int tree, uid_t owner_uid, gid_t owner_gid, bool readonly, const char *what,
			capsule_error *err)
{
	uid_t ub;
	gid_t gb;
	uint32_t count;
	bool rootless;
	/* A user's share is attached in QEMU's user namespace, which maps the guest's ids as a
	 * container's (vm_shares_enter): nothing to idmap. */
	if (s->shares.deferred)
		return 0;
	home_id_map(s->cfg.id_slot, &ub, &gb, &count, &rootless);
	return vm_shares_idmap(tree, owner_uid, owner_gid, ub, gb, count, readonly, what, err);
}

/* Boot-time binds and volumes become entries b<i> of the share, before QEMU starts. */
static int vm_boot_shares(struct shim *s, capsule_error *err)
{
	int r = vm_shares_prepare(&s->shares, s->run_fd, err);
	if (r < 0 || (r = vm_net_hosts_attach(&s->cfg, &s->shares, err)) < 0 || !s->cfg.nbinds)
		return r;
	if (!s->shares.enabled)
		return cap_err_plain(err, EOPNOTSUPP,
				     "bind mounts and volumes with vm isolation need capsule to run as root (sandbox '%s')",
				     s->name);
	struct container_bind binds[CAPSULE_MAX_BINDS + 2];
	size_t nbinds = 0;
	if ((r = open_bind_trees(s, binds, &nbinds, true, err)) < 0)
		return r;
	for (size_t i = 0; i < nbinds && r == 0; i++) {
		char name[16];
		snprintf(name, sizeof(name), "b%zu", i);
		/* A transform's server maps ids itself. */
		if (!binds[i].no_idmap)
			r = vm_hot_idmap(s, binds[i].tree, geteuid(), getegid(), s->cfg.binds[i].readonly,
					 s->cfg.binds[i].source, err);
		if (r == 0)
			r = vm_shares_attach(&s->shares, binds[i].tree, name, binds[i].is_dir, binds[i].attrs, err);
	}
	close_bind_trees(binds, nbinds);
	return r;
}

/* The vm's root disk (src/shim/vm/disk.c): the layer stack (the host image's skeleton at the
 * bottom unless the image is the whole root) flattened into a cached ext4, and the sandbox's
 * own qcow2 over it. */
static int vm_root_disk(struct shim *s, const char *skeleton, capsule_error *err)
{
	char *stack[CAPSULE_MAX_LAYERS + 1];
	size_t n = 0;
	if (skeleton)
		stack[n++] = (char *)skeleton;
	for (size_t i = 0; i < s->cfg.nlayers; i++)
		stack[n++] = s->cfg.layers[i];
	char run_path[PATH_MAX];
	int rp = fd_path(s->run_fd, run_path, sizeof(run_path), err);
	if (rp < 0)
		return rp;
	_cleanup_free_ char *base = NULL;
	/* From a vm save: its disk (over the ext4 it was made on) is the new disk's backing. */
	int r = s->cfg.disk_from ? ((base = strdup(s->cfg.disk_from)) ? 0 : cap_err(err, ENOMEM, "vm disk"))
				 : vm_rootfs(stack, n, &base, err);
	if (r == 0)
		r = vm_disk_overlay(s->run_fd, run_path, base, s->cfg.disk_bytes, s->cfg.image, &s->vm_boot.disk, err);
	s->vm_boot.disk_mode = skeleton ? VM_DISK_MODE_HOST : VM_DISK_MODE_ROOT;
	if (r == 0)
		shim_log("root disk %s over %s", s->vm_boot.disk, base);
	return r;
}

static int vm_prepare(struct shim *s, capsule_error *err)
{
	int r = vm_net_allowlist_check(&s->cfg, err);
	if (r < 0)
		return r;
	_cleanup_free_ char *skeleton = NULL;
	/* 9p shows the guest the skeleton's host owners as they are: root's own, for root. */
	if (!s->cfg.base_none && (r = image_host_lower(geteuid(), getegid(), &skeleton, err)) < 0)
		return r;
	if ((r = vm_boot_shares(s, err)) < 0)
		return r;
	shim_progress("disk");
	return vm_root_disk(s, skeleton, err);
}

/* The host folders are detached from the share before anything removes the run folder. */
static void vm_unprepare(struct shim *s)
{
	vm_shares_release(&s->shares);
	binds_release(s);
	free(s->vm_boot.disk);
	s->vm_boot.disk = NULL;
}

static bool vm_auto_accel(const struct shim *s)
{
	return !s->cfg.accel[0] || !strcmp(s->cfg.accel, "auto");
}

/* The memory state into the new QEMU, which then runs on from where the old one stopped. A
 * QEMU that cannot load it exits: its last words say why. */
static int vm_load_memory(struct shim *s, capsule_error *err)
{
	uint64_t t0 = now_ns();
	int r = vm_migrate_from_file(&s->vm, s->run_fd, err);
	if (r < 0) {
		char why[512];
		vm_kill(&s->vm);
		proc_kill_and_reap(s->vm.pidfd);
		vm_last_words(s->run_fd, why, sizeof(why));
		if (why[0])
			cap_err_plain(err, r == -EIO ? EIO : -r, "QEMU could not load the memory state: %s", why);
		return r;
	}
	shim_progress("loaded");
	shim_log("memory state loaded (%.1f ms)", (double)(now_ns() - t0) / 1e6);
	return vm_qmp(&s->vm, "cont", err);
}

/* The accelerator the saved QEMU ran with (state.json, written at the pause): the state of a
 * TCG guest is not a KVM guest's. */
static const char *vm_saved_accel(struct shim *s)
{
	_cleanup_free_ char *text = NULL, *accel = NULL;
	size_t len = 0;
	if (read_file_at(s->run_fd, "state.json", 1u << 16, &text, &len) < 0 ||
	    json_get_string(text, len, "accel", &accel) < 0)
		return NULL;
	return !strcmp(accel, "kvm") ? "kvm" : !strcmp(accel, "tcg") ? "tcg" : NULL;
}

/* A pod's pid namespace is refused. Its IPC and UTS namespaces by path (an OCI spec's, a Kubernetes pod's: its pause
 * container's, a sandbox of the container level): checked as the container level checks
 * them, so the host's is refused. The guest has its own of both: the UTS one's hostname
 * becomes the guest's, into HOST; the IPC one is not shared with a vm (docs/kubernetes.md). */
static int vm_pod_namespaces(const struct capsule_config *cfg, char *host, size_t size, capsule_error *err)
{
	if (cfg->pid_ns)
		return cap_err_plain(err, EOPNOTSUPP, "joining the pid namespace '%s' is not supported at the vm level: a "
						      "vm's processes are its guest kernel's", cfg->pid_ns);
	int ipc = -1, uts = -1;
	int r = shim_open_joined_ns(cfg->ipc_ns, CLONE_NEWIPC, "ipc", &ipc, err);
	if (ipc >= 0)
		close(ipc);
	if (r < 0 || (r = shim_open_joined_ns(cfg->uts_ns, CLONE_NEWUTS, "uts", &uts, err)) < 0 || uts < 0)
		return r;
	_cleanup_close_ int own = open("/proc/self/ns/uts", O_RDONLY | O_CLOEXEC);
	if (own < 0 || setns(uts, CLONE_NEWUTS) < 0) {
		r = cap_err(err, errno, "entering the uts namespace '%s'", cfg->uts_ns);
		close(uts);
		return r;
	}
	char name[HOST_NAME_MAX + 1] = "";
	int e = gethostname(name, sizeof(name)) < 0 ? errno : 0;
	/* Back to the shim's own, or its children would share the pod's. */
	if (setns(own, CLONE_NEWUTS) < 0)
		abort();
	close(uts);
	if (e)
		return cap_err(err, e, "the hostname of the uts namespace '%s'", cfg->uts_ns);
	/* The pod's root may have set any name: it goes on the guest's command line. */
	if (!name[0] || strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") != strlen(name))
		return cap_err_plain(err, EINVAL, "the hostname of the uts namespace '%s' is not a host name", cfg->uts_ns);
	snprintf(host, size, "%s", name);
	return 0;
}

static int vm_start_process(struct shim *s, int agent_sock, capsule_error *err)
{
	char pod_host[HOST_NAME_MAX + 1] = "";
	int r = vm_pod_namespaces(&s->cfg, pod_host, sizeof(pod_host), err);
	if (r < 0)
		return r;
	if (s->restoring && !s->vm_boot.accel)
		s->vm_boot.accel = vm_saved_accel(s);
	struct vm_spec spec = {
		.run_fd = s->run_fd,
		.cfg = &s->cfg,
		.hostname = pod_host[0] ? pod_host : config_hostname(&s->cfg),
		.agent_sock = agent_sock,
		/* A user's share is there only with entries: it costs QEMU a user namespace. */
		.mounts_dir = s->shares.enabled && (!s->shares.deferred || s->shares.npending) ? s->shares.dir : NULL,
		.deferred = s->shares.deferred && s->shares.npending ? &s->shares : NULL,
		.disk = s->vm_boot.disk,
		.disk_mode = s->vm_boot.disk_mode,
		.accel = s->vm_boot.accel,
		.accel_fallback = s->vm_boot.accel ? s->vm_boot.accel_fallback : NULL,
		.place = sandbox_join_cgroup,
		.place_payload = s,
		.in_cgroup = s->cg && cgroup_active(s->cg),
		.incoming = s->restoring,
		.net_ns_fd = -1,
	};
	s->vm_boot.mounts_share = spec.mounts_dir != NULL;
	if ((r = shim_open_joined_ns(s->cfg.net_ns, CLONE_NEWNET, "network", &spec.net_ns_fd, err)) < 0)
		return r;
	shim_progress("qemu");
	r = vm_start(&s->vm, &spec, err);
	if (spec.net_ns_fd >= 0)
		close(spec.net_ns_fd);
	if (r == 0 && s->restoring)
		r = vm_load_memory(s, err);
	if (r < 0)
		return r;
	s->shares.sealed = s->shares.deferred;
	s->proc_pid = s->vm.pid;
	s->proc_pidfd = s->vm.pidfd;
	shim_log("QEMU pid %d, accel %s", (int)s->vm.pid, s->vm.accel);
	if (s->cfg.display && (r = vm_display_start(&s->vm, s->run_fd, err)) < 0)
		return r;
	if (vm_auto_accel(s) && !s->vm_boot.accel && !strcmp(s->vm.accel, "kvm"))
		s->boot_deadline_ms = now_ms() + VM_KVM_BOOT_MS;
	return 0;
}

/* accel auto is KVM where /dev/kvm opens and a guest boots there, TCG otherwise: a KVM that
 * QEMU cannot use, or on which the guest does not answer within VM_KVM_BOOT_MS (a KVM boot
 * takes well under a second; a stock kernel has been seen to hang on some hosts), is given
 * up for one TCG boot, and vm.json says why. */
static bool vm_start_again(struct shim *s, const capsule_error *err)
{
	if (s->restoring || !vm_auto_accel(s) || s->vm_boot.accel || strcmp(s->vm.accel, "kvm") != 0)
		return false;
	snprintf(s->vm_boot.accel_fallback, sizeof(s->vm_boot.accel_fallback), "KVM did not boot the guest: %s",
		 err->message);
	shim_log("%s; booting again with TCG", s->vm_boot.accel_fallback);
	s->vm_boot.accel = "tcg";
	return true;
}

static int vm_died_during_start(struct shim *s, capsule_error *err)
{
	char why[512];
	vm_last_words(s->run_fd, why, sizeof(why));
	return cap_err_plain(err, ECHILD, "QEMU exited during boot%s%s (see '%s/run/%s/console.log')", why[0] ? ": " : "",
			     why, capsule_home(), s->name);
}

/* An egress_call_fn: M to the agent on a channel of its own, answered once the guest's table
 * is changed, with the quota's use. */
static int vm_egress_call(void *ctx, const struct cp_egress *m, uint64_t *used, capsule_error *err)
{
	struct shim *s = ctx;
	if (s->io.agent_fd < 0 || s->stopping)
		return cap_err_plain(err, ESHUTDOWN, "sandbox '%s' is stopping", s->name);
	/* A paused guest would not answer: the quota's use is then not known (inspect and net ls
	 * say null), and a change waits for the owner's resume, or wakes the shim's own pause. */
	int r;
	if (s->paused && (!m->set_cidrs || !s->paused_by_idle))
		return cap_err_plain(err, EBUSY, "sandbox '%s' is paused: resume it first", s->name);
	if (s->paused && (r = sandbox_unpause(s, err)) < 0)
		return r;
	uint32_t chan = io_agent_chan_new(&s->io);
	r = cp_egress_encode(&s->io.w, chan, m);
	if (r < 0)
		return cap_err(err, -r, "encoding EGRESS");
	io_to_agent(&s->io, s->io.w.buf, s->io.w.len);
	struct cp_header h;
	const uint8_t *payload;
	if ((r = agent_wait_answer(s, chan, VM_CALL_TIMEOUT_MS, "a change of the egress rules", &h, &payload, err)) < 0)
		return r;
	struct cp_egress_used u;
	struct cp_error_msg e;
	if (h.type == CP_EGRESS_USED && cp_egress_used_decode(payload, h.len, &u) == 0) {
		*used = u.used;
	} else if (h.type == CP_ERROR && cp_error_decode(payload, h.len, &e) == 0) {
		r = cap_err_plain(err, e.errnum ? (int)e.errnum : EIO, "the guest refused the egress rules: %s",
				  e.message ? e.message : "");
		cp_error_free(&e);
	} else {
		r = cap_err_plain(err, EPROTO, "the agent answered EGRESS with %s", cp_type_name(h.type));
	}
	cp_rxbuf_consume(&s->io.agent_rx, &h);
	return r;
}

static int vm_shares_call(struct shim *s, uint32_t kind, capsule_error *err)
{
	struct cp_vm_mount m = { .kind = kind, .target = (char *)"/" };
	uint64_t id = 0;
	return vm_agent_call(s, &m, NULL, &id, err);
}

/* A guest resumed from disk has its tmpfs mounts, /etc/hosts and egress table as they were (a
 * pause to disk refuses binds): the `mounts` share goes back for hot mounts, and the
 * forwards' host side and the DNS proxy start. */
static int vm_ready_restored(struct shim *s, capsule_error *err)
{
	int r = s->vm_boot.mounts_share ? vm_shares_call(s, CP_VM_MOUNT_SHARES_ON, err) : 0;
	if (r < 0 || (r = vm_fwd_start(&s->net, agent_send, s, err)) < 0)
		return r;
	return egress_vm_start(&s->net, agent_send, vm_egress_call, s, true, err);
}

/* TARGET's mount options from an OCI spec (config's mount_attrs) as VM_MOUNT's flags. */
static uint32_t vm_mount_attr_flags(const struct capsule_config *cfg, const char *target)
{
	uint64_t a = config_mount_attrs(cfg, target);
	return ((a & MOUNT_ATTR_NOEXEC) ? CP_VM_MOUNT_NOEXEC : 0) | ((a & MOUNT_ATTR_NOATIME) ? CP_VM_MOUNT_NOATIME : 0) |
	       ((a & MOUNT_ATTR_STRICTATIME) ? CP_VM_MOUNT_STRICTATIME : 0) |
	       ((a & MOUNT_ATTR_NODIRATIME) ? CP_VM_MOUNT_NODIRATIME : 0);
}

/* Once the agent is up: tmpfs and binds in config's order (tmpfs first unless it says), as the
 * container level mounts them, the allowlist's names over /etc/hosts; the port forwards, over
 * the agent channel; and the DNS proxy, whose queries and elements travel over it too
 * (egress.c). */
static int vm_ready(struct shim *s, capsule_error *err)
{
	int r;
	if (s->restoring)
		return vm_ready_restored(s, err);
	size_t t = 0, b = 0;
	for (char next; (next = config_mount_next(s->cfg.mount_order, s->cfg.ntmpfs, s->cfg.nbinds, t, b));) {
		if (next == 't') {
			size_t i = t++;
			struct cp_vm_mount m = { .kind = CP_VM_MOUNT_TMPFS, .target = s->cfg.tmpfs[i].target,
						 .size = s->cfg.tmpfs[i].size_bytes, .mode = s->cfg.tmpfs[i].mode,
						 .flags = vm_mount_attr_flags(&s->cfg, s->cfg.tmpfs[i].target) };
			if ((r = vm_agent_call(s, &m, NULL, NULL, err)) < 0)
				return r;
			continue;
		}
		size_t i = b++;
		char name[16];
		snprintf(name, sizeof(name), "b%zu", i);
		struct stat st;
		bool is_file = fstatat(s->shares.dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISDIR(st.st_mode);
		struct cp_vm_mount m = { .kind = CP_VM_MOUNT_SHARE, .name = name, .target = s->cfg.binds[i].target,
					 .flags = (s->cfg.binds[i].readonly ? CP_VM_MOUNT_RO : 0) | (is_file ? CP_VM_MOUNT_FILE : 0) |
						  vm_mount_attr_flags(&s->cfg, s->cfg.binds[i].target) };
		if ((r = vm_agent_call(s, &m, NULL, NULL, err)) < 0)
			return r;
	}
	if (vm_net_hosts_wanted(&s->cfg, &s->shares)) {
		struct cp_vm_mount m = { .kind = CP_VM_MOUNT_SHARE, .name = VM_NET_HOSTS_ENTRY, .target = "/etc/hosts",
					 .flags = CP_VM_MOUNT_RO | CP_VM_MOUNT_FILE };
		if ((r = vm_agent_call(s, &m, NULL, NULL, err)) < 0)
			return r;
	}
	if ((r = vm_fwd_start(&s->net, agent_send, s, err)) < 0)
		return r;
	return egress_vm_start(&s->net, agent_send, vm_egress_call, s, false, err);
}

/* A vm that is saved at stop: what its commands wrote may still be in the guest's page cache,
 * which QEMU's quit would lose. A wedged agent costs the stop 10 s. */
static void vm_kill_op(struct shim *s)
{
	capsule_error e = { 0 };
	if (s->agent_unresponsive || s->agent_distrusted)
		shim_log("the guest stopped answering or broke the protocol: its save gets no sync");
	else if (s->cfg.save[0] && s->io.agent_fd >= 0 && vm_agent_sync(s, 10000, &e) < 0)
		shim_log("syncing the guest before its save: %s", e.message);
	vm_kill(&s->vm);
}

/* Through its pidfd only: a QEMU that vm_start already reaped has a pid that may be someone
 * else's now. */
static void vm_teardown(struct shim *s)
{
	if (s->vm.pidfd >= 0) {
		io_unwatch(&s->io, s->vm.pidfd);
		vm_kill(&s->vm);
		proc_kill_and_reap(s->vm.pidfd);
		close(s->vm.pidfd);
	}
	if (s->vm.qmp_fd >= 0)
		close(s->vm.qmp_fd);
	memset(&s->vm, 0, sizeof(s->vm));
	s->vm.pid = s->proc_pid = -1;
	s->vm.pidfd = s->vm.qmp_fd = s->proc_pidfd = -1;
}

/* Around a save's copy of the disk: the agent syncs the guest's file systems, then QMP stop
 * pauses the vCPUs, which drains and flushes QEMU's block layer, so the qcow2 on the host is
 * whole and current; cont lets it run again. */
static int vm_pause(struct shim *s, capsule_error *err)
{
	int r = vm_agent_sync(s, 60000, err);
	return r < 0 ? r : vm_qmp(&s->vm, "stop", err);
}

static int vm_resume(struct shim *s, capsule_error *err)
{
	return vm_qmp(&s->vm, "cont", err);
}

/* What keeps a 9p share in use in the guest, and so QEMU from migrating it: one line naming
 * it, or 0. Commands, sessions and file operations would lose their connections with the
 * shim. */
static int vm_pause_to_disk_refusal(struct shim *s, capsule_error *err)
{
	if (!strcmp(s->vm_boot.disk_mode, VM_DISK_MODE_HOST))
		return cap_err_plain(err, EOPNOTSUPP,
				     "sandbox '%s' runs from the 'host' image, whose programs come from the host's /usr over "
				     "9p, which cannot be unmounted under them, and QEMU does not migrate a guest with a "
				     "9p share mounted: pause it in memory, or use an OCI image",
				     s->name);
	if (s->cfg.nbinds)
		return cap_err_plain(err, EBUSY,
				     "sandbox '%s' has a bind mount at '%s' (from '%s'), a 9p share in use, and QEMU does "
				     "not migrate a guest with one: pause it in memory, or create it without the bind",
				     s->name, s->cfg.binds[0].target, s->cfg.binds[0].source);
	if (s->hot.n)
		return cap_err_plain(err, EBUSY,
				     "sandbox '%s' has a hot mount at '%s' (from '%s'), a 9p share in use, and QEMU does "
				     "not migrate a guest with one: unmount it first",
				     s->name, s->hot.m[0].target, s->hot.m[0].source);
	if (vm_net_hosts_wanted(&s->cfg, &s->shares))
		return cap_err_plain(err, EBUSY,
				     "sandbox '%s' has its allowlist's names on /etc/hosts, a 9p share in use, and QEMU "
				     "does not migrate a guest with one: pause it in memory",
				     s->name);
	if (s->io.active)
		return cap_err_plain(err, EBUSY,
				     "sandbox '%s' has %u commands, sessions, file operations or watches open, whose "
				     "connections would not survive its shim: pause it to disk when they are done",
				     s->name, s->io.active);
	return 0;
}

/* The guest syncs and stops, QEMU writes its memory and devices to run/<name>/memory.state
 * and quits. The `mounts` share (QEMU refuses to migrate while the guest has it mounted) is
 * unmounted first, with the guest running (a paused one runs for that moment), and comes back
 * at the resume (vm_ready_restored). Any failure puts the guest back as it was. */
static int vm_pause_to_disk(struct shim *s, capsule_error *err)
{
	uint64_t max = vm_state_max_bytes(&s->cfg);
	int r = vm_pause_to_disk_refusal(s, err);
	if (r < 0)
		return r;
	if ((r = vm_state_space_check(s->run_fd, max, err)) < 0)
		return cap_err_wrap(err, r, "pause to disk of sandbox '%s'", s->name);
	bool was_paused = s->paused, share = s->vm_boot.mounts_share;
	capsule_error back = { 0 };
	if (was_paused && share && (r = vm_resume(s, err)) < 0)
		return r;
	uint64_t t0 = now_ns();
	if (share && (r = vm_shares_call(s, CP_VM_MOUNT_SHARES_OFF, err)) < 0)
		goto repause;
	if (!(was_paused && !share) && (r = vm_pause(s, err)) < 0)
		goto share_on;
	/* The waits for the guest served other clients: a command may have begun meanwhile. */
	if ((r = vm_pause_to_disk_refusal(s, err)) < 0)
		goto cont;
	if ((r = vm_migrate_to_file(&s->vm, s->run_fd, max, &s->state_bytes, err)) == 0) {
		shim_log("memory state written: %llu bytes in %.1f ms", (unsigned long long)s->state_bytes,
			 (double)(now_ns() - t0) / 1e6);
		vm_kill(&s->vm);
		return 0;
	}
cont:
	if (vm_resume(s, &back) < 0)
		shim_log("running the guest again after a failed pause to disk: %s", back.message);
share_on:
	if (share && vm_shares_call(s, CP_VM_MOUNT_SHARES_ON, &back) < 0)
		shim_log("mounting the share again after a failed pause to disk: %s", back.message);
repause:
	if (was_paused && vm_qmp(&s->vm, "stop", &back) < 0)
		shim_log("pausing the guest again after a failed pause to disk: %s", back.message);
	return cap_err_wrap(err, r, "pause to disk of sandbox '%s' (it goes on %s)", s->name,
			    was_paused ? "paused in memory" : "running");
}

/* The guest runs on from its memory state, its agent in the middle of its loop: a HELLO (which
 * it takes at any time) and a sync answered on the new channel say it is there. */
static int vm_reattach(struct shim *s, capsule_error *err)
{
	shim_progress("agent");
	struct cp_hello me = { .version = CP_VERSION, .role = "shim" };
	int r = cp_hello_encode(&s->io.w, 0, &me);
	if (r < 0)
		return cap_err(err, -r, "encoding HELLO");
	io_to_agent(&s->io, s->io.w.buf, s->io.w.len);
	uint64_t now = now_ms();
	r = vm_agent_sync(s, s->boot_deadline_ms > now ? (uint32_t)(s->boot_deadline_ms - now) : 1, err);
	if (r == 0)
		shim_progress("agent-ready");
	return r;
}

static int vm_hot_attach(struct shim *s, int tree, const char *name, const char *target, bool is_dir, bool readonly,
			 uint64_t *mnt_id, capsule_error *err)
{
	int r = vm_shares_attach(&s->shares, tree, name, is_dir, 0, err);
	if (r < 0)
		return r;
	struct cp_vm_mount m = { .kind = CP_VM_MOUNT_SHARE, .name = (char *)name, .target = (char *)target,
				 .flags = CP_VM_MOUNT_NO_SYMLINKS | (readonly ? CP_VM_MOUNT_RO : 0) |
					  (is_dir ? 0 : CP_VM_MOUNT_FILE) };
	if ((r = vm_agent_call(s, &m, NULL, mnt_id, err)) < 0)
		vm_shares_detach(&s->shares, name);
	return r;
}

static int vm_hot_detach(struct shim *s, const char *name, const char *target, uint64_t mnt_id, capsule_error *err)
{
	struct cp_vm_unmount m = { .target = (char *)target, .mnt_id = mnt_id };
	int r = vm_agent_call(s, NULL, &m, NULL, err);
	if (r == 0)
		vm_shares_detach(&s->shares, name);
	return r;
}

/* The guest synced its disks as it powered off, and QEMU has exited. */
static int vm_save_at_stop(struct shim *s, const char *name, capsule_error *err)
{
	return layer_op(&s->cfg, s->run_fd, SAVE_OP_SAVE, name, err);
}

/* Screenshots and input are QMP exchanges with QEMU (a screendump is QEMU's copy of the
 * framebuffer). */
static int vm_display(struct shim *s, const struct cp_header *h, const uint8_t *payload, struct cp_writer *w,
		      capsule_error *err)
{
	return vm_display_request(&s->vm, &s->cfg, s->run_fd, h, payload, w, err);
}

const struct level_ops vm_level = {
	.name = "vm",
	.cgroup_limits = vm_cgroup_limits,
	.prepare = vm_prepare,
	.unprepare = vm_unprepare,
	.start = vm_start_process,
	.start_again = vm_start_again,
	.died_during_start = vm_died_during_start,
	.ready = vm_ready,
	.kill = vm_kill_op,
	.teardown = vm_teardown,
	.pause = vm_pause,
	.resume = vm_resume,
	.hot_idmap = vm_hot_idmap,
	.hot_attach = vm_hot_attach,
	.hot_detach = vm_hot_detach,
	.save_at_stop = vm_save_at_stop,
	.pause_to_disk = vm_pause_to_disk,
	.reattach = vm_reattach,
	.display = vm_display,
};
