"""Resource exhaustion from inside a sandbox: processes, memory, output, slow readers, fds.

The sandbox may hurt itself; the host, other sandboxes, the shim and the agent must not
notice beyond bounded costs, and the sandbox must answer again afterwards.
"""
import fcntl
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from secutil import assert_alive, cgroup_dirs, py, settled_run_entries, vmrss_kib

MiB = 1 << 20


def _cgroup_file(name, controller, fname):
    for d in cgroup_dirs(name):
        if f"/{controller}/" in d or d.startswith("/sys/fs/cgroup/capsule/"):
            p = os.path.join(d, fname)
            if os.path.exists(p):
                return p
    return None


# ---- processes -----------------------------------------------------------------------------

FORKER = r"""
import errno, json, os, signal, sys, time
limit = int(sys.argv[1])
kids, failed, first_err = [], 0, None
for _ in range(limit):
    try:
        pid = os.fork()
    except OSError as e:
        failed += 1
        first_err = first_err or errno.errorcode.get(e.errno)
        if failed >= 20:
            break
        continue
    if pid == 0:
        # every child tries to fork too, as a bomb would, then idles
        try:
            if os.fork() == 0:
                time.sleep(30); os._exit(0)
        except OSError:
            pass
        time.sleep(30)
        os._exit(0)
    kids.append(pid)
print(json.dumps({"forked": len(kids), "failed": failed, "error": first_err}), flush=True)
time.sleep(float(sys.argv[2]))
for k in kids:
    try: os.kill(k, signal.SIGKILL)
    except OSError: pass
for k in kids:
    try: os.waitpid(k, 0)
    except OSError: pass
"""


def test_fork_bomb_is_held_by_pids_limit(capsule):
    name = capsule.create("--pids-limit", "32")
    p = _cgroup_file(name, "pids", "pids.max")
    assert p, f"no pids cgroup for {name}: {cgroup_dirs(name)}"
    assert open(p).read().strip() == "32"
    bomb = capsule.popen("exec", name, "python3", "-c", FORKER, "500", "3",
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = bomb.stdout.readline()
        res = json.loads(line)
        print("fork bomb:", res)
        assert res["forked"] < 32 and res["failed"] > 0 and res["error"] == "EAGAIN", res
        # While every pid is taken the agent cannot fork a new command: it must say so, or
        # at worst refuse, but never hang or die.
        t0 = time.monotonic()
        r = capsule.run("exec", name, "echo", "during", timeout=30)
        assert time.monotonic() - t0 < 20
        assert r.returncode == 0 or r.stderr.strip(), r
        cur = int(open(p.replace("pids.max", "pids.current")).read())
        assert cur <= 32, cur
    finally:
        bomb.wait(timeout=60)
    # Children of the bomb were orphaned onto the agent; give it a moment to reap them.
    deadline = time.monotonic() + 40
    while True:
        r = capsule.run("exec", name, "echo", "ok", timeout=30)
        if r.returncode == 0 and r.stdout.strip() == "ok":
            break
        assert time.monotonic() < deadline, f"sandbox did not recover from the fork bomb: {r.stderr}"
        time.sleep(0.5)
    assert_alive(capsule, name)


# ---- memory --------------------------------------------------------------------------------

MEMBOMB = r"""
import sys
chunks = []
for i in range(2048):
    b = bytearray(1 << 20)
    for j in range(0, len(b), 4096):
        b[j] = 1
    chunks.append(b)
print("survived", len(chunks))
"""


def test_memory_bomb_is_killed_and_others_keep_working(capsule):
    bombed = capsule.create("-m", "64M")
    other = capsule.create()
    lim = _cgroup_file(bombed, "memory", "memory.limit_in_bytes") or _cgroup_file(bombed, "memory", "memory.max")
    assert lim, f"no memory cgroup for {bombed}"
    assert int(open(lim).read().strip()) == 64 * MiB

    # A host process doing real work at the same time.
    host = subprocess.Popen([sys.executable, "-c",
                             "import hashlib,time\n"
                             "b=bytearray(64<<20)\n"
                             "t=time.time()\n"
                             "while time.time()-t<3: hashlib.sha256(b[:1<<20]).digest()\n"
                             "print('host ok', len(b))"],
                            stdout=subprocess.PIPE, text=True)
    bomb = capsule.popen("exec", bombed, "python3", "-c", MEMBOMB, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        # The other sandbox answers while the bomb goes off.
        for _ in range(5):
            assert_alive(capsule, other)
            time.sleep(0.2)
        out, err = bomb.communicate(timeout=120)
    finally:
        if bomb.poll() is None:
            bomb.kill()
            bomb.wait()
    assert "survived" not in out, "a 2 GiB allocation completed inside a 64M sandbox"
    assert bomb.returncode != 0, (bomb.returncode, out, err)
    hout, _ = host.communicate(timeout=60)
    assert host.returncode == 0 and "host ok" in hout
    assert_alive(capsule, bombed)
    assert_alive(capsule, other)
    r = capsule.run("exec", other, "python3", "-c", "b = bytearray(200 << 20); print(len(b))")
    assert r.returncode == 0 and r.stdout.strip() == str(200 << 20), r
    assert capsule.inspect(bombed)["state"] == "running"


# ---- output --------------------------------------------------------------------------------


class RssSampler(threading.Thread):
    def __init__(self, pids):
        super().__init__(daemon=True)
        self.pids = pids
        self.peak = {p: 0 for p in pids}
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            for p in self.pids:
                v = vmrss_kib(p)
                if v:
                    self.peak[p] = max(self.peak[p], v)
            time.sleep(0.02)


def test_1gib_of_output_arrives_complete_with_bounded_rss(capsule, sandbox):
    info = capsule.inspect(sandbox)
    shim, agent = info["shim_pid"], info["init_pid"]
    p = capsule.popen("exec", sandbox, "head", "-c", "1G", "/dev/zero", stdout=subprocess.PIPE,
                      stderr=subprocess.PIPE, bufsize=0)
    sampler = RssSampler([shim, agent, p.pid])
    sampler.start()
    total = 0
    nonzero = False
    fd = p.stdout.fileno()
    try:
        fcntl.fcntl(fd, 1031, 1 << 20)  # F_SETPIPE_SZ: fewer, larger reads
    except OSError:
        pass
    try:
        deadline = time.monotonic() + 120
        while True:
            b = os.read(fd, 1 << 20)
            if not b:
                break
            total += len(b)
            if not nonzero and b.count(0) != len(b):
                nonzero = True
            assert time.monotonic() < deadline, f"1 GiB did not arrive in time ({total} bytes so far)"
        rc = p.wait(timeout=30)
    finally:
        sampler.stop.set()
        sampler.join()
        if p.poll() is None:
            p.kill()
            p.wait()
    print(f"peaks(KiB) {sampler.peak}")
    assert rc == 0, p.stderr.read()
    assert total == 1 << 30, f"got {total} bytes of 1 GiB"
    assert not nonzero, "output was corrupted"
    for pid, what in ((shim, "shim"), (agent, "agent"), (p.pid, "client")):
        assert 0 < sampler.peak[pid] < 64 * 1024, f"{what} RSS peaked at {sampler.peak[pid] // 1024} MiB"
    assert_alive(capsule, sandbox)


WRITER = r"""
import os, sys
fd = os.open("/tmp/produced", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
chunk = b"z" * 65536
total = 0
while True:
    n = os.write(1, chunk)
    total += n
    os.pwrite(fd, b"%020d" % total, 0)
"""


def test_slow_reader_throttles_the_command(capsule, sandbox):
    info = capsule.inspect(sandbox)
    shim, agent = info["shim_pid"], info["init_pid"]
    p = capsule.popen("exec", sandbox, "python3", "-c", WRITER, stdout=subprocess.PIPE,
                      stderr=subprocess.PIPE, bufsize=0)
    sampler = RssSampler([shim, agent, p.pid])
    sampler.start()
    got = 0
    try:
        t_end = time.monotonic() + 2.0
        while time.monotonic() < t_end:
            b = p.stdout.read(65536)
            assert b, "output ended early"
            got += len(b)
            time.sleep(0.05)
        time.sleep(0.5)  # let anything that could run ahead do so
        r = capsule.run("exec", sandbox, "cat", "/tmp/produced")
        produced = int(r.stdout.strip() or 0)
    finally:
        sampler.stop.set()
        sampler.join()
        p.kill()
        p.wait()
    print(f"read {got} produced {produced} peaks(KiB) {sampler.peak}")
    assert got > 0 and produced >= got, (got, produced)
    ahead = produced - got
    assert ahead < 8 * MiB, f"the command ran {ahead / MiB:.1f} MiB ahead of a reader that took {got / MiB:.1f} MiB"
    for pid, what in ((shim, "shim"), (agent, "agent"), (p.pid, "client")):
        assert 0 < sampler.peak[pid] < 64 * 1024, f"{what} RSS peaked at {sampler.peak[pid] // 1024} MiB"
    # Killing the client ends the command.
    deadline = time.monotonic() + 10
    while True:
        r = capsule.run("exec", sandbox, "sh", "-c", "pgrep -f [p]roduced || true")
        if not r.stdout.strip():
            break
        assert time.monotonic() < deadline, "the writer outlived its client"
        time.sleep(0.2)
    assert_alive(capsule, sandbox)


# ---- fds -----------------------------------------------------------------------------------

FD_HOG = r"""
import errno, json, os, resource
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
raise_err = None
try:
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard * 4, hard * 4))
except ValueError:
    raise_err = "EPERM"  # how Python reports setrlimit's EPERM
except OSError as e:
    raise_err = errno.errorcode.get(e.errno)
try:
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
except (OSError, ValueError):
    pass
fds, err = [], None
while len(fds) < 2000000:
    try:
        fds.append(os.open("/dev/null", os.O_RDONLY))
    except OSError as e:
        err = errno.errorcode.get(e.errno); break
print(json.dumps({"opened": len(fds), "error": err, "hard": hard, "raise": raise_err}))
"""


def test_fd_exhaustion_leaves_sandbox_answering(capsule, sandbox):
    r = py(capsule, sandbox, FD_HOG, timeout=120)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["error"] == "EMFILE", res
    assert res["raise"] == "EPERM", f"RLIMIT_NOFILE could be raised past its hard limit: {res}"
    assert res["opened"] < 1 << 20, res
    # Several hogs at once, still running while we exec.
    hogs = [capsule.popen("exec", sandbox, "python3", "-c",
                          FD_HOG.replace('print(json.dumps', 'import time; time.sleep(3); print(json.dumps'),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(3)]
    try:
        time.sleep(1.0)
        assert_alive(capsule, sandbox)
    finally:
        for h in hogs:
            h.wait(timeout=60)
    assert_alive(capsule, sandbox)


# ---- cpu and tmpfs -------------------------------------------------------------------------

CPU_HOG = r"""
import os, time
kids = []
for _ in range(4):
    pid = os.fork()
    if pid == 0:
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            pass
        os._exit(0)
    kids.append(pid)
for k in kids:
    os.waitpid(k, 0)
t = os.times()
print(t.children_user + t.children_system)
"""


def test_cpu_hog_is_held_by_cpus_limit(capsule):
    name = capsule.create("--cpus", "0.5")
    r = capsule.run("exec", name, "python3", "-c", CPU_HOG, timeout=60)
    assert r.returncode == 0, r.stderr
    used = float(r.stdout.strip())
    print("cpu-seconds used:", used)
    # 4 busy processes for 2 s would take min(4, cores) * 2 s unthrottled; 0.5 cpu allows ~1 s.
    assert used < 1.6, f"a --cpus 0.5 sandbox used {used:.2f} cpu-seconds in 2 s"
    assert_alive(capsule, name)


def test_dev_shm_is_bounded(mod_capsule, shared_sandbox):
    code = r"""
import errno, os
n = 0
try:
    with open("/dev/shm/fill", "wb") as f:
        chunk = b"\0" * (1 << 20)
        while n < 512:
            f.write(chunk); f.flush(); n += 1
    print("wrote", n)
except OSError as e:
    print(errno.errorcode.get(e.errno), n)
finally:
    try: os.unlink("/dev/shm/fill")
    except OSError: pass
"""
    r = py(mod_capsule, shared_sandbox, code)
    assert r.returncode == 0, r.stderr
    what, n = r.stdout.split()
    assert what == "ENOSPC" and int(n) <= 64, f"/dev/shm took {n} MiB ({what})"
    assert_alive(mod_capsule, shared_sandbox)


DEEP = r"""
import os
os.chdir("/tmp")
for i in range(3000):
    os.mkdir("d")
    os.chdir("d")
open("f", "w").write("bottom")
print("ok")
"""


def test_folders_nested_deeper_than_any_limit_are_removed(capsule):
    """A sandbox decides how deep its folders go: 3000 levels (far past the 64 that removal
    descends before it lifts subtrees up) must not make `fs rm -r` or `capsule rm` fail and
    leave the sandbox's files behind."""
    name = capsule.create()
    r = py(capsule, name, DEEP, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
    r = capsule.run("fs", name, "rm", "-r", "/tmp/d", timeout=120)
    assert r.returncode == 0, r.stderr
    assert capsule.run("fs", name, "stat", "/tmp/d").returncode != 0
    r = py(capsule, name, DEEP, timeout=120)
    assert r.returncode == 0, r.stderr
    run_dir = os.path.join(capsule.home, "run", name)
    assert os.path.isdir(run_dir)
    r = capsule.run("rm", "-f", name, timeout=120)
    assert r.returncode == 0, r.stderr
    assert not os.path.exists(run_dir)
    # The folder, renamed .gone-NAME.PID as the name was freed, is deleted by PID after rm.
    left = [e for e in settled_run_entries(os.path.dirname(run_dir)) if e.startswith(f".gone-{name}.")]
    assert not left, f"the sandbox's files were left behind: {left}"
