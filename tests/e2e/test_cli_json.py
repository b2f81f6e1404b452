"""Every --json output has one shape: indented by two spaces, as `inspect` and `doctor` are,
so that a person reads it as easily as a script does."""
import json
import os
import shutil
import tempfile

from .imageutil import free_port


def test_every_json_output_is_indented_alike(capsule):
    port = free_port()
    name = capsule.create("-p", f"127.0.0.1:{port}:80")
    vol = capsule.unique_name("jv")
    save = capsule.unique_name("js")
    host = tempfile.mkdtemp(prefix="capsule-json-", dir="/var/tmp")
    try:
        capsule.run("volume", "create", vol, check=True)
        capsule.run("save", name, save, check=True)
        capsule.run("mount", name, host, "/mnt/json", check=True)
        commands = [["ps", "--json"], ["volume", "ls", "--json"], ["volume", "inspect", vol], ["saves", "ls", "--json"],
                    ["mounts", name, "--json"], ["port", "ls", name, "--json"], ["doctor", "--json"],
                    ["fs", name, "ls", "--json", "/mnt"], ["fs", name, "stat", "--json", "/mnt"], ["inspect", name]]
        for args in commands:
            out = capsule.run(*args, check=True).stdout
            doc = json.loads(out)
            assert doc, (args, out)  # something to show: an empty [] proves nothing about its shape
            assert out == json.dumps(doc, indent=2, ensure_ascii=False) + "\n", (args, out[:200])
    finally:
        capsule.run("saves", "rm", save)
        capsule.run("rm", "-f", name)
        capsule.run("volume", "rm", vol)
        shutil.rmtree(host, ignore_errors=True)
