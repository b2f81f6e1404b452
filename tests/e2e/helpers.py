"""Helpers shared by the end-to-end tests: what the host sees of a sandbox."""
import fcntl
import glob
import http.server
import importlib.util
import os
import re
import select
import subprocess
import tempfile
import time

import pytest

CGROUP_ROOT = "/sys/fs/cgroup"
CONTROLLERS = ("memory", "pids", "cpu")

# The suite's root helpers (tests/conftest.py), for what the host offers a vm.
_spec = importlib.util.spec_from_file_location(
    "capsule_tests_root_conftest", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conftest.py"))
_root = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_root)
host_kvm = _root.host_kvm
assert_accel_as_the_host_allows = _root.assert_accel_as_the_host_allows
guest_kernel = _root.guest_kernel
BUILD = _root.BUILD
host_guest_kernel = _root.host_guest_kernel
settled_run_entries = _root.settled_run_entries
paused_at = _root.paused_at


def run_dir(capsule, name):
    return os.path.join(capsule.home, "run", name)


def run_entries(capsule):
    return settled_run_entries(os.path.join(capsule.home, "run"))


def cgroup_v2_only():
    """A unified host (cgroup v2 with its controllers at /sys/fs/cgroup), as Debian 12's
    default; else the v1 or hybrid layout, with one hierarchy per controller."""
    return os.path.exists(os.path.join(CGROUP_ROOT, "cgroup.controllers"))


def cgroup_dirs(name, controllers=CONTROLLERS):
    """The sandbox's cgroup folders, <name>~<8 hex>.<8 hex> (<name>.<8 hex> for a sandbox made
    without a cgroup_base) below a "capsule" folder: on v1 one per controller
    (<controller>/capsule/...), on v2 the one folder whatever CONTROLLERS asks (capsule/... at
    the root, or below the caller's own cgroup where it was delegated), but for "cpuset" alone:
    there the folder only when it has cpus or memory nodes of its own, as a sandbox has a cpuset
    cgroup only once it asks for one (its parent may give every child the controller once one
    asked, each with empty sets: its parent's)."""
    pat = re.compile(re.escape(name) + r"(~[0-9a-f]{8})?\.[0-9a-f]{8}$")
    if cgroup_v2_only():
        globs = [os.path.join(CGROUP_ROOT, "**", "capsule", name + "[.~]*")]
    else:
        globs = [os.path.join(CGROUP_ROOT, c, "capsule", name + "[.~]*") for c in controllers]
        # A hybrid host's controller-less v2 tree, should anything be made there.
        globs.append(os.path.join(CGROUP_ROOT, "unified", "**", "capsule", name + "[.~]*"))
    found = []
    for g in globs:
        for path in glob.glob(g, recursive=True):
            if pat.match(os.path.basename(path)) and os.path.isdir(path) and path not in found:
                found.append(path)
    if cgroup_v2_only() and tuple(controllers) == ("cpuset",):
        found = [p for p in found if _v2_own_cpuset(p)]
    return found


def _v2_own_cpuset(path):
    try:
        return any(read_file(os.path.join(path, f)) for f in ("cpuset.cpus", "cpuset.mems"))
    except FileNotFoundError:
        return False


def cgroup_limit(name, what):
    """A limit as the sandbox's cgroup holds it, in v1 terms on either layout: "memory"
    (bytes, or -1 for none), "pids" ("max" or a number), "cpu" ((quota_us or -1, period_us))."""
    if cgroup_v2_only():
        d = cgroup_dir(name, what)
        if what == "memory":
            v = read_file(os.path.join(d, "memory.max"))
            return -1 if v == "max" else int(v)
        if what == "pids":
            return read_file(os.path.join(d, "pids.max"))
        quota, period = read_file(os.path.join(d, "cpu.max")).split()
        return (-1 if quota == "max" else int(quota), int(period))
    if what == "memory":
        v = int(read_file(os.path.join(cgroup_dir(name, "memory"), "memory.limit_in_bytes")))
        return -1 if v >= 1 << 62 else v
    if what == "pids":
        return read_file(os.path.join(cgroup_dir(name, "pids"), "pids.max"))
    cpu = cgroup_dir(name, "cpu")
    return (int(read_file(os.path.join(cpu, "cpu.cfs_quota_us"))), int(read_file(os.path.join(cpu, "cpu.cfs_period_us"))))


def cgroup_finer(name):
    """The sandbox's cpuset cpus and mems, memory limit, memory + swap (None on v2, which keeps
    swap alone) and soft limit, as its cgroup holds them."""
    v2 = cgroup_v2_only()

    def f(ctrl, v1, v2name):
        return read_file(os.path.join(cgroup_dir(name, ctrl), v2name if v2 else v1))
    return (f("cpuset", "cpuset.cpus", "cpuset.cpus"), f("cpuset", "cpuset.mems", "cpuset.mems"),
            int(f("memory", "memory.limit_in_bytes", "memory.max")),
            None if v2 else int(f("memory", "memory.memsw.limit_in_bytes", "")),
            int(f("memory", "memory.soft_limit_in_bytes", "memory.low")))


def cgroup_dir(name, controller):
    dirs = cgroup_dirs(name, (controller,))
    assert len(dirs) == 1, f"expected one {controller} cgroup for {name}, found {dirs}"
    return dirs[0]


def read_file(path):
    with open(path) as f:
        return f.read().strip()


def host_procs_in(name):
    """(pid, argv0 basename) of every host process whose cgroup is the sandbox's."""
    markers = (f"/capsule/{name}.", f"/capsule/{name}~")
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cgroup") as f:
                cg = f.read()
            if not any(m in cg for m in markers):
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        arg0 = os.path.basename(argv[0].decode(errors="replace")) if argv and argv[0] else ""
        out.append((int(entry), arg0, b" ".join(a for a in argv if a).decode(errors="replace")))
    return out


def wait_until(pred, timeout=10.0, interval=0.1):
    """Poll pred until it returns a true value or the deadline passes; returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def assert_capsule_error(r, code=125):
    """A capsule error: the exit code, and exactly one line on stderr starting 'capsule'."""
    assert r.returncode == code, f"exit {r.returncode}, stdout={r.stdout!r} stderr={r.stderr!r}"
    lines = r.stderr.strip("\n").split("\n")
    assert len(lines) == 1 and lines[0], f"expected one line on stderr, got {r.stderr!r}"
    assert lines[0].startswith("capsule"), f"stderr does not start with 'capsule': {r.stderr!r}"


def qemu_procs(capsule, name):
    """Host processes whose command line names the sandbox's root disk: a vm's QEMU."""
    needle = os.path.join(run_dir(capsule, name), "disk.qcow2").encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if needle in f.read():
                    found.append(int(entry))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return found


def sandbox_gone(capsule, name):
    """The sandbox's run folder, cgroups and processes (a vm's QEMU among them) are all gone."""
    return (not os.path.exists(run_dir(capsule, name)) and not cgroup_dirs(name) and not host_procs_in(name)
            and not qemu_procs(capsule, name))


def leftovers(capsule, name):
    return {
        "run_dir": os.path.exists(run_dir(capsule, name)),
        "cgroups": cgroup_dirs(name),
        "procs": host_procs_in(name),
        "qemu": qemu_procs(capsule, name),
    }


def assert_cat_sees_eof_without_i(capsule, *args):
    """`capsule ARGS cat` with our stdin open and silent: without -i, cat must see EOF at
    once, exit 0 and print nothing."""
    p = capsule.popen(*args, "cat", stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        rc = p.wait(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        pytest.fail("cat without -i did not end: stdin was not closed")
    finally:
        p.stdin.close()
    out, err = p.stdout.read(), p.stderr.read()
    p.stdout.close()
    p.stderr.close()
    assert rc == 0, err
    assert out == b""


def children_named(ppid, comm):
    """pids of the processes named COMM whose parent is PPID (from /proc, racing exits)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except (FileNotFoundError, ProcessLookupError):
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        if name == comm and int(stat[stat.rindex(")") + 2:].split()[1]) == ppid:
            out.append(int(entry))
    return out


# An OCI tool's container at both levels (test_oci_podman.py, test_oci_containerd.py): the vm
# level is the annotation capsule.isolation=vm (`podman --annotation`, `ctr --annotation`).
def levels(in_check=False):
    """The test at the container level and at the vm level (vm_slow unless IN_CHECK)."""
    vm = pytest.param("vm", marks=[] if in_check else [pytest.mark.vm_slow])
    return pytest.mark.parametrize("level", ["container", vm])


def level_args(level):
    return ["--annotation", "capsule.isolation=vm"] if level == "vm" else []


def answering(body_of):
    """An HTTP handler class whose GET answers with body_of(handler), a str, and logs nothing."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = body_of(self).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    return Handler


# ---- --preserve-fds -------------------------------------------------------------------------


def run_with_fds_as_3_up(argv, fds, env, timeout=60, background=False):
    """ARGV with FDS[i] as its descriptor 3+i and no other above 2 (through bash, whose
    redirections place them; the sources are moved above the targets first, so that placing
    one never closes another). BACKGROUND: a command that leaves a process behind holding its
    stdio (a monitor): its output goes through a file, read back as its stderr."""
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, max(20, 3 + len(fds))) for fd in fds]
    moves = " ".join(f"{3 + i}>&{fd}" for i, fd in enumerate(high))
    closes = " ".join(f"{fd}>&-" for fd in high)
    cmd = ["/bin/bash", "-c", f'exec "$@" {moves} {closes}', "bash", *argv]
    try:
        if not background:
            return subprocess.run(cmd, env=env, pass_fds=tuple(high), capture_output=True, text=True,
                                  timeout=timeout)
        with tempfile.TemporaryFile("w+") as out:
            r = subprocess.run(cmd, env=env, pass_fds=tuple(high), stdin=subprocess.DEVNULL, stdout=out,
                               stderr=out, timeout=timeout)
            out.seek(0)
            r.stderr = out.read()
            return r
    finally:
        for fd in high:
            os.close(fd)


def read_to_eof(fd, timeout=30):
    """Everything written to the pipe FD until every write end is closed: one still open
    anywhere (the caller's, a monitor's, the shim's, the agent's) fails it."""
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            return data.decode()
        data += chunk
    raise AssertionError(f"the pipe's write end is still held somewhere; read so far: {data!r}")


# What a command finds when it was given two pipes as 3 and 4 (and a folder of the host's as 5,
# not to be passed): its lines in the pipes, and nothing of ours above 4.
FDS_PROBE = ("echo three >&3; echo four >&4; "
             "for n in 5 6 7 8 9 10 11 12 20 21 22 23 24; do [ -e /proc/$$/fd/$n ] && echo LEAK $n; done; "
             "echo done")


def run_fds_probe(run):
    """RUN(fds) runs FDS_PROBE with FDS (two pipes and a host folder) as its caller's 3, 4 and 5,
    asking for 2 to be passed. Returns its CompletedProcess and what each pipe got, read once
    every write end is closed (the command's, and any copy kept anywhere)."""
    r3, w3 = os.pipe()
    r4, w4 = os.pipe()
    folder = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    try:
        r = run([w3, w4, folder])
        os.close(w3)
        os.close(w4)
        w3 = w4 = -1
        return r, read_to_eof(r3), read_to_eof(r4)
    finally:
        for fd in (r3, r4, folder, w3, w4):
            if fd >= 0:
                os.close(fd)
