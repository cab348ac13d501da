"""Chart of one bench/compare.sh run: python3 bench/chart.py RESULTS_CSV [OUT_PNG].

Reads results.csv (compare_report.py's medians and ranges) and draws, for each connection count,
proxy CPU µs per request (top row) and p99 latency (bottom row) per scenario, one bar per proxy
(raftgate, nginx, nginx with a 1024 keep-alive pool, HAProxy), whiskers from min to max over the
repetitions. Writes OUT_PNG (default bench/results.png).
"""

import csv
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

PROXIES = [("raftgate", "#d95f02"), ("nginx", "#1b9e77"), ("nginx_ka", "#66c2a5"), ("haproxy", "#7570b3")]
# x-axis category -> the target measured for each proxy in it
CATEGORIES = [
    ("plain", {"raftgate": "rg", "nginx": "nginx", "nginx_ka": "nginx_ka", "haproxy": "haproxy"}),
    ("gateway\n(key, limit,\nquota, metrics)", {"raftgate": "rg_gw", "nginx": "nginx_key", "haproxy": "haproxy_key"}),
    ("cache hit", {"raftgate": "rg_cache", "nginx": "nginx_cache", "haproxy": "haproxy_cache"}),
    ("10 routes", {"raftgate": "rg_r10"}),
    ("10k routes", {"raftgate": "rg_10k", "nginx": "nginx_10k"}),
]
PANELS = [("proxy_cpu_us_per_req", "proxy CPU µs / request", 1.0), ("p99_us", "p99 latency, ms", 1e-3)]


def load(path):
    with open(path, newline="") as f:
        return {(r["target"], int(r["conns"])): r for r in csv.DictReader(f)}


def draw(ax, rows, conns, metric, scale):
    """Grouped bars of one metric at one connection count, whiskers min..max."""
    width = 0.8 / len(PROXIES)
    for i, (proxy, colour) in enumerate(PROXIES):
        xs, ys, lo, hi = [], [], [], []
        for x, (_, targets) in enumerate(CATEGORIES):
            row = rows.get((targets.get(proxy), conns))
            if row is None:
                continue
            v = float(row[metric]) * scale
            xs.append(x + (i - (len(PROXIES) - 1) / 2) * width)
            ys.append(v)
            lo.append(v - float(row[metric + "_min"]) * scale)
            hi.append(float(row[metric + "_max"]) * scale - v)
        if xs:
            ax.bar(xs, ys, width, color=colour, label=proxy, yerr=[lo, hi], capsize=2, error_kw={"elinewidth": 0.8})
    ax.set_xticks(range(len(CATEGORIES)), [c for c, _ in CATEGORIES], fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def main():
    src = Path(sys.argv[1])
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).with_name("results.png")
    rows = load(src)
    conns = sorted({c for _, c in rows})
    fig, axes = plt.subplots(len(PANELS), len(conns), figsize=(6.5 * len(conns), 8), squeeze=False)
    for col, c in enumerate(conns):
        for row, (metric, label, scale) in enumerate(PANELS):
            ax = axes[row][col]
            draw(ax, rows, c, metric, scale)
            ax.set_ylabel(label)
            ax.set_title(f"{label}, {c} connections", fontsize=10)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("raftgate vs nginx vs HAProxy, one worker each\n(bench/compare.sh; lower is better)", fontsize=11)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
