#!/usr/bin/env python3
"""Write the seed corpora for the fuzzers into tests/fuzz/corpus/<target>/.

The frames are built here from the wire format in src/common/proto.h (a 12-byte little-endian
header: u32 len, u16 type, u16 flags, u32 chan; then fields: u16 tag, u32 len, value), so the
seeds do not depend on a build. The output is deterministic; rerun after changing the format
and commit the result. Usage: make-seeds.py [OUT_DIR]  (default: corpus/ next to this file)
"""
import os
import struct
import sys

# enum cp_type
HELLO, ERROR, OK, EXEC, STARTED, DATA, CREDIT, EXIT, SIGNAL, RESIZE, STOP, INIT, SHUTDOWN, FS = (
    1, 2, 3, 16, 17, 18, 19, 20, 21, 22, 32, 48, 49, 64)
# enum cp_fs_op, the CP_FS_* flags, enum cp_fs_kind
FS_STAT, FS_LIST, FS_READ, FS_WRITE, FS_MKDIR, FS_REMOVE, FS_RENAME, FS_SYMLINK = range(1, 9)
FS_PARENTS, FS_RECURSIVE, FS_FORCE, FS_NOREPLACE = 1, 2, 4, 8
KIND_FILE, KIND_DIR, KIND_SYMLINK, KIND_OTHER = 1, 2, 3, 4
FLAG_EOF = 0x100
MAX_PAYLOAD = 1 << 20


def field(tag, value):
    return struct.pack('<HI', tag, len(value)) + value


def u32(tag, v):
    return field(tag, struct.pack('<I', v & 0xffffffff))


def u64(tag, v):
    return field(tag, struct.pack('<Q', v))


def s(tag, text):
    return field(tag, text.encode())


def frame(type_, payload, chan=1, flags=0):
    return struct.pack('<IHHI', len(payload), type_, flags, chan) + payload


BPF = bytes([0x20, 0, 0, 0, 4, 0, 0, 0, 0x06, 0, 0, 0, 0, 0, 0xff, 0x7f])



def entry(name, kind, size=0, mode=0o644, mtime_ns=0, uid=0, gid=0, link=None):
    """The fields of a struct cp_fs_entry, in the encoder's order."""
    out = (s(1, name) + u32(2, kind) + u64(3, size) + u32(4, mode) + u64(5, mtime_ns & (2**64 - 1))
           + u32(6, uid) + u32(7, gid))
    return out + (s(8, link) if link is not None else b'')


def record(fields):
    return struct.pack('<I', len(fields)) + fields


ENTRY_FILE = entry('notes.txt', KIND_FILE, 1234, 0o644, 1700000000123456789, 1000, 1000)
ENTRY_DIR = entry('src', KIND_DIR, 4096, 0o2755, -1500000000, 0, 0)
ENTRY_LINK = entry('current', KIND_SYMLINK, 9, 0o777, 0, 0, 0, '../v1.2.3')
ENTRY_OTHER = entry('fifo', KIND_OTHER, 0, 0o600, -1, 0xffffffff, 65534)

# Payloads, keyed by name, with the message type they belong to.
PAYLOADS = {
    'hello': (HELLO, u32(1, 1) + s(2, 'agent')),
    'hello-no-role': (HELLO, u32(1, 1)),
    'error': (ERROR, u32(1, 2) + s(2, "open '/x': No such file or directory")),
    'error-bad-errno': (ERROR, u32(1, 0) + s(2, '')),
    'exec': (EXEC, s(1, '/bin/sh') + s(1, '-c') + s(1, 'echo hi; exit 3') + s(2, 'PATH=/usr/bin:/bin')
             + s(2, 'HOME=/root') + s(3, '/work') + s(4, '1000:1000') + u32(5, 3) + u32(6, 24)
             + u32(7, 80) + u32(8, 5000)),
    'exec-minimal': (EXEC, s(1, 'true') + u32(5, 0)),
    'exec-unknown-field': (EXEC, s(1, 'ls') + s(99, 'from a newer peer') + u32(5, 0)),
    'started': (STARTED, u32(1, 4242)),
    'credit': (CREDIT, u32(1, 1) + u32(2, 65536)),
    'exit': (EXIT, u32(1, -1) + u32(2, 9) + u32(3, 1)),
    'exit-code-only': (EXIT, u32(1, 0)),
    'signal': (SIGNAL, u32(1, 15) + u32(2, 77)),
    'resize': (RESIZE, u32(1, 50) + u32(2, 132)),
    'stop': (STOP, u32(1, 10000)),
    'stop-empty': (STOP, b''),
    'init': (INIT, field(1, BPF) + s(2, 'PATH=/usr/bin') + s(2, 'LANG=C.UTF-8') + u64(3, 0xa80425fb)
             + u32(4, 1)),
    'init-bare': (INIT, u64(3, 0) + u32(4, 0)),
    'fs-stat': (FS, u32(1, FS_STAT) + s(2, '/etc/hostname')),
    'fs-list': (FS, u32(1, FS_LIST) + s(2, '/work')),
    'fs-read': (FS, u32(1, FS_READ) + s(2, '/work/out.log')),
    'fs-write': (FS, u32(1, FS_WRITE) + s(2, '/work/new/file') + u32(4, FS_PARENTS | FS_NOREPLACE)
                 + u32(5, 0o640)),
    'fs-mkdir': (FS, u32(1, FS_MKDIR) + s(2, '/work/a/b/c') + u32(4, FS_PARENTS) + u32(5, 0o755)),
    'fs-remove': (FS, u32(1, FS_REMOVE) + s(2, '/work/a') + u32(4, FS_RECURSIVE | FS_FORCE)),
    'fs-rename': (FS, u32(1, FS_RENAME) + s(2, '/work/old') + s(3, '/work/new') + u32(4, FS_NOREPLACE)),
    'fs-symlink': (FS, u32(1, FS_SYMLINK) + s(2, '/work/link') + s(3, '../target')),
}

# fuzz_messages only: an entry as an OK payload, and LIST DATA payloads (records).
ENTRY_PAYLOADS = {
    'fs-entry-file': ENTRY_FILE,
    'fs-entry-dir': ENTRY_DIR,
    'fs-entry-symlink': ENTRY_LINK,
    'fs-entry-other': ENTRY_OTHER,
}
RECORD_PAYLOADS = {
    'fs-records': b''.join(record(e) for e in (ENTRY_FILE, ENTRY_DIR, ENTRY_LINK, ENTRY_OTHER)),
    'fs-records-one': record(ENTRY_LINK),
    'fs-records-bad-name': record(ENTRY_FILE) + record(entry('..', KIND_DIR)) + record(ENTRY_DIR),
    'fs-records-trailing': record(ENTRY_FILE) + b'\x01\x00',
}

# fuzz_messages: byte 0 % 13 picks the decoder; 11 and 12 are an entry and LIST records.
SELECTOR = {HELLO: 0, ERROR: 1, EXEC: 2, STARTED: 3, CREDIT: 4, EXIT: 5, SIGNAL: 6, RESIZE: 7, STOP: 8,
            INIT: 9, FS: 10}
SEL_FS_ENTRY, SEL_FS_RECORDS = 11, 12

# fuzz_parse: byte 0 % 13 picks the function (enum target in fuzz_parse.c).
(T_SIZE, T_CPUS, T_DURATION, T_UINT, T_NAME, T_MOUNT, T_TMPFS, T_USER, T_PORT, T_NORMALIZE, T_ENV,
 T_JSON_GET, T_JSON_ROUND_TRIP) = range(13)
PARSE_SEEDS = {
    'size-plain': (T_SIZE, '1024'), 'size-m': (T_SIZE, '512m'), 'size-frac': (T_SIZE, '1.5G'),
    'size-space-gib': (T_SIZE, '1 GiB'), 'size-mb': (T_SIZE, '100MB'),
    'cpus': (T_CPUS, '1.25'), 'cpus-dot': (T_CPUS, '.5'),
    'duration-sum': (T_DURATION, '1m30s'), 'duration-ms': (T_DURATION, '500ms'),
    'duration-frac': (T_DURATION, '1.5s'), 'duration-bare': (T_DURATION, '30'),
    'uint': (T_UINT, '4096'),
    'name': (T_NAME, 'my-box_1.dev'),
    'mount-ro': (T_MOUNT, '/srv/data:/data:ro'), 'mount-volume': (T_MOUNT, 'cache:/var/cache/./x/'),
    'mount-rw': (T_MOUNT, '/home/u:/home//u:rw'),
    'tmpfs': (T_TMPFS, '/tmp:size=100M,mode=1777'), 'tmpfs-bare': (T_TMPFS, '/run'),
    'user-ids': (T_USER, '1000:1000'), 'user-name': (T_USER, 'nobody:nogroup'), 'user-uid': (T_USER, '0'),
    'port-v6': (T_PORT, '[::1]:8080:80/udp'), 'port-v4': (T_PORT, '127.0.0.1:80:8080'),
    'port-short': (T_PORT, '8080:80/TCP'),
    'normalize': (T_NORMALIZE, '/a/./b/../c//d/'), 'normalize-up': (T_NORMALIZE, '/../../x/..'),
    'env': (T_ENV, 'PATH=/usr/bin:/bin'), 'env-empty-value': (T_ENV, '_X1='),
}
# T_JSON_GET: byte 1 picks the key (0: "name", 1: "pid", 4: "state"); the rest is the text.
JSON_SEEDS = {
    'json-state-name': (0, '{"name": "box1", "pid": 4242, "state": "running", "detached": true}'),
    'json-state-pid': (1, '{"name":"a\\u00e9\\ud83d\\ude00","pid":-12,"x":[1,2.5e3,{"y":null}]}'),
    'json-escapes': (4, '{ "state" : "line\\nnext \\"q\\" \\\\ \\/" , "n" : 0 }'),
}

# fuzz_messages: selector 0xe0 (even) is PORT_ADD, 0xe1 (odd) PORT_REMOVE; 0xcc FWD_CONNECT.
PORT_SEEDS = {
    'port-add': (0xe0, s(1, '127.0.0.1') + u32(2, 8080) + u32(3, 80) + u32(4, 0)),
    'port-add-v6': (0xe0, s(1, '::1') + u32(2, 9000) + u32(3, 9000)),
    'port-add-udp': (0xe0, s(1, '0.0.0.0') + u32(2, 53) + u32(3, 53) + u32(4, 1)),
    'port-remove': (0xe1, s(1, '127.0.0.1') + u32(2, 8080)),
    # 0xcc: a vm's FWD_CONNECT.
    'fwd-connect': (0xcc, u32(1, 8080)),
    'fwd-connect-port0': (0xcc, u32(1, 0)),
    # 0xa0: a vm's DNS_QUERY (client address, port, datagram); 0xa1: EGRESS (elements of 10
    # bytes: address, port, TTL; then the answer); 0xa2: EGRESS_USED.
    'dns-query': (0xa0, u32(1, 0x0100007f) + u32(2, 40000) + field(3, bytes.fromhex('12340100000100000000000003617070076361707375'
                                                                                  '6c65047465737400000100 01'.replace(' ', '')))),
    'egress': (0xa1, field(4, bytes([192, 0, 2, 1]) + struct.pack('<HI', 443, 0))
               + field(5, bytes([192, 0, 2, 1]) + struct.pack('<HI', 443, 60))
               + field(5, bytes([198, 51, 100, 9]) + struct.pack('<HI', 0, 3600))
               + u32(1, 0x0100007f) + u32(2, 40000) + field(3, b'\x12\x34\x81\x80')),
    'egress-add-ttl0': (0xa1, field(5, bytes([192, 0, 2, 1]) + struct.pack('<HI', 0, 0))),
    'egress-cidrs': (0xa1, u32(8, 1) + field(9, bytes([192, 0, 2, 0, 24]) + struct.pack('<H', 0))
                     + field(9, bytes([10, 0, 2, 2, 32]) + struct.pack('<H', 8000))),
    'egress-cidrs-host-bits': (0xa1, u32(8, 1) + field(9, bytes([192, 0, 2, 1, 24, 0, 0]))),
    'egress-used': (0xa2, u64(6, 1 << 20) + u64(7, 4096)),
    # 0xce: WATCH (path, flags 1 recursive); 0xcf: WATCH event records.
    'watch': (0xce, s(1, '/work') + u32(2, 1)),
    'watch-relative': (0xce, s(1, 'work')),
    'watch-events': (0xcf, record(u32(1, 1) + s(2, '/work/a') + u64(4, 1700000000000000000) + u32(5, 0))
                     + record(u32(1, 4) + s(2, '/work/b') + s(3, '/work/a') + u64(4, 1))
                     + record(u32(1, 5) + u64(4, 2))),
    'watch-events-move-without-from': (0xcf, record(u32(1, 4) + s(2, '/work/b'))),
    # 0xd8: PAUSE (op 1 pause, 2 resume; 3 is refused).
    'pause': (0xd8, u32(1, 1)),
    'resume': (0xd8, u32(1, 2)),
    'pause-bad-op': (0xd8, u32(1, 3)),
}

# fuzz_messages: selectors 0xc0, 0xc1, 0xc2 (byte % 3) are VM_MOUNT, VM_UNMOUNT, VM_MOUNTED.
VM_MOUNT_SEEDS = {
    'vm-mount-share': (0xc0, u32(1, 1) + s(2, 'b0') + s(3, '/mnt/data') + u32(4, 1)),
    'vm-mount-file': (0xc0, u32(1, 1) + s(2, 'm3') + s(3, '/etc/app.conf') + u32(4, 2 | 4)),
    'vm-mount-tmpfs': (0xc0, u32(1, 2) + s(3, '/scratch') + u32(4, 0) + u64(5, 8 << 20) + u32(6, 0o1777)),
    'vm-unmount': (0xc1, s(1, '/mnt/hot') + u64(2, 42)),
    'vm-mounted': (0xc2, u64(1, 42)),
}


# fuzz_cgroup_layout: mountinfo, NUL, /proc/self/cgroup. The real hybrid host of
# tests/unit/fixtures/cgroup, and the shapes of the other layouts.
UNIFIED_MI = '22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n' \
             '30 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 ' \
             'rw,nsdelegate,memory_recursiveprot\n'
CGROUP_SEEDS = {
    'unified-nsdelegate': (UNIFIED_MI, '0::/user.slice/user-1000.slice/session-2.scope\n'),
    'v1-only': ('22 1 8:1 / / rw - ext4 /dev/sda1 rw\n'
                '24 22 0:21 / /sys/fs/cgroup ro - tmpfs tmpfs ro,mode=755\n'
                '26 24 0:23 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n'
                '27 24 0:24 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n'
                '28 24 0:25 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n',
                '4:memory:/user.slice\n2:cpu,cpuacct:/\n'),
    'container-root': ('40 1 0:50 / / rw - overlay overlay rw\n'
                       '43 40 0:26 /machine/c1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n'
                       '44 40 0:30 / /mnt/a\\040b rw - tmpfs  rw\n', '0::/machine/c1/app\n'),
    'garbage': ('22 1 8:1 / / rw - ext4\nhello\n', 'x:y\n'),
}


def write(path, data):
    with open(path, 'wb') as f:
        f.write(data)


# fuzz_image: byte 0 % 4 picks the parser (0 manifest/index, 1 image config, 2 challenge, 3 ref).
_D = ['sha256:' + c * 64 for c in '123']
IMAGE_SEEDS = {
    'manifest-docker': (0, '{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",'
                           '"config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"%s",'
                           '"size":1469},"layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip",'
                           '"digest":"%s","size":3401613}]}' % (_D[0], _D[1])),
    'manifest-oci-zstd': (0, '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":'
                             '{"digest":"%s","size":2},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar'
                             '+zstd","digest":"%s","size":5,"annotations":{"a":"b"}}]}' % (_D[0], _D[2])),
    'index-multi': (0, '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":['
                       '{"digest":"%s","size":1,"platform":{"os":"linux","architecture":"arm64","variant":"v8"}},'
                       '{"digest":"%s","size":1,"platform":{"os":"linux","architecture":"amd64"}}]}' % (_D[0], _D[1])),
    'config': (1, '{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/local/bin:/usr/bin","LANG=C.UTF-8"],'
                  '"Entrypoint":["/docker-entrypoint.sh"],"Cmd":["python3"],"WorkingDir":"/app","User":"1000:1000",'
                  '"Labels":{"x":"y"}},"rootfs":{"type":"layers","diff_ids":["%s"]}}' % _D[0]),
    'config-nulls': (1, '{"config":{"Env":null,"Cmd":null,"Entrypoint":[],"WorkingDir":"","User":null}}'),
    'challenge-bearer': (2, 'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
                            'scope="repository:library/alpine:pull"'),
    'challenge-basic': (2, 'Basic realm="registry"'),
    'challenge-escapes': (2, 'bearer realm = https://r/t , error="insufficient_scope", scope="a\\"b"'),
    'ref-short': (3, 'alpine:3.20'),
    'ref-registry': (3, 'localhost:5000/team/tool:1.2'),
    'ref-digest': (3, 'reg.example.com/a/b@' + _D[2]),
    'ref-loopback-v4': (3, '127.1.2.3:5000/x:y'),
    'ref-loopback-v6': (3, '[::1]:5000/x:y'),
    'ref-loopback-lookalike': (3, 'localhost.example.net:5000/x:y'),
}


def dns_name(name):
    return b''.join(bytes([len(l)]) + l.encode() for l in name.split('.')) + b'\0'


def dns_header(qid, flags, qd, an, ns=0, ar=0):
    return struct.pack('>HHHHHH', qid, flags, qd, an, ns, ar)


def dns_a(owner, addr, ttl=60):
    return owner + struct.pack('>HHIH', 1, 1, ttl, 4) + bytes(addr)


QUESTION = dns_name('app.capsule.test') + struct.pack('>HH', 1, 1)
# fuzz_dns: byte 0 even: a query from the sandbox; odd: an upstream answer to
# "app.capsule.test" A with id 0x1234.
DNS_SEEDS = {
    'query-a': b'\0' + dns_header(7, 0x0100, 1, 0) + QUESTION,
    'query-aaaa-edns': b'\0' + dns_header(8, 0x0100, 1, 0, 0, 1) + dns_name('app.capsule.test')
    + struct.pack('>HH', 28, 1) + b'\0' + struct.pack('>HHIH', 41, 1232, 0, 0),
    'query-pointer': b'\0' + dns_header(9, 0x0100, 1, 0) + b'\xc0\x0c' + struct.pack('>HH', 1, 1),
    'query-long-label': b'\0' + dns_header(10, 0x0100, 1, 0) + bytes([63]) + b'a' * 63 + b'\0' + struct.pack('>HH', 1, 1),
    'answer-two-a': b'\1' + dns_header(0x1234, 0x8180, 1, 2) + QUESTION + dns_a(b'\xc0\x0c', [10, 0, 2, 2])
    + dns_a(b'\xc0\x0c', [192, 0, 2, 7], 5),
    'answer-cname-chain': b'\1' + dns_header(0x1234, 0x8180, 1, 2) + QUESTION
    + b'\xc0\x0c' + struct.pack('>HHIH', 5, 1, 30, 6) + b'\x03cdn\xc0\x10'
    + dns_a(b'\xc0\x2e', [192, 0, 2, 9]),
    'answer-other-owner': b'\1' + dns_header(0x1234, 0x8180, 1, 1) + QUESTION
    + dns_a(dns_name('evil.example'), [192, 0, 2, 66]),
    'answer-pointer-loop': b'\1' + dns_header(0x1234, 0x8180, 1, 1) + QUESTION + b'\xc0\x22'
    + struct.pack('>HHIH', 1, 1, 60, 4) + bytes(4),
    'answer-nxdomain': b'\1' + dns_header(0x1234, 0x8183, 1, 0) + QUESTION,
    'answer-ttl-top-bit': b'\1' + dns_header(0x1234, 0x8180, 1, 1) + QUESTION
    + dns_a(b'\xc0\x0c', [192, 0, 2, 1], 0x80000001),
    'answer-rdlen-past-end': b'\1' + dns_header(0x1234, 0x8180, 1, 1) + QUESTION + b'\xc0\x0c'
    + struct.pack('>HHIH', 1, 1, 60, 400) + bytes(4),
}


# fuzz_oci: byte 0 even: a config.json; odd: a process.json (exec --process).
OCI_PROCESS = {"terminal": False, "user": {"uid": 0, "gid": 0, "additionalGids": [5, 7]}, "args": ["sh", "-c", "true"],
               "env": ["PATH=/bin", "TERM=xterm"], "cwd": "/",
               "capabilities": {k: ["CAP_KILL", "CAP_CHOWN"] for k in ("bounding", "effective", "permitted")},
               "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}], "noNewPrivileges": True,
               "oomScoreAdj": 0, "consoleSize": {"height": 24, "width": 80}}
OCI_CONFIG = {
    "ociVersion": "1.1.0", "process": OCI_PROCESS, "root": {"path": "rootfs", "readonly": True}, "hostname": "h",
    "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
               {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
               {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m", "mode=1777"]},
               {"destination": "/data", "type": "bind", "source": "/tmp", "options": ["rbind", "ro"]},
               {"destination": "/data/t", "type": "tmpfs", "source": "tmpfs"}],
    "annotations": {"capsule.isolation": "container", "other": "x"},
    "linux": {
        "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount", "cgroup")],
        "resources": {"devices": [{"allow": False, "access": "rwm"}, {"allow": True, "type": "c", "major": 1,
                                                                      "minor": 3, "access": "rwm"}],
                      "memory": {"limit": 67108864}, "pids": {"limit": 100}, "cpu": {"quota": 50000, "period": 100000}},
        "maskedPaths": ["/proc/kcore", "/sys/firmware"], "readonlyPaths": ["/proc/sys"],
        "seccomp": {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
                    "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
                    "syscalls": [{"names": ["read", "write", "exit_group", "nosuchcall"], "action": "SCMP_ACT_ALLOW"},
                                 {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                                  "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
                                 {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]},
        "uidMappings": [{"containerID": 0, "hostID": 3000000, "size": 65536}],
        "gidMappings": [{"containerID": 0, "hostID": 3000000, "size": 65536}],
        "devices": [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 438, "uid": 0, "gid": 0},
                    {"path": "/dev/null", "type": "c", "major": 1, "minor": 3}, {"path": "/dev/p", "type": "p"}]}}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, 'corpus')
    dirs = {t: os.path.join(out, t) for t in ('fuzz_frame', 'fuzz_messages', 'fuzz_parse', 'fuzz_image',
                                              'fuzz_cgroup_layout', 'fuzz_dns')}
    for d in dirs.values():
        os.makedirs(d, exist_ok=True)

    # fuzz_messages: selector + payload.
    for name, (type_, payload) in PAYLOADS.items():
        write(os.path.join(dirs['fuzz_messages'], name), bytes([SELECTOR[type_]]) + payload)
    for name, payload in ENTRY_PAYLOADS.items():
        write(os.path.join(dirs['fuzz_messages'], name), bytes([SEL_FS_ENTRY]) + payload)
    for name, payload in RECORD_PAYLOADS.items():
        write(os.path.join(dirs['fuzz_messages'], name), bytes([SEL_FS_RECORDS]) + payload)
    for name, (sel, payload) in PORT_SEEDS.items():
        write(os.path.join(dirs['fuzz_messages'], name), bytes([sel]) + payload)
    for name, (sel, payload) in VM_MOUNT_SEEDS.items():
        write(os.path.join(dirs['fuzz_messages'], name), bytes([sel]) + payload)
        write(os.path.join(dirs['fuzz_frame'], 'one-' + name), bytes([0x02, 0, 0]) + frame(50 + sel % 3, payload))

    # fuzz_frame: mode byte, two size bytes, then the stream. Mode bits 0-1 choose the chunk
    # sizes; bits 2-4 all set put a generated DATA frame of the given size first.
    every = b''.join(frame(t, p, chan=i) for i, (t, p) in enumerate(PAYLOADS.values()))
    every += frame(OK, b'', chan=90) + frame(SHUTDOWN, b'', chan=0)
    every += frame(DATA, b'stdout bytes\n', chan=3, flags=1) + frame(DATA, b'', chan=3, flags=2 | FLAG_EOF)
    every += frame(OK, ENTRY_FILE, chan=91) + frame(DATA, RECORD_PAYLOADS['fs-records'], chan=92, flags=1 | FLAG_EOF)
    for name, (type_, payload) in PAYLOADS.items():
        write(os.path.join(dirs['fuzz_frame'], 'one-' + name), bytes([0x02, 0, 0]) + frame(type_, payload))
    for mode in range(4):
        write(os.path.join(dirs['fuzz_frame'], 'every-chunks%d' % mode), bytes([mode, 0, 0]) + every)
    write(os.path.join(dirs['fuzz_frame'], 'big-first-64k'),
          bytes([0x1f]) + struct.pack('<H', 0x8000) + every)
    write(os.path.join(dirs['fuzz_frame'], 'big-first-max'),
          bytes([0x1e]) + struct.pack('<H', 0xffff) + frame(STARTED, PAYLOADS['started'][1]))
    # A frame after which the header is corrupt (unknown type), and one over the size limit.
    write(os.path.join(dirs['fuzz_frame'], 'corrupt-type'),
          bytes([1, 0, 0]) + frame(STARTED, PAYLOADS['started'][1]) + struct.pack('<IHHI', 0, 0x7777, 0, 1))
    write(os.path.join(dirs['fuzz_frame'], 'corrupt-len'),
          bytes([1, 0, 0]) + struct.pack('<IHHI', MAX_PAYLOAD + 1, DATA, 1, 1) + b'x' * 16)
    write(os.path.join(dirs['fuzz_frame'], 'truncated'),
          bytes([0, 0, 0]) + frame(EXEC, PAYLOADS['exec'][1])[:-7])

    # fuzz_parse: selector + string.
    for name, (target, text) in PARSE_SEEDS.items():
        write(os.path.join(dirs['fuzz_parse'], name), bytes([target]) + text.encode())
    for name, (key, text) in JSON_SEEDS.items():
        write(os.path.join(dirs['fuzz_parse'], name), bytes([T_JSON_GET, key]) + text.encode())
    write(os.path.join(dirs['fuzz_parse'], 'json-round-trip'),
          bytes([T_JSON_ROUND_TRIP]) + struct.pack('<q', -1234567890123) + b'\x01' + b'name\x00caf\xc3\xa9 "x"\n')

    import json
    os.makedirs(os.path.join(out, 'fuzz_oci'), exist_ok=True)
    write(os.path.join(out, 'fuzz_oci', 'config'), b'\0' + json.dumps(OCI_CONFIG, sort_keys=True).encode())
    write(os.path.join(out, 'fuzz_oci', 'process'), b'\1' + json.dumps(OCI_PROCESS, sort_keys=True).encode())
    write(os.path.join(out, 'fuzz_oci', 'process-bad-cap'),
          b'\1' + json.dumps(dict(OCI_PROCESS, capabilities={"bounding": ["CAP_NOPE"]})).encode())
    write(os.path.join(out, 'fuzz_oci', 'config-refused'),
          b'\0' + json.dumps(dict(OCI_CONFIG, hooks={"prestart": [{"path": "/x"}]})).encode())

    for name, (target, text) in IMAGE_SEEDS.items():
        write(os.path.join(dirs['fuzz_image'], name), bytes([target]) + text.encode())

    fixtures = os.path.join(here, '..', 'unit', 'fixtures', 'cgroup')
    with open(os.path.join(fixtures, 'hybrid-debian12.mountinfo'), 'rb') as f:
        hybrid_mi = f.read()
    with open(os.path.join(fixtures, 'hybrid-debian12.cgroup'), 'rb') as f:
        hybrid_cg = f.read()
    write(os.path.join(dirs['fuzz_cgroup_layout'], 'hybrid-debian12'), hybrid_mi + b'\0' + hybrid_cg)
    for name, (mountinfo, cgroup) in CGROUP_SEEDS.items():
        write(os.path.join(dirs['fuzz_cgroup_layout'], name), mountinfo.encode() + b'\0' + cgroup.encode())
    for name, data in DNS_SEEDS.items():
        write(os.path.join(dirs['fuzz_dns'], name), data)


if __name__ == '__main__':
    main()
