"""What a sandbox can see and touch of the host: processes, network, files, /proc and /sys,
ids, capabilities, the agent, fds and device nodes."""
import errno
import fcntl
import json
import os
import socket
import subprocess
import threading
import uuid

import pytest

from secutil import HOST_UID_BASE, assert_alive, py, py_json, sh

# ---- processes ---------------------------------------------------------------------------


def test_host_processes_are_invisible(mod_capsule, shared_sandbox):
    marker = f"capsule-sec-marker-{uuid.uuid4().hex}"
    host = subprocess.Popen(["sh", "-c", f"exec -a {marker} sleep 60"])
    try:
        info = mod_capsule.inspect(shared_sandbox)
        code = r"""
import json, os
pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
cmds = {}
for p in pids:
    try:
        cmds[p] = open(f"/proc/{p}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        cmds[p] = None
print(json.dumps({"pids": pids, "cmds": cmds}))
"""
        res = py_json(mod_capsule, shared_sandbox, code)
        pids = res["pids"]
        assert 1 in pids, res
        assert len(pids) < 10, f"the sandbox sees {len(pids)} processes: {res}"
        for hp in (info["shim_pid"], host.pid, os.getpid()):
            assert hp not in pids or hp < 10, f"host pid {hp} visible inside: {res}"
        assert not any(c and marker in c for c in res["cmds"].values()), f"host process visible inside: {res}"
        r = sh(mod_capsule, shared_sandbox, "ps -eo args")
        assert r.returncode == 0, r.stderr
        assert marker not in r.stdout and "capsule-shim" not in r.stdout, r.stdout
    finally:
        host.kill()
        host.wait()


# ---- network -----------------------------------------------------------------------------


def test_only_loopback_interface_is_visible(mod_capsule, shared_sandbox):
    code = r"""
import json, os
dev = [l.split(":")[0].strip() for l in open("/proc/net/dev").read().splitlines()[2:]]
print(json.dumps({"sys": sorted(os.listdir("/sys/class/net")), "procnet": sorted(dev),
                  "if": sorted(n for _, n in __import__("socket").if_nameindex())}))
"""
    res = py_json(mod_capsule, shared_sandbox, code)
    assert res == {"sys": ["lo"], "procnet": ["lo"], "if": ["lo"]}, res
    r = sh(mod_capsule, shared_sandbox, "ip -o link")
    if r.returncode == 0:
        names = [ln.split(":")[1].strip() for ln in r.stdout.splitlines() if ln.strip()]
        assert names == ["lo"], r.stdout


def test_host_loopback_tcp_server_is_unreachable(mod_capsule, shared_sandbox):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.2)
    port = srv.getsockname()[1]
    accepted = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except (socket.timeout, OSError):
                continue
            accepted.append(c)
            try:
                c.sendall(b"HOST-SECRET\n")
            except OSError:
                pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        code = r"""
import errno, json, socket, sys
port = int(sys.argv[1])
out = {}
for host in ("127.0.0.1", "localhost"):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM); s.settimeout(3)
    try:
        s.connect((host, port)); out[host] = "connected:" + s.recv(64).decode(errors="replace")
    except OSError as e:
        out[host] = errno.errorcode.get(e.errno, str(e))
print(json.dumps(out))
"""
        r = py(mod_capsule, shared_sandbox, code, args=(str(port),))
        assert r.returncode == 0, r.stderr
        res = json.loads(r.stdout.strip().splitlines()[-1])
        assert not any(v.startswith("connected") for v in res.values()), f"host server reached: {res}"
        assert not accepted, "the host server accepted a connection from the sandbox"
    finally:
        stop.set()
        t.join(2)
        srv.close()
        for c in accepted:
            c.close()


def test_host_abstract_unix_socket_is_unreachable(mod_capsule, shared_sandbox):
    name = f"capsule-sec-{uuid.uuid4().hex}"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind("\0" + name)
    srv.listen(8)
    srv.settimeout(0.1)
    try:
        code = r"""
import errno, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.settimeout(3)
try:
    s.connect("\0" + sys.argv[1]); print("connected")
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e)))
"""
        r = py(mod_capsule, shared_sandbox, code, args=(name,))
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() != "connected", "the host's abstract socket was reached from inside"
        with pytest.raises(socket.timeout):
            srv.accept()
    finally:
        srv.close()


# ---- files -------------------------------------------------------------------------------


def test_host_usr_is_read_only(mod_capsule, shared_sandbox):
    code = r"""
import errno, json, os
out = {}
for p in ("/usr/capsule-sec-probe", "/usr/bin/capsule-sec-probe", "/bin/capsule-sec-probe", "/usr/lib/capsule-sec-probe"):
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o600); os.close(fd); out[p] = "created"
    except OSError as e:
        out[p] = errno.errorcode.get(e.errno)
try:
    os.chmod("/usr/bin/python3", 0o777); out["chmod"] = "changed"
except OSError as e:
    out["chmod"] = errno.errorcode.get(e.errno)
print(json.dumps(out))
"""
    res = py_json(mod_capsule, shared_sandbox, code)
    for p, e in res.items():
        assert e in ("EROFS", "EPERM", "EACCES"), f"{p}: {e} (expected EROFS) {res}"
    assert res["/usr/capsule-sec-probe"] == "EROFS", res
    for p in ("/usr/capsule-sec-probe", "/usr/bin/capsule-sec-probe", "/usr/lib/capsule-sec-probe"):
        assert not os.path.exists(p)


FRESH_ETC = {
    "alternatives", "bash.bashrc", "debian_version", "group", "hostname", "hosts", "inputrc",
    "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "mime.types", "nsswitch.conf",
    "os-release", "passwd", "profile", "resolv.conf", "shells", "mtab", "timezone",
    "environment", "login.defs", "ssl", "ca-certificates", "ca-certificates.conf",
}


def _host_listing(path):
    try:
        return set(os.listdir(path))
    except OSError:
        return set()


def test_host_secrets_and_homes_are_invisible(mod_capsule, shared_sandbox):
    code = r"""
import json, os
def ls(p):
    try: return sorted(os.listdir(p))
    except OSError as e: return "err:%d" % e.errno
def read(p):
    try: return open(p, "rb").read().decode(errors="replace")
    except OSError as e: return None
print(json.dumps({"etc": ls("/etc"), "root": ls("/root"), "home": ls("/home"),
                  "shadow": read("/etc/shadow"), "gshadow": read("/etc/gshadow"),
                  "passwd": read("/etc/passwd"), "group": read("/etc/group")}))
"""
    res = py_json(mod_capsule, shared_sandbox, code)
    extra = set(res["etc"]) - FRESH_ETC
    assert not extra, f"/etc inside has entries beyond the fresh files: {sorted(extra)}"
    for secret in ("shadow", "gshadow"):
        host = open(f"/etc/{secret}").read() if os.path.exists(f"/etc/{secret}") else None
        assert res[secret] is None or (res[secret] != host and "$" not in res[secret]), f"/etc/{secret} leaked"
    host_root = _host_listing("/root")
    host_home = _host_listing("/home")
    assert isinstance(res["root"], str) or not (set(res["root"]) & host_root), res["root"]
    assert isinstance(res["home"], str) or not (set(res["home"]) & host_home), res["home"]
    host_users = set()
    with open("/etc/passwd") as f:
        for ln in f:
            if ln.strip() and not ln.startswith("#"):
                host_users.add(ln.split(":")[0])
    inside_users = {ln.split(":")[0] for ln in res["passwd"].splitlines() if ln.strip()}
    leaked = (inside_users & host_users) - {"root", "nobody"}
    assert not leaked, f"host users in the sandbox's /etc/passwd: {sorted(leaked)}"


# ---- /proc and /sys ------------------------------------------------------------------------


MASKED = ("/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
          "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap")


def test_sensitive_proc_files_are_masked(mod_capsule, shared_sandbox):
    # What an unmasked /proc gives (an empty read of /proc/keys, EACCES on timer_list) would
    # pass a check of what can be read: each path the host has must instead be a mount of its
    # own inside, /dev/null (char 1:3) over a file and an empty folder over a folder.
    code = r"""
import json, os, stat, sys
mounts = {line.split()[4] for line in open("/proc/self/mountinfo")}
out = {}
for p in json.loads(sys.argv[1]):
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        out[p] = "absent"
        continue
    if stat.S_ISCHR(st.st_mode):
        kind = "char %d:%d" % (os.major(st.st_rdev), os.minor(st.st_rdev))
    elif stat.S_ISDIR(st.st_mode):
        kind = "dir with %d entries" % len(os.listdir(p))
    else:
        kind = "other"
    out[p] = [kind, p in mounts]
print(json.dumps(out))
"""
    r = py(mod_capsule, shared_sandbox, code, args=(json.dumps(MASKED),))
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    checked = 0
    for p in MASKED:
        if not os.path.exists(p):
            continue
        checked += 1
        want = "dir with 0 entries" if os.path.isdir(p) else "char 1:3"
        assert res[p] == [want, True], f"{p} inside: {res[p]}"
    assert checked, "none of the masked paths exists on this host: the test would prove nothing"


def test_proc_sys_and_sysrq_are_not_writable(mod_capsule, shared_sandbox):
    code = r"""
import errno, json
out = {}
for p, v in (("/proc/sys/kernel/hostname", b"pwned"), ("/proc/sys/vm/drop_caches", b"3"),
             ("/proc/sys/kernel/core_pattern", b"|/tmp/x"), ("/proc/sysrq-trigger", b"h"),
             ("/proc/sys/net/ipv4/ip_forward", b"1")):
    try:
        with open(p, "wb", buffering=0) as f:
            f.write(v)
        out[p] = "written"
    except OSError as e:
        out[p] = errno.errorcode.get(e.errno)
print(json.dumps(out))
"""
    res = py_json(mod_capsule, shared_sandbox, code)
    for p, e in res.items():
        assert e != "written", f"{p} was writable from inside: {res}"
    assert res["/proc/sys/kernel/hostname"] == "EROFS", res
    assert res["/proc/sysrq-trigger"] in ("EROFS", "ENOENT", "EACCES", "EPERM"), res


def test_sys_is_read_only(mod_capsule, shared_sandbox):
    code = r"""
import errno, json, os
out = {}
for p in ("/sys/capsule-sec-probe", "/sys/kernel/capsule-sec-probe"):
    try:
        os.mkdir(p); out[p] = "created"
    except OSError as e:
        out[p] = errno.errorcode.get(e.errno)
try:
    with open("/sys/kernel/mm/transparent_hugepage/enabled", "w") as f:
        f.write("never"); out["thp"] = "written"
except OSError as e:
    out["thp"] = errno.errorcode.get(e.errno)
print(json.dumps(out))
"""
    res = py_json(mod_capsule, shared_sandbox, code)
    assert res["/sys/capsule-sec-probe"] == "EROFS", res
    assert all(v not in ("created", "written") for v in res.values()), res


# ---- ids and privileges ------------------------------------------------------------------


def test_root_inside_is_an_unprivileged_uid_on_the_host(mod_capsule, shared_sandbox):
    r = mod_capsule.run("exec", shared_sandbox, "id", "-u")
    assert r.returncode == 0 and r.stdout.strip() == "0", r
    info = mod_capsule.inspect(shared_sandbox)
    pid = info["init_pid"]
    with open(f"/proc/{pid}/status") as f:
        status = {ln.split(":")[0]: ln.split(":")[1].split() for ln in f if ":" in ln}
    assert status["Uid"] == [str(HOST_UID_BASE)] * 4, status["Uid"]
    assert status["Gid"] == [str(HOST_UID_BASE)] * 4, status["Gid"]
    with open(f"/proc/{pid}/uid_map") as f:
        m = f.read().split()
    assert m[:2] == ["0", str(HOST_UID_BASE)] and int(m[2]) <= 65536, m


def test_every_sandbox_process_runs_unprivileged_on_the_host(mod_capsule, shared_sandbox):
    from secutil import pids_in_cgroup
    r = mod_capsule.run("exec", "-d", shared_sandbox, "sleep", "30")
    assert r.returncode == 0, r.stderr
    try:
        pids = pids_in_cgroup(shared_sandbox)
        assert len(pids) >= 2, pids
        for p in pids:
            try:
                with open(f"/proc/{p}/status") as f:
                    uid = [ln for ln in f if ln.startswith("Uid:")][0].split()[1:]
            except (OSError, IndexError):
                continue
            assert all(int(u) >= HOST_UID_BASE for u in uid), f"pid {p} of the sandbox runs as {uid} on the host"
    finally:
        sh(mod_capsule, shared_sandbox, "pkill -x sleep || true")


def test_files_created_by_sandbox_root_are_owned_by_the_mapped_uid(mod_capsule, shared_sandbox):
    r = sh(mod_capsule, shared_sandbox, "echo hi > /tmp/owned-probe && mkdir -p /tmp/owned-dir")
    assert r.returncode == 0, r.stderr
    upper = os.path.join(mod_capsule.home, "run", shared_sandbox, "fs", "upper", "tmp")
    st = os.stat(os.path.join(upper, "owned-probe"))
    assert (st.st_uid, st.st_gid) == (HOST_UID_BASE, HOST_UID_BASE), (st.st_uid, st.st_gid)
    st = os.stat(os.path.join(upper, "owned-dir"))
    assert st.st_uid == HOST_UID_BASE, st.st_uid


CAP_NET_ADMIN, CAP_SYS_MODULE, CAP_SYS_PTRACE, CAP_SYS_ADMIN = 12, 16, 19, 21
CAP_DAC_READ_SEARCH, CAP_SYS_RAWIO, CAP_SYS_BOOT, CAP_SYS_TIME, CAP_MKNOD = 2, 17, 22, 25, 27
CAP_BPF, CAP_PERFMON, CAP_SYSLOG = 39, 38, 34


def test_root_commands_get_the_minimal_capabilities(mod_capsule, shared_sandbox):
    r = mod_capsule.run("exec", shared_sandbox, "cat", "/proc/self/status")
    assert r.returncode == 0, r.stderr
    st = {ln.split(":")[0]: ln.split(":", 1)[1].strip() for ln in r.stdout.splitlines() if ":" in ln}
    eff, bnd, amb = (int(st[k], 16) for k in ("CapEff", "CapBnd", "CapAmb"))
    for cap in (CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_SYS_PTRACE, CAP_SYS_MODULE, CAP_DAC_READ_SEARCH,
                CAP_SYS_RAWIO, CAP_SYS_BOOT, CAP_SYS_TIME, CAP_MKNOD, CAP_BPF, CAP_PERFMON, CAP_SYSLOG):
        assert not eff & (1 << cap), f"CapEff {eff:#x} has capability {cap}"
        assert not bnd & (1 << cap), f"CapBnd {bnd:#x} has capability {cap}"
    assert amb == 0
    assert st["NoNewPrivs"] == "1", st["NoNewPrivs"]
    assert st["Seccomp"] == "2", st["Seccomp"]


def test_non_root_commands_get_no_capabilities(mod_capsule, shared_sandbox):
    r = mod_capsule.run("exec", "-u", "65534", shared_sandbox, "cat", "/proc/self/status")
    assert r.returncode == 0, r.stderr
    st = {ln.split(":")[0]: ln.split(":", 1)[1].strip() for ln in r.stdout.splitlines() if ":" in ln}
    assert int(st["CapEff"], 16) == 0 and int(st["CapPrm"], 16) == 0, st
    assert st["NoNewPrivs"] == "1" and st["Seccomp"] == "2", st


# ---- the agent -----------------------------------------------------------------------------


def test_agent_cannot_be_ptraced_or_read(mod_capsule, shared_sandbox):
    code = r"""
import ctypes, errno, json, os
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.restype = ctypes.c_long
out = {}
r = libc.ptrace(ctypes.c_long(16), ctypes.c_long(1), None, None)  # PTRACE_ATTACH
out["ptrace_attach"] = "attached" if r == 0 else errno.errorcode.get(ctypes.get_errno())
r = libc.ptrace(ctypes.c_long(0x4206), ctypes.c_long(1), None, None)  # PTRACE_SEIZE
out["ptrace_seize"] = "attached" if r == 0 else errno.errorcode.get(ctypes.get_errno())
for f in ("mem", "environ", "maps", "auxv", "cwd", "root"):
    p = "/proc/1/" + f
    try:
        if f in ("cwd", "root"):
            out[f] = os.listdir(p)
        else:
            with open(p, "rb") as fh:
                out[f] = len(fh.read(64))
    except OSError as e:
        out[f] = errno.errorcode.get(e.errno)
# The fd numbers may be listable (root inside owns /proc/1 of a non-dumpable agent), but
# none of the fds may be followed or reopened.
out["fd_reached"] = []
try:
    nums = os.listdir("/proc/1/fd")
except OSError:
    nums = [str(n) for n in range(64)]
for n in nums:
    p = "/proc/1/fd/" + n
    for how in ("readlink", "open"):
        try:
            if how == "readlink":
                os.readlink(p)
            else:
                os.close(os.open(p, os.O_RDONLY))
            out["fd_reached"].append(how + ":" + n)
        except OSError:
            pass
for mode in (os.O_WRONLY, os.O_RDWR, os.O_WRONLY | os.O_TRUNC):
    try:
        fd = os.open("/proc/1/exe", mode); os.close(fd); out["exe_%d" % mode] = "opened"
    except OSError as e:
        out["exe_%d" % mode] = errno.errorcode.get(e.errno)
print(json.dumps(out))
"""
    res = py_json(mod_capsule, shared_sandbox, code)
    assert res["ptrace_attach"] != "attached" and res["ptrace_seize"] != "attached", res
    for f in ("mem", "environ", "maps", "auxv", "cwd", "root"):
        assert isinstance(res[f], str), f"/proc/1/{f} readable from a root command: {res}"
    assert res["fd_reached"] == [], f"the agent's fds reached through /proc/1/fd: {res}"
    for k, v in res.items():
        if k.startswith("exe_"):
            assert v != "opened", f"/proc/1/exe opened for writing: {res}"


def test_agent_binary_is_a_sealed_memfd(mod_capsule, shared_sandbox):
    pid = mod_capsule.inspect(shared_sandbox)["init_pid"]
    # Even host root cannot open it for writing, and the seals forbid writes for good.
    with pytest.raises(OSError) as ei:
        fd = os.open(f"/proc/{pid}/exe", os.O_WRONLY)
        os.close(fd)
    assert ei.value.errno in (errno.ETXTBSY, errno.EPERM, errno.EACCES)
    fd = os.open(f"/proc/{pid}/exe", os.O_RDONLY)
    try:
        seals = fcntl.fcntl(fd, 1034)  # F_GET_SEALS
    finally:
        os.close(fd)
    F_SEAL_SEAL, F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_WRITE = 1, 2, 4, 8
    want = F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE
    assert seals & want == want, f"agent memfd seals {seals:#x}, want {want:#x}"


# ---- fds -----------------------------------------------------------------------------------


def test_commands_inherit_no_host_fds(mod_capsule, shared_sandbox):
    r = mod_capsule.run("exec", shared_sandbox, "ls", "-l", "/proc/self/fd")
    assert r.returncode == 0, r.stderr
    fds = {}
    for ln in r.stdout.splitlines():
        parts = ln.split()
        if "->" in parts:
            i = parts.index("->")
            fds[int(parts[i - 1])] = " ".join(parts[i + 1:])
    extra = {k: v for k, v in fds.items() if k > 2}
    # The only fd past stdio is the one ls opened to list /proc/self/fd.
    assert len(extra) <= 1 and all(v.startswith("/proc/") and v.endswith("/fd") for v in extra.values()), fds
    assert fds.get(0) == "/dev/null", fds


def test_proc_self_fd_cannot_reach_the_host(mod_capsule, shared_sandbox):
    code = r"""
import errno, json, os
out = {}
for n in range(3, 64):
    try:
        os.fstat(n); out[n] = "open:" + os.readlink("/proc/self/fd/%d" % n)
    except OSError:
        pass
    try:
        os.chdir("/proc/self/fd/%d" % n); out["cd%d" % n] = os.getcwd(); os.chdir("/")
    except OSError:
        pass
print(json.dumps(out))
"""
    res = py_json(mod_capsule, shared_sandbox, code)
    assert res == {}, f"extra fds or directories reachable: {res}"
    r = sh(mod_capsule, shared_sandbox, "for n in 3 4 5 6 7 8 9; do cd /proc/self/fd/$n 2>/dev/null && pwd && ls; done; cd /proc/1/cwd 2>/dev/null && ls; true")
    assert r.returncode == 0 and r.stdout.strip() == "", r.stdout


# ---- devices -------------------------------------------------------------------------------

ALLOWED_DEV = {"null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm", "mqueue",
               "fd", "stdin", "stdout", "stderr"}


def test_dev_has_only_the_minimal_nodes(mod_capsule, shared_sandbox):
    code = r"""
import json, os, stat
top = sorted(os.listdir("/dev"))
chars, blocks = [], []
for d, dirs, files in os.walk("/dev"):
    for f in files + dirs:
        p = os.path.join(d, f)
        st = os.lstat(p)
        if stat.S_ISCHR(st.st_mode): chars.append([p, os.major(st.st_rdev), os.minor(st.st_rdev)])
        if stat.S_ISBLK(st.st_mode): blocks.append(p)
print(json.dumps({"top": top, "chars": chars, "blocks": blocks}))
"""
    res = py_json(mod_capsule, shared_sandbox, code)
    extra = set(res["top"]) - ALLOWED_DEV
    assert not extra, f"unexpected entries in /dev: {sorted(extra)}"
    assert not res["blocks"], res["blocks"]
    allowed_chars = {(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 2)}
    for p, ma, mi in res["chars"]:
        if p.startswith("/dev/pts/"):
            assert p == "/dev/pts/ptmx" or ma >= 136, (p, ma, mi)
            continue
        assert (ma, mi) in allowed_chars, f"unexpected device {p} ({ma}:{mi})"


def test_mknod_fails(mod_capsule, shared_sandbox):
    code = r"""
import errno, json, os, stat
out = {}
for name, mode, dev in (("null", stat.S_IFCHR, (1, 3)), ("mem", stat.S_IFCHR, (1, 1)),
                        ("sda", stat.S_IFBLK, (8, 0))):
    p = "/tmp/mknod-" + name
    try:
        os.mknod(p, mode | 0o600, os.makedev(*dev)); out[name] = "created"; os.unlink(p)
    except OSError as e:
        out[name] = errno.errorcode.get(e.errno)
print(json.dumps(out))
"""
    res = py_json(mod_capsule, shared_sandbox, code)
    for k, v in res.items():
        assert v in ("EPERM", "EACCES"), f"mknod {k}: {v}"
    assert_alive(mod_capsule, shared_sandbox)


# ---- other sandboxes -----------------------------------------------------------------------

INOTIFY_HOG = r"""
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
n = 0
while n < 100000:
    if libc.inotify_init1(0) < 0:
        break
    n += 1
print("held", n, flush=True)
time.sleep(float(sys.argv[1]))
"""

INOTIFY_TRY = r"""
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
r = libc.inotify_init1(0)
print("ok" if r >= 0 else os.strerror(ctypes.get_errno()))
"""

MQ_HOG = r"""
import ctypes, os, sys, time
rt = ctypes.CDLL("librt.so.1", use_errno=True)
class Attr(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_long), ("maxmsg", ctypes.c_long), ("msgsize", ctypes.c_long),
                ("cur", ctypes.c_long), ("pad", ctypes.c_long * 4)]
n = 0
while n < 1000:
    a = Attr(0, 10, 8192, 0)
    if rt.mq_open(("/hog%d" % n).encode(), os.O_CREAT | os.O_RDWR, 0o600, ctypes.byref(a)) < 0:
        break
    n += 1
print("held", n, flush=True)
time.sleep(float(sys.argv[1]))
"""

MQ_TRY = r"""
import ctypes, os
rt = ctypes.CDLL("librt.so.1", use_errno=True)
class Attr(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_long), ("maxmsg", ctypes.c_long), ("msgsize", ctypes.c_long),
                ("cur", ctypes.c_long), ("pad", ctypes.c_long * 4)]
a = Attr(0, 10, 8192, 0)
r = rt.mq_open(b"/mine", os.O_CREAT | os.O_RDWR, 0o600, ctypes.byref(a))
print("ok" if r >= 0 else os.strerror(ctypes.get_errno()))
"""


@pytest.mark.parametrize("kind", ["inotify_instances", "posix_mqueue_bytes"])
def test_one_sandbox_cannot_exhaust_per_user_limits_of_another(capsule, kind):
    """The kernel accounts some resources per host uid (inotify instances, POSIX message
    queue bytes, ...). A sandbox that uses up its share must not leave another sandbox
    without any."""
    hog_code, try_code = {"inotify_instances": (INOTIFY_HOG, INOTIFY_TRY),
                          "posix_mqueue_bytes": (MQ_HOG, MQ_TRY)}[kind]
    a = capsule.create()
    b = capsule.create()
    hog = capsule.popen("exec", a, "python3", "-c", hog_code, "6", stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL, text=True)
    try:
        line = hog.stdout.readline()
        assert line.startswith("held"), line
        r = capsule.run("exec", b, "python3", "-c", try_code, timeout=30)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "ok", (
            f"sandbox {a} holding {line.split()[1]} {kind} left sandbox {b} with none: {r.stdout.strip()} "
            "(both map root to the same host uid)")
    finally:
        hog.kill()
        hog.wait()
        # Message queues outlive their creator until the IPC namespace goes: remove the
        # hog's sandbox now so that the host uid's share is given back at once.
        capsule.run("rm", "-f", a, timeout=60)


def test_sysv_ipc_of_the_host_is_invisible(mod_capsule, shared_sandbox):
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    key = 0x5EC00000 | (os.getpid() & 0xFFFF)
    shmid = libc.shmget(key, 4096, 0o600 | 0o1000)  # IPC_CREAT
    assert shmid >= 0
    try:
        code = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
r = libc.shmget(int(sys.argv[1]), 0, 0)
print("found" if r >= 0 else os.strerror(ctypes.get_errno()))
"""
        r = py(mod_capsule, shared_sandbox, code, args=(str(key),))
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() != "found", "a host SysV shm segment is visible inside"
    finally:
        libc.shmctl(shmid, 0, None)  # IPC_RMID


# ---- the agent and the sandbox's own files ---------------------------------------------------


@pytest.mark.parametrize("trap", ["passwd_fifo", "group_fifo", "passwd_dev_zero", "passwd_huge", "passwd_dir"])
def test_hostile_etc_files_do_not_wedge_the_agent(capsule, sandbox, trap):
    """The agent (PID 1, one thread) reads the sandbox's /etc/passwd and /etc/group itself for
    every exec. Sandbox root controls those files; whatever it puts there, the agent must
    answer (an error is fine) and not block."""
    setup = {
        "passwd_fifo": "rm -f /etc/passwd && mkfifo /etc/passwd",
        "group_fifo": "rm -f /etc/group && mkfifo /etc/group",
        "passwd_dev_zero": "rm -f /etc/passwd && ln -s /dev/zero /etc/passwd",
        "passwd_huge": "head -c 3000000 /dev/zero | tr '\\0' a > /etc/passwd && echo 'root:x:0:0::/root:/bin/sh' >> /etc/passwd",
        "passwd_dir": "rm -f /etc/passwd && mkdir /etc/passwd",
    }[trap]
    r = capsule.run("exec", sandbox, "/bin/sh", "-c", setup, timeout=30)
    assert r.returncode == 0, r.stderr
    try:
        r = capsule.run("exec", sandbox, "/bin/echo", "ok", timeout=5)
    except subprocess.TimeoutExpired:
        pytest.fail(f"with /etc trapped ({trap}) the agent no longer answers: exec hung")
    try:
        r = capsule.run("exec", "-u", "0", sandbox, "/bin/echo", "ok", timeout=5)
    except subprocess.TimeoutExpired:
        pytest.fail(f"with /etc trapped ({trap}) the agent no longer answers: exec -u 0 hung")
    assert r.returncode == 0 and r.stdout.strip() == "ok", r


def test_host_side_cleanup_never_follows_sandbox_symlinks(capsule, tmp_path):
    """Sandbox root can plant symlinks (and files named like anything) in its upper layer,
    which the host removes on rm. The removal must delete the links, never what they point
    to."""
    canary_dir = tmp_path / "canary"
    canary_dir.mkdir()
    (canary_dir / "keep").write_text("precious")
    canary_file = tmp_path / "canary-file"
    canary_file.write_text("precious")
    name = capsule.create()
    script = (f"ln -s {canary_dir} /tmp/dirlink && ln -s {canary_file} /tmp/filelink && "
              f"mkdir -p /tmp/deep/a && ln -s {canary_dir} /tmp/deep/a/b && ln -s {tmp_path} /root/up && "
              f"ln -s / /tmp/rootlink")
    r = capsule.run("exec", name, "sh", "-c", script)
    assert r.returncode == 0, r.stderr
    r = capsule.run("stop", name, timeout=60)
    assert r.returncode == 0, r.stderr
    r = capsule.run("rm", name, timeout=60)
    assert r.returncode == 0, r.stderr
    assert (canary_dir / "keep").read_text() == "precious"
    assert canary_file.read_text() == "precious"
    assert not os.path.exists(os.path.join(capsule.home, "run", name))


def test_the_shared_host_skeleton_is_copied_on_write_per_sandbox(capsule):
    # Root's sandboxes share one host-image skeleton (images/host-v1-0), cloned and idmapped per
    # sandbox: what one sandbox changes lands in its own layer, owned by its own root, and
    # neither the skeleton nor another sandbox sees it.
    a, b = capsule.create(), capsule.create()
    r = sh(capsule, a, "echo mine >> /etc/passwd && touch /etc/new-file && chown 1234:1234 /etc/hosts && "
                       "stat -c '%u:%g' / /etc/passwd /etc/new-file /etc/hosts")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0:0", "0:0", "0:0", "1234:1234"]
    r = sh(capsule, b, "grep -c mine /etc/passwd; test -e /etc/new-file && echo seen; stat -c '%u:%g' /etc/hosts")
    assert r.stdout.split() == ["0", "0:0"], r.stdout + r.stderr
    skel = os.path.join(capsule.home, "images", "host-v1-0")
    with open(os.path.join(skel, "etc", "passwd")) as f:
        assert "mine" not in f.read()
    assert not os.path.exists(os.path.join(skel, "etc", "new-file"))
    assert os.stat(os.path.join(skel, "etc", "hosts")).st_uid == 0
    # On the host, A's copies belong to A's id range, not to root.
    upper = os.path.join(capsule.home, "run", a, "fs", "upper", "etc")
    assert os.stat(os.path.join(upper, "passwd")).st_uid >= HOST_UID_BASE
    assert os.stat(os.path.join(upper, "hosts")).st_uid == os.stat(os.path.join(upper, "passwd")).st_uid + 1234
