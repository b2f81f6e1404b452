"""Fixtures for the adversarial suite (tests/security); helpers are in secutil.py.

The tests that only probe share one sandbox per module (mod_capsule, shared_sandbox), which
keeps the suite fast; the rest use the per-test fixtures of tests/conftest.py."""
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
