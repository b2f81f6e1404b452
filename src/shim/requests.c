/* What clients ask of the shim: HELLO, then commands and their streams (passed on to the
 * agent over a channel of their own), STOP, and the requests the shim answers itself: mounts,
 * ports, saves, the display. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "cgroup.h"
#include "save.h"
#include "shim.h"

/* While a save copies the layer, the sandbox is paused and the copy is of one moment: another
 * save, a revert and changes to its mounts and ports are refused until it is done. Commands
 * (EXEC, FS) are passed on and run once it resumes; during a revert, which has the sandbox
 * down, they are refused too. */
static bool refused_while_saving(struct shim *s, int ci, uint32_t chan)
{
	if (!save_job_running(&s->save))
		return false;
	io_client_error(&s->io, ci, chan, EBUSY, "sandbox '%s' is busy with %s '%s': try again when it is done", s->name,
			shim_save_op_name(s->save.op), s->save.name);
	return true;
}

/* A paused sandbox stays as its client left it: what needs its processes (a command, a file
 * operation, a signal, a mount into it, a revert) is refused with one line, neither queued
 * (a command would wait with no sign of why, for as long as the pause lasts) nor let through
 * by resuming (a pause is held until its owner says otherwise: a grader inspecting a moment,
 * a scheduler that took the CPU back). What the shim answers alone still works: ps, inspect,
 * mounts and ports, a save (of the paused moment), a stop. */
static bool refused_while_paused(struct shim *s, int ci, uint32_t chan)
{
	if (!s->paused)
		return false;
	/* The shim's own pause, for idleness, is nobody's to hold: the request resumes it, and
	 * its user never sees it (but for the resume's time). */
	capsule_error err = { 0 };
	if (s->paused_by_idle) {
		if (sandbox_unpause(s, &err) == 0)
			return false;
		io_client_error(&s->io, ci, chan, err.code ? err.code : EIO, "resuming idle sandbox '%s': %s", s->name,
				err.message);
		return true;
	}
	io_client_error(&s->io, ci, chan, EBUSY, "sandbox '%s' is paused: resume it first", s->name);
	return true;
}

/* The requests the shim answers itself go on a fresh channel of their own, and not while the
 * sandbox stops. */
static bool fresh_channel_and_running(struct shim *s, int ci, const struct cp_header *h)
{
	if (h->chan == 0 || io_chan_by_client(&s->io, ci, h->chan)) {
		io_client_error(&s->io, ci, h->chan, EBADMSG, "%s on channel %u, which is 0 or in use",
				cp_type_name(h->type), h->chan);
		return false;
	}
	if (s->stopping) {
		io_client_error(&s->io, ci, h->chan, ESHUTDOWN, "sandbox '%s' is stopping", s->name);
		return false;
	}
	return true;
}

static bool shim_request_acceptable(struct shim *s, int ci, const struct cp_header *h)
{
	if (!fresh_channel_and_running(s, ci, h))
		return false;
	bool changes_sandbox = h->type == CP_MOUNT || h->type == CP_UNMOUNT || h->type == CP_PORT_ADD ||
			       h->type == CP_PORT_REMOVE;
	if (changes_sandbox && refused_while_saving(s, ci, h->chan))
		return false;
	return !((h->type == CP_MOUNT || h->type == CP_UNMOUNT) && refused_while_paused(s, ci, h->chan));
}

/* Mounts, saves and reverts change what a request waiting for the guest works on: one at a
 * time, the others refused at once rather than queued behind a guest that may never answer. */
static bool guest_busy(struct shim *s, int ci, const struct cp_header *h)
{
	if (!s->agent_waiting)
		return false;
	io_client_error(&s->io, ci, h->chan, EBUSY,
			"sandbox '%s' is waiting for its guest to answer another request; try again", s->name);
	return true;
}

/* Their one final answer: ERROR with ERR when R < 0, else OK carrying OK's fields. */
static void shim_request_answer(struct shim *s, int ci, const struct cp_header *h, int r, const capsule_error *err,
				const struct cp_request_ok *ok)
{
	if (r < 0) {
		io_client_error(&s->io, ci, h->chan, err->code ? err->code : -r, "%s", err->message);
		return;
	}
	if ((r = cp_request_ok_encode(&s->io.w, h->chan, ok)) < 0) {
		io_client_error(&s->io, ci, h->chan, -r, "encoding the answer to %s", cp_type_name(h->type));
		return;
	}
	io_to_client(&s->io, ci, s->io.w.buf, s->io.w.len);
}

/* Hot mounts are answered here: a container's is a few syscalls and one short-lived child,
 * well under the time a client would notice the loop pause; a vm's waits for the guest's
 * answer, serving the other clients meanwhile (agent_wait_answer). */
static void mount_request(struct shim *s, int ci, const struct cp_header *h, const uint8_t *payload)
{
	if (!shim_request_acceptable(s, ci, h) || guest_busy(s, ci, h))
		return;
	uid_t ub;
	gid_t gb;
	uint32_t count;
	struct mount_sandbox sb = { .name = s->name, .cfg = &s->cfg, .shim = s, .level = s->level };
	home_id_map(s->cfg.id_slot, &ub, &gb, &count, &sb.rootless);
	capsule_error err = { 0 };
	struct cp_request_ok ok = { 0 };
	_cleanup_free_ char *list = NULL;
	int r;
	if (h->type == CP_MOUNT) {
		struct cp_mount m;
		struct mount_peer peer;
		if (cp_mount_decode(payload, h->len, &m) < 0) {
			io_client_error(&s->io, ci, h->chan, EBADMSG, "malformed MOUNT request");
			return;
		}
		const char *handle = NULL;
		r = mount_peer_get(s->io.clients[ci].fd, &peer, &err);
		if (r == 0) {
			uint64_t t0 = now_ns();
			r = hot_mount_add(&s->hot, &sb, &peer, m.host_path, m.guest_path, m.flags, &handle, &err);
			if (r == 0)
				shim_log("hot mount %s: '%s' at '%s'%s for uid %u (%.2f ms)", handle, m.host_path,
					 s->hot.m[s->hot.n - 1].target, (m.flags & CP_MOUNT_RO) ? " read-only" : "",
					 (unsigned)peer.uid, (double)(now_ns() - t0) / 1e6);
			mount_peer_free(&peer);
		}
		ok.handle = (char *)handle;
		cp_mount_free(&m);
	} else if (h->type == CP_UNMOUNT) {
		struct cp_unmount m;
		if (cp_unmount_decode(payload, h->len, &m) < 0) {
			io_client_error(&s->io, ci, h->chan, EBADMSG, "malformed UNMOUNT request");
			return;
		}
		uint64_t t0 = now_ns();
		r = hot_mount_remove(&s->hot, &sb, m.target, &err);
		if (r == 0)
			shim_log("hot mount '%s' removed (%.2f ms)", m.target, (double)(now_ns() - t0) / 1e6);
		cp_unmount_free(&m);
	} else {
		r = mounts_list_json(&s->hot, &sb, &list, &err);
		ok.list_json = list;
	}
	shim_request_answer(s, ci, h, r, &err, &ok);
}

/* Activity and resource use, read at once from the shim's own counters, the cgroups and
 * /proc (stats.c). */
static void stats_request(struct shim *s, int ci, const struct cp_header *h)
{
	if (!fresh_channel_and_running(s, ci, h))
		return;
	capsule_error err = { 0 };
	_cleanup_free_ char *json = NULL;
	int r = shim_stats_json(s, &json, &err);
	struct cp_request_ok ok = { .list_json = json };
	shim_request_answer(s, ci, h, r, &err, &ok);
}

/* A running sandbox's cgroup limits changed (container/cgroup_update.c). A vm's cgroup is
 * its QEMU's: cpu and pids map onto it, its memory is the guest's RAM and is refused. */
static void limits_request(struct shim *s, int ci, const struct cp_header *h, const uint8_t *payload)
{
	if (!fresh_channel_and_running(s, ci, h))
		return;
	struct cp_limits m;
	if (cp_limits_decode(payload, h->len, &m) < 0) {
		io_client_error(&s->io, ci, h->chan, EBADMSG, "malformed LIMITS request");
		return;
	}
	capsule_error err = { 0 };
	char why[160];
	int r;
	capsule_limits lim = {
		.set = m.set,
		.memory_bytes = m.memory_bytes,
		.cpu_quota_us = m.cpu_quota_us,
		.cpu_period_us = m.cpu_period_us,
		.cpu_shares = m.cpu_shares,
		.pids_max = m.pids_max,
		.memory_swap_bytes = m.memory_swap,
		.memory_reservation_bytes = m.memory_reservation,
		.cpuset_cpus = m.cpuset_cpus,
		.cpuset_mems = m.cpuset_mems,
		.cpu_rt_period_us = m.cpu_rt_period_us,
		.cpu_rt_runtime_us = m.cpu_rt_runtime_us,
	};
	if (cp_limits_check(&m, why, sizeof(why)) < 0)
		r = cap_err_plain(&err, EINVAL, "%s", why);
	else if ((m.set & CAPSULE_LIMIT_MEMORY) && s->cfg.isolation == CAPSULE_ISOLATION_VM)
		r = cap_err_plain(&err, EOPNOTSUPP, "a vm's memory is its guest's, fixed when it boots");
	else if ((m.set & ~(CAPSULE_LIMIT_CPU_QUOTA | CAPSULE_LIMIT_CPU_PERIOD | CAPSULE_LIMIT_CPU_SHARES |
			    CAPSULE_LIMIT_PIDS)) && s->cfg.isolation == CAPSULE_ISOLATION_VM)
		r = cap_err_plain(&err, EOPNOTSUPP, "a vm's cgroup is QEMU's: its cpu quota, period, shares and pids "
						    "change, nothing finer");
	else
		r = cgroup_update(s->cg, &lim, &err);
	if (r < 0)
		cap_err_wrap(&err, r, "update of sandbox '%s'", s->name);
	else
		shim_log("limits updated (set 0x%x)", m.set);
	struct cp_request_ok ok = { 0 };
	shim_request_answer(s, ci, h, r, &err, &ok);
}

/* Port forwards are answered here, at once: a listen or a close. */
static void port_request(struct shim *s, int ci, const struct cp_header *h, const uint8_t *payload)
{
	if (!shim_request_acceptable(s, ci, h))
		return;
	capsule_error err = { 0 };
	struct cp_request_ok ok = { 0 };
	_cleanup_free_ char *list = NULL;
	int r;
	if (h->type == CP_PORTS) {
		r = net_ports_json(&s->net, &list, &err);
		ok.list_json = list;
	} else {
		struct cp_port m;
		if (cp_port_decode(h->type, payload, h->len, &m) < 0) {
			io_client_error(&s->io, ci, h->chan, EBADMSG, "malformed %s request", cp_type_name(h->type));
			return;
		}
		r = h->type == CP_PORT_ADD ? net_port_add(&s->net, &m, &err) : net_port_remove(&s->net, &m, &err);
		cp_port_free(&m);
	}
	shim_request_answer(s, ci, h, r, &err, &ok);
}

/* Egress rules (egress.c): an nft run at most, answered at once. */
static void net_rule_request(struct shim *s, int ci, const struct cp_header *h, const uint8_t *payload)
{
	if (!shim_request_acceptable(s, ci, h))
		return;
	capsule_error err = { 0 };
	struct cp_request_ok ok = { 0 };
	_cleanup_free_ char *list = NULL;
	int r;
	if (h->type == CP_NET_LS) {
		r = egress_json(&s->net, &list, &err);
		ok.list_json = list;
	} else {
		struct cp_net_rule m;
		if (cp_net_rule_decode(h->type, payload, h->len, &m) < 0) {
			io_client_error(&s->io, ci, h->chan, EBADMSG, "malformed %s request", cp_type_name(h->type));
			return;
		}
		r = h->type == CP_NET_ALLOW ? egress_allow(&s->net, m.rule, &err) : egress_deny(&s->net, m.rule, &err);
		cp_net_rule_free(&m);
	}
	shim_request_answer(s, ci, h, r, &err, &ok);
}

static struct save_sandbox save_sandbox_of_shim(struct shim *s)
{
	return (struct save_sandbox){
		.cfg = &s->cfg, .run_fd = s->run_fd, .shim = s, .level = s->level, .held = s->paused
	};
}

static void save_answer(struct shim *s, int ci, uint32_t chan, int r, const capsule_error *err)
{
	if (r < 0) {
		io_client_error(&s->io, ci, chan, err->code ? err->code : -r, "%s", err->message);
	} else if (cp_empty_encode(&s->io.w, CP_OK, chan) == 0) {
		io_to_client(&s->io, ci, s->io.w.buf, s->io.w.len);
		/* The answer goes out first; what the save replaced is removed after. */
		outq_flush(&s->io.clients[ci].out, s->io.clients[ci].fd);
	}
}

/* The save's child has exited (or, with CANCEL, is killed now): the sandbox resumes (after a
 * revert, starts again) and the client that asked hears how it went. A revert that cannot
 * start the sandbox again ends it. */
void save_done(struct shim *s, bool cancel)
{
	struct save_sandbox sb = save_sandbox_of_shim(s);
	io_unwatch(&s->io, s->save.pidfd);
	enum save_op op = s->save.op;
	char name[sizeof(s->save.name)];
	snprintf(name, sizeof(name), "%s", s->save.name);
	uint64_t t0 = s->save.started_ns;
	capsule_error err = { 0 };
	int r = shim_save_finish(&sb, &s->save, cancel, &err);
	if (r == 0 && op == SAVE_OP_REVERT)
		r = revert_restart(s, &err);
	if (r < 0)
		shim_log("%s", err.message);
	else
		shim_log("%s '%s' done (%.1f ms)", shim_save_op_name(op), name, (double)(now_ns() - t0) / 1e6);
	if (s->save_client >= 0)
		save_answer(s, s->save_client, s->save_chan, r, &err);
	s->save_client = -1;
	if (r < 0 && op == SAVE_OP_REVERT && !s->exiting)
		finish_and_exit(s);
}

/* SAVE is answered by save_done, once a child has copied the layer (for a revert, once the
 * sandbox runs again), the loop serving the other clients meanwhile, as it does while a vm's
 * guest is asked to sync first, which it may never answer. One at a time: a second is
 * refused until the first is done. */
static void save_request(struct shim *s, int ci, const struct cp_header *h, const uint8_t *payload)
{
	if (!fresh_channel_and_running(s, ci, h) || refused_while_saving(s, ci, h->chan) || guest_busy(s, ci, h))
		return;
	struct cp_save m;
	if (cp_save_decode(payload, h->len, &m) < 0) {
		io_client_error(&s->io, ci, h->chan, EBADMSG, "malformed SAVE request");
		return;
	}
	if (m.op == CP_SAVE_OP_REVERT && refused_while_paused(s, ci, h->chan)) {
		cp_save_free(&m);
		return;
	}
	capsule_error err = { 0 };
	enum save_op op = SAVE_OP_SAVE;
	int r = save_op_from_wire(m.op, &op, &err);
	if (r == 0 && op == SAVE_OP_REVERT && (r = checkpoint_exists(s->run_fd, m.name, &err)) == 0)
		revert_take_down(s);
	struct save_sandbox sb = save_sandbox_of_shim(s);
	if (r == 0)
		r = shim_save_start(&sb, op, m.name, &s->save, &err);
	cp_save_free(&m);
	if (r < 0) {
		save_answer(s, ci, h->chan, r, &err);
		/* The old sandbox is gone and the new one will not start: it is over. */
		if (sandbox_down(s))
			finish_and_exit(s);
		return;
	}
	s->save_client = ci;
	s->save_chan = h->chan;
	io_watch(&s->io, s->save.pidfd, KEY_SAVE, EPOLLIN);
}

int sandbox_unpause(struct shim *s, capsule_error *err)
{
	if (!s->paused)
		return 0;
	int r = s->level->resume(s, err);
	if (r < 0)
		return r;
	s->paused = false;
	bool idle = s->paused_by_idle;
	s->paused_by_idle = false;
	/* Idle time counts from the resume: a sandbox resumed and left alone is paused again
	 * after the whole idle time, not at once. */
	s->io.idle_since_ms = now_ms();
	write_state(s, "running");
	shim_log("resumed%s", idle ? " (was paused for idleness)" : "");
	return 0;
}

/* The idle pause is due when the sandbox is up and not already paused, nothing is active
 * (io.h: no command, session, file operation or watch open), and nothing else holds the
 * sandbox: a stop, a save's copy, a wait for the guest, a pool's ready sandbox not yet
 * taken (its taker would find it paused). */
static bool idle_pause_armed(struct shim *s)
{
	return s->cfg.idle_pause_ms && s->loop_running && !s->paused && !s->stopping && !s->exiting &&
	       !s->agent_waiting && !save_job_running(&s->save) && !s->cfg.pool[0] && s->io.active == 0;
}

int idle_pause_wait_ms(struct shim *s)
{
	if (!idle_pause_armed(s))
		return -1;
	uint64_t due = s->io.idle_since_ms + s->cfg.idle_pause_ms, now = now_ms();
	return due <= now ? 0 : (int)(due - now);
}

void idle_pause_check(struct shim *s)
{
	if (idle_pause_wait_ms(s) != 0)
		return;
	capsule_error err = { 0 };
	uint64_t t0 = now_ns();
	if (s->level->pause(s, &err) < 0) {
		/* Tried again after another idle time, not in a loop. */
		shim_log("idle pause: %s", err.message);
		s->io.idle_since_ms = now_ms();
		return;
	}
	s->paused = s->paused_by_idle = true;
	write_state(s, "paused");
	shim_log("paused after %u ms idle (%.2f ms)", s->cfg.idle_pause_ms, (double)(now_ns() - t0) / 1e6);
	/* A vm's pause waits for the guest's sync, serving clients meanwhile: a command that came
	 * in then is running, and resumes the sandbox now. */
	if (s->io.active && sandbox_unpause(s, &err) < 0)
		shim_log("idle resume: %s", err.message);
}

/* PAUSE to disk: the level writes the sandbox's memory to its folder and ends its process,
 * then the shim ends as at a stop, the asker answered once the lock is free (a resume may
 * start a new shim at once). Only a detached sandbox: an ephemeral one ends with its
 * creator's connection, which this shim's exit closes. */
static void pause_to_disk_request(struct shim *s, int ci, const struct cp_header *h)
{
	capsule_error err = { 0 };
	int r;
	if (!s->level->pause_to_disk)
		r = cap_err_plain(&err, EOPNOTSUPP, CAPSULE_PAUSE_TO_DISK_CONTAINER);
	else if (!s->cfg.detached || s->cfg.pool[0])
		r = cap_err_plain(&err, EOPNOTSUPP,
				  "sandbox '%s' is %s: only a detached sandbox can be paused to disk", s->name,
				  s->cfg.pool[0] ? "a pool's ready sandbox" : "ephemeral (it ends with its creator)");
	else
		r = s->level->pause_to_disk(s, &err);
	if (r < 0) {
		struct cp_request_ok ok = { 0 };
		shim_request_answer(s, ci, h, r, &err, &ok);
		return;
	}
	s->io.clients[ci].stop_waiter = true;
	s->io.clients[ci].stop_chan = h->chan;
	finish_paused_to_disk(s);
}

/* PAUSE holds every process still, in memory, until RESUME: the level's own pause, the one a
 * save's copy uses (a vm's guest syncs its disks first). Not during a save (whose pause and
 * resume are its own), and not for a guest that is already being waited for. Asking for the
 * state that holds is answered OK (docs/errors.md). */
static void pause_request(struct shim *s, int ci, const struct cp_header *h, const uint8_t *payload)
{
	if (!fresh_channel_and_running(s, ci, h) || refused_while_saving(s, ci, h->chan) || guest_busy(s, ci, h))
		return;
	struct cp_pause m;
	if (cp_pause_decode(payload, h->len, &m) < 0) {
		io_client_error(&s->io, ci, h->chan, EBADMSG, "malformed PAUSE request");
		return;
	}
	if (m.op == CP_PAUSE_OP_TO_DISK) {
		pause_to_disk_request(s, ci, h);
		return;
	}
	capsule_error err = { 0 };
	int r = 0;
	uint64_t t0 = now_ns();
	if (m.op == CP_PAUSE_OP_RESUME) {
		r = sandbox_unpause(s, &err);
	} else if (s->paused_by_idle) {
		/* Held by its client from now on, as if it had paused it. */
		s->paused_by_idle = false;
		write_state(s, "paused");
	} else if (!s->paused) {
		r = s->level->pause(s, &err);
		if (r == 0) {
			s->paused = true;
			write_state(s, "paused");
			shim_log("paused (%.2f ms)", (double)(now_ns() - t0) / 1e6);
		}
	}
	if (r < 0)
		cap_err_wrap(&err, r, "%s of sandbox '%s'", m.op == CP_PAUSE_OP_PAUSE ? "pause" : "resume", s->name);
	struct cp_request_ok ok = { 0 };
	shim_request_answer(s, ci, h, r, &err, &ok);
}

/* The loop waits for these (a screendump is QEMU's copy of the framebuffer). */
static void display_request(struct shim *s, int ci, const struct cp_header *h, const uint8_t *payload)
{
	if (!shim_request_acceptable(s, ci, h))
		return;
	capsule_error err = { 0 };
	int r = s->level->display(s, h, payload, &s->io.w, &err);
	if (r < 0)
		io_client_error(&s->io, ci, h->chan, err.code ? err.code : -r, "%s", err.message);
	else
		io_to_client(&s->io, ci, s->io.w.buf, s->io.w.len);
}

/* A pool's ready sandbox becomes the taker's: renamed (its folder and id slot; its cgroups keep
 * the name it started under, config's origin), no longer the pool's, owned by the taker's
 * connection or by nobody. The loop serves one request at a time, so of two takers the first
 * gets it and the second finds it no longer the pool's. */
static int take_sandbox(struct shim *s, int ci, const struct cp_take *m, capsule_error *err)
{
	if (!s->cfg.pool[0] || strcmp(s->cfg.pool, m->pool) != 0)
		return cap_err_plain(err, EBUSY, "sandbox '%s' is not a ready sandbox of pool '%s'", s->name, m->pool);
	int r = validate_name(m->name, "sandbox name", err);
	if (r < 0)
		return r;
	_cleanup_close_ int run = -1;
	if ((r = home_subdir_open("run", &run, err)) < 0)
		return r;
	char old_name[sizeof(s->name)], old_pool[sizeof(s->cfg.pool)];
	bool old_detached = s->cfg.detached;
	snprintf(old_name, sizeof(old_name), "%s", s->name);
	snprintf(old_pool, sizeof(old_pool), "%s", s->cfg.pool);
	bool rename = strcmp(old_name, m->name) != 0;
	if (rename && (r = id_slot_rename(run, old_name, m->name, s->cfg.id_slot, err)) < 0)
		return r;
	snprintf(s->cfg.name, sizeof(s->cfg.name), "%s", m->name);
	s->cfg.pool[0] = '\0';
	s->cfg.detached = m->detached != 0;
	_cleanup_free_ char *text = NULL;
	size_t len;
	/* An ephemeral sandbox's folder does not outlive a host crash (the next open sweeps it)
	 * and goes whole at its end, so its config is swapped in, not renamed over: the take is
	 * waited on. A detached one's must survive a crash as it was or as it is. */
	if ((r = config_serialize(&s->cfg, &text, &len)) < 0 ||
	    (r = s->cfg.detached ? write_file_atomic_at(s->run_fd, "config", text, len, 0600, false)
				 : write_file_swap_at(s->run_fd, "config", text, len, 0600)) < 0) {
		cap_err(err, -r, "writing the configuration of sandbox '%s'", m->name);
		snprintf(s->cfg.name, sizeof(s->cfg.name), "%s", old_name);
		snprintf(s->cfg.pool, sizeof(s->cfg.pool), "%s", old_pool);
		s->cfg.detached = old_detached;
		if (rename)
			id_slot_rename(run, m->name, old_name, s->cfg.id_slot, NULL);
		return r;
	}
	snprintf(s->name, sizeof(s->name), "%s", m->name);
	/* Its idle time starts with its taker. state.json names the sandbox and says nothing
	 * else a take changes. */
	s->io.idle_since_ms = now_ms();
	if (rename)
		write_state(s, "running");
	for (int i = 0; i < MAX_CLIENTS; i++)
		s->io.clients[i].owner = false;
	s->io.clients[ci].owner = !s->cfg.detached;
	shim_log("taken from pool '%s' as '%s'%s", old_pool, m->name, s->cfg.detached ? ", detached" : "");
	return 0;
}

static void take_request(struct shim *s, int ci, const struct cp_header *h, const uint8_t *payload)
{
	if (!fresh_channel_and_running(s, ci, h))
		return;
	struct cp_take m;
	if (cp_take_decode(payload, h->len, &m) < 0) {
		io_client_error(&s->io, ci, h->chan, EBADMSG, "malformed TAKE request");
		return;
	}
	/* The pool's keeper made the sandbox: its connection was the owner. */
	int keeper = -1;
	for (int i = 0; i < MAX_CLIENTS; i++)
		if (s->io.clients[i].used && s->io.clients[i].owner)
			keeper = i;
	capsule_error err = { 0 };
	int r = take_sandbox(s, ci, &m, &err);
	cp_take_free(&m);
	struct cp_request_ok ok = { 0 };
	shim_request_answer(s, ci, h, r, &err, &ok);
	/* Its hang-up is how the keeper learns that the sandbox was taken and makes another. */
	if (r == 0 && keeper >= 0 && keeper != ci)
		io_client_close(&s->io, keeper);
}

static void hello_request(struct shim *s, int ci, const struct cp_header *h, const uint8_t *payload)
{
	struct client *c = &s->io.clients[ci];
	struct cp_hello m;
	if (h->type != CP_HELLO || cp_hello_decode(payload, h->len, &m) < 0) {
		io_client_error(&s->io, ci, h->chan, EPROTO, "expected HELLO first");
		c->closing = true;
		return;
	}
	uint32_t v = m.version;
	c->one_command = m.flags & CP_HELLO_ONE_COMMAND;
	cp_hello_free(&m);
	if (v != CP_VERSION) {
		io_client_error(&s->io, ci, h->chan, EPROTONOSUPPORT, "protocol version %u not supported (this shim speaks %u)",
				v, CP_VERSION);
		c->closing = true;
		return;
	}
	c->hello_done = true;
	struct cp_hello me = { .version = CP_VERSION, .role = "shim" };
	if (cp_hello_encode(&s->io.w, 0, &me) == 0)
		io_to_client(&s->io, ci, s->io.w.buf, s->io.w.len);
}

/* A READ or WRITE that asks for a direct stream (CP_FS_DIRECT): noted on its channel, for
 * the agent's STARTED (agent.c, direct_stream_start). */
static void note_direct(struct shim *s, const struct cp_header *h, const uint8_t *payload, struct channel *ch)
{
	struct cp_fs m;
	if (!s->level->passes_fds || cp_fs_decode(payload, h->len, &m) < 0)
		return; /* the agent answers a malformed one */
	ch->direct = (m.flags & CP_FS_DIRECT) && (m.op == CP_FS_READ || m.op == CP_FS_WRITE);
	ch->direct_read = m.op == CP_FS_READ;
	cp_fs_free(&m);
}

static void fds_close(const int *fds, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		close(fds[i]);
}

/* Descriptors waiting in the queue to the agent are ours until it reads them: an agent that
 * does not read cannot make a client's EXECs use up the shim's. */
#define AGENT_QUEUED_FDS_MAX (2 * CP_EXEC_MAX_FDS)

/* Whether an EXEC that came with NFDS descriptors is refused here (and answered). */
static bool exec_fds_refused(struct shim *s, int ci, const struct cp_header *h, unsigned nfds)
{
	if (!s->level->passes_fds) {
		io_client_error(&s->io, ci, h->chan, EOPNOTSUPP, "descriptors cannot be passed to a command of vm '%s': "
				"its agent is reached over virtio-serial, which carries bytes only", s->name);
		return true;
	}
	if (s->io.agent_out.nfds + nfds > AGENT_QUEUED_FDS_MAX) {
		io_client_error(&s->io, ci, h->chan, EAGAIN, "too many descriptors wait for the agent of sandbox '%s'",
				s->name);
		return true;
	}
	return false;
}

/* EXEC, FS, WATCH and SIGNAL open a channel to the agent (a SIGNAL on an open one is passed on). */
static void command_request(struct shim *s, int ci, const struct cp_header *h, const uint8_t *payload,
			    struct channel *ch)
{
	struct client *c = &s->io.clients[ci];
	if (h->type == CP_SIGNAL && ch) {
		io_forward(&s->io, true, ci, h, payload, ch->agent_chan);
		return;
	}
	if (!fresh_channel_and_running(s, ci, h))
		return;
	/* No agent to pass it to until the sandbox starts again. */
	if (s->save.op == SAVE_OP_REVERT && refused_while_saving(s, ci, h->chan))
		return;
	if (refused_while_paused(s, ci, h->chan))
		return;
	if (c->nchans >= MAX_CHANNELS_PER_CLIENT) {
		io_client_error(&s->io, ci, h->chan, EAGAIN, "too many open channels on this connection (%d)",
				MAX_CHANNELS_PER_CLIENT);
		return;
	}
	/* An EXEC's descriptors (--preserve-fds) are the client's to give to its command; any
	 * other frame's are closed with its bytes (cp_rxbuf_consume). */
	int fds[CP_EXEC_MAX_FDS];
	unsigned nfds = h->type == CP_EXEC && c->rx.nfds ? cp_rxbuf_take_fds(&c->rx, h, fds, CP_EXEC_MAX_FDS) : 0;
	if (nfds && exec_fds_refused(s, ci, h, nfds)) {
		fds_close(fds, nfds);
		return;
	}
	ch = io_chan_new(&s->io, ci, h->chan);
	if (!ch) {
		fds_close(fds, nfds);
		io_client_error(&s->io, ci, h->chan, EAGAIN, "too many open channels on sandbox '%s'", s->name);
		return;
	}
	c->nchans++;
	ch->fs = h->type == CP_FS;
	if (h->type == CP_FS)
		note_direct(s, h, payload, ch);
	if (nfds)
		io_forward_fds(&s->io, h, payload, ch->agent_chan, fds, nfds);
	else
		io_forward(&s->io, true, ci, h, payload, ch->agent_chan);
}

static void client_request(struct shim *s, int ci, const struct cp_header *h, const uint8_t *payload)
{
	struct client *c = &s->io.clients[ci];
	if (!c->hello_done) {
		hello_request(s, ci, h, payload);
		return;
	}
	/* A pool's ready sandbox is fresh until it is taken: nothing runs in it before. */
	if (s->cfg.pool[0] && h->type != CP_TAKE && h->type != CP_STOP) {
		io_client_error(&s->io, ci, h->chan, EBUSY,
				"sandbox '%s' is a ready sandbox of pool '%s': take it with --pool %s", s->name, s->cfg.pool,
				s->cfg.pool);
		return;
	}
	struct channel *ch = h->chan ? io_chan_by_client(&s->io, ci, h->chan) : NULL;
	switch (h->type) {
	case CP_EXEC:
	case CP_FS:
	case CP_WATCH:
	case CP_SIGNAL:
		command_request(s, ci, h, payload, ch);
		return;
	case CP_DATA:
		if ((h->flags & CP_FLAG_STREAM_MASK) != CP_STREAM_STDIN) {
			io_client_error(&s->io, ci, 0, EBADMSG, "DATA from a client must be stdin; closing the connection");
			c->closing = true;
			return;
		}
		if (!ch)
			return; /* late stdin after exit */
		if (h->len > ch->in_credit) {
			io_client_error(&s->io, ci, h->chan, EBADMSG, "stdin sent past its flow-control credit");
			c->closing = true;
			return;
		}
		ch->in_credit -= h->len;
		io_forward(&s->io, true, ci, h, payload, ch->agent_chan);
		return;
	case CP_CREDIT: {
		struct cp_credit m;
		if (!ch || cp_credit_decode(payload, h->len, &m) < 0 || m.stream < 1 || m.stream > 2)
			return;
		ch->out_credit[m.stream] += m.bytes;
		io_forward(&s->io, true, ci, h, payload, ch->agent_chan);
		return;
	}
	case CP_RESIZE:
		if (ch)
			io_forward(&s->io, true, ci, h, payload, ch->agent_chan);
		return;
	case CP_STOP: {
		struct cp_stop m;
		if (cp_stop_decode(payload, h->len, &m) < 0) {
			io_client_error(&s->io, ci, h->chan, EBADMSG, "malformed STOP request");
			return;
		}
		c->stop_waiter = true;
		c->stop_chan = h->chan;
		if (m.keep)
			s->stop_keep = true;
		if (m.remove)
			s->stop_remove = true;
		begin_stop(s, m.timeout_ms);
		return;
	}
	case CP_TAKE:
		take_request(s, ci, h, payload);
		return;
	case CP_MOUNT:
	case CP_UNMOUNT:
	case CP_MOUNTS:
		mount_request(s, ci, h, payload);
		return;
	case CP_SAVE:
		save_request(s, ci, h, payload);
		return;
	case CP_PAUSE:
		pause_request(s, ci, h, payload);
		return;
	case CP_PORT_ADD:
	case CP_PORT_REMOVE:
	case CP_PORTS:
		port_request(s, ci, h, payload);
		return;
	case CP_NET_ALLOW:
	case CP_NET_DENY:
	case CP_NET_LS:
		net_rule_request(s, ci, h, payload);
		return;
	case CP_STATS:
		stats_request(s, ci, h);
		return;
	case CP_LIMITS:
		limits_request(s, ci, h, payload);
		return;
	case CP_SCREENSHOT:
	case CP_INPUT:
		display_request(s, ci, h, payload);
		return;
	default:
		io_client_error(&s->io, ci, h->chan, EOPNOTSUPP, "%s is not a request a client can make",
				cp_type_name(h->type));
	}
}

void client_readable(struct shim *s, int ci)
{
	struct client *c = &s->io.clients[ci];
	long n = cp_rxbuf_fill_fds(&c->rx, c->fd);
	if (n == -EAGAIN)
		return;
	if (n <= 0) {
		io_client_close(&s->io, ci);
		return;
	}
	struct cp_header h;
	const uint8_t *payload;
	int k = 0;
	io_cork_agent(&s->io);
	while (c->used && !c->closing && (k = cp_rxbuf_peek(&c->rx, &h, &payload)) > 0) {
		/* Another client's request may be served inside this one's wait for the guest. */
		int outer = s->serving_client;
		s->serving_client = ci;
		client_request(s, ci, &h, payload);
		s->serving_client = outer;
		if (c->gone) {
			io_uncork_agent(&s->io);
			io_client_close(&s->io, ci);
			return;
		}
		if (c->used)
			cp_rxbuf_consume(&c->rx, &h);
	}
	io_uncork_agent(&s->io);
	if (c->used && !c->closing && k < 0) {
		/* Garbage on the socket: tell the client why, drop it, and carry on. */
		io_client_error(&s->io, ci, 0, EBADMSG, "malformed frame header; closing the connection");
		c->closing = true;
	}
	if (c->used && c->closing && outq_pending(&c->out) == 0)
		io_client_close(&s->io, ci);
	else if (c->used)
		io_client_update_events(&s->io, ci);
}
