"""capsule serve: the HTTP API (docs/serve.md), driven over loopback by http.client and curl
against the real server, started from the build tree on a free port."""
import base64
import hashlib
import http.client
import json
import os
import signal
import socket
import stat
import subprocess
import threading
import time
import uuid

import pytest

from tests.conftest import CAPSULE, _agent_is_static, _env


def _server_env(home):
    env = _env(home)
    # As `make check-asan` does: ASan's default quarantine (256 MiB of freed blocks kept
    # mapped) would make the streaming RSS bound below measure the sanitizer, not the server.
    if env.get("ASAN_OPTIONS") is not None:
        env["ASAN_OPTIONS"] = env["ASAN_OPTIONS"] + ":quarantine_size_mb=16"
    return env


class Server:
    """One `capsule serve` process: ARGS after --listen 127.0.0.1:0, the port read back from its
    'listening on' line."""

    def __init__(self, home, *args, listen=("127.0.0.1:0",)):
        self.home = home
        cmd = [CAPSULE, "serve"]
        for a in listen:
            cmd += ["--listen", a]
        self.proc = subprocess.Popen(cmd + list(args), env=_server_env(home), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines = [self.proc.stdout.readline().strip() for _ in listen]
        assert all(line.startswith("listening on ") for line in self.lines), (self.lines, self.stop())
        first = self.lines[0][len("listening on "):]
        self.port = int(first.rsplit(":", 1)[1]) if not first.startswith("unix:") else None

    def vm_hwm_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        raise AssertionError("no VmHWM")

    def stop(self, sig=signal.SIGTERM, timeout=60):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        return self.proc.returncode, err


def token(home, name):
    r = subprocess.run([CAPSULE, "token", "create", name], env=_env(home), capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def new_token(home, prefix="t"):
    # Unique without a counter: test_serve_api.py imports this module, maybe as a second copy.
    return token(home, f"{prefix}-{uuid.uuid4().hex[:12]}")


class Api:
    def __init__(self, port, tok=None):
        self.port, self.tok = port, tok

    def raw(self, method, path, body=None, headers=None, timeout=120):
        h = dict(headers or {})
        if self.tok:
            h.setdefault("Authorization", f"Bearer {self.tok}")
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        finally:
            c.close()

    def call(self, method, path, body=None, headers=None, timeout=120):
        status, hdrs, data = self.raw(method, path, body, headers, timeout)
        doc = json.loads(data) if data else None
        return status, doc

    def create(self, **cfg):
        status, doc = self.call("POST", "/v1/sandboxes", cfg)
        assert status == 201, doc
        return doc["id"]

    def exec(self, sid, **req):
        status, doc = self.call("POST", f"/v1/sandboxes/{sid}/exec", req)
        assert status == 200, doc
        return doc


def assert_error(status, doc, want_status, want_code):
    assert status == want_status, doc
    assert set(doc) == {"error"} and set(doc["error"]) == {"code", "message"}, doc
    assert doc["error"]["code"] == want_code, doc
    msg = doc["error"]["message"]
    assert msg and "\n" not in msg, doc


@pytest.fixture(scope="module")
def server(capsule_home):
    audit = os.path.join(os.path.dirname(capsule_home), "serve-audit.log")
    s = Server(capsule_home, "--max-sandboxes", "3", "--max-memory", "1G", "--default-memory", "256M",
               "--audit-log", audit)
    s.audit = audit
    yield s
    rc, err = s.stop()
    assert rc == 0, err


@pytest.fixture
def api(server, capsule_home):
    return Api(server.port, new_token(capsule_home))


def run_dir(home, sid):
    return os.path.join(home, "run", sid)


# ---- the document and the routes -------------------------------------------------------------


def test_health_and_openapi_need_no_token(server):
    status, doc = Api(server.port).call("GET", "/v1/health")
    assert status == 200 and doc["status"] == "ok"
    status, hdrs, data = Api(server.port).raw("GET", "/openapi.json")
    assert status == 200 and hdrs["Content-Type"] == "application/json"
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(root, "docs", "openapi.json"), "rb") as f:
        assert data == f.read()  # the repository's document, embedded at build time
    assert json.loads(data)["openapi"] == "3.1.0"


def test_answers_keep_the_connection_alive(server, api):
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        c.connect()
        sock = c.sock
        auth = {"Authorization": f"Bearer {api.tok}"}
        for method, path, status in [("GET", "/v1/health", 200), ("GET", "/v1/sandboxes", 200),
                                     ("GET", "/v1/sandboxes/sbx-none", 404), ("POST", "/v1/sandboxes/sbx-none/exec", 404),
                                     ("GET", "/v1/nothing", 404)]:
            c.request(method, path, headers=auth)
            r = c.getresponse()
            r.read()
            assert r.status == status and r.getheader("Connection") != "close", (method, path, r.getheaders())
        assert c.sock is sock  # one connection served them all
    finally:
        c.close()


def test_openapi_lists_every_route_the_server_answers_and_no_other(server):
    doc = json.loads(Api(server.port).raw("GET", "/openapi.json")[2])
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops if m != "parameters"}
    r = subprocess.run([CAPSULE, "serve", "--routes"], capture_output=True, text=True, timeout=30, check=True)
    served = {tuple(line.split(" ", 1)) for line in r.stdout.splitlines()}
    assert documented == served
    # And the router agrees with its own table: without a token, every documented operation
    # is either public or refused as unauthorized, never an unknown route or method.
    for method, path in documented:
        status, hdrs, _ = Api(server.port).raw(method, path.replace("{id}", "sbx-0") + "?path=/x")
        assert status in (200, 401), (method, path, status)
    assert Api(server.port).raw("GET", "/v1/nothing")[0] == 404


# ---- tokens ---------------------------------------------------------------------------------


def test_token_store_is_private_and_ls_never_shows_a_token(capsule_home):
    tok = new_token(capsule_home, "ls")
    path = os.path.join(capsule_home, "serve", "tokens")
    st = os.stat(path)
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid()
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    with open(path) as f:
        stored = f.read()
    assert tok not in stored and hashlib.sha256(tok.encode()).hexdigest() in stored
    for args in (["token", "ls"], ["token", "ls", "--json"]):
        r = subprocess.run([CAPSULE, *args], env=_env(capsule_home), capture_output=True, text=True, check=True)
        assert tok not in r.stdout and tok[8:20] not in r.stdout
    r = subprocess.run([CAPSULE, "token", "ls", "--json"], env=_env(capsule_home), capture_output=True, text=True)
    doc = json.loads(r.stdout)
    assert r.stdout == json.dumps(doc, indent=2) + "\n"
    assert all(set(t) == {"name", "created", "admin", "max_sandboxes", "max_memory"} for t in doc)
    r = subprocess.run([CAPSULE, "token", "create", doc[0]["name"]], env=_env(capsule_home), capture_output=True,
                       text=True)
    assert r.returncode == 125 and "exists" in r.stderr and r.stdout == ""
    r = subprocess.run([CAPSULE, "token", "rm", "no-such-token"], env=_env(capsule_home), capture_output=True, text=True)
    assert r.returncode == 125 and r.stderr.count("\n") == 1 and "no-such-token" in r.stderr


def test_requests_without_a_valid_token_are_refused(server, capsule_home):
    name = f"gone-{os.getpid()}"
    tok = token(capsule_home, name)
    ok = Api(server.port, tok)
    assert ok.call("GET", "/v1/sandboxes")[0] == 200
    status, hdrs, data = Api(server.port).raw("GET", "/v1/sandboxes")
    assert_error(status, json.loads(data), 401, "unauthorized")
    assert hdrs["WWW-Authenticate"] == "Bearer"
    assert_error(*Api(server.port, "capsule_" + "0" * 64).call("GET", "/v1/sandboxes"), 401, "unauthorized")
    assert_error(*Api(server.port).call("GET", "/v1/sandboxes", headers={"Authorization": "Basic eDp5"}), 401,
                 "unauthorized")
    sid = ok.create(timeout=600)
    subprocess.run([CAPSULE, "token", "rm", name], env=_env(capsule_home), check=True, capture_output=True)
    # No restart: the server sees the store change at the next request.
    assert_error(*ok.call("GET", "/v1/sandboxes"), 401, "unauthorized")
    assert_error(*ok.call("POST", "/v1/sandboxes", {}), 401, "unauthorized")
    # And what the token made, reachable by no one now, goes too, long before its timeout.
    deadline = time.monotonic() + 10
    while os.path.exists(run_dir(capsule_home, sid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not os.path.exists(run_dir(capsule_home, sid))


# ---- sandboxes ------------------------------------------------------------------------------


def test_create_get_list_delete(server, api, capsule_home):
    sid = api.create(labels={"team": "a", "run": "1"}, env={"GREETING": "hello"}, memory="300M", cpus=1,
                     network="none", timeout=600)
    status, doc = api.call("GET", f"/v1/sandboxes/{sid}")
    assert status == 200
    assert doc["id"] == sid and doc["state"] == "running" and doc["memory"] == 300 << 20
    assert doc["labels"] == {"team": "a", "run": "1"} and doc["timeout"] == 600 and doc["cpus"] == "1"
    assert os.path.isdir(run_dir(capsule_home, sid))
    assert api.exec(sid, command="echo $GREETING")["stdout"] == "hello\n"
    other = api.create(labels={"team": "b"})
    ids = lambda q="": {s["id"] for s in api.call("GET", "/v1/sandboxes" + q)[1]["sandboxes"]}
    assert ids() == {sid, other}
    assert ids("?label=team=a") == {sid}
    assert ids("?label=team=a&label=run=1") == {sid}
    assert ids("?label=team=a&label=run=2") == set()
    assert_error(*api.call("GET", "/v1/sandboxes?label=noequals"), 400, "invalid_argument")
    status, doc = api.call("DELETE", f"/v1/sandboxes/{sid}")
    assert status == 200 and doc == {"deleted": True}
    assert not os.path.exists(run_dir(capsule_home, sid))
    assert_error(*api.call("GET", f"/v1/sandboxes/{sid}"), 404, "not_found")
    assert_error(*api.call("DELETE", f"/v1/sandboxes/{sid}"), 404, "not_found")
    assert ids() == {other}
    api.call("DELETE", f"/v1/sandboxes/{other}")


def test_another_tokens_sandbox_does_not_exist_for_it(server, capsule_home):
    alice = Api(server.port, new_token(capsule_home, "alice"))
    bob = Api(server.port, new_token(capsule_home, "bob"))
    sid = alice.create()
    try:
        assert bob.call("GET", "/v1/sandboxes")[1] == {"sandboxes": []}
        never = "sbx-0123456789abcdef"
        for method, path, body in [("GET", "", None), ("DELETE", "", None), ("POST", "/exec", {"cmd": ["true"]}),
                                   ("GET", "/files?path=/etc/hostname", None),
                                   ("PUT", "/files?path=/tmp/x", b"x"), ("DELETE", "/files?path=/tmp", None)]:
            mine = bob.call(method, f"/v1/sandboxes/{sid}{path}", body)
            missing = bob.call(method, f"/v1/sandboxes/{never}{path}", body)
            assert_error(*mine, 404, "not_found")
            # The same answer as for an id that never existed, but for the id it names.
            assert mine[1]["error"]["message"].replace(sid, never) == missing[1]["error"]["message"]
        assert alice.call("GET", f"/v1/sandboxes/{sid}")[0] == 200
    finally:
        alice.call("DELETE", f"/v1/sandboxes/{sid}")


def test_limits_per_token_answer_429(server, capsule_home):
    api = Api(server.port, new_token(capsule_home, "lim"))
    # --max-memory 1G: 768M + the 256M default fits, one more byte of memory does not.
    big = api.create(memory="768M")
    assert_error(*api.call("POST", "/v1/sandboxes", {"memory": "257M"}), 429, "limit_exceeded")
    second = api.create()
    status, doc = api.call("POST", "/v1/sandboxes", {"memory": 1})
    assert_error(status, doc, 429, "limit_exceeded")
    assert "--max-memory" in doc["error"]["message"]
    api.call("DELETE", f"/v1/sandboxes/{big}")
    third, fourth = api.create(), api.create()
    status, doc = api.call("POST", "/v1/sandboxes", {})
    assert_error(status, doc, 429, "limit_exceeded")
    assert "--max-sandboxes 3" in doc["error"]["message"]
    # Another token has its own budget.
    other = Api(server.port, new_token(capsule_home, "lim"))
    sid = other.create()
    for s in (second, third, fourth):
        api.call("DELETE", f"/v1/sandboxes/{s}")
    other.call("DELETE", f"/v1/sandboxes/{sid}")
    api.call("DELETE", f"/v1/sandboxes/{api.create()}")  # a deleted sandbox no longer counts


def test_a_sandbox_past_its_timeout_is_removed(server, api, capsule_home):
    sid = api.create(timeout=2)
    keep = api.create(timeout=600)
    assert os.path.isdir(run_dir(capsule_home, sid))
    deadline = time.monotonic() + 15
    while os.path.exists(run_dir(capsule_home, sid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not os.path.exists(run_dir(capsule_home, sid))
    assert_error(*api.call("GET", f"/v1/sandboxes/{sid}"), 404, "not_found")
    assert [s["id"] for s in api.call("GET", "/v1/sandboxes")[1]["sandboxes"]] == [keep]
    api.call("DELETE", f"/v1/sandboxes/{keep}")


# ---- exec -----------------------------------------------------------------------------------


def test_exec(server, api):
    sid = api.create()
    try:
        r = api.exec(sid, cmd=["sh", "-c", "echo out; echo err >&2; exit 3"])
        assert (r["exit_code"], r["stdout"], r["stderr"]) == (3, "out\n", "err\n")
        assert r["stdout_encoding"] == "utf-8" and not r["timed_out"]
        r = api.exec(sid, command="pwd; id -u; echo $A $B", cwd="/tmp", user="1000", env={"A": "1", "B": "é"})
        assert r["stdout"] == "/tmp\n1000\n1 é\n"
        assert api.exec(sid, cmd=["cat"], stdin="piped in")["stdout"] == "piped in"
        r = api.exec(sid, command=r"printf '\377\376ok'")
        assert r["stdout_encoding"] == "base64" and base64.b64decode(r["stdout"]) == b"\xff\xfeok"
        r = api.exec(sid, cmd=["sleep", "30"], timeout=0.5)
        assert r["timed_out"] and r["exit_code"] == 137
        r = api.exec(sid, cmd=["no-such-command"])
        assert r["exit_code"] == 127 and "no-such-command" in r["stderr"]
        # Output past the limit (1 MiB a stream) is cut, and says so.
        r = api.exec(sid, command="head -c 3000000 /dev/zero | tr '\\0' a")
        assert r["stdout_truncated"] and len(r["stdout"]) == 1 << 20
        for bad in [{}, {"cmd": ["true"], "command": "true"}, {"cmd": []}, {"cmd": "true"}, {"cmd": [1]},
                    {"command": "true", "timeout": -1}, {"command": "true", "env": {"A": 1}},
                    {"command": "true", "cwd": "relative"}, {"command": "true", "shell": "bash"}]:
            assert_error(*api.call("POST", f"/v1/sandboxes/{sid}/exec", bad), 400, "invalid_request")
    finally:
        api.call("DELETE", f"/v1/sandboxes/{sid}")


# One boot (seconds under TCG), so it runs in make check, as the other vm tests that boot once.
@pytest.mark.skipif(not _agent_is_static(), reason="capsule-agent is dynamically linked (a sanitizer build): "
                    "it cannot be a VM's init")
def test_a_vm_sandbox_through_the_api(server, api, capsule_home):
    sid = api.create(isolation="vm", memory="512M")
    try:
        status, doc = api.call("GET", f"/v1/sandboxes/{sid}")
        assert doc["isolation"] == "vm" and doc["state"] == "running"
        r = api.exec(sid, cmd=["cat", "/proc/cmdline"])
        assert r["exit_code"] == 0 and r["stdout"]
        base = f"/v1/sandboxes/{sid}/files?path=/root/x.bin"
        data = os.urandom(3 << 20)
        assert api.call("PUT", base, data)[0] == 201
        assert api.raw("GET", base)[2] == data
    finally:
        api.call("DELETE", f"/v1/sandboxes/{sid}")
    assert not os.path.exists(run_dir(capsule_home, sid))


def test_a_hundred_concurrent_clients_exec(server, api):
    sids = [api.create(), api.create()]
    results, errors = {}, []

    def client(i):
        try:
            r = api.exec(sids[i % 2], cmd=["sh", "-c", f"echo {i}; exit {i % 7}"])
            results[i] = r
        except Exception as e:  # noqa: BLE001 - reported below with its client
            errors.append((i, repr(e)))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for sid in sids:
        api.call("DELETE", f"/v1/sandboxes/{sid}")
    assert not errors, errors
    assert len(results) == 100
    for i, r in results.items():
        assert (r["stdout"], r["exit_code"]) == (f"{i}\n", i % 7)


def _read_answer(sock):
    """One HTTP/1.1 answer from SOCK (Content-Length or chunked): (status, body)."""
    f = sock.makefile("rb")
    status = int(f.readline().split()[1])
    headers = {}
    while (line := f.readline().strip()):
        k, v = line.decode().split(":", 1)
        headers[k.strip().lower()] = v.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = bytearray()
        while (n := int(f.readline().strip(), 16)):
            body += f.read(n)
            f.readline()
        f.readline()
        return status, bytes(body)
    return status, f.read(int(headers.get("content-length", 0)))


def test_a_slow_client_does_not_block_others(server, api):
    """One client sends its body a byte at a time, another reads a download not at all: the
    other clients' requests are answered meanwhile, and the slow ones still complete."""
    sid = api.create()
    size = 16 << 20
    assert api.exec(sid, command=f"head -c {size} /dev/zero > /tmp/big")["exit_code"] == 0
    auth = f"Authorization: Bearer {api.tok}\r\n"
    body = json.dumps({"cmd": ["echo", "slow"]}).encode()
    writer = socket.create_connection(("127.0.0.1", server.port), timeout=60)
    reader = socket.socket()
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    reader.settimeout(60)
    reader.connect(("127.0.0.1", server.port))
    try:
        writer.sendall(f"POST /v1/sandboxes/{sid}/exec HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json"
                       f"\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body[:1])
        reader.sendall(f"GET /v1/sandboxes/{sid}/files?path=/tmp/big HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode())
        # Both are stuck now, the writer on its body and the reader's download on its full
        # socket; others go by.
        outs = []
        threads = [threading.Thread(target=lambda i=i: outs.append(api.exec(sid, cmd=["echo", str(i)])["stdout"]))
                   for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert sorted(outs) == sorted(f"{i}\n" for i in range(8))
        assert api.call("GET", "/v1/health")[0] == 200
        # The slow ones were not given up on: the rest of the body, a byte at a time, and
        # the whole download.
        for b in body[1:]:
            writer.sendall(bytes([b]))
            time.sleep(0.005)
        status, data = _read_answer(writer)
        assert status == 200 and json.loads(data)["stdout"] == "slow\n", data
        status, data = _read_answer(reader)
        assert status == 200 and len(data) == size and not data.strip(b"\0")
    finally:
        writer.close()
        reader.close()
        api.call("DELETE", f"/v1/sandboxes/{sid}")


# ---- files ----------------------------------------------------------------------------------


def curl(*args, check=True):
    r = subprocess.run(["curl", "-sS", *args], capture_output=True, timeout=300)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def test_files_put_get_list_delete(server, api):
    sid = api.create()
    base = f"/v1/sandboxes/{sid}/files"
    try:
        status, doc = api.call("PUT", base + "?path=/work/sub/hello.txt", b"hello\x00world")
        assert status == 201 and doc == {"path": "/work/sub/hello.txt", "size": 11}
        status, hdrs, data = api.raw("GET", base + "?path=/work/sub/hello.txt")
        assert status == 200 and data == b"hello\x00world"
        assert hdrs["Content-Type"] == "application/octet-stream"
        status, doc = api.call("GET", base + "?path=/work/sub&list=1")
        assert status == 200 and doc["path"] == "/work/sub" and doc["truncated"] is False
        assert [(e["name"], e["type"], e["size"]) for e in doc["entries"]] == [("hello.txt", "file", 11)]
        assert_error(*api.call("GET", base + "?path=/work/none"), 404, "not_found")
        assert_error(*api.call("GET", base), 400, "invalid_argument")
        assert_error(*api.call("PUT", base + "?path=relative", b"x"), 400, "invalid_argument")
        assert api.call("DELETE", base + "?path=/work/sub/hello.txt") == (200, {"deleted": True})
        assert_error(*api.call("DELETE", base + "?path=/work/sub/hello.txt"), 404, "not_found")
        api.call("PUT", base + "?path=/work/sub/a", b"a")
        assert api.call("DELETE", base + "?path=/work&recursive=1")[0] == 200
        assert api.exec(sid, command="test -e /work; echo $?")["stdout"] == "1\n"
    finally:
        api.call("DELETE", f"/v1/sandboxes/{sid}")


@pytest.mark.parametrize("size", [256 << 20, pytest.param(1 << 30, marks=pytest.mark.plain_build_only)],
                         ids=["256MiB", "1GiB"])
def test_a_big_file_streams_both_ways_in_bounded_memory(server, api, size):
    src = os.path.join(os.path.dirname(server.home), "serve-big.bin")
    back = src + ".back"
    block = os.urandom(1 << 20)
    h = hashlib.sha256()
    with open(src, "wb") as f:
        for i in range(size >> 20):
            chunk = block[i:] + block[:i]
            f.write(chunk)
            h.update(chunk)
    sid = api.create()
    url = f"http://127.0.0.1:{server.port}/v1/sandboxes/{sid}/files?path=/root/big.bin"
    auth = f"Authorization: Bearer {api.tok}"
    try:
        before = server.vm_hwm_kib()
        r = curl("-f", "-H", auth, "-T", src, url)
        assert json.loads(r.stdout) == {"path": "/root/big.bin", "size": size}
        curl("-f", "-H", auth, "-o", back, url)
        with open(back, "rb") as f:
            assert hashlib.file_digest(f, "sha256").hexdigest() == h.hexdigest()
        grown = server.vm_hwm_kib() - before
        # A server that held the file would grow by its size each way; streaming holds a few
        # 64 KiB blocks per connection (measured: under 1 MiB). 32 MiB is room for allocator
        # arenas and sanitizer bookkeeping, and still far from any copy of either file.
        assert grown < 32 << 10, f"the server's peak RSS grew by {grown} KiB"
    finally:
        api.call("DELETE", f"/v1/sandboxes/{sid}")
        for p in (src, back):
            if os.path.exists(p):
                os.unlink(p)


# ---- malformed requests ---------------------------------------------------------------------


def test_malformed_requests_get_one_line_errors(server, api):
    assert_error(*api.call("POST", "/v1/sandboxes", b"{not json"), 400, "invalid_request")
    assert_error(*api.call("POST", "/v1/sandboxes", b"[1, 2]"), 400, "invalid_request")
    assert_error(*api.call("POST", "/v1/sandboxes", b""), 400, "invalid_request")
    status, doc = api.call("POST", "/v1/sandboxes", {"imgae": "host"})
    assert_error(status, doc, 400, "invalid_request")
    assert "imgae" in doc["error"]["message"]
    for bad in [{"memory": "12X"}, {"memory": -1}, {"isolation": "jail"}, {"network": "some"}, {"timeout": 0},
                {"timeout": 1.5}, {"labels": {"bad key": "v"}}, {"env": {"1A": "x"}}, {"cpus": "lots"}]:
        assert_error(*api.call("POST", "/v1/sandboxes", bad), 400, "invalid_request")
    assert_error(*api.call("POST", "/v1/sandboxes", b'{"image": "host", "image": "host"}'), 400, "invalid_request")
    # Nothing was made by any of them.
    assert api.call("GET", "/v1/sandboxes")[1] == {"sandboxes": []}
    # Too large, declared (refused before the body is read) or chunked (refused at the bound).
    huge = b'{"image": "' + b"a" * (2 << 20) + b'"}'
    for extra in ([], ["-H", "Transfer-Encoding: chunked"]):
        # curl, which waits for "100 Continue" as HTTP/1.1 clients should, and so reads the
        # early 413 rather than writing 2 MiB into a closed connection.
        r = subprocess.run(["curl", "-sS", "-H", f"Authorization: Bearer {api.tok}", *extra, "--data-binary", "@-",
                            "-w", "\n%{http_code}", f"http://127.0.0.1:{server.port}/v1/sandboxes"],
                           input=huge, capture_output=True, timeout=60)
        body, code = r.stdout.rsplit(b"\n", 1)
        assert code == b"413", (extra, r.stdout[-300:], r.stderr)
        assert_error(413, json.loads(body), 413, "payload_too_large")
    assert_error(*api.call("GET", "/v1/sandbox"), 404, "not_found")
    assert_error(*api.call("GET", "/v1/sandboxes/"), 404, "not_found")
    status, hdrs, data = api.raw("PATCH", "/v1/sandboxes")
    assert_error(status, json.loads(data), 405, "method_not_allowed")
    assert hdrs["Allow"] == "GET, POST"
    assert_error(*api.call("PUT", "/v1/sandboxes/sbx-1/exec"), 405, "method_not_allowed")


# ---- the server as a process ----------------------------------------------------------------


def test_the_full_network_is_refused_unless_the_operator_allows_it(server, api, capsule_home):
    """A sandbox with the full network reaches the host's loopback (10.0.2.2), where the host's
    own services and every other token's port forwards listen: a client gets it only from a
    server its operator started with --allow-network-full."""
    status, doc = api.call("POST", "/v1/sandboxes", {"network": "full"})
    assert_error(status, doc, 403, "permission_denied")
    assert "--allow-network-full" in doc["error"]["message"]
    assert api.call("GET", "/v1/sandboxes")[1] == {"sandboxes": []}
    s = Server(capsule_home, "--allow-network-full")
    try:
        a = Api(s.port, api.tok)
        sid = a.create(network="full")
        assert a.call("GET", f"/v1/sandboxes/{sid}")[1]["network"] == "full"
        assert a.call("DELETE", f"/v1/sandboxes/{sid}")[0] == 200
    finally:
        rc, err = s.stop()
    assert rc == 0, err


def test_audit_log_has_one_json_line_per_request(server, capsule_home):
    name = f"audit-{os.getpid()}"
    api = Api(server.port, token(capsule_home, name))
    sid = api.create()
    api.call("GET", f"/v1/sandboxes/{sid}")
    Api(server.port).call("GET", "/v1/sandboxes")
    api.call("DELETE", f"/v1/sandboxes/{sid}")
    # A request's line is written once its answer has gone (it says whether it did), so the
    # last one may come a moment after the client has read that answer.
    deadline = time.monotonic() + 10
    while True:
        with open(server.audit) as f:
            lines = [json.loads(line) for line in f]
        mine = [(l["token"], l["method"], l["path"], l["sandbox"], l["status"]) for l in lines if l["token"] == name]
        if len(mine) >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert stat.S_IMODE(os.stat(server.audit).st_mode) == 0o600
    # Lines come in the order the requests completed, which need not be the order they were
    # sent in (the next request may be served before the last one's completion is reported).
    assert sorted(mine, key=repr) == sorted([(name, "POST", "/v1/sandboxes", None, 201),
                                             (name, "GET", f"/v1/sandboxes/{sid}", sid, 200),
                                             (name, "DELETE", f"/v1/sandboxes/{sid}", sid, 200)], key=repr)
    assert any(l["token"] is None and l["status"] == 401 for l in lines)
    assert api.tok not in open(server.audit).read()


def wait_started(home, sid, marker):
    """Until MARKER exists in the sandbox: the exec under test is running, not just sent."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r = subprocess.run([CAPSULE, "exec", sid, "--", "test", "-e", marker], env=_env(home), capture_output=True,
                           timeout=30)
        if r.returncode == 0:
            return
        time.sleep(0.05)
    raise AssertionError(f"{marker} never appeared in {sid}")


def test_sigterm_finishes_requests_in_flight_then_removes_sandboxes(capsule_home, tmp_path):
    sock = f"/var/tmp/capsule-serve-{os.getpid()}.sock"
    s = Server(capsule_home, listen=("127.0.0.1:0", f"unix:{sock}"))
    try:
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
        api = Api(s.port, new_token(capsule_home, "term"))
        r = curl("--unix-socket", sock, "-H", f"Authorization: Bearer {api.tok}", "-d", "{}",
                 "http://localhost/v1/sandboxes")
        sid = json.loads(r.stdout)["id"]
        result = {}
        t = threading.Thread(target=lambda: result.update(
            r=api.exec(sid, command="touch /tmp/started; sleep 1.5; echo done")))
        t.start()
        wait_started(capsule_home, sid, "/tmp/started")
        rc, err = s.stop(signal.SIGTERM)
        t.join(30)
        assert rc == 0, err
        assert result["r"]["stdout"] == "done\n"  # the request in flight got its answer
        assert not os.path.exists(run_dir(capsule_home, sid))
        assert not os.path.exists(sock)
    finally:
        s.stop(signal.SIGKILL)


def test_shutdown_timeout_ends_requests_that_take_too_long(capsule_home):
    s = Server(capsule_home, "--shutdown-timeout", "1")
    try:
        api = Api(s.port, new_token(capsule_home, "slow"))
        sid = api.create()
        result = {}

        def slow():
            try:
                result["r"] = api.raw("POST", f"/v1/sandboxes/{sid}/exec",
                                      {"command": "touch /tmp/started; sleep 60"})
            except (http.client.HTTPException, OSError) as e:
                result["r"] = e

        t = threading.Thread(target=slow)
        t.start()
        wait_started(capsule_home, sid, "/tmp/started")
        began = time.monotonic()
        rc, err = s.stop(signal.SIGTERM, timeout=30)
        took = time.monotonic() - began
        t.join(30)
        assert rc == 0, err
        assert took < 15, f"shutdown took {took:.1f}s"
        assert not os.path.exists(run_dir(capsule_home, sid))
        # The exec did not run to its end: an error answer, or the connection closed.
        r = result["r"]
        assert isinstance(r, Exception) or r[0] >= 400, r
    finally:
        s.stop(signal.SIGKILL)


def test_keep_leaves_sandboxes_running_at_shutdown(capsule_home, capsule):
    s = Server(capsule_home, "--keep")
    api = Api(s.port, new_token(capsule_home, "keep"))
    sid = api.create()
    capsule._names.append(sid)  # removed by the fixture whatever happens
    rc, err = s.stop(signal.SIGINT)
    assert rc == 0, err
    assert capsule.inspect(sid)["state"] == "running"
    assert capsule.run("exec", sid, "--", "echo", "alive", check=True).stdout == "alive\n"


def test_connections_are_bounded(capsule_home):
    s = Server(capsule_home, "--max-connections", "2")
    held = []
    try:
        for _ in range(2):
            # An answered request proves the server took the connection; it stays open.
            c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
            c.request("GET", "/v1/health")
            assert c.getresponse().read()
            held.append(c)
        # A third waits in the listen backlog, unanswered, while two are open...
        extra = socket.create_connection(("127.0.0.1", s.port), timeout=1)
        extra.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        with pytest.raises(TimeoutError):
            extra.recv(100)
        # ...and is served once one of them goes.
        held.pop().close()
        extra.settimeout(10)
        assert extra.recv(100).startswith(b"HTTP/1.1 200")
        extra.close()
    finally:
        for c in held:
            c.close()
        rc, err = s.stop()
        assert rc == 0, err


def test_serve_refuses_bad_options(capsule_home):
    # `capsule help VERB` hands the helper an argv of its own: the same text as VERB --help.
    for verb in ("serve", "token"):
        r = subprocess.run([CAPSULE, "help", verb], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and r.stdout.startswith(f"Usage: capsule {verb}"), r.stderr
        assert r.stdout == subprocess.run([CAPSULE, verb, "--help"], capture_output=True, text=True).stdout
    r = subprocess.run([CAPSULE, "token"], env=_env(capsule_home), capture_output=True, text=True, timeout=30)
    assert r.returncode == 125 and "capsule token: no command given" in r.stderr and r.stdout == ""
    for args, what in [([], "--listen"), (["--listen", "nowhere"], "nowhere"),
                       (["--listen", "127.0.0.1:99999"], "port"), (["--listen", "unix:relative"], "absolute"),
                       (["--listen", "127.0.0.1:0", "--max-memory", "lots"], "--max-memory"),
                       (["--listen", "127.0.0.1:0", "--bogus"], "--bogus")]:
        r = subprocess.run([CAPSULE, "serve", *args], env=_env(capsule_home), capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 125 and what in r.stderr and r.stderr.count("\n") == 1, (args, r.stderr)
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    r = subprocess.run([CAPSULE, "serve", "--listen", f"127.0.0.1:{port}"], env=_env(capsule_home),
                       capture_output=True, text=True, timeout=30)
    busy.close()
    assert r.returncode == 125 and "Address already in use" in r.stderr
