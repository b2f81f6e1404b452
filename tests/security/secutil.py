"""Helpers for the adversarial suite (tests/security): running probes inside a sandbox,
host-side views of a sandbox (cgroups, processes, memory) and the wire protocol."""
import glob
import importlib.util
import json
import os
import socket
import struct
import time

_ROOT_CONFTEST = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conftest.py")
_spec = importlib.util.spec_from_file_location("capsule_tests_root_conftest", _ROOT_CONFTEST)
_root = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_root)
Capsule = _root.Capsule
guest_kernel = _root.guest_kernel
paused_at = _root.paused_at
settled_run_entries = _root.settled_run_entries

# The end-to-end suite's helpers: what the host sees of a sandbox.
_HELPERS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "e2e", "helpers.py")
_hspec = importlib.util.spec_from_file_location("capsule_tests_e2e_helpers", _HELPERS)
_helpers = importlib.util.module_from_spec(_hspec)
_hspec.loader.exec_module(_helpers)
children_named = _helpers.children_named

# Sandbox root maps to this host uid (docs: 65536 ids from 1000000000).
HOST_UID_BASE = 1000000000


# ---- running things inside --------------------------------------------------------------


def sh(capsule, name, script, timeout=60, **kw):
    return capsule.run("exec", name, "sh", "-c", script, timeout=timeout, **kw)


def py(capsule, name, code, timeout=60, args=(), **kw):
    return capsule.run("exec", name, "python3", "-c", code, *args, timeout=timeout, **kw)


def py_json(capsule, name, code, timeout=60):
    r = py(capsule, name, code, timeout=timeout)
    assert r.returncode == 0, f"probe failed ({r.returncode}): {r.stderr}\n{r.stdout}"
    return json.loads(r.stdout.strip().splitlines()[-1])


def assert_alive(capsule, name, timeout=30):
    """The sandbox still answers: a fresh exec through its shim and agent prints ok."""
    r = capsule.run("exec", name, "echo", "ok", timeout=timeout)
    assert r.returncode == 0 and r.stdout.strip() == "ok", (
        f"sandbox {name} no longer answers: rc={r.returncode} out={r.stdout!r} err={r.stderr!r}"
    )


# ---- host-side views of a sandbox ----------------------------------------------------------


def cgroup_dirs(name):
    """The sandbox's cgroup folders in every hierarchy (v1 and v2 layouts)."""
    pats = [f"/sys/fs/cgroup/*/capsule/{name}[.~]*", f"/sys/fs/cgroup/capsule/{name}[.~]*",
            f"/sys/fs/cgroup/**/capsule/{name}[.~]*"]
    found = set()
    for p in pats:
        for d in glob.glob(p, recursive=True):
            if os.path.isdir(d):
                found.add(d)
    return sorted(found)


def pids_in_cgroup(name):
    """Host pids of every process whose cgroup path names this sandbox."""
    markers = (f"/capsule/{name}.", f"/capsule/{name}~")
    pids = []
    for ent in os.listdir("/proc"):
        if not ent.isdigit():
            continue
        try:
            with open(f"/proc/{ent}/cgroup") as f:
                text = f.read()
        except OSError:
            continue
        if any(m in text for m in markers):
            pids.append(int(ent))
    return pids


def proc_alive(pid):
    """True while PID exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def vmrss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def wait_until(pred, timeout, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def state_of(capsule, name):
    for s in capsule.ps(all=True):
        if s["name"] == name:
            return s["state"]
    return None


# ---- the wire protocol ---------------------------------------------------------------------

HELLO, ERROR, OK = 1, 2, 3
EXEC, STARTED, DATA, CREDIT, EXIT = 16, 17, 18, 19, 20
FLAG_EOF = 0x100
EXEC_STDIN = 0x2


def frame(ftype, chan=0, payload=b"", flags=0):
    return struct.pack("<IHHI", len(payload), ftype, flags, chan) + payload


def tlv(tag, val):
    if isinstance(val, str):
        val = val.encode()
    return struct.pack("<HI", tag, len(val)) + val


def hello_frame(version=1, role="client"):
    return frame(HELLO, 0, tlv(1, struct.pack("<I", version)) + tlv(2, role))


def exec_frame(chan, argv, flags=0):
    p = b"".join(tlv(1, a) for a in argv)
    if flags:
        p += tlv(5, struct.pack("<I", flags))
    return frame(EXEC, chan, p)


def parse_frames(buf):
    """Whole frames at the front of BUF: ([(type, flags, chan, payload)], rest)."""
    out = []
    while len(buf) >= 12:
        ln, t, fl, ch = struct.unpack("<IHHI", buf[:12])
        if len(buf) < 12 + ln:
            break
        out.append((t, fl, ch, buf[12:12 + ln]))
        buf = buf[12 + ln:]
    return out, buf


def parse_fields(payload):
    fields = []
    while len(payload) >= 6:
        tag, ln = struct.unpack("<HI", payload[:6])
        fields.append((tag, payload[6:6 + ln]))
        payload = payload[6 + ln:]
    return fields


def control_path(capsule, name):
    return os.path.join(capsule.home, "run", name, "control.sock")


def connect(capsule, name, timeout=5.0):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(control_path(capsule, name))
    return s


def read_until_quiet(s, quiet=1.0, total=10.0, until=None):
    """Read until the peer closes (returns closed=True) or QUIET seconds pass with nothing,
    never longer than TOTAL; with UNTIL (a predicate on the frames so far), also stop as soon
    as it holds. Returns (bytes, closed)."""
    buf = b""
    deadline = time.monotonic() + total
    s.settimeout(quiet)
    while time.monotonic() < deadline:
        if until is not None and until(parse_frames(buf)[0]):
            return buf, False
        try:
            d = s.recv(1 << 20)
        except socket.timeout:
            return buf, False
        except ConnectionResetError:
            return buf, True
        if not d:
            return buf, True
        buf += d
    return buf, False


def shim_pids_named(name):
    """Host pids of capsule-shim processes serving sandbox NAME (names in tests are unique)."""
    out = []
    for ent in os.listdir("/proc"):
        if not ent.isdigit():
            continue
        try:
            with open(f"/proc/{ent}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"capsule-shim") and name.encode() in argv and proc_alive(int(ent)):
            out.append(int(ent))
    return out


# ---- the seccomp filter itself, run on a synthetic call (classic BPF) -----------------------

AUDIT_ARCH_X86_64 = 0xC000003E
SECCOMP_RET_ACTION = 0xFFFF0000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000


def seccomp_program(build):
    """The filter the shim hands every sandbox, as (code, jt, jf, k) tuples, read from the
    header the build generates (BUILD/seccomp_filter.h)."""
    import re
    with open(os.path.join(build, "seccomp_filter.h")) as f:
        text = f.read()
    body = text[text.index("{") + 1:text.rindex("}")]
    raw = bytes(int(b, 16) for b in re.findall(r"0x([0-9a-fA-F]{2})", body))
    return [struct.unpack_from("<HBBI", raw, i) for i in range(0, len(raw), 8)]


def seccomp_verdict(program, nr, args=(), arch=AUDIT_ARCH_X86_64):
    """What the filter answers for syscall NR with ARGS, as the kernel would run it: ("allow",
    None), ("errno", N) or (action name, data). A control for a probe inside a sandbox: it
    shows the filter, not a missing capability, is what refuses a call."""
    args = [a & 0xFFFFFFFFFFFFFFFF for a in list(args) + [0] * (6 - len(args))]
    data = struct.pack("<iIQ6Q", nr, arch, 0, *args)
    a = x = 0
    mem = [0] * 16
    pc = 0
    while True:
        code, jt, jf, k = program[pc]
        pc += 1
        cls = code & 0x07
        if code == 0x20:  # ld [k]
            a = struct.unpack_from("<I", data, k)[0]
        elif code == 0x00:  # ld #k
            a = k
        elif code == 0x60:  # ld M[k]
            a = mem[k]
        elif code == 0x61:  # ldx M[k]
            x = mem[k]
        elif code == 0x02:  # st M[k]
            mem[k] = a
        elif code == 0x03:  # stx M[k]
            mem[k] = x
        elif code == 0x07:  # tax
            x = a
        elif code == 0x87:  # txa
            a = x
        elif cls == 0x04:  # alu
            op, src = code & 0xF0, (x if code & 0x08 else k)
            ops = {0x00: a + src, 0x10: a - src, 0x20: a * src, 0x50: a & src, 0x40: a | src,
                   0x60: a << src, 0x70: a >> src, 0xA0: a ^ src}
            if op not in ops:
                raise ValueError(f"BPF alu op {code:#x} not understood")
            a = ops[op] & 0xFFFFFFFF
        elif cls == 0x05:  # jmp
            op, src = code & 0xF0, (x if code & 0x08 else k)
            if op == 0x00:
                pc += k
                continue
            taken = {0x10: a == src, 0x20: a > src, 0x30: a >= src, 0x40: bool(a & src)}
            if op not in taken:
                raise ValueError(f"BPF jump {code:#x} not understood")
            pc += jt if taken[op] else jf
        elif code == 0x06:  # ret #k
            action, value = k & SECCOMP_RET_ACTION, k & 0xFFFF
            if action == SECCOMP_RET_ALLOW:
                return ("allow", None)
            if action == SECCOMP_RET_ERRNO:
                return ("errno", value)
            return ({0x80000000: "kill_process", 0x00000000: "kill_thread", 0x00030000: "trap"}.get(action, hex(action)),
                    value)
        else:
            raise ValueError(f"BPF instruction {code:#x} not understood")
