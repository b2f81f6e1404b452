/* config.json's process: the command, its user, capabilities, rlimits and terminal. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "caps.h"
#include "internal.h"
#include "json.h"
#include "oci_spec.h"
#include "oci_spec_parse.h"
#include "proc_masks.h"
#include "util.h"

static int cap_element(const char *name, const char *v, size_t n, void *payload)
{
	struct walk *w = payload;
	_cleanup_free_ char *s = NULL;
	int r = oci_value_string(v, n, w->where, &s, w->err);
	if (r < 0)
		return r;
	for (size_t i = 0; i < cap_name_count; i++) {
		if (!strncmp(s, "CAP_", 4) && !strcmp(s + 4, cap_name((unsigned)i))) {
			w->mask |= 1ull << i;
			return 0;
		}
	}
	return cap_err_plain(w->err, EINVAL, "config.json: %s: unknown capability '%.64s'", w->where, s);
}

static int cap_set(const char *v, size_t n, const char *where, uint64_t *out, capsule_error *err)
{
	if (oci_is_null(v, n)) {
		*out = 0;
		return 0;
	}
	struct walk w = { .err = err, .where = where };
	int r = oci_walk_json(true, v, n, MAX_ELEMENTS, cap_element, &w, where, err);
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
		return oci_bad(err, "process.capabilities", "not an object");
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
			return oci_bad(err, "process.capabilities", "not a valid object");
		if ((r = cap_set(sv, sn, where, &m[i], err)) < 0)
			return r;
	}
	if (m[1] != m[0] || m[2] != m[0])
		return oci_unsupported(err, "process.capabilities",
				   "its bounding, effective and permitted sets differ (capsule gives a process one set)");
	if ((m[3] | m[4]) & ~m[0])
		return oci_bad(err, "process.capabilities", "its inheritable or ambient set holds capabilities its bounding set lacks");
	spec->caps_set = true;
	spec->caps = m[0];
	spec->caps_inheritable = m[3];
	/* The kernel raises an ambient capability only if it is inheritable too. runc raises what
	 * it can and warns of the rest, and its own default spec (`runc spec`) lists ambient
	 * capabilities with no inheritable set: taken as runc takes it (docs/oci.md). */
	spec->caps_ambient = m[4] & m[3];
	/* The bundle's process sets the sandbox's own set too, as runc's container keeps its
	 * process's bounding set: no later exec gets more (the agent refuses it). */
	if (spec->cfg) {
		spec->cfg->caps_set = true;
		spec->cfg->caps = m[0];
	}
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
		return oci_bad(w->err, where, "not an object");
	_cleanup_free_ char *type = NULL;
	int r = json_get_string(v, n, "type", &type);
	if (r < 0)
		return oci_bad(w->err, where, "no type");
	const char *hv, *sv;
	size_t hn, sn;
	if (json_get_member(v, n, "hard", &hv, &hn) < 0 || json_get_member(v, n, "soft", &sv, &sn) < 0)
		return oci_bad(w->err, where, "needs both hard and soft");
	capsule_rlimit l = { .resource = -1 };
	for (size_t i = 0; i < ARRAY_SIZE(rlimit_names); i++)
		if (!strcmp(type, rlimit_names[i].name))
			l.resource = rlimit_names[i].resource;
	if (l.resource < 0)
		return cap_err_plain(w->err, EINVAL, "config.json: %s: unknown rlimit type '%.64s'", where, type);
	if ((r = oci_value_u64(hv, hn, where, &l.hard, w->err)) < 0 || (r = oci_value_u64(sv, sn, where, &l.soft, w->err)) < 0)
		return r;
	if (l.soft > l.hard)
		return oci_bad(w->err, where, "soft limit above the hard limit");
	for (size_t i = 0; i < spec->nrlimits; i++)
		if (spec->rlimits[i].resource == l.resource)
			return cap_err_plain(w->err, EINVAL, "config.json: %s: %s given twice", where, type);
	if (spec->nrlimits == OCI_MAX_RLIMITS)
		return oci_bad(w->err, where, "too many rlimits");
	spec->rlimits[spec->nrlimits++] = l;
	return 0;
}

static int gid_element(const char *name, const char *v, size_t n, void *payload)
{
	struct walk *w = payload;
	struct capsule_oci_spec *spec = w->spec;
	if (spec->ngroups == OCI_MAX_GROUPS)
		return oci_bad(w->err, "process.user.additionalGids", "more than 64 groups");
	return oci_value_uint32(v, n, "process.user.additionalGids", &spec->groups[spec->ngroups++], w->err);
}

static int process_user(struct capsule_oci_spec *spec, const char *v, size_t n, uint32_t *uid_out,
			capsule_error *err)
{
	if (v[0] != '{')
		return oci_bad(err, "process.user", "not an object");
	uint32_t uid = 0, gid = 0;
	const char *fv;
	size_t fn;
	int r;
	if (json_get_member(v, n, "uid", &fv, &fn) == 0 && (r = oci_value_uint32(fv, fn, "process.user.uid", &uid, err)) < 0)
		return r;
	if (json_get_member(v, n, "gid", &fv, &fn) == 0 && (r = oci_value_uint32(fv, fn, "process.user.gid", &gid, err)) < 0)
		return r;
	if (uid > 65535 || gid > 65535)
		return oci_unsupported(err, "process.user", "a sandbox maps ids 0 to 65535");
	if (json_get_member(v, n, "umask", &fv, &fn) == 0 && !oci_is_null(fv, fn)) {
		if ((r = oci_value_uint32(fv, fn, "process.user.umask", &spec->umask, err)) < 0)
			return r;
		if (spec->umask > 0777)
			return oci_bad(err, "process.user.umask", "beyond 0777");
		spec->umask_set = true;
	}
	if (json_get_member(v, n, "username", &fv, &fn) == 0 && !oci_is_empty(fv, fn))
		return oci_unsupported(err, "process.user.username", "it is for Windows");
	spec->ngroups = 0;
	if (json_get_member(v, n, "additionalGids", &fv, &fn) == 0 && !oci_is_null(fv, fn)) {
		struct walk w = { .spec = spec, .err = err };
		if ((r = oci_walk_json(true, fv, fn, OCI_MAX_GROUPS + 1, gid_element, &w, "process.user.additionalGids", err)) < 0)
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
		return oci_value_bool(v, n, "process.terminal", &spec->terminal, err);
	if (!strcmp(name, "consoleSize")) {
		if (oci_is_null(v, n))
			return 0;
		int64_t h, w;
		if (v[0] != '{' || json_get_int(v, n, "height", &h) < 0 || json_get_int(v, n, "width", &w) < 0 ||
		    h < 0 || w < 0 || h > 0xffff || w > 0xffff)
			return oci_bad(err, "process.consoleSize", "needs height and width from 0 to 65535");
		spec->rows = (uint16_t)h;
		spec->cols = (uint16_t)w;
		return 0;
	}
	if (!strcmp(name, "args")) {
		oci_strv_free_all(spec->argv);
		spec->argv = NULL;
		return oci_value_strv(v, n, "process.args", &spec->argv, err);
	}
	if (!strcmp(name, "env")) {
		oci_strv_free_all(spec->env);
		spec->env = NULL;
		if (oci_is_null(v, n))
			return 0;
		if ((r = oci_value_strv(v, n, "process.env", &spec->env, err)) < 0)
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
		if ((r = oci_value_string(v, n, "process.cwd", &spec->cwd, err)) < 0)
			return r;
		if (spec->cwd[0] != '/')
			return oci_bad(err, "process.cwd", "not an absolute path");
		return 0;
	}
	if (!strcmp(name, "capabilities")) {
		/* Read after the user, whom it depends on. */
		pw->caps = v;
		pw->caps_len = n;
		return 0;
	}
	if (!strcmp(name, "rlimits")) {
		if (oci_is_null(v, n))
			return 0;
		struct walk w = { .spec = spec, .err = err };
		return oci_walk_json(true, v, n, OCI_MAX_RLIMITS + 1, rlimit_element, &w, "process.rlimits", err);
	}
	if (!strcmp(name, "noNewPrivileges")) {
		bool nnp;
		if ((r = oci_value_bool(v, n, "process.noNewPrivileges", &nnp, err)) < 0)
			return r;
		spec->new_privs = !nnp;
		return 0;
	}
	if (!strcmp(name, "oomScoreAdj")) {
		int64_t adj;
		if ((r = oci_value_int(v, n, "process.oomScoreAdj", &adj, err)) < 0)
			return r;
		if (adj < -1000 || adj > 1000)
			return oci_bad(err, "process.oomScoreAdj", "not between -1000 and 1000");
		/* A sandbox's floor is 0 (no process of it may make itself the host's OOM killer's
		 * last choice), and a value below asks for more protection than the floor gives:
		 * it runs at the floor. The kubelet asks for -998 for every pod's pause container
		 * and -997 for a Guaranteed pod's containers (docs/oci.md). */
		if (adj < 0)
			adj = 0;
		spec->oom_score_adj_set = true;
		spec->oom_score_adj = (uint32_t)adj;
		return 0;
	}
	if (!strcmp(name, "apparmorProfile") || !strcmp(name, "selinuxLabel")) {
		if (oci_is_empty(v, n))
			return 0;
		return cap_err_plain(err, EOPNOTSUPP, "config.json: process.%s is not supported by capsule: no LSM profiles",
				     name);
	}
	if (!strcmp(name, "commandLine") || !strcmp(name, "ioPriority") || !strcmp(name, "scheduler") ||
	    !strcmp(name, "execCPUAffinity")) {
		if (oci_is_empty(v, n))
			return 0;
		return cap_err_plain(err, EOPNOTSUPP, "config.json: process.%s is not supported by capsule", name);
	}
	return 0; /* "user" is read first, by the caller; unknown members are skipped */
}

int oci_parse_process(struct capsule_oci_spec *spec, const char *v, size_t n, capsule_error *err)
{
	if (n == 0 || v[0] != '{')
		return oci_bad(err, "process", "not an object");
	uint32_t uid = 0;
	const char *uv;
	size_t un;
	int r = json_get_member(v, n, "user", &uv, &un);
	if (r == 0 && (r = process_user(spec, uv, un, &uid, err)) < 0)
		return r;
	if (r == -ENOENT)
		snprintf(spec->user, sizeof(spec->user), "0:0");
	/* Absent is false (runtime-spec): the process may gain privileges on exec, which in a
	 * sandbox is no more than the sandbox holds (docs/oci.md, "noNewPrivileges"). */
	spec->new_privs = true;
	struct process_walk pw = { .spec = spec, .err = err };
	if ((r = oci_walk_json(false, v, n, MAX_MEMBERS, process_member, &pw, "process", err)) < 0)
		return r;
	if (pw.caps && (r = process_capabilities(spec, pw.caps, pw.caps_len, uid, err)) < 0)
		return r;
	if (!spec->argv || !spec->argv[0] || !spec->argv[0][0])
		return oci_bad(err, "process.args", "no command");
	if (!spec->cwd)
		return oci_bad(err, "process.cwd", "missing");
	return 0;
}
