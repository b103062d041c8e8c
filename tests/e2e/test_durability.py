"""What the broker stored survives a clean restart and a kill -9."""

from __future__ import annotations

import signal
from pathlib import Path
import threading

import pytest
from confluent_kafka import Producer
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from broker import Deadline, create_topic, read_topic, wait_until


def kp_produce(bootstrap, topic, items):
    """items: (key, value, partition-or-None); returns [(partition, offset)]."""
    producer = KafkaProducer(bootstrap_servers=[bootstrap], acks="all")
    try:
        futures = [producer.send(topic, key=k, value=v, partition=p) for k, v, p in items]
        producer.flush(timeout=60)
        return [(md.partition, md.offset) for md in (f.get(timeout=30) for f in futures)]
    finally:
        producer.close(timeout=10)


def commit_offsets(bootstrap, group, offsets):
    """Commit {TopicPartition: offset} for `group` (manual assignment, no join)."""
    consumer = KafkaConsumer(bootstrap_servers=[bootstrap], group_id=group, enable_auto_commit=False)
    try:
        consumer.assign(list(offsets))
        consumer.commit({tp: OffsetAndMetadata(o, f"at-{o}", -1) for tp, o in offsets.items()})
        for tp, o in offsets.items():
            assert consumer.committed(tp) == o
    finally:
        consumer.close()


def committed_offsets(bootstrap, group, tps):
    consumer = KafkaConsumer(bootstrap_servers=[bootstrap], group_id=group, enable_auto_commit=False)
    try:
        return {tp: consumer.committed(tp, metadata=True) for tp in tps}
    finally:
        consumer.close()


@pytest.mark.parametrize(
    "sig,fsync",
    [
        (signal.SIGTERM, "always"),
        (signal.SIGINT, "always"),
        (signal.SIGTERM, "interval"),
        (signal.SIGTERM, "never"),
    ],
    ids=["SIGTERM", "SIGINT", "SIGTERM-fsync-interval", "SIGTERM-fsync-never"],
)
def test_clean_restart_keeps_records_topics_and_group_offsets(broker_factory, sig, fsync):
    broker = broker_factory(extra_args=["--fsync", fsync])
    topic, n = "orders", 2000
    create_topic(broker.bootstrap, topic, 3)  # not the default partition count (1)
    items = [(f"key-{i % 50}".encode(), f"value-{i}".encode(), None) for i in range(n)]
    placed = kp_produce(broker.bootstrap, topic, items)
    expected = {pl: (k, v) for pl, (k, v, _) in zip(placed, items)}
    assert len(expected) == n

    tps = [TopicPartition(topic, p) for p in range(3)]
    counts = {p: sum(1 for (pp, _) in placed if pp == p) for p in range(3)}
    commits = {tp: counts[tp.partition] // 2 for tp in tps}
    commit_offsets(broker.bootstrap, "order-processors", commits)

    assert broker.stop(sig=sig) == 0, f"exit code on {sig.name}"
    broker.start()

    records, ends = read_topic(broker.bootstrap, topic)
    assert ends == counts
    assert {(r.partition, r.offset): (r.key, r.value) for r in records} == expected
    assert len(records) == n

    got = committed_offsets(broker.bootstrap, "order-processors", tps)
    for tp in tps:
        assert got[tp] is not None, f"committed offset of {tp} lost"
        assert got[tp].offset == commits[tp]
        assert got[tp].metadata == f"at-{commits[tp]}"

    # A group member resumes at the committed offsets.
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=[broker.bootstrap],
        group_id="order-processors",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        first = {}
        deadline = Deadline(60)
        while len(first) < 3 and not deadline.passed():
            for tp, recs in consumer.poll(timeout_ms=200).items():
                first.setdefault(tp.partition, recs[0].offset)
        assert first == {tp.partition: commits[tp] for tp in tps}
    finally:
        consumer.close()

    # And the restarted broker takes new writes after the old ones.
    more = kp_produce(broker.bootstrap, topic, [(None, b"after-restart", p) for p in range(3)])
    assert more == [(p, counts[p]) for p in range(3)]


@pytest.mark.parametrize(
    "extra_args",
    [(), ("--segment-bytes", "16384")],
    ids=["one-segment", "many-segment-rolls"],
)
def test_kill9_loses_no_acknowledged_record(broker_factory, extra_args):
    broker = broker_factory(extra_args=extra_args)
    topic = "crash"
    create_topic(broker.bootstrap, topic, 3)
    tps = [TopicPartition(topic, p) for p in range(3)]
    commit_offsets(broker.bootstrap, "crash-group", {tps[0]: 0, tps[1]: 0, tps[2]: 0})

    acked = {}  # value -> (partition, offset)
    failed = []
    stop = threading.Event()
    thread_errors = []
    produced = [0]

    def on_delivery(err, msg):
        if err is None:
            acked[msg.value()] = (msg.partition(), msg.offset())
        else:
            failed.append(err)

    def run_producer():
        try:
            producer = Producer(
                {
                    "bootstrap.servers": broker.bootstrap,
                    "acks": "all",
                    "linger.ms": 2,
                    "batch.num.messages": 200,
                    "message.timeout.ms": 30000,
                    "reconnect.backoff.max.ms": 200,
                }
            )
            i = 0
            while not stop.is_set():
                try:
                    producer.produce(topic, key=str(i % 97), value=f"v{i}".encode(), on_delivery=on_delivery)
                    i += 1
                except BufferError:
                    producer.poll(0.05)
                    continue
                if i % 100 == 0:
                    producer.poll(0)
            produced[0] = i
            # The broker is gone: stop retrying and collect the last reports.
            producer.poll(0)
            producer.purge(in_queue=True, in_flight=True, blocking=True)
            producer.flush(10)
            producer.close()
        except Exception as exc:
            thread_errors.append(exc)

    t = threading.Thread(target=run_producer, daemon=True)
    t.start()
    try:
        wait_until(lambda: thread_errors or len(acked) >= 20000, 90, "20000 acknowledged records")
        assert not thread_errors, thread_errors
        assert broker.kill9() == -signal.SIGKILL
    finally:
        stop.set()
        t.join(timeout=60)
    assert not t.is_alive(), "producer thread did not stop"
    assert not thread_errors, thread_errors
    acked_snapshot = dict(acked)
    assert len(acked_snapshot) >= 20000

    if extra_args:
        segments = list((Path(broker.data_dir) / "streams" / f"{topic}-0").glob("*.log"))
        assert len(segments) >= 3, f"expected segment rolls before the crash, found {len(segments)}"
    broker.start()
    records, ends = read_topic(broker.bootstrap, topic, timeout=120)
    stored = {(r.partition, r.offset): r.value for r in records}
    # Offsets are dense from 0 to the recovered high watermark.
    for p in range(3):
        offs = sorted(o for (pp, o) in stored if pp == p)
        assert offs == list(range(ends[p])), f"partition {p}: holes or a bad high watermark"

    missing = [(v, pl) for v, pl in acked_snapshot.items() if stored.get(pl) != v]
    assert not missing, (
        f"{len(missing)} of {len(acked_snapshot)} acknowledged records lost or moved, e.g. "
        f"{[(v, pl, stored.get(pl)) for v, pl in missing[:5]]}"
    )
    for p in range(3):
        top = max((o for (pp, o) in acked_snapshot.values() if pp == p), default=-1)
        assert ends[p] >= top + 1

    got = committed_offsets(broker.bootstrap, "crash-group", tps)
    assert all(got[tp] is not None and got[tp].offset == 0 for tp in tps), got

    # The recovered topic takes new writes right after the recovered high watermark.
    more = kp_produce(broker.bootstrap, topic, [(None, f"after-crash-{p}".encode(), p) for p in range(3)])
    assert more == [(p, ends[p]) for p in range(3)]
    records, ends2 = read_topic(broker.bootstrap, topic, timeout=120)
    assert ends2 == {p: ends[p] + 1 for p in range(3)}
    tail = {(r.partition, r.offset): r.value for r in records if r.offset == ends[r.partition]}
    assert tail == {(p, ends[p]): f"after-crash-{p}".encode() for p in range(3)}
