#!/usr/bin/env python3
"""Summarise a run of a client library's own test suite (called by scripts/kafka-python-suite.sh,
scripts/pika-suite.sh and scripts/mqtt-interop-suite.sh).

usage: suite_summary.py --suite NAME --expected FILE [--id-prefix P] [--outdir DIR] [--rc N]
                        [--run-timeout SECS] [--broker-problems N] [--partial] [--reference TEXT]
                        [--unexpected-out FILE] RAW [RAW ...]

RAW       lines OUTCOME<TAB>test<TAB>secs<TAB>reason (OUTCOME: PASS, FAIL or SKIP), written by
          the suite's pytest plugin or by the script. The first file is the main run, later
          ones are reruns. Within one file the worst outcome of a test wins (a call that passed
          with a teardown that failed is a FAIL); across files a test keeps its last attempt's
          outcome, and one that failed and then passed on a rerun is a PASS, reported as flaky
          with its first failure.
--suite   the name printed in the summary line.
--expected  expected-failures file: one test per line, `# reason` after it; a reason starting
          with "FLAKY" marks a test that may pass or fail (its failure is tolerated, its pass
          not reported as "now passing").
--id-prefix  prepended to an expected test id that does not start with it (ids may be written
          without their folder, e.g. `tests/acceptance/`).
--outdir  gets results.txt (`PASS|FAIL|SKIP <test>`, sorted) and reasons.txt
          (`FAIL|SKIP|FLAKY <test> :: <secs>s; <reason>`).
--rc      the main run's exit status (124/137: killed by `timeout`).
--broker-problems  panics / unexpected exits the script found in the broker log; > 0 fails the run.
--partial  only some tests were selected: listed tests that did not run are not reported.
--reference  appended to the summary line (the reference broker's result).
--unexpected-out  only write the tests to rerun (one per line): those that failed unexpectedly
          and those listed as FLAKY that failed; nothing else is summarised then.
Prints the summary; exits 1 if a test failed that is not listed (or the run timed out, finished
no test, or the broker had problems), else 0. A listed failure that passes is reported as "now
passing, remove from the list" and does not change the exit code.
"""
import argparse
import os
import sys

RANK = {"FAIL": 3, "PASS": 2, "SKIP": 1}


def read_expected(path, prefix):
    expected = {}
    if not path or not os.path.exists(path):
        return expected
    for raw in open(path, encoding="utf-8"):
        body, _, comment = raw.partition("#")
        test_id = body.strip()
        if test_id:
            if prefix and not test_id.startswith(prefix):
                test_id = prefix + test_id
            expected[test_id] = comment.strip()
    return expected


def read_raw(path):
    """{test: (outcome, secs, reason)} for one attempt, the worst outcome of each test."""
    best = {}
    if not os.path.exists(path):
        return best
    for line in open(path, encoding="utf-8", errors="replace"):
        parts = line.rstrip("\n").split("\t")
        if len(parts) < 2 or parts[0] not in RANK:
            continue
        outcome, name = parts[0], parts[1]
        secs = parts[2] if len(parts) > 2 else "?"
        reason = parts[3] if len(parts) > 3 else ""
        if name not in best or RANK[outcome] > RANK[best[name][0]]:
            best[name] = (outcome, secs, reason)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--suite", default="suite")
    ap.add_argument("--expected")
    ap.add_argument("--id-prefix", default="")
    ap.add_argument("--outdir")
    ap.add_argument("--rc", type=int, default=0)
    ap.add_argument("--run-timeout", default="?")
    ap.add_argument("--broker-problems", type=int, default=0)
    ap.add_argument("--partial", action="store_true")
    ap.add_argument("--reference", default="")
    ap.add_argument("--unexpected-out")
    ap.add_argument("raw", nargs="+")
    a = ap.parse_args()

    final, first_failure = {}, {}
    for att in (read_raw(p) for p in a.raw):
        for name, res in att.items():
            if name in final and final[name][0] == "FAIL" and name not in first_failure:
                first_failure[name] = final[name]
            final[name] = res
    flaky_rerun = {t: f for t, f in first_failure.items() if final[t][0] == "PASS"}
    expected = read_expected(a.expected, a.id_prefix)
    flaky = {t for t, why in expected.items() if why.upper().startswith("FLAKY")}

    if a.unexpected_out:
        with open(a.unexpected_out, "w", encoding="utf-8") as f:
            for t in sorted(final):
                if final[t][0] == "FAIL" and (t not in expected or t in flaky):
                    f.write(t + "\n")
        return 0

    if a.rc in (124, 137):
        final["__run_timeout__"] = ("FAIL", "?", f"killed after {a.run_timeout}s; tests not reached are not listed")
    elif not final:
        final["__no_test_ran__"] = ("FAIL", "?", f"no test finished (exit status {a.rc}; see the logs)")

    if a.outdir:
        os.makedirs(a.outdir, exist_ok=True)
        with open(os.path.join(a.outdir, "results.txt"), "w", encoding="utf-8") as f:
            for name in sorted(final):
                f.write(f"{final[name][0]} {name}\n")
        with open(os.path.join(a.outdir, "reasons.txt"), "w", encoding="utf-8") as f:
            for name in sorted(final):
                outcome, secs, reason = final[name]
                if outcome != "PASS":
                    f.write(f"{outcome} {name} :: {secs}s; {reason}\n")
                elif name in flaky_rerun:
                    _, fsecs, freason = flaky_rerun[name]
                    f.write(f"FLAKY {name} :: passed on a rerun; first failure: {fsecs}s; {freason}\n")

    n = {k: sum(1 for v in final.values() if v[0] == k) for k in RANK}
    failed = sorted(t for t, v in final.items() if v[0] == "FAIL")
    unexpected = [t for t in failed if t not in expected]
    expected_failed = [t for t in failed if t in expected]
    now_passing = sorted(t for t in expected if final.get(t, ("",))[0] == "PASS" and t not in flaky)
    not_run = sorted(t for t in expected if (t not in final and not a.partial)
                     or (t in final and final[t][0] == "SKIP"))

    print(f"{a.suite}: {n['PASS']} passed, {n['FAIL']} failed "
          f"({len(expected_failed)} expected, {len(unexpected)} unexpected), {n['SKIP']} skipped"
          + (f"; {len(flaky_rerun)} passed only on a rerun" if flaky_rerun else "")
          + (f"  [{a.reference}]" if a.reference else ""))
    for t in expected_failed:
        print(f"  expected FAIL {t}  # {expected[t]}")
    for t in sorted(flaky_rerun):
        print(f"  flaky, passed on a rerun: {t} :: first failure: {flaky_rerun[t][2]}")
    for t in sorted(flaky):
        if final.get(t, ("",))[0] == "PASS" and t not in flaky_rerun:
            print(f"  listed as flaky, passed: {t}")
    for t in now_passing:
        print(f"  now passing, remove from the list: {t}")
    for t in not_run:
        print(f"  listed as expected failure but {final[t][0].lower() if t in final else 'not run'}: {t}")
    for t in unexpected:
        print(f"  UNEXPECTED FAIL {t} :: {final[t][2]}")
    if a.broker_problems:
        print(f"  BROKER: {a.broker_problems} panic/abort line(s) or an unexpected exit (see broker-problems.txt)")
    return 1 if unexpected or a.broker_problems else 0


if __name__ == "__main__":
    sys.exit(main())
