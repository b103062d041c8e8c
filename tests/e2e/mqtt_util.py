"""Helpers for the MQTT end-to-end tests: paho-mqtt 2.x clients with bounded waits, and a
tiny raw MQTT 3.1.1 client for what a library hides (exact packets, dropped connections)."""

from __future__ import annotations

import queue
import socket
import struct
import threading
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes

from broker import Deadline

V311 = mqtt.MQTTv311
V5 = mqtt.MQTTv5


class Client:
    """A paho-mqtt client whose received messages land in a queue."""

    def __init__(self, port, client_id=None, version=V5, clean=True, transport="tcp",
                 session_expiry=None, keepalive=60, will=None):
        self.version = version
        self.messages: "queue.Queue[mqtt.MQTTMessage]" = queue.Queue()
        self.client_id = client_id or f"c-{uuid.uuid4().hex[:8]}"
        kw = {}
        if version != V5:
            kw["clean_session"] = clean
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=version, transport=transport, **kw)
        self.c.on_message = lambda c, u, m: self.messages.put(m)
        self.connack = threading.Event()
        self.connack_rc = None
        self.session_present = None
        self.disconnected = threading.Event()

        def on_connect(c, u, flags, rc, props):
            self.connack_rc = rc
            self.session_present = flags.session_present
            self.connack_props = props
            self.connack.set()

        self.c.on_connect = on_connect
        self.c.on_disconnect = lambda *a: self.disconnected.set()
        if will:
            self.c.will_set(*will)
        props = None
        if version == V5:
            props = Properties(PacketTypes.CONNECT)
            if session_expiry is not None:
                props.SessionExpiryInterval = session_expiry
        if transport == "websockets":
            self.c.ws_set_options(path="/mqtt")
        self.c.connect("127.0.0.1", port, keepalive=keepalive,
                       clean_start=clean if version == V5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
                       properties=props)
        self.c.loop_start()
        assert self.connack.wait(10), "no CONNACK within 10 s"

    def subscribe(self, topic, qos=1, **opts):
        done = threading.Event()
        result = {}

        def on_subscribe(c, u, mid, codes, props):
            result["codes"] = codes
            done.set()

        self.c.on_subscribe = on_subscribe
        if self.version == V5 and opts:
            from paho.mqtt.subscribeoptions import SubscribeOptions
            o = SubscribeOptions(qos=qos, **opts)
            self.c.subscribe(topic, options=o)
        else:
            self.c.subscribe(topic, qos=qos)
        assert done.wait(10), "no SUBACK within 10 s"
        return [getattr(c, "value", c) for c in result["codes"]]

    def publish(self, topic, payload, qos=1, retain=False, props=None):
        info = self.c.publish(topic, payload, qos=qos, retain=retain, properties=props)
        info.wait_for_publish(10)
        assert info.is_published(), f"publish to {topic} not acknowledged"
        return info

    def expect(self, n, timeout=10):
        """The next `n` messages, in order (fails after `timeout` seconds)."""
        out = []
        d = Deadline(timeout)
        while len(out) < n:
            try:
                out.append(self.messages.get(timeout=max(0.01, d.remaining())))
            except queue.Empty:
                raise AssertionError(f"got {len(out)} of {n} messages within {timeout}s: "
                                     f"{[(m.topic, m.payload) for m in out]}")
        return out

    def nothing(self, seconds=0.5):
        """Asserts no message arrives for `seconds`."""
        try:
            m = self.messages.get(timeout=seconds)
        except queue.Empty:
            return
        raise AssertionError(f"unexpected message {m.topic} {m.payload!r}")

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


# ---------------------------------------------------------------- raw MQTT 3.1.1 client


def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _s(x):
    b = x.encode() if isinstance(x, str) else x
    return struct.pack(">H", len(b)) + b


def packet(kind_flags, body):
    return bytes([kind_flags]) + _varint(len(body)) + body


def connect_packet(client_id, clean=True, keepalive=60, level=4, will=None):
    flags = 0x02 if clean else 0
    payload = _s(client_id)
    if will:
        topic, msg, qos = will
        flags |= 0x04 | (qos << 3)
        payload += _s(topic) + _s(msg)
    return packet(0x10, _s("MQTT") + bytes([level, flags]) + struct.pack(">H", keepalive) + payload)


def publish_packet(topic, payload, qos=0, pid=None, dup=False, retain=False):
    flags = 0x30 | (qos << 1) | (0x08 if dup else 0) | (0x01 if retain else 0)
    body = _s(topic) + (struct.pack(">H", pid) if qos else b"") + payload
    return packet(flags, body)


class Raw:
    """A raw MQTT 3.1.1 connection: send bytes, read packets."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def read_packet(self, timeout=10):
        """(first byte, body) of the next packet, or None if the connection closed."""
        self.sock.settimeout(timeout)
        while True:
            if len(self.buf) >= 2:
                n, mult, i = 0, 1, 1
                while i < len(self.buf):
                    b = self.buf[i]
                    n += (b & 0x7F) * mult
                    mult *= 128
                    i += 1
                    if not b & 0x80:
                        break
                else:
                    i = None
                if i is not None and len(self.buf) >= i + n:
                    first, body = self.buf[0], self.buf[i:i + n]
                    self.buf = self.buf[i + n:]
                    return first, body
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk

    def closed_within(self, seconds):
        """True when the broker closes the connection within `seconds`."""
        d = Deadline(seconds)
        try:
            while not d.passed():
                if self.read_packet(timeout=max(0.05, d.remaining())) is None:
                    return True
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False
        return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
