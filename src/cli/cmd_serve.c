/* capsule serve / capsule token: the HTTP server links libmicrohttpd and libcrypto, which the
 * static CLI cannot, so both verbs run capsule-server with the same command line. */
#include <stdlib.h>

#include "cli.h"

/* "capsule VERB ARGS...": rebuilt rather than taken from argv - 1, since `capsule help VERB`
 * calls a verb with an argv of its own that has nothing before it. */
static int run_server(int argc, char **argv)
{
	char **full = calloc((size_t)argc + 2, sizeof(char *));
	if (!full)
		return cli_failf("out of memory");
	full[0] = "capsule";
	for (int i = 0; i < argc; i++)
		full[i + 1] = argv[i];
	int r = cli_exec_helper("capsule-server", full);
	free(full);
	return r;
}

int cmd_serve(int argc, char **argv)
{
	return run_server(argc, argv);
}

int cmd_token(int argc, char **argv)
{
	return run_server(argc, argv);
}
