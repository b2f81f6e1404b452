#ifndef CAPSULE_PROBE_H
#define CAPSULE_PROBE_H
/* Print what this host supports as JSON on stdout; returns the exit code. */
int shim_probe(void);
#endif
