"""capsule watch against a hostile sandbox: the path to watch, and every folder a recursive
watch adds, are resolved inside the sandbox from its root (openat2 RESOLVE_IN_ROOT |
RESOLVE_NO_MAGICLINKS, as the filesystem API resolves), and inotify is handed the descriptor
that gave, never the sandbox's path. So a /proc magic link (a process's root, cwd or fd) is
refused with one line, and a `..` chain or absolute link stays inside the root (docs/security.md,
"The filesystem API and cp")."""
import pytest

from tests.e2e.test_watch import Watch, kinds

pytestmark = pytest.mark.both_levels


def _one_line(r, *words):
    err = r.stderr.strip()
    assert r.returncode != 0 and "\n" not in err and err.startswith("capsule: watch"), (r.returncode, err)
    for w in words:
        assert w in err, err


@pytest.mark.vm_in_check
def test_magic_links_in_a_watched_path_are_refused(capsule, sandbox):
    # PID 1 is the agent itself: its root, cwd and fds are what a plain walk by the agent
    # follows (before this, each of these watches was accepted and ran).
    r = capsule.run("exec", sandbox, "sh", "-c",
                    "mkdir -p /wm/real && ln -s /proc/1/root /wm/root && ln -s /proc/self/cwd /wm/cwd && "
                    "ln -s /proc/1/fd /wm/fds")
    assert r.returncode == 0, r.stderr
    for path in ("/wm/root/etc", "/wm/root", "/wm/cwd/etc", "/wm/fds/0", "/proc/1/root/etc", "/proc/1/cwd/.",
                 "/proc/self/root/wm/real"):
        for flags in ((), ("--recursive",)):
            _one_line(capsule.run("watch", *flags, sandbox, path, timeout=60), path, "link")


def test_links_out_of_the_root_stay_inside(capsule, sandbox, tmp_path):
    """`..` past the root and absolute links land on the sandbox's own folders: a host folder
    that the sandbox does not have is not found, whatever the link; and a recursive watch does
    not go into a link to a folder, in the tree at start or made later."""
    host_only = tmp_path / "host-only-folder"
    host_only.mkdir()
    r = capsule.run("exec", sandbox, "sh", "-c",
                    "mkdir -p /wl/a/b /wl/inside && ln -s ../../../../../../.. /wl/a/b/up && ln -s / /wl/abs && "
                    "ln -s /proc/1/root /wl/magic")
    assert r.returncode == 0, r.stderr
    for path in (f"/wl/a/b/up{host_only}", f"/wl/abs{host_only}"):
        _one_line(capsule.run("watch", sandbox, path, timeout=60), "No such file")
    # The links resolve as a process of the sandbox resolves them: to its own /wl/inside.
    w = Watch(capsule, sandbox, "/wl/a/b/up/wl/inside")
    try:
        w.ready("/wl/a/b/up/wl/inside")
        assert capsule.run("exec", sandbox, "touch", "/wl/inside/seen").returncode == 0
        assert kinds(w.until("/wl/a/b/up/wl/inside/seen"))[-1] == ("create", None, "/wl/a/b/up/wl/inside/seen")
    finally:
        w.close()
    # Recursive: links in the tree are names, never folders of it. A change behind one (here
    # under the sandbox's /tmp, through /wl/abs) is not reported; one in the tree is.
    w = Watch(capsule, sandbox, "/wl", "--recursive")
    try:
        w.ready("/wl")
        r = capsule.run("exec", sandbox, "sh", "-c",
                        "ln -s /proc/1/root /wl/magic2 && touch /tmp/behind-link && touch /wl/a/b/end")
        assert r.returncode == 0, r.stderr
        got = kinds(w.until("/wl/a/b/end"))
        assert got == [("create", None, "/wl/magic2"), ("create", None, "/wl/a/b/end")], got
    finally:
        w.close()
