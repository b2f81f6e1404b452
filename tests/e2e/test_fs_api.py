"""The filesystem API through the C library: tests/e2e/fs_api_check.c, built with the project."""
import os
import subprocess

from tests.conftest import BUILD
from tests.conftest import settled_run_entries


def test_c_fs_api_streams_limits_abandoned_streams_and_large_lists(capsule):
    binary = os.path.join(BUILD, "tests", "e2e", "fs_api_check")
    r = subprocess.run([binary], env=capsule.env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    for check in ("stream-64mib", "read-limit", "abandoned-write", "abandoned-read", "list-5000", "errors", "small-writes",
                  "killed-writer", "direct-used", "direct-random", "concurrent"):
        assert f"ok {check}" in r.stdout
    # The ephemeral sandbox is gone with its handle.
    run = os.path.join(capsule.home, "run")
    assert settled_run_entries(run) == set()
