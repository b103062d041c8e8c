"""Fixtures for the end-to-end suite: a real `conflux` process per test.

- `broker`: a broker on a fresh data dir (tmp_path), default flags, stopped at
  teardown with SIGTERM; teardown asserts it exits with code 0 (unless the test
  stopped or killed it itself, or it must assert that it was still running).
- `broker_factory(extra_args=(), data_dir=None, name=...)`: more brokers, or
  brokers with custom flags, that a test can stop/kill/restart. Same teardown.
- `unique_topic(prefix)`: a topic name not used before in this run.

When a test fails, the tail of every broker log it used is attached to the report.
"""

from __future__ import annotations

import itertools
import signal
import uuid

import pytest

from broker import Broker, default_binary

_topic_counter = itertools.count()


def pytest_configure(config):
    # kafka-python 3 loads its protocol schemas with importlib.resources.read_text /
    # open_text, deprecated since Python 3.11: library noise, not something a test did.
    config.addinivalue_line(
        "filterwarnings", r"ignore:(open|read)_text is deprecated:DeprecationWarning"
    )


def pytest_report_header(config):
    binary = default_binary()
    state = "exists" if binary.exists() else "MISSING"
    return [f"conflux binary: {binary} ({state})"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for b in getattr(item, "_conflux_brokers", []):
            report.sections.append(
                (f"conflux log ({b.name}, {b.log_path})", b.log_tail(150) or "(empty)")
            )
        # Other processes a test ran (e.g. the JVM applications of
        # test_kafka_streams_and_connect.py): objects with .name, .log_path and .tail(n).
        for p in getattr(item, "_conflux_jvm_procs", []):
            report.sections.append((f"{p.name} log ({p.log_path})", p.tail(120) or "(empty)"))


@pytest.fixture
def broker_factory(request, tmp_path):
    brokers: list[Broker] = []
    request.node._conflux_brokers = brokers
    counter = itertools.count()

    def make(extra_args=(), data_dir=None, name=None, start=True) -> Broker:
        i = next(counter)
        name = name or f"broker{i}"
        b = Broker(
            data_dir=data_dir or (tmp_path / f"{name}-data"),
            log_path=tmp_path / f"{name}.log",
            extra_args=extra_args,
            name=name,
        )
        brokers.append(b)
        if start:
            b.start()
        return b

    yield make

    problems = []
    for b in brokers:
        if b.proc is None:
            continue
        if b.running():
            rc = b.stop(signal.SIGTERM, timeout=30)
            if rc != 0:
                problems.append(f"{b.name} exited with code {rc} on SIGTERM (expected 0)")
        elif b.expected_running:
            # It died while the test thought it was up: a crash.
            problems.append(
                f"{b.name} died during the test with exit code {b.proc.returncode}"
            )
    if problems:
        details = "\n".join(f"--- {b.name} log tail ---\n{b.log_tail(80)}" for b in brokers)
        pytest.fail("; ".join(problems) + "\n" + details, pytrace=False)


@pytest.fixture
def broker(broker_factory) -> Broker:
    return broker_factory(name="broker")


@pytest.fixture
def unique_topic():
    def make(prefix: str = "t") -> str:
        return f"{prefix}-{next(_topic_counter)}-{uuid.uuid4().hex[:6]}"

    return make
