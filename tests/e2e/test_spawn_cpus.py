"""The CPUs a command may run on. The agent pins its spawner thread to its CPU while it clones
a command (so that the child runs where its suspended parent leaves a CPU free,
src/agent/proc.c clone_here) and gives every CPU back to both after: no command, and no
thread of the agent once the command's answer came, keeps that pin; a mask the sandbox
inherited stays, and a cpuset grown later reaches the commands started after. (A command
may see the spawner still pinned for the moment before it takes its CPUs back, so the
agent's threads are read from the host, after the answer.)"""
import os
import subprocess

import pytest

ALLOWED = "grep Cpus_allowed_list /proc/self/status"


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


def allowed(capsule, name, *prefix):
    """The list of an exec's command, then those of each thread of the sandbox's agent."""
    r = subprocess.run([*prefix, capsule.binary, "exec", name, "sh", "-c", ALLOWED],
                       capture_output=True, text=True, env=capsule.env, timeout=120)
    assert r.returncode == 0, r.stderr
    lists = [r.stdout.split()[-1]]
    task = f"/proc/{capsule.inspect(name)['init_pid']}/task"
    for tid in os.listdir(task):
        with open(f"{task}/{tid}/status") as f:
            lists += [line.split()[-1] for line in f if line.startswith("Cpus_allowed_list:")]
    return lists


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
    assert r.returncode == 0 and r.stdout.split()[-1] == want, r.stdout + r.stderr
    name = capsule.create()
    for _ in range(3):
        lists = allowed(capsule, name)
        assert len(lists) >= 3 and set(lists) == {want}, lists


def test_an_inherited_narrower_mask_is_kept(capsule):
    """A caller pinned to one CPU (taskset) pins its sandbox's commands there, as before:
    giving the spawner every CPU back must not widen that."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs")
    one = str(cpus[-1])
    r = subprocess.run(["taskset", "-c", one, capsule.binary, "run", "--", "sh", "-c", ALLOWED],
                       capture_output=True, text=True, env=capsule.env, timeout=120)
    assert r.returncode == 0 and r.stdout.split()[-1] == one, r.stdout + r.stderr
    name = capsule.unique_name()
    subprocess.run(["taskset", "-c", one, capsule.binary, "create", "--name", name],
                   capture_output=True, env=capsule.env, timeout=120, check=True)
    for _ in range(2):
        assert set(allowed(capsule, name)) == {one}


def test_a_cpuset_changed_after_a_command_reaches_the_next(capsule):
    """The spawner's affinity was set (pinned, then every CPU): a cpuset narrowed and grown
    again after that still decides what the next commands get, as for a thread never set."""
    if len(os.sched_getaffinity(0)) < 2 or "-" not in online() and "," not in online():
        pytest.skip("needs two CPUs")
    every = online()
    name = capsule.create("--cpuset-cpus", every)
    assert set(allowed(capsule, name)) == {every}
    capsule.run("update", "--cpuset-cpus", "0", name, check=True)
    assert set(allowed(capsule, name)) == {"0"}
    capsule.run("update", "--cpuset-cpus", every, name, check=True)
    assert set(allowed(capsule, name)) == {every}
