"""capsule run: one command in an ephemeral sandbox, as a user sees it."""
import hashlib
import os
import re
import shlex
import signal
import subprocess
import uuid

import pytest

from .helpers import (assert_cat_sees_eof_without_i, cgroup_dirs, host_procs_in, leftovers, run_dir, run_entries,
                      sandbox_gone, wait_until)

# Every test here runs at both isolation levels (tests/conftest.py, both_levels).
pytestmark = pytest.mark.both_levels


# ---- output and exit codes ---------------------------------------------------------------


def test_stdout_and_stderr_pass_through_separately(capsule):
    r = capsule.run("run", "--", "sh", "-c", "echo to-out; echo to-err >&2")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "to-out\n"
    assert r.stderr == "to-err\n"


def test_exit_code_of_the_command_is_returned(capsule):
    r = capsule.run("run", "--", "sh", "-c", "exit 7")
    assert r.returncode == 7, r.stderr
    assert r.stderr == ""


def test_true_and_false_give_0_and_1(capsule):
    assert capsule.run("run", "true").returncode == 0
    assert capsule.run("run", "false").returncode == 1


def test_command_killed_by_sigkill_exits_137(capsule):
    r = capsule.run("run", "--", "sh", "-c", "kill -KILL $$")
    assert r.returncode == 137, r.stderr


def test_command_killed_by_sigterm_exits_143(capsule):
    r = capsule.run("run", "--", "sh", "-c", "kill -TERM $$")
    assert r.returncode == 143, r.stderr


def test_command_flags_are_not_taken_as_capsule_flags(capsule):
    # Without "--": parsing stops at the command, so its own flags are left alone.
    r = capsule.run("run", "sh", "-c", "echo -e x")
    assert r.returncode == 0, r.stderr
    r = capsule.run("run", "ls", "-d", "/tmp")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "/tmp\n"


# ---- environment, working directory, user ------------------------------------------------


def test_env_flag_sets_variable(capsule):
    r = capsule.run("run", "-e", "GREETING=hello world", "-e", "EMPTY=", "--", "sh", "-c",
                    'echo "[$GREETING]"; echo "[${EMPTY-unset}]"')
    assert r.returncode == 0, r.stderr
    assert r.stdout == "[hello world]\n[]\n"


def test_env_flag_without_value_takes_it_from_callers_env(capsule):
    r = capsule.run("run", "-e", "CAPSULE_E2E_FROM_CALLER", "--", "printenv", "CAPSULE_E2E_FROM_CALLER",
                    env={"CAPSULE_E2E_FROM_CALLER": "value from caller"})
    assert r.returncode == 0, r.stderr
    assert r.stdout == "value from caller\n"


def test_env_flag_without_value_unset_in_caller_leaves_it_unset(capsule):
    assert "CAPSULE_E2E_NOT_SET" not in capsule.env
    r = capsule.run("run", "-e", "CAPSULE_E2E_NOT_SET", "--", "printenv", "CAPSULE_E2E_NOT_SET")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert r.stdout == ""


def test_host_environment_does_not_leak_in(capsule):
    secret = "s3cr3t-" + uuid.uuid4().hex
    r = capsule.run("run", "--", "env", env={"CAPSULE_SECRET": secret})
    assert r.returncode == 0, r.stderr
    assert "CAPSULE_SECRET" not in r.stdout
    assert secret not in r.stdout
    # Nor anything else of ours: the test's CAPSULE_HOME is not visible inside.
    assert "CAPSULE_HOME" not in r.stdout
    names = {line.split("=", 1)[0] for line in r.stdout.splitlines() if "=" in line}
    assert "PATH" in names and "HOME" in names


def test_workdir_flag_sets_cwd(capsule):
    r = capsule.run("run", "-w", "/tmp", "--", "pwd")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "/tmp\n"


def test_default_user_is_root(capsule):
    r = capsule.run("run", "--", "id", "-u")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "0\n"


def test_user_flag_numeric_uid_65534(capsule):
    r = capsule.run("run", "-u", "65534", "--", "id", "-u")
    assert r.returncode == 0, f"exit {r.returncode}: {r.stderr}"
    assert r.stdout == "65534\n"


def test_user_flag_name_nobody(capsule):
    r = capsule.run("run", "-u", "nobody", "--", "sh", "-c", "id -u; id -g")
    assert r.returncode == 0, f"exit {r.returncode}: {r.stderr}"
    assert r.stdout == "65534\n65534\n"


def test_user_flag_uid_and_gid(capsule):
    r = capsule.run("run", "-u", "65534:65534", "--", "sh", "-c", "id -u; id -g")
    assert r.returncode == 0, f"exit {r.returncode}: {r.stderr}"
    assert r.stdout == "65534\n65534\n"


# ---- what the sandbox looks like --------------------------------------------------------


def test_hostname_defaults_to_sandbox_name(capsule):
    name = capsule.unique_name("host")
    r = capsule.run("run", "--name", name, "--", "hostname")
    assert r.returncode == 0, r.stderr
    assert r.stdout == name + "\n"


def test_hostname_flag(capsule):
    r = capsule.run("run", "--hostname", "e2e-box", "--", "hostname")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "e2e-box\n"


def test_pid1_is_the_agent_and_command_pid_is_small(capsule):
    r = capsule.run("run", "--", "sh", "-c", "tr '\\0' '\\n' < /proc/1/cmdline | head -n1; echo $$")
    assert r.returncode == 0, r.stderr
    argv0, pid = r.stdout.splitlines()
    assert os.path.basename(argv0) == "capsule-agent"
    # A guest's kernel threads take pids before any command: small there means its own.
    assert 1 < int(pid) < (10 if capsule.isolation == "container" else 300)


def test_proc_shows_only_sandbox_processes(capsule):
    script = "for p in /proc/[0-9]*; do printf '%s ' ${p#/proc/}; tr '\\0' ' ' < $p/cmdline; echo; done"
    r = capsule.run("run", "--", "sh", "-c", script)
    assert r.returncode == 0, r.stderr
    procs = {}
    for line in r.stdout.splitlines():
        pid, _, cmd = line.partition(" ")
        procs[int(pid)] = cmd.strip()
    if capsule.isolation == "vm":
        # The guest kernel's own threads (no command line) are the guest's, not the host's.
        procs = {pid: cmd for pid, cmd in procs.items() if cmd}
    # The agent, the shell and the tr it runs; nothing of the host (it has hundreds).
    assert 1 in procs and os.path.basename(procs[1].split()[0]) == "capsule-agent", procs
    assert len(procs) <= 4, procs
    assert all(pid < (20 if capsule.isolation == "container" else 300) for pid in procs), procs
    for cmd in procs.values():
        assert "pytest" not in cmd and "systemd" not in cmd, procs


def test_usr_is_read_only(capsule):
    code = ("import errno\n"
            "try:\n    open('/usr/capsule-e2e-probe', 'w')\n"
            "except OSError as e:\n    print(errno.errorcode[e.errno])\n"
            "else:\n    print('WRITABLE')\n")
    r = capsule.run("run", "--", "python3", "-c", code)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "EROFS\n"
    assert not os.path.exists("/usr/capsule-e2e-probe")


def test_touch_in_usr_reports_read_only_file_system(capsule):
    r = capsule.run("run", "--", "touch", "/usr/bin/capsule-e2e-probe")
    assert r.returncode != 0
    assert "Read-only file system" in r.stderr
    assert not os.path.exists("/usr/bin/capsule-e2e-probe")


def test_tmp_is_writable_and_does_not_reach_host(capsule):
    fname = f"/tmp/capsule-e2e-{uuid.uuid4().hex}"
    r = capsule.run("run", "--", "sh", "-c", f"echo inside > {fname} && cat {fname}")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "inside\n"
    assert not os.path.exists(fname)


def test_etc_passwd_is_fresh(capsule):
    r = capsule.run("run", "--", "cut", "-d:", "-f1", "/etc/passwd")
    assert r.returncode == 0, r.stderr
    assert set(r.stdout.split()) == {"root", "nobody"}


def test_network_is_loopback_only(capsule):
    r = capsule.run("run", "--", "ls", "/sys/class/net")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["lo"]


# ---- stdin ------------------------------------------------------------------------------


def test_stdin_with_i_is_piped_to_command(capsule):
    r = capsule.run("run", "-i", "--", "cat", input="line one\nline two\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "line one\nline two\n"


def test_stdin_10mb_through_sha256sum(capsule):
    data = os.urandom(10 * 1024 * 1024)
    r = capsule.run("run", "-i", "--", "sha256sum", input=data, text=False, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()


def test_stdin_is_closed_without_i(capsule):
    assert_cat_sees_eof_without_i(capsule, "run", "--name", capsule.unique_name("noin"), "--")


def test_stdin_data_is_not_passed_without_i(capsule):
    r = capsule.run("run", "--", "cat", input="should not arrive\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""


# ---- tty --------------------------------------------------------------------------------


def _under_script(capsule, shell_line, timeout=60):
    """Run a shell line under `script`, which gives it a terminal."""
    return subprocess.run(["script", "-qec", shell_line, "/dev/null"], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout, env=capsule.env)


def test_tty_flag_gives_a_pseudo_terminal(capsule):
    cmd = shlex.join([capsule.binary, "run", "-t", "--", "sh", "-c", "tty; stty size"])
    r = _under_script(capsule, "stty rows 30 cols 100; " + cmd)
    assert r.returncode == 0, (r.stdout, r.stderr)
    lines = [l.strip() for l in r.stdout.replace("\r", "").splitlines() if l.strip()]
    assert re.fullmatch(r"/dev/pts/\d+", lines[0]), lines
    assert lines[1] == "30 100", lines


def test_without_tty_flag_there_is_no_terminal(capsule):
    r = capsule.run("run", "--", "tty")
    assert r.returncode == 1
    assert r.stdout.strip() == "not a tty"


# ---- timeout ----------------------------------------------------------------------------


def test_timeout_kills_command_with_137_and_message(capsule):
    name = capsule.unique_name("tmo")
    # Without the timeout, sleep 100 would outlast the 60 s this call is given.
    r = capsule.run("run", "--name", name, "--timeout", "1s", "--", "sleep", "100", timeout=60)
    assert r.returncode == 137, r.stderr
    assert "timed out" in r.stderr
    assert r.stderr.startswith("capsule")
    assert wait_until(lambda: sandbox_gone(capsule, name), 10), leftovers(capsule, name)


def test_timeout_kills_children_of_the_command(capsule):
    name = capsule.unique_name("tmoc")
    r = capsule.run("run", "--name", name, "--timeout", "1s", "--", "sh", "-c", "sleep 100 & sleep 100",
                    timeout=60)
    assert r.returncode == 137, r.stderr
    assert "timed out" in r.stderr
    assert wait_until(lambda: not host_procs_in(name), 10), host_procs_in(name)


def test_timeout_in_named_sandbox_leaves_no_sleep_behind(capsule, sandbox):
    r = capsule.run("exec", "--timeout", "1s", sandbox, "sh", "-c", "sleep 100 & sleep 100", timeout=60)
    assert r.returncode == 137, r.stderr
    assert "timed out" in r.stderr

    def no_sleep():
        ps = capsule.run("exec", sandbox, "ps", "-eo", "comm")
        assert ps.returncode == 0, ps.stderr
        return "sleep" not in ps.stdout.split()

    assert wait_until(no_sleep, 10), capsule.run("exec", sandbox, "ps", "-ef").stdout
    # The sandbox itself lives on.
    r = capsule.run("exec", sandbox, "echo", "still here")
    assert r.returncode == 0 and r.stdout == "still here\n", r.stderr


def test_command_that_ends_before_timeout_is_not_killed(capsule):
    r = capsule.run("run", "--timeout", "30s", "--", "sh", "-c", "echo quick; exit 3")
    assert r.returncode == 3, r.stderr
    assert r.stdout == "quick\n"
    assert "timed out" not in r.stderr


# ---- large output -----------------------------------------------------------------------


def test_100mb_of_output_arrives_complete(capsule):
    size = 100 * 1000 * 1000
    p = capsule.popen("run", "--", "head", "-c", str(size), "/dev/zero", stdout=subprocess.PIPE,
                      stderr=subprocess.PIPE)
    total = 0
    nonzero = False
    try:
        while True:
            chunk = p.stdout.read(1 << 20)
            if not chunk:
                break
            total += len(chunk)
            if chunk.count(0) != len(chunk):
                nonzero = True
        rc = p.wait(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        err = p.stderr.read()
        p.stdout.close()
        p.stderr.close()
    assert rc == 0, err
    assert total == size
    assert not nonzero
    assert err == b""


def test_large_output_on_both_streams_arrives_complete(capsule):
    script = "head -c 5000000 /dev/zero | tr '\\0' o; head -c 3000000 /dev/zero | tr '\\0' e >&2"
    r = capsule.run("run", "--", "sh", "-c", script, text=False)
    assert r.returncode == 0
    assert len(r.stdout) == 5000000 and set(r.stdout) == {ord("o")}
    assert len(r.stderr) == 3000000 and set(r.stderr) == {ord("e")}


# ---- nothing left behind ----------------------------------------------------------------


@pytest.mark.container_only  # cgroups and a 64M limit; test_vm.py has the vm's own
def test_ephemeral_run_leaves_no_run_folder_and_no_cgroups(capsule):
    name = capsule.unique_name("eph")
    r = capsule.run("run", "--name", name, "-m", "64M", "--pids-limit", "32", "--cpus", "0.5", "--",
                    "sh", "-c", "sleep 0.2 & echo done")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "done\n"
    assert not os.path.exists(run_dir(capsule, name))
    assert wait_until(lambda: cgroup_dirs(name) == [], 10), cgroup_dirs(name)
    assert host_procs_in(name) == []
    ps = capsule.ps(all=True)
    assert name not in [s["name"] for s in ps]


def test_ephemeral_run_with_failing_command_leaves_nothing(capsule):
    name = capsule.unique_name("ephf")
    r = capsule.run("run", "--name", name, "--", "sh", "-c", "exit 9")
    assert r.returncode == 9
    assert not os.path.exists(run_dir(capsule, name))
    assert wait_until(lambda: cgroup_dirs(name) == [], 10), cgroup_dirs(name)


def test_run_without_name_gets_a_generated_name_and_leaves_nothing(capsule):
    before = run_entries(capsule)
    r = capsule.run("run", "--", "hostname")
    assert r.returncode == 0, r.stderr
    name = r.stdout.strip()
    assert re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}", name), name
    after = run_entries(capsule)
    assert name not in after
    assert after <= before
    assert wait_until(lambda: cgroup_dirs(name) == [], 10), cgroup_dirs(name)
    # Two runs get two different names.
    r2 = capsule.run("run", "--", "hostname")
    assert r2.returncode == 0 and r2.stdout.strip() != name


def test_run_detached_prints_name_and_keeps_running(capsule):
    name = capsule.unique_name("rund")
    r = capsule.run("run", "-d", "--name", name, "--", "sleep", "100")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == name
    running = {s["name"]: s["state"] for s in capsule.ps(all=False)}
    assert running.get(name) == "running"
    ps = capsule.run("exec", name, "ps", "-eo", "comm")
    assert "sleep" in ps.stdout.split()


def test_stdin_and_stdout_round_trip_10mb_unchanged(capsule):
    data = os.urandom(10 * 1024 * 1024)
    r = capsule.run("run", "-i", "--", "cat", input=data, text=False, timeout=120)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout) == len(data)
    assert r.stdout == data


def test_command_keeps_running_after_stdin_eof(capsule):
    r = capsule.run("run", "-i", "--", "sh", "-c", "cat; echo after-eof", input="data\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "data\nafter-eof\n"


def test_interactive_tty_shell(capsule):
    cmd = shlex.join([capsule.binary, "run", "-it", "--", "sh"])
    r = subprocess.run(["script", "-qec", cmd, "/dev/null"], input="echo hi-$((40+2))\nexit 4\n",
                       capture_output=True, text=True, timeout=60, env=capsule.env)
    assert r.returncode == 4, (r.stdout, r.stderr)
    assert "hi-42" in r.stdout


def test_tty_joins_stderr_to_stdout(capsule):
    r = capsule.run("run", "-t", "--", "sh", "-c", "echo to-err >&2")
    assert r.returncode == 0
    assert r.stdout.replace("\r", "") == "to-err\n"
    assert r.stderr == ""


@pytest.mark.parametrize("signame,code", [("INT", 3), ("TERM", 5), ("HUP", 6)])
def test_signals_to_the_cli_reach_the_command(capsule, signame, code):
    name = capsule.unique_name("sig")
    script = f'trap "echo got-{signame}; exit {code}" {signame}; echo ready; sleep 100 & wait'
    p = capsule.popen("run", "--name", name, "--", "sh", "-c", script, stdin=subprocess.DEVNULL,
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert p.stdout.readline() == b"ready\n"
        p.send_signal(getattr(signal, "SIG" + signame))
        out, err = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == code, err
    assert out == f"got-{signame}\n".encode()
    assert wait_until(lambda: sandbox_gone(capsule, name), 10), leftovers(capsule, name)


def test_run_returns_when_command_exits_despite_background_child(capsule):
    name = capsule.unique_name("bg")
    # Waiting for the background sleep would outlast the 60 s this call is given.
    r = capsule.run("run", "--name", name, "--", "sh", "-c", "sleep 100 & echo done", timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "done\n"
    assert wait_until(lambda: sandbox_gone(capsule, name), 10), leftovers(capsule, name)


def test_default_workdir_is_home_for_root_and_slash_for_others(capsule):
    r = capsule.run("run", "--", "pwd")
    assert r.stdout == "/root\n", r.stderr
    r = capsule.run("run", "-u", "nobody", "--", "pwd")
    assert r.stdout == "/\n", r.stderr


def test_missing_workdir_is_an_error_for_exec_and_made_by_run(capsule):
    # docker's rules: exec into a folder that is not there fails, run makes it.
    name = capsule.create()
    r = capsule.run("exec", "-w", "/no/such/dir", name, "--", "pwd")
    assert r.returncode == 125
    assert "/no/such/dir" in r.stderr
    assert r.stdout == ""
    name = capsule.unique_name("wd")
    r = capsule.run("run", "--name", name, "-w", "/no/such/dir", "--", "pwd")
    assert r.returncode == 0 and r.stdout == "/no/such/dir\n", r.stderr
    assert wait_until(lambda: sandbox_gone(capsule, name), 10), leftovers(capsule, name)
