"""Every library failure becomes the right CapsuleError subclass, with the library's message
and errno; bad arguments raise before anything starts."""
import asyncio
import errno
import os

import pytest

import capsule
from capsule import (Sandbox, SyncSandbox, Mount, Volume, CapsuleError, InvalidArgument, NotFound,
                     ImageNotFound, AlreadyExists, PermissionDenied, QuotaExceeded, Timeout, SandboxNotRunning,
                     MountError, Busy, UnsupportedFeature)

from sdkutil import run_entries

# A host folder that exists and is not sensitive, for the cases that fail on something else.
GOOD_DIR = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.parametrize("kwargs,message", [
    ({"mounts": [Mount("relative/dir", "/mnt/x")]}, "mount source 'relative/dir' is not an absolute host path"),
    ({"mounts": [Mount(GOOD_DIR, "relative")]}, "relative"),
    ({"mounts": [Mount.tmpfs("/t", size="12X")]}, "invalid size '12X': unknown unit 'X' (use b, k, m, g or t)"),
    ({"mounts": [Mount.tmpfs("/t", size=0)]}, "size must be greater than 0"),
    ({"mounts": [Mount.volume("bad/name", "/v")]}, "bad/name"),
    ({"memory": "12X"}, "invalid size '12X': unknown unit 'X' (use b, k, m, g or t)"),
    ({"memory": "1M"}, "too small"),
    ({"cpus": "fast"}, "invalid cpus 'fast'"),
    ({"pids_limit": -1}, "pids_limit"),
    ({"name": "bad name!"}, "bad name!"),
    ({"network_mode": "wifi"}, "unknown network mode 'wifi'"),
    ({"isolation": "chroot"}, "unknown isolation 'chroot'"),
    ({"volumes": {GOOD_DIR: {"bind": "relative"}}}, "relative"),
    ({"volumes": ["/var/tmp"]}, "volumes: expected a dict"),
    ({"boot_timeout": 0.01}, "boot timeout"),
    # Python ints go to the C ABI as uint64_t only when they fit (ctypes would wrap them).
    ({"memory": -5}, "invalid memory -5"),
    ({"memory": 2 ** 64 + (256 << 20)}, "invalid memory"),
    ({"disk_size": -1, "isolation": "vm"}, "invalid disk_size -1"),
    ({"boot_timeout": "10s"}, "invalid boot_timeout '10s': expected seconds"),
    ({"boot_timeout": 0}, "invalid boot_timeout 0"),
    ({"name": b"abc"}, "invalid name b'abc': expected str"),
    ({"env": ["NOEQUALS"]}, "NOEQUALS"),
])
def test_bad_arguments_raise_before_anything_starts(kwargs, message):
    before = run_entries()
    for cls in (Sandbox, SyncSandbox):
        with pytest.raises(InvalidArgument) as ei:
            cls(**kwargs)
        assert message in str(ei.value)
        assert ei.value.errno == errno.EINVAL
        assert isinstance(ei.value, ValueError) and isinstance(ei.value, CapsuleError)
        assert "\n" not in str(ei.value)
    assert run_entries() == before


def test_sensitive_mount_is_refused_with_the_library_message():
    with pytest.raises(PermissionDenied, match="'/etc' is a sensitive host path"):
        SyncSandbox(mounts=[Mount("/etc", "/mnt/etc")])


def test_missing_host_path_is_not_found_before_start():
    before = run_entries()
    with pytest.raises(NotFound, match="/nonexistent-sdk-dir"):
        Sandbox(mounts=[Mount("/nonexistent-sdk-dir", "/mnt/x")])
    assert run_entries() == before


def test_vm_settings_pass_the_library_message_through():
    with pytest.raises(InvalidArgument) as ei:
        Sandbox(isolation="vm", accel="warp")
    assert str(ei.value) == "invalid accel 'warp' (use auto, kvm or tcg)"
    assert ei.value.errno == errno.EINVAL
    with pytest.raises(InvalidArgument, match="a list of strings"):
        SyncSandbox(isolation="vm", extra_qemu_args="-smp 2")
    with pytest.raises(InvalidArgument) as ei:
        SyncSandbox(isolation="vm", disk_size="10M")
    assert str(ei.value) == "invalid disk size 10485760 bytes (from 64M to 16T)"
    with pytest.raises(InvalidArgument, match="from 64M to 16T"):
        SyncSandbox(isolation="vm", disk_size=1 << 50)


def test_image_not_found():
    sb = SyncSandbox(image="no-such-image")
    with pytest.raises(ImageNotFound) as ei:
        sb.start()
    assert "image 'no-such-image' not found" in str(ei.value) and isinstance(ei.value, NotFound)
    assert not sb.is_running


def test_duplicate_name_already_exists():
    with SyncSandbox(name="sdk-dup"):
        with pytest.raises(AlreadyExists, match="sdk-dup"):
            SyncSandbox(name="sdk-dup").start()


def test_not_started_and_stopped_sandboxes():
    async def main():
        sb = Sandbox()
        with pytest.raises(SandboxNotRunning):
            await sb.execute("true")
        with pytest.raises(SandboxNotRunning):
            await sb.fs.read("/x")
        with pytest.raises(SandboxNotRunning):
            await sb.mount("/var/tmp", "/m")
        await sb.start()
        with pytest.raises(AlreadyExists):
            await sb.start()
        await sb.stop()
        for call in (sb.execute("true"), sb.fs.write("/x", "y"), sb.list_mounts(), sb.spawn("true")):
            with pytest.raises(SandboxNotRunning):
                await call
        await sb.stop()  # again: fine
    asyncio.run(main())


def test_sandbox_stopped_from_elsewhere():
    with SyncSandbox(name="sdk-gone") as sb:
        capsule.remove("sdk-gone", force=True)
        with pytest.raises(SandboxNotRunning):
            sb.execute("true")
        assert not sb.is_running


def test_command_errors():
    with SyncSandbox() as sb:
        with pytest.raises(NotFound, match="nosuchcmd"):
            sb.execute(["nosuchcmd"])
        with pytest.raises(PermissionDenied):
            sb.execute(["/etc"])
        with pytest.raises(InvalidArgument, match="not an absolute path"):
            sb.execute("true", cwd="relative")
        with pytest.raises(InvalidArgument):
            sb.execute([])
        with pytest.raises(InvalidArgument):
            sb.execute("true", timeout=-1)
        with pytest.raises(InvalidArgument):
            sb.execute("true", env={"": "x"})
        with pytest.raises(InvalidArgument):
            sb.execute("a\0b")
        with pytest.raises(Timeout) as ei:
            sb.execute("echo before; sleep 100", timeout=0.3)
        assert ei.value.result.stdout == "before\n" and ei.value.result.timed_out
        assert ei.value.errno == errno.ETIMEDOUT
        # The timeout killed the sleep too (the whole process group).
        assert "sleep 100" not in sb.execute(["ps", "-eo", "args"]).stdout
        with pytest.raises(Timeout):
            sb.execute("sleep 100", timeout=0.3, on_stdout=print)


def test_async_timeout_and_exec_errors():
    async def main():
        async with Sandbox() as sb:
            with pytest.raises(Timeout) as ei:
                await sb.execute("echo a; sleep 100", timeout=0.3, on_stdout=lambda s: None)
            assert ei.value.result.stdout == "a\n"
            with pytest.raises(NotFound):
                await sb.execute(["nosuchcmd"])
    asyncio.run(main())


def test_fs_errors_by_errno():
    with SyncSandbox() as sb:
        with pytest.raises(NotFound) as ei:
            sb.fs.read("/missing")
        assert ei.value.errno == errno.ENOENT and "'/missing'" in str(ei.value)
        sb.fs.write("/f", "x")
        with pytest.raises(AlreadyExists):
            sb.fs.write("/f", "y", exist_ok=False)
        with pytest.raises(AlreadyExists):
            sb.fs.mkdir("/f")
        sb.fs.mkdir("/d")
        with pytest.raises(AlreadyExists):
            sb.fs.mkdir("/d", exist_ok=False)
        with pytest.raises(CapsuleError) as ei:
            sb.fs.read("/d")
        assert ei.value.errno == errno.EISDIR
        with pytest.raises(NotFound):
            sb.fs.write("/no/parent/f", "x", parents=False)
        with pytest.raises(InvalidArgument):
            sb.fs.read("relative")
        with pytest.raises(InvalidArgument):
            sb.fs.read("/" + "a" * 5000)
        sb.fs.write("/big", b"x" * 100)
        with pytest.raises(CapsuleError) as ei:
            sb.fs.read("/big", max_bytes=10)
        assert ei.value.errno == errno.EFBIG
        sb.fs.remove("/missing", missing_ok=True)
        with pytest.raises(NotFound):
            sb.fs.remove("/missing")


def test_quota_exceeded_in_tmpfs_and_volume():
    Volume.create("sdk-quota", quota="8M")
    try:
        with SyncSandbox(mounts=[Mount.tmpfs("/small", size="1M"), Mount.volume("sdk-quota", "/vol")]) as sb:
            with pytest.raises(QuotaExceeded) as ei:
                sb.fs.write("/small/f", b"x" * (2 << 20))
            assert ei.value.errno == errno.ENOSPC
            with pytest.raises(QuotaExceeded):
                sb.fs.write("/vol/f", b"x" * (16 << 20))
            with pytest.raises(Busy, match="in use"):
                Volume.remove("sdk-quota")
        with pytest.raises(QuotaExceeded):
            Volume.get("sdk-quota").fs.write("/host-big", b"x" * (16 << 20))
    finally:
        Volume.remove("sdk-quota")


def test_volume_errors():
    with pytest.raises(NotFound):
        Volume.get("sdk-none")
    with pytest.raises(NotFound):
        Volume.remove("sdk-none")
    with pytest.raises(InvalidArgument, match="12X"):
        Volume.create("sdk-badq", quota="12X")
    with pytest.raises(InvalidArgument):
        Volume.create("sdk-smallq", quota="1M")
    with pytest.raises(InvalidArgument):
        Volume.create("bad/name")
    Volume.create("sdk-twice")
    try:
        with pytest.raises(AlreadyExists):
            Volume.create("sdk-twice")
        with pytest.raises(NotFound):
            Volume.get("sdk-twice").fs.read("/missing")
    finally:
        Volume.remove("sdk-twice")


def test_mount_errors_are_mount_errors_and_errno_classes(hostdir):
    with SyncSandbox() as sb:
        with pytest.raises(MountError) as ei:
            sb.mount("/no/such/dir", "/m")
        assert isinstance(ei.value, NotFound) and ei.value.errno == errno.ENOENT
        with pytest.raises(MountError) as ei:
            sb.mount("relative", "/m")
        assert isinstance(ei.value, InvalidArgument)
        with pytest.raises(MountError) as ei:
            sb.mount("/etc", "/m")
        assert "sensitive" in str(ei.value) or "/etc" in str(ei.value)
        with pytest.raises(MountError):
            sb.unmount("m99")
        sb.mount(hostdir, "/m")
        with pytest.raises(MountError):
            sb.mount(hostdir, "/m")
        with pytest.raises(MountError):
            sb.unmount("/proc")
