"""The C API end to end: tests/e2e/api_check.c, built with the project."""
import os
import subprocess

from tests.conftest import BUILD
from tests.conftest import settled_run_entries


def test_c_api_exec_reuse_threads_free_and_stop(capsule):
    binary = os.path.join(BUILD, "tests", "e2e", "api_check")
    r = subprocess.run([binary], env=capsule.env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    for check in ("create", "sequential", "free-kills", "stdin", "threads", "errors", "stop"):
        assert f"ok {check}" in r.stdout
    # The ephemeral sandbox is gone with its handle: nothing left in run/.
    run = os.path.join(capsule.home, "run")
    assert settled_run_entries(run) == set()
