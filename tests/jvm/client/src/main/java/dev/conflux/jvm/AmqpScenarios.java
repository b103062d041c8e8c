package dev.conflux.jvm;

import static dev.conflux.jvm.Scenarios.check;
import static dev.conflux.jvm.Scenarios.checkEq;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

import com.rabbitmq.client.AMQP;
import com.rabbitmq.client.Channel;
import com.rabbitmq.client.Connection;
import com.rabbitmq.client.ConnectionFactory;
import com.rabbitmq.client.DefaultConsumer;
import com.rabbitmq.client.Envelope;
import com.rabbitmq.client.GetResponse;
import com.rabbitmq.client.RpcClient;
import com.rabbitmq.client.RpcClientParams;
import com.rabbitmq.client.RpcServer;

/**
 * AMQP 0-9-1 scenarios with RabbitMQ's Java client (com.rabbitmq:amqp-client 5.x), registered
 * in {@link Scenarios} as {@code amqp-basics} and {@code amqp-rpc}. The AMQP address comes from
 * {@link #address()} (-Dconflux.amqp=HOST:PORT, $CONFLUX_AMQP, or the bootstrap host with port
 * 5672). Every wait is bounded by {@link #WAIT}.
 */
final class AmqpScenarios {
    static final Duration WAIT = Duration.ofSeconds(20);

    private AmqpScenarios() {
    }

    static String address() {
        String a = System.getProperty("conflux.amqp");
        if (a == null || a.isEmpty()) {
            a = System.getenv("CONFLUX_AMQP");
        }
        if (a == null || a.isEmpty()) {
            String b = Scenarios.bootstrap();
            int colon = b.lastIndexOf(':');
            a = (colon > 0 ? b.substring(0, colon) : b) + ":5672";
        }
        return a;
    }

    static Connection connect(String name) throws Exception {
        String a = address();
        int colon = a.lastIndexOf(':');
        ConnectionFactory f = new ConnectionFactory();
        f.setHost(a.substring(0, colon));
        f.setPort(Integer.parseInt(a.substring(colon + 1)));
        f.setUsername("guest");
        f.setPassword("guest");
        f.setConnectionTimeout((int) WAIT.toMillis());
        return f.newConnection(name);
    }

    /**
     * Durable direct exchange and queue, 100 persistent confirmed messages with typed headers,
     * a manual-ack consumer with prefetch 10 (order, properties exactly as sent), a mandatory
     * return, passive counts, cancel notification when the queue is deleted, and the records
     * read back by the Kafka consumer with their headers.
     */
    static void basics() throws Exception {
        String ex = "jx-" + Scenarios.RUN;
        String q = "jq-" + Scenarios.RUN;
        try (Connection conn = connect("conflux-amqp-basics")) {
            Channel ch = conn.createChannel();
            ch.exchangeDeclare(ex, "direct", true);
            ch.queueDeclare(q, true, false, false, null);
            ch.queueBind(q, ex, "k");
            ch.confirmSelect();
            Map<String, Object> headers = new HashMap<>();
            headers.put("s", "text");
            headers.put("i", 42);
            headers.put("l", 1L << 40);
            headers.put("b", true);
            Map<String, Object> nested = new HashMap<>();
            nested.put("inner", "x");
            headers.put("t", nested);
            int n = 100;
            for (int i = 0; i < n; i++) {
                AMQP.BasicProperties props = new AMQP.BasicProperties.Builder()
                        .contentType("application/json").deliveryMode(2).correlationId("c" + i)
                        .messageId("m" + i).priority(3).type("t").appId("jvm").headers(headers).build();
                ch.basicPublish(ex, "k", props, ("{\"n\":" + i + "}").getBytes(StandardCharsets.UTF_8));
            }
            ch.waitForConfirmsOrDie(WAIT.toMillis());
            checkEq(n, (int) ch.queueDeclarePassive(q).getMessageCount(), "messages queued after confirms");

            // Mandatory and unroutable: returned before the confirm.
            LinkedBlockingQueue<Integer> returns = new LinkedBlockingQueue<>();
            ch.addReturnListener(r -> returns.add(r.getReplyCode()));
            ch.basicPublish("", "no-queue-" + Scenarios.RUN, true, null, "lost".getBytes(StandardCharsets.UTF_8));
            ch.waitForConfirmsOrDie(WAIT.toMillis());
            Integer code = returns.poll(WAIT.toMillis(), TimeUnit.MILLISECONDS);
            checkEq(312, code, "basic.return reply code for an unroutable mandatory message");

            Channel cch = conn.createChannel();
            cch.basicQos(10);
            LinkedBlockingQueue<String> got = new LinkedBlockingQueue<>();
            List<AMQP.BasicProperties> propsSeen = new ArrayList<>();
            CountDownLatch cancelled = new CountDownLatch(1);
            cch.basicConsume(q, false, "jtag", new DefaultConsumer(cch) {
                @Override
                public void handleDelivery(String tag, Envelope env, AMQP.BasicProperties p, byte[] body) throws java.io.IOException {
                    synchronized (propsSeen) {
                        propsSeen.add(p);
                    }
                    got.add(new String(body, StandardCharsets.UTF_8) + "|" + env.getRoutingKey() + "|" + env.getExchange()
                            + "|" + env.isRedeliver());
                    getChannel().basicAck(env.getDeliveryTag(), false);
                }

                @Override
                public void handleCancel(String tag) {
                    cancelled.countDown();
                }
            });
            for (int i = 0; i < n; i++) {
                String m = got.poll(WAIT.toMillis(), TimeUnit.MILLISECONDS);
                check(m != null, "delivery %d of %d did not arrive", i, n);
                checkEq("{\"n\":" + i + "}|k|" + ex + "|false", m, "delivery " + i);
            }
            AMQP.BasicProperties p0;
            synchronized (propsSeen) {
                p0 = propsSeen.get(0);
            }
            checkEq("application/json", p0.getContentType(), "content type");
            checkEq(2, p0.getDeliveryMode(), "delivery mode");
            checkEq("c0", p0.getCorrelationId(), "correlation id");
            checkEq("m0", p0.getMessageId(), "message id");
            checkEq(3, p0.getPriority(), "priority");
            checkEq("jvm", p0.getAppId(), "app id");
            Map<String, Object> h = p0.getHeaders();
            checkEq("text", String.valueOf(h.get("s")), "string header");
            checkEq(42, h.get("i"), "int header keeps its type");
            checkEq(1L << 40, h.get("l"), "long header keeps its type");
            checkEq(true, h.get("b"), "boolean header");
            check(h.get("t") instanceof Map, "nested table header arrives as a table: %s", h.get("t"));

            // Deleting the queue cancels its consumer, and the client is told.
            ch.queueDelete(q);
            check(cancelled.await(WAIT.toMillis(), TimeUnit.MILLISECONDS), "no basic.cancel after the queue was deleted");

            // The same messages are records of the stream jx-RUN.k, for Kafka consumers.
            Properties kp = new Properties();
            kp.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, Scenarios.bootstrap());
            kp.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
            kp.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
            try (KafkaConsumer<byte[], byte[]> kc = new KafkaConsumer<>(kp)) {
                TopicPartition tp = new TopicPartition(ex + ".k", 0);
                kc.assign(List.of(tp));
                kc.seekToBeginning(List.of(tp));
                List<ConsumerRecord<byte[], byte[]>> recs = new ArrayList<>();
                long deadline = System.nanoTime() + WAIT.toNanos();
                while (recs.size() < n && System.nanoTime() < deadline) {
                    kc.poll(Duration.ofMillis(200)).forEach(recs::add);
                }
                checkEq(n, recs.size(), "records in Kafka topic " + tp.topic());
                checkEq("{\"n\":0}", new String(recs.get(0).value(), StandardCharsets.UTF_8), "first record");
                checkEq("application/json",
                        new String(recs.get(0).headers().lastHeader("content-type").value(), StandardCharsets.UTF_8),
                        "content-type header for Kafka readers");
                checkEq("text", new String(recs.get(0).headers().lastHeader("s").value(), StandardCharsets.UTF_8),
                        "string header for Kafka readers");
            }
            ch.exchangeDelete(ex);
        }
    }

    /**
     * RPC with the client library's own RpcClient (direct reply-to, its default) and RpcServer,
     * and a basicGet / basicReject(requeue) / redelivered round.
     */
    static void rpc() throws Exception {
        String q = "jrpc-" + Scenarios.RUN;
        try (Connection server = connect("conflux-amqp-rpc-server"); Connection client = connect("conflux-amqp-rpc-client")) {
            Channel sch = server.createChannel();
            sch.queueDeclare(q, false, false, true, null);
            RpcServer rpcServer = new RpcServer(sch, q) {
                @Override
                public byte[] handleCall(byte[] request, AMQP.BasicProperties reply) {
                    return ("echo:" + new String(request, StandardCharsets.UTF_8)).getBytes(StandardCharsets.UTF_8);
                }
            };
            Thread t = new Thread(() -> {
                try {
                    rpcServer.mainloop();
                } catch (Exception e) {
                    // closed at the end of the scenario
                }
            });
            t.setDaemon(true);
            t.start();
            Channel cch = client.createChannel();
            RpcClient rpc = new RpcClient(new RpcClientParams().channel(cch).exchange("").routingKey(q)
                    .timeout((int) WAIT.toMillis()));
            for (int i = 0; i < 5; i++) {
                checkEq("echo:" + i, rpc.stringCall(String.valueOf(i)), "RPC reply " + i);
            }
            rpc.close();
            rpcServer.terminateMainloop();

            Channel g = client.createChannel();
            String gq = g.queueDeclare().getQueue();
            check(gq.startsWith("amq.gen-"), "server-named queue %s", gq);
            g.basicPublish("", gq, null, "once".getBytes(StandardCharsets.UTF_8));
            GetResponse r = null;
            long deadline = System.nanoTime() + WAIT.toNanos();
            while (r == null && System.nanoTime() < deadline) {
                r = g.basicGet(gq, false);
            }
            check(r != null, "basicGet found nothing");
            checkEq(false, r.getEnvelope().isRedeliver(), "first delivery");
            g.basicReject(r.getEnvelope().getDeliveryTag(), true);
            GetResponse again = g.basicGet(gq, true);
            check(again != null, "the rejected message is back");
            checkEq(true, again.getEnvelope().isRedeliver(), "redelivered after reject(requeue)");
            checkEq("once", new String(again.getBody(), StandardCharsets.UTF_8), "body");
        }
    }
}
