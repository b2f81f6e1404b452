"""Fixtures for the Python SDK's tests; helpers are in sdkutil.py.

Everything a test starts is cleaned up by name: SDK sandboxes are ephemeral (stop removes
them), and what is left in the private home at the end is removed with `capsule rm -f NAME`
and `capsule volume rm NAME`.
"""
import os
import shutil
import tempfile

import pytest

from sdkutil import HOME, clean_home, imageutil


@pytest.fixture(scope="session")
def capsule_home():
    # Overrides tests/conftest.py's: the SDK in this process is bound to HOME.
    yield HOME
    clean_home(HOME)


@pytest.fixture(autouse=True, scope="session")
def _home_cleanup(capsule_home):
    yield


@pytest.fixture
def hostdir():
    """A fresh host folder (below /var/tmp: not sensitive, not tmpfs), removed afterwards."""
    d = tempfile.mkdtemp(prefix="capsule-sdk-host-", dir="/var/tmp")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def registry():
    """A docker-registry on loopback (tests/e2e/imageutil.py) for a module's images."""
    root = tempfile.mkdtemp(prefix="capsule-sdk-registry-", dir="/var/tmp")
    reg = imageutil.Registry(root)
    yield reg
    reg.stop()
    shutil.rmtree(root, ignore_errors=True)
