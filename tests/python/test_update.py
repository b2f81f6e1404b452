"""update(): a running sandbox's limits changed through the SDK, sync and async, checked in
its cgroup and in inspect(); a bad value raises and changes nothing."""
import asyncio
import os

import pytest

from capsule import InvalidArgument, Sandbox, SyncSandbox


def cgroup_file(sb, ctrl, name):
    """A file of the sandbox's cgroup, through its init's /proc/PID/cgroup (v1 or v2)."""
    with open(f"/proc/{sb.inspect()['init_pid']}/cgroup") as f:
        lines = [line.rstrip("\n").split(":", 2) for line in f]
    for _, ctrls, path in lines:
        if ctrl in ctrls.split(","):
            return open(f"/sys/fs/cgroup/{ctrl}{path}/{name}").read().strip()
    path = [p for _, c, p in lines if c == ""][0]
    return open(f"/sys/fs/cgroup{path}/{name}").read().strip()


def pids_max(sb):
    return cgroup_file(sb, "pids", "pids.max")


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


def test_cpuset_swap_and_reservation_at_create_and_update():
    """docker's finer limits through the SDK: set by Sandbox(...), changed by update(), each read
    back from the cgroup; a bad one raises naming it and changes nothing."""
    v2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
    with open("/sys/devices/system/cpu/online") as f:
        online = f.read().strip()

    def mem(sb):
        if v2:
            return (cgroup_file(sb, "memory", "memory.max"), cgroup_file(sb, "memory", "memory.low"))
        return (cgroup_file(sb, "memory", "memory.limit_in_bytes"),
                cgroup_file(sb, "memory", "memory.soft_limit_in_bytes"))

    with SyncSandbox(image="host", memory="64M", memory_swap="128M", memory_reservation=32 << 20,
                     cpuset_cpus="0", cpuset_mems="0") as sb:
        assert cgroup_file(sb, "cpuset", "cpuset.cpus") == "0"
        assert mem(sb) == (str(64 << 20), str(32 << 20))
        if not v2:
            assert cgroup_file(sb, "memory", "memory.memsw.limit_in_bytes") == str(128 << 20)
        sb.update(cpuset_cpus=online, memory="96M", memory_swap=-1, memory_reservation="48M")
        assert cgroup_file(sb, "cpuset", "cpuset.cpus") == online
        assert mem(sb) == (str(96 << 20), str(48 << 20))
        for kw, named in [({"cpuset_cpus": "0-"}, "--cpuset-cpus '0-'"), ({"cpuset_cpus": "4095"}, "not on this host"),
                          ({"memory_reservation": "1G"}, "--memory-reservation"),
                          ({"memory_swap": "1G"}, "memory swap"), ({"cpuset_mems": 0}, "cpuset_mems")]:
            with pytest.raises(InvalidArgument) as e:
                sb.update(**kw)
            assert named in str(e.value)
        assert cgroup_file(sb, "cpuset", "cpuset.cpus") == online and mem(sb) == (str(96 << 20), str(48 << 20))


@pytest.mark.parametrize("kw,named", [({"cpuset_cpus": "0-"}, "--cpuset-cpus"),
                                      ({"memory": "64M", "memory_swap": "32M"}, "--memory-swap"),
                                      ({"memory": "64M", "memory_reservation": "65M"}, "--memory-reservation")])
def test_a_bad_finer_limit_raises_at_create(kw, named):
    with pytest.raises(InvalidArgument) as e:
        with SyncSandbox(image="host", **kw):
            pass
    assert named in str(e.value)
