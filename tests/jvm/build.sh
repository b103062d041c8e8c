#!/usr/bin/env bash
# Build what tests/e2e/test_java_client_and_kafka_tools.py and test_kafka_streams_and_connect.py
# need, idempotently (fast when done):
#   target/kafka-dist/                          Apache Kafka 4.4 distribution folder (scripts/kafka-dist.sh)
#   target/jvm-client/conflux-jvm-client.jar    Java client scenarios (tests/jvm/client, kafka-clients 4.4)
#   target/jvm-apps/                            Kafka Streams word count + Connect file compat shim (tests/jvm/apps)
# Installs java/maven with apt-get on a bare Debian (via scripts/kafka-dist.sh).
# Prints the paths as CONFLUX_KAFKA_DIST=..., CONFLUX_JVM_CLIENT_JAR=... and CONFLUX_JVM_APPS=... lines.
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
apps="$ROOT/target/jvm-apps"
apps_src="$ROOT/tests/jvm/apps"
apps_jar="$apps/conflux-streams-wordcount.jar"
newer=""
if [ -f "$apps_jar" ] && [ -f "$apps/connect-file-compat.jar" ]; then
  newer="$(find "$apps_src/pom.xml" "$apps_src/src" -newer "$apps_jar" -print -quit)"
fi
if [ ! -f "$apps_jar" ] || [ ! -f "$apps/connect-file-compat.jar" ] || [ -n "$newer" ]; then
  echo "jvm build: mvn package (tests/jvm/apps)" >&2
  mvn -q -B -Dstyle.color=never -f "$apps_src/pom.xml" package >&2
fi
echo "CONFLUX_KAFKA_DIST=$dist"
echo "CONFLUX_JVM_CLIENT_JAR=$jar"
echo "CONFLUX_JVM_APPS=$apps"
