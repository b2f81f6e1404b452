"""Transform mounts (capsule-fuse): the FUSE server must never lead the sandbox outside the
folder it serves, and a plugin that crashes must fail I/O, not hang the sandbox or its stop."""
import os
import shutil
import stat
import subprocess
import tempfile
import uuid

import pytest
from secutil import children_named, wait_until


@pytest.fixture
def plugin(capsule):
    return os.path.join(capsule.build, "transform-xor.so")


@pytest.fixture
def tree():
    """A parent folder holding a secret beside the served folder."""
    parent = tempfile.mkdtemp(prefix="capsule-transform-sec-", dir="/tmp")
    served = os.path.join(parent, "served")
    os.mkdir(served)
    os.chmod(parent, 0o755)
    os.chmod(served, 0o777)
    marker = f"host-secret-{uuid.uuid4().hex}"
    with open(os.path.join(parent, "secret"), "w") as f:
        f.write(marker)
    yield parent, served, marker
    shutil.rmtree(parent, ignore_errors=True)


def args(served, plugin):
    return ["-v", f"{served}:/mnt/s", "--transform", f"/mnt/s={plugin}:k"]


def test_symlinks_in_the_served_folder_resolve_inside_the_sandbox_not_on_the_host(capsule, tree, plugin):
    parent, served, marker = tree
    os.symlink("/etc/shadow", os.path.join(served, "shadow"))
    os.symlink("../secret", os.path.join(served, "up"))
    os.symlink("../..", os.path.join(served, "upup"))
    rel = os.path.relpath(os.path.join(parent, "secret"), "/")
    r = capsule.run("run", *args(served, plugin), "--", "sh", "-c",
                    f"cat /mnt/s/shadow; cat /mnt/s/up; cat /mnt/s/upup/{rel}; cat /mnt/s/upup/upup/{rel};"
                    " readlink /mnt/s/up")
    with open("/etc/shadow") as f:
        shadow = f.read()
    root_line = next(line for line in shadow.splitlines() if line.startswith("root:"))
    assert root_line not in r.stdout
    assert marker not in r.stdout
    # The links themselves are served as they are: the sandbox reads their text.
    assert r.stdout.endswith("../secret\n")


def test_a_symlink_the_sandbox_makes_cannot_write_outside_through_the_server(capsule, tree, plugin):
    parent, served, marker = tree
    victim = f"capsule-pwned-{uuid.uuid4().hex[:8]}"
    r = capsule.run("run", *args(served, plugin), "--", "sh", "-c",
                    f"ln -s /etc /mnt/s/evil && ln -s .. /mnt/s/dotdot && echo x > /mnt/s/evil/{victim};"
                    f" echo y > /mnt/s/dotdot/{victim}; ls /mnt/s/dotdot/ | grep -c secret")
    assert not os.path.exists(f"/etc/{victim}")
    assert not os.path.exists(os.path.join(parent, victim))
    assert r.stdout.strip().endswith("0")
    assert os.readlink(os.path.join(served, "evil")) == "/etc"


def test_set_id_bits_and_device_nodes_do_not_reach_the_host(capsule, tree, plugin):
    parent, served, marker = tree
    capsule.run("run", *args(served, plugin), "--", "sh", "-c",
                "cp /bin/true /mnt/s/suid && chmod 6755 /mnt/s/suid; mknod /mnt/s/null c 1 3; true", check=True)
    st = os.stat(os.path.join(served, "suid"))
    assert not st.st_mode & (stat.S_ISUID | stat.S_ISGID)
    assert not os.path.exists(os.path.join(served, "null"))


def fuse_children(shim_pid):
    return children_named(shim_pid, "capsule-fuse")


def test_a_crashing_plugin_fails_io_without_hanging_the_sandbox_or_its_stop(capsule, tree):
    parent, served, marker = tree
    crash = os.path.join(capsule.build, "tests", "e2e", "transform-crash.so")
    name = capsule.create("-v", f"{served}:/mnt/s", "--transform", f"/mnt/s={crash}")
    shim = capsule.inspect(name)["shim_pid"]
    servers = fuse_children(shim)
    assert len(servers) == 1
    r = capsule.run("exec", name, "--", "sh", "-c", "echo x > /mnt/s/f; echo rc=$?; cat /mnt/s/f; echo rc=$?",
                    timeout=30)
    assert "rc=0" not in r.stdout, r.stdout
    assert any(e in r.stderr for e in ("Transport endpoint is not connected", "Input/output error",
                                       "Software caused connection abort")), r.stderr
    # The sandbox still answers, and the server was reaped, not left a zombie.
    assert capsule.run("exec", name, "--", "echo", "alive", check=True, timeout=30).stdout == "alive\n"
    assert wait_until(lambda: not os.path.exists(f"/proc/{servers[0]}"), 10)
    capsule.run("stop", name, check=True, timeout=30)
    assert wait_until(lambda: not os.path.exists(f"/proc/{shim}"), 10)
