"""The Python SDK against a capsule server: Sandbox(server=..., token=...) and
SyncSandbox(server=..., token=...), the local SDK's names over the HTTP API (docs/python.md,
On a server), driven against a real `capsule serve` on loopback and on a unix socket."""
import asyncio
import os
import signal
import subprocess

import pytest

import capsule
from capsule import SyncSandbox, Sandbox
from sdkutil import CAPSULE

_seq = [0]


def _token(home):
    _seq[0] += 1
    r = subprocess.run([CAPSULE, "token", "create", f"sdk{_seq[0]}-{os.getpid()}"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@pytest.fixture(scope="module")
def server(capsule_home):
    sock = os.path.join(capsule_home, "api.sock")
    p = subprocess.Popen([CAPSULE, "serve", "--listen", "127.0.0.1:0", "--listen", f"unix:{sock}",
                          "--exec-grace", "10"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = [p.stdout.readline().strip() for _ in range(2)]
    assert all(line.startswith("listening on ") for line in lines), (lines, p.kill(), p.communicate())
    url = "http://" + lines[0][len("listening on "):]
    yield {"url": url, "unix": f"unix:{sock}", "token": _token(capsule_home)}
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err


@pytest.fixture(scope="module")
def sb(server):
    with SyncSandbox(server=server["url"], token=server["token"], labels={"suite": "remote"}) as sb:
        yield sb


def test_the_constructors_make_remote_sandboxes(server):
    s = SyncSandbox(server=server["url"], token=server["token"])
    assert isinstance(s, capsule.remote.RemoteSyncSandbox) and s.id is None
    a = Sandbox("host", server=server["url"], token=server["token"], memory="256M")
    assert isinstance(a, capsule.remote.RemoteSandbox)
    with pytest.raises(capsule.InvalidArgument, match="not available through a server: mounts"):
        SyncSandbox(server=server["url"], token=server["token"], mounts=[])
    with pytest.raises(capsule.InvalidArgument, match="needs a token"):
        SyncSandbox(server=server["url"])
    with pytest.raises(capsule.PermissionDenied) as e:
        SyncSandbox(server=server["url"], token="capsule_" + "0" * 64).start()
    assert e.value.status == 401


def test_execute(sb):
    r = sb.execute("echo hello; echo oops >&2; exit 3")
    assert (r.stdout, r.stderr, r.exit_code, r.ok) == ("hello\n", "oops\n", 3, False)
    assert sb.execute(["printf", "%s", "a b"]).stdout == "a b"
    assert sb.execute("cat", stdin="via json").stdout == "via json"
    assert sb.execute(["od", "-An", "-tu1"], stdin=b"\x00\xc8\x07").stdout.split() == ["0", "200", "7"]
    assert sb.execute("printf '\\377\\001'").stdout_bytes == b"\xff\x01"
    assert sb.execute(["pwd"], cwd="/tmp").stdout == "/tmp\n"
    assert sb.execute("echo $X", env={"X": "42"}).stdout == "42\n"
    assert sb.execute(["no-such-command"]).exit_code == 127
    with pytest.raises(capsule.Timeout) as e:
        sb.execute("sleep 60", timeout=0.3)
    assert e.value.result.timed_out and e.value.result.exit_code == 137


def test_execute_with_callbacks_streams(sb):
    out, err = [], []
    r = sb.execute("for i in 1 2 3; do echo line $i; done; echo done >&2; exit 5", on_stdout=out.append,
                   on_stderr=err.append)
    assert "".join(out) == "line 1\nline 2\nline 3\n" and "".join(err) == "done\n"
    assert r.exit_code == 5 and r.stdout == "line 1\nline 2\nline 3\n"
    # cat ends: a streaming execute closes the stdin it was not given, as a plain one does.
    assert sb.execute("cat", on_stdout=out.append).exit_code == 0


def test_spawn_stdin_signals_and_wait(sb):
    p = sb.spawn(["cat"])
    assert p.id.startswith("exec-") and p.pid > 0
    assert p.write(b"one ") == 4
    assert p.write("two") == 3
    p.close_stdin()
    r = p.wait(60)
    assert r.stdout == "one two" and p.returncode == 0

    seen = []
    p = sb.spawn("echo ready; exec sleep 600", on_stdout=seen.append)
    p.terminate()
    r = p.wait(60)
    assert (r.exit_code, r.signal) == (143, 15)
    p.kill()  # after its end: nothing happens, as for a local process

    with pytest.raises(capsule.Timeout):
        sb.spawn("sleep 600").wait(0.2)


def test_files(sb):
    assert sb.fs.write("/tmp/remote/a.txt", "hello") == 5
    assert sb.fs.read_text("/tmp/remote/a.txt") == "hello"
    blob = os.urandom(3 << 20)
    assert sb.fs.write("/tmp/remote/b.bin", iter([blob[:1 << 20], blob[1 << 20:]])) == len(blob)
    assert sb.fs.read("/tmp/remote/b.bin") == blob
    assert b"".join(sb.fs.read_stream("/tmp/remote/b.bin", 65536)) == blob
    entries = sb.fs.list("/tmp/remote")
    assert [(e.name, e.kind, e.size, e.path) for e in entries] == [
        ("a.txt", "file", 5, "/tmp/remote/a.txt"), ("b.bin", "file", len(blob), "/tmp/remote/b.bin")]
    assert sb.fs.exists("/tmp/remote/a.txt") and not sb.fs.exists("/tmp/remote/zzz")
    with pytest.raises(capsule.NotFound):
        sb.fs.read("/tmp/remote/missing")
    with pytest.raises(capsule.InvalidArgument):
        sb.fs.remove("/tmp/remote")
    sb.fs.remove("/tmp/remote", recursive=True)
    sb.fs.remove("/tmp/remote", missing_ok=True)
    assert not sb.fs.exists("/tmp/remote")


def test_connect_and_another_token(server, sb, capsule_home):
    again = capsule.remote.RemoteSyncSandbox.connect(sb.id, server=server["url"], token=server["token"])
    assert again.is_running and again.info["labels"] == {"suite": "remote"}
    with pytest.raises(capsule.NotFound):
        capsule.remote.RemoteSyncSandbox.connect(sb.id, server=server["url"], token=_token(capsule_home))


def test_over_a_unix_socket(server):
    with SyncSandbox(server=server["unix"], token=server["token"]) as s:
        assert s.execute("echo unix").stdout == "unix\n"
        sid = s.id
    assert not capsule.remote.RemoteSyncSandbox(server=server["unix"], token=server["token"]).is_running
    with pytest.raises(capsule.NotFound):
        capsule.remote.RemoteSyncSandbox.connect(sid, server=server["unix"], token=server["token"])


def test_asyncio(server):
    async def main():
        async with Sandbox(server=server["url"], token=server["token"]) as s:
            r = await s.execute("echo async")
            assert r.stdout == "async\n"
            seen = []

            async def on_out(text):
                await asyncio.sleep(0)
                seen.append(text)

            r = await s.execute("echo a; echo b", on_stdout=on_out)
            assert "".join(seen) == "a\nb\n" and r.stdout == "a\nb\n"
            p = await s.spawn(["cat"])
            await p.write("through cat")
            await p.close_stdin()
            assert (await p.wait()).stdout == "through cat"
            p = await s.spawn("sleep 600")
            p.kill()  # as the local Process's, not awaited
            assert (await p.wait()).signal == 9
            p = await s.spawn("sleep 600")
            await p.send_signal(15)
            assert (await p.wait()).exit_code == 143
            await s.fs.write("/tmp/x", b"bytes")
            assert await s.fs.read("/tmp/x") == b"bytes"
            assert [c async for c in s.fs.read_stream("/tmp/x")] == [b"bytes"]
            assert [e.name for e in await s.fs.list("/tmp") if e.name == "x"] == ["x"]
            assert await s.is_running()
        assert not await s.is_running()

    asyncio.run(main())


def test_diff_watch_pause_and_resume(server):
    with SyncSandbox(server=server["url"], token=server["token"]) as s:
        s.execute("mkdir -p /w")
        with s.watch("/w", recursive=True) as w:
            s.execute("echo x > /w/a && mv /w/a /w/b")
            got = []
            while not got or got[-1]["kind"] != "move":
                e = w.next(timeout=60)
                assert e is not None, got
                got.append(e)
            assert [(e["kind"], e.get("from"), e["path"]) for e in got] == [
                ("create", None, "/w/a"), ("modify", None, "/w/a"), ("move", "/w/a", "/w/b")]
            assert w.next(timeout=0.05) is None
            s.execute("rm -rf /w")
            # The watched folder going ends the iteration, after its delete.
            assert [e["kind"] for e in w][-1] == "delete"
        assert [(c["kind"], c["path"]) for c in s.diff() if c["path"].startswith("/w")] == []
        s.execute("echo y > /root/y")
        assert [(c["kind"], c["path"]) for c in s.diff() if c["path"].startswith("/root/y")] == [("added", "/root/y")]
        with pytest.raises(capsule.NotFound):
            s.diff(since="no-such-checkpoint")
        # Since one of the token's saves (made through the API: the remote SDK has no save()).
        s._conn.json("POST", f"/v1/sandboxes/{s.id}/save", {"name": "before-y"})
        try:
            s.execute("rm /root/y")
            assert [(c["kind"], c["path"]) for c in s.diff(since="save:before-y")] == [("deleted", "/root/y")]
            with pytest.raises(capsule.NotFound, match="no save 'nope'"):
                s.diff(since="save:nope")
        finally:
            s.execute("echo y > /root/y")
            s._conn.json("DELETE", "/v1/saves/before-y")
        s.pause()
        assert s.info["state"] == "paused" and s.info["paused"] is True and s.is_running
        with pytest.raises(capsule.Busy, match="paused") as e:
            s.execute("true")
        assert e.value.code == "sandbox_paused"
        with pytest.raises(capsule.Busy):
            s.fs.read("/root/y")
        s.resume()
        assert s.info["paused"] is False and s.fs.read("/root/y") == b"y\n"


def test_asyncio_watch_pause_and_diff(server):
    async def main():
        async with Sandbox(server=server["url"], token=server["token"]) as s:
            await s.execute("mkdir -p /aw")
            async with s.watch("/aw") as w:
                await s.execute("touch /aw/one && rm -rf /aw")
                kinds = [e["kind"] async for e in w]
            assert kinds[0] == "create" and kinds[-1] == "delete", kinds
            await s.execute("touch /root/z")
            assert ("added", "/root/z") in [(c["kind"], c["path"]) for c in await s.diff()]
            await s.pause()
            with pytest.raises(capsule.Busy):
                await s.execute("true")
            await s.resume()
            assert (await s.execute("echo ok")).stdout == "ok\n"

    asyncio.run(main())
