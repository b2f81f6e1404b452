"""The default seccomp filter, probed from inside a sandbox.

Each probe makes the raw syscall with arguments chosen so that, were it allowed, it would fail
harmlessly (EBADF, EFAULT, EINVAL) or touch only the throwaway probe process; a blocked one
fails with EPERM or ENOSYS before the kernel looks at anything (bubblewrap's try-syscall
idea). Every probe runs in its own forked child so that one that slipped through cannot
change what the next one sees.
"""
import json
import shlex
import subprocess

import pytest

import errno
import os

from secutil import assert_alive, py, py_json, seccomp_program, seccomp_verdict, sh

BUILD = os.environ.get("CAPSULE_BUILD", "build")

# x86_64 syscall numbers and harmless arguments.
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
CLONE_THREAD = 0x00010000  # without CLONE_SIGHAND: EINVAL if the filter let it through
BAD = 1  # a pointer no process has mapped: EFAULT where a call gets that far

PROBES = {
    "mount": (165, [BAD, BAD, BAD, 0, 0]),
    "umount2": (166, [BAD, 0]),
    "unshare_newuser": (272, [CLONE_NEWUSER]),
    "setns": (308, [-1, 0]),
    "pivot_root": (155, [BAD, BAD]),
    "keyctl": (250, [0xFFFF, 0, 0, 0, 0]),
    "add_key": (248, [BAD, BAD, BAD, 0, 0]),
    "bpf": (321, [0xFFFF, 0, 0]),
    "perf_event_open": (298, [BAD, 0, -1, -1, 0]),
    "userfaultfd": (323, [0xFFFFFFFF]),
    "kexec_load": (246, [0, 0, 0, 0xFFFFFFFF]),
    "init_module": (175, [BAD, 0, BAD]),
    "finit_module": (313, [-1, BAD, 0]),
    "open_by_handle_at": (304, [-1, BAD, 0]),
    "ptrace_traceme": (101, [0, 0, 0, 0]),
    "ptrace_attach_pid1": (101, [16, 1, 0, 0]),
    "io_uring_setup": (425, [0, BAD]),
    "io_uring_enter": (426, [-1, 0, 0, 0, 0, 0]),
    "io_uring_register": (427, [-1, 0, 0, 0]),
    "clock_settime": (227, [0, BAD]),
    "settimeofday": (164, [BAD, 0]),
    "swapon": (167, [BAD, 0]),
    "reboot": (169, [0, 0, 0, 0]),
    "open_tree": (428, [-1, BAD, 0]),
    "fsopen": (430, [BAD, 0]),
    "move_mount": (429, [-1, BAD, -1, BAD, 0]),
    "clone_newuser": (56, [CLONE_NEWUSER | CLONE_THREAD, 0, 0, 0, 0]),
    "clone_newnet": (56, [CLONE_NEWNET | CLONE_THREAD, 0, 0, 0, 0]),
    "process_vm_readv": (310, [1, BAD, 1, BAD, 1, 0]),
    "pidfd_getfd": (438, [-1, 0, 0]),
    "name_to_handle_at": (303, [-1, BAD, BAD, BAD, 0]),
    "socket_vsock": (41, [40, 1, 0]),
    "socket_vsock_high_bits": (41, [40 | (1 << 32), 1, 0]),
    # PER_LINUX | READ_IMPLIES_EXEC: an old ABI quirk Docker does not allow
    "personality_read_implies_exec": (135, [0x0400000]),
}

PROBE = r"""
import ctypes, errno, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
probes = json.loads(sys.argv[1])
res = {}
for name, (nr, args) in probes.items():
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(rd)
        a = [ctypes.c_ulong(x & 0xFFFFFFFFFFFFFFFF) for x in args]
        r = libc.syscall(ctypes.c_long(nr), *a)
        e = ctypes.get_errno() if r < 0 else 0
        if r == 0 and nr == 56:
            os._exit(0)  # a clone that got through: the new child just leaves
        os.write(wr, json.dumps([r, e]).encode())
        os._exit(0)
    os.close(wr)
    out = b""
    while True:
        d = os.read(rd, 4096)
        if not d:
            break
        out += d
    os.close(rd)
    _, st = os.waitpid(pid, 0)
    if out:
        r, e = json.loads(out)
        res[name] = {"ret": r, "errno": errno.errorcode.get(e, str(e)) if r < 0 else None}
    else:
        res[name] = {"ret": None, "errno": None, "status": st}
print(json.dumps(res))
"""


@pytest.fixture(scope="module")
def probe_results(mod_capsule, shared_sandbox):
    r = py(mod_capsule, shared_sandbox, PROBE, args=(json.dumps(PROBES),))
    assert r.returncode == 0, f"probe failed: {r.stderr}"
    return json.loads(r.stdout.strip().splitlines()[-1])


REFUSED = ("EPERM", "ENOSYS")


@pytest.fixture(scope="module")
def program():
    return seccomp_program(BUILD)


@pytest.mark.parametrize("name", sorted(n for n in PROBES if n != "clone3"))
def test_dangerous_syscall_is_refused(probe_results, program, name):
    got = probe_results[name]
    assert got["ret"] is not None and got["ret"] < 0 and got["errno"] in REFUSED, (
        f"{name}: expected EPERM or ENOSYS from the filter, got {got}"
    )
    # The control: the filter itself refuses this very call, with this errno. Several of
    # these fail with EPERM for want of a capability alone (init_module, reboot, swapon, ...),
    # so the probe by itself would pass without any filter.
    nr, args = PROBES[name]
    action, value = seccomp_verdict(program, nr, args)
    assert action == "errno" and errno.errorcode[value] == got["errno"], (name, action, value, got)


def test_the_filter_allows_what_programs_need(program):
    # The other half of the control: an ordinary call passes the very same program.
    for nr, args in ((0, [0, 1, 0]), (1, [1, 1, 0]), (257, [-100, 1, 0, 0]), (90, [1, 0o755]), (56, [0x11, 0])):
        assert seccomp_verdict(program, nr, args) == ("allow", None), (nr, args)


def test_set_id_modes_are_refused_by_the_filter(program):
    # chmod, fchmod, fchmodat, fchmodat2, creat, mknod, mknodat, open and openat (when they create):
    # no mode with a set-uid or set-gid bit, high bits above the mode or not.
    O_CREAT, O_TMPFILE = 0o100, 0o20200000
    calls = {90: (1, None), 91: (1, None), 268: (2, None), 452: (2, None), 85: (1, None), 133: (1, None),
             259: (2, None), 2: (2, 1), 257: (3, 2)}
    for nr, (mode_at, flags_at) in calls.items():
        for mode in (0o4755, 0o2755, 0o6777, 0o4000 | (1 << 40)):
            args = [1] * 6
            args[mode_at] = mode
            if flags_at is not None:
                args[flags_at] = O_CREAT | 1
            assert seccomp_verdict(program, nr, args) == ("errno", errno.EPERM), (nr, oct(mode))
            if flags_at is not None:
                args[flags_at] = O_TMPFILE | 2
                assert seccomp_verdict(program, nr, args) == ("errno", errno.EPERM), (nr, "O_TMPFILE")
                args[flags_at] = 2  # no create: the mode is unused, the open is allowed
                assert seccomp_verdict(program, nr, args) == ("allow", None), (nr, "plain open")
        args = [1] * 6
        args[mode_at] = 0o1777
        if flags_at is not None:
            args[flags_at] = O_CREAT | 1
        assert seccomp_verdict(program, nr, args) == ("allow", None), (nr, "sticky")
    # openat2 carries its mode in memory, where a filter cannot look: ENOSYS, for libc to fall
    # back to openat.
    assert seccomp_verdict(program, 437, [1] * 4) == ("errno", errno.ENOSYS)


def test_clone3_returns_enosys_so_libc_falls_back_to_clone(mod_capsule, shared_sandbox):
    code = r"""
import ctypes, errno, json
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
r = libc.syscall(ctypes.c_long(435), ctypes.c_ulong(1), ctypes.c_ulong(88))
print(json.dumps([r, errno.errorcode.get(ctypes.get_errno())]))
"""
    r, e = py_json(mod_capsule, shared_sandbox, code)
    assert r == -1 and e == "ENOSYS", f"clone3 gave {r} {e}, expected ENOSYS"


def test_unknown_future_syscall_gets_enosys_from_the_filter(program):
    # The kernel itself says ENOSYS for a number it lacks, so only the filter's own answer
    # shows its default action: ENOSYS for every number it does not name, never allow.
    for nr in (335, 470, 999, 4095):
        assert seccomp_verdict(program, nr, []) == ("errno", errno.ENOSYS), nr


def test_other_abis_are_killed_by_the_filter(program):
    assert seccomp_verdict(program, 0, [], arch=0x40000003)[0] == "kill_process"  # i386
    for nr in (0x40000000, 0x40000000 | 59):  # x32: read, execve
        assert seccomp_verdict(program, nr, [])[0] == "kill_process", hex(nr)


def test_unknown_future_syscall_returns_enosys(mod_capsule, shared_sandbox):
    # A number past every syscall this filter knows: the default action must be ENOSYS
    # (libc then falls back), never allow.
    code = r"""
import ctypes, errno, json
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
r = libc.syscall(ctypes.c_long(999), ctypes.c_ulong(0))
print(json.dumps([r, errno.errorcode.get(ctypes.get_errno())]))
"""
    r, e = py_json(mod_capsule, shared_sandbox, code)
    assert r == -1 and e == "ENOSYS"


TIOCSTI_PROBE = r"""
import ctypes, errno, json, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def ioctl(req, arg):
    r = libc.syscall(ctypes.c_long(16), ctypes.c_ulong(0), ctypes.c_ulong(req), ctypes.c_ulong(arg))
    return errno.errorcode.get(ctypes.get_errno(), "?") if r < 0 else "OK"
print("RESULT=" + json.dumps({
    "isatty": os.isatty(0),
    # fd 0 is our controlling terminal: tty_nr in /proc/self/stat is its device number
    "ctty_is_fd0": int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[4]) == os.fstat(0).st_rdev,
    # with a bad pointer an allowed TIOCSTI on our controlling tty fails with EFAULT
    "tiocsti": ioctl(0x5412, 1),
    "tiocsti_high_bit": ioctl(0x5412 | (1 << 32), 1),
    "tiocgwinsz_control": ioctl(0x5413, 1),
    "tioclinux": ioctl(0x541C, 1),
}))
"""


@pytest.fixture(scope="module")
def tty_results(mod_capsule, shared_sandbox):
    cmd = " ".join(shlex.quote(a) for a in
                   [mod_capsule.binary, "exec", "-t", shared_sandbox, "python3", "-c", TIOCSTI_PROBE])
    r = subprocess.run(["script", "-qec", cmd, "/dev/null"], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=60, env=mod_capsule.env)
    lines = [ln for ln in r.stdout.replace("\r", "").splitlines() if ln.startswith("RESULT=")]
    assert lines, f"tty probe gave no result: rc={r.returncode} out={r.stdout!r} err={r.stderr!r}"
    res = json.loads(lines[-1][len("RESULT="):])
    # The probe is only meaningful on a real controlling terminal, where ioctls work.
    assert res["isatty"] and res["ctty_is_fd0"], res
    assert res["tiocgwinsz_control"] == "EFAULT", f"ordinary tty ioctls must pass the filter: {res}"
    return res


def test_tiocsti_on_tty_is_refused(tty_results):
    assert tty_results["tiocsti"] in REFUSED, tty_results


def test_tioclinux_on_tty_is_refused(tty_results):
    assert tty_results["tioclinux"] in REFUSED, tty_results


def test_tiocsti_with_high_bits_set_is_refused(tty_results):
    # The kernel truncates the request to 32 bits; a filter comparing all 64 would miss it.
    assert tty_results["tiocsti_high_bit"] in REFUSED, tty_results


I386_PROBE = r"""
import ctypes, json, mmap, os, signal
# mov eax, 20 (i386 getpid); int 0x80; ret
code = bytes([0xB8, 20, 0, 0, 0, 0xCD, 0x80, 0xC3])
m = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
m.write(code)
addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
fn = ctypes.CFUNCTYPE(ctypes.c_int)(addr)
pid = os.fork()
if pid == 0:
    r = fn()
    os._exit(0 if r > 0 else 3)
_, st = os.waitpid(pid, 0)
x32 = os.fork()
if x32 == 0:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    r = libc.syscall(ctypes.c_long(0x40000000 | 39))  # x32 getpid
    os._exit(0 if r > 0 else 3)
_, st2 = os.waitpid(x32, 0)
print(json.dumps({"i386": [os.WIFSIGNALED(st) and os.WTERMSIG(st), os.WIFEXITED(st) and os.WEXITSTATUS(st)],
                  "x32": [os.WIFSIGNALED(st2) and os.WTERMSIG(st2), os.WIFEXITED(st2) and os.WEXITSTATUS(st2)]}))
"""


def test_other_syscall_abis_cannot_bypass_the_filter(mod_capsule, shared_sandbox):
    res = py_json(mod_capsule, shared_sandbox, I386_PROBE)
    sig, code = res["i386"]
    assert not (code == 0 and not sig), f"an i386 (int 0x80) syscall succeeded inside: {res}"
    sig, code = res["x32"]
    assert not (code == 0 and not sig), f"an x32 syscall succeeded inside: {res}"


# ---- and ordinary programs still work -------------------------------------------------------


def test_fork_and_exec_work(mod_capsule, shared_sandbox):
    r = sh(mod_capsule, shared_sandbox, 'a=$(/bin/echo hi); b=$(sh -c "echo there" | cat); echo "$a $b"')
    assert r.returncode == 0 and r.stdout.strip() == "hi there", r
    code = "import subprocess; print(subprocess.run(['echo', 'spawned'], capture_output=True, text=True).stdout.strip())"
    r = py(mod_capsule, shared_sandbox, code)
    assert r.returncode == 0 and r.stdout.strip() == "spawned", r


def test_threads_work(mod_capsule, shared_sandbox):
    code = r"""
import threading
out = []
ts = [threading.Thread(target=lambda i=i: out.append(i * i)) for i in range(16)]
[t.start() for t in ts]; [t.join() for t in ts]
print(sum(out))
"""
    r = py(mod_capsule, shared_sandbox, code)
    assert r.returncode == 0 and r.stdout.strip() == str(sum(i * i for i in range(16))), r


def test_unix_sockets_work(mod_capsule, shared_sandbox):
    code = r"""
import os, socket
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
a.sendall(b"pair"); x = b.recv(16)
p = "/tmp/sec-test.sock"
if os.path.exists(p): os.unlink(p)
srv = socket.socket(socket.AF_UNIX); srv.bind(p); srv.listen(1)
c = socket.socket(socket.AF_UNIX); c.connect(p)
s, _ = srv.accept(); c.sendall(b"path"); y = s.recv(16)
print((x + y).decode())
"""
    r = py(mod_capsule, shared_sandbox, code)
    assert r.returncode == 0 and r.stdout.strip() == "pairpath", r


def test_inet_on_loopback_works(mod_capsule, shared_sandbox):
    code = r"""
import socket, threading
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.bind(("127.0.0.1", 0)); srv.listen(1)
port = srv.getsockname()[1]
def serve():
    c, _ = srv.accept(); c.sendall(c.recv(16).upper()); c.close()
t = threading.Thread(target=serve); t.start()
c = socket.create_connection(("127.0.0.1", port), timeout=5)
c.sendall(b"loopback"); print(c.recv(16).decode()); t.join()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0))
u.sendto(b"udp", u.getsockname()); print(u.recv(16).decode())
"""
    r = py(mod_capsule, shared_sandbox, code)
    assert r.returncode == 0 and r.stdout.split() == ["LOOPBACK", "udp"], r


def test_sandbox_survives_the_probes(mod_capsule, shared_sandbox, probe_results):
    assert_alive(mod_capsule, shared_sandbox)


# CHOWN DAC_OVERRIDE FOWNER KILL SETGID SETUID SETPCAP NET_BIND_SERVICE SYS_CHROOT
ROOT_CAPS = (1 << 0) | (1 << 1) | (1 << 3) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 10) | (1 << 18)


def status_fields(text):
    return {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in text.splitlines() if ":" in line)}


@pytest.mark.parametrize("user", ["0", "1000"])
def test_every_command_gets_one_filter_no_new_privs_and_the_cut_bounding_set(mod_capsule, shared_sandbox, user):
    # Commands are cloned from a thread of the agent that took these on once: each command,
    # the first and the ones after, must still have them all, and one filter, not two.
    for _ in range(3):
        r = mod_capsule.run("exec", "-u", user, shared_sandbox, "cat", "/proc/self/status")
        assert r.returncode == 0, r
        st = status_fields(r.stdout)
        assert st["Seccomp"] == "2" and st["Seccomp_filters"] == "1", st
        assert st["NoNewPrivs"] == "1", st
        want = ROOT_CAPS if user == "0" else 0
        assert int(st["CapBnd"], 16) == want and int(st["CapPrm"], 16) == want, st
        assert int(st["CapEff"], 16) == want and int(st["CapAmb"], 16) == 0, st
        assert st["Uid"].split() == [user] * 4, st


def test_the_agents_main_thread_stays_unconfined(mod_capsule, shared_sandbox):
    # PID 1's main thread mounts and does what commands may not: the filter, no_new_privs and
    # the cut bounding set are its spawner thread's alone.
    code = r"""
import json, os
out = {}
for tid in sorted(os.listdir("/proc/1/task"), key=int):
    with open(f"/proc/1/task/{tid}/status") as f:
        st = dict(l.split(":", 1) for l in f.read().splitlines() if ":" in l)
    out[tid] = {k: st[k].strip() for k in ("Seccomp", "NoNewPrivs", "CapBnd")}
print(json.dumps(out))
"""
    tasks = py_json(mod_capsule, shared_sandbox, code)
    main = tasks["1"]
    assert main["Seccomp"] == "0" and main["NoNewPrivs"] == "0", tasks
    assert int(main["CapBnd"], 16) & (1 << 21), tasks  # CAP_SYS_ADMIN: the agent mounts
    others = [t for tid, t in tasks.items() if tid != "1"]
    assert len(others) == 1, tasks
    assert others[0]["Seccomp"] == "2" and others[0]["NoNewPrivs"] == "1", tasks
    assert int(others[0]["CapBnd"], 16) == ROOT_CAPS, tasks
