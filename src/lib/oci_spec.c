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
#include "oci_spec_parse.h"
#include "proc_masks.h"
#include "util.h"


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
		return oci_bad(w->err, where, "not an object");
	capsule_oci_hook *h = &w->spec->hooks[kind][w->n++];
	w->spec->nhooks[kind] = w->n;
	char *path = NULL;
	if (json_get_string(v, n, "path", &path) < 0 || path[0] != '/') {
		free(path);
		return oci_bad(w->err, where, "path is not an absolute path");
	}
	h->path = path;
	const char *mv;
	size_t mn;
	int r;
	char what[80];
	snprintf(what, sizeof(what), "%s.args", where);
	if (json_get_member(v, n, "args", &mv, &mn) == 0 && !oci_is_null(mv, mn) &&
	    (r = oci_value_strv(mv, mn, what, (char ***)&h->args, w->err)) < 0)
		return r;
	snprintf(what, sizeof(what), "%s.env", where);
	if (json_get_member(v, n, "env", &mv, &mn) == 0 && !oci_is_null(mv, mn) &&
	    (r = oci_value_strv(mv, mn, what, (char ***)&h->env, w->err)) < 0)
		return r;
	int64_t t;
	r = json_get_int(v, n, "timeout", &t);
	if (r == 0 && (t <= 0 || t > 86400))
		return oci_bad(w->err, where, "timeout is not a number of seconds above 0");
	if (r < 0 && r != -ENOENT)
		return oci_bad(w->err, where, "timeout is not a number");
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
		if (oci_is_empty(v, n) || (strcmp(name, "createContainer") && strcmp(name, "startContainer")))
			return 0;
		return cap_err_plain(w->err, EOPNOTSUPP,
				     "config.json: hooks.%s is not supported by capsule: it runs a host program in the "
				     "container's namespaces, which a sandbox does not share with the host", name);
	}
	if (oci_is_null(v, n))
		return 0;
	char where[32];
	snprintf(where, sizeof(where), "hooks.%s", name);
	struct walk hw = { .spec = w->spec, .err = w->err, .where = where, .payload = (void *)(uintptr_t)kind,
			   .n = w->spec->nhooks[kind] };
	return oci_walk_json(true, v, n, OCI_MAX_HOOKS + 1, hook_element, &hw, where, w->err);
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
		return oci_bad(w->err, "annotations.capsule.isolation", "not a string");
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
		if ((r = oci_value_string(v, n, "ociVersion", &ver, err)) < 0)
			return r;
		if (strncmp(ver, "1.", 2))
			return cap_err_plain(err, EINVAL, "config.json: ociVersion '%.32s' is not 1.x", ver);
		return 0;
	}
	if (!strcmp(name, "process")) {
		tw->has_process = true;
		return oci_parse_process(spec, v, n, err);
	}
	if (!strcmp(name, "root")) {
		tw->has_root = true;
		return oci_parse_root(spec, v, n, tw->bundle, err);
	}
	if (!strcmp(name, "hostname")) {
		_cleanup_free_ char *h = NULL;
		if ((r = oci_value_string(v, n, "hostname", &h, err)) < 0)
			return r;
		return h[0] ? capsule_config_set_hostname(spec->cfg, h, err) : 0;
	}
	if (!strcmp(name, "mounts"))
		return oci_parse_mounts(spec, v, n, tw->bundle, err);
	if (!strcmp(name, "linux")) {
		if (oci_is_null(v, n))
			return 0;
		tw->has_linux = true;
		return oci_parse_linux(spec, v, n, err);
	}
	if (!strcmp(name, "annotations")) {
		if (oci_is_null(v, n))
			return 0;
		struct walk w = { .spec = spec, .err = err };
		if ((r = oci_walk_json(false, v, n, MAX_MEMBERS, annotations_member, &w, "annotations", err)) < 0)
			return r;
		/* A Kubernetes pod's pause container (containerd's CRI names it so) only holds the
		 * pod's namespaces: at the container level, whatever the pod's level, so that a vm
		 * pod's containers join its network namespace and take its hostname
		 * (docs/kubernetes.md). */
		_cleanup_free_ char *kind = NULL;
		if (spec->cfg->isolation == CAPSULE_ISOLATION_VM &&
		    json_get_string(v, n, "io.kubernetes.cri.container-type", &kind) == 0 && !strcmp(kind, "sandbox") &&
		    (r = capsule_config_set_isolation(spec->cfg, CAPSULE_ISOLATION_CONTAINER, err)) < 0)
			return r;
		free(spec->annotations);
		if (!(spec->annotations = strndup(v, n)))
			return cap_err(err, ENOMEM, "config.json");
		return 0;
	}
	if (!strcmp(name, "hooks")) {
		if (oci_is_null(v, n))
			return 0;
		struct walk w = { .spec = spec, .err = err };
		return oci_walk_json(false, v, n, MAX_MEMBERS, hooks_member, &w, "hooks", err);
	}
	if (!strcmp(name, "domainname") || !strcmp(name, "solaris") ||
	    !strcmp(name, "windows") || !strcmp(name, "vm") || !strcmp(name, "zos") || !strcmp(name, "freebsd")) {
		if (oci_is_empty(v, n))
			return 0;
		return cap_err_plain(err, EOPNOTSUPP, "config.json: %s is not supported by capsule", name);
	}
	return 0;
}

/* Both maps or neither; the process's ids inside them; a container's only. */
static int check_id_maps(const struct capsule_oci_spec *spec, capsule_error *err)
{
	const struct capsule_config *cfg = spec->cfg;
	if (!cfg->uid_map && !cfg->gid_map)
		return 0;
	if (!cfg->uid_map || !cfg->gid_map)
		return oci_bad(err, cfg->uid_map ? "linux.gidMappings" : "linux.uidMappings",
			       "missing (uid and gid mappings go together)");
	if (cfg->isolation == CAPSULE_ISOLATION_VM)
		return oci_unsupported(err, "linux.uidMappings", "a vm's ids are its guest's");
	unsigned uid = 0, gid = 0, usize = 0, gsize = 0;
	sscanf(spec->user, "%u:%u", &uid, &gid);
	sscanf(cfg->uid_map, "%*u %u", &usize);
	sscanf(cfg->gid_map, "%*u %u", &gsize);
	if (uid >= usize || gid >= gsize)
		return cap_err_plain(err, EINVAL, "config.json: process.user %u:%u is outside linux.uidMappings or gidMappings",
				     uid, gid);
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
		if ((r = oci_parse_process(spec, json, len, err)) < 0)
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
		r = oci_bad(err, "root", "missing");
		goto fail;
	}
	/* A config without a process makes a container that cannot start (runtime-spec: start
	 * fails); capsule_oci_spec_exec_options gives no argv then. */
	if (!tw.has_linux) {
		r = oci_bad(err, "linux", "missing (capsule runs Linux containers)");
		goto fail;
	}
	/* A container's root is the bundle's rootfs itself, written through as with runc; a vm's
	 * is that folder as the read-only layer of its own disk. */
	struct capsule_config *cfg = spec->cfg;
	if (cfg->isolation == CAPSULE_ISOLATION_CONTAINER && cfg->nlayers == 1) {
		cfg->rootfs = steal_ptr(cfg->layers[0]);
		cfg->nlayers = 0;
	} else if (cfg->rootfs_readonly) {
		r = oci_unsupported(err, "root.readonly", "a vm's root is a disk of its own, always writable");
		goto fail;
	}
	/* A vm's IPC and UTS namespaces are its guest kernel's: one by path (a pod's) is checked
	 * by the shim to be a sandbox's, the UTS one gives the guest its hostname, and the IPC one
	 * is not shared (docs/kubernetes.md). */
	if ((r = check_id_maps(spec, err)) < 0)
		goto fail;
	if (cfg->isolation == CAPSULE_ISOLATION_VM && cfg->devices) {
		r = oci_unsupported(err, "linux.devices beyond capsule's own", "a vm's devices are its guest's");
		goto fail;
	}
	/* A vm's cgroup is QEMU's, limited by its memory and cpu time alone (quota over period);
	 * the finer settings would be its guest's to make. */
	const struct cgroup_extra *x = &cfg->cg;
	const char *finer = x->cpuset_cpus ? "cpu.cpus" : x->cpuset_mems ? "cpu.mems" : x->cpu_burst_us ? "cpu.burst"
			    : x->cpu_rt_runtime_us || x->cpu_rt_period_us ? "cpu.realtimeRuntime/realtimePeriod"
			    : x->cpu_idle ? "cpu.idle" : x->memory_swap ? "memory.swap"
			    : x->memory_reservation ? "memory.reservation" : x->memory_swappiness_set ? "memory.swappiness"
			    : x->oom_kill_disable ? "memory.disableOOMKiller" : x->memory_kernel_tcp ? "memory.kernelTCP" : NULL;
	if (cfg->isolation == CAPSULE_ISOLATION_VM && finer) {
		r = cap_err_plain(err, EOPNOTSUPP, "config.json: linux.resources.%s is not supported at the vm level: "
						   "a vm's cgroup is QEMU's (memory, cpu quota and shares are)", finer);
		goto fail;
	}
	/* A vm's network namespace by path is QEMU's: the guest's NIC is libslirp's, inside it
	 * (docs/architecture.md, "A vm behind a network namespace"). */
	/* noexec and the atime options travel with a vm's mounts (VM_MOUNT's flags); a
	 * propagation has no peer to propagate to in a guest. */
	bool propagation = false;
	for (size_t i = 0; cfg->mount_attrs && i < cfg->nbinds + cfg->ntmpfs; i++)
		propagation |= config_mount_propagation(cfg, i < cfg->nbinds ? cfg->binds[i].target
									 : cfg->tmpfs[i - cfg->nbinds].target) != 0;
	if (cfg->isolation == CAPSULE_ISOLATION_VM && (cfg->sysctls || propagation)) {
		r = oci_unsupported(err, cfg->sysctls ? "linux.sysctl" : "shared and unbindable mount options",
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
	o->new_privs = spec->new_privs;
}

const char *capsule_oci_spec_annotations(const capsule_oci_spec *spec)
{
	return spec ? spec->annotations : NULL;
}

const char *capsule_oci_spec_pid_ns(const capsule_oci_spec *spec)
{
	return spec && spec->cfg ? spec->cfg->pid_ns : NULL;
}

int capsule_oci_spec_set_pid_ns(capsule_oci_spec *spec, const char *path, capsule_error *err)
{
	if (!spec || !spec->cfg || !path || path[0] != '/' || strlen(path) > 1024 || strchr(path, '\n'))
		return cap_err_plain(err, EINVAL, "a pid namespace path must be absolute");
	char *p = strdup(path);
	if (!p)
		return cap_err(err, ENOMEM, "config.json");
	free(spec->cfg->pid_ns);
	spec->cfg->pid_ns = p;
	return 0;
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

const char *capsule_oci_spec_warnings(const capsule_oci_spec *spec)
{
	return spec ? spec->warnings : NULL;
}

int oci_warn_add(struct capsule_oci_spec *spec, const char *line, capsule_error *err)
{
	size_t have = spec->warnings ? strlen(spec->warnings) : 0;
	if (have > 4096 || (spec->warnings && strstr(spec->warnings, line)))
		return 0; /* each once; a hostile spec does not grow it without bound */
	char *w = realloc(spec->warnings, have + strlen(line) + 2);
	if (!w)
		return cap_err(err, ENOMEM, "config.json");
	snprintf(w + have, strlen(line) + 2, "%s\n", line);
	spec->warnings = w;
	return 0;
}

void capsule_oci_spec_free(capsule_oci_spec *spec)
{
	if (!spec)
		return;
	for (size_t k = 0; k < ARRAY_SIZE(spec->hooks); k++)
		for (size_t i = 0; i < spec->nhooks[k]; i++) {
			free((char *)spec->hooks[k][i].path);
			oci_strv_free_all((char **)spec->hooks[k][i].args);
			oci_strv_free_all((char **)spec->hooks[k][i].env);
		}
	capsule_config_free(spec->cfg);
	oci_strv_free_all(spec->argv);
	oci_strv_free_all(spec->env);
	free(spec->cwd);
	free(spec->seccomp_bpf);
	free(spec->annotations);
	free(spec->warnings);
	free(spec);
}
