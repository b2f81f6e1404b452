/* API tokens for capsule serve. A token is 256 random bits; only its SHA-256 is stored, so
 * the file leaks no usable secret, and a plain hash is enough (no salt, no slow KDF) because
 * the input is random, not a password. One line a token: "NAME CREATED_UNIX SHA256HEX", then
 * any of " admin", " max-sandboxes=N" and " max-memory=BYTES" (a store without them, from
 * before limits, reads the same). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/sha.h>

#include "json.h"
#include "parse.h"
#include "serve.h"
#include "util.h"

#define TOKEN_PREFIX "capsule_"
#define TOKENS_FILE_MAX (SERVE_TOKENS_MAX * 256)

static char tokens_path[PATH_MAX];

const char *serve_tokens_path(void)
{
	if (!tokens_path[0])
		snprintf(tokens_path, sizeof(tokens_path), "%s/serve/tokens", capsule_home());
	return tokens_path;
}

void serve_token_hash(const char *token, size_t len, uint8_t out[32])
{
	SHA256((const unsigned char *)token, len, out);
}

/* $CAPSULE_HOME/serve, 0700: the token file's folder is no one else's business either. */
static int open_store_dir(bool create, capsule_error *err)
{
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s/serve", capsule_home());
	if (create) {
		if (mkdir(capsule_home(), 0700) < 0 && errno != EEXIST)
			return cap_err(err, errno, "creating '%s'", capsule_home());
		if (mkdir(dir, 0700) < 0 && errno != EEXIST)
			return cap_err(err, errno, "creating '%s'", dir);
	}
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return cap_err(err, errno, "opening '%s'", dir);
	struct stat st;
	if (fstat(fd, &st) < 0 || st.st_uid != geteuid() || (st.st_mode & 077)) {
		close(fd);
		return cap_err_plain(err, EPERM, "'%s' must be owned by uid %u and private (mode 0700)", dir,
				     (unsigned)geteuid());
	}
	return fd;
}

static int hex_decode(const char *hex, uint8_t out[32])
{
	if (strlen(hex) != 64)
		return -EINVAL;
	for (size_t i = 0; i < 32; i++) {
		unsigned v;
		if (sscanf(hex + 2 * i, "%2x", &v) != 1)
			return -EINVAL;
		out[i] = (uint8_t)v;
	}
	return 0;
}

static int parse_store(const char *text, size_t len, struct serve_token **out, size_t *count, capsule_error *err)
{
	struct serve_token *v = NULL;
	size_t n = 0;
	const char *p = text, *end = text + len;
	unsigned line_no = 0;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t ll = nl ? (size_t)(nl - p) : (size_t)(end - p);
		line_no++;
		char line[256];
		if (ll >= sizeof(line)) {
			free(v);
			return cap_err_plain(err, EBADMSG, "'%s' line %u is too long", serve_tokens_path(), line_no);
		}
		memcpy(line, p, ll);
		line[ll] = '\0';
		p += ll + (nl ? 1 : 0);
		if (!line[0])
			continue;
		char name[SERVE_TOKEN_NAME_MAX + 2], hex[80];
		long long created;
		int used = 0;
		struct serve_token t = { 0 };
		bool ok = n < SERVE_TOKENS_MAX && sscanf(line, "%64s %lld %79s%n", name, &created, hex, &used) == 3 &&
			  strlen(name) <= SERVE_TOKEN_NAME_MAX && hex_decode(hex, t.hash) == 0;
		/* What follows the hash: each word at most once. */
		for (char *save = NULL, *word = ok ? strtok_r(line + used, " ", &save) : NULL; word && ok;
		     word = strtok_r(NULL, " ", &save)) {
			uint64_t u;
			if (!strcmp(word, "admin") && !t.admin)
				t.admin = true;
			else if (!strncmp(word, "max-sandboxes=", 14) && !t.has_max_sandboxes &&
				 parse_uint(word + 14, "max-sandboxes", 0, 100000, &u, NULL) == 0)
				t.has_max_sandboxes = true, t.max_sandboxes = (unsigned)u;
			else if (!strncmp(word, "max-memory=", 11) && !t.has_max_memory &&
				 parse_uint(word + 11, "max-memory", 0, UINT64_MAX, &u, NULL) == 0)
				t.has_max_memory = true, t.max_memory = u;
			else
				ok = false;
		}
		if (!ok) {
			free(v);
			return cap_err_plain(err, EBADMSG,
					     "'%s' line %u is not 'NAME CREATED SHA256 [admin] [max-sandboxes=N] [max-memory=BYTES]'",
					     serve_tokens_path(), line_no);
		}
		strcpy(t.name, name);
		t.created_unix = created;
		struct serve_token *nv = realloc(v, (n + 1) * sizeof(*v));
		if (!nv) {
			free(v);
			return cap_err(err, ENOMEM, "reading '%s'", serve_tokens_path());
		}
		v = nv;
		v[n++] = t;
	}
	*out = v;
	*count = n;
	return 0;
}

static int load_at(int dirfd, struct serve_token **out, size_t *count, capsule_error *err)
{
	*out = NULL;
	*count = 0;
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	int r = read_file_at(dirfd, "tokens", TOKENS_FILE_MAX, &text, &len);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return cap_err(err, -r, "reading '%s'", serve_tokens_path());
	return parse_store(text, len, out, count, err);
}

int serve_tokens_load(struct serve_token **out, size_t *count, capsule_error *err)
{
	*out = NULL;
	*count = 0;
	_cleanup_close_ int dir = open_store_dir(false, err);
	if (dir == -ENOENT) {
		capsule_error_clear(err);
		return 0;
	}
	if (dir < 0)
		return dir;
	return load_at(dir, out, count, err);
}

static int store_at(int dirfd, const struct serve_token *v, size_t n, capsule_error *err)
{
	struct json_buf {
		char *p;
		size_t len;
	} b = { 0 };
	FILE *f = open_memstream(&b.p, &b.len);
	if (!f)
		return cap_err(err, errno, "writing '%s'", serve_tokens_path());
	for (size_t i = 0; i < n; i++) {
		fprintf(f, "%s %lld ", v[i].name, (long long)v[i].created_unix);
		for (size_t j = 0; j < 32; j++)
			fprintf(f, "%02x", v[i].hash[j]);
		if (v[i].admin)
			fputs(" admin", f);
		if (v[i].has_max_sandboxes)
			fprintf(f, " max-sandboxes=%u", v[i].max_sandboxes);
		if (v[i].has_max_memory)
			fprintf(f, " max-memory=%llu", (unsigned long long)v[i].max_memory);
		fputc('\n', f);
	}
	if (fclose(f) != 0) {
		free(b.p);
		return cap_err(err, ENOMEM, "writing '%s'", serve_tokens_path());
	}
	int r = write_file_atomic_at(dirfd, "tokens", b.p, b.len, 0600, true);
	free(b.p);
	if (r < 0)
		return cap_err(err, -r, "writing '%s'", serve_tokens_path());
	return 0;
}

/* Read-modify-write under an exclusive lock, so two `capsule token create` never lose one. */
static int lock_store(int dirfd, capsule_error *err)
{
	int fd = openat(dirfd, "tokens.lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return cap_err(err, errno, "opening the lock of '%s'", serve_tokens_path());
	if (flock(fd, LOCK_EX) < 0) {
		int e = errno;
		close(fd);
		return cap_err(err, e, "locking '%s'", serve_tokens_path());
	}
	return fd;
}

int serve_token_create(const char *name, const struct serve_token *proto, char **token_out, capsule_error *err)
{
	int r = parse_name(name, "token name", err);
	if (r < 0)
		return r;
	_cleanup_close_ int dir = open_store_dir(true, err);
	if (dir < 0)
		return dir;
	_cleanup_close_ int lock = lock_store(dir, err);
	if (lock < 0)
		return lock;
	_cleanup_free_ struct serve_token *v = NULL;
	size_t n;
	if ((r = load_at(dir, &v, &n, err)) < 0)
		return r;
	for (size_t i = 0; i < n; i++)
		if (!strcmp(v[i].name, name))
			return cap_err_plain(err, EEXIST, "a token named '%s' exists already", name);
	if (n >= SERVE_TOKENS_MAX)
		return cap_err_plain(err, ENOSPC, "there are %d tokens already (the most): remove one first",
				     SERVE_TOKENS_MAX);
	uint8_t secret[32];
	if (getrandom(secret, sizeof(secret), 0) != (ssize_t)sizeof(secret))
		return cap_err(err, errno ? errno : EIO, "getrandom");
	char *token = malloc(sizeof(TOKEN_PREFIX) + 64);
	if (!token)
		return cap_err(err, ENOMEM, "creating a token");
	char *p = stpcpy(token, TOKEN_PREFIX);
	for (size_t i = 0; i < sizeof(secret); i++)
		p += sprintf(p, "%02x", secret[i]);
	explicit_bzero(secret, sizeof(secret));
	struct serve_token *nv = realloc(v, (n + 1) * sizeof(*v));
	if (!nv) {
		free(token);
		return cap_err(err, ENOMEM, "creating a token");
	}
	v = nv;
	v[n] = *proto;
	snprintf(v[n].name, sizeof(v[n].name), "%s", name);
	v[n].created_unix = (int64_t)time(NULL);
	serve_token_hash(token, strlen(token), v[n].hash);
	if ((r = store_at(dir, v, n + 1, err)) < 0) {
		explicit_bzero(token, strlen(token));
		free(token);
		return r;
	}
	*token_out = token;
	return 0;
}

int serve_token_remove(const char *name, capsule_error *err)
{
	int r = parse_name(name, "token name", err);
	if (r < 0)
		return r;
	_cleanup_close_ int dir = open_store_dir(false, err);
	if (dir == -ENOENT)
		return cap_err_plain(err, ENOENT, "no token named '%s'", name);
	if (dir < 0)
		return dir;
	_cleanup_close_ int lock = lock_store(dir, err);
	if (lock < 0)
		return lock;
	_cleanup_free_ struct serve_token *v = NULL;
	size_t n;
	if ((r = load_at(dir, &v, &n, err)) < 0)
		return r;
	for (size_t i = 0; i < n; i++)
		if (!strcmp(v[i].name, name)) {
			memmove(&v[i], &v[i + 1], (n - i - 1) * sizeof(*v));
			return store_at(dir, v, n - 1, err);
		}
	return cap_err_plain(err, ENOENT, "no token named '%s'", name);
}

/* ---- capsule token ---------------------------------------------------------------------- */

static const char token_usage[] =
	"Usage: capsule token create NAME [--admin] [--max-sandboxes N] [--max-memory SIZE]\n"
	"       capsule token ls [--json] | rm NAME\n\n"
	"API tokens for 'capsule serve' (docs/serve.md). create prints a new token once: only its\n"
	"SHA-256 is kept, in $CAPSULE_HOME/serve/tokens (mode 0600). ls never shows a token. A\n"
	"running server sees a removed token refused at its next request.\n\n"
	"  --admin              an admin token: GET /metrics shows it every token's sandboxes\n"
	"  --max-sandboxes N    this token's sandboxes at once, instead of the server's\n"
	"                       --max-sandboxes (0: no limit)\n"
	"  --max-memory SIZE    the sum of this token's sandboxes' memory, instead of the\n"
	"                       server's --max-memory (0: no limit)\n"
	"  --help               this text\n";

/* A size as --max-memory takes it back: 1G, 512M, 64K, or bytes; 0 is no limit. */
static void format_size(uint64_t v, char *buf, size_t len)
{
	static const char units[] = "GMK";
	for (int i = 0; i < 3; i++) {
		uint64_t unit = 1ull << (10 * (3 - i));
		if (v && v % unit == 0) {
			snprintf(buf, len, "%llu%c", (unsigned long long)(v / unit), units[i]);
			return;
		}
	}
	snprintf(buf, len, v ? "%llu" : "none", (unsigned long long)v);
}

static int token_fail(const capsule_error *err)
{
	fprintf(stderr, "capsule: %s\n", err->message[0] ? err->message : "unknown error");
	return 125;
}

static int token_usage_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int token_usage_fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "capsule token: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, " (see 'capsule token --help')\n");
	va_end(ap);
	return 125;
}

int serve_token_cli(int argc, char **argv)
{
	capsule_error err = { 0 };
	if (argc < 2)
		return token_usage_fail("no command given (create, ls, rm)");
	const char *sub = argv[1];
	if (!strcmp(sub, "--help") || !strcmp(sub, "-h"))
		return fputs(token_usage, stdout), 0;
	if (!strcmp(sub, "create") || !strcmp(sub, "rm")) {
		if (argc == 3 && !strcmp(argv[2], "--help"))
			return fputs(token_usage, stdout), 0;
		const char *name = NULL;
		struct serve_token proto = { 0 };
		for (int i = 2; i < argc; i++) {
			const char *a = argv[i], *val = NULL;
			char flag[32];
			const char *eq = strchr(a, '=');
			if (!strncmp(a, "--max-", 6) && eq && (size_t)(eq - a) < sizeof(flag)) {
				memcpy(flag, a, (size_t)(eq - a));
				flag[eq - a] = '\0';
				a = flag, val = eq + 1;
			} else if (!strcmp(a, "--max-sandboxes") || !strcmp(a, "--max-memory")) {
				if (i + 1 >= argc)
					return token_usage_fail("%s needs a value", a);
				val = argv[++i];
			}
			bool create = !strcmp(sub, "create");
			uint64_t u;
			if (create && !strcmp(a, "--admin")) {
				proto.admin = true;
			} else if (create && val && !strcmp(a, "--max-sandboxes")) {
				if (parse_uint(val, "--max-sandboxes", 0, 100000, &u, &err) < 0)
					return token_usage_fail("%s", err.message);
				proto.has_max_sandboxes = true, proto.max_sandboxes = (unsigned)u;
			} else if (create && val && !strcmp(a, "--max-memory")) {
				if (parse_size(val, &proto.max_memory, &err) < 0)
					return token_usage_fail("--max-memory: %s", err.message);
				proto.has_max_memory = true;
			} else if (a[0] == '-') {
				return token_usage_fail("unknown option '%s'", a);
			} else if (name) {
				return token_usage_fail("%s needs exactly one NAME", sub);
			} else {
				name = a;
			}
		}
		if (!name)
			return token_usage_fail("%s needs exactly one NAME", sub);
		if (!strcmp(sub, "rm"))
			return serve_token_remove(name, &err) < 0 ? token_fail(&err) : 0;
		char *token;
		if (serve_token_create(name, &proto, &token, &err) < 0)
			return token_fail(&err);
		printf("%s\n", token);
		explicit_bzero(token, strlen(token));
		free(token);
		return 0;
	}
	if (!strcmp(sub, "ls")) {
		bool json = false;
		for (int i = 2; i < argc; i++) {
			if (!strcmp(argv[i], "--json"))
				json = true;
			else if (!strcmp(argv[i], "--help"))
				return fputs(token_usage, stdout), 0;
			else
				return token_usage_fail("unexpected argument '%s'", argv[i]);
		}
		_cleanup_free_ struct serve_token *v = NULL;
		size_t n;
		if (serve_tokens_load(&v, &n, &err) < 0)
			return token_fail(&err);
		/* --json is indented as every other --json output of the CLI (test_cli_json.py). */
		struct json_writer w;
		json_init(&w, true);
		json_array_begin(&w);
		if (!json)
			printf("%-32s %-20s %-6s %-13s %s\n", "NAME", "CREATED", "ROLE", "MAX-SANDBOXES", "MAX-MEMORY");
		for (size_t i = 0; i < n; i++) {
			char when[32];
			time_t t = (time_t)v[i].created_unix;
			struct tm tm;
			strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
			/* Unset: the server's own limit applies ("server" in the table, null in JSON). */
			if (!json) {
				char ns[16] = "server", nm[32] = "server";
				if (v[i].has_max_sandboxes && v[i].max_sandboxes)
					snprintf(ns, sizeof(ns), "%u", v[i].max_sandboxes);
				else if (v[i].has_max_sandboxes)
					strcpy(ns, "none");
				if (v[i].has_max_memory)
					format_size(v[i].max_memory, nm, sizeof(nm));
				printf("%-32s %-20s %-6s %-13s %s\n", v[i].name, when, v[i].admin ? "admin" : "-", ns, nm);
				continue;
			}
			json_object_begin(&w);
			json_kv_string(&w, "name", v[i].name);
			json_kv_string(&w, "created", when);
			json_kv_bool(&w, "admin", v[i].admin);
			json_key(&w, "max_sandboxes");
			if (v[i].has_max_sandboxes)
				json_uint(&w, v[i].max_sandboxes);
			else
				json_null(&w);
			json_key(&w, "max_memory");
			if (v[i].has_max_memory)
				json_uint(&w, v[i].max_memory);
			else
				json_null(&w);
			json_object_end(&w);
		}
		json_array_end(&w);
		_cleanup_free_ char *text = json_steal(&w, NULL);
		if (json && !text) {
			fprintf(stderr, "capsule: out of memory\n");
			return 125;
		}
		if (json)
			printf("%s\n", text);
		return 0;
	}
	return token_usage_fail("unknown subcommand '%s' (create, ls, rm)", sub);
}
