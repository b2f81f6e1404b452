"""capsule mcp and /mcp of capsule serve (docs/mcp.md): the Model Context Protocol over stdio and
over streamable HTTP. Raw JSON-RPC from Python for what a client should never send (cheap, so it
runs under the sanitizers too), and the official MCP TypeScript SDK as a real client
(tests/mcp/client.mjs, installed by scripts/install-npm-deps) for every tool over both
transports."""
import base64
import http.client
import json
import os
import select
import signal
import subprocess
import time
import uuid

import pytest

from tests.conftest import CAPSULE, _env
from tests.e2e.test_serve import Api, Server, new_token, token
from tests.conftest import settled_run_entries

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLIENT = os.path.join(ROOT, "tests", "mcp", "client.mjs")
NPM_PREFIX = os.environ.get("CAPSULE_NPM_PREFIX", "/var/cache/capsule/npm")
TOOLS = {"create_sandbox", "run_command", "write_file", "read_file", "list_files", "destroy_sandbox", "run_code",
         "diff_sandbox", "pause_sandbox", "resume_sandbox"}


def read_line(stream, timeout=60):
    """One line of STREAM, or a failure after TIMEOUT: a test never hangs on a silent server."""
    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, "no answer within %d s" % timeout
    return stream.readline()


def running(home):
    return settled_run_entries(os.path.join(home, "run"))


def wait_gone(home, sid, timeout=15):
    deadline = time.monotonic() + timeout
    while sid in running(home) and time.monotonic() < deadline:
        time.sleep(0.05)
    return sid not in running(home)


# ---- raw JSON-RPC over stdio ----------------------------------------------------------------


class Stdio:
    """`capsule mcp` with pipes: send lines, read answers."""

    def __init__(self, home, *args):
        self.proc = subprocess.Popen([CAPSULE, "mcp", *args], env=_env(home), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.next_id = 100

    def send(self, data):
        self.proc.stdin.write(data if isinstance(data, bytes) else data.encode())
        self.proc.stdin.flush()

    def answer(self, timeout=60):
        line = read_line(self.proc.stdout, timeout)
        assert line.endswith(b"\n"), line
        return json.loads(line)

    def request(self, method, params=None, **extra):
        self.next_id += 1
        msg = {"jsonrpc": "2.0", "id": self.next_id, "method": method}
        if params is not None:
            msg["params"] = params
        msg.update(extra)
        self.send(json.dumps(msg) + "\n")
        doc = self.answer()
        assert doc["id"] == self.next_id, doc
        return doc

    def initialize(self, version="2025-06-18"):
        doc = self.request("initialize", {"protocolVersion": version, "capabilities": {},
                                          "clientInfo": {"name": "pytest", "version": "1"}})
        self.send('{"jsonrpc": "2.0", "method": "notifications/initialized"}\n')
        return doc

    def call(self, name, **arguments):
        return self.request("tools/call", {"name": name, "arguments": arguments})["result"]

    def close(self, timeout=30):
        self.proc.stdin.close()
        rc = self.proc.wait(timeout=timeout)
        err = self.proc.stderr.read().decode()
        return rc, err


def rpc_error(doc, code, id_):
    assert set(doc) == {"jsonrpc", "id", "error"} and doc["jsonrpc"] == "2.0", doc
    assert doc["id"] == id_ and doc["error"]["code"] == code, doc
    msg = doc["error"]["message"]
    assert msg and "\n" not in msg
    return msg


def test_stdio_malformed_messages_get_jsonrpc_errors_and_the_server_goes_on(capsule_home):
    s = Stdio(capsule_home)
    try:
        # Before initialize only ping is taken.
        assert s.request("ping")["result"] == {}
        assert "initialize" in rpc_error(s.request("tools/list"), -32600, s.next_id)
        init = s.initialize()["result"]
        assert init["protocolVersion"] == "2025-06-18" and init["serverInfo"]["name"] == "capsule"
        assert init["capabilities"] == {"tools": {"listChanged": False}}
        assert "already" in rpc_error(s.initialize(), -32600, s.next_id)

        s.send("this is not json\n")
        assert "not valid JSON" in rpc_error(s.answer(), -32700, None)
        s.send('{"jsonrpc": "2.0", "id": 7, "method": "ping"\n')  # cut short
        rpc_error(s.answer(), -32700, None)
        s.send('{"jsonrpc": "1.0", "id": 8, "method": "ping"}\n')
        assert '"2.0"' in rpc_error(s.answer(), -32600, 8)
        s.send('{"id": "nine", "method": "ping"}\n')
        rpc_error(s.answer(), -32600, "nine")
        # A member refused before text that is not JSON (a key may not hold NUL): still a parse error.
        s.send('{"extra": 1, "a\\u0000b": 2, "id": 14}\n')
        assert "not valid JSON" in rpc_error(s.answer(), -32700, None)
        s.send('{"jsonrpc": "2.0", "id": 10, "method": "ping", "extra": 1}\n')
        assert "extra" in rpc_error(s.answer(), -32600, 10)
        s.send('{"jsonrpc": "2.0", "id": 11, "id": 12, "method": "ping"}\n')
        assert "twice" in rpc_error(s.answer(), -32600, 11)
        s.send('{"jsonrpc": "2.0", "id": 1.5, "method": "ping"}\n')
        rpc_error(s.answer(), -32600, None)
        s.send('{"jsonrpc": "2.0", "id": 13, "method": "ping", "params": [1]}\n')
        rpc_error(s.answer(), -32600, 13)
        s.send('[{"jsonrpc": "2.0", "id": 14, "method": "ping"}]\n')
        assert "batch" in rpc_error(s.answer(), -32600, None)
        s.send('"a string"\n')
        rpc_error(s.answer(), -32600, None)
        s.send(b'{"jsonrpc": "2.0", "id": 15, "method": "\xff"}\n')  # not UTF-8
        rpc_error(s.answer(), -32700, None)
        assert "no/such" in rpc_error(s.request("no/such"), -32601, s.next_id)
        assert "tool" in rpc_error(s.request("tools/call", {"name": "no_such_tool"}), -32602, s.next_id)
        rpc_error(s.request("tools/call", {"arguments": {}}), -32602, s.next_id)
        rpc_error(s.request("tools/call", {"name": "run_command", "arguments": [1]}), -32602, s.next_id)

        # A message past 1 MiB is refused once, dropped whole, and never held in memory whole.
        huge = '{"jsonrpc": "2.0", "id": 16, "method": "ping", "params": {"x": "' + "a" * (3 << 20) + '"}}\n'
        s.send(huge)
        assert "1 MiB" in rpc_error(s.answer(), -32600, None)
        # Notifications, responses and blank lines get no answer: the next answer is the ping's.
        s.send('\n  \r\n{"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 3}}\n')
        s.send('{"jsonrpc": "2.0", "id": 99, "result": {}}\n')
        s.send('{"jsonrpc": "2.0", "method": "no/such/notification"}\n')
        s.send('{"jsonrpc": "2.0", "id": "str-id", "method": "ping"}\r\n')
        assert s.answer() == {"jsonrpc": "2.0", "id": "str-id", "result": {}}
        assert s.proc.poll() is None
    finally:
        rc, err = s.close()
    assert rc == 0, err


def test_stdio_negotiates_the_protocol_version(capsule_home):
    for asked, answered in [("2025-03-26", "2025-03-26"), ("2099-01-01", "2025-06-18")]:
        s = Stdio(capsule_home)
        try:
            assert s.initialize(asked)["result"]["protocolVersion"] == answered
        finally:
            assert s.close()[0] == 0


def test_stdio_tool_errors_are_results_with_is_error(capsule_home):
    s = Stdio(capsule_home, "--max-sandboxes", "1")
    try:
        s.initialize()
        for name, args, words in [
                ("run_command", {"sandbox_id": "sbx-none", "command": "true"}, "no sandbox 'sbx-none'"),
                ("run_command", {"sandbox_id": "sbx-none"}, "needs the argument 'command'"),
                ("run_command", {"sandbox_id": "sbx-none", "command": "true", "timeout": "soon"}, "'timeout'"),
                ("run_command", {"sandbox_id": "sbx-none", "command": "true", "colour": 1}, "no argument 'colour'"),
                ("write_file", {"sandbox_id": "sbx-none", "path": "/a"}, "'content'"),
                ("write_file", {"sandbox_id": "sbx-none", "path": "/a", "content_base64": "!!"}, "not base64"),
                ("read_file", {"sandbox_id": "sbx-none", "path": "relative"}, "absolute"),
                ("run_code", {"language": "cobol", "code": "x"}, "'cobol'"),
                ("create_sandbox", {"isolation": "chroot"}, "'chroot'"),
                ("create_sandbox", {"imgae": "host"}, "'imgae'")]:
            r = s.call(name, **args)
            assert r["isError"] is True and "structuredContent" not in r, (name, r)
            text = r["content"][0]["text"]
            assert r["content"][0]["type"] == "text" and text.startswith(name + ": ") and words in text, (name, r)
        # Limits are the server's, as over HTTP: the second sandbox is one too many.
        sid = s.call("create_sandbox")["structuredContent"]["sandbox_id"]
        r = s.call("create_sandbox")
        assert r["isError"] and "--max-sandboxes 1" in r["content"][0]["text"]
        # A command past its timeout is killed, and the answer is an error that says so.
        r = s.call("run_command", sandbox_id=sid, command="echo before; sleep 30", timeout=0.5)
        assert r["isError"] is True and "timeout" in r["content"][0]["text"]
        assert r["structuredContent"]["timed_out"] is True and r["structuredContent"]["stdout"] == "before\n"
        # A command's own failure is its exit code, not a tool error.
        r = s.call("run_command", sandbox_id=sid, command="exit 3")
        assert r["isError"] is False and r["structuredContent"]["exit_code"] == 3
        assert s.call("destroy_sandbox", sandbox_id=sid)["structuredContent"]["destroyed"] is True
        # An interpreter the sandbox does not have (here: not on its PATH) is an error naming it.
        sid = s.call("create_sandbox", env={"PATH": "/nowhere"})["structuredContent"]["sandbox_id"]
        r = s.call("run_code", sandbox_id=sid, language="node", code="1")
        assert r["isError"] is True and "no 'node'" in r["content"][0]["text"], r
    finally:
        rc, err = s.close()
    assert rc == 0, err


def test_stdio_sandboxes_go_when_stdin_closes(capsule_home):
    s = Stdio(capsule_home)
    s.initialize()
    sid = s.call("create_sandbox", timeout=600)["structuredContent"]["sandbox_id"]
    assert sid in running(capsule_home)
    rc, err = s.close()
    assert rc == 0, err
    assert wait_gone(capsule_home, sid)


def test_stdio_sigterm_during_a_command_removes_its_sandbox(capsule_home):
    s = Stdio(capsule_home)
    s.initialize()
    sid = s.call("create_sandbox")["structuredContent"]["sandbox_id"]
    s.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": {"name": "run_command", "arguments": {"sandbox_id": sid, "timeout": 600,
                                                                      "command": "touch /tmp/started; sleep 300"}}})
           + "\n")
    deadline = time.monotonic() + 30
    while subprocess.run([CAPSULE, "exec", sid, "--", "test", "-e", "/tmp/started"], env=_env(capsule_home),
                         capture_output=True, timeout=30).returncode != 0:
        assert time.monotonic() < deadline, "the command never started"
        time.sleep(0.05)
    s.proc.send_signal(signal.SIGTERM)
    assert s.proc.wait(timeout=30) == 0
    assert wait_gone(capsule_home, sid)


def test_capsule_mcp_refuses_bad_options(capsule_home):
    for args, words in [(["--max-sandboxes", "x"], "--max-sandboxes"), (["--listen", "127.0.0.1:0"], "'--listen'"),
                        (["stray"], "'stray'"), (["--default-memory"], "needs a value")]:
        r = subprocess.run([CAPSULE, "mcp", *args], env=_env(capsule_home), capture_output=True, text=True,
                           timeout=30, stdin=subprocess.DEVNULL)
        assert r.returncode == 125 and r.stdout == "", (args, r)
        assert r.stderr.startswith("capsule mcp: ") and words in r.stderr and r.stderr.count("\n") == 1, (args, r)
    r = subprocess.run([CAPSULE, "mcp", "--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "2025-06-18" in r.stdout


# ---- raw HTTP at /mcp -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(capsule_home):
    audit = os.path.join(os.path.dirname(capsule_home), "mcp-audit.log")
    s = Server(capsule_home, "--max-sandboxes", "4", "--default-memory", "256M", "--audit-log", audit)
    s.audit = audit
    yield s
    rc, err = s.stop()
    assert rc == 0, err


def post(port, tok, body, session=None, headers=None):
    h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    if tok:
        h["Authorization"] = f"Bearer {tok}"
    if session:
        h["Mcp-Session-Id"] = session
    h.update(headers or {})
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        c.request("POST", "/mcp", body=body if isinstance(body, bytes) else json.dumps(body).encode(), headers=h)
        r = c.getresponse()
        data = r.read()
        return r.status, dict(r.getheaders()), json.loads(data) if data else None
    finally:
        c.close()


def http_initialize(port, tok):
    status, hdrs, doc = post(port, tok, {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                                         "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                                                    "clientInfo": {"name": "pytest", "version": "1"}}})
    assert status == 200 and doc["result"]["protocolVersion"] == "2025-06-18", doc
    return hdrs["Mcp-Session-Id"]


def test_http_sessions_tokens_and_malformed_messages(server, capsule_home):
    port = server.port
    a, b = new_token(capsule_home, "mcp-a"), new_token(capsule_home, "mcp-b")
    ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    status, hdrs, doc = post(port, None, ping)
    assert status == 401 and hdrs["WWW-Authenticate"] == "Bearer" and doc["error"]["code"] == "unauthorized"
    sa = http_initialize(port, a)
    assert len(sa) == 32 and all(ch in "0123456789abcdef" for ch in sa)
    assert http_initialize(port, a) != sa  # each initialize is a new session
    assert post(port, a, ping, sa)[2] == {"jsonrpc": "2.0", "id": 2, "result": {}}
    # Without a session, with one never made, with another token's: 400, 404, 404.
    status, _, doc = post(port, a, ping)
    assert status == 400 and "Mcp-Session-Id" in rpc_error(doc, -32600, 2)
    assert post(port, a, ping, "0" * 32)[0] == 404
    assert post(port, b, ping, sa)[0] == 404
    # A notification or a response is accepted with no body.
    status, _, doc = post(port, a, {"jsonrpc": "2.0", "method": "notifications/initialized"}, sa)
    assert status == 202 and doc is None
    # What the transport refuses.
    status, _, doc = post(port, a, b"{not json", sa)
    assert status == 400 and doc["error"]["code"] == -32700
    status, _, doc = post(port, a, [ping], sa)
    assert status == 400 and "batch" in doc["error"]["message"]
    status, _, doc = post(port, a, ping, sa, {"MCP-Protocol-Version": "1999-01-01"})
    assert status == 400 and "1999-01-01" in doc["error"]["message"]
    assert post(port, a, ping, sa, {"MCP-Protocol-Version": "2025-06-18"})[0] == 200
    assert post(port, a, ping, sa, {"Accept": "text/html"})[0] == 406
    # Past 1 MiB: curl waits for "100 Continue", so it reads the early 413 instead of writing
    # 2 MiB into a connection the server closed.
    r = subprocess.run(["curl", "-sS", "-H", f"Authorization: Bearer {a}", "-H", f"Mcp-Session-Id: {sa}",
                        "-H", "Content-Type: application/json", "--data-binary", "@-", "-o", "/dev/null",
                        "-w", "%{http_code}", f"http://127.0.0.1:{port}/mcp"],
                       input=b'{"x":"' + b"a" * (2 << 20) + b'"}', capture_output=True, timeout=60)
    assert r.stdout == b"413", r
    status, _, doc = post(port, a, {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                                    "params": {"name": "nope", "arguments": {}}}, sa)
    assert status == 200 and doc["error"]["code"] == -32602
    # No SSE stream to offer: GET is 405, with what is allowed.
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("GET", "/mcp", headers={"Authorization": f"Bearer {a}", "Accept": "text/event-stream"})
    r = c.getresponse()
    r.read()
    c.close()
    assert r.status == 405 and r.getheader("Allow") == "POST, DELETE"
    # DELETE ends the session, for its own token only.
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("DELETE", "/mcp", headers={"Authorization": f"Bearer {b}", "Mcp-Session-Id": sa})
    r = c.getresponse()
    r.read()
    assert r.status == 404
    c.request("DELETE", "/mcp", headers={"Authorization": f"Bearer {a}", "Mcp-Session-Id": sa})
    r = c.getresponse()
    r.read()
    c.close()
    assert r.status == 204
    assert post(port, a, ping, sa)[0] == 404


def test_http_tools_use_the_tokens_sandboxes(server, capsule_home):
    port = server.port
    name_a, name_b = f"mcp-own-a-{os.getpid()}", f"mcp-own-b-{os.getpid()}"
    a, b = token(capsule_home, name_a), token(capsule_home, name_b)
    sa, sb = http_initialize(port, a), http_initialize(port, b)

    def call(tok, session, name, **arguments):
        status, _, doc = post(port, tok, {"jsonrpc": "2.0", "id": 5, "method": "tools/call",
                                          "params": {"name": name, "arguments": arguments}}, session)
        assert status == 200, doc
        return doc["result"]

    sid = call(a, sa, "create_sandbox", labels={"via": "mcp"})["structuredContent"]["sandbox_id"]
    r = call(a, sa, "run_command", sandbox_id=sid, command="echo $((6*7))")
    assert r["structuredContent"]["stdout"] == "42\n" and not r["isError"]
    # The same sandbox is the token's in the REST API too, and no one else's anywhere.
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for tok, want in [(a, 200), (b, 404)]:
        c.request("GET", f"/v1/sandboxes/{sid}", headers={"Authorization": f"Bearer {tok}"})
        r = c.getresponse()
        doc = json.loads(r.read())
        assert r.status == want, doc
    c.close()
    r = call(b, sb, "run_command", sandbox_id=sid, command="true")
    assert r["isError"] and f"no sandbox '{sid}'" in r["content"][0]["text"]
    r = call(b, sb, "destroy_sandbox", sandbox_id=sid)
    assert r["isError"] and sid in running(capsule_home)
    assert call(a, sa, "destroy_sandbox", sandbox_id=sid)["structuredContent"] == {"sandbox_id": sid,
                                                                                    "destroyed": True}
    assert wait_gone(capsule_home, sid)
    # The audit log says which tool each call used, on which sandbox, and whether it failed
    # (each line is written once its answer has gone: the last may come a moment later).
    want = [(name_a, "initialize", None, None, None), (name_b, "initialize", None, None, None),
            (name_a, "tools/call", "create_sandbox", sid, False), (name_a, "tools/call", "run_command", sid, False),
            (name_b, "tools/call", "run_command", sid, True), (name_b, "tools/call", "destroy_sandbox", sid, True),
            (name_a, "tools/call", "destroy_sandbox", sid, False)]
    deadline = time.monotonic() + 10
    while True:
        with open(server.audit) as f:
            lines = [json.loads(line) for line in f]
        mine = [line for line in lines if line["token"] in (name_a, name_b) and line["path"] == "/mcp"]
        if len(mine) >= len(want) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert all(line["method"] == "POST" and line["status"] == 200 for line in mine)
    got = [(line["token"], "tools/call" if "tool" in line else "initialize", line.get("tool"), line["sandbox"],
            line.get("tool_error")) for line in mine]
    assert sorted(got, key=str) == sorted(want, key=str)


# ---- the official TypeScript SDK as the client ------------------------------------------------


class SdkClient:
    """tests/mcp/client.mjs: one JSON step a line, one answer a line."""

    def __init__(self, home, *argv):
        assert os.path.isdir(os.path.join(NPM_PREFIX, "node_modules", "@modelcontextprotocol", "sdk")), \
            "the MCP SDK is not installed: run scripts/install-npm-deps (make deps does)"
        self.proc = subprocess.Popen(["node", CLIENT, *argv], env=_env(home), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def step(self, op, timeout=120, **kw):
        self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.proc.stdin.flush()
        line = read_line(self.proc.stdout, timeout)
        assert line, self.proc.stderr.read()
        return json.loads(line)

    def ok(self, op, **kw):
        doc = self.step(op, **kw)
        assert "ok" in doc, doc
        return doc["ok"]

    def call(self, name, **arguments):
        return self.ok("call", name=name, arguments=arguments)

    def close(self):
        self.ok("close")
        return self.proc.wait(timeout=30)


def structured(result):
    assert result["isError"] is False, result
    # The text block holds the same JSON, for clients that read only content.
    assert json.loads(result["content"][0]["text"]) == result["structuredContent"]
    return result["structuredContent"]


def exercise_every_tool(c):
    """Every tool through the SDK, which checks each answer against the tool's outputSchema."""
    tools = {t["name"]: t for t in c.ok("tools")}
    assert set(tools) == TOOLS
    for t in tools.values():
        assert t["inputSchema"]["type"] == "object" and t["outputSchema"]["type"] == "object", t
        assert t["description"]
    sid = structured(c.call("create_sandbox", memory="256M"))["sandbox_id"]
    out = structured(c.call("run_command", sandbox_id=sid, command="echo out; echo err >&2; exit 3"))
    assert (out["exit_code"], out["stdout"], out["stderr"], out["timed_out"]) == (3, "out\n", "err\n", False)
    assert structured(c.call("run_command", sandbox_id=sid, command="pwd", cwd="/tmp"))["stdout"] == "/tmp\n"
    out = structured(c.call("run_command", sandbox_id=sid, command="printf '\\377\\000x'"))
    assert out["stdout_encoding"] == "base64" and base64.b64decode(out["stdout"]) == b"\xff\x00x"
    assert structured(c.call("write_file", sandbox_id=sid, path="/tmp/d/hello.txt", content="héllo\n")) == \
        {"path": "/tmp/d/hello.txt", "size": 7}
    blob = bytes(range(256)) * 4
    structured(c.call("write_file", sandbox_id=sid, path="/tmp/d/blob.bin",
                      content_base64=base64.b64encode(blob).decode()))
    assert structured(c.call("read_file", sandbox_id=sid, path="/tmp/d/hello.txt"))["content"] == "héllo\n"
    got = structured(c.call("read_file", sandbox_id=sid, path="/tmp/d/blob.bin"))
    assert "content" not in got and base64.b64decode(got["content_base64"]) == blob and got["size"] == 1024
    listing = structured(c.call("list_files", sandbox_id=sid, path="/tmp/d"))
    assert [(e["name"], e["type"], e["size"]) for e in listing["entries"]] == [("blob.bin", "file", 1024),
                                                                               ("hello.txt", "file", 7)]
    assert any(e["name"] == "tmp" for e in structured(c.call("list_files", sandbox_id=sid))["entries"])
    r = c.call("read_file", sandbox_id=sid, path="/tmp/d/missing")
    assert r["isError"] and "/tmp/d/missing" in r["content"][0]["text"]
    # What changed, and pause and resume.
    structured(c.call("run_command", sandbox_id=sid, command="mkdir /w && echo x > /w/f"))
    got = structured(c.call("diff_sandbox", sandbox_id=sid))
    assert got["sandbox_id"] == sid and not got["truncated"] and got["total"] == len(got["changes"])
    mine = [x for x in got["changes"] if x["path"].startswith("/w")]
    assert [(x["kind"], x["path"], x["size"]) for x in mine] == [("added", "/w", 0), ("added", "/w/f", 2)]
    assert mine[1]["mtime"].endswith("Z") and "mtime_ns" not in mine[1]
    r = c.call("diff_sandbox", sandbox_id=sid, since="no-such-checkpoint")
    assert r["isError"] and "no-such-checkpoint" in r["content"][0]["text"]
    # A save is only ever the token's own (its host name is not taken either).
    for since in ("save:no-such-save", "save:serve-0123456789abcdef-x"):
        r = c.call("diff_sandbox", sandbox_id=sid, since=since)
        assert r["isError"] and "no save '" + since[5:] + "'" in r["content"][0]["text"]
    assert structured(c.call("pause_sandbox", sandbox_id=sid)) == {"sandbox_id": sid, "paused": True}
    r = c.call("run_command", sandbox_id=sid, command="true")
    assert r["isError"] and "paused" in r["content"][0]["text"]
    assert structured(c.call("resume_sandbox", sandbox_id=sid)) == {"sandbox_id": sid, "paused": False}
    # run_code in the sandbox (it sees its files) and in a fresh one of its own.
    out = structured(c.call("run_code", sandbox_id=sid, language="python",
                            code="print(open('/tmp/d/hello.txt').read().upper(), end='')"))
    assert out["stdout"] == "HÉLLO\n"
    for language, code in [("python", "import sys; print(sys.version_info[0])"), ("bash", "echo $((2+1))"),
                           ("node", "console.log(1+2)")]:
        out = structured(c.call("run_code", language=language, code=code))
        assert out["stdout"] == "3\n" and out["exit_code"] == 0, (language, out)
    r = c.call("run_command", sandbox_id=sid, command="sleep 30", timeout=0.3)
    assert r["isError"] and r["structuredContent"]["timed_out"] and r["structuredContent"]["exit_code"] == 137
    r = c.call("run_command", sandbox_id="sbx-0000000000000000", command="true")
    assert r["isError"] and "no sandbox" in r["content"][0]["text"]
    r = c.call("run_command", sandbox_id=sid, command="")
    assert r["isError"] and "'command'" in r["content"][0]["text"]
    err = c.step("call", name="no_such_tool")["error"]
    assert err["code"] == -32602 and "no_such_tool" in err["message"]
    assert structured(c.call("destroy_sandbox", sandbox_id=sid))["destroyed"] is True
    assert c.call("run_command", sandbox_id=sid, command="true")["isError"]
    return sid


def test_sdk_client_over_stdio(capsule_home):
    c = SdkClient(capsule_home, "stdio", CAPSULE, "mcp")
    info = c.ok("connect")
    assert info["server"]["name"] == "capsule" and "create_sandbox" in info["instructions"]
    before = running(capsule_home)
    exercise_every_tool(c)
    assert running(capsule_home) == before  # run_code's own sandboxes are gone too
    kept = structured(c.call("create_sandbox"))["sandbox_id"]
    assert c.close() == 0
    assert wait_gone(capsule_home, kept)  # the stdio server's sandboxes go with it


def test_sdk_client_over_http(server, capsule_home):
    url = f"http://127.0.0.1:{server.port}/mcp"
    denied = SdkClient(capsule_home, "http", url)
    err = denied.step("connect")["error"]
    assert "401" in err["message"] or "nauthorized" in err["message"], err
    denied.proc.kill()
    denied.proc.wait()

    tok, other = new_token(capsule_home, "sdk-a"), new_token(capsule_home, "sdk-b")
    c = SdkClient(capsule_home, "http", url, tok)
    info = c.ok("connect")
    assert info["protocol"] == "2025-06-18" and len(info["session"]) == 32
    exercise_every_tool(c)
    sid = structured(c.call("create_sandbox"))["sandbox_id"]
    d = SdkClient(capsule_home, "http", url, other)
    d.ok("connect")
    r = d.call("read_file", sandbox_id=sid, path="/etc/hostname")
    assert r["isError"] and f"no sandbox '{sid}'" in r["content"][0]["text"]
    assert d.close() == 0
    assert c.ok("terminate")["session"] is None
    assert c.close() == 0
    # Sandboxes belong to the token, not the session: it outlives the session, as over REST.
    assert sid in running(capsule_home)
    assert structured_http_delete(server.port, tok, sid) == 200


def structured_http_delete(port, tok, sid):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        c.request("DELETE", f"/v1/sandboxes/{sid}", headers={"Authorization": f"Bearer {tok}"})
        r = c.getresponse()
        r.read()
        return r.status
    finally:
        c.close()


def test_http_create_sandbox_takes_a_pool_and_a_save(capsule_home):
    pool = f"mp-{uuid.uuid4().hex[:8]}"
    s = Server(capsule_home, "--pool", f"{pool}:1", "--default-memory", "256M")
    tok = new_token(capsule_home, "mcp-pool")
    rest = Api(s.port, tok)
    made = []
    try:
        session = http_initialize(s.port, tok)

        def call(name, **arguments):
            status, _, doc = post(s.port, tok, {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                                                "params": {"name": name, "arguments": arguments}}, session)
            assert status == 200, doc
            return doc["result"]

        status, _, doc = post(s.port, tok, {"jsonrpc": "2.0", "id": 6, "method": "tools/list"}, session)
        props = next(t for t in doc["result"]["tools"] if t["name"] == "create_sandbox")["inputSchema"]["properties"]
        assert props["pool"]["type"] == "string" and props["save"]["type"] == "string"
        r = call("create_sandbox", pool=pool)
        assert not r["isError"], r
        made.append(r["structuredContent"]["sandbox_id"])
        assert rest.call("GET", f"/v1/sandboxes/{made[-1]}")[1]["pool"] == pool
        r = call("create_sandbox", pool=pool, memory="128M")
        assert r["isError"] and "'memory'" in r["content"][0]["text"]
        r = call("create_sandbox", pool="no-such-pool")
        assert r["isError"] and "no-such-pool" in r["content"][0]["text"]
        # A save of the token's, made over REST, is a start for its MCP sandboxes.
        call("run_command", sandbox_id=made[0], command="echo saved > /root/f")
        assert rest.call("POST", f"/v1/sandboxes/{made[0]}/save", {"name": "m"})[0] == 201
        r = call("create_sandbox", save="m")
        assert not r["isError"], r
        made.append(r["structuredContent"]["sandbox_id"])
        assert call("run_command", sandbox_id=made[-1], command="cat /root/f")["structuredContent"]["stdout"] == "saved\n"
        r = call("create_sandbox", save="nope")
        assert r["isError"] and "no save 'nope'" in r["content"][0]["text"]
    finally:
        for sid in made:
            rest.call("DELETE", f"/v1/sandboxes/{sid}")
        rest.call("DELETE", "/v1/saves/m")
        rc, err = s.stop()
    assert rc == 0, err
