"""vm isolation's root disk (issue 7): a hostile image's layers are flattened into an ext4 file
on the host (mkfs.ext4 -d over a private, read-only overlay of the layers) that only the guest's
kernel ever mounts. Symlinks that aim at host paths, set-uid files and device nodes must reach
nothing of the host: the links resolve in the guest, set-uid gives no privilege, device nodes
do not exist or do not open, and the host is left with no mount and no stray file."""
import importlib.util
import os
import shutil
import tarfile
import tempfile
import uuid

import pytest

_IU = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "e2e", "imageutil.py")
_spec = importlib.util.spec_from_file_location("capsule_tests_imageutil_vm", _IU)
iu = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(iu)

BOOT_TIMEOUT = 240

@pytest.fixture(autouse=True)
def _image_tools():
    iu.require_tools()


def host_mounts_naming(path):
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if path in line]


@pytest.mark.vm_slow
def test_vm_hostile_layer_on_the_root_disk_reaches_nothing_of_the_host(capsule, tmp_path):
    if not iu.agent_is_static(capsule.build):
        pytest.skip("capsule-agent is dynamically linked (a sanitizer build): it cannot be a VM's init")
    victim = tempfile.mkdtemp(prefix="capsule-victim-", dir="/var/tmp")
    try:
        with open(os.path.join(victim, "secret"), "w") as f:
            f.write("host secret\n")
        with open(iu.BUSYBOX, "rb") as f:
            bb = f.read()
        evil = iu.layer_tar([
            iu.Entry("abs", "symlink", link=victim),
            iu.Entry("rel", "symlink", link="../../../../../../.." + victim),
            iu.Entry("suid", data=bb, mode=0o4755),
            iu.Entry("evil-mem", "chr", devmajor=1, devminor=1, mode=0o666),
            iu.Entry("evil-disk", "blk", devmajor=8, devminor=0, mode=0o666),
        ])
        lay = iu.make_layout(str(tmp_path), [iu.busybox_layer(), evil])
        archive = os.path.join(str(tmp_path), "evil.tar")
        with tarfile.open(archive, "w") as t:
            for name in ("oci-layout", "index.json", "blobs"):
                t.add(os.path.join(lay.path, name), arcname=name)
        ref = f"evil/vm-{uuid.uuid4().hex[:8]}:1"
        capsule.run("image", "import", archive, "--name", ref, check=True)

        name = capsule.unique_name("vmevil")
        r = capsule.run("create", "--isolation", "vm", "--name", name, "--image", ref, timeout=BOOT_TIMEOUT)
        assert r.returncode == 0, r.stderr

        def guest(script, user="0"):
            return capsule.run("exec", "-u", user, name, "--", "sh", "-c", script, timeout=120)

        # The links are the guest's: they lead into its own root, where the host folder is not.
        r = guest("readlink /abs; cat /abs/secret /rel/secret 2>&1; mkdir -p \"$(readlink /abs)\" && echo pwned > /abs/pwned "
                  "&& echo pwned > /rel/pwned2 && cat /abs/pwned")
        lines = r.stdout.split("\n")
        assert lines[0] == victim
        assert "host secret" not in r.stdout and lines[-2] == "pwned", r.stdout + r.stderr
        assert sorted(os.listdir(victim)) == ["secret"]
        # The set-uid root file is there, on a root the guest's kernel mounted nosuid (busybox
        # drops set-uid itself, so running it would prove nothing).
        r = guest("stat -c '%u %a' /suid; grep ' / ' /proc/mounts", user="1000")
        mode, mount = r.stdout.split("\n")[:2]
        assert mode == "0 4755" and "nosuid" in mount.split()[3].split(","), r.stdout + r.stderr
        # Device nodes of the layer were never unpacked; one the guest's root makes does not open.
        r = guest("ls /evil-mem /evil-disk 2>&1; mknod /root/mem c 1 1 && head -c 1 /root/mem >/dev/null "
                  "&& echo opened")
        assert "opened" not in r.stdout and "No such file" in r.stdout, r.stdout + r.stderr

        # The host made the disk without mounting anything it can still see, and left nothing.
        vm_dir = os.path.join(capsule.home, "vm")
        assert not host_mounts_naming(vm_dir) and not host_mounts_naming(os.path.join(capsule.home, "run"))
        assert not [n for n in os.listdir(vm_dir) if n.startswith(".rootfs-")]
        capsule.run("rm", "-f", name, check=True, timeout=120)
        assert sorted(os.listdir(victim)) == ["secret"]
    finally:
        shutil.rmtree(victim, ignore_errors=True)
