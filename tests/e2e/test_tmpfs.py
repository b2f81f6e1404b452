"""--tmpfs: sized scratch space in memory, gone when the sandbox stops."""
import os
import uuid

import pytest

from .helpers import assert_capsule_error, run_entries

# Every test here runs at both isolation levels (tests/conftest.py, both_levels).
pytestmark = pytest.mark.both_levels


def test_tmpfs_write_past_its_size_fails_with_enospc_and_the_sandbox_still_answers(capsule):
    r = capsule.run("run", "--tmpfs", "/tmp/scratch:size=10M", "--", "sh", "-c",
                    "dd if=/dev/zero of=/tmp/scratch/x bs=1M count=20; echo rc=$?; "
                    "stat -c %s /tmp/scratch/x; echo still-here")
    assert "No space left on device" in r.stderr
    assert "rc=1" in r.stdout
    assert "10485760" in r.stdout
    assert "still-here" in r.stdout


def test_tmpfs_has_the_mode_asked_for_and_a_sticky_1777_by_default(capsule):
    r = capsule.run("run", "--tmpfs", "/scratch", "--tmpfs", "/private:mode=0700", "--",
                    "stat", "-c", "%a %n", "/scratch", "/private", check=True)
    assert r.stdout.split("\n")[:2] == ["1777 /scratch", "700 /private"]


def test_tmpfs_target_folders_are_created(capsule):
    r = capsule.run("run", "--tmpfs", "/a/b/c:size=1M", "--", "sh", "-c",
                    "grep ' /a/b/c ' /proc/mounts", check=True)
    assert "tmpfs" in r.stdout and "size=1024k" in r.stdout


@pytest.mark.container_only  # the sandbox's layer on the host; a vm's root layer is in guest RAM
def test_tmpfs_content_is_not_in_the_sandbox_layer_and_is_gone_after_a_restart(capsule):
    name = capsule.create("--tmpfs", "/scratch:size=1M")
    capsule.run("exec", name, "--", "sh", "-c", "echo data > /scratch/f; echo kept > /root/f", check=True)
    upper = os.path.join(capsule.home, "run", name, "fs", "upper")
    assert not os.path.exists(os.path.join(upper, "scratch", "f"))
    assert os.path.exists(os.path.join(upper, "root", "f"))
    capsule.run("stop", name, check=True)
    capsule.run("start", name, check=True)
    r = capsule.run("exec", name, "--", "sh", "-c", "ls -A /scratch; cat /root/f", check=True)
    assert r.stdout == "kept\n"


def test_inspect_lists_tmpfs_mounts(capsule):
    name = capsule.create("--tmpfs", "/scratch:size=2M,mode=750")
    assert capsule.inspect(name)["tmpfs"] == [{"target": "/scratch", "size_bytes": 2 << 20, "mode": 0o750}]


def test_a_symlink_planted_at_a_tmpfs_target_cannot_lead_outside_the_sandbox(capsule):
    # Before a restart the sandbox turns the target's parent into a symlink that points out
    # of its root. The start must resolve it inside the sandbox: nothing is made on the host.
    escape = f"/tmp/capsule-escape-{uuid.uuid4().hex[:8]}"
    name = capsule.create("--tmpfs", "/q/link/inner:size=1M")
    capsule.run("exec", name, "--", "sh", "-c",
                f"mv /q /q-moved && ln -s /../../../../../../..{escape} /q", check=True)
    capsule.run("stop", name, check=True)
    capsule.run("start", name)
    assert not os.path.exists(escape)
    capsule.run("rm", "-f", name)
    assert not os.path.exists(escape)


def test_bad_tmpfs_specs_are_refused_before_anything_starts(capsule):
    for spec, words in (("tmp", "absolute"), ("/:size=1M", "'/'"), ("/x:size=0", "size"),
                        ("/x:size=12X", "12X"), ("/x:bogus=1", "bogus"), ("/proc/x", "/proc"),
                        ("/sys", "/sys"), ("/x:mode=99999", "mode")):
        before = run_entries(capsule)
        r = capsule.run("run", "--tmpfs", spec, "--", "true")
        assert_capsule_error(r)
        assert words in r.stderr, (spec, r.stderr)
        after = run_entries(capsule)
        assert after == before
