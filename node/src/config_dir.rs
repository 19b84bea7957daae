//! `--config-dir`: serve a local config directory and reload it when it changes.
//!
//! Until the Raft log feeds the engine, this is how a node gets its config. The directory
//! is polled: each tick reads and compiles the tree, and a new content hash is swapped in.
//! A tree that fails validation is reported (every diagnostic, once per distinct failure)
//! and the node keeps serving the last good config.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use schemas::source::read_dir;
use schemas::{ContentHash, TreeLimits};
use tokio::sync::watch;

use crate::proxy::runtime::{ConfigOrigin, Engine};

/// The log entry for a directory tree (no Git metadata yet).
pub fn dir_entry(compiled: schemas::Compiled) -> raft::ApplyConfig {
    raft::ApplyConfig {
        commit: format!("dir-{}", compiled.hash.short()),
        parent: None,
        author: String::new(),
        message: "local config directory".into(),
        committed_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(0))
            .unwrap_or(0),
        hash: compiled.hash,
        snapshot: compiled.snapshot,
        covers: Vec::new(),
    }
}

/// Reads and compiles the directory once. Errors are rendered one diagnostic per line.
pub fn load(dir: &std::path::Path) -> Result<schemas::Compiled, String> {
    let files = read_dir(dir, &TreeLimits::default()).map_err(|e| e.to_string())?;
    if files.is_empty() {
        return Err(format!("no *.yaml or *.yml files in {}", dir.display()));
    }
    schemas::compile_tree(&files).map_err(|diags| diags.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))
}

/// Where a new valid tree goes.
#[derive(Debug, Clone)]
pub enum Sink {
    /// Straight into this node's engine (a node without a cluster).
    Engine(Arc<Engine>),
    /// Proposed through Raft when this node leads; every node then applies it from the log.
    /// A stand-in source until Git sync lands: the commit is named `dir-<hash>`.
    Cluster(crate::cluster::Cluster),
}

/// Polls `dir` every `interval` and hands each new valid config to `sink`.
pub async fn watch_dir(
    dir: PathBuf,
    interval: Duration,
    sink: Sink,
    mut current: ContentHash,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last_error: Option<String> = None;
    let failures = metrics::counter!("raftgate_config_reload_failures_total");
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => return,
        }
        let d = dir.clone();
        let result = match tokio::task::spawn_blocking(move || load(&d)).await {
            Ok(r) => r,
            Err(e) => Err(format!("config load panicked: {e}")),
        };
        match result {
            Ok(compiled) if compiled.hash == current && matches!(sink, Sink::Engine(_)) => last_error = None,
            Ok(compiled) => {
                let hash = compiled.hash;
                let result = match &sink {
                    Sink::Engine(engine) => {
                        let origin = ConfigOrigin { commit: None, source: dir.display().to_string() };
                        engine.apply(Arc::new(compiled.snapshot), origin).await.map(|_| ())
                    }
                    Sink::Cluster(cluster) => cluster.propose_if_leader(dir_entry(compiled)).await.map(|_| ()),
                };
                match result {
                    Ok(()) => {
                        current = hash;
                        last_error = None;
                    }
                    Err(e) => {
                        failures.increment(1);
                        tracing::error!(error = %e, "new config could not be applied; still serving the previous one");
                    }
                }
            }
            Err(e) => {
                if last_error.as_deref() != Some(e.as_str()) {
                    failures.increment(1);
                    tracing::error!(dir = %dir.display(), errors = %e, "config is invalid; still serving the previous one");
                    last_error = Some(e);
                }
            }
        }
    }
}
