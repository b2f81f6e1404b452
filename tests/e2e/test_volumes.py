"""Named volumes: capsule volume create|ls|inspect|rm|write|read, and -v NAME:/path[:ro]."""
import json
import os
import uuid

import pytest

from .helpers import assert_capsule_error


def vname(prefix="v"):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def volumes(capsule):
    """Makes volumes by name and removes them after the test (sandboxes are removed first by
    the capsule fixture's own cleanup, which runs after this one)."""
    made = []

    def make(*args, name=None):
        name = name or vname()
        r = capsule.run("volume", "create", name, *args)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == name
        made.append(name)
        return name

    make.made = made
    yield make
    capsule.cleanup()
    for n in made:
        capsule.run("volume", "rm", n)


def inspect(capsule, name):
    r = capsule.run("volume", "inspect", name, check=True)
    return json.loads(r.stdout)


def test_create_ls_inspect_rm_folder_and_quota_volumes(capsule, volumes):
    plain = volumes()
    quota = volumes("--quota", "16M")
    p = inspect(capsule, plain)
    assert (p["name"], p["kind"], p["quota_bytes"], p["in_use"]) == (plain, "folder", 0, False)
    q = inspect(capsule, quota)
    assert (q["name"], q["kind"], q["quota_bytes"]) == (quota, "ext4", 16 << 20)
    assert os.path.isfile(os.path.join(q["path"], "disk.img"))
    # The image is reserved in full at create: the quota is a promise the host disk keeps.
    st = os.stat(os.path.join(q["path"], "disk.img"))
    assert st.st_blocks * 512 >= 16 << 20

    listed = json.loads(capsule.run("volume", "ls", "--json", check=True).stdout)
    by_name = {v["name"]: v for v in listed}
    assert by_name[plain]["kind"] == "folder" and by_name[quota]["quota_bytes"] == 16 << 20
    table = capsule.run("volume", "ls", check=True).stdout
    assert table.startswith("NAME") and plain in table and f"{quota}" in table and "16M" in table
    assert plain in capsule.run("volume", "ls", "-q", check=True).stdout.split()

    r = capsule.run("volume", "rm", plain, quota, check=True)
    assert r.stdout.split() == [plain, quota]
    names = [v["name"] for v in json.loads(capsule.run("volume", "ls", "--json", check=True).stdout)]
    assert plain not in names and quota not in names
    assert not os.path.exists(q["path"])


@pytest.mark.parametrize("args,needle", [
    (["bad name"], "invalid volume name"),
    (["-dash"], "unknown flag"),
    (["x" * 64], "invalid volume name"),
    ([".hidden"], "invalid volume name"),
    (["ok-name", "--quota", "1M"], "too small (minimum 8M)"),
    (["ok-name", "--quota", "12Q"], "invalid size '12Q'"),
    (["ok-name", "--quota", "0"], "must be more than 0"),
    (["ok-name", "--quota", "17T"], "too large"),
])
def test_create_rejects_bad_names_and_quotas_with_one_line(capsule, args, needle):
    r = capsule.run("volume", "create", *args)
    assert_capsule_error(r)
    assert needle in r.stderr
    assert "ok-name" not in capsule.run("volume", "ls", "-q", check=True).stdout.split()
    # Nothing half-made: no temp folder is left behind either.
    vols = os.path.join(capsule.home, "volumes")
    assert not os.path.isdir(vols) or not [e for e in os.listdir(vols) if e.startswith(".")]


def test_duplicate_create_and_missing_volume_errors(capsule, volumes):
    name = volumes()
    r = capsule.run("volume", "create", name)
    assert_capsule_error(r)
    assert f"a volume named '{name}' already exists" in r.stderr
    missing = vname("missing")
    for args in (["rm", missing], ["inspect", missing], ["read", missing, "/f"]):
        r = capsule.run("volume", *args)
        assert_capsule_error(r)
        assert f"no volume named '{missing}'" in r.stderr


def test_rm_while_a_sandbox_uses_it_is_refused_then_works_after_stop(capsule, volumes):
    name = volumes("--quota", "16M")
    sb = capsule.create("-v", f"{name}:/data")
    assert inspect(capsule, name)["in_use"] is True
    r = capsule.run("volume", "rm", name)
    assert_capsule_error(r)
    assert f"volume '{name}' is in use by a sandbox" in r.stderr
    # Still whole: the sandbox goes on using it.
    capsule.run("exec", sb, "--", "sh", "-c", "echo still > /data/f", check=True)
    capsule.run("stop", "-t", "0", sb, check=True)
    assert inspect(capsule, name)["in_use"] is False
    capsule.run("volume", "rm", name, check=True)


@pytest.mark.parametrize("quota", [[], ["--quota", "16M"]], ids=["folder", "ext4"])
def test_content_persists_across_sandboxes(capsule, volumes, quota):
    name = volumes(*quota)
    capsule.run("run", "-v", f"{name}:/cache", "--", "sh", "-c", "mkdir -p /cache/d && echo kept > /cache/d/f",
                check=True)
    r = capsule.run("run", "-v", f"{name}:/somewhere/else", "--", "cat", "/somewhere/else/d/f", check=True)
    assert r.stdout == "kept\n"
    # lost+found of the ext4 image is never shown: the content is a folder inside it.
    r = capsule.run("run", "-v", f"{name}:/cache", "--", "ls", "-A", "/cache", check=True)
    assert r.stdout.split() == ["d"]


@pytest.mark.parametrize("quota", [[], ["--quota", "16M"]], ids=["folder", "ext4"])
def test_writer_and_readonly_reader_share_a_volume_at_once(capsule, volumes, quota):
    name = volumes(*quota)
    writer = capsule.create("--volume", f"{name}:/shared")
    reader = capsule.create("-v", f"{name}:/shared:ro")
    capsule.run("exec", writer, "--", "sh", "-c", "echo one > /shared/msg", check=True)
    assert capsule.run("exec", reader, "--", "cat", "/shared/msg", check=True).stdout == "one\n"
    # Changes show at once in the other sandbox: one filesystem, not a copy.
    capsule.run("exec", writer, "--", "sh", "-c", "echo two >> /shared/msg", check=True)
    assert capsule.run("exec", reader, "--", "cat", "/shared/msg", check=True).stdout == "one\ntwo\n"
    r = capsule.run("exec", reader, "--", "sh", "-c", "echo x > /shared/msg; echo rc=$?; touch /shared/new; echo rc=$?")
    assert "rc=2\nrc=1\n" in r.stdout
    assert r.stderr.count("Read-only file system") == 2
    assert capsule.run("exec", writer, "--", "cat", "/shared/msg", check=True).stdout == "one\ntwo\n"


def test_quota_fill_gives_enospc_and_harms_nothing_else(capsule, volumes):
    small = volumes("--quota", "16M")
    other = volumes("--quota", "16M")
    capsule.run("volume", "write", other, "/keep.txt", input="untouched\n", check=True)
    sb = capsule.create("-v", f"{small}:/small", "-v", f"{other}:/other")
    r = capsule.run("exec", sb, "--", "sh", "-c",
                    "dd if=/dev/zero of=/small/fill bs=1M count=64 2>&1; echo rc=$?", timeout=120)
    assert "No space left on device" in r.stdout
    assert "rc=1" in r.stdout
    # Hard limit: the file is smaller than the quota (ext4's metadata takes a little of it).
    size = int(capsule.run("exec", sb, "--", "stat", "-c", "%s", "/small/fill", check=True).stdout)
    assert 8 << 20 < size < 16 << 20
    # The sandbox still answers, the other volume is untouched and still writable.
    assert capsule.run("exec", sb, "--", "echo", "alive", check=True).stdout == "alive\n"
    assert capsule.run("exec", sb, "--", "cat", "/other/keep.txt", check=True).stdout == "untouched\n"
    capsule.run("exec", sb, "--", "sh", "-c", "echo more > /other/more.txt", check=True)
    # Freeing space makes the full volume usable again.
    capsule.run("exec", sb, "--", "sh", "-c", "rm /small/fill && echo ok > /small/after", check=True)


@pytest.mark.parametrize("quota", [[], ["--quota", "16M"]], ids=["folder", "ext4"])
def test_host_side_write_read_with_and_without_sandboxes(capsule, volumes, quota):
    name = volumes(*quota)
    # Host side with no sandbox running; missing parents are made.
    capsule.run("volume", "write", name, "/etc/app/requirements.txt", input="flask==3\n", check=True)
    assert capsule.run("volume", "read", name, "/etc/app/requirements.txt", check=True).stdout == "flask==3\n"
    assert capsule.run("volume", "read", name, "etc/app/requirements.txt", check=True).stdout == "flask==3\n"
    # Host write, then a sandbox reads it; the sandbox writes, then the host reads it.
    r = capsule.run("run", "-v", f"{name}:/v", "--", "sh", "-c",
                    "cat /v/etc/app/requirements.txt; stat -c %u:%g /v/etc/app/requirements.txt; echo made-inside > /v/out",
                    check=True)
    assert r.stdout == "flask==3\n0:0\n"
    assert capsule.run("volume", "read", name, "/out", check=True).stdout == "made-inside\n"
    # While a sandbox holds the volume, host-side access shares it.
    sb = capsule.create("-v", f"{name}:/v")
    capsule.run("volume", "write", name, "/live", input="live\n", check=True)
    assert capsule.run("exec", sb, "--", "cat", "/v/live", check=True).stdout == "live\n"
    # A write replaces the file whole.
    capsule.run("volume", "write", name, "/live", input="2\n", check=True)
    assert capsule.run("exec", sb, "--", "cat", "/v/live", check=True).stdout == "2\n"


def test_host_side_binary_round_trip_and_errors(capsule, volumes):
    name = volumes("--quota", "16M")
    data = bytes(range(256)) * 4096 + b"\0tail"
    capsule.run("volume", "write", name, "/bin.dat", input=data, text=False, check=True)
    r = capsule.run("volume", "read", name, "/bin.dat", text=False, check=True)
    assert r.stdout == data
    r = capsule.run("run", "-v", f"{name}:/v", "--", "md5sum", "/v/bin.dat", check=True)
    import hashlib
    assert r.stdout.split()[0] == hashlib.md5(data).hexdigest()
    capsule.run("volume", "write", name, "/empty", input=b"", text=False, check=True)
    assert capsule.run("volume", "read", name, "/empty", text=False, check=True).stdout == b""
    for args, needle in ((["read", name, "/nope"], "No such file"),
                         (["read", name, "/"], "is not a regular file"),
                         (["write", name, "/"], "top folder"),
                         (["write", name], "needs a volume name and a path")):
        r = capsule.run("volume", *args, input="")
        assert_capsule_error(r)
        assert needle in r.stderr


def test_host_side_write_past_the_quota_fails_and_leaves_no_partial_file(capsule, volumes):
    name = volumes("--quota", "16M")
    capsule.run("volume", "write", name, "/f", input="old\n", check=True)
    r = capsule.run("volume", "write", name, "/f", input=b"\1" * (32 << 20), text=False)
    r.stderr = r.stderr.decode()
    assert_capsule_error(r)
    assert "No space left on device" in r.stderr
    assert capsule.run("volume", "read", name, "/f", check=True).stdout == "old\n"
    r = capsule.run("run", "-v", f"{name}:/v", "--", "ls", "-A", "/v", check=True)
    assert r.stdout.split() == ["f"]


def test_run_v_creates_a_missing_volume_without_quota(capsule, volumes):
    name = vname("auto")
    volumes.made.append(name)
    r = capsule.run("run", "-v", f"{name}:/auto", "--", "sh", "-c", "echo made > /auto/f", check=True)
    info = inspect(capsule, name)
    assert (info["kind"], info["quota_bytes"]) == ("folder", 0)
    assert capsule.run("volume", "read", name, "/f", check=True).stdout == "made\n"


def test_sandbox_inspect_lists_the_volume_mount_and_restart_keeps_it(capsule, volumes):
    name = volumes("--quota", "16M")
    sb = capsule.create("-v", f"{name}:/data:ro")
    mounts = capsule.inspect(sb)["mounts"]
    assert {"kind": "volume", "volume": name, "guest_path": "/data", "readonly": True} in mounts
    capsule.run("volume", "write", name, "/x", input="1\n", check=True)
    capsule.run("stop", "-t", "0", sb, check=True)
    capsule.run("start", sb, check=True)
    assert capsule.run("exec", sb, "--", "cat", "/data/x", check=True).stdout == "1\n"


def test_bad_volume_specs_on_run(capsule):
    for spec, needle in (("bad/name:/x", "neither an absolute host path nor a valid volume name"),
                         ("ok:relative", "must be an absolute path"),
                         ("ok:/x:rx", "'rx'")):
        r = capsule.run("run", "-v", spec, "--", "true")
        assert_capsule_error(r)
        assert needle in r.stderr
    # A bad spec creates nothing.
    assert "ok" not in capsule.run("volume", "ls", "-q", check=True).stdout.split()


def test_c_api_create_inspect_list_read_write_stream_mount_remove(capsule):
    import subprocess
    from tests.conftest import BUILD
    binary = os.path.join(BUILD, "tests", "e2e", "volume_api_check")
    r = subprocess.run([binary, vname("api")], env=capsule.env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    for check in ("create-inspect-list", "buffers", "streams", "sandbox", "remove"):
        assert f"ok {check}" in r.stdout


def test_start_of_a_stopped_sandbox_whose_volume_was_removed_fails_clearly(capsule, volumes):
    name = volumes()
    sb = capsule.create("-v", f"{name}:/data")
    capsule.run("stop", "-t", "0", sb, check=True)
    # A stopped sandbox does not hold its volumes.
    capsule.run("volume", "rm", name, check=True)
    r = capsule.run("start", sb)
    assert_capsule_error(r)
    assert f"no volume named '{name}'" in r.stderr
    # It is not made again behind the user's back.
    assert name not in capsule.run("volume", "ls", "-q", check=True).stdout.split()


def test_leftovers_of_a_crashed_create_or_rm_are_swept_and_never_listed(capsule, volumes):
    keep = volumes()
    vols = os.path.join(capsule.home, "volumes")
    # What a create killed mid-way leaves (its lock free), one killed before it locked (old,
    # no lock file), and a create still at work (lock held): only the last one stays.
    crashed = os.path.join(vols, ".new-x.1.1")
    os.makedirs(os.path.join(crashed, "data"))
    open(os.path.join(crashed, "lock"), "w").close()
    early = os.path.join(vols, ".rm-y.1.1")
    os.makedirs(early)
    os.utime(early, (0, 0))
    busy = os.path.join(vols, ".new-z.1.1")
    os.makedirs(busy)
    import fcntl
    with open(os.path.join(busy, "lock"), "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        names = capsule.run("volume", "ls", "-q", check=True).stdout.split()
        assert names == [n for n in names if not n.startswith(".")] and keep in names
        assert not os.path.exists(crashed) and not os.path.exists(early)
        assert os.path.exists(busy)
    capsule.run("volume", "ls", check=True)
    assert not os.path.exists(busy)


def test_host_side_streams_run_in_constant_memory(capsule, volumes):
    import subprocess
    import sys
    name = volumes()
    size = 256 << 20
    # A fresh parent per measurement, so that ru_maxrss is this command's alone.
    measure = ("import resource, subprocess, sys\n"
               "rc = subprocess.call(sys.argv[1:])\n"
               "sys.stderr.write('maxrss=%d\\n' % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
               "sys.exit(rc)\n")
    src = subprocess.Popen(["head", "-c", str(size), "/dev/zero"], stdout=subprocess.PIPE)
    w = subprocess.run([sys.executable, "-c", measure, capsule.binary, "volume", "write", name, "/big"],
                       stdin=src.stdout, env=capsule.env, capture_output=True, text=True, timeout=300)
    src.stdout.close()
    src.wait()
    assert w.returncode == 0, w.stderr
    r = subprocess.Popen([sys.executable, "-c", measure, capsule.binary, "volume", "read", name, "/big"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=capsule.env)
    total = 0
    while chunk := r.stdout.read(1 << 20):
        total += len(chunk)
    err = r.stderr.read().decode()
    assert r.wait(timeout=300) == 0, err
    assert total == size
    for out in (w.stderr, err):
        kib = int(out.strip().splitlines()[-1].split("=")[1])
        assert kib < 32 << 10, f"peaked at {kib} KiB for a {size >> 20} MiB stream"
