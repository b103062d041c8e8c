"""Debian's mosquitto_pub and mosquitto_sub (libmosquitto 2.0) against the broker, as an
operator uses them: QoS 0/1/2 both ways, retained messages, MQTT 5 user properties, and a
Kafka producer's record read by mosquitto_sub."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from kafka import KafkaProducer

from broker import read_topic

pytestmark = pytest.mark.skipif(
    shutil.which("mosquitto_pub") is None, reason="mosquitto-clients not installed (scripts/test.sh installs it)"
)


def sub(port, topic, count, *extra):
    """Starts mosquitto_sub for `count` messages (-v: "topic payload" per line)."""
    return subprocess.Popen(
        ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-t", topic, "-C", str(count),
         "-W", "20", "-v", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def pub(port, topic, message, *extra):
    subprocess.run(
        ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-t", topic, "-m", message, *extra],
        check=True, timeout=20, capture_output=True,
    )


@pytest.mark.parametrize("version", ["mqttv311", "mqttv5"])
def test_mosquitto_pub_sub_every_qos(broker, version):
    port = broker.mqtt_port
    # Retained first, so the subscriber's start needs no race: it gets it on subscribe.
    pub(port, "mos/ready", "r", "-r", "-q", "1", "-V", version)
    s = sub(port, "mos/#", 4, "-q", "2", "-V", version)
    # Wait until the subscriber saw the retained message, then publish at every QoS.
    line = s.stdout.readline().strip()
    assert line == "mos/ready r"
    for q in (0, 1, 2):
        pub(port, f"mos/q{q}", f"hello{q}", "-q", str(q), "-V", version)
    out, err = s.communicate(timeout=30)
    assert s.returncode == 0, err
    assert out.split("\n")[:3] == ["mos/q0 hello0", "mos/q1 hello1", "mos/q2 hello2"]


def test_mqtt5_user_properties_and_kafka_to_mosquitto_sub(broker):
    port = broker.mqtt_port
    pub(port, "mos5/ready", "r", "-r", "-q", "1")
    s = sub(port, "mos5/#", 3, "-q", "1", "-V", "mqttv5", "-F", "%t %p %P")
    assert s.stdout.readline().startswith("mos5/ready r")
    pub(port, "mos5/props", "v", "-q", "1", "-V", "mqttv5", "-D", "publish", "user-property", "site", "lab")
    p = KafkaProducer(bootstrap_servers=[broker.bootstrap], acks="all")
    p.send("mos5.kafka", b"from-kafka", headers=[("origin", b"kafka")]).get(timeout=10)
    p.close()
    out, err = s.communicate(timeout=30)
    lines = out.strip().split("\n")
    assert lines[0] == "mos5/props v site:lab", lines
    assert lines[1] == "mos5/kafka from-kafka origin:kafka", lines
    # And mosquitto_pub's message is a Kafka record with the property as a header.
    records, _ = read_topic(broker.bootstrap, "mos5.props")
    assert records[0].value == b"v" and ("site", b"lab") in list(records[0].headers)
