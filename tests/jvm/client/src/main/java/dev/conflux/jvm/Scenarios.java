package dev.conflux.jvm;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.UUID;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.GroupListing;
import org.apache.kafka.clients.admin.ListGroupsOptions;
import org.apache.kafka.clients.admin.NewPartitions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.CooperativeStickyAssignor;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.consumer.OffsetAndTimestamp;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.GroupState;
import org.apache.kafka.common.KafkaFuture;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.errors.UnknownTopicOrPartitionException;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.record.TimestampType;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * Named scenarios a Java user of kafka-clients 4.4 runs every day, each with assertions that
 * can fail, two MQTT scenarios with Eclipse Paho's Java clients ({@link MqttScenarios}:
 * mqtt-v3, mqtt-v5) and two AMQP scenarios with RabbitMQ's Java client ({@link AmqpScenarios}:
 * amqp-basics, amqp-rpc; address -Dconflux.amqp=HOST:PORT). Usage:
 *
 * <pre>
 *   java [-Dconflux.mqtt=HOST:PORT] -jar conflux-jvm-client.jar BOOTSTRAP [SCENARIO ...]   (none or "all": every scenario)
 *   java -jar conflux-jvm-client.jar list
 * </pre>
 *
 * The MQTT address: -Dconflux.mqtt=HOST:PORT, else $CONFLUX_MQTT, else BOOTSTRAP's host:1883.
 *
 * Prints one "PASS name (ms)" or "FAIL name (ms): reason" line per scenario, then a summary, and
 * exits 1 if any failed (2 for a usage error). Every wait is bounded. Client logging: WARN to
 * stderr (-Dorg.slf4j.simpleLogger.defaultLogLevel=info|debug for more).
 */
public final class Scenarios {
    private static final Duration WAIT = Duration.ofSeconds(30);
    static final String RUN = UUID.randomUUID().toString().substring(0, 8);
    private static String bootstrap;

    static String bootstrap() {
        return bootstrap;
    }

    /**
     * HOST:PORT of the MQTT listener for the mqtt-* scenarios: -Dconflux.mqtt, else $CONFLUX_MQTT,
     * else the bootstrap host with MQTT's port 1883 (Conflux's default mqtt_listen).
     */
    static String mqttAddress() {
        String a = System.getProperty("conflux.mqtt");
        if (a == null || a.isEmpty()) {
            a = System.getenv("CONFLUX_MQTT");
        }
        if (a == null || a.isEmpty()) {
            int colon = bootstrap.lastIndexOf(':');
            a = (colon > 0 ? bootstrap.substring(0, colon) : bootstrap) + ":1883";
        }
        return a;
    }

    @FunctionalInterface
    interface Scenario {
        void run() throws Exception;
    }

    private static final Map<String, Scenario> SCENARIOS = new LinkedHashMap<>();

    static {
        SCENARIOS.put("admin", Scenarios::adminBasics);
        SCENARIOS.put("admin-configs", Scenarios::adminConfigs);
        SCENARIOS.put("idempotent-producer", Scenarios::idempotentProducer);
        SCENARIOS.put("consumer-group", () -> consumerGroup("group", null));
        SCENARIOS.put("consumer-group-cooperative",
                () -> consumerGroup("coop", CooperativeStickyAssignor.class.getName()));
        SCENARIOS.put("admin-groups", Scenarios::adminGroups);
        SCENARIOS.put("headers-seek-timestamps", Scenarios::headersSeekTimestamps);
        SCENARIOS.put("compression", Scenarios::compression);
        SCENARIOS.put("mqtt-v3", MqttScenarios::v3);
        SCENARIOS.put("mqtt-v5", MqttScenarios::v5);
        SCENARIOS.put("amqp-basics", AmqpScenarios::basics);
        SCENARIOS.put("amqp-rpc", AmqpScenarios::rpc);
    }

    public static void main(String[] args) {
        if (System.getProperty("org.slf4j.simpleLogger.defaultLogLevel") == null) {
            System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn");
        }
        if (args.length == 1 && args[0].equals("list")) {
            SCENARIOS.keySet().forEach(System.out::println);
            return;
        }
        if (args.length < 1) {
            System.err.println("usage: [-Dconflux.mqtt=HOST:PORT | CONFLUX_MQTT=HOST:PORT] Scenarios BOOTSTRAP [SCENARIO ...|all] | list;"
                    + " scenarios: " + SCENARIOS.keySet());
            System.exit(2);
        }
        bootstrap = args[0];
        List<String> names = new ArrayList<>(Arrays.asList(args).subList(1, args.length));
        if (names.isEmpty() || names.equals(List.of("all"))) {
            names = new ArrayList<>(SCENARIOS.keySet());
        }
        for (String n : names) {
            if (!SCENARIOS.containsKey(n)) {
                System.err.println("unknown scenario '" + n + "'; known: " + SCENARIOS.keySet());
                System.exit(2);
            }
        }
        int passed = 0;
        List<String> failed = new ArrayList<>();
        for (String n : names) {
            long t0 = System.nanoTime();
            try {
                SCENARIOS.get(n).run();
                passed++;
                System.out.printf("PASS %s (%d ms)%n", n, (System.nanoTime() - t0) / 1_000_000);
            } catch (Throwable e) {
                failed.add(n);
                System.out.printf("FAIL %s (%d ms): %s%n", n, (System.nanoTime() - t0) / 1_000_000, describe(e));
                e.printStackTrace(System.out);
            }
            System.out.flush();
        }
        System.out.printf("jvm scenarios: passed=%d failed=%d %s%n", passed, failed.size(), failed.isEmpty() ? "" : failed);
        System.exit(failed.isEmpty() ? 0 : 1);
    }

    // ------------------------------------------------------------------ helpers

    static final class Failure extends RuntimeException {
        Failure(String message) {
            super(message);
        }
    }

    static void check(boolean ok, String fmt, Object... args) {
        if (!ok) {
            throw new Failure(String.format(fmt, args));
        }
    }

    static void checkEq(Object expected, Object actual, String what) {
        if (expected == null ? actual != null : !expected.equals(actual)) {
            throw new Failure(what + ": expected <" + expected + "> but was <" + actual + ">");
        }
    }

    /** The exception's chain as "Type: message <- Type: message", without wrapper noise. */
    static String describe(Throwable e) {
        StringBuilder sb = new StringBuilder();
        Set<Throwable> seen = new HashSet<>();
        for (Throwable t = e; t != null && seen.add(t); t = t.getCause()) {
            if (t instanceof ExecutionException && t.getCause() != null) {
                continue;
            }
            if (sb.length() > 0) {
                sb.append(" <- ");
            }
            sb.append(t instanceof Failure ? "assertion failed" : t.getClass().getName()).append(": ").append(t.getMessage());
        }
        return sb.toString();
    }

    static <T> T get(KafkaFuture<T> f) throws Exception {
        return f.get(WAIT.toMillis(), TimeUnit.MILLISECONDS);
    }

    static <T> T get(Future<T> f) throws Exception {
        return f.get(WAIT.toMillis(), TimeUnit.MILLISECONDS);
    }

    @FunctionalInterface
    interface Attempt<T> {
        T get() throws Exception;
    }

    /** Retry `attempt` until it returns non-null without throwing, for at most 30 s. */
    static <T> T eventually(String what, Attempt<T> attempt) throws Exception {
        long end = System.nanoTime() + WAIT.toNanos();
        Throwable last = null;
        while (true) {
            try {
                T v = attempt.get();
                if (v != null) {
                    return v;
                }
            } catch (Exception e) {
                last = e;
            }
            if (System.nanoTime() > end) {
                throw new Failure("timed out after " + WAIT.toSeconds() + "s waiting for " + what
                        + (last == null ? "" : "; last error: " + describe(last)));
            }
            Thread.sleep(100);
        }
    }

    static String topic(String name) {
        return "jvm-" + name + "-" + RUN;
    }

    static Admin admin() {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(AdminClientConfig.CLIENT_ID_CONFIG, "jvm-scenarios-admin");
        p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, 15000);
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, 30000);
        return Admin.create(p);
    }

    static KafkaProducer<String, String> producer(Map<String, Object> extra) {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.CLIENT_ID_CONFIG, "jvm-scenarios-producer");
        p.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, 15000);
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, 30000);
        p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, 30000);
        p.putAll(extra);
        return new KafkaProducer<>(p, new StringSerializer(), new StringSerializer());
    }

    static KafkaConsumer<String, String> consumer(String group, Map<String, Object> extra) {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ConsumerConfig.CLIENT_ID_CONFIG, "jvm-scenarios-consumer");
        if (group != null) {
            p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
            p.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, "classic");
        }
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
        p.put(ConsumerConfig.REQUEST_TIMEOUT_MS_CONFIG, 15000);
        p.put(ConsumerConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, 30000);
        p.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, 10000);
        p.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, 1000);
        p.putAll(extra);
        return new KafkaConsumer<>(p, new StringDeserializer(), new StringDeserializer());
    }

    /**
     * Diagnosis aid only (-Dscenarios.tolerateCreateTopicsConfigSource=true): let the scenarios that merely
     * need a topic go on when the client rejects a CreateTopics answer whose config entries carry
     * config_source -1 (the topic does exist then), to see what else fails. The pytest suite never sets it.
     */
    private static final boolean TOLERATE_CONFIG_SOURCE = Boolean.getBoolean("scenarios.tolerateCreateTopicsConfigSource");

    static void createTopics(Admin a, NewTopic nt) throws Exception {
        try {
            get(a.createTopics(List.of(nt)).all());
        } catch (ExecutionException e) {
            if (!(TOLERATE_CONFIG_SOURCE && e.getCause() instanceof IllegalArgumentException
                    && String.valueOf(e.getCause().getMessage()).contains("id should be positive"))) {
                throw e;
            }
            System.out.println("  (tolerated: createTopics answer rejected by the client: " + describe(e) + ")");
        }
    }

    static void createTopic(Admin a, String t, int partitions) throws Exception {
        createTopics(a, new NewTopic(t, partitions, (short) 1));
        eventually("metadata of new topic " + t, () -> {
            TopicDescription d = get(a.describeTopics(List.of(t)).allTopicNames()).get(t);
            return d.partitions().size() == partitions
                    && d.partitions().stream().allMatch(p -> p.leader() != null) ? d : null;
        });
    }

    static void createTopic(String t, int partitions) throws Exception {
        try (Admin a = admin()) {
            createTopic(a, t, partitions);
        }
    }

    /** Send `values` (key = "key-" + i) and wait for every acknowledgement. */
    static List<RecordMetadata> produce(String t, List<String> values, Map<String, Object> extra) throws Exception {
        try (KafkaProducer<String, String> pr = producer(extra)) {
            List<Future<RecordMetadata>> fs = new ArrayList<>();
            for (int i = 0; i < values.size(); i++) {
                fs.add(pr.send(new ProducerRecord<>(t, "key-" + i, values.get(i))));
            }
            pr.flush();
            List<RecordMetadata> mds = new ArrayList<>();
            for (Future<RecordMetadata> f : fs) {
                mds.add(get(f));
            }
            return mds;
        }
    }

    static List<String> values(String prefix, int n) {
        List<String> v = new ArrayList<>(n);
        for (int i = 0; i < n; i++) {
            v.add(prefix + "-" + i);
        }
        return v;
    }

    static Node singleNode(Admin a) throws Exception {
        Collection<Node> nodes = get(a.describeCluster().nodes());
        checkEq(1, nodes.size(), "describeCluster node count");
        return nodes.iterator().next();
    }

    // ---------------------------------------------------------------- scenarios

    /** (a) createTopics, describeTopics, describeConfigs (topic + broker), listTopics, describeCluster, deleteTopics. */
    static void adminBasics() throws Exception {
        String t = topic("admin");
        try (Admin a = admin()) {
            DescribeClusterResult cluster = a.describeCluster();
            Collection<Node> nodes = get(cluster.nodes());
            checkEq(1, nodes.size(), "describeCluster: number of nodes");
            Node node = nodes.iterator().next();
            String clusterId = get(cluster.clusterId());
            check(clusterId != null && !clusterId.isEmpty(), "describeCluster: empty cluster id");
            Node controller = get(cluster.controller());
            check(controller != null && !controller.isEmpty(), "describeCluster: no controller (%s)", controller);
            check(node.port() > 0 && !node.host().isEmpty(), "describeCluster: node without address: %s", node);

            createTopics(a, new NewTopic(t, 3, (short) 1));
            try {
                get(a.createTopics(List.of(new NewTopic(t, 3, (short) 1))).all());
                throw new Failure("creating " + t + " a second time succeeded");
            } catch (ExecutionException e) {
                check(e.getCause() instanceof TopicExistsException,
                        "second createTopics: expected TopicExistsException, got %s", describe(e));
            }

            TopicDescription d = eventually("describeTopics(" + t + ")",
                    () -> get(a.describeTopics(List.of(t)).allTopicNames()).get(t));
            checkEq(t, d.name(), "describeTopics: name");
            checkEq(3, d.partitions().size(), "describeTopics: partition count");
            check(!d.isInternal(), "describeTopics: topic marked internal");
            for (int i = 0; i < 3; i++) {
                TopicPartitionInfo p = d.partitions().get(i);
                checkEq(i, p.partition(), "describeTopics: partition index");
                check(p.leader() != null && p.leader().id() == node.id(),
                        "describeTopics: partition %d leader %s, expected node %d", i, p.leader(), node.id());
                checkEq(List.of(node.id()), p.replicas().stream().map(Node::id).collect(Collectors.toList()),
                        "describeTopics: partition " + i + " replicas");
                checkEq(List.of(node.id()), p.isr().stream().map(Node::id).collect(Collectors.toList()),
                        "describeTopics: partition " + i + " isr");
            }

            ConfigResource topicRes = new ConfigResource(ConfigResource.Type.TOPIC, t);
            ConfigResource brokerRes = new ConfigResource(ConfigResource.Type.BROKER, String.valueOf(node.id()));
            Map<ConfigResource, Config> cfg = get(a.describeConfigs(List.of(topicRes, brokerRes)).all());
            Config tc = cfg.get(topicRes);
            check(tc != null, "describeConfigs: no answer for topic %s", t);
            for (String key : List.of("retention.ms", "cleanup.policy", "segment.bytes")) {
                ConfigEntry e = tc.get(key);
                check(e != null && e.value() != null, "describeConfigs(topic): %s missing; got %s", key,
                        tc.entries().stream().map(ConfigEntry::name).sorted().collect(Collectors.toList()));
            }
            checkEq("delete", tc.get("cleanup.policy").value(), "describeConfigs(topic) cleanup.policy");
            Long.parseLong(tc.get("retention.ms").value());
            Config bc = cfg.get(brokerRes);
            check(bc != null && !bc.entries().isEmpty(), "describeConfigs(broker %d): no entries", node.id());

            Set<String> names = get(a.listTopics().names());
            check(names.contains(t), "listTopics: %s missing from %s", t, names);

            get(a.deleteTopics(List.of(t)).all());
            eventually("listTopics without " + t, () -> get(a.listTopics().names()).contains(t) ? null : true);
            try {
                get(a.describeTopics(List.of(t)).allTopicNames());
                throw new Failure("describeTopics of deleted topic " + t + " succeeded");
            } catch (ExecutionException e) {
                check(e.getCause() instanceof UnknownTopicOrPartitionException,
                        "describeTopics(deleted): expected UnknownTopicOrPartitionException, got %s", describe(e));
            }
        }
    }

    /** Topic configs at creation, incrementalAlterConfigs SET/DELETE, createPartitions. */
    static void adminConfigs() throws Exception {
        String t = topic("configs");
        try (Admin a = admin()) {
            NewTopic nt = new NewTopic(t, 2, (short) 1).configs(Map.of("retention.ms", "3600000"));
            createTopics(a, nt);
            ConfigResource res = new ConfigResource(ConfigResource.Type.TOPIC, t);
            ConfigEntry e = eventually("describeConfigs(" + t + ")",
                    () -> get(a.describeConfigs(List.of(res)).all()).get(res).get("retention.ms"));
            checkEq("3600000", e.value(), "retention.ms set at creation");
            checkEq(ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG, e.source(), "retention.ms source");

            get(a.incrementalAlterConfigs(Map.of(res, List.of(new AlterConfigOp(
                    new ConfigEntry("retention.ms", "7200000"), AlterConfigOp.OpType.SET)))).all());
            checkEq("7200000", get(a.describeConfigs(List.of(res)).all()).get(res).get("retention.ms").value(),
                    "retention.ms after incrementalAlterConfigs SET");

            get(a.incrementalAlterConfigs(Map.of(res, List.of(new AlterConfigOp(
                    new ConfigEntry("retention.ms", ""), AlterConfigOp.OpType.DELETE)))).all());
            ConfigEntry d = get(a.describeConfigs(List.of(res)).all()).get(res).get("retention.ms");
            check(d != null && !"7200000".equals(d.value()) && d.source() != ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG,
                    "retention.ms after DELETE should be the default, got %s", d);

            get(a.createPartitions(Map.of(t, NewPartitions.increaseTo(5))).all());
            eventually("5 partitions after createPartitions", () ->
                    get(a.describeTopics(List.of(t)).allTopicNames()).get(t).partitions().size() == 5 ? true : null);
            get(a.deleteTopics(List.of(t)).all());
        }
    }

    /** (b) Idempotent producer, acks=all: 10,000 keyed records, all acknowledged, offsets contiguous per partition. */
    static void idempotentProducer() throws Exception {
        String t = topic("idempotent");
        createTopic(t, 3);
        int n = 10_000;
        Map<Integer, List<Long>> offsetsInSendOrder = new TreeMap<>();
        Map<String, Integer> keyPartition = new HashMap<>();
        try (KafkaProducer<String, String> pr = producer(Map.of(
                ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, true,
                ProducerConfig.ACKS_CONFIG, "all",
                ProducerConfig.LINGER_MS_CONFIG, 5,
                ProducerConfig.MAX_IN_FLIGHT_REQUESTS_PER_CONNECTION, 5))) {
            List<Future<RecordMetadata>> fs = new ArrayList<>(n);
            List<String> keys = new ArrayList<>(n);
            for (int i = 0; i < n; i++) {
                String key = "user-" + (i % 101);
                keys.add(key);
                fs.add(pr.send(new ProducerRecord<>(t, key, "event-" + i)));
            }
            pr.flush();
            for (int i = 0; i < n; i++) {
                RecordMetadata md = get(fs.get(i));
                check(md.hasOffset() && md.offset() >= 0, "record %d acknowledged without offset: %s", i, md);
                Integer prev = keyPartition.putIfAbsent(keys.get(i), md.partition());
                check(prev == null || prev == md.partition(), "key %s went to partitions %d and %d", keys.get(i), prev, md.partition());
                offsetsInSendOrder.computeIfAbsent(md.partition(), p -> new ArrayList<>()).add(md.offset());
            }
        }
        checkEq(Set.of(0, 1, 2), offsetsInSendOrder.keySet(), "partitions written");
        Map<TopicPartition, Long> counts = new HashMap<>();
        for (Map.Entry<Integer, List<Long>> e : offsetsInSendOrder.entrySet()) {
            List<Long> offs = e.getValue();
            for (int j = 0; j < offs.size(); j++) {
                // idempotence keeps send order within a partition: offsets are 0, 1, 2, ... in send order
                if (offs.get(j) != j) {
                    throw new Failure("partition " + e.getKey() + ": record #" + j + " (in send order) got offset "
                            + offs.get(j) + "; offsets must be contiguous from 0 in send order");
                }
            }
            counts.put(new TopicPartition(t, e.getKey()), (long) offs.size());
        }
        checkEq(n, counts.values().stream().mapToInt(Long::intValue).sum(), "records acknowledged");
        try (KafkaConsumer<String, String> c = consumer(null, Map.of())) {
            checkEq(counts, c.endOffsets(counts.keySet(), WAIT), "endOffsets after idempotent produce");
        }
    }

    private static void pollInto(KafkaConsumer<String, String> c, String who, Map<String, String> seen,
                                  Map<String, Integer> perConsumer, List<String> problems) {
        ConsumerRecords<String, String> recs = c.poll(Duration.ofMillis(100));
        Set<TopicPartition> assigned = c.assignment();
        for (ConsumerRecord<String, String> r : recs) {
            String id = r.partition() + "@" + r.offset();
            String prev = seen.put(id, who);
            if (prev != null) {
                problems.add("record " + id + " read twice (by " + prev + " and " + who + ")");
            }
            if (!assigned.contains(new TopicPartition(r.topic(), r.partition()))) {
                problems.add(who + " got record " + id + " from a partition not assigned to it: " + assigned);
            }
            perConsumer.merge(who, 1, Integer::sum);
        }
    }

    /** (c) Classic-protocol group: two members split the partitions, every record once, commitSync, a new member resumes. */
    static void consumerGroup(String name, String assignor) throws Exception {
        String t = topic(name);
        String g = "jvm-" + name + "-" + RUN;
        int partitions = 4;
        createTopic(t, partitions);
        Map<String, Object> extra = new HashMap<>();
        if (assignor != null) {
            extra.put(ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG, assignor);
        }
        Map<String, String> seen = new HashMap<>(); // partition@offset -> consumer
        Map<String, Integer> perConsumer = new HashMap<>();
        List<String> problems = new ArrayList<>();
        Map<String, String> valueAt = new HashMap<>();
        int n = 2000;
        try (KafkaConsumer<String, String> c1 = consumer(g, extra); KafkaConsumer<String, String> c2 = consumer(g, extra)) {
            c1.subscribe(List.of(t));
            c2.subscribe(List.of(t));
            long end = System.nanoTime() + Duration.ofSeconds(60).toNanos();
            while (true) {
                pollInto(c1, "c1", seen, perConsumer, problems);
                pollInto(c2, "c2", seen, perConsumer, problems);
                Set<TopicPartition> a1 = c1.assignment(), a2 = c2.assignment();
                Set<TopicPartition> union = new HashSet<>(a1);
                union.addAll(a2);
                if (!a1.isEmpty() && !a2.isEmpty() && union.size() == partitions && a1.size() + a2.size() == partitions) {
                    break;
                }
                check(System.nanoTime() < end, "group %s did not split %d partitions between two members within 60s: c1=%s c2=%s",
                        g, partitions, a1, a2);
            }
            check(seen.isEmpty(), "records read before any was produced: %s", seen);

            List<RecordMetadata> mds = produce(t, values("first", n), Map.of());
            for (int i = 0; i < n; i++) {
                valueAt.put(mds.get(i).partition() + "@" + mds.get(i).offset(), "first-" + i);
            }
            end = System.nanoTime() + Duration.ofSeconds(60).toNanos();
            while (seen.size() < n && problems.isEmpty()) {
                pollInto(c1, "c1", seen, perConsumer, problems);
                pollInto(c2, "c2", seen, perConsumer, problems);
                check(System.nanoTime() < end, "read %d of %d records within 60s (per consumer %s)", seen.size(), n, perConsumer);
            }
            // a little longer: nothing more (no duplicates) may arrive
            for (int i = 0; i < 5; i++) {
                pollInto(c1, "c1", seen, perConsumer, problems);
                pollInto(c2, "c2", seen, perConsumer, problems);
            }
            check(problems.isEmpty(), "%s", problems.stream().limit(5).collect(Collectors.toList()));
            checkEq(valueAt.keySet(), seen.keySet(), "records read (partition@offset)");
            check(perConsumer.getOrDefault("c1", 0) > 0 && perConsumer.getOrDefault("c2", 0) > 0,
                    "both members should have read records: %s", perConsumer);

            c1.commitSync(WAIT);
            c2.commitSync(WAIT);
            for (KafkaConsumer<String, String> c : List.of(c1, c2)) {
                Map<TopicPartition, OffsetAndMetadata> committed = c.committed(c.assignment(), WAIT);
                for (TopicPartition tp : c.assignment()) {
                    OffsetAndMetadata om = committed.get(tp);
                    check(om != null && om.offset() == c.position(tp, WAIT),
                            "committed offset of %s is %s, position %d", tp, om, c.position(tp, WAIT));
                }
            }
        }

        int m = 300;
        List<RecordMetadata> second = produce(t, values("second", m), Map.of());
        Set<String> expected = second.stream().map(md -> md.partition() + "@" + md.offset()).collect(Collectors.toSet());
        Map<String, String> seen3 = new HashMap<>();
        Map<String, Integer> per3 = new HashMap<>();
        List<String> problems3 = new ArrayList<>();
        try (KafkaConsumer<String, String> c3 = consumer(g, extra)) {
            c3.subscribe(List.of(t));
            long end = System.nanoTime() + Duration.ofSeconds(60).toNanos();
            while (seen3.size() < m && problems3.isEmpty()) {
                pollInto(c3, "c3", seen3, per3, problems3);
                check(System.nanoTime() < end, "new member read %d of %d new records within 60s", seen3.size(), m);
            }
            for (int i = 0; i < 5; i++) {
                pollInto(c3, "c3", seen3, per3, problems3);
            }
            check(problems3.isEmpty(), "%s", problems3.stream().limit(5).collect(Collectors.toList()));
            Set<String> old = new HashSet<>(seen3.keySet());
            old.removeAll(expected);
            check(old.isEmpty(), "new member re-read %d already committed records, e.g. %s", old.size(),
                    old.stream().limit(5).collect(Collectors.toList()));
            checkEq(expected, seen3.keySet(), "records read by the new member");
            c3.commitSync(WAIT);
        }
    }

    /** listGroups, describeConsumerGroups, listConsumerGroupOffsets, alterConsumerGroupOffsets, deleteConsumerGroups. */
    static void adminGroups() throws Exception {
        String t = topic("admin-groups");
        String g = "jvm-admin-groups-" + RUN;
        try (Admin a = admin()) {
            createTopic(a, t, 2);
            produce(t, values("x", 100), Map.of());
            TopicPartition tp0 = new TopicPartition(t, 0), tp1 = new TopicPartition(t, 1);
            try (KafkaConsumer<String, String> c = consumer(g, Map.of())) {
                c.subscribe(List.of(t));
                int got = 0;
                long end = System.nanoTime() + Duration.ofSeconds(60).toNanos();
                while (got < 100) {
                    got += c.poll(Duration.ofMillis(200)).count();
                    check(System.nanoTime() < end, "read %d of 100 records within 60s", got);
                }
                c.commitSync(WAIT);

                Collection<GroupListing> groups = get(a.listGroups(ListGroupsOptions.forConsumerGroups()).all());
                check(groups.stream().anyMatch(l -> l.groupId().equals(g)), "listGroups(consumer): %s missing from %s", g,
                        groups.stream().map(GroupListing::groupId).collect(Collectors.toList()));

                ConsumerGroupDescription d = get(a.describeConsumerGroups(List.of(g)).all()).get(g);
                checkEq(GroupState.STABLE, d.groupState(), "describeConsumerGroups state");
                checkEq(1, d.members().size(), "describeConsumerGroups member count");
                checkEq(Set.of(tp0, tp1), d.members().iterator().next().assignment().topicPartitions(),
                        "describeConsumerGroups member assignment");
            }
            Map<TopicPartition, OffsetAndMetadata> offs = get(a.listConsumerGroupOffsets(g).partitionsToOffsetAndMetadata());
            checkEq(100L, offs.values().stream().mapToLong(OffsetAndMetadata::offset).sum(), "sum of committed offsets");

            get(a.alterConsumerGroupOffsets(g, Map.of(tp0, new OffsetAndMetadata(0))).all());
            offs = get(a.listConsumerGroupOffsets(g).partitionsToOffsetAndMetadata());
            checkEq(0L, offs.get(tp0).offset(), "offset of " + tp0 + " after alterConsumerGroupOffsets");

            get(a.deleteConsumerGroups(List.of(g)).all());
            Collection<GroupListing> after = get(a.listGroups(ListGroupsOptions.forConsumerGroups()).all());
            check(after.stream().noneMatch(l -> l.groupId().equals(g)), "group %s still listed after deleteConsumerGroups", g);
            get(a.deleteTopics(List.of(t)).all());
        }
    }

    /** (d) Headers, explicit timestamps, seekToBeginning/seek/seekToEnd, offsetsForTimes, commit with metadata (manual assignment). */
    static void headersSeekTimestamps() throws Exception {
        String t = topic("headers");
        createTopic(t, 1);
        TopicPartition tp = new TopicPartition(t, 0);
        long base = System.currentTimeMillis() - 600_000;
        int n = 5;
        try (KafkaProducer<String, String> pr = producer(Map.of())) {
            for (int i = 0; i < n; i++) {
                RecordHeaders h = new RecordHeaders();
                h.add("trace-id", ("trace-" + i).getBytes(StandardCharsets.UTF_8));
                h.add("dup", "a".getBytes(StandardCharsets.UTF_8));
                h.add("dup", "b".getBytes(StandardCharsets.UTF_8));
                h.add("empty", null);
                // one record per batch (get() each), so offsetsForTimes is exact at batch granularity
                RecordMetadata md = get(pr.send(new ProducerRecord<>(t, 0, base + i * 1000L, "k" + i, "v" + i, h)));
                checkEq((long) i, md.offset(), "offset of record " + i);
                checkEq(base + i * 1000L, md.timestamp(), "acknowledged timestamp of record " + i);
            }
        }
        String g = "jvm-manual-" + RUN;
        try (KafkaConsumer<String, String> c = consumer(g, Map.of())) {
            c.assign(List.of(tp));
            c.seekToBeginning(List.of(tp));
            checkEq(0L, c.position(tp, WAIT), "position after seekToBeginning");
            List<ConsumerRecord<String, String>> recs = new ArrayList<>();
            long end = System.nanoTime() + WAIT.toNanos();
            while (recs.size() < n) {
                c.poll(Duration.ofMillis(200)).forEach(recs::add);
                check(System.nanoTime() < end, "read %d of %d records", recs.size(), n);
            }
            for (int i = 0; i < n; i++) {
                ConsumerRecord<String, String> r = recs.get(i);
                checkEq((long) i, r.offset(), "offset");
                checkEq("k" + i, r.key(), "key");
                checkEq("v" + i, r.value(), "value");
                checkEq(base + i * 1000L, r.timestamp(), "timestamp of offset " + i);
                checkEq(TimestampType.CREATE_TIME, r.timestampType(), "timestamp type");
                List<String> hk = new ArrayList<>();
                List<String> hv = new ArrayList<>();
                for (Header h : r.headers()) {
                    hk.add(h.key());
                    hv.add(h.value() == null ? null : new String(h.value(), StandardCharsets.UTF_8));
                }
                checkEq(List.of("trace-id", "dup", "dup", "empty"), hk, "header keys of offset " + i);
                checkEq(Arrays.asList("trace-" + i, "a", "b", null), hv, "header values of offset " + i);
                checkEq("b", new String(r.headers().lastHeader("dup").value(), StandardCharsets.UTF_8), "lastHeader(dup)");
            }
            checkEq(Map.of(tp, 0L), c.beginningOffsets(List.of(tp), WAIT), "beginningOffsets");
            checkEq(Map.of(tp, (long) n), c.endOffsets(List.of(tp), WAIT), "endOffsets");

            Map<TopicPartition, OffsetAndTimestamp> ot = c.offsetsForTimes(Map.of(tp, base + 2000), WAIT);
            check(ot.get(tp) != null && ot.get(tp).offset() == 2, "offsetsForTimes(base+2000) = %s, expected offset 2", ot.get(tp));
            ot = c.offsetsForTimes(Map.of(tp, base + 1500), WAIT);
            check(ot.get(tp) != null && ot.get(tp).offset() == 2, "offsetsForTimes(base+1500) = %s, expected offset 2", ot.get(tp));
            ot = c.offsetsForTimes(Map.of(tp, base - 60_000), WAIT);
            check(ot.get(tp) != null && ot.get(tp).offset() == 0, "offsetsForTimes(before all) = %s, expected offset 0", ot.get(tp));
            ot = c.offsetsForTimes(Map.of(tp, System.currentTimeMillis() + 3_600_000), WAIT);
            check(ot.get(tp) == null, "offsetsForTimes(future) = %s, expected null", ot.get(tp));

            c.seek(tp, 3);
            List<ConsumerRecord<String, String>> after = new ArrayList<>();
            end = System.nanoTime() + WAIT.toNanos();
            while (after.isEmpty()) {
                c.poll(Duration.ofMillis(200)).forEach(after::add);
                check(System.nanoTime() < end, "nothing read after seek(3)");
            }
            checkEq(3L, after.get(0).offset(), "first offset after seek(3)");
            c.seekToEnd(List.of(tp));
            checkEq((long) n, c.position(tp, WAIT), "position after seekToEnd");

            c.commitSync(Map.of(tp, new OffsetAndMetadata(3, "checkpoint")), WAIT);
            OffsetAndMetadata om = c.committed(Set.of(tp), WAIT).get(tp);
            check(om != null && om.offset() == 3 && "checkpoint".equals(om.metadata()),
                    "committed after commitSync(3, checkpoint) = %s", om);
        }
    }

    /** Every codec a Java producer offers, read back in order. */
    static void compression() throws Exception {
        String t = topic("compression");
        createTopic(t, 1);
        List<String> codecs = List.of("gzip", "snappy", "lz4", "zstd");
        List<String> expected = new ArrayList<>();
        for (String codec : codecs) {
            List<String> vs = new ArrayList<>();
            for (int i = 0; i < 200; i++) {
                vs.add(codec + "-" + i + "-" + "payload ".repeat(20));
            }
            produce(t, vs, Map.of(ProducerConfig.COMPRESSION_TYPE_CONFIG, codec, ProducerConfig.LINGER_MS_CONFIG, 20));
            expected.addAll(vs);
        }
        TopicPartition tp = new TopicPartition(t, 0);
        try (KafkaConsumer<String, String> c = consumer(null, Map.of())) {
            c.assign(List.of(tp));
            c.seekToBeginning(List.of(tp));
            List<String> got = new ArrayList<>();
            long end = System.nanoTime() + WAIT.toNanos();
            while (got.size() < expected.size()) {
                for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(200))) {
                    checkEq((long) got.size(), r.offset(), "offset");
                    got.add(r.value());
                }
                check(System.nanoTime() < end, "read %d of %d compressed records", got.size(), expected.size());
            }
            checkEq(expected, got, "values read back");
        }
    }

    private Scenarios() {
    }
}
