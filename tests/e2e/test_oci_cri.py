"""Kubernetes pods through containerd's CRI plugin (Debian's containerd 1.6), driven over CRI
gRPC as the kubelet drives it (docs/kubernetes.md): a containerd of the test's own (config,
root, state, socket, a CNI config of its own on a bridge of its own) with the runtime
handlers `capsule` and `capsule-vm`, both containerd's runc shim with BinaryName capsule-oci.

The CRI v1 API is tests/e2e/cri/api.proto, kubernetes/cri-api at 479df36 (the last before
options that Debian's protoc 3.21 does not know), compiled with protoc at test time; the
calls are made with grpcio's generic stubs, so no generated gRPC code is kept."""
import contextlib
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from tests.conftest import BUILD, _agent_is_static, _env
from tests.e2e.test_oci import host_shm_key_exists, sysv_shm  # noqa: F401 (a fixture)
from tests.e2e.test_oci_containerd import CONTAINERD, CTR, oci_archive, start_containerd, stop_containerd

try:
    import grpc
except ImportError:  # the fixture says what is missing
    grpc = None

OCI = os.path.join(BUILD, "capsule-oci")
PROTOC = shutil.which("protoc")
IMAGE = "localhost/capsule-cri:1"
PAUSE = "localhost/capsule-pause:1"
CNI_BIN = "/usr/lib/cni"
BRIDGE = f"capsulecri{os.getpid() % 10000}"
CGROUP_PARENT = f"/capsule-cri-{os.getpid()}"

pytestmark = [
    pytest.mark.plain_build_only,
    pytest.mark.skipif(not _agent_is_static(), reason="the images hold busybox alone: a sanitizer build's "
                       "dynamic agent could not run in them"),
]


class Cri:
    """The runtime and image services over the daemon's socket, one method per call."""

    def __init__(self, sock, pb):
        self.pb = pb
        self.channel = grpc.insecure_channel(f"unix://{sock}")

    def call(self, service, method, timeout=60, **fields):
        request = getattr(self.pb, f"{method}Request")(**fields)
        response = getattr(self.pb, f"{method}Response")
        stub = self.channel.unary_unary(f"/runtime.v1.{service}/{method}",
                                        request_serializer=type(request).SerializeToString,
                                        response_deserializer=response.FromString)
        return stub(request, timeout=timeout)

    def __getattr__(self, method):
        service = "ImageService" if "Image" in method else "RuntimeService"
        return lambda **fields: self.call(service, method, **fields)


def containerd_config(top, sock):
    runtimes = ""
    for handler, annotations in (("capsule", "[]"), ("capsule-vm", '["capsule.isolation"]')):
        runtimes += (f'[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{handler}]\n'
                     f'  runtime_type = "io.containerd.runc.v2"\n'
                     f'  pod_annotations = {annotations}\n'
                     f'[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{handler}.options]\n'
                     f'  BinaryName = "{OCI}"\n  Root = "{top}/oci-root"\n  SystemdCgroup = false\n')
    return (f'version = 2\nroot = "{top}/root"\nstate = "{top}/state"\n'
            f'[grpc]\n  address = "{sock}"\n[ttrpc]\n  address = "{sock}.ttrpc"\n'
            f'[plugins."io.containerd.grpc.v1.cri"]\n'
            f'  sandbox_image = "{PAUSE}"\n'
            f'  stream_server_address = "127.0.0.1"\n  stream_server_port = "0"\n'
            f'  netns_mounts_under_state_dir = true\n'
            f'  enable_cdi = false\n'
            f'[plugins."io.containerd.grpc.v1.cri".cni]\n'
            f'  bin_dir = "{CNI_BIN}"\n  conf_dir = "{top}/cni"\n'
            f'[plugins."io.containerd.grpc.v1.cri".containerd]\n'
            f'  snapshotter = "native"\n  default_runtime_name = "capsule"\n' + runtimes)


@contextlib.contextmanager
def own_cri(capsule_home, sysv_shm=None):
    """A containerd of its own with the CRI plugin (the capsule and capsule-vm handlers, a CNI
    bridge of its own) and the pause and test images imported; yields a Cri client. Without
    SYSV_SHM the test image lacks that helper (bench/vm-pod)."""
    assert CONTAINERD and CTR and PROTOC and grpc, \
        "containerd, protobuf-compiler or python3-grpcio is not installed (scripts/install-deps)"
    assert os.path.exists(os.path.join(CNI_BIN, "bridge")), "containernetworking-plugins is not installed"
    top = tempfile.mkdtemp(prefix="capsule-oci-cri-", dir="/var/tmp")
    sock = os.path.join(top, "containerd.sock")
    subprocess.run([PROTOC, f"--python_out={top}", "-I", os.path.join(os.path.dirname(__file__), "cri"),
                    "api.proto"], check=True)
    sys.path.insert(0, top)
    try:
        import api_pb2 as pb
    finally:
        sys.path.remove(top)
    os.makedirs(os.path.join(top, "cni"))
    # A bridge of the test's own, no gateway, no masquerading: the pod gets an eth0 and an
    # address (the CRI wants one), and nothing of the host's is changed.
    with open(os.path.join(top, "cni", "10-capsule-test.conflist"), "w") as f:
        json.dump({"cniVersion": "0.4.0", "name": "capsule-cri-test", "plugins": [
            {"type": "bridge", "bridge": BRIDGE, "isGateway": False, "ipMasq": False,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.237.91.0/24"}]],
                      "dataDir": os.path.join(top, "ipam")}}]}, f)
    with open(os.path.join(top, "config.toml"), "w") as f:
        f.write(containerd_config(top, sock))
    env = _env(capsule_home)
    daemon = start_containerd(top, sock, env)
    client = Cri(sock, pb)
    client.top, client.env, client.sysv_shm = top, env, sysv_shm
    try:
        assert os.path.exists(sock), open(os.path.join(top, "containerd.log")).read()[-2000:]
        oci_archive(os.path.join(top, "pause.tar"), name=PAUSE, cmd=["sleep", "2147483647"])
        oci_archive(os.path.join(top, "image.tar"), name=IMAGE, tools=("hostname", "dd", "rm", "mkdir", "httpd", "wget"),
                    files=((sysv_shm, "bin/sysv_shm"),) if sysv_shm else ())
        for tar in ("pause.tar", "image.tar"):
            r = subprocess.run([CTR, "--address", sock, "-n", "k8s.io", "image", "import", "--snapshotter",
                                "native", os.path.join(top, tar)], env=env, capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
        yield client
    finally:
        try:
            for pod in client.ListPodSandbox().items:
                client.StopPodSandbox(pod_sandbox_id=pod.id)
                client.RemovePodSandbox(pod_sandbox_id=pod.id)
        except grpc.RpcError:
            pass
        client.channel.close()
        stop_containerd(daemon)
        # What a failed test left: the shims of this daemon (they outlive it, by design) with
        # their containers, and their mounts (rootfs, the pod's shm and netns).
        for shim in shims_of(sock):
            try:
                os.kill(shim, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for mount in sorted(mounts_below(top), reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True)
        subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)
        shutil.rmtree(top, ignore_errors=True)
        # The pod's cgroup parent, left as runc leaves it, once the sandboxes' shims have
        # removed their own below it.
        for hierarchy in {os.path.realpath(p) for p in glob.glob("/sys/fs/cgroup/*/")} | {"/sys/fs/cgroup"}:
            deadline = time.monotonic() + 5
            while os.path.isdir(hierarchy + CGROUP_PARENT) and time.monotonic() < deadline:
                try:
                    os.rmdir(hierarchy + CGROUP_PARENT)
                except OSError:
                    time.sleep(0.1)


@pytest.fixture(scope="module")
def cri(capsule_home, sysv_shm):  # noqa: F811
    with own_cri(capsule_home, sysv_shm) as client:
        yield client


def namespaces(cri, pid=None):
    """What the kubelet asks for a pod without host namespaces; PID: POD for shareProcessNamespace
    (NODE for hostPID), else CONTAINER."""
    return cri.pb.NamespaceOption(network=cri.pb.POD, pid=cri.pb.CONTAINER if pid is None else pid, ipc=cri.pb.POD)


def shims_of(sock):
    """The pids of containerd's shims that serve the daemon at SOCK."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if args[0].endswith(b"containerd-shim-runc-v2") and sock.encode() in args:
            pids.append(int(pid))
    return pids


def mounts_below(top):
    with open("/proc/self/mountinfo") as f:
        return [m for m in (line.split()[4] for line in f) if m.startswith(top + "/")]


def pod_config(cri, name, annotations=None, pid=None):
    return cri.pb.PodSandboxConfig(
        metadata=cri.pb.PodSandboxMetadata(name=name, uid=f"uid-{name}", namespace="default"),
        hostname=f"{name}-host", log_directory=os.path.join(cri.top, "logs", name),
        annotations=annotations or {},
        linux=cri.pb.LinuxPodSandboxConfig(cgroup_parent=CGROUP_PARENT, security_context=cri.pb.
                                           LinuxSandboxSecurityContext(namespace_options=namespaces(cri, pid))))


def start_container(cri, pod_id, config, name, command, pid=None):
    c = cri.CreateContainer(pod_sandbox_id=pod_id, sandbox_config=config, config=cri.pb.ContainerConfig(
        metadata=cri.pb.ContainerMetadata(name=name), image=cri.pb.ImageSpec(image=IMAGE), command=command,
        log_path=f"{name}.log", linux=cri.pb.LinuxContainerConfig(security_context=cri.pb.LinuxContainerSecurityContext(
            namespace_options=namespaces(cri, pid)))))
    cri.StartContainer(container_id=c.container_id)
    return c.container_id


def exec_sync(cri, cid, *cmd):
    r = cri.ExecSync(container_id=cid, cmd=list(cmd), timeout=30)
    return r.exit_code, r.stdout.decode(), r.stderr.decode()


def test_a_pod_of_two_containers_shares_ipc_and_uts_and_not_the_hosts(cri):
    """RunPodSandbox with the capsule handler, two containers started in it: a System V segment
    one makes is the other's, so is a file of the pod's /dev/shm, both have the pod's hostname,
    and neither sees the host's IPC objects or hostname; ExecSync, an exit status by ContainerStatus, and after StopPodSandbox
    and RemovePodSandbox nothing is left: no container under capsule-oci's root, no sandbox,
    no monitor."""
    key = 0x5ca1f000 + os.getpid() % 4096
    config = pod_config(cri, "pod1")
    pod = cri.RunPodSandbox(config=config, runtime_handler="capsule").pod_sandbox_id
    one = start_container(cri, pod, config, "one", ["sh", "-c", f"sysv_shm make {key} from-one; echo one-says-hi; "
                                                               "sleep 1000"])
    two = start_container(cri, pod, config, "two", ["sleep", "1000"])
    deadline = time.monotonic() + 20
    while (got := exec_sync(cri, two, "sysv_shm", "read", str(key)))[0] != 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert got == (0, "from-one\n", ""), got
    # The container's output reaches the kubelet's log (`kubectl logs`), in the CRI's format.
    log = os.path.join(cri.top, "logs", "pod1", "one.log")
    while " stdout F one-says-hi" not in (open(log).read() if os.path.exists(log) else "") and \
            time.monotonic() < deadline:
        time.sleep(0.1)
    assert " stdout F one-says-hi\n" in open(log).read()
    assert not host_shm_key_exists(key)
    assert socket.gethostname() != "pod1-host"
    for cid in (one, two):
        assert exec_sync(cri, cid, "hostname") == (0, "pod1-host\n", "")
    # A segment of the host's is no container's.
    subprocess.run([cri.sysv_shm, "make", str(key + 1), "the-hosts"], check=True)
    try:
        code, _, err = exec_sync(cri, one, "sysv_shm", "read", str(key + 1))
        assert code == 2 and "No such file" in err, err
    finally:
        subprocess.run(["ipcrm", "-M", str(key + 1)], check=True)
    assert exec_sync(cri, two, "sh", "-c", "echo in-exec; exit 4") == (4, "in-exec\n", "")
    # POSIX shared memory: the pod's /dev/shm (the CRI's tmpfs, bound into each container and
    # idmapped to each sandbox's root) is one, written by either root; not the host's.
    assert exec_sync(cri, one, "sh", "-c", "echo posix > /dev/shm/from-one")[0] == 0
    assert exec_sync(cri, two, "sh", "-c", "echo more >> /dev/shm/from-one; cat /dev/shm/from-one") == \
        (0, "posix\nmore\n", "")
    assert not os.path.exists("/dev/shm/from-one")
    # The container's figures (the kubelet's metrics, its eviction signals) are its sandbox's:
    # 48 MiB written to tmpfs by a process of container two are charged to two. Only on
    # cgroup v1, where the monitor joins its sandbox's memory cgroup (docs/kubernetes.md).
    if os.path.isdir("/sys/fs/cgroup/memory"):
        before = cri.ContainerStats(container_id=two).stats.memory.usage_bytes.value
        assert exec_sync(cri, two, "sh", "-c", "dd if=/dev/zero of=/dev/shm/big bs=1M count=48 2>/dev/null")[0] == 0
        after = cri.ContainerStats(container_id=two).stats.memory.usage_bytes.value
        assert after - before >= 40 << 20, (before, after)
        assert exec_sync(cri, two, "rm", "/dev/shm/big")[0] == 0

    three = start_container(cri, pod, config, "three", ["sh", "-c", "exit 3"])
    deadline = time.monotonic() + 30
    while (st := cri.ContainerStatus(container_id=three).status).state != cri.pb.CONTAINER_EXITED and \
            time.monotonic() < deadline:
        time.sleep(0.1)
    assert st.state == cri.pb.CONTAINER_EXITED and st.exit_code == 3, st

    cri.StopPodSandbox(pod_sandbox_id=pod)
    cri.RemovePodSandbox(pod_sandbox_id=pod)
    assert not cri.ListPodSandbox().items and not cri.ListContainers().containers
    oci_root = os.path.join(cri.top, "oci-root", "k8s.io")  # BinaryName's --root, by namespace
    assert os.listdir(oci_root) == []
    r = subprocess.run([os.path.join(BUILD, "capsule"), "ps", "-a", "--json"], env=cri.env, capture_output=True,
                       text=True)
    assert r.returncode == 0 and json.loads(r.stdout) == [], r.stdout + r.stderr
    r = subprocess.run(["pgrep", "-f", f"{OCI} .*--root {oci_root}"], capture_output=True, text=True)
    assert r.stdout == "", r.stdout
    # The pod's network namespace and /dev/shm are unmounted: only the image snapshots stay.
    assert [m for m in mounts_below(cri.top) if "/netns/" in m or m.endswith("/shm")] == []


def wait_exited(cri, cid, timeout=30):
    deadline = time.monotonic() + timeout
    while (st := cri.ContainerStatus(container_id=cid).status).state != cri.pb.CONTAINER_EXITED and \
            time.monotonic() < deadline:
        time.sleep(0.1)
    assert st.state == cri.pb.CONTAINER_EXITED, st
    return st


def test_a_pod_with_a_shared_pid_namespace_and_one_id_range(cri):
    """shareProcessNamespace (pid POD): each container sees the other's processes in /proc and
    may signal them; the one whose process was killed from the other exits with that signal's
    status, the other with its own. The pod's containers run on one host id range: a System V
    segment of mode 0600 that one's root made is the other's root's. hostPID (pid NODE) is
    refused with capsule-oci's line."""
    key = 0x5ca1f800 + os.getpid() % 2048
    config = pod_config(cri, "pod-pid", pid=cri.pb.POD)
    pod = cri.RunPodSandbox(config=config, runtime_handler="capsule").pod_sandbox_id
    try:
        one = start_container(cri, pod, config, "one", ["sh", "-c", f"sysv_shm make {key} only-roots 600; "
                                                                   "exec sleep 1000"], pid=cri.pb.POD)
        two = start_container(cri, pod, config, "two", ["sleep", "2000"], pid=cri.pb.POD)
        deadline = time.monotonic() + 20
        while (got := exec_sync(cri, two, "sysv_shm", "read", str(key)))[0] != 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert got == (0, "only-roots\n", ""), got
        find = 'for d in /proc/[0-9]*; do [ "$(cat $d/cmdline 2>/dev/null)" = "$0" ] && echo ${d#/proc/}; done'
        code, out, err = exec_sync(cri, two, "sh", "-c", find, "sleep1000")
        assert code == 0 and out.strip().isdigit(), (code, out, err)
        # and the other way round: one sees two's sleep.
        assert exec_sync(cri, one, "sh", "-c", find, "sleep2000")[1].strip().isdigit()
        assert exec_sync(cri, two, "sh", "-c", f"kill {out.strip()}") == (0, "", "")
        assert wait_exited(cri, one).exit_code == 128 + signal.SIGTERM
        assert cri.ContainerStatus(container_id=two).status.state == cri.pb.CONTAINER_RUNNING
        assert exec_sync(cri, two, "sh", "-c", "exit 6")[0] == 6
        three = start_container(cri, pod, config, "three", ["sh", "-c", "exit 3"], pid=cri.pb.POD)
        assert wait_exited(cri, three).exit_code == 3
    finally:
        cri.StopPodSandbox(pod_sandbox_id=pod)
        cri.RemovePodSandbox(pod_sandbox_id=pod)
    assert not host_shm_key_exists(key)
    # hostPID: containerd leaves the pid namespace out of the pause container's spec, which
    # capsule-oci refuses; the pod is not made.
    with pytest.raises(grpc.RpcError) as e:
        cri.RunPodSandbox(config=pod_config(cri, "pod-hostpid", pid=cri.pb.NODE), runtime_handler="capsule")
    assert "sharing the host's pid namespace is not supported by capsule" in e.value.details(), e.value.details()
    assert [p.metadata.name for p in cri.ListPodSandbox().items if p.metadata.name == "pod-hostpid"] == []


def test_a_vm_pod_runs_its_container_in_a_vm_on_the_pods_network(cri):
    """capsule-vm with the pod's annotation: the pause container runs at the container level
    (it only holds the pod's namespaces), the app container in a vm whose QEMU is in the
    pod's network namespace: the guest's kernel, the pod's hostname, an eth0, a connection to
    the pod's address on a port the guest listens on reaches the guest; ExecSync's exit
    status; and after StopPodSandbox and RemovePodSandbox nothing is left."""
    config = pod_config(cri, "vmpod", annotations={"capsule.isolation": "vm"})
    pod = cri.RunPodSandbox(config=config, runtime_handler="capsule-vm").pod_sandbox_id
    app = start_container(cri, pod, config, "app", ["sh", "-c", "mkdir /w; echo from-the-guest > /w/index.html; "
                                                                "exec httpd -f -p 8080 -h /w"])
    code, kernel, _ = exec_sync(cri, app, "cat", "/proc/version")
    with open("/proc/version") as f:
        assert code == 0 and kernel != f.read(), kernel
    assert exec_sync(cri, app, "hostname") == (0, "vmpod-host\n", "")
    code, dev, _ = exec_sync(cri, app, "cat", "/proc/net/dev")
    assert code == 0 and "eth0:" in dev, dev
    assert exec_sync(cri, app, "sh", "-c", "echo in-exec; exit 4") == (4, "in-exec\n", "")
    # Inbound: the pod's address on the port the guest's httpd listens on, from inside the
    # pod's network namespace (the test's bridge has no address on the host).
    status = cri.PodSandboxStatus(pod_sandbox_id=pod, verbose=True)
    addr = status.status.network.ip
    netns = [n["path"] for n in json.loads(status.info["info"])["runtimeSpec"]["linux"]["namespaces"]
             if n["type"] == "network"][0]
    client = ("import socket, sys\n"
              "c = socket.create_connection((sys.argv[1], 8080), timeout=10)\n"
              "c.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')\n"
              "sys.stdout.buffer.write(b''.join(iter(lambda: c.recv(4096), b'')))\n")
    deadline = time.monotonic() + 30
    while (r := subprocess.run(["nsenter", f"--net={netns}", sys.executable, "-c", client, addr],
                               capture_output=True)).returncode != 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert r.stdout.endswith(b"\r\n\r\nfrom-the-guest\n"), r.stdout + r.stderr
    cri.StopPodSandbox(pod_sandbox_id=pod)
    cri.RemovePodSandbox(pod_sandbox_id=pod)
    assert not cri.ListPodSandbox().items and not cri.ListContainers().containers
    assert os.listdir(os.path.join(cri.top, "oci-root", "k8s.io")) == []
    r = subprocess.run([os.path.join(BUILD, "capsule"), "ps", "-a", "--json"], env=cri.env, capture_output=True,
                       text=True)
    assert r.returncode == 0 and json.loads(r.stdout) == [], r.stdout + r.stderr


def pod_netns(cri, pod):
    """The pod's address and its network namespace's path."""
    status = cri.PodSandboxStatus(pod_sandbox_id=pod, verbose=True)
    netns = [n["path"] for n in json.loads(status.info["info"])["runtimeSpec"]["linux"]["namespaces"]
             if n["type"] == "network"][0]
    return status.status.network.ip, netns


def http_get_in(netns, addr, port, want, timeout=60):
    """GET / from ADDR:PORT inside NETNS until the body is WANT (or TIMEOUT): the body seen."""
    client = ("import socket, sys\n"
              "c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)\n"
              "c.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')\n"
              "sys.stdout.buffer.write(b''.join(iter(lambda: c.recv(4096), b'')))\n")
    deadline = time.monotonic() + timeout
    while True:
        r = subprocess.run(["nsenter", f"--net={netns}", sys.executable, "-c", client, addr, str(port)],
                           capture_output=True)
        body = r.stdout.split(b"\r\n\r\n", 1)[-1].decode(errors="replace") if r.returncode == 0 else r.stderr.decode()
        if body == want or time.monotonic() > deadline:
            return body
        time.sleep(0.2)


def claimed_ports(netns):
    """The ports of the pod's namespace's map: which vm's listener each goes to."""
    r = subprocess.run(["nsenter", f"--net={netns}", "nft", "-j", "list", "map", "ip", "capsule_vm_in", "ports"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    elems = [x["map"] for x in json.loads(r.stdout)["nftables"] if "map" in x][0].get("elem", [])
    return {k: v for k, v in elems}


def nsenter_nft(netns, command):
    r = subprocess.run(["nsenter", f"--net={netns}", "nft", command], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def serve(port, body):
    return f"mkdir -p /w{port}; echo {body} > /w{port}/index.html; httpd -p {port} -h /w{port}"


@pytest.mark.vm_slow
def test_a_vm_pod_of_two_containers_serves_each_ones_ports(cri):
    """Two vm containers in one capsule-vm pod: A serves 8080, B 9090; each port on the pod's
    address reaches the vm that listens on it, and each container reaches the other's on its
    own localhost (and on the pod's loopback, the guest's 10.0.2.2), as a pod's containers
    share localhost. B cannot listen on 8080 while A holds it (the bind fails, as in a pod);
    a port both guests listen on before either's claim reached the other stays with the first
    claim, B's shim says so in its log and takes it once it is free; once A ends, its claims
    go, B can listen on 8080, and the pod's 8080 is B's; a killed shim's claim is removed by
    the others; after the pod is removed no claim is left in its namespace."""
    config = pod_config(cri, "vmpod2", annotations={"capsule.isolation": "vm"})
    pod = cri.RunPodSandbox(config=config, runtime_handler="capsule-vm").pod_sandbox_id
    try:
        addr, netns = pod_netns(cri, pod)
        a = start_container(cri, pod, config, "a", ["sh", "-c", serve(8080, "from-a") + "; exec sleep 100000"])
        assert http_get_in(netns, addr, 8080, "from-a\n") == "from-a\n"
        b = start_container(cri, pod, config, "b", ["sh", "-c", serve(9090, "from-b") + "; exec sleep 100000"])
        assert http_get_in(netns, addr, 9090, "from-b\n") == "from-b\n"
        assert http_get_in(netns, addr, 8080, "from-a\n", timeout=0) == "from-a\n"
        ports = claimed_ports(netns)
        assert set(ports) == {8080, 9090} and ports[8080] != ports[9090], ports
        # Shared localhost: A's 127.0.0.1:9090 is B's server, B's 127.0.0.1:8080 A's (once
        # B's shim has told A's agent of 9090: at its next report).
        deadline = time.monotonic() + 30
        while (got := exec_sync(cri, a, "wget", "-q", "-O", "-", "http://127.0.0.1:9090/"))[0] != 0 and \
                time.monotonic() < deadline:
            time.sleep(0.2)
        assert got == (0, "from-b\n", ""), got
        assert exec_sync(cri, b, "wget", "-q", "-O", "-", "http://127.0.0.1:8080/") == (0, "from-a\n", "")
        assert exec_sync(cri, a, "wget", "-q", "-O", "-", "http://10.0.2.2:9090/") == (0, "from-b\n", "")
        # 8080 is A's: in B it is taken.
        code, _, err = exec_sync(cri, b, "httpd", "-p", "8080", "-h", "/w9090")
        assert code != 0 and "in use" in err, (code, err)
        # Two guests that listen on one port before either's claim reached the other (here a
        # claim for A's listener made by hand, B's server started at once): the first claim
        # keeps it, B's shim says so in its log.
        log = os.path.join(cri.env["CAPSULE_HOME"], "run", b[:63], "shim.log")
        for port in (7001, 7002, 7003):
            nsenter_nft(netns, f"add element ip capsule_vm_in ports {{ {port} : {ports[8080]} }}")
            code, _, err = exec_sync(cri, b, "httpd", "-p", str(port), "-h", "/w9090")
            if code == 0:
                break
            # B's agent had the claim first (a report in between) and holds the port: the pod's
            # answer, not the one this part checks.
            assert "in use" in err, err
        line = f"port {port}: the guest listens on it, but another container of the network namespace"
        deadline = time.monotonic() + 30
        while line not in open(log).read() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert line in open(log).read()
        assert claimed_ports(netns)[port] == ports[8080]
        nsenter_nft(netns, f"delete element ip capsule_vm_in ports {{ {port} }}")
        deadline = time.monotonic() + 30
        while claimed_ports(netns).get(port) != ports[9090] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert claimed_ports(netns).get(port) == ports[9090]  # retried, it is B's now
        # A ends: its claim goes, B's agent lets 8080 go, and B's server on it gets the pod's 8080.
        cri.StopContainer(container_id=a, timeout=10)
        assert 8080 not in claimed_ports(netns)
        deadline = time.monotonic() + 30
        while exec_sync(cri, b, "sh", "-c", serve(8080, "from-b-8080"))[0] != 0 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert http_get_in(netns, addr, 8080, "from-b-8080\n") == "from-b-8080\n"
        cri.RemoveContainer(container_id=a)
        # C's shim is killed (no chance to remove its claim): B's shim finds the claim's
        # listener gone and removes it.
        c = start_container(cri, pod, config, "c", ["sh", "-c", serve(7070, "from-c") + "; exec sleep 100000"])
        assert http_get_in(netns, addr, 7070, "from-c\n") == "from-c\n"
        r = subprocess.run([os.path.join(BUILD, "capsule"), "inspect", c[:63]], env=cri.env, capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stderr
        os.kill(json.loads(r.stdout)["shim_pid"], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while 7070 in claimed_ports(netns) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert set(claimed_ports(netns)) == {8080, 9090, port}
        cri.StopContainer(container_id=b, timeout=10)
        assert claimed_ports(netns) == {}
    finally:
        cri.StopPodSandbox(pod_sandbox_id=pod)
        cri.RemovePodSandbox(pod_sandbox_id=pod)
    assert not cri.ListPodSandbox().items and not cri.ListContainers().containers


def test_update_container_resources_reaches_the_sandboxs_cgroup(cri):
    """UpdateContainerResources (the kubelet's in-place resize): containerd's shim hands
    capsule-oci the container's new linux.resources on stdin (update --resources -); the
    sandbox's cgroup has them, a cpuset too (the kubelet's cpu manager gives one to a container
    made without)."""
    config = pod_config(cri, "pod-up")
    pod = cri.RunPodSandbox(config=config, runtime_handler="capsule").pod_sandbox_id
    try:
        cid = start_container(cri, pod, config, "up", ["sleep", "1000"])
        cri.UpdateContainerResources(container_id=cid, linux=cri.pb.LinuxContainerResources(
            memory_limit_in_bytes=96 << 20, cpu_period=100000, cpu_quota=50000, cpu_shares=512))
        r = subprocess.run([OCI, "--root", os.path.join(cri.top, "oci-root", "k8s.io"), "events", "--stats", cid],
                           env=cri.env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["data"]["memory"]["usage"]["limit"] == 96 << 20
        cri.UpdateContainerResources(container_id=cid, linux=cri.pb.LinuxContainerResources(
            memory_limit_in_bytes=96 << 20, cpuset_cpus="0"))
        r = subprocess.run([OCI, "--root", os.path.join(cri.top, "oci-root", "k8s.io"), "ps", "--format", "json", cid],
                           env=cri.env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        for pid in json.loads(r.stdout):
            with open(f"/proc/{pid}/status") as f:
                assert "Cpus_allowed_list:\t0\n" in f.read()
    finally:
        cri.StopPodSandbox(pod_sandbox_id=pod)
        cri.RemovePodSandbox(pod_sandbox_id=pod)
