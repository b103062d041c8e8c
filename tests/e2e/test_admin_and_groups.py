"""Topic administration, group introspection, timestamp lookups, assignors and session
timeouts: the rest of issue 2's API list, with kafka-python and confluent-kafka."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import textwrap
import threading

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewPartitions
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient
from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from kafka.errors import (
    GroupIdNotFoundError,
    KafkaError,
    NonEmptyGroupError,
    UnknownTopicOrPartitionError,
)

from broker import Deadline, create_topic, read_topic, wait_until


def admin(broker):
    return KafkaAdminClient(bootstrap_servers=[broker.bootstrap], request_timeout_ms=30000)


def produce(bootstrap, topic, n, partition=None, **kw):
    p = KafkaProducer(bootstrap_servers=[bootstrap], acks="all")
    try:
        metas = [
            p.send(topic, value=f"v{i}".encode(), partition=partition, **kw).get(timeout=10)
            for i in range(n)
        ]
    finally:
        p.close(timeout=10)
    return metas


def _describe_topic_configs(a, topic, config_filter="all"):
    """{name: {'value', 'config_source', 'config_type', ...}} of one topic (kafka-python 3:
    describe_configs returns {resource type: {resource name: {config name: {...}}}})."""
    res = a.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)], config_filter=config_filter)
    return res["topic"][topic]


def test_topic_configs_are_stored_and_described(broker):
    a = admin(broker)
    try:
        resp = a.create_topics(
            {"audit": {"num_partitions": 2, "replication_factor": 1,
                       "configs": {"retention.ms": "3600000", "retention.bytes": "1048576"}}}
        )
        assert [(t["name"], t["error_code"]) for t in resp["topics"]] == [("audit", 0)]
        # config_filter="all": kafka-python 3 would otherwise hide DEFAULT_CONFIG entries.
        described = _describe_topic_configs(a, "audit")
        entries = {name: c["value"] for name, c in described.items()}
        assert entries["retention.ms"] == "3600000"
        assert entries["retention.bytes"] == "1048576"
        assert entries["cleanup.policy"] == "delete"
        assert "segment.bytes" in entries
        # Overrides are reported as topic overrides, everything else as defaults, so the
        # client's default filter ("modified") shows exactly the two overrides.
        assert described["retention.ms"]["config_source"] == "DYNAMIC_TOPIC_CONFIG"
        assert described["cleanup.policy"]["config_source"] == "DEFAULT_CONFIG"
        assert set(_describe_topic_configs(a, "audit", config_filter="modified")) == {
            "retention.ms", "retention.bytes"}
        broker_cfg = a.describe_configs(
            [ConfigResource(ConfigResourceType.BROKER, "0")], config_filter="all")
        names = set(broker_cfg["broker"]["0"])
        assert "num.partitions" in names
        # A config this broker cannot honour is refused, and the topic is not created.
        with pytest.raises(KafkaError) as err:
            a.create_topics({"tiered": {"num_partitions": 1, "replication_factor": 1,
                                        "configs": {"remote.storage.enable": "true"}}})
        assert err.value.errno == 40, err.value  # INVALID_CONFIG
        # So is a config name it does not know.
        with pytest.raises(KafkaError) as err:
            a.create_topics({"misconfigured": {"num_partitions": 1, "replication_factor": 1,
                                               "configs": {"no.such.config": "1"}}})
        assert err.value.errno == 40, err.value
        topics = a.list_topics()
        assert "tiered" not in topics and "misconfigured" not in topics
    finally:
        a.close()


def test_delete_topic_removes_it_and_a_new_one_starts_empty(broker):
    produce(broker.bootstrap, "temp", 5, partition=0)
    a = admin(broker)
    try:
        assert "temp" in a.list_topics()
        resp = a.delete_topics(["temp"])  # kafka-python 3: {'topics': [{'name', 'error_code', ...}]}
        assert [(t["name"], t["error_code"]) for t in resp["topics"]] == [("temp", 0)], resp
        wait_until(lambda: "temp" not in a.list_topics(), 10, "topic deletion")
        with pytest.raises(UnknownTopicOrPartitionError):
            a.delete_topics(["temp"])
    finally:
        a.close()
    # Re-created by auto-creation: offsets start again at 0, the old records are gone.
    metas = produce(broker.bootstrap, "temp", 1, partition=0)
    assert metas[0].offset == 0
    records, ends = read_topic(broker.bootstrap, "temp")
    assert [r.value for r in records] == [b"v0"] and ends == {0: 1}


def test_create_partitions_grows_a_topic_and_refuses_to_shrink(broker):
    create_topic(broker.bootstrap, "grow", 1)
    client = AdminClient({"bootstrap.servers": broker.bootstrap})
    client.create_partitions([NewPartitions("grow", 4)])["grow"].result(30)
    md = client.list_topics("grow", timeout=10)
    assert sorted(md.topics["grow"].partitions) == [0, 1, 2, 3]
    assert produce(broker.bootstrap, "grow", 1, partition=3)[0].partition == 3
    with pytest.raises(Exception) as err:
        client.create_partitions([NewPartitions("grow", 2)])["grow"].result(30)
    assert "INVALID_PARTITIONS" in str(err.value) or "partitions" in str(err.value).lower()


def test_offsets_for_times_finds_first_record_at_or_after_a_timestamp(broker):
    create_topic(broker.bootstrap, "timed", 1)
    p = KafkaProducer(bootstrap_servers=[broker.bootstrap], acks="all", linger_ms=0)
    base = 1_700_000_000_000
    for i in range(10):
        p.send("timed", value=b"x", partition=0, timestamp_ms=base + i * 1000).get(timeout=10)
    p.close(timeout=10)
    c = KafkaConsumer(bootstrap_servers=[broker.bootstrap])
    try:
        tp = TopicPartition("timed", 0)
        found = c.offsets_for_times({tp: base + 4500})[tp]
        assert (found.offset, found.timestamp) == (5, base + 5000)
        assert c.offsets_for_times({tp: base + 99_000})[tp] is None
        assert c.beginning_offsets([tp])[tp] == 0 and c.end_offsets([tp])[tp] == 10
    finally:
        c.close()


def test_list_and_describe_groups_show_a_stable_group(broker):
    create_topic(broker.bootstrap, "watched", 2)
    c = KafkaConsumer("watched", bootstrap_servers=[broker.bootstrap], group_id="watchers")
    try:
        wait_until(lambda: (c.poll(timeout_ms=100), c.assignment())[1], 30, "assignment")
        a = admin(broker)
        try:
            # kafka-python 3: list_groups() -> [{'group_id', 'protocol_type', 'group_state'}],
            # describe_groups() -> {group_id: {...}} with decoded member assignments.
            groups = {g["group_id"]: g for g in a.list_groups()}
            assert "watchers" in groups
            assert groups["watchers"]["protocol_type"] == "consumer"
            descs = a.describe_groups(["watchers"])
            assert list(descs) == ["watchers"]
            desc = descs["watchers"]
            assert desc["error"] is None, desc
            assert desc["group_state"] == "Stable"
            assert desc["protocol_type"] == "consumer"
            assert len(desc["members"]) == 1
            member = desc["members"][0]
            assignment = member["member_assignment"]["assigned_partitions"]
            assert sorted(p for t in assignment if t["topic"] == "watched" for p in t["partitions"]) == [0, 1]
        finally:
            a.close()
    finally:
        c.close()


def _consume_together(consumers, n, timeout=60):
    """Poll confluent-kafka consumers round-robin until n records arrived in total."""
    got = {id(c): [] for c in consumers}
    deadline = Deadline(timeout)
    while sum(len(v) for v in got.values()) < n:
        assert not deadline.passed(), {k: len(v) for k, v in got.items()}
        for c in consumers:
            m = c.poll(0.1)
            if m is not None and not m.error():
                got[id(c)].append((m.partition(), m.offset()))
    return got


@pytest.mark.parametrize("strategy", ["cooperative-sticky", "roundrobin", "range"])
def test_librdkafka_assignors_split_partitions_and_deliver_each_record_once(broker, strategy):
    create_topic(broker.bootstrap, "work", 4)
    conf = {
        "bootstrap.servers": broker.bootstrap,
        "group.id": f"g-{strategy}",
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": strategy,
    }
    c1, c2 = Consumer(conf), Consumer(conf)
    try:
        c1.subscribe(["work"])
        c2.subscribe(["work"])

        def split():
            for c in (c1, c2):
                c.poll(0.05)
            a1 = {tp.partition for tp in c1.assignment()}
            a2 = {tp.partition for tp in c2.assignment()}
            return a1 and a2 and not (a1 & a2) and a1 | a2 == {0, 1, 2, 3}

        wait_until(split, 60, f"a {strategy} split between two members")
        p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
        for i in range(400):
            p.produce("work", key=str(i).encode(), value=b"x")
        assert p.flush(30) == 0
        got = _consume_together([c1, c2], 400)
        every = [r for v in got.values() for r in v]
        assert len(every) == len(set(every)) == 400
        assert all(got.values()), "both members received records"
    finally:
        c1.close()
        c2.close()


def test_kafka_python_roundrobin_assignor(broker):
    create_topic(broker.bootstrap, "rr", 4)
    kw = dict(bootstrap_servers=[broker.bootstrap], group_id="rr-group",
              partition_assignment_strategy=[RoundRobinPartitionAssignor])
    consumers = [KafkaConsumer("rr", **kw), KafkaConsumer("rr", **kw)]
    assignments = [frozenset(), frozenset()]
    errors = []
    stop = threading.Event()

    # Each member polls in its own thread. kafka-python 3.0.12 drops a JoinGroup/SyncGroup
    # result that completes while its consumer is not inside poll() and joins again, so
    # two members polled in turn from one thread keep re-joining and never settle.
    def run(i):
        try:
            while not stop.is_set():
                consumers[i].poll(timeout_ms=200)
                assignments[i] = frozenset(tp.partition for tp in consumers[i].assignment())
        except Exception as exc:  # surfaced by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(2)]
    for t in threads:
        t.start()
    try:
        def split():
            assert not errors, errors
            a1, a2 = assignments
            return a1 and a2 and not (a1 & a2) and a1 | a2 == {0, 1, 2, 3}

        wait_until(split, 60, "roundrobin split")
        assert sorted(len(a) for a in assignments) == [2, 2]
        # Round robin over sorted partitions: one member has the even, the other the odd ones.
        assert sorted(map(sorted, assignments)) == [[0, 2], [1, 3]], assignments
        a = admin(broker)
        try:
            assert a.describe_groups(["rr-group"])["rr-group"]["protocol_data"] == "roundrobin"
        finally:
            a.close()
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        for c in consumers:
            c.close()
    assert not errors, errors


MEMBER = textwrap.dedent(
    """
    import sys
    from kafka import KafkaConsumer
    c = KafkaConsumer("lively", bootstrap_servers=[sys.argv[1]], group_id="lively-group",
                      session_timeout_ms=6000, heartbeat_interval_ms=1000)
    while not c.assignment():
        c.poll(timeout_ms=100)
    print("assigned", flush=True)
    while True:
        c.poll(timeout_ms=100)
    """
)


def test_member_killed_without_leaving_is_expired_and_partitions_move(broker):
    create_topic(broker.bootstrap, "lively", 2)
    doomed = subprocess.Popen([sys.executable, "-c", MEMBER, broker.bootstrap], stdout=subprocess.PIPE, text=True)
    survivor = KafkaConsumer("lively", bootstrap_servers=[broker.bootstrap], group_id="lively-group",
                             session_timeout_ms=6000, heartbeat_interval_ms=1000)
    try:
        assert doomed.stdout.readline().strip() == "assigned"

        def split():
            survivor.poll(timeout_ms=100)
            return len(survivor.assignment()) == 1

        wait_until(split, 60, "the survivor sharing the group")
        doomed.kill()  # no LeaveGroup: only the session timeout can tell
        doomed.wait(10)

        def took_over():
            survivor.poll(timeout_ms=100)
            return {tp.partition for tp in survivor.assignment()} == {0, 1}

        wait_until(took_over, 30, "the survivor owning both partitions after the session timeout")
    finally:
        if doomed.poll() is None:
            doomed.kill()
        survivor.close()


def _i16(v):
    return struct.pack(">h", v)


def _i32(v):
    return struct.pack(">i", v)


def test_produce_v0_is_answered_unsupported_version_per_partition(broker):
    client = b"legacy"
    body = _i16(1) + _i32(1000) + _i32(1) + _i16(5) + b"old-t" + _i32(1) + _i32(0) + _i32(0)
    req = _i16(0) + _i16(0) + _i32(77) + _i16(len(client)) + client + body
    with socket.create_connection(("127.0.0.1", broker.port), timeout=10) as s:
        s.sendall(_i32(len(req)) + req)
        size = struct.unpack(">i", s.recv(4, socket.MSG_WAITALL))[0]
        resp = s.recv(size, socket.MSG_WAITALL)
    corr, ntopics, nlen = struct.unpack(">iih", resp[:10])
    assert (corr, ntopics, resp[10 : 10 + nlen]) == (77, 1, b"old-t")
    nparts, part, err, base = struct.unpack(">iihq", resp[10 + nlen : 10 + nlen + 18])
    assert (nparts, part, err, base) == (1, 0, 35, -1)


def _topic_configs(bootstrap, topic):
    """{name: value} of every config of `topic`, defaults included."""
    a = KafkaAdminClient(bootstrap_servers=[bootstrap])
    try:
        return {name: c["value"] for name, c in _describe_topic_configs(a, topic).items()}
    finally:
        a.close()


def test_incremental_alter_configs_sets_and_deletes_topic_settings(broker):
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry
    from confluent_kafka.admin import ConfigResource as CResource

    create_topic(broker.bootstrap, "tunable", 1)
    client = AdminClient({"bootstrap.servers": broker.bootstrap})
    default_ms = _topic_configs(broker.bootstrap, "tunable")["retention.ms"]
    res = CResource("TOPIC", "tunable", incremental_configs=[
        ConfigEntry("retention.ms", "60000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("retention.bytes", "2097152", incremental_operation=AlterConfigOpType.SET),
    ])
    client.incremental_alter_configs([res])[res].result(30)
    cfg = _topic_configs(broker.bootstrap, "tunable")
    assert (cfg["retention.ms"], cfg["retention.bytes"]) == ("60000", "2097152")
    res = CResource("TOPIC", "tunable", incremental_configs=[
        ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE),
    ])
    client.incremental_alter_configs([res])[res].result(30)
    cfg = _topic_configs(broker.bootstrap, "tunable")
    assert (cfg["retention.ms"], cfg["retention.bytes"]) == (default_ms, "2097152")
    # A value the broker cannot honour is refused and changes nothing.
    res = CResource("TOPIC", "tunable", incremental_configs=[
        ConfigEntry("remote.storage.enable", "true", incremental_operation=AlterConfigOpType.SET),
    ])
    with pytest.raises(Exception):
        client.incremental_alter_configs([res])[res].result(30)
    assert _topic_configs(broker.bootstrap, "tunable")["remote.storage.enable"] == "false"


def test_alter_configs_replaces_topic_settings(broker):
    from kafka.admin import ConfigResource as KResource

    create_topic(broker.bootstrap, "replaced", 1)
    default_ms = _topic_configs(broker.bootstrap, "replaced")["retention.ms"]
    a = KafkaAdminClient(bootstrap_servers=[broker.bootstrap])
    try:
        # incremental=False: the (non-incremental) AlterConfigs request; kafka-python 3 would
        # otherwise pick IncrementalAlterConfigs.
        res = a.alter_configs(
            [KResource(ConfigResourceType.TOPIC, "replaced", configs={"retention.ms": "120000"})],
            incremental=False)
        assert res == {"topic": {"replaced": "OK"}}, res
        assert _topic_configs(broker.bootstrap, "replaced")["retention.ms"] == "120000"
        # kafka-python 3 adds the topic's other overrides (retention.ms) to each AlterConfigs
        # request, so this one carries both and both are set.
        a.alter_configs(
            [KResource(ConfigResourceType.TOPIC, "replaced", configs={"retention.bytes": "1048576"})],
            incremental=False)
        cfg = _topic_configs(broker.bootstrap, "replaced")
        assert (cfg["retention.ms"], cfg["retention.bytes"]) == ("120000", "1048576")
        # AlterConfigs replaces: reset_configs(incremental=False) sends the overrides minus
        # retention.ms (i.e. only retention.bytes), and the broker returns retention.ms to
        # its default.
        res = a.reset_configs(
            [KResource(ConfigResourceType.TOPIC, "replaced", configs=["retention.ms"])],
            incremental=False)
        assert res == {"topic": {"replaced": "OK"}}, res
        cfg = _topic_configs(broker.bootstrap, "replaced")
        assert cfg["retention.bytes"] == "1048576" and cfg["retention.ms"] != "120000"
        assert cfg["retention.ms"] == default_ms
    finally:
        a.close()


def test_delete_consumer_group_forgets_offsets_but_not_while_active(broker):
    create_topic(broker.bootstrap, "gone", 1)
    produce(broker.bootstrap, "gone", 3, partition=0)
    c = KafkaConsumer("gone", bootstrap_servers=[broker.bootstrap], group_id="leaving",
                      auto_offset_reset="earliest", enable_auto_commit=False)
    a = admin(broker)
    try:
        got = 0
        deadline = Deadline(30)
        while got < 3 and not deadline.passed():
            got += sum(len(v) for v in c.poll(timeout_ms=200).values())
        c.commit()
        tp = TopicPartition("gone", 0)
        assert c.committed(tp) == 3
        # kafka-python 3: delete_groups() -> {group_id: 'OK' or the error class name}.
        res = a.delete_groups(["leaving"])
        assert res == {"leaving": NonEmptyGroupError.__name__}, res  # 68 while a member is in
        assert NonEmptyGroupError.errno == 68
        c.close()
        res = a.delete_groups(["leaving"])
        assert res == {"leaving": "OK"}, res
        fresh = KafkaConsumer(bootstrap_servers=[broker.bootstrap], group_id="leaving")
        try:
            assert fresh.committed(tp) is None
        finally:
            fresh.close()
        res = a.delete_groups(["never-existed"])
        assert res == {"never-existed": GroupIdNotFoundError.__name__}, res  # 69
        assert GroupIdNotFoundError.errno == 69
    finally:
        a.close()


def test_describe_cluster_names_this_broker(broker):
    client = AdminClient({"bootstrap.servers": broker.bootstrap})
    desc = client.describe_cluster(request_timeout=30).result(30)
    assert [(n.id, n.host, n.port) for n in desc.nodes] == [(0, "127.0.0.1", broker.port)]
    assert desc.controller.id == 0 and desc.cluster_id
    a = admin(broker)
    try:
        assert a.describe_cluster()["controller_id"] == 0
    finally:
        a.close()


# ---- raw classic-protocol group members (JoinGroup/SyncGroup/Heartbeat v0) ----------


class _RawMember:
    """One group member speaking JoinGroup/SyncGroup/Heartbeat v0 over its own socket, so a
    test controls exactly when each member joins."""

    def __init__(self, bootstrap, group):
        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        self.group = group
        self.member_id = ""
        self.corr = 0

    @staticmethod
    def _str(s):
        b = s.encode()
        return struct.pack(">h", len(b)) + b

    def _call(self, key, body):
        self.corr += 1
        req = struct.pack(">hhi", key, 0, self.corr) + self._str("raw") + body
        self.sock.sendall(struct.pack(">i", len(req)) + req)
        (n,) = struct.unpack(">i", self._recv(4))
        data = self._recv(n)
        assert struct.unpack(">i", data[:4])[0] == self.corr
        return data[4:]

    def _recv(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            assert chunk, "broker closed the connection"
            buf += chunk
        return buf

    def join(self):
        meta = b"\x00\x00\x00\x00\x00\x01" + self._str("steady") + b"\xff\xff\xff\xff"
        body = (
            self._str(self.group) + struct.pack(">i", 10000) + self._str(self.member_id)
            + self._str("consumer") + struct.pack(">i", 1) + self._str("range")
            + struct.pack(">i", len(meta)) + meta
        )
        r = self._call(11, body)
        err, gen = struct.unpack(">hi", r[:6])
        pos = 6
        out = []
        for _ in range(3):  # protocol, leader, member id
            (ln,) = struct.unpack(">h", r[pos:pos + 2])
            out.append(r[pos + 2:pos + 2 + ln].decode())
            pos += 2 + ln
        self.member_id = out[2]
        return err, gen, out[1]

    def sync(self, gen, assignments=()):
        body = self._str(self.group) + struct.pack(">i", gen) + self._str(self.member_id)
        body += struct.pack(">i", len(assignments))
        for mid, data in assignments:
            body += self._str(mid) + struct.pack(">i", len(data)) + data
        return struct.unpack(">h", self._call(14, body)[:2])[0]

    def heartbeat(self, gen):
        body = self._str(self.group) + struct.pack(">i", gen) + self._str(self.member_id)
        return struct.unpack(">h", self._call(12, body)[:2])[0]


def test_follower_rejoining_a_stable_group_unchanged_keeps_the_generation(broker_factory):
    b = broker_factory(extra_args=["--group-initial-rebalance-delay-ms", "0"])
    a, f = _RawMember(b.bootstrap, "steady-g"), _RawMember(b.bootstrap, "steady-g")
    err, gen1, leader = a.join()
    assert err == 0 and leader == a.member_id
    assert a.sync(gen1, [(a.member_id, b"x")]) == 0
    # A second member joins: the leader must rejoin (heartbeat says rebalance), giving gen 2.
    results = {}
    t = threading.Thread(target=lambda: results.setdefault("f", f.join()))
    t.start()
    wait_until(lambda: a.heartbeat(gen1) == 27, 10, "REBALANCE_IN_PROGRESS for the leader")
    err, gen2, leader = a.join()
    t.join(timeout=30)
    assert err == 0 and gen2 == gen1 + 1 and leader == a.member_id
    assert results["f"][:2] == (0, gen2)
    assert a.sync(gen2, [(a.member_id, b"a"), (f.member_id, b"f")]) == 0
    assert f.sync(gen2) == 0
    # The follower rejoins with the same metadata: same generation at once, no rebalance.
    assert f.join() == (0, gen2, a.member_id)
    assert a.heartbeat(gen2) == 0, "the leader is not told to rebalance"
    assert f.heartbeat(gen2) == 0


def test_log_append_time_topic_stamps_records_with_the_broker_clock(broker):
    """message.timestamp.type=LogAppendTime: the broker's append time replaces the producer's
    timestamps (in the produce answer and for consumers), plain and compressed, while a
    CreateTime topic keeps the producer's; a Kafka 3.x-only config is accepted too."""
    import time

    from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME
    from confluent_kafka.admin import NewTopic

    client = AdminClient({"bootstrap.servers": broker.bootstrap})
    fs = client.create_topics([
        NewTopic("stamped", 1, 1, config={"message.timestamp.type": "LogAppendTime"}),
        NewTopic("kept", 1, 1, config={"message.format.version": "2.8"}),
    ])
    for f in fs.values():
        f.result(30)
    assert _topic_configs(broker.bootstrap, "stamped")["message.timestamp.type"] == "LogAppendTime"
    producer_ts = 1_000_000  # 1970: far from any clock reading
    before = int(time.time() * 1000)
    reports = []
    for codec in ("none", "gzip", "zstd"):
        p = Producer({"bootstrap.servers": broker.bootstrap, "compression.type": codec, "linger.ms": 5})
        for topic in ("stamped", "kept"):
            for i in range(3):
                p.produce(topic, value=f"{codec}-{i}".encode(), timestamp=producer_ts,
                          on_delivery=lambda err, msg: reports.append((err, msg.topic(), msg.timestamp())))
        assert p.flush(30) == 0
    after = int(time.time() * 1000)
    assert len(reports) == 18 and all(err is None for err, *_ in reports), reports
    for _err, topic, (ts_type, ts) in reports:
        if topic == "stamped":
            assert ts_type == TIMESTAMP_LOG_APPEND_TIME and before <= ts <= after, (ts_type, ts)
        else:
            assert (ts_type, ts) == (TIMESTAMP_CREATE_TIME, producer_ts)
    for topic in ("stamped", "kept"):
        c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"ts-{topic}",
                      "auto.offset.reset": "earliest", "enable.auto.commit": False})
        c.subscribe([topic])
        got, deadline = [], Deadline(30)
        while len(got) < 9 and not deadline.passed():
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                got.append(m.timestamp())
        c.close()
        assert len(got) == 9, got
        if topic == "stamped":
            assert all(t == TIMESTAMP_LOG_APPEND_TIME and before <= ts <= after for t, ts in got), got
        else:
            assert all((t, ts) == (TIMESTAMP_CREATE_TIME, producer_ts) for t, ts in got), got
