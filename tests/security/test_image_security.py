"""Hostile image layers (docs/security.md, "Images"): names with `..` or absolute paths, a
symlink then a file written through it, hard links to host files, device nodes. Each is
imported as an oci-archive (the same unpacker serves pulls) and nothing may land outside the
layer's folder: the entry is refused (the whole import fails, nothing stored) or, for device
nodes, skipped."""
import importlib.util
import os
import shutil
import tarfile
import tempfile
import uuid

import pytest

_IU = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "e2e", "imageutil.py")
_spec = importlib.util.spec_from_file_location("capsule_tests_imageutil", _IU)
iu = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(iu)

@pytest.fixture(autouse=True)
def _image_tools():
    iu.require_tools()


@pytest.fixture
def target():
    """A host folder an attack aims at: it must stay empty."""
    d = tempfile.mkdtemp(prefix="capsule-victim-", dir="/var/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def oci_archive(workdir, layers):
    lay = iu.make_layout(workdir, layers)
    path = os.path.join(workdir, f"evil-{uuid.uuid4().hex[:8]}.tar")
    with tarfile.open(path, "w") as t:
        for name in ("oci-layout", "index.json", "blobs"):
            t.add(os.path.join(lay.path, name), arcname=name)
    return path


def store_state(capsule):
    images = os.path.join(capsule.home, "images")
    out = {}
    for sub in ("layers", "blobs/sha256"):
        p = os.path.join(images, sub)
        out[sub] = set(os.listdir(p)) if os.path.isdir(p) else set()
    return out


def import_evil(capsule, tmp_path, entries):
    evil = iu.layer_tar(entries)
    path = oci_archive(str(tmp_path), [iu.busybox_layer(), evil])
    r = capsule.run("image", "import", path, "--name", f"evil/{uuid.uuid4().hex[:8]}:1")
    r.evil_digest = iu.sha(iu.compress(evil, "gzip"))
    return r


def assert_refused(capsule, r, before, what):
    assert r.returncode == 125, r.stdout + r.stderr
    assert what in r.stderr, r.stderr
    # A refused layer leaves no unpacked folder and no half-made temp behind.
    assert r.evil_digest[7:] not in store_state(capsule)["layers"]
    tmp = os.path.join(capsule.home, "images", "tmp")
    assert not [n for n in os.listdir(tmp) if n.startswith(("layer-", "import-"))]


def climb(target):
    return "../" * 16 + target.lstrip("/")


def test_dotdot_entry_is_refused(capsule, tmp_path, target):
    before = store_state(capsule)
    r = import_evil(capsule, tmp_path, [iu.Entry(climb(target) + "/pwned", data=b"x")])
    assert_refused(capsule, r, before, "would land outside its folder")
    assert os.listdir(target) == []


def test_absolute_entry_is_refused(capsule, tmp_path, target):
    before = store_state(capsule)
    r = import_evil(capsule, tmp_path, [iu.Entry(target + "/pwned", data=b"x")])
    assert_refused(capsule, r, before, "would land outside its folder")
    assert os.listdir(target) == []


@pytest.mark.parametrize("link", ["abs", "rel"])
def test_file_written_through_a_symlink_is_refused(capsule, tmp_path, target, link):
    before = store_state(capsule)
    dest = target if link == "abs" else climb(target)
    r = import_evil(capsule, tmp_path, [iu.Entry("escape", "symlink", link=dest),
                                        iu.Entry("escape/pwned", data=b"x")])
    assert_refused(capsule, r, before, "entry 'escape/pwned' is below a symlink")
    assert os.listdir(target) == []


def test_symlink_to_a_folder_then_a_folder_through_it_is_refused(capsule, tmp_path, target):
    before = store_state(capsule)
    r = import_evil(capsule, tmp_path, [iu.Entry("d", "symlink", link=target), iu.Entry("d/sub", "dir", mode=0o755),
                                        iu.Entry("d/sub/f", data=b"x")])
    assert_refused(capsule, r, before, "is below a symlink")
    assert os.listdir(target) == []


@pytest.mark.parametrize("link", ["/etc/passwd", "../../../../../../../../etc/passwd", "nothing-here"])
def test_hardlink_out_of_the_layer_is_refused(capsule, tmp_path, link):
    before = store_state(capsule)
    st = os.stat("/etc/passwd")
    r = import_evil(capsule, tmp_path, [iu.Entry("h", "hardlink", link=link)])
    assert_refused(capsule, r, before, "leaves the layer")
    assert os.stat("/etc/passwd").st_nlink == st.st_nlink


def test_hardlink_through_a_symlinked_folder_is_refused(capsule, tmp_path):
    before = store_state(capsule)
    r = import_evil(capsule, tmp_path, [iu.Entry("etc2", "symlink", link="/etc"),
                                        iu.Entry("h", "hardlink", link="etc2/passwd")])
    assert_refused(capsule, r, before, "leaves the layer")


def test_device_nodes_are_skipped(capsule, tmp_path):
    r = import_evil(capsule, tmp_path, [iu.Entry("dev", "dir", mode=0o755),
                                        iu.Entry("dev/mem2", "chr", devmajor=1, devminor=1, mode=0o666),
                                        iu.Entry("dev/sda2", "blk", devmajor=8, devminor=0, mode=0o666),
                                        iu.Entry("ok", data=b"ok\n")])
    assert r.returncode == 0, r.stderr
    name = r.stdout.strip()
    iu.need_static_agent(capsule.build)
    r = capsule.run("run", "--image", name, "--", "sh", "-c", "cat /ok; ls -a /dev")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok\n")
    assert "mem2" not in r.stdout and "sda2" not in r.stdout
    # Nor in the store: no host can be given a device by an image.
    for root, dirs, files in os.walk(os.path.join(capsule.home, "images", "layers")):
        for f in files:
            st = os.lstat(os.path.join(root, f))
            if (st.st_mode & 0o170000) in (0o020000, 0o060000):
                assert os.major(st.st_rdev) == 0 and os.minor(st.st_rdev) == 0, os.path.join(root, f)


def test_whiteout_cannot_name_a_parent(capsule, tmp_path, target):
    before = store_state(capsule)
    r = import_evil(capsule, tmp_path, [iu.Entry(climb(target) + "/.wh.x", data=b"")])
    assert_refused(capsule, r, before, "would land outside its folder")
    r = import_evil(capsule, tmp_path, [iu.Entry(".wh..", data=b"")])
    assert r.returncode == 125


def test_archive_with_a_climbing_member_is_refused(capsule, tmp_path, target):
    path = os.path.join(str(tmp_path), "outer.tar")
    with tarfile.open(path, "w") as t:
        ti = tarfile.TarInfo(climb(target) + "/pwned")
        ti.size = 1
        import io
        t.addfile(ti, io.BytesIO(b"x"))
    r = capsule.run("image", "import", path, "--name", "evil/outer:1")
    assert r.returncode == 125
    assert "would land outside its folder" in r.stderr
    assert os.listdir(target) == []


def test_overlay_xattrs_from_a_tar_are_dropped(capsule, tmp_path):
    """A layer may not forge overlayfs's own metadata (redirects, opaque) through PAX xattrs."""
    import io
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        ti = tarfile.TarInfo("forged")
        ti.type = tarfile.DIRTYPE
        ti.mode = 0o755
        ti.pax_headers = {"SCHILY.xattr.user.overlay.redirect": "/etc", "SCHILY.xattr.user.keep": "1"}
        t.addfile(ti)
    path = oci_archive(str(tmp_path), [iu.busybox_layer(), buf.getvalue()])
    r = capsule.run("image", "import", path, "--name", "evil/xattr:1")
    assert r.returncode == 0, r.stderr
    for root, dirs, files in os.walk(os.path.join(capsule.home, "images", "layers")):
        if os.path.basename(root) == "forged":
            assert "user.overlay.redirect" not in os.listxattr(root)
            assert os.getxattr(root, "user.keep") == b"1"
            break
    else:
        pytest.fail("the layer with 'forged' was not unpacked")


@pytest.mark.parametrize("kind", ["file", "dir"])
def test_entry_replacing_a_symlink_replaces_the_link_not_its_target(capsule, tmp_path, target, kind):
    victim = os.path.join(target, "victim")
    with open(victim, "w") as f:
        f.write("intact")
    r = import_evil(capsule, tmp_path, [iu.Entry("x", "symlink", link=victim if kind == "file" else target),
                                        iu.Entry("x", kind, data=b"replaced", mode=0o755)])
    assert r.returncode == 0, r.stderr
    assert open(victim).read() == "intact"
    assert os.listdir(target) == ["victim"]
