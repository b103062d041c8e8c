#!/usr/bin/env python3
"""Benchmarks Conflux's Kafka front-end with a real librdkafka client (confluent-kafka).

Starts the release binary on an OS-chosen port with a fresh data directory, then:
  produce  -- acks=all throughput: N records of S bytes, lz4 off, as fast as librdkafka sends.
  latency  -- end-to-end latency: a producer sends timestamped records at a fixed rate while a
              consumer (already at the tail) measures send->receive time; prints p50/p99/max.

Usage:  .venv/bin/python bench/kafka_bench.py produce --records 200000 --size 1024
        .venv/bin/python bench/kafka_bench.py latency --records 2000 --rate 500
Results go in docs/BENCHMARKS.md with the machine and the command.
"""

import argparse
import os
import re
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start_broker(binary, extra):
    data = tempfile.mkdtemp(prefix="conflux-bench-")
    log = open(os.path.join(data, "broker.log"), "w+")
    args = [binary, "serve", "--data-dir", os.path.join(data, "d"), "--kafka-listen", "127.0.0.1:0",
            "--mqtt-listen", "127.0.0.1:0", "--amqp-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", *extra]
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
    """The broker's peak resident memory (VmHWM), in MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def stop_broker(proc, data):
    print(f"broker peak RSS: {peak_rss_mib(proc.pid):.1f} MiB")
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    shutil.rmtree(data, ignore_errors=True)


def create(bootstrap, topic, partitions):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic].result(30)


def produce(bootstrap, a):
    create(bootstrap, "bench", a.partitions)
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": a.linger,
                  "batch.size": a.batch, "compression.type": a.compression,
                  "enable.idempotence": a.idempotence, "queue.buffering.max.kbytes": 1048576})
    payload = os.urandom(a.size)
    errors = []
    done = [0]

    def cb(err, _msg):
        if err:
            errors.append(err)
        done[0] += 1

    t0 = time.perf_counter()
    for i in range(a.records):
        while True:
            try:
                p.produce("bench", payload, key=str(i % 1024).encode(), on_delivery=cb)
                break
            except BufferError:
                p.poll(0.01)
        p.poll(0)
    p.flush(120)
    dt = time.perf_counter() - t0
    assert not errors and done[0] == a.records, (errors[:3], done[0])
    mb = a.records * a.size / 1e6
    print(f"produce acks=all: {a.records} records x {a.size} B in {dt:.2f} s = "
          f"{a.records / dt:,.0f} rec/s, {mb / dt:,.1f} MB/s (payload)")


def latency(bootstrap, a):
    create(bootstrap, "lat", 1)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "lat", "auto.offset.reset": "earliest",
                  "fetch.wait.max.ms": 500, "fetch.min.bytes": 1})
    c.subscribe(["lat"])
    while not c.assignment():
        c.poll(0.1)
    # The topic is new: reading the warm-up record puts the consumer at the tail.
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0})
    p.produce("lat", b"warmup")
    p.flush(10)
    while True:
        m = c.poll(5)
        if m is not None and not m.error():
            break
    lat = []

    def consume():
        while len(lat) < a.records:
            m = c.poll(5)
            if m is None or m.error():
                continue
            sent = struct.unpack(">d", m.value()[:8])[0]
            lat.append((time.perf_counter() - sent) * 1000)

    t = threading.Thread(target=consume)
    t.start()
    gap = 1.0 / a.rate
    nxt = time.perf_counter()
    for _ in range(a.records):
        nxt += gap
        while time.perf_counter() < nxt:
            time.sleep(max(0, nxt - time.perf_counter()))
        p.produce("lat", struct.pack(">d", time.perf_counter()) + b"x" * 100)
        p.poll(0)
    p.flush(30)
    t.join(60)
    c.close()
    lat.sort()
    q = lambda f: lat[min(len(lat) - 1, int(f * len(lat)))]
    print(f"end-to-end (acks=all produce -> fetch) over {len(lat)} records at {a.rate}/s: "
          f"p50 {q(0.5):.2f} ms, p99 {q(0.99):.2f} ms, max {lat[-1]:.2f} ms, mean {statistics.mean(lat):.2f} ms")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["produce", "latency"])
    ap.add_argument("--binary", default=os.path.join(ROOT, "target/release/conflux"))
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--linger", type=int, default=5)
    ap.add_argument("--batch", type=int, default=1_000_000)
    ap.add_argument("--compression", default="none")
    ap.add_argument("--idempotence", action="store_true")
    ap.add_argument("--rate", type=int, default=500)
    ap.add_argument("--fsync", default="always")
    a = ap.parse_args()
    proc, bootstrap, data = start_broker(a.binary, ["--fsync", a.fsync])
    try:
        (produce if a.mode == "produce" else latency)(bootstrap, a)
    finally:
        stop_broker(proc, data)


if __name__ == "__main__":
    main()
