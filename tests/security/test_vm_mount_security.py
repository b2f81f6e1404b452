"""vm isolation: what a guest's root can do to the host through a read-write share.

QEMU serves the share (security_model=none) with the creator's uid, root here, so the
guarantees are QEMU's confinement: no CAP_MKNOD, CAP_SETFCAP, CAP_FSETID or CAP_SYS_ADMIN, and
a seccomp filter that refuses set-uid and set-gid modes; and QEMU's own path walk (O_NOFOLLOW
per name, no ".." above the share). docs/security.md, "vm mounts". The first test boots in
`make check`; the module's shared vm serves the rest in `make check-vm`.
"""
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import uuid

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "e2e"))
from secutil import Capsule  # noqa: E402

from helpers import assert_capsule_error, qemu_procs  # noqa: E402
from imageutil import agent_is_static  # noqa: E402

BOOT_TIMEOUT = 240
boots = pytest.mark.skipif(not agent_is_static(os.environ.get("CAPSULE_BUILD", "build")),
                           reason="a dynamically linked agent (a sanitizer build) cannot be a VM's init")

CAP_FSETID, CAP_MKNOD, CAP_SYS_ADMIN, CAP_SETFCAP = 4, 27, 21, 31
HOST_ID_BASE = 1000000000


def set_id_files_and_devices(top):
    """(relative path, mode) of every entry below TOP on the host with a set-id bit, or a device."""
    odd = []
    for dirpath, dirs, files in os.walk(top):
        for n in dirs + files:
            st = os.lstat(os.path.join(dirpath, n))
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) or st.st_mode & 0o6000:
                odd.append((os.path.relpath(os.path.join(dirpath, n), top), oct(st.st_mode)))
    return odd


def in_sandbox_range(host_id, guest_id):
    """HOST_ID is GUEST_ID of some sandbox's own host range (1000000000 + 65536 x slot + id)."""
    base = host_id - guest_id
    return base >= HOST_ID_BASE and (base - HOST_ID_BASE) % 65536 == 0


@pytest.fixture
def secret():
    """A folder outside every share holding a secret the guest must never read or change."""
    d = tempfile.mkdtemp(prefix="capsule-secret-", dir="/var/tmp")
    token = uuid.uuid4().hex
    with open(os.path.join(d, "key"), "w") as f:
        f.write(token)
    yield d, token
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def share():
    d = tempfile.mkdtemp(prefix="capsule-vmshare-", dir="/var/tmp")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@boots
def test_vm_guest_root_plants_no_setid_file_or_device_on_the_host_and_symlinks_lead_nowhere(capsule, share, secret):
    sdir, token = secret
    # A host file the guest's root will try to make set-uid in place.
    host_bin = os.path.join(share, "host-true")
    shutil.copy("/bin/true", host_bin)
    os.chmod(host_bin, 0o755)
    # A host symlink out of the share: the guest must resolve it in its own tree.
    os.symlink(sdir, os.path.join(share, "esc"))
    script = (
        "cd /mnt/s; cp /bin/true suid; chmod 6755 suid; chmod u+s host-true; chmod g+s host-true; "
        "install -m 4755 /bin/true inst; mknod null c 1 3; echo mknod=$?; mkdir d; chmod 2755 d; "
        "python3 -c 'import os; os.open(\"/mnt/s/created\", os.O_CREAT | os.O_WRONLY, 0o4755)'; "
        f"ln -s {sdir}/key link; ln -s ../../../../.. up; echo planted > link; "
        f"cat esc/key /mnt/s/../../..{sdir}/key up{sdir}/key; "
        # Ownership: giving a file to another host user or group, and taking the owner's own.
        "touch given; chown 1000:1000 given; chown 1000 given; chgrp 1000 given; "
        "touch mine; chown 0:0 mine && echo chown-own=ok; "
        "mkdir -m 777 pub; setpriv --reuid=65534 --regid=65534 --clear-groups sh -c 'echo x > pub/by-nobody'; "
        "echo done"
    )
    r = capsule.run("run", "--isolation", "vm", "-v", f"{share}:/mnt/s", "--", "sh", "-c", script, timeout=BOOT_TIMEOUT)
    assert "done" in r.stdout, r.stderr
    # Every set-id mode is refused (chmod 6755, u+s, g+s, install -m 4755, chmod 2755 of a
    # folder, open with O_CREAT 04755), and mknod of a device.
    assert r.stderr.count("Operation not permitted") >= 7, r.stderr
    assert "mknod=1" in r.stdout
    assert set_id_files_and_devices(share) == []
    assert os.stat(host_bin).st_mode & 0o7777 == 0o755
    assert not os.path.exists(os.path.join(share, "null"))
    # The guest's symlinks are symlinks on the host (as a container's are), and the guest
    # resolved them, and the host's own symlink out of the share, in its own tree.
    assert os.readlink(os.path.join(share, "link")) == f"{sdir}/key"
    assert token not in r.stdout
    assert open(os.path.join(sdir, "key")).read() == token and os.listdir(sdir) == ["key"]
    # The ephemeral sandbox's removal walked no share: the host folder is whole.
    assert {"host-true", "suid", "inst", "d", "link", "up", "esc"} <= set(os.listdir(share))
    assert not os.path.exists(os.path.join(share, "created"))
    # No guest id is a host user's: the share is idmapped as the container level's host
    # folders are, so guest id N lands on the sandbox's own host id, and guest root's on the
    # owner's.
    given = os.stat(os.path.join(share, "given"))
    assert in_sandbox_range(given.st_uid, 1000) and in_sandbox_range(given.st_gid, 1000), given
    assert given.st_uid - 1000 == given.st_gid - 1000
    assert "chown-own=ok" in r.stdout, r.stderr
    mine = os.stat(os.path.join(share, "mine"))
    assert (mine.st_uid, mine.st_gid) == (os.geteuid(), os.getegid())
    assert in_sandbox_range(os.stat(os.path.join(share, "pub", "by-nobody")).st_uid, 65534)


@pytest.fixture(scope="module")
def vm(capsule_home):
    c = Capsule(capsule_home)
    d = tempfile.mkdtemp(prefix="capsule-vmshare-", dir="/var/tmp")
    name = c.unique_name("vmsec")
    r = c.run("create", "--isolation", "vm", "--name", name, "-v", f"{d}:/mnt/s", timeout=BOOT_TIMEOUT)
    assert r.returncode == 0, r.stderr
    yield c, name, d
    c.cleanup()
    shutil.rmtree(d, ignore_errors=True)


def guest(capsule, name, script):
    return capsule.run("exec", name, "--", "sh", "-c", script, timeout=120)


@pytest.mark.vm_slow
@boots
def test_vm_guest_cannot_set_file_capabilities_or_trusted_xattrs_on_the_host(vm):
    capsule, name, d = vm
    r = guest(capsule, name, "cp /bin/true /mnt/s/capped; python3 -c '\n"
                             "import os\n"
                             "for n, v in ((\"security.capability\", b\"\\x01\\x00\\x00\\x02\" + b\"\\xff\" * 16),"
                             " (\"trusted.overlay.opaque\", b\"y\")):\n"
                             "    try:\n"
                             "        os.setxattr(\"/mnt/s/capped\", n, v); print(n, \"set\")\n"
                             "    except OSError as e:\n"
                             "        print(n, e.errno)\n'")
    assert "set" not in r.stdout, r.stdout + r.stderr
    assert os.listxattr(os.path.join(d, "capped")) == []


@pytest.mark.vm_slow
@boots
def test_vm_qemu_has_no_capability_to_make_devices_set_ids_or_file_caps_and_is_filtered(vm):
    capsule, name, d = vm
    (pid,) = qemu_procs(capsule, name)
    fields = dict(line.split(":\t", 1) for line in open(f"/proc/{pid}/status").read().splitlines() if ":\t" in line)
    for field in ("CapBnd", "CapPrm", "CapEff", "CapInh", "CapAmb"):
        caps = int(fields[field].strip(), 16)
        for cap in (CAP_FSETID, CAP_MKNOD, CAP_SYS_ADMIN, CAP_SETFCAP):
            assert not caps & (1 << cap), (field, cap)
    assert fields["NoNewPrivs"].strip() == "1"
    # QEMU's own -sandbox filter and ours, stacked.
    assert int(fields["Seccomp_filters"].strip()) >= 2


@pytest.mark.vm_slow
@boots
def test_vm_the_share_is_not_reachable_from_inside_nor_visible_on_the_host(vm):
    capsule, name, d = vm
    r = guest(capsule, name, "ls -d /shares; mkdir -p /mnt/t; mount -t 9p -o trans=virtio mounts /mnt/t; "
                             "echo rc=$?")
    assert "rc=0" not in r.stdout and "No such file" in r.stderr
    with open("/proc/self/mountinfo") as f:
        assert not [line for line in f if capsule.home in line]


@pytest.mark.vm_slow
@boots
def test_vm_hot_mount_of_a_symlink_to_a_sensitive_path_is_refused(vm, share):
    capsule, name, d = vm
    link = os.path.join(share, "innocent")
    os.symlink("/etc", link)
    r = capsule.run("mount", name, link, "/mnt/x")
    assert_capsule_error(r)
    assert "'/etc' is a sensitive host path" in r.stderr
    # A hot mount's guest path through a symlink the guest planted is refused, not followed.
    guest(capsule, name, "ln -sfn / /mnt/up")
    r = capsule.run("mount", name, share, "/mnt/up/etc/evil")
    assert_capsule_error(r)
    assert "symlink" in r.stderr
