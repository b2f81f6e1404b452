"""The stores through the SDK: capsule.system_df() and capsule.system_prune() (the vm store's
rules are tested in tests/e2e/test_vm_store.py)."""
import fcntl
import os
import uuid

import capsule


def fake_root_disk():
    vm = os.path.join(capsule.home(), "vm")
    os.makedirs(vm, mode=0o700, exist_ok=True)
    path = os.path.join(vm, f"rootfs-{uuid.uuid4().hex}.ext4")
    with open(path, "wb") as f:
        f.write(os.urandom(1 << 20))
    return path


def test_system_df_and_prune_see_and_free_an_unused_root_disk():
    path = fake_root_disk()
    files = {f["name"]: f for f in capsule.system_df()["vm"]["files"]}
    entry = files[os.path.basename(path)]
    assert entry["kind"] == "rootfs" and entry["kept"] is None and entry["bytes"] >= 1 << 20
    assert capsule.system_prune() >= 1 << 20
    assert not os.path.exists(path)


def test_system_prune_keeps_a_root_disk_a_process_has_pinned():
    path = fake_root_disk()
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        files = {f["name"]: f for f in capsule.system_df()["vm"]["files"]}
        assert files[os.path.basename(path)]["kept"] == "running"
        capsule.system_prune()
        assert os.path.exists(path)
    finally:
        os.close(fd)
    capsule.system_prune()
    assert not os.path.exists(path)
