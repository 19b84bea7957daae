//! The RocksDB store: the Raft log and vote, and the config state machine, in one database.
//!
//! Column families:
//! - `logs`: entries keyed by big-endian index (so keys sort by index);
//! - `meta`: the vote, the committed log id and the last purged log id;
//! - `sm`: the state machine (current config, history, last applied, membership) as one
//!   value, and the current snapshot.
//!
//! Durability: the vote and appended entries are written with a synced WAL before they are
//! acknowledged; the state machine, `last_applied` and membership are written in one
//! synced batch, so a node restarted at any point comes back with a consistent state and
//! serves its last applied config at once.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, RaftSnapshotBuilder, SnapshotMeta,
    StorageIOError,
};
use rocksdb::{ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB};
use schemas::SNAPSHOT_FORMAT;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::types::*;

const CF_LOGS: &str = "logs";
const CF_META: &str = "meta";
const CF_SM: &str = "sm";
const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_PURGED: &[u8] = b"last_purged";
const KEY_STATE: &[u8] = b"state";
const KEY_SNAPSHOT: &[u8] = b"snapshot";
/// The config format (`schemas::SNAPSHOT_FORMAT`) of the configs this database holds.
const KEY_FORMAT: &[u8] = b"format";

/// How many applied commits the history keeps.
pub const HISTORY_LEN: usize = 100;

/// Opens (or creates) the node's database and returns its log store and state machine.
pub fn open(dir: &Path) -> Result<(LogStore, StateMachineStore), StorageError> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    // Small, explicit memory: this database holds a few configs and their log, not bulk
    // data. RocksDB's defaults (64 MiB memtables per column family, a 32 MiB block cache)
    // would let a node's memory grow with every config written for hundreds of changes
    // before levelling off; with these, its share is at most ~2.5 MiB and is reached within
    // the first few dozen changes (the soak measures memory after that).
    let cache = rocksdb::Cache::new_lru_cache(1 << 20);
    let cf_opts = || {
        let mut o = Options::default();
        o.set_write_buffer_size(256 << 10);
        o.set_max_write_buffer_number(2);
        let mut table = rocksdb::BlockBasedOptions::default();
        table.set_block_cache(&cache);
        o.set_block_based_table_factory(&table);
        o
    };
    let cfs = [CF_LOGS, CF_META, CF_SM].map(|n| ColumnFamilyDescriptor::new(n, cf_opts()));
    let db = DB::open_cf_descriptors(&opts, dir, cfs)
        .map_err(|e| StorageIOError::new(ErrorSubject::Store, ErrorVerb::Read, AnyError::new(&e)))?;
    let db = Arc::new(db);
    check_format(&db, dir)?;
    let sm = StateMachineStore::load(db.clone())
        .map_err(|e| format_error(dir, &format!("its state machine cannot be read ({e})")))?;
    db.put_cf_opt(db.cf_handle(CF_META).expect("cf meta"), KEY_FORMAT, SNAPSHOT_FORMAT.to_be_bytes(), &synced())
        .map_err(|e| StorageIOError::new(ErrorSubject::Store, ErrorVerb::Write, AnyError::new(&e)))?;
    Ok((LogStore { db }, sm))
}

/// Refuses a database whose configs are in another format than this version's: the
/// entries and the state machine hold compiled configs in a binary encoding that names no
/// fields, so another format would be misread (or fail to decode half-way).
fn check_format(db: &DB, dir: &Path) -> Result<(), StorageError> {
    let stored = db
        .get_cf(db.cf_handle(CF_META).expect("cf meta"), KEY_FORMAT)
        .map_err(|e| StorageIOError::new(ErrorSubject::Store, ErrorVerb::Read, AnyError::new(&e)))?;
    match stored.as_deref().map(<[u8; 4]>::try_from) {
        None => Ok(()),
        Some(Ok(b)) if u32::from_be_bytes(b) == SNAPSHOT_FORMAT => Ok(()),
        Some(Ok(b)) => Err(format_error(dir, &format!("it holds configs in format {}", u32::from_be_bytes(b)))),
        Some(Err(_)) => Err(format_error(dir, "its format marker is damaged")),
    }
}

fn format_error(dir: &Path, what: &str) -> StorageError {
    let why = format!(
        "{what}, and this raftgate reads config format {SNAPSHOT_FORMAT} only. Data written by a raftgate \
         with another config format cannot be read: run the version that wrote it, or rebuild the \
         cluster on this one (stop every node, move each data dir {} aside, start one node with \
         --bootstrap and the others with --join; the config comes back from Git, the Raft history \
         does not). See README, \"Upgrades\".",
        dir.display()
    );
    StorageIOError::new(ErrorSubject::Store, ErrorVerb::Read, AnyError::error(why)).into()
}

fn synced() -> WriteOptions {
    let mut w = WriteOptions::default();
    w.set_sync(true);
    w
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_allocvec(v)
}

fn decode<T: for<'a> Deserialize<'a>>(b: &[u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(b)
}

fn index_key(i: u64) -> [u8; 8] {
    i.to_be_bytes()
}

fn key_index(k: &[u8]) -> u64 {
    u64::from_be_bytes(k.try_into().expect("log keys are 8 bytes"))
}

// ---------------------------------------------------------------------------------------
// Log store

#[derive(Debug, Clone)]
pub struct LogStore {
    db: Arc<DB>,
}

impl LogStore {
    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(name).expect("column family exists")
    }

    fn get_meta<T: for<'a> Deserialize<'a>>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        let read = |e: &dyn std::error::Error| StorageIOError::read(AnyError::error(e.to_string()));
        match self.db.get_cf(self.cf(CF_META), key).map_err(|e| read(&e))? {
            Some(b) => Ok(Some(decode(&b).map_err(|e| read(&e))?)),
            None => Ok(None),
        }
    }

    fn put_meta<T: Serialize>(&self, key: &[u8], v: &T, sync: bool) -> Result<(), StorageError> {
        let write = |e: &dyn std::error::Error| StorageIOError::write(AnyError::error(e.to_string()));
        let bytes = encode(v).map_err(|e| write(&e))?;
        let opts = if sync { synced() } else { WriteOptions::default() };
        self.db.put_cf_opt(self.cf(CF_META), key, bytes, &opts).map_err(|e| write(&e).into())
    }
}

/// What `LogStore::force_single_member` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForcedMembership {
    /// The members before.
    pub previous: Vec<u64>,
    /// The log index of the new membership entry.
    pub index: u64,
    pub term: u64,
}

impl LogStore {
    /// Makes this node the only member of its cluster, without asking the others: the
    /// recovery from lost quorum (etcd's `--force-new-cluster`). It appends a membership
    /// entry naming only `id`, under a term above any this node has seen, and votes for
    /// itself in that term; Raft then starts with a one-voter membership, elects this node
    /// and commits the entry, together with whatever else its log holds. The state
    /// machine (the applied config and its history) is kept as it is. The other nodes must
    /// never come back with their old data: they would hold the old membership.
    pub async fn force_single_member(&mut self, id: NodeId, node: NodeInfo) -> Result<ForcedMembership, StorageError> {
        let state = self.get_log_state().await?;
        let vote = self.read_vote().await?;
        let sm = self.stored_state_machine()?;
        let applied = sm.as_ref().and_then(|s| s.last_applied);
        let previous = self.last_membership_voters(sm.as_ref())?;
        let refuse = |why: String| StorageError::from(StorageIOError::write_logs(AnyError::error(why)));
        if previous == [id] {
            // Already alone (the flag left on a restart): nothing to force.
            return Ok(ForcedMembership { previous, index: state.last_log_id.map_or(0, |l| l.index), term: 0 });
        }
        if !previous.contains(&id) {
            return Err(refuse(format!(
                "node {id} is not a voter of the membership this node knows ({previous:?}); only a voter can take the cluster over"
            )));
        }
        // Above everything this node holds: its log, what its state machine applied (a
        // snapshot may be ahead of the log), and any term it voted in.
        let last = [state.last_log_id, applied].into_iter().flatten().max_by_key(|l| l.index);
        let term = [
            vote.map(|v| v.leader_id().term),
            state.last_log_id.map(|l| l.leader_id.term),
            applied.map(|l| l.leader_id.term),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(0)
            + 1;
        let index = last.map_or(0, |l| l.index + 1);
        let membership = openraft::Membership::new(
            vec![std::collections::BTreeSet::from([id])],
            std::collections::BTreeMap::from([(id, node)]),
        );
        let entry = Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(term, id), index),
            payload: EntryPayload::Membership(membership),
        };
        // The vote first: an entry of a term this node has not voted in must never exist.
        self.save_vote(&Vote::new(term, id)).await?;
        let write = |e: &dyn std::error::Error| StorageIOError::write_logs(AnyError::error(e.to_string()));
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_LOGS), index_key(index), encode(&entry).map_err(|e| write(&e))?);
        self.db.write_opt(batch, &synced()).map_err(|e| write(&e))?;
        Ok(ForcedMembership { previous, index, term })
    }

    /// The state machine as stored, if any.
    fn stored_state_machine(&self) -> Result<Option<StateMachineData>, StorageError> {
        let read = |e: &dyn std::error::Error| StorageIOError::read_logs(AnyError::error(e.to_string()));
        match self.db.get_cf(self.db.cf_handle(CF_SM).expect("cf sm"), KEY_STATE) {
            Ok(Some(b)) => Ok(Some(decode(&b).map_err(|e| read(&e))?)),
            Ok(None) => Ok(None),
            Err(e) => Err(read(&e).into()),
        }
    }

    /// The voters of the latest membership entry in the log, or of the state machine.
    fn last_membership_voters(&self, sm: Option<&StateMachineData>) -> Result<Vec<u64>, StorageError> {
        let read = |e: &dyn std::error::Error| StorageIOError::read_logs(AnyError::error(e.to_string()));
        for item in self.db.iterator_cf(self.cf(CF_LOGS), IteratorMode::End) {
            let (_, v) = item.map_err(|e| read(&e))?;
            let entry: Entry = decode(&v).map_err(|e| read(&e))?;
            if let EntryPayload::Membership(m) = entry.payload {
                return Ok(m.voter_ids().collect());
            }
        }
        Ok(sm.map(|s| s.last_membership.membership().voter_ids().collect()).unwrap_or_default())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        use std::ops::Bound;
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => *i + 1,
            Bound::Unbounded => 0,
        };
        let read = |e: &dyn std::error::Error| StorageIOError::read_logs(AnyError::error(e.to_string()));
        let mut out = Vec::new();
        let iter = self.db.iterator_cf(self.cf(CF_LOGS), IteratorMode::From(&index_key(start), Direction::Forward));
        for item in iter {
            let (k, v) = item.map_err(|e| read(&e))?;
            if !range.contains(&key_index(&k)) {
                break;
            }
            out.push(decode(&v).map_err(|e| read(&e))?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.get_meta(KEY_PURGED)?;
        let read = |e: &dyn std::error::Error| StorageIOError::read_logs(AnyError::error(e.to_string()));
        let last = match self.db.iterator_cf(self.cf(CF_LOGS), IteratorMode::End).next() {
            Some(item) => {
                let (_, v) = item.map_err(|e| read(&e))?;
                let entry: Entry = decode(&v).map_err(|e| read(&e))?;
                Some(entry.log_id)
            }
            None => None,
        };
        Ok(LogState { last_purged_log_id: last_purged, last_log_id: last.or(last_purged) })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        // On disk before we return: a vote forgotten in a crash could be cast twice.
        self.put_meta(KEY_VOTE, vote, true)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.get_meta(KEY_VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not needed for safety (openraft re-derives it), so not synced.
        self.put_meta(KEY_COMMITTED, &committed, false)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.get_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let write = |e: &dyn std::error::Error| StorageIOError::write_logs(AnyError::error(e.to_string()));
        let mut batch = WriteBatch::default();
        let cf = self.cf(CF_LOGS);
        for entry in entries {
            batch.put_cf(cf, index_key(entry.log_id.index), encode(&entry).map_err(|e| write(&e))?);
        }
        // A synced write: the WAL is on disk before the entries are acknowledged.
        let db = self.db.clone();
        let result = tokio::task::spawn_blocking(move || db.write_opt(batch, &synced()))
            .await
            .map_err(|e| write(&e))?
            .map_err(|e| std::io::Error::other(e.to_string()));
        // The cause goes into the error too: `raftgate status` shows it ("No space left on
        // device") when this stops the node's Raft.
        let failed = result.as_ref().err().map(ToString::to_string);
        callback.log_io_completed(result);
        match failed {
            None => Ok(()),
            Some(why) => Err(StorageIOError::write_logs(AnyError::error(format!("append failed: {why}"))).into()),
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let write = |e: &dyn std::error::Error| StorageIOError::write_logs(AnyError::error(e.to_string()));
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf(CF_LOGS), index_key(log_id.index), index_key(u64::MAX));
        // Truncation must not leave holes after a crash: synced like an append.
        self.db.write_opt(batch, &synced()).map_err(|e| write(&e).into())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let write = |e: &dyn std::error::Error| StorageIOError::write_logs(AnyError::error(e.to_string()));
        // Record the purge point first: a crash in between leaves extra entries, never a gap.
        self.put_meta(KEY_PURGED, &log_id, true)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf(CF_LOGS), index_key(0), index_key(log_id.index + 1));
        self.db.write_opt(batch, &WriteOptions::default()).map_err(|e| write(&e).into())
    }
}

// ---------------------------------------------------------------------------------------
// State machine

/// One applied config commit, as `raftgate config history` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub commit: String,
    pub hash: schemas::ContentHash,
    pub author: String,
    pub message: String,
    pub log_index: u64,
    /// Seconds since the Unix epoch, on the node that applied it.
    pub applied_at: u64,
}

/// Longest author or message kept in the history: 100 entries of a few KiB keep the state
/// machine, and so every snapshot, within `network::MAX_SNAPSHOT_BYTES` whatever commits say.
const MAX_HISTORY_TEXT: usize = 4096;

fn clip(text: &str) -> String {
    if text.len() <= MAX_HISTORY_TEXT {
        return text.to_string();
    }
    let mut end = MAX_HISTORY_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The config a node serves: the latest applied `ApplyConfig`, where it sits in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedConfig {
    pub entry: ApplyConfig,
    pub log_index: u64,
}

/// Everything the state machine holds. Small (one config and a bounded history), so it is
/// written whole, atomically, after each applied batch and serves as the snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateMachineData {
    pub last_applied: Option<LogId>,
    pub last_membership: StoredMembership,
    pub current: Option<AppliedConfig>,
    /// Oldest first, at most `HISTORY_LEN`.
    pub history: VecDeque<HistoryEntry>,
    /// The latest commit Git sync refused, until a good one arrives.
    pub refusal: Option<Refusal>,
}

impl StateMachineData {
    /// Applies one config entry. The log order is the apply order; an entry for the commit
    /// already current is a no-op, and an entry whose snapshot does not hash to its stated
    /// hash is refused (the current config stays), so corruption can never be served.
    pub fn apply_config(&mut self, index: u64, cfg: &ApplyConfig) -> Response {
        if self.current.as_ref().is_some_and(|c| c.entry.commit == cfg.commit) {
            return Response::AlreadyCurrent { commit: cfg.commit.clone() };
        }
        let actual = cfg.snapshot.content_hash();
        if actual != cfg.hash {
            return Response::Refused {
                commit: cfg.commit.clone(),
                reason: format!("content hash {} does not match the stated {}", actual.short(), cfg.hash.short()),
            };
        }
        let applied_at = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        self.history.push_back(HistoryEntry {
            commit: cfg.commit.clone(),
            hash: cfg.hash,
            author: clip(&cfg.author),
            message: clip(&cfg.message),
            log_index: index,
            applied_at,
        });
        while self.history.len() > HISTORY_LEN {
            self.history.pop_front();
        }
        self.current = Some(AppliedConfig { entry: cfg.clone(), log_index: index });
        self.refusal = None;
        Response::Applied { commit: cfg.commit.clone() }
    }

    /// Records what Git sync concluded about a commit it did not apply.
    pub fn record_sync(&mut self, note: &SyncNote) -> Response {
        match note {
            SyncNote::Refused(r) => self.refusal = Some(r.clone()),
            SyncNote::Unchanged { .. } => self.refusal = None,
        }
        Response::None
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, NodeInfo>,
    data: Vec<u8>,
}

/// Told of each new config entry as it is applied, before its content hash is checked.
pub type ConfigHook = Arc<dyn Fn(&ApplyConfig) + Send + Sync>;

/// The hook, if the node set one (`StateMachineStore::on_config`).
#[derive(Clone, Default)]
struct Hook(Arc<std::sync::OnceLock<ConfigHook>>);

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() { "Hook(set)" } else { "Hook(none)" })
    }
}

/// The state machine over RocksDB. Each change of the served config is published on a
/// `watch` channel for the proxy engine, which never waits on Raft.
#[derive(Debug, Clone)]
pub struct StateMachineStore {
    db: Arc<DB>,
    data: Arc<tokio::sync::RwLock<StateMachineData>>,
    published: watch::Sender<Option<Arc<AppliedConfig>>>,
    refusal: watch::Sender<Option<Arc<Refusal>>>,
    snapshot_counter: Arc<std::sync::atomic::AtomicU64>,
    hook: Hook,
}

impl StateMachineStore {
    fn load(db: Arc<DB>) -> Result<Self, StorageError> {
        let cf = db.cf_handle(CF_SM).expect("column family exists");
        let read = |e: &dyn std::error::Error| StorageIOError::read_state_machine(AnyError::error(e.to_string()));
        let data: StateMachineData = match db.get_cf(cf, KEY_STATE).map_err(|e| read(&e))? {
            Some(b) => decode(&b).map_err(|e| read(&e))?,
            None => StateMachineData::default(),
        };
        let (published, _) = watch::channel(data.current.clone().map(Arc::new));
        let (refusal, _) = watch::channel(data.refusal.clone().map(Arc::new));
        Ok(Self {
            db,
            data: Arc::new(tokio::sync::RwLock::new(data)),
            published,
            refusal,
            snapshot_counter: Arc::new(0.into()),
            hook: Hook::default(),
        })
    }

    /// Sets the function told of each new config entry before its hash is checked (once;
    /// a second call is ignored). The node starts compiling the snapshot there, so that
    /// the check (SHA-256 over megabytes at 10,000 routes) and the compile run at the same
    /// time; what it compiled is only served once the entry is applied, so after the check.
    pub fn on_config(&self, hook: ConfigHook) {
        let _ = self.hook.0.set(hook);
    }

    /// The served config: the current value at once (from disk after a restart), then every
    /// change.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<AppliedConfig>>> {
        self.published.subscribe()
    }

    /// The commit Git sync refused last, until a good one arrives: now, then every change.
    pub fn subscribe_refusal(&self) -> watch::Receiver<Option<Arc<Refusal>>> {
        self.refusal.subscribe()
    }

    /// The config currently served (a reference-count bump, no copy).
    pub fn current(&self) -> Option<Arc<AppliedConfig>> {
        self.published.borrow().clone()
    }

    /// The applied config commits, oldest first (without copying the current snapshot).
    pub async fn history(&self) -> Vec<HistoryEntry> {
        self.data.read().await.history.iter().cloned().collect()
    }

    /// A copy of the state machine's data, for status and history.
    pub async fn data(&self) -> StateMachineData {
        self.data.read().await.clone()
    }

    fn persist(&self, data: &StateMachineData) -> Result<(), StorageError> {
        let write = |e: &dyn std::error::Error| StorageIOError::write_state_machine(AnyError::error(e.to_string()));
        let cf = self.db.cf_handle(CF_SM).expect("column family exists");
        let mut batch = WriteBatch::default();
        batch.put_cf(cf, KEY_STATE, encode(data).map_err(|e| write(&e))?);
        self.db.write_opt(batch, &synced()).map_err(|e| write(&e).into())
    }

    fn publish(&self, data: &StateMachineData) {
        publish_changed(&self.refusal, data.refusal.clone());
        publish_changed(&self.published, data.current.clone());
    }
}

/// Publishes `next` on `tx` only when it differs, so followers wake only for real changes.
fn publish_changed<T: PartialEq>(tx: &watch::Sender<Option<Arc<T>>>, next: Option<T>) {
    tx.send_if_modified(|cur| {
        if cur.as_deref() == next.as_ref() {
            false
        } else {
            *cur = next.map(Arc::new);
            true
        }
    });
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let data = self.data.read().await.clone();
        let write = |e: &dyn std::error::Error| StorageIOError::write_snapshot(None, AnyError::error(e.to_string()));
        let bytes = encode(&data).map_err(|e| write(&e))?;
        let n = self.snapshot_counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let snapshot_id = match data.last_applied {
            Some(l) => format!("{}-{}-{}-{n}", l.leader_id, l.index, std::process::id()),
            None => format!("empty-{}-{n}", std::process::id()),
        };
        let meta =
            SnapshotMeta { last_log_id: data.last_applied, last_membership: data.last_membership.clone(), snapshot_id };
        let stored = StoredSnapshot { meta: meta.clone(), data: bytes.clone() };
        let cf = self.db.cf_handle(CF_SM).expect("column family exists");
        self.db
            .put_cf_opt(cf, KEY_SNAPSHOT, encode(&stored).map_err(|e| write(&e))?, &synced())
            .map_err(|e| write(&e))?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(bytes)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let d = self.data.read().await;
        Ok((d.last_applied, d.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut data = self.data.write().await;
        let mut next = data.clone();
        let mut out = Vec::new();
        for entry in entries {
            next.last_applied = Some(entry.log_id);
            out.push(match entry.payload {
                EntryPayload::Blank => Response::None,
                EntryPayload::Membership(m) => {
                    next.last_membership = StoredMembership::new(Some(entry.log_id), m);
                    Response::None
                }
                EntryPayload::Normal(Request::RecordSync(note)) => next.record_sync(&note),
                EntryPayload::Normal(Request::ApplyConfig(cfg)) => {
                    let is_new = next.current.as_ref().is_none_or(|c| c.entry.commit != cfg.commit);
                    if let (true, Some(hook)) = (is_new, self.hook.0.get()) {
                        hook(&cfg);
                    }
                    let r = next.apply_config(entry.log_id.index, &cfg);
                    if let Response::Refused { commit, reason } = &r {
                        tracing::error!(%commit, %reason, "refused a config entry");
                    }
                    r
                }
            });
        }
        // Config, history, last_applied and membership: one synced batch, then memory.
        self.persist(&next)?;
        *data = next;
        self.publish(&data);
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, NodeInfo>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let bytes = snapshot.into_inner();
        let sig = Some(meta.signature());
        let read =
            |e: &dyn std::error::Error| StorageIOError::read_snapshot(sig.clone(), AnyError::error(e.to_string()));
        let mut next: StateMachineData = decode(&bytes).map_err(|e| read(&e))?;
        // The meta is authoritative for what the snapshot covers.
        next.last_applied = meta.last_log_id;
        next.last_membership = meta.last_membership.clone();
        let mut data = self.data.write().await;
        self.persist(&next)?;
        let stored = StoredSnapshot { meta: meta.clone(), data: bytes };
        let write =
            |e: &dyn std::error::Error| StorageIOError::write_snapshot(sig.clone(), AnyError::error(e.to_string()));
        let cf = self.db.cf_handle(CF_SM).expect("column family exists");
        self.db
            .put_cf_opt(cf, KEY_SNAPSHOT, encode(&stored).map_err(|e| write(&e))?, &synced())
            .map_err(|e| write(&e))?;
        *data = next;
        self.publish(&data);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let cf = self.db.cf_handle(CF_SM).expect("column family exists");
        let read = |e: &dyn std::error::Error| StorageIOError::read_snapshot(None, AnyError::error(e.to_string()));
        match self.db.get_cf(cf, KEY_SNAPSHOT).map_err(|e| read(&e))? {
            Some(b) => {
                let s: StoredSnapshot = decode(&b).map_err(|e| read(&e))?;
                Ok(Some(Snapshot { meta: s.meta, snapshot: Box::new(Cursor::new(s.data)) }))
            }
            None => Ok(None),
        }
    }
}
