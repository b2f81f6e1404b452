"""capsule for an ordinary user: the real CLI run as an unprivileged user that this module makes
(useradd, with the /etc/subuid and /etc/subgid ranges useradd gives) and removes (userdel -r).

The user gets what a login would give: HOME, XDG_RUNTIME_DIR (/run/user/UID, 0700, theirs),
XDG_DATA_HOME. capsule's state is then $XDG_DATA_HOME/capsule. The build tree is run in place
when the user can reach it; a tree below a folder only root may pass (a worktree in a private
folder, CI's checkout) is copied, its programs only, to a folder the user can read."""
import json
import socket
import time
import urllib.request
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import uuid

import pytest

from .helpers import BUILD, answering, cgroup_v2_only, settled_run_entries
from .imageutil import (Entry, busybox_layer, image_tools, layer_tar, make_layout, need_static_agent,  # noqa: F401
                        needs_tools, registry, workdir)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# What capsule runs: the CLI and the helpers it finds beside itself (find_helper), and the
# library the dynamic ones load from beside themselves ($ORIGIN).
PROGRAMS = ("capsule", "capsule-shim", "capsule-agent", "capsule-fuse", "capsule-images", "libcapsule.so.0")


def _may_pass(path, uid, gids):
    """Whether UID (with GIDS) may search every folder from / down to PATH and read PATH."""
    parts = os.path.abspath(path).split("/")
    for i in range(1, len(parts) + 1):
        p = "/".join(parts[:i]) or "/"
        st = os.stat(p)
        want = stat.S_IXOTH if stat.S_ISDIR(st.st_mode) else stat.S_IROTH | stat.S_IXOTH
        if st.st_uid == uid:
            want <<= 6
        elif st.st_gid in gids:
            want <<= 3
        if st.st_mode & want != want:
            return False
    return True


class User:
    """Runs the capsule CLI as the module's user."""

    def __init__(self, name, bindir):
        pw = pwd.getpwnam(name)
        self.name, self.uid, self.gid, self.home = name, pw.pw_uid, pw.pw_gid, pw.pw_dir
        self.bindir = bindir
        self.runtime = f"/run/user/{self.uid}"
        self.data = os.path.join(self.home, ".local", "share")
        self.capsule_home = os.path.join(self.data, "capsule")
        self.env = {
            "HOME": self.home, "USER": name, "LOGNAME": name, "PATH": "/usr/bin:/bin",
            "XDG_RUNTIME_DIR": self.runtime, "XDG_DATA_HOME": self.data,
            # Not the host's capsule.json (docs/config.md).
            "CAPSULE_CONFIG": os.path.join(self.home, "capsule.json"),
            "https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9", "no_proxy": "127.0.0.1,localhost",
        }
        # A sanitized build writes its reports where make check-asan looks: the user may not
        # write there, so to a folder of the user's, copied over at the end.
        self.asan_dir = None
        for var in ("ASAN_OPTIONS", "UBSAN_OPTIONS"):
            if var in os.environ:
                self.env[var] = os.environ[var]

    def sh(self, *argv, input=None, timeout=60):
        """ARGV as the user (setpriv: the user's uid, gid and groups, nothing else kept)."""
        env = ["env", "-i"] + [f"{k}={v}" for k, v in self.env.items()]
        return subprocess.run(["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups", "--",
                               *env, *argv], input=input, capture_output=True, text=True, timeout=timeout,
                              cwd="/")

    def capsule(self, *args, input=None, timeout=60):
        return self.sh(os.path.join(self.bindir, "capsule"), *args, input=input, timeout=timeout)

    def ok(self, *args, input=None):
        r = self.capsule(*args, input=input)
        assert r.returncode == 0, f"capsule {' '.join(args)} as {self.name}: {r.returncode}: {r.stderr}"
        return r.stdout


def _kill_processes_of(uid):
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.stat(f"/proc/{pid}").st_uid == uid:
                    os.kill(int(pid), 9)
            except (FileNotFoundError, ProcessLookupError):
                pass


def _subids(path, name, uid):
    with open(path) as f:
        for line in f:
            f = line.strip().split(":")
            if len(f) == 3 and f[0] in (name, str(uid)):
                return int(f[1]), int(f[2])
    return None


def _make_user(with_ranges):
    if os.geteuid() != 0:
        pytest.skip("making the test's unprivileged user needs root")
    for tool in ("useradd", "userdel", "setpriv"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} is missing (passwd, util-linux)")
    name = f"capsrl{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name], check=True, capture_output=True)
    tmp = None
    runtime = None
    try:
        pw = pwd.getpwnam(name)
        if not with_ranges:
            # A user without subordinate ranges (an account made before they were handed out,
            # or by a tool that gives none): its sandboxes map a single id.
            for path, flag in (("/etc/subuid", "--del-subuids"), ("/etc/subgid", "--del-subgids")):
                got = _subids(path, name, pw.pw_uid)
                if got:
                    subprocess.run(["usermod", flag, f"{got[0]}-{got[0] + got[1] - 1}", name], check=True,
                                   capture_output=True)
            assert not _subids("/etc/subuid", name, pw.pw_uid) and not _subids("/etc/subgid", name, pw.pw_uid)
        runtime = f"/run/user/{pw.pw_uid}"
        os.makedirs("/run/user", mode=0o755, exist_ok=True)
        os.mkdir(runtime, 0o700)
        os.chown(runtime, pw.pw_uid, pw.pw_gid)
        gids = set(os.getgrouplist(name, pw.pw_gid))
        bindir = BUILD
        if not all(_may_pass(os.path.join(BUILD, p), pw.pw_uid, gids) for p in PROGRAMS
                   if os.path.exists(os.path.join(BUILD, p))):
            # The build tree lies below a folder the user may not pass.
            tmp = tempfile.mkdtemp(prefix="capsule-rootless-", dir="/var/tmp")
            os.chmod(tmp, 0o755)
            for p in PROGRAMS:
                if os.path.exists(os.path.join(BUILD, p)):
                    shutil.copy2(os.path.join(BUILD, p), tmp)
            bindir = tmp
        u = User(name, bindir)
        if "log_path=" in os.environ.get("ASAN_OPTIONS", ""):
            u.asan_dir = os.path.join(u.home, "sanitizer-logs")
            os.mkdir(u.asan_dir)
            os.chown(u.asan_dir, pw.pw_uid, pw.pw_gid)
            for var in ("ASAN_OPTIONS", "UBSAN_OPTIONS"):
                if var in u.env:
                    u.env[var] = ":".join(
                        f"log_path={u.asan_dir}/{var[:-8].lower()}" if o.startswith("log_path=") else o
                        for o in u.env[var].split(":"))
        yield u
        # Whatever a test left is removed as the user, by name.
        r = u.capsule("ps", "-a", "--json")
        if r.returncode == 0:
            for sb in json.loads(r.stdout):
                u.capsule("rm", "-f", sb["name"])
        if u.asan_dir and os.listdir(u.asan_dir):
            dest = os.path.dirname(next(o for o in os.environ["ASAN_OPTIONS"].split(":")
                                        if o.startswith("log_path="))[len("log_path="):])
            for f in os.listdir(u.asan_dir):
                shutil.copy(os.path.join(u.asan_dir, f), dest)
    finally:
        # The user's processes are this module's sandboxes' shims and what they started:
        # none may outlive the user.
        if runtime:
            _kill_processes_of(pwd.getpwnam(name).pw_uid)
        subprocess.run(["userdel", "-r", name], capture_output=True)
        if runtime:
            shutil.rmtree(runtime, ignore_errors=True)
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def user():
    yield from _make_user(True)


@pytest.fixture(scope="module")
def single_user():
    yield from _make_user(False)


def test_run_maps_root_to_the_user_and_the_rest_to_the_users_subordinate_ranges(user):
    sub_uid = _subids("/etc/subuid", user.name, user.uid)
    sub_gid = _subids("/etc/subgid", user.name, user.uid)
    out = user.ok("run", "--", "sh", "-c", "id -u; id -g; cat /proc/self/uid_map /proc/self/gid_map")
    lines = [line.split() for line in out.splitlines()]
    assert lines[0] == ["0"] and lines[1] == ["0"], out
    maps = lines[2:]
    if sub_uid and sub_gid:
        assert maps == [["0", str(user.uid), "1"], ["1", str(sub_uid[0]), str(min(sub_uid[1], 65535))],
                        ["0", str(user.gid), "1"], ["1", str(sub_gid[0]), str(min(sub_gid[1], 65535))]], out
    else:
        assert maps == [["0", str(user.uid), "1"], ["0", str(user.gid), "1"]], out


def test_state_is_in_the_users_xdg_data_home_and_private(user):
    user.ok("ps")
    st = os.stat(user.capsule_home)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (user.uid, 0o700)


def test_detached_sandbox_exec_ps_inspect_rm(user):
    name = f"d-{uuid.uuid4().hex[:6]}"
    assert user.ok("run", "-d", "--name", name, "--", "sleep", "600").splitlines()[0] == name
    assert user.ok("exec", name, "--", "sh", "-c", "echo hi; id -u").split() == ["hi", "0"]
    listed = {s["name"]: s for s in json.loads(user.ok("ps", "--json"))}
    assert listed[name]["state"] == "running"
    info = json.loads(user.ok("inspect", name))
    assert info["rootless"]["id_map"] == ("subordinate" if _subids("/etc/subuid", user.name, user.uid) else "single")
    user.ok("rm", "-f", name)
    assert name not in {s["name"] for s in json.loads(user.ok("ps", "-a", "--json"))}
    assert not os.path.exists(os.path.join(user.capsule_home, "run", name))


def _user_has_cgroups(user):
    """Whether the user may make cgroups where capsule would look: on cgroup v2 only, the
    cgroup the user's commands run in (ours: setpriv keeps it) or an ancestor, if theirs. A
    v1 or hybrid host delegates nothing to users."""
    if not cgroup_v2_only():
        return False
    with open("/proc/self/cgroup") as f:
        rel = next(line.split(":", 2)[2].strip() for line in f if line.startswith("0::"))
    path = "/sys/fs/cgroup" + rel
    while path.startswith("/sys/fs/cgroup/"):
        if os.stat(path).st_uid == user.uid:
            return True
        path = os.path.dirname(path)
    return False


def _user_may_open_kvm(user):
    """Whether /dev/kvm's mode lets the user open it read-write (its group, kvm on Debian)."""
    st = os.stat("/dev/kvm")
    gids = set(os.getgrouplist(user.name, user.gid))
    want = stat.S_IRUSR | stat.S_IWUSR if st.st_uid == user.uid else (
        stat.S_IRGRP | stat.S_IWGRP if st.st_gid in gids else stat.S_IROTH | stat.S_IWOTH)
    return st.st_mode & want == want


def test_default_pids_limit_is_rlimit_nproc_without_a_pids_cgroup(user):
    name = f"p-{uuid.uuid4().hex[:6]}"
    user.ok("create", "--name", name)
    info = json.loads(user.ok("inspect", name))
    assert info["limits"]["pids"] == 4096
    assert info["pids_limit_by"] == ("cgroup" if _user_has_cgroups(user) else "rlimit_nproc")
    out = user.ok("exec", name, "--", "sh", "-c", "grep 'Max processes' /proc/self/limits")
    assert out.split()[2:4] == ["4096", "4096"], out
    user.ok("rm", "-f", name)


def test_pids_limit_stops_a_fork_loop_inside(user):
    # Forks until the kernel refuses: with a limit of 20 for the sandbox's root, at most 20
    # processes of root's at once (the agent and this shell among them).
    prog = ("import os\nn = 0\ntry:\n    while n < 200:\n        if os.fork() == 0:\n            os.read(0, 1)\n"
            "            os._exit(0)\n        n += 1\nexcept OSError as e:\n    print('refused', n, e.errno)\n")
    r = user.capsule("run", "--pids-limit", "20", "--", "python3", "-c", prog)
    assert r.returncode == 0, r.stderr
    words = r.stdout.split()
    assert words[0] == "refused" and int(words[1]) < 20 and words[2] == "11", r.stdout


def test_memory_and_cpu_limits_fail_in_one_line_without_cgroups(user):
    if _user_has_cgroups(user):
        pytest.skip("this host delegates cgroups to the user")
    run = os.path.join(user.capsule_home, "run")
    before = settled_run_entries(run)
    for flag, value, what in (("--memory", "64M", "memory"), ("--cpus", "0.5", "cpu"), ("--cpuset-cpus", "0", "cpuset"),
                              ("--memory-reservation", "32M", "memory")):
        r = user.capsule("run", flag, value, "--", "true")
        assert r.returncode != 0
        err = r.stderr.strip()
        assert len(err.splitlines()) == 1 and what in err and "cgroup" in err, err
    assert settled_run_entries(run) == before


def test_bind_writes_land_owned_by_the_user_and_read_only_binds_refuse(user):
    shared = os.path.join(user.home, "shared")
    user.sh("mkdir", "-p", shared)
    user.ok("run", "-v", f"{shared}:/mnt", "--", "sh", "-c", "echo x > /mnt/by-root; mkdir /mnt/sub")
    for f in ("by-root", "sub"):
        st = os.stat(os.path.join(shared, f))
        assert (st.st_uid, st.st_gid) == (user.uid, user.gid), f
    r = user.capsule("run", "-v", f"{shared}:/mnt:ro", "--", "touch", "/mnt/no")
    assert r.returncode != 0 and "Read-only file system" in r.stderr
    assert not os.path.exists(os.path.join(shared, "no"))


def test_rm_removes_files_that_other_ids_of_the_sandbox_made(user):
    name = f"o-{uuid.uuid4().hex[:6]}"
    user.ok("create", "--name", name)
    user.ok("exec", name, "--", "sh", "-c",
            "mkdir -p /home/al/deep && echo s > /home/al/deep/f && chown -R 1000:1000 /home/al && chmod -R go-rwx /home/al")
    user.ok("rm", "-f", name)
    assert not os.path.exists(os.path.join(user.capsule_home, "run", name))


def test_tmpfs_cp_and_fs_api(user):
    name = f"f-{uuid.uuid4().hex[:6]}"
    user.ok("create", "--name", name, "--tmpfs", "/scratch:size=1M")
    assert "/scratch" in user.ok("exec", name, "--", "sh", "-c", "grep ' /scratch ' /proc/mounts")
    src = os.path.join(user.home, "in.txt")
    user.sh("sh", "-c", f"echo payload > {src}")
    user.ok("cp", src, f"{name}:/scratch/in.txt")
    user.ok("fs", name, "write", "/root/w.txt", "written")
    assert user.ok("fs", name, "cat", "/scratch/in.txt", "/root/w.txt") == "payload\nwritten"
    back = os.path.join(user.home, "back.txt")
    user.ok("cp", f"{name}:/root/w.txt", back)
    st = os.stat(back)
    assert st.st_uid == user.uid
    with open(back) as f:
        assert f.read() == "written"
    user.ok("rm", "-f", name)


def test_doctor_says_how_ids_map_and_what_needs_root(user):
    doc = json.loads(user.ok("doctor", "--json"))
    assert doc["root"] is False and doc["container_usable"] is True
    assert doc["rootless_id_map"] == ("subordinate" if _subids("/etc/subuid", user.name, user.uid) else "single")
    assert doc["pids_limit_by"] == ("cgroup" if _user_has_cgroups(user) else "rlimit_nproc")
    needs = doc["rootless_needs_root"]
    for what in ("volume quotas", "disk size", "hot mounts in a vm"):
        assert needs[what], what
    assert "vm isolation" not in needs
    # The vm level is a user's too; KVM through /dev/kvm's group, else TCG, with the reason.
    assert doc["vm_usable"] is doc["qemu"]
    if doc["kvm_device"] and not _user_may_open_kvm(user):
        assert doc["kvm"] is False and "its group" in doc["kvm_reason"], doc["kvm_reason"]
    text = user.ok("doctor")
    assert "without root:" in text and "needs root:" in text


def test_what_needs_root_is_refused_in_one_line(user):
    run = os.path.join(user.capsule_home, "run")
    user.ok("ps")  # the home and its run folder, made
    before = settled_run_entries(run)
    for args, words in ((("--disk-size", "1G"), "needs root"),
                        ):
        r = user.capsule("run", *args, "--", "true")
        assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1 and words in r.stderr, (args, r.stderr)
    assert settled_run_entries(run) == before
    r = user.capsule("volume", "create", "--quota", "16M", "q1")
    assert r.returncode != 0 and "a volume with a quota needs root" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert "q1" not in user.ok("volume", "ls")


OTHER_IDS = ("echo kept > /root/m && mkdir /home/al && echo al > /home/al/f && chown -R 1000:1001 /home/al "
             "&& chmod 600 /home/al/f && chmod 700 /home/al")
SHOW_OTHER_IDS = "cat /root/m; stat -c '%u:%g %a' /home/al /home/al/f; cat /home/al/f"
OTHER_IDS_SHOWN = "kept\n1000:1001 700\n1000:1001 600\nal\n"


def test_save_checkpoint_revert_fork_keep_other_ids_files_and_owners(user):
    # Files of the sandbox's other ids are the user's subordinate ids' on the host, which the
    # user can neither read nor give owners: the copies are made in a namespace of those ids.
    name, save, fork = (f"{p}-{uuid.uuid4().hex[:6]}" for p in ("s", "sv", "fk"))
    user.ok("create", "--name", name)
    user.ok("exec", name, "--", "sh", "-c", OTHER_IDS)
    r = user.capsule("save", name, save)
    assert r.returncode != 0 and "freeze" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    user.ok("stop", name)
    user.ok("save", name, save)
    user.ok("checkpoint", name, "c1")
    user.ok("fork", name, fork)
    assert user.ok("exec", fork, "--", "sh", "-c", SHOW_OTHER_IDS) == OTHER_IDS_SHOWN
    user.ok("start", name)
    user.ok("exec", name, "--", "rm", "-rf", "/home/al")
    user.ok("stop", name)
    user.ok("revert", name, "c1")
    user.ok("start", name)
    assert user.ok("exec", name, "--", "sh", "-c", SHOW_OTHER_IDS) == OTHER_IDS_SHOWN
    user.ok("rm", "-f", name, fork)
    assert user.ok("run", "--image", save, "--", "sh", "-c", SHOW_OTHER_IDS) == OTHER_IDS_SHOWN
    user.ok("saves", "rm", save)
    assert not os.path.exists(os.path.join(user.capsule_home, "saves", save))


def _get_page(port, tries, pause):
    """/page through the forward at PORT, once the server answers; None if it never did."""
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    for _ in range(tries):
        try:
            with direct.open(f"http://127.0.0.1:{port}/page", timeout=5) as resp:
                return resp.read().decode().strip()
        except OSError:  # refused, reset, or a read that timed out under load
            time.sleep(pause)
    return None


def test_network_full_and_a_port_forward(user):
    out = user.ok("run", "--network", "full", "--", "cat", "/etc/resolv.conf")
    assert "nameserver 10.0.2.3" in out
    name = f"w-{uuid.uuid4().hex[:6]}"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    user.ok("run", "-d", "--name", name, "-p", f"{port}:8000", "--", "sh", "-c",
            f"echo {name} > /root/page && exec python3 -m http.server 8000 --bind 127.0.0.1 -d /root")
    try:
        assert _get_page(port, 100, 0.1) == name
    finally:
        user.ok("rm", "-f", name)


def test_image_from_a_host_folder_of_the_users(user):
    need_static_agent(BUILD)
    root = os.path.join(user.home, "img")
    r = user.sh("sh", "-c", f"mkdir -p {root}/bin && cp /bin/busybox {root}/bin/ && ln -s busybox {root}/bin/sh "
                f"&& echo layer > {root}/marker")
    if r.returncode != 0:
        pytest.skip(f"no busybox to build a root from: {r.stderr}")
    assert user.ok("run", "--image", f"dir:{root}", "--", "/bin/sh", "-c", "cat /marker") == "layer\n"


def test_folder_volume_keeps_data_and_rm_removes_what_other_ids_wrote(user):
    vol = f"v{uuid.uuid4().hex[:6]}"
    user.ok("run", "-v", f"{vol}:/data", "--", "sh", "-c",
            "echo v > /data/x && mkdir /data/o && echo z > /data/o/f && chown -R 7:7 /data/o && chmod 700 /data/o")
    assert user.ok("run", "-v", f"{vol}:/data:ro", "--", "cat", "/data/x") == "v\n"
    st = os.stat(os.path.join(user.capsule_home, "volumes", vol, "data", "x"))
    assert st.st_uid == user.uid
    user.ok("volume", "rm", vol)
    assert vol not in user.ok("volume", "ls")
    assert not os.path.exists(os.path.join(user.capsule_home, "volumes", vol))


@needs_tools
def test_image_pulled_from_a_loopback_registry_with_whiteouts(user, registry, workdir):
    need_static_agent(BUILD)
    lower = layer_tar([Entry("data", "dir", mode=0o755), Entry("data/a", data=b"a"), Entry("data/b", data=b"b"),
                       Entry("home/app/f", data=b"app's", uid=1000, gid=1000)])
    upper = layer_tar([Entry("data/.wh.a", data=b""), Entry("z", data=b"top\n")])
    ref = registry.push(make_layout(workdir, [busybox_layer(), lower, upper]), f"test/rl-{uuid.uuid4().hex[:8]}")
    assert user.ok("image", "pull", ref).strip() == ref
    out = user.ok("run", "--image", ref, "--", "sh", "-c",
                  "cat /z; ls /data; cat /home/app/f; echo; id -u; stat -c %u:%g /home/app/f /bin/busybox")
    ranged = _subids("/etc/subuid", user.name, user.uid) is not None
    # With subordinate ranges the image's owners are kept (as those ids on the host).
    assert out.split() == ["top", "b", "app's", "0", "1000:1000" if ranged else "0:0", "0:0"], out
    user.ok("image", "rm", ref)
    assert ref not in user.ok("image", "ls")
    assert not os.listdir(os.path.join(user.capsule_home, "images", "layers"))
    # An owner beyond the ids a user's sandbox maps: refused in one line, nothing stored.
    far = layer_tar([Entry("far", data=b"x", uid=70000, gid=70000)])
    ref = registry.push(make_layout(workdir, [busybox_layer(), far]), f"test/rl-{uuid.uuid4().hex[:8]}")
    r = user.capsule("image", "pull", ref)
    if ranged:
        assert r.returncode != 0 and "beyond the 65536 ids" in r.stderr, r.stderr
        # Progress lines ("downloaded ...") come before it; the error is one line.
        assert len([line for line in r.stderr.splitlines() if line.startswith("capsule")]) == 1, r.stderr
    else:
        assert r.returncode == 0, r.stderr


def test_hot_mount_and_unmount_of_a_users_folder(user):
    name = f"h-{uuid.uuid4().hex[:6]}"
    hot = os.path.join(user.home, "hot")
    user.sh("mkdir", "-p", hot)
    user.ok("create", "--name", name)
    user.ok("mount", name, hot, "/hot")
    user.ok("mount", "--ro", name, hot, "/hot-ro")
    user.ok("exec", name, "--", "sh", "-c", "echo x > /hot/y")
    st = os.stat(os.path.join(hot, "y"))
    assert (st.st_uid, st.st_gid) == (user.uid, user.gid)
    r = user.capsule("exec", name, "--", "touch", "/hot-ro/z")
    assert r.returncode != 0 and "Read-only file system" in r.stderr
    user.ok("unmount", name, "/hot")
    assert user.ok("exec", name, "--", "sh", "-c", "ls -A /hot | wc -l").strip() == "0"
    user.ok("rm", "-f", name)


def test_a_host_mount_made_after_a_hot_mount_does_not_appear_inside(user):
    """The clone is private: a shared host folder's later mounts stay on the host."""
    name = f"p-{uuid.uuid4().hex[:6]}"
    hot = os.path.join(user.home, "shared")
    user.sh("mkdir", "-p", hot)
    subprocess.run(["mount", "--bind", hot, hot], check=True)
    try:
        subprocess.run(["mount", "--make-shared", hot], check=True)
        user.ok("create", "--name", name)
        user.ok("mount", name, hot, "/hot")
        sub = os.path.join(hot, "later")
        os.mkdir(sub)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "later", sub], check=True)
        try:
            with open(os.path.join(sub, "on-the-host"), "w") as f:
                f.write("x")
            out = user.ok("exec", name, "--", "sh", "-c", "ls -A /hot/later; grep -c ' /hot/later ' /proc/mounts || true")
            assert out.split() == ["0"], out
        finally:
            subprocess.run(["umount", sub], check=True)
        user.ok("rm", "-f", name)
    finally:
        subprocess.run(["umount", "-l", hot], check=True)


def test_control_socket_is_under_xdg_runtime_dir_and_gone_after_rm(user):
    name = f"k-{uuid.uuid4().hex[:6]}"
    user.ok("create", "--name", name)
    link = os.path.join(user.capsule_home, "run", name, "control.sock")
    target = os.readlink(link)
    assert os.path.dirname(target) == os.path.join(user.runtime, "capsule")
    st = os.stat(os.path.dirname(target))
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (user.uid, 0o700)
    assert stat.S_ISSOCK(os.stat(target).st_mode)
    assert user.ok("exec", name, "--", "echo", "via-runtime") == "via-runtime\n"
    user.ok("rm", "-f", name)
    assert not os.path.exists(target)


def test_a_killed_shims_runtime_socket_is_swept(user):
    name = f"k-{uuid.uuid4().hex[:6]}"
    user.ok("run", "-d", "--name", name, "--", "sleep", "600")
    target = os.readlink(os.path.join(user.capsule_home, "run", name, "control.sock"))
    shim = json.loads(user.ok("inspect", name))["shim_pid"]
    os.kill(shim, 9)
    for _ in range(100):
        if not os.path.exists(f"/proc/{shim}"):
            break
        time.sleep(0.05)
    assert {s["name"]: s for s in json.loads(user.ok("ps", "-a", "--json"))}[name]["state"] == "stopped"
    assert not os.path.exists(target)
    user.ok("rm", "-f", name)


def test_a_runtime_dir_others_may_enter_is_not_used(user):
    os.chmod(user.runtime, 0o755)
    try:
        name = f"k-{uuid.uuid4().hex[:6]}"
        user.ok("create", "--name", name)
        sock = os.path.join(user.capsule_home, "run", name, "control.sock")
        assert stat.S_ISSOCK(os.lstat(sock).st_mode)
        assert user.ok("exec", name, "--", "echo", "in-run-dir") == "in-run-dir\n"
        user.ok("rm", "-f", name)
    finally:
        os.chmod(user.runtime, 0o700)


def test_a_user_without_ranges_gets_a_single_id_map_and_doctor_says_what_it_loses(single_user):
    u = single_user
    out = u.ok("run", "--", "sh", "-c", "id -u; cat /proc/self/uid_map /proc/self/gid_map /proc/self/setgroups")
    assert [line.split() for line in out.splitlines()] == [["0"], ["0", str(u.uid), "1"], ["0", str(u.gid), "1"],
                                                           ["deny"]], out
    r = u.capsule("run", "--", "chown", "1000", "/tmp")
    assert r.returncode != 0
    doc = json.loads(u.ok("doctor", "--json"))
    assert doc["rootless_id_map"] == "single" and "only the sandbox's root exists" in doc["rootless_id_map_note"]
    name = f"n-{uuid.uuid4().hex[:6]}"
    shared = os.path.join(u.home, "shared")
    u.sh("mkdir", "-p", shared)
    u.ok("create", "--name", name, "-v", f"{shared}:/mnt")
    info = json.loads(u.ok("inspect", name))
    assert info["rootless"]["id_map"] == "single" and info["pids_limit_by"] == "rlimit_nproc"
    u.ok("exec", name, "--", "sh", "-c", "echo x > /mnt/f; mkdir -p /root/d; echo y > /root/d/g")
    st = os.stat(os.path.join(shared, "f"))
    assert (st.st_uid, st.st_gid) == (u.uid, u.gid)
    u.ok("rm", "-f", name)
    assert not os.path.exists(os.path.join(u.capsule_home, "run", name))


SDK_SCRIPT = """
import asyncio, os, sys
from capsule import SyncSandbox, Mount
shared = sys.argv[1]
with SyncSandbox(mounts=[Mount(shared, "/mnt")]) as sb:
    sb.fs.write("/mnt/from-sdk", "sdk")
    r = sb.execute("id -u; cat /mnt/from-sdk")
    print(r.stdout.split(), r.exit_code)
"""


def test_python_sdk_as_the_user(user):
    # The package, and the library it loads ($CAPSULE_LIB), where the user can read them.
    pkg = tempfile.mkdtemp(prefix="capsule-rootless-sdk-", dir="/var/tmp")
    try:
        os.chmod(pkg, 0o755)
        shutil.copytree(os.path.join(ROOT, "bindings", "python", "capsule"), os.path.join(pkg, "capsule"))
        for dirpath, dirnames, filenames in os.walk(pkg):
            for d in dirnames:
                os.chmod(os.path.join(dirpath, d), 0o755)
            for f in filenames:
                os.chmod(os.path.join(dirpath, f), 0o644)
        shared = os.path.join(user.home, "sdk-shared")
        user.sh("mkdir", "-p", shared)
        env = [f"PYTHONPATH={pkg}", f"CAPSULE_LIB={os.path.join(user.bindir, 'libcapsule.so.0')}"]
        # A sanitized library needs its runtime loaded first, and python's own allocations are
        # not ours to leak-check (as make check-e2e runs tests/python).
        ldd = subprocess.run(["ldd", os.path.join(BUILD, "libcapsule.so")], capture_output=True, text=True).stdout
        asan = next((line.split()[2] for line in ldd.splitlines() if "libasan" in line), None)
        if asan:
            env += [f"LD_PRELOAD={asan}", f"ASAN_OPTIONS={user.env.get('ASAN_OPTIONS', '')}:detect_leaks=0"]
        r = user.sh("env", *env, "/usr/bin/python3", "-c", SDK_SCRIPT, shared, timeout=120)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "['0', 'sdk'] 0", r.stdout
        st = os.stat(os.path.join(shared, "from-sdk"))
        assert st.st_uid == user.uid
    finally:
        shutil.rmtree(pkg, ignore_errors=True)


def test_a_warm_pool_as_the_user(user):
    pool = f"pl{uuid.uuid4().hex[:6]}"
    user.ok("pool", "create", pool, "--size", "1")
    try:
        assert user.ok("run", "--pool", pool, "--", "sh", "-c",
                       "mkdir /home/q && chown 1000 /home/q && id -u") == "0\n"
    finally:
        user.ok("pool", "rm", pool)
    assert not [e for e in settled_run_entries(os.path.join(user.capsule_home, "run")) if pool in e]


FETCH = """
import sys, urllib.request
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())
except OSError as e:
    print("ERR", getattr(getattr(e, "reason", e), "errno", e))
"""


def test_an_allowlist_lets_the_listed_host_port_through_and_refuses_others(user):
    import http.server
    import threading

    Token = answering(lambda handler: f"token-{handler.server.server_port}")

    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), Token) for _ in range(2)]
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    ok, other = (s.server_port for s in servers)
    name = f"a-{uuid.uuid4().hex[:6]}"
    try:
        user.ok("create", "--name", name, "--network", "full", "--allow-host", f"localhost:{ok}")
        assert user.ok("exec", name, "--", "python3", "-c", FETCH, f"http://10.0.2.2:{ok}/") == f"token-{ok}\n"
        assert user.ok("exec", name, "--", "python3", "-c", FETCH, f"http://10.0.2.2:{other}/") == "ERR 111\n"
    finally:
        user.capsule("rm", "-f", name)
        for s in servers:
            s.shutdown()
            s.server_close()


def _proc_status(pid):
    with open(f"/proc/{pid}/status") as f:
        return dict(line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line)


def _vm_with_a_share(user, prefix):
    """A running vm of the user's with a new folder of the user's bound at /mnt."""
    need_static_agent(BUILD)
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    shared = os.path.join(user.home, f"vmshare-{name}")
    assert user.sh("mkdir", shared).returncode == 0
    user.ok("create", "--isolation", "vm", "--name", name, "-v", f"{shared}:/mnt")
    return name, shared


@pytest.mark.vm_in_check
def test_a_vm_as_the_user_boots_runs_and_serves_the_fs_api(user):
    # The one boot of this module in make check: the root disk built as root of a user
    # namespace of the user's ids, QEMU run as the user, KVM or TCG with the reason.
    name, shared = _vm_with_a_share(user, "v")
    vm = json.loads(user.ok("inspect", name))["vm"]
    assert int(_proc_status(vm["qemu_pid"])["Uid"].split()[0]) == user.uid
    assert vm["qemu_bounded_by"] == ("cgroup" if _user_has_cgroups(user) else "none")
    if os.path.exists("/dev/kvm") and not _user_may_open_kvm(user):
        assert vm["accel"] == "tcg" and "its group" in vm["accel_fallback"], vm
    assert user.ok("exec", name, "--", "uname", "-r").strip() == vm["kernel_version"]
    user.ok("fs", name, "write", "/root/note", input="from the host\n")
    assert user.ok("exec", name, "--", "sh", "-c", "cat /root/note; stat -c %u:%g /root/note /etc/passwd") == \
        "from the host\n0:0\n0:0\n"
    assert user.ok("fs", name, "cat", "/root/note") == "from the host\n"
    # The bind is served by QEMU as root of a user namespace of the user's ids: the guest's
    # root writes as the user, its other ids as the user's subordinate ids, as in a container.
    user.ok("exec", name, "--", "sh", "-c", "echo g > /mnt/g && mkdir /mnt/al && chown 1000:1000 /mnt/al")
    assert os.stat(os.path.join(shared, "g")).st_uid == user.uid
    sub_uid = _subids("/etc/subuid", user.name, user.uid)
    if sub_uid:
        assert os.stat(os.path.join(shared, "al")).st_uid == sub_uid[0] + 999
    # What the build and the boot made is the user's.
    vm_dir = os.path.join(user.capsule_home, "vm")
    for f in os.listdir(vm_dir):
        assert os.lstat(os.path.join(vm_dir, f)).st_uid == user.uid, f
    assert os.stat(vm["disk"]).st_uid == user.uid
    user.ok("rm", "-f", name)
    assert not os.path.exists(os.path.join(user.capsule_home, "run", name))


@pytest.mark.vm_slow
def test_a_vm_from_a_pulled_image_keeps_its_other_owners(user, registry, workdir):
    # The layers' files of other ids are the user's subordinate ids on the host, 0600: the
    # disk build reads them as root of a namespace of those ids, and the guest sees the
    # image's owners.
    need_static_agent(BUILD)
    layer = layer_tar([Entry("home/app/f", data=b"app's", uid=1000, gid=1000, mode=0o600)])
    ref = registry.push(make_layout(workdir, [busybox_layer(), layer]), f"test/rlvm-{uuid.uuid4().hex[:8]}")
    user.ok("image", "pull", ref)
    ranged = _subids("/etc/subuid", user.name, user.uid) is not None
    out = user.ok("run", "--isolation", "vm", "--image", ref, "--", "sh", "-c",
                  "cat /home/app/f; echo; stat -c '%u:%g %a' /home/app/f")
    assert out == f"app's\n{'1000:1000' if ranged else '0:0'} 600\n", out
    user.ok("image", "rm", ref)


@pytest.mark.vm_slow
def test_a_running_vms_save_fork_and_checkpoint_as_the_user(user):
    # No freezer needed: the vm level pauses its vCPUs over QMP.
    need_static_agent(BUILD)
    name = f"vs-{uuid.uuid4().hex[:6]}"
    save = f"s-{uuid.uuid4().hex[:6]}"
    user.ok("create", "--isolation", "vm", "--name", name)
    user.ok("exec", name, "--", "sh", "-c", OTHER_IDS)
    user.ok("checkpoint", name, "c1")
    user.ok("exec", name, "--", "rm", "-rf", "/root/m", "/home/al")
    user.ok("revert", name, "c1")
    assert user.ok("exec", name, "--", "sh", "-c", SHOW_OTHER_IDS) == OTHER_IDS_SHOWN
    user.ok("save", name, save)
    assert user.ok("run", "--isolation", "vm", "--image", save, "--", "sh", "-c", SHOW_OTHER_IDS) == OTHER_IDS_SHOWN
    user.ok("rm", "-f", name)
    user.ok("saves", "rm", save)


@pytest.mark.vm_slow
def test_a_vm_as_a_user_without_ranges(single_user):
    # The disk build's namespace is then the single id, made by the build itself; QEMU's, for
    # the share, too: the guest's root writes as the user, and chown fails as in a container.
    need_static_agent(BUILD)
    shared = os.path.join(single_user.home, "vmshare")
    assert single_user.sh("mkdir", shared).returncode == 0
    out = single_user.ok("run", "--isolation", "vm", "-v", f"{shared}:/mnt", "--", "sh", "-c",
                         "id -u; stat -c %u:%g /etc/passwd; echo a > /mnt/a; chown 1000 /mnt/a || echo refused")
    assert out == "0\n0:0\nrefused\n", out
    assert os.stat(os.path.join(shared, "a")).st_uid == single_user.uid


@pytest.mark.vm_slow
def test_a_users_vm_gets_a_disk_size_volumes_and_read_only_binds_keeps_them_across_revert_refuses_hot_mounts(user):
    need_static_agent(BUILD)
    name = f"vb-{uuid.uuid4().hex[:6]}"
    vol = f"vol-{name}"
    ro = os.path.join(user.home, f"ro-{name}")
    assert user.sh("sh", "-c", f"mkdir {ro} && echo host > {ro}/f").returncode == 0
    user.ok("volume", "create", vol)
    # A vm's disk size is its qcow2's: a file of the user's, no loop device.
    user.ok("create", "--isolation", "vm", "--name", name, "-v", f"{vol}:/data", "-v", f"{ro}:/ro:ro",
            "--disk-size", "3G")
    size = int(user.ok("exec", name, "--", "sh", "-c", "df -k / | tail -1").split()[1])
    assert 2_800_000 < size <= 3 * 1024 * 1024, size
    user.ok("exec", name, "--", "sh", "-c", "echo kept > /data/k")
    r = user.capsule("exec", name, "--", "touch", "/ro/n")
    assert r.returncode != 0 and "Read-only" in r.stderr, r.stderr
    user.ok("checkpoint", name, "c0")
    user.ok("revert", name, "c0")  # QEMU starts again, with the same share
    assert user.ok("exec", name, "--", "cat", "/data/k", "/ro/f") == "kept\nhost\n"
    r = user.capsule("mount", name, ro, "/later")
    assert r.returncode != 0 and "needs capsule to run as root" in r.stderr and len(r.stderr.splitlines()) == 1, \
        r.stderr
    user.ok("rm", "-f", name)
    assert user.ok("volume", "read", vol, "k") == "kept\n"
    user.ok("volume", "rm", vol)


@pytest.mark.vm_slow
def test_a_users_vm_serves_a_forwarded_port(user):
    need_static_agent(BUILD)
    name = f"vw-{uuid.uuid4().hex[:6]}"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    user.ok("run", "-d", "--isolation", "vm", "--network", "full", "--name", name, "-p", f"{port}:8000", "--",
            "sh", "-c", f"echo {name} > /root/page && exec python3 -m http.server 8000 -d /root")
    try:
        assert _get_page(port, 300, 0.2) == name  # TCG: python starts in seconds
    finally:
        user.ok("rm", "-f", name)


@pytest.mark.vm_slow
def test_a_users_vm_knows_allowlisted_names_from_a_read_only_etc_hosts(user):
    # The hosts file reaches the guest through the share, as for root.
    need_static_agent(BUILD)
    host = socket.gethostname()
    try:
        socket.gethostbyname(host)
    except OSError:
        pytest.skip(f"the host's own name '{host}' does not resolve here")
    out = user.ok("run", "--isolation", "vm", "--network", "full", "--allow-host", f"{host}:443", "--", "sh", "-c",
                  f"grep -cw {host} /etc/hosts; echo 192.0.2.1 evil >> /etc/hosts || echo refused")
    assert out.split()[0] != "0" and out.endswith("refused\n"), out


@pytest.mark.vm_slow
def test_a_users_qemu_serving_a_share_is_cut_and_filtered_and_plants_no_setid_file(user):
    # QEMU runs as root of its own user namespace here: the bounding set is cut and both
    # seccomp filters are stacked as for root (docs/security.md, "vm mounts").
    name, shared = _vm_with_a_share(user, "vq")
    pid = json.loads(user.ok("inspect", name))["vm"]["qemu_pid"]
    fields = _proc_status(pid)
    assert int(fields["Uid"].split()[0]) == user.uid
    for field in ("CapBnd", "CapPrm", "CapEff", "CapInh", "CapAmb"):
        caps = int(fields[field].strip(), 16)
        for cap in (4, 27, 21, 31):  # CAP_FSETID, CAP_MKNOD, CAP_SYS_ADMIN, CAP_SETFCAP
            assert not caps & (1 << cap), (field, cap)
    assert fields["NoNewPrivs"].strip() == "1" and int(fields["Seccomp_filters"].strip()) >= 2
    assert os.readlink(f"/proc/{pid}/ns/user") != os.readlink("/proc/self/ns/user")
    r = user.capsule("exec", name, "--", "sh", "-c",
                     "cd /mnt; cp /bin/true suid; chmod 4755 suid; mknod null c 1 3; echo mknod=$?")
    assert "mknod=1" in r.stdout and "Operation not permitted" in r.stderr, r.stdout + r.stderr
    assert os.stat(os.path.join(shared, "suid")).st_mode & 0o7000 == 0
    assert not os.path.exists(os.path.join(shared, "null"))
    user.ok("rm", "-f", name)
