"""-v SRC:DST[:ro|rw]: host folders and files bound into the sandbox at start."""
import os
import tempfile
import uuid

import pytest

from .helpers import assert_capsule_error, run_entries

# Every test here runs at both isolation levels (tests/conftest.py, both_levels).
pytestmark = pytest.mark.both_levels


@pytest.fixture
def hostdir():
    d = tempfile.mkdtemp(prefix="capsule-bind-", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    import shutil
    shutil.rmtree(d, ignore_errors=True)


def test_rw_bind_shows_changes_both_ways_while_running(capsule, hostdir):
    name = capsule.create("-v", f"{hostdir}:/mnt/data")
    with open(os.path.join(hostdir, "from-host.txt"), "w") as f:
        f.write("host\n")
    r = capsule.run("exec", name, "--", "cat", "/mnt/data/from-host.txt", check=True)
    assert r.stdout == "host\n"
    capsule.run("exec", name, "--", "sh", "-c", "echo sandbox > /mnt/data/from-sandbox.txt", check=True)
    with open(os.path.join(hostdir, "from-sandbox.txt")) as f:
        assert f.read() == "sandbox\n"


def test_ro_bind_refuses_writes_even_from_root_with_erofs(capsule, hostdir):
    with open(os.path.join(hostdir, "f"), "w") as f:
        f.write("x")
    r = capsule.run("run", "-v", f"{hostdir}:/mnt/ro:ro", "--", "sh", "-c",
                    "cat /mnt/ro/f; echo; touch /mnt/ro/new; echo rc=$?; echo y >> /mnt/ro/f; echo rc=$?")
    assert r.stdout.startswith("x\n")
    # touch fails with 1, a failed shell redirection with 2; both for EROFS.
    assert "rc=1\nrc=2\n" in r.stdout
    assert r.stderr.count("Read-only file system") == 2
    assert os.listdir(hostdir) == ["f"]


def test_ownership_maps_across_the_boundary_in_both_directions(capsule, hostdir):
    # Tests run as root: the sandbox's root writes as root on the host, and root's files are
    # root's inside. Another host user's files are nobody's inside (the sandbox can take no
    # host user's id: tests/security/test_host_folder_security.py).
    other = os.path.join(hostdir, "owned-by-1234")
    open(other, "w").close()
    os.chown(other, 1234, 1234)
    r = capsule.run("run", "-v", f"{hostdir}:/mnt/d", "--", "sh", "-c",
                    "touch /mnt/d/made-inside; stat -c '%u:%g %n' /mnt/d /mnt/d/owned-by-1234", check=True)
    assert r.stdout.split("\n")[:2] == ["0:0 /mnt/d", "65534:65534 /mnt/d/owned-by-1234"]
    st = os.stat(os.path.join(hostdir, "made-inside"))
    assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())


def test_a_single_file_can_be_bound(capsule, hostdir):
    path = os.path.join(hostdir, "app.conf")
    with open(path, "w") as f:
        f.write("debug=1\n")
    r = capsule.run("run", "-v", f"{path}:/etc/app/app.conf:ro", "--", "cat", "/etc/app/app.conf", check=True)
    assert r.stdout == "debug=1\n"


def test_binds_survive_stop_and_start_and_inspect_lists_them(capsule, hostdir):
    name = capsule.create("-v", f"{hostdir}:/mnt/data:ro")
    assert capsule.inspect(name)["mounts"] == [
        {"kind": "bind", "host_path": hostdir, "guest_path": "/mnt/data", "readonly": True}]
    open(os.path.join(hostdir, "later"), "w").close()
    capsule.run("stop", name, check=True)
    capsule.run("start", name, check=True)
    r = capsule.run("exec", name, "--", "ls", "/mnt/data", check=True)
    assert r.stdout == "later\n"


def test_a_symlink_planted_at_a_bind_target_cannot_lead_outside_the_sandbox(capsule, hostdir):
    escape = f"/tmp/capsule-escape-{uuid.uuid4().hex[:8]}"
    name = capsule.create("-v", f"{hostdir}:/q/link/data")
    capsule.run("exec", name, "--", "sh", "-c",
                f"mv /q /q-moved && ln -s /../../../../../../..{escape} /q", check=True)
    capsule.run("stop", name, check=True)
    capsule.run("start", name)
    assert not os.path.exists(escape)


@pytest.mark.parametrize("source", ["/", "/etc", "/etc/ssh", "/root", "/home", "/proc", "/sys/kernel", "/dev",
                                    "/usr/bin", "/var/lib", "/var"])
def test_sensitive_host_paths_are_refused(capsule, source):
    r = capsule.run("run", "-v", f"{source}:/mnt/x", "--", "true")
    assert_capsule_error(r)
    assert "sensitive host path" in r.stderr and f"'{source}'" in r.stderr


def test_secret_folders_anywhere_and_the_capsule_home_are_refused(capsule, hostdir):
    for secret in (".ssh", ".gnupg", ".aws"):
        os.makedirs(os.path.join(hostdir, secret, "sub"))
        for src in (os.path.join(hostdir, secret), os.path.join(hostdir, secret, "sub")):
            r = capsule.run("run", "-v", f"{src}:/mnt/x", "--", "true")
            assert_capsule_error(r)
            assert "sensitive" in r.stderr
    for src in (capsule.home, os.path.join(capsule.home, "run"), os.path.dirname(capsule.home)):
        r = capsule.run("run", "-v", f"{src}:/mnt/x", "--", "true")
        assert_capsule_error(r)
        assert "sensitive" in r.stderr


def test_a_symlink_to_a_sensitive_path_is_refused_too(capsule, hostdir):
    link = os.path.join(hostdir, "innocent")
    os.symlink("/etc", link)
    r = capsule.run("run", "-v", f"{link}:/mnt/x", "--", "true")
    assert_capsule_error(r)
    assert "'/etc'" in r.stderr


def test_allow_sensitive_mounts_it_anyway(capsule):
    r = capsule.run("run", "--allow-sensitive", "-v", "/etc:/mnt/hostetc:ro", "--", "cat", "/mnt/hostetc/hostname",
                    check=True)
    with open("/etc/hostname") as f:
        assert r.stdout == f.read()


def test_bad_bind_specs_are_refused_before_anything_starts(capsule, hostdir):
    cases = ((f"/nonexistent-{uuid.uuid4().hex[:6]}:/x", "No such file"), ("rel/path:/x", "rel/path"),
             (f"{hostdir}:relative", "absolute"), (f"{hostdir}:/", "'/'"), (f"{hostdir}:/proc/x", "/proc"),
             (f"{hostdir}:/x:rx", "rx"), ("my/volume:/x", "my/volume"))
    for spec, words in cases:
        before = run_entries(capsule)
        r = capsule.run("run", "-v", spec, "--", "true")
        assert_capsule_error(r)
        assert words in r.stderr, (spec, r.stderr)
        assert run_entries(capsule) == before
    r = capsule.run("run", "-v", f"{hostdir}:/x", "-v", f"{hostdir}:/x", "--", "true")
    assert_capsule_error(r)
    assert "two mounts at '/x'" in r.stderr
