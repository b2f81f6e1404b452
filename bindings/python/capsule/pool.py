"""Warm pools: sandboxes of one configuration kept started, so that Sandbox(pool=NAME) takes
one at once instead of starting one (docs/python.md, "Warm pools"). A pool is kept by a keeper
process of its own, outside this one: it lives until remove_pool, whatever becomes of the
program that made it."""
import ctypes
import errno as _errno
import json

from . import errors
from ._lib import lib, call, enc, free


def create_pool(name, size, /, image="host", **options):
    """Make pool NAME of SIZE (1 to 64) sandboxes with the keywords of Sandbox (memory,
    isolation, mounts, env, ...). Returns once the first one is ready, so that options
    that cannot start raise here with the start's own error; the rest start in the
    background."""
    if "name" in options or "pool" in options:
        raise errors.InvalidArgument("a pool's options cannot give a sandbox name or another pool: "
                                     "a sandbox is named when it is taken", _errno.EINVAL, "pool")
    if isinstance(size, bool) or not isinstance(size, int) or not 0 < size < 1 << 32:
        raise errors.InvalidArgument(f"invalid pool size {size!r}: expected an int from 1 to 64", _errno.EINVAL, "pool")
    from .sandbox import SyncSandbox
    # The keywords go through the library's setters exactly as a Sandbox's do; the object is
    # never started, only its configuration is used.
    template = SyncSandbox(image, **options)
    call(lib.capsule_pool_create, enc(name, "pool name"), template._cfg_box["cfg"], size, op="pool")
    return name


def pools():
    """Every pool, as a list of dicts: name, size, ready (how many wait to be taken), keeper
    (whether the process that refills it runs), keeper_pid, options (its sandboxes' settings),
    created."""
    out = ctypes.c_void_p()
    call(lib.capsule_pool_list_json, ctypes.byref(out), op="pool")
    try:
        return json.loads(ctypes.string_at(out.value).decode())
    finally:
        free(out.value)


def remove_pool(name):
    """Stop pool NAME's ready sandboxes and remove it; sandboxes taken from it go on."""
    call(lib.capsule_pool_remove, enc(name, "pool name"), op="pool")
