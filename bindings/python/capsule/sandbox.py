"""Sandbox (async) and SyncSandbox (blocking): configuration, lifecycle, commands, mounts."""
import asyncio
import ctypes
import errno as _errno
import functools
import json
import os
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor

from . import errors
from . import _process
from . import _lib
from ._lib import lib, Error, Limits, SandboxInfo, PROGRESS_FN, enc, check, call, byref, c_void_p, c_size_t, free, parse_size, take_bytes
from ._lib import MOUNT_RO, MOUNT_ALLOW_SENSITIVE, ISOLATION_CONTAINER, ISOLATION_VM, ExecResult as _CExecResult
from .types import Mount, MountHandle, NetworkMode, PortForward, ExecResult, check_mount_type
from .fs import SyncFs, AsyncFs

DEFAULT_BOOT_TIMEOUT = 10.0
DEFAULT_VM_BOOT_TIMEOUT = 60.0
DEFAULT_STOP_TIMEOUT = 10.0


class _Handle:
    """The C sandbox handle, shared by its sandbox object and the operations in flight.

    The handle is freed (for an ephemeral sandbox: the sandbox ended) when it is closed and no
    operation uses it any more, so a stop() while another task's command still reads its
    output cannot free memory under that command."""

    def __init__(self, ptr):
        self.ptr = ptr
        self.users = 0
        self.closing = False
        self.lock = threading.Lock()

    def acquire(self):
        with self.lock:
            if self.ptr is None or self.closing:
                raise errors.SandboxNotRunning("the sandbox is not running (stopped, or never started)",
                                               _errno.ESHUTDOWN)
            self.users += 1
            return self.ptr

    def release(self):
        with self.lock:
            self.users -= 1
            ptr = self._take_if_done()
        if ptr:
            lib.capsule_sandbox_free(ptr)

    def close(self):
        with self.lock:
            self.closing = True
            ptr = self._take_if_done()
        if ptr:
            lib.capsule_sandbox_free(ptr)

    def end(self):
        """Garbage collection or exit: end the sandbox now. With no operation in flight the
        handle is freed (which ends an ephemeral sandbox); with some (a spawned process still
        pumping output), the sandbox is stopped at once instead, and the handle is freed
        when the last of them lets go."""
        with self.lock:
            self.closing = True
            ptr = self._take_if_done()
            if ptr is None and self.ptr is not None:
                self.users += 1
                stop = self.ptr
            else:
                stop = None
        if ptr:
            lib.capsule_sandbox_free(ptr)
        if stop:
            try:
                lib.capsule_sandbox_stop(stop, 0, None)
            finally:
                self.release()

    def _take_if_done(self):
        if self.closing and self.users == 0 and self.ptr is not None:
            ptr, self.ptr = self.ptr, None
            return ptr
        return None


def _setter(cfg, fn, *args, op="config"):
    err = Error()
    check(fn(cfg, *args, byref(err)), err, op)


def _u64(value, what):
    """A byte count the C ABI takes as uint64_t: ctypes would wrap -5 to 2**64-5, and 2**64+N
    to N, without a word."""
    if not 0 <= value < 1 << 64:
        raise errors.InvalidArgument(f"invalid {what} {value!r}: a byte count from 0 to 2**64-1", _errno.EINVAL,
                                     "config")
    return value


def _boot_timeout_seconds(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < (1 << 32) / 1000:
        raise errors.InvalidArgument(f"invalid boot_timeout {value!r}: expected seconds (a number) > 0",
                                     _errno.EINVAL, "config")
    return float(value)


def _resource_text(key, value):
    """VALUE as the library's setter takes it: a cpuset list as given, a size as given or bytes
    (-1: the flag's -1)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)) or \
            (key.startswith("cpuset") and not isinstance(value, str)):
        want = "a list such as '0-1'" if key.startswith("cpuset") else "a size such as '512M', bytes or -1"
        raise errors.InvalidArgument(f"invalid {key} {value!r}: {want}", _errno.EINVAL, "config")
    return str(value)


def _build_config(image, memory, cpus, pids_limit, name, hostname, env, mounts, volumes, isolation,
                  network_mode, port_forwards, save, boot_timeout, allow_hosts=None, allow_cidrs=None,
                  accel=None, extra_qemu_args=None, disk_size=None, display=False, pool=None, dns_server=None,
                  egress_quota=None, idle_pause=None, detached=False, resources=None):
    """A capsule_config from the keyword arguments; every value is checked here, by the
    library's setters, so a bad one raises before anything starts."""
    mode = NetworkMode.parse(network_mode) if network_mode is not None else NetworkMode.NONE
    for pf in port_forwards or ():
        if not isinstance(pf, PortForward):
            raise errors.InvalidArgument(f"port_forwards: expected PortForward items, got {pf!r}",
                                         _errno.EINVAL, "config")

    err = Error()
    p = c_void_p()
    check(lib.capsule_config_new(byref(p), byref(err)), err, "config")
    cfg = p.value
    try:
        if name is not None:
            _setter(cfg, lib.capsule_config_set_name, enc(name, "name"))
        if detached:
            _setter(cfg, lib.capsule_config_set_detached, True)
        if image is not None:
            _setter(cfg, lib.capsule_config_set_image, enc(image, "image"))
        if save is not None:
            _setter(cfg, lib.capsule_config_set_save, enc(save, "save"))
        if isolation is not None:
            iso = {"container": ISOLATION_CONTAINER, "vm": ISOLATION_VM}.get(str(isolation).lower())
            if iso is None:
                raise errors.InvalidArgument(f"unknown isolation {isolation!r} (use 'container' or 'vm')",
                                             _errno.EINVAL, "config")
            _setter(cfg, lib.capsule_config_set_isolation, iso)
        if memory is not None:
            if isinstance(memory, int) and not isinstance(memory, bool):
                _setter(cfg, lib.capsule_config_set_memory_bytes, _u64(memory, "memory"))
            else:
                _setter(cfg, lib.capsule_config_set_memory, enc(str(memory), "memory"))
        if cpus is not None:
            if isinstance(cpus, bool):
                raise errors.InvalidArgument(f"invalid cpus {cpus!r}", _errno.EINVAL, "config")
            _setter(cfg, lib.capsule_config_set_cpus, enc(str(cpus), "cpus"))
        if pids_limit is not None:
            if isinstance(pids_limit, bool) or not isinstance(pids_limit, int) or not 0 <= pids_limit < 1 << 32:
                raise errors.InvalidArgument(f"invalid pids_limit {pids_limit!r}", _errno.EINVAL, "config")
            _setter(cfg, lib.capsule_config_set_pids_limit, pids_limit)
        # docker's finer limits: each keyword's setter is capsule_config_set_<keyword>.
        for key, value in (resources or {}).items():
            if value is not None:
                _setter(cfg, getattr(lib, "capsule_config_set_" + key), enc(_resource_text(key, value), key))
        if hostname is not None:
            _setter(cfg, lib.capsule_config_set_hostname, enc(hostname, "hostname"))
        if env:
            items = [f"{k}={v}" for k, v in env.items()] if isinstance(env, dict) else list(env)
            for kv in items:
                _setter(cfg, lib.capsule_config_add_env, enc(kv, "environment entry"))
        for m in mounts or ():
            if not isinstance(m, Mount):
                raise errors.InvalidArgument(f"mounts: expected Mount items, got {m!r}", _errno.EINVAL, "config")
            _add_mount(cfg, m)
        if volumes:
            if not isinstance(volumes, dict):
                raise errors.InvalidArgument("volumes: expected a dict such as "
                                             "{'/host/dir': {'bind': '/guest/dir', 'mode': 'rw'}}",
                                             _errno.EINVAL, "config")
            _setter(cfg, lib.capsule_config_add_volumes_json, enc(json.dumps(volumes), "volumes"))
        _setter(cfg, lib.capsule_config_set_network_name, {NetworkMode.MOUNTS_ONLY: b"mounts-only"}.get(
            mode, mode.value.encode()))
        for pf in port_forwards or ():
            _setter(cfg, lib.capsule_config_add_port_forward, enc(pf.spec(), "port forward"))
        for h in _str_list(allow_hosts, "allow_hosts"):
            _setter(cfg, lib.capsule_config_add_allow_host, enc(h, "allow_hosts entry"))
        for c in _str_list(allow_cidrs, "allow_cidrs"):
            _setter(cfg, lib.capsule_config_add_allow_cidr, enc(c, "allow_cidrs entry"))
        if dns_server is not None:
            _setter(cfg, lib.capsule_config_set_dns_server, enc(str(dns_server), "dns_server"))
        if egress_quota is not None:
            if isinstance(egress_quota, bool):
                raise errors.InvalidArgument(f"invalid egress_quota {egress_quota!r}", _errno.EINVAL, "config")
            _setter(cfg, lib.capsule_config_set_egress_quota, enc(str(egress_quota), "egress_quota"))
        if idle_pause is not None:
            if isinstance(idle_pause, bool) or not isinstance(idle_pause, (int, float)) or \
                    not 0 <= idle_pause < (1 << 32) / 1000:
                raise errors.InvalidArgument(f"invalid idle_pause {idle_pause!r}: expected seconds (a number), "
                                             "0 for never", _errno.EINVAL, "config")
            _setter(cfg, lib.capsule_config_set_idle_pause_ms, int(idle_pause * 1000))
        if boot_timeout is not None:
            _setter(cfg, lib.capsule_config_set_boot_timeout_ms, int(_boot_timeout_seconds(boot_timeout) * 1000))
        if accel is not None:
            _setter(cfg, lib.capsule_config_set_accel, enc(str(accel), "accel"))
        if extra_qemu_args:
            if isinstance(extra_qemu_args, (str, bytes)):
                raise errors.InvalidArgument("extra_qemu_args: expected a list of strings, one a QEMU argument",
                                             _errno.EINVAL, "config")
            for a in extra_qemu_args:
                _setter(cfg, lib.capsule_config_add_qemu_arg, enc(str(a), "extra_qemu_args"))
        if disk_size is not None:
            if isinstance(disk_size, int) and not isinstance(disk_size, bool):
                _setter(cfg, lib.capsule_config_set_disk_size_bytes, _u64(disk_size, "disk_size"))
            else:
                _setter(cfg, lib.capsule_config_set_disk_size, enc(str(disk_size), "disk_size"))
        if display:
            _setter(cfg, lib.capsule_config_set_display, True)
        if pool is not None:
            _setter(cfg, lib.capsule_config_set_pool, enc(pool, "pool"))
    except BaseException:
        lib.capsule_config_free(cfg)
        raise
    return cfg


def _display_flag(display, enable_display):
    """display=True, or quicksand's enable_display=True; both given must agree."""
    if display is not None and enable_display is not None and bool(display) != bool(enable_display):
        raise errors.InvalidArgument("display and enable_display disagree: give one", _errno.EINVAL, "config")
    return bool(display if display is not None else enable_display)


def _str_list(value, what):
    if value is None:
        return []
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise errors.InvalidArgument(f"{what}: expected a list of strings, got {value!r}", _errno.EINVAL, "config")
    return list(value)


def _ports_from_json(text):
    return [PortForward(o["host_port"], o["guest_port"], o.get("protocol", "tcp"), o.get("host_ip"))
            for o in json.loads(text)]


def _add_mount(cfg, m):
    check_mount_type(m.type)
    if m.type == "tmpfs":
        size = parse_size(m.size, "tmpfs size") if m.size is not None else 0
        if m.size is not None and size == 0:
            raise errors.InvalidArgument(f"tmpfs at '{m.guest_path}': size must be greater than 0",
                                         _errno.EINVAL, "config")
        _setter(cfg, lib.capsule_config_add_tmpfs, enc(m.guest_path, "guest path"), size, m.mode or 0)
    elif m.type == "volume":
        _setter(cfg, lib.capsule_config_add_volume, enc(m.volume_name, "volume name"),
                enc(m.guest_path, "guest path"), bool(m.readonly))
    elif m.transform:
        _setter(cfg, lib.capsule_config_add_bind_transform, enc(m.host_path, "host path"),
                enc(m.guest_path, "guest path"), bool(m.readonly), enc(m.transform, "transform plugin"),
                enc(m.transform_config, "transform config"))
    else:
        if m.host_path is None:
            raise errors.InvalidArgument(f"mount at '{m.guest_path}': no host path", _errno.EINVAL, "config")
        _setter(cfg, lib.capsule_config_add_bind, enc(m.host_path, "host path"), enc(m.guest_path, "guest path"),
                bool(m.readonly), False)


def _mounts_from_json(text):
    out = []
    for o in json.loads(text):
        out.append(MountHandle(o.get("kind"), o.get("host_path"), o.get("guest_path"), bool(o.get("readonly")),
                               o.get("handle"), bool(o.get("hot"))))
    return out


class _Core:
    """What SyncSandbox and Sandbox share: the configuration, the handle, and the blocking
    implementation of every call (Sandbox runs these in threads)."""

    def __init__(self, image="host", *, memory=None, cpus=None, pids_limit=None, name=None, hostname=None,
                 env=None, mounts=None, volumes=None, isolation="container", network_mode=NetworkMode.NONE,
                 port_forwards=None, save=None, boot_timeout=None, progress_callback=None, allow_hosts=None,
                 allow_cidrs=None, accel=None, extra_qemu_args=None, disk_size=None, display=None, enable_display=None,
                 pool=None, dns_server=None, egress_quota=None, idle_pause=None, detached=False, cpuset_cpus=None,
                 cpuset_mems=None, memory_swap=None, memory_reservation=None):
        self._cfg_box = {}
        self._handle = None
        if name is not None and not isinstance(name, str):
            raise errors.InvalidArgument(f"invalid name {name!r}: expected str, got {type(name).__name__}",
                                         _errno.EINVAL, "config")
        self._name = name
        self._isolation = "container" if isolation is None else str(isolation).lower()
        self._network_mode = NetworkMode.parse(network_mode) if network_mode is not None else NetworkMode.NONE
        self._boot_timeout = _boot_timeout_seconds(boot_timeout) if boot_timeout is not None else (
            DEFAULT_VM_BOOT_TIMEOUT if self._isolation == "vm" else DEFAULT_BOOT_TIMEOUT)
        self._progress = progress_callback
        self._mounts_cache = []
        self._started = False
        self._state_lock = threading.Lock()
        cfg = _build_config(image, memory, cpus, pids_limit, name, hostname, env, mounts, volumes, isolation,
                            network_mode, port_forwards, save, boot_timeout, allow_hosts, allow_cidrs,
                            accel, extra_qemu_args, disk_size,
                            _display_flag(display, enable_display), pool, dns_server, egress_quota, idle_pause,
                            detached, {"cpuset_cpus": cpuset_cpus, "cpuset_mems": cpuset_mems,
                                       "memory_swap": memory_swap, "memory_reservation": memory_reservation})
        self._cfg_box["cfg"] = cfg
        self._finalizer = None
        weakref.finalize(self, _finalize_config, self._cfg_box)

    # ---- lifecycle (blocking) ----

    def _start_blocking(self, progress_dispatch=None):
        with self._state_lock:
            if self._started:
                raise errors.AlreadyExists("the sandbox was started already (a Sandbox object starts once)",
                                           _errno.EEXIST, "create")
            self._started = True
        cfg = self._cfg_box.get("cfg")
        cb_keep = None
        if self._progress is not None:
            user_cb = self._progress
            dispatch = progress_dispatch or (lambda f, *a: f(*a))

            def on_progress(stage, cur, tot, _payload):
                dispatch(user_cb, stage.decode(errors="replace") if stage else "", int(cur), int(tot))
            cb_keep = PROGRESS_FN(on_progress)
            _setter(cfg, lib.capsule_config_set_progress, cb_keep, None)
        p = c_void_p()
        err = Error()
        try:
            rc = lib.capsule_sandbox_create(byref(p), cfg, byref(err))
            check(rc, err, "create")
        except BaseException:
            with self._state_lock:
                self._started = False
            raise
        finally:
            if cb_keep is not None:
                lib.capsule_config_set_progress(cfg, ctypes.cast(None, PROGRESS_FN), None, None)
        self._handle = _Handle(p.value)
        self._name = lib.capsule_sandbox_name(p.value).decode()
        # At garbage collection or interpreter exit: end the sandbox (see _Handle.end).
        self._finalizer = weakref.finalize(self, self._handle.end)
        try:
            self._refresh_mounts()
        except errors.CapsuleError:
            pass

    @classmethod
    def open(cls, name):
        """The sandbox NAME that exists already (a detached one: made with detached=True, or by
        `capsule create`), running, stopped or paused to disk; its object's end stops nothing.
        Its own stop() stops it."""
        sb = cls(None, name=name)
        p = c_void_p()
        err = Error()
        check(lib.capsule_sandbox_open(byref(p), enc(name, "name"), byref(err)), err, "open")
        with sb._state_lock:
            sb._started = True
        sb._handle = _Handle(p.value)
        sb._isolation = "vm" if lib.capsule_sandbox_isolation(p.value) == ISOLATION_VM else "container"
        sb._finalizer = weakref.finalize(sb, sb._handle.close)
        return sb

    def _stop_blocking(self, timeout):
        h = self._handle
        if h is None or h.closing:
            return
        ms = int(max(0, DEFAULT_STOP_TIMEOUT if timeout is None else timeout) * 1000)
        ptr = h.acquire()
        err = Error()
        try:
            rc = lib.capsule_sandbox_stop(ptr, ms, byref(err))
        finally:
            h.release()
        h.close()
        check(rc, err, "stop")

    def _use(self):
        if self._handle is None:
            raise errors.SandboxNotRunning("the sandbox is not started: call start() or use it in a with block",
                                           _errno.ENOTCONN)
        return self._handle.acquire()

    def _call(self, fn, *args, op):
        ptr = self._use()
        try:
            return call(fn, ptr, *args, op=op)
        finally:
            self._handle.release()

    # ---- limits ----

    def _update_blocking(self, memory, cpus, cpu_shares, pids_limit, cpuset_cpus=None, cpuset_mems=None,
                         memory_swap=None, memory_reservation=None):
        lim = Limits()
        for key, value, bit in (("memory_swap", memory_swap, _lib.LIMIT_MEMORY_SWAP),
                                ("memory_reservation", memory_reservation, _lib.LIMIT_MEMORY_RESERVATION)):
            if value is not None:
                lim.set |= bit
                b = -1 if value in (-1, "-1") else parse_size(value, key)
                setattr(lim, key + "_bytes", b)
        # The lists live in these bytes objects while the call runs.
        lists = [enc(_resource_text(key, value), key) if value is not None else None
                 for key, value in (("cpuset_cpus", cpuset_cpus), ("cpuset_mems", cpuset_mems))]
        for key, text, bit in (("cpuset_cpus", lists[0], _lib.LIMIT_CPUSET_CPUS),
                               ("cpuset_mems", lists[1], _lib.LIMIT_CPUSET_MEMS)):
            if text is not None:
                lim.set |= bit
                setattr(lim, key, text)
        if memory is not None:
            lim.set |= _lib.LIMIT_MEMORY
            lim.memory_bytes = -1 if memory == -1 else parse_size(memory, "memory")
        if cpus is not None:
            if isinstance(cpus, bool) or not isinstance(cpus, (int, float, str)):
                raise errors.InvalidArgument(f"invalid cpus {cpus!r}: a number such as 1.5", _errno.EINVAL, "update")
            try:
                milli = round(float(cpus) * 1000)
            except ValueError:
                raise errors.InvalidArgument(f"invalid cpus {cpus!r}: a number such as 1.5", _errno.EINVAL,
                                             "update") from None
            if milli < 0:
                raise errors.InvalidArgument(f"invalid cpus {cpus!r}: 0 (no limit) or more", _errno.EINVAL, "update")
            lim.set |= _lib.LIMIT_CPU_QUOTA | _lib.LIMIT_CPU_PERIOD
            lim.cpu_period_us = 100000
            lim.cpu_quota_us = milli * 100 if milli else -1
        if cpu_shares is not None:
            lim.set |= _lib.LIMIT_CPU_SHARES
            lim.cpu_shares = _u64(cpu_shares, "cpu_shares")
        if pids_limit is not None:
            lim.set |= _lib.LIMIT_PIDS
            lim.pids_max = -1 if pids_limit == -1 else _u64(pids_limit, "pids_limit")
        self._call(lib.capsule_sandbox_update_limits, byref(lim), op="update")

    # ---- pause ----

    def _pause_blocking(self, resume, to_disk=False):
        if resume:
            self._call(lib.capsule_sandbox_resume, op="resume")
        elif to_disk:
            self._call(lib.capsule_sandbox_pause_to_disk, op="pause to disk")
        else:
            self._call(lib.capsule_sandbox_pause, op="pause")

    def _diff_blocking(self, since=None):
        out = c_void_p()
        if since is None:
            self._call(lib.capsule_sandbox_diff_json, byref(out), op="diff")
        else:
            self._call(lib.capsule_sandbox_diff_since_json, enc(since, "since"), byref(out), op="diff")
        return json.loads(take_bytes(out.value, len(ctypes.string_at(out.value))).decode())

    def _watch_start_blocking(self, path, recursive):
        out = c_void_p()
        self._call(lib.capsule_watch_start, enc(path), bool(recursive), byref(out), op="watch")
        return out.value

    # ---- saves ----

    def _save_op_blocking(self, fn, name, op):
        self._call(fn, enc(name, "name"), op=op)

    def _fork_blocking(self, new_name):
        self._call(lib.capsule_fork, enc(new_name, "sandbox name"), None, op="fork")
        return new_name

    # ---- properties ----

    @property
    def name(self):
        """The sandbox's name (generated at start when none was given)."""
        return self._name

    @property
    def is_running(self):
        h = self._handle
        if h is None or h.ptr is None or h.closing:
            return False
        try:
            ptr = h.acquire()
        except errors.SandboxNotRunning:
            return False
        try:
            return bool(lib.capsule_sandbox_is_running(ptr))
        finally:
            h.release()

    @property
    def isolation(self):
        return self._isolation

    @property
    def network_mode(self):
        return self._network_mode

    @property
    def boot_timeout(self):
        """The boot timeout in effect, in seconds."""
        return self._boot_timeout

    @property
    def accelerator(self):
        """The VM's accelerator ("kvm" or "tcg") while it runs; None for container isolation."""
        if self._isolation != "vm" or self._handle is None:
            return None
        return self.inspect_json().get("vm", {}).get("accel")

    def inspect_json(self):
        """`capsule inspect --json` as a dict: everything inspect() has, plus the mounts and,
        for a vm, its accelerator, boot timeout and QEMU command line."""
        out = c_void_p()
        self._call(lib.capsule_sandbox_inspect_json, byref(out), op="inspect")
        return json.loads(take_bytes(out.value, len(ctypes.string_at(out.value))).decode())

    @property
    def vnc_socket(self):
        """The unix socket of the VNC server of a running vm with a display (in the owner's
        run folder, connectable by the owner alone); None for a container, a vm without a
        display, or one not running."""
        if self._isolation != "vm" or self._handle is None:
            return None
        return self.inspect_json().get("display", {}).get("vnc_socket")

    @property
    def vnc_port(self):
        """Always None: the VNC server listens on no TCP port (a port on 127.0.0.1 is open to
        every local user and to sandboxes with full network); use vnc_socket. Kept so that
        code written for quicksand's vnc_port fails clearly instead of with AttributeError."""
        return None

    def inspect(self):
        """A dict of what the sandbox is (name, state, image, pids, limits, times)."""
        info = SandboxInfo()
        self._call(lib.capsule_sandbox_inspect, byref(info), op="inspect")
        return {"name": info.name.decode(), "state": info.state.decode(), "image": info.image.decode(),
                "isolation": "vm" if info.isolation == ISOLATION_VM else "container", "detached": info.detached,
                "shim_pid": info.shim_pid, "init_pid": info.init_pid, "memory_bytes": info.memory_bytes,
                "cpus": info.cpus_milli / 1000, "pids_limit": info.pids_limit, "created": info.created_unix,
                "started": info.started_unix, "hostname": info.hostname.decode()}

    # ---- mounts (blocking) ----

    def _mount_blocking(self, host_path, guest_path, readonly, type, allow_sensitive):
        check_mount_type(type)
        flags = (MOUNT_RO if readonly else 0) | (MOUNT_ALLOW_SENSITIVE if allow_sensitive else 0)
        out = c_void_p()
        self._call(lib.capsule_mount, enc(host_path, "host path"), enc(guest_path, "guest path"), flags, byref(out),
                   op="mount")
        handle = ctypes.string_at(out.value).decode() if out.value else None
        free(out.value)
        mounts = self._refresh_mounts()
        for m in mounts:
            if m.handle == handle:
                return m
        return MountHandle("bind", os.fspath(host_path), os.fspath(guest_path), bool(readonly), handle, True)

    def _unmount_blocking(self, handle):
        if isinstance(handle, MountHandle):
            key = handle.handle or handle.guest_path
        else:
            key = os.fspath(handle)
        self._call(lib.capsule_unmount, enc(key, "mount"), op="mount")
        self._refresh_mounts()

    def _mounts_blocking(self):
        out = c_void_p()
        self._call(lib.capsule_mounts_json, byref(out), op="mount")
        try:
            return _mounts_from_json(ctypes.string_at(out.value).decode())
        finally:
            free(out.value)

    def _refresh_mounts(self):
        self._mounts_cache = self._mounts_blocking()
        return self._mounts_cache

    # ---- port forwards (blocking) ----

    def _port_add_blocking(self, pf):
        if not isinstance(pf, PortForward):
            raise errors.InvalidArgument(f"expected a PortForward, got {pf!r}", _errno.EINVAL, "config")
        self._call(lib.capsule_port_add, enc(pf.spec(), "port forward"), op="config")

    def _port_remove_blocking(self, pf):
        if isinstance(pf, PortForward):
            key = f"{pf.host_ip}:{pf.host}" if pf.host_ip else str(pf.host)
        else:
            key = str(pf)
        self._call(lib.capsule_port_remove, enc(key, "port"), op="config")

    def _ports_blocking(self):
        out = c_void_p()
        self._call(lib.capsule_ports_json, byref(out), op="config")
        try:
            return _ports_from_json(ctypes.string_at(out.value).decode())
        finally:
            free(out.value)

    # ---- egress rules (blocking) ----

    def _net_rule_blocking(self, fn, rule):
        self._call(fn, enc(str(rule), "egress rule"), op="config")

    def _net_rules_blocking(self):
        out = c_void_p()
        self._call(lib.capsule_net_json, byref(out), op="config")
        try:
            return json.loads(ctypes.string_at(out.value).decode())
        finally:
            free(out.value)

    # ---- display (blocking) ----

    def _screenshot_blocking(self, path):
        if path is not None:
            self._call(lib.capsule_screenshot_file, enc(os.fspath(path), "path"), op="screenshot")
            return None
        out, n = c_void_p(), c_size_t()
        self._call(lib.capsule_screenshot, byref(out), byref(n), op="screenshot")
        return take_bytes(out.value, n.value)

    def _input_blocking(self, fn, *args):
        self._call(fn, *args, op="input")

    def _mouse_move_blocking(self, x, y):
        for v in (x, y):
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 1 << 32:
                raise errors.InvalidArgument(f"mouse position ({x!r}, {y!r}): expected pixels, integers >= 0",
                                             _errno.EINVAL, "input")
        self._input_blocking(lib.capsule_input_mouse_move, x, y)

    # ---- commands (blocking parts) ----

    def _exec_blocking(self, cmd, timeout, cwd, env, stdin, user, max_output, fds=()):
        data = _process.stdin_bytes(stdin)
        opts, keep = _process.exec_options(cmd, timeout=timeout, cwd=cwd, env=env, user=user, fds=fds)
        res = _CExecResult()
        err = Error()
        ptr = self._use()
        try:
            rc = lib.capsule_exec(byref(res), ptr, byref(opts), data, len(data) if data is not None else 0,
                                  max_output, byref(err))
        finally:
            self._handle.release()
        check(rc, err, "exec")
        try:
            out = ctypes.string_at(res.stdout_buf, res.stdout_len)
            er = ctypes.string_at(res.stderr_buf, res.stderr_len)
            st = res.status
            r = ExecResult(out.decode("utf-8", "replace"), er.decode("utf-8", "replace"), st.exit_code, st.signal,
                           bool(st.timed_out), out, er)
        finally:
            lib.capsule_exec_result_free(byref(res))
        if r.timed_out:
            e = errors.Timeout(f"command timed out after {timeout} s and was killed", _errno.ETIMEDOUT, "exec")
            e.result = r
            raise e
        return r

    def _start_process(self, cmd, timeout, cwd, env, stdin, user, on_stdout, on_stderr, max_output,
                       start=_process.start, fds=()):
        """Start a command; returns its Pump (non-blocking handle) holding one use of the
        sandbox handle, which the caller gives back (release) once the pump is freed. With
        START=_process.start_nowait, None when that cannot start without waiting."""
        data = _process.stdin_bytes(stdin)
        opts, keep = _process.exec_options(cmd, timeout=timeout, cwd=cwd, env=env, user=user,
                                           stdin_open=data is not None, fds=fds)
        ptr = self._use()
        try:
            p = start(ptr, opts)
        except BaseException:
            self._handle.release()
            raise
        if p is None:
            self._handle.release()
            return None
        return _process.Pump(p, data, on_stdout, on_stderr, max_output)

    def __repr__(self):
        state = "running" if self.is_running else ("stopped" if self._handle else "not started")
        return f"<capsule.{type(self).__name__} name={self._name!r} {state}>"


def _watch_next(ptr, timeout_ms):
    """(1, event dict), (0, None) at the end, or (-EAGAIN, None) when none came in time."""
    out = c_void_p()
    err = Error()
    rc = lib.capsule_watch_next(ptr, byref(out), timeout_ms, byref(err))
    if rc == 1:
        return 1, json.loads(take_bytes(out.value, len(ctypes.string_at(out.value))).decode())
    if rc == 0 or rc == -_errno.ESHUTDOWN:
        return 0, None
    if rc == -_errno.EAGAIN:
        return rc, None
    check(rc, err, "watch")


class _WatchProtocol:
    """What a watch is besides start(), close() and next(): a context manager and an
    iterator (SyncWatch here, RemoteSyncWatch on a server)."""

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    def __iter__(self):
        return self

    def __next__(self):
        return self.next()

    def __del__(self):
        self.close()


class _AsyncWatchProtocol:
    """What an async watch is besides start(), close() and __anext__ (AsyncWatch,
    RemoteAsyncWatch)."""

    async def __aenter__(self):
        return await self.start()

    async def __aexit__(self, *exc):
        self.close()

    def __aiter__(self):
        return self


class SyncWatch(_WatchProtocol):
    """A watch of a sandbox's folder (SyncSandbox.watch): a context manager and an iterator."""

    def __init__(self, sb, path, recursive):
        self._sb, self._path, self._recursive = sb, path, recursive
        self._ptr = None
        self._done = False

    def start(self):
        if self._ptr is None and not self._done:
            self._ptr = self._sb._watch_start_blocking(self._path, self._recursive)
        return self

    def close(self):
        self._done = True
        if self._ptr is not None:
            lib.capsule_watch_free(self._ptr)
            self._ptr = None

    def next(self, timeout=None):
        """The next event, or None when none came within TIMEOUT seconds (None: wait)."""
        self.start()
        while self._ptr is not None:
            rc, event = _watch_next(self._ptr, -1 if timeout is None else int(timeout * 1000))
            if rc == 1:
                return event
            if rc == 0:
                break
            if timeout is not None:
                return None
        self.close()
        raise StopIteration


class AsyncWatch(_AsyncWatchProtocol):
    """A watch of a sandbox's folder (Sandbox.watch): an async context manager and iterator."""

    def __init__(self, sb, path, recursive):
        self._sb, self._path, self._recursive = sb, path, recursive
        self._ptr = None
        self._done = False
        self._readable = None
        self._loop = None

    async def start(self):
        if self._ptr is None and not self._done:
            self._ptr = await _in_thread(self._sb._watch_start_blocking, self._path, self._recursive)
            self._loop = asyncio.get_running_loop()
            self._readable = asyncio.Event()
            self._loop.add_reader(lib.capsule_watch_fd(self._ptr), self._readable.set)
        return self

    def close(self):
        self._done = True
        if self._ptr is not None:
            self._loop.remove_reader(lib.capsule_watch_fd(self._ptr))
            lib.capsule_watch_free(self._ptr)
            self._ptr = None

    async def __anext__(self):
        await self.start()
        while self._ptr is not None:
            # What is here already first: the reader fires again only for new bytes.
            rc, event = _watch_next(self._ptr, 0)
            if rc == 1:
                return event
            if rc == 0:
                break
            self._readable.clear()
            await self._readable.wait()
        self.close()
        raise StopAsyncIteration


def _finalize_config(cfg_box):
    cfg = cfg_box.pop("cfg", None)
    if cfg:
        lib.capsule_config_free(cfg)


class SyncSandbox(_Core):
    """A sandbox driven by blocking calls: `with SyncSandbox(...) as sb: sb.execute("ls")`.

    Every keyword of Sandbox is taken. Calls may come from many threads at once. With
    server= and token=, a sandbox on a capsule server (a capsule.remote.RemoteSyncSandbox)."""

    def __new__(cls, image="host", *, server=None, token=None, **kw):
        if server is not None:
            from .remote import RemoteSyncSandbox
            return RemoteSyncSandbox(image, server=server, token=token, **kw)
        return super().__new__(cls)

    def __init__(self, image="host", *, server=None, token=None, **kw):
        super().__init__(image, **kw)
        self.fs = SyncFs(self)

    def start(self):
        self._start_blocking()
        return self

    def stop(self, timeout=None):
        """Stop the sandbox: SIGTERM to its processes, SIGKILL after TIMEOUT seconds (default
        10; 0 kills at once). An ephemeral sandbox is removed by its stop."""
        self._stop_blocking(timeout)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop(0 if exc[0] is not None else None)

    def execute(self, cmd, timeout=None, cwd=None, env=None, stdin=None, on_stdout=None, on_stderr=None, user=None,
                max_output=_process.DEFAULT_MAX_OUTPUT, fds=()):
        """Run CMD (a str runs as `sh -c CMD`; a list is the argv) to its end and return an
        ExecResult. on_stdout/on_stderr get the output as it comes (str), on this thread.
        TIMEOUT (seconds) kills the command and its process group and raises Timeout. FDS
        (descriptors or files, at most 64) are the command's 3, 4, ... (container level)."""
        if on_stdout is None and on_stderr is None:
            return self._exec_blocking(cmd, timeout, cwd, env, stdin, user, max_output, fds)
        pump = self._start_process(cmd, timeout, cwd, env, stdin, user, on_stdout, on_stderr, max_output, fds=fds)
        try:
            _process.run_blocking(pump)
        finally:
            pump.free()
            self._handle.release()
        return pump.result()

    def spawn(self, cmd, cwd=None, env=None, stdin=None, on_stdout=None, on_stderr=None, user=None, timeout=None,
              max_output=_process.DEFAULT_MAX_OUTPUT, fds=()):
        """Start CMD in the background; returns a SyncProcess (pid, wait(), kill()). FDS as
        for execute()."""
        pump = self._start_process(cmd, timeout, cwd, env, stdin, user, on_stdout, on_stderr, max_output, fds=fds)
        return _process.SyncProcess(self, pump, self._handle.release)

    def mount(self, host_path, guest_path, readonly=False, type=None, allow_sensitive=False):
        """Bind HOST_PATH (absolute) at GUEST_PATH in the running sandbox; returns a MountHandle."""
        return self._mount_blocking(host_path, guest_path, readonly, type, allow_sensitive)

    def unmount(self, handle):
        """Remove a hot mount: its MountHandle, handle string ("m1") or guest path."""
        self._unmount_blocking(handle)

    @property
    def active_mounts(self):
        """Every mount of the sandbox now, boot-time and hot (asks the sandbox)."""
        return self._refresh_mounts()

    def diff(self, since=None):
        """What changed in the sandbox's filesystem since it was made, or since SINCE: its
        checkpoint (checkpoint()) of that name or, if it has none, the save (save()) of that
        name; "checkpoint:NAME" or "save:NAME" says which. A save over the same layers (taken
        from this sandbox or one of its image or save) or the one it started from is
        compared; another raises InvalidArgument. A list of dicts with
        path, kind ("added", "modified", "deleted"), type ("file", "dir", "symlink", "other")
        and, except for a deletion, size, mode ("0644"), mtime_ns and a symlink's
        link_target; sorted by path. Read from the sandbox's own layer (it costs what
        changed); container level only (a vm raises UnsupportedFeature)."""
        return self._diff_blocking(since)

    def watch(self, path, recursive=False):
        """The changes below PATH as they happen, seen from inside the sandbox: a SyncWatch,
        watching from `with` (or the first event) until the block ends, close(), or PATH is
        gone. Each event is a dict: kind ("create", "modify", "delete", "move", "overflow"),
        path, from (a move's old path), time, time_ns, dir. "overflow" means events were lost
        (the reader was too slow, or the kernel's queue overflowed). At the vm level, what the
        host changes in a bound folder is not seen.

            with sb.watch("/work", recursive=True) as w:
                sb.execute("make")
                for event in w: ...
        """
        return SyncWatch(self, path, recursive)

    def update(self, *, memory=None, cpus=None, cpu_shares=None, pids_limit=None, cpuset_cpus=None,
               cpuset_mems=None, memory_swap=None, memory_reservation=None):
        """Change the running sandbox's limits, as `docker update` does; the others stay.
        memory: bytes or a size ("512M"), swap included, -1 for no limit (a vm's memory is its
        guest's, fixed at boot: NotSupported); cpus: 1.5, 0 for no limit; cpu_shares: 2 to
        262144; pids_limit: 0 or -1 for no limit. A container's finer ones, as docker's flags:
        memory_swap (memory + swap, given with memory and not below it; -1: unlimited swap),
        memory_reservation (the soft limit, at most memory; -1: none), cpuset_cpus and
        cpuset_mems ("0-1": of a sandbox made with a cpuset). Every value is checked before
        any changes, and one the kernel refuses leaves the old limits. Kept for inspect and the
        next start."""
        self._update_blocking(memory, cpus, cpu_shares, pids_limit, cpuset_cpus, cpuset_mems, memory_swap,
                              memory_reservation)

    def pause(self, to_disk=False):
        """Hold every process of the sandbox still, in memory, until resume() or a stop.
        Meanwhile execute, spawn, fs and mount raise Busy ("sandbox 'x' is paused: resume it
        first"); save, checkpoint, port forwards and stop work. Pausing twice is fine.

        to_disk=True (a detached vm only): the guest's memory goes to the sandbox's folder and
        QEMU and its shim exit, freeing their memory; resume() loads it again, also from
        another process after a host restart (Sandbox.open(name).resume()). Refused with
        NotSupported for a container (CRIU does not run on this kernel) or the "host" image,
        Busy for a vm with a bind or hot mount in use or commands open."""
        self._pause_blocking(False, to_disk)

    def resume(self):
        """Let a paused sandbox run again (a running one is left as it is); one paused to disk
        gets a new shim that loads its memory."""
        self._pause_blocking(True)

    def save(self, name):
        """Save the sandbox's filesystem now as NAME (its processes are frozen for the copy);
        start from it with SyncSandbox(image=NAME)."""
        self._save_op_blocking(lib.capsule_save, name, "save")

    def checkpoint(self, name):
        """Keep the filesystem as checkpoint NAME, for as long as the sandbox exists."""
        self._save_op_blocking(lib.capsule_checkpoint, name, "checkpoint")

    def revert(self, name):
        """Put the filesystem back to checkpoint NAME. The sandbox restarts: its processes are
        killed (commands in flight end with exit code 137) and hot mounts are dropped."""
        self._save_op_blocking(lib.capsule_revert, name, "revert")

    def fork(self, name):
        """Start sandbox NAME from this one's configuration and current filesystem (a named
        sandbox that runs until stopped: capsule.remove(NAME, force=True)); returns NAME."""
        return self._fork_blocking(name)
    def add_port_forward(self, pf):
        """Forward a host port into the running sandbox (a PortForward)."""
        self._port_add_blocking(pf)

    def remove_port_forward(self, pf):
        """Remove a forward: its PortForward, or its host port ("8080", "127.0.0.1:8080")."""
        self._port_remove_blocking(pf)

    def port_forwards(self):
        """Every forward of the running sandbox now, as PortForward values (asks the sandbox)."""
        return self._ports_blocking()

    def net_allow(self, rule):
        """Allow "NAME[:PORT]" (answered by the sandbox's DNS proxy) or "CIDR[:PORT]" out of the
        running sandbox (a vm's networks are fixed at boot: a CIDR raises for a vm)."""
        self._net_rule_blocking(lib.capsule_net_allow, rule)

    def net_deny(self, rule):
        """Remove an allowed entry; the addresses the proxy opened for a name close with it."""
        self._net_rule_blocking(lib.capsule_net_deny, rule)

    def net_rules(self):
        """The egress rules now: {"names": [...], "cidrs": [...], "quota": {...} or None}."""
        return self._net_rules_blocking()

    def screenshot(self, path=None):
        """The screen of a vm with a display as PNG: written to PATH (atomically), or returned
        as bytes without one."""
        return self._screenshot_blocking(path)

    def type(self, text):
        """Type TEXT on the vm's keyboard as a US layout does (printable ASCII, newline, tab)."""
        self._input_blocking(lib.capsule_input_type, enc(text, "text"))

    def key(self, spec):
        """Press and release a key or combination: "ctrl-c", "ctrl+alt+delete", "enter", "f5"."""
        self._input_blocking(lib.capsule_input_key, enc(spec, "key"))

    def mouse_move(self, x, y):
        """Move the pointer to pixel X, Y of the vm's screen."""
        self._mouse_move_blocking(x, y)

    def click(self, button="left"):
        """Click "left", "right" or "middle" where the pointer is."""
        self._input_blocking(lib.capsule_input_mouse_click, enc(button, "button"))


# One thread pool per event loop for the library's blocking calls: the default executor has
# min(32, cpus + 4) threads, and a few slow starts would then hold up every other call.
_executors = weakref.WeakKeyDictionary()
_executors_lock = threading.Lock()
EXECUTOR_THREADS = 64


def _executor(loop):
    with _executors_lock:
        ex = _executors.get(loop)
        if ex is None:
            ex = ThreadPoolExecutor(max_workers=EXECUTOR_THREADS, thread_name_prefix="capsule")
            _executors[loop] = ex
            weakref.finalize(loop, ex.shutdown, wait=False)
        return ex


async def _in_thread(fn, *args):
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_executor(loop), fn, *args)


class Sandbox(_Core):
    """A sandbox for asyncio code: `async with Sandbox(image="host") as sb: await sb.execute("ls")`.

    The library's blocking calls run in a thread pool of the running loop, so the loop is never
    blocked and many sandboxes can be driven from one loop; commands' output is read on the
    loop itself (no thread is held while a command runs), and callbacks run on the loop.

    With server= ("http://HOST:PORT" or "unix:/PATH") and token=, a sandbox on a capsule
    server instead (a capsule.remote.RemoteSandbox, docs/python.md, On a server).
    """

    def __new__(cls, image="host", *, server=None, token=None, **kw):
        if server is not None:
            from .remote import RemoteSandbox
            return RemoteSandbox(image, server=server, token=token, **kw)
        return super().__new__(cls)

    def __init__(self, image="host", *, server=None, token=None, **kw):
        super().__init__(image, **kw)
        self.fs = AsyncFs(self)

    async def start(self):
        loop = asyncio.get_running_loop()
        dispatch = None
        if self._progress is not None:
            def dispatch(f, *a):
                loop.call_soon_threadsafe(f, *a)
        fut = loop.run_in_executor(_executor(loop), self._start_blocking, dispatch)
        try:
            await asyncio.shield(fut)
        except asyncio.CancelledError:
            # The start goes on in its thread; stop what it made once it is done.
            fut.add_done_callback(lambda f: f.cancelled() or f.exception() or self._handle.close())
            raise
        # Let the progress calls queued by the start thread run before we return.
        await asyncio.sleep(0)
        return self

    async def stop(self, timeout=None):
        """Stop the sandbox (see SyncSandbox.stop)."""
        await _in_thread(self._stop_blocking, timeout)

    async def diff(self, since=None):
        """What changed in the filesystem (see SyncSandbox.diff)."""
        return await _in_thread(self._diff_blocking, since)

    def watch(self, path, recursive=False):
        """An AsyncWatch of the changes below PATH (see SyncSandbox.watch): `async with` starts
        watching, `async for` reads the events on the loop as they come (no thread is held
        while waiting)."""
        return AsyncWatch(self, path, recursive)

    async def update(self, *, memory=None, cpus=None, cpu_shares=None, pids_limit=None, cpuset_cpus=None,
                     cpuset_mems=None, memory_swap=None, memory_reservation=None):
        """Change the running sandbox's limits (see SyncSandbox.update)."""
        await _in_thread(self._update_blocking, memory, cpus, cpu_shares, pids_limit, cpuset_cpus, cpuset_mems,
                         memory_swap, memory_reservation)

    async def pause(self, to_disk=False):
        """Hold every process still, in memory or on disk (see SyncSandbox.pause)."""
        await _in_thread(self._pause_blocking, False, to_disk)

    async def resume(self):
        """Let a paused sandbox run again (see SyncSandbox.resume)."""
        await _in_thread(self._pause_blocking, True)

    async def save(self, name):
        """Save the filesystem now as NAME (see SyncSandbox.save)."""
        await _in_thread(self._save_op_blocking, lib.capsule_save, name, "save")

    async def checkpoint(self, name):
        """Keep the filesystem as checkpoint NAME (see SyncSandbox.checkpoint)."""
        await _in_thread(self._save_op_blocking, lib.capsule_checkpoint, name, "checkpoint")

    async def revert(self, name):
        """Go back to checkpoint NAME; the sandbox restarts (see SyncSandbox.revert)."""
        await _in_thread(self._save_op_blocking, lib.capsule_revert, name, "revert")

    async def fork(self, name):
        """Start sandbox NAME from this one's current state (see SyncSandbox.fork)."""
        return await _in_thread(self._fork_blocking, name)

    async def __aenter__(self):
        return await self.start()

    async def __aexit__(self, *exc):
        await self.stop(0 if exc[0] is not None else None)

    def _start_process_nowait(self, cmd, timeout, cwd, env, stdin, user, on_stdout, on_stderr, max_output, fds=()):
        """The start without a thread: only the request is sent, on the handle's idle
        connection. None when that connection is busy (the caller then starts in a thread)."""
        return self._start_process(cmd, timeout, cwd, env, stdin, user, on_stdout, on_stderr, max_output,
                                   start=_process.start_nowait, fds=fds)

    async def _spawn_driver(self, cmd, timeout, cwd, env, stdin, user, on_stdout, on_stderr, max_output, fds=()):
        loop = asyncio.get_running_loop()
        # Most commands start with no thread at all: the request goes out on the sandbox's
        # idle connection and the answer is read on the loop. A handoff to a thread and back
        # cost more than the SDK's whole budget (10% of an exec) on a loaded machine.
        pump = self._start_process_nowait(cmd, timeout, cwd, env, stdin, user, on_stdout, on_stderr, max_output, fds)
        if pump is not None:
            return _process.AsyncDriver(loop, pump, self._handle.release)
        fut = loop.run_in_executor(_executor(loop), functools.partial(
            self._start_process, cmd, timeout, cwd, env, stdin, user, on_stdout, on_stderr, max_output, fds=fds))
        try:
            pump = await asyncio.shield(fut)
        except asyncio.CancelledError:
            # Cancelled while starting: the command is killed as soon as it has started.
            def kill_started(f):
                if not f.cancelled() and f.exception() is None:
                    p = f.result()
                    p.free()
                    self._handle.release()
            fut.add_done_callback(kill_started)
            raise
        return _process.AsyncDriver(loop, pump, self._handle.release)

    async def execute(self, cmd, timeout=None, cwd=None, env=None, stdin=None, on_stdout=None, on_stderr=None,
                      user=None, max_output=_process.DEFAULT_MAX_OUTPUT, fds=()):
        """Run CMD to its end and return an ExecResult (stdout, stderr, exit_code).

        CMD: a str runs as `sh -c CMD`, a list is the argv. TIMEOUT in seconds kills the command
        and its process group and raises Timeout (e.result has the output). on_stdout and
        on_stderr are called on the loop with each piece of output (str) as it arrives; they
        may be coroutine functions. Cancelling the call kills the command. FDS (descriptors or
        files, at most 64) are the command's 3, 4, ... (container level)."""
        driver = await self._spawn_driver(cmd, timeout, cwd, env, stdin, user, on_stdout, on_stderr, max_output, fds)
        return await driver.run()

    async def spawn(self, cmd, cwd=None, env=None, stdin=None, on_stdout=None, on_stderr=None, user=None,
                    timeout=None, max_output=_process.DEFAULT_MAX_OUTPUT, fds=()):
        """Start CMD in the background: returns a Process (pid, await wait(), kill()). FDS as
        for execute()."""
        driver = await self._spawn_driver(cmd, timeout, cwd, env, stdin, user, on_stdout, on_stderr, max_output, fds)
        try:
            await asyncio.shield(driver.started)
        except asyncio.CancelledError:
            driver.abandon()
            raise
        return _process.Process(self, driver)

    async def mount(self, host_path, guest_path, readonly=False, type=None, allow_sensitive=False):
        """Bind HOST_PATH (absolute) at GUEST_PATH in the running sandbox, no restart; returns a
        MountHandle for unmount(). type="9p" is accepted (the same); "cifs" is refused."""
        check_mount_type(type)
        return await _in_thread(self._mount_blocking, host_path, guest_path, readonly, type, allow_sensitive)

    async def unmount(self, handle):
        """Remove a hot mount: its MountHandle, handle string ("m1") or guest path."""
        await _in_thread(self._unmount_blocking, handle)

    async def list_mounts(self):
        """Every mount of the sandbox now, boot-time and hot (asks the sandbox)."""
        return await _in_thread(self._refresh_mounts)

    async def add_port_forward(self, pf):
        """Forward a host port into the running sandbox (a PortForward)."""
        await _in_thread(self._port_add_blocking, pf)

    async def remove_port_forward(self, pf):
        """Remove a forward: its PortForward, or its host port ("8080", "127.0.0.1:8080")."""
        await _in_thread(self._port_remove_blocking, pf)

    async def port_forwards(self):
        """Every forward of the running sandbox now, as PortForward values (asks the sandbox)."""
        return await _in_thread(self._ports_blocking)

    async def net_allow(self, rule):
        """Allow "NAME[:PORT]" (answered by the sandbox's DNS proxy) or "CIDR[:PORT]" out of the
        running sandbox (a vm's networks are fixed at boot: a CIDR raises for a vm)."""
        await _in_thread(self._net_rule_blocking, lib.capsule_net_allow, rule)

    async def net_deny(self, rule):
        """Remove an allowed entry; the addresses the proxy opened for a name close with it."""
        await _in_thread(self._net_rule_blocking, lib.capsule_net_deny, rule)

    async def net_rules(self):
        """The egress rules now: {"names": [...], "cidrs": [...], "quota": {...} or None}."""
        return await _in_thread(self._net_rules_blocking)

    async def screenshot(self, path=None):
        """The screen of a vm with a display as PNG: written to PATH (atomically), or returned
        as bytes without one."""
        return await _in_thread(self._screenshot_blocking, path)

    async def type(self, text):
        """Type TEXT on the vm's keyboard as a US layout does (printable ASCII, newline, tab)."""
        await _in_thread(self._input_blocking, lib.capsule_input_type, enc(text, "text"))

    async def key(self, spec):
        """Press and release a key or combination: "ctrl-c", "ctrl+alt+delete", "enter", "f5"."""
        await _in_thread(self._input_blocking, lib.capsule_input_key, enc(spec, "key"))

    async def mouse_move(self, x, y):
        """Move the pointer to pixel X, Y of the vm's screen."""
        await _in_thread(self._mouse_move_blocking, x, y)

    async def click(self, button="left"):
        """Click "left", "right" or "middle" where the pointer is."""
        await _in_thread(self._input_blocking, lib.capsule_input_mouse_click, enc(button, "button"))

    @property
    def active_mounts(self):
        """The sandbox's mounts as of the last start, mount, unmount or list_mounts() through
        this object (a property cannot wait without blocking the loop; list_mounts() asks)."""
        return list(self._mounts_cache)
