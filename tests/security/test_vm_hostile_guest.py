"""vm isolation: a guest that stops answering, or answers with garbage, is the guest's problem.

The shim waits for the guest's agent to answer a hot mount (VM_MOUNT) and to sync before a
save; a guest that never answers must not stall the other clients of the sandbox or its stop.
The guest is wedged for real here: its QEMU is stopped with SIGSTOP from the host, so neither
the vCPUs nor the agent's port move.

A guest's root cannot reach the agent's port (no device node, no CAP_MKNOD, the agent's fds
out of reach): it takes a guest kernel or agent that is no longer ours to send the shim
frames. Those frames meet the same code in the shim at both levels (agent_frame), so a
hostile agent (tests/e2e/hostile_agent.c, put in place of capsule-agent through
$CAPSULE_LIBEXEC) drives it in a container, which starts in milliseconds.
docs/security.md, "A hostile or wedged guest".
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "e2e"))
from secutil import (DATA, ERROR, STARTED, Capsule, assert_alive, connect, exec_frame, hello_frame,  # noqa: E402
                     parse_frames, read_until_quiet)

from helpers import qemu_procs, run_dir  # noqa: E402
from imageutil import agent_is_static  # noqa: E402

BOOT_TIMEOUT = 240
INITIAL_WINDOW = 1 << 20  # CP_INITIAL_WINDOW
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
        time.sleep(0.01)  # a poll, not a deadline: the shim shares two cores with us
    return True


def log_says(path, text):
    with open(path) as f:
        return text in f.read()


class Wedged:
    """The vm's QEMU stopped (SIGSTOP), so the guest answers nothing; let go on exit. Through a
    pidfd: once the stop has killed QEMU, its pid may be someone else's."""

    def __init__(self, pid):
        self.pidfd = os.pidfd_open(pid)

    def __enter__(self):
        signal.pidfd_send_signal(self.pidfd, signal.SIGSTOP)
        return self

    def __exit__(self, *exc):
        try:
            signal.pidfd_send_signal(self.pidfd, signal.SIGCONT)
        except ProcessLookupError:
            pass
        os.close(self.pidfd)


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
                assert wait_for(lambda: log_says(log, "asking the guest to mount '/mnt/hot'"), mount), \
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
                assert wait_for(lambda: log_says(log, "asking the guest to sync its disks"), save), save.communicate()
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


@boots
@pytest.mark.vm_slow
def test_vm_guest_root_cannot_reach_the_agents_port(capsule_home):
    capsule = Capsule(capsule_home)
    name, _ = boot_vm(capsule, "vport")
    try:
        # Every way in that a guest's root has: a device node, making one, the agent's own fds.
        probe = ("ls /dev/vport* /dev/virtio-ports 2>/dev/null && echo REACHABLE; "
                 "d=$(cat /sys/class/virtio-ports/*/dev | head -1 | tr : ' '); "
                 "mknod /tmp/vp c $d 2>/dev/null && echo 'MADE NODE'; "
                 "for f in /proc/1/fd/*; do (: >>\"$f\") 2>/dev/null && echo \"OPENED $f\"; done; "
                 "echo done")
        r = capsule.run("exec", name, "--", "sh", "-c", probe, timeout=120)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip().splitlines() == ["done"], r.stdout
        assert_alive(capsule, name)
    finally:
        capsule.cleanup()


@pytest.fixture
def hostile(capsule_home, tmp_path):
    """A Capsule whose sandboxes start tests/e2e/hostile_agent.c as their agent."""
    libexec = tmp_path / "libexec"
    libexec.mkdir()
    shutil.copy(os.path.join(os.environ.get("CAPSULE_BUILD", "build"), "tests", "e2e", "hostile-agent"),
                libexec / "capsule-agent")
    c = Capsule(capsule_home)
    c.env = dict(c.env, CAPSULE_LIBEXEC=str(libexec))
    yield c
    c.cleanup()


def state(capsule, name):
    with open(os.path.join(run_dir(capsule, name), "state.json")) as f:
        return json.load(f)["state"]


def test_hostile_agent_control_a_polite_answer_goes_through(hostile):
    name = hostile.create()
    r = hostile.run("exec", name, "polite", timeout=60)
    assert r.returncode == 0 and r.stdout == "ok\n", r
    assert state(hostile, name) == "running"


# foreign, restarted and fat-exit were forwarded to the client before the shim checked what an
# agent may answer; giant, garbage and flood were already refused (the log line is new).
@pytest.mark.parametrize("how", ["foreign", "restarted", "fat-exit", "giant", "garbage", "flood"])
def test_hostile_agent_frames_end_the_sandbox_and_never_reach_the_client(hostile, how):
    name = hostile.create()
    # A raw client that grants no credit beyond the first window: what the agent sends past it
    # is a flood by any timing.
    with connect(hostile, name, timeout=60) as s:
        s.sendall(hello_frame() + exec_frame(1, [how]))
        # Read until the shim hangs up, or a frame no client should get arrives.
        buf, closed = read_until_quiet(s, quiet=60, total=120, until=lambda fr: any(
            c == 1 and t not in (STARTED, DATA, ERROR) for t, _, c, _ in fr))
    frames, _ = parse_frames(buf)
    # The shim ended the sandbox and hung up: it did not crash (a crash leaves "running" in
    # state.json and no log line) and did not wait on the agent.
    assert closed
    assert state(hostile, name) == "stopped"
    with open(os.path.join(run_dir(hostile, name), "shim.log")) as f:
        log = f.read()
    assert "the sandbox ends" in log and log.rstrip().endswith("stopped"), log
    # Nothing the agent made up reached the client: no frame only a shim sends, one STARTED
    # at most, no exit status, no DATA past the client's credit.
    on_chan = [(t, p) for t, _, c, p in frames if c == 1]
    assert all(t in (STARTED, DATA, ERROR) for t, _ in on_chan), [t for t, _ in on_chan]
    assert sum(t == STARTED for t, _ in on_chan) <= 1
    assert sum(len(p) for t, p in on_chan if t == DATA) <= INITIAL_WINDOW


@boots
@pytest.mark.vm_slow
def test_vm_wedged_guest_a_kill_cuts_short_the_sync_of_a_stop_that_saves(capsule_home):
    capsule = Capsule(capsule_home)
    name = capsule.unique_name("wkill")
    save_name = capsule.unique_name("wksnap")
    try:
        r = capsule.run("create", "--isolation", "vm", "--name", name, "--save", save_name, timeout=BOOT_TIMEOUT)
        assert r.returncode == 0, r.stderr
        qemu = qemu_procs(capsule, name)
        log = os.path.join(run_dir(capsule, name), "shim.log")
        with Wedged(qemu[0]):
            # A forced stop of a vm saved at stop asks the guest to sync first, and waits.
            stop = capsule.popen("stop", "-t", "0", name, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                assert wait_for(lambda: log_says(log, "asking the guest to sync its disks"), stop), stop.communicate()
                # A kill meanwhile is the owner saying not to wait for the guest.
                kill = capsule.run("kill", name, timeout=120)
                out, err = stop.communicate(timeout=120)
            finally:
                if stop.poll() is None:
                    stop.kill()
                    stop.wait()
        assert kill.returncode == 0 and stop.returncode == 0, (kill.stderr, err)
        with open(log) as f:
            text = f.read()
        assert "was forced" in text and "did not answer" not in text, text
    finally:
        capsule.run("saves", "rm", save_name)
        capsule.cleanup()
