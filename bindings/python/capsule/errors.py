"""The exceptions of the SDK.

Every failure of the library becomes a CapsuleError subclass carrying the library's one-line
message (str(e), e.message) and its errno (e.errno). The class is chosen by the errno and, for
hot mounts and sandbox starts, by the operation: a failed mount is a MountError, and also a
NotFound when its host path is missing, so both `except` clauses catch it.
"""
import errno as _errno


class CapsuleError(Exception):
    """Base class. message: the library's line; errno: a positive errno value (or 0)."""

    def __init__(self, message, errno=0, op=None):
        super().__init__(message)
        self.message = message
        self.errno = errno
        self.op = op

    def __str__(self):
        return self.message


class InvalidArgument(CapsuleError, ValueError):
    """A bad value: a relative host path, size '12X', an unknown network mode, ..."""


class NotFound(CapsuleError):
    """A path, sandbox or volume that does not exist (ENOENT)."""


class ImageNotFound(NotFound):
    """The image named by image= does not exist."""


class AlreadyExists(CapsuleError):
    """A sandbox or volume of that name, or a file with exist_ok=False (EEXIST)."""


class PermissionDenied(CapsuleError):
    """EACCES, EPERM, EROFS: the caller may not, or the target is read-only."""


class QuotaExceeded(CapsuleError):
    """No room left: a volume's quota, a tmpfs's size (ENOSPC, EDQUOT)."""


class Timeout(CapsuleError):
    """A start past boot_timeout, or a command past its timeout (then .result holds what it
    wrote before it was killed)."""

    result = None


class SandboxNotRunning(CapsuleError):
    """The sandbox is not started, was stopped, or went away."""


class MountError(CapsuleError):
    """A hot mount, unmount or mount listing failed; also a mount type capsule refuses."""


class Busy(CapsuleError):
    """In use: a volume a running sandbox holds, a running sandbox removed without force."""


class UnsupportedFeature(CapsuleError):
    """Something this build of capsule does not have yet (udp port forwards, save). Raised
    before anything starts."""


_BY_ERRNO = {
    _errno.EINVAL: InvalidArgument,
    _errno.ENAMETOOLONG: InvalidArgument,
    _errno.ENOENT: NotFound,
    _errno.EEXIST: AlreadyExists,
    _errno.EACCES: PermissionDenied,
    _errno.EPERM: PermissionDenied,
    _errno.EROFS: PermissionDenied,
    _errno.ENOSPC: QuotaExceeded,
    _errno.EDQUOT: QuotaExceeded,
    _errno.ETIMEDOUT: Timeout,
    _errno.ESHUTDOWN: SandboxNotRunning,
    _errno.ENOTCONN: SandboxNotRunning,
    _errno.ECONNREFUSED: SandboxNotRunning,
    _errno.ECONNRESET: SandboxNotRunning,
    _errno.EBUSY: Busy,
    _errno.EALREADY: Busy,
    _errno.EOPNOTSUPP: UnsupportedFeature,
}

_combined = {}


def _combine(op_class, errno_class):
    if errno_class is CapsuleError or issubclass(op_class, errno_class):
        return op_class
    key = (op_class, errno_class)
    cls = _combined.get(key)
    if cls is None:
        cls = type(op_class.__name__, (op_class, errno_class), {"__module__": __name__,
                                                                "__doc__": op_class.__doc__})
        _combined[key] = cls
    return cls


def from_library(code, message, op=None):
    """The exception for a library failure: errno CODE, its MESSAGE, in operation OP."""
    cls = _BY_ERRNO.get(code, CapsuleError)
    if cls is SandboxNotRunning:
        return cls(message, code, op)
    if op in ("create", "image") and cls is NotFound and "image" in message:
        cls = ImageNotFound
    elif op == "mount":
        cls = _combine(MountError, cls)
    return cls(message, code, op)
