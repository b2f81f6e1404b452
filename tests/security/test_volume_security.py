"""Named volumes under attack: names that climb out of volumes/, host-side paths and symlinks
planted by a sandbox that try to make the host read or write outside the volume, and the one
loop device a quota image may ever have."""
import glob
import os
import shutil
import stat
import subprocess
import tempfile
import uuid

import pytest

from secutil import wait_until


def vname(prefix="v"):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def volume(capsule):
    made = []

    def make(*args):
        name = vname()
        r = capsule.run("volume", "create", name, *args)
        assert r.returncode == 0, r.stderr
        made.append(name)
        return name

    yield make
    capsule.cleanup()
    for n in made:
        capsule.run("volume", "rm", n)


def one_line_error(r):
    assert r.returncode == 125, (r.returncode, r.stdout, r.stderr)
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("capsule"), r.stderr


@pytest.mark.parametrize("bad", ["../x", "a/b", "..", ".", "../../run", "/abs", "x\ny", ""])
def test_volume_names_cannot_leave_the_volumes_folder(capsule, bad):
    home_before = sorted(os.listdir(capsule.home))
    for args in (["create", bad], ["create", bad, "--quota", "16M"], ["rm", bad], ["inspect", bad],
                 ["read", bad, "/f"], ["write", bad, "/f"]):
        r = capsule.run("volume", *args, input="data")
        one_line_error(r)
    if bad and not bad.startswith("/"):
        r = capsule.run("run", "-v", f"{bad}:/mnt", "--", "true")
        one_line_error(r)
    assert sorted(os.listdir(capsule.home)) == home_before
    vols = os.path.join(capsule.home, "volumes")
    assert not os.path.isdir(vols) or os.listdir(vols) == [] or all(
        not e.startswith(".") for e in os.listdir(vols))
    assert not os.path.exists(os.path.join(capsule.home, "x"))


def test_volume_store_is_root_only_and_the_image_is_never_in_the_sandbox(capsule, volume):
    name = volume("--quota", "16M")
    vols = os.path.join(capsule.home, "volumes")
    assert stat.S_IMODE(os.stat(vols).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(os.path.join(vols, name, "disk.img")).st_mode) == 0o600
    r = capsule.run("run", "-v", f"{name}:/v", "--", "sh", "-c",
                    "ls -A /v; grep -c ' /v ' /proc/self/mountinfo; grep ' /v ' /proc/self/mountinfo", check=True)
    lines = r.stdout.splitlines()
    assert lines[0] == "1"  # nothing in the volume, no lost+found, no disk.img
    assert "nosuid" in lines[1] and "nodev" in lines[1]


@pytest.mark.parametrize("quota", [[], ["--quota", "16M"]], ids=["folder", "ext4"])
def test_host_side_paths_with_dotdot_stay_inside_the_volume(capsule, volume, quota):
    name = volume(*quota)
    r = capsule.run("volume", "read", name, "../../etc/passwd")
    one_line_error(r)
    assert "root:" not in r.stdout
    marker = f"capsule-escape-{uuid.uuid4().hex[:8]}"
    capsule.run("volume", "write", name, f"../../../../tmp/{marker}", input="inside\n", check=True)
    assert not os.path.exists(f"/tmp/{marker}")
    # It landed in the volume's own /tmp.
    r = capsule.run("run", "-v", f"{name}:/v", "--", "cat", f"/v/tmp/{marker}", check=True)
    assert r.stdout == "inside\n"


@pytest.mark.parametrize("quota", [[], ["--quota", "16M"]], ids=["folder", "ext4"])
def test_symlinks_planted_by_a_sandbox_never_reach_host_files(capsule, volume, quota):
    name = volume(*quota)
    hostdir = tempfile.mkdtemp(prefix="capsule-voltarget-", dir="/tmp")
    try:
        with open(os.path.join(hostdir, "secret"), "w") as f:
            f.write("host secret\n")
        capsule.run("run", "-v", f"{name}:/v", "--", "sh", "-c",
                    f"ln -s /etc/shadow /v/shadow; ln -s ../../../../../../etc/passwd /v/passwd; "
                    f"ln -s {hostdir} /v/hostdir; ln -s /etc /v/etcdir; ln -s {hostdir}/secret /v/secret; "
                    "mkfifo /v/fifo",
                    check=True)
        for path in ("/shadow", "/passwd", "/secret", "/hostdir/secret"):
            r = capsule.run("volume", "read", name, path, timeout=30)
            one_line_error(r)
            assert "root:" not in r.stdout and "host secret" not in r.stdout
            assert "No such file or directory" in r.stderr
        # A FIFO does not hang the host; only regular files are read.
        r = capsule.run("volume", "read", name, "/fifo", timeout=30)
        one_line_error(r)
        assert "not a regular file" in r.stderr
        # Writes through a symlinked parent folder stay in the volume (or fail): never on the host.
        marker = f"capsule-pwned-{uuid.uuid4().hex[:8]}"
        for parent in ("hostdir", "etcdir"):
            capsule.run("volume", "write", name, f"/{parent}/{marker}", input="x")
        assert not os.path.exists(os.path.join(hostdir, marker))
        assert not os.path.exists(f"/etc/{marker}")
        # A write to a path that is a symlink replaces the link, it does not write through it.
        capsule.run("volume", "write", name, "/secret", input="replaced\n", check=True)
        with open(os.path.join(hostdir, "secret")) as f:
            assert f.read() == "host secret\n"
        assert capsule.run("volume", "read", name, "/secret", check=True).stdout == "replaced\n"
        assert sorted(os.listdir(hostdir)) == ["secret"]
    finally:
        shutil.rmtree(hostdir, ignore_errors=True)


def loops_backing(image):
    """Loop devices whose backing file is IMAGE, from sysfs."""
    found = []
    for bf in glob.glob("/sys/block/loop*/loop/backing_file"):
        try:
            with open(bf) as f:
                path = f.read().strip()
        except OSError:
            continue
        if path == image or path == image + " (deleted)":
            found.append(bf.split("/")[3])
    return found


def test_one_image_never_gets_two_loop_devices(capsule, volume):
    name = volume("--quota", "16M")
    image = os.path.join(capsule.home, "volumes", name, "disk.img")
    sandboxes = [capsule.create("-v", f"{name}:/v"), capsule.create("-v", f"{name}:/v:ro")]
    loops = loops_backing(image)
    assert len(loops) == 1, loops
    # A third user on the host side shares the same device (and superblock) as well.
    capsule.run("volume", "write", name, "/from-host", input="h\n", check=True)
    sandboxes.append(capsule.create("-v", f"{name}:/w"))
    assert loops_backing(image) == loops
    # And they see one filesystem: a write by one is at once in the others.
    capsule.run("exec", sandboxes[0], "--", "sh", "-c", "echo w > /v/from-0", check=True)
    for sb, mnt in ((sandboxes[1], "/v"), (sandboxes[2], "/w")):
        assert capsule.run("exec", sb, "--", "cat", f"{mnt}/from-0", f"{mnt}/from-host", check=True).stdout == "w\nh\n"
    # The ext4 superblock is the same one in every sandbox (same device number).
    devs = {capsule.run("exec", sb, "--", "stat", "-c", "%d", mnt, check=True).stdout
            for sb, mnt in zip(sandboxes, ("/v", "/v", "/w"))}
    assert len(devs) == 1
    for sb in sandboxes:
        capsule.run("rm", "-f", sb, check=True)
    # Once the last user is gone the loop device goes too (autoclear), so the image is free.
    assert wait_until(lambda: not loops_backing(image), timeout=20)
    # Starts and stops in a row find or make exactly one device each time, and the
    # filesystem stays clean.
    for i in range(5):
        capsule.run("run", "-v", f"{name}:/v", "--", "sh", "-c", f"echo {i} > /v/n", check=True)
    assert capsule.run("volume", "read", name, "/n", check=True).stdout == "4\n"
    assert wait_until(lambda: not loops_backing(image), timeout=20)
    r = subprocess.run(["/sbin/e2fsck", "-fn", image], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
