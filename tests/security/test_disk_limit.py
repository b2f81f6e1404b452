"""A container sandbox's disk (--disk-size, capsule.json's container_disk_size): what the
sandbox writes over its image may not fill the host's disk or take all its inodes, `df /`
shows the size, and saves, checkpoints, reverts and forks keep working on such a layer."""
import json
import os
import uuid

import pytest

from secutil import assert_alive, py_json, sh

MIB = 1 << 20
DISK = 64 * MIB
# One inode per 16 KiB of disk (src/lib/layer_disk.c).
DISK_INODES = DISK // (16 << 10)


def host_bytes_of(path):
    """What a sandbox's run folder takes on the host's disk (allocated blocks, not sizes)."""
    total = 0
    for root, dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def one_line_error(r):
    assert r.returncode == 125, (r.returncode, r.stdout, r.stderr)
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("capsule: "), r.stderr


def root_statvfs(capsule, name):
    return py_json(capsule, name, "import json, os; s = os.statvfs('/'); print(json.dumps("
                                  "{'size': s.f_blocks * s.f_frsize, 'free': s.f_bavail * s.f_frsize,"
                                  " 'inodes': s.f_files}))")


def assert_df_shows(capsule, name, size):
    st = root_statvfs(capsule, name)
    # The journal and ext4's own metadata take a few MiB of the size, never more than 1/8.
    assert size * 7 // 8 <= st["size"] <= size, st


@pytest.fixture
def config_file(tmp_path):
    """A capsule.json of the test's own, named by $CAPSULE_CONFIG."""
    path = tmp_path / "capsule.json"

    def write(text):
        path.write_text(text)
        return {"CAPSULE_CONFIG": str(path)}

    return write


def test_dd_past_the_disk_size_fails_with_enospc_and_the_host_keeps_its_space(capsule):
    full = capsule.create("--disk-size", "64M")
    other = capsule.create()
    r = sh(capsule, full, "dd if=/dev/zero of=/root/fill bs=1M count=200; echo rc=$?")
    assert "No space left on device" in r.stderr, r.stderr
    assert "rc=1" in r.stdout, r.stdout
    written = int(sh(capsule, full, "stat -c %s /root/fill", check=True).stdout)
    assert written < DISK, written
    run_dir = os.path.join(capsule.home, "run", full)
    assert host_bytes_of(run_dir) < DISK + 8 * MIB, host_bytes_of(run_dir)
    # The full disk is the sandbox's alone: another sandbox and the full one go on.
    assert sh(capsule, other, "echo ok > /root/x && cat /root/x", check=True).stdout == "ok\n"
    assert sh(capsule, full, "rm /root/fill && echo again > /root/x && cat /root/x", check=True).stdout == "again\n"
    assert_alive(capsule, full)


def test_many_small_files_fail_with_enospc_at_the_inode_limit(capsule):
    name = capsule.create("--disk-size", "64M")
    out = py_json(capsule, name, """
import errno, json, os
os.mkdir('/root/many')
made, code = 0, 0
for i in range(3 * %d):
    try:
        open('/root/many/%%d' %% i, 'w').close()
    except OSError as e:
        code = e.errno
        break
    made += 1
s = os.statvfs('/')
print(json.dumps({'made': made, 'errno': code, 'enospc': errno.ENOSPC, 'free': s.f_bavail * s.f_frsize}))
""" % DISK_INODES)
    assert out["errno"] == out["enospc"], out
    assert out["made"] <= DISK_INODES, out
    # Inodes ran out, not bytes: empty files take none.
    assert out["free"] > DISK // 2, out


def test_df_inside_shows_the_disk_size(capsule):
    name = capsule.create("--disk-size", "64M")
    assert_df_shows(capsule, name, DISK)
    assert capsule.inspect(name)["limits"]["disk_bytes"] == DISK


def test_the_config_files_default_applies_and_the_flag_overrides_it(capsule, config_file):
    env = config_file(json.dumps({"container_disk_size": "96M", "vm_disk_size": "4G"}))
    name = capsule.unique_name()
    r = capsule.run("create", "--name", name, env=env)
    assert r.returncode == 0, r.stderr
    assert_df_shows(capsule, name, 96 * MIB)
    assert capsule.inspect(name)["limits"]["disk_bytes"] == 96 * MIB
    flagged = capsule.unique_name()
    r = capsule.run("create", "--name", flagged, "--disk-size", "64M", env=env)
    assert r.returncode == 0, r.stderr
    assert_df_shows(capsule, flagged, DISK)


@pytest.mark.parametrize("text,says", [
    ('{"container_disk_size": "12X"}', "key 'container_disk_size'"),
    ('{"container_disk_size": "1M"}', "key 'container_disk_size'"),
    ('{"container_disk_size": 67108864}', "key 'container_disk_size'"),
    ('{"vm_disk_size": "lots"}', "key 'vm_disk_size'"),
    ('{"container_disk": "1G"}', "unknown key 'container_disk'"),
    ('["container_disk_size"]', "not a JSON object"),
    ('{"container_disk_size": "64M"', "not a JSON object"),
])
def test_a_bad_config_file_is_refused_naming_the_file_and_the_key(capsule, config_file, text, says):
    env = config_file(text)
    name = capsule.unique_name()
    r = capsule.run("run", "--name", name, "--", "true", env=env)
    one_line_error(r)
    assert env["CAPSULE_CONFIG"] in r.stderr and says in r.stderr, r.stderr
    assert not os.path.exists(os.path.join(capsule.home, "run", name))


def test_checkpoint_revert_fork_and_save_work_on_the_disk(capsule):
    name = capsule.create("--disk-size", "64M")
    sh(capsule, name, "echo one > /root/a && dd if=/dev/zero of=/root/big bs=1M count=36 2>/dev/null", check=True)
    capsule.run("checkpoint", name, "c1", check=True)
    sh(capsule, name, "echo two > /root/a && rm /root/big", check=True)
    # The disk holds 36M of the checkpoint's and the revert needs that much again: a restore
    # into the same disk, beside the old layer, would not fit.
    sh(capsule, name, "dd if=/dev/zero of=/root/big2 bs=1M count=36 2>/dev/null", check=True)
    capsule.run("revert", name, "c1", check=True)
    assert sh(capsule, name, "cat /root/a; ls /root", check=True).stdout.split() == ["one", "a", "big"]
    assert_df_shows(capsule, name, DISK)
    fork = capsule.unique_name()
    capsule.run("fork", name, fork, check=True)
    assert sh(capsule, fork, "cat /root/a", check=True).stdout == "one\n"
    assert_df_shows(capsule, fork, DISK)
    save = f"s-{uuid.uuid4().hex[:8]}"
    try:
        capsule.run("save", name, save, check=True)
        r = capsule.run("run", "--image", save, "--disk-size", "64M", "--", "sh", "-c", "cat /root/a; df -k / | tail -1",
                        check=True)
        assert r.stdout.startswith("one\n"), r.stdout
        assert int(r.stdout.split()[2]) <= DISK // 1024, r.stdout
    finally:
        capsule.run("saves", "rm", save)


def test_a_stopped_sandboxs_checkpoint_and_revert_use_its_disk(capsule):
    name = capsule.create("--disk-size", "64M")
    sh(capsule, name, "echo one > /root/a", check=True)
    capsule.run("stop", name, check=True)
    capsule.run("checkpoint", name, "c1", check=True)
    capsule.run("start", name, check=True)
    sh(capsule, name, "echo two > /root/a", check=True)
    capsule.run("stop", name, check=True)
    capsule.run("revert", name, "c1", check=True)
    capsule.run("start", name, check=True)
    assert sh(capsule, name, "cat /root/a", check=True).stdout == "one\n"
    assert_df_shows(capsule, name, DISK)


def test_a_disk_without_root_is_refused_with_one_line_before_anything_is_made(capsule, other_user):
    # Loop devices are root's: the disk could never be attached, at this start or any later one.
    r = other_user.run([capsule.binary, "run", "--name", "nodisk", "--disk-size", "64M", "--", "true"])
    one_line_error(r)
    assert "disk size for a container sandbox needs root" in r.stderr, r.stderr
    r = other_user.run([capsule.binary, "ps", "-a"])
    assert "nodisk" not in r.stdout, r.stdout
