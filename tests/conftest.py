"""Shared fixtures for the end-to-end and security suites.

Every test runs the real CLI from the build tree ($CAPSULE_BUILD, default ./build) against a
private $CAPSULE_HOME, and cleans up what it started by the sandbox's own name.
"""
import json
import os
import shutil
import subprocess
import tempfile
import uuid

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("CAPSULE_BUILD", os.path.join(ROOT, "build"))
CAPSULE = os.path.join(BUILD, "capsule")


@pytest.fixture(scope="session")
def capsule_home():
    # Below /var/tmp, not /tmp: some tests fill tmpfs-backed paths on purpose.
    home = tempfile.mkdtemp(prefix="capsule-test-", dir="/var/tmp")
    os.chmod(home, 0o711)
    yield home
    # Whatever a test left running is stopped by name before the folder goes.
    run = os.path.join(home, "run")
    if os.path.isdir(run):
        for name in os.listdir(run):
            subprocess.run([CAPSULE, "rm", "-f", name], env=_env(home), capture_output=True, timeout=60)
    shutil.rmtree(home, ignore_errors=True)


# Tests never reach a registry beyond loopback: an image name that is not in the store makes
# capsule pull it (docker.io for short names), so registry traffic goes to a dead proxy on
# loopback (no DNS lookup either) unless it is for a loopback registry a test started.
NO_INTERNET = {"https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
               "http_proxy": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
               "no_proxy": "127.0.0.1,localhost", "NO_PROXY": "127.0.0.1,localhost"}


def _env(home, extra=None):
    env = dict(os.environ)
    env["CAPSULE_HOME"] = home
    env.pop("CAPSULE_PROGRESS", None)
    env.update(NO_INTERNET)
    if extra:
        env.update(extra)
    return env


class Capsule:
    """Runs the capsule CLI against the test's home."""

    def __init__(self, home):
        self.home = home
        self.binary = CAPSULE
        self.build = BUILD
        self.env = _env(home)
        self._names = []

    def run(self, *args, input=None, timeout=120, check=False, text=True, env=None):
        e = dict(self.env)
        if env:
            e.update(env)
        r = subprocess.run([CAPSULE, *args], input=input, capture_output=True, timeout=timeout, text=text, env=e)
        if check and r.returncode != 0:
            raise AssertionError(f"capsule {' '.join(args)} exited {r.returncode}: {r.stderr}")
        return r

    def popen(self, *args, **kw):
        kw.setdefault("env", self.env)
        return subprocess.Popen([CAPSULE, *args], **kw)

    def unique_name(self, prefix="t"):
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self._names.append(name)
        return name

    def create(self, *args, name=None):
        name = name or self.unique_name()
        if name not in self._names:
            self._names.append(name)
        r = self.run("create", "--name", name, *args)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == name
        return name

    def inspect(self, name):
        r = self.run("inspect", name, check=True)
        return json.loads(r.stdout)

    def ps(self, all=True):
        r = self.run("ps", "--json", *(["-a"] if all else []), check=True)
        return json.loads(r.stdout)

    def cleanup(self):
        for name in self._names:
            self.run("rm", "-f", name, timeout=60)


@pytest.fixture
def capsule(capsule_home):
    c = Capsule(capsule_home)
    yield c
    c.cleanup()


@pytest.fixture
def sandbox(capsule):
    """A running named sandbox for tests that exec into one."""
    return capsule.create()


# vm isolation boots a kernel: seconds each under TCG. Tests marked vm_slow run only in
# `make check-vm` (CAPSULE_CHECK_VM=1); `make check` runs the vm tests that boot once each.
def pytest_configure(config):
    config.addinivalue_line("markers", "vm_slow: a vm-isolation test that runs only in make check-vm")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("CAPSULE_CHECK_VM") == "1":
        return
    slow = [i for i in items if i.get_closest_marker("vm_slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [i for i in items if not i.get_closest_marker("vm_slow")]
