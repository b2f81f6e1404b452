/* The guest's serial console, copied into run/<name>/console.log with a cap.
 *
 * QEMU's file chardev appends without a limit, and whatever reaches the guest's console (the
 * kernel's messages, the agent's) would fill the owner's disk. So QEMU gets one end of a
 * socketpair instead, and a thread of the shim copies what comes into the log until
 * VM_CONSOLE_LOG_MAX_BYTES, adds a line saying the rest was dropped, and from then on reads
 * and discards: the guest never waits on a full pipe (its kernel spins on the serial port's
 * transmit register, and PID 1 writes there). The beginning is what is kept, since the boot's
 * messages are what the log is read for.
 *
 * A thread, not a child process: the copy must run while the shim itself waits (a boot, a
 * QMP command), and a thread needs no reaping. It touches nothing but its own two fds and
 * stack, takes no lock and allocates nothing, so a fork by the main thread meanwhile is safe;
 * all signals stay blocked in it, so that they reach the shim's signalfd. It ends at EOF,
 * which comes when QEMU exits. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"
#include "vm.h"

size_t vm_console_copy(int from, int log, size_t max)
{
	static const char dropped[] = "\n[capsule: the console's output past this point was dropped: the log is capped]\n";
	char buf[16384];
	size_t written = 0;
	bool capped = false;
	for (;;) {
		ssize_t n = read(from, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return written;
		if (capped)
			continue;
		size_t room = max - written, take = (size_t)n < room ? (size_t)n : room;
		if (take && write_all(log, buf, take) < 0)
			capped = true; /* a log that cannot be written is not retried: the copy goes on */
		else
			written += take;
		if (!capped && take < (size_t)n) {
			(void)!write_all(log, dropped, sizeof(dropped) - 1);
			capped = true;
		}
	}
}

/* The thread's two fds travel in its argument itself: no allocation to hand over. */
static void *fds_to_arg(int from, int log)
{
	return (void *)(uintptr_t)((uint64_t)(uint32_t)from << 32 | (uint32_t)log);
}

static void *console_thread(void *arg)
{
	uint64_t fds = (uint64_t)(uintptr_t)arg;
	int from = (int)(fds >> 32), log = (int)(uint32_t)fds;
	vm_console_copy(from, log, VM_CONSOLE_LOG_MAX_BYTES);
	close(from);
	close(log);
	return NULL;
}

int vm_console_start(int run_fd, int *qemu_end, capsule_error *err)
{
	_cleanup_close_ int log = openat(run_fd, VM_CONSOLE_LOG,
					 O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (log < 0)
		return cap_err(err, errno, "open '%s'", VM_CONSOLE_LOG);
	/* A log left by an older capsule may be 0644: O_CREAT's mode does not touch it. */
	if (fchmod(log, 0600) < 0)
		return cap_err(err, errno, "chmod '%s'", VM_CONSOLE_LOG);
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return cap_err(err, errno, "socketpair");
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 256 * 1024);
	pthread_t t;
	int r = pthread_create(&t, &attr, console_thread, fds_to_arg(sv[0], log));
	pthread_attr_destroy(&attr);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r != 0) {
		close(sv[0]);
		close(sv[1]);
		return cap_err(err, r, "starting the console's copy");
	}
	log = -1; /* the thread's now */
	*qemu_end = sv[1];
	return 0;
}
