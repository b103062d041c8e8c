"""pytest plugin for scripts/kafka-python-suite.sh (load with -p kp_suite_plugin, this
folder on PYTHONPATH).

- Appends one tab-separated line `OUTCOME<TAB>nodeid<TAB>seconds<TAB>reason` per test to
  $KP_SUITE_RAW as soon as the test finishes, so a run that the outer timeout kills still
  leaves every result it reached. OUTCOME is PASS, FAIL or SKIP (an xfail counts as SKIP;
  a failing setup or teardown as FAIL). reason is one line: the exception for FAIL, the
  skip reason for SKIP, empty for PASS.
- Skips tests that cannot run against an external broker, from
  $KP_SUITE_SKIP = "substring::reason;;substring::reason" (a test whose node id contains
  the substring is reported as SKIP with that reason and never run).
"""
import os

import pytest

_RAW = os.environ.get("KP_SUITE_RAW")
_SKIPS = [tuple(p.split("::", 1)) if "::" in p else (p, "skipped by kafka-python-suite.sh")
          for p in os.environ.get("KP_SUITE_SKIP", "").split(";;") if p.strip()]


def pytest_collection_modifyitems(config, items):
    for item in items:
        for needle, why in _SKIPS:
            if needle in item.nodeid:
                item.add_marker(pytest.mark.skip(reason=why))
                break


def _one_line(text, limit=400):
    return " ".join(str(text).split())[:limit]


def _reason(report):
    if report.skipped and isinstance(report.longrepr, tuple):
        return _one_line(report.longrepr[2])
    text = getattr(report, "longreprtext", "") or str(report.longrepr or "")
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    # The exception line(s): pytest prefixes them with "E "; keep the first one of the
    # last block (assertion message) plus the final exception type line if different.
    e_lines = [l[2:].strip() for l in lines if l.startswith("E ")]
    if e_lines:
        first = next((l for l in e_lines if l), "")
        last = e_lines[-1]
        return _one_line(first if first == last else f"{first} ... {last}")
    return _one_line(lines[-1] if lines else "")


def _write(outcome, report, reason=""):
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
