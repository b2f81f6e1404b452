"""capsule cp and links a sandbox made on the host (docs/security.md, "cp follows no host link").

A copy out of a sandbox makes host links whose targets the sandbox chose. The rule under test:
no later copy, in either direction, is steered by such a link, whether it is named with a
trailing slash or sits in the middle of a host path; and modes that a copy out makes give no
other host user write access or privilege."""
import os
import shutil
import stat
import tempfile
import uuid

import pytest

from secutil import sh


def assert_refused(r, needle="symlink"):
    assert r.returncode == 125, f"exit {r.returncode}: {r.stderr!r}"
    lines = r.stderr.strip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith("capsule") and needle in lines[0], r.stderr


@pytest.fixture
def canary():
    """A host folder (the /some/host/dir of the attack) holding a secret: no copy may add to
    it, change it, or carry its secret into a sandbox."""
    marker = f"HOST-SECRET-{uuid.uuid4().hex}"
    d = tempfile.mkdtemp(prefix="capsule-cp-canary-", dir="/var/tmp")
    with open(os.path.join(d, "secret"), "w") as f:
        f.write(marker + "\n")
    yield d, marker
    shutil.rmtree(d, ignore_errors=True)


def assert_untouched(canary):
    d, marker = canary
    assert os.listdir(d) == ["secret"], f"a copy wrote into the host folder a link named: {os.listdir(d)}"
    with open(os.path.join(d, "secret")) as f:
        assert f.read() == marker + "\n"


@pytest.fixture
def copied_out(mod_capsule, shared_sandbox, canary):
    """A sandbox folder with an absolute link and a relative link that leaves it, both to the
    host canary, copied out the ordinary way: the links arrive as links (as docker cp makes
    them), so the later copies below are what must not follow them."""
    d, _ = canary
    tag = uuid.uuid4().hex[:8]
    inside = f"/tmp/results-{tag}"
    sh(mod_capsule, shared_sandbox, f"mkdir -p {inside}/deep && ln -s {d} {inside}/logs && "
       f"ln -s ../../../../../../../..{d} {inside}/deep/up && echo pwned > /tmp/evil-{tag}.log", check=True)
    out = tempfile.mkdtemp(prefix="capsule-cp-out-", dir="/var/tmp")
    results = os.path.join(out, "results")
    mod_capsule.run("cp", f"{shared_sandbox}:{inside}", results, check=True)
    assert os.readlink(os.path.join(results, "logs")) == d
    assert os.readlink(os.path.join(results, "deep", "up")) == "../../../../../../../.." + d
    yield results, f"{shared_sandbox}:/tmp/evil-{tag}.log", tag
    shutil.rmtree(out, ignore_errors=True)


def test_a_copied_link_named_with_a_trailing_slash_is_refused(mod_capsule, copied_out, canary):
    results, evil, _ = copied_out
    for dst in ("logs/", "logs//", "deep/up/", "logs/."):
        assert_refused(mod_capsule.run("cp", evil, os.path.join(results, dst)))
    assert_untouched(canary)
    # A real folder named with a trailing slash is still copied into.
    mod_capsule.run("cp", evil, os.path.join(results, "deep") + "/", check=True)
    assert sorted(os.listdir(os.path.join(results, "deep"))) == sorted(["up", os.path.basename(evil.split(":")[1])])


def test_a_copied_link_in_the_middle_of_a_host_path_is_refused(mod_capsule, copied_out, canary):
    results, evil, _ = copied_out
    for dst in ("logs/new.log", "deep/up/new.log", "logs/secret", "logs/../results/x"):
        assert_refused(mod_capsule.run("cp", evil, os.path.join(results, dst)))
    assert_untouched(canary)


def test_a_copied_link_in_a_host_source_path_does_not_leak_into_the_sandbox(mod_capsule, shared_sandbox,
                                                                           copied_out, canary):
    results, _, tag = copied_out
    _, marker = canary
    for i, src in enumerate(("logs/secret", "deep/up/secret", "logs/.", "logs/")):
        assert_refused(mod_capsule.run("cp", os.path.join(results, src), f"{shared_sandbox}:/tmp/leak-{tag}-{i}"))
    r = sh(mod_capsule, shared_sandbox, f"cat /tmp/leak-{tag}-* /tmp/leak-{tag}-*/* 2>/dev/null; true")
    assert marker not in r.stdout
    # The link itself, named without a slash, still goes in as a link (the user's choice).
    mod_capsule.run("cp", os.path.join(results, "logs"), f"{shared_sandbox}:/tmp/link-{tag}", check=True)
    r = sh(mod_capsule, shared_sandbox, f"readlink /tmp/link-{tag}", check=True)
    assert r.stdout.strip() == canary[0]


def test_a_copy_out_drops_set_id_sticky_and_write_for_others(mod_capsule, shared_sandbox):
    tag = uuid.uuid4().hex[:8]
    m = f"/tmp/modes-{tag}"
    # No command can make a set-id file (test_host_folder_security.py); the image can bring
    # one: the host image's su is set-uid root.
    sh(mod_capsule, shared_sandbox,
       f"mkdir -p {m}/sticky {m}/kept && echo x > {m}/open && chmod 0777 {m} {m}/open {m}/kept && "
       f"chmod 1777 {m}/sticky && test -u /usr/bin/su", check=True)
    out = tempfile.mkdtemp(prefix="capsule-cp-modes-", dir="/var/tmp")
    try:
        # A folder already on the host keeps the mode its owner gave it.
        os.makedirs(os.path.join(out, f"modes-{tag}", "kept"))
        os.chmod(os.path.join(out, f"modes-{tag}", "kept"), 0o700)
        os.chmod(os.path.join(out, f"modes-{tag}"), 0o700)
        mod_capsule.run("cp", f"{shared_sandbox}:{m}", out, check=True)
        mod_capsule.run("cp", f"{shared_sandbox}:/usr/bin/su", os.path.join(out, "su"), check=True)
        got = {}
        for dirpath, dirnames, filenames in os.walk(out):
            for n in dirnames + filenames:
                p = os.path.join(dirpath, n)
                got[os.path.relpath(p, out)] = stat.S_IMODE(os.lstat(p).st_mode)
        top = f"modes-{tag}"
        want = {top: 0o700, f"{top}/kept": 0o700, f"{top}/sticky": 0o755, f"{top}/open": 0o755, "su": 0o755}
        assert got == want, {k: oct(v) for k, v in got.items()}
    finally:
        shutil.rmtree(out, ignore_errors=True)
