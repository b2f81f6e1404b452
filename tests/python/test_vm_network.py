"""The SDK's network calls with isolation="vm": the same keywords and methods as a
container's (network_mode, port_forwards, add/remove_port_forward, allow_cidrs). The tests that
boot run in `make check-vm` (vm_slow). Traffic goes only to a server on the host's loopback that the
test starts, and into the test's VM."""
import glob
import os

import pytest

from capsule import NetworkMode, PortForward, SyncSandbox, UnsupportedFeature

from sdkutil import agent_is_static
from test_network import FETCH, GATEWAY, fetch, free_port, host_server, serve  # noqa: F401 (a fixture)


@pytest.mark.vm_slow
@pytest.mark.skipif(not agent_is_static(), reason="a dynamically linked agent (a sanitizer build) cannot be a "
                    "VM's init")
def test_vm_full_network_and_port_forwards_through_the_sdk(host_server):  # noqa: F811
    port, token = host_server
    host1, host2 = free_port(), free_port()
    with SyncSandbox(isolation="vm", network_mode=NetworkMode.FULL,
                     port_forwards=[PortForward(host=host1, guest=8100)]) as sb:
        assert sb.network_mode is NetworkMode.FULL
        r = sb.execute(["python3", "-c", FETCH, f"http://{GATEWAY}:{port}/token"])
        assert r.stdout.strip() == token
        inside = os.urandom(6).hex()
        serve(sb, 8100, inside)
        assert fetch(f"http://127.0.0.1:{host1}/token", timeout=60) == inside
        sb.add_port_forward(PortForward(host=host2, guest=8100))
        assert fetch(f"http://127.0.0.1:{host2}/token", timeout=60) == inside
        sb.remove_port_forward(host2)
        assert [p.host for p in sb.port_forwards()] == [host1]


@pytest.mark.vm_slow
@pytest.mark.skipif(not agent_is_static(), reason="a dynamically linked agent (a sanitizer build) cannot be a "
                    "VM's init")
def test_vm_allowlist_through_the_sdk(host_server):  # noqa: F811
    port, token = host_server
    with SyncSandbox(isolation="vm", network_mode=NetworkMode.FULL, allow_cidrs=[f"{GATEWAY}/32:{port}"]) as sb:
        assert sb.execute(["python3", "-c", FETCH, f"http://{GATEWAY}:{port}/token"]).stdout.strip() == token
        r = sb.execute(["python3", "-c", FETCH, f"http://{GATEWAY}:{free_port()}/token"])
        assert r.stdout.strip() == "ERR 111"


def test_vm_allowlist_with_a_modular_kernel_is_refused_at_start(monkeypatch):
    # Debian's kernel has nf_tables only as modules: refused by the shim before QEMU starts.
    kernels = sorted(glob.glob("/boot/vmlinuz-*"))
    if not kernels:
        pytest.skip("no /boot/vmlinuz-<version> here")
    monkeypatch.setenv("CAPSULE_VM_KERNEL", kernels[-1])
    with pytest.raises(UnsupportedFeature, match="egress allowlist .* needs a guest kernel with nf_tables built in"):
        SyncSandbox(isolation="vm", network_mode="full", allow_cidrs=["10.0.2.2/32"]).start()
