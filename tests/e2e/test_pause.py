"""capsule pause and resume: every process held still in memory (the cgroup freezer, a vm's
QMP stop), what a paused sandbox refuses and what still works, and its stop."""
import glob
import os
import time

import pytest

from .helpers import CGROUP_ROOT, assert_capsule_error, cgroup_dirs, cgroup_v2_only

pytestmark = pytest.mark.both_levels

PAUSED_LINE = "capsule: sandbox '{}' is paused: resume it first"


def ticking(capsule, tmp_path, *create_args):
    """A sandbox whose background loop appends a line to a host folder's file every 50 ms, so
    the host sees, without asking the sandbox, whether its processes run."""
    out = tmp_path / "out"
    out.mkdir()
    os.chmod(out, 0o777)
    name = capsule.create("-v", f"{out}:/out", *create_args)
    r = capsule.run("exec", "-d", name, "sh", "-c", "while :; do echo t >> /out/tick; sleep 0.05; done")
    assert r.returncode == 0, r.stderr
    tick = out / "tick"
    wait_growing(tick)
    return name, tick


def size(path):
    return path.stat().st_size if path.exists() else 0


def wait_growing(path, timeout=60):
    start = size(path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if size(path) > start:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} did not grow in {timeout} s: the sandbox's processes do not run")


def state(capsule, name):
    return capsule.inspect(name)["state"]


@pytest.mark.vm_in_check
def test_pause_holds_processes_refuses_exec_and_resume_lets_them_run(capsule, tmp_path):
    name, tick = ticking(capsule, tmp_path)
    r = capsule.run("pause", name)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == name
    assert state(capsule, name) == "paused"
    # ps without -a lists a paused sandbox, as docker ps does.
    listed = {s["name"]: s["state"] for s in capsule.ps(all=False)}
    assert listed.get(name) == "paused"
    held = size(tick)
    time.sleep(1)
    assert size(tick) == held, "the loop went on writing while the sandbox was paused"

    # What needs the sandbox's processes is refused with one line; nothing waits.
    for args in (("exec", name, "true"), ("fs", name, "cat", "/etc/hostname")):
        r = capsule.run(*args, timeout=30)
        assert_capsule_error(r)
        assert r.stderr.strip() == PAUSED_LINE.format(name), r.stderr
    # Asking for the state that holds is not an error.
    r = capsule.run("pause", name)
    assert r.returncode == 0, r.stderr
    assert size(tick) == held

    r = capsule.run("resume", name)
    assert r.returncode == 0, r.stderr
    assert state(capsule, name) == "running"
    wait_growing(tick)
    r = capsule.run("exec", name, "cat", "/out/tick")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("t\n") >= held // 2
    r = capsule.run("resume", name)
    assert r.returncode == 0, r.stderr


def test_stop_of_a_paused_sandbox_stops_it_and_rm_removes_it(capsule, tmp_path):
    name, tick = ticking(capsule, tmp_path)
    assert capsule.run("pause", name).returncode == 0
    # The grace is long: a stop that waited for a frozen agent to take its SIGTERM would
    # take all of it and fail the timeout below.
    r = capsule.run("stop", "-t", "100", name, timeout=60)
    assert r.returncode == 0, r.stderr
    assert state(capsule, name) == "stopped"
    assert capsule.run("start", name).returncode == 0
    assert capsule.run("pause", name).returncode == 0
    r = capsule.run("rm", "-f", name, timeout=60)
    assert r.returncode == 0, r.stderr
    assert name not in {s["name"] for s in capsule.ps()}


def test_checkpoint_of_a_paused_sandbox_keeps_it_paused_and_revert_is_refused(capsule, tmp_path):
    name, tick = ticking(capsule, tmp_path)
    assert capsule.run("exec", name, "sh", "-c", "echo before > /root/f").returncode == 0
    assert capsule.run("pause", name).returncode == 0
    r = capsule.run("checkpoint", name, "cp1")
    assert r.returncode == 0, r.stderr
    # The save's own pause and resume did not undo the client's pause.
    assert state(capsule, name) == "paused"
    held = size(tick)
    time.sleep(0.5)
    assert size(tick) == held
    r = capsule.run("revert", name, "cp1")
    assert_capsule_error(r)
    assert r.stderr.strip() == PAUSED_LINE.format(name), r.stderr
    assert capsule.run("resume", name).returncode == 0
    assert capsule.run("exec", name, "sh", "-c", "echo after > /root/f").returncode == 0
    r = capsule.run("revert", name, "cp1")
    assert r.returncode == 0, r.stderr
    r = capsule.run("exec", name, "cat", "/root/f")
    assert r.stdout == "before\n"


def freezer_state(name):
    """v2: the sandbox's cgroup.events says frozen 1 or 0; v1: the freezer hierarchy's
    capsule/<name>.* folder that a freeze makes says FROZEN or THAWED."""
    if cgroup_v2_only():
        dirs = cgroup_dirs(name)
        assert dirs
        with open(os.path.join(dirs[0], "cgroup.events")) as f:
            return "frozen" if "frozen 1" in f.read() else "thawed"
    found = glob.glob(os.path.join(CGROUP_ROOT, "freezer", "capsule", name + ".*", "freezer.state"))
    assert len(found) == 1, found
    with open(found[0]) as f:
        return f.read().strip().lower()


@pytest.mark.container_only
def test_pause_freezes_the_sandbox_cgroup(capsule, tmp_path):
    name, tick = ticking(capsule, tmp_path)
    assert capsule.run("pause", name).returncode == 0
    assert freezer_state(name) == "frozen"
    assert capsule.run("resume", name).returncode == 0
    assert freezer_state(name) == "thawed"


def test_pause_errors_are_one_line(capsule):
    r = capsule.run("pause", "no-such-sandbox")
    assert_capsule_error(r)
    name = capsule.create()
    assert capsule.run("stop", name).returncode == 0
    for verb in ("pause", "resume"):
        r = capsule.run(verb, name)
        assert_capsule_error(r)
        assert r.stderr.strip() == f"capsule: sandbox '{name}' is not running", r.stderr
    r = capsule.run("pause", "--to-disk", name)
    assert_capsule_error(r)
    assert "--to-disk is not available" in r.stderr
    r = capsule.run("pause")
    assert_capsule_error(r)
    r = capsule.run("pause", "--help")
    assert r.returncode == 0 and r.stdout.startswith("Usage: capsule pause")
