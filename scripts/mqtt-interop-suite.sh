#!/usr/bin/env bash
# Eclipse paho.mqtt.testing's interoperability client tests (client_test.py, MQTT 3.1.1,
# names "v311.<test>"; client_test5.py, MQTT 5.0, names "v5.<test>"; 37 tests) against a
# Conflux broker that this script starts and stops itself.
#
# Usage:
#   scripts/mqtt-interop-suite.sh [SOURCE] [TEST ...]
#     SOURCE  where the suite comes from (or set PAHO_TESTING_DIR / MIRROR_DIR instead):
#             - a paho.mqtt.testing tree (the folder holding interoperability/), used as is;
#             - a bare git mirror of eclipse/paho.mqtt.testing (e.g. what the fetch tool
#               leaves in <mirror folder>/eclipse+paho.mqtt.testing/repo), or the mirror
#               folder holding it: PAHO_TESTING_REF is extracted once into
#               $MQTT_INTEROP_DIR/src/paho.mqtt.testing-<ref> (HEAD, with a warning, when
#               the mirror lacks that ref).
#     TEST    run only these (v5.test_will_delay, v311.test_keepalive, or a bare
#             test_name for every version that has it); default: all 37.
#   Examples:
#     MIRROR_DIR=/work/.mirror scripts/mqtt-interop-suite.sh
#     PAHO_TESTING_DIR=~/src/paho.mqtt.testing scripts/mqtt-interop-suite.sh v5.test_will_delay
#
# What it does:
#   1. takes the suite source (above); no network access: the suite needs only the Python 3
#      standard library (run with $PYTHON, default python3; no venv),
#   2. starts Conflux ($CONFLUX_BIN, default target/release/conflux) with a fresh data
#      dir, every listener on 127.0.0.1:0, and the two settings the suite assumes of a
#      broker: `--mqtt-deny-subscribe test/nosubscribe` (test_subscribe_failure expects
#      SUBACK 0x80 for it) and `--mqtt-max-keepalive 60` (v5 test_server_keep_alive
#      connects with 120 s and expects Server Keep Alive 60); reads the MQTT port from the
#      log line `listener bound protocol=mqtt addr=...` (waits up to 30 s); stops Conflux
#      with SIGTERM on exit (SIGKILL 10 s later if it is still running),
#   3. runs each test in its own Python process (lib/mqtt-interop/paho_one.py: imports
#      the suite module, sets the globals its __main__ would, runs one Test.<name>) under
#      `timeout $MQTT_INTEROP_TEST_TIMEOUT` (60 s), so one hang costs one test. All tests
#      share the broker, as in a normal run of the suite (each test process starts with the
#      suite's own cleanup: clean sessions for its client ids, retained messages deleted),
#   4. reruns each test that failed without being listed (or listed as FLAKY), up to
#      MQTT_INTEROP_RERUNS (1) more times; a pass on a rerun counts, reported as flaky,
#   5. writes $MQTT_INTEROP_OUT (default target/mqtt-interop-suite/run, wiped at start):
#      results.txt (`PASS|FAIL|SKIP <test>`), reasons.txt (`FAIL|FLAKY <test> :: <secs>s;
#      <reason>`, reason from lib/mqtt-interop/paho_reason.py), logs/<test>.log (the test's
#      output; reruns in logs/<test>.rerun-N.log), conflux.log (with per-test markers
#      `=== mqtt-interop: <test> ...` appended between tests), versions.txt; prints a
#      summary. Exit 1 if a test failed that is not listed in
#      scripts/mqtt-interop-suite.expected-failures (`v5.test_x  # reason`), 2 on a
#      set-up error, else 0. Listed tests that pass are printed as "now passing".
#
# Environment:
#   CONFLUX_BIN                 broker binary (default target/release/conflux; not built here)
#   PAHO_TESTING_DIR            suite tree (the folder holding interoperability/)
#   MIRROR_DIR                  bare mirror of eclipse/paho.mqtt.testing, or a folder holding
#                               eclipse+paho.mqtt.testing/repo (used when no SOURCE/PAHO_TESTING_DIR)
#   PAHO_TESTING_REF            ref extracted from a mirror (default 9d7bb80bb8b9..., master
#                               2024-01-18; the repo has no tags)
#   PYTHON                      interpreter (default python3; 3.8+)
#   MQTT_INTEROP_DIR            work folder (default target/mqtt-interop-suite)
#   MQTT_INTEROP_OUT            run folder (default $MQTT_INTEROP_DIR/run; wiped at start)
#   MQTT_INTEROP_EXPECTED       expected-failures file (default scripts/mqtt-interop-suite.expected-failures)
#   MQTT_INTEROP_VERSIONS       "v311 v5" (default both)
#   MQTT_INTEROP_TEST_TIMEOUT   seconds per test process (default 60)
#   MQTT_INTEROP_RERUNS         extra tries for unexpected or FLAKY failures (default 1)
#   MQTT_INTEROP_CONFLUX_LOG    RUST_LOG of the broker (default info; e.g. info,conflux_mqtt=debug)
#   MQTT_INTEROP_CONFLUX_ARGS   extra `conflux serve` arguments (word-split)
#   PAHO_LOG_LEVEL              the suite client's log level (default ERROR; DEBUG logs every
#                               packet it sends and receives, with times, into logs/<test>.log)
#   KEEP_DATA=1                 keep the broker's data folder after the run
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LIB=$ROOT/scripts/lib/mqtt-interop
SUMMARY=$ROOT/scripts/lib/suite_summary.py
PAHO_TESTING_REF=${PAHO_TESTING_REF:-9d7bb80bb8b9d9cfc0b52f8cb4c1916401281103}
DIR=${MQTT_INTEROP_DIR:-$ROOT/target/mqtt-interop-suite}
OUT=${MQTT_INTEROP_OUT:-$DIR/run}
EXPECTED=${MQTT_INTEROP_EXPECTED:-$ROOT/scripts/mqtt-interop-suite.expected-failures}
SUMMARY_ARGS=(--suite "paho.mqtt.testing on Conflux" --expected "$EXPECTED")
PER_TEST=${MQTT_INTEROP_TEST_TIMEOUT:-60}
RERUNS=${MQTT_INTEROP_RERUNS:-1}
PY=${PYTHON:-python3}

note() { printf '[mqtt-interop] %s\n' "$*" >&2; }
die() { note "error: $*"; exit 2; }

case ${1:-} in
  -h|--help) sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
esac
command -v "$PY" >/dev/null || die "$PY not found (set PYTHON)"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 8))' || die "$PY is older than 3.8"
command -v timeout >/dev/null || die "timeout (coreutils) is required"

CONFLUX_BIN=${CONFLUX_BIN:-$ROOT/target/release/conflux}
[[ -x $CONFLUX_BIN ]] || die "no broker binary at $CONFLUX_BIN (build it: cargo build --release --locked -p conflux, or set CONFLUX_BIN)"

# --- arguments ------------------------------------------------------------------------
SOURCE=${PAHO_TESTING_DIR:-}
SELECT=()
for a in "$@"; do
  case $a in
    v311.*|v5.*|test*) SELECT+=("$a") ;;
    *) [[ -z ${PAHO_TESTING_DIR:-} && -e $a ]] || die "unknown argument '$a' (a source folder or a test name)"
       SOURCE=$a ;;
  esac
done
[[ -n $SOURCE ]] || SOURCE=${MIRROR_DIR:-}
[[ -n $SOURCE ]] || die "no suite source: pass a paho.mqtt.testing tree or mirror, or set PAHO_TESTING_DIR or MIRROR_DIR"

# --- 1. suite source --------------------------------------------------------------------
is_git_dir() { git --git-dir="$1" rev-parse --git-dir >/dev/null 2>&1; }
ORIGIN=
if [[ -f $SOURCE/interoperability/client_test5.py ]]; then
  SRC=$(cd "$SOURCE" && pwd)
  ORIGIN="tree $SRC"
  if git -C "$SRC" rev-parse HEAD >/dev/null 2>&1; then ORIGIN+=" (git $(git -C "$SRC" rev-parse HEAD))"; fi
else
  mirror=
  for c in "$SOURCE" "$SOURCE/repo" "$SOURCE/eclipse+paho.mqtt.testing/repo" "$SOURCE/eclipse+paho.mqtt.testing"; do
    if [[ -d $c ]] && is_git_dir "$c"; then mirror=$(cd "$c" && pwd); break; fi
  done
  [[ -n $mirror ]] || die "$SOURCE is neither a paho.mqtt.testing tree (interoperability/client_test5.py) nor a git mirror of it"
  command -v git >/dev/null || die "git is required to read the mirror $mirror"
  ref=$PAHO_TESTING_REF
  if ! commit=$(git --git-dir="$mirror" rev-parse -q --verify "$ref^{commit}" 2>/dev/null); then
    note "warning: mirror $mirror has no ref $ref; using HEAD"
    commit=$(git --git-dir="$mirror" rev-parse -q --verify "HEAD^{commit}") || die "mirror $mirror has no HEAD"
  fi
  SRC=$DIR/src/paho.mqtt.testing-$commit
  if [[ ! -f $SRC/.mqtt-interop-extracted ]]; then
    note "extracting paho.mqtt.testing $commit from $mirror"
    rm -rf "$SRC"; mkdir -p "$SRC"
    git --git-dir="$mirror" archive "$commit" | tar -x -C "$SRC" || die "git archive failed"
    touch "$SRC/.mqtt-interop-extracted"
  fi
  ORIGIN="mirror $mirror commit $commit"
fi
INTEROP=$SRC/interoperability
[[ -f $INTEROP/client_test.py && -f $INTEROP/client_test5.py ]] || die "$INTEROP lacks client_test.py / client_test5.py"

# --- test list --------------------------------------------------------------------------
declare -a TESTS=()   # "v311.test_x" ...
for v in ${MQTT_INTEROP_VERSIONS:-v311 v5}; do
  case $v in v311) mod=client_test ;; v5) mod=client_test5 ;; *) die "MQTT_INTEROP_VERSIONS: v311 and/or v5" ;; esac
  names=$(cd "$INTEROP" && "$PY" "$LIB/paho_one.py" "$INTEROP" "$mod" --list) || die "cannot list the tests of $INTEROP/$mod.py"
  for t in $names; do
    if ((${#SELECT[@]})); then
      keep=
      for s in "${SELECT[@]}"; do [[ $s == "$v.$t" || $s == "$t" ]] && keep=1; done
      [[ -n $keep ]] || continue
    fi
    TESTS+=("$v.$t")
  done
done
((${#TESTS[@]})) || die "no test matches: ${SELECT[*]:-} (versions ${MQTT_INTEROP_VERSIONS:-v311 v5})"

# --- 2. broker --------------------------------------------------------------------------
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
TEST_PID=
cleanup() {
  if [[ -n $TEST_PID ]]; then   # a test process still running: `timeout` passes the TERM on
    kill -TERM "$TEST_PID" 2>/dev/null || true
    wait "$TEST_PID" 2>/dev/null || true
  fi
  stop_broker
  if [[ ${KEEP_DATA:-0} != 1 && -n ${OUT:-} ]]; then rm -rf "$OUT/data"; fi
}

start_broker() {
  local log=$OUT/conflux.log line i extra=()
  # shellcheck disable=SC2206
  [[ -n ${MQTT_INTEROP_CONFLUX_ARGS:-} ]] && extra=($MQTT_INTEROP_CONFLUX_ARGS)
  mkdir -p "$OUT/data"
  : > "$log"
  RUST_LOG=${MQTT_INTEROP_CONFLUX_LOG:-info} NO_COLOR=1 "$CONFLUX_BIN" serve \
    --data-dir "$OUT/data" \
    --kafka-listen 127.0.0.1:0 --mqtt-listen 127.0.0.1:0 --mqtt-ws-listen 127.0.0.1:0 \
    --amqp-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
    --mqtt-deny-subscribe test/nosubscribe --mqtt-max-keepalive 60 \
    "${extra[@]}" >> "$log" 2>&1 < /dev/null &
  BROKER_PID=$!
  PORT=
  for ((i = 0; i < 300; i++)); do
    line=$(grep -m1 'listener bound.*protocol=mqtt addr=' "$log" || true)
    if [[ -n $line ]]; then
      PORT=$(sed -n 's/.*protocol=mqtt addr=[^ ]*:\([0-9][0-9]*\).*/\1/p' <<< "$line")
      [[ -n $PORT ]] && break
    fi
    kill -0 "$BROKER_PID" 2>/dev/null || break
    sleep 0.1
  done
  if [[ -z $PORT ]]; then
    tail -20 "$log" >&2 || true
    die "conflux did not report its MQTT listener within 30 s (log: $log)"
  fi
  note "conflux $("$CONFLUX_BIN" --version 2>/dev/null || echo '?') pid $BROKER_PID, MQTT on 127.0.0.1:$PORT (log: $log)"
}

# --- 3. tests ---------------------------------------------------------------------------
# run_one TEST LOG RAW: one test process; appends OUTCOME<TAB>test<TAB>secs<TAB>reason to RAW
run_one() {
  local test=$1 log=$2 raw=$3 v=${1%%.*} name=${1#*.} mod rc r t0=$SECONDS reason=
  case $v in v311) mod=client_test ;; v5) mod=client_test5 ;; esac
  if ! kill -0 "$BROKER_PID" 2>/dev/null; then
    echo "[mqtt-interop] conflux is not running (exited during the run; see conflux.log)" > "$log"
    printf 'FAIL\t%s\t0\t%s\n' "$test" "conflux is not running (exited during the run)" >> "$raw"
    note "FAIL $test (conflux not running)"
    return
  fi
  printf '=== mqtt-interop: %s start %s\n' "$test" "$(date -u +%H:%M:%S.%3N)" >> "$OUT/conflux.log"
  # in the background + wait, so that a signal to this script is handled at once (bash runs
  # traps only after a foreground child ends); cleanup() stops TEST_PID
  (cd "$INTEROP" && exec timeout -k 5 "$PER_TEST" "$PY" -u "$LIB/paho_one.py" "$INTEROP" "$mod" 127.0.0.1 "$PORT" "$name") \
    > "$log" 2>&1 < /dev/null &
  TEST_PID=$!
  wait "$TEST_PID"
  rc=$?
  TEST_PID=
  printf '=== mqtt-interop: %s end %s rc=%s\n' "$test" "$(date -u +%H:%M:%S.%3N)" "$rc" >> "$OUT/conflux.log"
  case $rc in
    0) r=PASS ;;
    3) r=SKIP ;;
    # on a line of its own: unittest leaves "test_x (...) ... " unterminated while it runs
    124|137) r=FAIL; printf '\n[mqtt-interop] timed out after %ss\n' "$PER_TEST" >> "$log" ;;
    *) r=FAIL ;;
  esac
  if [[ $r != PASS ]]; then
    reason=$("$PY" "$LIB/paho_reason.py" "$log" 2>&1 | head -1 | tr '\t' ' ')
  fi
  printf '%s\t%s\t%s\t%s\n' "$r" "$test" "$((SECONDS - t0))" "$reason" >> "$raw"
  note "$r $test ($((SECONDS - t0)) s)${reason:+ :: ${reason:0:160}}"
}

T0=$SECONDS
rm -rf "$OUT"; mkdir -p "$OUT/logs"
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
start_broker
{
  echo "suite   paho.mqtt.testing, $ORIGIN"
  echo "python  $("$PY" -VV 2>&1 | head -1)"
  echo "conflux $CONFLUX_BIN ($("$CONFLUX_BIN" --version 2>/dev/null || echo '?'); sha256 $(sha256sum "$CONFLUX_BIN" | cut -d' ' -f1))"
  echo "date    $(date -u +%Y-%m-%dT%H:%M:%SZ)"
} > "$OUT/versions.txt"
note "${#TESTS[@]} tests, ${PER_TEST}s each at most; suite: $ORIGIN"

RAW=$OUT/raw.tsv; : > "$RAW"
for t in "${TESTS[@]}"; do run_one "$t" "$OUT/logs/$t.log" "$RAW"; done
raws=("$RAW")

for ((attempt = 1; attempt <= RERUNS; attempt++)); do
  "$PY" "$SUMMARY" "${SUMMARY_ARGS[@]}" --unexpected-out "$OUT/rerun-$attempt.txt" "${raws[@]}"
  mapfile -t again < "$OUT/rerun-$attempt.txt"
  ((${#again[@]})) || break
  note "rerun $attempt: ${again[*]}"
  : > "$OUT/raw-rerun-$attempt.tsv"
  for t in "${again[@]}"; do run_one "$t" "$OUT/logs/$t.rerun-$attempt.log" "$OUT/raw-rerun-$attempt.tsv"; done
  raws+=("$OUT/raw-rerun-$attempt.tsv")
done

kill -0 "$BROKER_PID" 2>/dev/null || note "conflux exited during the run (see $OUT/conflux.log)"
stop_broker
partial=()
((${#SELECT[@]})) && partial=(--partial)
"$PY" "$SUMMARY" "${SUMMARY_ARGS[@]}" --outdir "$OUT" "${partial[@]}" "${raws[@]}"
status=$?
note "$((SECONDS - T0)) s; results: $OUT/results.txt, reasons: $OUT/reasons.txt, logs: $OUT/logs, broker log: $OUT/conflux.log"
exit "$status"
