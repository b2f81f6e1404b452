"""The filesystem API and cp against a hostile sandbox and a hostile client.

The rule under test (docs/security.md): every path inside a sandbox is resolved by the agent
inside the sandbox, so links, `..` and races there never make the host read, write or remove
anything but what it was asked to; and a client that misbehaves costs the sandbox nothing."""
import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import uuid

import pytest

from secutil import (assert_alive, connect, frame, hello_frame, parse_frames, read_until_quiet, sh, shim_pids_named, tlv,
                     wait_until)

FS, SIGNAL = 64, 21
FS_READ, FS_STAT = 3, 1


def fs(capsule, name, *args, **kw):
    return capsule.run("fs", name, *args, **kw)


def assert_one_line_error(r):
    err = r.stderr if isinstance(r.stderr, str) else r.stderr.decode(errors="replace")
    assert r.returncode == 125, f"exit {r.returncode}: {err!r}"
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith("capsule"), err


@pytest.fixture
def canary():
    """A host folder with a file holding a unique marker: nothing may read, change, remove
    or add to it."""
    marker = f"HOST-SECRET-{uuid.uuid4().hex}"
    d = tempfile.mkdtemp(prefix="capsule-canary-", dir="/var/tmp")
    with open(os.path.join(d, "secret"), "w") as f:
        f.write(marker + "\n")
    os.chmod(d, 0o755)
    before = os.stat(os.path.join(d, "secret"))
    yield d, marker
    try:
        assert os.listdir(d) == ["secret"], f"host canary folder changed: {os.listdir(d)}"
        with open(os.path.join(d, "secret")) as f:
            assert f.read() == marker + "\n"
        after = os.stat(os.path.join(d, "secret"))
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def hostdir():
    d = tempfile.mkdtemp(prefix="capsule-fssec-", dir="/var/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def fs_msg(op, path, path2=None, flags=0):
    p = tlv(1, struct.pack("<I", op)) + tlv(2, path)
    if path2 is not None:
        p += tlv(3, path2)
    if flags:
        p += tlv(4, struct.pack("<I", flags))
    return p


def hello(s):
    s.sendall(hello_frame())
    buf, _ = read_until_quiet(s, quiet=5, total=10, until=lambda fr: len(fr) >= 1)
    frames, _ = parse_frames(buf)
    assert frames and frames[0][0] == 1, frames


def final_on(frames, chan):
    return [f for f in frames if f[2] == chan and f[0] in (2, 3)]


# ---- links and .. inside the sandbox --------------------------------------------------------


def test_a_link_to_etc_shadow_reads_the_sandboxs_file_never_the_hosts(capsule, sandbox, canary):
    d, marker = canary
    secret = os.path.join(d, "secret")
    sh(capsule, sandbox, f"ln -s /etc/shadow /tmp/shadow; ln -s {secret} /tmp/secret; "
       f"ln -s ../../../../../../..{secret} /tmp/secret-rel; mkdir -p /tmp/deep/a/b", check=True)
    with open("/etc/shadow", "rb") as f:
        host_shadow = f.read()
    r = fs(capsule, sandbox, "cat", "/tmp/shadow", text=False)
    if r.returncode == 0:
        assert r.stdout != host_shadow
        inside = capsule.run("exec", sandbox, "--", "cat", "/etc/shadow", text=False)
        assert r.stdout == inside.stdout
    else:
        assert_one_line_error(r)
    for path in ("/tmp/secret", "/tmp/secret-rel", secret, "/tmp/deep/a/b/../../../../../../.." + secret):
        r = fs(capsule, sandbox, "cat", path)
        assert marker not in r.stdout and marker not in r.stderr
        assert_one_line_error(r)
        assert "No such file or directory" in r.stderr
        r = fs(capsule, sandbox, "stat", "--json", path)
        assert r.returncode == 125 or json.loads(r.stdout)["kind"] == "symlink"
    # cp of the link copies the link, not what it names (in the sandbox or on the host).
    out = os.path.join(tempfile.mkdtemp(dir="/var/tmp"), "out")
    try:
        capsule.run("cp", f"{sandbox}:/tmp/secret", out, check=True)
        assert os.readlink(out) == secret
    finally:
        shutil.rmtree(os.path.dirname(out), ignore_errors=True)


def test_dotdot_chains_stay_inside_the_sandbox(capsule, sandbox, canary):
    d, marker = canary
    inside = capsule.run("exec", sandbox, "--", "cat", "/etc/hostname", check=True).stdout
    r = fs(capsule, sandbox, "cat", "/../../../../etc/hostname", check=True)
    assert r.stdout == inside
    r = fs(capsule, sandbox, "cat", "/tmp/../../../../../../etc/hostname", check=True)
    assert r.stdout == inside
    root = fs(capsule, sandbox, "ls", "/", check=True).stdout
    assert fs(capsule, sandbox, "ls", "/../../../..", check=True).stdout == root
    name = f"dotdot-{uuid.uuid4().hex[:8]}"
    fs(capsule, sandbox, "write", f"/../../../../..{d}/{name}", "x", check=False)
    fs(capsule, sandbox, "write", "-p", f"/../../../../..{d}/{name}", "x", check=True)
    fs(capsule, sandbox, "mkdir", "-p", f"/../..{d}/dir-{name}", check=True)
    fs(capsule, sandbox, "rm", "-r", f"/../../..{d}/secret", check=False)
    fs(capsule, sandbox, "mv", f"/../..{d}/{name}", f"/../..{d}/moved", check=True)
    # Made inside the sandbox, where the path really is.
    got = sorted(json.loads(fs(capsule, sandbox, "ls", "--json", d, check=True).stdout), key=lambda e: e["name"])
    assert [e["name"] for e in got] == [f"dir-{name}", "moved"]
    assert not os.path.exists(os.path.join(d, name)) and not os.path.exists(os.path.join(d, "moved"))


def _start_swapper(capsule, name, a, b, seconds):
    """Inside the sandbox, exchange A (a folder) and B (a link to /) as fast as it can."""
    code = (
        "import ctypes, os, time\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        f"a, b = {a!r}.encode(), {b!r}.encode()\n"
        "end = time.monotonic() + %d\n"
        "n = 0\n"
        "while time.monotonic() < end:\n"
        "    if libc.renameat2(-100, a, -100, b, 2) == 0: n += 1\n"
        "print(n)\n" % seconds
    )
    return capsule.popen("exec", name, "--", "python3", "-c", code, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)


def test_a_symlink_swapped_in_a_tight_loop_never_leads_to_the_host(capsule, sandbox, canary):
    d, marker = canary
    sh(capsule, sandbox, "mkdir -p /tmp/race/dir && ln -s / /tmp/race/link", check=True)
    swapper = _start_swapper(capsule, sandbox, "/tmp/race/dir", "/tmp/race/link", 30)
    try:
        seen = []
        via = "/tmp/race/dir" + d
        for i in range(40):
            rs = [
                fs(capsule, sandbox, "write", "-p", f"{via}/new-{i}", "x"),
                fs(capsule, sandbox, "cat", f"{via}/secret"),
                fs(capsule, sandbox, "ls", via),
                fs(capsule, sandbox, "ls", "-l", "/tmp/race/dir/var/tmp"),
                fs(capsule, sandbox, "stat", f"{via}/secret"),
                fs(capsule, sandbox, "mkdir", "-p", f"{via}/made-{i}"),
                fs(capsule, sandbox, "mv", f"{via}/new-{i}", f"{via}/secret"),
                fs(capsule, sandbox, "rm", "-r", f"{via}/secret"),
                fs(capsule, sandbox, "rm", "-rf", via),
            ]
            for r in rs:
                seen.append(r.returncode)
                assert marker not in r.stdout and marker not in r.stderr
                assert r.returncode in (0, 125), r.stderr
                if r.returncode:
                    assert_one_line_error(r)
        out, err = swapper.communicate(timeout=120)
        assert swapper.returncode == 0, err
        assert int(out.strip()) > 100, "the swapper did not swap: the test proved nothing"
        assert 0 in seen
    finally:
        if swapper.poll() is None:
            swapper.kill()
            swapper.wait()
    assert_alive(capsule, sandbox)


# ---- hostile files --------------------------------------------------------------------------


def test_a_fifo_fails_fast_and_does_not_hang_the_agent(capsule, sandbox):
    sh(capsule, sandbox, "mkfifo /tmp/fifo && mkdir /tmp/withfifo && mkfifo /tmp/withfifo/p && "
       "echo data > /tmp/withfifo/f", check=True)
    r = fs(capsule, sandbox, "cat", "/tmp/fifo", timeout=20)
    assert_one_line_error(r)
    assert "/tmp/fifo" in r.stderr and "not a regular file" in r.stderr
    assert_one_line_error(fs(capsule, sandbox, "ls", "/tmp/fifo", timeout=20))
    assert json.loads(fs(capsule, sandbox, "stat", "--json", "/tmp/fifo", timeout=20).stdout)["kind"] == "other"
    assert_alive(capsule, sandbox)
    # cp skips it, copies the rest.
    out = tempfile.mkdtemp(dir="/var/tmp")
    try:
        capsule.run("cp", f"{sandbox}:/tmp/withfifo", os.path.join(out, "w"), check=True, timeout=20)
        assert os.listdir(os.path.join(out, "w")) == ["f"]
    finally:
        shutil.rmtree(out, ignore_errors=True)
    # Device nodes: no open of a device for reading through the API.
    r = fs(capsule, sandbox, "cat", "/dev/zero", timeout=20)
    assert_one_line_error(r)
    assert_alive(capsule, sandbox)


def test_a_huge_path_gets_one_clear_line_and_the_sandbox_still_answers(capsule, sandbox):
    for path in ("/" + "a" * 100000, "/" + "a/" * 50000, "/" + "x" * 4200):
        r = fs(capsule, sandbox, "cat", path)
        assert_one_line_error(r)
        assert "longer than 4096" in r.stderr
    r = fs(capsule, sandbox, "cat", "/" + "b" * 300)  # one component over NAME_MAX
    assert_one_line_error(r)
    assert "ame too long" in r.stderr  # glibc "File name", musl "Filename"
    # Just under the limit, 200 folders deep.
    deep = "/tmp/" + ("d" * 19 + "/") * 200 + "f"
    assert len(deep) < 4096
    fs(capsule, sandbox, "write", "-p", deep, "deep", check=True)
    assert fs(capsule, sandbox, "cat", deep).stdout == "deep"
    # A 1 MB path straight on the wire (the CLI refuses it before sending): an ERROR frame.
    s = connect(capsule, sandbox)
    try:
        hello(s)
        s.sendall(frame(FS, 7, fs_msg(FS_STAT, "/" + "z" * 1000000)))
        buf, _ = read_until_quiet(s, quiet=5, total=20, until=lambda fr: bool(final_on(fr, 7)))
        [(t, _, _, payload)] = final_on(parse_frames(buf)[0], 7)
        assert t == 2, "a 1 MB path was not refused"
    finally:
        s.close()
    assert_alive(capsule, sandbox)
    assert fs(capsule, sandbox, "stat", "/etc").returncode == 0


def test_names_with_newlines_escapes_and_bad_utf8_are_handled(capsule, sandbox, hostdir):
    code = ("import os\nos.mkdir(b'/tmp/names')\n"
            "for n in (b'new\\nline', b'\\x1b[31mred\\x1b[0m', b'tab\\there', b'\\xff\\xfe bad utf8', b'-rf', "
            "b'quote\"back\\\\slash'):\n"
            "    open(b'/tmp/names/' + n, 'wb').write(n)\n")
    capsule.run("exec", sandbox, "--", "python3", "-c", code, check=True)
    r = fs(capsule, sandbox, "ls", "/tmp/names", text=False)
    assert r.returncode == 0
    r = fs(capsule, sandbox, "ls", "-l", "/tmp/names", text=False)
    assert r.returncode == 0
    r = fs(capsule, sandbox, "ls", "--json", "/tmp/names", text=False)
    assert r.returncode == 0, r.stderr
    entries = json.loads(r.stdout)
    assert len(entries) == 6
    assert "new\nline" in {e["name"] for e in entries}
    r = fs(capsule, sandbox, "cat", "/tmp/names/new\nline", text=False)
    assert r.stdout == b"new\nline"
    out = os.path.join(hostdir, "names")
    capsule.run("cp", f"{sandbox}:/tmp/names", out, check=True)
    got = sorted(os.listdir(os.fsencode(out)))
    assert got == sorted([b"new\nline", b"\x1b[31mred\x1b[0m", b"tab\there", b"\xff\xfe bad utf8", b"-rf",
                          b'quote"back\\slash'])
    for n in got:
        with open(os.path.join(os.fsencode(out), n), "rb") as f:
            assert f.read() == n
    assert sorted(os.listdir(hostdir)) == ["names"]


# ---- cp against a hostile sandbox and hostile host folders ------------------------------------


def test_cp_from_a_folder_with_links_out_writes_only_below_the_destination(capsule, sandbox, canary, hostdir):
    d, marker = canary
    sh(capsule, sandbox, f"mkdir -p /tmp/e/x /tmp/e/evil-dir && ln -s /etc /tmp/e/evil && "
       f"ln -s {d} /tmp/e/canary && ln -s ../../../../../..{d} /tmp/e/x/up && "
       f"echo pwned > /tmp/e/x/secret && echo pwned > /tmp/e/evil-dir/passwd", check=True)
    out = os.path.join(hostdir, "out")
    capsule.run("cp", f"{sandbox}:/tmp/e", out, check=True)
    assert os.readlink(os.path.join(out, "evil")) == "/etc"
    assert os.readlink(os.path.join(out, "canary")) == d
    assert os.readlink(os.path.join(out, "x", "up")) == "../../../../../.." + d
    assert sorted(os.listdir(hostdir)) == ["out"]
    # Again into the same folder: it now holds links the sandbox chose; the copy goes to
    # out/e and still never walks through them.
    sh(capsule, sandbox, "rm /tmp/e/evil /tmp/e/canary && mkdir /tmp/e/evil /tmp/e/canary && "
       "echo pwned > /tmp/e/evil/passwd && echo pwned > /tmp/e/canary/secret", check=True)
    capsule.run("cp", f"{sandbox}:/tmp/e", out, check=True)
    with open(os.path.join(out, "e", "evil", "passwd")) as f:
        assert f.read() == "pwned\n"
    assert os.readlink(os.path.join(out, "evil")) == "/etc"
    with open("/etc/passwd") as f:
        assert "pwned" not in f.read()
    assert not os.path.exists("/etc/passwd/passwd")
    # Naming one of those links as the destination: refused, not followed into the host's /etc
    # or the canary.
    for link in ("evil", "canary"):
        r = capsule.run("cp", f"{sandbox}:/tmp/e/evil/passwd", os.path.join(out, link))
        assert r.returncode == 125 and "is a symlink" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    assert not os.path.exists(os.path.join(d, "passwd"))


def test_cp_from_while_the_sandbox_swaps_a_folder_for_a_link_stays_below_the_destination(
        capsule, sandbox, canary, hostdir):
    d, marker = canary
    # /tmp/s/dir/<canary path>/secret inside holds "pwned"; /tmp/s/link -> / ; they swap.
    sh(capsule, sandbox, f"mkdir -p /tmp/s/dir{d} && echo pwned > /tmp/s/dir{d}/secret && ln -s / /tmp/s/link",
       check=True)
    swapper = _start_swapper(capsule, sandbox, "/tmp/s/dir", "/tmp/s/link", 20)
    try:
        for i in range(15):
            out = os.path.join(hostdir, f"out{i}")
            r = capsule.run("cp", f"{sandbox}:/tmp/s/dir{d}", out, timeout=120)
            assert r.returncode in (0, 125), r.stderr
            if r.returncode:
                assert_one_line_error(r)
    finally:
        swapper.kill()
        swapper.wait()
    for i in range(15):
        secret = os.path.join(hostdir, f"out{i}", "secret")
        if os.path.lexists(secret):
            with open(secret) as f:
                assert f.read() == "pwned\n"  # the sandbox's file, never the host's marker
    assert_alive(capsule, sandbox)


def test_cp_of_a_host_folder_with_symlink_loops_terminates(capsule, sandbox, hostdir):
    src = os.path.join(hostdir, "loops")
    os.makedirs(os.path.join(src, "a", "b"))
    os.symlink("..", os.path.join(src, "a", "b", "up"))
    os.symlink(".", os.path.join(src, "self"))
    os.symlink("loop", os.path.join(src, "loop"))
    os.symlink(src, os.path.join(src, "a", "abs"))
    os.mkfifo(os.path.join(src, "fifo"))
    capsule.run("cp", src, f"{sandbox}:/tmp/loops", check=True, timeout=60)
    entries = {e["name"]: e for e in json.loads(fs(capsule, sandbox, "ls", "--json", "/tmp/loops", check=True).stdout)}
    assert set(entries) == {"a", "self", "loop"}  # the fifo is skipped
    assert entries["self"]["link_target"] == "." and entries["loop"]["link_target"] == "loop"
    a = {e["name"]: e for e in json.loads(fs(capsule, sandbox, "ls", "--json", "/tmp/loops/a", check=True).stdout)}
    assert a["abs"]["link_target"] == src and a["b"]["kind"] == "dir"


def test_cp_to_a_sandbox_never_writes_through_a_link_the_sandbox_planted(capsule, sandbox, hostdir, canary):
    d, marker = canary
    src = os.path.join(hostdir, "payload")
    os.makedirs(os.path.join(src, "sub"))
    with open(os.path.join(src, "sub", "file"), "w") as f:
        f.write("from host\n")
    # The destination's parent inside is a link to /: resolved inside, so it lands in the
    # sandbox's own root.
    sh(capsule, sandbox, "ln -s / /tmp/planted", check=True)
    capsule.run("cp", src, f"{sandbox}:/tmp/planted{d}-x", check=False)
    r = capsule.run("exec", sandbox, "--", "cat", f"{d}-x/sub/file")
    assert r.returncode != 0 or r.stdout == "from host\n"
    assert not os.path.exists(d + "-x")


# ---- hostile clients ------------------------------------------------------------------------


def test_reads_opened_without_credit_then_dropped_leak_nothing(capsule, sandbox):
    fs(capsule, sandbox, "write", "/tmp/big", input=b"\0" * (4 << 20), text=False, check=True)
    for _ in range(300):
        s = connect(capsule, sandbox)
        try:
            s.sendall(hello_frame() + frame(FS, 1, fs_msg(FS_READ, "/tmp/big")))
            # Take some of what it sends, grant no credit, and go.
            read_until_quiet(s, quiet=2, total=5, until=lambda fr: any(f[0] == 18 for f in fr))
        finally:
            s.close()
    assert_alive(capsule, sandbox)
    assert fs(capsule, sandbox, "cat", "/etc/hostname").returncode == 0
    r = fs(capsule, sandbox, "cat", "/tmp/big", text=False)
    assert r.returncode == 0 and len(r.stdout) == 4 << 20


def test_reads_cancelled_on_one_connection_free_their_channels(capsule, sandbox):
    # What the library does with a borrowed connection when a stream is freed half read:
    # SIGNAL on the channel. 300 of them must not use up the connection's 256 channels.
    fs(capsule, sandbox, "write", "/tmp/big", input=b"\0" * (4 << 20), text=False, check=True)
    s = connect(capsule, sandbox)
    try:
        hello(s)
        rest, finals = b"", []

        def drain(wait):
            nonlocal rest
            s.settimeout(wait)
            try:
                d = s.recv(1 << 20)
            except (socket.timeout, BlockingIOError):
                return False
            assert d, "the shim closed the connection"
            frames, rest = parse_frames(rest + d)
            finals.extend(f for f in frames if f[0] in (2, 3) and f[2] == 1000)
            return True

        for chan in range(2, 302):
            # drain() left a 1 ms timeout on the socket: a shim a few ms behind on a busy
            # machine is no failure.
            s.settimeout(10)
            s.sendall(frame(FS, chan, fs_msg(FS_READ, "/tmp/big")))
            s.sendall(frame(SIGNAL, chan, tlv(1, struct.pack("<I", 9))))
            while drain(0.001):  # so the shim never blocks on us
                pass
        s.sendall(frame(FS, 1000, fs_msg(FS_STAT, "/etc")))
        deadline = time.monotonic() + 30
        while not finals and time.monotonic() < deadline:
            drain(1.0)
        assert finals, "no answer to a STAT after 300 cancelled reads"
        t, _, _, payload = finals[0]
        assert t == 3, f"STAT refused after 300 cancelled reads: {payload!r}"
    finally:
        s.close()
    assert_alive(capsule, sandbox)


# ---- direct streams (CP_FS_DIRECT) ------------------------------------------------------------

FS_WRITE, FS_DIRECT, DIRECT = 4, 0x10, 55


def agent_pid(capsule, name):
    with open(os.path.join(capsule.home, "run", name, "state.json")) as f:
        return json.load(f)["init_pid"]


def fd_targets(pid):
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    return out


def frames_until(s, pred, total=20.0):
    """Frames read until PRED holds on them, with the descriptors that came along."""
    buf, fds = b"", []
    deadline = time.monotonic() + total
    s.settimeout(1.0)
    while time.monotonic() < deadline:
        frames, _ = parse_frames(buf)
        if pred(frames):
            return frames, fds
        try:
            d, got, _, _ = socket.recv_fds(s, 1 << 20, 4)
        except socket.timeout:
            continue
        assert d, "the shim closed the connection"
        buf += d
        fds += got
    raise AssertionError(f"no answer: {parse_frames(buf)[0]}")


def test_a_descriptor_a_client_passes_never_reaches_the_agent(capsule, sandbox, canary):
    """The shim makes a direct stream's socket itself: a descriptor the client sends along (here
    one of a host folder) is closed by the shim with its frame (only an EXEC's go on, to its
    command: test_fds.py) and never reaches the sandbox.
    The agent gets one new socket, besides the write's own folder and temporary file."""
    d, marker = canary
    pid = agent_pid(capsule, sandbox)
    before = set(fd_targets(pid))
    s = connect(capsule, sandbox)
    host = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        hello(s)
        req = frame(FS, 5, fs_msg(FS_WRITE, "/tmp/direct", flags=FS_DIRECT))
        socket.send_fds(s, [req], [host, host])
        frames, fds = frames_until(s, lambda fr: any(f[0] in (17, 2, 3) for f in fr))
        assert frames[-1][0] == 17, frames  # STARTED
        assert len(fds) == 1, fds
        # The agent's end goes to it in a DIRECT frame as the client's goes with STARTED.
        wait_until(lambda: any(t.startswith("socket:") and t not in before for t in fd_targets(pid)), 10)
        during = fd_targets(pid)
        assert not any(t.startswith(d) for t in during), during
        new = [t for t in during if t not in before]
        # The write's folder and temporary file (paths as the sandbox sees them), and one socket.
        assert sum(t.startswith("socket:") for t in new) == 1, new
        assert all(t.startswith(("socket:", "/tmp")) for t in new), new
        sock = socket.socket(fileno=fds[0])
        # The agent's end cannot send on a write's socket.
        sock.setblocking(False)
        assert sock.recv(1, socket.MSG_PEEK) == b""
        sock.setblocking(True)
        sock.sendall(b"through the direct socket\n")
        sock.close()
        s.sendall(frame(18, 5, b"", flags=0x100))
        frames, _ = frames_until(s, lambda fr: any(f[0] in (2, 3) and f[2] == 5 for f in fr))
        assert final_on(frames, 5)[0][0] == 3, frames
        # DIRECT is the shim's to send: a client's, with a descriptor, is refused, its
        # descriptor dropped.
        socket.send_fds(s, [frame(DIRECT, 6)], [host])
        frames, fds = frames_until(s, lambda fr: any(f[2] == 6 for f in fr))
        assert [f[0] for f in frames if f[2] == 6] == [2] and not fds, frames
    finally:
        os.close(host)
        s.close()
    r = fs(capsule, sandbox, "cat", "/tmp/direct")
    assert r.stdout == "through the direct socket\n"
    assert not any(t.startswith(d) for t in fd_targets(pid))


def test_direct_streams_dropped_half_way_leak_nothing(capsule, sandbox):
    """Clients that open direct reads and writes, take their sockets and go half way (or
    before STARTED) leave no descriptor behind in the agent or the shim, no temporary file,
    and the sandbox serving."""
    fs(capsule, sandbox, "write", "/tmp/big", input=os.urandom(3 << 20), text=False, check=True)
    pid = agent_pid(capsule, sandbox)
    shim = shim_pids_named(sandbox)
    assert len(shim) == 1, shim
    base_agent, base_shim = len(os.listdir(f"/proc/{pid}/fd")), len(os.listdir(f"/proc/{shim[0]}/fd"))
    for i in range(60):
        s = connect(capsule, sandbox)
        try:
            s.sendall(hello_frame() + frame(FS, 1, fs_msg(FS_READ, "/tmp/big", flags=FS_DIRECT)) +
                      frame(FS, 2, fs_msg(FS_WRITE, "/tmp/half", flags=FS_DIRECT)))
            if i % 3 == 0:
                continue  # gone before STARTED
            frames, fds = frames_until(s, lambda fr: sum(f[0] == 17 for f in fr) == 2)
            socks = [socket.socket(fileno=f) for f in fds]
            for k in socks:
                # Half a read taken, half a write sent (each socket is one or the other;
                # the wrong way fails at once).
                k.setblocking(False)
                for op in (lambda: k.recv(65536), lambda: k.send(b"x" * 65536)):
                    try:
                        op()
                    except OSError:
                        pass
                k.close()
        finally:
            s.close()
    assert_alive(capsule, sandbox)
    assert wait_until(lambda: len(os.listdir(f"/proc/{pid}/fd")) <= base_agent, 20), fd_targets(pid)
    assert wait_until(lambda: len(os.listdir(f"/proc/{shim[0]}/fd")) <= base_shim, 20)
    r = fs(capsule, sandbox, "ls", "/tmp")
    assert ".capsule-write-" not in r.stdout and "half" not in r.stdout, r.stdout
    r = fs(capsule, sandbox, "cat", "/tmp/big", text=False)
    assert r.returncode == 0 and len(r.stdout) == 3 << 20
