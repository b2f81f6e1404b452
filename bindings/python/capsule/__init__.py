"""capsule: sandboxes for untrusted code, from Python.

    from capsule import Sandbox, SyncSandbox, Mount, Volume, NetworkMode, CapsuleError

    async with Sandbox(image="host", memory="512M") as sb:
        r = await sb.execute("echo hi")
        print(r.stdout, r.exit_code)

ctypes over libcapsule.so, no other dependency. The library is found through $CAPSULE_LIB,
then ../../build/libcapsule.so from this package in a source tree, then the installed one.
See docs/python.md.
"""
from .errors import (CapsuleError, InvalidArgument, NotFound, ImageNotFound, AlreadyExists, PermissionDenied,
                     QuotaExceeded, Timeout, SandboxNotRunning, MountError, Busy, UnsupportedFeature)
from .types import Mount, MountHandle, NetworkMode, PortForward, ExecResult, FsEntry
from .sandbox import Sandbox, SyncSandbox
from ._process import Process, SyncProcess
from .volume import Volume, VolumeFs
from . import _lib
from . import remote
from . import image as images
from .pool import create_pool, pools, remove_pool

__version__ = "0.1.0"


def home():
    """Where capsule keeps its state: $CAPSULE_HOME, else /var/lib/capsule for root."""
    return _lib.lib.capsule_home().decode()


def _json_of(fn, op):
    """The JSON text a library call FN(&out, &err) malloc'd, decoded; the buffer is freed."""
    import ctypes
    import json
    out = ctypes.c_void_p()
    _lib.call(fn, ctypes.byref(out), op=op)
    try:
        return json.loads(ctypes.string_at(out.value).decode())
    finally:
        _lib.free(out.value)


def doctor():
    """What this host supports (a dict): user namespaces, cgroups, seccomp, overlay..."""
    return _json_of(_lib.lib.capsule_doctor_json, "doctor")


def remove(name, force=False):
    """Remove the sandbox NAME (force: stop it first if running)."""
    _lib.call(_lib.lib.capsule_sandbox_remove, _lib.enc(name, "name"), bool(force), op="remove")


def saves():
    """Every save, as a list of dicts: name, parent, parent_kind, created, size, files,
    chain (from the image up to the save), chain_size."""
    return _json_of(_lib.lib.capsule_saves_json, "saves")


def remove_save(name):
    """Remove the save NAME (refused with Busy while a save or a sandbox depends on it)."""
    _lib.call(_lib.lib.capsule_save_remove, _lib.enc(name, "save name"), op="saves")


def system_df():
    """What the stores take (a dict): images and saves {count, bytes}, vm {files, entries,
    bytes, kept_bytes, reclaimable}; each vm file says why it is kept (None: prune removes it)."""
    return _json_of(_lib.lib.capsule_system_df_json, "system")


def system_prune():
    """Remove image layers and vm store files that nothing uses; returns the bytes freed."""
    import ctypes
    freed = ctypes.c_uint64()
    _lib.call(_lib.lib.capsule_system_prune, ctypes.byref(freed), op="system")
    return freed.value


__all__ = ["Sandbox", "SyncSandbox", "Process", "SyncProcess", "Mount", "MountHandle", "NetworkMode", "PortForward",
           "ExecResult", "FsEntry", "Volume", "VolumeFs", "CapsuleError", "InvalidArgument", "NotFound",
           "ImageNotFound", "AlreadyExists", "PermissionDenied", "QuotaExceeded", "Timeout", "SandboxNotRunning",
           "MountError", "Busy", "UnsupportedFeature", "home", "doctor", "remove", "images", "saves",
           "remove_save", "system_df", "system_prune", "create_pool", "pools", "remove_pool"]
