"""Named sandboxes: create, ps, exec, stop, start, kill, rm, inspect."""
import os
import re
import subprocess
import sys

import pytest

from .helpers import (assert_capsule_error, cgroup_dirs, host_procs_in, leftovers, run_dir, sandbox_gone,
                      settled_run_entries, wait_until)

# Every test here runs at both isolation levels (tests/conftest.py, both_levels), each with a
# sandbox of its own: they stop, restart and remove it.
pytestmark = [pytest.mark.both_levels, pytest.mark.fresh_sandbox]

NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}")



def shim_log(capsule, name):
    """The sandbox's shim log, kept in its run folder after a stop."""
    with open(os.path.join(capsule.home, "run", name, "shim.log")) as f:
        return f.read()

def states(capsule, all=True):
    return {s["name"]: s["state"] for s in capsule.ps(all=all)}


def test_create_prints_name_and_ps_lists_it_running(capsule):
    name = capsule.unique_name("cr")
    r = capsule.run("create", "--name", name)
    assert r.returncode == 0, r.stderr
    assert r.stdout == name + "\n"
    assert states(capsule, all=False).get(name) == "running"
    entry = [s for s in capsule.ps(all=False) if s["name"] == name][0]
    assert entry["image"] == "host"
    assert entry["isolation"] == capsule.isolation
    assert entry["detached"] is True
    assert entry["shim_pid"] > 0
    # The table form lists it too.
    table = capsule.run("ps", check=True).stdout.splitlines()
    assert table[0].split()[:2] == ["NAME", "STATE"]
    assert any(line.split()[:2] == [name, "running"] for line in table[1:]), table
    assert os.path.isdir(run_dir(capsule, name))


def test_create_duplicate_name_fails_with_already_exists(capsule, sandbox):
    before = capsule.inspect(sandbox)
    r = capsule.run("create", "--name", sandbox)
    assert_capsule_error(r)
    assert "already exists" in r.stderr
    assert sandbox in r.stderr
    # The first one is untouched.
    after = capsule.inspect(sandbox)
    assert after["state"] == "running"
    assert after["init_pid"] == before["init_pid"]
    assert capsule.run("exec", sandbox, "true").returncode == 0


def test_run_with_name_of_existing_sandbox_fails(capsule, sandbox):
    r = capsule.run("run", "--name", sandbox, "--", "true")
    assert_capsule_error(r)
    assert "already exists" in r.stderr
    assert capsule.inspect(sandbox)["state"] == "running"


def test_create_env_applies_to_every_exec_and_exec_env_overrides(capsule):
    name = capsule.create("-e", "FOO=from-create")
    r = capsule.run("exec", name, "printenv", "FOO")
    assert r.stdout == "from-create\n", r.stderr
    r = capsule.run("exec", "-e", "FOO=from-exec", name, "printenv", "FOO")
    assert r.stdout == "from-exec\n", r.stderr
    assert "FOO=from-create" in capsule.inspect(name)["env"]


def test_stop_then_ps_shows_stopped_and_exec_is_refused(capsule, sandbox):
    r = capsule.run("stop", sandbox)
    assert r.returncode == 0, r.stderr
    assert states(capsule).get(sandbox) == "stopped"
    assert sandbox not in states(capsule, all=False)
    r = capsule.run("exec", sandbox, "true")
    assert_capsule_error(r)
    assert "not running" in r.stderr
    info = capsule.inspect(sandbox)
    assert info["state"] == "stopped"
    assert info["shim_pid"] == 0 and info["init_pid"] == 0
    assert host_procs_in(sandbox) == []


def test_start_again_keeps_the_filesystem(capsule, sandbox):
    r = capsule.run("exec", sandbox, "sh", "-c", "echo kept > /root/note && mkdir -p /root/d && echo x > /root/d/y")
    assert r.returncode == 0, r.stderr
    assert capsule.run("stop", "-t", "1", sandbox).returncode == 0
    assert states(capsule).get(sandbox) == "stopped"
    r = capsule.run("start", sandbox)
    assert r.returncode == 0, r.stderr
    assert r.stdout == sandbox + "\n"
    assert states(capsule, all=False).get(sandbox) == "running"
    r = capsule.run("exec", sandbox, "sh", "-c", "cat /root/note /root/d/y")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "kept\nx\n"


def test_start_keeps_configuration(capsule):
    name = capsule.create("--hostname", "keepme", "-m", "128M", "--pids-limit", "50", "-e", "K=v")
    assert capsule.run("stop", "-t", "0", name).returncode == 0
    assert capsule.run("start", name).returncode == 0
    r = capsule.run("exec", name, "sh", "-c", "hostname; echo $K")
    assert r.stdout == "keepme\nv\n", r.stderr
    info = capsule.inspect(name)
    assert info["limits"]["memory_bytes"] == 128 * 1024 * 1024
    assert info["limits"]["pids"] == 50


def test_start_of_running_sandbox_does_not_restart_it(capsule, sandbox):
    # docker's rule, as for stop of a stopped one: it holds already, exit 0 with the name.
    pid = capsule.inspect(sandbox)["init_pid"]
    r = capsule.run("start", sandbox)
    assert r.returncode == 0 and r.stdout == f"{sandbox}\n", r.stderr
    info = capsule.inspect(sandbox)
    assert info["state"] == "running"
    assert info["init_pid"] == pid


def test_rm_of_running_sandbox_needs_force(capsule, sandbox):
    r = capsule.run("rm", sandbox)
    assert_capsule_error(r)
    assert sandbox in r.stderr
    assert states(capsule, all=False).get(sandbox) == "running"
    assert capsule.run("exec", sandbox, "true").returncode == 0


@pytest.mark.container_only  # it looks at the cgroups and host processes only a container has
def test_rm_force_removes_everything(capsule, sandbox):
    r = capsule.run("exec", "-d", sandbox, "sleep", "1000")
    assert r.returncode == 0, r.stderr
    assert cgroup_dirs(sandbox), "a running sandbox should have cgroup folders"
    assert host_procs_in(sandbox), "a running sandbox should have processes"
    r = capsule.run("rm", "-f", sandbox)
    assert r.returncode == 0, r.stderr
    assert r.stdout == sandbox + "\n"
    assert not os.path.exists(run_dir(capsule, sandbox))
    assert wait_until(lambda: cgroup_dirs(sandbox) == [], 10), cgroup_dirs(sandbox)
    for c in ("memory", "pids"):
        d = f"/sys/fs/cgroup/{c}/capsule"
        if os.path.isdir(d):
            assert not [e for e in os.listdir(d) if e.startswith(sandbox)], (c, os.listdir(d))
    assert host_procs_in(sandbox) == []
    assert sandbox not in states(capsule)
    r = capsule.run("inspect", sandbox)
    assert_capsule_error(r)


def test_rm_of_stopped_sandbox_without_force(capsule, sandbox):
    assert capsule.run("stop", "-t", "0", sandbox).returncode == 0
    r = capsule.run("rm", sandbox)
    assert r.returncode == 0, r.stderr
    assert sandbox_gone(capsule, sandbox), leftovers(capsule, sandbox)
    assert sandbox not in states(capsule)


def test_stop_with_timeout_kills_process_ignoring_sigterm(capsule, sandbox):
    r = capsule.run("exec", "-d", sandbox, "sh", "-c", 'trap "" TERM; sleep 1000')
    assert r.returncode == 0, r.stderr
    ps = capsule.run("exec", sandbox, "ps", "-eo", "comm")
    assert "sleep" in ps.stdout.split()
    r = capsule.run("stop", "-t", "1", sandbox, timeout=60)
    assert r.returncode == 0, r.stderr
    # The shim's log says which grace it gave (not the default 10 s); the agent kills what
    # ignored SIGTERM when that grace is over, or the shim does, whichever comes first.
    log = shim_log(capsule, sandbox)
    assert "stopping (grace 1000 ms)" in log, log
    assert states(capsule).get(sandbox) == "stopped"
    assert wait_until(lambda: not host_procs_in(sandbox), 5), host_procs_in(sandbox)


def test_stop_of_stopped_sandbox_succeeds(capsule, sandbox):
    assert capsule.run("stop", "-t", "0", sandbox).returncode == 0
    r = capsule.run("stop", sandbox)
    assert r.returncode == 0, r.stderr
    assert states(capsule).get(sandbox) == "stopped"


def test_kill_stops_at_once(capsule, sandbox):
    capsule.run("exec", "-d", sandbox, "sh", "-c", 'trap "" TERM; sleep 1000')
    r = capsule.run("kill", sandbox)
    assert r.returncode == 0, r.stderr
    assert "stopping (grace 0 ms)" in shim_log(capsule, sandbox)
    assert states(capsule).get(sandbox) == "stopped"
    assert host_procs_in(sandbox) == []


def test_stop_several_names_at_once(capsule):
    a, b = capsule.create(), capsule.create()
    r = capsule.run("stop", "-t", "0", a, b)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [a, b]
    s = states(capsule)
    assert s.get(a) == "stopped" and s.get(b) == "stopped"


def test_stop_missing_sandbox_fails(capsule):
    r = capsule.run("stop", "no-such-sandbox-e2e")
    assert_capsule_error(r)
    assert "no-such-sandbox-e2e" in r.stderr


def test_inspect_fields(capsule):
    name = capsule.create("-m", "256M", "--cpus", "1.5", "--pids-limit", "64", "--hostname", "insp",
                          "-e", "FOO=bar")
    info = capsule.inspect(name)
    assert info["name"] == name
    assert info["state"] == "running"
    assert info["image"] == "host"
    assert info["isolation"] == capsule.isolation
    assert info["hostname"] == "insp"
    assert info["detached"] is True
    assert info["limits"] == {"memory_bytes": 268435456, "cpus_milli": 1500, "pids": 64, "disk_bytes": 0}
    assert "FOO=bar" in info["env"]
    assert os.path.realpath(info["run_dir"]) == os.path.realpath(run_dir(capsule, name))
    assert os.path.isdir(info["run_dir"])
    # The pids are live host processes: the shim, and the sandbox's init: the agent in a
    # container, QEMU for a vm (the agent is the guest's PID 1, not a host process).
    assert info["shim_pid"] > 0 and info["init_pid"] > 0
    with open(f"/proc/{info['shim_pid']}/cmdline", "rb") as f:
        assert os.path.basename(f.read().split(b"\0")[0]) == b"capsule-shim"
    with open(f"/proc/{info['init_pid']}/cmdline", "rb") as f:
        init = os.path.basename(f.read().split(b"\0")[0])
    if capsule.isolation == "vm":
        assert init == b"qemu-system-x86_64" and info["init_pid"] == info["vm"]["qemu_pid"]
        return
    assert init == b"capsule-agent"
    assert info["init_pid"] in [p for p, _, _ in host_procs_in(name)]


def test_inspect_of_default_sandbox(capsule, sandbox):
    info = capsule.inspect(sandbox)
    assert info["hostname"] == sandbox
    assert info["limits"] == {"memory_bytes": 0, "cpus_milli": 0, "pids": 4096, "disk_bytes": 0}
    assert info["env"] == []


def test_create_without_name_generates_one(capsule):
    r = capsule.run("create")
    assert r.returncode == 0, r.stderr
    name = r.stdout.strip()
    capsule._names.append(name)  # cleaned up by the fixture
    assert NAME_RE.fullmatch(name), name
    assert states(capsule, all=False).get(name) == "running"
    assert capsule.run("exec", name, "hostname").stdout == name + "\n"
    r2 = capsule.run("create")
    assert r2.returncode == 0, r2.stderr
    name2 = r2.stdout.strip()
    capsule._names.append(name2)
    assert name2 != name


def test_killed_shim_leaves_sandbox_stopped_and_restartable(capsule, sandbox):
    assert capsule.run("exec", "-d", sandbox, "sleep", "1000").returncode == 0
    shim = capsule.inspect(sandbox)["shim_pid"]
    os.kill(shim, 9)  # the shim this test started, by its pid
    assert wait_until(lambda: not host_procs_in(sandbox), 10), host_procs_in(sandbox)
    assert wait_until(lambda: states(capsule).get(sandbox) == "stopped", 10), capsule.ps()
    assert wait_until(lambda: cgroup_dirs(sandbox) == [], 10), cgroup_dirs(sandbox)
    r = capsule.run("exec", sandbox, "true")
    assert_capsule_error(r)
    assert capsule.run("start", sandbox).returncode == 0
    r = capsule.run("exec", sandbox, "echo", "back")
    assert r.returncode == 0 and r.stdout == "back\n", r.stderr


def test_exec_background_child_outlives_exec_in_named_sandbox(capsule, sandbox):
    r = capsule.run("exec", sandbox, "sh", "-c", "sleep 100 & echo done", timeout=60)
    assert r.returncode == 0 and r.stdout == "done\n", r.stderr
    ps = capsule.run("exec", sandbox, "ps", "-eo", "comm")
    assert "sleep" in ps.stdout.split()


def test_sandboxes_do_not_share_files(capsule):
    a, b = capsule.create(), capsule.create()
    assert capsule.run("exec", a, "sh", "-c", "echo a > /tmp/mine && echo a > /root/mine").returncode == 0
    r = capsule.run("exec", b, "sh", "-c", "ls /tmp/mine /root/mine")
    assert r.returncode != 0
    assert r.stdout == ""


def test_recreated_sandbox_with_same_name_starts_fresh(capsule):
    name = capsule.create()
    assert capsule.run("exec", name, "sh", "-c", "echo old > /root/old").returncode == 0
    assert capsule.run("rm", "-f", name).returncode == 0
    capsule.create(name=name)
    r = capsule.run("exec", name, "cat", "/root/old")
    assert r.returncode != 0 and r.stdout == ""


def test_stop_of_cooperative_sandbox_is_quick(capsule, sandbox):
    # Everything in it dies on SIGTERM: stop must not wait out the 10 s default.
    assert capsule.run("exec", "-d", sandbox, "sleep", "1000").returncode == 0
    r = capsule.run("stop", sandbox, timeout=60)
    assert r.returncode == 0, r.stderr
    log = shim_log(capsule, sandbox)
    assert "stopping (grace 10000 ms)" in log and "the stop's grace is over" not in log, log
    assert states(capsule).get(sandbox) == "stopped"


STRESS = r"""
import subprocess, sys
capsule, name, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
# Each round races the other processes on the same name: a create, an exec into it, a stop,
# a remove. Every one may lose its race (exists, no such sandbox, not running); none may fail
# in any other way.
expected = ("already exists", "no such sandbox", "is not running", "is running", "already running",
            "is busy", "is starting", "' stopped", "is stopping", "stopped while the command was running",
            "the sandbox went away", "started again while being removed")
bad = []
for i in range(rounds):
    for args in (["create", "--name", name], ["exec", name, "true"], ["stop", "-t", "0", name], ["rm", "-f", name]):
        r = subprocess.run([capsule, *args], capture_output=True, text=True, timeout=60)
        if r.returncode != 0 and not any(e in r.stderr for e in expected):
            bad.append((args[0], r.returncode, r.stderr.strip()))
print(repr(bad))
"""


def test_one_name_raced_by_several_processes_fails_only_in_the_expected_ways(capsule):
    # A create once died with "writing the configuration of sandbox 'N': No such file or
    # directory": an open of the same name swept the folder before its lock was taken.
    name = capsule.unique_name("race")
    procs = [subprocess.Popen([sys.executable, "-c", STRESS, capsule.binary, name, "15"], env=capsule.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    try:
        outs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for out, err in outs:
        assert out.strip() == "[]", (out, err)
    capsule.run("rm", "-f", name)
    run = os.path.join(capsule.home, "run")
    assert not [e for e in settled_run_entries(run) if name in e], os.listdir(run)
