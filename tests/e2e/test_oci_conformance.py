"""The opencontainers runtime-tools validation suite (commit 260e151, ../shared/conformance)
against capsule-oci and against Debian's runc, in the same run, each with a --root of its own
(docs/oci.md, "Conformance"). The suite is built once by scripts/build-runtime-tools into a
cache outside the clone. Heavy: plain_build_only."""
import glob
import os
import re
import shutil
import subprocess
import tempfile

import pytest

from tests.conftest import BUILD, ROOT, _env

OCI = os.path.join(BUILD, "capsule-oci")
RUNC = shutil.which("runc") or "/usr/sbin/runc"

pytestmark = pytest.mark.plain_build_only

# Programs capsule-oci passes whole today (every assertion ok): a regression in any of them
# fails at once, whatever the totals do.
PASSING = ["create", "default", "delete", "delete_only_create_resources", "delete_resources", "hostname", "kill",
           "kill_no_effect", "killsig", "linux_cgroups_cpus", "linux_cgroups_pids", "linux_cgroups_relative_cpus",
           "linux_masked_paths", "linux_ns_path_type",
           "linux_readonly_paths", "linux_seccomp", "linux_sysctl", "linux_uid_mappings", "linux_devices", "mounts", "process",
           "process_capabilities", "process_oom_score_adj", "process_user", "root_readonly_true", "state"]


# Programs whose ok lines are not the runtime's passes. process_capabilities_fail adds an
# unknown capability and fails (util.Fatal: "Any value which cannot be mapped to a relevant
# kernel interface MUST cause an error") when the runtime runs the spec anyway; its ok lines
# then come from the inner validation of a container that should never have started. runc
# 1.1.5 runs it (309 ok, and the program's own failure, which TAP does not count); capsule-oci
# refuses it, as asked (0). Counted for neither in the comparison. Counted, runc still has
# more (3704 or 3705 against 3689 on 2026-12-07: the namespace programs that ask for the host's, and the
# device and pids cgroups read through the pid; docs/oci.md), so the raw totals are not compared.
NOT_PASSES = {"process_capabilities_fail"}


def mounts_under(top):
    """Mount points at or below TOP in this mount namespace, deepest first."""
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4].replace("\\040", " ") for line in f]
    return sorted((p for p in points if p == top or p.startswith(top + "/")), key=lambda p: -p.count("/"))


def run_suite(suite, runtime_cmd, env, work):
    """Every validation program against RUNTIME_CMD (a wrapper script); {program: (ok, not_ok)}.
    The suite's bundles (ocitestNNN) are made in WORK/tmp, so what a runtime leaves mounted in
    them can be found and taken down."""
    os.makedirs(os.path.join(work, "tmp"))
    shutil.copy(os.path.join(suite, "runtimetest"), work)
    shutil.copy(os.path.join(suite, "rootfs-amd64.tar.gz"), work)
    env = dict(env, RUNTIME=runtime_cmd, TMPDIR=os.path.join(work, "tmp"))
    results = {}
    for t in sorted(glob.glob(os.path.join(suite, "validation", "*", "*.t"))):
        name = os.path.basename(os.path.dirname(t))
        try:
            out = subprocess.run([t], cwd=work, env=env, capture_output=True, text=True, timeout=120).stdout
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        results[name] = (len(re.findall(r"^ok ", out, re.M)), len(re.findall(r"^not ok ", out, re.M)))
    return results


def wrapper(path, argv0, root):
    with open(path, "w") as f:
        f.write(f'#!/bin/sh\nexec {argv0} --root {root} "$@"\n')
    os.chmod(path, 0o755)
    return path


@pytest.fixture(scope="module")
def results(capsule_home):
    built = subprocess.run([os.path.join(ROOT, "scripts", "build-runtime-tools")], capture_output=True, text=True,
                           timeout=1800)
    assert built.returncode == 0, "scripts/build-runtime-tools: " + built.stderr[-2000:]
    suite = built.stdout.strip().split("\n")[-1]
    assert os.access(RUNC, os.X_OK), "runc is not installed (scripts/install-deps)"
    top = tempfile.mkdtemp(prefix="capsule-oci-conformance-", dir="/var/tmp")
    env = _env(capsule_home)
    try:
        capsule = run_suite(suite, wrapper(os.path.join(top, "capsule-oci"), OCI, os.path.join(top, "root-capsule")),
                            env, os.path.join(top, "work-capsule"))
        capsule_left = mounts_under(os.path.join(top, "work-capsule"))
        runc = run_suite(suite, wrapper(os.path.join(top, "runc"), RUNC, os.path.join(top, "root-runc")),
                         env, os.path.join(top, "work-runc"))
    finally:
        # The cgroups the suite's specs name, which runc and capsule-oci leave as runc does: the
        # absolute ones at each hierarchy's root, the relative ones below this process's own
        # cgroup there (v2: its parent), where both runtimes, its children, take them from.
        with open("/proc/self/cgroup") as f:
            own = [line.rstrip("\n").split(":", 2)[2] for line in f if line.count(":") >= 2]
        own = {""} | {p.lstrip("/") for p in own} | {os.path.dirname(p).lstrip("/") for p in own}
        for hierarchy in {os.path.realpath(p) for p in glob.glob("/sys/fs/cgroup/*/")} | {"/sys/fs/cgroup"}:
            for base in own:
                for rel in ("testdir/cgrouptest/container", "testdir/cgrouptest", "testdir", "cgrouptest"):
                    try:
                        os.rmdir(os.path.join(hierarchy, base, rel))
                    except OSError:
                        pass
        for root, argv0 in ((os.path.join(top, "root-capsule"), OCI), (os.path.join(top, "root-runc"), RUNC)):
            for cid in os.listdir(root) if os.path.isdir(root) else []:
                subprocess.run([argv0, "--root", root, "delete", "--force", cid], capture_output=True, timeout=60)
        # runc runs the programs that ask for the host's mount namespace in it, and leaves their
        # rootfs binds, proc, sysfs and /dev mounted there (capsule-oci refuses those specs).
        # The tree is removed only once nothing is mounted in it: rmtree would walk into a bind.
        for point in mounts_under(top):
            subprocess.run(["umount", "--lazy", point], capture_output=True, timeout=60)
        left = mounts_under(top)
        if left:
            pytest.fail(f"still mounted after umount --lazy, {top} kept: {left[:5]}")
        shutil.rmtree(top, ignore_errors=True)
    print("\nprogram: capsule-oci ok/not ok | runc ok/not ok")
    for name in sorted(runc):
        print(f"  {name}: {capsule[name][0]}/{capsule[name][1]} | {runc[name][0]}/{runc[name][1]}")
    total = {k: tuple(sum(v[i] for v in r.values()) for i in (0, 1)) for k, r in (("capsule", capsule), ("runc", runc))}
    print(f"total: capsule-oci {total['capsule'][0]} ok, {total['capsule'][1]} not ok; "
          f"runc {total['runc'][0]} ok, {total['runc'][1]} not ok")
    compared = {k: tuple(sum(v[i] for name, v in r.items() if name not in NOT_PASSES) for i in (0, 1))
                for k, r in (("capsule", capsule), ("runc", runc))}
    print(f"without {', '.join(sorted(NOT_PASSES))}: capsule-oci {compared['capsule'][0]} ok, "
          f"runc {compared['runc'][0]} ok")
    return capsule, runc, compared, capsule_left


def test_programs_capsule_passes_stay_passing(results):
    capsule, _, _, _ = results
    broken = {name: capsule[name] for name in PASSING if capsule[name][0] == 0 or capsule[name][1] != 0}
    assert not broken, f"(ok, not ok) of programs that passed whole: {broken}"


def test_capsule_oci_passes_at_least_as_many_as_runc(results):
    _, _, total, _ = results
    assert total["capsule"][0] >= total["runc"][0], total


def test_capsule_oci_leaves_nothing_mounted_on_the_host(results):
    """Every container of the suite runs in a mount namespace of its own: none of its mounts may
    stay in the host's (runc leaves some, for the specs that ask for the host's namespace)."""
    _, _, _, left = results
    assert not left, left
