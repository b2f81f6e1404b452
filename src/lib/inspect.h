/* The parts of `capsule inspect`'s JSON that the files owning a setting write (sandbox.c
 * writes the rest, capsule_sandbox_inspect_json). */
#ifndef CAPSULE_INSPECT_H
#define CAPSULE_INSPECT_H

#include <stdbool.h>

#include "capsule.h"
#include "sandbox_config.h"

struct json_writer;
/* The "limits" member's values, one per row of the config table that names one
 * (config_keys.c). */
void config_limits_inspect_json(const struct capsule_config *cfg, struct json_writer *j);
/* "display": whether the vm has one, and its VNC socket while it runs (display_client.c). */
void sandbox_display_inspect_json(capsule_sandbox *sb, bool running, struct json_writer *j);
/* The "network" member: mode, ports (the shim's live list when RUNNING), allowlist (net_client.c). */
void sandbox_net_inspect_json(capsule_sandbox *sb, const struct capsule_config *cfg, bool running,
			      struct json_writer *j);

#endif
