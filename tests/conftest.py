"""Shared fixtures for the end-to-end and security suites.

Every test runs the real CLI from the build tree ($CAPSULE_BUILD, default ./build) against a
private $CAPSULE_HOME, and cleans up what it started by the sandbox's own name.
"""
import glob
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("CAPSULE_BUILD", os.path.join(ROOT, "build"))
CAPSULE = os.path.join(BUILD, "capsule")


@pytest.fixture(scope="session")
def capsule_home():
    # Below /var/tmp, not /tmp: some tests fill tmpfs-backed paths on purpose. Capsule makes
    # the home itself, in a folder every user may enter (as /var/lib is), so that tests see
    # the modes capsule gives it and not ours.
    parent = tempfile.mkdtemp(prefix="capsule-test-", dir="/var/tmp")
    os.chmod(parent, 0o755)
    home = os.path.join(parent, "home")
    subprocess.run([CAPSULE, "ps"], env=_env(home), capture_output=True, timeout=60, check=True)
    yield home
    # Whatever a test left running is stopped by name before the folder goes: pools first
    # (their keepers stop their ready sandboxes), then sandboxes.
    pools = os.path.join(home, "pools")
    if os.path.isdir(pools):
        for name in os.listdir(pools):
            if not name.startswith("."):
                subprocess.run([CAPSULE, "pool", "rm", name], env=_env(home), capture_output=True, timeout=300)
    run = os.path.join(home, "run")
    if os.path.isdir(run):
        for name in os.listdir(run):
            subprocess.run([CAPSULE, "rm", "-f", name], env=_env(home), capture_output=True, timeout=60)
    shutil.rmtree(parent, ignore_errors=True)


def settled_run_entries(run):
    """The entries of a home's run folder once no ephemeral sandbox's remains are still going:
    an ended sandbox's name is free when its end is answered, and its folder, renamed to
    .gone-NAME.PID, is removed by that PID a moment later (docs/architecture.md, "The end").
    A .gone- folder still there after 20 s stays in the answer, so a test comparing entries
    sees it."""
    deadline = time.monotonic() + 20
    while True:
        ents = set(os.listdir(run)) if os.path.isdir(run) else set()
        if not any(e.startswith(".gone-") for e in ents) or time.monotonic() >= deadline:
            return ents
        time.sleep(0.05)


def paused_at(home, stage, timeout=30):
    """The pid of the capsule process (a shim, or its child) waiting at STAGE of
    CAPSULE_TEST_SHIM_PAUSE in the home HOME, or None after TIMEOUT seconds."""
    path = os.path.join(home, ".test-shim-paused")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(path) as f:
                got, pid = f.read().split()
            if got == stage:
                return int(pid)
        except (FileNotFoundError, ValueError):
            pass
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.1)


def host_kvm():
    """What the host offers a VM, read without capsule: "absent" (no /dev/kvm), "unusable"
    (/dev/kvm is there but not backed by the CPU's vmx/svm, as a kvm_pvm host's, or it does
    not open for us), or "usable"."""
    if not os.path.exists("/dev/kvm"):
        return "absent"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "unusable"
    with open("/proc/cpuinfo") as f:
        flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    return "usable" if {"vmx", "svm"} & set(flags) else "unusable"


def assert_accel_as_the_host_allows(vm):
    """A vm's inspect "vm" object: KVM where the host's KVM can run a guest (or TCG after a KVM
    boot that failed, saying so), TCG with the reason where /dev/kvm is there but cannot run a
    guest, plain TCG where there is no /dev/kvm."""
    kvm = host_kvm()
    if kvm == "usable":
        assert vm["accel"] == "kvm" or (vm["accel"] == "tcg" and
                                        vm["accel_fallback"].startswith("KVM did not boot the guest")), vm
    elif kvm == "unusable":
        assert vm["accel"] == "tcg" and "/dev/kvm" in vm["accel_fallback"], vm
    else:
        assert vm["accel"] == "tcg" and "accel_fallback" not in vm, vm


def _version_key(v):
    return [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", v)]


def host_guest_kernel():
    """Debian's kernel as the vm level boots it: the newest /boot/vmlinuz-<ver> that has
    /lib/modules/<ver>. A dict: kind "host", path, release."""
    vers = [p[len("/boot/vmlinuz-"):] for p in glob.glob("/boot/vmlinuz-*")]
    vers = [v for v in vers if os.path.exists(f"/lib/modules/{v}/modules.dep")]
    assert vers, "no kernel for vm isolation: scripts/install-deps installs linux-image-amd64"
    best = max(vers, key=_version_key)
    return {"kind": "host", "path": f"/boot/vmlinuz-{best}", "release": best}


def guest_kernel():
    """The kernel a vm boots, found without capsule: capsule's own (capsule-vmlinux, beside the
    helpers in the build tree, made by the build from linux-source-6.1) where it was built,
    else Debian's. The release is read from the kernel's banner."""
    ours = os.path.join(BUILD, "capsule-vmlinux")
    if not os.path.exists(ours):
        return host_guest_kernel()
    with open(ours, "rb") as f:
        data = f.read()
    m = re.search(rb"Linux version (\S+) ", data)
    assert m, f"{ours} has no version banner"
    return {"kind": "capsule", "path": ours, "release": m.group(1).decode()}


# Tests never reach a registry beyond loopback: an image name that is not in the store makes
# capsule pull it (docker.io for short names), so registry traffic goes to a dead proxy on
# loopback (no DNS lookup either) unless it is for a loopback registry a test started.
NO_INTERNET = {"https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
               "http_proxy": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
               "no_proxy": "127.0.0.1,localhost", "NO_PROXY": "127.0.0.1,localhost"}


def _env(home, extra=None):
    env = dict(os.environ)
    env["CAPSULE_HOME"] = home
    # Not the host's capsule.json (docs/config.md): its defaults would change what tests see.
    env["CAPSULE_CONFIG"] = os.path.join(os.path.dirname(home), "capsule.json")
    env.pop("CAPSULE_PROGRESS", None)
    env.update(NO_INTERNET)
    if extra:
        env.update(extra)
    return env


class Capsule:
    """Runs the capsule CLI against the test's home; ISOLATION goes to every create and run
    that does not name one (the suites that run at both levels, see both_levels below)."""

    def __init__(self, home, isolation="container"):
        self.home = home
        self.isolation = isolation
        self.binary = CAPSULE
        self.build = BUILD
        self.env = _env(home)
        self._names = []

    def run(self, *args, input=None, timeout=120, check=False, text=True, env=None):
        e = dict(self.env)
        if env:
            e.update(env)
        args = self._with_isolation(args)
        if self.isolation == "vm":
            timeout = max(timeout, VM_TIMEOUT)
        r = subprocess.run([CAPSULE, *args], input=input, capture_output=True, timeout=timeout, text=text, env=e)
        if check and r.returncode != 0:
            raise AssertionError(f"capsule {' '.join(args)} exited {r.returncode}: {r.stderr}")
        return r

    def _with_isolation(self, args):
        if self.isolation == "container" or not args or args[0] not in ("create", "run"):
            return args
        if any(a == "--isolation" or a.startswith("--isolation=") for a in args):
            return args
        return (args[0], "--isolation", self.isolation, *args[1:])

    def popen(self, *args, **kw):
        kw.setdefault("env", self.env)
        return subprocess.Popen([CAPSULE, *self._with_isolation(args)], **kw)

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
def isolation():
    """The level a test's sandboxes run at; both_levels suites parametrize it."""
    return "container"


@pytest.fixture
def capsule(capsule_home, isolation):
    c = Capsule(capsule_home, isolation)
    yield c
    c.cleanup()


@pytest.fixture(scope="module")
def shared_vm(capsule_home):
    """One running vm for a module's vm-level tests that only exec into it: a boot is
    seconds under TCG, a fresh one per test would be minutes per module."""
    c = Capsule(capsule_home, "vm")
    name = c.create()
    yield name
    c.cleanup()


@pytest.fixture
def sandbox(request, capsule, isolation):
    """A running named sandbox for tests that exec into one: fresh for each container-level
    test; at the vm level the module's shared one unless the test is marked fresh_sandbox
    (it stops, fills or otherwise changes the sandbox for the tests after it)."""
    if isolation == "vm" and not request.node.get_closest_marker("fresh_sandbox"):
        return request.getfixturevalue("shared_vm")
    return capsule.create()


# vm isolation boots a kernel: seconds each under TCG. Tests marked vm_slow run only in
# `make check-vm` (CAPSULE_CHECK_VM=1); `make check` runs the vm tests that boot once each.
#
# The same suite at both levels: a module (or test) marked both_levels runs each test that
# uses the `capsule` fixture twice, isolation=container and isolation=vm, unless the test is
# marked container_only (it looks at what only a container has on the host: cgroups, host
# pids, namespaces). The vm half is vm_slow, except tests also marked vm_in_check, and is
# skipped where the agent cannot be a VM's init (sanitizer builds).
VM_TIMEOUT = 300


def pytest_configure(config):
    config.addinivalue_line("markers", "vm_slow: a vm-isolation test that runs only in make check-vm")
    config.addinivalue_line("markers", "both_levels: run the test at both isolation levels")
    config.addinivalue_line("markers", "container_only: in a both_levels module, container level only")
    config.addinivalue_line("markers", "vm_in_check: the vm half of a both_levels test runs in make check too")
    config.addinivalue_line("markers", "fresh_sandbox: the test needs a sandbox of its own at the vm level too")
    config.addinivalue_line("markers", "plain_build_only: a heavy suite (a conformance suite, a real daemon) "
                            "that CI runs once, in the plain build, not again under the sanitizers")


def _agent_is_static():
    r = subprocess.run(["ldd", os.path.join(BUILD, "capsule-agent")], capture_output=True, text=True)
    return "not a dynamic executable" in r.stdout + r.stderr or "statically linked" in r.stdout


def pytest_generate_tests(metafunc):
    node = metafunc.definition
    if "capsule" not in metafunc.fixturenames or not node.get_closest_marker("both_levels"):
        return
    if node.get_closest_marker("container_only"):
        return
    vm_marks = [pytest.mark.skipif(not _agent_is_static(), reason="capsule-agent is dynamically linked "
                                   "(a sanitizer build): it cannot be a VM's init")]
    if not node.get_closest_marker("vm_in_check"):
        vm_marks.append(pytest.mark.vm_slow)
    metafunc.parametrize("isolation", ["container", pytest.param("vm", marks=vm_marks)])


def sanitized_build():
    """Whether $CAPSULE_BUILD is the ASan+UBSan build (make check-asan)."""
    r = subprocess.run(["ldd", os.path.join(BUILD, "libcapsule.so")], capture_output=True, text=True)
    return "libasan" in r.stdout


def pytest_collection_modifyitems(config, items):
    if sanitized_build():
        # .ci/run runs the suites twice; what only needs to pass once runs in the plain build.
        skip = pytest.mark.skip(reason="plain_build_only: runs in make check, not again under the sanitizers")
        for item in items:
            if item.get_closest_marker("plain_build_only"):
                item.add_marker(skip)
    if os.environ.get("CAPSULE_CHECK_VM") == "1":
        return
    slow = [i for i in items if i.get_closest_marker("vm_slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [i for i in items if not i.get_closest_marker("vm_slow")]
