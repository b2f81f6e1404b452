"""A handle opened by name keeps the run folder it found running for its first connection
(src/lib/sandbox.c, run_dir): that folder may be gone by the time the handle is used. The
connection then falls back to a fresh walk, which finds whatever runs under the name now."""
import os
import shutil
import socket
import subprocess
import uuid

import pytest

from capsule import SandboxNotRunning, SyncSandbox

from sdkutil import BUILD, HOME, sdk_env


def cli(*args, check=True):
    r = subprocess.run([os.path.join(BUILD, "capsule"), *args], capture_output=True, text=True, timeout=120,
                       env=sdk_env())
    if check:
        assert r.returncode == 0, r.stderr
    return r


@pytest.fixture
def name():
    n = f"sdk-open-{uuid.uuid4().hex[:8]}"
    yield n
    cli("rm", "-f", n, check=False)


def test_a_handle_whose_sandbox_was_replaced_reaches_the_new_one(name):
    cli("run", "-d", "--name", name, "--", "sleep", "infinity")
    cli("exec", name, "--", "sh", "-c", "echo old > /tmp/which")
    h = SyncSandbox.open(name)
    cli("rm", "-f", name)
    cli("run", "-d", "--name", name, "--", "sleep", "infinity")
    cli("exec", name, "--", "sh", "-c", "echo new > /tmp/which")
    assert h.execute("cat /tmp/which").stdout == "new\n"


def test_a_handle_whose_sandbox_stopped_says_not_running(name):
    cli("run", "-d", "--name", name, "--", "sleep", "infinity")
    h = SyncSandbox.open(name)
    cli("stop", "-t", "0", name)
    with pytest.raises(SandboxNotRunning) as e:
        h.execute("true")
    assert str(e.value) == f"sandbox '{name}' is not running"


def test_a_socket_of_another_user_at_the_path_is_never_spoken_to(name):
    """The library connects by the socket's path, which names whatever lies there now: the
    folders above the home may be someone else's to swap. A socket that another user's process
    listens on is left at once, without a byte, and the handle's own folder is used."""
    cli("run", "-d", "--name", name, "--", "sleep", "infinity")
    h = SyncSandbox.open(name)
    run = os.path.join(HOME, "run")
    real, fake = os.path.join(run, name + "-moved"), os.path.join(run, name)
    os.rename(fake, real)
    os.mkdir(fake)
    os.chown(fake, 65534, 65534)
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(rd)
            os.chdir(fake)
            os.setgid(65534)
            os.setuid(65534)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind("control.sock")
            s.listen(4)
            os.write(wr, b"L")
            s.settimeout(60)
            c, _ = s.accept()
            c.settimeout(5)
            # The end of the stream at once, or the first bytes of whatever was said.
            os.write(wr, b"A" + c.recv(4096))
        finally:
            os._exit(0)
    os.close(wr)
    try:
        assert os.read(rd, 1) == b"L"
        assert h.execute("hostname").stdout == name + "\n"
        # The impostor was connected to, and heard nothing before the hang-up.
        assert os.read(rd, 4096) == b"A"
    finally:
        os.close(rd)
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
        shutil.rmtree(fake, ignore_errors=True)
        os.rename(real, fake)
