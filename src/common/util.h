/* Small helpers shared by every capsule component: cleanup attributes with explicit ownership
 * transfer, and the internal half of the error contract (docs/errors.md). */
#ifndef CAPSULE_UTIL_H
#define CAPSULE_UTIL_H

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "capsule.h"

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _unused_ __attribute__((unused))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static inline void freep(void *p) { free(*(void **)p); }
static inline void closep(int *fd)
{
	if (*fd >= 0) {
		int saved = errno;
		close(*fd);
		errno = saved;
	}
}
#define _cleanup_free_ _cleanup_(freep)
#define _cleanup_close_ _cleanup_(closep)

/* Ownership transfer out of a cleanup variable: the variable is left empty so its cleanup
 * does nothing. */
#define steal_ptr(p) ({ __typeof__(p) _tmp = (p); (p) = NULL; _tmp; })
#define take_fd(fd) ({ int _tmp = (fd); (fd) = -1; _tmp; })

/* Fill ERR (which may be NULL) and return -ERRNUM. ERRNUM is a positive errno value. The
 * message names the operation and the quoted path, e.g. "open '/srv/data': Permission denied";
 * cap_err appends ": strerror(errnum)" itself, cap_err_plain does not. */
int cap_err(capsule_error *err, int errnum, const char *fmt, ...) _printf_(3, 4);
int cap_err_plain(capsule_error *err, int errnum, const char *fmt, ...) _printf_(3, 4);
/* Prefix context to an error already filled in by a callee: "starting sandbox 'x': <old>".
 * Returns the (negative) code already stored. */
int cap_err_wrap(capsule_error *err, int ret, const char *fmt, ...) _printf_(3, 4);

/* I/O helpers that retry on EINTR and short transfers. Return 0 or -errno. */
int write_all(int fd, const void *buf, size_t len);
/* Let a protocol socket hold a few frames in flight (the default, about 200 KiB, is less
 * than one 256 KiB DATA frame of a file stream, so each took several wakeups of both ends).
 * Best effort: capped by net.core.wmem_max. */
void socket_stream_buffers(int fd);
int read_all(int fd, void *buf, size_t len); /* -EPIPE on early EOF */
/* Read a whole small file (at most MAX bytes) into a NUL-terminated buffer. */
int read_fd_all(int fd, size_t max, char **out, size_t *out_len);
/* The same for a regular file of SIZE bytes (its fstat): a read that comes back short is its
 * end, so a file that did not grow is read in one read, not two. */
int read_fd_all_sized(int fd, size_t size, size_t max, char **out, size_t *out_len);
int read_file_at(int dirfd, const char *path, size_t max, char **out, size_t *out_len);

/* The path FD was opened by, as the kernel has it now, into OUT (SIZE bytes); -errno with a
 * message naming the fd when it cannot be read or does not fit. */
int fd_path(int fd, char *out, size_t size, capsule_error *err);

/* What an error calls the character at S: itself when printable ("x", or a whole UTF-8
 * character such as "é"), "\xNN" for any other byte; *LEN: the bytes it takes (1 to 4). */
void char_describe(const char *s, char out[16], size_t *len);
/* Write a file atomically: temp name in the same folder, rename over. DURABLE adds an fsync
 * before the rename, for what must survive a power loss (saves, volume metadata); files that
 * describe live state only need the rename. */
int write_file_atomic_at(int dirfd, const char *name, const void *data, size_t len, mode_t mode, bool durable);
/* The same for a file whose content after a host crash does not matter, in a folder that is
 * removed whole, replaced where a wait counts: the new file is exchanged with the old
 * (RENAME_EXCHANGE), and the old stays under the temp name (.NAME.tmp.PID) until the folder
 * goes. Renaming over it, ext4 (auto_da_alloc) starts writing the new file's data back and
 * the old one's last link goes, which waits for its own writeback: 0.15 to 0.35 ms on the
 * development machine, and an unlink of the old after an exchange 0.3 to 6 ms, against 0.02
 * ms for the exchange alone. The price: a crash before the writeback may leave NAME empty. */
int write_file_swap_at(int dirfd, const char *name, const void *data, size_t len, mode_t mode);

/* Length of the valid UTF-8 sequence at S (N >= 1 bytes available), or 0 when S does not
 * start one: overlongs, surrogates and code points above U+10FFFF are invalid. */
size_t utf8_seq_len(const unsigned char *s, size_t n);

/* Monotonic clock in milliseconds / nanoseconds. */
uint64_t now_ms(void);
uint64_t now_ns(void);

/* The ports of TEXT (a /proc/net/tcp or tcp6 table) in LISTEN state on an address where a
 * connection to 127.0.0.1 reaches them (0.0.0.0, 127.0.0.1, ::, ::ffff:127.0.0.1), merged into
 * PORTS (N sorted, unique entries of at most MAX); returns the new count. */
size_t tcp_listening_ports(const char *text, uint16_t *ports, size_t n, size_t max);

/* Remove a folder tree below DIRFD/NAME without following symlinks or crossing mount points. */
int rm_rf_at(int dirfd, const char *name);

/* Run the program PATH with ARGV (stdin /dev/null, SIGPIPE default, no signal blocked) and
 * wait for it: what it wrote to stdout and stderr, the first SIZE-1 bytes with newlines made
 * spaces, into OUT; its wait status into *WSTATUS. 0, or -errno when it could not be run
 * (-r of posix_spawn) or waited for. */
int run_collect(const char *path, char *const argv[], char *out, size_t size, int *wstatus);

/* Mark every fd from FIRST up close-on-exec: close_range(2), else each fd /proc/self/fd lists
 * (a kernel or a seccomp filter without close_range). -errno when neither works: the caller
 * then fails rather than exec with fds it does not know of. */
int fds_cloexec_from(unsigned first);

/* Pins thread TID (0: the caller) to the CPU the caller is on, for a start whose parent waits
 * for its child's exec (a vfork, a clone that shares memory): the kernel's fork balancing
 * often puts the child on another CPU, busy, while the waiting parent's idles. The child and
 * the parent give it back with cpu_unpin. False, and nothing changed, where that would not
 * be the same mask again: one CPU, or a thread held narrower than its cpuset (a caller's
 * taskset), which cpu_unpin would widen. */
bool cpu_pin_here(pid_t tid);
/* Every CPU back to TID (0: the caller), as far as its cpuset allows, after cpu_pin_here; a
 * raw syscall, callable in a child that shares its parent's memory. 0 or -1 with errno. */
int cpu_unpin(pid_t tid);

/* Close every fd from FIRST to LAST, for a child that does not exec: close_range(2), else each
 * fd /proc/self/fd lists. -errno when neither works: the caller then fails rather than go on
 * holding fds it should not have. */
int fds_close_range(unsigned first, unsigned last);

#endif
