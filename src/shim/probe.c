/* `capsule-shim --probe`: what this host supports for each isolation level, and why not,
 * as JSON on stdout. Features are checked by trying them, never by kernel version. */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include "capsule.h"
#include "cgroup.h"
#include "container.h"
#include "json.h"
#include "probe.h"
#include "rootless.h"
#include "seccomp_filter.h"
#include "syscalls.h"
#include "util.h"
#include "vm.h"

/* Run FN in a forked child and report whether it exited 0. */
static bool try_in_child(int (*fn)(void))
{
	pid_t pid = fork();
	if (pid < 0)
		return false;
	if (pid == 0)
		_exit(fn() == 0 ? 0 : 1);
	int st;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

static int probe_userns(void)
{
	return unshare(CLONE_NEWUSER) == 0 ? 0 : 1;
}

static int probe_all_ns(void)
{
	return unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET) == 0 ? 0 : 1;
}

static int probe_openat2(void)
{
	int fd = sys_openat2(AT_FDCWD, "/", O_PATH | O_CLOEXEC, RESOLVE_IN_ROOT);
	return fd >= 0 ? 0 : 1;
}

static int probe_mount_api(void)
{
	int fd = sys_open_tree(AT_FDCWD, "/", OPEN_TREE_CLOEXEC);
	return fd >= 0 ? 0 : 1;
}

/* What a user's sandboxes get, and what needs root and why (docs/rootless.md). */
static void probe_rootless(struct json_writer *j, const struct cgroup_support *cs)
{
	struct rootless_ids ids;
	rootless_ids(&ids);
	json_kv_string(j, "rootless_id_map", ids.ranges ? "subordinate" : "single");
	char text[160];
	if (ids.ranges)
		snprintf(text, sizeof(text), "the sandbox's ids 1-%u are host uids %u-%u, gids %u-%u (newuidmap, newgidmap)",
			 (unsigned)ids.sub_uid.count, (unsigned)ids.sub_uid.start,
			 (unsigned)(ids.sub_uid.start + ids.sub_uid.count - 1), (unsigned)ids.sub_gid.start,
			 (unsigned)(ids.sub_gid.start + ids.sub_gid.count - 1));
	else
		snprintf(text, sizeof(text), "%s: only the sandbox's root exists (it is you); chown, su and setgroups "
			 "fail inside", ids.note);
	json_kv_string(j, "rootless_id_map_note", text);
	json_kv_string(j, "pids_limit_by", cs->pids ? "cgroup" : "rlimit_nproc");
	/* One line each for what a user cannot have here, and why. */
	json_key(j, "rootless_needs_root");
	json_object_begin(j);
	if (!cs->memory || !cs->cpu)
		json_kv_string(j, "memory and cpu limits", "no cgroup this user may write (cgroup v2 with a subtree "
				  "delegated to the user gives them); without, the pids limit is RLIMIT_NPROC per user id inside");
	if (!cs->memory)
		json_kv_string(j, "a vm's QEMU in a cgroup", "without one QEMU is bounded by the guest's default "
				  "memory and one vCPU (-m 512M, -smp 1), not its own overhead; --memory and --cpus are refused");
	if (!cs->pids)
		json_kv_string(j, "pause, running save", "the freezer is a cgroup: stop the sandbox, "
				  "then save it (vm isolation pauses its vCPUs over QMP: works)");
	json_kv_string(j, "volume quotas", "a quota volume's ext4 image is mounted through a loop device");
	json_kv_string(j, "disk size", "a container's own disk is an ext4 image on a loop device");
	json_kv_string(j, "hot mounts in a vm", "a user's vm gets its binds and volumes as it starts, attached in "
			  "QEMU's own namespaces; later ones would need the shim's mount namespace");
	json_kv_string(j, "oom_score_adj floor", "CAP_SYS_RESOURCE in the host's user namespace");
	json_object_end(j);
}

int shim_probe(void)
{
	/* One flat object: easy to read from a script and from the CLI's human form. */
	struct json_writer j;
	json_init(&j, true);
	json_object_begin(&j);
	struct utsname u;
	uname(&u);
	json_kv_string(&j, "version", CAPSULE_VERSION_STRING);
	json_kv_string(&j, "kernel", u.release);
	json_kv_string(&j, "arch", u.machine);
	json_kv_bool(&j, "root", geteuid() == 0);
	json_kv_string(&j, "home", capsule_home());
	char self[4096];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	self[n > 0 ? n : 0] = '\0';
	json_kv_string(&j, "shim", self);

	bool userns = try_in_child(probe_userns);
	bool allns = userns && try_in_child(probe_all_ns);
	bool sec = prctl(PR_GET_SECCOMP, 0, 0, 0, 0) >= 0;
	struct cgroup_support cs;
	cgroup_probe(&cs);
	json_kv_bool(&j, "container_usable", allns && sec);
	if (!userns)
		json_kv_string(&j, "container_reason", "user namespaces are not available (check user.max_user_namespaces)");
	else if (!allns)
		json_kv_string(&j, "container_reason", "creating mount, pid, ipc, uts or net namespaces failed");
	else if (!sec)
		json_kv_string(&j, "container_reason", "the kernel has no seccomp");
	json_kv_bool(&j, "user_namespaces", userns);
	json_kv_bool(&j, "namespaces", allns);
	json_kv_bool(&j, "openat2", try_in_child(probe_openat2));
	json_kv_bool(&j, "mount_api", try_in_child(probe_mount_api));
	json_kv_bool(&j, "seccomp", sec);
	json_kv_uint(&j, "seccomp_filter_instructions", sizeof(capsule_seccomp_bpf) / 8);
	json_kv_string(&j, "cgroups", cs.v2 ? "v2" : "v1");
	json_kv_bool(&j, "cgroup_memory", cs.memory);
	json_kv_bool(&j, "cgroup_cpu", cs.cpu);
	json_kv_bool(&j, "cgroup_pids", cs.pids);
	if (cs.reason[0])
		json_kv_string(&j, "cgroup_reason", cs.reason);
	/* container.c, oom_floor_at_zero: why the floor needs the capability. */
	bool oom_floor = container_can_set_oom_floor();
	json_kv_bool(&j, "oom_floor", oom_floor);
	if (!oom_floor)
		json_kv_string(&j, "oom_reason", "no CAP_SYS_RESOURCE: commands may lower their oom_score_adj to the floor "
						 "capsule was started under");

	if (geteuid() != 0)
		probe_rootless(&j, &cs);

	/* "kvm": a guest can run on it, not merely that /dev/kvm opens (kvm.c). */
	char kvm_why[224];
	int kvm = vm_kvm_probe("/dev/kvm", kvm_why, sizeof(kvm_why));
	json_kv_bool(&j, "kvm", kvm == 0);
	json_kv_bool(&j, "kvm_device", access("/dev/kvm", F_OK) == 0);
	if (kvm < 0)
		json_kv_string(&j, "kvm_reason", kvm_why);
	bool qemu = access("/usr/bin/qemu-system-x86_64", X_OK) == 0;
	json_kv_bool(&j, "qemu", qemu);
	_cleanup_kernel_ struct vm_kernel kernel = { 0 };
	capsule_error kerr = { 0 };
	bool have_kernel = vm_find_kernel(&kernel, &kerr) == 0;
	json_kv_string(&j, "vm_kernel", kernel.path);
	if (have_kernel)
		json_kv_string(&j, "vm_kernel_kind", kernel.builtin ? "capsule" : "host");
	json_kv_string(&j, "vm_accel", kvm == 0 ? "kvm" : "tcg");
	json_kv_bool(&j, "vm_usable", qemu && have_kernel);
	if (!qemu)
		json_kv_string(&j, "vm_reason", "qemu-system-x86_64 is not installed (Debian: qemu-system-x86)");
	else if (!have_kernel)
		json_kv_string(&j, "vm_reason", kerr.message);
	else if (kvm == -ENOENT)
		json_kv_string(&j, "vm_reason", "no /dev/kvm: VMs run under TCG emulation, seconds to boot");
	else if (kvm == -EACCES && geteuid() != 0)
		json_kv_string(&j, "vm_reason", "VMs run under TCG emulation, seconds to boot: this user may not open "
						"/dev/kvm (a member of its group, kvm on Debian, may)");
	else if (kvm < 0)
		json_kv_string(&j, "vm_reason", "VMs run under TCG emulation, seconds to boot: KVM is unusable");
	json_object_end(&j);

	int e = 0;
	char *text = json_steal(&j, &e);
	if (!text)
		return 1;
	int r = write_all(1, text, strlen(text));
	if (r == 0)
		r = write_all(1, "\n", 1);
	free(text);
	return r < 0 ? 1 : 0;
}
