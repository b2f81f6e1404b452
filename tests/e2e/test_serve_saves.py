"""Token-owned named saves through capsule serve (docs/serve.md, "Named saves"): save a sandbox,
list, start from and remove one's own saves, and no token reaching another's, by 'save' or by
'image'."""
import json
import subprocess

import pytest

from tests.conftest import CAPSULE, _env
from tests.e2e.test_serve import Api, Server, assert_error, new_token


@pytest.fixture(scope="module")
def server(capsule_home):
    s = Server(capsule_home, "--max-sandboxes", "4", "--max-memory", "2G", "--default-memory", "256M",
               "--max-saves", "2")
    yield s
    rc, err = s.stop()
    assert rc == 0, err


def host_saves(home):
    r = subprocess.run([CAPSULE, "saves", "ls", "--json"], env=_env(home), capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return {s["name"]: s for s in json.loads(r.stdout)}


def saves(api):
    status, doc = api.call("GET", "/v1/saves")
    assert status == 200, doc
    return {s["name"]: s for s in doc["saves"]}


def test_save_list_start_from_it_and_delete(server, capsule_home):
    api = Api(server.port, new_token(capsule_home))
    sid = api.create()
    made = []
    try:
        api.exec(sid, command="echo kept > /root/f")
        status, doc = api.call("POST", f"/v1/sandboxes/{sid}/save", {"name": "base"})
        assert status == 201 and doc == {"name": "base", "sandbox": sid}, doc
        api.exec(sid, command="echo later > /root/f")  # after the save: not in it
        got = saves(api)
        assert set(got) == {"base"} and got["base"]["sandbox"] == sid and got["base"]["size"] > 0
        assert got["base"]["created_at"].endswith("Z")
        # On the host it is a save like any other, under the server's name for it.
        host = [n for n, s in host_saves(capsule_home).items() if s.get("sandbox") == sid]
        assert len(host) == 1 and host[0].startswith("serve-") and host[0].endswith("-base")
        made.append(api.create(save="base"))
        assert api.exec(made[-1], command="cat /root/f")["stdout"] == "kept\n"
        # A stopped sandbox saves too.
        assert api.call("POST", f"/v1/sandboxes/{sid}/stop", {"timeout": 1})[0] == 200
        assert api.call("POST", f"/v1/sandboxes/{sid}/save", {"name": "stopped"})[0] == 201
        made.append(api.create(save="stopped"))
        assert api.exec(made[-1], command="cat /root/f")["stdout"] == "later\n"
        # Removal: a save its sandboxes run from stays until they are gone.
        assert_error(*api.call("DELETE", "/v1/saves/base"), 409, "busy")
        for m in made:
            assert api.call("DELETE", f"/v1/sandboxes/{m}")[0] == 200
        made = []
        assert api.call("DELETE", "/v1/saves/base") == (200, {"deleted": True})
        assert api.call("DELETE", "/v1/saves/stopped")[0] == 200
        assert saves(api) == {}
        assert_error(*api.call("DELETE", "/v1/saves/base"), 404, "not_found")
        assert_error(*api.call("POST", "/v1/sandboxes", {"save": "base"}), 404, "not_found")
        assert host[0] not in host_saves(capsule_home)
    finally:
        for m in made + [sid]:
            api.call("DELETE", f"/v1/sandboxes/{m}")


def test_tokens_cannot_see_or_reach_each_others_saves(server, capsule_home):
    a = Api(server.port, new_token(capsule_home))
    b = Api(server.port, new_token(capsule_home))
    sa, sb = a.create(), b.create()
    made = []
    try:
        a.exec(sa, command="echo from-a > /root/f")
        b.exec(sb, command="echo from-b > /root/f")
        assert a.call("POST", f"/v1/sandboxes/{sa}/save", {"name": "same"})[0] == 201
        assert saves(b) == {}
        assert_error(*b.call("POST", "/v1/sandboxes", {"save": "same"}), 404, "not_found")
        assert_error(*b.call("DELETE", "/v1/saves/same"), 404, "not_found")
        # The same NAME is another save for another token.
        assert b.call("POST", f"/v1/sandboxes/{sb}/save", {"name": "same"})[0] == 201
        made.append((b, b.create(save="same")))
        assert b.exec(made[-1][1], command="cat /root/f")["stdout"] == "from-b\n"
        # 'image' cannot name a token's save, whoever's, even knowing its host name.
        host_a = [n for n, s in host_saves(capsule_home).items() if s.get("sandbox") == sa][0]
        for who in (a, b):
            status, doc = who.call("POST", "/v1/sandboxes", {"image": host_a})
            assert_error(status, doc, 400, "invalid_argument")
            assert "'save'" in doc["error"]["message"]
        assert_error(*b.call("POST", "/v1/sandboxes", {"image": "serve-anything"}), 400, "invalid_argument")
        assert_error(*a.call("POST", "/v1/sandboxes", {"save": "same", "image": "host"}), 400, "invalid_argument")
        # An operator's save (any other name) is still a template for every token.
        r = subprocess.run([CAPSULE, "save", sa, "ops-template-t"], env=_env(capsule_home), capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        made.append((b, b.create(image="ops-template-t")))
        assert b.exec(made[-1][1], command="cat /root/f")["stdout"] == "from-a\n"
        assert a.call("DELETE", "/v1/saves/same")[0] == 200
        assert set(saves(b)) == {"same"}  # b's is untouched
    finally:
        for who, m in made:
            who.call("DELETE", f"/v1/sandboxes/{m}")
        a.call("DELETE", f"/v1/sandboxes/{sa}")
        b.call("DELETE", f"/v1/sandboxes/{sb}")
        b.call("DELETE", "/v1/saves/same")
        subprocess.run([CAPSULE, "saves", "rm", "ops-template-t"], env=_env(capsule_home), capture_output=True,
                       timeout=60)


def test_bad_names_and_the_limit(server, capsule_home):
    api = Api(server.port, new_token(capsule_home))
    sid = api.create()
    try:
        for bad in ["", "A", "-a", ".a", "a/b", "../x", "a b", "x" * 33, "é"]:
            assert_error(*api.call("POST", f"/v1/sandboxes/{sid}/save", {"name": bad}), 400, "invalid_argument")
            assert_error(*api.call("POST", "/v1/sandboxes", {"save": bad}), 400, "invalid_argument")
        assert_error(*api.call("POST", f"/v1/sandboxes/{sid}/save", {"name": 3}), 400, "invalid_request")
        assert_error(*api.call("POST", f"/v1/sandboxes/{sid}/save", {}), 400, "invalid_request")
        assert_error(*api.call("DELETE", "/v1/saves/A"), 400, "invalid_argument")
        assert saves(api) == {}
        # --max-saves 2: a third is refused, replacing one's own is not a new one.
        for name in ("one", "two", "one"):
            assert api.call("POST", f"/v1/sandboxes/{sid}/save", {"name": name})[0] == 201
        status, doc = api.call("POST", f"/v1/sandboxes/{sid}/save", {"name": "three"})
        assert_error(status, doc, 429, "limit_exceeded")
        assert "--max-saves 2" in doc["error"]["message"]
        assert api.call("DELETE", "/v1/saves/two")[0] == 200
        assert api.call("POST", f"/v1/sandboxes/{sid}/save", {"name": "three"})[0] == 201
        assert set(saves(api)) == {"one", "three"}
    finally:
        api.call("DELETE", f"/v1/sandboxes/{sid}")
        for name in ("one", "two", "three"):
            api.call("DELETE", f"/v1/saves/{name}")
