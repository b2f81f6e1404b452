"""capsule serve: what changed (GET .../diff, exec's diff), watching a folder (GET .../watch,
server-sent events) and pause and resume (POST .../pause, .../resume), end to end over
loopback against the real server (docs/serve.md)."""
import http.client
import json
import time

import pytest

from tests.conftest import Capsule, _agent_is_static
from tests.e2e.test_serve import Api, Server, assert_error, new_token

MAX_WATCHES = 2


@pytest.fixture(scope="module")
def server(capsule_home):
    s = Server(capsule_home, "--max-watches", str(MAX_WATCHES), "--default-memory", "256M")
    yield s
    rc, err = s.stop()
    assert rc == 0, err


@pytest.fixture
def api(server, capsule_home):
    return Api(server.port, new_token(capsule_home, "watch"))


@pytest.fixture
def other(server, capsule_home):
    return Api(server.port, new_token(capsule_home, "other"))


@pytest.fixture
def sid(api):
    sid = api.create()
    yield sid
    api.call("DELETE", f"/v1/sandboxes/{sid}")


def changes(api, sid, since=None):
    status, doc = api.call("GET", f"/v1/sandboxes/{sid}/diff" + (f"?since={since}" if since else ""))
    assert status == 200, doc
    assert set(doc) == {"changes"}, doc
    return [(c["kind"], c["path"]) for c in doc["changes"]], doc["changes"]


class Watch:
    """One GET .../watch: its events, parsed from large reads (http.client's readline is slow
    on a chunked body, and the overflow test reads tens of thousands)."""

    def __init__(self, api, sid, query, timeout=120):
        self.conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=timeout)
        self.conn.request("GET", f"/v1/sandboxes/{sid}/watch?{query}",
                          headers={"Authorization": f"Bearer {api.tok}"})
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.buf = b""
        self.count = 0

    def error(self):
        return self.status, json.loads(self.resp.read())

    def next(self):
        """(event, data) skipping keep-alive comments; None at the end of the stream."""
        while True:
            end = self.buf.find(b"\n\n")
            if end >= 0:
                block, self.buf = self.buf[:end], self.buf[end + 2:]
                name, data = None, []
                for line in block.split(b"\n"):
                    if line.startswith(b"event: "):
                        name = line[7:].decode()
                    elif line.startswith(b"data: "):
                        data.append(line[6:])
                if name is None:
                    continue
                self.count += 1
                return name, json.loads(b"".join(data))
            chunk = self.resp.read1(1 << 16)
            if not chunk:
                return None
            self.buf += chunk

    def until(self, path):
        got = []
        while True:
            ev = self.next()
            assert ev is not None, f"the stream ended before {path}: {got}"
            got.append(ev)
            if ev[1].get("path") == path:
                return got

    def close(self):
        self.conn.close()


def kinds(events):
    return [(name, doc["kind"], doc.get("from"), doc["path"]) for name, doc in events]


def test_diff_since_a_checkpoint_and_exec_diff(server, api, other, sid):
    doc = api.exec(sid, command="mkdir -p /w && printf hello > /w/a && rm -f /etc/motd", diff=True)
    assert doc["exit_code"] == 0, doc
    assert [(c["kind"], c["path"]) for c in doc["diff"]] == [("added", "/w"), ("added", "/w/a")]
    a = doc["diff"][1]
    assert (a["type"], a["size"], a["mode"]) == ("file", 5, "0644") and a["mtime_ns"] > 0
    # Without diff the answer is as before.
    assert "diff" not in api.exec(sid, command="true")
    assert changes(api, sid)[0] == [("added", "/w"), ("added", "/w/a")]

    assert api.call("POST", f"/v1/sandboxes/{sid}/checkpoint", {"name": "c1"})[0] == 201
    api.exec(sid, command="printf x > /w/b && rm /w/a")
    assert changes(api, sid, "c1")[0] == [("modified", "/w"), ("deleted", "/w/a"), ("added", "/w/b")]
    # A command that changes nothing has an empty diff.
    assert api.exec(sid, command="cat /w/b", diff=True)["diff"] == []

    assert_error(*api.call("GET", f"/v1/sandboxes/{sid}/diff?since=nope"), 404, "not_found")
    assert_error(*api.call("GET", f"/v1/sandboxes/{sid}/diff?since=..%2Fx"), 400, "invalid_argument")
    assert_error(*api.call("GET", f"/v1/sandboxes/{sid}/diff?since="), 400, "invalid_argument")
    assert_error(*api.call("POST", f"/v1/sandboxes/{sid}/exec", {"command": "true", "diff": "yes"}), 400,
                 "invalid_request")
    # A streaming command has no diff field: refused, not ignored.
    assert_error(*api.call("POST", f"/v1/sandboxes/{sid}/execs", {"command": "true", "diff": True}), 400,
                 "invalid_request")
    # Another token's sandbox is not there, nor its checkpoints.
    for path in ("diff", "diff?since=c1"):
        assert_error(*other.call("GET", f"/v1/sandboxes/{sid}/{path}"), 404, "not_found")
    assert_error(*other.call("POST", f"/v1/sandboxes/{sid}/exec", {"command": "true", "diff": True}), 404,
                 "not_found")


def test_diff_since_a_save_is_the_tokens_own(server, api, other, sid, capsule_home):
    api.exec(sid, command="mkdir -p /w && printf 1 > /w/a && printf 2 > /w/gone")
    assert api.call("POST", f"/v1/sandboxes/{sid}/save", {"name": "before-step"})[0] == 201
    try:
        api.exec(sid, command="printf 11 > /w/a && rm /w/gone && printf 3 > /w/new")
        want = [("modified", "/w"), ("modified", "/w/a"), ("deleted", "/w/gone"), ("added", "/w/new")]
        assert changes(api, sid, "before-step")[0] == want
        assert changes(api, sid, "save:before-step")[0] == want
        # A checkpoint of the same name comes first; 'save:' says which.
        assert api.call("POST", f"/v1/sandboxes/{sid}/checkpoint", {"name": "before-step"})[0] == 201
        assert changes(api, sid, "before-step")[0] == []
        assert changes(api, sid, "save:before-step")[0] == want
        status, doc = api.call("GET", f"/v1/sandboxes/{sid}/diff?since=save:nope")
        assert_error(status, doc, 404, "not_found")
        assert "no save 'nope'" in doc["error"]["message"]
        # Another token's save is not there, whatever it is called: by its name, or by the
        # host name the server keeps it under.
        osid = other.create()
        try:
            assert other.call("POST", f"/v1/sandboxes/{osid}/save", {"name": "theirs"})[0] == 201
            for since in ("theirs", "save:theirs"):
                assert_error(*api.call("GET", f"/v1/sandboxes/{sid}/diff?since={since}"), 404, "not_found")
            ls = Capsule(capsule_home).run("saves", "ls", "--json", check=True)
            host = [s["name"] for s in json.loads(ls.stdout) if s["name"].endswith("-theirs")][0]
            assert host.startswith("serve-")
            for since in (host, "save:" + host):
                assert_error(*api.call("GET", f"/v1/sandboxes/{sid}/diff?since={since}"), 404, "not_found")
            assert changes(other, osid, "theirs")[0] == []
        finally:
            other.call("DELETE", f"/v1/sandboxes/{osid}")
            other.call("DELETE", "/v1/saves/theirs")
    finally:
        api.call("DELETE", f"/v1/sandboxes/{sid}")
        api.call("DELETE", "/v1/saves/before-step")


def test_pause_holds_processes_and_refuses_commands_until_resume(server, api, other, sid):
    api.exec(sid, command="mkdir -p /w")
    # A writer running in the background: while paused its file does not change.
    status, doc = api.call("POST", f"/v1/sandboxes/{sid}/execs",
                           {"command": "while :; do date +%s%N > /w/n; sleep 0.02; done"})
    assert status == 201, doc
    status, doc = api.call("POST", f"/v1/sandboxes/{sid}/pause")
    assert status == 200 and doc["state"] == "paused" and doc["paused"] is True, doc
    assert api.call("GET", f"/v1/sandboxes/{sid}")[1]["paused"] is True
    listed = {s["id"]: s for s in api.call("GET", "/v1/sandboxes")[1]["sandboxes"]}
    assert listed[sid]["state"] == "paused"
    # Pausing twice is fine; a field the route does not take is refused, never ignored.
    assert api.call("POST", f"/v1/sandboxes/{sid}/pause", {})[0] == 200
    assert_error(*api.call("POST", f"/v1/sandboxes/{sid}/pause", {"to_disk": True}), 400, "invalid_request")

    # The diff reads the layer from the host, so it works on a paused sandbox: the writer's
    # file stays as it was.
    first = {c["path"]: c for c in changes(api, sid)[1]}["/w/n"]["mtime_ns"]
    time.sleep(0.5)
    assert {c["path"]: c for c in changes(api, sid)[1]}["/w/n"]["mtime_ns"] == first

    for method, path, body in [("POST", "exec", {"command": "true"}), ("POST", "execs", {"command": "true"}),
                               ("GET", "files?path=/w/n", None), ("GET", "files?path=/w&list=1", None),
                               ("GET", "watch?path=/w", None)]:
        status, doc = api.call(method, f"/v1/sandboxes/{sid}/{path}", body)
        assert_error(status, doc, 409, "sandbox_paused")
        assert "paused" in doc["error"]["message"], doc
    for op in ("pause", "resume"):
        assert_error(*other.call("POST", f"/v1/sandboxes/{sid}/{op}"), 404, "not_found")

    status, doc = api.call("POST", f"/v1/sandboxes/{sid}/resume")
    assert status == 200 and doc["state"] == "running" and doc["paused"] is False, doc
    assert api.call("POST", f"/v1/sandboxes/{sid}/resume")[0] == 200
    deadline = time.monotonic() + 60
    while {c["path"]: c for c in changes(api, sid)[1]}["/w/n"]["mtime_ns"] == first:
        assert time.monotonic() < deadline, "the writer never ran again after resume"
        time.sleep(0.05)
    assert api.exec(sid, command="echo ok")["stdout"] == "ok\n"

    # A stopped sandbox cannot be paused.
    assert api.call("POST", f"/v1/sandboxes/{sid}/stop", {"timeout": 0})[0] == 200
    assert_error(*api.call("POST", f"/v1/sandboxes/{sid}/pause"), 409, "sandbox_not_running")


def test_watch_streams_changes_and_ends_with_its_folder_or_sandbox(server, api, other, sid):
    api.exec(sid, command="mkdir -p /w/sub")
    w = Watch(api, sid, "path=/w&recursive=1")
    plain = Watch(api, sid, "path=/w")
    try:
        # The answer's headers come once the sandbox watches: every change after them is seen.
        assert w.status == 200 and w.resp.getheader("Content-Type") == "text/event-stream"
        api.exec(sid, command="mkdir /w/d")
        got = w.until("/w/d")
        api.exec(sid, command="echo x > /w/d/f && mv /w/d/f /w/d/g && rm /w/d/g && touch /w/sub/s && touch /w/end")
        got += w.until("/w/end")
        assert kinds(got) == [("create", "create", None, "/w/d"), ("create", "create", None, "/w/d/f"),
                              ("modify", "modify", None, "/w/d/f"), ("move", "move", "/w/d/f", "/w/d/g"),
                              ("delete", "delete", None, "/w/d/g"), ("create", "create", None, "/w/sub/s"),
                              ("create", "create", None, "/w/end")]
        assert got[0][1]["dir"] is True and got[0][1]["time"].endswith("Z") and got[0][1]["time_ns"] > 0
        # Not recursive: its own folder only.
        assert [(n, d["path"]) for n, d in plain.until("/w/end")] == [("create", "/w/d"), ("create", "/w/end")]
        plain.close()
        # The watched folder going ends the stream, after its own delete: an 'end' event.
        api.exec(sid, command="rm -rf /w")
        while True:
            ev = w.next()
            assert ev is not None
            if ev[0] == "end":
                break
        assert ev[1] == {} and w.next() is None
    finally:
        w.close()
        plain.close()

    # Bad input, each one line; another token's sandbox is not there.
    for query, status, code in [("path=relative", 400, "invalid_argument"), ("recursive=1", 400, "invalid_argument"),
                                ("path=/tmp&recursive=yes", 400, "invalid_argument"),
                                ("path=/no/such/folder", 404, "not_found")]:
        assert_error(*Watch(api, sid, query).error(), status, code)
    assert_error(*Watch(other, sid, "path=/tmp").error(), 404, "not_found")

    # Removing the sandbox ends its streams with an error event.
    w = Watch(api, sid, "path=/tmp")
    try:
        assert w.status == 200
        assert api.call("DELETE", f"/v1/sandboxes/{sid}")[0] == 200
        name, doc = w.next()
        assert name == "error" and doc["error"]["code"] == "sandbox_not_running", doc
        assert w.next() is None
    finally:
        w.close()


def test_watch_streams_per_token_are_capped_and_freed_when_the_client_goes(server, api, other, sid):
    streams = [Watch(api, sid, "path=/tmp") for _ in range(MAX_WATCHES)]
    try:
        assert [s.status for s in streams] == [200] * MAX_WATCHES
        status, doc = Watch(api, sid, "path=/tmp").error()
        assert_error(status, doc, 429, "limit_exceeded")
        assert "--max-watches" in doc["error"]["message"]
        # The cap is per token.
        osid = other.create()
        try:
            o = Watch(other, osid, "path=/tmp")
            assert o.status == 200
            o.close()
        finally:
            other.call("DELETE", f"/v1/sandboxes/{osid}")
        # A client that goes gives its stream back (the server sees its connection close).
        streams.pop().close()
        deadline = time.monotonic() + 60
        while True:
            w = Watch(api, sid, "path=/tmp")
            if w.status == 200:
                streams.append(w)
                break
            assert_error(*w.error(), 429, "limit_exceeded")
            assert time.monotonic() < deadline, "a closed stream was never given back"
            time.sleep(0.1)
    finally:
        for s in streams:
            s.close()


def test_a_reader_that_falls_behind_gets_an_overflow_in_bounded_memory(server, api, sid):
    api.exec(sid, command="mkdir -p /w3")
    w = Watch(api, sid, "path=/w3")
    try:
        assert w.status == 200
        hwm = server.vm_hwm_kib()
        # Nothing is read meanwhile: the sockets' buffers, the library's window (1 MiB of
        # records) and the kernel's queue (16384 events) fill; 200,000 renames are far past
        # them all. The server holds one event and libmicrohttpd's block, not a queue.
        doc = api.exec(sid, cmd=["python3", "-c", "import os\nopen('/w3/a', 'w').close()\n"
                                 "for i in range(100000): os.rename('/w3/a', '/w3/b'); os.rename('/w3/b', '/w3/a')\n"],
                       timeout=300)
        assert doc["exit_code"] == 0, doc
        while True:
            ev = w.next()
            assert ev is not None and ev[0] != "error", ev
            if ev[0] == "overflow":
                break
        assert "path" not in ev[1] and ev[1]["kind"] == "overflow" and w.count < 200000
        assert server.vm_hwm_kib() - hwm < 32 * 1024
        # Events come again once the reader caught up.
        api.exec(sid, command="touch /w3/after")
        assert w.until("/w3/after")[-1][0] == "create"
    finally:
        w.close()


def test_shutdown_ends_watch_streams_at_once(capsule_home):
    s = Server(capsule_home, "--default-memory", "256M", "--shutdown-timeout", "120")
    try:
        api = Api(s.port, new_token(capsule_home, "shut"))
        sid = api.create()
        w = Watch(api, sid, "path=/tmp")
        assert w.status == 200
        # Not held for --shutdown-timeout by a stream that has no end of its own: stop() kills
        # a server still running after its timeout (then rc is -9).
        rc, err = s.stop(timeout=100)
        assert rc == 0, err
        name, doc = w.next()
        assert name == "error" and doc["error"]["code"] == "shutting_down", doc
        w.close()
    finally:
        s.stop()


@pytest.mark.skipif(not _agent_is_static(), reason="capsule-agent is dynamically linked (a sanitizer build): "
                    "it cannot be a VM's init")
def test_a_vm_pauses_and_resumes_over_http_and_refuses_diff_in_one_line(server, api):
    """The one vm boot of this module: QMP stop and cont behind the same routes, and the
    diff, which a vm has no layer for, refused before anything runs."""
    sid = api.create(isolation="vm")
    try:
        api.exec(sid, command="mkdir -p /w")
        w = Watch(api, sid, "path=/w")
        try:
            assert w.status == 200
            api.exec(sid, command="touch /w/seen")
            assert kinds(w.until("/w/seen")) == [("create", "create", None, "/w/seen")]
        finally:
            w.close()
        assert_error(*api.call("GET", f"/v1/sandboxes/{sid}/diff"), 400, "invalid_argument")
        status, doc = api.call("GET", f"/v1/sandboxes/{sid}/diff?since=any")
        assert_error(status, doc, 400, "invalid_argument")
        assert "not available at the vm level" in doc["error"]["message"]
        status, doc = api.call("POST", f"/v1/sandboxes/{sid}/exec", {"command": "touch /w/not", "diff": True})
        assert_error(status, doc, 400, "invalid_argument")
        status, doc = api.call("POST", f"/v1/sandboxes/{sid}/pause")
        assert status == 200 and doc["state"] == "paused" and doc["paused"] is True, doc
        assert_error(*api.call("POST", f"/v1/sandboxes/{sid}/exec", {"command": "true"}), 409, "sandbox_paused")
        status, doc = api.call("POST", f"/v1/sandboxes/{sid}/resume")
        assert status == 200 and doc["state"] == "running", doc
        # The refused exec with diff ran nothing.
        assert api.exec(sid, command="ls /w")["stdout"] == "seen\n"
    finally:
        api.call("DELETE", f"/v1/sandboxes/{sid}")
