/* Freezing a sandbox's processes while its filesystem is copied (a save or checkpoint of a
 * running sandbox), so that the copy is one moment's state. cgroup v2: cgroup.freeze of the
 * sandbox's own cgroup. cgroup v1: the freezer controller, which cgroup.c does not use for
 * limits, so the sandbox's processes are moved into capsule/<name> under the freezer mount
 * when a freeze is asked for (v1 hierarchies are independent: this changes nothing else). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cgroup.h"
#include "freeze.h"
#include "util.h"

#define FREEZE_WAIT_MS 5000

static int write_str(const char *path, const char *s, capsule_error *err)
{
	_cleanup_close_ int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write_all(fd, s, strlen(s)) < 0)
		return cap_err(err, errno, "write '%s'", path);
	return 0;
}

static bool file_has(const char *path, const char *needle)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	_cleanup_free_ char *text = NULL;
	size_t len;
	if (fd < 0 || read_fd_all(fd, 1u << 16, &text, &len) < 0)
		return false;
	return strstr(text, needle) != NULL;
}

/* The v1 freezer hierarchy's mount point, from mountinfo ("... - cgroup cgroup rw,freezer"). */
static int freezer_mount(char *out, size_t size)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return -errno;
	char line[4096];
	int r = -ENOENT;
	while (r < 0 && fgets(line, sizeof(line), f)) {
		char *sep = strstr(line, " - cgroup ");
		if (!sep)
			continue;
		char *opts = strrchr(sep, ' ');
		if (!opts)
			continue;
		bool freezer = false;
		for (char *save = NULL, *o = strtok_r(opts + 1, ",\n", &save); o; o = strtok_r(NULL, ",\n", &save))
			if (!strcmp(o, "freezer"))
				freezer = true;
		if (!freezer)
			continue;
		char mnt[4096];
		if (sscanf(line, "%*s %*s %*s %*s %4095s", mnt) == 1) {
			snprintf(out, size, "%s", mnt);
			r = 0;
		}
	}
	fclose(f);
	return r;
}

/* The shim's parent, when it is the process that made an ephemeral sandbox: capsule-oci's
 * monitor joins its sandbox's memory and cpu cgroups (containerd reads a container's figures
 * there) but is its owner, not one of its processes, and is never frozen with them: it must
 * still take a KILL (docs/oci.md, "pause"). */
static bool is_owner(const char *pid)
{
	return atol(pid) == (long)getppid();
}

/* Move every process of the sandbox's main cgroup (but its owner) into the freezer cgroup FZ.
 * Returns how many were not there yet. */
static int move_procs(const char *from, const char *fz, capsule_error *err)
{
	char path[4200];
	snprintf(path, sizeof(path), "%s/cgroup.procs", from);
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	_cleanup_free_ char *text = NULL;
	size_t len;
	if (fd < 0 || read_fd_all(fd, 1u << 22, &text, &len) < 0)
		return cap_err(err, errno, "read '%s'", path);
	char to[4200];
	snprintf(to, sizeof(to), "%s/cgroup.procs", fz);
	_cleanup_close_ int out = open(to, O_WRONLY | O_CLOEXEC);
	if (out < 0)
		return cap_err(err, errno, "open '%s'", to);
	char here[4200];
	snprintf(here, sizeof(here), "%s/cgroup.procs", fz);
	int moved = 0;
	for (char *save = NULL, *p = strtok_r(text, "\n", &save); p; p = strtok_r(NULL, "\n", &save)) {
		if (is_owner(p))
			continue;
		/* One write per pid: the kernel takes one pid a write. A process that exited since
		 * the read is fine (ESRCH). */
		if (write(out, p, strlen(p)) < 0 && errno != ESRCH)
			return cap_err(err, errno, "moving pid %s into '%s'", p, fz);
		moved++;
	}
	return moved;
}

static bool wait_for(const char *path, const char *needle)
{
	uint64_t deadline = now_ms() + FREEZE_WAIT_MS;
	while (!file_has(path, needle)) {
		if (now_ms() > deadline)
			return false;
		usleep(1000);
	}
	return true;
}

/* Freeze the v1 freezer cgroup whose freezer.state is PATH: 1 once FROZEN, 0 if that took
 * longer than FREEZE_WAIT_MS. A v1 freeze can stay FREEZING for good when a task was in a
 * state the freezer skipped as it passed (new ones keep appearing, or one was between fork
 * and its first run): as runc does, ask again each turn, which tries the stragglers again,
 * and now and then thaw for a moment and start over. */
static int freeze_v1(const char *path, capsule_error *err)
{
	uint64_t deadline = now_ms() + FREEZE_WAIT_MS;
	for (unsigned turn = 1;; turn++) {
		if (turn % 50 == 0) {
			write_str(path, "THAWED", NULL);
			usleep(10000);
		}
		int r = write_str(path, "FROZEN", err);
		if (r < 0)
			return r;
		if (file_has(path, "FROZEN"))
			return 1;
		if (now_ms() > deadline)
			return 0;
		usleep(1000);
	}
}

int sandbox_freeze(struct cgroup_handle *cg, const char *cgname, bool freeze, capsule_error *err)
{
	const char *main_cg = cg ? cgroup_path(cg) : NULL;
	if (!main_cg)
		return cap_err_plain(err, EOPNOTSUPP,
				     "saving a running sandbox needs its cgroup (to freeze it), and this sandbox has none");
	char path[4200];
	if (cgroup_v2_fd(cg) >= 0) {
		snprintf(path, sizeof(path), "%s/cgroup.freeze", main_cg);
		int r = write_str(path, freeze ? "1" : "0", err);
		if (r < 0 || !freeze)
			return r;
		snprintf(path, sizeof(path), "%s/cgroup.events", main_cg);
		if (!wait_for(path, "frozen 1")) {
			sandbox_freeze(cg, cgname, false, NULL);
			return cap_err_plain(err, ETIMEDOUT, "the sandbox's processes did not freeze within %d ms", FREEZE_WAIT_MS);
		}
		return 0;
	}
	char mnt[4096], fz[4200];
	if (freezer_mount(mnt, sizeof(mnt)) < 0)
		return cap_err_plain(err, EOPNOTSUPP, "saving a running sandbox needs the cgroup freezer, which is not mounted");
	snprintf(fz, sizeof(fz), "%s/capsule", mnt);
	if (mkdir(fz, 0755) < 0 && errno != EEXIST)
		return cap_err(err, errno, "mkdir '%s'", fz);
	snprintf(fz, sizeof(fz), "%s/capsule/%s", mnt, cgname);
	snprintf(path, sizeof(path), "%s/freezer.state", fz);
	if (!freeze) {
		struct stat st;
		if (stat(fz, &st) < 0)
			return 0;
		return write_str(path, "THAWED", err);
	}
	if (mkdir(fz, 0755) < 0 && errno != EEXIST)
		return cap_err(err, errno, "mkdir '%s'", fz);
	/* A process forked while we move its parent lands beside it in the main cgroup, not in
	 * the freezer's: move again until a pass finds every process already frozen with the
	 * rest (one moved into a frozen v1 cgroup freezes at once). */
	for (int pass = 0; pass < 64; pass++) {
		int moved = move_procs(main_cg, fz, err);
		if (moved < 0)
			return moved;
		int r = freeze_v1(path, err);
		if (r < 0)
			return r;
		if (r == 0) {
			write_str(path, "THAWED", NULL);
			return cap_err_plain(err, ETIMEDOUT, "the sandbox's processes did not freeze within %d ms", FREEZE_WAIT_MS);
		}
		char a[4200], b[4200];
		snprintf(a, sizeof(a), "%s/cgroup.procs", main_cg);
		snprintf(b, sizeof(b), "%s/cgroup.procs", fz);
		_cleanup_free_ char *ta = NULL, *tb = NULL;
		size_t la, lb;
		read_file_at(AT_FDCWD, a, 1u << 22, &ta, &la);
		read_file_at(AT_FDCWD, b, 1u << 22, &tb, &lb);
		if (ta && tb && la == lb && !strcmp(ta, tb))
			return 0;
		if (ta && tb) {
			/* Same set, maybe in another order, the owner left out: count lines. */
			size_t na = 0, nb = 0;
			for (char *save = NULL, *p = strtok_r(ta, "\n", &save); p; p = strtok_r(NULL, "\n", &save))
				na += !is_owner(p);
			for (size_t i = 0; i < lb; i++)
				nb += tb[i] == '\n';
			if (na == nb)
				return 0;
		}
	}
	write_str(path, "THAWED", NULL);
	return cap_err_plain(err, EAGAIN, "the sandbox's processes kept forking while being frozen");
}

void sandbox_freezer_remove(const char *cgname)
{
	char mnt[4096], fz[4200], path[4300];
	if (freezer_mount(mnt, sizeof(mnt)) < 0)
		return;
	snprintf(fz, sizeof(fz), "%s/capsule/%s", mnt, cgname);
	snprintf(path, sizeof(path), "%s/freezer.state", fz);
	struct stat st;
	if (stat(fz, &st) < 0)
		return;
	/* Frozen processes cannot die: a shim killed during a save left them so. */
	write_str(path, "THAWED", NULL);
	for (int i = 0; i < 100 && rmdir(fz) < 0 && errno == EBUSY; i++)
		usleep(10000);
}
