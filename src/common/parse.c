/* Parsers for user-typed values; see parse.h. Everything here is pure string work (no NSS,
 * no I/O) so it can run in the static agent and under the fuzzers. */
#include "parse.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define SIZE_LIMIT (UINT64_C(1) << 62)
#define CPUS_MAX 1024
#define NAME_MAX_LEN 63
#define USER_MAX_LEN 256
#define ID_MAX UINT64_C(4294967294)

/* Bytes of the character at S, for "character 'X' is not allowed": a whole UTF-8 sequence
 * when there is one, so "é" is shown as itself rather than as half of itself. */
static size_t char_len(const char *s)
{
	size_t l = utf8_seq_len((const unsigned char *)s, strnlen(s, 4));
	return l ? l : 1;
}

/* Input as it may appear inside '...' in a one-line message: control bytes and bytes that are
 * not valid UTF-8 become \xNN, so a hostile or mistyped value can neither break the line nor
 * make the message invalid UTF-8 (it may end up in JSON); long values are cut so the reason
 * after them still fits in capsule_error.message. Returned by value so it can be used inline as
 * a printf argument (the temporary lives until the end of the full expression). */
struct quoted {
	char s[160];
};

static struct quoted quote_n(const char *s, size_t n)
{
	struct quoted q;
	size_t o = 0, i = 0;
	const size_t room = sizeof(q.s) - 4; /* "..." + NUL */

	if (!s)
		s = "";
	n = strnlen(s, n);
	while (i < n) {
		const unsigned char *c = (const unsigned char *)s + i;
		size_t l = utf8_seq_len(c, n - i);
		bool escape = l == 0 || *c < 0x20 || *c == 0x7f;
		size_t need = escape ? 4 : l;

		if (o + need > room) {
			memcpy(q.s + o, "...", 3);
			o += 3;
			break;
		}
		if (escape) {
			o += (size_t)snprintf(q.s + o, 5, "\\x%02x", *c);
			i++;
		} else {
			memcpy(q.s + o, c, l);
			o += l;
			i += l;
		}
	}
	q.s[o] = '\0';
	return q;
}

static struct quoted quote(const char *s)
{
	return quote_n(s, SIZE_MAX);
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool is_alnum(char c)
{
	return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static char lower(char c)
{
	return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

/* A decimal number "D+[.D+]" (or ".D+" when LEADING_DOT) split into its parts. The integer part
 * saturates at SAT (callers only need to know it is "too large"); at most MAX_FRAC fraction
 * digits are kept, the rest are only checked for being zero, which is what callers that allow
 * a limited precision need. */
struct decimal {
	uint64_t whole;
	bool saturated;
	uint64_t frac;        /* the kept fraction digits as an integer */
	unsigned frac_digits; /* how many were kept */
	bool frac_rest_nonzero;
	size_t len; /* bytes consumed */
};

enum decimal_status { DEC_OK, DEC_NO_DIGITS, DEC_DOT_NO_DIGITS };

static enum decimal_status scan_decimal(const char *s, uint64_t sat, unsigned max_frac, bool leading_dot,
					struct decimal *d)
{
	size_t i = 0;

	memset(d, 0, sizeof(*d));
	if (!is_digit(s[0]) && !(leading_dot && s[0] == '.' && is_digit(s[1])))
		return DEC_NO_DIGITS;
	for (; is_digit(s[i]); i++) {
		unsigned dig = (unsigned)(s[i] - '0');
		if (d->saturated || d->whole > (sat - dig) / 10) {
			d->saturated = true;
			d->whole = sat;
		} else {
			d->whole = d->whole * 10 + dig;
		}
	}
	if (s[i] == '.') {
		i++;
		if (!is_digit(s[i]))
			return DEC_DOT_NO_DIGITS;
		for (; is_digit(s[i]); i++) {
			if (d->frac_digits < max_frac) {
				d->frac = d->frac * 10 + (uint64_t)(s[i] - '0');
				d->frac_digits++;
			} else if (s[i] != '0') {
				d->frac_rest_nonzero = true;
			}
		}
	}
	d->len = i;
	return DEC_OK;
}

static uint64_t pow10_u64(unsigned n)
{
	uint64_t p = 1;
	while (n--)
		p *= 10;
	return p;
}

/* ---- sizes ------------------------------------------------------------------------------ */

/* The unit part of a size: "", "b", or [kmgt] + optional "i" + optional "b", any case: docker's
 * go-units grammar without its peta unit, which no sandbox needs and which would only widen
 * what a typo can still parse as. */
static bool size_unit(const char *u, uint64_t *mult)
{
	static const char units[] = "kmgt";
	const char *p;

	if (u[0] == '\0') {
		*mult = 1;
		return true;
	}
	if (lower(u[0]) == 'b' && u[1] == '\0') {
		*mult = 1;
		return true;
	}
	p = strchr(units, lower(u[0])); /* u[0] is not NUL here, so this never matches the terminator */
	if (!p)
		return false;
	*mult = UINT64_C(1) << (10 * (p - units + 1));
	u++;
	if (lower(*u) == 'i')
		u++;
	if (lower(*u) == 'b')
		u++;
	return *u == '\0';
}

int parse_size(const char *s, uint64_t *out, capsule_error *err)
{
	struct decimal d;
	enum decimal_status st;
	const char *unit;
	uint64_t mult;

	if (!s || !*s)
		return cap_err_plain(err, EINVAL, "invalid size '': empty value");
	if (s[0] == '-')
		return cap_err_plain(err, EINVAL, "invalid size '%s': must not be negative", quote(s).s);
	st = scan_decimal(s, SIZE_LIMIT + 1, 18, false, &d);
	if (st == DEC_NO_DIGITS)
		return cap_err_plain(err, EINVAL, "invalid size '%s': expected a number with an optional unit, e.g. '512m'",
				     quote(s).s);
	if (st == DEC_DOT_NO_DIGITS)
		return cap_err_plain(err, EINVAL, "invalid size '%s': expected digits after '.'", quote(s).s);
	unit = s + d.len;
	if (unit[0] == ' ' && unit[1] != '\0')
		unit++;
	if (!size_unit(unit, &mult))
		return cap_err_plain(err, EINVAL, "invalid size '%s': unknown unit '%s' (use b, k, m, g or t)",
				     quote(s).s, quote(unit).s);

	/* 128-bit so "99999999999999999999G" cannot wrap into something that looks small. */
	unsigned __int128 v = (unsigned __int128)d.whole * mult;
	v += (unsigned __int128)d.frac * mult / pow10_u64(d.frac_digits);
	if (d.saturated || v > SIZE_LIMIT)
		return cap_err_plain(err, EINVAL, "invalid size '%s': too large (at most %" PRIu64 " bytes)",
				     quote(s).s, SIZE_LIMIT);
	*out = (uint64_t)v;
	return 0;
}

/* ---- cpus ------------------------------------------------------------------------------- */

int parse_cpus(const char *s, uint32_t *milli, capsule_error *err)
{
	struct decimal d;
	enum decimal_status st;
	uint64_t m;

	if (!s || !*s)
		return cap_err_plain(err, EINVAL, "invalid cpus '': empty value");
	if (s[0] == '-')
		return cap_err_plain(err, EINVAL, "invalid cpus '%s': must be greater than 0", quote(s).s);
	st = scan_decimal(s, CPUS_MAX + 1, 3, true, &d);
	if (st == DEC_NO_DIGITS)
		return cap_err_plain(err, EINVAL, "invalid cpus '%s': expected a number such as '1.5'", quote(s).s);
	if (st == DEC_DOT_NO_DIGITS)
		return cap_err_plain(err, EINVAL, "invalid cpus '%s': expected digits after '.'", quote(s).s);
	if (s[d.len] != '\0')
		return cap_err_plain(err, EINVAL, "invalid cpus '%s': unexpected '%s' after the number", quote(s).s,
				     quote(s + d.len).s);
	if (d.frac_rest_nonzero)
		return cap_err_plain(err, EINVAL, "invalid cpus '%s': at most 3 decimal places", quote(s).s);
	m = d.whole * 1000 + d.frac * pow10_u64(3 - d.frac_digits);
	if (m == 0)
		return cap_err_plain(err, EINVAL, "invalid cpus '%s': must be greater than 0", quote(s).s);
	if (d.saturated || m > CPUS_MAX * 1000)
		return cap_err_plain(err, EINVAL, "invalid cpus '%s': at most %d CPUs", quote(s).s, CPUS_MAX);
	*milli = (uint32_t)m;
	return 0;
}

/* ---- durations -------------------------------------------------------------------------- */

static bool duration_unit(const char *u, size_t n, uint64_t *unit_ms)
{
	if (n == 2 && memcmp(u, "ms", 2) == 0)
		*unit_ms = 1;
	else if (n == 1 && u[0] == 's')
		*unit_ms = 1000;
	else if (n == 1 && u[0] == 'm')
		*unit_ms = 60 * 1000;
	else if (n == 1 && u[0] == 'h')
		*unit_ms = 3600 * 1000;
	else
		return false;
	return true;
}

int parse_duration_ms(const char *s, uint32_t *ms, capsule_error *err)
{
	const char *p;
	uint64_t total = 0;

	if (!s || !*s)
		return cap_err_plain(err, EINVAL, "invalid duration '': empty value");
	if (s[0] == '-')
		return cap_err_plain(err, EINVAL, "invalid duration '%s': must not be negative", quote(s).s);

	for (p = s; *p;) {
		struct decimal d;
		enum decimal_status st;
		const char *u;
		size_t un;
		uint64_t unit_ms;

		/* The whole part saturates just above the limit in seconds; any unit then overflows
		 * the 32-bit result, so the 64-bit sums below cannot wrap. */
		st = scan_decimal(p, (uint64_t)UINT32_MAX + 1, 9, true, &d);
		if (st == DEC_NO_DIGITS)
			return cap_err_plain(err, EINVAL, "invalid duration '%s': expected a number at '%s', e.g. '30s'",
					     quote(s).s, quote(p).s);
		if (st == DEC_DOT_NO_DIGITS)
			return cap_err_plain(err, EINVAL, "invalid duration '%s': expected digits after '.'", quote(s).s);
		u = p + d.len;
		for (un = 0; u[un] && !is_digit(u[un]) && u[un] != '.'; un++)
			;
		if (un == 0) {
			/* A bare number means seconds, but only on its own: in "1m30" the 30 is a typo
			 * waiting to happen (Go's time.ParseDuration refuses it too). */
			if (p != s || u[0] != '\0')
				return cap_err_plain(err, EINVAL, "invalid duration '%s': missing unit after '%s' (use ms, s, m or h)",
						     quote(s).s, quote_n(p, d.len).s);
			unit_ms = 1000;
		} else if (!duration_unit(u, un, &unit_ms)) {
			return cap_err_plain(err, EINVAL, "invalid duration '%s': unknown unit '%s' (use ms, s, m or h)",
					     quote(s).s, quote_n(u, un).s);
		}
		total += d.whole * unit_ms + d.frac * unit_ms / pow10_u64(d.frac_digits);
		if (d.saturated || total > UINT32_MAX)
			return cap_err_plain(err, EINVAL, "invalid duration '%s': too long (at most %" PRIu32 " ms, about 49 days)",
					     quote(s).s, UINT32_MAX);
		p = u + un;
	}
	*ms = (uint32_t)total;
	return 0;
}

/* ---- integers and names ----------------------------------------------------------------- */

int parse_uint(const char *s, const char *what, uint64_t min, uint64_t max, uint64_t *out, capsule_error *err)
{
	uint64_t v = 0;
	bool overflow = false;

	if (!what)
		what = "number";
	if (!s || !*s)
		return cap_err_plain(err, EINVAL, "invalid %s '': empty value", what);
	for (const char *p = s; *p; p++) {
		if (!is_digit(*p))
			return cap_err_plain(err, EINVAL, "invalid %s '%s': not a decimal number", what, quote(s).s);
		unsigned dig = (unsigned)(*p - '0');
		if (v > (UINT64_MAX - dig) / 10)
			overflow = true;
		else
			v = v * 10 + dig;
	}
	if (overflow || v < min || v > max)
		return cap_err_plain(err, EINVAL, "invalid %s '%s': must be between %" PRIu64 " and %" PRIu64, what,
				     quote(s).s, min, max);
	*out = v;
	return 0;
}

int parse_name(const char *s, const char *what, capsule_error *err)
{
	size_t n;

	if (!what)
		what = "name";
	if (!s || !*s)
		return cap_err_plain(err, EINVAL, "invalid %s '': must not be empty", what);
	if (!is_alnum(s[0]))
		return cap_err_plain(err, EINVAL, "invalid %s '%s': must start with a letter or a digit", what, quote(s).s);
	for (n = 1; s[n]; n++) {
		if (!is_alnum(s[n]) && s[n] != '_' && s[n] != '.' && s[n] != '-')
			return cap_err_plain(err, EINVAL,
					     "invalid %s '%s': character '%s' is not allowed (use letters, digits, '_', '.' and '-')",
					     what, quote(s).s, quote_n(s + n, char_len(s + n)).s);
	}
	if (n > NAME_MAX_LEN)
		return cap_err_plain(err, EINVAL, "invalid %s '%s': too long (%zu characters, at most %d)", what,
				     quote(s).s, n, NAME_MAX_LEN);
	return 0;
}

/* ---- paths ------------------------------------------------------------------------------ */

int normalize_abs_path(const char *in, char *out, size_t out_size, capsule_error *err)
{
	size_t n, i = 0, o = 0;

	if (!in || in[0] != '/')
		return cap_err_plain(err, EINVAL, "invalid path '%s': must be absolute", quote(in).s);
	n = strlen(in);
	if (n > CAP_PATH_MAX)
		return cap_err_plain(err, EINVAL, "invalid path '%s': too long (%zu bytes, at most %d)", quote(in).s, n,
				     CAP_PATH_MAX);
	/* Every step below writes at most as much as it has read, so the result fits in strlen+1
	 * and writing over IN itself is safe (memmove). */
	if (out_size < n + 1)
		return cap_err_plain(err, ERANGE, "normalizing path '%s': output buffer too small", quote(in).s);

	out[o++] = '/';
	while (i < n) {
		size_t start, len;

		while (i < n && in[i] == '/')
			i++;
		start = i;
		while (i < n && in[i] != '/')
			i++;
		len = i - start;
		if (len == 0 || (len == 1 && in[start] == '.'))
			continue;
		if (len == 2 && in[start] == '.' && in[start + 1] == '.') {
			while (o > 1 && out[o - 1] != '/')
				o--;
			if (o > 1)
				o--;
			continue;
		}
		if (o > 1)
			out[o++] = '/';
		memmove(out + o, in + start, len);
		o += len;
	}
	out[o] = '\0';
	return 0;
}

static bool has_dotdot_component(const char *p)
{
	while (*p) {
		while (*p == '/')
			p++;
		const char *start = p;
		while (*p && *p != '/')
			p++;
		if (p - start == 2 && start[0] == '.' && start[1] == '.')
			return true;
	}
	return false;
}

/* The -v / --tmpfs target rules. KIND and SPEC are only for the message. On success *out is a
 * malloc'd normalized copy. */
static int parse_target(const char *kind, const char *spec, const char *dst, char **out, capsule_error *err)
{
	_cleanup_free_ char *norm = NULL;
	size_t n = strlen(dst);

	if (n == 0)
		return cap_err_plain(err, EINVAL, "invalid %s '%s': empty target", kind, quote(spec).s);
	if (dst[0] != '/')
		return cap_err_plain(err, EINVAL, "invalid %s '%s': target '%s' must be an absolute path", kind,
				     quote(spec).s, quote(dst).s);
	if (n > CAP_PATH_MAX)
		return cap_err_plain(err, EINVAL, "invalid %s '%s': target too long (%zu bytes, at most %d)", kind,
				     quote(spec).s, n, CAP_PATH_MAX);
	/* Refused rather than resolved: "/a/../etc" is almost always a mistake or an attack, and
	 * the lexical answer can differ from what symlinks in the image would give. */
	if (has_dotdot_component(dst))
		return cap_err_plain(err, EINVAL, "invalid %s '%s': target '%s' must not contain '..'", kind,
				     quote(spec).s, quote(dst).s);
	norm = malloc(n + 1);
	if (!norm)
		return cap_err(err, ENOMEM, "parsing %s '%s'", kind, quote(spec).s);
	int r = normalize_abs_path(dst, norm, n + 1, err);
	if (r < 0)
		return r;
	if (strcmp(norm, "/") == 0)
		return cap_err_plain(err, EINVAL, "invalid %s '%s': target must not be '/'", kind, quote(spec).s);
	*out = steal_ptr(norm);
	return 0;
}

/* ---- -v --------------------------------------------------------------------------------- */

int parse_mount_spec(const char *spec, struct mount_spec *out, capsule_error *err)
{
	_cleanup_free_ char *copy = NULL;
	_cleanup_free_ char *source = NULL;
	_cleanup_free_ char *target = NULL;
	char *src, *dst, *opts = NULL, *c;
	bool ro = false, rw = false, is_volume;
	int r;

	memset(out, 0, sizeof(*out));
	if (!spec || !*spec)
		return cap_err_plain(err, EINVAL, "invalid mount '': empty value (use SRC:DST[:ro|rw])");
	copy = strdup(spec);
	if (!copy)
		return cap_err(err, ENOMEM, "parsing mount '%s'", quote(spec).s);

	src = copy;
	c = strchr(src, ':');
	if (!c)
		return cap_err_plain(err, EINVAL, "invalid mount '%s': expected SRC:DST[:ro|rw]", quote(spec).s);
	*c = '\0';
	dst = c + 1;
	c = strchr(dst, ':');
	if (c) {
		*c = '\0';
		opts = c + 1;
		if (strchr(opts, ':'))
			return cap_err_plain(err, EINVAL,
					     "invalid mount '%s': too many ':' (use SRC:DST[:ro|rw]; paths containing ':' are not supported)",
					     quote(spec).s);
	}

	if (!*src)
		return cap_err_plain(err, EINVAL, "invalid mount '%s': empty source", quote(spec).s);
	is_volume = src[0] != '/';
	if (is_volume) {
		if (parse_name(src, "volume name", NULL) < 0)
			return cap_err_plain(err, EINVAL,
					     "invalid mount '%s': source '%s' is neither an absolute host path nor a valid volume name ([a-zA-Z0-9][a-zA-Z0-9_.-]{0,62})",
					     quote(spec).s, quote(src).s);
	} else if (strlen(src) > CAP_PATH_MAX) {
		return cap_err_plain(err, EINVAL, "invalid mount '%s': source too long (at most %d bytes)", quote(spec).s,
				     CAP_PATH_MAX);
	}

	r = parse_target("mount", spec, dst, &target, err);
	if (r < 0)
		return r;

	if (opts) {
		if (!*opts)
			return cap_err_plain(err, EINVAL, "invalid mount '%s': empty options after ':' (use ro or rw)",
					     quote(spec).s);
		char *item;
		/* strsep, not strtok: "ro,,rw" must show up as an empty item. */
		while ((item = strsep(&opts, ","))) {
			if (strcmp(item, "ro") == 0)
				ro = true;
			else if (strcmp(item, "rw") == 0)
				rw = true;
			else if (!*item)
				return cap_err_plain(err, EINVAL, "invalid mount '%s': empty option (use ro or rw)", quote(spec).s);
			else
				return cap_err_plain(err, EINVAL, "invalid mount '%s': unknown option '%s' (use ro or rw)",
						     quote(spec).s, quote(item).s);
		}
		if (ro && rw)
			return cap_err_plain(err, EINVAL, "invalid mount '%s': conflicting options 'ro' and 'rw'", quote(spec).s);
	}

	source = strdup(src);
	if (!source)
		return cap_err(err, ENOMEM, "parsing mount '%s'", quote(spec).s);
	out->source = steal_ptr(source);
	out->target = steal_ptr(target);
	out->source_is_volume = is_volume;
	out->readonly = ro;
	return 0;
}

void mount_spec_free(struct mount_spec *m)
{
	if (!m)
		return;
	free(m->source);
	free(m->target);
	m->source = m->target = NULL;
}

/* ---- --tmpfs ---------------------------------------------------------------------------- */

static int parse_mode(const char *spec, const char *v, uint32_t *mode, capsule_error *err)
{
	uint32_t m = 0;

	if (!*v)
		return cap_err_plain(err, EINVAL, "invalid tmpfs '%s': empty mode (use octal, e.g. mode=1777)", quote(spec).s);
	for (const char *p = v; *p; p++) {
		if (*p < '0' || *p > '7')
			return cap_err_plain(err, EINVAL, "invalid tmpfs '%s': mode '%s' is not octal (e.g. mode=1777)",
					     quote(spec).s, quote(v).s);
		m = m * 8 + (uint32_t)(*p - '0');
		if (m > 07777)
			return cap_err_plain(err, EINVAL, "invalid tmpfs '%s': mode '%s' is above 7777", quote(spec).s, quote(v).s);
	}
	*mode = m;
	return 0;
}

int parse_tmpfs_spec(const char *spec, struct tmpfs_spec *out, capsule_error *err)
{
	_cleanup_free_ char *copy = NULL;
	_cleanup_free_ char *target = NULL;
	uint64_t size = CAP_TMPFS_DEFAULT_SIZE;
	uint32_t mode = CAP_TMPFS_DEFAULT_MODE;
	char *dst, *opts = NULL, *c;
	int r;

	memset(out, 0, sizeof(*out));
	if (!spec || !*spec)
		return cap_err_plain(err, EINVAL, "invalid tmpfs '': empty value (use DST[:size=64m,mode=1777])");
	copy = strdup(spec);
	if (!copy)
		return cap_err(err, ENOMEM, "parsing tmpfs '%s'", quote(spec).s);
	dst = copy;
	c = strchr(dst, ':');
	if (c) {
		*c = '\0';
		opts = c + 1;
		if (strchr(opts, ':'))
			return cap_err_plain(err, EINVAL, "invalid tmpfs '%s': too many ':' (use DST[:size=64m,mode=1777])",
					     quote(spec).s);
	}
	r = parse_target("tmpfs", spec, dst, &target, err);
	if (r < 0)
		return r;

	if (opts) {
		if (!*opts)
			return cap_err_plain(err, EINVAL, "invalid tmpfs '%s': empty options after ':' (use size= or mode=)",
					     quote(spec).s);
		char *item;
		while ((item = strsep(&opts, ","))) {
			if (strncmp(item, "size=", 5) == 0) {
				capsule_error e = {0};
				if (parse_size(item + 5, &size, &e) < 0)
					return cap_err_plain(err, EINVAL, "invalid tmpfs '%s': %s", quote(spec).s, e.message);
				if (size == 0)
					return cap_err_plain(err, EINVAL, "invalid tmpfs '%s': size must be greater than 0",
							     quote(spec).s);
			} else if (strncmp(item, "mode=", 5) == 0) {
				r = parse_mode(spec, item + 5, &mode, err);
				if (r < 0)
					return r;
			} else if (!*item) {
				return cap_err_plain(err, EINVAL, "invalid tmpfs '%s': empty option (use size= or mode=)",
						     quote(spec).s);
			} else {
				return cap_err_plain(err, EINVAL, "invalid tmpfs '%s': unknown option '%s' (use size= or mode=)",
						     quote(spec).s, quote(item).s);
			}
		}
	}

	out->target = steal_ptr(target);
	out->size_bytes = size;
	out->mode = mode;
	return 0;
}

void tmpfs_spec_free(struct tmpfs_spec *t)
{
	if (!t)
		return;
	free(t->target);
	t->target = NULL;
}

/* ---- -e --------------------------------------------------------------------------------- */

int parse_env(const char *kv, capsule_error *err)
{
	const char *eq;
	size_t n;

	if (!kv || !*kv)
		return cap_err_plain(err, EINVAL, "invalid environment variable '': expected KEY=VALUE");
	eq = strchr(kv, '=');
	if (!eq)
		return cap_err_plain(err, EINVAL, "invalid environment variable '%s': expected KEY=VALUE", quote(kv).s);
	n = (size_t)(eq - kv);
	/* From here on only the name is quoted: the value is often a token or a password. */
	if (n == 0)
		return cap_err_plain(err, EINVAL, "invalid environment variable: empty name before '='");
	if (is_digit(kv[0]))
		return cap_err_plain(err, EINVAL, "invalid environment variable name '%s': must start with a letter or '_'",
				     quote_n(kv, n).s);
	for (size_t i = 0; i < n; i++) {
		if (!is_alnum(kv[i]) && kv[i] != '_')
			return cap_err_plain(err, EINVAL,
					     "invalid environment variable name '%s': character '%s' is not allowed (use letters, digits and '_')",
					     quote_n(kv, n).s, quote_n(kv + i, char_len(kv + i)).s);
	}
	return 0;
}

int env_size_check(const char *const *env, size_t n, const char *adding, capsule_error *err)
{
	size_t total = 0;
	const char *biggest = NULL;
	size_t biggest_len = 0;
	for (size_t i = 0; env && (n ? i < n : env[i] != NULL); i++) {
		size_t l = strlen(env[i]);
		total += l + 1;
		if (l > biggest_len)
			biggest = env[i], biggest_len = l;
	}
	if (adding) {
		size_t l = strlen(adding);
		total += l + 1;
		if (l > biggest_len)
			biggest = adding, biggest_len = l;
	}
	if (biggest && biggest_len > CAPSULE_ENV_VAR_MAX_BYTES) {
		size_t name = strcspn(biggest, "=");
		return cap_err_plain(err, E2BIG, "environment variable '%s' is too large: %zu bytes (at most %u a variable)",
				     quote_n(biggest, name).s, biggest_len, CAPSULE_ENV_VAR_MAX_BYTES);
	}
	if (total > CAPSULE_ENV_MAX_BYTES)
		return cap_err_plain(err, E2BIG, "the environment is too large: %zu bytes (at most %u in all)", total,
				     CAPSULE_ENV_MAX_BYTES);
	return 0;
}

/* ---- --user ----------------------------------------------------------------------------- */

static int check_user_part(const char *s, const char *part, const char *p, capsule_error *err)
{
	size_t n = strlen(p);
	bool numeric = true;

	if (n == 0)
		return cap_err_plain(err, EINVAL, "invalid user '%s': empty %s (use NAME|UID[:GROUP|GID])", quote(s).s, part);
	if (n > USER_MAX_LEN)
		return cap_err_plain(err, EINVAL, "invalid user '%s': %s too long (at most %d bytes)", quote(s).s, part,
				     USER_MAX_LEN);
	if (p[0] == '-')
		return cap_err_plain(err, EINVAL, "invalid user '%s': %s '%s' must not start with '-'", quote(s).s, part,
				     quote(p).s);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		if (c <= ' ' || c == 0x7f || c == '/')
			return cap_err_plain(err, EINVAL, "invalid user '%s': character '%s' is not allowed in %s", quote(s).s,
					     quote_n(p + i, char_len(p + i)).s, part);
		if (!is_digit(p[i]))
			numeric = false;
	}
	if (numeric) {
		uint64_t id;
		if (parse_uint(p, part, 0, ID_MAX, &id, NULL) < 0)
			return cap_err_plain(err, EINVAL, "invalid user '%s': %s '%s' out of range (at most %" PRIu64 ")",
					     quote(s).s, part, quote(p).s, ID_MAX);
	}
	return 0;
}

int parse_user_spec(const char *s, char **user, char **group, capsule_error *err)
{
	_cleanup_free_ char *u = NULL;
	_cleanup_free_ char *g = NULL;
	const char *colon;
	int r;

	*user = NULL;
	*group = NULL;
	if (!s || !*s)
		return cap_err_plain(err, EINVAL, "invalid user '': empty value (use NAME|UID[:GROUP|GID])");
	colon = strchr(s, ':');
	if (colon && strchr(colon + 1, ':'))
		return cap_err_plain(err, EINVAL, "invalid user '%s': more than one ':' (use NAME|UID[:GROUP|GID])",
				     quote(s).s);
	u = colon ? strndup(s, (size_t)(colon - s)) : strdup(s);
	if (!u)
		return cap_err(err, ENOMEM, "parsing user '%s'", quote(s).s);
	r = check_user_part(s, "user", u, err);
	if (r < 0)
		return r;
	if (colon) {
		r = check_user_part(s, "group", colon + 1, err);
		if (r < 0)
			return r;
		g = strdup(colon + 1);
		if (!g)
			return cap_err(err, ENOMEM, "parsing user '%s'", quote(s).s);
	}
	*user = steal_ptr(u);
	*group = steal_ptr(g);
	return 0;
}

/* ---- -p --------------------------------------------------------------------------------- */

static int parse_port(const char *s, const char *which, const char *p, size_t n, uint16_t *out, capsule_error *err)
{
	uint32_t v = 0;

	if (n == 0)
		return cap_err_plain(err, EINVAL, "invalid port mapping '%s': empty %s port (use [HOSTIP:]HOSTPORT:GUESTPORT[/udp])",
				     quote(s).s, which);
	for (size_t i = 0; i < n; i++) {
		if (!is_digit(p[i]))
			return cap_err_plain(err, EINVAL, "invalid port mapping '%s': %s port '%s' is not a number",
					     quote(s).s, which, quote_n(p, n).s);
		v = v * 10 + (uint32_t)(p[i] - '0');
		if (v > 65535)
			break;
	}
	if (v < 1 || v > 65535)
		return cap_err_plain(err, EINVAL, "invalid port mapping '%s': %s port '%s' out of range (use 1-65535)",
				     quote(s).s, which, quote_n(p, n).s);
	*out = (uint16_t)v;
	return 0;
}

int parse_port_spec(const char *s, struct port_spec *out, capsule_error *err)
{
	struct port_spec ps = {0};
	const char *end, *slash, *rest, *c;
	char ipbuf[64];
	unsigned char addr[16];
	int family = AF_INET;
	int r;

	if (!s || !*s)
		return cap_err_plain(err, EINVAL, "invalid port mapping '': empty value (use [HOSTIP:]HOSTPORT:GUESTPORT[/udp])");
	end = s + strlen(s);

	slash = strchr(s, '/');
	if (slash) {
		const char *proto = slash + 1;
		if (strcasecmp(proto, "tcp") == 0)
			ps.udp = false;
		else if (strcasecmp(proto, "udp") == 0)
			ps.udp = true;
		else
			return cap_err_plain(err, EINVAL, "invalid port mapping '%s': unknown protocol '%s' (use tcp or udp)",
					     quote(s).s, quote(proto).s);
		end = slash;
	}

	rest = s;
	ipbuf[0] = '\0';
	if (s[0] == '[') {
		const char *close = memchr(s, ']', (size_t)(end - s));
		if (!close)
			return cap_err_plain(err, EINVAL, "invalid port mapping '%s': missing ']' after the IPv6 address",
					     quote(s).s);
		if (close + 1 >= end || close[1] != ':')
			return cap_err_plain(err, EINVAL, "invalid port mapping '%s': expected ':' after ']'", quote(s).s);
		size_t n = (size_t)(close - s - 1);
		if (n >= sizeof(ipbuf))
			return cap_err_plain(err, EINVAL, "invalid port mapping '%s': host address too long", quote(s).s);
		memcpy(ipbuf, s + 1, n);
		ipbuf[n] = '\0';
		family = AF_INET6;
		rest = close + 2;
		if (memchr(rest, ':', (size_t)(end - rest)) == NULL)
			return cap_err_plain(err, EINVAL, "invalid port mapping '%s': expected HOSTPORT:GUESTPORT after the address",
					     quote(s).s);
	} else {
		const char *c1 = memchr(s, ':', (size_t)(end - s));
		const char *c2 = c1 ? memchr(c1 + 1, ':', (size_t)(end - c1 - 1)) : NULL;
		if (!c1)
			return cap_err_plain(err, EINVAL, "invalid port mapping '%s': expected [HOSTIP:]HOSTPORT:GUESTPORT",
					     quote(s).s);
		if (c2) {
			if (memchr(c2 + 1, ':', (size_t)(end - c2 - 1)))
				return cap_err_plain(err, EINVAL,
						     "invalid port mapping '%s': too many ':' (an IPv6 host address goes in brackets, e.g. '[::1]:8080:80')",
						     quote(s).s);
			size_t n = (size_t)(c1 - s);
			if (n == 0)
				return cap_err_plain(err, EINVAL, "invalid port mapping '%s': empty host address", quote(s).s);
			if (n >= sizeof(ipbuf))
				return cap_err_plain(err, EINVAL, "invalid port mapping '%s': host address too long", quote(s).s);
			memcpy(ipbuf, s, n);
			ipbuf[n] = '\0';
			rest = c1 + 1;
		}
	}

	if (ipbuf[0] || family == AF_INET6) {
		if (inet_pton(family, ipbuf, addr) != 1)
			return cap_err_plain(err, EINVAL, "invalid port mapping '%s': '%s' is not an %s address", quote(s).s,
					     quote(ipbuf).s, family == AF_INET6 ? "IPv6" : "IPv4");
		if (!inet_ntop(family, addr, ps.host_ip, sizeof(ps.host_ip)))
			return cap_err(err, errno, "formatting address '%s'", quote(ipbuf).s);
	} else {
		strcpy(ps.host_ip, "127.0.0.1");
	}

	c = memchr(rest, ':', (size_t)(end - rest));
	r = parse_port(s, "host", rest, (size_t)(c - rest), &ps.host_port, err);
	if (r < 0)
		return r;
	r = parse_port(s, "guest", c + 1, (size_t)(end - c - 1), &ps.guest_port, err);
	if (r < 0)
		return r;
	*out = ps;
	return 0;
}

int parse_label_check(const char *key, const char *value, capsule_error *err)
{
	size_t kl = strlen(key), vl = value ? strlen(value) : 0;
	if (kl == 0 || kl > CAPSULE_LABEL_KEY_MAX)
		return cap_err_plain(err, EINVAL, "label key '%.64s' must be 1 to %d characters", quote(key).s,
				     CAPSULE_LABEL_KEY_MAX);
	for (size_t i = 0; i < kl; i++) {
		char c = key[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
		      c == '-' || c == '/'))
			return cap_err_plain(err, EINVAL, "label key '%.64s': only letters, digits, '_', '.', '-' and '/'",
					     quote(key).s);
	}
	if (vl > CAPSULE_LABEL_VALUE_MAX)
		return cap_err_plain(err, EINVAL, "label '%s': the value is longer than %d bytes", key,
				     CAPSULE_LABEL_VALUE_MAX);
	for (size_t i = 0; i < vl; i++)
		if ((unsigned char)value[i] < 0x20 || value[i] == 0x7f)
			return cap_err_plain(err, EINVAL, "label '%s': the value has a control character", key);
	return 0;
}

int parse_label(const char *text, bool key_alone_ok, char **key, char **value, capsule_error *err)
{
	const char *eq = strchr(text, '=');
	if (!eq && !key_alone_ok)
		return cap_err_plain(err, EINVAL, "label '%.64s' must be KEY=VALUE", quote(text).s);
	char *k = eq ? strndup(text, (size_t)(eq - text)) : strdup(text);
	char *v = eq ? strdup(eq + 1) : NULL;
	if (!k || (eq && !v)) {
		free(k);
		free(v);
		return cap_err(err, ENOMEM, "label");
	}
	int r = parse_label_check(k, v, err);
	if (r < 0) {
		free(k);
		free(v);
		return r;
	}
	*key = k;
	*value = v;
	return 0;
}
