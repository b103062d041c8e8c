"""Apache Kafka's own Java client (kafka-clients 4.4) and command-line tools (4.4) against the broker.

- The Java client: `tests/jvm/client` (a jar with named scenarios, each with its own asserts:
  admin, idempotent producer, classic consumer groups, headers/seek/timestamps, compression).
- Eclipse Paho's Java MQTT clients (mqttv3 and mqttv5 1.2.5), in the same jar: scenarios
  `mqtt-v3` (QoS 0/1/2 order, retained, persistent session, then the same bytes from Kafka)
  and `mqtt-v5` (properties, request/response, subscription identifiers, session expiry),
  given the broker's MQTT address as -Dconflux.mqtt=HOST:PORT.
- RabbitMQ's Java client (amqp-client 5.37), in the same jar: scenarios `amqp-basics` (typed
  headers and properties round trip, confirms, returns, prefetch, cancel notification, the
  records read back by the Kafka consumer) and `amqp-rpc` (RpcClient over direct reply-to,
  RpcServer, get/reject/redelivered), given -Dconflux.amqp=HOST:PORT.
- The tools: `bin/kafka-*.sh` of the distribution folder that `scripts/kafka-dist.sh` lays out
  from Maven Central jars, run as a user runs them.

Both are built by `tests/jvm/build.sh` (Java 17 + Maven). Paths: $CONFLUX_KAFKA_DIST (default
target/kafka-dist) and $CONFLUX_JVM_CLIENT_JAR (default target/jvm-client/conflux-jvm-client.jar).
Without them every test here is skipped, saying so. Every subprocess has a timeout.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from broker import REPO_ROOT, read_topic

KAFKA_DIST = Path(os.environ.get("CONFLUX_KAFKA_DIST") or REPO_ROOT / "target" / "kafka-dist")
CLIENT_JAR = Path(
    os.environ.get("CONFLUX_JVM_CLIENT_JAR")
    or REPO_ROOT / "target" / "jvm-client" / "conflux-jvm-client.jar"
)
BUILD_HINT = "build it with tests/jvm/build.sh (needs Java 17 and Maven)"

# Must match Scenarios.SCENARIOS in tests/jvm/client (checked by test_scenario_list_is_current).
SCENARIOS = [
    "admin",
    "admin-configs",
    "idempotent-producer",
    "consumer-group",
    "consumer-group-cooperative",
    "admin-groups",
    "headers-seek-timestamps",
    "compression",
]
# The jar's MQTT scenarios (Eclipse Paho), run against the broker's MQTT listener.
MQTT_SCENARIOS = [
    "mqtt-v3",
    "mqtt-v5",
]
# The jar's AMQP scenarios (RabbitMQ's Java client amqp-client 5.37), against its AMQP listener.
AMQP_SCENARIOS = [
    "amqp-basics",
    "amqp-rpc",
]


def create_topic(bootstrap: str, name: str, partitions: int):
    """Set-up topics with confluent-kafka (librdkafka), so that a CreateTopics problem the Java
    AdminClient (and kafka-topics.sh) trips over shows up in the tests about creating topics,
    not in every tool test."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for _, fut in admin.create_topics(
        [NewTopic(name, partitions, 1)], operation_timeout=30, request_timeout=30
    ).items():
        fut.result(timeout=60)


def java() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        pytest.skip(f"java is not installed ({BUILD_HINT})")
    return found


@pytest.fixture
def client_jar() -> Path:
    if not CLIENT_JAR.is_file():
        pytest.skip(f"Java client jar {CLIENT_JAR} is missing; {BUILD_HINT}")
    return CLIENT_JAR


@pytest.fixture
def kafka_bin() -> Path:
    tool = KAFKA_DIST / "bin" / "kafka-topics.sh"
    if not tool.is_file() or not any((KAFKA_DIST / "libs").glob("kafka-tools-*.jar")):
        pytest.skip(f"Kafka distribution folder {KAFKA_DIST} is missing; {BUILD_HINT}")
    java()
    return KAFKA_DIST / "bin"


def run(cmd, *, timeout, input_text=None, env=None, check=True, what=None):
    """Run a command; on a non-zero exit (when `check`) or a timeout, fail with its output."""
    what = what or " ".join(str(c) for c in cmd)
    try:
        proc = subprocess.run(
            [str(c) for c in cmd],
            input=input_text,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=None if input_text is not None else subprocess.DEVNULL,
            env=env,
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(
            f"{what} did not finish within {timeout}s\nstdout:\n{e.stdout or ''}\nstderr:\n{e.stderr or ''}",
            pytrace=False,
        )
    if check and proc.returncode != 0:
        pytest.fail(
            f"{what} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}",
            pytrace=False,
        )
    return proc


@pytest.fixture
def tool(kafka_bin, tmp_path):
    """tool("kafka-topics.sh", args..., input_text=..., timeout=..., check=...) -> CompletedProcess."""
    env = dict(os.environ)
    env["LOG_DIR"] = str(tmp_path / "kafka-tools-logs")
    env.setdefault("KAFKA_HEAP_OPTS", "-Xmx512M")

    def call(name, *args, input_text=None, timeout=120, check=True):
        return run(
            [kafka_bin / name, *args],
            timeout=timeout,
            input_text=input_text,
            env=env,
            check=check,
            what=f"{name} {' '.join(str(a) for a in args)}",
        )

    return call


# ------------------------------------------------------------------ Java client


def test_scenario_list_is_current(client_jar):
    out = run([java(), "-jar", client_jar, "list"], timeout=60).stdout.split()
    assert out == SCENARIOS + MQTT_SCENARIOS + AMQP_SCENARIOS, (
        "update SCENARIOS / MQTT_SCENARIOS / AMQP_SCENARIOS in this file to match tests/jvm/client"
    )


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_java_scenario(broker, client_jar, scenario):
    proc = run(
        [java(), "-Xmx512m", "-jar", client_jar, broker.bootstrap, scenario],
        timeout=240,
        check=False,
    )
    if proc.returncode != 0 or f"PASS {scenario}" not in proc.stdout:
        pytest.fail(
            f"Java scenario {scenario} failed (exit {proc.returncode})\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-6000:]}",
            pytrace=False,
        )


@pytest.mark.parametrize("scenario", MQTT_SCENARIOS)
def test_java_paho_mqtt_scenario(broker, client_jar, scenario):
    proc = run(
        [java(), "-Xmx512m", f"-Dconflux.mqtt=127.0.0.1:{broker.mqtt_port}", "-jar", client_jar,
         broker.bootstrap, scenario],
        timeout=240,
        check=False,
    )
    if proc.returncode != 0 or f"PASS {scenario}" not in proc.stdout:
        pytest.fail(
            f"Java (Eclipse Paho) scenario {scenario} failed (exit {proc.returncode})\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-6000:]}",
            pytrace=False,
        )


@pytest.mark.parametrize("scenario", AMQP_SCENARIOS)
def test_java_rabbitmq_client_scenario(broker, client_jar, scenario):
    proc = run(
        [java(), "-Xmx512m", f"-Dconflux.amqp=127.0.0.1:{broker.amqp_port}", "-jar", client_jar,
         broker.bootstrap, scenario],
        timeout=240,
        check=False,
    )
    if proc.returncode != 0 or f"PASS {scenario}" not in proc.stdout:
        pytest.fail(
            f"Java (RabbitMQ amqp-client) scenario {scenario} failed (exit {proc.returncode})\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-6000:]}",
            pytrace=False,
        )


# ------------------------------------------------------------------ command-line tools


def test_kafka_topics_create_list_describe(broker, tool, unique_topic):
    topic = unique_topic("tools-topics")
    b = broker.bootstrap
    out = tool("kafka-topics.sh", "--bootstrap-server", b, "--create", "--topic", topic,
               "--partitions", "3", "--replication-factor", "1").stdout
    assert f"Created topic {topic}." in out, out

    again = tool("kafka-topics.sh", "--bootstrap-server", b, "--create", "--topic", topic,
                 "--partitions", "3", check=False)
    assert again.returncode == 1 and "already exists" in again.stdout + again.stderr, again

    listed = tool("kafka-topics.sh", "--bootstrap-server", b, "--list").stdout.split()
    assert topic in listed, listed

    out = tool("kafka-topics.sh", "--bootstrap-server", b, "--describe", "--topic", topic).stdout
    assert re.search(rf"Topic: {re.escape(topic)}\s+TopicId: \S+\s+PartitionCount: 3\s+ReplicationFactor: 1", out), out
    rows = re.findall(
        rf"Topic: {re.escape(topic)}\s+Partition: (\d+)\s+Leader: (\d+)\s+Replicas: (\d+)\s+Isr: (\d+)", out
    )
    assert sorted(r[0] for r in rows) == ["0", "1", "2"], out
    for _, leader, replicas, isr in rows:
        assert leader == replicas == isr, out

    tool("kafka-topics.sh", "--bootstrap-server", b, "--alter", "--topic", topic, "--partitions", "4")
    out = tool("kafka-topics.sh", "--bootstrap-server", b, "--describe", "--topic", topic).stdout
    assert "PartitionCount: 4" in out, out

    tool("kafka-topics.sh", "--bootstrap-server", b, "--delete", "--topic", topic)
    listed = tool("kafka-topics.sh", "--bootstrap-server", b, "--list").stdout.split()
    assert topic not in listed, listed


def test_console_producer_then_console_consumer(broker, tool, unique_topic):
    topic = unique_topic("tools-console")
    b = broker.bootstrap
    create_topic(b, topic, 3)
    lines = [f"key{i % 17}:value number {i}" for i in range(300)]
    tool("kafka-console-producer.sh", "--bootstrap-server", b, "--topic", topic,
         "--reader-property", "parse.key=true", "--reader-property", "key.separator=:",
         input_text="\n".join(lines) + "\n")

    out = tool("kafka-console-consumer.sh", "--bootstrap-server", b, "--topic", topic,
               "--from-beginning", "--max-messages", str(len(lines)), "--timeout-ms", "30000",
               "--formatter-property", "print.key=true", "--formatter-property", "key.separator=:").stdout
    got = out.splitlines()
    assert sorted(got) == sorted(lines), f"{len(got)} lines read, expected {len(lines)}"
    # Within a key (one partition) the order is the send order.
    for k in range(17):
        mine = [x for x in got if x.startswith(f"key{k}:")]
        assert mine == [x for x in lines if x.startswith(f"key{k}:")]

    records, ends = read_topic(b, topic)
    assert sum(ends.values()) == len(lines)
    assert {(r.key, r.value) for r in records} == {
        tuple(x.encode() for x in line.split(":", 1)) for line in lines
    }


def _group_rows(out: str, group: str):
    """kafka-consumer-groups --describe rows: {partition: (current, log_end, lag)}."""
    rows = {}
    for line in out.splitlines():
        f = line.split()
        if len(f) >= 6 and f[0] == group and f[2].isdigit():
            rows[int(f[2])] = tuple(f[3:6])
    return rows


def test_consumer_groups_describe_and_reset_to_earliest(broker, tool, unique_topic):
    topic = unique_topic("tools-groups")
    group = unique_topic("tools-group")
    b = broker.bootstrap
    n = 300
    create_topic(b, topic, 3)
    tool("kafka-console-producer.sh", "--bootstrap-server", b, "--topic", topic,
         input_text="".join(f"message {i}\n" for i in range(n)))

    def consume_all():
        out = tool("kafka-console-consumer.sh", "--bootstrap-server", b, "--topic", topic,
                   "--group", group, "--max-messages", str(n), "--timeout-ms", "30000",
                   "--command-property", "auto.offset.reset=earliest").stdout
        assert sorted(out.splitlines()) == sorted(f"message {i}" for i in range(n))

    consume_all()  # commits its position when it closes

    listed = tool("kafka-consumer-groups.sh", "--bootstrap-server", b, "--list").stdout.split()
    assert group in listed, listed

    out = tool("kafka-consumer-groups.sh", "--bootstrap-server", b, "--describe", "--group", group).stdout
    rows = _group_rows(out, group)
    assert sorted(rows) == [0, 1, 2], out
    assert sum(int(end) for _, end, _ in rows.values()) == n, out
    for current, end, lag in rows.values():
        assert (current, lag) == (end, "0"), out

    out = tool("kafka-consumer-groups.sh", "--bootstrap-server", b, "--reset-offsets", "--to-earliest",
               "--execute", "--group", group, "--topic", topic).stdout
    new = {int(f[2]): f[3] for f in (line.split() for line in out.splitlines())
           if len(f) == 4 and f[0] == group and f[2].isdigit()}
    assert new == {0: "0", 1: "0", 2: "0"}, out

    out = tool("kafka-consumer-groups.sh", "--bootstrap-server", b, "--describe", "--group", group).stdout
    rows = _group_rows(out, group)
    for current, end, lag in rows.values():
        assert (current, lag) == ("0", end), out

    consume_all()  # the group starts from the beginning again

    out = tool("kafka-consumer-groups.sh", "--bootstrap-server", b, "--delete", "--group", group).stdout
    assert "successful" in out, out


def _producer_perf(tool, bootstrap, topic, n):
    out = tool("kafka-producer-perf-test.sh", "--topic", topic, "--num-records", str(n),
               "--record-size", "100", "--throughput", "-1",
               "--producer-props", "acks=all", f"bootstrap.servers={bootstrap}", timeout=180).stdout
    m = re.search(r"^(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency", out, re.M)
    assert m, out
    assert int(m.group(1)) == n, out
    print(f"kafka-producer-perf-test: {m.group(0)}")
    return out


def test_kafka_producer_perf_test(broker, tool, unique_topic):
    topic = unique_topic("tools-pperf")
    create_topic(broker.bootstrap, topic, 3)
    _producer_perf(tool, broker.bootstrap, topic, 100_000)
    out = tool("kafka-get-offsets.sh", "--bootstrap-server", broker.bootstrap, "--topic", topic).stdout
    ends = {int(p): int(o) for _, p, o in (line.rsplit(":", 2) for line in out.split())}
    assert sorted(ends) == [0, 1, 2] and sum(ends.values()) == 100_000, out


def test_kafka_consumer_perf_test(broker, tool, unique_topic):
    topic = unique_topic("tools-cperf")
    create_topic(broker.bootstrap, topic, 3)
    _producer_perf(tool, broker.bootstrap, topic, 100_000)
    out = tool("kafka-consumer-perf-test.sh", "--bootstrap-server", broker.bootstrap, "--topic", topic,
               "--num-records", "100000", "--timeout", "30000", timeout=180).stdout
    lines = out.strip().splitlines()
    header = [h.strip() for h in lines[-2].split(",")]
    values = [v.strip() for v in lines[-1].split(",")]
    stats = dict(zip(header, values))
    assert int(stats.get("data.consumed.in.nMsg", "0")) == 100_000, out
    print(f"kafka-consumer-perf-test: {stats}")


def test_kafka_configs_get_offsets_delete_records(broker, tool, unique_topic):
    topic = unique_topic("tools-configs")
    b = broker.bootstrap
    create_topic(b, topic, 2)
    tool("kafka-configs.sh", "--bootstrap-server", b, "--alter", "--entity-type", "topics",
         "--entity-name", topic, "--add-config", "retention.ms=86400000")
    out = tool("kafka-configs.sh", "--bootstrap-server", b, "--describe", "--entity-type", "topics",
               "--entity-name", topic).stdout
    assert "retention.ms=86400000" in out, out
    out = tool("kafka-configs.sh", "--bootstrap-server", b, "--describe", "--entity-type", "brokers",
               "--entity-name", "0", "--all").stdout
    assert "log.retention" in out or "=" in out, out

    tool("kafka-console-producer.sh", "--bootstrap-server", b, "--topic", topic,
         "--reader-property", "parse.key=true", "--reader-property", "key.separator=:",
         input_text="".join(f"same-key:v{i}\n" for i in range(50)))
    out = tool("kafka-get-offsets.sh", "--bootstrap-server", b, "--topic", topic).stdout
    offsets = {int(p): int(o) for _, p, o in (line.rsplit(":", 2) for line in out.split())}
    assert sorted(offsets.values()) == [0, 50], out
    p = max(offsets, key=offsets.get)

    spec = Path(broker.data_dir).parent / "delete-records.json"
    spec.write_text(f'{{"partitions":[{{"topic":"{topic}","partition":{p},"offset":20}}],"version":1}}')
    out = tool("kafka-delete-records.sh", "--bootstrap-server", b, "--offset-json-file", str(spec)).stdout
    assert re.search(rf"partition: {re.escape(topic)}-{p}\s+low_watermark: 20", out), out
    out = tool("kafka-get-offsets.sh", "--bootstrap-server", b, "--topic", topic, "--time", "-2").stdout
    assert f"{topic}:{p}:20" in out.split(), out

    out = tool("kafka-broker-api-versions.sh", "--bootstrap-server", b).stdout
    assert "Produce(0)" in out and "Fetch(1)" in out, out
