//! The node's place in the Raft cluster: its store, its Raft instance and RPC listener, and
//! the task that feeds every applied config to the proxy engine.
//!
//! The engine follows the state machine's `watch` channel, so a restarted node serves its
//! last applied config from RocksDB at once, before it reaches any peer, and a node cut off
//! in a minority keeps serving what it last applied.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use openraft::error::{ClientWriteError, Fatal, RaftError};
use raft::{ApplyConfig, NodeId, NodeInfo, Raft, Request, Response, StateMachineStore};
use tokio::sync::watch;

use crate::proxy::runtime::{ConfigOrigin, Engine};

pub mod dial;
pub mod join;
pub mod membership;
pub mod served;

/// Cluster settings of a node.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    pub node_id: u64,
    pub data_dir: PathBuf,
    pub raft_addr: SocketAddr,
    /// The Raft address peers use, when it differs from the bound one.
    pub advertise_raft_addr: Option<String>,
    /// The admin address peers and clients use (advertised, never a wildcard).
    pub admin_addr: String,
    pub region: String,
    pub cluster_name: String,
    pub bootstrap: bool,
    /// The admin address of a member to ask for admission (`--join`).
    pub join: Option<String>,
    /// Join as a learner and stay one (`--learner`).
    pub learner: bool,
    /// The admin bearer token, sent with the join request.
    pub admin_token: Option<Arc<str>>,
    pub lan: bool,
    /// Traces each config's apply on this node under its commit's trace (`--otlp-endpoint`).
    pub telemetry: Option<Arc<crate::telemetry::Telemetry>>,
    /// Log entries between snapshots (`--raft-snapshot-every`).
    pub snapshot_every: u64,
    /// The node's TLS material: Raft runs mTLS with it. `None`: plaintext (loopback, or
    /// `--insecure-plaintext`).
    pub tls: Option<Arc<trust::Tls>>,
    /// Make this node the only member first (recovery from lost quorum).
    pub force_new_cluster: bool,
}

/// Raft connections open at once (peers keep one or two each; the rest is slack for
/// restarts and the odd probe).
const MAX_RAFT_CONNECTIONS: usize = 128;
/// Streams in flight per Raft connection: replication, snapshots, votes.
const MAX_RAFT_STREAMS: u32 = 32;
/// Longest a single Raft request may take on the server (a 1 MiB snapshot chunk over a
/// slow WAN link included).
const RAFT_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Clone)]
pub struct Cluster {
    pub id: u64,
    pub raft: Raft,
    pub sm: StateMachineStore,
    pub raft_addr: SocketAddr,
    /// What peers know of this node.
    pub me: NodeInfo,
    /// Serializes this node's membership changes (see `membership`).
    membership_lock: Arc<tokio::sync::Mutex<()>>,
    /// Why the latest applied config could not be served, if it could not.
    pub last_apply_error: Arc<std::sync::Mutex<Option<String>>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("id", &self.id).field("raft_addr", &self.raft_addr).finish_non_exhaustive()
    }
}

/// Opens the store, starts following it, starts Raft and its listener, and bootstraps a
/// new single-node cluster when asked.
pub async fn start(
    s: &ClusterSettings,
    engine: Arc<Engine>,
    tasks: &mut tokio::task::JoinSet<()>,
    fatal: tokio::sync::mpsc::Sender<anyhow::Error>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Cluster> {
    let dir = s.data_dir.join("raft");
    create_private_dir(&s.data_dir)?;
    create_private_dir(&dir)?;
    let (mut log, sm) =
        raft::open(&dir).map_err(|e| anyhow::anyhow!("cannot open the Raft store in {}: {e}", dir.display()))?;

    // Serve the last applied config before anything else: applied here, before `run`
    // binds the proxy listeners, so a restarted node never answers from an empty config.
    // (`follow` then keeps the engine on whatever the state machine publishes.)
    let current = sm.subscribe().borrow().clone();
    if let Some(applied) = current {
        let origin = ConfigOrigin {
            commit: Some(applied.entry.commit.clone()),
            source: format!("raft log index {}", applied.log_index),
        };
        if engine.apply(Arc::clone(&applied.entry.snapshot), applied.entry.hash, origin).await.is_err() {
            serve_last_served(&engine, &s.data_dir).await;
        }
    }
    // Each new config entry starts compiling when the state machine takes it, while the
    // state machine checks its hash; `follow` then swaps in what was compiled.
    let preparing = Arc::clone(&engine);
    sm.on_config(Arc::new(move |cfg: &ApplyConfig| preparing.prepare(Arc::clone(&cfg.snapshot), cfg.hash)));
    let last_apply_error = Arc::default();
    let engine_nodes = engine.nodes.clone();
    let data_dir = s.data_dir.clone();
    let traced = s.telemetry.clone().map(|t| (t, s.node_id, s.region.clone()));
    tasks.spawn(follow(sm.clone(), engine, data_dir, Arc::clone(&last_apply_error), traced, shutdown.clone()));
    tasks.spawn(export_refusal(sm.clone(), shutdown.clone()));

    let listener = tokio::net::TcpListener::bind(s.raft_addr)
        .await
        .with_context(|| format!("cannot listen on {} (raft)", s.raft_addr))?;
    let raft_addr = listener.local_addr()?;
    tracing::info!(listener = "raft", addr = %raft_addr, "listening");
    let me = NodeInfo {
        raft_addr: s.advertise_raft_addr.clone().unwrap_or_else(|| raft_addr.to_string()),
        admin_addr: s.admin_addr.clone(),
        region: s.region.clone(),
    };
    if s.force_new_cluster {
        force_new_cluster(&mut log, &sm, &s.data_dir, s.node_id, me.clone()).await?;
    }
    let profile = if s.lan { raft::config::lan() } else { raft::config::wan() };
    let config = Arc::new(raft::config::with_snapshot_every(profile, s.snapshot_every));
    let network = raft::network::Network::new(&s.cluster_name, s.tls.clone());
    let raft = Raft::new(s.node_id, config, network, log, sm.clone()).await.context("starting Raft")?;
    let svc = raft::network::service(raft.clone(), &s.cluster_name, s.tls.is_some());
    let mut stop = shutdown.clone();
    let incoming = trust::incoming(
        listener,
        trust::ListenOptions {
            name: "raft",
            tls: s.tls.clone().map(|t| trust::ListenTls::Cluster(t, trust::ClientAuth::Required)),
            max_connections: MAX_RAFT_CONNECTIONS,
            handshake_timeout: std::time::Duration::from_secs(5),
        },
        shutdown.clone(),
    );
    tasks.spawn(async move {
        let served = tonic::transport::Server::builder()
            .timeout(RAFT_REQUEST_TIMEOUT)
            .concurrency_limit_per_connection(MAX_RAFT_STREAMS as usize)
            .max_concurrent_streams(MAX_RAFT_STREAMS)
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(20)))
            .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
            // Connections are recycled hourly, so one opened under a certificate or CA that
            // has since been rotated out does not live on.
            .max_connection_age(std::time::Duration::from_secs(3600))
            .add_service(svc)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stop.changed().await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "raft listener failed");
        }
    });

    tasks.spawn(count_members(raft.clone(), engine_nodes, shutdown.clone()));

    let initialized = raft.is_initialized().await?;
    if s.bootstrap && !initialized {
        raft.initialize(BTreeMap::from([(s.node_id, me.clone())])).await.context("bootstrapping the cluster")?;
        tracing::info!(node = s.node_id, "bootstrapped a new cluster");
    }
    let cluster = Cluster { id: s.node_id, raft, sm, raft_addr, me, membership_lock: Arc::default(), last_apply_error };
    // A node that already holds a membership restarts as what it was: no join needed.
    match &s.join {
        Some(addr) if !initialized => {
            let member = schemas::admin::Member {
                id: cluster.id,
                raft_addr: cluster.me.raft_addr.clone(),
                admin_addr: cluster.me.admin_addr.clone(),
                region: cluster.me.region.clone(),
                voter: !s.learner,
            };
            let metrics = cluster.raft.metrics();
            let (token, tls) = (s.admin_token.clone(), s.tls.clone());
            tasks.spawn(join::join(member, addr.clone(), metrics, token, tls, fatal, shutdown));
        }
        Some(_) => tracing::info!("this node already belongs to a cluster; --join is not needed"),
        None => {}
    }
    Ok(cluster)
}

/// `--force-new-cluster`: this node alone becomes the cluster, keeping its log, its
/// applied config and its history (see `LogStore::force_single_member`).
async fn force_new_cluster(
    log: &mut raft::LogStore,
    sm: &StateMachineStore,
    data_dir: &std::path::Path,
    id: u64,
    me: NodeInfo,
) -> anyhow::Result<()> {
    // One use per disaster: a flag left in a unit file must not shrink the cluster again
    // at every restart, dropping the members that joined since.
    let marker = data_dir.join("forced-new-cluster");
    if marker.exists() {
        anyhow::bail!(
            "--force-new-cluster was already used on this data directory ({}): remove the flag. To force again \
             after another loss of quorum, delete that file first",
            marker.display()
        );
    }
    let data = sm.data().await;
    if data.last_applied.is_none() {
        anyhow::bail!(
            "--force-new-cluster needs the data directory of a node that was a member; this one holds no cluster"
        );
    }
    let forced = log.force_single_member(id, me).await.context("forcing a new cluster")?;
    std::fs::write(&marker, format!("index {} term {} previous {:?}\n", forced.index, forced.term, forced.previous))
        .with_context(|| format!("cannot write {}", marker.display()))?;
    if forced.previous == [id] {
        tracing::info!("--force-new-cluster: this node is already the only member; starting normally");
        return Ok(());
    }
    tracing::warn!(
        previous_members = ?forced.previous,
        index = forced.index,
        term = forced.term,
        "--force-new-cluster: this node is now the only member; it keeps its config and history. \
         Wipe the data directories of the old members before they start again, then --join them; \
         remove the flag before the next restart"
    );
    Ok(())
}

/// Creates a directory only this user can enter (it holds the Raft log, the Git mirror and,
/// with credentials in its URL, the mirror's config), and tightens an existing one.
fn create_private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let mode = std::fs::metadata(dir).with_context(|| format!("cannot read {}", dir.display()))?.permissions().mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot make {} private (chmod 700)", dir.display()))?;
    }
    Ok(())
}

/// This node's span in the commit's trace: from the state machine publishing the entry to
/// the proxy serving it (or failing to).
fn trace_apply(
    t: &crate::telemetry::Telemetry,
    node: u64,
    region: &str,
    applied: &raft::AppliedConfig,
    received: std::time::SystemTime,
    error: Option<String>,
) {
    use opentelemetry::KeyValue;
    let stage = crate::telemetry::Stage {
        name: "apply",
        start: received,
        end: std::time::SystemTime::now(),
        error,
        attributes: vec![
            KeyValue::new("raftgate.node", node as i64),
            KeyValue::new("raftgate.region", region.to_string()),
            KeyValue::new("raftgate.log_index", applied.log_index as i64),
            KeyValue::new("raftgate.routes", applied.entry.snapshot.routes.len() as i64),
        ],
    };
    t.config_apply(&applied.entry.commit, &stage);
}

/// Applies every config the state machine publishes, in order, starting with the current one.
async fn follow(
    sm: StateMachineStore,
    engine: Arc<Engine>,
    data_dir: std::path::PathBuf,
    last_error: Arc<std::sync::Mutex<Option<String>>>,
    traced: Option<(Arc<crate::telemetry::Telemetry>, u64, String)>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut rx = sm.subscribe();
    loop {
        let current = rx.borrow_and_update().clone();
        let received = std::time::SystemTime::now();
        if let Some(applied) = current {
            let commit = applied.entry.commit.clone();
            let origin =
                ConfigOrigin { commit: Some(commit.clone()), source: format!("raft log index {}", applied.log_index) };
            // Already serving this entry (`start` applied it before the listeners opened):
            // not compiled a second time.
            let serving = engine.is_loaded() && {
                let rt = engine.current();
                rt.hash == applied.entry.hash && rt.origin.commit == origin.commit && rt.origin.source == origin.source
            };
            // The hash was checked against the snapshot when the entry was applied.
            let result = if serving {
                // A build `prepare` started for an entry the state machine then refused.
                engine.forget_prepared();
                Ok(applied.entry.hash)
            } else {
                let result = engine.apply(Arc::clone(&applied.entry.snapshot), applied.entry.hash, origin).await;
                if let Some((t, node, region)) = &traced {
                    trace_apply(t, *node, region, &applied, received, result.as_ref().err().map(ToString::to_string));
                }
                result
            };
            let error = match result {
                Ok(_) => {
                    let served = served::Served {
                        commit,
                        log_index: applied.log_index,
                        snapshot: Arc::clone(&applied.entry.snapshot),
                    };
                    remember(&data_dir, served).await;
                    None
                }
                Err(e) => {
                    let e = format!("{commit}: {e}");
                    tracing::error!(error = %e, "cannot serve the applied config; still serving the previous one");
                    if !engine.is_loaded() {
                        serve_last_served(&engine, &data_dir).await;
                    }
                    Some(e)
                }
            };
            *last_error.lock().unwrap_or_else(|e| e.into_inner()) = error;
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            _ = shutdown.changed() => return,
        }
    }
}

/// Saves the config now served, so that a restart can fall back to it.
async fn remember(data_dir: &std::path::Path, served: served::Served) {
    let dir = data_dir.to_path_buf();
    let saved = tokio::task::spawn_blocking(move || served::save(&dir, &served)).await;
    if let Ok(Err(e)) | Err(e) = saved.map_err(std::io::Error::other) {
        tracing::warn!(error = %e, "cannot record the served config; a restart falls back to nothing if the current one fails");
    }
}

/// A node that just started and cannot serve the current config serves the last one it
/// served before the restart, as it did before it stopped.
async fn serve_last_served(engine: &Engine, data_dir: &std::path::Path) {
    match served::load(data_dir) {
        Ok(Some((served, hash))) => {
            let origin = ConfigOrigin {
                commit: Some(served.commit.clone()),
                source: format!("last served config (raft log index {})", served.log_index),
            };
            match engine.apply(served.snapshot, hash, origin).await {
                Ok(_) => {
                    tracing::warn!(commit = %served.commit, "serving the config this node served before it restarted")
                }
                Err(e) => tracing::error!(error = %e, "cannot serve the previously served config either"),
            }
        }
        Ok(None) => {}
        Err(e) => tracing::error!(error = %e, "cannot fall back to the previously served config"),
    }
}

/// Keeps the engine's member count (which cluster-wide rate limits divide by) equal to the
/// number of nodes in the Raft membership, voters and learners: every member serves traffic.
async fn count_members(raft: Raft, nodes: Arc<std::sync::atomic::AtomicUsize>, mut shutdown: watch::Receiver<bool>) {
    let mut rx = raft.metrics();
    loop {
        let n = rx.borrow_and_update().membership_config.membership().nodes().count().max(1);
        if nodes.swap(n, std::sync::atomic::Ordering::Relaxed) != n {
            metrics::gauge!("raftgate_cluster_members").set(n as f64);
            tracing::info!(members = n, "cluster size changed; cluster-wide rate limits follow");
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            _ = shutdown.changed() => return,
        }
    }
}

/// `raftgate_config_refused` is 1 on every node while the cluster's latest Git commit
/// stands refused (the refusal is replicated), 0 once a good commit arrives.
async fn export_refusal(sm: StateMachineStore, mut shutdown: watch::Receiver<bool>) {
    let mut rx = sm.subscribe_refusal();
    loop {
        let refused = rx.borrow_and_update().is_some();
        metrics::gauge!("raftgate_config_refused").set(if refused { 1.0 } else { 0.0 });
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            _ = shutdown.changed() => return,
        }
    }
}

/// Why an entry proposed through Raft was not committed.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    /// This node does not lead (any more): the leader proposes instead.
    #[error("this node is not the leader{}", leader_hint(*.leader_id, .leader_admin.as_deref()))]
    NotLeader { leader_id: Option<NodeId>, leader_admin: Option<String> },
    /// Raft has stopped on this node (shut down, or a storage failure).
    #[error("raft has stopped on this node: {0}")]
    Fatal(Fatal<NodeId>),
    /// Anything else openraft refuses (for application entries, nothing it documents today).
    #[error("{0}")]
    Raft(ClientWriteError<NodeId, NodeInfo>),
    /// The entry cannot travel through Raft (too large); nothing was proposed.
    #[error("not proposed: {0}")]
    Entry(#[from] raft::network::EntryError),
}

impl From<RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>> for ProposeError {
    fn from(e: RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>) -> Self {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                ProposeError::NotLeader { leader_id: f.leader_id, leader_admin: f.leader_node.map(|n| n.admin_addr) }
            }
            RaftError::APIError(e) => ProposeError::Raft(e),
            RaftError::Fatal(f) => ProposeError::Fatal(f),
        }
    }
}

/// `; the leader is node 2 (admin host:port)`, or why there is none, for not-leader errors.
fn leader_hint(id: Option<NodeId>, admin: Option<&str>) -> String {
    match (id, admin) {
        (Some(id), Some(a)) => format!("; the leader is node {id} (admin {a})"),
        (Some(id), None) => format!("; the leader is node {id}"),
        _ => "; no leader is elected right now, retry in a few seconds".into(),
    }
}

impl Cluster {
    /// Whether this node leads, as its Raft metrics say now. Leadership may have moved by the
    /// time the caller acts: a proposal then fails with `ProposeError::NotLeader`, and a
    /// caller that must judge against everything committed confirms with
    /// `ensure_linearizable` first (as Git sync does).
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.id)
    }

    /// Proposes an entry and waits until it is committed and applied here. Returns what
    /// applying it did.
    pub async fn propose(&self, request: Request) -> Result<Response, ProposeError> {
        raft::network::entry_fits(&request)?;
        Ok(self.raft.client_write(request).await?.data)
    }

    /// Proposes a config unless the applied one has the same content (`--config-dir` reads
    /// an unchanged tree on every poll). Returns whether it was proposed.
    pub async fn propose_config(&self, cfg: ApplyConfig) -> Result<bool, ProposeError> {
        // Checked on every poll: read the published config rather than copy the state machine.
        if self.sm.current().is_some_and(|c| c.entry.hash == cfg.hash) {
            return Ok(false);
        }
        self.propose(Request::ApplyConfig(Box::new(cfg))).await?;
        Ok(true)
    }
}
