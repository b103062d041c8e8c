"""MQTT 3.1.1 and 5.0 with paho-mqtt 2.x against the real broker: publish/subscribe at every
QoS, wildcards and $-topics, retained messages, wills, persistent sessions (also across a
restart and a kill -9), MQTT 5 properties, shared subscriptions, WebSocket, and the bridges
to Kafka both ways."""

from __future__ import annotations

import json
import struct
import time

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from broker import read_topic, wait_until
from mqtt_util import V311, V5, Client, Raw, connect_packet, publish_packet


@pytest.fixture
def mqtt_broker(broker_factory):
    return broker_factory(extra_args=["--mqtt-deny-subscribe", "test/nosubscribe"])


@pytest.mark.parametrize("version", [V311, V5], ids=["3.1.1", "5.0"])
def test_publish_subscribe_every_qos_in_order(mqtt_broker, version):
    sub = Client(mqtt_broker.mqtt_port, version=version)
    pub = Client(mqtt_broker.mqtt_port, version=version)
    assert sub.subscribe("sensors/+/temp", qos=2) == [2]
    for i in range(30):
        pub.publish(f"sensors/room{i % 3}/temp", f"m{i}".encode(), qos=i % 3)
    got = sub.expect(30)
    # Order holds per topic (paho hands a QoS 2 message over only after PUBREL, so across
    # topics of different QoS the client may reorder).
    for room in range(3):
        mine = [m for m in got if m.topic == f"sensors/room{room}/temp"]
        assert [m.payload for m in mine] == [f"m{i}".encode() for i in range(room, 30, 3)]
        assert {m.qos for m in mine} == {room}, "QoS is the publish QoS"
    sub.nothing(0.3)
    pub.close()
    sub.close()


def test_qos_is_downgraded_to_the_subscription_maximum(mqtt_broker):
    sub = Client(mqtt_broker.mqtt_port)
    pub = Client(mqtt_broker.mqtt_port)
    sub.subscribe("down/#", qos=0)
    pub.publish("down/x", b"q2", qos=2)
    assert [m.qos for m in sub.expect(1)] == [0]


def test_wildcards_and_dollar_topics(mqtt_broker):
    sub = Client(mqtt_broker.mqtt_port)
    sub.subscribe("#", qos=1)
    sub.subscribe("+/B", qos=1)
    pub = Client(mqtt_broker.mqtt_port)
    pub.publish("$TopicA/B", b"system", qos=1)  # acknowledged, matched by neither
    pub.publish("TopicA/B", b"plain", qos=1)
    got = sub.expect(1)
    assert got[0].payload == b"plain", "one copy for overlapping subscriptions"
    sub.nothing(0.5)
    direct = Client(mqtt_broker.mqtt_port)
    direct.subscribe("$TopicA/#", qos=1)
    pub.publish("$TopicA/B", b"system2", qos=1)
    assert direct.expect(1)[0].payload == b"system2"


def test_denied_subscription_gets_0x80_and_bad_filters_are_refused(mqtt_broker):
    for version in [V311, V5]:
        c = Client(mqtt_broker.mqtt_port, version=version)
        assert c.subscribe("test/nosubscribe", qos=1) == [0x80]
        assert c.subscribe("test/allowed", qos=1) == [1]
        c.close()
    # A malformed filter (paho refuses to send one, so raw bytes): SUBACK failure 0x80.
    raw = Raw(mqtt_broker.mqtt_port)
    raw.send(connect_packet("badfilter"))
    assert raw.read_packet()[0] == 0x20
    body = struct.pack(">H", 5) + b"\x00\x05a/#/b" + b"\x01"
    raw.send(bytes([0x82, len(body)]) + body)
    assert raw.read_packet() == (0x90, b"\x00\x05\x80")


def test_retained_messages_set_replace_clear_and_survive_restart(mqtt_broker):
    pub = Client(mqtt_broker.mqtt_port)
    pub.publish("state/lamp", b"on", qos=1, retain=True)
    pub.publish("state/lamp", b"off", qos=1, retain=True)  # replaces
    pub.publish("state/door", b"open", qos=1, retain=True)
    pub.publish("state/door", b"", qos=1, retain=True)  # clears
    s1 = Client(mqtt_broker.mqtt_port)
    s1.subscribe("state/#", qos=1)
    got = s1.expect(1)
    assert (got[0].topic, got[0].payload, got[0].retain) == ("state/lamp", b"off", True)
    s1.nothing(0.3)
    # Live messages to an existing subscription are not flagged retained.
    pub.publish("state/lamp", b"dim", qos=1, retain=True)
    m = s1.expect(1)[0]
    assert (m.payload, m.retain) == (b"dim", False)
    s1.close()
    pub.close()
    mqtt_broker.restart()
    s2 = Client(mqtt_broker.mqtt_port)
    s2.subscribe("state/+", qos=1)
    got = s2.expect(1)
    assert (got[0].topic, got[0].payload, got[0].retain) == ("state/lamp", b"dim", True)


def test_will_is_published_on_abnormal_loss_not_on_disconnect(mqtt_broker):
    watcher = Client(mqtt_broker.mqtt_port)
    watcher.subscribe("wills/#", qos=1)
    # A clean DISCONNECT discards the will.
    polite = Client(mqtt_broker.mqtt_port, version=V311, will=("wills/polite", b"gone", 1, False))
    polite.close()
    watcher.nothing(0.5)
    # A dropped connection publishes it.
    raw = Raw(mqtt_broker.mqtt_port)
    raw.send(connect_packet("dropper", will=("wills/dropped", b"lost", 1)))
    assert raw.read_packet()[0] == 0x20
    raw.close()
    m = watcher.expect(1)[0]
    assert (m.topic, m.payload) == ("wills/dropped", b"lost")
    # A silent client past 1.5 x its keep-alive is closed and its will published.
    quiet = Raw(mqtt_broker.mqtt_port)
    quiet.send(connect_packet("quiet", keepalive=1, will=("wills/quiet", b"timeout", 1)))
    assert quiet.read_packet()[0] == 0x20
    start = time.monotonic()
    assert quiet.closed_within(5), "the broker closes a client silent for 1.5 x keep-alive"
    assert 1.2 < time.monotonic() - start < 3.5
    assert watcher.expect(1)[0].payload == b"timeout"


def test_persistent_session_queues_while_away_and_across_restarts(mqtt_broker):
    sub = Client(mqtt_broker.mqtt_port, client_id="keeper", version=V311, clean=False)
    sub.subscribe("jobs/#", qos=1)
    sub.close()
    pub = Client(mqtt_broker.mqtt_port)
    for i in range(5):
        pub.publish(f"jobs/{i}", f"job{i}".encode(), qos=1)
    pub.publish("jobs/q0", b"not kept", qos=0)
    pub.close()
    # Across a clean restart, then a kill -9.
    mqtt_broker.restart()
    mqtt_broker.kill9()
    mqtt_broker.start()
    back = Client(mqtt_broker.mqtt_port, client_id="keeper", version=V311, clean=False)
    assert back.session_present
    got = back.expect(5)
    assert [m.payload for m in got] == [f"job{i}".encode() for i in range(5)]
    back.nothing(0.5)
    # The subscription itself survived too.
    pub = Client(mqtt_broker.mqtt_port)
    pub.publish("jobs/live", b"live", qos=1)
    assert back.expect(1)[0].payload == b"live"
    back.close()
    # A clean session forgets it all.
    fresh = Client(mqtt_broker.mqtt_port, client_id="keeper", version=V311, clean=True)
    assert not fresh.session_present


def test_v5_session_expiry_and_unacked_messages_come_back_marked_dup(mqtt_broker):
    port = mqtt_broker.mqtt_port
    raw = Raw(port)
    # MQTT 5 CONNECT with session expiry 300 s (raw, so PUBLISHes can go unacknowledged).
    props = bytes([0x11]) + struct.pack(">I", 300)
    body = b"\x00\x04MQTT\x05\x00\x00\x3c" + bytes([len(props)]) + props + b"\x00\x03dup"
    raw.send(bytes([0x10, len(body)]) + body)
    assert raw.read_packet()[0] == 0x20
    sub_props = b"\x00"
    sub = struct.pack(">H", 1) + sub_props + b"\x00\x05dup/#" + b"\x01"
    raw.send(bytes([0x82, len(sub)]) + sub)
    assert raw.read_packet()[0] == 0x90
    pub = Client(port)
    pub.publish("dup/a", b"first", qos=1)
    first, body = raw.read_packet()
    assert first & 0xF0 == 0x30 and not first & 0x08, "first delivery, DUP clear"
    raw.close()  # never acknowledged
    again = Client(port, client_id="dup", clean=False, session_expiry=300)
    assert again.session_present
    m = again.expect(1)[0]
    assert m.payload == b"first" and m.dup, "redelivered with DUP"
    again.close()


def test_mqtt5_properties_travel_and_become_kafka_headers(mqtt_broker):
    sub = Client(mqtt_broker.mqtt_port)
    sub.subscribe("devices/+/telemetry", qos=1)
    pub = Client(mqtt_broker.mqtt_port, client_id="d1")
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [("unit", "C"), ("site", "lab"), ("unit", "K")]
    props.ContentType = "application/json"
    props.ResponseTopic = "replies/d1"
    props.CorrelationData = b"\x00\x2a"
    props.PayloadFormatIndicator = 1
    props.MessageExpiryInterval = 600
    pub.publish("devices/d1/telemetry", b'{"t": 21.5}', qos=1, props=props)
    m = sub.expect(1)[0]
    p = m.properties
    assert p.UserProperty == [("unit", "C"), ("site", "lab"), ("unit", "K")]
    assert (p.ContentType, p.ResponseTopic, p.CorrelationData) == ("application/json", "replies/d1", b"\x00\x2a")
    assert p.PayloadFormatIndicator == 1
    assert 590 <= p.MessageExpiryInterval <= 600
    # Kafka reads the same record: value unchanged, properties as headers, keyed by client id.
    records, _ = read_topic(mqtt_broker.bootstrap, "devices.d1.telemetry")
    assert len(records) == 1
    r = records[0]
    assert r.value == b'{"t": 21.5}' and r.key == b"d1"
    headers = [(k, v) for k, v in r.headers]
    assert ("unit", b"C") in headers and ("unit", b"K") in headers and ("site", b"lab") in headers
    assert ("content-type", b"application/json") in headers
    assert ("reply-to", b"replies/d1") in headers
    assert ("correlation-id", b"\x00\x2a") in headers


def test_kafka_records_reach_mqtt_subscribers(mqtt_broker):
    sub = Client(mqtt_broker.mqtt_port, version=V311)
    sub.subscribe("sensors/temperature", qos=1)
    wide = Client(mqtt_broker.mqtt_port)
    wide.subscribe("sensors/#", qos=1)
    p = KafkaProducer(bootstrap_servers=[mqtt_broker.bootstrap], acks="all",
                      value_serializer=lambda v: json.dumps(v).encode())
    p.send("sensors.temperature", {"sensor": "s1", "value": 21.5},
           headers=[("unit", b"C")]).get(timeout=10)
    p.send("sensors.humidity", {"sensor": "s1", "value": 40}).get(timeout=10)
    p.close()
    m = sub.expect(1)[0]
    assert m.topic == "sensors/temperature"
    assert json.loads(m.payload) == {"sensor": "s1", "value": 21.5}
    got = wide.expect(2)
    assert sorted(x.topic for x in got) == ["sensors/humidity", "sensors/temperature"]
    temp = [x for x in got if x.topic == "sensors/temperature"][0]
    assert temp.properties.UserProperty == [("unit", "C")], "Kafka headers are user properties"


def test_mapping_rule_routes_many_topics_into_one_keyed_stream_and_back(broker_factory):
    b = broker_factory(extra_args=["--mqtt-mapping", "devices/+/telemetry=devices.telemetry",
                                   "--default-partitions", "4"])
    one = Client(b.mqtt_port)
    one.subscribe("devices/d7/telemetry", qos=1)
    pub = Client(b.mqtt_port, client_id="gateway")
    for d in ["d1", "d7", "d1"]:
        pub.publish(f"devices/{d}/telemetry", f"{d}".encode(), qos=1)
    assert [m.payload for m in one.expect(1)] == [b"d7"]
    records, _ = read_topic(b.bootstrap, "devices.telemetry")
    assert sorted(r.key for r in records) == [b"d1", b"d1", b"d7"], "keyed by the + level"
    assert {dict(r.headers)["mqtt-topic"] for r in records} == {b"devices/d1/telemetry", b"devices/d7/telemetry"}
    by_key = {}
    for r in records:
        by_key.setdefault(r.key, set()).add(r.partition)
    assert all(len(p) == 1 for p in by_key.values()), "one device, one partition"
    # Kafka → MQTT: a record keyed d7 reaches the subscriber of devices/d7/telemetry.
    k = KafkaProducer(bootstrap_servers=[b.bootstrap], acks="all")
    k.send("devices.telemetry", key=b"d7", value=b"from-kafka").get(timeout=10)
    k.send("devices.telemetry", key=b"d9", value=b"not-for-d7").get(timeout=10)
    k.close()
    m = one.expect(1)[0]
    assert (m.topic, m.payload) == ("devices/d7/telemetry", b"from-kafka")
    one.nothing(0.3)


def test_shared_subscription_gives_each_message_to_one_member(mqtt_broker):
    a = Client(mqtt_broker.mqtt_port)
    b2 = Client(mqtt_broker.mqtt_port)
    assert a.subscribe("$share/workers/tasks/#", qos=1) == [1]
    assert b2.subscribe("$share/workers/tasks/#", qos=1) == [1]
    pub = Client(mqtt_broker.mqtt_port)
    for i in range(20):
        pub.publish("tasks/x", f"t{i}".encode(), qos=1)
    got = []
    wait_until(lambda: (got.extend(_drain(a) + _drain(b2)), len(got) >= 20)[1], 10, "20 tasks")
    assert sorted(m.payload for m in got) == sorted(f"t{i}".encode() for i in range(20))
    a.nothing(0.3)


def _drain(c):
    out = []
    while not c.messages.empty():
        out.append(c.messages.get_nowait())
    return out


def test_websocket_transport(mqtt_broker):
    sub = Client(mqtt_broker.mqtt_ws_port, transport="websockets")
    sub.subscribe("ws/#", qos=1)
    pub = Client(mqtt_broker.mqtt_port)
    pub.publish("ws/hello", b"over websocket", qos=1)
    assert sub.expect(1)[0].payload == b"over websocket"
    sub.publish("ws/back", b"from websocket", qos=2)
    assert sub.expect(1)[0].payload == b"from websocket"


def test_qos2_resent_after_reconnect_is_stored_once(mqtt_broker):
    port = mqtt_broker.mqtt_port
    raw = Raw(port)
    raw.send(connect_packet("q2pub", clean=False))
    assert raw.read_packet()[0] == 0x20
    raw.send(publish_packet("once/x", b"exactly-once", qos=2, pid=7))
    first, body = raw.read_packet()
    assert first == 0x50 and body == b"\x00\x07", "PUBREC"
    raw.close()  # before PUBREL
    raw = Raw(port)
    raw.send(connect_packet("q2pub", clean=False))
    first, body = raw.read_packet()
    assert first == 0x20 and body[0] == 1, "session present"
    raw.send(publish_packet("once/x", b"exactly-once", qos=2, pid=7, dup=True))
    assert raw.read_packet() == (0x50, b"\x00\x07")
    raw.send(b"\x62\x02\x00\x07")  # PUBREL
    assert raw.read_packet() == (0x70, b"\x00\x07")
    raw.close()
    records, _ = read_topic(mqtt_broker.bootstrap, "once.x")
    assert [r.value for r in records] == [b"exactly-once"], "stored once"


def test_receive_maximum_exceeded_gets_disconnect_0x93(mqtt_broker):
    raw = Raw(mqtt_broker.mqtt_port)
    body = b"\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x02rm"
    raw.send(bytes([0x10, len(body)]) + body)
    first, connack = raw.read_packet()
    assert first == 0x20
    # Receive Maximum property (0x21) in the CONNACK.
    props = connack[3:]
    i = props.index(0x21)
    recv_max = struct.unpack(">H", props[i + 1:i + 3])[0]
    for pid in range(1, recv_max + 2):
        topic = b"\x00\x02rm"
        raw.send(bytes([0x34]) + bytes([len(topic) + 3]) + topic + struct.pack(">H", pid) + b"\x00")
    seen = []
    while True:
        p = raw.read_packet(timeout=10)
        if p is None:
            break
        seen.append(p)
        if p[0] == 0xE0:
            break
    assert (0xE0, b"\x93\x00") in seen or (0xE0, b"\x93") in seen, seen[-3:]


def _raw_publisher(port, client_id, topic, qos, acked, stop):
    """Publishes `topic`/<n> payloads one at a time, recording n once PUBACK (QoS 1) or PUBREC
    (QoS 2) arrived; stops when the broker goes away."""
    raw = Raw(port)
    raw.send(connect_packet(client_id))
    if raw.read_packet() is None:
        return
    n = 0
    try:
        while not stop.is_set():
            n += 1
            pid = n % 65535 + 1
            raw.send(publish_packet(topic, f"{n}".encode(), qos=qos, pid=pid))
            p = raw.read_packet(timeout=10)
            if p is None:
                return
            acked.append(n)
            if qos == 2:
                raw.send(b"\x62\x02" + struct.pack(">H", pid))
                if raw.read_packet(timeout=10) is None:
                    return
    except OSError:
        return


def test_kill9_loses_no_acknowledged_mqtt_message_and_keeps_session_queues(mqtt_broker):
    import threading

    keeper = Client(mqtt_broker.mqtt_port, client_id="k9-keeper", version=V311, clean=False)
    keeper.subscribe("k9/#", qos=1)
    keeper.close()
    stop = threading.Event()
    acked1, acked2 = [], []
    threads = [
        threading.Thread(target=_raw_publisher, args=(mqtt_broker.mqtt_port, "k9p1", "k9/q1", 1, acked1, stop)),
        threading.Thread(target=_raw_publisher, args=(mqtt_broker.mqtt_port, "k9p2", "k9/q2", 2, acked2, stop)),
    ]
    for t in threads:
        t.start()
    wait_until(lambda: len(acked1) > 200 and len(acked2) > 100, 60, "acknowledged publishes")
    mqtt_broker.kill9()
    stop.set()
    for t in threads:
        t.join(timeout=30)
    mqtt_broker.start()
    for topic, acked in [("k9.q1", acked1), ("k9.q2", acked2)]:
        records, _ = read_topic(mqtt_broker.bootstrap, topic)
        stored = {int(r.value) for r in records}
        missing = set(acked) - stored
        assert not missing, f"{topic}: {len(missing)} acknowledged messages lost, e.g. {sorted(missing)[:5]}"
        if topic == "k9.q2":
            assert len(records) == len(stored), "QoS 2: none stored twice"
    # The persistent session's queue survived the crash: every acknowledged message is there.
    back = Client(mqtt_broker.mqtt_port, client_id="k9-keeper", version=V311, clean=False)
    want = len(acked1) + len(acked2)
    got = back.expect(want, timeout=60)
    assert len(got) >= want
    back.close()
