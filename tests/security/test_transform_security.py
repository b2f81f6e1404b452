"""Transform mounts (capsule-fuse): the FUSE server must never lead the sandbox outside the
folder it serves, and a plugin that crashes must fail I/O, not hang the sandbox or its stop."""
import os
import shutil
import stat
import subprocess
import tempfile
import uuid

import pytest
from secutil import children_named, wait_until


@pytest.fixture
def plugin(capsule):
    return os.path.join(capsule.build, "transform-xor.so")


@pytest.fixture
def tree():
    """A parent folder holding a secret beside the served folder."""
    parent = tempfile.mkdtemp(prefix="capsule-transform-sec-", dir="/tmp")
    served = os.path.join(parent, "served")
    os.mkdir(served)
    os.chmod(parent, 0o755)
    os.chmod(served, 0o777)
    marker = f"host-secret-{uuid.uuid4().hex}"
    with open(os.path.join(parent, "secret"), "w") as f:
        f.write(marker)
    yield parent, served, marker
    shutil.rmtree(parent, ignore_errors=True)


def args(served, plugin):
    return ["-v", f"{served}:/mnt/s", "--transform", f"/mnt/s={plugin}:k"]


def test_symlinks_in_the_served_folder_resolve_inside_the_sandbox_not_on_the_host(capsule, tree, plugin):
    parent, served, marker = tree
    os.symlink("/etc/shadow", os.path.join(served, "shadow"))
    os.symlink("../secret", os.path.join(served, "up"))
    os.symlink("../..", os.path.join(served, "upup"))
    rel = os.path.relpath(os.path.join(parent, "secret"), "/")
    r = capsule.run("run", *args(served, plugin), "--", "sh", "-c",
                    f"cat /mnt/s/shadow; cat /mnt/s/up; cat /mnt/s/upup/{rel}; cat /mnt/s/upup/upup/{rel};"
                    " readlink /mnt/s/up")
    with open("/etc/shadow") as f:
        shadow = f.read()
    root_line = next(line for line in shadow.splitlines() if line.startswith("root:"))
    assert root_line not in r.stdout
    assert marker not in r.stdout
    # The links themselves are served as they are: the sandbox reads their text.
    assert r.stdout.endswith("../secret\n")


def test_a_symlink_the_sandbox_makes_cannot_write_outside_through_the_server(capsule, tree, plugin):
    parent, served, marker = tree
    victim = f"capsule-pwned-{uuid.uuid4().hex[:8]}"
    r = capsule.run("run", *args(served, plugin), "--", "sh", "-c",
                    f"ln -s /etc /mnt/s/evil && ln -s .. /mnt/s/dotdot && echo x > /mnt/s/evil/{victim};"
                    f" echo y > /mnt/s/dotdot/{victim}; ls /mnt/s/dotdot/ | grep -c secret")
    assert not os.path.exists(f"/etc/{victim}")
    assert not os.path.exists(os.path.join(parent, victim))
    assert r.stdout.strip().endswith("0")
    assert os.readlink(os.path.join(served, "evil")) == "/etc"


def test_set_id_bits_and_device_nodes_do_not_reach_the_host(capsule, tree, plugin):
    parent, served, marker = tree
    capsule.run("run", *args(served, plugin), "--", "sh", "-c",
                "cp /bin/true /mnt/s/suid && chmod 6755 /mnt/s/suid; mknod /mnt/s/null c 1 3; true", check=True)
    st = os.stat(os.path.join(served, "suid"))
    assert not st.st_mode & (stat.S_ISUID | stat.S_ISGID)
    assert not os.path.exists(os.path.join(served, "null"))


def fuse_children(shim_pid):
    return children_named(shim_pid, "capsule-fuse")


def test_a_crashing_plugin_fails_io_without_hanging_the_sandbox_or_its_stop(capsule, tree):
    parent, served, marker = tree
    crash = os.path.join(capsule.build, "tests", "e2e", "transform-crash.so")
    name = capsule.create("-v", f"{served}:/mnt/s", "--transform", f"/mnt/s={crash}")
    shim = capsule.inspect(name)["shim_pid"]
    servers = fuse_children(shim)
    assert len(servers) == 1
    r = capsule.run("exec", name, "--", "sh", "-c", "echo x > /mnt/s/f; echo rc=$?; cat /mnt/s/f; echo rc=$?",
                    timeout=30)
    assert "rc=0" not in r.stdout, r.stdout
    assert any(e in r.stderr for e in ("Transport endpoint is not connected", "Input/output error",
                                       "Software caused connection abort")), r.stderr
    # The sandbox still answers, and the server was reaped, not left a zombie.
    assert capsule.run("exec", name, "--", "echo", "alive", check=True, timeout=30).stdout == "alive\n"
    assert wait_until(lambda: not os.path.exists(f"/proc/{servers[0]}"), 10)
    capsule.run("stop", name, check=True, timeout=30)
    assert wait_until(lambda: not os.path.exists(f"/proc/{shim}"), 10)


# Random writes, truncates and reads through the transform, mirrored on a plain file in /tmp:
# what the sandbox reads back must be what it wrote, holes and block edges included.
MIRROR = r"""
import os, random, sys
rng = random.Random(int(sys.argv[1]))
a = os.open("/mnt/s/sparse", os.O_RDWR | os.O_CREAT, 0o644)
b = os.open("/tmp/mirror", os.O_RDWR | os.O_CREAT, 0o644)
for step in range(300):
    op = rng.random()
    if op < 0.5:
        off = rng.choice([rng.randrange(0, 1 << 16), rng.randrange(0, 1 << 24), rng.randrange(0, 64) * 4096])
        data = os.urandom(rng.choice([1, 7, 100, 4095, 4096, 5000]))
        os.pwrite(a, data, off); os.pwrite(b, data, off)
    elif op < 0.65:
        size = rng.choice([0, rng.randrange(0, 1 << 24), rng.randrange(0, 8) * 4096 + rng.randrange(0, 3)])
        os.ftruncate(a, size); os.ftruncate(b, size)
    else:
        off = rng.randrange(0, 1 << 24); n = rng.choice([1, 4096, 70000])
        if os.pread(a, n, off) != os.pread(b, n, off):
            print("differ at step", step, "offset", off); sys.exit(1)
size = os.fstat(b).st_size
assert os.fstat(a).st_size == size, (os.fstat(a).st_size, size)
pos = 0
while pos < size:
    if os.pread(a, 1 << 20, pos) != os.pread(b, 1 << 20, pos):
        print("differ in the final check at", pos); sys.exit(1)
    pos += 1 << 20
print("same", size)
"""


def test_sparse_writes_and_truncates_read_back_as_written(capsule, tree, plugin):
    parent, served, marker = tree
    name = capsule.create(*args(served, plugin))
    for seed in (1, 2, 3):
        r = capsule.run("exec", name, "--", "python3", "-c", MIRROR, str(seed), timeout=120)
        assert r.returncode == 0 and r.stdout.startswith("same"), (seed, r.stdout, r.stderr)


def test_a_huge_truncate_costs_the_host_what_was_stored_not_its_size(capsule, tree, plugin):
    # It used to make the server write 1.1 GiB of encoded zeros, outside every limit of the
    # sandbox, with the truncating command unkillable meanwhile.
    parent, served, marker = tree
    name = capsule.create(*args(served, plugin))
    r = capsule.run("exec", name, "--", "sh", "-c", "echo head > /mnt/s/big && truncate -s 1G /mnt/s/big && "
                    "echo tail >> /mnt/s/big && stat -c %s /mnt/s/big && head -c 5 /mnt/s/big && "
                    "dd if=/mnt/s/big bs=1M skip=512 count=1 status=none | tr -d '\\0' | wc -c", timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str((1 << 30) + 5), "head", "0"], r.stdout
    st = os.stat(os.path.join(served, "big"))
    assert st.st_blocks * 512 < (1 << 20), st.st_blocks


RACE = r"""
import errno, os, signal
pid = os.fork()
if pid == 0:
    # A second route to the same folder swaps a fifo in and out at the name.
    while True:
        try: os.unlink("/plain/f")
        except FileNotFoundError: pass
        try: os.mkfifo("/plain/f")
        except FileExistsError: pass
class Tick(Exception):
    pass
def tick(*_):
    raise Tick()
signal.signal(signal.SIGALRM, tick)
hits = 0
for i in range(30000):
    # The server is asked to create only when the kernel saw no file at lookup and the fifo
    # came in before the create: ENXIO then says the server refused it. Where the kernel
    # itself sees the fifo, its open waits for a reader, and the timer ends that.
    signal.setitimer(signal.ITIMER_REAL, 0.02)
    try:
        os.close(os.open("/mnt/s/f", os.O_WRONLY | os.O_CREAT, 0o644))
    except Tick:
        pass
    except OSError as e:
        hits += e.errno == errno.ENXIO
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    try: os.unlink("/mnt/s/f")
    except OSError: pass
    if hits >= 3:
        break
os.kill(pid, 9)
os.waitpid(pid, 0)
print("hits", hits)
"""


def test_a_fifo_swapped_in_at_a_create_neither_hangs_nor_leaks_the_server(capsule, tree, plugin):
    # The old server opened whatever it found at the name after O_EXCL failed: a fifo blocked
    # it in open, and every FUSE request of the sandbox with it. It now opens only regular
    # files, through an O_PATH look first.
    parent, served, marker = tree
    name = capsule.create(*args(served, plugin), "-v", f"{served}:/plain")
    shim = capsule.inspect(name)["shim_pid"]
    server = fuse_children(shim)[0]
    fds_before = len(os.listdir(f"/proc/{server}/fd"))
    r = capsule.run("exec", name, "--", "python3", "-c", RACE, timeout=120)
    # At least one create met the fifo in the server (else the test proved nothing).
    assert r.returncode == 0 and r.stdout.split()[0] == "hits" and int(r.stdout.split()[1]) > 0, (r.stdout, r.stderr)
    fds = [os.readlink(f"/proc/{server}/fd/{fd}") for fd in os.listdir(f"/proc/{server}/fd")]
    assert len(fds) <= fds_before + 1, fds
    assert capsule.run("exec", name, "--", "sh", "-c", "echo ok > /mnt/s/g && cat /mnt/s/g", check=True,
                       timeout=30).stdout == "ok\n"


def test_the_transform_server_counts_against_the_sandboxs_limits(capsule, tree, plugin):
    parent, served, marker = tree
    name = capsule.create(*args(served, plugin), "--memory", "256M")
    info = capsule.inspect(name)
    server = fuse_children(info["shim_pid"])[0]
    with open(f"/proc/{server}/cgroup") as f:
        cgroups = f.read()
    assert name in cgroups, cgroups
