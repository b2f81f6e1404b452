"""podman (Debian's 4.3) with --runtime capsule-oci: conmon is the subreaper that waits for the
monitor's pid, and drives create, start, state, kill, delete and exec as it drives runc
(docs/oci.md). Each test's podman has its own --root, --runroot and containers.conf
(default_ulimits = []: root here lacks CAP_SYS_RESOURCE, so podman's default nofile ulimit
fails with any runtime; the cgroupfs manager: capsule-oci refuses --systemd-cgroup). Its
image is imported from a busybox folder: nothing is pulled. Most tests use --network none;
one uses podman's default network (the CNI bridge Debian's podman 4.3 configures in
/etc/cni/net.d): podman makes the network namespace, capsule-oci's sandbox joins it by path, and
a port published on the host's loopback reaches the container.

Each test runs at both levels: the vm level is podman's `--annotation capsule.isolation=vm`,
as Kata takes its annotation. A vm boots a kernel (seconds under TCG): the vm halves run in
`make check-vm` (vm_slow), except the exit code's and -it's, which `make check` runs too."""
import glob
import http.server
import os
import select
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request

import pytest

from tests.conftest import BUILD, _agent_is_static, _env
from .helpers import FDS_PROBE, answering, level_args, levels, run_fds_probe, run_with_fds_as_3_up

from .test_oci import cgroup_file_of

OCI = os.path.join(BUILD, "capsule-oci")
PODMAN = shutil.which("podman")

pytestmark = [
    pytest.mark.plain_build_only,
    pytest.mark.skipif(not _agent_is_static(), reason="the image holds busybox alone: a sanitizer build's "
                       "dynamic agent could not run in it"),
]


@pytest.fixture(scope="module")
def podman(capsule_home):
    assert PODMAN, "podman is not installed (scripts/install-deps)"
    top = tempfile.mkdtemp(prefix="capsule-oci-podman-", dir="/var/tmp")
    conf = os.path.join(top, "containers.conf")
    with open(conf, "w") as f:
        f.write('[containers]\ndefault_ulimits = []\n[engine]\ncgroup_manager = "cgroupfs"\n'
                'events_logger = "file"\n')
    env = _env(capsule_home, {"CONTAINERS_CONF": conf})
    # Its own --tmpdir too: the default, /run/libpod, is every podman's on the host, and another
    # one's `system reset` there makes this one "refresh" its containers mid-test.
    base = [PODMAN, "--root", os.path.join(top, "storage"), "--runroot", os.path.join(top, "run"),
            "--tmpdir", os.path.join(top, "tmp"), "--runtime", OCI, "--storage-driver", "vfs"]

    def run(*args, timeout=120, **kw):
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(base + list(args), env=env, timeout=timeout, **kw)

    rootfs = os.path.join(top, "rootfs")
    os.makedirs(os.path.join(rootfs, "bin"))
    os.makedirs(os.path.join(rootfs, "etc"))
    shutil.copy("/bin/busybox", os.path.join(rootfs, "bin", "busybox"))
    for tool in ("sh", "echo", "cat", "ls", "id", "sleep", "true", "httpd", "mkdir", "wget"):
        os.symlink("busybox", os.path.join(rootfs, "bin", tool))
    with open(os.path.join(rootfs, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\n")
    subprocess.run(["tar", "-C", rootfs, "-cf", os.path.join(top, "img.tar"), "."], check=True)
    r = run("import", os.path.join(top, "img.tar"), "localhost/capsule-bb:1")
    assert r.returncode == 0, r.stderr
    run.top = top
    run.base = base
    run.env = env
    yield run
    run("rm", "--all", "--force", "--time", "0")
    run("system", "reset", "--force")
    shutil.rmtree(top, ignore_errors=True)
    # podman's cgroupfs parent and conmon's cgroup in it, left behind with runc too (rmdir:
    # only while empty).
    for hierarchy in {os.path.realpath(p) for p in glob.glob("/sys/fs/cgroup/*/")} | {"/sys/fs/cgroup"}:
        for rel in ("libpod_parent/conmon", "libpod_parent"):
            try:
                os.rmdir(os.path.join(hierarchy, rel))
            except OSError:
                pass


IMAGE = "localhost/capsule-bb:1"


@levels(in_check=True)
def test_run_gives_the_output_and_exit_code(podman, level):
    r = podman("run", "--rm", "--network", "none", *level_args(level), IMAGE, "sh", "-c",
               "echo out; echo err >&2; cat /proc/version; exit 3")
    assert r.returncode == 3, r.stderr
    out, kernel = r.stdout.split("\n", 1)
    assert out == "out" and "err" in r.stderr
    # The host's kernel in a container, the guest's in a vm.
    with open("/proc/version") as f:
        assert (kernel == f.read()) == (level == "container"), kernel


@levels()
def test_run_detached_exec_stop_rm(podman, level):
    r = podman("run", "-d", "--network", "none", "--name", "d1", *level_args(level), IMAGE, "sleep", "1000")
    assert r.returncode == 0, r.stderr
    try:
        r = podman("exec", "d1", "sh", "-c", "echo in-exec; exit 4")
        assert r.returncode == 4 and r.stdout == "in-exec\n", r.stderr
        r = podman("ps", "--format", "{{.Names}} {{.Status}}")
        assert r.stdout.startswith("d1 Up"), r.stdout
        assert podman("stop", "-t", "5", "d1").returncode == 0
        r = podman("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", "d1")
        # sleep dies of the SIGTERM conmon's kill sent: 128 + 15.
        assert r.stdout.split() == ["exited", "143"], r.stdout + r.stderr
    finally:
        assert podman("rm", "--force", "d1").returncode == 0


def test_preserve_fds_reach_run_and_exec(podman):
    """podman's --preserve-fds 2 through conmon to capsule-oci and on to the process: podman's
    fds 3 and 4 (two pipes, so the order shows) are the process's 3 and 4 and its fd 5 is not
    passed, for run and for exec. With capsule.isolation=vm it is refused, naming why."""
    r = podman("run", "-d", "--network", "none", "--name", "pf", IMAGE, "sleep", "1000")
    assert r.returncode == 0, r.stderr
    try:
        for args in (["run", "--rm", "--network", "none", "--preserve-fds", "2", IMAGE],
                     ["exec", "--preserve-fds", "2", "pf"]):
            r, three, four = run_fds_probe(lambda fds: run_with_fds_as_3_up(
                [*podman.base, *args, "sh", "-c", FDS_PROBE], fds, podman.env, timeout=120))
            assert r.returncode == 0, r.stderr
            assert r.stdout == "done\n", r.stdout
            assert (three, four) == ("three\n", "four\n")
    finally:
        assert podman("rm", "--force", "pf").returncode == 0
    fd = os.open("/dev/null", os.O_RDONLY)
    try:
        r = run_with_fds_as_3_up([*podman.base, "run", "--rm", "--network", "none", "--preserve-fds", "1",
                                  *level_args("vm"), IMAGE, "true"], [fd], podman.env, timeout=120)
    finally:
        os.close(fd)
    assert r.returncode != 0
    assert "--preserve-fds: descriptors cannot reach a container run with capsule.isolation=vm" in r.stderr, r.stderr


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@levels()
def test_the_default_network_and_a_published_port(podman, level):
    """podman's own network namespace (its bridge's address on eth0) and -p on the host's
    loopback, served by busybox httpd in the container. At the vm level QEMU runs in that
    namespace: the guest's eth0 is libslirp's, and the published port reaches it through the
    shim's listener in the namespace."""
    port = free_port()
    r = podman("run", "-d", "--name", "w1", "-p", f"127.0.0.1:{port}:8080", *level_args(level), IMAGE, "sh", "-c",
               "mkdir /w; echo hello-$((6*7)) > /w/index.html; exec httpd -f -p 8080 -h /w")
    assert r.returncode == 0, r.stderr
    try:
        r = podman("exec", "w1", "cat", "/proc/net/dev")
        assert r.returncode == 0 and "eth0:" in r.stdout, r.stdout + r.stderr
        body, deadline = None, time.monotonic() + 30
        while body is None:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read()
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert body == b"hello-42\n"
        # Outbound: a server on the bridge's gateway sees the container's own address as the
        # peer, so the traffic left through podman's namespace (from the host's own, a vm's
        # libslirp would have come from the gateway's address itself).
        r = podman("inspect", "--format", "{{.NetworkSettings.IPAddress}} {{.NetworkSettings.Gateway}}", "w1")
        addr, gateway = r.stdout.split()
        server = http.server.HTTPServer((gateway, 0), PeerHandler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            url = f"http://{gateway}:{server.server_address[1]}/"
            r = podman("exec", "w1", "wget", "-Y", "off", "-q", "-O", "-", url)
        finally:
            server.shutdown()
            server.server_close()
        assert r.returncode == 0 and r.stdout == addr, r.stdout + r.stderr
    finally:
        assert podman("rm", "--force", "--time", "0", "w1").returncode == 0


# Answers with the address the request came from.
PeerHandler = answering(lambda handler: handler.client_address[0])


@levels()
def test_a_volume_is_mounted(podman, level):
    """-v: a bind at the container level, a bind over 9p at the vm level."""
    host = os.path.join(podman.top, "vol")
    os.makedirs(host, exist_ok=True)
    with open(os.path.join(host, "f"), "w") as f:
        f.write("from-host")
    r = podman("run", "--rm", "--network", "none", "-v", f"{host}:/mnt:ro", *level_args(level), IMAGE, "sh", "-c",
               "cat /mnt/f; echo x > /mnt/g")
    assert r.stdout == "from-host"
    assert r.returncode != 0 and "Read-only file system" in r.stderr


@levels(in_check=True)
def test_it_through_conmons_console_socket(podman, level):
    """podman run -it: conmon hands capsule-oci a console socket, whose terminal must carry what
    is typed to the shell and its exit code back."""
    cmd = " ".join(podman.base + ["run", "-it", "--rm", "--network", "none", *level_args(level), IMAGE, "sh"])
    # script(1) gives podman the terminal a person would have.
    p = subprocess.Popen(["script", "-qec", cmd, "/dev/null"], env=podman.env, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = b""
    deadline = time.monotonic() + 60
    # Typed once the shell's prompt is there, as a person would.
    while b"# " not in out and time.monotonic() < deadline:
        if select.select([p.stdout], [], [], 0.5)[0]:
            chunk = os.read(p.stdout.fileno(), 4096)
            if not chunk:
                break
            out += chunk
    rest, _ = p.communicate(b"echo typed-$((6*7))\nexit 5\n", timeout=120)
    out += rest
    assert p.returncode == 5, out
    assert b"typed-42" in out


def test_update_changes_the_limits_podman_reads(podman):
    """podman update hands capsule-oci the new resources (update --resources FILE); podman
    reads the container's cgroup (its cgroupsPath, where capsule puts the sandbox's) itself."""
    r = podman("run", "-d", "--network", "none", "--name", "u1", "--pids-limit", "100", IMAGE, "sleep", "1000")
    assert r.returncode == 0, r.stderr
    try:
        r = podman("update", "--memory", "96m", "--memory-swap", "96m", "--cpus", "0.5", "u1")
        assert r.returncode == 0, r.stderr
        pid = int(podman("inspect", "--format", "{{.State.Pid}}", "u1").stdout)
        v2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
        assert cgroup_file_of(pid, "memory", "memory.max" if v2 else "memory.limit_in_bytes") == str(96 << 20)
        if v2:
            assert cgroup_file_of(pid, "cpu", "cpu.max") == "50000 100000"
        else:
            assert cgroup_file_of(pid, "cpu", "cpu.cfs_quota_us") == "50000"
        # A cpuset for a container made without one: its process moves onto the new cpus.
        r = podman("update", "--cpuset-cpus", "0", "u1")
        assert r.returncode == 0, r.stderr
        with open(f"/proc/{pid}/status") as f:
            assert "Cpus_allowed_list:\t0\n" in f.read()
    finally:
        assert podman("rm", "--force", "--time", "0", "u1").returncode == 0
