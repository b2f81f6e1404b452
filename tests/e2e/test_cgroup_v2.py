"""The container level on a pure cgroup v2 host, tested on any host.

Most users' hosts (Debian 12's default, Kubernetes nodes) are pure cgroup v2; a hybrid or v1
development or CI machine never runs capsule's v2 code. So one test boots capsule's guest
kernel in QEMU (TCG where there is no KVM), not as a capsule vm (a vm's commands have
capsule's seccomp filter and capabilities: no mount, no namespaces, so no container can be
made in one) but with the host's root over read-only 9p and, as PID 1, a script of checks
(cgroup_v2_guest.sh) that mounts cgroup2 at /sys/fs/cgroup with its controllers handed down
from the root, as Debian 12 boots, puts CAPSULE_HOME on an ext4 disk, and drives this build's
capsule CLI: limits at create and `update` against memory.max, memory.swap.max, memory.low,
cpu.max, cpu.weight, pids.max and cpuset.cpus/mems, a fork bomb stopped by pids.max, an OOM
kill, capsule_sandbox_stats, pause and resume through cgroup.freeze, and no folder left by
`rm -f`, by a killed shim's sweep or by an ephemeral run.

One boot, about 20 s under TCG on the development machine (9p with cache=loose: the host's
files do not change while it runs), so it runs in `make check`, once: plain_build_only (the
sanitizer build's binaries are the same code).
"""
import os
import re
import shutil
import subprocess

import pytest

from .helpers import BUILD, guest_kernel, host_kvm

HERE = os.path.dirname(os.path.abspath(__file__))
GUEST_SCRIPT = os.path.join(HERE, "cgroup_v2_guest.sh")
BOOT_TIMEOUT = 600  # seconds: TCG on two shared cores

pytestmark = pytest.mark.plain_build_only


def _qemu():
    return os.environ.get("CAPSULE_QEMU") or shutil.which("qemu-system-x86_64")


def _mkfs():
    return shutil.which("mkfs.ext4") or shutil.which("mkfs.ext4", path="/usr/sbin:/sbin")


def boot_checks(tmp_path):
    """Boot the guest and run cgroup_v2_guest.sh as its init; its console output."""
    disk = tmp_path / "state.ext4"
    with open(disk, "wb") as f:
        f.truncate(512 << 20)
    subprocess.run([_mkfs(), "-q", "-F", "-E", "lazy_itable_init=1,lazy_journal_init=1", str(disk)], check=True)
    build = os.path.abspath(BUILD)
    # The kernel's command line carries them: words, no spaces.
    assert not re.search(r"\s", build + GUEST_SCRIPT), "the build and test paths must have no spaces"
    cmdline = (f"console=ttyS0 quiet panic=-1 reboot=t root=hostroot rootfstype=9p "
               f"rootflags=trans=virtio,version=9p2000.L,cache=loose ro init={GUEST_SCRIPT} CGV2_BUILD={build}")
    # KVM only where the CPU backs it: a kvm_pvm host's /dev/kvm opens but cannot run this guest.
    accel = ["-accel", "kvm", "-cpu", "host"] if host_kvm() == "usable" else ["-accel", "tcg"]
    cmd = [_qemu(), "-M", "microvm,acpi=off", *accel, "-nodefaults", "-no-user-config", "-nographic",
           "-no-reboot", "-m", "512", "-smp", "2", "-kernel", guest_kernel()["path"], "-append", cmdline,
           # The host's root, read-only whatever the guest asks, as the guest's root.
           "-fsdev", "local,id=root,path=/,security_model=none,readonly=on,multidevs=remap",
           "-device", "virtio-9p-device,fsdev=root,mount_tag=hostroot",
           "-drive", f"file={disk},format=raw,if=none,id=state,cache=unsafe",
           "-device", "virtio-blk-device,drive=state", "-serial", "stdio"]
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=BOOT_TIMEOUT)
    return r.stdout.decode(errors="replace").replace("\r", "")


@pytest.mark.skipif(guest_kernel()["kind"] != "capsule",
                    reason="needs capsule's own guest kernel (build-guest-kernel: linux-source-6.1)")
@pytest.mark.skipif(not _qemu(), reason="needs qemu-system-x86_64")
@pytest.mark.skipif(not _mkfs(), reason="needs mkfs.ext4")
def test_container_level_on_a_pure_cgroup_v2_host(tmp_path):
    out = boot_checks(tmp_path)
    results = [line for line in out.splitlines() if re.match(r"(not )?ok - ", line)]
    failed = [line for line in results if line.startswith("not ok")]
    summary = re.search(r"^cgv2-summary pass=(\d+) fail=(\d+)$", out, re.M)
    # The whole console on failure: the checks' own lines, capsule's errors, the kernel's.
    assert summary and not failed, out
    assert int(summary.group(2)) == 0 and int(summary.group(1)) == len(results), out
    # Every check ran, not a script that stopped halfway.
    with open(GUEST_SCRIPT) as f:
        checks = sum(1 for line in f if re.match(r"\s*check(_true)? ", line))
    assert len(results) == checks, out
