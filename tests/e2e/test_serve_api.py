"""capsule serve beyond the basics (docs/serve.md): idle timeouts, /metrics, and the routes for
stop and start, saves, ports, mounts and images, against the real server on loopback, driven
by http.client and curl."""
import hashlib
import json
import os
import re
import socket
import subprocess
import threading
import time
import uuid

import pytest

from tests.conftest import CAPSULE, _agent_is_static, _env
from tests.e2e.test_serve import Api, Server, api, assert_error, new_token, run_dir, token  # noqa: F401 (api: a fixture)


@pytest.fixture(scope="module")
def server(capsule_home):
    s = Server(capsule_home, "--max-sandboxes", "4", "--max-memory", "2G", "--default-memory", "256M")
    yield s
    rc, err = s.stop()
    assert rc == 0, err


def wait_for(cond, timeout=30, step=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


def inspect(home, sid):
    r = subprocess.run([CAPSULE, "inspect", sid], env=_env(home), capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


# ---- idle timeout -----------------------------------------------------------------------------


def test_idle_timeout_removes_a_sandbox_only_once_nothing_runs_in_it(server, api, capsule_home):
    busy = api.create(idle_timeout=2)
    assert api.call("GET", f"/v1/sandboxes/{busy}")[1]["idle_timeout"] == 2
    # A command longer than the idle timeout keeps its sandbox: idle is the library's (no exec,
    # no file transfer), not the server's own idea of it.
    done = {}
    t = threading.Thread(target=lambda: done.update(r=api.exec(busy, command="sleep 5; echo slept")))
    t.start()
    assert wait_for(lambda: inspect(capsule_home, busy).get("active") == 1)
    idle = api.create(idle_timeout=2)  # nothing runs in it: idle since its start
    assert wait_for(lambda: not os.path.exists(run_dir(capsule_home, idle)))
    assert_error(*api.call("GET", f"/v1/sandboxes/{idle}"), 404, "not_found")
    assert t.is_alive() and os.path.exists(run_dir(capsule_home, busy))  # mid-exec, well past 2 s idle
    t.join()
    assert done["r"]["stdout"] == "slept\n" and done["r"]["exit_code"] == 0
    # Once the command is over, the clock runs: the sandbox goes.
    assert wait_for(lambda: not os.path.exists(run_dir(capsule_home, busy)))
    assert api.call("GET", "/v1/sandboxes")[1]["sandboxes"] == []


def test_idle_is_the_librarys_and_inspect_shows_it(server, api, capsule_home):
    sid = api.create()
    try:
        assert api.call("GET", f"/v1/sandboxes/{sid}")[1]["idle_timeout"] is None
        api.exec(sid, command="true")
        doc = inspect(capsule_home, sid)
        assert doc["active"] == 0 and doc["idle_ms"] >= 0
        time.sleep(0.3)
        assert inspect(capsule_home, sid)["idle_ms"] >= 300  # it counts from the exec's end
    finally:
        api.call("DELETE", f"/v1/sandboxes/{sid}")


@pytest.mark.parametrize("value", [0, -1, 1.5, "2", 86401, True])
def test_bad_idle_timeout_is_refused(server, api, value):
    status, doc = api.call("POST", "/v1/sandboxes", {"idle_timeout": value})
    assert_error(status, doc, 400, "invalid_request")
    assert "idle_timeout" in doc["error"]["message"]


# ---- metrics ----------------------------------------------------------------------------------

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (-?[0-9.e+-]+|\+Inf|NaN)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


def scrape(port, tok):
    """GET /metrics with curl, parsed by the text format's grammar: {(name, labels): value}."""
    r = subprocess.run(["curl", "-sS", "-D", "-", "-H", f"Authorization: Bearer {tok}",
                        f"http://127.0.0.1:{port}/metrics"], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    head, _, body = r.stdout.decode().partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 200"), head
    assert "content-type: text/plain; version=0.0.4" in head.lower(), head
    samples, types = {}, {}
    for line in body.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram")
            types[name] = kind
            continue
        if line.startswith("# HELP ") or not line:
            continue
        m = SAMPLE.match(line)
        assert m, line
        labels = {}
        if m.group(3):
            pos = 0
            while pos < len(m.group(3)):
                lm = LABEL.match(m.group(3), pos)
                assert lm, line
                labels[lm.group(1)] = lm.group(2)
                pos = lm.end()
        base = re.sub(r"_(bucket|sum|count)$", "", m.group(1))
        assert m.group(1) in types or base in types, f"no TYPE for {line}"
        key = (m.group(1), tuple(sorted(labels.items())))
        assert key not in samples, f"repeated sample {line}"
        samples[key] = float(m.group(4))
    return samples


def values(samples, name, **want):
    return [v for (n, labels), v in samples.items()
            if n == name and all(dict(labels).get(k) == w for k, w in want.items())]


def test_metrics_per_token_with_library_stats_execs_and_requests(server, capsule_home):
    name1, name2 = f"m1-{os.getpid()}", f"m2-{os.getpid()}"
    t1, t2 = token(capsule_home, name1), token(capsule_home, name2)
    a1, a2 = Api(server.port, t1), Api(server.port, t2)
    r = subprocess.run([CAPSULE, "token", "create", f"admin-{os.getpid()}", "--admin"], env=_env(capsule_home),
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    admin = r.stdout.strip()
    s1, s2 = a1.create(), a2.create()
    try:
        a1.exec(s1, command="true")
        # 1 MB over the sandbox's loopback, and some cpu.
        a1.exec(s1, cmd=["python3", "-c", "import socket\n"
                         "s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen()\n"
                         "c=socket.create_connection(s.getsockname()); d,_=s.accept()\n"
                         "c.sendall(b'x'*1000000); c.close(); n=0\n"
                         "while True:\n b=d.recv(65536)\n if not b: break\n n+=len(b)\n"
                         "assert n==1000000\nsum(range(3000000))"])
        r = a1.exec(s1, command="sleep 5", timeout=0.3)
        assert r["timed_out"]

        m = scrape(server.port, t1)
        assert values(m, "capsule_sandboxes") == [1]
        assert values(m, "capsule_sandbox_info", sandbox=s1, token=name1, isolation="container") == [1]
        assert not values(m, "capsule_sandbox_info", sandbox=s2)
        assert values(m, "capsule_sandbox_cpu_seconds_total", sandbox=s1)[0] > 0
        assert values(m, "capsule_sandbox_memory_bytes", sandbox=s1)[0] > 0
        assert values(m, "capsule_sandbox_memory_limit_bytes", sandbox=s1) == [256 << 20]
        assert values(m, "capsule_sandbox_pids", sandbox=s1)[0] >= 1
        assert len(values(m, "capsule_sandbox_disk_written_bytes_total", sandbox=s1)) == 1
        assert values(m, "capsule_sandbox_network_receive_bytes_total", sandbox=s1, interface="lo")[0] >= 1000000
        assert values(m, "capsule_sandbox_active_operations", sandbox=s1) == [0]
        assert values(m, "capsule_execs_total", sandbox=s1, outcome="exited") == [2]
        assert values(m, "capsule_execs_total", sandbox=s1, outcome="timed_out") == [1]
        buckets = sorted((float(dict(labels)["le"]), v) for (n, labels), v in m.items()
                         if n == "capsule_exec_duration_seconds_bucket" and dict(labels)["sandbox"] == s1)
        assert [v for _, v in buckets] == sorted(v for _, v in buckets)  # cumulative
        assert buckets[-1] == (float("inf"), 3) and values(m, "capsule_exec_duration_seconds_count", sandbox=s1) == [3]
        assert buckets[0][1] < 3  # the timed-out exec took over 0.3 s: not in the 5 ms bucket
        assert values(m, "capsule_exec_duration_seconds_sum", sandbox=s1)[0] >= 0.3
        assert values(m, "capsule_http_requests_total", token=name1, method="POST",
                      route="/v1/sandboxes/{id}/exec", code="200") == [3]
        assert values(m, "capsule_http_requests_total", token=name1, method="POST", route="/v1/sandboxes",
                      code="201") == [1]
        assert {dict(labels).get("token") for (n, labels), _ in m.items() if n == "capsule_http_requests_total"} \
            == {name1}

        m2 = scrape(server.port, t2)
        assert values(m2, "capsule_sandboxes") == [1] and values(m2, "capsule_sandbox_info", sandbox=s2)
        assert not [k for k in m2 if ("sandbox", s1) in k[1]]
        assert values(m2, "capsule_execs_total", sandbox=s2, outcome="exited") == [0]

        ma = scrape(server.port, admin)
        assert values(ma, "capsule_sandbox_info", sandbox=s1, token=name1) == [1]
        assert values(ma, "capsule_sandbox_info", sandbox=s2, token=name2) == [1]
        assert values(ma, "capsule_http_requests_total", token=name2, route="/v1/sandboxes", code="201") == [1]
        assert len(values(ma, "capsule_http_requests_uncounted_total")) == 1
        # A request without a token is counted (token "") and refused.
        assert_error(*Api(server.port).call("GET", "/metrics"), 401, "unauthorized")
        ma = scrape(server.port, admin)
        assert values(ma, "capsule_http_requests_total", token="", route="/metrics", code="401") == [1]
    finally:
        a1.call("DELETE", f"/v1/sandboxes/{s1}")
        a2.call("DELETE", f"/v1/sandboxes/{s2}")


@pytest.mark.vm_slow
@pytest.mark.skipif(not _agent_is_static(), reason="capsule-agent is dynamically linked (a sanitizer build): "
                    "it cannot be a VM's init")
def test_metrics_of_a_vm_are_qemus(server, api):
    sid = api.create(isolation="vm", memory="512M", idle_timeout=600)
    try:
        api.exec(sid, command="true")
        m = scrape(server.port, api.tok)
        assert values(m, "capsule_sandbox_info", sandbox=sid, isolation="vm") == [1]
        assert values(m, "capsule_sandbox_cpu_seconds_total", sandbox=sid)[0] > 0
        assert values(m, "capsule_sandbox_memory_bytes", sandbox=sid)[0] > 16 << 20  # a guest's RAM, QEMU's own
        assert values(m, "capsule_sandbox_pids", sandbox=sid)[0] >= 1
        assert values(m, "capsule_sandbox_active_operations", sandbox=sid) == [0]
        assert not values(m, "capsule_sandbox_network_receive_bytes_total", sandbox=sid)  # the guest kernel's
    finally:
        api.call("DELETE", f"/v1/sandboxes/{sid}")


def test_token_ls_shows_admin(capsule_home):
    r = subprocess.run([CAPSULE, "token", "create", f"adm-{os.getpid()}", "--admin"], env=_env(capsule_home),
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    new_token(capsule_home, "plain")
    r = subprocess.run([CAPSULE, "token", "ls", "--json"], env=_env(capsule_home), capture_output=True, text=True,
                       check=True)
    roles = {t["name"]: t["admin"] for t in json.loads(r.stdout)}
    assert roles[f"adm-{os.getpid()}"] is True and False in roles.values()
    r = subprocess.run([CAPSULE, "token", "create", "x", "--root"], env=_env(capsule_home), capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 125 and r.stderr.count("\n") == 1 and "--root" in r.stderr


# ---- per-token limits ---------------------------------------------------------------------


def token_with(home, *args):
    name = f"lim-{uuid.uuid4().hex[:10]}"
    r = subprocess.run([CAPSULE, "token", "create", name, *args], env=_env(home), capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    return name, r.stdout.strip()


def test_a_tokens_own_limits_replace_the_servers(server, capsule_home):
    # The server allows 4 sandboxes and 2G a token; this token 1 sandbox, that one 300M.
    one_name, one = token_with(capsule_home, "--max-sandboxes", "1")
    small_name, small = token_with(capsule_home, "--max-memory=300M")
    many_name, many = token_with(capsule_home, "--max-sandboxes", "0", "--admin")
    a, b, c = Api(server.port, one), Api(server.port, small), Api(server.port, many)
    made = [(a, a.create())]
    status, doc = a.call("POST", "/v1/sandboxes", {})
    assert_error(status, doc, 429, "limit_exceeded")
    assert f"token '{one_name}' has 1 sandboxes" in doc["error"]["message"], doc
    assert "its token allows (--max-sandboxes 1)" in doc["error"]["message"], doc
    made.append((b, b.create()))  # 256M of 300M
    status, doc = b.call("POST", "/v1/sandboxes", {"memory": "64M"})
    assert_error(status, doc, 429, "limit_exceeded")
    assert f"token '{small_name}'" in doc["error"]["message"] and "its token's --max-memory of 300 MiB" in \
        doc["error"]["message"], doc
    # Its count is still the server's: 4.
    made += [(b, b.create(memory="32M"))]
    # 0 is no limit on the count: five, past the server's four (the memory limit, 2G, stays).
    made += [(c, c.create(memory="16M")) for _ in range(5)]
    for api_, sid in made:
        assert api_.call("DELETE", f"/v1/sandboxes/{sid}")[0] == 200
    # Freed, the token may create again.
    sid = a.create()
    assert a.call("DELETE", f"/v1/sandboxes/{sid}")[0] == 200

    r = subprocess.run([CAPSULE, "token", "ls", "--json"], env=_env(capsule_home), capture_output=True, text=True,
                       check=True)
    got = {t["name"]: (t["admin"], t["max_sandboxes"], t["max_memory"]) for t in json.loads(r.stdout)}
    assert got[one_name] == (False, 1, None) and got[small_name] == (False, None, 300 << 20)
    assert got[many_name] == (True, 0, None)
    r = subprocess.run([CAPSULE, "token", "ls"], env=_env(capsule_home), capture_output=True, text=True, check=True)
    rows = {line.split()[0]: line.split()[2:] for line in r.stdout.splitlines()[1:]}
    assert rows[one_name] == ["-", "1", "server"] and rows[small_name] == ["-", "server", "300M"]
    assert rows[many_name] == ["admin", "none", "server"]


@pytest.mark.parametrize("args, says", [(["--max-sandboxes", "-1"], "--max-sandboxes"),
                                        (["--max-sandboxes"], "needs a value"),
                                        (["--max-memory", "lots"], "--max-memory"),
                                        (["--max-sandboxes=100001"], "--max-sandboxes")])
def test_bad_token_limits_are_refused_in_one_line(capsule_home, args, says):
    name = f"bad-{uuid.uuid4().hex[:10]}"
    r = subprocess.run([CAPSULE, "token", "create", name, *args], env=_env(capsule_home), capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 125 and says in r.stderr and r.stderr.count("\n") == 1, r.stderr
    r = subprocess.run([CAPSULE, "token", "ls", "--json"], env=_env(capsule_home), capture_output=True, text=True,
                       check=True)
    assert name not in r.stdout


def test_a_store_from_before_limits_reads_the_same(capsule_home, server):
    # The line format only grew: a line with no limits is a token with the server's limits.
    tok = "capsule_" + uuid.uuid4().hex + uuid.uuid4().hex
    name = f"old-{uuid.uuid4().hex[:10]}"
    new_token(capsule_home, "first")  # the store exists
    with open(os.path.join(capsule_home, "serve", "tokens"), "a") as f:
        f.write(f"{name} 1700000000 {hashlib.sha256(tok.encode()).hexdigest()}\n")
    old = Api(server.port, tok)
    sids = [old.create() for _ in range(4)]
    status, doc = old.call("POST", "/v1/sandboxes", {})
    assert_error(status, doc, 429, "limit_exceeded")
    assert "this server allows (--max-sandboxes 4)" in doc["error"]["message"], doc
    for sid in sids:
        assert old.call("DELETE", f"/v1/sandboxes/{sid}")[0] == 200


# ---- labels are the library's -------------------------------------------------------------


def test_api_labels_are_the_sandboxes_own(server, api, capsule_home):
    sid = api.create(labels={"team": "red", "job": "7"})
    try:
        assert inspect(capsule_home, sid)["labels"] == {"team": "red", "job": "7"}
        r = subprocess.run([CAPSULE, "ps", "--json", "--filter", "label=team=red"], env=_env(capsule_home),
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and sid in [s["name"] for s in json.loads(r.stdout)]
        assert [s["id"] for s in api.call("GET", "/v1/sandboxes?label=job=7")[1]["sandboxes"]] == [sid]
    finally:
        api.call("DELETE", f"/v1/sandboxes/{sid}")


# ---- stop and start, checkpoint, revert, fork ---------------------------------------------------


def test_stop_keeps_the_filesystem_and_start_runs_it_again(server, api, capsule_home):
    sid = api.create()
    try:
        api.exec(sid, command="echo kept > /root/f; sleep 1000 &")
        status, doc = api.call("POST", f"/v1/sandboxes/{sid}/stop", {"timeout": 0})
        assert status == 200 and doc["state"] == "stopped", doc
        assert api.call("GET", f"/v1/sandboxes/{sid}")[1]["state"] == "stopped"
        assert_error(*api.call("POST", f"/v1/sandboxes/{sid}/exec", {"command": "true"}), 409, "sandbox_not_running")
        assert os.path.isdir(run_dir(capsule_home, sid))  # kept, though the server's sandboxes are ephemeral
        status, doc = api.call("POST", f"/v1/sandboxes/{sid}/start")
        assert status == 200 and doc["state"] == "running", doc
        assert_error(*api.call("POST", f"/v1/sandboxes/{sid}/start"), 409, "already_running")
        r = api.exec(sid, command="cat /root/f; pgrep sleep || echo none")
        assert r["stdout"] == "kept\nnone\n"
        # Stopping twice is fine (docker's rule); a stopped sandbox is removed as any other.
        api.call("POST", f"/v1/sandboxes/{sid}/stop", {"timeout": 0})
        assert api.call("POST", f"/v1/sandboxes/{sid}/stop", {"timeout": 0})[0] == 200
    finally:
        assert api.call("DELETE", f"/v1/sandboxes/{sid}")[0] == 200
    assert not os.path.exists(run_dir(capsule_home, sid))
    assert_error(*api.call("POST", f"/v1/sandboxes/{sid}/stop", {"bad": 1}), 404, "not_found")


def test_a_stopped_sandbox_goes_with_the_server(capsule_home):
    s = Server(capsule_home)
    a = Api(s.port, new_token(capsule_home))
    sid = a.create()
    assert a.call("POST", f"/v1/sandboxes/{sid}/stop", {"timeout": 0})[0] == 200
    assert os.path.isdir(run_dir(capsule_home, sid))
    rc, err = s.stop()
    assert rc == 0, err
    assert not os.path.exists(run_dir(capsule_home, sid))  # kept by the stop, removed with its creator's handle


def test_checkpoint_revert_and_fork(server, api, capsule_home):
    sid = api.create(labels={"team": "red"})
    fork = None
    try:
        api.exec(sid, command="echo one > /root/f")
        assert api.call("POST", f"/v1/sandboxes/{sid}/checkpoint", {"name": "cp1"})[0] == 201
        api.exec(sid, command="echo two > /root/f")
        status, doc = api.call("POST", f"/v1/sandboxes/{sid}/fork", {"timeout": 600})
        assert status == 201 and doc["id"] != sid and doc["labels"] == {"team": "red"} and doc["timeout"] == 600
        fork = doc["id"]
        assert api.call("POST", f"/v1/sandboxes/{sid}/revert", {"name": "cp1"})[0] == 200
        assert api.exec(sid, command="cat /root/f")["stdout"] == "one\n"
        assert api.exec(fork, command="cat /root/f")["stdout"] == "two\n"  # the fork took the filesystem of its moment
        assert sorted(s["id"] for s in api.call("GET", "/v1/sandboxes")[1]["sandboxes"]) == sorted([sid, fork])
        # Bad input: one-line errors, nothing done.
        assert_error(*api.call("POST", f"/v1/sandboxes/{sid}/revert", {"name": "nope"}), 404, "not_found")
        assert_error(*api.call("POST", f"/v1/sandboxes/{sid}/checkpoint", {}), 400, "invalid_request")
        assert_error(*api.call("POST", f"/v1/sandboxes/{sid}/checkpoint", {"name": "a/b"}), 400, "invalid_argument")
        assert_error(*api.call("POST", f"/v1/sandboxes/{sid}/checkpoint", {"name": 3}), 400, "invalid_request")
        assert_error(*api.call("POST", f"/v1/sandboxes/{sid}/fork", {"timeout": 0}), 400, "invalid_request")
        # Another token sees neither.
        other = Api(server.port, new_token(capsule_home))
        assert_error(*other.call("POST", f"/v1/sandboxes/{fork}/fork"), 404, "not_found")
    finally:
        api.call("DELETE", f"/v1/sandboxes/{sid}")
        if fork:
            assert api.call("DELETE", f"/v1/sandboxes/{fork}")[0] == 200
            assert not os.path.exists(run_dir(capsule_home, fork))  # a fork is removed, not only stopped


def test_port_forwards(server, api):
    from tests.e2e.imageutil import free_port
    sid = api.create()
    try:
        port = free_port()
        status, doc = api.call("POST", f"/v1/sandboxes/{sid}/ports", {"host_port": port, "port": 8000})
        assert status == 201 and [(p["host_ip"], p["host_port"], p["guest_port"]) for p in doc["ports"]] \
            == [("127.0.0.1", port, 8000)], doc
        served = {}
        t = threading.Thread(target=lambda: served.update(r=api.call("POST", f"/v1/sandboxes/{sid}/exec", {
            "cmd": ["python3", "-c", "import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, "
                    "socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', 8000)); s.listen()\n"
                    "c,_=s.accept(); c.sendall(b'from inside'); c.close()"]})))
        t.start()
        def fetch():
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    return s.recv(100)
            except OSError:
                return b""
        assert wait_for(lambda: fetch() == b"from inside", timeout=30, step=0.2)
        t.join(60)
        assert served["r"][0] == 200 and served["r"][1]["exit_code"] == 0, served
        assert_error(*api.call("POST", f"/v1/sandboxes/{sid}/ports", {"host_port": port, "port": 1}), 409,
                     "already_exists")
        assert_error(*api.call("POST", f"/v1/sandboxes/{sid}/ports",
                               {"host_port": free_port(), "port": 1, "host_ip": "0.0.0.0"}), 403, "permission_denied")
        assert_error(*api.call("POST", f"/v1/sandboxes/{sid}/ports", {"host_port": 70000, "port": 1}), 400,
                     "invalid_request")
        # The server runs as root: a client never takes a privileged port of the host.
        status, doc = api.call("POST", f"/v1/sandboxes/{sid}/ports", {"host_port": 1023, "port": 1})
        assert_error(status, doc, 400, "invalid_request")
        assert "1024" in doc["error"]["message"] and "\n" not in doc["error"]["message"], doc
        assert api.call("DELETE", f"/v1/sandboxes/{sid}/ports?host_port={port}")[0] == 200
        assert api.call("GET", f"/v1/sandboxes/{sid}/ports")[1]["ports"] == []
        assert_error(*api.call("DELETE", f"/v1/sandboxes/{sid}/ports?host_port={port}"), 404, "not_found")
        assert_error(*api.call("DELETE", f"/v1/sandboxes/{sid}/ports?host_port=x"), 400, "invalid_argument")
    finally:
        api.call("DELETE", f"/v1/sandboxes/{sid}")


# ---- images ----------------------------------------------------------------------------------


def test_images_pull_with_progress_then_list(server, api, tmp_path):
    from tests.e2e.imageutil import Entry, Registry, busybox_layer, layer_tar, make_layout, require_tools
    require_tools()
    reg = Registry(str(tmp_path / "registry"))
    try:
        # A layer of its own: one the store already holds (other tests pull busybox) is neither
        # downloaded nor unpacked again, and would show no progress.
        own = layer_tar([Entry("pull-marker", data=os.urandom(16).hex().encode())])
        ref = reg.push(make_layout(str(tmp_path), [busybox_layer(), own]), "serve/pull")
        # curl -N: the lines arrive as the pull goes, one JSON object each.
        r = subprocess.run(["curl", "-sSN", "-H", f"Authorization: Bearer {api.tok}", "-d", json.dumps({"ref": ref}),
                            f"http://127.0.0.1:{server.port}/v1/images/pull"], capture_output=True, text=True,
                           timeout=180)
        assert r.returncode == 0, r.stderr
        lines = [json.loads(line) for line in r.stdout.splitlines()]
        assert lines[-1] == {"name": ref}, lines
        stages = [ln["stage"] for ln in lines[:-1]]
        assert "download" in stages and "unpack" in stages, stages
        done = [ln for ln in lines if ln.get("stage") == "download"]
        assert all(0 <= ln["done"] <= ln["total"] for ln in done) and any(ln["done"] == ln["total"] for ln in done)
        names = [img["name"] for img in api.call("GET", "/v1/images")[1]["images"]]
        assert ref in names
        # A failed pull ends its stream with an error line.
        status, hdrs, data = api.raw("POST", "/v1/images/pull", {"ref": f"{reg.host}/serve/none:t"})
        assert status == 200 and hdrs["Content-Type"] == "application/x-ndjson"
        last = json.loads(data.splitlines()[-1])
        assert set(last) == {"error"} and last["error"]["code"] in ("not_found", "pull_failed"), last
        assert "\n" not in last["error"]["message"]
        assert_error(*api.call("POST", "/v1/images/pull", {}), 400, "invalid_request")
        assert_error(*api.call("POST", "/v1/images/pull", {"ref": ref, "tag": "x"}), 400, "invalid_request")
    finally:
        reg.stop()


# ---- TLS and socket activation ---------------------------------------------------------------


def test_tls_with_a_given_certificate_and_key(capsule_home, tmp_path):
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    sock = str(tmp_path / "api.sock")
    s = Server(capsule_home, "--tls-cert", cert, "--tls-key", key, listen=("127.0.0.1:0", f"unix:{sock}"))
    try:
        tok = new_token(capsule_home)
        base = f"https://127.0.0.1:{s.port}"

        def curl(*args):
            return subprocess.run(["curl", "-sS", "--cacert", cert, *args], capture_output=True, text=True, timeout=60)
        r = curl(f"{base}/v1/health")
        assert r.returncode == 0 and json.loads(r.stdout)["status"] == "ok", r.stderr
        r = curl("-H", f"Authorization: Bearer {tok}", "-d", "{}", f"{base}/v1/sandboxes")
        sid = json.loads(r.stdout)["id"]
        r = curl("-H", f"Authorization: Bearer {tok}", "-d", '{"command": "echo over tls"}', f"{base}/v1/sandboxes/{sid}/exec")
        assert json.loads(r.stdout)["stdout"] == "over tls\n"
        # The certificate is the one given: curl without it refuses, plain HTTP gets nothing.
        r = subprocess.run(["curl", "-sS", f"{base}/v1/health"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 60, r  # the peer's certificate is not trusted
        r = subprocess.run(["curl", "-sS", f"http://127.0.0.1:{s.port}/v1/health"], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode != 0 and "ok" not in r.stdout
        # The unix socket stays plain HTTP (its mode keeps it to its owner).
        r = subprocess.run(["curl", "-sS", "--unix-socket", sock, "http://x/v1/health"], capture_output=True,
                           text=True, timeout=60)
        assert json.loads(r.stdout)["status"] == "ok", r.stderr
    finally:
        rc, err = s.stop()
        assert rc == 0, err
    for args, word in [(["--tls-cert", cert], "go together"), (["--tls-key", key], "go together"),
                       (["--tls-cert", str(tmp_path / "none.pem"), "--tls-key", key], "none.pem"),
                       (["--tls-cert", key, "--tls-key", cert], "certificate"),
                       (["--tls-cert", "/etc/hostname", "--tls-key", key], "not a PEM file")]:
        r = subprocess.run([CAPSULE, "serve", "--listen", "127.0.0.1:0", *args], env=_env(capsule_home),
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 125 and word in r.stderr, (args, r.stderr)


def test_socket_activation_takes_the_listening_fd(capsule_home):
    """systemd-socket-activate listens, then starts `capsule serve` with the socket as fd 3
    (LISTEN_FDS=1, LISTEN_PID its pid) at the first connection, as systemd's .socket does."""
    from tests.e2e.imageutil import free_port
    port = free_port()
    env = _env(capsule_home)
    p = subprocess.Popen(["systemd-socket-activate", "-l", f"127.0.0.1:{port}", "-E", f"CAPSULE_HOME={capsule_home}",
                          "-E", f"CAPSULE_CONFIG={env['CAPSULE_CONFIG']}", CAPSULE, "serve"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        tok = new_token(capsule_home)
        api = Api(port, tok)
        assert wait_for(lambda: subprocess.run(["curl", "-sS", f"http://127.0.0.1:{port}/v1/health"],
                                               capture_output=True).returncode == 0, timeout=30, step=0.2)
        sid = api.create()
        assert api.exec(sid, command="echo activated")["stdout"] == "activated\n"
        # The server is the process systemd-socket-activate exec'd (the fd's LISTEN_PID): its
        # graceful stop removes what it made.
        p.terminate()
        p.wait(timeout=60)
        assert p.returncode == 0, p.stderr.read()
        assert not os.path.exists(run_dir(capsule_home, sid))
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    # LISTEN_FDS meant for another process is not taken; a bad one is refused in one line.
    r = subprocess.run([CAPSULE, "serve"], env={**env, "LISTEN_PID": "1", "LISTEN_FDS": "1"}, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 125 and "--listen" in r.stderr
    r = subprocess.run(["sh", "-c", f'LISTEN_PID=$$ LISTEN_FDS=1 exec {CAPSULE} serve 3</dev/null'], env=env,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 125 and "fd 3" in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_the_systemd_units_are_valid():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    units = [os.path.join(root, "contrib", "systemd", f) for f in ("capsule-serve.socket", "capsule-serve.service")]
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", *units], capture_output=True, text=True, timeout=60)
    # The one complaint allowed: the binary is not installed where the unit expects it.
    problems = [ln for ln in r.stderr.splitlines() if ln and "/usr/local/bin/capsule is not executable" not in ln]
    assert problems == [], r.stderr


# ---- mounts ----------------------------------------------------------------------------------


def test_mounts_read_only_from_below_the_mount_root(capsule_home, tmp_path, server, api):
    # The module's server has no --mount-root: it mounts nothing.
    sid = api.create()
    try:
        assert_error(*api.call("POST", f"/v1/sandboxes/{sid}/mounts", {"host_path": str(tmp_path), "guest_path": "/m"}),
                     403, "permission_denied")
    finally:
        api.call("DELETE", f"/v1/sandboxes/{sid}")
    root = tmp_path / "shared"
    (root / "data").mkdir(parents=True)
    (root / "data" / "f.txt").write_text("from the host\n")
    (tmp_path / "secret").mkdir()
    os.symlink(str(tmp_path / "secret"), str(root / "escape"))
    s = Server(capsule_home, "--mount-root", str(root))
    a = Api(s.port, new_token(capsule_home))
    try:
        sid = a.create()
        status, doc = a.call("POST", f"/v1/sandboxes/{sid}/mounts",
                             {"host_path": str(root / "data"), "guest_path": "/mnt/data"})
        assert status == 201 and [(m["guest_path"], m["readonly"]) for m in doc["mounts"]] == [("/mnt/data", True)], doc
        r = a.exec(sid, command="cat /mnt/data/f.txt; touch /mnt/data/new 2>&1 || echo refused")
        assert r["stdout"].startswith("from the host\n") and "refused" in r["stdout"]
        for body, code, word in [
                ({"host_path": str(root / "data"), "guest_path": "/mnt/w", "readonly": False}, 403, "read-only"),
                ({"host_path": str(tmp_path / "secret"), "guest_path": "/mnt/x"}, 403, "--mount-root"),
                ({"host_path": str(root / "escape"), "guest_path": "/mnt/x"}, 403, "--mount-root"),  # a symlink out
                ({"host_path": str(root / "data" / ".." / ".."), "guest_path": "/mnt/x"}, 403, "--mount-root"),
                ({"host_path": "data", "guest_path": "/mnt/x"}, 400, "absolute"),
                ({"host_path": str(root / "none"), "guest_path": "/mnt/x"}, 404, "No such file"),
                ({"host_path": str(root / "data")}, 400, "guest_path")]:
            status, doc = a.call("POST", f"/v1/sandboxes/{sid}/mounts", body)
            assert status == code and word in doc["error"]["message"], (body, doc)
        assert [m["guest_path"] for m in a.call("GET", f"/v1/sandboxes/{sid}/mounts")[1]["mounts"]] == ["/mnt/data"]
        assert a.call("DELETE", f"/v1/sandboxes/{sid}/mounts?target=/mnt/data")[0] == 200
        assert a.call("GET", f"/v1/sandboxes/{sid}/mounts")[1]["mounts"] == []
        assert_error(*a.call("DELETE", f"/v1/sandboxes/{sid}/mounts?target=/mnt/data"), 404, "not_found")
        assert_error(*a.call("DELETE", f"/v1/sandboxes/{sid}/mounts"), 400, "invalid_argument")
    finally:
        rc, err = s.stop()
        assert rc == 0, err
    r = subprocess.run([CAPSULE, "serve", "--listen", "127.0.0.1:0", "--mount-root", str(tmp_path / "nope")],
                       env=_env(capsule_home), capture_output=True, text=True, timeout=30)
    assert r.returncode == 125 and "must be an existing folder" in r.stderr
    # Sandboxes write below $CAPSULE_HOME: a root that holds it, is it, or lies in it could
    # have a checked folder swapped for a symlink before the shim opens it.
    inside = os.path.join(capsule_home, "volumes")
    os.makedirs(inside, exist_ok=True)
    for bad in [os.path.dirname(capsule_home), capsule_home, inside]:
        r = subprocess.run([CAPSULE, "serve", "--listen", "127.0.0.1:0", "--mount-root", bad],
                           env=_env(capsule_home), capture_output=True, text=True, timeout=30)
        assert r.returncode == 125 and "overlaps $CAPSULE_HOME" in r.stderr, (bad, r.stderr)
        assert r.stderr.count("\n") == 1, r.stderr
