"""capsule serve's warm pools (docs/serve.md, "Pools"): --pool NAME:SIZE[:IMAGE] makes a pool at
start and removes it at shutdown, GET /v1/pools lists it, and POST /v1/sandboxes with `pool` takes
a ready sandbox that then belongs to the token like any other."""
import json
import os
import subprocess
import time
import uuid

import pytest

from tests.conftest import CAPSULE, _env
from tests.e2e.test_serve import Api, Server, assert_error, new_token, run_dir


def library_pools(home):
    r = subprocess.run([CAPSULE, "pool", "ls", "--json"], env=_env(home), capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return {p["name"]: p for p in json.loads(r.stdout)}


def wait_for(cond, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return cond()


def test_a_create_naming_a_pool_takes_a_ready_sandbox(capsule_home):
    name = f"sp-{uuid.uuid4().hex[:8]}"
    s = Server(capsule_home, "--pool", f"{name}:2", "--default-memory", "256M", "--max-memory", "600M")
    try:
        assert name in library_pools(capsule_home)
        alice, bob = Api(s.port, new_token(capsule_home)), Api(s.port, new_token(capsule_home))
        status, doc = alice.call("GET", "/v1/pools")
        assert status == 200, doc
        [p] = doc["pools"]
        assert (p["name"], p["size"], p["image"], p["memory"]) == (name, 2, "host", 256 << 20), p
        assert wait_for(lambda: alice.call("GET", "/v1/pools")[1]["pools"][0]["ready"] == 2)
        ready = set(os.listdir(os.path.join(capsule_home, "pools", name, "ready")))

        status, doc = alice.call("POST", "/v1/sandboxes", {"pool": name, "labels": {"job": "p"}, "timeout": 600})
        assert status == 201, doc
        sid = doc["id"]
        assert (doc["pool"], doc["memory"], doc["labels"], doc["timeout"]) == (name, 256 << 20, {"job": "p"}, 600), doc
        # One of the ready ones, renamed to the server's id; the keeper starts another.
        assert os.path.isdir(run_dir(capsule_home, sid))
        assert sid not in ready
        out = alice.exec(sid, cmd=["sh", "-c", "echo from-pool"])
        assert (out["exit_code"], out["stdout"]) == (0, "from-pool\n"), out
        # Owned like any other: the other token sees nothing of it.
        assert_error(*bob.call("GET", f"/v1/sandboxes/{sid}"), 404, "not_found")
        assert bob.call("GET", "/v1/sandboxes")[1]["sandboxes"] == []
        assert [x["id"] for x in alice.call("GET", "/v1/sandboxes?label=job=p")[1]["sandboxes"]] == [sid]
        # It counts against the token's memory like a cold one: 256M + 256M + 256M > 600M.
        second = alice.call("POST", "/v1/sandboxes", {"pool": name})
        assert second[0] == 201, second
        assert_error(*alice.call("POST", "/v1/sandboxes", {"pool": name}), 429, "limit_exceeded")
        assert alice.call("DELETE", f"/v1/sandboxes/{second[1]['id']}")[0] == 200

        # The pool's options win by refusal, never by silently dropping a field.
        for field, value in [("image", "host"), ("memory", "128M"), ("isolation", "container"), ("cpus", 1),
                             ("network", "none"), ("env", {"A": "1"})]:
            status, doc = alice.call("POST", "/v1/sandboxes", {"pool": name, field: value})
            assert_error(status, doc, 400, "invalid_request")
            assert f"'{field}'" in doc["error"]["message"] and name in doc["error"]["message"], doc
        status, doc = alice.call("POST", "/v1/sandboxes", {"pool": "no-such-pool"})
        assert_error(status, doc, 404, "not_found")
        assert "no-such-pool" in doc["error"]["message"], doc
        assert_error(*alice.call("POST", "/v1/sandboxes", {"pool": 3}), 400, "invalid_request")
        assert_error(*Api(s.port).call("GET", "/v1/pools"), 401, "unauthorized")
    finally:
        rc, err = s.stop()
    assert rc == 0, err
    # Shutdown removed the pool and the sandbox taken from it.
    assert name not in library_pools(capsule_home)
    assert not os.path.exists(os.path.join(capsule_home, "pools", name))
    assert not os.path.exists(run_dir(capsule_home, sid))


@pytest.mark.parametrize("arg, says", [("p", "NAME:SIZE"), ("p:0", "SIZE must be 1 to 64"), ("p:65", "SIZE"),
                                       ("p:x", "SIZE"), ("p:1:", "IMAGE is empty"), (":1", "NAME:SIZE")])
def test_bad_pool_option_is_refused_in_one_line(capsule_home, arg, says):
    r = subprocess.run([CAPSULE, "serve", "--listen", "127.0.0.1:0", "--pool", arg], env=_env(capsule_home),
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 125 and says in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_a_pool_that_cannot_be_made_stops_the_start_and_leaves_nothing(capsule_home):
    taken, fresh = f"sp-{uuid.uuid4().hex[:8]}", f"sp-{uuid.uuid4().hex[:8]}"
    r = subprocess.run([CAPSULE, "pool", "create", taken, "--size", "1"], env=_env(capsule_home),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    try:
        r = subprocess.run([CAPSULE, "serve", "--listen", "127.0.0.1:0", "--pool", f"{fresh}:1",
                            "--pool", f"{taken}:1"], env=_env(capsule_home), capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 125 and f"pool '{taken}' exists already" in r.stderr, r.stderr
        assert "listening" not in r.stdout
        pools = library_pools(capsule_home)
        assert fresh not in pools and taken in pools  # its own undone, the other's untouched
    finally:
        subprocess.run([CAPSULE, "pool", "rm", taken], env=_env(capsule_home), capture_output=True, timeout=120)
