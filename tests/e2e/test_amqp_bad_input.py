"""Hostile and malformed bytes on the AMQP port. Whatever arrives gets AMQP's answer
(`connection.close` / `channel.close` with the spec's reply code) or a closed connection,
within a bounded time; the broker never dies, never buffers what a frame header merely
claims, and other clients keep working."""

from __future__ import annotations

import random
import socket
import struct
import time

import pika
import pytest

HEADER = b"AMQP\x00\x00\x09\x01"
END = b"\xce"


def frame(ftype: int, channel: int, payload: bytes) -> bytes:
    return struct.pack(">BHI", ftype, channel, len(payload)) + payload + END


def method(channel: int, cls: int, mid: int, args: bytes = b"") -> bytes:
    return frame(1, channel, struct.pack(">HH", cls, mid) + args)


def sstr(s: bytes) -> bytes:
    return bytes([len(s)]) + s


def lstr(s: bytes) -> bytes:
    return struct.pack(">I", len(s)) + s


def table(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def nested(depth: int) -> bytes:
    t = table(b"")
    for _ in range(depth):
        t = table(b"\x01kF" + t)
    return t


class Raw:
    """A raw AMQP client socket that reads whole frames."""

    def __init__(self, port: int):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def send(self, data: bytes):
        self.s.sendall(data)

    def _fill(self, n: int, timeout: float) -> bool:
        self.s.settimeout(timeout)
        while len(self.buf) < n:
            try:
                chunk = self.s.recv(65536)
            except (socket.timeout, ConnectionResetError):
                return False
            if not chunk:
                return False
            self.buf += chunk
        return True

    def read_frame(self, timeout: float = 10):
        """(type, channel, payload) of the next frame, or None at EOF/timeout."""
        if not self._fill(7, timeout):
            return None
        ftype, ch, size = struct.unpack(">BHI", self.buf[:7])
        if not self._fill(7 + size + 1, timeout):
            return None
        payload = self.buf[7 : 7 + size]
        self.buf = self.buf[7 + size + 1 :]
        return ftype, ch, payload

    def read_method(self, timeout: float = 10):
        """(channel, class, method, args) of the next method frame, skipping heartbeats."""
        while True:
            f = self.read_frame(timeout)
            if f is None:
                return None
            ftype, ch, p = f
            if ftype == 1:
                cls, mid = struct.unpack(">HH", p[:4])
                return ch, cls, mid, p[4:]

    def handshake(self, open_channel: bool = True):
        self.send(HEADER)
        assert self.read_method()[1:3] == (10, 10)  # start
        self.send(method(0, 10, 11, table(b"") + sstr(b"PLAIN") + lstr(b"\x00guest\x00guest") + sstr(b"en_US")))
        assert self.read_method()[1:3] == (10, 30)  # tune
        self.send(method(0, 10, 31, struct.pack(">HIH", 2047, 131072, 0)))
        self.send(method(0, 10, 40, sstr(b"/") + sstr(b"") + b"\x00"))
        assert self.read_method()[1:3] == (10, 41)  # open-ok
        if open_channel:
            self.send(method(1, 20, 10, sstr(b"")))
            assert self.read_method()[1:3] == (20, 11)
        return self

    def expect_close(self, cls: int, code: int):
        """The next method is `cls`.close (10 connection, 20 channel) with `code`."""
        m = self.read_method()
        assert m is not None, "connection dropped without a close method"
        ch, c, mid, args = m
        assert (c, mid) == (cls, 40 if cls == 20 else 50), f"got {c}.{mid}"
        got = struct.unpack(">H", args[:2])[0]
        text = args[3 : 3 + args[2]].decode()
        assert got == code, f"reply {got} {text}"
        return ch, text

    def closed_within(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.read_frame(timeout=max(0.1, deadline - time.monotonic())) is None:
                return True
        return False

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


@pytest.fixture
def guarded(broker_factory):
    b = broker_factory()
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.amqp_port))
    ch = conn.channel()
    ch.queue_declare(queue="canary")
    b.canary = (conn, ch)
    yield b
    assert b.running(), "broker died"
    ch.basic_publish(exchange="", routing_key="canary", body=b"still here")
    _, _, body = ch.basic_get("canary", auto_ack=True)
    assert body == b"still here", "an existing connection keeps working"
    conn.close()
    rss = b.rss_bytes()
    assert rss is None or rss < 300 * 1024 * 1024, f"RSS {rss}"


def test_other_protocol_headers_get_ours_and_a_close(guarded):
    for hdr in [b"AMQP\x00\x00\x08\x00", b"AMQP\x01\x01\x00\x0a", b"GET / HTTP/1.1\r\n\r\n", b"\x16\x03\x01\x02\x00\x01"]:
        r = Raw(guarded.amqp_port)
        r.send(hdr.ljust(8, b"\x00"))
        assert r._fill(8, 10) and r.buf[:8] == HEADER
        assert r.closed_within(10)
        r.close()


def test_random_bytes_and_truncated_frames_are_closed(guarded):
    rng = random.Random(11)
    for n in [1, 7, 64, 1000]:
        r = Raw(guarded.amqp_port)
        r.send(rng.randbytes(n))
        assert r.closed_within(15)
        r.close()
    r = Raw(guarded.amqp_port).handshake()
    r.send(method(1, 50, 10, b"\x00")[:9])  # a frame cut short, then the client leaves
    r.close()


def test_a_huge_frame_size_is_refused_before_buffering(guarded):
    r = Raw(guarded.amqp_port)
    r.send(HEADER)
    assert r.read_method()[1:3] == (10, 10)
    # Before tune-ok the limit is 8192; this header claims 4 GiB.
    r.send(struct.pack(">BHI", 1, 0, 0xFFFFFFFF) + b"x" * 100)
    r.expect_close(10, 501)
    r.close()
    r = Raw(guarded.amqp_port).handshake()
    r.send(struct.pack(">BHI", 3, 1, 10_000_000))
    r.expect_close(10, 501)
    r.close()


def test_deeply_nested_tables_do_not_crash_the_broker(guarded):
    # Unauthenticated: a start-ok whose client properties nest 1200 deep (7 KB).
    r = Raw(guarded.amqp_port)
    r.send(HEADER)
    assert r.read_method()[1:3] == (10, 10)
    r.send(method(0, 10, 11, nested(1200) + sstr(b"PLAIN") + lstr(b"\x00g\x00g") + sstr(b"en_US")))
    r.expect_close(10, 501)
    r.close()
    # Authenticated: queue.declare arguments and a content header's headers table.
    r = Raw(guarded.amqp_port).handshake()
    r.send(method(1, 50, 10, b"\x00\x00" + sstr(b"q") + b"\x00" + nested(10_000)[:120_000]))
    r.expect_close(10, 501)
    r.close()
    r = Raw(guarded.amqp_port).handshake()
    r.send(method(1, 60, 40, b"\x00\x00" + sstr(b"") + sstr(b"canary") + b"\x00"))
    props = struct.pack(">H", 0x2000) + nested(3000)
    r.send(frame(2, 1, struct.pack(">HHQ", 60, 0, 1) + props))
    r.expect_close(10, 501)
    r.close()


def test_sequence_errors_get_their_reply_codes(guarded):
    port = guarded.amqp_port
    # Unknown method.
    r = Raw(port).handshake()
    r.send(method(1, 60, 99))
    r.expect_close(10, 540)
    r.close()
    # A method on a channel that was never opened.
    r = Raw(port).handshake(open_channel=False)
    r.send(method(5, 50, 10, b"\x00\x00" + sstr(b"q") + b"\x00" + table(b"")))
    r.expect_close(10, 504)
    r.close()
    # A content header with no publish before it.
    r = Raw(port).handshake()
    r.send(frame(2, 1, struct.pack(">HHQH", 60, 0, 3, 0)))
    r.expect_close(10, 505)
    r.close()
    # More body than the header announced.
    r = Raw(port).handshake()
    r.send(method(1, 60, 40, b"\x00\x00" + sstr(b"") + sstr(b"canary") + b"\x00"))
    r.send(frame(2, 1, struct.pack(">HHQH", 60, 0, 3, 0)))
    r.send(frame(3, 1, b"toolong"))
    r.expect_close(10, 501)
    r.close()
    # A heartbeat on a channel.
    r = Raw(port).handshake()
    r.send(frame(8, 1, b""))
    r.expect_close(10, 505)
    r.close()
    # A body larger than the broker takes: the channel is closed (406), the connection lives.
    r = Raw(port).handshake()
    r.send(method(1, 60, 40, b"\x00\x00" + sstr(b"") + sstr(b"canary") + b"\x00"))
    r.send(frame(2, 1, struct.pack(">HHQH", 60, 0, 1 << 40, 0)))
    ch, text = r.expect_close(20, 406)
    assert ch == 1 and "larger than configured max size" in text
    r.send(method(1, 20, 41))  # close-ok
    r.send(method(2, 20, 10, sstr(b"")))
    assert r.read_method()[1:3] == (20, 11), "the connection still works"
    r.close()
    # A bad vhost is refused after tune (530), like RabbitMQ.
    r = Raw(port)
    r.send(HEADER)
    r.read_method()
    r.send(method(0, 10, 11, table(b"") + sstr(b"PLAIN") + lstr(b"\x00guest\x00guest") + sstr(b"en_US")))
    r.read_method()
    r.send(method(0, 10, 31, struct.pack(">HIH", 2047, 131072, 0)))
    r.send(method(0, 10, 40, sstr(b"/nope") + sstr(b"") + b"\x00"))
    r.expect_close(10, 530)
    r.close()
