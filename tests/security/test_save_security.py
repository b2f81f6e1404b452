"""Saves against a hostile sandbox: what it plants in its own layer (symlinks, fifos, set-id
files, hard links, devices) is copied as data, never followed on the host, and never becomes a
device or a set-id file any other host user can reach; save names cannot leave the store."""
import json
import os
import stat
import subprocess
import uuid

import pytest

from secutil import sh


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
