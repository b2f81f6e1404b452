"""capsule diff and exec --diff: what was added, modified and deleted in a sandbox's filesystem,
read from its own overlay layer (whiteouts, opaque folders, the image's layers below), and
names the sandbox chose to be hostile (newlines, paths longer than PATH_MAX, symlinks to host
paths, FIFOs, folders nested past the bound), none of which the reader follows or trips on."""
import json

import pytest

from .helpers import assert_capsule_error
from .test_saves import saves  # noqa: F401 (the fixture: names saves, removes them after)
from .imageutil import (Entry, busybox_layer, image_tools, layer_tar, make_layout, need_static_agent,  # noqa: F401
                        needs_tools, registry, workdir)


def diff(capsule, name):
    r = capsule.run("diff", "--json", name)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def by_path(changes):
    return {c["path"]: c for c in changes}


def sh(capsule, name, script):
    r = capsule.run("exec", name, "sh", "-c", script)
    assert r.returncode == 0, r.stderr
    return r


def test_fresh_sandbox_has_no_changes_and_each_kind_is_listed(capsule):
    name = capsule.create()
    assert diff(capsule, name) == []
    sh(capsule, name, "echo hello > /root/new; chmod 600 /root/new; echo x >> /etc/passwd; rm /etc/hostname;"
       " mkdir -p /opt/a/b; ln -s /etc/shadow /opt/a/link")
    changes = diff(capsule, name)
    # Sorted by path, parents before what they hold.
    assert [c["path"] for c in changes] == sorted(c["path"] for c in changes)
    c = by_path(changes)
    # /opt was in the image: only what changed in it is listed.
    assert set(c) == {"/root/new", "/etc/passwd", "/etc/hostname", "/opt/a", "/opt/a/b", "/opt/a/link"}
    assert c["/root/new"]["kind"] == "added" and c["/root/new"]["type"] == "file"
    assert c["/root/new"]["size"] == 6 and c["/root/new"]["mode"] == "0600"
    assert c["/etc/passwd"]["kind"] == "modified"
    assert c["/etc/hostname"] == {"path": "/etc/hostname", "kind": "deleted", "type": "file"}
    assert c["/opt/a"]["type"] == "dir" and c["/opt/a"]["kind"] == "added"
    assert c["/opt/a/link"]["type"] == "symlink" and c["/opt/a/link"]["link_target"] == "/etc/shadow"
    # The text form: docker diff's letters, with mode and size.
    r = capsule.run("diff", name)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "A 0600          6 /root/new" in lines
    assert any(line.startswith("D ") and line.endswith(" /etc/hostname") for line in lines)
    assert any(line.startswith("C 0644 ") and line.endswith(" /etc/passwd") for line in lines)
    # A stopped sandbox's layer is read the same way.
    assert capsule.run("stop", name).returncode == 0
    assert diff(capsule, name) == changes


def test_hostile_names_are_listed_exactly_and_never_followed(capsule):
    name = capsule.create()
    deep = "d" * 200
    sh(capsule, name, "touch '/root/two\nlines'; touch \"/root/$(printf 'bad\\377byte')\"; mkfifo /root/fifo;"
       " touch \"/root/$(printf 'c1\\302\\23331m')\";"
       " ln -s /etc /root/hostetc; ln -s / /root/rootlink; ln -s ../../../../../ /root/up;"
       " cd /root && python3 -c \"import os\nfor i in range(30): os.mkdir('d' * 200); os.chdir('d' * 200)\n"
       "open('f', 'w').write('deep\\n')\"")
    changes = diff(capsule, name)
    c = by_path(changes)
    assert "/root/two\nlines" in c
    assert "/root/bad\ufffdbyte" in c
    assert c["/root/fifo"]["type"] == "other"
    for link, target in (("/root/hostetc", "/etc"), ("/root/rootlink", "/"), ("/root/up", "../../../../../")):
        assert c[link]["type"] == "symlink" and c[link]["link_target"] == target
    # Nothing below a symlink: the host's /etc (or /) was not walked through it.
    assert not [p for p in c if p.startswith(("/root/hostetc/", "/root/rootlink/", "/root/up/"))]
    long_path = "/root/" + "/".join([deep] * 30) + "/f"
    assert len(long_path) > 4096
    assert c[long_path]["kind"] == "added" and c[long_path]["size"] == 5
    # One line per change in the text form, whatever the names hold.
    r = capsule.run("diff", name)
    assert r.returncode == 0, r.stderr
    assert "/root/two\\nlines" in r.stdout
    assert len(r.stdout.splitlines()) == len(changes)
    # A C1 control (CSI, U+009B) in a name reaches no terminal as itself, text or JSON.
    assert "/root/c1\x9b31m" in c
    assert "/root/c1\\u009b31m" in r.stdout and "\x9b" not in r.stdout
    r = capsule.run("diff", "--json", name)
    assert "\\u009b31m" in r.stdout and "\x9b" not in r.stdout


def test_since_a_checkpoint_lists_only_what_changed_after_it(capsule):
    name = capsule.create()
    sh(capsule, name, "echo a > /root/kept; echo x > /root/gone; echo same > /root/same; rm /etc/hostname")
    assert capsule.run("checkpoint", name, "cp1").returncode == 0
    r = capsule.run("diff", "--since", "cp1", "--json", name)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == []
    sh(capsule, name, "echo b >> /root/kept; rm /root/gone; echo n > /root/new; echo h > /etc/hostname")
    r = capsule.run("diff", "--since", "cp1", "--json", name)
    assert r.returncode == 0, r.stderr
    assert {c["path"]: c["kind"] for c in json.loads(r.stdout)} == {
        "/etc/hostname": "added", "/root/gone": "deleted", "/root/kept": "modified", "/root/new": "added"}
    r = capsule.run("diff", "--since", "no-such-checkpoint", name)
    assert_capsule_error(r)
    assert "no checkpoint or save named 'no-such-checkpoint'" in r.stderr
    r = capsule.run("diff", "--since", "checkpoint:no-such-checkpoint", name)
    assert_capsule_error(r)
    assert "no checkpoint named 'no-such-checkpoint'" in r.stderr


def kinds(r):
    assert r.returncode == 0, r.stderr
    return {c["path"]: c["kind"] for c in json.loads(r.stdout)}


def test_since_a_save_of_the_running_sandbox(capsule, saves):
    """The agent harness's case: save, let a command work, ask what it changed."""
    name = capsule.create()
    s = saves()
    sh(capsule, name, "echo a > /root/kept; echo x > /root/gone; rm /etc/hostname; mkdir /root/d; echo 1 > /root/d/f")
    assert capsule.run("save", name, s).returncode == 0
    assert kinds(capsule.run("diff", "--since", s, "--json", name)) == {}
    sh(capsule, name, "echo b >> /root/kept; rm /root/gone; echo n > /root/new; echo h > /etc/hostname;"
       " echo y >> /etc/passwd; rm -r /root/d")
    want = {"/etc/hostname": "added", "/etc/passwd": "modified", "/root/d": "deleted", "/root/gone": "deleted",
            "/root/kept": "modified", "/root/new": "added"}
    assert kinds(capsule.run("diff", "--since", s, "--json", name)) == want
    assert kinds(capsule.run("diff", "--since", "save:" + s, "--json", name)) == want
    # The text form, and a stopped sandbox the same.
    r = capsule.run("diff", "--since", s, name)
    assert r.returncode == 0 and any(line.startswith("A ") and line.endswith(" /root/new") for line in r.stdout.splitlines())
    assert capsule.run("stop", name).returncode == 0
    assert kinds(capsule.run("diff", "--since", s, "--json", name)) == want
    # A checkpoint of the same name comes first; a prefix says which.
    assert capsule.run("start", name).returncode == 0
    assert capsule.run("checkpoint", name, s).returncode == 0
    assert kinds(capsule.run("diff", "--since", s, "--json", name)) == {}
    assert kinds(capsule.run("diff", "--since", "save:" + s, "--json", name)) == want


def test_since_the_save_a_sandbox_started_from_and_saves_of_another_lineage(capsule, saves):
    base, other, sibling = saves(), saves(), saves()
    assert capsule.run("run", "--save", base, "--", "sh", "-c", "echo 1 > /root/one; mkdir /root/od; echo 1 > /root/od/f1"
                       ).returncode == 0
    name = capsule.create("--image", base)
    sh(capsule, name, "echo 2 > /root/two; rm /root/one")
    # Started from it: what changed since is the sandbox's own layer.
    assert kinds(capsule.run("diff", "--since", base, "--json", name)) == {"/root/one": "deleted", "/root/two": "added"}
    # A checkpoint of a sandbox started from a save (its manifest names the save, found in
    # the save store, not among the checkpoints).
    assert capsule.run("checkpoint", name, "cp").returncode == 0
    sh(capsule, name, "echo 4 > /root/four")
    assert kinds(capsule.run("diff", "--since", "cp", "--json", name)) == {"/root/four": "added"}
    sh(capsule, name, "rm /root/four")
    # A save on the same save, from another sandbox: compared layer with layer.
    assert capsule.run("run", "--image", base, "--save", sibling, "--", "sh", "-c", "echo 3 > /root/three").returncode == 0
    assert kinds(capsule.run("diff", "--since", sibling, "--json", name)) == {
        "/root/one": "deleted", "/root/three": "deleted", "/root/two": "added"}
    # A save on other layers (the host image, not BASE): refused in one line, naming why.
    assert capsule.run("run", "--save", other, "--", "true").returncode == 0
    r = capsule.run("diff", "--since", other, name)
    assert_capsule_error(r)
    assert f"since save '{other}': that save is not on the sandbox's image or save" in r.stderr
    # A save below the one it started from: the layers above it, merged as overlayfs merges
    # them, with the sandbox's own on top. A change made in between and taken back is none.
    child = saves()
    assert capsule.run("run", "--image", base, "--save", child, "--", "sh", "-c",
                       "echo c > /root/c; rm /root/one /etc/hostname; mkdir /root/cd /root/m; echo x > /root/cd/x;"
                       " echo a > /root/m/a; rm -r /root/od; mkdir /root/od; echo 2 > /root/od/f2").returncode == 0
    grand = capsule.create("--image", child)
    sh(capsule, grand, "rm /root/c; echo again > /root/one; echo g > /root/g; rm -r /root/cd; echo b > /root/m/b;"
       " echo 3 > /root/od/f3")
    assert kinds(capsule.run("diff", "--since", base, "--json", grand)) == {
        "/etc/hostname": "deleted", "/root/g": "added", "/root/m": "added", "/root/m/a": "added",
        "/root/m/b": "added", "/root/one": "modified",
        # Made again in between (an opaque folder): what BASE had in it is gone.
        "/root/od/f1": "deleted", "/root/od/f2": "added", "/root/od/f3": "added"}
    # Since the save it started from: its own layer alone, as the plain diff.
    assert kinds(capsule.run("diff", "--since", child, "--json", grand)) == {
        "/root/c": "deleted", "/root/cd": "deleted", "/root/g": "added", "/root/m/b": "added", "/root/one": "added",
        "/root/od/f3": "added"}
    assert capsule.run("diff", "--since", child, "--json", grand).stdout == capsule.run("diff", "--json", grand).stdout
    for since in ("save:no-such-save", "no-such-save"):
        r = capsule.run("diff", "--since", since, name)
        assert_capsule_error(r)
        assert "named 'no-such-save'" in r.stderr
    r = capsule.run("diff", "--since", "save:../x", name)
    assert_capsule_error(r)


def test_folders_nested_past_the_bound_fail_with_one_line(capsule):
    name = capsule.create()
    sh(capsule, name, "cd /root && for i in $(seq 300); do mkdir a && cd a; done")
    r = capsule.run("diff", name)
    assert_capsule_error(r)
    assert "nested deeper than 256 levels" in r.stderr


def test_a_diff_over_64_mib_of_json_fails_with_one_line(capsule):
    """Each change carries its whole path: 250 folders of 250-letter names and 1,200 empty
    files at the bottom are ~1 MiB on disk, but ~75 MiB of JSON."""
    name = capsule.create()
    deep = ("import os\n"
            "os.chdir('/root')\n"
            "for i in range(250):\n"
            "    os.mkdir('d' * 250); os.chdir('d' * 250)\n"
            "for i in range(1200):\n"
            "    open('f%d' % i, 'w').close()\n")
    r = capsule.run("exec", "--diff", name, "python3", "-c", deep)
    # The command's exit code is kept; the diff after it is refused in one line.
    assert r.returncode == 0 and r.stderr.count("\n") == 1 and "over 64 MiB of JSON" in r.stderr, r.stderr[-2000:]
    r = capsule.run("diff", "--json", name)
    assert_capsule_error(r)
    assert "over 64 MiB of JSON" in r.stderr and r.stdout == ""


def test_exec_diff_prints_what_the_command_changed(capsule):
    name = capsule.create()
    sh(capsule, name, "echo one > /root/before; echo gone > /root/gone")
    r = capsule.run("exec", "--diff", name, "sh", "-c", "echo out; echo two >> /root/before; rm /root/gone;"
                    " echo n > /root/new; rm /etc/hostname")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "out\n"
    lines = sorted(r.stderr.splitlines())
    assert len(lines) == 4, r.stderr
    assert lines[0].startswith("A ") and lines[0].endswith(" /root/new")
    assert lines[1].startswith("C ") and lines[1].endswith(" /root/before")
    assert lines[2] == "D -             - /etc/hostname"
    assert lines[3] == "D -             - /root/gone"
    # The command's own exit code is kept.
    r = capsule.run("exec", "--diff", name, "sh", "-c", "exit 3")
    assert r.returncode == 3 and r.stderr == ""
    r = capsule.run("exec", "--diff", "-d", name, "true")
    assert_capsule_error(r)


@needs_tools
def test_image_layers_whiteouts_and_opaque_folders(capsule, registry, workdir):
    need_static_agent(capsule.build)
    lower = layer_tar([Entry("data", "dir", mode=0o755), Entry("data/a", data=b"a"), Entry("data/b", data=b"b"),
                       Entry("keep", "dir", mode=0o755), Entry("keep/k1", data=b"1"), Entry("keep/k2", data=b"2"),
                       Entry("opq", "dir", mode=0o755), Entry("opq/x", data=b"x")])
    upper = layer_tar([Entry("data/.wh.a", data=b""), Entry("opq", "dir", mode=0o755),
                       Entry("opq/.wh..wh..opq", data=b""), Entry("opq/z", data=b"z")])
    ref = registry.push(make_layout(workdir, [busybox_layer(), lower, upper]), "diff/wh")
    r = capsule.run("image", "pull", ref)
    assert r.returncode == 0, r.stderr
    name = capsule.create("--image", ref, "-v", f"{workdir}:/mnt/host")
    # The mount points the start made in the sandbox's layer (/dev, /proc, /sys, /mnt/host)
    # are not changes: /mnt, their parent, is.
    assert [(e["path"], e["kind"]) for e in diff(capsule, name)] == [("/mnt", "added")]
    # /data/a is hidden by the image's own whiteout: writing it adds it. /opq/x is hidden by
    # the image's opaque folder: not there to delete. /keep is emptied and made again: an
    # opaque folder of the sandbox's, whose lower k2 is gone and k1 rewritten.
    sh(capsule, name, "echo new > /data/a; echo mod > /data/b; rm /opq/z; rm -rf /keep; mkdir /keep;"
       " echo n > /keep/k1")
    c = by_path(diff(capsule, name))
    assert {p: e["kind"] for p, e in c.items()} == {
        "/mnt": "added", "/data/a": "added", "/data/b": "modified", "/opq/z": "deleted", "/keep/k1": "modified", "/keep/k2": "deleted"}


def test_a_sandbox_with_its_own_disk_is_read_from_it(capsule):
    name = capsule.create("--disk-size", "64M")
    sh(capsule, name, "echo d > /root/on-disk")
    c = by_path(diff(capsule, name))
    assert c["/root/on-disk"]["kind"] == "added"


def test_diff_errors_are_one_line(capsule):
    r = capsule.run("diff", "no-such-sandbox")
    assert_capsule_error(r)
    r = capsule.run("diff")
    assert_capsule_error(r)
    r = capsule.run("diff", "--bogus", "x")
    assert_capsule_error(r)
    r = capsule.run("diff", "--help")
    assert r.returncode == 0 and r.stdout.startswith("Usage: capsule diff")


@pytest.mark.vm_slow
def test_vm_refuses_with_one_line(capsule):
    capsule.isolation = "vm"
    name = capsule.create()
    r = capsule.run("diff", name)
    assert_capsule_error(r)
    assert "not available at the vm level" in r.stderr
    # --since a save too, before the save is looked for.
    r = capsule.run("diff", "--since", "save:any-save", name)
    assert_capsule_error(r)
    assert "not available at the vm level" in r.stderr
