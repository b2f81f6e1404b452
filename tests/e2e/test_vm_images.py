"""vm isolation from OCI images (issue 7): the image's layers flattened into a cached ext4 root
disk, a qcow2 overlay per sandbox, grown to --disk-size.

One module-scoped VM, made from an image pulled from a loopback registry, serves most tests
(one boot); tests that need a boot of their own are vm_slow (make check-vm)."""
import glob
import os
import shutil
import tempfile
import uuid

import pytest

from tests.conftest import Capsule

from .helpers import assert_capsule_error, run_dir, run_entries
from .imageutil import Entry, busybox_entries, busybox_layer, layer_tar, make_layout, registry  # noqa: F401
from .test_vm import BOOT_TIMEOUT, STATIC_AGENT, boots

OS_RELEASE = b"NAME=capsule-vm-image\nID=capsule-test\n"
CONFIG = {"Env": ["PATH=/bin", "GREETING=from-image"], "WorkingDir": "/home/app", "User": "app",
          "Cmd": ["sh", "-c", "echo $GREETING; pwd; id -un"]}


def image_layers():
    """busybox, then a layer that adds files and removes some of the first's (a whiteout, an
    opaque folder), so that the flattened disk shows what overlayfs would."""
    base = busybox_entries() + [Entry("old", "dir", mode=0o755), Entry("old/a", data=b"a"), Entry("gone", data=b"x"),
                                Entry("etc/owned", data=b"app's\n", uid=1000, gid=1000, mode=0o600)]
    top = [Entry("etc/os-release", data=OS_RELEASE), Entry("marker", data=b"from the image\n"),
           Entry(".wh.gone", data=b""), Entry("old", "dir", mode=0o755), Entry("old/.wh..wh..opq", data=b""),
           Entry("old/b", data=b"b")]
    return [layer_tar(base), layer_tar(top)]


def rootfs_files(home):
    return sorted(glob.glob(os.path.join(home, "vm", "rootfs-*.ext4")))


@pytest.fixture(scope="module")
def image_ref(registry):  # noqa: F811
    work = tempfile.mkdtemp(prefix="capsule-vmimg-", dir="/var/tmp")
    ref = registry.push(make_layout(work, image_layers(), CONFIG), f"test/vmimg-{uuid.uuid4().hex[:8]}")
    yield ref
    shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def image_vm(capsule_home, image_ref):
    """A named vm sandbox from the image, with a 3G disk."""
    if not STATIC_AGENT:
        pytest.skip("capsule-agent is dynamically linked (a sanitizer build): it cannot be a VM's init")
    c = Capsule(capsule_home)
    name = c.unique_name("vmimg")
    r = c.run("create", "--isolation", "vm", "--name", name, "--image", image_ref, "--disk-size", "3G",
              timeout=BOOT_TIMEOUT)
    assert r.returncode == 0, r.stderr
    yield c, name
    c.cleanup()


def sh(c, name, script, **kw):
    return c.run("exec", name, "--", "sh", "-c", script, timeout=120, **kw)


# ---- one boot, in make check --------------------------------------------------------------------


@boots
def test_vm_image_root_is_the_images_flattened_layers(image_vm):
    c, name = image_vm
    r = sh(c, name, "cat /etc/os-release /marker; ls /old; test -e /gone || echo no-gone; "
           "test -e /usr/bin || echo no-usr; stat -c '%u:%g %a' /home/app /etc/owned", check=True)
    assert r.stdout.split("\n")[:-1] == ["NAME=capsule-vm-image", "ID=capsule-test", "from the image", "b",
                                         "no-gone", "no-usr", "1000:1000 755", "1000:1000 600"]
    # The root is the guest's ext4 disk, not a 9p share of the host, and /proc, /dev are the
    # container level's.
    r = sh(c, name, "grep ' / ' /proc/mounts; ls /dev", check=True)
    mount, devs = r.stdout.split("\n", 1)
    assert mount.split()[1:3] == ["/", "ext4"] and "nosuid" in mount and "nodev" in mount
    assert set(devs.split()) >= {"null", "zero", "random", "urandom", "tty", "pts", "shm"}
    assert not os.path.exists(os.path.join(run_dir(c, name), "fs"))


@boots
def test_vm_image_config_is_every_commands_default(image_vm):
    c, name = image_vm
    r = sh(c, name, "echo $GREETING; pwd; id -un; id -u", check=True)
    assert r.stdout.split() == ["from-image", "/home/app", "app", "1000"]
    # The image's user owns what it writes; -u and -w still win.
    r = c.run("exec", "-u", "0", "-w", "/tmp", name, "--", "sh", "-c", "id -u; pwd", check=True)
    assert r.stdout.split() == ["0", "/tmp"]


@boots
def test_vm_image_writes_persist_across_exec_and_stay_off_the_shared_disk(image_vm):
    c, name = image_vm
    base = rootfs_files(c.home)
    before = {p: os.stat(p).st_mtime_ns for p in base}
    sh(c, name, "echo kept > /home/app/note", check=True)
    c.run("exec", "-u", "0", name, "--", "rm", "/marker", check=True)
    r = sh(c, name, "cat /home/app/note; stat -c %U /home/app/note; test -e /marker || echo no-marker", check=True)
    assert r.stdout.split() == ["kept", "app", "no-marker"]
    # The shared ext4 is never written: the sandbox's own qcow2 took the change.
    assert {p: os.stat(p).st_mtime_ns for p in base} == before
    assert os.path.getsize(os.path.join(run_dir(c, name), "disk.qcow2")) > 0


@boots
def test_vm_image_disk_size_is_what_df_shows(image_vm):
    c, name = image_vm
    r = sh(c, name, "df -k / | tail -1", check=True)
    size_kib = int(r.stdout.split()[1])
    # ext4's own metadata takes a little of the 3G.
    assert 2.9 * (1 << 20) < size_kib <= 3 * (1 << 20)
    r = sh(c, name, "head -c 100000000 /dev/zero > /tmp/big && df -k / | tail -1 && rm /tmp/big", check=True)
    assert int(r.stdout.split()[2]) >= 95000
    info = c.inspect(name)
    assert info["vm"]["disk_size_bytes"] == 3 << 30


def test_vm_bad_disk_size_is_refused_with_one_line_and_nothing_left(capsule):
    for size, words in (("lots", "lots"), ("10M", "64M"), ("0", "disk size"), ("20T", "16T")):
        before = run_entries(capsule)
        r = capsule.run("create", "--isolation", "vm", "--name", capsule.unique_name("vmbad"), "--disk-size", size)
        assert_capsule_error(r)
        assert words in r.stderr
        assert run_entries(capsule) == before


# ---- make check-vm --------------------------------------------------------------------------------


@pytest.mark.vm_slow
@boots
def test_vm_run_image_runs_its_command_and_builds_the_disk_once(capsule, image_ref, image_vm):
    before = rootfs_files(capsule.home)
    r = capsule.run("run", "--isolation", "vm", "--image", image_ref, timeout=BOOT_TIMEOUT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["from-image", "/home/app", "app"]
    # The same layer stack: the cached ext4 serves it, nothing new is built.
    assert rootfs_files(capsule.home) == before
    assert not [n for n in os.listdir(os.path.join(capsule.home, "vm")) if n.startswith(".rootfs-")]


@pytest.mark.vm_slow
@boots
def test_vm_image_stop_and_start_keeps_the_disk(capsule, image_ref):
    name = capsule.unique_name("vmimg")
    r = capsule.run("create", "--isolation", "vm", "--name", name, "--image", image_ref, timeout=BOOT_TIMEOUT)
    assert r.returncode == 0, r.stderr
    sh(capsule, name, "echo survives > /home/app/f", check=True)
    capsule.run("stop", name, check=True, timeout=120)
    r = capsule.run("start", name, timeout=BOOT_TIMEOUT)
    assert r.returncode == 0, r.stderr
    r = sh(capsule, name, "cat /home/app/f; df -k / | tail -1", check=True)
    lines = r.stdout.split("\n")
    assert lines[0] == "survives"
    # The default disk: 2G.
    assert 1.9 * (1 << 20) < int(lines[1].split()[1]) <= 2 * (1 << 20)


@pytest.mark.vm_slow
@boots
def test_vm_starts_from_a_container_levels_save_of_an_image(capsule, image_ref):
    """A container-level save is one more layer folder: the vm's disk stacks it on the image."""
    save = "s-" + uuid.uuid4().hex[:8]
    r = capsule.run("run", "--image", image_ref, "-u", "0", "--save", save, "--", "sh", "-c",
                    "echo saved > /home/app/note; rm /etc/os-release", timeout=120)
    assert r.returncode == 0, r.stderr
    r = capsule.run("run", "--isolation", "vm", "--image", save, "--", "sh", "-c",
                    "cat /home/app/note /marker; test -e /etc/os-release || echo no-os-release; echo $GREETING",
                    timeout=BOOT_TIMEOUT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:-1] == ["saved", "from the image", "no-os-release", "from-image"]
    capsule.run("save", "rm", save)
