"""The issue's example, end to end, in both styles: every keyword, exec parameter, mount, fs
and volume call and property it names."""
import asyncio
import json
import os
import threading

import pytest

import capsule
from capsule import (Sandbox, SyncSandbox, Mount, Volume, NetworkMode, PortForward, CapsuleError,
                     UnsupportedFeature, MountHandle)

from sdkutil import run_entries


def _prepare(hostdir):
    code = os.path.join(hostdir, "code")
    data = os.path.join(hostdir, "data")
    project = os.path.join(hostdir, "project")
    for d in (code, data, project):
        os.makedirs(d)
    with open(os.path.join(code, "main.sh"), "w") as f:
        f.write("echo code-ran\n")
    with open(os.path.join(data, "in.txt"), "w") as f:
        f.write("data-in")
    return code, data, project


def test_issue_example_async(hostdir):
    code, data, project = _prepare(hostdir)
    with open(os.path.join(hostdir, "local-file.txt"), "w") as f:
        f.write("local content")
    progress = []

    async def main():
        async with Sandbox(image="host", memory="512M", cpus=1,
                           network_mode=NetworkMode.NONE,
                           mounts=[Mount(code, "/mnt/code"),
                                   Mount(data, "/mnt/data", readonly=True),
                                   Mount.volume("issue-pip-cache", "/root/.cache/pip"),
                                   Mount.tmpfs("/tmp/scratch", size="100M")],
                           isolation="container", save=None,
                           progress_callback=lambda stage, cur, tot: progress.append((stage, cur, tot))) as sb:
            loop_thread = asyncio.get_running_loop()
            r = await sb.execute("ls /mnt/code", timeout=30, cwd=None, env=None, stdin=None,
                                 on_stdout=None, on_stderr=None, user=None)
            assert (r.stdout, r.stderr, r.exit_code) == ("main.sh\n", "", 0)
            assert (await sb.execute("sh /mnt/code/main.sh")).stdout == "code-ran\n"
            assert (await sb.execute("cat /mnt/data/in.txt")).stdout == "data-in"
            assert (await sb.execute("touch /mnt/data/new")).exit_code != 0
            # The tmpfs has the size asked for (100M = 102400 1K-blocks).
            df = (await sb.execute("df -k /tmp/scratch | tail -1")).stdout.split()
            assert df[1] == "102400", df
            info = sb.inspect()
            assert info["memory_bytes"] == 512 << 20 and info["cpus"] == 1.0

            h = await sb.mount(project, "/mnt/project", readonly=False)
            assert isinstance(h, MountHandle) and h.hot and h.handle
            listed = [(m.host_path, m.guest_path, m.readonly) for m in sb.active_mounts]
            assert (project, "/mnt/project", False) in listed
            assert (data, "/mnt/data", True) in listed
            await sb.execute("echo made-inside > /mnt/project/out.txt")
            with open(os.path.join(project, "out.txt")) as f:
                assert f.read() == "made-inside\n"
            await sb.unmount(h)
            assert "/mnt/project" not in [m.guest_path for m in await sb.list_mounts()]

            await sb.fs.write("/app/config.json", '{"debug": true}')
            assert json.loads(await sb.fs.read_text("/app/config.json")) == {"debug": True}
            await sb.fs.write("/app/x.bin", b"\x00\xff" * 10)
            assert await sb.fs.read("/app/x.bin") == b"\x00\xff" * 10
            await sb.fs.mkdir("/app/sub")
            await sb.execute("ln -s config.json /app/link; mkfifo /app/fifo")
            kinds = {e.path: e.kind for e in await sb.fs.list("/app")}
            assert kinds == {"/app/config.json": "file", "/app/x.bin": "file", "/app/sub": "dir",
                             "/app/link": "symlink", "/app/fifo": "other"}
            await sb.fs.write("/app/data.bin", os.urandom(3 << 20))
            got = b""
            async for chunk in sb.fs.read_stream("/app/data.bin"):
                got += chunk
            assert got == await sb.fs.read("/app/data.bin") and len(got) == 3 << 20

            cwd = os.getcwd()
            os.chdir(hostdir)
            try:
                await sb.fs.copy_from_host("./local-file.txt", "/app/remote-file.txt")
                await sb.execute("mkdir -p /app/out && echo result > /app/out/r.txt")
                await sb.fs.copy_to_host("/app/out", "./out")
            finally:
                os.chdir(cwd)
            assert (await sb.execute("cat /app/remote-file.txt")).stdout == "local content"
            with open(os.path.join(hostdir, "out", "r.txt")) as f:
                assert f.read() == "result\n"

            await sb.fs.write("/app/server.sh", "echo serving; sleep 1000\n")
            serving = asyncio.Event()
            p = await sb.spawn("sh /app/server.sh", on_stdout=lambda s: serving.set())
            assert p.pid > 1 and p.returncode is None
            alive = await sb.execute(["kill", "-0", str(p.pid)])
            assert alive.exit_code == 0
            await serving.wait()
            p.kill()
            r = await p.wait()
            assert r.signal == 9 and r.stdout == "serving\n"
            assert p.returncode == 137

            assert sb.is_running and sb.name and sb.isolation == "container"
            assert sb.accelerator is None and sb.vnc_port is None and sb.boot_timeout == 10.0
            assert asyncio.get_running_loop() is loop_thread
            return sb.name

    name = asyncio.run(main())
    assert name not in run_entries()
    stages = [s for s, _, _ in progress]
    assert stages[0] == "prepare" and stages[-1] == "ready"
    assert all(tot == progress[0][2] for _, _, tot in progress)

    vol = Volume.create("issue-old", quota="16M")
    assert vol.quota == 16 << 20 and vol.kind == "ext4"
    v = Volume.get("issue-pip-cache")  # auto-created by the mount above, without a quota
    assert v.quota is None and v.kind == "folder"
    v.fs.write("/requirements.txt", "requests==2.28.0")
    assert v.fs.read_text("/requirements.txt") == "requests==2.28.0"
    assert {"issue-pip-cache", "issue-old"} <= {x.name for x in Volume.list()}
    Volume.remove("issue-old")
    Volume.remove("issue-pip-cache")
    assert not {"issue-pip-cache", "issue-old"} & {x.name for x in Volume.list()}


def test_issue_example_sync(hostdir):
    host_dir = os.path.join(hostdir, "shared")
    os.makedirs(host_dir)
    with open(os.path.join(host_dir, "host.txt"), "w") as f:
        f.write("hello from host")
    with SyncSandbox(image="host", volumes={host_dir: {"bind": "/sandbox/data", "mode": "rw"}}) as sb:
        assert sb.execute("cat /sandbox/data/host.txt").stdout == "hello from host"
        sb.execute("echo from sandbox > /sandbox/data/sandbox.txt")
        m = [x for x in sb.active_mounts if x.guest_path == "/sandbox/data"]
        assert m and m[0].host_path == host_dir and not m[0].readonly and not m[0].hot
        name = sb.name
    with open(os.path.join(host_dir, "sandbox.txt")) as f:
        assert f.read() == "from sandbox\n"
    assert name not in run_entries()


def test_volumes_dict_read_only_and_named(hostdir):
    with SyncSandbox(volumes={hostdir: {"bind": "/in", "mode": "ro"},
                              "issue-dict-vol": {"bind": "/vol", "mode": "rw"}}) as sb:
        assert sb.execute("touch /in/x").exit_code != 0
        sb.execute("echo v > /vol/f")
    assert Volume.get("issue-dict-vol").fs.read_text("/f") == "v\n"
    Volume.remove("issue-dict-vol")


def test_manual_lifecycle_async():
    async def main():
        sb = Sandbox(image="host")
        assert not sb.is_running and sb.name is None
        await sb.start()
        assert sb.is_running and sb.name in run_entries()
        assert (await sb.execute("echo x")).stdout == "x\n"
        await sb.stop()
        assert not sb.is_running
        return sb.name

    assert asyncio.run(main()) not in run_entries()


def test_manual_lifecycle_sync_named():
    sb = SyncSandbox(name="sdk-manual", hostname="inside", env={"A": "1"}, pids_limit=64, cpus="0.5")
    sb.start()
    try:
        assert sb.name == "sdk-manual"
        r = sb.execute("hostname; echo $A")
        assert r.stdout.split() == ["inside", "1"]
        info = sb.inspect()
        assert info["state"] == "running" and info["pids_limit"] == 64 and info["cpus"] == 0.5
    finally:
        sb.stop()
    assert "sdk-manual" not in run_entries()
    sb.stop()  # stopping a stopped sandbox is fine


def test_exec_parameters_sync():
    with SyncSandbox() as sb:
        r = sb.execute(["sh", "-c", 'echo "$0 $1" "$X" "$(pwd)" "$(id -u)"', "a b", "c"], env={"X": "y"}, cwd="/tmp",
                       user="1234")
        assert r.stdout == "a b c y /tmp 1234\n"
        got_out, got_err = [], []
        r = sb.execute("echo out; echo err >&2", on_stdout=got_out.append, on_stderr=got_err.append)
        assert "".join(got_out) == "out\n" and "".join(got_err) == "err\n" and r.exit_code == 0
        r = sb.execute("wc -c", stdin=b"x" * (3 << 20))
        assert r.stdout.strip() == str(3 << 20)
        # stdin and output together, larger than the flow-control window both ways.
        r = sb.execute("cat", stdin=b"y" * (5 << 20), on_stdout=lambda s: None)
        assert len(r.stdout_bytes) == 5 << 20
        r = sb.execute("head -c 100000 /dev/zero", max_output=1000)
        assert r.stdout_bytes == b"\0" * 1000
        started = threading.Event()
        p = sb.spawn("echo started; sleep 1000", on_stdout=lambda s: started.set())
        assert sb.execute(["kill", "-0", str(p.pid)]).exit_code == 0
        assert started.wait(60)
        p.kill()
        r = p.wait()
        assert r.signal == 9 and r.stdout == "started\n" and p.returncode == 137
        p = sb.spawn(["sh", "-c", "exit 7"])
        assert p.wait().exit_code == 7


def test_async_callbacks_run_on_the_loop_and_may_be_coroutines():
    async def main():
        async with Sandbox() as sb:
            loop = asyncio.get_running_loop()
            seen = []

            def on_out(text):
                assert asyncio.get_running_loop() is loop
                seen.append(text)

            async def on_err(text):
                await asyncio.sleep(0)
                seen.append("E:" + text)

            r = await sb.execute("printf 'é'; printf 'ü' >&2", on_stdout=on_out, on_stderr=on_err)
            assert r.stdout == "é" and r.stderr == "ü"
            assert sorted(seen) == ["E:ü", "é"]
            # A UTF-8 character split across two writes reaches the callback whole.
            chunks = []
            r = await sb.execute(r"printf '\303'; sleep 0.2; printf '\251\n'", on_stdout=chunks.append)
            assert "".join(chunks) == "é\n" and all("\ufffd" not in c for c in chunks)

    asyncio.run(main())


def test_mount_type_9p_is_the_default_and_cifs_is_refused(hostdir):
    assert Mount(hostdir, "/m", type="9p").type == "9p"
    with pytest.raises(capsule.MountError, match="CIFS"):
        Mount(hostdir, "/m", type="cifs")
    with pytest.raises(capsule.MountError):
        Mount(hostdir, "/m", type="nfs")
    with SyncSandbox(mounts=[Mount(hostdir, "/m9", type="9p")]) as sb:
        sb.execute("echo 9 > /m9/f")
        h = sb.mount(hostdir, "/hot9", type="9p")
        assert sb.execute("cat /hot9/f").stdout == "9\n"
        with pytest.raises(capsule.MountError, match="CIFS"):
            sb.mount(hostdir, "/hotc", type="cifs")
        sb.unmount(h.handle)


def test_unsupported_features_raise_before_anything_starts():
    before = run_entries()
    for kw, word in (({"port_forwards": [PortForward(host=8080, guest=53, protocol="udp")]}, "udp"),
                     ):
        for cls in (Sandbox, SyncSandbox):
            with pytest.raises(UnsupportedFeature, match=word) as ei:
                cls(**kw)
            assert isinstance(ei.value, CapsuleError) and ei.value.errno == 95
    assert run_entries() == before
    # MOUNTS_ONLY is today's behaviour: loopback only.
    with SyncSandbox(network_mode=NetworkMode.MOUNTS_ONLY) as sb:
        assert sb.network_mode is NetworkMode.MOUNTS_ONLY
        links = sb.execute("cat /proc/net/dev | tail -n +3 | cut -d: -f1").stdout.split()
        assert links == ["lo"]
