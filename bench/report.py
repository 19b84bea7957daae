#!/usr/bin/env python3
"""Turns one `make bench` run into bench/results/<stamp>.json and <stamp>.md.

Reads the newest h1 and h2 CSVs that proxy-bench.sh wrote, the criterion log and the RSS
figures. Every ratio is computed from this one run: medians of interleaved rounds, and the
paired ratio (median of per-round ratios), which cancels slow host periods."""
import argparse, csv, glob, json, os, re, statistics as st

ap = argparse.ArgumentParser()
ap.add_argument("--stamp", required=True)
ap.add_argument("--results", required=True)
ap.add_argument("--criterion", required=True)
ap.add_argument("--rss", required=True)
ap.add_argument("--host", default="")
a = ap.parse_args()

def f(x):
    try:
        return float(x)
    except ValueError:
        return float("nan")

def load(kind):
    files = sorted(glob.glob(os.path.join(a.results, f"*-{kind}.csv")))
    if not files:
        return None
    rows = list(csv.DictReader(open(files[-1])))
    names = list(dict.fromkeys(r["name"] for r in rows))
    rounds = {}
    for r in rows:
        rounds.setdefault(r["round"], {})[r["name"]] = r
    out = {"csv": os.path.basename(files[-1]), "rounds": len(rounds), "targets": {}}
    for n in names:
        rs = [r for r in rows if r["name"] == n]
        rps = [f(r["rps"]) for r in rs]
        t = {
            "rps_median": st.median(rps), "rps_min": min(rps), "rps_max": max(rps),
            "p50_us": st.median(f(r["p50_us"]) for r in rs), "p99_us": st.median(f(r["p99_us"]) for r in rs),
            "cpu_us_per_request": st.median(f(r["srv_cpu_us_per_req"]) for r in rs),
            "errors": sum(int(f(r["errors"])) for r in rs),
        }
        for base in ("nginx", "haproxy", "raftgate", "routes-10"):
            pair = [f(v[n]["rps"]) / f(v[base]["rps"]) for v in rounds.values() if n in v and base in v and f(v[base]["rps"]) > 0]
            if pair and n != base:
                t[f"paired_rps_ratio_vs_{base}"] = round(st.median(pair), 3)
                cpu = [f(v[n]["srv_cpu_us_per_req"]) / f(v[base]["srv_cpu_us_per_req"]) for v in rounds.values() if n in v and base in v]
                t[f"cpu_per_request_ratio_vs_{base}"] = round(st.median(cpu), 3)
                p99 = [f(v[n]["p99_us"]) / f(v[base]["p99_us"]) for v in rounds.values() if n in v and base in v]
                t[f"p99_ratio_vs_{base}"] = round(st.median(p99), 3)
        out["targets"][n] = t
    return out

def swaps():
    """The newest swaps-under-load line (proxy-bench.sh), as numbers."""
    files = sorted(glob.glob(os.path.join(a.results, "*-swaps.txt")))
    if not files:
        return None
    return {k: v for k, v in (kv.split("=", 1) for kv in open(files[-1]).read().split())}

crit = {}
for m in re.finditer(r"^(route_lookup|compile_and_swap|content_hash)/(\d+)\s+time:\s+\[\S+ \S+ (\S+) (\S+)", open(a.criterion).read(), re.M):
    group, n, value, unit = m.groups()
    scale = {"ps": 1e-3, "ns": 1, "µs": 1e3, "us": 1e3, "ms": 1e6, "s": 1e9}[unit]
    crit.setdefault(group, {})[n] = round(float(value) * scale, 1)
rss = {line.split()[0]: int(line.split()[1]) for line in open(a.rss) if line.strip()}
rss_peak = {line.split()[0]: int(line.split()[2]) for line in open(a.rss) if len(line.split()) > 2}

report = {"stamp": a.stamp, "host": a.host, "h1": load("h1"), "h2c": load("h2"), "auth": load("auth"),
          "https": load("https"), "h2_tls": load("h2tls"), "handshakes": load("handshakes"),
          "h1_equal": load("h1-equal"), "h2c_equal": load("h2-equal"), "access_log": load("accesslog"),
          "new_connections": load("newconn"), "large": load("large"), "routes": load("routes"),
          "workers": load("workers"), "tracing": load("tracing"), "swaps_under_load": swaps(),
          "criterion_ns": crit, "rss_kib_by_routes": rss, "rss_peak_kib_by_routes": rss_peak,
          "layout": "proxy under test and upstream pinned to CPU 0, load generator alone on CPU 1; one worker per proxy"}
json.dump(report, open(os.path.join(a.results, f"{a.stamp}.json"), "w"), indent=2)

def ratio(v):
    """`1.23×`, or `–` where the run has no such target."""
    return "–" if v != v else f"{v:.2f}×"

md = [f"# Benchmark {a.stamp}", "", f"Host: {a.host}. {report['layout']}.", ""]
for kind, title, tool in (("h1", "HTTP/1.1 keep-alive", "wrk -c32"), ("h2c", "h2c (prior knowledge)", "h2load -c8 -m4"),
                          ("https", "HTTPS, TLS 1.3, HTTP/1.1 keep-alive", "wrk -c32"),
                          ("h2_tls", "HTTPS, TLS 1.3, h2 by ALPN", "h2load -c8 -m4"),
                          ("handshakes", "HTTPS, TLS 1.3, a new handshake per request (rps = handshakes/s)", "wrk -c32, Connection: close"),
                          ("h1_equal", "HTTP/1.1 keep-alive, equal work: nginx and HAProxy add X-Forwarded-*, Via and a request id", "wrk -c32"),
                          ("h2c_equal", "h2c, equal work", "h2load -c8 -m4"),
                          ("access_log", "HTTP/1.1 keep-alive with the access log on, written to a file by both", "wrk -c32"),
                          ("new_connections", "HTTP/1.1, a new connection per request (rps = connections/s)", "wrk -c32, Connection: close"),
                          ("large", "HTTP/1.1 keep-alive, 1 MiB responses (rps × 1 MiB = throughput)", "wrk -c32")):
    r = report[kind]
    if not r:
        continue
    md += [f"## {title} ({tool}, {r['rounds']} interleaved rounds)", "",
           "| target | rps (median) | p50 µs | p99 µs | CPU µs/req | paired rps vs nginx | CPU/req vs nginx | p99 vs nginx | paired rps vs HAProxy | errors |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for n, t in r["targets"].items():
        md.append(f"| {n} | {t['rps_median']:.0f} | {t['p50_us']:.0f} | {t['p99_us']:.0f} | {t['cpu_us_per_request']:.1f} | "
                  f"{t.get('paired_rps_ratio_vs_nginx', 1.0 if n == 'nginx' else float('nan')):.2f}× | "
                  f"{t.get('cpu_per_request_ratio_vs_nginx', 1.0 if n == 'nginx' else float('nan')):.2f}× | "
                  f"{t.get('p99_ratio_vs_nginx', 1.0 if n == 'nginx' else float('nan')):.2f}× | "
                  f"{ratio(t.get('paired_rps_ratio_vs_haproxy', 1.0 if n == 'haproxy' else float('nan')))} | {t['errors']} |")
    md.append("")
r = report["auth"]
if r:
    md += [f"## The cost of identity (wrk -c32, {r['rounds']} interleaved rounds, one raftgated)", "",
           "Each guarded route is the open route behind a `SecurityPolicy`; the same client sends the same valid",
           "credential on every request (JWT ES256 with the verified-token cache, API key, basic auth with bcrypt",
           "cost 10 and its cache). Goals (issue #16): JWT ≤ 1.3×, API key ≤ 1.05×, basic auth ≤ 2× the open route's CPU per request.", "",
           "| route | rps (median) | p99 µs | CPU µs/req | CPU/req vs open | paired rps vs open | errors |", "|---|---|---|---|---|---|---|"]
    for n, t in r["targets"].items():
        md.append(f"| {n} | {t['rps_median']:.0f} | {t['p99_us']:.0f} | {t['cpu_us_per_request']:.1f} | "
                  f"{t.get('cpu_per_request_ratio_vs_raftgate', 1.0 if n == 'raftgate' else float('nan')):.2f}× | "
                  f"{t.get('paired_rps_ratio_vs_raftgate', 1.0 if n == 'raftgate' else float('nan')):.2f}× | {t['errors']} |")
    md.append("")
def relative_table(r, title, label, base, base_label):
    """Targets of one raftgated setup against one of them (`base`), paired per round."""
    if not r:
        return
    md.extend([f"## {title} (wrk -c32, {r['rounds']} interleaved rounds)", "",
           f"| {label} | rps (median) | p99 µs | CPU µs/req | paired rps vs {base_label} | CPU/req vs {base_label} | errors |",
           "|---|---|---|---|---|---|---|"])
    for n, t in r["targets"].items():
        md.append(f"| {n} | {t['rps_median']:.0f} | {t['p99_us']:.0f} | {t['cpu_us_per_request']:.1f} | "
                  f"{t.get(f'paired_rps_ratio_vs_{base}', 1.0 if n == base else float('nan')):.2f}× | "
                  f"{t.get(f'cpu_per_request_ratio_vs_{base}', 1.0 if n == base else float('nan')):.2f}× | {t['errors']} |")
    md.append("")

relative_table(report["routes"], "One route among 10, 10,000 and 100,000", "table", "routes-10", "10 routes")
relative_table(report["workers"], "One worker and two, both on the one CPU of the proxy", "target", "raftgate", "1 worker")
relative_table(report["tracing"], "Tracing off (no --otlp-endpoint), on at 1% sampling, on at 100% (spans to an OTLP receiver)",
               "target", "raftgate", "tracing off")
w = report["swaps_under_load"]
if w:
    md += ["## Config swaps under load at 10,000 routes", "",
           "wrk -c32 on one route of the 10,000-route node while its config directory changes every 3 s (each change",
           "compiled and swapped in whole).", "",
           "| swaps | requests | non-2xx | socket errors | p99 |", "|---|---|---|---|---|",
           f"| {w.get('swaps')} | {w.get('requests')} | {w.get('non2xx')} | {w.get('socket_errors')} | {w.get('p99')} |", ""]
md += ["## Route lookup and compile+swap (criterion, median)", "",
       "compile + swap is what a node does per config entry: compile (started by the state machine's hook) while the",
       "state machine checks the content hash, then the swap. The hash alone is the last column.", "",
       "| routes (3 rules each) | lookup | compile + swap | content hash |", "|---|---|---|---|"]
for n in ("10", "1000", "10000", "100000"):
    lk = crit.get("route_lookup", {}).get(n)
    cs = crit.get("compile_and_swap", {}).get(n)
    ch = crit.get("content_hash", {}).get(n)
    md.append(f"| {n} | {lk:.0f} ns | {cs / 1e6:.2f} ms | {ch / 1e6:.2f} ms |" if None not in (lk, cs, ch) else f"| {n} | – | – | – |")
md += ["", "## Resident memory of raftgated", "", "serving (after a second of requests), and the peak while loading the config", "",
       "| routes | RSS serving | peak |", "|---|---|---|"]
md += [f"| {n} | {kib / 1024:.1f} MiB | {rss_peak.get(n, 0) / 1024:.1f} MiB |" for n, kib in rss.items()]
open(os.path.join(a.results, f"{a.stamp}.md"), "w").write("\n".join(md) + "\n")
print("\n".join(md))
