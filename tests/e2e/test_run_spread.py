"""run/ and the home carry ext4's "top of a directory tree" flag (chattr +T, FS_TOPDIR_FL), so
that each sandbox's folder, and slots/, get a block group of their own choosing instead of their
parent's (src/lib/home.c, folders_spread; docs/performance.md has why)."""
import fcntl
import os
import struct
import tempfile

import pytest

FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602
FS_TOPDIR_FL = 0x00020000


def _flags(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return struct.unpack("i", fcntl.ioctl(fd, FS_IOC_GETFLAGS, b"\0" * 4))[0]
    except OSError as e:
        pytest.skip(f"the home's filesystem has no inode flags ({e.strerror})")
    finally:
        os.close(fd)


def _set_flags(path, flags):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.ioctl(fd, FS_IOC_SETFLAGS, struct.pack("i", flags))
    finally:
        os.close(fd)


def test_a_create_marks_run_as_the_top_of_a_tree_even_in_a_home_made_before(capsule):
    run = os.path.join(capsule.home, "run")
    probe = tempfile.mkdtemp(dir=os.path.dirname(capsule.home))
    try:
        _set_flags(probe, _flags(probe) | FS_TOPDIR_FL)
        kept = _flags(probe) & FS_TOPDIR_FL
    except OSError:
        kept = False
    finally:
        os.rmdir(probe)
    if not kept:
        pytest.skip("the home's filesystem keeps no FS_TOPDIR_FL (not ext2/3/4)")
    name = capsule.create()
    assert _flags(run) & FS_TOPDIR_FL
    # The home too, as its folders were made (this session's home: run/ and slots/ are its).
    assert _flags(capsule.home) & FS_TOPDIR_FL
    # A home made by an older capsule has run/ without it: the next create sets it.
    _set_flags(run, _flags(run) & ~FS_TOPDIR_FL)
    assert not _flags(run) & FS_TOPDIR_FL
    other = capsule.create()
    assert _flags(run) & FS_TOPDIR_FL
    # Nothing else of the folder changes: the sandboxes run, and go with nothing left.
    assert capsule.run("exec", other, "--", "true").returncode == 0
    capsule.run("rm", "-f", name, other, check=True)
    assert not {name, other} & set(os.listdir(run))
