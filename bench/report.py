#!/usr/bin/env python3
"""Summarise bench/compare.sh results (results.jsonl) as Markdown: medians, spread, sealcast/reference ratios."""
import json
import statistics
import sys
from collections import defaultdict


def load(path):
    rows = defaultdict(lambda: defaultdict(list))
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            res = rec.get("result") or {}
            runs = res.get("runs") or []
            cpu = sum(r.get("server_cpu_s", 0) for r in runs)
            if runs and cpu > 0:
                res["per_server_cpu_second"] = sum(r.get("deliveries", 0) for r in runs) / cpu
            server = res.get("server", "sealcast") if rec["name"] != "crypto_limit" else "bare"
            if rec.get("baseline"):
                server = "baseline"
            rows[rec["name"]][server].append(res)
    return rows


METRICS = [
    # (name prefix, metric key, label, higher is better)
    ("fanout", "rate_median", "deliveries/s (wall)", True),
    ("fanout", "per_server_cpu_second", "deliveries per server CPU-second", True),
    ("connect", "per_server_cpu_second", "sessions per server CPU-second", True),
    ("connect", "rate", "sessions/s (wall)", True),
    ("connect", "latency_ms_p50", "connect→connected p50 ms", False),
    ("connect", "latency_ms_p99", "connect→connected p99 ms", False),
    ("crypto_limit", "per_cpu_second", "keygen+2 ECDH+HKDF per CPU-second", True),
    ("idle", "kib_per_conn", "RSS KiB per connection", False),
    ("connect", "failures", "failed sessions", False),
    ("storm", "failures", "failed attempts (reached the server, no session)", False),
    ("storm", "reestablished", "sessions re-established", True),
    ("storm", "secs_first_to_last", "seconds, first to last re-established", False),
    ("storm", "per_server_cpu_second", "sessions per server CPU-second", True),
    ("storm", "peak_rss_kib", "peak server RSS KiB", False),
    ("recover", "recover_cpu_s", "server CPU s: clients recovering M missed messages", False),
    ("recover", "live_cpu_s", "server CPU s: the same clients joining, then M live messages", False),
    ("recover", "recover_over_live", "recovery / live CPU", False),
    ("latency", "p50_ms", "p50 ms", False),
    ("latency", "p99_ms", "p99 ms", False),
    ("latency", "p999_ms", "p999 ms", False),
    ("latency", "lost", "lost messages", False),
]


def fmt(x):
    if x is None:
        return "–"
    if abs(x) >= 100000:
        return f"{x / 1e6:.3f} M"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.3g}" if abs(x) < 10 else f"{x:.1f}"


def stats(vals):
    vals = [v for v in vals if isinstance(v, (int, float))]
    if not vals:
        return None
    return statistics.median(vals), min(vals), max(vals), len(vals)


def main():
    rows = load(sys.argv[1])
    ab = any("baseline" in by for by in rows.values())
    head = "| scenario | metric | sealcast median (min–max, n) | reference median (min–max, n) | ratio |"
    print(head + (" baseline median (min–max, n) | current / baseline |" if ab else ""))
    print("|---|---|---|---|---|" + ("---|---|" if ab else ""))
    for name in rows:
        for prefix, key, label, higher in METRICS:
            if not name.startswith(prefix):
                continue
            cells = {}
            for server in ("sealcast", "ignis", "bare", "baseline"):
                s = stats([r.get(key) for r in rows[name].get(server, [])])
                cells[server] = s
            a = cells["sealcast"] or cells["bare"]
            b = cells["ignis"]
            if a is None and b is None:
                continue
            ratio = ""
            if a and b and b[0] and key not in ("failures", "lost", "reestablished"):
                ratio = f"{a[0] / b[0]:.2f}×"
            cell = lambda s: "–" if s is None else f"{fmt(s[0])} ({fmt(s[1])}–{fmt(s[2])}, {s[3]})"
            line = f"| {name} | {label} | {cell(a)} | {cell(b)} | {ratio} |"
            if ab:
                base = cells["baseline"]
                vs = f"{a[0] / base[0]:.2f}×" if a and base and base[0] else ""
                line += f" {cell(base)} | {vs} |"
            print(line)
    # Sanity: exactness and closes.
    bad = []
    for name, by in rows.items():
        for server, rs in by.items():
            for r in rs:
                if (r.get("error") or r.get("exact") is False or r.get("unexpected_closes")
                        or r.get("failures") or r.get("lost") or r.get("timed_out")):
                    bad.append(f"{name}/{server}: exact={r.get('exact')} closes={r.get('unexpected_closes')} "
                               f"failures={r.get('failures')} {r.get('failure_kinds') or r.get('first_error') or ''} "
                               f"lost={r.get('lost')} error={r.get('error')}")
    if bad:
        print("\nAnomalies:\n" + "\n".join(f"- {b}" for b in bad))


if __name__ == "__main__":
    main()
