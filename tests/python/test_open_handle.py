"""A handle opened by name keeps the run folder it found running for its first connection
(src/lib/sandbox.c, run_dir): that folder may be gone by the time the handle is used. The
connection then falls back to a fresh walk, which finds whatever runs under the name now."""
import os
import subprocess
import uuid

import pytest

from capsule import SandboxNotRunning, SyncSandbox

from sdkutil import BUILD, sdk_env


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
