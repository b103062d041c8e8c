package dev.conflux.streams;

import java.time.Duration;
import java.util.Arrays;
import java.util.Locale;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;

import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.processor.StateRestoreListener;

/**
 * The classic Kafka Streams word count, with exactly-once processing (exactly_once_v2):
 *
 * <pre>
 *   INPUT (lines) -> flatMapValues(words) -> groupBy(word)  [APP_ID-by-word-repartition]
 *                 -> count()                                 [store word-counts, compacted APP_ID-word-counts-changelog]
 *                 -> toStream() -> OUTPUT (word -> count as a long)
 * </pre>
 *
 * The record cache is off (statestore.cache.max.bytes=0), so every input word produces one
 * output record and the committed output of a word is exactly 1, 2, ..., n: a record counted
 * twice (or lost) after a crash shows as a repeated (or missing) count.
 *
 * <p>Usage: {@code WordCount BOOTSTRAP APP_ID INPUT OUTPUT STATE_DIR [CONFIG=VALUE ...]} where
 * each CONFIG=VALUE is a Streams config that overrides the defaults below (prefixes such as
 * {@code consumer.}, {@code producer.}, {@code topic.} work as in StreamsConfig).
 *
 * <p>Prints to stdout, for the test that drives it: {@code STATE OLD -> NEW} on every state change,
 * {@code PROCESSED n} (words counted by this process) once a second, {@code RESTORED store topic
 * partition n} when a store partition was restored from its changelog (n records), {@code FATAL ...} with the
 * stack trace when a stream thread dies, {@code CLOSED} after a clean close. It runs until
 * SIGTERM (clean close, exit 0) or until the client stops on its own (ERROR, exit 1).
 */
public final class WordCount {
    public static final String STORE = "word-counts";
    public static final String REPARTITION = "by-word";

    static Topology topology(String input, String output, AtomicLong processed) {
        StreamsBuilder builder = new StreamsBuilder();
        builder.stream(input, Consumed.with(Serdes.String(), Serdes.String()))
                .flatMapValues(line -> Arrays.asList(line.toLowerCase(Locale.ROOT).split("\\W+")))
                .filter((key, word) -> !word.isEmpty())
                .groupBy((key, word) -> word, Grouped.with(REPARTITION, Serdes.String(), Serdes.String()))
                .count(Materialized.as(STORE))
                .toStream()
                .peek((word, count) -> processed.incrementAndGet())
                .to(output, Produced.with(Serdes.String(), Serdes.Long()));
        return builder.build();
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 5) {
            System.err.println("usage: WordCount BOOTSTRAP APP_ID INPUT OUTPUT STATE_DIR [CONFIG=VALUE ...]");
            System.exit(2);
        }
        Properties props = new Properties();
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, args[1]);
        props.put(StreamsConfig.STATE_DIR_CONFIG, args[4]);
        props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        props.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, 0);
        props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 100);
        props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, 2);
        // A restarted instance rejoins quickly: the killed member's session ends after 10 s.
        props.put(StreamsConfig.consumerPrefix("session.timeout.ms"), 10_000);
        props.put(StreamsConfig.consumerPrefix("heartbeat.interval.ms"), 1_000);
        for (int i = 5; i < args.length; i++) {
            int eq = args[i].indexOf('=');
            if (eq <= 0) {
                System.err.println("not CONFIG=VALUE: " + args[i]);
                System.exit(2);
            }
            props.put(args[i].substring(0, eq), args[i].substring(eq + 1));
        }

        AtomicLong processed = new AtomicLong();
        Topology topology = topology(args[2], args[3], processed);
        System.out.println("TOPOLOGY " + topology.describe().toString().replace('\n', ' '));

        KafkaStreams streams = new KafkaStreams(topology, props);
        CountDownLatch stopped = new CountDownLatch(1);
        AtomicBoolean failed = new AtomicBoolean();
        streams.setStateListener((newState, oldState) -> {
            System.out.println("STATE " + oldState + " -> " + newState);
            if (newState == KafkaStreams.State.ERROR) {
                failed.set(true);
            }
            if (newState == KafkaStreams.State.NOT_RUNNING || newState == KafkaStreams.State.ERROR) {
                stopped.countDown();
            }
        });
        streams.setGlobalStateRestoreListener(new StateRestoreListener() {
            @Override
            public void onRestoreStart(TopicPartition tp, String store, long startOffset, long endOffset) {
            }

            @Override
            public void onBatchRestored(TopicPartition tp, String store, long batchEndOffset, long numRestored) {
            }

            @Override
            public void onRestoreEnd(TopicPartition tp, String store, long totalRestored) {
                System.out.println("RESTORED " + store + " " + tp.topic() + " " + tp.partition() + " " + totalRestored);
            }
        });
        streams.setUncaughtExceptionHandler(e -> {
            failed.set(true);
            System.out.println("FATAL stream thread died: " + e);
            e.printStackTrace(System.out);
            return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });

        ScheduledExecutorService ticker = Executors.newSingleThreadScheduledExecutor(r -> {
            Thread t = new Thread(r, "progress");
            t.setDaemon(true);
            return t;
        });
        ticker.scheduleAtFixedRate(() -> System.out.println("PROCESSED " + processed.get()), 1, 1, TimeUnit.SECONDS);

        AtomicBoolean closing = new AtomicBoolean();
        Thread hook = new Thread(() -> {
            closing.set(true);
            boolean clean = streams.close(Duration.ofSeconds(30));
            System.out.println(clean ? "CLOSED" : "CLOSE TIMED OUT");
            System.out.flush();
        }, "shutdown");
        Runtime.getRuntime().addShutdownHook(hook);

        streams.start();
        stopped.await();
        if (!closing.get()) {
            // Stopped on its own (a fatal error): close and report it through the exit code.
            Runtime.getRuntime().removeShutdownHook(hook);
            streams.close(Duration.ofSeconds(30));
            System.out.println("STOPPED " + (failed.get() ? "after an error" : "on its own"));
            System.out.flush();
            System.exit(1);
        }
    }
}
