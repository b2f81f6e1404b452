"""Named volumes: storage that outlives sandboxes, with an optional quota, readable and
writable from the host with no sandbox running. Volumes need root (loop devices, mounts)."""
import ctypes
from dataclasses import dataclass

from ._lib import lib, VolumeInfo, enc, call, byref, c_void_p, c_size_t, free, take_bytes, POINTER, parse_size

MAX_READ = 1 << 30


def _info(v):
    return dict(name=v.name.decode(), kind=v.kind.decode(), quota=v.quota_bytes or None,
                created=v.created_unix, in_use=bool(v.in_use), path=v.path.decode())


class VolumeFs:
    """Host-side files of a volume. Paths are inside the volume ("/a/b.txt"); symlinks in it
    are followed as if the volume were "/", and ".." never leaves it. Writes make missing
    parent folders and replace files atomically."""

    def __init__(self, name):
        self._name = enc(name, "volume name")

    def write(self, path, data):
        """Write str, bytes or a file object (streamed from its fd) to PATH."""
        if isinstance(data, str):
            data = data.encode()
        if isinstance(data, (bytes, bytearray, memoryview)):
            data = bytes(data)
            call(lib.capsule_volume_write, self._name, enc(path), data, len(data), op="volume")
            return len(data)
        if hasattr(data, "fileno"):
            call(lib.capsule_volume_write_from_fd, self._name, enc(path), data.fileno(), op="volume")
            return None
        raise TypeError(f"volume write: expected str, bytes or a file, got {type(data).__name__}")

    def read(self, path, max_bytes=MAX_READ):
        out = c_void_p()
        n = c_size_t()
        call(lib.capsule_volume_read, byref(out), byref(n), self._name, enc(path), max_bytes, op="volume")
        return take_bytes(out.value, n.value)

    def read_text(self, path, encoding="utf-8", errors="strict"):
        return self.read(path).decode(encoding, errors)

    def read_to(self, path, file):
        """Stream PATH into a host file object (its fd), in constant memory."""
        file.flush()
        call(lib.capsule_volume_read_to_fd, self._name, enc(path), file.fileno(), op="volume")

    def copy_from_host(self, host_path, path):
        with open(host_path, "rb") as f:
            self.write(path, f)

    def copy_to_host(self, path, host_path):
        with open(host_path, "wb") as f:
            self.read_to(path, f)


@dataclass(frozen=True)
class Volume:
    """A named volume. Volume.create / get / list / remove; vol.fs reads and writes it from
    the host. Mount it with Mount.volume(name, "/guest/path")."""
    name: str
    kind: str
    quota: object  # bytes, or None without a quota
    created: int
    in_use: bool
    path: str

    @property
    def fs(self):
        return VolumeFs(self.name)

    @classmethod
    def create(cls, name, quota=None):
        """A new volume; QUOTA ("1G", or bytes) makes it an ext4 image of that size, reserved
        on the host disk now. Raises AlreadyExists when the name is taken."""
        q = parse_size(quota, "quota") if quota is not None else 0
        call(lib.capsule_volume_create, enc(name, "volume name"), q, op="volume")
        return cls.get(name)

    @classmethod
    def get(cls, name):
        """The volume NAME; raises NotFound when there is none."""
        v = VolumeInfo()
        call(lib.capsule_volume_inspect, byref(v), enc(name, "volume name"), op="volume")
        return cls(**_info(v))

    @classmethod
    def list(cls):
        """Every volume, sorted by name."""
        arr = POINTER(VolumeInfo)()
        n = c_size_t()
        call(lib.capsule_volume_list, byref(arr), byref(n), op="volume")
        try:
            return [cls(**_info(arr[i])) for i in range(n.value)]
        finally:
            free(ctypes.cast(arr, c_void_p).value)

    @classmethod
    def remove(cls, name):
        """Remove volume NAME and its content; Busy while a running sandbox has it mounted."""
        if isinstance(name, Volume):
            name = name.name
        call(lib.capsule_volume_remove, enc(name, "volume name"), op="volume")

    def delete(self):
        Volume.remove(self.name)
