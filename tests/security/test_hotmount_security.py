"""Hot mounts against a hostile sandbox: the guest path is the sandbox's to play with (symlinks,
`..`, swaps while a mount is under way, swaps before an unmount); none of it may make the shim
mount or unmount anything outside the sandbox."""
import json
import os
import shutil
import stat
import subprocess
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
    mounts = json.loads(capsule.run("mounts", sandbox, "--json", check=True).stdout)
    assert f"/etc/{name}" in [m["guest_path"] for m in mounts], mounts
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


# Speaks the protocol itself: as a non-root user the CLI could not even open $CAPSULE_HOME.
# Prints "OK <handle>" or "ERROR <errno> <message>".
MOUNT_CLIENT = r"""
import socket, struct, sys
def frame(t, chan, payload=b""):
    return struct.pack("<IHHI", len(payload), t, 0, chan) + payload
def tlv(tag, val):
    return struct.pack("<HI", tag, len(val)) + val
def recv_frame(s):
    buf = b""
    while len(buf) < 12:
        buf += s.recv(12 - len(buf))
    ln, t, fl, ch = struct.unpack("<IHHI", buf)
    p = b""
    while len(p) < ln:
        p += s.recv(ln - len(p))
    return t, ch, p
def fields(p):
    out = {}
    while len(p) >= 6:
        tag, ln = struct.unpack("<HI", p[:6])
        out[tag] = p[6:6 + ln]
        p = p[6 + ln:]
    return out
sock, host, guest, flags = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sock)
s.sendall(frame(1, 0, tlv(1, struct.pack("<I", 1)) + tlv(2, b"client")))
recv_frame(s)
s.sendall(frame(80, 1, tlv(1, host.encode()) + tlv(2, guest.encode()) + tlv(3, struct.pack("<I", flags))))
t, ch, p = recv_frame(s)
f = fields(p)
if t == 3:
    print("OK", f[1].decode())
else:
    print("ERROR", struct.unpack("<I", f[1])[0], f.get(2, b"").decode())
"""


def test_host_path_is_opened_with_the_rights_of_the_client_not_the_shim(capsule, sandbox, hostdir):
    # A client that is not root (the socket opened up to it for this test: the home is its
    # owner's alone, so no other user reaches it otherwise) cannot mount what only root may
    # read, nor mount read-write what it may only read; its own folder it can.
    sock = os.path.join(capsule.home, "run", sandbox, "control.sock")
    opened = [capsule.home, os.path.dirname(os.path.dirname(sock)), os.path.dirname(sock)]
    modes = [stat.S_IMODE(os.stat(d).st_mode) for d in opened]
    for d in opened:
        os.chmod(d, 0o711)
    os.chmod(sock, 0o666)
    secret = tempfile.mkdtemp(prefix="capsule-hotsec-secret-", dir="/tmp")
    readable = tempfile.mkdtemp(prefix="capsule-hotsec-ro-", dir="/tmp")
    own = tempfile.mkdtemp(prefix="capsule-hotsec-own-", dir="/tmp")
    try:
        os.chmod(secret, 0o700)
        os.chmod(readable, 0o755)
        os.chown(own, 4321, 4321)

        def as_user():
            os.setgroups([])
            os.setgid(4321)
            os.setuid(4321)

        def mount_as_user(host, guest, flags=0):
            r = subprocess.run(["python3", "-c", MOUNT_CLIENT, sock, host, guest, str(flags)], capture_output=True,
                               text=True, timeout=60, preexec_fn=as_user)
            assert r.returncode == 0, r.stderr
            return r.stdout.strip()

        out = mount_as_user(secret, "/mnt/secret", 1)
        assert out.startswith("ERROR 13 ") and "may not read it" in out, out
        out = mount_as_user(readable, "/mnt/readable")
        assert out.startswith("ERROR 13 ") and "may not read and write it" in out, out
        assert mount_as_user(readable, "/mnt/readable", 1).startswith("OK m")
        assert mount_as_user(own, "/mnt/own").startswith("OK m")
        sh(capsule, sandbox, "touch /mnt/own/made-inside", check=True)
        assert os.path.exists(os.path.join(own, "made-inside"))
        assert "/mnt/secret" not in capsule.run("mounts", sandbox, check=True).stdout
        # The shim went back to its own rights afterwards: root's request still works.
        capsule.run("mount", sandbox, secret, "/mnt/secret-root", check=True)
    finally:
        for d, mode in zip(opened, modes):
            os.chmod(d, mode)
        for d in (secret, readable, own):
            shutil.rmtree(d, ignore_errors=True)
