#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "home.h"
#include "log.h"

static FILE *log_stream;

void shim_log_open(int run_fd)
{
	int fd = openat(run_fd, "shim.log", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd >= 0)
		log_stream = fdopen(fd, "a");
}

void shim_log_close(void)
{
	if (log_stream)
		fclose(log_stream);
	log_stream = NULL;
}

FILE *shim_log_file(void)
{
	return log_stream;
}

void shim_log(const char *fmt, ...)
{
	if (!log_stream)
		return;
	time_t t = time(NULL);
	struct tm tm;
	char ts[32];
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", gmtime_r(&t, &tm));
	fprintf(log_stream, "%s ", ts);
	va_list ap;
	va_start(ap, fmt);
	vfprintf(log_stream, fmt, ap);
	va_end(ap);
	fputc('\n', log_stream);
	fflush(log_stream);
}

void shim_test_pause(const char *stage)
{
	/* Test hook (tests/e2e/test_ephemeral.py): CAPSULE_TEST_SHIM_PAUSE=STAGE makes the shim
	 * announce "STAGE PID" in $CAPSULE_HOME/.test-shim-paused and wait there to be killed, so
	 * a test can SIGKILL it at a chosen step of a start or an end. */
	const char *want = getenv("CAPSULE_TEST_SHIM_PAUSE");
	if (!want || strcmp(want, stage) != 0)
		return;
	_cleanup_close_ int home = -1;
	if (home_open(&home, NULL) < 0)
		return;
	char text[64];
	int n = snprintf(text, sizeof(text), "%s %d\n", stage, (int)getpid());
	write_file_atomic_at(home, ".test-shim-paused", text, (size_t)n, 0600, false);
	for (int i = 0; i < 600; i++)
		usleep(100000);
}
