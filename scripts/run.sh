#!/usr/bin/env bash
# `make run`: raftgated serving examples/config on loopback, with demo upstreams for every
# endpoint the config names, until Ctrl-C. (When replication and GitOps land, this becomes
# a local cluster fed from a local Git repository.)
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET_DIR=${CARGO_TARGET_DIR:-target}
CONFIG=${CONFIG:-examples/config}
HTTP=${HTTP_ADDR:-127.0.0.1:8080}
ADMIN=${ADMIN_ADDR:-127.0.0.1:9900}

cargo build --release -q -p node -p testbed -p cli
pids=()
cleanup() {
    trap - INT TERM EXIT
    echo; echo "stopping..."
    kill "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
}
trap cleanup INT TERM EXIT

"$TARGET_DIR/release/testbed" upstreams "$CONFIG" &
pids+=($!)
"$TARGET_DIR/release/raftgated" --config-dir "$CONFIG" --http-addr "$HTTP" --admin-addr "$ADMIN" --log-format text &
pids+=($!)
for _ in $(seq 1 100); do curl -sf "http://$ADMIN/readyz" >/dev/null 2>&1 && break; sleep 0.1; done

cat <<TXT

raftgate is serving $CONFIG on http://$HTTP (admin on http://$ADMIN). Try:

  curl -s -H 'Host: api.example.com' http://$HTTP/v1/users          # 90% users, 10% users-canary
  curl -s -H 'Host: api.example.com' -H 'x-canary: always' http://$HTTP/v1/users
  curl -si -H 'Host: api.example.com' http://$HTTP/v0/orders/7        # 301 to /v1/orders/7
  curl -s http://$ADMIN/status ; curl -s http://$ADMIN/metrics | grep raftgate_

Edit a file under $CONFIG and the change is live within a second; break it and the node
keeps serving the last good config and logs every problem with file:line:col
(target/release/raftgate config validate $CONFIG shows the same). Ctrl-C stops everything.

TXT
wait -n "${pids[@]}"
