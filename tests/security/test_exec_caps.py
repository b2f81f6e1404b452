"""A command never gets a capability its sandbox's own set lacks, whoever asks: an exec through
the C API with a set of its own (capsule_exec_options.caps), or capsule-oci exec with a
process.json naming more than the bundle's process had. Inside the sandbox's user namespace
CAP_NET_ADMIN rewrites the egress table (the allowlist, the quota) and CAP_SYS_ADMIN or
CAP_NET_RAW open kernel surface capsule keeps shut; so the agent refuses such an exec with one
line naming the capability, at both levels (the vm's agent is the same program), and runs
nothing."""
import errno
import json
import os
import subprocess

import pytest

from tests.conftest import BUILD
from tests.e2e.test_oci import bundle, oci, set_config  # noqa: F401 (fixtures)
from tests.e2e.test_vm import BOOT_TIMEOUT, boots

EXEC_OPTS = os.path.join(BUILD, "tests", "e2e", "exec_opts")
CAP_CHOWN, CAP_KILL, CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_ADMIN = 0, 5, 12, 13, 21
# container_default_caps(): CHOWN DAC_OVERRIDE FOWNER KILL NET_BIND_SERVICE SETGID SETPCAP
# SETUID SYS_CHROOT.
DEFAULT = sum(1 << c for c in (0, 1, 3, 5, 10, 6, 8, 7, 18))


def exec_opts(capsule, name, caps, *argv, filt="-"):
    return subprocess.run([EXEC_OPTS, name, "-" if caps is None else f"{caps:x}", filt, *argv],
                          capture_output=True, text=True, env=capsule.env, timeout=120)


def cap_eff(text):
    return int(next(ln for ln in text.splitlines() if ln.startswith("CapEff:")).split()[1], 16)


def check_refusals(capsule, name):
    # Within the set: granted as asked (the check is a bound, not a refusal of every set).
    r = exec_opts(capsule, name, (1 << CAP_CHOWN) | (1 << CAP_KILL), "cat", "/proc/self/status")
    assert r.returncode == 0, r.stderr
    assert cap_eff(r.stdout) == (1 << CAP_CHOWN) | (1 << CAP_KILL)
    for cap, word in ((CAP_NET_ADMIN, "CAP_NET_ADMIN"), (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
                      (CAP_NET_RAW, "CAP_NET_RAW")):
        r = exec_opts(capsule, name, DEFAULT | (1 << cap), "sh", "-c", "echo ran; cat /proc/self/status")
        assert r.returncode == 125, (word, r.stdout, r.stderr)
        assert "ran" not in r.stdout
        assert r.stderr.strip() == (f"refused {errno.EPERM}: capability {word} is not in the sandbox's set: "
                                    "a command gets at most the capabilities its sandbox was created with"), r.stderr


def test_c_api_exec_cannot_widen_the_sandboxs_set(capsule):
    check_refusals(capsule, capsule.create())


@pytest.mark.vm_slow
@boots
def test_c_api_exec_cannot_widen_a_vms_set(capsule):
    name = capsule.unique_name("vmcaps")
    r = capsule.run("create", "--isolation", "vm", "--name", name, timeout=BOOT_TIMEOUT)
    assert r.returncode == 0, r.stderr
    check_refusals(capsule, name)


def test_oci_exec_cannot_add_capabilities_the_bundle_lacked(oci, bundle, tmp_path):  # noqa: F811
    set_config(bundle, args=["sleep", "60"],
               capabilities={s: ["CAP_KILL", "CAP_CHOWN"] for s in ("bounding", "effective", "permitted")})
    # The monitor keeps create's stdio: a file, not pipes whose end would be awaited.
    out = open(tmp_path / "out", "w+")
    r = oci("create", "--bundle", bundle, "capx", stdout=out, stderr=out, stdin=subprocess.DEVNULL,
            capture_output=False)
    assert r.returncode == 0, out.read()
    try:
        def process(caps):
            p = {"args": ["sh", "-c", "echo ran; grep CapEff /proc/self/status"], "cwd": "/",
                 "user": {"uid": 0, "gid": 0}, "capabilities": {s: caps for s in ("bounding", "effective", "permitted")}}
            path = tmp_path / "p.json"
            path.write_text(json.dumps(p))
            return oci("exec", "--process", str(path), "capx")
        r = process(["CAP_KILL"])
        assert r.returncode == 0, r.stderr
        assert cap_eff(r.stdout) == 1 << CAP_KILL
        r = process(["CAP_KILL", "CAP_NET_ADMIN"])
        assert r.returncode != 0 and "ran" not in r.stdout, r.stdout
        assert "capability CAP_NET_ADMIN is not in the sandbox's set" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        # A plain exec gets the bundle's set (as runc's exec gets the container's), no more.
        r = oci("exec", "capx", "grep", "CapEff", "/proc/self/status")
        assert r.returncode == 0, r.stderr
        assert cap_eff(r.stdout) == (1 << CAP_KILL) | (1 << CAP_CHOWN)
    finally:
        oci("delete", "--force", "capx")
