/* A status line on stderr while something takes a while, for a person at a terminal.
 *
 * Nothing for the first STATUS_QUIET_MS (a container starts, a small save ends, well before):
 * a line that flashes by is noise. After that, what is happening and the seconds it has taken,
 * redrawn in place by a ticker thread, and erased when the operation ends, so that the
 * command's own output, or its error, starts on a clean line. Nothing at all when stderr is not
 * a terminal, or with CAPSULE_PROGRESS=0; with CAPSULE_PROGRESS=1 at once, with no quiet
 * moment first. */
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

#define STATUS_QUIET_MS 300
#define STATUS_TICK_MS 250

static struct {
	pthread_mutex_t lock;
	pthread_cond_t wake;
	pthread_t ticker;
	bool running, stop, shown;
	long quiet_ms;
	char what[96];  /* "starting 'dev'" */
	char stage[48]; /* the library's stage name, may be "" */
	struct timespec began;
} S = { .lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER };

static bool status_wanted(void)
{
	const char *e = getenv("CAPSULE_PROGRESS");
	return isatty(STDERR_FILENO) && !(e && !strcmp(e, "0"));
}

static long ms_since(const struct timespec *t0)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (now.tv_sec - t0->tv_sec) * 1000 + (now.tv_nsec - t0->tv_nsec) / 1000000;
}

/* Called with the lock held. */
static void draw(long ms)
{
	fprintf(stderr, "\r\033[K%s%s%s ... %ld.%lds", S.what, S.stage[0] ? ": " : "", S.stage, ms / 1000,
		ms % 1000 / 100);
	fflush(stderr);
	S.shown = true;
}

static void *ticker(void *unused)
{
	(void)unused;
	pthread_mutex_lock(&S.lock);
	while (!S.stop) {
		long ms = ms_since(&S.began);
		if (ms >= S.quiet_ms)
			draw(ms);
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		long wait_ms = ms >= S.quiet_ms ? STATUS_TICK_MS : S.quiet_ms - ms;
		until.tv_nsec += wait_ms * 1000000L;
		until.tv_sec += until.tv_nsec / 1000000000L;
		until.tv_nsec %= 1000000000L;
		pthread_cond_timedwait(&S.wake, &S.lock, &until);
	}
	pthread_mutex_unlock(&S.lock);
	return NULL;
}

void cli_status_begin(const char *fmt, ...)
{
	if (S.running || !status_wanted())
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(S.what, sizeof(S.what), fmt, ap);
	va_end(ap);
	S.stage[0] = '\0';
	S.stop = S.shown = false;
	const char *e = getenv("CAPSULE_PROGRESS");
	S.quiet_ms = e && !strcmp(e, "1") ? 0 : STATUS_QUIET_MS;
	clock_gettime(CLOCK_MONOTONIC, &S.began);
	S.running = pthread_create(&S.ticker, NULL, ticker, NULL) == 0;
}

void cli_status_stage(const char *stage)
{
	if (!S.running)
		return;
	pthread_mutex_lock(&S.lock);
	snprintf(S.stage, sizeof(S.stage), "%s", stage ? stage : "");
	if (S.shown)
		draw(ms_since(&S.began));
	pthread_mutex_unlock(&S.lock);
}

void cli_status_end(void)
{
	if (!S.running)
		return;
	pthread_mutex_lock(&S.lock);
	S.stop = true;
	pthread_cond_signal(&S.wake);
	pthread_mutex_unlock(&S.lock);
	pthread_join(S.ticker, NULL);
	S.running = false;
	if (S.shown) {
		fputs("\r\033[K", stderr);
		fflush(stderr);
	}
}
