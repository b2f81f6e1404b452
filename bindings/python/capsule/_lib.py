"""ctypes declarations of include/capsule.h, and where the library is found.

Only this module knows the C types. Every call that can fail goes through `call`, which turns
a negative return into the CapsuleError subclass for its errno and operation (errors.py).
"""
import ctypes
import ctypes.util
import os
import sys
import sysconfig

from . import errors

c_int, c_uint, c_char_p, c_void_p, c_size_t, c_ssize_t = (
    ctypes.c_int, ctypes.c_uint, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_ssize_t)
c_bool, c_uint16, c_uint32, c_uint64, c_int64 = ctypes.c_bool, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64, ctypes.c_int64
c_pid = ctypes.c_int
POINTER, byref = ctypes.POINTER, ctypes.byref


class Error(ctypes.Structure):
    _fields_ = [("code", c_int), ("message", ctypes.c_char * 512)]


class ExecOptions(ctypes.Structure):
    _fields_ = [
        ("version", c_uint),
        ("argv", POINTER(c_char_p)),
        ("shell", c_char_p),
        ("env", POINTER(c_char_p)),
        ("cwd", c_char_p),
        ("user", c_char_p),
        ("tty", c_bool),
        ("rows", c_uint16),
        ("cols", c_uint16),
        ("stdin_open", c_bool),
        ("timeout_ms", c_uint32),
        ("detach", c_bool),
        # Version 2 and 3: an OCI process's settings, which the SDK leaves at their defaults.
        ("groups_set", c_bool),
        ("groups", POINTER(c_uint32)),
        ("ngroups", c_size_t),
        ("caps_set", c_bool),
        ("caps", c_uint64),
        ("caps_inheritable", c_uint64),
        ("caps_ambient", c_uint64),
        ("umask_set", c_bool),
        ("umask", c_uint32),
        ("oom_score_adj_set", c_bool),
        ("oom_score_adj", c_uint32),
        ("rlimits", c_void_p),
        ("nrlimits", c_size_t),
        ("seccomp_bpf", c_void_p),
        ("seccomp_len", c_size_t),
        ("new_privs", c_bool),
        # Version 4: descriptors the command gets as 3, 4, ...
        ("fds", POINTER(c_int)),
        ("nfds", c_size_t),
    ]


# Version 1 unless descriptors are passed: what a version 1 caller leaves out keeps its default.
EXEC_OPTIONS_VERSION = 1
EXEC_OPTIONS_VERSION_FDS = 4
EXEC_MAX_FDS = 64


class ExitStatus(ctypes.Structure):
    _fields_ = [("exit_code", c_int), ("signal", c_int), ("timed_out", c_bool)]


class ExecResult(ctypes.Structure):
    _fields_ = [
        ("status", ExitStatus),
        ("stdout_buf", c_void_p),
        ("stdout_len", c_size_t),
        ("stderr_buf", c_void_p),
        ("stderr_len", c_size_t),
    ]


class FsEntry(ctypes.Structure):
    _fields_ = [
        ("name", c_char_p),
        ("kind", c_int),
        ("size", c_uint64),
        ("mode", c_uint32),
        ("mtime_ns", c_int64),
        ("uid", c_uint32),
        ("gid", c_uint32),
        ("link_target", c_char_p),
    ]


class VolumeInfo(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char * 64),
        ("kind", ctypes.c_char * 16),
        ("quota_bytes", c_uint64),
        ("created_unix", c_int64),
        ("in_use", c_bool),
        ("path", ctypes.c_char * 4096),
    ]


LIMIT_MEMORY, LIMIT_CPU_QUOTA, LIMIT_CPU_PERIOD, LIMIT_CPU_SHARES, LIMIT_PIDS = 0x1, 0x2, 0x4, 0x8, 0x10
LIMIT_MEMORY_SWAP, LIMIT_MEMORY_RESERVATION, LIMIT_CPUSET_CPUS, LIMIT_CPUSET_MEMS = 0x20, 0x40, 0x80, 0x100


class Limits(ctypes.Structure):
    """capsule_limits (capsule_sandbox_update_limits)."""
    _fields_ = [
        ("set", c_uint32),
        ("memory_bytes", c_int64),
        ("cpu_quota_us", c_int64),
        ("cpu_period_us", c_uint64),
        ("cpu_shares", c_uint64),
        ("pids_max", c_int64),
        ("memory_swap_bytes", c_int64),
        ("memory_reservation_bytes", c_int64),
        ("cpuset_cpus", c_char_p),
        ("cpuset_mems", c_char_p),
        ("cpu_rt_period_us", c_uint64),
        ("cpu_rt_runtime_us", c_int64),
    ]


class SandboxInfo(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char * 64),
        ("state", ctypes.c_char * 16),
        ("image", ctypes.c_char * 256),
        ("isolation", c_int),
        ("detached", c_bool),
        ("shim_pid", c_pid),
        ("init_pid", c_pid),
        ("memory_bytes", c_uint64),
        ("cpus_milli", c_uint32),
        ("pids_limit", c_uint32),
        ("created_unix", c_int64),
        ("started_unix", c_int64),
        ("hostname", ctypes.c_char * 64),
    ]


PROGRESS_FN = ctypes.CFUNCTYPE(None, c_char_p, c_uint64, c_uint64, c_void_p)
IMAGE_PROGRESS_FN = ctypes.CFUNCTYPE(None, c_char_p, c_char_p, c_uint64, c_uint64, c_void_p)


class PullOptions(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint), ("insecure", c_bool), ("platform", c_char_p),
                ("progress", IMAGE_PROGRESS_FN), ("payload", c_void_p)]


PULL_OPTIONS_VERSION = 1

FS_PARENTS, FS_RECURSIVE, FS_FORCE, FS_NOREPLACE = 0x1, 0x2, 0x4, 0x8
MOUNT_RO, MOUNT_ALLOW_SENSITIVE = 0x1, 0x2
ISOLATION_CONTAINER, ISOLATION_VM = 0, 1
STDOUT, STDERR = 1, 2
EAGAIN = 11

E = POINTER(Error)
PP = POINTER(c_void_p)

# name: (restype, argtypes). Every function the package calls, and nothing else.
_PROTOS = {
    "capsule_config_new": (c_int, [PP, E]),
    "capsule_config_free": (None, [c_void_p]),
    "capsule_config_set_name": (c_int, [c_void_p, c_char_p, E]),
    "capsule_config_set_image": (c_int, [c_void_p, c_char_p, E]),
    "capsule_config_set_isolation": (c_int, [c_void_p, c_int, E]),
    "capsule_config_set_memory_bytes": (c_int, [c_void_p, c_uint64, E]),
    "capsule_config_set_memory": (c_int, [c_void_p, c_char_p, E]),
    "capsule_config_set_cpus": (c_int, [c_void_p, c_char_p, E]),
    "capsule_config_set_pids_limit": (c_int, [c_void_p, c_uint32, E]),
    "capsule_config_set_cpuset_cpus": (c_int, [c_void_p, c_char_p, E]),
    "capsule_config_set_cpuset_mems": (c_int, [c_void_p, c_char_p, E]),
    "capsule_config_set_memory_swap": (c_int, [c_void_p, c_char_p, E]),
    "capsule_config_set_memory_reservation": (c_int, [c_void_p, c_char_p, E]),
    "capsule_config_set_hostname": (c_int, [c_void_p, c_char_p, E]),
    "capsule_config_add_env": (c_int, [c_void_p, c_char_p, E]),
    "capsule_config_add_tmpfs": (c_int, [c_void_p, c_char_p, c_uint64, c_uint32, E]),
    "capsule_config_add_bind": (c_int, [c_void_p, c_char_p, c_char_p, c_bool, c_bool, E]),
    "capsule_config_add_bind_transform": (c_int, [c_void_p, c_char_p, c_char_p, c_bool, c_char_p, c_char_p, E]),
    "capsule_config_add_volume": (c_int, [c_void_p, c_char_p, c_char_p, c_bool, E]),
    "capsule_config_add_volumes_json": (c_int, [c_void_p, c_char_p, E]),
    "capsule_config_set_detached": (c_int, [c_void_p, c_bool, E]),
    "capsule_config_set_boot_timeout_ms": (c_int, [c_void_p, c_uint32, E]),
    "capsule_config_set_idle_pause_ms": (c_int, [c_void_p, c_uint32, E]),
    "capsule_config_set_accel": (c_int, [c_void_p, c_char_p, E]),
    "capsule_config_set_disk_size": (c_int, [c_void_p, c_char_p, E]),
    "capsule_config_set_disk_size_bytes": (c_int, [c_void_p, c_uint64, E]),
    "capsule_config_add_qemu_arg": (c_int, [c_void_p, c_char_p, E]),
    "capsule_sandbox_inspect_json": (c_int, [c_void_p, POINTER(c_void_p), E]),
    "capsule_sandbox_diff_json": (c_int, [c_void_p, POINTER(c_void_p), E]),
    "capsule_sandbox_diff_since_json": (c_int, [c_void_p, c_char_p, POINTER(c_void_p), E]),
    "capsule_watch_start": (c_int, [c_void_p, c_char_p, c_bool, POINTER(c_void_p), E]),
    "capsule_watch_next": (c_int, [c_void_p, POINTER(c_void_p), c_int, E]),
    "capsule_watch_fd": (c_int, [c_void_p]),
    "capsule_watch_free": (None, [c_void_p]),
    "capsule_config_set_progress": (c_int, [c_void_p, PROGRESS_FN, c_void_p, E]),
    "capsule_sandbox_create": (c_int, [PP, c_void_p, E]),
    "capsule_sandbox_open": (c_int, [PP, c_char_p, E]),
    "capsule_sandbox_stop": (c_int, [c_void_p, c_uint32, E]),
    "capsule_sandbox_pause": (c_int, [c_void_p, E]),
    "capsule_sandbox_update_limits": (c_int, [c_void_p, POINTER(Limits), E]),
    "capsule_sandbox_resume": (c_int, [c_void_p, E]),
    "capsule_sandbox_pause_to_disk": (c_int, [c_void_p, E]),
    "capsule_sandbox_remove": (c_int, [c_char_p, c_bool, E]),
    "capsule_sandbox_free": (None, [c_void_p]),
    "capsule_sandbox_name": (c_char_p, [c_void_p]),
    "capsule_sandbox_is_running": (c_bool, [c_void_p]),
    "capsule_sandbox_isolation": (c_int, [c_void_p]),
    "capsule_sandbox_inspect": (c_int, [c_void_p, POINTER(SandboxInfo), E]),
    "capsule_sandbox_kill": (c_int, [c_void_p, c_pid, c_int, E]),
    "capsule_exec_start": (c_int, [PP, c_void_p, POINTER(ExecOptions), E]),
    "capsule_exec_start_nowait": (c_int, [PP, c_void_p, POINTER(ExecOptions), E]),
    "capsule_process_read": (c_ssize_t, [c_void_p, POINTER(c_int), c_void_p, c_size_t, E]),
    "capsule_process_write": (c_ssize_t, [c_void_p, c_void_p, c_size_t, E]),
    "capsule_process_close_stdin": (c_int, [c_void_p, E]),
    "capsule_process_signal": (c_int, [c_void_p, c_int, E]),
    "capsule_process_wait": (c_int, [c_void_p, POINTER(ExitStatus), E]),
    "capsule_process_pid": (c_pid, [c_void_p]),
    "capsule_process_fd": (c_int, [c_void_p]),
    "capsule_process_set_nonblocking": (c_int, [c_void_p, c_bool]),
    "capsule_process_free": (None, [c_void_p]),
    "capsule_exec": (c_int, [POINTER(ExecResult), c_void_p, POINTER(ExecOptions), c_void_p, c_size_t, c_size_t, E]),
    "capsule_exec_result_free": (None, [POINTER(ExecResult)]),
    "capsule_fs_stat": (c_int, [c_void_p, c_char_p, POINTER(FsEntry), E]),
    "capsule_fs_list": (c_int, [c_void_p, c_char_p, POINTER(POINTER(FsEntry)), POINTER(c_size_t), E]),
    "capsule_fs_entry_clear": (None, [POINTER(FsEntry)]),
    "capsule_fs_entries_free": (None, [POINTER(FsEntry), c_size_t]),
    "capsule_fs_mkdir": (c_int, [c_void_p, c_char_p, c_uint32, c_uint, E]),
    "capsule_fs_remove": (c_int, [c_void_p, c_char_p, c_uint, E]),
    "capsule_fs_rename": (c_int, [c_void_p, c_char_p, c_char_p, c_uint, E]),
    "capsule_fs_symlink": (c_int, [c_void_p, c_char_p, c_char_p, E]),
    "capsule_fs_write": (c_int, [c_void_p, c_char_p, c_void_p, c_size_t, c_uint32, c_uint, E]),
    "capsule_fs_read": (c_int, [c_void_p, c_char_p, PP, POINTER(c_size_t), c_size_t, E]),
    "capsule_fs_open_read": (c_int, [PP, c_void_p, c_char_p, E]),
    "capsule_fs_stream_read": (c_ssize_t, [c_void_p, c_void_p, c_size_t, E]),
    "capsule_fs_open_write": (c_int, [PP, c_void_p, c_char_p, c_uint32, c_uint, E]),
    "capsule_fs_stream_write": (c_int, [c_void_p, c_void_p, c_size_t, E]),
    "capsule_fs_stream_close": (c_int, [c_void_p, E]),
    "capsule_fs_stream_free": (None, [c_void_p]),
    "capsule_copy_to": (c_int, [c_void_p, c_char_p, c_char_p, E]),
    "capsule_copy_from": (c_int, [c_void_p, c_char_p, c_char_p, E]),
    "capsule_volume_create": (c_int, [c_char_p, c_uint64, E]),
    "capsule_volume_inspect": (c_int, [POINTER(VolumeInfo), c_char_p, E]),
    "capsule_volume_list": (c_int, [POINTER(POINTER(VolumeInfo)), POINTER(c_size_t), E]),
    "capsule_volume_remove": (c_int, [c_char_p, E]),
    "capsule_volume_write": (c_int, [c_char_p, c_char_p, c_void_p, c_size_t, E]),
    "capsule_volume_read": (c_int, [PP, POINTER(c_size_t), c_char_p, c_char_p, c_size_t, E]),
    "capsule_volume_write_from_fd": (c_int, [c_char_p, c_char_p, c_int, E]),
    "capsule_volume_read_to_fd": (c_int, [c_char_p, c_char_p, c_int, E]),
    "capsule_mount": (c_int, [c_void_p, c_char_p, c_char_p, c_uint, PP, E]),
    "capsule_unmount": (c_int, [c_void_p, c_char_p, E]),
    "capsule_mounts_json": (c_int, [c_void_p, PP, E]),
    "capsule_config_set_network_name": (c_int, [c_void_p, c_char_p, E]),
    "capsule_config_add_port_forward": (c_int, [c_void_p, c_char_p, E]),
    "capsule_config_add_allow_host": (c_int, [c_void_p, c_char_p, E]),
    "capsule_config_add_allow_cidr": (c_int, [c_void_p, c_char_p, E]),
    "capsule_port_add": (c_int, [c_void_p, c_char_p, E]),
    "capsule_port_remove": (c_int, [c_void_p, c_char_p, E]),
    "capsule_ports_json": (c_int, [c_void_p, PP, E]),
    "capsule_config_set_dns_server": (c_int, [c_void_p, c_char_p, E]),
    "capsule_config_set_egress_quota": (c_int, [c_void_p, c_char_p, E]),
    "capsule_net_allow": (c_int, [c_void_p, c_char_p, E]),
    "capsule_net_deny": (c_int, [c_void_p, c_char_p, E]),
    "capsule_net_json": (c_int, [c_void_p, PP, E]),
    "capsule_config_set_save": (c_int, [c_void_p, c_char_p, E]),
    "capsule_config_set_pool": (c_int, [c_void_p, c_char_p, E]),
    "capsule_pool_create": (c_int, [c_char_p, c_void_p, c_uint32, E]),
    "capsule_pool_remove": (c_int, [c_char_p, E]),
    "capsule_pool_list_json": (c_int, [PP, E]),
    "capsule_save": (c_int, [c_void_p, c_char_p, E]),
    "capsule_checkpoint": (c_int, [c_void_p, c_char_p, E]),
    "capsule_revert": (c_int, [c_void_p, c_char_p, E]),
    "capsule_fork": (c_int, [c_void_p, c_char_p, PP, E]),
    "capsule_saves_json": (c_int, [PP, E]),
    "capsule_save_remove": (c_int, [c_char_p, E]),
    "capsule_home": (c_char_p, []),
    "capsule_doctor_json": (c_int, [PP, E]),
    "capsule_parse_size": (c_int, [c_char_p, POINTER(c_uint64), E]),
    "capsule_image_pull": (c_int, [c_char_p, POINTER(PullOptions), PP, E]),
    "capsule_image_import": (c_int, [c_char_p, c_char_p, c_void_p, c_void_p, PP, E]),
    "capsule_image_list_json": (c_int, [PP, E]),
    "capsule_image_remove": (c_int, [c_char_p, E]),
    "capsule_system_df_json": (c_int, [PP, E]),
    "capsule_system_prune": (c_int, [POINTER(c_uint64), E]),
    "capsule_config_set_display": (c_int, [c_void_p, c_bool, E]),
    "capsule_screenshot": (c_int, [c_void_p, PP, POINTER(c_size_t), E]),
    "capsule_screenshot_file": (c_int, [c_void_p, c_char_p, E]),
    "capsule_input_type": (c_int, [c_void_p, c_char_p, E]),
    "capsule_input_key": (c_int, [c_void_p, c_char_p, E]),
    "capsule_input_mouse_move": (c_int, [c_void_p, c_uint32, c_uint32, E]),
    "capsule_input_mouse_click": (c_int, [c_void_p, c_char_p, E]),
}


def _candidates():
    env = os.environ.get("CAPSULE_LIB")
    if env:
        return [env]
    here = os.path.dirname(os.path.abspath(__file__))
    out = [
        # A source tree: bindings/python/capsule -> build/libcapsule.so
        os.path.join(here, "..", "..", "..", "build", "libcapsule.so"),
    ]
    found = ctypes.util.find_library("capsule")
    if found:
        out.append(found)
    # The install prefix this package was installed under: PREFIX/lib/python3/dist-packages
    # or PREFIX/lib/python3.X/site-packages -> PREFIX/lib[/<multiarch>]/libcapsule.so.0
    prefix = here
    for _ in range(4):
        prefix = os.path.dirname(prefix)
        if os.path.basename(prefix) == "lib":
            prefix = os.path.dirname(prefix)
            break
    multiarch = sysconfig.get_config_var("MULTIARCH") or ""
    for d in (os.path.join(prefix, "lib", multiarch), os.path.join(prefix, "lib64"), os.path.join(prefix, "lib"),
              os.path.join(sys.prefix, "local", "lib", multiarch), "/usr/local/lib/" + multiarch):
        out.append(os.path.join(d, "libcapsule.so.0"))
    out.append("libcapsule.so.0")
    return out


def _load():
    tried = []
    for path in _candidates():
        if os.sep in path and not os.path.exists(path):
            tried.append(path)
            continue
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            tried.append(f"{path} ({e})")
            continue
        for name, (res, args) in _PROTOS.items():
            fn = getattr(lib, name)
            fn.restype = res
            fn.argtypes = args
        lib._capsule_path = os.path.realpath(path) if os.sep in path else path
        return lib
    raise ImportError("capsule: libcapsule.so not found; set CAPSULE_LIB to its path (tried: " + ", ".join(tried) + ")")


lib = _load()


def check(rc, err, op, path=None):
    """rc is what the C call returned; on failure raise the library's error."""
    if rc < 0:
        code = err.code or -rc
        msg = err.message.decode("utf-8", "replace") or os.strerror(code)
        raise errors.from_library(code, msg, op)
    return rc


def call(fn, *args, op):
    """Call lib.FN(*args, &err) and raise on failure; returns what it returned."""
    err = Error()
    rc = fn(*args, byref(err))
    if rc < 0:
        check(rc, err, op)
    return rc


def enc(s, what="path"):
    if s is None:
        return None
    if isinstance(s, os.PathLike):
        s = os.fspath(s)
    if isinstance(s, bytes):
        b = s
    elif isinstance(s, str):
        b = s.encode("utf-8", "surrogateescape")
    else:
        raise errors.InvalidArgument(f"{what}: expected str, got {type(s).__name__}", 22)
    if b"\0" in b:
        raise errors.InvalidArgument(f"{what} {s!r} contains a NUL byte", 22)
    return b


def cstr_array(items, what):
    """A NULL-terminated char*[] (and the bytes kept alive with it)."""
    bs = [enc(x, what) for x in items]
    arr = (c_char_p * (len(bs) + 1))(*bs, None)
    return arr


def free(ptr):
    """free() of a buffer the library malloc'd."""
    _libc.free(ptr)


def take_bytes(ptr, n):
    """The N bytes of a buffer the library malloc'd, as bytes; the buffer is freed."""
    try:
        return ctypes.string_at(ptr, n) if n else b""
    finally:
        free(ptr)


_libc = ctypes.CDLL(None)
_libc.free.argtypes = [c_void_p]
_libc.free.restype = None


def parse_size(value, what):
    """int bytes, or a size string parsed by the library's own parser."""
    if isinstance(value, bool):
        raise errors.InvalidArgument(f"invalid {what} {value!r}: expected a size such as '100M' or a number of bytes", 22)
    if isinstance(value, int):
        if value < 0:
            raise errors.InvalidArgument(f"invalid {what} {value}: must not be negative", 22)
        return value
    if not isinstance(value, str):
        raise errors.InvalidArgument(f"invalid {what} {value!r}: expected a size such as '100M' or a number of bytes", 22)
    out = c_uint64()
    err = Error()
    rc = lib.capsule_parse_size(enc(value, what), byref(out), byref(err))
    check(rc, err, "config")
    return out.value
