"""Two Kafka ecosystem applications (Apache Kafka 4.4, all from Maven Central) against the broker.

- Kafka Streams 4.4.0: `dev.conflux.streams.WordCount` (tests/jvm/apps) counts words with
  processing.guarantee=exactly_once_v2, through a repartition topic (groupBy) into a count()
  store with its compacted changelog. The application (the Java process, not the broker) is
  killed with SIGKILL while input is still arriving and restarted on the same state directory;
  the output read with read_committed must then hold, for every word, exactly the counts
  1, 2, ..., n (n = its occurrences in the input): nothing counted twice, nothing lost.
- Kafka Connect 4.4.0 in distributed mode (bin/connect-distributed.sh of the distribution folder,
  its config/offset/status topics created by Connect itself with cleanup.policy=compact and the
  default replication factor 3, accepted by `--kafka-max-replication-factor 3`) runs
  FileStreamSource -> topic -> FileStreamSink; after a restart of the worker the connectors come
  back from the config topic and resume from the stored offsets: lines written before the
  restart are not repeated in the sink file, lines written while it was down arrive.

Built by `tests/jvm/build.sh` (Java 17 + Maven): the distribution folder (scripts/kafka-dist.sh,
with kafka-streams, connect-runtime and connect-file in libs/) and target/jvm-apps/ (the Streams
application, and connect-file-compat.jar: Maven Central has no connect-file 4.4.0, so the 4.3.1
FileStream connectors run with a one-class shim; see tests/jvm/apps). Without them the tests are
skipped, saying so. Every wait is bounded.

Debugging: CONFLUX_TEST_RUST_LOG=conflux_kafka=debug for the broker; CONFLUX_JVM_LOG_LEVEL=DEBUG
for the Java applications' own log (Streams, clients, Connect), kept in the test's tmp dir and
shown (its tail) when a test fails.
"""

from __future__ import annotations

import collections
import json
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Optional

import pytest

from broker import REPO_ROOT, Deadline, wait_until

KAFKA_DIST = Path(os.environ.get("CONFLUX_KAFKA_DIST") or REPO_ROOT / "target" / "kafka-dist")
APPS_DIR = Path(os.environ.get("CONFLUX_JVM_APPS") or REPO_ROOT / "target" / "jvm-apps")
STREAMS_JAR = APPS_DIR / "conflux-streams-wordcount.jar"
CONNECT_COMPAT_JAR = APPS_DIR / "connect-file-compat.jar"
BUILD_HINT = "build it with tests/jvm/build.sh (needs Java 17 and Maven)"
JVM_LOG_LEVEL = os.environ.get("CONFLUX_JVM_LOG_LEVEL", "INFO")


# ------------------------------------------------------------------ fixtures and helpers


def java() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        pytest.skip(f"java is not installed ({BUILD_HINT})")
    return found


@pytest.fixture
def streams_classpath() -> str:
    java()
    if not any((KAFKA_DIST / "libs").glob("kafka-streams-4.4.0.jar")):
        pytest.skip(f"kafka-streams 4.4.0 is not in {KAFKA_DIST}/libs; {BUILD_HINT}")
    if not STREAMS_JAR.is_file():
        pytest.skip(f"Streams application jar {STREAMS_JAR} is missing; {BUILD_HINT}")
    return f"{STREAMS_JAR}:{KAFKA_DIST / 'libs'}/*"


@pytest.fixture
def connect_dist() -> Path:
    java()
    script = KAFKA_DIST / "bin" / "connect-distributed.sh"
    if not script.is_file() or not any((KAFKA_DIST / "libs").glob("connect-runtime-4.4.0.jar")):
        pytest.skip(f"Kafka Connect 4.4.0 (bin/connect-distributed.sh) is not in {KAFKA_DIST}; {BUILD_HINT}")
    if not any((KAFKA_DIST / "libs").glob("connect-file-*.jar")):
        pytest.skip(f"connect-file is not in {KAFKA_DIST}/libs; {BUILD_HINT}")
    if not CONNECT_COMPAT_JAR.is_file():
        pytest.skip(f"{CONNECT_COMPAT_JAR} is missing; {BUILD_HINT}")
    return KAFKA_DIST


@pytest.fixture
def jvm_procs(request):
    """Java processes a test starts; killed at teardown, their log tails shown on failure
    (conftest.py's report hook reads item._conflux_jvm_procs)."""
    procs: list[JavaProcess] = []
    request.node._conflux_jvm_procs = procs
    yield procs
    for p in procs:
        if p.running():
            p.kill9()


def log4j2_config(path: Path, level: str) -> Path:
    """A log4j2 configuration: everything at `level` to stdout (the process's log file)."""
    path.write_text(
        "Configuration:\n"
        "  Appenders:\n"
        "    Console:\n"
        "      name: STDOUT\n"
        "      PatternLayout:\n"
        '        pattern: "[%d] %p %m (%c)%n"\n'
        "  Loggers:\n"
        "    Root:\n"
        f"      level: {level}\n"
        "      AppenderRef:\n"
        "        - ref: STDOUT\n"
        "    Logger:\n"
        "      - name: org.reflections\n"
        "        level: ERROR\n"
        "      - name: org.eclipse.jetty\n"
        "        level: WARN\n"
        "      - name: org.glassfish\n"
        "        level: WARN\n"
        "      - name: org.apache.kafka.streams.StreamsConfig\n"
        "        level: ERROR\n"
    )
    return path


class JavaProcess:
    """A JVM started by a test: output (stdout + stderr) kept in memory and in a file, read by a
    thread; `wait_for(regex)` waits (bounded) for a line printed after a given position."""

    def __init__(self, name: str, cmd: list[str], log_path: Path, env: dict, cwd: Path):
        self.name = name
        self.log_path = log_path
        self.lines: list[str] = []
        self.lock = threading.Lock()
        if shutil.which("setpriv"):
            cmd = ["setpriv", "--pdeathsig", "KILL", "--"] + cmd  # dies with pytest; execs: same PID
        with open(log_path, "a", encoding="utf-8") as f:
            f.write(f"===== {' '.join(cmd)}\n")
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=env, cwd=str(cwd),
        )
        self.reader = threading.Thread(target=self._read, daemon=True, name=f"{name}-out")
        self.reader.start()

    def _read(self):
        assert self.proc.stdout is not None
        with open(self.log_path, "a", encoding="utf-8") as f:
            for raw in iter(self.proc.stdout.readline, b""):
                line = raw.decode("utf-8", errors="replace")
                with self.lock:
                    self.lines.append(line)
                f.write(line)
                f.flush()
        self.proc.stdout.close()

    def mark(self) -> int:
        with self.lock:
            return len(self.lines)

    def find(self, pattern: str, since: int = 0) -> Optional[re.Match]:
        rx = re.compile(pattern)
        with self.lock:
            lines = self.lines[since:]
        for line in lines:
            m = rx.search(line)
            if m:
                return m
        return None

    def findall(self, pattern: str) -> list[re.Match]:
        rx = re.compile(pattern)
        with self.lock:
            lines = list(self.lines)
        return [m for m in map(rx.search, lines) if m]

    def wait_for(self, pattern: str, timeout: float, since: int = 0) -> re.Match:
        deadline = Deadline(timeout)
        while True:
            m = self.find(pattern, since)
            if m:
                return m
            if not self.running():
                self.reader.join(timeout=5)
                m = self.find(pattern, since)
                if m:
                    return m
                raise AssertionError(
                    f"{self.name} exited with code {self.proc.returncode} before printing /{pattern}/\n"
                    f"--- its output (tail) ---\n{self.tail(80)}"
                )
            if deadline.passed():
                raise AssertionError(
                    f"{self.name} did not print /{pattern}/ within {timeout:.0f}s\n"
                    f"--- its output (tail) ---\n{self.tail(80)}"
                )
            time.sleep(0.1)

    def running(self) -> bool:
        return self.proc.poll() is None

    def kill9(self) -> int:
        if self.proc.poll() is None:
            self.proc.kill()
        rc = self.proc.wait(timeout=30)
        self.reader.join(timeout=10)
        return rc

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM (a clean shutdown through the JVM's shutdown hooks) and wait, bounded."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            raise AssertionError(f"{self.name} did not exit within {timeout:.0f}s of SIGTERM\n{self.tail(80)}")
        self.reader.join(timeout=10)
        return rc

    def tail(self, n: int = 100) -> str:
        with self.lock:
            return "".join(self.lines[-n:])


def admin_client(bootstrap: str):
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": bootstrap})


def create_topics(bootstrap: str, topics: dict[str, int]):
    from confluent_kafka.admin import NewTopic

    admin = admin_client(bootstrap)  # referenced until the futures are done
    futs = admin.create_topics(
        [NewTopic(t, n, 1) for t, n in topics.items()], operation_timeout=30, request_timeout=30
    )
    for fut in futs.values():
        fut.result(timeout=60)


def topic_configs(bootstrap: str, topic: str) -> dict[str, str]:
    from confluent_kafka.admin import ConfigResource

    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    admin = admin_client(bootstrap)  # referenced until the future is done
    entries = admin.describe_configs([res], request_timeout=30)[res].result(timeout=60)
    return {name: e.value for name, e in entries.items()}


def list_topics(bootstrap: str) -> dict[str, int]:
    md = admin_client(bootstrap).list_topics(timeout=30)
    return {name: len(t.partitions) for name, t in md.topics.items() if t.error is None}


def read_all(bootstrap: str, topic: str, isolation: str = "read_committed", timeout: float = 60):
    """Every record of `topic` from the beginning to its end: [(partition, offset, key, value)].

    confluent-kafka (librdkafka) with manual assignment; with read_committed the end of a
    partition is its last stable offset, and aborted records are skipped."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"reader-{uuid.uuid4()}",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "isolation.level": isolation,
    })
    try:
        md = c.list_topics(topic, timeout=30)
        parts = sorted(md.topics[topic].partitions)
        assert parts, f"topic {topic} has no partitions"
        c.assign([TopicPartition(topic, p, 0) for p in parts])
        at_eof: set[int] = set()
        out = []
        deadline = Deadline(timeout)
        while len(at_eof) < len(parts):
            if deadline.passed():
                raise AssertionError(f"read_all({topic}, {isolation}): no EOF on {set(parts) - at_eof} within {timeout}s")
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() == -191:  # _PARTITION_EOF
                    at_eof.add(m.partition())
                    continue
                raise KafkaException(m.error())
            at_eof.discard(m.partition())
            out.append((m.partition(), m.offset(), m.key(), m.value()))
        return out
    finally:
        c.close()


def counts_by_word(records) -> dict[str, list[int]]:
    """The output of the word count: for each word, its counts in offset order (8-byte longs)."""
    seqs: dict[str, list[int]] = collections.defaultdict(list)
    for _, _, key, value in sorted(records, key=lambda r: (r[0], r[1])):
        assert key is not None and value is not None and len(value) == 8, (key, value)
        seqs[key.decode()].append(struct.unpack(">q", value)[0])
    return seqs


# ------------------------------------------------------------------ Kafka Streams

VOCABULARY = [f"w{i:02d}" for i in range(40)] + ["kafka", "streams", "conflux", "exactly", "once"]


def word_lines(n: int, seed: int = 7) -> list[str]:
    rnd = random.Random(seed)
    return [" ".join(rnd.choice(VOCABULARY) for _ in range(rnd.randint(1, 8))) for _ in range(n)]


class PacedProducer(threading.Thread):
    """Writes `lines` to `topic` in chunks of `chunk`, one chunk every `pause` seconds (an input
    that keeps arriving while the application runs, is killed and restarts)."""

    def __init__(self, bootstrap: str, topic: str, lines: list[str], chunk: int, pause: float):
        super().__init__(daemon=True, name="paced-producer")
        self.bootstrap, self.topic, self.lines, self.chunk, self.pause = bootstrap, topic, lines, chunk, pause
        self.sent = 0
        self.error: Optional[BaseException] = None
        self.stop_flag = threading.Event()

    def run(self):
        from confluent_kafka import Producer

        try:
            p = Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True, "linger.ms": 5})
            failures = []
            for start in range(0, len(self.lines), self.chunk):
                if self.stop_flag.is_set():
                    return
                for i, line in enumerate(self.lines[start:start + self.chunk], start):
                    p.produce(self.topic, key=str(i).encode(), value=line.encode(),
                              on_delivery=lambda err, _m: err and failures.append(err))
                remaining = p.flush(30)
                assert remaining == 0 and not failures, f"input produce failed: {failures[:3]} ({remaining} unsent)"
                self.sent = min(len(self.lines), start + self.chunk)
                self.stop_flag.wait(self.pause)
        except BaseException as e:  # reported by the test
            self.error = e


class OffsetsProbe:
    """Log start offsets, high watermarks and last stable offsets of a topic (ListOffsets through
    two librdkafka consumers, read_uncommitted and read_committed): records of open transactions."""

    def __init__(self, bootstrap: str, topic: str):
        from confluent_kafka import Consumer, TopicPartition

        self.consumers = {
            iso: Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{uuid.uuid4()}",
                           "isolation.level": iso})
            for iso in ("read_uncommitted", "read_committed")
        }
        md = self.consumers["read_committed"].list_topics(topic, timeout=30)
        self.tps = [TopicPartition(topic, p) for p in sorted(md.topics[topic].partitions)]

    def start_offsets(self) -> list[int]:
        """Log start offset of each partition."""
        return [self.consumers["read_uncommitted"].get_watermark_offsets(tp, timeout=10)[0] for tp in self.tps]

    def committed_end(self) -> int:
        """Sum over partitions of the last stable offset."""
        return sum(self.consumers["read_committed"].get_watermark_offsets(tp, timeout=10)[1] for tp in self.tps)

    def open_records(self) -> int:
        """Sum over partitions of high watermark - last stable offset."""
        ends = {iso: sum(c.get_watermark_offsets(tp, timeout=10)[1] for tp in self.tps)
                for iso, c in self.consumers.items()}
        return ends["read_uncommitted"] - ends["read_committed"]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for c in self.consumers.values():
            c.close()


def start_word_count(name, classpath, bootstrap, app_id, input_topic, output_topic, state_dir, tmp_path, procs,
                     extra=()):
    log_cfg = log4j2_config(tmp_path / "streams-log4j2.yaml", JVM_LOG_LEVEL)
    cmd = [
        java(), "-Xmx512m", f"-Dlog4j2.configurationFile={log_cfg}", "-cp", classpath,
        "dev.conflux.streams.WordCount", bootstrap, app_id, input_topic, output_topic, str(state_dir),
        # The changelog's segments roll every 200 ms and are cleaned as soon as they are 1 % dirty
        # (the broker checks every 200 ms): the store is restored from a compacted changelog.
        "topic.segment.ms=200", "topic.min.cleanable.dirty.ratio=0.01",
        # Transactions stay open for a second (EOS default 100 ms): the kill -9 lands in one
        # whose records are already on the broker.
        "commit.interval.ms=1000",
        # Records of the repartition topic that were processed are deleted (DeleteRecords) every second.
        "repartition.purge.interval.ms=1000",
        *extra,
    ]
    p = JavaProcess(name, cmd, tmp_path / f"{name}.log", dict(os.environ), tmp_path)
    procs.append(p)
    return p


# How the killed process's open transactions end. The restarted process rejoins the group once
# the killed member's session (10 s) is over, then initializes its producers with the same
# transactional ids (the process id is kept in the state directory):
# - "txn-timeout": transaction.timeout.ms=5000: the coordinator aborts them on its own before;
# - "init-producer-id": transaction.timeout.ms=120000: InitProducerId of the new producers must
#   abort them (bumping the epoch, fencing the old producer); the output is complete well before
#   the timeout could have done it.
ABORT_PATHS = {
    "txn-timeout": ["producer.transaction.timeout.ms=5000"],
    "init-producer-id": ["producer.transaction.timeout.ms=120000"],
}


@pytest.mark.parametrize("abort_path", list(ABORT_PATHS))
def test_kafka_streams_word_count_exactly_once_across_kill9(broker_factory, streams_classpath, jvm_procs, tmp_path,
                                                            abort_path):
    broker = broker_factory(extra_args=["--retention-check-interval-ms", "200"])
    b = broker.bootstrap
    tag = uuid.uuid4().hex[:8]
    app_id = f"wordcount-{tag}"
    input_topic, output_topic = f"wc-lines-{tag}", f"wc-counts-{tag}"
    changelog, repartition = f"{app_id}-word-counts-changelog", f"{app_id}-by-word-repartition"
    create_topics(b, {input_topic: 3, output_topic: 3})

    lines = word_lines(6000)
    expected = collections.Counter(w for line in lines for w in line.split())
    total_words = sum(expected.values())
    state_dir = tmp_path / "streams-state"

    # 1. The application starts; input arrives in chunks (~10 s in all).
    extra = ABORT_PATHS[abort_path]
    app = start_word_count("wordcount-1", streams_classpath, b, app_id, input_topic, output_topic,
                           state_dir, tmp_path, jvm_procs, extra)
    app.wait_for(r"STATE REBALANCING -> RUNNING", timeout=120)
    producer = PacedProducer(b, input_topic, lines, chunk=100, pause=0.15)
    producer.start()

    # 2. Mid-stream (a quarter of the words counted, input still arriving, a transaction open with
    #    output records on the broker: high watermark past the last stable offset): kill -9.
    def progress():
        m = None
        for m in re.finditer(r"PROCESSED (\d+)", app.tail(20)):
            pass
        return int(m.group(1)) if m else 0

    with OffsetsProbe(b, output_topic) as probe:
        wait_until(lambda: not app.running() or (progress() >= total_words // 4 and probe.open_records() > 0),
                   120, f"the application to count {total_words // 4} of {total_words} words, "
                   "inside a transaction with output records on the broker", interval=0.02)
        assert app.running(), f"the application stopped on its own:\n{app.tail(60)}"
        assert app.kill9() == -signal.SIGKILL
    assert producer.is_alive() and producer.sent < len(lines), "the input was complete before the kill"
    assert app.find(r"FATAL") is None, app.tail(80)

    committed = read_all(b, output_topic, "read_committed")
    uncommitted = read_all(b, output_topic, "read_uncommitted")
    print(f"kill -9 after ~{progress()} of {total_words} words counted; output: "
          f"{len(committed)} committed records, {len(uncommitted)} records in all")
    assert 0 < len(committed) < total_words, (
        f"{len(committed)} committed output records at the kill: expected progress, not the end"
    )
    # The killed process's open transaction left records that read_committed must never show.
    assert len(uncommitted) > len(committed), (len(uncommitted), len(committed))

    # 3. Restart on the same state directory (same transactional ids: the open transaction of the
    #    killed process is aborted when the new producers initialize) while input still arrives.
    restarted = time.monotonic()
    app2 = start_word_count("wordcount-2", streams_classpath, b, app_id, input_topic, output_topic,
                            state_dir, tmp_path, jvm_procs, extra)
    app2.wait_for(r"STATE REBALANCING -> RUNNING", timeout=120)
    producer.join(timeout=120)
    assert not producer.is_alive(), "the input producer did not finish within 120 s"
    assert producer.error is None, f"input producer failed: {producer.error!r}"
    assert producer.sent == len(lines)

    # 4. The committed output reaches the final count of every word...
    def final_counts():
        if not app2.running():
            raise AssertionError(f"the restarted application stopped:\n{app2.tail(80)}")
        seqs = counts_by_word(read_all(b, output_topic, "read_committed"))
        last = {w: s[-1] for w, s in seqs.items()}
        over = {w: (n, expected[w]) for w, n in last.items() if n > expected[w]}
        assert not over, f"words counted more often than they occur (got, expected): {over}"
        return seqs if last == dict(expected) else None

    try:
        # 90 s: for "init-producer-id", well before the killed transactions' 120 s timeout.
        seqs = wait_until(final_counts, 90, "the committed output to reach the final counts", interval=1.0)
    except AssertionError:
        seqs = counts_by_word(read_all(b, output_topic, "read_committed"))
        wrong = {w: (s[-1] if s else None, expected[w]) for w, s in seqs.items() if not s or s[-1] != expected[w]}
        missing = sorted(set(expected) - set(seqs))
        raise AssertionError(f"final counts (got, expected) differ for {len(wrong)} words: "
                             f"{dict(list(wrong.items())[:10])}; words missing: {missing[:10]}\n{app2.tail(60)}")
    # ... and every word's committed counts are exactly 1, 2, ..., n: no input record counted twice
    # (or skipped) across the kill.
    bad = {w: s for w, s in seqs.items() if s != list(range(1, expected[w] + 1))}
    assert not bad, "committed counts not exactly 1..n for " + "; ".join(
        f"{w}: {len(s)} records, first repeats/gaps near {next((i for i, v in enumerate(s) if v != i + 1), None)}"
        for w, s in list(bad.items())[:10])
    assert sum(len(s) for s in seqs.values()) == total_words
    # The restarted process rebuilt its store from the changelog (under exactly-once a store
    # without a clean checkpoint is wiped and restored from the changelog's committed records).
    restored = {int(m.group(1)): int(m.group(2))
                for m in app2.findall(rf"^RESTORED word-counts {re.escape(changelog)} (\d+) (\d+)")}
    assert restored and sum(restored.values()) > 0, f"no store restored from {changelog}: {restored}"
    print(f"restart to final counts: {time.monotonic() - restarted:.1f} s")

    # The internal topics: a repartition topic (groupBy) and the store's changelog, compacted.
    topics = list_topics(b)
    assert topics.get(repartition) == 3, f"repartition topic {repartition} missing: {sorted(topics)}"
    assert topics.get(changelog) == 3, f"changelog topic {changelog} missing: {sorted(topics)}"
    assert topic_configs(b, changelog).get("cleanup.policy") == "compact"
    assert topic_configs(b, repartition).get("cleanup.policy") == "delete"

    # Streams purged the repartition topic up to what it had processed (DeleteRecords).
    with OffsetsProbe(b, repartition) as probe:
        starts = wait_until(lambda: (lambda st: st if sum(st) > 0 else None)(probe.start_offsets()), 30,
                            "Streams to purge the repartition topic (log start offsets > 0)", interval=0.5)
    print(f"repartition topic log start offsets: {starts}")

    # The changelog holds the final count of every word (latest record per key, read_committed),
    # and the cleaner did compact it: fewer records than the updates written to it.
    def compacted_changelog():
        recs = read_all(b, changelog, "read_committed")
        latest = {}
        for _, _, k, v in sorted(recs, key=lambda r: (r[0], r[1])):
            latest[k.decode()] = v
        return recs, latest

    recs, latest = compacted_changelog()
    assert set(latest) == set(expected), sorted(set(latest) ^ set(expected))
    for w, n in expected.items():
        # The store's changelog value is the count as an 8-byte long (plus Streams' timestamp
        # prefix for a timestamped store: its last 8 bytes are the count).
        assert struct.unpack(">q", latest[w][-8:])[0] == n, (w, latest[w], n)
    recs = wait_until(lambda: (lambda r: r if len(r[0]) < total_words else None)(compacted_changelog()),
                      60, "the cleaner to compact the changelog", interval=1.0)[0]
    print(f"changelog: {len(recs)} records after compaction, {total_words} updates written")

    # A clean stop (SIGTERM: KafkaStreams.close()).
    rc = app2.terminate(timeout=60)
    assert app2.find(r"^CLOSED") is not None, f"no clean close (exit {rc}):\n{app2.tail(60)}"
    assert app2.find(r"FATAL") is None, app2.tail(80)


# ------------------------------------------------------------------ Kafka Connect


class ConnectWorker:
    """bin/connect-distributed.sh WORKER_PROPERTIES; its REST port is chosen by the OS (port 0)
    and read from the log line 'REST server listening at http://127.0.0.1:PORT/'."""

    def __init__(self, dist: Path, props: Path, tmp_path: Path, procs: list, name: str):
        env = dict(os.environ)
        env["LOG_DIR"] = str(tmp_path / "connect-logs")
        env["KAFKA_HEAP_OPTS"] = "-Xmx512m"
        env["KAFKA_LOG4J_OPTS"] = f"-Dlog4j2.configurationFile={log4j2_config(tmp_path / 'connect-log4j2.yaml', JVM_LOG_LEVEL)}"
        env["CLASSPATH"] = str(CONNECT_COMPAT_JAR)  # see tests/jvm/apps (connect-file 4.3.1 on 4.4.0)
        env["EXTRA_ARGS"] = ""  # no -name/-loggc (as a foreground run)
        self.proc = JavaProcess(name, [str(dist / "bin" / "connect-distributed.sh"), str(props)],
                                tmp_path / f"{name}.log", env, tmp_path)
        procs.append(self.proc)
        m = self.proc.wait_for(r"REST server listening at (http://[^/]+:(\d+))/", timeout=120)
        self.url = m.group(1)
        # The worker joined its group and (as the leader) read the config topic.
        self.proc.wait_for(r"Finished starting connectors and tasks", timeout=120)

    def request(self, method: str, path: str, body=None, timeout: float = 30):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json", "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                text = r.read().decode()
                return r.status, (json.loads(text) if text else None)
        except urllib.error.HTTPError as e:
            text = e.read().decode()
            try:
                return e.code, json.loads(text)
            except ValueError:
                return e.code, text

    def put_connector(self, name: str, config: dict):
        def attempt():
            status, body = self.request("PUT", f"/connectors/{name}/config", config)
            # 409: a rebalance is under way; the worker answers once it is done.
            if status == 409:
                return None
            assert status in (200, 201), f"PUT /connectors/{name}/config -> {status} {body}"
            return body
        return wait_until(attempt, 60, f"connector {name} to be created", interval=0.5)

    def wait_running(self, names, timeout=90):
        def all_running():
            status, body = self.request("GET", "/connectors?expand=status")
            if status != 200:
                return None
            states = {n: (body.get(n, {}).get("status", {}).get("connector", {}).get("state"),
                          [t.get("state") for t in body.get(n, {}).get("status", {}).get("tasks", [])])
                      for n in names}
            for n, (c, tasks) in states.items():
                if c == "FAILED" or "FAILED" in tasks:
                    raise AssertionError(f"connector {n} failed: {json.dumps(body[n])}")
            return states if all(c == "RUNNING" and tasks == ["RUNNING"] for c, tasks in states.values()) else None
        return wait_until(all_running, timeout, f"connectors {names} RUNNING with one RUNNING task", interval=0.5)


def append_lines(path: Path, lines: list[str]):
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))


def sink_lines(path: Path) -> list[str]:
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    # Only whole lines (the sink may be between a write and its newline).
    return text.split("\n")[:-1]


# Worker settings, source connector settings, how the first worker ends:
# - "at-least-once": Connect's default; SIGTERM.
# - "exactly-once-source": exactly.once.source.support=enabled (KIP-618): the source task writes
#   records and offsets in transactions of a transactional producer whose zombies the leader
#   fences (Admin.fenceProducers), the config topic is read with read_committed and written by the
#   leader's own transactional producer; SIGTERM.
# - "exactly-once-source-kill9": the same, but the worker is killed with SIGKILL while the source
#   task is inside a transaction of a 20,000-line burst: the topic (read_committed) must still
#   hold every line exactly once. The FileStream sink is at-least-once: after a kill it may write
#   lines again that it had written but not yet committed, so only the sink's order is checked.
EOS = ["exactly.once.source.support=enabled"], {"exactly.once.support": "required"}
CONNECT_MODES = {
    "at-least-once": ([], {}, "sigterm"),
    "exactly-once-source": (*EOS, "sigterm"),
    "exactly-once-source-kill9": (*EOS, "kill9"),
}


@pytest.mark.parametrize("mode", list(CONNECT_MODES))
def test_kafka_connect_distributed_file_pipeline_resumes_after_restart(broker_factory, connect_dist, jvm_procs, tmp_path,
                                                                        mode):
    worker_extra, source_extra, stop = CONNECT_MODES[mode]
    broker = broker_factory(extra_args=["--kafka-max-replication-factor", "3"])
    b = broker.bootstrap
    tag = uuid.uuid4().hex[:8]
    storage = {k: f"connect-{k}-{tag}" for k in ("configs", "offsets", "status")}
    topic = f"connect-lines-{tag}"
    source_file, sink_file = tmp_path / "source.txt", tmp_path / "sink.txt"
    plugin = sorted((connect_dist / "libs").glob("connect-file-*.jar"))[0]

    props = tmp_path / "worker.properties"
    props.write_text("\n".join([
        f"bootstrap.servers={b}",
        f"group.id=connect-cluster-{tag}",
        "key.converter=org.apache.kafka.connect.storage.StringConverter",
        "value.converter=org.apache.kafka.connect.storage.StringConverter",
        f"config.storage.topic={storage['configs']}",
        f"offset.storage.topic={storage['offsets']}",
        f"status.storage.topic={storage['status']}",
        # The storage topics' replication factors stay at Connect's default (3): the broker
        # accepts it with --kafka-max-replication-factor 3 (topics still have one replica).
        "offset.flush.interval.ms=1000",
        # The sink task's consumer: a killed worker's member leaves the group after 10 s (not 45).
        "consumer.session.timeout.ms=10000",
        "consumer.heartbeat.interval.ms=1000",
        "listeners=http://127.0.0.1:0",
        f"plugin.path={plugin}",
        *worker_extra,
        "",
    ]))

    first = [f"line {i:05d} before the restart" for i in range(1, 301)]
    during = [f"line {i:05d} while the worker is down" for i in range(301, 501)]
    after = [f"line {i:05d} after the restart" for i in range(501, 601)]
    append_lines(source_file, first[:200])

    worker = ConnectWorker(connect_dist, props, tmp_path, jvm_procs, "connect-worker-1")

    # Connect created its three topics itself, compacted (it refuses to run on anything else).
    topics = list_topics(b)
    for kind, name in storage.items():
        assert name in topics, f"{kind} topic {name} was not created: {sorted(topics)}"
        assert topic_configs(b, name).get("cleanup.policy") == "compact", (name, topic_configs(b, name))
    assert topics[storage["configs"]] == 1, topics  # Connect requires one partition

    worker.put_connector("file-source", {
        "connector.class": "FileStreamSource", "tasks.max": "1",
        "file": str(source_file), "topic": topic, **source_extra,
    })
    worker.put_connector("file-sink", {
        "connector.class": "FileStreamSink", "tasks.max": "1",
        "file": str(sink_file), "topics": topic,
    })
    worker.wait_running(["file-source", "file-sink"])

    wait_until(lambda: len(sink_lines(sink_file)) >= 200, 90, "the first 200 lines in the sink file", interval=0.2)
    append_lines(source_file, first[200:])
    wait_until(lambda: len(sink_lines(sink_file)) >= 300, 90, "300 lines in the sink file", interval=0.2)
    assert sink_lines(sink_file) == first

    burst = []
    if stop == "sigterm":
        # The worker stops cleanly (SIGTERM: offsets flushed and committed).
        rc = worker.proc.terminate(timeout=90)
        assert rc in (0, 128 + signal.SIGTERM), f"worker exit code {rc}"
        assert sink_lines(sink_file) == first
    else:
        # SIGKILL in the middle of the burst, inside a source transaction with records on the broker.
        burst = [f"line {i:05d} of the burst" for i in range(100_001, 120_001)]
        with OffsetsProbe(b, topic) as probe:
            append_lines(source_file, burst)
            wait_until(lambda: probe.open_records() > 0 and probe.committed_end() > len(first) + 1000,
                       60, "the source task inside a transaction in the middle of the burst", interval=0.01)
            assert worker.proc.kill9() == -signal.SIGKILL
            committed_at_kill = probe.committed_end()
        # Below lines + markers of a complete burst: part of it was not committed yet.
        assert committed_at_kill < len(first) + len(burst), "the burst was complete before the kill"
        print(f"kill -9 with {committed_at_kill} offsets committed in the topic")
    # Lines arrive while the worker is down.
    append_lines(source_file, during)

    # Restarted: the connectors come back from the config topic (not created again) and resume
    # from the source offset (offsets topic) and the sink's committed group offsets.
    worker2 = ConnectWorker(connect_dist, props, tmp_path, jvm_procs, "connect-worker-2")
    status, names = worker2.request("GET", "/connectors")
    assert status == 200 and sorted(names) == ["file-sink", "file-source"], (status, names)
    worker2.wait_running(["file-source", "file-sink"])
    wait_until(lambda: during[-1] in sink_lines(sink_file)[-len(during):], 90,
               "the lines written while the worker was down", interval=0.2)
    append_lines(source_file, after)
    expected = first + burst + during + after
    wait_until(lambda: sink_lines(sink_file)[-1:] == after[-1:], 90, "the lines written after the restart",
               interval=0.2)
    got = sink_lines(sink_file)
    if stop == "sigterm":
        dups = [line for line, n in collections.Counter(got).items() if n > 1]
        assert not dups, f"{len(dups)} lines repeated in the sink after the restart, e.g. {dups[:5]}"
        assert got == expected, f"sink file differs: {len(got)} lines, expected {len(expected)}"
    else:
        # At-least-once sink: lines may come again after the kill, never out of order or missing.
        deduped = list(dict.fromkeys(got))
        assert deduped == expected, f"sink file (without repeats) differs: {len(deduped)} lines, expected {len(expected)}"
        print(f"sink: {len(got) - len(expected)} lines written twice (at-least-once sink after kill -9)")

    # The topic holds every line once, in order (one partition), and the source offset stored by
    # Connect is the source file's size.
    records = read_all(b, topic, "read_committed" if source_extra else "read_uncommitted")
    assert [v.decode() for _, _, _, v in sorted(records, key=lambda r: (r[0], r[1]))] == expected
    size = source_file.stat().st_size

    def source_offset():
        status, body = worker2.request("GET", "/connectors/file-source/offsets")
        assert status == 200, (status, body)
        positions = [o.get("offset", {}).get("position") for o in body.get("offsets", [])]
        return positions if positions == [size] else None

    wait_until(source_offset, 30, f"the stored source offset to reach {size}", interval=0.5)

    rc = worker2.proc.terminate(timeout=90)
    assert rc in (0, 128 + signal.SIGTERM), f"worker exit code {rc}"
