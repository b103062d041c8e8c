#!/usr/bin/env bash
# kafka-python's OWN integration tests (test/integration of the kafka-python sdist from
# PyPI) against a Conflux broker that this script starts and stops itself.
#
# Usage:
#   scripts/kafka-python-suite.sh                       # the whole suite
#   scripts/kafka-python-suite.sh -k describe_configs   # extra args go to pytest
#   scripts/kafka-python-suite.sh test/integration/test_admin_integration.py::test_elect_leaders
#     (an argument starting with test/ replaces the default target test/integration)
#
# What it does:
#   1. creates/reuses its own venv (target/kafka-python-suite/venv) with the packages
#      pinned in scripts/lib/kafka-python-suite/requirements.txt (kafka-python 3.0.12,
#      pytest, pytest-mock, pytest-timeout, lz4, python-snappy, zstandard, crc32c);
#      rebuilt when that file or the Python interpreter changes,
#   2. downloads the kafka-python sdist once (`pip download --no-binary :all:`, sha256
#      checked) and extracts it into target/kafka-python-suite/src; the sdist lacks
#      test/__init__.py and test/service.py, which its fixtures import: small stand-ins
#      from scripts/lib/kafka-python-suite/shim/ are copied in (external broker only),
#   3. starts Conflux ($CONFLUX_BIN, default target/release/conflux) on an OS-chosen
#      loopback port with a fresh data dir and 4 partitions per auto-created topic (what
#      the suite's own Kafka fixture configures); stops it with SIGTERM on exit,
#   4. runs `pytest test/integration` in the sdist with KAFKA_URI=kafka://127.0.0.1:PORT,
#      KAFKA_VERSION, and KAFKA_ROOT = an empty folder (the fixture insists it exists);
#      each test bounded by pytest-timeout, the whole run by `timeout`. The SASL tests
#      skip themselves against an external broker; the SSL tests are skipped here (their
#      fixture starts a TLS broker of its own from a Kafka distribution),
#   5. reruns each test that failed without being listed as expected, up to
#      KP_SUITE_RERUNS (4) more times in a fresh pytest process against the same broker
#      (kafka-python 3.0.12 has client-side races); a pass on a rerun counts, reported
#      as flaky with its first failure,
#   6. writes target/kafka-python-suite/run/results.txt (`PASS|FAIL|SKIP <test id>`),
#      reasons.txt (`FAIL|SKIP|FLAKY <test id> :: <reason>`), junit.xml (main run),
#      pytest*.log, conflux.log, versions.txt; exits 1 if a test failed that is not
#      listed in scripts/kafka-python-suite.expected-failures (`<test id>  # reason`
#      per line), 2 on a set-up error, else 0. Listed tests that pass are printed as
#      "now passing, remove from the list" (exit code unchanged).
#
# Environment:
#   CONFLUX_BIN                broker binary (default target/release/conflux; not built here)
#   KAFKA_VERSION              broker version the tests assume (default 4.0.0; auto; see below)
#   KP_SUITE_DIR               venv + sdist + run folder (default target/kafka-python-suite)
#   KP_SUITE_OUT               run folder (default $KP_SUITE_DIR/run; wiped at start)
#   KP_SUITE_EXPECTED          expected-failures file (default scripts/kafka-python-suite.expected-failures)
#   KP_SUITE_TEST_TIMEOUT      seconds per test (default 120)
#   KP_SUITE_RUN_TIMEOUT       seconds for the whole pytest run (default 1800)
#   KP_SUITE_PARTITIONS        --default-partitions of the broker (default 4)
#   KP_SUITE_RERUNS            extra tries for tests that fail unexpectedly (default 4:
#                              the client race in the expected-failures file once failed
#                              one test three times running;
#                              a pass on a rerun counts, reported as flaky)
#   KP_SUITE_SKIP              "substring::reason;;..." tests to report as SKIP without
#                              running (default: the SSL tests)
#   KP_SUITE_CONFLUX_LOG       broker log filter (default info)
#   KEEP_DATA=1                keep the broker's data folder after the run
#
# KAFKA_VERSION (default 4.0.0; `auto` = whatever kafka-python infers from Conflux): the
# tests gate and shape their assertions on it, and every client they create gets
# api_version=KAFKA_VERSION. kafka-python 3 still sends ApiVersions and infers a version
# from the answer (highest row of its probe table whose (api key, version) the broker
# advertises). If the configured version is higher than, or equal to, the inferred one,
# the clients use the broker's real ApiVersions ranges; if it is LOWER, kafka-python
# "clamps to user-supplied" and sends the versions of its built-in table for the
# configured version, whatever the broker advertises. So before the tests the script
# infers the version itself (lib/kafka-python-suite/broker_version.py): inferred >
# KAFKA_VERSION stops the run (exit 2; raise KAFKA_VERSION to the inferred one),
# inferred < KAFKA_VERSION only warns (test_kafka_version_infer then fails).
# Conflux infers as 3.3 once it advertises DescribeAcls v3 (3.0 before: ListOffsets v7);
# nothing in this suite is gated between 3.0 and 3.9, and the 4.0 gates (DescribeQuorum,
# DescribeTopicPartitions, STATIC_BROKER_CONFIG broker configs) stay off below 4.0.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LIB=$ROOT/scripts/lib/kafka-python-suite
SUMMARY=$ROOT/scripts/lib/suite_summary.py
KAFKA_PYTHON_VERSION=3.0.12
SDIST_SHA256=4ccda3616b9aa5c353d74a97f2770d6cd1b950890d77ab0e8890e09a48eeed65
SDIST_NAME=kafka_python-$KAFKA_PYTHON_VERSION

DIR=${KP_SUITE_DIR:-$ROOT/target/kafka-python-suite}
OUT=${KP_SUITE_OUT:-$DIR/run}
EXPECTED=${KP_SUITE_EXPECTED:-$ROOT/scripts/kafka-python-suite.expected-failures}
SUMMARY_ARGS=(--suite "kafka-python suite" --expected "$EXPECTED" --id-prefix test/integration/)
TEST_TIMEOUT=${KP_SUITE_TEST_TIMEOUT:-120}
RUN_TIMEOUT=${KP_SUITE_RUN_TIMEOUT:-1800}
PARTITIONS=${KP_SUITE_PARTITIONS:-4}
export KAFKA_VERSION=${KAFKA_VERSION:-4.0.0}
VENV=$DIR/venv
PY=$VENV/bin/python

note() { printf '[kafka-python-suite] %s\n' "$*" >&2; }
die() { note "error: $*"; exit 2; }

SUDO=()
if [[ $(id -u) -ne 0 ]]; then SUDO=(sudo); fi

# --- 1. venv -------------------------------------------------------------------------
make_venv() {
  mkdir -p "$DIR"
  if [[ ! -x $PY ]]; then
    note "creating $VENV"
    if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
      rm -rf "$VENV"
      note "python3 -m venv failed: apt-get install python3-venv"
      "${SUDO[@]}" apt-get update -qq
      "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      python3 -m venv "$VENV"
    fi
  fi
  local stamp=$VENV/.kp-suite-requirements.sha256 want
  want=$(cat "$LIB/requirements.txt" <("$PY" -VV) | sha256sum | cut -d' ' -f1)
  if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
    note "pip install -r scripts/lib/kafka-python-suite/requirements.txt"
    timeout 900 "$PY" -m pip install -q --disable-pip-version-check --no-input \
      -r "$LIB/requirements.txt" || die "pip install failed"
    echo "$want" > "$stamp"
  fi
}

# --- 2. sdist ------------------------------------------------------------------------
get_sdist() {
  local dl=$DIR/download tarball src_root=$DIR/src
  SRC=$src_root/$SDIST_NAME
  if [[ ! -f $SRC/.kp-suite-extracted ]]; then
    tarball=$dl/$SDIST_NAME.tar.gz
    if [[ ! -f $tarball ]]; then
      note "pip download kafka-python==$KAFKA_PYTHON_VERSION (sdist)"
      mkdir -p "$dl"
      timeout 300 "$PY" -m pip download -q --disable-pip-version-check --no-input \
        --no-binary :all: --no-deps -d "$dl" "kafka-python==$KAFKA_PYTHON_VERSION" \
        || die "pip download failed"
    fi
    [[ $(sha256sum "$tarball" | cut -d' ' -f1) == "$SDIST_SHA256" ]] \
      || { rm -f "$tarball"; die "$tarball: sha256 mismatch (removed; run again)"; }
    rm -rf "$SRC"; mkdir -p "$src_root"
    tar -xzf "$tarball" -C "$src_root"
    [[ -d $SRC/test/integration ]] || die "$tarball has no test/integration"
    touch "$SRC/.kp-suite-extracted"
  fi
  # The sdist's fixtures import test.service and need test/ to be a package (otherwise
  # `test` is the standard library's); copied every run so shim changes take effect.
  cp "$LIB/shim/test/__init__.py" "$SRC/test/__init__.py"
  cp "$LIB/shim/test/service.py" "$SRC/test/service.py"
}

# --- 3. broker -----------------------------------------------------------------------
BROKER_PID=
stop_broker() {
  [[ -n $BROKER_PID ]] || return 0
  if kill -0 "$BROKER_PID" 2>/dev/null; then
    kill -TERM "$BROKER_PID" 2>/dev/null || true
    local i
    for ((i = 0; i < 100; i++)); do
      kill -0 "$BROKER_PID" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$BROKER_PID" 2>/dev/null; then
      note "conflux (pid $BROKER_PID) still running 10 s after SIGTERM; SIGKILL"
      kill -KILL "$BROKER_PID" 2>/dev/null || true
    fi
  fi
  wait "$BROKER_PID" 2>/dev/null || true
  BROKER_PID=
}
cleanup() {
  stop_broker
  if [[ ${KEEP_DATA:-0} != 1 && -n ${OUT:-} ]]; then rm -rf "$OUT/data"; fi
}

start_broker() {
  CONFLUX_BIN=${CONFLUX_BIN:-$ROOT/target/release/conflux}
  [[ -x $CONFLUX_BIN ]] || die "no broker binary at $CONFLUX_BIN (build it: cargo build --release --locked -p conflux, or set CONFLUX_BIN)"
  local log=$OUT/conflux.log line i
  mkdir -p "$OUT/data"
  : > "$log"
  RUST_LOG=${KP_SUITE_CONFLUX_LOG:-info} NO_COLOR=1 "$CONFLUX_BIN" serve \
    --data-dir "$OUT/data" \
    --kafka-listen 127.0.0.1:0 --mqtt-listen 127.0.0.1:0 --mqtt-ws-listen 127.0.0.1:0 \
    --amqp-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
    --default-partitions "$PARTITIONS" \
    > "$log" 2>&1 < /dev/null &
  BROKER_PID=$!
  PORT=
  for ((i = 0; i < 300; i++)); do
    line=$(grep -m1 'listener bound.*protocol=kafka' "$log" || true)
    if [[ -n $line ]]; then
      PORT=$(sed -n 's/.*protocol=kafka addr=[^ ]*:\([0-9][0-9]*\).*/\1/p' <<< "$line")
      break
    fi
    kill -0 "$BROKER_PID" 2>/dev/null || break
    sleep 0.1
  done
  if [[ -z $PORT ]]; then
    tail -20 "$log" >&2 || true
    die "conflux did not report its Kafka listener within 30 s (log: $log)"
  fi
  note "conflux $("$CONFLUX_BIN" --version 2>/dev/null || echo '') pid $BROKER_PID on 127.0.0.1:$PORT (log: $log)"
}

# --- 4. pytest -----------------------------------------------------------------------
command -v python3 >/dev/null || die "python3 is required"
command -v timeout >/dev/null || die "timeout (coreutils) is required"
T0=$SECONDS
make_venv
get_sdist
rm -rf "$OUT"; mkdir -p "$OUT"
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
start_broker

# --- KAFKA_VERSION against what kafka-python infers from Conflux's ApiVersions ------
set +e
probe=$(timeout 60 "$PY" "$LIB/broker_version.py" "127.0.0.1:$PORT" "$KAFKA_VERSION" 2>&1)
prc=$?
set -e
echo "KAFKA_VERSION=$KAFKA_VERSION $probe" > "$OUT/versions.txt"
inferred=$(sed -n 's/.*inferred=\([0-9.]*\).*/\1/p' <<< "$probe")
case $prc in
  0) [[ $KAFKA_VERSION == auto ]] && KAFKA_VERSION=$inferred
     note "kafka-python infers Conflux as $inferred; KAFKA_VERSION=$KAFKA_VERSION" ;;
  3) note "warning: KAFKA_VERSION=$KAFKA_VERSION is above what kafka-python infers from Conflux ($inferred):"
     note "  clients negotiate from Conflux's own ApiVersions, but test_kafka_version_infer will fail" ;;
  4) die "kafka-python infers Conflux as $inferred, above KAFKA_VERSION=$KAFKA_VERSION: its clients would send the
  request versions of their built-in $KAFKA_VERSION table instead of negotiating with Conflux. Set KAFKA_VERSION=$inferred
  (default in scripts/kafka-python-suite.sh) or KAFKA_VERSION=auto" ;;
  *) die "cannot infer the broker version: $probe" ;;
esac

export KAFKA_URI=kafka://127.0.0.1:$PORT
export KAFKA_ROOT=$OUT/no-kafka-distribution
mkdir -p "$KAFKA_ROOT"
KP_SUITE_RAW=$OUT/raw.tsv
export KP_SUITE_SKIP=${KP_SUITE_SKIP-test_ssl_integration.py::the SSL tests start a TLS broker of their own from a Kafka distribution (KafkaFixture transport=SSL); not applicable to an external broker}

targets=(test/integration)
for a in "$@"; do
  if [[ $a == test/* ]]; then targets=(); break; fi
done

# run_pytest RAW LOG TIMEOUT ARGS...: one pytest process in the sdist, bounded by `timeout`
run_pytest() {
  local raw=$1 log=$2 secs=$3; shift 3
  : > "$raw"
  set +e
  (
    cd "$SRC" &&
    KP_SUITE_RAW=$raw PYTHONPATH="$LIB${PYTHONPATH:+:$PYTHONPATH}" \
      timeout -k 30 "$secs" "$PY" -m pytest -p kp_suite_plugin -p no:cacheprovider \
        -o addopts= --timeout="$TEST_TIMEOUT" --timeout-method=signal \
        -q -rN --tb=short "$@"
  ) > "$log" 2>&1
  local rc=$?
  set -e
  return $rc
}

note "pytest ${targets[*]} $* (KAFKA_VERSION=$KAFKA_VERSION, ${TEST_TIMEOUT}s per test, ${RUN_TIMEOUT}s in all; log: $OUT/pytest.log)"
DEADLINE=$((SECONDS + RUN_TIMEOUT))
rc=0
run_pytest "$KP_SUITE_RAW" "$OUT/pytest.log" "$RUN_TIMEOUT" --junitxml="$OUT/junit.xml" "${targets[@]}" "$@" || rc=$?
raws=("$KP_SUITE_RAW")

# Tests that failed without being listed get up to KP_SUITE_RERUNS more tries, each in a
# fresh pytest process against the same broker: kafka-python 3.0.12 has client-side races
# (a consumer's subscription racing its bootstrap Metadata request) that fail a test now
# and then whatever the broker does. A test that passes on a rerun counts as passed and is
# reported as flaky with its first failure.
if [[ $rc != 124 && $rc != 137 ]]; then
  for ((attempt = 1; attempt <= ${KP_SUITE_RERUNS:-4}; attempt++)); do
    "$PY" "$SUMMARY" "${SUMMARY_ARGS[@]}" --unexpected-out "$OUT/rerun-$attempt.ids" "${raws[@]}"
    mapfile -t ids < "$OUT/rerun-$attempt.ids"
    ((${#ids[@]})) || break
    left=$((DEADLINE - SECONDS))
    ((left > 60)) || { note "no time left for reruns"; break; }
    note "rerun $attempt: ${#ids[@]} unexpected failure(s) (log: $OUT/pytest-rerun-$attempt.log)"
    run_pytest "$OUT/raw-rerun-$attempt.tsv" "$OUT/pytest-rerun-$attempt.log" "$left" "${ids[@]}" || true
    raws+=("$OUT/raw-rerun-$attempt.tsv")
  done
fi

if ! kill -0 "$BROKER_PID" 2>/dev/null; then
  note "conflux exited during the run (see $OUT/conflux.log)"
fi
stop_broker

set +e
"$PY" "$SUMMARY" "${SUMMARY_ARGS[@]}" --outdir "$OUT" --rc "$rc" \
  --run-timeout "$RUN_TIMEOUT" "${raws[@]}"
status=$?
set -e
note "pytest exit $rc; $((SECONDS - T0)) s; results: $OUT/results.txt, reasons: $OUT/reasons.txt"
exit "$status"
