"""Adversarial network cases: `none` is really none, the full mode's allowlist cannot be
undone from inside, forwards listen on loopback only and are bounded, and malformed port
requests cannot hurt the shim.

Traffic only goes to the host's loopback (servers started here) or into the test's own
sandboxes; a probe aimed elsewhere runs in a sandbox with no route, so nothing leaves."""
import json
import os
import socket
import struct
import subprocess
import time
import uuid

import pytest

from secutil import (ERROR, HELLO, OK, assert_alive, connect, frame, hello_frame, parse_fields, parse_frames, py,
                     read_until_quiet, sh, tlv, wait_until)

GATEWAY = "10.0.2.2"
PORT_ADD, PORT_REMOVE, PORTS = 83, 84, 85


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def host_listener():
    """A TCP listener on the host's 127.0.0.1 that accepts and closes."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    yield s.getsockname()[1]
    s.close()


@pytest.fixture
def abstract_socket():
    """An abstract unix socket on the host (abstract names belong to a network namespace)."""
    name = "capsule-test-" + uuid.uuid4().hex
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind("\0" + name)
    s.listen(4)
    yield name
    s.close()


CONNECT = """
import socket, sys
fam = socket.AF_UNIX if sys.argv[1] == "unix" else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM); s.settimeout(5)
try:
    s.connect("\\0" + sys.argv[2] if fam == socket.AF_UNIX else (sys.argv[2], int(sys.argv[3])))
    print("CONNECTED")
except OSError as e:
    print("ERR", e.errno)
"""


def connect_inside(capsule, name, *args):
    r = py(capsule, name, CONNECT, args=args)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


# ---- none is none ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["none", "mounts-only"])
def test_none_has_no_route_out(capsule, mode):
    name = capsule.create("--network", mode)
    # No route: the kernel refuses before any packet exists.
    assert connect_inside(capsule, name, "tcp", GATEWAY, "80") == "ERR 101"
    assert connect_inside(capsule, name, "tcp", "192.0.2.1", "443") == "ERR 101"


def test_none_has_no_dns(capsule):
    name = capsule.create()
    r = py(capsule, name, "import socket\ntry:\n socket.getaddrinfo('example.com', 80); print('RESOLVED')\n"
                          "except OSError as e: print('ERR')")
    assert r.stdout.strip() == "ERR", r.stdout


def test_none_cannot_reach_host_loopback_service(capsule, host_listener):
    name = capsule.create()
    # The sandbox's 127.0.0.1 is its own: the host's listener is not there.
    assert connect_inside(capsule, name, "tcp", "127.0.0.1", str(host_listener)) == "ERR 111"


@pytest.mark.parametrize("mode", ["none", "full"])
def test_host_abstract_unix_socket_is_unreachable(capsule, abstract_socket, mode):
    name = capsule.create("--network", mode)
    assert connect_inside(capsule, name, "unix", abstract_socket) == "ERR 111"


def test_full_host_loopback_only_through_gateway(capsule, host_listener):
    name = capsule.create("--network", "full")
    assert connect_inside(capsule, name, "tcp", "127.0.0.1", str(host_listener)) == "ERR 111"
    assert connect_inside(capsule, name, "tcp", GATEWAY, str(host_listener)) == "CONNECTED"


# ---- the allowlist cannot be undone from inside ---------------------------------------------------


def test_commands_have_no_net_admin(capsule):
    name = capsule.create("--network", "full")
    r = sh(capsule, name, "grep CapEff /proc/self/status", check=True)
    cap_eff = int(r.stdout.split()[1], 16)
    assert not cap_eff & (1 << 12), "CAP_NET_ADMIN in a command's effective set"
    assert not cap_eff & (1 << 21), "CAP_SYS_ADMIN in a command's effective set"


def test_sandbox_cannot_flush_allowlist_or_routes(capsule, host_listener):
    name = capsule.create("--network", "full", "--allow-cidr", "10.0.2.3/32:53")
    assert connect_inside(capsule, name, "tcp", GATEWAY, str(host_listener)) == "ERR 111"
    for cmd in ("nft flush ruleset", "ip route del default", "ip link set tap0 down", "unshare -rn true"):
        r = sh(capsule, name, cmd + " 2>&1")
        assert r.returncode != 0, f"'{cmd}' succeeded inside the sandbox: {r.stdout}"
    # Netlink straight from python, not only the tools: deleting the rules table is refused.
    nl = ("import socket, struct\n"
          "s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)\n"
          "msg = struct.pack('=LHHLL', 16, (10 << 8) | 2, 1 | 4, 1, 0)\n"  # NFT_MSG_DELTABLE, ack
          "s.send(msg); d = s.recv(4096)\n"
          "print(struct.unpack('=i', d[16:20])[0])")
    r = py(capsule, name, nl)
    assert r.returncode != 0 or int(r.stdout.strip()) < 0, r.stdout
    assert connect_inside(capsule, name, "tcp", GATEWAY, str(host_listener)) == "ERR 111"


# ---- forwards -------------------------------------------------------------------------------------


def listening_addresses(port):
    """Local addresses of host TCP sockets listening on PORT (from /proc/net/tcp{,6})."""
    out = []
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(path) as f:
            for line in f.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                addr, p = local.split(":")
                if state == "0A" and int(p, 16) == port:
                    out.append(addr)
    return out


def test_forward_listens_on_host_loopback_only_by_default(capsule):
    port = free_port()
    capsule.create("-p", f"{port}:80")
    assert listening_addresses(port) == ["0100007F"]  # 127.0.0.1, not 0.0.0.0


def shim_fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


HOLD_SERVER = """
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 9200)); s.listen(1024); held = []
while True:
    c, _ = s.accept(); held.append(c)
"""


def test_connection_flood_is_bounded_and_forward_recovers(capsule):
    port = free_port()
    name = capsule.create("-p", f"{port}:9200")
    sh(capsule, name, "true", check=True)
    capsule.run("exec", "-d", name, "sh", "-c", 'echo $$ > /tmp/hold.pid; exec python3 -c "$0"', HOLD_SERVER,
                check=True)
    shim = capsule.inspect(name)["shim_pid"]
    base = shim_fd_count(shim)
    time.sleep(0.5)
    socks = []
    try:
        for _ in range(400):
            try:
                socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            except OSError:
                break
        time.sleep(1)
        # At most 128 relayed connections, six fds each; the rest were closed on accept.
        assert shim_fd_count(shim) <= base + 128 * 6 + 16
    finally:
        for s in socks:
            s.close()
    # Each relay is half-closed now (our side ended, the server's not): it lives until the
    # server ends too.
    sh(capsule, name, "kill $(cat /tmp/hold.pid)", check=True)
    assert wait_until(lambda: shim_fd_count(shim) <= base + 4, timeout=20), "relayed connections not closed"
    c = socket.create_connection(("127.0.0.1", port), timeout=5)
    c.close()
    assert_alive(capsule, name)


# ---- malformed port requests ------------------------------------------------------------------------


def port_payload(host_ip="127.0.0.1", host_port=None, guest_port=None, flags=None, extra=b""):
    p = b""
    if host_ip is not None:
        p += tlv(1, host_ip)
    if host_port is not None:
        p += tlv(2, struct.pack("<I", host_port))
    if guest_port is not None:
        p += tlv(3, struct.pack("<I", guest_port))
    if flags is not None:
        p += tlv(4, struct.pack("<I", flags))
    return p + extra


def talk_one(capsule, name, ftype, payload, chan=1):
    s = connect(capsule, name)
    try:
        s.sendall(hello_frame() + frame(ftype, chan, payload))
        buf, _ = read_until_quiet(s, quiet=2, total=10, until=lambda fr: len(fr) >= 2)
    finally:
        s.close()
    frames = parse_frames(buf)[0]
    assert frames and frames[0][0] == HELLO, frames
    return frames[1:]


@pytest.mark.parametrize("ftype,payload", [
    (PORT_ADD, port_payload(host_port=8080)),                        # no guest port
    (PORT_ADD, port_payload(host_port=0, guest_port=80)),            # port 0
    (PORT_ADD, port_payload(host_port=70000, guest_port=80)),        # out of range
    (PORT_ADD, port_payload(host_ip=None, host_port=8080, guest_port=80)),
    (PORT_ADD, port_payload(host_ip="x" * 200, host_port=8080, guest_port=80)),
    (PORT_ADD, port_payload(host_port=8080, guest_port=80, flags=0x80)),  # unknown flag
    (PORT_ADD, port_payload(host_port=8080, guest_port=80)[:-2]),    # truncated field
    (PORT_REMOVE, port_payload(host_port=8080, guest_port=80)),      # remove with a guest port
    (PORT_ADD, port_payload(host_ip="127.0.0.1\n", host_port=8080, guest_port=80)),
    (PORT_ADD, port_payload(host_ip="not-an-address", host_port=8080, guest_port=80)),
    (PORT_ADD, port_payload(host_port=8080, guest_port=80, flags=1)),  # udp
])
def test_malformed_port_requests_are_refused(capsule, sandbox, ftype, payload):
    frames = talk_one(capsule, sandbox, ftype, payload)
    assert frames and frames[0][0] == ERROR, frames
    assert_alive(capsule, sandbox)
    r = capsule.run("port", "ls", sandbox, "--json", check=True)
    assert r.stdout.strip() == "[]"


def test_port_request_on_channel_zero_is_refused(capsule, sandbox):
    frames = talk_one(capsule, sandbox, PORT_ADD, port_payload(host_port=free_port(), guest_port=80), chan=0)
    assert frames and frames[0][0] == ERROR
    assert_alive(capsule, sandbox)


def test_raw_port_add_then_ports_lists_it(capsule, sandbox):
    port = free_port()
    frames = talk_one(capsule, sandbox, PORT_ADD, port_payload(host_port=port, guest_port=80))
    assert frames and frames[0][0] == OK, frames
    frames = talk_one(capsule, sandbox, PORTS, b"")
    assert frames[0][0] == OK
    fields = dict(parse_fields(frames[0][3]))
    assert [p["host_port"] for p in json.loads(fields[2])] == [port], fields[2]
