"""Hostile and malformed bytes on the MQTT ports. Whatever arrives gets the spec's answer or
a closed connection, within a bounded time; the broker never dies, memory stays bounded, and
other clients keep working."""

from __future__ import annotations

import base64
import os
import random
import socket
import struct

import pytest

from mqtt_util import V5, Client, Raw, connect_packet, publish_packet


@pytest.fixture
def guarded(broker_factory):
    b = broker_factory(extra_args=["--mqtt-max-packet-size", "65536"])
    b.canary = Client(b.mqtt_port, client_id="canary")
    b.canary.subscribe("canary/#", qos=1)
    yield b
    # The broker is alive, the existing connection still works, memory stayed bounded.
    assert b.running(), "broker died"
    pub = Client(b.mqtt_port)
    pub.publish("canary/ping", b"still here", qos=1)
    assert b.canary.expect(1)[0].payload == b"still here"
    rss = b.rss_bytes()
    assert rss is None or rss < 300 * 1024 * 1024, f"RSS {rss}"


def test_random_bytes_are_closed(guarded):
    rng = random.Random(7)
    raws = []
    for _ in range(30):
        raw = Raw(guarded.mqtt_port)
        raw.send(rng.randbytes(rng.choice([1, 5, 64, 1000])))
        raws.append(raw)
    # Junk that could be the start of a CONNECT waits at most the CONNECT timeout (10 s).
    for raw in raws:
        assert raw.closed_within(12)
        raw.close()


def test_publish_before_connect_is_closed(guarded):
    raw = Raw(guarded.mqtt_port)
    raw.send(publish_packet("a/b", b"x", qos=1, pid=1))
    assert raw.closed_within(5)


def test_wrong_protocol_level_gets_connack_0x01(guarded):
    raw = Raw(guarded.mqtt_port)
    raw.send(connect_packet("lvl", level=7))
    assert raw.read_packet() == (0x20, b"\x00\x01")
    assert raw.closed_within(5)


def test_bad_protocol_name_is_closed(guarded):
    raw = Raw(guarded.mqtt_port)
    body = b"\x00\x02hj\x04\x02\x00\x3c\x00\x01x"
    raw.send(bytes([0x10, len(body)]) + body)
    assert raw.closed_within(5)


def test_second_connect_is_closed(guarded):
    raw = Raw(guarded.mqtt_port)
    raw.send(connect_packet("twice"))
    assert raw.read_packet()[0] == 0x20
    raw.send(connect_packet("twice"))
    assert raw.closed_within(5)


def test_wildcard_in_publish_topic(guarded):
    raw = Raw(guarded.mqtt_port)
    raw.send(connect_packet("wild"))
    assert raw.read_packet()[0] == 0x20
    raw.send(publish_packet("a/+/b", b"x", qos=1, pid=3))
    assert raw.closed_within(5)
    # MQTT 5 gets DISCONNECT 0x90 (topic name invalid) first.
    raw = Raw(guarded.mqtt_port)
    body = b"\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x02w5"
    raw.send(bytes([0x10, len(body)]) + body)
    assert raw.read_packet()[0] == 0x20
    topic = b"\x00\x03a/#"
    raw.send(bytes([0x32, len(topic) + 3]) + topic + b"\x00\x01\x00")
    assert raw.read_packet() == (0xE0, b"\x90\x00")


def test_oversized_and_lying_lengths(guarded):
    # Over the 64 KiB limit: 5.0 gets DISCONNECT 0x95 (packet too large).
    raw = Raw(guarded.mqtt_port)
    body = b"\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x02big"
    raw.send(bytes([0x10, len(body)]) + body)
    assert raw.read_packet()[0] == 0x20
    payload = os.urandom(100_000)
    raw.send(publish_packet("big/x", payload, qos=0)[:1] + b"\xa6\x8d\x06" + b"\x00\x05big/x" + payload[:1000])
    first, body = raw.read_packet()
    assert (first, body[:1]) == (0xE0, b"\x95")
    # A 3.1.1 header claiming 256 MB, then silence or a close: no allocation, a close.
    for claimed in [b"\xff\xff\xff\x7f", b"\xff\xff\xff\xff\xff"]:
        raw = Raw(guarded.mqtt_port)
        raw.send(connect_packet("liar"))
        assert raw.read_packet()[0] == 0x20
        raw.send(b"\x30" + claimed + b"\x00\x01a")
        assert raw.closed_within(5)


def test_truncated_packets_then_close(guarded):
    full = connect_packet("trunc")
    for cut in [1, 2, 5, len(full) - 1]:
        s = socket.create_connection(("127.0.0.1", guarded.mqtt_port), timeout=5)
        s.sendall(full[:cut])
        s.close()


def test_websocket_junk_and_frame_flood(guarded):
    port = guarded.mqtt_ws_port
    key = base64.b64encode(os.urandom(16)).decode()
    req = (
        f"GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
    ).encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(req)
    resp = s.recv(4096)
    assert b"101" in resp.split(b"\r\n")[0] and b"mqtt" in resp.lower()

    def frame(data, opcode=2):
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        n = len(data)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", n)
        return head + mask + masked

    # A flood of small junk frames: the first bytes are not a CONNECT, so it is closed.
    try:
        for _ in range(2000):
            s.sendall(frame(os.urandom(16)))
    except OSError:
        pass
    s.settimeout(10)
    try:
        while s.recv(65536):
            pass
    except (ConnectionResetError, socket.timeout):
        pass
    s.close()
    # A frame header claiming 2^40 bytes: refused, no allocation.
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(req)
    s.recv(4096)
    s.sendall(bytes([0x82, 0x80 | 127]) + struct.pack(">Q", 1 << 40) + os.urandom(4) + b"x" * 100)
    s.settimeout(10)
    try:
        while s.recv(65536):
            pass
    except (ConnectionResetError, socket.timeout):
        pass
    s.close()
    # Text frames are not MQTT.
    c = Client(port, version=V5, transport="websockets")
    c.close()
