"""Every sb.fs call, sync and async, and streaming in constant memory."""
import asyncio
import io
import os
import subprocess
import sys
import textwrap

import pytest

from capsule import Sandbox, SyncSandbox, NotFound, FsEntry

from sdkutil import HOME, sdk_env


def test_every_fs_call_sync(hostdir):
    with SyncSandbox() as sb:
        fs = sb.fs
        assert fs.write("/w/a.txt", "héllo") == len("héllo".encode())
        assert fs.read("/w/a.txt") == "héllo".encode() and fs.read_text("/w/a.txt") == "héllo"
        fs.write("/w/b.bin", bytes(range(256)), mode=0o600)
        e = fs.stat("/w/b.bin")
        assert isinstance(e, FsEntry) and (e.path, e.kind, e.size, e.mode) == ("/w/b.bin", "file", 256, 0o600)
        assert e.name == "b.bin" and e.is_file and e.mtime > 1e9 and e.uid == 0
        fs.write("/w/b.bin", b"new")             # keeps its mode
        assert fs.stat("/w/b.bin").mode == 0o600 and fs.read("/w/b.bin") == b"new"
        fs.write("/w/empty", b"")
        assert fs.read("/w/empty") == b""
        fs.mkdir("/w/d1/d2", mode=0o700)
        assert fs.stat("/w/d1/d2").kind == "dir" and fs.stat("/w/d1/d2").mode == 0o700
        fs.symlink("a.txt", "/w/link")
        assert fs.stat("/w/link").kind == "symlink" and fs.stat("/w/link").link_target == "a.txt"
        assert fs.read_text("/w/link") == "héllo"          # followed inside the sandbox
        sb.execute("mkfifo /w/fifo")
        listing = fs.list("/w")
        assert [(x.name, x.kind) for x in listing] == [("a.txt", "file"), ("b.bin", "file"), ("d1", "dir"),
                                                       ("empty", "file"), ("fifo", "other"), ("link", "symlink")]
        assert [x.path for x in fs.list("/")][:1] and all(x.path.startswith("/") for x in fs.list("/"))
        assert fs.exists("/w/a.txt") and not fs.exists("/w/nope")
        fs.rename("/w/a.txt", "/w/d1/a.txt")
        assert not fs.exists("/w/a.txt") and fs.read_text("/w/d1/a.txt") == "héllo"
        fs.write("/w/c", "c")
        with pytest.raises(Exception):
            fs.rename("/w/c", "/w/b.bin", replace=False)
        fs.remove("/w/c")
        with pytest.raises(Exception):
            fs.remove("/w/d1")                   # not empty
        fs.remove("/w/d1", recursive=True)
        assert not fs.exists("/w/d1")
        # write from a file object and from an iterator (streamed)
        assert fs.write("/w/from-file", io.BytesIO(b"f" * 3_000_000)) == 3_000_000
        assert fs.write("/w/from-iter", (b"%d," % i for i in range(1000))) == len(b"".join(b"%d," % i for i in range(1000)))
        assert fs.read("/w/from-iter").startswith(b"0,1,2,")
        assert b"".join(fs.read_stream("/w/from-file", chunk_size=65536)) == b"f" * 3_000_000
        # copies both ways, folders included, symlinks kept as links
        src = os.path.join(hostdir, "tree")
        os.makedirs(os.path.join(src, "sub"))
        with open(os.path.join(src, "sub", "f.txt"), "w") as f:
            f.write("deep")
        os.symlink("sub/f.txt", os.path.join(src, "ln"))
        fs.copy_from_host(src, "/copied")
        assert sb.execute("cat /copied/sub/f.txt; echo; readlink /copied/ln").stdout == "deep\nsub/f.txt\n"
        out = os.path.join(hostdir, "back")
        fs.copy_to_host("/copied", out)
        assert open(os.path.join(out, "sub", "f.txt")).read() == "deep"
        assert os.readlink(os.path.join(out, "ln")) == "sub/f.txt"
        fs.copy_to_host("/w/b.bin", os.path.join(hostdir, "one.bin"))
        assert open(os.path.join(hostdir, "one.bin"), "rb").read() == b"new"


def test_every_fs_call_async(hostdir):
    async def main():
        async with Sandbox() as sb:
            fs = sb.fs
            await fs.write("/a/x", "1")
            assert await fs.read_text("/a/x") == "1" and await fs.read("/a/x") == b"1"
            await fs.mkdir("/a/d")
            await fs.symlink("/a/x", "/a/l")
            assert [(e.path, e.kind) for e in await fs.list("/a")] == [("/a/d", "dir"), ("/a/l", "symlink"),
                                                                       ("/a/x", "file")]
            assert (await fs.stat("/a/x")).size == 1 and await fs.exists("/a/x")
            await fs.rename("/a/x", "/a/d/x")
            await fs.remove("/a/l")
            await fs.remove("/a/d", recursive=True)
            assert await fs.list("/a") == []

            async def agen():
                for i in range(5):
                    yield b"%d" % i
                    await asyncio.sleep(0)
            assert await fs.write("/a/gen", agen()) == 5
            assert await fs.write_stream("/a/gen2", [b"a", "b"]) == 2
            assert await fs.read("/a/gen") == b"01234" and await fs.read("/a/gen2") == b"ab"
            chunks = [c async for c in fs.read_stream("/a/gen")]
            assert b"".join(chunks) == b"01234"
            with open(os.path.join(hostdir, "h.txt"), "w") as f:
                f.write("host")
            await fs.copy_from_host(os.path.join(hostdir, "h.txt"), "/a/h.txt")
            await fs.copy_to_host("/a/h.txt", os.path.join(hostdir, "h2.txt"))
            assert open(os.path.join(hostdir, "h2.txt")).read() == "host"
            with pytest.raises(NotFound):
                async for _ in fs.read_stream("/a/missing"):
                    pass

    asyncio.run(main())


def test_a_write_stream_that_fails_leaves_the_old_file():
    async def main():
        async with Sandbox() as sb:
            await sb.fs.write("/keep", "old")

            async def broken():
                yield b"partial"
                raise RuntimeError("producer failed")
            with pytest.raises(RuntimeError):
                await sb.fs.write_stream("/keep", broken())
            assert await sb.fs.read_text("/keep") == "old"
            assert [e.name for e in await sb.fs.list("/")].count("keep") == 1
            assert not [e.name for e in await sb.fs.list("/") if e.name.startswith(".capsule-write")]

    asyncio.run(main())


def test_abandoned_read_stream_frees_its_channel():
    async def main():
        async with Sandbox() as sb:
            await sb.execute("head -c 20000000 /dev/zero > /z")
            for _ in range(20):
                async for chunk in sb.fs.read_stream("/z", chunk_size=4096):
                    break
            # The sandbox still serves everything after 20 abandoned streams.
            assert (await sb.fs.stat("/z")).size == 20000000
            assert (await sb.execute("echo ok")).stdout == "ok\n"

    asyncio.run(main())


@pytest.mark.parametrize("style", ["async", "sync"])
def test_streaming_a_large_file_in_constant_memory(style):
    """512 MiB through read_stream and write_stream in a fresh process: its peak RSS grows
    by far less than the file (a few chunks, not the file)."""
    size = 512 << 20
    body = {
        "async": """
            async def main():
                async with capsule.Sandbox() as sb:
                    await sb.execute(f"head -c {SIZE} /dev/zero | tr '\\\\0' x > /big")
                    before = rss()
                    n = 0
                    async for chunk in sb.fs.read_stream("/big"):
                        n += len(chunk)
                        assert chunk[:1] == b"x"
                    async def gen():
                        for _ in range(SIZE >> 20):
                            yield b"y" * (1 << 20)
                    w = await sb.fs.write_stream("/big2", gen())
                    st = await sb.fs.stat("/big2")
                    print(n, w, st.size, rss() - before)
            asyncio.run(main())
            """,
        "sync": """
            with capsule.SyncSandbox() as sb:
                sb.execute(f"head -c {SIZE} /dev/zero | tr '\\\\0' x > /big")
                before = rss()
                n = sum(len(c) for c in sb.fs.read_stream("/big"))
                w = sb.fs.write_stream("/big2", (b"y" * (1 << 20) for _ in range(SIZE >> 20)))
                print(n, w, sb.fs.stat("/big2").size, rss() - before)
            """,
    }[style]
    prog = textwrap.dedent("""
        import asyncio, resource, capsule
        SIZE = %d
        def rss():
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        """ % size) + textwrap.dedent(body)
    r = subprocess.run([sys.executable, "-c", prog], env=sdk_env(HOME), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    n, w, st, grew = map(int, r.stdout.split())
    assert n == size and w == size and st == size
    assert grew < 48 << 20, f"peak RSS grew by {grew >> 20} MiB while streaming {size >> 20} MiB"
