/* capsule CLI: a thin client of libcapsule. Verbs live in one file per group and are
 * dispatched from the table in main.c. */
#ifndef CAPSULE_CLI_H
#define CAPSULE_CLI_H

#include <stdbool.h>
#include <stdio.h>

#include "capsule.h"

/* Exit codes, as docker uses them: 125 when capsule itself fails, 126 when the command
 * cannot be executed, 127 when it is not found; otherwise the command's own status. */
#define EXIT_CAPSULE 125
#define EXIT_CANNOT_EXEC 126
#define EXIT_NOT_FOUND 127
#define CP_MAX_ENV_CLI 1024

struct cli_command {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *summary;
};

/* Print "capsule: MESSAGE" and return EXIT_CAPSULE. */
int cli_fail(const capsule_error *err);
int cli_failf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Unknown flag, missing argument: one line naming it, then EXIT_CAPSULE. */
int cli_usage(const char *verb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The argument getopt_long took its last option from, for a message naming it: glibc leaves
 * optind at ARGC after a missing value at the end, musl one past it. */
const char *cli_getopt_flag(int argc, char **argv);
/* The arguments after "capsule VERB SUB": at most two positionals into POS, and --json (for
 * SUB "ls" only); 0, or cli_usage's exit code for a flag or an argument too many. */
int cli_sub_args(const char *verb, int argc, char **argv, const char **pos, int *npos, bool *json);
/* A status line while something takes a while (status.c): shown on a terminal only after a
 * moment, with STAGE as the library reports it, and erased by cli_status_end, which must come
 * before the command prints anything of its own. */
void cli_status_begin(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void cli_status_stage(const char *stage);
void cli_status_end(void);
/* Open sandbox NAME, which must be running: 0, or the message printed and EXIT_CAPSULE. */
int cli_open_running(const char *name, capsule_sandbox **sb);

int cmd_run(int argc, char **argv);
int cmd_create(int argc, char **argv);
int cmd_start(int argc, char **argv);
int cmd_exec(int argc, char **argv);
int cmd_stop(int argc, char **argv);
int cmd_rm(int argc, char **argv);
int cmd_kill(int argc, char **argv);
int cmd_pause(int argc, char **argv);
int cmd_resume(int argc, char **argv);
int cmd_update(int argc, char **argv);
int cmd_diff(int argc, char **argv);
int cmd_watch(int argc, char **argv);
/* exec --diff: the changes in AFTER (capsule_sandbox_diff_json) that are not in BEFORE, and
 * those of BEFORE gone from it, printed to stderr. 0, or EXIT_CAPSULE after saying why. */
int cli_print_diff_since(const char *before, const char *after);
int cmd_ps(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_save(int argc, char **argv);
int cmd_checkpoint(int argc, char **argv);
int cmd_revert(int argc, char **argv);
int cmd_fork(int argc, char **argv);
int cmd_saves(int argc, char **argv);
int cmd_doctor(int argc, char **argv);
int cmd_fs(int argc, char **argv);
int cmd_cp(int argc, char **argv);
int cmd_volume(int argc, char **argv);
int cmd_mount(int argc, char **argv);
int cmd_mounts(int argc, char **argv);
int cmd_unmount(int argc, char **argv);
int cmd_image(int argc, char **argv);
int cmd_system(int argc, char **argv);
/* Run the same command line with capsule-images (the CLI linked with the image store):
 * returns only on failure. */
/* BYTES as docker prints sizes, in powers of 1000: "512 B", "1.5 MB". */
void cli_human_size(uint64_t bytes, char *out, size_t size);
int cli_images_helper(char **argv);
/* Exec HELPER with "capsule" followed by the verb's ARGC ARGV (ARGV[0] is the verb); returns
 * only on failure, having said why. */
int cli_exec_verb(const char *helper, int argc, char **argv);
/* The same with HELPER, one of the programs installed beside capsule-images. */
int cli_exec_helper(const char *helper, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_token(int argc, char **argv);
int cmd_port(int argc, char **argv);
int cmd_pool(int argc, char **argv);
int cmd_net(int argc, char **argv);
int cmd_screenshot(int argc, char **argv);
int cmd_input(int argc, char **argv);

#endif
