#!/usr/bin/env python3
"""routes.py N UPSTREAM: a config of N routes (3 rules each) over N/10 host names, as bench/rss.sh
and the routes row of proxy-bench.sh use: route i serves host h{i % (N/10)}.example.com, with an
exact rule for /svc{i}/health, a header-matching prefix rule and a prefix rule for /svc{i}."""
import sys

n, upstream = int(sys.argv[1]), sys.argv[2]
hosts = max(n // 10, 1)
print(f"kind: Upstream\nname: up\nendpoints: [{{ address: {upstream} }}]")
for i in range(n):
    print(f"""---
kind: Route
name: r{i}
hostnames: [h{i % hosts}.example.com]
rules:
  - matches: [{{ path: {{ type: Exact, value: /svc{i}/health }} }}]
    backendRefs: [{{ upstream: up }}]
  - matches: [{{ path: {{ value: /svc{i} }}, headers: [{{ name: x-canary, value: "on" }}] }}]
    backendRefs: [{{ upstream: up }}]
  - matches: [{{ path: {{ value: /svc{i} }} }}]
    backendRefs: [{{ upstream: up }}]""")
