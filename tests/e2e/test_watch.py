"""capsule watch: a folder's changes streamed as JSON lines from inside the sandbox (inotify in
its agent), recursive or not, moves paired, an overflow reported when the reader falls behind,
the end when the watched folder goes; at the vm level, what the host writes in a 9p share is
not seen (the guest's kernel does not hear of it)."""
import json
import os
import select
import subprocess
import time

import pytest

from .helpers import assert_capsule_error

pytestmark = pytest.mark.both_levels


class Watch:
    """`capsule watch --json` running beside the test, its lines read with a timeout."""

    def __init__(self, capsule, name, path, *flags):
        self.capsule, self.name = capsule, name
        self.p = capsule.popen("watch", "--json", *flags, name, path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.buf = b""

    def line(self, timeout=60):
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.p.stdout], [], [], left)[0]:
                raise AssertionError(f"no event within {timeout} s")
            chunk = os.read(self.p.stdout.fileno(), 65536)
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def ready(self, marker_dir):
        """Touch markers until the watch reports one: from then on, every change is seen."""
        for i in range(600):
            self.capsule.run("exec", self.name, "touch", f"{marker_dir}/.ready{i}")
            try:
                e = self.line(timeout=0.5)
            except AssertionError:
                continue
            assert e["path"].startswith(f"{marker_dir}/.ready"), e
            self.drain_markers(marker_dir)
            return
        raise AssertionError("the watch never started")

    def drain_markers(self, marker_dir):
        try:
            while True:
                e = self.line(timeout=0.5)
                assert e["path"].startswith(f"{marker_dir}/.ready"), e
        except AssertionError as err:
            if "no event" not in str(err):
                raise

    def until(self, path, timeout=60):
        """The events up to and including the first one on PATH."""
        got = []
        while True:
            e = self.line(timeout)
            assert e is not None, f"the watch ended before {path}: {got}"
            got.append(e)
            if e.get("path") == path:
                return got

    def close(self):
        if self.p.poll() is None:
            self.p.terminate()
        self.p.wait(timeout=30)


def kinds(events):
    return [(e["kind"], e.get("from"), e["path"]) for e in events]


@pytest.mark.vm_in_check
def test_recursive_watch_reports_creates_modifies_moves_and_deletes(capsule, sandbox):
    capsule.run("exec", sandbox, "mkdir", "-p", "/w1")
    w = Watch(capsule, sandbox, "/w1", "--recursive")
    try:
        w.ready("/w1")
        # A new folder is watched once its create is reported; what is made in it before
        # that is reported by a scan, as created only: so the rest waits for it.
        assert capsule.run("exec", sandbox, "mkdir", "/w1/d").returncode == 0
        events = w.until("/w1/d")
        r = capsule.run("exec", sandbox, "sh", "-c", "echo x > /w1/d/f && mv /w1/d/f /w1/d/g && "
                        "rm /w1/d/g && rmdir /w1/d && touch /w1/end")
        assert r.returncode == 0, r.stderr
        events += w.until("/w1/end")
        assert kinds(events) == [("create", None, "/w1/d"), ("create", None, "/w1/d/f"), ("modify", None, "/w1/d/f"),
                                 ("move", "/w1/d/f", "/w1/d/g"), ("delete", None, "/w1/d/g"), ("delete", None, "/w1/d"),
                                 ("create", None, "/w1/end")]
        assert events[0]["dir"] is True and events[1]["dir"] is False
        assert events[0]["time"].endswith("Z") and events[0]["time_ns"] > 0
        # The watched folder going ends the watch, after its own delete.
        r = capsule.run("exec", sandbox, "rm", "-rf", "/w1")
        assert r.returncode == 0, r.stderr
        tail = w.until("/w1")
        assert tail[-1]["kind"] == "delete"
        assert w.line() is None
        assert w.p.wait(timeout=30) == 0
    finally:
        w.close()


def test_plain_watch_sees_its_folder_only_and_names_are_exact(capsule, sandbox):
    capsule.run("exec", sandbox, "mkdir", "-p", "/w2/sub")
    w = Watch(capsule, sandbox, "/w2")
    try:
        w.ready("/w2")
        r = capsule.run("exec", sandbox, "sh", "-c", "touch /w2/sub/deep; touch '/w2/two\nlines'; touch /w2/end")
        assert r.returncode == 0, r.stderr
        assert kinds(w.until("/w2/end")) == [("create", None, "/w2/two\nlines"), ("create", None, "/w2/end")]
    finally:
        w.close()


@pytest.mark.container_only
def test_a_reader_that_falls_behind_gets_an_overflow_then_events_again(capsule, sandbox):
    capsule.run("exec", sandbox, "mkdir", "-p", "/w3")
    w = Watch(capsule, sandbox, "/w3")
    try:
        w.ready("/w3")
        # Nothing is read meanwhile: the client's credit (1 MiB of records) and the kernel's
        # queue (16384 events) both fill; 200,000 renames are far past the two.
        r = capsule.run("exec", sandbox, "python3", "-c",
                        "import os\nopen('/w3/a', 'w').close()\n"
                        "for i in range(100000): os.rename('/w3/a', '/w3/b'); os.rename('/w3/b', '/w3/a')\n",
                        timeout=300)
        assert r.returncode == 0, r.stderr
        events = []
        while not events or events[-1]["kind"] != "overflow":
            e = w.line(timeout=120)
            assert e is not None
            events.append(e)
        assert "path" not in events[-1] and len(events) < 200000
        # What happened while the queue was full is what the overflow stands for; events
        # come again once the reader has caught up.
        capsule.run("exec", sandbox, "touch", "/w3/after")
        assert w.until("/w3/after", timeout=120)[-1]["kind"] == "create"
    finally:
        w.close()


def test_watch_errors_are_one_line(capsule, sandbox):
    r = capsule.run("watch", sandbox, "/no/such/folder", timeout=60)
    assert_capsule_error(r)
    assert "No such file or directory" in r.stderr
    r = capsule.run("watch", sandbox, "relative", timeout=60)
    assert_capsule_error(r)
    r = capsule.run("watch", sandbox)
    assert_capsule_error(r)
    r = capsule.run("watch", "--bogus", sandbox, "/")
    assert_capsule_error(r)


@pytest.mark.container_only
def test_watch_of_a_paused_or_stopped_sandbox_is_refused(capsule):
    name = capsule.create()
    assert capsule.run("pause", name).returncode == 0
    r = capsule.run("watch", name, "/root")
    assert_capsule_error(r)
    assert r.stderr.strip() == f"capsule: sandbox '{name}' is paused: resume it first"
    assert capsule.run("stop", name).returncode == 0
    r = capsule.run("watch", name, "/root")
    assert_capsule_error(r)


@pytest.mark.vm_slow
def test_vm_host_side_changes_in_a_share_are_not_seen(capsule, tmp_path):
    if capsule.isolation != "vm":
        pytest.skip("the 9p share is the vm level's")
    share = tmp_path / "share"
    share.mkdir()
    os.chmod(share, 0o777)
    name = capsule.create("-v", f"{share}:/mnt/h")
    w = Watch(capsule, name, "/mnt/h")
    try:
        w.ready("/mnt/h")
        (share / "from-host").write_text("host\n")
        r = capsule.run("exec", name, "touch", "/mnt/h/from-guest")
        assert r.returncode == 0, r.stderr
        assert kinds(w.until("/mnt/h/from-guest")) == [("create", None, "/mnt/h/from-guest")]
    finally:
        w.close()
