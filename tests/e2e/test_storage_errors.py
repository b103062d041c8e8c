"""A full disk: the broker answers KAFKA_STORAGE_ERROR, logs the failure once (with the
stream, partition and errno) and once more when writes succeed again, keeps every record it
acknowledged, and resumes writing when space returns, without a restart.

The data directory lives on a small tmpfs mounted for the test (root, or passwordless sudo).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess

import pytest
from kafka import KafkaProducer
from kafka.errors import KafkaStorageError

from broker import read_topic, wait_until

VALUE = 64 * 1024


def _sudo(cmd):
    return cmd if os.geteuid() == 0 else ["sudo", "-n"] + cmd


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(
        _sudo(["mount", "-t", "tmpfs", "-o", "size=48m,mode=0777", "tmpfs", str(mnt)]),
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for the full-disk test: {r.stderr.strip()}")
    yield mnt
    subprocess.run(_sudo(["umount", "-l", str(mnt)]), capture_output=True)


def _fill(mnt, leave_free):
    free = shutil.disk_usage(mnt).free
    filler = mnt / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free - leave_free))
        f.flush()
        os.fsync(f.fileno())
    return filler


def _value(i):
    return (f"{i:08d}".encode() * (VALUE // 8))[:VALUE]


def test_full_disk_answers_storage_error_logs_once_and_recovers(broker_factory, small_disk):
    b = broker_factory(data_dir=small_disk / "data", name="fulldisk")
    try:
        producer = KafkaProducer(
            bootstrap_servers=[b.bootstrap], acks="all", retries=0, linger_ms=0,
            max_request_size=4 * 1024 * 1024, request_timeout_ms=10000,
        )
        acked = {}  # offset -> sha256 of the value
        filler = _fill(small_disk, 6 * 1024 * 1024)
        errors = []
        i = 0
        while len(errors) < 5 and i < 400:
            try:
                md = producer.send("filling", value=_value(i), partition=0).get(timeout=15)
                assert not errors, "a write succeeded after the disk filled, before space returned"
                acked[md.offset] = hashlib.sha256(_value(i)).hexdigest()
            except KafkaStorageError as e:
                errors.append(e)
            i += 1
        assert acked, "nothing was acknowledged before the disk filled"
        assert len(errors) == 5, f"no storage error after {i} sends of {VALUE} bytes"

        log = b.log_text()
        fail_lines = [l for l in log.splitlines() if "writes to this partition fail" in l]
        assert len(fail_lines) == 1, f"expected one failure line, got:\n" + "\n".join(fail_lines)
        line = fail_lines[0]
        assert "ERROR" in line and ("stream=filling" in line or 'stream="filling"' in line), line
        assert re.search(r"partition=0\b", line), line
        assert re.search(r"errno=28\b", line), line  # ENOSPC

        # Space returns: the next write succeeds without a restart, and that is logged once.
        filler.unlink()
        md = producer.send("filling", value=_value(10_000), partition=0).get(timeout=15)
        acked[md.offset] = hashlib.sha256(_value(10_000)).hexdigest()
        wait_until(lambda: "writes succeed again" in b.log_text(), 10, "the recovery log line")
        assert b.log_text().count("writes succeed again") == 1
        producer.close(timeout=10)

        # Every acknowledged record is there, at its offset, after a restart too.
        b.restart()
        records, ends = read_topic(b.bootstrap, "filling")
        got = {r.offset: hashlib.sha256(r.value).hexdigest() for r in records}
        assert ends[0] == len(got) == len(acked), (ends, len(got), len(acked))
        assert got == acked
    finally:
        if b.running():
            assert b.stop() == 0
