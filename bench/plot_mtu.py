#!/usr/bin/env python3
"""Plot TCP throughput against MTU for ustack, slirp4netns, pasta and veth.

Reads the Markdown that the benchmarks print and writes an SVG by hand (no
matplotlib needed):

    python3 bench/plot_mtu.py FASTPATH.md SANDBOX.md > docs/throughput-mtu.svg

FASTPATH.md is the output of `go run ./bench/fastpath throughput` (ustack
embedded over a TUN, and kernel-to-kernel veth); SANDBOX.md that of
`bench/sandbox.sh` (ustack sandbox, slirp4netns, pasta). Single-stream
figures are plotted, upload and download in two panels.
"""
import math
import re
import sys


def rows(path):
    """Yield the cells of each Markdown table row in path."""
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("|") and not line.startswith("| ---") and not re.match(r"^\|\s*-", line):
                yield [c.strip() for c in line.strip("|").split("|")]


def num(s):
    try:
        return float(s)
    except ValueError:
        return None


def read(fastpath, sandbox):
    """Return {series: {direction: {mtu: gbps}}}."""
    data = {}

    def put(series, direction, mtu, v):
        if v is not None and v > 0:
            data.setdefault(series, {}).setdefault(direction, {})[mtu] = v

    header = None
    for r in rows(fastpath):
        if r[0] == "MTU":
            header = r
            continue
        if not header or "streams" not in header or len(r) != len(header):
            continue
        c = dict(zip(header, r))
        if c["streams"] != "1":
            continue
        mtu = int(c["MTU"])
        put("ustack embedded (TUN)", c["direction"], mtu, num(c["ustack"]))
        put("veth, kernel to kernel", c["direction"], mtu, num(c["veth"]))
    header = None
    for r in rows(sandbox):
        if r[0] == "MTU":
            header = r
            continue
        if not header or "measure" not in header or len(r) != len(header):
            continue
        c = dict(zip(header, r))
        m = {"upload Gbps": "upload", "download Gbps": "download"}.get(c["measure"])
        if not m:
            continue
        mtu = int(c["MTU"])
        put("ustack sandbox", m, mtu, num(c["ustack"]))
        put("slirp4netns", m, mtu, num(c["slirp4netns"]))
        put("pasta", m, mtu, num(c["pasta"]))
    return data


COLORS = {
    "ustack embedded (TUN)": "#1f77b4",
    "ustack sandbox": "#17becf",
    "slirp4netns": "#ff7f0e",
    "pasta": "#2ca02c",
    "veth, kernel to kernel": "#7f7f7f",
}
DASH = {"veth, kernel to kernel": "6,4"}


def svg(data):
    W, H = 980, 430
    pw, ph = 400, 300  # plot area of one panel
    left, top = 70, 50
    gap = 90
    mtus = sorted({m for s in data.values() for d in s.values() for m in d})
    lo, hi = math.log(min(mtus)), math.log(max(mtus))
    if lo == hi:
        hi = lo + 1
    ymax = max(v for s in data.values() for d in s.values() for v in d.values())
    step = 5 if ymax <= 40 else 10
    ytop = step * math.ceil(ymax / step)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W/2}" y="22" text-anchor="middle" font-size="15">Single-stream TCP throughput against MTU (Gbit/s)</text>']
    for i, direction in enumerate(["upload", "download"]):
        x0 = left + i * (pw + gap)
        X = lambda m: x0 + (math.log(m) - lo) / (hi - lo) * pw
        Y = lambda v: top + ph - v / ytop * ph
        out.append(f'<text x="{x0 + pw/2}" y="{top - 10}" text-anchor="middle" font-size="13">{direction} (guest or ustack sends)</text>' if direction == "upload"
                   else f'<text x="{x0 + pw/2}" y="{top - 10}" text-anchor="middle" font-size="13">{direction} (host or kernel sends)</text>')
        out.append(f'<rect x="{x0}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>')
        v = 0
        while v <= ytop:
            y = Y(v)
            out.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x0+pw}" y2="{y:.1f}" stroke="#ddd"/>')
            out.append(f'<text x="{x0-6}" y="{y+4:.1f}" text-anchor="end">{v}</text>')
            v += step
        for m in mtus:
            x = X(m)
            out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top+ph}" stroke="#eee"/>')
            out.append(f'<text x="{x:.1f}" y="{top+ph+16}" text-anchor="middle">{m}</text>')
        out.append(f'<text x="{x0+pw/2}" y="{top+ph+34}" text-anchor="middle">MTU (bytes, log scale)</text>')
        for name, color in COLORS.items():
            pts = sorted(data.get(name, {}).get(direction, {}).items())
            if not pts:
                continue
            dash = f' stroke-dasharray="{DASH[name]}"' if name in DASH else ""
            path = " ".join(f"{X(m):.1f},{Y(g):.1f}" for m, g in pts)
            out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"{dash}/>')
            for m, g in pts:
                out.append(f'<circle cx="{X(m):.1f}" cy="{Y(g):.1f}" r="3.5" fill="{color}"><title>{name}, {direction}, MTU {m}: {g} Gbit/s</title></circle>')
    # Legend under the panels.
    lx, ly = left, top + ph + 58
    for name, color in COLORS.items():
        if name not in data:
            continue
        dash = f' stroke-dasharray="{DASH[name]}"' if name in DASH else ""
        out.append(f'<line x1="{lx}" y1="{ly-4}" x2="{lx+24}" y2="{ly-4}" stroke="{color}" stroke-width="2"{dash}/>')
        out.append(f'<text x="{lx+30}" y="{ly}">{name}</text>')
        lx += 38 + 7 * len(name)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    data = read(sys.argv[1], sys.argv[2])
    if not data:
        sys.exit("plot_mtu.py: no throughput rows found")
    sys.stdout.write(svg(data))


if __name__ == "__main__":
    main()
