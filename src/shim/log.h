/* shim.log: the shim's one place to say what happened, since it has no terminal. */
#ifndef CAPSULE_SHIM_LOG_H
#define CAPSULE_SHIM_LOG_H

#include <stdio.h>

#include "util.h"

/* Open run/<name>/shim.log for appending (without it, shim_log says nothing). */
void shim_log_open(int run_fd);
/* An ephemeral sandbox's folder goes at its end: the log is closed before that. */
void shim_log_close(void);
/* The log's stream, for children that write to it (a transform server, slirp4netns); or NULL. */
FILE *shim_log_file(void);
/* One line, with a UTC timestamp. */
void shim_log(const char *fmt, ...) _printf_(1, 2);

#endif
