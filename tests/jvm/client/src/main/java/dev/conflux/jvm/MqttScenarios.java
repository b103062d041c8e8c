package dev.conflux.jvm;

import static dev.conflux.jvm.Scenarios.check;
import static dev.conflux.jvm.Scenarios.checkEq;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.eclipse.paho.client.mqttv3.IMqttDeliveryToken;
import org.eclipse.paho.client.mqttv3.IMqttToken;
import org.eclipse.paho.client.mqttv3.MqttCallback;
import org.eclipse.paho.client.mqttv3.MqttClient;
import org.eclipse.paho.client.mqttv3.MqttConnectOptions;
import org.eclipse.paho.client.mqttv3.MqttMessage;
import org.eclipse.paho.client.mqttv3.persist.MemoryPersistence;
import org.eclipse.paho.mqttv5.client.MqttAsyncClient;
import org.eclipse.paho.mqttv5.client.MqttConnectionOptions;
import org.eclipse.paho.mqttv5.client.MqttDisconnectResponse;
import org.eclipse.paho.mqttv5.common.MqttException;
import org.eclipse.paho.mqttv5.common.MqttSubscription;
import org.eclipse.paho.mqttv5.common.packet.MqttProperties;
import org.eclipse.paho.mqttv5.common.packet.UserProperty;

/**
 * MQTT scenarios with Eclipse Paho's Java clients (mqttv3 1.2.5 speaking 3.1.1, mqttv5 1.2.5),
 * registered in {@link Scenarios} as {@code mqtt-v3} and {@code mqtt-v5}. The MQTT address comes
 * from {@link Scenarios#mqttAddress()} (-Dconflux.mqtt=HOST:PORT, $CONFLUX_MQTT, or the bootstrap
 * host with port 1883). Every wait is bounded by {@link #WAIT} (20 s) and fails saying what was
 * awaited and what had arrived.
 */
final class MqttScenarios {
    static final Duration WAIT = Duration.ofSeconds(20);
    /** How long to keep listening after the expected messages, to catch duplicates or extras. */
    static final Duration QUIET = Duration.ofMillis(1000);

    private MqttScenarios() {
    }

    // ------------------------------------------------------------------ helpers

    /** One delivered PUBLISH, from either client version. */
    record Msg(String client, String topic, byte[] payload, int qos, boolean retained, boolean dup,
               MqttProperties props5) {
        String text() {
            return new String(payload, StandardCharsets.UTF_8);
        }

        @Override
        public String toString() {
            String p = text();
            if (p.length() > 40) {
                p = p.substring(0, 40) + "...";
            }
            return topic + " '" + p + "' qos=" + qos + (retained ? " retained" : "") + (dup ? " dup" : "");
        }
    }

    /** What one client received, in arrival order, plus connection losses. */
    static final class Inbox {
        final String name;
        final LinkedBlockingQueue<Msg> queue = new LinkedBlockingQueue<>();
        final List<String> lost = Collections.synchronizedList(new ArrayList<>());

        Inbox(String name) {
            this.name = name;
        }

        void checkConnected() {
            check(lost.isEmpty(), "%s lost its connection: %s", name, lost);
        }

        /** Exactly the next `n` messages, or a Failure naming `what` and what did arrive. */
        List<Msg> await(int n, String what) throws InterruptedException {
            List<Msg> got = new ArrayList<>();
            long end = System.nanoTime() + WAIT.toNanos();
            while (got.size() < n) {
                long left = end - System.nanoTime();
                Msg m = left > 0 ? queue.poll(left, TimeUnit.NANOSECONDS) : null;
                if (m == null) {
                    throw new Scenarios.Failure(String.format(
                            "%s: %s: received %d of %d messages within %ds: %s%s", name, what, got.size(), n,
                            WAIT.toSeconds(), got, lost.isEmpty() ? "" : "; connection lost: " + lost));
                }
                got.add(m);
            }
            return got;
        }

        /** Whatever arrives within `d` (expected: nothing). */
        List<Msg> quiet(Duration d) throws InterruptedException {
            List<Msg> got = new ArrayList<>();
            long end = System.nanoTime() + d.toNanos();
            while (true) {
                long left = end - System.nanoTime();
                if (left <= 0) {
                    return got;
                }
                Msg m = queue.poll(left, TimeUnit.NANOSECONDS);
                if (m != null) {
                    got.add(m);
                }
            }
        }

        void expectNothingMore(String after) throws InterruptedException {
            List<Msg> extra = quiet(QUIET);
            check(extra.isEmpty(), "%s: unexpected messages after %s: %s", name, after, extra);
        }
    }

    static String serverUri() {
        return "tcp://" + Scenarios.mqttAddress();
    }

    static byte[] utf8(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    static List<String> texts(List<Msg> ms) {
        return ms.stream().map(Msg::text).collect(Collectors.toList());
    }

    // ------------------------------------------------------------------ MQTT 3.1.1 (paho mqttv3)

    static MqttClient client3(String id, Inbox inbox) throws Exception {
        MqttClient c = new MqttClient(serverUri(), id, new MemoryPersistence());
        c.setTimeToWait(WAIT.toMillis());
        c.setCallback(new MqttCallback() {
            @Override
            public void connectionLost(Throwable cause) {
                inbox.lost.add(Scenarios.describe(cause));
            }

            @Override
            public void messageArrived(String topic, MqttMessage m) {
                inbox.queue.add(new Msg(inbox.name, topic, m.getPayload(), m.getQos(), m.isRetained(), m.isDuplicate(), null));
            }

            @Override
            public void deliveryComplete(IMqttDeliveryToken token) {
            }
        });
        return c;
    }

    static boolean connect3(MqttClient c, boolean cleanSession) throws Exception {
        MqttConnectOptions o = new MqttConnectOptions();
        o.setMqttVersion(MqttConnectOptions.MQTT_VERSION_3_1_1);
        o.setCleanSession(cleanSession);
        o.setConnectionTimeout((int) WAIT.toSeconds());
        o.setKeepAliveInterval(30);
        o.setAutomaticReconnect(false);
        IMqttToken t;
        try {
            t = c.connectWithResult(o);
        } catch (org.eclipse.paho.client.mqttv3.MqttException e) {
            throw new Scenarios.Failure("3.1.1 CONNECT to " + serverUri() + " as " + c.getClientId() + " (clean session "
                    + cleanSession + "): " + Scenarios.describe(e) + " (reason code " + e.getReasonCode() + ")");
        }
        return t.getSessionPresent();
    }

    static void subscribe3(MqttClient c, String filter, int qos) throws Exception {
        IMqttToken t = c.subscribeWithResponse(filter, qos);
        checkEq(List.of(qos), Arrays.stream(t.getGrantedQos()).boxed().collect(Collectors.toList()),
                c.getClientId() + ": SUBACK granted QoS for " + filter);
    }

    static void publish3(MqttClient c, String topic, byte[] payload, int qos, boolean retain) throws Exception {
        MqttMessage m = new MqttMessage(payload);
        m.setQos(qos);
        m.setRetained(retain);
        c.publish(topic, m); // sync client: returns after PUBACK / PUBCOMP (QoS 1/2)
    }

    static void closeQuietly(MqttClient c) {
        try {
            if (c.isConnected()) {
                c.disconnect(5000);
            }
        } catch (Exception ignored) {
            // best effort
        }
        try {
            c.close(true);
        } catch (Exception ignored) {
            // best effort
        }
    }

    /**
     * mqtt-v3: two clients on `jvm/+/temp` / `jvm/room1/temp`: 10 each of QoS 0, 1, 2 arrive, in
     * order per QoS, at the granted QoS; a retained message reaches a new subscriber with the
     * retain flag (and an existing one without it); a clean-session=false client gets the QoS 1
     * messages published while it was away; and Kafka reads all of it from `jvm.room1.temp`,
     * byte for byte, keyed by the publisher's client id.
     */
    static void v3() throws Exception {
        String run = Scenarios.RUN;
        String topic = "jvm/room1/temp";
        String stream = "jvm.room1.temp";
        String filter = "jvm/+/temp";
        String pubId = "jvm3-pub-" + run;
        Inbox subIn = new Inbox("jvm3-sub"), pubIn = new Inbox("jvm3-pub"), lateIn = new Inbox("jvm3-late"),
                persIn = new Inbox("jvm3-persist"), cleanIn = new Inbox("jvm3-clean");
        MqttClient sub = client3("jvm3-sub-" + run, subIn);
        MqttClient pub = client3(pubId, pubIn);
        MqttClient late = client3("jvm3-late-" + run, lateIn);
        String persistId = "jvm3-persist-" + run;
        MqttClient persist = client3(persistId, persIn);
        MqttClient cleaner = client3("jvm3-clean-" + run, cleanIn);
        List<String> pubOrder = new ArrayList<>(); // what pubId published to `topic`, in order
        List<Integer> pubQos = new ArrayList<>();
        try {
            // a retained message left on the topic by an earlier run would be delivered on subscribe
            connect3(cleaner, true);
            publish3(cleaner, topic, new byte[0], 1, true);
            cleaner.disconnect(WAIT.toMillis());

            check(!connect3(sub, true), "jvm3-sub: CONNACK session present with clean session");
            check(!connect3(pub, true), "jvm3-pub: CONNACK session present with clean session");
            subscribe3(sub, filter, 1);
            subIn.expectNothingMore("SUBSCRIBE " + filter + " (no retained message should exist)");

            // --- 10 each of QoS 0, 1, 2, interleaved
            Map<Integer, List<String>> sent = new HashMap<>();
            for (int i = 0; i < 10; i++) {
                for (int q = 0; q <= 2; q++) {
                    String p = "q" + q + "-" + i + "-" + run;
                    publish3(pub, topic, utf8(p), q, false);
                    sent.computeIfAbsent(q, k -> new ArrayList<>()).add(p);
                    pubOrder.add(p);
                    pubQos.add(q);
                }
            }
            List<Msg> got = subIn.await(30, "30 messages (QoS 0, 1, 2) on " + filter);
            subIn.expectNothingMore("the 30 messages");
            subIn.checkConnected();
            for (int q = 0; q <= 2; q++) {
                final int qq = q;
                List<Msg> mine = got.stream().filter(m -> m.text().startsWith("q" + qq + "-")).collect(Collectors.toList());
                checkEq(sent.get(q), texts(mine), "QoS " + q + " messages received, in order");
                for (Msg m : mine) {
                    checkEq(topic, m.topic(), "topic of " + m);
                    checkEq(Math.min(q, 1), m.qos(), "delivered QoS of " + m + " (published " + q + ", subscribed 1)");
                    check(!m.retained(), "live message delivered with RETAIN set: %s", m);
                    check(!m.dup(), "first delivery with DUP set: %s", m);
                }
            }
            check(got.stream().allMatch(m -> m.text().endsWith(run)), "foreign messages: %s", got);

            // --- retained
            String retained = "retained-" + run;
            publish3(pub, topic, utf8(retained), 1, true);
            pubOrder.add(retained);
            pubQos.add(1);
            List<Msg> live = subIn.await(1, "the retained publish, live");
            checkEq(retained, live.get(0).text(), "live copy of the retained publish");
            check(!live.get(0).retained(),
                    "a retained PUBLISH forwarded to an existing subscription must have RETAIN=0 [MQTT-3.3.1-9]: %s", live.get(0));
            connect3(late, true);
            subscribe3(late, filter, 1);
            List<Msg> r = lateIn.await(1, "the retained message on SUBSCRIBE " + filter);
            checkEq(retained, r.get(0).text(), "retained message payload");
            checkEq(topic, r.get(0).topic(), "retained message topic");
            check(r.get(0).retained(), "message delivered on subscribe lacks isRetained(): %s", r.get(0));
            checkEq(1, r.get(0).qos(), "retained message QoS");
            lateIn.expectNothingMore("the retained message");

            // --- persistent session (clean session = 0)
            check(!connect3(persist, false), "%s: first CONNACK (clean session 0, new client id) says session present", persistId);
            subscribe3(persist, topic, 1);
            List<Msg> pr = persIn.await(1, "the retained message on SUBSCRIBE " + topic);
            check(pr.get(0).retained() && pr.get(0).text().equals(retained), "persistent client: retained message = %s", pr.get(0));
            persist.disconnect(WAIT.toMillis());
            List<String> offline = new ArrayList<>();
            for (int i = 0; i < 5; i++) {
                String p = "offline-" + i + "-" + run;
                publish3(pub, topic, utf8(p), 1, false);
                offline.add(p);
                pubOrder.add(p);
                pubQos.add(1);
            }
            checkEq(offline, texts(subIn.await(5, "the offline-period messages (live subscriber)")), "live subscriber");
            boolean present = connect3(persist, false);
            check(present, "%s: CONNACK session present = 0 on reconnect with clean session 0", persistId);
            List<Msg> back = persIn.await(5, "QoS 1 messages queued while " + persistId + " was disconnected");
            checkEq(offline, texts(back), "queued messages, in order");
            for (Msg m : back) {
                checkEq(1, m.qos(), "QoS of queued " + m);
                check(!m.retained(), "queued message with RETAIN set: %s", m);
            }
            persIn.expectNothingMore("the queued messages");
            persist.disconnect(WAIT.toMillis());
            check(connect3(persist, false), "%s: session gone after a second clean-session-0 reconnect", persistId);
            persIn.expectNothingMore("a reconnect with nothing queued");
            persist.disconnect(WAIT.toMillis());
            // drop the session
            connect3(persist, true);
            persist.disconnect(WAIT.toMillis());

            // --- binary payload, then all of it from Kafka
            byte[] bin = new byte[256 + run.length()];
            for (int i = 0; i < 256; i++) {
                bin[i] = (byte) i;
            }
            System.arraycopy(utf8(run), 0, bin, 256, run.length());
            publish3(pub, topic, bin, 1, false);
            pubOrder.add(null); // the binary one
            pubQos.add(1);
            Msg bm = subIn.await(1, "the binary payload").get(0);
            check(Arrays.equals(bin, bm.payload()), "binary payload changed on the way: %s", Arrays.toString(bm.payload()));
            subIn.expectNothingMore("the binary payload");
            subIn.checkConnected();
            pubIn.checkConnected();

            List<ConsumerRecord<byte[], byte[]>> recs = readStream(stream);
            byte[] key = utf8(pubId);
            List<ConsumerRecord<byte[], byte[]>> mine = recs.stream().filter(x -> Arrays.equals(key, x.key())).collect(Collectors.toList());
            check(mine.stream().map(ConsumerRecord::partition).distinct().count() == 1,
                    "records keyed %s spread over several partitions: %s", pubId,
                    mine.stream().map(x -> x.partition() + "@" + x.offset()).collect(Collectors.toList()));
            List<String> kafkaValues = mine.stream()
                    .map(x -> Arrays.equals(bin, x.value()) ? null : new String(x.value(), StandardCharsets.UTF_8))
                    .collect(Collectors.toList());
            checkEq(pubOrder, kafkaValues, "values of the records keyed " + pubId + " in " + stream
                    + " (null = the binary payload), in publish order");
            for (int i = 0; i < mine.size(); i++) {
                ConsumerRecord<byte[], byte[]> x = mine.get(i);
                Header qh = x.headers().lastHeader("mqtt-qos");
                checkEq(String.valueOf(pubQos.get(i)), qh == null ? null : new String(qh.value(), StandardCharsets.UTF_8),
                        "mqtt-qos header of " + x.partition() + "@" + x.offset());
                boolean isRetained = retained.equals(pubOrder.get(i));
                checkEq(isRetained, x.headers().lastHeader("mqtt-retain") != null,
                        "mqtt-retain header present on " + x.partition() + "@" + x.offset());
            }
            ConsumerRecord<byte[], byte[]> binRec = mine.get(mine.size() - 1);
            check(Arrays.equals(bin, binRec.value()), "Kafka value of the binary payload: %s", Arrays.toString(binRec.value()));

            // clean up the retained message
            connect3(cleaner, true);
            publish3(cleaner, topic, new byte[0], 1, true);
            cleaner.disconnect(WAIT.toMillis());
        } finally {
            for (MqttClient c : List.of(sub, pub, late, persist, cleaner)) {
                closeQuietly(c);
            }
        }
    }

    /** Every record of every partition of `stream`, from the beginning to the end offsets now. */
    static List<ConsumerRecord<byte[], byte[]>> readStream(String stream) throws Exception {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, Scenarios.bootstrap());
        p.put(ConsumerConfig.CLIENT_ID_CONFIG, "jvm-scenarios-mqtt-reader");
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
        p.put(ConsumerConfig.REQUEST_TIMEOUT_MS_CONFIG, 15000);
        p.put(ConsumerConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, 20000);
        try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(p, new ByteArrayDeserializer(), new ByteArrayDeserializer())) {
            List<PartitionInfo> parts = Scenarios.eventually("partitions of stream " + stream, () -> {
                List<PartitionInfo> l = c.partitionsFor(stream, WAIT);
                return l == null || l.isEmpty() ? null : l;
            });
            List<TopicPartition> tps = parts.stream().map(pi -> new TopicPartition(stream, pi.partition())).collect(Collectors.toList());
            c.assign(tps);
            c.seekToBeginning(tps);
            Map<TopicPartition, Long> end = c.endOffsets(tps, WAIT);
            List<ConsumerRecord<byte[], byte[]>> out = new ArrayList<>();
            long deadline = System.nanoTime() + WAIT.toNanos();
            while (tps.stream().anyMatch(tp -> c.position(tp, WAIT) < end.get(tp))) {
                check(System.nanoTime() < deadline, "Kafka: did not read %s up to its end offsets %s within %ds (read %d)",
                        stream, end, WAIT.toSeconds(), out.size());
                for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(200))) {
                    if (r.offset() < end.get(new TopicPartition(r.topic(), r.partition()))) {
                        out.add(r);
                    }
                }
            }
            out.sort((a, b) -> a.partition() != b.partition() ? Integer.compare(a.partition(), b.partition())
                    : Long.compare(a.offset(), b.offset()));
            return out;
        }
    }

    // ------------------------------------------------------------------ MQTT 5.0 (paho mqttv5)

    static MqttAsyncClient client5(String id, Inbox inbox) throws Exception {
        MqttAsyncClient c = new MqttAsyncClient(serverUri(), id, new org.eclipse.paho.mqttv5.client.persist.MemoryPersistence());
        c.setCallback(new org.eclipse.paho.mqttv5.client.MqttCallback() {
            @Override
            public void disconnected(MqttDisconnectResponse r) {
                inbox.lost.add("DISCONNECT/connection lost: reason 0x" + Integer.toHexString(r.getReturnCode()) + " "
                        + r.getReasonString() + (r.getException() == null ? "" : " " + Scenarios.describe(r.getException())));
            }

            @Override
            public void mqttErrorOccurred(MqttException e) {
                inbox.lost.add("error: " + Scenarios.describe(e));
            }

            @Override
            public void messageArrived(String topic, org.eclipse.paho.mqttv5.common.MqttMessage m) {
                inbox.queue.add(new Msg(inbox.name, topic, m.getPayload(), m.getQos(), m.isRetained(), m.isDuplicate(), m.getProperties()));
            }

            @Override
            public void deliveryComplete(org.eclipse.paho.mqttv5.client.IMqttToken token) {
            }

            @Override
            public void connectComplete(boolean reconnect, String serverURI) {
            }

            @Override
            public void authPacketArrived(int reasonCode, MqttProperties properties) {
            }
        });
        return c;
    }

    static org.eclipse.paho.mqttv5.client.IMqttToken wait5(org.eclipse.paho.mqttv5.client.IMqttToken t, String what) throws Exception {
        try {
            t.waitForCompletion(WAIT.toMillis());
        } catch (MqttException e) {
            throw new Scenarios.Failure(what + ": " + Scenarios.describe(e)
                    + (t.getReasonCodes() == null ? "" : " reason codes " + Arrays.toString(t.getReasonCodes())));
        }
        check(t.isComplete(), "%s: not complete within %ds", what, WAIT.toSeconds());
        return t;
    }

    /** CONNECT (5.0); returns CONNACK's session present. */
    static boolean connect5(MqttAsyncClient c, boolean cleanStart, long sessionExpiry) throws Exception {
        MqttConnectionOptions o = new MqttConnectionOptions();
        o.setCleanStart(cleanStart);
        o.setSessionExpiryInterval(sessionExpiry);
        o.setConnectionTimeout((int) WAIT.toSeconds());
        o.setKeepAliveInterval(30);
        o.setAutomaticReconnect(false);
        o.setUseSubscriptionIdentifiers(false); // identifiers are set explicitly per SUBSCRIBE
        org.eclipse.paho.mqttv5.client.IMqttToken t;
        try {
            t = wait5(c.connect(o), "5.0 CONNECT to " + serverUri() + " as " + c.getClientId());
        } catch (MqttException e) {
            throw new Scenarios.Failure("5.0 CONNECT to " + serverUri() + " as " + c.getClientId() + ": "
                    + Scenarios.describe(e) + " (reason code " + e.getReasonCode() + ")");
        }
        return t.getSessionPresent();
    }

    static void subscribe5(MqttAsyncClient c, String filter, int qos, int subscriptionId) throws Exception {
        MqttProperties p = new MqttProperties();
        p.setSubscriptionIdentifier(subscriptionId);
        org.eclipse.paho.mqttv5.client.IMqttToken t = wait5(
                c.subscribe(new MqttSubscription[] {new MqttSubscription(filter, qos)}, null, null, p),
                c.getClientId() + ": SUBSCRIBE " + filter);
        checkEq(List.of(qos), Arrays.stream(t.getReasonCodes()).boxed().collect(Collectors.toList()),
                c.getClientId() + ": SUBACK reason codes for " + filter + " (subscription id " + subscriptionId + ")");
    }

    static void publish5(MqttAsyncClient c, String topic, byte[] payload, int qos, MqttProperties props) throws Exception {
        org.eclipse.paho.mqttv5.common.MqttMessage m = new org.eclipse.paho.mqttv5.common.MqttMessage(payload, qos, false, props);
        org.eclipse.paho.mqttv5.client.IMqttToken t = wait5(c.publish(topic, m), c.getClientId() + ": PUBLISH " + topic);
        int[] rc = t.getReasonCodes();
        if (qos > 0 && rc != null) {
            for (int code : rc) {
                check(code < 0x80, "%s: PUBLISH %s answered with reason code 0x%x", c.getClientId(), topic, code);
            }
        }
    }

    static void disconnect5(MqttAsyncClient c) throws Exception {
        wait5(c.disconnect(WAIT.toMillis()), c.getClientId() + ": DISCONNECT");
    }

    static void closeQuietly(MqttAsyncClient c) {
        try {
            if (c.isConnected()) {
                c.disconnect(5000).waitForCompletion(6000);
            }
        } catch (Exception ignored) {
            // best effort
        }
        try {
            c.close(true);
        } catch (Exception ignored) {
            // best effort
        }
    }

    static List<String> userProps(MqttProperties p) {
        List<String> out = new ArrayList<>();
        if (p != null && p.getUserProperties() != null) {
            for (UserProperty u : p.getUserProperties()) {
                out.add(u.getKey() + "=" + u.getValue());
            }
        }
        return out;
    }

    static Set<Integer> subIds(Msg m) {
        return m.props5() == null ? Set.of() : new HashSet<>(m.props5().getSubscriptionIdentifiers());
    }

    /**
     * mqtt-v5: request/response between two 5.0 clients (user properties in order with
     * duplicates, content type, payload format, message expiry, response topic, correlation
     * data), subscription identifiers on delivery (one copy carrying both identifiers for two
     * overlapping subscriptions), and session expiry: > 0 keeps QoS 1 messages while away,
     * 0 keeps nothing, a short one ends.
     */
    static void v5() throws Exception {
        String run = Scenarios.RUN;
        String base = "jvm5/" + run;
        String reqTopic = base + "/request", respTopic = base + "/response", offTopic = base + "/offline";
        Inbox reqIn = new Inbox("jvm5-requester"), srvIn = new Inbox("jvm5-responder"), sessIn = new Inbox("jvm5-session"),
                noSessIn = new Inbox("jvm5-nosession"), shortIn = new Inbox("jvm5-short");
        MqttAsyncClient requester = client5("jvm5-req-" + run, reqIn);
        MqttAsyncClient responder = client5("jvm5-resp-" + run, srvIn);
        String sessId = "jvm5-sess-" + run, noSessId = "jvm5-nosess-" + run, shortId = "jvm5-short-" + run;
        MqttAsyncClient sess = client5(sessId, sessIn);
        MqttAsyncClient noSess = client5(noSessId, noSessIn);
        MqttAsyncClient shortSess = client5(shortId, shortIn);
        try {
            check(!connect5(requester, true, 0), "requester: session present with clean start");
            check(!connect5(responder, true, 0), "responder: session present with clean start");
            subscribe5(responder, reqTopic, 1, 7);
            subscribe5(responder, "jvm5/+/request", 1, 8); // overlaps the one above
            subscribe5(requester, respTopic, 1, 9);

            // --- requests
            int n = 3;
            List<byte[]> corr = new ArrayList<>();
            List<List<String>> reqUser = new ArrayList<>();
            for (int i = 0; i < n; i++) {
                byte[] cd = new byte[] {0, (byte) i, (byte) 0xff, (byte) 0x80, 10, 13};
                corr.add(cd);
                MqttProperties p = new MqttProperties();
                List<UserProperty> ups = List.of(new UserProperty("trace", "t-" + i + "-" + run), new UserProperty("dup", "1"),
                        new UserProperty("dup", "2"), new UserProperty("unicode", "grüße ✓"));
                reqUser.add(ups.stream().map(u -> u.getKey() + "=" + u.getValue()).collect(Collectors.toList()));
                p.setUserProperties(ups);
                p.setContentType("application/json; charset=utf-8");
                p.setResponseTopic(respTopic);
                p.setCorrelationData(cd);
                p.setPayloadFormat(true);
                p.setMessageExpiryInterval(300L);
                publish5(requester, reqTopic, utf8("{\"request\": " + i + "}"), 1, p);
            }
            List<Msg> reqs = srvIn.await(n, "requests on " + reqTopic);
            srvIn.expectNothingMore("the requests (overlapping subscriptions must give one copy each)");
            for (int i = 0; i < n; i++) {
                Msg m = reqs.get(i);
                MqttProperties p = m.props5();
                String what = "request " + i + " at the responder";
                checkEq("{\"request\": " + i + "}", m.text(), what + ": payload");
                checkEq(1, m.qos(), what + ": QoS");
                checkEq(reqUser.get(i), userProps(p), what + ": user properties (order and duplicates kept)");
                checkEq("application/json; charset=utf-8", p.getContentType(), what + ": content type");
                checkEq(respTopic, p.getResponseTopic(), what + ": response topic");
                check(Arrays.equals(corr.get(i), p.getCorrelationData()), "%s: correlation data %s, sent %s", what,
                        Arrays.toString(p.getCorrelationData()), Arrays.toString(corr.get(i)));
                check(p.getPayloadFormat(), "%s: payload format indicator lost", what);
                Long exp = p.getMessageExpiryInterval();
                check(exp != null && exp > 0 && exp <= 300, "%s: message expiry interval %s, expected 1..300", what, exp);
                checkEq(Set.of(7, 8), subIds(m), what + ": subscription identifiers (subscribed " + reqTopic
                        + " as 7 and jvm5/+/request as 8)");
            }

            // --- responses, to the response topic the requests named, with their correlation data
            for (int i = 0; i < n; i++) {
                MqttProperties rp = reqs.get(i).props5();
                MqttProperties p = new MqttProperties();
                p.setCorrelationData(rp.getCorrelationData());
                p.setContentType("text/plain");
                p.setUserProperties(List.of(new UserProperty("responder", responder.getClientId()),
                        new UserProperty("trace", rp.getUserProperties().get(0).getValue())));
                publish5(responder, rp.getResponseTopic(), utf8("response " + i), 1, p);
            }
            List<Msg> resps = reqIn.await(n, "responses on " + respTopic);
            reqIn.expectNothingMore("the responses");
            for (int i = 0; i < n; i++) {
                Msg m = resps.get(i);
                String what = "response " + i + " at the requester";
                checkEq("response " + i, m.text(), what + ": payload");
                checkEq(respTopic, m.topic(), what + ": topic");
                check(Arrays.equals(corr.get(i), m.props5().getCorrelationData()), "%s: correlation data %s, request had %s", what,
                        Arrays.toString(m.props5().getCorrelationData()), Arrays.toString(corr.get(i)));
                checkEq("text/plain", m.props5().getContentType(), what + ": content type");
                checkEq(List.of("responder=" + responder.getClientId(), "trace=t-" + i + "-" + run), userProps(m.props5()),
                        what + ": user properties");
                checkEq(Set.of(9), subIds(m), what + ": subscription identifiers");
                check(m.props5().getResponseTopic() == null, "%s: unexpected response topic %s", what, m.props5().getResponseTopic());
            }

            // --- session expiry
            check(!connect5(sess, true, 300), "%s: session present with clean start", sessId);
            check(!connect5(noSess, true, 0), "%s: session present with clean start", noSessId);
            check(!connect5(shortSess, true, 2), "%s: session present with clean start", shortId);
            subscribe5(sess, offTopic, 1, 21);
            subscribe5(noSess, offTopic, 1, 22);
            subscribe5(shortSess, offTopic, 1, 23);
            disconnect5(sess);
            disconnect5(noSess);
            disconnect5(shortSess);
            List<String> offline = new ArrayList<>();
            for (int i = 0; i < 5; i++) {
                MqttProperties p = new MqttProperties();
                p.setUserProperties(List.of(new UserProperty("seq", String.valueOf(i))));
                p.setContentType("text/plain");
                String payload = "offline-" + i + "-" + run;
                publish5(requester, offTopic, utf8(payload), 1, p);
                offline.add(payload);
            }
            Thread.sleep(3500); // past the 2 s session expiry of shortId

            check(connect5(sess, false, 300), "%s: CONNACK session present = 0 on reconnect within its session expiry (300 s)", sessId);
            List<Msg> back = sessIn.await(5, "QoS 1 messages queued while " + sessId + " was away");
            checkEq(offline, texts(back), sessId + ": queued messages, in order");
            for (int i = 0; i < 5; i++) {
                Msg m = back.get(i);
                checkEq(1, m.qos(), "QoS of queued " + m);
                checkEq(List.of("seq=" + i), userProps(m.props5()), "user properties of queued " + m);
                checkEq("text/plain", m.props5().getContentType(), "content type of queued " + m);
                checkEq(Set.of(21), subIds(m), "subscription identifiers of queued " + m);
            }
            sessIn.expectNothingMore("the queued messages");

            check(!connect5(noSess, false, 0),
                    "%s: CONNACK session present = 1 although its previous connection had session expiry 0", noSessId);
            List<Msg> none = noSessIn.quiet(QUIET);
            check(none.isEmpty(), "%s (session expiry 0): received messages published while it was away: %s", noSessId, none);

            check(!connect5(shortSess, false, 0),
                    "%s: CONNACK session present = 1 after its 2 s session expiry had passed (reconnected 3.5 s later)", shortId);
            none = shortIn.quiet(QUIET);
            check(none.isEmpty(), "%s: received messages from an expired session: %s", shortId, none);

            // live delivery to the resumed session still carries its identifier
            publish5(requester, offTopic, utf8("after-" + run), 1, new MqttProperties());
            Msg after = sessIn.await(1, "a live message on the resumed session").get(0);
            checkEq("after-" + run, after.text(), "live message on the resumed session");
            checkEq(Set.of(21), subIds(after), "subscription identifiers of the live message on the resumed session");

            for (Inbox in : List.of(reqIn, srvIn, sessIn)) {
                in.checkConnected();
            }
            // end the persistent session
            disconnect5(sess);
            connect5(sess, true, 0);
        } finally {
            for (MqttAsyncClient c : List.of(requester, responder, sess, noSess, shortSess)) {
                closeQuietly(c);
            }
        }
    }
}
