"""The older kafka-python 2.x line (2.3.3), which users still run, in a smoke run.

The suite's own venv has kafka-python 3, so kafka_python2_smoke.py runs with a second
virtualenv's python: $CONFLUX_KP2_PYTHON, default .venv-kp2/bin/python (scripts/test.sh
creates it from tests/requirements-kp2.txt). What the script did is then checked again
from outside with kafka-python 3.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from kafka import TopicPartition
from kafka.admin import KafkaAdminClient

from broker import REPO_ROOT, read_topic

SCRIPT = Path(__file__).resolve().parent / "kafka_python2_smoke.py"


def kp2_python() -> Path:
    env = os.environ.get("CONFLUX_KP2_PYTHON")
    if env:
        p = Path(env)
        return p if p.is_absolute() else REPO_ROOT / p
    return REPO_ROOT / ".venv-kp2" / "bin" / "python"


def test_kafka_python2_admin_produce_group_commit_and_resume(broker, unique_topic):
    python = kp2_python()
    if not python.exists():
        pytest.skip(
            f"no kafka-python 2.x interpreter at {python} (set CONFLUX_KP2_PYTHON, or create it: "
            "python3 -m venv .venv-kp2 && .venv-kp2/bin/python -m pip install -r tests/requirements-kp2.txt)"
        )
    topic, group = unique_topic("kp2-smoke"), "kp2-smoke-group"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    done = subprocess.run(
        [str(python), str(SCRIPT), broker.bootstrap, topic, group],
        capture_output=True, text=True, timeout=240, env=env, cwd=str(SCRIPT.parent),
    )
    assert done.returncode == 0, (
        f"kafka-python 2.x smoke run failed (exit {done.returncode})\n"
        f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-6000:]}"
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, done.stdout
    result = json.loads(lines[-1][len("RESULT "):])
    assert result["kafka_python"].startswith("2."), result
    assert result["configs"]["retention.ms"] == "3600000"
    assert result["configs"]["cleanup.policy"] == "delete"

    # Seen from kafka-python 3: every record stored, and the group's committed offsets
    # are what the 2.x consumer committed (the resuming consumer did not commit).
    records, ends = read_topic(broker.bootstrap, topic)
    assert len(records) == result["records"] == 96
    assert {str(p): o for p, o in ends.items()} == result["end_offsets"]
    admin = KafkaAdminClient(bootstrap_servers=[broker.bootstrap])
    try:
        offsets = admin.list_group_offsets({group: None})[group]
    finally:
        admin.close()
    assert {str(tp.partition): om.offset for tp, om in offsets.items() if tp.topic == topic} == (
        result["committed"]
    )
    assert set(offsets) == {TopicPartition(topic, p) for p in range(3)}
