"""An ephemeral sandbox's overlay is mounted `volatile`: its layer goes with it, so nothing syncs
the upper layer's filesystem (the host's root) for it, above all not its unmount at the end
(docs/architecture.md; docs/performance.md). A named sandbox's layer must survive a host crash:
its overlay is not volatile. At the vm level the same goes for the sandbox's qcow2 (QEMU's cache
mode)."""
import os
import subprocess

import pytest

from tests.conftest import BUILD, settled_run_entries

from .helpers import leftovers, qemu_procs, run_dir, sandbox_gone, wait_until
from .imageutil import agent_is_static

boots = pytest.mark.skipif(not agent_is_static(BUILD), reason="capsule-agent is dynamically linked (a sanitizer "
                           "build): it cannot be a VM's init")

ROOT_LINE = "grep ' / / ' /proc/self/mountinfo"


def _volatile(line):
    assert " - overlay " in line, line
    return "volatile" in line.split(" - ", 1)[1]


def test_an_ephemeral_sandboxs_root_is_volatile_and_goes_whole(capsule):
    name = capsule.unique_name("vol")
    # sync(1), syncfs (sync -f) and fsync (sync FILE) all work on a volatile overlay.
    r = capsule.run("run", "--name", name, "--", "sh", "-c",
                    f"{ROOT_LINE}; echo data > /root/f && sync && sync -f /root/f && sync /root/f && cat /root/f")
    assert r.returncode == 0, r.stderr
    root, data = r.stdout.splitlines()
    assert _volatile(root), root
    assert data == "data"
    # The run folder (the upper and work folders, work/incompat/volatile among them) is gone.
    assert wait_until(lambda: sandbox_gone(capsule, name), 10), leftovers(capsule, name)
    assert not [e for e in settled_run_entries(os.path.join(capsule.home, "run")) if name in e]


def test_a_kernel_that_refuses_volatile_gets_the_overlay_without_it(capsule):
    # The shim's hook adds an option no overlayfs knows to `volatile`: EINVAL, as from a
    # kernel before 5.10.
    r = capsule.run("run", "--", "sh", "-c", f"{ROOT_LINE}; echo ok > /root/f && cat /root/f",
                    env={"CAPSULE_TEST_REFUSE_VOLATILE": "1"})
    assert r.returncode == 0, r.stderr
    root, data = r.stdout.splitlines()
    assert not _volatile(root) and "x-capsule-test" not in root, root
    assert data == "ok"


def test_a_named_sandboxs_root_is_not_volatile(capsule):
    name = capsule.create()
    r = capsule.run("exec", name, "--", "sh", "-c", ROOT_LINE)
    assert r.returncode == 0, r.stderr
    assert not _volatile(r.stdout.strip()), r.stdout
    capsule.run("rm", "-f", name, check=True)
    assert wait_until(lambda: sandbox_gone(capsule, name), 10), leftovers(capsule, name)


def test_a_kept_ephemeral_sandbox_with_a_disk_starts_again(capsule):
    """A volatile overlay leaves work/work/incompat/volatile on the sandbox's disk, which would
    refuse the next mount: stopped by capsule_sandbox_stop_keep and started again, the sandbox
    gets a new work folder and keeps its files (tests/e2e/volatile_check.c)."""
    name = capsule.unique_name("volk")
    r = subprocess.run([os.path.join(BUILD, "tests", "e2e", "volatile_check"), name], env=capsule.env,
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.split() == ["ok", "volatile", "ok", "restart"], r.stdout
    assert wait_until(lambda: sandbox_gone(capsule, name), 10), leftovers(capsule, name)
    assert not os.path.exists(run_dir(capsule, name))


def _qemu_cmdline(capsule, name):
    procs = []
    assert wait_until(lambda: procs.extend(qemu_procs(capsule, name)) or procs, 240), leftovers(capsule, name)
    with open(f"/proc/{procs[0]}/cmdline", "rb") as f:
        return f.read().decode().split("\0")


@pytest.mark.vm_slow
@boots
def test_an_ephemeral_vms_disk_skips_flushes_and_a_named_ones_does_not(capsule):
    """The vm level's counterpart: an ephemeral sandbox's qcow2 is QEMU's cache=unsafe (no
    fdatasync at the guest's flushes), a named one's cache=writeback."""
    name = capsule.unique_name("volvm")
    p = capsule.popen("run", "--isolation", "vm", "--name", name, "--", "sleep", "600", stdin=subprocess.DEVNULL,
                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        drive = [a for a in _qemu_cmdline(capsule, name) if "node-name=root-top" in a]
        assert len(drive) == 1 and ",cache=unsafe," in drive[0], drive
    finally:
        p.kill()
        p.wait()
        p.stderr.close()
    assert wait_until(lambda: sandbox_gone(capsule, name), 60), leftovers(capsule, name)
    named = capsule.create("--isolation", "vm")
    drive = [a for a in _qemu_cmdline(capsule, named) if "node-name=root-top" in a]
    assert len(drive) == 1 and ",cache=writeback," in drive[0], drive
    capsule.run("rm", "-f", named, check=True)
