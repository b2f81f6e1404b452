"""Saves against a hostile sandbox: what it plants in its own layer (symlinks, fifos, set-id
files, hard links, devices) is copied as data, never followed on the host, and never becomes a
device or a set-id file any other host user can reach; save names cannot leave the store. A
save costs the host what the sandbox stored (holes stay holes) and never stalls its shim."""
import json
import os
import signal
import stat
import subprocess
import time
import uuid

import pytest

from secutil import assert_alive, sh


def sname():
    return f"sec-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def save_name(capsule):
    made = []

    def make():
        n = sname()
        made.append(n)
        return n

    yield make
    capsule.cleanup()
    for n in made:
        capsule.run("saves", "rm", n)


def layer(capsule, save, *parts):
    return os.path.join(capsule.home, "saves", save, "layer", *parts)


def test_planted_links_fifos_and_hard_links_are_copied_as_data(capsule, save_name):
    name = capsule.create()
    r = sh(capsule, name, "set -e; ln -s /etc/shadow /root/shadow; ln -s / /root/rootlink; ln -s ../../../../.. /root/up;"
                          "mkfifo /root/fifo; cp /bin/true /root/suid; chmod 755 /root/suid; ! chmod 4755 /root/suid;"
                          "ln /root/suid /root/hard;"
                          "mkdir /root/d; ln -s /root/d /root/dlink")
    assert r.returncode == 0, r.stderr
    s = save_name()
    # A fifo in the layer must not make the save wait for a writer.
    r = capsule.run("save", name, s, timeout=60)
    assert r.returncode == 0, r.stderr
    assert os.readlink(layer(capsule, s, "root", "shadow")) == "/etc/shadow"
    assert os.readlink(layer(capsule, s, "root", "rootlink")) == "/"
    assert os.readlink(layer(capsule, s, "root", "up")) == "../../../../.."
    assert stat.S_ISFIFO(os.lstat(layer(capsule, s, "root", "fifo")).st_mode)
    st = os.lstat(layer(capsule, s, "root", "suid"))
    # No command can make a set-id file (test_host_folder_security.py): the save has the plain one.
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o755 and st.st_uid == 0
    assert os.lstat(layer(capsule, s, "root", "hard")).st_ino == st.st_ino
    # Nothing the links point at on the host was copied into the layer.
    assert not os.path.exists(layer(capsule, s, "root", "d", "shadow"))
    assert sorted(os.listdir(layer(capsule, s, "root", "d"))) == []
    # The layer's files are the sandbox's root's: only root on the host may reach the save.
    assert stat.S_IMODE(os.stat(os.path.join(capsule.home, "saves", s)).st_mode) == 0o700
    probe = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "test", "-e",
                            layer(capsule, s, "root", "suid")], capture_output=True)
    assert probe.returncode == 1
    # Started from the save, the links resolve inside the new sandbox, as they did before.
    r = capsule.run("run", "--image", s, "--", "sh", "-c", "readlink /root/shadow; ls /root/rootlink/root/d && echo ok")
    assert r.stdout.split() == ["/etc/shadow", "ok"], r.stderr


def test_no_device_but_whiteouts_reaches_a_save(capsule, save_name):
    name = capsule.create()
    # The sandbox cannot make a device (its user namespace forbids it) ...
    r = sh(capsule, name, "mknod /root/mem c 1 1")
    assert r.returncode != 0
    r = sh(capsule, name, "rm /etc/hostname; echo x > /root/x")
    assert r.returncode == 0, r.stderr
    capsule.run("stop", name, check=True)
    # ... but suppose one got into its layer anyway (planted from the host here): a save
    # must not carry it into a layer that other sandboxes mount.
    upper = os.path.join(capsule.home, "run", name, "fs", "upper", "root")
    os.mknod(os.path.join(upper, "null"), 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(os.path.join(upper, "disk"), 0o600 | stat.S_IFBLK, os.makedev(7, 0))
    s = save_name()
    r = capsule.run("save", name, s)
    assert r.returncode == 0, r.stderr
    found = []
    for root, dirs, files in os.walk(layer(capsule, s)):
        for f in files:
            st = os.lstat(os.path.join(root, f))
            if stat.S_ISBLK(st.st_mode) or (stat.S_ISCHR(st.st_mode) and st.st_rdev != 0):
                found.append(os.path.join(root, f))
    assert found == []
    # The whiteout (a 0:0 character device) is kept: that is how a save deletes a file.
    wh = os.lstat(layer(capsule, s, "etc", "hostname"))
    assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == 0
    m = json.load(open(os.path.join(capsule.home, "saves", s, "manifest.json")))
    assert m["skipped"] == 2
    r = capsule.run("run", "--image", s, "--", "sh", "-c", "ls /root; test -e /etc/hostname || echo deleted")
    assert r.stdout.split() == ["x", "deleted"], r.stderr


@pytest.mark.parametrize("bad", ["../../escaped", "/tmp/escaped", "a/../../escaped", "..", "."])
def test_save_names_cannot_leave_the_store(capsule, bad):
    name = capsule.create()
    for args in (["save", name, bad], ["checkpoint", name, bad], ["run", "--save", bad, "--", "true"],
                 ["saves", "rm", bad], ["fork", name, bad]):
        r = capsule.run(*args)
        assert r.returncode == 125, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1
    for p in (os.path.join(capsule.home, "escaped"), "/tmp/escaped", os.path.join(capsule.home, "run", name, "escaped"),
              os.path.join(capsule.home, "run", "escaped")):
        assert not os.path.exists(p), p


def test_layer_symlink_swapped_for_the_upper_is_not_followed(capsule, save_name, tmp_path):
    """Were the sandbox's layer itself a symlink to a host folder (planted in its stopped
    folder), a save refuses it rather than copying the host folder."""
    name = capsule.create()
    capsule.run("stop", name, check=True)
    run = os.path.join(capsule.home, "run", name, "fs")
    os.rename(os.path.join(run, "upper"), os.path.join(run, "upper.real"))
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "key").write_text("host secret")
    os.symlink(str(secret), os.path.join(run, "upper"))
    s = save_name()
    r = capsule.run("save", name, s)
    assert r.returncode == 125 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not os.path.exists(os.path.join(capsule.home, "saves", s))


# ---- cost: holes, hard-link storms, and a shim that keeps answering ----

GIB = 1 << 30
SPARSE_DATA_AT = 700 * (1 << 20)
# 16 KiB of data in a 1 GiB file; the copy may take a few blocks of extent metadata besides.
SPARSE_HOST_BYTES_MAX = 1 << 20


def host_bytes(path):
    return os.lstat(path).st_blocks * 512


def assert_sparse_copy(path, data):
    st = os.lstat(path)
    assert st.st_size == GIB, path
    assert host_bytes(path) <= SPARSE_HOST_BYTES_MAX, f"{path}: {host_bytes(path)} bytes on the host"
    with open(path, "rb") as f:
        f.seek(SPARSE_DATA_AT)
        assert f.read(len(data)) == data
        f.seek(SPARSE_DATA_AT - 4096)
        assert f.read(4096) == bytes(4096)


def test_sparse_file_costs_its_data_in_save_checkpoint_fork_and_revert(capsule, save_name):
    name = capsule.create()
    data = bytes(range(256)) * 64
    r = capsule.run("exec", name, "python3", "-c",
                    f"import os; fd = os.open('/root/sparse', os.O_CREAT | os.O_WRONLY, 0o644); os.ftruncate(fd, {GIB});"
                    f"os.pwrite(fd, bytes(range(256)) * 64, {SPARSE_DATA_AT})")
    assert r.returncode == 0, r.stderr
    assert_sparse_copy(os.path.join(capsule.home, "run", name, "fs", "upper", "root", "sparse"), data)
    s = save_name()
    assert capsule.run("save", name, s).returncode == 0
    assert_sparse_copy(layer(capsule, s, "root", "sparse"), data)
    assert capsule.run("checkpoint", name, "c").returncode == 0
    assert_sparse_copy(os.path.join(capsule.home, "run", name, "checkpoints", "c", "layer", "root", "sparse"), data)
    fork = capsule.unique_name()
    r = capsule.run("fork", name, fork)
    assert r.returncode == 0, r.stderr
    assert_sparse_copy(os.path.join(capsule.home, "run", fork, "fs", "upper", "root", "sparse"), data)
    capsule.run("exec", name, "rm", "/root/sparse", check=True)
    r = capsule.run("revert", name, "c")
    assert r.returncode == 0, r.stderr
    assert_sparse_copy(os.path.join(capsule.home, "run", name, "fs", "upper", "root", "sparse"), data)


def paused_pid(capsule, timeout=60):
    """The pid of the process that copies a save, waiting at the pause point that
    $CAPSULE_TEST_SAVE_PAUSE named when its sandbox was made (src/lib/save/layer_copy.c)."""
    marker = os.path.join(capsule.home, "saves", ".test-paused")
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            stage, pid = open(marker).read().split()
            os.unlink(marker)
            return int(pid)
        except (FileNotFoundError, ValueError):
            time.sleep(0.02)
    pytest.fail("the save never reached its pause point")


def paused_sandbox(capsule, entries):
    """A running sandbox whose saves stop after copying ENTRIES entries, until killed."""
    name = capsule.unique_name()
    r = capsule.run("create", "--name", name, env={"CAPSULE_TEST_SAVE_PAUSE": f"copy:{entries}"})
    assert r.returncode == 0, r.stderr
    return name


def checkpoint_temporaries(capsule, name):
    d = os.path.join(capsule.home, "run", name, "checkpoints")
    return [e for e in os.listdir(d) if e.startswith(".tmp-")] if os.path.isdir(d) else []


def test_shim_answers_while_20000_hard_linked_pairs_are_copied(capsule):
    """The copy runs beside the shim's event loop, not in it: while a checkpoint of a hard-link
    storm is half done, the shim refuses a second save at once with a one-line error and takes
    an exec (run once the sandbox thaws). Killing the copy leaves no half checkpoint; the
    whole storm then checkpoints with every pair still one file."""
    name = paused_sandbox(capsule, 30000)
    r = capsule.run("exec", name, "python3", "-c",
                    "import os; os.mkdir('/root/l')\n"
                    "for i in range(20000):\n"
                    "    open(f'/root/l/a{i}', 'w').close(); os.link(f'/root/l/a{i}', f'/root/l/b{i}')", timeout=120)
    assert r.returncode == 0, r.stderr
    first = capsule.popen("checkpoint", name, "c1", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    copier = paused_pid(capsule)
    try:
        second = capsule.run("checkpoint", name, "c2", timeout=30)
        assert second.returncode == 125
        assert len(second.stderr.strip().splitlines()) == 1 and "busy with checkpoint 'c1'" in second.stderr, second.stderr
        exe = capsule.popen("exec", name, "echo", "ok", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert first.poll() is None
    finally:
        os.kill(copier, signal.SIGKILL)
    _, err = first.communicate(timeout=60)
    assert first.returncode == 125 and len(err.strip().splitlines()) == 1, err
    out, err = exe.communicate(timeout=60)
    assert exe.returncode == 0 and out.strip() == "ok", err
    assert not os.path.exists(os.path.join(capsule.home, "run", name, "checkpoints", "c1"))
    # Stopped, the library checkpoints it (no pause there), and sweeps what the kill left.
    capsule.run("stop", name, check=True)
    r = capsule.run("checkpoint", name, "all", timeout=300)
    assert r.returncode == 0, r.stderr
    assert checkpoint_temporaries(capsule, name) == []
    links = os.path.join(capsule.home, "run", name, "checkpoints", "all", "layer", "root", "l")
    names = os.listdir(links)
    assert len(names) == 40000
    for i in range(0, 20000, 997):
        a, b = os.lstat(os.path.join(links, f"a{i}")), os.lstat(os.path.join(links, f"b{i}"))
        assert a.st_ino == b.st_ino and a.st_nlink == 2
    assert len({os.lstat(os.path.join(links, n)).st_ino for n in names}) == 20000


def test_stop_during_a_save_cancels_it_and_leaves_nothing_half_made(capsule):
    name = paused_sandbox(capsule, 2)
    capsule.run("exec", name, "sh", "-c", "echo x > /root/a; echo y > /root/b; echo z > /root/c", check=True)
    save = capsule.popen("checkpoint", name, "c", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    copier = paused_pid(capsule)
    copier_left = True
    try:
        r = capsule.run("stop", name, timeout=60)
        # The copy was killed and reaped by the stop: it is not left holding the sandbox.
        copier_left = os.path.exists(f"/proc/{copier}")
        assert r.returncode == 0, r.stderr
    finally:
        if copier_left:
            os.kill(copier, signal.SIGKILL)
    assert not copier_left
    _, err = save.communicate(timeout=60)
    assert save.returncode == 125 and "cancelled" in err, err
    assert capsule.inspect(name)["state"] == "stopped"
    assert not os.path.exists(os.path.join(capsule.home, "run", name, "checkpoints", "c"))
    r = capsule.run("start", name)
    assert r.returncode == 0, r.stderr


def test_hard_link_names_held_by_a_copy_are_bounded(capsule):
    """The copy holds the first name of each linked file until it ends; a sandbox choosing
    17,000 linked files with 4 KiB paths (68 MiB of names) gets a one-line error, not a copier
    that holds whatever it asks for, and nothing half-made."""
    name = capsule.create()
    r = capsule.run("exec", name, "python3", "-c",
                    "import os\n"
                    "d = '/root/' + '/'.join(['d' * 250] * 15)\n"
                    "os.makedirs(d)\n"
                    "for i in range(17000):\n"
                    "    a = f'{d}/{\"a\" * 180}{i}'\n"
                    "    open(a, 'w').close(); os.link(a, f'{d}/{\"b\" * 180}{i}')", timeout=180)
    assert r.returncode == 0, r.stderr
    r = capsule.run("checkpoint", name, "c", timeout=300)
    assert r.returncode == 125
    assert len(r.stderr.strip().splitlines()) == 1 and "too many hard-linked files" in r.stderr, r.stderr
    assert not os.path.exists(os.path.join(capsule.home, "run", name, "checkpoints", "c"))
    assert checkpoint_temporaries(capsule, name) == []
    assert_alive(capsule, name)


def test_stop_during_a_revert_cancels_it_and_keeps_the_layer(capsule):
    """A revert copies the checkpoint back beside the loop too: meanwhile commands are refused
    with a one-line error (the sandbox is down) and a stop still works, leaving the layer as
    it was."""
    name = capsule.create()
    capsule.run("exec", name, "sh", "-c", "echo before > /root/f; echo 1 > /root/g; echo 2 > /root/h", check=True)
    capsule.run("stop", name, check=True)
    capsule.run("checkpoint", name, "c", check=True)
    r = capsule.run("start", name, env={"CAPSULE_TEST_SAVE_PAUSE": "copy:2"})
    assert r.returncode == 0, r.stderr
    capsule.run("exec", name, "sh", "-c", "echo after > /root/f", check=True)
    revert = capsule.popen("revert", name, "c", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    copier = paused_pid(capsule)
    copier_left = True
    try:
        r = capsule.run("exec", name, "true", timeout=30)
        assert r.returncode == 125
        assert len(r.stderr.strip().splitlines()) == 1 and "busy with revert 'c'" in r.stderr, r.stderr
        r = capsule.run("stop", name, timeout=60)
        copier_left = os.path.exists(f"/proc/{copier}")
        assert r.returncode == 0, r.stderr
    finally:
        if copier_left:
            os.kill(copier, signal.SIGKILL)
    assert not copier_left
    _, err = revert.communicate(timeout=60)
    assert revert.returncode == 125 and "cancelled" in err, err
    assert capsule.inspect(name)["state"] == "stopped"
    capsule.run("start", name, check=True)
    r = capsule.run("exec", name, "cat", "/root/f")
    assert r.stdout == "after\n", r.stderr
