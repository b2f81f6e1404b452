"""Images through the SDK: Sandbox(image=...) pulls from a registry (docker-registry on
loopback, an image built here from busybox-static) and honours the image's config; the
capsule.images functions pull, list and remove."""
import asyncio
import shutil
import tempfile
import uuid

import pytest

import capsule
from capsule import Sandbox, SyncSandbox, NotFound, ImageNotFound

from sdkutil import BUILD, imageutil as iu

pytestmark = pytest.mark.skipif(not iu.agent_is_static(BUILD), reason="capsule-agent is dynamically linked (a "
                                "sanitizer build): it cannot start in an image's own root")


@pytest.fixture(autouse=True)
def _image_tools():
    iu.require_tools()


@pytest.fixture
def image_ref(registry):
    d = tempfile.mkdtemp(prefix="capsule-sdk-img-", dir="/var/tmp")
    try:
        config = {"Env": ["PATH=/bin", "FROM_IMAGE=1"], "WorkingDir": "/home/app", "User": "app"}
        lay = iu.make_layout(d, [iu.busybox_layer(), iu.layer_tar([iu.Entry("etc/os-release", data=b"ID=sdk\n")])],
                             config)
        yield registry.push(lay, f"sdk/img-{uuid.uuid4().hex[:8]}")
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_sync_sandbox_from_an_image_pulls_it_and_uses_its_config(image_ref):
    with SyncSandbox(image=image_ref) as sb:
        assert sb.execute("cat /etc/os-release").stdout == "ID=sdk\n"
        r = sb.execute("echo $FROM_IMAGE; pwd; id -un")
        assert r.stdout.split() == ["1", "/home/app", "app"]
    assert image_ref in [i["name"] for i in capsule.images.list()]


def test_async_sandbox_from_an_image(image_ref):
    async def main():
        async with Sandbox(image=image_ref) as sb:
            return (await sb.execute("cat /etc/os-release")).stdout
    assert asyncio.run(main()) == "ID=sdk\n"


def test_images_pull_list_remove(registry):
    # A layer of its own, which no earlier test stored: this pull must download, verify and
    # unpack it, and say so, in that order.
    d = tempfile.mkdtemp(prefix="capsule-sdk-img-", dir="/var/tmp")
    try:
        own = iu.layer_tar([iu.Entry("etc/unique", data=uuid.uuid4().hex.encode())])
        image_ref = registry.push(iu.make_layout(d, [iu.busybox_layer(), own], {"Env": ["PATH=/bin"]}),
                                  f"sdk/pull-{uuid.uuid4().hex[:8]}")
    finally:
        shutil.rmtree(d, ignore_errors=True)
    seen = []
    name = capsule.images.pull(image_ref, progress=lambda stage, digest, done, total: seen.append((stage, digest)))
    assert name == image_ref
    fresh = [dg for stage, dg in seen if stage == "unpack"]
    assert fresh, seen
    stages = [stage for stage, dg in seen if dg == fresh[-1]]
    assert "download" in stages and stages.index("download") < stages.index("verify") < stages.index("unpack"), stages
    entry = [i for i in capsule.images.list() if i["name"] == name][0]
    assert len(entry["layers"]) == 2 and entry["digest"].startswith("sha256:")
    capsule.images.remove(name)
    assert name not in [i["name"] for i in capsule.images.list()]
    with pytest.raises(NotFound):
        capsule.images.remove(name)


def test_missing_image_raises_image_not_found(registry):
    with pytest.raises(ImageNotFound):
        with SyncSandbox(image=f"{registry.host}/sdk/none:nope"):
            pass
