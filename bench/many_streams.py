#!/usr/bin/env python3
"""Many streams stay cheap: publish one QoS 1 MQTT message to each of N distinct topics (one
new stream each, with the default topic ↔ stream mapping), then report the broker's resident
memory, open file descriptors, disk use, and how long a restart takes (SIGTERM, start until
every listener is bound).

Usage:  .venv/bin/python bench/many_streams.py [--topics 20000] [--binary target/release/conflux]
"""

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import paho.mqtt.client as mqtt

from bench_common import dir_bytes, proc_status

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start(binary, data):
    args = [binary, "serve", "--data-dir", data, "--kafka-listen", "127.0.0.1:0",
            "--mqtt-listen", "127.0.0.1:0", "--mqtt-ws-listen", "127.0.0.1:0",
            "--amqp-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"]
    t0 = time.monotonic()
    p = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                         env={**os.environ, "NO_COLOR": "1", "RUST_LOG": "info"})
    mqtt_port = None
    for line in p.stderr:
        m = re.search(r"listener bound protocol=mqtt addr=127\.0\.0\.1:(\d+)", line)
        if m:
            mqtt_port = int(m.group(1))
        if "protocol=kafka" in line and "listener bound" in line:
            break
    ready = time.monotonic() - t0
    # Keep draining the log.
    import threading
    threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
    return p, mqtt_port, ready


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--topics", type=int, default=20_000)
    ap.add_argument("--binary", default=os.environ.get("CONFLUX_BIN", os.path.join(ROOT, "target/release/conflux")))
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="many-streams-")
    data = os.path.join(work, "data")
    try:
        p, port, _ = start(a.binary, data)
        base_rss = proc_status(p.pid, "VmRSS")
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="many-streams", protocol=mqtt.MQTTv311)
        c.max_inflight_messages_set(100)
        c.connect("127.0.0.1", port)
        c.loop_start()
        t0 = time.monotonic()
        infos = []
        for i in range(a.topics):
            infos.append(c.publish(f"fleet/device{i}/state", b"on", qos=1))
        for info in infos:
            info.wait_for_publish(60)
        took = time.monotonic() - t0
        c.loop_stop()
        c.disconnect()
        rss = proc_status(p.pid, "VmRSS")
        fds = len(os.listdir(f"/proc/{p.pid}/fd"))
        disk = dir_bytes(data)
        p.send_signal(signal.SIGTERM)
        p.wait(60)
        p2, _, restart = start(a.binary, data)
        rss_after = proc_status(p2.pid, "VmRSS")
        p2.send_signal(signal.SIGTERM)
        p2.wait(60)
        print(f"| topics (one stream each) | {a.topics:,} |")
        print("|---|---:|")
        print(f"| publish one QoS 1 message to each (acknowledged, fsync'd) | {took:.1f} s ({took / a.topics * 1000:.2f} ms per new stream) |")
        print(f"| broker RSS before / after | {base_rss / 1024:.1f} MiB / {rss / 1024:.1f} MiB |")
        print(f"| open file descriptors | {fds:,} |")
        print(f"| data directory on disk | {disk / 1e6:.0f} MB |")
        print(f"| restart (SIGTERM, start until every listener is bound) | {restart:.2f} s |")
        print(f"| RSS after the restart | {rss_after / 1024:.1f} MiB |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
