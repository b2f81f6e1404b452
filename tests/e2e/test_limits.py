"""Resource limits: what inspect shows, what the cgroups hold, and what they do."""
import os

import pytest

from .helpers import cgroup_dir, cgroup_finer, cgroup_limit, cgroup_v2_only, read_file

FORK_UNTIL_FAIL = r"""
import errno, os, sys, time
kids = []
failed = None
for i in range(300):  # bounded: never more than 300 children, whatever the limit does
    try:
        pid = os.fork()
    except OSError as e:
        failed = errno.errorcode.get(e.errno, str(e.errno))
        break
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    kids.append(pid)
print(len(kids), failed, flush=True)
for k in kids:
    os.kill(k, 9)
for k in kids:
    os.waitpid(k, 0)
"""

ALLOC_512M = ("b = bytearray(512 * 1024 * 1024)\n"
              "for i in range(0, len(b), 4096):\n    b[i] = 1\n"
              "print('survived', flush=True)\n")


def test_inspect_shows_limits(capsule):
    name = capsule.create("-m", "256M", "--cpus", "1.5", "--pids-limit", "64", "--disk-size", "64M")
    limits = capsule.inspect(name)["limits"]
    assert limits == {"memory_bytes": 268435456, "cpus_milli": 1500, "pids": 64, "disk_bytes": 64 << 20}


@pytest.mark.parametrize("mem,expected", [("256M", 256 << 20), ("1G", 1 << 30), ("1.5G", 3 << 29),
                                          ("65536k", 64 << 20)])
def test_memory_sizes_are_parsed_like_docker(capsule, mem, expected):
    name = capsule.create("-m", mem)
    assert capsule.inspect(name)["limits"]["memory_bytes"] == expected
    assert cgroup_limit(name, "memory") == expected


def test_cpuset_swap_and_reservation_are_the_cgroups(capsule):
    """docker's --cpuset-cpus, --cpuset-mems, --memory-swap (memory + swap) and
    --memory-reservation: in the cgroup and in inspect; update's side is test_update.py."""
    name = capsule.create("-m", "64M", "--memory-swap", "128M", "--memory-reservation", "32M",
                          "--cpuset-cpus", "0", "--cpuset-mems", "0")
    swap = None if cgroup_v2_only() else 128 << 20
    assert cgroup_finer(name) == ("0", "0", 64 << 20, swap, 32 << 20)
    if cgroup_v2_only():
        assert int(read_file(os.path.join(cgroup_dir(name, "memory"), "memory.swap.max"))) == 64 << 20
    limits = capsule.inspect(name)["limits"]
    assert (limits["cpuset_cpus"], limits["cpuset_mems"]) == ("0", "0")
    assert (limits["memory_swap_bytes"], limits["memory_reservation_bytes"]) == (128 << 20, 32 << 20)
    r = capsule.run("exec", name, "sh", "-c", "grep Cpus_allowed_list /proc/self/status", check=True)
    assert r.stdout.split() == ["Cpus_allowed_list:", "0"]


def test_cgroups_hold_the_limits(capsule):
    name = capsule.create("-m", "256M", "--cpus", "1.5", "--pids-limit", "64")
    assert cgroup_limit(name, "memory") == 268435456
    assert cgroup_limit(name, "pids") == "64"
    quota, period = cgroup_limit(name, "cpu")
    assert quota * 1000 // period == 1500


def test_sandbox_processes_are_in_the_limited_cgroups(capsule):
    name = capsule.create("--pids-limit", "64")
    info = capsule.inspect(name)
    procs = read_file(os.path.join(cgroup_dir(name, "pids"), "cgroup.procs")).split()
    assert str(info["init_pid"]) in procs
    # The sandbox cannot reach its own limits: no cgroup filesystem is there, and it may not
    # mount one.
    r = capsule.run("exec", name, "sh", "-c", "ls -A /sys/fs/cgroup | wc -l; mkdir -p /tmp/cg; "
                    "mount -t cgroup2 none /tmp/cg 2>&1 && echo mounted; mount -t cgroup -o pids none /tmp/cg 2>&1 "
                    "&& echo mounted; true")
    assert r.stdout.split("\n")[0] == "0" and "mounted" not in r.stdout, r.stdout
    assert "ermission denied" in r.stdout or "not permitted" in r.stdout, r.stdout
    assert cgroup_limit(name, "pids") == "64"


def test_default_limits_are_no_memory_or_cpu_limit_and_4096_pids(capsule, sandbox):
    assert capsule.inspect(sandbox)["limits"] == {"memory_bytes": 0, "cpus_milli": 0, "pids": 4096, "disk_bytes": 0}
    assert cgroup_limit(sandbox, "pids") == "4096"
    assert cgroup_limit(sandbox, "cpu")[0] == -1
    assert cgroup_limit(sandbox, "memory") == -1


def test_pids_limit_zero_means_no_limit(capsule):
    name = capsule.create("--pids-limit", "0")
    assert capsule.inspect(name)["limits"]["pids"] == 0
    assert cgroup_limit(name, "pids") == "max"


def test_fork_bomb_hits_pids_limit_and_sandbox_still_answers(capsule):
    name = capsule.create("--pids-limit", "64")
    try:
        r = capsule.run("exec", "-i", name, "python3", "-", input=FORK_UNTIL_FAIL, timeout=120)
        assert r.returncode == 0, r.stderr
        count, failed = r.stdout.split()
        assert failed == "EAGAIN", r.stdout
        assert int(count) < 64
        r = capsule.run("exec", name, "echo", "ok")
        assert r.returncode == 0, r.stderr
        assert r.stdout == "ok\n"
    finally:
        capsule.run("kill", name)


def test_pids_limit_on_run(capsule):
    r = capsule.run("run", "--pids-limit", "20", "-i", "--", "python3", "-", input=FORK_UNTIL_FAIL, timeout=120)
    assert r.returncode == 0, r.stderr
    count, failed = r.stdout.split()
    assert failed == "EAGAIN"
    assert int(count) < 20


def test_memory_hog_is_killed_and_sandboxes_still_answer(capsule):
    hog = capsule.create("-m", "128M")
    other = capsule.create("-m", "128M")
    other_init = capsule.inspect(other)["init_pid"]
    r = capsule.run("exec", hog, "python3", "-c", ALLOC_512M, timeout=120)
    assert r.returncode == 137, (r.returncode, r.stdout, r.stderr)
    assert "survived" not in r.stdout
    # The sandbox that held the hog still answers, and so does the other one, untouched.
    r = capsule.run("exec", hog, "echo", "ok")
    assert r.returncode == 0 and r.stdout == "ok\n", r.stderr
    assert capsule.inspect(hog)["state"] == "running"
    r = capsule.run("exec", other, "echo", "ok")
    assert r.returncode == 0 and r.stdout == "ok\n", r.stderr
    info = capsule.inspect(other)
    assert info["state"] == "running" and info["init_pid"] == other_init
    # The other one can still use memory within its own limit.
    r = capsule.run("exec", other, "python3", "-c", "b = bytearray(32 << 20); b[::4096] = b'x' * (len(b) // 4096); print('fine')")
    assert r.returncode == 0 and r.stdout == "fine\n", r.stderr


def test_memory_hog_in_run_exits_137(capsule):
    r = capsule.run("run", "-m", "128M", "--", "python3", "-c", ALLOC_512M, timeout=120)
    assert r.returncode == 137, (r.returncode, r.stdout, r.stderr)


def test_allocation_within_the_limit_succeeds(capsule):
    r = capsule.run("run", "-m", "256M", "--", "python3", "-c",
                    "b = bytearray(64 << 20); b[::4096] = b'x' * (len(b) // 4096); print('fine')")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "fine\n"


BUSY_ONE_SECOND = ("import os, time\n"
                   "t = time.monotonic()\n"
                   "while time.monotonic() - t < 1.0:\n    pass\n"
                   "x = os.times(); print(x.user + x.system)\n")


def test_cpu_limit_throttles_a_busy_loop(capsule):
    # One second of wall time spinning under --cpus 0.25: the kernel's own count of throttled
    # periods says the quota bit (a CPU time measure would depend on the machine's load).
    name = capsule.create("--cpus", "0.25")
    r = capsule.run("exec", name, "--", "python3", "-c", BUSY_ONE_SECOND, timeout=60)
    assert r.returncode == 0, r.stderr
    stat = dict(line.split() for line in read_file(os.path.join(cgroup_dir(name, "cpu"), "cpu.stat")).splitlines())
    assert int(stat["nr_throttled"]) > 0, stat
