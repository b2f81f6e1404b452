"""Many sandboxes from one event loop, many calls on one sandbox, and a loop that stays free."""
import asyncio
import threading

from capsule import Sandbox, SyncSandbox

from sdkutil import run_entries


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


def test_the_loop_is_not_blocked_while_commands_run():
    """While 20 sandboxes each run a long command, another task on the same loop starts a
    sandbox and runs ten commands to their end: all of that finishes before any of the long
    ones. (A call that blocked the loop would hold everything else until it returned.)"""

    async def main():
        order = []
        ready = asyncio.Event()
        running = 0

        async def long_one(i):
            nonlocal running
            async with Sandbox() as sb:
                running += 1
                if running == 20:
                    ready.set()
                await sb.execute("sleep 4")
                order.append("long")

        async def quick():
            await ready.wait()
            async with Sandbox() as sb:
                for i in range(10):
                    assert (await sb.execute(f"echo {i}")).stdout == f"{i}\n"
            order.append("quick")

        await asyncio.gather(quick(), *(long_one(i) for i in range(20)))
        return order

    order = asyncio.run(main())
    assert order[0] == "quick" and order.count("long") == 20


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
