"""Saves: run --save, --image from a save, chains, create+stop, save of a running sandbox,
checkpoint/revert, fork, saves ls/rm, bad names, and atomicity under kill -9."""
import json
import os
import signal
import subprocess
import time
import uuid

import pytest

from .helpers import assert_capsule_error, host_procs_in
from .imageutil import need_static_agent
from tests.conftest import settled_run_entries


def sname(prefix="s"):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def saves(capsule):
    """Names saves and removes them after the test, children before parents (sandboxes go
    first: the capsule fixture's cleanup runs before this one's)."""
    made = []

    def name(prefix="s"):
        n = sname(prefix)
        made.append(n)
        return n

    yield name
    capsule.cleanup()
    for _ in range(len(made)):
        for n in reversed(made):
            capsule.run("saves", "rm", n)


def saves_json(capsule):
    return {s["name"]: s for s in json.loads(capsule.run("saves", "ls", "--json", check=True).stdout)}


def saves_dir(capsule):
    return os.path.join(capsule.home, "saves")


def leftovers(capsule):
    d = saves_dir(capsule)
    return [e for e in os.listdir(d) if e.startswith(".tmp-")] if os.path.isdir(d) else []


def cat(capsule, image, path):
    r = capsule.run("run", "--image", image, "--", "cat", path)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_ephemeral_by_default_nothing_survives(capsule):
    before = set(saves_json(capsule))
    r = capsule.run("run", "--", "sh", "-c", "echo kept > /root/ephemeral")
    assert r.returncode == 0, r.stderr
    assert set(saves_json(capsule)) == before
    r = capsule.run("run", "--", "cat", "/root/ephemeral")
    assert r.returncode != 0 and "No such file" in r.stderr


def test_run_save_then_image_shows_the_change(capsule, saves):
    s = saves()
    r = capsule.run("run", "--save", s, "--", "sh", "-c",
                    "echo installed > /root/tool; mkdir -p /opt/app; chown 1000:1000 /opt/app; rm /etc/hostname")
    assert r.returncode == 0, r.stderr
    assert cat(capsule, s, "/root/tool") == "installed\n"
    r = capsule.run("run", "--image", s, "--", "sh", "-c", "stat -c %u:%g /opt/app; test ! -e /etc/hostname && echo gone")
    assert r.stdout.split() == ["1000:1000", "gone"], r.stderr
    m = json.load(open(os.path.join(saves_dir(capsule), s, "manifest.json")))
    assert m["name"] == s and m["parent"] == "host" and m["parent_kind"] == "host" and m["layers"] == []
    # On the host the layer carries the image's own ids (0 is the sandbox's root).
    st = os.lstat(os.path.join(saves_dir(capsule), s, "layer", "opt", "app"))
    assert (st.st_uid, st.st_gid) == (1000, 1000)
    assert os.stat(os.path.join(saves_dir(capsule), s, "layer", "root", "tool")).st_uid == 0


def test_chain_of_three_and_ls(capsule, saves):
    a, b, c = saves("a"), saves("b"), saves("c")
    assert capsule.run("run", "--save", a, "--", "sh", "-c", "echo a > /root/a").returncode == 0
    assert capsule.run("run", "--image", a, "--save", b, "--", "sh", "-c", "echo b > /root/b; rm /root/a").returncode == 0
    assert capsule.run("run", "--image", b, "--save", c, "--", "sh", "-c", "echo c > /root/c").returncode == 0
    r = capsule.run("run", "--image", c, "--", "sh", "-c", "ls /root")
    assert r.stdout.split() == ["b", "c"], r.stderr
    ls = saves_json(capsule)
    assert ls[c]["chain"] == ["host", a, b, c]
    assert ls[c]["parent"] == b and ls[c]["parent_kind"] == "save"
    assert ls[c]["chain_size"] == ls[a]["size"] + ls[b]["size"] + ls[c]["size"]
    assert all(ls[n]["size"] > 0 for n in (a, b, c))
    text = capsule.run("saves", "ls", check=True).stdout
    assert f"host > {a} > {b} > {c}" in text
    # The chain is what the manifest lists: c's parent layers are a's and b's.
    m = json.load(open(os.path.join(saves_dir(capsule), c, "manifest.json")))
    assert [os.path.basename(os.path.dirname(p)) for p in m["layers"]] == [a, b]


def test_load_one_save_as_another_leaves_the_first(capsule, saves):
    a, b = saves("a"), saves("b")
    assert capsule.run("run", "--save", a, "--", "sh", "-c", "echo 1 > /root/v").returncode == 0
    assert capsule.run("run", "--image", a, "--save", b, "--", "sh", "-c", "echo 2 > /root/v").returncode == 0
    assert cat(capsule, a, "/root/v") == "1\n"
    assert cat(capsule, b, "/root/v") == "2\n"


def test_save_over_own_image_refused_before_start(capsule, saves):
    a = saves("a")
    assert capsule.run("run", "--save", a, "--", "true").returncode == 0
    runs = settled_run_entries(os.path.join(capsule.home, "run"))
    r = capsule.run("run", "--image", a, "--save", a, "--", "true")
    assert_capsule_error(r)
    assert "save under another name" in r.stderr
    assert settled_run_entries(os.path.join(capsule.home, "run")) == runs


def test_create_and_stop_saves(capsule, saves):
    s = saves()
    name = capsule.create("--save", s)
    assert capsule.inspect(name)["save"] == s
    capsule.run("exec", name, "sh", "-c", "echo first > /root/f", check=True)
    assert s not in saves_json(capsule)
    capsule.run("stop", name, check=True)
    assert cat(capsule, s, "/root/f") == "first\n"
    # Each stop saves again, replacing the save.
    capsule.run("start", name, check=True)
    capsule.run("exec", name, "sh", "-c", "echo second > /root/f", check=True)
    capsule.run("stop", name, check=True)
    assert cat(capsule, s, "/root/f") == "second\n"
    assert leftovers(capsule) == []


def test_ephemeral_save_when_client_goes_away(capsule, saves):
    s = saves()
    name = capsule.unique_name()
    p = capsule.popen("run", "--name", name, "--save", s, "--", "sh", "-c", "echo ready > /root/r; sleep 1000",
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            r = capsule.run("exec", name, "cat", "/root/r")
            last = r
            if r.returncode == 0 and r.stdout == "ready\n":
                break
            time.sleep(0.1)
        else:
            p.kill()
            pytest.fail(f"the sandbox did not get ready: {last.stderr} {p.communicate()}")
    finally:
        p.kill()
        p.wait()
    deadline = time.time() + 30
    while s not in saves_json(capsule) and time.time() < deadline:
        time.sleep(0.1)
    assert cat(capsule, s, "/root/r") == "ready\n"


def test_save_a_running_sandbox(capsule, saves):
    s = saves()
    name = capsule.create()
    capsule.run("exec", "-d", name, "sh", "-c", "echo $$ > /root/pid; while true; do echo x >> /root/ticks; sleep 0.02; done",
                check=True)
    capsule.run("exec", name, "sh", "-c", "echo now > /root/now; while ! test -s /root/pid; do sleep 0.01; done", check=True)
    r = capsule.run("save", name, s)
    assert r.returncode == 0 and r.stdout.strip() == s, r.stderr
    # The sandbox goes on, its processes thawed: the writer is the same and still writing.
    r = capsule.run("exec", name, "sh", "-c", "kill -0 $(cat /root/pid)")
    assert r.returncode == 0, r.stderr

    def ticks():
        return len(capsule.run("exec", name, "cat", "/root/ticks", check=True).stdout.split())

    n = ticks()
    deadline = time.time() + 20
    while ticks() == n and time.time() < deadline:
        time.sleep(0.05)
    assert ticks() > n, "the writer did not go on after the save (left frozen?)"
    assert cat(capsule, s, "/root/now") == "now\n"
    # One moment's state: the saved file holds whole lines only.
    saved = cat(capsule, s, "/root/ticks")
    assert saved and set(saved.split("\n")) <= {"x", ""}, repr(saved[-40:])
    assert capsule.inspect(name)["state"] == "running"


def test_checkpoint_and_revert(capsule):
    name = capsule.create()
    capsule.run("exec", name, "sh", "-c", "echo before > /root/f; echo keep > /root/k", check=True)
    assert capsule.run("checkpoint", name, "cp1").stdout.strip() == "cp1"
    capsule.run("exec", name, "sh", "-c", "echo after > /root/f; rm /root/k; echo new > /root/n", check=True)
    capsule.run("exec", "-d", name, "sleep", "1000", check=True)
    r = capsule.run("revert", name, "cp1")
    assert r.returncode == 0, r.stderr
    r = capsule.run("exec", name, "sh", "-c", "cat /root/f /root/k; ls /root")
    assert r.stdout.split() == ["before", "keep", "f", "k"], r.stderr
    # The revert restarted the sandbox: what ran in it is gone.
    assert capsule.run("exec", name, "pgrep", "sleep").returncode == 1
    # A checkpoint can be reverted to again, and a missing one is a clear error that leaves
    # the sandbox as it was.
    capsule.run("exec", name, "sh", "-c", "echo x > /root/f", check=True)
    assert capsule.run("revert", name, "cp1").returncode == 0
    assert capsule.run("exec", name, "cat", "/root/f").stdout == "before\n"
    r = capsule.run("revert", name, "nosuch")
    assert_capsule_error(r)
    assert "no checkpoint named 'nosuch'" in r.stderr
    assert capsule.inspect(name)["state"] == "running"


def test_revert_of_a_stopped_sandbox(capsule):
    name = capsule.create()
    capsule.run("exec", name, "sh", "-c", "echo one > /root/f", check=True)
    capsule.run("checkpoint", name, "c", check=True)
    capsule.run("exec", name, "sh", "-c", "echo two > /root/f", check=True)
    capsule.run("stop", name, check=True)
    assert capsule.run("revert", name, "c").returncode == 0
    capsule.run("start", name, check=True)
    assert capsule.run("exec", name, "cat", "/root/f").stdout == "one\n"


def test_fork(capsule):
    dev = capsule.create()
    capsule.run("exec", dev, "sh", "-c", "echo state > /root/s; mkdir /home/u; chown 1000:1000 /home/u", check=True)
    dev2 = capsule.unique_name()
    r = capsule.run("fork", dev, dev2)
    assert r.returncode == 0 and r.stdout.strip() == dev2, r.stderr
    assert capsule.inspect(dev)["state"] == "running"
    assert capsule.inspect(dev2)["state"] == "running"
    r = capsule.run("exec", dev2, "sh", "-c", "cat /root/s; stat -c %u /home/u")
    assert r.stdout.split() == ["state", "1000"], r.stderr
    # Two sandboxes from then on: a change in one is not in the other.
    capsule.run("exec", dev2, "sh", "-c", "echo fork > /root/s", check=True)
    assert capsule.run("exec", dev, "cat", "/root/s").stdout == "state\n"
    # Forking onto an existing name is refused, and leaves both as they were.
    r = capsule.run("fork", dev, dev2)
    assert_capsule_error(r)
    assert capsule.run("exec", dev2, "cat", "/root/s").stdout == "fork\n"


def test_rm_refused_for_a_parent_and_for_a_sandbox_in_use(capsule, saves):
    a, b = saves("a"), saves("b")
    assert capsule.run("run", "--save", a, "--", "true").returncode == 0
    assert capsule.run("run", "--image", a, "--save", b, "--", "true").returncode == 0
    r = capsule.run("saves", "rm", a)
    assert_capsule_error(r)
    assert f"save '{a}' is the parent of save '{b}'" in r.stderr
    user = capsule.create("--image", b)
    r = capsule.run("saves", "rm", b)
    assert_capsule_error(r)
    assert f"in use by sandbox '{user}'" in r.stderr
    capsule.run("rm", "-f", user, check=True)
    assert capsule.run("saves", "rm", b).returncode == 0
    assert capsule.run("saves", "rm", a).returncode == 0
    assert a not in saves_json(capsule) and b not in saves_json(capsule)
    r = capsule.run("saves", "rm", a)
    assert_capsule_error(r)
    assert f"no save named '{a}'" in r.stderr


@pytest.mark.parametrize("bad", ["../x", "a/b", "..", ".hidden", "x" * 64, "-x"])
def test_bad_save_names(capsule, bad):
    runs = settled_run_entries(os.path.join(capsule.home, "run"))
    before = sorted(os.listdir(saves_dir(capsule))) if os.path.isdir(saves_dir(capsule)) else []
    for args in (["run", "--save", bad, "--", "true"], ["create", "--name", sname("n"), "--save", bad],
                 ["saves", "rm", bad]):
        r = capsule.run(*args)
        assert_capsule_error(r)
        assert "save name" in r.stderr or "unknown flag" in r.stderr, r.stderr
    name = capsule.create()
    for verb in ("save", "checkpoint", "revert", "fork"):
        r = capsule.run(verb, name, bad)
        assert_capsule_error(r)
        assert "name" in r.stderr or "unknown flag" in r.stderr, r.stderr
    capsule.run("rm", "-f", name, check=True)
    after = sorted(os.listdir(saves_dir(capsule))) if os.path.isdir(saves_dir(capsule)) else []
    assert [e for e in after if e not in before and e != ".lock"] == []
    assert not os.path.exists(os.path.join(capsule.home, "checkpoints"))
    now = settled_run_entries(os.path.join(capsule.home, "run"))
    assert now <= runs | {name}
    assert name not in now


def test_image_that_is_neither_save_nor_image(capsule):
    r = capsule.run("run", "--image", "nosuch-" + uuid.uuid4().hex[:6], "--", "true")
    assert_capsule_error(r)
    assert "not found" in r.stderr


# ---- atomicity: kill -9 of the saving process at chosen moments ----

def paused_pid(capsule, timeout=30):
    marker = os.path.join(saves_dir(capsule), ".test-paused")
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            stage, pid = open(marker).read().split()
            os.unlink(marker)
            return stage, int(pid)
        except (FileNotFoundError, ValueError):
            time.sleep(0.02)
    pytest.fail("the save never reached its pause point")


def save_killed_at(capsule, save, stage, content):
    """A sandbox with --save SAVE writes CONTENT, and its shim is SIGKILLed at STAGE of the save
    its stop makes."""
    name = capsule.unique_name()
    r = capsule.run("create", "--name", name, "--save", save, env={"CAPSULE_TEST_SAVE_PAUSE": stage})
    assert r.returncode == 0, r.stderr
    capsule.run("exec", name, "sh", "-c", f"mkdir -p /root/d; for i in 1 2 3 4 5 6; do echo {content} > /root/d/$i; done",
                check=True)
    stop = capsule.popen("stop", name, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    got, pid = paused_pid(capsule)
    assert got == stage.split(":")[0]
    os.kill(pid, signal.SIGKILL)
    stop.wait(timeout=60)
    capsule.run("rm", "-f", name, check=True)


@pytest.mark.parametrize("stage,survivor", [
    ("copy:1", "old"), ("copy:4", "old"), ("before-sync", "old"), ("before-exchange", "old"), ("after-exchange", "new"),
])
def test_kill9_during_replace_leaves_old_or_new(capsule, saves, stage, survivor):
    s = saves()
    assert capsule.run("run", "--save", s, "--", "sh", "-c",
                       "mkdir -p /root/d; for i in 1 2 3 4 5 6; do echo old > /root/d/$i; done").returncode == 0
    save_killed_at(capsule, s, stage, "new")
    # Never a broken save: it resolves, and every file is from the same one.
    r = capsule.run("run", "--image", s, "--", "sh", "-c", "cat /root/d/*")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [survivor] * 6
    assert s in saves_json(capsule)  # the listing also sweeps what the killed save left
    assert leftovers(capsule) == []


@pytest.mark.parametrize("stage", ["copy:2", "before-sync"])
def test_kill9_during_first_save_leaves_no_save(capsule, saves, stage):
    s = saves()
    save_killed_at(capsule, s, stage, "new")
    assert s not in saves_json(capsule)
    assert not os.path.exists(os.path.join(saves_dir(capsule), s))
    assert leftovers(capsule) == []
    r = capsule.run("run", "--image", s, "--", "true")
    assert_capsule_error(r)


def test_kill9_during_a_live_save_leaves_no_frozen_sandbox(capsule, saves):
    s = saves()
    name = capsule.unique_name()
    r = capsule.run("create", "--name", name, env={"CAPSULE_TEST_SAVE_PAUSE": "copy:2"})
    assert r.returncode == 0, r.stderr
    capsule.run("exec", name, "sh", "-c", "echo x > /root/a; echo y > /root/b", check=True)
    capsule.run("exec", "-d", name, "sleep", "1000", check=True)
    save = capsule.popen("save", name, s, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, pid = paused_pid(capsule)
    # The copy runs in a child of the shim: the shim is its parent, and it dies with it.
    with open(f"/proc/{pid}/status") as f:
        shim = int(next(line.split()[1] for line in f if line.startswith("PPid:")))
    os.kill(shim, signal.SIGKILL)
    save.wait(timeout=60)
    assert save.returncode == 125
    # The next look at the sandbox sweeps it: thawed, its processes killed, nothing frozen left.
    capsule.run("ps", check=True)
    deadline = time.time() + 10
    while (host_procs_in(name) or os.path.exists(f"/proc/{pid}")) and time.time() < deadline:
        time.sleep(0.05)
    assert host_procs_in(name) == []
    assert not os.path.exists(f"/proc/{pid}"), "the copy outlived its shim"
    assert s not in saves_json(capsule) and leftovers(capsule) == []


def test_c_api_save_checkpoint_revert_fork_list_remove(capsule):
    from tests.conftest import BUILD
    binary = os.path.join(BUILD, "tests", "e2e", "save_api_check")
    r = subprocess.run([binary, sname("api")], env=capsule.env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    for check in ("checkpoint-revert", "fork", "save-on-stop", "remove"):
        assert f"ok {check}" in r.stdout


def test_revert_keeps_boot_time_port_forwards(capsule):
    import socket
    import urllib.request
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    name = capsule.create("-p", f"127.0.0.1:{port}:8000")
    capsule.run("exec", name, "sh", "-c", "mkdir -p /srv && echo before > /srv/v", check=True)
    capsule.run("checkpoint", name, "c", check=True)
    capsule.run("exec", name, "sh", "-c", "echo after > /srv/v", check=True)
    assert capsule.run("revert", name, "c").returncode == 0
    # The restarted sandbox has its forward again, on the same host port.
    capsule.run("exec", "-d", name, "python3", "-m", "http.server", "8000", "--bind", "127.0.0.1", "--directory",
                "/srv", check=True)
    deadline = time.time() + 20
    body = None
    while time.time() < deadline:
        try:
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/v", timeout=2).read()
            break
        except OSError:
            time.sleep(0.1)
    assert body == b"before\n"
    # A fork does not take the original's forwards (their host ports are taken).
    fork = capsule.unique_name()
    r = capsule.run("fork", name, fork)
    assert r.returncode == 0, r.stderr
    assert capsule.inspect(fork)["state"] == "running"


def test_save_on_top_of_an_image(capsule, saves, tmp_path):
    need_static_agent(capsule.build)
    import shutil as _shutil
    busybox = _shutil.which("busybox")
    if not busybox:
        pytest.fail("busybox-static is not installed (scripts/install-deps installs it)", pytrace=False)
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    (root / "etc").mkdir()
    _shutil.copy(busybox, root / "bin" / "busybox")
    for tool in ("sh", "cat"):
        os.symlink("busybox", root / "bin" / tool)
    (root / "etc" / "marker").write_text("base\n")
    os.chmod(tmp_path, 0o755)
    s = saves()
    image = f"dir:{root}"
    r = capsule.run("run", "--image", image, "--save", s, "--", "sh", "-c", "echo changed > /etc/marker")
    assert r.returncode == 0, r.stderr
    assert cat(capsule, s, "/etc/marker") == "changed\n"
    assert (root / "etc" / "marker").read_text() == "base\n"
    ls = saves_json(capsule)[s]
    assert ls["parent"] == image and ls["parent_kind"] == "image" and ls["chain"] == [image, s]
    m = json.load(open(os.path.join(saves_dir(capsule), s, "manifest.json")))
    assert m["base"] == "none" and m["layers"] == [str(root)]
