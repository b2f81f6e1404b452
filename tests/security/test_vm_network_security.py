"""Adversarial network cases of vm isolation: a `none` guest has no way to the host's
loopback services, a `full` guest's root cannot reconfigure its network or its DNS, nor
delete or change its egress allowlist's table (in place before the first command), port
forwards open nothing on the host beyond the asked ports (QEMU itself listens on nothing),
and the shim->agent messages that carry forwarded connections cannot be sent by a client.

Traffic only goes to the host's loopback (listeners started here) or into the test's VMs."""
import json
import os
import socket
import struct
import subprocess

import pytest

from secutil import (ERROR, Capsule, connect, frame, hello_frame, parse_fields, parse_frames, py,
                     read_until_quiet, sh, wait_until)
from test_network_security import CONNECT, connect_inside, free_port, host_listener  # noqa: F401 (a fixture)
from tests.e2e.test_vm import BOOT_TIMEOUT, boots
from tests.e2e.test_vm_network import listening_ports_of

GATEWAY = "10.0.2.2"
FWD_CONNECT, FWD_CLOSE, DNS_QUERY, EGRESS, EGRESS_USED = 53, 54, 56, 57, 58

# Answers each connection with its own port number, on every port given.
NAMED_SERVERS = """
import socket, sys, threading
def serve(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port)); s.listen(8)
    while True:
        c, _ = s.accept(); c.sendall(str(port).encode()); c.close()
for p in sys.argv[1:]:
    threading.Thread(target=serve, args=(int(p),)).start()
"""


def read_from(port):
    with socket.create_connection(("127.0.0.1", port), timeout=30) as c:
        data = b""
        while chunk := c.recv(100):
            data += chunk
        return data.decode()


@pytest.fixture(scope="module")
def vmcap(capsule_home):
    c = Capsule(capsule_home)
    yield c
    c.cleanup()


def create_vm(capsule, *args):
    name = capsule.unique_name("vmsec")
    r = capsule.run("create", "--isolation", "vm", "--name", name, *args, timeout=BOOT_TIMEOUT)
    assert r.returncode == 0, r.stderr
    return name


# ---- no boot: the shim refuses the agent-only messages from clients ------------------------------


@pytest.mark.parametrize("ftype,payload", [(FWD_CONNECT, struct.pack("<HII", 1, 4, 22)), (FWD_CLOSE, b""),
                                           (DNS_QUERY, struct.pack("<HII", 2, 4, 53)), (EGRESS, b""),
                                           (EGRESS_USED, b"")])
def test_client_cannot_send_forwarded_connection_messages(capsule, ftype, payload):
    name = capsule.create()
    with connect(capsule, name) as s:
        s.sendall(hello_frame() + frame(ftype, 0x80000001, payload))
        buf, _ = read_until_quiet(s, until=lambda fr: any(f[0] == ERROR for f in fr))
    errors = [f for f in parse_frames(buf)[0] if f[0] == ERROR]
    assert errors, "no ERROR for an agent-only message from a client"
    fields = dict(parse_fields(errors[0][3]))
    assert struct.unpack("<I", fields[1])[0] == 95  # EOPNOTSUPP
    assert b"not a request a client can make" in fields[2]
    r = capsule.run("exec", name, "echo", "ok")
    assert r.stdout.strip() == "ok"


# ---- make check-vm ------------------------------------------------------------------------------


@pytest.mark.vm_slow
@boots
def test_vm_none_cannot_reach_host_loopback_services(vmcap, host_listener):
    name = create_vm(vmcap)
    # No NIC at all (virtio device 1 is a network card), so no route: refused before any packet.
    r = sh(vmcap, name, "cat /sys/bus/virtio/devices/*/device", check=True)
    assert "0x0001" not in r.stdout.split()
    assert connect_inside(vmcap, name, "tcp", GATEWAY, str(host_listener)) == "ERR 101"
    assert connect_inside(vmcap, name, "tcp", "192.0.2.1", "443") == "ERR 101"
    # The guest's 127.0.0.1 is its own kernel's.
    assert connect_inside(vmcap, name, "tcp", "127.0.0.1", str(host_listener)) == "ERR 111"


@pytest.mark.vm_slow
@boots
def test_vm_forwards_open_nothing_beyond_the_asked_ports(vmcap):
    port = free_port()
    name = create_vm(vmcap, "-p", f"{port}:7001")
    info = vmcap.inspect(name)
    shim, qemu = info["shim_pid"], info["vm"]["qemu_pid"]
    vmcap.run("exec", "-d", name, "--", "python3", "-c", NAMED_SERVERS, "7001", "7002", check=True)
    assert listening_ports_of(shim) == {port}
    assert listening_ports_of(qemu) == set()
    # A connection reaches the asked guest port, and only it.
    assert wait_until(lambda: _try_read(port) == "7001", timeout=90)
    port2 = free_port()
    vmcap.run("port", "add", name, f"{port2}:7002", check=True)
    assert listening_ports_of(shim) == {port, port2}
    assert _try_read(port2) == "7002"
    vmcap.run("port", "rm", name, str(port2), check=True)
    assert listening_ports_of(shim) == {port} and listening_ports_of(qemu) == set()
    ports = json.loads(vmcap.run("port", "ls", name, "--json", check=True).stdout)
    assert [(p["host_ip"], p["host_port"]) for p in ports] == [("127.0.0.1", port)]


def _try_read(port):
    try:
        return read_from(port)
    except OSError:
        return None


@pytest.mark.vm_slow
@boots
def test_vm_full_guest_root_cannot_reconfigure_its_network_or_dns(vmcap, host_listener):
    name = create_vm(vmcap, "--network", "full")
    r = sh(vmcap, name, "grep CapEff /proc/self/status", check=True)
    cap_eff = int(r.stdout.split()[1], 16)
    assert not cap_eff & (1 << 12) and not cap_eff & (1 << 21), "CAP_NET_ADMIN or CAP_SYS_ADMIN in a command"
    for cmd in ("echo nameserver 192.0.2.53 > /etc/resolv.conf", "umount /etc/resolv.conf",
                "rm -f /etc/resolv.conf", "mount -o remount,rw /etc/resolv.conf"):
        r = sh(vmcap, name, cmd + " 2>&1")
        assert r.returncode != 0, f"'{cmd}' succeeded in the guest: {r.stdout}"
    assert sh(vmcap, name, "cat /etc/resolv.conf", check=True).stdout.splitlines()[-1] == "nameserver 10.0.2.3"
    # Taking the NIC down or moving the route needs CAP_NET_ADMIN: the ioctls are refused.
    down = ("import fcntl, socket, struct\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "try:\n fcntl.ioctl(s, 0x8914, struct.pack('16sH22x', b'eth0', 0)); print('DOWN')\n"
            "except OSError as e: print('ERR', e.errno)")
    assert py(vmcap, name, down, check=True).stdout.strip() == "ERR 1"
    # The host's loopback only through the gateway, as for a container's full.
    assert connect_inside(vmcap, name, "tcp", "127.0.0.1", str(host_listener)) == "ERR 111"
    assert connect_inside(vmcap, name, "tcp", GATEWAY, str(host_listener)) == "CONNECTED"


# ---- the egress allowlist: the guest's own nf_tables table ---------------------------------------

# BATCH_BEGIN, NFT_MSG_DELTABLE of inet capsule_egress (ack asked), BATCH_END on a raw
# NETLINK_NETFILTER socket: prints the kernel's answer to the DELTABLE (0 deleted, -1 EPERM).
DELETE_TABLE = r"""
import socket, struct
def msg(mtype, flags, family, res_id, attrs=b""):
    body = struct.pack("=BBH", family, 0, socket.htons(res_id)) + attrs
    return struct.pack("=LHHLL", 16 + len(body), mtype, flags, 0, 0) + body
name = b"capsule_egress\0"
attr = struct.pack("=HH", 4 + len(name), 1) + name + b"\0" * (-len(name) % 4)  # NFTA_TABLE_NAME
batch = (msg(0x10, 1, 0, 10) + msg((10 << 8) | 2, 1 | 4, 1, 0, attr) + msg(0x11, 1, 0, 10))
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)
s.send(batch)
d = s.recv(65536)
print(struct.unpack("=i", d[16:20])[0] if struct.unpack("=H", d[4:6])[0] == 2 else "no ack")
"""

EGRESS_RULES = """table inet capsule_egress {
    chain output {
        type filter hook output priority 0; policy drop;
        oifname "lo" accept
        ct state established,related accept
        reject
    }
}
"""


def test_delete_table_probe_deletes_the_table_where_it_may():
    """The probe below is a real deletion: with CAP_NET_ADMIN (the host's root, in a network
    namespace of this test's own) it removes the table, so its EPERM in a guest means the
    guest could not, not that the message was malformed."""
    if os.geteuid() != 0 or not os.path.exists("/usr/sbin/nft"):
        pytest.skip("needs root and nft")
    script = ("nft -f - <<'END'\n" + EGRESS_RULES + "END\n"
              "nft list tables; python3 -c \"$PROBE\"; nft list tables")
    r = subprocess.run(["unshare", "-n", "sh", "-c", script], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, PROBE=DELETE_TABLE))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["table inet capsule_egress", "0"], r.stdout


@pytest.mark.vm_slow
@boots
def test_vm_guest_root_cannot_delete_or_change_the_allowlist(vmcap, host_listener):
    name = create_vm(vmcap, "--network", "full", "--allow-cidr", "10.0.2.3/32:53")
    assert connect_inside(vmcap, name, "tcp", GATEWAY, str(host_listener)) == "ERR 111"
    # Why it holds: a command has no CAP_NET_ADMIN (nfnetlink asks for it on every message),
    # no way to get it back (no_new_privs, an empty inheritable and ambient set), and the
    # seccomp filter refuses the user namespace in which it would be had.
    status = dict(line.split(":", 1) for line in sh(vmcap, name, "cat /proc/self/status", check=True)
                  .stdout.splitlines() if ":" in line)
    for key in ("CapEff", "CapPrm", "CapBnd", "CapAmb", "CapInh"):
        assert not int(status[key], 16) & (1 << 12), f"CAP_NET_ADMIN in {key}"
    assert status["NoNewPrivs"].strip() == "1" and status["Seccomp"].strip() == "2", status
    for cmd in ("nft flush ruleset", "nft delete table inet capsule_egress", "nft add rule inet capsule_egress "
                "output accept", "nft add element inet capsule_egress dns_any { 10.0.2.2 }",
                "unshare -rn true", "ip link set eth0 down"):
        r = sh(vmcap, name, cmd + " 2>&1")
        assert r.returncode != 0, f"'{cmd}' succeeded in the guest: {r.stdout}"
    assert py(vmcap, name, DELETE_TABLE, check=True).stdout.strip() == "-1"  # EPERM
    assert connect_inside(vmcap, name, "tcp", GATEWAY, str(host_listener)) == "ERR 111"


@pytest.mark.vm_slow
@boots
def test_vm_allowlist_is_in_place_for_the_first_command(vmcap, host_listener):
    """The agent loads the table before it answers the shim: the very first command of a
    fresh guest is already refused."""
    r = vmcap.run("run", "--isolation", "vm", "--network", "full", "--allow-cidr", "10.0.2.3/32:53", "--",
                  "python3", "-c", CONNECT, "tcp", GATEWAY, str(host_listener), timeout=BOOT_TIMEOUT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ERR 111"
