"""The host's tree after a container's pivot_root: the old root is stacked on the sandbox's
root until it is detached (container_setup_rootfs), and until then "/.." leads into it, even
resolved in the root (RESOLVE_IN_ROOT, as the agent's file API resolves paths). A sandbox's
first command and its first file request must find it gone. Both tests fail when the detach
is left out."""
import json
import os
import shutil
import uuid

import pytest

# What a command sees: how many mounts sit on "/" (the old root made two), whether "/.." is
# "/", and whether the host's marker is reachable through "/..".
PROBE = r"""
import json, os, sys
marker = sys.argv[1]
points = [line.split()[4] for line in open("/proc/self/mountinfo")]
root, up = os.stat("/"), os.stat("/..")
print(json.dumps({"root_mounts": points.count("/"),
                  "dotdot_is_root": (root.st_dev, root.st_ino) == (up.st_dev, up.st_ino),
                  "marker_via_dotdot": os.path.exists("/.." + marker),
                  "marker": os.path.exists(marker)}))
"""


@pytest.fixture
def host_marker():
    """A folder on the host's root file system, at a path the sandbox's own root lacks."""
    path = f"/var/tmp/capsule-old-root-{uuid.uuid4().hex}"
    os.mkdir(path)
    with open(os.path.join(path, "secret"), "w") as f:
        f.write("host\n")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_first_command_finds_the_old_root_detached(capsule, host_marker):
    # `run`: the command is the fresh sandbox's first, sent right behind the create's OK.
    r = capsule.run("run", "--", "python3", "-c", PROBE, host_marker)
    assert r.returncode == 0, r.stderr
    seen = json.loads(r.stdout.strip().splitlines()[-1])
    assert seen == {"root_mounts": 1, "dotdot_is_root": True, "marker_via_dotdot": False, "marker": False}, seen


def test_first_file_request_finds_the_old_root_detached(capsule, host_marker):
    name = capsule.create()
    # The sandbox's first request: the agent resolves it with RESOLVE_IN_ROOT from "/".
    r = capsule.run("fs", name, "cat", f"/..{host_marker}/secret")
    assert r.returncode != 0 and "host" not in r.stdout, (r.returncode, r.stdout, r.stderr)
    assert "No such file" in r.stderr, r.stderr
    r = capsule.run("fs", name, "ls", "--json", "/..")
    assert r.returncode == 0, r.stderr
    r2 = capsule.run("fs", name, "ls", "--json", "/")
    assert r2.returncode == 0, r2.stderr
    names = lambda out: sorted(e["name"] for e in json.loads(out))
    assert names(r.stdout) == names(r2.stdout)
