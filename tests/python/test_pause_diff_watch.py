"""pause(), resume(), diff() and watch() through the SDK, sync and async: a paused sandbox's
processes stop making output, commands are refused with Busy and its one line, resume lets them
run; diff() lists what commands changed; watch() streams changes as they happen."""
import asyncio
import time

import pytest

from capsule import Busy, InvalidArgument, Sandbox, SyncSandbox


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
