"""Network modes (--network none|mounts-only|full), port forwards (-p, capsule port) and the
egress allowlist (--allow-host, --allow-cidr).

Tests marked both_levels run at the container and the vm level (tests/conftest.py): their vm
half is vm_slow (make check-vm) but for the allowlist's first test, vm_in_check. What only a
vm has (its NIC, QEMU's argv, forwards carried over the agent channel) is test_vm_network.py's.

Traffic only ever goes to the host's loopback (servers this test starts) or into the
sandboxes the tests made."""
import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pytest

from .helpers import assert_capsule_error, children_named, qemu_procs, run_dir, run_entries, wait_until

GATEWAY = "10.0.2.2"
# A CLI call that boots a vm may take this long here (TCG on 2 shared cores): test_vm.py's.
VM_BOOT_TIMEOUT = 240


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HostServer:
    """python3 -m http.server on the host's 127.0.0.1, serving a token file."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="capsule-net-", dir="/tmp")
        self.token = os.urandom(8).hex()
        with open(os.path.join(self.dir, "token"), "w") as f:
            f.write(self.token)
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["python3", "-m", "http.server", str(self.port), "--bind", "127.0.0.1", "--directory", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_until(lambda: self._up(), timeout=15), "the host's test server did not start"

    def _up(self):
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
            return True
        return False

    def close(self):
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def host_server():
    s = HostServer()
    yield s
    s.close()


@pytest.fixture
def host_server2():
    s = HostServer()
    yield s
    s.close()


# Fetch URL from inside: prints the body, or "ERR <errno or reason>".
FETCH = """
import sys, urllib.request, urllib.error
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())
except urllib.error.URLError as e:
    r = e.reason
    print("ERR", getattr(r, "errno", None) or r)
except OSError as e:
    print("ERR", e.errno)
"""


def fetch_inside(capsule, name, url):
    r = capsule.run("exec", name, "python3", "-c", FETCH, url, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def fetch_host(url, timeout=10):
    return urllib.request.urlopen(url, timeout=timeout).read().decode()


def serve_inside(capsule, name, port, token):
    """A web server on the sandbox's own 127.0.0.1:PORT serving /token."""
    d = f"/tmp/www{port}"
    capsule.run("exec", name, "sh", "-c", f"mkdir -p {d} && printf %s {token} > {d}/token", check=True)
    capsule.run("exec", "-d", name, "python3", "-m", "http.server", str(port), "--bind", "127.0.0.1",
                "--directory", d, check=True)
    up = "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=1)"
    assert wait_until(lambda: capsule.run("exec", name, "python3", "-c", up, str(port)).returncode == 0,
                      timeout=60), "the server in the sandbox did not start"


def fetch_through(port, timeout=20):
    """GET /token through a forward, waiting for the sandbox's server if need be."""
    last = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return fetch_host(f"http://127.0.0.1:{port}/token")
        except OSError as e:
            last = e
            time.sleep(0.2)
    raise AssertionError(f"no answer through the forward on {port}: {last}")


def interfaces_inside(capsule, name):
    r = capsule.run("exec", name, "ls", "/sys/class/net", check=True)
    return sorted(r.stdout.split())


# ---- modes ------------------------------------------------------------------------------


def test_default_network_is_none_with_loopback_only(capsule):
    name = capsule.create()
    assert interfaces_inside(capsule, name) == ["lo"]
    r = capsule.run("exec", name, "cat", "/proc/net/route", check=True)
    assert len(r.stdout.strip().splitlines()) == 1, r.stdout  # the header alone: no route
    assert capsule.inspect(name)["network"]["mode"] == "none"


@pytest.mark.both_levels
def test_mounts_only_is_the_same_as_none(capsule):
    name = capsule.create("--network", "mounts-only")
    assert interfaces_inside(capsule, name) == ["lo"]
    assert capsule.inspect(name)["network"]["mode"] == "mounts-only"


def test_bad_network_mode_is_one_line_error(capsule):
    r = capsule.run("run", "--network", "bridge", "true")
    assert_capsule_error(r)
    assert "'bridge'" in r.stderr and "none, mounts-only or full" in r.stderr


def test_full_reaches_host_loopback_server_at_gateway(capsule, host_server):
    name = capsule.create("--network", "full")
    assert interfaces_inside(capsule, name) == ["lo", "tap0"]
    assert fetch_inside(capsule, name, f"http://{GATEWAY}:{host_server.port}/token") == host_server.token
    info = capsule.inspect(name)["network"]
    assert info["mode"] == "full" and info["gateway"] == GATEWAY and info["dns"] == "10.0.2.3"


def test_full_run_one_shot(capsule, host_server):
    r = capsule.run("run", "--network", "full", "--", "python3", "-c", FETCH,
                    f"http://{GATEWAY}:{host_server.port}/token")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == host_server.token


def test_full_resolv_conf_names_the_nat_dns_and_none_has_none(capsule):
    full = capsule.create("--network", "full")
    r = capsule.run("exec", full, "cat", "/etc/resolv.conf", check=True)
    assert "nameserver 10.0.2.3" in r.stdout
    # The sandbox cannot point it elsewhere: it is a read-only file of the shim's.
    r = capsule.run("exec", full, "sh", "-c", "echo nameserver 192.0.2.1 > /etc/resolv.conf")
    assert r.returncode != 0
    none = capsule.create()
    r = capsule.run("exec", none, "cat", "/etc/resolv.conf", check=True)
    assert "nameserver" not in r.stdout


def test_full_survives_stop_and_start(capsule, host_server):
    name = capsule.create("--network", "full")
    capsule.run("stop", name, check=True)
    capsule.run("start", name, check=True)
    assert fetch_inside(capsule, name, f"http://{GATEWAY}:{host_server.port}/token") == host_server.token


# ---- port forwards ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["none", "full"])
def test_forward_carries_http_in_every_mode(capsule, mode):
    port = free_port()
    name = capsule.create("--network", mode, "-p", f"{port}:8000")
    token = os.urandom(6).hex()
    serve_inside(capsule, name, 8000, token)
    assert fetch_through(port) == token
    ports = capsule.inspect(name)["network"]["ports"]
    assert ports == [{"host_ip": "127.0.0.1", "host_port": port, "guest_port": 8000, "protocol": "tcp",
                      "hot": False}]


def test_forward_with_explicit_host_ip_and_tcp_suffix(capsule):
    port = free_port()
    name = capsule.create("-p", f"127.0.0.1:{port}:8001/tcp")
    token = os.urandom(6).hex()
    serve_inside(capsule, name, 8001, token)
    assert fetch_through(port) == token


@pytest.mark.both_levels
def test_run_with_forward_serves_while_command_runs_and_leaves_no_listener(capsule, isolation):
    port = free_port()
    token = os.urandom(6).hex()
    script = (f"mkdir -p /tmp/w && printf %s {token} > /tmp/w/token && "
              "exec python3 -m http.server 8002 --bind 127.0.0.1 --directory /tmp/w")
    p = capsule.popen("run", "-p", f"{port}:8002", "--", "sh", "-c", script,
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert fetch_through(port, timeout=VM_BOOT_TIMEOUT if isolation == "vm" else 20) == token
    finally:
        p.kill()
        p.wait(timeout=60)
    # The client gone, the ephemeral sandbox ends, and its listener with it.
    assert wait_until(lambda: not port_open(port), timeout=60)


def port_open(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


# An echo-digest server inside: reads until EOF, then answers the sha256 of what it got.
DIGEST_SERVER = """
import hashlib, socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 9100)); s.listen(8)
while True:
    c, _ = s.accept(); h = hashlib.sha256(); n = 0
    while True:
        d = c.recv(1 << 16)
        if not d: break
        h.update(d); n += len(d)
    c.sendall(f"{n} {h.hexdigest()}".encode()); c.close()
"""


def test_forward_carries_32mib_both_ways_with_half_close(capsule):
    port = free_port()
    name = capsule.create("-p", f"{port}:9100")
    capsule.run("exec", "-d", name, "python3", "-c", DIGEST_SERVER, check=True)
    data = os.urandom(1 << 20) * 32
    for attempt in range(100):
        try:
            c = socket.create_connection(("127.0.0.1", port), timeout=30)
            c.sendall(data)
            # Half-close: the server sees EOF, and our read side stays open for its answer.
            c.shutdown(socket.SHUT_WR)
            reply = b""
            while True:
                d = c.recv(4096)
                if not d:
                    break
                reply += d
            c.close()
        except (ConnectionError, BrokenPipeError):
            reply = b""
        if reply:
            break
        time.sleep(0.2)  # the server inside was not listening yet: the forward closed us
    assert reply.decode() == f"{len(data)} {hashlib.sha256(data).hexdigest()}"


# No boot at the vm level: the taken port fails first thing, before QEMU starts.
@pytest.mark.both_levels
@pytest.mark.vm_in_check
def test_taken_host_port_fails_create_cleanly(capsule):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        name = capsule.unique_name()
        before = run_entries(capsule)
        r = capsule.run("create", "--name", name, "--network", "full", "-p", f"{port}:80")
        assert_capsule_error(r)
        assert r.stderr.strip().endswith(f"host port 127.0.0.1:{port} is already in use"), r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
        assert run_entries(capsule) == before and not os.path.exists(run_dir(capsule, name))
        assert qemu_procs(capsule, name) == []
        assert name not in [s["name"] for s in capsule.ps()]


def test_same_host_port_twice_is_refused(capsule):
    port = free_port()
    r = capsule.run("run", "-p", f"{port}:80", "-p", f"{port}:81", "true")
    assert_capsule_error(r)
    assert "forwarded twice" in r.stderr


def test_udp_forward_is_refused_clearly(capsule):
    r = capsule.run("run", "-p", f"{free_port()}:53/udp", "true")
    assert_capsule_error(r)
    assert "udp forwards are not supported" in r.stderr


def test_bad_port_spec_is_one_line_error(capsule):
    r = capsule.run("run", "-p", "80", "true")
    assert_capsule_error(r)
    assert "invalid port mapping '80'" in r.stderr


@pytest.mark.both_levels
def test_port_add_ls_rm_on_running_sandbox(capsule):
    name = capsule.create()
    token = os.urandom(6).hex()
    serve_inside(capsule, name, 8003, token)
    port = free_port()
    capsule.run("port", "add", name, f"{port}:8003", check=True)
    assert fetch_through(port) == token
    listed = json.loads(capsule.run("port", "ls", name, "--json", check=True).stdout)
    assert [(p["host_ip"], p["host_port"], p["guest_port"], p["hot"]) for p in listed] == \
        [("127.0.0.1", port, 8003, True)]
    table = capsule.run("port", "ls", name, check=True).stdout
    assert f"127.0.0.1:{port}" in table and "8003" in table
    assert capsule.inspect(name)["network"]["ports"][0]["host_port"] == port
    # A second forward of the same host port is refused; a taken one too.
    r = capsule.run("port", "add", name, f"{port}:8004")
    assert_capsule_error(r)
    assert "already forwarded" in r.stderr
    capsule.run("port", "rm", name, str(port), check=True)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    assert json.loads(capsule.run("port", "ls", name, "--json", check=True).stdout) == []
    r = capsule.run("port", "rm", name, str(port))
    assert_capsule_error(r)
    assert "no port forward" in r.stderr


@pytest.mark.both_levels
def test_port_add_taken_port_is_one_line_error(capsule):
    name = capsule.create()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        r = capsule.run("port", "add", name, f"{port}:80")
        assert_capsule_error(r)
        assert "already in use" in r.stderr


def test_port_on_missing_sandbox_is_one_line_error(capsule):
    r = capsule.run("port", "add", "no-such-box", "8080:80")
    assert_capsule_error(r)


@pytest.mark.both_levels
def test_forward_to_port_nobody_listens_on_closes_the_client(capsule, isolation):
    port = free_port()
    name = capsule.create("-p", f"{port}:8999")
    c = socket.create_connection(("127.0.0.1", port), timeout=10)
    c.settimeout(60)
    try:
        assert c.recv(10) == b""
    except ConnectionResetError:
        pass
    c.close()
    if isolation == "vm":
        # The agent connected inside the guest and was refused: the shim logs the guest's answer.
        log = open(os.path.join(run_dir(capsule, name), "shim.log")).read()
        assert "connect to 127.0.0.1:8999 in the guest: Connection refused" in log


# ---- the egress allowlist ------------------------------------------------------------------


# The vm half is make check's one allowlist boot: the guest's own nf_tables table (agent).
@pytest.mark.both_levels
@pytest.mark.vm_in_check
def test_allow_cidr_allows_listed_port_and_denies_others(capsule, host_server, host_server2):
    name = capsule.create("--network", "full", "--allow-cidr", f"{GATEWAY}/32:{host_server.port}")
    assert fetch_inside(capsule, name, f"http://{GATEWAY}:{host_server.port}/token") == host_server.token
    # 111: refused at once (a TCP reset from the rules), not FETCH's 10 s timeout.
    assert fetch_inside(capsule, name, f"http://{GATEWAY}:{host_server2.port}/token") == "ERR 111"
    allow = capsule.inspect(name)["network"]["allow"]
    assert allow == [{"rule": f"{GATEWAY}/32:{host_server.port}"}]


@pytest.mark.both_levels
def test_allow_host_resolves_on_host_and_maps_loopback_to_gateway(capsule, host_server, host_server2):
    name = capsule.create("--network", "full", "--allow-host", f"localhost:{host_server2.port}")
    assert fetch_inside(capsule, name, f"http://{GATEWAY}:{host_server2.port}/token") == host_server2.token
    assert fetch_inside(capsule, name, f"http://{GATEWAY}:{host_server.port}/token") == "ERR 111"
    allow = capsule.inspect(name)["network"]["allow"]
    assert allow == [{"rule": f"{GATEWAY}/32:{host_server2.port}", "host": "localhost"}]


@pytest.mark.both_levels
def test_allow_host_names_are_in_a_read_only_etc_hosts(capsule, isolation):
    """DNS is refused under an allowlist: the names resolved on the host are the sandbox's
    /etc/hosts (at the vm level through the shares)."""
    name_ = socket.gethostname()
    try:
        socket.gethostbyname(name_)
    except OSError:
        pytest.skip(f"the host's own name '{name_}' does not resolve here")
    name = capsule.create("--network", "full", "--allow-host", f"{name_}:443")
    allow = capsule.inspect(name)["network"]["allow"]
    addrs = {a["rule"].split("/")[0] for a in allow if a.get("host") == name_}
    assert addrs, allow
    r = capsule.run("exec", name, "python3", "-c", "import socket,sys; print(socket.gethostbyname(sys.argv[1]))",
                    name_, check=True)
    assert r.stdout.strip() in addrs
    r = capsule.run("exec", name, "sh", "-c", "echo 192.0.2.1 evil >> /etc/hosts")
    assert r.returncode != 0


@pytest.mark.both_levels
def test_allow_cidr_without_port_allows_every_port(capsule, host_server, host_server2):
    name = capsule.create("--network", "full", "--allow-cidr", "10.0.2.0/24")
    assert fetch_inside(capsule, name, f"http://{GATEWAY}:{host_server.port}/token") == host_server.token
    assert fetch_inside(capsule, name, f"http://{GATEWAY}:{host_server2.port}/token") == host_server2.token


@pytest.mark.both_levels
def test_allowlist_blocks_dns_and_keeps_loopback_and_forwards(capsule, host_server):
    port = free_port()
    name = capsule.create("--network", "full", "--allow-cidr", f"{GATEWAY}/32:{host_server.port}",
                          "-p", f"{port}:8005")
    token = os.urandom(6).hex()
    serve_inside(capsule, name, 8005, token)
    assert fetch_through(port) == token
    probe = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
             "try:\n s.sendto(b'x', ('10.0.2.3', 53)); print('sent')\n"
             "except OSError as e: print('ERR', e.errno)")
    r = capsule.run("exec", name, "python3", "-c", probe, check=True)
    assert r.stdout.strip().startswith("ERR"), r.stdout


def test_allowlist_needs_full_network(capsule):
    r = capsule.run("run", "--allow-cidr", "10.0.2.2/32", "true")
    assert_capsule_error(r)
    assert "needs --network full" in r.stderr


@pytest.mark.parametrize("spec", ["10.0.2.2/33", "300.1.1.1", "10.0.2.2:70000", "host-only"])
def test_bad_allow_cidr_is_one_line_error(capsule, spec):
    r = capsule.run("run", "--network", "full", "--allow-cidr", spec, "true")
    assert_capsule_error(r)
    assert "--allow-cidr" in r.stderr


def test_allow_host_refuses_what_is_not_a_name_or_a_port(capsule):
    """A container's names are answered later by its DNS proxy (test_egress_names.py), so a
    name the host cannot resolve is fine; one that no DNS name can be is not."""
    r = capsule.run("run", "--network", "full", "--allow-host", "x..y:443", "true")
    assert_capsule_error(r)
    assert "not a DNS name" in r.stderr
    r = capsule.run("run", "--network", "full", "--allow-host", "example.org:0", "true")
    assert_capsule_error(r)
    assert "port '0' is not 1-65535" in r.stderr


# ---- cleanup --------------------------------------------------------------------------------


def host_interfaces():
    return sorted(os.listdir("/sys/class/net"))


def host_ruleset():
    # -s (stateless): without counters, which other programs' traffic moves (a CNI chain that
    # podman left counts every new connection on the host).
    r = subprocess.run(["nft", "-s", "list", "ruleset"], capture_output=True, text=True, timeout=30)
    return r.stdout


def test_stop_leaves_no_nat_helper_listener_or_host_change(capsule, host_server):
    ifaces, rules = host_interfaces(), host_ruleset()
    port = free_port()
    name = capsule.create("--network", "full", "--allow-cidr", f"{GATEWAY}/32:{host_server.port}",
                          "-p", f"{port}:8006")
    shim = capsule.inspect(name)["shim_pid"]
    slirp = children_named(shim, "slirp4netns")
    assert len(slirp) == 1, "no slirp4netns child of the shim"
    assert fetch_inside(capsule, name, f"http://{GATEWAY}:{host_server.port}/token") == host_server.token
    # Nothing of it shows on the host's own network.
    assert host_interfaces() == ifaces
    assert host_ruleset() == rules
    capsule.run("stop", name, check=True)
    assert not os.path.exists(f"/proc/{slirp[0]}"), "slirp4netns outlived the sandbox"
    with socket.socket() as s:  # the port is free again
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
    assert host_interfaces() == ifaces
    assert host_ruleset() == rules


def test_ephemeral_run_leaves_no_listener(capsule):
    port = free_port()
    r = capsule.run("run", "--network", "full", "-p", f"{port}:80", "true")
    assert r.returncode == 0, r.stderr
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))


def test_forward_on_ipv6_loopback(capsule):
    if not socket.has_ipv6 or not os.path.exists("/proc/net/if_inet6"):
        pytest.skip("no IPv6 on this host")
    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::1", 0))
        port = s.getsockname()[1]
    name = capsule.create("-p", f"[::1]:{port}:8007")
    token = os.urandom(6).hex()
    serve_inside(capsule, name, 8007, token)
    deadline = time.monotonic() + 20
    while True:
        try:
            assert fetch_host(f"http://[::1]:{port}/token") == token
            break
        except OSError:
            assert time.monotonic() < deadline, "no answer through the IPv6 forward"
            time.sleep(0.2)
    assert capsule.inspect(name)["network"]["ports"][0]["host_ip"] == "::1"
