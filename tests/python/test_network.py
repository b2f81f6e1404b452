"""The SDK's network: network_mode=FULL, port_forwards, allow_hosts/allow_cidrs, and
forwards added to a running sandbox. Traffic goes only to servers on the host's loopback
that the test starts, and into the test's sandboxes."""
import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest

from capsule import InvalidArgument, NetworkMode, PortForward, Sandbox, SyncSandbox, UnsupportedFeature

GATEWAY = "10.0.2.2"

FETCH = ("import sys, urllib.request\n"
         "try: print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())\n"
         "except OSError as e: print('ERR', getattr(getattr(e, 'reason', e), 'errno', e))")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def host_server():
    d = tempfile.mkdtemp(prefix="capsule-sdk-net-", dir="/var/tmp")
    token = os.urandom(6).hex()
    with open(os.path.join(d, "token"), "w") as f:
        f.write(token)
    port = free_port()
    p = subprocess.Popen(["python3", "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", d],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    yield port, token
    p.kill()
    p.wait()
    shutil.rmtree(d, ignore_errors=True)


def fetch(url, timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return urllib.request.urlopen(url, timeout=5).read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def serve(sb, port, token):
    sb.execute(f"mkdir -p /tmp/w && printf %s {token} > /tmp/w/token")
    return sb.spawn(f"exec python3 -m http.server {port} --bind 127.0.0.1 --directory /tmp/w")


def test_full_reaches_host_loopback_at_gateway(host_server):
    port, token = host_server
    with SyncSandbox(network_mode=NetworkMode.FULL) as sb:
        assert sb.network_mode is NetworkMode.FULL
        r = sb.execute(["python3", "-c", FETCH, f"http://{GATEWAY}:{port}/token"])
        assert r.stdout.strip() == token


def test_none_has_no_way_out(host_server):
    port, _ = host_server
    with SyncSandbox(network_mode="none") as sb:
        r = sb.execute(["python3", "-c", FETCH, f"http://{GATEWAY}:{port}/token"])
        assert r.stdout.strip() == "ERR 101"


def test_port_forwards_boot_time_and_added_later():
    host1, host2 = free_port(), free_port()
    with SyncSandbox(port_forwards=[PortForward(host=host1, guest=8100)]) as sb:
        token = os.urandom(6).hex()
        serve(sb, 8100, token)
        assert fetch(f"http://127.0.0.1:{host1}/token") == token
        sb.add_port_forward(PortForward(host=host2, guest=8100, host_ip="127.0.0.1"))
        assert fetch(f"http://127.0.0.1:{host2}/token") == token
        assert sorted(sb.port_forwards(), key=lambda p: p.host) == sorted(
            [PortForward(host1, 8100, "tcp", "127.0.0.1"), PortForward(host2, 8100, "tcp", "127.0.0.1")],
            key=lambda p: p.host)
        sb.remove_port_forward(host2)
        assert [p.host for p in sb.port_forwards()] == [host1]


def test_async_port_forward_and_allowlist(host_server):
    port, token = host_server

    async def main():
        async with Sandbox(network_mode=NetworkMode.FULL, allow_cidrs=[f"{GATEWAY}/32:{port}"]) as sb:
            r = await sb.execute(["python3", "-c", FETCH, f"http://{GATEWAY}:{port}/token"])
            assert r.stdout.strip() == token
            r = await sb.execute(["python3", "-c", FETCH, f"http://{GATEWAY}:{free_port()}/token"])
            assert r.stdout.strip() == "ERR 111"
            host = free_port()
            await sb.add_port_forward(PortForward(host=host, guest=9))
            assert [p.host for p in await sb.port_forwards()] == [host]
    asyncio.run(main())


def test_bad_network_values_raise_before_start():
    with pytest.raises(InvalidArgument):
        SyncSandbox(network_mode="bridge")
    with pytest.raises(InvalidArgument):
        SyncSandbox(port_forwards=["8080:80"])
    with pytest.raises(InvalidArgument, match="needs --network full"):
        SyncSandbox(allow_cidrs=["10.0.2.2/32"]).start()
    with pytest.raises(InvalidArgument):
        SyncSandbox(network_mode="full", allow_cidrs="10.0.2.2/32")
    with pytest.raises(UnsupportedFeature, match="udp"):
        SyncSandbox(port_forwards=[PortForward(8080, 53, "udp")])


def test_egress_rules_of_a_running_sandbox(host_server):
    """net_allow, net_deny and net_rules: a name answered by the sandbox's DNS proxy, which
    asks the test's own DNS server on the host's loopback (tests/e2e/dns_responder.py)."""
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
    from dns_responder import DnsResponder
    port, token = host_server
    dns = DnsResponder()
    dns.set("sdk.capsule.test", [GATEWAY], ttl=60)
    try:
        with SyncSandbox(network_mode=NetworkMode.FULL, allow_cidrs=["192.0.2.1/32"], dns_server=dns.addr,
                         egress_quota="64M") as sb:
            url = f"http://sdk.capsule.test:{port}/token"
            assert sb.execute(["python3", "-c", FETCH, url]).stdout.strip().startswith("ERR")
            sb.net_allow(f"{GATEWAY}/32:{port}")
            assert sb.execute(["python3", "-c", FETCH, f"http://{GATEWAY}:{port}/token"]).stdout.strip() == token
            sb.net_deny(f"{GATEWAY}/32:{port}")
            rules = sb.net_rules()
            assert [c["rule"] for c in rules["cidrs"]] == ["192.0.2.1/32"]
            assert rules["quota"]["bytes"] == 64 << 20
            with pytest.raises(InvalidArgument, match="not a DNS name"):
                sb.net_allow("bad_name!")
    finally:
        dns.close()
