"""update(): a running sandbox's limits changed through the SDK, sync and async, checked in
its cgroup and in inspect(); a bad value raises and changes nothing."""
import asyncio

import pytest

from capsule import InvalidArgument, Sandbox, SyncSandbox


def pids_max(sb):
    """pids.max of the sandbox's cgroup, through its init's /proc/PID/cgroup (v1 or v2)."""
    with open(f"/proc/{sb.inspect()['init_pid']}/cgroup") as f:
        lines = [line.rstrip("\n").split(":", 2) for line in f]
    for _, ctrls, path in lines:
        if "pids" in ctrls.split(","):
            return open(f"/sys/fs/cgroup/pids{path}/pids.max").read().strip()
    path = [p for _, c, p in lines if c == ""][0]
    return open(f"/sys/fs/cgroup{path}/pids.max").read().strip()


def test_sync_update_changes_limits_and_a_bad_value_changes_nothing():
    with SyncSandbox(image="host", memory="64M", pids_limit=100) as sb:
        sb.update(memory="96M", cpus=0.5, pids_limit=150)
        info = sb.inspect()
        assert (info["memory_bytes"], info["cpus"], info["pids_limit"]) == (96 << 20, 0.5, 150)
        assert pids_max(sb) == "150"
        with pytest.raises(InvalidArgument) as e:
            sb.update(memory="1M", pids_limit=10)
        assert "at least 4 MiB" in str(e.value)
        with pytest.raises(InvalidArgument):
            sb.update(cpus="lots")
        assert pids_max(sb) == "150" and sb.inspect()["memory_bytes"] == 96 << 20
        sb.update(pids_limit=-1)
        assert pids_max(sb) == "max"


def test_async_update():
    async def main():
        async with Sandbox(image="host", pids_limit=100) as sb:
            await sb.update(pids_limit=123, cpu_shares=512)
            assert sb.inspect()["pids_limit"] == 123 and pids_max(sb) == "123"
    asyncio.run(main())
