"""vm isolation: QEMU is the sandbox's, as Firecracker's jailer makes its VMM the microVM's.

QEMU runs in the sandbox's cgroups, placed there before it execs: what a guest makes QEMU
allocate (RAM, TCG's code buffer, threads, CPU time) counts against the sandbox's limits, not
against nobody's. --memory is the guest's RAM, QEMU gets an allowance on top (vm.h); its
threads are bounded; --cpus is its CPU time. docs/security.md, "A hostile or wedged guest".
"""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "e2e"))
from secutil import Capsule, cgroup_dirs, pids_in_cgroup, wait_until  # noqa: E402

from helpers import qemu_procs  # noqa: E402
from imageutil import agent_is_static  # noqa: E402

BOOT_TIMEOUT = 240
boots = pytest.mark.skipif(not agent_is_static(os.environ.get("CAPSULE_BUILD", "build")),
                           reason="a dynamically linked agent (a sanitizer build) cannot be a VM's init")

GUEST_RAM = 256 << 20
QEMU_ALLOWANCE = 384 << 20  # VM_QEMU_MEMORY_ALLOWANCE
QEMU_PIDS_MAX = 512  # VM_QEMU_PIDS_MAX


def cgroup_read(name, controller, *files):
    """The first of FILES in the sandbox's CONTROLLER folder (v1) or its one folder (v2)."""
    for d in cgroup_dirs(name):
        if f"/{controller}/" in d or d.startswith("/sys/fs/cgroup/capsule/"):
            for f in files:
                p = os.path.join(d, f)
                if os.path.exists(p):
                    with open(p) as fh:
                        return fh.read().strip()
    return None


def has_controller(controller):
    if os.path.isdir(f"/sys/fs/cgroup/{controller}"):
        return True
    v2 = "/sys/fs/cgroup/cgroup.controllers"
    return os.path.exists(v2) and controller in open(v2).read().split()


@boots
def test_vm_qemu_runs_in_the_sandboxs_cgroups_under_its_limits_and_they_go_with_it(capsule_home):
    capsule = Capsule(capsule_home)
    name = capsule.unique_name("jail")
    try:
        r = capsule.run("create", "--isolation", "vm", "--name", name, "--memory", "256M", "--cpus", "1",
                        timeout=BOOT_TIMEOUT)
        assert r.returncode == 0, r.stderr
        qemu = qemu_procs(capsule, name)
        assert len(qemu) == 1, qemu
        # Placed before its exec: QEMU and every thread it made are in the sandbox's cgroups.
        assert qemu[0] in pids_in_cgroup(name), open(f"/proc/{qemu[0]}/cgroup").read()
        limit = cgroup_read(name, "memory", "memory.max", "memory.limit_in_bytes")
        assert limit is not None and int(limit) == GUEST_RAM + QEMU_ALLOWANCE, limit
        # What the guest touched is charged there, not to the host at large.
        used = cgroup_read(name, "memory", "memory.current", "memory.usage_in_bytes")
        with open(f"/proc/{qemu[0]}/status") as f:
            rss_kib = int(next(line.split()[1] for line in f if line.startswith("VmRSS:")))
        assert int(used) >= rss_kib * 1024 // 2, (used, rss_kib)
        cpu = cgroup_read(name, "cpu", "cpu.max", "cpu.cfs_quota_us")
        assert cpu is not None and cpu.split()[0] == "100000", cpu
        if has_controller("pids"):
            assert cgroup_read(name, "pids", "pids.max") == str(QEMU_PIDS_MAX)
        r = capsule.run("rm", "-f", name, timeout=120)
        assert r.returncode == 0, r.stderr
        assert wait_until(lambda: cgroup_dirs(name) == [], 10), cgroup_dirs(name)
        assert qemu_procs(capsule, name) == []
    finally:
        capsule.cleanup()
