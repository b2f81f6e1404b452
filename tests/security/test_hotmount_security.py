"""Hot mounts against a hostile sandbox: the guest path is the sandbox's to play with (symlinks,
`..`, swaps while a mount is under way, swaps before an unmount); none of it may make the shim
mount or unmount anything outside the sandbox."""
import os
import shutil
import tempfile
import time
import uuid

import pytest

from secutil import sh


@pytest.fixture
def hostdir():
    d = tempfile.mkdtemp(prefix="capsule-hotsec-", dir="/tmp")
    os.chmod(d, 0o755)
    with open(os.path.join(d, "marker"), "w") as f:
        f.write("from the host\n")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def sandbox(capsule):
    return capsule.create()


def host_mountinfo():
    with open("/proc/self/mountinfo") as f:
        return f.read().splitlines()


def new_host_mounts(before, hostdir):
    """Host mounts that appeared since BEFORE and could be ours: at /etc, or of HOSTDIR.
    (Other suites may mount things of their own on a shared machine meanwhile.)"""
    new = set(host_mountinfo()) - set(before)
    base = os.path.basename(hostdir)
    return [line for line in new if base in line or line.split()[4].startswith("/etc")]


def one_clear_line(r):
    assert r.returncode == 125, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith("capsule: "), r.stderr


def test_target_through_a_symlink_to_etc_is_refused_and_host_etc_untouched(capsule, sandbox, hostdir):
    before = host_mountinfo()
    sh(capsule, sandbox, "mkdir -p /mnt && ln -s /etc /mnt/evil && ln -s /../../../../../etc /mnt/evil2",
       check=True)
    for target in ("/mnt/evil", "/mnt/evil/capsule-hot-sub", "/mnt/evil2/capsule-hot-sub"):
        r = capsule.run("mount", sandbox, hostdir, target)
        one_clear_line(r)
        assert "symlink" in r.stderr
    assert not os.path.exists("/etc/capsule-hot-sub")
    # Nothing was made or mounted inside either: not in the sandbox's own /etc.
    r = sh(capsule, sandbox, "ls /etc/capsule-hot-sub 2>&1; grep -c capsule-hotsec /proc/self/mountinfo")
    assert "No such file" in r.stdout and r.stdout.strip().endswith("0")
    assert new_host_mounts(before, hostdir) == []


def test_dotdot_chains_stay_inside_the_sandbox(capsule, sandbox, hostdir):
    before = host_mountinfo()
    name = f"capsule-dotdot-{uuid.uuid4().hex[:8]}"
    r = capsule.run("mount", sandbox, hostdir, f"/mnt/../../../../../../etc/{name}/../{name}")
    assert r.returncode == 0, r.stderr
    assert not os.path.exists(f"/etc/{name}")
    r = sh(capsule, sandbox, f"cat /etc/{name}/marker", check=True)
    assert r.stdout == "from the host\n"
    mounts = capsule.run("mounts", sandbox, "--json", check=True).stdout
    assert f'"guest_path":"/etc/{name}"' in mounts
    assert new_host_mounts(before, hostdir) == []
    capsule.run("unmount", sandbox, f"/etc/../etc/{name}", check=True)


SWAPPER = r"""
import os, sys, time
end = time.monotonic() + float(sys.argv[1])
t = "/mnt/race"
while time.monotonic() < end:
    for step in (lambda: os.rmdir(t + "/sub"), lambda: os.rmdir(t), lambda: os.symlink("/etc", t),
                 lambda: os.unlink(t), lambda: os.mkdir(t), lambda: os.rmdir(t), lambda: os.symlink("/", t),
                 lambda: os.unlink(t), lambda: os.mkdir(t)):
        try:
            step()
        except OSError:
            pass
"""


def test_target_swapped_for_a_symlink_in_a_tight_loop_while_hot_mounts_run(capsule, sandbox, hostdir):
    before = host_mountinfo()
    etc_before = sorted(os.listdir("/etc"))
    sh(capsule, sandbox, "mkdir -p /mnt/race", check=True)
    r = capsule.run("exec", "-d", sandbox, "python3", "-c", SWAPPER, "20")
    assert r.returncode == 0, r.stderr
    swapper = r.stdout.strip()
    time.sleep(0.3)
    ok = refused = 0
    deadline = time.monotonic() + 15
    for i in range(40):
        if time.monotonic() > deadline:
            break
        target = "/mnt/race" if i % 2 else "/mnt/race/sub"
        r = capsule.run("mount", sandbox, hostdir, target)
        if r.returncode != 0:
            one_clear_line(r)
            refused += 1
            continue
        ok += 1
        handle = r.stdout.strip()
        # Wherever it landed, it is inside: the host's /etc and / never got it.
        assert not os.path.exists("/etc/marker") and not os.path.exists("/etc/sub")
        assert not os.path.exists("/sub")
        u = capsule.run("unmount", sandbox, handle)
        if u.returncode != 0:
            one_clear_line(u)
    # The swapper really ran all along (else this tested nothing).
    r = capsule.run("exec", sandbox, "--", "ps", "-o", "comm=", "-p", swapper)
    assert r.stdout.strip() == "python3", (r.stdout, r.stderr)
    assert ok + refused > 0
    assert not os.path.exists("/etc/marker") and not os.path.exists("/etc/sub")
    assert sorted(os.listdir("/etc")) == etc_before
    assert new_host_mounts(before, hostdir) == []
    capsule.run("exec", sandbox, "true", check=True)


def test_unmount_after_the_sandbox_swapped_the_target_fails_safely(capsule, sandbox, hostdir):
    before = host_mountinfo()
    handle = capsule.run("mount", sandbox, hostdir, "/mnt/sw/p", check=True).stdout.strip()
    # The mount point itself cannot be removed while mounted, but its folder can be moved
    # away and a symlink to /etc put where it was.
    sh(capsule, sandbox, "mv /mnt/sw /mnt/sw-moved && mkdir /mnt/sw && ln -s /etc /mnt/sw/p", check=True)
    r = capsule.run("unmount", sandbox, handle)
    one_clear_line(r)
    assert "no longer" in r.stderr
    # The parent replaced by a symlink, too.
    sh(capsule, sandbox, "rm -rf /mnt/sw && ln -s /etc /mnt/sw", check=True)
    r = capsule.run("unmount", sandbox, "/mnt/sw/p")
    one_clear_line(r)
    assert "no longer" in r.stderr
    # The mount is still there (moved with its folder) and still listed; nothing else moved.
    r = sh(capsule, sandbox, "cat /mnt/sw-moved/p/marker; ls -ld /etc/passwd >/dev/null && echo etc-ok", check=True)
    assert r.stdout == "from the host\netc-ok\n"
    assert handle in capsule.run("mounts", sandbox, check=True).stdout
    assert new_host_mounts(before, hostdir) == []
    assert os.path.exists("/etc/passwd")
    # Put back where it was, it can be unmounted.
    sh(capsule, sandbox, "rm /mnt/sw && mv /mnt/sw-moved /mnt/sw", check=True)
    capsule.run("unmount", sandbox, handle, check=True)


def test_a_hot_mount_is_nosuid_and_nodev(capsule, sandbox, hostdir):
    capsule.run("mount", sandbox, hostdir, "/mnt/opts", check=True)
    r = sh(capsule, sandbox, "grep ' /mnt/opts ' /proc/self/mountinfo", check=True)
    opts = r.stdout.split()[5].split(",")
    assert "nosuid" in opts and "nodev" in opts
