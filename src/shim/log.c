#include <fcntl.h>
#include <stdarg.h>
#include <time.h>

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
