/* capsule-pool-keeper: one per warm pool, started by capsule_pool_create (never its caller's
 * child), with the creator's socket as fd 3 and the pool's lock, already held, as fd 4.
 *
 *   capsule-pool-keeper --pool NAME
 *
 * The loop is the library's (pool_keep in src/lib/pool.c): it keeps NAME's sandboxes started
 * and owns them (their creator sockets), so that a keeper killed with SIGKILL takes every
 * ready sandbox with it. It prints nothing; what went wrong goes to pools/NAME/keeper.log. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "pool.h"

#define REPORT_FD 3
#define LOCK_FD 4

int main(int argc, char **argv)
{
	if (argc != 3 || strcmp(argv[1], "--pool") != 0)
		return 2;
	/* Not left where a sandbox's shim is handed its own socket and lock (fds 3 and 4). */
	int report = fcntl(REPORT_FD, F_DUPFD_CLOEXEC, 10), lock = fcntl(LOCK_FD, F_DUPFD_CLOEXEC, 10);
	if (report < 0 || lock < 0)
		return 2;
	close(REPORT_FD);
	close(LOCK_FD);
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	return pool_keep(argv[2], report, lock);
}
