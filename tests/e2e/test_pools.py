"""Warm pools: `capsule pool create|ls|rm` and `run/create --pool` (docs/architecture.md, "Warm
pools"). A take is a fresh sandbox every time, two takers never get the same one, the keeper
refills, and a removed pool or a killed keeper leaves nothing behind. The vm level's take is
tested once in `make check`; the rest of its tests are vm_slow."""
import concurrent.futures
import json
import os
import signal
import subprocess
import time

import pytest

from .helpers import cgroup_dirs, run_entries, wait_until
from .imageutil import agent_is_static

BOOT_TIMEOUT = 240  # seconds a CLI call that boots may take here (TCG on 2 shared cores)
boots = pytest.mark.skipif(not agent_is_static(os.environ.get("CAPSULE_BUILD", "build")),
                           reason="capsule-agent is dynamically linked (a sanitizer build): it cannot be a VM's init")


def pools(capsule):
    return json.loads(capsule.run("pool", "ls", "--json", check=True).stdout)


def pool_info(capsule, name):
    found = [p for p in pools(capsule) if p["name"] == name]
    return found[0] if found else None


def wait_for(what, cond, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def wait_full(capsule, name, timeout=120):
    wait_for(f"pool {name} to be full", lambda: (p := pool_info(capsule, name)) and p["ready"] == p["size"], timeout)


def ready_names(capsule, name):
    d = os.path.join(capsule.home, "pools", name, "ready")
    return set(os.listdir(d)) if os.path.isdir(d) else set()


def pool_left(capsule, name):
    """What of pool NAME is on disk: its folder, or a create's or remove's folder of it."""
    d = os.path.join(capsule.home, "pools")
    return [e for e in os.listdir(d) if e == name or e.startswith((f".new-{name}.", f".rm-{name}."))] if os.path.isdir(d) else []


def slot_owners(capsule):
    d = os.path.join(capsule.home, "slots")
    return {os.readlink(os.path.join(d, e)) for e in os.listdir(d) if not e.startswith(".")} if os.path.isdir(d) else set()


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes (and one reaped since the kill).
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class Pool:
    def __init__(self, capsule, size, *opts):
        self.capsule = capsule
        self.name = capsule.unique_name("pool")
        r = capsule.run("pool", "create", self.name, "--size", str(size), *opts, timeout=300)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == self.name

    def remove(self):
        if pool_info(self.capsule, self.name):
            self.capsule.run("pool", "rm", self.name, timeout=300)


@pytest.fixture
def make_pool(capsule):
    made = []

    def make(size=2, *opts):
        p = Pool(capsule, size, *opts)
        made.append(p)
        return p

    yield make
    for p in made:
        p.remove()


def test_each_take_is_a_fresh_sandbox_even_past_the_pools_size(capsule, make_pool):
    p = make_pool(2)
    wait_full(capsule, p.name)
    seen = set()
    for _ in range(4):
        r = capsule.run("run", "--pool", p.name, "--", "sh", "-c",
                        "test ! -e /tmp/mark || { echo reused; exit 1; }; touch /tmp/mark; hostname")
        assert r.returncode == 0, r.stdout + r.stderr
        seen.add(r.stdout.strip())
    # Four sandboxes, never one twice (the marker a command left is never seen again).
    assert len(seen) == 4
    # An ephemeral run's sandbox is gone with it.
    assert not (seen & run_entries(capsule))



CONFINEMENT = "grep -E '^(NoNewPrivs|Seccomp|Seccomp_filters|CapBnd|CapEff):' /proc/self/status"


def test_a_taken_sandboxs_first_command_is_confined_as_a_cold_runs(capsule, make_pool):
    # A ready sandbox's agent prepares the thread commands are cloned from (its filter, its
    # bounding set, no_new_privs) before it is taken: the first command after a take must
    # carry exactly what a cold run's first command does.
    p = make_pool(1)
    wait_full(capsule, p.name)
    (member,) = ready_names(capsule, p.name)
    with open(os.path.join(capsule.home, "run", member, "state.json")) as f:
        agent = json.load(f)["init_pid"]
    # Two threads before any command: the agent's own and the prepared one (made right after
    # the agent answers INIT, so maybe a moment after the pool counts the sandbox ready).
    assert wait_until(lambda: len(os.listdir(f"/proc/{agent}/task")) == 2, timeout=5)
    taken = capsule.run("run", "--pool", p.name, "--", "sh", "-c", CONFINEMENT)
    cold = capsule.run("run", "--", "sh", "-c", CONFINEMENT)
    assert taken.returncode == 0 and cold.returncode == 0, taken.stderr + cold.stderr
    assert "Seccomp:\t2" in taken.stdout and "NoNewPrivs:\t1" in taken.stdout, taken.stdout
    assert taken.stdout == cold.stdout


def test_a_taken_sandbox_has_the_name_asked_for_and_behaves_as_any(capsule, make_pool):
    p = make_pool(1)
    wait_full(capsule, p.name)
    (member,) = ready_names(capsule, p.name)
    # A ready sandbox is the pool's: not listed as anyone's sandbox, and nothing runs in it.
    assert member not in {s["name"] for s in capsule.ps()}
    r = capsule.run("exec", member, "--", "true")
    assert r.returncode != 0 and f"is a ready sandbox of pool '{p.name}'" in r.stderr
    name = capsule.unique_name("taken")
    r = capsule.run("create", "--pool", p.name, "--name", name)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == name
    # The same sandbox, renamed: its folder, id slot and config moved with it.
    assert member not in run_entries(capsule) and name in run_entries(capsule)
    assert member not in slot_owners(capsule)
    if os.geteuid() == 0:
        assert name in slot_owners(capsule)
    listed = {s["name"]: s for s in capsule.ps()}
    assert listed[name]["state"] == "running"
    info = capsule.inspect(name)
    assert info["name"] == name and info["detached"] is True
    # A take may make a ready sandbox detached, whose layer must survive a host crash: a
    # pool's overlay is never volatile (no remount could drop the option).
    r = capsule.run("exec", name, "--", "grep", " / / ", "/proc/self/mountinfo")
    assert r.returncode == 0 and "volatile" not in r.stdout.split(" - ", 1)[1], r.stdout + r.stderr
    # Its cgroups keep the name it started under; the hostname too (docs/architecture.md).
    assert info["hostname"] == member
    r = capsule.run("exec", name, "--", "sh", "-c", "echo $(hostname) > /tmp/h; cat /tmp/h")
    assert r.returncode == 0 and r.stdout.strip() == member, r.stderr
    capsule.run("stop", name, check=True)
    capsule.run("start", name, check=True)
    r = capsule.run("exec", name, "--", "cat", "/tmp/h")
    assert r.returncode == 0 and r.stdout.strip() == member
    capsule.run("rm", "-f", name, check=True)
    assert name not in run_entries(capsule)
    assert name not in slot_owners(capsule)
    assert wait_until(lambda: cgroup_dirs(member) == [], 10), cgroup_dirs(member)


def test_concurrent_takes_never_get_the_same_sandbox(capsule, make_pool):
    p = make_pool(4)
    wait_full(capsule, p.name)
    ready = ready_names(capsule, p.name)

    def take(_):
        # The command overlaps with the other takes: no sandbox can be handed out twice.
        r = capsule.run("run", "--pool", p.name, "--", "sh", "-c", "hostname; sleep 0.3")
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    with concurrent.futures.ThreadPoolExecutor(6) as ex:
        got = list(ex.map(take, range(6)))
    assert len(set(got)) == 6
    # At least the first takes came from the pool (the rest may be refills or cold starts).
    assert set(got) & ready


def test_the_pool_refills_after_a_take(capsule, make_pool):
    p = make_pool(2)
    wait_full(capsule, p.name)
    before = ready_names(capsule, p.name)
    name = capsule.unique_name("taken")
    capsule.run("create", "--pool", p.name, "--name", name, check=True)
    wait_full(capsule, p.name)
    after = ready_names(capsule, p.name)
    assert len(after) == 2 and after != before
    # The taken sandbox is not the pool's any more: the new ready one is another.
    assert name not in after


def test_a_refill_waits_for_the_taken_sandboxs_end_and_pool_rm_ends_the_wait(capsule):
    """The keeper starts a take's replacement once the taken sandbox's shim exits (or after a
    short wait: a start beside the taker's first command would slow it). With that wait made
    ten minutes long, only the shim's exit can refill the pool in the time given here."""
    name = capsule.unique_name("pool")
    env = {"CAPSULE_TEST_POOL_REFILL_DEFER_MS": "600000"}
    r = capsule.run("pool", "create", name, "--size", "1", env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    try:
        wait_full(capsule, name)
        r = capsule.run("run", "--pool", name, "--", "true")
        assert r.returncode == 0, r.stderr
        wait_full(capsule, name)
        taken = capsule.unique_name("taken")
        capsule.run("create", "--pool", name, "--name", taken, check=True)
        capsule.run("rm", "-f", taken, check=True)
        wait_full(capsule, name)
        # A take that keeps running leaves the keeper waiting: a removal ends that wait too.
        keeper = pool_info(capsule, name)["keeper_pid"]
        capsule.run("create", "--pool", name, "--name", taken, check=True)
        r = capsule.run("pool", "rm", name)
        assert r.returncode == 0, r.stderr
        assert pool_info(capsule, name) is None and pool_left(capsule, name) == []
        assert not pid_alive(keeper)
        assert {s["name"]: s["state"] for s in capsule.ps()}[taken] == "running"
        capsule.run("rm", "-f", taken, check=True)
    finally:
        if pool_info(capsule, name):
            capsule.run("pool", "rm", name, timeout=300)


def test_a_keeper_killed_while_a_refill_waits_leaves_nothing_of_the_pool(capsule):
    name = capsule.unique_name("pool")
    r = capsule.run("pool", "create", name, "--size", "2", env={"CAPSULE_TEST_POOL_REFILL_DEFER_MS": "600000"},
                    timeout=300)
    assert r.returncode == 0, r.stderr
    try:
        wait_full(capsule, name)
        keeper = pool_info(capsule, name)["keeper_pid"]
        taken = capsule.unique_name("taken")
        capsule.run("create", "--pool", name, "--name", taken, check=True)
        members = ready_names(capsule, name) - {taken}
        os.kill(keeper, signal.SIGKILL)
        wait_for("the ready sandbox to end", lambda: not (members & run_entries(capsule)))
        for m in members:
            assert wait_until(lambda: cgroup_dirs(m) == [], 10), cgroup_dirs(m)
        assert not (members & slot_owners(capsule))
        assert {s["name"]: s["state"] for s in capsule.ps()}[taken] == "running"
        capsule.run("system", "prune", check=True)
        assert pool_info(capsule, name) is None and pool_left(capsule, name) == []
        capsule.run("rm", "-f", taken, check=True)
    finally:
        if pool_info(capsule, name):
            capsule.run("pool", "rm", name, timeout=300)


def test_pool_rm_stops_the_ready_sandboxes_and_leaves_nothing(capsule, make_pool):
    p = make_pool(2)
    wait_full(capsule, p.name)
    info = pool_info(capsule, p.name)
    keeper = info["keeper_pid"]
    members = ready_names(capsule, p.name)
    taken = capsule.unique_name("taken")
    capsule.run("create", "--pool", p.name, "--name", taken, check=True)
    wait_full(capsule, p.name)
    members = ready_names(capsule, p.name)
    r = capsule.run("pool", "rm", p.name)
    assert r.returncode == 0 and r.stdout.strip() == p.name, r.stderr
    assert pool_info(capsule, p.name) is None
    assert pool_left(capsule, p.name) == []
    assert not (members & run_entries(capsule))
    assert not (members & slot_owners(capsule))
    for m in members:
        assert wait_until(lambda: cgroup_dirs(m) == [], 10), cgroup_dirs(m)
    assert not pid_alive(keeper)
    # A sandbox taken before is the taker's: the pool's removal leaves it running.
    assert {s["name"]: s["state"] for s in capsule.ps()}[taken] == "running"
    r = capsule.run("pool", "rm", p.name)
    assert r.returncode != 0 and r.stderr.strip() == f"capsule: no pool named '{p.name}'"


def test_a_keeper_killed_with_sigkill_takes_its_ready_sandboxes_and_prune_sweeps_the_rest(capsule, make_pool):
    p = make_pool(2)
    wait_full(capsule, p.name)
    keeper = pool_info(capsule, p.name)["keeper_pid"]
    members = ready_names(capsule, p.name)
    os.kill(keeper, signal.SIGKILL)
    # The ready sandboxes were owned by the keeper's connections: their shims end them.
    wait_for("the ready sandboxes to end", lambda: not (members & run_entries(capsule)))
    for m in members:
        assert wait_until(lambda: cgroup_dirs(m) == [], 10), cgroup_dirs(m)
    assert not (members & slot_owners(capsule))
    info = pool_info(capsule, p.name)
    assert info["keeper"] is False and info["ready"] == 0 and info["keeper_pid"] == 0
    # A take still works: started cold from the pool's options.
    r = capsule.run("run", "--pool", p.name, "--", "echo", "cold")
    assert r.returncode == 0 and r.stdout.strip() == "cold", r.stderr
    capsule.run("system", "prune", check=True)
    assert pool_info(capsule, p.name) is None
    assert pool_left(capsule, p.name) == []


def test_a_taken_runs_name_is_free_again_as_soon_as_run_returns(capsule, make_pool):
    p = make_pool(1)
    wait_full(capsule, p.name)
    name = capsule.unique_name("again")
    for _ in range(2):
        r = capsule.run("run", "--pool", p.name, "--name", name, "--", "true")
        assert r.returncode == 0, r.stderr
        # Its remains may still be going (after the stop's answer), but the name is free.
        assert name not in run_entries(capsule)
        capsule.create(name=name)
        capsule.run("rm", "-f", name, check=True)
        wait_full(capsule, p.name)


def test_what_a_killed_shim_left_after_its_answer_is_swept_by_ps(capsule):
    # A taken sandbox's shim removes its folder after answering the stop, under this name; if
    # it was killed first, the next ps (or create) removes it.
    run = os.path.join(capsule.home, "run")
    dead = subprocess.Popen(["true"])
    dead.wait()
    gone = os.path.join(run, f".gone-x-{dead.pid}.{dead.pid}")
    os.makedirs(os.path.join(gone, "fs", "upper", "etc"))
    with open(os.path.join(gone, "fs", "upper", "etc", "f"), "w") as f:
        f.write("left")
    capsule.run("ps", check=True)
    assert not os.path.exists(gone)


def test_a_take_under_a_name_that_exists_fails_and_leaves_the_sandbox_ready(capsule, make_pool):
    p = make_pool(1)
    wait_full(capsule, p.name)
    before = ready_names(capsule, p.name)
    name = capsule.create()
    r = capsule.run("run", "--pool", p.name, "--name", name, "--", "true")
    assert r.returncode == 125 and r.stderr.strip() == f"capsule: a sandbox named '{name}' already exists"
    assert ready_names(capsule, p.name) == before
    assert pool_info(capsule, p.name)["ready"] == 1


def test_a_take_keeps_the_pools_options(capsule, make_pool):
    p = make_pool(1, "--memory", "300M", "-e", "FROM_POOL=1")
    wait_full(capsule, p.name)
    info = pool_info(capsule, p.name)
    assert info["options"]["memory"] == str(300 << 20)
    r = capsule.run("run", "--pool", p.name, "-e", "FROM_RUN=2", "--", "sh", "-c", "echo $FROM_POOL$FROM_RUN")
    assert r.returncode == 0 and r.stdout.strip() == "12", r.stderr
    # The pool's own value may be repeated; another is refused, naming it.
    r = capsule.run("run", "--pool", p.name, "--memory", "300M", "--", "true")
    assert r.returncode == 0, r.stderr
    r = capsule.run("run", "--pool", p.name, "--memory", "200M", "--", "true")
    assert r.returncode == 125
    assert r.stderr.strip() == f"capsule: a sandbox from pool '{p.name}' has the pool's options: 'memory' differs from them"


def _shim_children(shim):
    with open(f"/proc/{shim}/task/{shim}/children") as f:
        kids = [int(k) for k in f.read().split()]
    exe = os.readlink(f"/proc/{shim}/exe")

    def exe_of(pid):
        try:
            return os.readlink(f"/proc/{pid}/exe")
        except OSError:  # gone, or a zombie
            return None
    return [k for k in kids if exe_of(k) == exe]


def test_a_ready_sandboxs_remover_waits_for_its_end_and_one_killed_is_replaced(capsule, make_pool):
    # A ready sandbox's shim forks the child that removes its folder at its end while it is
    # ready (the refill's time, not the taker's stop). Killed meanwhile, the shim forks another at
    # the end: the taken sandbox's folder still goes without a sweep (no ps, no create here).
    # Not taken, the keeper's stop (pool rm) ends the idle one too, and leaves nothing.
    p = make_pool(1)
    wait_full(capsule, p.name)
    shims = {}
    for r in ready_names(capsule, p.name):
        with open(os.path.join(capsule.home, "run", r, "state.json")) as f:
            shims[r] = json.load(f)["shim_pid"]
    # Forked once the keeper has its answer: it may come a moment after the pool is full.
    wait_for("each ready sandbox's remover", lambda: all(len(_shim_children(pid)) == 1 for pid in shims.values()))
    removers = {r: _shim_children(pid) for r, pid in shims.items()}
    for r in removers.values():
        os.kill(r[0], signal.SIGKILL)
    for r in removers.values():
        wait_for("the remover's end", lambda: not pid_alive(r[0]))
    name = capsule.unique_name("prem")
    (origin,) = shims
    assert cgroup_dirs(origin)
    r = capsule.run("run", "--pool", p.name, "--name", name, "--", "true")
    assert r.returncode == 0, r.stderr
    run = os.path.join(capsule.home, "run")
    wait_for("the taken sandbox's folder to go",
             lambda: not any(e == name or e.startswith(f".gone-{name}.") for e in os.listdir(run)))
    # Its cgroups, named after the name it started under, with it.
    wait_for("the taken sandbox's cgroups to go", lambda: not cgroup_dirs(origin))
    wait_full(capsule, p.name)
    fresh = {r: json.load(open(os.path.join(run, r, "state.json")))["shim_pid"] for r in ready_names(capsule, p.name)}
    wait_for("each ready sandbox's remover", lambda: all(len(_shim_children(pid)) == 1 for pid in fresh.values()))
    idle = [k for pid in fresh.values() for k in _shim_children(pid)]
    assert capsule.run("pool", "rm", p.name).returncode == 0
    for k in idle:
        wait_for("an idle remover's end", lambda: not pid_alive(k))
    assert not [e for e in os.listdir(run) if e.startswith(".gone-")], os.listdir(run)
    assert not any(cgroup_dirs(r) for r in fresh)


def test_a_take_may_repeat_a_default_the_pool_changed_only_as_the_pools(capsule, make_pool):
    # pids is written even at its default: a plain take's request says pids=4096, which is
    # not the pool's line but a fresh configuration's (the check's lazily made default). The
    # pool's value repeated is taken; the default given outright is too (it is what a request
    # without it says); any other is refused.
    p = make_pool(1, "--pids-limit", "50")
    wait_full(capsule, p.name)
    for extra in ([], ["--pids-limit", "50"], ["--pids-limit", "4096"]):
        r = capsule.run("run", "--pool", p.name, *extra, "--", "true")
        assert r.returncode == 0, (extra, r.stderr)
    r = capsule.run("run", "--pool", p.name, "--pids-limit", "60", "--", "true")
    assert r.returncode == 125
    assert r.stderr.strip() == f"capsule: a sandbox from pool '{p.name}' has the pool's options: 'pids' differs from them"


@pytest.mark.parametrize("args,message", [
    (["--size", "0"], "invalid pool size '0': must be between 1 and 64"),
    (["--size", "65"], "invalid pool size '65': must be between 1 and 64"),
    ([], None),
    (["--size", "1", "--memory", "1x"], "invalid size '1x': unknown unit 'x' (use b, k, m, g or t)"),
    (["--size", "1", "-p", "18080:80"], "a pool's sandboxes cannot publish ports (-p): each would need the same host port"),
    (["--size", "1", "--pool", "other"], "a pool's sandboxes cannot come from a pool ('other')"),
    (["--size", "1", "-v", "/nonexistent-capsule-pool:/x"], "mount source '/nonexistent-capsule-pool': No such file or directory"),
])
def test_bad_pool_options_fail_at_create_with_one_line_and_leave_nothing(capsule, args, message):
    name = capsule.unique_name("pool")
    r = capsule.run("pool", "create", name, *args)
    assert r.returncode == 125
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    if message:
        assert lines[0] == f"capsule: {message}"
    else:
        assert "no --size given" in lines[0]
    assert pool_left(capsule, name) == []


def test_bad_names_and_a_missing_pool_are_one_line_errors(capsule, make_pool):
    r = capsule.run("pool", "create", "bad/name", "--size", "1")
    assert r.returncode == 125
    assert r.stderr.strip() == ("capsule: invalid pool name 'bad/name': character '/' is not allowed "
                                "(use letters, digits, '_', '.' and '-')")
    r = capsule.run("run", "--pool", "no-such-pool", "--", "true")
    assert r.returncode == 125 and r.stderr.strip() == "capsule: no pool named 'no-such-pool'"
    p = make_pool(1)
    r = capsule.run("pool", "create", p.name, "--size", "1")
    assert r.returncode == 125 and r.stderr.strip() == f"capsule: a pool named '{p.name}' already exists"


def test_a_pool_whose_sandboxes_cannot_start_fails_at_create_with_the_starts_words(capsule, tmp_path):
    name = capsule.unique_name("pool")
    before = run_entries(capsule)
    # A shim that dies at once: the keeper's first start fails, and with it the create.
    os.symlink(os.path.join(capsule.build, "capsule-pool-keeper"), tmp_path / "capsule-pool-keeper")
    shim = tmp_path / "capsule-shim"
    shim.write_text("#!/bin/sh\nexit 3\n")
    shim.chmod(0o755)
    r = capsule.run("pool", "create", name, "--size", "2", env={"CAPSULE_LIBEXEC": str(tmp_path)})
    assert r.returncode == 125
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith(f"capsule: starting pool '{name}': starting sandbox 'capsule-"), r.stderr
    assert "capsule-shim exited during start" in r.stderr
    assert pool_left(capsule, name) == []
    assert run_entries(capsule) == before


# ---- the vm level: one boot-and-take in make check, the rest in make check-vm ---------------------

@boots
def test_a_vm_pool_hands_out_a_booted_vm_and_rm_leaves_nothing(capsule):
    name = capsule.unique_name("vmpool")
    r = capsule.run("pool", "create", name, "--size", "1", "--isolation", "vm", timeout=BOOT_TIMEOUT)
    assert r.returncode == 0, r.stderr
    try:
        info = pool_info(capsule, name)
        assert info["options"]["isolation"] == "vm" and info["ready"] == 1
        (member,) = ready_names(capsule, name)
        r = capsule.run("run", "--pool", name, "--", "sh", "-c", "cat /proc/cmdline; hostname",
                        timeout=BOOT_TIMEOUT)
        assert r.returncode == 0, r.stderr
        assert "capsule.vm=1" in r.stdout and r.stdout.split()[-1] == member
        assert member not in run_entries(capsule)
    finally:
        # The refill may be booting: the remove waits for it and stops it too.
        r = capsule.run("pool", "rm", name, timeout=BOOT_TIMEOUT)
        assert r.returncode == 0, r.stderr
    assert pool_left(capsule, name) == []
    assert not [e for e in run_entries(capsule) if e.startswith("capsule-")]


@boots
@pytest.mark.vm_slow
def test_a_vm_taken_by_name_runs_commands_and_a_killed_keeper_leaves_nothing(capsule):
    name = capsule.unique_name("vmpool")
    r = capsule.run("pool", "create", name, "--size", "1", "--isolation", "vm", timeout=BOOT_TIMEOUT)
    assert r.returncode == 0, r.stderr
    taken = capsule.unique_name("vmtaken")
    r = capsule.run("create", "--pool", name, "--name", taken, timeout=BOOT_TIMEOUT)
    assert r.returncode == 0 and r.stdout.strip() == taken, r.stderr
    r = capsule.run("exec", taken, "--", "sh", "-c", "touch /tmp/m; ls /tmp/m", timeout=BOOT_TIMEOUT)
    assert r.returncode == 0 and r.stdout.strip() == "/tmp/m", r.stderr
    assert capsule.inspect(taken)["isolation"] == "vm"
    wait_full(capsule, name, timeout=BOOT_TIMEOUT)
    members = ready_names(capsule, name)
    os.kill(pool_info(capsule, name)["keeper_pid"], signal.SIGKILL)
    wait_for("the ready vm to end", lambda: not (members & run_entries(capsule)), timeout=BOOT_TIMEOUT)
    r = capsule.run("pool", "rm", name, timeout=BOOT_TIMEOUT)
    assert r.returncode == 0, r.stderr
    assert pool_left(capsule, name) == []
    capsule.run("rm", "-f", taken, check=True, timeout=BOOT_TIMEOUT)
    assert taken not in run_entries(capsule)
