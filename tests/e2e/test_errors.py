"""Errors a user makes: one line on stderr starting 'capsule', exit 125, nothing left behind."""
import os
import subprocess

import pytest

from .helpers import assert_capsule_error, cgroup_dirs, run_dir, run_entries, wait_until


def home_entries(capsule):
    """What a create or run could leave: sandboxes, volumes, saves and images."""
    found = {"run": run_entries(capsule)}
    for sub in ("volumes", "saves", "images/layers", "images/blobs/sha256"):
        d = os.path.join(capsule.home, sub)
        found[sub] = set(os.listdir(d)) if os.path.isdir(d) else set()
    return found


@pytest.fixture
def nothing_left(capsule):
    """Asserts after the test that the home holds what it held before: no sandbox, volume,
    save or image was left by the failed command."""
    before = home_entries(capsule)
    yield
    assert home_entries(capsule) == before


BAD_INVOCATIONS = {
    "memory_bad_unit": (["run", "--memory", "512X", "true"], ["invalid size '512X'", "unit"]),
    "memory_bad_unit_short_flag": (["run", "-m", "512X", "true"], ["invalid size '512X'"]),
    "memory_below_minimum": (["run", "-m", "1M", "true"], ["too small", "minimum"]),
    "memory_not_a_number": (["run", "--memory", "lots", "true"], ["invalid size 'lots'"]),
    "cpus_not_a_number": (["run", "--cpus", "abc", "true"], ["invalid cpus 'abc'"]),
    "cpus_negative": (["run", "--cpus", "-1", "true"], ["invalid cpus '-1'"]),
    "pids_limit_negative": (["run", "--pids-limit", "-1", "true"], ["invalid pids limit '-1'"]),
    "pids_limit_not_a_number": (["run", "--pids-limit", "many", "true"], ["invalid pids limit 'many'"]),
    "unknown_long_flag": (["run", "--bogus", "true"], ["unknown flag '--bogus'"]),
    "unknown_short_flag": (["run", "-Z", "true"], ["unknown flag '-Z'"]),
    "unknown_flag_on_create": (["create", "--bogus"], ["unknown flag '--bogus'"]),
    "exec_only_flag_on_create": (["create", "-w", "/tmp"], ["unknown flag", "workdir"]),
    "sandbox_flag_on_exec": (["exec", "--memory", "1G", "x", "true"], ["unknown flag '--memory'"]),
    "missing_value_memory": (["run", "--memory"], ["'--memory' needs a value"]),
    "missing_value_env": (["run", "-e"], ["'-e' needs a value"]),
    "missing_value_workdir_on_exec": (["exec", "-w"], ["'-w' needs a value"]),
    "run_without_command": (["run"], ["no command given"]),
    "exec_without_sandbox": (["exec"], ["no sandbox given"]),
    "unknown_command": (["frobnicate"], ["unknown command 'frobnicate'"]),
    "bad_name_slash": (["run", "--name", "a/b", "true"], ["invalid sandbox name 'a/b'", "'/'"]),
    "bad_name_on_create": (["create", "--name", "../escape"], ["invalid sandbox name '../escape'"]),
    "bad_name_too_long": (["create", "--name", "x" * 100], ["invalid sandbox name", "too long"]),
    "bad_name_leading_dot": (["create", "--name", ".hidden"], ["invalid sandbox name '.hidden'", "must start"]),
    "exec_missing_sandbox": (["exec", "no-such-sandbox-e2e", "true"], ["no such sandbox", "no-such-sandbox-e2e"]),
    "rm_missing_sandbox": (["rm", "no-such-sandbox-e2e"], ["no such sandbox", "no-such-sandbox-e2e"]),
    "rm_force_missing_sandbox": (["rm", "-f", "no-such-sandbox-e2e"], ["no such sandbox", "no-such-sandbox-e2e"]),
    "start_missing_sandbox": (["start", "no-such-sandbox-e2e"], ["no such sandbox", "no-such-sandbox-e2e"]),
    "inspect_missing_sandbox": (["inspect", "no-such-sandbox-e2e"], ["no such sandbox", "no-such-sandbox-e2e"]),
    "workdir_relative": (["run", "-w", "tmp", "pwd"], ["working directory 'tmp'", "absolute"]),
    "image_missing": (["run", "--image", "no-such-image-e2e", "true"], ["image 'no-such-image-e2e' not found"]),
    "image_missing_on_create": (["create", "--image", "no-such-image-e2e"], ["image 'no-such-image-e2e' not found"]),
    "timeout_bad": (["run", "--timeout", "soon", "true"], ["invalid duration 'soon'"]),
    "timeout_zero": (["run", "--timeout", "0s", "true"], ["invalid timeout '0s'", "more than 0"]),
    "stop_bad_timeout": (["stop", "-t", "x", "some-sandbox"], ["invalid stop timeout 'x'"]),
    "ps_unknown_flag": (["ps", "--bogus"], ["unknown flag '--bogus'"]),
    "env_empty": (["run", "-e", "", "true"], ["invalid environment variable ''"]),
    "env_bad_name_without_value": (["run", "-e", "A-B", "true"], ["invalid environment variable name 'A-B'"]),
    "cpus_beyond_the_host": (["run", "--cpus", "1000", "true"], ["cpus limit 1000", "CPUs"]),
    "qemu_arg_on_a_container": (["run", "--qemu-arg", "-foo", "true"], ["--qemu-arg", "--isolation vm"]),
    "accel_on_a_container": (["run", "--accel", "kvm", "true"], ["--accel", "--isolation vm"]),
    "cpuset_not_a_list": (["run", "--cpuset-cpus", "0-", "true"], ["--cpuset-cpus '0-'", "not a list"]),
    "cpuset_cpu_not_on_the_host": (["create", "--cpuset-cpus", "4095"], ["--cpuset-cpus '4095'", "cpu 4095 is not on this host"]),
    "cpuset_mems_not_on_the_host": (["run", "--cpuset-mems", "4095", "true"], ["--cpuset-mems", "memory node 4095"]),
    "memory_swap_without_memory": (["run", "--memory-swap", "1G", "true"], ["--memory-swap needs --memory"]),
    "memory_swap_below_memory": (["create", "-m", "64M", "--memory-swap", "32M"], ["--memory-swap 33554432 is below --memory"]),
    "memory_swap_bad_size": (["run", "-m", "64M", "--memory-swap", "lots", "true"], ["--memory-swap", "invalid size 'lots'"]),
    "memory_reservation_above_memory": (["run", "-m", "64M", "--memory-reservation", "65M", "true"],
                                        ["--memory-reservation 68157440 is above --memory"]),
    "cpuset_on_a_vm": (["run", "--isolation", "vm", "--cpuset-cpus", "0", "true"],
                       ["--cpuset-cpus is for a container", "cpu and pids only"]),
    "memory_swap_on_a_vm": (["create", "--isolation", "vm", "-m", "256M", "--memory-swap", "-1"],
                            ["--memory-swap is for a container"]),
}


@pytest.mark.parametrize("args,mentions", list(BAD_INVOCATIONS.values()), ids=list(BAD_INVOCATIONS))
def test_bad_invocation_is_one_line_error_125(capsule, nothing_left, args, mentions):
    r = capsule.run(*args)
    assert_capsule_error(r, 125)
    for m in mentions:
        assert m in r.stderr, f"stderr should name {m!r}: {r.stderr!r}"
    assert r.stdout == ""


@pytest.mark.parametrize("args", [["run", "--memory"], ["run", "--pids-limit"], ["exec", "-w"]],
                         ids=["run--memory", "run--pids-limit", "exec-w"])
def test_missing_value_names_the_flag_and_says_it_needs_a_value(capsule, args):
    # `capsule run --pids-limit` should say that --pids-limit needs a value, not that some
    # (mangled) flag is unknown.
    flag = args[-1]
    r = subprocess.run([capsule.binary, *args], capture_output=True, env=capsule.env, timeout=30)
    assert r.returncode == 125
    err = r.stderr.decode("utf-8", errors="strict")  # no stray bytes in the message
    assert err.startswith("capsule") and err.count("\n") == 1, err
    assert flag in err, err
    assert "value" in err or "argument" in err, err
    assert "unknown flag" not in err, err


def test_error_for_bad_name_leaves_no_sandbox_with_that_name(capsule, nothing_left):
    r = capsule.run("create", "--name", "a/b")
    assert_capsule_error(r)
    assert not os.path.exists(os.path.join(capsule.home, "run", "a"))


def test_command_not_found_is_127_and_named(capsule, nothing_left):
    name = capsule.unique_name("nf")
    r = capsule.run("run", "--name", name, "--", "no-such-command-e2e", "arg")
    assert_capsule_error(r, 127)
    assert "no-such-command-e2e" in r.stderr
    assert not os.path.exists(run_dir(capsule, name))
    assert wait_until(lambda: cgroup_dirs(name) == [], 10), cgroup_dirs(name)


def test_absolute_path_not_found_is_127(capsule, nothing_left):
    r = capsule.run("run", "--", "/usr/bin/no-such-command-e2e")
    assert_capsule_error(r, 127)
    assert "/usr/bin/no-such-command-e2e" in r.stderr


def test_directory_as_command_is_126(capsule, nothing_left):
    name = capsule.unique_name("dir")
    r = capsule.run("run", "--name", name, "--", "/usr")
    assert_capsule_error(r, 126)
    assert "/usr" in r.stderr
    assert not os.path.exists(run_dir(capsule, name))
    assert wait_until(lambda: cgroup_dirs(name) == [], 10), cgroup_dirs(name)


def test_non_executable_file_as_command_is_126(capsule, nothing_left):
    r = capsule.run("run", "--", "/etc/passwd")
    assert_capsule_error(r, 126)
    assert "/etc/passwd" in r.stderr


def test_missing_image_is_125_and_named(capsule, nothing_left):
    name = capsule.unique_name("img")
    r = capsule.run("run", "--name", name, "--image", "no-such-image-e2e", "--", "true")
    assert_capsule_error(r, 125)
    assert "no-such-image-e2e" in r.stderr
    assert not os.path.exists(run_dir(capsule, name))
    assert wait_until(lambda: cgroup_dirs(name) == [], 10), cgroup_dirs(name)


def test_unknown_user_names_the_user(capsule, nothing_left):
    name = capsule.unique_name("usr")
    r = capsule.run("run", "--name", name, "-u", "unknownuser", "--", "true")
    assert_capsule_error(r, 125)
    assert "unable to find user 'unknownuser'" in r.stderr
    assert not os.path.exists(run_dir(capsule, name))
    assert wait_until(lambda: cgroup_dirs(name) == [], 10), cgroup_dirs(name)


def test_unknown_user_on_exec_names_the_user(capsule, sandbox):
    r = capsule.run("exec", "-u", "unknownuser", sandbox, "true")
    assert_capsule_error(r, 125)
    assert "unable to find user 'unknownuser'" in r.stderr
    # The sandbox is fine afterwards.
    assert capsule.run("exec", sandbox, "true").returncode == 0


def test_exec_into_stopped_sandbox_is_125(capsule, sandbox):
    assert capsule.run("stop", "-t", "0", sandbox).returncode == 0
    r = capsule.run("exec", sandbox, "true")
    assert_capsule_error(r)
    assert "not running" in r.stderr


def test_rm_of_several_names_reports_the_missing_one_and_removes_the_rest(capsule, sandbox):
    r = capsule.run("rm", "-f", "no-such-sandbox-e2e", sandbox)
    assert r.returncode == 125
    assert "no-such-sandbox-e2e" in r.stderr
    assert not os.path.exists(run_dir(capsule, sandbox))


def test_help_and_version_succeed(capsule):
    r = capsule.run("version")
    assert r.returncode == 0 and r.stdout.startswith("capsule "), r.stderr
    r = capsule.run("--help")
    assert r.returncode == 0 and "run" in r.stdout
    # Every verb the global help lists: a usage line, a sentence on what it does, and its flags.
    verbs = [line.split()[0] for line in r.stdout.splitlines() if line.startswith("  ") and line.split()]
    assert len(verbs) > 20 and "kill" in verbs, verbs
    for verb in verbs:
        r = capsule.run(verb, "--help")
        assert r.returncode == 0, (verb, r.stderr)
        assert r.stdout.startswith("Usage: capsule " + verb), (verb, r.stdout)
        assert len(r.stdout.strip().splitlines()) >= 3, (verb, r.stdout)
    assert "default 10" in capsule.run("stop", "--help").stdout


def test_no_arguments_prints_usage_to_stderr_and_fails(capsule):
    r = capsule.run()
    assert r.returncode == 125
    assert r.stdout == "" and r.stderr.startswith("Usage: capsule COMMAND"), r.stderr


@pytest.mark.parametrize("verb", ["volume", "image", "saves", "port", "input"])
def test_a_verb_without_its_command_is_one_line_error(capsule, verb):
    r = capsule.run(verb)
    assert_capsule_error(r, 125)
    assert r.stdout == "" and f"capsule {verb}: no command given" in r.stderr, r.stderr


def test_help_verb_gives_that_verbs_help(capsule):
    r = capsule.run("help", "stop")
    assert r.returncode == 0 and r.stdout == capsule.run("stop", "--help").stdout
    assert r.stdout.startswith("Usage: capsule stop"), r.stdout
    r = capsule.run("help", "frobnicate")
    assert_capsule_error(r, 125)
    assert "unknown command 'frobnicate'" in r.stderr


def test_version_takes_no_argument(capsule):
    r = capsule.run("version", "--bogus")
    assert_capsule_error(r, 125)
    assert "'--bogus'" in r.stderr
    assert capsule.run("--version").stdout == capsule.run("version").stdout


def test_a_failed_run_takes_back_the_volume_it_made(capsule, nothing_left):
    # -v NAME:/path makes a missing volume, as docker does; a run that then fails (here: its
    # host port is taken) must not leave it behind.
    import socket
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen(1)
    port = held.getsockname()[1]
    try:
        vol = capsule.unique_name("vol")
        r = capsule.run("run", "-v", f"{vol}:/data", "-p", f"{port}:80", "--", "true")
        assert_capsule_error(r, 125)
        assert str(port) in r.stderr
        assert not os.path.exists(os.path.join(capsule.home, "volumes", vol))
    finally:
        held.close()
    # A volume that was there before stays.
    vol = capsule.unique_name("keep")
    capsule.run("volume", "create", vol, check=True)
    held = socket.socket()
    held.bind(("127.0.0.1", port))
    held.listen(1)
    try:
        r = capsule.run("run", "-v", f"{vol}:/data", "-p", f"{port}:80", "--", "true")
        assert_capsule_error(r, 125)
        assert os.path.isdir(os.path.join(capsule.home, "volumes", vol))
    finally:
        held.close()
        capsule.run("volume", "rm", vol, check=True)


def test_a_large_environment_has_one_limit_and_one_message_everywhere(capsule, sandbox, nothing_left):
    # It used to be a 10 s hang, "the agent exited during start" or "File too large" by route.
    many = [a for i in range(7) for a in ("-e", f"V{i}=" + "x" * 40000)]
    for args in (["run", *many, "--", "true"], ["create", *many], ["exec", *many, sandbox, "true"]):
        r = capsule.run(*args)
        assert_capsule_error(r, 125)
        assert "the environment is too large" in r.stderr and "at most 262144 in all" in r.stderr, (args[0], r.stderr)
    r = capsule.run("exec", "-e", "BIG=" + "x" * 70000, sandbox, "true")
    assert_capsule_error(r, 125)
    assert "environment variable 'BIG' is too large" in r.stderr, r.stderr
    # Just below the limits, it works.
    r = capsule.run("exec", "-e", "BIG=" + "x" * 60000, sandbox, "sh", "-c", "echo ${#BIG}")
    assert r.returncode == 0 and r.stdout == "60000\n", r.stderr


def test_run_makes_a_missing_working_directory_and_refuses_a_file(capsule, nothing_left):
    # docker's run makes it; a run that failed on it used to leave its -v volume behind.
    vol = capsule.unique_name("wd")
    r = capsule.run("run", "-v", f"{vol}:/data", "-w", "/work/deep/dir", "--", "pwd")
    try:
        assert r.returncode == 0 and r.stdout == "/work/deep/dir\n", r.stderr
    finally:
        capsule.run("volume", "rm", vol)
    r = capsule.run("run", "-w", "/etc/passwd", "--", "pwd")
    assert_capsule_error(r, 125)
    assert "working directory '/etc/passwd' is not a folder" in r.stderr
