"""Hostile clients on a shim's control socket.

Each test talks to run/<name>/control.sock directly and sends something malformed or
abusive. The shim must answer with an ERROR frame and/or close the connection, never hang
(every read here has a deadline), and keep serving: afterwards `capsule exec NAME echo ok`
prints ok.
"""
import errno
import os
import select
import socket
import struct
import threading
import time

import pytest

from secutil import (CREDIT, DATA, ERROR, EXEC, EXEC_STDIN, EXIT, HELLO, STARTED, assert_alive, connect,
                     exec_frame, frame, hello_frame, parse_fields, parse_frames, read_until_quiet, tlv,
                     vmrss_kib)


def send_quietly(s, data):
    """sendall that tolerates the shim closing on us half-way."""
    try:
        s.sendall(data)
    except (BrokenPipeError, ConnectionResetError, socket.timeout):
        pass


def error_errno(payload):
    for tag, val in parse_fields(payload):
        if tag == 1 and len(val) == 4:
            return struct.unpack("<I", val)[0]
    return None


def talk(capsule, name, data, quiet=1.0, total=10.0, until=None):
    """Send DATA on a fresh connection; return (frames, closed)."""
    s = connect(capsule, name)
    try:
        send_quietly(s, data)
        buf, closed = read_until_quiet(s, quiet=quiet, total=total, until=until)
    finally:
        s.close()
    frames, rest = parse_frames(buf)
    assert rest == b"", f"the shim sent a partial frame: {rest[:64]!r}"
    return frames, closed


def assert_rejected(frames, closed, allowed=(HELLO, ERROR)):
    types = [f[0] for f in frames]
    assert all(t in allowed for t in types), f"unexpected reply frames: {frames}"
    assert closed or ERROR in types, f"bad input got neither an ERROR nor a close: {frames}"


def test_random_garbage_gets_error_or_close(capsule, sandbox):
    rnd = os.urandom(4096)
    frames, closed = talk(capsule, sandbox, rnd)
    assert_rejected(frames, closed, allowed=(ERROR, HELLO))
    # Garbage after a good HELLO as well.
    frames, closed = talk(capsule, sandbox, hello_frame() + b"\xff" * 64 + rnd)
    assert_rejected(frames, closed)
    assert closed, "a corrupt stream must end the connection"
    assert_alive(capsule, sandbox)


@pytest.mark.parametrize("before_hello", [True, False])
def test_header_claiming_2gib_payload_is_rejected(capsule, sandbox, before_hello):
    hdr = struct.pack("<IHHI", 2 << 30, DATA, 1, 1)
    pre = b"" if before_hello else hello_frame()
    frames, closed = talk(capsule, sandbox, pre + hdr + b"x" * 1024, quiet=3.0)
    assert_rejected(frames, closed)
    # A shim that waited for the 2 GiB payload would not have closed it.
    assert closed, "the shim kept a connection that announced a 2 GiB frame"
    assert_alive(capsule, sandbox)


def test_truncated_frame_then_close_leaves_shim_serving(capsule, sandbox):
    full = exec_frame(1, ["echo", "never"])
    for cut in (3, 11, 12, 20, len(full) - 1):
        s = connect(capsule, sandbox)
        send_quietly(s, hello_frame() + full[:cut])
        s.close()
    s = connect(capsule, sandbox)
    send_quietly(s, hello_frame()[:7])
    s.shutdown(socket.SHUT_WR)
    buf, closed = read_until_quiet(s, quiet=3.0)
    s.close()
    assert closed, "the shim did not close a client that hung up mid-frame"
    assert_alive(capsule, sandbox)


def test_truncated_frame_held_open_does_not_block_other_clients(capsule, sandbox):
    # A client that stops half-way through a frame (here: a header promising 1 MiB) must not
    # stall the shim's single event loop for anyone else.
    held = []
    try:
        for _ in range(4):
            s = connect(capsule, sandbox)
            send_quietly(s, hello_frame() + struct.pack("<IHHI", 1 << 20, EXEC, 0, 1) + b"\x01\x00")
            held.append(s)
        # A stalled loop would stay stalled while these four are held: no answer at all.
        assert_alive(capsule, sandbox, timeout=15)
    finally:
        for s in held:
            s.close()
    assert_alive(capsule, sandbox)


@pytest.mark.parametrize("ftype", [0, 7, 0x7777, 0xFFFF, 48])
def test_unknown_or_forbidden_frame_type_is_rejected(capsule, sandbox, ftype):
    # 48 (INIT) is a real type, but only the shim may send it, and only to the agent.
    frames, closed = talk(capsule, sandbox, hello_frame() + frame(ftype, 1, b"abc"))
    assert frames and frames[0][0] == HELLO, frames
    assert_rejected(frames[1:], closed, allowed=(ERROR,))
    assert closed or frames[1][2] in (0, 1), frames
    frames, closed = talk(capsule, sandbox, frame(ftype, 0, b""))
    assert_rejected(frames, closed, allowed=(ERROR,))
    assert_alive(capsule, sandbox)


@pytest.mark.parametrize("version", [0, 2, 0xFFFFFFFF])
def test_hello_with_wrong_version_is_refused(capsule, sandbox, version):
    frames, closed = talk(capsule, sandbox, hello_frame(version=version) + exec_frame(1, ["echo", "sneaky"]))
    assert [f[0] for f in frames] == [ERROR], frames
    assert error_errno(frames[0][3]) == errno.EPROTONOSUPPORT, frames
    assert closed
    assert_alive(capsule, sandbox)


def test_malformed_hello_is_refused(capsule, sandbox):
    for payload in (b"", tlv(1, b"\x01\x00"), struct.pack("<HI", 1, 1000) + b"\x01\x00\x00\x00"):
        frames, closed = talk(capsule, sandbox, frame(HELLO, 0, payload) + exec_frame(1, ["echo", "x"]))
        assert [f[0] for f in frames] == [ERROR], (payload, frames)
        assert closed
    assert_alive(capsule, sandbox)


def test_exec_before_hello_is_refused(capsule, sandbox):
    frames, closed = talk(capsule, sandbox, exec_frame(1, ["sh", "-c", "echo pwned > /tmp/pwned"]))
    assert [f[0] for f in frames] == [ERROR], frames
    assert closed
    r = capsule.run("exec", sandbox, "cat", "/tmp/pwned")
    assert r.returncode != 0 and "pwned" not in r.stdout, "EXEC before HELLO ran"
    assert_alive(capsule, sandbox)


def test_exec_with_no_args_is_refused(capsule, sandbox):
    has_error = lambda fr: any(f[0] == ERROR for f in fr)  # noqa: E731
    frames, closed = talk(capsule, sandbox, hello_frame() + frame(EXEC, 5, b""), quiet=3.0, until=has_error)
    types = [f[0] for f in frames]
    assert types == [HELLO, ERROR], frames
    assert frames[1][2] == 5, "the ERROR must be on the request's channel"
    # An env-only EXEC has no argv either.
    frames, closed = talk(capsule, sandbox, hello_frame() + frame(EXEC, 6, tlv(2, "A=B")), quiet=3.0, until=has_error)
    assert [f[0] for f in frames] == [HELLO, ERROR], frames
    assert_alive(capsule, sandbox)


def test_exec_on_channel_zero_or_in_use_is_refused(capsule, sandbox):
    frames, _ = talk(capsule, sandbox, hello_frame() + exec_frame(0, ["echo", "chan0"]), quiet=3.0,
                     until=lambda fr: any(f[0] == ERROR for f in fr))
    assert [f[0] for f in frames] == [HELLO, ERROR], frames
    s = connect(capsule, sandbox)
    try:
        send_quietly(s, hello_frame() + exec_frame(3, ["sleep", "5"]) + exec_frame(3, ["echo", "dup"]))
        buf, _ = read_until_quiet(s, quiet=3.0, until=lambda fr: any(f[0] == ERROR for f in fr))
    finally:
        s.close()
    frames, _ = parse_frames(buf)
    chan3 = [f for f in frames if f[2] == 3]
    assert any(f[0] == ERROR for f in chan3), frames
    assert not any(f[0] == DATA and b"dup" in f[3] for f in frames), "a second EXEC on a busy channel ran"
    assert_alive(capsule, sandbox)


def test_malformed_exec_fields_are_refused(capsule, sandbox):
    cases = {
        "field overruns payload": struct.pack("<HI", 1, 100) + b"echo",
        "NUL inside arg": tlv(1, b"ec\x00ho"),
        "truncated field header": tlv(1, "echo") + b"\x01\x00\x05",
        "flags of wrong size": tlv(1, "echo") + tlv(5, b"\x01"),
        "too many args": b"".join(tlv(1, "x") for _ in range(5000)),
        "arg over 64 KiB": tlv(1, "echo") + tlv(1, b"a" * (65 * 1024)),
    }
    for what, payload in cases.items():
        frames, _ = talk(capsule, sandbox, hello_frame() + frame(EXEC, 9, payload), quiet=3.0,
                         until=lambda fr: any(f[0] in (ERROR, STARTED, EXIT) for f in fr))
        types = [f[0] for f in frames]
        assert types[:1] == [HELLO] and ERROR in types and STARTED not in types, (what, frames)
    assert_alive(capsule, sandbox)


def test_stdin_data_past_credit_is_refused(capsule, sandbox):
    s = connect(capsule, sandbox, timeout=5)
    try:
        send_quietly(s, hello_frame() + exec_frame(1, ["sleep", "30"], flags=EXEC_STDIN))
        buf = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(f[0] == STARTED for f in parse_frames(buf)[0]):
            buf += s.recv(65536)
        assert any(f[0] == STARTED for f in parse_frames(buf)[0]), buf
        # The stream starts with 1 MiB of credit; sleep reads nothing, so at most a pipe's
        # worth comes back. 4 MiB is far past it.
        chunk = frame(DATA, 1, b"A" * (1 << 20), flags=0)

        def sender():
            for _ in range(4):
                send_quietly(s, chunk)

        t = threading.Thread(target=sender, daemon=True)
        t.start()
        more, closed = read_until_quiet(s, quiet=3.0, total=15.0)
        t.join(10)
    finally:
        s.close()
    frames, _ = parse_frames(buf + more)
    errs = [f for f in frames if f[0] == ERROR]
    assert errs or closed, f"stdin past its credit was accepted: {[f[:3] for f in frames]}"
    if errs:
        assert error_errno(errs[0][3]) == errno.EBADMSG, errs
    assert_alive(capsule, sandbox)
    r = capsule.run("exec", sandbox, "sh", "-c", "pgrep -x sleep || true")
    assert r.stdout.strip() == "", "the command of the cut-off client is still running"


def test_signal_to_agent_or_everyone_is_refused(capsule, sandbox):
    SIGNAL = 21
    s = connect(capsule, sandbox)
    try:
        payloads = [
            tlv(1, struct.pack("<I", 9)) + tlv(2, struct.pack("<I", 1)),            # SIGKILL pid 1
            tlv(1, struct.pack("<I", 9)) + tlv(2, struct.pack("<I", 0xFFFFFFFF)),   # kill(-1)
            tlv(1, struct.pack("<I", 15)) + tlv(2, struct.pack("<I", 0x80000001)),  # negative pid
            tlv(1, struct.pack("<I", 0)) + tlv(2, struct.pack("<I", 2)),            # signal 0
            tlv(1, struct.pack("<I", 4096)),                                       # no such signal
        ]
        data = hello_frame() + b"".join(frame(SIGNAL, 10 + i, p) for i, p in enumerate(payloads))
        send_quietly(s, data)
        want = {10 + i for i in range(len(payloads))}
        buf, _ = read_until_quiet(s, quiet=3.0, until=lambda fr: want <= {f[2] for f in fr if f[0] == ERROR})
    finally:
        s.close()
    frames, _ = parse_frames(buf)
    for i in range(len(payloads)):
        replies = [f[0] for f in frames if f[2] == 10 + i]
        assert replies == [ERROR], f"SIGNAL case {i} got {replies}: {frames}"
    assert_alive(capsule, sandbox)


def test_credit_flood_is_harmless(capsule, sandbox):
    s = connect(capsule, sandbox)
    try:
        credit = frame(CREDIT, 1, tlv(1, struct.pack("<I", 1)) + tlv(2, struct.pack("<I", 0xFFFFFFFF)))
        bad = frame(CREDIT, 1, tlv(1, struct.pack("<I", 7)) + tlv(2, struct.pack("<I", 0xFFFFFFFF)))
        send_quietly(s, hello_frame() + exec_frame(1, ["head", "-c", "3000000", "/dev/zero"]) +
                     (credit + bad) * 2000 + frame(CREDIT, 99, b"\x00"))
        got = 0
        exit_seen = False
        buf = b""
        deadline = time.monotonic() + 20
        s.settimeout(5)
        while time.monotonic() < deadline and not exit_seen:
            d = s.recv(1 << 20)
            if not d:
                break
            buf += d
            frames, buf = parse_frames(buf)
            for t, fl, ch, p in frames:
                if t == DATA and ch == 1 and (fl & 0xFF) == 1:
                    got += len(p)
                exit_seen |= t == EXIT and ch == 1
    finally:
        s.close()
    assert exit_seen and got == 3000000, (exit_seen, got)
    assert_alive(capsule, sandbox)


def _fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_1000_rapid_connections_leave_shim_serving(capsule, sandbox):
    shim = capsule.inspect(sandbox)["shim_pid"]
    before = _fd_count(shim)
    path = os.path.join(capsule.home, "run", sandbox, "control.sock")
    deadline = time.monotonic() + 60
    for i in range(1000):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        while True:
            # A full listen backlog answers EAGAIN to a non-blocking connect: the shim is
            # behind, not gone. Give it a moment, within an overall deadline.
            try:
                s.connect(path)
                break
            except BlockingIOError:
                assert time.monotonic() < deadline, f"the shim stopped accepting after {i} connections"
                time.sleep(0.01)
        if i % 3 == 1:
            send_quietly(s, hello_frame())
        elif i % 3 == 2:
            send_quietly(s, hello_frame() + exec_frame(1, ["true"]))
        s.close()
    assert_alive(capsule, sandbox)
    # Every one of those connections is gone again on the shim's side.
    after = None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        after = _fd_count(shim)
        if after <= before:
            break
        time.sleep(0.1)
    assert after <= before, f"shim fds went from {before} to {after}: connections leaked"


def test_20_concurrent_clients_all_succeed(capsule, sandbox):
    results = [None] * 20

    def worker(i):
        try:
            r = capsule.run("exec", sandbox, "echo", f"client-{i}", timeout=60)
            results[i] = (r.returncode, r.stdout.strip(), r.stderr)
        except Exception as e:  # noqa: BLE001 - the failure is reported below
            results[i] = (None, "", repr(e))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    bad = [(i, r) for i, r in enumerate(results) if r is None or r[0] != 0 or r[1] != f"client-{i}"]
    assert not bad, f"{len(bad)} of 20 concurrent execs failed: {bad[:5]}"


def test_client_that_grants_credit_but_never_reads_is_cut_off(capsule, sandbox):
    """A client can grant itself more credit than it reads; the shim must bound what it
    queues for that client (and drop it), not grow without limit."""
    shim = capsule.inspect(sandbox)["shim_pid"]
    base = vmrss_kib(shim)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(5)
    s.connect(os.path.join(capsule.home, "run", sandbox, "control.sock"))
    peak = base
    try:
        credit = frame(CREDIT, 1, tlv(1, struct.pack("<I", 1)) + tlv(2, struct.pack("<I", 0x7FFFFFFF)))
        send_quietly(s, hello_frame() + exec_frame(1, ["head", "-c", "400M", "/dev/zero"]))
        poller = select.poll()
        poller.register(s, select.POLLRDHUP)
        hung_up = False
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not hung_up:
            # Keep granting, never read: the agent may send, the shim must not keep it all.
            send_quietly(s, credit)
            rss = vmrss_kib(shim)
            if rss is None:
                break
            peak = max(peak, rss)
            hung_up = bool(poller.poll(20))
    finally:
        s.close()
    assert_alive(capsule, sandbox)
    assert hung_up, "the shim kept queueing for a client that does not read"
    assert peak - base < 48 * 1024, f"shim RSS grew by {(peak - base) // 1024} MiB for one non-reading client"


SIGNAL = 21


def _start(s, chan, argv, flags=0):
    send_quietly(s, exec_frame(chan, argv, flags=flags))
    buf, _ = read_until_quiet(s, quiet=5.0, until=lambda fr: any(f[0] == STARTED and f[2] == chan for f in fr))
    assert any(f[0] == STARTED and f[2] == chan for f in parse_frames(buf)[0]), buf
    return buf


def test_signal_frames_without_a_process_do_not_leak_channels(capsule, sandbox):
    """A SIGNAL on a fresh channel (no process behind it, pid 0) gets no final reply from the
    agent; the shim must not keep such channels forever. The shim has 4096 channel slots:
    after more SIGNALs than that, from a client that has since gone away, exec must still
    work."""
    s = connect(capsule, sandbox)
    try:
        sig = tlv(1, struct.pack("<I", 15))
        send_quietly(s, hello_frame() + b"".join(frame(SIGNAL, 1000 + i, sig) for i in range(4200)))
        read_until_quiet(s, quiet=1.0)
    finally:
        s.close()
    time.sleep(0.3)
    assert_alive(capsule, sandbox)


@pytest.mark.parametrize("how", ["data_on_stdout_stream", "signal_0", "signal_with_pid"])
def test_error_reply_on_a_live_channel_does_not_orphan_its_command(capsule, sandbox, how):
    """Some requests on a running command's channel get an ERROR (or OK) from the agent
    without ending the command. The shim must not take that reply as the end of the channel:
    if it does, the command loses its client (no output, no EXIT) and is not killed when the
    client goes, as the commands of a departed client must be."""
    s = connect(capsule, sandbox)
    try:
        send_quietly(s, hello_frame())
        _start(s, 1, ["sh", "-c", "echo ready; exec sleep 1000"], flags=EXEC_STDIN)
        if how == "data_on_stdout_stream":
            send_quietly(s, frame(DATA, 1, b"x", flags=1))
        elif how == "signal_0":
            send_quietly(s, frame(SIGNAL, 1, tlv(1, struct.pack("<I", 0))))
        else:
            # SIGCONT to the sandbox's pid 2 (harmless), sent on the command's own channel
            send_quietly(s, frame(SIGNAL, 1, tlv(1, struct.pack("<I", 18)) + tlv(2, struct.pack("<I", 2))))
        read_until_quiet(s, quiet=1.0)
    finally:
        s.close()

    def sleep_gone():
        r = capsule.run("exec", sandbox, "sh", "-c", "pgrep -x sleep || true")
        return r.returncode == 0 and r.stdout.strip() == ""
    deadline = time.monotonic() + 5
    while not sleep_gone():
        assert time.monotonic() < deadline, (
            f"after a {how} request, the command outlived its client: the shim dropped the channel")
        time.sleep(0.2)
    assert_alive(capsule, sandbox)


def test_pipelined_hello_is_answered_in_front_of_the_first_answer(capsule, sandbox):
    """HELLO and EXEC in one write (the CLI's exec, src/lib/client.c): the shim's HELLO comes
    first, in front of the request's frames; a HELLO sent alone is answered at once (a client
    that waits for it before its first request)."""
    frames, closed = talk(capsule, sandbox, hello_frame() + exec_frame(1, ["echo", "x"]),
                          until=lambda fs: any(f[0] == EXIT for f in fs))
    types = [f[0] for f in frames]
    assert types[0] == HELLO and STARTED in types and types[-1] == EXIT, frames
    assert b"x\n" in b"".join(f[3] for f in frames if f[0] == DATA), frames

    frames, closed = talk(capsule, sandbox, hello_frame(), until=lambda fs: bool(fs))
    assert [f[0] for f in frames] == [HELLO] and not closed, frames


def test_pipelined_hello_with_a_refused_request_then_an_exec(capsule, sandbox):
    """HELLO and a request the agent refuses (a SIGNAL on a fresh channel) in one write, then an
    EXEC on the same connection: one HELLO, first, and the EXEC still runs."""
    s = connect(capsule, sandbox)
    try:
        send_quietly(s, hello_frame() + frame(SIGNAL, 5, tlv(1, struct.pack("<I", 15))))
        time.sleep(0.2)
        send_quietly(s, exec_frame(1, ["echo", "y"]))
        buf, closed = read_until_quiet(s, until=lambda fs: any(f[0] == EXIT for f in fs))
    finally:
        s.close()
    frames, rest = parse_frames(buf)
    types = [f[0] for f in frames]
    assert rest == b"" and types[0] == HELLO and types.count(HELLO) == 1 and types[-1] == EXIT, frames
    assert b"y\n" in b"".join(f[3] for f in frames if f[0] == DATA), frames


def test_pipelined_hello_then_garbage_gets_hello_then_error(capsule, sandbox):
    """HELLO and a frame the shim refuses in one write: the HELLO still comes, then the ERROR."""
    frames, closed = talk(capsule, sandbox, hello_frame() + frame(0x7777, 1, b"junk"))
    types = [f[0] for f in frames]
    assert types[:1] == [HELLO] and ERROR in types, frames
    assert_alive(capsule, sandbox)


def one_command_hello():
    """A client's HELLO with CP_HELLO_ONE_COMMAND (tag 3, flags 1): the CLI's exec."""
    return frame(HELLO, 0, tlv(1, struct.pack("<I", 1)) + tlv(2, "client") + tlv(3, struct.pack("<I", 1)))


def test_a_one_command_connection_is_closed_by_the_shim_after_the_end(capsule, sandbox):
    """With CP_HELLO_ONE_COMMAND the shim closes the connection once the command's EXIT is
    sent (the client's own close then wakes no one), after every frame of it; a command that
    fails to start ends it the same way. Without the flag it stays open."""
    frames, closed = talk(capsule, sandbox, one_command_hello() + exec_frame(1, ["sh", "-c", "echo out; exit 3"]),
                          quiet=5, total=20)
    types = [f[0] for f in frames]
    assert closed and types[0] == HELLO and STARTED in types and types[-1] == EXIT, frames
    assert b"out\n" in b"".join(f[3] for f in frames if f[0] == DATA), frames
    exit_fields = dict(parse_fields(frames[-1][3]))
    assert struct.unpack("<i", exit_fields[1])[0] == 3, exit_fields

    frames, closed = talk(capsule, sandbox, one_command_hello() + exec_frame(1, ["/no/such/program"]), quiet=5, total=20)
    assert closed and [f[0] for f in frames] == [HELLO, ERROR], frames

    frames, closed = talk(capsule, sandbox, hello_frame() + exec_frame(1, ["true"]), quiet=0.3, total=10)
    assert not closed and [f[0] for f in frames][-1] == EXIT, frames
    assert_alive(capsule, sandbox)


def test_a_handle_runs_again_after_a_last_command(capsule, sandbox):
    """The C API's `last` (the CLI's exec): the shim closes that command's connection at its
    end, and a later call on the same handle opens a new one rather than failing on the closed
    one (tests/e2e/exec_opts.c runs the command twice on one handle)."""
    import subprocess
    from tests.conftest import BUILD
    r = subprocess.run([os.path.join(BUILD, "tests", "e2e", "exec_opts"), sandbox, "last", "-", "sh", "-c",
                        "echo run; exit 4"], env=capsule.env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 4 and r.stdout == "run\nrun\n", (r.returncode, r.stdout, r.stderr)
