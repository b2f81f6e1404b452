"""The status line a person sees at a terminal while a start, a save or an import takes a
while: shown (at once with CAPSULE_PROGRESS=1; after a moment by default), erased before the
command's own output, never written when stderr is no terminal or with CAPSULE_PROGRESS=0."""
import os
import pty
import subprocess

ERASE = b"\r\x1b[K"


def on_a_terminal(capsule, *args, progress=None):
    """Run the CLI with a pty as its stdin, stdout and stderr; all it wrote, and its status."""
    env = dict(capsule.env)
    env.pop("CAPSULE_PROGRESS", None)
    if progress is not None:
        env["CAPSULE_PROGRESS"] = progress
    master, slave = pty.openpty()
    p = subprocess.Popen([capsule.binary, *args], stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the last writer is gone
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    return out, p.wait(timeout=120)


def test_a_start_shows_its_stage_then_erases_it_before_the_output(capsule):
    out, rc = on_a_terminal(capsule, "run", "--", "echo", "hello", progress="1")
    assert rc == 0, out
    assert b"starting the sandbox" in out, out
    # The line was erased last, and the command's output starts on a clean line.
    assert out.rsplit(ERASE, 1)[1] == b"hello\r\n", out


def test_a_save_shows_what_it_does(capsule):
    name = capsule.create()
    save = capsule.unique_name("sv")
    try:
        out, rc = on_a_terminal(capsule, "save", name, save, progress="1")
        assert rc == 0, out
        assert f"saving '{name}' as '{save}'".encode() in out, out
        assert out.rsplit(ERASE, 1)[1] == f"{save}\r\n".encode(), out
    finally:
        capsule.run("saves", "rm", save)


def test_an_error_starts_on_a_clean_line(capsule):
    out, rc = on_a_terminal(capsule, "run", "--", "no-such-command-progress", progress="1")
    assert rc == 127, out
    assert out.rsplit(ERASE, 1)[1].startswith(b"capsule: "), out


def test_no_status_without_a_terminal_or_with_progress_0(capsule):
    r = capsule.run("run", "--", "echo", "hello", env={"CAPSULE_PROGRESS": "1"})
    assert r.returncode == 0 and r.stderr == "" and r.stdout == "hello\n", r.stderr
    out, rc = on_a_terminal(capsule, "run", "--", "echo", "hello", progress="0")
    assert rc == 0 and out == b"hello\r\n", out
    # By default a quick start shows nothing: a line that flashes by is noise.
    out, rc = on_a_terminal(capsule, "run", "--", "echo", "hello")
    assert rc == 0 and b"hello\r\n" in out, out
