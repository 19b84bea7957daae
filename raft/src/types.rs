//! The Raft type configuration and the replicated log entries.

use std::io::Cursor;

use schemas::{ConfigSnapshot, ContentHash};
use serde::{Deserialize, Serialize};

pub type NodeId = u64;

/// What every member knows about a node: where to reach it and where it runs. Advertised
/// addresses, which may differ from the addresses a node binds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Raft RPC address (`--raft-addr`, or the advertised one).
    pub raft_addr: String,
    /// Admin API address, for clients following the leader.
    pub admin_addr: String,
    /// Region label (`--region`).
    pub region: String,
}

impl std::fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (admin {}, region {})", self.raft_addr, self.admin_addr, self.region)
    }
}

/// One config commit: the whole compiled snapshot, so followers need nothing else (no Git).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyConfig {
    /// Git commit sha.
    pub commit: String,
    /// The commit applied before this one, if any (the leader checked ancestry).
    pub parent: Option<String>,
    pub author: String,
    pub message: String,
    /// Commit time, seconds since the Unix epoch.
    pub committed_at: i64,
    /// `snapshot.content_hash()`, checked again when applied.
    pub hash: ContentHash,
    pub snapshot: ConfigSnapshot,
    /// Other commits this entry covers, when several arrived at once (oldest first).
    pub covers: Vec<String>,
}

/// A commit the leader's Git sync refused, kept in the state machine so every node can
/// show it until a good commit arrives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub commit: String,
    /// The pipeline step that refused it: `ancestry`, `signature`, `validate`.
    pub step: String,
    /// Every reason, one per line (validation errors carry file:line:col).
    pub errors: Vec<String>,
    /// Seconds since the Unix epoch, on the leader.
    pub at: u64,
}

/// What the leader's Git sync concluded about a commit it did not propose as a config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncNote {
    /// The commit was refused; the current config stays.
    Refused(Refusal),
    /// A good commit with the content already served: clears any refusal.
    Unchanged { commit: String },
}

/// Application requests written to the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    ApplyConfig(Box<ApplyConfig>),
    RecordSync(SyncNote),
}

/// What applying an entry did.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Response {
    /// Blank and membership entries.
    #[default]
    None,
    /// The config is now the current one.
    Applied { commit: String },
    /// The entry named the commit already current: nothing changed.
    AlreadyCurrent { commit: String },
    /// The entry was refused (its hash did not match its snapshot); the current config stays.
    Refused { commit: String, reason: String },
}

openraft::declare_raft_types!(
    /// raftgate's Raft types: `u64` node ids, `NodeInfo` nodes, config commits as entries.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = NodeInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, NodeInfo>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type Raft = openraft::Raft<TypeConfig>;
