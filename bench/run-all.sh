#!/usr/bin/env bash
# make bench: raftgated side by side with nginx and HAProxy (HTTP/1.1 and h2c), route lookup
# and compile+swap micro-benchmarks, and memory with 10,000 routes. Results go to
# bench/results/ as JSON and Markdown (raw CSVs beside them).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$HERE/.."
export RESULTS=${RESULTS:-$HERE/results}
mkdir -p "$RESULTS"
stamp=$(date +%Y%m%d-%H%M%S)
raw=$(mktemp -d)

cargo build --release --workspace
"$HERE/proxy-bench.sh" all 2>&1 | tee "$raw/proxy.log"
cargo bench --workspace --bench routing -- --noplot 2>&1 | tee "$raw/criterion.log"
"$HERE/rss.sh" | tee "$raw/rss.txt"

python3 "$HERE/report.py" --stamp "$stamp" --results "$RESULTS" --criterion "$raw/criterion.log" --rss "$raw/rss.txt" \
    --host "$(nproc) CPUs, $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
rm -rf "$raw"
