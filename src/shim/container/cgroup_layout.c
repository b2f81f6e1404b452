/* Which cgroup hierarchies are mounted, from the text of /proc/self/mountinfo and
 * /proc/self/cgroup. See cgroup_layout.h. */
#include "cgroup_layout.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "util.h"

const char *const cg_ctrl_name[CG_N_CTRL] = { "memory", "pids", "cpu", "cpuset" };

/* A mountinfo line has 6 fields, optional ones, "-", then 3; more than this many optional
 * fields is not a line the kernel wrote. */
#define MI_MAX_FIELDS 64

struct span {
	const char *s;
	size_t n;
};

static bool is_sep(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == ',';
}

unsigned cg_parse_ctrls(const char *s)
{
	unsigned mask = 0;
	while (*s) {
		while (is_sep(*s))
			s++;
		const char *start = s;
		while (*s && !is_sep(*s))
			s++;
		size_t len = (size_t)(s - start);
		for (int c = 0; c < CG_N_CTRL; c++)
			if (len == strlen(cg_ctrl_name[c]) && memcmp(start, cg_ctrl_name[c], len) == 0)
				mask |= CG_BIT(c);
	}
	return mask;
}

static bool span_is(struct span t, const char *s)
{
	return t.n == strlen(s) && memcmp(t.s, s, t.n) == 0;
}

static bool all_digits(const char *s, size_t n)
{
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] < '0' || s[i] > '9')
			return false;
	return true;
}

/* "MAJOR:MINOR". */
static bool is_dev(struct span t)
{
	const char *colon = memchr(t.s, ':', t.n);
	return colon && all_digits(t.s, (size_t)(colon - t.s)) &&
	       all_digits(colon + 1, t.n - (size_t)(colon - t.s) - 1);
}

/* T for an error message: quoted as far as 40 bytes, anything unprintable as \xNN, so that a
 * garbage line still gives one printable line. */
static void describe(struct span t, char *out, size_t size)
{
	size_t w = 0;
	for (size_t i = 0; i < t.n && i < 40;) {
		char c[16];
		size_t len;
		char_describe(t.s + i, c, &len);
		if (len > t.n - i) { /* a UTF-8 lead byte cut by the span's end */
			snprintf(c, sizeof(c), "\\x%02x", (unsigned char)t.s[i]);
			len = 1;
		}
		size_t cl = strlen(c);
		if (w + cl + 4 >= size)
			break;
		memcpy(out + w, c, cl);
		w += cl;
		i += len;
	}
	if (t.n > 40 && w + 4 < size) {
		memcpy(out + w, "...", 3);
		w += 3;
	}
	out[w] = '\0';
}

/* Undo mountinfo's octal escapes (\040 for a space, ...) from T into OUT; false when the
 * result does not fit in SIZE bytes. */
static bool unescape(struct span t, char *out, size_t size)
{
	size_t w = 0;
	for (size_t r = 0; r < t.n;) {
		char c = t.s[r];
		if (c == '\\' && t.n - r >= 4 && t.s[r + 1] >= '0' && t.s[r + 1] <= '3' && t.s[r + 2] >= '0' &&
		    t.s[r + 2] <= '7' && t.s[r + 3] >= '0' && t.s[r + 3] <= '7') {
			c = (char)(((t.s[r + 1] - '0') << 6) | ((t.s[r + 2] - '0') << 3) | (t.s[r + 3] - '0'));
			r += 4;
		} else {
			r++;
		}
		if (w + 1 >= size)
			return false;
		out[w++] = c;
	}
	out[w] = '\0';
	return true;
}

static bool under(const char *mp, const char *root)
{
	size_t n = strlen(root);
	return strncmp(mp, root, n) == 0 && (mp[n] == '/' || mp[n] == '\0');
}

/* Split LINE (N bytes, no newline) at single spaces: the kernel separates fields with exactly
 * one and escapes spaces inside them, so an empty field is an empty value (a source of ""). */
static size_t split_fields(const char *line, size_t n, struct span *f, size_t max)
{
	size_t k = 0;
	const char *p = line, *end = line + n;
	for (;;) {
		const char *sp = memchr(p, ' ', (size_t)(end - p));
		const char *stop = sp ? sp : end;
		if (k == max)
			return max + 1;
		f[k++] = (struct span){ p, (size_t)(stop - p) };
		if (!sp)
			return k;
		p = sp + 1;
	}
}

struct mi_state {
	const char *sys_root;
	int v2_rank; /* 3: the cgroup root itself, 2: below it, 1: elsewhere */
	bool any_v1, any_v2;
	char top_at_root[32]; /* filesystem type of the last mount on the cgroup root */
};

static int mi_err(capsule_error *err, unsigned line, const char *what, struct span t)
{
	char d[200];
	describe(t, d, sizeof(d));
	return cap_err_plain(err, EINVAL, "/proc/self/mountinfo line %u: %s '%s'", line, what, d);
}

/* One line of mountinfo: "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE
 * SOURCE SUPEROPTIONS" (proc(5)). */
static int mi_line(struct cgroup_layout *l, struct mi_state *st, unsigned no, const char *line, size_t n,
		   capsule_error *err)
{
	struct span f[MI_MAX_FIELDS];
	size_t k = split_fields(line, n, f, MI_MAX_FIELDS);
	struct span whole = { line, n };
	if (k > MI_MAX_FIELDS)
		return mi_err(err, no, "more fields than a mount has:", whole);
	size_t dash = 0;
	while (dash < k && !span_is(f[dash], "-"))
		dash++;
	if (dash == k)
		return mi_err(err, no, "no ' - ' separator in", whole);
	if (dash < 6)
		return cap_err_plain(err, EINVAL,
				     "/proc/self/mountinfo line %u: %zu fields before ' - ', expected at least 6", no, dash);
	if (k - dash - 1 < 3)
		return cap_err_plain(err, EINVAL,
				     "/proc/self/mountinfo line %u: %zu fields after ' - ', expected filesystem type, "
				     "source and options",
				     no, k - dash - 1);
	for (size_t i = 0; i < k; i++)
		if (f[i].n == 0 && i != dash + 2) /* only the source may be empty */
			return cap_err_plain(err, EINVAL, "/proc/self/mountinfo line %u: field %zu is empty", no, i + 1);
	if (!all_digits(f[0].s, f[0].n))
		return mi_err(err, no, "mount id is not a number:", f[0]);
	if (!all_digits(f[1].s, f[1].n))
		return mi_err(err, no, "parent id is not a number:", f[1]);
	if (!is_dev(f[2]))
		return mi_err(err, no, "device is not MAJOR:MINOR:", f[2]);
	if (f[4].s[0] != '/')
		return mi_err(err, no, "mount point is not absolute:", f[4]);

	struct span fstype = f[dash + 1], super = f[dash + 3];
	bool v1 = span_is(fstype, "cgroup"), v2 = span_is(fstype, "cgroup2");
	char mp[PATH_MAX];
	bool mp_fits = unescape(f[4], mp, sizeof(mp));
	if (mp_fits && strcmp(mp, st->sys_root) == 0)
		snprintf(st->top_at_root, sizeof(st->top_at_root), "%.*s", (int)(fstype.n < 31 ? fstype.n : 31),
			 fstype.s);
	if (!v1 && !v2)
		return 0;
	/* A cgroup mount whose point or root we cannot hold is one we could not use either. */
	if (!mp_fits)
		return mi_err(err, no, "cgroup mount point longer than PATH_MAX:", f[4]);
	char root[PATH_MAX], opts[4096];
	if (!unescape(f[3], root, sizeof(root)))
		return mi_err(err, no, "cgroup mount root longer than PATH_MAX:", f[3]);
	if (!unescape(super, opts, sizeof(opts)))
		return mi_err(err, no, "cgroup mount options longer than 4095 bytes:", super);

	if (v2) {
		st->any_v2 = true;
		int rank = strcmp(mp, st->sys_root) == 0 ? 3 : under(mp, st->sys_root) ? 2 : 1;
		/* Equal rank: a later mount on the same point hides the earlier one. */
		if (rank > st->v2_rank || (rank == st->v2_rank && strcmp(mp, l->v2_mount) == 0)) {
			st->v2_rank = rank;
			snprintf(l->v2_mount, sizeof(l->v2_mount), "%s", mp);
			snprintf(l->v2_root, sizeof(l->v2_root), "%s", root);
			l->v2_nsdelegate = false;
			for (char *save = NULL, *o = strtok_r(opts, ",", &save); o; o = strtok_r(NULL, ",", &save))
				l->v2_nsdelegate |= strcmp(o, "nsdelegate") == 0;
		}
		return 0;
	}
	st->any_v1 = true;
	unsigned m = cg_parse_ctrls(opts);
	for (int c = 0; c < CG_N_CTRL; c++) {
		if (!(m & CG_BIT(c)))
			continue;
		/* Prefer the mount below the cgroup root; otherwise the first one. */
		if (!l->v1[c][0] || (under(mp, st->sys_root) && !under(l->v1[c], st->sys_root)))
			snprintf(l->v1[c], sizeof(l->v1[c]), "%s", mp);
	}
	return 0;
}

/* One line of /proc/self/cgroup: "HIERARCHY-ID:CONTROLLERS:PATH" (cgroups(7)); the v2
 * hierarchy's is "0::PATH". */
static int cg_line(struct cgroup_layout *l, unsigned no, const char *line, size_t n, capsule_error *err)
{
	struct span whole = { line, n };
	const char *c1 = memchr(line, ':', n);
	const char *c2 = c1 ? memchr(c1 + 1, ':', n - (size_t)(c1 + 1 - line)) : NULL;
	char d[200];
	describe(whole, d, sizeof(d));
	if (!c2)
		return cap_err_plain(err, EINVAL, "/proc/self/cgroup line %u: not ID:CONTROLLERS:PATH: '%s'", no, d);
	if (!all_digits(line, (size_t)(c1 - line)))
		return cap_err_plain(err, EINVAL, "/proc/self/cgroup line %u: hierarchy id is not a number: '%s'", no, d);
	const char *path = c2 + 1;
	size_t plen = n - (size_t)(path - line);
	if (plen == 0 || path[0] != '/')
		return cap_err_plain(err, EINVAL, "/proc/self/cgroup line %u: cgroup path is not absolute: '%s'", no, d);
	bool v2 = c1 - line == 1 && line[0] == '0' && c2 == c1 + 1;
	if (!v2 || l->self_v2[0])
		return 0;
	if (plen >= sizeof(l->self_v2))
		return cap_err_plain(err, EINVAL, "/proc/self/cgroup line %u: cgroup path longer than PATH_MAX", no);
	memcpy(l->self_v2, path, plen);
	l->self_v2[plen] = '\0';
	return 0;
}

int cgroup_layout_parse(struct cgroup_layout *out, const char *sys_root, const char *mountinfo,
			const char *self_cgroup, capsule_error *err)
{
	memset(out, 0, sizeof(*out));
	if (!mountinfo || !mountinfo[strspn(mountinfo, "\n")])
		return cap_err_plain(err, EINVAL, "/proc/self/mountinfo is empty");
	struct mi_state st = { .sys_root = sys_root };
	unsigned no = 0;
	for (const char *line = mountinfo; *line; no++) {
		size_t n = strcspn(line, "\n");
		int r = n ? mi_line(out, &st, no + 1, line, n, err) : 0;
		if (r < 0)
			return r;
		line += n + (line[n] == '\n');
	}
	no = 0;
	for (const char *line = self_cgroup; line && *line; no++) {
		size_t n = strcspn(line, "\n");
		int r = n ? cg_line(out, no + 1, line, n, err) : 0;
		if (r < 0)
			return r;
		line += n + (line[n] == '\n');
	}
	if (strcmp(st.top_at_root, "cgroup2") == 0)
		out->mode = CGROUP_MODE_UNIFIED;
	else if (st.any_v1)
		out->mode = st.any_v2 ? CGROUP_MODE_HYBRID : CGROUP_MODE_V1;
	else
		out->mode = st.any_v2 ? CGROUP_MODE_UNIFIED : CGROUP_MODE_NONE;
	return 0;
}

bool cgroup_below_root(const char *path, const char *root, char *out, size_t size)
{
	if (!path[0])
		return false;
	const char *p = path;
	if (strcmp(root, "/") != 0) {
		size_t rl = strlen(root);
		if (strncmp(p, root, rl) != 0 || (p[rl] != '/' && p[rl] != '\0'))
			return false;
		p += rl;
	}
	return snprintf(out, size, "%s", p[0] ? p : "/") < (int)size;
}
