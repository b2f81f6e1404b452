"""Sandboxes on a capsule server (docs/serve.md), with the local SDK's names:

    async with Sandbox(server="http://127.0.0.1:8080", token=TOKEN) as sb:
        r = await sb.execute("echo hi")

Sandbox(server=..., token=...) and SyncSandbox(server=..., token=...) make the classes below.
Only the standard library (http.client): each thread keeps one keep-alive connection for plain
requests; a command's output stream, a watch and file transfers get their own. What the HTTP
API does not have (mounts, saves, port forwards, display) is not here.
"""
import asyncio
import base64
import codecs
import errno as _errno
import http.client
import json
import queue
import socket
import threading
import urllib.parse

from . import errors
from ._process import _Signals, stdin_bytes as _stdin_bytes
from .sandbox import _AsyncWatchProtocol, _WatchProtocol
from .types import ExecResult, FsEntry, NetworkMode

DEFAULT_MAX_OUTPUT = 64 << 20
READ_CHUNK = 1 << 16

# The server's error codes (docs/serve.md, Errors) as the SDK's exceptions and errnos.
_BY_CODE = {
    "invalid_request": (errors.InvalidArgument, _errno.EINVAL),
    "invalid_argument": (errors.InvalidArgument, _errno.EINVAL),
    "unauthorized": (errors.PermissionDenied, _errno.EACCES),
    "permission_denied": (errors.PermissionDenied, _errno.EACCES),
    "not_found": (errors.NotFound, _errno.ENOENT),
    "already_exists": (errors.AlreadyExists, _errno.EEXIST),
    "busy": (errors.Busy, _errno.EBUSY),
    "sandbox_paused": (errors.Busy, _errno.EBUSY),
    "too_large": (errors.CapsuleError, _errno.EFBIG),
    "sandbox_not_running": (errors.SandboxNotRunning, _errno.ESHUTDOWN),
    "shutting_down": (errors.SandboxNotRunning, _errno.ESHUTDOWN),
    "limit_exceeded": (errors.QuotaExceeded, _errno.EDQUOT),
    "no_space": (errors.QuotaExceeded, _errno.ENOSPC),
    "timed_out": (errors.Timeout, _errno.ETIMEDOUT),
    "stdin_closed": (errors.CapsuleError, _errno.EPIPE),
    "not_running": (errors.CapsuleError, _errno.ESRCH),
}


def _error(status, doc, op):
    e = doc.get("error") if isinstance(doc, dict) else None
    code = e.get("code") if isinstance(e, dict) else None
    message = e.get("message", code) if isinstance(e, dict) else f"HTTP {status}"
    cls, eno = _BY_CODE.get(code, (errors.CapsuleError, _errno.EIO))
    exc = cls(message, eno, op)
    exc.status, exc.code = status, code
    return exc



def _no_fds(fds):
    """Descriptors do not cross HTTP: a remote exec given some is refused, not run without them."""
    if fds:
        raise errors.UnsupportedFeature("fds: descriptors cannot be passed to a sandbox over HTTP (a local "
                                        "container-level sandbox takes them)", _errno.EOPNOTSUPP, "exec")


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=None):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self._path)
        self.sock = s


class _Conn:
    """The server: SERVER is http://HOST:PORT or unix:/PATH."""

    def __init__(self, server, token):
        if not token:
            raise errors.InvalidArgument("a server needs a token (capsule token create NAME)", _errno.EINVAL, "connect")
        self._auth = f"Bearer {token}"
        if server.startswith("unix:"):
            self._unix, self._base = server[5:], ""
        else:
            u = urllib.parse.urlsplit(server)
            if u.scheme != "http" or not u.hostname:
                raise errors.InvalidArgument(f"server {server!r}: expected http://HOST:PORT or unix:/PATH",
                                             _errno.EINVAL, "connect")
            self._unix, self._host, self._port, self._base = None, u.hostname, u.port or 80, u.path.rstrip("/")
        self._local = threading.local()

    def _new(self):
        if self._unix is not None:
            return _UnixConnection(self._unix)
        return http.client.HTTPConnection(self._host, self._port)

    def open(self, method, path, body=None, headers=None, fresh=False, op="request"):
        """The response, whatever its status, body unread. FRESH: on a connection of its own
        (a stream), closed with the response; else on this thread's kept-alive one."""
        h = {"Authorization": self._auth}
        h.update(headers or {})
        reuse = not fresh and getattr(self._local, "conn", None) is not None
        conn = self._local.conn if reuse else self._new()
        try:
            conn.request(method, self._base + path, body=body, headers=h)
            resp = conn.getresponse()
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
            conn.close()
            self._local.conn = None
            if reuse and (body is None or isinstance(body, (bytes, str))):
                # The server closes idle kept-alive connections; one that went so never saw
                # this request, which goes again on a new connection.
                return self.open(method, path, body, headers, fresh, op)
            raise errors.SandboxNotRunning(f"{method} {path}: {e}", _errno.ECONNRESET, op) from None
        except OSError as e:
            conn.close()
            self._local.conn = None
            raise errors.CapsuleError(f"{method} {path}: {e.strerror or e}", e.errno or _errno.EIO, op) from None
        if not fresh:
            self._local.conn = conn
        return resp

    def check(self, resp, op):
        if resp.status >= 400:
            data = resp.read()
            try:
                doc = json.loads(data)
            except ValueError:
                doc = None
            raise _error(resp.status, doc, op)
        return resp

    def json(self, method, path, body=None, op="request"):
        data = None if body is None else json.dumps(body).encode()
        resp = self.open(method, path, data, {"Content-Type": "application/json"} if data is not None else None, op=op)
        self.check(resp, op)
        data = resp.read()
        return json.loads(data) if data else None


def _q(s):
    return urllib.parse.quote(s, safe="")


def _command(cmd):
    if isinstance(cmd, str):
        if not cmd:
            raise errors.InvalidArgument("no command given", _errno.EINVAL, "exec")
        return {"command": cmd}
    if isinstance(cmd, (list, tuple)) and cmd:
        return {"cmd": [str(a) for a in cmd]}
    raise errors.InvalidArgument(f"command: expected a str or a non-empty list, got {cmd!r}", _errno.EINVAL, "exec")


def _exec_body(cmd, timeout, cwd, env, user, stdin_text=None):
    b = _command(cmd)
    if env:
        b["env"] = dict(env) if isinstance(env, dict) else dict(kv.split("=", 1) for kv in env)
    if cwd is not None:
        b["cwd"] = str(cwd)
    if user is not None:
        b["user"] = str(user)
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise errors.InvalidArgument(f"invalid timeout {timeout!r}: expected a number of seconds > 0",
                                         _errno.EINVAL, "exec")
        b["timeout"] = timeout
    if stdin_text is not None:
        b["stdin"] = stdin_text
    return b


def _as_text(data):
    """DATA as a JSON string field can carry it exactly (UTF-8 without NUL), or None."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if "\0" in text else text


def _decoded(doc, key):
    text = doc.get(key, "")
    return base64.b64decode(text) if doc.get(f"{key}_encoding") == "base64" else text.encode()


def _result(out, err, exit_code, signo, timed_out):
    res = ExecResult(out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), exit_code, signo,
                     bool(timed_out), out, err)
    if timed_out:
        e = errors.Timeout(f"command timed out and was killed (exit code {exit_code})", _errno.ETIMEDOUT, "exec")
        e.result = res
        raise e
    return res


def _signo(sig):
    if isinstance(sig, str):
        return sig
    return int(sig)


def _sse_events(resp):
    """(name, data) of each server-sent event of RESP; read in large pieces, as http.client's
    readline is slow."""
    buf = b""
    while True:
        chunk = resp.read1(READ_CHUNK)
        if not chunk:
            return
        buf += chunk
        while True:
            end = buf.find(b"\n\n")
            if end < 0:
                break
            block, buf = buf[:end], buf[end + 2:]
            name, data = "message", []
            for line in block.split(b"\n"):
                if not line or line.startswith(b":"):
                    continue
                field, _, value = line.partition(b":")
                value = value[1:] if value.startswith(b" ") else value
                if field == b"event":
                    name = value.decode()
                elif field == b"data":
                    data.append(value)
            if data:
                yield name, json.loads(b"\n".join(data))


class _Stream:
    """One streaming command: its events read from one response, its output collected (up to
    MAX_OUTPUT a stream) and handed to the callbacks. run() reads to the end."""

    def __init__(self, sb, eid, pid, on_stdout, on_stderr, max_output, deliver=None):
        self.sb, self.id, self.pid = sb, eid, pid
        self.path = f"/v1/sandboxes/{_q(sb.id)}/execs/{_q(eid)}"
        self.callbacks = {"stdout": on_stdout, "stderr": on_stderr}
        self.decoders = {s: codecs.getincrementaldecoder("utf-8")("replace") for s in self.callbacks}
        self.out = {"stdout": [], "stderr": []}
        self.out_len = {"stdout": 0, "stderr": 0}
        self.max_output = max_output
        self.deliver = deliver or (lambda cb, text: cb(text))
        self.status = None
        self.error = None
        self.resp = sb._conn.check(sb._conn.open("GET", self.path + "/events", fresh=True, op="exec"), "exec")

    def events(self):
        return _sse_events(self.resp)

    def run(self):
        try:
            for name, doc in self.events():
                if name in self.callbacks:
                    data = base64.b64decode(doc["data"]) if doc["encoding"] == "base64" else doc["data"].encode()
                    self._output(name, data)
                elif name == "exit":
                    self.status = doc
                elif name == "error":
                    self.error = _error(0, doc, "exec")
        except OSError as e:
            self.error = errors.SandboxNotRunning(f"reading the output of {self.id}: {e}", _errno.ECONNRESET, "exec")
        finally:
            self.resp.close()
        for s, cb in self.callbacks.items():
            tail = self.decoders[s].decode(b"", final=True)
            if cb is not None and tail:
                self.deliver(cb, tail)
        if self.status is None and self.error is None:
            self.error = errors.SandboxNotRunning(f"the output of {self.id} ended early", _errno.ECONNRESET, "exec")

    def _output(self, stream, data):
        room = self.max_output - self.out_len[stream]
        if room > 0:
            self.out[stream].append(data[:room])
            self.out_len[stream] += min(room, len(data))
        cb = self.callbacks[stream]
        if cb is not None:
            text = self.decoders[stream].decode(data)
            if text:
                self.deliver(cb, text)

    def result(self):
        if self.error is not None:
            raise self.error
        st = self.status
        return _result(b"".join(self.out["stdout"]), b"".join(self.out["stderr"]), st["exit_code"], st["signal"],
                       st["timed_out"])


class _Core:
    """What RemoteSyncSandbox and RemoteSandbox share: the blocking calls."""

    _ALLOWED = {"memory", "cpus", "env", "isolation", "network_mode", "labels", "timeout"}

    def __init__(self, image="host", *, server, token, **kw):
        unknown = set(kw) - self._ALLOWED
        if unknown:
            raise errors.InvalidArgument(f"not available through a server: {', '.join(sorted(unknown))}",
                                         _errno.EINVAL, "config")
        self._conn = _Conn(server, token)
        body = {"image": image}
        if kw.get("memory") is not None:
            body["memory"] = kw["memory"]
        if kw.get("cpus") is not None:
            body["cpus"] = kw["cpus"]
        if kw.get("env"):
            body["env"] = dict(kw["env"])
        if kw.get("isolation") is not None:
            body["isolation"] = str(kw["isolation"]).lower()
        if kw.get("network_mode") is not None:
            body["network"] = NetworkMode.parse(kw["network_mode"]).value
        if kw.get("labels"):
            body["labels"] = dict(kw["labels"])
        if kw.get("timeout") is not None:
            body["timeout"] = kw["timeout"]
        self._create = body
        self.id = None
        self.info = None

    @property
    def name(self):
        return self.id

    def _bind(self, sid):
        self.id = sid
        self.info = self._conn.json("GET", f"/v1/sandboxes/{_q(sid)}", op="connect")

    def _start_blocking(self):
        if self.id is not None:
            raise errors.AlreadyExists("the sandbox was started already (a Sandbox object starts once)",
                                       _errno.EEXIST, "create")
        self.info = self._conn.json("POST", "/v1/sandboxes", self._create, op="create")
        self.id = self.info["id"]

    def _stop_blocking(self, timeout=None):
        if self.id is not None:
            try:
                self._conn.json("DELETE", f"/v1/sandboxes/{_q(self.id)}", op="stop")
            except errors.NotFound:
                pass  # gone already (its timeout, or removed by another client)

    def _is_running_blocking(self):
        if self.id is None:
            return False
        try:
            self.info = self._conn.json("GET", f"/v1/sandboxes/{_q(self.id)}", op="inspect")
        except errors.NotFound:
            return False
        # As locally: a paused sandbox still runs (its processes are held, not ended).
        return self.info.get("state") in ("running", "paused")

    def _exec_blocking(self, cmd, timeout, cwd, env, stdin, user, max_output):
        data = _stdin_bytes(stdin)
        text = None if data is None else _as_text(data)
        if data is not None and text is None:
            # Bytes a JSON string cannot carry go in through a streaming exec.
            st = self._spawn_blocking(cmd, timeout, cwd, env, data, user, None, None, max_output)
            st.run()
            return st.result()
        doc = self._conn.json("POST", f"/v1/sandboxes/{_q(self.id)}/exec",
                              _exec_body(cmd, timeout, cwd, env, user, text), op="exec")
        out, err = _decoded(doc, "stdout")[:max_output], _decoded(doc, "stderr")[:max_output]
        code = doc["exit_code"]
        return _result(out, err, code, doc.get("signal", 0), doc["timed_out"])

    def _spawn_blocking(self, cmd, timeout, cwd, env, stdin, user, on_stdout, on_stderr, max_output, deliver=None):
        data = _stdin_bytes(stdin)
        text = None if data is None else _as_text(data)
        doc = self._conn.json("POST", f"/v1/sandboxes/{_q(self.id)}/execs",
                              _exec_body(cmd, timeout, cwd, env, user, text), op="exec")
        st = _Stream(self, doc["id"], doc["pid"], on_stdout, on_stderr, max_output, deliver)
        if data is not None and text is None:
            # Given stdin is all the command gets (text went in the request, which closed it).
            # A command that ended without reading it drops it, as a pipe's reader would.
            try:
                self._stdin_blocking(st, data, close=True)
            except errors.CapsuleError as e:
                if getattr(e, "code", None) not in ("not_found", "stdin_closed"):
                    raise
        return st

    def _stdin_blocking(self, st, data, close=False):
        resp = self._conn.open("POST", st.path + "/stdin" + ("?close=1" if close else ""), bytes(data),
                               {"Content-Type": "application/octet-stream"}, op="exec")
        self._conn.check(resp, "exec")
        return json.loads(resp.read())["written"]

    def _signal_blocking(self, st, signo):
        try:
            self._conn.json("POST", st.path + "/signal", {"signal": _signo(signo)}, op="signal")
        except errors.CapsuleError as e:
            # Like a local process: signalling one that already ended does nothing.
            if getattr(e, "code", None) not in ("not_found", "not_running"):
                raise

    def _diff_blocking(self, since=None):
        q = "" if since is None else f"?since={_q(str(since))}"
        return self._conn.json("GET", f"/v1/sandboxes/{_q(self.id)}/diff{q}", op="diff")["changes"]

    def _pause_blocking(self, resume):
        op = "resume" if resume else "pause"
        self.info = self._conn.json("POST", f"/v1/sandboxes/{_q(self.id)}/{op}", {}, op=op)

    def __repr__(self):
        return f"<capsule.{type(self).__name__} id={self.id!r}>"


_END = object()
# Events a watch holds for its reader: past this the reading thread waits, the server stops
# being able to send, and what the sandbox changes meanwhile comes as an "overflow" event.
WATCH_QUEUE = 1024


class RemoteSyncWatch(_WatchProtocol):
    """A watch of a folder of a server's sandbox (GET .../watch), with SyncWatch's names: a
    context manager and an iterator of event dicts. A thread reads the stream into a bounded
    queue; watching starts with `with` (or the first event)."""

    def __init__(self, core, path, recursive):
        self._core, self._path, self._recursive = core, path, recursive
        self._resp = None
        self._done = False
        self._error = None
        self._q = queue.Queue(WATCH_QUEUE)

    def start(self):
        if self._resp is None and not self._done:
            conn = self._core._conn
            q = f"path={_q(str(self._path))}" + ("&recursive=1" if self._recursive else "")
            # The answer comes once the sandbox watches: every change after it is seen.
            self._resp = conn.check(conn.open("GET", f"/v1/sandboxes/{_q(self._core.id)}/watch?{q}", fresh=True,
                                              op="watch"), "watch")
            threading.Thread(target=self._pump, name=f"capsule-watch-{self._core.id}", daemon=True).start()
        return self

    def _put(self, item):
        while not self._done:
            try:
                self._q.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def _pump(self):
        try:
            for name, doc in _sse_events(self._resp):
                if name == "end":
                    break
                if name == "error":
                    # The sandbox stopping ends a watch, as it does the local one's.
                    if (doc.get("error") or {}).get("code") != "sandbox_not_running":
                        self._error = _error(0, doc, "watch")
                    break
                self._put(doc)
        except (OSError, ValueError, http.client.HTTPException) as e:
            if not self._done:
                self._error = errors.SandboxNotRunning(f"reading the watch of {self._path}: {e}",
                                                       _errno.ECONNRESET, "watch")
        finally:
            self._put(_END)

    def close(self):
        self._done = True
        resp, self._resp = self._resp, None
        if resp is not None:
            # Unblock the reading thread first: a buffered reader's close waits for its read.
            sock = getattr(getattr(resp.fp, "raw", None), "_sock", None)
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            resp.close()
        try:
            self._q.put_nowait(_END)
        except queue.Full:
            pass

    def _take(self, timeout):
        """An event, None when none came within TIMEOUT, or _END (then closed; a failure raised)."""
        self.start()
        if self._done:
            return _END
        try:
            item = self._q.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is _END:
            self.close()
            e, self._error = self._error, None
            if e is not None:
                raise e
        return item

    def next(self, timeout=None):
        """The next event, or None when none came within TIMEOUT seconds (None: wait)."""
        item = self._take(timeout)
        if item is _END:
            raise StopIteration
        return item


class RemoteAsyncWatch(_AsyncWatchProtocol):
    """RemoteSyncWatch for asyncio code (Sandbox.watch's names): `async with` starts watching,
    `async for` reads the events (each wait in a thread)."""

    def __init__(self, core, path, recursive):
        self._sync = RemoteSyncWatch(core, path, recursive)

    async def start(self):
        await asyncio.to_thread(self._sync.start)
        return self

    def close(self):
        self._sync.close()

    async def __anext__(self):
        item = await asyncio.to_thread(self._sync._take, None)
        if item is _END:
            raise StopAsyncIteration
        return item


class RemoteSyncFs:
    """Files of a sandbox on a server, with SyncFs's names."""

    def __init__(self, core):
        self._core = core

    def _url(self, path, extra=""):
        return f"/v1/sandboxes/{_q(self._core.id)}/files?path={_q(path)}{extra}"

    def write(self, path, data):
        """Write a whole file: str (UTF-8), bytes, a file object or an iterable of bytes (the
        last two streamed). Missing folders are made; the file appears whole or not at all."""
        if isinstance(data, str):
            data = data.encode()
        elif isinstance(data, (bytearray, memoryview)):
            data = bytes(data)
        conn = self._core._conn
        resp = conn.open("PUT", self._url(path), data, {"Content-Type": "application/octet-stream"},
                         fresh=not isinstance(data, bytes), op="fs")
        conn.check(resp, "fs")
        return json.loads(resp.read())["size"]

    write_stream = write

    def read_stream(self, path, chunk_size=1 << 20):
        """The file's content in chunks of at most CHUNK_SIZE bytes, in constant memory."""
        conn = self._core._conn
        resp = conn.check(conn.open("GET", self._url(path), fresh=True, op="fs"), "fs")
        try:
            while True:
                chunk = resp.read1(chunk_size)
                if not chunk:
                    return
                yield chunk
        finally:
            resp.close()

    def read(self, path):
        return b"".join(self.read_stream(path))

    def read_text(self, path, encoding="utf-8", errors="strict"):
        return self.read(path).decode(encoding, errors)

    def list(self, path):
        """The entries of folder PATH, sorted by name, as FsEntry."""
        doc = self._core._conn.json("GET", self._url(path, "&list=1"), op="fs")
        base = path.rstrip("/")
        return [FsEntry(path=f"{base}/{e['name']}", kind=e["type"], size=e["size"], mode=e["mode"],
                        mtime=e["mtime_ns"] / 1e9, mtime_ns=e["mtime_ns"], uid=e["uid"], gid=e["gid"],
                        link_target=e.get("link_target")) for e in doc["entries"]]

    def exists(self, path):
        parent, _, name = path.rstrip("/").rpartition("/")
        if not name:
            return True
        try:
            return any(e.name == name for e in self.list(parent or "/"))
        except errors.NotFound:
            return False

    def remove(self, path, recursive=False, missing_ok=False):
        try:
            self._core._conn.json("DELETE", self._url(path, "&recursive=1" if recursive else ""), op="fs")
        except errors.NotFound:
            if not missing_ok:
                raise


class RemoteSyncProcess(_Signals):
    """A command started with sb.spawn(...) on a server: a thread of its own reads its output
    (and runs the callbacks). write() and close_stdin() feed its stdin."""

    def __init__(self, core, stream):
        self._core, self._stream = core, stream
        self.id, self.pid = stream.id, stream.pid
        self._thread = threading.Thread(target=stream.run, name=f"capsule-remote-{stream.id}", daemon=True)
        self._thread.start()

    @property
    def returncode(self):
        st = self._stream.status
        return None if st is None else st["exit_code"]

    def write(self, data):
        return self._core._stdin_blocking(self._stream, _stdin_bytes(data))

    def close_stdin(self):
        self._core._stdin_blocking(self._stream, b"", close=True)

    def send_signal(self, signo):
        self._core._signal_blocking(self._stream, signo)

    def wait(self, timeout=None):
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise errors.Timeout(f"command {self.id} still running after {timeout} s", _errno.ETIMEDOUT, "wait")
        return self._stream.result()

    def __repr__(self):
        return f"<capsule.RemoteSyncProcess id={self.id} pid={self.pid} returncode={self.returncode}>"


class RemoteSyncSandbox(_Core):
    """SyncSandbox(server=..., token=...): blocking calls on a server's sandbox."""

    def __init__(self, image="host", **kw):
        super().__init__(image, **kw)
        self.fs = RemoteSyncFs(self)

    @classmethod
    def connect(cls, id, *, server, token):
        """A sandbox this token made before, by its id; already started."""
        sb = cls(server=server, token=token)
        sb._bind(id)
        return sb

    def start(self):
        self._start_blocking()
        return self

    def stop(self, timeout=None):
        """Remove the sandbox from the server (what runs in it is killed)."""
        self._stop_blocking(timeout)

    remove = stop

    @property
    def is_running(self):
        return self._is_running_blocking()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def execute(self, cmd, timeout=None, cwd=None, env=None, stdin=None, on_stdout=None, on_stderr=None, user=None,
                max_output=DEFAULT_MAX_OUTPUT, fds=()):
        """Run CMD to its end (see SyncSandbox.execute). Without callbacks one request runs
        it, and the server answers at most its --exec-output-max (1 MiB) of each stream; with
        them the output streams, on this thread."""
        _no_fds(fds)
        if on_stdout is None and on_stderr is None:
            return self._exec_blocking(cmd, timeout, cwd, env, stdin, user, max_output)
        st = self._spawn_blocking(cmd, timeout, cwd, env, stdin if stdin is not None else b"", user, on_stdout,
                                  on_stderr, max_output)
        st.run()
        return st.result()

    def spawn(self, cmd, cwd=None, env=None, stdin=None, on_stdout=None, on_stderr=None, user=None, timeout=None,
              max_output=DEFAULT_MAX_OUTPUT, fds=()):
        """Start CMD in the background; returns a RemoteSyncProcess. Without STDIN its stdin
        stays open for write() until close_stdin()."""
        _no_fds(fds)
        st = self._spawn_blocking(cmd, timeout, cwd, env, stdin, user, on_stdout, on_stderr, max_output)
        return RemoteSyncProcess(self, st)

    def diff(self, since=None):
        """What changed in the sandbox's filesystem since it was made, or since its checkpoint
        or the token's save SINCE ("checkpoint:NAME", "save:NAME" or a bare NAME, the
        checkpoint first; see SyncSandbox.diff): a list of dicts, as the server answers GET
        .../diff."""
        return self._diff_blocking(since)

    def watch(self, path, recursive=False):
        """The changes below PATH as they happen: a RemoteSyncWatch (see SyncSandbox.watch)."""
        return RemoteSyncWatch(self, path, recursive)

    def pause(self):
        """Hold every process of the sandbox still until resume() (see SyncSandbox.pause);
        meanwhile execute, spawn and fs raise Busy."""
        self._pause_blocking(False)

    def resume(self):
        """Let a paused sandbox run again."""
        self._pause_blocking(True)


# ---- asyncio ----------------------------------------------------------------------------------


class RemoteFs:
    """RemoteSyncFs's calls, awaited (each in a thread)."""

    def __init__(self, core):
        self._sync = RemoteSyncFs(core)

    async def write(self, path, data):
        return await asyncio.to_thread(self._sync.write, path, data)

    write_stream = write

    async def read(self, path):
        return await asyncio.to_thread(self._sync.read, path)

    async def read_text(self, path, encoding="utf-8", errors="strict"):
        return (await self.read(path)).decode(encoding, errors)

    async def list(self, path):
        return await asyncio.to_thread(self._sync.list, path)

    async def exists(self, path):
        return await asyncio.to_thread(self._sync.exists, path)

    async def remove(self, path, recursive=False, missing_ok=False):
        await asyncio.to_thread(self._sync.remove, path, recursive, missing_ok)

    async def read_stream(self, path, chunk_size=1 << 20):
        it = self._sync.read_stream(path, chunk_size)
        end = object()
        try:
            while True:
                chunk = await asyncio.to_thread(next, it, end)
                if chunk is end:
                    return
                yield chunk
        finally:
            it.close()


class RemoteProcess(_Signals):
    """A command started with `await sb.spawn(...)` on a server; callbacks run on the loop."""

    def __init__(self, core, stream):
        self._core, self._stream = core, stream
        self.id, self.pid = stream.id, stream.pid
        self._done = asyncio.ensure_future(asyncio.to_thread(stream.run))

    @property
    def returncode(self):
        st = self._stream.status
        return None if st is None else st["exit_code"]

    async def write(self, data):
        return await asyncio.to_thread(self._core._stdin_blocking, self._stream, _stdin_bytes(data))

    async def close_stdin(self):
        await asyncio.to_thread(self._core._stdin_blocking, self._stream, b"", True)

    def send_signal(self, signo):
        """Send SIGNO; like the local Process's, it need not be awaited (the request goes out
        in a thread), and awaiting what it returns waits for the server's answer."""
        return asyncio.ensure_future(asyncio.to_thread(self._core._signal_blocking, self._stream, signo))

    async def wait(self):
        await asyncio.shield(self._done)
        pending = getattr(self._stream, "pending", [])
        if pending:
            await asyncio.gather(*pending)
        return self._stream.result()

    def __repr__(self):
        return f"<capsule.RemoteProcess id={self.id} pid={self.pid} returncode={self.returncode}>"


class RemoteSandbox(_Core):
    """Sandbox(server=..., token=...): a server's sandbox for asyncio code. The HTTP calls run
    in threads; on_stdout/on_stderr run on the loop (a coroutine they return is awaited
    before wait() returns)."""

    def __init__(self, image="host", **kw):
        super().__init__(image, **kw)
        self.fs = RemoteFs(self)

    @classmethod
    async def connect(cls, id, *, server, token):
        sb = cls(server=server, token=token)
        await asyncio.to_thread(sb._bind, id)
        return sb

    async def start(self):
        await asyncio.to_thread(self._start_blocking)
        return self

    async def stop(self, timeout=None):
        await asyncio.to_thread(self._stop_blocking, timeout)

    remove = stop

    async def is_running(self):
        return await asyncio.to_thread(self._is_running_blocking)

    async def __aenter__(self):
        return await self.start()

    async def __aexit__(self, *exc):
        await self.stop()

    def _deliver_on(self, loop, stream_box):
        def deliver(cb, text):
            def call():
                r = cb(text)
                if r is not None and hasattr(r, "__await__"):
                    stream_box[0].pending.append(asyncio.ensure_future(r))
            loop.call_soon_threadsafe(call)
        return deliver

    async def _spawn(self, cmd, timeout, cwd, env, stdin, user, on_stdout, on_stderr, max_output):
        loop = asyncio.get_running_loop()
        box = [None]
        st = await asyncio.to_thread(self._spawn_blocking, cmd, timeout, cwd, env, stdin, user, on_stdout, on_stderr,
                                     max_output, self._deliver_on(loop, box))
        st.pending = []
        box[0] = st
        return RemoteProcess(self, st)

    async def execute(self, cmd, timeout=None, cwd=None, env=None, stdin=None, on_stdout=None, on_stderr=None,
                      user=None, max_output=DEFAULT_MAX_OUTPUT, fds=()):
        """Run CMD to its end (see RemoteSyncSandbox.execute)."""
        _no_fds(fds)
        if on_stdout is None and on_stderr is None:
            return await asyncio.to_thread(self._exec_blocking, cmd, timeout, cwd, env, stdin, user, max_output)
        p = await self._spawn(cmd, timeout, cwd, env, stdin if stdin is not None else b"", user, on_stdout, on_stderr,
                              max_output)
        return await p.wait()

    async def spawn(self, cmd, cwd=None, env=None, stdin=None, on_stdout=None, on_stderr=None, user=None,
                    timeout=None, max_output=DEFAULT_MAX_OUTPUT, fds=()):
        """Start CMD in the background; returns a RemoteProcess (see RemoteSyncSandbox.spawn)."""
        _no_fds(fds)
        return await self._spawn(cmd, timeout, cwd, env, stdin, user, on_stdout, on_stderr, max_output)

    async def diff(self, since=None):
        """What changed in the filesystem (see RemoteSyncSandbox.diff)."""
        return await asyncio.to_thread(self._diff_blocking, since)

    def watch(self, path, recursive=False):
        """A RemoteAsyncWatch of the changes below PATH: `async with` starts watching, `async
        for` reads the events."""
        return RemoteAsyncWatch(self, path, recursive)

    async def pause(self):
        """Hold every process still (see RemoteSyncSandbox.pause)."""
        await asyncio.to_thread(self._pause_blocking, False)

    async def resume(self):
        """Let a paused sandbox run again."""
        await asyncio.to_thread(self._pause_blocking, True)
