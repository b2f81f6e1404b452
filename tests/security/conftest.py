"""Fixtures for the adversarial suite (tests/security); helpers are in secutil.py.

The tests that only probe share one sandbox per module (mod_capsule, shared_sandbox), which
keeps the suite fast; the rest use the per-test fixtures of tests/conftest.py."""
import os
import pwd
import subprocess
import uuid

import pytest

from secutil import Capsule


@pytest.fixture(scope="module")
def mod_capsule(capsule_home):
    c = Capsule(capsule_home)
    yield c
    c.cleanup()


@pytest.fixture(scope="module")
def shared_sandbox(mod_capsule):
    """One running sandbox shared by a module's read-only probes."""
    return mod_capsule.create()


class OtherUser:
    """A second, unprivileged host account: what another local user of the machine can do."""

    def __init__(self, name):
        pw = pwd.getpwnam(name)
        self.name, self.uid, self.gid, self.home = name, pw.pw_uid, pw.pw_gid, pw.pw_dir

    def run(self, argv, **kw):
        """ARGV as this user (its own uid, gid and groups, no capabilities), like a login would."""
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("timeout", 60)
        return subprocess.run(["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups",
                               "--reset-env", "--"] + list(argv), cwd="/", **kw)


@pytest.fixture(scope="session")
def other_user():
    """A host user made for this run (useradd gives it subuid/subgid ranges) and removed after."""
    name = "capt" + uuid.uuid4().hex[:8]
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name], check=True, capture_output=True)
    try:
        yield OtherUser(name)
    finally:
        # Its processes first, picked by its uid alone: nothing else is ours to end.
        uid = pwd.getpwnam(name).pw_uid
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if os.stat(f"/proc/{pid}").st_uid == uid:
                    os.kill(int(pid), 9)
            except (FileNotFoundError, ProcessLookupError):
                pass
        subprocess.run(["userdel", "--remove", name], capture_output=True)
