/* libFuzzer target: the cgroup layout parser (src/shim/container/cgroup_layout.c).
 *
 * The input is the text of /proc/self/mountinfo, then a NUL and the text of
 * /proc/self/cgroup (absent when there is no NUL), each copied into a buffer of exactly its
 * size. Besides "no crash, no overread, no leak": a failure follows the error contract (one
 * printable line, -EINVAL); a success gives a layout whose parts agree with each other (every
 * mount point absolute, nsdelegate only with a cgroup2 mount, a hybrid or unified mode only
 * with one), and the relative path of our own cgroup is always below the mount it is taken
 * from.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cgroup_layout.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#include "fuzz_check.h"

static char *copy_text(const uint8_t *p, size_t n)
{
	char *s = malloc(n + 1);
	CHECK(s);
	memcpy(s, p, n);
	s[n] = '\0';
	return s;
}

static void check_path(const char *p, size_t size)
{
	size_t n = strnlen(p, size);
	CHECK(n < size);
	CHECK(n == 0 || p[0] == '/');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nul = memchr(data, 0, size);
	size_t mi_len = nul ? (size_t)(nul - data) : size;
	char *mountinfo = copy_text(data, mi_len);
	char *self = NULL;
	if (nul) {
		const uint8_t *rest = nul + 1;
		size_t rest_len = size - mi_len - 1;
		const uint8_t *end = memchr(rest, 0, rest_len);
		self = copy_text(rest, end ? (size_t)(end - rest) : rest_len);
	}
	struct cgroup_layout *l = malloc(sizeof(*l));
	CHECK(l);
	capsule_error err = { 0 };
	int r = cgroup_layout_parse(l, "/sys/fs/cgroup", mountinfo, self, &err);
	if (r < 0) {
		CHECK(r == -EINVAL && err.code == EINVAL);
		size_t n = strnlen(err.message, sizeof(err.message));
		CHECK(n > 0 && n < sizeof(err.message));
		for (size_t i = 0; i < n; i++) {
			unsigned char c = (unsigned char)err.message[i];
			CHECK(c >= 0x20 && c != 0x7f);
		}
	} else {
		CHECK(r == 0);
		for (int c = 0; c < CG_N_CTRL; c++)
			check_path(l->v1[c], sizeof(l->v1[c]));
		check_path(l->v2_mount, sizeof(l->v2_mount));
		check_path(l->self_v2, sizeof(l->self_v2));
		CHECK(strnlen(l->v2_root, sizeof(l->v2_root)) < sizeof(l->v2_root));
		CHECK(!l->v2_nsdelegate || l->v2_mount[0]);
		CHECK(l->mode != CGROUP_MODE_HYBRID || l->v2_mount[0]);
		CHECK(l->mode != CGROUP_MODE_UNIFIED || l->v2_mount[0]);
		CHECK(l->mode == CGROUP_MODE_NONE || l->mode == CGROUP_MODE_V1 || l->mode == CGROUP_MODE_HYBRID ||
		      l->mode == CGROUP_MODE_UNIFIED);
		char rel[PATH_MAX];
		if (l->v2_mount[0] && cgroup_below_root(l->self_v2, l->v2_root, rel, sizeof(rel))) {
			CHECK(rel[0] == '/');
			/* Whatever is left is the tail of our own path, below the mount's root. */
			size_t rl = strlen(rel), sl = strlen(l->self_v2);
			CHECK(strcmp(rel, "/") == 0 || (rl <= sl && strcmp(l->self_v2 + sl - rl, rel) == 0));
		}
	}
	free(l);
	free(mountinfo);
	free(self);
	return 0;
}
