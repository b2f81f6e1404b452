"""The SDK's display calls (vm isolation, quicksand's enable_display): screenshot, type, key,
mouse_move, click, vnc_socket. The boot is vm_slow; docs/python.md's display example boots one in
make check. Refusals that boot nothing run always."""
import asyncio
import os
import socket
import struct

import pytest

from capsule import CapsuleError, InvalidArgument, Sandbox, SyncSandbox, UnsupportedFeature

from sdkutil import agent_is_static


def test_display_on_a_container_is_refused_before_anything_starts():
    with pytest.raises(UnsupportedFeature, match="--isolation vm"):
        with SyncSandbox(display=True):
            pass
    with pytest.raises(InvalidArgument, match="disagree"):
        SyncSandbox(isolation="vm", display=True, enable_display=False)


def test_screenshot_and_input_of_a_container_raise_unsupported_feature(tmp_path):
    with SyncSandbox() as sb:
        assert sb.vnc_socket is None and sb.vnc_port is None
        with pytest.raises(UnsupportedFeature, match="has no display"):
            sb.screenshot(tmp_path / "x.png")
        with pytest.raises(UnsupportedFeature, match="has no display"):
            sb.type("x")
        with pytest.raises(InvalidArgument, match="expected pixels"):
            sb.mouse_move(-1, 3)
    assert not (tmp_path / "x.png").exists()


@pytest.mark.vm_slow
@pytest.mark.skipif(not agent_is_static(), reason="a dynamically linked agent (a sanitizer build) cannot be a "
                    "VM's init")
def test_async_sandbox_with_enable_display_screenshots_and_sends_input(tmp_path):
    async def main():
        async with Sandbox(isolation="vm", enable_display=True) as sb:
            assert sb.vnc_port is None
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(30)
                s.connect(sb.vnc_socket)
                assert s.recv(12).startswith(b"RFB 003.00")
            png = await sb.screenshot()
            width, height = struct.unpack(">II", png[16:24])
            size = (await sb.execute("cat /sys/class/graphics/fb0/virtual_size")).stdout.strip()
            assert f"{width},{height}" == size
            await sb.screenshot(tmp_path / "s.png")
            assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            await sb.type("echo hi\n")
            await sb.key("ctrl-c")
            await sb.mouse_move(width - 1, height - 1)
            await sb.click("middle")
            with pytest.raises(InvalidArgument, match="'nosuch'"):
                await sb.key("nosuch")
            with pytest.raises(CapsuleError, match="outside"):
                await sb.mouse_move(width, 0)
    asyncio.run(main())
