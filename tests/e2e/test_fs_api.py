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
                  "killed-writer", "direct-used", "direct-random", "concurrent",
                  # small round trips through the library's and the shim's polls (docs/performance.md,
                  # "Small files across CPUs"): each CPU, eight clients, paused, the end while busy
                  "small-each-cpu", "small-concurrent", "small-paused", "small-end-while-busy"):
        assert f"ok {check}" in r.stdout
    # Stopped by the program (small-end-while-busy): nothing of it is left.
    run = os.path.join(capsule.home, "run")
    assert settled_run_entries(run) == set()
