#!/usr/bin/env python3
"""Summarise a paho.mqtt.testing run (called by scripts/mqtt-interop-suite.sh).

usage: summarize.py --expected FILE [--outdir DIR] [--unexpected-out FILE] RAW [RAW ...]

RAW       lines written by the script: OUTCOME<TAB>test<TAB>secs<TAB>reason, test being
          "v311.<name>" or "v5.<name>". The first file is the main run, later ones are
          reruns of tests that failed unexpectedly. A test keeps the outcome of its last
          attempt; one that failed and then passed on a rerun is a PASS, reported as
          flaky with its first failure.
--expected  expected-failures file: one test per line (`v5.test_x  # reason`); a reason
          starting with "FLAKY" marks a test that may pass or fail (its failure is
          tolerated, its pass not reported as "now passing").
--outdir  gets results.txt (`PASS|FAIL|SKIP <test>`, sorted) and reasons.txt
          (`FAIL|SKIP|FLAKY <test> :: <secs>s; <reason>`).
--unexpected-out  only write the tests to rerun (one per line): those that failed unexpectedly
          and those listed as FLAKY that failed.
Prints the summary; exits 1 if a test failed that is not listed (or nothing ran), else 0.
"""
import argparse
import os
import sys

RANK = {"FAIL": 3, "PASS": 2, "SKIP": 1}


def read_expected(path):
    expected = {}
    if not path or not os.path.exists(path):
        return expected
    for raw in open(path, encoding="utf-8"):
        body, _, comment = raw.partition("#")
        name = body.strip()
        if name:
            expected[name] = comment.strip()
    return expected


def read_raw(path):
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
    ap.add_argument("--expected")
    ap.add_argument("--outdir")
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
    expected = read_expected(a.expected)

    if a.unexpected_out:
        with open(a.unexpected_out, "w", encoding="utf-8") as f:
            for t in sorted(final):
                if final[t][0] == "FAIL" and (t not in expected or expected[t].upper().startswith("FLAKY")):
                    f.write(t + "\n")
        return 0

    if not final:
        final["__no_test_ran__"] = ("FAIL", "0", "no test finished (see the logs)")
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
    flaky = {t for t, why in expected.items() if why.upper().startswith("FLAKY")}
    now_passing = sorted(t for t in expected if final.get(t, ("",))[0] == "PASS" and t not in flaky)
    skipped_listed = sorted(t for t in expected if final.get(t, ("",))[0] == "SKIP")

    print(f"paho.mqtt.testing on Conflux: {n['PASS']} passed, {n['FAIL']} failed "
          f"({len(expected_failed)} expected, {len(unexpected)} unexpected), {n['SKIP']} skipped"
          + (f"; {len(flaky_rerun)} passed only on a rerun" if flaky_rerun else ""))
    for t in expected_failed:
        print(f"  expected FAIL {t}  # {expected[t]}")
    for t in sorted(flaky_rerun):
        print(f"  flaky, passed on a rerun: {t} :: first failure: {flaky_rerun[t][2]}")
    for t in sorted(flaky):
        if final.get(t, ("",))[0] == "PASS":
            print(f"  listed as flaky, passed: {t}")
    for t in now_passing:
        print(f"  now passing, remove from the list: {t}")
    for t in skipped_listed:
        print(f"  listed as expected failure but skipped: {t}")
    for t in unexpected:
        print(f"  UNEXPECTED FAIL {t} :: {final[t][2]}")
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
