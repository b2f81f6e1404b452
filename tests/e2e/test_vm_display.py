"""vm display (issue 7, quicksand's enable_display): --display gives the guest a virtio GPU,
keyboard and tablet and a VNC server on a unix socket in the run folder; `capsule screenshot` and `capsule input`
go through QMP.

One vm with a display serves the whole module (each boot costs seconds under TCG). `make check`
runs three of its tests (the console among them) and the refusals that boot nothing; the rest are
vm_slow (make check-vm).
"""
import importlib.util
import json
import os
import socket
import struct
import subprocess
import zlib

import pytest

from .helpers import assert_capsule_error, run_dir, run_entries, wait_until
from .imageutil import agent_is_static

BOOT_TIMEOUT = 240  # seconds a CLI call that boots may take here (TCG on 2 shared cores)
STATIC_AGENT = agent_is_static(os.environ.get("CAPSULE_BUILD", "build"))
boots = pytest.mark.skipif(not STATIC_AGENT, reason="capsule-agent is dynamically linked (a sanitizer build): "
                           "it cannot be a VM's init")

# linux/input-event-codes.h
EV_KEY, EV_ABS = 1, 3
ABS_X, ABS_Y = 0, 1
BTN_LEFT, BTN_RIGHT = 0x110, 0x111
KEY = {"esc": 1, "1": 2, "2": 3, "e": 18, "r": 19, "t": 20, "i": 23, "o": 24, "enter": 28, "ctrl": 29,
       "h": 35, "l": 38, "shift": 42, "c": 46, "alt": 56, "space": 57, "f12": 88, "delete": 111}

# Runs in the guest: prints "ready", then every input event of the evdev nodes it is given as a
# JSON line [node, type, code, value] until both end markers were released: F12 on the keyboard
# and the middle button on the tablet. Each device has its own virtqueue and interrupt, so the
# guest may deliver the keyboard's F12 before the tablet's last events (or the other way round):
# ending at the first marker once lost a right click. A device's own events stay in order, so
# its marker comes after everything sent to it before. The markers are not printed.
EVDEV_READER = r"""
import json, os, select, struct, sys, time
fds = {os.open(p, os.O_RDONLY | os.O_NONBLOCK): p for p in sys.argv[1:]}
markers = {88, 0x112}  # KEY_F12, BTN_MIDDLE
released = set()
print("ready", flush=True)
deadline = time.monotonic() + 180
while time.monotonic() < deadline:
    ready, _, _ = select.select(list(fds), [], [], 1)
    for fd in ready:
        data = os.read(fd, 24 * 64)
        for i in range(0, len(data) - len(data) % 24, 24):
            _, _, typ, code, value = struct.unpack("qqHHi", data[i:i + 24])
            if typ == 0:
                continue
            if typ == 1 and code in markers:
                if value == 0:
                    released.add(code)
                continue
            print(json.dumps([fds[fd], typ, code, value]), flush=True)
    if released == markers:
        sys.exit(0)
sys.exit(3)
"""


def png_decode(data):
    """(width, height, rows of RGB bytes) of an 8-bit RGB PNG, as QEMU writes them."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + n]
        assert zlib.crc32(kind + chunk) == struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])[0], "bad CRC"
        pos += 12 + n
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", chunk[:10])
            assert (depth, color) == (8, 2), "not 8-bit RGB"
        elif kind == b"IDAT":
            idat += chunk
        elif kind == b"IEND":
            break
    raw, stride, bpp = zlib.decompress(idat), width * 3, 3
    rows, prev, i = [], bytearray(stride), 0
    for _ in range(height):
        f, line = raw[i], bytearray(raw[i + 1:i + 1 + stride])
        i += 1 + stride
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if f == 1:
                line[x] = (line[x] + a) & 255
            elif f == 2:
                line[x] = (line[x] + b) & 255
            elif f == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, rows


def pixel(rows, x, y):
    return tuple(rows[y][3 * x:3 * x + 3])


def capsule_class():
    """tests/conftest.py's Capsule, for a module-scoped fixture (the capsule fixture is per test).
    Loaded by path: with tests/python collected too, "conftest" names another module."""
    spec = importlib.util.spec_from_file_location("capsule_tests_root_conftest_display",
                                                  os.path.join(os.path.dirname(os.path.dirname(__file__)), "conftest.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.Capsule


@pytest.fixture(scope="module")
def display_vm(capsule_home):
    """One running vm with a display: (Capsule, name)."""
    if not STATIC_AGENT:
        pytest.skip("capsule-agent is dynamically linked (a sanitizer build): it cannot be a VM's init")
    c = capsule_class()(capsule_home)
    name = c.unique_name("disp")
    r = c.run("create", "--isolation", "vm", "--display", "--name", name, timeout=BOOT_TIMEOUT)
    assert r.returncode == 0, r.stderr
    yield c, name
    c.cleanup()


def guest(c, name, script, *args, check=True):
    return c.run("exec", name, "--", "python3", "-c", script, *args, timeout=BOOT_TIMEOUT, check=check)


def screenshot(c, name, tmp_path, file="shot.png"):
    out = tmp_path / file
    r = c.run("screenshot", name, str(out), timeout=BOOT_TIMEOUT)
    assert r.returncode == 0, r.stderr
    return out.read_bytes()


def guest_screen_size(c, name):
    r = c.run("exec", name, "--", "cat", "/sys/class/graphics/fb0/virtual_size", check=True)
    w, h = r.stdout.strip().split(",")
    return int(w), int(h)


def record_input(c, name, send):
    """Read the guest's input events while SEND() acts, up to both devices' end markers; the events."""
    nodes = sorted(f"/dev/input/{n}" for n in c.run("exec", name, "--", "ls", "/dev/input", check=True).stdout.split())
    assert len(nodes) == 2, nodes
    p = c.popen("exec", name, "--", "python3", "-c", EVDEV_READER, *nodes, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
        send()
        for marker in (["key", "f12"], ["mouse", "click", "middle"]):
            r = c.run("input", name, *marker)
            assert r.returncode == 0, r.stderr
        out, err = p.communicate(timeout=BOOT_TIMEOUT)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, f"reader exited {p.returncode}: {err}"
    return [json.loads(line) for line in out.splitlines()]


# Runs in the guest: the pid of the console's shell (the leader of the session whose terminal is
# tty1, major 4 minor 1), or nothing while none runs.
CONSOLE_SHELL = r"""
import os
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        continue
    fields = stat[stat.rindex(")") + 2:].split()
    if int(fields[4]) == (4 << 8 | 1) and int(fields[3]) == int(pid):
        print(pid)
"""


def console_shell(c, name):
    return guest(c, name, CONSOLE_SHELL).stdout.split()


def lit_rows(rows, width, y0, y1):
    """How many pixel rows of Y0..Y1 have a pixel other than the background (the screen's bottom
    right corner's colour), and how many distinct colours the band has."""
    background = pixel(rows, width - 1, len(rows) - 1)
    lit, colours = 0, set()
    for y in range(y0, y1):
        row = {rows[y][3 * x:3 * x + 3] for x in range(width)}
        colours |= row
        lit += len(row - {bytes(background)}) > 0
    return lit, len(colours)


def type_text(c, name, text):
    r = c.run("input", name, "type", text)
    assert r.returncode == 0, r.stderr


def guest_file(c, name, path):
    r = c.run("exec", name, "--", "cat", path)
    return r.stdout if r.returncode == 0 else None


def console_ready(c, name):
    """Clear whatever an earlier test left on the console's line (ctrl-c), then wait until the
    shell runs a line typed after it: the tty flushes its input when the ctrl-c's signal is
    delivered, so keys typed before the guest got that far are lost."""
    r = c.run("input", name, "key", "ctrl-c")
    assert r.returncode == 0, r.stderr
    # A line that lost its first keys to the flush still ends with its newline, so the next
    # attempt starts on an empty line.
    for attempt in range(5):
        marker = f"ready{attempt}"
        type_text(c, name, f"echo {marker} > /tmp/console-ready\n")
        if wait_until(lambda: guest_file(c, name, "/tmp/console-ready") == marker + "\n", timeout=10, interval=0.5):
            return
    raise AssertionError("the console shell never ran a typed line")


def key_downs(events):
    return [code for _, typ, code, value in events if typ == EV_KEY and value == 1]


# ---- make check: one boot for both ----------------------------------------------------------------


@boots
def test_display_vnc_on_its_socket_screenshot_at_guest_resolution_and_dev_nodes(display_vm, tmp_path):
    c, name = display_vm
    info = c.inspect(name)
    disp = info["display"]
    assert disp["enabled"] is True and "vnc_port" not in disp
    assert disp["vnc_socket"] == os.path.join(run_dir(c, name), "vnc.sock")
    # A VNC server that speaks RFB, on the owner's socket.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(disp["vnc_socket"])
        banner = s.recv(12)
    assert banner.startswith(b"RFB 003.00") and banner.endswith(b"\n"), banner
    qemu_argv = info["vm"]["qemu_command_line"].split()
    assert "virtio-gpu-device" in qemu_argv and "virtio-keyboard-device" in qemu_argv
    assert "virtio-tablet-device" in qemu_argv

    # The screenshot is a whole PNG of the guest's own framebuffer size.
    width, height, rows = png_decode(screenshot(c, name, tmp_path))
    assert (width, height) == guest_screen_size(c, name)
    assert len(rows) == height

    # The sandbox's /dev has what a GUI program needs, and nothing else of the guest's.
    r = c.run("exec", name, "--", "sh", "-c", "cd /dev && ls -1 . dri input", check=True)
    listing = r.stdout
    assert "fb0" in listing.split() and "card0" in listing.split()
    assert sorted(n for n in c.run("exec", name, "--", "ls", "/dev/input", check=True).stdout.split()) == \
        ["event0", "event1"]
    top = set(c.run("exec", name, "--", "ls", "/dev", check=True).stdout.split())
    assert top == {"dri", "fb0", "input", "fd", "full", "mqueue", "null", "ptmx", "pts", "random", "shm", "stderr",
                   "stdin", "stdout", "tty", "tty0", "tty1", "tty2", "urandom", "zero"}


@boots
def test_display_shows_a_console_shell_that_typed_input_reaches(display_vm, tmp_path):
    c, name = display_vm
    # A fresh vm's screen is the console: a banner and a prompt in its top rows, drawn in
    # more than one colour, on a background that fills the rest.
    width, height, rows = png_decode(screenshot(c, name, tmp_path))
    lit, colours = lit_rows(rows, width, 0, 64)
    assert colours >= 2 and lit >= 16, (lit, colours)
    assert lit_rows(rows, width, height - 64, height)[0] == 0

    # Typed keys reach the shell on it; it is confined as `capsule exec` is (the same
    # capabilities, seccomp filter and no_new_privs) and runs on tty1.
    status = "grep -E '^(Cap|NoNewPrivs|Seccomp)' /proc/self/status"
    console_ready(c, name)
    type_text(c, name, f"echo hello > /tmp/typed; {status} > /tmp/console-status; tty > /tmp/console-tty\n")
    # The line's last command written: the whole line ran (a file exists before it is written).
    assert wait_until(lambda: (guest_file(c, name, "/tmp/console-tty") or "").endswith("\n"), timeout=60, interval=0.5)
    assert guest_file(c, name, "/tmp/console-tty") == "/dev/tty1\n"
    assert guest_file(c, name, "/tmp/typed") == "hello\n"
    confinement = c.run("exec", name, "--", "sh", "-c", status, check=True).stdout
    assert "NoNewPrivs:\t1" in confinement and "Seccomp:\t2" in confinement
    assert guest_file(c, name, "/tmp/console-status") == confinement

    # `exit` ends the shell and a new one takes the console, as getty would start one.
    first = console_shell(c, name)
    assert len(first) == 1, first
    type_text(c, name, "exit\n")
    assert wait_until(lambda: console_shell(c, name) not in ([], first), timeout=60, interval=0.5)
    type_text(c, name, "echo again > /tmp/typed-again\n")
    assert wait_until(lambda: guest_file(c, name, "/tmp/typed-again") == "again\n", timeout=60, interval=0.5)


@boots
def test_display_input_type_arrives_as_key_events_in_the_guest(display_vm):
    c, name = display_vm

    def send():
        r = c.run("input", name, "type", "Hi there")
        assert r.returncode == 0, r.stderr

    events = record_input(c, name, send)
    keyboard = {node for node, typ, code, _ in events if typ == EV_KEY and code == KEY["h"]}
    assert len(keyboard) == 1
    k = KEY
    assert key_downs(events) == [k["shift"], k["h"], k["i"], k["space"], k["t"], k["h"], k["e"], k["r"], k["e"]]
    # Every key that went down came up.
    downs = [code for _, typ, code, v in events if typ == EV_KEY and v == 1]
    ups = [code for _, typ, code, v in events if typ == EV_KEY and v == 0]
    assert sorted(downs) == sorted(ups)


# ---- refusals that boot nothing ---------------------------------------------------------------------


def test_display_refused_for_a_container(capsule):
    before = run_entries(capsule)
    r = capsule.run("run", "--display", "--", "true")
    assert_capsule_error(r)
    assert "--isolation vm" in r.stderr
    assert run_entries(capsule) == before


def test_screenshot_and_input_of_a_container_are_refused(capsule, sandbox, tmp_path):
    out = tmp_path / "x.png"
    r = capsule.run("screenshot", sandbox, str(out))
    assert_capsule_error(r)
    assert "has no display" in r.stderr and sandbox in r.stderr
    assert not out.exists()
    r = capsule.run("input", sandbox, "type", "x")
    assert_capsule_error(r)
    assert "has no display" in r.stderr


def test_input_bad_coordinates_and_actions_are_usage_errors(capsule):
    for args, word in ((["mouse", "move", "-1", "5"], "'-1'"), (["mouse", "move", "10", "y"], "'y'"),
                       (["jump"], "'jump'"), (["mouse", "move", "1"], "X and Y")):
        r = capsule.run("input", "nosuch", *args)
        assert_capsule_error(r)
        assert word in r.stderr


# ---- make check-vm ----------------------------------------------------------------------------------


@pytest.mark.vm_slow
@boots
def test_display_framebuffer_writes_show_in_the_screenshot(display_vm, tmp_path):
    c, name = display_vm
    # Left half one colour, right half another, written through /dev/fb0 in the guest.
    fill = r"""
import sys
w, h = (int(v) for v in open("/sys/class/graphics/fb0/virtual_size").read().split(","))
bpp = int(open("/sys/class/graphics/fb0/bits_per_pixel").read())
stride = int(open("/sys/class/graphics/fb0/stride").read())
assert bpp == 32, bpp
left, right = bytes([0x56, 0x34, 0x12, 0]), bytes([0x10, 0xc0, 0xe0, 0])
line = (left * (w // 2) + right * (w - w // 2)).ljust(stride, b"\0")
with open("/dev/fb0", "wb") as f:
    f.write(line * h)
"""
    guest(c, name, fill)
    w, h = guest_screen_size(c, name)

    def painted():
        _, _, rows = png_decode(screenshot(c, name, tmp_path))
        return pixel(rows, w // 4, h // 2) == (0x12, 0x34, 0x56) and pixel(rows, 3 * w // 4, h // 2) == (0xe0, 0xc0, 0x10)

    assert wait_until(painted, timeout=60, interval=0.5)
    # And back: a different pattern changes the pixels again.
    guest(c, name, fill.replace("0x56, 0x34, 0x12", "0x00, 0x00, 0xff"))

    def repainted():
        _, _, rows = png_decode(screenshot(c, name, tmp_path))
        return pixel(rows, w // 4, h // 2) == (0xff, 0, 0)

    assert wait_until(repainted, timeout=60, interval=0.5)


@pytest.mark.vm_slow
@boots
def test_display_mouse_move_and_click_arrive_on_the_tablet(display_vm):
    c, name = display_vm
    w, h = guest_screen_size(c, name)
    x, y = w // 5, h // 3

    def send():
        for args in (["mouse", "move", str(x), str(y)], ["mouse", "click"], ["mouse", "click", "right"]):
            r = c.run("input", name, *args)
            assert r.returncode == 0, r.stderr

    events = record_input(c, name, send)
    abs_events = {(code, value) for _, typ, code, value in events if typ == EV_ABS}
    assert (ABS_X, x * 0x7FFF // w) in abs_events and (ABS_Y, y * 0x7FFF // h) in abs_events
    tablet = {node for node, typ, _, _ in events if typ == EV_ABS}
    assert len(tablet) == 1
    buttons = [(code, value) for node, typ, code, value in events if typ == EV_KEY and node in tablet]
    assert buttons == [(BTN_LEFT, 1), (BTN_LEFT, 0), (BTN_RIGHT, 1), (BTN_RIGHT, 0)]


@pytest.mark.vm_slow
@boots
def test_display_key_combinations_hold_modifiers_and_ctrl_alt_delete_keeps_the_vm(display_vm):
    c, name = display_vm

    def send():
        for spec in ("ctrl-c", "ctrl+alt+delete", "Enter", "!"):
            r = c.run("input", name, "key", spec)
            assert r.returncode == 0, r.stderr

    events = record_input(c, name, send)
    k = KEY
    seq = [(code, v) for _, typ, code, v in events if typ == EV_KEY]
    assert seq == [(k["ctrl"], 1), (k["c"], 1), (k["c"], 0), (k["ctrl"], 0),
                   (k["ctrl"], 1), (k["alt"], 1), (k["delete"], 1), (k["delete"], 0), (k["alt"], 0), (k["ctrl"], 0),
                   (k["enter"], 1), (k["enter"], 0),
                   (k["shift"], 1), (k["1"], 1), (k["1"], 0), (k["shift"], 0)]
    # ctrl-alt-delete is a key like any other: the guest did not reboot (which would end the vm).
    assert c.run("exec", name, "--", "true").returncode == 0
    assert c.inspect(name)["state"] == "running"


@pytest.mark.vm_slow
@boots
def test_display_bad_keys_text_and_positions_are_refused_naming_them(display_vm):
    c, name = display_vm
    w, h = guest_screen_size(c, name)
    for args, word in ((["key", "ctrl-nosuchkey"], "'nosuchkey'"), (["key", "ctrl--"], "empty key name"),
                       (["type", "caf\u00e9"], "character '\u00e9' (character 4 of the text)"),
                       (["type", "a\x01"], "character '\\x01' (character 2"),
                       (["mouse", "click", "wheel"], "'wheel'"),
                       (["mouse", "move", str(w), "0"], f"({w}, 0)"), (["mouse", "move", "0", str(h + 5)], f"{w}x{h}")):
        r = c.run("input", name, *args)
        assert_capsule_error(r)
        assert word in r.stderr, (args, r.stderr)
    assert c.inspect(name)["state"] == "running"


@pytest.mark.vm_slow
@boots
def test_screenshot_of_a_vm_without_display_is_refused(capsule, tmp_path):
    name = capsule.unique_name("nodisp")
    r = capsule.run("create", "--isolation", "vm", "--name", name, timeout=BOOT_TIMEOUT)
    assert r.returncode == 0, r.stderr
    assert capsule.inspect(name)["display"] == {"enabled": False}
    assert "virtio-gpu-device" not in capsule.inspect(name)["vm"]["qemu_command_line"]
    out = tmp_path / "x.png"
    r = capsule.run("screenshot", name, str(out))
    assert_capsule_error(r)
    assert "without a display" in r.stderr and "--display" in r.stderr
    assert not out.exists()
    r = capsule.run("input", name, "key", "a")
    assert_capsule_error(r)
    # Without a display the guest's /dev is the container level's, and the guest has no GPU:
    # no module for one is loaded (Debian's kernel), no device is bound to its driver (both).
    r = capsule.run("exec", name, "--", "sh", "-c",
                    "ls /dev; cat /proc/modules 2>/dev/null; "
                    "echo GPU=$(ls /sys/bus/virtio/drivers/virtio_gpu 2>/dev/null | grep -c '^virtio')", check=True)
    assert "fb0" not in r.stdout.split() and "dri" not in r.stdout.split()
    assert "virtio_gpu " not in r.stdout and "drm " not in r.stdout and "GPU=0" in r.stdout.split(), r.stdout

# ---- a graphical program: X and xterm -------------------------------------------------------------

XORG_CONF = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                         "vm", "display", "xorg.conf")
# The guest runs the host's /usr (the default disk mode): X is there when scripts/install-deps put it there.
X_PROGRAMS = ("/usr/lib/xorg/Xorg", "/usr/lib/xorg/modules/drivers/fbdev_drv.so",
              "/usr/lib/xorg/modules/input/evdev_drv.so", "/usr/bin/xterm", "/usr/share/fonts/X11/misc")
X_MISSING = [p for p in X_PROGRAMS if not os.path.exists(p)]


@pytest.mark.vm_slow
@boots
@pytest.mark.skipif(bool(X_MISSING), reason=f"X is not installed here: {X_MISSING} (scripts/install-deps)")
def test_display_x_and_xterm_draw_and_take_typed_input_then_give_the_console_back(display_vm, tmp_path):
    c, name = display_vm
    _, _, console_rows = png_decode(screenshot(c, name, tmp_path, "console.png"))
    with open(XORG_CONF) as f:
        c.run("exec", "-i", name, "--", "sh", "-c", "cat > /tmp/xorg.conf", input=f.read(), check=True)
    c.run("exec", "-d", name, "--", "sh", "-c", "echo $$ > /tmp/x.pid; exec Xorg :0 -config /tmp/xorg.conf -logfile /tmp/Xorg.0.log "
          "-nolisten tcp -displayfd 3 3>/tmp/x-ready", check=True)

    def active_vt():
        return guest_file(c, name, "/sys/class/tty/tty0/active")

    # X takes the first free VT, tty2, and the screen and keyboard with it; it writes its display
    # number to -displayfd once it accepts clients.
    up = wait_until(lambda: guest_file(c, name, "/tmp/x-ready") == "0\n", timeout=120, interval=0.5)
    assert up, guest_file(c, name, "/tmp/Xorg.0.log")
    assert active_vt() == "tty2\n"
    c.run("exec", "-d", name, "--", "env", "DISPLAY=:0", "xterm", "-geometry", "100x30+0+0", check=True)
    w, h = guest_screen_size(c, name)
    inside = (w // 8, h // 8)  # in the xterm window, away from its text

    def xterm_shown():
        _, _, rows = png_decode(screenshot(c, name, tmp_path, "x.png"))
        return pixel(rows, *inside) == (255, 255, 255) and rows

    rows = wait_until(xterm_shown, timeout=120, interval=1)
    assert rows, guest_file(c, name, "/tmp/Xorg.0.log")
    assert lit_rows(rows, w, 0, h)[1] >= 2
    assert rows != console_rows

    # Without a window manager the keyboard goes to the window under the pointer. The console's
    # shell, on tty1 behind X, gets nothing: the line is appended once, by xterm's shell.
    r = c.run("input", name, "mouse", "move", *map(str, inside))
    assert r.returncode == 0, r.stderr
    type_text(c, name, "echo typed-into-xterm >> /tmp/xterm-typed\n")
    assert wait_until(lambda: (guest_file(c, name, "/tmp/xterm-typed") or "").endswith("\n"), timeout=60,
                      interval=0.5)
    assert guest_file(c, name, "/tmp/xterm-typed") == "typed-into-xterm\n"

    # When X ends, the console is back on the screen.
    c.run("exec", name, "--", "sh", "-c", "kill $(cat /tmp/x.pid)", check=True)
    assert wait_until(lambda: active_vt() == "tty1\n", timeout=60, interval=0.5)

    def console_back():
        _, _, rows = png_decode(screenshot(c, name, tmp_path, "back.png"))
        return pixel(rows, *inside) != (255, 255, 255) and lit_rows(rows, w, 0, 64)[0] > 0

    assert wait_until(console_back, timeout=60, interval=1)
    # And the console's shell never ran what was typed into xterm.
    assert guest_file(c, name, "/tmp/xterm-typed") == "typed-into-xterm\n"
