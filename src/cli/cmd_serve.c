/* capsule serve / capsule token / capsule mcp: the server links libmicrohttpd and libcrypto,
 * which the static CLI cannot, so these verbs run capsule-server with the same command line
 * (the table in main.c sends mcp here too). */
#include "cli.h"

int cmd_serve(int argc, char **argv)
{
	return cli_exec_verb("capsule-server", argc, argv);
}

int cmd_token(int argc, char **argv)
{
	return cli_exec_verb("capsule-server", argc, argv);
}
