"""vm isolation: a guest that stops answering, or answers with garbage, is the guest's problem.

The shim waits for the guest's agent to answer a hot mount (VM_MOUNT) and to sync before a
save; a guest that never answers must not stall the other clients of the sandbox or its stop.
The guest is wedged for real here: its QEMU is stopped with SIGSTOP from the host, so neither
the vCPUs nor the agent's port move. docs/security.md, "A hostile or wedged guest".
"""
import os
import signal
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "e2e"))
from secutil import Capsule, assert_alive  # noqa: E402

from helpers import qemu_procs, run_dir  # noqa: E402
from imageutil import agent_is_static  # noqa: E402

BOOT_TIMEOUT = 240
boots = pytest.mark.skipif(not agent_is_static(os.environ.get("CAPSULE_BUILD", "build")),
                           reason="a dynamically linked agent (a sanitizer build) cannot be a VM's init")


def boot_vm(capsule, prefix):
    name = capsule.unique_name(prefix)
    r = capsule.run("create", "--isolation", "vm", "--name", name, timeout=BOOT_TIMEOUT)
    assert r.returncode == 0, r.stderr
    pids = qemu_procs(capsule, name)
    assert len(pids) == 1, pids
    return name, pids[0]


def wait_for(predicate, proc):
    """Until PREDICATE holds, or PROC (the request that should make it hold) has ended."""
    while not predicate():
        if proc.poll() is not None:
            return False
        os.sched_yield()
    return True


class Wedged:
    """The vm's QEMU stopped (SIGSTOP), so the guest answers nothing; let go on exit, by pid."""

    def __init__(self, pid):
        self.pid = pid

    def __enter__(self):
        os.kill(self.pid, signal.SIGSTOP)
        return self

    def __exit__(self, *exc):
        try:
            os.kill(self.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


@pytest.fixture
def hostdir(tmp_path):
    os.chmod(tmp_path, 0o755)
    return str(tmp_path)


@boots
def test_vm_wedged_guest_does_not_stall_other_clients_or_stop_during_a_hot_mount(capsule_home, hostdir):
    capsule = Capsule(capsule_home)
    name, qemu = boot_vm(capsule, "wedge")
    log = os.path.join(run_dir(capsule, name), "shim.log")
    try:
        with Wedged(qemu):
            mount = capsule.popen("mount", name, hostdir, "/mnt/hot", stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
            try:
                # The shim logs the request as it sends it to the agent: from then on it waits
                # for a guest that cannot answer.
                assert wait_for(lambda: "asking the guest to mount '/mnt/hot'" in open(log).read(), mount), \
                    mount.communicate()
                # Another client is answered meanwhile (the list is refused or given, but
                # answered), and the hot mount is still waiting when it is.
                other = capsule.run("mounts", name, timeout=120)
                assert other.stderr or other.stdout, other
                assert mount.poll() is None, mount.communicate()
                # A stop is served as well, and ends the wait: the mount fails because the
                # sandbox stops, not because the guest ran out its time.
                stop = capsule.run("stop", "-t", "0", name, timeout=120)
                out, err = mount.communicate(timeout=120)
            finally:
                if mount.poll() is None:
                    mount.kill()
                    mount.wait()
        assert stop.returncode == 0, stop.stderr
        assert mount.returncode != 0
        assert "stopping" in err and "did not answer" not in err, err
        assert qemu_procs(capsule, name) == []
    finally:
        capsule.cleanup()


@boots
@pytest.mark.vm_slow
def test_vm_wedged_guest_does_not_stall_stop_during_a_save(capsule_home):
    capsule = Capsule(capsule_home)
    name, qemu = boot_vm(capsule, "wsave")
    save_name = capsule.unique_name("wsnap")
    try:
        with Wedged(qemu):
            save = capsule.popen("save", name, save_name, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                # The save asks the guest to sync first: the shim logs the request before it
                # waits (shim.log), so by then it is pending.
                log = os.path.join(run_dir(capsule, name), "shim.log")
                assert wait_for(lambda: "asking the guest to sync its disks" in open(log).read(), save), save.communicate()
                stop = capsule.run("stop", "-t", "0", name, timeout=120)
                out, err = save.communicate(timeout=120)
            finally:
                if save.poll() is None:
                    save.kill()
                    save.wait()
        assert stop.returncode == 0, stop.stderr
        assert save.returncode != 0
        assert "stopping" in err and "did not answer" not in err, err
    finally:
        capsule.run("saves", "rm", save_name)
        capsule.cleanup()
