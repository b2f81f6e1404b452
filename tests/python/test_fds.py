"""Descriptors passed to a command (fds=): each becomes 3, 4, ... in it, nothing else above 2
reaches it, and what cannot be honoured is refused before anything runs."""
import asyncio
import errno
import os

import pytest

from capsule import InvalidArgument, Sandbox, SyncSandbox, UnsupportedFeature
from capsule.remote import RemoteSyncSandbox

def _pipe():
    r, w = os.pipe2(os.O_CLOEXEC)
    return r, w


def test_sync_execute_gets_pipes_and_a_file_as_3_4_5(hostdir):
    r1, w1 = _pipe()
    r2, w2 = _pipe()
    path = os.path.join(hostdir, "in")
    with open(path, "w") as f:
        f.write("from a file")
    stray = os.open(path, os.O_RDONLY)  # inheritable here, and not passed
    os.set_inheritable(stray, True)
    try:
        with SyncSandbox() as sb, open(path) as infile:
            r = sb.execute(["sh", "-c", "echo one >&3; echo two >&4; cat <&5; echo; "
                            "ls /proc/self/fd | sort -n | tr '\\n' ' '"], fds=[w1, w2, infile])
            assert r.exit_code == 0, r.stderr
            opened = [int(n) for n in r.stdout.splitlines()[-1].split()]
            assert r.stdout.splitlines()[0] == "from a file"
            # 6 is ls's own, the folder it reads: nothing of ours beyond the three.
            assert opened == [0, 1, 2, 3, 4, 5, 6], r.stdout
        os.close(w1)
        os.close(w2)
        assert os.read(r1, 100) == b"one\n" and os.read(r2, 100) == b"two\n"
        # The sandbox kept no copy: the pipes reach their end with ours closed.
        assert os.read(r1, 100) == b"" and os.read(r2, 100) == b""
    finally:
        for fd in (r1, r2, stray):
            os.close(fd)


def test_async_spawn_writes_through_a_passed_pipe():
    async def main():
        r, w = _pipe()
        try:
            async with Sandbox() as sb:
                p = await sb.spawn(["sh", "-c", "echo spawned >&3"], fds=[w])
                assert (await p.wait()).exit_code == 0
                e = await sb.execute(["sh", "-c", "echo executed >&3"], fds=[w])
                assert e.exit_code == 0
            os.close(w)
            w = -1
            data = b""
            while chunk := os.read(r, 100):
                data += chunk
            assert data == b"spawned\nexecuted\n"
        finally:
            os.close(r)
            if w >= 0:
                os.close(w)
    asyncio.run(main())


@pytest.mark.parametrize("fds,message", [
    ("3", "fds: expected a list of descriptors"),
    ([-1], "is not a descriptor"),
    ([True], "is not a descriptor"),
    (["x"], "is not a descriptor"),
    (list(range(65)), "65 descriptors to pass, at most 64"),
])
def test_bad_fds_are_refused_in_one_line(fds, message):
    with SyncSandbox() as sb:
        with pytest.raises(InvalidArgument) as e:
            sb.execute("true", fds=fds)
        assert message in str(e.value) and "\n" not in str(e.value)
        assert sb.execute("echo still").stdout == "still\n"


def test_a_closed_descriptor_is_named():
    r, w = _pipe()
    os.close(r)
    os.close(w)
    with SyncSandbox() as sb:
        with pytest.raises(Exception) as e:
            sb.execute("true", fds=[w])
        assert e.value.errno == errno.EBADF and str(w) in str(e.value), str(e.value)


def test_a_remote_sandbox_refuses_descriptors_before_any_request():
    # No server is contacted: the refusal comes first.
    sb = RemoteSyncSandbox(server="http://127.0.0.1:9", token="t")
    with pytest.raises(UnsupportedFeature) as e:
        sb.execute("true", fds=[0])
    assert "over HTTP" in str(e.value)
