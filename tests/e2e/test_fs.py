"""capsule fs and capsule cp: files inside a running sandbox over the protocol, end to end."""
import hashlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
import threading
import time

import pytest

from .helpers import assert_capsule_error

# Every test here runs at both isolation levels (tests/conftest.py, both_levels).
pytestmark = pytest.mark.both_levels

MIB = 1 << 20


def fs(capsule, name, *args, **kw):
    return capsule.run("fs", name, *args, **kw)


def fs_ok(capsule, name, *args, **kw):
    r = fs(capsule, name, *args, **kw)
    assert r.returncode == 0, f"fs {' '.join(args)} exited {r.returncode}: {r.stderr}"
    return r


def cat_bytes(capsule, name, path):
    r = fs(capsule, name, "cat", path, text=False)
    assert r.returncode == 0, r.stderr
    return r.stdout


def stat_json(capsule, name, path):
    return json.loads(fs_ok(capsule, name, "stat", "--json", path).stdout)


def ls_json(capsule, name, path):
    return json.loads(fs_ok(capsule, name, "ls", "--json", path).stdout)


def sh(capsule, name, script, **kw):
    return capsule.run("exec", name, "--", "sh", "-c", script, **kw)


@pytest.fixture
def hostdir():
    d = tempfile.mkdtemp(prefix="capsule-fs-", dir="/var/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


# ---- write, cat ----------------------------------------------------------------------------


def test_write_with_content_argument_then_cat_prints_it_exactly(capsule, sandbox):
    fs_ok(capsule, sandbox, "write", "/tmp/config.json", '{"debug": true}')
    assert cat_bytes(capsule, sandbox, "/tmp/config.json") == b'{"debug": true}'
    # What the sandbox's own processes see is the same file.
    r = capsule.run("exec", sandbox, "--", "cat", "/tmp/config.json", check=True)
    assert r.stdout == '{"debug": true}'


@pytest.mark.vm_in_check  # on the module's one shared vm
def test_all_256_byte_values_round_trip_through_stdin(capsule, sandbox):
    data = bytes(range(256)) * 1031 + bytes(reversed(range(256))) + b"\0\r\n\x1b[2J"
    fs_ok(capsule, sandbox, "write", "/tmp/bin", input=data, text=False)
    assert cat_bytes(capsule, sandbox, "/tmp/bin") == data
    r = capsule.run("exec", sandbox, "--", "sha256sum", "/tmp/bin", check=True)
    assert r.stdout.split()[0] == hashlib.sha256(data).hexdigest()


def test_several_files_are_printed_in_order_by_one_cat(capsule, sandbox):
    fs_ok(capsule, sandbox, "write", "/tmp/one", "1\n")
    fs_ok(capsule, sandbox, "write", "/tmp/two", "2\n")
    assert fs_ok(capsule, sandbox, "cat", "/tmp/one", "/tmp/two", "/tmp/one").stdout == "1\n2\n1\n"


def test_empty_files_from_stdin_and_from_an_empty_argument(capsule, sandbox):
    fs_ok(capsule, sandbox, "write", "/tmp/empty-stdin", input=b"", text=False)
    fs_ok(capsule, sandbox, "write", "/tmp/empty-arg", "")
    for p in ("/tmp/empty-stdin", "/tmp/empty-arg"):
        assert cat_bytes(capsule, sandbox, p) == b""
        st = stat_json(capsule, sandbox, p)
        assert (st["kind"], st["size"]) == ("file", 0)
    # Emptying a file that had content.
    fs_ok(capsule, sandbox, "write", "/tmp/was-full", "content")
    fs_ok(capsule, sandbox, "write", "/tmp/was-full", input=b"", text=False)
    assert cat_bytes(capsule, sandbox, "/tmp/was-full") == b""


def test_names_with_spaces_and_unicode(capsule, sandbox):
    folder = "/tmp/a folder with spaces/ünïcødé ☃ 日本"
    path = folder + "/file name – ✓.txt"
    fs_ok(capsule, sandbox, "write", "-p", path, "snow ☃\n")
    assert fs_ok(capsule, sandbox, "cat", path).stdout == "snow ☃\n"
    assert fs_ok(capsule, sandbox, "ls", folder).stdout == "file name – ✓.txt\n"
    [entry] = ls_json(capsule, sandbox, folder)
    assert entry["name"] == "file name – ✓.txt" and entry["path"] == path
    r = capsule.run("exec", sandbox, "--", "cat", path, check=True)
    assert r.stdout == "snow ☃\n"
    fs_ok(capsule, sandbox, "mv", path, folder + "/renamed ✓")
    fs_ok(capsule, sandbox, "rm", "-r", "/tmp/a folder with spaces")
    assert "a folder with spaces" not in fs_ok(capsule, sandbox, "ls", "/tmp").stdout


def _stream_sha256(stream, expect_bytes=None):
    h = hashlib.sha256()
    total = 0
    while True:
        chunk = stream.read(MIB)
        if not chunk:
            break
        h.update(chunk)
        total += len(chunk)
    return h.hexdigest(), total


def test_ls_on_a_terminal_shows_control_characters_as_question_marks(capsule, sandbox):
    """Names come from the sandbox: on a terminal, ls prints C0 controls, the C1 ones (U+009B
    is CSI to some terminals) and bytes that are no UTF-8 (0x9b alone is CSI to an 8-bit
    terminal) as '?', and leaves other characters as they are."""
    sh(capsule, sandbox, "mkdir -p /tmp/tty && cd /tmp/tty && touch \"$(printf 'a\\033[31m')\" "
       "\"$(printf 'b\\302\\23331m')\" \"$(printf 'c\\233')\" d-\u00e9\u2603", check=True)
    cmd = " ".join([capsule.binary, "fs", sandbox, "ls", "/tmp/tty"])
    r = subprocess.run(["script", "-qec", cmd, "/dev/null"], stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=60, env=capsule.env)
    assert r.returncode == 0, r
    assert r.stdout.replace(b"\r", b"").splitlines() == [b"a?[31m", b"b?31m", b"c?", "d-\u00e9\u2603".encode()]


def test_one_gib_round_trip_with_sha256_on_both_sides(capsule):
    # A vm's tmpfs is its guest's RAM (512M by default): room for the GiB, and its kernel.
    name = capsule.create("--tmpfs", "/big:size=1100M", *(["--memory", "2G"] if capsule.isolation == "vm" else []))
    size = 1 << 30
    # Written from a pipe, hashed as it goes: 1 GiB is never held in memory here.
    w = capsule.popen("fs", name, "write", "/big/blob", stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    h = hashlib.sha256()
    seed = os.urandom(MIB)
    try:
        for i in range(size // MIB):
            # Each MiB differs (its index in front), so a dropped or repeated chunk shows.
            chunk = i.to_bytes(8, "little") + seed[8:]
            h.update(chunk)
            w.stdin.write(chunk)
        w.stdin.close()
        assert w.wait(timeout=300) == 0, w.stderr.read()
    finally:
        if w.poll() is None:
            w.kill()
            w.wait()
        w.stderr.close()
    sent = h.hexdigest()
    r = capsule.run("exec", name, "--", "sha256sum", "/big/blob", check=True, timeout=300)
    assert r.stdout.split()[0] == sent, "the file inside differs from what was written"
    c = capsule.popen("fs", name, "cat", "/big/blob", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        got, total = _stream_sha256(c.stdout)
        assert c.wait(timeout=300) == 0, c.stderr.read()
    finally:
        if c.poll() is None:
            c.kill()
            c.wait()
        c.stdout.close()
        c.stderr.close()
    assert total == size
    assert got == sent


# ---- ls, stat ------------------------------------------------------------------------------


@pytest.mark.vm_in_check  # on the module's one shared vm
def test_ls_json_fields_kinds_and_sorting(capsule, sandbox):
    fs_ok(capsule, sandbox, "mkdir", "/tmp/l")
    fs_ok(capsule, sandbox, "write", "/tmp/l/b", "bee")
    fs_ok(capsule, sandbox, "write", "--mode", "0600", "/tmp/l/a", "a")
    fs_ok(capsule, sandbox, "write", "/tmp/l/C", "")
    fs_ok(capsule, sandbox, "mkdir", "--mode", "0750", "/tmp/l/dir")
    fs_ok(capsule, sandbox, "ln", "-s", "/etc/hostname", "/tmp/l/link")
    sh(capsule, sandbox, "mkfifo /tmp/l/pipe && chown 12:34 /tmp/l/b && touch -d @1000000000.5 /tmp/l/b",
       check=True)
    entries = ls_json(capsule, sandbox, "/tmp/l")
    assert [e["name"] for e in entries] == ["C", "a", "b", "dir", "link", "pipe"]  # byte order
    by = {e["name"]: e for e in entries}
    for e in entries:
        assert e["path"] == "/tmp/l/" + e["name"]
        assert set(e) >= {"name", "path", "kind", "size", "mode", "mtime", "mtime_ns", "uid", "gid"}
        assert ("link_target" in e) == (e["kind"] == "symlink")
        assert len(e["mode"]) == 4 and int(e["mode"], 8) <= 0o7777
        assert isinstance(e["mtime_ns"], int) and e["mtime_ns"] > 0
    assert [by[n]["kind"] for n in ("a", "dir", "link", "pipe")] == ["file", "dir", "symlink", "other"]
    assert (by["b"]["size"], by["b"]["uid"], by["b"]["gid"], by["b"]["mode"]) == (3, 12, 34, "0644")
    assert by["b"]["mtime_ns"] == 1000000000_500000000
    assert by["b"]["mtime"] == "2001-09-09T01:46:40Z"
    assert (by["a"]["mode"], by["dir"]["mode"]) == ("0600", "0750")
    assert by["link"]["link_target"] == "/etc/hostname"
    assert (by["C"]["size"], by["a"]["uid"], by["a"]["gid"]) == (0, 0, 0)
    # A trailing slash gives the same paths.
    assert [e["path"] for e in ls_json(capsule, sandbox, "/tmp/l/")] == [e["path"] for e in entries]


def test_ls_plain_long_and_default_root(capsule, sandbox):
    fs_ok(capsule, sandbox, "mkdir", "-p", "/tmp/p/sub")
    fs_ok(capsule, sandbox, "write", "/tmp/p/f", "12345")
    fs_ok(capsule, sandbox, "ln", "-s", "f", "/tmp/p/ln")
    assert fs_ok(capsule, sandbox, "ls", "/tmp/p").stdout == "f\nln\nsub\n"
    lines = fs_ok(capsule, sandbox, "ls", "-l", "/tmp/p").stdout.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("-rw-r--r--") and lines[0].split()[3] == "5" and lines[0].endswith(" f")
    assert lines[1].startswith("l") and lines[1].endswith(" ln -> f")
    assert lines[2].startswith("drwxr-xr-x") and lines[2].endswith(" sub")
    root = fs_ok(capsule, sandbox, "ls").stdout.split()
    assert "etc" in root and "tmp" in root and root == sorted(root)
    assert fs_ok(capsule, sandbox, "ls", "/tmp/p/sub").stdout == ""


def test_stat_of_a_symlink_reports_the_link_not_its_target(capsule, sandbox):
    fs_ok(capsule, sandbox, "ln", "-s", "/etc", "/tmp/etc-link")
    st = stat_json(capsule, sandbox, "/tmp/etc-link")
    assert (st["kind"], st["link_target"], st["name"], st["path"]) == ("symlink", "/etc", "etc-link", "/tmp/etc-link")
    text = fs_ok(capsule, sandbox, "stat", "/tmp/etc-link").stdout
    assert "kind: symlink\n" in text and "link_target: /etc\n" in text
    # A path through the link is resolved inside the sandbox.
    assert stat_json(capsule, sandbox, "/tmp/etc-link/hostname")["kind"] == "file"
    st = stat_json(capsule, sandbox, "/")
    assert (st["kind"], st["name"], st["path"]) == ("dir", "/", "/")


# ---- write: modes, owners, parents, atomicity ------------------------------------------------


def test_write_gives_a_new_file_the_mode_asked_for_umask_ignored_setid_dropped(capsule, sandbox):
    fs_ok(capsule, sandbox, "write", "/tmp/default", "x")
    fs_ok(capsule, sandbox, "write", "--mode", "0777", "/tmp/m777", "x")
    fs_ok(capsule, sandbox, "write", "--mode", "600", "/tmp/m600", "x")
    fs_ok(capsule, sandbox, "write", "--mode", "1777", "/tmp/sticky", "x")
    # No set-id file can be made in a sandbox (it might be a host file, in a bind).
    fs_ok(capsule, sandbox, "write", "--mode", "6755", "/tmp/suid", "x")
    got = {p: stat_json(capsule, sandbox, "/tmp/" + p)["mode"] for p in ("default", "m777", "m600", "sticky", "suid")}
    assert got == {"default": "0644", "m777": "0777", "m600": "0600", "sticky": "1777", "suid": "0755"}


def test_write_keeps_the_mode_and_owner_of_an_existing_file(capsule, sandbox):
    fs_ok(capsule, sandbox, "write", "/tmp/kept", "old")
    sh(capsule, sandbox, "chown 12:34 /tmp/kept && chmod 0640 /tmp/kept", check=True)
    fs_ok(capsule, sandbox, "write", "--mode", "0777", "/tmp/kept", "new")  # --mode is for new files
    st = stat_json(capsule, sandbox, "/tmp/kept")
    assert (st["mode"], st["uid"], st["gid"], st["size"]) == ("0640", 12, 34, 3)
    assert cat_bytes(capsule, sandbox, "/tmp/kept") == b"new"


def test_a_replaced_file_of_ours_keeps_its_mode_and_a_new_one_gets_the_mode_asked_for(capsule, sandbox):
    # The commit changes owner and mode only where the new file differs from the old one: a
    # root-owned 0600 file needs nothing, a 0640 one its mode back; a new file is made with
    # its mode (less the umask, which the commit then undoes).
    sh(capsule, sandbox, "echo a > /tmp/p600 && chmod 600 /tmp/p600 && echo b > /tmp/p640 && chmod 640 /tmp/p640 "
       "&& mkdir -p /tmp/newmodes", check=True)
    for p in ("/tmp/p600", "/tmp/p640"):
        fs_ok(capsule, sandbox, "write", p, "replaced " + p)
    fs_ok(capsule, sandbox, "write", "--mode", "0664", "/tmp/newmodes/g", "new")
    fs_ok(capsule, sandbox, "write", "--mode", "0640", "/tmp/newmodes/h", "new")
    got = {p: stat_json(capsule, sandbox, p) for p in ("/tmp/p600", "/tmp/p640", "/tmp/newmodes/g", "/tmp/newmodes/h")}
    assert {p: (st["mode"], st["uid"], st["gid"]) for p, st in got.items()} == {
        "/tmp/p600": ("0600", 0, 0), "/tmp/p640": ("0640", 0, 0), "/tmp/newmodes/g": ("0664", 0, 0),
        "/tmp/newmodes/h": ("0640", 0, 0)}
    for p in ("/tmp/p600", "/tmp/p640"):
        assert cat_bytes(capsule, sandbox, p) == ("replaced " + p).encode()
    assert [e["name"] for e in ls_json(capsule, sandbox, "/tmp/newmodes")] == ["g", "h"]


@pytest.mark.parametrize("size", [0, 1, 4096, 256 * 1024 - 1, 256 * 1024])
def test_a_file_up_to_a_chunk_reads_back_whole(capsule, sandbox, size):
    # A read answered in its request's turn ends at the size the file had at its open,
    # with the EOF on the last chunk; a file of exactly a chunk still needs the read that
    # finds the end.
    data = os.urandom(size)
    fs_ok(capsule, sandbox, "write", "/tmp/sized", input=data, text=False)
    assert cat_bytes(capsule, sandbox, "/tmp/sized") == data


def test_a_file_whose_size_says_nothing_is_read_to_its_end(capsule, sandbox):
    # /proc files have a size of 0 and content: the read goes on until a read finds the end.
    want = sh(capsule, sandbox, "cat /proc/version", text=False, check=True).stdout
    assert want and cat_bytes(capsule, sandbox, "/proc/version") == want
    assert len(cat_bytes(capsule, sandbox, "/proc/1/mounts")) > 0


def test_small_writes_and_reads_leave_the_agent_no_descriptor_open(capsule, sandbox):
    # Each operation's files are closed after its answer is sent, not before: none may stay.
    def agent_fds():
        return int(sh(capsule, sandbox, "ls /proc/1/fd | wc -l", check=True).stdout.strip())
    base = agent_fds()
    for i in range(40):
        fs_ok(capsule, sandbox, "write", f"/tmp/many{i % 5}", str(i))
        assert cat_bytes(capsule, sandbox, f"/tmp/many{i % 5}") == str(i).encode()
    assert agent_fds() <= base


def test_write_p_creates_missing_parents_and_without_it_fails_cleanly(capsule, sandbox):
    r = fs(capsule, sandbox, "write", "/tmp/x/y/z/file", "data")
    assert_capsule_error(r)
    assert "/tmp/x/y/z/file" in r.stderr and "No such file or directory" in r.stderr
    assert "(-p makes the missing folders)" in r.stderr, r.stderr
    fs_ok(capsule, sandbox, "write", "-p", "/tmp/x/y/z/file", "data")
    assert cat_bytes(capsule, sandbox, "/tmp/x/y/z/file") == b"data"
    assert stat_json(capsule, sandbox, "/tmp/x/y")["kind"] == "dir"


def test_a_failed_write_leaves_the_old_content_and_no_temporary_file(capsule):
    name = capsule.create("--tmpfs", "/small:size=1M")
    fs_ok(capsule, name, "write", "/small/f", "old content")
    r = fs(capsule, name, "write", "/small/f", input=os.urandom(3 * MIB), text=False)
    assert r.returncode == 125
    err = r.stderr.decode()
    assert_capsule_error(subprocess.CompletedProcess([], 125, "", err))
    assert "No space left on device" in err and "'/small/f'" in err
    assert cat_bytes(capsule, name, "/small/f") == b"old content"
    assert fs_ok(capsule, name, "ls", "-l", "/small").stdout.count("\n") == 1
    assert [e["name"] for e in ls_json(capsule, name, "/small")] == ["f"]
    # The space is free again: a write that fits works.
    fs_ok(capsule, name, "write", "/small/f", input=b"y" * (512 * 1024), text=False)
    assert stat_json(capsule, name, "/small/f")["size"] == 512 * 1024


def test_a_killed_writer_leaves_the_old_content_and_no_temporary_file(capsule, sandbox):
    fs_ok(capsule, sandbox, "write", "/tmp/victim", "old")
    w = capsule.popen("fs", sandbox, "write", "/tmp/victim", stdin=subprocess.PIPE, stderr=subprocess.DEVNULL)
    w.stdin.write(b"partial " * 100000)
    w.stdin.flush()
    # Wait until the temporary file holds some of it, then kill the writer mid-stream.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        names = [e["name"] for e in ls_json(capsule, sandbox, "/tmp")]
        if any(n.startswith(".capsule-write-") for n in names):
            break
        time.sleep(0.05)
    w.kill()
    w.wait()
    w.stdin.close()
    assert cat_bytes(capsule, sandbox, "/tmp/victim") == b"old"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        left = [e["name"] for e in ls_json(capsule, sandbox, "/tmp") if e["name"].startswith(".capsule-write-")]
        if not left:
            break
        time.sleep(0.05)
    assert not left


def test_a_killed_reader_leaves_the_sandbox_serving_and_nothing_held(capsule, sandbox):
    # At the container level a large read is a direct stream (its own socket to the agent):
    # a reader killed half way must cost the agent nothing it keeps.
    data = os.urandom(8 * MIB)
    fs_ok(capsule, sandbox, "write", "/tmp/big", input=data, text=False)
    agent = None
    if capsule.isolation == "container":
        agent = json.load(open(os.path.join(capsule.home, "run", sandbox, "state.json")))["init_pid"]
        base = len(os.listdir(f"/proc/{agent}/fd"))
    for _ in range(3):
        c = capsule.popen("fs", sandbox, "cat", "/tmp/big", stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert len(c.stdout.read(MIB)) == MIB
        c.kill()
        c.wait()
        c.stdout.close()
    assert cat_bytes(capsule, sandbox, "/tmp/big") == data
    if agent:
        deadline = time.monotonic() + 10
        while len(os.listdir(f"/proc/{agent}/fd")) > base and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(os.listdir(f"/proc/{agent}/fd")) <= base


# ---- mkdir, rm, mv, ln ---------------------------------------------------------------------


def test_mkdir_plain_parents_mode_and_existing(capsule, sandbox):
    fs_ok(capsule, sandbox, "mkdir", "/tmp/d1", "/tmp/d2")
    fs_ok(capsule, sandbox, "mkdir", "-p", "--mode", "0700", "/tmp/d3/deep/er")
    assert stat_json(capsule, sandbox, "/tmp/d3/deep/er")["mode"] == "0700"
    assert {e["name"] for e in ls_json(capsule, sandbox, "/tmp")} >= {"d1", "d2", "d3"}
    r = fs(capsule, sandbox, "mkdir", "/tmp/d1")
    assert_capsule_error(r)
    assert "File exists" in r.stderr
    fs_ok(capsule, sandbox, "mkdir", "-p", "/tmp/d1")  # as mkdir -p: fine when it is there
    r = fs(capsule, sandbox, "mkdir", "/tmp/nope/sub")
    assert_capsule_error(r)
    fs_ok(capsule, sandbox, "write", "/tmp/plainfile", "x")
    r = fs(capsule, sandbox, "mkdir", "-p", "/tmp/plainfile")
    assert_capsule_error(r)


def test_rm_files_folders_recursive_and_force(capsule, sandbox):
    fs_ok(capsule, sandbox, "write", "-p", "/tmp/r/sub/f", "x")
    fs_ok(capsule, sandbox, "write", "/tmp/r/g", "x")
    fs_ok(capsule, sandbox, "ln", "-s", "/etc", "/tmp/r/sub/etc-link")
    r = fs(capsule, sandbox, "rm", "/tmp/r")
    assert_capsule_error(r)
    assert "not empty" in r.stderr
    fs_ok(capsule, sandbox, "rm", "/tmp/r/g")
    fs_ok(capsule, sandbox, "rm", "-r", "/tmp/r")
    assert_capsule_error(fs(capsule, sandbox, "stat", "/tmp/r"))
    # The link inside went, not what it pointed at.
    assert stat_json(capsule, sandbox, "/etc/hostname")["kind"] == "file"
    fs_ok(capsule, sandbox, "rm", "-f", "/tmp/never-was", "/tmp/never-either")
    r = fs(capsule, sandbox, "rm", "/tmp/never-was")
    assert_capsule_error(r)
    assert "No such file or directory" in r.stderr
    fs_ok(capsule, sandbox, "mkdir", "/tmp/emptydir")
    fs_ok(capsule, sandbox, "rm", "/tmp/emptydir")
    assert_capsule_error(fs(capsule, sandbox, "rm", "-rf", "/"))
    assert stat_json(capsule, sandbox, "/etc")["kind"] == "dir"


def test_rm_of_a_symlink_to_a_folder_removes_the_link_only(capsule, sandbox):
    fs_ok(capsule, sandbox, "write", "-p", "/tmp/keep/inside", "x")
    fs_ok(capsule, sandbox, "ln", "-s", "/tmp/keep", "/tmp/keeplink")
    fs_ok(capsule, sandbox, "rm", "-r", "/tmp/keeplink")
    assert cat_bytes(capsule, sandbox, "/tmp/keep/inside") == b"x"


def test_mv_renames_and_mv_n_refuses_to_replace(capsule, sandbox):
    fs_ok(capsule, sandbox, "write", "/tmp/src", "source")
    fs_ok(capsule, sandbox, "write", "/tmp/dst", "destination")
    r = fs(capsule, sandbox, "mv", "-n", "/tmp/src", "/tmp/dst")
    assert_capsule_error(r)
    assert "File exists" in r.stderr
    assert cat_bytes(capsule, sandbox, "/tmp/src") == b"source"
    assert cat_bytes(capsule, sandbox, "/tmp/dst") == b"destination"
    fs_ok(capsule, sandbox, "mv", "-n", "/tmp/src", "/tmp/fresh")
    assert cat_bytes(capsule, sandbox, "/tmp/fresh") == b"source"
    fs_ok(capsule, sandbox, "mv", "/tmp/fresh", "/tmp/dst")
    assert cat_bytes(capsule, sandbox, "/tmp/dst") == b"source"
    assert_capsule_error(fs(capsule, sandbox, "stat", "/tmp/fresh"))
    fs_ok(capsule, sandbox, "mkdir", "/tmp/movedir")
    fs_ok(capsule, sandbox, "mv", "/tmp/movedir", "/tmp/moveddir")
    assert stat_json(capsule, sandbox, "/tmp/moveddir")["kind"] == "dir"
    assert_capsule_error(fs(capsule, sandbox, "mv", "/tmp/absent", "/tmp/x"))


def test_ln_s_makes_a_link_resolved_inside(capsule, sandbox):
    fs_ok(capsule, sandbox, "write", "/tmp/target", "via link")
    fs_ok(capsule, sandbox, "ln", "-s", "target", "/tmp/rel")
    fs_ok(capsule, sandbox, "ln", "-s", "/tmp/target", "/tmp/abs")
    assert cat_bytes(capsule, sandbox, "/tmp/rel") == b"via link"
    assert cat_bytes(capsule, sandbox, "/tmp/abs") == b"via link"
    r = fs(capsule, sandbox, "ln", "-s", "/x", "/tmp/abs")
    assert_capsule_error(r)
    assert "File exists" in r.stderr
    # Writing through PATH replaces the link itself, never the file it points to.
    fs_ok(capsule, sandbox, "write", "/tmp/abs", "replaced")
    assert stat_json(capsule, sandbox, "/tmp/abs")["kind"] == "file"
    assert cat_bytes(capsule, sandbox, "/tmp/target") == b"via link"


# ---- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("args,needle", [
    (("cat", "/no/such/file"), "No such file or directory"),
    (("cat", "/tmp"), "Is a directory"),
    (("cat", "tmp/relative"), "not an absolute path"),
    (("write", "relative", "x"), "not an absolute path"),
    (("write", "/tmp", "x"), "Is a directory"),
    (("ls", "/etc/hostname"), "Not a directory"),
    (("ls", "/no/such/dir"), "No such file or directory"),
    (("stat", "/no/such"), "No such file or directory"),
    (("frobnicate", "/tmp"), "unknown command 'frobnicate'"),
    (("mv", "/tmp/only-one"), "wrong number"),
    (("stat", "/a", "/b"), "wrong number"),
    (("write",), "wrong number"),
    (("write", "/a", "b", "c"), "wrong number"),
    (("cat",), "wrong number"),
    (("ls", "/a", "/b"), "wrong number"),
    (("ln", "/a", "/b"), "-s"),
    (("rm", "-z", "/a"), "unknown flag '-z'"),
    (("write", "--mode", "999", "/tmp/x", "y"), "--mode"),
    (("write", "--mode", "012345", "/tmp/x", "y"), "--mode"),
    (("mkdir", "--mode"), "--mode"),
    (("cat", "/" + "a" * 5000), "longer than 4096"),
])
def test_fs_errors_are_one_line_with_exit_125(capsule, sandbox, args, needle):
    r = fs(capsule, sandbox, *args)
    assert_capsule_error(r)
    assert needle in r.stderr
    assert r.stdout == ""


def test_fs_on_a_stopped_or_unknown_sandbox_is_one_line_125(capsule):
    name = capsule.create()
    capsule.run("stop", name, check=True)
    r = fs(capsule, name, "cat", "/etc/hostname")
    assert_capsule_error(r)
    assert "not running" in r.stderr
    r = capsule.run("cp", "/etc/hostname", f"{name}:/tmp/x")
    assert_capsule_error(r)
    assert "not running" in r.stderr
    r = fs(capsule, "no-such-sandbox-here", "ls", "/")
    assert_capsule_error(r)
    assert "no-such-sandbox-here" in r.stderr
    assert_capsule_error(capsule.run("fs"))
    assert_capsule_error(capsule.run("fs", name))
    assert fs(capsule, "--help").returncode == 0


# ---- cp ------------------------------------------------------------------------------------


def _tree(root):
    """{relative path: ('f', mode, bytes) | ('d', mode) | ('l', target)} without following links."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("l", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("d", stat.S_IMODE(st.st_mode))
            else:
                with open(p, "rb") as f:
                    out[rel] = ("f", stat.S_IMODE(st.st_mode), f.read())
    return out


def _make_host_tree(root):
    os.makedirs(os.path.join(root, "sub", "deeper"))
    with open(os.path.join(root, "plain.txt"), "w") as f:
        f.write("plain\n")
    with open(os.path.join(root, "run.sh"), "w") as f:
        f.write("#!/bin/sh\n")
    os.chmod(os.path.join(root, "run.sh"), 0o750)
    with open(os.path.join(root, "sub", "deeper", "bin"), "wb") as f:
        f.write(bytes(range(256)))
    with open(os.path.join(root, "with space ✓"), "w") as f:
        f.write("u")
    os.chmod(os.path.join(root, "sub"), 0o711)
    os.symlink("plain.txt", os.path.join(root, "rel-link"))
    os.symlink("/etc/passwd", os.path.join(root, "abs-link"))
    os.symlink("loop", os.path.join(root, "loop"))
    os.symlink("..", os.path.join(root, "sub", "up"))  # a folder loop through a link


def test_cp_a_file_host_to_sandbox_and_back_keeps_bytes_and_mode(capsule, sandbox, hostdir):
    src = os.path.join(hostdir, "f.bin")
    data = bytes(range(256)) * 100
    with open(src, "wb") as f:
        f.write(data)
    os.chmod(src, 0o640)
    capsule.run("cp", src, f"{sandbox}:/tmp/f.bin", check=True)
    assert cat_bytes(capsule, sandbox, "/tmp/f.bin") == data
    assert stat_json(capsule, sandbox, "/tmp/f.bin")["mode"] == "0640"
    back = os.path.join(hostdir, "back.bin")
    capsule.run("cp", f"{sandbox}:/tmp/f.bin", back, check=True)
    with open(back, "rb") as f:
        assert f.read() == data
    assert stat.S_IMODE(os.stat(back).st_mode) == 0o640
    # Over an existing host file: replaced.
    capsule.run("cp", f"{sandbox}:/etc/hostname", back, check=True)
    with open(back) as f:
        assert f.read() == capsule.run("exec", sandbox, "--", "cat", "/etc/hostname", check=True).stdout
    assert [n for n in os.listdir(hostdir) if n.startswith(".capsule-")] == []


def test_cp_a_file_into_an_existing_folder_uses_its_own_name(capsule, sandbox, hostdir):
    src = os.path.join(hostdir, "named.txt")
    with open(src, "w") as f:
        f.write("n")
    capsule.run("cp", src, f"{sandbox}:/tmp", check=True)
    assert cat_bytes(capsule, sandbox, "/tmp/named.txt") == b"n"
    out = os.path.join(hostdir, "out")
    os.mkdir(out)
    capsule.run("cp", f"{sandbox}:/etc/hostname", out, check=True)
    assert os.listdir(out) == ["hostname"]


def test_cp_a_folder_both_ways_keeps_modes_and_copies_links_as_links(capsule, sandbox, hostdir):
    src = os.path.join(hostdir, "tree")
    _make_host_tree(src)
    want = _tree(src)
    capsule.run("cp", src, f"{sandbox}:/tmp/tree", check=True, timeout=120)
    st = stat_json(capsule, sandbox, "/tmp/tree/abs-link")
    assert (st["kind"], st["link_target"]) == ("symlink", "/etc/passwd")
    assert stat_json(capsule, sandbox, "/tmp/tree/sub/up")["link_target"] == ".."
    assert stat_json(capsule, sandbox, "/tmp/tree/run.sh")["mode"] == "0750"
    assert stat_json(capsule, sandbox, "/tmp/tree/sub")["mode"] == "0711"
    back = os.path.join(hostdir, "back")
    capsule.run("cp", f"{sandbox}:/tmp/tree", back, check=True, timeout=120)
    assert _tree(back) == want
    # Into an existing folder, under the source's name, both directions (as docker cp).
    fs_ok(capsule, sandbox, "mkdir", "/tmp/into")
    capsule.run("cp", src, f"{sandbox}:/tmp/into", check=True, timeout=120)
    assert [e["name"] for e in ls_json(capsule, sandbox, "/tmp/into")] == ["tree"]
    into = os.path.join(hostdir, "into")
    os.mkdir(into)
    capsule.run("cp", f"{sandbox}:/tmp/into/tree", into, check=True, timeout=120)
    assert os.listdir(into) == ["tree"]
    assert _tree(os.path.join(into, "tree")) == want


def test_cp_a_symlink_itself_is_copied_as_a_link(capsule, sandbox, hostdir):
    link = os.path.join(hostdir, "l")
    os.symlink("/etc/shadow", link)
    capsule.run("cp", link, f"{sandbox}:/tmp/cp-link", check=True)
    assert stat_json(capsule, sandbox, "/tmp/cp-link")["link_target"] == "/etc/shadow"
    fs_ok(capsule, sandbox, "ln", "-s", "/etc/passwd", "/tmp/cp-link2")
    capsule.run("cp", f"{sandbox}:/tmp/cp-link2", os.path.join(hostdir, "l2"), check=True)
    assert os.readlink(os.path.join(hostdir, "l2")) == "/etc/passwd"


def test_cp_of_a_sandbox_folder_holding_a_symlink_loop_ends(capsule, sandbox, hostdir):
    sh(capsule, sandbox, "mkdir -p /tmp/loopy/a && ln -s .. /tmp/loopy/a/up && ln -s self /tmp/loopy/self "
       "&& ln -s /tmp/loopy /tmp/loopy/a/abs", check=True)
    out = os.path.join(hostdir, "loopy")
    capsule.run("cp", f"{sandbox}:/tmp/loopy", out, check=True, timeout=60)
    assert _tree(out) == {"a": ("d", 0o755), "a/up": ("l", ".."), "a/abs": ("l", "/tmp/loopy"),
                          "self": ("l", "self")}


@pytest.mark.parametrize("args,needle", [
    (("/etc/hostname", "/tmp/x"), "exactly one"),
    (("a:/x", "b:/y"), "exactly one"),
    (("only-one",), "SRC and DST"),
    (("/no/such/host/file", "SANDBOX:/tmp/x"), "No such file or directory"),
    (("SANDBOX:/no/such/file", "/var/tmp/capsule-never-made"), "No such file or directory"),
    (("/etc/hostname", "SANDBOX:relative"), "absolute"),
    # A trailing slash names a folder: one that is not there is refused, in both directions,
    # as docker cp does (a file named like it was made before).
    (("SANDBOX:/etc/hostname", "/var/tmp/capsule-never-made/"), "No such file or directory"),
    (("/etc/hostname", "SANDBOX:/no/such/folder/"), "No such file or directory"),
])
def test_cp_errors_are_one_line_with_exit_125(capsule, sandbox, args, needle):
    r = capsule.run("cp", *(a.replace("SANDBOX", sandbox) for a in args))
    assert_capsule_error(r)
    assert needle in r.stderr
    assert not os.path.exists("/var/tmp/capsule-never-made")


# ---- constant memory -------------------------------------------------------------------------


@pytest.mark.container_only  # the agent's memory is the host's to see only in a container
def test_cat_of_a_2_gib_file_runs_in_constant_memory(capsule, sandbox):
    size = 2 << 30
    sh(capsule, sandbox, f"truncate -s {size} /tmp/sparse", check=True)
    state = json.load(open(os.path.join(capsule.home, "run", sandbox, "state.json")))
    c = capsule.popen("fs", sandbox, "cat", "/tmp/sparse", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peaks = {"cli": 0, "shim": 0, "agent": 0}
    pids = {"cli": c.pid, "shim": state["shim_pid"], "agent": state["init_pid"]}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            for k, pid in pids.items():
                try:
                    with open(f"/proc/{pid}/status") as f:
                        for line in f:
                            if line.startswith("VmRSS:"):
                                peaks[k] = max(peaks[k], int(line.split()[1]))
                except OSError:
                    pass
            time.sleep(0.02)

    t = threading.Thread(target=sample)
    t.start()
    try:
        total = 0
        while True:
            chunk = c.stdout.read(MIB)
            if not chunk:
                break
            total += len(chunk)
        assert c.wait(timeout=300) == 0, c.stderr.read()
    finally:
        stop.set()
        t.join()
        if c.poll() is None:
            c.kill()
            c.wait()
        c.stdout.close()
        c.stderr.close()
    assert total == size
    assert all(v > 0 for v in peaks.values()), peaks
    assert max(peaks.values()) < 64 * 1024, f"VmRSS peaks in KiB: {peaks}"
