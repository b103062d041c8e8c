"""AMQP 0-9-1 with pika (and aio-pika) against the real broker: the seed scenarios (work
queue, publish/subscribe, RPC, Kafka topic read through a binding), every exchange type,
confirms and mandatory returns, acknowledgements, TTL and dead-lettering, length limits,
transactions, exclusive and auto-delete queues, durability across restarts and kill -9, and
the bridges to Kafka and MQTT."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid

import pika
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from pika.exceptions import ChannelClosedByBroker, UnroutableError

from broker import read_topic, wait_until
from mqtt_util import V5, Client


def connect(b, **kw) -> pika.BlockingConnection:
    params = pika.ConnectionParameters(
        "127.0.0.1",
        b.amqp_port,
        credentials=pika.PlainCredentials("guest", "guest"),
        **kw,
    )
    return pika.BlockingConnection(params)


def count(ch, queue: str) -> int:
    return ch.queue_declare(queue=queue, passive=True).method.message_count


def consume(ch, queue: str, n: int, auto_ack: bool = False, timeout: float = 20):
    """The next `n` deliveries of `queue` as (method, properties, body), acked unless auto_ack."""
    got = []
    deadline = time.monotonic() + timeout
    for method, props, body in ch.consume(queue, auto_ack=auto_ack, inactivity_timeout=0.5):
        if method is not None:
            got.append((method, props, body))
            if not auto_ack:
                ch.basic_ack(method.delivery_tag)
        if len(got) >= n or time.monotonic() > deadline:
            break
    ch.cancel()
    assert len(got) == n, f"got {len(got)} of {n} messages from {queue}"
    return got


# ---------------------------------------------------------------- seed 001 scenarios


def test_work_queue_with_prefetch_ack_and_nack_requeue(broker):
    """Seed 001's task queue: durable direct exchange, persistent JSON messages, prefetch 1,
    ack on success, nack(requeue=True) on failure: the message comes back redelivered."""
    conn = connect(broker, heartbeat=600, blocked_connection_timeout=300)
    ch = conn.channel()
    ch.exchange_declare(exchange="tasks", exchange_type="direct", durable=True)
    ch.queue_declare(queue="task_queue", durable=True, exclusive=False, auto_delete=False)
    ch.queue_bind(queue="task_queue", exchange="tasks", routing_key="task")
    for i in range(5):
        ch.basic_publish(
            exchange="tasks",
            routing_key="task",
            body=json.dumps({"task_id": i}),
            properties=pika.BasicProperties(delivery_mode=2, content_type="application/json"),
        )
    wait_until(lambda: count(ch, "task_queue") == 5, 10, "5 messages queued")
    ch.basic_qos(prefetch_count=1)
    seen = []
    failed_once = []

    def callback(c, method, props, body):
        task = json.loads(body)
        seen.append((task["task_id"], method.redelivered, method.delivery_tag))
        assert props.content_type == "application/json" and props.delivery_mode == 2
        if task["task_id"] == 2 and not failed_once:
            failed_once.append(1)
            c.basic_nack(delivery_tag=method.delivery_tag, requeue=True)
            return
        c.basic_ack(delivery_tag=method.delivery_tag)
        if len(seen) == 6:
            c.basic_cancel(method.consumer_tag)

    ch.basic_consume(queue="task_queue", on_message_callback=callback, auto_ack=False)
    conn.call_later(20, ch.stop_consuming)
    ch.start_consuming()
    assert [t for t, _, _ in seen] == [0, 1, 2, 2, 3, 4], "nacked message back at the head"
    assert [r for _, r, _ in seen] == [False, False, False, True, False, False]
    assert [tag for _, _, tag in seen] == [1, 2, 3, 4, 5, 6], "delivery tags per channel"
    assert count(ch, "task_queue") == 0
    conn.close()


def test_fanout_publish_subscribe_and_auto_delete(broker):
    conn = connect(broker)
    ch = conn.channel()
    ch.exchange_declare(exchange="events", exchange_type="fanout", durable=True)
    names = []
    for i in range(2):
        q = f"sub-{i}"
        ch.queue_declare(queue=q, durable=True, exclusive=False, auto_delete=True)
        ch.queue_bind(queue=q, exchange="events", routing_key="")
        names.append(q)
    for i in range(3):
        ch.basic_publish(exchange="events", routing_key="", body=f"e{i}".encode())
    for q in names:
        got = consume(ch, q, 3)
        assert [b for _, _, b in got] == [b"e0", b"e1", b"e2"]
        assert got[0][0].exchange == "events"
    # The auto-delete queues went with their last consumer.
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_declare(queue="sub-0", passive=True)
    assert e.value.reply_code == 404
    conn.close()


def test_rpc_with_server_named_exclusive_reply_queue(broker):
    server = connect(broker)
    sch = server.channel()
    sch.queue_declare(queue="rpc_queue")

    def on_request(c, method, props, body):
        n = int(body)
        c.basic_publish(
            exchange="",
            routing_key=props.reply_to,
            properties=pika.BasicProperties(correlation_id=props.correlation_id),
            body=str(n * 2),
        )
        c.basic_ack(delivery_tag=method.delivery_tag)

    sch.basic_qos(prefetch_count=1)
    sch.basic_consume(queue="rpc_queue", on_message_callback=on_request)
    t = threading.Thread(target=lambda: server.process_data_events(time_limit=15), daemon=True)
    t.start()

    client = connect(broker)
    cch = client.channel()
    reply = cch.queue_declare(queue="", exclusive=True).method.queue
    assert reply.startswith("amq.gen-")
    corr = str(uuid.uuid4())
    answer = {}

    def on_response(c, method, props, body):
        if props.correlation_id == corr:
            answer["v"] = body
            c.basic_cancel(method.consumer_tag)

    cch.basic_consume(queue=reply, on_message_callback=on_response, auto_ack=True)
    cch.basic_publish(
        exchange="",
        routing_key="rpc_queue",
        properties=pika.BasicProperties(reply_to=reply, correlation_id=corr),
        body="21",
    )
    client.call_later(15, cch.stop_consuming)
    cch.start_consuming()
    assert answer.get("v") == b"42"
    # Another connection cannot use the exclusive queue; it is gone with its connection.
    other = connect(broker).channel()
    with pytest.raises(ChannelClosedByBroker) as e:
        other.queue_declare(queue=reply, passive=True)
    assert e.value.reply_code == 405
    client.close()
    probe = connect(broker).channel()
    with pytest.raises(ChannelClosedByBroker) as e:
        probe.queue_declare(queue=reply, passive=True)
    assert e.value.reply_code == 404
    t.join(timeout=20)
    server.close()


def test_kafka_topic_is_read_through_a_binding(broker):
    """Seed 000: a Kafka producer writes `orders.eu.new`; an AMQP consumer binds a queue to
    exchange `orders` with key `eu.new` (the exchange exists because the topic does)."""
    prod = KafkaProducer(bootstrap_servers=broker.bootstrap, value_serializer=lambda v: json.dumps(v).encode())
    prod.send("orders.eu.new", {"order_id": "12345", "amount": 99.99}).get(timeout=30)
    ch = connect(broker).channel()
    ch.queue_declare(queue="order-processing")
    ch.queue_bind(exchange="orders", queue="order-processing", routing_key="eu.new")
    prod.send("orders.eu.new", {"order_id": "12346", "amount": 5}, headers=[("trace", b"t-1")]).get(timeout=30)
    prod.send("orders.us.new", {"order_id": "other"}).get(timeout=30)
    got = consume(ch, "order-processing", 1, auto_ack=True)
    method, props, body = got[0]
    assert json.loads(body) == {"order_id": "12346", "amount": 5}
    assert (method.exchange, method.routing_key) == ("orders", "eu.new")
    assert props.headers == {"trace": "t-1"}  # pika decodes UTF-8 long strings
    assert count(ch, "order-processing") == 0, "orders.us.new does not match"
    prod.close()


# ---------------------------------------------------------------- routing


def test_topic_direct_headers_and_exchange_to_exchange_routing(broker):
    ch = connect(broker).channel()
    ch.exchange_declare(exchange="logs", exchange_type="topic")
    ch.exchange_declare(exchange="hdr", exchange_type="headers")
    ch.exchange_declare(exchange="fan", exchange_type="fanout")
    binds = {
        "star": ("logs", "*.error", None),
        "hash": ("logs", "app.#", None),
        "mid": ("logs", "a.#.z", None),
        "all": ("hdr", "", {"format": "pdf", "type": "report"}),
        "any": ("hdr", "", {"x-match": "any", "format": "zip", "n": 5}),
        "e2e": ("fan", "", None),
    }
    for q, (ex, key, args) in binds.items():
        ch.queue_declare(queue=q, exclusive=True)
        ch.queue_bind(queue=q, exchange=ex, routing_key=key, arguments=args)
    ch.exchange_bind(destination="fan", source="logs", routing_key="#.critical")
    ch.confirm_delivery()
    for key in ["db.error", "app.web.error", "app", "a.z", "a.b.c.z", "x.critical"]:
        ch.basic_publish(exchange="logs", routing_key=key, body=key.encode())
    for headers in [{"format": "pdf", "type": "report"}, {"format": "pdf"}, {"n": 5}]:
        ch.basic_publish(exchange="hdr", routing_key="", body=json.dumps(headers).encode(),
                         properties=pika.BasicProperties(headers=headers))
    want = {
        "star": [b"db.error"],
        "hash": [b"app.web.error", b"app"],
        "mid": [b"a.z", b"a.b.c.z"],
        "all": [b'{"format": "pdf", "type": "report"}'],
        "any": [b'{"n": 5}'],
        "e2e": [b"x.critical"],
    }
    for q, bodies in want.items():
        got = consume(ch, q, len(bodies), auto_ack=True)
        assert [b for _, _, b in got] == bodies, q
        assert count(ch, q) == 0, q
    ch.exchange_unbind(destination="fan", source="logs", routing_key="#.critical")
    ch.basic_publish(exchange="logs", routing_key="y.critical", body=b"after unbind")
    assert count(ch, "e2e") == 0


def test_confirms_mandatory_returns_and_unroutable(broker):
    ch = connect(broker).channel()
    ch.confirm_delivery()
    ch.queue_declare(queue="mand", exclusive=True)
    ch.basic_publish(exchange="", routing_key="mand", body=b"ok", mandatory=True)
    with pytest.raises(UnroutableError) as e:
        ch.basic_publish(exchange="", routing_key="no-such-queue", body=b"lost", mandatory=True,
                         properties=pika.BasicProperties(headers={"h": "v"}))
    returned = e.value.messages[0]
    assert returned.method.reply_code == 312 and returned.method.routing_key == "no-such-queue"
    assert returned.body == b"lost" and returned.properties.headers == {"h": "v"}
    ch.basic_publish(exchange="", routing_key="no-such-queue", body=b"dropped")  # not mandatory: acked
    assert count(ch, "mand") == 1
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.basic_publish(exchange="missing-exchange", routing_key="x", body=b"x")
    assert e.value.reply_code == 404


def test_reject_recover_get_and_channel_close_requeue(broker):
    conn = connect(broker)
    ch = conn.channel()
    ch.queue_declare(queue="acks", exclusive=True)
    for i in range(4):
        ch.basic_publish(exchange="", routing_key="acks", body=f"m{i}".encode())
    wait_until(lambda: count(ch, "acks") == 4, 10, "4 queued")
    m, p, b = ch.basic_get("acks")
    assert (b, m.delivery_tag, m.redelivered, m.message_count) == (b"m0", 1, False, 3)
    assert p.headers is None, "no headers injected"
    ch.basic_reject(m.delivery_tag, requeue=True)
    m, _, b = ch.basic_get("acks")
    assert (b, m.redelivered) == (b"m0", True), "requeued at its original place"
    m1, _, b1 = ch.basic_get("acks")
    assert b1 == b"m1"
    ch.basic_recover(requeue=True)
    got = [ch.basic_get("acks", auto_ack=True)[2] for _ in range(4)]
    assert got == [b"m0", b"m1", b"m2", b"m3"], "recover keeps the order"
    assert ch.basic_get("acks") == (None, None, None)
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.basic_ack(99)
        ch.queue_declare(queue="acks", passive=True)
    assert e.value.reply_code == 406
    # Unacknowledged messages go back when their channel closes.
    ch2 = conn.channel()
    ch2.basic_publish(exchange="", routing_key="acks", body=b"held")
    m, _, _ = ch2.basic_get("acks")
    assert m is not None
    ch2.close()
    ch3 = conn.channel()
    m, _, b = ch3.basic_get("acks", auto_ack=True)
    assert (b, m.redelivered) == (b"held", True)
    conn.close()


def test_ttl_dead_lettering_and_max_length(broker):
    ch = connect(broker).channel()
    ch.exchange_declare(exchange="dlx", exchange_type="fanout")
    ch.queue_declare(queue="dead", exclusive=True)
    ch.queue_bind(queue="dead", exchange="dlx")
    ch.queue_declare(queue="work", exclusive=True,
                     arguments={"x-dead-letter-exchange": "dlx", "x-message-ttl": 200})
    ch.basic_publish(exchange="", routing_key="work", body=b"expires")
    ch.basic_publish(exchange="", routing_key="work", body=b"short", properties=pika.BasicProperties(expiration="50"))
    # Nobody consumes "work": its messages expire at the head all the same.
    wait_until(lambda: count(ch, "dead") == 2, 10, "expired messages dead-lettered")
    assert count(ch, "work") == 0
    got = consume(ch, "dead", 2, auto_ack=True)
    deaths = [p.headers["x-death"][0] for _, p, _ in got]
    assert {d["reason"] for d in deaths} == {"expired"}
    assert all(d["queue"] == "work" and d["count"] == 1 for d in deaths)
    assert got[0][1].headers["x-first-death-reason"] == "expired"
    # Rejected without requeue: dead-lettered with reason "rejected".
    ch.queue_declare(queue="work2", exclusive=True, arguments={"x-dead-letter-exchange": "dlx"})
    ch.basic_publish(exchange="", routing_key="work2", body=b"bad")
    m, _, _ = wait_until(lambda: (lambda r: r if r[0] else None)(ch.basic_get("work2")), 10, "message")
    ch.basic_reject(m.delivery_tag, requeue=False)
    (_, p, b), = consume(ch, "dead", 1, auto_ack=True)
    assert b == b"bad" and p.headers["x-death"][0]["reason"] == "rejected"
    # x-max-length with reject-publish: the publisher gets a nack.
    ch.confirm_delivery()
    ch.queue_declare(queue="bounded", exclusive=True,
                     arguments={"x-max-length": 2, "x-overflow": "reject-publish"})
    ch.basic_publish(exchange="", routing_key="bounded", body=b"1")
    ch.basic_publish(exchange="", routing_key="bounded", body=b"2")
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish(exchange="", routing_key="bounded", body=b"3")
    assert count(ch, "bounded") == 2
    # drop-head (default): the oldest goes.
    ch.queue_declare(queue="window", exclusive=True, arguments={"x-max-length": 2})
    for i in range(4):
        ch.basic_publish(exchange="", routing_key="window", body=str(i).encode())
    assert [b for _, _, b in consume(ch, "window", 2, auto_ack=True)] == [b"2", b"3"]


def test_transactions_commit_and_rollback(broker):
    ch = connect(broker).channel()
    ch.queue_declare(queue="txq", exclusive=True)
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.tx_commit()
    assert e.value.reply_code == 406
    ch = connect(broker).channel()
    ch.queue_declare(queue="txq2", exclusive=True)
    ch.tx_select()
    ch.basic_publish(exchange="", routing_key="txq2", body=b"a")
    assert count(ch, "txq2") == 0, "not visible before commit"
    ch.tx_commit()
    assert count(ch, "txq2") == 1
    ch.basic_publish(exchange="", routing_key="txq2", body=b"b")
    ch.tx_rollback()
    ch.tx_commit()
    assert count(ch, "txq2") == 1, "rolled back"


def test_redeclare_equivalence_and_reserved_names(broker):
    ch = connect(broker).channel()
    ch.exchange_declare(exchange="eq", exchange_type="direct")
    ch.exchange_declare(exchange="eq", exchange_type="direct")
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.exchange_declare(exchange="eq", exchange_type="topic")
    assert e.value.reply_code == 406 and "inequivalent arg 'type'" in e.value.reply_text
    ch = connect(broker).channel()
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.exchange_declare(exchange="bad", exchange_type="ZZwwInvalid")
    assert e.value.reply_code == 406
    ch = connect(broker).channel()
    ch.queue_declare(queue="eqq", durable=True)
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_declare(queue="eqq", durable=False)
    assert e.value.reply_code == 406
    ch = connect(broker).channel()
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_declare(queue="amq.mine")
    assert e.value.reply_code == 403


def test_durable_topology_and_messages_survive_restart_and_kill9(broker_factory):
    b = broker_factory()
    ch = connect(b).channel()
    ch.exchange_declare(exchange="dur", exchange_type="direct", durable=True)
    ch.queue_declare(queue="durq", durable=True)
    ch.queue_bind(queue="durq", exchange="dur", routing_key="k")
    ch.confirm_delivery()
    for i in range(100):
        ch.basic_publish(exchange="dur", routing_key="k", body=str(i).encode(),
                         properties=pika.BasicProperties(delivery_mode=2))
    m, _, body = ch.basic_get("durq")
    assert body == b"0"  # delivered, not acknowledged: comes back after the restart
    b.restart()
    ch = connect(b).channel()
    ch.exchange_declare(exchange="dur", exchange_type="direct", durable=True)  # equivalent
    ch.queue_declare(queue="durq", durable=True)
    assert count(ch, "durq") == 100
    m, _, body = ch.basic_get("durq", auto_ack=True)
    assert (body, m.redelivered) == (b"0", True)
    # Confirmed publishes survive kill -9; the binding too.
    acked = []
    stop = threading.Event()

    def publisher():
        try:
            c = connect(b).channel()
            c.confirm_delivery()
            i = 1000
            while not stop.is_set():
                c.basic_publish(exchange="dur", routing_key="k", body=str(i).encode(),
                                properties=pika.BasicProperties(delivery_mode=2))
                acked.append(i)
                i += 1
        except Exception:
            return

    t = threading.Thread(target=publisher, daemon=True)
    t.start()
    wait_until(lambda: len(acked) > 300, 60, "confirmed publishes")
    b.kill9()
    stop.set()
    t.join(timeout=30)
    b.start()
    ch = connect(b).channel()
    n = count(ch, "durq")
    assert n >= 99 + len(acked)
    bodies = {int(body) for _, _, body in consume(ch, "durq", n, auto_ack=True, timeout=60)}
    missing = set(acked) - bodies
    assert not missing, f"{len(missing)} confirmed messages lost, e.g. {sorted(missing)[:5]}"


# ---------------------------------------------------------------- bridges


def test_amqp_messages_reach_kafka_and_mqtt_with_their_properties(broker):
    mq = Client(broker.mqtt_port, version=V5)
    mq.subscribe("prices/#", qos=1)
    ch = connect(broker).channel()
    ch.exchange_declare(exchange="prices", exchange_type="topic", durable=True)
    ch.confirm_delivery()
    ch.basic_publish(
        exchange="prices",
        routing_key="eu.btc",
        body=b'{"p": 1}',
        properties=pika.BasicProperties(content_type="application/json", correlation_id="c-9",
                                        headers={"source": "feed-1", "x-key": "btc"}),
    )
    records, _ = read_topic(broker.bootstrap, "prices.eu.btc")
    assert [r.value for r in records] == [b'{"p": 1}']
    h = dict(records[0].headers)
    assert h["content-type"] == b"application/json" and h["correlation-id"] == b"c-9"
    assert h["source"] == b"feed-1" and records[0].key == b"btc"
    got = mq.expect(1)[0]
    assert got.topic == "prices/eu/btc" and got.payload == b'{"p": 1}'
    assert got.properties.ContentType == "application/json"
    assert ("source", "feed-1") in got.properties.UserProperty
    mq.close()


def test_mqtt_publishes_reach_amqp_queues_through_amq_topic(broker):
    """As with RabbitMQ's MQTT plugin, MQTT topic `a/b` is routing key `a.b` on `amq.topic`
    (whose streams are the whole stream namespace); a queue named like a stream also gets it
    through the default exchange. AMQP publishes to amq.topic reach MQTT subscribers."""
    ch = connect(broker).channel()
    ch.queue_declare(queue="telemetry", exclusive=True)
    ch.queue_bind(queue="telemetry", exchange="amq.topic", routing_key="sensors.*")
    ch.queue_declare(queue="sensors.temperature", exclusive=True)
    sub = Client(broker.mqtt_port)
    sub.subscribe("alerts/#", qos=1)
    pub = Client(broker.mqtt_port)
    pub.publish("sensors/temperature", b"22.0", qos=1)
    pub.publish("sensors/room/1", b"deep", qos=1)  # two levels below: not sensors.*
    (m, _, body), = consume(ch, "telemetry", 1, auto_ack=True)
    assert (body, m.exchange, m.routing_key) == (b"22.0", "amq.topic", "sensors.temperature")
    (m, _, body), = consume(ch, "sensors.temperature", 1, auto_ack=True)
    assert (body, m.exchange, m.routing_key) == (b"22.0", "", "sensors.temperature")
    assert count(ch, "telemetry") == 0
    ch.basic_publish(exchange="amq.topic", routing_key="alerts.fire", body=b"!")
    got = sub.expect(1)[0]
    assert (got.topic, got.payload) == ("alerts/fire", b"!")
    pub.close()
    sub.close()


def test_a_large_message_round_trips(broker):
    ch = connect(broker).channel()
    ch.queue_declare(queue="big", exclusive=True)
    body = "\n".join(str(i) for i in range(2097152)).encode()  # 15.7 MB, as pika's own test
    ch.confirm_delivery()
    ch.basic_publish(exchange="", routing_key="big", body=body)
    (_, _, got), = consume(ch, "big", 1, auto_ack=True, timeout=60)
    assert got == body


def test_aio_pika_robust_connection_confirms_and_iterator(broker):
    import aio_pika

    async def main():
        conn = await aio_pika.connect_robust(f"amqp://guest:guest@127.0.0.1:{broker.amqp_port}/")
        async with conn:
            # Publisher confirms are on by default; returns raise when asked to.
            channel = await conn.channel(on_return_raises=True)
            queue = await channel.declare_queue("aio_tasks", durable=True)
            for i in range(3):
                await channel.default_exchange.publish(
                    aio_pika.Message(body=f"job {i}".encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key="aio_tasks",
                )
            with pytest.raises(aio_pika.exceptions.DeliveryError):
                await channel.default_exchange.publish(aio_pika.Message(body=b"x"), routing_key="nobody-here")
            got = []
            async with queue.iterator() as it:
                async for message in it:
                    async with message.process():
                        got.append(message.body)
                    if len(got) == 3:
                        break
            return got

    assert asyncio.run(asyncio.wait_for(main(), 60)) == [b"job 0", b"job 1", b"job 2"]


def test_direct_reply_to(broker):
    """RabbitMQ's direct reply-to (the Java RpcClient's and Spring's default): replies go
    straight to the requesting channel, no queue declared."""
    server = connect(broker)
    sch = server.channel()
    sch.queue_declare(queue="rpc_direct", exclusive=True)
    client = connect(broker)
    cch = client.channel()
    replies = []
    cch.basic_consume(queue="amq.rabbitmq.reply-to", on_message_callback=lambda c, m, p, b: replies.append((m, p, b)),
                      auto_ack=True)
    cch.basic_publish(exchange="", routing_key="rpc_direct", body=b"ping",
                      properties=pika.BasicProperties(reply_to="amq.rabbitmq.reply-to", correlation_id="r1"))
    m, p, b = wait_until(lambda: (lambda r: r if r[0] else None)(sch.basic_get("rpc_direct", auto_ack=True)), 10, "request")
    assert p.reply_to.startswith("amq.rabbitmq.reply-to.") and p.correlation_id == "r1"
    assert sch.queue_declare(queue=p.reply_to, passive=True).method.consumer_count == 1
    sch.basic_publish(exchange="", routing_key=p.reply_to, body=b"pong",
                      properties=pika.BasicProperties(correlation_id=p.correlation_id))
    wait_until(lambda: client.process_data_events(time_limit=0.1) or replies, 10, "reply")
    m, rp, body = replies[0]
    assert (body, rp.correlation_id, m.routing_key) == (b"pong", "r1", p.reply_to)
    client.close()
    with pytest.raises(ChannelClosedByBroker) as e:
        sch.queue_declare(queue=p.reply_to, passive=True)
    assert e.value.reply_code == 404
    server.close()
