"""pytest plugin for scripts/pika-suite.sh (load with -p pika_suite_plugin, this folder on
PYTHONPATH).

- Appends one tab-separated line `OUTCOME<TAB>nodeid<TAB>seconds<TAB>reason` per test to
  $PIKA_SUITE_RAW as soon as the test finishes, so a run that the outer timeout kills still
  leaves every result it reached. OUTCOME is PASS, FAIL or SKIP (an xfail counts as SKIP;
  a failing setup or teardown as FAIL). reason is one line: the exception for FAIL, the
  skip reason for SKIP, empty for PASS.
- Appends `=== pika-suite: <nodeid> start|end <UTC time> [outcome]` lines to
  $PIKA_SUITE_MARK (the broker's log, which the broker opened with O_APPEND), so the
  broker's lines of one test can be found between its markers.
- Skips tests from $PIKA_SUITE_SKIP = "substring::reason;;substring::reason" (a test whose
  node id contains the substring is reported as SKIP with that reason and never run).
"""
import datetime
import os

import pytest

_RAW = os.environ.get("PIKA_SUITE_RAW")
_MARK = os.environ.get("PIKA_SUITE_MARK")
_SKIPS = [tuple(p.split("::", 1)) if "::" in p else (p, "skipped by pika-suite.sh")
          for p in os.environ.get("PIKA_SUITE_SKIP", "").split(";;") if p.strip()]


def pytest_collection_modifyitems(config, items):
    for item in items:
        for needle, why in _SKIPS:
            if needle in item.nodeid:
                item.add_marker(pytest.mark.skip(reason=why))
                break


def _now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%H:%M:%S.%f")[:-3]


def _mark(text):
    if not _MARK:
        return
    try:
        with open(_MARK, "a", encoding="utf-8") as f:
            f.write(f"=== pika-suite: {text}\n")
    except OSError:
        pass


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_logstart(nodeid, location):
    _mark(f"{nodeid} start {_now()}")


_outcome = {}


@pytest.hookimpl(trylast=True)
def pytest_runtest_logfinish(nodeid, location):
    _mark(f"{nodeid} end {_now()} {_outcome.pop(nodeid, '?')}")


def _one_line(text, limit=400):
    return " ".join(str(text).split())[:limit]


def _reason(report):
    if report.skipped and isinstance(report.longrepr, tuple):
        return _one_line(report.longrepr[2])
    text = getattr(report, "longreprtext", "") or str(report.longrepr or "")
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    # --tb=native: the last line that looks like "SomeError: text" is the exception.
    for l in reversed(lines):
        if l.startswith("E "):
            return _one_line(l[2:])
        head = l.split(":", 1)[0]
        if head and " " not in head and (head.endswith(("Error", "Exception", "Closed", "Timeout"))
                                         or "." in head or head == "Failed"):
            return _one_line(l)
    return _one_line(lines[-1] if lines else "")


def _write(outcome, report, reason=""):
    prev = _outcome.get(report.nodeid)
    if prev is None or prev == "PASS" or outcome == "FAIL":
        _outcome[report.nodeid] = outcome
    if not _RAW:
        return
    when = "" if report.when == "call" else f"[{report.when}] "
    line = "\t".join([outcome, report.nodeid, f"{report.duration:.1f}",
                      (when + reason) if reason else ""])
    with open(_RAW, "a", encoding="utf-8") as f:
        f.write(line.replace("\n", " ") + "\n")


def pytest_runtest_logreport(report):
    if report.when == "call":
        if report.passed:
            _write("PASS", report)
        elif report.skipped:
            _write("SKIP", report, _reason(report))
        else:
            _write("FAIL", report, _reason(report))
    elif report.when == "setup" and not report.passed:
        _write("SKIP" if report.skipped else "FAIL", report, _reason(report))
    elif report.when == "teardown" and report.failed:
        _write("FAIL", report, _reason(report))
