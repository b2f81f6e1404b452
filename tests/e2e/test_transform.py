"""--transform DST=PLUGIN[:CONFIG]: a bind mount served by capsule-fuse through a plugin that
transforms what is stored on the host (docs/transforms.md)."""
import hashlib
import os
import shutil
import subprocess
import tempfile

import pytest

CAPSULE_UID_BASE = 1000000000  # home.c: where the sandboxes' own host ids begin

from .helpers import assert_capsule_error, children_named, run_dir, wait_until

# Every test here runs at both isolation levels (tests/conftest.py, both_levels).
pytestmark = pytest.mark.both_levels

KEY = "s3cret-key"
MASK = (1 << 64) - 1


def _splitmix64(x):
    x = (x + 0x9E3779B97F4A7C15) & MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


def _key(config):
    h = 0xCBF29CE484222325
    for b in config.encode():
        h = ((h ^ b) * 0x100000001B3) & MASK
    return _splitmix64(h)


def xor(data, offset=0, config=KEY):
    """What examples/transform-xor.c stores for DATA at OFFSET (encode and decode are one)."""
    key = _key(config)
    out = bytearray(data)
    for i in range(len(out)):
        off = offset + i
        out[i] ^= (_splitmix64(key ^ (off // 8)) >> (8 * (off % 8))) & 0xFF
    return bytes(out)


@pytest.fixture
def plugin(capsule):
    return os.path.join(capsule.build, "transform-xor.so")


@pytest.fixture
def hostdir():
    d = tempfile.mkdtemp(prefix="capsule-transform-", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def transform_args(hostdir, plugin, ro=False, config=KEY):
    return ["-v", f"{hostdir}:/mnt/s" + (":ro" if ro else ""), "--transform", f"/mnt/s={plugin}:{config}"]


def read(path):
    with open(path, "rb") as f:
        return f.read()


def sh(capsule, name, script, input=None, check=True):
    return capsule.run("exec", *(["-i"] if input is not None else []), name, "--", "sh", "-c", script,
                       input=input, text=input is None, check=check)


def fuse_servers(shim_pid):
    """pids of the capsule-fuse children of a shim."""
    return children_named(shim_pid, "capsule-fuse")


def test_a_file_written_inside_is_stored_transformed_and_reads_back_clear(capsule, hostdir, plugin):
    name = capsule.create(*transform_args(hostdir, plugin))
    clear = b"hello, transformed world\n" * 3
    sh(capsule, name, "cat > /mnt/s/note.txt", input=clear)
    stored = read(os.path.join(hostdir, "note.txt"))
    assert len(stored) == len(clear)
    assert stored != clear
    assert stored == xor(clear)
    r = capsule.run("exec", name, "--", "cat", "/mnt/s/note.txt", text=False, check=True)
    assert r.stdout == clear


def test_a_host_file_in_stored_form_reads_clear_inside(capsule, hostdir, plugin):
    clear = b"written on the host, encrypted at rest\n"
    with open(os.path.join(hostdir, "from-host"), "wb") as f:
        f.write(xor(clear))
    r = capsule.run("run", *transform_args(hostdir, plugin), "--", "cat", "/mnt/s/from-host", text=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout == clear


def test_random_access_writes_append_and_truncate_keep_the_stored_form_exact(capsule, hostdir, plugin):
    name = capsule.create(*transform_args(hostdir, plugin))
    f = "/mnt/s/ra"
    sh(capsule, name, f"printf 0123456789abcdefghij > {f}")
    # Overwrite in the middle without truncating, append, then write past the end (a gap).
    sh(capsule, name, f"printf XYZ | dd of={f} bs=1 seek=5 conv=notrunc status=none")
    sh(capsule, name, f"printf TAIL >> {f}")
    sh(capsule, name, f"printf END | dd of={f} bs=1 seek=30 conv=notrunc status=none")
    expect = b"01234XYZ89abcdefghijTAIL" + b"\0" * 6 + b"END"
    assert read(os.path.join(hostdir, "ra")) == xor(expect)
    assert capsule.run("exec", name, "--", "cat", f, text=False, check=True).stdout == expect
    # Shrink, then grow: the grown part reads as zeros, as on any filesystem.
    sh(capsule, name, f"truncate -s 10 {f} && truncate -s 16 {f}")
    expect = b"01234XYZ89" + b"\0" * 6
    assert read(os.path.join(hostdir, "ra")) == xor(expect)
    assert capsule.run("exec", name, "--", "cat", f, text=False, check=True).stdout == expect
    # A read at an offset decodes with that offset.
    r = sh(capsule, name, f"dd if={f} bs=1 skip=5 count=3 status=none")
    assert r.stdout == "XYZ"


def test_rename_mkdir_rmdir_ls_and_ownership_work_through_the_transform(capsule, hostdir, plugin):
    owned = os.path.join(hostdir, "by-1234")
    with open(owned, "wb") as f:
        f.write(xor(b"x"))
    os.chown(owned, 1234, 1234)
    name = capsule.create(*transform_args(hostdir, plugin))
    sh(capsule, name, "mkdir -p /mnt/s/d/e && echo moved > /mnt/s/d/e/f && mv /mnt/s/d/e/f /mnt/s/d/g"
                      " && rmdir /mnt/s/d/e && ln -s g /mnt/s/d/link")
    r = sh(capsule, name, "ls /mnt/s /mnt/s/d; cat /mnt/s/d/link; stat -c '%u:%g %n' /mnt/s /mnt/s/d/g /mnt/s/by-1234")
    # The server maps ids as a bind's idmap does, at both levels: another host user's file is
    # nobody's, and the sandbox's uid 1234 is its own host id, never host uid 1234.
    assert r.stdout == ("/mnt/s:\nby-1234\nd\n\n/mnt/s/d:\ng\nlink\nmoved\n"
                        "0:0 /mnt/s\n0:0 /mnt/s/d/g\n65534:65534 /mnt/s/by-1234\n")
    # The sandbox's root writes as the host user.
    st = os.stat(os.path.join(hostdir, "d", "g"))
    assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())
    assert read(os.path.join(hostdir, "d", "g")) == xor(b"moved\n")
    sh(capsule, name, "chmod 1777 /mnt/s/d")
    capsule.run("exec", "-u", "1234:1234", name, "--", "sh", "-c", "echo mine > /mnt/s/d/user-file", check=True)
    st = os.stat(os.path.join(hostdir, "d", "user-file"))
    # The sandbox's id slot picks its host range: 65536 ids from CAPSULE_UID_BASE on.
    assert st.st_uid == st.st_gid and st.st_uid >= CAPSULE_UID_BASE and (st.st_uid - CAPSULE_UID_BASE) % 65536 == 1234
    assert os.readlink(os.path.join(hostdir, "d", "link")) == "g"


def test_binary_data_with_all_256_byte_values_round_trips(capsule, hostdir, plugin):
    data = bytes(range(256)) * 64
    name = capsule.create(*transform_args(hostdir, plugin))
    sh(capsule, name, "cat > /mnt/s/bin", input=data)
    assert read(os.path.join(hostdir, "bin")) == xor(data)
    assert capsule.run("exec", name, "--", "cat", "/mnt/s/bin", text=False, check=True).stdout == data


def test_a_64_mib_file_round_trips_with_its_checksum(capsule, hostdir, plugin):
    name = capsule.create(*transform_args(hostdir, plugin))
    r = sh(capsule, name, "head -c 67108864 /dev/urandom > /tmp/src && cp /tmp/src /mnt/s/big"
                          " && sha256sum < /tmp/src && sha256sum < /mnt/s/big")
    want, got = [line.split()[0] for line in r.stdout.splitlines()]
    assert want == got
    stored = read(os.path.join(hostdir, "big"))
    assert len(stored) == 64 << 20
    assert hashlib.sha256(stored).hexdigest() != want
    # The first bytes on the host are the encoded first bytes of the clear file.
    head = capsule.run("exec", name, "--", "head", "-c", "4096", "/tmp/src", text=False, check=True).stdout
    assert stored[:4096] == xor(head)


def test_a_read_only_transform_mount_gives_erofs(capsule, hostdir, plugin):
    with open(os.path.join(hostdir, "f"), "wb") as f:
        f.write(xor(b"ro\n"))
    r = capsule.run("run", *transform_args(hostdir, plugin, ro=True), "--", "sh", "-c",
                    "cat /mnt/s/f; touch /mnt/s/new; echo rc=$?; echo y >> /mnt/s/f; echo rc=$?")
    assert r.stdout == "ro\nrc=1\nrc=2\n"
    assert r.stderr.count("Read-only file system") == 2
    assert os.listdir(hostdir) == ["f"]


def test_inspect_names_the_plugin_but_not_its_config_and_start_again_keeps_it(capsule, hostdir, plugin):
    name = capsule.create(*transform_args(hostdir, plugin))
    assert capsule.inspect(name)["mounts"] == [{"kind": "bind", "host_path": hostdir, "guest_path": "/mnt/s",
                                                "readonly": False, "transform": plugin}]
    assert KEY not in capsule.run("inspect", name, check=True).stdout
    sh(capsule, name, "echo before > /mnt/s/kept")
    capsule.run("stop", name, check=True)
    capsule.run("start", name, check=True)
    assert sh(capsule, name, "cat /mnt/s/kept").stdout == "before\n"
    assert read(os.path.join(hostdir, "kept")) == xor(b"before\n")


def test_no_capsule_fuse_is_left_after_stop(capsule, hostdir, plugin):
    other = tempfile.mkdtemp(prefix="capsule-transform-", dir="/tmp")
    try:
        name = capsule.create(*transform_args(hostdir, plugin), "-v", f"{other}:/mnt/t",
                              "--transform", f"/mnt/t={plugin}")
        shim = capsule.inspect(name)["shim_pid"]
        servers = fuse_servers(shim)
        assert len(servers) == 2
        capsule.run("stop", name, check=True, timeout=30)
        assert wait_until(lambda: not any(os.path.exists(f"/proc/{p}") for p in servers), timeout=5)
    finally:
        shutil.rmtree(other, ignore_errors=True)


@pytest.mark.parametrize("spec, message", [
    ("/mnt/s=/nonexistent/plugin.so", "transform plugin '/nonexistent/plugin.so': No such file or directory"),
    ("/mnt/s=relative/plugin.so", "transform plugin 'relative/plugin.so' is not an absolute path"),
    ("/mnt/s=/tmp", "transform plugin '/tmp' is not a regular file"),
    ("/mnt/other=/bin/true", "transform for '/mnt/other': no bind mount at that path"),
    ("/mnt/s", "invalid --transform '/mnt/s': expected DST=PLUGIN[:CONFIG]"),
])
def test_bad_transform_flags_fail_with_one_clear_line(capsule, hostdir, spec, message):
    r = capsule.run("run", "-v", f"{hostdir}:/mnt/s", "--transform", spec, "--", "true")
    assert_capsule_error(r)
    assert message in r.stderr


def test_a_plugin_without_the_symbol_fails_the_start_and_leaves_nothing(capsule, hostdir):
    nosym = os.path.join(capsule.build, "tests", "e2e", "transform-nosym.so")
    name = capsule.unique_name()
    r = capsule.run("run", "--name", name, "-v", f"{hostdir}:/mnt/s", "--transform", f"/mnt/s={nosym}", "--", "true")
    assert_capsule_error(r)
    assert f"transform plugin '{nosym}' does not export 'capsule_transform_v1'" in r.stderr
    assert not os.path.exists(run_dir(capsule, name))


def test_a_transform_on_a_single_file_is_refused(capsule, hostdir, plugin):
    path = os.path.join(hostdir, "file")
    open(path, "w").close()
    r = capsule.run("run", "-v", f"{path}:/etc/f", "--transform", f"/etc/f={plugin}", "--", "true")
    assert_capsule_error(r)
    assert "is not a folder" in r.stderr


def test_run_with_a_transform_ends_and_leaves_no_server(capsule, hostdir, plugin):
    before = set(fuse_servers_any())
    p = capsule.popen("run", *transform_args(hostdir, plugin), "--", "sh", "-c", "echo x > /mnt/s/x",
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.wait(timeout=60) == 0
    p.stdout.close()
    p.stderr.close()
    assert wait_until(lambda: not (set(fuse_servers_any()) - before), timeout=5)


def fuse_servers_any():
    out = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/comm") as f:
                if f.read().strip() == "capsule-fuse":
                    out.append(int(entry))
        except (FileNotFoundError, NotADirectoryError, ProcessLookupError):
            continue
    return out


def test_the_c_api_adds_a_transform_mount(capsule, hostdir, plugin):
    binary = os.path.join(capsule.build, "tests", "e2e", "transform_api_check")
    r = subprocess.run([binary, hostdir, plugin], env=capsule.env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ok transform-api" in r.stdout
    assert read(os.path.join(hostdir, "api")) == xor(b"through-the-api", config="api-key")


def test_a_volume_can_carry_a_transform_and_is_stored_transformed(capsule, plugin):
    vol = capsule.unique_name("tv")
    capsule.run("volume", "create", vol, "--quota", "16M", check=True)
    try:
        clear = b"volume content, encrypted at rest\n"
        args = ["-v", f"{vol}:/data", "--transform", f"/data={plugin}:{KEY}"]
        capsule.run("run", "-i", *args, "--", "sh", "-c", "cat > /data/f", input=clear, text=False, check=True)
        stored = capsule.run("volume", "read", vol, "/f", text=False, check=True).stdout
        assert stored == xor(clear)
        r = capsule.run("run", *args, "--", "cat", "/data/f", text=False, check=True)
        assert r.stdout == clear
        # Without the transform the sandbox sees the stored form, as the host does.
        r = capsule.run("run", "-v", f"{vol}:/data", "--", "cat", "/data/f", text=False, check=True)
        assert r.stdout == stored
    finally:
        capsule.run("volume", "rm", vol)
