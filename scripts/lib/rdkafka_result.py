#!/usr/bin/env python3
"""Outcomes of librdkafka test-runner runs, for scripts/librdkafka-suite.sh.

    rdkafka_result.py parse LOG NUMBER RC WALL [TEST_C [SCENARIO]]
        Reads the output of one `TESTS=NUMBER test-runner` process and prints one
        line per test of that number:  PASS|FAIL|SKIP <name> :: <seconds>s[; <reason>]

    rdkafka_result.py list TEST_C "RUNNER ARGS" [SCENARIO]
        The test numbers that `test-runner RUNNER ARGS -s SCENARIO` (default scenario
        "default") would run at least one test of:
        every _TEST(NNNN_name, FLAGS, ...) in test.c's registry, less those whose flags
        the runner filters out (TEST_F_LOCAL with -L, TEST_F_SOCKEM with -E,
        TEST_F_KNOWN_ISSUE unless -k, TEST_F_MANUAL always).

    rdkafka_result.py summarize RAW EXPECTED OUT
        Merges the parse lines in RAW, marks failures listed in EXPECTED (lines
        `NNNN  # reason`), writes OUT (one `PASS|FAIL|SKIP <name> :: <reason>` line per
        test plus a closing summary line) and prints a table and the summary.
        Exits 1 if any failure is not listed in EXPECTED, else 0.

The parser reads the runner's own lines ("Running test X", "Test X PASSED|FAILED|SKIPPED",
'### Test "X" failed at ...', "SKIPPING TEST: why") and its closing summary table (which
also carries each test's duration) when the runner got that far: it aborts before the
table when librdkafka threads outlive a test. Tests that -L filtered out (broker-less
local tests) are left out. A test that started and has no verdict (killed by the
timeout, crashed) is a FAIL; a number that printed nothing at all is one FAIL for the
number.
"""
import os
import re
import sys

ANSI = re.compile(r"\x1b\[[0-9;]*m")
ROW = re.compile(r"^\|\s*(\d{4}_\S+)\s*\|\s*([A-Z_]+)\s*\|\s*([0-9.]+)s\s*\|\s*(.*?)\s*\|?\s*$")
RUNNING = re.compile(r"=+ Running test (\d{4}_\S+) =+")
VERDICT = re.compile(r"=+ Test (\d{4}_\S+) (PASSED|FAILED|SKIPPED) =+")
FAILAT = re.compile(r'^### Test "(\d{4}_[^" ]+)([^"]*)" failed at (\S+)')
SKIPPING = re.compile(r"^\[(\d{4}_\S+)\s*/\s*[0-9.]+s\] WARN: SKIPPING TEST: (.*?)(\[\d{4}_.*)?$")
STAMP = re.compile(r"^\[(\d{4}_\S+)\s*/\s*([0-9.]+)s\]")
TABLE_STATE = {"PASSED": "PASS", "FAILED": "FAIL", "SKIPPED": "SKIP"}
RANK = {"FAIL": 3, "PASS": 2, "SKIP": 1}


def registry(test_c):
    """{name: (flags, scenario)} of every _TEST() entry in test.c."""
    text = open(test_c, encoding="utf-8", errors="replace").read()
    text = text[text.index("struct test tests[] = {"):]
    out = {}
    for entry in text.split("_TEST(")[1:]:
        m = re.match(r"\s*(\d{4}_\w+)\s*,", entry)
        if not m:
            continue
        body = entry[: entry.find("\n    _TEST") if "\n    _TEST" in entry else len(entry)]
        sc = re.search(r'\.scenario\s*=\s*"([^"]*)"', body)
        out[m.group(1)] = (set(re.findall(r"TEST_F_[A-Z0-9_]+", body.split(".extra")[0])),
                           sc.group(1) if sc else "default")
    return out


def parse(log, number, rc, wall, test_c=None, scenario="default"):
    text = open(log, encoding="utf-8", errors="replace").read()
    lines = ANSI.sub("", text).splitlines()
    rc, wall = int(rc), float(wall)
    mine = lambda name: name.startswith(number + "_")
    state, reason, local, duration, last_stamp = {}, {}, set(), {}, {}

    def put(name, outcome, why=""):
        if outcome == "SKIP" and "negative test flags" in why:
            local.add(name)
            return
        if state.get(name) is None or RANK[outcome] > RANK[state[name]]:
            state[name] = outcome
            if why or name not in reason:
                reason[name] = why
        elif outcome == state[name] and why and not reason.get(name):
            reason[name] = why

    for i, line in enumerate(lines):
        if m := STAMP.match(line):
            if mine(m.group(1)):
                last_stamp[m.group(1)] = float(m.group(2))
        if m := RUNNING.search(line):
            if mine(m.group(1)):
                state.setdefault(m.group(1), None)
        elif m := VERDICT.search(line):
            if mine(m.group(1)):
                put(m.group(1), TABLE_STATE[m.group(2)], reason.get(m.group(1), ""))
        elif m := FAILAT.match(line):
            if mine(m.group(1)):
                nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
                sub = m.group(2).strip()
                put(m.group(1), "FAIL", (f"{sub} " if sub else "") + f"failed at {m.group(3)}: {nxt}"[:400])
        elif m := SKIPPING.match(line):
            if mine(m.group(1)):
                put(m.group(1), "SKIP", m.group(2).strip())
        elif m := ROW.match(line):
            name, st, secs, extra = m.groups()
            if mine(name) and st in TABLE_STATE:
                duration[name] = float(secs)
                put(name, TABLE_STATE[st], extra)

    unfinished = {124: f"timed out after {wall:.0f}s (no verdict)",
                  137: f"killed after timing out ({wall:.0f}s)"}.get(rc, f"no verdict; runner exited {rc}")
    if rc == 134:
        unfinished += " (SIGABRT: a test assertion or timeout aborted the runner)"
    for name in [n for n, s in state.items() if s is None]:
        state[name], reason[name] = "FAIL", unfinished
    if not state and not local:
        state[f"{number}_unknown"] = "FAIL"
        reason[f"{number}_unknown"] = (unfinished if rc in (124, 137)
                                       else f"runner exited {rc} before any test of {number} started")
    if test_c:
        reg = registry(test_c)
        for name in list(state):
            want = reg.get(name, (set(), "default"))[1]
            if state[name] == "SKIP" and not reason.get(name) and scenario not in want:
                if "default" in want or "noautocreate" in want:
                    del state[name]  # reported by the pass that runs its scenario
                else:
                    reason[name] = f"needs test scenario '{want}' (a broker set up for it)"
    if not state and local:
        for name in sorted(local):
            state[name], reason[name] = "SKIP", "broker-less local test, not run in broker mode (-L)"
    for name in sorted(state):
        # the summary table's duration; else the last time stamp the test logged; else
        # the process's wall time (one test of that number)
        secs = duration.get(name, wall if len(state) == 1 else last_stamp.get(name, 0.0))
        why = " ".join(reason.get(name, "").split())
        if state[name] == "PASS" and name in duration and duration[name] < 0.005:
            why = "ran no sub-test in quick mode (-Q)" if os.environ.get("LIBRDKAFKA_QUICK") else "took < 5 ms"
        print(f"{state[name]} {name} :: {secs:.1f}s" + (f"; {why}" if why else ""))


def list_numbers(test_c, args, scenario="default"):
    args = args.split()
    drop = {"TEST_F_MANUAL"}
    if "-L" in args:
        drop.add("TEST_F_LOCAL")
    if "-E" in args:
        drop.add("TEST_F_SOCKEM")
    if "-k" not in args:
        drop.add("TEST_F_KNOWN_ISSUE")
    keep = set()
    for name, (flags, scen) in registry(test_c).items():
        # test-runner: a test runs when its scenario string contains the run's scenario
        if not flags & drop and scenario in scen:
            keep.add(name[:4])
    for n in sorted(keep):
        if not n.startswith("8"):
            print(n)


def read_expected(path):
    exp = {}
    try:
        for line in open(path, encoding="utf-8"):
            body, _, why = line.partition("#")
            body = body.strip()
            if re.fullmatch(r"\d{4}(_\S+)?", body):
                exp[body] = why.strip()
    except FileNotFoundError:
        pass
    return exp


def summarize(raw, expected, out):
    exp = read_expected(expected)
    best = {}
    for line in open(raw, encoding="utf-8", errors="replace"):
        head, _, rest = line.rstrip("\n").partition(" :: ")
        parts = head.split(" ", 1)
        if len(parts) != 2 or parts[0] not in RANK:
            continue
        outcome, name = parts[0], parts[1].strip()
        if name not in best or RANK[outcome] > RANK[best[name][0]]:
            best[name] = (outcome, rest)

    def expected_for(name):
        return exp.get(name, exp.get(name[:4]))

    n = {"PASS": 0, "FAIL": 0, "SKIP": 0, "XFAIL": 0, "XPASS": 0}
    rows = []
    for name in sorted(best):
        outcome, rest = best[name]
        secs, _, why = rest.partition("; ")
        x = expected_for(name)
        note = ""
        if outcome == "FAIL" and x is not None:
            n["XFAIL"] += 1
            note = " [expected failure" + (f": {x}" if x else "") + "]"
        elif outcome == "FAIL":
            n["FAIL"] += 1
        else:
            n[outcome] += 1
            if outcome == "PASS" and x is not None:
                n["XPASS"] += 1
                note = " [listed as an expected failure but passed: take it off the list]"
        rows.append((outcome, name, secs, why, note))

    total = sum(float(s.rstrip("s") or 0) for _, _, s, _, _ in rows)
    summary = (f"summary: {n['PASS']} PASS, {n['FAIL'] + n['XFAIL']} FAIL ({n['XFAIL']} expected,"
               f" {n['FAIL']} unexpected), {n['SKIP']} SKIP; tests' own time {total:.0f}s")
    with open(out, "w", encoding="utf-8") as f:
        for outcome, name, secs, why, note in rows:
            f.write(f"{outcome} {name} :: {secs}" + (f"; {why}" if why else "") + note + "\n")
        f.write(f"# {summary}\n")
    w = max([len(r[1]) for r in rows] + [10])
    for outcome, name, secs, why, note in rows:
        tag = "XFAIL" if outcome == "FAIL" and note.startswith(" [expected") else outcome
        print(f"  {tag:5} {name:{w}} {secs:>8}  {why[:160]}")
    print(summary)
    # The plain closing line (unexpected failures only) for CI log readers.
    print(f"librdkafka: {n['PASS']} passed, {n['FAIL']} failed, {n['SKIP']} skipped")
    return 1 if n["FAIL"] else 0


if __name__ == "__main__":
    if len(sys.argv) in (6, 7, 8) and sys.argv[1] == "parse":
        parse(*sys.argv[2:])
    elif len(sys.argv) in (4, 5) and sys.argv[1] == "list":
        list_numbers(*sys.argv[2:])
    elif len(sys.argv) == 5 and sys.argv[1] == "summarize":
        sys.exit(summarize(*sys.argv[2:]))
    else:
        sys.exit(__doc__)
