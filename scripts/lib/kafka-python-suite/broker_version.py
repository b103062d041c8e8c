#!/usr/bin/env python3
"""Which broker version kafka-python infers for a broker, compared with KAFKA_VERSION.

usage: broker_version.py HOST:PORT KAFKA_VERSION|auto

Connects the way test_kafka_version_infer does (a KafkaConsumer with api_version=None),
prints one line `inferred=X.Y.Z configured=A.B.C` (configured = the version kafka-python
maps KAFKA_VERSION to; with `auto`, the inferred one) and exits
  0  configured == inferred (test_kafka_version_infer can pass), or auto
  3  configured > inferred: the clients use the broker's own ApiVersions ranges, but
     test_kafka_version_infer fails
  4  configured < inferred: kafka-python "clamps to user-supplied" and sends the request
     versions of its built-in table for the configured version, whatever the broker
     advertises; the run would not test what the broker serves
  2  no answer from the broker
"""
import logging
import sys

logging.basicConfig(level=logging.ERROR)

from kafka import KafkaConsumer  # noqa: E402
from kafka.protocol.broker_version_data import BrokerVersionData  # noqa: E402


def dotted(v):
    v = tuple(v) + (0,) * (3 - len(v))
    return ".".join(map(str, v))


def main():
    bootstrap, configured = sys.argv[1], sys.argv[2]
    try:
        c = KafkaConsumer(bootstrap_servers=bootstrap, api_version=None,
                          request_timeout_ms=10000, client_id="kp-suite-version-probe")
    except Exception as e:  # noqa: BLE001
        print(f"error: cannot infer the broker version at {bootstrap}: {e!r}")
        return 2
    inferred = tuple(c.config["api_version"])
    c.close()
    if configured == "auto":
        print(f"inferred={dotted(inferred)} configured={dotted(inferred)}")
        return 0
    want = BrokerVersionData(tuple(int(x) for x in configured.split("."))).broker_version
    print(f"inferred={dotted(inferred)} configured={dotted(want)}")
    if want == inferred:
        return 0
    return 3 if want > inferred else 4


if __name__ == "__main__":
    sys.exit(main())
