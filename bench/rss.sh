#!/usr/bin/env bash
# Resident memory of raftgated serving 10, 1,000, 10,000 and 100,000 routes (3 rules each): after a
# second of requests (the allocator returns what loading the config left behind as it
# serves), and the peak while loading. Prints one "routes rss_kib peak_kib" line per size.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$HERE/../target}
RAFTGATED=${RAFTGATED:-$TARGET_DIR/release/raftgated}
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
pid=
for n in 10 1000 10000 100000; do
    mkdir -p "$work/$n"
    python3 "$HERE/routes.py" "$n" 127.0.0.1:9 "$work/$n"
    "$RAFTGATED" --workers 1 --access-log off --log-format text --http-addr 127.0.0.1:18484 \
        --admin-addr 127.0.0.1:18485 --config-dir "$work/$n" >"$work/$n.log" 2>&1 &
    pid=$!
    # 100,000 routes take seconds to compile before the node is ready.
    for _ in $(seq 1 1200); do curl -sf http://127.0.0.1:18485/readyz >/dev/null && break; sleep 0.1; done
    curl -s -o /dev/null -H "host: h0.example.com" http://127.0.0.1:18484/svc0/health || true
    wrk -t1 -c8 -d1s -H "host: h0.example.com" http://127.0.0.1:18484/svc0/health >/dev/null 2>&1 || true
    echo "$n $(awk '/^VmRSS/{print $2}' /proc/$pid/status) $(awk '/^VmHWM/{print $2}' /proc/$pid/status)"
    kill $pid; wait $pid 2>/dev/null || true; pid=
done
