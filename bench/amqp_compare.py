#!/usr/bin/env python3
"""Conflux's AMQP 0-9-1 front-end side by side with RabbitMQ (Debian's package) in ONE run.

Both brokers run on loopback on this machine, one after the other, each started by this script
as the current user with its state in a temporary directory on OS-chosen free ports (RabbitMQ
with its own epmd on a free port too; the system service is never touched). The load comes from
RabbitMQ's own PerfTest (com.rabbitmq:perf-test from Maven Central, run from a local classpath)
and, for the idle connections, pika. Brokers alternate and the rounds repeat; the result is a
table of medians, ranges and Conflux/RabbitMQ ratios.

Scenarios (per round and broker; every run is --duration seconds unless stated):
  idle        on the freshly started broker: --connections idle AMQP connections (pika, one
              channel each, heartbeat off) held; the broker's VmRSS before and while held;
              then the peak-RSS counter is reset (/proc/<pid>/clear_refs 5) for the load runs;
  warm-up     untimed: 1 publisher + 1 consumer, confirms, persistent, 1 KiB, --warmup s;
  publish     1 publisher, publisher confirms (--confirm in flight), persistent messages to one
              durable queue, no consumer; 1 KiB and 100 B bodies: confirmed msgs/s;
  consume     1 consumer drains the 1 KiB queue the publish run filled (manual ack, prefetch
              --prefetch, multi-ack every --multi-ack): msgs/s, until empty (at most 2 × duration);
  latency     1 publisher at --rate msgs/s (confirms, persistent, 1 KiB) -> durable queue -> 1
              consumer (same ack settings): publish -> deliver p50/p99 (PerfTest's consumer latency);
  fan-out     1 publisher (confirms, persistent, 1 KiB, unthrottled) -> fanout exchange -> 10
              durable queues -> 10 consumers: published msgs/s, deliveries/s, p50/p99;
  (a) pubsub  1 publisher (confirms, --pc-confirm 200 in flight, persistent) -> one durable queue ->
              1 consumer (manual ack, prefetch --pc-prefetch 200, multi-ack every --pc-multi-ack 100),
              both at once, 100 B and 4 KiB bodies: confirmed and consumed msgs/s, latency;
  (c) latency_half  the same set-up, 100 B, with the publisher held (PerfTest -r) at half the rate
              this broker reached in (a) at 100 B in the same round: publish -> deliver p50/p99;
  (b) fanout100  transient: 1 publisher (non-persistent 1 KiB messages, confirms 200 in flight)
              -> fanout exchange -> 100 non-durable queues -> 100 consumers (one per queue, the
              (a) ack settings): published msgs/s, deliveries/s, latency;
  (d) xproto  Conflux only: Kafka -> AMQP (confluent-kafka producer, linger.ms=0, acks=all, to topic
              lat.k2a) and MQTT -> AMQP (paho-mqtt QoS 1 publisher to lat/m2a), 500 msgs/s for 10 s
              of 100 B timestamped records each, to a pika consumer (another process) of a queue
              bound to exchange `lat` with key k2a / m2a: send -> receive p50/p99/max;
  (f) lapin  (a)'s set-up driven by lapin, the Rust client (`conflux-bench amqp-pubsub`, --bench)
              instead of PerfTest: 1 publisher connection (confirms, --pc-confirm in flight, persistent,
              unthrottled for --duration s) and 1 consumer connection (prefetch --pc-prefetch, multi-ack
              every --pc-multi-ack), 100 B and 4 KiB: confirmed msgs/s over the publishing time, consumed
              msgs/s until the last delivery, publish -> deliver p50/p99 over every message;
  memory      the broker's VmHWM over warm-up + load runs (for RabbitMQ: the beam.smp process);
  (e) depth   once per broker after the rounds, on a freshly started broker: --depth-bytes (2 GB)
              of 1 KiB persistent messages (confirms, 200 in flight) into one durable queue with no
              consumer (PerfTest -C); VmRSS sampled every 0.5 s, VmHWM (reset first), RSS 5 s after
              the last confirm and after deleting the queue, the data directory's size, and
              RabbitMQ's log lines about memory alarms.
The rate figures are the mean of PerfTest's per-second samples without the first (JVM and
connection start-up) and, for the drain, the last (partial) one. The broker's CPU time
(/proc/<pid>/stat) is sampled around every run. Queues are deleted (pika) after each scenario.

Durability: both brokers confirm a persistent message to a durable queue only once it is on disk:
Conflux (`--fsync always`, its default) fsyncs before every publisher confirm (group commit) and
consumers only ever see fsync'd messages; RabbitMQ (classic queues, 3.10's default v1) confirms a
persistent message on a durable queue after its message store / queue index fsync (batched), OR
once every queue it went to has delivered and had it acked (then it may never be written), and it
delivers to consumers before the fsync.

Usage:  .venv/bin/python bench/amqp_compare.py                 # 3 rounds + depth, ~18 min
        .venv/bin/python bench/amqp_compare.py --scenarios pubsub,latency_half --rounds 1
        .venv/bin/python bench/amqp_compare.py --help
Results go in docs/BENCHMARKS.md with the machine and the command.
"""

import argparse
import datetime
import glob
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from bench_common import (
    copy_binary, cpu_secs, dir_bytes, fmt, free_port, med, proc_status, raise_nofile, ratio, render, size_label, stop_on_signals, values,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PERF_TEST_VERSION = "2.22.1"
RABBITMQ_LIB = "/usr/lib/rabbitmq/bin"  # Debian's real scripts (/usr/sbin/rabbitmq-server su's to rabbitmq)


def port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def reset_hwm(pid):
    """Resets a process's VmHWM to its current RSS (Linux >= 4.0)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def stop_proc(proc, wait=30):
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --------------------------------------------------------------------------------------------
# Brokers

class Conflux:
    name, key = "Conflux", "conflux"
    durability = ("`conflux serve --fsync always` (its default): a persistent message is fsync'd before its "
                  "publisher confirm (group commit: publishes in flight share one fsync); consumers only get "
                  "fsync'd messages")

    def __init__(self, binary, workdir):
        self.binary, self.workdir = binary, workdir
        self.proc = self.data = self.port = self.log = None
        self.kafka_port = self.mqtt_port = None

    def start(self):
        self.data = tempfile.mkdtemp(prefix="conflux-", dir=self.workdir)
        self.log = open(os.path.join(self.data, "broker.log"), "w+")
        args = [self.binary, "serve", "--data-dir", os.path.join(self.data, "d"),
                "--kafka-listen", "127.0.0.1:0", "--mqtt-listen", "127.0.0.1:0",
                "--mqtt-ws-listen", "127.0.0.1:0", "--amqp-listen", "127.0.0.1:0",
                "--http-listen", "127.0.0.1:0", "--fsync", "always"]
        t0 = time.monotonic()
        self.proc = subprocess.Popen(args, stderr=self.log, stdout=subprocess.DEVNULL, preexec_fn=raise_nofile)
        while time.monotonic() < t0 + 30:
            self.log.seek(0)
            text = self.log.read()
            m = re.search(r"listener bound protocol=amqp addr=127\.0\.0\.1:(\d+)", text)
            if m and "listener bound protocol=kafka" in text:  # the kafka line comes last: ready
                self.port = int(m.group(1))
                # the cross-protocol scenarios use the Kafka and MQTT listeners too
                self.kafka_port = int(re.search(r"protocol=kafka addr=127\.0\.0\.1:(\d+)", text).group(1))
                self.mqtt_port = int(re.search(r"protocol=mqtt addr=127\.0\.0\.1:(\d+)", text).group(1))
                return time.monotonic() - t0
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.log.seek(0)
        raise RuntimeError("Conflux did not start: " + self.log.read()[-2000:])

    def pid(self):
        return self.proc.pid

    def log_size(self):
        return os.path.getsize(self.log.name) if self.log else 0

    def warnings_since(self, offset):
        if not self.log:
            return []
        with open(self.log.name, errors="replace") as f:
            f.seek(offset)
            return [l.strip() for l in f if " WARN " in l or " ERROR " in l]

    def stop(self):
        stop_proc(self.proc)
        self.proc = None
        if self.log:
            self.log.close()
            self.log = None
        if self.data:
            shutil.rmtree(self.data, ignore_errors=True)
            self.data = None


RABBITMQ_CONF = """\
# written by bench/amqp_compare.py
listeners.tcp.1 = 127.0.0.1:{port}
log.file.level = warning
log.console = false
"""


class RabbitMQ(Conflux):
    name, key = "RabbitMQ", "rabbitmq"
    durability = ("classic durable queues (3.10's default, CQ v1), persistent messages: a publisher confirm is "
                  "sent once the message store / queue index is fsync'd (batched, like a group commit) -- or, "
                  "for a message that every queue has already delivered and had acked, without any write; "
                  "consumers get messages before they are fsync'd")

    def __init__(self, workdir):
        super().__init__(None, workdir)
        self.server = self.epmd = self.env = None
        self.beam_pid = None

    def _env(self, d, port, epmd_port, dist_port):
        env = dict(os.environ)
        env.update({
            "RABBITMQ_NODENAME": f"amqpbench{os.getpid()}x{port}@localhost",
            "RABBITMQ_CONF_ENV_FILE": f"{d}/rabbitmq-env.conf",
            "RABBITMQ_CONFIG_FILE": f"{d}/rabbitmq.conf",
            "RABBITMQ_ADVANCED_CONFIG_FILE": f"{d}/advanced.config",
            "RABBITMQ_ENABLED_PLUGINS_FILE": f"{d}/enabled_plugins",
            "RABBITMQ_MNESIA_BASE": f"{d}/mnesia",
            "RABBITMQ_LOG_BASE": f"{d}/log",
            "RABBITMQ_PID_FILE": f"{d}/rabbit.pid",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(port),
            "RABBITMQ_DIST_PORT": str(dist_port),
            "ERL_EPMD_PORT": str(epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "RABBITMQ_CTL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        })
        return env

    def start(self):
        if not os.access(f"{RABBITMQ_LIB}/rabbitmq-server", os.X_OK):
            raise RuntimeError(f"no {RABBITMQ_LIB}/rabbitmq-server: apt-get install -y rabbitmq-server")
        d = self.data = tempfile.mkdtemp(prefix="rabbitmq-", dir=self.workdir)
        os.makedirs(f"{d}/mnesia")
        os.makedirs(f"{d}/log")
        self.port, epmd_port, dist_port = free_port(), free_port(), free_port()
        self.env = self._env(d, self.port, epmd_port, dist_port)
        open(f"{d}/rabbitmq-env.conf", "w").close()
        with open(f"{d}/enabled_plugins", "w") as f:
            f.write("[].\n")
        with open(f"{d}/advanced.config", "w") as f:
            f.write("[].\n")
        with open(f"{d}/rabbitmq.conf", "w") as f:
            f.write(RABBITMQ_CONF.format(port=self.port))
        self.log = open(os.path.join(d, "stdout.log"), "w+")
        t0 = time.monotonic()
        # our own epmd, loopback only, on a free port, in its own process so it can be stopped by PID
        self.epmd = subprocess.Popen(["epmd", "-address", "127.0.0.1", "-port", str(epmd_port)],
                                     stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        while not port_open(epmd_port):
            if self.epmd.poll() is not None or time.monotonic() > t0 + 10:
                raise RuntimeError("epmd did not start")
            time.sleep(0.05)
        self.server = subprocess.Popen([f"{RABBITMQ_LIB}/rabbitmq-server"], cwd=d, env=self.env, stdout=self.log,
                                       stderr=self.log, stdin=subprocess.DEVNULL, start_new_session=True,
                                       preexec_fn=raise_nofile)
        w = subprocess.run([f"{RABBITMQ_LIB}/rabbitmqctl", "-q", "wait", "--timeout", "120", f"{d}/rabbit.pid"],
                           env=self.env, capture_output=True, text=True)
        if w.returncode == 0:
            with open(f"{d}/rabbit.pid") as f:
                self.beam_pid = int(f.read().strip())
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if port_open(self.port):
                    return time.monotonic() - t0
                time.sleep(0.1)
        self.log.seek(0)
        raise RuntimeError(f"RabbitMQ did not start ({w.stderr.strip()[-300:]}): " + self.log.read()[-1500:])

    def pid(self):
        return self.beam_pid

    def log_size(self):
        return sum(os.path.getsize(p) for p in glob.glob(f"{self.data}/log/*.log")) if self.data else 0

    def warnings_since(self, _offset):
        return []  # its log is not parsed; it stays in the data dir only while the broker runs

    def stop(self):
        if self.server is not None and self.server.poll() is None:
            subprocess.run([f"{RABBITMQ_LIB}/rabbitmqctl", "-q", "stop"], env=self.env, capture_output=True,
                           timeout=90)
            stop_proc(self.server)
        self.server = None
        if self.beam_pid:
            try:  # rabbitmqctl stop waits for the VM; make sure by its PID
                os.kill(self.beam_pid, 0)
                os.kill(self.beam_pid, signal.SIGKILL)
            except OSError:
                pass
            self.beam_pid = None
        stop_proc(self.epmd, 5)
        self.epmd = None
        if self.log:
            self.log.close()
            self.log = None
        if self.data:
            shutil.rmtree(self.data, ignore_errors=True)
            self.data = None


# --------------------------------------------------------------------------------------------
# Load: PerfTest (Java) and pika

def ensure_perf_test(cache):
    """PerfTest and its runtime dependencies from Maven Central in cache/<version>/lib."""
    lib = os.path.join(cache, PERF_TEST_VERSION, "lib")
    if glob.glob(os.path.join(lib, f"perf-test-{PERF_TEST_VERSION}.jar")):
        return lib
    os.makedirs(cache, exist_ok=True)
    with open(os.path.join(cache, "pom.xml"), "w") as f:
        f.write(f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>conflux.bench</groupId><artifactId>perf-test-fetch</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>com.rabbitmq</groupId><artifactId>perf-test</artifactId><version>{PERF_TEST_VERSION}</version></dependency>
  </dependencies>
</project>
""")
    r = subprocess.run(["mvn", "-q", "-B", "dependency:copy-dependencies", f"-DoutputDirectory={lib}",
                        "-DincludeScope=runtime"], cwd=cache, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit("mvn could not fetch PerfTest:\n" + (r.stdout + r.stderr)[-2000:])
    return lib


SAMPLE = re.compile(r"time:? ([\d.]+) ?s, (.*)")
RATE = re.compile(r"(sent|confirmed|nacked|received): (\d+) msg/s")


def parse_perf_test(out):
    """PerfTest's default console output -> per-second samples and its final summary."""
    samples, summary = [], {}
    for line in out.splitlines():
        m = SAMPLE.search(line)
        if m and "msg/s" in line:
            s = {"t": float(m.group(1))}
            for k, v in RATE.findall(m.group(2)):
                s[k] = int(v)
            samples.append(s)
            continue
        m = re.search(r"(sending|receiving) rate avg: (\d+) msg/s", line)
        if m:
            summary[f"{m.group(1)}_avg"] = int(m.group(2))
        m = re.search(r"(confirm|consumer) latency min/median/75th/95th/99th (\d+)/(\d+)/(\d+)/(\d+)/(\d+) µs", line)
        if m:
            v = [int(x) / 1000 for x in m.groups()[1:]]
            summary[f"{m.group(1)}_lat_ms"] = dict(zip(("min", "p50", "p75", "p95", "p99"), v))
    return samples, summary


def steady_rate(samples, field, drop_last=False):
    """Mean of the per-second samples of a field, without the first (start-up) and optionally the last."""
    vals = [s[field] for s in samples if field in s]
    if len(vals) > 2:
        vals = vals[1:]
        if drop_last and len(vals) > 2:
            vals = vals[:-1]
    return statistics.mean(vals) if vals else float("nan")


def run_perf_test(a, broker, args, timeout, check=True):
    """Runs PerfTest against the broker; returns its samples/summary plus broker and client CPU seconds.

    check=False: a non-zero exit or a timeout is returned (rc, output tail), not raised."""
    pid = broker.pid()
    log0 = broker.log_size()
    uri = f"amqp://guest:guest@127.0.0.1:{broker.port}"
    cmd = ["java", f"-Xmx{a.java_heap}", "-cp", os.path.join(a.perf_test_lib, "*"), "com.rabbitmq.perf.PerfTest",
           "-h", uri, *args]
    c0, t0 = cpu_secs(pid), time.monotonic()
    out = tempfile.TemporaryFile(mode="w+")
    p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        _, status, ru = os.wait4(p.pid, 0) if timeout is None else wait_timeout(p, timeout)
    finally:
        if p.poll() is None:
            p.kill()
    rc = os.waitstatus_to_exitcode(status) if status is not None else -9
    wall = time.monotonic() - t0
    c1 = cpu_secs(pid)
    out.seek(0)
    text = out.read()
    out.close()
    samples, summary = parse_perf_test(text)
    warns = broker.warnings_since(log0)
    errs = [l for l in text.splitlines() if re.search(r"Exception|ERROR|reply-code=[1-9]", l)]
    if check and (rc != 0 or not samples):
        raise RuntimeError(f"PerfTest {' '.join(args)} failed (rc={rc}): " + " | ".join(errs[:4] or text.splitlines()[-4:])
                           + (f"; broker logged: {' | '.join(warns[-3:])}" if warns else ""))
    r = {"samples": samples, **summary, "rc": rc, "wall_secs": wall, "broker_cpu_secs": c1 - c0,
         "client_cpu_secs": (ru.ru_utime + ru.ru_stime) if ru else float("nan")}
    if errs:
        r["client_errors"] = errs[:10]
    if warns:
        r["broker_warnings"] = warns[-20:]
    if rc != 0:
        r["output_tail"] = text.splitlines()[-6:]
    return r


def wait_timeout(p, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            p.returncode = os.waitstatus_to_exitcode(status)
            return pid, status, ru
        time.sleep(0.05)
    p.kill()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = -9
    return p.pid, None, ru


def admin(broker):
    import pika
    params = pika.ConnectionParameters("127.0.0.1", broker.port, credentials=pika.PlainCredentials("guest", "guest"),
                                       heartbeat=0, blocked_connection_timeout=30, socket_timeout=10)
    return pika.BlockingConnection(params)


def queue_depth(broker, queue):
    conn = admin(broker)
    try:
        return conn.channel().queue_declare(queue, passive=True).method.message_count
    finally:
        conn.close()


def cleanup(broker, queues=(), exchanges=()):
    """Deletes the scenario's queues and exchanges so the next one starts from nothing; errors are ignored."""
    import pika
    try:
        conn = admin(broker)
    except Exception:  # noqa: BLE001
        return
    try:
        for q in queues:
            try:
                ch = conn.channel()
                ch.queue_delete(q)
                ch.close()
            except pika.exceptions.AMQPError:
                pass
        for e in exchanges:
            try:
                ch = conn.channel()
                ch.exchange_delete(e)
                ch.close()
            except pika.exceptions.AMQPError:
                pass
    finally:
        try:
            conn.close()
        except Exception:  # noqa: BLE001
            pass


# --------------------------------------------------------------------------------------------
# Scenarios

def common(a, size):
    return ["-s", str(size), "-f", "persistent", "-ad", "false"]


def consumer_args(a):
    return ["-q", str(a.prefetch), "-A", str(a.multi_ack)]


def warmup(a, b):
    r = run_perf_test(a, b, ["-x", "1", "-y", "1", "-c", str(a.confirm), *common(a, 1024), *consumer_args(a),
                             "-u", "bench-warmup", "-z", str(a.warmup)], timeout=a.warmup + 60)
    cleanup(b, ["bench-warmup"])
    return {"confirmed_per_sec": steady_rate(r["samples"], "confirmed"), "wall_secs": r["wall_secs"],
            "broker_cpu_secs": r["broker_cpu_secs"], "client_cpu_secs": r["client_cpu_secs"]}


def publish(a, b, size, queue):
    args = ["-x", str(a.publishers), "-y", "0", "-c", str(a.confirm), *common(a, size), "-u", queue,
            "-z", str(a.duration)]
    r = run_perf_test(a, b, args, timeout=a.duration + 60)
    os.sync()  # untimed: this run's write-back must not land in the next one's time
    r["msgs_per_sec"] = steady_rate(r["samples"], "confirmed")
    r["sent_per_sec"] = steady_rate(r["samples"], "sent")
    r["nacked"] = sum(s.get("nacked", 0) for s in r["samples"])
    r["confirmed_sum"] = sum(s.get("confirmed", 0) for s in r["samples"])  # cross-check for the queue depth
    try:
        r["queue_depth"] = queue_depth(b, queue)
    except Exception as e:  # noqa: BLE001
        r["queue_depth_error"] = str(e)[:300]
    r["broker_cpu_us_per_msg"] = r["broker_cpu_secs"] / max(1, r.get("queue_depth") or 1) * 1e6
    r["args"] = args
    return r


def consume(a, b, queue):
    depth = queue_depth(b, queue)
    args = ["-x", "0", "-y", "1", *consumer_args(a), *common(a, 1024), "-u", queue, "-ew", "empty",
            "-z", str(2 * a.duration)]
    r = run_perf_test(a, b, args, timeout=2 * a.duration + 60)
    r["queue_depth_before"] = depth
    r["msgs_per_sec"] = steady_rate(r["samples"], "received", drop_last=True)
    try:
        r["queue_depth_after"] = queue_depth(b, queue)
    except Exception as e:  # noqa: BLE001
        r["queue_depth_error"] = str(e)[:300]
    consumed = depth - r.get("queue_depth_after", depth)
    r["broker_cpu_us_per_msg"] = r["broker_cpu_secs"] / max(1, consumed) * 1e6
    r["args"] = args
    return r


def latency(a, b, rate):
    q = f"bench-lat-{rate}"
    args = ["-x", "1", "-y", "1", "-r", str(rate), "-c", str(a.confirm), *common(a, 1024), *consumer_args(a),
            "-u", q, "-z", str(a.duration)]
    try:
        r = run_perf_test(a, b, args, timeout=a.duration + 60)
    finally:
        cleanup(b, [q])
    lat = r.get("consumer_lat_ms", {})
    r["p50_ms"], r["p99_ms"] = lat.get("p50", float("nan")), lat.get("p99", float("nan"))
    r["received_per_sec"] = steady_rate(r["samples"], "received")
    r["args"] = args
    return r


def fanout(a, b):
    n = a.fanout_queues
    args = ["-x", "1", "-y", str(n), "-c", str(a.confirm), *common(a, 1024), *consumer_args(a),
            "-e", "bench-fanout", "-t", "fanout", "--queue-pattern", "bench-fo-%d", "--queue-pattern-from", "1",
            "--queue-pattern-to", str(n), "-z", str(a.duration)]
    try:
        r = run_perf_test(a, b, args, timeout=a.duration + 60)
        os.sync()
    finally:
        cleanup(b, [f"bench-fo-{i}" for i in range(1, n + 1)], ["bench-fanout"])
    r["published_per_sec"] = steady_rate(r["samples"], "confirmed")
    r["deliveries_per_sec"] = steady_rate(r["samples"], "received")
    lat = r.get("consumer_lat_ms", {})
    r["p50_ms"], r["p99_ms"] = lat.get("p50", float("nan")), lat.get("p99", float("nan"))
    r["broker_cpu_us_per_msg"] = r["broker_cpu_secs"] / max(1, r["deliveries_per_sec"] * a.duration) * 1e6
    r["args"] = args
    return r


def pc_consumer_args(a):
    return ["-q", str(a.pc_prefetch), "-A", str(a.pc_multi_ack)]


def pubsub(a, b, size):
    """(a) publish + consume at once: 1 publisher (confirms, --pc-confirm in flight, persistent) -> one
    durable queue -> --pc-consumers consumers (manual ack, prefetch --pc-prefetch)."""
    q = f"bench-pc-{size}"
    args = ["-x", "1", "-y", str(a.pc_consumers), "-c", str(a.pc_confirm), "-s", str(size), "-f", "persistent",
            "-ad", "false", *pc_consumer_args(a), "-u", q, "-z", str(a.duration)]
    try:
        r = run_perf_test(a, b, args, timeout=a.duration + 60)
        os.sync()
        try:
            r["queue_depth_after"] = queue_depth(b, q)
        except Exception as e:  # noqa: BLE001
            r["queue_depth_error"] = str(e)[:300]
    finally:
        cleanup(b, [q])
    r["published_per_sec"] = steady_rate(r["samples"], "confirmed")
    r["received_per_sec"] = steady_rate(r["samples"], "received")
    r["msgs_per_sec"] = r["received_per_sec"]
    r["nacked"] = sum(s.get("nacked", 0) for s in r["samples"])
    lat = r.get("consumer_lat_ms", {})
    r["p50_ms"], r["p99_ms"] = lat.get("p50", float("nan")), lat.get("p99", float("nan"))
    r["broker_cpu_us_per_msg"] = r["broker_cpu_secs"] / max(1, sum(s.get("received", 0) for s in r["samples"])) * 1e6
    r["args"] = args
    return r


def lapin_pubsub(a, b, size):
    """(f) (a)'s set-up driven by lapin (`conflux-bench amqp-pubsub`) instead of PerfTest."""
    uri = f"amqp://guest:guest@127.0.0.1:{b.port}/%2f"
    args = [a.bench_bin, "amqp-pubsub", "--uri", uri, "--size", str(size), "--seconds", str(a.duration),
            "--confirm", str(a.pc_confirm), "--prefetch", str(a.pc_prefetch), "--multi-ack", str(a.pc_multi_ack)]
    log_off = b.log_size()
    cpu0, t0 = cpu_secs(b.pid()), time.monotonic()
    p = subprocess.run(args, capture_output=True, text=True, timeout=a.duration + 180)
    wall, cpu = time.monotonic() - t0, cpu_secs(b.pid()) - cpu0
    if p.returncode != 0:
        raise RuntimeError(f"conflux-bench amqp-pubsub rc {p.returncode}: {p.stderr[-500:]}")
    r = json.loads(p.stdout.strip().splitlines()[-1])
    r.update(broker_cpu_secs=cpu, wall_secs=wall, args=args[1:], broker_warnings=b.warnings_since(log_off))
    r["published_per_sec"], r["received_per_sec"] = r["confirmed_per_sec"], r["consumed_per_sec"]
    r["broker_cpu_us_per_msg"] = cpu / max(1, r["consumed"]) * 1e6
    if r["consumed"] < r["acked"]:
        r["dropped"], r["sent"] = r["acked"] - r["consumed"], r["acked"]
    return r


def latency_half(a, b, res):
    """(c) the pubsub scenario's set-up at half the rate this broker reached in it (same round, 100 B)."""
    base = res.get(f"pubsub_{a.half_size}", {})
    top = min(base.get("published_per_sec", float("nan")), base.get("received_per_sec", float("nan")))
    if top != top:
        raise RuntimeError(f"no pubsub_{a.half_size} rate in this round to halve")
    rate = max(1, int(top / 2))
    q = "bench-lat-half"
    args = ["-x", "1", "-y", str(a.pc_consumers), "-r", str(rate), "-c", str(a.pc_confirm), "-s", str(a.half_size),
            "-f", "persistent", "-ad", "false", *pc_consumer_args(a), "-u", q, "-z", str(a.duration)]
    try:
        r = run_perf_test(a, b, args, timeout=a.duration + 60)
        os.sync()
    finally:
        cleanup(b, [q])
    lat = r.get("consumer_lat_ms", {})
    r["rate"] = rate
    r["p50_ms"], r["p99_ms"] = lat.get("p50", float("nan")), lat.get("p99", float("nan"))
    r["received_per_sec"] = steady_rate(r["samples"], "received")
    r["args"] = args
    return r


def fanout100(a, b):
    """(b) transient fan-out: 1 publisher (non-persistent messages; confirms --fanout100-confirm in flight unless
    0) -> fanout exchange -> --fanout100-queues non-durable queues -> one consumer each."""
    n = a.fanout100_queues
    conf = ["-c", str(a.fanout100_confirm)] if a.fanout100_confirm > 0 else []
    args = ["-x", "1", "-y", str(n), *conf, "-s", str(a.fanout100_size), "-ad", "false", *pc_consumer_args(a),
            "-e", "bench-fanout100", "-t", "fanout", "--queue-pattern", "bench-f100-%d", "--queue-pattern-from", "1",
            "--queue-pattern-to", str(n), "-z", str(a.duration)]
    try:
        r = run_perf_test(a, b, args, timeout=a.duration + 120)
        os.sync()
    finally:
        cleanup(b, [f"bench-f100-{i}" for i in range(1, n + 1)], ["bench-fanout100"])
    r["published_per_sec"] = steady_rate(r["samples"], "confirmed" if conf else "sent")
    r["deliveries_per_sec"] = steady_rate(r["samples"], "received")
    lat = r.get("consumer_lat_ms", {})
    r["p50_ms"], r["p99_ms"] = lat.get("p50", float("nan")), lat.get("p99", float("nan"))
    r["broker_cpu_us_per_msg"] = r["broker_cpu_secs"] / max(1, sum(s.get("received", 0) for s in r["samples"])) * 1e6
    r["args"] = args
    return r


# (d) cross-protocol latency (Conflux only): Kafka or MQTT in, AMQP out.

XPROTO = {"k2a": ("Kafka → AMQP", "lat.k2a"), "m2a": ("MQTT → AMQP", "lat/m2a")}


def _xproto_consumer(port, key, queue, prefetch, ready, warm, out_q, limit_secs):
    """Runs in a child process: a pika consumer of `queue` bound to exchange `lat` with `key`.
    Every body starts with tag (W warm-up, M measured, E end), seq, CLOCK_MONOTONIC ns at send."""
    import struct as st
    import pika
    lats, dups, seen = [], 0, set()
    try:
        conn = pika.BlockingConnection(pika.ConnectionParameters(
            "127.0.0.1", port, credentials=pika.PlainCredentials("guest", "guest"), heartbeat=0))
        ch = conn.channel()
        ch.queue_declare(queue, exclusive=True)
        ch.queue_bind(queue, "lat", routing_key=key)  # an undeclared exchange: Conflux declares it
        ch.basic_qos(prefetch_count=prefetch)
        ready.set()
        end = time.monotonic() + limit_secs
        for m, _p, body in ch.consume(queue, inactivity_timeout=0.5):
            now = time.monotonic_ns()
            if m is None:
                if time.monotonic() > end:
                    break
                continue
            ch.basic_ack(m.delivery_tag)
            tag, seq, ts = st.unpack_from(">cIQ", body)
            if tag == b"E":
                break
            if tag == b"W":
                warm.value += 1
                continue
            if seq in seen:
                dups += 1
                continue
            seen.add(seq)
            lats.append((now - ts) / 1e6)
        conn.close()
        out_q.put({"lats": lats, "dups": dups})
    except Exception as e:  # noqa: BLE001
        ready.set()
        out_q.put({"error": repr(e)[:300], "lats": lats, "dups": dups})


def xproto(a, b, kind):
    import multiprocessing as mp
    import struct as st
    label, topic = XPROTO[kind]
    key = kind
    ctx = mp.get_context("fork")
    ready, warm, out_q = ctx.Event(), ctx.Value("i", 0), ctx.Queue()
    n = int(a.xproto_rate * a.xproto_secs)
    pid = b.pid()
    c0, t0 = cpu_secs(pid), time.monotonic()
    cons = ctx.Process(target=_xproto_consumer, args=(b.port, key, f"bench-lat-{kind}", a.pc_prefetch, ready, warm,
                                                       out_q, a.xproto_secs + 60), daemon=True)
    cons.start()
    if not ready.wait(30):
        cons.kill()
        raise RuntimeError("consumer not ready in 30 s")
    pad = b"x" * max(0, a.xproto_size - 13)

    def body(tag, seq):
        return st.pack(">cIQ", tag, seq, time.monotonic_ns()) + pad

    acked = [0]
    if kind == "k2a":
        from confluent_kafka import Producer
        from confluent_kafka.admin import AdminClient, NewTopic
        boot = f"127.0.0.1:{b.kafka_port}"
        adm = AdminClient({"bootstrap.servers": boot})
        adm.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
        prod = Producer({"bootstrap.servers": boot, "acks": "all", "linger.ms": 0})

        def on_ack(err, _msg):
            if err is None:
                acked[0] += 1

        def send(tag, seq):
            prod.produce(topic, body(tag, seq), on_delivery=on_ack)
            prod.poll(0)

        def finish():
            prod.flush(30)
    else:
        import paho.mqtt.client as mqtt
        prod = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-lat-m2a-{os.getpid()}",
                           protocol=mqtt.MQTTv311, clean_session=True)
        prod.max_inflight_messages_set(100)
        prod.on_publish = lambda *_args: acked.__setitem__(0, acked[0] + 1)
        prod.connect("127.0.0.1", b.mqtt_port, keepalive=60)
        prod.loop_start()
        deadline = time.monotonic() + 10
        while not prod.is_connected():
            if time.monotonic() > deadline:
                raise RuntimeError("MQTT publisher not connected in 10 s")
            time.sleep(0.01)

        def send(tag, seq):
            prod.publish(topic, body(tag, seq), qos=1)

        def finish():
            deadline = time.monotonic() + 30
            while acked[0] < n + a.xproto_warmup + 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            prod.disconnect()
            prod.loop_stop()
    try:
        for i in range(a.xproto_warmup):  # creates the stream path end to end; not measured
            send(b"W", i)
            time.sleep(0.01)
        deadline = time.monotonic() + 15
        while warm.value < a.xproto_warmup and time.monotonic() < deadline:
            time.sleep(0.01)
        warm_got = warm.value
        gap, nxt, t_send0 = 1.0 / a.xproto_rate, time.perf_counter(), time.monotonic()
        for i in range(n):
            nxt += gap
            while True:
                d = nxt - time.perf_counter()
                if d <= 0:
                    break
                time.sleep(d)
            send(b"M", i)
        send_secs = time.monotonic() - t_send0
        send(b"E", 0)
        finish()
        out = out_q.get(timeout=a.xproto_secs + 60)
    finally:
        cons.join(10)
        if cons.is_alive():
            cons.kill()
    lats = sorted(out["lats"])
    r = {"direction": label, "sent": n, "received": len(lats), "duplicates": out["dups"], "acked": acked[0],
         "warmup_received": warm_got, "send_secs": send_secs, "offered_rate": a.xproto_rate,
         "wall_secs": time.monotonic() - t0, "broker_cpu_secs": cpu_secs(pid) - c0}
    if out.get("error"):
        r["consumer_error"] = out["error"]
    if not lats:
        raise RuntimeError(f"{label}: nothing received ({out.get('error', '')})")
    q = lambda f: lats[min(len(lats) - 1, int(f * len(lats)))]
    r.update({"p50_ms": q(0.5), "p99_ms": q(0.99), "p999_ms": q(0.999), "max_ms": lats[-1],
              "mean_ms": statistics.mean(lats), "over_5ms": sum(1 for x in lats if x > 5),
              "over_50ms": sum(1 for x in lats if x > 50)})
    r["dropped"] = n - len(lats)
    return r


# (e) queue depth bounded by disk, not memory

def depth(a, b):
    """--depth-bytes of --depth-size persistent messages, confirms, into one durable queue with no consumer;
    the broker's VmRSS sampled throughout, VmHWM, and the same after --depth-settle s and after deleting it."""
    import threading
    size, q, pid = a.depth_size, "bench-depth", b.pid()
    n = a.depth_bytes // size
    time.sleep(1)
    reset_hwm(pid)
    rss0 = proc_status(pid, "VmRSS")
    samples, stop = [], threading.Event()
    t_start = time.monotonic()

    def sample():
        while not stop.is_set():
            samples.append((round(time.monotonic() - t_start, 2), proc_status(pid, "VmRSS")))
            stop.wait(0.5)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    args = ["-x", "1", "-y", "0", "-c", str(a.pc_confirm), "-s", str(size), "-f", "persistent", "-ad", "false",
            "-u", q, "-C", str(n)]
    try:
        r = run_perf_test(a, b, args, timeout=a.depth_timeout, check=False)
    finally:
        stop.set()
        th.join()
    pub_secs = time.monotonic() - t_start
    r.pop("samples_raw", None)
    rates = [s.get("confirmed", 0) for s in r["samples"]]
    r.update({"messages_asked": n, "size": size, "publish_secs": pub_secs, "rss_before_kib": rss0,
              "rss_samples": samples, "rss_during_max_kib": max(v for _, v in samples) if samples else float("nan"),
              "hwm_kib_after_publish": proc_status(pid, "VmHWM"), "rss_kib_after_publish": proc_status(pid, "VmRSS"),
              "confirmed_sum": sum(rates), "msgs_per_sec": steady_rate(r["samples"], "confirmed")})
    try:
        r["queue_depth"] = queue_depth(b, q)
    except Exception as e:  # noqa: BLE001
        r["queue_depth_error"] = str(e)[:300]
    r["bytes_queued"] = r.get("queue_depth", 0) * size
    time.sleep(a.depth_settle)
    r["rss_kib_settled"] = proc_status(pid, "VmRSS")
    r["hwm_kib_settled"] = proc_status(pid, "VmHWM")
    r["data_dir_bytes"] = dir_bytes(b.data)
    if isinstance(b, RabbitMQ):
        lines = []
        for f in glob.glob(f"{b.data}/log/*.log"):
            with open(f, errors="replace") as fh:
                lines += [l.strip() for l in fh if re.search(r"alarm|memory|paging|flow", l, re.I)]
        r["rabbitmq_log"] = lines[-20:]
    t_del = time.monotonic()
    cleanup(b, [q])
    r["delete_secs"] = time.monotonic() - t_del
    time.sleep(2)
    r["rss_kib_after_delete"] = proc_status(pid, "VmRSS")
    r["peak_mib"] = r["hwm_kib_settled"] / 1024
    r["rss_during_max_mib"] = r["rss_during_max_kib"] / 1024
    r["rss_settled_mib"] = r["rss_kib_settled"] / 1024
    r["rss_growth_per_gib_queued_mib"] = ((r["hwm_kib_settled"] - rss0) / 1024 /
                                          max(1e-9, r["bytes_queued"] / 2 ** 30))
    r["args"] = args
    return r


def idle_conns(a, b):
    """--connections idle connections (one channel each) on a freshly started broker: VmRSS before and held."""
    import pika
    pid = b.pid()
    time.sleep(1.0)
    before = proc_status(pid, "VmRSS")
    c0 = cpu_secs(pid)
    params = pika.ConnectionParameters("127.0.0.1", b.port, credentials=pika.PlainCredentials("guest", "guest"),
                                       heartbeat=0, socket_timeout=10, connection_attempts=1)
    conns, failed, first_error = [], 0, None
    t0 = time.monotonic()
    for _ in range(a.connections):
        try:
            c = pika.BlockingConnection(params)
            c.channel()
            conns.append(c)
        except Exception as e:  # noqa: BLE001
            failed += 1
            first_error = first_error or repr(e)[:300]
    open_secs = time.monotonic() - t0
    samples = []
    for _ in range(int(a.hold / 0.5)):
        time.sleep(0.5)
        samples.append(proc_status(pid, "VmRSS"))
    for c in conns:
        try:
            c.close()
        except Exception:  # noqa: BLE001
            pass
    held = max(samples) if samples else float("nan")
    r = {"held": len(conns), "refused": failed, "open_secs": open_secs, "rss_before_kib": before,
         "rss_held_kib": held, "kib_per_conn": (held - before) / max(1, len(conns)),
         "broker_cpu_secs": cpu_secs(pid) - c0, "wall_secs": time.monotonic() - t0,
         "peak_mib": proc_status(pid, "VmHWM") / 1024}
    if first_error:
        r["first_error"] = first_error
    return r


def run_round(a, b, round_no):
    res = {}

    def step(key, fn):
        la = os.getloadavg()[0]
        try:
            res[key] = fn()
        except Exception as e:  # noqa: BLE001 -- one failing scenario must not end the run
            print(f"   !! {b.name} {key}: {e}", flush=True)
            res[key] = {"error": str(e)[:800]}
            return
        res[key]["loadavg_before"] = la
        print(f"   {key:<14} {summary(key, res[key])}", flush=True)

    secs = b.start()
    res["start_secs"] = secs
    print(f"-- round {round_no}: {b.name} on 127.0.0.1:{b.port} (pid {b.pid()}, started in {secs:.1f} s, "
          f"load {os.getloadavg()[0]:.2f})", flush=True)
    try:
        if "idle" in a.scenarios:
            step("idle", lambda: idle_conns(a, b))
            time.sleep(1)
        reset_hwm(b.pid())
        res["rss_load_start_mib"] = proc_status(b.pid(), "VmRSS") / 1024
        step("warmup", lambda: warmup(a, b))
        if "publish" in a.scenarios:
            step("publish_1024", lambda: publish(a, b, 1024, "bench-q-1024"))
            step("publish_100", lambda: publish(a, b, 100, "bench-q-100"))
            cleanup(b, ["bench-q-100"])
            if "consume" in a.scenarios:
                step("consume_1024", lambda: consume(a, b, "bench-q-1024"))
            cleanup(b, ["bench-q-1024"])
        if "latency" in a.scenarios:
            for rate in a.rates:
                step(f"latency_{rate}", lambda rate=rate: latency(a, b, rate))
        if "fanout" in a.scenarios:
            step("fanout", lambda: fanout(a, b))
        if "pubsub" in a.scenarios:
            for size in a.pc_sizes:
                step(f"pubsub_{size}", lambda size=size: pubsub(a, b, size))
        if "latency_half" in a.scenarios:
            step("latency_half", lambda: latency_half(a, b, res))
        if "lapin" in a.scenarios:
            for size in a.pc_sizes:
                step(f"lapin_{size}", lambda size=size: lapin_pubsub(a, b, size))
        if "fanout100" in a.scenarios:
            step("fanout100", lambda: fanout100(a, b))
        if "xproto" in a.scenarios:
            for kind in XPROTO:
                if isinstance(b, RabbitMQ):  # Conflux only: RabbitMQ has no Kafka front-end
                    res[f"xproto_{kind}"] = {"na": True}
                else:
                    step(f"xproto_{kind}", lambda kind=kind: xproto(a, b, kind))
        res["rss"] = {"peak_mib": proc_status(b.pid(), "VmHWM") / 1024, "end_mib": proc_status(b.pid(), "VmRSS") / 1024}
        print(f"   peak RSS over the load runs {res['rss']['peak_mib']:.1f} MiB", flush=True)
    finally:
        b.stop()
    return res


def run_depth(a, b):
    """(e) on a freshly started broker, once per broker (after the rounds)."""
    res = {}
    secs = b.start()
    print(f"-- queue depth: {b.name} on 127.0.0.1:{b.port} (pid {b.pid()}, started in {secs:.1f} s, "
          f"load {os.getloadavg()[0]:.2f})", flush=True)
    la = os.getloadavg()[0]
    try:
        res["depth"] = depth(a, b)
        res["depth"]["loadavg_before"] = la
        res["depth"]["loadavg_after"] = os.getloadavg()[0]
        print(f"   {'depth':<14} {summary('depth', res['depth'])}", flush=True)
    except Exception as e:  # noqa: BLE001
        print(f"   !! {b.name} depth: {e}", flush=True)
        res["depth"] = {"error": str(e)[:800]}
    finally:
        b.stop()
    return res


def summary(key, r):
    cpu = (f"broker CPU {r['broker_cpu_secs']:.1f} s / {r['wall_secs']:.1f} s wall "
           f"({r['broker_cpu_secs'] / r['wall_secs'] * 100:.0f} %)") if r.get("wall_secs") else ""
    if key == "warmup":
        return f"{r['confirmed_per_sec']:>9,.0f} msg/s confirmed  {cpu}"
    if key.startswith("publish"):
        extra = f"  !! {r['nacked']} nacked" if r.get("nacked") else ""
        return (f"{r['msgs_per_sec']:>9,.0f} msg/s confirmed (PerfTest avg {r.get('sending_avg', 0):,})  queue depth "
                f"{r.get('queue_depth', '?'):,} (samples sum {r['confirmed_sum']:,})  confirm p50/p99 {r['confirm_lat_ms']['p50']:.2f}/"
                f"{r['confirm_lat_ms']['p99']:.2f} ms  {cpu}{extra}")
    if key.startswith("consume"):
        return (f"{r['msgs_per_sec']:>9,.0f} msg/s  drained {r['queue_depth_before']:,} -> "
                f"{r.get('queue_depth_after', '?'):,}  {cpu}")
    if key.startswith("latency"):
        return (f"p50 {r['p50_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms  received {r['received_per_sec']:,.0f}/s  {cpu}")
    if key in ("fanout", "fanout100"):
        return (f"{r['published_per_sec']:>9,.0f} msg/s published, {r['deliveries_per_sec']:,.0f} deliveries/s  "
                f"p50 {r['p50_ms']:.1f} ms  p99 {r['p99_ms']:.1f} ms  {cpu}")
    if key.startswith("pubsub"):
        extra = f"  !! {r['nacked']} nacked" if r.get("nacked") else ""
        return (f"{r['published_per_sec']:>9,.0f} msg/s confirmed, {r['received_per_sec']:,.0f} msg/s received  "
                f"left in queue {r.get('queue_depth_after', '?'):,}  latency p50/p99 {r['p50_ms']:.1f}/{r['p99_ms']:.1f} ms"
                f"  {cpu}{extra}")
    if key.startswith("lapin"):
        extra = f"  !! {r['nacked']} nacked" if r.get("nacked") else ""
        return (f"{r['published_per_sec']:>9,.0f} msg/s confirmed, {r['received_per_sec']:,.0f} msg/s consumed  "
                f"({r['consumed']:,} of {r['acked']:,}; {r['consumed_while_publishing']:,} while publishing)  "
                f"latency p50/p99 {r['p50_ms']:.1f}/{r['p99_ms']:.1f} ms  {cpu}{extra}")
    if key == "latency_half":
        return (f"at {r['rate']:,} msg/s: p50 {r['p50_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms  received "
                f"{r['received_per_sec']:,.0f}/s  {cpu}")
    if key.startswith("xproto"):
        return (f"{r['direction']}: p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  max {r['max_ms']:.1f} ms  "
                f"({r['over_5ms']} over 5 ms)  received {r['received']:,}/{r['sent']:,} (dups {r['duplicates']}) in "
                f"{r['send_secs']:.1f} s  {cpu}")
    if key == "depth":
        return (f"{r.get('queue_depth', '?'):,} × {r['size']} B queued ({r['bytes_queued'] / 1e9:.2f} GB) in "
                f"{r['publish_secs']:.0f} s ({r['msgs_per_sec']:,.0f} msg/s, PerfTest rc {r['rc']}); RSS "
                f"{r['rss_before_kib'] / 1024:.0f} MiB before, max {r['rss_during_max_kib'] / 1024:.0f} MiB during, "
                f"{r['rss_kib_settled'] / 1024:.0f} MiB after (VmHWM {r['hwm_kib_settled'] / 1024:.0f} MiB), "
                f"{r['rss_kib_after_delete'] / 1024:.0f} MiB after the queue's deletion ({r['delete_secs']:.1f} s); "
                f"data dir {r['data_dir_bytes'] / 1e9:.2f} GB")
    if key == "idle":
        return (f"held {r['held']:,} (refused {r['refused']:,}) opened in {r['open_secs']:.1f} s; RSS "
                f"{r['rss_before_kib'] / 1024:.1f} -> {r['rss_held_kib'] / 1024:.1f} MiB = {r['kib_per_conn']:.1f} KiB/conn")
    return json.dumps(r)


# --------------------------------------------------------------------------------------------
# Report

def rows(a):
    out = []
    c = a.confirm
    if "publish" in a.scenarios:
        for size in (1024, 100):
            out.append((f"publish_{size}", "msgs_per_sec",
                        f"publish {size_label(size)}, persistent, confirms ({c} in flight), {a.publishers} publisher → 1 durable queue",
                        "msgs/s", "↑"))
        if "consume" in a.scenarios:
            out.append(("consume_1024", "msgs_per_sec",
                        f"consume 1 KiB from the pre-filled durable queue, 1 consumer, prefetch {a.prefetch}, "
                        f"multi-ack every {a.multi_ack}", "msgs/s", "↑"))
    for rate in a.rates if "latency" in a.scenarios else ():
        for f in ("p50_ms", "p99_ms"):
            out.append((f"latency_{rate}", f, f"latency publish → deliver, {rate:,} msg/s, 1 KiB persistent, "
                                              f"confirms, {f[:3]}", "ms", "↓"))
    if "fanout" in a.scenarios:
        fo = f"fan-out 1 → fanout exchange → {a.fanout_queues} durable queues → {a.fanout_queues} consumers, 1 KiB, confirms"
        out.append(("fanout", "published_per_sec", f"{fo}: published", "msgs/s", "↑"))
        out.append(("fanout", "deliveries_per_sec", f"{fo}: delivered", "deliveries/s", "↑"))
        out.append(("fanout", "p50_ms", f"{fo}: latency p50 (unthrottled: includes queueing)", "ms", "↓"))
        out.append(("fanout", "p99_ms", f"{fo}: latency p99", "ms", "↓"))
    pc = (f"1 publisher, persistent, confirms ({a.pc_confirm} in flight) → 1 durable queue → {a.pc_consumers} "
          f"consumer{'s' if a.pc_consumers > 1 else ''} (manual ack, prefetch {a.pc_prefetch}, multi-ack every {a.pc_multi_ack})")
    for size in a.pc_sizes if "pubsub" in a.scenarios else ():
        out.append((f"pubsub_{size}", "published_per_sec", f"(a) publish + consume {size_label(size)}, {pc}: published "
                                                             f"(confirmed)", "msgs/s", "↑"))
        out.append((f"pubsub_{size}", "received_per_sec", f"(a) the same run, {size_label(size)}: consumed", "msgs/s", "↑"))
        out.append((f"pubsub_{size}", "p99_ms", f"(a) the same run, {size_label(size)}: latency p99 (unthrottled: "
                                                 f"includes queueing)", "ms", "↓"))
    for size in a.pc_sizes if "lapin" in a.scenarios else ():
        lp = f"(f) lapin: publish + consume {size_label(size)}, (a)'s settings"
        out.append((f"lapin_{size}", "published_per_sec", f"{lp}: published (confirmed)", "msgs/s", "↑"))
        out.append((f"lapin_{size}", "received_per_sec", f"{lp}: consumed", "msgs/s", "↑"))
        out.append((f"lapin_{size}", "p99_ms", f"{lp}: latency p99 (unthrottled: includes queueing)", "ms", "↓"))
    if "latency_half" in a.scenarios:
        out.append(("latency_half", "rate", f"(c) rate: half of this broker's (a) {size_label(a.half_size)} rate in the "
                                            f"same round", "msgs/s", "↑"))
        for f in ("p50_ms", "p99_ms"):
            out.append(("latency_half", f, f"(c) latency publish → deliver at that rate, {size_label(a.half_size)}, "
                                           f"(a)'s settings, {f[:3]}", "ms", "↓"))
    if "fanout100" in a.scenarios:
        conf = f"confirms ({a.fanout100_confirm} in flight)" if a.fanout100_confirm > 0 else "no confirms"
        fo = (f"(b) transient fan-out 1 → fanout exchange → {a.fanout100_queues} non-durable queues → "
              f"{a.fanout100_queues} consumers, {size_label(a.fanout100_size)} non-persistent, {conf}")
        out.append(("fanout100", "published_per_sec", f"{fo}: published", "msgs/s", "↑"))
        out.append(("fanout100", "deliveries_per_sec", f"{fo}: delivered", "deliveries/s", "↑"))
        out.append(("fanout100", "p99_ms", f"{fo}: latency p99 (unthrottled)", "ms", "↓"))
    if "xproto" in a.scenarios:
        for kind, (label, topic) in XPROTO.items():
            for f in ("p50_ms", "p99_ms", "max_ms"):
                out.append((f"xproto_{kind}", f, f"(d) {label} latency, `{topic}` → queue bound to `lat`/`{kind}`, "
                                                 f"{a.xproto_rate}/s × {a.xproto_secs} s, {f[:-3]}", "ms", "↓"))
    out.append(("rss", "peak_mib", "broker peak RSS over warm-up + the load runs above (VmHWM)", "MiB", "↓"))
    if "depth" in a.scenarios:
        dl = f"(e) {a.depth_bytes / 1e9:g} GB of {size_label(a.depth_size)} persistent messages (confirms) queued, no consumer"
        out.append(("depth", "msgs_per_sec", f"{dl}: publish rate", "msgs/s", "↑"))
        out.append(("depth", "rss_during_max_mib", f"{dl}: broker RSS, highest sample while publishing", "MiB", "↓"))
        out.append(("depth", "rss_settled_mib", f"{dl}: broker RSS {a.depth_settle} s after the last confirm", "MiB", "↓"))
        out.append(("depth", "peak_mib", f"{dl}: broker VmHWM (reset before the run)", "MiB", "↓"))
    if "idle" in a.scenarios:
        out.append(("idle", "kib_per_conn", f"memory per idle connection ({a.connections:,} held, 1 channel each)", "KiB", "↓"))
        out.append(("idle", "rss_held_kib", f"broker RSS holding {a.connections:,} idle connections (fresh broker)", "KiB", "↓"))
    return out


def targets(a, brokers, results):
    c, m = brokers
    out = []

    def r(scen, field):
        x, y = med(results[c.key], scen, field), med(results[m.key], scen, field)
        return x / y if y and y == y and x == x else float("nan")

    for scen, label in (("pubsub", "(a) persistent publish + consume with confirms"), ("lapin", "(f) the same with lapin")):
        for size in a.pc_sizes if scen in a.scenarios else ():
            key = f"{scen}_{size}"
            x = r(key, "received_per_sec")
            ok = "MET" if x >= 2 else ("MISSED" if x == x else "NOT MEASURED")
            out.append(f"- {label}, {size_label(size)}, ≥ 2× RabbitMQ: **{ok}** "
                       f"({ratio(x)}: Conflux {fmt(med(results[c.key], key, 'received_per_sec'))} msgs/s, "
                       f"RabbitMQ {fmt(med(results[m.key], key, 'received_per_sec'))} msgs/s consumed)")
    for kind, (label, _t) in XPROTO.items() if "xproto" in a.scenarios else ():
        p99 = med(results[c.key], f"xproto_{kind}", "p99_ms")
        ok = "MET" if p99 < 5 else ("MISSED" if p99 == p99 else "NOT MEASURED")
        out.append(f"- (d) {label} p99 < 5 ms at {a.xproto_rate}/s: **{ok}** (p99 {fmt(p99)} ms, range "
                   f"{fmt(min(values(results[c.key], f'xproto_{kind}', 'p99_ms') or [float('nan')]))}–"
                   f"{fmt(max(values(results[c.key], f'xproto_{kind}', 'p99_ms') or [float('nan')]))} ms)")
    if "depth" in a.scenarios:
        for b in brokers:
            d = results[b.key][0].get("depth", {}) if results[b.key] else {}
            if "error" in d or "bytes_queued" not in d:
                out.append(f"- (e) {b.name}: depth run failed: {d.get('error', 'not run')}")
                continue
            out.append(f"- (e) {b.name}: {d['bytes_queued'] / 1e9:.2f} GB queued; RSS {d['rss_before_kib'] / 1024:.0f} → "
                       f"max {d['rss_during_max_kib'] / 1024:.0f} MiB during, VmHWM {d['hwm_kib_settled'] / 1024:.0f} MiB "
                       f"= {d['rss_growth_per_gib_queued_mib']:.0f} MiB of peak RSS growth per GiB queued")
    return "\n".join(out)


def render_cpu(a, brokers, results):
    scen = [k for k, *_ in rows(a) if k not in ("rss", "depth")]
    scen = sorted(set(scen), key=scen.index)
    lines = [f"| run | {brokers[0].name} broker CPU s (% of wall) | {brokers[1].name} broker CPU s (% of wall) | "
             f"{brokers[0].name} broker µs CPU per message | {brokers[1].name} broker µs CPU per message | "
             f"PerfTest CPU s (vs {brokers[0].name} / vs {brokers[1].name}) |",
             "|---|---:|---:|---:|---:|---:|"]
    for s in scen:
        cells = []
        for b in brokers:
            cpu, wall = med(results[b.key], s, "broker_cpu_secs"), med(results[b.key], s, "wall_secs")
            cells.append(f"{fmt(cpu)} ({cpu / wall * 100:.0f} %)" if wall == wall and wall else "–")
        per = [fmt(med(results[b.key], s, "broker_cpu_us_per_msg")) for b in brokers]
        cl = " / ".join(fmt(med(results[b.key], s, "client_cpu_secs")) for b in brokers)
        lines.append(f"| {s} | {cells[0]} | {cells[1]} | {per[0]} | {per[1]} | {cl} |")
    lines.append("")
    lines.append("Medians over the rounds. Broker CPU = utime+stime of the broker process (RabbitMQ: beam.smp) over "
                 "the whole PerfTest run including JVM start-up; 100 % = one core of the two. Per message: per "
                 "message in the queue after a publish run, per message drained, per delivery (fan-out).")
    return "\n".join(lines)


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
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()[0]
    cver = subprocess.run([a.conflux_bin, "--version"], capture_output=True, text=True).stdout.strip()
    pv = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "rabbitmq-server"], capture_output=True, text=True).stdout
    ev = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "erlang-base"], capture_output=True, text=True).stdout
    try:
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
    except OSError:
        commit, dirty = "?", ""
    import pika
    return {"cpu": cpu, "nproc": os.cpu_count(), "mem_gib": round(mem, 1), "kernel": platform.release(),
            "disk": dev, "java": java, "conflux": cver, "git": commit + ("+dirty tree" if dirty else ""),
            "rabbitmq_deb": pv, "erlang_deb": ev, "perf_test": PERF_TEST_VERSION, "pika": pika.__version__}


def main():
    argv = sys.argv[1:]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--conflux", default=os.environ.get("CONFLUX_BIN", os.path.join(ROOT, "target/release/conflux")),
                    help="Conflux binary (copied into --work-dir first)")
    ap.add_argument("--bench", default=os.environ.get("CONFLUX_BENCH_BIN",
                                                      os.path.join(ROOT, "target/release/conflux-bench")),
                    help="conflux-bench (the lapin scenario), copied to --work-dir first")
    ap.add_argument("--perf-test-cache", default=os.path.expanduser("~/.cache/conflux/perf-test"),
                    help=f"where PerfTest {PERF_TEST_VERSION} and its dependencies are fetched (mvn) and kept")
    ap.add_argument("--java-heap", default="1g", help="PerfTest's -Xmx")
    ap.add_argument("--duration", type=int, default=10, help="seconds per load run (PerfTest -z)")
    ap.add_argument("--warmup", type=int, default=4, help="seconds of untimed warm-up per broker start")
    ap.add_argument("--publishers", type=int, default=1)
    ap.add_argument("--confirm", type=int, default=100, help="unconfirmed publishes in flight (PerfTest -c)")
    ap.add_argument("--prefetch", type=int, default=100, help="consumer prefetch (PerfTest -q)")
    ap.add_argument("--multi-ack", type=int, default=50, help="ack every N deliveries with multiple=true (PerfTest -A)")
    ap.add_argument("--rates", type=lambda s: [int(x) for x in s.split(",")], default=[1000],
                    help="latency scenario publish rates (msgs/s, comma-separated)")
    ap.add_argument("--fanout-queues", type=int, default=10)
    ap.add_argument("--connections", type=int, default=1000, help="idle connections held")
    ap.add_argument("--hold", type=float, default=3, help="seconds the idle connections are held")
    ap.add_argument("--work-dir", default="/tmp/amqp-bench-work",
                    help="gets a private copy of the Conflux binary and the brokers' data dirs (wiped at the end)")
    ap.add_argument("--pc-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[100, 4096],
                    help="(a) pubsub: body sizes (bytes, comma-separated)")
    ap.add_argument("--pc-confirm", type=int, default=200, help="(a), (c), (e): unconfirmed publishes in flight")
    ap.add_argument("--pc-prefetch", type=int, default=200, help="(a), (b), (c), (d): consumer prefetch")
    ap.add_argument("--pc-multi-ack", type=int, default=100, help="(a), (b), (c): multi-ack every N deliveries")
    ap.add_argument("--pc-consumers", type=int, default=1, help="(a), (c): consumers of the one queue")
    ap.add_argument("--half-size", type=int, default=100,
                    help="(c) latency_half: body size; its rate is half of the pubsub run of this size")
    ap.add_argument("--fanout100-queues", type=int, default=100)
    ap.add_argument("--fanout100-size", type=int, default=1024)
    ap.add_argument("--fanout100-confirm", type=int, default=200,
                    help="(b) unconfirmed publishes in flight; 0 = no confirms (an unthrottled publisher)")
    ap.add_argument("--xproto-rate", type=int, default=500, help="(d) msgs/s")
    ap.add_argument("--xproto-secs", type=int, default=10, help="(d) seconds measured per direction")
    ap.add_argument("--xproto-size", type=int, default=100, help="(d) record/message size (bytes)")
    ap.add_argument("--xproto-warmup", type=int, default=20, help="(d) unmeasured messages first")
    ap.add_argument("--depth-bytes", type=int, default=2_000_000_000, help="(e) bytes of bodies queued")
    ap.add_argument("--depth-size", type=int, default=1024, help="(e) body size")
    ap.add_argument("--depth-settle", type=int, default=5, help="(e) seconds before the RSS after the run is read")
    ap.add_argument("--depth-timeout", type=int, default=600, help="(e) most seconds the depth publish may take")
    ap.add_argument("--scenarios", type=lambda s: s.split(","),
                    default=["idle", "publish", "consume", "latency", "fanout", "pubsub", "latency_half", "lapin",
                             "fanout100", "xproto", "depth"],
                    help="comma-separated subset of idle,publish,consume,latency,fanout,pubsub,latency_half,lapin,"
                         "fanout100,xproto,depth (depth: once per broker, after the rounds, on a fresh broker)")
    ap.add_argument("--json", help="also write every raw figure here")
    a = ap.parse_args(argv)

    t_start = time.monotonic()
    started = datetime.datetime.now().astimezone()
    load_start = os.getloadavg()
    exe = os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(ROOT) else sys.executable
    cmdline = " ".join(shlex.quote(x) for x in [exe, os.path.relpath(os.path.abspath(__file__), ROOT), *argv])
    os.makedirs(a.work_dir, exist_ok=True)
    a.conflux_bin = os.path.join(a.work_dir, "conflux")  # a private copy: a rebuild changes nothing here
    sha_c = copy_binary(a.conflux, a.conflux_bin)
    a.bench_bin = os.path.join(a.work_dir, "conflux-bench")
    if "lapin" in a.scenarios:
        copy_binary(a.bench, a.bench_bin)
    a.perf_test_lib = ensure_perf_test(a.perf_test_cache)
    raise_nofile()  # this process holds the idle connections
    run_dir = tempfile.mkdtemp(prefix="run-", dir=a.work_dir)
    brokers = [Conflux(a.conflux_bin, run_dir), RabbitMQ(run_dir)]

    stop_on_signals()

    info = machine_info(a)
    print(f"== Conflux vs RabbitMQ (AMQP 0-9-1), {started:%Y-%m-%d %H:%M %Z}", flush=True)
    print(f"command: {cmdline}")
    print(f"machine: {info['nproc']} × {info['cpu']}, {info['mem_gib']} GiB RAM, disk {info['disk']}, "
          f"Linux {info['kernel']}; load average at start {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}")
    print(f"versions: {info['conflux']} (git {info['git']}, binary sha256 {sha_c}…), rabbitmq-server {info['rabbitmq_deb']}, "
          f"erlang-base {info['erlang_deb']}, PerfTest {PERF_TEST_VERSION} on {info['java']}, pika {info['pika']}")
    for b in brokers:
        print(f"durability, {b.name}: {b.durability}")
    print("RabbitMQ config: " + RABBITMQ_CONF.format(port="<free port>").replace("\n", "; ").strip("; "))
    print(flush=True)

    results = {b.key: [] for b in brokers}
    try:
        for r in range(a.rounds):
            order = brokers if r % 2 == 0 else brokers[::-1]
            for b in order:
                results[b.key].append(run_round(a, b, r + 1))
        if "depth" in a.scenarios:
            for b in brokers:
                d = run_depth(a, b)
                if results[b.key]:
                    results[b.key][0].update(d)
                else:
                    results[b.key].append(d)
    finally:
        for b in brokers:
            b.stop()
        shutil.rmtree(run_dir, ignore_errors=True)

    elapsed = time.monotonic() - t_start
    load_end = os.getloadavg()
    print()
    print(render(rows(a), brokers, results))
    print()
    print(render_cpu(a, brokers, results))
    print()
    print("Targets:")
    print(targets(a, brokers, results))
    print()
    print("broker start-up (median): " + ", ".join(f"{b.name} {fmt(statistics.median(values(results[b.key], None, 'start_secs') or [float('nan')]))} s"
                                                   for b in brokers if results[b.key]))
    print(f"run time {elapsed / 60:.1f} min; load average at start {load_start[0]:.2f}, at end {load_end[0]:.2f}")
    problems = []
    for k, rs in results.items():
        for i, res in enumerate(rs):
            for s, v in res.items():
                if not isinstance(v, dict):
                    continue
                if "error" in v:
                    problems.append(f"error: {k} round {i + 1} {s}: {v['error']}")
                if v.get("dropped"):
                    problems.append(f"lost: {k} round {i + 1} {s}: {v['dropped']:,} of {v.get('sent', '?'):,} not received")
                if v.get("consumer_error"):
                    problems.append(f"consumer error: {k} round {i + 1} {s}: {v['consumer_error']}")
                if s == "depth" and v.get("rc"):
                    problems.append(f"depth: {k}: PerfTest rc {v['rc']}: {' | '.join(v.get('output_tail', []))[:400]}")
                if v.get("nacked"):
                    problems.append(f"nacks: {k} round {i + 1} {s}: {v['nacked']:,}")
                if v.get("refused"):
                    problems.append(f"refused: {k} round {i + 1} {s}: {v['refused']:,} connections failed "
                                    f"({v.get('first_error', '')})")
                if s.startswith("consume") and v.get("queue_depth_after"):
                    problems.append(f"not drained: {k} round {i + 1} {s}: {v['queue_depth_after']:,} left of "
                                    f"{v['queue_depth_before']:,} after {2 * a.duration} s")
                for e in v.get("client_errors", [])[:3]:
                    problems.append(f"PerfTest error: {k} round {i + 1} {s}: {e[:300]}")
                for w in v.get("broker_warnings", [])[:3]:
                    problems.append(f"broker warning: {k} round {i + 1} {s}: {w[:300]}")
    for p in problems:
        print(p)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"command": cmdline, "started": started.isoformat(), "run_secs": elapsed, "machine": info,
                       "load_start": load_start, "load_end": load_end, "conflux_sha256": sha_c,
                       "results": results}, f, indent=1)
        print(f"raw figures: {a.json}")
    return 1 if any(p.startswith("error") for p in problems) else 0


if __name__ == "__main__":
    sys.exit(main())
