"""An ephemeral sandbox (capsule run) dies with the process that made it, even on SIGKILL."""
import os
import signal
import subprocess

import pytest

from .helpers import host_procs_in, leftovers, run_dir, sandbox_gone, wait_until


def _sleeps(name):
    return [p for p in host_procs_in(name) if p[1] == "sleep"]


def _start_run(capsule, name, *cmd):
    p = capsule.popen("run", "--name", name, "--", *cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                      stderr=subprocess.PIPE)
    if not wait_until(lambda: _sleeps(name) or p.poll() is not None, 20):
        p.kill()
        p.wait()
        pytest.fail(f"the sandbox's sleep never started: {leftovers(capsule, name)}")
    if p.poll() is not None:
        pytest.fail(f"capsule run exited early ({p.returncode}): {p.stderr.read()!r}")
    return p


def _not_running(capsule, name):
    if not os.path.exists(run_dir(capsule, name)):
        return True
    return {s["name"]: s["state"] for s in capsule.ps(all=True)}.get(name) != "running"


@pytest.mark.parametrize("signo", [signal.SIGKILL, signal.SIGTERM])
def test_killing_the_run_cli_ends_the_sandbox(capsule, signo):
    name = capsule.unique_name("ekill")
    p = _start_run(capsule, name, "sleep", "100")
    try:
        listed = {s["name"]: s for s in capsule.ps(all=False)}
        assert listed[name]["state"] == "running"
        assert listed[name]["detached"] is False
        os.kill(p.pid, signo)
        p.wait(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stderr.close()
    assert wait_until(lambda: _not_running(capsule, name), 10), leftovers(capsule, name)
    assert wait_until(lambda: not _sleeps(name), 10), host_procs_in(name)
    # In the end nothing is left: ps cleans up what a killed creator left behind.
    assert wait_until(lambda: (capsule.ps(all=True), sandbox_gone(capsule, name))[1], 10), leftovers(capsule, name)
    if signo == signal.SIGTERM:
        # SIGTERM reaches the command (docker's sig-proxy): the CLI exits with its status.
        assert p.returncode == 143


def test_killing_the_run_cli_ends_background_children_too(capsule):
    name = capsule.unique_name("ekillc")
    p = _start_run(capsule, name, "sh", "-c", "sleep 100 & sleep 100 & wait")
    assert wait_until(lambda: len(_sleeps(name)) == 2, 10), host_procs_in(name)
    try:
        p.kill()
        p.wait(timeout=20)
    finally:
        p.stderr.close()
    assert wait_until(lambda: not host_procs_in(name), 10), host_procs_in(name)
    assert wait_until(lambda: _not_running(capsule, name), 10), leftovers(capsule, name)
