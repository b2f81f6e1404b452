"""Images for the tests, made by the tests: layers as tarballs written here (a busybox-static
root, whiteouts, opaque folders, hostile entries), OCI layouts around them, and a real
registry (Debian's docker-registry, distribution v2) on a free loopback port, fed by skopeo.
Nothing here reaches beyond loopback."""
import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
import urllib.error
import urllib.request

import pytest

BUSYBOX = "/bin/busybox"
APPLETS = ["sh", "cat", "echo", "ls", "env", "id", "pwd", "sleep", "true", "false", "test", "stat", "mknod",
           "head", "wc", "touch", "mkdir", "rm", "readlink", "printf", "uname", "whoami", "grep", "find"]
MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = {"gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
            "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
            None: "application/vnd.oci.image.layer.v1.tar"}


TOOLS = ("docker-registry", "skopeo", "htpasswd")


def have_tools():
    return all(shutil.which(t) for t in TOOLS) and os.path.exists(BUSYBOX)


def require_tools():
    """A test dependency that is missing fails the test: a run without the registry, skopeo,
    htpasswd or busybox-static must not go green by skipping what needs them."""
    missing = [t for t in TOOLS if not shutil.which(t)] + ([BUSYBOX] if not os.path.exists(BUSYBOX) else [])
    if missing:
        pytest.fail(f"test dependencies missing: {', '.join(missing)} (scripts/install-deps installs them)",
                    pytrace=False)


def agent_is_static(build):
    """A sanitizer build links capsule-agent dynamically; it then runs only in roots that have
    the host's libraries (the host image), not in an image's own root nor as a VM's init."""
    r = subprocess.run(["ldd", os.path.join(build, "capsule-agent")], capture_output=True, text=True)
    return "not a dynamic executable" in r.stdout + r.stderr or "statically linked" in r.stdout


def need_static_agent(build):
    if not agent_is_static(build):
        pytest.skip("capsule-agent is dynamically linked (a sanitizer build): it cannot start in an image's "
                    "own root, which lacks the host's libraries")


@pytest.fixture
def image_tools():
    require_tools()


needs_tools = pytest.mark.usefixtures("image_tools")


# ---- layers ----

class Entry:
    def __init__(self, name, kind="file", data=b"", mode=0o644, uid=0, gid=0, link=None, devmajor=0, devminor=0):
        self.name, self.kind, self.data, self.mode = name, kind, data, mode
        self.uid, self.gid, self.link = uid, gid, link
        self.devmajor, self.devminor = devmajor, devminor


def layer_tar(entries):
    """An uncompressed tar of ENTRIES, in order, names exactly as given."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for e in entries:
            ti = tarfile.TarInfo(e.name)
            ti.mode, ti.uid, ti.gid, ti.mtime = e.mode, e.uid, e.gid, 1700000000
            data = None
            if e.kind == "file":
                ti.type, ti.size, data = tarfile.REGTYPE, len(e.data), io.BytesIO(e.data)
            elif e.kind == "dir":
                ti.type = tarfile.DIRTYPE
            elif e.kind == "symlink":
                ti.type, ti.linkname = tarfile.SYMTYPE, e.link
            elif e.kind == "hardlink":
                ti.type, ti.linkname = tarfile.LNKTYPE, e.link
            elif e.kind == "chr":
                ti.type, ti.devmajor, ti.devminor = tarfile.CHRTYPE, e.devmajor, e.devminor
            elif e.kind == "blk":
                ti.type, ti.devmajor, ti.devminor = tarfile.BLKTYPE, e.devmajor, e.devminor
            t.addfile(ti, data)
    return buf.getvalue()


def compress(raw, how):
    if how == "gzip":
        return gzip.compress(raw, mtime=0)
    if how == "zstd":
        return subprocess.run(["zstd", "-q", "-c"], input=raw, capture_output=True, check=True).stdout
    return raw


def busybox_entries(extra_passwd=""):
    with open(BUSYBOX, "rb") as f:
        bb = f.read()
    entries = [Entry("bin", "dir", mode=0o755), Entry("bin/busybox", data=bb, mode=0o755)]
    entries += [Entry("bin/" + a, "symlink", link="busybox", mode=0o777) for a in APPLETS]
    entries += [Entry("etc", "dir", mode=0o755),
                Entry("etc/passwd", data=("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"
                                          + extra_passwd).encode()),
                Entry("etc/group", data=b"root:x:0:\napp:x:1000:\n"),
                Entry("root", "dir", mode=0o700), Entry("tmp", "dir", mode=0o1777),
                Entry("home", "dir", mode=0o755), Entry("home/app", "dir", mode=0o755, uid=1000, gid=1000)]
    return entries


def busybox_layer():
    return layer_tar(busybox_entries())


# ---- OCI layouts ----

def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Layout:
    """An OCI image layout folder: blobs, index.json, oci-layout."""

    def __init__(self, path):
        self.path = path
        os.makedirs(os.path.join(path, "blobs", "sha256"), exist_ok=True)
        with open(os.path.join(path, "oci-layout"), "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)
        self.manifests = []

    def blob(self, data):
        d = sha(data)
        with open(os.path.join(self.path, "blobs", "sha256", d[7:]), "wb") as f:
            f.write(data)
        return {"digest": d, "size": len(data)}

    def image(self, layers, config=None, arch="amd64", compression="gzip"):
        """A manifest of LAYERS (raw tars; each compressed as COMPRESSION, or a (raw, how)
        pair) and CONFIG (the image config's "config" object). Returns its descriptor."""
        descs, diff_ids = [], []
        for layer in layers:
            raw, how = layer if isinstance(layer, tuple) else (layer, compression)
            d = self.blob(compress(raw, how))
            d["mediaType"] = MT_LAYER[how]
            descs.append(d)
            diff_ids.append(sha(raw))
        cfg = {"architecture": arch, "os": "linux", "config": config or {},
               "rootfs": {"type": "layers", "diff_ids": diff_ids}}
        c = self.blob(json.dumps(cfg).encode())
        c["mediaType"] = MT_OCI_CONFIG
        m = {"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST, "config": c, "layers": descs}
        md = self.blob(json.dumps(m).encode())
        md["mediaType"] = MT_OCI_MANIFEST
        md["platform"] = {"os": "linux", "architecture": arch}
        return md

    def index(self, manifests, tag):
        """index.json naming MANIFESTS under TAG (one: that image; several: a nested index)."""
        if len(manifests) == 1:
            top = dict(manifests[0])
        else:
            idx = {"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": manifests}
            top = self.blob(json.dumps(idx).encode())
            top["mediaType"] = MT_OCI_INDEX
        top["annotations"] = {"org.opencontainers.image.ref.name": tag}
        top.pop("platform", None)
        with open(os.path.join(self.path, "index.json"), "w") as f:
            json.dump({"schemaVersion": 2, "manifests": [top]}, f)
        return self


def make_layout(tmpdir, layers, config=None, tag="t", compression="gzip"):
    lay = Layout(os.path.join(tmpdir, "layout-" + os.urandom(4).hex()))
    return lay.index([lay.image(layers, config, compression=compression)], tag)


# ---- the registry ----

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Registry:
    """docker-registry serving a folder of its own on 127.0.0.1:PORT."""

    def __init__(self, root, htpasswd=None):
        self.root = root
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.storage = os.path.join(root, "storage")
        os.makedirs(self.storage, exist_ok=True)
        cfg = ["version: 0.1", "log:", "  level: error", "  accesslog:", "    disabled: true", "storage:",
               "  filesystem:", f"    rootdirectory: {self.storage}", "  delete:", "    enabled: true",
               "http:", f"  addr: 127.0.0.1:{self.port}"]
        self.user = self.password = None
        if htpasswd:
            self.user, self.password = htpasswd
            pw = os.path.join(root, "htpasswd")
            subprocess.run(["htpasswd", "-Bbc", pw, self.user, self.password], check=True, capture_output=True)
            cfg += ["auth:", "  htpasswd:", "    realm: capsule-test", f"    path: {pw}"]
        self.config = os.path.join(root, "config.yml")
        with open(self.config, "w") as f:
            f.write("\n".join(cfg) + "\n")
        self.log = open(os.path.join(root, "registry.log"), "w")
        self.proc = subprocess.Popen(["docker-registry", "serve", self.config], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://{self.host}/v2/", timeout=2)
                break
            except urllib.error.HTTPError:
                break  # 401: it answers
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("docker-registry did not start: " + open(self.log.name).read())
                time.sleep(0.05)

    def push(self, layout, repo, tag="t", all_images=False):
        src = f"oci:{layout.path}:{tag}"
        dst = f"docker://{self.host}/{repo}:{tag}"
        cmd = ["skopeo", "copy", "-q", "--dest-tls-verify=false", "--preserve-digests"]
        if all_images:
            cmd.append("--all")
        if self.user:
            cmd += ["--dest-creds", f"{self.user}:{self.password}"]
        r = subprocess.run(cmd + [src, dst], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return f"{self.host}/{repo}:{tag}"

    def blob_data_path(self, digest):
        hexd = digest.split(":", 1)[1]
        return os.path.join(self.storage, "docker", "registry", "v2", "blobs", "sha256", hexd[:2], hexd, "data")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def registry():
    require_tools()
    root = tempfile.mkdtemp(prefix="capsule-registry-", dir="/var/tmp")
    reg = Registry(root)
    yield reg
    reg.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def auth_registry():
    require_tools()
    root = tempfile.mkdtemp(prefix="capsule-registry-auth-", dir="/var/tmp")
    reg = Registry(root, htpasswd=("tester", "s3cret-pw"))
    yield reg
    reg.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def workdir():
    d = tempfile.mkdtemp(prefix="capsule-img-", dir="/var/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


# ---- a registry of our own, for what docker-registry does not do ----

class FakeRegistry:
    """A minimal registry API v2 over http.server, serving one OCI layout, for behaviours the
    Debian registry does not have: Bearer token auth (a token service at /token, with or
    without required credentials), blob servers that ignore Range requests, and blobs (those
    named in DRIP) sent 2 bytes every 0.5 s, as a hostile server holds a pull."""

    def __init__(self, layout, bearer=False, creds=None, ignore_range=False, drip=()):
        import base64
        import http.server
        import threading
        self.layout, self.bearer, self.creds, self.ignore_range = layout, bearer, creds, ignore_range
        self.drip = set(drip)
        self.token = "tok-" + os.urandom(8).hex()
        self.requests = []
        reg = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def send(self, code, body=b"", headers=()):
                self.send_response(code)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def send_dripping(self, body):
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    for i in range(0, len(body), 2):
                        self.wfile.write(body[i:i + 2])
                        self.wfile.flush()
                        time.sleep(0.5)
                except OSError:
                    pass  # the client gave up: what this server is for

            def do_GET(self):
                reg.requests.append((self.path, dict(self.headers)))
                if self.path.startswith("/token"):
                    if reg.creds:
                        want = "Basic " + base64.b64encode(f"{reg.creds[0]}:{reg.creds[1]}".encode()).decode()
                        if self.headers.get("Authorization") != want:
                            return self.send(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}')
                    return self.send(200, json.dumps({"token": reg.token}).encode(),
                                     [("Content-Type", "application/json")])
                if reg.bearer and self.headers.get("Authorization") != f"Bearer {reg.token}":
                    realm = f"http://127.0.0.1:{reg.port}/token"
                    return self.send(401, b"", [("WWW-Authenticate",
                                                 f'Bearer realm="{realm}",service="fake",scope="repository:x:pull"')])
                if self.path == "/v2/":
                    return self.send(200, b"{}")
                parts = self.path.split("/")
                if len(parts) < 5:
                    return self.send(404)
                kind, ref = parts[-2], parts[-1]
                if kind == "manifests":
                    top = json.load(open(os.path.join(reg.layout.path, "index.json")))["manifests"][0]
                    digest = top["digest"] if ref == "t" else ref
                    path = os.path.join(reg.layout.path, "blobs", "sha256", digest.split(":")[-1])
                    if not os.path.exists(path):
                        return self.send(404)
                    data = open(path, "rb").read()
                    return self.send(200, data, [("Content-Type", json.loads(data).get("mediaType", "")),
                                                 ("Docker-Content-Digest", digest)])
                if kind == "blobs":
                    path = os.path.join(reg.layout.path, "blobs", "sha256", ref.split(":")[-1])
                    if not os.path.exists(path):
                        return self.send(404)
                    data = open(path, "rb").read()
                    if ref in reg.drip:
                        return self.send_dripping(data)
                    rng = self.headers.get("Range")
                    if rng and not reg.ignore_range:
                        start = int(rng.split("=")[1].split("-")[0])
                        return self.send(206, data[start:],
                                         [("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")])
                    return self.send(200, data)
                return self.send(404)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
