#!/usr/bin/env bash
# The one command that runs every test of Conflux on a fresh Debian machine:
#   formatting, clippy, Rust unit tests, the release build, the end-to-end suite
#   (tests/e2e) that drives the real binary with kafka-python 3 (and a 2.x smoke run),
#   confluent-kafka, aiokafka, kcat, Apache Kafka's Java client and command-line tools,
#   paho-mqtt, the mosquitto clients, Eclipse Paho Java, pika, aio-pika and RabbitMQ's Java
#   client, then the clients' own suites that come from the package registries:
#   kafka-python's integration tests and a subset of librdkafka's test-runner
#   (scripts/kafka-python-suite.sh, scripts/librdkafka-suite.sh). paho.mqtt.testing and
#   pika's acceptance tests are not on a registry: scripts/mqtt-interop-suite.sh and
#   scripts/pika-suite.sh run them from a source tree or mirror.
#
# Usage: scripts/test.sh [extra pytest args]      e.g. scripts/test.sh -k kcat
# Env:   CONFLUX_E2E_ONLY=1  skip fmt/clippy/cargo test (still builds the binary)
#        CONFLUX_BIN=path    test this binary instead of building target/release/conflux
#        CONFLUX_SKIP_SUITES=1  skip the clients' own suites (kafka-python, librdkafka)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*"; }

SUDO=()
if [ "$(id -u)" -ne 0 ]; then SUDO=(sudo); fi
export DEBIAN_FRONTEND=noninteractive

apt_install() {
  step "apt-get install $*"
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# --- system tools -------------------------------------------------------------
need=()
command -v kcat >/dev/null 2>&1 || need+=(kcat)
command -v mosquitto_pub >/dev/null 2>&1 || need+=(mosquitto-clients)
if [ "${#need[@]}" -ne 0 ]; then
  apt_install "${need[@]}"
fi

# --- Python environment for the e2e suite -----------------------------------
VENV=.venv
if [ ! -x "$VENV/bin/python" ]; then
  step "creating $VENV"
  if ! python3 -m venv "$VENV"; then
    rm -rf "$VENV"
    apt_install python3-venv
    python3 -m venv "$VENV"
  fi
fi
stamp="$VENV/.requirements.sha256"
want="$(cat tests/requirements.txt <("$VENV/bin/python" -VV) | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  step "pip install -r tests/requirements.txt"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-input -r tests/requirements.txt
  echo "$want" >"$stamp"
fi

# --- kafka-python 2.x for tests/e2e/test_kafka_python2_smoke.py -------------------
KP2_VENV=.venv-kp2
if [ ! -x "$KP2_VENV/bin/python" ]; then
  step "creating $KP2_VENV"
  if ! python3 -m venv "$KP2_VENV"; then
    rm -rf "$KP2_VENV"
    apt_install python3-venv
    python3 -m venv "$KP2_VENV"
  fi
fi
kp2_stamp="$KP2_VENV/.requirements.sha256"
kp2_want="$(cat tests/requirements-kp2.txt <("$KP2_VENV/bin/python" -VV) | sha256sum | cut -d' ' -f1)"
if [ ! -f "$kp2_stamp" ] || [ "$(cat "$kp2_stamp")" != "$kp2_want" ]; then
  step "pip install -r tests/requirements-kp2.txt (into $KP2_VENV)"
  "$KP2_VENV/bin/python" -m pip install -q --disable-pip-version-check --no-input -r tests/requirements-kp2.txt
  echo "$kp2_want" >"$kp2_stamp"
fi
export CONFLUX_KP2_PYTHON="$PWD/$KP2_VENV/bin/python"

# --- Java: Apache Kafka's client and tools (Maven Central jars) -------------------
step "tests/jvm/build.sh (Java 17 + Maven: kafka-clients 4.4 scenarios, Kafka 4.4 tools)"
if jvm_env="$(tests/jvm/build.sh)"; then
  while IFS= read -r line; do export "${line?}"; done <<<"$jvm_env"
else
  failed_jvm=1
fi

# --- Rust ------------------------------------------------------------------------
failed=()
if [ "${failed_jvm:-0}" = "1" ]; then failed+=("tests/jvm/build.sh"); fi
if [ "${CONFLUX_E2E_ONLY:-0}" != "1" ]; then
  step "cargo fmt --all --check"
  cargo fmt --all --check || failed+=("cargo fmt")

  step "cargo clippy --all-targets --locked -- -D warnings"
  cargo clippy --all-targets --locked -- -D warnings || failed+=("cargo clippy")

  step "cargo test --workspace --locked"
  cargo test --workspace --locked || failed+=("cargo test")
fi

if [ -z "${CONFLUX_BIN:-}" ]; then
  step "cargo build --release --locked -p conflux"
  if ! cargo build --release --locked -p conflux; then
    printf '\nFAILED: cargo build --release (end-to-end tests not run)\n' >&2
    exit 1
  fi
  export CONFLUX_BIN="$PWD/target/release/conflux"
fi

# --- end-to-end ------------------------------------------------------------------
step "pytest tests/e2e (CONFLUX_BIN=$CONFLUX_BIN)"
set +e
"$VENV/bin/python" -m pytest tests/e2e -v "$@"
rc=$?
set -e
# rc 5 means no test was collected: for this suite that is a failure too.
if [ "$rc" -ne 0 ]; then failed+=("pytest (exit $rc)"); fi

# --- the clients' own test suites ---------------------------------------------
if [ "${CONFLUX_SKIP_SUITES:-0}" != "1" ]; then
  step "kafka-python's own integration suite (scripts/kafka-python-suite.sh)"
  scripts/kafka-python-suite.sh || failed+=("kafka-python suite")

  step "librdkafka's own test-runner, CI subset (scripts/librdkafka-suite.sh --subset)"
  scripts/librdkafka-suite.sh --subset || failed+=("librdkafka suite")
fi

if [ "${#failed[@]}" -ne 0 ]; then
  printf '\nFAILED steps: %s\n' "$(IFS=,; echo "${failed[*]}")" >&2
  exit 1
fi
