"""Egress by name (--allow-host NAME[:PORT] at the container level): the sandbox's DNS proxy
answers only allowed names, asking the test's own DNS server (on the host's loopback), and
opens in the sandbox's nftables table exactly the addresses it handed out, for their TTL;
`capsule net allow|deny|ls` change the rules of a running sandbox; --egress-quota. At both
levels: a vm's guest asks the shim's proxy through its agent, and its kernel holds the rules.

The names resolve to 10.0.2.2 (the host's loopback seen from the sandbox, where this test's
servers listen) or to TEST-NET addresses that no packet is ever sent to: traffic only goes to
the host's loopback."""
import json
import socket
import threading
import time

import pytest

from .dns_responder import RESOLVE, dns  # noqa: F401 (a fixture)
from .helpers import assert_capsule_error
from .test_network import GATEWAY, fetch_inside, host_server, host_server2  # noqa: F401 (fixtures)
from .test_vm import BOOT_TIMEOUT, boots

NAME = "app.capsule.test"


def resolve_inside(capsule, name, host):
    r = capsule.run("exec", name, "python3", "-c", RESOLVE, host, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def net_ls(capsule, name):
    r = capsule.run("net", "ls", name, "--json", check=True)
    return json.loads(r.stdout)


def open_addresses(capsule, name, host):
    return {a["address"] for n in net_ls(capsule, name)["names"] if n["name"] == host for a in n["addresses"]}


def create(capsule, dns, *args):
    return capsule.create("--network", "full", "--dns-server", dns.addr, *args)


def test_allowed_name_opens_exactly_its_address_and_port(capsule, dns, host_server, host_server2):
    dns.set(NAME, [GATEWAY], ttl=60)
    name = create(capsule, dns, "--dns-private", "--allow-host", f"{NAME}:{host_server.port}")
    # Not learned by DNS yet: the address is closed.
    assert fetch_inside(capsule, name, f"http://{GATEWAY}:{host_server.port}/token") == "ERR 111"
    assert fetch_inside(capsule, name, f"http://{NAME}:{host_server.port}/token") == host_server.token
    # The same address on another port stays closed.
    assert fetch_inside(capsule, name, f"http://{GATEWAY}:{host_server2.port}/token") == "ERR 111"
    assert open_addresses(capsule, name, NAME) == {GATEWAY}
    net = capsule.inspect(name)["network"]
    assert net["allow_names"] == [{"name": NAME, "port": host_server.port}]
    assert net["egress"]["names"][0]["addresses"][0]["address"] == GATEWAY


def test_other_names_get_nxdomain_and_never_reach_the_upstream(capsule, dns):
    dns.set(NAME, ["192.0.2.10"])
    dns.set("other.capsule.test", ["192.0.2.11"])
    name = create(capsule, dns, "--allow-host", NAME)
    assert resolve_inside(capsule, name, "other.capsule.test") == f"ERR {socket.EAI_NONAME}"
    # A name below an allowed one is another name (no tunnel through its labels).
    assert resolve_inside(capsule, name, f"data-0123.{NAME}") == f"ERR {socket.EAI_NONAME}"
    assert [q for q in dns.queries if q[0] != NAME] == []
    assert resolve_inside(capsule, name, NAME) == "192.0.2.10"
    assert open_addresses(capsule, name, NAME) == {"192.0.2.10"}


def test_name_moving_to_a_new_address_opens_it_and_closes_the_old_after_its_ttl(capsule, dns, host_server):
    dns.set(NAME, [GATEWAY], ttl=2)
    name = create(capsule, dns, "--dns-private", "--allow-host", NAME)
    check_moves_after_ttl(capsule, dns, name, NAME, host_server)


def check_moves_after_ttl(capsule, dns, name, host, server):
    """HOST (answered GATEWAY with a TTL of 2 s) reaches SERVER; once it moves to a TEST-NET
    address, the old address closes with its TTL (the kernel's set timeout) and the new one
    opens on the next lookup."""
    assert fetch_inside(capsule, name, f"http://{host}:{server.port}/token") == server.token
    dns.set(host, ["192.0.2.20"], ttl=60)
    deadline = time.monotonic() + 30
    while GATEWAY in open_addresses(capsule, name, host) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert fetch_inside(capsule, name, f"http://{GATEWAY}:{server.port}/token") == "ERR 111"
    assert resolve_inside(capsule, name, host) == "192.0.2.20"
    assert open_addresses(capsule, name, host) == {"192.0.2.20"}


def test_internal_answers_are_not_opened_without_dns_private(capsule, dns, host_server):
    """DNS rebinding: a public name made to point at the host's loopback (or a private
    network) opens nothing unless the sandbox was created with --dns-private."""
    dns.set(NAME, [GATEWAY, "192.168.1.5", "169.254.169.254", "198.18.0.7", "198.19.255.1", "192.0.0.170",
                   "192.0.2.30"], ttl=60)
    name = create(capsule, dns, "--allow-host", NAME)
    assert resolve_inside(capsule, name, NAME) == "192.0.2.30"
    assert open_addresses(capsule, name, NAME) == {"192.0.2.30"}
    assert fetch_inside(capsule, name, f"http://{GATEWAY}:{host_server.port}/token") == "ERR 111"


def test_net_allow_deny_and_ls_change_a_running_sandbox(capsule, dns, host_server, host_server2):
    dns.set(NAME, [GATEWAY], ttl=60)
    name = create(capsule, dns, "--dns-private", "--allow-cidr", "192.0.2.1/32")
    assert resolve_inside(capsule, name, NAME) == f"ERR {socket.EAI_NONAME}"
    capsule.run("net", "allow", name, f"{NAME}:{host_server.port}", check=True)
    assert fetch_inside(capsule, name, f"http://{NAME}:{host_server.port}/token") == host_server.token
    capsule.run("net", "deny", name, f"{NAME}:{host_server.port}", check=True)
    assert fetch_inside(capsule, name, f"http://{GATEWAY}:{host_server.port}/token") == "ERR 111"
    assert resolve_inside(capsule, name, NAME) == f"ERR {socket.EAI_NONAME}"
    # An address rule, added and removed.
    capsule.run("net", "allow", name, f"{GATEWAY}/32:{host_server2.port}", check=True)
    assert fetch_inside(capsule, name, f"http://{GATEWAY}:{host_server2.port}/token") == host_server2.token
    ls = net_ls(capsule, name)
    assert {c["rule"] for c in ls["cidrs"]} == {"192.0.2.1/32", f"{GATEWAY}/32:{host_server2.port}"}
    assert ls["names"] == []
    capsule.run("net", "deny", name, f"{GATEWAY}/32:{host_server2.port}", check=True)
    assert fetch_inside(capsule, name, f"http://{GATEWAY}:{host_server2.port}/token") == "ERR 111"
    r = capsule.run("net", "ls", name, check=True)
    assert "cidr  192.0.2.1/32" in r.stdout


def test_net_requests_errors_are_one_line(capsule, dns):
    name = create(capsule, dns, "--allow-host", NAME)
    for args, words in [(["deny", name, "nothere.capsule.test"], "is not allowed"),
                        (["allow", name, NAME], "already allowed"),
                        (["allow", name, "bad_name!"], "not a DNS name"),
                        (["allow", name, "10.0.0.0/40"], "--allow-cidr"),
                        (["allow", name, f"{NAME}:99999"], "expected NAME[:PORT]")]:
        r = capsule.run("net", *args)
        assert_capsule_error(r)
        assert words in r.stderr, (args, r.stderr)
    plain = capsule.create("--network", "full")
    r = capsule.run("net", "allow", plain, NAME)
    assert_capsule_error(r)
    assert "no egress allowlist" in r.stderr


class Sink:
    """A TCP server on the host's loopback that reads and drops whatever it is sent."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.received = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with c:
                while True:
                    try:
                        b = c.recv(65536)
                    except OSError:
                        break
                    if not b:
                        break
                    self.received += len(b)


SEND = """
import socket, sys
sent = 0
try:
    s = socket.create_connection(("10.0.2.2", int(sys.argv[1])), timeout=10)
    for _ in range(1024):
        s.sendall(b"x" * 16384)
        sent += 16384
    print("SENT", sent)
except OSError as e:
    print("ERR", e.errno, sent)
"""


def test_egress_quota_refuses_open_and_new_connections_once_used(capsule):
    check_quota_of(capsule, lambda: capsule.create("--network", "full", "--egress-quota", "256K"))


def check_quota_of(capsule, create):
    """A sandbox with --egress-quota 256K (made by CREATE) sends to a sink on the host until
    it is refused, open connection included; inspect shows the quota used, and a new
    connection is refused before a byte is sent."""
    sink = Sink()
    try:
        name = create()
        r = capsule.run("exec", name, "python3", "-c", SEND, str(sink.port), timeout=60)
        assert r.stdout.startswith("ERR"), r.stdout + r.stderr
        sent = int(r.stdout.split()[2])
        assert sent < 16 << 20
        quota = capsule.inspect(name)["network"]["egress"]["quota"]
        assert quota["bytes"] == 256 * 1024 and quota["used"] >= 256 * 1024
        r = capsule.run("exec", name, "python3", "-c", SEND, str(sink.port), timeout=60)
        assert r.stdout.startswith("ERR") and r.stdout.split()[2] == "0", r.stdout + r.stderr
    finally:
        sink.sock.close()


# ---- the vm level: the same proxy (the shim's), its queries and elements over the agent channel,
# the rules in the guest's kernel. One boot in make check; the rest are vm_slow.

def create_vm(capsule, dns, *args):
    name = capsule.unique_name("vmegress")
    r = capsule.run("create", "--isolation", "vm", "--name", name, "--network", "full", "--dns-server", dns.addr,
                    *args, timeout=BOOT_TIMEOUT)
    assert r.returncode == 0, r.stderr
    return name


@boots
def test_vm_names_are_answered_by_the_shims_proxy_and_net_allow_changes_a_running_vm(capsule, dns, host_server,
                                                                                      host_server2):
    other = "other.capsule.test"
    dns.set(NAME, [GATEWAY], ttl=60)
    dns.set(other, [GATEWAY], ttl=60)
    name = create_vm(capsule, dns, "--dns-private", "--allow-host", f"{NAME}:{host_server.port}")
    r = capsule.run("exec", name, "cat", "/etc/resolv.conf", check=True)
    assert "nameserver 127.0.0.53" in r.stdout
    # The agent holds the proxy's port: no command can answer in its place.
    r = capsule.run("exec", name, "python3", "-c", "import socket; socket.socket(socket.AF_INET, "
                    "socket.SOCK_DGRAM).bind(('127.0.0.53', 53))")
    assert r.returncode != 0 and ("Address already in use" in r.stderr or "Permission denied" in r.stderr), r.stderr
    # Not learned by DNS yet: the address is closed in the guest's table.
    assert fetch_inside(capsule, name, f"http://{GATEWAY}:{host_server.port}/token") == "ERR 111"
    assert fetch_inside(capsule, name, f"http://{NAME}:{host_server.port}/token") == host_server.token
    assert open_addresses(capsule, name, NAME) == {GATEWAY}
    # The same address on another port, and any other address, stay closed (refused in the
    # guest: no packet leaves it).
    assert fetch_inside(capsule, name, f"http://{GATEWAY}:{host_server2.port}/token") == "ERR 111"
    assert fetch_inside(capsule, name, "http://192.0.2.1:80/") == "ERR 111"
    # Other names: NXDOMAIN, and nothing reaches the upstream.
    assert resolve_inside(capsule, name, other) == f"ERR {socket.EAI_NONAME}"
    assert [q for q in dns.queries if q[0] != NAME] == []
    # net allow on the running vm: the new name is answered and its address opened.
    capsule.run("net", "allow", name, f"{other}:{host_server2.port}", check=True)
    assert fetch_inside(capsule, name, f"http://{other}:{host_server2.port}/token") == host_server2.token
    ls = net_ls(capsule, name)
    assert {n["name"] for n in ls["names"]} == {NAME, other}
    assert ls["dns_refused"] >= 1


@pytest.mark.vm_slow
@boots
def test_vm_net_deny_closes_what_was_opened_an_address_closes_with_its_ttl_and_networks_change(
        capsule, dns, host_server, host_server2):
    other = "other.capsule.test"
    dns.set(NAME, [GATEWAY], ttl=60)
    dns.set(other, [GATEWAY], ttl=2)
    name = create_vm(capsule, dns, "--dns-private", "--allow-host", f"{NAME}:{host_server.port}",
                     "--allow-host", f"{other}:{host_server2.port}")
    assert fetch_inside(capsule, name, f"http://{NAME}:{host_server.port}/token") == host_server.token
    capsule.run("net", "deny", name, f"{NAME}:{host_server.port}", check=True)
    assert fetch_inside(capsule, name, f"http://{GATEWAY}:{host_server.port}/token") == "ERR 111"
    assert resolve_inside(capsule, name, NAME) == f"ERR {socket.EAI_NONAME}"
    # A TTL of 2 s: the guest's kernel closes the address when it ends, whatever the shim does.
    check_moves_after_ttl(capsule, dns, name, other, host_server2)
    # A network, allowed and denied on the running vm (the guest's chain of networks replaced).
    capsule.run("net", "allow", name, f"{GATEWAY}/32:{host_server.port}", check=True)
    assert fetch_inside(capsule, name, f"http://{GATEWAY}:{host_server.port}/token") == host_server.token
    assert {c["rule"] for c in net_ls(capsule, name)["cidrs"]} == {f"{GATEWAY}/32:{host_server.port}"}
    capsule.run("net", "deny", name, f"{GATEWAY}/32:{host_server.port}", check=True)
    assert fetch_inside(capsule, name, f"http://{GATEWAY}:{host_server.port}/token") == "ERR 111"
    assert net_ls(capsule, name)["cidrs"] == []
    # Paused, the guest cannot change its table: a change of the networks waits for the resume.
    capsule.run("pause", name, check=True)
    r = capsule.run("net", "allow", name, "192.0.2.0/24")
    assert_capsule_error(r)
    assert "is paused: resume it first" in r.stderr
    capsule.run("resume", name, check=True)
    capsule.run("net", "allow", name, "192.0.2.0/24", check=True)


@pytest.mark.vm_slow
@boots
def test_vm_egress_quota_refuses_open_and_new_connections_once_used(capsule):
    def create():
        name = capsule.unique_name("vmquota")
        r = capsule.run("create", "--isolation", "vm", "--name", name, "--network", "full", "--egress-quota", "256K",
                        timeout=BOOT_TIMEOUT)
        assert r.returncode == 0, r.stderr
        names.append(name)
        return name
    names = []
    check_quota_of(capsule, create)
    # Paused, the guest cannot say what it used: net ls answers at once, without the quota.
    capsule.run("pause", names[0], check=True)
    assert net_ls(capsule, names[0])["quota"] is None
    capsule.run("resume", names[0], check=True)
    assert net_ls(capsule, names[0])["quota"]["used"] >= 256 * 1024
