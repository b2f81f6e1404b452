"""Many sandboxes from one event loop, many calls on one sandbox, and a loop that stays free."""
import asyncio
import threading
import time

from capsule import Sandbox, SyncSandbox

from conftest import run_entries


def test_twenty_sandboxes_from_one_loop():
    async def one(i):
        async with Sandbox(name=f"sdk-conc-{i}", memory="128M") as sb:
            await sb.fs.write("/id", f"{i}\n")
            r = await sb.execute("cat /id; hostname; sleep 0.5")
            return r.stdout.split()

    async def main():
        return await asyncio.gather(*(one(i) for i in range(20)))

    results = asyncio.run(main())
    assert results == [[str(i), f"sdk-conc-{i}"] for i in range(20)]
    assert not {f"sdk-conc-{i}" for i in range(20)} & run_entries()


def test_the_loop_is_not_blocked_while_commands_and_starts_run():
    """A ticker task keeps running while 20 sandboxes start and each runs a 1 s command: the
    longest gap between its ticks stays far below the commands' length. (A loop blocked by a
    library call would stall it for a whole start or command.)"""

    async def main():
        gaps = []
        stop = asyncio.Event()

        async def ticker():
            last = time.monotonic()
            while not stop.is_set():
                await asyncio.sleep(0.01)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        async def one(i):
            async with Sandbox() as sb:
                return (await sb.execute("sleep 1; echo done")).stdout

        t = asyncio.ensure_future(ticker())
        outs = await asyncio.gather(*(one(i) for i in range(20)))
        stop.set()
        await t
        return outs, gaps

    outs, gaps = asyncio.run(main())
    assert outs == ["done\n"] * 20
    # Not a timing benchmark: a blocked loop would show one gap of a second or more.
    assert max(gaps) < 0.9, max(gaps)


def test_many_commands_on_one_sandbox_at_once():
    async def main():
        async with Sandbox() as sb:
            rs = await asyncio.gather(*(sb.execute(f"sleep 0.3; echo {i}") for i in range(30)))
            assert [r.stdout for r in rs] == [f"{i}\n" for i in range(30)]
            # fs calls and commands interleaved on one sandbox
            await asyncio.gather(*(sb.fs.write(f"/f{i}", str(i)) for i in range(20)),
                                 *(sb.execute("true") for _ in range(10)))
            got = await asyncio.gather(*(sb.fs.read_text(f"/f{i}") for i in range(20)))
            assert got == [str(i) for i in range(20)]

    asyncio.run(main())


def test_sync_sandbox_from_many_threads():
    with SyncSandbox() as sb:
        out = [None] * 16
        errs = []

        def work(i):
            try:
                sb.fs.write(f"/t{i}", f"v{i}")
                out[i] = sb.execute(f"cat /t{i}").stdout
            except Exception as e:  # noqa: BLE001 - reported below
                errs.append(e)

        ts = [threading.Thread(target=work, args=(i,)) for i in range(16)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert not errs, errs
        assert out == [f"v{i}" for i in range(16)]


def test_sandboxes_on_two_loops_in_two_threads():
    def run(tag, res):
        async def main():
            async with Sandbox() as sb:
                return (await sb.execute(f"echo {tag}")).stdout
        res[tag] = asyncio.run(main())

    res = {}
    ts = [threading.Thread(target=run, args=(t, res)) for t in ("a", "b")]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert res == {"a": "a\n", "b": "b\n"}
