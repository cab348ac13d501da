"""Summarises one bench/compare.sh run: python3 bench/compare_report.py RESULTS_DIR.

Reads RESULTS_DIR/raw.csv (one row per wrk run) and meta.json (the machine, the command) and
writes results.csv (medians and ranges per target and connection count), results.json (meta,
rows, the issue #8 target ratios) and results.md (the same as markdown tables), and prints the
markdown. Ratios are computed per repetition (both sides measured in the same interleaved round)
and reported as the median with the range, so their spread shows how noisy the run was.
"""

import csv
import json
import statistics
import sys
from pathlib import Path

METRICS = ["rps", "p50_us", "p99_us", "proxy_cpu_us_per_req", "upstream_cpu_us_per_req", "foreign_pct"]

# (name, numerator target, denominator target, metric, one conns value or None for every one, target or None)
RATIOS = [
    ("plain CPU/req raftgate / nginx", "rg", "nginx", "proxy_cpu_us_per_req", None, 0.9),
    ("plain CPU/req raftgate / nginx_ka", "rg", "nginx_ka", "proxy_cpu_us_per_req", None, None),
    ("plain CPU/req raftgate / haproxy", "rg", "haproxy", "proxy_cpu_us_per_req", None, None),
    ("gateway CPU/req raftgate (key+limit+quota+metrics) / nginx plain", "rg_gw", "nginx", "proxy_cpu_us_per_req", None, 1.0),
    ("gateway CPU/req raftgate / nginx with map key check", "rg_gw", "nginx_key", "proxy_cpu_us_per_req", None, None),
    ("gateway CPU/req raftgate / haproxy with ACL key check", "rg_gw", "haproxy_key", "proxy_cpu_us_per_req", None, None),
    ("plain p99 raftgate / nginx at c64", "rg", "nginx", "p99_us", "64", 1.0),
    ("plain p99 raftgate / nginx at c256", "rg", "nginx", "p99_us", "256", None),
    ("CPU/req raftgate 10k routes / 10 routes", "rg_10k", "rg_r10", "proxy_cpu_us_per_req", None, 1.2),
    ("p99 raftgate 10k routes / 10 routes", "rg_10k", "rg_r10", "p99_us", None, None),
    ("CPU/req nginx 10k locations / 1 location", "nginx_10k", "nginx", "proxy_cpu_us_per_req", None, None),
    ("cache HIT CPU/req raftgate / nginx proxy_cache", "rg_cache", "nginx_cache", "proxy_cpu_us_per_req", None, None),
    ("cache HIT CPU/req raftgate / haproxy cache", "rg_cache", "haproxy_cache", "proxy_cpu_us_per_req", None, None),
]


def load(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def spread(values):
    """Median, min and max of a non-empty list."""
    return statistics.median(values), min(values), max(values)


def summarise(rows):
    """One dict per (target, conns), in first-seen order: medians and ranges of every metric."""
    groups = {}
    for r in rows:
        groups.setdefault((r["target"], r["conns"]), []).append(r)
    out = []
    for (target, conns), rs in groups.items():
        s = {"scenario": rs[0]["scenario"], "target": target, "proxy": rs[0]["proxy"], "conns": int(conns), "reps": len(rs)}
        for m in METRICS:
            med, lo, hi = spread([float(r[m]) for r in rs])
            s[m], s[m + "_min"], s[m + "_max"] = med, lo, hi
        s["errors"] = "; ".join(sorted({r["errors"] for r in rs if r["errors"] != "none"})) or "none"
        out.append(s)
    return out


def paired_ratio(rows, num, den, metric, conns):
    """Per-repetition ratios num/den of one metric at one connection count: (median, min, max) or None."""
    by = {(r["target"], r["rep"]): float(r[metric]) for r in rows if r["conns"] == conns}
    ratios = [by[(num, rep)] / by[(den, rep)] for (t, rep) in by if t == num and by.get((den, rep))]
    return spread(ratios) if ratios else None


def ratios(rows):
    conns_all = sorted({r["conns"] for r in rows}, key=int)
    out = []
    for name, num, den, metric, only, target in RATIOS:
        for c in [only] if only else conns_all:
            got = paired_ratio(rows, num, den, metric, c)
            if got is None:
                continue
            med, lo, hi = got
            verdict = None if target is None else ("met" if med <= target else "not met")
            out.append({"name": name, "conns": int(c), "median": med, "min": lo, "max": hi, "target": target, "verdict": verdict})
    return out


def markdown(meta, summary, ratio_rows):
    lines = [
        f"{meta.get('date', '?')}, `{meta.get('command', '?')}`; {meta['machine']['cores']} × {meta['machine']['cpu']}, "
        f"{meta['machine']['memory']}, kernel {meta['machine']['kernel']}; load average before {meta.get('loadavg_before')}, "
        f"after {meta.get('loadavg_after')}; nginx {meta['versions']['nginx']}, HAProxy {meta['versions']['haproxy']}, "
        f"wrk {meta['versions']['wrk']}; raftgate {meta['versions']['git']} (sha256 {meta['versions']['raftgate_sha256']}…).",
        "",
        f"Median (min–max) of {max(s['reps'] for s in summary)} interleaved repetitions of {meta['settings']['dur_s']} s:",
        "",
        "| scenario | target | c | req/s | p50 ms | p99 ms | proxy CPU µs/req | upstream µs/req | foreign % | errors |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for s in summary:
        lines.append(
            f"| {s['scenario']} | {s['target']} | {s['conns']} | {s['rps']:.0f} | {s['p50_us'] / 1e3:.2f} | "
            f"{s['p99_us'] / 1e3:.1f} ({s['p99_us_min'] / 1e3:.1f}–{s['p99_us_max'] / 1e3:.1f}) | "
            f"{s['proxy_cpu_us_per_req']:.1f} ({s['proxy_cpu_us_per_req_min']:.1f}–{s['proxy_cpu_us_per_req_max']:.1f}) | "
            f"{s['upstream_cpu_us_per_req']:.1f} | {s['foreign_pct']:.0f} | {s['errors']} |"
        )
    busy = statistics.median(s["foreign_pct"] for s in summary)
    if busy > 10:
        lines += ["", f"Other processes used a median {busy:.0f}% of the two cores during the runs (foreign %): "
                  "req/s and latency are not comparable with a quiet machine's, and CPU per request may be higher (shared caches); "
                  "compare the ratios of this run, not its absolute figures."]
    lines += ["", "| ratio (per repetition, median (min–max)) | c | ratio | target | verdict |", "|---|--:|--:|--:|---|"]
    for r in ratio_rows:
        target = f"≤ {r['target']}" if r["target"] is not None else ""
        verdict = f"**{r['verdict']}**" if r["verdict"] else ""
        lines.append(f"| {r['name']} | {r['conns']} | {r['median']:.2f} ({r['min']:.2f}–{r['max']:.2f}) | {target} | {verdict} |")
    return "\n".join(lines) + "\n"


def main():
    res = Path(sys.argv[1])
    rows = load(res / "raw.csv")
    meta = json.loads((res / "meta.json").read_text())
    summary = summarise(rows)
    ratio_rows = ratios(rows)
    with open(res / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(summary[0].keys()))
        w.writeheader()
        w.writerows(summary)
    (res / "results.json").write_text(json.dumps({"meta": meta, "results": summary, "ratios": ratio_rows}, indent=1) + "\n")
    md = markdown(meta, summary, ratio_rows)
    (res / "results.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
