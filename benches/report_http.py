#!/usr/bin/env python3
"""Renders the HTTP and HTTP/2 measures of benches/compare.sh as markdown.

    python3 benches/report_http.py META.txt HTTP.tsv >> report.md

HTTP.tsv: suite (http1 | http2 | h2ws), target, measure, rep, 1-min load average, and
the `key=value ...` result (wrk/h2load parsed by compare.sh, or a loadgen RESULT line).
Rates are medians of the repeats with their spread (half the min-max range, in % of the
median); ratios are ratios of medians from the same run. CPU per operation is the
proxy's CPU time (utime + stime from /proc) divided by the operations in that window.
"""

import statistics
import sys
from collections import defaultdict


def parse(path):
    runs = defaultdict(list)  # (suite, target, measure) -> [kv, ...]
    loads, failed = [], []
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 6:
                continue
            suite, target, measure, _rep, load, result = parts[:6]
            loads.append(float(load))
            if result.startswith("FAILED"):
                failed.append(f"{suite} {target} {measure}: {result}")
                continue
            kv = dict(i.split("=", 1) for i in result.split() if "=" in i)
            runs[(suite, target, measure)].append(kv)
    return runs, loads, failed


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def values(runs, key, k):
    return [x for x in (num(kv.get(k)) for kv in runs.get(key, [])) if x is not None]


def med(runs, key, k):
    v = values(runs, key, k)
    return statistics.median(v) if v else None


def spread(runs, key, k):
    v = values(runs, key, k)
    if len(v) < 2 or not statistics.median(v):
        return ""
    return f" ±{(max(v) - min(v)) / 2 / statistics.median(v) * 100:.0f}%"


def proxy_us_per_msg(runs, key):
    """Proxy CPU µs per message for loadgen rows (first watched PID is the proxy)."""
    out = []
    for kv in runs.get(key, []):
        cpu, rate = kv.get("watch_cpu_pct", "").split(",")[0], num(kv.get("msg_per_s"))
        if num(cpu) is not None and rate:
            out.append(num(cpu) / 100 / rate * 1e6)
    return statistics.median(out) if out else None


def f(v, digits=0):
    if v is None:
        return "–"
    return f"{v:,.{digits}f}"


def ratio(a, b):
    return f"{a / b:.2f}×" if a and b else "–"


def name(target):
    for suffix in ("-http", "-h2", "-tls"):
        target = target.removesuffix(suffix)
    return {"http-direct": "direct", "wsgate-pool32": "wsgate, default pool"}.get(target, target)


def main():
    meta = dict(line.rstrip("\n").split("=", 1) for line in open(sys.argv[1]) if "=" in line)
    runs, loads, failed = parse(sys.argv[2])
    out = ["", "## HTTP and HTTP/2", ""]
    out.append(f"{meta.get('started', '?')}, commit {meta.get('commit', '?')}, {meta.get('cpu', '?')}; "
               f"{meta.get('settings', '')}")
    out.append(f"{meta.get('http_settings', '')}.")
    if loads:
        out.append(f"1-min load average during these measures: {min(loads):.2f}–{max(loads):.2f}.")
    goals = []

    order = ["http-direct", "wsgate-http", "wsgate-pool32-http", "nginx-http", "haproxy-http"]
    h1 = sorted({t for (s, t, _) in runs if s == "http1"}, key=lambda t: order.index(t) if t in order else 9)
    if h1:
        out += ["", "### HTTP/1.1 keep-alive GETs (wrk)", "",
                "| target | req/s | × direct | × nginx | p50 µs | p99 µs | proxy CPU µs/req | backend CPU µs/req | wrk CPU % | errors |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        d = med(runs, ("http1", "http-direct", "http1"), "req_per_s")
        n = med(runs, ("http1", "nginx-http", "http1"), "req_per_s")
        for t in h1:
            k = ("http1", t, "http1")
            r = med(runs, k, "req_per_s")
            err = sum(values(runs, k, "errors"))
            proxy = "–" if t == "http-direct" else f(med(runs, k, "proxy_us_per_op"), 2)
            out.append(f"| {name(t)} | {f(r)}{spread(runs, k, 'req_per_s')} | {ratio(r, d)} | {ratio(r, n)} | "
                       f"{f(med(runs, k, 'p50_us'))} | {f(med(runs, k, 'p99_us'))} | {proxy} | "
                       f"{f(med(runs, k, 'backend_us_per_op'), 2)} | {f(max(values(runs, k, 'cpu_pct'), default=None))} | {err:.0f} |")
        w = ("http1", "wsgate-http", "http1")
        wr, wp, np_ = med(runs, w, "req_per_s"), med(runs, w, "p99_us"), med(runs, ("http1", "nginx-http", "http1"), "p99_us")
        if wr and n:
            ok = wr >= n and wp is not None and np_ is not None and wp <= np_
            goals.append(f"HTTP/1.1 req/s wsgate ÷ nginx ≥ 1.0 with p99 no worse: {wr / n:.2f}×, p99 {f(wp)} µs vs {f(np_)} µs → {'met' if ok else 'MISSED'}")

    h2 = sorted({t for (s, t, _) in runs if s == "http2"})
    if h2:
        out += ["", "### HTTP/2 requests over TLS (h2load)", "",
                "| target | req/s | × nginx | mean µs | proxy CPU µs/req | backend CPU µs/req | h2load CPU % | errors |",
                "|---|---|---|---|---|---|---|---|"]
        n = med(runs, ("http2", "nginx-h2", "http2"), "req_per_s")
        for t in sorted(h2, key=lambda t: t != "wsgate-h2"):
            k = ("http2", t, "http2")
            r = med(runs, k, "req_per_s")
            out.append(f"| {name(t)} | {f(r)}{spread(runs, k, 'req_per_s')} | {ratio(r, n)} | {f(med(runs, k, 'mean_us'))} | "
                       f"{f(med(runs, k, 'proxy_us_per_op'), 2)} | {f(med(runs, k, 'backend_us_per_op'), 2)} | "
                       f"{f(max(values(runs, k, 'cpu_pct'), default=None))} | {sum(values(runs, k, 'errors')):.0f} |")

    echo = sorted({(t, m) for (s, t, m) in runs if s == "h2ws" and m.startswith("h2echo_")})
    if echo:
        out += ["", "### 64 B WebSocket echo over HTTP/2 (RFC 8441) vs HTTP/1.1, TLS (loadgen)", "",
                "| target | transport | msg/s | × h1 | proxy CPU µs/msg | loadgen CPU % |", "|---|---|---|---|---|---|"]
        for t in sorted({t for t, _ in echo}, key=lambda t: t != "wsgate-tls"):
            h1r = med(runs, ("h2ws", t, "h2echo_h1"), "msg_per_s")
            for m in sorted({m for tt, m in echo if tt == t}, key=lambda m: (m != "h2echo_h1", len(m), m)):
                k = ("h2ws", t, m)
                r = med(runs, k, "msg_per_s")
                kv = runs[k][0]
                what = (f"h1: {kv.get('conns')} connections" if m == "h2echo_h1"
                        else f"h2: {kv.get('streams')} streams on {kv.get('h2conns')} connection(s)")
                out.append(f"| {name(t)} | {what} | {f(r)}{spread(runs, k, 'msg_per_s')} | {ratio(r, h1r)} | "
                           f"{f(proxy_us_per_msg(runs, k), 2)} | {f(max(values(runs, k, 'cpu_pct'), default=None))} |")
                if t == "wsgate-tls" and m != "h2echo_h1" and r and h1r:
                    goals.append(f"64 B echo over h2 ÷ over h1 through wsgate ({what}) ≥ 0.9: {r / h1r:.2f}× → {'met' if r / h1r >= 0.9 else 'MISSED'}")

    idle = sorted({t for (s, t, m) in runs if s == "h2ws" and m.startswith("h2idle")})
    if idle:
        out += ["", "### Idle WebSockets: RSS per connection (h1 over TLS) and per h2 stream", "",
                "| target | h1 over TLS KiB/conn | h2 KiB/stream | WebSockets each |", "|---|---|---|---|"]
        for t in sorted(idle, key=lambda t: t != "wsgate-tls"):
            a, b = runs.get(("h2ws", t, "h2idle_h1"), [{}])[0], runs.get(("h2ws", t, "h2idle"), [{}])[0]
            out.append(f"| {name(t)} | {a.get('kib_per_conn', '–')} | {b.get('kib_per_conn', '–')} | {b.get('conns', '–')} |")

    if goals:
        out += ["", "Goals:", ""] + [f"- {g}" for g in goals]
    if failed:
        out += ["", "Failed runs:", ""] + [f"- {x}" for x in failed]
    print("\n".join(out))


if __name__ == "__main__":
    main()
