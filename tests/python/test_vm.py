"""The SDK with vm isolation: one boot (make check's budget), the quicksand keywords."""
import pytest

from capsule import SyncSandbox

from sdkutil import agent_is_static, assert_accel_as_the_host_allows, guest_kernel


@pytest.mark.skipif(not agent_is_static(), reason="a dynamically linked agent (a sanitizer build) cannot be a "
                    "VM's init")
def test_sync_sandbox_vm_runs_commands_and_files_in_the_guest():
    with SyncSandbox(isolation="vm", memory="256M", accel="auto",
                     extra_qemu_args=["-device", "virtio-rng-device"], disk_size="1G") as sb:
        assert sb.isolation == "vm" and sb.boot_timeout == 60.0
        assert sb.accelerator in ("kvm", "tcg")
        assert_accel_as_the_host_allows(sb.inspect_json()["vm"])
        assert sb.execute("uname -r").stdout.strip() == guest_kernel()["release"]
        sb.fs.write("/root/from-sdk", "through the agent")
        assert sb.execute("cat /root/from-sdk").stdout == "through the agent"
        assert sb.fs.read_text("/root/from-sdk") == "through the agent"
        info = sb.inspect_json()
        assert info["vm"]["extra_qemu_args"] == ["-device", "virtio-rng-device"]
        assert " -m 256 " in info["vm"]["qemu_command_line"]
        # disk_size: the root disk the guest grew its file system to.
        assert info["vm"]["disk_size_bytes"] == 1 << 30
        assert 0.95 * (1 << 20) < int(sb.execute("df -k / | tail -1").stdout.split()[1]) <= 1 << 20
    assert not sb.is_running
