#!/usr/bin/env python3
"""Conflux's MQTT front-end side by side with Mosquitto (Debian's package) in ONE run.

Both brokers run on loopback on this machine, one after the other, and get the same scenarios
from the raw-socket load generator `conflux-bench` (crates/bench); brokers alternate and the
rounds repeat, and the result is a table of medians, ranges and Conflux/Mosquitto ratios.

Scenarios (per round and broker):
  fan-in    10 publishers -> 1 subscriber (`bench/<run>/#`), QoS 0, 1, 2 (subscription at the same
            QoS), 100 B and 1 KiB payloads, 20 messages in flight per publisher: messages/s
            delivered end to end (the last publish to the last delivery);
  latency   1 -> 1 at a fixed rate (1,000/s and 5,000/s), QoS 1: publish -> deliver p50/p99/max;
  fan-out   1 -> 1,000 subscribers of one topic, QoS 0, 500 messages at 100/s and at 50/s:
            deliveries/s and publish -> deliver p50/p99 over every delivery (see FanoutHelper);
  idle      10,000 idle connections held (a freshly started broker): the broker's VmRSS before
            and while they are held -> memory per idle connection;
  slowsub   a slow subscriber with a persistent session (a freshly started broker; this script's
            own raw-socket clients): it connects with clean session 0 and subscribes at QoS 1;
            a publisher sends 200,000 QoS 1 messages of 1 KiB (50 unacknowledged at most); the
            subscriber reads 2,000 msgs/s for 1 s (the publisher is still sending), DISCONNECTs
            (the session stays), stays away 3 s and until the publisher is done, then comes back
            (clean session 0) and reads everything:
            distinct messages delivered (must equal sent), duplicates, and the broker's VmRSS
            sampled every 0.25 s. Conflux gets mqtt_max_queued_messages_persistent = 1,000,000
            (config file: there is no flag), Mosquitto max_queued_messages 10,000,000, so neither
            drops by its session limit.
The broker's CPU time (/proc/<pid>/stat) is sampled around every scenario.

Durability is NOT the same: Conflux (`--fsync always`, its default) fsyncs a QoS 1/2 message
before its PUBACK/PUBREC; Mosquitto (persistence off, its default) keeps nothing on disk.

Usage:  .venv/bin/python bench/mqtt_compare.py                 # 3 rounds, ~15 min
        .venv/bin/python bench/mqtt_compare.py --help
Results go in docs/BENCHMARKS.md with the machine and the command.
"""

import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

from bench_common import (
    copy_binary, cpu_secs, fmt, free_port, med, proc_status, raise_nofile, ratio, render, size_label, stop_on_signals, values,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


# --------------------------------------------------------------------------------------------
# Brokers

class Conflux:
    name, key = "Conflux", "conflux"
    durability = ("`conflux serve --fsync always` (its default): every QoS 1/2 PUBLISH is fsync'd "
                  "before its PUBACK/PUBREC (group commit); subscribers only get fsync'd messages")

    # Config-file only (no flag): a persistent session's durable queue. Its default, 100,000, is below
    # the slow-subscriber scenario's 200,000 messages.
    config_toml = "mqtt_max_queued_messages_persistent = {persistent}\n"

    def __init__(self, binary, workdir, persistent_queue=1_000_000):
        self.binary, self.workdir = binary, workdir
        self.persistent_queue = persistent_queue
        self.proc = self.data = self.addr = self.log = None

    def start(self):
        self.data = tempfile.mkdtemp(prefix="conflux-", dir=self.workdir)
        self.log = open(os.path.join(self.data, "broker.log"), "w+")
        conf = os.path.join(self.data, "conflux.toml")
        with open(conf, "w") as f:
            f.write(self.config_toml.format(persistent=self.persistent_queue))
        args = [self.binary, "serve", "--config", conf, "--data-dir", os.path.join(self.data, "d"),
                "--kafka-listen", "127.0.0.1:0", "--mqtt-listen", "127.0.0.1:0",
                "--mqtt-ws-listen", "127.0.0.1:0", "--amqp-listen", "127.0.0.1:0",
                "--http-listen", "127.0.0.1:0", "--mqtt-max-queued-messages", "10000000",
                "--fsync", "always"]
        t0 = time.monotonic()
        self.proc = subprocess.Popen(args, stderr=self.log, stdout=subprocess.DEVNULL, preexec_fn=raise_nofile)
        deadline = t0 + 30
        while time.monotonic() < deadline:
            self.log.seek(0)
            for line in self.log.read().splitlines():
                if "listener bound protocol=mqtt addr=" in line:
                    self.addr = line.split("protocol=mqtt addr=", 1)[1].split()[0]
                    return time.monotonic() - t0
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.log.seek(0)
        raise RuntimeError("Conflux did not start: " + self.log.read()[-2000:])

    def pid(self):
        return self.proc.pid

    def log_tail(self, n=5):
        if not self.log:
            return ""
        self.log.seek(0)
        return "\n".join(self.log.read().splitlines()[-n:])

    def log_size(self):
        return os.path.getsize(self.log.name) if self.log else 0

    def warnings_since(self, offset):
        """WARN/ERROR lines the broker logged after byte `offset` of its log (Mosquitto: Error/Warning)."""
        if not self.log:
            return []
        with open(self.log.name, errors="replace") as f:
            f.seek(offset)
            return [l.strip() for l in f if any(w in l for w in (" WARN ", " ERROR ", "Error", "Warning"))]

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
        if self.log:
            self.log.close()
            self.log = None
        if self.data:
            shutil.rmtree(self.data, ignore_errors=True)
            self.data = None


class Mosquitto(Conflux):
    name, key = "Mosquitto", "mosquitto"
    durability = ("`persistence false` (its default): nothing is written to disk; a PUBACK/PUBREC "
                  "means the message is in the broker's memory")

    def __init__(self, binary, workdir):
        super().__init__(binary, workdir)
        self.conf = None

    def start(self):
        self.data = tempfile.mkdtemp(prefix="mosquitto-", dir=self.workdir)
        os.chmod(self.data, 0o755)  # mosquitto drops to its own user when started as root
        port = free_port()
        self.conf = os.path.join(self.data, "mosquitto.conf")
        with open(self.conf, "w") as f:
            f.write(MOSQUITTO_CONF.format(port=port))
        os.chmod(self.conf, 0o644)
        self.log = open(os.path.join(self.data, "broker.log"), "w+")
        t0 = time.monotonic()
        self.proc = subprocess.Popen([self.binary, "-c", self.conf], stderr=self.log, stdout=self.log,
                                     preexec_fn=raise_nofile)
        self.addr = f"127.0.0.1:{port}"
        deadline = t0 + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return time.monotonic() - t0
            except OSError:
                time.sleep(0.02)
        self.log.seek(0)
        raise RuntimeError("Mosquitto did not start: " + self.log.read()[-2000:])


# The brief's settings (unbounded-ish queue, 100 in flight, no persistence), plus two that give
# Mosquitto what Conflux does anyway: TCP_NODELAY on client sockets (Conflux sets it), and no log
# line per connect/disconnect (Conflux logs none).
MOSQUITTO_CONF = """\
listener {port} 127.0.0.1
allow_anonymous true
max_queued_messages 10000000
max_inflight_messages 100
persistence false
set_tcp_nodelay true
connection_messages false
log_dest stderr
"""


# --------------------------------------------------------------------------------------------
# A minimal MQTT 3.1.1 client (fan-out helper only)

def _frame(first, body):
    n, rl = len(body), bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        rl.append(b | (0x80 if n else 0))
        if not n:
            break
    return bytes([first]) + bytes(rl) + body


def _s(b):
    return struct.pack(">H", len(b)) + b


def mqtt_connect(addr, client_id, keepalive=300, timeout=10, clean=True, session_present=None):
    """MQTT 3.1.1 CONNECT; session_present: a list that gets the CONNACK's session-present flag."""
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(_frame(0x10, _s(b"MQTT") + bytes([4, 0x02 if clean else 0x00]) + struct.pack(">H", keepalive)
                     + _s(client_id.encode())))
    ack = b""
    while len(ack) < 4:
        chunk = s.recv(4 - len(ack))
        if not chunk:
            raise OSError("closed before CONNACK")
        ack += chunk
    if ack[0] != 0x20 or ack[3] != 0:
        raise OSError(f"CONNACK refused: {ack.hex()}")
    if session_present is not None:
        session_present.append(ack[2] & 1)
    return s


def read_packets(s, buf):
    """Yields (first byte, body) of every complete packet in buf (a bytearray; consumed)."""
    while True:
        if len(buf) < 2:
            return
        n, mult, i = 0, 1, 1
        while True:
            if i >= len(buf):
                return
            b = buf[i]
            n += (b & 0x7F) * mult
            mult *= 128
            i += 1
            if not b & 0x80:
                break
        if len(buf) < i + n:
            return
        first, body = buf[0], bytes(buf[i:i + n])
        del buf[:i + n]
        yield first, body


class FanoutHelper(threading.Thread):
    """Makes `conflux-bench mqtt-fanout` report its latencies.

    That tool (as of 61ec03b) aborts its subscriber tasks when the run ends, which throws away the
    latencies they collected, so p50/p99 come back null. A subscriber task does return them when
    its connection is closed by the broker. So this helper: subscribes to `bench/+/fan` (one
    extra subscriber, 100 messages/s) to learn the run's topic; at the first message takes over
    the session of subscriber 0 (same client id: the broker closes the bench's connection), so the
    tool's delivery count can never reach its total and it waits its 30 s timeout; and once the
    last message has reached this helper plus `settle` seconds (every delivery done) takes over
    subscribers 1..N-1. Their tasks then end by themselves and the tool prints p50/p99 over all
    their deliveries. The tool's own deliveries/s then covers its 30 s wait and is not used; the
    helper's first -> last arrival (plus one gap) is the time base instead.
    """

    def __init__(self, addr, subscribers, messages, rate, settle=2.0):
        super().__init__(daemon=True)
        self.addr, self.subscribers, self.messages, self.rate, self.settle = addr, subscribers, messages, rate, settle
        self.count, self.first, self.last, self.run_id, self.error = 0, None, None, None, None
        self.taken_over = 0
        self.sock = mqtt_connect(addr, f"fanout-helper-{os.getpid()}-{time.monotonic_ns()}")
        self.sock.sendall(_frame(0x82, struct.pack(">H", 1) + _s(b"bench/+/fan") + b"\x00"))
        buf = bytearray()
        while True:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise OSError("closed before SUBACK")
            buf += chunk
            if any(first == 0x90 for first, _ in read_packets(self.sock, buf)):
                break
        self.stop_flag = threading.Event()

    def _takeover(self, i):
        try:
            s = mqtt_connect(self.addr, f"fsub-{self.run_id}-{i}", keepalive=60)
            s.sendall(b"\xe0\x00")  # DISCONNECT: the new session ends too
            s.close()
            self.taken_over += 1
        except OSError as e:
            self.error = f"takeover of fsub-{self.run_id}-{i}: {e}"

    def run(self):
        buf = bytearray()
        self.sock.settimeout(0.2)
        idle_limit = 10.0
        try:
            while not self.stop_flag.is_set():
                try:
                    chunk = self.sock.recv(65536)
                except socket.timeout:
                    chunk = None
                now = time.monotonic()
                if chunk == b"":
                    self.error = "helper connection closed by the broker"
                    return
                if chunk:
                    buf += chunk
                    for first, body in read_packets(self.sock, buf):
                        if first >> 4 != 3:
                            continue
                        self.count += 1
                        self.last = now
                        if self.first is None:
                            self.first = now
                            tlen = struct.unpack(">H", body[:2])[0]
                            self.run_id = body[2:2 + tlen].decode().split("/")[1]
                            self._takeover(0)
                if self.first is not None and (self.count >= self.messages or now - self.last > idle_limit):
                    break
            if self.first is None:
                return
            time.sleep(self.settle)
            for i in range(1, self.subscribers):
                self._takeover(i)
        finally:
            self.sock.close()


# --------------------------------------------------------------------------------------------
# Scenarios: each runs conflux-bench once and returns its JSON figures + CPU

def run_bench(a, broker, args, on_line=None, timeout=900):
    """Runs conflux-bench; returns its JSON line plus broker and client CPU seconds."""
    pid = broker.pid()
    log0 = broker.log_size()
    c0, t0 = cpu_secs(pid), time.monotonic()
    err = tempfile.TemporaryFile(mode="w+")
    p = subprocess.Popen([a.bench_bin, *args, "--addr", broker.addr], stdout=subprocess.PIPE, stderr=err,
                         text=True, preexec_fn=raise_nofile)
    lines = []
    deadline = t0 + timeout
    for line in p.stdout:
        lines.append(line)
        if on_line:
            on_line(line)
        if time.monotonic() > deadline:
            p.kill()
            break
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - t0
    c1 = cpu_secs(pid)
    err.seek(0)
    errtext = err.read().strip()
    err.close()
    res = None
    for line in lines:
        try:
            res = json.loads(line)
        except ValueError:
            pass
    warns = broker.warnings_since(log0)
    if p.returncode != 0 or res is None:
        # A panic's message is the line after "panicked at"; the backtrace after it says little.
        el = errtext.splitlines()
        msg = next((" ".join(el[i:i + 2]) for i, l in enumerate(el) if "panicked at" in l), errtext[-400:])
        raise RuntimeError(f"conflux-bench {' '.join(args)} failed (rc={p.returncode}): {msg}"
                           + (f"; broker logged: {' | '.join(warns[-3:])}" if warns else ""))
    if errtext:
        res["stderr"] = errtext[-800:]
    if warns:
        res["broker_warnings"] = warns[-20:]
    res["wall_secs"] = wall
    res["broker_cpu_secs"] = c1 - c0
    res["client_cpu_secs"] = ru.ru_utime + ru.ru_stime
    return res


def fanin(a, b, qos, size):
    n = a.messages_100 if size < 1024 else a.messages_1k
    r = run_bench(a, b, ["mqtt-fanin", "--publishers", str(a.publishers), "--messages", str(n),
                         "--size", str(size), "--qos", str(qos), "--inflight", str(a.inflight)])
    r["dropped"] = r["sent"] - r["received"]
    r["broker_cpu_us_per_msg"] = r["broker_cpu_secs"] / max(1, r["received"]) * 1e6
    return r


def latency(a, b, rate):
    r = run_bench(a, b, ["mqtt-latency", "--rate", str(rate), "--messages", str(a.lat_messages), "--qos", "1"])
    r["dropped"] = r["messages"] - r["received"]
    return r


def fanout(a, b, rate):
    helper = FanoutHelper(b.addr, a.fanout_subs, a.fanout_messages, rate) if a.fanout_helper else None
    if helper:
        helper.start()
    try:
        r = run_bench(a, b, ["mqtt-fanout", "--subscribers", str(a.fanout_subs), "--rate", str(rate),
                             "--messages", str(a.fanout_messages), "--qos", "0"])
    finally:
        if helper:
            helper.stop_flag.set()
            helper.join(30)
    r["bench_deliveries_per_sec"] = r.pop("deliveries_per_sec")
    if helper:
        if helper.error:
            r["helper_error"] = helper.error
        r["helper_received"] = helper.count
        r["taken_over"] = helper.taken_over
        # Subscriber 0 lost its connection at the first message: expected deliveries are the other
        # N-1 subscribers' (and what subscriber 0 got before, at most `messages`).
        floor = (a.fanout_subs - 1) * a.fanout_messages
        r["dropped"] = max(0, floor - r["received"]) + (a.fanout_messages - helper.count)
        span = (helper.last - helper.first + 1 / rate) if helper.first is not None else float("nan")
        r["deliveries_per_sec"] = r["received"] / span if span == span else float("nan")
    else:
        r["dropped"] = r["expected"] - r["received"]
        r["deliveries_per_sec"] = r["bench_deliveries_per_sec"]
    for k in ("p50_ms", "p99_ms"):
        if r.get(k) is None:
            r[k] = float("nan")
    r["broker_cpu_us_per_msg"] = r["broker_cpu_secs"] / max(1, r["received"]) * 1e6  # per delivery
    return r


def idle_conns(a, b):
    """10,000 idle connections on a broker started for this alone; VmRSS before and while held."""
    time.sleep(0.5)
    before = proc_status(b.pid(), "VmRSS")
    samples, fds = [], []

    def on_line(_line):
        # The tool prints its line once every connection is up, then holds them for --hold s.
        for _ in range(int(a.hold * 0.6 / 0.5)):
            time.sleep(0.5)
            samples.append(proc_status(b.pid(), "VmRSS"))
            fds.append(fd_count(b.pid()))

    r = run_bench(a, b, ["mqtt-conns", "--connections", str(a.connections), "--hold", str(a.hold)], on_line=on_line)
    held_rss = max(samples) if samples else float("nan")
    r.update({"rss_before_kib": before, "rss_held_kib": held_rss, "broker_fds_held": max(fds) if fds else -1,
              "kib_per_conn": (held_rss - before) / max(1, r["held"])})
    r["refused"] = r["failed"]
    r["broker_cpu_us_per_msg"] = r["broker_cpu_secs"] / max(1, r["held"]) * 1e6  # per connection
    return r


def iter_packets(buf, pos):
    """Complete packets in buf (a bytearray) from pos: yields (first byte, body start, body end); the caller
    drops the consumed prefix once (cheaper than read_packets' del per packet for bulk reads)."""
    n_buf = len(buf)
    while True:
        if n_buf - pos < 2:
            return
        n, mult, i = 0, 1, pos + 1
        while True:
            if i >= n_buf:
                return
            b = buf[i]
            n += (b & 0x7F) * mult
            mult *= 128
            i += 1
            if not b & 0x80:
                break
        if n_buf < i + n:
            return
        yield buf[pos], i, i + n
        pos = i + n


class SlowSubscriber:
    """A persistent-session (clean session 0) QoS 1 subscriber that reads slowly, goes away and comes back.

    Counts every distinct message (by the sequence number in its first 8 bytes) and duplicates, and
    PUBACKs each delivery once it has been read."""

    def __init__(self, addr, client_id, topic, n):
        self.addr, self.client_id, self.topic, self.n = addr, client_id, topic, n
        self.seen = bytearray(n)
        self.unique = self.dups = self.deliveries = self.other = 0
        self.sock, self.buf = None, bytearray()
        self.session_present = []

    def connect(self, subscribe=False):
        self.sock = mqtt_connect(self.addr, self.client_id, keepalive=600, clean=False,
                                 session_present=self.session_present)
        self.buf = bytearray()
        if subscribe:
            self.sock.sendall(_frame(0x82, struct.pack(">H", 1) + _s(self.topic) + b"\x01"))
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if self.read_some(65536, 1.0) is None:
                    raise OSError("closed before SUBACK")
                if getattr(self, "granted", None) is not None:
                    if self.granted != 1:
                        raise OSError(f"SUBACK granted {self.granted}")
                    return
            raise OSError("no SUBACK in 10 s")

    def read_some(self, bufsize, timeout, limit=None):
        """One recv (up to bufsize bytes); handles every complete packet in the buffer, at most `limit`
        PUBLISHes; returns how many PUBLISHes were handled, None if the broker closed."""
        self.sock.settimeout(timeout)
        if limit is None or not self._pending_publish():
            try:
                chunk = self.sock.recv(bufsize)
            except socket.timeout:
                chunk = b"-"
            if not chunk:
                return None
            if chunk != b"-":
                self.buf += chunk
        got, acks, pos, buf = 0, [], 0, self.buf
        for first, b0, b1 in iter_packets(buf, 0):
            kind = first >> 4
            if kind == 3:
                if limit is not None and got >= limit:
                    break
                qos = (first >> 1) & 3
                tlen = struct.unpack_from(">H", buf, b0)[0]
                p = b0 + 2 + tlen
                if qos:
                    acks.append(b"\x40\x02" + bytes(buf[p:p + 2]))
                    p += 2
                seq = struct.unpack_from(">Q", buf, p)[0]
                self.deliveries += 1
                got += 1
                if seq < self.n:
                    if self.seen[seq]:
                        self.dups += 1
                    else:
                        self.seen[seq] = 1
                        self.unique += 1
            elif kind == 9:
                self.granted = buf[b0 + 2]
            else:
                self.other += 1
            pos = b1
        if pos:
            del buf[:pos]
        if acks:
            self.sock.sendall(b"".join(acks))
        return got

    def _pending_publish(self):
        for first, _b0, _b1 in iter_packets(self.buf, 0):
            if first >> 4 == 3:
                return True
        return False

    def disconnect(self):
        try:
            self.sock.sendall(b"\xe0\x00")  # DISCONNECT: with clean session 0 the session stays
            self.sock.close()
        except OSError:
            pass
        self.sock = None


def slow_publisher(addr, client_id, topic, n, size, window, out):
    """QoS 1 publisher: n messages of `size` bytes, at most `window` unacknowledged."""
    try:
        s = mqtt_connect(addr, client_id, keepalive=600)
        s.settimeout(30)
        pad = b"x" * (size - 8)
        head = _s(topic)
        sent = acked = 0
        buf = bytearray()
        t0 = time.monotonic()
        while acked < n:
            out_frames = []
            while sent - acked < window and sent < n:
                pid = sent % 65535 + 1
                out_frames.append(_frame(0x32, head + struct.pack(">HQ", pid, sent) + pad))
                sent += 1
            if out_frames:
                s.sendall(b"".join(out_frames))
            chunk = s.recv(65536)
            if not chunk:
                raise OSError(f"publisher closed by the broker after {acked:,} PUBACKs")
            buf += chunk
            pos = 0
            for first, _b0, b1 in iter_packets(buf, 0):
                if first >> 4 == 4:
                    acked += 1
                pos = b1
            del buf[:pos]
        out["publish_secs"] = time.monotonic() - t0
        s.sendall(b"\xe0\x00")
        s.close()
    except Exception as e:  # noqa: BLE001
        out["error"] = repr(e)[:300]
    finally:
        out["sent"], out["acked"] = sent, acked
        out["done"] = time.monotonic()


def slowsub(a, b):
    """The slow-subscriber scenario on a freshly started broker (see the module docstring)."""
    pid = b.pid()
    time.sleep(0.5)
    rss0 = proc_status(pid, "VmRSS")
    log0 = b.log_size()
    c0, t0 = cpu_secs(pid), time.monotonic()
    run = f"{os.getpid()}-{time.monotonic_ns() % 10 ** 9}"
    topic = f"slow/{run}".encode()
    n = a.slow_messages
    samples, stop = [], threading.Event()

    def sample():
        while not stop.is_set():
            samples.append((round(time.monotonic() - t0, 2), proc_status(pid, "VmRSS")))
            stop.wait(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    sub = SlowSubscriber(b.addr, f"slowsub-{run}", topic, n)
    r = {"messages": n, "size": a.slow_size, "rss_before_kib": rss0}
    try:
        sub.connect(subscribe=True)
        pub = {}
        pt = threading.Thread(target=slow_publisher, args=(b.addr, f"slowpub-{run}", topic, n, a.slow_size,
                                                           a.slow_inflight, pub), daemon=True)
        pt.start()
        # 1. connected but slow: at most --slow-rate messages a second for --slow-secs
        t_slow, got = time.monotonic(), 0
        while time.monotonic() < t_slow + a.slow_secs:
            want = int((time.monotonic() - t_slow) * a.slow_rate) - got
            if want <= 0:
                time.sleep(0.005)
                continue
            k = sub.read_some(4096, 0.2, limit=want)
            if k is None:
                raise OSError("slow subscriber closed by the broker")
            got += k
        r["slow_phase_received"] = sub.unique
        # 2. away (DISCONNECT, session kept) until the publisher is done and at least --slow-away s
        sub.disconnect()
        t_away = time.monotonic()
        time.sleep(a.slow_away)  # a benchmark's phase length, not a synchronisation
        deadline = time.monotonic() + a.slow_timeout
        while pt.is_alive() and time.monotonic() < deadline:
            pt.join(0.5)
        if pt.is_alive():
            r["publisher_timeout"] = True
        r.update({f"pub_{k}": v for k, v in pub.items() if k != "done"})
        r["away_secs"] = time.monotonic() - t_away
        # the publisher's PUBACKs after the DISCONNECT: published while the subscriber was away
        r["published_while_away_secs"] = max(0.0, pub.get("done", t_away) - t_away)
        r["rss_before_drain_kib"] = proc_status(pid, "VmRSS")
        # 3. back: read everything at full speed
        t_back = time.monotonic()
        sub.connect()
        r["session_present"] = sub.session_present[-1]
        last = time.monotonic()
        deadline = t_back + a.slow_timeout
        while sub.unique < n and time.monotonic() < deadline and time.monotonic() - last < a.slow_idle:
            k = sub.read_some(262144, 0.5)
            if k is None:
                r["drain_closed"] = True
                break
            if k:
                last = time.monotonic()
        r["drain_secs"] = last - t_back
        sub.disconnect()
        # the session is removed afterwards (clean session 1, same client id)
        try:
            mqtt_connect(b.addr, f"slowsub-{run}").sendall(b"\xe0\x00")
        except OSError:
            pass
    finally:
        stop.set()
        sampler.join()
    r.update({"delivered": sub.unique, "duplicates": sub.dups, "deliveries": sub.deliveries,
              "dropped": n - sub.unique, "drain_per_sec": (n - r.get("slow_phase_received", 0)) / max(1e-9, r["drain_secs"]),
              "rss_samples": samples, "rss_max_kib": max(v for _, v in samples),
              "peak_mib": proc_status(pid, "VmHWM") / 1024, "rss_end_kib": proc_status(pid, "VmRSS"),
              "wall_secs": time.monotonic() - t0, "broker_cpu_secs": cpu_secs(pid) - c0})
    r["rss_max_mib"] = r["rss_max_kib"] / 1024
    warns = b.warnings_since(log0)
    if warns:
        r["broker_warnings"] = warns[-20:]
    r["pub_per_sec"] = r.get("pub_acked", 0) / r["pub_publish_secs"] if r.get("pub_publish_secs") else float("nan")
    r["broker_cpu_us_per_msg"] = r["broker_cpu_secs"] / max(1, sub.unique) * 1e6
    return r


def run_round(a, b, round_no):
    """Every scenario against broker b; returns {scenario key: figures or {"error": ...}}."""
    res = {}

    def step(key, fn):
        la = os.getloadavg()[0]
        try:
            res[key] = fn()
        except Exception as e:  # noqa: BLE001 -- one failing scenario must not end the run
            print(f"   !! {b.name} {key}: {e}", flush=True)
            res[key] = {"error": str(e)[:800]}
            return
        r = res[key]
        r["loadavg_before"] = la
        print(f"   {key:<18} {summary(key, r)}", flush=True)

    secs = b.start()
    print(f"-- round {round_no}: {b.name} on {b.addr} (pid {b.pid()}, started in {secs:.2f} s)", flush=True)
    try:
        if "fanin" in a.scenarios:
            for qos in (0, 1, 2):
                for size in (100, 1024):
                    step(f"fanin_q{qos}_{size}", lambda qos=qos, size=size: fanin(a, b, qos, size))
        if "latency" in a.scenarios:
            for rate in a.rates:
                step(f"latency_{rate}", lambda rate=rate: latency(a, b, rate))
        if "fanout" in a.scenarios:
            for rate in a.fanout_rates:
                step(f"fanout_{rate}", lambda rate=rate: fanout(a, b, rate))
        res["rss"] = {"peak_mib": proc_status(b.pid(), "VmHWM") / 1024, "end_mib": proc_status(b.pid(), "VmRSS") / 1024}
        print(f"   peak RSS {res['rss']['peak_mib']:.1f} MiB", flush=True)
    finally:
        b.stop()
    if "idle" in a.scenarios:
        # Idle connections on a fresh broker: a heap that earlier scenarios grew would hide their cost.
        b.start()
        try:
            step("idle", lambda: idle_conns(a, b))
            res["rss_idle_peak"] = {"peak_mib": proc_status(b.pid(), "VmHWM") / 1024}
        finally:
            b.stop()
    if "slowsub" in a.scenarios:
        # On a fresh broker too: its peak RSS is this scenario's alone.
        b.start()
        try:
            step("slowsub", lambda: slowsub(a, b))
        finally:
            b.stop()
    return res


def summary(key, r):
    drop = f"  !! DROPPED {r['dropped']:,}" if r.get("dropped", 0) > 0 else ""
    cpu = f"broker CPU {r['broker_cpu_secs']:.2f} s / {r['wall_secs']:.1f} s wall ({r['broker_cpu_secs'] / r['wall_secs'] * 100:.0f} %)"
    if key.startswith("fanin"):
        return (f"{r['msgs_per_sec']:>10,.0f} msg/s  received {r['received']:,}/{r['sent']:,}  "
                f"{r['broker_cpu_us_per_msg']:.1f} broker-CPU µs/msg  {cpu}{drop}")
    if key.startswith("latency"):
        return (f"p50 {r['p50_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms  max {r['max_ms']:.2f} ms  "
                f"received {r['received']:,}/{r['messages']:,}  {cpu}{drop}")
    if key.startswith("fanout"):
        extra = f"  helper: {r['helper_error']}" if r.get("helper_error") else ""
        return (f"{r['deliveries_per_sec']:>10,.0f} deliveries/s  p50 {r['p50_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms  "
                f"received {r['received']:,}  {cpu}{drop}{extra}")
    if key == "slowsub":
        sp = {1: "yes", 0: "NO"}.get(r.get("session_present"), "?")
        return (f"delivered {r['delivered']:,}/{r['messages']:,} (dups {r['duplicates']:,}; {r['slow_phase_received']:,} "
                f"while slow) published at {r['pub_per_sec']:,.0f}/s, away {r['away_secs']:.1f} s (publisher still sending for "
                f"{r['published_while_away_secs']:.1f} s of it); session present on return: {sp}; drained at "
                f"{r['drain_per_sec']:,.0f}/s; RSS {r['rss_before_kib'] / 1024:.1f} -> max {r['rss_max_kib'] / 1024:.1f} MiB "
                f"(VmHWM {r['peak_mib']:.1f} MiB, {r['rss_end_kib'] / 1024:.1f} MiB at the end)  {cpu}{drop}")
    if key == "idle":
        return (f"held {r['held']:,} (refused {r['failed']:,}) in {r['open_secs']:.1f} s; RSS {r['rss_before_kib'] / 1024:.1f}"
                f" -> {r['rss_held_kib'] / 1024:.1f} MiB = {r['kib_per_conn']:.2f} KiB/conn; broker fds {r['broker_fds_held']:,}")
    return json.dumps(r)


# --------------------------------------------------------------------------------------------
# Report

def rows(a):
    out = []
    for qos in (0, 1, 2) if "fanin" in a.scenarios else ():
        for size in (100, 1024):
            n = a.messages_100 if size < 1024 else a.messages_1k
            out.append((f"fanin_q{qos}_{size}", "msgs_per_sec",
                        f"fan-in {a.publishers} → 1, QoS {qos}, {n:,} × {size_label(size)}", "msgs/s", "↑"))
    for rate in a.rates if "latency" in a.scenarios else ():
        for f in ("p50_ms", "p99_ms", "max_ms"):
            out.append((f"latency_{rate}", f, f"latency 1 → 1, QoS 1, {rate:,}/s, {f[:-3]}", "ms", "↓"))
    for rate in a.fanout_rates if "fanout" in a.scenarios else ():
        fo = f"fan-out 1 → {a.fanout_subs:,}, QoS 0, {rate}/s × {a.fanout_messages}"
        out.append((f"fanout_{rate}", "deliveries_per_sec", f"{fo}, deliveries/s", "deliveries/s", "↑"))
        out.append((f"fanout_{rate}", "p50_ms", f"{fo}, p50", "ms", "↓"))
        out.append((f"fanout_{rate}", "p99_ms", f"{fo}, p99", "ms", "↓"))
    if "idle" in a.scenarios:
        out.append(("idle", "kib_per_conn", f"memory per idle connection ({a.connections:,} held)", "KiB", "↓"))
    out.append(("rss", "peak_mib", "broker peak RSS over the scenarios above (VmHWM)", "MiB", "↓"))
    if "slowsub" in a.scenarios:
        sl = (f"slow subscriber, persistent session (clean session 0), QoS 1: {a.slow_messages:,} × "
              f"{size_label(a.slow_size)} QoS 1 published ({a.slow_inflight} in flight)")
        out.append(("slowsub", "delivered", f"{sl}: distinct messages delivered", "messages", "↑"))
        out.append(("slowsub", "pub_per_sec", f"{sl}: publish rate (PUBACKs/s)", "msgs/s", "↑"))
        out.append(("slowsub", "drain_per_sec", f"{sl}: drain rate after reconnecting", "msgs/s", "↑"))
        out.append(("slowsub", "rss_max_mib", f"{sl}: broker peak RSS (fresh broker)", "MiB", "↓"))
    if "idle" in a.scenarios:
        out.append(("rss_idle_peak", "peak_mib", f"broker peak RSS holding {a.connections:,} idle connections", "MiB", "↓"))
    return out


def render_cpu(a, brokers, results):
    scen = [k for k, *_ in rows(a) if k not in ("rss", "rss_idle_peak")]
    scen = sorted(set(scen), key=scen.index)
    lines = ["| scenario | Conflux broker CPU s (% of wall) | Mosquitto broker CPU s (% of wall) | Conflux broker µs CPU per unit | Mosquitto broker µs CPU per unit | conflux-bench CPU s (vs Conflux / vs Mosquitto) |",
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
    lines.append("Medians over the rounds. Broker CPU = utime+stime of the broker process over the scenario "
                 "(conflux-bench's whole run, including its connection set-up; the fan-out runs' wall time includes "
                 "the tool's 30 s wait at the end); 100 % = one core. Unit: a message (fan-in), a delivery "
                 "(fan-out), a connection (idle).")
    return "\n".join(lines)


def targets(a, brokers, results):
    c, m = brokers
    out = []

    def r(scen, field):
        x, y = med(results[c.key], scen, field), med(results[m.key], scen, field)
        return x / y if y and y == y and x == x else float("nan")

    for qos, goal in ((0, 1.5), (1, 1.5), (2, 3.0)) if "fanin" in a.scenarios else ():
        for size in (100, 1024):
            x = r(f"fanin_q{qos}_{size}", "msgs_per_sec")
            ok = "MET" if x >= goal else "MISSED"
            out.append(f"- fan-in QoS {qos} {size_label(size)} ≥ {goal}× Mosquitto: **{ok}** ({ratio(x)})")
    for rate in a.fanout_rates if "fanout" in a.scenarios else ():
        p99 = med(results[c.key], f"fanout_{rate}", "p99_ms")
        ok = "MET" if p99 < 5 else ("MISSED" if p99 == p99 else "NOT MEASURED")
        out.append(f"- fan-out p99 < 5 ms, 1 → {a.fanout_subs:,} at {rate}/s: **{ok}** "
                   f"(Conflux {fmt(p99)} ms; Mosquitto {fmt(med(results[m.key], f'fanout_{rate}', 'p99_ms'))} ms; "
                   f"Conflux deliveries/s {fmt(med(results[c.key], f'fanout_{rate}', 'deliveries_per_sec'))} of "
                   f"{rate * a.fanout_subs:,} offered)")
    if "slowsub" in a.scenarios:
        for b in brokers:
            got = values(results[b.key], "slowsub", "delivered")
            lost = [a.slow_messages - g for g in got]
            ok = "MET" if got and not any(lost) else ("MISSED" if got else "NOT MEASURED")
            peaks = values(results[b.key], "slowsub", "rss_max_mib")
            out.append(f"- slow subscriber, nothing lost ({b.name}): **{ok}** (delivered {', '.join(f'{g:,}' for g in got)} "
                       f"of {a.slow_messages:,}); broker peak RSS {', '.join(fmt(p) for p in peaks)} MiB "
                       f"({a.slow_messages * a.slow_size / 2 ** 20:,.0f} MiB of payload published)")
    if "idle" in a.scenarios:
        kc, km = med(results[c.key], "idle", "kib_per_conn"), med(results[m.key], "idle", "kib_per_conn")
        ok = "MET" if kc <= km else "MISSED"
        out.append(f"- memory per idle connection ≤ Mosquitto's: **{ok}** (Conflux {fmt(kc)} KiB, Mosquitto {fmt(km)} KiB, "
                   f"{ratio(kc / km if km else float('nan'))})")
    return "\n".join(out)


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
    mv = subprocess.run([a.mosquitto, "-h"], capture_output=True, text=True)
    mver = (mv.stdout or mv.stderr).strip().splitlines()[0]
    cver = subprocess.run([a.conflux_bin, "--version"], capture_output=True, text=True).stdout.strip()
    return {"cpu": cpu, "nproc": os.cpu_count(), "mem_gib": round(mem, 1), "kernel": platform.release(),
            "disk": dev, "mosquitto": mver, "conflux": cver, "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)}


def main():
    argv = sys.argv[1:]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--conflux", default=os.environ.get("CONFLUX_BIN", os.path.join(ROOT, "target/release/conflux")),
                    help="Conflux binary (copied into --work-dir first)")
    ap.add_argument("--bench", default=os.environ.get("CONFLUX_BENCH_BIN", os.path.join(ROOT, "target/release/conflux-bench")),
                    help="conflux-bench binary (copied into --work-dir first)")
    ap.add_argument("--mosquitto", default="/usr/sbin/mosquitto")
    ap.add_argument("--publishers", type=int, default=10)
    ap.add_argument("--messages-100", type=int, default=200_000, help="fan-in messages at 100 B")
    ap.add_argument("--messages-1k", type=int, default=100_000, help="fan-in messages at 1 KiB")
    ap.add_argument("--inflight", type=int, default=20, help="QoS 1/2 messages in flight per publisher")
    ap.add_argument("--rates", type=lambda s: [int(x) for x in s.split(",")], default=[1000, 5000],
                    help="QoS 1 latency scenario rates (messages/s, comma-separated)")
    ap.add_argument("--lat-messages", type=int, default=10_000)
    ap.add_argument("--fanout-subs", type=int, default=1000)
    ap.add_argument("--fanout-rates", type=lambda s: [int(x) for x in s.split(",")], default=[100, 50],
                    help="fan-out publish rates (messages/s, comma-separated); 50/s is half of 100/s, which "
                         "already saturates this 2-core machine")
    ap.add_argument("--fanout-messages", type=int, default=500)
    ap.add_argument("--no-fanout-helper", dest="fanout_helper", action="store_false",
                    help="run mqtt-fanout without the session-takeover helper (once conflux-bench keeps "
                         "its fan-out latencies itself)")
    ap.add_argument("--slow-messages", type=int, default=200_000, help="slow subscriber: QoS 1 messages published")
    ap.add_argument("--slow-size", type=int, default=1024, help="slow subscriber: payload bytes (at least 8)")
    ap.add_argument("--slow-inflight", type=int, default=50, help="slow subscriber: publisher's unacknowledged QoS 1")
    ap.add_argument("--slow-rate", type=int, default=2000, help="slow subscriber: reading rate while slow (msgs/s)")
    ap.add_argument("--slow-secs", type=float, default=1, help="slow subscriber: seconds connected and slow")
    ap.add_argument("--slow-away", type=float, default=3,
                    help="slow subscriber: least seconds away (it also waits for the publisher to finish)")
    ap.add_argument("--slow-idle", type=float, default=10, help="slow subscriber: drain ends after this long with nothing")
    ap.add_argument("--slow-timeout", type=float, default=300, help="slow subscriber: most seconds per phase")
    ap.add_argument("--persistent-queue", type=int, default=1_000_000,
                    help="Conflux's mqtt_max_queued_messages_persistent (config file; no flag exists)")
    ap.add_argument("--connections", type=int, default=10_000)
    ap.add_argument("--hold", type=int, default=5, help="seconds the idle connections are held")
    ap.add_argument("--work-dir", default="/tmp/mqtt-bench-work",
                    help="gets private copies of the binaries and the brokers' data dirs (wiped at the end)")
    ap.add_argument("--scenarios", type=lambda s: s.split(","), default=["fanin", "latency", "fanout", "idle", "slowsub"],
                    help="which scenario groups to run (comma-separated subset of fanin,latency,fanout,idle,slowsub)")
    ap.add_argument("--json", help="also write every raw figure here")
    a = ap.parse_args(argv)

    t_start = time.monotonic()
    started = datetime.datetime.now().astimezone()
    load_start = os.getloadavg()
    exe = os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(ROOT) else sys.executable
    cmdline = " ".join(shlex.quote(x) for x in [exe, os.path.relpath(os.path.abspath(__file__), ROOT), *argv])
    os.makedirs(a.work_dir, exist_ok=True)
    # Private copies: a rebuild of target/release during the run changes nothing here.
    a.conflux_bin = os.path.join(a.work_dir, "conflux")
    a.bench_bin = os.path.join(a.work_dir, "conflux-bench")
    sha_c = copy_binary(a.conflux, a.conflux_bin)
    sha_b = copy_binary(a.bench, a.bench_bin)
    raise_nofile()  # this process too (the fan-out helper opens its connections one at a time; a precaution)
    run_dir = tempfile.mkdtemp(prefix="run-", dir=a.work_dir)
    brokers = [Conflux(a.conflux_bin, run_dir, a.persistent_queue), Mosquitto(a.mosquitto, run_dir)]

    stop_on_signals()

    info = machine_info(a)
    print(f"== Conflux vs Mosquitto (MQTT), {started:%Y-%m-%d %H:%M %Z}", flush=True)
    print(f"command: {cmdline}")
    print(f"machine: {info['nproc']} × {info['cpu']}, {info['mem_gib']} GiB RAM, disk {info['disk']}, "
          f"Linux {info['kernel']}; load average at start {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}")
    print(f"versions: {info['conflux']} (sha256 {sha_c}…), {info['mosquitto']}, conflux-bench sha256 {sha_b}…; "
          f"open files limit {info['nofile']}")
    for b in brokers:
        print(f"durability, {b.name}: {b.durability}")
    print("Mosquitto config: " + MOSQUITTO_CONF.format(port="<free port>").replace("\n", "; ").strip("; "))
    print("Conflux config file: " + Conflux.config_toml.format(persistent=a.persistent_queue).strip())
    print(flush=True)

    results = {b.key: [] for b in brokers}
    try:
        for r in range(a.rounds):
            order = brokers if r % 2 == 0 else brokers[::-1]
            for b in order:
                results[b.key].append(run_round(a, b, r + 1))
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
    print(f"run time {elapsed / 60:.1f} min; load average at start {load_start[0]:.2f}, at end {load_end[0]:.2f}")
    problems = []
    for k, rs in results.items():
        for i, res in enumerate(rs):
            for s, v in res.items():
                if "error" in v:
                    problems.append(f"error: {k} round {i + 1} {s}: {v['error']}")
                if v.get("dropped", 0) > 0:
                    problems.append(f"drops: {k} round {i + 1} {s}: {v['dropped']:,} messages not delivered")
                if v.get("refused", 0) > 0:
                    problems.append(f"refused: {k} round {i + 1} {s}: {v['refused']:,} connections failed")
                if v.get("pub_error"):
                    problems.append(f"slow-subscriber publisher: {k} round {i + 1}: {v['pub_error']}")
                if s == "slowsub" and v.get("session_present") == 0:
                    problems.append(f"slow subscriber: {k} round {i + 1}: the session was not present on return")
                if v.get("helper_error"):
                    problems.append(f"fan-out helper: {k} round {i + 1}: {v['helper_error']}")
                if v.get("stderr"):
                    problems.append(f"conflux-bench stderr: {k} round {i + 1} {s}: {v['stderr'][:300]}")
                for w in v.get("broker_warnings", [])[:3]:
                    problems.append(f"broker warning: {k} round {i + 1} {s}: {w}")
    for p in problems:
        print(p)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"command": cmdline, "started": started.isoformat(), "run_secs": elapsed, "machine": info,
                       "load_start": load_start, "load_end": load_end, "conflux_sha256": sha_c,
                       "bench_sha256": sha_b, "results": results}, f, indent=1)
        print(f"raw figures: {a.json}")
    return 1 if any(p.startswith("error") for p in problems) else 0


if __name__ == "__main__":
    sys.exit(main())
