"""capsule diff reads a sandbox's own layer from the host, as root, while the sandbox writes
it (docs/architecture.md, "What changed").

The attack: a process in the sandbox swaps a folder of its layer for a symlink to "/" (the
host's root, were the host to follow it) and back, as fast as it can, while diff walks the
layer; and a FIFO in the layer, which an open would block on. What stops it: each folder is
opened from its parent's descriptor by one component with openat2(RESOLVE_NO_SYMLINKS |
RESOLVE_BENEATH | RESOLVE_NO_XDEV), entries are looked at with fstatat(AT_SYMLINK_NOFOLLOW),
and nothing but folders (and empty files, for a whiteout mark) is ever opened. The rule under
test: no diff lists anything that is not in the sandbox's layer (here, below the swapped
folder only its one marker file), and none hangs."""
import json
import subprocess

from secutil import sh


def test_a_folder_swapped_for_a_symlink_to_the_host_root_is_never_walked_through(capsule):
    name = capsule.create()
    r = sh(capsule, name, "mkdir -p /root/d && echo m > /root/d/marker && mkfifo /root/fifo")
    assert r.returncode == 0, r.stderr
    swapper = capsule.popen("exec", name, "sh", "-c",
                            "while :; do mv /root/d /root/x; ln -s / /root/d; rm /root/d; mv /root/x /root/d; done",
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        seen_link = seen_dir = 0
        for _ in range(40):
            r = capsule.run("diff", "--json", name, timeout=60)
            assert r.returncode == 0, r.stderr
            paths = {c["path"]: c for c in json.loads(r.stdout)}
            below = [p for p in paths if p.startswith(("/root/d/", "/root/x/"))]
            assert set(below) <= {"/root/d/marker", "/root/x/marker"}, below
            d = paths.get("/root/d")
            if d and d["type"] == "symlink":
                # No link_target when the swap back to a folder came between lstat and readlink.
                assert d.get("link_target", "/") == "/"
                seen_link += 1
            elif d:
                seen_dir += 1
            assert paths["/root/fifo"]["type"] == "other"
        # The race was run, not only one side of it (either side alone is enough to pass).
        assert seen_link + seen_dir > 0
    finally:
        swapper.kill()
        swapper.wait(timeout=30)
