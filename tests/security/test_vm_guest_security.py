"""A vm guest's own kernel (issue 9, 10, 11 of "Trust"): root in a vm is the guest kernel's real
root, so what a user namespace takes away at the container level must be taken away inside the
guest; its console must not fill the host's disk; its display must be its owner's alone.

One vm with a display serves the module (a boot costs seconds under TCG). Each test tries the
attack: root sets kernel.core_pattern (whose pipe helper would run outside every confinement),
pokes sysrq, floods the console; another host user connects to the VNC server; a guest user
opens the input devices."""
import json
import os
import stat
import subprocess

import pytest

from secutil import Capsule, guest_kernel

BOOT_TIMEOUT = 240
# VM_CONSOLE_LOG_MAX_BYTES (src/shim/vm/vm.h), and room for the line saying the rest was dropped.
CONSOLE_LOG_MAX = 1 << 20
CONSOLE_LOG_SLACK = 200


def _agent_is_static(build):
    r = subprocess.run(["ldd", os.path.join(build, "capsule-agent")], capture_output=True, text=True)
    return "not a dynamic executable" in r.stdout + r.stderr or "statically linked" in r.stdout


@pytest.fixture(scope="module")
def vm(capsule_home):
    """(Capsule, name) of one running vm with a display."""
    c = Capsule(capsule_home)
    if not _agent_is_static(c.build):
        pytest.skip("capsule-agent is dynamically linked (a sanitizer build): it cannot be a VM's init")
    name = c.unique_name("vmguest")
    r = c.run("create", "--isolation", "vm", "--display", "--name", name, timeout=BOOT_TIMEOUT)
    assert r.returncode == 0, r.stderr
    yield c, name
    c.cleanup()


def sh(c, name, script, user="0"):
    return c.run("exec", "-u", user, name, "--", "sh", "-c", script, timeout=BOOT_TIMEOUT)


def status_fields(c, name, fields):
    r = c.run("exec", name, "--", "cat", "/proc/self/status", timeout=BOOT_TIMEOUT, check=True)
    lines = dict(line.split(":\t", 1) for line in r.stdout.splitlines() if ":\t" in line)
    return {k: lines.get(k, "").strip() for k in fields}


def qemu_pid(c, name):
    return c.inspect(name)["vm"]["qemu_pid"]


def tcp_listening_inodes():
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A":
                    inodes.add(fields[9])
    return inodes


def socket_inodes_of(pid):
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if target.startswith("socket:["):
            found.add(target[len("socket:["):-1])
    return found


def test_vm_root_cannot_set_kernel_knobs_and_commands_are_confined_as_a_containers(vm, shared_sandbox, mod_capsule):
    c, name = vm
    # The helper a pipe in core_pattern names would run with every capability, outside seccomp.
    r = sh(c, name, "printf core > /proc/sys/kernel/core_pattern && echo WROTE")
    assert "WROTE" not in r.stdout, "root in the vm wrote kernel.core_pattern"
    r = sh(c, name, "printf 0 > /proc/sysrq-trigger && echo WROTE")
    assert "WROTE" not in r.stdout, "root in the vm wrote /proc/sysrq-trigger"
    r = sh(c, name, "printf 1 > /proc/sys/kernel/sysrq && echo WROTE")
    assert "WROTE" not in r.stdout, "root in the vm wrote kernel.sysrq"
    knobs = sh(c, name, "for k in core_pattern modprobe sysrq modules_disabled; do "
                        "printf '%s=' $k; cat /proc/sys/kernel/$k 2>/dev/null || echo ABSENT; done").stdout
    values = dict(line.split("=", 1) for line in knobs.splitlines())
    assert not values["core_pattern"].startswith("|"), values
    if guest_kernel()["kind"] == "capsule":
        # capsule's own kernel has no module loader and no sysrq at all: no knob to turn.
        assert values["modules_disabled"] == values["modprobe"] == values["sysrq"] == "ABSENT", values
        r = sh(c, name, "test -e /proc/modules || test -e /proc/sysrq-trigger || echo NONE")
        assert r.stdout.strip() == "NONE", r.stdout + r.stderr
    else:
        # No module can be loaded any more, and request_module runs no program.
        assert values["modules_disabled"] == "1" and values["modprobe"] == "" and values["sysrq"] == "0", values
    # The container level's masks, inside the guest.
    # (capsule's own kernel has no /proc/kcore at all: nothing there to mask.)
    r = sh(c, name, "if [ -e /proc/kcore ]; then wc -c < /proc/kcore; else echo 0; fi; ls /proc/acpi 2>/dev/null | wc -l")
    assert r.stdout.split() == ["0", "0"], r.stdout + r.stderr
    # Commands get what a container's commands get: no_new_privs, the seccomp filter, the caps.
    fields = ("NoNewPrivs", "Seccomp", "CapEff", "CapBnd", "CapPrm")
    in_vm = status_fields(c, name, fields)
    in_container = status_fields(mod_capsule, shared_sandbox, fields)
    assert in_vm["NoNewPrivs"] == "1" and in_vm["Seccomp"] == "2", in_vm
    assert in_vm == in_container


def test_vm_console_flood_leaves_a_capped_log_only_its_owner_reads(vm):
    c, name = vm
    # Every way root has to the console: sysrq's help (a few hundred bytes a write) and the
    # console devices, should any be there.
    sh(c, name, "i=0; while [ $i -lt 3000 ]; do echo h > /proc/sysrq-trigger; i=$((i+1)); done 2>/dev/null; "
                "for d in /dev/console /dev/ttyS0 /dev/kmsg; do head -c 3000000 /dev/zero > $d; done 2>/dev/null; true")
    c.run("exec", name, "--", "true", timeout=BOOT_TIMEOUT, check=True)
    log = os.path.join(c.home, "run", name, "console.log")
    st = os.stat(log)
    assert stat.S_IMODE(st.st_mode) == 0o600, oct(st.st_mode)
    assert st.st_size <= CONSOLE_LOG_MAX + CONSOLE_LOG_SLACK, st.st_size


def test_vm_vnc_is_reachable_by_its_owner_alone(vm, other_user):
    c, name = vm
    disp = c.inspect(name)["display"]
    endpoints = [("unix", disp["vnc_socket"])] if "vnc_socket" in disp else []
    if "vnc_port" in disp:
        endpoints.append(("tcp", disp["vnc_port"]))
    assert endpoints, disp
    for family, where in endpoints:
        if family == "unix":
            code = f"import socket; s = socket.socket(socket.AF_UNIX); s.settimeout(10); s.connect({where!r}); " \
                   "print(s.recv(12))"
        else:
            code = f"import socket; s = socket.create_connection(('127.0.0.1', {where}), timeout=10); print(s.recv(12))"
        r = other_user.run(["python3", "-c", code])
        assert r.returncode != 0 and "RFB" not in r.stdout, f"{other_user.name} reached the VNC server at {where}"
    # No TCP port at all: one on 127.0.0.1 is reachable from every --network full sandbox
    # through QEMU's 10.0.2.2.
    listening = tcp_listening_inodes() & socket_inodes_of(qemu_pid(c, name))
    assert not listening, "QEMU listens on TCP"


def test_vm_guest_display_nodes_are_not_world_writable_and_sysrq_is_no_key(vm):
    c, name = vm
    r = c.run("exec", name, "--", "python3", "-c",
              "import glob, json, os\n"
              "nodes = glob.glob('/dev/input/*') + glob.glob('/dev/dri/*') + glob.glob('/dev/fb*') + glob.glob('/dev/tty?')\n"
              "print(json.dumps({n: os.stat(n).st_mode & 0o777 for n in nodes}))",
              timeout=BOOT_TIMEOUT, check=True)
    modes = json.loads(r.stdout)
    assert any(n.startswith("/dev/input/") for n in modes) and "/dev/fb0" in modes and "/dev/tty1" in modes, modes
    assert {n: oct(m) for n, m in modes.items() if m & 0o007} == {}
    # A guest user outside the input group reads no keystroke a viewer types, and injects none.
    # Nor reads or writes the console, whose shell is root's here.
    probe = ("import os\n"
             "for node in ('/dev/input/event0', '/dev/tty1', '/dev/tty0'):\n"
             "    for flags, what in ((os.O_RDONLY, 'READ'), (os.O_WRONLY, 'WROTE')):\n"
             "        try:\n"
             "            os.close(os.open(node, flags | os.O_NONBLOCK | os.O_NOCTTY)); print(what)\n"
             "        except PermissionError:\n"
             "            print('denied')\n")
    r = c.run("exec", "-u", "1000", name, "--", "python3", "-c", probe, timeout=BOOT_TIMEOUT)
    assert r.stdout.split() == ["denied"] * 6, r.stdout + r.stderr
    # Alt+SysRq from a viewer: no such key to send (and sysrq is off in the guest anyway).
    r = c.run("input", name, "key", "alt-sysrq-b", timeout=BOOT_TIMEOUT)
    assert r.returncode != 0 and "unknown key 'sysrq'" in r.stderr, r.stderr
