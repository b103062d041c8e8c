"""kafka-python 2.x smoke run against a running broker (run by test_kafka_python2_smoke.py).

Runs with the SECOND virtualenv's python (.venv-kp2, kafka-python 2.3.3), not the suite's:

    .venv-kp2/bin/python tests/e2e/kafka_python2_smoke.py 127.0.0.1:PORT TOPIC GROUP

Steps, each checked here with kafka-python 2.x's own API and result shapes:
  1. admin: create TOPIC with 3 partitions and a retention.ms override; describe its
     configs (the override and a default) and the broker's;
  2. produce 90 keyed records with acks=all: each key on the partition kafka-python's
     murmur2 partitioner picks, offsets dense per partition;
  3. consume them in GROUP (subscribe, no auto commit), commit, check the committed offsets;
  4. produce 6 more; a new consumer in GROUP resumes at the commit: exactly those 6.
The last line on stdout is `RESULT <json>` for the test to cross-check with kafka-python 3.
Every wait is bounded; any failure raises (non-zero exit, traceback on stderr).
"""

import json
import sys
import time

import kafka
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic
from kafka.partitioner.default import murmur2

PARTITIONS = 3


def deadline(seconds):
    end = time.monotonic() + seconds
    return lambda: time.monotonic() >= end


def partition_for(key):
    return (murmur2(key) & 0x7FFFFFFF) % PARTITIONS


def admin_create_and_describe(bootstrap, topic):
    admin = KafkaAdminClient(bootstrap_servers=[bootstrap], request_timeout_ms=30000)
    try:
        resp = admin.create_topics(
            [NewTopic(name=topic, num_partitions=PARTITIONS, replication_factor=1,
                      topic_configs={"retention.ms": "3600000"})],
            timeout_ms=30000,
        )
        # 2.x: a CreateTopicsResponse with topic_errors = [(name, error_code, message)].
        assert [(e[0], e[1]) for e in resp.topic_errors] == [(topic, 0)], resp
        assert topic in admin.list_topics()
        [desc] = admin.describe_topics([topic])
        assert desc["error_code"] == 0, desc
        assert sorted(p["partition"] for p in desc["partitions"]) == list(range(PARTITIONS)), desc

        # 2.x: a list of DescribeConfigsResponse; resources[0][4] = [(name, value, ...)].
        res = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        resource = res[0].resources[0]
        assert resource[0] == 0, resource  # error code
        configs = {c[0]: c[1] for c in resource[4]}
        assert configs["retention.ms"] == "3600000", configs
        assert configs["cleanup.policy"] == "delete", configs
        broker_res = admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, "0")])
        broker_configs = {c[0]: c[1] for c in broker_res[0].resources[0][4]}
        assert "num.partitions" in broker_configs, broker_configs
        return {"retention.ms": configs["retention.ms"], "cleanup.policy": configs["cleanup.policy"],
                "config_count": len(configs)}
    finally:
        admin.close()


def produce(bootstrap, topic, items):
    """items: [(key bytes, value bytes)] -> [(key, value, partition, offset)]."""
    producer = KafkaProducer(bootstrap_servers=[bootstrap], acks="all", retries=5)
    try:
        futures = [(k, v, producer.send(topic, key=k, value=v)) for k, v in items]
        producer.flush(timeout=30)
        out = []
        for k, v, f in futures:
            md = f.get(timeout=30)
            assert md.topic == topic
            assert md.partition == partition_for(k), (k, md.partition)
            out.append((k, v, md.partition, md.offset))
        return out
    finally:
        producer.close(timeout=10)


def group_consumer(bootstrap, topic, group):
    return KafkaConsumer(
        topic,
        bootstrap_servers=[bootstrap],
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=10000,
        heartbeat_interval_ms=1000,
    )


def poll_exactly(consumer, n, timeout=60, quiet=1.5):
    """Poll until n records arrived, then for `quiet` more seconds; returns all received."""
    got = []
    passed = deadline(timeout)
    while len(got) < n:
        assert not passed(), f"received {len(got)} of {n} records within {timeout}s"
        for recs in consumer.poll(timeout_ms=200).values():
            got.extend(recs)
    quiet_over = deadline(quiet)
    while not quiet_over():
        for recs in consumer.poll(timeout_ms=100).values():
            got.extend(recs)
    return got


def main():
    bootstrap, topic, group = sys.argv[1:4]
    assert kafka.__version__.startswith("2."), f"expected kafka-python 2.x, got {kafka.__version__}"

    configs = admin_create_and_describe(bootstrap, topic)

    first = [(f"user-{i % 30}".encode(), f"first-{i}".encode()) for i in range(90)]
    placed = produce(bootstrap, topic, first)
    ends = {p: 0 for p in range(PARTITIONS)}
    for _, _, p, o in placed:
        assert o == ends[p], f"partition {p}: offset {o}, expected {ends[p]} (dense offsets)"
        ends[p] += 1
    assert all(ends.values()), f"30 keys should cover all {PARTITIONS} partitions: {ends}"

    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer = group_consumer(bootstrap, topic, group)
    try:
        recs = poll_exactly(consumer, len(first))
        assert sorted((r.partition, r.offset) for r in recs) == sorted((p, o) for _, _, p, o in placed)
        assert {(r.key, r.value) for r in recs} == set(first)
        assert {tp.partition for tp in consumer.assignment()} == set(range(PARTITIONS))
        consumer.commit()
        committed = {tp.partition: consumer.committed(tp) for tp in tps}
        assert committed == ends, f"committed {committed}, end offsets {ends}"
    finally:
        consumer.close()

    second = [(f"user-{i}".encode(), f"second-{i}".encode()) for i in range(6)]
    placed2 = produce(bootstrap, topic, second)
    consumer = group_consumer(bootstrap, topic, group)
    try:
        recs = poll_exactly(consumer, len(second))
        assert sorted((r.partition, r.offset, r.key, r.value) for r in recs) == sorted(
            (p, o, k, v) for k, v, p, o in placed2
        ), "the new member did not resume exactly at the committed offsets"
        assert all(r.offset >= ends[r.partition] for r in recs)
    finally:
        consumer.close()

    final_ends = dict(ends)
    for _, _, p, _ in placed2:
        final_ends[p] += 1
    print("RESULT " + json.dumps({
        "kafka_python": kafka.__version__,
        "configs": configs,
        "committed": {str(p): o for p, o in ends.items()},
        "end_offsets": {str(p): o for p, o in final_ends.items()},
        "records": len(first) + len(second),
    }), flush=True)


if __name__ == "__main__":
    main()
