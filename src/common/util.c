#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "syscalls.h"
#include "util.h"

__attribute__((format(printf, 4, 0))) static int err_vfill(capsule_error *err, int errnum, bool with_strerror,
							    const char *fmt, va_list ap)
{
	if (errnum <= 0)
		errnum = EIO;
	if (err) {
		int n = vsnprintf(err->message, sizeof(err->message), fmt, ap);
		if (with_strerror && n >= 0 && (size_t)n < sizeof(err->message))
			snprintf(err->message + n, sizeof(err->message) - (size_t)n, ": %s", strerror(errnum));
		err->code = errnum;
	}
	return -errnum;
}

int cap_err(capsule_error *err, int errnum, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = err_vfill(err, errnum, true, fmt, ap);
	va_end(ap);
	return r;
}

int cap_err_plain(capsule_error *err, int errnum, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = err_vfill(err, errnum, false, fmt, ap);
	va_end(ap);
	return r;
}

int cap_err_wrap(capsule_error *err, int ret, const char *fmt, ...)
{
	if (ret >= 0)
		ret = -EIO;
	if (!err)
		return ret;
	char prefix[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(prefix, sizeof(prefix), fmt, ap);
	va_end(ap);
	if (err->code == 0 || err->message[0] == '\0') {
		snprintf(err->message, sizeof(err->message), "%s: %s", prefix, strerror(-ret));
		err->code = -ret;
		return ret;
	}
	char old[sizeof(err->message)];
	memcpy(old, err->message, sizeof(old));
	snprintf(err->message, sizeof(err->message), "%s: %s", prefix, old);
	return ret;
}

void socket_stream_buffers(int fd)
{
	int size = 2 << 20;
	setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
}

int write_all(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int read_all(int fd, void *buf, size_t len)
{
	uint8_t *p = buf;
	while (len > 0) {
		ssize_t n = read(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EPIPE;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int read_fd_whole(int fd, size_t cap, bool short_is_end, size_t max, char **out, size_t *out_len)
{
	size_t len = 0;
	_cleanup_free_ char *buf = malloc(cap + 1);
	if (!buf)
		return -ENOMEM;
	for (;;) {
		if (len == cap) {
			if (cap >= max)
				return -EFBIG;
			cap = cap * 2 > max ? max : cap * 2;
			char *nb = realloc(buf, cap + 1);
			if (!nb)
				return -ENOMEM;
			buf = nb;
		}
		ssize_t n = read(fd, buf + len, cap - len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		/* A regular file's read is short only at its end. */
		if (short_is_end && len < cap)
			break;
	}
	buf[len] = '\0';
	if (out_len)
		*out_len = len;
	*out = steal_ptr(buf);
	return 0;
}

int read_fd_all(int fd, size_t max, char **out, size_t *out_len)
{
	return read_fd_whole(fd, 4096, false, max, out, out_len);
}

int read_fd_all_sized(int fd, size_t size, size_t max, char **out, size_t *out_len)
{
	/* One byte more than the size: a full read then means the file grew, and reading goes on. */
	if (size >= max)
		return read_fd_whole(fd, max, false, max, out, out_len);
	return read_fd_whole(fd, size + 1 < 4096 ? 4096 : size + 1, true, max, out, out_len);
}

int fd_path(int fd, char *out, size_t size, capsule_error *err)
{
	char self[64];
	snprintf(self, sizeof(self), "/proc/self/fd/%d", fd);
	ssize_t l = readlink(self, out, size);
	if (l < 0)
		return cap_err(err, errno, "readlink '%s'", self);
	if ((size_t)l >= size)
		return cap_err_plain(err, ENAMETOOLONG, "readlink '%s': the path is longer than %zu bytes", self, size - 1);
	out[l] = '\0';
	return 0;
}

/* The length of the UTF-8 character at S (2 to 4), or 0 where S holds no valid one. */
static size_t utf8_char_len(const unsigned char *s)
{
	size_t n = s[0] >= 0xf0 && s[0] < 0xf5 ? 4 : s[0] >= 0xe0 && s[0] < 0xf0 ? 3 : s[0] >= 0xc2 && s[0] < 0xe0 ? 2 : 0;
	for (size_t i = 1; i < n; i++)
		if ((s[i] & 0xc0) != 0x80)
			return 0;
	return n;
}

void char_describe(const char *s, char out[16], size_t *len)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t n = u[0] >= 0x80 ? utf8_char_len(u) : 0;
	*len = n ? n : 1;
	if (n)
		snprintf(out, 16, "%.*s", (int)n, s);
	else if (u[0] >= 0x20 && u[0] < 0x7f)
		snprintf(out, 16, "%c", u[0]);
	else
		snprintf(out, 16, "\\x%02x", u[0]);
}

int read_file_at(int dirfd, const char *path, size_t max, char **out, size_t *out_len)
{
	_cleanup_close_ int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return -errno;
	return read_fd_all(fd, max, out, out_len);
}

/* NAME's new content through a temp file: readers see the old or the new, never a part. */
static int write_file_via_temp(int dirfd, const char *name, const void *data, size_t len, mode_t mode, bool durable,
			       bool swap)
{
	char tmp[512];
	if (snprintf(tmp, sizeof(tmp), ".%s.tmp.%d", name, (int)getpid()) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	_cleanup_close_ int fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
	if (fd < 0)
		return -errno;
	int r = write_all(fd, data, len);
	if (r == 0 && durable && fsync(fd) < 0)
		r = -errno;
	/* No NAME yet, or a filesystem without exchanges: the rename below. */
	if (r == 0 && swap && sys_renameat2(dirfd, tmp, dirfd, name, RENAME_EXCHANGE) == 0)
		return 0;
	if (r == 0 && renameat(dirfd, tmp, dirfd, name) < 0)
		r = -errno;
	if (r < 0)
		unlinkat(dirfd, tmp, 0);
	return r;
}

int write_file_atomic_at(int dirfd, const char *name, const void *data, size_t len, mode_t mode, bool durable)
{
	return write_file_via_temp(dirfd, name, data, len, mode, durable, false);
}

int write_file_swap_at(int dirfd, const char *name, const void *data, size_t len, mode_t mode)
{
	return write_file_via_temp(dirfd, name, data, len, mode, false, true);
}

uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t now_ms(void)
{
	return now_ns() / 1000000ull;
}

/* How deep rm_rf_at descends before it moves a subtree up instead: each level holds a
 * descriptor and a stack frame, and a sandbox decides how deep its folders go. */
#define RM_RF_MAX_DEPTH 64

/* Remove what is in DFD. A folder found at the depth limit is renamed into TOP (the folder
 * being removed) under a name numbered by *SEQ, for the caller's next pass. */
static int rm_rf_children(int dfd, dev_t dev, int depth, int top, unsigned *seq)
{
	int dup_fd = fcntl(dfd, F_DUPFD_CLOEXEC, 3);
	if (dup_fd < 0)
		return -errno;
	DIR *d = fdopendir(dup_fd);
	if (!d) {
		close(dup_fd);
		return -errno;
	}
	/* The duplicate shares DFD's position, which an earlier pass left at the end. */
	rewinddir(d);
	int ret = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		struct stat st;
		if (fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		if (S_ISDIR(st.st_mode)) {
			if (st.st_dev != dev) {
				/* A mount point: never descend into another filesystem. */
				ret = -EBUSY;
				continue;
			}
			if (depth >= RM_RF_MAX_DEPTH) {
				char up[64];
				int r;
				do {
					snprintf(up, sizeof(up), ".capsule-rm-%d-%u", (int)getpid(), (*seq)++);
					r = renameat(dfd, de->d_name, top, up);
				} while (r < 0 && (errno == EEXIST || errno == ENOTEMPTY));
				if (r < 0 && ret == 0)
					ret = -errno;
				continue;
			}
			int cfd = openat(dfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			/* overlayfs leaves its work/work mode 0: root passes it, its owner (a user's
			 * sandbox) gives itself the right first. */
			if (cfd < 0 && errno == EACCES && st.st_uid == geteuid() &&
			    fchmodat(dfd, de->d_name, 0700, 0) == 0)
				cfd = openat(dfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (cfd < 0) {
				ret = -errno;
				continue;
			}
			int r = rm_rf_children(cfd, dev, depth + 1, top, seq);
			close(cfd);
			if (r < 0)
				ret = r;
			if (unlinkat(dfd, de->d_name, AT_REMOVEDIR) < 0 && ret == 0)
				ret = -errno;
		} else if (unlinkat(dfd, de->d_name, 0) < 0 && errno != ENOENT && ret == 0) {
			ret = -errno;
		}
	}
	closedir(d);
	return ret;
}

int rm_rf_at(int dirfd, const char *name)
{
	struct stat st;
	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISDIR(st.st_mode))
		return unlinkat(dirfd, name, 0) < 0 ? -errno : 0;
	_cleanup_close_ int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	/* Pass after pass: each removes RM_RF_MAX_DEPTH levels and lifts what lies deeper to
	 * the top, so any depth is removed with bounded descriptors and stack. */
	int r;
	unsigned seq = 0, before;
	do {
		before = seq;
		r = rm_rf_children(fd, st.st_dev, 0, fd, &seq);
	} while (r == 0 && seq != before && seq < (1u << 30));
	if (unlinkat(dirfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT && r == 0)
		r = -errno;
	return r;
}

size_t utf8_seq_len(const unsigned char *s, size_t n)
{
	/* The Unicode table of well-formed byte sequences. */
	unsigned char c = s[0], lo = 0x80, hi = 0xbf;
	size_t need;

	if (c < 0x80)
		return 1;
	if (c < 0xc2)
		return 0;
	if (c < 0xe0) {
		need = 2;
	} else if (c < 0xf0) {
		need = 3;
		if (c == 0xe0)
			lo = 0xa0;
		else if (c == 0xed)
			hi = 0x9f;
	} else if (c < 0xf5) {
		need = 4;
		if (c == 0xf0)
			lo = 0x90;
		else if (c == 0xf4)
			hi = 0x8f;
	} else {
		return 0;
	}
	if (n < need || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < need; i++)
		if ((s[i] & 0xc0) != 0x80)
			return 0;
	return need;
}

int run_collect(const char *path, char *const argv[], char *out, size_t size, int *wstatus)
{
	extern char **environ;
	int pipefd[2];
	if (pipe2(pipefd, O_CLOEXEC) < 0)
		return -errno;
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
	posix_spawn_file_actions_adddup2(&fa, pipefd[1], 2);
	posix_spawnattr_t sa;
	posix_spawnattr_init(&sa);
	sigset_t none, dfl;
	sigemptyset(&none);
	sigemptyset(&dfl);
	sigaddset(&dfl, SIGPIPE);
	posix_spawnattr_setsigmask(&sa, &none);
	posix_spawnattr_setsigdefault(&sa, &dfl);
	posix_spawnattr_setflags(&sa, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
	pid_t pid;
	int r = posix_spawn(&pid, path, &fa, &sa, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&sa);
	close(pipefd[1]);
	if (r != 0) {
		close(pipefd[0]);
		return -r;
	}
	size_t have = 0;
	for (;;) {
		char buf[4096];
		ssize_t n = read(pipefd[0], buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		size_t take = (size_t)n < size - 1 - have ? (size_t)n : size - 1 - have;
		memcpy(out + have, buf, take);
		have += take;
	}
	close(pipefd[0]);
	out[have] = '\0';
	for (char *p = out; *p; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	while (waitpid(pid, wstatus, 0) < 0)
		if (errno != EINTR)
			return -errno;
	return 0;
}

/* Each fd from FIRST to LAST that /proc/self/fd lists: closed, or marked close-on-exec. No
 * allocation (the agent runs it between clone(CLONE_VM) and exec): raw getdents64 into a buffer
 * on the stack. Closing while listing skips nothing: procfs lists fds by number. */
static int fds_walk(unsigned first, unsigned last, bool close_them)
{
	int dfd = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -errno;
	struct linux_dirent64 {
		uint64_t ino;
		int64_t off;
		unsigned short reclen;
		unsigned char type;
		char name[];
	};
	char buf[2048] __attribute__((aligned(8)));
	int r = 0;
	for (;;) {
		long n = syscall(SYS_getdents64, dfd, buf, sizeof(buf));
		if (n <= 0) {
			r = n < 0 ? -errno : 0;
			break;
		}
		for (long off = 0; off < n && r == 0;) {
			const struct linux_dirent64 *d = (const void *)(buf + off);
			off += d->reclen;
			unsigned fd = 0;
			const char *c = d->name;
			if (*c < '0' || *c > '9')
				continue; /* "." and ".." */
			for (; *c >= '0' && *c <= '9'; c++)
				fd = fd * 10 + (unsigned)(*c - '0');
			if (fd < first || fd > last || (int)fd == dfd)
				continue;
			if (close_them)
				close((int)fd); /* an fd is gone after close, whatever it says */
			else if (fcntl((int)fd, F_SETFD, FD_CLOEXEC) < 0 && errno != EBADF)
				r = -errno;
		}
		if (r < 0)
			break;
	}
	close(dfd);
	return r;
}

int fds_cloexec_from(unsigned first)
{
	if (syscall(SYS_close_range, first, ~0U, CLOSE_RANGE_CLOEXEC) == 0)
		return 0;
	return fds_walk(first, ~0U, false);
}

int fds_close_range(unsigned first, unsigned last)
{
	if (syscall(SYS_close_range, first, last, 0) == 0)
		return 0;
	return fds_walk(first, last, true);
}

size_t tcp_listening_ports(const char *text, uint16_t *ports, size_t n, size_t max)
{
	static const char *const reach[] = { "00000000", "0100007F", "00000000000000000000000000000000",
					     "0000000000000000FFFF00000100007F" };
	for (const char *line = strchr(text, '\n'); line; line = strchr(line + 1, '\n')) {
		char addr[40];
		unsigned port, state;
		/* "  N: ADDR:PORT REMADDR:PORT ST ..." (the first line is the header) */
		if (sscanf(line + 1, " %*u: %39[0-9A-Fa-f]:%x %*[0-9A-Fa-f]:%*x %x", addr, &port, &state) != 3 ||
		    state != 0x0A || !port || port > 65535)
			continue;
		bool ok = false;
		for (size_t i = 0; i < ARRAY_SIZE(reach) && !ok; i++)
			ok = !strcasecmp(addr, reach[i]);
		size_t at = 0;
		while (at < n && ports[at] < port)
			at++;
		if (!ok || (at < n && ports[at] == port) || n >= max)
			continue;
		memmove(ports + at + 1, ports + at, (n - at) * sizeof(*ports));
		ports[at] = (uint16_t)port;
		n++;
	}
	return n;
}

/* Every CPU, as an affinity mask: the kernel makes of it what the thread's cpuset allows, and
 * keeps it as the mask asked for, so that a cpuset grown later reaches the thread again. */
int cpu_unpin(pid_t tid)
{
	cpu_set_t every_cpu;
	memset(&every_cpu, 0xff, sizeof(every_cpu));
	return (int)syscall(SYS_sched_setaffinity, tid, sizeof(every_cpu), &every_cpu);
}

bool cpu_pin_here(pid_t tid)
{
	cpu_set_t had, now;
	int cpu = sched_getcpu();
	if (cpu < 0 || cpu >= CPU_SETSIZE || sched_getaffinity(tid, sizeof(had), &had) < 0 || CPU_COUNT(&had) < 2)
		return false;
	/* Whether every CPU gives it the same mask again: tried, then put back where not. */
	if (cpu_unpin(tid) < 0)
		return false;
	if (sched_getaffinity(tid, sizeof(now), &now) < 0 || !CPU_EQUAL(&now, &had)) {
		sched_setaffinity(tid, sizeof(had), &had);
		return false;
	}
	cpu_set_t one;
	CPU_ZERO(&one);
	CPU_SET(cpu, &one);
	return sched_setaffinity(tid, sizeof(one), &one) == 0;
}
