"""kcat (librdkafka's command-line client) against the real broker."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from broker import create_topic, read_topic

KCAT = shutil.which("kcat") or shutil.which("kafkacat")


@pytest.fixture(autouse=True)
def _need_kcat():
    if KCAT is None:
        pytest.fail("kcat is not installed (scripts/test.sh installs it with apt-get)")


def kcat(*args, input_text=None, timeout=60):
    proc = subprocess.run(
        [KCAT, *args],
        input=input_text,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=None if input_text is not None else subprocess.DEVNULL,
    )
    assert proc.returncode == 0, (
        f"kcat {' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    )
    return proc


def test_kcat_metadata_lists_topic_with_partition_count(broker):
    create_topic(broker.bootstrap, "orders", 3)
    create_topic(broker.bootstrap, "sensors.temperature", 1)
    out = kcat("-b", broker.bootstrap, "-L", "-m", "30").stdout

    brokers = re.findall(r"broker (-?\d+) at (\S+)", out)
    assert len(brokers) == 1, out
    assert brokers[0][1] == broker.bootstrap, "advertised address should be the bound one"
    topics = dict(re.findall(r'topic "([^"]+)" with (\d+) partitions', out))
    assert topics.get("orders") == "3", out
    assert topics.get("sensors.temperature") == "1", out
    for p in range(3):
        assert re.search(rf"partition {p}, leader {brokers[0][0]}, replicas: ", out), out

    # Metadata for just one topic.
    out = kcat("-b", broker.bootstrap, "-L", "-t", "orders", "-m", "30").stdout
    assert re.findall(r'topic "([^"]+)" with (\d+) partitions', out) == [("orders", "3")], out


def test_kcat_produces_keyed_lines_and_consumes_them_back(broker):
    topic = "kcat-lines"
    lines = [f"key{i}:value number {i}" for i in range(50)] + ["k:v:with:colons", ":no-key"]
    kcat("-P", "-b", broker.bootstrap, "-t", topic, "-K:", input_text="\n".join(lines) + "\n")

    out = kcat(
        "-C", "-b", broker.bootstrap, "-t", topic, "-e", "-o", "beginning", "-q",
        "-f", "%k=%s\\n",
    ).stdout
    expected = [line.replace(":", "=", 1) for line in lines]
    assert out.splitlines() == expected

    # kcat split key from value on the first ':' and stored them as key and value.
    records, ends = read_topic(broker.bootstrap, topic)
    assert ends == {0: len(lines)}
    assert (records[0].key, records[0].value) == (b"key0", b"value number 0")
    assert (records[50].key, records[50].value) == (b"k", b"v:with:colons")
    assert records[51].key in (None, b"")
    assert records[51].value == b"no-key"


def test_kcat_headers_and_partitions(broker):
    topic = "kcat-headers"
    create_topic(broker.bootstrap, topic, 3)
    for p in range(3):
        kcat(
            "-P", "-b", broker.bootstrap, "-t", topic, "-p", str(p),
            "-H", "h=1", "-H", "h=2", "-H", f"part={p}",
            input_text=f"a{p}\nb{p}\n",
        )
    out = kcat(
        "-C", "-b", broker.bootstrap, "-t", topic, "-p", "1", "-e", "-o", "beginning", "-q",
        "-f", "%p %o %s %h\\n",
    ).stdout
    assert out.splitlines() == ["1 0 a1 h=1,h=2,part=1", "1 1 b1 h=1,h=2,part=1"]

    records, ends = read_topic(broker.bootstrap, topic)
    assert ends == {0: 2, 1: 2, 2: 2}
    for r in records:
        assert [tuple(h) for h in r.headers] == [("h", b"1"), ("h", b"2"), ("part", str(r.partition).encode())]
        assert r.value.decode()[1:] == str(r.partition)
