#!/usr/bin/env python3
"""Benchmarks Conflux's Kafka front-end with a real librdkafka client (confluent-kafka).

Three modes:
  produce  -- starts the Conflux release binary on an OS-chosen port with a fresh data directory;
              acks=all throughput: N records of S bytes, lz4 off, as fast as librdkafka sends.
  latency  -- same broker set-up; end-to-end latency: a producer sends timestamped records at a
              fixed rate while a consumer (already at the tail) measures send->receive time;
              prints p50/p99/max.
  compare  -- Conflux side by side with Apache Kafka 4.4 (the reference broker, from
              target/kafka-dist via tests/jvm/apache-kafka.sh, KRaft, loopback) in ONE run:
              the same scenarios against each broker, brokers alternated and rounds repeated,
              printed as a table of medians, ranges and Conflux/Kafka ratios.

Usage:  .venv/bin/python bench/kafka_bench.py produce --records 200000 --size 1024
        .venv/bin/python bench/kafka_bench.py latency --records 2000 --rate 500
        .venv/bin/python bench/kafka_bench.py compare            # defaults: 3 rounds, 3 brokers, ~10 min
        .venv/bin/python bench/kafka_bench.py compare --help
Results go in docs/BENCHMARKS.md with the machine and the command.
"""

import argparse
import datetime
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

import confluent_kafka
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from bench_common import fmt, ratio, size_label, stop_on_signals

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --------------------------------------------------------------------------------------------
# Conflux broker (produce / latency modes, and the Conflux side of compare)

def start_broker(binary, extra, parent=None):
    data = tempfile.mkdtemp(prefix="conflux-bench-", dir=parent)
    log = open(os.path.join(data, "broker.log"), "w+")
    args = [binary, "serve", "--data-dir", os.path.join(data, "d"), "--kafka-listen", "127.0.0.1:0",
            "--mqtt-listen", "127.0.0.1:0", "--mqtt-ws-listen", "127.0.0.1:0", "--amqp-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", *extra]
    proc = subprocess.Popen(args, stderr=log, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        log.seek(0)
        m = re.search(r"protocol=kafka addr=(\S+)", log.read())
        if m:
            return proc, m.group(1), data
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    sys.exit("broker did not start; see " + log.name)


def peak_rss_mib(pid):
    """A process's peak resident memory (VmHWM), in MiB."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def stop_broker(proc, data):
    print(f"broker peak RSS: {peak_rss_mib(proc.pid):.1f} MiB")
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    shutil.rmtree(data, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Client-side scenarios (librdkafka via confluent-kafka); each returns its figures as a dict

def create(bootstrap, topic, partitions, config=None):
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 4})  # no info-level BGQUEUE lines
    nt = NewTopic(topic, num_partitions=partitions, replication_factor=1, config=dict(config or {}))
    admin.create_topics([nt])[topic].result(30)
    if config:  # prove the broker took the topic configs (e.g. Kafka's flush.messages=1)
        res = ConfigResource(ConfigResource.Type.TOPIC, topic)
        got = admin.describe_configs([res])[res].result(30)
        for k, v in config.items():
            if got[k].value != str(v):
                raise RuntimeError(f"topic {topic}: {k}={got[k].value}, wanted {v}")


def produce_run(bootstrap, topic, records, size, partitions=3, linger=5, batch=1_000_000,
                compression="none", idempotence=False, topic_config=None, quiet=False):
    create(bootstrap, topic, partitions, topic_config)
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": linger,
                  "batch.size": batch, "compression.type": compression,
                  "enable.idempotence": idempotence, "queue.buffering.max.kbytes": 1048576})
    payload = os.urandom(size)
    errors = []
    done = [0]

    def cb(err, _msg):
        if err:
            errors.append(err)
        done[0] += 1

    t0 = time.perf_counter()
    for i in range(records):
        while True:
            try:
                p.produce(topic, payload, key=str(i % 1024).encode(), on_delivery=cb)
                break
            except BufferError:
                p.poll(0.01)
        p.poll(0)
    p.flush(300)
    dt = time.perf_counter() - t0
    if errors or done[0] != records:
        raise RuntimeError(f"produce: {len(errors)} errors {errors[:3]}, {done[0]}/{records} delivered")
    mb = records * size / 1e6
    r = {"records": records, "size": size, "secs": dt, "rec_s": records / dt, "mb_s": mb / dt}
    if not quiet:
        print(f"produce acks=all: {records} records x {size} B in {dt:.2f} s = "
              f"{r['rec_s']:,.0f} rec/s, {r['mb_s']:,.1f} MB/s (payload)", flush=True)
    return r


def txn_run(bootstrap, topic, records, size, per_txn, partitions=3, linger=5, batch=1_000_000):
    """Transactional produce: `records` records in transactions of `per_txn` (acks=all,
    idempotent, as transactions require); records/s including the commits."""
    create(bootstrap, topic, partitions)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": linger, "batch.size": batch,
                  "transactional.id": f"bench-{topic}", "queue.buffering.max.kbytes": 1048576})
    p.init_transactions(60)
    payload = os.urandom(size)
    t0 = time.perf_counter()
    sent = 0
    while sent < records:
        p.begin_transaction()
        for i in range(min(per_txn, records - sent)):
            while True:
                try:
                    p.produce(topic, payload, key=str((sent + i) % 1024).encode())
                    break
                except BufferError:
                    p.poll(0.01)
            p.poll(0)
        sent += min(per_txn, records - sent)
        p.commit_transaction(60)
    dt = time.perf_counter() - t0
    r = {"records": records, "size": size, "per_txn": per_txn, "secs": dt, "rec_s": records / dt}
    print(f"transactional produce: {records} x {size} B in transactions of {per_txn}: {dt:.2f} s = "
          f"{r['rec_s']:,.0f} rec/s", flush=True)
    return r


def latency_run(bootstrap, topic, records, rate, topic_config=None, quiet=False):
    create(bootstrap, topic, 1, topic_config)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": topic, "auto.offset.reset": "earliest",
                  "fetch.wait.max.ms": 500, "fetch.min.bytes": 1})
    c.subscribe([topic])
    deadline = time.monotonic() + 60
    while not c.assignment():
        if time.monotonic() > deadline:
            c.close()
            raise RuntimeError("latency: consumer got no assignment in 60 s")
        c.poll(0.1)
    # The topic is new: reading the warm-up record puts the consumer at the tail.
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0})
    p.produce(topic, b"warmup")
    p.flush(10)
    while True:
        m = c.poll(5)
        if m is not None and not m.error():
            break
        if time.monotonic() > deadline:
            c.close()
            raise RuntimeError("latency: warm-up record not received in 60 s")
    lat = []
    stop = threading.Event()

    def consume():
        while len(lat) < records and not stop.is_set():
            m = c.poll(0.5)
            if m is None or m.error():
                continue
            sent = struct.unpack(">d", m.value()[:8])[0]
            lat.append((time.perf_counter() - sent) * 1000)

    t = threading.Thread(target=consume)
    t.start()
    gap = 1.0 / rate
    nxt = time.perf_counter()
    for _ in range(records):
        nxt += gap
        while time.perf_counter() < nxt:
            time.sleep(max(0, nxt - time.perf_counter()))
        p.produce(topic, struct.pack(">d", time.perf_counter()) + b"x" * 100)
        p.poll(0)
    p.flush(30)
    t.join(60)
    stop.set()
    t.join()
    c.close()
    if not lat:
        raise RuntimeError("latency: no record received")
    lat.sort()
    q = lambda f: lat[min(len(lat) - 1, int(f * len(lat)))]
    r = {"records": len(lat), "sent": records, "rate": rate, "p50": q(0.5), "p99": q(0.99),
         "max": lat[-1], "mean": statistics.mean(lat)}
    if not quiet:
        print(f"end-to-end (acks=all produce -> fetch) over {len(lat)} records at {rate}/s: "
              f"p50 {r['p50']:.2f} ms, p99 {r['p99']:.2f} ms, max {r['max']:.2f} ms, mean {r['mean']:.2f} ms",
              flush=True)
    if len(lat) != records:
        raise RuntimeError(f"latency: {len(lat)} of {records} records received")
    return r


# --------------------------------------------------------------------------------------------
# compare: Conflux and Apache Kafka 4.4 side by side

PERF_LINE = re.compile(r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, "
                       r"([\d.]+) ms max latency, (\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th")


def java_perf_run(dist, bootstrap, topic, records, size, topic_config=None, props=()):
    """kafka-producer-perf-test (Apache Kafka's Java client) from the dist folder."""
    create(bootstrap, topic, 3, topic_config)
    cmd = [os.path.join(dist, "bin/kafka-producer-perf-test.sh"), "--bootstrap-server", bootstrap,
           "--topic", topic, "--num-records", str(records), "--record-size", str(size),
           "--throughput", "-1", "--command-property", "acks=all", *props]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    dt = time.perf_counter() - t0
    m = None
    for line in out.stdout.splitlines():
        m = PERF_LINE.search(line) or m
    if out.returncode != 0 or m is None or int(m.group(1)) != records:
        tail = (out.stdout + out.stderr).strip().splitlines()[-15:]
        raise RuntimeError(f"kafka-producer-perf-test rc={out.returncode}: " + " | ".join(tail))
    rec_s = float(m.group(2))
    r = {"records": records, "size": size, "rec_s": rec_s, "mb_s": rec_s * size / 1e6,
         "avg_ms": float(m.group(4)), "p50_ms": int(m.group(6)), "p99_ms": int(m.group(8)),
         "wall_secs": dt, "line": m.group(0)}
    print(f"kafka-producer-perf-test: {m.group(0)}", flush=True)
    return r


def port_free(port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


class ConfluxBroker:
    durability = ("`--fsync always` (its default): every acknowledged write is fsync'd first; "
                  "produce requests in flight share one fsync (group commit)")

    def __init__(self, binary, workdir):
        self.name, self.key = "Conflux", "conflux"
        self.binary, self.workdir = binary, workdir
        self.proc = self.data = self.bootstrap = None
        self.topic_config = {}

    def start(self):
        t0 = time.monotonic()
        self.proc, self.bootstrap, self.data = start_broker(self.binary, ["--fsync", "always"], self.workdir)
        return time.monotonic() - t0

    def pid(self):
        return self.proc.pid

    def stop(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.proc = None
        if self.data:
            shutil.rmtree(self.data, ignore_errors=True)
            self.data = None


class KafkaBroker:
    """Apache Kafka 4.4 run by tests/jvm/apache-kafka.sh (KRaft broker+controller, 1 GiB heap)."""

    def __init__(self, name, key, port, workdir, dist, topic_config, durability):
        self.name, self.key, self.port = name, key, port
        self.workdir, self.dist = workdir, dist
        self.topic_config, self.durability = topic_config, durability
        self.data = self.bootstrap = None
        self.script = os.path.join(ROOT, "tests/jvm/apache-kafka.sh")

    def _env(self):
        return dict(os.environ, CONFLUX_KAFKA_DIST=self.dist)

    def start(self):
        # These ports sit in Linux's ephemeral range, so a client socket (even the previous broker's
        # own connection to its controller, closing) can hold one for a moment: wait up to 60 s.
        deadline = time.monotonic() + 60
        while not (port_free(self.port) and port_free(self.port + 1)):
            if time.monotonic() > deadline:
                raise SystemExit(f"port {self.port} or {self.port + 1} is in use; pick others with --kafka-port")
            time.sleep(1)
        self.data = tempfile.mkdtemp(prefix=f"{self.key}-", dir=self.workdir)
        t0 = time.monotonic()
        out = subprocess.run([self.script, "start", str(self.port), self.data], env=self._env(),
                             capture_output=True, text=True, timeout=240)
        if out.returncode != 0:
            raise SystemExit(f"{self.name} did not start (rc {out.returncode}):\n{out.stdout}{out.stderr}")
        self.bootstrap = f"127.0.0.1:{self.port}"
        return time.monotonic() - t0

    def pid(self):
        with open(os.path.join(self.data, "kafka.pid")) as f:
            return int(f.read())

    def stop(self):
        if self.data:
            subprocess.run([self.script, "stop", str(self.port), self.data], env=self._env(),
                           capture_output=True, text=True, timeout=60)
            shutil.rmtree(self.data, ignore_errors=True)
            self.data = None


def run_suite(b, a):
    """Every scenario against broker b (just started); returns {scenario: figures or {"error"}}."""
    res = {}
    tc = b.topic_config

    def step(key, fn):
        try:
            res[key] = fn()
        except Exception as e:  # noqa: BLE001 -- one failing scenario must not end the run
            print(f"  !! {b.name} {key}: {e}", flush=True)
            res[key] = {"error": str(e)[:500]}
        os.sync()  # untimed: this scenario's write-back must not land in the next one's time

    # Untimed warm-up on every broker: a JVM serves its first requests interpreted, and without this
    # Kafka's first latency run measures JIT compilation (p50 ~100 ms, then ~0.5 ms once warm).
    if a.warmup > 0:
        step("warmup", lambda: produce_run(b.bootstrap, "warmup", a.warmup, 1024, topic_config=tc, quiet=True))
        step("warmup_latency", lambda: latency_run(b.bootstrap, "warmup-latency", max(a.rates) * 5, max(a.rates),
                                                    topic_config=tc, quiet=True))
    for size in a.sizes:
        step(f"produce{size}", lambda size=size: produce_run(
            b.bootstrap, f"produce{size}", a.records, size, partitions=a.partitions, linger=a.linger,
            batch=a.batch, topic_config=tc))
    for rate in a.rates:
        step(f"latency{rate}", lambda rate=rate: latency_run(
            b.bootstrap, f"latency{rate}", a.lat_records, rate, topic_config=tc))
    if a.java_records > 0:
        step("java", lambda: java_perf_run(a.kafka_dist, b.bootstrap, "perf", a.java_records, 1024,
                                           topic_config=tc, props=a.java_props))
    res["rss"] = {"mib": peak_rss_mib(b.pid())}
    return res


def machine_info(a):
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) / 1024 / 1024
    dev = subprocess.run(["df", "--output=source", a.work_dir], capture_output=True, text=True).stdout.split()[-1]
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()
    return {"cpu": cpu, "cores": os.cpu_count(), "mem_gib": round(mem, 1), "kernel": platform.release(),
            "disk": dev, "java": java[0] if java else "?",
            "confluent_kafka": confluent_kafka.__version__, "librdkafka": confluent_kafka.libversion()[0]}


def compare(a, argv):
    t_start = time.monotonic()
    started = datetime.datetime.now().astimezone()
    cmdline = " ".join(shlex.quote(x) for x in [os.path.relpath(sys.executable, ROOT)
                                                if sys.executable.startswith(ROOT) else sys.executable,
                                                os.path.relpath(os.path.abspath(__file__), ROOT), *argv])
    os.makedirs(a.work_dir, exist_ok=True)
    # A private copy of the binary: a rebuild of target/release during the run changes nothing here.
    binary = os.path.join(a.work_dir, "conflux")
    if os.path.abspath(a.binary) != os.path.abspath(binary):
        shutil.copy2(a.binary, binary)
    with open(binary, "rb") as f:
        bin_sha = hashlib.sha256(f.read()).hexdigest()[:12]
    bin_mtime = datetime.datetime.fromtimestamp(os.path.getmtime(a.binary)).isoformat(timespec="seconds")
    if not os.path.isfile(os.path.join(a.kafka_dist, "libs/kafka_2.13-4.4.0.jar")):
        subprocess.run([os.path.join(ROOT, "scripts/kafka-dist.sh"), a.kafka_dist], check=True,
                       stdout=subprocess.DEVNULL)
    run_dir = tempfile.mkdtemp(prefix="compare-", dir=a.work_dir)

    brokers = [ConfluxBroker(binary, run_dir),
               KafkaBroker("Kafka", "kafka", a.kafka_port, run_dir, a.kafka_dist, {},
                           "defaults: acks=all is acknowledged once the record is in the page cache; "
                           "no fsync per write (log.flush.interval.messages/ms unset), the OS writes back later")]
    if a.kafka_fsync:
        brokers.append(KafkaBroker("Kafka flush.messages=1", "kafka_fsync", a.kafka_port + 2, run_dir,
                                   a.kafka_dist, {"flush.messages": "1"},
                                   "`flush.messages=1` on every benchmark topic (the per-topic form of "
                                   "`log.flush.interval.messages=1`): the log is fsync'd after every append, "
                                   "before the acknowledgement"))

    stop_on_signals()

    info = machine_info(a)
    print(f"== Conflux vs Apache Kafka 4.4, {started:%Y-%m-%d %H:%M %Z}", flush=True)
    print(f"command: {cmdline}")
    print(f"machine: {info['cores']} × {info['cpu']}, {info['mem_gib']} GiB RAM, disk {info['disk']}, "
          f"Linux {info['kernel']}; load average at start {os.getloadavg()[0]:.2f}")
    print(f"clients: confluent-kafka {info['confluent_kafka']} (librdkafka {info['librdkafka']}); "
          f"{info['java']} for Kafka and kafka-producer-perf-test")
    print(f"conflux: {a.binary} copied to {binary} (sha256 {bin_sha}…, built {bin_mtime})")
    for b in brokers:
        print(f"durability, {b.name}: {b.durability}")
    print(flush=True)

    results = {b.key: [] for b in brokers}
    starts = {b.key: [] for b in brokers}
    try:
        for r in range(a.rounds):
            order = brokers[r % len(brokers):] + brokers[:r % len(brokers)]
            for b in order:
                print(f"-- round {r + 1}/{a.rounds}: {b.name}", flush=True)
                try:
                    secs = b.start()
                    starts[b.key].append(secs)
                    print(f"   started on {b.bootstrap} in {secs:.1f} s (pid {b.pid()})", flush=True)
                    res = run_suite(b, a)
                    print(f"   peak RSS {res['rss']['mib']:.1f} MiB", flush=True)
                    results[b.key].append(res)
                finally:
                    b.stop()
    finally:
        for b in brokers:
            b.stop()
        shutil.rmtree(run_dir, ignore_errors=True)

    elapsed = time.monotonic() - t_start
    table = render(a, brokers, results)
    print()
    print(table)
    print()
    print(f"run time {elapsed / 60:.1f} min; load average at end {os.getloadavg()[0]:.2f}; "
          f"broker start-up (median) " + ", ".join(
              f"{b.name} {statistics.median(starts[b.key]):.1f} s" for b in brokers if starts[b.key]))
    errors = [(k, i + 1, s, v["error"]) for k, rs in results.items() for i, res in enumerate(rs)
              for s, v in res.items() if "error" in v]
    for k, rnd, s, e in errors:
        print(f"error: {k} round {rnd} {s}: {e}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"command": cmdline, "started": started.isoformat(), "run_secs": elapsed,
                       "machine": info, "conflux_sha256": bin_sha, "start_secs": starts,
                       "results": results}, f, indent=1)
        print(f"raw figures: {a.json}")
    return 1 if errors else 0


def render(a, brokers, results):
    rows = []
    for size in a.sizes:
        label = f"produce {a.records:,} × {size_label(size)}, librdkafka, acks=all"
        if size >= 1024:
            rows.append((f"produce{size}", "mb_s", label, "MB/s", "↑"))
        else:
            rows.append((f"produce{size}", "rec_s", label, "records/s", "↑"))
    for rate in a.rates:
        for q in ("p50", "p99"):
            rows.append((f"latency{rate}", q, f"end-to-end latency at {rate:,}/s, {q}", "ms", "↓"))
    if a.java_records > 0:
        rows.append(("java", "mb_s", f"kafka-producer-perf-test {a.java_records:,} × 1 KiB, Java client, acks=all",
                     "MB/s", "↑"))
    rows.append(("rss", "mib", "broker peak RSS (over the whole round)", "MiB", "↓"))

    base = brokers[0]
    head = "| scenario | unit | " + " | ".join(f"{b.name}: median (range)" for b in brokers) + " | " + \
        " | ".join(f"Conflux / {b.name}" for b in brokers[1:]) + " |"
    sep = "|---|---|" + "---:|" * (len(brokers) + len(brokers) - 1)
    lines = [head, sep]
    for scen, field, label, unit, better in rows:
        meds, cells = {}, []
        for b in brokers:
            vals = [res[scen][field] for res in results[b.key] if scen in res and field in res[scen]]
            vals = [v for v in vals if v == v]
            if not vals:
                cells.append("error")
                continue
            meds[b.key] = statistics.median(vals)
            cells.append(f"{fmt(meds[b.key])} ({fmt(min(vals))}–{fmt(max(vals))})" if len(vals) > 1
                         else fmt(vals[0]))
        ratios = [ratio(meds[base.key] / meds[b.key]) if base.key in meds and meds.get(b.key) else "–"
                  for b in brokers[1:]]
        lines.append(f"| {label} | {unit} {better} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    n = min(len(v) for v in results.values())
    lines.append("")
    lines.append(f"{n} rounds; ↑ higher is better, ↓ lower is better. A ratio > 1 is Conflux ahead on ↑ rows and "
                 f"behind on ↓ rows.")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------

def main():
    argv = sys.argv[1:]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--binary", default=os.environ.get("CONFLUX_BIN", os.path.join(ROOT, "target/release/conflux")),
                        help="Conflux binary (default $CONFLUX_BIN or target/release/conflux)")
    common.add_argument("--partitions", type=int, default=3)
    common.add_argument("--linger", type=int, default=5)
    common.add_argument("--batch", type=int, default=1_000_000)

    pp = sub.add_parser("produce", parents=[common], help="acks=all produce throughput against Conflux")
    pl = sub.add_parser("latency", parents=[common], help="end-to-end latency against Conflux")
    for p in (pp, pl):
        p.add_argument("--records", type=int, default=200_000)
        p.add_argument("--size", type=int, default=1024)
        p.add_argument("--compression", default="none")
        p.add_argument("--idempotence", action="store_true")
        p.add_argument("--rate", type=int, default=500)
        p.add_argument("--fsync", default="always")

    pt = sub.add_parser("txn", parents=[common],
                        help="transactional produce (transactions of --per-txn records) vs plain acks=all, one run")
    pt.add_argument("--records", type=int, default=200_000)
    pt.add_argument("--size", type=int, default=1024)
    pt.add_argument("--per-txn", type=lambda s: [int(x) for x in s.split(",")], default=[100, 1000])
    pt.add_argument("--rounds", type=int, default=3)
    pc = sub.add_parser("compare", parents=[common], help="Conflux vs Apache Kafka 4.4 on this machine, one run",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    pc.add_argument("--rounds", type=int, default=3, help="each round runs every scenario on every broker")
    pc.add_argument("--records", type=int, default=1_000_000, help="records per produce scenario")
    pc.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[1024, 100],
                    help="record sizes of the produce scenarios (comma-separated bytes)")
    pc.add_argument("--rates", type=lambda s: [int(x) for x in s.split(",")], default=[1000, 5000],
                    help="records/s of the latency scenarios (comma-separated)")
    pc.add_argument("--lat-records", type=int, default=10_000, help="records per latency scenario")
    pc.add_argument("--warmup", type=int, default=100_000,
                    help="untimed warm-up after each start: this many 1 KiB records produced, then 5 s of the "
                         "latency scenario at the highest rate (0 = no warm-up)")
    pc.add_argument("--java-records", type=int, default=1_000_000,
                    help="records of the kafka-producer-perf-test scenario (0 = skip)")
    pc.add_argument("--java-props", nargs="*", default=[],
                    help="extra 'k=v' producer properties for kafka-producer-perf-test "
                         "(default: the Java client's own defaults + acks=all)")
    pc.add_argument("--kafka-port", type=int, default=39092,
                    help="Apache Kafka's port (controller +1; the flush.messages=1 broker uses +2/+3)")
    pc.add_argument("--no-kafka-fsync", dest="kafka_fsync", action="store_false",
                    help="skip the third broker row: Kafka with flush.messages=1 (fsync per append)")
    pc.add_argument("--kafka-dist", default=os.environ.get("CONFLUX_KAFKA_DIST", os.path.join(ROOT, "target/kafka-dist")))
    pc.add_argument("--work-dir", default="/tmp/bench-work",
                    help="gets a private copy of the binary and the brokers' data dirs (wiped at the end)")
    pc.add_argument("--json", help="also write every raw figure here")
    a = ap.parse_args(argv)

    if a.mode == "compare":
        if a.java_props:
            a.java_props = ["--command-property", *a.java_props]
        sys.exit(compare(a, argv))
    if a.mode == "txn":
        proc, bootstrap, data = start_broker(a.binary, [])
        try:
            rows = {"plain": []}
            for n in a.per_txn:
                rows[n] = []
            for r in range(a.rounds):
                rows["plain"].append(produce_run(bootstrap, f"plain{r}", a.records, a.size, a.partitions,
                                                 a.linger, a.batch, idempotence=True)["rec_s"])
                for n in a.per_txn:
                    rows[n].append(txn_run(bootstrap, f"txn{n}-{r}", a.records, a.size, n, a.partitions,
                                           a.linger, a.batch)["rec_s"])
            base = statistics.median(rows["plain"])
            print(f"\n| produce ({a.records:,} x {a.size} B, {a.partitions} partitions) | records/s (median of {a.rounds}) | vs plain |")
            print("|---|---:|---:|")
            print(f"| plain acks=all, idempotent | {base:,.0f} | 1.00 |")
            for n in a.per_txn:
                m = statistics.median(rows[n])
                print(f"| transactions of {n:,} records | {m:,.0f} | {m / base:.2f} |")
        finally:
            stop_broker(proc, data)
        return
    proc, bootstrap, data = start_broker(a.binary, ["--fsync", a.fsync])
    try:
        if a.mode == "produce":
            produce_run(bootstrap, "bench", a.records, a.size, a.partitions, a.linger, a.batch,
                        a.compression, a.idempotence)
        else:
            latency_run(bootstrap, "lat", a.records, a.rate)
    finally:
        stop_broker(proc, data)


if __name__ == "__main__":
    main()
