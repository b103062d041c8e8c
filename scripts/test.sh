#!/usr/bin/env bash
# The one command that runs every test of Conflux on a fresh Debian machine:
#   formatting, clippy, Rust unit tests, the release build, and the end-to-end
#   suite (tests/e2e) that drives the real binary with kafka-python,
#   confluent-kafka and kcat.
#
# Usage: scripts/test.sh [extra pytest args]      e.g. scripts/test.sh -k kcat
# Env:   CONFLUX_E2E_ONLY=1  skip fmt/clippy/cargo test (still builds the binary)
#        CONFLUX_BIN=path    test this binary instead of building target/release/conflux
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
if ! command -v kcat >/dev/null 2>&1; then
  apt_install kcat
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

# --- Rust ------------------------------------------------------------------------
failed=()
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

if [ "${#failed[@]}" -ne 0 ]; then
  printf '\nFAILED steps: %s\n' "$(IFS=,; echo "${failed[*]}")" >&2
  exit 1
fi
