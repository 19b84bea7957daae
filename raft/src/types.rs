//! The Raft type configuration and the replicated log entries.

use std::io::Cursor;
use std::sync::Arc;

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
/// Also the entry for a `--config-dir` tree in cluster mode, named `dir-<hash>`.
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
    /// Shared, so the state machine, its `watch` channel and the proxy engine hold one copy.
    /// postcard encodes an `Arc<T>` exactly as a `T`: the log and the stored state machine
    /// are the same bytes as with a plain `ConfigSnapshot`.
    pub snapshot: Arc<ConfigSnapshot>,
    /// Other commits this entry covers, when several arrived at once (oldest first).
    pub covers: Vec<String>,
}

/// A commit the leader's Git sync refused, kept in the state machine so every node can
/// show it until a good commit arrives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub commit: String,
    /// The name of the step that refused it (`RefusalStep::as_str`); read it with `step()`.
    /// A string on purpose: a refusal is replicated in the log and stored in the state
    /// machine, and a string decodes whatever step a newer leader names, where an enum would
    /// fail to decode the whole state machine on a variant this version does not know.
    step: String,
    /// Every reason, one per line (validation errors carry file:line:col).
    pub errors: Vec<String>,
    /// Seconds since the Unix epoch, on the leader.
    pub at: u64,
}

impl Refusal {
    pub fn new(commit: String, step: RefusalStep, errors: Vec<String>, at: u64) -> Self {
        Self { commit, step: step.as_str().to_string(), errors, at }
    }

    /// The step that refused the commit; `None` for a step this version does not know.
    pub fn step(&self) -> Option<RefusalStep> {
        RefusalStep::from_name(&self.step)
    }

    /// The step's name as recorded, for status output (shown even when unknown here).
    pub fn step_name(&self) -> &str {
        &self.step
    }
}

/// The step of the leader's Git pipeline that refused a commit, in pipeline order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalStep {
    /// The commit does not descend from the last applied one (a force-push).
    Ancestry,
    /// The commit is not signed by an allowed key.
    Signature,
    /// The config tree cannot be read at the commit, or holds no YAML files.
    Load,
    /// The config tree does not validate or compile.
    Validate,
}

impl RefusalStep {
    pub const ALL: [RefusalStep; 4] = [Self::Ancestry, Self::Signature, Self::Load, Self::Validate];

    /// The name stored in `Refusal` and shown by status and the CLI.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ancestry => "ancestry",
            Self::Signature => "signature",
            Self::Load => "load",
            Self::Validate => "validate",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl std::fmt::Display for RefusalStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The layouts before `snapshot` became an `Arc` and `Refusal::step` private: what is
    /// already in logs and state machines on disk must decode, and new writes must match.
    #[derive(Serialize, Deserialize)]
    struct PlainConfig {
        commit: String,
        parent: Option<String>,
        author: String,
        message: String,
        committed_at: i64,
        hash: ContentHash,
        snapshot: ConfigSnapshot,
        covers: Vec<String>,
    }

    #[derive(Serialize, Deserialize)]
    struct PlainRefusal {
        commit: String,
        step: String,
        errors: Vec<String>,
        at: u64,
    }

    fn snapshot() -> ConfigSnapshot {
        let yaml = "kind: Upstream\nname: u\nendpoints: [{ address: 127.0.0.1:1 }]\n---\n\
                    kind: Route\nname: r\nrules:\n  - backendRefs: [{ upstream: u }]\n";
        let file = schemas::SourceFile { path: "c.yaml".into(), contents: yaml.as_bytes().to_vec() };
        schemas::compile_tree(&[file]).unwrap().snapshot
    }

    #[test]
    fn stored_format_is_unchanged() {
        let snapshot = snapshot();
        let plain = PlainConfig {
            commit: "abc".into(),
            parent: Some("def".into()),
            author: "Ada <ada@example.com>".into(),
            message: "m".into(),
            committed_at: 1_700_000_000,
            hash: snapshot.content_hash(),
            snapshot: snapshot.clone(),
            covers: vec!["x".into()],
        };
        let shared = ApplyConfig {
            commit: plain.commit.clone(),
            parent: plain.parent.clone(),
            author: plain.author.clone(),
            message: plain.message.clone(),
            committed_at: plain.committed_at,
            hash: plain.hash,
            snapshot: Arc::new(snapshot),
            covers: plain.covers.clone(),
        };
        let bytes = postcard::to_allocvec(&plain).unwrap();
        assert_eq!(postcard::to_allocvec(&shared).unwrap(), bytes);
        assert_eq!(postcard::from_bytes::<ApplyConfig>(&bytes).unwrap(), shared);

        let old = PlainRefusal { commit: "abc".into(), step: "validate".into(), errors: vec!["e".into()], at: 7 };
        let new = Refusal::new("abc".into(), RefusalStep::Validate, vec!["e".into()], 7);
        let bytes = postcard::to_allocvec(&old).unwrap();
        assert_eq!(postcard::to_allocvec(&new).unwrap(), bytes);
        assert_eq!(postcard::from_bytes::<Refusal>(&bytes).unwrap(), new);

        // A step named by a newer leader still decodes, and still shows.
        let newer = PlainRefusal { step: "provenance".into(), ..old };
        let r: Refusal = postcard::from_bytes(&postcard::to_allocvec(&newer).unwrap()).unwrap();
        assert_eq!((r.step(), r.step_name()), (None, "provenance"));
    }

    #[test]
    fn refusal_steps_round_trip_through_their_names() {
        for step in RefusalStep::ALL {
            assert_eq!(RefusalStep::from_name(step.as_str()), Some(step));
            assert_eq!(Refusal::new("c".into(), step, vec![], 0).step(), Some(step));
        }
    }
}
