#!/usr/bin/env python3
"""Renders benches/compare.sh results as one markdown report.

    python3 benches/report.py META.txt RESULTS.tsv [HTTP.tsv] > report.md

RESULTS.tsv has one line per run: suite, target, measure, rep, 1-min load average, and
the load generator's `key=value ...` result (or `FAILED reason`). Rates are shown as
the median of the repeats with their spread (half the min-max range, in % of the
median); every ratio is a ratio of medians against `direct` (plain) in the same run,
except the p99 against the issue's bar: the median of per-repeat ratios. HTTP.tsv (the
HTTP and HTTP/2 measures, rendered in full by report_http.py) adds those paths' rows to
the "issue's targets" table.
"""

import os
import statistics
import sys
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report_http  # noqa: E402 (beside this file)

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

# The bars of issue #17: (label, measure, suite, peers, factor, higher is better, CPU/op
# bar or None). The issue sets no TLS rate bars; its plain ones are applied to TLS.
TARGETS = [
    ("64 B msg/s", "echo64", "plain", ["nginx", "haproxy"], 1.05, True, 0.95),
    ("64 KiB MB/s", "echo64k", "plain", ["nginx", "haproxy"], 1.5, True, None),
    ("p99 at fixed rate", "p99", "plain", ["nginx", "haproxy"], 1.0, False, None),
    ("new connections/s", "connrate", "plain", ["nginx", "haproxy"], 1.1, True, 0.9),
    ("TLS 64 B msg/s", "echo64", "tls", ["nginx", "haproxy"], 1.05, True, None),
    ("TLS 64 KiB MB/s", "echo64k", "tls", ["nginx", "haproxy"], 1.5, True, None),
    ("TLS p99 at fixed rate", "p99", "tls", ["nginx", "haproxy"], 1.0, False, None),
    ("TLS new connections/s", "connrate", "tls", ["nginx", "haproxy"], 1.1, True, None),
]
# Idle memory bars of #17, KiB per relayed connection: plain, TLS.
IDLE_BAR_KIB = {"plain": 2.0, "tls": 6.0}
# The admin registry has no bar in #13/#17; these are this report's: its RSS per entry
# (the entry, its allocation and its B-tree slot) within an eighth of #17's 2.0 KiB idle
# budget, and making, inserting and removing its entry under 2.5% of #17's 40,000
# instructions per new connection.
REGISTRY_BAR_BYTES = 256
REGISTRY_BAR_INSTR = 1000


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


def per_rep_ratios(t, suite, m, peers, higher, target="wsgate"):
    """wsgate ÷ the best peer of the same repeat, one per repeat that has both."""
    reps = []
    for (s, mm, rep), vals in sorted(t.by_rep.items()):
        if s == suite and mm == m and target in vals:
            pv = [vals[x] for x in peers if x in vals]
            if pv and (max(pv) if higher else min(pv)):
                reps.append(vals[target] / (max(pv) if higher else min(pv)))
    return reps


def quartiles(v):
    """(first, third) quartile of at least 4 values, else None."""
    if len(v) < 4:
        return None
    q = statistics.quantiles(v, n=4)
    return q[0], q[2]


def targets_section(t, runs, http_runs):
    out = []
    p = out.append
    p("")
    p("## wsgate against the issue's targets")
    p("")
    p("wsgate ÷ the best peer (ratio of medians; for p99 the median of the per-repeat ratios); "
      "per-repeat: the range of that ratio within each repeat, whose targets ran back to back; "
      "CPU/op: wsgate's CPU time per message, connection or request ÷ the lowest peer's (below 1 is "
      "better; the figure least disturbed by other load). Bars from issues #17 and #13; where "
      "neither sets one (TLS rates, HTTP/2 requests, JWT, the registry) the row says what it applies.")
    p("")
    p("| measure | wsgate | best peer | wsgate ÷ best | per-repeat | CPU/op ÷ best | bar | met |")
    p("|---|---|---|---|---|---|---|---|")

    def row(label, w, best_txt, r, rng, cpu_txt, bar, met):
        p(f"| {label} | {w} | {best_txt} | {r} | {rng} | {cpu_txt} | {bar} | "
          f"{'–' if met is None else ('yes' if met else '**no**')} |")

    for label, m, suite, peers, factor, higher, cpu_bar in TARGETS:
        w = t.median(suite, "wsgate", m)
        peer_vals = {x: t.median(suite, x, m) for x in peers if t.median(suite, x, m) is not None}
        if w is None or not peer_vals:
            continue
        best_name = (max if higher else min)(peer_vals, key=peer_vals.get)
        best = peer_vals[best_name]
        reps = per_rep_ratios(t, suite, m, peers, higher)
        r = statistics.median(reps) if m == "p99" and reps else w / best
        rng = f"{min(reps):.2f}–{max(reps):.2f}" if len(reps) > 1 else "–"
        met = (r >= factor) if higher else (r <= factor)
        fmt = fmt_rate if m in ("echo64", "connrate") else fmt_num
        cpu_txt, cpu_r = "–", None
        if m in ("echo64", "echo64k", "connrate"):
            key = "conn_per_s" if m == "connrate" else "msg_per_s"
            wc = per_op(t, runs, suite, "wsgate", m, key)
            pc = [c for c in (per_op(t, runs, suite, x, m, key) for x in peers) if c]
            if wc and pc:
                cpu_r = wc / min(pc)
                cpu_txt = f"{cpu_r:.2f}×"
        bar = f"{'≥' if higher else '≤'} {factor}×"
        if cpu_bar is not None:
            bar += f", CPU ≤ {cpu_bar}×"
            met = met and cpu_r is not None and cpu_r <= cpu_bar
        row(label, fmt(w), f"{best_name} {fmt(best)}", f"{r:.2f}×", rng, cpu_txt, bar, met)
    for suite in ("plain", "tls"):
        for m, label in (("idle", "idle KiB/conn"), ("idle_used", "used-idle KiB/conn")):
            wi = t.median(suite, "wsgate", m)
            if wi is None:
                continue
            peers = {x: t.median(suite, x, m) for x in ("nginx", "haproxy") if t.median(suite, x, m) is not None}
            peer_txt = ", ".join(f"{x} {v:.2f}" for x, v in peers.items())
            bar = IDLE_BAR_KIB[suite]
            row(("TLS " if suite == "tls" else "") + label, f"{wi:.2f}", peer_txt or "–", "–", "–", "–",
                f"≤ {bar} KiB", wi <= bar)

    # HTTP/1.1 and HTTP/2 requests (from the HTTP measures).
    med = report_http.med
    for label, suite, w_key, peers, bar_txt in (
            ("HTTP/1.1 req/s", "http1", "wsgate-http", ["nginx-http", "haproxy-http"],
             "≥ 1.0× nginx, p99 no worse (#13)"),
            ("HTTP/2 req/s (TLS)", "http2", "wsgate-h2", ["nginx-h2"], "≥ 1.0× nginx (#13's HTTP/1.1 bar)")):
        w = med(http_runs, (suite, w_key, suite), "req_per_s")
        pv = {x: med(http_runs, (suite, x, suite), "req_per_s") for x in peers}
        pv = {x: v for x, v in pv.items() if v}
        if not w or not pv:
            continue
        best = max(pv, key=pv.get)
        n = pv.get(peers[0])
        wc = med(http_runs, (suite, w_key, suite), "proxy_us_per_op")
        pc = [c for c in (med(http_runs, (suite, x, suite), "proxy_us_per_op") for x in pv) if c]
        met = bool(n) and w / n >= 1.0
        p99_txt = ""
        if suite == "http1":
            wp, np_ = (med(http_runs, ("http1", x, "http1"), "p99_us") for x in (w_key, "nginx-http"))
            met = met and wp is not None and np_ is not None and wp <= np_
            p99_txt = f"p99 {fmt_num(wp, 0)} vs nginx {fmt_num(np_, 0)} µs"
        notes = ([f"{w / n:.2f}× nginx"] if n and best != peers[0] else []) + ([p99_txt] if p99_txt else [])
        row(label, fmt_rate(w), f"{report_http.name(best)} {fmt_rate(pv[best])}",
            f"{w / pv[best]:.2f}×" + (f" ({'; '.join(notes)})" if notes else ""), "–",
            f"{wc / min(pc):.2f}×" if wc and pc else "–", bar_txt, met)
    h1r = med(http_runs, ("h2ws", "wsgate-tls", "h2echo_h1"), "msg_per_s")
    for (s_, tgt, m), _ in sorted(http_runs.items()):
        if s_ == "h2ws" and tgt == "wsgate-tls" and m.startswith("h2echo_h2"):
            r = med(http_runs, (s_, tgt, m), "msg_per_s")
            if r and h1r:
                row(f"64 B WebSocket echo over h2 ({m.removeprefix('h2echo_h2x')} conn.) ÷ over h1, TLS",
                    fmt_rate(r), f"wsgate h1 {fmt_rate(h1r)}", f"{r / h1r:.2f}×", "–", "–", "≥ 0.9× (#13)", r / h1r >= 0.9)
    idle_h2 = num(next(iter(http_runs.get(("h2ws", "wsgate-tls", "h2idle"), [])), {}).get("kib_per_conn"))
    if idle_h2 is not None:
        row("idle h2 WebSocket stream KiB (its share of the h2 connection included)", f"{idle_h2:.2f}", "–", "–",
            "–", "–", "≤ 2 KiB beyond its connection (#17)", idle_h2 <= 2.0)

    # JWT at the door: the connection bar of #17 with authentication on (the peers check none).
    base = t.median("auth", "wsgate", "connrate")
    peers = {x: t.median("plain", x, "connrate") for x in ("nginx", "haproxy") if t.median("plain", x, "connrate")}
    base_cpu = per_op(t, runs, "auth", "wsgate", "connrate", "conn_per_s")
    for target in ("wsgate-jwt-es256", "wsgate-jwt-rs256"):
        w = t.median("auth", target, "connrate")
        if w is None or not peers:
            continue
        best = max(peers, key=peers.get)
        wc = per_op(t, runs, "auth", target, "connrate", "conn_per_s")
        extra = f"; {w / base:.2f}× wsgate without auth" if base else ""
        extra += f", +{wc - base_cpu:.0f} µs CPU/conn" if wc is not None and base_cpu is not None else ""
        row(f"new connections/s with JWT ({target.removeprefix('wsgate-jwt-').upper()}, JWKS cached)",
            fmt_rate(w), f"{best} {fmt_rate(peers[best])} (no auth, plain suite)", f"{w / peers[best]:.2f}×{extra}",
            "–", "–", "≥ 1.1× (#17's connection bar, with auth on)", w / peers[best] >= 1.1)

    # The admin registry, counted (benches/registry.sh).
    reg = next((r["kv"] for r in runs if r["suite"] == "registry" and r["ok"]), None)
    if reg:
        rss, entry = num(reg.get("rss_bytes_per_entry")), num(reg.get("entry_bytes"))
        oc = num(reg.get("open_close_instr"))
        if rss is not None:
            row("admin registry: bytes per connection (RSS per entry; size of the entry)",
                f"{rss:.0f} B ({entry:.0f} B)", "–", "–", "–", "–",
                f"≤ {REGISTRY_BAR_BYTES} B (⅛ of #17's 2.0 KiB idle bar)", rss <= REGISTRY_BAR_BYTES)
        if oc is not None:
            row("admin registry: instructions per connection (make + insert + remove the entry)",
                f"{oc:,.0f} ({reg.get('make_instr', '–')} + {reg.get('insert_instr')} + {reg.get('remove_instr')})",
                "–", "–", "–", "–",
                f"≤ {REGISTRY_BAR_INSTR:,} (2.5% of #17's 40,000 per connection)", oc <= REGISTRY_BAR_INSTR)
            row("admin registry: instructions per connection listed (pages of 1,000)",
                reg.get("list_instr_per_entry", "–"), "–", "–", "–", "–", "– (no bar)", None)
    elif any(r["suite"] == "registry" for r in runs):
        row("admin registry", "failed (see below)", "–", "–", "–", "–", "–", False)
    return out


def latency_section(runs):
    """p99 per repeat with the machine's other load beside it."""
    by = defaultdict(dict)  # (suite, rep) -> target -> kv
    for r in runs:
        if r["measure"] == "latency" and r["ok"]:
            by[(r["suite"], r["rep"])][r["target"]] = dict(r["kv"], load=r["load"])
    if not by:
        return []
    out = ["", "## p99 at a fixed rate, per repeat", "",
           "Each repeat ran every target back to back (order rotated per repeat); a p99 each, µs. "
           "wsgate ÷ best: against the lower p99 of nginx and HAProxy in that repeat. Beside wsgate's "
           "run: the 1-min load average, the CPU of every other process (and interrupt work charged to "
           "none) on the server core and on the load generator's core, % of that core, and how late "
           "the load generator itself sent (its send-lag p99; its floor is tokio's 1 ms timer, "
           "about 2 ms at p99 on a quiet machine: far above that the load generator was starved, "
           "and the repeat measures the machine, not the proxies).", ""]
    for suite in ("plain", "tls"):
        reps = sorted(rep for (s, rep) in by if s == suite)
        if not reps:
            continue
        targets = []
        for rep in reps:
            targets += [x for x in by[(suite, rep)] if x not in targets]
        out.append(f"| {suite} rep | " + " | ".join(targets) +
                   " | wsgate ÷ best | load | other CPU, server core % | other CPU, lg core % | lg send lag p99 µs |")
        out.append("|---" * (len(targets) + 6) + "|")
        ratios, other = [], []
        for rep in reps:
            row = by[(suite, rep)]
            p99 = {x: num(row[x].get("p99_us")) for x in row}
            peers = [p99[x] for x in ("nginx", "haproxy") if p99.get(x)]
            w = row.get("wsgate", {})
            r = p99.get("wsgate") / min(peers) if peers and p99.get("wsgate") else None
            if r is not None:
                ratios.append(r)
            o = num(w.get("other_srv_cpu_pct"))
            if o is not None:
                other.append(o)
            out.append(f"| {rep} | " + " | ".join(fmt_num(p99.get(x), 0) for x in targets) +
                       f" | {fmt_ratio(r)} | {w.get('load', '–')} | {w.get('other_srv_cpu_pct', '–')} "
                       f"| {w.get('other_lg_cpu_pct', '–')} | {w.get('send_lag_p99_us', '–')} |")
        if ratios:
            q = quartiles(ratios)
            med_r = statistics.median(ratios)
            out += ["", f"{suite}: wsgate ÷ best peer, median of {len(ratios)} per-repeat ratios **{med_r:.2f}×** "
                    f"(range {min(ratios):.2f}–{max(ratios):.2f}"
                    + (f", interquartile {q[0]:.2f}–{q[1]:.2f}" if q else "")
                    + f"; {sum(1 for x in ratios if x <= 1.0)} of {len(ratios)} repeats at or under 1.0×)"
                    + (f"; other processes on the server core during wsgate's runs: median "
                       f"{statistics.median(other):.1f}%, max {max(other):.1f}%" if other else "") + ".", ""]
    return out


HOST_GIB = 16
HOST_RESERVED_GIB = 2  # kept for the system, page cache and bursts
EPHEMERAL_PORTS = 60999 - 32768 + 1  # Linux's default ip_local_port_range
NR_OPEN = 1 << 20  # Linux's default fs.nr_open: descriptors one process may have


def kernel_kib(runs, suite, target, measure="idle_used"):
    """Slab + socket-buffer KiB per connection of one idle run, or None."""
    for r in runs:
        if r["ok"] and r["suite"] == suite and r["target"] == target and r["measure"] == measure:
            slab, buf = num(r["kv"].get("kernel_slab_kib_per_conn")), num(r["kv"].get("kernel_buf_kib_per_conn"))
            if slab is not None and buf is not None:
                return slab + buf
    return None


def scaling_section(t, runs, meta):
    """Connections per host and what 1 M / 10 M take, on paper from this run's figures."""
    cols = {}
    for suite in ("plain", "tls"):
        user = t.median(suite, "wsgate", "idle_used") or t.median(suite, "wsgate", "idle")
        measure = "idle_used" if t.median(suite, "wsgate", "idle_used") else "idle"
        kw, kd = kernel_kib(runs, suite, "wsgate", measure), kernel_kib(runs, "plain", "direct", measure)
        cpu = per_op(t, runs, suite, "wsgate", "echo64")
        if user is None:
            continue
        cols[suite] = dict(user=user, kernel=(kw - kd) if kw is not None and kd is not None else None, cpu=cpu)
    if not cols:
        return []
    out = ["", "## Scaling, on paper from this run's figures", "",
           f"Inputs from this run (wsgate {meta.get('commit', '?')}): wsgate's RSS per used-idle connection "
           "(`idle_used`, one 64 B echo each, then idle); the kernel's memory for wsgate's two sockets per "
           "connection (slab caches of a TCP socket from /proc/slabinfo + socket buffers from "
           "/proc/net/sockstat, through wsgate − direct in the same measure: the method of "
           "benches/sockmem.sh); wsgate's CPU per echoed 64 B message (two relayed frames). A host "
           f"is {HOST_GIB} GiB with {HOST_RESERVED_GIB} GiB kept for the system. Busy connections hold "
           "more (a frame in flight, socket buffers growing with traffic), so these are upper bounds "
           "for mostly idle fleets.", "",
           "| | " + " | ".join("plain ws" if s == "plain" else "wss (TLS on the client hop)" for s in cols) + " |",
           "|---" * (len(cols) + 1) + "|"]
    usable = (HOST_GIB - HOST_RESERVED_GIB) * 1024 * 1024  # KiB

    def line(label, f):
        out.append(f"| {label} | " + " | ".join(f(c) for c in cols.values()) + " |")

    def total(c):
        return c["user"] + (c["kernel"] or 0)

    line("wsgate memory per connection", lambda c: f"{c['user']:.2f} KiB")
    line("kernel memory per connection (wsgate's 2 sockets)",
         lambda c: "– (needs root)" if c["kernel"] is None else f"{c['kernel']:.2f} KiB")
    line("together", lambda c: f"{total(c):.2f} KiB")
    per_host = {s: int(usable / total(c)) for s, c in cols.items()}
    line(f"**connections per {HOST_GIB} GiB host**", lambda c: f"**{int(usable / total(c)):,}**")
    line("descriptors per full host (2 per connection)",
         lambda c: f"{2 * int(usable / total(c)):,}" + (f" (over fs.nr_open's {NR_OPEN:,}: raise it, or "
                                                          f"{-(-2 * int(usable / total(c)) // NR_OPEN)} processes)"
                                                          if 2 * usable / total(c) > NR_OPEN else ""))
    line("echoed 64 B messages/s per core (1 ÷ CPU per message)",
         lambda c: "–" if not c["cpu"] else f"{1e6 / c['cpu']:,.0f} ({c['cpu']:.1f} µs each)")
    for n, name in ((1_000_000, "1 M"), (10_000_000, "10 M")):
        line(f"{name} connections: memory, hosts",
             lambda c, n=n: f"{n * total(c) / 1024 / 1024:,.1f} GiB, {-(-n * total(c) // usable):,.0f} host(s) by memory")
        line(f"{name} connections: cores at 1 message/s each way per connection",
             lambda c, n=n: "–" if not c["cpu"] else f"{n * c['cpu'] / 1e6:,.1f}")
        line(f"{name} connections: descriptors (fleet)", lambda c, n=n: f"{2 * n:,}")
        line(f"{name} connections: (source address, backend address) pairs towards backends",
             lambda c, n=n: f"{-(-n // EPHEMERAL_PORTS):,} (ports {EPHEMERAL_PORTS:,} per pair)")
    out += ["", "Per full host the backend connections need "
            + ", ".join(f"{-(-per_host[s] // EPHEMERAL_PORTS)} ({s})" for s in cols)
            + " source-address × backend-address pairs (`source_addresses`, or more backend addresses)."]
    return out


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
    if num(meta.get("duration_s")) is not None:
        d = int(num(meta["duration_s"]))
        m = int(num(meta.get("measure_s")) or d)
        p(f"The whole run took {d // 60} min {d % 60} s ({m // 60} min {m % 60} s after the builds).  ")
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
    http_runs = report_http.parse(sys.argv[3])[0] if len(sys.argv) > 3 else {}
    out += targets_section(t, runs, http_runs)
    out += latency_section(runs)
    out += scaling_section(t, runs, meta)

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
