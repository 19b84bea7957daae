#!/usr/bin/env bash
# Resident memory of raftgated serving 10, 1,000 and 10,000 routes (3 rules each), after a
# warm-up request. Prints one "routes rss_kib" line per size.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$HERE/../target}
RAFTGATED=${RAFTGATED:-$TARGET_DIR/release/raftgated}
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
pid=
for n in 10 1000 10000; do
    mkdir -p "$work/$n"
    python3 - "$n" > "$work/$n/routes.yaml" <<'PY'
import sys
n = int(sys.argv[1]); hosts = max(n // 10, 1)
print("kind: Upstream\nname: up\nendpoints: [{ address: 127.0.0.1:9 }]")
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
PY
    "$RAFTGATED" --workers 1 --access-log off --log-format text --http-addr 127.0.0.1:18484 \
        --admin-addr 127.0.0.1:18485 --config-dir "$work/$n" >"$work/$n.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 100); do curl -sf http://127.0.0.1:18485/readyz >/dev/null && break; sleep 0.1; done
    curl -s -o /dev/null -H "host: h0.example.com" http://127.0.0.1:18484/svc0/health || true
    echo "$n $(awk '/^VmRSS/{print $2}' /proc/$pid/status)"
    kill $pid; wait $pid 2>/dev/null || true; pid=
done
