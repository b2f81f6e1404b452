/* Linux capabilities by name, for the checks and messages of everyone who sets a command's
 * sets (the agent, the OCI spec's parser, capsule-oci's features). */
#ifndef CAPSULE_CAPS_H
#define CAPSULE_CAPS_H

#include <stddef.h>
#include <stdint.h>

/* "CHOWN", "DAC_OVERRIDE", ...: capability N's name without "CAP_", for N below
 * cap_name_count; NULL past it. */
const char *cap_name(unsigned n);
extern const size_t cap_name_count;

/* The lowest capability in SET that ALLOWED lacks, or -1 when SET is within ALLOWED. */
static inline int cap_first_outside(uint64_t set, uint64_t allowed)
{
	uint64_t extra = set & ~allowed;
	return extra ? __builtin_ctzll(extra) : -1;
}

#endif
