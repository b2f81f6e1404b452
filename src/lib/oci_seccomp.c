/* linux.seccomp of config.json compiled to BPF with libseccomp, as runc compiles it. The
 * agent installs it above capsule's own filter (proto.h, CP_T_EXEC_SECCOMP), so the spec can
 * narrow what a sandbox may call, never widen it. */
#include <errno.h>
#include <seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "json.h"
#include "oci_spec.h"
#include "util.h"

#define MAX_SYSCALL_RULES 1024
#define MAX_NAMES 1024

struct sc {
	scmp_filter_ctx ctx;
	uint32_t default_action;
	capsule_error *err;
	size_t n;
	/* One rule's. */
	uint32_t action;
	struct scmp_arg_cmp args[6];
	unsigned nargs;
	char where[48];
};

static int action_of(const char *name, bool has_errno, uint32_t errno_ret, uint32_t *out)
{
	uint32_t e = has_errno ? errno_ret : EPERM;
	if (!strcmp(name, "SCMP_ACT_ALLOW"))
		*out = SCMP_ACT_ALLOW;
	else if (!strcmp(name, "SCMP_ACT_ERRNO"))
		*out = SCMP_ACT_ERRNO(e);
	else if (!strcmp(name, "SCMP_ACT_KILL") || !strcmp(name, "SCMP_ACT_KILL_THREAD"))
		*out = SCMP_ACT_KILL_THREAD;
	else if (!strcmp(name, "SCMP_ACT_KILL_PROCESS"))
		*out = SCMP_ACT_KILL_PROCESS;
	else if (!strcmp(name, "SCMP_ACT_TRAP"))
		*out = SCMP_ACT_TRAP;
	else if (!strcmp(name, "SCMP_ACT_TRACE"))
		*out = SCMP_ACT_TRACE(has_errno ? errno_ret : 0);
	else if (!strcmp(name, "SCMP_ACT_LOG"))
		*out = SCMP_ACT_LOG;
	else
		return -EINVAL;
	return 0;
}

/* ACTION (and errnoRet) of the object V, at WHERE. */
static int read_action(const char *v, size_t n, const char *key, const char *where, uint32_t *out, capsule_error *err)
{
	_cleanup_free_ char *name = NULL;
	if (json_get_string(v, n, key, &name) < 0)
		return cap_err_plain(err, EINVAL, "config.json: %s: no %s", where, key);
	int64_t e = 0;
	int r = json_get_int(v, n, !strcmp(key, "defaultAction") ? "defaultErrnoRet" : "errnoRet", &e);
	if (r < 0 && r != -ENOENT)
		return cap_err_plain(err, EINVAL, "config.json: %s: errnoRet is not an integer", where);
	if (e < 0 || e > 4095)
		return cap_err_plain(err, EINVAL, "config.json: %s: errnoRet out of range", where);
	if (!strcmp(name, "SCMP_ACT_NOTIFY"))
		return cap_err_plain(err, EOPNOTSUPP,
				     "config.json: %s: SCMP_ACT_NOTIFY is not supported by capsule (no seccomp agent)", where);
	if (action_of(name, r == 0, (uint32_t)e, out) < 0)
		return cap_err_plain(err, EINVAL, "config.json: %s: unknown action '%.40s'", where, name);
	return 0;
}

static int arg_element(const char *name, const char *v, size_t n, void *payload)
{
	struct sc *s = payload;
	if (s->nargs == 6)
		return cap_err_plain(s->err, EINVAL, "config.json: %s: more than 6 args", s->where);
	int64_t index, value = 0, value2 = 0;
	_cleanup_free_ char *op = NULL;
	if (n == 0 || v[0] != '{' || json_get_int(v, n, "index", &index) < 0 || index < 0 || index > 5 ||
	    json_get_string(v, n, "op", &op) < 0)
		return cap_err_plain(s->err, EINVAL, "config.json: %s: an arg needs an index from 0 to 5 and an op", s->where);
	/* Values are u64 in the spec; json_get_int takes what fits in int64_t, which is every
	 * value a syscall argument comparison is written with in practice. */
	int r = json_get_int(v, n, "value", &value);
	if (r < 0 && r != -ENOENT)
		return cap_err_plain(s->err, EINVAL, "config.json: %s: an arg's value is not an integer", s->where);
	r = json_get_int(v, n, "valueTwo", &value2);
	if (r < 0 && r != -ENOENT)
		return cap_err_plain(s->err, EINVAL, "config.json: %s: an arg's valueTwo is not an integer", s->where);
	static const struct {
		const char *name;
		enum scmp_compare op;
	} ops[] = {
		{ "SCMP_CMP_NE", SCMP_CMP_NE }, { "SCMP_CMP_LT", SCMP_CMP_LT }, { "SCMP_CMP_LE", SCMP_CMP_LE },
		{ "SCMP_CMP_EQ", SCMP_CMP_EQ }, { "SCMP_CMP_GE", SCMP_CMP_GE }, { "SCMP_CMP_GT", SCMP_CMP_GT },
		{ "SCMP_CMP_MASKED_EQ", SCMP_CMP_MASKED_EQ },
	};
	for (size_t i = 0; i < ARRAY_SIZE(ops); i++) {
		if (!strcmp(op, ops[i].name)) {
			s->args[s->nargs++] = (struct scmp_arg_cmp){ .arg = (unsigned)index, .op = ops[i].op,
								     .datum_a = (scmp_datum_t)value,
								     .datum_b = (scmp_datum_t)value2 };
			return 0;
		}
	}
	return cap_err_plain(s->err, EINVAL, "config.json: %s: unknown op '%.32s'", s->where, op);
}

static int name_element(const char *name, const char *v, size_t n, void *payload)
{
	struct sc *s = payload;
	_cleanup_free_ char *sys = NULL;
	if (n == 0 || v[0] != '"' || json_string_value(v, n, &sys) < 0)
		return cap_err_plain(s->err, EINVAL, "config.json: %s: a name is not a string", s->where);
	int nr = seccomp_syscall_resolve_name(sys);
	/* A name this libseccomp does not know is skipped, as runc skips it: no kernel it can
	 * build a filter for has that call. */
	if (nr == __NR_SCMP_ERROR)
		return 0;
	int r = seccomp_rule_add_array(s->ctx, s->action, nr, s->nargs, s->args);
	/* A call the other filter rules already decide the same way (or that is not on this
	 * architecture) is not an error, as with runc. */
	if (r < 0 && r != -EEXIST && r != -EDOM)
		return cap_err_plain(s->err, -r, "config.json: %s: rule for '%.40s': %s", s->where, sys, strerror(-r));
	return 0;
}

static int syscall_element(const char *name, const char *v, size_t n, void *payload)
{
	struct sc *s = payload;
	snprintf(s->where, sizeof(s->where), "linux.seccomp.syscalls[%zu]", s->n++);
	if (n == 0 || v[0] != '{')
		return cap_err_plain(s->err, EINVAL, "config.json: %s: not an object", s->where);
	int r = read_action(v, n, "action", s->where, &s->action, s->err);
	if (r < 0)
		return r;
	s->nargs = 0;
	const char *av;
	size_t an;
	if (json_get_member(v, n, "args", &av, &an) == 0 && !(an == 4 && !memcmp(av, "null", 4))) {
		if (av[0] != '[')
			return cap_err_plain(s->err, EINVAL, "config.json: %s: args is not an array", s->where);
		if ((r = json_array_each(av, an, 7, arg_element, s)) < 0)
			return s->err->code ? r : cap_err_plain(s->err, EINVAL, "config.json: %s: bad args", s->where);
	}
	/* runc leaves out rules that say what the default says. */
	if (s->action == s->default_action)
		return 0;
	if (json_get_member(v, n, "names", &av, &an) < 0 || av[0] != '[')
		return cap_err_plain(s->err, EINVAL, "config.json: %s: no names", s->where);
	if ((r = json_array_each(av, an, MAX_NAMES, name_element, s)) < 0)
		return s->err->code ? r : cap_err_plain(s->err, EINVAL, "config.json: %s: bad names", s->where);
	return 0;
}

static int arch_element(const char *name, const char *v, size_t n, void *payload)
{
	struct sc *s = payload;
	_cleanup_free_ char *arch = NULL;
	if (n == 0 || v[0] != '"' || json_string_value(v, n, &arch) < 0 || strncmp(arch, "SCMP_ARCH_", 10))
		return cap_err_plain(s->err, EINVAL, "config.json: linux.seccomp.architectures: not SCMP_ARCH_ names");
	char lower[32];
	size_t i = 0;
	for (const char *p = arch + 10; *p && i + 1 < sizeof(lower); p++)
		lower[i++] = (char)(*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p);
	lower[i] = 0;
	uint32_t token = seccomp_arch_resolve_name(lower);
	if (!token)
		return cap_err_plain(s->err, EINVAL, "config.json: linux.seccomp.architectures: unknown '%.32s'", arch);
	int r = seccomp_arch_add(s->ctx, token);
	if (r < 0 && r != -EEXIST)
		return cap_err_plain(s->err, -r, "config.json: linux.seccomp.architectures: %.32s: %s", arch, strerror(-r));
	return 0;
}

int oci_seccomp_compile(const char *json, size_t len, uint8_t **bpf, size_t *bpf_len, capsule_error *err)
{
	if (len == 0 || json[0] != '{')
		return cap_err_plain(err, EINVAL, "config.json: linux.seccomp: not an object");
	struct sc s = { .err = err };
	int r = read_action(json, len, "defaultAction", "linux.seccomp", &s.default_action, err);
	if (r < 0)
		return r;
	const char *v;
	size_t n;
	static const char *const refused[] = { "flags", "listenerPath", "listenerMetadata" };
	for (size_t i = 0; i < ARRAY_SIZE(refused); i++) {
		if (json_get_member(json, len, refused[i], &v, &n) == 0 && !(n == 4 && !memcmp(v, "null", 4)) &&
		    !(n >= 2 && (v[0] == '[' || v[0] == '"') && v[1] == (v[0] == '[' ? ']' : '"')))
			return cap_err_plain(err, EOPNOTSUPP, "config.json: linux.seccomp.%s is not supported by capsule",
					     refused[i]);
	}
	if (!(s.ctx = seccomp_init(s.default_action)))
		return cap_err_plain(err, EINVAL, "config.json: linux.seccomp: libseccomp refused the default action");
	/* The agent sets no_new_privs itself, and installs the filter after capsule's own. */
	seccomp_attr_set(s.ctx, SCMP_FLTATR_CTL_NNP, 0);
	if (json_get_member(json, len, "architectures", &v, &n) == 0 && !(n == 4 && !memcmp(v, "null", 4))) {
		if (v[0] != '[' || (r = json_array_each(v, n, 32, arch_element, &s)) < 0) {
			r = err->code ? r : cap_err_plain(err, EINVAL, "config.json: linux.seccomp.architectures: not an array");
			goto out;
		}
	}
	if (json_get_member(json, len, "syscalls", &v, &n) == 0 && !(n == 4 && !memcmp(v, "null", 4))) {
		if (v[0] != '[' || (r = json_array_each(v, n, MAX_SYSCALL_RULES, syscall_element, &s)) < 0) {
			r = err->code ? r : cap_err_plain(err, EINVAL, "config.json: linux.seccomp.syscalls: not an array");
			goto out;
		}
	}
	int fd = memfd_create("capsule-oci-seccomp", MFD_CLOEXEC);
	if (fd < 0) {
		r = cap_err(err, errno, "seccomp: memfd");
		goto out;
	}
	if ((r = seccomp_export_bpf(s.ctx, fd)) < 0) {
		close(fd);
		r = cap_err_plain(err, -r, "config.json: linux.seccomp: libseccomp could not build the filter: %s",
				  strerror(-r));
		goto out;
	}
	off_t size = lseek(fd, 0, SEEK_END);
	if (size <= 0 || size % 8 || size > 64 * 1024) {
		close(fd);
		r = cap_err_plain(err, E2BIG, "config.json: linux.seccomp: the filter is %lld bytes (at most 64 KiB)",
				  (long long)size);
		goto out;
	}
	uint8_t *buf = malloc((size_t)size);
	if (!buf || pread(fd, buf, (size_t)size, 0) != size) {
		free(buf);
		close(fd);
		r = cap_err(err, EIO, "seccomp: reading the filter back");
		goto out;
	}
	close(fd);
	free(*bpf);
	*bpf = buf;
	*bpf_len = (size_t)size;
	r = 0;
out:
	seccomp_release(s.ctx);
	return r;
}
