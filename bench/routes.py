#!/usr/bin/env python3
"""routes.py N UPSTREAM DIR: a config of N routes (3 rules each) over N/10 host names, as bench/rss.sh
and the routes rows of proxy-bench.sh use: route i serves host h{i % (N/10)}.example.com, with an
exact rule for /svc{i}/health, a header-matching prefix rule and a prefix rule for /svc{i}.

Written to DIR as upstream.yaml and routes-NN.yaml files of at most 10,000 routes each (about
3 MiB; a node reads files of up to 8 MiB), as a large config would be kept in a repository."""
import os
import sys

PER_FILE = 10_000

n, upstream, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
hosts = max(n // 10, 1)
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "upstream.yaml"), "w") as f:
    f.write(f"kind: Upstream\nname: up\nendpoints: [{{ address: {upstream} }}]\n")
for start in range(0, n, PER_FILE):
    with open(os.path.join(out, f"routes-{start // PER_FILE:02d}.yaml"), "w") as f:
        docs = []
        for i in range(start, min(n, start + PER_FILE)):
            docs.append(f"""kind: Route
name: r{i}
hostnames: [h{i % hosts}.example.com]
rules:
  - matches: [{{ path: {{ type: Exact, value: /svc{i}/health }} }}]
    backendRefs: [{{ upstream: up }}]
  - matches: [{{ path: {{ value: /svc{i} }}, headers: [{{ name: x-canary, value: "on" }}] }}]
    backendRefs: [{{ upstream: up }}]
  - matches: [{{ path: {{ value: /svc{i} }} }}]
    backendRefs: [{{ upstream: up }}]
""")
        f.write("---\n".join(docs))
