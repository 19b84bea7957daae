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
use raft::{ApplyConfig, NodeInfo, Raft, Request, StateMachineStore};
use tokio::sync::watch;

use crate::proxy::runtime::{ConfigOrigin, Engine};

/// Cluster settings of a node.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    pub node_id: u64,
    pub data_dir: PathBuf,
    pub raft_addr: SocketAddr,
    /// The Raft address peers use, when it differs from the bound one.
    pub advertise_raft_addr: Option<String>,
    pub admin_addr: String,
    pub region: String,
    pub cluster_name: String,
    pub bootstrap: bool,
    pub lan: bool,
}

#[derive(Clone)]
pub struct Cluster {
    pub id: u64,
    pub raft: Raft,
    pub sm: StateMachineStore,
    pub raft_addr: SocketAddr,
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
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Cluster> {
    let dir = s.data_dir.join("raft");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (log, sm) =
        raft::open(&dir).map_err(|e| anyhow::anyhow!("cannot open the Raft store in {}: {e}", dir.display()))?;

    // Serve the last applied config before anything else.
    tasks.spawn(follow(sm.clone(), engine, shutdown.clone()));

    let listener = tokio::net::TcpListener::bind(s.raft_addr)
        .await
        .with_context(|| format!("cannot listen on {} (raft)", s.raft_addr))?;
    let raft_addr = listener.local_addr()?;
    tracing::info!(listener = "raft", addr = %raft_addr, "listening");
    let config = Arc::new(if s.lan { raft::config::lan() } else { raft::config::wan() });
    let raft = Raft::new(s.node_id, config, raft::network::Network::new(&s.cluster_name), log, sm.clone())
        .await
        .context("starting Raft")?;
    let svc = raft::network::service(raft.clone(), &s.cluster_name);
    let mut stop = shutdown.clone();
    tasks.spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let served = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stop.changed().await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "raft listener failed");
        }
    });

    if s.bootstrap && !raft.is_initialized().await? {
        let me = NodeInfo {
            raft_addr: s.advertise_raft_addr.clone().unwrap_or_else(|| raft_addr.to_string()),
            admin_addr: s.admin_addr.clone(),
            region: s.region.clone(),
        };
        raft.initialize(BTreeMap::from([(s.node_id, me)])).await.context("bootstrapping the cluster")?;
        tracing::info!(node = s.node_id, "bootstrapped a new cluster");
    }
    Ok(Cluster { id: s.node_id, raft, sm, raft_addr })
}

/// Applies every config the state machine publishes, in order, starting with the current one.
async fn follow(sm: StateMachineStore, engine: Arc<Engine>, mut shutdown: watch::Receiver<bool>) {
    let mut rx = sm.subscribe();
    loop {
        let current = rx.borrow_and_update().clone();
        if let Some(applied) = current {
            let origin = ConfigOrigin {
                commit: Some(applied.entry.commit.clone()),
                source: format!("raft log index {}", applied.log_index),
            };
            if let Err(e) = engine.apply(Arc::new(applied.entry.snapshot.clone()), origin).await {
                tracing::error!(commit = %applied.entry.commit, error = %e, "cannot serve the applied config; still serving the previous one");
            }
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            _ = shutdown.changed() => return,
        }
    }
}

impl Cluster {
    /// Proposes a config through Raft when this node leads and the config differs from the
    /// applied one. Returns whether it was proposed.
    pub async fn propose_if_leader(&self, cfg: ApplyConfig) -> anyhow::Result<bool> {
        if self.raft.current_leader().await != Some(self.id) {
            return Ok(false);
        }
        // Checked on every poll: read the published config rather than copy the state machine.
        if self.sm.current().is_some_and(|c| c.entry.hash == cfg.hash) {
            return Ok(false);
        }
        self.raft.client_write(Request::ApplyConfig(Box::new(cfg))).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(true)
    }
}
