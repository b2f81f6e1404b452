"""Saves through the SDK: quicksand's lifecycle (ephemeral, named save, from save, named +
from save), sb.save, checkpoint/revert, fork, and capsule.saves()/remove_save()."""
import asyncio
import uuid

import pytest

import capsule
from capsule import Sandbox, SyncSandbox, InvalidArgument, Busy, NotFound


def sname(prefix="py"):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def names():
    return {s["name"] for s in capsule.saves()}


def test_quicksand_lifecycle_async():
    env, env2 = sname("env"), sname("env2")

    async def main():
        # Ephemeral (default): nothing survives.
        async with Sandbox(image="host") as sb:
            await sb.execute("echo tool > /root/tool")
        async with Sandbox(image="host") as sb:
            assert (await sb.execute("cat /root/tool")).exit_code != 0
        # Named save: saved on stop.
        async with Sandbox(image="host", save=env) as sb:
            await sb.execute("echo installed > /root/tool")
        assert env in names()
        # From save.
        async with Sandbox(image=env) as sb:
            assert (await sb.execute("cat /root/tool")).stdout == "installed\n"
        # Named + from save.
        async with Sandbox(image=env, save=env2) as sb:
            await sb.execute("echo more > /root/more")
        async with Sandbox(image=env2) as sb:
            assert (await sb.execute("cat /root/tool /root/more")).stdout == "installed\nmore\n"

    asyncio.run(main())
    chain = {s["name"]: s for s in capsule.saves()}[env2]["chain"]
    assert chain == ["host", env, env2]
    with pytest.raises(Busy, match="parent"):
        capsule.remove_save(env)
    capsule.remove_save(env2)
    capsule.remove_save(env)
    assert not {env, env2} & names()
    with pytest.raises(NotFound):
        capsule.remove_save(env)


def test_save_checkpoint_revert_fork_sync():
    s = sname()
    with SyncSandbox() as sb:
        sb.execute("echo one > /root/f")
        sb.checkpoint("c1")
        sb.execute("echo two > /root/f")
        sb.save(s)
        sb.revert("c1")
        assert sb.execute("cat /root/f").stdout == "one\n"
        fork = sb.fork(sname("fork"))
        try:
            with SyncSandbox(image=s) as other:
                assert other.execute("cat /root/f").stdout == "two\n"
        finally:
            capsule.remove(fork, force=True)
    capsule.remove_save(s)


def test_async_save_and_revert():
    s = sname()

    async def main():
        async with Sandbox() as sb:
            await sb.execute("echo a > /root/a")
            await sb.checkpoint("start")
            await sb.execute("rm /root/a")
            await sb.save(s)
            await sb.revert("start")
            assert (await sb.execute("cat /root/a")).stdout == "a\n"
        async with Sandbox(image=s) as sb:
            assert (await sb.execute("cat /root/a")).exit_code != 0

    asyncio.run(main())
    capsule.remove_save(s)


def test_bad_save_names_raise_before_anything_starts():
    for bad in ("../x", "a/b", ".."):
        for cls in (Sandbox, SyncSandbox):
            with pytest.raises(InvalidArgument, match="save name"):
                cls(save=bad)
    with SyncSandbox() as sb:
        with pytest.raises(InvalidArgument):
            sb.save("../escape")
        with pytest.raises(NotFound, match="no checkpoint"):
            sb.revert("nosuch")
