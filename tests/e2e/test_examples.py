"""The runnable examples in examples/ work against the real broker."""

import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run(example, bootstrap):
    env = dict(os.environ, BOOTSTRAP=bootstrap)
    done = subprocess.run([sys.executable, str(EXAMPLES / example)], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_kafka_python_orders_example(broker):
    out = run("kafka_python_orders.py", broker.bootstrap)
    assert out.count("sent order") == 3
    assert "done: 3 orders" in out
    assert "'source': b'order-service'" in out


def test_confluent_user_events_example(broker):
    out = run("confluent_user_events.py", broker.bootstrap)
    assert "produced 1000 events, 0 failed" in out
    assert "consumed 1000 events" in out
