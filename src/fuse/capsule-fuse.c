/* capsule-fuse: serves one host folder to one sandbox through FUSE, passing every read and
 * write through a transform plugin (include/capsule_transform.h, docs/transforms.md).
 *
 *   capsule-fuse --plugin PATH --target GUEST --uid-base UID --gid-base GID --id-count N [--readonly]
 *
 * Started by capsule-shim, which made the FUSE mount, with:
 *   fd 3  the mount's /dev/fuse connection
 *   fd 4  the host folder to serve, O_PATH
 *   fd 5  a socket: the plugin's config string arrives on it (until EOF; kept off the command
 *         line, where every host user could read a key), and the helper answers "OK\n" once it
 *         serves, or "ERR <errno> <message>\n"
 *
 * Every host object is reached from the folder's fd: a name from the kernel is one component,
 * opened with openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS) from its parent's fd, never as a
 * path string from "/", and never following a symlink: the sandbox's kernel resolves symlinks
 * in the sandbox's own tree.
 *
 * Ids: the sandbox's ids 0..N-1 are host ids UID-BASE.., which is what the kernel shows this
 * server as the caller's uid. The server shows a file of host uid u (< N) as UID-BASE + u and
 * creates files for a caller UID-BASE + x as host uid x: the same mapping that an idmapped
 * bind mount gives (libfuse 3.14 cannot opt in to FUSE idmapped mounts; docs/architecture.md).
 *
 * This file starts the server; fuse_server.h lists the others. */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <linux/capability.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fuse_server.h"

struct server_state G;

static _Noreturn void fail(int errnum, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static _Noreturn void fail(int errnum, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	for (char *p = msg; *p; p++)
		if (*p == '\n')
			*p = ' ';
	dprintf(CTL_FD, "ERR %d %s\n", errnum, msg);
	_exit(1);
}

static char *read_config(void)
{
	char *cfg = malloc(CONFIG_MAX + 1);
	size_t len = 0;
	if (!cfg)
		fail(ENOMEM, "reading the transform's config");
	for (;;) {
		ssize_t n = read(CTL_FD, cfg + len, CONFIG_MAX - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			fail(errno, "reading the transform's config: %s", strerror(errno));
		if (n == 0)
			break;
		len += (size_t)n;
		if (len == CONFIG_MAX)
			fail(E2BIG, "the transform's config is longer than %u bytes", CONFIG_MAX);
	}
	cfg[len] = '\0';
	return cfg;
}

static void load_plugin(const char *path, const char *config)
{
	void *so = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!so)
		fail(ENOEXEC, "transform plugin '%s': %s", path, dlerror());
	const struct capsule_transform_v1 *tf = dlsym(so, CAPSULE_TRANSFORM_SYMBOL);
	if (!tf)
		fail(ENOEXEC, "transform plugin '%s' does not export '%s' (see docs/transforms.md)", path,
		     CAPSULE_TRANSFORM_SYMBOL);
	if (tf->abi != CAPSULE_TRANSFORM_ABI_V1 || !tf->open || !tf->encode || !tf->decode)
		fail(ENOEXEC, "transform plugin '%s': '%s' has abi %u or misses a callback (this capsule-fuse speaks abi %u)",
		     path, CAPSULE_TRANSFORM_SYMBOL, tf->abi, CAPSULE_TRANSFORM_ABI_V1);
	errno = 0;
	void *ctx = tf->open(config);
	if (!ctx) {
		int e = errno ? errno : EINVAL;
		fail(e, "transform plugin '%s' refused its config: %s", path, strerror(e));
	}
	G.tf = tf;
	G.tf_ctx = ctx;
}

/* The server needs to make and chown files beneath one folder, nothing more. */
static void drop_privileges(void)
{
	static const int keep[] = { CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER, CAP_FSETID };
	uint64_t mask = 0;
	for (size_t i = 0; i < sizeof(keep) / sizeof(keep[0]); i++)
		mask |= 1ull << keep[i];
	for (int c = 0; c <= 63; c++)
		if (!(mask & (1ull << c)) && prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0 && errno != EINVAL)
			fail(errno, "dropping capability %d: %s", c, strerror(errno));
	if (geteuid() == 0) {
		struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3 };
		struct __user_cap_data_struct data[2] = { 0 };
		data[0].effective = data[0].permitted = (uint32_t)mask;
		data[1].effective = data[1].permitted = (uint32_t)(mask >> 32);
		if (syscall(SYS_capset, &hdr, data) < 0)
			fail(errno, "setting capabilities: %s", strerror(errno));
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		fail(errno, "no_new_privs: %s", strerror(errno));
	/* It holds the plugin's key: not for ptrace or core dumps. */
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}

static unsigned long parse_ulong(const char *s, const char *what)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || *end || !*s)
		fail(EINVAL, "invalid %s '%s'", what, s);
	return v;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "plugin", required_argument, NULL, 'p' },   { "target", required_argument, NULL, 't' },
		{ "uid-base", required_argument, NULL, 'u' }, { "gid-base", required_argument, NULL, 'g' },
		{ "id-count", required_argument, NULL, 'c' }, { "readonly", no_argument, NULL, 'r' },
		{ "host-uid-base", required_argument, NULL, 'U' }, { "host-gid-base", required_argument, NULL, 'G' },
		{ 0 },
	};
	const char *plugin = NULL, *target = "?";
	G.id_count = 1;
	bool host_uid_base = false, host_gid_base = false;
	/* The shim starts us as the user who made the sandbox. */
	G.owner_uid = getuid();
	G.owner_gid = getgid();
	int o;
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case 'p': plugin = optarg; break;
		case 't': target = optarg; break;
		case 'u': G.uid_base = (uid_t)parse_ulong(optarg, "uid base"); break;
		case 'g': G.gid_base = (gid_t)parse_ulong(optarg, "gid base"); break;
		case 'c': G.id_count = (uint32_t)parse_ulong(optarg, "id count"); break;
		case 'r': G.readonly = true; break;
		case 'U': G.host_uid_base = (uid_t)parse_ulong(optarg, "host uid base"); host_uid_base = true; break;
		case 'G': G.host_gid_base = (gid_t)parse_ulong(optarg, "host gid base"); host_gid_base = true; break;
		default: fail(EINVAL, "usage: capsule-fuse --plugin PATH --target GUEST --uid-base N --gid-base N --id-count N "
				      "[--host-uid-base N --host-gid-base N] [--readonly]");
		}
	}
	if (!host_uid_base)
		G.host_uid_base = G.uid_base;
	if (!host_gid_base)
		G.host_gid_base = G.gid_base;
	if (!plugin || fcntl(FUSE_FD, F_GETFD) < 0 || fcntl(ROOT_FD, F_GETFD) < 0)
		fail(EINVAL, "capsule-fuse is started by capsule-shim (fd 3: /dev/fuse, fd 4: the folder, fd 5: control)");
	/* Die with the shim; it checks on us too, this covers a SIGKILLed shim. */
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	fcntl(FUSE_FD, F_SETFD, FD_CLOEXEC);
	fcntl(ROOT_FD, F_SETFD, FD_CLOEXEC);
	fcntl(CTL_FD, F_SETFD, FD_CLOEXEC);
	signal(SIGPIPE, SIG_IGN);

	struct stat st;
	if (fstat(ROOT_FD, &st) < 0 || !S_ISDIR(st.st_mode))
		fail(ENOTDIR, "mount source of '%s' is not a folder", target);
	G.root = (struct node){ .fd = ROOT_FD, .dev = st.st_dev, .ino = st.st_ino, .nlookup = 1 };
	char self[64];
	snprintf(self, sizeof(self), "/proc/self/fd/%d", ROOT_FD);
	ssize_t l = readlink(self, G.root_path, sizeof(G.root_path) - 1);
	G.root_path_len = l > 0 ? (size_t)l : 0;
	G.root_path[G.root_path_len] = '\0';
	if (G.root_path_len == 1) /* the host's "/" (allowed with allow_sensitive) */
		G.root_path_len = 0;
	if (table_grow() < 0 || !io_buf(IO_CHUNK))
		fail(ENOMEM, "allocating");
	G.holes = folder_keeps_holes(ROOT_FD);

	char *config = read_config();
	load_plugin(plugin, config);
	memset(config, 0, strlen(config));
	free(config);
	drop_privileges();

	char *fargv[] = { "capsule-fuse", NULL };
	struct fuse_args args = FUSE_ARGS_INIT(1, fargv);
	struct fuse_session *se = fuse_session_new(&args, &server_ops, sizeof(server_ops), NULL);
	if (!se)
		fail(EIO, "fuse_session_new failed");
	char mnt[32];
	snprintf(mnt, sizeof(mnt), "/dev/fd/%d", FUSE_FD);
	if (fuse_session_mount(se, mnt) != 0)
		fail(EIO, "serving the FUSE connection of '%s'", target);
	dprintf(CTL_FD, "OK\n");
	close(CTL_FD);

	/* Ends when the connection does: the sandbox's mount went away with it, or the shim
	 * aborted it. */
	int r = fuse_session_loop(se);
	fuse_session_destroy(se);
	if (G.tf->close)
		G.tf->close(G.tf_ctx);
	/* Handles of files that were open when the connection ended live only in the kernel's
	 * memory; there is nothing left worth an exit-time walk (or a leak checker's). */
	_exit(r < 0 ? 1 : 0);
}

