#!/usr/bin/env bash
# `make fuzz`: runs every fuzz harness (the tests named fuzz_*) for $RAFTGATE_FUZZ_SECONDS,
# the test binaries side by side so the whole run takes that long, not that long per
# harness. Each harness prints `fuzz <name>: <n> executions in <s> s, no failure`; those
# lines, with the machine and the commit, go to testkit/results/<time>.txt. A failure is
# shrunk, saved under proptest-regressions/ (commit it: it is replayed first from then on)
# and fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${RAFTGATE_FUZZ_SECONDS:=1800}"
export RAFTGATE_FUZZ_SECONDS
mkdir -p testkit/results
out="testkit/results/fuzz-$(date -u +%Y%m%dT%H%M%SZ).txt"
commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!testkit/results' || echo "+changes")
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
bins=$(cargo test --workspace --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("profile", {}).get("test") and m.get("executable"):
        print(m["executable"] + "\t" + m["manifest_path"].rsplit("/", 1)[0])
')
logs=$(mktemp -d)
pids=()
while IFS=$'\t' read -r b dir; do
  # Only binaries that hold a harness; each runs in its crate's directory, as under
  # `cargo test`, so regressions are read from and saved to that crate.
  if "$b" --list </dev/null 2>/dev/null | grep -q fuzz_; then
    (cd "$dir" && "$b" fuzz_ --nocapture </dev/null >"$logs/$(basename "$b").log" 2>&1) &
    pids+=($!)
  fi
done <<< "$bins"
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
{
  echo "# make fuzz, $RAFTGATE_FUZZ_SECONDS s per harness, all at once on $(nproc) cores"
  echo "# commit $commit, started $started, ended $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  cat "$logs"/*.log | grep -E '^fuzz |panicked|minimal input' || true
} > "$out"
cat "$out"
[ "$rc" = 0 ] || { echo "make fuzz: a harness failed; see above and proptest-regressions/" >&2; cat "$logs"/*.log >&2; }
rm -rf "$logs"
exit $rc
