"""The CPUs a command may run on. The agent pins itself to its CPU while it clones a command
(so that the child runs where its suspended parent leaves a CPU free, src/agent/proc.c
clone_here) and gives every CPU back to both after: no command, and no thread of the agent,
may keep that pin, a mask the sandbox inherited stays, and a cpuset grown later reaches the
commands started after."""
import os
import subprocess

import pytest

ALLOWED = "grep Cpus_allowed_list /proc/self/status /proc/1/task/*/status"


def cpu_list(cpus):
    """Cpus_allowed_list's form: ranges of consecutive CPUs, e.g. 0-1,3."""
    out, cpus = [], sorted(cpus)
    i = 0
    while i < len(cpus):
        j = i
        while j + 1 < len(cpus) and cpus[j + 1] == cpus[j] + 1:
            j += 1
        out.append(str(cpus[i]) if i == j else f"{cpus[i]}-{cpus[j]}")
        i = j + 1
    return ",".join(out)


def allowed(r):
    """Each task's list: the command's own first, then the agent's threads'."""
    assert r.returncode == 0, r.stderr
    return [line.split()[-1] for line in r.stdout.splitlines()]


def online():
    with open("/sys/devices/system/cpu/online") as f:
        return f.read().strip()


pytestmark = pytest.mark.container_only


def test_commands_and_the_agent_keep_every_cpu(capsule):
    """A first command, and the next ones through the spawner thread, run on every CPU the
    caller has, and the agent's threads (the spawner, pinned during each clone) are back on
    them too."""
    want = cpu_list(os.sched_getaffinity(0))
    r = capsule.run("run", "--", "sh", "-c", ALLOWED)
    lists = allowed(r)
    assert len(lists) >= 3 and set(lists) == {want}, r.stdout
    name = capsule.create()
    for _ in range(3):
        lists = allowed(capsule.run("exec", name, "sh", "-c", ALLOWED))
        assert set(lists) == {want}, lists


def test_an_inherited_narrower_mask_is_kept(capsule):
    """A caller pinned to one CPU (taskset) pins its sandbox's commands there, as before:
    giving the spawner every CPU back must not widen that."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs")
    one = cpus[-1]
    r = subprocess.run(["taskset", "-c", str(one), capsule.binary, "run", "--", "sh", "-c", ALLOWED],
                       capture_output=True, text=True, env=capsule.env, timeout=120)
    assert set(allowed(r)) == {str(one)}, r.stdout


def test_a_cpuset_changed_after_a_command_reaches_the_next(capsule):
    """The spawner's affinity was set (pinned, then every CPU): a cpuset narrowed and grown
    again after that still decides what the next commands get, as for a thread never set."""
    if len(os.sched_getaffinity(0)) < 2 or "-" not in online() and "," not in online():
        pytest.skip("needs two CPUs")
    every = online()
    name = capsule.create("--cpuset-cpus", every)
    assert set(allowed(capsule.run("exec", name, "sh", "-c", ALLOWED))) == {every}
    capsule.run("update", "--cpuset-cpus", "0", name, check=True)
    assert set(allowed(capsule.run("exec", name, "sh", "-c", ALLOWED))) == {"0"}
    capsule.run("update", "--cpuset-cpus", every, name, check=True)
    assert set(allowed(capsule.run("exec", name, "sh", "-c", ALLOWED))) == {every}
