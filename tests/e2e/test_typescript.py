"""The TypeScript client (bindings/typescript): compiled with the pinned tsc that
scripts/install-npm-deps puts outside the clone, then its own tests (node --test) run against a
real capsule serve on loopback."""
import os
import shutil
import subprocess

import pytest

from tests.conftest import ROOT
from tests.e2e.test_serve import Server, new_token

NPM_PREFIX = os.environ.get("CAPSULE_NPM_PREFIX", "/var/cache/capsule/npm")
TS_DIR = os.path.join(ROOT, "bindings", "typescript")


def compile_client(out):
    modules = os.path.join(NPM_PREFIX, "node_modules")
    tsc = os.path.join(modules, "typescript", "bin", "tsc")
    assert os.path.exists(tsc), "typescript is not installed: run scripts/install-npm-deps (make deps does)"
    r = subprocess.run(["node", tsc, "-p", TS_DIR, "--typeRoots", os.path.join(modules, "@types"),
                        "--outDir", os.path.join(out, "dist")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    shutil.copytree(os.path.join(TS_DIR, "test"), os.path.join(out, "test"))
    shutil.copy(os.path.join(TS_DIR, "package.json"), out)  # "type": "module" for dist/


@pytest.mark.plain_build_only
def test_typescript_client_under_node_test(capsule_home, tmp_path):
    compile_client(str(tmp_path))
    server = Server(capsule_home, "--exec-grace", "10")
    try:
        env = dict(os.environ, CAPSULE_SERVER=f"http://127.0.0.1:{server.port}",
                   CAPSULE_TOKEN=new_token(capsule_home, "ts"))
        r = subprocess.run(["node", "--test", "test/"], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300)
    finally:
        rc, err = server.stop()
    assert r.returncode == 0, r.stdout[-8000:] + r.stderr[-4000:]
    assert "# fail 0" in r.stdout and "# pass 8" in r.stdout, r.stdout[-4000:]
    assert rc == 0, err
