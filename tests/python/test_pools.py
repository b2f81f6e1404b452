"""Warm pools through the SDK: capsule.create_pool, capsule.pools, capsule.remove_pool and
Sandbox(pool=...) (the CLI's and the keeper's behaviour: tests/e2e/test_pools.py)."""
import asyncio
import os
import uuid

import pytest

import capsule
from sdkutil import run_entries


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def ready_names(name):
    d = os.path.join(capsule.home(), "pools", name, "ready")
    return set(os.listdir(d)) if os.path.isdir(d) else set()


@pytest.fixture
def pool():
    name = unique("sdkpool")
    assert capsule.create_pool(name, 2, memory="256M", env={"FROM_POOL": "yes"}) == name
    yield name
    if any(p["name"] == name for p in capsule.pools()):
        capsule.remove_pool(name)


def test_create_pool_lists_it_with_its_options(pool):
    (info,) = [p for p in capsule.pools() if p["name"] == pool]
    assert info["size"] == 2 and info["keeper"] is True and info["keeper_pid"] > 0
    assert info["options"]["memory"] == str(256 << 20)
    assert info["options"]["env"] == "FROM_POOL=yes"


def test_sync_sandbox_from_a_pool_is_fresh_and_named(pool):
    name = unique("sdktaken")
    seen = []
    for n in (name, None):
        with capsule.SyncSandbox(pool=pool, name=n) as sb:
            r = sb.execute("test ! -e /tmp/mark && touch /tmp/mark && echo $FROM_POOL && hostname")
            assert r.exit_code == 0, r.stderr
            lines = r.stdout.split()
            assert lines[0] == "yes"
            seen.append(lines[1])
            if n:
                assert sb.name == name
                assert sb.inspect()["name"] == name
    assert seen[0] != seen[1]
    assert name not in run_entries()


def test_async_sandboxes_from_a_pool_at_once_are_all_different(pool):
    async def main():
        async def one():
            async with capsule.Sandbox(pool=pool) as sb:
                r = await sb.execute("hostname; sleep 0.2")
                return r.stdout.strip()
        return await asyncio.gather(*(one() for _ in range(4)))
    got = asyncio.run(main())
    assert len(set(got)) == 4


def test_pool_errors_are_raised_as_the_library_words_them(pool):
    with pytest.raises(capsule.InvalidArgument, match="'memory' differs from them"):
        with capsule.SyncSandbox(pool=pool, memory="128M"):
            pass
    with pytest.raises(capsule.NotFound, match="no pool named 'sdk-no-such-pool'"):
        with capsule.SyncSandbox(pool="sdk-no-such-pool"):
            pass
    with pytest.raises(capsule.AlreadyExists, match=f"a pool named '{pool}' already exists"):
        capsule.create_pool(pool, 1)
    with pytest.raises(capsule.InvalidArgument, match="invalid pool size 0"):
        capsule.create_pool(unique("sdkpool"), 0)
    with pytest.raises(capsule.InvalidArgument, match="invalid pool size 65: must be from 1 to 64"):
        capsule.create_pool(unique("sdkpool"), 65)
    with pytest.raises(capsule.InvalidArgument, match="invalid pool name"):
        capsule.create_pool("bad/name", 1)
    with pytest.raises(capsule.InvalidArgument, match="a sandbox is named when it is taken"):
        capsule.create_pool(unique("sdkpool"), 1, name="x")


def test_remove_pool_leaves_nothing(pool):
    members = ready_names(pool)
    capsule.remove_pool(pool)
    assert not any(p["name"] == pool for p in capsule.pools())
    assert not (members & run_entries())
    assert not os.path.exists(os.path.join(capsule.home(), "pools", pool))
    with pytest.raises(capsule.NotFound, match=f"no pool named '{pool}'"):
        capsule.remove_pool(pool)


def test_a_dropped_sandbox_from_a_pool_is_gone_when_it_is_collected(pool):
    import gc
    name = unique("sdkdropped")
    sb = capsule.SyncSandbox(pool=pool, name=name)
    sb.start()
    assert sb.execute("true").exit_code == 0
    assert name in run_entries()
    # The handle's free stops it (its shim is the pool keeper's, not ours to wait for).
    del sb
    gc.collect()
    assert name not in run_entries()
