"""A hostile registry (docs/security.md, "Registry names, deadlines, layer and store limits"):
a server that drips a blob to hold a pull and its blob's lock for as long as it likes, layers
that are small to download and huge to unpack or hold too many entries, and pulls past a cap
on the store.
The limits are set short through the registry configuration's "limits", and each pull must
fail with that limit's message and leave the store whole: no half layer, nothing but the
documented resumable download. Which names count
as loopback (plain HTTP) is decided by a pure function, tested in tests/unit/test_image_parse.c
without any name lookup. Every server here is on 127.0.0.1."""
import importlib.util
import json
import os
import shutil
import tarfile
import subprocess
import tempfile
import time
import uuid

import pytest

_IU = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "e2e", "imageutil.py")
_spec = importlib.util.spec_from_file_location("capsule_tests_imageutil", _IU)
iu = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(iu)

registry = iu.registry  # the real docker-registry on loopback, one per module

# Under the old code a dripping pull never ended: this bound turns that into a failure.
HUNG = 90


def limits(tmp_path, **values):
    path = os.path.join(str(tmp_path), f"registries-{uuid.uuid4().hex[:8]}.json")
    with open(path, "w") as f:
        json.dump({"limits": values}, f)
    return {"CAPSULE_REGISTRY_CONFIG": path}


def images(home, *parts):
    return os.path.join(home, "images", *parts)


def leftovers(home):
    """What tmp/ holds besides resumable downloads: half layers, imports."""
    tmp = images(home, "tmp")
    return [n for n in os.listdir(tmp) if not n.endswith(".partial")] if os.path.isdir(tmp) else []


@pytest.fixture
def own_home():
    """A capsule home of the test's own: the store cap is on what the store already holds, and
    the session's store holds what other tests pulled."""
    home = tempfile.mkdtemp(prefix="capsule-store-", dir="/var/tmp")
    os.chmod(home, 0o711)
    yield home
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def dripping(tmp_path):
    """A registry whose one layer (4 KiB: over 15 minutes at 4 bytes a second) drips."""
    payload = iu.layer_tar([iu.Entry("slow", data=os.urandom(4096))])
    lay = iu.make_layout(str(tmp_path), [payload], compression=None)
    digest = iu.sha(payload)
    reg = iu.FakeRegistry(lay, drip=[digest])
    reg.layer_digest, reg.layout = digest, lay
    yield reg
    reg.stop()


def pull_dripping(capsule, reg, env):
    return capsule.run("image", "pull", f"{reg.host}/test/drip:t", env=env, timeout=HUNG)


def test_dripping_blob_fails_at_the_transfer_deadline(capsule, dripping, tmp_path):
    r = pull_dripping(capsule, dripping, limits(tmp_path, transfer_seconds=2))
    assert r.returncode == 125, r.stdout + r.stderr
    assert f"blob '{dripping.layer_digest}' of 'test/drip': no complete answer within 2 s" in r.stderr, r.stderr
    assert '"transfer_seconds"' in r.stderr


def test_dripping_blob_fails_at_the_pull_deadline_and_the_store_resumes(capsule, dripping, tmp_path):
    r = pull_dripping(capsule, dripping, limits(tmp_path, pull_seconds=3))
    assert r.returncode == 125, r.stdout + r.stderr
    assert f"blob '{dripping.layer_digest}' of 'test/drip': the pull passed its deadline of 3 s" in r.stderr, r.stderr
    # What came stays as the documented resumable download, nothing else; the blob's lock went
    # with the pull, so a pull from a server that answers finishes it.
    partial = images(capsule.home, "tmp", dripping.layer_digest[7:] + ".partial")
    assert os.path.getsize(partial) > 0
    assert leftovers(capsule.home) == []
    assert not os.path.exists(images(capsule.home, "layers", dripping.layer_digest[7:]))
    honest = iu.FakeRegistry(dripping.layout)
    try:
        r = capsule.run("image", "pull", f"{honest.host}/test/drip:t", timeout=HUNG)
        assert r.returncode == 0, r.stderr
        assert any("Range" in h for p, h in honest.requests if dripping.layer_digest in p)
    finally:
        honest.stop()
    assert os.path.isdir(images(capsule.home, "layers", dripping.layer_digest[7:]))
    assert not os.path.exists(partial) and leftovers(capsule.home) == []


def test_a_pull_waiting_for_another_pulls_download_gives_up_at_its_deadline(capsule, dripping, tmp_path):
    ref = f"{dripping.host}/test/drip:t"
    holder = capsule.popen("image", "pull", ref, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           env={**capsule.env, **limits(tmp_path, transfer_seconds=120)})
    try:
        # The holder writes the download only once it has the blob's lock.
        partial = images(capsule.home, "tmp", dripping.layer_digest[7:] + ".partial")
        for _ in range(300):
            if os.path.exists(partial) and os.path.getsize(partial) > 0:
                break
            time.sleep(0.1)
        assert holder.poll() is None
        r = pull_dripping(capsule, dripping, limits(tmp_path, pull_seconds=2))
        assert r.returncode == 125, r.stdout + r.stderr
        assert f"blob '{dripping.layer_digest}' of 'test/drip': another pull was still downloading it" in r.stderr, \
            r.stderr
    finally:
        holder.kill()
        holder.wait()


def test_dripping_blob_fails_as_a_stall(capsule, dripping, tmp_path):
    r = pull_dripping(capsule, dripping, limits(tmp_path, stall_seconds=1))
    assert r.returncode == 125, r.stdout + r.stderr
    assert f"blob '{dripping.layer_digest}' of 'test/drip': the transfer stalled" in r.stderr, r.stderr


def test_gzip_bomb_layer_is_refused_and_leaves_no_half_layer(capsule, registry, tmp_path):
    # 64 MiB of zeros, about 64 KiB gzipped, against a 1 MiB cap.
    bomb = iu.layer_tar([iu.Entry("zeros", data=bytes(64 << 20))])
    lay = iu.make_layout(str(tmp_path), [bomb], tag="bomb")
    ref = registry.push(lay, f"test/bomb-{uuid.uuid4().hex[:8]}", tag="bomb")
    gz = iu.sha(iu.compress(bomb, "gzip"))
    r = capsule.run("image", "pull", ref, env=limits(tmp_path, layer_bytes=1 << 20), timeout=HUNG)
    assert r.returncode == 125, r.stdout + r.stderr
    assert f"layer '{gz[:19]}' is larger than 1048576 bytes decompressed" in r.stderr, r.stderr
    error = [line for line in r.stderr.splitlines() if line.startswith("capsule: ")]
    assert len(error) == 1 and '"layer_bytes"' in error[0], r.stderr
    assert not os.path.exists(images(capsule.home, "layers", gz[7:]))
    assert leftovers(capsule.home) == []
    r = capsule.run("image", "ls", "--json")
    assert ref not in r.stdout


def test_gzip_bomb_layer_in_an_imported_archive_is_refused(capsule, tmp_path):
    bomb = iu.layer_tar([iu.Entry("zeros", data=bytes(16 << 20))])
    lay = iu.make_layout(str(tmp_path), [bomb])
    archive = os.path.join(str(tmp_path), "bomb.tar")
    with tarfile.open(archive, "w") as t:
        for name in ("oci-layout", "index.json", "blobs"):
            t.add(os.path.join(lay.path, name), arcname=name)
    gz = iu.sha(iu.compress(bomb, "gzip"))
    r = capsule.run("image", "import", archive, "--name", "bomb/import:1", env=limits(tmp_path, layer_bytes=1 << 20))
    assert r.returncode == 125, r.stdout + r.stderr
    assert f"layer '{gz[:19]}' is larger than 1048576 bytes decompressed" in r.stderr, r.stderr
    assert not os.path.exists(images(capsule.home, "layers", gz[7:]))
    assert leftovers(capsule.home) == []


def test_layer_with_too_many_entries_is_refused(capsule, registry, tmp_path):
    many = iu.layer_tar([iu.Entry(f"f{i}", data=b"x") for i in range(200)])
    lay = iu.make_layout(str(tmp_path), [many], tag="many")
    ref = registry.push(lay, f"test/many-{uuid.uuid4().hex[:8]}", tag="many")
    gz = iu.sha(iu.compress(many, "gzip"))
    r = capsule.run("image", "pull", ref, env=limits(tmp_path, layer_entries=100), timeout=HUNG)
    assert r.returncode == 125, r.stdout + r.stderr
    assert f"layer '{gz[:19]}' has more than 100 entries" in r.stderr, r.stderr
    assert not os.path.exists(images(capsule.home, "layers", gz[7:]))
    assert leftovers(capsule.home) == []


@pytest.mark.parametrize("bad", [0, -1, "60", 1.5])
def test_a_limit_that_is_not_a_positive_whole_number_is_refused(capsule, dripping, tmp_path, bad):
    honest = iu.FakeRegistry(dripping.layout)
    try:
        r = capsule.run("image", "pull", f"{honest.host}/test/drip:t", env=limits(tmp_path, pull_seconds=bad))
    finally:
        honest.stop()
    assert r.returncode == 125, r.stdout + r.stderr
    assert "limits 'pull_seconds' must be a positive whole number" in r.stderr, r.stderr
    assert not os.path.isdir(images(capsule.home, "layers", dripping.layer_digest[7:]))


def test_a_blob_past_the_store_cap_is_not_downloaded(capsule, registry, tmp_path, own_home):
    big = iu.layer_tar([iu.Entry("noise", data=os.urandom(256 << 10))])
    lay = iu.make_layout(str(tmp_path), [big], tag="big", compression=None)
    ref = registry.push(lay, f"test/big-{uuid.uuid4().hex[:8]}", tag="big")
    cap = {**limits(tmp_path, store_bytes=128 << 10), "CAPSULE_HOME": own_home}
    r = capsule.run("image", "pull", ref, env=cap, timeout=HUNG)
    assert r.returncode == 125, r.stdout + r.stderr
    digest = iu.sha(big)
    assert f"blob '{digest}' of '" in r.stderr and "would take the image store past 131072 bytes" in r.stderr, r.stderr
    assert '"store_bytes"' in r.stderr
    assert not os.path.exists(images(own_home, "blobs", "sha256", digest[7:]))
    assert not os.path.exists(images(own_home, "tmp", digest[7:] + ".partial"))


def test_a_layer_that_unpacks_past_the_store_cap_is_refused_and_earlier_images_stay(capsule, registry, tmp_path,
                                                                                    own_home):
    small = iu.layer_tar([iu.Entry("small", data=b"first\n")])
    first = registry.push(iu.make_layout(str(tmp_path), [small], tag="a"), f"test/a-{uuid.uuid4().hex[:8]}", tag="a")
    cap = {**limits(tmp_path, store_bytes=4 << 20), "CAPSULE_HOME": own_home}
    r = capsule.run("image", "pull", first, env=cap, timeout=HUNG)
    assert r.returncode == 0, r.stderr
    # Downloads in a few KiB, unpacks to 16 MiB: the store has 4 MiB.
    bomb = iu.layer_tar([iu.Entry("zeros", data=bytes(16 << 20))])
    second = registry.push(iu.make_layout(str(tmp_path), [bomb], tag="b"), f"test/b-{uuid.uuid4().hex[:8]}", tag="b")
    r = capsule.run("image", "pull", second, env=cap, timeout=HUNG)
    assert r.returncode == 125, r.stdout + r.stderr
    gz = iu.sha(iu.compress(bomb, "gzip"))
    assert f"layer '{gz[:19]}' is larger than" in r.stderr and 'what is left of "store_bytes"' in r.stderr, r.stderr
    assert not os.path.exists(images(own_home, "layers", gz[7:])) and leftovers(own_home) == []
    r = capsule.run("image", "ls", "--json", env={"CAPSULE_HOME": own_home})
    assert first in r.stdout and second not in r.stdout
