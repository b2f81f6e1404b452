"""Adversarial tests of egress by name (the DNS proxy, its nftables sets, the quota): a
command in the sandbox cannot open an address it did not learn through the proxy, cannot
change the sets, cannot reach the upstream resolver itself, cannot tunnel through names that
are not allowed, and hostile DNS packets, from the sandbox or from the upstream, do not hurt
the proxy or open anything. The test's DNS server is on the host's loopback; no packet goes
anywhere else."""
import ctypes
import json
import os
import random
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid

import pytest

from secutil import assert_alive, py, sh

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
from dns_responder import RESOLVE, DnsResponder, decode_question, dns, encode_name  # noqa: E402,F401 (a fixture)
from helpers import run_dir  # noqa: E402
from test_network_security import host_listener  # noqa: E402,F401 (a fixture)

GATEWAY = "10.0.2.2"
NAME = "app.capsule.test"

CONNECT = """
import socket, sys
s = socket.socket()
s.settimeout(10)
try:
    s.connect((sys.argv[1], int(sys.argv[2]))); print("CONNECTED")
except OSError as e:
    print("ERR", e.errno)
"""


def connect_inside(capsule, name, host, port):
    return py(capsule, name, CONNECT, args=(host, str(port)), check=True).stdout.strip()


def resolve_inside(capsule, name, host):
    return py(capsule, name, RESOLVE, args=(host,), check=True).stdout.strip()


def opened(capsule, name):
    r = capsule.run("net", "ls", name, "--json", check=True)
    return {a["address"] for n in json.loads(r.stdout)["names"] for a in n["addresses"]}


def create(capsule, dns, *args):
    return capsule.create("--network", "full", "--dns-server", dns.addr, "--dns-private", "--allow-host", NAME, *args)


def test_sandbox_cannot_open_addresses_or_undo_the_sets(capsule, dns, host_listener):
    dns.set(NAME, ["192.0.2.40"])
    name = create(capsule, dns)
    for cmd in (f"nft add element inet capsule_egress dns_any '{{ {GATEWAY} }}'",
                f"nft add element inet capsule_egress cidr_any '{{ {GATEWAY} }}'",
                "nft flush set inet capsule_egress dns_any", "nft delete table inet capsule_egress",
                "nft flush ruleset"):
        r = sh(capsule, name, cmd + " 2>&1")
        assert r.returncode != 0, f"'{cmd}' succeeded inside the sandbox: {r.stdout}"
    assert connect_inside(capsule, name, GATEWAY, host_listener) == "ERR 111"
    # Its own /etc/resolv.conf names only the proxy, and cannot be changed.
    r = sh(capsule, name, "cat /etc/resolv.conf; echo nameserver 10.0.2.3 >> /etc/resolv.conf")
    assert r.returncode != 0 and "nameserver 127.0.0.53" in r.stdout


def test_sandbox_cannot_reach_the_upstream_resolver_directly(capsule, dns):
    name = create(capsule, dns)
    query = struct.pack(">HHHHHH", 99, 0x0100, 1, 0, 0, 0) + encode_name("direct.capsule.test") + b"\0\1\0\1"
    probe = ("import socket, sys\n"
             "q = bytes.fromhex(sys.argv[1])\n"
             "for host, port in ((sys.argv[2], int(sys.argv[3])), ('10.0.2.3', 53)):\n"
             "    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)\n"
             "    try:\n"
             "        s.sendto(q, (host, port)); s.recv(512); print('ANSWERED')\n"
             "    except OSError as e:\n"
             "        print('ERR', e.errno)\n")
    r = py(capsule, name, probe, args=(query.hex(), GATEWAY, str(dns.port)), check=True)
    assert "ANSWERED" not in r.stdout
    # Nor over TCP, to the NAT's resolver.
    assert connect_inside(capsule, name, "10.0.2.3", 53) == "ERR 111"
    assert not [q for q in dns.queries if q[0] == "direct.capsule.test"]


def hostile_queries():
    rnd = random.Random(20)
    hdr = lambda qd=1, an=0, ar=0, flags=0x0100: struct.pack(">HHHHHH", 7, flags, qd, an, 0, ar)  # noqa: E731
    q = encode_name(NAME) + b"\0\1\0\1"
    out = [b"", b"\0" * 11, hdr(), hdr(qd=2) + q + q, hdr(an=1) + q, hdr(flags=0x8100) + q,
           hdr() + b"\xc0\x0c\0\1\0\1", hdr() + b"\xc0\x0c", hdr() + bytes([64]) + b"a" * 64 + b"\0\0\1\0\1",
           hdr() + (bytes([63]) + b"a" * 63) * 5 + b"\0\0\1\0\1", hdr() + b"\x03a.b\0\0\1\0\1",
           hdr() + encode_name(NAME)[:-1], hdr() + encode_name(NAME) + b"\0", hdr(flags=0x7900) + q,
           hdr() + q + b"\xff" * 1400]
    out += [bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(1, 600))) for _ in range(200)]
    out += [hdr() + bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(1, 300))) for _ in range(200)]
    return out


def test_malformed_queries_do_not_hurt_the_proxy(capsule, dns):
    dns.set(NAME, ["192.0.2.41"])
    name = create(capsule, dns)
    packets = hostile_queries()
    blast = ("import socket, sys, json\n"
             "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.2)\n"
             "for h in json.loads(sys.stdin.read()):\n"
             "    s.sendto(bytes.fromhex(h), ('127.0.0.53', 53))\n"
             "    try:\n"
             "        s.recv(2048)\n"
             "    except OSError:\n"
             "        pass\n"
             "print('done')\n")
    r = capsule.run("exec", "-i", name, "python3", "-c", blast, input=json.dumps([p.hex() for p in packets]),
                    timeout=300)
    assert r.stdout.strip() == "done", r.stderr
    assert_alive(capsule, name)
    assert resolve_inside(capsule, name, NAME) == "192.0.2.41"
    assert opened(capsule, name) == {"192.0.2.41"}
    # Nothing but the allowed name's A queries ever reached the upstream.
    assert {q for q in dns.queries} <= {(NAME, 1)}


def bad_answers():
    def reply(build):
        def f(packet):
            qid, _, _, end = decode_question(packet)
            return build(qid, packet[12:end])
        return f

    def rr(owner, addr, ttl=60, rtype=1, rdlen=4):
        return owner + struct.pack(">HHIH", rtype, 1, ttl, rdlen) + socket.inet_aton(addr)

    hdr = lambda qid, an, flags=0x8180: struct.pack(">HHHHHH", qid, flags, 1, an, 0, 0)  # noqa: E731
    return {
        "another name's address": reply(lambda i, q: hdr(i, 1) + q + rr(encode_name("evil.capsule.test"), "192.0.2.66")),
        "a pointer loop": reply(lambda i, q: hdr(i, 1) + q + b"\xc0\x22" + struct.pack(">HHIH", 1, 1, 60, 4) + bytes(4)),
        "the wrong id": reply(lambda i, q: hdr(i ^ 1, 1) + q + rr(b"\xc0\x0c", "192.0.2.67")),
        "rdata past the end": reply(lambda i, q: hdr(i, 1) + q + rr(b"\xc0\x0c", "192.0.2.68", rdlen=400)),
        "another question": reply(lambda i, q: hdr(i, 1) + encode_name("evil.capsule.test") + b"\0\1\0\1"
                                  + rr(b"\xc0\x0c", "192.0.2.69")),
        "a query, not an answer": reply(lambda i, q: hdr(i, 1, flags=0x0100) + q + rr(b"\xc0\x0c", "192.0.2.70")),
        "a count past the records": reply(lambda i, q: hdr(i, 50) + q + rr(b"\xc0\x0c", "192.0.2.71")),
    }


# One A query straight to the proxy with a short wait (an answer the proxy ignores leaves the
# query waiting for the real one): "RCODE NANSWERS", or "TIMEOUT".
ASK = """
import socket, struct, sys
q = struct.pack(">HHHHHH", 5, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(l)]) + l.encode() for l in sys.argv[1].split(".")) + b"\\0\\0\\1\\0\\1"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1.5)
s.sendto(q, ("127.0.0.53", 53))
try:
    d = s.recv(2048); print(d[3] & 15, struct.unpack(">H", d[6:8])[0])
except socket.timeout:
    print("TIMEOUT")
"""


def test_hostile_upstream_answers_open_nothing(capsule, dns):
    name = create(capsule, dns)
    for what, reply in bad_answers().items():
        dns.raw_reply = reply
        out = py(capsule, name, ASK, args=(NAME,), check=True).stdout.strip()
        assert out == "TIMEOUT" or out.split()[1] == "0", f"{what}: {out}"
        assert opened(capsule, name) == set(), what
    dns.raw_reply = None
    dns.set(NAME, ["192.0.2.42"])
    assert resolve_inside(capsule, name, NAME) == "192.0.2.42"
    assert_alive(capsule, name)


# COUNT A queries to the proxy as fast as they go, for NAME ('%d' in it: the query's number).
FLOOD = """
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(int(sys.argv[2])):
    n = sys.argv[1] % i if "%d" in sys.argv[1] else sys.argv[1]
    q = b"".join(bytes([len(l)]) + l.encode() for l in n.split(".")) + b"\\0\\0\\1\\0\\1"
    s.sendto(struct.pack(">HHHHHH", i & 0xffff, 0x0100, 1, 0, 0, 0) + q, ("127.0.0.53", 53))
"""


def test_a_flood_of_lookups_reaches_the_upstream_at_a_bounded_rate(capsule, dns):
    """The proxy asks the upstream at most 100 times a second (with a burst of 100): a
    sandbox cannot turn it into a flood of the host's resolver."""
    dns.set(NAME, ["192.0.2.43"])
    name = create(capsule, dns)
    t0 = time.monotonic()
    py(capsule, name, FLOOD, args=(NAME, "1000"), check=True)
    time.sleep(1)
    elapsed = time.monotonic() - t0
    asked = sum(1 for q in dns.queries if q[0] == NAME)
    assert asked <= 100 + 100 * elapsed + 5, (asked, elapsed)
    assert_alive(capsule, name)


def test_a_flood_of_refused_names_does_not_fill_the_shim_log(capsule, dns):
    """A refused name is counted and logged at most once a second, as a count: a line per
    query would let the sandbox fill the host's disk through its shim.log."""
    dns.set(NAME, ["192.0.2.44"])
    name = create(capsule, dns)
    py(capsule, name, FLOOD, args=(("x" * 60 + ".") * 3 + "n%d.evil.test", "5000"), check=True)
    assert_alive(capsule, name)
    log = os.path.join(run_dir(capsule, name), "shim.log")
    size = os.path.getsize(log)
    assert size < 64 * 1024, size
    with open(log) as f:
        assert "names not allowed got NXDOMAIN" in f.read()
    # The bucket refills at 100 a second: the proxy answers the allowed name again.
    for _ in range(10):
        got = resolve_inside(capsule, name, NAME)
        if got == "192.0.2.44":
            break
        time.sleep(0.2)
    assert got == "192.0.2.44"
    assert capsule.inspect(name)["network"]["egress"]["dns_refused"] > 0


# ---- a name that resolves to the host itself ----------------------------------------------

HOST_ADDR, OTHER_ADDR = "203.0.113.7", "203.0.113.8"  # TEST-NET-3: public, not internal


def in_netns(path, fn):
    """FN() run on a thread that joined the network namespace at PATH: sockets it makes live
    there (Python 3.11 has no os.setns, so libc's)."""
    libc = ctypes.CDLL(None, use_errno=True)
    out = {}

    def run():
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
                raise OSError(ctypes.get_errno(), "setns")
            out["value"] = fn()
        except BaseException as e:  # noqa: B902 (handed to the caller)
            out["error"] = e
        finally:
            os.close(fd)
    t = threading.Thread(target=run)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


@pytest.fixture
def host_netns():
    """A network namespace of the test's own, standing for the host: loopback, holding
    HOST_ADDR too, as an interface holds a public address of the host's (a dummy interface
    needs a module this kernel may lack). A sandbox created from in there has its shim and its
    NAT there, so the proxy's host is this one."""
    ns = f"capsule-t-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        for cmd in (["link", "set", "lo", "up"], ["addr", "add", f"{HOST_ADDR}/32", "dev", "lo"]):
            subprocess.run(["ip", "-n", ns, *cmd], check=True)
        yield f"/run/netns/{ns}"
    finally:
        subprocess.run(["ip", "netns", "del", ns])


def test_a_name_resolving_to_an_address_of_the_host_opens_nothing(capsule, host_netns):
    """An allowed name whose owner points it at one of the host's own addresses (a public one
    here, so not in the internal ranges) would open the host's services listening there to the
    sandbox, through the NAT. The proxy leaves such an address out of its answer and opens
    nothing for it, with --dns-private too; the other address of the answer opens as usual.
    All traffic stays in the test's namespace."""
    dns = in_netns(host_netns, DnsResponder)
    listener = in_netns(host_netns, lambda: socket.create_server((HOST_ADDR, 0)))
    port = listener.getsockname()[1]
    try:
        dns.set(NAME, [HOST_ADDR, OTHER_ADDR], ttl=60)
        name = capsule.unique_name("hostaddr")
        r = subprocess.run(["nsenter", f"--net={host_netns}", capsule.binary, "create", "--name", name,
                            "--network", "full", "--dns-server", dns.addr, "--dns-private",
                            "--allow-host", f"{NAME}:{port}"],
                           env=capsule.env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert connect_inside(capsule, name, HOST_ADDR, port) == "ERR 111"
        assert resolve_inside(capsule, name, NAME) == OTHER_ADDR
        assert opened(capsule, name) == {OTHER_ADDR}
        assert connect_inside(capsule, name, HOST_ADDR, port) == "ERR 111"
        with open(os.path.join(run_dir(capsule, name), "shim.log")) as f:
            log = f.read()
        assert f"dns: '{NAME}': {HOST_ADDR} is an address of this host: not opened" in log, log
    finally:
        listener.close()
        dns.close()
