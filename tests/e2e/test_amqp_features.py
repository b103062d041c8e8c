"""More of AMQP 0-9-1 with pika against the real broker: logins and virtual hosts from config,
publishers blocked by a resource alarm, alternate exchanges, message and consumer priorities,
prefetch round robin, heartbeat timeout, 10,000 confirms, every header field type round
trip, kill -9 redelivery, and Kafka/MQTT ↔ AMQP through bindings."""

from __future__ import annotations

import datetime
import decimal
import json
import socket
import struct
import threading
import time

import pika
import pytest
from kafka import KafkaProducer
from pika.exceptions import AMQPConnectionError, ProbableAuthenticationError

from broker import read_topic, wait_until
from mqtt_util import Client


def connect(b, user="guest", password="guest", vhost="/", **kw) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", b.amqp_port, vhost, pika.PlainCredentials(user, password), **kw))


def count(ch, q):
    return ch.queue_declare(queue=q, passive=True).method.message_count


def get_all(ch, q, n, timeout=20):
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        m, p, b = ch.basic_get(q, auto_ack=True)
        if m is None:
            time.sleep(0.02)
            continue
        out.append((m, p, b))
    assert len(out) == n, f"{len(out)} of {n} from {q}"
    return out


def test_logins_and_virtual_hosts_come_from_config(broker_factory):
    b = broker_factory(extra_args=["--amqp-users", "guest:guest,app:s3cret", "--amqp-vhosts", "/,/tenant"])
    connect(b, "app", "s3cret", "/tenant").close()
    with pytest.raises(ProbableAuthenticationError):
        connect(b, "app", "wrong")
    with pytest.raises(AMQPConnectionError):
        connect(b, "app", "s3cret", "/nope")
    assert "AMQP login refused" in b.log_text()


def test_a_disk_alarm_blocks_publishers_and_tells_them(broker_factory):
    # A free-space limit no disk has: the alarm is raised at once.
    b = broker_factory(extra_args=["--amqp-disk-free-limit", str(10**18)])
    conn = connect(b)
    blocked = []
    conn.add_on_connection_blocked_callback(lambda c, m: blocked.append(m.method.reason))
    ch = conn.channel()
    ch.queue_declare(queue="held")
    ch.basic_publish(exchange="", routing_key="held", body=b"first")
    deadline = time.monotonic() + 15
    while not blocked and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.2)
    assert blocked == ["low on disk"]
    other = connect(b).channel()  # a consumer-only connection is not blocked
    assert other.queue_declare(queue="held", passive=True).method.message_count <= 1


def test_alternate_exchange_takes_unroutable_messages(broker):
    ch = connect(broker).channel()
    ch.exchange_declare(exchange="ae", exchange_type="fanout")
    ch.exchange_declare(exchange="main", exchange_type="direct", arguments={"alternate-exchange": "ae"})
    ch.queue_declare(queue="routed", exclusive=True)
    ch.queue_bind(queue="routed", exchange="main", routing_key="known")
    ch.queue_declare(queue="unrouted", exclusive=True)
    ch.queue_bind(queue="unrouted", exchange="ae")
    ch.confirm_delivery()
    ch.basic_publish(exchange="main", routing_key="known", body=b"a", mandatory=True)
    ch.basic_publish(exchange="main", routing_key="other", body=b"b", mandatory=True)  # no return: the AE took it
    assert [x[2] for x in get_all(ch, "routed", 1)] == [b"a"]
    assert [x[2] for x in get_all(ch, "unrouted", 1)] == [b"b"]


def test_message_priorities_and_consumer_priorities(broker):
    conn = connect(broker)
    ch = conn.channel()
    ch.queue_declare(queue="prio", exclusive=True, arguments={"x-max-priority": 10})
    ch.confirm_delivery()
    for p in [1, 5, 20, 0, 9]:
        ch.basic_publish(exchange="", routing_key="prio", body=str(p).encode(),
                         properties=pika.BasicProperties(priority=p))
    assert [x[2] for x in get_all(ch, "prio", 5)] == [b"20", b"9", b"5", b"1", b"0"], "20 counts as 10"
    # Consumer priorities: the high one gets everything while it has room.
    ch.queue_declare(queue="cprio", exclusive=True)
    got = {"high": 0, "low": 0}
    ch.basic_consume("cprio", lambda c, m, p, b: got.__setitem__("low", got["low"] + 1), auto_ack=True,
                     arguments={"x-priority": 0})
    ch.basic_consume("cprio", lambda c, m, p, b: got.__setitem__("high", got["high"] + 1), auto_ack=True,
                     arguments={"x-priority": 10})
    for i in range(50):
        ch.basic_publish(exchange="", routing_key="cprio", body=b"x")
    deadline = time.monotonic() + 15
    while got["high"] + got["low"] < 50 and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.1)
    assert got == {"high": 50, "low": 0}
    conn.close()


def test_prefetch_one_round_robin_between_consumers(broker):
    conn = connect(broker)
    ch = conn.channel()
    ch.queue_declare(queue="rr", exclusive=True)
    ch.basic_qos(prefetch_count=1)
    seen = []

    def make(name):
        def cb(c, m, p, b):
            seen.append(name)
            c.basic_ack(m.delivery_tag)
        return cb

    ch.basic_consume("rr", make("a"))
    ch.basic_consume("rr", make("b"))
    for i in range(20):
        ch.basic_publish(exchange="", routing_key="rr", body=str(i).encode())
    deadline = time.monotonic() + 15
    while len(seen) < 20 and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.1)
    assert len(seen) == 20
    assert 7 <= seen.count("a") <= 13, f"both consumers share the work: {seen}"
    conn.close()


def test_a_silent_connection_is_closed_after_two_heartbeats(broker):
    s = socket.create_connection(("127.0.0.1", broker.amqp_port), timeout=10)

    def frame(ftype, ch, payload):
        return struct.pack(">BHI", ftype, ch, len(payload)) + payload + b"\xce"

    def method(ch, cls, mid, args=b""):
        return frame(1, ch, struct.pack(">HH", cls, mid) + args)

    s.sendall(b"AMQP\x00\x00\x09\x01")
    s.recv(65536)  # start
    s.sendall(method(0, 10, 11, struct.pack(">I", 0) + b"\x05PLAIN" + struct.pack(">I", 12) + b"\x00guest\x00guest" + b"\x05en_US"))
    s.recv(65536)  # tune
    s.sendall(method(0, 10, 31, struct.pack(">HIH", 2047, 131072, 1)))  # heartbeat 1 s
    s.sendall(method(0, 10, 40, b"\x01/\x00\x00"))
    start = time.monotonic()
    s.settimeout(10)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    waited = time.monotonic() - start
    assert 1.5 <= waited <= 6, f"closed after {waited:.1f} s"
    assert b"\x08\x00\x00\x00\x00\x00\x00\xce" in data, "the broker sent heartbeats meanwhile"


def test_ten_thousand_confirmed_persistent_messages(broker):
    ch = connect(broker).channel()
    ch.queue_declare(queue="many", durable=True)
    ch.confirm_delivery()
    for i in range(10_000):
        ch.basic_publish(exchange="", routing_key="many", body=b"%d" % i,
                         properties=pika.BasicProperties(delivery_mode=2))
    assert count(ch, "many") == 10_000


def test_every_header_field_type_round_trips(broker):
    ch = connect(broker).channel()
    ch.queue_declare(queue="types", exclusive=True)
    headers = {
        "str": "text", "int": 42, "neg": -7, "big": 1 << 40, "bool": True, "none": None,
        "bytes": b"\x00\x01", "decimal": decimal.Decimal("3.14"),
        "time": datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc), "list": [1, "two", [3]], "table": {"a": {"b": 1}},
    }
    props = pika.BasicProperties(
        content_type="application/json", content_encoding="utf-8", headers=headers, delivery_mode=2,
        priority=3, correlation_id="c", reply_to="r", expiration="60000", message_id="m",
        timestamp=1_700_000_000, type="t", user_id="guest", app_id="a", cluster_id="cl")
    ch.basic_publish(exchange="", routing_key="types", body=b"x", properties=props)
    (_, p, _), = get_all(ch, "types", 1)
    for k in ["content_type", "content_encoding", "delivery_mode", "priority", "correlation_id", "reply_to",
              "expiration", "message_id", "timestamp", "type", "user_id", "app_id", "cluster_id"]:
        assert getattr(p, k) == getattr(props, k), k
    got = dict(p.headers)
    assert got["bytes"] in (b"\x00\x01", "\x00\x01")
    got["bytes"] = b"\x00\x01"
    assert got == headers


def test_kill9_redelivers_unacked_and_never_acked_messages(broker_factory):
    b = broker_factory()
    ch = connect(b).channel()
    ch.queue_declare(queue="k9", durable=True)
    ch.confirm_delivery()
    for i in range(20):
        ch.basic_publish(exchange="", routing_key="k9", body=b"%d" % i, properties=pika.BasicProperties(delivery_mode=2))
    acked, unacked = [], []
    for i in range(10):
        m, _, body = ch.basic_get("k9")
        if i < 5:
            ch.basic_ack(m.delivery_tag)
            acked.append(body)
        else:
            unacked.append(body)
    ch.queue_declare(queue="k9", durable=True, passive=True)  # a round trip: the acks are in
    b.kill9()
    b.start()
    ch = connect(b).channel()
    got = get_all(ch, "k9", 15)
    bodies = [x[2] for x in got]
    assert not set(acked) & set(bodies), "acknowledged messages do not come back"
    assert bodies[:5] == unacked and all(m.redelivered for m, _, _ in got[:5]), "unacked come back first, redelivered"
    assert bodies[5:] == [b"%d" % i for i in range(10, 20)] and not any(m.redelivered for m, _, _ in got[5:])


def test_kafka_mqtt_and_amqp_meet_through_bindings(broker):
    ch = connect(broker).channel()
    for q, key in [("exact", "eu.new"), ("star", "eu.*"), ("all", "#")]:
        ch.queue_declare(queue=q, exclusive=True)
        ch.queue_bind(queue=q, exchange="orders", routing_key=key)  # binding first: `orders` is declared
    ch.queue_declare(queue="alerts-high", exclusive=True)
    ch.queue_bind(queue="alerts-high", exchange="alerts", routing_key="high")
    prod = KafkaProducer(bootstrap_servers=broker.bootstrap)
    prod.send("orders.eu.new", b'{"id": 1}', headers=[("trace", b"t-9")]).get(timeout=30)
    for q in ["exact", "star", "all"]:
        (m, p, body), = get_all(ch, q, 1)
        assert (body, m.exchange, m.routing_key, p.headers) == (b'{"id": 1}', "orders", "eu.new", {"trace": "t-9"}), q
    # AMQP → Kafka.
    ch.basic_publish(exchange="orders", routing_key="us.new", body=b"us",
                     properties=pika.BasicProperties(content_type="text/plain", headers={"h": "v"}))
    recs, _ = read_topic(broker.bootstrap, "orders.us.new")
    assert [r.value for r in recs] == [b"us"]
    assert dict(recs[0].headers)["content-type"] == b"text/plain" and dict(recs[0].headers)["h"] == b"v"
    # MQTT → AMQP.
    pub = Client(broker.mqtt_port)
    pub.publish("alerts/high", b"fire", qos=1)
    (m, _, body), = get_all(ch, "alerts-high", 1)
    assert (body, m.exchange, m.routing_key) == (b"fire", "alerts", "high")
    pub.close()
    prod.close()
