"""An ephemeral sandbox (capsule run) dies with the process that made it, even on SIGKILL."""
import fcntl
import os
import signal
import struct
import subprocess

import pytest

from .helpers import cgroup_dirs, cgroup_limit, cgroup_v2_only, host_procs_in, leftovers, paused_at, run_dir, sandbox_gone, wait_until


def _sleeps(name):
    return [p for p in host_procs_in(name) if p[1] == "sleep"]


def _start_run(capsule, name, *cmd):
    p = capsule.popen("run", "--name", name, "--", *cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                      stderr=subprocess.PIPE)
    if not wait_until(lambda: _sleeps(name) or p.poll() is not None, 20):
        p.kill()
        p.wait()
        pytest.fail(f"the sandbox's sleep never started: {leftovers(capsule, name)}")
    if p.poll() is not None:
        pytest.fail(f"capsule run exited early ({p.returncode}): {p.stderr.read()!r}")
    return p


def _reap(p):
    if p.poll() is None:
        p.kill()
        p.wait()
    p.stderr.close()


def _not_running(capsule, name):
    if not os.path.exists(run_dir(capsule, name)):
        return True
    return {s["name"]: s["state"] for s in capsule.ps(all=True)}.get(name) != "running"


@pytest.mark.parametrize("signo", [signal.SIGKILL, signal.SIGTERM])
def test_killing_the_run_cli_ends_the_sandbox(capsule, signo):
    name = capsule.unique_name("ekill")
    p = _start_run(capsule, name, "sleep", "100")
    try:
        listed = {s["name"]: s for s in capsule.ps(all=False)}
        assert listed[name]["state"] == "running"
        assert listed[name]["detached"] is False
        os.kill(p.pid, signo)
        p.wait(timeout=20)
    finally:
        _reap(p)
    assert wait_until(lambda: _not_running(capsule, name), 10), leftovers(capsule, name)
    assert wait_until(lambda: not _sleeps(name), 10), host_procs_in(name)
    # In the end nothing is left: ps cleans up what a killed creator left behind.
    assert wait_until(lambda: (capsule.ps(all=True), sandbox_gone(capsule, name))[1], 10), leftovers(capsule, name)
    if signo == signal.SIGTERM:
        # SIGTERM reaches the command (docker's sig-proxy): the CLI exits with its status.
        assert p.returncode == 143


def test_killing_the_run_cli_ends_background_children_too(capsule):
    name = capsule.unique_name("ekillc")
    p = _start_run(capsule, name, "sh", "-c", "sleep 100 & sleep 100 & wait")
    assert wait_until(lambda: len(_sleeps(name)) == 2, 10), host_procs_in(name)
    try:
        p.kill()
        p.wait(timeout=20)
    finally:
        p.stderr.close()
    assert wait_until(lambda: not host_procs_in(name), 10), host_procs_in(name)
    assert wait_until(lambda: _not_running(capsule, name), 10), leftovers(capsule, name)


def _paused_shim(capsule, stage):
    return paused_at(capsule.home, stage)


def _run_and_kill_the_shim_at(capsule, name, stage, check):
    """capsule run --name NAME -- true with the shim held at STAGE: CHECK(), then kill -9 of
    the shim; returns the CLI's exit status once it has exited."""
    try:  # an earlier test's marker names a shim long gone
        os.unlink(os.path.join(capsule.home, ".test-shim-paused"))
    except FileNotFoundError:
        pass
    p = capsule.popen("run", "--name", name, "--", "true", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                      stderr=subprocess.PIPE, env={**capsule.env, "CAPSULE_TEST_SHIM_PAUSE": stage})
    try:
        shim = _paused_shim(capsule, stage)
        assert shim, f"the shim never reached {stage}"
        check()
        os.kill(shim, signal.SIGKILL)
        p.wait(timeout=30)
    finally:
        _reap(p)
    return p.returncode


def _mounts_naming(text):
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if text in line]


def _sandbox_and_its_slot_gone(capsule, name):
    slots = os.path.join(capsule.home, "slots")
    # slots/N is a link naming its owner; slots/N.shared a pod's folder of sharers (home.c).
    owners = {os.readlink(os.path.join(slots, e)) for e in os.listdir(slots)
              if not e.startswith(".") and os.path.islink(os.path.join(slots, e))} if os.path.isdir(slots) else set()
    return sandbox_gone(capsule, name) and name not in owners and not _mounts_naming(run_dir(capsule, name))


def test_a_shim_killed_while_its_init_mounts_and_it_joins_the_cgroups_leaves_nothing(capsule):
    # The sandbox's first process makes its mounts while the shim moves it into its cgroups
    # (container.c, two go-aheads): kill -9 the shim in between.
    name = capsule.unique_name("ekjoin")

    def check():
        # Its init is there, in a mount namespace of its own, with its cgroups made.
        assert cgroup_dirs(name)
    assert _run_and_kill_the_shim_at(capsule, name, "cgroup-join", check) != 0
    # The init read EOF instead of its second go-ahead and exited; the next look sweeps the rest.
    assert wait_until(lambda: (capsule.ps(all=True), _sandbox_and_its_slot_gone(capsule, name))[1], 15), \
        leftovers(capsule, name)
    # The name is free again at once.
    r = capsule.run("run", "--name", name, "--", "true")
    assert r.returncode == 0, r.stderr


@pytest.mark.skipif(cgroup_v2_only(), reason="on cgroup v2 the shim moves the init by its pid")
def test_on_cgroup_v1_the_init_moves_itself_into_each_cgroup_and_a_shim_killed_then_leaves_nothing(capsule):
    # The init writes "0" into each v1 cgroup's `tasks` file the shim opened for it, first
    # thing (container.c): no move by pid, which waits for an RCU grace period. With the shim
    # held before it would have moved anything, the init is in every one of its cgroups
    # already; kill -9 of the shim then, with processes in the cgroups, leaves nothing.
    name = capsule.unique_name("ekself")

    def init_in_each():
        procs = host_procs_in(name)
        if len(procs) != 1:
            return False
        pid = str(procs[0][0])
        dirs = cgroup_dirs(name)
        tasks = []
        for d in dirs:
            with open(os.path.join(d, "tasks")) as f:
                tasks.append(f.read().split())
        return len(dirs) >= 2 and all(t == [pid] for t in tasks)

    def check():
        assert wait_until(init_in_each, 10), (host_procs_in(name), cgroup_dirs(name))
    assert _run_and_kill_the_shim_at(capsule, name, "cgroup-join", check) != 0
    assert wait_until(lambda: not host_procs_in(name), 10), host_procs_in(name)
    assert wait_until(lambda: (capsule.ps(all=True), _sandbox_and_its_slot_gone(capsule, name))[1], 15), \
        leftovers(capsule, name)
    # The same start unheld: its limits in place, and every process of the sandbox in each of
    # its cgroups.
    r = capsule.run("run", "-d", "--name", name, "--memory", "64m", "--pids-limit", "20", "--", "sleep", "100")
    assert r.returncode == 0, r.stderr
    try:
        assert cgroup_limit(name, "memory") == 64 << 20
        assert cgroup_limit(name, "pids") == "20"
        procs = sorted(str(p[0]) for p in host_procs_in(name))
        assert len(procs) == 2, procs  # the agent and sleep
        for d in cgroup_dirs(name):
            with open(os.path.join(d, "cgroup.procs")) as f:
                assert sorted(f.read().split()) == procs, d
    finally:
        capsule.run("rm", "-f", name)


def test_a_mount_that_fails_while_the_shim_joins_the_cgroups_fails_the_start_with_its_own_error(capsule):
    # The tmpfs target is below a file: its mkdir fails in the init, while (or after) the shim
    # moves it into its cgroups. The start fails with the init's words and leaves nothing.
    name = capsule.unique_name("ekmnt")
    r = capsule.run("run", "--name", name, "--tmpfs", "/etc/passwd/x", "--", "true")
    assert r.returncode != 0
    assert "/etc/passwd" in r.stderr, r.stderr
    assert wait_until(lambda: _sandbox_and_its_slot_gone(capsule, name), 10), leftovers(capsule, name)


# ---- the end: the name is free when it is answered, the folder goes after -----------------


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _gone_folders(capsule, name):
    """The renamed folders (.gone-NAME.PID) of ended sandboxes of NAME not yet removed."""
    run = os.path.join(capsule.home, "run")
    return [e for e in os.listdir(run) if e.startswith(f".gone-{name}.")] if os.path.isdir(run) else []


def test_an_ended_sandboxs_name_is_free_at_once_while_its_folder_goes_after(capsule):
    # The end is answered once the processes and id slot are gone and the folder is renamed
    # .gone-NAME.PID; PID removes the cgroups (named NAME~<8 hex>.<digest>, this sandbox's
    # alone) and the folder after. Held there (paused), a new sandbox of the same name starts
    # fresh meanwhile, in cgroups of its own; killed there, the next look removes what it left.
    name = capsule.unique_name("eend")
    r = capsule.run("run", "--name", name, "--", "sh", "-c", "echo old > /root/f",
                    env={"CAPSULE_TEST_SHIM_PAUSE": "end-remains"})
    assert r.returncode == 0, r.stderr
    remover = _paused_shim(capsule, "end-remains")
    assert remover, "the folder's remover never started"
    try:
        assert not os.path.exists(run_dir(capsule, name))
        old = cgroup_dirs(name)
        assert old and all("~" in d for d in old), old
        assert host_procs_in(name) == []
        assert _gone_folders(capsule, name) == [f".gone-{name}.{remover}"]
        # The tree is unmounted after the answer too: the remover holds the sandbox's mount
        # namespace, with no process left in it, until then.
        held = os.readlink(f"/proc/{remover}/fd/5")
        assert held.startswith("mnt:"), held
        held_id = _mntns_id(f"/proc/{remover}/fd/5")
        os.unlink(os.path.join(capsule.home, ".test-shim-paused"))
        r = capsule.run("run", "--name", name, "--", "sh", "-c", "cat /root/f 2>&1 || echo fresh")
        assert r.returncode == 0, r.stderr
        assert "fresh" in r.stdout.splitlines(), r.stdout
        assert capsule.run("ps", "-a").returncode == 0
        assert f".gone-{name}.{remover}" in _gone_folders(capsule, name), "swept while its remover lives"
        assert set(old) <= set(cgroup_dirs(name)), "the old cgroups went while their remover lives"
    finally:
        os.kill(remover, signal.SIGKILL)
    assert wait_until(lambda: not _alive(remover), 10)
    assert wait_until(lambda: (capsule.ps(all=True), not _gone_folders(capsule, name))[1], 10), \
        _gone_folders(capsule, name)
    assert _sandbox_and_its_slot_gone(capsule, name), leftovers(capsule, name)
    # Nothing holds the old mount namespace any more: the kernel unmounted its tree.
    assert not _holders_of(held, held_id), _holders_of(held, held_id)


def _run_held_at(capsule, name, stage):
    """capsule run --name NAME -- true with the shim held at STAGE until the marker goes:
    the CLI's process, the held shim's pid and the marker's path."""
    marker = os.path.join(capsule.home, ".test-shim-paused")
    try:
        os.unlink(marker)
    except FileNotFoundError:
        pass
    p = capsule.popen("run", "--name", name, "--", "true", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                      stderr=subprocess.PIPE, env={**capsule.env, "CAPSULE_TEST_SHIM_PAUSE": stage + "+"})
    shim = _paused_shim(capsule, stage)
    assert shim, f"the shim never reached {stage}"
    return p, shim, marker


def _children(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(k) for k in f.read().split()]


def _state(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def _fd5(pid):
    try:
        return os.readlink(f"/proc/{pid}/fd/5")
    except OSError:
        return None


def test_the_remover_holds_the_last_reference_to_the_tree(capsule):
    # The shim closes its reference to the ended sandbox's mount namespace after the go-ahead
    # and then says so with one byte, and the remover closes its own only after that byte: the
    # unmounting (two RCU grace periods) is always the remover's, never the shim's exit's,
    # which the CLI waits for. Held between the two, the remover must still hold its copy.
    name = capsule.unique_name("eref")
    p, shim, marker = _run_held_at(capsule, name, "end-release")
    try:
        (remover,) = _children(shim)
        held_fd = f"/proc/{shim}/fd/" + next(
            fd for fd in os.listdir(f"/proc/{shim}/fd") if os.readlink(f"/proc/{shim}/fd/{fd}").startswith("mnt:"))
        held, held_id = os.readlink(held_fd), _mntns_id(held_fd)
        # Asleep, waiting for the shim's word, with its copy as fd 5.
        assert wait_until(lambda: not _alive(remover) or (_state(remover) == "S" and _fd5(remover) == held), 10)
        assert _alive(remover), "the remover closed its reference before the shim did"
        assert _fd5(remover) == held and _state(remover) == "S", (_fd5(remover), _state(remover))
        assert _alive(shim) and f"/proc/{shim}/fd/" in " ".join(_holders_of(held))
    finally:
        try:
            os.unlink(marker)
        except FileNotFoundError:
            pass
    assert p.wait(timeout=60) == 0, p.stderr.read()
    assert wait_until(lambda: not _alive(remover), 15)
    assert wait_until(lambda: (capsule.ps(all=True), not _gone_folders(capsule, name))[1], 10), \
        _gone_folders(capsule, name)
    assert _sandbox_and_its_slot_gone(capsule, name), leftovers(capsule, name)
    assert not _holders_of(held, held_id), _holders_of(held, held_id)


# NS_GET_MNTNS_ID (linux/nsfs.h, Linux 6.9): a mount namespace's 64-bit id, never reused,
# where the inode number in its "mnt:[inode]" link is reused as soon as the namespace is
# freed, by any namespace made after it (another sandbox of a parallel run).
_NS_GET_MNTNS_ID = (2 << 30) | (8 << 16) | (0xB7 << 8) | 5


def _mntns_id(link):
    """The id of the mount namespace at LINK (a /proc ns link or fd), or None if unknown."""
    try:
        fd = os.open(link, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return struct.unpack("Q", fcntl.ioctl(fd, _NS_GET_MNTNS_ID, bytes(8)))[0]
    except OSError:
        return None
    finally:
        os.close(fd)


def _holders_of(ns, ns_id=None):
    """Processes with NS (a "mnt:[inode]" link) as their own namespace or an open fd; with
    NS_ID (from _mntns_id while it lived), only those whose namespace has that id too."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            links = [f"/proc/{pid}/ns/mnt"] + [f"/proc/{pid}/fd/{fd}" for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        for link in links:
            try:
                if os.readlink(link) != ns:
                    continue
            except OSError:
                continue
            other = _mntns_id(link) if ns_id is not None else None
            if other is None or other == ns_id:
                found.append(link)
    return found


def test_a_remover_killed_before_the_end_is_replaced_and_the_folder_still_goes(capsule):
    # The folder's remover is forked as the kill is sent, so that its fork overlaps the
    # sandbox's processes dying. Killed before the shim renames the folder (the shim held
    # there), the shim forks another: the folder goes without waiting for a sweep.
    name = capsule.unique_name("epre")
    p, shim, marker = _run_held_at(capsule, name, "end-rename")
    try:
        kids = _children(shim)
        exe = os.readlink(f"/proc/{shim}/exe")
        removers = [k for k in kids if os.readlink(f"/proc/{k}/exe") == exe]
        assert len(removers) == 1, (kids, removers)
        os.kill(removers[0], signal.SIGKILL)
        assert wait_until(lambda: not _alive(removers[0]), 10)
        os.unlink(marker)
        assert p.wait(timeout=30) == 0, p.stderr.read()
    finally:
        _reap(p)
    # No ps, no create: only the new remover can have removed it.
    assert wait_until(lambda: not _gone_folders(capsule, name) and not os.path.exists(run_dir(capsule, name)), 15), \
        (_gone_folders(capsule, name), leftovers(capsule, name))
    assert _sandbox_and_its_slot_gone(capsule, name), leftovers(capsule, name)


def test_a_shim_killed_before_it_frees_the_name_leaves_nothing(capsule):
    # kill -9 of the shim after its child that removes the folder was made, before the rename:
    # the child finds no .gone- folder of its own and exits; the folder, its lock free, is a
    # stale sandbox's, which the next look removes.
    name = capsule.unique_name("eren")
    _run_and_kill_the_shim_at(capsule, name, "end-rename", lambda: os.path.exists(run_dir(capsule, name)) or
                              pytest.fail("the folder was renamed before the pause"))
    assert wait_until(lambda: (capsule.ps(all=True), _sandbox_and_its_slot_gone(capsule, name))[1], 15), \
        leftovers(capsule, name)
    assert wait_until(lambda: not _gone_folders(capsule, name), 10), _gone_folders(capsule, name)
    r = capsule.run("run", "--name", name, "--", "true")
    assert r.returncode == 0, r.stderr
