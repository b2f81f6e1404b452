"""OCI images: pull from a real registry (docker-registry on loopback), import archives, run
them with their config, and the store's ls/rm/dedup. Images are built here from busybox-static."""
import json
import os
import subprocess
import tarfile
import time
import uuid

import pytest

from .helpers import assert_capsule_error
from .imageutil import (Entry, Layout, auth_registry, busybox_entries, busybox_layer, free_port, layer_tar,  # noqa: F401
                        image_tools, make_layout, need_static_agent, needs_tools, registry, workdir)

pytestmark = needs_tools


def repo(prefix="img"):
    return f"test/{prefix}-{uuid.uuid4().hex[:8]}"


def store(capsule, *parts):
    return os.path.join(capsule.home, "images", *parts)


def pull(capsule, ref, *args, env=None):
    r = capsule.run("image", "pull", ref, *args, env=env, timeout=180)
    assert r.returncode == 0, r.stderr
    return r


def run_image(capsule, ref, *cmd, extra=()):
    need_static_agent(capsule.build)
    return capsule.run("run", *extra, "--image", ref, *(["--", *cmd] if cmd else []), timeout=120)


def manifest_of(capsule, ref):
    for img in json.loads(capsule.run("image", "ls", "--json", check=True).stdout):
        if img["name"] == ref:
            return img
    return None


def test_pull_then_run_uses_the_images_root(capsule, registry, workdir):
    lay = make_layout(workdir, [busybox_layer(), layer_tar([Entry("etc/os-release", data=b"NAME=capsule-test\n")])])
    ref = registry.push(lay, repo())
    r = pull(capsule, ref)
    assert r.stdout.strip() == ref
    r = run_image(capsule, ref, "cat", "/etc/os-release")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "NAME=capsule-test\n"
    # The root is the image alone: the host's /usr is not there.
    r = run_image(capsule, ref, "sh", "-c", "test -e /usr/bin || echo no-usr")
    assert r.stdout.strip() == "no-usr", r.stderr


def test_run_pulls_an_image_it_does_not_have(capsule, registry, workdir):
    ref = registry.push(make_layout(workdir, [busybox_layer()]), repo())
    assert manifest_of(capsule, ref) is None
    r = run_image(capsule, ref, "echo", "pulled-on-demand")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "pulled-on-demand\n"
    assert manifest_of(capsule, ref) is not None


def test_image_config_env_workdir_user_and_default_command(capsule, registry, workdir):
    config = {"Env": ["PATH=/bin", "GREETING=from-image"], "WorkingDir": "/home/app", "User": "app",
              "Cmd": ["sh", "-c", "echo $GREETING; pwd; id -u"]}
    ref = registry.push(make_layout(workdir, [busybox_layer()], config), repo())
    r = run_image(capsule, ref)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["from-image", "/home/app", "1000"]
    # -e, -w and -u override the image's.
    r = run_image(capsule, ref, "sh", "-c", "echo $GREETING; pwd; id -u",
                  extra=("-e", "GREETING=mine", "-w", "/tmp", "-u", "0"))
    assert r.stdout.split() == ["mine", "/tmp", "0"], r.stderr
    # exec in a sandbox made from the image gets the same defaults.
    need_static_agent(capsule.build)
    name = capsule.create("--image", ref)
    r = capsule.run("exec", name, "sh", "-c", "echo $GREETING; pwd; id -un")
    assert r.stdout.split() == ["from-image", "/home/app", "app"], r.stderr


def test_a_save_of_an_image_keeps_its_config(capsule, registry, workdir):
    """Like docker commit: a sandbox started from a save of an image gets the image's Env,
    WorkingDir, User and Cmd, and the saved sandbox's own -e; a new -e still wins."""
    config = {"Env": ["PATH=/bin", "GREETING=from-image"], "WorkingDir": "/home/app", "User": "app",
              "Cmd": ["sh", "-c", "echo $GREETING $EXTRA; pwd; id -u; cat /home/app/note"]}
    ref = registry.push(make_layout(workdir, [busybox_layer()], config), repo())
    save = "s-" + uuid.uuid4().hex[:8]
    r = run_image(capsule, ref, "sh", "-c", "echo saved > /home/app/note", extra=("--save", save, "-e", "EXTRA=kept"))
    assert r.returncode == 0, r.stderr
    r = run_image(capsule, save)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["from-image", "kept", "/home/app", "1000", "saved"]
    r = run_image(capsule, save, "sh", "-c", "echo $GREETING", extra=("-e", "GREETING=mine"))
    assert r.stdout == "mine\n", r.stderr


def test_entrypoint_takes_the_run_arguments(capsule, registry, workdir):
    config = {"Entrypoint": ["echo", "entry:"], "Cmd": ["default-arg"]}
    ref = registry.push(make_layout(workdir, [busybox_layer()], config), repo())
    assert run_image(capsule, ref).stdout == "entry: default-arg\n"
    assert run_image(capsule, ref, "given", "args").stdout == "entry: given args\n"


def test_image_without_a_command_and_none_given_is_refused(capsule, registry, workdir):
    ref = registry.push(make_layout(workdir, [busybox_layer()]), repo())
    r = run_image(capsule, ref)
    assert r.returncode == 125
    assert "no command given" in r.stderr


def test_multi_arch_index_picks_linux_amd64_or_the_platform_asked(capsule, registry, workdir):
    lay = Layout(os.path.join(workdir, "multi"))
    arm = lay.image([busybox_layer(), layer_tar([Entry("arch", data=b"arm64\n")])], arch="arm64")
    amd = lay.image([busybox_layer(), layer_tar([Entry("arch", data=b"amd64\n")])], arch="amd64")
    lay.index([arm, amd], "t")
    ref = registry.push(lay, repo("multi"), all_images=True)
    pull(capsule, ref)
    assert run_image(capsule, ref, "cat", "/arch").stdout == "amd64\n"
    pull(capsule, ref, "--platform", "linux/arm64")
    # The arm64 variant's layer (busybox is amd64 in both here, so it runs).
    assert run_image(capsule, ref, "cat", "/arch").stdout == "arm64\n"
    r = capsule.run("image", "pull", ref, "--platform", "linux/s390x")
    assert r.returncode == 125
    assert "no variant for platform 'linux/s390x'" in r.stderr


def test_a_platform_is_checked_in_form_and_on_a_single_platform_image(capsule, registry, workdir):
    # It used to be accepted, and ignored, whenever the image was not an index.
    ref = registry.push(make_layout(workdir, [busybox_layer()]), repo("single"))
    for bad in ("bogus", "linux/", "/amd64", "linux/amd64/v8/x", "Linux/AMD64"):
        r = capsule.run("image", "pull", "-q", ref, "--platform", bad)
        assert_capsule_error(r, 125)
        assert f"invalid platform '{bad}'" in r.stderr, r.stderr
    r = capsule.run("image", "pull", "-q", ref, "--platform", "linux/arm64")
    assert_capsule_error(r, 125)
    assert "is for linux/amd64, not linux/arm64" in r.stderr, r.stderr
    assert ref not in capsule.run("image", "ls", check=True).stdout
    pull(capsule, ref, "--platform", "linux/amd64")


def test_whiteouts_and_opaque_folders_hide_lower_files(capsule, registry, workdir):
    lower = layer_tar([Entry("data", "dir", mode=0o755), Entry("data/a", data=b"a"), Entry("data/b", data=b"b"),
                       Entry("opq", "dir", mode=0o755), Entry("opq/x", data=b"x"), Entry("opq/y", data=b"y")])
    upper = layer_tar([Entry("data/.wh.a", data=b""), Entry("opq", "dir", mode=0o755),
                       Entry("opq/.wh..wh..opq", data=b""), Entry("opq/z", data=b"z")])
    ref = registry.push(make_layout(workdir, [busybox_layer(), lower, upper]), repo("wh"))
    r = run_image(capsule, ref, "sh", "-c", "ls /data; echo --; ls /opq")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["b", "--", "z"]
    # In the store they are overlayfs's own: a 0:0 character device and the opaque xattr.
    img = manifest_of(capsule, ref)
    top = store(capsule, "layers", img["layers"][2][7:])
    st = os.lstat(os.path.join(top, "data", "a"))
    assert os.major(st.st_rdev) == 0 and os.minor(st.st_rdev) == 0 and (st.st_mode & 0o170000) == 0o020000
    assert os.getxattr(os.path.join(top, "opq"), "user.overlay.opaque") == b"y"
    assert not os.path.exists(os.path.join(top, "opq", ".wh..wh..opq"))


def test_zstd_layer(capsule, registry, workdir):
    lay = make_layout(workdir, [(busybox_layer(), "zstd"), (layer_tar([Entry("z", data=b"zstd-ok\n")]), "zstd")])
    ref = registry.push(lay, repo("zstd"))
    r = run_image(capsule, ref, "cat", "/z")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "zstd-ok\n"


def test_corrupted_blob_is_refused_and_not_stored(capsule, registry, workdir):
    marker = layer_tar([Entry("marker", data=b"0123456789" * 100)])
    lay = make_layout(workdir, [busybox_layer(), marker])
    ref = registry.push(lay, repo("corrupt"))
    manifest = json.load(open(os.path.join(lay.path, "blobs", "sha256",
                                           json.load(open(os.path.join(lay.path, "index.json")))
                                           ["manifests"][0]["digest"][7:])))
    digest = manifest["layers"][1]["digest"]
    data_path = registry.blob_data_path(digest)
    good = open(data_path, "rb").read()
    with open(data_path, "wb") as f:
        f.write(bytes(b ^ 0xFF for b in good))
    try:
        r = capsule.run("image", "pull", ref)
        assert r.returncode == 125
        assert f"blob '{digest}' does not match its digest" in r.stderr
        assert "not stored" in r.stderr
        assert not os.path.exists(store(capsule, "blobs", "sha256", digest[7:]))
        assert not os.path.exists(store(capsule, "layers", digest[7:]))
        assert not os.path.exists(store(capsule, "tmp", digest[7:] + ".partial"))
        assert manifest_of(capsule, ref) is None
    finally:
        with open(data_path, "wb") as f:
            f.write(good)
    pull(capsule, ref)
    assert os.path.exists(store(capsule, "blobs", "sha256", digest[7:]))


def test_interrupted_download_resumes_with_a_range_request(capsule, registry, workdir):
    payload = os.urandom(200000)
    lay = make_layout(workdir, [busybox_layer(), layer_tar([Entry("big", data=payload)])], compression=None)
    ref = registry.push(lay, repo("resume"))
    idx = json.load(open(os.path.join(lay.path, "index.json")))
    manifest = json.load(open(os.path.join(lay.path, "blobs", "sha256", idx["manifests"][0]["digest"][7:])))
    digest = manifest["layers"][1]["digest"]
    blob = open(os.path.join(lay.path, "blobs", "sha256", digest[7:]), "rb").read()
    os.makedirs(store(capsule, "tmp"), exist_ok=True)
    partial = store(capsule, "tmp", digest[7:] + ".partial")
    # A first half that is not the blob's: only a resumed (Range) download keeps it, and the
    # digest check then refuses the whole.
    with open(partial, "wb") as f:
        f.write(b"\0" * (len(blob) // 2))
    r = capsule.run("image", "pull", ref)
    assert r.returncode == 125 and "does not match its digest" in r.stderr, r.stderr
    assert not os.path.exists(partial)
    # The blob's own first half: resumed, it completes to the right content.
    with open(partial, "wb") as f:
        f.write(blob[: len(blob) // 2])
    pull(capsule, ref)
    assert open(store(capsule, "blobs", "sha256", digest[7:]), "rb").read() == blob
    assert run_image(capsule, ref, "wc", "-c", "/big").stdout.split()[0] == str(len(payload))


def test_missing_tag(capsule, registry, workdir):
    ref = registry.push(make_layout(workdir, [busybox_layer()]), repo())
    r = capsule.run("image", "pull", ref.rsplit(":", 1)[0] + ":no-such-tag")
    assert r.returncode == 125
    assert "not found" in r.stderr and "no-such-tag" in r.stderr


def test_registry_that_is_down(capsule):
    r = capsule.run("image", "pull", f"127.0.0.1:{free_port()}/test/x:1", "--insecure")
    assert r.returncode == 125
    assert "cannot reach registry" in r.stderr


def _registry_config(path, host, user, password, as_auth=True):
    import base64
    entry = ({"auth": base64.b64encode(f"{user}:{password}".encode()).decode()} if as_auth
             else {"username": user, "password": password})
    with open(path, "w") as f:
        json.dump({"auths": {host: entry}}, f)
    return {"CAPSULE_REGISTRY_CONFIG": path}


def test_auth_challenge_with_right_and_wrong_password(capsule, auth_registry, workdir):
    ref = auth_registry.push(make_layout(workdir, [busybox_layer()]), repo("auth"))
    none = {"CAPSULE_REGISTRY_CONFIG": os.path.join(workdir, "absent.json")}
    r = capsule.run("image", "pull", ref, env=none)
    assert r.returncode == 125
    assert "needs a username and password" in r.stderr
    wrong = _registry_config(os.path.join(workdir, "wrong.json"), auth_registry.host, "tester", "nope", False)
    r = capsule.run("image", "pull", ref, env=wrong)
    assert r.returncode == 125
    assert "refused the credentials" in r.stderr
    assert manifest_of(capsule, ref) is None
    right = _registry_config(os.path.join(workdir, "right.json"), auth_registry.host, "tester", "s3cret-pw")
    pull(capsule, ref, env=right)
    assert run_image(capsule, ref, "echo", "authed").stdout == "authed\n"


def test_short_names_resolve_to_docker_hub_library_through_a_mirror(capsule, registry, workdir):
    tag = uuid.uuid4().hex[:8]
    registry.push(make_layout(workdir, [busybox_layer(), layer_tar([Entry("m", data=b"mirror\n")])], tag=tag),
                  "library/capsuletestimg", tag)
    cfg = os.path.join(workdir, "mirrors.json")
    with open(cfg, "w") as f:
        json.dump({"mirrors": {"docker.io": [f"http://{registry.host}"]}}, f)
    # Anything but the mirror goes to a dead proxy on loopback: docker.io is never reached.
    env = {"CAPSULE_REGISTRY_CONFIG": cfg, "https_proxy": f"http://127.0.0.1:{free_port()}",
           "HTTPS_PROXY": f"http://127.0.0.1:{free_port()}", "no_proxy": "127.0.0.1", "NO_PROXY": "127.0.0.1"}
    r = pull(capsule, f"capsuletestimg:{tag}", env=env)
    assert r.stdout.strip() == f"docker.io/library/capsuletestimg:{tag}"
    assert run_image(capsule, f"capsuletestimg:{tag}", "cat", "/m").stdout == "mirror\n"


def test_second_pull_downloads_nothing_and_shared_layers_are_stored_once(capsule, registry, workdir):
    base = busybox_layer()
    a = registry.push(make_layout(workdir, [base, layer_tar([Entry("a", data=b"a")])]), repo("dedup"))
    r = pull(capsule, a)
    r = pull(capsule, a)
    assert "downloaded" not in r.stderr, r.stderr
    b = registry.push(make_layout(workdir, [base, layer_tar([Entry("b", data=b"b")])]), repo("dedup"))
    r = pull(capsule, b)
    # Only b's own layer and config came; the busybox layer was there.
    assert r.stderr.count("downloaded") == 2, r.stderr
    la, lb = manifest_of(capsule, a)["layers"], manifest_of(capsule, b)["layers"]
    assert la[0] == lb[0] and la[1] != lb[1]


def test_import_oci_archive_and_docker_archive(capsule, workdir):
    lay = make_layout(workdir, [busybox_layer(), layer_tar([Entry("imported", data=b"yes\n")])],
                      {"Cmd": ["cat", "/imported"]})
    oci = os.path.join(workdir, "image-oci.tar")
    dock = os.path.join(workdir, "image-docker.tar")
    for dst in (f"oci-archive:{oci}", f"docker-archive:{dock}:x/y:1"):
        r = subprocess.run(["skopeo", "copy", "-q", f"oci:{lay.path}:t", dst], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    for path, name in ((oci, "imported/oci:1"), (dock, "imported/docker:1")):
        r = capsule.run("image", "import", path, "--name", name)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == f"docker.io/{name}"
        r = run_image(capsule, name)
        assert r.returncode == 0, r.stderr
        assert r.stdout == "yes\n"


def test_import_refuses_what_is_not_an_image_archive(capsule, workdir):
    path = os.path.join(workdir, "not-image.tar")
    with tarfile.open(path, "w") as t:
        t.add(__file__, arcname="README")
    r = capsule.run("image", "import", path, "--name", "x:1")
    assert r.returncode == 125
    assert "neither an oci-archive" in r.stderr
    assert os.listdir(store(capsule, "tmp")) == [] or all(
        not n.startswith("import-") for n in os.listdir(store(capsule, "tmp")))


def test_image_ls_and_rm_keep_layers_a_sandbox_uses(capsule, registry, workdir):
    own = layer_tar([Entry("own-" + uuid.uuid4().hex, data=b"own\n")])
    ref = registry.push(make_layout(workdir, [busybox_layer(), own]), repo("rm"))
    pull(capsule, ref)
    img = manifest_of(capsule, ref)
    assert img["size"] > 0 and len(img["layers"]) == 2
    assert ref in capsule.run("image", "ls", check=True).stdout
    own_layer = store(capsule, "layers", img["layers"][1][7:])
    need_static_agent(capsule.build)
    name = capsule.create("--image", ref)
    r = capsule.run("image", "rm", ref)
    assert r.returncode == 0, r.stderr
    assert manifest_of(capsule, ref) is None
    # The sandbox made from it still has its layers, and restarts from them.
    assert os.path.isdir(own_layer)
    capsule.run("stop", "-t", "0", name, check=True)
    capsule.run("start", name, check=True)
    assert capsule.run("exec", name, "echo", "alive").stdout == "alive\n"
    capsule.run("rm", "-f", name, check=True)
    # With the sandbox gone, removing another image collects what nothing uses.
    other = registry.push(make_layout(workdir, [busybox_layer()]), repo("rm2"))
    pull(capsule, other)
    capsule.run("image", "rm", other, check=True)
    assert not os.path.exists(own_layer)
    assert not os.path.exists(store(capsule, "blobs", "sha256", img["digest"][7:]))
    r = capsule.run("image", "rm", ref)
    assert r.returncode == 125 and "not found" in r.stderr


def test_image_rm_keeps_the_layers_a_pool_starts_from(capsule, registry, workdir):
    own = layer_tar([Entry("pooled-" + uuid.uuid4().hex, data=b"pooled\n")])
    ref = registry.push(make_layout(workdir, [busybox_layer(), own]), repo("pool"))
    pull(capsule, ref)
    img = manifest_of(capsule, ref)
    own_layer = store(capsule, "layers", img["layers"][1][7:])
    need_static_agent(capsule.build)
    pool = capsule.unique_name("imgpool")
    r = capsule.run("pool", "create", pool, "--size", "1", "--image", ref)
    assert r.returncode == 0, r.stderr
    try:
        # No sandbox of the pool is left (its keeper was killed, and they ended with it): only
        # the pool's configuration names the layers now.
        (info,) = [p for p in json.loads(capsule.run("pool", "ls", "--json", check=True).stdout) if p["name"] == pool]
        members = set(os.listdir(os.path.join(capsule.home, "pools", pool, "ready")))
        os.kill(info["keeper_pid"], 9)
        deadline = time.monotonic() + 60
        while members & set(os.listdir(os.path.join(capsule.home, "run"))) and time.monotonic() < deadline:
            time.sleep(0.05)
        capsule.run("image", "rm", ref, check=True)
        assert os.path.isdir(own_layer)
        # A take (cold now) starts from the same layers, the image gone or not.
        r = capsule.run("run", "--pool", pool, "--", "sh", "-c", "ls / | grep -c pooled-")
        assert r.returncode == 0 and r.stdout.strip() == "1", r.stderr
    finally:
        capsule.run("pool", "rm", pool, check=True)
    other = registry.push(make_layout(workdir, [busybox_layer()]), repo("pool2"))
    pull(capsule, other)
    capsule.run("image", "rm", other, check=True)
    assert not os.path.exists(own_layer)


def test_dir_image_is_a_host_folder_used_read_only(capsule, workdir):
    root = os.path.join(workdir, "rootfs")
    os.makedirs(root)
    os.chmod(workdir, 0o711)
    raw = busybox_layer()
    import io
    with tarfile.open(fileobj=io.BytesIO(raw)) as t:
        t.extractall(root)
    with open(os.path.join(root, "hello"), "w") as f:
        f.write("from-dir\n")
    r = run_image(capsule, f"dir:{root}", "sh", "-c", "cat /hello; echo changed > /hello; cat /hello")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "from-dir\nchanged\n"
    assert open(os.path.join(root, "hello")).read() == "from-dir\n"
    r = run_image(capsule, "dir:/etc", "true")
    assert r.returncode == 125 and "sensitive" in r.stderr


def test_image_without_root_home_starts_commands_in_slash(capsule, registry, workdir):
    entries = [e for e in busybox_entries() if e.name != "root"]
    ref = registry.push(make_layout(workdir, [layer_tar(entries)]), repo("nohome"))
    r = run_image(capsule, ref, "pwd")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "/\n"


def test_pull_killed_at_any_moment_leaves_the_store_whole(capsule, registry, workdir):
    import signal
    import time
    size = 24 << 20
    big = layer_tar([Entry("big", data=os.urandom(size))])
    lay = make_layout(workdir, [busybox_layer(), big], compression=None)
    ref = registry.push(lay, repo("kill"))
    digest = sha_of(big)
    layer_dir = store(capsule, "layers", digest[7:])
    for delay in (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8):
        p = capsule.popen("image", "pull", "-q", ref, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait()
        # Old or new, never half: a layer folder is complete, a blob hashes right, and the
        # name is there only with everything it needs.
        if os.path.isdir(layer_dir):
            assert os.path.getsize(os.path.join(layer_dir, "big")) == size
        blob = store(capsule, "blobs", "sha256", digest[7:])
        if os.path.exists(blob):
            assert sha_file(blob) == digest
        img = manifest_of(capsule, ref)
        if img is not None:
            assert os.path.isdir(layer_dir)
    # A half-unpacked layer of a killed run, for certain (a reaped child's pid is dead).
    dead = subprocess.Popen(["true"])
    dead.wait()
    os.makedirs(store(capsule, "tmp", f"layer-0123456789abcdef-{dead.pid}", "usr"))
    pull(capsule, ref)
    # What the killed runs left half-unpacked is gone; only resumable downloads may stay.
    assert [n for n in os.listdir(store(capsule, "tmp")) if not n.endswith(".partial")] == []
    assert run_image(capsule, ref, "wc", "-c", "/big").stdout.split()[0] == str(size)


def sha_of(data):
    import hashlib
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha_file(path):
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def test_bearer_token_auth_anonymous_and_with_credentials(capsule, workdir):
    from .imageutil import FakeRegistry
    lay = make_layout(workdir, [busybox_layer(), layer_tar([Entry("tok", data=b"bearer\n")])])
    anon = FakeRegistry(lay, bearer=True)
    try:
        ref = f"{anon.host}/test/anon:t"
        pull(capsule, ref)
        assert run_image(capsule, ref, "cat", "/tok").stdout == "bearer\n"
        token_asks = [p for p, _ in anon.requests if p.startswith("/token")]
        assert token_asks and "scope=repository%3Ax%3Apull" in token_asks[0] and "service=fake" in token_asks[0]
        assert all("Authorization" not in h for p, h in anon.requests if p.startswith("/token"))
    finally:
        anon.stop()
    locked = FakeRegistry(lay, bearer=True, creds=("tester", "tok-pw"))
    try:
        ref = f"{locked.host}/test/locked:t"
        wrong = _registry_config(os.path.join(workdir, "w.json"), locked.host, "tester", "nope")
        r = capsule.run("image", "pull", ref, env=wrong)
        assert r.returncode == 125 and "refused the credentials" in r.stderr, r.stderr
        right = _registry_config(os.path.join(workdir, "r.json"), locked.host, "tester", "tok-pw")
        pull(capsule, ref, env=right)
        assert manifest_of(capsule, ref) is not None
    finally:
        locked.stop()


def test_resume_against_a_server_that_ignores_range(capsule, workdir):
    from .imageutil import FakeRegistry
    payload = layer_tar([Entry("r", data=os.urandom(300000))])
    lay = make_layout(workdir, [busybox_layer(), payload], compression=None)
    reg = FakeRegistry(lay, ignore_range=True)
    try:
        digest = sha_of(payload)
        os.makedirs(store(capsule, "tmp"), exist_ok=True)
        with open(store(capsule, "tmp", digest[7:] + ".partial"), "wb") as f:
            f.write(payload[:1000])
        ref = f"{reg.host}/test/norange:t"
        pull(capsule, ref)
        assert sha_file(store(capsule, "blobs", "sha256", digest[7:])) == digest
        assert any("Range" in h for p, h in reg.requests if digest in p)
    finally:
        reg.stop()


def test_pull_on_a_terminal_draws_a_bar_per_layer_and_ends_its_lines(capsule, registry, workdir):
    import uuid
    from .test_progress import on_a_terminal
    own = layer_tar([Entry("etc/unique", data=uuid.uuid4().hex.encode() * 1000)])
    ref = registry.push(make_layout(workdir, [busybox_layer(), own]), repo("tty"))
    out, rc = on_a_terminal(capsule, "image", "pull", ref)
    assert rc == 0, out
    text = out.decode()
    # A bar for the download, then the layer's last word on a line of its own; the name last.
    assert "[" in text and "#" in text and "unpacking" in text, text
    assert text.endswith(ref + "\r\n"), text


def test_layer_0_lies_under_the_overlay_and_only_the_others_get_a_mount_point(capsule, registry, workdir):
    # Each folder a sandbox makes in its home is an inode an ext4 without a journal allocates
    # slowly after many deletions (docs/performance.md): layer 0 is attached on fs/rootfs, under
    # the overlay, so a one-layer image and the host image make no fs/l at all.
    need_static_agent(capsule.build)
    two = registry.push(make_layout(workdir, [busybox_layer(), layer_tar([Entry("top", data=b"top\n")])]), repo("l0"))
    one = registry.push(make_layout(workdir, [busybox_layer()]), repo("l0one"))
    names = [f"l0-{uuid.uuid4().hex[:6]}" for _ in range(3)]
    try:
        capsule.run("create", "--name", names[0], "--image", two, check=True, timeout=120)
        capsule.run("create", "--name", names[1], "--image", one, check=True, timeout=120)
        capsule.run("create", "--name", names[2], check=True)
        r = capsule.run("exec", names[0], "--", "sh", "-c", "cat /top; test -x /bin/busybox && echo busybox")
        assert r.returncode == 0 and r.stdout == "top\nbusybox\n", r.stderr
        r = capsule.run("exec", names[1], "--", "sh", "-c", "echo new > /new; cat /new; ls /bin/busybox")
        assert r.returncode == 0 and r.stdout == "new\n/bin/busybox\n", r.stderr
        assert capsule.run("exec", names[2], "--", "cat", "/etc/os-release", check=True).stdout
        fs = [os.path.join(capsule.home, "run", n, "fs") for n in names]
        assert sorted(os.listdir(os.path.join(fs[0], "l"))) == ["1"]
        assert not os.path.exists(os.path.join(fs[1], "l"))
        assert not os.path.exists(os.path.join(fs[2], "l"))
        # The writes went to the sandbox's own layer, not into the image's.
        assert open(os.path.join(fs[1], "upper", "new")).read() == "new\n"
        img = manifest_of(capsule, one)
        assert not os.path.exists(store(capsule, "layers", img["layers"][0][7:], "new"))
    finally:
        capsule.run("rm", "-f", *names)
    assert not any(os.path.exists(os.path.join(capsule.home, "run", n)) for n in names)
