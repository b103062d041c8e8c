"""Drive the real `conflux` binary from the end-to-end tests.

`Broker` starts `conflux serve` on OS-chosen loopback ports, reads its log from a
pipe (in a thread) until the Kafka listener reports its bound address, and stops
it with a signal. The log is also copied to a file in the test's tmp dir so a
failing test can show it.

`KafkaFaultProxy` sits between Kafka clients and the broker and can cut a
connection right after the broker answered a Produce request, without passing
that answer on: the client must retry a batch the broker already stored, which
is how the idempotent-producer test proves the broker drops duplicates.

Small helpers (`wait_until`, `Deadline`) keep every wait in the tests bounded.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, Optional

REPO_ROOT = Path(__file__).resolve().parents[2]

#: Seconds a broker gets to bind its Kafka listener after start.
START_TIMEOUT = float(os.environ.get("CONFLUX_START_TIMEOUT", "30"))

# The broker logs e.g.
#   INFO conflux: listener bound protocol=kafka addr=127.0.0.1:40123
# Be lenient about quoting (`protocol="kafka"`) and field order noise.
_BOUND_RE = re.compile(
    r'listener bound.*?protocol="?(?P<proto>[a-z-]+)"?.*?addr="?(?P<host>\[[0-9a-fA-F:.]+\]|[0-9.]+|localhost):(?P<port>\d+)'
)
_ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")


def default_binary() -> Path:
    """The binary under test: $CONFLUX_BIN, else target/release/conflux."""
    env = os.environ.get("CONFLUX_BIN")
    if env:
        p = Path(env)
        return p if p.is_absolute() else (REPO_ROOT / p)
    return REPO_ROOT / "target" / "release" / "conflux"


class Deadline:
    """A point in time, so loops can say `while not deadline.passed()`."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def passed(self) -> bool:
        return time.monotonic() >= self.end


def wait_until(cond: Callable[[], object], timeout: float, what: str, interval: float = 0.05):
    """Poll `cond` until it returns something truthy, at most `timeout` seconds.

    Returns that value; raises AssertionError naming `what` on timeout.
    """
    deadline = Deadline(timeout)
    while True:
        value = cond()
        if value:
            return value
        if deadline.passed():
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class BrokerStartError(AssertionError):
    pass


class Broker:
    """One `conflux serve` process on a data directory.

    The same object can be started again after `stop()`/`kill9()` (same data
    dir, new ports): clients must then use the new `bootstrap`.
    """

    def __init__(
        self,
        data_dir: Path,
        log_path: Path,
        binary: Optional[Path] = None,
        extra_args: Iterable[str] = (),
        name: str = "broker",
    ):
        self.binary = Path(binary) if binary else default_binary()
        self.data_dir = Path(data_dir)
        self.log_path = Path(log_path)
        self.extra_args = list(extra_args)
        self.name = name
        self.proc: Optional[subprocess.Popen] = None
        self.host: Optional[str] = None
        self.port: Optional[int] = None
        # Bound port of every listener by protocol ("kafka", "mqtt", "mqtt-ws", "amqp").
        self.ports: dict[str, int] = {}
        self.starts = 0
        # True while the process is meant to be running; False once we stopped
        # or killed it. A process that exits while this is True died on its own.
        self.expected_running = False
        self.last_returncode: Optional[int] = None
        self._lines: list[str] = []
        self._lines_lock = threading.Lock()
        self._ready = threading.Event()
        self._eof = threading.Event()
        self._reader: Optional[threading.Thread] = None

    # ------------------------------------------------------------------ start

    def command(self, extra_args: Iterable[str] = ()) -> list[str]:
        cmd = [
            str(self.binary),
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--kafka-listen",
            "127.0.0.1:0",
            "--mqtt-listen",
            "127.0.0.1:0",
            "--mqtt-ws-listen",
            "127.0.0.1:0",
            "--amqp-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ]
        cmd += self.extra_args
        cmd += list(extra_args)
        return cmd

    def start(self, extra_args: Iterable[str] = (), timeout: float = START_TIMEOUT) -> "Broker":
        """Start the process and wait until its Kafka listener is bound."""
        if self.running():
            raise RuntimeError(f"{self.name} is already running")
        if not self.binary.exists():
            raise BrokerStartError(
                f"broker binary {self.binary} does not exist "
                "(build it with `cargo build --release -p conflux` or set CONFLUX_BIN)"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = self.command(extra_args)
        # Die with the test process (SIGKILL) if pytest itself is killed, so no
        # broker outlives its suite. setpriv execs: the PID is the broker's.
        if shutil.which("setpriv"):
            cmd = ["setpriv", "--pdeathsig", "KILL", "--"] + cmd
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONFLUX_")}
        env["RUST_LOG"] = os.environ.get("CONFLUX_TEST_RUST_LOG", "info")
        env.setdefault("RUST_BACKTRACE", "1")
        env["NO_COLOR"] = "1"

        self.starts += 1
        self._ready = threading.Event()
        self._eof = threading.Event()
        self.host = self.port = None
        self.ports = {}
        self._append_line(f"===== start #{self.starts}: {' '.join(cmd)}\n")
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=str(self.data_dir.parent),
            env=env,
        )
        self.expected_running = True
        self.last_returncode = None
        self._reader = threading.Thread(
            target=self._read_output, args=(self.proc, self._ready, self._eof), daemon=True,
            name=f"{self.name}-log",
        )
        self._reader.start()

        deadline = Deadline(timeout)
        while not self._ready.wait(timeout=0.05):
            if self.proc.poll() is not None:
                self._eof.wait(timeout=5)
                rc = self.proc.returncode
                self.expected_running = False
                self.last_returncode = rc
                raise BrokerStartError(
                    f"{self.name} exited with code {rc} before its Kafka listener was bound.\n"
                    f"--- log ---\n{self.log_text()}"
                )
            if deadline.passed():
                self.kill9()
                raise BrokerStartError(
                    f"{self.name} did not log 'listener bound protocol=kafka addr=...' "
                    f"within {timeout:.0f}s.\n--- log ---\n{self.log_text()}"
                )
        return self

    def _append_line(self, line: str, to_file: bool = True):
        with self._lines_lock:
            self._lines.append(line)
            if to_file:
                with open(self.log_path, "a", encoding="utf-8") as f:
                    f.write(line)

    def _read_output(self, proc: subprocess.Popen, ready: threading.Event, eof: threading.Event):
        assert proc.stdout is not None
        with open(self.log_path, "a", encoding="utf-8") as f:
            for raw in iter(proc.stdout.readline, b""):
                line = _ANSI_RE.sub("", raw.decode("utf-8", errors="replace"))
                with self._lines_lock:
                    self._lines.append(line)
                f.write(line)
                f.flush()
                if not ready.is_set():
                    m = _BOUND_RE.search(line)
                    if m:
                        self.ports[m.group("proto")] = int(m.group("port"))
                    # The Kafka listener is reported last: the broker is then ready.
                    if m and m.group("proto") == "kafka":
                        self.host = m.group("host").strip("[]")
                        self.port = int(m.group("port"))
                        ready.set()
        proc.stdout.close()
        eof.set()

    # ------------------------------------------------------------- accessors

    @property
    def bootstrap(self) -> str:
        """`127.0.0.1:PORT` of the running broker's Kafka listener."""
        if self.port is None:
            raise RuntimeError(f"{self.name} is not started")
        host = self.host or "127.0.0.1"
        if host == "0.0.0.0":
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"{host}:{self.port}"

    @property
    def mqtt_port(self) -> int:
        """Port of the running broker's MQTT (TCP) listener."""
        return self.ports["mqtt"]

    @property
    def amqp_port(self) -> int:
        """Port of the running broker's AMQP 0-9-1 listener."""
        return self.ports["amqp"]

    @property
    def mqtt_ws_port(self) -> int:
        """Port of the running broker's MQTT-over-WebSocket listener."""
        return self.ports["mqtt-ws"]

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        with self._lines_lock:
            return "".join(self._lines)

    def log_tail(self, lines: int = 200) -> str:
        with self._lines_lock:
            return "".join(self._lines[-lines:])

    def rss_bytes(self) -> Optional[int]:
        """Resident memory of the broker process (Linux), or None."""
        try:
            with open(f"/proc/{self.pid}/status", encoding="ascii") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    # ------------------------------------------------------------------ stop

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Send `sig` and wait for the exit; returns the exit code.

        A process that does not exit within `timeout` is killed with SIGKILL and
        an AssertionError carrying the log is raised.
        """
        if self.proc is None:
            raise RuntimeError(f"{self.name} was never started")
        self.expected_running = False
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                self._join_reader()
                raise AssertionError(
                    f"{self.name} did not exit within {timeout:.0f}s of "
                    f"{signal.Signals(sig).name}; killed it.\n--- log tail ---\n{self.log_tail()}"
                )
        self._join_reader()
        self.last_returncode = self.proc.returncode
        return self.proc.returncode

    def kill9(self) -> int:
        """SIGKILL the broker (a crash) and reap it; returns the exit code (-9)."""
        if self.proc is None:
            raise RuntimeError(f"{self.name} was never started")
        self.expected_running = False
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self._join_reader()
        self.last_returncode = self.proc.returncode
        return self.proc.returncode

    def restart(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Clean stop, then start again on the same data dir. Returns the stop's exit code."""
        rc = self.stop(sig=sig, timeout=timeout)
        self.start()
        return rc

    def _join_reader(self):
        if self._reader is not None:
            self._reader.join(timeout=10)

    def __repr__(self):
        state = "running" if self.running() else "stopped"
        return f"<Broker {self.name} {state} bootstrap={self.port and self.bootstrap} data={self.data_dir}>"


# --------------------------------------------------------------------------
# A TCP proxy that understands Kafka framing, for fault injection.


def _recv_exact(sock: socket.socket, n: int) -> Optional[bytes]:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def read_frame(sock: socket.socket) -> Optional[bytes]:
    """One size-prefixed Kafka frame (without the prefix), or None at EOF."""
    head = _recv_exact(sock, 4)
    if head is None:
        return None
    (size,) = struct.unpack(">i", head)
    if size < 0 or size > 256 * 1024 * 1024:
        raise ValueError(f"bad frame size {size}")
    return _recv_exact(sock, size)


class KafkaFaultProxy:
    """Forward Kafka connections from a local port to the broker.

    `drop_produce_responses`: after the broker answers a Produce request, swallow
    the answer and close the client's connection, for the first N Produce
    responses that satisfy `every` (every k-th Produce response). Start the broker
    with `--kafka-advertised 127.0.0.1:<proxy.port>` so clients stay on the proxy.
    """

    def __init__(self, drop_produce_responses: int = 0, every: int = 5):
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.target: Optional[tuple[str, int]] = None
        self.drop_budget = drop_produce_responses
        self.every = every
        self.produce_responses = 0
        self.dropped = 0
        self.connections = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._socks: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept_loop, daemon=True, name="fault-proxy")

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, target_host: str, target_port: int) -> "KafkaFaultProxy":
        self.target = (target_host, target_port)
        self._thread.start()
        return self

    def close(self):
        self._stop.set()
        try:
            self.listener.close()
        except OSError:
            pass
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            try:
                s.close()
            except OSError:
                pass
        self._thread.join(timeout=5)

    def _accept_loop(self):
        self.listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            client.settimeout(None)
            with self._lock:
                self.connections += 1
                self._socks += [client, upstream]
            inflight: dict[int, int] = {}  # correlation id -> api key
            threading.Thread(target=self._pump_requests, args=(client, upstream, inflight), daemon=True).start()
            threading.Thread(target=self._pump_responses, args=(upstream, client, inflight), daemon=True).start()

    @staticmethod
    def _shut(*socks: socket.socket):
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass

    def _pump_requests(self, client, upstream, inflight):
        try:
            while True:
                frame = read_frame(client)
                if frame is None:
                    break
                if len(frame) >= 8:
                    api_key, _ver, corr = struct.unpack(">hhi", frame[:8])
                    inflight[corr] = api_key
                upstream.sendall(struct.pack(">i", len(frame)) + frame)
        except (OSError, ValueError):
            pass
        self._shut(client, upstream)

    def _pump_responses(self, upstream, client, inflight):
        try:
            while True:
                frame = read_frame(upstream)
                if frame is None:
                    break
                corr = struct.unpack(">i", frame[:4])[0] if len(frame) >= 4 else None
                api_key = inflight.pop(corr, None)
                if api_key == 0:  # Produce
                    with self._lock:
                        self.produce_responses += 1
                        drop = self.dropped < self.drop_budget and self.produce_responses % self.every == 0
                        if drop:
                            self.dropped += 1
                    if drop:
                        break  # the answer is lost; the client sees a broken connection
                client.sendall(struct.pack(">i", len(frame)) + frame)
        except (OSError, ValueError):
            pass
        self._shut(client, upstream)


# --------------------------------------------------------------------------
# Client helpers shared by the test modules (kafka-python based).


def create_topic(bootstrap: str, name: str, partitions: int, timeout_ms: int = 30000, configs=None):
    """Create a topic with kafka-python's admin client; returns the response dict.

    kafka-python 3: `create_topics` takes {name: {num_partitions, replication_factor,
    configs}} and returns {'topics': [{'name', 'error_code', ...}]}.
    """
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=[bootstrap], request_timeout_ms=timeout_ms)
    try:
        spec = {"num_partitions": partitions, "replication_factor": 1}
        if configs:
            spec["configs"] = dict(configs)
        resp = admin.create_topics({name: spec}, timeout_ms=timeout_ms, raise_errors=False)
        assert [t["name"] for t in resp["topics"]] == [name], resp
        for topic in resp["topics"]:
            assert topic["error_code"] == 0, f"CreateTopics({name}) failed: {topic}"
        return resp
    finally:
        admin.close()


def read_topic(bootstrap: str, topic: str, timeout: float = 60, **consumer_kwargs):
    """Every record of `topic` from the beginning to the current end offsets.

    Uses kafka-python with manual assignment (no group). Returns
    (records sorted by (partition, offset), {partition: end offset}).
    """
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=[bootstrap],
        group_id=None,
        enable_auto_commit=False,
        **consumer_kwargs,
    )
    try:
        parts = wait_until(
            lambda: consumer.partitions_for_topic(topic), 30, f"metadata for topic {topic}"
        )
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        records = []
        deadline = Deadline(timeout)
        while any(consumer.position(tp) < end[tp] for tp in tps):
            if deadline.passed():
                got = {tp.partition: consumer.position(tp) for tp in tps}
                raise AssertionError(
                    f"read_topic({topic}): positions {got} did not reach end offsets "
                    f"{ {tp.partition: o for tp, o in end.items()} } within {timeout}s"
                )
            for recs in consumer.poll(timeout_ms=500).values():
                records.extend(recs)
        records.sort(key=lambda r: (r.partition, r.offset))
        return records, {tp.partition: o for tp, o in end.items()}
    finally:
        consumer.close()
