#!/usr/bin/env python3
"""Plot connections held and memory over time from bench/scale's CSV.

Writes an SVG by hand (no matplotlib needed):

    bench/scale/plot.py SCALE.csv > docs/scale-memory.svg

SCALE.csv is what `go run ./bench/scale -csv SCALE.csv` writes: seconds,
connections, heap_mib, rss_mib. Two panels share the time axis: the
connections the stack holds, and its Go heap and resident set in MiB.
"""
import csv
import sys

W, H = 760, 520
LEFT, RIGHT, TOP = 80, 20, 40
PANEL_H, GAP = 180, 60


def nice(v):
    """A round number at or above v for an axis maximum."""
    if v <= 0:
        return 1
    mag = 10 ** (len(str(int(v))) - 1)
    for m in (1, 1.2, 1.6, 2, 2.5, 3.2, 4, 5, 6, 8, 10):
        if m * mag >= v:
            return m * mag
    return 10 * mag


def panel(out, y0, xs, series, ymax, ylabel, xmax):
    """Draw one panel at vertical offset y0 with lines series[(label, ys, colour)]."""
    pw = W - LEFT - RIGHT
    sx = lambda x: LEFT + pw * x / xmax
    sy = lambda y: y0 + PANEL_H - PANEL_H * y / ymax
    out.append(f'<rect x="{LEFT}" y="{y0}" width="{pw}" height="{PANEL_H}" fill="none" stroke="#888"/>')
    for i in range(5):
        v = ymax * i / 4
        y = sy(v)
        out.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + pw}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{v:,.0f}</text>')
    out.append(f'<text x="16" y="{y0 + PANEL_H / 2}" font-size="12" transform="rotate(-90 16 {y0 + PANEL_H / 2})" text-anchor="middle">{ylabel}</text>')
    for i, (label, ys, colour) in enumerate(series):
        pts = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in zip(xs, ys))
        out.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="2"/>')
        out.append(f'<text x="{LEFT + 10}" y="{y0 + 16 + 14 * i}" font-size="12" fill="{colour}">{label}</text>')


def main():
    rows = list(csv.DictReader(open(sys.argv[1])))
    xs = [float(r["seconds"]) for r in rows]
    conns = [float(r["connections"]) for r in rows]
    heap = [float(r["heap_mib"]) for r in rows]
    rss = [float(r["rss_mib"]) for r in rows]
    xmax = nice(max(xs))
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="14">ustack holding {max(conns):,.0f} TCP connections: connections and memory over time</text>']
    panel(out, TOP, xs, [("connections held", conns, "#1f77b4")], nice(max(conns)), "connections", xmax)
    y1 = TOP + PANEL_H + GAP
    panel(out, y1, xs, [("process RSS (MiB)", rss, "#d62728"), ("Go heap in use (MiB)", heap, "#2ca02c")],
          nice(max(rss + heap)), "MiB", xmax)
    pw = W - LEFT - RIGHT
    for i in range(5):
        v = xmax * i / 4
        x = LEFT + pw * v / xmax
        out.append(f'<text x="{x:.1f}" y="{y1 + PANEL_H + 16}" text-anchor="middle" font-size="11">{v:g}</text>')
    out.append(f'<text x="{LEFT + pw / 2}" y="{y1 + PANEL_H + 36}" text-anchor="middle" font-size="12">seconds since the first dial</text>')
    out.append("</svg>")
    print("\n".join(out))


if __name__ == "__main__":
    main()
