#!/usr/bin/env python3
"""Summarise a kafka-python-suite run (called by scripts/kafka-python-suite.sh).

usage: summarize.py --expected FILE --outdir DIR --rc N --run-timeout SECS
                    [--unexpected-out FILE] RAW [RAW ...]

RAW       lines written by kp_suite_plugin.py: OUTCOME<TAB>nodeid<TAB>secs<TAB>reason.
          The first is the main run; later ones are reruns of tests that failed. A test
          keeps the outcome of the last attempt that ran it; a test that failed and then
          passed on a rerun is a PASS, reported as flaky with its first failure.
--expected  expected-failures file: one test id per line, `# reason` comments allowed;
          a reason starting with "FLAKY" marks a test that may pass or fail (a failure
          is tolerated, a pass is not reported as "now passing").
--outdir  gets results.txt (`PASS|FAIL|SKIP <test id>`, sorted, one line per test) and
          reasons.txt (`FAIL|SKIP|FLAKY <test id> :: <reason>`).
--rc      pytest's exit status of the main run (124/137: killed by `timeout`).
--unexpected-out  write the ids of the tests that failed unexpectedly (one per line), for
          a rerun; nothing else is summarised then.
Prints the summary; exits 1 if a test failed that is not in the expected list (or the run
timed out / finished no test), else 0. An expected failure that passes is reported as
"now passing, remove from the list" and does not change the exit code.
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
        test_id = body.strip()
        if test_id:
            if not test_id.startswith("test/"):
                test_id = "test/integration/" + test_id
            expected[test_id] = comment.strip()
    return expected


def read_raw(path):
    """{test: (outcome, reason)} for one attempt; within one file the worst outcome wins
    (a test whose call passed but whose teardown failed is a FAIL)."""
    best = {}
    if not os.path.exists(path):
        return best
    for line in open(path, encoding="utf-8", errors="replace"):
        parts = line.rstrip("\n").split("\t")
        if len(parts) < 2 or parts[0] not in RANK:
            continue
        outcome, name = parts[0], parts[1]
        reason = parts[3] if len(parts) > 3 else ""
        if name not in best or RANK[outcome] > RANK[best[name][0]]:
            best[name] = (outcome, reason)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--expected")
    ap.add_argument("--outdir")
    ap.add_argument("--rc", type=int, default=0)
    ap.add_argument("--run-timeout", default="?")
    ap.add_argument("--unexpected-out")
    ap.add_argument("raw", nargs="+")
    a = ap.parse_args()

    attempts = [read_raw(p) for p in a.raw]
    final, first_failure = {}, {}
    for att in attempts:
        for name, (outcome, reason) in att.items():
            if name in final and final[name][0] == "FAIL" and name not in first_failure:
                first_failure[name] = final[name][1]
            final[name] = (outcome, reason)
    flaky_rerun = {t: first_failure[t] for t in first_failure if final[t][0] == "PASS"}
    expected = read_expected(a.expected)

    if a.unexpected_out:
        with open(a.unexpected_out, "w", encoding="utf-8") as f:
            for t in sorted(final):
                if final[t][0] == "FAIL" and t not in expected:
                    f.write(t + "\n")
        return 0

    if a.rc in (124, 137):
        final["__run_timeout__"] = ("FAIL", f"pytest killed after {a.run_timeout}s; tests not reached are not listed")
    elif not final:
        final["__collection__"] = ("FAIL", f"pytest exited {a.rc} before any test finished (see pytest.log)")

    os.makedirs(a.outdir, exist_ok=True)
    with open(os.path.join(a.outdir, "results.txt"), "w", encoding="utf-8") as f:
        for name in sorted(final):
            f.write(f"{final[name][0]} {name}\n")
    with open(os.path.join(a.outdir, "reasons.txt"), "w", encoding="utf-8") as f:
        for name in sorted(final):
            if final[name][0] != "PASS":
                f.write(f"{final[name][0]} {name} :: {final[name][1]}\n")
            elif name in flaky_rerun:
                f.write(f"FLAKY {name} :: passed on a rerun; first failure: {flaky_rerun[name]}\n")

    n = {k: sum(1 for v in final.values() if v[0] == k) for k in RANK}
    failed = sorted(t for t, v in final.items() if v[0] == "FAIL")
    unexpected = [t for t in failed if t not in expected]
    expected_failed = [t for t in failed if t in expected]
    flaky = {t for t, why in expected.items() if why.upper().startswith("FLAKY")}
    now_passing = sorted(t for t in expected if final.get(t, ("",))[0] == "PASS" and t not in flaky)
    not_run = sorted(t for t in expected if t not in final or final[t][0] == "SKIP")

    print(f"kafka-python suite: {n['PASS']} passed, {n['FAIL']} failed "
          f"({len(expected_failed)} expected, {len(unexpected)} unexpected), {n['SKIP']} skipped"
          + (f"; {len(flaky_rerun)} passed only on a rerun" if flaky_rerun else ""))
    for t in expected_failed:
        print(f"  expected FAIL {t}  # {expected[t]}")
    for t in sorted(flaky_rerun):
        print(f"  flaky, passed on a rerun: {t} :: first failure: {flaky_rerun[t]}")
    for t in sorted(flaky):
        if final.get(t, ("",))[0] == "PASS":
            print(f"  listed as flaky, passed: {t}")
    for t in now_passing:
        print(f"  now passing, remove from the list: {t}")
    for t in not_run:
        print(f"  listed as expected failure but {final[t][0].lower() if t in final else 'not run'}: {t}")
    for t in unexpected:
        print(f"  UNEXPECTED FAIL {t} :: {final[t][1]}")
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
