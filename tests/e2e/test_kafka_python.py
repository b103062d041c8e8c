"""The kafka-python flows of the user's Kafka guide (seeds/000), against the real broker.

Each test starts its own broker (fresh data dir), so topic names such as
'orders' and 'user-events' from the guide are used as they are.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient
from kafka.errors import TopicAlreadyExistsError
from kafka.partitioner.default import murmur2
from kafka.serializer import DefaultSerializer, JsonSerializer
from kafka.structs import OffsetAndMetadata

from broker import Deadline, create_topic, read_topic, wait_until


def json_producer(bootstrap, **kw):
    """The guide's producer: JSON values, UTF-8 string keys.

    kafka-python 3 takes `kafka.serializer.Serializer` objects (plain callables
    are deprecated): JsonSerializer = json.dumps + UTF-8, DefaultSerializer = UTF-8
    (None stays None).
    """
    return KafkaProducer(
        bootstrap_servers=[bootstrap],
        value_serializer=JsonSerializer(),
        key_serializer=DefaultSerializer(),
        **kw,
    )


def json_consumer(bootstrap, *topics, **kw):
    kw.setdefault("value_deserializer", JsonSerializer())
    return KafkaConsumer(*topics, bootstrap_servers=[bootstrap], **kw)


def poll_records(consumer, n, timeout=30.0):
    """Poll until at least `n` records arrived (or the deadline); returns them."""
    out = []
    deadline = Deadline(timeout)
    while len(out) < n and not deadline.passed():
        for recs in consumer.poll(timeout_ms=200).values():
            out.extend(recs)
    assert len(out) >= n, f"received only {len(out)} of {n} records within {timeout}s: {out}"
    return out


def poll_nothing_more(consumer, window=1.5):
    """Records that still arrive within a short window (expected: none)."""
    extra = []
    deadline = Deadline(window)
    while not deadline.passed():
        for recs in consumer.poll(timeout_ms=100).values():
            extra.extend(recs)
    return extra


def wait_assigned(consumer, timeout=30.0):
    """Poll (a group consumer) until it has an assignment; returns it."""

    def assigned():
        consumer.poll(timeout_ms=100)
        return consumer.assignment()

    return wait_until(assigned, timeout, "a partition assignment")


def produce_values(bootstrap, topic, values, key=None, partition=0):
    """Send JSON values to one partition (0 by default) and wait for each ack."""
    producer = json_producer(bootstrap, acks="all")
    try:
        metas = [
            producer.send(topic, key=key, value=v, partition=partition).get(timeout=10)
            for v in values
        ]
        producer.flush(timeout=10)
    finally:
        producer.close(timeout=10)
    return metas


# --------------------------------------------------------------------------- topics


def test_admin_creates_orders_topic_with_three_partitions(broker):
    admin = KafkaAdminClient(bootstrap_servers=[broker.bootstrap])
    try:
        # kafka-python 3: {name: {...}} in, {'topics': [{'name', 'error_code', ...}]} out.
        resp = admin.create_topics({"orders": {"num_partitions": 3, "replication_factor": 1}})
        assert [(t["name"], t["error_code"]) for t in resp["topics"]] == [("orders", 0)]
        assert resp["topics"][0]["num_partitions"] == 3

        assert "orders" in admin.list_topics()
        [desc] = admin.describe_topics(["orders"])
        assert desc["name"] == "orders"
        assert desc["error_code"] == 0
        assert sorted(p["partition_index"] for p in desc["partitions"]) == [0, 1, 2]
        assert all(p["error_code"] == 0 for p in desc["partitions"]), desc

        # Creating it again is refused with TOPIC_ALREADY_EXISTS, and changes nothing.
        with pytest.raises(TopicAlreadyExistsError):
            admin.create_topics({"orders": {"num_partitions": 5, "replication_factor": 1}})
        [desc] = admin.describe_topics(["orders"])
        assert len(desc["partitions"]) == 3
    finally:
        admin.close()

    consumer = KafkaConsumer(bootstrap_servers=[broker.bootstrap])
    try:
        assert consumer.partitions_for_topic("orders") == {0, 1, 2}
    finally:
        consumer.close()

    # Every one of the three partitions takes writes.
    producer = KafkaProducer(bootstrap_servers=[broker.bootstrap], acks="all")
    try:
        for p in range(3):
            md = producer.send("orders", value=f"p{p}".encode(), partition=p).get(timeout=10)
            assert (md.partition, md.offset) == (p, 0)
    finally:
        producer.close(timeout=10)


# ------------------------------------------------------------------------- produce


def test_send_json_returns_record_metadata_and_value_round_trips(broker):
    producer = json_producer(broker.bootstrap)
    try:
        future = producer.send("orders", {"order_id": "12345", "amount": 99.99})
        md = future.get(timeout=10)
        assert md.topic == "orders"
        # Auto-created with --default-partitions (1): partition 0, first offset 0.
        assert md.partition == 0
        assert md.offset == 0
        md2 = producer.send("orders", {"order_id": "12346", "amount": 5}).get(timeout=10)
        assert (md2.topic, md2.partition, md2.offset) == ("orders", 0, 1)
        producer.flush()
    finally:
        producer.close(timeout=10)

    # The guide's basic consumer: group, earliest, JSON deserializer, iteration.
    consumer = json_consumer(
        broker.bootstrap,
        "orders",
        group_id="order-processors",
        auto_offset_reset="earliest",
        consumer_timeout_ms=15000,
    )
    got = []
    try:
        for message in consumer:
            got.append(message)
            if len(got) == 2:
                break
    finally:
        consumer.close()
    assert [(m.topic, m.partition, m.offset) for m in got] == [("orders", 0, 0), ("orders", 0, 1)]
    assert [m.value for m in got] == [
        {"order_id": "12345", "amount": 99.99},
        {"order_id": "12346", "amount": 5},
    ]
    assert [m.key for m in got] == [None, None]


def test_same_key_goes_to_same_partition(broker_factory):
    # user-events is auto-created with 3 partitions by --default-partitions 3.
    broker = broker_factory(extra_args=["--default-partitions", "3"])
    producer = json_producer(broker.bootstrap, acks="all")
    try:
        f1 = producer.send("user-events", key="user-123", value={"action": "login"})
        f2 = producer.send("user-events", key="user-123", value={"action": "logout"})
        f3 = producer.send("user-events", key="user-456", value={"action": "purchase"})
        producer.flush(timeout=10)
        m1, m2, m3 = (f.get(timeout=10) for f in (f1, f2, f3))
        assert producer.partitions_for("user-events") == {0, 1, 2}
        assert m1.partition == m2.partition
        assert m2.offset > m1.offset

        # Many keys, several records each: every key stays on one partition, the
        # partition the client's murmur2 partitioner chose, and keys spread out.
        keys = [f"user-{i}" for i in range(30)]
        futures = [
            (k, n, producer.send("user-events", key=k, value={"key": k, "n": n}))
            for n in range(3)
            for k in keys
        ]
        producer.flush(timeout=30)
        placed = {}
        for k, n, f in futures:
            md = f.get(timeout=10)
            placed.setdefault(k, set()).add(md.partition)
    finally:
        producer.close(timeout=10)

    for k, parts in placed.items():
        assert len(parts) == 1, f"key {k} landed on partitions {parts}"
        assert parts == {(murmur2(k.encode()) & 0x7FFFFFFF) % 3}
    assert {p for parts in placed.values() for p in parts} == {0, 1, 2}
    for key, md in (("user-123", m1), ("user-456", m3)):
        assert md.partition == (murmur2(key.encode()) & 0x7FFFFFFF) % 3

    # Read back: each record sits in the partition its metadata named, and each
    # key's records come back in the order they were sent.
    records, ends = read_topic(broker.bootstrap, "user-events")
    assert sum(ends.values()) == 3 + 90
    per_key = {}
    for r in records:
        value = json.loads(r.value)
        key = r.key.decode()
        if key in placed:
            assert {r.partition} == placed[key]
            per_key.setdefault(key, []).append(value["n"])
    assert per_key == {k: [0, 1, 2] for k in keys}
    actions = [json.loads(r.value)["action"] for r in records if r.key == b"user-123"]
    assert actions == ["login", "logout"]


def test_headers_round_trip_in_order_with_duplicate_keys(broker):
    headers = [
        ("source", b"order-service"),
        ("version", b"1.0"),
        ("priority", b"high"),
        ("x", b"first"),
        ("x", b"second"),
        ("empty", b""),
        ("x", b"third"),
    ]
    producer = json_producer(broker.bootstrap, acks="all")
    try:
        producer.send(
            "orders", value={"order_id": "12345", "amount": 99.99}, headers=headers, partition=0
        ).get(timeout=10)
        producer.send("orders", value={"order_id": "no-headers"}, partition=0).get(timeout=10)
    finally:
        producer.close(timeout=10)

    # librdkafka can also send a header with a null value (kafka-python cannot).
    from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer
    from confluent_kafka import TopicPartition as CTP

    null_headers = [("dup", b"1"), ("nothing", None), ("dup", b"2")]
    cp = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    delivered = []
    cp.produce("orders", value=b"from-librdkafka", headers=null_headers, partition=0,
               on_delivery=lambda err, msg: delivered.append(err))
    remaining = cp.flush(30)
    cp.close()
    assert remaining == 0
    assert delivered == [None]

    records, _ = read_topic(broker.bootstrap, "orders")
    records = [r for r in records if r.partition == 0]
    assert len(records) == 3
    assert [tuple(h) for h in records[0].headers] == headers
    assert json.loads(records[0].value) == {"order_id": "12345", "amount": 99.99}
    assert list(records[1].headers) == []
    assert [tuple(h) for h in records[2].headers] == null_headers

    # The same records as librdkafka sees them.
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "hdr-check",
                  "enable.auto.commit": False})
    try:
        c.assign([CTP("orders", 0, OFFSET_BEGINNING)])
        msgs = []
        deadline = Deadline(30)
        while len(msgs) < 3 and not deadline.passed():
            msg = c.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            msgs.append(msg)
        assert len(msgs) == 3, "confluent-kafka consumer did not get all 3 records"
        assert msgs[0].headers() == headers
        assert msgs[1].headers() in (None, [])
        assert msgs[2].headers() == null_headers
    finally:
        c.close()


def test_send_callbacks_fire_on_success(broker):
    producer = json_producer(broker.bootstrap)
    successes, errors = [], []
    done = threading.Event()

    def on_send_success(record_metadata):
        successes.append(record_metadata)
        done.set()

    def on_send_error(excp):
        errors.append(excp)
        done.set()

    try:
        future = producer.send("orders", {"order_id": "12345"})
        future.add_callback(on_send_success).add_errback(on_send_error)
        producer.flush(timeout=10)
        assert done.wait(10), "neither callback fired"
    finally:
        producer.close(timeout=10)
    assert errors == []
    assert len(successes) == 1
    assert successes[0].topic == "orders"
    assert successes[0].partition == 0
    assert successes[0].offset == 0


# ------------------------------------------------------------------------ consume


def test_two_consumers_in_one_group_split_partitions_and_records(broker):
    topic = "orders"
    create_topic(broker.bootstrap, topic, 3)
    n = 300
    members = {}
    received = {"c1": [], "c2": []}
    assignments = {"c1": frozenset(), "c2": frozenset()}
    errors = []
    stop = threading.Event()

    def run(name):
        consumer = members[name]
        try:
            while not stop.is_set():
                for recs in consumer.poll(timeout_ms=200).values():
                    received[name].extend((r.partition, r.offset, r.value) for r in recs)
                assignments[name] = frozenset(tp.partition for tp in consumer.assignment())
        except Exception as exc:  # surfaced by the main thread
            errors.append((name, exc))
        finally:
            consumer.close()

    for name in ("c1", "c2"):
        members[name] = json_consumer(
            broker.bootstrap,
            topic,
            group_id="order-processors",
            auto_offset_reset="earliest",
            heartbeat_interval_ms=500,
            session_timeout_ms=10000,
        )
    threads = [threading.Thread(target=run, args=(name,), daemon=True) for name in members]
    for t in threads:
        t.start()
    try:
        # Wait for a stable group: both members own partitions, disjoint, all 3 covered,
        # and the split has not changed for a second.
        stable_since = [None, None]

        def group_stable():
            if errors:
                raise AssertionError(f"consumer thread failed: {errors}")
            a1, a2 = assignments["c1"], assignments["c2"]
            good = a1 and a2 and not (a1 & a2) and (a1 | a2) == {0, 1, 2}
            if not good or stable_since[0] != (a1, a2):
                stable_since[:] = [(a1, a2) if good else None, time.monotonic()]
                return False
            return time.monotonic() - stable_since[1] >= 1.0

        try:
            wait_until(group_stable, 60, "a stable two-member group")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; assignments now {assignments}") from None
        final = dict(assignments)

        producer = json_producer(broker.bootstrap, acks="all")
        try:
            futures = [
                producer.send(topic, key=f"key-{i % 30}", value={"i": i}) for i in range(n)
            ]
            producer.flush(timeout=30)
            metas = [f.get(timeout=10) for f in futures]
            produced = {(md.partition, md.offset) for md in metas}
        finally:
            producer.close(timeout=10)
        assert len(produced) == n
        assert {p for p, _ in produced} == {0, 1, 2}

        wait_until(
            lambda: errors or len(received["c1"]) + len(received["c2"]) >= n,
            60,
            f"{n} records across the group",
        )
        # A short window in which duplicates would show up.
        deadline = Deadline(1.5)
        while not deadline.passed() and not errors:
            time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert not errors, errors
    assert assignments == final, "the group rebalanced while consuming"

    all_recs = received["c1"] + received["c2"]
    ids = [v["i"] for _, _, v in all_recs]
    assert len(ids) == n, f"{len(ids)} records received for {n} produced"
    assert sorted(ids) == list(range(n)), "lost or duplicated records"
    assert {(p, o) for p, o, _ in all_recs} == produced
    for name in ("c1", "c2"):
        got_parts = {p for p, _, _ in received[name]}
        assert received[name], f"{name} received nothing"
        assert got_parts <= final[name], f"{name} got records of partitions it does not own"


def test_manual_commit_then_new_consumer_resumes_after_commit(broker):
    produce_values(broker.bootstrap, "orders", [{"order_id": i} for i in range(10)])

    def process_order(value):
        if value["order_id"] == 5:
            raise RuntimeError("cannot process order 5")

    consumer = json_consumer(
        broker.bootstrap,
        "orders",
        group_id="order-processors",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        consumer_timeout_ms=20000,
    )
    processed, failed = [], []
    try:
        for message in consumer:
            try:
                process_order(message.value)
                consumer.commit()
                processed.append(message.offset)
            except RuntimeError:
                failed.append(message.offset)
                break  # don't commit on error: the message will be reprocessed
        tp = TopicPartition("orders", 0)
        assert consumer.committed(tp) == 5
    finally:
        consumer.close()
    assert processed == [0, 1, 2, 3, 4]
    assert failed == [5]

    # A new member of the group starts right after the last commit.
    consumer = json_consumer(
        broker.bootstrap,
        "orders",
        group_id="order-processors",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        recs = poll_records(consumer, 5)
        recs += poll_nothing_more(consumer)
        assert [r.offset for r in recs] == [5, 6, 7, 8, 9]
        assert [r.value["order_id"] for r in recs] == [5, 6, 7, 8, 9]
    finally:
        consumer.close()


def test_commit_specific_offset(broker):
    produce_values(broker.bootstrap, "orders", [{"order_id": i} for i in range(10)])
    tp = TopicPartition("orders", 0)

    consumer = json_consumer(
        broker.bootstrap,
        "orders",
        group_id="order-processors",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        assert consumer.committed(tp) is None
        recs = poll_records(consumer, 4)
        message = [r for r in recs if r.offset == 3][0]
        message_tp = TopicPartition(message.topic, message.partition)
        # kafka-python 3 (as 2.3): OffsetAndMetadata(offset, metadata, leader_epoch).
        consumer.commit({message_tp: OffsetAndMetadata(message.offset + 1, "processed", -1)})
        assert consumer.committed(tp) == 4
        committed = consumer.committed(tp, metadata=True)
        assert committed.offset == 4
        assert committed.metadata == "processed"
    finally:
        consumer.close()

    consumer = json_consumer(
        broker.bootstrap,
        "orders",
        group_id="order-processors",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        assert consumer.committed(tp) == 4
        recs = poll_records(consumer, 6)
        recs += poll_nothing_more(consumer)
        assert [r.offset for r in recs] == [4, 5, 6, 7, 8, 9]
    finally:
        consumer.close()


def test_auto_commit_on_close_persists_group_position(broker):
    produce_values(broker.bootstrap, "orders", [{"order_id": i} for i in range(5)])
    tp = TopicPartition("orders", 0)
    consumer = json_consumer(
        broker.bootstrap,
        "orders",
        group_id="my-consumer-group",
        auto_offset_reset="earliest",
        enable_auto_commit=True,
    )
    try:
        recs = poll_records(consumer, 5)
        assert [r.offset for r in recs] == [0, 1, 2, 3, 4]
    finally:
        consumer.close()  # commits the consumed position

    produce_values(broker.bootstrap, "orders", [{"order_id": i} for i in range(5, 8)])
    consumer = json_consumer(
        broker.bootstrap, "orders", group_id="my-consumer-group", auto_offset_reset="earliest"
    )
    try:
        assert consumer.committed(tp) == 5
        recs = poll_records(consumer, 3) + poll_nothing_more(consumer)
        assert [r.value["order_id"] for r in recs] == [5, 6, 7]
    finally:
        consumer.close()


def test_offset_reset_earliest_reads_old_and_latest_only_new(broker):
    produce_values(broker.bootstrap, "orders", [{"old": i} for i in range(5)])
    tp = TopicPartition("orders", 0)

    earliest = json_consumer(
        broker.bootstrap, "orders", group_id="from-earliest", auto_offset_reset="earliest"
    )
    latest = json_consumer(
        broker.bootstrap, "orders", group_id="from-latest", auto_offset_reset="latest"
    )
    try:
        recs = poll_records(earliest, 5)
        assert [r.value for r in recs] == [{"old": i} for i in range(5)]

        assert tp in wait_assigned(latest)
        assert latest.position(tp) == 5  # reset to the end, before anything new exists
        assert poll_nothing_more(latest, window=1.0) == []

        produce_values(broker.bootstrap, "orders", [{"new": i} for i in range(3)])
        recs = poll_records(latest, 3) + poll_nothing_more(latest)
        assert [r.value for r in recs] == [{"new": i} for i in range(3)]
        assert [r.offset for r in recs] == [5, 6, 7]

        recs = poll_records(earliest, 3)
        assert [r.value for r in recs] == [{"new": i} for i in range(3)]
    finally:
        earliest.close()
        latest.close()


def test_seek_to_beginning_replays(broker):
    values = [{"order_id": i} for i in range(5)]
    produce_values(broker.bootstrap, "orders", values)
    consumer = json_consumer(
        broker.bootstrap, "orders", group_id="replayers", auto_offset_reset="earliest"
    )
    try:
        first = poll_records(consumer, 5)
        assert [r.value for r in first] == values
        consumer.seek_to_beginning()
        again = poll_records(consumer, 5) + poll_nothing_more(consumer, window=1.0)
        assert [(r.offset, r.value) for r in again] == [(r.offset, r.value) for r in first]
    finally:
        consumer.close()
