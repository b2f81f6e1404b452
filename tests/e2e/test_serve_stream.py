"""capsule serve: streaming exec (docs/serve.md, Streaming exec): a command started by POST
.../execs, its output read as server-sent events, its stdin fed by POST .../stdin, signals by
POST .../signal. Driven over loopback by http.client and curl against the real server."""
import base64
import http.client
import io
import json
import subprocess
import threading
import time

import pytest

from tests.conftest import CAPSULE, _env
from tests.e2e.test_serve import Api, Server, assert_error, curl, new_token
from tests.e2e.test_serve_api import scrape, values

GRACE = 3


@pytest.fixture(scope="module")
def server(capsule_home):
    s = Server(capsule_home, "--max-execs", "4", "--exec-grace", str(GRACE), "--default-memory", "256M")
    yield s
    rc, err = s.stop()
    assert rc == 0, err


@pytest.fixture
def api(server, capsule_home):
    return Api(server.port, new_token(capsule_home, "stream"))


@pytest.fixture
def sid(api):
    sid = api.create()
    yield sid
    api.call("DELETE", f"/v1/sandboxes/{sid}")


class Events:
    """One GET .../events: its server-sent events, read as they come."""

    def __init__(self, api, sid, eid, timeout=120):
        self.conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=timeout)
        self.conn.request("GET", f"/v1/sandboxes/{sid}/execs/{eid}/events",
                          headers={"Authorization": f"Bearer {api.tok}"})
        self.resp = self.conn.getresponse()
        self.status = self.resp.status

    def next(self):
        """(event, data as a dict), skipping keep-alive comments; None at the end."""
        name, data = None, []
        while True:
            line = self.resp.readline()
            if not line:
                return None
            line = line.rstrip(b"\n")
            if not line:
                if name is not None:
                    return name, json.loads(b"".join(data))
                continue
            if line.startswith(b":"):
                continue
            field, _, value = line.partition(b": ")
            if field == b"event":
                name = value.decode()
            elif field == b"data":
                data.append(value)

    def rest(self, whole=False):
        """Every output byte per stream until the last event, and that event. WHOLE: read the
        rest at once first (http.client's readline is slow on a chunked body)."""
        if whole:
            self.resp = io.BufferedReader(io.BytesIO(self.resp.read()))
        out = {"stdout": b"", "stderr": b""}
        while True:
            ev = self.next()
            assert ev is not None, "the stream ended without an exit or error event"
            name, doc = ev
            if name in out:
                out[name] += decode(doc)
                continue
            assert self.next() is None  # nothing after the last event
            return out, name, doc

    def close(self):
        self.conn.close()


def decode(doc):
    assert doc["encoding"] in ("utf-8", "base64"), doc
    return base64.b64decode(doc["data"]) if doc["encoding"] == "base64" else doc["data"].encode()


def start(api, sid, **req):
    status, doc = api.call("POST", f"/v1/sandboxes/{sid}/execs", req)
    assert status == 201, doc
    assert doc["id"].startswith("exec-") and doc["sandbox"] == sid, doc
    return doc["id"]


def stdin(api, sid, eid, data, close=False):
    return api.call("POST", f"/v1/sandboxes/{sid}/execs/{eid}/stdin" + ("?close=1" if close else ""), data,
                    headers={"Content-Type": "application/octet-stream"})


def processes(api, sid):
    return api.exec(sid, command="ps -eo args")["stdout"]


def wait_for(cond, what, limit=60):
    deadline = time.monotonic() + limit
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_stdin_goes_through_cat_both_ways_with_binary_bytes(server, api, sid):
    eid = start(api, sid, cmd=["cat"])
    ev = Events(api, sid, eid)
    assert ev.status == 200 and ev.resp.getheader("Content-Type") == "text/event-stream"
    # More than every buffer on the way (the server's, the protocol's window), so that stdin
    # and output both wait on flow control; bytes that are not UTF-8 come back as base64.
    # It is read while it is written, as a pipe must be.
    blob = bytes(range(256)) * 4096 * 5
    got = []
    reader = threading.Thread(target=lambda: got.append(ev.rest()))
    reader.start()
    status, doc = stdin(api, sid, eid, blob[:3 << 20])
    assert status == 200 and doc == {"written": 3 << 20, "closed": False}, doc
    status, doc = stdin(api, sid, eid, blob[3 << 20:], close=True)
    assert status == 200 and doc["closed"], doc
    reader.join(120)
    out, name, doc = got[0]
    assert name == "exit" and doc == {"exit_code": 0, "signal": 0, "timed_out": False}
    assert out["stdout"] == blob and out["stderr"] == b""
    ev.close()
    # The command and its stream are gone once the exit was read.
    assert_error(*api.call("GET", f"/v1/sandboxes/{sid}/execs/{eid}"), 404, "not_found")


def test_output_streams_as_it_is_written(server, api, sid):
    # The command writes a line, then waits for a file that only this test makes: the line can
    # only arrive first if output streams.
    eid = start(api, sid, command="echo first; while [ ! -e /tmp/go ]; do sleep 0.02; done; "
                                 "printf 'caf\\303'; sleep 0.2; printf '\\251\\n' >&1; echo err >&2; exit 7")
    ev = Events(api, sid, eid)
    assert ev.next() == ("stdout", {"data": "first\n", "encoding": "utf-8"})
    status, doc = api.call("GET", f"/v1/sandboxes/{sid}/execs/{eid}")
    assert status == 200 and doc["running"] and doc["attached"] and doc["stdin_open"], doc
    api.exec(sid, cmd=["touch", "/tmp/go"])
    out, name, doc = ev.rest()
    # A character split across two writes still comes as text.
    assert out == {"stdout": "café\n".encode(), "stderr": b"err\n"}
    assert name == "exit" and doc["exit_code"] == 7
    ev.close()


def test_signals_and_exit_codes(server, api, sid):
    eid = start(api, sid, cmd=["sleep", "600"])
    ev = Events(api, sid, eid)
    assert_error(*api.call("POST", f"/v1/sandboxes/{sid}/execs/{eid}/signal", {"signal": "BOGUS"}), 400,
                 "invalid_request")
    assert_error(*api.call("POST", f"/v1/sandboxes/{sid}/execs/{eid}/signal", {"signal": 0}), 400,
                 "invalid_request")
    assert_error(*api.call("POST", f"/v1/sandboxes/{sid}/execs/{eid}/signal", {"sig": "TERM"}), 400,
                 "invalid_request")
    assert api.call("POST", f"/v1/sandboxes/{sid}/execs/{eid}/signal", {"signal": "SIGTERM"}) == (200, {"sent": True})
    out, name, doc = ev.rest()
    assert name == "exit" and doc == {"exit_code": 143, "signal": 15, "timed_out": False}
    ev.close()

    # A trap: the signal reaches the command, which decides what to do with it.
    eid = start(api, sid, command="trap 'echo got USR1; exit 5' USR1; echo ready; while :; do sleep 0.05; done")
    ev = Events(api, sid, eid)
    assert ev.next()[1]["data"] == "ready\n"
    assert api.call("POST", f"/v1/sandboxes/{sid}/execs/{eid}/signal", {"signal": 10})[0] == 200
    out, name, doc = ev.rest()
    assert out["stdout"] == b"got USR1\n" and doc["exit_code"] == 5
    ev.close()

    # A timeout, and a command that is not there (127, as the plain exec answers).
    eid = start(api, sid, cmd=["sleep", "600"], timeout=0.5)
    ev = Events(api, sid, eid)
    _, name, doc = ev.rest()
    assert doc["timed_out"] and doc["exit_code"] == 137
    ev.close()
    eid = start(api, sid, cmd=["no-such-command"])
    ev = Events(api, sid, eid)
    out, name, doc = ev.rest()
    assert name == "exit" and doc["exit_code"] == 127 and b"no-such-command" in out["stderr"]
    ev.close()


def test_metrics_count_streaming_execs_with_the_plain_ones(server, api, sid):
    for req in ({"command": "exit 3"}, {"cmd": ["sleep", "600"], "timeout": 0.3}):
        eid = start(api, sid, **req)
        ev = Events(api, sid, eid)
        ev.rest()
        ev.close()
    assert api.exec(sid, command="true")["exit_code"] == 0
    m = scrape(server.port, api.tok)
    assert values(m, "capsule_execs_total", sandbox=sid, outcome="exited") == [2]
    assert values(m, "capsule_execs_total", sandbox=sid, outcome="timed_out") == [1]
    assert values(m, "capsule_exec_duration_seconds_count", sandbox=sid) == [3]
    assert values(m, "capsule_exec_duration_seconds_sum", sandbox=sid)[0] >= 0.3


def test_a_client_that_goes_away_leaves_nothing_running(server, api, sid):
    # Read, then vanish: the command is killed GRACE seconds later.
    eid = start(api, sid, command="echo up; exec sleep 3001")
    ev = Events(api, sid, eid)
    assert ev.next()[0] == "stdout"
    ev.resp.close()
    ev.close()
    wait_for(lambda: "sleep 3001" not in processes(api, sid), "the command of a vanished client still runs")
    assert_error(*api.call("GET", f"/v1/sandboxes/{sid}/execs/{eid}"), 404, "not_found")
    # Never read at all: the same.
    eid = start(api, sid, cmd=["sleep", "3002"])
    assert "sleep 3002" in processes(api, sid)
    wait_for(lambda: "sleep 3002" not in processes(api, sid), "an unread command still runs")
    # A client that comes back within the grace gets what was not sent yet, and the exit.
    eid = start(api, sid, command="echo one; read x; echo two $x")
    ev = Events(api, sid, eid)
    assert ev.next()[1]["data"] == "one\n"
    ev.close()
    assert stdin(api, sid, eid, b"back\n", close=True)[0] == 200
    wait_for(lambda: not api.call("GET", f"/v1/sandboxes/{sid}/execs/{eid}")[1]["attached"], "still attached")
    ev = Events(api, sid, eid)
    out, name, doc = ev.rest()
    assert out["stdout"] == b"two back\n" and doc["exit_code"] == 0
    ev.close()


def test_a_slow_reader_slows_the_command_and_the_server_stays_small(server, api, sid):
    size = 32 << 20
    # The command counts what it has written, so the test can see it stop.
    prog = ("import os,sys\nb=b'x'*65536\nn=0\n"
            f"while n<{size}:\n  os.write(1,b)\n  n+=len(b)\n  open('/tmp/n','w').write(str(n))\n")
    before = server.vm_hwm_kib()
    eid = start(api, sid, cmd=["python3", "-c", prog])
    ev = Events(api, sid, eid)
    assert ev.status == 200

    def written():
        r = api.exec(sid, command="cat /tmp/n 2>/dev/null || echo 0")
        return int(r["stdout"].strip() or 0)

    # Not reading: the command must stop, far short of its 64 MiB.
    last, same = -1, 0
    while same < 5:
        now = written()
        same = same + 1 if now == last else 0
        last = now
        time.sleep(0.2)
    # Its stop is the server's buffer (256 KiB), the protocol's window (1 MiB a stream), and
    # the sockets' buffers on the way: a few MiB (measured: 4 MiB), nothing near the whole.
    assert last < 16 << 20, f"the command wrote {last} bytes with no one reading"
    status, doc = api.call("GET", f"/v1/sandboxes/{sid}/execs/{eid}")
    assert doc["running"] and doc["buffered"] <= 256 << 10, doc
    out, name, doc = ev.rest(whole=True)
    assert name == "exit" and doc["exit_code"] == 0 and len(out["stdout"]) == size
    ev.close()
    grown = server.vm_hwm_kib() - before
    # A server that kept what the reader did not take would grow by the whole 32 MiB.
    assert grown < 16 << 10, f"the server's peak RSS grew by {grown} KiB"


def curl_stream(server, api, sid, eid, feed):
    """The events of command EID as `curl -N` prints them, read while FEED(url of stdin, auth
    header) runs."""
    base = f"http://127.0.0.1:{server.port}/v1/sandboxes/{sid}/execs/{eid}"
    auth = f"Authorization: Bearer {api.tok}"
    reader = subprocess.Popen(["curl", "-sSN", "-H", auth, base + "/events"], stdout=subprocess.PIPE)
    try:
        feed(base + "/stdin?close=1", auth)
        return reader.communicate(timeout=60)[0].decode()
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()


def test_curl_drives_a_stream(server, api, sid):
    def hello(url, auth):
        r = curl("-f", "-H", auth, "--data-binary", "hello stream\n", url)
        assert json.loads(r.stdout) == {"written": 13, "closed": True}

    text = curl_stream(server, api, sid, start(api, sid, command="tr a-z A-Z"), hello)
    assert 'event: stdout\ndata: {"data":"HELLO STREAM\\u000a","encoding":"utf-8"}\n\n' in text, text
    assert text.endswith('event: exit\ndata: {"exit_code":0,"signal":0,"timed_out":false}\n\n'), text

    # stdin of unknown length: curl sends a pipe chunked.
    def piped(url, auth):
        feed = subprocess.Popen(["head", "-c", "3000000", "/dev/zero"], stdout=subprocess.PIPE)
        r = subprocess.run(["curl", "-sS", "-f", "-H", auth, "-T", "-", "-X", "POST", url], stdin=feed.stdout,
                           capture_output=True, timeout=120)
        feed.wait()
        assert r.returncode == 0 and json.loads(r.stdout) == {"written": 3000000, "closed": True}, r

    text = curl_stream(server, api, sid, start(api, sid, cmd=["wc", "-c"]), piped)
    assert '"data":"3000000\\u000a"' in text, text


def test_many_streams_at_once(server, capsule_home):
    # Three tokens with --max-execs 4 each, all streaming through cat at the same time.
    apis = [Api(server.port, new_token(capsule_home, "stream")) for _ in range(3)]
    sids = [a.create() for a in apis]
    errors = []

    def one(a, sid, i):
        try:
            eid = start(a, sid, cmd=["cat"])
            ev = Events(a, sid, eid)
            got = []
            reader = threading.Thread(target=lambda: got.append(ev.rest()))
            reader.start()
            data = (f"{sid} {i} ".encode()) * 20000
            for k in range(0, len(data), 65536):
                assert stdin(a, sid, eid, data[k:k + 65536])[0] == 200
            assert stdin(a, sid, eid, b"", close=True)[0] == 200
            reader.join(120)
            out, name, doc = got[0]
            assert out["stdout"] == data and doc["exit_code"] == 0
            ev.close()
        except Exception as e:  # noqa: BLE001 - reported below, with the others
            errors.append(repr(e))

    threads = [threading.Thread(target=one, args=(a, sid, i)) for a, sid in zip(apis, sids) for i in range(4)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
    finally:
        for a, sid in zip(apis, sids):
            a.call("DELETE", f"/v1/sandboxes/{sid}")
    assert errors == []


def test_errors_ownership_and_limits(server, api, sid, capsule_home):
    eid = start(api, sid, command="cat; exec sleep 600")
    ev = Events(api, sid, eid)
    # One reader at a time.
    second = Events(api, sid, eid)
    assert second.status == 409 and json.loads(second.resp.read())["error"]["code"] == "busy"
    second.close()
    # Another token sees neither the sandbox nor the command.
    other = Api(server.port, new_token(capsule_home, "stream"))
    for method, path, body in (("GET", f"/execs/{eid}", None), ("GET", f"/execs/{eid}/events", None),
                               ("POST", f"/execs/{eid}/signal", {"signal": "KILL"}),
                               ("POST", f"/execs/{eid}/stdin", b"x"), ("POST", "/execs", {"cmd": ["true"]})):
        assert_error(*other.call(method, f"/v1/sandboxes/{sid}{path}", body), 404, "not_found")
    assert_error(*api.call("GET", f"/v1/sandboxes/{sid}/execs/exec-0000000000000000"), 404, "not_found")
    assert_error(*api.call("POST", f"/v1/sandboxes/{sid}/execs", {"cmd": []}), 400, "invalid_request")
    # --max-execs 4 a token: this one and three more, then 429 (the first three never read,
    # so they go after the grace and do not hold the token's room for long).
    for _ in range(3):
        start(api, sid, cmd=["sleep", "600"])
    assert_error(*api.call("POST", f"/v1/sandboxes/{sid}/execs", {"cmd": ["true"]}), 429, "limit_exceeded")
    other_sid = other.create()
    assert start(other, other_sid, cmd=["true"])  # the limit is per token
    assert other.call("DELETE", f"/v1/sandboxes/{other_sid}")[0] == 200
    # stdin closed: more is refused, saying how much went in; closing again is no error.
    assert stdin(api, sid, eid, b"abc", close=True) == (200, {"written": 3, "closed": True})
    assert_error(*stdin(api, sid, eid, b"more"), 409, "stdin_closed")
    assert stdin(api, sid, eid, b"", close=True)[0] == 200
    assert ev.next() == ("stdout", {"data": "abc", "encoding": "utf-8"})
    assert api.call("POST", f"/v1/sandboxes/{sid}/execs/{eid}/signal", {"signal": "KILL"})[0] == 200
    out, name, doc = ev.rest()
    assert out["stdout"] == b"" and name == "exit" and doc["exit_code"] == 137
    # Once its exit was sent, the command is gone.
    assert_error(*api.call("POST", f"/v1/sandboxes/{sid}/execs/{eid}/signal", {"signal": "KILL"}), 404,
                 "not_found")
    ev.close()


def test_removing_the_sandbox_ends_its_streams_with_an_error(server, api):
    sid = api.create()
    eid = start(api, sid, command="echo on; exec sleep 600")
    ev = Events(api, sid, eid)
    assert ev.next()[0] == "stdout"
    assert api.call("DELETE", f"/v1/sandboxes/{sid}")[0] == 200
    out, name, doc = ev.rest()
    assert name == "error" and doc["error"]["code"] == "sandbox_not_running", doc
    ev.close()


def test_shutdown_ends_streams(capsule_home):
    s = Server(capsule_home, "--shutdown-timeout", "1")
    try:
        api = Api(s.port, new_token(capsule_home, "stream"))
        sid = api.create()
        eid = start(api, sid, command="echo on; exec sleep 600")
        ev = Events(api, sid, eid)
        assert ev.next()[0] == "stdout"
    finally:
        rc, err = s.stop()
    assert rc == 0, err
    out, name, doc = ev.rest()
    assert name == "error" and doc["error"]["code"] in ("shutting_down", "sandbox_not_running"), doc
    ev.close()


def test_stream_options_are_checked(capsule_home):
    for args, what in [(["--exec-grace", "0"], "--exec-grace"), (["--exec-grace", "3601"], "--exec-grace"),
                       (["--max-execs", "many"], "--max-execs")]:
        r = subprocess.run([CAPSULE, "serve", "--listen", "127.0.0.1:0", *args], env=_env(capsule_home),
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 125 and what in r.stderr and r.stderr.count("\n") == 1, (args, r.stderr)
