"""containerd (Debian's 1.6) with `ctr run --runc-binary capsule-oci`: its runc shim is the
subreaper that waits for the monitor's pid, kills it and takes its exit status (docs/oci.md).
The test starts a containerd of its own (config, root, state and socket in a folder of its
own; the CRI plugin off) and removes it. The image is an OCI layout made here from busybox;
the native snapshotter, since the rootfs of the overlayfs one could not be idmapped here
(docs/oci.md, "containerd").

Each test runs at both levels: the vm level is `ctr run --annotation capsule.isolation=vm`, as
Kata takes its annotation. A vm boots a kernel (seconds under TCG): the vm half of the exit
code's test runs in `make check`, the others in `make check-vm` (vm_slow)."""
import contextlib
import glob
import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time

import pytest

from tests.conftest import BUILD, _agent_is_static, _env
from .helpers import level_args, levels

OCI = os.path.join(BUILD, "capsule-oci")
CONTAINERD = shutil.which("containerd")
CTR = shutil.which("ctr")
IMAGE = "localhost/capsule-bb:1"

pytestmark = [
    pytest.mark.plain_build_only,
    pytest.mark.skipif(not _agent_is_static(), reason="the image holds busybox alone: a sanitizer build's "
                       "dynamic agent could not run in it"),
]


def oci_archive(path, name=IMAGE, files=(), tools=(), cmd=None):
    """An OCI image layout tarball of one layer: busybox and its sh, sleep and true (and
    TOOLS), with FILES ((host path, path in the image) pairs), named NAME, running CMD."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as t:
        for d in ("bin", "etc", "tmp"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            t.addfile(info)
        t.add("/bin/busybox", "bin/busybox")
        for tool in ("sh", "sleep", "true", "echo", "cat", *tools):
            info = tarfile.TarInfo(f"bin/{tool}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            t.addfile(info)
        for host, inside in files:
            t.add(host, inside)
    diff = layer.getvalue()
    blob = gzip.compress(diff, mtime=0)
    blobs = {}

    def add(data):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"digest": digest, "size": len(data)}

    config = add(json.dumps({"architecture": "amd64", "os": "linux",
                             "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(diff).hexdigest()]},
                             "config": dict({"Env": ["PATH=/bin"]}, **({"Cmd": cmd} if cmd else {}))}).encode())
    manifest = add(json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                               "config": dict(config, mediaType="application/vnd.oci.image.config.v1+json"),
                               "layers": [dict(add(blob), mediaType="application/vnd.oci.image.layer.v1.tar+gzip")]
                               }).encode())
    index = {"schemaVersion": 2, "manifests": [dict(manifest, mediaType="application/vnd.oci.image.manifest.v1+json",
                                                    annotations={"io.containerd.image.name": name,
                                                                 "org.opencontainers.image.ref.name": "1"})]}
    with tarfile.open(path, "w") as t:
        def put(name, data):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        put("oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        put("index.json", json.dumps(index).encode())
        for digest, data in blobs.items():
            put("blobs/sha256/" + digest.split(":")[1], data)


def start_containerd(top, sock, env):
    """containerd with TOP/config.toml, logging to TOP/containerd.log, once SOCK is there."""
    log = open(os.path.join(top, "containerd.log"), "w")
    daemon = subprocess.Popen([CONTAINERD, "--config", os.path.join(top, "config.toml")], env=env, stdout=log,
                              stderr=log, start_new_session=True)
    daemon.log = log
    deadline = time.monotonic() + 30
    while not os.path.exists(sock) and time.monotonic() < deadline and daemon.poll() is None:
        time.sleep(0.1)
    return daemon


def stop_containerd(daemon):
    daemon.send_signal(signal.SIGTERM)
    try:
        daemon.wait(timeout=30)
    except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait()
    daemon.log.close()


@contextlib.contextmanager
def own_containerd(capsule_home, runc=None):
    """A containerd of the test's own (config, root, state and socket in a folder of its own),
    with the image imported for the native snapshotter; with RUNC, that binary is `runc` on
    its PATH (what containerd's runc shim runs when no BinaryName reaches it). Yields ctr."""
    assert CONTAINERD and CTR, "containerd is not installed (scripts/install-deps)"
    top = tempfile.mkdtemp(prefix="capsule-oci-containerd-", dir="/var/tmp")
    sock = os.path.join(top, "containerd.sock")
    with open(os.path.join(top, "config.toml"), "w") as f:
        f.write(f'version = 2\nroot = "{top}/root"\nstate = "{top}/state"\n'
                f'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
                f'[grpc]\n  address = "{sock}"\n[ttrpc]\n  address = "{sock}.ttrpc"\n')
    env = _env(capsule_home)
    if runc:
        os.makedirs(os.path.join(top, "bin"))
        os.symlink(runc, os.path.join(top, "bin", "runc"))
        env["PATH"] = os.path.join(top, "bin") + ":" + env.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    daemon = start_containerd(top, sock, env)

    def run(*args, timeout=120, **kw):
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run([CTR, "--address", sock] + list(args), env=env, timeout=timeout, **kw)

    run.top, run.env = top, env
    try:
        assert os.path.exists(sock), open(os.path.join(top, "containerd.log")).read()[-2000:]
        oci_archive(os.path.join(top, "image.tar"))
        r = run("image", "import", "--snapshotter", "native", os.path.join(top, "image.tar"))
        assert r.returncode == 0, r.stderr
        yield run
    finally:
        for task in run("task", "ls", "-q").stdout.split():
            run("task", "kill", "-s", "KILL", task)
            run("task", "rm", "-f", task)
        for c in run("container", "ls", "-q").stdout.split():
            run("container", "rm", c)
        stop_containerd(daemon)
        subprocess.run(["umount", "-R", os.path.join(top, "root")], capture_output=True)
        shutil.rmtree(top, ignore_errors=True)
        # The namespace's cgroup parent (cgroupsPath /default/ID), left as runc leaves it.
        for hierarchy in {os.path.realpath(p) for p in glob.glob("/sys/fs/cgroup/*/")} | {"/sys/fs/cgroup"}:
            try:
                os.rmdir(os.path.join(hierarchy, "default"))
            except OSError:
                pass


@pytest.fixture(scope="module")
def ctr(capsule_home):
    with own_containerd(capsule_home) as run:
        yield run


def ctr_run(ctr, *args, **kw):
    return ctr("run", "--snapshotter", "native", "--runc-binary", OCI, *args, **kw)


@levels(in_check=True)
def test_run_gives_the_output_and_exit_code(ctr, level):
    r = ctr_run(ctr, "--rm", *level_args(level), IMAGE, "r1", "sh", "-c", "echo out; cat /proc/version; exit 3")
    assert r.returncode == 3, r.stderr
    out, kernel = r.stdout.split("\n", 1)
    assert out == "out"
    # The host's kernel in a container, the guest's in a vm.
    with open("/proc/version") as f:
        assert (kernel == f.read()) == (level == "container"), kernel


@levels()
def test_run_detached_exec_kill_rm(ctr, level):
    r = ctr_run(ctr, "-d", *level_args(level), IMAGE, "d1", "sleep", "1000")
    assert r.returncode == 0, r.stderr
    try:
        assert "RUNNING" in ctr("task", "ls").stdout
        r = ctr("task", "exec", "--exec-id", "e1", "d1", "sh", "-c", "echo in-exec; exit 4")
        assert r.returncode == 4 and r.stdout == "in-exec\n", r.stderr
        assert ctr("task", "kill", "-s", "TERM", "d1").returncode == 0
        deadline = time.monotonic() + 30
        while "STOPPED" not in ctr("task", "ls").stdout and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "STOPPED" in ctr("task", "ls").stdout
        # The exit status containerd's shim took from the monitor: sleep's SIGTERM.
        r = ctr("task", "rm", "d1")
        assert r.returncode == 0, r.stderr
    finally:
        ctr("task", "rm", "-f", "d1")
        assert ctr("container", "rm", "d1").returncode == 0


def test_uidmap_with_the_overlayfs_snapshotter(capsule_home):
    """`ctr run --uidmap --gidmap` with containerd's default snapshotter, overlayfs: ctr chowns
    a snapshot for the range and puts the mappings in the spec, which become the sandbox's
    own map (no idmapped root needed). Debian's ctr 1.6 sends --uidmap's task options without
    --runc-binary's BinaryName, so the shim runs `runc` from containerd's PATH: capsule-oci is
    that `runc` here (docs/oci.md, "containerd")."""
    with own_containerd(capsule_home, runc=OCI) as ctr:
        r = ctr("image", "import", "--snapshotter", "overlayfs", os.path.join(ctr.top, "image.tar"))
        assert r.returncode == 0, r.stderr
        um = ["--uidmap", "0:300000:65536", "--gidmap", "0:300000:65536"]
        r = ctr("run", "-d", "--snapshotter", "overlayfs", *um, IMAGE, "um1", "sleep", "1000")
        assert r.returncode == 0, r.stderr
        try:
            # capsule's sandbox, not runc's container.
            r = subprocess.run([os.path.join(BUILD, "capsule"), "ps", "--json"], env=ctr.env, capture_output=True,
                               text=True)
            assert "um1" in [s["name"] for s in json.loads(r.stdout)], r.stdout
            r = ctr("task", "exec", "--exec-id", "e1", "um1", "sh", "-c",
                    "cat /proc/self/uid_map; id -u; stat -c %u /bin/busybox; echo hi > /x && stat -c %u /x")
            assert r.returncode == 0, r.stderr
            assert r.stdout.split() == ["0", "300000", "65536", "0", "0", "0"], r.stdout
            # On the host, the file is the range's root's: in the snapshot's upper folder.
            rootfs = os.path.join(ctr.top, "state", "io.containerd.runtime.v2.task", "default", "um1", "rootfs")
            assert os.stat(os.path.join(rootfs, "x")).st_uid == 300000
            assert ctr("task", "kill", "-s", "KILL", "um1").returncode == 0
        finally:
            ctr("task", "rm", "-f", "um1")
            ctr("container", "rm", "um1")
