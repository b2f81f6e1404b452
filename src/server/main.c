/* capsule-server: `capsule serve`, `capsule token` and `capsule mcp`, handed over by the
 * static CLI (which cannot link libmicrohttpd or libcrypto statically) as image work is to capsule-images. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "mcp.h"
#include "parse.h"
#include "serve.h"
#include "util.h"

#define LISTEN_MAX 8
#define EXIT_CAPSULE 125

static const char serve_usage[] =
	"Usage: capsule serve --listen ADDRESS [--listen ADDRESS...] [OPTIONS]\n\n"
	"An HTTP API for sandboxes (docs/serve.md). Every request but GET /v1/health and\n"
	"GET /openapi.json needs 'Authorization: Bearer TOKEN' (capsule token create NAME).\n"
	"On SIGTERM or SIGINT it stops taking connections, lets requests in flight finish, and\n"
	"removes the sandboxes it made unless --keep.\n\n"
	"  --listen ADDRESS        HOST:PORT (127.0.0.1:8080, [::1]:8080) or unix:/PATH (mode 0600);\n"
	"                          repeatable, at most 8; none needed when systemd passes sockets\n"
	"                          (LISTEN_FDS, socket activation)\n"
	"  --tls-cert PATH         serve HTTPS on TCP listeners with this PEM certificate (chain)\n"
	"  --tls-key PATH          and this PEM private key (both or neither)\n"
	"  --mount-root DIR        clients may mount host folders below DIR, read-only (default: none)\n"
	"  --max-sandboxes N       per token (default 16; 0: no limit)\n"
	"  --max-memory SIZE       per token, the sum of its sandboxes' memory (default 16G; 0: none)\n"
	"  --default-memory SIZE   a sandbox created without 'memory' (default 512M)\n"
	"  --default-timeout SECS  a sandbox's life when 'timeout' is not given (default 3600)\n"
	"  --exec-output-max SIZE  the most of each stream an exec answers (default 1M)\n"
	"  --max-connections N     per listener (default 256)\n"
	"  --max-execs N           streaming commands per token (default 16; 0: no limit)\n"
	"  --max-watches N         watch streams open per token (default 16; 0: no limit)\n"
	"  --max-saves N           named saves per token (default 64; 0: no saves through the API)\n"
	"  --exec-grace SECS       kill a streaming command no client reads for this long (default 30)\n"
	"  --audit-log PATH        one JSON line per request, appended (mode 0600)\n"
	"  --shutdown-timeout SECS how long requests in flight may take at shutdown (default 30)\n"
	"  --pool NAME:SIZE[:IMAGE] a warm pool of SIZE ready sandboxes (of IMAGE, --default-memory),\n"
	"                          made at start and removed at shutdown; POST /v1/sandboxes with\n"
	"                          'pool' takes one (repeatable, at most 16)\n"
	"  --keep                  leave the sandboxes running at shutdown (made detached)\n"
	"  --allow-network-full    let clients ask for network 'full' (default: refused): such a\n"
	"                          sandbox reaches anything the host can, its loopback included,\n"
	"                          where other tokens' port forwards listen\n"
	"  --routes                print the routes this server answers and exit\n"
	"  --help                  this text\n";

static const char mcp_usage[] =
	"Usage: capsule mcp [OPTIONS]\n\n"
	"An MCP server (Model Context Protocol " MCP_PROTOCOL_VERSION ") over stdin and stdout, for an agent\n"
	"that starts it (docs/mcp.md). Its tools make sandboxes and run commands and code in them; the\n"
	"sandboxes are removed when it ends (stdin closed, SIGTERM, SIGINT, SIGHUP).\n\n"
	"  --max-sandboxes N       at once (default 16; 0: no limit)\n"
	"  --max-memory SIZE       the sum of their memory limits (default 16G; 0: none)\n"
	"  --default-memory SIZE   a sandbox created without 'memory' (default 512M)\n"
	"  --default-timeout SECS  a sandbox's life when 'timeout' is not given (default 3600)\n"
	"  --exec-output-max SIZE  the most of each stream a command answers, and of a file\n"
	"                          read_file reads (default 1M)\n"
	"  --allow-network-full    let create_sandbox ask for network 'full' (default: refused):\n"
	"                          such a sandbox reaches anything the host can, its loopback included\n"
	"  --help                  this text\n";

/* The verb in messages: serve or mcp. */
static const char *verb = "serve";

static bool path_within(const char *path, const char *dir)
{
	size_t n = strlen(dir);
	return !strncmp(path, dir, n) && (path[n] == '/' || path[n] == '\0');
}

/* A mount is checked by path here and opened by path in the shim: a sandbox that can write
 * below the root (its upper layer, a volume: all in $CAPSULE_HOME) could swap a checked
 * folder for a symlink in between. So the root and the home must not overlap, either way. */
static bool mount_root_overlaps_home(const char *root)
{
	_cleanup_free_ char *home = realpath(capsule_home(), NULL);
	const char *h = home ? home : capsule_home();
	return path_within(h, root) || path_within(root, h);
}

static int usage_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "capsule %s: ", verb);
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, " (see 'capsule %s --help')\n", verb);
	va_end(ap);
	return EXIT_CAPSULE;
}

/* ARGV[*I], an option with a value: "--name=value" or "--name value". 0, or usage_fail's. */
static int option_value(int argc, char **argv, int *i, const char **name, const char **value, char flag[32])
{
	const char *a = argv[*i];
	const char *eq = strchr(a, '=');
	if (!strncmp(a, "--", 2) && eq && (size_t)(eq - a) < 32) {
		memcpy(flag, a, (size_t)(eq - a));
		flag[eq - a] = '\0';
		*name = flag;
		*value = eq + 1;
		return 0;
	}
	if (strncmp(a, "--", 2))
		return usage_fail("unexpected argument '%s'", a);
	if (*i + 1 >= argc)
		return usage_fail("%s needs a value", a);
	*name = a;
	*value = argv[++*i];
	return 0;
}

/* The bounds on the sandboxes made, which serve and mcp share: 1 when A is one of them, 0
 * when it is not, EXIT_CAPSULE (from usage_fail) when its value is wrong. */
static int sandbox_option(const char *a, const char *v, struct serve_options *o)
{
	capsule_error err = { 0 };
	uint64_t u;
	if (!strcmp(a, "--max-sandboxes")) {
		if (parse_uint(v, "--max-sandboxes", 0, 100000, &u, &err) < 0)
			return usage_fail("%s", err.message);
		o->max_sandboxes = (unsigned)u;
	} else if (!strcmp(a, "--max-memory")) {
		if (parse_size(v, &o->max_memory, &err) < 0)
			return usage_fail("--max-memory: %s", err.message);
	} else if (!strcmp(a, "--default-memory")) {
		if (parse_size(v, &o->default_memory, &err) < 0 || o->default_memory == 0)
			return usage_fail("--default-memory: %s", err.code ? err.message : "must be more than 0");
	} else if (!strcmp(a, "--default-timeout")) {
		if (parse_uint(v, "--default-timeout", 1, SERVE_TIMEOUT_MAX_S, &u, &err) < 0)
			return usage_fail("%s", err.message);
		o->default_timeout_s = (uint32_t)u;
	} else if (!strcmp(a, "--exec-output-max")) {
		if (parse_size(v, &u, &err) < 0 || u == 0 || u > (64ull << 20))
			return usage_fail("--exec-output-max: %s", err.code ? err.message : "must be 1 to 64M");
		o->exec_output_max = (size_t)u;
	} else {
		return 0;
	}
	return 1;
}

static const struct serve_options default_options = {
	.max_sandboxes = 16,
	.max_memory = 16ull << 30,
	.default_memory = 512ull << 20,
	.default_timeout_s = 3600,
	.exec_output_max = 1u << 20,
	.max_execs = 16,
	.max_watches = 16,
	.max_saves = 64,
	.exec_grace_s = 30,
	.audit_fd = -1,
};

/* A failure of the server (not of its command line): "capsule: WHAT 'ARG'[: strerror(E)]". */
static int fail(const char *what, const char *arg, int e)
{
	fprintf(stderr, "capsule: %s '%s'", what, arg);
	if (e)
		fprintf(stderr, ": %s", strerror(e));
	fputc('\n', stderr);
	return EXIT_CAPSULE;
}

/* A listening socket for ADDRESS: "unix:/path", "HOST:PORT", "[V6]:PORT". */
static int open_listener(const char *address)
{
	if (!strncmp(address, "unix:", 5)) {
		const char *path = address + 5;
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		if (path[0] != '/' || strlen(path) >= sizeof(sa.sun_path))
			return usage_fail("--listen '%s': unix: needs an absolute path of at most 107 bytes", address), -1;
		strcpy(sa.sun_path, path);
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return fail("socket for", address, errno), -1;
		/* Only a socket may be replaced (a stale one from a killed server), never a file. */
		struct stat st;
		if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
			unlink(path);
		mode_t old = umask(0177);
		int r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
		umask(old);
		if (r < 0 || listen(fd, 128) < 0) {
			int e = errno;
			close(fd);
			return fail("listening on", address, e), -1;
		}
		return fd;
	}
	char host[256];
	const char *colon = strrchr(address, ':');
	if (!colon || colon == address || (size_t)(colon - address) >= sizeof(host))
		return usage_fail("--listen '%s' must be HOST:PORT or unix:/PATH", address), -1;
	memcpy(host, address, (size_t)(colon - address));
	host[colon - address] = '\0';
	uint64_t port;
	capsule_error err = { 0 };
	if (parse_uint(colon + 1, "port", 0, 65535, &port, &err) < 0)
		return usage_fail("--listen '%s': the port must be 0 to 65535", address), -1;
	struct sockaddr_storage ss = { 0 };
	socklen_t len;
	int family;
	if (host[0] == '[' && host[strlen(host) - 1] == ']') {
		host[strlen(host) - 1] = '\0';
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
		if (inet_pton(AF_INET6, host + 1, &s6->sin6_addr) != 1)
			return usage_fail("--listen '%s': not an IPv6 address", address), -1;
		s6->sin6_family = family = AF_INET6;
		s6->sin6_port = htons((uint16_t)port);
		len = sizeof(*s6);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
		if (!strcmp(host, "localhost"))
			strcpy(host, "127.0.0.1");
		if (inet_pton(AF_INET, host, &s4->sin_addr) != 1)
			return usage_fail("--listen '%s': not an IPv4 address (or [IPv6])", address), -1;
		s4->sin_family = family = AF_INET;
		s4->sin_port = htons((uint16_t)port);
		len = sizeof(*s4);
	}
	int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return fail("socket for", address, errno), -1;
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, 128) < 0) {
		int e = errno;
		close(fd);
		return fail("listening on", address, e), -1;
	}
	return fd;
}

/* Socket activation, as sd_listen_fds(3) does it: LISTEN_PID is this process and LISTEN_FDS
 * says how many listening sockets start at fd 3. They are checked (a listening stream socket
 * each), made close-on-exec, and the variables unset so that no child takes them for its own.
 * Returns how many were added to FDS, or -1 after saying why. */
#define SD_LISTEN_FDS_START 3
static int listen_fds_from_env(int *fds, size_t room)
{
	const char *pid = getenv("LISTEN_PID"), *count = getenv("LISTEN_FDS");
	if (!pid || !count)
		return 0;
	char *end;
	long p = strtol(pid, &end, 10);
	if (*end || p != (long)getpid())
		return 0; /* meant for another process (one that exec'd us without clearing them) */
	long n = strtol(count, &end, 10);
	if (*end || n < 0 || (size_t)n > room) {
		fprintf(stderr, "capsule serve: LISTEN_FDS='%s': expected 0 to %zu sockets\n", count, room);
		return -1;
	}
	for (long i = 0; i < n; i++) {
		int fd = SD_LISTEN_FDS_START + (int)i;
		int type = 0, listening = 0;
		socklen_t len = sizeof(type);
		if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_STREAM ||
		    (len = sizeof(listening), getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len)) < 0 || !listening) {
			fprintf(stderr, "capsule serve: fd %d from LISTEN_FDS is not a listening stream socket\n", fd);
			return -1;
		}
		fcntl(fd, F_SETFD, FD_CLOEXEC);
		fds[i] = fd;
	}
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	return (int)n;
}

/* A whole PEM file for libmicrohttpd (which wants it in memory, NUL-terminated, for the
 * daemon's life). */
static char *read_pem(const char *path, const char *flag)
{
	char *text = NULL;
	size_t len = 0;
	int r = read_file_at(AT_FDCWD, path, 1u << 20, &text, &len);
	if (r < 0) {
		fail(flag, path, -r);
		return NULL;
	}
	if (!strstr(text, "-----BEGIN ")) {
		fprintf(stderr, "capsule serve: %s '%s' is not a PEM file\n", flag, path);
		free(text);
		return NULL;
	}
	return text;
}

/* FMT is libmicrohttpd's own format string. */
static void mhd_log(void *cls, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	char msg[512];
	vsnprintf(msg, sizeof(msg), fmt, ap);
	msg[strcspn(msg, "\n")] = '\0';
	fprintf(stderr, "capsule serve: microhttpd: %s\n", msg);
}

/* What --listen 127.0.0.1:0 got, so that a caller (the tests) can learn the port. */
static void print_listening(const char *address, int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	char host[INET6_ADDRSTRLEN] = "";
	if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0 && ss.ss_family == AF_INET) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
		inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host));
		printf("listening on %s:%u\n", host, ntohs(s4->sin_port));
	} else if (ss.ss_family == AF_INET6) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
		inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
		printf("listening on [%s]:%u\n", host, ntohs(s6->sin6_port));
	} else {
		printf("listening on %s\n", address);
	}
	fflush(stdout);
}

static int cmd_serve(int argc, char **argv)
{
	struct serve_options o = default_options;
	const char *listen_addr[LISTEN_MAX];
	size_t n_listen = 0;
	const char *tls_cert = NULL, *tls_key = NULL;
	_cleanup_free_ char *mount_root = NULL;
	uint64_t max_connections = 256;
	uint64_t shutdown_timeout_s = 30;
	const char *audit_path = NULL;
	capsule_error err = { 0 };
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--help") || !strcmp(a, "-h"))
			return fputs(serve_usage, stdout), 0;
		if (!strcmp(a, "--routes")) {
			serve_api_print_routes(stdout);
			return 0;
		}
		if (!strcmp(a, "--keep")) {
			o.keep = true;
			continue;
		}
		if (!strcmp(a, "--allow-network-full")) {
			o.network_full = true;
			continue;
		}
		const char *v;
		char flag[32];
		if (option_value(argc, argv, &i, &a, &v, flag))
			return EXIT_CAPSULE;
		int known = sandbox_option(a, v, &o);
		if (known == EXIT_CAPSULE)
			return EXIT_CAPSULE;
		if (known)
			continue;
		if (!strcmp(a, "--listen")) {
			if (n_listen == LISTEN_MAX)
				return usage_fail("at most 8 --listen addresses");
			listen_addr[n_listen++] = v;
		} else if (!strcmp(a, "--max-connections")) {
			if (parse_uint(v, "--max-connections", 1, 4096, &max_connections, &err) < 0)
				return usage_fail("%s", err.message);
		} else if (!strcmp(a, "--max-saves")) {
			uint64_t u;
			if (parse_uint(v, "--max-saves", 0, 4096, &u, &err) < 0)
				return usage_fail("%s", err.message);
			o.max_saves = (unsigned)u;
		} else if (!strcmp(a, "--max-execs")) {
			uint64_t u;
			if (parse_uint(v, "--max-execs", 0, 4096, &u, &err) < 0)
				return usage_fail("%s", err.message);
			o.max_execs = (unsigned)u;
		} else if (!strcmp(a, "--max-watches")) {
			uint64_t u;
			if (parse_uint(v, "--max-watches", 0, 4096, &u, &err) < 0)
				return usage_fail("%s", err.message);
			o.max_watches = (unsigned)u;
		} else if (!strcmp(a, "--exec-grace")) {
			uint64_t u;
			if (parse_uint(v, "--exec-grace", 1, 3600, &u, &err) < 0)
				return usage_fail("%s", err.message);
			o.exec_grace_s = (uint32_t)u;
		} else if (!strcmp(a, "--shutdown-timeout")) {
			if (parse_uint(v, "--shutdown-timeout", 0, SERVE_TIMEOUT_MAX_S, &shutdown_timeout_s, &err) < 0)
				return usage_fail("%s", err.message);
		} else if (!strcmp(a, "--pool")) {
			if (o.n_pools == SERVE_POOLS_MAX)
				return usage_fail("at most %d --pool", SERVE_POOLS_MAX);
			if (serve_pool_parse(v, &o.pools[o.n_pools], &err) < 0)
				return usage_fail("%s", err.message);
			for (size_t j = 0; j < o.n_pools; j++)
				if (!strcmp(o.pools[j].name, o.pools[o.n_pools].name))
					return usage_fail("--pool '%s' given twice", o.pools[j].name);
			o.n_pools++;
		} else if (!strcmp(a, "--audit-log")) {
			audit_path = v;
		} else if (!strcmp(a, "--mount-root")) {
			free(mount_root);
			struct stat st;
			if (!(mount_root = realpath(v, NULL)) || stat(mount_root, &st) < 0 || !S_ISDIR(st.st_mode))
				return usage_fail("--mount-root '%s' must be an existing folder", v);
			if (!strcmp(mount_root, "/"))
				return usage_fail("--mount-root / would offer the whole host");
			o.mount_root = mount_root;
		} else if (!strcmp(a, "--tls-cert")) {
			tls_cert = v;
		} else if (!strcmp(a, "--tls-key")) {
			tls_key = v;
		} else {
			return usage_fail("unknown option '%s'", a);
		}
	}
	if (o.max_memory && o.default_memory > o.max_memory)
		return usage_fail("--default-memory is over --max-memory");
	if (mount_root && mount_root_overlaps_home(mount_root))
		return usage_fail("--mount-root '%s' overlaps $CAPSULE_HOME '%s' (sandboxes write there: pick a folder apart from it)",
				  mount_root, capsule_home());
	if (!tls_cert != !tls_key)
		return usage_fail("--tls-cert and --tls-key go together");
	int fds[LISTEN_MAX];
	int activated = listen_fds_from_env(fds, LISTEN_MAX - n_listen);
	if (activated < 0)
		return EXIT_CAPSULE;
	if (n_listen == 0 && activated == 0)
		return usage_fail("give at least one --listen ADDRESS (127.0.0.1:PORT or unix:/PATH)");
	_cleanup_free_ char *cert_pem = NULL, *key_pem = NULL;
	if (tls_cert && (!(cert_pem = read_pem(tls_cert, "--tls-cert")) || !(key_pem = read_pem(tls_key, "--tls-key"))))
		return EXIT_CAPSULE;
	/* The sockets systemd passed come first; each is named for the messages by its fd. */
	char activated_name[LISTEN_MAX][16];
	for (size_t i = n_listen; i-- > 0;)
		listen_addr[i + (size_t)activated] = listen_addr[i];
	for (int i = 0; i < activated; i++) {
		snprintf(activated_name[i], sizeof(activated_name[i]), "fd:%d", fds[i]);
		listen_addr[i] = activated_name[i];
	}
	n_listen += (size_t)activated;

	if (audit_path) {
		o.audit_fd = open(audit_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (o.audit_fd < 0)
			return fail("opening the audit log", audit_path, errno);
	}
	for (size_t i = (size_t)activated; i < n_listen; i++)
		if ((fds[i] = open_listener(listen_addr[i])) < 0)
			return EXIT_CAPSULE;

	/* Every thread (microhttpd's, the reaper) inherits this mask: the signals come to the
	 * main thread's sigwait, never to a handler in the middle of a request. */
	sigset_t stop;
	sigemptyset(&stop);
	sigaddset(&stop, SIGTERM);
	sigaddset(&stop, SIGINT);
	pthread_sigmask(SIG_BLOCK, &stop, NULL);
	signal(SIGPIPE, SIG_IGN);

	if (serve_api_init(&o, &err) < 0)
		return fprintf(stderr, "capsule: %s\n", err.message), EXIT_CAPSULE;
	/* Before any listener: a create naming a pool finds it made. */
	if (serve_pools_start(&err) < 0) {
		serve_api_shutdown();
		serve_api_free();
		return fprintf(stderr, "capsule: %s\n", err.message), EXIT_CAPSULE;
	}
	struct MHD_Daemon *d[LISTEN_MAX];
	for (size_t i = 0; i < n_listen; i++) {
		/* TLS on TCP; a unix socket's mode already keeps it to its owner, and its clients
		 * (curl --unix-socket) need no certificate. */
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		bool tls = cert_pem && !(getsockname(fds[i], (struct sockaddr *)&ss, &sl) == 0 && ss.ss_family == AF_UNIX);
		struct MHD_OptionItem tls_opts[] = {
			{ tls ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, 0, cert_pem },
			{ MHD_OPTION_HTTPS_MEM_KEY, 0, key_pem },
			{ MHD_OPTION_END, 0, NULL },
		};
		d[i] = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC |
						MHD_USE_ERROR_LOG | (tls ? MHD_USE_TLS : 0),
					0, NULL, NULL, (MHD_AccessHandlerCallback)serve_api_handler(), NULL,
					MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
					MHD_OPTION_LISTEN_SOCKET, fds[i],
					MHD_OPTION_CONNECTION_LIMIT, (unsigned)max_connections,
					MHD_OPTION_CONNECTION_TIMEOUT, 60u,
					MHD_OPTION_NOTIFY_COMPLETED, (MHD_RequestCompletedCallback)serve_api_completed(), NULL,
					MHD_OPTION_ARRAY, tls_opts,
					MHD_OPTION_END);
		if (!d[i]) {
			for (size_t j = 0; j < i; j++)
				MHD_stop_daemon(d[j]);
			serve_api_shutdown();
			serve_pools_stop();
			serve_api_free();
			if (cert_pem)
				fprintf(stderr, "capsule serve: is '%s' a certificate that goes with the key '%s'?\n", tls_cert,
					tls_key);
			return fail("starting the HTTP server on", listen_addr[i], 0);
		}
		print_listening(listen_addr[i], fds[i]);
	}

	int sig = 0;
	sigwait(&stop, &sig);
	fprintf(stderr, "capsule serve: %s: finishing requests in flight\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
	/* No new connections; requests in flight (an exec, an upload) finish, for at most
	 * --shutdown-timeout, and a second signal cuts that short. Then the sandboxes go, which
	 * ends whatever still runs in them, and only then the connections. */
	for (size_t i = 0; i < n_listen; i++)
		MHD_quiesce_daemon(d[i]);
	/* A watch is no work to finish: its streams end now rather than hold the wait below. */
	serve_watches_shutdown();
	struct timespec poll_ts = { 0, 50 * 1000000L };
	uint64_t deadline = now_ms() + (uint64_t)shutdown_timeout_s * 1000;
	while (serve_api_in_flight() > 0 && now_ms() < deadline) {
		sigset_t pending;
		sigpending(&pending);
		if (sigismember(&pending, SIGTERM) || sigismember(&pending, SIGINT))
			break;
		nanosleep(&poll_ts, NULL);
	}
	serve_api_shutdown();
	serve_pools_stop();
	for (size_t i = 0; i < n_listen; i++) {
		MHD_stop_daemon(d[i]);
		close(fds[i]);
		if (!strncmp(listen_addr[i], "unix:", 5))
			unlink(listen_addr[i] + 5);
	}
	serve_api_free();
	mcp_http_free();
	if (key_pem)
		explicit_bzero(key_pem, strlen(key_pem));
	fprintf(stderr, "capsule serve: stopped%s\n", o.keep ? " (sandboxes kept)" : "");
	if (o.audit_fd >= 0)
		close(o.audit_fd);
	return 0;
}

/* `capsule mcp`: the MCP server on stdin and stdout, with the sandbox table of serve. */
static int cmd_mcp(int argc, char **argv)
{
	verb = "mcp";
	struct serve_options o = default_options;
	o.single_owner = true;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--help") || !strcmp(a, "-h"))
			return fputs(mcp_usage, stdout), 0;
		if (!strcmp(a, "--allow-network-full")) {
			o.network_full = true;
			continue;
		}
		const char *v;
		char flag[32];
		if (option_value(argc, argv, &i, &a, &v, flag))
			return EXIT_CAPSULE;
		int known = sandbox_option(a, v, &o);
		if (known == 0)
			return usage_fail("unknown option '%s'", a);
		if (known != 1)
			return EXIT_CAPSULE;
	}
	if (o.max_memory && o.default_memory > o.max_memory)
		return usage_fail("--default-memory is over --max-memory");
	return mcp_stdio_serve(&o);
}

int main(int argc, char **argv)
{
	/* Called as the CLI was: capsule serve ... / capsule token ... */
	if (argc >= 2 && !strcmp(argv[1], "serve"))
		return cmd_serve(argc - 1, argv + 1);
	if (argc >= 2 && !strcmp(argv[1], "token"))
		return serve_token_cli(argc - 1, argv + 1);
	if (argc >= 2 && !strcmp(argv[1], "mcp"))
		return cmd_mcp(argc - 1, argv + 1);
	fprintf(stderr, "capsule-server: run it as 'capsule serve', 'capsule token' or 'capsule mcp'\n");
	return EXIT_CAPSULE;
}
