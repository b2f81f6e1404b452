/* config.json (runtime-spec 1.x) into a sandbox configuration and its process's options.
 *
 * The file is hostile input: every field capsule knows is either honoured or refused with one
 * line naming it (docs/oci.md has the list); fields the spec does not define are skipped, as
 * the spec requires of runtimes. Paths are checked here, not trusted later. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "internal.h"
#include "json.h"
#include "oci_spec.h"
#include "proc_masks.h"
#include "util.h"

#define MAX_MEMBERS 256
#define MAX_ELEMENTS 4096

/* Where in the document a value is, for messages ("process.user.uid"). */
struct walk {
	struct capsule_oci_spec *spec;
	capsule_error *err;
	const char *where;
	const char *bundle;
	size_t n;       /* elements seen by an array walk */
	uint64_t mask;  /* a capability walk's set */
	void *payload;  /* a walk's own target */
};

static int bad(capsule_error *err, const char *where, const char *what)
{
	return cap_err_plain(err, EINVAL, "config.json: %s: %s", where, what);
}

static int unsupported(capsule_error *err, const char *where, const char *why)
{
	return cap_err_plain(err, EOPNOTSUPP, "config.json: %s is not supported by capsule: %s", where, why);
}

static bool is_null(const char *v, size_t n)
{
	return n == 4 && !memcmp(v, "null", 4);
}

/* An empty value ([], {}, "", null, false, 0) asks for nothing. */
static bool is_empty(const char *v, size_t n)
{
	while (n && (v[n - 1] == ' ' || v[n - 1] == '\n' || v[n - 1] == '\t' || v[n - 1] == '\r'))
		n--;
	if (is_null(v, n) || (n == 5 && !memcmp(v, "false", 5)) || (n == 1 && v[0] == '0') ||
	    (n == 2 && (!memcmp(v, "[]", 2) || !memcmp(v, "{}", 2) || !memcmp(v, "\"\"", 2))))
		return true;
	if (n >= 2 && (v[0] == '[' || v[0] == '{')) {
		for (size_t i = 1; i + 1 < n; i++)
			if (v[i] != ' ' && v[i] != '\n' && v[i] != '\t' && v[i] != '\r')
				return false;
		return true;
	}
	return false;
}

/* The member's value as a scalar, by wrapping it into a one-member object for json_get_*. */
static int scalar_doc(const char *v, size_t n, char **doc)
{
	*doc = malloc(n + 8);
	if (!*doc)
		return -ENOMEM;
	memcpy(*doc, "{\"v\":", 5);
	memcpy(*doc + 5, v, n);
	memcpy(*doc + 5 + n, "}", 2);
	return 0;
}

static int value_string(const char *v, size_t n, const char *where, char **out, capsule_error *err)
{
	if (n == 0 || v[0] != '"' || json_string_value(v, n, out) < 0)
		return bad(err, where, "not a string");
	return 0;
}

static int value_int(const char *v, size_t n, const char *where, int64_t *out, capsule_error *err)
{
	_cleanup_free_ char *doc = NULL;
	if (scalar_doc(v, n, &doc) < 0)
		return cap_err(err, ENOMEM, "config.json");
	if (json_get_int(doc, n + 6, "v", out) < 0)
		return bad(err, where, "not an integer");
	return 0;
}

/* Unsigned 64-bit values (rlimits, memory) may exceed int64_t: read the digits. */
static int value_u64(const char *v, size_t n, const char *where, uint64_t *out, capsule_error *err)
{
	if (n == 0 || n > 20)
		return bad(err, where, "not a non-negative integer");
	uint64_t x = 0;
	for (size_t i = 0; i < n; i++) {
		if (v[i] < '0' || v[i] > '9')
			return bad(err, where, "not a non-negative integer");
		if (x > (UINT64_MAX - (uint64_t)(v[i] - '0')) / 10)
			return bad(err, where, "out of range");
		x = x * 10 + (uint64_t)(v[i] - '0');
	}
	if (n > 1 && v[0] == '0')
		return bad(err, where, "not a non-negative integer");
	*out = x;
	return 0;
}

static int value_bool(const char *v, size_t n, const char *where, bool *out, capsule_error *err)
{
	if (n == 4 && !memcmp(v, "true", 4))
		*out = true;
	else if (n == 5 && !memcmp(v, "false", 5))
		*out = false;
	else
		return bad(err, where, "not a boolean");
	return 0;
}

static int value_uint32(const char *v, size_t n, const char *where, uint32_t *out, capsule_error *err)
{
	uint64_t x;
	int r = value_u64(v, n, where, &x, err);
	if (r < 0)
		return r;
	if (x > UINT32_MAX)
		return bad(err, where, "out of range");
	*out = (uint32_t)x;
	return 0;
}

/* Walk the array (or object) V at WHERE: FN's own error stands; the walk's becomes one naming
 * WHERE. */
static int walk_json(bool array, const char *v, size_t n, size_t max, json_member_fn fn, void *payload,
		     const char *where, capsule_error *err)
{
	if (n == 0 || v[0] != (array ? '[' : '{'))
		return bad(err, where, array ? "not an array" : "not an object");
	int r = array ? json_array_each(v, n, max, fn, payload) : json_object_each(v, n, max, fn, payload);
	if (r < 0 && !err->code)
		return bad(err, where, r == -E2BIG ? "too many elements" : "not valid here");
	return r < 0 ? r : 0;
}

/* Items apart with ',' in one malloc'd string, for a config key (the shim splits it). */
struct joined {
	char *out;
	size_t len, cap;
};

static int join(struct joined *j, const char *a, const char *b, const char *where, capsule_error *err)
{
	size_t need = j->len + strlen(a) + strlen(b) + 2;
	if (need > 16384)
		return bad(err, where, "too long");
	if (need > j->cap) {
		char *grown = realloc(j->out, need * 2);
		if (!grown)
			return cap_err(err, ENOMEM, "config.json");
		j->out = grown;
		j->cap = need * 2;
	}
	j->len += (size_t)sprintf(j->out + j->len, "%s%s%s", j->len ? "," : "", a, b);
	return 0;
}

/* ---- arrays of strings ---------------------------------------------------------------- */

struct strv_walk {
	char **v;
	size_t n;
	const char *where;
	capsule_error *err;
};

static int strv_element(const char *name, const char *v, size_t n, void *payload)
{
	struct strv_walk *w = payload;
	char *s;
	int r = value_string(v, n, w->where, &s, w->err);
	if (r < 0)
		return r;
	w->v[w->n++] = s;
	return 0;
}

/* A JSON array of strings into a NULL-terminated malloc'd vector. */
static int value_strv(const char *v, size_t n, const char *where, char ***out, capsule_error *err)
{
	/* Every element is at least two bytes ("") and a separator: a bound on the count. */
	size_t max = n / 3 + 2;
	struct strv_walk w = { .v = calloc(max, sizeof(char *)), .where = where, .err = err };
	if (!w.v)
		return cap_err(err, ENOMEM, "config.json");
	int r = walk_json(true, v, n, MAX_ELEMENTS, strv_element, &w, where, err);
	if (r < 0) {
		for (size_t i = 0; i < w.n; i++)
			free(w.v[i]);
		free(w.v);
		return r;
	}
	*out = w.v;
	return 0;
}

static void strv_free_all(char **v)
{
	for (size_t i = 0; v && v[i]; i++)
		free(v[i]);
	free(v);
}

/* ---- process ---------------------------------------------------------------------------- */

static const char *const cap_names[] = {
	"CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
	"LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
	"SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
	"SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
	"MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
	"CHECKPOINT_RESTORE",
};

static int cap_element(const char *name, const char *v, size_t n, void *payload)
{
	struct walk *w = payload;
	_cleanup_free_ char *s = NULL;
	int r = value_string(v, n, w->where, &s, w->err);
	if (r < 0)
		return r;
	for (size_t i = 0; i < ARRAY_SIZE(cap_names); i++) {
		if (!strncmp(s, "CAP_", 4) && !strcmp(s + 4, cap_names[i])) {
			w->mask |= 1ull << i;
			return 0;
		}
	}
	return cap_err_plain(w->err, EINVAL, "config.json: %s: unknown capability '%.64s'", w->where, s);
}

static int cap_set(const char *v, size_t n, const char *where, uint64_t *out, capsule_error *err)
{
	if (is_null(v, n)) {
		*out = 0;
		return 0;
	}
	struct walk w = { .err = err, .where = where };
	int r = walk_json(true, v, n, MAX_ELEMENTS, cap_element, &w, where, err);
	if (r < 0)
		return r;
	*out = w.mask;
	return 0;
}

/* capsule gives a command one set: its bounding, permitted and effective sets are the same
 * (docs/oci.md). A spec that splits them is refused, not narrowed. */
static int process_capabilities(struct capsule_oci_spec *spec, const char *v, size_t n, uint32_t uid,
				capsule_error *err)
{
	if (v[0] != '{')
		return bad(err, "process.capabilities", "not an object");
	static const char *const sets[] = { "bounding", "effective", "permitted", "inheritable", "ambient" };
	uint64_t m[5];
	for (size_t i = 0; i < 5; i++) {
		const char *sv;
		size_t sn;
		char where[64];
		snprintf(where, sizeof(where), "process.capabilities.%s", sets[i]);
		int r = json_get_member(v, n, sets[i], &sv, &sn);
		if (r == -ENOENT) {
			m[i] = 0;
			continue;
		}
		if (r < 0)
			return bad(err, "process.capabilities", "not a valid object");
		if ((r = cap_set(sv, sn, where, &m[i], err)) < 0)
			return r;
	}
	if (m[1] != m[0] || m[2] != m[0])
		return unsupported(err, "process.capabilities",
				   "its bounding, effective and permitted sets differ (capsule gives a process one set)");
	if ((m[3] | m[4]) & ~m[0])
		return bad(err, "process.capabilities", "its inheritable or ambient set holds capabilities its bounding set lacks");
	spec->caps_set = true;
	spec->caps = m[0];
	spec->caps_inheritable = m[3];
	spec->caps_ambient = m[4];
	return 0;
}

static const struct {
	const char *name;
	int resource;
} rlimit_names[] = {
	{ "RLIMIT_AS", RLIMIT_AS },		{ "RLIMIT_CORE", RLIMIT_CORE },
	{ "RLIMIT_CPU", RLIMIT_CPU },		{ "RLIMIT_DATA", RLIMIT_DATA },
	{ "RLIMIT_FSIZE", RLIMIT_FSIZE },	{ "RLIMIT_LOCKS", RLIMIT_LOCKS },
	{ "RLIMIT_MEMLOCK", RLIMIT_MEMLOCK },	{ "RLIMIT_MSGQUEUE", RLIMIT_MSGQUEUE },
	{ "RLIMIT_NICE", RLIMIT_NICE },		{ "RLIMIT_NOFILE", RLIMIT_NOFILE },
	{ "RLIMIT_NPROC", RLIMIT_NPROC },	{ "RLIMIT_RSS", RLIMIT_RSS },
	{ "RLIMIT_RTPRIO", RLIMIT_RTPRIO },	{ "RLIMIT_RTTIME", RLIMIT_RTTIME },
	{ "RLIMIT_SIGPENDING", RLIMIT_SIGPENDING }, { "RLIMIT_STACK", RLIMIT_STACK },
};

static int rlimit_element(const char *name, const char *v, size_t n, void *payload)
{
	struct walk *w = payload;
	struct capsule_oci_spec *spec = w->spec;
	char where[48];
	snprintf(where, sizeof(where), "process.rlimits[%zu]", w->n++);
	if (n == 0 || v[0] != '{')
		return bad(w->err, where, "not an object");
	_cleanup_free_ char *type = NULL;
	int r = json_get_string(v, n, "type", &type);
	if (r < 0)
		return bad(w->err, where, "no type");
	const char *hv, *sv;
	size_t hn, sn;
	if (json_get_member(v, n, "hard", &hv, &hn) < 0 || json_get_member(v, n, "soft", &sv, &sn) < 0)
		return bad(w->err, where, "needs both hard and soft");
	capsule_rlimit l = { .resource = -1 };
	for (size_t i = 0; i < ARRAY_SIZE(rlimit_names); i++)
		if (!strcmp(type, rlimit_names[i].name))
			l.resource = rlimit_names[i].resource;
	if (l.resource < 0)
		return cap_err_plain(w->err, EINVAL, "config.json: %s: unknown rlimit type '%.64s'", where, type);
	if ((r = value_u64(hv, hn, where, &l.hard, w->err)) < 0 || (r = value_u64(sv, sn, where, &l.soft, w->err)) < 0)
		return r;
	if (l.soft > l.hard)
		return bad(w->err, where, "soft limit above the hard limit");
	for (size_t i = 0; i < spec->nrlimits; i++)
		if (spec->rlimits[i].resource == l.resource)
			return cap_err_plain(w->err, EINVAL, "config.json: %s: %s given twice", where, type);
	if (spec->nrlimits == OCI_MAX_RLIMITS)
		return bad(w->err, where, "too many rlimits");
	spec->rlimits[spec->nrlimits++] = l;
	return 0;
}

static int gid_element(const char *name, const char *v, size_t n, void *payload)
{
	struct walk *w = payload;
	struct capsule_oci_spec *spec = w->spec;
	if (spec->ngroups == OCI_MAX_GROUPS)
		return bad(w->err, "process.user.additionalGids", "more than 64 groups");
	return value_uint32(v, n, "process.user.additionalGids", &spec->groups[spec->ngroups++], w->err);
}

static int process_user(struct capsule_oci_spec *spec, const char *v, size_t n, uint32_t *uid_out,
			capsule_error *err)
{
	if (v[0] != '{')
		return bad(err, "process.user", "not an object");
	uint32_t uid = 0, gid = 0;
	const char *fv;
	size_t fn;
	int r;
	if (json_get_member(v, n, "uid", &fv, &fn) == 0 && (r = value_uint32(fv, fn, "process.user.uid", &uid, err)) < 0)
		return r;
	if (json_get_member(v, n, "gid", &fv, &fn) == 0 && (r = value_uint32(fv, fn, "process.user.gid", &gid, err)) < 0)
		return r;
	if (uid > 65535 || gid > 65535)
		return unsupported(err, "process.user", "a sandbox maps ids 0 to 65535");
	if (json_get_member(v, n, "umask", &fv, &fn) == 0 && !is_null(fv, fn)) {
		if ((r = value_uint32(fv, fn, "process.user.umask", &spec->umask, err)) < 0)
			return r;
		if (spec->umask > 0777)
			return bad(err, "process.user.umask", "beyond 0777");
		spec->umask_set = true;
	}
	if (json_get_member(v, n, "username", &fv, &fn) == 0 && !is_empty(fv, fn))
		return unsupported(err, "process.user.username", "it is for Windows");
	spec->ngroups = 0;
	if (json_get_member(v, n, "additionalGids", &fv, &fn) == 0 && !is_null(fv, fn)) {
		struct walk w = { .spec = spec, .err = err };
		if ((r = walk_json(true, fv, fn, OCI_MAX_GROUPS + 1, gid_element, &w, "process.user.additionalGids", err)) < 0)
			return r;
	}
	snprintf(spec->user, sizeof(spec->user), "%u:%u", uid, gid);
	*uid_out = uid;
	return 0;
}

struct process_walk {
	struct capsule_oci_spec *spec;
	capsule_error *err;
	const char *caps;
	size_t caps_len;
};

static int process_member(const char *name, const char *v, size_t n, void *payload)
{
	struct process_walk *pw = payload;
	struct capsule_oci_spec *spec = pw->spec;
	capsule_error *err = pw->err;
	int r;
	if (!strcmp(name, "terminal"))
		return value_bool(v, n, "process.terminal", &spec->terminal, err);
	if (!strcmp(name, "consoleSize")) {
		if (is_null(v, n))
			return 0;
		int64_t h, w;
		if (v[0] != '{' || json_get_int(v, n, "height", &h) < 0 || json_get_int(v, n, "width", &w) < 0 ||
		    h < 0 || w < 0 || h > 0xffff || w > 0xffff)
			return bad(err, "process.consoleSize", "needs height and width from 0 to 65535");
		spec->rows = (uint16_t)h;
		spec->cols = (uint16_t)w;
		return 0;
	}
	if (!strcmp(name, "args")) {
		strv_free_all(spec->argv);
		spec->argv = NULL;
		return value_strv(v, n, "process.args", &spec->argv, err);
	}
	if (!strcmp(name, "env")) {
		strv_free_all(spec->env);
		spec->env = NULL;
		if (is_null(v, n))
			return 0;
		if ((r = value_strv(v, n, "process.env", &spec->env, err)) < 0)
			return r;
		for (size_t i = 0; spec->env[i]; i++)
			if (!strchr(spec->env[i], '=') || spec->env[i][0] == '=')
				return cap_err_plain(err, EINVAL, "config.json: process.env: '%.64s' is not KEY=VALUE",
						     spec->env[i]);
		return 0;
	}
	if (!strcmp(name, "cwd")) {
		free(spec->cwd);
		spec->cwd = NULL;
		if ((r = value_string(v, n, "process.cwd", &spec->cwd, err)) < 0)
			return r;
		if (spec->cwd[0] != '/')
			return bad(err, "process.cwd", "not an absolute path");
		return 0;
	}
	if (!strcmp(name, "capabilities")) {
		/* Read after the user, whom it depends on. */
		pw->caps = v;
		pw->caps_len = n;
		return 0;
	}
	if (!strcmp(name, "rlimits")) {
		if (is_null(v, n))
			return 0;
		struct walk w = { .spec = spec, .err = err };
		return walk_json(true, v, n, OCI_MAX_RLIMITS + 1, rlimit_element, &w, "process.rlimits", err);
	}
	if (!strcmp(name, "noNewPrivileges")) {
		bool nnp;
		if ((r = value_bool(v, n, "process.noNewPrivileges", &nnp, err)) < 0)
			return r;
		/* capsule sets it on every command; false cannot be honoured. */
		if (!nnp)
			return unsupported(err, "process.noNewPrivileges false",
					   "every command runs with no_new_privs (docs/security.md)");
		return 0;
	}
	if (!strcmp(name, "oomScoreAdj")) {
		int64_t adj;
		if ((r = value_int(v, n, "process.oomScoreAdj", &adj, err)) < 0)
			return r;
		/* Lowering it needs CAP_SYS_RESOURCE of the host's; a sandbox's floor is 0. */
		if (adj < 0)
			return unsupported(err, "process.oomScoreAdj below 0", "a sandbox's processes have 0 at least");
		if (adj > 1000)
			return bad(err, "process.oomScoreAdj", "above 1000");
		spec->oom_score_adj_set = true;
		spec->oom_score_adj = (uint32_t)adj;
		return 0;
	}
	if (!strcmp(name, "apparmorProfile") || !strcmp(name, "selinuxLabel")) {
		if (is_empty(v, n))
			return 0;
		return cap_err_plain(err, EOPNOTSUPP, "config.json: process.%s is not supported by capsule: no LSM profiles",
				     name);
	}
	if (!strcmp(name, "commandLine") || !strcmp(name, "ioPriority") || !strcmp(name, "scheduler") ||
	    !strcmp(name, "execCPUAffinity")) {
		if (is_empty(v, n))
			return 0;
		return cap_err_plain(err, EOPNOTSUPP, "config.json: process.%s is not supported by capsule", name);
	}
	return 0; /* "user" is read first, by the caller; unknown members are skipped */
}

static int parse_process(struct capsule_oci_spec *spec, const char *v, size_t n, capsule_error *err)
{
	if (n == 0 || v[0] != '{')
		return bad(err, "process", "not an object");
	uint32_t uid = 0;
	const char *uv;
	size_t un;
	int r = json_get_member(v, n, "user", &uv, &un);
	if (r == 0 && (r = process_user(spec, uv, un, &uid, err)) < 0)
		return r;
	if (r == -ENOENT)
		snprintf(spec->user, sizeof(spec->user), "0:0");
	struct process_walk pw = { .spec = spec, .err = err };
	if ((r = walk_json(false, v, n, MAX_MEMBERS, process_member, &pw, "process", err)) < 0)
		return r;
	if (pw.caps && (r = process_capabilities(spec, pw.caps, pw.caps_len, uid, err)) < 0)
		return r;
	if (!spec->argv || !spec->argv[0] || !spec->argv[0][0])
		return bad(err, "process.args", "no command");
	if (!spec->cwd)
		return bad(err, "process.cwd", "missing");
	return 0;
}

/* ---- root, mounts --------------------------------------------------------------------- */

static int bundle_path(const char *bundle, const char *path, char *out, size_t size, const char *where,
		       capsule_error *err)
{
	int n = path[0] == '/' ? snprintf(out, size, "%s", path) : snprintf(out, size, "%s/%s", bundle, path);
	if (n < 0 || (size_t)n >= size)
		return bad(err, where, "path too long");
	return 0;
}

static int parse_root(struct capsule_oci_spec *spec, const char *v, size_t n, const char *bundle, capsule_error *err)
{
	if (n == 0 || v[0] != '{')
		return bad(err, "root", "not an object");
	_cleanup_free_ char *path = NULL;
	if (json_get_string(v, n, "path", &path) < 0 || !path[0])
		return bad(err, "root.path", "missing");
	bool ro = false;
	int r = json_get_bool(v, n, "readonly", &ro);
	if (r < 0 && r != -ENOENT)
		return bad(err, "root.readonly", "not a boolean");
	char full[PATH_MAX];
	if ((r = bundle_path(bundle, path, full, sizeof(full), "root.path", err)) < 0)
		return r;
	_cleanup_free_ char *real = realpath(full, NULL);
	if (!real)
		return cap_err(err, errno, "config.json: root.path '%s'", full);
	struct capsule_config *cfg = spec->cfg;
	cfg->base_none = true;
	/* A read-only layer for now: at the container level it becomes the root itself (the
	 * document's end, where the isolation is known). */
	cfg->rootfs_readonly = ro;
	return config_add_layer(cfg, real, err);
}

/* The mounts every container has, which capsule makes itself with its own options (docs/oci.md):
 * a spec may list them (runtime-tools, podman and containerd all do), with the type capsule
 * gives them. */
static const struct {
	const char *destination, *type;
} own_mounts[] = {
	{ "/proc", "proc" },	     { "/dev", "tmpfs" },	   { "/dev/pts", "devpts" },
	{ "/dev/shm", "tmpfs" },     { "/dev/mqueue", "mqueue" }, { "/sys", "sysfs" },
	{ "/sys/fs/cgroup", "cgroup" }, { "/sys/fs/cgroup", "cgroup2" },
};

struct mount_walk {
	struct capsule_oci_spec *spec;
	capsule_error *err;
	const char *bundle;
	size_t n;
	/* One mount's options. */
	bool bind, ro;
	uint64_t size;
	uint32_t mode;
	char attrs[96]; /* "noexec+strictatime+rshared" */
	struct joined attr_targets;
	const char *type;
	char where[48];
};

static int mount_option(const char *name, const char *v, size_t n, void *payload)
{
	struct mount_walk *w = payload;
	_cleanup_free_ char *o = NULL;
	int r = value_string(v, n, w->where, &o, w->err);
	if (r < 0)
		return r;
	bool tmpfs = !strcmp(w->type, "tmpfs");
	if (!strcmp(o, "ro") || !strcmp(o, "rro")) {
		w->ro = true;
	} else if (!strcmp(o, "rw") || !strcmp(o, "rrw")) {
		w->ro = false;
	} else if (!strcmp(o, "bind") || !strcmp(o, "rbind")) {
		w->bind = true;
	} else if (!strcmp(o, "noexec") || !strcmp(o, "strictatime") || !strcmp(o, "noatime") ||
		   !strcmp(o, "nodiratime") || !strcmp(o, "shared") || !strcmp(o, "rshared") ||
		   !strcmp(o, "unbindable") || !strcmp(o, "runbindable")) {
		/* Propagation within the sandbox's own mount namespace: its mounts are made private
		 * first, so a shared one is a peer group of the sandbox's alone. */
		size_t l = strlen(w->attrs);
		if (!strstr(w->attrs, o) && l + strlen(o) + 2 < sizeof(w->attrs))
			snprintf(w->attrs + l, sizeof(w->attrs) - l, "%s%s", l ? "+" : "", o);
	} else if (!strcmp(o, "exec") || !strcmp(o, "relatime")) {
		/* what capsule's mounts are anyway */
	} else if (!strcmp(o, "nosuid") || !strcmp(o, "nodev") || !strcmp(o, "private") || !strcmp(o, "rprivate") ||
		   !strcmp(o, "slave") || !strcmp(o, "rslave")) {
		/* Every mount capsule makes is nosuid, nodev and private. */
	} else if (!tmpfs && (!strncmp(o, "size=", 5) || !strncmp(o, "mode=", 5))) {
		/* A file system's data options on a bind: mount(2) ignores them for a bind, and
		 * runc passes them to it (docs/oci.md says so). */
	} else if (tmpfs && !strncmp(o, "size=", 5)) {
		if (capsule_parse_size(o + 5, &w->size, w->err) < 0)
			return cap_err_plain(w->err, EINVAL, "config.json: %s: bad size '%.32s'", w->where, o + 5);
	} else if (tmpfs && !strncmp(o, "mode=", 5)) {
		char *end;
		unsigned long m = strtoul(o + 5, &end, 8);
		if (*end || end == o + 5 || m > 07777)
			return cap_err_plain(w->err, EINVAL, "config.json: %s: bad mode '%.32s'", w->where, o + 5);
		w->mode = (uint32_t)m;
	} else {
		return cap_err_plain(w->err, EOPNOTSUPP, "config.json: %s: mount option '%.64s' is not supported by capsule",
				     w->where, o);
	}
	return 0;
}

static int mount_element(const char *name, const char *v, size_t n, void *payload)
{
	struct mount_walk *w = payload;
	capsule_error *err = w->err;
	snprintf(w->where, sizeof(w->where), "mounts[%zu]", w->n++);
	if (n == 0 || v[0] != '{')
		return bad(err, w->where, "not an object");
	_cleanup_free_ char *dest = NULL, *type = NULL, *source = NULL;
	if (json_get_string(v, n, "destination", &dest) < 0 || dest[0] != '/')
		return bad(err, w->where, "destination is not an absolute path");
	int r = json_get_string(v, n, "type", &type);
	if (r < 0 && r != -ENOENT)
		return bad(err, w->where, "type is not a string");
	r = json_get_string(v, n, "source", &source);
	if (r < 0 && r != -ENOENT)
		return bad(err, w->where, "source is not a string");
	w->type = type ? type : "";
	w->bind = !strcmp(w->type, "bind");
	/* capsule's own mounts come with capsule's options, whatever the spec's say. */
	for (size_t i = 0; i < ARRAY_SIZE(own_mounts) && !w->bind; i++)
		if (!strcmp(dest, own_mounts[i].destination) && !strcmp(w->type, own_mounts[i].type))
			return 0;
	w->ro = false;
	w->attrs[0] = 0;
	w->size = 0;
	w->mode = 0;
	const char *ov;
	size_t on;
	if (json_get_member(v, n, "options", &ov, &on) == 0 && !is_null(ov, on)) {
		if ((r = walk_json(true, ov, on, 64, mount_option, w, w->where, err)) < 0)
			return r;
	}
	const char *mv;
	size_t mn;
	if ((json_get_member(v, n, "uidMappings", &mv, &mn) == 0 && !is_empty(mv, mn)) ||
	    (json_get_member(v, n, "gidMappings", &mv, &mn) == 0 && !is_empty(mv, mn)))
		return unsupported(err, w->where, "idmapped mounts are capsule's own (the sandbox's root owns them)");
	capsule_config *cfg = w->spec->cfg;
	if (w->bind) {
		if (!source || !source[0])
			return bad(err, w->where, "a bind mount without a source");
		char full[PATH_MAX];
		if ((r = bundle_path(w->bundle, source, full, sizeof(full), w->where, err)) < 0)
			return r;
		/* The bundle's author chooses host paths, as with runc: nothing is sensitive to it. */
		if ((r = capsule_config_add_bind(cfg, full, dest, w->ro, true, err)) < 0)
			return r;
	} else if (!strcmp(w->type, "tmpfs")) {
		if (w->ro)
			return unsupported(err, w->where, "a read-only tmpfs");
		if ((r = capsule_config_add_tmpfs(cfg, dest, w->size, w->mode, err)) < 0)
			return r;
	} else {
		return cap_err_plain(err, EOPNOTSUPP,
				     "config.json: %s: a mount of type '%.32s' at '%.128s' is not supported by capsule "
				     "(bind and tmpfs are)", w->where, w->type, dest);
	}
	/* The target as the configuration normalized it (the last mount added). */
	const char *target = w->bind ? cfg->binds[cfg->nbinds - 1].target : cfg->tmpfs[cfg->ntmpfs - 1].target;
	if (!w->attrs[0])
		return 0;
	if (strpbrk(target, ",="))
		return unsupported(err, w->where, "mount options on a path that holds ',' or '='");
	char value[sizeof(w->attrs) + 1];
	snprintf(value, sizeof(value), "=%s", w->attrs);
	return join(&w->attr_targets, target, value, w->where, err);
}

static int parse_mounts(struct capsule_oci_spec *spec, const char *v, size_t n, const char *bundle,
			capsule_error *err)
{
	if (is_null(v, n))
		return 0;
	struct mount_walk w = { .spec = spec, .err = err, .bundle = bundle };
	int r = walk_json(true, v, n, CAPSULE_MAX_BINDS + CAPSULE_MAX_TMPFS + ARRAY_SIZE(own_mounts), mount_element, &w,
			  "mounts", err);
	if (r < 0) {
		free(w.attr_targets.out);
		return r;
	}
	free(spec->cfg->mount_attrs);
	spec->cfg->mount_attrs = w.attr_targets.out;
	return 0;
}

/* ---- linux -------------------------------------------------------------------------------- */

/* capsule always makes these namespaces; the spec must ask for at least the ones whose
 * absence would mean sharing the host's (capsule never shares them). */
static int ns_element(const char *name, const char *v, size_t n, void *payload)
{
	struct walk *w = payload;
	if (n == 0 || v[0] != '{')
		return bad(w->err, "linux.namespaces", "an element is not an object");
	_cleanup_free_ char *type = NULL, *path = NULL;
	if (json_get_string(v, n, "type", &type) < 0)
		return bad(w->err, "linux.namespaces", "an element has no type");
	int r = json_get_string(v, n, "path", &path);
	if (r < 0 && r != -ENOENT)
		return bad(w->err, "linux.namespaces", "a path is not a string");
	static const char *const known[] = { "pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time" };
	size_t i = 0;
	while (i < ARRAY_SIZE(known) && strcmp(type, known[i]))
		i++;
	if (i == ARRAY_SIZE(known))
		return cap_err_plain(w->err, EINVAL, "config.json: linux.namespaces: unknown type '%.32s'", type);
	/* A network namespace made by the caller (podman's, a CNI plugin's, a Kubernetes pod's):
	 * the sandbox joins it and its owner configures it. The shim checks that it is one. */
	if (path && path[0] && !strcmp(type, "network")) {
		if (path[0] != '/' || strlen(path) > 1024 || strpbrk(path, "\n"))
			return cap_err_plain(w->err, EINVAL, "config.json: linux.namespaces: the network namespace path "
							      "'%.128s' is not an absolute path", path);
		free(w->spec->cfg->net_ns);
		w->spec->cfg->net_ns = steal_ptr(path);
	} else if (path && path[0]) {
		return cap_err_plain(w->err, EOPNOTSUPP,
				     "config.json: linux.namespaces: joining the %s namespace at '%.128s' is not supported "
				     "by capsule: a sandbox makes its own (only a network namespace can be joined)", type, path);
	}
	if (!strcmp(type, "time"))
		return unsupported(w->err, "linux.namespaces: time", "a sandbox shares the host's clocks");
	w->mask |= 1ull << i;
	return 0;
}

static int parse_namespaces(struct capsule_oci_spec *spec, const char *v, size_t n, capsule_error *err)
{
	struct walk w = { .spec = spec, .err = err };
	int r = walk_json(true, v, n, 16, ns_element, &w, "linux.namespaces", err);
	if (r < 0)
		return r;
	/* pid, network, mount, ipc, uts: without them runc would share the host's. */
	static const char *const needed[] = { "pid", "network", "mount", "ipc", "uts" };
	for (size_t i = 0; i < ARRAY_SIZE(needed); i++)
		if (!(w.mask & (1ull << i)))
			return cap_err_plain(err, EOPNOTSUPP,
					     "config.json: linux.namespaces: sharing the host's %s namespace is not "
					     "supported by capsule (list it: a sandbox always has its own)", needed[i]);
	return 0;
}

static int device_rule(const char *name, const char *v, size_t n, void *payload)
{
	struct walk *w = payload;
	if (n == 0 || v[0] != '{')
		return bad(w->err, "linux.resources.devices", "an element is not an object");
	bool allow = false;
	if (json_get_bool(v, n, "allow", &allow) < 0)
		return bad(w->err, "linux.resources.devices", "an element has no allow");
	_cleanup_free_ char *type = NULL, *access = NULL;
	int r = json_get_string(v, n, "type", &type);
	if (r < 0 && r != -ENOENT)
		return bad(w->err, "linux.resources.devices", "type is not a string");
	r = json_get_string(v, n, "access", &access);
	if (r < 0 && r != -ENOENT)
		return bad(w->err, "linux.resources.devices", "access is not a string");
	if (type && strcmp(type, "a") && strcmp(type, "c") && strcmp(type, "b"))
		return bad(w->err, "linux.resources.devices", "type is not a, c or b");
	const char *mv;
	size_t mn;
	bool all = (!type || !strcmp(type, "a")) && json_get_member(v, n, "major", &mv, &mn) == -ENOENT &&
		   json_get_member(v, n, "minor", &mv, &mn) == -ENOENT;
	/* A sandbox's /dev holds capsule's own few devices and nothing in it can make more (its
	 * user namespace): it is the deny-all rule already, with those allowed. So the rules may
	 * deny everything and allow what they like; what they cannot do is widen that. */
	if (w->n++ == 0 && !(all && !allow))
		return unsupported(w->err, "linux.resources.devices", "the first rule must deny every device");
	if (allow && all)
		return unsupported(w->err, "linux.resources.devices", "allowing every device");
	return 0;
}

static int parse_resources(struct capsule_oci_spec *spec, const char *v, size_t n, capsule_error *err)
{
	if (v[0] != '{')
		return bad(err, "linux.resources", "not an object");
	capsule_config *cfg = spec->cfg;
	const char *fv;
	size_t fn;
	int r;
	if (json_get_member(v, n, "devices", &fv, &fn) == 0 && !is_null(fv, fn)) {
		struct walk w = { .err = err };
		if ((r = walk_json(true, fv, fn, 256, device_rule, &w, "linux.resources.devices", err)) < 0)
			return r;
	}
	if (json_get_member(v, n, "memory", &fv, &fn) == 0 && !is_null(fv, fn)) {
		const char *lv;
		size_t ln;
		int64_t limit;
		if (fv[0] != '{')
			return bad(err, "linux.resources.memory", "not an object");
		if (json_get_member(fv, fn, "limit", &lv, &ln) == 0) {
			if ((r = value_int(lv, ln, "linux.resources.memory.limit", &limit, err)) < 0)
				return r;
			if (limit > 0 && (r = capsule_config_set_memory_bytes(cfg, (uint64_t)limit, err)) < 0)
				return r;
			if (limit < -1 || limit == 0)
				return bad(err, "linux.resources.memory.limit", "not a positive number of bytes or -1");
		}
		static const char *const others[] = { "reservation", "swap", "kernel", "kernelTCP", "swappiness",
						      "disableOOMKiller", "useHierarchy", "checkBeforeUpdate" };
		for (size_t i = 0; i < ARRAY_SIZE(others); i++)
			if (json_get_member(fv, fn, others[i], &lv, &ln) == 0 && !is_null(lv, ln))
				return cap_err_plain(err, EOPNOTSUPP,
						     "config.json: linux.resources.memory.%s is not supported by capsule "
						     "(the memory limit is)", others[i]);
	}
	if (json_get_member(v, n, "pids", &fv, &fn) == 0 && !is_null(fv, fn)) {
		int64_t limit;
		if (fv[0] != '{' || json_get_int(fv, fn, "limit", &limit) < 0)
			return bad(err, "linux.resources.pids", "needs a limit");
		if (limit > UINT32_MAX)
			return bad(err, "linux.resources.pids.limit", "out of range");
		/* 0 or -1: no limit, as runc has it. */
		if ((r = capsule_config_set_pids_limit(cfg, limit > 0 ? (uint32_t)limit : 0, err)) < 0)
			return r;
	}
	if (json_get_member(v, n, "cpu", &fv, &fn) == 0 && !is_null(fv, fn)) {
		if (fv[0] != '{')
			return bad(err, "linux.resources.cpu", "not an object");
		int64_t quota = 0, period = 0;
		const char *qv;
		size_t qn;
		if (json_get_member(fv, fn, "quota", &qv, &qn) == 0 &&
		    (r = value_int(qv, qn, "linux.resources.cpu.quota", &quota, err)) < 0)
			return r;
		if (json_get_member(fv, fn, "period", &qv, &qn) == 0 &&
		    (r = value_int(qv, qn, "linux.resources.cpu.period", &period, err)) < 0)
			return r;
		if (quota > 0) {
			if (period <= 0)
				period = 100000;
			uint64_t milli = (uint64_t)quota * 1000 / (uint64_t)period;
			if (milli == 0 || milli > UINT32_MAX)
				return bad(err, "linux.resources.cpu", "quota/period out of range");
			if ((r = capsule_config_set_cpus_milli(cfg, (uint32_t)milli, err)) < 0)
				return r;
		}
		/* 1024 is every cgroup's own weight (containerd's default spec names it): honoured
		 * as it is; another weight is not. */
		if (json_get_member(fv, fn, "shares", &qv, &qn) == 0 && !is_null(qv, qn) &&
		    !(qn == 4 && !memcmp(qv, "1024", 4)))
			return unsupported(err, "linux.resources.cpu.shares other than 1024", "a sandbox has the default weight");
		static const char *const others[] = { "realtimeRuntime", "realtimePeriod", "cpus", "mems", "idle", "burst" };
		for (size_t i = 0; i < ARRAY_SIZE(others); i++)
			if (json_get_member(fv, fn, others[i], &qv, &qn) == 0 && !is_empty(qv, qn))
				return cap_err_plain(err, EOPNOTSUPP,
						     "config.json: linux.resources.cpu.%s is not supported by capsule "
						     "(quota and period are)", others[i]);
	}
	static const char *const others[] = { "blockIO", "hugepageLimits", "network", "rdma", "unified" };
	for (size_t i = 0; i < ARRAY_SIZE(others); i++)
		if (json_get_member(v, n, others[i], &fv, &fn) == 0 && !is_empty(fv, fn))
			return cap_err_plain(err, EOPNOTSUPP, "config.json: linux.resources.%s is not supported by capsule",
					     others[i]);
	return 0;
}

/* capsule masks and write-protects its own lists under /proc and /sys (proc_masks.c), and
 * all of /sys is read-only: a spec's lists may name what those cover, nothing more. */
static bool below_any(const char *path, const char *const *list, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		size_t l = strlen(list[i]);
		if (!strncmp(path + 1, list[i], l) && (path[1 + l] == 0 || path[1 + l] == '/'))
			return true;
	}
	return false;
}

static int protected_element(const char *name, const char *v, size_t n, void *payload)
{
	struct walk *w = payload;
	_cleanup_free_ char *p = NULL;
	int r = value_string(v, n, w->where, &p, w->err);
	if (r < 0)
		return r;
	size_t len = strlen(p);
	if (p[0] != '/' || len < 2 || len > 1024 || strpbrk(p, ",\n") || strstr(p, "/../") || strstr(p, "//") ||
	    (len >= 3 && !strcmp(p + len - 3, "/..")) || p[len - 1] == '/')
		return cap_err_plain(w->err, EINVAL, "config.json: %s: '%.128s' is not a clean absolute path without ','",
				     w->where, p);
	/* What capsule's own lists cover already is not done twice. */
	static const char *const sys[] = { "sys" };
	if (below_any(p, sandbox_masked_paths, sandbox_masked_paths_count) ||
	    (!w->mask && (below_any(p, sandbox_readonly_paths, sandbox_readonly_paths_count) || below_any(p, sys, 1))))
		return 0;
	return join(w->payload, p, "", w->where, w->err);
}

static int parse_protected_paths(struct capsule_oci_spec *spec, const char *v, size_t n, bool masked,
				 capsule_error *err)
{
	const char *where = masked ? "linux.maskedPaths" : "linux.readonlyPaths";
	struct joined j = { 0 };
	struct walk w = { .err = err, .where = where, .mask = masked, .payload = &j };
	int r = walk_json(true, v, n, MAX_ELEMENTS, protected_element, &w, where, err);
	if (r < 0) {
		free(j.out);
		return r;
	}
	char **slot = masked ? &spec->cfg->masked_paths : &spec->cfg->readonly_paths;
	free(*slot);
	*slot = j.out;
	return 0;
}

/* Only what the sandbox's own namespaces hold, as runc allows: the network's (net.*), IPC's and
 * POSIX message queues'. The rest is the host's kernel. */
static bool sysctl_namespaced(const char *name)
{
	static const char *const ipc[] = { "kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
					   "kernel.shmall", "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced" };
	if (!strncmp(name, "net.", 4) || !strncmp(name, "fs.mqueue.", 10))
		return true;
	for (size_t i = 0; i < ARRAY_SIZE(ipc); i++)
		if (!strcmp(name, ipc[i]))
			return true;
	return false;
}

struct sysctl_walk {
	capsule_error *err;
	struct joined j;
};

static int sysctl_member(const char *name, const char *v, size_t n, void *payload)
{
	struct sysctl_walk *w = payload;
	_cleanup_free_ char *value = NULL;
	if (n == 0 || v[0] != '"' || json_string_value(v, n, &value) < 0)
		return cap_err_plain(w->err, EINVAL, "config.json: linux.sysctl.%.64s: not a string", name);
	size_t nl = strlen(name);
	if (!nl || nl > 200 || strstr(name, "..") || name[0] == '.' || name[nl - 1] == '.')
		return cap_err_plain(w->err, EINVAL, "config.json: linux.sysctl: bad name '%.64s'", name);
	for (const char *c = name; *c; c++)
		if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_' || *c == '.' || *c == '-'))
			return cap_err_plain(w->err, EINVAL, "config.json: linux.sysctl: bad name '%.64s'", name);
	if (!sysctl_namespaced(name))
		return cap_err_plain(w->err, EOPNOTSUPP,
				     "config.json: linux.sysctl.%.64s is not supported by capsule: it is not the sandbox's "
				     "own (net.*, IPC and fs.mqueue.* are)", name);
	size_t vl = strlen(value);
	if (vl > 200 || strpbrk(value, ",\n"))
		return cap_err_plain(w->err, EOPNOTSUPP,
				     "config.json: linux.sysctl.%.64s: a value with a comma or a newline is not supported", name);
	char item[256];
	snprintf(item, sizeof(item), "%s=", name);
	return join(&w->j, item, value, "linux.sysctl", w->err);
}

static int parse_sysctls(struct capsule_oci_spec *spec, const char *v, size_t n, capsule_error *err)
{
	struct sysctl_walk w = { .err = err };
	int r = walk_json(false, v, n, MAX_MEMBERS, sysctl_member, &w, "linux.sysctl", err);
	if (r < 0) {
		free(w.j.out);
		return r;
	}
	free(spec->cfg->sysctls);
	spec->cfg->sysctls = w.j.out;
	return 0;
}

/* An absolute path below each hierarchy's root, as podman's cgroupfs manager ("/libpod_parent/
 * libpod-ID") and containerd ("/default/ID") give it. */
static int parse_cgroups_path(struct capsule_oci_spec *spec, const char *v, size_t n, capsule_error *err)
{
	char *path = NULL;
	int r = value_string(v, n, "linux.cgroupsPath", &path, err);
	if (r < 0)
		return r;
	if (!path[0]) {
		free(path);
		return 0;
	}
	const char *why = NULL;
	if (strchr(path, ':'))
		why = "a systemd slice:prefix:name (use the cgroupfs manager)";
	else if (path[0] != '/')
		why = "a relative path (give it from the hierarchy's root)";
	else if (strlen(path) > 1024 || strstr(path, "/../") || strstr(path, "/./") || strstr(path, "//") ||
		 !strcmp(path, "/") || path[strlen(path) - 1] == '/' || strpbrk(path, ",\n") ||
		 (strlen(path) >= 3 && !strcmp(path + strlen(path) - 3, "/..")) ||
		 (strlen(path) >= 2 && !strcmp(path + strlen(path) - 2, "/.")))
		why = "not a clean absolute path";
	if (why) {
		r = cap_err_plain(err, EOPNOTSUPP, "config.json: linux.cgroupsPath '%.128s' is not supported by capsule: %s",
				  path, why);
		free(path);
		return r;
	}
	free(spec->cfg->cgroup_path);
	spec->cfg->cgroup_path = path;
	return 0;
}

/* ---- hooks ------------------------------------------------------------------------------ */

static int hook_element(const char *name, const char *v, size_t n, void *payload)
{
	struct walk *w = payload;
	size_t kind = (size_t)(uintptr_t)w->payload;
	char where[64];
	snprintf(where, sizeof(where), "%s[%zu]", w->where, w->n);
	if (w->n >= OCI_MAX_HOOKS)
		return cap_err_plain(w->err, E2BIG, "config.json: %s: more than %d hooks", w->where, OCI_MAX_HOOKS);
	if (n == 0 || v[0] != '{')
		return bad(w->err, where, "not an object");
	capsule_oci_hook *h = &w->spec->hooks[kind][w->n++];
	w->spec->nhooks[kind] = w->n;
	char *path = NULL;
	if (json_get_string(v, n, "path", &path) < 0 || path[0] != '/') {
		free(path);
		return bad(w->err, where, "path is not an absolute path");
	}
	h->path = path;
	const char *mv;
	size_t mn;
	int r;
	char what[80];
	snprintf(what, sizeof(what), "%s.args", where);
	if (json_get_member(v, n, "args", &mv, &mn) == 0 && !is_null(mv, mn) &&
	    (r = value_strv(mv, mn, what, (char ***)&h->args, w->err)) < 0)
		return r;
	snprintf(what, sizeof(what), "%s.env", where);
	if (json_get_member(v, n, "env", &mv, &mn) == 0 && !is_null(mv, mn) &&
	    (r = value_strv(mv, mn, what, (char ***)&h->env, w->err)) < 0)
		return r;
	int64_t t;
	r = json_get_int(v, n, "timeout", &t);
	if (r == 0 && (t <= 0 || t > 86400))
		return bad(w->err, where, "timeout is not a number of seconds above 0");
	if (r < 0 && r != -ENOENT)
		return bad(w->err, where, "timeout is not a number");
	h->timeout_s = r == 0 ? (uint32_t)t : 0;
	return 0;
}

/* The hooks the runtime runs on the host; those that run inside the container's namespaces
 * are refused: a host program cannot be run there. */
static int hooks_member(const char *name, const char *v, size_t n, void *payload)
{
	struct walk *w = payload;
	static const char *const kinds[] = { "prestart", "createRuntime", "poststart", "poststop" };
	size_t kind = 0;
	while (kind < ARRAY_SIZE(kinds) && strcmp(name, kinds[kind]))
		kind++;
	if (kind == ARRAY_SIZE(kinds)) {
		if (is_empty(v, n) || (strcmp(name, "createContainer") && strcmp(name, "startContainer")))
			return 0;
		return cap_err_plain(w->err, EOPNOTSUPP,
				     "config.json: hooks.%s is not supported by capsule: it runs a host program in the "
				     "container's namespaces, which a sandbox does not share with the host", name);
	}
	if (is_null(v, n))
		return 0;
	char where[32];
	snprintf(where, sizeof(where), "hooks.%s", name);
	struct walk hw = { .spec = w->spec, .err = w->err, .where = where, .payload = (void *)(uintptr_t)kind,
			   .n = w->spec->nhooks[kind] };
	return walk_json(true, v, n, OCI_MAX_HOOKS + 1, hook_element, &hw, where, w->err);
}

struct linux_walk {
	struct capsule_oci_spec *spec;
	capsule_error *err;
	bool has_namespaces;
};

static int linux_member(const char *name, const char *v, size_t n, void *payload)
{
	struct linux_walk *lw = payload;
	capsule_error *err = lw->err;
	if (!strcmp(name, "namespaces")) {
		lw->has_namespaces = true;
		return parse_namespaces(lw->spec, v, n, err);
	}
	if (!strcmp(name, "resources"))
		return is_null(v, n) ? 0 : parse_resources(lw->spec, v, n, err);
	if (!strcmp(name, "seccomp")) {
		if (is_null(v, n))
			return 0;
		return oci_seccomp_compile(v, n, &lw->spec->seccomp_bpf, &lw->spec->seccomp_len, err);
	}
	if (!strcmp(name, "maskedPaths") || !strcmp(name, "readonlyPaths"))
		return is_null(v, n) ? 0 : parse_protected_paths(lw->spec, v, n, !strcmp(name, "maskedPaths"), err);
	if (!strcmp(name, "uidMappings") || !strcmp(name, "gidMappings")) {
		if (is_empty(v, n))
			return 0;
		return cap_err_plain(err, EOPNOTSUPP,
				     "config.json: linux.%s is not supported by capsule: a sandbox's ids are mapped to a "
				     "host range of its own", name);
	}
	if (!strcmp(name, "cgroupsPath"))
		return is_null(v, n) ? 0 : parse_cgroups_path(lw->spec, v, n, err);
	if (!strcmp(name, "rootfsPropagation")) {
		_cleanup_free_ char *p = NULL;
		int r = value_string(v, n, "linux.rootfsPropagation", &p, err);
		if (r < 0)
			return r;
		if (p[0] && strcmp(p, "private") && strcmp(p, "rprivate"))
			return unsupported(err, "linux.rootfsPropagation", "a sandbox's mounts are private");
		return 0;
	}
	if (!strcmp(name, "sysctl"))
		return is_null(v, n) ? 0 : parse_sysctls(lw->spec, v, n, err);
	static const char *const refused[] = { "devices", "mountLabel", "intelRdt", "personality",
					       "timeOffsets", "memoryPolicy", "netDevices" };
	for (size_t i = 0; i < ARRAY_SIZE(refused); i++)
		if (!strcmp(name, refused[i]))
			return is_empty(v, n) ? 0
					      : cap_err_plain(err, EOPNOTSUPP,
							      "config.json: linux.%s is not supported by capsule", name);
	return 0;
}

/* ---- the document ------------------------------------------------------------------------ */

struct top_walk {
	struct capsule_oci_spec *spec;
	capsule_error *err;
	const char *bundle;
	bool has_root, has_process, has_linux;
};

static int annotations_member(const char *name, const char *v, size_t n, void *payload)
{
	struct walk *w = payload;
	if (n == 0 || v[0] != '"')
		return cap_err_plain(w->err, EINVAL, "config.json: annotations.%.64s: not a string", name);
	if (strcmp(name, "capsule.isolation"))
		return 0;
	_cleanup_free_ char *iso = NULL;
	if (json_string_value(v, n, &iso) < 0)
		return bad(w->err, "annotations.capsule.isolation", "not a string");
	if (!strcmp(iso, "vm"))
		return capsule_config_set_isolation(w->spec->cfg, CAPSULE_ISOLATION_VM, w->err);
	if (!strcmp(iso, "container"))
		return capsule_config_set_isolation(w->spec->cfg, CAPSULE_ISOLATION_CONTAINER, w->err);
	return cap_err_plain(w->err, EINVAL, "config.json: annotations.capsule.isolation: '%.32s' is neither vm nor container",
			     iso);
}

static int top_member(const char *name, const char *v, size_t n, void *payload)
{
	struct top_walk *tw = payload;
	struct capsule_oci_spec *spec = tw->spec;
	capsule_error *err = tw->err;
	int r;
	if (!strcmp(name, "ociVersion")) {
		_cleanup_free_ char *ver = NULL;
		if ((r = value_string(v, n, "ociVersion", &ver, err)) < 0)
			return r;
		if (strncmp(ver, "1.", 2))
			return cap_err_plain(err, EINVAL, "config.json: ociVersion '%.32s' is not 1.x", ver);
		return 0;
	}
	if (!strcmp(name, "process")) {
		tw->has_process = true;
		return parse_process(spec, v, n, err);
	}
	if (!strcmp(name, "root")) {
		tw->has_root = true;
		return parse_root(spec, v, n, tw->bundle, err);
	}
	if (!strcmp(name, "hostname")) {
		_cleanup_free_ char *h = NULL;
		if ((r = value_string(v, n, "hostname", &h, err)) < 0)
			return r;
		return h[0] ? capsule_config_set_hostname(spec->cfg, h, err) : 0;
	}
	if (!strcmp(name, "mounts"))
		return parse_mounts(spec, v, n, tw->bundle, err);
	if (!strcmp(name, "linux")) {
		if (is_null(v, n))
			return 0;
		tw->has_linux = true;
		struct linux_walk lw = { .spec = spec, .err = err };
		if ((r = walk_json(false, v, n, MAX_MEMBERS, linux_member, &lw, "linux", err)) < 0)
			return r;
		if (!lw.has_namespaces)
			return unsupported(err, "a linux section without namespaces", "a sandbox always has its own");
		return 0;
	}
	if (!strcmp(name, "annotations")) {
		if (is_null(v, n))
			return 0;
		struct walk w = { .spec = spec, .err = err };
		if ((r = walk_json(false, v, n, MAX_MEMBERS, annotations_member, &w, "annotations", err)) < 0)
			return r;
		free(spec->annotations);
		if (!(spec->annotations = strndup(v, n)))
			return cap_err(err, ENOMEM, "config.json");
		return 0;
	}
	if (!strcmp(name, "hooks")) {
		if (is_null(v, n))
			return 0;
		struct walk w = { .spec = spec, .err = err };
		return walk_json(false, v, n, MAX_MEMBERS, hooks_member, &w, "hooks", err);
	}
	if (!strcmp(name, "domainname") || !strcmp(name, "solaris") ||
	    !strcmp(name, "windows") || !strcmp(name, "vm") || !strcmp(name, "zos") || !strcmp(name, "freebsd")) {
		if (is_empty(v, n))
			return 0;
		return cap_err_plain(err, EOPNOTSUPP, "config.json: %s is not supported by capsule", name);
	}
	return 0;
}

int capsule_oci_spec_parse(capsule_oci_spec **out, const char *json, size_t len, const char *bundle,
			   unsigned flags, capsule_error *err)
{
	if (!out || !json || (flags & ~CAPSULE_OCI_PROCESS_ONLY))
		return cap_err_plain(err, EINVAL, "capsule_oci_spec_parse: bad arguments");
	bool process_only = flags & CAPSULE_OCI_PROCESS_ONLY;
	if (!process_only && (!bundle || bundle[0] != '/'))
		return cap_err_plain(err, EINVAL, "the bundle '%s' is not an absolute path", bundle ? bundle : "");
	struct capsule_oci_spec *spec = calloc(1, sizeof(*spec));
	if (!spec)
		return cap_err(err, ENOMEM, "config.json");
	capsule_error local = { 0 };
	if (!err)
		err = &local;
	capsule_error_clear(err);
	int r;
	while (len && (json[len - 1] == '\n' || json[len - 1] == ' ' || json[len - 1] == '\t' || json[len - 1] == '\r'))
		len--;
	if (len == 0 || json[0] != '{') {
		r = cap_err_plain(err, EINVAL, "%s: not a JSON object", process_only ? "process" : "config.json");
		goto fail;
	}
	if (process_only) {
		if ((r = parse_process(spec, json, len, err)) < 0)
			goto fail;
		*out = spec;
		return 0;
	}
	if ((r = capsule_config_new(&spec->cfg, err)) < 0)
		goto fail;
	/* A spec without limits has none: runc sets no pids limit unless asked. */
	spec->cfg->pids_limit = 0;
	struct top_walk tw = { .spec = spec, .err = err, .bundle = bundle };
	if ((r = json_object_each(json, len, MAX_MEMBERS, top_member, &tw)) < 0) {
		if (!err->code)
			r = cap_err_plain(err, EINVAL, "config.json: %s", r == -E2BIG ? "too many members" : "not valid JSON");
		goto fail;
	}
	if (!tw.has_root) {
		r = bad(err, "root", "missing");
		goto fail;
	}
	/* A config without a process makes a container that cannot start (runtime-spec: start
	 * fails); capsule_oci_spec_exec_options gives no argv then. */
	if (!tw.has_linux) {
		r = bad(err, "linux", "missing (capsule runs Linux containers)");
		goto fail;
	}
	/* A container's root is the bundle's rootfs itself, written through as with runc; a vm's
	 * is that folder as the read-only layer of its own disk. */
	struct capsule_config *cfg = spec->cfg;
	if (cfg->isolation == CAPSULE_ISOLATION_CONTAINER && cfg->nlayers == 1) {
		cfg->rootfs = steal_ptr(cfg->layers[0]);
		cfg->nlayers = 0;
	} else if (cfg->rootfs_readonly) {
		r = unsupported(err, "root.readonly", "a vm's root is a disk of its own, always writable");
		goto fail;
	}
	if (cfg->isolation == CAPSULE_ISOLATION_VM && cfg->net_ns) {
		r = unsupported(err, "linux.namespaces: a network namespace path",
				"a vm's network is its guest's (podman --network none, or a runtime of the container level)");
		goto fail;
	}
	if (cfg->isolation == CAPSULE_ISOLATION_VM &&
	    (cfg->sysctls || cfg->masked_paths || cfg->readonly_paths || cfg->mount_attrs)) {
		r = unsupported(err, cfg->sysctls ? "linux.sysctl" : cfg->mount_attrs ? "noexec and atime mount options"
									   : "masked or read-only paths beyond capsule's own",
				"not yet at the vm level");
		goto fail;
	}
	*out = spec;
	return 0;
fail:
	capsule_oci_spec_free(spec);
	/* Messages quote the document's own text: it must not break the one line. */
	for (char *c = err->message; *c; c++)
		if ((unsigned char)*c < 0x20 || *c == 0x7f)
			*c = '?';
	return r < 0 ? r : -EINVAL;
}

capsule_config *capsule_oci_spec_config(capsule_oci_spec *spec)
{
	return spec ? spec->cfg : NULL;
}

void capsule_oci_spec_exec_options(const capsule_oci_spec *spec, capsule_exec_options *o)
{
	*o = (capsule_exec_options)CAPSULE_EXEC_OPTIONS_INIT;
	o->argv = (const char *const *)spec->argv;
	o->env = (const char *const *)spec->env;
	o->cwd = spec->cwd;
	o->user = spec->user;
	o->tty = spec->terminal;
	o->rows = spec->rows;
	o->cols = spec->cols;
	o->groups_set = true;
	o->groups = spec->groups;
	o->ngroups = spec->ngroups;
	o->caps_set = spec->caps_set;
	o->caps = spec->caps;
	o->caps_inheritable = spec->caps_inheritable;
	o->caps_ambient = spec->caps_ambient;
	o->umask_set = spec->umask_set;
	o->umask = spec->umask;
	o->oom_score_adj_set = spec->oom_score_adj_set;
	o->oom_score_adj = spec->oom_score_adj;
	o->rlimits = spec->rlimits;
	o->nrlimits = spec->nrlimits;
	o->seccomp_bpf = spec->seccomp_bpf;
	o->seccomp_len = spec->seccomp_len;
}

const char *capsule_oci_spec_annotations(const capsule_oci_spec *spec)
{
	return spec ? spec->annotations : NULL;
}

size_t capsule_oci_spec_hooks(const capsule_oci_spec *spec, capsule_oci_hook_kind kind, const capsule_oci_hook **out)
{
	if (!spec || (unsigned)kind >= ARRAY_SIZE(spec->hooks)) {
		*out = NULL;
		return 0;
	}
	*out = spec->hooks[kind];
	return spec->nhooks[kind];
}

void capsule_oci_spec_free(capsule_oci_spec *spec)
{
	if (!spec)
		return;
	for (size_t k = 0; k < ARRAY_SIZE(spec->hooks); k++)
		for (size_t i = 0; i < spec->nhooks[k]; i++) {
			free((char *)spec->hooks[k][i].path);
			strv_free_all((char **)spec->hooks[k][i].args);
			strv_free_all((char **)spec->hooks[k][i].env);
		}
	capsule_config_free(spec->cfg);
	strv_free_all(spec->argv);
	strv_free_all(spec->env);
	free(spec->cwd);
	free(spec->seccomp_bpf);
	free(spec->annotations);
	free(spec);
}
