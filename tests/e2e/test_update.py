"""capsule update: a running sandbox's memory, cpu and pids limits changed through its shim,
which owns its cgroup (capsule_sandbox_update_limits); kept in its config for inspect and the
next start; bad values change nothing."""
import pytest

from .helpers import assert_capsule_error, cgroup_limit

pytestmark = pytest.mark.both_levels


@pytest.mark.vm_in_check
def test_update_changes_limits_and_keeps_them(capsule):
    # A vm's cgroup is its QEMU's: cpu and pids are changed there; its memory is refused.
    vm = capsule.isolation == "vm"
    name = capsule.create("--pids-limit", "100", *([] if vm else ["--memory", "64M"]))
    args = ["--cpus", "0.5", "--pids-limit", "150"] + ([] if vm else ["--memory", "96M"])
    r = capsule.run("update", *args, name)
    assert r.returncode == 0 and r.stdout.strip() == name, r.stderr
    assert cgroup_limit(name, "pids") == "150"
    assert cgroup_limit(name, "cpu")[0] * 1000 // cgroup_limit(name, "cpu")[1] == 500
    limits = capsule.inspect(name)["limits"]
    assert limits["pids"] == 150 and limits["cpus_milli"] == 500
    if vm:
        r = capsule.run("update", "--memory", "1G", name)
        assert_capsule_error(r)
        assert "a vm's memory is its guest's, fixed when it boots" in r.stderr
    else:
        assert cgroup_limit(name, "memory") == 96 << 20 and limits["memory_bytes"] == 96 << 20
        # A limit lifted: "no limit" in the cgroup and in the config.
        capsule.run("update", "--memory", "-1", "--cpus", "0", "--pids-limit", "0", name, check=True)
        assert cgroup_limit(name, "memory") == -1 and cgroup_limit(name, "cpu")[0] == -1
        assert cgroup_limit(name, "pids") == "max"
        limits = capsule.inspect(name)["limits"]
        assert limits["memory_bytes"] == 0 and limits["pids"] == 0
        # The kept limits are the next start's.
        capsule.run("update", "--memory", "80M", name, check=True)
        capsule.run("stop", name, check=True)
        capsule.run("start", name, check=True)
        assert cgroup_limit(name, "memory") == 80 << 20


@pytest.mark.container_only
@pytest.mark.parametrize("args,message", [
    (["--memory", "1M"], "memory 1048576 bytes: at least 4 MiB"),
    (["--memory", "lots"], "lots"),
    (["--cpus", "-1"], "-1"),
    (["--cpu-shares", "1"], "cpu shares"),
    (["--pids-limit", "x"], "pids limit"),
    (["--swap", "1"], "unknown flag '--swap'"),
    ([], "no limit given"),
])
def test_update_errors_change_nothing(capsule, args, message):
    name = capsule.create("--memory", "64M", "--pids-limit", "100")
    r = capsule.run("update", *args, name)
    assert_capsule_error(r)
    assert message in r.stderr
    assert cgroup_limit(name, "memory") == 64 << 20 and cgroup_limit(name, "pids") == "100"


def test_update_of_a_stopped_sandbox_is_refused(capsule):
    name = capsule.create()
    capsule.run("stop", name, check=True)
    r = capsule.run("update", "--pids-limit", "10", name)
    assert_capsule_error(r)
    assert name in r.stderr
