"""File descriptors: nothing of the agent's or the shim's reaches a command (the runc
CVE-2024-21626 class), and neither of them keeps fds it should not have or leaks them."""
import os
import re
import shlex
import socket
import struct
import subprocess
import time

import pytest

from secutil import (EXEC, EXIT, STARTED, assert_alive, connect, frame, hello_frame, parse_fields, parse_frames,
                     read_until_quiet, tlv, wait_until)
from tests.conftest import BUILD
from tests.e2e.test_oci import bundle, edit_config, oci, set_config  # noqa: F401 (fixtures)

# Run by the command itself (python3 -c): its own fds, as the agent handed them over.
LIST_FDS_PY = (
    "import os\n"
    "for n in sorted(int(x) for x in os.listdir('/proc/self/fd')):\n"
    "    try: print(n, os.readlink('/proc/self/fd/%d' % n))\n"
    "    except OSError: print(n, '')\n"
)


def _fds_from_listing(text):
    fds = {}
    for ln in text.replace("\r", "").splitlines():
        parts = ln.strip().split(" ", 1)
        if len(parts) == 2 and parts[0].isdigit():
            fds[int(parts[0])] = parts[1]
    return fds


def _only_stdio(fds):
    """listdir opened /proc/self/fd to list it; that fd is closed by the time readlink runs,
    so it shows with an empty target. Everything else must be 0-2."""
    return {k: v for k, v in fds.items() if k > 2 and v != ""}


def test_plain_exec_sees_only_stdio(mod_capsule, shared_sandbox):
    r = mod_capsule.run("exec", shared_sandbox, "python3", "-c", LIST_FDS_PY)
    fds = _fds_from_listing(r.stdout)
    assert {0, 1, 2} <= set(fds), r.stdout
    assert not _only_stdio(fds), f"extra fds in a command: {fds}"


def test_interactive_exec_sees_only_stdio(mod_capsule, shared_sandbox):
    r = mod_capsule.run("exec", "-i", shared_sandbox, "python3", "-c",
                        "import sys; sys.stdin.buffer.read()\n" + LIST_FDS_PY, input="x" * 100000)
    fds = _fds_from_listing(r.stdout)
    assert fds.get(0, "").startswith("pipe:"), fds
    assert not _only_stdio(fds), f"extra fds in an interactive command: {fds}"


def test_tty_exec_sees_only_stdio(mod_capsule, shared_sandbox):
    cmd = " ".join(shlex.quote(a) for a in [mod_capsule.binary, "exec", "-t", shared_sandbox, "python3", "-c", LIST_FDS_PY])
    r = subprocess.run(["script", "-qec", cmd, "/dev/null"], stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=60, env=mod_capsule.env)
    fds = _fds_from_listing(r.stdout)
    assert fds.get(0, "").startswith("/dev/pts/"), r.stdout
    assert not _only_stdio(fds), f"extra fds in a tty command: {fds}"


def test_detached_exec_sees_only_stdio(mod_capsule, shared_sandbox):
    code = ("import contextlib, io, os\nbuf = io.StringIO()\nwith contextlib.redirect_stdout(buf):\n" +
            "".join("    " + ln + "\n" for ln in LIST_FDS_PY.splitlines()) +
            "open('/tmp/detached-fds.tmp', 'w').write(buf.getvalue())\n"
            "os.rename('/tmp/detached-fds.tmp', '/tmp/detached-fds')\n")
    r = mod_capsule.run("exec", "-d", shared_sandbox, "python3", "-c", code)
    assert r.returncode == 0, r.stderr
    out = wait_until(lambda: (lambda x: x.returncode == 0 and x.stdout)(
        mod_capsule.run("exec", shared_sandbox, "cat", "/tmp/detached-fds")), 10, interval=0.1)
    fds = _fds_from_listing(out or "")
    assert fds and all(fds[i] == "/dev/null" for i in (0, 1, 2)), fds
    assert not _only_stdio(fds), f"extra fds in a detached command: {fds}"


@pytest.mark.parametrize("n", range(3, 16))
def test_workdir_through_proc_self_fd_reaches_nothing(mod_capsule, shared_sandbox, n):
    # runc CVE-2024-21626: a working directory of /proc/self/fd/N resolved while a host (or
    # agent) directory fd N is still open lands the command outside its root.
    r = mod_capsule.run("exec", "-w", f"/proc/self/fd/{n}", shared_sandbox, "sh", "-c", "pwd; ls -a")
    if r.returncode != 0:
        return
    lines = r.stdout.splitlines()
    assert lines and lines[0].startswith("/") and not lines[0].startswith("/proc/"), r.stdout
    assert "(unreachable)" not in r.stdout


def _fd_targets(pid):
    out = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out[int(fd)] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            pass
    return out


def test_shim_holds_only_its_own_kinds_of_fds(capsule, sandbox):
    info = capsule.inspect(sandbox)
    shim = info["shim_pid"]
    run_dir = os.path.realpath(os.path.join(capsule.home, "run", sandbox))
    allowed = [
        r"/dev/null",
        re.escape(run_dir) + r"(/lock|/shim\.log)?",
        r"anon_inode:\[(eventpoll|signalfd|pidfd)\]",
        r"anon_inode:\[pidfd\]",
        r"pidfd:.*",
        r"socket:\[\d+\]",
        r"/sys/fs/cgroup/.*",
    ]
    # The sandbox's own mount namespace (held so that its unmounting waits until after a stop's
    # answer), never the host's.
    agent = info["init_pid"]
    sandbox_mnt = os.readlink(f"/proc/{agent}/ns/mnt")
    assert sandbox_mnt != os.readlink("/proc/self/ns/mnt")
    allowed.append(re.escape(sandbox_mnt))
    fds = _fd_targets(shim)
    bad = {k: v for k, v in fds.items() if not any(re.fullmatch(p, v) for p in allowed)}
    assert not bad, f"unexpected fds in the shim: {bad}"
    assert not any("memfd:" in v for v in fds.values()), "the shim kept the agent's memfd"
    # The agent's side: its socket, epoll, signalfd, stdio on /dev/null, the sandbox's own root
    # (the O_PATH descriptor the filesystem API resolves from; close-on-exec) and its own
    # oom_score_adj, read-only (what each command would inherit: src/agent/proc.c), nothing of
    # the host.
    afds = _fd_targets(agent)
    bad = {k: v for k, v in afds.items()
           if not re.fullmatch(r"/|/dev/null|/proc/1/oom_score_adj|socket:\[\d+\]|"
                               r"anon_inode:\[(eventpoll|signalfd|pidfd)\]", v)}
    assert not bad, f"unexpected fds in the idle agent: {bad}"


def test_no_fd_leaks_in_shim_or_agent_after_many_execs(capsule, sandbox):
    info = capsule.inspect(sandbox)
    shim, agent = info["shim_pid"], info["init_pid"]
    assert_alive(capsule, sandbox)
    before = (len(_fd_targets(shim)), len(_fd_targets(agent)))
    for i in range(6):
        capsule.run("exec", sandbox, "true")
        capsule.run("exec", sandbox, "no-such-binary-xyz")
        capsule.run("exec", "-w", "/no/such/dir", sandbox, "true")
        capsule.run("exec", "-u", "nosuchuser", sandbox, "true")
        capsule.run("exec", "-i", sandbox, "cat", input="data")
        capsule.run("exec", "--timeout", "100ms", sandbox, "sleep", "5")
        capsule.run("exec", "-d", sandbox, "true")
        p = capsule.popen("exec", sandbox, "sleep", "100", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.05)
        p.kill()
        p.wait()
    assert_alive(capsule, sandbox)
    after = wait_until(lambda: (lambda a: a if a[0] <= before[0] and a[1] <= before[1] else None)(
        (len(_fd_targets(shim)), len(_fd_targets(agent)))), 5, interval=0.1)
    now = (len(_fd_targets(shim)), len(_fd_targets(agent)))
    assert after, f"fd counts (shim, agent) went from {before} to {now}"


# ---- a process's own seccomp filter against the agent's closing of fds ---------------------

EXEC_OPTS = os.path.join(BUILD, "tests", "e2e", "exec_opts")


@pytest.mark.parametrize("filt", ["close_range-eperm", "close_range-enosys", "close_range-kill"])
def test_a_process_filter_refusing_close_range_still_gets_only_stdio(mod_capsule, shared_sandbox, filt):
    """The agent closes its fds before it installs the process's own filter (an OCI spec's,
    capsule_exec_options.seccomp_bpf), so a filter that refuses close_range (EPERM, ENOSYS,
    or kills the caller) neither leaves an fd open nor stops the command: it runs, with 0-2."""
    r = subprocess.run([EXEC_OPTS, shared_sandbox, "-", filt, "python3", "-c", LIST_FDS_PY],
                       capture_output=True, text=True, env=mod_capsule.env, timeout=60)
    assert r.returncode == 0, (r.returncode, r.stderr)
    fds = _fds_from_listing(r.stdout)
    assert {0, 1, 2} <= set(fds), r.stdout
    assert not _only_stdio(fds), f"extra fds in a command under {filt}: {fds}"


@pytest.mark.parametrize("action", [{"action": "SCMP_ACT_ERRNO", "errnoRet": 1}, {"action": "SCMP_ACT_KILL_PROCESS"}])
def test_an_oci_profile_refusing_close_range_still_gets_only_stdio(oci, bundle, action):  # noqa: F811
    set_config(bundle, args=["ls", "-l", "/proc/self/fd"])
    edit_config(bundle, lambda c: c["linux"].update(seccomp={
        "defaultAction": "SCMP_ACT_ALLOW", "syscalls": [dict(names=["close_range"], **action)]}))
    r = oci("run", "--bundle", bundle, "cr1")
    assert r.returncode == 0, (r.returncode, r.stderr)
    fds = {ln.split()[-3]: ln.split()[-1] for ln in r.stdout.splitlines() if "->" in ln}
    # ls's own fd 3 is the folder it lists.
    extra = {k: v for k, v in fds.items() if k not in ("0", "1", "2") and not v.endswith("/fd")}
    assert {"0", "1", "2"} <= set(fds) and not extra, r.stdout


NO_CLOSE_RANGE = os.path.join(BUILD, "tests", "e2e", "no_close_range")


def test_a_caller_without_close_range_leaks_no_fd_into_the_sandbox(capsule, tmp_path):
    """capsule started under a filter that answers close_range with ENOSYS (an older kernel, or
    an older container runtime's default profile), holding an fd that is not close-on-exec: the
    library's start of the shim, the shim's of the agent and the agent's of a command each fall
    back to the fds /proc/self/fd lists, so the fd reaches none of them (crun's trick of running
    the suite again with a syscall taken away)."""
    secret = tmp_path / "host-secret"
    secret.write_text("host secret")
    fd = os.open(secret, os.O_RDONLY)
    name = capsule.unique_name("nocr")
    try:
        r = subprocess.run([NO_CLOSE_RANGE, capsule.binary, "create", "--name", name], env=capsule.env,
                           pass_fds=(fd,), capture_output=True, text=True, timeout=120)
    finally:
        os.close(fd)
    assert r.returncode == 0, r.stderr
    info = capsule.inspect(name)
    for who in ("shim_pid", "init_pid"):
        assert str(secret) not in _fd_targets(info[who]).values(), (who, _fd_targets(info[who]))
    r = capsule.run("exec", name, "python3", "-c", LIST_FDS_PY)
    fds = _fds_from_listing(r.stdout)
    assert {0, 1, 2} <= set(fds) and not _only_stdio(fds), r.stdout + r.stderr



@pytest.mark.parametrize("without_close_range", [False, True], ids=["close_range", "no-close_range"])
def test_an_ephemeral_runs_shim_and_command_get_no_fd_the_caller_leaked(capsule, tmp_path, without_close_range):
    """`capsule run` starts its shim as its own child (posix_spawn), unlike create's double
    fork: an fd the caller left open without close-on-exec reaches neither the shim, nor the
    agent, nor the command, with close_range or without it (the musl-built CLI marks them
    close-on-exec itself, where glibc's spawn has a closefrom action)."""
    secret = tmp_path / "host-secret"
    secret.write_text("host secret")
    fd = os.open(secret, os.O_RDONLY)
    name = capsule.unique_name("runfd")
    argv = [capsule.binary, "run", "--name", name, "--", "python3", "-c",
            LIST_FDS_PY + "import sys, time\nprint('END', flush=True)\ntime.sleep(30)\n"]
    if without_close_range:
        argv = [NO_CLOSE_RANGE] + argv
    try:
        p = subprocess.Popen(argv, env=capsule.env, pass_fds=(fd,), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    finally:
        os.close(fd)
    try:
        listing = ""
        for line in p.stdout:
            if line.strip() == "END":
                break
            listing += line
        else:
            pytest.fail(p.stderr.read())
        fds = _fds_from_listing(listing)
        assert {0, 1, 2} <= set(fds) and not _only_stdio(fds), listing
        info = capsule.inspect(name)
        for who in ("shim_pid", "init_pid"):
            assert str(secret) not in _fd_targets(info[who]).values(), (who, _fd_targets(info[who]))
    finally:
        capsule.run("rm", "-f", name)
        p.wait(timeout=30)


def _children(pid):
    kids = []
    for t in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{t}/children") as f:
            kids += [int(k) for k in f.read().split()]
    return kids


def test_the_shims_socket_factory_keeps_only_its_socket_without_close_range(capsule, tmp_path):
    """The shim's children that do not exec (the socket factory, a hot mount's, a save's) close
    the shim's fds with close_range, else with the fds /proc/self/fd lists, else fail. The
    factory is the one that lives on: under a filter answering close_range with ENOSYS it must
    still hold only stdio and its socket, not the sandbox's lock, run folder, cgroups or
    clients' sockets."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    name = capsule.unique_name("nocrf")
    r = subprocess.run([NO_CLOSE_RANGE, capsule.binary, "create", "--name", name, "--network", "full",
                        "-p", f"127.0.0.1:{port}:80"], env=capsule.env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    # A forwarded connection asks the factory for a socket in the sandbox: it starts then.
    with socket.create_connection(("127.0.0.1", port), timeout=30):
        pass
    shim = capsule.inspect(name)["shim_pid"]
    exe = os.readlink(f"/proc/{shim}/exe")

    def factories():
        return [k for k in _children(shim) if os.readlink(f"/proc/{k}/exe") == exe]
    assert wait_until(factories, timeout=30), "no socket factory started"
    for k in factories():
        fds = _fd_targets(k)
        assert set(fds) <= {0, 1, 2, 3} and re.fullmatch(r"socket:\[\d+\]", fds.get(3, "")), fds
    # The hot mount's and the save's children take the same fallback under the shim's filter.
    (tmp_path / "f").write_text("through the walk")
    assert capsule.run("exec", name, "mkdir", "/hm").returncode == 0
    r = capsule.run("mount", name, str(tmp_path), "/hm")
    assert r.returncode == 0, r.stderr
    assert capsule.run("exec", name, "cat", "/hm/f").stdout == "through the walk"
    r = capsule.run("save", name, "after-walk")
    assert r.returncode == 0, r.stderr


# ---- descriptors a client passes with EXEC (--preserve-fds) --------------------------------

EXEC_FDS_TAG, ERROR, DATA = 17, 2, 18


def exec_with_fds(capsule, name, argv, fds, declared):
    """A raw client's EXEC of ARGV on channel 1 that says it passes DECLARED descriptors and
    sends FDS with its bytes: the frames on channel 1 until its EXIT or ERROR, and its stdout."""
    s = connect(capsule, name)
    try:
        s.sendall(hello_frame())
        payload = b"".join(tlv(1, a) for a in argv)
        if declared:
            payload += tlv(EXEC_FDS_TAG, struct.pack("<I", declared))
        socket.send_fds(s, [frame(EXEC, 1, payload)], fds)
        buf, _ = read_until_quiet(s, quiet=10, total=30,
                                  until=lambda fr: any(f[0] in (EXIT, ERROR) and f[2] == 1 for f in fr))
    finally:
        s.close()
    frames = [f for f in parse_frames(buf)[0] if f[2] == 1]
    out = b"".join(f[3] for f in frames if f[0] == DATA and (f[1] & 0xff) == 1).decode()
    return frames, out


def error_text(frames):
    errs = [dict(parse_fields(f[3])) for f in frames if f[0] == ERROR]
    assert errs, frames
    return struct.unpack("<I", errs[0][1])[0], errs[0][2].decode()


def test_passed_fds_are_exactly_3_and_4_and_nobody_keeps_them(mod_capsule, shared_sandbox):
    """A pipe and a host folder passed as 3 and 4: the command has them at those numbers and
    nothing else above 2 (the agent's socket, its root, our other fds); once it exits, every
    write end of the pipe is closed, so neither the shim nor the agent kept a copy."""
    from tests.e2e.helpers import read_to_eof
    r, w = os.pipe()
    folder = os.open("/var/tmp", os.O_RDONLY | os.O_DIRECTORY)
    try:
        frames, out = exec_with_fds(mod_capsule, shared_sandbox, ["python3", "-c", LIST_FDS_PY], [w, folder], 2)
        os.close(w)
        assert any(f[0] == STARTED for f in frames), frames
        fds = _fds_from_listing(out)
        assert fds.get(3, "").startswith("pipe:") and fds.get(4) == "/var/tmp", out
        assert not {k: v for k, v in _only_stdio(fds).items() if k not in (3, 4)}, f"extra fds: {out}"
        assert read_to_eof(r) == ""
    finally:
        os.close(r)
        os.close(folder)


@pytest.mark.parametrize("sent,declared", [(2, 1), (1, 2), (1, 0), (65, 65)])
def test_an_exec_whose_descriptors_do_not_match_its_count_is_refused(mod_capsule, shared_sandbox, sent, declared):
    """The count EXEC gives must be what came with it: a descriptor more or less would shift the
    numbers the command finds. Refused, and none of them kept anywhere; past the bound (64) the
    EXEC is malformed."""
    from tests.e2e.helpers import read_to_eof
    r, w = os.pipe()
    try:
        frames, _ = exec_with_fds(mod_capsule, shared_sandbox, ["sh", "-c", "echo ran >&3"], [w] * sent, declared)
        os.close(w)
        errnum, msg = error_text(frames)
        if declared > 64:
            assert (errnum, msg) == (74, "malformed EXEC request")  # EBADMSG
        else:
            assert errnum == 9, (errnum, msg)  # EBADF
            assert msg == f"EXEC declares {declared} descriptors to pass and {sent} came with it", msg
        assert read_to_eof(r) == ""
    finally:
        os.close(r)
    assert_alive(mod_capsule, shared_sandbox)
