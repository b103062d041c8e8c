#!/usr/bin/env bash
# Build what tests/e2e/test_java_client_and_kafka_tools.py needs, idempotently (fast when done):
#   target/kafka-dist/                          Apache Kafka 4.4 distribution folder (scripts/kafka-dist.sh)
#   target/jvm-client/conflux-jvm-client.jar    Java client scenarios (tests/jvm/client, kafka-clients 4.4)
# Installs java/maven with apt-get on a bare Debian (via scripts/kafka-dist.sh).
# Prints the two paths as CONFLUX_KAFKA_DIST=... and CONFLUX_JVM_CLIENT_JAR=... lines.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dist="$("$ROOT/scripts/kafka-dist.sh" "${CONFLUX_KAFKA_DIST:-$ROOT/target/kafka-dist}")"

jar="$ROOT/target/jvm-client/conflux-jvm-client.jar"
src="$ROOT/tests/jvm/client"
newer=""
if [ -f "$jar" ]; then newer="$(find "$src/pom.xml" "$src/src" -newer "$jar" -print -quit)"; fi
if [ ! -f "$jar" ] || [ -n "$newer" ]; then
  echo "jvm build: mvn package (tests/jvm/client)" >&2
  mvn -q -B -Dstyle.color=never -f "$src/pom.xml" package >&2
fi
echo "CONFLUX_KAFKA_DIST=$dist"
echo "CONFLUX_JVM_CLIENT_JAR=$jar"
