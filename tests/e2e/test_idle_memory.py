"""An idle sandbox's memory (issue 19): its shim and agent under 2 MiB VmRSS together, the
target of bench/run's row 3. An idle shim keeps mapped every 64 KiB of its text that its start
ran (the kernel's fault-around), so the budget holds for the musl-built shim, whose vm level is
linked on 64 KiB blocks of its own (tools/musl-cold.ld) that a container's shim never maps."""
import os
import shutil
import struct
import subprocess

import pytest

pytestmark = pytest.mark.plain_build_only


def shim_binary(capsule):
    return capsule.env.get("CAPSULE_LIBEXEC", capsule.build) + "/capsule-shim"


def musl_shim(capsule):
    # glibc's static start carries its tunables' names; musl has none.
    with open(shim_binary(capsule), "rb") as f:
        return b"glibc.malloc." not in f.read()


def vmrss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def pagemap_entry(pid, addr):
    with open(f"/proc/{pid}/pagemap", "rb") as f:
        f.seek(addr // 4096 * 8)
        return struct.unpack("<Q", f.read(8))[0]


def page_mapped(pid, addr):
    """Whether the page at ADDR is in PID's page tables (/proc/PID/pagemap's present bit)."""
    return bool(pagemap_entry(pid, addr) >> 63)


def folio_start(pid, addr):
    """The address where the page cache folio holding PID's mapped page at ADDR begins: ADDR's
    page itself unless it is a tail page of a large folio (/proc/kpageflags: KPF_COMPOUND_TAIL
    is bit 16). Linux 6.18 maps a large folio whole on a fault in any of its pages."""
    page = addr // 4096 * 4096
    with open("/proc/kpageflags", "rb") as flags:
        while True:
            pfn = pagemap_entry(pid, page) & ((1 << 55) - 1)
            flags.seek(pfn * 8)
            if not pfn or not (struct.unpack("<Q", flags.read(8))[0] >> 16) & 1:
                return page
            page -= 4096


def libexec_with_a_fresh_shim(build, into):
    """A libexec folder (CAPSULE_LIBEXEC) whose shim is a copy written a page at a time, the
    other helpers the build's. Linux 6.18 maps a large page cache folio whole on a fault in any
    of its pages, and a sequential read of the build's shim (nm, a copy, a linker's big write;
    read_ahead_kb is 2.5 MiB here) leaves it in folios that span the vm level's 64 KiB
    alignment, while any running shim keeps them cached: the copy's are single pages, as an
    exec's own read-around makes them."""
    os.makedirs(into)
    for name in os.listdir(build):
        if name.startswith("capsule-") and name != "capsule-shim" and os.access(os.path.join(build, name), os.X_OK):
            os.symlink(os.path.join(build, name), os.path.join(into, name))
    dst = os.path.join(into, "capsule-shim")
    with open(os.path.join(build, "capsule-shim"), "rb") as src, open(dst, "wb") as out:
        while chunk := src.read(4096):
            out.write(chunk)
            out.flush()
    os.chmod(dst, 0o755)
    return dst


@pytest.fixture
def idle(capsule, tmp_path):
    r = subprocess.run(["ldd", shim_binary(capsule)], capture_output=True, text=True)
    if "not a dynamic executable" not in r.stdout + r.stderr and "statically linked" not in r.stdout:
        pytest.skip("the shim is linked dynamically (static_helpers off)")
    if not shutil.which("musl-gcc"):
        pytest.skip("no musl-gcc: the shim is linked with glibc, and the budget is the musl shim's")
    assert musl_shim(capsule), "musl-gcc is there, yet the shim is linked with glibc"
    capsule.env["CAPSULE_LIBEXEC"] = os.path.dirname(
        libexec_with_a_fresh_shim(capsule.build, os.path.join(tmp_path, "libexec")))
    name = capsule.create()
    info = capsule.inspect(name)
    assert os.readlink(f"/proc/{info['shim_pid']}/exe") == shim_binary(capsule)
    return info["shim_pid"], info["init_pid"]


def test_an_idle_container_sandbox_stays_under_two_mib(idle):
    shim, agent = idle
    total = vmrss_kib(shim) + vmrss_kib(agent)
    assert total < 2048, f"shim {vmrss_kib(shim)} KiB + agent {vmrss_kib(agent)} KiB VmRSS"


def test_a_container_sandboxs_shim_never_maps_its_vm_level(idle, capsule):
    shim, _ = idle
    syms = subprocess.run(["nm", "--defined-only", shim_binary(capsule)], capture_output=True, text=True,
                          check=True).stdout.split("\n")
    # vm_start (vm/qemu.c) boots QEMU: a container sandbox's start never calls it.
    addr = next(int(s.split()[0], 16) for s in syms if s.endswith(" vm_start"))
    assert not page_mapped(shim, addr), \
        f"vm_start's page {addr:#x} is mapped in a container's shim (its folio from {folio_start(shim, addr):#x})"
    # The check can fail: the shim's own start is mapped.
    main = next(int(s.split()[0], 16) for s in syms if s.endswith(" main"))
    assert page_mapped(shim, main)
