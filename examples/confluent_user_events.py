#!/usr/bin/env python3
"""The confluent-kafka (librdkafka) producer and consumer configuration of the user guide
against a local Conflux: idempotent, acks=all, lz4; a consumer with manual synchronous commits.

    python examples/confluent_user_events.py        # BOOTSTRAP=host:port to point elsewhere
"""

import json
import os

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer

BOOTSTRAP = os.environ.get("BOOTSTRAP", "localhost:9092")
N = 1000

producer = Producer({
    "bootstrap.servers": BOOTSTRAP,
    "acks": "all",
    "enable.idempotence": True,
    "compression.type": "lz4",
    "batch.size": 65536,
    "linger.ms": 5,
})
failures = []


def delivery_report(err, msg):
    if err is not None:
        failures.append(err)


for i in range(N):
    producer.produce("user-events", key=f"user-{i % 10}",
                     value=json.dumps({"user": i % 10, "seq": i}), on_delivery=delivery_report)
    producer.poll(0)
producer.flush(30)
print(f"produced {N} events, {len(failures)} failed")

consumer = Consumer({
    "bootstrap.servers": BOOTSTRAP,
    "group.id": "web-app-consumer",
    "auto.offset.reset": "earliest",
    "enable.auto.commit": False,
})
consumer.subscribe(["user-events"])
count = 0
try:
    while count < N:
        msg = consumer.poll(5.0)
        if msg is None:
            break
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                continue
            raise KafkaException(msg.error())
        count += 1
    consumer.commit(asynchronous=False)
finally:
    consumer.close()
print(f"consumed {count} events")
