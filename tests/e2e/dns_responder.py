"""A small authoritative DNS responder for the egress tests: UDP on the host's 127.0.0.1, a
table of names the test changes while it runs (name -> (addresses, ttl)), NXDOMAIN for the
rest. It counts the queries it saw, so a test can tell whether one reached it."""
import socket
import struct
import threading

try:
    import pytest
except ImportError:  # bench/egress-dns uses the responder, with the standard library only
    pytest = None

# Resolve a name inside a sandbox (python3 -c RESOLVE NAME): its addresses, or "ERR <gaierror>".
RESOLVE = """
import socket, sys
try:
    print(" ".join(sorted({a[4][0] for a in socket.getaddrinfo(sys.argv[1], 80, socket.AF_INET)})))
except socket.gaierror as e:
    print("ERR", e.errno)
"""


def encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def decode_question(packet):
    """(id, name, qtype, end offset) of a query's first question; no compression."""
    qid, = struct.unpack(">H", packet[:2])
    off, labels = 12, []
    while packet[off]:
        n = packet[off]
        labels.append(packet[off + 1:off + 1 + n].decode())
        off += 1 + n
    qtype, = struct.unpack(">H", packet[off + 1:off + 3])
    return qid, ".".join(labels).lower(), qtype, off + 5


class DnsResponder:
    def __init__(self):
        self.records = {}
        self.queries = []
        self.raw_reply = None  # bytes, or a function of the query: sent as is instead
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.2)
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    def set(self, name, addresses, ttl=60):
        self.records[name.lower()] = (list(addresses), ttl)

    def _answer(self, packet):
        qid, name, qtype, end = decode_question(packet)
        self.queries.append((name, qtype))
        if self.raw_reply is not None:
            return self.raw_reply(packet) if callable(self.raw_reply) else self.raw_reply
        rec = self.records.get(name)
        rcode = 0 if rec else 3
        answers = b""
        count = 0
        if rec and qtype == 1:
            for a in rec[0]:
                answers += b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, rec[1], 4) + socket.inet_aton(a)
                count += 1
        header = struct.pack(">HHHHHH", qid, 0x8180 | rcode, 1, count, 0, 0)
        return header + packet[12:end] + answers

    def _serve(self):
        while not self._stop:
            try:
                packet, peer = self.sock.recvfrom(2048)
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                reply = self._answer(packet)
            except (IndexError, struct.error, UnicodeDecodeError):
                continue
            if reply:
                self.sock.sendto(reply, peer)

    def close(self):
        self._stop = True
        self.thread.join(timeout=5)
        self.sock.close()


if pytest:
    @pytest.fixture
    def dns():
        """A DnsResponder for one test."""
        d = DnsResponder()
        yield d
        d.close()
