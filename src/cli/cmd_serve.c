/* capsule serve / capsule token: the HTTP server links libmicrohttpd and libcrypto, which the
 * static CLI cannot, so both verbs run capsule-server with the same command line. */
#include "cli.h"

int cmd_serve(int argc, char **argv)
{
	return cli_exec_verb("capsule-server", argc, argv);
}

int cmd_token(int argc, char **argv)
{
	return cli_exec_verb("capsule-server", argc, argv);
}
