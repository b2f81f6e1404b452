#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>

#include "container.h"
#include "container_rootfs.h"
#include "home.h"
#include "proc_masks.h"
#include "rootless.h"
#include "sandbox_config.h"
#include "syscalls.h"
#include "util.h"

#define AGENT_FD 3

/* podman's set less FSETID and SETFCAP. Sandbox root writes to host folders (binds, volumes)
 * as the host user who made the sandbox: SETFCAP would let it put a security.capability on a
 * host file there, and FSETID would let it rewrite a set-id file there without the kernel
 * clearing the bit. Inside the sandbox neither buys anything under no_new_privs. */
uint64_t container_default_caps(void)
{
	static const int caps[] = {
		CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_KILL, CAP_NET_BIND_SERVICE,
		CAP_SETGID, CAP_SETPCAP, CAP_SETUID, CAP_SYS_CHROOT,
	};
	uint64_t m = 0;
	for (size_t i = 0; i < ARRAY_SIZE(caps); i++)
		m |= 1ull << caps[i];
	return m;
}

int container_joined_sys_tree = -1;
int container_joined_mqueue_tree = -1;
int container_joined_proc_tree = -1;

/* ---- the child's side ---------------------------------------------------------------- */

struct child_failure {
	int errnum;
	char message[400];
};

static int child_errfd = -1;

_Noreturn void container_child_die(int errnum, const char *fmt, ...)
{
	struct child_failure f = { .errnum = errnum };
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(f.message, sizeof(f.message), fmt, ap);
	va_end(ap);
	if (n >= 0 && (size_t)n < sizeof(f.message))
		snprintf(f.message + n, sizeof(f.message) - (size_t)n, ": %s", strerror(errnum));
	(void)!write(child_errfd, &f, sizeof(f));
	_exit(1);
}

static _Noreturn void container_child(const struct container_spec *spec, int go_fd)
{
	/* Into our v1 cgroups first, by ourselves (cgroup_open_self_join): one thread moving
	 * itself takes no lock that waits for an RCU grace period, where the parent's move by pid
	 * did (1 to 15 ms each start, and parallel starts queued behind each other's). The
	 * kernel checks the shim's credentials, with which the files were opened. Before
	 * anything else: what the mounts allocate is charged to the sandbox. */
	for (size_t i = 0; i < spec->ncgroup_tasks; i++) {
		if (write(spec->cgroup_tasks_fds[i], "0", 1) != 1)
			container_child_die(errno, "moving the sandbox's init into its cgroups");
		close(spec->cgroup_tasks_fds[i]);
	}

	/* Wait until the parent has written our id maps (and idmapped the trees we attach). */
	char go;
	if (read(go_fd, &go, 1) != 1)
		_exit(1);

	/* Still with the shim's file uid (container_start): root's, for a root caller, the owner
	 * of $CAPSULE_HOME, which no other uid may pass. O_PATH needs no right on the folders
	 * themselves, which are the sandbox root's. */
	int fsfd = open(spec->fsdir, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fsfd < 0)
		container_child_die(errno, "open '%s'", spec->fsdir);
	int host_fd = -1;
	if (spec->lowerdir && (host_fd = open(spec->lowerdir, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0)
		container_child_die(errno, "open the host image '%s'", spec->lowerdir);
	/* A rootless map through newgidmap leaves setgroups allowed; a single-id map denies it,
	 * and then the user's groups stay (unmapped: nobody's, inside). */
	if (setgroups(0, NULL) < 0 && !(spec->rootless && errno == EPERM))
		container_child_die(errno, "setgroups");
	if (setresgid(0, 0, 0) < 0)
		container_child_die(errno, "setresgid to the sandbox's root");
	if (setresuid(0, 0, 0) < 0)
		container_child_die(errno, "setresuid to the sandbox's root");
	if (spec->pids_rlimit) {
		int e = -rootless_limit_pids(spec->pids_rlimit);
		if (e)
			container_child_die(e, "setting RLIMIT_NPROC to %u", spec->pids_rlimit);
	}
	/* Changing credentials cleared these: set them again for the sandbox's root. */
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);

	/* A joined UTS namespace (a pod's) has its owner's hostname, the pod's, which the
	 * sandbox's root could not change. */
	if (spec->uts_ns_fd < 0 && sethostname(spec->hostname, strlen(spec->hostname)) < 0)
		container_child_die(errno, "sethostname '%s'", spec->hostname);

	/* The mounts are made while the parent moves us into our cgroups, where we did not
	 * (cgroup v2: a move by pid waits for an RCU grace period, tens of ms on a busy host,
	 * which the mounts do not wait behind). Nothing here forks or runs anything of the
	 * sandbox's. */
	container_setup_rootfs(spec, fsfd, host_fd);

	/* Wait until the parent has placed us in our cgroups; EOF: it failed or died. */
	if (read(go_fd, &go, 1) != 1)
		_exit(1);
	close(go_fd);
	/* The cgroup namespace is made now, after the parent moved us, so that our own cgroup
	 * is the root of what the sandbox sees. */
	if (unshare(CLONE_NEWCGROUP) < 0)
		container_child_die(errno, "unshare cgroup namespace");

	if (spec->agent_sock != AGENT_FD) {
		if (dup2(spec->agent_sock, AGENT_FD) < 0)
			container_child_die(errno, "dup2 agent socket");
	} else if (fcntl(AGENT_FD, F_SETFD, 0) < 0) {
		container_child_die(errno, "agent socket flags");
	}
	int memfd = spec->agent_memfd;
	if (memfd <= AGENT_FD) {
		memfd = fcntl(memfd, F_DUPFD_CLOEXEC, AGENT_FD + 1);
		if (memfd < 0)
			container_child_die(errno, "dup agent memfd");
	}
	/* Only fd 3 (the agent's socket), the memfd and the error pipe survive; the latter two
	 * are close-on-exec. */
	int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (devnull < 0 || dup2(devnull, 0) < 0 || dup2(devnull, 1) < 0 || dup2(devnull, 2) < 0)
		container_child_die(errno, "stdio to /dev/null");
	int cr = fds_cloexec_from(AGENT_FD + 1);
	if (cr < 0)
		container_child_die(-cr, "closing the shim's file descriptors");
	char *const argv[] = { "capsule-agent", NULL };
	char *const envp[] = { NULL };
	fexecve(memfd, argv, envp);
	container_child_die(errno, "exec of capsule-agent");
}

/* ---- the parent's side ---------------------------------------------------------------- */

/* Host folders (binds, volumes, hot mounts) are idmapped through a user namespace of their own
 * rather than the sandbox's: there the host user who made the sandbox (OWNER, root for root)
 * is the sandbox's root, and the sandbox's other ids are its own host range, as in its own
 * namespace. So what sandbox root writes lands owned by that user, what its other users write
 * lands on ids no host user has, and no host id beyond those two can be given to a file: a
 * chown to a host user's id fails (EINVAL), and other users' files show as the overflow id,
 * with only their "other" permissions. (A rootless caller's single id needs none of this.) */
int userns_with_maps(const char *uid_map, const char *gid_map, int *userns, capsule_error *err)
{
	int ready[2];
	if (pipe2(ready, O_CLOEXEC) < 0)
		return cap_err(err, errno, "pipe");
	pid_t pid = fork();
	if (pid < 0) {
		int e = errno;
		close(ready[0]);
		close(ready[1]);
		return cap_err(err, e, "fork");
	}
	if (pid == 0) {
		/* Holds the namespace until the parent has its maps written and an fd on it. */
		char c = unshare(CLONE_NEWUSER) == 0 ? 'y' : 'n';
		if (write(ready[1], &c, 1) == 1)
			pause();
		_exit(0);
	}
	close(ready[1]);
	char c = 'n';
	int r = 0;
	if (read(ready[0], &c, 1) != 1 || c != 'y')
		r = cap_err_plain(err, EPERM, "creating a user namespace for idmapping host folders");
	close(ready[0]);
	if (r == 0)
		r = proc_pid_write(pid, "uid_map", uid_map, err);
	if (r == 0)
		r = proc_pid_write(pid, "gid_map", gid_map, err);
	if (r == 0) {
		char path[64];
		snprintf(path, sizeof(path), "/proc/%d/ns/user", (int)pid);
		if ((*userns = open(path, O_RDONLY | O_CLOEXEC)) < 0)
			r = cap_err(err, errno, "open '%s'", path);
	}
	/* Not reaped yet, so the pid is still ours to signal. */
	kill(pid, SIGKILL);
	while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
		;
	return r;
}

int container_host_folder_userns(uid_t owner_uid, gid_t owner_gid, uid_t ub, gid_t gb, uint32_t count, int *userns,
				 capsule_error *err)
{
	char uid_map[128], gid_map[128];
	snprintf(uid_map, sizeof(uid_map), "%u %u 1\n%u %u %u\n", (unsigned)owner_uid, (unsigned)ub, (unsigned)ub + 1,
		 (unsigned)ub + 1, count - 1);
	snprintf(gid_map, sizeof(gid_map), "%u %u 1\n%u %u %u\n", (unsigned)owner_gid, (unsigned)gb, (unsigned)gb + 1,
		 (unsigned)gb + 1, count - 1);
	return userns_with_maps(uid_map, gid_map, userns, err);
}

int container_idmap_host_folder(int userns, int tree, const char *what, capsule_error *err)
{
	struct mount_attr a = { .attr_set = MOUNT_ATTR_IDMAP, .userns_fd = (uint64_t)userns };
	/* A filesystem that cannot be idmapped keeps plain ids: the sandbox's host range, which
	 * is no host user's. */
	if (sys_mount_setattr(tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &a) < 0 && errno != EINVAL &&
	    errno != EOPNOTSUPP && errno != EPERM)
		return cap_err(err, errno, "idmapping the mount of '%s'", what);
	return 0;
}

static int idmap_binds(const struct container_spec *spec, pid_t child, capsule_error *err)
{
	/* The caller made the files for the spec's mapping: host ids on disk are what it means. */
	if (spec->spec_ids)
		return 0;
	int r = 0;
	bool any = false;
	for (size_t i = 0; i < spec->nbinds; i++)
		any |= !spec->binds[i].no_idmap;
	if (any) {
		int userns = -1;
		r = container_host_folder_userns(geteuid(), getegid(), spec->uid_base, spec->gid_base, spec->id_count,
						 &userns, err);
		for (size_t i = 0; r == 0 && i < spec->nbinds; i++)
			if (!spec->binds[i].no_idmap)
				r = container_idmap_host_folder(userns, spec->binds[i].tree, spec->binds[i].target, err);
		if (userns >= 0)
			close(userns);
		if (r < 0)
			return r;
	}
	if (!spec->nlayers)
		return 0;
	/* A layer's ids are the image's, all of them the sandbox's: it is idmapped to the
	 * sandbox's own namespace, and without the idmap every file would be the host's and
	 * nobody's inside, so a layer that cannot be idmapped fails the start. */
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/ns/user", (int)child);
	int userns = open(path, O_RDONLY | O_CLOEXEC);
	if (userns < 0)
		return cap_err(err, errno, "open '%s'", path);
	for (size_t i = 0; i < spec->nlayers; i++) {
		struct mount_attr a = { .attr_set = MOUNT_ATTR_IDMAP, .userns_fd = (uint64_t)userns };
		if (sys_mount_setattr(spec->layer_trees[i], "", AT_EMPTY_PATH, &a) < 0) {
			int e = errno;
			close(userns);
			if (spec->root_is_tree)
				return cap_err(err, e, "idmapping the root folder");
			return cap_err(err, e, "idmapping image layer %zu", i);
		}
	}
	close(userns);
	return 0;
}

bool container_can_set_oom_floor(void)
{
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct d[2];
	if (syscall(SYS_capget, &h, d) < 0)
		return false;
	return d[CAP_SYS_RESOURCE / 32].effective & (1u << (CAP_SYS_RESOURCE % 32));
}

/* No process of the sandbox may lower its oom_score_adj below 0, or a command could make itself
 * the last choice of the host's OOM killer, which would then kill host processes first. The
 * kernel lets a process go down to its oom_score_adj_min without privilege, and every child
 * inherits that floor, so the floor must be 0 from the sandbox's first process on: it is set
 * when a writer with CAP_SYS_RESOURCE writes the value. That is also why the agent gets no
 * protection of its own: a floor under it would be every command's floor. The agent is small;
 * the command that ate the memory is what the OOM killer picks. Where the shim lacks
 * CAP_SYS_RESOURCE (root in some containers and VMs), the floor stays whatever capsule was
 * started under: said in NOTE, for inspect and doctor. */
static bool oom_floor_at_zero(pid_t child, char *note, size_t size)
{
	note[0] = '\0';
	bool privileged = container_can_set_oom_floor();
	capsule_error ignored = { 0 };
	int r = proc_pid_write(child, "oom_score_adj", "0", &ignored);
	if (privileged && r == 0)
		return true;
	snprintf(note, size, "%s: commands may lower their oom_score_adj to the floor capsule was started under",
		 privileged ? ignored.message : "capsule lacks CAP_SYS_RESOURCE");
	return false;
}

/* Into the network namespace SPEC names (its net.* settings written there, as the owner's
 * root), keeping the shim's own in *OWN. */
static int join_net_ns(const struct container_spec *spec, int *own, capsule_error *err)
{
	int r = 0;
	*own = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	if (*own < 0)
		r = cap_err(err, errno, "/proc/self/ns/net");
	else if (setns(spec->net_ns_fd, CLONE_NEWNET) < 0)
		r = cap_err(err, errno, "joining the network namespace '%s'", spec->net_ns);
	if (r == 0) {
		char failed[260];
		int root = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
		int e = root < 0 ? -errno : container_write_sysctls(spec->sysctls, true, root, failed, sizeof(failed));
		if (root >= 0)
			close(root);
		if (e < 0)
			r = cap_err(err, -e, "sysctl %s in the network namespace '%s'", failed, spec->net_ns);
	}
	if (r == 0) {
		int fs = sys_fsopen("sysfs", FSOPEN_CLOEXEC);
		if (fs < 0 || sys_fsconfig(fs, FSCONFIG_SET_STRING, "source", "sysfs", 0) < 0 ||
		    sys_fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0 ||
		    (container_joined_sys_tree = sys_fsmount(fs, FSMOUNT_CLOEXEC, SYS_ATTRS)) < 0)
			r = cap_err(err, errno, "sysfs of the network namespace '%s'", spec->net_ns);
		if (fs >= 0)
			close(fs);
	}
	if (r < 0 && *own >= 0 && setns(*own, CLONE_NEWNET) < 0)
		abort();
	if (r < 0 && *own >= 0) {
		close(*own);
		*own = -1;
	}
	return r;
}

/* The proc of the pid namespace the shim's children are made in (a joined one), into
 * container_joined_proc_tree: a child of the shim's made there with its rights, which shares its
 * descriptor table, mounts it and says which descriptor it is. */
static int make_joined_proc(const struct container_spec *spec, capsule_error *err)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return cap_err(err, errno, "pipe");
	struct clone_args a = { .flags = CLONE_FILES, .exit_signal = SIGCHLD };
	long pid = sys_clone3(&a);
	if (pid == 0) {
		int fs = sys_fsopen("proc", FSOPEN_CLOEXEC);
		int tree = fs < 0 || sys_fsconfig(fs, FSCONFIG_SET_STRING, "source", "proc", 0) < 0 ||
				   sys_fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0
			   ? -1
			   : sys_fsmount(fs, FSMOUNT_CLOEXEC, PROC_ATTRS);
		int got = tree >= 0 ? tree : -errno;
		if (fs >= 0)
			close(fs);
		_exit(write(p[1], &got, sizeof(got)) == (ssize_t)sizeof(got) ? 0 : 1);
	}
	int got = -EIO;
	if (pid < 0)
		got = -errno;
	else if (read(p[0], &got, sizeof(got)) != (ssize_t)sizeof(got))
		got = -EIO;
	close(p[0]);
	close(p[1]);
	while (pid > 0 && waitpid((pid_t)pid, NULL, 0) < 0 && errno == EINTR)
		;
	if (got < 0)
		return cap_err(err, -got, "proc of the pid namespace '%s'", spec->pid_ns);
	container_joined_proc_tree = got;
	return 0;
}

/* Into the IPC, UTS and pid namespaces SPEC names (a pod's), keeping the shim's own in OWN[0],
 * OWN[1] and OWN[2]; in a joined IPC namespace the shim makes its mqueue, as only its owner
 * may, and in a joined pid namespace its proc. A joined pid namespace is the one the shim's
 * children are made in; the shim itself stays in its own. */
static int join_pod_ns(const struct container_spec *spec, int own[3], capsule_error *err)
{
	const struct {
		int fd, type;
		const char *what, *path, *self;
	} ns[3] = { { spec->ipc_ns_fd, CLONE_NEWIPC, "ipc", spec->ipc_ns, "/proc/self/ns/ipc" },
		    { spec->uts_ns_fd, CLONE_NEWUTS, "uts", spec->uts_ns, "/proc/self/ns/uts" },
		    { spec->pid_ns_fd, CLONE_NEWPID, "pid", spec->pid_ns, "/proc/self/ns/pid" } };
	for (size_t i = 0; i < 3; i++) {
		if (ns[i].fd < 0)
			continue;
		if ((own[i] = open(ns[i].self, O_RDONLY | O_CLOEXEC)) < 0)
			return cap_err(err, errno, "%s", ns[i].self);
		if (setns(ns[i].fd, ns[i].type) < 0)
			return cap_err(err, errno, "joining the %s namespace '%s'", ns[i].what, ns[i].path);
	}
	if (spec->ipc_ns_fd >= 0) {
		int fs = sys_fsopen("mqueue", FSOPEN_CLOEXEC);
		if (fs < 0 || sys_fsconfig(fs, FSCONFIG_SET_STRING, "source", "mqueue", 0) < 0 ||
		    sys_fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0 ||
		    (container_joined_mqueue_tree = sys_fsmount(fs, FSMOUNT_CLOEXEC, MQUEUE_ATTRS)) < 0) {
			int e = errno;
			if (fs >= 0)
				close(fs);
			return cap_err(err, e, "mqueue of the ipc namespace '%s'", spec->ipc_ns);
		}
		close(fs);
	}
	if (spec->pid_ns_fd >= 0)
		return make_joined_proc(spec, err);
	return 0;
}

/* Back into the shim's own namespaces from those joined for the child's clone. */
static void leave_joined_ns(int own_net, const int own[3])
{
	/* Never go on in a sandbox's namespaces. */
	if ((own_net >= 0 && setns(own_net, CLONE_NEWNET) < 0) || (own[0] >= 0 && setns(own[0], CLONE_NEWIPC) < 0) ||
	    (own[1] >= 0 && setns(own[1], CLONE_NEWUTS) < 0) || (own[2] >= 0 && setns(own[2], CLONE_NEWPID) < 0))
		abort();
	if (own_net >= 0)
		close(own_net);
	for (size_t i = 0; i < 3; i++)
		if (own[i] >= 0)
			close(own[i]);
	if (container_joined_sys_tree >= 0)
		close(container_joined_sys_tree);
	if (container_joined_mqueue_tree >= 0)
		close(container_joined_mqueue_tree);
	if (container_joined_proc_tree >= 0)
		close(container_joined_proc_tree);
	container_joined_sys_tree = container_joined_mqueue_tree = container_joined_proc_tree = -1;
}

/* The sandbox's host ids as effective ids, which make the new user namespace's owner, while
 * the file uid stays root's: the child opens its fs/ folder and the host image's root below
 * $CAPSULE_HOME (root's alone) with it, before it becomes the sandbox's root. */
static int become_namespace_owner(const struct container_spec *spec)
{
	if (setegid(spec->gid_base) < 0 || seteuid(spec->uid_base) < 0)
		return -errno;
	setfsuid(0); /* allowed to any process whose real uid is 0 */
	return setfsuid((uid_t)-1) == 0 ? 0 : -EPERM;
}

int container_start(struct container *out, const struct container_spec *spec, container_hook_fn join, void *payload,
		    capsule_error *err)
{
	int go[2], status[2];
	if (pipe2(go, O_CLOEXEC) < 0)
		return cap_err(err, errno, "pipe");
	if (pipe2(status, O_CLOEXEC) < 0) {
		int e = errno;
		close(go[0]);
		close(go[1]);
		return cap_err(err, e, "pipe");
	}

	int pidfd = -1;
	struct clone_args args = {
		.flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET |
			 CLONE_PIDFD,
		.pidfd = (uint64_t)(uintptr_t)&pidfd,
		.exit_signal = SIGCHLD,
	};
	/* Namespaces to join: the child is made in them (a process in its new user namespace
	 * could not enter a namespace another user namespace owns), and the shim goes back to
	 * its own. A network namespace is the caller's (podman's, a pod's); IPC and UTS ones are
	 * a pod's, its pause sandbox's. */
	int own_net = -1, own_pod[3] = { -1, -1, -1 };
	if (spec->net_ns_fd >= 0)
		args.flags &= ~(uint64_t)CLONE_NEWNET;
	if (spec->ipc_ns_fd >= 0)
		args.flags &= ~(uint64_t)CLONE_NEWIPC;
	if (spec->uts_ns_fd >= 0)
		args.flags &= ~(uint64_t)CLONE_NEWUTS;
	if (spec->pid_ns_fd >= 0)
		args.flags &= ~(uint64_t)CLONE_NEWPID;
	int e = spec->net_ns_fd >= 0 ? join_net_ns(spec, &own_net, err) : 0;
	if (e == 0)
		e = join_pod_ns(spec, own_pod, err);
	if (e < 0) {
		leave_joined_ns(own_net, own_pod);
		close(go[0]);
		close(go[1]);
		close(status[0]);
		close(status[1]);
		return e;
	}
	/* The kernel charges per-user counts (inotify instances, message queues, ...) up the user
	 * namespace hierarchy to each namespace's owner: the euid that created it. With root as
	 * owner, every sandbox would spend root's share. So the namespace is created with the
	 * sandbox's own host ids as effective ids; the saved uid stays 0 and gives root back at
	 * once for writing the maps. */
	bool switched = false;
	if (spec->rootless) {
		/* The child must be dumpable while its maps are written, or its /proc files are
		 * root's (the shim is not: shim.c) and newuidmap refuses them. It inherits the flag
		 * and clears it itself once it is the sandbox's root. */
		prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
	} else {
		e = -become_namespace_owner(spec);
		if (e) {
			seteuid(0);
			setegid(0);
			leave_joined_ns(own_net, own_pod);
			close(go[0]);
			close(go[1]);
			close(status[0]);
			close(status[1]);
			return cap_err(err, e, "switching to the sandbox's host uid %u", (unsigned)spec->uid_base);
		}
		switched = true;
	}
	long pid = sys_clone3(&args);
	if (pid != 0 && spec->rootless)
		prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	if (pid != 0 && switched && (seteuid(0) < 0 || setegid(0) < 0))
		abort(); /* cannot happen with a saved uid of 0; never go on half-privileged */
	if (pid != 0) {
		int clone_errno = errno;
		leave_joined_ns(own_net, own_pod);
		errno = clone_errno;
	}
	if (pid < 0) {
		e = errno;
		close(go[0]);
		close(go[1]);
		close(status[0]);
		close(status[1]);
		if (e == EPERM || e == ENOSPC)
			return cap_err(err, e, "creating namespaces (is kernel.unprivileged_userns_clone or user.max_user_namespaces limiting user namespaces?)");
		return cap_err(err, e, "clone3");
	}
	if (pid == 0) {
		close(go[1]);
		close(status[0]);
		child_errfd = status[1];
		container_child(spec, go[0]);
	}
	close(go[0]);
	close(status[1]);

	int r = 0;
	if (spec->rootless) {
		r = rootless_map_ids((pid_t)pid, spec->rootless_ids, err);
	} else {
		char map[64];
		snprintf(map, sizeof(map), "0 %u %u\n", (unsigned)spec->uid_base, spec->id_count);
		r = proc_pid_write((pid_t)pid, "uid_map", map, err);
		snprintf(map, sizeof(map), "0 %u %u\n", (unsigned)spec->gid_base,
			 spec->gid_count ? spec->gid_count : spec->id_count);
		if (r == 0)
			r = proc_pid_write((pid_t)pid, "gid_map", map, err);
		if (r == 0)
			r = idmap_binds(spec, (pid_t)pid, err);
	}
	/* Two go-aheads: the first lets the child make its mounts, the second, once it is in its
	 * cgroups, lets it go on to the agent. In between the child works and we join. */
	bool mounting = false;
	if (r == 0) {
		if (write(go[1], "m", 1) != 1)
			r = cap_err(err, errno, "starting the container's init");
		else
			mounting = true;
	}
	if (r == 0)
		out->oom_floor = oom_floor_at_zero((pid_t)pid, out->oom_note, sizeof(out->oom_note));
	/* tests/e2e/test_ephemeral.py kills the shim here, while the child mounts. */
	home_test_pause("CAPSULE_TEST_SHIM_PAUSE", "cgroup-join", NULL, ".test-shim-paused");
	if (r == 0 && join)
		r = join((pid_t)pid, payload, err);
	if (r == 0 && write(go[1], "g", 1) != 1)
		r = cap_err(err, errno, "starting the container's init");
	close(go[1]);

	/* A child that failed said why before it exited; one that exec'd the agent closed the
	 * pipe (close-on-exec). A failure of ours kills it first, so that the read ends: its own
	 * error then, if it had one (a mount that failed while we joined its cgroups), comes
	 * before ours, which may only be that it had died. */
	if (r < 0)
		sys_pidfd_send_signal(pidfd, SIGKILL);
	if (r == 0 || mounting) {
		struct child_failure f;
		ssize_t n;
		do
			n = read(status[0], &f, sizeof(f));
		while (n < 0 && errno == EINTR);
		if (n == (ssize_t)sizeof(f)) {
			f.message[sizeof(f.message) - 1] = '\0';
			capsule_error_clear(err);
			r = cap_err_plain(err, f.errnum > 0 ? f.errnum : EIO, "%s", f.message);
		} else if (n != 0 && r == 0) {
			r = cap_err_plain(err, EIO, "the container's init died during setup");
		}
	}
	close(status[0]);
	if (r < 0) {
		sys_pidfd_send_signal(pidfd, SIGKILL);
		while (waitpid((pid_t)pid, NULL, 0) < 0 && errno == EINTR)
			;
		close(pidfd);
		return r;
	}
	out->pid = (pid_t)pid;
	out->pidfd = pidfd;
	char ns[64];
	snprintf(ns, sizeof(ns), "/proc/%ld/ns/mnt", pid);
	out->mntns_fd = open(ns, O_RDONLY | O_CLOEXEC); /* none: the agent's exit unmounts */
	out->uid_base = spec->uid_base;
	out->gid_base = spec->gid_base;
	out->id_count = spec->id_count;
	return 0;
}
