"""What only vm isolation's network has: a NIC of QEMU's user networking for full, none without
one, port forwards relayed by the shim over the agent channel (FWD_CONNECT) and QEMU listening
on nothing, the egress allowlist as the guest's own nf_tables table and its refusals before
any boot.

What both levels share (modes, forwards, port add/ls/rm, the allowlist's meaning) is
test_network.py's, marked both_levels. One `full` VM, made once for the module, serves most
tests here; `make check` runs the two tests that boot (that VM's, and a forward into a `none`
VM) plus those refused before any boot; the rest are vm_slow.

Traffic only goes to the host's loopback (servers this test starts) or into the test's VMs."""
import hashlib
import json
import os
import socket
import time

import pytest

from tests.conftest import Capsule

from .helpers import assert_capsule_error, host_guest_kernel, run_entries, wait_until
# DIGEST_SERVER reads to EOF on 9100, then answers "<bytes> <sha256>": only a forward that passes
# the client's half-close on lets it answer at all.
from .test_network import DIGEST_SERVER, FETCH, HostServer, free_port
from .test_vm import BOOT_TIMEOUT, boots

GATEWAY = "10.0.2.2"

# DIGEST_SERVER on 9102 with a thread per connection: many connections at once.
THREADED_DIGEST_SERVER = """
import hashlib, socket, threading
def one(c):
    h = hashlib.sha256(); n = 0
    while True:
        d = c.recv(262144)
        if not d: break
        h.update(d); n += len(d)
    c.sendall(f"{n} {h.hexdigest()}".encode()); c.close()
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 9102)); s.listen(64)
while True:
    c, _ = s.accept(); threading.Thread(target=one, args=(c,)).start()
"""

# Sends 32 MiB of a fixed pattern and closes: the guest -> host direction.
SOURCE_SERVER = """
import socket
d = bytes(range(256)) * 4096 * 32
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 9101)); s.listen(4)
while True:
    c, _ = s.accept(); c.sendall(d); c.close()
"""

# Serves /token from 127.0.0.1:PORT.
HTTP_SERVER = "import http.server,sys,os; os.chdir(sys.argv[2]); " \
    "http.server.ThreadingHTTPServer(('127.0.0.1', int(sys.argv[1])), http.server.SimpleHTTPRequestHandler).serve_forever()"


def exec_ok(capsule, name, *argv, **kw):
    r = capsule.run("exec", name, "--", *argv, timeout=kw.pop("timeout", 120), **kw)
    assert r.returncode == 0, r.stderr
    return r.stdout


def serve_token(capsule, name, port):
    token = os.urandom(6).hex()
    d = f"/tmp/www{port}"
    exec_ok(capsule, name, "sh", "-c", f"mkdir -p {d} && printf %s {token} > {d}/token")
    capsule.run("exec", "-d", name, "--", "python3", "-c", HTTP_SERVER, str(port), d, check=True)
    return token


def host_get(port, path="/token", timeout=60):
    """GET through a forward, retrying while the server inside starts (the forward then
    closes the client's connection)."""
    last = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as c:
                c.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
                c.shutdown(socket.SHUT_WR)
                data = b""
                while chunk := c.recv(65536):
                    data += chunk
            if data:
                return data.split(b"\r\n\r\n", 1)[1].decode()
        except OSError as e:
            last = e
        time.sleep(0.3)
    raise AssertionError(f"no answer through the forward on {port}: {last}")


def digest_through(port, data, timeout=90):
    """Send DATA through the forward, half-close, read the server's answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = b""
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=60) as c:
                c.sendall(data)
                c.shutdown(socket.SHUT_WR)
                while chunk := c.recv(4096):
                    reply += chunk
        except OSError:
            reply = b""
        if reply:
            return reply.decode()
        time.sleep(0.3)  # not listening inside yet: the forward closed us
    raise AssertionError(f"no answer through the forward on {port}")


def interfaces(capsule, name):
    return sorted(exec_ok(capsule, name, "ls", "/sys/class/net").split())


@pytest.fixture(scope="module")
def vmcap(capsule_home):
    c = Capsule(capsule_home)
    yield c
    c.cleanup()


@pytest.fixture(scope="module")
def host_server():
    s = HostServer()
    yield s
    s.close()


@pytest.fixture(scope="module")
def full_vm(vmcap):
    """One `full` VM with a boot-time forward of a free host port to 8000."""
    port = free_port()
    name = vmcap.unique_name("vmnet")
    r = vmcap.run("create", "--isolation", "vm", "--name", name, "--network", "full", "-p", f"{port}:8000",
                  timeout=BOOT_TIMEOUT)
    assert r.returncode == 0, r.stderr
    return name, port


# ---- in make check ------------------------------------------------------------------------------


@boots
def test_vm_full_has_a_nic_reaches_the_hosts_loopback_and_names_the_nat_dns(vmcap, full_vm, host_server):
    name, port = full_vm
    assert interfaces(vmcap, name) == ["eth0", "lo"]
    assert "10.0.2.15" in exec_ok(vmcap, name, "cat", "/proc/net/fib_trie")
    routes = exec_ok(vmcap, name, "cat", "/proc/net/route").splitlines()[1:]
    # The default route, via 10.0.2.2 (0202000A little endian).
    assert any(r.split()[1] == "00000000" and r.split()[2] == "0202000A" for r in routes), routes
    assert exec_ok(vmcap, name, "cat", "/etc/resolv.conf").splitlines()[-1] == "nameserver 10.0.2.3"
    # The host's 127.0.0.1, seen at the gateway, as slirp4netns shows it to a container.
    assert exec_ok(vmcap, name, "python3", "-c", FETCH, f"http://{GATEWAY}:{host_server.port}/token").strip() \
        == host_server.token
    net = vmcap.inspect(name)["network"]
    assert net["mode"] == "full" and net["gateway"] == GATEWAY and net["dns"] == "10.0.2.3"
    assert [(p["host_port"], p["guest_port"]) for p in net["ports"]] == [(port, 8000)]
    # The boot-time forward, in full mode too.
    token = serve_token(vmcap, name, 8000)
    assert host_get(port) == token
    argv = vmcap.inspect(name)["vm"]["qemu_command_line"]
    assert "virtio-net-device,netdev=net0" in argv and "ipv6=off" in argv and "hostfwd" not in argv


@boots
def test_vm_none_forward_carries_32mib_with_half_close_and_no_nic(capsule):
    port = free_port()
    name = capsule.unique_name("vmnet")
    r = capsule.run("create", "--isolation", "vm", "--name", name, "-p", f"{port}:9100", timeout=BOOT_TIMEOUT)
    assert r.returncode == 0, r.stderr
    # none: lo, up, and nothing else: no NIC, no route.
    assert interfaces(capsule, name) == ["lo"]
    assert int(exec_ok(capsule, name, "cat", "/sys/class/net/lo/flags"), 16) & 1
    assert len(exec_ok(capsule, name, "cat", "/proc/net/route").strip().splitlines()) == 1
    assert "-netdev" not in capsule.inspect(name)["vm"]["qemu_command_line"]
    capsule.run("exec", "-d", name, "--", "python3", "-c", DIGEST_SERVER, check=True)
    data = os.urandom(1 << 20) * 32
    assert digest_through(port, data) == f"{len(data)} {hashlib.sha256(data).hexdigest()}"
    listed = json.loads(capsule.run("port", "ls", name, "--json", check=True).stdout)
    assert [(p["host_ip"], p["host_port"], p["guest_port"], p["hot"]) for p in listed] == \
        [("127.0.0.1", port, 9100, False)]
    # Everything was relayed by the shim: QEMU itself listens on nothing.
    info = capsule.inspect(name)
    assert listening_ports_of(info["vm"]["qemu_pid"]) == set()
    assert listening_ports_of(info["shim_pid"]) == {port}


def listening_ports_of(pid):
    """The TCP ports that process PID holds listening sockets on."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and cols[9] in inodes:  # LISTEN
                    ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


def test_vm_egress_allowlist_with_a_modular_kernel_is_refused_and_leaves_nothing(capsule):
    """Debian's kernel has nf_tables only as modules, which the guest cannot load after boot:
    the shim says so before anything starts."""
    kernel = host_guest_kernel()["path"]
    before = run_entries(capsule)
    r = capsule.run("run", "--isolation", "vm", "--network", "full", "--allow-cidr", f"{GATEWAY}/32:80", "--",
                    "true", timeout=BOOT_TIMEOUT, env={"CAPSULE_VM_KERNEL": kernel})
    assert_capsule_error(r)
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "egress allowlist" in r.stderr and "nf_tables built in" in r.stderr and f"'{kernel}'" in r.stderr, \
        r.stderr
    assert run_entries(capsule) == before


def test_vm_egress_allowlist_of_65_entries_is_one_line_error_and_leaves_nothing(capsule):
    before = run_entries(capsule)
    args = []
    for i in range(65):
        args += ["--allow-cidr", f"10.0.{i}.0/24"]
    r = capsule.run("run", "--isolation", "vm", "--network", "full", *args, "--", "true", timeout=BOOT_TIMEOUT)
    assert_capsule_error(r)
    assert r.stderr.strip().endswith("too many egress allowlist entries (at most 64)"), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert run_entries(capsule) == before


# ---- make check-vm only -------------------------------------------------------------------------


# Each destination: CONNECTED, or ERR <errno> and how long the refusal took, in the guest.
TIMED_CONNECTS = """
import socket, sys, time
for dest in sys.argv[1:]:
    addr, port = dest.rsplit(":", 1)
    s = socket.socket(); s.settimeout(20); t = time.monotonic()
    try:
        s.connect((addr, int(port))); print(dest, "CONNECTED")
    except OSError as e:
        print(dest, "ERR", e.errno, round(time.monotonic() - t, 2))
    s.close()
"""


@pytest.mark.vm_slow
@boots
def test_vm_allowlist_refuses_unlisted_ports_and_addresses_at_once(vmcap, host_server):
    with socket.socket() as unlisted:
        # A listener the guest could reach without the rules: only they stop the connect.
        unlisted.bind(("127.0.0.1", 0))
        unlisted.listen(4)
        uport = unlisted.getsockname()[1]
        name = vmcap.unique_name("vmnet")
        r = vmcap.run("create", "--isolation", "vm", "--name", name, "--network", "full",
                      "--allow-cidr", f"{GATEWAY}/32:{host_server.port}", timeout=BOOT_TIMEOUT)
        assert r.returncode == 0, r.stderr
        assert f" capsule.allow={GATEWAY}/32:{host_server.port} " in exec_ok(vmcap, name, "cat", "/proc/cmdline")
        # 10.0.2.4 answers nothing in QEMU's network (no ARP reply): without the rules that
        # connect would wait out its 20 s; with them it is reset before a packet leaves.
        dests = [f"{GATEWAY}:{host_server.port}", f"{GATEWAY}:{uport}", "10.0.2.4:80"]
        out = exec_ok(vmcap, name, "python3", "-c", TIMED_CONNECTS, *dests).splitlines()
        assert out[0] == f"{dests[0]} CONNECTED", out
        for line in out[1:]:
            _, verdict, errno_, took = line.split()
            assert (verdict, errno_) == ("ERR", "111") and float(took) < 3, out


@pytest.mark.vm_slow
@boots
def test_vm_forward_carries_32mib_from_the_guest(vmcap, full_vm):
    name, _ = full_vm
    vmcap.run("exec", "-d", name, "--", "python3", "-c", SOURCE_SERVER, check=True)
    port = free_port()
    vmcap.run("port", "add", name, f"{port}:9101", check=True)
    want = hashlib.sha256(bytes(range(256)) * 4096 * 32).hexdigest()
    deadline = time.monotonic() + 90
    got = None
    while time.monotonic() < deadline:
        h, n = hashlib.sha256(), 0
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=60) as c:
                while chunk := c.recv(1 << 20):
                    h.update(chunk)
                    n += len(chunk)
        except OSError:
            n = 0
        if n:
            got = (n, h.hexdigest())
            break
        time.sleep(0.3)
    assert got == (32 << 20, want)


@pytest.mark.vm_slow
@boots
def test_vm_many_connections_at_once_each_get_their_own_bytes(vmcap, full_vm):
    name, _ = full_vm
    vmcap.run("exec", "-d", name, "--", "python3", "-c", THREADED_DIGEST_SERVER, check=True)
    port = free_port()
    vmcap.run("port", "add", name, f"{port}:9102", check=True)
    digest_through(port, b"warm-up")
    socks = []
    blobs = [os.urandom(100_000 + i) for i in range(16)]
    for b in blobs:
        c = socket.create_connection(("127.0.0.1", port), timeout=60)
        c.sendall(b)
        c.shutdown(socket.SHUT_WR)
        socks.append(c)
    for c, b in zip(socks, blobs):
        reply = b""
        while chunk := c.recv(4096):
            reply += chunk
        c.close()
        assert reply.decode() == f"{len(b)} {hashlib.sha256(b).hexdigest()}"
    assert wait_until(lambda: [p["connections"] for p in json.loads(
        vmcap.run("port", "ls", name, "--json", check=True).stdout) if p["host_port"] == port] == [0], timeout=30)
