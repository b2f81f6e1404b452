"""capsule pause and resume: every process held still in memory (the cgroup freezer, a vm's
QMP stop), what a paused sandbox refuses and what still works, and its stop."""
import glob
import os
import shutil
import tempfile
import time
import uuid

import pytest

from tests.conftest import Capsule

from .helpers import CGROUP_ROOT, assert_capsule_error, cgroup_dirs, cgroup_v2_only, run_dir
from .imageutil import registry  # noqa: F401
from .test_vm import BOOT_TIMEOUT, STATIC_AGENT, boots

pytestmark = pytest.mark.both_levels

PAUSED_LINE = "capsule: sandbox '{}' is paused: resume it first"


def ticking(capsule, tmp_path, *create_args):
    """A sandbox whose background loop appends a line to a host folder's file every 50 ms, so
    the host sees, without asking the sandbox, whether its processes run."""
    out = tmp_path / "out"
    out.mkdir()
    os.chmod(out, 0o777)
    name = capsule.create("-v", f"{out}:/out", *create_args)
    r = capsule.run("exec", "-d", name, "sh", "-c", "while :; do echo t >> /out/tick; sleep 0.05; done")
    assert r.returncode == 0, r.stderr
    tick = out / "tick"
    wait_growing(tick)
    return name, tick


def size(path):
    return path.stat().st_size if path.exists() else 0


def wait_growing(path, timeout=60):
    start = size(path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if size(path) > start:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} did not grow in {timeout} s: the sandbox's processes do not run")


def state(capsule, name):
    return capsule.inspect(name)["state"]


@pytest.mark.vm_in_check
def test_pause_holds_processes_refuses_exec_and_resume_lets_them_run(capsule, tmp_path):
    name, tick = ticking(capsule, tmp_path)
    r = capsule.run("pause", name)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == name
    assert state(capsule, name) == "paused"
    # ps without -a lists a paused sandbox, as docker ps does.
    listed = {s["name"]: s["state"] for s in capsule.ps(all=False)}
    assert listed.get(name) == "paused"
    held = size(tick)
    time.sleep(1)
    assert size(tick) == held, "the loop went on writing while the sandbox was paused"

    # What needs the sandbox's processes is refused with one line; nothing waits.
    for args in (("exec", name, "true"), ("fs", name, "cat", "/etc/hostname")):
        r = capsule.run(*args, timeout=30)
        assert_capsule_error(r)
        assert r.stderr.strip() == PAUSED_LINE.format(name), r.stderr
    # Asking for the state that holds is not an error.
    r = capsule.run("pause", name)
    assert r.returncode == 0, r.stderr
    assert size(tick) == held

    r = capsule.run("resume", name)
    assert r.returncode == 0, r.stderr
    assert state(capsule, name) == "running"
    wait_growing(tick)
    r = capsule.run("exec", name, "cat", "/out/tick")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("t\n") >= held // 2
    r = capsule.run("resume", name)
    assert r.returncode == 0, r.stderr


def test_stop_of_a_paused_sandbox_stops_it_and_rm_removes_it(capsule, tmp_path):
    name, tick = ticking(capsule, tmp_path)
    assert capsule.run("pause", name).returncode == 0
    # The grace is long: a stop that waited for a frozen agent to take its SIGTERM would
    # take all of it and fail the timeout below.
    r = capsule.run("stop", "-t", "100", name, timeout=60)
    assert r.returncode == 0, r.stderr
    assert state(capsule, name) == "stopped"
    assert capsule.run("start", name).returncode == 0
    assert capsule.run("pause", name).returncode == 0
    r = capsule.run("rm", "-f", name, timeout=60)
    assert r.returncode == 0, r.stderr
    assert name not in {s["name"] for s in capsule.ps()}


def test_checkpoint_of_a_paused_sandbox_keeps_it_paused_and_revert_is_refused(capsule, tmp_path):
    name, tick = ticking(capsule, tmp_path)
    assert capsule.run("exec", name, "sh", "-c", "echo before > /root/f").returncode == 0
    assert capsule.run("pause", name).returncode == 0
    r = capsule.run("checkpoint", name, "cp1")
    assert r.returncode == 0, r.stderr
    # The save's own pause and resume did not undo the client's pause.
    assert state(capsule, name) == "paused"
    held = size(tick)
    time.sleep(0.5)
    assert size(tick) == held
    r = capsule.run("revert", name, "cp1")
    assert_capsule_error(r)
    assert r.stderr.strip() == PAUSED_LINE.format(name), r.stderr
    assert capsule.run("resume", name).returncode == 0
    assert capsule.run("exec", name, "sh", "-c", "echo after > /root/f").returncode == 0
    r = capsule.run("revert", name, "cp1")
    assert r.returncode == 0, r.stderr
    r = capsule.run("exec", name, "cat", "/root/f")
    assert r.stdout == "before\n"


def freezer_state(name):
    """v2: the sandbox's cgroup.events says frozen 1 or 0; v1: the freezer hierarchy's
    capsule/<name>.* folder that a freeze makes says FROZEN or THAWED."""
    if cgroup_v2_only():
        dirs = cgroup_dirs(name)
        assert dirs
        with open(os.path.join(dirs[0], "cgroup.events")) as f:
            return "frozen" if "frozen 1" in f.read() else "thawed"
    found = glob.glob(os.path.join(CGROUP_ROOT, "freezer", "capsule", name + "[.~]*", "freezer.state"))
    assert len(found) == 1, found
    with open(found[0]) as f:
        return f.read().strip().lower()


@pytest.mark.container_only
def test_pause_freezes_the_sandbox_cgroup(capsule, tmp_path):
    name, tick = ticking(capsule, tmp_path)
    assert capsule.run("pause", name).returncode == 0
    assert freezer_state(name) == "frozen"
    assert capsule.run("resume", name).returncode == 0
    assert freezer_state(name) == "thawed"


def test_pause_errors_are_one_line(capsule):
    r = capsule.run("pause", "no-such-sandbox")
    assert_capsule_error(r)
    name = capsule.create()
    assert capsule.run("stop", name).returncode == 0
    for verb in ("pause", "resume"):
        r = capsule.run(verb, name)
        assert_capsule_error(r)
        assert r.stderr.strip() == f"capsule: sandbox '{name}' is not running", r.stderr
    r = capsule.run("pause")
    assert_capsule_error(r)
    r = capsule.run("pause", "--help")
    assert r.returncode == 0 and r.stdout.startswith("Usage: capsule pause")


# ---- pause to disk (vm level) -------------------------------------------------------------------
# A vm's memory written to its folder by QEMU's migration, QEMU and the shim gone, and a new
# shim that loads it (docs/architecture.md, "Pause to disk"). One boot in make check; the
# refusals and failure paths that need a vm of their own are vm_slow.

TO_DISK_LINE = "capsule: sandbox '{}' is paused to disk: resume it first"


@pytest.fixture(scope="module")
def disk_image(registry):  # noqa: F811
    """busybox from a loopback registry: a vm from an OCI image has no 9p share in use."""
    from .imageutil import busybox_layer, make_layout
    work = tempfile.mkdtemp(prefix="capsule-pausedisk-", dir="/var/tmp")
    ref = registry.push(make_layout(work, [busybox_layer()], {"Env": ["PATH=/bin"]}),
                        f"test/pausedisk-{uuid.uuid4().hex[:8]}")
    yield ref
    shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def vmc(capsule_home):
    if not STATIC_AGENT:
        pytest.skip("capsule-agent is dynamically linked (a sanitizer build): it cannot be a VM's init")
    c = Capsule(capsule_home, "vm")
    yield c
    c.cleanup()


def vm_from_image(c, image, *args):
    name = c.unique_name("pd")
    r = c.run("create", "--name", name, "--image", image, "--memory", "256M", *args, timeout=BOOT_TIMEOUT)
    assert r.returncode == 0, r.stderr
    return name


def gsh(c, name, script):
    r = c.run("exec", name, "--", "sh", "-c", script, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def start_guest_work(c, name):
    """A counter that ticks in /tmp/count every 50 ms (renamed into place: never read empty), and a process holding a random value in
    its memory only, which writes it out on SIGUSR1: both must run on after a resume."""
    assert c.run("exec", "-d", name, "sh", "-c",
                 "echo $$ > /root/loop.pid; i=0; while :; do i=$((i+1)); echo $i > /tmp/c.new; mv /tmp/c.new /tmp/count; sleep 0.05; done"
                 ).returncode == 0
    assert c.run("exec", "-d", name, "sh", "-c",
                 "echo $$ > /root/mem.pid; v=$(cat /proc/sys/kernel/random/uuid); echo $v > /root/before; "
                 "trap 'echo $v > /root/after' USR1; while :; do sleep 0.1; done").returncode == 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        r = c.run("exec", name, "sh", "-c", "test -s /root/before && test -s /tmp/count && cat /tmp/count")
        if r.returncode == 0 and int(r.stdout) > 1:
            return
        time.sleep(0.2)
    raise AssertionError("the guest's background work did not start")


def count(c, name):
    return int(gsh(c, name, "cat /tmp/count"))


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def pids_of(c, name):
    info = c.inspect(name)
    pids = [info["shim_pid"], info["vm"]["qemu_pid"]]
    assert all(p > 0 for p in pids), info
    return pids


def pause_to_disk(c, name):
    r = c.run("pause", "--to-disk", name, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == name
    return r


def assert_paused_to_disk(c, name, pids):
    info = c.inspect(name)
    assert info["state"] == "paused" and info["paused_to"] == "disk", info
    assert info["shim_pid"] == 0
    state = os.path.join(run_dir(c, name), "memory.state")
    st = os.stat(state)
    assert st.st_mode & 0o777 == 0o600
    assert info["memory_state_bytes"] == st.st_size
    # Bounded by the guest's RAM (256M) and its devices' state (64M).
    assert 0 < st.st_size <= (256 + 64) << 20
    # A host restart, as far as the sandbox can tell: none of its processes is left.
    for pid in pids:
        deadline = time.monotonic() + 10
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(pid), f"pid {pid} of sandbox '{name}' still runs after its pause to disk"
    assert not cgroup_dirs(name), "the sandbox's cgroups outlived its pause to disk"
    listed = {s["name"]: s["state"] for s in c.ps(all=False)}
    assert listed.get(name) == "paused"
    return state


def resume_and_check(c, name, state, before):
    r = c.run("resume", name, timeout=BOOT_TIMEOUT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == name
    info = c.inspect(name)
    assert info["state"] == "running" and info["paused_to"] is None, info
    assert not os.path.exists(state)
    # The same processes, not new ones: the counter goes on from where it was, its pid alive,
    # and the value that lived only in a process's memory is the one it had.
    assert count(c, name) >= before
    gsh(c, name, "kill -0 $(cat /root/loop.pid) && kill -USR1 $(cat /root/mem.pid)")
    deadline = time.monotonic() + 30
    while c.run("exec", name, "test", "-s", "/root/after").returncode != 0:
        assert time.monotonic() < deadline, "the paused process did not answer its signal"
        time.sleep(0.1)
    assert gsh(c, name, "cat /root/after") == gsh(c, name, "cat /root/before")
    later = count(c, name)
    deadline = time.monotonic() + 30
    while count(c, name) <= later:
        assert time.monotonic() < deadline, "the guest's counter stopped after the resume"
        time.sleep(0.1)


@boots
def test_pause_to_disk_frees_the_vm_and_resume_goes_on_after_a_host_restart(vmc, disk_image, tmp_path):
    c = vmc
    name = vm_from_image(c, disk_image, "--tmpfs", "/scratch:size=8M")
    start_guest_work(c, name)
    gsh(c, name, "echo on-disk > /root/file; echo in-ram > /scratch/file; sync")
    pids = pids_of(c, name)
    before = count(c, name)
    pause_to_disk(c, name)
    state = assert_paused_to_disk(c, name, pids)

    # What needs its processes says to resume it; a pause of it holds already.
    for args in (("exec", name, "true"), ("start", name)):
        r = c.run(*args, timeout=60)
        assert_capsule_error(r)
        assert r.stderr.strip() == TO_DISK_LINE.format(name), r.stderr
    assert c.run("pause", name).returncode == 0
    assert c.run("pause", "--to-disk", name).returncode == 0

    resume_and_check(c, name, state, before)
    assert gsh(c, name, "cat /root/file /scratch/file") == "on-disk\nin-ram\n"

    # The `mounts` share is back: a hot mount works, and then keeps the next pause to disk off.
    host = tmp_path / "hot"
    host.mkdir()
    (host / "f").write_text("from the host\n")
    r = c.run("mount", name, str(host), "/mnt/hot")
    assert r.returncode == 0, r.stderr
    assert gsh(c, name, "cat /mnt/hot/f") == "from the host\n"
    r = c.run("pause", "--to-disk", name)
    assert_capsule_error(r)
    assert f"has a hot mount at '/mnt/hot' (from '{host}')" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert c.inspect(name)["state"] == "running"
    assert c.run("unmount", name, "/mnt/hot").returncode == 0

    # Paused in memory first, then to disk; rm takes the state file with the folder.
    assert c.run("pause", name).returncode == 0
    pids = pids_of(c, name)
    pause_to_disk(c, name)
    assert_paused_to_disk(c, name, pids)
    r = c.run("rm", name)
    assert r.returncode == 0, r.stderr
    assert not os.path.exists(run_dir(c, name))


@pytest.mark.container_only
def test_pause_to_disk_of_a_container_is_refused_with_one_line(capsule):
    name = capsule.create()
    r = capsule.run("pause", "--to-disk", name)
    assert_capsule_error(r)
    assert r.stderr.startswith("capsule: pause to disk is not available for containers: CRIU") and \
        r.stderr.count("\n") == 1, r.stderr
    assert state(capsule, name) == "running"


@pytest.mark.vm_slow
@boots
def test_pause_to_disk_refuses_a_bind_and_the_host_image(vmc, disk_image, tmp_path):
    c = vmc
    share = tmp_path / "share"
    share.mkdir()
    name = vm_from_image(c, disk_image, "-v", f"{share}:/data")
    r = c.run("pause", "--to-disk", name)
    assert_capsule_error(r)
    assert r.stderr.strip().startswith(f"capsule: sandbox '{name}' has a bind mount at '/data' (from '{share}')"), \
        r.stderr
    assert c.inspect(name)["state"] == "running"
    c.run("rm", "-f", name, timeout=60)
    host = c.create()
    r = c.run("pause", "--to-disk", host)
    assert_capsule_error(r)
    assert r.stderr.strip().startswith(f"capsule: sandbox '{host}' runs from the 'host' image"), r.stderr
    assert c.inspect(host)["state"] == "running"


@pytest.mark.vm_slow
@boots
def test_failed_pause_to_disk_keeps_it_running_and_failed_resume_keeps_the_state(vmc, disk_image):
    c = vmc
    name = vm_from_image(c, disk_image)
    start_guest_work(c, name)
    # The state file cannot be made: the pause fails and the guest runs on, share and all.
    blocker = os.path.join(run_dir(c, name), "memory.state.tmp")
    os.mkdir(blocker)
    r = c.run("pause", "--to-disk", name, timeout=300)
    assert_capsule_error(r)
    assert "creating the memory state file" in r.stderr and "(it goes on running)" in r.stderr, r.stderr
    assert c.inspect(name)["state"] == "running"
    n = count(c, name)
    deadline = time.monotonic() + 30
    while count(c, name) <= n:
        assert time.monotonic() < deadline, "the guest stopped after a failed pause to disk"
        time.sleep(0.1)
    os.rmdir(blocker)

    pids = pids_of(c, name)
    pause_to_disk(c, name)
    state = assert_paused_to_disk(c, name, pids)
    saved = os.stat(state)
    # A QEMU that cannot start: the resume fails with its reason, the memory state stays.
    r = c.run("resume", name, env={"CAPSULE_QEMU": "/bin/false"}, timeout=BOOT_TIMEOUT)
    assert_capsule_error(r)
    assert "resuming sandbox" in r.stderr and "memory state is kept" in r.stderr, r.stderr
    after = os.stat(state)
    assert (after.st_size, after.st_mtime_ns) == (saved.st_size, saved.st_mtime_ns)
    info = c.inspect(name)
    assert info["state"] == "paused" and info["paused_to"] == "disk", info
    resume_and_check(c, name, state, 0)

    # A stop of one paused to disk drops its memory: stopped, and a start boots it afresh.
    pause_to_disk(c, name)
    r = c.run("stop", name, timeout=60)
    assert r.returncode == 0, r.stderr
    assert c.inspect(name)["state"] == "stopped"
    assert not os.path.exists(state)
    assert c.run("start", name, timeout=BOOT_TIMEOUT).returncode == 0
    assert gsh(c, name, "test -e /root/loop.pid && echo kept") == "kept\n"
