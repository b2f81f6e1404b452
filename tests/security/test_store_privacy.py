"""Host-side stores readable by all (docs/security.md, "$CAPSULE_HOME is its owner's alone"):
what capsule keeps under $CAPSULE_HOME is its owner's alone. Another local user (other_user) must not run an image's set-uid file, plant
files in the host image's world-writable folders (the lower layers of running sandboxes),
read a run folder, or make the home of a user who has no $HOME before that user does."""
import glob
import importlib.util
import os
import shutil
import stat
import tarfile
import uuid

import pytest

_IU = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "e2e", "imageutil.py")
_spec = importlib.util.spec_from_file_location("capsule_tests_imageutil", _IU)
iu = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(iu)


def may_reach(other_user, path):
    """Whether OTHER_USER can stat PATH (which exists)."""
    return other_user.run(["stat", "--", path]).returncode == 0


def import_setuid_image(capsule, tmp_path):
    """An image whose layer holds a set-uid root copy of busybox; its stored path."""
    with open(iu.BUSYBOX, "rb") as f:
        suid = iu.Entry("bin/suid-busybox", data=f.read(), mode=0o4755)
    lay = iu.make_layout(str(tmp_path), [iu.busybox_layer(), iu.layer_tar([suid])])
    path = os.path.join(str(tmp_path), "suid.tar")
    with tarfile.open(path, "w") as t:
        for name in ("oci-layout", "index.json", "blobs"):
            t.add(os.path.join(lay.path, name), arcname=name)
    capsule.run("image", "import", path, "--name", f"suid/{uuid.uuid4().hex[:8]}:1", check=True)
    found = glob.glob(os.path.join(capsule.home, "images", "layers", "*", "bin", "suid-busybox"))
    assert found, "the imported layer is not in the store"
    return found[0]


def test_other_user_cannot_run_or_stat_an_images_setuid_file(capsule, other_user, tmp_path):
    iu.require_tools()
    suid = import_setuid_image(capsule, tmp_path)
    # Kept set-uid root in the store: it matters inside the sandbox only (no_new_privs, nosuid).
    st = os.stat(suid)
    assert st.st_mode & stat.S_ISUID and st.st_uid == 0
    assert not may_reach(other_user, suid)
    r = other_user.run([suid, "id", "-u"])
    assert r.returncode != 0 and r.stdout.strip() != "0", r.stdout + r.stderr
    for path in (os.path.join(capsule.home, "images", "blobs", "sha256"), os.path.dirname(suid)):
        assert not may_reach(other_user, path), path


def test_other_user_cannot_plant_files_in_the_host_images_tmp(capsule, other_user):
    name = capsule.create()  # running on the host image: its skeleton is a lower layer now
    skel = glob.glob(os.path.join(capsule.home, "images", "host-v1-*"))
    assert skel
    for tmp in (os.path.join(skel[0], "tmp"), os.path.join(skel[0], "var", "tmp")):
        assert stat.S_IMODE(os.stat(tmp).st_mode) == 0o1777  # what the sandbox's /tmp needs
        planted = os.path.join(tmp, f"planted-{uuid.uuid4().hex[:8]}")
        r = other_user.run(["touch", planted])
        assert r.returncode != 0 and not os.path.exists(planted), r.stderr
    r = capsule.run("exec", name, "sh", "-c", "ls -A /tmp /var/tmp", check=True)
    assert "planted" not in r.stdout


def test_home_and_run_folder_are_their_owners_alone(capsule, other_user):
    name = capsule.create()
    home = os.stat(capsule.home)
    assert home.st_uid == os.geteuid() and stat.S_IMODE(home.st_mode) == 0o700
    run = os.path.join(capsule.home, "run", name)
    for entry in ("config", "state.json", "shim.log"):
        assert stat.S_IMODE(os.stat(os.path.join(run, entry)).st_mode) == 0o600, entry
    for path in (os.path.join(capsule.home, "run"), run, os.path.join(run, "state.json")):
        assert not may_reach(other_user, path), path


@pytest.mark.skipif(not iu.agent_is_static(os.environ.get("CAPSULE_BUILD", "build")),
                    reason="capsule-agent is dynamically linked (a sanitizer build): it cannot be a VM's init")
def test_a_vm_run_folders_logs_are_private(capsule):
    name = capsule.unique_name()
    capsule.run("create", "--isolation", "vm", "--name", name, timeout=300, check=True)
    run = os.path.join(capsule.home, "run", name)
    for entry in ("vm.json", "console.log", "qemu.log", "state.json"):
        assert stat.S_IMODE(os.stat(os.path.join(run, entry)).st_mode) == 0o600, entry


def test_a_home_an_older_capsule_left_open_is_made_private(capsule, tmp_path):
    home = os.path.join(str(tmp_path), "old-home")
    os.mkdir(home)
    os.chmod(home, 0o711)  # as capsule made it before
    r = capsule.run("ps", env={"CAPSULE_HOME": home})
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(os.stat(home).st_mode) == 0o700


def test_a_home_others_may_write_to_is_refused(capsule, tmp_path):
    home = os.path.join(str(tmp_path), "open-home")
    os.mkdir(home)
    os.chmod(home, 0o777)
    r = capsule.run("ps", env={"CAPSULE_HOME": home})
    assert r.returncode == 125, r.stdout + r.stderr
    assert f"capsule home '{home}' is open to other users (mode 0777)" in r.stderr
    assert os.listdir(home) == [] and stat.S_IMODE(os.stat(home).st_mode) == 0o777


def test_a_home_another_user_owns_is_refused(capsule, other_user, tmp_path):
    home = os.path.join(str(tmp_path), "their-home")
    os.mkdir(home, 0o700)
    os.chown(home, other_user.uid, other_user.gid)
    r = capsule.run("ps", env={"CAPSULE_HOME": home})
    assert r.returncode == 125, r.stdout + r.stderr
    assert f"capsule home '{home}' belongs to uid {other_user.uid}, not to uid {os.geteuid()}" in r.stderr
    assert os.listdir(home) == []


@pytest.fixture
def no_home_fallback(other_user):
    """Where capsule keeps OTHER_USER's state when it has no $HOME (docs/cli.md), removed after."""
    path = f"/tmp/capsule-{other_user.uid}"
    remove(path)
    yield path
    remove(path)


def remove(path):
    if os.path.islink(path):
        os.unlink(path)
    else:
        shutil.rmtree(path, ignore_errors=True)


def run_without_home(capsule, other_user, *args):
    return other_user.run(["env", "-u", "HOME", "-u", "XDG_DATA_HOME", capsule.binary, *args])


def test_a_user_without_home_gets_a_private_home_of_its_own(capsule, other_user, no_home_fallback):
    r = run_without_home(capsule, other_user, "ps")
    assert r.returncode == 0, r.stderr
    st = os.lstat(no_home_fallback)
    assert stat.S_ISDIR(st.st_mode) and st.st_uid == other_user.uid and stat.S_IMODE(st.st_mode) == 0o700


@pytest.mark.parametrize("planted", ["folder", "link"])
def test_a_no_home_fallback_someone_else_made_first_is_refused(capsule, other_user, no_home_fallback, planted):
    # Root plays the other user here: it makes the fallback first, open to all, or a link.
    if planted == "folder":
        os.mkdir(no_home_fallback)
        os.chmod(no_home_fallback, 0o777)
        why = f"capsule home '{no_home_fallback}' belongs to uid 0, not to uid {other_user.uid}"
    else:
        theirs = os.path.join(other_user.home, "elsewhere")
        os.mkdir(theirs, 0o700)
        os.chown(theirs, other_user.uid, other_user.gid)
        os.symlink(theirs, no_home_fallback)
        why = f"capsule home '{no_home_fallback}' is a link or a file, not a folder: refusing to use it"
    r = run_without_home(capsule, other_user, "ps")
    assert r.returncode == 125, r.stdout + r.stderr
    assert why in r.stderr
    if planted == "folder":
        assert os.listdir(no_home_fallback) == []
