"""Running commands: the output pump shared by the sync and async APIs.

A capsule_process handle is not safe for concurrent calls, so each one is driven by exactly
one thread: the event loop's thread for async commands (the handle is non-blocking and its fd
is watched with add_reader, so no thread is held while a command runs), or one thread that
polls for sync commands. Everything else reaches the handle through that thread.
"""
import asyncio
import codecs
import ctypes
import errno as _errno
import os
import select
import signal as _signal
import threading

from . import errors
from ._lib import lib, Error, ExecOptions, ExitStatus, EXEC_OPTIONS_VERSION, EXEC_OPTIONS_VERSION_FDS, EXEC_MAX_FDS, enc, cstr_array, check, byref, c_int, c_void_p
from .types import ExecResult

READ_CHUNK = 256 * 1024
STDIN_CHUNK = 256 * 1024
DEFAULT_MAX_OUTPUT = 64 << 20


def fd_numbers(fds):
    """FDS (ints or objects with fileno()) as a list of descriptor numbers, checked."""
    if isinstance(fds, (str, bytes, int)) or not hasattr(fds, "__iter__"):
        raise errors.InvalidArgument(f"fds: expected a list of descriptors, got {type(fds).__name__}",
                                     _errno.EINVAL, "exec")
    out = []
    for f in fds:
        n = f if isinstance(f, int) and not isinstance(f, bool) else getattr(f, "fileno", None)
        if callable(n):
            n = n()
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise errors.InvalidArgument(f"fds: {f!r} is not a descriptor (an int >= 0 or an object with fileno())",
                                         _errno.EINVAL, "exec")
        out.append(n)
    if len(out) > EXEC_MAX_FDS:
        raise errors.InvalidArgument(f"fds: {len(out)} descriptors to pass, at most {EXEC_MAX_FDS}", _errno.E2BIG,
                                     "exec")
    return out


def exec_options(cmd, *, timeout=None, cwd=None, env=None, user=None, stdin_open=False, fds=()):
    """An ExecOptions for CMD (str: `sh -c CMD`; a list: argv), and the objects it points at,
    which must live until capsule_exec_start returns. FDS become 3, 4, ... in the command."""
    o = ExecOptions()
    o.version = EXEC_OPTIONS_VERSION
    keep = []
    if isinstance(cmd, (str, bytes)):
        if not cmd:
            raise errors.InvalidArgument("no command given", _errno.EINVAL, "exec")
        o.shell = enc(cmd, "command")
        keep.append(o.shell)
    elif isinstance(cmd, (list, tuple)):
        if not cmd:
            raise errors.InvalidArgument("no command given (an empty argv)", _errno.EINVAL, "exec")
        arr = cstr_array([os.fspath(a) if isinstance(a, os.PathLike) else str(a) if isinstance(a, int) else a
                          for a in cmd], "argument")
        keep.append(arr)
        o.argv = ctypes.cast(arr, ctypes.POINTER(ctypes.c_char_p))
    else:
        raise errors.InvalidArgument(f"command: expected a str or a list of arguments, got {type(cmd).__name__}",
                                     _errno.EINVAL, "exec")
    if env:
        items = [f"{k}={v}" for k, v in env.items()] if isinstance(env, dict) else list(env)
        for kv in items:
            if "=" not in kv or kv.startswith("="):
                raise errors.InvalidArgument(f"environment entry {kv!r}: expected KEY=VALUE", _errno.EINVAL, "exec")
        arr = cstr_array(items, "environment entry")
        keep.append(arr)
        o.env = ctypes.cast(arr, ctypes.POINTER(ctypes.c_char_p))
    if cwd is not None:
        o.cwd = enc(cwd, "cwd")
        keep.append(o.cwd)
    if user is not None:
        o.user = enc(str(user), "user")
        keep.append(o.user)
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise errors.InvalidArgument(f"invalid timeout {timeout!r}: expected a number of seconds > 0",
                                         _errno.EINVAL, "exec")
        ms = int(timeout * 1000 + 0.999)
        if ms >= 1 << 32:
            raise errors.InvalidArgument(f"invalid timeout {timeout!r}: too large", _errno.EINVAL, "exec")
        o.timeout_ms = ms
    o.stdin_open = stdin_open
    numbers = fd_numbers(fds)
    if numbers:
        arr = (c_int * len(numbers))(*numbers)
        keep.append(arr)
        o.version = EXEC_OPTIONS_VERSION_FDS
        o.fds = ctypes.cast(arr, ctypes.POINTER(c_int))
        o.nfds = len(numbers)
    return o, keep


def stdin_bytes(stdin):
    if stdin is None:
        return None
    if isinstance(stdin, str):
        return stdin.encode()
    if isinstance(stdin, (bytes, bytearray, memoryview)):
        return bytes(stdin)
    raise errors.InvalidArgument(f"stdin: expected str or bytes, got {type(stdin).__name__}", _errno.EINVAL, "exec")


def start(sb_ptr, opts):
    """capsule_exec_start; returns the process pointer. Blocks until the command runs."""
    p = c_void_p()
    err = Error()
    rc = lib.capsule_exec_start(byref(p), sb_ptr, byref(opts), byref(err))
    check(rc, err, "exec")
    return p


def start_nowait(sb_ptr, opts):
    """capsule_exec_start_nowait: sends the request and returns at once, or None when the
    sandbox handle's connection is busy (then start() in a thread)."""
    p = c_void_p()
    err = Error()
    rc = lib.capsule_exec_start_nowait(byref(p), sb_ptr, byref(opts), byref(err))
    if rc == -_errno.EAGAIN:
        return None
    check(rc, err, "exec")
    return p


_buffers = threading.local()


def _read_buffer():
    """This thread's read buffer. Pumps on one thread share it: a step copies what it read
    out of it before any callback runs, and steps of one thread never interleave."""
    b = getattr(_buffers, "buf", None)
    if b is None:
        b = _buffers.buf = ctypes.create_string_buffer(READ_CHUNK)
    return b


class Pump:
    """Moves a command's stdin and output. step() does all the work that can be done without
    waiting and says whether the command is over; it never blocks (the handle is in
    non-blocking mode). Called from one thread only."""

    def __init__(self, proc_ptr, stdin, on_stdout, on_stderr, max_output):
        self.p = proc_ptr
        self.fd = lib.capsule_process_fd(proc_ptr)
        self.pid = lib.capsule_process_pid(proc_ptr)
        lib.capsule_process_set_nonblocking(proc_ptr, True)
        self.stdin = stdin
        self.stdin_off = 0
        self.callbacks = {1: on_stdout, 2: on_stderr}
        self.decoders = {1: codecs.getincrementaldecoder("utf-8")("replace"),
                         2: codecs.getincrementaldecoder("utf-8")("replace")}
        self.out = {1: [], 2: []}
        self.out_len = {1: 0, 2: 0}
        self.max_output = max_output
        self.buf = _read_buffer()
        self.stream = c_int()
        self.err = Error()
        self._stream_ref = byref(self.stream)
        self._err_ref = byref(self.err)
        self.pending = []   # awaitables the callbacks returned
        self.done = False
        self.status = None

    def _write_stdin(self):
        if self.stdin is None:
            return
        data = self.stdin
        while self.stdin_off < len(data):
            n = min(len(data) - self.stdin_off, STDIN_CHUNK)
            chunk = data[self.stdin_off:self.stdin_off + n]
            r = lib.capsule_process_write(self.p, chunk, n, byref(self.err))
            if r == -_errno.EAGAIN:
                return
            if r == -_errno.EPIPE:
                break  # the command exited or closed its stdin: the rest is dropped, as a pipe would
            check(r, self.err, "exec")
            self.stdin_off += r
            if r < n:
                return
        self.stdin = None
        lib.capsule_process_close_stdin(self.p, None)

    def _deliver(self, stream, data):
        if self.out_len[stream] < self.max_output:
            keep = data[: self.max_output - self.out_len[stream]]
            self.out[stream].append(keep)
            self.out_len[stream] += len(keep)
        cb = self.callbacks.get(stream)
        if cb is not None:
            text = self.decoders[stream].decode(data)
            if text:
                r = cb(text)
                if r is not None and hasattr(r, "__await__"):
                    self.pending.append(asyncio.ensure_future(r))

    def step(self):
        """True when every output stream has ended and the exit status is known."""
        if self.done:
            return True
        if self.stdin is not None:
            self._write_stdin()
        p, buf, stream, err = self.p, self.buf, self.stream, self.err
        read, stream_ref, err_ref = lib.capsule_process_read, self._stream_ref, self._err_ref
        while True:
            n = read(p, stream_ref, buf, READ_CHUNK, err_ref)
            if n > 0:
                self._deliver(stream.value, ctypes.string_at(buf, n))
                continue
            if n == -_errno.EAGAIN:
                if not self.pid:
                    self.pid = lib.capsule_process_pid(p)
                if self.stdin is not None:
                    self._write_stdin()
                return False
            if n == 0:
                break
            check(n, err, "exec")
        st = ExitStatus()
        check(lib.capsule_process_wait(p, byref(st), byref(err)), err, "exec")
        if not self.pid:
            self.pid = lib.capsule_process_pid(p)
        for s in (1, 2):
            cb = self.callbacks.get(s)
            if cb is not None:
                tail = self.decoders[s].decode(b"", final=True)
                if tail:
                    cb(tail)
        self.status = st
        self.done = True
        return True

    def wants_write(self):
        return self.stdin is not None

    def signal(self, signo):
        if not self.done and self.p:
            lib.capsule_process_signal(self.p, signo, None)

    def free(self):
        """Release the handle; a command still running is killed with its process group."""
        if self.p:
            lib.capsule_process_free(self.p)
            self.p = None

    def result(self):
        out = b"".join(self.out[1])
        err = b"".join(self.out[2])
        st = self.status
        res = ExecResult(out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), st.exit_code,
                         st.signal, bool(st.timed_out), out, err)
        if st.timed_out:
            e = errors.Timeout(f"command timed out and was killed (exit code {st.exit_code})", _errno.ETIMEDOUT, "exec")
            e.result = res
            raise e
        return res


def run_blocking(pump, wake_fd=None, on_wake=None):
    """Drive PUMP to the end from this thread, polling its fd (and WAKE_FD, whose readiness
    calls on_wake() in this thread, for requests such as kill from other threads)."""
    poller = select.poll()
    while not pump.step():
        ev = select.POLLIN | (select.POLLOUT if pump.wants_write() else 0)
        poller.register(pump.fd, ev)
        if wake_fd is not None:
            poller.register(wake_fd, select.POLLIN)
        for fd, _ in poller.poll():
            if fd == wake_fd:
                on_wake()
        poller.unregister(pump.fd)
        if wake_fd is not None:
            poller.unregister(wake_fd)


class AsyncDriver:
    """Drives a Pump from the event loop: add_reader on the process fd, step() on readiness."""

    def __init__(self, loop, pump, release):
        self.loop = loop
        self.pump = pump
        self.release = release   # called once the handle is freed (the sandbox's use count)
        self.finished = loop.create_future()
        self.started = loop.create_future()   # the pid, once the sandbox has said it
        self.watching_write = False
        self.watching = False
        self._step()
        if not self.finished.done():
            loop.add_reader(pump.fd, self._step)
            self.watching = True
            self._update_writer()

    def _update_writer(self):
        want = self.pump.wants_write()
        if want and not self.watching_write:
            self.loop.add_writer(self.pump.fd, self._step)
            self.watching_write = True
        elif not want and self.watching_write:
            self.loop.remove_writer(self.pump.fd)
            self.watching_write = False

    def _unwatch(self):
        if self.watching:
            self.loop.remove_reader(self.pump.fd)
            self.watching = False
        if self.watching_write:
            self.loop.remove_writer(self.pump.fd)
            self.watching_write = False

    def _step(self):
        if self.finished.done():
            return
        try:
            done = self.pump.step()
        except BaseException as e:  # noqa: B902 - handed to the awaiting task
            self._finish()
            self.finished.set_exception(e)
            self.finished.exception()  # marked retrieved: a spawn() that failed never waits on it
            if not self.started.done():
                self.started.set_exception(e)
                self.started.exception()  # nor does execute() on this one
            return
        if self.pump.pid and not self.started.done():
            self.started.set_result(self.pump.pid)
        if done:
            self._finish()
            self.finished.set_result(None)
        elif self.watching:
            self._update_writer()

    over = False

    def _finish(self):
        self.over = True
        self._unwatch()
        self.pump.free()
        rel, self.release = self.release, None
        if rel:
            rel()

    def kill(self, signo=_signal.SIGKILL):
        self.pump.signal(signo)

    def abandon(self):
        """Cancelled: kill the command (its process group) and free the handle."""
        if not self.over:
            self.pump.signal(_signal.SIGKILL)
            self._finish()
        for f in (self.finished, self.started):
            if not f.done():
                f.cancel()

    async def run(self):
        """execute(): the result; cancelling this kills the command. (No shield: awaiting the
        future itself saves a turn of the loop, a tenth of the SDK's budget.)"""
        try:
            await self.finished
        except asyncio.CancelledError:
            self.abandon()
            raise
        return await self._result()

    async def wait(self):
        """Process.wait(): cancelling the wait leaves the command running."""
        await asyncio.shield(self.finished)
        return await self._result()

    async def _result(self):
        if self.pump.pending:
            await asyncio.gather(*self.pump.pending)
        return self.pump.result()


class _Signals:
    """kill() and terminate() over a class's send_signal()."""

    def kill(self):
        return self.send_signal(_signal.SIGKILL)

    def terminate(self):
        return self.send_signal(_signal.SIGTERM)


class Process(_Signals):
    """A command started with `await sb.spawn(...)`, running in the background.

    pid: its pid inside the sandbox. `await p.wait()` returns its ExecResult (output is
    collected, and passed to on_stdout/on_stderr on the loop, as it comes). p.kill() sends
    SIGKILL (p.send_signal for others). It is killed when the sandbox stops."""

    def __init__(self, sandbox, driver):
        self._sandbox = sandbox   # keeps the sandbox handle alive while we run
        self._driver = driver
        self.pid = driver.pump.pid

    @property
    def returncode(self):
        st = self._driver.pump.status
        return None if st is None else st.exit_code

    def send_signal(self, signo):
        self._driver.kill(int(signo))

    async def wait(self):
        return await self._driver.wait()

    def __repr__(self):
        return f"<capsule.Process pid={self.pid} returncode={self.returncode}>"


class SyncProcess(_Signals):
    """A command started with sb.spawn(...) on a SyncSandbox: one thread of its own pumps its
    output; kill() and send_signal() hand the signal to that thread."""

    def __init__(self, sandbox, pump, release):
        self._sandbox = sandbox
        self._pump = pump
        self._release = release
        self.pid = pump.pid
        self._signals = []
        self._lock = threading.Lock()
        self._rfd, self._wfd = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._error = None
        self._thread = threading.Thread(target=self._run, name=f"capsule-process-{self.pid}", daemon=True)
        self._thread.start()

    def _on_wake(self):
        try:
            os.read(self._rfd, 64)
        except BlockingIOError:
            pass
        with self._lock:
            sigs, self._signals = self._signals, []
        for s in sigs:
            self._pump.signal(s)

    def _run(self):
        try:
            run_blocking(self._pump, self._rfd, self._on_wake)
        except BaseException as e:  # noqa: B902 - re-raised by wait()
            self._error = e
        finally:
            self._pump.free()
            os.close(self._rfd)
            with self._lock:
                os.close(self._wfd)
                self._wfd = -1
            self._release()

    @property
    def returncode(self):
        st = self._pump.status
        return None if st is None else st.exit_code

    def send_signal(self, signo):
        with self._lock:
            if self._wfd < 0:
                return
            self._signals.append(int(signo))
            os.write(self._wfd, b"s")

    def wait(self, timeout=None):
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise errors.Timeout(f"process {self.pid} still running after {timeout} s", _errno.ETIMEDOUT, "wait")
        if self._error is not None:
            raise self._error
        return self._pump.result()

    def __repr__(self):
        return f"<capsule.SyncProcess pid={self.pid} returncode={self.returncode}>"
