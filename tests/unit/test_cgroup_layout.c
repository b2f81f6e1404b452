/* Unit tests for src/shim/container/cgroup_layout.c: the layout read from mountinfo and
 * /proc/self/cgroup on every kind of host (v1 only, hybrid, unified, unified with nsdelegate, a
 * cgroup namespace), and a clear error for text the kernel would not write. The hybrid fixture
 * is a real Debian 12 host's /proc/self/mountinfo (tests/unit/fixtures/cgroup). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <fcntl.h>

#include "cgroup_layout.h"
#include "util.h"

static struct cgroup_layout *parse_ok(const char *mountinfo, const char *self_cgroup)
{
	struct cgroup_layout *l = malloc(sizeof(*l));
	assert_non_null(l);
	capsule_error err = { 0 };
	int r = cgroup_layout_parse(l, "/sys/fs/cgroup", mountinfo, self_cgroup, &err);
	if (r != 0)
		fail_msg("unexpected error: %s", err.message);
	return l;
}

/* The message of a parse that must fail with EINVAL. */
static void parse_fails(const char *mountinfo, const char *self_cgroup, const char *expect)
{
	struct cgroup_layout l;
	capsule_error err = { 0 };
	assert_int_equal(cgroup_layout_parse(&l, "/sys/fs/cgroup", mountinfo, self_cgroup, &err), -EINVAL);
	assert_int_equal(err.code, EINVAL);
	if (!strstr(err.message, expect))
		fail_msg("message '%s' does not say '%s'", err.message, expect);
	assert_null(strchr(err.message, '\n'));
}

static char *fixture(const char *name)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/cgroup/%s", FIXTURES, name);
	char *text = NULL;
	assert_int_equal(read_file_at(AT_FDCWD, path, 1u << 20, &text, NULL), 0);
	return text;
}

static void test_hybrid_host_has_v1_controllers_and_a_bare_cgroup2_beside(void **state)
{
	(void)state;
	char *mi = fixture("hybrid-debian12.mountinfo"), *cg = fixture("hybrid-debian12.cgroup");
	struct cgroup_layout *l = parse_ok(mi, cg);
	assert_int_equal(l->mode, CGROUP_MODE_HYBRID);
	assert_string_equal(l->v1[CG_MEMORY], "/sys/fs/cgroup/memory");
	assert_string_equal(l->v1[CG_PIDS], "/sys/fs/cgroup/pids");
	/* cpu alone, not cpuacct: the fixture mounts them apart. */
	assert_string_equal(l->v1[CG_CPU], "/sys/fs/cgroup/cpu");
	assert_string_equal(l->v1[CG_CPUSET], "/sys/fs/cgroup/cpuset");
	assert_string_equal(l->v2_mount, "/sys/fs/cgroup/unified");
	assert_string_equal(l->v2_root, "/");
	assert_false(l->v2_nsdelegate);
	assert_string_equal(l->self_v2, "/");
	free(l);
	free(mi);
	free(cg);
}

static const char v1_only[] =
	"22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
	"23 22 0:20 / /sys rw,nosuid,nodev,noexec,relatime shared:6 - sysfs sysfs rw\n"
	"24 23 0:21 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:7 - tmpfs tmpfs ro,mode=755\n"
	"25 24 0:22 / /sys/fs/cgroup/systemd rw,nosuid shared:8 - cgroup cgroup rw,xattr,name=systemd\n"
	"26 24 0:23 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:9 - cgroup cgroup rw,cpu,cpuacct\n"
	"27 24 0:24 / /sys/fs/cgroup/memory rw,nosuid shared:10 - cgroup cgroup rw,memory\n"
	"28 24 0:25 / /sys/fs/cgroup/pids rw,nosuid shared:11 - cgroup cgroup rw,pids\n";

static void test_v1_host_has_each_controller_on_its_hierarchy_and_no_v2(void **state)
{
	(void)state;
	struct cgroup_layout *l = parse_ok(v1_only, "11:pids:/user.slice\n4:memory:/user.slice\n"
						    "2:cpu,cpuacct:/user.slice\n1:name=systemd:/user.slice/x\n");
	assert_int_equal(l->mode, CGROUP_MODE_V1);
	assert_string_equal(l->v1[CG_MEMORY], "/sys/fs/cgroup/memory");
	assert_string_equal(l->v1[CG_PIDS], "/sys/fs/cgroup/pids");
	assert_string_equal(l->v1[CG_CPU], "/sys/fs/cgroup/cpu,cpuacct");
	assert_string_equal(l->v2_mount, "");
	/* No "0::" line: the process is in no v2 cgroup we know of. */
	assert_string_equal(l->self_v2, "");
	free(l);
}

static const char unified[] =
	"22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
	"23 22 0:20 / /sys rw,nosuid,nodev,noexec,relatime shared:6 - sysfs sysfs rw\n"
	"30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw\n";

static void test_unified_host_has_no_v1_hierarchy(void **state)
{
	(void)state;
	struct cgroup_layout *l = parse_ok(unified, "0::/user.slice/user-1000.slice/session-2.scope\n");
	assert_int_equal(l->mode, CGROUP_MODE_UNIFIED);
	for (int c = 0; c < CG_N_CTRL; c++)
		assert_string_equal(l->v1[c], "");
	assert_string_equal(l->v2_mount, "/sys/fs/cgroup");
	assert_false(l->v2_nsdelegate);
	assert_string_equal(l->self_v2, "/user.slice/user-1000.slice/session-2.scope");
	free(l);
}

static void test_nsdelegate_is_read_from_the_superblock_options(void **state)
{
	(void)state;
	struct cgroup_layout *l = parse_ok(
		"22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
		"30 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 "
		"rw,nsdelegate,memory_recursiveprot\n",
		"0::/init.scope\n");
	assert_int_equal(l->mode, CGROUP_MODE_UNIFIED);
	assert_true(l->v2_nsdelegate);
	assert_string_equal(l->v2_mount, "/sys/fs/cgroup");
	free(l);
}

/* Inside a container: the cgroup2 mount's root is the container's cgroup, a mount elsewhere
 * ranks below the one at the cgroup root, and a later mount on one point hides the first. */
static void test_container_mount_root_and_the_mount_at_the_cgroup_root_win(void **state)
{
	(void)state;
	struct cgroup_layout *l = parse_ok(
		"40 1 0:50 / / rw - overlay overlay rw,lowerdir=/l\n"
		"41 40 0:26 /machine/c1 /mnt/cg rw - cgroup2 cgroup2 rw\n"
		"42 40 0:26 /machine /sys/fs/cgroup/sub rw,nosuid - cgroup2 cgroup2 rw\n"
		"43 40 0:26 /machine/c1 /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n"
		"44 40 0:26 /machine/c1/inner /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n",
		"0::/machine/c1/inner/app\n");
	assert_int_equal(l->mode, CGROUP_MODE_UNIFIED);
	assert_string_equal(l->v2_mount, "/sys/fs/cgroup");
	assert_string_equal(l->v2_root, "/machine/c1/inner");
	assert_true(l->v2_nsdelegate);
	free(l);
}

static void test_escaped_mount_points_are_unescaped(void **state)
{
	(void)state;
	struct cgroup_layout *l = parse_ok(
		"22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
		"25 22 0:23 / /srv/my\\040cgroups/mem rw - cgroup cgroup rw,memory\n", NULL);
	assert_int_equal(l->mode, CGROUP_MODE_V1);
	assert_string_equal(l->v1[CG_MEMORY], "/srv/my cgroups/mem");
	free(l);
}

/* A v1 controller mounted twice: the mount below the cgroup root wins over an earlier one. */
static void test_v1_mount_below_the_cgroup_root_wins(void **state)
{
	(void)state;
	struct cgroup_layout *l = parse_ok(
		"22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
		"25 22 0:23 / /mnt/mem rw - cgroup cgroup rw,memory\n"
		"26 22 0:23 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
		"27 22 0:23 / /mnt/mem2 rw - cgroup cgroup rw,memory\n", NULL);
	assert_string_equal(l->v1[CG_MEMORY], "/sys/fs/cgroup/memory");
	free(l);
}

/* The kernel writes an empty source as an empty field: that is a line, not garbage. */
static void test_an_empty_source_field_is_accepted(void **state)
{
	(void)state;
	struct cgroup_layout *l = parse_ok("22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
					   "23 22 0:30 / /mnt/x rw,relatime - tmpfs  rw,size=4k\n"
					   "\n",
					   "0::/\n");
	assert_int_equal(l->mode, CGROUP_MODE_NONE);
	free(l);
}

static void test_garbage_and_missing_fields_are_clear_errors(void **state)
{
	(void)state;
	parse_fails("", NULL, "/proc/self/mountinfo is empty");
	parse_fails("\n\n", NULL, "/proc/self/mountinfo is empty");
	parse_fails("hello world\n", NULL, "/proc/self/mountinfo line 1: no ' - ' separator in 'hello world'");
	parse_fails("22 1 8:1 / / rw - ext4 /dev/sda1 rw\nx 1 8:1 / /a rw - ext4 /dev/sda2 rw\n", NULL,
		    "line 2: mount id is not a number: 'x'");
	parse_fails("22 y 8:1 / / rw - ext4 /dev/sda1 rw\n", NULL, "parent id is not a number: 'y'");
	parse_fails("22 1 81 / / rw - ext4 /dev/sda1 rw\n", NULL, "device is not MAJOR:MINOR: '81'");
	parse_fails("22 1 8:1 / rel rw - ext4 /dev/sda1 rw\n", NULL, "mount point is not absolute: 'rel'");
	parse_fails("42 40 0:26 /machine rw,nosuid - cgroup2 cgroup2 rw\n", NULL,
		    "line 1: 5 fields before ' - ', expected at least 6");
	parse_fails("22 1 8:1 / / rw - ext4 /dev/sda1\n", NULL,
		    "line 1: 2 fields after ' - ', expected filesystem type, source and options");
	parse_fails("22 1 8:1 / / rw -\n", NULL, "0 fields after ' - '");
	parse_fails("22  1 8:1 / / rw - ext4 /dev/sda1 rw\n", NULL, "line 1: field 2 is empty");
	/* Unprintable bytes are shown escaped, so the message stays one printable line. */
	parse_fails("\x01\xff garbage\n", NULL, "no ' - ' separator in '\\x01\\xff garbage'");
}

static void test_proc_self_cgroup_garbage_is_a_clear_error(void **state)
{
	(void)state;
	parse_fails(unified, "nonsense\n", "/proc/self/cgroup line 1: not ID:CONTROLLERS:PATH: 'nonsense'");
	parse_fails(unified, "0::/\nx:memory:/\n", "/proc/self/cgroup line 2: hierarchy id is not a number");
	parse_fails(unified, "0::relative\n", "/proc/self/cgroup line 1: cgroup path is not absolute");
}

static void test_own_cgroup_is_found_below_the_mount_root_only(void **state)
{
	(void)state;
	char out[64];
	assert_true(cgroup_below_root("/user.slice/u", "/", out, sizeof(out)));
	assert_string_equal(out, "/user.slice/u");
	assert_true(cgroup_below_root("/machine/c1/app", "/machine/c1", out, sizeof(out)));
	assert_string_equal(out, "/app");
	assert_true(cgroup_below_root("/machine/c1", "/machine/c1", out, sizeof(out)));
	assert_string_equal(out, "/");
	/* A sibling that shares the prefix is not below it. */
	assert_false(cgroup_below_root("/machine/c10/app", "/machine/c1", out, sizeof(out)));
	assert_false(cgroup_below_root("", "/", out, sizeof(out)));
	assert_false(cgroup_below_root("/a/very/long/path", "/", out, 8));
}

static void test_controller_lists_name_only_our_controllers(void **state)
{
	(void)state;
	assert_int_equal(cg_parse_ctrls("cpuset cpu io memory hugetlb pids rdma misc\n"),
			 CG_BIT(CG_CPU) | CG_BIT(CG_MEMORY) | CG_BIT(CG_PIDS) | CG_BIT(CG_CPUSET));
	assert_int_equal(cg_parse_ctrls("rw,cpuacct,name=systemd"), 0);
	assert_int_equal(cg_parse_ctrls("rw,cpu,cpuacct"), CG_BIT(CG_CPU));
	assert_int_equal(cg_parse_ctrls(""), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hybrid_host_has_v1_controllers_and_a_bare_cgroup2_beside),
		cmocka_unit_test(test_v1_host_has_each_controller_on_its_hierarchy_and_no_v2),
		cmocka_unit_test(test_unified_host_has_no_v1_hierarchy),
		cmocka_unit_test(test_nsdelegate_is_read_from_the_superblock_options),
		cmocka_unit_test(test_container_mount_root_and_the_mount_at_the_cgroup_root_win),
		cmocka_unit_test(test_escaped_mount_points_are_unescaped),
		cmocka_unit_test(test_v1_mount_below_the_cgroup_root_wins),
		cmocka_unit_test(test_an_empty_source_field_is_accepted),
		cmocka_unit_test(test_garbage_and_missing_fields_are_clear_errors),
		cmocka_unit_test(test_proc_self_cgroup_garbage_is_a_clear_error),
		cmocka_unit_test(test_own_cgroup_is_found_below_the_mount_root_only),
		cmocka_unit_test(test_controller_lists_name_only_our_controllers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
