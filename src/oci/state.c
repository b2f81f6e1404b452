/* Each container's folder, ROOT/ID: state.json (what `state` prints, and the monitor's pid
 * and start time), config.json (the bundle's, as it was at create: exec reads its process),
 * and start.fifo while it waits for `start`. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "json.h"
#include "oci.h"
#include "syscalls.h"
#include "util.h"

const char *oci_root = "/run/capsule-oci";

int oci_check_id(const char *id)
{
	size_t n = strlen(id);
	if (n == 0 || n > 255)
		return oci_fail("container id '%s': 1 to 255 characters", id);
	if (id[0] == '.' || id[0] == '-' || id[0] == '_')
		return oci_fail("container id '%s' must start with a letter or digit", id);
	for (size_t i = 0; i < n; i++) {
		char c = id[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
		      c == '.'))
			return oci_fail("container id '%s': only letters, digits, '_', '-' and '.'", id);
	}
	return 0;
}

/* Sandbox names are at most 63 characters: a longer id (podman's and containerd's are 64 hex
 * digits) keeps its first 63, and a clash is the EEXIST of the sandbox's create. */
void oci_sandbox_name(const char *id, char out[64])
{
	snprintf(out, 64, "%.63s", id);
}

/* --root with its missing parents (containerd names /run/containerd/runc/NAMESPACE). */
static int mkdir_parents(const char *path)
{
	char p[4096];
	if (snprintf(p, sizeof(p), "%s", path) >= (int)sizeof(p))
		return -ENAMETOOLONG;
	for (char *c = p + 1; *c; c++) {
		if (*c != '/')
			continue;
		*c = 0;
		if (mkdir(p, 0711) < 0 && errno != EEXIST)
			return -errno;
		*c = '/';
	}
	return mkdir(p, 0700) < 0 && errno != EEXIST ? -errno : 0;
}

static int root_open(bool make)
{
	int r;
	if (make && (r = mkdir_parents(oci_root)) < 0)
		return r;
	int fd = open(oci_root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

int oci_state_dir_make(const char *id, int *dirfd)
{
	int root = root_open(true);
	if (root < 0)
		return oci_fail("--root '%s': %s", oci_root, strerror(-root));
	if (mkdirat(root, id, 0700) < 0) {
		int e = errno;
		close(root);
		if (e == EEXIST)
			return oci_fail("container '%s' exists", id);
		return oci_fail("making '%s/%s': %s", oci_root, id, strerror(e));
	}
	*dirfd = openat(root, id, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	close(root);
	if (*dirfd < 0)
		return oci_fail("opening '%s/%s': %s", oci_root, id, strerror(errno));
	return 0;
}

int oci_state_dir_open(const char *id, int *dirfd)
{
	if (oci_check_id(id))
		return 1;
	int root = root_open(false);
	*dirfd = root < 0 ? -1 : openat(root, id, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (root >= 0)
		close(root);
	if (*dirfd < 0)
		return oci_fail("container '%s' does not exist", id);
	return 0;
}

int oci_state_dir_remove(const char *id)
{
	int root = root_open(false);
	if (root < 0)
		return 0;
	int r = rm_rf_at(root, id);
	close(root);
	return r;
}

static int annotation_out(const char *name, const char *v, size_t n, void *payload)
{
	_cleanup_free_ char *value = NULL;
	if (json_string_value(v, n, &value) == 0)
		json_kv_string(payload, name, value);
	return 0;
}

void oci_state_json(const struct oci_state *st, bool pretty, char **out)
{
	struct json_writer j;
	json_init(&j, pretty);
	json_object_begin(&j);
	json_kv_string(&j, "ociVersion", OCI_VERSION);
	json_kv_string(&j, "id", st->id);
	json_kv_string(&j, "status", st->status);
	if (strcmp(st->status, "stopped") && st->pid > 0)
		json_kv_int(&j, "pid", st->pid);
	json_kv_string(&j, "bundle", st->bundle);
	json_kv_string(&j, "created", st->created);
	json_key(&j, "annotations");
	json_object_begin(&j);
	if (st->annotations)
		json_object_each(st->annotations, strlen(st->annotations), 4096, annotation_out, &j);
	json_object_end(&j);
	json_object_end(&j);
	*out = json_steal(&j, NULL);
}

/* The private fields beside the spec's: the monitor's start time and the sandbox. */
static char *state_file_text(const struct oci_state *st)
{
	struct json_writer j;
	json_init(&j, false);
	json_object_begin(&j);
	json_kv_string(&j, "id", st->id);
	json_kv_string(&j, "status", st->status);
	json_kv_int(&j, "pid", st->pid);
	json_kv_uint(&j, "pid_start", st->pid_start);
	json_kv_string(&j, "bundle", st->bundle);
	json_kv_string(&j, "sandbox", st->sandbox);
	json_kv_string(&j, "created", st->created);
	json_kv_string(&j, "annotations", st->annotations);
	json_object_end(&j);
	return json_steal(&j, NULL);
}

int oci_state_write(int dirfd, const struct oci_state *st)
{
	_cleanup_free_ char *text = state_file_text(st);
	if (!text)
		return -ENOMEM;
	return write_file_atomic_at(dirfd, "state.json", text, strlen(text), 0600, false);
}

uint64_t oci_proc_start_time(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	_cleanup_free_ char *text = NULL;
	if (read_file_at(AT_FDCWD, path, 4096, &text, NULL) < 0)
		return 0;
	/* The command may hold spaces and parentheses: fields count from the last ')'. */
	char *p = strrchr(text, ')');
	if (!p)
		return 0;
	unsigned long long start = 0;
	/* state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime stime
	 * cutime cstime priority nice num_threads itrealvalue starttime */
	if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu", &start) != 1)
		return 0;
	return start;
}

int oci_signal_pid(pid_t pid, uint64_t start, int sig)
{
	if (pid <= 0)
		return -ESRCH;
	_cleanup_close_ int fd = sys_pidfd_open(pid, 0);
	if (fd < 0)
		return -errno;
	if (oci_proc_start_time(pid) != start)
		return -ESRCH;
	return sys_pidfd_send_signal(fd, sig) < 0 ? -errno : 0;
}

static void copy_field(const char *text, size_t len, const char *key, char *out, size_t size)
{
	_cleanup_free_ char *v = NULL;
	if (json_get_string(text, len, key, &v) == 0)
		snprintf(out, size, "%s", v);
}

int oci_state_read(int dirfd, struct oci_state *st)
{
	memset(st, 0, sizeof(*st));
	_cleanup_free_ char *text = NULL;
	size_t len;
	int r = read_file_at(dirfd, "state.json", 1 << 20, &text, &len);
	if (r < 0)
		return r;
	copy_field(text, len, "id", st->id, sizeof(st->id));
	copy_field(text, len, "status", st->status, sizeof(st->status));
	copy_field(text, len, "bundle", st->bundle, sizeof(st->bundle));
	copy_field(text, len, "sandbox", st->sandbox, sizeof(st->sandbox));
	copy_field(text, len, "created", st->created, sizeof(st->created));
	json_get_string(text, len, "annotations", &st->annotations);
	int64_t v;
	if (json_get_int(text, len, "pid", &v) == 0 && v > 0 && v < INT32_MAX)
		st->pid = (pid_t)v;
	if (json_get_int(text, len, "pid_start", &v) == 0 && v > 0)
		st->pid_start = (uint64_t)v;
	if (!st->status[0])
		return -EBADMSG;
	if ((!strcmp(st->status, "created") || !strcmp(st->status, "running")) &&
	    (st->pid <= 0 || oci_proc_start_time(st->pid) != st->pid_start))
		snprintf(st->status, sizeof(st->status), "stopped");
	/* Paused is the sandbox's state, not the monitor's (which stays awake): the library's. */
	if ((!strcmp(st->status, "created") || !strcmp(st->status, "running")) && st->sandbox[0]) {
		capsule_sandbox *sb;
		capsule_sandbox_info info;
		if (capsule_sandbox_open(&sb, st->sandbox, NULL) == 0) {
			if (capsule_sandbox_inspect(sb, &info, NULL) == 0 && !strcmp(info.state, "paused"))
				snprintf(st->status, sizeof(st->status), "paused");
			capsule_sandbox_free(sb);
		}
	}
	/* A create that died before its monitor wrote "created" has nothing running. */
	if (!strcmp(st->status, "creating") && st->pid > 0 && oci_proc_start_time(st->pid) != st->pid_start)
		snprintf(st->status, sizeof(st->status), "stopped");
	return 0;
}

int oci_state_each(int (*fn)(const struct oci_state *st, void *payload), void *payload)
{
	DIR *d = opendir(oci_root);
	struct dirent *e;
	int r = 0;
	while (r == 0 && d && (e = readdir(d))) {
		int sfd = e->d_name[0] == '.' ? -1 : openat(dirfd(d), e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		struct oci_state st;
		if (sfd < 0)
			continue;
		int got = oci_state_read(sfd, &st);
		close(sfd);
		if (got < 0)
			continue;
		r = fn(&st, payload);
		oci_state_clear(&st);
	}
	if (d)
		closedir(d);
	return r;
}

void oci_state_clear(struct oci_state *st)
{
	free(st->annotations);
	st->annotations = NULL;
}
