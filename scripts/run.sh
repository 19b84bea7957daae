#!/usr/bin/env bash
# `make run`: a local three-node raftgate cluster on loopback (the `local` testbed
# topology: no root needed), syncing from a local Git repository seeded from
# examples/config, with demo upstreams. The nodes run mTLS with a throwaway CA in the
# testbed's state directory; the printed RAFTGATE_CONFIG points `raftgate` at node 1 with
# the operator certificate. Prints what to try; Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET_DIR=${CARGO_TARGET_DIR:-target}

cargo build --release -q --workspace
exec "$TARGET_DIR/release/testbed" up testbed/topologies/local.yaml --loopback --foreground
