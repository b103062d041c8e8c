"""Kafka transactions against the real broker: confluent-kafka's consume-transform-produce
loop with offsets committed in the transaction, aborted transactions invisible to
read_committed readers, fencing of a zombie producer, the transaction timeout, kafka-python's
transactional producer, kill -9 mid-transaction, and MQTT/AMQP readers seeing only committed
records."""

from __future__ import annotations

import threading
import time
import uuid

import pika
import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from broker import wait_until


def create(bootstrap: str, *topics: str, partitions: int = 1):
    a = AdminClient({"bootstrap.servers": bootstrap})
    for _, f in a.create_topics([NewTopic(t, partitions, 1) for t in topics]).items():
        f.result(timeout=30)


def read_all(bootstrap: str, topic: str, isolation: str, partitions: int = 1) -> list[bytes]:
    """Every record a fresh reader of `isolation` sees, up to the end (partition EOF)."""
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"reader-{uuid.uuid4()}",
        "isolation.level": isolation,
        "enable.partition.eof": True,
        "enable.auto.commit": False,
    })
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out, eof = [], set()
    deadline = time.monotonic() + 30
    while len(eof) < partitions and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            if m.error().code() == -191:  # _PARTITION_EOF
                eof.add(m.partition())
                continue
            raise KafkaException(m.error())
        out.append(m.value())
    c.close()
    assert len(eof) == partitions, f"{topic}: no end of partition reached ({isolation})"
    return out


def txn_producer(bootstrap: str, tid: str, **extra) -> Producer:
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": tid, **extra})
    p.init_transactions(30)
    return p


def test_consume_transform_produce_commits_output_and_offsets_atomically(broker):
    b = broker.bootstrap
    create(b, "ctp-in", "ctp-out")
    plain = Producer({"bootstrap.servers": b})
    for i in range(20):
        plain.produce("ctp-in", value=str(i).encode())
    plain.flush(30)
    consumer = Consumer({
        "bootstrap.servers": b,
        "group.id": "ctp",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
    })
    consumer.subscribe(["ctp-in"])
    producer = txn_producer(b, "ctp-app")

    def one_round(n: int, commit: bool):
        producer.begin_transaction()
        got = 0
        deadline = time.monotonic() + 30
        while got < n and time.monotonic() < deadline:
            m = consumer.poll(0.5)
            if m is None or m.error():
                continue
            producer.produce("ctp-out", value=b"x" + m.value())
            got += 1
        assert got == n
        producer.send_offsets_to_transaction(
            consumer.position(consumer.assignment()), consumer.consumer_group_metadata(), 30
        )
        if commit:
            producer.commit_transaction(30)
        else:
            producer.flush(30)  # abort_transaction drops what was not sent yet
            producer.abort_transaction(30)

    one_round(10, commit=True)
    assert read_all(b, "ctp-out", "read_committed") == [b"x%d" % i for i in range(10)]
    committed = consumer.committed([TopicPartition("ctp-in", 0)], timeout=30)[0].offset
    assert committed == 10, "offsets committed with the transaction"
    one_round(10, commit=False)
    assert read_all(b, "ctp-out", "read_committed") == [b"x%d" % i for i in range(10)], "aborted output invisible"
    assert len(read_all(b, "ctp-out", "read_uncommitted")) == 20, "read_uncommitted sees aborted records"
    assert consumer.committed([TopicPartition("ctp-in", 0)], timeout=30)[0].offset == 10, "aborted offsets not committed"
    consumer.close()


def test_a_zombie_producer_is_fenced(broker):
    b = broker.bootstrap
    create(b, "fence")
    old = txn_producer(b, "fence-app")
    old.begin_transaction()
    old.produce("fence", value=b"zombie")
    old.flush(30)
    new = txn_producer(b, "fence-app")  # same id: bumps the epoch, aborts the zombie's transaction
    new.begin_transaction()
    new.produce("fence", value=b"fresh")
    new.commit_transaction(30)
    with pytest.raises(KafkaException) as e:
        old.produce("fence", value=b"late")
        old.commit_transaction(30)
    assert e.value.args[0].fatal() or "fenced" in str(e.value).lower()
    assert read_all(b, "fence", "read_committed") == [b"fresh"]


def test_an_open_transaction_times_out_and_is_aborted(broker):
    b = broker.bootstrap
    create(b, "slow")
    p = txn_producer(b, "slow-app", **{"transaction.timeout.ms": 2000})
    p.begin_transaction()
    p.produce("slow", value=b"never")
    p.flush(30)
    # The broker aborts it after its timeout: the last stable offset moves past it.
    wait_until(lambda: read_all(b, "slow", "read_committed") == [] and _lso_past_records(b, "slow"), 20,
               "the timed-out transaction to be aborted")
    with pytest.raises(KafkaException):
        p.commit_transaction(30)


def _lso_past_records(bootstrap: str, topic: str) -> bool:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"lso-{uuid.uuid4()}", "isolation.level": "read_committed"})
    lo, hi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10, cached=False)
    c.close()
    return hi >= 2  # the record and the abort marker are below the last stable offset


def test_kafka_python_transactional_producer(broker):
    from kafka import KafkaProducer

    create(broker.bootstrap, "kp-txn")
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id="kp-app")
    p.init_transactions()
    p.begin_transaction()
    for i in range(3):
        p.send("kp-txn", f"c{i}".encode())
    p.commit_transaction()
    p.begin_transaction()
    p.send("kp-txn", b"aborted")
    p.flush()
    p.abort_transaction()
    p.close()
    assert read_all(broker.bootstrap, "kp-txn", "read_committed") == [b"c0", b"c1", b"c2"]


def test_kill9_mid_transaction_is_all_or_nothing(broker_factory):
    b = broker_factory()
    create(b.bootstrap, "k9txn", partitions=2)
    done = txn_producer(b.bootstrap, "k9-done")
    done.begin_transaction()
    for i in range(10):
        done.produce("k9txn", value=b"committed-%d" % i, partition=i % 2)
    done.commit_transaction(30)
    open_ = txn_producer(b.bootstrap, "k9-open")
    open_.begin_transaction()
    for i in range(10):
        open_.produce("k9txn", value=b"open-%d" % i, partition=i % 2)
    open_.flush(30)
    b.kill9()
    b.start()
    got = read_all(b.bootstrap, "k9txn", "read_committed", partitions=2)
    assert sorted(got) == sorted(b"committed-%d" % i for i in range(10)), "committed kept, open aborted at restart"
    # Readers are not stuck behind the interrupted transaction, and the id is usable again.
    again = txn_producer(b.bootstrap, "k9-open")
    again.begin_transaction()
    again.produce("k9txn", value=b"after", partition=0)
    again.commit_transaction(30)
    assert b"after" in read_all(b.bootstrap, "k9txn", "read_committed", partitions=2)


def test_amqp_and_mqtt_readers_see_only_committed_records(broker):
    from mqtt_util import Client

    create(broker.bootstrap, "shop.orders")
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.amqp_port))
    ch = conn.channel()
    ch.queue_declare(queue="orders-q", exclusive=True)
    ch.queue_bind(queue="orders-q", exchange="shop", routing_key="orders")
    sub = Client(broker.mqtt_port)
    sub.subscribe("shop/orders", qos=1)
    p = txn_producer(broker.bootstrap, "shop-app")
    p.begin_transaction()
    p.produce("shop.orders", value=b"aborted")
    p.flush(30)
    p.abort_transaction(30)
    p.begin_transaction()
    p.produce("shop.orders", value=b"committed")
    p.flush(30)
    assert ch.queue_declare(queue="orders-q", passive=True).method.message_count == 0, "nothing before commit"
    p.commit_transaction(30)
    got = wait_until(lambda: (lambda r: r if r[0] else None)(ch.basic_get("orders-q", auto_ack=True)), 10, "committed record in the AMQP queue")
    assert got[2] == b"committed"
    assert ch.basic_get("orders-q") == (None, None, None), "the aborted record never arrives, nor the markers"
    assert [m.payload for m in sub.expect(1)] == [b"committed"]
    sub.nothing(0.5)
    conn.close()
