"""Every ```python block of docs/python.md (and of the README's SDK section) runs as written.

Each block is a program: it runs in a fresh folder (its relative host paths land there), with
a CAPSULE_HOME of its own, under /usr/bin/python3 with only the package on PYTHONPATH; it
must exit 0. What it leaves (sandboxes, volumes) is removed by name afterwards.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest

from sdkutil import ROOT, agent_is_static, sdk_env, clean_home, settled_run_entries

BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def blocks(path, section=None):
    with open(path) as f:
        text = f.read()
    if section:
        start = text.index(section)
        end = text.find("\n## ", start + len(section))
        text = text[start:end if end > 0 else None]
    return BLOCK.findall(text)


DOC_BLOCKS = [("python.md", i, b) for i, b in enumerate(blocks(os.path.join(ROOT, "docs", "python.md")))]
README_BLOCKS = [("README.md", i, b) for i, b in enumerate(blocks(os.path.join(ROOT, "README.md"), "## The Python SDK"))]


def test_the_docs_have_examples_that_check_themselves():
    assert len(DOC_BLOCKS) >= 10
    assert README_BLOCKS
    # An example that only prints passes whatever it prints: each asserts what it shows.
    for doc, index, code in DOC_BLOCKS + README_BLOCKS:
        assert re.search(r"^\s*assert ", code, re.M), f"{doc} example {index} checks nothing"


@pytest.mark.parametrize("doc,index,code", DOC_BLOCKS + README_BLOCKS,
                         ids=[f"{d}-{i}" for d, i, _ in DOC_BLOCKS + README_BLOCKS])
def test_doc_example_runs(doc, index, code):
    if ('image=f"dir:' in code or 'isolation="vm"' in code) and not agent_is_static():
        pytest.skip("the example starts a sandbox in an image's own root or a VM, where a dynamically linked "
                    "agent (a sanitizer build) finds no libraries")
    work = tempfile.mkdtemp(prefix="capsule-sdk-doc-", dir="/var/tmp")
    home = tempfile.mkdtemp(prefix="capsule-sdk-dochome-", dir="/var/tmp")
    os.chmod(work, 0o755)
    os.chmod(home, 0o711)
    try:
        with open(os.path.join(work, "example.py"), "w") as f:
            f.write(code)
        r = subprocess.run([sys.executable, "example.py"], cwd=work, env=sdk_env(home), capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, f"{doc} example {index} failed:\n{code}\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}"
        # An example that finished leaves no sandbox behind: they are all ephemeral.
        left = sorted(settled_run_entries(os.path.join(home, "run")))
        assert left == [], f"{doc} example {index} left sandboxes {left}"
    finally:
        clean_home(home)
        shutil.rmtree(work, ignore_errors=True)


def test_doc_examples_run_in_order_in_one_home():
    # As a reader runs them, one after another on one machine: what one leaves (a save, a
    # volume, a name) must not break the next. The vm examples leave nothing named and are run
    # above; they are left out here for the boots they cost.
    work = tempfile.mkdtemp(prefix="capsule-sdk-doc-", dir="/var/tmp")
    home = tempfile.mkdtemp(prefix="capsule-sdk-dochome-", dir="/var/tmp")
    os.chmod(work, 0o755)
    try:
        for doc, index, code in DOC_BLOCKS + README_BLOCKS:
            if 'isolation="vm"' in code or ('image=f"dir:' in code and not agent_is_static()):
                continue
            with open(os.path.join(work, "example.py"), "w") as f:
                f.write(code)
            r = subprocess.run([sys.executable, "example.py"], cwd=work, env=sdk_env(home), capture_output=True,
                               text=True, timeout=300)
            assert r.returncode == 0, f"{doc} example {index}, run after the ones before it, failed:\n{r.stderr}"
    finally:
        clean_home(home)
        shutil.rmtree(work, ignore_errors=True)
