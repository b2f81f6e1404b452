/* What every helper process the shim forks (QEMU, capsule-fuse) does first. */
#ifndef CAPSULE_SHIM_CHILD_H
#define CAPSULE_SHIM_CHILD_H

#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

/* Die with the shim, even when the shim is SIGKILLed (and if it already died between fork
 * and here, go at once); drop the shim's blocked signals (its signalfd set) and its ignored
 * SIGPIPE, which exec would otherwise pass on. */
static inline void shim_child_prepare(pid_t parent)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	if (getppid() != parent)
		_exit(127);
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	signal(SIGPIPE, SIG_DFL);
}

#endif
