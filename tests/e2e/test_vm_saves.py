"""Saves of vm sandboxes (issue 7): a vm's own state is its root disk's qcow2, so a save, a
checkpoint and a fork copy it (the guest synced and paused meanwhile), a revert puts a copy
back and restarts the guest in its shim, and a vm starts from a vm save with a qcow2 over the
save's disk. The store, its atomic renames and its dependency checks are the container level's.

One module-scoped VM serves the tests; the one in make check boots only that VM."""
import json
import os
import uuid

import pytest

from tests.conftest import Capsule

from .helpers import assert_capsule_error, run_entries
from .test_vm import BOOT_TIMEOUT, STATIC_AGENT, boots


def sname(prefix="vs"):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def vm(capsule_home):
    if not STATIC_AGENT:
        pytest.skip("capsule-agent is dynamically linked (a sanitizer build): it cannot be a VM's init")
    c = Capsule(capsule_home)
    name = c.unique_name("vmsave")
    r = c.run("create", "--isolation", "vm", "--name", name, "--disk-size", "1G", timeout=BOOT_TIMEOUT)
    assert r.returncode == 0, r.stderr
    c.run("exec", name, "--", "sh", "-c", "echo one > /root/f", check=True)
    made = []
    yield c, name, made
    c.cleanup()
    for _ in range(len(made)):
        for n in reversed(made):
            c.run("saves", "rm", n)


def saves_json(c):
    return {s["name"]: s for s in json.loads(c.run("saves", "ls", "--json", check=True).stdout)}


@boots
def test_vm_save_of_a_running_vm_is_its_disk_and_the_vm_goes_on(vm):
    c, name, made = vm
    s = sname()
    made.append(s)
    # Written just before the save, so still in the guest's page cache: the agent's sync
    # must put it on the disk that is copied.
    c.run("exec", name, "--", "sh", "-c", "echo fresh > /root/fresh", check=True)
    r = c.run("save", name, s, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == s, r.stderr
    folder = os.path.join(c.home, "saves", s)
    assert sorted(os.listdir(folder)) == ["disk.qcow2", "layer", "manifest.json"]
    assert os.listdir(os.path.join(folder, "layer")) == []
    assert os.stat(os.path.join(folder, "disk.qcow2")).st_mode & 0o077 == 0
    with open(os.path.join(folder, "manifest.json")) as f:
        m = json.load(f)
    assert m["isolation"] == "vm" and m["disk"] == "disk.qcow2" and m["parent"] == "host"
    assert saves_json(c)[s]["parent_kind"] == "host"
    # The guest was paused for the copy, and runs again.
    r = c.run("exec", name, "--", "sh", "-c", "cat /root/f; echo two > /root/f; cat /root/f", check=True)
    assert r.stdout.split() == ["one", "two"]
    assert c.inspect(name)["state"] == "running"
    # A container cannot start from a vm's disk: one line, nothing made.
    before = run_entries(c)
    r = c.run("run", "--image", s, "--", "true")
    assert_capsule_error(r)
    assert f"save '{s}' is a vm's disk: start it with --isolation vm" in r.stderr
    assert run_entries(c) == before


@pytest.mark.vm_slow
@boots
def test_vm_starts_from_a_vm_save_and_saves_at_stop_on_top_of_it(vm):
    c, name, made = vm
    a, b = sname("a"), sname("b")
    made += [a, b]
    c.run("exec", name, "--", "sh", "-c", "echo in-a > /root/a", check=True)
    c.run("save", name, a, check=True, timeout=120)
    # An ephemeral vm from the save, saved as it stops (its guest synced before QEMU quits).
    r = c.run("run", "--isolation", "vm", "--image", a, "--save", b, "--", "sh", "-c",
              "cat /root/a; echo in-b > /root/b", timeout=BOOT_TIMEOUT)
    assert r.returncode == 0 and r.stdout == "in-a\n", r.stderr
    sv = saves_json(c)
    assert sv[b]["parent"] == a and sv[b]["parent_kind"] == "save" and sv[b]["chain"] == ["host", a, b]
    r = c.run("run", "--isolation", "vm", "--image", b, "--", "sh", "-c", "cat /root/a /root/b; df -k / | tail -1",
              timeout=BOOT_TIMEOUT)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split("\n")
    assert lines[:2] == ["in-a", "in-b"]
    # The save's disk was 1G; a sandbox from it gets the default 2G.
    assert 1.9 * (1 << 20) < int(lines[2].split()[1]) <= 2 * (1 << 20)
    # The parent of a save cannot go, nor be replaced under it.
    r = c.run("saves", "rm", a)
    assert_capsule_error(r)
    assert f"save '{a}' is the parent of save '{b}'" in r.stderr
    r = c.run("save", name, a)
    assert_capsule_error(r)
    assert f"save '{a}' is the parent of save '{b}'" in r.stderr


@pytest.mark.vm_slow
@boots
def test_vm_checkpoint_and_revert_restart_the_guest_in_its_shim(vm):
    c, name, _ = vm
    c.run("exec", name, "--", "sh", "-c", "echo before > /root/cp", check=True)
    assert c.run("checkpoint", name, "cp1", timeout=120).stdout.strip() == "cp1"
    c.run("exec", name, "--", "sh", "-c", "echo after > /root/cp; echo new > /root/new", check=True)
    c.run("exec", "-d", name, "--", "sleep", "1000", check=True)
    shim = c.inspect(name)["shim_pid"]
    r = c.run("revert", name, "cp1", timeout=BOOT_TIMEOUT)
    assert r.returncode == 0, r.stderr
    r = c.run("exec", name, "--", "sh", "-c", "cat /root/cp; test -e /root/new || echo no-new; "
              "ps -e -o comm= | grep -c '^sleep$' || true", check=True)
    assert r.stdout.split() == ["before", "no-new", "0"]
    info = c.inspect(name)
    assert info["state"] == "running" and info["shim_pid"] == shim
    r = c.run("revert", name, "nosuch")
    assert_capsule_error(r)
    assert "no checkpoint named 'nosuch'" in r.stderr
    assert c.inspect(name)["state"] == "running"


@pytest.mark.vm_slow
@boots
def test_vm_revert_mounts_the_binds_and_tmpfs_again(capsule_home, tmp_path):
    # A revert restarts QEMU in the same shim: its host folders' share is made again.
    (tmp_path / "f").write_text("from the host\n")
    c = Capsule(capsule_home)
    name = c.unique_name("vmrev")
    try:
        r = c.run("create", "--isolation", "vm", "--name", name, "-v", f"{tmp_path}:/mnt/x", "--tmpfs", "/scratch",
                  timeout=BOOT_TIMEOUT)
        assert r.returncode == 0, r.stderr
        assert c.run("checkpoint", name, "c1", timeout=120).returncode == 0
        c.run("exec", name, "--", "sh", "-c", "echo gone > /root/later", check=True)
        r = c.run("revert", name, "c1", timeout=BOOT_TIMEOUT)
        assert r.returncode == 0, r.stderr
        r = c.run("exec", name, "--", "sh", "-c", "cat /mnt/x/f; test -e /root/later || echo reverted; "
                  "grep -c ' /scratch tmpfs ' /proc/mounts", check=True)
        assert r.stdout.split("\n")[:3] == ["from the host", "reverted", "1"], r.stdout
    finally:
        c.cleanup()


@pytest.mark.vm_slow
@boots
def test_vm_fork_copies_the_disk_and_the_two_go_their_ways(vm):
    c, name, _ = vm
    c.run("exec", name, "--", "sh", "-c", "echo state > /root/s", check=True)
    twin = c.unique_name("vmfork")
    r = c.run("fork", name, twin, timeout=BOOT_TIMEOUT)
    assert r.returncode == 0 and r.stdout.strip() == twin, r.stderr
    assert c.inspect(twin)["isolation"] == "vm" and c.inspect(name)["state"] == "running"
    assert c.run("exec", twin, "--", "cat", "/root/s", check=True).stdout == "state\n"
    c.run("exec", twin, "--", "sh", "-c", "echo fork > /root/s", check=True)
    assert c.run("exec", name, "--", "cat", "/root/s", check=True).stdout == "state\n"
    r = c.run("fork", name, twin)
    assert_capsule_error(r)
    assert c.run("exec", twin, "--", "cat", "/root/s", check=True).stdout == "fork\n"
