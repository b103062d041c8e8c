"""Log compaction (cleanup.policy=compact) against the real broker: 100,000 records over 1,000
keys with tombstones are cleaned to exactly the latest value per key with their offsets
unchanged; keyless records are refused with INVALID_RECORD; the policy is set, appended and
described through the admin APIs; a kill -9 during cleaning loses nothing."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)

from broker import wait_until

COMPACT = {
    "cleanup.policy": "compact",
    "segment.ms": "100",
    "min.cleanable.dirty.ratio": "0.01",
    "delete.retention.ms": "0",
}


def compacted_broker(broker_factory):
    return broker_factory(extra_args=["--retention-check-interval-ms", "200"])


def read_all(bootstrap: str, topic: str):
    """(offset, key, value) of every record from the beginning to the end."""
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"r-{uuid.uuid4()}",
        "enable.partition.eof": True,
        "enable.auto.commit": False,
    })
    c.assign([TopicPartition(topic, 0, 0)])
    out = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            if m.error().code() == -191:
                break
            raise KafkaException(m.error())
        out.append((m.offset(), m.key(), m.value()))
    c.close()
    return out


def produce_history(bootstrap: str, topic: str):
    """100,000 records over 1,000 keys, then tombstones for keys 0..49; returns the offset and
    value of each key's latest record (None for a tombstone)."""
    latest = {}
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all"})

    def report(err, m):
        assert err is None, err
        latest[m.key()] = (m.offset(), m.value())

    for i in range(100_000):
        k = b"key-%d" % (i % 1000)
        p.produce(topic, key=k, value=b"v-%d" % i, on_delivery=report)
        if i % 10_000 == 0:
            p.poll(0)
    for k in range(50):
        p.produce(topic, key=b"key-%d" % k, value=None, on_delivery=report)
    p.flush(60)
    # A record after the segment time passed closes the segment holding the history.
    time.sleep(0.3)
    p.produce(topic, key=b"roll", value=b"roll", on_delivery=report)
    p.flush(60)
    return latest


def expected(latest):
    return sorted((off, k, v) for k, (off, v) in latest.items() if v is not None)


def test_compaction_keeps_the_latest_value_per_key_at_its_offset(broker_factory):
    b = compacted_broker(broker_factory)
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    for _, f in admin.create_topics([NewTopic("compacted", 1, 1, config=COMPACT)]).items():
        f.result(timeout=30)
    latest = produce_history(b.bootstrap, "compacted")
    want = expected(latest)
    assert len(want) == 951
    got = wait_until(lambda: (lambda r: r if r == want else None)(read_all(b.bootstrap, "compacted")), 60,
                     "the topic to be compacted to the latest value per key")
    assert got == want, "latest values, offsets unchanged, tombstoned keys gone"
    # Compacted segments survive a restart as they are, and new records follow the old offsets.
    b.restart()
    assert read_all(b.bootstrap, "compacted") == want
    p = Producer({"bootstrap.servers": b.bootstrap})
    offsets = []
    p.produce("compacted", key=b"new", value=b"after", on_delivery=lambda e, m: offsets.append(m.offset()))
    p.flush(30)
    assert offsets == [want[-1][0] + 1]
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    # Described as Kafka describes it.
    res = ConfigResource(ConfigResource.Type.TOPIC, "compacted")
    desc = admin.describe_configs([res])[res].result(timeout=30)
    assert desc["cleanup.policy"].value == "compact"


def test_keyless_records_are_refused_and_the_policy_can_be_appended(broker_factory):
    b = compacted_broker(broker_factory)
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    for _, f in admin.create_topics([NewTopic("growing", 1, 1)]).items():
        f.result(timeout=30)
    res = ConfigResource(
        ConfigResource.Type.TOPIC,
        "growing",
        incremental_configs=[ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.APPEND)],
    )
    for _, f in admin.incremental_alter_configs([res]).items():
        f.result(timeout=30)
    desc = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, "growing")])
    value = list(desc.values())[0].result(timeout=30)["cleanup.policy"].value
    assert set(value.split(",")) == {"delete", "compact"}
    p = Producer({"bootstrap.servers": b.bootstrap, "batch.size": 1})
    errors = []
    p.produce("growing", key=b"k", value=b"fine", on_delivery=lambda e, m: errors.append(e))
    p.produce("growing", value=b"no key", on_delivery=lambda e, m: errors.append(e))
    p.flush(30)
    assert errors[0] is None
    assert errors[1] is not None and errors[1].name() == "INVALID_RECORD", errors[1]


def test_kill9_while_compacting_loses_nothing(broker_factory):
    b = compacted_broker(broker_factory)
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    for _, f in admin.create_topics([NewTopic("crashy", 1, 1, config=COMPACT)]).items():
        f.result(timeout=30)
    latest = produce_history(b.bootstrap, "crashy")
    want = expected(latest)
    # Kill while the cleaner may be rewriting segments.
    time.sleep(0.25)
    b.kill9()
    b.start()
    got = read_all(b.bootstrap, "crashy")
    present = {(off, k, v) for off, k, v in got}
    assert set(want) <= present, "every key's latest value survives, at its offset"
    offsets = [off for off, _, _ in got]
    assert offsets == sorted(offsets) and len(offsets) == len(set(offsets)), "no record twice, in order"
    got = wait_until(lambda: (lambda r: r if r == want else None)(read_all(b.bootstrap, "crashy")), 60,
                     "compaction to finish after the restart")
    assert got == want
