"""Cancellation kills the command; a sandbox dropped without stop is cleaned up."""
import asyncio
import gc
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

import capsule
from capsule import Sandbox, SyncSandbox, SandboxNotRunning

from sdkutil import HOME, run_entries, sdk_env, pid_alive


async def _pids(sb, pattern):
    r = await sb.execute(["ps", "-eo", "pid,args"])
    return [int(l.split()[0]) for l in r.stdout.splitlines()[1:] if pattern in l]


@pytest.mark.parametrize("cmd", ["sleep 1001", ["sleep", "1002"], "sh -c 'sleep 1003; echo never'"],
                         ids=["shell", "argv", "grandchild"])
def test_cancelled_execute_kills_the_command(cmd):
    async def main():
        async with Sandbox() as sb:
            pattern = "sleep 100"
            task = asyncio.ensure_future(sb.execute(cmd))
            for _ in range(200):
                await asyncio.sleep(0.02)
                if await _pids(sb, pattern):
                    break
            assert await _pids(sb, pattern), "the command never started"
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # From another exec: nothing of the command is left, its children included.
            for _ in range(100):
                if not await _pids(sb, pattern):
                    break
                await asyncio.sleep(0.02)
            assert await _pids(sb, pattern) == []
            # The sandbox is fine afterwards.
            assert (await sb.execute("echo ok")).stdout == "ok\n"

    asyncio.run(main())


def test_wait_for_timeout_cancels_and_kills():
    async def main():
        async with Sandbox() as sb:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(sb.execute("sleep 1004"), 0.5)
            for _ in range(100):
                if not await _pids(sb, "sleep 1004"):
                    break
                await asyncio.sleep(0.02)
            assert await _pids(sb, "sleep 1004") == []

    asyncio.run(main())


def test_stop_while_a_command_runs_ends_it_with_an_error():
    async def main():
        sb = Sandbox()
        await sb.start()
        task = asyncio.ensure_future(sb.execute("sleep 1005"))
        await asyncio.sleep(0.3)
        await sb.stop(timeout=0)
        with pytest.raises(SandboxNotRunning):
            await task
        with pytest.raises(SandboxNotRunning):
            await sb.execute("true")
        return sb.name

    assert asyncio.run(main()) not in run_entries()


def _shim_pids(name):
    """Host pids whose command line names the sandbox's shim."""
    out = []
    for e in os.listdir("/proc"):
        if not e.isdigit():
            continue
        try:
            with open(f"/proc/{e}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"capsule-shim") and name.encode() in argv:
            out.append(int(e))
    return out


@pytest.mark.parametrize("style", ["async", "sync", "sigkill"])
def test_sandbox_dropped_without_stop_is_cleaned_up_at_exit(style):
    name = f"sdk-gc-{style}"
    prog = {
        "async": f"""
            import asyncio, json, capsule
            async def main():
                sb = capsule.Sandbox(name={name!r})
                await sb.start()
                await sb.execute("sleep 1000 &")
                print(json.dumps(sb.inspect()), flush=True)
            asyncio.run(main())
            """,
        "sync": f"""
            import json, capsule
            sb = capsule.SyncSandbox(name={name!r}).start()
            p = sb.spawn("sleep 1000")
            print(json.dumps(sb.inspect()), flush=True)
            """,
        "sigkill": f"""
            import json, os, signal, capsule
            sb = capsule.SyncSandbox(name={name!r}).start()
            print(json.dumps(sb.inspect()), flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
            """,
    }[style]
    # Registered before the package is imported, this runs after its exit handlers: by then
    # the sandbox must be gone already, not merely on its way out.
    probe = textwrap.dedent(f"""
        import atexit, os
        def probe():
            print("run dir at exit:", os.path.exists(os.path.join(os.environ["CAPSULE_HOME"], "run", {name!r})))
        atexit.register(probe)
        """)
    r = subprocess.run([sys.executable, "-c", probe + textwrap.dedent(prog)], env=sdk_env(HOME),
                       capture_output=True, text=True, timeout=120)
    if style != "sigkill":
        assert r.stdout.splitlines()[-1] == "run dir at exit: False", r.stdout
    assert r.stdout, r.stderr
    info = json.loads(r.stdout.splitlines()[0])
    assert info["name"] == name and info["shim_pid"] > 0
    assert r.returncode == (-9 if style == "sigkill" else 0), r.stderr
    # The sandbox is gone when the process has exited, but the shim may still be exiting
    # after its answer (or, after SIGKILL, noticing that its creator went away).
    for _ in range(200):
        if not pid_alive(info["shim_pid"]) and name not in run_entries():
            break
        time.sleep(0.05)
    assert not pid_alive(info["shim_pid"])
    assert not pid_alive(info["init_pid"])
    assert _shim_pids(name) == []
    assert name not in run_entries()


def test_garbage_collected_sandbox_is_ended():
    sb = SyncSandbox(name="sdk-gc-collect").start()
    info = sb.inspect()
    del sb
    gc.collect()
    assert "sdk-gc-collect" not in run_entries()
    assert not pid_alive(info["shim_pid"])


def test_process_keeps_its_sandbox_alive_until_done():
    sb = SyncSandbox(name="sdk-gc-proc").start()
    p = sb.spawn("sleep 0.5; echo done")
    del sb
    gc.collect()
    assert p.wait().stdout == "done\n"
    del p
    gc.collect()
    assert "sdk-gc-proc" not in run_entries()


def test_cancelled_before_the_command_started_is_killed_too():
    """Cancelled right after the request went out, before the sandbox said STARTED: the
    command must not be left running once it does start."""
    async def main():
        async with Sandbox() as sb:
            for i in range(5):
                task = asyncio.ensure_future(sb.execute(f"sleep 10{i}7"))
                await asyncio.sleep(0)      # the request is sent; no answer read yet
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            for _ in range(100):
                if not await _pids(sb, "sleep 10"):
                    break
                await asyncio.sleep(0.02)
            assert await _pids(sb, "sleep 10") == []

    asyncio.run(main())


def test_spawn_has_its_pid_and_failed_starts_raise():
    async def main():
        async with Sandbox() as sb:
            p = await sb.spawn("sleep 1000")
            assert p.pid > 1
            assert (await sb.execute(["kill", "-0", str(p.pid)])).exit_code == 0
            p.terminate()
            assert (await p.wait()).signal == 15
            with pytest.raises(capsule.NotFound):
                await sb.spawn(["no-such-command"])

    asyncio.run(main())
