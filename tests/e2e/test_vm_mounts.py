"""vm isolation: binds, volumes, tmpfs and hot mounts behave as at the container level.

One vm per module (a boot costs seconds under TCG) serves most tests: a read-write bind, a
read-only bind, a single-file bind, a tmpfs, a plain volume and a quota volume. `make check`
runs the two tests marked neither vm_slow nor the refusals that fail before any boot; the rest
run in `make check-vm`.
"""
import importlib.util
import json
import os
import shutil
import subprocess
import tempfile
import uuid

import pytest

from .helpers import assert_capsule_error, qemu_procs, run_dir, run_entries
from .test_vm import BOOT_TIMEOUT, boots, refused

# The suite's CLI runner (tests/conftest.py), for the module-scoped vm.
_spec = importlib.util.spec_from_file_location(
    "capsule_tests_root_conftest", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conftest.py"))
_root = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_root)
Capsule = _root.Capsule


def qemu_mountinfo(capsule, name):
    """The mounts QEMU (in the shim's own namespace) sees below the sandbox's run folder."""
    pids = qemu_procs(capsule, name)
    assert len(pids) == 1, pids
    top = run_dir(capsule, name)
    with open(f"/proc/{pids[0]}/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(top)]


def host_mountinfo(capsule):
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if capsule.home in line.split()[4]]


def guest(capsule, name, script, check=True):
    return capsule.run("exec", name, "--", "sh", "-c", script, check=check, timeout=120)


def mounts(capsule, name):
    return json.loads(capsule.run("mounts", name, "--json", check=True).stdout)


@pytest.fixture(scope="module")
def vm(capsule_home):
    """(capsule, name, rw folder, ro folder, plain volume, quota volume) of one running vm."""
    c = Capsule(capsule_home)
    rw = tempfile.mkdtemp(prefix="capsule-vmrw-", dir="/var/tmp")
    ro = tempfile.mkdtemp(prefix="capsule-vmro-", dir="/var/tmp")
    os.chmod(rw, 0o777)  # a guest user writes here too
    with open(os.path.join(ro, "f"), "w") as f:
        f.write("read only\n")
    with open(os.path.join(ro, "app.conf"), "w") as f:
        f.write("debug=1\n")
    vol, qvol = f"vmvol-{uuid.uuid4().hex[:6]}", f"vmq-{uuid.uuid4().hex[:6]}"
    c.run("volume", "create", qvol, "--quota", "16M", check=True)
    name = c.unique_name("vmm")
    r = c.run("create", "--isolation", "vm", "--name", name, "-v", f"{rw}:/mnt/rw", "-v", f"{ro}:/mnt/ro:ro",
              "-v", f"{ro}/app.conf:/etc/app/app.conf:ro", "-v", f"{vol}:/vol", "-v", f"{qvol}:/quota",
              "--tmpfs", "/scratch:size=8M,mode=750", timeout=BOOT_TIMEOUT)
    assert r.returncode == 0, r.stderr
    yield c, name, rw, ro, vol, qvol
    c.cleanup()
    c.run("volume", "rm", vol, qvol)
    shutil.rmtree(rw, ignore_errors=True)
    shutil.rmtree(ro, ignore_errors=True)


@pytest.fixture
def hostdir():
    d = tempfile.mkdtemp(prefix="capsule-vmhot-", dir="/var/tmp")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


# ---- in make check: one boot, shared -------------------------------------------------------------


@boots
def test_vm_rw_bind_shows_changes_both_ways_and_owners_match_the_container_level(vm):
    capsule, name, rw, *_ = vm
    with open(os.path.join(rw, "from-host"), "w") as f:
        f.write("host\n")
    other = os.path.join(rw, "owned-by-1234")
    open(other, "w").close()
    os.chown(other, 1234, 1234)
    r = guest(capsule, name, "cat /mnt/rw/from-host; echo vm > /mnt/rw/from-vm; mkdir -p /mnt/rw/d/e; "
                             "stat -c '%u:%g %n' /mnt/rw /mnt/rw/owned-by-1234")
    # Another host user's file is nobody's in the guest, as in a container.
    assert r.stdout.split("\n")[:3] == ["host", "0:0 /mnt/rw", "65534:65534 /mnt/rw/owned-by-1234"], r.stdout
    with open(os.path.join(rw, "from-vm")) as f:
        assert f.read() == "vm\n"
    # What the guest's root makes is the creator's on the host, as with a container.
    for made in ("from-vm", "d", "d/e"):
        st = os.stat(os.path.join(rw, made))
        assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())
    # A guest user's files are that user's id in the sandbox's own host range, as a
    # container's are (never host user 1234), and it may write them again.
    capsule.run("exec", "-u", "1234:1234", name, "--", "sh", "-c", "echo u > /mnt/rw/by-1234; echo v >> /mnt/rw/by-1234",
                check=True)
    st = os.stat(os.path.join(rw, "by-1234"))
    base = st.st_uid - 1234
    assert base >= 1000000000 and (base - 1000000000) % 65536 == 0 and st.st_gid == base + 1234, st
    # The host changes a file the guest has read: the guest sees the new content at once.
    with open(os.path.join(rw, "from-host"), "w") as f:
        f.write("changed\n")
    assert guest(capsule, name, "cat /mnt/rw/from-host").stdout == "changed\n"


@boots
def test_vm_ro_bind_file_bind_tmpfs_and_volumes_are_mounted_as_asked(vm):
    capsule, name, rw, ro, vol, qvol = vm
    r = guest(capsule, name, "cat /mnt/ro/f /etc/app/app.conf; touch /mnt/ro/new; echo rc=$?; "
                             "echo y >> /mnt/ro/f; echo rc=$?; stat -c '%a' /scratch; "
                             "grep ' /scratch ' /proc/mounts; echo in-vol > /vol/v; echo in-quota > /quota/q", check=False)
    assert r.stdout.startswith("read only\ndebug=1\nrc=1\nrc=2\n750\n"), r.stdout + r.stderr
    assert r.stderr.count("Read-only file system") == 2
    assert "tmpfs" in r.stdout and "size=8192k" in r.stdout
    assert sorted(os.listdir(ro)) == ["app.conf", "f"]
    # Both volumes hold what the guest wrote, seen from the host with no sandbox involved.
    for v, path, text in ((vol, "/v", "in-vol\n"), (qvol, "/q", "in-quota\n")):
        assert capsule.run("volume", "read", v, path, check=True).stdout == text
    # Nothing of this is mounted in the host's view: the shares live in the shim's namespace.
    assert host_mountinfo(capsule) == []
    assert any(p.endswith("/shares/b0") for p in qemu_mountinfo(capsule, name))


def test_vm_bad_binds_are_refused_before_any_boot_and_leave_nothing(capsule, tmp_path):
    for args, words in ((["-v", f"/nonexistent-{uuid.uuid4().hex[:6]}:/x"], "No such file"),
                        (["-v", f"{tmp_path}:relative"], "absolute"),
                        (["-v", f"{tmp_path}:/proc/x"], "/proc"),
                        (["-v", "/etc:/x"], "sensitive host path"),
                        (["--tmpfs", "/x:size=12X"], "12X")):
        err = refused(capsule, *args)
        assert words in err, (args, err)
        assert len(err.strip().splitlines()) == 1, err


# ---- make check-vm only --------------------------------------------------------------------------


@pytest.mark.vm_slow
@boots
def test_vm_tmpfs_past_its_size_fails_with_enospc_and_the_guest_still_answers(vm):
    capsule, name, *_ = vm
    r = guest(capsule, name, "dd if=/dev/zero of=/scratch/x bs=1M count=20; echo rc=$?; stat -c %s /scratch/x; "
                             "rm /scratch/x; echo still-here", check=False)
    assert "No space left on device" in r.stderr
    assert "rc=1" in r.stdout and "8388608" in r.stdout and "still-here" in r.stdout


@pytest.mark.vm_slow
@boots
def test_vm_quota_volume_is_shared_with_a_container_and_its_quota_holds_in_the_guest(vm):
    capsule, name, rw, ro, vol, qvol = vm
    ct = capsule.create("-v", f"{qvol}:/data")
    capsule.run("exec", ct, "--", "sh", "-c", "echo from-container > /data/c", check=True)
    assert guest(capsule, name, "cat /quota/c").stdout == "from-container\n"
    r = guest(capsule, name, "dd if=/dev/zero of=/quota/big bs=1M count=40; echo rc=$?", check=False)
    assert "No space left on device" in r.stderr and "rc=1" in r.stdout
    guest(capsule, name, "rm /quota/big; echo from-vm > /quota/v")
    r = capsule.run("exec", ct, "--", "cat", "/data/v", check=True)
    assert r.stdout == "from-vm\n"
    # One image, one loop device, whoever mounts it.
    image = os.path.join(capsule.home, "volumes", qvol)
    out = subprocess.run(["losetup", "-j", os.path.join(image, "disk.img")], capture_output=True, text=True).stdout
    assert len(out.strip().splitlines()) == 1, out
    r = capsule.run("volume", "rm", qvol)
    assert_capsule_error(r)
    capsule.run("rm", "-f", ct, check=True)


@pytest.mark.vm_slow
@boots
def test_vm_mounts_lists_boot_and_hot_mounts_and_a_hot_mount_cycle_leaves_nothing(vm, hostdir):
    capsule, name, rw, ro, vol, qvol = vm
    with open(os.path.join(hostdir, "h"), "w") as f:
        f.write("hot\n")
    before_qemu = qemu_mountinfo(capsule, name)
    r = capsule.run("mount", name, hostdir, "/deep/hot", "--ro", check=True)
    handle = r.stdout.strip()
    got = mounts(capsule, name)
    assert [(m["kind"], m["guest_path"], m["readonly"], m["hot"]) for m in got] == [
        ("bind", "/mnt/rw", False, False), ("bind", "/mnt/ro", True, False), ("bind", "/etc/app/app.conf", True, False),
        ("volume", "/vol", False, False), ("volume", "/quota", False, False), ("tmpfs", "/scratch", False, False),
        ("bind", "/deep/hot", True, True)]
    assert got[-1]["handle"] == handle and got[-1]["host_path"] == hostdir
    r = guest(capsule, name, "cat /deep/hot/h; touch /deep/hot/x; echo rc=$?", check=False)
    assert r.stdout == "hot\nrc=1\n" and "Read-only file system" in r.stderr
    # A read-write file hot mount, removed by its handle.
    path = os.path.join(hostdir, "file")
    with open(path, "w") as f:
        f.write("1\n")
    h2 = capsule.run("mount", name, path, "/etc/hot.conf", check=True).stdout.strip()
    guest(capsule, name, "echo 2 >> /etc/hot.conf")
    assert open(path).read() == "1\n2\n"
    capsule.run("unmount", name, h2, check=True)
    capsule.run("unmount", name, "/deep/hot", check=True)
    assert [m for m in mounts(capsule, name) if m["hot"]] == []
    assert guest(capsule, name, "ls -A /deep/hot; cat /etc/hot.conf; grep -c hot /proc/mounts", check=False).stdout \
        == "0\n"
    assert qemu_mountinfo(capsule, name) == before_qemu
    assert host_mountinfo(capsule) == []
    assert sorted(os.listdir(hostdir)) == ["file", "h"]


@pytest.mark.vm_slow
@boots
def test_vm_bad_hot_mounts_fail_with_one_line_and_leave_nothing(vm, hostdir):
    capsule, name, *_ = vm
    guest(capsule, name, "mkdir -p /q-real && ln -sfn /q-real /q")
    before_qemu = qemu_mountinfo(capsule, name)
    before = mounts(capsule, name)
    for args, message in (((f"/nonexistent-{uuid.uuid4().hex[:6]}", "/mnt/x"), "No such file or directory"),
                          (("/etc", "/mnt/x"), "is a sensitive host path"),
                          ((hostdir, "relative"), "is not an absolute path"),
                          ((hostdir, "/proc/sys/x"), "below /proc or /sys"),
                          ((hostdir, "/mnt/rw"), "already a mount"),
                          ((hostdir, "/q/inner"), "passes through a symlink")):
        r = capsule.run("mount", name, *args)
        assert_capsule_error(r)
        assert message in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1
    assert mounts(capsule, name) == before
    assert qemu_mountinfo(capsule, name) == before_qemu
    assert guest(capsule, name, "ls -A /q-real").stdout == ""
    r = capsule.run("unmount", name, "/mnt/rw")
    assert_capsule_error(r)
    assert "mounted at start" in r.stderr


@pytest.mark.vm_slow
@boots
def test_vm_binds_come_back_after_stop_and_start(vm):
    capsule, name, rw, *_ = vm
    capsule.run("stop", name, check=True, timeout=BOOT_TIMEOUT)
    with open(os.path.join(rw, "while-stopped"), "w") as f:
        f.write("later\n")
    capsule.run("start", name, check=True, timeout=BOOT_TIMEOUT)
    assert guest(capsule, name, "cat /mnt/rw/while-stopped /mnt/ro/f").stdout == "later\nread only\n"
    assert host_mountinfo(capsule) == []
