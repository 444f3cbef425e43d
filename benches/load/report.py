#!/usr/bin/env python3
"""Parsing and reporting for benches/load/run.sh.

  report.py parse wrk OUTPUT             -> "requests rps p50_us p99_us errors"
  report.py parse h2load OUTPUT LOGFILE  -> same fields (percentiles from the log)
  report.py parse loadgen OUTPUT         -> same fields
  report.py table RESULTS.tsv            -> markdown tables of medians and ratios
  report.py idle IDLE.tsv                -> markdown table of memory per idle connection

results.tsv columns (tab-separated, one row per run):
  round test contender requests rps p50_us p99_us errors cpu_s wall_s peak_kib idle_kib

idle.tsv columns (one row per idle measurement, each on a freshly started proxy):
  round proto contender connections rss_before_kib rss_after_kib
"""

import re
import statistics
import sys
from collections import defaultdict

UNITS_US = {"us": 1.0, "ms": 1000.0, "s": 1_000_000.0}


def to_us(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    if not m:
        raise ValueError(f"cannot read a duration from {text!r}")
    return float(m.group(1)) * UNITS_US[m.group(2)]


def percentile(sorted_values, p):
    if not sorted_values:
        return 0.0
    idx = max(1, min(len(sorted_values), int(-(-len(sorted_values) * p // 1))))
    return float(sorted_values[idx - 1])


def parse_wrk(out):
    requests = int(re.search(r"^\s*(\d+) requests in", out, re.M).group(1))
    rps = float(re.search(r"^Requests/sec:\s*([\d.]+)", out, re.M).group(1))
    p50 = to_us(re.search(r"^\s*50%\s+(\S+)", out, re.M).group(1))
    p99 = to_us(re.search(r"^\s*99%\s+(\S+)", out, re.M).group(1))
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(g) for g in m.groups())
    return requests, rps, p50, p99, errors


def parse_h2load(out, logfile):
    rps = float(re.search(r"finished in [\d.]+\w*, ([\d.]+) req/s", out).group(1))
    m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", out)
    succeeded = int(m.group(3))
    errors = int(m.group(4)) + int(m.group(5)) + int(m.group(6))
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    if m:
        errors += int(m.group(3)) + int(m.group(4))
    durations = []
    with open(logfile) as f:
        for line in f:
            parts = line.split("\t")
            if len(parts) >= 3:
                durations.append(int(parts[2]))
    durations.sort()
    return succeeded, rps, percentile(durations, 0.50), percentile(durations, 0.99), errors


def parse_loadgen(out):
    kv = dict(tok.split("=", 1) for tok in out.split() if "=" in tok)
    return (int(kv["requests"]), float(kv["rps"]), float(kv["p50_us"]),
            float(kv["p99_us"]), int(kv["errors"]))


def fmt_us(us):
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.0f} µs"


TESTS = {
    "h1": "HTTP/1.1 keep-alive, max throughput (wrk)",
    "h2": "HTTP/2 cleartext (prior knowledge), max throughput (h2load)",
    "rate": "Fixed rate, latency (loadgen, open loop)",
    "close": "HTTP/1.1, a new connection per request (wrk, Connection: close)",
}


def table(path):
    rows = []
    with open(path) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            p = line.rstrip("\n").split("\t")
            rows.append({
                "round": int(p[0]), "test": p[1], "who": p[2], "requests": int(p[3]),
                "rps": float(p[4]), "p50": float(p[5]), "p99": float(p[6]),
                "errors": int(p[7]), "cpu_s": float(p[8]), "wall_s": float(p[9]),
                "peak_kib": int(p[10]), "idle_kib": int(p[11]),
            })
    for r in rows:
        r["cpu100k"] = r["cpu_s"] / r["requests"] * 100_000 if r["requests"] else float("nan")
        r["util"] = r["cpu_s"] / r["wall_s"] * 100 if r["wall_s"] else 0.0
    rounds = sorted({r["round"] for r in rows})
    order = []
    for r in rows:
        if r["who"] not in order:
            order.append(r["who"])
    by = defaultdict(list)
    for r in rows:
        by[(r["test"], r["who"])].append(r)

    def med(test, who, key):
        vals = [r[key] for r in by[(test, who)]]
        return statistics.median(vals) if vals else None

    out = [f"Medians of {len(rounds)} round(s). CPU is the proxy's utime+stime "
           "(all its processes) from /proc; core % is that CPU over the run's wall "
           "time (100% = its core saturated). Peak RSS is VmHWM of the serving "
           "process during the run."]
    for test, title in TESTS.items():
        if not any(t == test for t, _ in by):
            continue
        out += ["", f"### {title}", "",
                "| proxy | req/s | p50 | p99 | CPU s / 100k req | proxy core % | peak RSS | errors |",
                "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for who in order:
            if not by[(test, who)]:
                continue
            errs = sum(r["errors"] for r in by[(test, who)])
            out.append(
                f"| {who} | {med(test, who, 'rps'):,.0f} | {fmt_us(med(test, who, 'p50'))} "
                f"| {fmt_us(med(test, who, 'p99'))} | {med(test, who, 'cpu100k'):.2f} "
                f"| {med(test, who, 'util'):.0f}% | {med(test, who, 'peak_kib') / 1024:.1f} MiB "
                f"| {errs} |")
    out += ["", "### Idle RSS (serving process, after start, before any load)", "",
            "| proxy | idle RSS |", "|---|---:|"]
    for who in order:
        idle = [r["idle_kib"] for r in rows if r["who"] == who]
        out.append(f"| {who} | {statistics.median(idle) / 1024:.1f} MiB |")

    for other, title in (("nginx", "NGINX"), ("haproxy", "HAProxy"), ("baseline", "baseline (the BASELINE build)")):
        if "attache" in order and other in order:
            out += ratios(by, "attache", other, f"attache / {title}",
                          "Throughput ratio > 1 means attache is faster; CPU and p99 "
                          "ratios < 1 mean attache is cheaper / quicker.")
    for traced, title in (("trace100", "tracing on, 100% sampled"),
                          ("trace1", "tracing on, 1% sampled")):
        if "attache" in order and traced in order:
            out += ratios(by, traced, "attache", f"{traced} / attache ({title}, vs off)",
                          "The cost of tracing: CPU/req and p99 ratios > 1 are what "
                          "tracing adds; a req/s ratio < 1 is what it takes away.")
    print("\n".join(out))


def ratios(by, num, den, title, note):
    """NUM / DEN, the median of per-round ratios (the two ran seconds apart)."""
    out = ["", f"### {title} (median of the per-round ratios)", "", note, "",
           "| test | req/s ratio | CPU/req ratio | p50 ratio | p99 ratio |",
           "|---|---:|---:|---:|---:|"]
    for test in TESTS:
        a = {r["round"]: r for r in by[(test, num)]}
        n = {r["round"]: r for r in by[(test, den)]}
        common = sorted(set(a) & set(n))
        if not common:
            continue

        def ratio(key):
            vals = [a[i][key] / n[i][key] for i in common if n[i][key]]
            return f"{statistics.median(vals):.2f}" if vals else "n/a"

        out.append(f"| {test} | {ratio('rps')} | {ratio('cpu100k')} | {ratio('p50')} "
                   f"| {ratio('p99')} |")
    return out


def idle(path):
    """KiB per idle keep-alive connection: the median over rounds of the RSS growth
    (all the proxy's processes) divided by the connections held."""
    per = defaultdict(list)
    order = []
    with open(path) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            _, proto, who, n, before, after = line.rstrip("\n").split("\t")
            if who not in order:
                order.append(who)
            per[(proto, who)].append((int(after) - int(before), int(n)))
    out = ["### Memory per idle keep-alive connection (benches/load/idle.py)", "",
           "Each measurement on a freshly started proxy: RSS of all its processes "
           "before and after the connections opened (one request each, then held).", "",
           "| proxy | protocol | connections | RSS growth | KiB per connection |",
           "|---|---|---:|---:|---:|"]
    for proto in ("h1", "h2c", "tls", "tls-h2"):
        for who in order:
            runs = per.get((proto, who))
            if not runs:
                continue
            growth = statistics.median(d for d, _ in runs)
            n = runs[0][1]
            out.append(f"| {who} | {proto} | {n:,} | {growth / 1024:.1f} MiB "
                       f"| {growth / n:.2f} |")
    print("\n".join(out))


def main(argv):
    if len(argv) >= 3 and argv[0] == "parse":
        kind, out = argv[1], open(argv[2]).read()
        if kind == "wrk":
            vals = parse_wrk(out)
        elif kind == "h2load":
            vals = parse_h2load(out, argv[3])
        elif kind == "loadgen":
            vals = parse_loadgen(out)
        else:
            raise SystemExit(f"unknown kind {kind}")
        print(" ".join(str(v) for v in vals))
    elif len(argv) == 2 and argv[0] == "table":
        table(argv[1])
    elif len(argv) == 2 and argv[0] == "idle":
        idle(argv[1])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
