#!/usr/bin/env python3
"""SVG plots from bench/compare.sh results: throughput vs room size, memory vs connections (no dependencies)."""
import json
import math
import statistics
import sys
from collections import defaultdict

COLORS = {"sealcast": "#d62728", "ignis": "#1f77b4", "sealcast encrypted": "#ff7f0e", "ignis encrypted": "#17becf",
          "sealcast plain": "#d62728", "ignis plain": "#1f77b4"}


def svg_plot(path, title, xlabel, ylabel, series, logx=False):
    W, H, L, R, T, B = 640, 400, 80, 170, 40, 50
    pts = [p for s in series.values() for p in s]
    if not pts:
        return
    xs = [p[0] for p in pts]
    tx = (lambda x: math.log10(x)) if logx else (lambda x: x)
    x0, x1 = tx(min(xs)), tx(max(xs))
    if x1 == x0:
        x1 = x0 + 1
    y1 = max(p[1] for p in pts) * 1.1 or 1
    sx = lambda x: L + (tx(x) - x0) / (x1 - x0) * (W - L - R)
    sy = lambda y: H - B - y / y1 * (H - T - B)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>',
           f'<line x1="{L}" y1="{H - B}" x2="{W - R}" y2="{H - B}" stroke="black"/>',
           f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H - B}" stroke="black"/>',
           f'<text x="{(L + W - R) / 2}" y="{H - 10}" text-anchor="middle">{xlabel}</text>',
           f'<text x="15" y="{(T + H - B) / 2}" text-anchor="middle" transform="rotate(-90 15 {(T + H - B) / 2})">{ylabel}</text>']
    for i in range(6):
        y = y1 * i / 5
        out.append(f'<line x1="{L - 4}" y1="{sy(y):.1f}" x2="{W - R}" y2="{sy(y):.1f}" stroke="#ddd"/>')
        lab = f"{y / 1e6:.2f}M" if y1 > 1e5 else f"{y:,.0f}" if y1 > 100 else f"{y:.1f}"
        out.append(f'<text x="{L - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{lab}</text>')
    for x in sorted(set(xs)):
        out.append(f'<text x="{sx(x):.1f}" y="{H - B + 16}" text-anchor="middle">{x:,}</text>')
    for k, (name, s) in enumerate(series.items()):
        s = sorted(s)
        c = COLORS.get(name, "#555")
        out.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>' %
                   (c, " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in s)))
        for x, y in s:
            out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{c}"/>')
        out.append(f'<rect x="{W - R + 10}" y="{T + 18 * k}" width="12" height="12" fill="{c}"/>')
        out.append(f'<text x="{W - R + 28}" y="{T + 18 * k + 10}">{name}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    src, outdir = sys.argv[1], sys.argv[2]
    fan = defaultdict(lambda: defaultdict(list))
    mem = defaultdict(lambda: defaultdict(list))
    for line in open(src):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        r = rec.get("result") or {}
        if rec["name"].startswith("fanout_size_") and r.get("rate_median"):
            fan[r["server"]][r["receivers"]].append(r["rate_median"])
        if rec["name"].startswith("idle_") and r.get("samples"):
            key = f'{r["server"]} {r["mode"]}'
            for s in r["samples"]:
                mem[key][s["connections"]].append((s["rss_kib"] - r["rss0_kib"]) / 1024)
    med = lambda d: {k: [(x, statistics.median(v)) for x, v in d[k].items()] for k in d}
    svg_plot(f"{outdir}/fanout_vs_room_size.svg", "Plaintext fan-out throughput vs room size (256 B, one core)",
             "receivers in the room", "deliveries/s (median)", med(fan), logx=True)
    svg_plot(f"{outdir}/memory_vs_connections.svg", "Server RSS growth vs idle authenticated connections",
             "connections", "RSS delta (MiB, median)", med(mem))


if __name__ == "__main__":
    main()
