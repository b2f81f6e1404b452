"""Errors a user makes: one line on stderr starting 'capsule', exit 125, nothing left behind."""
import os
import subprocess

import pytest

from .helpers import assert_capsule_error, cgroup_dirs, run_dir, run_entries


@pytest.fixture
def nothing_left(capsule):
    """Asserts after the test that $CAPSULE_HOME/run holds what it held before."""
    before = run_entries(capsule)
    yield
    assert run_entries(capsule) == before


BAD_INVOCATIONS = {
    "memory_bad_unit": (["run", "--memory", "512X", "true"], ["512X"]),
    "memory_bad_unit_short_flag": (["run", "-m", "512X", "true"], ["512X"]),
    "memory_below_minimum": (["run", "-m", "1M", "true"], ["too small"]),
    "memory_not_a_number": (["run", "--memory", "lots", "true"], ["lots"]),
    "cpus_not_a_number": (["run", "--cpus", "abc", "true"], ["abc"]),
    "cpus_negative": (["run", "--cpus", "-1", "true"], ["-1"]),
    "pids_limit_negative": (["run", "--pids-limit", "-1", "true"], ["-1"]),
    "pids_limit_not_a_number": (["run", "--pids-limit", "many", "true"], ["many"]),
    "unknown_long_flag": (["run", "--bogus", "true"], ["--bogus"]),
    "unknown_short_flag": (["run", "-Z", "true"], ["-Z"]),
    "unknown_flag_on_create": (["create", "--bogus"], ["--bogus"]),
    "exec_only_flag_on_create": (["create", "-w", "/tmp"], []),
    "sandbox_flag_on_exec": (["exec", "--memory", "1G", "x", "true"], ["memory"]),
    "missing_value_memory": (["run", "--memory"], []),
    "missing_value_env": (["run", "-e"], []),
    "missing_value_workdir_on_exec": (["exec", "-w"], []),
    "run_without_command": (["run"], []),
    "exec_without_sandbox": (["exec"], []),
    "unknown_command": (["frobnicate"], ["frobnicate"]),
    "bad_name_slash": (["run", "--name", "a/b", "true"], ["a/b"]),
    "bad_name_on_create": (["create", "--name", "../escape"], ["../escape"]),
    "bad_name_too_long": (["create", "--name", "x" * 100], []),
    "bad_name_leading_dash_char": (["create", "--name", ".hidden"], [".hidden"]),
    "exec_missing_sandbox": (["exec", "no-such-sandbox-e2e", "true"], ["no-such-sandbox-e2e"]),
    "rm_missing_sandbox": (["rm", "no-such-sandbox-e2e"], ["no-such-sandbox-e2e"]),
    "rm_force_missing_sandbox": (["rm", "-f", "no-such-sandbox-e2e"], ["no-such-sandbox-e2e"]),
    "start_missing_sandbox": (["start", "no-such-sandbox-e2e"], ["no-such-sandbox-e2e"]),
    "inspect_missing_sandbox": (["inspect", "no-such-sandbox-e2e"], ["no-such-sandbox-e2e"]),
    "workdir_relative": (["run", "-w", "tmp", "pwd"], ["tmp"]),
    "image_missing": (["run", "--image", "no-such-image-e2e", "true"], ["no-such-image-e2e"]),
    "image_missing_on_create": (["create", "--image", "no-such-image-e2e"], ["no-such-image-e2e"]),
    "timeout_bad": (["run", "--timeout", "soon", "true"], ["soon"]),
    "timeout_zero": (["run", "--timeout", "0s", "true"], []),
    "stop_bad_timeout": (["stop", "-t", "x", "some-sandbox"], []),
    "ps_unknown_flag": (["ps", "--bogus"], ["--bogus"]),
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
    assert cgroup_dirs(name) == []


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
    assert cgroup_dirs(name) == []


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
    assert cgroup_dirs(name) == []


def test_unknown_user_names_the_user(capsule, nothing_left):
    name = capsule.unique_name("usr")
    r = capsule.run("run", "--name", name, "-u", "unknownuser", "--", "true")
    assert r.returncode in (125, 126), (r.returncode, r.stderr)
    assert r.stderr.startswith("capsule") and r.stderr.count("\n") == 1, r.stderr
    assert "unknownuser" in r.stderr
    assert not os.path.exists(run_dir(capsule, name))
    assert cgroup_dirs(name) == []


def test_unknown_user_on_exec_names_the_user(capsule, sandbox):
    r = capsule.run("exec", "-u", "unknownuser", sandbox, "true")
    assert r.returncode in (125, 126), (r.returncode, r.stderr)
    assert "unknownuser" in r.stderr
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
    for verb in ("run", "create", "exec", "stop", "rm", "ps", "inspect", "doctor"):
        r = capsule.run(verb, "--help")
        assert r.returncode == 0, (verb, r.stderr)
        assert r.stdout.startswith("Usage: capsule " + verb), (verb, r.stdout)


def test_no_arguments_prints_usage_and_fails(capsule):
    r = capsule.run()
    assert r.returncode == 125
    assert "Usage" in r.stdout
