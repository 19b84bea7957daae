//! Raft timing tuned for regions up to about 150 ms apart (round trip).
//!
//! openraft's defaults (50 ms heartbeats, 150–300 ms elections, 200 ms per snapshot chunk)
//! suit a LAN: across a WAN they cause spurious elections and snapshot transfers that never
//! finish. The values below follow the Raft rule of thumb (election timeout 10–20× the
//! round trip) and what openraft 0.9 actually does with each knob:
//!
//! - `heartbeat_interval` 500 ms: also the timeout of every AppendEntries, so it must cover
//!   the worst round trip plus the follower's fsync with margin (3× 150 ms + disk).
//! - elections 2–4 s: a follower waits for the leader lease (4 s) plus a random 2–4 s
//!   before campaigning.
//! - snapshots: 1 MiB chunks, 15 s per chunk (including the final install).
//!
//! Failover after a leader dies: lease 4 s + election timeout 2–4 s + up to one tick
//! (0.75 s) + one vote round trip ≈ **6–9 s**. Nodes keep serving their last applied
//! config throughout: only config changes wait.

use openraft::{Config, SnapshotPolicy};

/// Log entries between snapshots, by default.
pub const DEFAULT_SNAPSHOT_EVERY: u64 = 200;

/// The WAN profile, validated.
pub fn wan() -> Config {
    Config {
        heartbeat_interval: 500,
        election_timeout_min: 2_000,
        election_timeout_max: 4_000,
        install_snapshot_timeout: 15_000,
        ..common()
    }
    .validate()
    .expect("the WAN profile is valid")
}

/// A LAN profile for tests and single-region clusters: failover in about a second.
pub fn lan() -> Config {
    Config {
        heartbeat_interval: 100,
        election_timeout_min: 400,
        election_timeout_max: 800,
        install_snapshot_timeout: 5_000,
        ..common()
    }
    .validate()
    .expect("the LAN profile is valid")
}

/// What both profiles share: snapshot sizing and log retention.
fn common() -> Config {
    Config {
        cluster_name: "raftgate".into(),
        snapshot_max_chunk_size: 1 << 20,
        // Entries carry whole compiled configs: keep batches small.
        max_payload_entries: 16,
        replication_lag_threshold: 50,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(DEFAULT_SNAPSHOT_EVERY),
        max_in_snapshot_log_to_keep: DEFAULT_SNAPSHOT_EVERY / 2,
        ..Default::default()
    }
}

/// Takes a snapshot every `entries` log entries and keeps half as many already-snapshotted
/// entries for followers that are only a little behind; anyone further behind gets the
/// snapshot. Fewer entries bound the log on disk more tightly, at the cost of more
/// snapshots (each is one small state machine: the current config and its history).
pub fn with_snapshot_every(config: Config, entries: u64) -> Config {
    Config {
        snapshot_policy: SnapshotPolicy::LogsSinceLast(entries.max(2)),
        max_in_snapshot_log_to_keep: entries.max(2) / 2,
        ..config
    }
    .validate()
    .expect("snapshot settings are valid")
}
