"""The confluent-kafka (librdkafka) flows of seeds/003, against the real broker."""

from __future__ import annotations

import functools
import json
from collections import defaultdict

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaProducer
from kafka import codec as kp_codec

from broker import Deadline, KafkaFaultProxy, read_topic

# The producer configuration of seeds/003, as written there (bootstrap aside).
SEED_PRODUCER_CONFIG = {
    "acks": "all",
    "enable.idempotence": True,
    "compression.type": "lz4",
    "batch.size": 65536,
    "linger.ms": 5,
    "retries": 2147483647,
    "delivery.timeout.ms": 120000,
}

# The consumer configuration of seeds/003 (group id aside).
SEED_CONSUMER_CONFIG = {
    "auto.offset.reset": "earliest",
    "enable.auto.commit": False,
    "max.poll.interval.ms": 300000,
    "session.timeout.ms": 30000,
}

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


def create_topic_confluent(bootstrap, name, partitions):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    futures[name].result(30)  # raises KafkaException on a broker error
    md = admin.list_topics(name, timeout=30)
    assert md.topics[name].error is None, md.topics[name].error
    assert sorted(md.topics[name].partitions) == list(range(partitions))


class DeliveryLog:
    """Collects librdkafka delivery reports keyed by the record's id."""

    def __init__(self):
        self.ok = {}  # id -> (partition, offset)
        self.errors = []

    def report(self, rid, err, msg):
        if err is not None:
            self.errors.append((rid, err))
        else:
            self.ok[rid] = (msg.partition(), msg.offset())


def close_producer(producer):
    """Drop whatever is still queued and close, so no client keeps reconnecting
    to a stopped broker (Producer.close() alone would wait for delivery)."""
    producer.purge(in_queue=True, in_flight=True, blocking=False)
    producer.poll(0)
    producer.close()


def produce_all(producer, topic, items, log, timeout=120, partition=None):
    """produce() every (id, key, value, headers); waits for delivery of all."""
    deadline = Deadline(timeout)
    extra = {} if partition is None else {"partition": partition}
    for n, (rid, key, value, headers) in enumerate(items):
        while True:
            try:
                producer.produce(
                    topic,
                    key=key,
                    value=value,
                    headers=headers,
                    on_delivery=functools.partial(log.report, rid),
                    **extra,
                )
                break
            except BufferError:  # local queue full: serve delivery reports, retry
                assert not deadline.passed(), "producer queue stayed full"
                producer.poll(0.05)
        if n % 1000 == 0:
            producer.poll(0)
    remaining = producer.flush(max(1.0, deadline.remaining()))
    assert remaining == 0, f"{remaining} records still undelivered after {timeout}s"


def consume_confluent(bootstrap, topic, n, partitions=(0,), timeout=60, group="reader"):
    """Read `n` records of `topic` from the beginning with librdkafka (assign, no group)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
    )
    out = []
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        deadline = Deadline(timeout)
        while len(out) < n and not deadline.passed():
            for msg in consumer.consume(num_messages=500, timeout=0.5):
                if msg.error():
                    raise KafkaException(msg.error())
                out.append(msg)
    finally:
        consumer.close()
    assert len(out) == n, f"librdkafka read {len(out)} of {n} records of {topic}"
    return out


def test_seed_producer_delivers_100k_and_seed_consumer_reads_each_once(broker):
    topic = "user-events"
    n, users = 100_000, 1000
    create_topic_confluent(broker.bootstrap, topic, 3)

    producer = Producer({"bootstrap.servers": broker.bootstrap, **SEED_PRODUCER_CONFIG})
    log = DeliveryLog()
    items = (
        (
            i,
            str(i % users),
            json.dumps({"id": i, "user": i % users, "seq": i // users}).encode("utf-8"),
            None,
        )
        for i in range(n)
    )
    try:
        produce_all(producer, topic, items, log, timeout=180)
    finally:
        close_producer(producer)
    assert log.errors == []
    assert len(log.ok) == n

    # Offsets per partition are dense and unique: 0..count-1.
    by_partition = defaultdict(list)
    for partition, offset in log.ok.values():
        by_partition[partition].append(offset)
    assert set(by_partition) == {0, 1, 2}, "keys should spread over all three partitions"
    for partition, offsets in by_partition.items():
        assert sorted(offsets) == list(range(len(offsets))), f"partition {partition} offsets"

    consumer = Consumer(
        {"bootstrap.servers": broker.bootstrap, "group.id": "web-app-consumer", **SEED_CONSUMER_CONFIG}
    )
    seen_ids = set()
    duplicates = []
    last_offset = {}
    last_seq = {}
    consumed = 0
    uncommitted = 0
    try:
        consumer.subscribe([topic])
        deadline = Deadline(180)
        while consumed < n:
            assert not deadline.passed(), f"consumed only {consumed} of {n} records"
            if consumed < 100:
                # The seed's loop: poll one message, process, commit synchronously.
                msg = consumer.poll(timeout=1.0)
                msgs = [] if msg is None else [msg]
                per_message_commit = True
            else:
                msgs = consumer.consume(num_messages=1000, timeout=1.0)
                per_message_commit = False
            for msg in msgs:
                if msg.error():
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaException(msg.error())
                event = json.loads(msg.value().decode("utf-8"))
                rid, p, o = event["id"], msg.partition(), msg.offset()
                if rid in seen_ids:
                    duplicates.append(rid)
                seen_ids.add(rid)
                consumed += 1
                assert log.ok[rid] == (p, o), f"record {rid} read at {(p, o)}, acked at {log.ok[rid]}"
                assert o > last_offset.get(p, -1), f"partition {p}: offset {o} after {last_offset.get(p)}"
                last_offset[p] = o
                assert msg.key() == str(event["user"]).encode()
                user = event["user"]
                assert event["seq"] == last_seq.get(user, -1) + 1, f"user {user} out of order"
                last_seq[user] = event["seq"]
                uncommitted += 1
                if per_message_commit:
                    consumer.commit(asynchronous=False)
                    uncommitted = 0
            if uncommitted >= 10_000:
                consumer.commit(asynchronous=False)
                uncommitted = 0
        if uncommitted:
            consumer.commit(asynchronous=False)

        assert duplicates == []
        assert seen_ids == set(range(n))
        assignment = consumer.assignment()
        assert sorted(tp.partition for tp in assignment) == [0, 1, 2]
        committed = consumer.committed(assignment, timeout=30)
        positions = consumer.position(assignment)
        for tp in committed:
            assert tp.error is None, tp.error
            low, high = consumer.get_watermark_offsets(tp, timeout=30)
            assert low == 0
            assert high == len(by_partition[tp.partition])
            assert tp.offset == high, f"committed {tp} != high watermark {high}"
        assert {tp.partition: tp.offset for tp in positions} == {
            tp.partition: tp.offset for tp in committed
        }
    finally:
        consumer.close()

    # A new consumer of the same group has nothing left to read.
    consumer = Consumer(
        {"bootstrap.servers": broker.bootstrap, "group.id": "web-app-consumer", **SEED_CONSUMER_CONFIG}
    )
    try:
        committed = consumer.committed([TopicPartition(topic, p) for p in range(3)], timeout=30)
        assert {tp.partition: tp.offset for tp in committed} == {
            p: len(offs) for p, offs in by_partition.items()
        }
    finally:
        consumer.close()


def _codec_records(n=300):
    records = []
    for i in range(n):
        value = (f"record {i} " + "compressible payload " * (i % 40)).encode()
        records.append((f"k{i % 7}".encode(), value, [("i", str(i).encode()), ("codec", b"test")]))
    # One large record so compressed frames span several blocks.
    records.append((b"big", b"0123456789abcdef" * 16384, [("i", b"big")]))
    return records


@pytest.mark.parametrize("codec", CODECS)
def test_compression_codec_from_librdkafka_read_by_both_clients(broker, codec, unique_topic):
    topic = unique_topic(f"codec-{codec}")
    records = _codec_records()
    producer = Producer(
        {
            "bootstrap.servers": broker.bootstrap,
            "acks": "all",
            "compression.type": codec,
            "linger.ms": 20,
        }
    )
    log = DeliveryLog()
    try:
        produce_all(
            producer, topic, ((i, k, v, h) for i, (k, v, h) in enumerate(records)), log,
            timeout=60, partition=0,
        )
    finally:
        close_producer(producer)
    assert log.errors == []
    assert sorted(o for _, o in log.ok.values()) == list(range(len(records)))

    msgs = consume_confluent(broker.bootstrap, topic, len(records))
    assert [(m.key(), m.value(), m.headers()) for m in msgs] == records
    assert [m.offset() for m in msgs] == list(range(len(records)))

    has_codec = {
        "none": True,
        "gzip": kp_codec.has_gzip(),
        "snappy": kp_codec.has_snappy(),
        "lz4": kp_codec.has_lz4(),
        "zstd": kp_codec.has_zstd(),
    }[codec]
    assert has_codec, f"kafka-python lacks the {codec} library: check tests/requirements.txt"
    recs, ends = read_topic(broker.bootstrap, topic)
    assert ends == {0: len(records)}
    assert [(r.key, r.value, [tuple(h) for h in r.headers]) for r in recs] == records


@pytest.mark.parametrize("codec", CODECS)
def test_compression_codec_from_kafka_python_read_by_librdkafka(broker, codec, unique_topic):
    topic = unique_topic(f"kp-codec-{codec}")
    records = _codec_records(200)
    producer = KafkaProducer(
        bootstrap_servers=[broker.bootstrap],
        acks="all",
        compression_type=None if codec == "none" else codec,
        linger_ms=20,
    )
    try:
        futures = [producer.send(topic, key=k, value=v, headers=h, partition=0) for k, v, h in records]
        producer.flush(timeout=30)
        offsets = [f.get(timeout=10).offset for f in futures]
    finally:
        producer.close(timeout=10)
    assert offsets == list(range(len(records)))

    msgs = consume_confluent(broker.bootstrap, topic, len(records))
    assert [(m.key(), m.value(), m.headers()) for m in msgs] == records


def test_idempotent_producer_retries_after_lost_acks_do_not_duplicate(broker_factory):
    """Cut connections right after the broker stored a batch, before the client
    hears so: librdkafka resends the same (producer id, sequence) batches, and the
    broker must answer them as duplicates instead of appending them again."""
    proxy = KafkaFaultProxy(drop_produce_responses=3, every=4)
    broker = broker_factory(extra_args=["--kafka-advertised", proxy.bootstrap])
    proxy.start("127.0.0.1", broker.port)
    topic = "payments"
    n = 5000
    try:
        producer = Producer(
            {
                "bootstrap.servers": proxy.bootstrap,
                "acks": "all",
                "enable.idempotence": True,
                "max.in.flight.requests.per.connection": 5,
                "linger.ms": 2,
                "batch.num.messages": 100,
                "retry.backoff.ms": 50,
                "reconnect.backoff.ms": 50,
                "reconnect.backoff.max.ms": 500,
                "delivery.timeout.ms": 60000,
            }
        )
        log = DeliveryLog()
        items = ((i, str(i % 13), json.dumps({"id": i}).encode(), None) for i in range(n))
        try:
            produce_all(producer, topic, items, log, timeout=90)
        finally:
            close_producer(producer)
        assert log.errors == []
        assert len(log.ok) == n
        assert proxy.dropped == 3, (
            f"the fault was not injected ({proxy.produce_responses} produce responses seen)"
        )

        records, ends = read_topic(proxy.bootstrap, topic)
        ids = [json.loads(r.value)["id"] for r in records]
        assert len(ids) == n, f"{len(ids)} records stored for {n} produced: retries duplicated"
        assert sorted(ids) == list(range(n))
        assert sum(ends.values()) == n
        # Order per partition is the produce order (a single producer, so ids ascend).
        for p in ends:
            part_ids = [json.loads(r.value)["id"] for r in records if r.partition == p]
            assert part_ids == sorted(part_ids), f"partition {p} out of order"
    finally:
        proxy.close()
