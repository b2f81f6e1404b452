"""Small file operations round trip after round trip (tests/e2e/fs_small_check.c): the
library's and the shim's poll before sleeping (docs/performance.md, "Small files across
CPUs") must leave the bytes, the errors, a pause and the sandbox's end as they were, with
the client on each CPU in turn and eight clients at once. No timing is asserted."""
import os
import subprocess

from tests.conftest import BUILD
from tests.conftest import settled_run_entries


def test_small_round_trips_on_each_cpu_concurrent_paused_and_ended(capsule):
    binary = os.path.join(BUILD, "tests", "e2e", "fs_small_check")
    r = subprocess.run([binary], env=capsule.env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    for check in ("each-cpu", "concurrent", "paused", "end-while-busy"):
        assert f"ok {check}" in r.stdout
    # Stopped by the program: nothing of it is left.
    assert settled_run_entries(os.path.join(capsule.home, "run")) == set()
