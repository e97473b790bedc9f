#!/usr/bin/env python3
"""Renders benches/compare.sh results as one markdown report.

    python3 benches/report.py META.txt RESULTS.tsv > report.md

RESULTS.tsv has one line per run: suite, target, measure, rep, 1-min load average, and
the load generator's `key=value ...` result (or `FAILED reason`). Rates are shown as
the median of the repeats with their spread (half the min-max range, in % of the
median); every ratio is a ratio of medians against `direct` (plain) in the same run.
"""

import statistics
import sys
from collections import defaultdict

# measure -> (result key, higher is better)
METRICS = {
    "echo64": ("msg_per_s", True),
    "echo64k": ("mb_per_s", True),
    "p50": ("p50_us", False),
    "p90": ("p90_us", False),
    "p99": ("p99_us", False),
    "connrate": ("conn_per_s", True),
    "idle": ("kib_per_conn", False),
    "idle_used": ("kib_per_conn", False),
}
SOURCE = {"p50": "latency", "p90": "latency", "p99": "latency"}  # measures read from another run kind

# The bars of the issue: (label, measure, suite, peers, factor, higher is better).
TARGETS = [
    ("64 B msg/s", "echo64", "plain", ["nginx", "haproxy"], 1.25, True),
    ("64 KiB MB/s", "echo64k", "plain", ["nginx", "haproxy"], 1.5, True),
    ("p99 at fixed rate", "p99", "plain", ["nginx", "haproxy"], 0.8, False),
    ("new connections/s", "connrate", "plain", ["nginx", "haproxy"], 1.25, True),
    ("TLS 64 B msg/s", "echo64", "tls", ["nginx"], 1.25, True),
    ("TLS 64 KiB MB/s", "echo64k", "tls", ["nginx"], 1.25, True),
    ("TLS new connections/s", "connrate", "tls", ["nginx"], 1.25, True),
]
IDLE_BAR_KIB = 4.0


def parse(path):
    runs = []
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 6:
                continue
            suite, target, measure, rep, load, result = parts[:6]
            target = target.removesuffix("-tls")
            kv = {}
            if not result.startswith("FAILED"):
                for item in result.split():
                    if "=" in item:
                        k, v = item.split("=", 1)
                        kv[k] = v
            runs.append(dict(suite=suite, target=target, measure=measure, rep=int(rep),
                             load=float(load), ok=bool(kv), kv=kv, raw=result))
    return runs


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


class Table:
    """values[(suite, target, measure)] -> list of floats (one per rep), plus CPU figures."""

    def __init__(self, runs):
        self.values = defaultdict(list)
        self.by_rep = defaultdict(dict)
        self.cpu = defaultdict(list)      # (suite, target, measure) -> watched process CPU %
        self.lg_cpu = defaultdict(list)   # (suite, target, measure) -> load generator CPU %
        for r in runs:
            if not r["ok"]:
                continue
            for m, (key, _) in METRICS.items():
                if SOURCE.get(m, m) != r["measure"]:
                    continue
                v = num(r["kv"].get(key))
                if v is not None:
                    self.values[(r["suite"], r["target"], m)].append(v)
                    self.by_rep[(r["suite"], m, r["rep"])][r["target"]] = v
            w = r["kv"].get("watch_cpu_pct", "-").split(",")[0]
            if num(w) is not None:
                self.cpu[(r["suite"], r["target"], r["measure"])].append(num(w))
            if num(r["kv"].get("cpu_pct")) is not None:
                self.lg_cpu[(r["suite"], r["target"], r["measure"])].append(num(r["kv"]["cpu_pct"]))

    def median(self, suite, target, m):
        v = self.values.get((suite, target, m))
        return statistics.median(v) if v else None

    def spread(self, suite, target, m):
        v = self.values.get((suite, target, m))
        if not v or len(v) < 2:
            return None
        med = statistics.median(v)
        return (max(v) - min(v)) / 2 / med * 100 if med else None


def fmt_rate(v):
    if v is None:
        return "–"
    if v >= 100_000:
        return f"{v / 1000:.0f}k"
    if v >= 10_000:
        return f"{v / 1000:.1f}k"
    return f"{v:,.0f}"


def fmt_num(v, digits=1):
    return "–" if v is None else f"{v:,.{digits}f}"


def fmt_ratio(v):
    return "–" if v is None else f"{v:.2f}×"


def cell(t, suite, target, m, fmt):
    v = t.median(suite, target, m)
    s = t.spread(suite, target, m)
    return fmt(v) + (f" ±{s:.0f}%" if s is not None else "")


def ratio(a, b):
    return a / b if a is not None and b else None


def per_op(t, runs, suite, target, measure, key="msg_per_s"):
    """Median CPU µs of the watched process per operation (message or connection)."""
    cpu = t.cpu.get((suite, target, measure))
    rates = [num(r["kv"].get(key)) for r in runs
             if r["ok"] and r["suite"] == suite and r["target"] == target and r["measure"] == measure]
    vals = [c / 100 / rt * 1e6 for c, rt in zip(cpu or [], rates) if rt]
    return statistics.median(vals) if vals else None


def main():
    meta = {}
    with open(sys.argv[1]) as f:
        for line in f:
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                meta[k] = v
    runs = parse(sys.argv[2])
    t = Table(runs)
    out = []
    p = out.append

    p("# wsgate vs nginx vs HAProxy")
    p("")
    p(f"Run {meta.get('started', '?')} on {meta.get('cpu', '?')} (kernel {meta.get('kernel', '?')}), "
      f"wsgate {meta.get('commit', '?')}, nginx {meta.get('nginx', '?')}, HAProxy {meta.get('haproxy', '?')}.  ")
    p(f"Settings: {meta.get('settings', '?')}.  ")
    loads = [r["load"] for r in runs]
    if loads:
        p(f"1-min load average during the run: min {min(loads):.2f}, median {statistics.median(loads):.2f}, "
          f"max {max(loads):.2f} (start {meta.get('loadavg_start', '?')}, end {meta.get('loadavg_end', '?')}).")
    p("")
    p("Cells: median of the repeats ±spread (half the min–max range). × = ratio of medians vs "
      "`direct` (load generator → echo backend, no proxy, plain) in this run; for latency and "
      "memory lower is better. Idle memory: (RSS after − RSS before opening the connections) "
      "of the freshly started proxy process (nginx: its worker; direct: the backend) / connections, "
      "one run each; *idle*: connections that never sent a message, *used-idle*: after one 64 B "
      "echo each (per-connection buffers touched once).")
    p("")
    p("| target | 64 B msg/s | × | 64 KiB MB/s | × | p50 µs | p90 µs | p99 µs | p99 × | new conn/s | × "
      "| idle KiB/conn | used-idle KiB/conn |")
    p("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for suite in ("plain", "tls"):
        seen = []
        for r in runs:
            if r["suite"] == suite and r["target"] not in seen:
                seen.append(r["target"])
        rows += [(suite, x) for x in seen]
    d = {m: t.median("plain", "direct", m) for m in METRICS}
    for suite, target in rows:
        name = target + (" + TLS" if suite == "tls" else "")
        med = {m: t.median(suite, target, m) for m in METRICS}
        p(f"| {name} | {cell(t, suite, target, 'echo64', fmt_rate)} | {fmt_ratio(ratio(med['echo64'], d['echo64']))} "
          f"| {cell(t, suite, target, 'echo64k', fmt_num)} | {fmt_ratio(ratio(med['echo64k'], d['echo64k']))} "
          f"| {cell(t, suite, target, 'p50', fmt_num)} | {cell(t, suite, target, 'p90', fmt_num)} "
          f"| {cell(t, suite, target, 'p99', fmt_num)} "
          f"| {fmt_ratio(ratio(med['p99'], d['p99']))} "
          f"| {cell(t, suite, target, 'connrate', fmt_rate)} | {fmt_ratio(ratio(med['connrate'], d['connrate']))} "
          f"| {fmt_num(med['idle'], 2)} | {fmt_num(med['idle_used'], 2)} |")

    p50d, p99d = t.median("plain", "direct", "p50"), t.median("plain", "direct", "p99")
    if p50d and p99d and p99d > 10 * p50d:
        p("")
        p(f"**Tail latency is machine noise in this run**: direct's own p99 is {p99d / p50d:.0f}× its p50 "
          f"({p99d:,.0f} µs vs {p50d:,.0f} µs), i.e. the tail comes from other work being scheduled on the "
          "cores, not from the proxies. Compare p50 and the CPU-cost table instead; rerun p99 on a quiet machine.")

    # ------------------------------------------------------------------ targets
    p("")
    p("## wsgate against the issue's targets")
    p("")
    p("wsgate ÷ the best peer (ratio of medians); per-repeat: the range of that ratio within each "
      "repeat, whose targets ran back to back; CPU/op: wsgate's CPU time per message or connection ÷ "
      "the lowest peer's (below 1 is better; the figure least disturbed by other load).")
    p("")
    p("| measure | wsgate | best peer | wsgate ÷ best | per-repeat | CPU/op ÷ best | bar | met |")
    p("|---|---|---|---|---|---|---|---|")
    for label, m, suite, peers, factor, higher in TARGETS:
        w = t.median(suite, "wsgate", m)
        peer_vals = {x: t.median(suite, x, m) for x in peers if t.median(suite, x, m) is not None}
        if w is None or not peer_vals:
            continue
        best_name = (max if higher else min)(peer_vals, key=peer_vals.get)
        best = peer_vals[best_name]
        r = w / best
        reps = []
        for (s, mm, rep), vals in sorted(t.by_rep.items()):
            if s == suite and mm == m and "wsgate" in vals:
                pv = [vals[x] for x in peers if x in vals]
                if pv:
                    reps.append(vals["wsgate"] / (max(pv) if higher else min(pv)))
        rng = f"{min(reps):.2f}–{max(reps):.2f}" if len(reps) > 1 else "–"
        met = (r >= factor) if higher else (r <= factor)
        fmt = fmt_rate if m in ("echo64", "connrate") else fmt_num
        cpu_txt = "–"
        if m in ("echo64", "echo64k", "connrate"):
            key = "conn_per_s" if m == "connrate" else "msg_per_s"
            wc = per_op(t, runs, suite, "wsgate", m, key)
            pc = [c for c in (per_op(t, runs, suite, x, m, key) for x in peers) if c]
            if wc and pc:
                cpu_txt = f"{wc / min(pc):.2f}×"
        p(f"| {label} | {fmt(w)} | {best_name} {fmt(best)} | {r:.2f}× | {rng} | {cpu_txt} | "
          f"{'≥' if higher else '≤'} {factor}× | {'yes' if met else '**no**'} |")
    for m, label in (("idle", "idle KiB/conn"), ("idle_used", "used-idle KiB/conn")):
        wi = t.median("plain", "wsgate", m)
        if wi is None:
            continue
        peers = {x: t.median("plain", x, m) for x in ("nginx", "haproxy") if t.median("plain", x, m) is not None}
        peer_txt = ", ".join(f"{x} {v:.2f}" for x, v in peers.items())
        p(f"| {label} | {wi:.2f} | {peer_txt or '–'} | – | – | – | ≤ {IDLE_BAR_KIB} KiB | "
          f"{'yes' if wi <= IDLE_BAR_KIB else '**no**'} |")

    # ------------------------------------------------------------------ CPU cost
    p("")
    p("## CPU cost per operation (less sensitive to other load on the machine)")
    p("")
    p("CPU time of the measured process (proxy; for direct, the backend) per operation, from "
      "/proc/PID/stat over the measured window (median of repeats). lg = the load generator's "
      "own CPU use (% of its core, max over repeats): far below 100% means it was not the bottleneck.")
    p("")
    p("| target | µs / 64 B msg | µs / 64 KiB msg | µs / new conn | CPU % at fixed rate | lg % 64 B | lg % 64 KiB | lg % conn |")
    p("|---|---|---|---|---|---|---|---|")

    for suite, target in rows:
        name = target + (" + TLS" if suite == "tls" else "")
        lat_cpu = t.cpu.get((suite, target, "latency"))
        lg = [max(t.lg_cpu[(suite, target, m)]) if t.lg_cpu.get((suite, target, m)) else None
              for m in ("echo64", "echo64k", "connrate")]
        p(f"| {name} | {fmt_num(per_op(t, runs, suite, target, 'echo64'), 2)} "
          f"| {fmt_num(per_op(t, runs, suite, target, 'echo64k'), 1)} "
          f"| {fmt_num(per_op(t, runs, suite, target, 'connrate', 'conn_per_s'), 1)} "
          f"| {fmt_num(statistics.median(lat_cpu) if lat_cpu else None, 1)} "
          f"| {fmt_num(lg[0], 0)} | {fmt_num(lg[1], 0)} | {fmt_num(lg[2], 0)} |")

    # ------------------------------------------------------------------ auth
    auth = []
    for r in runs:
        if r["suite"] == "auth" and r["target"] not in auth:
            auth.append(r["target"])
    if auth:
        base = t.median("auth", "wsgate", "connrate")
        base_cpu = per_op(t, runs, "auth", "wsgate", "connrate", "conn_per_s")
        p("")
        p("## New connections with authentication at the door (connauth)")
        p("")
        p("Upgrade → Close cycles through wsgate with a route check (JWT: a token in "
          "`Authorization: Bearer`, verified against a JWKS fetched at start, so cached) and "
          "without (`wsgate`); the proxy's CPU µs per connection over the measured window.")
        p("")
        p("| target | new conn/s | × none | µs CPU / conn | + µs vs none |")
        p("|---|---|---|---|---|")
        for target in auth:
            cpu = per_op(t, runs, "auth", target, "connrate", "conn_per_s")
            extra = cpu - base_cpu if cpu is not None and base_cpu is not None else None
            p(f"| {target} | {cell(t, 'auth', target, 'connrate', fmt_rate)} "
              f"| {fmt_ratio(ratio(t.median('auth', target, 'connrate'), base))} "
              f"| {fmt_num(cpu, 1)} | {fmt_num(extra, 1)} |")

    # ------------------------------------------------------------------ raw
    p("")
    p("<details><summary>Every run</summary>")
    p("")
    p("| suite | target | measure | rep | load | result |")
    p("|---|---|---|---|---|---|")
    for r in runs:
        p(f"| {r['suite']} | {r['target']} | {r['measure']} | {r['rep']} | {r['load']:.2f} | `{r['raw']}` |")
    p("")
    p("</details>")
    failed = [r for r in runs if not r["ok"]]
    if failed:
        p("")
        p(f"**{len(failed)} run(s) failed** (see the list above).")
    print("\n".join(out))


if __name__ == "__main__":
    main()
