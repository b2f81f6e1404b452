"""Host folders a sandbox writes to (boot binds, hot mounts, named volumes, the fs API): nothing
written there may become a privilege for another host user, or take another host user's id.

A second, unprivileged host account (the other_user fixture) plays the other local user: it
must not gain anything from what sandbox root left in a shared folder."""
import os
import shutil
import stat
import tempfile
import uuid

import pytest

from secutil import sh

CAPSULE_UID_BASE = 1000000000  # home.c's CAPSULE_DEFAULT_UID_BASE: the sandboxes' own host ids

# A v2 security.capability granting CAP_DAC_READ_SEARCH (bit 2) permitted and effective.
FILE_CAP_DAC_READ_SEARCH = "0x0100000204000000000000000000000000000000"


@pytest.fixture
def shared_dir(other_user):
    """A folder owned by root that the other user can read and run things from, as a
    project folder on a shared host would be."""
    d = tempfile.mkdtemp(prefix="capsule-hostsec-", dir="/var/tmp")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def setid_attacks(where):
    """A script for sandbox root that tries every way to leave a set-id or capable program in
    WHERE, and prints which calls the sandbox refused."""
    return f"""
cd {where}
cp /usr/bin/id id-suid; chmod 4755 id-suid 2>/dev/null || echo refused-chmod-suid
cp /usr/bin/id id-sgid; chmod g+s id-sgid 2>/dev/null || echo refused-chmod-sgid
python3 -c 'import os; os.close(os.open("id-creat", os.O_CREAT | os.O_WRONLY, 0o4755))' 2>/dev/null || echo refused-creat
python3 -c 'import os; os.mknod("id-mknod", 0o104755)' 2>/dev/null || echo refused-mknod
cp /bin/cat cat-cap
python3 -c 'import os; os.setxattr("cat-cap", "security.capability", bytes.fromhex("{FILE_CAP_DAC_READ_SEARCH[2:]}"))' \\
    2>/dev/null || echo refused-setcap
true
"""


def assert_nothing_privileged_left(folder, other_user):
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        st = os.lstat(path)
        assert not st.st_mode & (stat.S_ISUID | stat.S_ISGID), (name, oct(st.st_mode))
        assert "security.capability" not in os.listxattr(path, follow_symlinks=False), name
    # What another host user gets from running what is there: nothing beyond its own rights.
    if os.path.exists(os.path.join(folder, "id-suid")):
        r = other_user.run([os.path.join(folder, "id-suid"), "-u"])
        assert r.stdout.strip() == str(other_user.uid), r
    if os.path.exists(os.path.join(folder, "cat-cap")):
        r = other_user.run([os.path.join(folder, "cat-cap"), "/etc/shadow"])
        assert r.returncode != 0 and "root:" not in r.stdout


def test_no_setid_or_capable_program_through_a_boot_bind(capsule, shared_dir, other_user):
    r = capsule.run("run", "-v", f"{shared_dir}:/mnt", "--", "sh", "-c", setid_attacks("/mnt"))
    assert r.returncode == 0, r.stderr
    assert set(r.stdout.split()) == {"refused-chmod-suid", "refused-chmod-sgid", "refused-creat", "refused-mknod",
                                     "refused-setcap"}, r.stdout
    assert_nothing_privileged_left(shared_dir, other_user)


def test_no_setid_or_capable_program_through_a_hot_mount(capsule, shared_dir, other_user):
    name = capsule.create()
    r = capsule.run("mount", name, shared_dir, "/hot")
    assert r.returncode == 0, r.stderr
    r = sh(capsule, name, setid_attacks("/hot"))
    assert r.returncode == 0 and "refused-chmod-suid" in r.stdout and "refused-setcap" in r.stdout, (r.stdout, r.stderr)
    assert_nothing_privileged_left(shared_dir, other_user)


def test_no_setid_program_through_a_named_volume(capsule, other_user):
    vol = "hostsec" + uuid.uuid4().hex[:8]
    try:
        r = capsule.run("run", "-v", f"{vol}:/data", "--", "sh", "-c", setid_attacks("/data"))
        assert r.returncode == 0 and "refused-chmod-suid" in r.stdout, (r.stdout, r.stderr)
        folder = os.path.join(capsule.home, "volumes", vol, "data")
        assert os.path.isdir(folder), os.listdir(os.path.join(capsule.home, "volumes", vol))
        assert_nothing_privileged_left(folder, other_user)
    finally:
        capsule.run("volume", "rm", vol)


def test_the_fs_api_and_cp_in_drop_setid_bits(capsule, shared_dir, tmp_path, other_user):
    name = capsule.create("-v", f"{shared_dir}:/mnt")
    r = capsule.run("fs", name, "write", "--mode", "4755", "/mnt/by-api", "#!/bin/sh\nid -u\n")
    assert r.returncode == 0, r.stderr
    src = tmp_path / "suid-on-host"
    shutil.copy("/usr/bin/id", src)
    os.chmod(src, 0o4755)
    r = capsule.run("cp", str(src), f"{name}:/mnt/by-cp")
    assert r.returncode == 0, r.stderr
    r = capsule.run("fs", name, "mkdir", "--mode", "2775", "/mnt/dir-by-api")
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(os.stat(os.path.join(shared_dir, "by-api")).st_mode) == 0o755
    assert_nothing_privileged_left(shared_dir, other_user)


def test_a_set_id_file_of_the_owner_loses_its_bit_when_the_sandbox_rewrites_it(capsule, shared_dir, other_user):
    # The host user's own set-id program in a bound folder: sandbox root may write to it (it
    # is root's), but then the kernel clears the bit, as for anyone without CAP_FSETID.
    progs = [os.path.join(shared_dir, n) for n in ("by-command", "by-fs-api")]
    for prog in progs:
        shutil.copy("/usr/bin/id", prog)
        os.chmod(prog, 0o6755)
    name = capsule.create("-v", f"{shared_dir}:/mnt")
    sh(capsule, name, "cat /usr/bin/id > /mnt/by-command", check=True)
    r = capsule.run("fs", name, "write", "/mnt/by-fs-api", "#!/bin/sh\nid -u\n")
    assert r.returncode == 0, r.stderr
    for prog in progs:
        assert not os.stat(prog).st_mode & (stat.S_ISUID | stat.S_ISGID), (prog, oct(os.stat(prog).st_mode))


def test_sandbox_ids_never_become_another_host_users(capsule, shared_dir, other_user):
    theirs = os.path.join(shared_dir, "theirs")
    with open(theirs, "w") as f:
        f.write("the other user's\n")
    os.chown(theirs, other_user.uid, other_user.gid)
    os.chmod(theirs, 0o644)
    os.chmod(shared_dir, 0o777)
    uid = other_user.uid
    script = f"""
cd /mnt
stat -c '%u' theirs
echo planted > mine; chown {uid}:{uid} mine
setpriv --reuid {uid} --regid {uid} --clear-groups sh -c 'echo as-user > by-user'
echo more >> theirs 2>/dev/null || echo refused-write-theirs
chown 0 theirs 2>/dev/null || echo refused-chown-theirs
"""
    r = capsule.run("run", "-v", f"{shared_dir}:/mnt", "--", "sh", "-c", script)
    assert r.returncode == 0, r.stderr
    out = r.stdout.split()
    # The other user's file is nobody's inside, and sandbox root can neither write nor take it.
    assert out[0] == "65534" and "refused-write-theirs" in out and "refused-chown-theirs" in out, r.stdout
    st = os.stat(theirs)
    assert (st.st_uid, st.st_gid) == (other_user.uid, other_user.gid)
    with open(theirs) as f:
        assert f.read() == "the other user's\n"
    # What the sandbox gave its own uid (the other user's number inside) lands on the
    # sandbox's private host ids, never on the other user's.
    for name in ("mine", "by-user"):
        st = os.stat(os.path.join(shared_dir, name))
        assert st.st_uid >= CAPSULE_UID_BASE and st.st_uid != other_user.uid, (name, st.st_uid)
    r = other_user.run(["sh", "-c", f"echo x >> {shared_dir}/mine"])
    assert r.returncode != 0


def test_what_sandbox_root_writes_is_the_owners(capsule, shared_dir):
    r = capsule.run("run", "-v", f"{shared_dir}:/mnt", "--", "sh", "-c", "echo x > /mnt/by-root; mkdir /mnt/d")
    assert r.returncode == 0, r.stderr
    for name in ("by-root", "d"):
        st = os.stat(os.path.join(shared_dir, name))
        assert (st.st_uid, st.st_gid) == (os.geteuid(), os.getegid()), name


def test_a_transform_mount_gives_no_host_users_id_and_no_setid_bit(capsule, shared_dir, other_user):
    # A transform's folder is served by capsule-fuse, which maps ids itself: the same rules.
    plugin = os.path.join(capsule.build, "transform-xor.so")
    uid = other_user.uid
    os.chmod(shared_dir, 0o777)
    script = f"""
cd /mnt
echo x > mine; chown {uid}:{uid} mine
setpriv --reuid {uid} --regid {uid} --clear-groups sh -c 'echo u > by-user'
cp /bin/true t; chmod 4755 t 2>/dev/null || echo refused-chmod-suid
"""
    r = capsule.run("run", "-v", f"{shared_dir}:/mnt", "--transform", f"/mnt={plugin}:k", "--", "sh", "-c", script)
    assert r.returncode == 0, r.stderr
    assert "refused-chmod-suid" in r.stdout
    for name in ("mine", "by-user"):
        st = os.stat(os.path.join(shared_dir, name))
        assert st.st_uid >= CAPSULE_UID_BASE and st.st_uid != other_user.uid, (name, st.st_uid)
    assert_nothing_privileged_left(shared_dir, other_user)
