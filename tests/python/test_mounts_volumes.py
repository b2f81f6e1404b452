"""Hot mounts and named volumes through the SDK."""
import asyncio
import os

import pytest

from capsule import (Sandbox, SyncSandbox, Mount, MountHandle, Volume, MountError, NotFound, PermissionDenied,
                     InvalidArgument)


def test_hot_mount_lifecycle_sync(hostdir):
    a = os.path.join(hostdir, "a")
    b = os.path.join(hostdir, "b")
    os.makedirs(a)
    os.makedirs(b)
    with open(os.path.join(b, "f"), "w") as f:
        f.write("b")
    with SyncSandbox(mounts=[Mount.tmpfs("/scratch")]) as sb:
        boot = sb.active_mounts
        assert [(m.kind, m.guest_path, m.hot, m.handle) for m in boot] == [("tmpfs", "/scratch", False, None)]
        ha = sb.mount(a, "/deep/new/a")
        hb = sb.mount(b, "/b", readonly=True)
        assert isinstance(ha, MountHandle) and ha.handle != hb.handle and ha.hot and hb.readonly
        assert sb.execute("echo in > /deep/new/a/x; cat /b/f").stdout == "b"
        assert open(os.path.join(a, "x")).read() == "in\n"
        assert sb.execute("echo no > /b/g").exit_code != 0
        # host-side changes show inside at once
        with open(os.path.join(b, "f"), "w") as f:
            f.write("changed")
        assert sb.execute("cat /b/f").stdout == "changed"
        assert {m.guest_path for m in sb.active_mounts} == {"/scratch", "/deep/new/a", "/b"}
        sb.unmount(ha)              # by handle object
        sb.unmount("/b")            # by guest path
        assert {m.guest_path for m in sb.active_mounts} == {"/scratch"}
        assert sb.execute("ls /b | wc -l").stdout.strip() == "0"
        h = sb.mount(a, "/again")
        sb.unmount(h.handle)        # by handle string
        with pytest.raises(MountError):
            sb.unmount("/scratch")  # boot-time mounts stay


def test_hot_mount_async_with_active_mounts_cache(hostdir):
    async def main():
        async with Sandbox() as sb:
            assert sb.active_mounts == []
            handles = await asyncio.gather(*(sb.mount(hostdir, f"/m{i}") for i in range(5)))
            assert len({h.handle for h in handles}) == 5
            listed = await sb.list_mounts()
            assert sorted(m.guest_path for m in listed) == [f"/m{i}" for i in range(5)]
            assert sorted(m.guest_path for m in sb.active_mounts) == [f"/m{i}" for i in range(5)]
            await asyncio.gather(*(sb.unmount(h) for h in handles))
            assert sb.active_mounts == [] and await sb.list_mounts() == []

    asyncio.run(main())


def test_mount_sensitive_needs_allow(hostdir):
    with SyncSandbox() as sb:
        with pytest.raises(MountError) as ei:
            sb.mount("/etc", "/hostetc")
        assert isinstance(ei.value, PermissionDenied)
        h = sb.mount("/etc", "/hostetc", readonly=True, allow_sensitive=True)
        assert sb.execute("test -f /hostetc/hostname && echo yes").stdout == "yes\n"
        sb.unmount(h)


def test_volumes_host_side_and_shared_between_sandboxes(hostdir):
    vol = Volume.create("sdk-shared")
    assert vol.name == "sdk-shared" and vol.quota is None and not vol.in_use and os.path.isdir(vol.path)
    vol.fs.write("/pre/seed.txt", "seeded")
    with open(os.path.join(hostdir, "up.bin"), "wb") as f:
        f.write(os.urandom(1 << 20))
    vol.fs.copy_from_host(os.path.join(hostdir, "up.bin"), "/up.bin")
    with open(os.path.join(hostdir, "up.bin"), "rb") as f:
        vol.fs.write("/up2.bin", f)
    try:
        with SyncSandbox(mounts=[Mount.volume("sdk-shared", "/data")]) as writer, \
                SyncSandbox(mounts=[Mount.volume("sdk-shared", "/data", readonly=True)]) as reader:
            assert Volume.get("sdk-shared").in_use
            assert reader.execute("cat /data/pre/seed.txt").stdout == "seeded"
            writer.execute("echo hello > /data/message.txt")
            assert reader.execute("cat /data/message.txt").stdout == "hello\n"
            assert reader.execute("touch /data/x").exit_code != 0
            assert writer.execute("cmp /data/up.bin /data/up2.bin && echo same").stdout == "same\n"
        assert vol.fs.read_text("/message.txt") == "hello\n"
        vol.fs.copy_to_host("/up.bin", os.path.join(hostdir, "down.bin"))
        assert open(os.path.join(hostdir, "down.bin"), "rb").read() == open(os.path.join(hostdir, "up.bin"), "rb").read()
        # ".." and absolute symlinks stay inside the volume
        with SyncSandbox(mounts=[Mount.volume("sdk-shared", "/data")]) as sb:
            sb.execute("ln -s /etc/hostname /data/escape")
        with pytest.raises(NotFound):      # the volume's own etc/hostname, which is missing
            vol.fs.read("/escape")
        assert vol.fs.read_text("/../../pre/seed.txt") == "seeded"
    finally:
        Volume.remove("sdk-shared")
    assert "sdk-shared" not in [v.name for v in Volume.list()]


def test_volume_with_quota_from_bytes():
    vol = Volume.create("sdk-q-bytes", quota=16 << 20)
    try:
        assert vol.quota == 16 << 20 and vol.kind == "ext4"
        vol.delete()
        assert "sdk-q-bytes" not in [v.name for v in Volume.list()]
    finally:
        try:
            Volume.remove("sdk-q-bytes")
        except Exception:
            pass


def test_container_disk_size_bounds_its_own_layer():
    with SyncSandbox(disk_size="64M") as sb:
        df = sb.execute("df -k / | tail -1").stdout.split()
        assert 56 * 1024 <= int(df[1]) <= 64 * 1024, df
        r = sb.execute("dd if=/dev/zero of=/root/fill bs=1M count=100")
        assert r.exit_code != 0 and "No space left on device" in r.stderr, (r.exit_code, r.stderr)
    with pytest.raises(InvalidArgument, match="from 64M to 16T"):
        SyncSandbox(disk_size="1M")
