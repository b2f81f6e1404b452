"""Plain values of the SDK: mounts, network modes, results, file entries."""
import enum
import errno as _errno
import os
from dataclasses import dataclass, field
from typing import Optional

from . import errors


class NetworkMode(str, enum.Enum):
    """What network a sandbox gets.

    NONE: loopback only, no way out (the default).
    MOUNTS_ONLY: the same in capsule: mounts, the filesystem API and exec reach the sandbox
    over the shim's channel, not over a network, so they need none.
    FULL: outbound TCP/UDP and DNS through user-mode NAT (slirp4netns); the host's 127.0.0.1
    is reachable at the gateway 10.0.2.2. allow_hosts / allow_cidrs narrow it to a list.
    """
    NONE = "none"
    MOUNTS_ONLY = "mounts_only"
    FULL = "full"

    @classmethod
    def parse(cls, value):
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            for m in cls:
                if value.lower() in (m.value, m.name.lower()):
                    return m
        raise errors.InvalidArgument(
            f"unknown network mode {value!r} (use NetworkMode.NONE, MOUNTS_ONLY or FULL)", _errno.EINVAL, "config")


@dataclass(frozen=True)
class PortForward:
    """Host port HOST (on HOST_IP, default 127.0.0.1) forwarded to GUEST on the sandbox's
    loopback, in every network mode. TCP only: protocol "udp" raises UnsupportedFeature."""
    host: int
    guest: int
    protocol: str = "tcp"
    host_ip: Optional[str] = None

    def spec(self):
        """docker's -p form, "[HOSTIP:]HOST:GUEST/PROTOCOL"."""
        for what, v in (("host", self.host), ("guest", self.guest)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise errors.InvalidArgument(f"PortForward {what} port {v!r} is not an integer", _errno.EINVAL,
                                             "config")
        ip = self.host_ip
        if ip and ":" in ip and not ip.startswith("["):
            ip = f"[{ip}]"
        return f"{ip + ':' if ip else ''}{self.host}:{self.guest}/{self.protocol}"


_MOUNT_TYPES = (None, "bind", "9p", "volume", "tmpfs")


@dataclass(frozen=True)
class Mount:
    """A boot-time mount.

    Mount("/host/dir", "/guest/dir", readonly=False): a bind mount of a host folder or file.
    type="9p" (quicksand) is accepted and means the same; type="cifs" is refused, because
    capsule's mounts, hot ones included, are bind mounts that need no file-sharing protocol.
    transform="/abs/plugin.so" serves the folder through a transform plugin
    (docs/transforms.md), with transform_config passed to its open().
    Mount.volume(name, guest) and Mount.tmpfs(guest, size) make the other kinds.
    """
    host_path: Optional[str]
    guest_path: str
    readonly: bool = False
    type: Optional[str] = None
    size: Optional[object] = None
    mode: Optional[int] = None
    transform: Optional[str] = None
    transform_config: Optional[str] = None
    volume_name: Optional[str] = field(default=None, repr=False)

    def __post_init__(self):
        check_mount_type(self.type)
        if self.type in ("volume", "tmpfs") and (self.transform or self.transform_config):
            raise errors.InvalidArgument(f"mount at '{self.guest_path}': transforms apply to bind mounts only",
                                         _errno.EINVAL, "config")

    @classmethod
    def volume(cls, name, guest_path, readonly=False):
        """The named volume NAME (created without a quota if missing) at GUEST_PATH."""
        return cls(None, guest_path, readonly, type="volume", volume_name=name)

    @classmethod
    def tmpfs(cls, guest_path, size=None, mode=None):
        """Scratch space in memory at GUEST_PATH: SIZE bytes or a size such as "100M"
        (default 64M), charged to the sandbox's memory; gone when the sandbox stops."""
        return cls(None, guest_path, False, type="tmpfs", size=size, mode=mode)


def check_mount_type(t):
    if t is not None and not isinstance(t, str):
        raise errors.InvalidArgument(f"mount type {t!r}: expected a string", _errno.EINVAL, "config")
    if t is not None and t.lower() == "cifs":
        raise errors.from_library(
            _errno.EINVAL,
            "mount type 'cifs' is not used by capsule: its mounts, hot mounts included, are bind mounts "
            "of the host folder and need no CIFS or network; leave type out (or use '9p')", "mount")
    if t is not None and t.lower() not in _MOUNT_TYPES:
        raise errors.from_library(_errno.EINVAL, f"unknown mount type {t!r} (leave it out, or use '9p')", "mount")


@dataclass(frozen=True)
class MountHandle:
    """One mount of a running sandbox, as sb.active_mounts lists it. handle is what
    sb.unmount() takes (None for boot-time mounts, which stay until the sandbox stops)."""
    kind: str
    host_path: Optional[str]
    guest_path: str
    readonly: bool
    handle: Optional[str]
    hot: bool

    def __str__(self):
        return self.handle or self.guest_path

    def __fspath__(self):
        return self.guest_path


@dataclass
class ExecResult:
    """What a finished command left: its output (decoded as UTF-8, bad bytes replaced; the
    raw bytes in stdout_bytes and stderr_bytes) and how it ended."""
    stdout: str
    stderr: str
    exit_code: int
    signal: int = 0
    timed_out: bool = False
    stdout_bytes: bytes = b""
    stderr_bytes: bytes = b""

    @property
    def ok(self):
        return self.exit_code == 0


KINDS = {1: "file", 2: "dir", 3: "symlink", 4: "other"}


@dataclass(frozen=True)
class FsEntry:
    """One file of the sandbox: path (absolute, inside), kind ("file", "dir", "symlink",
    "other"), size in bytes, mode (permission bits), mtime (seconds since the epoch, float),
    owner as the sandbox sees it, and a symlink's target."""
    path: str
    kind: str
    size: int
    mode: int
    mtime: float
    mtime_ns: int
    uid: int
    gid: int
    link_target: Optional[str] = None

    @property
    def name(self):
        return os.path.basename(self.path.rstrip("/")) or "/"

    @property
    def is_dir(self):
        return self.kind == "dir"

    @property
    def is_file(self):
        return self.kind == "file"
