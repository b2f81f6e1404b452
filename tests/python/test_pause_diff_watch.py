"""pause(), resume(), diff() and watch() through the SDK, sync and async: a paused sandbox's
processes stop making output, commands are refused with Busy and its one line, resume lets them
run; diff() lists what commands changed; watch() streams changes as they happen."""
import asyncio
import os
import shutil
import subprocess
import tempfile
import time
import uuid

import pytest

import capsule

from capsule import Busy, InvalidArgument, Sandbox, SyncSandbox, UnsupportedFeature

from sdkutil import BUILD, imageutil as iu


def settle_then_count(lines, quiet=0.3):
    """Wait until no more output arrives for QUIET seconds (what was in flight when the pause
    came), and return how many lines there are."""
    n = -1
    while n != len(lines):
        n = len(lines)
        time.sleep(quiet)
    return n


def test_sync_pause_holds_output_refuses_execute_and_resume_goes_on():
    lines = []
    with SyncSandbox(image="host") as sb:
        p = sb.spawn("while :; do echo t; sleep 0.05; done", on_stdout=lines.append)
        deadline = time.monotonic() + 30
        while not lines and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lines
        sb.pause()
        sb.pause()  # the state that holds already: fine
        n = settle_then_count(lines)
        time.sleep(1)
        assert len(lines) == n
        with pytest.raises(Busy) as e:
            sb.execute("true")
        assert str(e.value) == f"sandbox '{sb.name}' is paused: resume it first"
        sb.resume()
        deadline = time.monotonic() + 30
        while len(lines) == n and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(lines) > n
        assert sb.execute("echo ok").stdout == "ok\n"
        p.kill()


def test_async_pause_and_resume():
    async def main():
        async with Sandbox(image="host") as sb:
            await sb.pause()
            with pytest.raises(Busy):
                await sb.execute("true")
            await sb.resume()
            await sb.resume()
            assert (await sb.execute("echo ok")).stdout == "ok\n"

    asyncio.run(main())


def test_idle_pause_is_transparent_to_execute():
    with SyncSandbox(image="host", idle_pause=1) as sb:
        assert sb.inspect_json()["idle_pause_ms"] == 1000
        deadline = time.monotonic() + 60
        while sb.inspect()["state"] != "paused":
            assert time.monotonic() < deadline, "not paused for idleness"
            time.sleep(0.1)
        assert sb.inspect_json()["paused_by"] == "idle"
        assert sb.execute("echo ok").stdout == "ok\n"
    with pytest.raises(InvalidArgument) as e:
        SyncSandbox(image="host", idle_pause=0.05)
    assert str(e.value) == "idle pause 50 ms is too short (minimum 100 ms; 0 turns it off)"
    with pytest.raises(InvalidArgument):
        SyncSandbox(image="host", idle_pause="soon")


def test_diff_lists_what_a_command_changed_sync_and_async():
    with SyncSandbox(image="host") as sb:
        assert sb.diff() == []
        sb.execute("echo hi > /root/new; rm /etc/hostname")
        changes = {c["path"]: c for c in sb.diff()}
        assert changes["/root/new"]["kind"] == "added" and changes["/root/new"]["size"] == 3
        assert changes["/etc/hostname"] == {"path": "/etc/hostname", "kind": "deleted", "type": "file"}
        sb.checkpoint("c1")
        sb.execute("echo again >> /root/new")
        assert [(c["path"], c["kind"]) for c in sb.diff(since="c1")] == [("/root/new", "modified")]
        # Since a save of the sandbox, as since a checkpoint; one of other layers is refused.
        s, other = f"ds-{uuid.uuid4().hex[:8]}", f"do-{uuid.uuid4().hex[:8]}"
        sb.save(s)
        try:
            sb.execute("rm /root/new; echo n > /root/n2")
            assert [(c["path"], c["kind"]) for c in sb.diff(since=s)] == [("/root/n2", "added"), ("/root/new", "deleted")]
            assert sb.diff(since="save:" + s) == sb.diff(since=s)
            with pytest.raises(capsule.NotFound, match="no save named 'nope'"):
                sb.diff(since="save:nope")
            with SyncSandbox(image=s) as child:
                child.save(other)
            with pytest.raises(InvalidArgument, match="not on the sandbox's image or save"):
                sb.diff(since=other)
        finally:
            capsule.remove_save(other)
            capsule.remove_save(s)

    async def main():
        async with Sandbox(image="host") as sb:
            await sb.execute("mkdir /opt/made")
            assert [(c["path"], c["kind"], c["type"]) for c in await sb.diff()] == [("/opt/made", "added", "dir")]

    asyncio.run(main())


def test_watch_sync_and_async():
    with SyncSandbox(image="host") as sb:
        with sb.watch("/root") as w:
            sb.execute("touch /root/a; mv /root/a /root/b")
            got = [w.next(timeout=30), w.next(timeout=30)]
            assert [(e["kind"], e["path"], e.get("from")) for e in got] == [
                ("create", "/root/a", None), ("move", "/root/b", "/root/a")]
            assert w.next(timeout=0.2) is None

    async def main():
        async with Sandbox(image="host") as sb:
            async with sb.watch("/root") as w:
                await sb.execute("touch /root/f && mv /root/f /root/g && rm /root/g")
                events = []
                async for e in w:
                    events.append((e["kind"], e["path"]))
                    if e["kind"] == "delete":
                        break
                assert events == [("create", "/root/f"), ("move", "/root/g"), ("delete", "/root/g")]

    asyncio.run(main())


def test_pause_to_disk_of_a_container_raises_unsupported_with_its_one_line():
    with SyncSandbox(image="host") as sb:
        with pytest.raises(UnsupportedFeature) as e:
            sb.pause(to_disk=True)
        assert str(e.value).startswith("pause to disk is not available for containers: CRIU")
        assert sb.execute("echo ok").stdout == "ok\n"


@pytest.mark.vm_slow
@pytest.mark.skipif(not iu.agent_is_static(BUILD), reason="capsule-agent is dynamically linked: no vm boots")
def test_vm_pause_to_disk_and_resume_from_another_handle(registry):
    iu.require_tools()
    d = tempfile.mkdtemp(prefix="capsule-sdk-img-", dir="/var/tmp")
    try:
        ref = registry.push(iu.make_layout(d, [iu.busybox_layer()], {"Env": ["PATH=/bin"]}),
                            f"sdk/pd-{uuid.uuid4().hex[:8]}")
    finally:
        shutil.rmtree(d, ignore_errors=True)
    sb = SyncSandbox(image=ref, isolation="vm", memory="256M", detached=True).start()
    name = sb.name
    try:
        sb.execute("echo kept > /root/f")
        sb.pause(to_disk=True)
        assert sb.inspect_json()["paused_to"] == "disk"
        with pytest.raises(Busy) as e:
            sb.execute("true")
        assert str(e.value) == f"sandbox '{name}' is paused to disk: resume it first"
        # Another handle, as another process after a host restart would have.
        other = SyncSandbox.open(name)
        other.resume()
        assert other.execute("cat /root/f").stdout == "kept\n"
        assert other.inspect_json()["state"] == "running"
        other.stop(0)
    finally:
        subprocess.run([os.path.join(BUILD, "capsule"), "rm", "-f", name], capture_output=True, timeout=120)
