"""sb.fs: files inside a running sandbox, over the command channel (no mount, no network).

Paths are absolute paths inside the sandbox, resolved by its agent inside its root, so no
path can reach a host file. SyncFs blocks; AsyncFs runs the same calls in threads and
streams in chunks, in constant memory.
"""
import asyncio
import ctypes
import errno as _errno
import os

from . import errors
from ._lib import (lib, Error, FsEntry as _CEntry, enc, check, byref, c_void_p, c_size_t, free, take_bytes, POINTER,
                   FS_PARENTS, FS_RECURSIVE, FS_FORCE, FS_NOREPLACE)
from .types import FsEntry, KINDS

STREAM_CHUNK = 1 << 20   # the flow-control window: one chunk in flight per stream
MAX_READ = 1 << 30       # fs.read's default cap (the library's): larger files need read_stream


def _entry(path, e):
    return FsEntry(path=path, kind=KINDS.get(e.kind, "other"), size=e.size, mode=e.mode, mtime=e.mtime_ns / 1e9,
                   mtime_ns=e.mtime_ns, uid=e.uid, gid=e.gid,
                   link_target=e.link_target.decode("utf-8", "surrogateescape") if e.link_target else None)


def _join(folder, name):
    return folder.rstrip("/") + "/" + name if folder != "/" else "/" + name


def _data(data):
    if isinstance(data, str):
        return data.encode()
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    return None


def _host(path):
    # Host paths in copies are the caller's own files: relative ones are from the caller's cwd.
    # Joined, not normalized: the library must see a trailing slash and each ".." as given
    # (abspath would drop the slash that asks for a folder, and cancel "link/.." unchecked).
    path = os.fspath(path)
    return enc(os.path.join(os.getcwdb() if isinstance(path, bytes) else os.getcwd(), path), "host path")


class _Stream:
    """A capsule_fs_stream pointer with one use of the sandbox handle; freed once."""

    def __init__(self, core, ptr):
        self.core = core
        self.ptr = ptr

    def read(self, buf):
        err = Error()
        n = lib.capsule_fs_stream_read(self.ptr, buf, len(buf), byref(err))
        check(n, err, "fs")
        return ctypes.string_at(buf, n) if n else b""

    def write(self, data):
        err = Error()
        check(lib.capsule_fs_stream_write(self.ptr, data, len(data), byref(err)), err, "fs")

    def close(self):
        err = Error()
        ptr, self.ptr = self.ptr, None
        try:
            check(lib.capsule_fs_stream_close(ptr, byref(err)), err, "fs")
        finally:
            lib.capsule_fs_stream_free(ptr)
            self.core._handle.release()

    deferred = False

    def abandon(self, force=False):
        if self.deferred and not force:
            return  # a call still runs in a thread: freed when it returns
        if self.ptr:
            ptr, self.ptr = self.ptr, None
            lib.capsule_fs_stream_free(ptr)
            self.core._handle.release()


class SyncFs:
    """Blocking file calls on a sandbox (also what AsyncFs runs in its threads)."""

    def __init__(self, core):
        self._core = core

    def _call(self, fn, *args):
        return self._core._call(fn, *args, op="fs")

    def write(self, path, data, mode=0, parents=True, exist_ok=True):
        """Write a whole file: str (UTF-8), bytes, a file object or an iterable of bytes. The
        new content appears at once and whole (written beside, renamed over); a file that
        exists keeps its mode and owner, a new one gets MODE (default 0644). Missing parent
        folders are made unless parents=False; exist_ok=False refuses to replace a file."""
        b = _data(data)
        flags = (FS_PARENTS if parents else 0) | (0 if exist_ok else FS_NOREPLACE)
        if b is not None:
            self._call(lib.capsule_fs_write, enc(path), b, len(b), mode, flags)
            return len(b)
        return self.write_stream(path, data, mode=mode, parents=parents, exist_ok=exist_ok)

    def _open_write(self, path, mode, flags):
        ptr = self._core._use()
        out = c_void_p()
        err = Error()
        try:
            check(lib.capsule_fs_open_write(byref(out), ptr, enc(path), mode, flags, byref(err)), err, "fs")
        except BaseException:
            self._core._handle.release()
            raise
        return _Stream(self._core, out.value)

    def write_stream(self, path, chunks, mode=0, parents=True, exist_ok=True):
        """Write a file from a file object (read in 1 MiB chunks) or an iterable of bytes, in
        constant memory; put in place only when all of it arrived."""
        flags = (FS_PARENTS if parents else 0) | (0 if exist_ok else FS_NOREPLACE)
        if hasattr(chunks, "read"):
            src = chunks
            chunks = iter(lambda: src.read(STREAM_CHUNK), b"")
        s = self._open_write(path, mode, flags)
        total = 0
        try:
            for c in chunks:
                c = _data(c)
                if c is None:
                    raise errors.InvalidArgument("write_stream: chunks must be bytes or str", _errno.EINVAL, "fs")
                if c:
                    s.write(c)
                    total += len(c)
        except BaseException:
            s.abandon()
            raise
        s.close()
        return total

    def read(self, path, max_bytes=MAX_READ):
        """The whole file as bytes (files past MAX_BYTES raise; use read_stream for those)."""
        out = c_void_p()
        n = c_size_t()
        self._call(lib.capsule_fs_read, enc(path), byref(out), byref(n), max_bytes)
        return take_bytes(out.value, n.value)

    def read_text(self, path, encoding="utf-8", errors="strict"):
        return self.read(path).decode(encoding, errors)

    def _open_read(self, path):
        ptr = self._core._use()
        out = c_void_p()
        err = Error()
        try:
            check(lib.capsule_fs_open_read(byref(out), ptr, enc(path), byref(err)), err, "fs")
        except BaseException:
            self._core._handle.release()
            raise
        return _Stream(self._core, out.value)

    def read_stream(self, path, chunk_size=STREAM_CHUNK):
        """Iterate over the file's content in chunks of at most CHUNK_SIZE bytes, in constant
        memory whatever the file's size."""
        s = self._open_read(path)
        buf = ctypes.create_string_buffer(chunk_size)
        try:
            while True:
                c = s.read(buf)
                if not c:
                    break
                yield c
        except BaseException:
            s.abandon()
            raise
        s.close()

    def stat(self, path):
        """An FsEntry for PATH itself (a symlink is reported as one, not followed)."""
        e = _CEntry()
        self._call(lib.capsule_fs_stat, enc(path), byref(e))
        try:
            return _entry(os.fspath(path), e)
        finally:
            lib.capsule_fs_entry_clear(byref(e))

    def exists(self, path):
        try:
            self.stat(path)
            return True
        except errors.NotFound:
            return False

    def list(self, path):
        """The entries of folder PATH (without . and ..), sorted by name; each has the full
        path, kind ("file", "dir", "symlink", "other"), size, mode and mtime."""
        arr = POINTER(_CEntry)()
        n = c_size_t()
        self._call(lib.capsule_fs_list, enc(path), byref(arr), byref(n))
        try:
            folder = os.fspath(path)
            return [_entry(_join(folder, arr[i].name.decode("utf-8", "surrogateescape")), arr[i])
                    for i in range(n.value)]
        finally:
            lib.capsule_fs_entries_free(arr, n.value)

    def mkdir(self, path, mode=0, parents=True, exist_ok=True):
        """Make folder PATH (mode default 0755); parents and exist_ok as in os.makedirs."""
        if not exist_ok:
            # mkdir -p succeeds on a folder that exists: make the parents that way, the
            # last component alone, so that an existing one is reported.
            parent = os.path.dirname(os.fspath(path).rstrip("/"))
            if parents and parent not in ("", "/"):
                self._call(lib.capsule_fs_mkdir, enc(parent), 0, FS_PARENTS)
            self._call(lib.capsule_fs_mkdir, enc(path), mode, 0)
            return
        try:
            self._call(lib.capsule_fs_mkdir, enc(path), mode, FS_PARENTS if parents else 0)
        except errors.AlreadyExists:
            if not exist_ok or self.stat(path).kind != "dir":
                raise

    def remove(self, path, recursive=False, missing_ok=False):
        """Remove a file, an empty folder, or with recursive=True a folder and all in it."""
        flags = (FS_RECURSIVE if recursive else 0) | (FS_FORCE if missing_ok else 0)
        self._call(lib.capsule_fs_remove, enc(path), flags)

    def rename(self, src, dst, replace=True):
        self._call(lib.capsule_fs_rename, enc(src), enc(dst), 0 if replace else FS_NOREPLACE)

    def symlink(self, target, path):
        """Make a symlink at PATH pointing at TARGET (resolved later, inside the sandbox)."""
        self._call(lib.capsule_fs_symlink, enc(target), enc(path))

    def copy_from_host(self, host_path, guest_path):
        """Copy a host file or folder into the sandbox, like `docker cp`."""
        self._call(lib.capsule_copy_to, _host(host_path), enc(guest_path))

    def copy_to_host(self, guest_path, host_path):
        """Copy a file or folder of the sandbox to the host, like `docker cp`; symlinks are
        copied as links and nothing is written outside HOST_PATH."""
        self._call(lib.capsule_copy_from, enc(guest_path), _host(host_path))


async def _thread(fn, *args):
    from .sandbox import _in_thread
    return await _in_thread(fn, *args)


async def _stream_op(stream, fn, *args):
    """FN(*ARGS) on STREAM in a thread. If the caller is cancelled meanwhile, the stream is
    freed only once that call has returned: freeing it under the thread would free memory
    the thread is using."""
    from .sandbox import _executor
    loop = asyncio.get_running_loop()
    fut = loop.run_in_executor(_executor(loop), fn, *args)
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        stream.deferred = True
        fut.add_done_callback(lambda f: stream.abandon(force=True))
        raise


class AsyncFs:
    """sb.fs of an async Sandbox: the calls of SyncFs, awaited."""

    def __init__(self, core):
        self._core = core
        self._sync = SyncFs(core)

    async def write(self, path, data, mode=0, parents=True, exist_ok=True):
        """Write a whole file from str, bytes, a file object, or an (async) iterable of bytes."""
        if _data(data) is None and hasattr(data, "__aiter__"):
            return await self.write_stream(path, data, mode=mode, parents=parents, exist_ok=exist_ok)
        return await _thread(self._sync.write, path, data, mode, parents, exist_ok)

    async def write_stream(self, path, chunks, mode=0, parents=True, exist_ok=True):
        """Write a file from an async or sync iterable of bytes, or a file object, in constant
        memory."""
        if not hasattr(chunks, "__aiter__"):
            return await _thread(self._sync.write_stream, path, chunks, mode, parents, exist_ok)
        flags = (FS_PARENTS if parents else 0) | (0 if exist_ok else FS_NOREPLACE)
        s = await _thread(self._sync._open_write, path, mode, flags)
        total = 0
        try:
            async for c in chunks:
                c = _data(c)
                if c is None:
                    raise errors.InvalidArgument("write_stream: chunks must be bytes or str", _errno.EINVAL, "fs")
                if c:
                    await _stream_op(s, s.write, c)
                    total += len(c)
        except BaseException:
            s.abandon()
            raise
        await _stream_op(s, s.close)
        return total

    async def read(self, path, max_bytes=MAX_READ):
        return await _thread(self._sync.read, path, max_bytes)

    async def read_text(self, path, encoding="utf-8", errors="strict"):
        return (await self.read(path)).decode(encoding, errors)

    async def read_stream(self, path, chunk_size=STREAM_CHUNK):
        """`async for chunk in sb.fs.read_stream(path)`: the file in chunks, constant memory."""
        s = await _thread(self._sync._open_read, path)
        buf = ctypes.create_string_buffer(chunk_size)
        try:
            while True:
                c = await _stream_op(s, s.read, buf)
                if not c:
                    break
                yield c
        except BaseException:
            s.abandon()
            raise
        await _stream_op(s, s.close)

    async def stat(self, path):
        return await _thread(self._sync.stat, path)

    async def exists(self, path):
        return await _thread(self._sync.exists, path)

    async def list(self, path):
        return await _thread(self._sync.list, path)

    async def mkdir(self, path, mode=0, parents=True, exist_ok=True):
        await _thread(self._sync.mkdir, path, mode, parents, exist_ok)

    async def remove(self, path, recursive=False, missing_ok=False):
        await _thread(self._sync.remove, path, recursive, missing_ok)

    async def rename(self, src, dst, replace=True):
        await _thread(self._sync.rename, src, dst, replace)

    async def symlink(self, target, path):
        await _thread(self._sync.symlink, target, path)

    async def copy_from_host(self, host_path, guest_path):
        await _thread(self._sync.copy_from_host, host_path, guest_path)

    async def copy_to_host(self, guest_path, host_path):
        await _thread(self._sync.copy_to_host, guest_path, host_path)
