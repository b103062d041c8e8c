#!/usr/bin/env bash
# pika's OWN acceptance tests (tests/acceptance of pika/pika, AMQP 0-9-1, 601 tests) against
# a Conflux broker that this script starts and stops itself.
#
# Usage:
#   scripts/pika-suite.sh [--label NAME] [SOURCE] [PYTEST ARG | TEST ID ...]
#     SOURCE  where the suite comes from (or set PIKA_DIR / MIRROR_DIR instead):
#             - a pika source tree (the folder holding pika/ and tests/acceptance/), used
#               as is (copied, never modified);
#             - a bare git mirror of pika/pika (e.g. what the fetch tool leaves in
#               <mirror folder>/pika+pika/repo), or the mirror folder holding it: PIKA_REF
#               is extracted once into $PIKA_SUITE_DIR/src/pika-<commit> (HEAD, with a
#               warning, when the mirror lacks that ref).
#             The PyPI sdist cannot be used: pika-1.4.4.tar.gz ships pika/ only (no tests/;
#             checked 2026-11-30 with `pip download --no-binary :all: --no-deps pika==1.4.4`).
#     --label NAME  run folder target/pika-suite/NAME (default: run)
#     TEST ID  tests/acceptance/blocking_adapter_test.py::TestBasicGet::test (replaces the
#             default target tests/acceptance); anything starting with - goes to pytest
#             as is (e.g. -k 'TestZ_PublishAndGet or TestBasicGet', -x)
#   Examples:
#     MIRROR_DIR=/work/.mirror scripts/pika-suite.sh
#     CONFLUX_BIN=/tmp/conflux scripts/pika-suite.sh --label quick ~/src/pika -k TestBasicGet
#
# What it does:
#   1. creates/reuses a venv ($PIKA_SUITE_VENV, default ~/.cache/conflux/pika-suite-venv)
#      with the packages pinned in scripts/lib/pika-suite/requirements.txt (pytest,
#      pytest-timeout, tornado, gevent, Twisted and their dependencies, from PyPI); rebuilt
#      when that file or the interpreter changes. pika is not installed: the tests import
#      the pika of the tree they come from (its pyproject.toml sets pythonpath = ["."]),
#   2. takes the suite source (above) and copies it to <run folder>/src, where
#      scripts/lib/pika-suite/pika_retarget.py points the tests at Conflux (the suite has
#      no setting for the broker address: 127.0.0.1:5672 is written into the modules),
#   3. starts Conflux ($CONFLUX_BIN, default target/release/conflux) with a fresh data dir
#      and every listener on 127.0.0.1:0; waits for the log line `listener bound
#      protocol=kafka` (the last listener) and reads the AMQP port from `listener bound
#      protocol=amqp addr=...`; stops it with SIGTERM on exit (SIGKILL 10 s later),
#   4. runs `pytest tests/acceptance` in the copy (user guest/guest, vhost "/", plain TCP),
#      each test bounded by pytest-timeout (signal method: a stuck test fails, the run goes
#      on), the whole run by `timeout`; markers `=== pika-suite: <test id> start|end ...`
#      are appended to the broker log around every test,
#   5. reruns each test that failed without being listed as expected (or listed as FLAKY),
#      up to PIKA_SUITE_RERUNS (2) more times in a fresh pytest process against the same
#      broker; a pass on a rerun counts, reported as flaky with its first failure,
#   6. scans the broker log: panics / aborts, or the broker exiting during the run, fail
#      the run (broker-problems.txt); ERROR and WARN lines are listed in log-errors.txt
#      and counted in the summary (they do not change the exit code),
#   7. writes <run folder> (target/pika-suite/<label>, wiped at start): results.txt
#      (`PASS|FAIL|SKIP <test id>`), reasons.txt (`FAIL|SKIP|FLAKY <test id> :: <secs>s;
#      <reason>`), junit.xml (main run), pytest.log (+ pytest-rerun-N.log), conflux.log,
#      log-errors.txt, versions.txt; prints a summary. Exit 1 if a test failed that is not
#      listed in scripts/pika-suite.expected-failures (`<test id>  # reason`; the
#      `tests/acceptance/` prefix may be left off) or the broker panicked, 2 on a set-up
#      error, else 0. Listed tests that pass are printed as "now passing, remove from the
#      list" (exit code unchanged).
#
# Measured 2026-11-30 (2 cores shared with other jobs, Python 3.11.7): the 601 tests take
# 18-32 s against Conflux when all pass (RabbitMQ 3.10.8: 16 s); every async test that
# times out adds 15 s. Creating the venv adds about 12 s (wheels cached by pip).
#
# Environment:
#   CONFLUX_BIN              broker binary (default target/release/conflux; not built here)
#   PIKA_DIR                 a pika source tree (instead of SOURCE)
#   MIRROR_DIR               bare mirror of pika/pika, or a folder holding pika+pika/repo
#                            (used when no SOURCE/PIKA_DIR)
#   PIKA_REF                 ref extracted from a mirror (default 2126d43a76c1..., master
#                            after 1.4.4, the ref of shared/peers' RabbitMQ baseline)
#   PYTHON                   interpreter the venv is made from (default python3; 3.8+)
#   PIKA_SUITE_VENV          venv folder (default ~/.cache/conflux/pika-suite-venv)
#   PIKA_SUITE_DIR           extracted sources + run folders (default target/pika-suite)
#   PIKA_SUITE_EXPECTED      expected-failures file (default scripts/pika-suite.expected-failures)
#   PIKA_SUITE_TEST_TIMEOUT  seconds per test (default 60; the async tests stop themselves
#                            after 15 s, the blocking ones run in a thread with their own limit)
#   PIKA_SUITE_RUN_TIMEOUT   seconds for the main pytest run (default 1800)
#   PIKA_SUITE_RERUNS        extra tries for tests that fail unexpectedly (default 2)
#   PIKA_SUITE_SKIP          "substring::reason;;..." tests to report as SKIP without running
#   PIKA_SUITE_CONFLUX_LOG   RUST_LOG of the broker (default info; e.g. info,conflux_amqp=debug
#                            logs every connection open/close, channel close and refusal)
#   PIKA_SUITE_CONFLUX_ARGS  extra `conflux serve` arguments (word-split)
#   KEEP_DATA=1              keep the broker's data folder after the run
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LIB=$ROOT/scripts/lib/pika-suite
SUMMARY=$ROOT/scripts/lib/suite_summary.py
PIKA_REF=${PIKA_REF:-2126d43a76c14fb8d365d96bd1bdcef13dad75b5}
DIR=${PIKA_SUITE_DIR:-$ROOT/target/pika-suite}
VENV=${PIKA_SUITE_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/conflux/pika-suite-venv}
EXPECTED=${PIKA_SUITE_EXPECTED:-$ROOT/scripts/pika-suite.expected-failures}
SUMMARY_ARGS=(--suite "pika acceptance suite" --expected "$EXPECTED" --id-prefix tests/acceptance/
  --reference "RabbitMQ 3.10.8: 560 passed, 1 failed, 40 skipped")
TEST_TIMEOUT=${PIKA_SUITE_TEST_TIMEOUT:-60}
RUN_TIMEOUT=${PIKA_SUITE_RUN_TIMEOUT:-1800}
RERUNS=${PIKA_SUITE_RERUNS:-2}
BASE_PY=${PYTHON:-python3}
PY=$VENV/bin/python

note() { printf '[pika-suite] %s\n' "$*" >&2; }
die() { note "error: $*"; exit 2; }
usage() { sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

# --- arguments --------------------------------------------------------------------------
LABEL=run
SOURCE=${PIKA_DIR:-}
PYTEST_ARGS=()
TARGETS=()
while (($#)); do
  case $1 in
    -h|--help) usage; exit 0 ;;
    --label) LABEL=${2:?--label needs a name}; shift ;;
    --label=*) LABEL=${1#--label=} ;;
    tests/*) TARGETS+=("$1") ;;
    -*) PYTEST_ARGS+=("$1")
        # options that take a value as the next word
        case $1 in -k|-m|-p|-o|-W|--deselect|--ignore|--log-level) [[ $# -ge 2 ]] && { PYTEST_ARGS+=("$2"); shift; } ;; esac ;;
    *) [[ -z ${PIKA_DIR:-} && -e $1 ]] || die "unknown argument '$1' (a source folder, a tests/... id or a pytest option)"
       SOURCE=$1 ;;
  esac
  shift
done
[[ $LABEL =~ ^[A-Za-z0-9._-]+$ ]] || die "--label: letters, digits, . _ - only"
((${#TARGETS[@]})) || TARGETS=(tests/acceptance)
[[ -n $SOURCE ]] || SOURCE=${MIRROR_DIR:-}
[[ -n $SOURCE ]] || die "no suite source: pass a pika tree or mirror, or set PIKA_DIR or MIRROR_DIR (pika's PyPI sdist has no tests)"
[[ $TEST_TIMEOUT =~ ^[0-9]+$ && $RUN_TIMEOUT =~ ^[0-9]+$ && $RERUNS =~ ^[0-9]+$ ]] \
  || die "PIKA_SUITE_TEST_TIMEOUT, PIKA_SUITE_RUN_TIMEOUT and PIKA_SUITE_RERUNS must be numbers"
command -v timeout >/dev/null || die "timeout (coreutils) is required"
command -v "$BASE_PY" >/dev/null || die "$BASE_PY not found (set PYTHON)"
"$BASE_PY" -c 'import sys; sys.exit(sys.version_info < (3, 8))' || die "$BASE_PY is older than 3.8"
CONFLUX_BIN=${CONFLUX_BIN:-$ROOT/target/release/conflux}
[[ -x $CONFLUX_BIN ]] || die "no broker binary at $CONFLUX_BIN (build it: cargo build --release --locked -p conflux, or set CONFLUX_BIN)"

T0=$SECONDS

# --- 1. venv ----------------------------------------------------------------------------
make_venv() {
  if [[ ! -x $PY ]]; then
    note "creating $VENV"
    mkdir -p "$(dirname "$VENV")"
    if ! "$BASE_PY" -m venv "$VENV" >/dev/null 2>&1; then
      rm -rf "$VENV"
      command -v apt-get >/dev/null || die "$BASE_PY -m venv failed (install python3-venv)"
      note "$BASE_PY -m venv failed: apt-get install python3-venv"
      local sudo=(); [[ $(id -u) -ne 0 ]] && sudo=(sudo)
      "${sudo[@]}" apt-get update -qq && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq python3-venv >/dev/null || die "apt-get install python3-venv failed"
      "$BASE_PY" -m venv "$VENV" || die "$BASE_PY -m venv $VENV failed"
    fi
  fi
  local stamp=$VENV/.pika-suite-requirements.sha256 want
  want=$(cat "$LIB/requirements.txt" <("$PY" -VV) | sha256sum | cut -d' ' -f1)
  if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
    note "pip install -r scripts/lib/pika-suite/requirements.txt into $VENV"
    timeout 900 "$PY" -m pip install -q --disable-pip-version-check --no-input \
      -r "$LIB/requirements.txt" || die "pip install failed"
    echo "$want" > "$stamp"
  fi
}

# --- 2. suite source --------------------------------------------------------------------
is_git_dir() { git --git-dir="$1" rev-parse --git-dir >/dev/null 2>&1; }
get_source() {
  ORIGIN=
  if [[ -f $SOURCE/tests/acceptance/blocking_adapter_test.py && -f $SOURCE/pika/__init__.py ]]; then
    SRC=$(cd "$SOURCE" && pwd)
    ORIGIN="tree $SRC"
    if git -C "$SRC" rev-parse HEAD >/dev/null 2>&1; then ORIGIN+=" (git $(git -C "$SRC" rev-parse HEAD))"; fi
    return
  fi
  local mirror= c ref commit
  for c in "$SOURCE" "$SOURCE/repo" "$SOURCE/pika+pika/repo" "$SOURCE/pika+pika"; do
    if [[ -d $c ]] && is_git_dir "$c"; then mirror=$(cd "$c" && pwd); break; fi
  done
  [[ -n $mirror ]] || die "$SOURCE is neither a pika tree (pika/ + tests/acceptance/) nor a git mirror of pika/pika"
  command -v git >/dev/null || die "git is required to read the mirror $mirror"
  ref=$PIKA_REF
  if ! commit=$(git --git-dir="$mirror" rev-parse -q --verify "$ref^{commit}" 2>/dev/null); then
    note "warning: mirror $mirror has no ref $ref; using HEAD"
    commit=$(git --git-dir="$mirror" rev-parse -q --verify "HEAD^{commit}") || die "mirror $mirror has no HEAD"
  fi
  SRC=$DIR/src/pika-$commit
  if [[ ! -f $SRC/.pika-suite-extracted ]]; then
    note "extracting pika $commit from $mirror"
    rm -rf "$SRC"; mkdir -p "$SRC"
    git --git-dir="$mirror" archive "$commit" | tar -x -C "$SRC" || die "git archive failed"
    touch "$SRC/.pika-suite-extracted"
  fi
  ORIGIN="mirror $mirror commit $commit"
}

# --- 3. broker --------------------------------------------------------------------------
BROKER_PID=
BROKER_DIED=
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
PYTEST_PID=
cleanup() {
  if [[ -n $PYTEST_PID ]]; then   # pytest still running: `timeout` passes the TERM on
    kill -TERM "$PYTEST_PID" 2>/dev/null || true
    wait "$PYTEST_PID" 2>/dev/null || true
  fi
  stop_broker
  if [[ ${KEEP_DATA:-0} != 1 && -n ${OUT:-} ]]; then rm -rf "$OUT/data"; fi
}

start_broker() {
  local log=$OUT/conflux.log line i extra=()
  # shellcheck disable=SC2206
  [[ -n ${PIKA_SUITE_CONFLUX_ARGS:-} ]] && extra=($PIKA_SUITE_CONFLUX_ARGS)
  mkdir -p "$OUT/data"
  : > "$log"
  # >> (O_APPEND): the pytest plugin appends per-test markers to the same file
  RUST_LOG=${PIKA_SUITE_CONFLUX_LOG:-info} NO_COLOR=1 "$CONFLUX_BIN" serve \
    --data-dir "$OUT/data" \
    --kafka-listen 127.0.0.1:0 --mqtt-listen 127.0.0.1:0 --mqtt-ws-listen 127.0.0.1:0 \
    --amqp-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
    "${extra[@]}" >> "$log" 2>&1 < /dev/null &
  BROKER_PID=$!
  PORT=
  for ((i = 0; i < 300; i++)); do
    # the Kafka listener is bound last: once it is reported, every listener is ready
    if grep -q 'listener bound.*protocol=kafka' "$log"; then
      line=$(grep -m1 'listener bound.*protocol=amqp addr=' "$log" || true)
      PORT=$(sed -n 's/.*protocol=amqp addr=[^ ]*:\([0-9][0-9]*\).*/\1/p' <<< "$line")
      break
    fi
    kill -0 "$BROKER_PID" 2>/dev/null || break
    sleep 0.1
  done
  if [[ -z $PORT ]]; then
    tail -20 "$log" >&2 || true
    die "conflux did not report its AMQP listener within 30 s (log: $log)"
  fi
  note "conflux $("$CONFLUX_BIN" --version 2>/dev/null || echo '?') pid $BROKER_PID, AMQP on 127.0.0.1:$PORT (log: $log)"
}

# --- 4. pytest --------------------------------------------------------------------------
# run_pytest RAW LOG SECS ARGS...: one pytest process in the retargeted copy
run_pytest() {
  local raw=$1 log=$2 secs=$3 rc; shift 3
  : > "$raw"
  (
    cd "$OUT/src" &&
    PIKA_SUITE_RAW=$raw PIKA_SUITE_MARK=$OUT/conflux.log PIKA_SUITE_SKIP=${PIKA_SUITE_SKIP:-} \
    PYTHONPATH="$LIB${PYTHONPATH:+:$PYTHONPATH}" PYTHONDONTWRITEBYTECODE=1 \
      exec timeout -k 30 "$secs" "$PY" -m pytest -p pika_suite_plugin -p no:cacheprovider \
        -o addopts= --timeout="$TEST_TIMEOUT" --timeout-method=signal -q -rN --tb=native "$@"
  ) > "$log" 2>&1 < /dev/null &
  PYTEST_PID=$!
  wait "$PYTEST_PID"
  rc=$?
  PYTEST_PID=
  return $rc
}

# --- 6. broker log ----------------------------------------------------------------------
check_broker_log() {
  local log=$OUT/conflux.log
  grep -n -E "panicked at|fatal runtime error|stack overflow|SIGABRT|RUST_BACKTRACE" "$log" > "$OUT/broker-problems.txt" || true
  if [[ -n $BROKER_DIED ]]; then echo "conflux exited during the run: $BROKER_DIED" >> "$OUT/broker-problems.txt"; fi
  grep -n -E '^[^ ]+ +(ERROR|WARN) ' "$log" > "$OUT/log-errors.txt" || true
  BROKER_PROBLEMS=$(grep -c . "$OUT/broker-problems.txt")
  LOG_ERRORS=$(grep -c ' ERROR ' "$OUT/log-errors.txt")
  LOG_WARNS=$(grep -c ' WARN ' "$OUT/log-errors.txt")
}

make_venv
get_source
OUT=$DIR/$LABEL
rm -rf "$OUT"; mkdir -p "$OUT"
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
mkdir -p "$OUT/src"
cp -a "$SRC/." "$OUT/src/" || die "cannot copy $SRC"
rm -f "$OUT/src/.pika-suite-extracted"
[[ -d $OUT/src/tests/acceptance ]] || die "$SRC has no tests/acceptance"
start_broker
"$PY" "$LIB/pika_retarget.py" "$OUT/src/tests" 127.0.0.1 "$PORT" > "$OUT/retarget.txt" 2>&1 \
  || { cat "$OUT/retarget.txt" >&2; die "pika_retarget.py found nothing to retarget in $OUT/src/tests"; }
{
  echo "suite    pika tests/acceptance, $ORIGIN"
  echo "pika     the suite tree's own pika package (its version string: $(cd "$OUT/src" && "$PY" -c 'import pika; print(pika.__version__)' 2>/dev/null || echo '?'))"
  echo "python   $("$PY" -VV 2>&1 | head -1)"
  echo "venv     $VENV: $("$PY" -m pip freeze --disable-pip-version-check 2>/dev/null | tr '\n' ' ')"
  echo "conflux  $CONFLUX_BIN ($("$CONFLUX_BIN" --version 2>/dev/null || echo '?'); sha256 $(sha256sum "$CONFLUX_BIN" | cut -d' ' -f1))"
  echo "date     $(date -u +%Y-%m-%dT%H:%M:%SZ)"
} > "$OUT/versions.txt"

note "pytest ${TARGETS[*]}${PYTEST_ARGS[*]:+ ${PYTEST_ARGS[*]}} (${TEST_TIMEOUT}s per test, ${RUN_TIMEOUT}s in all; log: $OUT/pytest.log); suite: $ORIGIN"
T_RUN=$SECONDS
rc=0
run_pytest "$OUT/raw.tsv" "$OUT/pytest.log" "$RUN_TIMEOUT" --junitxml="$OUT/junit.xml" \
  "${PYTEST_ARGS[@]}" "${TARGETS[@]}" || rc=$?
note "main run: pytest exit $rc after $((SECONDS - T_RUN)) s ($(tail -1 "$OUT/pytest.log" | sed 's/=//g; s/^ *//'))"
raws=("$OUT/raw.tsv")
kill -0 "$BROKER_PID" 2>/dev/null || BROKER_DIED="before the end of the main run"

# --- 5. reruns --------------------------------------------------------------------------
if [[ $rc != 124 && $rc != 137 && -z $BROKER_DIED ]]; then
  for ((attempt = 1; attempt <= RERUNS; attempt++)); do
    "$PY" "$SUMMARY" "${SUMMARY_ARGS[@]}" --unexpected-out "$OUT/rerun-$attempt.ids" "${raws[@]}"
    mapfile -t ids < "$OUT/rerun-$attempt.ids"
    ((${#ids[@]})) || break
    note "rerun $attempt: ${#ids[@]} test(s) (log: $OUT/pytest-rerun-$attempt.log): ${ids[*]}"
    run_pytest "$OUT/raw-rerun-$attempt.tsv" "$OUT/pytest-rerun-$attempt.log" "$RUN_TIMEOUT" "${ids[@]}" || true
    raws+=("$OUT/raw-rerun-$attempt.tsv")
    kill -0 "$BROKER_PID" 2>/dev/null || { BROKER_DIED="during rerun $attempt"; break; }
  done
fi

stop_broker
check_broker_log
partial=()
[[ ${TARGETS[*]} == tests/acceptance && ${#PYTEST_ARGS[@]} == 0 ]] || partial=(--partial)
"$PY" "$SUMMARY" "${SUMMARY_ARGS[@]}" --outdir "$OUT" --rc "$rc" "${partial[@]}" \
  --run-timeout "$RUN_TIMEOUT" --broker-problems "$BROKER_PROBLEMS" "${raws[@]}"
status=$?
note "broker log: $LOG_ERRORS ERROR, $LOG_WARNS WARN line(s) (log-errors.txt), $BROKER_PROBLEMS panic/exit problem(s)"
if ((LOG_ERRORS + LOG_WARNS)); then
  sed 's/^\([0-9]*\):[^ ]* */  conflux.log:\1 /' "$OUT/log-errors.txt" | cut -c1-220 | head -10 >&2
fi
note "$((SECONDS - T0)) s in all; results: $OUT/results.txt, reasons: $OUT/reasons.txt, broker log: $OUT/conflux.log"
exit "$status"
