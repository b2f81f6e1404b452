"""capsule update: a running sandbox's memory, cpu and pids limits changed through its shim,
which owns its cgroup (capsule_sandbox_update_limits); kept in its config for inspect and the
next start; bad values change nothing."""
import os
import time

import pytest

from .helpers import (assert_capsule_error, cgroup_dir, cgroup_dirs, cgroup_finer, cgroup_limit, cgroup_v2_only,
                      read_file)

pytestmark = pytest.mark.both_levels


@pytest.mark.vm_in_check
def test_update_changes_limits_and_keeps_them(capsule):
    # A vm's cgroup is its QEMU's: cpu and pids are changed there; its memory is refused.
    vm = capsule.isolation == "vm"
    name = capsule.create("--pids-limit", "100", *([] if vm else ["--memory", "64M"]))
    args = ["--cpus", "0.5", "--pids-limit", "150"] + ([] if vm else ["--memory", "96M"])
    r = capsule.run("update", *args, name)
    assert r.returncode == 0 and r.stdout.strip() == name, r.stderr
    assert cgroup_limit(name, "pids") == "150"
    assert cgroup_limit(name, "cpu")[0] * 1000 // cgroup_limit(name, "cpu")[1] == 500
    limits = capsule.inspect(name)["limits"]
    assert limits["pids"] == 150 and limits["cpus_milli"] == 500
    if vm:
        r = capsule.run("update", "--memory", "1G", name)
        assert_capsule_error(r)
        assert "a vm's memory is its guest's, fixed when it boots" in r.stderr
        r = capsule.run("update", "--cpuset-cpus", "0", name)
        assert_capsule_error(r)
        assert "--cpuset-cpus is for a container" in r.stderr and "cpu and pids only" in r.stderr
    else:
        assert cgroup_limit(name, "memory") == 96 << 20 and limits["memory_bytes"] == 96 << 20
        # A limit lifted: "no limit" in the cgroup and in the config.
        capsule.run("update", "--memory", "-1", "--cpus", "0", "--pids-limit", "0", name, check=True)
        assert cgroup_limit(name, "memory") == -1 and cgroup_limit(name, "cpu")[0] == -1
        assert cgroup_limit(name, "pids") == "max"
        limits = capsule.inspect(name)["limits"]
        assert limits["memory_bytes"] == 0 and limits["pids"] == 0
        # The kept limits are the next start's.
        capsule.run("update", "--memory", "80M", name, check=True)
        capsule.run("stop", name, check=True)
        capsule.run("start", name, check=True)
        assert cgroup_limit(name, "memory") == 80 << 20


@pytest.mark.container_only
@pytest.mark.parametrize("args,message", [
    (["--memory", "1M"], "memory 1048576 bytes: at least 4 MiB"),
    (["--memory", "lots"], "lots"),
    (["--cpus", "-1"], "-1"),
    (["--cpu-shares", "1"], "cpu shares"),
    (["--pids-limit", "x"], "pids limit"),
    (["--swap", "1"], "unknown flag '--swap'"),
    ([], "no limit given"),
])
def test_update_errors_change_nothing(capsule, args, message):
    name = capsule.create("--memory", "64M", "--pids-limit", "100")
    r = capsule.run("update", *args, name)
    assert_capsule_error(r)
    assert message in r.stderr
    assert cgroup_limit(name, "memory") == 64 << 20 and cgroup_limit(name, "pids") == "100"


@pytest.mark.container_only
def test_update_changes_the_cpuset_swap_and_reservation(capsule):
    """docker update's --cpuset-cpus, --memory-swap (with --memory) and --memory-reservation:
    read back from the cgroup, kept for inspect."""
    with open("/sys/devices/system/cpu/online") as f:
        online = f.read().strip()
    name = capsule.create("-m", "64M", "--memory-reservation", "32M", "--cpuset-cpus", "0")
    capsule.run("update", "--cpuset-cpus", online, "--memory", "96M", "--memory-swap", "-1",
                "--memory-reservation", "48M", name, check=True)
    cpus, mems, memory, swap, soft = cgroup_finer(name)
    assert (cpus, memory, soft) == (online, 96 << 20, 48 << 20)
    if swap is not None:
        assert swap >= 1 << 62  # unlimited
    limits = capsule.inspect(name)["limits"]
    assert (limits["cpuset_cpus"], limits["memory_swap_bytes"], limits["memory_reservation_bytes"]) == \
        (online, -1, 48 << 20)


def procs_of(path):
    with open(os.path.join(path, "cgroup.procs")) as f:
        return {int(p) for p in f.read().split()}


def cpus_allowed(pid):
    """PID's Cpus_allowed_list, or None when it has exited meanwhile (the forking shell's
    /bin/true processes come and go between listing and reading)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(line.split()[1] for line in f if line.startswith("Cpus_allowed_list:"))
    except (FileNotFoundError, ProcessLookupError):
        return None


def sandbox_procs_outside(name, cpuset):
    """The sandbox's processes (those in its pids cgroup) that are not in CPUSET's folder and
    still alive after a second look: one may exit or fork between two reads."""
    for _ in range(20):
        outside = procs_of(cgroup_dir(name, "pids")) - procs_of(cpuset)
        outside = {p for p in outside if os.path.exists(f"/proc/{p}") and p not in procs_of(cpuset)}
        if not outside:
            return outside
        time.sleep(0.05)
    return outside


@pytest.mark.container_only
def test_update_gives_a_cpuset_to_a_sandbox_made_without_one(capsule):
    """docker update --cpuset-cpus of a container made without a cpuset (the kubelet's cpu
    manager asks the same through the CRI): every process of the sandbox, those running and
    those that fork all the while, moves onto the new cpus, a command started after runs
    there too, and the cgroup goes with the sandbox."""
    name = capsule.create("--pids-limit", "200")
    capsule.run("exec", "-d", name, "sleep", "300", check=True)
    # A shell that forks without pause: a process forked while its parent is moved must not
    # stay behind on the old cpus.
    capsule.run("exec", "-d", name, "sh", "-c", "while :; do /bin/true; done", check=True)
    assert cgroup_dirs(name, ("cpuset",)) == []
    r = capsule.run("update", "--cpuset-cpus", "0", name)
    assert r.returncode == 0 and r.stdout.strip() == name, r.stderr
    cpuset = cgroup_dir(name, "cpuset")
    assert read_file(os.path.join(cpuset, "cpuset.cpus")) == "0"
    assert sandbox_procs_outside(name, cpuset) == set()
    assert {cpus_allowed(p) for p in procs_of(cpuset)} - {None} <= {"0"}
    r = capsule.run("exec", name, "grep", "Cpus_allowed_list", "/proc/self/status", check=True)
    assert r.stdout.split() == ["Cpus_allowed_list:", "0"]
    assert capsule.inspect(name)["limits"]["cpuset_cpus"] == "0"
    # A second update changes the cgroup the first one made.
    with open("/sys/devices/system/cpu/online") as f:
        online = f.read().strip()
    capsule.run("update", "--cpuset-cpus", online, name, check=True)
    assert cgroup_dir(name, "cpuset") == cpuset and read_file(os.path.join(cpuset, "cpuset.cpus")) == online
    capsule.run("rm", "-f", name, check=True)
    for _ in range(100):
        if not cgroup_dirs(name, ("cpuset",)):
            break
        time.sleep(0.05)
    assert cgroup_dirs(name, ("cpuset",)) == []


@pytest.mark.container_only
def test_a_refused_update_leaves_a_new_cpuset_unconstrained(capsule):
    """A cpuset given in the same update as a limit the kernel refuses (memory below what the
    sandbox holds, with nothing to reclaim it to) changes nothing: the sandbox keeps running on
    every cpu with its old memory limit."""
    name = capsule.create("--memory", "64M", "--memory-swap", "64M")
    capsule.run("exec", "-d", name, "sh", "-c",
                "head -c 24m /dev/zero > /dev/shm/held && sleep 300", check=True)
    for _ in range(100):
        r = capsule.run("exec", name, "stat", "-c", "%s", "/dev/shm/held")
        if r.stdout.strip() == str(24 << 20):
            break
        time.sleep(0.05)
    with open("/sys/devices/system/cpu/online") as f:
        online = f.read().strip()
    r = capsule.run("update", "--cpuset-cpus", "0", "--memory", "8M", name)
    assert_capsule_error(r)
    assert cgroup_limit(name, "memory") == 64 << 20
    cpuset = cgroup_dirs(name, ("cpuset",))
    # v1 fills a new cpuset folder with its parent's cpus; a v2 one has none of its own (empty
    # cpuset.cpus) and runs on its parent's.
    mine = "cpuset.cpus.effective" if cgroup_v2_only() else "cpuset.cpus"
    assert all(read_file(os.path.join(d, mine)) == online for d in cpuset)
    r = capsule.run("exec", name, "grep", "Cpus_allowed_list", "/proc/self/status", check=True)
    assert r.stdout.split() == ["Cpus_allowed_list:", online]


@pytest.mark.container_only
@pytest.mark.parametrize("args,message", [
    (["--cpuset-cpus", "0-"], "--cpuset-cpus '0-': not a list"),
    (["--cpuset-cpus", "4095"], "cpu 4095 is not on this host"),
    (["--memory-swap", "1G"], "--memory-swap needs --memory"),
    (["--memory", "80M", "--memory-swap", "64M"], "--memory-swap 67108864 is below --memory"),
    (["--memory-reservation", "65M"], "--memory-reservation 68157440 is above --memory 67108864"),
    (["--memory", "80M", "--memory-reservation", "81M"], "is above --memory 83886080"),
])
def test_update_of_finer_limits_errors_change_nothing(capsule, args, message):
    name = capsule.create("-m", "64M", "--memory-reservation", "32M", "--cpuset-cpus", "0")
    r = capsule.run("update", *args, name)
    assert_capsule_error(r)
    assert message in r.stderr
    assert cgroup_finer(name)[0] == "0" and cgroup_finer(name)[2:5:2] == (64 << 20, 32 << 20)


def test_update_of_a_stopped_sandbox_is_refused(capsule):
    name = capsule.create()
    capsule.run("stop", name, check=True)
    r = capsule.run("update", "--pids-limit", "10", name)
    assert_capsule_error(r)
    assert name in r.stderr
