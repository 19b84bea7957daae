#!/usr/bin/env python3
"""Anonymous memory of one raftgated across many config changes, to tell a leak from an
allocator settling (the soak's question, answered in a minute instead of ten).

    scripts/memory-per-change.py [--raft] [--changes N] [--every SECONDS]

Starts a release raftgated on examples/config in a temporary directory (with --raft: a
one-node cluster, --data-dir and --bootstrap, so every change goes through Raft and
RocksDB), rewrites a probe route N times, and prints RssAnon (KiB) every 10 changes.
Environment variables reach the node (MIMALLOC_PURGE_DELAY=0, MALLOC_ARENA_MAX=1, ...).
"""
import argparse
import os
import re
import shutil
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--raft", action="store_true", help="a one-node cluster instead of a standalone node")
    ap.add_argument("--changes", type=int, default=300)
    ap.add_argument("--every", type=float, default=0.25)
    args = ap.parse_args()
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    binary = os.path.join(target, "release", "raftgated")
    work = tempfile.mkdtemp(prefix="raftgate-mem-")
    config = os.path.join(work, "config")
    shutil.copytree(os.path.join(ROOT, "examples", "config"), config)
    cmd = [binary, "--config-dir", config, "--http-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0",
           "--config-poll-interval", "50ms", "--access-log", "off"]
    if args.raft:
        cmd += ["--data-dir", os.path.join(work, "data"), "--node-id", "1", "--bootstrap",
                "--raft-addr", "127.0.0.1:0", "--insecure-plaintext"]
    log = open(os.path.join(work, "log"), "w")
    node = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        time.sleep(1.5)
        samples = []
        for i in range(args.changes):
            probe = (
                "kind: Route\nname: probe\nhostnames: [probe.local]\nrules:\n"
                "  - matches: [{ path: { type: PathPrefix, value: /probe } }]\n"
                "    filters:\n      - type: ResponseHeaderModifier\n"
                f"        responseHeaderModifier:\n          set: [{{ name: x-change, value: \"{i}\" }}]\n"
                "    backendRefs: [{ upstream: users }]\n"
            )
            tmp = os.path.join(config, ".probe.tmp")
            with open(tmp, "w") as f:
                f.write(probe)
            os.rename(tmp, os.path.join(config, "probe.yaml"))
            time.sleep(args.every)
            if i % 10 == 0:
                status = open(f"/proc/{node.pid}/status").read()
                samples.append((i, int(re.search(r"RssAnon:\s+(\d+)", status).group(1))))
        applied = open(os.path.join(work, "log")).read().count("config applied")
        print(f"{applied} configs applied; RssAnon KiB every 10 changes:")
        print(" ".join(f"{i}:{kib}" for i, kib in samples))
    finally:
        node.terminate()
        node.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
