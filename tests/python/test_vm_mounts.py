"""The SDK's mounts with isolation="vm": the same calls as for a container (one boot, vm_slow)."""
import os

import pytest

from capsule import Mount, MountError, SyncSandbox

from sdkutil import agent_is_static


@pytest.mark.vm_slow
@pytest.mark.skipif(not agent_is_static(), reason="a dynamically linked agent (a sanitizer build) cannot be a "
                    "VM's init")
def test_sync_sandbox_vm_boot_mounts_volume_and_hot_mounts(hostdir):
    boot, hot = os.path.join(hostdir, "boot"), os.path.join(hostdir, "hot")
    os.makedirs(boot)
    os.makedirs(hot)
    with open(os.path.join(hot, "f"), "w") as f:
        f.write("hot")
    with SyncSandbox(isolation="vm", memory="256M",
                     mounts=[Mount(boot, "/mnt/boot"), Mount.tmpfs("/scratch", size="4M"),
                             Mount.volume("sdk-vm-vol", "/vol")]) as sb:
        assert [(m.kind, m.guest_path) for m in sb.active_mounts] == [
            ("bind", "/mnt/boot"), ("volume", "/vol"), ("tmpfs", "/scratch")]
        assert sb.execute("echo in > /mnt/boot/x; echo v > /vol/v; grep -c ' /scratch tmpfs' /proc/mounts").stdout \
            == "1\n"
        assert open(os.path.join(boot, "x")).read() == "in\n"
        h = sb.mount(hot, "/mnt/hot", readonly=True)
        assert h.hot and h.readonly
        assert sb.execute("cat /mnt/hot/f").stdout == "hot"
        assert sb.execute("touch /mnt/hot/g").exit_code != 0
        assert {m.guest_path for m in sb.active_mounts} == {"/mnt/boot", "/vol", "/scratch", "/mnt/hot"}
        sb.unmount(h)
        assert sb.execute("ls -A /mnt/hot").stdout == ""
        with pytest.raises(MountError):
            sb.unmount("/mnt/boot")  # boot-time mounts stay
    assert not sb.is_running
