/* QEMU's migration to a file and back, for a pause to disk (docs/architecture.md, "Pause to
 * disk"). QEMU 7.2 has no file: URI (8.2 adds it) and our -sandbox spawn=deny refuses exec:,
 * so the shim opens the file itself and hands QEMU its fd over QMP (getfd, SCM_RIGHTS), and
 * migrate fd:NAME writes the stream there; a new QEMU started with -incoming defer reads it
 * back with migrate-incoming fd:NAME. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "json.h"
#include "util.h"
#include "vm.h"

#define MIGRATE_FD_NAME "capsule-state"
#define MIGRATE_URI "{\"uri\": \"fd:" MIGRATE_FD_NAME "\"}"
#define MIGRATE_QMP_TIMEOUT_MS 30000
/* A stopped guest's RAM goes at the disk's speed (about 0.5 s for 512 MiB under TCG here);
 * past this, something is wrong. */
#define MIGRATE_TIMEOUT_MS (10u * 60 * 1000)
#define MIGRATE_POLL_NS (20 * 1000 * 1000)

uint64_t vm_state_max_bytes(const struct capsule_config *cfg)
{
	return (cfg->memory_bytes ? cfg->memory_bytes : VM_DEFAULT_MEMORY_BYTES) + VM_STATE_DEVICE_BYTES;
}

/* query-migrate until it says completed (0) or failed; with a file FD, its size is checked
 * against MAX_BYTES on the way (0: not checked). */
static int migrate_wait(struct vm *vm, const char *what, int fd, uint64_t max_bytes, capsule_error *err)
{
	uint64_t deadline = now_ms() + MIGRATE_TIMEOUT_MS;
	for (;;) {
		_cleanup_free_ char *ret = NULL, *status = NULL, *desc = NULL;
		int r = qmp_execute(vm->qmp_fd, "query-migrate", NULL, MIGRATE_QMP_TIMEOUT_MS, &ret, err);
		if (r < 0)
			return r;
		json_get_string(ret, strlen(ret), "status", &status);
		json_get_string(ret, strlen(ret), "error-desc", &desc);
		if (status && !strcmp(status, "completed"))
			return 0;
		if (status && (!strcmp(status, "failed") || !strcmp(status, "cancelled")))
			return cap_err_plain(err, EIO, "QEMU's %s failed: %.300s", what, desc ? desc : status);
		struct stat st;
		if (max_bytes && fstat(fd, &st) == 0 && (uint64_t)st.st_size > max_bytes) {
			qmp_execute(vm->qmp_fd, "migrate_cancel", NULL, MIGRATE_QMP_TIMEOUT_MS, NULL, NULL);
			return cap_err_plain(err, EFBIG, "the memory state grew past %llu MiB (the guest's RAM and its devices)",
					     (unsigned long long)(max_bytes >> 20));
		}
		if (now_ms() >= deadline)
			return cap_err_plain(err, ETIMEDOUT, "QEMU's %s took over %u s", what, MIGRATE_TIMEOUT_MS / 1000);
		struct timespec nap = { .tv_nsec = MIGRATE_POLL_NS };
		nanosleep(&nap, NULL);
	}
}

int vm_state_space_check(int run_fd, uint64_t max_bytes, capsule_error *err)
{
	struct statvfs sv;
	if (fstatvfs(run_fd, &sv) < 0)
		return cap_err(err, errno, "free space for the memory state");
	uint64_t avail = (uint64_t)sv.f_bavail * sv.f_frsize;
	if (avail < max_bytes)
		return cap_err_plain(err, ENOSPC,
				     "the memory state may take up to %llu MiB (the guest's RAM and its devices) and "
				     "the sandbox's folder has %llu MiB free",
				     (unsigned long long)(max_bytes >> 20), (unsigned long long)(avail >> 20));
	return 0;
}

int vm_migrate_to_file(struct vm *vm, int run_fd, uint64_t max_bytes, uint64_t *bytes, capsule_error *err)
{
	if (vm->qmp_fd < 0)
		return cap_err_plain(err, EPIPE, "QEMU's monitor is closed");
	/* One left by a save that died half-way is nobody's. */
	unlinkat(run_fd, VM_STATE_TMP, 0);
	_cleanup_close_ int fd = openat(run_fd, VM_STATE_TMP, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return cap_err(err, errno, "creating the memory state file '%s'", VM_STATE_TMP);
	int r = qmp_execute_fd(vm->qmp_fd, "getfd", "{\"fdname\": \"" MIGRATE_FD_NAME "\"}", fd, MIGRATE_QMP_TIMEOUT_MS,
			       NULL, err);
	/* QEMU's default cap (32 MiB/s) is for a guest that runs on meanwhile; ours is stopped. */
	if (r == 0)
		r = qmp_execute(vm->qmp_fd, "migrate-set-parameters", "{\"max-bandwidth\": 1099511627776}",
				MIGRATE_QMP_TIMEOUT_MS, NULL, err);
	if (r == 0 && (r = qmp_execute(vm->qmp_fd, "migrate", MIGRATE_URI, MIGRATE_QMP_TIMEOUT_MS, NULL, err)) < 0)
		qmp_execute(vm->qmp_fd, "closefd", "{\"fdname\": \"" MIGRATE_FD_NAME "\"}", MIGRATE_QMP_TIMEOUT_MS, NULL,
			    NULL);
	if (r == 0)
		r = migrate_wait(vm, "migration to the file", fd, max_bytes, err);
	struct stat st;
	if (r == 0 && (fsync(fd) < 0 || fstat(fd, &st) < 0))
		r = cap_err(err, errno, "writing the memory state");
	if (r == 0 && (renameat(run_fd, VM_STATE_TMP, run_fd, VM_STATE_FILE) < 0 || fsync(run_fd) < 0))
		r = cap_err(err, errno, "putting the memory state in place");
	if (r < 0) {
		unlinkat(run_fd, VM_STATE_TMP, 0);
		return r;
	}
	*bytes = (uint64_t)st.st_size;
	return 0;
}

int vm_migrate_from_file(struct vm *vm, int run_fd, capsule_error *err)
{
	_cleanup_close_ int fd = openat(run_fd, VM_STATE_FILE, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return cap_err(err, errno, "opening the memory state file '%s'", VM_STATE_FILE);
	int r = qmp_execute_fd(vm->qmp_fd, "getfd", "{\"fdname\": \"" MIGRATE_FD_NAME "\"}", fd, MIGRATE_QMP_TIMEOUT_MS,
			       NULL, err);
	if (r == 0)
		r = qmp_execute(vm->qmp_fd, "migrate-incoming", MIGRATE_URI, MIGRATE_QMP_TIMEOUT_MS, NULL, err);
	return r < 0 ? r : migrate_wait(vm, "load of the memory state", -1, 0, err);
}
