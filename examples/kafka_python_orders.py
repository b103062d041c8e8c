#!/usr/bin/env python3
"""The kafka-python flow of the user guide against a local Conflux.

    cargo run --release -p conflux -- serve        # in another terminal
    python examples/kafka_python_orders.py          # BOOTSTRAP=host:port to point elsewhere

Creates the 'orders' topic (3 partitions), sends JSON orders with headers, and reads them back
in a consumer group with a manual commit.
"""

import json
import os

from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

BOOTSTRAP = os.environ.get("BOOTSTRAP", "localhost:9092")

admin = KafkaAdminClient(bootstrap_servers=[BOOTSTRAP])
try:
    admin.create_topics([NewTopic(name="orders", num_partitions=3, replication_factor=1)])
except TopicAlreadyExistsError:
    pass
admin.close()

producer = KafkaProducer(
    bootstrap_servers=[BOOTSTRAP],
    value_serializer=lambda v: json.dumps(v).encode("utf-8"),
    key_serializer=lambda k: k.encode("utf-8") if k else None,
)
for i in range(3):
    meta = producer.send(
        "orders",
        key=f"customer-{i}",
        value={"order_id": str(12345 + i), "amount": 99.99},
        headers=[("source", b"order-service"), ("version", b"1.0")],
    ).get(timeout=10)
    print(f"sent order {12345 + i} to {meta.topic} partition {meta.partition} offset {meta.offset}")
producer.flush()
producer.close()

consumer = KafkaConsumer(
    "orders",
    bootstrap_servers=[BOOTSTRAP],
    group_id="order-processors",
    auto_offset_reset="earliest",
    enable_auto_commit=False,
    consumer_timeout_ms=5000,
    value_deserializer=lambda m: json.loads(m.decode("utf-8")),
)
seen = 0
for message in consumer:
    print(f"received {message.value['order_id']} from partition {message.partition} "
          f"offset {message.offset} headers {dict(message.headers)}")
    consumer.commit()
    seen += 1
    if seen == 3:
        break
consumer.close()
print(f"done: {seen} orders")
