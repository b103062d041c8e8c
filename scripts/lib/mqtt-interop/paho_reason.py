#!/usr/bin/env python3
"""One-line reason for a failed paho.mqtt.testing test, read from its log.

(Used by scripts/mqtt-interop-suite.sh; taken from the peers harness, lib/paho_reason.py.)

    paho_reason.py LOG

LOG is what lib/paho_one.py printed for one test. The suite's 3.1.1 tests catch their own
exceptions, print the traceback and then fail on `assertEqual(succeeded, True)`, and its
client library reports protocol errors from a background thread; so the unittest verdict
("False != True") says nothing, and the first traceback in the log is the one that
explains the failure. Prints `<exception line> [<file>:<line>: <code>]`, or why the test
was stopped when the harness's per-test timeout ended it (the harness appends a line
"[mqtt-interop] timed out after Ns" to the log then).
"""
import re
import sys

FRAME = re.compile(r'^\s*File "((?:.*/)?([^/"]+))", line (\d+), in ')
OBJECT = re.compile(r"<([\w.]+) object at 0x[0-9a-f]+>")  # reprs that differ on every run
NOISE = ("AssertionError: False != True",)  # the 3.1.1 tests' closing assertEqual


def tracebacks(lines):
    """Yield (exception line, 'file:line: code') for each traceback in order."""
    i = 0
    while i < len(lines):
        if lines[i].startswith("Traceback (most recent call last):"):
            where, code, in_unittest = "", "", False
            i += 1
            while i < len(lines) and (lines[i].startswith(" ") or not lines[i].strip()):
                m = FRAME.match(lines[i])
                if m:  # keep the innermost frame outside unittest's own machinery
                    in_unittest = "/unittest/" in m.group(1)
                    if not in_unittest:
                        where, code = f"{m.group(2)}:{m.group(3)}", ""
                elif not in_unittest and lines[i].strip() and not set(lines[i].strip()) <= set("^~ "):
                    code = code or lines[i].strip()
                i += 1
            exc = lines[i].strip() if i < len(lines) else "(traceback cut off)"
            yield exc, f"{where}: {code}" if code else where
        i += 1


def main():
    text = open(sys.argv[1], encoding="utf-8", errors="replace").read()
    lines = text.splitlines()
    m = re.search(r"\[(?:peers|mqtt-interop)\] timed out after (\d+)s", text)
    every = list(tracebacks(lines))
    # the closing "False != True" says nothing when an earlier traceback explains it; it is
    # the reason itself when it is the only one (a v5 test's assertEqual(..., True))
    found = [(e, w) for e, w in every if e not in NOISE] or every
    if m:
        # the test was still waiting for something when the timeout ended it
        last = next((l.strip() for l in reversed(lines) if l.strip() and "timed out after" not in l), "")
        why = f"timed out after {m.group(1)}s (harness per-test limit); last output: {last}"
        if found:
            why += f"; first error: {found[0][0]}"
    elif found:
        exc, where = found[0]
        why = f"{exc} [{where}]" if where else exc
    else:
        why = next((l.strip() for l in reversed(lines) if l.strip()), "no output")
    print(OBJECT.sub(r"<\1>", why).replace("\n", " ")[:400])


if __name__ == "__main__":
    main()
