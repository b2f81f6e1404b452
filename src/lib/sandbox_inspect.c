/* What a sandbox is and was made with, for `capsule inspect` and `capsule ps`: its
 * configuration, and the state its shim writes in run/<name>/ while it runs. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "home.h"
#include "id_slot.h"
#include "inspect.h"
#include "json.h"
#include "parse.h"
#include "sandbox.h"
#include "sandbox_config.h"
#include "util.h"

/* 1 and INFO filled, or 0 when the sandbox lacks a label LABELS asks for (NULL: none asked).
 * *POOLED (when not NULL): a pool's ready sandbox, which is the pool's until taken. */
static int info_from_dir(int dir, const char *name, const char *const *labels, capsule_sandbox_info *info,
			 bool *pooled, capsule_error *err)
{
	memset(info, 0, sizeof(*info));
	struct capsule_config cfg;
	int r = config_load_at(dir, &cfg, err);
	if (r < 0)
		return r;
	for (size_t i = 0; labels && labels[i]; i++)
		if (!config_has_label(&cfg, labels[i])) {
			config_clear(&cfg);
			return 0;
		}
	snprintf(info->name, sizeof(info->name), "%s", name);
	snprintf(info->image, sizeof(info->image), "%s", cfg.image);
	snprintf(info->hostname, sizeof(info->hostname), "%s", config_hostname(&cfg));
	info->isolation = cfg.isolation;
	info->detached = cfg.detached;
	info->memory_bytes = cfg.memory_bytes;
	info->cpus_milli = cfg.cpus_milli;
	info->pids_limit = cfg.pids_limit;
	info->created_unix = cfg.created_unix;
	if (pooled)
		*pooled = cfg.pool[0] != '\0';
	config_clear(&cfg);
	bool running = run_dir_locked(dir);
	_cleanup_free_ char *state = NULL, *state_name = NULL;
	size_t len = 0;
	if (running && read_file_at(dir, "state.json", 1u << 16, &state, &len) == 0)
		json_get_string(state, len, "state", &state_name);
	/* The lock is held from the first moment of a start; the shim writes "running" only
	 * once it serves requests. In between, the sandbox is starting. */
	bool up = state_name && (!strcmp(state_name, "running") || !strcmp(state_name, "paused"));
	snprintf(info->state, sizeof(info->state), "%s", !running ? "stopped" : up ? state_name : "starting");
	/* Paused to disk, it has no shim to hold the lock: its state.json says so. */
	if (!running && run_dir_paused_to_disk(dir))
		snprintf(info->state, sizeof(info->state), "paused");
	if (running && state) {
		int64_t v;
		if (json_get_int(state, len, "shim_pid", &v) == 0)
			info->shim_pid = (pid_t)v;
		if (json_get_int(state, len, "init_pid", &v) == 0)
			info->init_pid = (pid_t)v;
		if (json_get_int(state, len, "started", &v) == 0)
			info->started_unix = v;
	}
	return 1;
}

int capsule_sandbox_inspect(capsule_sandbox *sb, capsule_sandbox_info *out, capsule_error *err)
{
	_cleanup_close_ int dir = -1;
	int r = run_dir_open(sandbox_config(sb)->name, &dir, err);
	if (r < 0)
		return r;
	r = info_from_dir(dir, sandbox_config(sb)->name, NULL, out, NULL, err);
	return r < 0 ? r : 0;
}

/* The vm's settings, and while it runs what the shim started (run/<name>/vm.json). */
static void inspect_vm_json(struct json_writer *j, capsule_sandbox *sb, const char *state)
{
	json_key(j, "vm");
	json_object_begin(j);
	json_kv_string(j, "accel_setting", sandbox_config(sb)->accel[0] ? sandbox_config(sb)->accel : "auto");
	json_key(j, "extra_qemu_args");
	json_array_begin(j);
	for (size_t i = 0; i < sandbox_config(sb)->nqemu_args; i++)
		json_string(j, sandbox_config(sb)->qemu_args[i]);
	json_array_end(j);
	/* 0: the default (2G, or the image's root where that is larger). */
	json_kv_uint(j, "disk_size_bytes", sandbox_config(sb)->disk_bytes);
	_cleanup_close_ int dir = -1;
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	if (strcmp(state, "stopped") != 0 && run_dir_open(sandbox_config(sb)->name, &dir, NULL) == 0 &&
	    read_file_at(dir, "vm.json", 1u << 20, &text, &len) == 0) {
		static const char *const keys[] = { "accel", "machine", "kernel", "kernel_version", "initramfs",
						    "qemu_command_line", "disk", "kernel_entry", "kernel_kind", "pvh_kernel",
						    "accel_fallback", "qemu_bounded_by" };
		for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
			_cleanup_free_ char *v = NULL;
			if (json_get_string(text, len, keys[i], &v) == 0)
				json_kv_string(j, keys[i], v);
		}
		int64_t pid;
		if (json_get_int(text, len, "qemu_pid", &pid) == 0)
			json_kv_int(j, "qemu_pid", pid);
	}
	json_object_end(j);
}

/* Who holds a paused sandbox: "user" (a client's pause, held until its resume) or "idle"
 * (the shim's own after idle_pause_ms, undone by the next request); null when not paused.
 * Where: paused_to "memory" (its processes held in place) or "disk" (its memory in the
 * folder's memory.state, of memory_state_bytes, and no process left). */
static void inspect_paused_by(struct json_writer *j, const char *name, const char *state)
{
	_cleanup_close_ int dir = -1;
	_cleanup_free_ char *text = NULL, *by = NULL, *to = NULL;
	size_t len = 0;
	int64_t bytes = -1;
	if (!strcmp(state, "paused") && run_dir_open(name, &dir, NULL) == 0 &&
	    read_file_at(dir, "state.json", 1u << 16, &text, &len) == 0) {
		json_get_string(text, len, "paused_by", &by);
		json_get_string(text, len, "paused_to", &to);
		json_get_int(text, len, "memory_state_bytes", &bytes);
	}
	json_kv_string(j, "paused_by", by);
	json_kv_string(j, "paused_to", to);
	if (to && !strcmp(to, "disk") && bytes >= 0)
		json_kv_int(j, "memory_state_bytes", bytes);
}

/* What the running container's shim says in state.json: whether its processes can go below
 * oom_score_adj 0 and why, what enforces its pids limit, and a user's sandbox's id map. */
static void inspect_shim_state(struct json_writer *j, const char *name)
{
	_cleanup_close_ int dir = -1;
	_cleanup_free_ char *text = NULL, *note = NULL;
	size_t len = 0;
	bool floor = false;
	if (run_dir_open(name, &dir, NULL) < 0 || read_file_at(dir, "state.json", 1u << 16, &text, &len) < 0 ||
	    json_get_bool(text, len, "oom_floor", &floor) < 0)
		return;
	json_kv_bool(j, "oom_floor", floor);
	if (json_get_string(text, len, "oom_note", &note) == 0)
		json_kv_string(j, "oom_note", note);
	/* What enforces the pids limit: a cgroup, or for a user without one RLIMIT_NPROC, per
	 * user id inside the sandbox (docs/rootless.md). */
	_cleanup_free_ char *by = NULL;
	if (json_get_string(text, len, "pids_limit_by", &by) == 0)
		json_kv_string(j, "pids_limit_by", by);
	const char *rl;
	size_t rl_len;
	if (json_get_member(text, len, "rootless", &rl, &rl_len) < 0)
		return;
	_cleanup_free_ char *map = NULL, *map_note = NULL;
	json_key(j, "rootless");
	json_object_begin(j);
	if (json_get_string(rl, rl_len, "id_map", &map) == 0)
		json_kv_string(j, "id_map", map);
	static const char *const ranges[] = { "sub_uid_start", "sub_uid_count", "sub_gid_start", "sub_gid_count" };
	for (size_t i = 0; i < ARRAY_SIZE(ranges); i++) {
		int64_t v;
		if (json_get_int(rl, rl_len, ranges[i], &v) == 0)
			json_kv_int(j, ranges[i], v);
	}
	if (json_get_string(rl, rl_len, "id_map_note", &map_note) == 0)
		json_kv_string(j, "id_map_note", map_note);
	json_object_end(j);
}

int capsule_sandbox_inspect_json(capsule_sandbox *sb, char **out_json, capsule_error *err)
{
	capsule_sandbox_info info;
	int r = capsule_sandbox_inspect(sb, &info, err);
	if (r < 0)
		return r;
	struct json_writer j;
	json_init(&j, true);
	json_object_begin(&j);
	json_kv_string(&j, "name", info.name);
	json_kv_string(&j, "state", info.state);
	json_kv_string(&j, "image", info.image);
	json_kv_string(&j, "save", sandbox_config(sb)->save[0] ? sandbox_config(sb)->save : NULL);
	json_kv_string(&j, "isolation", info.isolation == CAPSULE_ISOLATION_VM ? "vm" : "container");
	json_kv_string(&j, "hostname", info.hostname);
	json_kv_bool(&j, "detached", info.detached);
	json_kv_int(&j, "shim_pid", info.shim_pid);
	json_kv_int(&j, "init_pid", info.init_pid);
	json_kv_int(&j, "created", info.created_unix);
	json_kv_int(&j, "started", info.started_unix);
	inspect_paused_by(&j, sandbox_config(sb)->name, info.state);
	json_kv_uint(&j, "idle_pause_ms", sandbox_config(sb)->idle_pause_ms);
	/* capsule.h's one definition of idle, as the server's idle_timeout reads it. */
	capsule_stats st;
	if ((!strcmp(info.state, "running") || !strcmp(info.state, "paused")) && capsule_sandbox_stats(sb, &st, NULL) == 0) {
		json_kv_uint(&j, "active", st.active);
		json_kv_uint(&j, "idle_ms", st.idle_ms);
	}
	inspect_shim_state(&j, sandbox_config(sb)->name);
	uid_t ub;
	gid_t gb;
	uint32_t count;
	bool rootless;
	home_id_map(sandbox_config(sb)->id_slot, &ub, &gb, &count, &rootless);
	/* A guest's ids are its own kernel's: no host range is mapped for a vm. */
	if (info.isolation != CAPSULE_ISOLATION_VM) {
		json_kv_uint(&j, "host_uid_base", ub);
		json_kv_uint(&j, "host_id_count", count);
	}
	json_key(&j, "limits");
	json_object_begin(&j);
	/* disk_bytes 0: the level's default (a container's layer unbounded on the host's disk, a
	 * vm's 2G). */
	config_limits_inspect_json(sandbox_config(sb), &j);
	json_object_end(&j);
	json_key(&j, "mounts");
	json_array_begin(&j);
	for (size_t i = 0; i < sandbox_config(sb)->nbinds; i++) {
		json_object_begin(&j);
		json_kv_string(&j, "kind", sandbox_config(sb)->binds[i].volume ? "volume" : "bind");
		json_kv_string(&j, sandbox_config(sb)->binds[i].volume ? "volume" : "host_path", sandbox_config(sb)->binds[i].source);
		json_kv_string(&j, "guest_path", sandbox_config(sb)->binds[i].target);
		json_kv_bool(&j, "readonly", sandbox_config(sb)->binds[i].readonly);
		/* The plugin, never its config: that may be a key. */
		if (sandbox_config(sb)->binds[i].transform)
			json_kv_string(&j, "transform", sandbox_config(sb)->binds[i].transform);
		json_object_end(&j);
	}
	json_array_end(&j);
	json_key(&j, "tmpfs");
	json_array_begin(&j);
	for (size_t i = 0; i < sandbox_config(sb)->ntmpfs; i++) {
		json_object_begin(&j);
		json_kv_string(&j, "target", sandbox_config(sb)->tmpfs[i].target);
		json_kv_uint(&j, "size_bytes", sandbox_config(sb)->tmpfs[i].size_bytes);
		json_kv_uint(&j, "mode", sandbox_config(sb)->tmpfs[i].mode);
		json_object_end(&j);
	}
	json_array_end(&j);
	json_key(&j, "labels");
	json_object_begin(&j);
	for (size_t i = 0; i < sandbox_config(sb)->nlabels; i++) {
		const char *kv = sandbox_config(sb)->labels[i];
		const char *eq = strchr(kv, '=');
		char key[CAPSULE_LABEL_KEY_MAX + 1];
		snprintf(key, sizeof(key), "%.*s", (int)(eq - kv), kv);
		json_kv_string(&j, key, eq + 1);
	}
	json_object_end(&j);
	json_key(&j, "env");
	json_array_begin(&j);
	for (size_t i = 0; i < sandbox_config(sb)->envc; i++)
		json_string(&j, sandbox_config(sb)->env[i]);
	json_array_end(&j);
	/* A sandbox paused to disk has no shim to ask, nor a QEMU. */
	bool up = (!strcmp(info.state, "running") || !strcmp(info.state, "paused")) && capsule_sandbox_is_running(sb);
	sandbox_net_inspect_json(sb, sandbox_config(sb), up, &j);
	char path[4200];
	snprintf(path, sizeof(path), "%s/run/%s", capsule_home(), info.name);
	json_kv_string(&j, "run_dir", path);
	json_kv_uint(&j, "boot_timeout_ms", config_boot_timeout_ms(sandbox_config(sb)));
	if (info.isolation == CAPSULE_ISOLATION_VM)
		inspect_vm_json(&j, sb, up ? info.state : "stopped");
	if (info.isolation == CAPSULE_ISOLATION_VM)
		sandbox_display_inspect_json(sb, up, &j);
	json_object_end(&j);
	int e = 0;
	char *text = json_steal(&j, &e);
	if (!text)
		return cap_err(err, e ? -e : ENOMEM, "formatting inspect output");
	*out_json = text;
	return 0;
}

int capsule_sandbox_list(capsule_sandbox_info **out, size_t *count, capsule_error *err)
{
	return capsule_sandbox_list_labeled(out, count, NULL, err);
}

int capsule_sandbox_list_labeled(capsule_sandbox_info **out, size_t *count, const char *const *labels,
				 capsule_error *err)
{
	for (size_t i = 0; labels && labels[i]; i++) {
		_cleanup_free_ char *k = NULL, *v = NULL;
		int r = parse_label(labels[i], true, &k, &v, err);
		if (r < 0)
			return cap_err_wrap(err, r, "label filter");
	}
	_cleanup_close_ int run = -1;
	int r = home_subdir_open("run", &run, err);
	if (r < 0)
		return r;
	sweep_abandoned_creates(run);
	int dup_fd = fcntl(run, F_DUPFD_CLOEXEC, 3);
	DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
	if (!d) {
		if (dup_fd >= 0)
			close(dup_fd);
		return cap_err(err, errno, "listing '%s/run'", capsule_home());
	}
	rewinddir(d);
	capsule_sandbox_info *v = NULL;
	size_t n = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.' || validate_name(de->d_name, "name", NULL) < 0)
			continue;
		if (sweep_stale(de->d_name) == 1) {
			/* An ephemeral leftover is gone now; a named one is listed as stopped. */
		}
		_cleanup_close_ int dir = openat(run, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (dir < 0)
			continue;
		capsule_sandbox_info info;
		bool pooled = false;
		/* A pool's ready sandbox is listed by `pool ls` (as ready), not as anyone's sandbox. */
		if (info_from_dir(dir, de->d_name, labels, &info, &pooled, NULL) <= 0 || pooled)
			continue;
		capsule_sandbox_info *nv = realloc(v, (n + 1) * sizeof(*v));
		if (!nv) {
			free(v);
			closedir(d);
			return cap_err(err, ENOMEM, "listing sandboxes");
		}
		v = nv;
		v[n++] = info;
	}
	closedir(d);
	*out = v;
	*count = n;
	return 0;
}
