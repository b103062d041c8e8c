"""aiokafka (asyncio client) against the real broker: idempotent producer, consumer
groups with commits, and AIOKafkaAdminClient.

Each test is a plain (sync) pytest test that runs one coroutine with asyncio.run, under
an overall asyncio timeout; every loop inside has its own deadline.
"""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import InvalidPartitionsError
from aiokafka.partitioner import murmur2

from broker import create_topic

#: Seconds one test's coroutine may run in total.
TEST_TIMEOUT = 150

# Kafka error codes and DescribeConfigs sources used below.
UNKNOWN_TOPIC_OR_PARTITION, TOPIC_ALREADY_EXISTS, INVALID_CONFIG = 3, 36, 40
DYNAMIC_TOPIC_CONFIG, STATIC_BROKER_CONFIG, DEFAULT_CONFIG = 1, 4, 5


def run(coro, timeout=TEST_TIMEOUT):
    """Run `coro` to completion in a fresh event loop, at most `timeout` seconds."""

    async def bounded():
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


async def until(cond, timeout, what, interval=0.05):
    """Await until `cond()` (sync or async) is truthy, at most `timeout` seconds."""
    end = time.monotonic() + timeout
    while True:
        value = cond()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= end:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(interval)


def key_partition(key: bytes, partitions: int) -> int:
    """The partition aiokafka's DefaultPartitioner (Java's murmur2) picks for `key`."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


async def read_all(bootstrap, topic, partitions, timeout=60):
    """Every record of `topic` (partitions 0..partitions-1) from the beginning to its end
    offsets, with manual assignment (no group)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        records = []
        deadline = time.monotonic() + timeout

        async def behind():
            return [tp for tp in tps if await consumer.position(tp) < end[tp]]

        while await behind():
            assert time.monotonic() < deadline, f"read_all({topic}) did not reach {end}"
            for recs in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(recs)
        records.sort(key=lambda r: (r.partition, r.offset))
        return records, {tp.partition: o for tp, o in end.items()}
    finally:
        await consumer.stop()


async def get_exactly(consumer, n, timeout=60, quiet=1.5):
    """getmany until `n` records arrived, then `quiet` seconds more (to catch extras)."""
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        assert time.monotonic() < deadline, f"received {len(got)} of {n} records in {timeout}s"
        for recs in (await consumer.getmany(timeout_ms=200)).values():
            got.extend(recs)
    quiet_end = time.monotonic() + quiet
    while time.monotonic() < quiet_end:
        for recs in (await consumer.getmany(timeout_ms=100)).values():
            got.extend(recs)
    return got


def group_consumer(bootstrap, topic, group, **kw):
    kw.setdefault("enable_auto_commit", False)
    kw.setdefault("auto_offset_reset", "earliest")
    return AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                            heartbeat_interval_ms=500, session_timeout_ms=10000, **kw)


# ----------------------------------------------------------------------------- producer


def test_idempotent_producer_acks_all_keys_and_headers(broker):
    topic, parts = "aio-orders", 3
    create_topic(broker.bootstrap, topic, parts)
    keys = [f"user-{i}".encode() for i in range(30)]
    headers = [("source", b"order-service"), ("x", b"first"), ("x", b"second"), ("empty", b"")]

    async def scenario():
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all",
                                    enable_idempotence=True)
        await producer.start()
        try:
            # The idempotent handshake (InitProducerId) gave this producer an id; every
            # batch below carries it with its sequence numbers. (aiokafka keeps it private.)
            assert producer._txn_manager is not None
            assert producer._txn_manager.producer_id >= 0
            assert await producer.partitions_for(topic) == set(range(parts))
            sent = []  # (key, n, partition, offset)
            for n in range(3):
                for k in keys:
                    md = await producer.send_and_wait(topic, value=b"%s:%d" % (k, n), key=k)
                    assert md.topic == topic
                    sent.append((k, n, md.partition, md.offset))
            md_h = await producer.send_and_wait(topic, value=b"with-headers", key=b"user-0",
                                                headers=headers)
            md_p = await producer.send_and_wait(topic, value=b"explicit", partition=2)
            assert md_p.partition == 2
        finally:
            await producer.stop()
        records, ends = await read_all(broker.bootstrap, topic, parts)
        return sent, md_h, md_p, records, ends

    sent, md_h, md_p, records, ends = run(scenario())

    # Each key on the partition the client's murmur2 partitioner picks; keys spread out.
    for k, _, p, _ in sent:
        assert p == key_partition(k, parts), k
    assert {p for _, _, p, _ in sent} == set(range(parts))
    assert md_h.partition == key_partition(b"user-0", parts)
    # Dense offsets per partition: nothing lost, nothing stored twice.
    assert sum(ends.values()) == len(sent) + 2
    for p in range(parts):
        offsets = sorted(o for (_, _, pp, o) in sent if pp == p)
        offsets += [md.offset for md in (md_h, md_p) if md.partition == p]
        assert sorted(offsets) == list(range(ends[p])), f"partition {p}"
    # Read back: every record where its metadata said, each key's records in send order.
    stored = {(r.partition, r.offset): r for r in records}
    per_key = {}
    for k, n, p, o in sent:
        r = stored[(p, o)]
        assert (r.key, r.value) == (k, b"%s:%d" % (k, n))
        per_key.setdefault(k, []).append(n)
    assert per_key == {k: [0, 1, 2] for k in keys}
    with_headers = stored[(md_h.partition, md_h.offset)]
    assert with_headers.value == b"with-headers"
    assert [tuple(h) for h in with_headers.headers] == headers
    assert list(stored[(md_p.partition, md_p.offset)].headers) == []


# ----------------------------------------------------------------------------- groups


def test_two_consumers_in_one_group_split_partitions_and_consume_each_record_once(broker):
    topic, parts, n = "aio-work", 4, 400
    create_topic(broker.bootstrap, topic, parts)

    async def scenario():
        members = [group_consumer(broker.bootstrap, topic, "aio-workers") for _ in range(2)]
        for c in members:
            await c.start()
        received = [[], []]
        stop = asyncio.Event()

        async def drain(i):
            while not stop.is_set():
                for recs in (await members[i].getmany(timeout_ms=200)).values():
                    received[i].extend(recs)

        tasks = [asyncio.create_task(drain(i)) for i in range(2)]
        try:
            def assignments():
                return [frozenset(tp.partition for tp in c.assignment()) for c in members]

            # A stable split: both own partitions, disjoint, all covered, unchanged for 1 s.
            stable = {"split": None, "since": 0.0}

            def split_stable():
                for t in tasks:
                    if t.done():
                        t.result()  # a consumer task failed: raise its error here
                a1, a2 = assignments()
                good = a1 and a2 and not (a1 & a2) and a1 | a2 == set(range(parts))
                if not good or stable["split"] != (a1, a2):
                    stable.update(split=(a1, a2) if good else None, since=time.monotonic())
                    return False
                return time.monotonic() - stable["since"] >= 1.0

            await until(split_stable, 60, "a stable two-member split")
            final = assignments()

            producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all",
                                        enable_idempotence=True)
            await producer.start()
            try:
                futures = [await producer.send(topic, value=str(i).encode(), key=b"k%d" % (i % 40))
                           for i in range(n)]
                metas = await asyncio.gather(*futures)
            finally:
                await producer.stop()
            produced = {(md.partition, md.offset) for md in metas}
            assert len(produced) == n and {p for p, _ in produced} == set(range(parts))

            await until(lambda: len(received[0]) + len(received[1]) >= n, 60, f"{n} records")
            quiet_end = time.monotonic() + 1.5  # duplicates would show up in this window
            await until(lambda: time.monotonic() >= quiet_end, 5, "the quiet window")
            assert assignments() == final, "the group rebalanced while consuming"
            return final, received, produced
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            for c in members:
                await c.stop()
            for t in tasks:
                if not t.cancelled() and t.exception() is not None:
                    raise t.exception()

    final, received, produced = run(scenario())
    everything = received[0] + received[1]
    values = sorted(int(r.value) for r in everything)
    assert values == list(range(n)), "records lost or delivered twice"
    assert {(r.partition, r.offset) for r in everything} == produced
    for i in range(2):
        assert received[i], f"member {i} received nothing"
        assert {r.partition for r in received[i]} <= final[i], f"member {i} got foreign partitions"


def test_commit_then_a_new_consumer_resumes_after_the_commit(broker):
    topic, group = "aio-resume", "aio-resumers"
    create_topic(broker.bootstrap, topic, 1)
    tp = TopicPartition(topic, 0)

    async def produce(values):
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all",
                                    enable_idempotence=True)
        await producer.start()
        try:
            return [(await producer.send_and_wait(topic, value=v, partition=0)).offset
                    for v in values]
        finally:
            await producer.stop()

    async def scenario():
        assert await produce([b"v%d" % i for i in range(10)]) == list(range(10))

        # First member: processes 0..5, commits "next is 6" with metadata, leaves.
        c1 = group_consumer(broker.bootstrap, topic, group)
        await c1.start()
        try:
            assert await c1.committed(tp) is None
            got = []
            deadline = time.monotonic() + 60
            while len(got) < 6:
                assert time.monotonic() < deadline, f"only {len(got)} records"
                for recs in (await c1.getmany(timeout_ms=200)).values():
                    got.extend(recs)
            assert [r.offset for r in got[:6]] == list(range(6))
            await c1.commit({tp: (6, "processed-up-to-5")})
            assert await c1.committed(tp) == 6
        finally:
            await c1.stop()  # auto commit is off: stopping commits nothing more

        # A new member resumes right after the commit, reads the rest, commits its position.
        c2 = group_consumer(broker.bootstrap, topic, group)
        await c2.start()
        try:
            assert await c2.committed(tp) == 6
            recs = await get_exactly(c2, 4)
            assert [(r.offset, r.value) for r in recs] == [(i, b"v%d" % i) for i in range(6, 10)]
            await c2.commit()  # the consumed position
            assert await c2.committed(tp) == 10
        finally:
            await c2.stop()

        # A third member has nothing old to read, and gets exactly what comes next.
        c3 = group_consumer(broker.bootstrap, topic, group)
        await c3.start()
        try:
            assert await c3.committed(tp) == 10
            await until(lambda: c3.assignment(), 30, "an assignment")
            assert await get_exactly(c3, 0, quiet=1.0) == []
            assert await produce([b"late-0", b"late-1"]) == [10, 11]
            recs = await get_exactly(c3, 2)
            assert [(r.offset, r.value) for r in recs] == [(10, b"late-0"), (11, b"late-1")]
        finally:
            await c3.stop()

    run(scenario())


# ------------------------------------------------------------------------------ admin


def test_admin_client_topics_configs_partitions_and_delete(broker):
    topic = "aio-admin"

    async def scenario():
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=30000)
        await admin.start()
        try:
            resp = await admin.create_topics([NewTopic(
                topic, 3, 1, topic_configs={"retention.ms": "3600000", "retention.bytes": "1048576"})])
            assert [(t[0], t[1]) for t in resp.topic_errors] == [(topic, 0)], resp
            # Again: TOPIC_ALREADY_EXISTS. A config this broker cannot honour, or does not
            # know, is INVALID_CONFIG, and that topic is not created.
            resp = await admin.create_topics([NewTopic(topic, 5, 1)])
            assert [(t[0], t[1]) for t in resp.topic_errors] == [(topic, TOPIC_ALREADY_EXISTS)]
            resp = await admin.create_topics([
                NewTopic("aio-tiered", 1, 1, topic_configs={"remote.storage.enable": "true"}),
                NewTopic("aio-unknown-config", 1, 1, topic_configs={"no.such.config": "1"}),
            ])
            assert sorted((t[0], t[1]) for t in resp.topic_errors) == [
                ("aio-tiered", INVALID_CONFIG), ("aio-unknown-config", INVALID_CONFIG)], resp

            topics = await admin.list_topics()
            assert topic in topics
            assert "aio-tiered" not in topics and "aio-unknown-config" not in topics
            [desc] = await admin.describe_topics([topic])
            assert (desc["topic"], desc["error_code"]) == (topic, 0)
            assert sorted(p["partition"] for p in desc["partitions"]) == [0, 1, 2]
            assert all(p["error_code"] == 0 and p["leader"] == 0 for p in desc["partitions"]), desc

            # DescribeConfigs: (name, value, read_only, source, ...) per entry.
            [res] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
            [(err, _msg, rtype, rname, entries)] = res.resources
            assert (err, rtype, rname) == (0, ConfigResourceType.TOPIC, topic)
            cfg = {e[0]: (e[1], e[3]) for e in entries}
            assert cfg["retention.ms"] == ("3600000", DYNAMIC_TOPIC_CONFIG)
            assert cfg["retention.bytes"] == ("1048576", DYNAMIC_TOPIC_CONFIG)
            assert cfg["cleanup.policy"] == ("delete", DEFAULT_CONFIG)
            assert "segment.bytes" in cfg
            # Only the named configs when names are given.
            [res] = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic, configs={"retention.ms": None})])
            assert [(e[0], e[1]) for e in res.resources[0][4]] == [("retention.ms", "3600000")]
            [res] = await admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, "0")])
            [(err, _msg, rtype, rname, entries)] = res.resources
            assert (err, rtype, rname) == (0, ConfigResourceType.BROKER, "0")
            bcfg = {e[0]: (e[1], e[3]) for e in entries}
            assert "num.partitions" in bcfg
            assert bcfg["advertised.listeners"] == (f"PLAINTEXT://{broker.bootstrap}", STATIC_BROKER_CONFIG)

            # CreatePartitions: grow to 5; shrinking is refused.
            resp = await admin.create_partitions({topic: NewPartitions(5)})
            assert [(t[0], t[1]) for t in resp.topic_errors] == [(topic, 0)]
            [desc] = await admin.describe_topics([topic])
            assert sorted(p["partition"] for p in desc["partitions"]) == [0, 1, 2, 3, 4]
            try:
                await admin.create_partitions({topic: NewPartitions(2)})
            except InvalidPartitionsError:
                pass
            else:
                raise AssertionError("shrinking a topic to 2 partitions was accepted")

            cluster = await admin.describe_cluster()
            assert cluster["controller_id"] == 0
            assert [(b["node_id"], b["host"], b["port"]) for b in cluster["brokers"]] == [
                (0, "127.0.0.1", broker.port)]

            # The new partition takes writes.
            producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
            await producer.start()
            try:
                md = await producer.send_and_wait(topic, value=b"p4", partition=4)
                assert (md.partition, md.offset) == (4, 0)
            finally:
                await producer.stop()

            # DeleteTopics: gone from the listing; deleting again is UNKNOWN_TOPIC_OR_PARTITION.
            resp = await admin.delete_topics([topic])
            assert [(t[0], t[1]) for t in resp.topic_error_codes] == [(topic, 0)]

            async def gone():
                return topic not in await admin.list_topics()

            await until(gone, 10, "the topic deletion")
            resp = await admin.delete_topics([topic])
            assert [(t[0], t[1]) for t in resp.topic_error_codes] == [(topic, UNKNOWN_TOPIC_OR_PARTITION)]
        finally:
            await admin.close()

    run(scenario())
