/* The flags of run, create and exec (run_opts.c): the sandbox's settings, from the library's
 * table of them, and how the one command runs. */
#ifndef CAPSULE_CLI_RUN_OPTS_H
#define CAPSULE_CLI_RUN_OPTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "capsule.h"
#include "cli.h"

/* What run and exec share: how to run the one command. */
struct exec_cli {
	const char *env[CP_MAX_ENV_CLI + 1];
	size_t nenv;
	char *env_owned[CP_MAX_ENV_CLI];
	const char *workdir;
	const char *user;
	bool interactive, tty, detach;
	bool diff; /* exec --diff: what the command changed, on stderr after it */
	uint32_t timeout_ms;
	int preserve_fds; /* --preserve-fds N: our fds 3..3+N-1 are the command's 3..3+N-1 */
};

/* Sandbox settings for run and create. */
struct sandbox_cli {
	capsule_config *cfg;
	const char *image; /* as given with --image, or NULL */
	const char *pool;  /* as given with --pool, or NULL */
	bool allow_sensitive;
	char *volumes[64]; /* -v specs, applied after all flags: --allow-sensitive may come later */
	size_t nvolumes;
	char *transforms[32]; /* --transform specs, applied after the -v they name */
	size_t ntransforms;
};

/* Read VERB's flags from ARGV up to the first word that is not one (optind then points at
 * it). SBC is NULL for exec, EC for create. 0, or the exit code after printing why. */
int run_opts_parse(const char *verb, int argc, char **argv, struct sandbox_cli *sbc, struct exec_cli *ec);
void exec_cli_free(struct exec_cli *ec);

#endif
