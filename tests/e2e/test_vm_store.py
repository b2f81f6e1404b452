"""The vm store ($CAPSULE_HOME/vm: flattened ext4 roots, initramfs files, unpacked kernels) is
collected (src/lib/vm_store.h): `image rm` and `saves rm` remove the root disks nothing uses any
more, `system prune` also kernels and initramfs files but the latest used, and `system df`
says what each file is kept for. Entries a running vm boots from, or a build holds, are never
removed; what a killed build left is.

The first tests make a store by hand (no vm boots); the vm_slow ones boot vms from an image."""
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import uuid

import pytest

from tests.conftest import Capsule

from .helpers import assert_capsule_error
from .imageutil import make_layout, registry  # noqa: F401
from .test_vm import BOOT_TIMEOUT, boots
from .test_vm_images import CONFIG, image_layers

DEAD_PID = 4194305  # above the kernel's pid_max limit: never a live process


def key():
    return uuid.uuid4().hex


@pytest.fixture
def store():
    """A home of its own: these tests remove what the store holds."""
    parent = tempfile.mkdtemp(prefix="capsule-store-", dir="/var/tmp")
    os.chmod(parent, 0o755)
    c = Capsule(os.path.join(parent, "home"))
    c.run("ps", check=True)
    os.makedirs(os.path.join(c.home, "vm"), mode=0o700)
    yield c
    c.cleanup()
    shutil.rmtree(parent, ignore_errors=True)


def vm_path(c, name):
    return os.path.join(c.home, "vm", name)


def put(c, name, size=1 << 20):
    with open(vm_path(c, name), "wb") as f:
        f.write(os.urandom(size))
    return vm_path(c, name)


def vm_files(c):
    return sorted(os.listdir(os.path.join(c.home, "vm")))


def df(c):
    r = c.run("system", "df", "--json", check=True)
    return json.loads(r.stdout)


def kept(c):
    return {f["name"]: f["kept"] for f in df(c)["vm"]["files"]}


def prune(c):
    r = c.run("system", "prune", check=True)
    assert r.stdout.startswith("Total reclaimed space: "), r.stdout
    return r.stdout


def test_store_unused_root_disk_goes_on_prune_and_df_counted_it(store):
    k = key()
    put(store, f"rootfs-{k}.ext4")
    open(vm_path(store, f"rootfs-{k}.lock"), "w").close()
    with open(vm_path(store, f"rootfs-{k}.layers"), "w") as f:
        f.write("/nonexistent/layer\n")
    u = df(store)["vm"]
    assert u["entries"] == 1 and u["bytes"] >= 1 << 20 and u["reclaimable"] == u["bytes"], u
    assert kept(store) == {f"rootfs-{k}.ext4": None}
    out = prune(store)
    assert "0 B" not in out, out
    assert vm_files(store) == []


def test_store_what_a_killed_build_left_is_collected_and_a_live_build_is_not(store):
    dead, live = key(), key()
    # A build of DEAD killed mid-way: its temporary disk, mount point, empty lower, its lock.
    put(store, f".rootfs-{dead}.{DEAD_PID}.tmp")
    os.mkdir(vm_path(store, f".rootfs-{dead}.{DEAD_PID}.mnt"))
    os.mkdir(vm_path(store, f".rootfs-{dead}.{DEAD_PID}.empty"))
    open(vm_path(store, f"rootfs-{dead}.lock"), "w").close()
    # A kernel unpack killed mid-way, and one still being written by a live process.
    put(store, f".tmp-vmlinux-6.1.0-x-1-2-3-{DEAD_PID}")
    put(store, f".tmp-initramfs-6.1.0-x-0123456789abcdef.cpio-{os.getpid()}")
    # A build of LIVE in progress: its lock held (as the shim's builder holds it).
    put(store, f".rootfs-{live}.{os.getpid()}.tmp")
    lock = os.open(vm_path(store, f"rootfs-{live}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        prune(store)
        assert vm_files(store) == sorted([f".rootfs-{live}.{os.getpid()}.tmp", f"rootfs-{live}.lock",
                                          f".tmp-initramfs-6.1.0-x-0123456789abcdef.cpio-{os.getpid()}"])
    finally:
        os.close(lock)
    # The builder is gone (its lock free): what it left goes too.
    prune(store)
    assert vm_files(store) == [f".tmp-initramfs-6.1.0-x-0123456789abcdef.cpio-{os.getpid()}"]


def test_store_root_disk_a_qcow2_stands_on_is_kept_until_the_qcow2_goes(store):
    k = key()
    base = put(store, f"rootfs-{k}.ext4")
    for where in ("run/sb-x", "run/sb-y/checkpoints/cp", "saves/s"):
        os.makedirs(os.path.join(store.home, where), mode=0o700)
    # A stopped sandbox's disk, a checkpoint's, a save's: each alone keeps the base.
    disks = [os.path.join(store.home, "run/sb-x/disk.qcow2"),
             os.path.join(store.home, "run/sb-y/checkpoints/cp/disk.qcow2"),
             os.path.join(store.home, "saves/s/disk.qcow2")]
    for d in disks:
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", d], check=True)
    for d in disks:
        assert kept(store) == {f"rootfs-{k}.ext4": "disk"}
        prune(store)
        assert os.path.exists(base)
        os.unlink(d)
    prune(store)
    assert not os.path.exists(base)


def test_store_entry_a_process_has_pinned_is_never_removed(store):
    k = key()
    base = put(store, f"rootfs-{k}.ext4")
    old = put(store, "initramfs-6.1.0-x-0000000000000001.cpio")
    new = put(store, "initramfs-6.1.0-x-0000000000000002.cpio")
    os.utime(old, (1_000_000, 1_000_000))
    pins = [os.open(p, os.O_RDONLY) for p in (base, old)]
    try:
        for fd in pins:
            fcntl.flock(fd, fcntl.LOCK_SH)
        assert kept(store) == {f"rootfs-{k}.ext4": "running", os.path.basename(old): "running",
                               os.path.basename(new): "latest"}
        prune(store)
        assert os.path.exists(base) and os.path.exists(old) and os.path.exists(new)
    finally:
        for fd in pins:
            os.close(fd)
    # Unpinned: the root disk goes, and of the initramfs files the one used last stays.
    prune(store)
    assert vm_files(store) == [os.path.basename(new)]


def test_store_save_removal_collects_root_disks_but_keeps_boot_files(store):
    k = key()
    put(store, f"rootfs-{k}.ext4")
    put(store, "vmlinux-6.1.0-x-1-2-3")
    put(store, "vmlinux-6.1.0-x-4-5-6")
    os.makedirs(os.path.join(store.home, "saves", "gone", "layer"))
    with open(os.path.join(store.home, "saves", "gone", "manifest.json"), "w") as f:
        json.dump({"name": "gone", "id": "x", "parent": "host", "parent_kind": "host", "base": "host",
                   "layers": [], "created": 0, "size": 0, "files": 0}, f)
    r = store.run("saves", "rm", "gone", check=True)
    assert r.stdout == "gone\n"
    # Kernels are a prune's to remove (the next boot would unpack one again), not a removal's.
    assert vm_files(store) == ["vmlinux-6.1.0-x-1-2-3", "vmlinux-6.1.0-x-4-5-6"]


@pytest.mark.parametrize("args", [["system"], ["system", "nosuch"], ["system", "df", "--bogus"],
                                  ["system", "prune", "extra"]])
def test_store_system_bad_input_is_one_line(store, args):
    assert_capsule_error(store.run(*args))


# ---- vms booted from an image (make check-vm) ------------------------------------------------------


@pytest.fixture
def pushed(registry):  # noqa: F811
    """An image on the registry, not yet in any store."""
    work = tempfile.mkdtemp(prefix="capsule-vmstore-", dir="/var/tmp")
    ref = registry.push(make_layout(work, image_layers(), CONFIG), f"test/vmstore-{uuid.uuid4().hex[:8]}")
    yield ref
    shutil.rmtree(work, ignore_errors=True)


def roots(c):
    return [n for n in vm_files(c) if n.startswith("rootfs-") and n.endswith(".ext4")]


@boots
@pytest.mark.vm_slow
def test_vm_store_removed_images_root_goes_once_no_sandbox_uses_it(store, pushed):
    name = store.unique_name("vst")
    r = store.run("create", "--isolation", "vm", "--name", name, "--image", pushed, timeout=BOOT_TIMEOUT)
    assert r.returncode == 0, r.stderr
    [root] = roots(store)
    k = kept(store)
    # The running vm pins its root disk, kernel and initramfs.
    assert k[root] == "running" and set(k.values()) == {"running"}, k
    store.run("image", "rm", pushed, check=True)
    prune(store)
    assert roots(store) == [root] and set(kept(store).values()) == {"running"}
    store.run("stop", name, check=True, timeout=120)
    # Stopped, its qcow2 stands on the root disk.
    assert kept(store)[root] == "disk"
    prune(store)
    assert roots(store) == [root]
    store.run("rm", name, check=True, timeout=120)
    prune(store)
    assert roots(store) == [] and not [n for n in vm_files(store) if n.startswith(("rootfs-", ".rootfs-"))]
    assert os.listdir(os.path.join(store.home, "images", "layers")) == []


@boots
@pytest.mark.vm_slow
def test_vm_store_removed_saves_disk_and_root_go_with_it(store, pushed):
    name = store.unique_name("vss")
    save = f"vss-{uuid.uuid4().hex[:8]}"
    r = store.run("create", "--isolation", "vm", "--name", name, "--image", pushed, timeout=BOOT_TIMEOUT)
    assert r.returncode == 0, r.stderr
    store.run("save", name, save, check=True, timeout=120)
    store.run("rm", "-f", name, check=True, timeout=120)
    # The image is gone, the save still stands on the root disk (and keeps the layers).
    store.run("image", "rm", pushed, check=True)
    [root] = roots(store)
    assert kept(store)[root] in ("disk", "layers")
    store.run("saves", "rm", save, check=True)
    assert not os.path.exists(os.path.join(store.home, "saves", save))
    assert roots(store) == []
    assert os.listdir(os.path.join(store.home, "images", "layers")) == []
