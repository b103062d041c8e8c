#!/usr/bin/env bash
# Run Apache Kafka 4.4 itself (the reference broker) from the folder scripts/kafka-dist.sh builds:
# one combined broker + controller node in KRaft mode on loopback.
#
#   tests/jvm/apache-kafka.sh start PORT DATA_DIR   format DATA_DIR once, start, wait until it serves
#   tests/jvm/apache-kafka.sh stop  PORT DATA_DIR   SIGTERM the broker started there (SIGKILL after 30 s)
#   tests/jvm/apache-kafka.sh status PORT DATA_DIR
#
# Clients use 127.0.0.1:PORT. The controller listens on $KAFKA_CONTROLLER_PORT (default PORT+1).
# DATA_DIR holds server.properties (from config/server.properties with these ports), kraft-logs/
# (the log.dirs), server.out (the broker's log) and kafka.pid.
# What it runs, by hand:
#   bin/kafka-storage.sh format --standalone -t "$(bin/kafka-storage.sh random-uuid)" -c DATA_DIR/server.properties
#   bin/kafka-server-start.sh DATA_DIR/server.properties
# Env: CONFLUX_KAFKA_DIST (default target/kafka-dist; built if missing), KAFKA_HEAP_OPTS (default 1 GiB),
#      KAFKA_START_TIMEOUT (seconds, default 90).
set -euo pipefail

usage() { echo "usage: $0 start|stop|status PORT DATA_DIR" >&2; exit 2; }
[ $# -eq 3 ] || usage
cmd=$1 port=$2 data=$3
case "$port" in ''|*[!0-9]*) usage ;; esac
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DIST="${CONFLUX_KAFKA_DIST:-$ROOT/target/kafka-dist}"
cport="${KAFKA_CONTROLLER_PORT:-$((port + 1))}"
mkdir -p "$data"
data="$(cd "$data" && pwd)"
pidfile="$data/kafka.pid"
out="$data/server.out"

running_pid() {
  local pid
  [ -f "$pidfile" ] || return 1
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null && grep -q 'kafka\.Kafka' "/proc/$pid/cmdline" 2>/dev/null; then
    echo "$pid"
  else
    return 1
  fi
}

case "$cmd" in
start)
  if pid=$(running_pid); then echo "already running: pid $pid" >&2; exit 1; fi
  if [ ! -x "$DIST/bin/kafka-server-start.sh" ]; then "$ROOT/scripts/kafka-dist.sh" "$DIST" >/dev/null; fi
  t0=$(date +%s.%N)
  sed -e "s#^listeners=.*#listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport#" \
      -e "s#^advertised.listeners=.*#advertised.listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport#" \
      -e "s#^controller.quorum.bootstrap.servers=.*#controller.quorum.bootstrap.servers=127.0.0.1:$cport#" \
      -e "s#^log.dirs=.*#log.dirs=$data/kraft-logs#" \
      "$DIST/config/server.properties" >"$data/server.properties"
  if [ ! -f "$data/kraft-logs/meta.properties" ]; then
    cluster_id=$("$DIST/bin/kafka-storage.sh" random-uuid)
    "$DIST/bin/kafka-storage.sh" format --standalone -t "$cluster_id" -c "$data/server.properties" >"$data/format.out" 2>&1 \
      || { cat "$data/format.out" >&2; exit 1; }
  fi
  # kafka-server-start.sh execs kafka-run-class.sh, which execs java: $! is the JVM.
  LOG_DIR="$data/logs" nohup "$DIST/bin/kafka-server-start.sh" "$data/server.properties" >"$out" 2>&1 </dev/null &
  echo $! >"$pidfile"
  deadline=$(( $(date +%s) + ${KAFKA_START_TIMEOUT:-90} ))
  until grep -q 'Kafka Server started' "$out" 2>/dev/null; do
    if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "Apache Kafka exited during start; log tail:" >&2; tail -n 40 "$out" >&2; exit 1
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "Apache Kafka did not start within ${KAFKA_START_TIMEOUT:-90}s; log tail:" >&2
      tail -n 40 "$out" >&2
      kill -KILL "$(cat "$pidfile")" 2>/dev/null || true
      exit 1
    fi
    sleep 0.2
  done
  t1=$(date +%s.%N)
  printf 'Apache Kafka 4.4 up on 127.0.0.1:%s (controller %s), pid %s, %.1fs; log %s\n' \
    "$port" "$cport" "$(cat "$pidfile")" "$(awk "BEGIN{print $t1 - $t0}")" "$out"
  ;;
stop)
  if ! pid=$(running_pid); then echo "not running" >&2; rm -f "$pidfile"; exit 0; fi
  kill -TERM "$pid"
  for _ in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; echo "stopped pid $pid"; exit 0; }
    sleep 0.1
  done
  echo "pid $pid did not exit within 30s of SIGTERM; SIGKILL" >&2
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$pidfile"
  ;;
status)
  if pid=$(running_pid); then echo "running: pid $pid"; else echo "not running"; exit 1; fi
  ;;
*) usage ;;
esac
