"""capsule-oci's monitor, the pid podman and containerd wait on, against what the sandbox's side
can say: it ends as the process ended, but an exit status no process can have (ended by a stop
signal) is not raised on itself, which would leave the monitor stopped and its caller waiting
for ever. The agent's answers stand for a vm's guest, which is not ours (the hostile agent of
tests/e2e/hostile_agent.c, as in test_vm_hostile_guest.py)."""
import os
import re
import shutil
import subprocess

from tests.conftest import BUILD
from tests.e2e.test_oci import bundle, oci, set_config  # noqa: F401 (fixtures)


def test_a_stop_signal_in_an_exit_status_does_not_stop_the_monitor(oci, bundle, tmp_path):  # noqa: F811
    libexec = tmp_path / "libexec"
    libexec.mkdir()
    agent = os.path.join(BUILD, "tests", "e2e", "hostile-agent")
    shutil.copy(agent, libexec / "capsule-agent")
    # The hostile agent is linked dynamically: the bundle's root holds its loader and libraries.
    libs = subprocess.run(["ldd", agent], capture_output=True, text=True, check=True).stdout
    for path in re.findall(r"(/\S+)\s+\(0x", libs):
        dst = os.path.join(bundle, "rootfs", path.lstrip("/"))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy(os.path.realpath(path), dst)
    set_config(bundle, args=["stop-exit"])
    r = subprocess.run([os.path.join(BUILD, "capsule-oci"), "--root", oci.root, "run", "--bundle", bundle, "stopx"],
                       env=dict(oci.env, CAPSULE_LIBEXEC=str(libexec)), capture_output=True, text=True, timeout=60)
    assert r.returncode == 128 + 19, (r.returncode, r.stderr)
