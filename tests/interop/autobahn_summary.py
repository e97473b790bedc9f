#!/usr/bin/env python3
"""Side-by-side summary of an Autobahn|Testsuite fuzzingclient report.

    python3 tests/interop/autobahn_summary.py REPORT_DIR --agents direct,wsgate --gate wsgate

Reads REPORT_DIR/index.json (written by `wstest -m fuzzingclient`) and prints:
  1. per agent, how many cases ended with each behavior (OK, NON-STRICT,
     INFORMATIONAL, UNIMPLEMENTED, FAILED), and with each closing behavior;
  2. every case whose behavior, closing behavior or close code differs between agents;
  3. every case that is not OK (behavior or closing behavior) for the gate agent, with
     its close code and the suite's own words about the result.
Exits 1 if the gate agent has a FAILED case (behavior FAILED, or closing behavior
FAILED, WRONG CODE or UNCLEAN) or lacks a case that the first agent ran; 2 if the
report is missing or unreadable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

BEHAVIORS = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]


def case_key(case_id: str) -> tuple[int, ...]:
    return tuple(int(p) for p in case_id.split("."))


def expectation(report_dir: str, entry: dict) -> str:
    """The per-case report's own words (what it expected), shortened."""
    path = os.path.join(report_dir, entry.get("reportfile", ""))
    try:
        with open(path, encoding="utf-8") as f:
            case = json.load(f)
    except (OSError, ValueError):
        return ""
    result = " ".join(str(case.get("result", "")).split())
    close = " ".join(str(case.get("resultClose", "")).split())
    text = result if not close or close == result else f"{result} / close: {close}"
    return text[:160]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report_dir")
    parser.add_argument("--agents", default="direct,wsgate")
    parser.add_argument("--gate", default="wsgate", help="agent whose FAILED cases fail the run")
    args = parser.parse_args()
    agents = args.agents.split(",")

    index_path = os.path.join(args.report_dir, "index.json")
    try:
        with open(index_path, encoding="utf-8") as f:
            index = json.load(f)
    except (OSError, ValueError) as exc:
        print(f"error: cannot read {index_path}: {exc}", file=sys.stderr)
        return 2
    missing_agents = [a for a in agents if a not in index]
    if missing_agents:
        print(f"error: no results for agent(s) {missing_agents} in {index_path}", file=sys.stderr)
        return 2

    # 1. counts
    width = 16
    print(f"{'behavior':<16}" + "".join(f"{a:>{width}}" for a in agents))
    for behavior in BEHAVIORS:
        row = [sum(1 for e in index[a].values() if e["behavior"] == behavior) for a in agents]
        print(f"{behavior:<16}" + "".join(f"{n:>{width}}" for n in row))
    print(f"{'cases':<16}" + "".join(f"{len(index[a]):>{width}}" for a in agents))
    closings = sorted({e["behaviorClose"] for a in agents for e in index[a].values()} - {"OK"})
    print(f"\n{'closing behavior':<20}" + "".join(f"{a:>{width}}" for a in agents))
    for closing in ["OK"] + closings:
        row = [sum(1 for e in index[a].values() if e["behaviorClose"] == closing) for a in agents]
        print(f"{closing:<20}" + "".join(f"{n:>{width}}" for n in row))

    # 2. differences
    all_cases = sorted({c for a in agents for c in index[a]}, key=case_key)

    def cell(agent: str, case: str) -> str:
        e = index[agent].get(case)
        if e is None:
            return "(not run)"
        return f"{e['behavior']}/{e['behaviorClose']} {e.get('remoteCloseCode')}"

    diffs = [c for c in all_cases if len({cell(a, c) for a in agents}) > 1]
    print(f"\ncases that differ (behavior/closing behavior remote-close-code): {len(diffs)}")
    for case in diffs:
        print(f"  {case:<10}" + "".join(f"{cell(a, case):>{width + 12}}" for a in agents))

    # 3. not OK through the gate agent
    gate = index.get(args.gate, {})
    not_ok = [
        c
        for c in sorted(gate, key=case_key)
        if gate[c]["behavior"] != "OK" or gate[c]["behaviorClose"] not in ("OK", "INFORMATIONAL")
    ]
    print(f"\ncases not OK through {args.gate}: {len(not_ok)}")
    for case in not_ok:
        e = gate[case]
        print(
            f"  {case:<10} {e['behavior']:<14} close={e['behaviorClose']:<14} "
            f"code={e.get('remoteCloseCode')}  {expectation(args.report_dir, e)}"
        )

    # Autobahn's own verdict is `behavior`; a closing behavior of FAILED, WRONG CODE or
    # UNCLEAN is a failure too. FAILED BY CLIENT (the suite dropped TCP itself because
    # the server did not after the close handshake) is graded OK by the suite: listed
    # above, not fatal.
    failed = [
        c
        for c in gate
        if gate[c]["behavior"] == "FAILED"
        or gate[c]["behaviorClose"] in ("FAILED", "WRONG CODE", "UNCLEAN")
    ]
    not_run = [c for c in index[agents[0]] if c not in gate]
    if failed or not_run:
        if failed:
            print(f"\nFAILED through {args.gate}: {' '.join(sorted(failed, key=case_key))}")
        if not_run:
            print(f"\nnot run through {args.gate}: {' '.join(sorted(not_run, key=case_key))}")
        return 1
    print(f"\n0 FAILED through {args.gate}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
