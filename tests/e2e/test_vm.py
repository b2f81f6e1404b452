"""vm isolation: the same sandboxes as QEMU microVMs (issue 7).

Each boot costs seconds under TCG on a small CI machine, so `make check` runs the few tests
that boot once each (run, a named sandbox's whole life, the guest's isolation) plus those that
fail before any boot; the tests marked vm_slow run in `make check-vm` (CAPSULE_CHECK_VM=1).
"""
import glob
import hashlib
import json
import os
import re
import signal
import struct
import subprocess
import time
import uuid

import pytest

from .helpers import (BUILD, assert_accel_as_the_host_allows, assert_capsule_error, guest_kernel, host_guest_kernel,
                      host_kvm, qemu_procs, run_dir, run_entries, wait_until)
from .imageutil import agent_is_static

BOOT_TIMEOUT = 240  # seconds a CLI call that boots may take here (TCG on 2 shared cores)

# The guest's init is the agent itself, with no libraries beside it: a sanitizer build's
# dynamically linked agent cannot boot (the shim refuses it, see the test at the end).
STATIC_AGENT = agent_is_static(os.environ.get("CAPSULE_BUILD", "build"))
boots = pytest.mark.skipif(not STATIC_AGENT, reason="capsule-agent is dynamically linked (a sanitizer build): "
                           "it cannot be a VM's init")


def guest_kernel_release():
    """The release of the kernel capsule boots (capsule's own where the build made it)."""
    return guest_kernel()["release"]


def refused(capsule, *args):
    """`capsule run --isolation vm ARGS -- true` fails with one line and leaves no folder; its stderr."""
    before = run_entries(capsule)
    r = capsule.run("run", "--isolation", "vm", *args, "--", "true", timeout=BOOT_TIMEOUT)
    assert_capsule_error(r)
    assert run_entries(capsule) == before
    return r.stderr


def create_vm(capsule, *args):
    name = capsule.unique_name("vm")
    r = capsule.run("create", "--isolation", "vm", "--name", name, *args, timeout=BOOT_TIMEOUT)
    assert r.returncode == 0, r.stderr
    return name


# ---- in make check: one boot each ---------------------------------------------------------------


@boots
def test_vm_run_prints_the_guest_kernels_release(capsule):
    before = run_entries(capsule)
    r = capsule.run("run", "--isolation", "vm", "--", "sh", "-c", "uname -r; cat /proc/cmdline; exit 7",
                    timeout=BOOT_TIMEOUT)
    assert r.returncode == 7, r.stderr
    release, cmdline = r.stdout.splitlines()
    assert release == guest_kernel_release()
    # The guest's own kernel command line, which no container could show.
    assert "capsule.vm=1" in cmdline.split()
    # Ephemeral: nothing of it is left, QEMU included.
    assert run_entries(capsule) == before
    assert not [p for p in os.listdir("/proc") if p.isdigit() and _cmdline_has(p, b"capsule.vm=1") and
                _cmdline_has(p, capsule.home.encode())]


def _cmdline_has(pid, needle):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return needle in f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False


@boots
def test_vm_named_sandbox_exec_fs_cp_inspect_stop_rm(capsule, tmp_path):
    name = create_vm(capsule, "--memory", "256M", "--cpus", "2", "-e", "FROM_CREATE=yes")
    info = capsule.inspect(name)
    assert info["isolation"] == "vm" and info["state"] == "running"
    vm = info["vm"]
    assert_accel_as_the_host_allows(vm)
    assert vm["accel_setting"] == "auto"
    assert vm["machine"] == "microvm"
    assert vm["kernel_version"] == guest_kernel_release()
    expected = guest_kernel()
    # capsule's own kernel is an ELF with a PVH entry, loaded as it is; Debian's is a bzImage
    # whose payload is unpacked once (test_vm_boots_the_host_kernel_when_asked).
    assert vm["kernel_kind"] == expected["kind"] and vm["kernel_entry"] == "pvh"
    assert vm["kernel"] == expected["path"] and f"-kernel {expected['path']} " in vm["qemu_command_line"]
    assert info["boot_timeout_ms"] == 60000
    argv = vm["qemu_command_line"].split()
    assert argv[argv.index("-m") + 1] == "256" and argv[argv.index("-smp") + 1] == "2"
    assert vm["qemu_pid"] == info["init_pid"] and qemu_procs(capsule, name) == [vm["qemu_pid"]]
    # QEMU runs under its own seccomp filter (-sandbox on).
    with open(f"/proc/{vm['qemu_pid']}/status") as f:
        assert re.search(r"^Seccomp:\s+2$", f.read(), re.M)

    # --cpus and --memory are the guest's own: its CPUs and its RAM.
    r = capsule.run("exec", name, "--", "sh", "-c", "nproc; sed -n 's/MemTotal: *//p' /proc/meminfo; "
                    "echo $FROM_CREATE; hostname", check=True)
    ncpu, mem, env, host = r.stdout.split("\n")[:4]
    assert ncpu == "2"
    assert 150 * 1024 < int(mem.split()[0]) <= 256 * 1024
    assert env == "yes" and host == name

    # Exit codes, stdin, stderr: the same channel as a container's.
    r = capsule.run("exec", "-i", name, "--", "sh", "-c", "tr a-z A-Z; echo err >&2; exit 3", input="hello vm\n")
    assert (r.returncode, r.stdout, r.stderr) == (3, "HELLO VM\n", "err\n")

    # The filesystem API and cp go through the agent, in the guest.
    capsule.run("fs", name, "write", "/root/note.txt", "written by fs", check=True)
    assert capsule.run("fs", name, "cat", "/root/note.txt", check=True).stdout == "written by fs"
    assert capsule.run("exec", name, "--", "cat", "/root/note.txt", check=True).stdout == "written by fs"
    blob = os.urandom(3 << 20)
    src = tmp_path / "blob"
    src.write_bytes(blob)
    capsule.run("cp", str(src), f"{name}:/tmp/blob", check=True)
    r = capsule.run("exec", name, "--", "sha256sum", "/tmp/blob", check=True)
    assert r.stdout.split()[0] == hashlib.sha256(blob).hexdigest()
    capsule.run("cp", f"{name}:/tmp/blob", str(tmp_path / "back"), check=True)
    assert (tmp_path / "back").read_bytes() == blob
    listing = json.loads(capsule.run("fs", name, "ls", "--json", "/root", check=True).stdout)
    assert "note.txt" in json.dumps(listing)

    qemu = vm["qemu_pid"]
    r = capsule.run("stop", name, timeout=BOOT_TIMEOUT)
    assert r.returncode == 0, r.stderr
    assert capsule.inspect(name)["state"] == "stopped"
    # QEMU was the shim's child: reaped, not left behind.
    assert not os.path.exists(f"/proc/{qemu}") and qemu_procs(capsule, name) == []
    assert capsule.run("rm", name).returncode == 0
    assert not os.path.exists(run_dir(capsule, name))


@boots
def test_vm_guest_sees_neither_host_processes_nor_host_files(capsule):
    # A file the host has outside every share (the sandbox's own state folder included), and
    # a host process with a word in its command line that the guest's script spells in halves.
    tag = uuid.uuid4().hex
    marker = os.path.join(capsule.home, f"host-only-{uuid.uuid4().hex}")
    with open(marker, "w") as f:
        f.write("secret")
    host_proc = subprocess.Popen(["sh", "-c", "sleep 600", tag])
    try:
        script = (
            f"test -e {marker} && echo SEES_MARKER; "
            f"A={tag[:16]}; B={tag[16:]}; "
            # Matched in the shell itself: no process's argv may hold the joined word.
            "n=0; for p in /proc/[0-9]*; do c=$(tr '\\0' ' ' < $p/cmdline 2>/dev/null); "
            "case \"$c\" in *\"$A$B\"*) n=$((n+1));; esac; done; echo $n; "
            "ls /proc | grep -c '^[0-9]'; "
            "touch /usr/capsule-write-test 2>/dev/null && echo WROTE_USR; "
            "cat /etc/hostname; "
            "ls /dev | tr '\\n' ' '; echo"
        )
        r = capsule.run("run", "--isolation", "vm", "--", "sh", "-c", script, timeout=BOOT_TIMEOUT)
        assert r.returncode in (0, 1), r.stderr
        lines = r.stdout.split("\n")
        assert "SEES_MARKER" not in r.stdout
        assert "WROTE_USR" not in r.stdout and not os.path.exists("/usr/capsule-write-test")
        host_seen, nprocs = int(lines[0]), int(lines[1])
        # The sleep is a host process: the guest's /proc has only the guest's own.
        assert host_seen == 0
        assert nprocs < 100
        assert lines[2] == "capsule"  # the image's /etc, not the host's
        # The container level's /dev: no disks, no serial ports, not the agent's port.
        devs = set(lines[3].split())
        assert {"null", "zero", "urandom", "pts", "ptmx", "shm"} <= devs
        assert not [d for d in devs if d.startswith(("vport", "ttyS", "vd", "sd", "mem", "kmsg"))]
    finally:
        host_proc.kill()
        host_proc.wait()
        os.unlink(marker)


# ---- in make check: refused before any boot -----------------------------------------------------


def test_vm_refuses_bad_settings_and_leaves_nothing(capsule, tmp_path):
    # The least memory is the kernel's: capsule's own needs less than Debian's.
    least = "64M" if guest_kernel()["kind"] == "capsule" else "128M"
    for args, word in ((["--memory", "40M"], f"at least {least}"),
                       (["--accel", "warp"], "invalid accel 'warp'")):
        err = refused(capsule, *args)
        assert word in err, err


@pytest.mark.skipif(host_kvm() == "usable", reason="this host's KVM can run a guest: accel kvm would boot")
def test_vm_accel_kvm_where_kvm_cannot_run_a_guest_fails_clearly(capsule):
    err = refused(capsule, "--accel", "kvm")
    assert "accel 'kvm'" in err and "/dev/kvm" in err
    human = capsule.run("doctor", check=True).stdout
    kind = "capsule's own" if guest_kernel()["kind"] == "capsule" else "the host's"
    assert re.search(rf"^  guest kernel +{re.escape(kind)} \({re.escape(guest_kernel()['path'])}\)$", human, re.M), human
    if host_kvm() == "unusable":
        assert "cannot run a guest" in err or "cannot open" in err, err


@boots
def test_vm_accel_auto_takes_tcg_at_once_for_a_device_that_is_no_kvm(capsule):
    # /dev/null opens, but it is no KVM: auto boots on TCG without trying it, and says why;
    # asked for by name, kvm fails instead.
    env = {"CAPSULE_KVM_DEVICE": "/dev/null"}
    name = capsule.unique_name("fb")
    r = capsule.run("create", "--isolation", "vm", "--name", name, env=env, timeout=BOOT_TIMEOUT)
    assert r.returncode == 0, r.stderr
    vm = capsule.inspect(name)["vm"]
    assert vm["accel"] == "tcg" and "-accel tcg" in vm["qemu_command_line"]
    assert vm["accel_fallback"].startswith("'/dev/null' is not a KVM device"), vm
    # One QEMU was ever started: the probe decided before any boot.
    with open(os.path.join(run_dir(capsule, name), "shim.log")) as f:
        boots_logged = re.findall(r"QEMU pid \d+, accel (\w+)", f.read())
    assert boots_logged == ["tcg"], boots_logged
    assert capsule.run("exec", name, "--", "true").returncode == 0
    assert len(qemu_procs(capsule, name)) == 1
    before = run_entries(capsule)
    r = capsule.run("run", "--isolation", "vm", "--accel", "kvm", "--", "true", env=env, timeout=BOOT_TIMEOUT)
    assert_capsule_error(r)
    assert "accel 'kvm'" in r.stderr and "/dev/null" in r.stderr and run_entries(capsule) == before


@pytest.mark.skipif(host_kvm() != "usable", reason="needs a KVM that passes the probe, for QEMU to fail on it")
@boots
def test_vm_accel_auto_falls_back_to_tcg_where_qemu_cannot_use_kvm(capsule, tmp_path):
    # The probe passes; QEMU (a wrapper here) then fails with -accel kvm. The sandbox boots on
    # TCG and says why.
    wrapper = tmp_path / "qemu"
    wrapper.write_text('#!/bin/sh\ncase " $* " in *" -accel kvm "*) echo "no KVM for this test" >&2; exit 1;; esac\n'
                       'exec qemu-system-x86_64 "$@"\n')
    wrapper.chmod(0o755)
    name = capsule.unique_name("fb")
    r = capsule.run("create", "--isolation", "vm", "--name", name, env={"CAPSULE_QEMU": str(wrapper)},
                    timeout=BOOT_TIMEOUT)
    assert r.returncode == 0, r.stderr
    vm = capsule.inspect(name)["vm"]
    assert vm["accel"] == "tcg" and "-accel tcg" in vm["qemu_command_line"]
    assert vm["accel_fallback"].startswith("KVM did not boot the guest: QEMU did not start"), vm
    assert capsule.run("exec", name, "--", "true").returncode == 0


@boots
def test_vm_qemu_refusing_its_arguments_is_reported_with_qemus_words(capsule):
    err = refused(capsule, "--qemu-arg=-no-such-qemu-option")
    assert "QEMU" in err and "no-such-qemu-option" in err, err
    assert not [p for p in os.listdir("/proc") if p.isdigit() and _cmdline_has(p, b"-no-such-qemu-option")]


@boots
def test_vm_initramfs_is_built_once_and_cached(capsule):
    cached = glob.glob(os.path.join(capsule.home, "vm", "initramfs-*.cpio"))
    # The earlier tests of this session booted: exactly one, for this kernel and agent.
    assert len(cached) == 1 and guest_kernel_release() in cached[0]
    assert not glob.glob(os.path.join(capsule.home, "vm", ".tmp-*"))
    names = cpio_names(cached[0])
    assert "capsule-agent" in names and names[-1] == "TRAILER!!!"
    modules = {os.path.basename(n).split("-", 1)[-1] for n in names if n.endswith(".ko") or ".ko." in n}
    # capsule's own kernel has every driver built in: the agent alone, no modules.
    if guest_kernel()["kind"] == "capsule":
        assert not modules and not [n for n in names if n.startswith("modules")], names
    else:
        assert {"virtio_console.ko", "9pnet_virtio.ko", "9p.ko", "virtio_blk.ko", "ext4.ko"} <= modules, names


def cpio_names(path):
    """The member names of a newc cpio archive, in order."""
    data, names, off = open(path, "rb").read(), [], 0
    while off + 110 <= len(data):
        assert data[off:off + 6] == b"070701", f"{path}: no cpio header at {off}"
        filesize, namesize = int(data[off + 54:off + 62], 16), int(data[off + 94:off + 102], 16)
        names.append(data[off + 110:off + 110 + namesize - 1].decode())
        off = (off + 110 + namesize + 3) & ~3
        off = (off + filesize + 3) & ~3
        if names[-1] == "TRAILER!!!":
            break
    return names


def test_the_build_made_capsules_own_guest_kernel():
    """make builds capsule-vmlinux wherever linux-source-6.1 is installed (scripts/install-deps
    installs it): the vm tests then boot it, and a missing one would hide that behind Debian's."""
    if not os.path.exists("/usr/src/linux-source-6.1.tar.xz"):
        pytest.skip("linux-source-6.1 is not installed: the build makes no guest kernel")
    k = guest_kernel()
    assert k["kind"] == "capsule", f"{BUILD}/capsule-vmlinux is missing though linux-source-6.1 is installed"
    assert k["release"].endswith("-capsule")
    with open(k["path"], "rb") as f:
        assert f.read(4) == b"\x7fELF"


def _padding_runs(path):
    """Runs of 16 or more whole pages of zeros or of int3 (0xcc) inside the file data of
    PATH's PT_LOAD segments, and whether PATH has a symbol table."""
    data = open(path, "rb").read()
    phoff, shoff = struct.unpack_from("<QQ", data, 0x20)
    phnum, shentsize, shnum, shstrndx = struct.unpack_from("<HHHH", data, 0x38)
    runs = []
    fill = (bytes(4096), b"\xcc" * 4096)
    for i in range(phnum):
        typ, _, off, _, _, filesz, _, _ = struct.unpack_from("<IIQQQQQQ", data, phoff + i * 56)
        if typ != 1:
            continue
        run = 0
        for page in range((off + 4095) // 4096 * 4096, off + filesz - 4095, 4096):
            run = run + 1 if data[page:page + 4096] in fill else 0
            if run == 16:
                runs.append(page)
    symtab = any(struct.unpack_from("<I", data, shoff + i * shentsize + 4)[0] == 2 for i in range(shnum))
    return runs, symtab


def test_the_guest_kernel_qemu_loads_has_no_padding_pages():
    """scripts/trim-guest-kernel: the kernel QEMU loads has no symbol table and no run of
    padding pages in what it loads (each would be guest RAM written for nothing, and a page
    of QEMU's mapping of the file); the kernel as built had both."""
    k = guest_kernel()
    if k["kind"] != "capsule":
        pytest.skip("no capsule-vmlinux in this build")
    built = os.path.join(BUILD, "capsule-vmlinux-built")
    runs, symtab = _padding_runs(built)
    assert runs and symtab, f"{built}: the check would see nothing to trim"
    runs, symtab = _padding_runs(k["path"])
    assert not runs and not symtab, (k["path"], [hex(r) for r in runs], symtab)


@boots
def test_vm_boots_the_host_kernel_when_asked(capsule, tmp_path):
    """CAPSULE_VM_KERNEL=/boot/vmlinuz-<ver>: Debian's kernel, the fallback where capsule's own
    was not built. Its bzImage payload is unpacked once into the vm store and entered at its PVH
    entry; its initramfs carries the modules the agent loads."""
    host = host_guest_kernel()
    env = {"CAPSULE_VM_KERNEL": host["path"]}
    name = capsule.unique_name("vmhost")
    r = capsule.run("create", "--isolation", "vm", "--name", name, env=env, timeout=BOOT_TIMEOUT)
    assert r.returncode == 0, r.stderr
    try:
        assert capsule.run("exec", name, "--", "uname", "-r", check=True).stdout.strip() == host["release"]
        vm = capsule.inspect(name)["vm"]
        assert vm["kernel_kind"] == "host" and vm["kernel"] == host["path"] and vm["kernel_entry"] == "pvh"
        assert os.path.dirname(vm["pvh_kernel"]) == os.path.join(capsule.home, "vm")
        assert f"-kernel {vm['pvh_kernel']} " in vm["qemu_command_line"]
        with open(vm["pvh_kernel"], "rb") as f:
            assert f.read(4) == b"\x7fELF"
        initramfs = [p for p in glob.glob(os.path.join(capsule.home, "vm", "initramfs-*.cpio"))
                     if os.path.basename(p).startswith(f"initramfs-{host['release']}-")]
        assert len(initramfs) == 1
        modules = {os.path.basename(n).split("-", 1)[-1] for n in cpio_names(initramfs[0])}
        assert {"virtio_console.ko", "9pnet_virtio.ko", "9p.ko", "virtio_blk.ko", "ext4.ko"} <= modules
    finally:
        capsule.run("rm", "-f", name, timeout=BOOT_TIMEOUT)


def test_vm_with_the_host_kernel_needs_the_host_kernels_memory(capsule):
    # 100M is enough for capsule's own kernel, not for Debian's: refused before any boot.
    before = run_entries(capsule)
    r = capsule.run("run", "--isolation", "vm", "--memory", "100M", "--", "true",
                    env={"CAPSULE_VM_KERNEL": host_guest_kernel()["path"]}, timeout=BOOT_TIMEOUT)
    assert_capsule_error(r)
    assert "the host's kernel needs at least 128M" in r.stderr, r.stderr
    assert run_entries(capsule) == before


def test_vm_kernel_that_is_no_kernel_is_refused_clearly(capsule, tmp_path):
    bogus = tmp_path / "my-kernel"
    bogus.write_bytes(b"\x7fELF" + b"\0" * 4096)
    before = run_entries(capsule)
    r = capsule.run("run", "--isolation", "vm", "--", "true", env={"CAPSULE_VM_KERNEL": str(bogus)},
                    timeout=BOOT_TIMEOUT)
    assert_capsule_error(r)
    assert f"kernel '{bogus}' is neither named vmlinuz-<version> nor an x86-64 ELF kernel" in r.stderr, r.stderr
    assert run_entries(capsule) == before


# ---- make check-vm only -------------------------------------------------------------------------


@pytest.mark.vm_slow
@boots
def test_vm_extra_qemu_args_and_accel_tcg_reach_qemu(capsule):
    name = create_vm(capsule, "--accel", "tcg", "--qemu-arg", "-device", "--qemu-arg", "virtio-rng-device")
    vm = capsule.inspect(name)["vm"]
    assert vm["accel"] == "tcg" and vm["accel_setting"] == "tcg"
    assert vm["extra_qemu_args"] == ["-device", "virtio-rng-device"]
    assert vm["qemu_command_line"].endswith("-device virtio-rng-device")
    # virtio device id 4 is an entropy source: the guest sees the device we added.
    r = capsule.run("exec", name, "--", "sh", "-c", "cat /sys/bus/virtio/devices/*/device", check=True)
    assert "0x0004" in r.stdout.split()


@pytest.mark.vm_slow
@boots
def test_vm_boot_timeout_too_short_fails_and_leaves_nothing(capsule):
    err = refused(capsule, "--boot-timeout", "200ms")
    assert "boot timeout" in err and "200 ms" in err


@pytest.mark.vm_slow
@boots
def test_vm_killed_shim_takes_qemu_with_it(capsule):
    name = create_vm(capsule)
    info = capsule.inspect(name)
    qemu = info["vm"]["qemu_pid"]
    os.kill(info["shim_pid"], signal.SIGKILL)
    assert wait_until(lambda: not os.path.exists(f"/proc/{qemu}") or _is_zombie(qemu), timeout=30)
    # The next command sees it stopped, and it starts again.
    assert wait_until(lambda: capsule.inspect(name)["state"] == "stopped", timeout=30)
    r = capsule.run("start", name, timeout=BOOT_TIMEOUT)
    assert r.returncode == 0, r.stderr
    assert capsule.run("exec", name, "--", "uname", "-r", check=True).stdout.strip() == guest_kernel_release()


@pytest.mark.vm_slow
@boots
def test_vm_own_kernel_boots_without_acpi_with_its_cpus_and_least_memory(capsule):
    """capsule's own kernel has no ACPI: QEMU runs microvm with acpi=off, the devices come from
    the command line and the CPUs from the MP table. Two CPUs are two CPUs in the guest, the
    least memory boots, and the guest's end (a reset: no power-off device) ends `run`."""
    if guest_kernel()["kind"] != "capsule":
        pytest.skip("capsule's own kernel was not built: Debian's boots with ACPI")
    before = run_entries(capsule)
    r = capsule.run("run", "--isolation", "vm", "--cpus", "2", "--memory", "64M", "--", "sh", "-c",
                    "nproc; grep -c ^processor /proc/cpuinfo; test -d /sys/firmware/acpi && echo acpi; "
                    "grep MemTotal /proc/meminfo; cat /proc/cmdline; exit 3", timeout=BOOT_TIMEOUT)
    assert r.returncode == 3, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "2" and lines[1] == "2", r.stdout
    assert "acpi" not in lines
    mem_kib = int(lines[2].split()[1])
    assert 32 << 10 < mem_kib <= 64 << 10, lines[2]
    # QEMU named the devices itself: no ACPI told the kernel where they are.
    assert "virtio_mmio.device=" in lines[3] and " reboot=t " in f" {lines[3]} ", lines[3]
    assert run_entries(capsule) == before


def _guest_ram_rss_kib(qemu_pid, guest_bytes):
    """Resident KiB of QEMU's guest RAM: its anonymous mapping of exactly the guest's size."""
    rss, size, found = None, None, []
    with open(f"/proc/{qemu_pid}/smaps") as f:
        for line in f:
            m = re.match(r"([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ 0\s*$", line)
            if m:
                size = int(m.group(2), 16) - int(m.group(1), 16)
            elif re.match(r"[0-9a-f]+-[0-9a-f]+ ", line):
                size = None
            elif line.startswith("Rss:") and size == guest_bytes:
                found.append(int(line.split()[1]))
    assert len(found) == 1, f"no single anonymous mapping of {guest_bytes} bytes in QEMU: {found}"
    return found[0]


@pytest.mark.vm_slow
@boots
def test_vm_memory_the_guest_frees_goes_back_to_the_host(capsule):
    """Free page reporting (virtio-balloon, CONFIG_PAGE_REPORTING): 256 MiB touched and freed
    in the guest leave QEMU's resident guest RAM, not stay there until the vm ends."""
    name = create_vm(capsule)
    try:
        qemu = capsule.inspect(name)["vm"]["qemu_pid"]
        guest = 512 << 20
        before = _guest_ram_rss_kib(qemu, guest)
        # The agent lowers the reporting order from 4 MiB blocks to 32 KiB ones (vm_boot.c).
        order = capsule.run("exec", name, "--", "cat", "/sys/module/page_reporting/parameters/page_reporting_order",
                            check=True).stdout.strip()
        assert order == "3", order
        # The allocation holds its bytes while the host looks, so the rise is seen, not guessed.
        p = capsule.popen("exec", name, "--", "python3", "-c",
                          "import os, time; b = b'x' * (256 << 20); print('ready', flush=True)\n"
                          "while not os.path.exists('/tmp/go'): time.sleep(0.1)",
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert p.stdout.readline().strip() == b"ready", p.stderr.read()
            peak = _guest_ram_rss_kib(qemu, guest)
            capsule.run("exec", name, "--", "touch", "/tmp/go", check=True)
            assert p.wait(timeout=60) == 0
        finally:
            p.kill()
            p.wait()
        assert peak - before >= 200 << 10, (before, peak)
        # Reporting runs a couple of seconds after pages are freed, in 2 MiB blocks: most of the
        # 256 MiB comes back, not necessarily every block.
        assert wait_until(lambda: _guest_ram_rss_kib(qemu, guest) <= before + (64 << 10), timeout=60, interval=1), \
            (before, peak, _guest_ram_rss_kib(qemu, guest))
    finally:
        capsule.run("rm", "-f", name, timeout=BOOT_TIMEOUT)


def _is_zombie(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.vm_slow
@boots
def test_vm_tty_exec_and_process_signals(capsule):
    name = create_vm(capsule)
    p = capsule.popen("exec", name, "--", "sleep", "1000", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(2)
    p.send_signal(signal.SIGINT)
    p.wait(timeout=60)
    r = capsule.run("exec", name, "--", "sh", "-c", "ps -e -o comm= | grep -c '^sleep$' || true", check=True)
    assert r.stdout.strip() == "0"
    r = capsule.run("exec", "-t", name, "--", "sh", "-c", "test -t 0 && tty", check=True)
    assert "/dev/pts/" in r.stdout


@pytest.mark.vm_slow
@boots
def test_vm_writes_stay_in_the_guest(capsule):
    name = create_vm(capsule)
    capsule.run("exec", name, "--", "sh", "-c", "echo x > /etc/capsule-vm-test; rm -f /etc/os-release", check=True)
    skel = glob.glob(os.path.join(capsule.home, "images", "host-v1-*"))
    assert skel and all(not os.path.exists(os.path.join(s, "etc", "capsule-vm-test")) for s in skel)
    assert all(os.path.lexists(os.path.join(s, "etc", "os-release")) for s in skel if
               os.path.lexists("/etc/os-release"))
    r = capsule.run("exec", name, "--", "sh", "-c", "echo x > /usr/x", timeout=60)
    assert r.returncode != 0 and "Read-only file system" in r.stderr


def test_doctor_reports_the_vm_level_usable_with_its_kernel(capsule):
    d = json.loads(capsule.run("doctor", "--json", check=True).stdout)
    assert d["vm_usable"] is True and d["qemu"] is True
    assert d["vm_kernel"] == guest_kernel()["path"] and d["vm_kernel_kind"] == guest_kernel()["kind"]
    assert d["vm_accel"] == ("kvm" if d["kvm"] else "tcg")
    # "kvm" means a guest can run there, not merely that /dev/kvm opens.
    assert d["kvm"] == (host_kvm() == "usable") and d["kvm_device"] == os.path.exists("/dev/kvm")
    if host_kvm() == "unusable":
        assert d["kvm_reason"].startswith("'/dev/kvm' ") and "cannot" in d["kvm_reason"], d
        human = capsule.run("doctor", check=True).stdout
        assert re.search(r"^  /dev/kvm +no: '/dev/kvm' ", human, re.M), human


@pytest.mark.skipif(STATIC_AGENT, reason="capsule-agent is statically linked: it boots")
def test_vm_with_a_dynamically_linked_agent_is_refused_clearly(capsule):
    err = refused(capsule)
    assert "statically linked capsule-agent" in err, err
