"""--idle-pause: the shim pauses a sandbox that has been idle that long (no command, session,
file operation or watch open: the idle of capsule_sandbox_stats), and the next request that
needs its processes resumes it first, so its users never see the pause; a client's own pause
is still held and refused through."""
import socket
import subprocess
import time

import pytest

from .helpers import assert_capsule_error
from .test_pause import PAUSED_LINE, size, ticking, wait_growing

# Long enough that a command's round trip on a loaded machine ends well inside it (a pause
# between a test's two commands would still be transparent: only slower).
IDLE = "2s"


def wait_paused_by(capsule, name, by, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = capsule.inspect(name)
        if info["state"] == "paused":
            assert info["paused_by"] == by, info
            return
        time.sleep(0.1)
    raise AssertionError(f"sandbox {name} was not paused in {timeout} s: {capsule.inspect(name)}")


@pytest.mark.both_levels
def test_idle_sandbox_is_paused_and_the_next_command_resumes_it(capsule, tmp_path):
    name, tick = ticking(capsule, tmp_path, "--idle-pause", IDLE)
    info = capsule.inspect(name)
    assert info["idle_pause_ms"] == 2000
    # The detached loop runs on, but no client has anything open: the sandbox is idle.
    wait_paused_by(capsule, name, "idle")
    held = size(tick)
    time.sleep(0.5)
    assert size(tick) == held, "the loop went on writing while the sandbox was paused"
    # A command is answered as if nothing had happened, and the loop runs again.
    r = capsule.run("exec", name, "echo", "hi")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hi\n"
    wait_growing(tick)
    wait_paused_by(capsule, name, "idle")
    r = capsule.run("fs", name, "cat", "/out/tick")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("t\n")
    wait_paused_by(capsule, name, "idle")
    r = capsule.run("stop", name, timeout=60)
    assert r.returncode == 0, r.stderr


def test_a_running_command_keeps_the_sandbox_running(capsule, tmp_path):
    name = capsule.create("--idle-pause", "1s")
    # The command outlives the idle time several times over; had the sandbox been paused
    # under it, the date it prints after its sleep would have waited for a resume that no
    # one asks for, and the exec would hang past its timeout.
    proc = capsule.popen("exec", name, "sh", "-c", "sleep 4; echo done", stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    seen = set()
    while proc.poll() is None:
        seen.add(capsule.inspect(name)["state"])
        time.sleep(0.2)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out == "done\n"
    assert seen == {"running"}
    wait_paused_by(capsule, name, "idle")


def test_a_clients_pause_of_an_idle_paused_sandbox_is_held(capsule, tmp_path):
    name, tick = ticking(capsule, tmp_path, "--idle-pause", IDLE)
    wait_paused_by(capsule, name, "idle")
    r = capsule.run("pause", name)
    assert r.returncode == 0, r.stderr
    info = capsule.inspect(name)
    assert info["state"] == "paused" and info["paused_by"] == "user"
    r = capsule.run("exec", name, "true")
    assert_capsule_error(r)
    assert r.stderr.strip() == PAUSED_LINE.format(name), r.stderr
    r = capsule.run("resume", name)
    assert r.returncode == 0, r.stderr
    info = capsule.inspect(name)
    assert info["state"] == "running" and info["paused_by"] is None
    wait_growing(tick)
    # Resumed by its client, it is idle again, and paused again by the shim.
    wait_paused_by(capsule, name, "idle")


def test_a_forwarded_connection_resumes_an_idle_paused_sandbox(capsule, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    name = capsule.create("--idle-pause", IDLE, "-p", f"{port}:8000")
    r = capsule.run("exec", "-d", name, "python3", "-c",
                    "import socket\n"
                    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
                    "s.bind(('127.0.0.1', 8000)); s.listen()\n"
                    "while True:\n"
                    "    c, _ = s.accept(); c.sendall(b'pong\\n'); c.close()\n")
    assert r.returncode == 0, r.stderr
    wait_paused_by(capsule, name, "idle")
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as c:
                data = c.makefile("rb").readline()
            if data == b"pong\n":
                break
        except OSError:
            pass
        # The server may not have been listening yet when the pause came: the first
        # connection then finds nothing inside.
        assert time.monotonic() < deadline, "no answer through the forward"
        time.sleep(0.2)
    assert data == b"pong\n"


@pytest.mark.parametrize("value,message", [
    ("50ms", "capsule: idle pause 50 ms is too short (minimum 100 ms; 0 turns it off)"),
    ("soon", "invalid duration 'soon'"),
])
def test_idle_pause_errors_are_one_line(capsule, value, message):
    r = capsule.run("create", "--idle-pause", value)
    assert_capsule_error(r)
    assert message in r.stderr, r.stderr


def test_idle_pause_0_is_off(capsule):
    name = capsule.create("--idle-pause", "0")
    info = capsule.inspect(name)
    assert info["idle_pause_ms"] == 0 and info["paused_by"] is None
