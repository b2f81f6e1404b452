"""Helpers of the Python SDK's tests (tests/python); the fixtures are in conftest.py.

The library reads $CAPSULE_HOME once per process, so importing this module (conftest.py does,
before any test module imports capsule) sets a private home before the package makes any
call, and points $CAPSULE_LIB at the build tree's library.
"""
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("CAPSULE_BUILD", os.path.join(ROOT, "build"))
CAPSULE = os.path.join(BUILD, "capsule")
BINDINGS = os.path.join(ROOT, "bindings", "python")

# mkdtemp's 0700 is what capsule keeps its home at: sandboxes get what they need by fd.
HOME = tempfile.mkdtemp(prefix="capsule-sdk-test-", dir="/var/tmp")
os.environ["CAPSULE_HOME"] = HOME
os.environ["CAPSULE_LIB"] = os.path.join(BUILD, "libcapsule.so")
# A path never made, not the host's capsule.json (docs/config.md): its defaults would change
# what tests see.
os.environ["CAPSULE_CONFIG"] = os.path.join(HOME, "capsule.json")
os.environ.pop("CAPSULE_PROGRESS", None)
# The same dead proxy as tests/conftest.py's: no registry traffic leaves loopback.
_spec = importlib.util.spec_from_file_location("capsule_tests_root_conftest_sdk", os.path.join(ROOT, "tests", "conftest.py"))
_root = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_root)
os.environ.update(_root.NO_INTERNET)
assert_accel_as_the_host_allows = _root.assert_accel_as_the_host_allows
guest_kernel = _root.guest_kernel
if BINDINGS not in sys.path:
    sys.path.insert(0, BINDINGS)


def sdk_env(home=HOME, extra=None):
    """The environment for a Python subprocess that uses the SDK against HOME."""
    env = dict(os.environ)
    env["CAPSULE_HOME"] = home
    env["CAPSULE_LIB"] = os.path.join(BUILD, "libcapsule.so")
    env["PYTHONPATH"] = BINDINGS + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if extra:
        env.update(extra)
    return env


def clean_home(home):
    """Remove every pool, sandbox and volume under HOME by name, then HOME itself."""
    env = dict(os.environ, CAPSULE_HOME=home)
    # Pools first: their keepers stop their ready sandboxes.
    pools = os.path.join(home, "pools")
    if os.path.isdir(pools):
        for name in os.listdir(pools):
            if not name.startswith("."):
                subprocess.run([CAPSULE, "pool", "rm", name], env=env, capture_output=True, timeout=300)
    run = os.path.join(home, "run")
    if os.path.isdir(run):
        for name in os.listdir(run):
            subprocess.run([CAPSULE, "rm", "-f", name], env=env, capture_output=True, timeout=60)
    vols = os.path.join(home, "volumes")
    if os.path.isdir(vols):
        for name in os.listdir(vols):
            if not name.startswith("."):
                subprocess.run([CAPSULE, "volume", "rm", name], env=env, capture_output=True, timeout=60)
    shutil.rmtree(home, ignore_errors=True)


settled_run_entries = _root.settled_run_entries


def run_entries():
    return settled_run_entries(os.path.join(HOME, "run"))


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is gone for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# The e2e suite's image helpers (layers, OCI layouts, a registry fixture), loaded by path:
# tests/e2e is a package of its own.
_spec = importlib.util.spec_from_file_location("capsule_sdk_imageutil", os.path.join(ROOT, "tests", "e2e", "imageutil.py"))
imageutil = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(imageutil)


def agent_is_static():
    return imageutil.agent_is_static(BUILD)
