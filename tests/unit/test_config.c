/* Unit tests for the sandbox configuration's on-disk form (src/lib/config.c): what the
 * library writes, the shim must read back the same, and a damaged file must be refused. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "internal.h"
#include "json.h"

static void round_trip(const struct capsule_config *in, struct capsule_config *out)
{
	char *text = NULL;
	size_t len = 0;
	assert_int_equal(config_serialize(in, &text, &len), 0);
	capsule_error e = { 0 };
	if (config_parse(text, len, out, &e) != 0)
		fail_msg("parse of our own output failed: %s\n%s", e.message, text);
	free(text);
}

static void test_layers_round_trip(void **state)
{
	(void)state;
	struct capsule_config cfg = { .name = "t" };
	capsule_error e = { 0 };
	assert_int_equal(config_add_layer(&cfg, "/store/layers/a", &e), 0);
	assert_int_equal(config_add_layer(&cfg, "/store/layers/b c:d", &e), 0);
	cfg.base_none = true;
	struct capsule_config back;
	round_trip(&cfg, &back);
	assert_true(back.base_none);
	assert_int_equal(back.nlayers, 2);
	assert_string_equal(back.layers[0], "/store/layers/a");
	assert_string_equal(back.layers[1], "/store/layers/b c:d");

	struct capsule_config copy;
	assert_int_equal(config_copy(&copy, &back), 0);
	assert_int_equal(copy.nlayers, 2);
	assert_ptr_not_equal(copy.layers[1], back.layers[1]);
	assert_string_equal(copy.layers[1], back.layers[1]);
	config_clear(&copy);
	config_clear(&back);

	/* Without base=none the layers lie on the host image. */
	cfg.base_none = false;
	round_trip(&cfg, &back);
	assert_false(back.base_none);
	assert_int_equal(back.nlayers, 2);
	config_clear(&back);
	config_clear(&cfg);
}

static void test_layer_errors(void **state)
{
	(void)state;
	struct capsule_config cfg = { .name = "t" };
	capsule_error e = { 0 };
	assert_int_equal(config_add_layer(&cfg, "relative/path", &e), -EINVAL);
	assert_non_null(strstr(e.message, "'relative/path'"));
	assert_int_equal(config_add_layer(&cfg, "/a\nimage=x", &e), -EINVAL);
	for (int i = 0; i < CAPSULE_MAX_LAYERS; i++)
		assert_int_equal(config_add_layer(&cfg, "/l", &e), 0);
	assert_int_equal(config_add_layer(&cfg, "/l", &e), -E2BIG);
	config_clear(&cfg);

	static const char *const bad[] = {
		"name=t\nbase=none\n",             /* nothing to be the root */
		"name=t\nbase=maybe\nlayer=/l\n", /* unknown base */
		"name=t\nlayer=relative\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct capsule_config c;
		memset(&e, 0, sizeof(e));
		if (config_parse(bad[i], strlen(bad[i]), &c, &e) != -EINVAL)
			fail_msg("accepted: %s", bad[i]);
		assert_true(e.message[0] != '\0');
		assert_null(strchr(e.message, '\n'));
	}
}

/* A configuration with every key set, as the writer before the table wrote it (its own line
 * order): what a sandbox made by that build has on disk, and must read the same. */
static const char full_old_order[] =
	"version=1\nname=full\nimage=docker.io/library/alpine:3\nhostname=box\nisolation=vm\n"
	"memory=536870912\ncpus_milli=1500\npids=100\nboot_timeout_ms=30000\ndetached=1\ncreated=1765000000\n"
	"id_slot=7\nenv=A=1\nenv=B=two words\nboot_timeout_set=1\naccel=tcg\nqemu_arg=-smp\nqemu_arg=2\n"
	"disk_size=4294967296\ndisk_from=/saves/s/disk.qcow2\ndisplay=1\nbase=none\nlayer=/store/layers/a\n"
	"layer=/store/layers/b\nworkdir=/app\nuser=1000:1000\nentrypoint_set=1\nentrypoint=/bin/sh\n"
	"entrypoint=-c%0Aecho\ncmd_set=1\nbind=ro:8:/srv/src/data\nvolume=rw:5:cache/cache\n"
	"transform=5:/data12:/opt/plug.sokey=v\ntmpfs=67108864:1777:/tmp\nnetwork=full\n"
	"port=127.0.0.1:8080:80\nallow=10.0.0.0/8:443\nallow=93.184.216.34/32:0:example.com\nsave=snap\n"
	"pool=warm\norigin=capsule-0a0b0c0d\n";

static int line_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* TEXT's lines, sorted: the same set of lines is the same file to the reader. */
static size_t sorted_lines(char *text, char **lines, size_t max)
{
	size_t n = 0;
	char *save = NULL;
	for (char *l = strtok_r(text, "\n", &save); l && n < max; l = strtok_r(NULL, "\n", &save))
		lines[n++] = l;
	qsort(lines, n, sizeof(char *), line_cmp);
	return n;
}

static char *serialize(const struct capsule_config *cfg)
{
	char *text = NULL;
	size_t len = 0;
	assert_int_equal(config_serialize(cfg, &text, &len), 0);
	assert_int_equal(strlen(text), len);
	return text;
}

static void test_a_file_of_the_old_writer_reads_and_writes_back_the_same_lines(void **state)
{
	(void)state;
	struct capsule_config cfg;
	capsule_error e = { 0 };
	if (config_parse(full_old_order, strlen(full_old_order), &cfg, &e) != 0)
		fail_msg("%s", e.message);
	assert_string_equal(cfg.hostname, "box");
	assert_int_equal(cfg.isolation, CAPSULE_ISOLATION_VM);
	assert_int_equal(cfg.memory_bytes, 512u << 20);
	assert_int_equal(cfg.cpus_milli, 1500);
	assert_int_equal(cfg.pids_limit, 100);
	assert_true(cfg.detached && cfg.boot_timeout_set && cfg.display && cfg.base_none);
	assert_int_equal(cfg.created_unix, 1765000000);
	assert_int_equal(cfg.id_slot, 7);
	assert_int_equal(cfg.envc, 2);
	assert_string_equal(cfg.env[1], "B=two words");
	assert_string_equal(cfg.accel, "tcg");
	assert_int_equal(cfg.nqemu_args, 2);
	assert_int_equal(cfg.disk_bytes, 4ull << 30);
	assert_string_equal(cfg.disk_from, "/saves/s/disk.qcow2");
	assert_int_equal(cfg.nlayers, 2);
	assert_string_equal(cfg.workdir, "/app");
	assert_string_equal(cfg.user, "1000:1000");
	assert_string_equal(cfg.entrypoint[1], "-c\necho");
	assert_non_null(cfg.cmd);
	assert_null(cfg.cmd[0]);
	assert_int_equal(cfg.nbinds, 2);
	assert_true(cfg.binds[0].readonly && !cfg.binds[0].volume && cfg.binds[1].volume);
	assert_string_equal(cfg.binds[0].transform, "/opt/plug.so");
	assert_string_equal(cfg.binds[0].transform_config, "key=v");
	assert_int_equal(cfg.ntmpfs, 1);
	assert_int_equal(cfg.tmpfs[0].mode, 01777);
	assert_int_equal(cfg.network, CAPSULE_NETWORK_FULL);
	assert_int_equal(cfg.nports, 1);
	assert_int_equal(cfg.nallow, 2);
	assert_string_equal(cfg.allow[1].host, "example.com");
	assert_string_equal(cfg.save, "snap");

	/* The table writes its rows in its own order, but the very lines the old writer did. */
	char *text = serialize(&cfg);
	char *old = strdup(full_old_order);
	char *a[64], *b[64];
	size_t na = sorted_lines(old, a, 64), nb = sorted_lines(text, b, 64);
	assert_int_equal(na, nb);
	for (size_t i = 0; i < na; i++)
		assert_string_equal(a[i], b[i]);
	free(old);
	free(text);
	config_clear(&cfg);
}

static void test_copy_owns_all_of_its_memory(void **state)
{
	(void)state;
	struct capsule_config src, copy;
	assert_int_equal(config_parse(full_old_order, strlen(full_old_order), &src, NULL), 0);
	assert_int_equal(config_copy(&copy, &src), 0);
	char *before = serialize(&src);
	assert_ptr_not_equal(copy.env[0], src.env[0]);
	assert_ptr_not_equal(copy.qemu_args[0], src.qemu_args[0]);
	assert_ptr_not_equal(copy.layers[0], src.layers[0]);
	assert_ptr_not_equal(copy.binds[0].transform, src.binds[0].transform);
	assert_ptr_not_equal(copy.tmpfs[0].target, src.tmpfs[0].target);
	assert_ptr_not_equal(copy.entrypoint, src.entrypoint);
	assert_ptr_not_equal(copy.cmd, src.cmd);
	assert_ptr_not_equal(copy.disk_from, src.disk_from);
	assert_ptr_not_equal(copy.workdir, src.workdir);
	/* Freed apart (ASan would see a double free or a use after it). */
	config_clear(&src);
	char *after = serialize(&copy);
	assert_string_equal(before, after);
	free(before);
	free(after);
	config_clear(&copy);
}

/* What a new row must have for the drivers to handle it: a mistake here is a key silently
 * dropped from the file, a leak, or a flag that does nothing. */
static void test_every_row_of_the_table_is_whole(void **state)
{
	(void)state;
	for (size_t i = 0; i < config_key_count; i++) {
		const struct config_key *k = &config_keys[i];
		const char *what = k->name ? k->name : k->option.flag;
		if (!what)
			fail_msg("row %zu has neither a key nor a flag", i);
		if (!k->name && (!k->option.flag || !k->set))
			fail_msg("row %zu: a row without a key is a flag, with its setter", i);
		if (k->option.flag && !k->set)
			fail_msg("flag '--%s' sets nothing", k->option.flag);
		if (k->option.flag && (!k->option.help || !k->option.help[0]))
			fail_msg("flag '--%s' has no help", k->option.flag);
		if (k->name && k->type == CONFIG_KEY_CUSTOM && (!k->load || !k->save))
			fail_msg("key '%s' is custom without its own load and save", what);
		if (k->name && k->type != CONFIG_KEY_CUSTOM && k->size == 0)
			fail_msg("key '%s' has no field", what);
		if (k->name && k->type == CONFIG_KEY_TEXT && k->size < 2)
			fail_msg("key '%s': a text field holds at least one character", what);
		if ((k->forget || k->copy || k->clear) && !(k->forget && k->copy && k->clear))
			fail_msg("key '%s' owns memory: it needs forget, copy and clear", what);
		if (k->inspect_limit && k->type != CONFIG_KEY_U32 && k->type != CONFIG_KEY_U64 &&
		    k->type != CONFIG_KEY_STRING)
			fail_msg("key '%s': a limit in inspect is a number or a string (a cpuset list)", what);
		/* Every key, flag and short flag once. */
		for (size_t j = 0; j < i; j++) {
			const struct config_key *o = &config_keys[j];
			const char *mine[4] = { k->name, k->also[0], k->also[1], k->also[2] };
			const char *theirs[4] = { o->name, o->also[0], o->also[1], o->also[2] };
			for (size_t x = 0; x < 4; x++)
				for (size_t y = 0; y < 4; y++)
					if (mine[x] && theirs[y] && !strcmp(mine[x], theirs[y]))
						fail_msg("key '%s' is read by two rows", mine[x]);
			if (k->option.flag && o->option.flag && !strcmp(k->option.flag, o->option.flag))
				fail_msg("flag '--%s' twice", k->option.flag);
			if (k->option.short_flag && k->option.short_flag == o->option.short_flag)
				fail_msg("short flag '-%c' twice", k->option.short_flag);
		}
	}
}

static void test_options_set_through_the_setters_checks(void **state)
{
	(void)state;
	capsule_config *cfg;
	capsule_error e = { 0 };
	assert_int_equal(capsule_config_new(&cfg, &e), 0);
	assert_int_equal(capsule_config_set_option(cfg, "memory", "512M", &e), 0);
	assert_int_equal(cfg->memory_bytes, 512u << 20);
	assert_int_equal(capsule_config_set_option(cfg, "pids-limit", "12", &e), 0);
	assert_int_equal(cfg->pids_limit, 12);
	assert_int_equal(capsule_config_set_option(cfg, "pids-limit", "1", &e), -EINVAL);
	assert_non_null(strstr(e.message, "pids limit 1"));
	assert_int_equal(capsule_config_set_option(cfg, "boot-timeout", "2s", &e), 0);
	assert_int_equal(cfg->boot_timeout_ms, 2000);
	assert_true(cfg->boot_timeout_set);
	assert_int_equal(capsule_config_set_option(cfg, "isolation", "vm", &e), 0);
	assert_int_equal(cfg->isolation, CAPSULE_ISOLATION_VM);
	assert_int_equal(capsule_config_set_option(cfg, "isolation", "jail", &e), -EINVAL);
	assert_string_equal(e.message, "invalid isolation 'jail' (use container or vm)");
	assert_int_equal(capsule_config_set_option(cfg, "display", NULL, &e), 0);
	assert_true(cfg->display);
	assert_int_equal(capsule_config_set_option(cfg, "tmpfs", "/scratch:size=1M", &e), 0);
	assert_int_equal(cfg->ntmpfs, 1);
	assert_int_equal(cfg->tmpfs[0].size_bytes, 1u << 20);
	assert_int_equal(capsule_config_set_option(cfg, "memory", NULL, &e), -EINVAL);
	assert_string_equal(e.message, "option '--memory' needs a value");
	assert_int_equal(capsule_config_set_option(cfg, "no-such-flag", "1", &e), -EINVAL);
	assert_string_equal(e.message, "unknown option '--no-such-flag'");
	capsule_config_free(cfg);

	const capsule_config_option *first = capsule_config_option_at(0);
	assert_non_null(first);
	assert_string_equal(first->flag, "name");
	size_t n = 0;
	while (capsule_config_option_at(n))
		n++;
	assert_true(n > 10);
	assert_null(capsule_config_option_at(n));
}

static void test_cgroup_base_is_a_name_tilde_and_8_hex_digits(void **state)
{
	(void)state;
	assert_true(cgroup_base_valid("dev~0123abcd"));
	assert_true(cgroup_base_valid("a.b-c_d~ffffffff"));
	assert_false(cgroup_base_valid("dev"));
	assert_false(cgroup_base_valid("dev~0123abc"));
	assert_false(cgroup_base_valid("dev~0123abcde"));
	assert_false(cgroup_base_valid("dev~0123ABCD"));
	assert_false(cgroup_base_valid("~0123abcd"));
	assert_false(cgroup_base_valid("../x~0123abcd"));
	assert_false(cgroup_base_valid("a/b~0123abcd"));
	/* Never a name: the cgroups of a sandbox named like it cannot be another's. */
	assert_int_not_equal(validate_name("dev~0123abcd", NULL, NULL), 0);
}

static void test_limits_in_inspect_come_from_the_table(void **state)
{
	(void)state;
	struct capsule_config cfg = { .memory_bytes = 1u << 30, .cpus_milli = 500, .pids_limit = 64, .disk_bytes = 0 };
	struct json_writer j;
	json_init(&j, false);
	json_object_begin(&j);
	config_limits_inspect_json(&cfg, &j);
	json_object_end(&j);
	int e = 0;
	char *text = json_steal(&j, &e);
	assert_non_null(text);
	assert_string_equal(text, "{\"memory_bytes\":1073741824,\"cpus_milli\":500,\"pids\":64,\"disk_bytes\":0}");
	free(text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_layers_round_trip),
		cmocka_unit_test(test_cgroup_base_is_a_name_tilde_and_8_hex_digits),
		cmocka_unit_test(test_layer_errors),
		cmocka_unit_test(test_a_file_of_the_old_writer_reads_and_writes_back_the_same_lines),
		cmocka_unit_test(test_copy_owns_all_of_its_memory),
		cmocka_unit_test(test_every_row_of_the_table_is_whole),
		cmocka_unit_test(test_options_set_through_the_setters_checks),
		cmocka_unit_test(test_limits_in_inspect_come_from_the_table),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
