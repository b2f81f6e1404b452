"""capsule-oci, the OCI runtime command line (docs/oci.md): the lifecycle runc's callers drive
(create, start, state, kill, delete, run, exec), the monitor as the pid they wait for, and
config.json's refusals, each with its own line and nothing left behind."""
import glob
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from tests.conftest import BUILD, _agent_is_static, _env

from .helpers import FDS_PROBE, read_to_eof, run_fds_probe, run_with_fds_as_3_up

OCI = os.path.join(BUILD, "capsule-oci")
BUSYBOX = "/bin/busybox"


@pytest.fixture
def oci(capsule_home):
    """capsule-oci with a --root of its own, against the test home; every container it made is
    deleted by id at the end."""
    root = tempfile.mkdtemp(prefix="capsule-oci-root-", dir="/var/tmp")
    env = _env(capsule_home)

    def run(*args, check=False, timeout=60, **kw):
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        r = subprocess.run([OCI, "--root", root, *args], env=env, timeout=timeout, **kw)
        if check and r.returncode != 0:
            raise AssertionError(f"capsule-oci {' '.join(args)}: {r.returncode}: {r.stderr}")
        return r

    run.root = root
    run.env = env
    yield run
    for cid in os.listdir(root):
        run("delete", "--force", cid)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def bundle(oci):
    """A bundle whose rootfs is busybox alone, with capsule-oci's own default config.json."""
    d = tempfile.mkdtemp(prefix="capsule-oci-bundle-", dir="/var/tmp")
    os.makedirs(os.path.join(d, "rootfs", "bin"))
    shutil.copy(BUSYBOX, os.path.join(d, "rootfs", "bin", "busybox"))
    for tool in ("sh", "sleep", "cat", "echo", "id", "grep", "kill", "ls", "hostname", "readlink", "touch", "yes"):
        os.symlink("busybox", os.path.join(d, "rootfs", "bin", tool))
    if not _agent_is_static():
        # A sanitizer build's agent is dynamic: it runs from the container's root, which must
        # then hold its loader and libraries (a real image has its own).
        libs = subprocess.run(["ldd", os.path.join(BUILD, "capsule-agent")], capture_output=True, text=True).stdout
        for path in re.findall(r"(/\S+)\s+\(0x", libs):
            dst = os.path.join(d, "rootfs", path.lstrip("/"))
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copy(os.path.realpath(path), dst)
    oci("spec", "--bundle", d, check=True)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def set_config(bundle, **process):
    path = os.path.join(bundle, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    cfg["process"]["terminal"] = False
    cfg["process"].update(process)
    with open(path, "w") as f:
        json.dump(cfg, f)
    return cfg


def edit_config(bundle, fn):
    path = os.path.join(bundle, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    fn(cfg)
    with open(path, "w") as f:
        json.dump(cfg, f)


def state(oci, cid):
    r = oci("state", cid, check=True)
    return json.loads(r.stdout)


def wait_status(oci, cid, status, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = state(oci, cid)
        if s["status"] == status:
            return s
        time.sleep(0.05)
    raise AssertionError(f"{cid} never reached {status}: {s}")


def run_detached_limited(oci, bundle, tmp_path, cid, args, **resources):
    """run --detach of ARGS with linux.resources RESOURCES (merged), waited on to be running."""
    set_config(bundle, args=args)
    edit_config(bundle, lambda c: c["linux"]["resources"].update(resources))
    with open(tmp_path / "out", "w") as out:
        r = oci("run", "--detach", "--bundle", bundle, cid, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                capture_output=False)
    assert r.returncode == 0, (tmp_path / "out").read_text()
    wait_status(oci, cid, "running")


def test_run_exits_with_the_process_status_and_leaves_no_state(oci, bundle):
    set_config(bundle, args=["sh", "-c", "echo out; echo err >&2; exit 7"])
    r = oci("run", "--bundle", bundle, "r1")
    assert r.returncode == 7, r.stderr
    assert r.stdout == "out\n" and r.stderr == "err\n"
    assert os.listdir(oci.root) == []


def test_create_start_state_kill_delete(oci, bundle, tmp_path):
    set_config(bundle, args=["sh", "-c", "trap 'echo got-term; exit 3' TERM; echo started; "
                                         "while :; do sleep 0.05; done"])
    pid_file = tmp_path / "pid"
    out = open(tmp_path / "out", "w+")
    # The monitor keeps create's stdio: the process's output goes there (so not to pipes,
    # whose end would be awaited).
    r = oci("create", "--bundle", bundle, "--pid-file", str(pid_file), "c1", stdout=out, stderr=out,
            stdin=subprocess.DEVNULL, capture_output=False)
    assert r.returncode == 0, out.read()
    pid = int(pid_file.read_text())
    s = state(oci, "c1")
    assert s["status"] == "created" and s["pid"] == pid and s["bundle"] == bundle and s["id"] == "c1"
    # Not started yet: nothing ran.
    assert out.seek(0) == 0 and out.read() == ""
    assert oci("delete", "c1").returncode != 0  # neither stopped nor forced
    assert oci("start", "c1").returncode == 0
    assert wait_status(oci, "c1", "running")["pid"] == pid
    r = oci("start", "c1")
    assert r.returncode != 0 and "not created" in r.stderr
    r = oci("delete", "c1")
    assert r.returncode != 0 and "running" in r.stderr
    deadline = time.monotonic() + 10
    while "started" not in open(tmp_path / "out").read() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert oci("kill", "c1", "TERM").returncode == 0
    s = wait_status(oci, "c1", "stopped")
    assert "pid" not in s
    assert "got-term" in open(tmp_path / "out").read()
    assert oci("delete", "c1").returncode == 0
    assert oci("state", "c1").returncode != 0
    assert "c1" not in os.listdir(oci.root)


def test_a_config_without_process_is_created_and_cannot_start(oci, bundle):
    edit_config(bundle, lambda c: c.pop("process"))
    with open(os.path.join(bundle, "out"), "w") as out:
        r = oci("create", "--bundle", bundle, "np1", stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                capture_output=False)
    assert r.returncode == 0
    r = oci("start", "np1")
    assert r.returncode == 1 and "config.json has no process to start" in r.stderr
    assert wait_status(oci, "np1", "stopped")
    assert oci("delete", "np1").returncode == 0


def receive_terminal(server):
    """The master end a runtime sends to its --console-socket (one SCM_RIGHTS fd)."""
    conn, _ = server.accept()
    with conn:
        _, fds, _, _ = socket.recv_fds(conn, 1024, 1)
    assert len(fds) == 1
    return fds[0]


def read_until(fd, needle, timeout=20):
    out = b""
    deadline = time.monotonic() + timeout
    while needle not in out and time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    return out


def test_a_terminal_goes_to_the_console_socket(oci, bundle, tmp_path):
    """process.terminal, as conmon and containerd's shim ask for it: the master of a terminal
    arrives on --console-socket; what is typed there reaches the process, whose stdin is a tty."""
    set_config(bundle, terminal=True, args=["sh", "-c", "test -t 0 && echo is-a-tty; read line; echo got-$line"])
    path = str(tmp_path / "console.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    with open(tmp_path / "out", "w") as out:
        proc = subprocess.Popen([OCI, "--root", oci.root, "create", "--bundle", bundle, "--console-socket", path,
                                 "tty1"], env=oci.env, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        master = receive_terminal(server)
        assert proc.wait(timeout=60) == 0, (tmp_path / "out").read_text()
    try:
        assert oci("start", "tty1").returncode == 0
        assert b"is-a-tty" in read_until(master, b"is-a-tty")
        os.write(master, b"hello\r")
        assert b"got-hello" in read_until(master, b"got-hello")
        wait_status(oci, "tty1", "stopped")
    finally:
        os.close(master)
        server.close()
    # exec with a terminal of its own, the same way.
    set_config(bundle, args=["sleep", "1000"])
    with open(tmp_path / "out2", "w") as out:
        assert oci("run", "--detach", "--bundle", bundle, "tty2", stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                   capture_output=False).returncode == 0
    os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    with open(tmp_path / "out3", "w") as out:
        proc = subprocess.Popen([OCI, "--root", oci.root, "exec", "--tty", "--detach", "--console-socket", path,
                                 "tty2", "sh", "-c", "test -t 1 && echo exec-tty"], env=oci.env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        master = receive_terminal(server)
        assert proc.wait(timeout=60) == 0, (tmp_path / "out3").read_text()
    try:
        assert b"exec-tty" in read_until(master, b"exec-tty")
    finally:
        os.close(master)
        server.close()


def test_the_pid_is_waitable_and_exits_as_the_process(oci, bundle, tmp_path):
    """What conmon and containerd's shim rely on: the pid-file's process is reparented to the
    nearest subreaper (here: a child python makes one) and its exit status is the process's;
    a signal it is sent reaches the process."""
    set_config(bundle, args=["sh", "-c", "trap 'exit 42' USR1; while :; do sleep 0.05; done"])
    pid_file = tmp_path / "pid"
    helper = f"""
import ctypes, os, subprocess, sys
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
r = subprocess.run({[OCI, "--root", oci.root, "create", "--bundle", bundle, "--pid-file", str(pid_file), "w1"]!r},
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
assert r.returncode == 0
pid = int(open({str(pid_file)!r}).read())
subprocess.run({[OCI, "--root", oci.root, "start", "w1"]!r}, check=True)
os.kill(pid, 10)  # SIGUSR1, straight to the pid, as containerd's shim does
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status))
"""
    r = subprocess.run(["/usr/bin/python3", "-c", helper], env=oci.env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "42"
    assert wait_status(oci, "w1", "stopped")


def test_exec_runs_in_the_container_with_its_process_settings(oci, bundle, tmp_path):
    set_config(bundle, args=["sleep", "1000"], env=["PATH=/bin", "FROM_SPEC=1"])
    with open(tmp_path / "out", "w") as out:
        r = oci("run", "--detach", "--bundle", bundle, "e1", stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                capture_output=False)
    assert r.returncode == 0
    r = oci("exec", "e1", "sh", "-c", "echo $FROM_SPEC; hostname; exit 4")
    assert r.returncode == 4, r.stderr
    assert r.stdout == "1\ncapsule\n"
    # A process.json, as containerd hands exec one.
    proc = {"args": ["sh", "-c", "id -u; id -G"], "cwd": "/", "env": ["PATH=/bin"],
            "user": {"uid": 1000, "gid": 1000, "additionalGids": [5, 7]}}
    (tmp_path / "p.json").write_text(json.dumps(proc))
    r = oci("exec", "--process", str(tmp_path / "p.json"), "e1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1000", "1000", "5", "7"]
    # Detached, with a pid-file naming a process that exits as the command does.
    pid_file = tmp_path / "epid"
    with open(tmp_path / "eout", "w") as out:
        r = oci("exec", "--detach", "--pid-file", str(pid_file), "e1", "sleep", "1000", stdin=subprocess.DEVNULL,
                stdout=out, stderr=out, capture_output=False)
    assert r.returncode == 0
    epid = int(pid_file.read_text())
    os.kill(epid, signal.SIGKILL)
    ps = json.loads(oci("ps", "--format", "json", "e1", check=True).stdout)
    assert len(ps) >= 1
    assert oci("delete", "--force", "e1").returncode == 0
    assert oci("state", "e1").returncode != 0


def test_the_root_is_the_bundles_rootfs_written_through_or_read_only(oci, bundle):
    set_config(bundle, args=["sh", "-c", "echo written > /out.txt"])
    assert oci("run", "--bundle", bundle, "w1").returncode == 0
    path = os.path.join(bundle, "rootfs", "out.txt")
    with open(path) as f:
        assert f.read() == "written\n"
    # Owned by the container's root, which is the host's on the bundle (idmapped).
    assert os.stat(path).st_uid == 0
    os.unlink(path)
    edit_config(bundle, lambda c: c["root"].update(readonly=True))
    r = oci("run", "--bundle", bundle, "w2")
    assert r.returncode != 0 and "Read-only file system" in r.stderr
    assert not os.path.exists(path)


def test_cgroups_path_is_where_the_sandbox_cgroup_goes(oci, bundle, tmp_path):
    leaf = f"/capsule-oci-test-{os.getpid()}/c1"
    set_config(bundle, args=["sleep", "1000"])
    edit_config(bundle, lambda c: (c["linux"].update(cgroupsPath=leaf),
                                   c["linux"]["resources"].update(pids={"limit": 321}, cpu={"shares": 2})))
    with open(tmp_path / "out", "w") as out:
        r = oci("run", "--detach", "--bundle", bundle, "cg1", stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                capture_output=False)
    assert r.returncode == 0, (tmp_path / "out").read_text()
    # v1 (a pids hierarchy of its own) or v2 (one hierarchy).
    found = [p for p in (f"/sys/fs/cgroup/pids{leaf}/pids.max", f"/sys/fs/cgroup{leaf}/pids.max")
             if os.path.exists(p)]
    # cpu.shares as the kubelet gives a pause container: v1's value, or v2's weight from it.
    weight = [(p, want) for p, want in ((f"/sys/fs/cgroup/cpu{leaf}/cpu.shares", "2"),
                                        (f"/sys/fs/cgroup{leaf}/cpu.weight", "1")) if os.path.exists(p)]
    try:
        assert found and open(found[0]).read().strip() == "321"
        assert weight and open(weight[0][0]).read().strip() == weight[0][1]
    finally:
        assert oci("delete", "--force", "cg1").returncode == 0
    assert not os.path.exists(found[0])
    # The parents are left, as runc leaves them: ours go (each hierarchy once; cpu and cpuacct
    # may be links to one).
    for top in {os.path.realpath(p) for p in glob.glob(f"/sys/fs/cgroup/*{os.path.dirname(leaf)}") +
                glob.glob(f"/sys/fs/cgroup{os.path.dirname(leaf)}")}:
        os.rmdir(top)


V2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")


def test_the_specs_cpu_and_memory_resources_are_the_cgroups(oci, bundle, tmp_path):
    """cpu quota and period as given, realtime, idle, the cpuset (on v1 its new folders filled
    from their parents first), swap as memory + swap, the reservation, swappiness, the OOM
    killer switch and the kernel's TCP limit: each read back from the container's cgroups; kernel
    memory is taken with a warning, as runc takes it; update changes the cpuset, swap and the
    reservation, and a cpu the host has not changes nothing."""
    # (idle gives the group the kernel's least weight: no shares beside it). A quota of more
    # cpus than the host has is written as given, as runc writes it.
    quota = 200000 * (os.cpu_count() + 1)
    cpu = {"quota": quota, "period": 200000, "cpus": "0", "mems": "0", "idle": 1}
    memory = {"limit": 64 << 20, "swap": 128 << 20, "reservation": 32 << 20}
    if not V2:
        cpu.update(realtimePeriod=500000, realtimeRuntime=0)
        memory.update(swappiness=10, disableOOMKiller=True, kernelTCP=16 << 20, kernel=8 << 20)
    set_config(bundle, args=["sleep", "1000"])
    edit_config(bundle, lambda c: c["linux"]["resources"].update(cpu=cpu, memory=memory))
    with open(tmp_path / "out", "w") as out:
        r = oci("run", "--detach", "--bundle", bundle, "res1", stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                capture_output=False)
    log = (tmp_path / "out").read_text()
    assert r.returncode == 0, log
    try:
        def f(ctrl, name):
            return cgroup_file(oci, "res1", ctrl, name)
        assert (f("cpuset", "cpuset.cpus"), f("cpuset", "cpuset.mems")) == ("0", "0")
        assert f("cpu", "cpu.idle") == "1"
        if V2:
            assert f("cpu", "cpu.max") == f"{quota} 200000"
            assert f("memory", "memory.swap.max") == str(64 << 20) and f("memory", "memory.low") == str(32 << 20)
        else:
            assert "linux.resources.memory.kernel is ignored, as runc ignores it" in log
            assert (f("cpu", "cpu.cfs_quota_us"), f("cpu", "cpu.cfs_period_us")) == (str(quota), "200000")
            assert f("cpu", "cpu.rt_period_us") == "500000"
            assert f("memory", "memory.limit_in_bytes") == str(64 << 20)
            assert f("memory", "memory.memsw.limit_in_bytes") == str(128 << 20)
            assert f("memory", "memory.soft_limit_in_bytes") == str(32 << 20)
            assert f("memory", "memory.swappiness") == "10"
            assert f("memory", "memory.oom_control").startswith("oom_kill_disable 1")
            assert f("memory", "memory.kmem.tcp.limit_in_bytes") == str(16 << 20)
        cpus = f"0-{os.cpu_count() - 1}" if os.cpu_count() > 1 else "0"
        oci("update", "--cpuset-cpus", cpus, "--memory", "96m", "--memory-swap", "-1", "--memory-reservation", "48m",
            "res1", check=True)
        assert f("cpuset", "cpuset.cpus") == cpus
        assert f("memory", "memory.low" if V2 else "memory.soft_limit_in_bytes") == str(48 << 20)
        assert f("memory", "memory.swap.max" if V2 else "memory.memsw.limit_in_bytes") in ("max", str(2**63 - 4096))
        # A cpu the host has not: refused by name before anything is written (the library
        # reads the host's online cpus), and the limits before it kept.
        r = oci("update", "--memory", "80m", "--cpuset-cpus", "4095", "res1")
        assert r.returncode == 1 and "--cpuset-cpus '4095'" in r.stderr and r.stderr.count("\n") == 1, r.stderr
        assert f("cpuset", "cpuset.cpus") == cpus
        assert f("memory", "memory.max" if V2 else "memory.limit_in_bytes") == str(96 << 20)
    finally:
        oci("delete", "--force", "res1")


def test_a_relative_cgroups_path_is_below_the_callers_cgroup(oci, bundle, tmp_path):
    """runtime-tools' linux_cgroups_relative_* specs: the path is taken from the caller's own
    cgroup (v2: its parent), and the pid's cgroups (the monitor's) show it."""
    rel = f"capsule-oci-rel-{os.getpid()}/c"
    set_config(bundle, args=["sleep", "1000"])
    edit_config(bundle, lambda c: (c["linux"].update(cgroupsPath=rel),
                                   c["linux"]["resources"].update(memory={"limit": 48 << 20},
                                                                  cpu={"cpus": "0", "mems": "0"})))
    with open(tmp_path / "out", "w") as out:
        r = oci("run", "--detach", "--bundle", bundle, "rel1", stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                capture_output=False)
    assert r.returncode == 0, (tmp_path / "out").read_text()
    with open("/proc/self/cgroup") as fh:
        own = {c: p for _, cs, p in (line.rstrip("\n").split(":", 2) for line in fh) for c in cs.split(",")}
    try:
        pid = state(oci, "rel1")["pid"]
        for ctrl in ("memory", "cpuset") if not V2 else ("",):
            base = own[ctrl] if not V2 else os.path.dirname(own[""])
            want = os.path.join(base, rel)
            hier = f"/sys/fs/cgroup/{ctrl}" if ctrl else "/sys/fs/cgroup"
            if not V2:
                with open(f"/proc/{pid}/cgroup") as fh:
                    assert any(line.rstrip("\n").endswith(f":{ctrl}:{want}") for line in fh)
            limit = "memory.max" if V2 else "memory.limit_in_bytes"
            if ctrl != "cpuset":
                assert open(f"{hier}{want}/{limit}").read().strip() == str(48 << 20)
    finally:
        oci("delete", "--force", "rel1")
    # The parents made in every hierarchy, left as runc leaves them, go (each hierarchy once).
    tops = {os.path.realpath(h) + os.path.join(own.get(os.path.basename(h).split(",")[0], "/"), rel.split("/")[0])
            for h in glob.glob("/sys/fs/cgroup/*")} if not V2 else \
        {"/sys/fs/cgroup" + os.path.join(os.path.dirname(own[""]), rel.split("/")[0])}
    for top in tops:
        if os.path.isdir(top):
            os.rmdir(top)
    assert not glob.glob(f"/sys/fs/cgroup/*/capsule-oci-rel-{os.getpid()}")


def test_noexec_mounts(oci, bundle, tmp_path):
    host = tmp_path / "bin"
    host.mkdir()
    shutil.copy(BUSYBOX, host / "busybox")
    set_config(bundle, args=["sh", "-c", "/x/busybox true; echo bind=$?; cp /bin/busybox /t/; /t/busybox true; "
                                         "echo tmpfs=$?"])
    edit_config(bundle, lambda c: c["mounts"].extend([
        {"destination": "/x", "type": "bind", "source": str(host), "options": ["rbind", "noexec"]},
        {"destination": "/t", "type": "tmpfs", "source": "tmpfs", "options": ["noexec", "size=16m"]}]))
    os.symlink("busybox", os.path.join(bundle, "rootfs", "bin", "cp"))
    r = oci("run", "--bundle", bundle, "nx1")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "bind=126\ntmpfs=126\n", r.stdout + r.stderr


def test_mount_propagation_is_the_sandboxs_own(oci, bundle, tmp_path):
    """A bind of a shared host mount is private in the sandbox (not in the host's peer group,
    where the sandbox's mounts below it would reach the host); "shared" and "unbindable" make
    peer groups of the sandbox's own; a bind's data options are the kernel's to ignore."""
    host = tmp_path / "shared"
    host.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(host)], check=True)
    try:
        subprocess.run(["mount", "--make-shared", str(host)], check=True)
        with open("/proc/self/mountinfo") as f:
            line = next(l for l in f if l.split()[4] == str(host))
        host_group = re.search(r"shared:\d+", line).group(0)
        set_config(bundle, args=["cat", "/proc/self/mountinfo"])
        edit_config(bundle, lambda c: c["mounts"].extend([
            {"destination": "/mnt/a", "type": "bind", "source": str(host), "options": ["bind", "mode=755"]},
            {"destination": "/mnt/b", "type": "bind", "source": str(host), "options": ["rbind", "rshared"]},
            {"destination": "/mnt/c", "type": "bind", "source": str(host), "options": ["bind", "unbindable"]},
            {"destination": "/t", "type": "tmpfs", "source": "tmpfs", "options": ["shared"]}]))
        r = oci("run", "--bundle", bundle, "pr1")
        assert r.returncode == 0, r.stderr
        fields = {l.split()[4]: l.split(" - ")[0].split()[6:] for l in r.stdout.splitlines()}
        assert fields["/mnt/a"] == [], r.stdout
        assert len(fields["/mnt/b"]) == 1 and fields["/mnt/b"][0].startswith("shared:"), r.stdout
        assert fields["/mnt/b"][0] != host_group
        assert fields["/mnt/c"] == ["unbindable"], r.stdout
        assert fields["/t"][0].startswith("shared:") and fields["/t"][0] != host_group, r.stdout
    finally:
        subprocess.run(["umount", str(host)])


def test_mounts_are_made_in_the_specs_order(oci, bundle, tmp_path):
    """A later mount goes over an earlier one, whatever their types: a tmpfs below a bind
    listed before it is seen, and a bind above a tmpfs listed before it hides the tmpfs; and
    mountinfo lists them in the spec's order, after capsule's own /proc (runtime-tools'
    mounts program checks that)."""
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / f"from-{name}").write_text(name)
    set_config(bundle, args=["sh", "-c", "echo x > /data/t/new && ls /data /data/t /m; "
                                         "cut -d' ' -f5 /proc/self/mountinfo"])

    def mounts(cfg):
        cfg["mounts"] += [
            {"destination": "/data", "type": "bind", "source": str(tmp_path / "a"), "options": ["rbind"]},
            {"destination": "/data/t", "type": "tmpfs", "source": "tmpfs"},
            {"destination": "/m/x", "type": "tmpfs", "source": "tmpfs"},
            {"destination": "/m", "type": "bind", "source": str(tmp_path / "b"), "options": ["bind", "ro"]},
        ]
    edit_config(bundle, mounts)
    r = oci("run", "--bundle", bundle, "m1")
    assert r.returncode == 0, r.stderr
    out = r.stdout.split("\n")
    # ls: /data holds a's file and the tmpfs's mount point; /data/t the tmpfs's new file
    # (not written through to the host); /m b's file.
    assert "from-a" in out[:out.index("/data/t:")] and "new" in out[out.index("/data/t:"):out.index("/m:")]
    assert out[out.index("/m:") + 1] == "from-b"
    assert not (tmp_path / "a" / "t" / "new").exists()
    points = out[out.index("/m:") + 2:]
    assert points.index("/proc") < points.index("/data") < points.index("/data/t") < points.index("/m/x") < \
        points.index("/m")


def test_id_mappings_of_the_spec_are_the_sandboxs(oci, bundle, tmp_path):
    """One mapping from container id 0 to a host range (podman --userns, containerd's user
    namespaces) is the sandbox's map instead of its own range, uid and gid sizes apart; the
    root and binds are not idmapped then: their ids on disk are host ids, as the caller made
    them for the mapping (the root chowned to the range; a root-owned file is the overflow
    id inside)."""
    data = tmp_path / "data"
    data.mkdir()
    set_config(bundle, args=["sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map; id -u; stat -c %u /bin/busybox "
                                         "/data; echo x > /data/new"])

    def maps(cfg):
        cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 3000000, "size": 2000}]
        cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 3100000, "size": 3000}]
        cfg["mounts"].append({"destination": "/data", "type": "bind", "source": str(data), "options": ["rbind"]})
    edit_config(bundle, maps)
    os.symlink("busybox", os.path.join(bundle, "rootfs", "bin", "stat"))
    for top, dirs, files in os.walk(os.path.join(bundle, "rootfs")):
        for name in [top] + [os.path.join(top, f) for f in dirs + files]:
            os.lchown(name, 3000000, 3100000)
    os.chown(data, 3000000, 3100000)
    os.chown(os.path.join(bundle, "rootfs", "bin", "busybox"), 0, 0)
    r = oci("run", "--bundle", bundle, "ids1")
    assert r.returncode == 0, r.stderr
    lines = [line.split() for line in r.stdout.strip().split("\n")]
    assert lines == [["0", "3000000", "2000"], ["0", "3100000", "3000"], ["0"], ["65534"], ["0"]], r.stdout
    st = os.stat(data / "new")
    assert (st.st_uid, st.st_gid) == (3000000, 3100000)


def test_devices_are_made_and_the_device_rules_hold(oci, bundle):
    """linux.devices beyond capsule's own: nodes the shim makes, with the spec's mode and
    owner; one the device rules allow opens, one they deny is there and does not open (EACCES,
    as under a device cgroup: nodev), and a fifo is a fifo."""
    set_config(bundle, args=["sh", "-c", "stat -c '%F %t:%T %a %u:%g' /dev/mine /dev/denied /dev/fifo1; "
                                         "echo x > /dev/mine && echo wrote; head -c 1 /dev/denied; echo read=$?"])

    def devices(cfg):
        cfg["linux"]["devices"] = [
            {"path": "/dev/mine", "type": "c", "major": 1, "minor": 3, "fileMode": 0o620, "uid": 0, "gid": 5},
            {"path": "/dev/denied", "type": "c", "major": 1, "minor": 5},
            {"path": "/dev/fifo1", "type": "p", "fileMode": 0o600},
        ]
        cfg["linux"]["resources"]["devices"] = [{"allow": False, "access": "rwm"},
                                                {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"}]
    edit_config(bundle, devices)
    os.symlink("busybox", os.path.join(bundle, "rootfs", "bin", "stat"))
    os.symlink("busybox", os.path.join(bundle, "rootfs", "bin", "head"))
    r = oci("run", "--bundle", bundle, "dev1")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().split("\n")
    assert lines[:3] == ["character special file 1:3 620 0:5", "character special file 1:5 666 0:0",
                         "fifo 0:0 600 0:0"], r.stdout
    assert lines[3] == "wrote" and lines[4] == "read=1", r.stdout
    assert "Permission denied" in r.stderr


def test_masked_and_read_only_paths_of_the_spec(oci, bundle):
    root = os.path.join(bundle, "rootfs")
    os.makedirs(os.path.join(root, "secret"))
    with open(os.path.join(root, "secret", "a"), "w") as f:
        f.write("x")
    with open(os.path.join(root, "secret.txt"), "w") as f:
        f.write("hidden")
    os.makedirs(os.path.join(root, "ro"))
    set_config(bundle, args=["sh", "-c", "ls /secret; cat /secret.txt; echo end; echo x > /ro/f"])
    # podman's and containerd's defaults among them (/sys/fs/selinux need not exist).
    edit_config(bundle, lambda c: c["linux"].update(
        maskedPaths=["/secret", "/secret.txt", "/proc/kcore", "/sys/fs/selinux", "/sys/dev/block"],
        readonlyPaths=["/ro", "/proc/asound", "/proc/sys"]))
    r = oci("run", "--bundle", bundle, "m1")
    assert r.returncode == 1
    assert r.stdout == "end\n"
    assert "Read-only file system" in r.stderr
    assert not os.path.exists(os.path.join(root, "ro", "f"))


def test_process_settings_and_seccomp_are_applied(oci, bundle):
    set_config(bundle, args=["sh", "-c", "ulimit -n; grep -E 'CapEff|CapInh|CapAmb' /proc/self/status; "
                                         "hostname x 2>/dev/null; echo $?; umask; cat /proc/self/oom_score_adj; "
                                         "cat /proc/sys/net/ipv4/ping_group_range"],
               rlimits=[{"type": "RLIMIT_NOFILE", "soft": 77, "hard": 88}],
               capabilities=dict({s: ["CAP_KILL", "CAP_SYS_ADMIN"] for s in ("bounding", "effective", "permitted")},
                                 inheritable=["CAP_KILL"], ambient=["CAP_KILL"]),
               user={"uid": 0, "gid": 0, "umask": 0o27}, oomScoreAdj=300)
    edit_config(bundle, lambda c: c["linux"].update(sysctl={"net.ipv4.ping_group_range": "0 0"}))

    # sethostname refused by the spec's filter with EPERM, though CAP_SYS_ADMIN would allow it.
    def seccomp(cfg):
        cfg["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW",
                                   "syscalls": [{"names": ["sethostname"], "action": "SCMP_ACT_ERRNO"}]}
    edit_config(bundle, seccomp)
    r = oci("run", "--bundle", bundle, "l1")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split("\n")
    assert lines[0] == "77"
    caps = dict(line.split(":") for line in lines[1:4])
    assert int(caps["CapEff"], 16) == (1 << 5) | (1 << 21)
    assert int(caps["CapInh"], 16) == int(caps["CapAmb"], 16) == 1 << 5
    assert lines[4] == "1"
    assert lines[5:8] == ["0027", "300", "0\t0"]


@pytest.mark.parametrize("nnp", [True, False, None])
def test_no_new_privileges_is_the_specs_and_the_filters_stay(oci, bundle, nnp):
    """noNewPrivileges false (or absent, which the spec reads as false) runs the process
    without no_new_privs, as runc does, with capsule's filter and the spec's still installed
    (they go on while the agent holds CAP_SYS_ADMIN) and the root still nosuid, so a set-id
    file gains nothing."""
    set_config(bundle, args=["sh", "-c", "grep -E '^(NoNewPrivs|Seccomp_filters):' /proc/self/status; "
                                         "grep -E '^[0-9]+ [0-9]+ [0-9:]+ [^ ]+ / ' /proc/self/mountinfo; hostname z; echo hostname=$?"],
               capabilities={s: ["CAP_SYS_ADMIN"] for s in ("bounding", "effective", "permitted")})

    def spec(cfg):
        cfg["process"].pop("noNewPrivileges", None)
        if nnp is not None:
            cfg["process"]["noNewPrivileges"] = nnp
        cfg["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW",
                                   "syscalls": [{"names": ["sethostname"], "action": "SCMP_ACT_ERRNO"}]}
    edit_config(bundle, spec)
    r = oci("run", "--bundle", bundle, "nnp1")
    assert r.returncode == 0, r.stderr
    status = dict(line.split(":\t") for line in r.stdout.split("\n")[:2])
    assert status["NoNewPrivs"] == ("1" if nnp else "0")
    assert status["Seccomp_filters"] == "2", r.stdout
    assert "nosuid" in r.stdout.split("\n")[2], r.stdout
    assert "hostname=1" in r.stdout


@pytest.mark.skipif(not _agent_is_static(), reason="capsule-agent is dynamically linked (a sanitizer build): "
                    "it cannot be a VM's init")
def test_the_isolation_annotation_runs_the_bundle_in_a_vm(oci, bundle):
    """The same bundle, its own kernel: capsule.isolation=vm, as Kata takes its annotation."""
    set_config(bundle, args=["sh", "-c", "uname -r; echo $FROM_SPEC; exit 5"], env=["PATH=/bin", "FROM_SPEC=yes"])
    edit_config(bundle, lambda c: c.update(annotations={"capsule.isolation": "vm"}))
    r = oci("run", "--bundle", bundle, "vm1", timeout=300)
    assert r.returncode == 5, r.stderr
    kernel, from_spec = r.stdout.split()
    assert kernel != os.uname().release and from_spec == "yes"


def test_a_spec_seccomp_profile_cannot_widen_capsules_filter(oci, bundle):
    """A profile that allows everything, with CAP_SYS_ADMIN: mount(2), which capsule's own
    filter refuses, is still refused (EPERM), while the spec's own refusal works above it."""
    os.symlink("busybox", os.path.join(bundle, "rootfs", "bin", "mount"))
    os.makedirs(os.path.join(bundle, "rootfs", "mnt"))
    set_config(bundle, args=["sh", "-c", "mount -t tmpfs none /mnt; echo mount=$?; hostname y; echo hostname=$?"],
               capabilities={s: ["CAP_SYS_ADMIN"] for s in ("bounding", "effective", "permitted")})
    edit_config(bundle, lambda c: c["linux"].update(seccomp={
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["sethostname"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}))
    r = oci("run", "--bundle", bundle, "sc1")
    assert r.returncode == 0, r.stderr
    # busybox's words for EPERM from mount(2).
    assert "mount=1" in r.stdout and "mount: permission denied" in r.stderr, r.stdout + r.stderr
    assert "hostname=1" in r.stdout and "Permission denied" in r.stderr


def set_ns_path(cfg, kind, path):
    for ns in cfg["linux"]["namespaces"]:
        if ns["type"] == kind:
            ns["path"] = path


def ns_path(kind, path):
    """An edit that names a namespace to join, for the refusals the shim makes at create."""
    return lambda c: (set_ns_path(c, kind, path), c["process"].update(terminal=False))


@pytest.mark.parametrize("edit,message", [
    (lambda c: c["linux"].update(uidMappings=[{"containerID": 0, "hostID": 3000000, "size": 10},
                                              {"containerID": 10, "hostID": 4000000, "size": 10}],
                                 gidMappings=[{"containerID": 0, "hostID": 3000000, "size": 10}]),
     "config.json: linux.uidMappings: more than one mapping is not supported by capsule"),
    (lambda c: c["linux"].update(uidMappings=[{"containerID": 1, "hostID": 3000000, "size": 10}]),
     "{containerID 1, hostID 3000000, size 10} is not supported by capsule: it does not start at container id 0"),
    (lambda c: c["linux"].update(uidMappings=[{"containerID": 0, "hostID": 0, "size": 10}]),
     "it maps the container's root to the host's"),
    (lambda c: c["linux"].update(gidMappings=[{"containerID": 0, "hostID": 999999000, "size": 65536}]),
     "config.json: linux.gidMappings {containerID 0, hostID 999999000, size 65536} is not supported by capsule: "
     "it reaches the host ids capsule gives its sandboxes"),
    (lambda c: c["linux"].update(uidMappings=[{"containerID": 0, "hostID": 3000000, "size": 10}]),
     "config.json: linux.gidMappings: missing (uid and gid mappings go together)"),
    (lambda c: (c["linux"].update(uidMappings=[{"containerID": 0, "hostID": 3000000, "size": 10}],
                                  gidMappings=[{"containerID": 0, "hostID": 3000000, "size": 10}]),
                c["process"]["user"].update(uid=10)),
     "config.json: process.user 10:0 is outside linux.uidMappings or gidMappings"),
    (lambda c: (c["linux"].update(devices=[{"path": "/dev/null", "type": "c", "major": 1, "minor": 3},
                                           {"path": "/dev/mine", "type": "c", "major": 1, "minor": 3}]),
                c["linux"]["resources"].update(devices=[{"allow": False, "access": "rwm"},
                                                        {"allow": True, "type": "c", "major": 1, "access": "r"}])),
     "config.json: linux.devices[1]: '/dev/mine' may be read but not written under linux.resources.devices"),
    (lambda c: c["linux"].update(devices=[{"path": "/dev/zero", "type": "c", "major": 1, "minor": 3}]),
     "config.json: linux.devices[0]: '/dev/zero' is capsule's own c 1:5, not c 1:3"),
    (lambda c: c["linux"].update(devices=[{"path": "/tmp/x", "type": "c", "major": 1, "minor": 3}]),
     "'/tmp/x' is not a clean path below /dev"),
    (lambda c: (c["linux"].update(devices=[{"path": "/dev/mine", "type": "c", "major": 1, "minor": 3}]),
                c.update(annotations={"capsule.isolation": "vm"})),
     "config.json: linux.devices beyond capsule's own is not supported by capsule: a vm's devices are its guest's"),
    (lambda c: c["linux"]["namespaces"].pop(0), "sharing the host's pid namespace is not supported"),
    (ns_path("ipc", "/proc/self/ns/ipc"),
     "the ipc namespace '/proc/self/ns/ipc' is the host's, not a sandbox's: capsule never shares the host's"),
    (ns_path("uts", f"/proc/{os.getpid()}/ns/uts"), f"the uts namespace '/proc/{os.getpid()}/ns/uts' is the host's"),
    (ns_path("ipc", "/proc/self/ns/uts"), "'/proc/self/ns/uts' is not an ipc namespace"),
    (ns_path("pid", "/proc/1/ns/pid"),
     "the pid namespace '/proc/1/ns/pid' is no running sandbox's of this capsule home: capsule joins only those"),
    (ns_path("pid", "/proc/self/ns/ipc"), "the pid namespace '/proc/self/ns/ipc' is no running sandbox's"),
    (lambda c: set_ns_path(c, "mount", "/proc/1/ns/mnt"), "joining the mount namespace at '/proc/1/ns/mnt' is not"),
    # A vm takes its hostname from a pod's UTS namespace, never from the host's.
    (lambda c: (ns_path("uts", f"/proc/{os.getpid()}/ns/uts")(c), c.update(annotations={"capsule.isolation": "vm"})),
     f"the uts namespace '/proc/{os.getpid()}/ns/uts' is the host's, not a sandbox's"),
    (lambda c: (set_ns_path(c, "ipc", "/proc/1/ns/ipc"), c["linux"].update(sysctl={"kernel.shmmax": "4096"})),
     "config.json: linux.sysctl.kernel.shmmax is not supported with a joined ipc namespace"),
    (lambda c: c["linux"]["namespaces"].append({"type": "network", "path": "run/netns/x"}),
     "the network namespace path 'run/netns/x' is not an absolute path"),
    (lambda c: c["process"].update(rlimits=[{"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1}]),
     "config.json: process.rlimits[0]: unknown rlimit type 'RLIMIT_BOGUS'"),
    (lambda c: c["process"]["capabilities"].update(effective=["CAP_KILL"]),
     "its bounding, effective and permitted sets differ"),
    (lambda c: c["mounts"].append({"destination": "/x", "type": "nfs", "source": "h:/x"}),
     "a mount of type 'nfs' at '/x' is not supported"),
    (lambda c: c["linux"].update(cgroupsPath="system.slice:libpod:x"), "a systemd slice:prefix:name"),
    (lambda c: c["linux"].update(cgroupsPath="/a/../b"), "linux.cgroupsPath '/a/../b' is not supported by capsule: "
                                                           "not a clean path ('.' or '..')"),
    (lambda c: c["linux"]["resources"].update(memory={"limit": 64 << 20, "swap": 32 << 20}),
     "config.json: linux.resources.memory.swap 33554432 is below the memory limit 67108864 (it is memory + swap)"),
    (lambda c: c["linux"]["resources"].update(memory={"swap": 64 << 20}),
     "config.json: linux.resources.memory.swap needs linux.resources.memory.limit"),
    (lambda c: c["linux"]["resources"].update(memory={"swappiness": 101}),
     "config.json: linux.resources.memory.swappiness: not between 0 and 100"),
    (lambda c: c["linux"]["resources"].update(cpu={"cpus": "0-1;rm"}),
     "config.json: linux.resources.cpu.cpus '0-1;rm' is not a list such as 0-3,6"),
    (lambda c: c["linux"]["resources"].update(cpu={"idle": 2}), "config.json: linux.resources.cpu.idle: not 0 or 1"),
    (lambda c: (c["linux"]["resources"].update(cpu={"mems": "0"}), c.update(annotations={"capsule.isolation": "vm"})),
     "config.json: linux.resources.cpu.mems is not supported at the vm level"),
    # The kernel's refusal, at create: no such cpu. Nothing is left, the cgroups neither.
    (lambda c: (c["linux"]["resources"].update(cpu={"cpus": "4095"}), c["process"].update(terminal=False)),
     "linux.resources.cpu.cpus 4095: write '"),
    (lambda c: c["linux"].update(sysctl={"kernel.domainname": "x"}),
     "config.json: linux.sysctl.kernel.domainname is not supported by capsule: it is not the sandbox's own"),
    (lambda c: c["process"].update(oomScoreAdj=-1001), "config.json: process.oomScoreAdj: not between -1000 and 1000"),
    (lambda c: c["linux"].update(maskedPaths=["etc/secret"]), "'etc/secret' is not a clean absolute path"),
    (lambda c: c["linux"].update(seccomp={"defaultAction": "SCMP_ACT_NOPE"}), "unknown action 'SCMP_ACT_NOPE'"),
    (lambda c: c.update(hooks={"createContainer": [{"path": "/bin/true"}]}),
     "config.json: hooks.createContainer is not supported by capsule"),
    (lambda c: c.update(hooks={"poststop": [{"path": "true"}]}),
     "config.json: hooks.poststop[0]: path is not an absolute path"),
    (lambda c: c.update(hooks={"prestart": [{"path": "/bin/true", "timeout": 0}]}),
     "config.json: hooks.prestart[0]: timeout is not a number of seconds above 0"),
    (lambda c: c.update(ociVersion="2.0.0"), "ociVersion '2.0.0' is not 1.x"),
    (lambda c: c["process"].update(args=[]), "config.json: process.args: no command"),
    (lambda c: c["process"].update(cwd="relative"), "config.json: process.cwd: not an absolute path"),
])
def test_config_refusals_name_the_field_and_leave_nothing(oci, bundle, edit, message):
    edit_config(bundle, edit)
    r = oci("create", "--bundle", bundle, "bad")
    assert r.returncode == 1
    assert message in r.stderr, r.stderr
    assert len(r.stderr.strip().split("\n")) == 1
    assert os.listdir(oci.root) == []


@pytest.fixture
def netns():
    """A network namespace of the test's own (ip netns), its loopback up with an address of
    its own."""
    name = f"capsule-oci-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "-n", name, "addr", "add", "10.99.88.77/32", "dev", "lo"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name])


def set_netns(cfg, path):
    set_ns_path(cfg, "network", path)


def test_a_network_namespace_path_is_joined(oci, bundle, netns):
    """The container's process is in the namespace the spec names (its owner's links, its
    net.* sysctls written there); a path that is no network namespace is refused, and nothing
    is left."""
    path = f"/run/netns/{netns}"
    set_config(bundle, args=["sh", "-c", "readlink /proc/self/ns/net; cat /proc/net/fib_trie"])

    def edit(cfg):
        set_netns(cfg, path)
        cfg["linux"]["sysctl"] = {"net.ipv4.ping_group_range": "0 7"}
    edit_config(bundle, edit)
    r = oci("run", "--bundle", bundle, "n1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"net:[{os.stat(path).st_ino}]\n"), r.stdout
    assert "10.99.88.77" in r.stdout, r.stdout
    # (Read inside, the group ids show as the sandbox's overflow id: they are the host's.)
    got = subprocess.run(["ip", "netns", "exec", netns, "cat", "/proc/sys/net/ipv4/ping_group_range"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert got == ["0", "7"]
    # Without the path, the same bundle has a namespace of its own, without that link.
    edit_config(bundle, lambda cfg: [ns.pop("path", None) for ns in cfg["linux"]["namespaces"]])
    r = oci("run", "--bundle", bundle, "n2")
    assert r.returncode == 0 and "10.99.88.77" not in r.stdout, r.stdout + r.stderr
    for bad, message in (("/proc/self/ns/mnt", "'/proc/self/ns/mnt' is not a network namespace"),
                         (bundle + "/config.json", "is not a network namespace"),
                         ("/run/netns/capsule-none", "the network namespace '/run/netns/capsule-none': No such file")):
        edit_config(bundle, lambda cfg: set_netns(cfg, bad))
        r = oci("run", "--bundle", bundle, "n3")
        assert r.returncode != 0 and message in r.stderr, r.stderr
        assert os.listdir(oci.root) == []


@pytest.fixture(scope="module")
def sysv_shm():
    """tests/e2e/sysv_shm.c built static, to run in a busybox root."""
    d = tempfile.mkdtemp(prefix="capsule-sysv-", dir="/var/tmp")
    out = os.path.join(d, "sysv_shm")
    subprocess.run(["cc", "-static", "-O2", "-o", out, os.path.join(os.path.dirname(__file__), "sysv_shm.c")],
                   check=True)
    yield out
    shutil.rmtree(d, ignore_errors=True)


def host_shm_key_exists(key):
    """Whether the host's own IPC namespace has a System V segment of KEY."""
    with open("/proc/sysvipc/shm") as f:
        return any(int(line.split()[0]) == key for line in f.readlines()[1:])


def test_a_pods_ipc_and_uts_namespaces_are_joined_through_the_pause_monitor(oci, bundle, sysv_shm):
    """As containerd's CRI makes a pod: a first (pause) container, and a second whose spec
    names the first's IPC and UTS namespaces as /proc/PID/ns paths of the first's pid, the
    monitor. The monitor lives in its sandbox's namespaces, so the second shares the first's
    System V objects and hostname, and neither shares the host's. The second runs on the first's
    host id range, so a segment of mode 0600 that the first's root made is its root's too."""
    key = 0x5ca1e000 + os.getpid() % 4096
    shutil.copy(sysv_shm, os.path.join(bundle, "rootfs", "bin", "sysv_shm"))
    set_config(bundle, args=["sh", "-c", f"sysv_shm make {key} from-the-pause 600; echo made; exec sleep 60"])
    hook_out = os.path.join(bundle, "hook-ns")
    edit_config(bundle, lambda c: c.update(hostname="pod-host", hooks={"poststart": [{"path": "/bin/sh", "args": [
        "sh", "-c", f"readlink /proc/self/ns/net /proc/self/ns/ipc /proc/self/ns/uts > {hook_out}"]}]}))
    second = bundle + "-second"
    shutil.copytree(bundle, second, symlinks=True)
    try:
        pid_file = os.path.join(oci.root, "pause.pid")
        out = tempfile.TemporaryFile(mode="w+")
        oci("create", "--bundle", bundle, "--pid-file", pid_file, "pause", stdout=out, stderr=out,
            stdin=subprocess.DEVNULL, capture_output=False, check=True)
        monitor = int(open(pid_file).read())
        oci("start", "pause", check=True)
        deadline = time.monotonic() + 20
        while "made" not in (out.seek(0) or out.read()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "made" in (out.seek(0) or out.read()), out.read()
        for kind in ("ipc", "uts", "net"):
            assert os.readlink(f"/proc/{monitor}/ns/{kind}") != os.readlink(f"/proc/self/ns/{kind}"), kind
        # The hooks the monitor runs are back in the host's namespaces.
        assert open(hook_out).read().split() == [os.readlink(f"/proc/self/ns/{k}") for k in ("net", "ipc", "uts")]
        assert not host_shm_key_exists(key)
        # The kubelet's oomScoreAdj for a Guaranteed pod's containers runs at the sandbox's floor.
        set_config(second, args=["sh", "-c", f"hostname; sysv_shm read {key}; readlink /proc/self/ns/ipc; "
                                             "cat /proc/self/oom_score_adj"], oomScoreAdj=-997)

        def join(cfg):
            set_ns_path(cfg, "ipc", f"/proc/{monitor}/ns/ipc")
            set_ns_path(cfg, "uts", f"/proc/{monitor}/ns/uts")
        edit_config(second, join)
        r = oci("run", "--bundle", second, "app")
        assert r.returncode == 0, r.stderr
        assert r.stdout.split("\n")[:4] == ["pod-host", "from-the-pause", os.readlink(f"/proc/{monitor}/ns/ipc"),
                                            "0"], r.stdout
        # A host segment is no container's to see.
        subprocess.run([sysv_shm, "make", str(key + 1), "the-hosts"], check=True)
        try:
            set_config(second, args=["sysv_shm", "read", str(key + 1)], oomScoreAdj=0)
            r = oci("run", "--bundle", second, "app2")
            assert r.returncode == 2 and "No such file" in r.stderr, r.stdout + r.stderr
        finally:
            subprocess.run(["ipcrm", "-M", str(key + 1)], check=True)
        assert wait_status(oci, "pause", "running")
        oci("kill", "pause", "KILL", check=True)
        wait_status(oci, "pause", "stopped")
        oci("delete", "pause", check=True)
    finally:
        shutil.rmtree(second, ignore_errors=True)


def test_a_pods_containers_share_one_id_range_while_any_of_them_lives(oci, bundle, capsule_home, tmp_path):
    """A container that joins a pod's namespaces runs on the pause container's host id range,
    which stays theirs while either lives: a container started after the pause is gone gets
    another, and the range is free again once the last of the pod is gone."""
    set_config(bundle, args=["sleep", "1000"])
    second = bundle + "-second"
    shutil.copytree(bundle, second, symlinks=True)
    slots = os.path.join(capsule_home, "slots")

    def uid_map(cid):
        r = oci("exec", cid, "cat", "/proc/self/uid_map")
        assert r.returncode == 0, r.stderr
        return r.stdout.split()

    def start(path, cid):
        with open(tmp_path / f"{cid}.out", "w") as out:
            r = oci("run", "--detach", "--bundle", path, cid, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                    capture_output=False)
        assert r.returncode == 0, (tmp_path / f"{cid}.out").read_text()
        wait_status(oci, cid, "running")
    try:
        start(bundle, "pause")
        monitor = state(oci, "pause")["pid"]
        edit_config(second, lambda c: set_ns_path(c, "ipc", f"/proc/{monitor}/ns/ipc"))
        start(second, "app")
        pod_ids = uid_map("pause")
        assert uid_map("app") == pod_ids and pod_ids[1] != "0", pod_ids
        slot = str((int(pod_ids[1]) - 1000000000) // 65536)  # home.c: the range of slot N
        assert os.readlink(os.path.join(slots, slot)) == "pause"
        assert os.listdir(os.path.join(slots, f"{slot}.shared")) == ["app"]
        oci("kill", "pause", "KILL", check=True)
        wait_status(oci, "pause", "stopped")
        oci("delete", "pause", check=True)
        # The pause is gone; its range is still the app's, and no new sandbox gets it.
        assert os.path.islink(os.path.join(slots, slot)) and os.listdir(os.path.join(slots, f"{slot}.shared"))
        set_config(bundle, args=["sleep", "1000"])
        start(bundle, "other")
        assert uid_map("other")[1] != pod_ids[1] and uid_map("app") == pod_ids
        for cid in ("app", "other"):
            oci("kill", cid, "KILL", check=True)
            wait_status(oci, cid, "stopped")
            oci("delete", cid, check=True)
        assert not os.path.lexists(os.path.join(slots, slot)) and not os.path.exists(os.path.join(slots, f"{slot}.shared"))
    finally:
        shutil.rmtree(second, ignore_errors=True)


def test_a_pods_pid_namespace_is_shared_through_the_pause_monitor(oci, bundle, tmp_path):
    """shareProcessNamespace as containerd's CRI asks for it: the other containers' specs name
    the pause container's pid namespace as /proc/PID/ns/pid of the pause's monitor. They see
    the pause's processes and each other's, and may signal them (one host id range); each
    keeps its own exit status; a container's processes end with it, the pod's go on; the pod's
    PID 1 is the pause's agent, and its end ends every container of the pod."""
    set_config(bundle, args=["sleep", "1000"])
    second = bundle + "-second"
    shutil.copytree(bundle, second, symlinks=True)

    def detached(path, cid):
        with open(tmp_path / "out", "w") as out:
            r = oci("run", "--detach", "--bundle", path, cid, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                    capture_output=False)
        assert r.returncode == 0, (tmp_path / "out").read_text()
        wait_status(oci, cid, "running")
    # The pids of the processes whose command line is $1 (busybox's sh drops the NULs).
    find = 'for d in /proc/[0-9]*; do [ "$(cat $d/cmdline 2>/dev/null)" = "$1" ] && echo ${d#/proc/}; done'
    try:
        detached(bundle, "pause")
        monitor = state(oci, "pause")["pid"]
        edit_config(second, lambda c: set_ns_path(c, "pid", f"/proc/{monitor}/ns/pid"))
        # A background sleep of the container's own, which must not outlive it.
        set_config(second, args=["sh", "-c", f"find() {{ {find}; }}; sleep 999 & p=$(find sleep1000); "
                                             "echo pause-sleep $p; echo own $$ $!; "
                                             "cat /proc/$p/environ >/dev/null 2>&1 && echo reads environ; "
                                             "ls /proc/$p/root/ >/dev/null 2>&1 && echo reads root; "
                                             "cat /proc/$!/environ >/dev/null && echo reads-own environ; exit 5"])
        r = oci("run", "--bundle", second, "app")
        assert r.returncode == 5, r.stdout + r.stderr
        lines = dict(line.split(" ", 1) for line in r.stdout.splitlines())
        assert lines["pause-sleep"].strip().isdigit(), r.stdout
        # The pod's PID 1 is the pause's agent: this container's processes are not PID 1.
        assert all(int(p) > 2 for p in lines["own"].split()), r.stdout
        # Seen, not entered: another container's environment and root are no business of its
        # (they need capabilities in the other's user namespace).
        assert "reads" not in lines and "reads-own" in lines, r.stdout
        # A vm's processes are its guest kernel's: refused before the guest boots.
        edit_config(second, lambda c: (c.update(annotations={"capsule.isolation": "vm"}),
                                       c["process"].update(terminal=False)))
        r = oci("create", "--bundle", second, "vm-app")
        assert r.returncode == 1 and "joining the pid namespace '/proc/" in r.stderr and \
            "is not supported at the vm level: a vm's processes are its guest kernel's" in r.stderr, r.stderr
        edit_config(second, lambda c: c.pop("annotations"))
        set_config(second, args=["sleep", "1001"])
        detached(second, "victim")
        # The app's background sleep ended with it; one container kills another's process.
        set_config(second, args=["sh", "-c", f"find() {{ {find}; }}; find sleep999; v=$(find sleep1001); kill $v; "
                                             "echo killed $v"])
        r = oci("run", "--bundle", second, "killer")
        assert r.returncode == 0 and r.stdout.split()[0] == "killed" and r.stdout.split()[1].isdigit(), \
            r.stdout + r.stderr
        wait_status(oci, "victim", "stopped")
        assert state(oci, "pause")["status"] == "running"
        # The pod's PID 1 ends: so does every process of the pod, another container's too.
        set_config(second, args=["sleep", "1002"])
        detached(second, "last")
        oci("kill", "pause", "KILL", check=True)
        wait_status(oci, "pause", "stopped")
        wait_status(oci, "last", "stopped")
        for cid in ("pause", "victim", "last"):
            oci("delete", cid, check=True)
    finally:
        shutil.rmtree(second, ignore_errors=True)


def test_hooks_run_on_the_host_with_the_state_on_stdin(oci, bundle, tmp_path):
    """prestart and createRuntime at create, poststart at start, poststop at delete, each given
    the state JSON; a failing or slow prestart hook fails the create and leaves nothing."""
    log = tmp_path / "hooks"

    def hook(kind):
        return {"path": "/bin/sh", "args": ["sh", "-c", f'echo "{kind} $(cat)" >> {log}'], "env": ["A=1"]}
    set_config(bundle, args=["sleep", "1000"])
    edit_config(bundle, lambda c: c.update(hooks={k: [hook(k)] for k in ("prestart", "createRuntime", "poststart",
                                                                          "poststop")}))

    def lines():
        return [(l.split(" ", 1)[0], json.loads(l.split(" ", 1)[1])) for l in log.read_text().splitlines()]
    out = open(tmp_path / "out", "w+")
    r = oci("create", "--bundle", bundle, "h1", stdout=out, stderr=out, stdin=subprocess.DEVNULL, capture_output=False)
    assert r.returncode == 0, out.read()
    got = lines()
    assert [k for k, _ in got] == ["prestart", "createRuntime"]
    assert all(s["id"] == "h1" and s["status"] == "creating" and s["bundle"] == bundle and s["pid"] > 0
               for _, s in got), got
    assert oci("start", "h1").returncode == 0
    assert [(k, s["status"]) for k, s in lines()[2:]] == [("poststart", "running")]
    assert oci("kill", "h1", "KILL").returncode == 0
    wait_status(oci, "h1", "stopped")
    assert oci("delete", "h1").returncode == 0
    assert [(k, s["status"]) for k, s in lines()[3:]] == [("poststop", "stopped")]

    for h, message in (({"path": "/bin/sh", "args": ["sh", "-c", "exit 3"]},
                        "hooks.prestart[0]: '/bin/sh' exited with 3"),
                       ({"path": "/bin/sh", "args": ["sh", "-c", "sleep 30"], "timeout": 1},
                        "hooks.prestart[0]: '/bin/sh' timed out after 1 s")):
        edit_config(bundle, lambda c: c.update(hooks={"prestart": [h]}))
        r = oci("create", "--bundle", bundle, "h2", stdin=subprocess.DEVNULL)
        assert r.returncode == 1 and r.stderr == f"capsule-oci: {message}\n", r.stderr
        assert os.listdir(oci.root) == []


def test_default_specs_of_podman_and_containerd_are_accepted(oci, bundle):
    """What every podman and containerd spec carries: a deny-all device rule with their allow
    list, runtime-tools' seccomp-style profile, the masked and read-only paths, rlimits and
    the cgroup mount."""
    def podman_like(cfg):
        cfg["linux"]["resources"]["devices"] = [
            {"allow": False, "access": "rwm"},
            {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
            {"allow": True, "type": "c", "major": 136, "access": "rwm"},
        ]
        cfg["linux"]["maskedPaths"] = ["/proc/acpi", "/proc/kcore", "/proc/keys", "/sys/firmware", "/proc/scsi"]
        cfg["linux"]["readonlyPaths"] = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        cfg["mounts"].append({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                              "options": ["ro", "nosuid", "noexec", "nodev"]})
        cfg["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 1024},
                                     {"type": "RLIMIT_NPROC", "soft": 4096, "hard": 4096}]
        cfg["process"]["oomScoreAdj"] = 0
        # A spec may list the nodes capsule's /dev has (docker's privileged-less defaults).
        cfg["linux"]["devices"] = [{"path": "/dev/null", "type": "c", "major": 1, "minor": 3, "fileMode": 438,
                                    "uid": 0, "gid": 0}, {"path": "/dev/tty", "type": "c", "major": 5, "minor": 0}]
        cfg["process"]["args"] = ["true"]
        cfg["process"]["terminal"] = False
    edit_config(bundle, podman_like)
    os.symlink("busybox", os.path.join(bundle, "rootfs", "bin", "true"))
    r = oci("run", "--bundle", bundle, "p1")
    assert r.returncode == 0, r.stderr


@pytest.mark.skipif(not shutil.which("runc"), reason="runc is not installed (scripts/install-deps)")
def test_runcs_default_spec_runs(oci, bundle):
    """`runc spec` as it comes: its ambient capabilities, with no inheritable set, are left out
    as runc leaves them (the kernel raises none of them), and it asks for no_new_privs."""
    os.remove(os.path.join(bundle, "config.json"))
    subprocess.run([shutil.which("runc"), "spec"], cwd=bundle, check=True)
    set_config(bundle, args=["sh", "-c", "grep -E '^(CapInh|CapEff|CapAmb|NoNewPrivs):' /proc/self/status"])
    r = oci("run", "--bundle", bundle, "rs1")
    assert r.returncode == 0, r.stderr
    status = dict(line.split(":\t") for line in r.stdout.strip().split("\n"))
    assert int(status["CapEff"], 16) == (1 << 29) | (1 << 5) | (1 << 10)
    assert int(status["CapInh"], 16) == int(status["CapAmb"], 16) == 0 and status["NoNewPrivs"] == "1"


def test_pause_freezes_the_container_and_resume_thaws_it(oci, bundle, tmp_path):
    """The process counts while running; paused, the count stands still and state says
    "paused"; exec is refused; resumed, it counts on; a paused container is killed whole."""
    set_config(bundle, args=["sh", "-c", "i=0; while :; do i=$((i+1)); echo $i > /tmp/n; sleep 0.02; done"])
    out = open(tmp_path / "out", "w+")
    r = oci("run", "--detach", "--bundle", bundle, "p1", stdout=out, stderr=out, stdin=subprocess.DEVNULL,
            capture_output=False)
    assert r.returncode == 0, out.read()
    wait_status(oci, "p1", "running")

    # The count is read from the host through the shell's root.
    def shell():
        for p in json.loads(oci("ps", "--format", "json", "p1", check=True).stdout):
            with open(f"/proc/{p}/comm") as f:
                if f.read().strip() == "sh":
                    return p
    deadline = time.monotonic() + 10
    while not (pid := shell()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pid

    def count():
        try:
            with open(f"/proc/{pid}/root/tmp/n") as f:
                return int(f.read() or 0)
        except FileNotFoundError:
            return 0

    def advances():
        before = count()
        deadline = time.monotonic() + 1
        while time.monotonic() < deadline:
            if count() != before:
                return True
            time.sleep(0.05)
        return False

    assert advances()
    r = oci("resume", "p1")
    assert r.returncode == 1 and "container 'p1' is running, not paused" in r.stderr
    assert oci("pause", "p1").returncode == 0
    assert state(oci, "p1")["status"] == "paused"
    assert not advances()
    r = oci("exec", "p1", "true")
    assert r.returncode == 1 and "paused" in r.stderr, r.stderr
    r = oci("pause", "p1")
    assert r.returncode == 1 and "container 'p1' is paused, not running" in r.stderr
    assert oci("resume", "p1").returncode == 0
    assert state(oci, "p1")["status"] == "running"
    assert advances()
    # Paused again, a kill ends it: the monitor is awake and takes the sandbox with it.
    assert oci("pause", "p1").returncode == 0
    assert oci("kill", "p1", "KILL").returncode == 0
    wait_status(oci, "p1", "stopped")
    assert oci("delete", "p1").returncode == 0


def test_verbs_not_built_yet_are_refused_clearly(oci):
    for verb, what in (("checkpoint", "checkpoint is not supported"), ("restore", "restore is not supported")):
        r = oci(verb, "x")
        assert r.returncode == 1 and what in r.stderr, r.stderr
    r = oci("--systemd-cgroup", "state", "x")
    assert r.returncode == 1 and "--systemd-cgroup is not supported" in r.stderr


def test_version_features_and_json_log(oci, tmp_path):
    r = oci("--version", check=True)
    assert r.stdout.startswith("capsule-oci version ")
    usage = oci("--help", check=True).stdout
    assert "  update [--resources FILE|-]" in usage and "  events [--stats]" in usage
    features = json.loads(oci("features", check=True).stdout)
    assert "pid" in features["linux"]["namespaces"] and features["linux"]["seccomp"]["enabled"]
    log = tmp_path / "log.json"
    r = oci("--log", str(log), "--log-format", "json", "state", "nope")
    assert r.returncode == 1
    line = json.loads(log.read_text().strip().split("\n")[-1])
    assert line["level"] == "error" and "container 'nope' does not exist" in line["msg"]


def test_events_give_runcs_stats_and_an_oom_event(oci, bundle, tmp_path):
    """--stats prints one stats event in runc's shape with the limits of the spec; the stream
    reports an oom event when a process of the container is killed at its memory limit."""
    run_detached_limited(oci, bundle, tmp_path, "ev1", ["sh", "-c", "while [ ! -e /tmp/go ]; do sleep 0.05; done; "
                                                                  "(a=$(yes)); sleep 60"],
                         memory={"limit": 32 << 20}, pids={"limit": 50})
    ev = json.loads(oci("events", "--stats", "ev1", check=True).stdout)
    assert ev["type"] == "stats" and ev["id"] == "ev1"
    d = ev["data"]
    assert d["memory"]["usage"]["limit"] == 32 << 20 and d["memory"]["usage"]["usage"] > 0
    assert d["pids"]["limit"] == 50 and d["pids"]["current"] >= 1
    assert d["cpu"]["usage"]["total"] >= 0 and d["blkio"]["ioServiceBytesRecursive"] is not None
    assert any(i["name"] == "lo" for i in d["network_interfaces"])

    stream = subprocess.Popen([OCI, "--root", oci.root, "events", "--interval", "100ms", "ev1"], env=oci.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = json.loads(stream.stdout.readline())
        assert first["type"] == "stats"
        oci("exec", "ev1", "touch", "/tmp/go", check=True)
        deadline = time.monotonic() + 30
        seen = []
        while time.monotonic() < deadline:
            line = stream.stdout.readline()
            if not line:
                break
            seen.append(json.loads(line)["type"])
            if seen[-1] == "oom":
                break
        assert "oom" in seen, seen
        # The stream goes on after it, and the cpu the filling took is counted.
        after = json.loads(stream.stdout.readline())
        assert after["type"] == "stats" and after["data"]["cpu"]["usage"]["total"] > 0
    finally:
        oci("kill", "ev1", "KILL")
        wait_status(oci, "ev1", "stopped")
        stream.wait(timeout=30)
    assert stream.returncode == 0
    oci("delete", "ev1", check=True)


@pytest.mark.parametrize("args,message", [
    (["events", "--interval", "0s", "x"], "events --interval '0s': a duration above zero"),
    (["events", "--interval", "5 parsecs", "x"], "events --interval '5 parsecs'"),
    (["events", "nope"], "nope"),
])
def test_events_errors(oci, args, message):
    r = oci(*args)
    assert r.returncode == 1 and message in r.stderr and r.stderr.count("\n") == 1, r.stderr


def cgroup_file(oci, cid, controller, name):
    """The value of a cgroup file of the container, through its first process's cgroup."""
    return cgroup_file_of(json.loads(oci("ps", "--format", "json", cid, check=True).stdout)[0], controller, name)


def cgroup_file_of(pid, controller, name):
    """The value of a cgroup file of process PID's cgroup (v1: the controller's hierarchy; v2:
    the one hierarchy)."""
    with open(f"/proc/{pid}/cgroup") as f:
        lines = [line.rstrip("\n").split(":", 2) for line in f]
    for _, ctrls, path in lines:
        if controller in ctrls.split(","):
            base = glob.glob(f"/sys/fs/cgroup/*{controller}*/")
            base = [b for b in base if controller in os.path.basename(b.rstrip("/")).split(",")]
            return open(f"{base[0]}{path}/{name}").read().strip()
    path = [p for _, c, p in lines if c == ""][0]
    return open(f"/sys/fs/cgroup{path}/{name}").read().strip()


def test_update_gives_a_cpuset_to_a_container_made_without_one(oci, bundle, tmp_path):
    """runc update --cpuset-cpus, and the same as a resources object on stdin (containerd's
    shim, for the kubelet's cpu manager), of a container made without a cpuset: its processes
    move onto the new cpus, and so does the monitor, which joins its container's cpuset as it
    does when the container is made with one (the cpus are read through its pid)."""
    run_detached_limited(oci, bundle, tmp_path, "cs1", ["sh", "-c", "sleep 1000 & wait"], pids={"limit": 100})
    try:
        oci("update", "--resources", "-", "cs1", input='{"cpu": {"cpus": "0"}}', check=True)
        pids = [int(p) for p in json.loads(oci("ps", "--format", "json", "cs1", check=True).stdout)]
        assert len(pids) == 2
        for pid in pids:
            with open(f"/proc/{pid}/status") as f:
                assert "Cpus_allowed_list:\t0\n" in f.read()
        assert cgroup_file(oci, "cs1", "cpuset", "cpuset.cpus") == "0"
        if not V2:
            def procs(ctrl):
                return set(cgroup_file(oci, "cs1", ctrl, "cgroup.procs").split())
            # pids: the agent and the container's; memory: those and the monitor.
            assert {str(p) for p in pids} < procs("pids") < procs("memory") == procs("cpuset")
            monitor = procs("memory") - procs("pids")
            assert len(monitor) == 1 and cgroup_file_of(monitor.pop(), "cpuset", "cpuset.cpus") == "0"
    finally:
        oci("delete", "--force", "cs1")


def test_update_changes_a_running_containers_limits(oci, bundle, tmp_path):
    """runc's flags and a resources object (as containerd passes it on stdin) change memory,
    cpu and pids limits of the running container; a bad value changes nothing."""
    run_detached_limited(oci, bundle, tmp_path, "up1", ["sleep", "1000"], memory={"limit": 64 << 20},
                         pids={"limit": 100})

    def limits():
        d = json.loads(oci("events", "--stats", "up1", check=True).stdout)["data"]
        return d["memory"]["usage"]["limit"], d["pids"]["limit"]

    assert limits() == (64 << 20, 100)
    oci("update", "--memory", "96m", "--pids-limit", "200", "--cpu-period", "50000", "--cpu-quota", "25000",
        "--cpu-share", "512", "up1", check=True)
    assert limits() == (96 << 20, 200)
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        assert cgroup_file(oci, "up1", "cpu", "cpu.max") == "25000 50000"
    else:
        assert cgroup_file(oci, "up1", "cpu", "cpu.cfs_quota_us") == "25000"
        assert cgroup_file(oci, "up1", "cpu", "cpu.cfs_period_us") == "50000"
        assert cgroup_file(oci, "up1", "cpu", "cpu.shares") == "512"
        assert cgroup_file(oci, "up1", "memory", "memory.memsw.limit_in_bytes") == str(96 << 20)

    # containerd's shim: the spec's resources on stdin (cpuset strings empty, as the CRI sends).
    # The device rules of create come back with it, unchanged.
    res = {"memory": {"limit": 48 << 20, "swap": 48 << 20}, "cpu": {"shares": 1024, "quota": -1, "period": 100000,
                                                                     "cpus": "", "mems": ""},
           "pids": {"limit": 300}, "devices": [{"allow": False, "access": "rwm"}]}
    oci("update", "--resources", "-", "up1", input=json.dumps(res), check=True)
    assert limits() == (48 << 20, 300)
    path = tmp_path / "res.json"
    path.write_text(json.dumps({"pids": {"limit": -1}}))
    oci("update", "-r", str(path), "up1", check=True)
    assert limits() == (48 << 20, 0)

    # The kernel refuses a limit below what cannot be reclaimed: nothing else changes either.
    r = oci("update", "--memory", "4m", "--pids-limit", "77", "up1")
    if r.returncode == 0:
        # It could reclaim down to 4 MiB: then both changed.
        assert limits() == (4 << 20, 77)
    else:
        assert "memory" in r.stderr and r.stderr.count("\n") == 1, r.stderr
        assert limits() == (48 << 20, 0)
    oci("delete", "--force", "up1", check=True)


@pytest.mark.parametrize("args,stdin,message", [
    (["--memory", "lots"], None, "update --memory 'lots': a size such as 512m"),
    (["--memory", "1m"], None, "memory 1048576 bytes: at least 4 MiB"),
    (["--cpu-share", "1"], None, "cpu shares 1: 2 to 262144"),
    (["--cpu-period", "100"], None, "cpu period 100 us: 1000 to 1000000"),
    (["--pids-limit", "x"], None, "update --pids-limit 'x': an integer"),
    (["--memory-swap", "128m"], None, "update --memory-swap 128m: needs --memory (swap is memory + swap)"),
    (["--memory", "64m", "--memory-swap", "32m"], None,
     "memory swap 33554432: memory + swap, given with a memory limit and not below it"),
    (["--cpuset-mems", "x"], None, "cpuset mems 'x': a list such as 0-3,6"),
    (["--kernel-memory", "1m"], None, "update --kernel-memory is not supported: the kernel no longer enforces it"),
    (["--resources", "-"], '{"blockIO": {"weight": 10}}', "blockIO is not supported by capsule-oci update"),
    (["--resources", "-"], '{"memory": {"limit": 67108864, "swap": 1}}', "memory swap 1: memory + swap"),
    (["--resources", "-"], '[1]', "the resources are not a JSON object"),
    (["--resources", "-"], '{"devices": [{"allow": true, "access": "rwm"}]}',
     "devices: the device rules are the container's since create, and cannot change"),
    ([], None, "update: no limit to change given"),
])
def test_update_errors_name_what_is_wrong_and_change_nothing(oci, bundle, tmp_path, args, stdin, message):
    run_detached_limited(oci, bundle, tmp_path, "up2", ["sleep", "1000"], memory={"limit": 64 << 20},
                         pids={"limit": 100})
    r = oci("update", *args, "up2", input=stdin or "")
    assert r.returncode == 1 and message in r.stderr and r.stderr.count("\n") == 1, r.stderr
    d = json.loads(oci("events", "--stats", "up2", check=True).stdout)["data"]
    assert (d["memory"]["usage"]["limit"], d["pids"]["limit"]) == (64 << 20, 100)
    oci("delete", "--force", "up2", check=True)


# ---- --preserve-fds ------------------------------------------------------------------------


def run_with_fds(oci, fds, *args, background=False):
    """capsule-oci ARGS with FDS as its 3, 4, ...; BACKGROUND: a verb that leaves a monitor
    behind, which holds its stdio."""
    return run_with_fds_as_3_up([OCI, "--root", oci.root, *args], fds, oci.env, background=background)


def test_preserve_fds_reach_run_as_3_and_4_and_no_fd_above(oci, bundle):
    """runc's --preserve-fds 2: capsule-oci's fds 3 and 4 (two pipes, so the order shows) are the
    process's 3 and 4; its fd 5 (a folder of the host's, which would be a way out) is not
    passed, nor anything else."""
    set_config(bundle, args=["sh", "-c", FDS_PROBE])
    r, three, four = run_fds_probe(
        lambda fds: run_with_fds(oci, fds, "run", "--preserve-fds", "2", "--bundle", bundle, "pf1"))
    assert r.returncode == 0, r.stderr
    assert r.stdout == "done\n"
    assert (three, four) == ("three\n", "four\n")
    assert os.listdir(oci.root) == []


def test_preserve_fds_through_create_and_start_and_exec(oci, bundle, tmp_path):
    """create holds the descriptors until start gives them to the process, and lets go of them:
    once the process closes its copy the pipe ends, while the container still runs. exec passes
    its own."""
    set_config(bundle, args=["sh", "-c", "echo started >&3; exec 3>&-; exec sleep 1000"])
    r3, w3 = os.pipe()
    try:
        r = run_with_fds(oci, [w3], "create", "--preserve-fds", "1", "--bundle", bundle, "pf2", background=True)
        os.close(w3)
        assert r.returncode == 0, r.stderr
        assert oci("start", "pf2").returncode == 0
        assert read_to_eof(r3) == "started\n"
        assert state(oci, "pf2")["status"] == "running"
    finally:
        os.close(r3)
    r, three, four = run_fds_probe(
        lambda fds: run_with_fds(oci, fds, "exec", "--preserve-fds", "2", "pf2", "sh", "-c", FDS_PROBE))
    assert r.returncode == 0, r.stderr
    assert r.stdout == "done\n"
    assert (three, four) == ("three\n", "four\n")
    # Detached too: the descriptors are the process's, not the caller's.
    r3, w3 = os.pipe()
    try:
        r = run_with_fds(oci, [w3], "exec", "--detach", "--preserve-fds", "1", "pf2", "sh", "-c", "echo bg >&3",
                         background=True)
        os.close(w3)
        assert r.returncode == 0, r.stderr
        assert read_to_eof(r3) == "bg\n"
    finally:
        os.close(r3)
    assert oci("delete", "--force", "pf2").returncode == 0


@pytest.mark.parametrize("value,nfds,message", [
    ("-1", 0, "--preserve-fds -1: a count of descriptors cannot be negative"),
    ("two", 0, "--preserve-fds 'two': not a number"),
    ("", 0, "--preserve-fds '': not a number"),
    ("65", 0, "--preserve-fds 65: at most 64 descriptors can be passed"),
    ("2", 1, "--preserve-fds 2: descriptor 4 is not open"),
])
def test_preserve_fds_errors_name_what_is_wrong_and_leave_nothing(oci, bundle, value, nfds, message):
    set_config(bundle, args=["true"])
    fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(nfds)]
    try:
        for verb in ("run", "create"):
            r = run_with_fds(oci, fds, verb, "--preserve-fds", value, "--bundle", bundle, "pfe", background=True)
            assert r.returncode == 1 and r.stderr == f"capsule-oci: {message}\n", r.stderr
        r = run_with_fds(oci, fds, "exec", "--preserve-fds", value, "pfe", "true")
        assert r.returncode == 1 and r.stderr == f"capsule-oci: {message}\n", r.stderr
    finally:
        for fd in fds:
            os.close(fd)
    assert os.listdir(oci.root) == []


def test_preserve_fds_in_a_vm_is_refused_naming_why(oci, bundle):
    """A vm's agent is behind virtio-serial: no descriptor crosses it. Refused before a boot."""
    set_config(bundle, args=["true"])
    edit_config(bundle, lambda c: c.update(annotations={"capsule.isolation": "vm"}))
    fd = os.open("/dev/null", os.O_RDONLY)
    try:
        r = run_with_fds(oci, [fd], "run", "--preserve-fds", "1", "--bundle", bundle, "pfv")
    finally:
        os.close(fd)
    assert r.returncode == 1
    assert r.stderr == ("capsule-oci: --preserve-fds: descriptors cannot reach a container run with "
                        "capsule.isolation=vm (its agent is reached over virtio-serial, which carries bytes only)\n")
    assert os.listdir(oci.root) == []
