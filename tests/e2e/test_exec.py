"""capsule exec: commands in a running named sandbox."""
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
import uuid

import pytest

from tests.conftest import Capsule
from .helpers import (FDS_PROBE, assert_capsule_error, assert_cat_sees_eof_without_i, host_procs_in, read_to_eof,
                      run_fds_probe, run_with_fds_as_3_up, wait_until)

# Every test here runs at both isolation levels (tests/conftest.py, both_levels).
pytestmark = pytest.mark.both_levels


@pytest.mark.vm_in_check  # on the module's one shared vm
def test_exec_runs_in_the_sandbox(capsule, sandbox):
    r = capsule.run("exec", sandbox, "sh", "-c", "hostname; echo err >&2; exit 5")
    assert r.returncode == 5
    assert r.stdout == sandbox + "\n"
    assert r.stderr == "err\n"


@pytest.mark.vm_in_check  # on the module's one shared vm
def test_exec_preserve_fds(capsule, sandbox):
    """podman's --preserve-fds 2: our fds 3 and 4 are the command's, in order, and our fd 5 is
    not passed. A vm's agent is behind virtio-serial, which carries no descriptor: refused in
    one line saying so."""
    r, three, four = run_fds_probe(lambda fds: run_with_fds_as_3_up(
        [capsule.binary, "exec", "--preserve-fds", "2", sandbox, "sh", "-c", FDS_PROBE], fds, capsule.env, timeout=120))
    if capsule.isolation == "vm":
        assert_capsule_error(r)
        assert ("is a vm: descriptors cannot be passed to its commands (its agent is reached over "
                "virtio-serial, which carries bytes only)") in r.stderr
        assert (three, four) == ("", "")
    else:
        assert r.returncode == 0, r.stderr
        assert r.stdout == "done\n"
        assert (three, four) == ("three\n", "four\n")


@pytest.mark.container_only  # a vm's refusal is the test above's
def test_exec_preserve_fds_the_most_arrive_in_order(capsule, sandbox):
    """64 pipes, the most that can be passed: the agent receives them at numbers of its own that
    overlap 3..66, where it must place them; each must still land at its own number."""
    pipes = [os.pipe() for _ in range(64)]
    try:
        code = ("import os\n"
                "for n in range(3, 67): os.write(n, b'%d' % n)\n"
                "print('open' if os.path.exists('/proc/self/fd/67') and os.readlink('/proc/self/fd/67') != "
                "'/proc/self/fd' else 'closed')\n")
        r = run_with_fds_as_3_up([capsule.binary, "exec", "--preserve-fds", "64", sandbox, "python3", "-c", code],
                                 [w for _, w in pipes], capsule.env, timeout=120)
        for _, w in pipes:
            os.close(w)
        assert r.returncode == 0, r.stderr
        assert r.stdout == "closed\n"
        assert [read_to_eof(rd) for rd, _ in pipes] == [str(n) for n in range(3, 67)]
    finally:
        for rd, _ in pipes:
            os.close(rd)


@pytest.mark.parametrize("value,message", [
    ("-1", "--preserve-fds '-1': give a count from 0 to 64"),
    ("x", "--preserve-fds 'x': give a count from 0 to 64"),
    ("65", "--preserve-fds '65': give a count from 0 to 64"),
    ("3", "--preserve-fds 3: descriptor 5 is not open"),
])
@pytest.mark.container_only  # refused before any sandbox is reached: the same at both levels
def test_exec_preserve_fds_errors(capsule, value, message):
    """Checked before anything is sent (no sandbox needed to be refused)."""
    fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(2)]
    try:
        for verb in (["exec", "--preserve-fds", value, "nosuch", "true"], ["run", "--preserve-fds", value, "true"]):
            r = run_with_fds_as_3_up([capsule.binary, *verb], fds, capsule.env)
            assert_capsule_error(r)
            assert r.stderr == f"capsule: {message}\n"
    finally:
        for fd in fds:
            os.close(fd)


@pytest.mark.container_only  # refused before a vm would boot
def test_run_preserve_fds_in_a_vm_is_refused_before_it_boots(capsule):
    fd = os.open("/dev/null", os.O_RDONLY)
    try:
        r = run_with_fds_as_3_up([capsule.binary, "run", "--isolation", "vm", "--preserve-fds", "1", "true"], [fd],
                                 capsule.env)
    finally:
        os.close(fd)
    assert_capsule_error(r)
    assert r.stderr == ("capsule: --preserve-fds needs the container level: a vm's agent is reached over "
                        "virtio-serial, which carries bytes only\n")


def test_exec_with_env_workdir_user(capsule, sandbox):
    r = capsule.run("exec", "-e", "A=1", "-w", "/tmp", "-u", "nobody", sandbox, "--", "sh", "-c",
                    'echo "$A $(pwd) $(id -u)"')
    assert r.returncode == 0, r.stderr
    assert r.stdout == "1 /tmp 65534\n"


@pytest.mark.vm_in_check  # on the module's one shared vm
def test_exec_interactive_stdin(capsule, sandbox):
    r = capsule.run("exec", "-i", sandbox, "--", "wc", "-l", input="a\nb\nc\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "3"


def test_exec_detach_returns_pid_and_process_runs_in_background(capsule, sandbox):
    # Not detached, sleep 300 would outlast the 120 s this call is given.
    r = capsule.run("exec", "-d", sandbox, "sleep", "300")
    assert r.returncode == 0, r.stderr
    pid = int(r.stdout.strip())
    assert pid > 1
    ps = capsule.run("exec", sandbox, "ps", "-o", "pid=,comm=", "-p", str(pid))
    assert ps.returncode == 0, ps.stderr
    assert ps.stdout.split() == [str(pid), "sleep"]
    # And it keeps running after the exec client is gone.
    time.sleep(0.5)
    ps = capsule.run("exec", sandbox, "ps", "-o", "comm=", "-p", str(pid))
    assert ps.stdout.strip() == "sleep"


def test_two_clients_at_once(capsule, sandbox):
    result = {}

    def long_exec():
        result["long"] = capsule.run("exec", sandbox, "sh", "-c", "sleep 3; echo long-done", timeout=60)

    t = threading.Thread(target=long_exec)
    t.start()
    try:
        time.sleep(0.5)
        r = capsule.run("exec", sandbox, "echo", "quick", timeout=30)
        assert r.returncode == 0, r.stderr
        assert r.stdout == "quick\n"
        assert t.is_alive(), "the long exec should still be running while the short one finished"
    finally:
        t.join(60)
    assert result["long"].returncode == 0, result["long"].stderr
    assert result["long"].stdout == "long-done\n"


def test_many_sequential_execs(capsule, sandbox):
    for i in range(10):
        r = capsule.run("exec", sandbox, "echo", str(i))
        assert r.returncode == 0 and r.stdout == f"{i}\n", r.stderr


def test_exec_exit_code_137_when_killed(capsule, sandbox):
    r = capsule.run("exec", sandbox, "sh", "-c", "kill -KILL $$")
    assert r.returncode == 137, r.stderr


def test_exec_env_flag_without_value_takes_callers_env(capsule, sandbox):
    r = capsule.run("exec", "-e", "CAPSULE_E2E_FROM_CALLER", sandbox, "printenv", "CAPSULE_E2E_FROM_CALLER",
                    env={"CAPSULE_E2E_FROM_CALLER": "via exec"})
    assert r.returncode == 0, r.stderr
    assert r.stdout == "via exec\n"


def test_exec_does_not_leak_host_env(capsule, sandbox):
    secret = "s3cr3t-" + uuid.uuid4().hex
    r = capsule.run("exec", sandbox, "env", env={"CAPSULE_SECRET": secret})
    assert r.returncode == 0, r.stderr
    assert "CAPSULE_SECRET" not in r.stdout and secret not in r.stdout


def test_exec_env_does_not_stick_to_the_sandbox(capsule, sandbox):
    assert capsule.run("exec", "-e", "ONCE=1", sandbox, "true").returncode == 0
    r = capsule.run("exec", sandbox, "printenv", "ONCE")
    assert r.returncode == 1 and r.stdout == ""


def test_exec_stdin_closed_without_i(capsule, sandbox):
    assert_cat_sees_eof_without_i(capsule, "exec", sandbox)


@pytest.mark.vm_in_check  # on the module's one shared vm
def test_exec_tty(capsule, sandbox):
    cmd = shlex.join([capsule.binary, "exec", "-t", sandbox, "sh", "-c", "tty; stty size"])
    r = subprocess.run(["script", "-qec", "stty rows 40 cols 120; " + cmd, "/dev/null"],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, env=capsule.env)
    assert r.returncode == 0, (r.stdout, r.stderr)
    lines = [l.strip() for l in r.stdout.replace("\r", "").splitlines() if l.strip()]
    assert re.fullmatch(r"/dev/pts/\d+", lines[0]), lines
    assert lines[1] == "40 120", lines


def test_exec_command_not_found_is_127(capsule, sandbox):
    r = capsule.run("exec", sandbox, "no-such-command-e2e")
    assert_capsule_error(r, 127)
    assert "no-such-command-e2e" in r.stderr
    # The sandbox is fine afterwards.
    assert capsule.run("exec", sandbox, "true").returncode == 0


def test_exec_directory_as_command_is_126(capsule, sandbox):
    r = capsule.run("exec", sandbox, "/tmp")
    assert_capsule_error(r, 126)
    assert "/tmp" in r.stderr


def test_exec_processes_share_the_sandbox(capsule, sandbox):
    # What one exec writes, the next one sees; a background process is visible to later execs.
    assert capsule.run("exec", sandbox, "sh", "-c", "echo shared > /tmp/shared").returncode == 0
    r = capsule.run("exec", sandbox, "cat", "/tmp/shared")
    assert r.stdout == "shared\n"


@pytest.mark.container_only  # host processes in the sandbox's cgroup; a vm's are in its guest
def test_exec_detached_process_is_killed_by_stop(capsule, sandbox):
    r = capsule.run("exec", "-d", sandbox, "sleep", "1000")
    assert r.returncode == 0, r.stderr
    assert any(arg0 == "sleep" for _, arg0, _ in host_procs_in(sandbox))
    assert capsule.run("stop", "-t", "1", sandbox).returncode == 0
    assert wait_until(lambda: not host_procs_in(sandbox), 5), host_procs_in(sandbox)


def test_exec_detached_missing_command_is_127(capsule, sandbox):
    r = capsule.run("exec", "-d", sandbox, "no-such-command-e2e")
    assert_capsule_error(r, 127)
    assert "no-such-command-e2e" in r.stderr
    assert r.stdout == ""


def test_run_env_is_the_default_for_later_execs(capsule):
    name = capsule.unique_name("rde")
    r = capsule.run("run", "-d", "--name", name, "-e", "FOO=bar", "--", "sleep", "100")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split()
    assert lines[0] == name and int(lines[1]) > 1
    r = capsule.run("exec", name, "printenv", "FOO")
    assert r.stdout == "bar\n", r.stderr


@pytest.mark.fresh_sandbox  # it changes the user files: the vm level's shared one is left alone
def test_exec_sees_each_change_to_the_user_files(capsule, sandbox):
    """The agent keeps /etc/passwd and /etc/group as it last read them while a stat finds the
    same file (device, inode, size, modification and change times) and that version is 100 ms
    old: a file rewritten in place at the same size, and one replaced by a rename at the same
    size, are both read again."""
    def alice():
        r = capsule.run("exec", "-u", "alice", sandbox, "--", "sh", "-c", "id -u; id -G")
        assert r.returncode == 0, r.stderr
        return r.stdout.split("\n")[:2]

    def root(script):
        r = capsule.run("exec", sandbox, "--", "sh", "-c", script)
        assert r.returncode == 0, r.stderr

    # A version is kept once it is 100 ms old: each change below is made to a kept one.
    root("echo alice:x:1234:1234::/:/bin/sh >> /etc/passwd; echo team:x:2000:alice >> /etc/group")
    time.sleep(0.3)
    assert alice() == ["1234", "1234 2000"]
    # In place (same inode), same size: only the times say it changed.
    root("sed s/1234/1235/g /etc/passwd > /tmp/p && cat /tmp/p > /etc/passwd;"
         " sed s/2000/2001/ /etc/group > /tmp/g && cat /tmp/g > /etc/group")
    assert alice() == ["1235", "1235 2001"]
    time.sleep(0.3)
    assert alice() == ["1235", "1235 2001"]
    # Replaced by a rename, same size.
    root("sed s/1235/1236/g /etc/passwd > /tmp/p && mv /tmp/p /etc/passwd;"
         " sed s/2001/2002/ /etc/group > /tmp/g && mv /tmp/g /etc/group")
    assert alice() == ["1236", "1236 2002"]
    # Gone: the default user still runs (uid 0 needs no entry), a named one is refused.
    root("mv /etc/passwd /tmp/passwd.gone")
    r = capsule.run("exec", "-u", "alice", sandbox, "--", "true")
    assert_capsule_error(r)
    assert "unable to find user 'alice'" in r.stderr
    assert capsule.run("exec", sandbox, "--", "true").returncode == 0


@pytest.mark.parametrize("deep", [False, True], ids=["home-path", "home-beyond-sun-path"])
def test_exec_connects_by_path_or_through_the_folder(capsule_home, deep):
    """The CLI connects to the shim by the socket's path where it fits in sun_path's 108 bytes,
    else through /proc/self/fd and the open folder; either way a missing sandbox and a stopped
    one are told apart by walking to the folder when the connect fails."""
    parent = None
    home = capsule_home
    if deep:
        parent = tempfile.mkdtemp(prefix="capsule-deep-" + "d" * 80, dir="/var/tmp")
        os.chmod(parent, 0o755)
        home = os.path.join(parent, "home")
    c = Capsule(home)
    try:
        name = c.create()
        sock = os.path.join(home, "run", name, "control.sock")
        assert (len(sock) >= 108) == deep, sock
        r = c.run("exec", name, "--", "echo", "in")
        assert (r.returncode, r.stdout) == (0, "in\n"), r.stderr
        assert c.run("stop", name).returncode == 0
        r = c.run("exec", name, "--", "true")
        assert_capsule_error(r)
        assert r.stderr == f"capsule: sandbox '{name}' is not running\n", r.stderr
        assert c.run("rm", name).returncode == 0
        r = c.run("exec", name, "--", "true")
        assert_capsule_error(r)
        assert "no such sandbox" in r.stderr and name in r.stderr, r.stderr
    finally:
        c.cleanup()
        if parent:
            shutil.rmtree(parent, ignore_errors=True)


def test_exec_failure_before_the_exec_is_told(capsule, sandbox):
    """What fails between the clone and the exec (here the working directory) comes back to the
    agent through the memory it shares with the child until then, with its message."""
    r = capsule.run("exec", "-w", "/no/such", sandbox, "true")
    assert_capsule_error(r)
    assert r.stderr == "capsule: working directory '/no/such': No such file or directory\n", r.stderr
    r = capsule.run("exec", "-w", "/tmp", sandbox, "pwd")
    assert (r.returncode, r.stdout) == (0, "/tmp\n"), r.stderr


@pytest.mark.fresh_sandbox  # it changes the user files: the vm level's shared one is left alone
def test_exec_first_command_sees_user_files_changed_since_the_start(capsule, sandbox):
    """The agent reads the user files once INIT is answered, ahead of the first command: a
    passwd changed before that command (here through the file API, no command) is read again."""
    r = capsule.run("fs", sandbox, "cat", "/etc/passwd")
    assert r.returncode == 0, r.stderr
    r = capsule.run("fs", sandbox, "write", "/etc/passwd", input=r.stdout + "bob:x:4321:4321::/:/bin/sh\n")
    assert r.returncode == 0, r.stderr
    r = capsule.run("exec", "-u", "bob", sandbox, "--", "id", "-u")
    assert (r.returncode, r.stdout) == (0, "4321\n"), r.stderr


@pytest.mark.fresh_sandbox  # it writes /etc/ld.so.preload: the vm level's shared one is left alone
def test_exec_first_command_sees_the_loaders_files_made_since_the_start(capsule, sandbox):
    """The agent looks up the names a first command's start walks ahead of it (the loader's
    preload file among them, missing here): that leaves no file behind, and a preload file made
    before the first command (through the file API, no command) is still found by it."""
    if capsule.isolation == "container":  # a vm's root has no layer of its changes to list
        r = capsule.run("diff", sandbox)
        assert (r.returncode, r.stdout) == (0, ""), r.stderr
    r = capsule.run("fs", sandbox, "write", "/etc/ld.so.preload", input="/no/such/lib.so\n")
    assert r.returncode == 0, r.stderr
    r = capsule.run("exec", sandbox, "--", "/bin/true")
    assert r.returncode == 0, r.stderr
    assert "/no/such/lib.so" in r.stderr and "ld.so.preload" in r.stderr, r.stderr
    r = capsule.run("exec", sandbox, "--", "pwd")
    assert (r.returncode, r.stdout) == (0, "/root\n"), r.stderr
