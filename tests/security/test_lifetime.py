"""Crashes mid-life: kill -9 of the client, the shim or the agent must leave nothing running
and nothing half-made behind, and the sandbox's state must say what happened."""
import os
import signal
import subprocess
import time

from secutil import (assert_alive, cgroup_dirs, paused_at, pids_in_cgroup, proc_alive, shim_pids_named, state_of,
                     wait_until)


def _run_dir(capsule, name):
    return os.path.join(capsule.home, "run", name)


def _wait_running(capsule, name, timeout=20):
    def ready():
        try:
            info = capsule.inspect(name)
        except AssertionError:
            return None
        return info if info.get("state") == "running" and info.get("init_pid") else None
    info = wait_until(ready, timeout, interval=0.1)
    assert info, f"sandbox {name} did not come up"
    return info


def _detached_sleep(capsule, name):
    r = capsule.run("exec", "-d", name, "sleep", "1000")
    assert r.returncode == 0, r.stderr
    pids = wait_until(lambda: len(pids_in_cgroup(name)) >= 2 and pids_in_cgroup(name), 10)
    assert pids and len(pids) >= 2, f"sleep not running in {name}: {pids}"
    return pids


def _assert_nothing_left_running(name, pids, timeout=5):
    gone = wait_until(lambda: not any(proc_alive(p) for p in pids) and not pids_in_cgroup(name), timeout)
    alive = [p for p in pids if proc_alive(p)]
    assert gone, f"processes of {name} survived: {alive} / in cgroup: {pids_in_cgroup(name)}"


def test_kill9_of_ephemeral_client_leaves_nothing(capsule):
    name = capsule.unique_name("eph")
    cli = capsule.popen("run", "--name", name, "--", "sleep", "1000", stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE)
    try:
        _wait_running(capsule, name)
        pids = wait_until(lambda: len(pids_in_cgroup(name)) >= 2 and pids_in_cgroup(name), 10)
        assert pids, "the sandbox's sleep never started"
        info = capsule.inspect(name)
        shim = info["shim_pid"]
        all_pids = set(pids) | {shim}
        cli.send_signal(signal.SIGKILL)
        cli.wait(timeout=10)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    _assert_nothing_left_running(name, all_pids)

    def swept():
        capsule.run("ps", "-a")  # ps sweeps what dead shims left
        return not os.path.exists(_run_dir(capsule, name)) and not cgroup_dirs(name)
    assert wait_until(swept, 5, interval=0.2), (
        f"left behind: run dir {os.path.exists(_run_dir(capsule, name))}, cgroups {cgroup_dirs(name)}")
    assert state_of(capsule, name) is None, capsule.ps(all=True)


def test_kill9_of_exec_client_kills_its_command_only(capsule, sandbox):
    cli = capsule.popen("exec", sandbox, "sh", "-c", "echo started; exec sleep 1000",
                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert cli.stdout.readline().strip() == "started"
        before = pids_in_cgroup(sandbox)
        cli.send_signal(signal.SIGKILL)
        cli.wait(timeout=10)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    def sleep_gone():
        r = capsule.run("exec", sandbox, "sh", "-c", "pgrep -x sleep || true")
        return r.returncode == 0 and r.stdout.strip() == ""
    assert wait_until(sleep_gone, 5, interval=0.2), "the command outlived its killed client"
    assert len(before) >= 2
    assert_alive(capsule, sandbox)


def test_kill9_of_shim_leaves_no_processes_and_rm_works(capsule):
    name = capsule.create()
    info = _wait_running(capsule, name)
    shim, agent = info["shim_pid"], info["init_pid"]
    pids = _detached_sleep(capsule, name)
    os.kill(shim, signal.SIGKILL)
    _assert_nothing_left_running(name, set(pids) | {agent, shim})
    assert not proc_alive(agent), "the agent outlived its shim"

    st = wait_until(lambda: state_of(capsule, name) == "stopped" and "stopped", 5, interval=0.2)
    assert st == "stopped", f"state after the shim died: {state_of(capsule, name)}"
    r = capsule.run("exec", name, "echo", "hi", timeout=30)
    assert r.returncode != 0, "exec into a sandbox whose shim is dead succeeded?"
    r = capsule.run("rm", name, timeout=60)
    assert r.returncode == 0, r.stderr
    assert wait_until(lambda: not cgroup_dirs(name), 10), f"cgroups left after rm: {cgroup_dirs(name)}"
    assert not os.path.exists(_run_dir(capsule, name))
    assert state_of(capsule, name) is None


def test_kill9_of_shim_then_start_brings_it_back(capsule):
    name = capsule.create()
    info = _wait_running(capsule, name)
    os.kill(info["shim_pid"], signal.SIGKILL)
    _assert_nothing_left_running(name, {info["shim_pid"], info["init_pid"]})
    assert wait_until(lambda: state_of(capsule, name) == "stopped", 5, interval=0.2)
    r = capsule.run("start", name, timeout=60)
    assert r.returncode == 0, r.stderr
    assert_alive(capsule, name)
    new = capsule.inspect(name)
    assert new["shim_pid"] != info["shim_pid"]
    assert len(pids_in_cgroup(name)) >= 1


def test_kill9_of_agent_ends_the_sandbox_cleanly(capsule):
    name = capsule.create()
    info = _wait_running(capsule, name)
    shim, agent = info["shim_pid"], info["init_pid"]
    pids = _detached_sleep(capsule, name)
    os.kill(agent, signal.SIGKILL)
    _assert_nothing_left_running(name, set(pids) | {agent})
    assert wait_until(lambda: not proc_alive(shim), 5), "the shim outlived its agent"
    assert wait_until(lambda: state_of(capsule, name) == "stopped", 5, interval=0.2), state_of(capsule, name)
    assert wait_until(lambda: not cgroup_dirs(name), 10), f"cgroups left after the agent died: {cgroup_dirs(name)}"
    assert not os.path.exists(os.path.join(_run_dir(capsule, name), "control.sock"))
    r = capsule.run("rm", name, timeout=60)
    assert r.returncode == 0, r.stderr
    assert not os.path.exists(_run_dir(capsule, name))


def test_kill9_of_creator_mid_start_leaves_nothing_after_rm(capsule):
    # Wherever the creator dies during start, the sandbox either came up whole (a detached
    # one outlives its creator) or not at all; rm -f then leaves nothing behind.
    for delay in (0.0, 0.01, 0.03, 0.06, 0.12):
        name = capsule.unique_name("mid")
        p = capsule.popen("create", "--name", name, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)
        capsule.run("ps", "-a")
        st = state_of(capsule, name)
        if st == "running":
            assert_alive(capsule, name)
        r = capsule.run("rm", "-f", name, timeout=60)
        assert r.returncode == 0 or st is None, (delay, st, r.stderr)
        if r.returncode != 0 and "no such sandbox" not in r.stderr.lower():
            # A start still under way may refuse the removal (busy); it must succeed once
            # the start is over.
            time.sleep(1.0)
            r = capsule.run("rm", "-f", name, timeout=60)
        # Give a shim that was still starting time to get going: it must not survive the
        # folder it serves.
        time.sleep(0.5)
        assert not shim_pids_named(name), (
            f"delay {delay}: a shim for {name} runs after rm -f ({r.returncode}: {r.stderr.strip()})")
        assert wait_until(lambda: not pids_in_cgroup(name), 5), (delay, pids_in_cgroup(name))
        assert wait_until(lambda: not cgroup_dirs(name), 10), (delay, cgroup_dirs(name))
        assert not os.path.exists(_run_dir(capsule, name)), (delay, os.listdir(_run_dir(capsule, name)))
        assert state_of(capsule, name) is None


def test_rm_f_frees_the_name_at_once_and_a_killed_remover_leaves_nothing(capsule):
    # rm -f of a running sandbox asks its shim to remove it: answered once its processes and
    # id slot are gone and its folder is renamed; its cgroups (NAME~<8 hex>.<digest>: its own)
    # and folder go after, by a child of the shim (held here). A new sandbox of the name runs
    # meanwhile in cgroups of its own, untouched by the old one's remains, and kill -9 of the
    # remover leaves what the next look removes, without touching the new sandbox.
    name = capsule.unique_name("rmf")
    r = capsule.run("create", "--name", name, env={"CAPSULE_TEST_SHIM_PAUSE": "end-remains"})
    assert r.returncode == 0, r.stderr
    info = _wait_running(capsule, name)
    pids = set(_detached_sleep(capsule, name)) | {info["shim_pid"], info["init_pid"]}
    r = capsule.run("rm", "-f", name, timeout=60)
    assert r.returncode == 0, r.stderr
    remover = paused_at(capsule.home, "end-remains")
    assert remover, "the folder's remover never started"
    run = os.path.join(capsule.home, "run")
    try:
        assert not os.path.exists(_run_dir(capsule, name))
        assert f".gone-{name}.{remover}" in os.listdir(run)
        _assert_nothing_left_running(name, pids)
        old = set(cgroup_dirs(name))
        assert old, "the cgroups went before their remover ran"
        os.unlink(os.path.join(capsule.home, ".test-shim-paused"))
        again = capsule.create(name=name)
        assert again == name
        assert capsule.run("exec", name, "echo", "hi").stdout == "hi\n"
        new = set(cgroup_dirs(name)) - old
        assert new, cgroup_dirs(name)
    finally:
        os.kill(remover, signal.SIGKILL)
    assert wait_until(lambda: (capsule.run("ps", "-a"), f".gone-{name}.{remover}" not in os.listdir(run))[1], 10)
    assert set(cgroup_dirs(name)) == new, (cgroup_dirs(name), new)
    assert_alive(capsule, name)
    r = capsule.run("rm", "-f", name, timeout=60)
    assert r.returncode == 0, r.stderr
    assert wait_until(lambda: not [e for e in os.listdir(run) if name in e], 10), os.listdir(run)
    assert not cgroup_dirs(name) and not pids_in_cgroup(name)
