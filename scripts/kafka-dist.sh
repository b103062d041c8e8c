#!/usr/bin/env bash
# Lay out an Apache Kafka 4.4 distribution folder from Maven Central jars:
#
#   DEST/libs/     the runtime classpath of org.apache.kafka:kafka_2.13 + kafka-tools +
#                  kafka-streams 4.4.0 + connect-file (+ log4j2 behind slf4j), resolved by Maven
#                  from tests/jvm/kafka-dist/pom.xml
#   DEST/bin/      kafka-topics.sh, kafka-console-producer.sh, connect-distributed.sh, ... with
#                  the names and main classes of Apache Kafka's own bin/ scripts (args passed
#                  through, exit codes kept), so tools that expect $KAFKA_PATH/bin/... (librdkafka's
#                  test suite, docs, habits) work unchanged
#   DEST/config/   server.properties (single-node KRaft, broker+controller on loopback),
#                  log4j2.yaml (server), tools-log4j2.yaml (tools: WARN to stderr),
#                  connect-log4j2.yaml (Connect workers: INFO to stdout),
#                  connect-distributed.properties (a worker for 127.0.0.1:9092; plugin.path =
#                  libs/connect-file-*.jar, which, as in the real distribution, is not on the
#                  classpath of the bin/ scripts)
#
# Usage: scripts/kafka-dist.sh [DEST]        (default: target/kafka-dist)
# Prints DEST (absolute) on stdout and nothing else; progress goes to stderr.
# Idempotent: when DEST/libs matches the pom (stamp file), Maven is not run again.
# On a bare Debian it installs java (default-jdk-headless) and maven with apt-get.
#
# Run Apache Kafka itself from the folder: tests/jvm/apache-kafka.sh start PORT DATA_DIR
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
POM="$ROOT/tests/jvm/kafka-dist/pom.xml"
DEST="${1:-$ROOT/target/kafka-dist}"
mkdir -p "$DEST"
DEST="$(cd "$DEST" && pwd)"
# Bump when the bin/ or config/ layout below changes.
LAYOUT_VERSION=2

log() { printf 'kafka-dist: %s\n' "$*" >&2; }

# --- java and maven ---------------------------------------------------------------
need=()
command -v java >/dev/null 2>&1 || need+=(default-jdk-headless)
command -v mvn >/dev/null 2>&1 || need+=(maven)
if [ "${#need[@]}" -ne 0 ]; then
  SUDO=()
  if [ "$(id -u)" -ne 0 ]; then SUDO=(sudo); fi
  log "apt-get install ${need[*]}"
  "${SUDO[@]}" apt-get update -qq >&2
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# --- libs/ ------------------------------------------------------------------------
want="$( (cat "$POM"; echo "layout=$LAYOUT_VERSION") | sha256sum | cut -d' ' -f1)"
stamp="$DEST/.libs.sha256"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || [ ! -f "$DEST/libs/kafka-tools-4.4.0.jar" ]; then
  log "resolving Kafka 4.4.0 jars with Maven into $DEST/libs"
  tmp="$DEST/.libs.tmp"
  rm -rf "$tmp"
  # File names stay artifact-version.jar, as in the real distribution's libs/.
  mvn -q -B -Dstyle.color=never -f "$POM" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" >&2
  rm -rf "$DEST/libs"
  mv "$tmp" "$DEST/libs"
  echo "$want" >"$stamp"
fi

# --- config/ ----------------------------------------------------------------------
mkdir -p "$DEST/config" "$DEST/bin" "$DEST/logs"
write() { # write FILE if its content differs (stdin), so reruns touch nothing
  local f="$1" content
  content="$(cat)"
  if [ ! -f "$f" ] || [ "$(cat "$f")" != "$content" ]; then printf '%s\n' "$content" >"$f"; fi
}

write "$DEST/config/server.properties" <<'EOF'
# Apache Kafka 4.4 as ONE combined broker + controller node (KRaft), loopback only.
# Used as the reference broker for Conflux benchmarks and client checks.
#   bin/kafka-storage.sh format --standalone -t "$(bin/kafka-storage.sh random-uuid)" -c config/server.properties
#   bin/kafka-server-start.sh config/server.properties
# tests/jvm/apache-kafka.sh writes a copy with its own ports and log.dirs.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:9093
listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093
advertised.listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=/tmp/kraft-combined-logs

num.network.threads=3
num.io.threads=8
socket.send.buffer.bytes=102400
socket.receive.buffer.bytes=102400
socket.request.max.bytes=104857600

num.partitions=1
num.recovery.threads.per.data.dir=1
auto.create.topics.enable=true
# one node: every internal topic has one replica
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0

log.retention.hours=168
log.segment.bytes=1073741824
log.retention.check.interval.ms=300000
EOF

write "$DEST/config/log4j2.yaml" <<'EOF'
# Server logging (kafka-server-start.sh): INFO to stdout, like the distribution's console appender.
Configuration:
  Properties:
    Property:
      - name: "logPattern"
        value: "[%d] %p %m (%c)%n"
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "${logPattern}"
  Loggers:
    Root:
      level: INFO
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka.request.logger
        level: WARN
      - name: org.apache.kafka.controller
        level: INFO
      - name: state.change.logger
        level: WARN
EOF

write "$DEST/config/connect-log4j2.yaml" <<'EOF'
# Connect workers (connect-distributed.sh, connect-standalone.sh): INFO to stdout.
Configuration:
  Properties:
    Property:
      - name: "logPattern"
        value: "[%d] %p %X{connector.context}%m (%c:%L)%n"
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "${logPattern}"
  Loggers:
    Root:
      level: INFO
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: org.reflections
        level: ERROR
EOF

connect_file_jar="$(cd "$DEST/libs" && ls connect-file-*.jar | head -n1)"
write "$DEST/config/connect-distributed.properties" <<EOF
# A Kafka Connect worker in distributed mode (bin/connect-distributed.sh this-file) against
# a broker on 127.0.0.1:9092; as the distribution's file, with one replica per internal topic.
bootstrap.servers=127.0.0.1:9092
group.id=connect-cluster
key.converter=org.apache.kafka.connect.json.JsonConverter
value.converter=org.apache.kafka.connect.json.JsonConverter
key.converter.schemas.enable=true
value.converter.schemas.enable=true
offset.storage.topic=connect-offsets
offset.storage.replication.factor=1
config.storage.topic=connect-configs
config.storage.replication.factor=1
status.storage.topic=connect-status
status.storage.replication.factor=1
offset.flush.interval.ms=10000
listeners=HTTP://127.0.0.1:8083
# The FileStream connectors are a plugin, not on the classpath (as in Apache Kafka since 3.2).
plugin.path=$DEST/libs/$connect_file_jar
EOF

write "$DEST/config/tools-log4j2.yaml" <<'EOF'
# Command-line tools: warnings and errors only, to stderr (as the distribution's tools-log4j2.yaml).
Configuration:
  Properties:
    Property:
      - name: "logPattern"
        value: "[%d] %p %m (%c)%n"
  Appenders:
    Console:
      name: STDERR
      target: SYSTEM_ERR
      PatternLayout:
        pattern: "${logPattern}"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: STDERR
EOF

# --- bin/ -------------------------------------------------------------------------
write "$DEST/bin/kafka-run-class.sh" <<'EOF'
#!/usr/bin/env bash
# Like Apache Kafka's bin/kafka-run-class.sh: run CLASS with libs/* on the classpath.
# Honours JAVA_HOME, KAFKA_HEAP_OPTS, KAFKA_JVM_PERFORMANCE_OPTS, KAFKA_OPTS, KAFKA_LOG4J_OPTS,
# KAFKA_JMX_OPTS, JMX_PORT, LOG_DIR, CLASSPATH, and the options -daemon, -name NAME, -loggc.
if [ $# -lt 1 ]; then
  echo "USAGE: $0 [-daemon] [-name servicename] [-loggc] classname [opts]"
  exit 1
fi
base_dir=$(cd "$(dirname "$0")/.." && pwd)

CP=""
shopt -s nullglob
for file in "$base_dir"/libs/*.jar; do
  # As the real script: the FileStream connectors are a plugin (plugin.path), not classpath.
  case "$(basename "$file")" in connect-file-*.jar) continue ;; esac
  CP="$CP:$file"
done
shopt -u nullglob
if [ -n "${CLASSPATH:-}" ]; then CP="$CLASSPATH$CP"; fi
CP=${CP#:}
if [ -z "$CP" ]; then
  echo "Classpath is empty: $base_dir/libs has no jars (run scripts/kafka-dist.sh)" >&2
  exit 1
fi

if [ -z "${KAFKA_JMX_OPTS:-}" ]; then
  KAFKA_JMX_OPTS="-Dcom.sun.management.jmxremote=true -Dcom.sun.management.jmxremote.authenticate=false -Dcom.sun.management.jmxremote.ssl=false"
fi
if [ -n "${JMX_PORT:-}" ]; then
  KAFKA_JMX_OPTS="$KAFKA_JMX_OPTS -Dcom.sun.management.jmxremote.port=$JMX_PORT -Dcom.sun.management.jmxremote.rmi.port=$JMX_PORT"
fi
LOG_DIR=${LOG_DIR:-$base_dir/logs}
mkdir -p "$LOG_DIR" 2>/dev/null || true
if [ -z "${KAFKA_LOG4J_OPTS:-}" ]; then
  KAFKA_LOG4J_OPTS="-Dlog4j2.configurationFile=$base_dir/config/tools-log4j2.yaml"
fi
KAFKA_LOG4J_CMD_OPTS="-Dkafka.logs.dir=$LOG_DIR $KAFKA_LOG4J_OPTS"
if [ -n "${JAVA_HOME:-}" ]; then JAVA="$JAVA_HOME/bin/java"; else JAVA="java"; fi
KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xmx256M}
KAFKA_JVM_PERFORMANCE_OPTS=${KAFKA_JVM_PERFORMANCE_OPTS:--server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -XX:MaxInlineLevel=15 -Djava.awt.headless=true}

DAEMON_MODE=false
DAEMON_NAME=""
GC_LOG_ENABLED=false
while [ $# -gt 0 ]; do
  case $1 in
    -name) DAEMON_NAME=$2; shift 2 ;;
    -loggc) [ -z "${KAFKA_GC_LOG_OPTS:-}" ] && GC_LOG_ENABLED=true; shift ;;
    -daemon) DAEMON_MODE=true; shift ;;
    *) break ;;
  esac
done
if [ "$GC_LOG_ENABLED" = true ]; then
  KAFKA_GC_LOG_OPTS="-Xlog:gc*:file=$LOG_DIR/${DAEMON_NAME}-gc.log:time,tags:filecount=10,filesize=100M"
fi

# Word splitting of the *_OPTS variables is intended (as in the original script).
# shellcheck disable=SC2086
if [ "$DAEMON_MODE" = true ]; then
  CONSOLE_OUTPUT_FILE=$LOG_DIR/${DAEMON_NAME:-kafka}.out
  nohup "$JAVA" $KAFKA_HEAP_OPTS $KAFKA_JVM_PERFORMANCE_OPTS ${KAFKA_GC_LOG_OPTS:-} $KAFKA_JMX_OPTS \
    $KAFKA_LOG4J_CMD_OPTS -cp "$CP" ${KAFKA_OPTS:-} "$@" >"$CONSOLE_OUTPUT_FILE" 2>&1 </dev/null &
else
  exec "$JAVA" $KAFKA_HEAP_OPTS $KAFKA_JVM_PERFORMANCE_OPTS ${KAFKA_GC_LOG_OPTS:-} $KAFKA_JMX_OPTS \
    $KAFKA_LOG4J_CMD_OPTS -cp "$CP" ${KAFKA_OPTS:-} "$@"
fi
EOF

write "$DEST/bin/kafka-server-start.sh" <<'EOF'
#!/usr/bin/env bash
# Like Apache Kafka's bin/kafka-server-start.sh: kafka.Kafka with config/log4j2.yaml and a 1 GiB heap.
if [ $# -lt 1 ]; then
  echo "USAGE: $0 [-daemon] server.properties [--override property=value]*"
  exit 1
fi
base_dir=$(cd "$(dirname "$0")" && pwd)
if [ -z "${KAFKA_LOG4J_OPTS:-}" ]; then
  export KAFKA_LOG4J_OPTS="-Dlog4j2.configurationFile=$base_dir/../config/log4j2.yaml"
fi
if [ -z "${KAFKA_HEAP_OPTS:-}" ]; then
  export KAFKA_HEAP_OPTS="-Xmx1G -Xms1G"
fi
EXTRA_ARGS=${EXTRA_ARGS-'-name kafkaServer -loggc'}
if [ "$1" = "-daemon" ]; then
  EXTRA_ARGS="-daemon $EXTRA_ARGS"
  shift
fi
# shellcheck disable=SC2086
exec "$base_dir/kafka-run-class.sh" $EXTRA_ARGS kafka.Kafka "$@"
EOF

for kind in distributed standalone; do
  if [ "$kind" = distributed ]; then
    usage="[-daemon] connect-distributed.properties"; class=org.apache.kafka.connect.cli.ConnectDistributed; name=connectDistributed
  else
    usage="[-daemon] connect-standalone.properties [connector1.properties connector2.json ...]"; class=org.apache.kafka.connect.cli.ConnectStandalone; name=connectStandalone
  fi
  write "$DEST/bin/connect-$kind.sh" <<EOF
#!/usr/bin/env bash
# Like Apache Kafka's bin/connect-$kind.sh: a Kafka Connect worker ($class).
if [ \$# -lt 1 ]; then
  echo "USAGE: \$0 $usage"
  exit 1
fi
base_dir=\$(cd "\$(dirname "\$0")" && pwd)
if [ -z "\${KAFKA_LOG4J_OPTS:-}" ]; then
  export KAFKA_LOG4J_OPTS="-Dlog4j2.configurationFile=\$base_dir/../config/connect-log4j2.yaml"
fi
if [ -z "\${KAFKA_HEAP_OPTS:-}" ]; then
  export KAFKA_HEAP_OPTS="-Xms256M -Xmx2G"
fi
EXTRA_ARGS=\${EXTRA_ARGS-'-name $name'}
if [ "\$1" = "-daemon" ]; then
  EXTRA_ARGS="-daemon \$EXTRA_ARGS"
  shift
fi
# shellcheck disable=SC2086
exec "\$base_dir/kafka-run-class.sh" \$EXTRA_ARGS $class "\$@"
EOF
done

# name -> main class, as in Apache Kafka 4.4's bin/ (checked against the 4.4.0 jars below)
tools=(
  "kafka-topics.sh                org.apache.kafka.tools.TopicCommand"
  "kafka-console-producer.sh      org.apache.kafka.tools.ConsoleProducer"
  "kafka-console-consumer.sh      org.apache.kafka.tools.consumer.ConsoleConsumer"
  "kafka-consumer-groups.sh       org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"
  "kafka-producer-perf-test.sh    org.apache.kafka.tools.ProducerPerformance"
  "kafka-consumer-perf-test.sh    org.apache.kafka.tools.ConsumerPerformance"
  "kafka-configs.sh               org.apache.kafka.tools.ConfigCommand"
  "kafka-acls.sh                  org.apache.kafka.tools.AclCommand"
  "kafka-storage.sh               kafka.tools.StorageTool"
  "kafka-broker-api-versions.sh   org.apache.kafka.tools.BrokerApiVersionsCommand"
  "kafka-delete-records.sh        org.apache.kafka.tools.DeleteRecordsCommand"
  "kafka-get-offsets.sh           org.apache.kafka.tools.GetOffsetShell"
  "kafka-transactions.sh          org.apache.kafka.tools.TransactionsCommand"
  "kafka-leader-election.sh       org.apache.kafka.tools.LeaderElectionCommand"
  "kafka-reassign-partitions.sh   org.apache.kafka.tools.reassign.ReassignPartitionsCommand"
  "kafka-log-dirs.sh              org.apache.kafka.tools.LogDirsCommand"
  "kafka-dump-log.sh              org.apache.kafka.tools.DumpLogSegments"
  "kafka-features.sh              org.apache.kafka.tools.FeatureCommand"
  "kafka-metadata-quorum.sh       org.apache.kafka.tools.MetadataQuorumCommand"
  "kafka-cluster.sh               org.apache.kafka.tools.ClusterTool"
  "kafka-groups.sh                org.apache.kafka.tools.GroupsCommand"
  "kafka-client-metrics.sh        org.apache.kafka.tools.ClientMetricsCommand"
  "kafka-delegation-tokens.sh     org.apache.kafka.tools.DelegationTokenCommand"
  "kafka-e2e-latency.sh           org.apache.kafka.tools.EndToEndLatency"
  "kafka-verifiable-producer.sh   org.apache.kafka.tools.VerifiableProducer"
  "kafka-verifiable-consumer.sh   org.apache.kafka.tools.VerifiableConsumer"
  "kafka-replica-verification.sh  org.apache.kafka.tools.ReplicaVerificationTool"
  "kafka-streams-application-reset.sh org.apache.kafka.tools.StreamsResetter"
  "kafka-streams-groups.sh        org.apache.kafka.tools.streams.StreamsGroupCommand"
  "kafka-share-groups.sh          org.apache.kafka.tools.consumer.group.ShareGroupCommand"
  "kafka-console-share-consumer.sh org.apache.kafka.tools.consumer.ConsoleShareConsumer"
  "kafka-jmx.sh                   org.apache.kafka.tools.JmxTool"
)
classes_file="$DEST/.classes"
if [ ! -f "$classes_file" ] || [ "$stamp" -nt "$classes_file" ]; then
  list_jar() { if command -v unzip >/dev/null 2>&1; then unzip -Z1 "$1"; else jar tf "$1"; fi; }
  for j in "$DEST"/libs/kafka_2.13-*.jar "$DEST"/libs/kafka-tools-*.jar "$DEST"/libs/connect-runtime-*.jar; do list_jar "$j"; done \
    | grep '\.class$' >"$classes_file.tmp"
  mv "$classes_file.tmp" "$classes_file"
fi
for entry in "${tools[@]}"; do
  read -r name class <<<"$entry"
  if ! grep -qxF "${class//.//}.class" "$classes_file"; then
    log "ERROR: main class $class of $name is not in the Kafka 4.4.0 jars"
    exit 1
  fi
  write "$DEST/bin/$name" <<EOF
#!/usr/bin/env bash
exec "\$(dirname "\$0")/kafka-run-class.sh" $class "\$@"
EOF
done

chmod +x "$DEST"/bin/*.sh
printf '%s\n' "$DEST"
